/*
** pool.c -- mp.Pool's Lua API: creating a pool, its calls, its end.  The
** work is pool_job.c's (jobs and tasks), pool_sched.c's (the scheduler) and the
** transport's (tr_fork.c: forked workers); pool_result.c has AsyncResult.
*/
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tr_fork.h"

static Pool *checkpool(lua_State *L, int idx) {
  return (Pool *)lmp_checkudata(L, idx, LMP_POOL, "Pool");
}

static Pool *ownpool(lua_State *L, int idx) {
  Pool *P = checkpool(L, idx);
  if (P->owner != getpid())
    lmp_error(L, "lmp: this Pool belongs to process %d", (int)P->owner);
  return P;
}

static void checkrunning(lua_State *L, Pool *P) {
  if (P->state != P_RUN)
    lmp_error(L, "lmp: pool is %s", P->state == P_CLOSE ? "closed"
                                                         : "terminated");
}

static void checktask(lua_State *L, int idx) {
  if (!lmp_iscallable(L, idx)) lmp_typeerror(L, idx, "task", "a function");
}

static lua_Integer optchunk(lua_State *L, int idx) {
  lua_Integer c;
  if (lua_isnoneornil(L, idx)) return 0;
  c = lmp_checkint(L, idx, "chunksize");
  if (c < 1) lmp_error(L, "lmp: chunksize must be a positive integer, got "
                          LMP_FMTINT, LMP_INTARG(c));
  return c;
}

/* ---------------------------------------------------------------------- */
/* calls                                                                  */
/* ---------------------------------------------------------------------- */
static int pool_apply_async(lua_State *L) {
  Pool *P = ownpool(L, 1);
  lmp_jobspec s = { K_APPLY, 1, 2, 3, 0, 4, 5 };
  checkrunning(L, P);
  checktask(L, 2);
  lua_settop(L, 5);
  lmp_job_new(L, P, 1, &s);
  lmp_pool_submitted(L, P, 1);
  return 1;
}

static int pool_apply(lua_State *L) {
  Pool *P = ownpool(L, 1);
  lmp_jobspec s = { K_APPLY, 1, 2, 3, 0, 0, 0 };
  Job *J;
  checkrunning(L, P);
  checktask(L, 2);
  lua_settop(L, 3);
  J = lmp_job_new(L, P, 1, &s);
  lmp_job_wait(L, J, 4, -1, 1);
  return lmp_job_result(L, J, 4);
}

static int map_common(lua_State *L, int star, int async) {
  Pool *P = ownpool(L, 1);
  lmp_jobspec s = { K_MAP, 0, 2, 3, 0, 0, 0 };
  Job *J;
  checkrunning(L, P);
  checktask(L, 2);
  s.star = star;
  s.chunksize = optchunk(L, 4);
  if (async) {
    s.cb = 5;
    s.ecb = 6;
  }
  lua_settop(L, 6);
  J = lmp_job_new(L, P, 1, &s);
  if (async) {
    lmp_pool_submitted(L, P, 1);
    return 1;
  }
  lmp_job_wait(L, J, 7, -1, 1);
  return lmp_job_result(L, J, 7);
}

static int pool_map(lua_State *L) { return map_common(L, 0, 0); }
static int pool_map_async(lua_State *L) { return map_common(L, 0, 1); }
static int pool_starmap(lua_State *L) { return map_common(L, 1, 0); }
static int pool_starmap_async(lua_State *L) { return map_common(L, 1, 1); }

static int imap_common(lua_State *L, int kind) {
  Pool *P = ownpool(L, 1);
  lmp_jobspec s = { K_IMAP, 0, 2, 3, 0, 0, 0 };
  checkrunning(L, P);
  checktask(L, 2);
  s.kind = kind;
  s.chunksize = optchunk(L, 4);
  lua_settop(L, 4);
  lmp_job_new(L, P, 1, &s);
  lmp_pool_submitted(L, P, 1);
  return lmp_imap_iterator(L);
}

static int pool_imap(lua_State *L) { return imap_common(L, K_IMAP); }
static int pool_imap_unordered(lua_State *L) {
  return imap_common(L, K_IMAPU);
}

/* ---------------------------------------------------------------------- */
/* lifetime                                                               */
/* ---------------------------------------------------------------------- */
static int pool_close(lua_State *L) {
  Pool *P = ownpool(L, 1);
  if (P->state == P_RUN) P->state = P_CLOSE;
  return 0;
}

static void pool_doterminate(lua_State *L, Pool *P, int pidx) {
  if (P->state == P_TERM && P->T == NULL) return;
  lmp_pool_stop(L, P, pidx, LMP_STOP_KILL, "lmp: pool terminated");
}

static int pool_terminate(lua_State *L) {
  Pool *P = ownpool(L, 1);
  pool_doterminate(L, P, 1);
  return 0;
}

/* `local pool <close>`: an inherited pool in a child is left alone */
static int pool_closescope(lua_State *L) {
  Pool *P = checkpool(L, 1);
  if (P->owner != getpid()) return 0;
  pool_doterminate(L, P, 1);
  return 0;
}

static int pool_join(lua_State *L) {
  Pool *P = ownpool(L, 1);
  if (P->state == P_RUN)
    return lmp_error(L, "lmp: join before close or terminate");
  if (P->state == P_CLOSE) {
    /* an imap whose iterator was dropped waits for a consumer that will
       never come: a full collection lets it go (ijobs is weak) */
    if (lmp_imap_waiting(L, P, 1)) lmp_gc_collect(L);
    P->joining = 1;                    /* the others run to the end */
    lmp_pool_pump(L, P, 1, lmp_done_all, NULL, -1);
    P->joining = 0;
    P->state = P_TERM;
    P->T->ops->stopall(L, P->T, LMP_STOP_JOIN);   /* idle: they exit */
  }
  return 0;
}

static int pool_gc(lua_State *L) {
  Pool *P = checkpool(L, 1);
  int i;
  if (P->owner == getpid() && P->T != NULL) {
    P->T->ops->stopall(L, P->T, LMP_STOP_BRIEF);  /* never wait on a task */
    P->T->ops->free(L, P->T);
    lua_pushnil(L);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, P);         /* its encoder */
  }
  for (i = 0; i < P->ntasks; i++) free(P->tasks[i].args);
  free(P->tasks);
  free(P->w);
  P->tasks = NULL;
  P->w = NULL;
  P->ntasks = 0;
  P->T = NULL;
  return 0;
}

static int pool_tostring(lua_State *L) {
  Pool *P = checkpool(L, 1);
  static const char *const st[] = {"running", "closed", "terminated"};
  lua_pushfstring(L, "lmp.Pool{%d workers, %s}", P->n, st[P->state]);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* mp.Pool                                                                */
/* ---------------------------------------------------------------------- */
/* the options table at index 1 -> P and the user value table on top */
static lua_Integer pool_options(lua_State *L, Pool *P) {
  lua_Integer n = 0;
  /* for the specs only: a small id range, to reach the wrap-around */
  if (lmp_getfield(L, 1, "_jobidmax") == LUA_TNUMBER &&
      lua_tointeger(L, -1) >= 2 && lua_tointeger(L, -1) < JOBID_MAX)
    P->idmax = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (lmp_getfield(L, 1, "processes") != LUA_TNIL) {
    n = lmp_checkint(L, -1, "Pool processes");
    if (n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got "
                            LMP_FMTINT, LMP_INTARG(n));
  }
  lua_pop(L, 1);
  if (lmp_getfield(L, 1, "initializer") != LUA_TNIL && !lmp_iscallable(L, -1))
    lmp_typeerror(L, -1, "Pool initializer", "a function");
  lua_setfield(L, -2, "initializer");
  if (lmp_getfield(L, 1, "initargs") != LUA_TNIL && !lua_istable(L, -1))
    lmp_typeerror(L, -1, "Pool initargs", "a table");
  lua_setfield(L, -2, "initargs");
  if (lmp_getfield(L, 1, "maxtasksperchild") != LUA_TNIL) {
    int isint = 0;
    lua_Integer m = lua_tointegerx(L, -1, &isint);
    if (!isint || m < 1)
      lmp_error(L, "lmp: Pool maxtasksperchild must be a positive integer");
    P->maxtasks = (long)m;
  }
  lua_pop(L, 1);
  return n;
}

/* a new Pool userdata (harmless until workers exist) and its user value */
static Pool *pool_alloc(lua_State *L) {
  Pool *P = (Pool *)lmp_newud(L, sizeof *P, 1);
  static const char *const tables[] = {"jobs", "order", "finished", "fnids",
                                       NULL};
  int i;
  memset(P, 0, sizeof *P);
  P->owner = getpid();
  P->state = P_TERM;
  P->tasktime = QUEUED / MINDEPTH;
  P->depth = MINDEPTH;
  P->idmax = JOBID_MAX;
  luaL_setmetatable(L, LMP_POOL);
  lua_createtable(L, 0, 8);
  for (i = 0; tables[i] != NULL; i++) {
    lua_newtable(L);
    lua_setfield(L, -2, tables[i]);
  }
  lua_newtable(L);                     /* weak values: dropped imaps go */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "ijobs");
  return P;
}

/* the workers: a transport, each started; a failure stops those started */
static void pool_start(lua_State *L, Pool *P) {
  lmp_workercfg cfg;
  int i;
  /* the environments of the code creating the pool are the workers' too:
     tasks defined there use their own copy (ident.h) */
  lmp_ident_scan(L);
  P->identmark = lmp_ident_mark(L);
  lmp_workercfg_push(L, 1, &cfg);
  cfg.maxtasks = P->maxtasks;
  cfg.identmark = P->identmark;
  P->T = lmp_trfork_new(L, P->n, &cfg);
  lmp_setuvfield(L, 1, "transport");
  lua_settop(L, 1);
  P->state = P_RUN;
  for (i = 0; i < P->n; i++) {
    if (P->T->ops->start(L, P->T, i) != 0) {
      /* the workers started so far go before the error does */
      lua_pushfstring(L, "lmp: Pool(%d): %s", P->n, P->T->err);
      pool_doterminate(L, P, 1);
      lua_error(L);
    }
  }
}

static int pool_new(lua_State *L) {
  Pool *P;
  lua_Integer n = 0;
  lmp_zombie_reap(lmp_getstate(L), 0);
  lua_settop(L, 1);
  P = pool_alloc(L);
  if (lua_istable(L, 1)) n = pool_options(L, P);
  else if (!lua_isnil(L, 1)) {
    if (lua_type(L, 1) != LUA_TNUMBER)
      lmp_typeerror(L, 1, "Pool", "a number of processes or an options table");
    n = lmp_checkint(L, 1, "Pool processes");
    if (n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got "
                            LMP_FMTINT, LMP_INTARG(n));
  }
  lmp_setuv(L, -2, 1);
  if (n == 0) n = lmp_cpu_count();
  if (n > 4096) lmp_error(L, "lmp: Pool of " LMP_FMTINT " processes is too "
                             "large", LMP_INTARG(n));
  P->w = (Worker *)calloc((size_t)n, sizeof *P->w);
  if (P->w == NULL) lmp_error(L, "lmp: not enough memory");
  P->n = (int)n;
  lua_replace(L, 1);                   /* the pool is argument 1 from here */
  lua_settop(L, 1);
  pool_start(L, P);
  if (lmp_pool_waitready(L, P, 1) != 0) {
    pool_doterminate(L, P, 1);
    if (lmp_uvfield(L, 1, "initerror") == LUA_TSTRING)
      lmp_error(L, "lmp: pool initializer failed: %s", lua_tostring(L, -1));
    return lua_error(L);
  }
  return 1;
}

void lmp_pool_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"apply", pool_apply},
    {"apply_async", pool_apply_async},
    {"map", pool_map},
    {"map_async", pool_map_async},
    {"imap", pool_imap},
    {"imap_unordered", pool_imap_unordered},
    {"starmap", pool_starmap},
    {"starmap_async", pool_starmap_async},
    {"close", pool_close},
    {"join", pool_join},
    {"terminate", pool_terminate},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", pool_gc},
    {"__close", pool_closescope},
    {"__tostring", pool_tostring},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, LMP_POOL)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lmp_result_open(L);
  lua_pushcfunction(L, pool_new);
  lua_setfield(L, -2, "Pool");
}
