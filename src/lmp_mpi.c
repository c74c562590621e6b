/*
** lmp_mpi.c -- the lmp.mpi module (lmp/mpi.so), the only part of lmp
** linked with libmpi.  `require "lmp.mpi"` checks lmp's capsule and
** publishes its own (capsule.h), which pool.c uses when a script asks for
** mp.Pool{backend = "mpi"}: MPI is initialised then, not at require.  The
** only symbol it exports is luaopen_lmp_mpi.  Builds on tr_mpi.h.
*/
#include "tr_mpi.h"

#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_lmp_mpi(lua_State *L);

static const char usedkey = 0;  /* registry[&usedkey]: this job's pool */

static const lmp_capsule *lmp_api(lua_State *L) {
  const lmp_capsule *X;
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_CAPSULE);
  X = (const lmp_capsule *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return X;
}

/* the collective every rank runs in mp.Pool{backend = "mpi"} */
static void mpi_open(lua_State *L, lmp_transport **T, lmp_channel **C) {
  mpi_net N;
  char msg[256];
  int *fds, wfd = -1;
  *T = NULL;
  *C = NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &usedkey);
  if (lua_toboolean(L, -1))
    luaL_error(L, "lmp: backend \"mpi\" makes one pool per job: its worker "
                  "ranks serve the first one and leave when it ends");
  lua_pop(L, 1);
  memset(&N, 0, sizeof N);
  N.X = lmp_api(L);
  if (lmpi_join(&N, msg, sizeof msg) != 0) luaL_error(L, "%s", msg);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &usedkey);
  fds = (int *)calloc((size_t)N.size, sizeof *fds);
  if (fds == NULL) lmpi_oom();
  lmpi_lifelines(L, &N, fds, &wfd);
  if (N.rank == 0) *T = lmp_trmpi_new(L, &N, fds);
  else *C = lmp_chmpi_new(L, &N, wfd);
  free(fds);
}

static const lmp_mpi_capsule mpicapsule = {
  LMP_CAPSULE_VERSION, LMP_CAPSULE_SIZES, mpi_open
};

int luaopen_lmp_mpi(lua_State *L) {
  const lmp_capsule *X = lmp_api(L);
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (X == NULL) {                     /* required before lmp itself */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lmp");
    lua_call(L, 1, 0);
    X = lmp_api(L);
  }
  if (X == NULL || X->version != LMP_CAPSULE_VERSION ||
      X->sizes != LMP_CAPSULE_SIZES)
    return luaL_error(L, "lmp: lmp.mpi was built for another version of lmp "
                         "(capsule %d, this lmp has %d): rebuild it (\"make "
                         "mpi\") with this one", LMP_CAPSULE_VERSION,
                      X != NULL ? X->version : 0);
  lua_pushlightuserdata(L, (void *)&mpicapsule);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_MPICAPSULE);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, X->lmp_version);
  lua_setfield(L, -2, "_VERSION");
  if (MPI_Get_library_version(lib, &len) == MPI_SUCCESS) {
    lua_pushlstring(L, lib, strcspn(lib, "\n,"));  /* "Open MPI v4.1.4" */
    lua_setfield(L, -2, "library");
  }
  return 1;
}
