/*
** pool.c -- mp.Pool's Lua API: creating a pool, its calls, its end.  The
** work is pool_job.c's (jobs and tasks), pool_sched.c's (the scheduler) and the
** transport's (tr_fork.c: forked workers; with backend = "mpi", MPI ranks
** through the lmp.mpi module, loaded on demand: capsule.h); pool_result.c
** has AsyncResult.  Builds on pool.h (pool_result.h), tr_fork.h and
** capsule.h.
*/
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsule.h"
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

static lua_Integer checkchunk(lua_State *L, int idx) {
  lua_Integer c = lmp_checkint(L, idx, "chunksize");
  if (c < 1) lmp_error(L, "lmp: chunksize must be a positive integer, got "
                          LMP_FMTINT, LMP_INTARG(c));
  return c;
}

/*
** The optional part of a call: positional (a chunksize and/or callbacks)
** or one options table.  `name` names the call in errors; `chunk`: the
** call takes a chunksize (first); `cbs`: how many callbacks follow (0, or
** 2: callback and error_callback); `prog`: it takes a progress option.
*/
typedef struct callform {
  const char *name;
  int chunk, cbs, prog;
} callform;

/* `pool:map(f, pairs(t))`: the generic-for triple's table lands where the
   options go; say that, not "unknown option" */
static void check_stray(lua_State *L, const callform *c) {
  int stray = 0;
  if (!lua_isfunction(L, 3) || !lua_iscfunction(L, 3)) return;
  lmp_pushglobals(L);
  lmp_getfield(L, -1, "next");
  stray = lua_rawequal(L, -1, 3);
  lmp_getfield(L, -2, "ipairs");
  if (!stray && lua_isfunction(L, -1)) {
    lua_newtable(L);
    lua_call(L, 1, 1);                 /* ipairs({}): its iterator */
    stray = lua_rawequal(L, -1, 3);
  }
  lua_pop(L, 3);
  if (stray)
    lmp_error(L, "lmp: %s got a generic-for triple (pairs(t) or ipairs(t)) "
                 "where it takes one iterable: pass the array itself, or an "
                 "iterator function that returns one item per call", c->name);
}

static void call_table(lua_State *L, int arg, lmp_jobspec *s,
                       const callform *c) {
  const char *names[6];
  int n = 0;
  if (c->chunk) names[n++] = "chunksize";
  if (c->cbs) {
    names[n++] = "callback";
    names[n++] = "error_callback";
  }
  names[n++] = "timeout";
  if (c->prog) names[n++] = "progress";
  names[n] = NULL;
  check_stray(L, c);
  lmp_checkopts(L, arg, c->name, names);
  if (!lua_isnoneornil(L, arg + 1) || !lua_isnoneornil(L, arg + 2))
    lmp_error(L, "lmp: %s takes its callbacks in the options table, not "
                 "after it", c->name);
  if (c->chunk && lmp_getfield(L, arg, "chunksize") != LUA_TNIL)
    s->chunksize = checkchunk(L, -1);
  if (c->cbs) {
    lmp_getfield(L, arg, "callback");
    s->cb = lua_gettop(L);
    lmp_getfield(L, arg, "error_callback");
    s->ecb = lua_gettop(L);
  }
  lmp_getfield(L, arg, "timeout");
  s->timeout = lmp_optseconds(L, -1, "timeout");
  if (c->prog) {
    int t = lmp_getfield(L, arg, "progress");
    if (t == LUA_TBOOLEAN) s->progress = lua_toboolean(L, -1) ? -1 : 0;
    else if (lmp_iscallable(L, -1)) s->progress = lua_gettop(L);
    else if (t != LUA_TNIL)
      lmp_typeerror(L, -1, "progress", "true or a function(done, total)");
  }
}

/* fills s from the call's arguments from `arg` on */
static void call_options(lua_State *L, int arg, lmp_jobspec *s,
                         const callform *c) {
  lua_settop(L, arg + 2);
  if (lua_istable(L, arg) && !lmp_iscallable(L, arg)) {
    call_table(L, arg, s, c);
    return;
  }
  if (c->chunk) {
    if (!lua_isnil(L, arg)) s->chunksize = checkchunk(L, arg);
    arg++;
  }
  if (c->cbs) {
    s->cb = arg;
    s->ecb = arg + 1;
  }
}

/* ---------------------------------------------------------------------- */
/* calls                                                                  */
/* ---------------------------------------------------------------------- */
static Job *call_job(lua_State *L, int kind, int star, int async,
                     const callform *c) {
  Pool *P = ownpool(L, 1);
  lmp_jobspec s;
  memset(&s, 0, sizeof s);
  s.kind = kind;
  s.star = star;
  s.stats = async && kind != K_IMAP && kind != K_IMAPU;
  s.fn = 2;
  s.input = 3;
  checkrunning(L, P);
  checktask(L, 2);
  call_options(L, 4, &s, c);
  return lmp_job_new(L, P, 1, &s);
}

static int pool_apply_async(lua_State *L) {
  static const callform c = { "apply_async", 0, 2, 0 };
  call_job(L, K_APPLY, 1, 1, &c);
  lmp_pool_submitted(L, ownpool(L, 1), 1, 1);
  return 1;
}

/* pool:submit(f, ...): apply_async with the arguments as varargs */
static int pool_submit(lua_State *L) {
  int n = lua_gettop(L) - 2, i;
  static const callform c = { "submit", 0, 0, 0 };
  lua_createtable(L, n > 0 ? n : 0, 1);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 2);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n > 0 ? n : 0);
  lua_setfield(L, -2, "n");
  lua_replace(L, 3);
  lua_settop(L, 3);
  call_job(L, K_APPLY, 1, 1, &c);
  lmp_pool_submitted(L, ownpool(L, 1), 1, 1);
  return 1;
}

static int pool_apply(lua_State *L) {
  static const callform c = { "apply", 0, 0, 0 };
  Job *J = call_job(L, K_APPLY, 1, 0, &c);
  int jidx = lua_gettop(L);
  lmp_job_waitcall(L, J, jidx);
  return lmp_job_result(L, J, jidx);
}

static int map_common(lua_State *L, int star, int async) {
  static const callform forms[4] = {
    { "map", 1, 0, 1 }, { "map_async", 1, 2, 1 },
    { "starmap", 1, 0, 1 }, { "starmap_async", 1, 2, 1 }
  };
  Job *J = call_job(L, K_MAP, star, async, &forms[star * 2 + async]);
  int jidx = lua_gettop(L);
  if (async) {
    lmp_pool_submitted(L, ownpool(L, 1), 1, 1);
    return 1;
  }
  lmp_job_waitcall(L, J, jidx);
  return lmp_job_result(L, J, jidx);
}

static int pool_map(lua_State *L) { return map_common(L, 0, 0); }
static int pool_map_async(lua_State *L) { return map_common(L, 0, 1); }
static int pool_starmap(lua_State *L) { return map_common(L, 1, 0); }
static int pool_starmap_async(lua_State *L) { return map_common(L, 1, 1); }

static int imap_common(lua_State *L, int kind) {
  static const callform forms[2] = {
    { "imap", 1, 0, 1 }, { "imap_unordered", 1, 0, 1 }
  };
  call_job(L, kind, 0, 0, &forms[kind == K_IMAPU]);
  lmp_pool_submitted(L, ownpool(L, 1), 1, 0);
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

static void pool_endtrace(Pool *P) {
  lmp_trace_close(P->trace);
  P->trace = NULL;
}

static void pool_doterminate(lua_State *L, Pool *P, int pidx) {
  if (P->state == P_TERM && P->T == NULL) return;
  lmp_pool_stop(L, P, pidx, LMP_STOP_KILL, "lmp: pool terminated");
  pool_endtrace(P);
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
  pool_endtrace(P);
  return 0;
}

/* pool:trace(path): starts a trace of the tasks from now on (ending the
   one before); pool:trace(false) or (nil) ends it */
static int pool_trace(lua_State *L) {
  Pool *P = ownpool(L, 1);
  if (lua_toboolean(L, 2) && lua_type(L, 2) != LUA_TSTRING)
    lmp_typeerror(L, 2, "trace", "a file name, or false to stop");
  pool_endtrace(P);
  if (lua_toboolean(L, 2)) P->trace = lmp_trace_open(L, lua_tostring(L, 2));
  return 0;
}

/* an fd readable when results wait (for luv, cqueues, copas...) */
static int pool_fileno(lua_State *L) {
  Pool *P = ownpool(L, 1);
  int fd;
  if (P->T == NULL || P->state == P_TERM) return lmp_error(L, "lmp: pool is terminated");
  fd = P->T->ops->fileno(L, P->T);
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

/* collects what is ready and runs callbacks, never blocks: how many
   jobs finished */
static int pool_poll(lua_State *L) {
  Pool *P = ownpool(L, 1);
  unsigned long before = P->finseq;
  if (P->T != NULL && P->state != P_TERM) lmp_pool_poll(L, P, 1);
  lua_pushinteger(L, (lua_Integer)(P->finseq - before));
  return 1;
}

static int pool_gc(lua_State *L) {
  Pool *P = checkpool(L, 1);
  int i;
  if (P->owner == getpid()) pool_endtrace(P);
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
/* what mp.Pool's arguments say beyond the Pool's own fields */
typedef struct poolopts {
  lua_Integer n;        /* processes; 0: not given */
  int mpi;              /* backend = "mpi" */
} poolopts;

static int pool_backend(lua_State *L) {
  int mpi = 0;
  if (lmp_getfield(L, 1, "backend") != LUA_TNIL) {
    const char *b = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    mpi = strcmp(b, "mpi") == 0;
    if (!mpi && strcmp(b, "fork") != 0)
      lmp_error(L, "lmp: Pool backend must be \"fork\" (the default) or "
                   "\"mpi\", got %s", lmp_tolstring(L, -1, NULL));
  }
  lua_pop(L, 1);
  return mpi;
}

/* the options an MPI pool cannot honour: its workers are the job's ranks */
static void mpi_refuse(lua_State *L) {
  if (lmp_getfield(L, 1, "processes") != LUA_TNIL)
    lmp_error(L, "lmp: Pool processes cannot be set with backend \"mpi\": "
                 "the workers are ranks 1..n-1 of the job (mpirun -n sets n)");
  if (lmp_getfield(L, 1, "maxtasksperchild") != LUA_TNIL)
    lmp_error(L, "lmp: Pool maxtasksperchild cannot be used with backend "
                 "\"mpi\": a worker rank cannot be replaced");
  lua_pop(L, 2);
}

/* the trace file: opened now, or (MPI) by rank 0 once it knows it is */
static void pool_traceopt(lua_State *L, Pool *P, int mpi) {
  if (lmp_getfield(L, 1, "trace") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      lmp_typeerror(L, -1, "Pool trace", "a file name");
    if (mpi) {
      lua_setfield(L, -2, "tracepath");
      return;
    }
    P->trace = lmp_trace_open(L, lua_tostring(L, -1));
  }
  lua_pop(L, 1);
}

/* the options table at index 1 -> P, o and the user value table on top */
static void pool_options(lua_State *L, Pool *P, poolopts *o) {
  static const char *const names[] = {
    "processes", "initializer", "initargs", "maxtasksperchild", "timeout",
    "trace", "backend", "_jobidmax", NULL
  };
  lmp_checkopts(L, 1, "Pool", names);
  o->mpi = pool_backend(L);
  if (o->mpi) mpi_refuse(L);
  /* for the specs only: a small id range, to reach the wrap-around */
  if (lmp_getfield(L, 1, "_jobidmax") == LUA_TNUMBER &&
      lua_tointeger(L, -1) >= 2 && lua_tointeger(L, -1) < JOBID_MAX)
    P->idmax = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (lmp_getfield(L, 1, "processes") != LUA_TNIL) {
    o->n = lmp_checkint(L, -1, "Pool processes");
    if (o->n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got "
                               LMP_FMTINT, LMP_INTARG(o->n));
  }
  lua_pop(L, 1);
  if (lmp_getfield(L, 1, "initializer") != LUA_TNIL && !lmp_iscallable(L, -1))
    lmp_typeerror(L, -1, "Pool initializer", "a function");
  lua_setfield(L, -2, "initializer");
  if (lmp_getfield(L, 1, "initargs") != LUA_TNIL && !lua_istable(L, -1))
    lmp_typeerror(L, -1, "Pool initargs", "a table");
  lua_setfield(L, -2, "initargs");
  if (lmp_getfield(L, 1, "timeout") != LUA_TNIL)
    if ((P->timeout = lmp_optseconds(L, -1, "Pool timeout")) < 0) P->timeout = 0;
  lua_pop(L, 1);
  pool_traceopt(L, P, o->mpi);
  if (lmp_getfield(L, 1, "maxtasksperchild") != LUA_TNIL) {
    int isint = 0;
    lua_Integer m = lua_tointegerx(L, -1, &isint);
    if (!isint || m < 1)
      lmp_error(L, "lmp: Pool maxtasksperchild must be a positive integer");
    P->maxtasks = (long)m;
  }
  lua_pop(L, 1);
}

/* a new Pool userdata (harmless until workers exist) and its user value */
static Pool *pool_alloc(lua_State *L) {
  Pool *P = (Pool *)lmp_newud(L, sizeof *P, 1);
  static const char *const tables[] = {"jobs", "order", "finished", "fnids",
                                       "progress", NULL};
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

/* starts every worker; a failure stops those started */
static void pool_startall(lua_State *L, Pool *P) {
  int i;
  P->state = P_RUN;
  for (i = 0; i < P->n; i++) {
    if (P->T->ops->start(L, P->T, i) != 0) {
      /* the workers started so far go before the error does */
      if (P->T->fixed) lua_pushfstring(L, "lmp: %s", P->T->err);
      else lua_pushfstring(L, "lmp: Pool(%d): %s", P->n, P->T->err);
      pool_doterminate(L, P, 1);
      lua_error(L);
    }
  }
}

/* the workers: a transport, each started */
static void pool_start(lua_State *L, Pool *P) {
  lmp_workercfg cfg;
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
  pool_startall(L, P);
}

/* ---------------------------------------------------------------------- */
/* backend = "mpi"                                                        */
/* ---------------------------------------------------------------------- */
#define MPI_HOWTO "install Open MPI (Debian: apt-get install openmpi-bin " \
  "libopenmpi-dev) and build lmp.mpi with \"make mpi\" in lmp's source " \
  "tree, or install it with \"luarocks install lmp-mpi\""

/*
** The job's size as its launcher told it, read before MPI is touched: an
** MPI_Init without a launcher starts an orted daemon and takes ~0.4 s,
** only to find one rank.  Open MPI's mpirun, then PMI launchers (MPICH's
** hydra, srun --mpi=pmi2), then srun with PMIx.
*/
static long mpi_jobsize(void) {
  const char *s = getenv("OMPI_COMM_WORLD_SIZE");
  if (s == NULL) s = getenv("PMI_SIZE");
  if (s == NULL && getenv("PMIX_RANK") != NULL) s = getenv("SLURM_NTASKS");
  return s != NULL && atol(s) > 0 ? atol(s) : 1;
}

/* lmp.mpi, loaded on demand: libmpi is mapped only from here on */
static const lmp_mpi_capsule *mpi_capsule(lua_State *L) {
  const lmp_mpi_capsule *A;
  long size = mpi_jobsize();
  if (size < 2)
    lmp_error(L, "lmp: backend \"mpi\" needs mpirun -n 2 or more (this job "
                 "has 1 rank)");
  lmp_pushglobals(L);
  lmp_getfield(L, -1, "require");
  lua_pushliteral(L, "lmp.mpi");
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *e = lmp_tolstring(L, -1, NULL);
    if (strstr(e, "module 'lmp.mpi' not found") != NULL)
      lmp_error(L, "lmp: backend \"mpi\" needs the lmp.mpi module "
                   "(lmp/mpi.so), which is not installed: " MPI_HOWTO);
    lmp_error(L, "lmp: backend \"mpi\" cannot load lmp.mpi (%s): " MPI_HOWTO,
              e);
  }
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_MPICAPSULE);
  A = (const lmp_mpi_capsule *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (A == NULL || A->version != LMP_CAPSULE_VERSION ||
      A->sizes != LMP_CAPSULE_SIZES)
    lmp_error(L, "lmp: lmp.mpi was built for another version of lmp: "
                 "rebuild it (\"make mpi\") with this one");
  return A;
}

/*
** Every rank of the job runs this.  Rank 0 gets a pool over the others;
** any other rank serves tasks here with the same loop as a forked worker
** and leaves the process when rank 0's pool ends (it never returns).
** Objects do not carry ids across ranks (ident.h: those are per process),
** so the pool shares none: a task's _G is the receiving rank's own.
*/
static void pool_start_mpi(lua_State *L, Pool *P) {
  const lmp_mpi_capsule *A = mpi_capsule(L);
  lmp_transport *T = NULL;
  lmp_channel *C = NULL;
  A->open(L, &T, &C);
  if (C != NULL) {
    lmp_workercfg cfg;
    lmp_workercfg_push(L, 1, &cfg);
    cfg.maxtasks = 0;
    cfg.identmark = 0;
    lmp_worker_run(L, C, &cfg);
  }
  P->w = (Worker *)calloc((size_t)T->n, sizeof *P->w);
  if (P->w == NULL) lmp_error(L, "lmp: not enough memory");
  P->n = T->n;
  P->T = T;
  lmp_setuvfield(L, 1, "transport");
  if (lmp_uvfield(L, 1, "tracepath") == LUA_TSTRING)
    P->trace = lmp_trace_open(L, lua_tostring(L, -1));
  lua_settop(L, 1);
  pool_startall(L, P);
}

static int pool_new(lua_State *L) {
  Pool *P;
  poolopts o;
  lmp_zombie_reap(lmp_getstate(L), 0);
  lua_settop(L, 1);
  memset(&o, 0, sizeof o);
  P = pool_alloc(L);
  if (lua_istable(L, 1)) pool_options(L, P, &o);
  else if (!lua_isnil(L, 1)) {
    if (lua_type(L, 1) != LUA_TNUMBER)
      lmp_typeerror(L, 1, "Pool", "a number of processes or an options table");
    o.n = lmp_checkint(L, 1, "Pool processes");
    if (o.n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got "
                              LMP_FMTINT, LMP_INTARG(o.n));
  }
  lmp_setuv(L, -2, 1);
  lua_replace(L, 1);                   /* the pool is argument 1 from here */
  lua_settop(L, 1);
  if (o.mpi) pool_start_mpi(L, P);
  else {
    if (o.n == 0) o.n = lmp_cpu_count();
    if (o.n > 4096) lmp_error(L, "lmp: Pool of " LMP_FMTINT " processes is "
                                 "too large", LMP_INTARG(o.n));
    P->w = (Worker *)calloc((size_t)o.n, sizeof *P->w);
    if (P->w == NULL) lmp_error(L, "lmp: not enough memory");
    P->n = (int)o.n;
    pool_start(L, P);
  }
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
    {"submit", pool_submit},
    {"map", pool_map},
    {"map_async", pool_map_async},
    {"imap", pool_imap},
    {"imap_unordered", pool_imap_unordered},
    {"starmap", pool_starmap},
    {"starmap_async", pool_starmap_async},
    {"close", pool_close},
    {"join", pool_join},
    {"terminate", pool_terminate},
    {"trace", pool_trace},
    {"fileno", pool_fileno},
    {"poll", pool_poll},
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
