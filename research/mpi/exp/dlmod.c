/*
** dlmod.c -- can a Lua C module that links libmpi, loaded by `require`
** (dlopen RTLD_NOW | RTLD_LOCAL), initialise Open MPI and communicate?
**
**   mpicc -O2 -shared -fPIC -I/usr/include/lua5.4 -o dlmod.so dlmod.c
**   mpirun -n 3 lua5.4 dlmod_run.lua [global]
**
** dlmod.launched()     -> size, rank or nil: from the environment only
**                         (OMPI_COMM_WORLD_SIZE/RANK, then PMIX_RANK + ...)
** dlmod.init(global)   -> rank, size, host, seconds MPI_Init_thread took;
**                         global = true first promotes libmpi to RTLD_GLOBAL
**                         with dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL
**                         | RTLD_NOLOAD)
** dlmod.exchange()     -> sum of the ranks by MPI_Allreduce, and a ring
**                         MPI_Sendrecv's received value (exercises coll and
**                         pml/btl components)
** dlmod.finalize()
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <lauxlib.h>
#include <lua.h>
#include <mpi.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int l_launched(lua_State *L) {
  const char *s = getenv("OMPI_COMM_WORLD_SIZE"), *r = getenv("OMPI_COMM_WORLD_RANK");
  if (s == NULL) {                       /* other launchers (srun, hydra) */
    s = getenv("PMI_SIZE");
    r = getenv("PMIX_RANK") ? getenv("PMIX_RANK") : getenv("PMI_RANK");
  }
  if (s == NULL || r == NULL) return 0;
  lua_pushinteger(L, atoi(s));
  lua_pushinteger(L, atoi(r));
  return 2;
}

static int l_init(lua_State *L) {
  int global = lua_toboolean(L, 1), prov, rank, size, len;
  char host[MPI_MAX_PROCESSOR_NAME];
  double t0;
  if (global) {
    void *h = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    if (h == NULL) return luaL_error(L, "dlopen libmpi.so.40: %s", dlerror());
  }
  t0 = now();
  if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &prov) != MPI_SUCCESS)
    return luaL_error(L, "MPI_Init_thread failed");
  t0 = now() - t0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  lua_pushinteger(L, rank);
  lua_pushinteger(L, size);
  lua_pushstring(L, host);
  lua_pushnumber(L, t0);
  return 4;
}

static int l_exchange(lua_State *L) {
  int rank, size, sum = 0, got = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Sendrecv(&rank, 1, MPI_INT, (rank + 1) % size, 0, &got, 1, MPI_INT,
               (rank + size - 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  lua_pushinteger(L, sum);
  lua_pushinteger(L, got);
  return 2;
}

static int l_finalize(lua_State *L) {
  (void)L;
  MPI_Finalize();
  return 0;
}

int luaopen_dlmod(lua_State *L) {
  static const luaL_Reg f[] = { { "launched", l_launched }, { "init", l_init },
                                { "exchange", l_exchange }, { "finalize", l_finalize },
                                { NULL, NULL } };
  luaL_newlib(L, f);
  return 1;
}
