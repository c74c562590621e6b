/*
** pool_worker.c -- a Pool worker.  Tasks run in a thread of their own (clean
** tracebacks).  Functions arrive with a task the first time and are kept
** by id (FNCACHE of them, evicted in the order the parent's mirror of this
** cache evicts); a stateless one (LMP_TF_KEEP) is kept across calls, with
** its upvalues put back after each task.  An item whose argument cannot be
** decoded, whose call fails or whose result cannot be encoded fails alone:
** the results of the items before it go back with its error.
*/
#include "pool_worker.h"

#include <limits.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

#define FNCACHE 16       /* must match the parent's mirror (pool_sched.c) */

typedef struct WState {
  lua_State *L;          /* the worker's main thread */
  lua_State *T;          /* the thread tasks run in */
  lmp_channel *C;
  lmp_enc *E;
  uint32_t fnids[FNCACHE];
  int fnpos;
  int fncache, fnbad, fnup;   /* stack indices: id -> function, id -> bytes
                                 that failed to load, id -> upvalues */
  long maxtasks, done;
  /* the current task */
  lmp_taskhdr h;
  const char *args;
  size_t argslen;
  lua_Integer failat;    /* item of the chunk being decoded, run or encoded */
  lua_Integer streamed;  /* items whose results went out one by one */
  lmp_replystats st;     /* its run, for the final reply */
  double cpu0;           /* CPU seconds at its start; -1: not measured */
} WState;

/* the worker's end: its channel's way out (an MPI rank must leave MPI
   first), else the forked child's */
static void w_leave(WState *W, int code) {
  if (W->C->leave != NULL) W->C->leave(W->C, code);
  lmp_child_exit(code);
}

static void w_send(WState *W) {
  if (W->C->send(W->C, W->E) != 0) w_leave(W, 1);
  fflush(stdout);                      /* a task's prints show promptly */
}

static double cpu_seconds(const struct rusage *r) {
  return (double)(r->ru_utime.tv_sec + r->ru_stime.tv_sec) +
         (double)(r->ru_utime.tv_usec + r->ru_stime.tv_usec) * 1e-6;
}

/* the task begins: wall clock always; CPU only when asked (a getrusage
   costs about a microsecond here, as much as a tiny task) */
static void w_started(WState *W) {
  W->st.started = lmp_realtime();
  W->st.cpu = -1;
  W->st.maxrss = -1;
  W->cpu0 = -1;
  if (W->h.flags & LMP_TF_STATS) {
    struct rusage r;
    if (getrusage(RUSAGE_SELF, &r) == 0) W->cpu0 = cpu_seconds(&r);
  }
}

static void w_ended(WState *W) {
  W->st.ended = lmp_realtime();
  if (W->cpu0 >= 0) {
    struct rusage r;
    if (getrusage(RUSAGE_SELF, &r) == 0) {
      W->st.cpu = cpu_seconds(&r) - W->cpu0;
      W->st.maxrss = (int64_t)r.ru_maxrss;
    }
    W->cpu0 = -1;
  }
}

/* a reply frame's header: a final reply (OK, ERR) says how the task ran */
static void w_header(WState *W, uint32_t task, int status) {
  char h[LMP_REPLYHDR + LMP_REPLYSTATS];
  size_t n = LMP_REPLYHDR;
  lmp_enc_reset(W->E, W->L);
  lmp_replyhdr_put(h, task, status);
  if (status == LMP_RS_OK || status == LMP_RS_ERR) {
    w_ended(W);
    lmp_replystats_put(h + LMP_REPLYHDR, &W->st);
    n += LMP_REPLYSTATS;
  }
  lmp_enc_raw(W->E, h, n);
}

/*
** Replaces the item on top of L by its arguments; returns how many.  On L,
** not on the task thread: an error must meet the protected call on L.
*/
static int w_pushargs(lua_State *L, int star) {
  int n;
  if (!star) return 1;                 /* the item itself */
  n = lmp_pushargs(L, -1);
  lua_remove(L, -n - 1);
  return n;
}

/*
** Protected: [W, err, index, results or nil] -> an error reply for item
** `index` of the task, carrying the results of the items before it (so a
** map or imap gets those, and the error where it happened).
*/
static int w_senderr(lua_State *L) {
  WState *W = (WState *)lua_touserdata(L, 1);
  lua_Integer index = lua_tointeger(L, 3), k;
  lua_Integer before = lua_istable(L, 4) ? index - 1 : 0;
  w_header(W, W->h.task, LMP_RS_ERR);
  /* the results before `index` that did not go out one by one: the parent
     places them right before it */
  lmp_enc_begin(W->E, (size_t)(before - W->streamed) + 2);
  lmp_enc_value(W->E, 2, "error", -1);
  lmp_enc_value(W->E, 3, "error", -1);
  for (k = W->streamed + 1; k <= before; k++) {
    W->failat = k;                     /* for the caller, if it won't */
    lmp_rawgeti(L, 4, k);
    lmp_enc_value(W->E, -1, "result", (lua_Integer)W->h.start + k - 1);
    lua_pop(L, 1);
  }
  return 0;
}

/*
** Reports the error on top of L as the error of item `index`, after the
** results in the table at `results` (0: none) of the items before it.  If
** one of those won't encode, the report is of that item and its encoding
** error instead: the first failure is what a map raises.  Pops the error.
*/
static void w_reporterr(lua_State *L, WState *W, lua_Integer index,
                        int results) {
  int err = lua_gettop(L), literal = 0;
  for (;;) {
    lua_pushcfunction(L, w_senderr);
    lua_pushlightuserdata(L, W);
    lua_pushvalue(L, err);
    lua_pushinteger(L, index);
    if (results) lua_pushvalue(L, results);
    else lua_pushnil(L);
    W->failat = 0;
    if (lua_pcall(L, 4, 0, 0) == LUA_OK) break;
    if (W->failat > 0 && W->failat < index) index = W->failat;
    else if (literal) w_leave(W, 1);   /* out of memory: the parent
                                          reports a dead worker */
    else {                             /* the error value won't encode */
      lua_pop(L, 1);
      lua_pushliteral(L, "lmp: task failed with an error that cannot be "
                         "serialized");
      literal = 1;
    }
    lua_replace(L, err);
  }
  w_send(W);                           /* before the error value goes */
  lua_settop(L, err - 1);
}

/* apply: every value the call returned, on top of L from `first` */
static void w_sendvalues(lua_State *L, WState *W, int first, int n) {
  int k;
  (void)L;
  w_header(W, W->h.task, LMP_RS_OK);
  lmp_enc_begin(W->E, (size_t)n);
  for (k = 0; k < n; k++) lmp_enc_value(W->E, first + k, "result", k + 1);
  w_send(W);                           /* the values are still on the stack:
                                          big strings go out zero-copy */
}

/* a streamed task: item i's result (on top of L) goes out now, so that a
   timeout on a later item loses none of the items before it */
static void w_senditem(lua_State *L, WState *W, lua_Integer i) {
  w_header(W, W->h.task, LMP_RS_ITEM);
  lmp_enc_begin(W->E, 2);
  lua_pushinteger(L, i);
  lmp_enc_value(W->E, -1, "result", -1);
  lua_pop(L, 1);
  lmp_enc_value(W->E, -1, "result", (lua_Integer)W->h.start + i - 1);
  w_send(W);
  W->streamed = i;
}

/* a chunk: the first result of each item not streamed yet, from the table
   at `results` */
static void w_sendresults(lua_State *L, WState *W, int results, size_t n) {
  size_t i;
  w_header(W, W->h.task, LMP_RS_OK);
  lmp_enc_begin(W->E, n - (size_t)W->streamed);
  for (i = (size_t)W->streamed + 1; i <= n; i++) {
    W->failat = (lua_Integer)i;
    lmp_rawgeti(L, results, (lua_Integer)i);
    lmp_enc_value(W->E, -1, "result", (lua_Integer)W->h.start + (lua_Integer)i - 1);
    lua_pop(L, 1);
  }
}

/*
** The task body, run protected on L: decodes the items one by one, calls
** f for each, and encodes the reply.  Stack of L: [W(light), fn].
** An argument that cannot be decoded or a result that cannot be encoded
** raises out of here with W->failat naming its item; the caller reports
** it after the results before it, which stay in registry[W].
*/
static int w_task(lua_State *L) {
  WState *W = (WState *)lua_touserdata(L, 1);
  lua_State *T = W->T;
  lmp_dec D;
  size_t n, i;
  int results, apply = W->h.flags & LMP_TF_APPLY;
  n = lmp_dec_begin(&D, L, W->args, W->argslen, LMP_DEC_TRUSTED);
  /* n is at most the message's length: a hint that costs no more than it */
  lua_createtable(L, apply || n > INT_MAX ? 0 : (int)n, 0);
  results = lua_gettop(L);
  lua_pushvalue(L, results);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, W);
  for (i = 0; i < n; i++) {
    int nargs;
    W->failat = (lua_Integer)i + 1;
    lua_settop(T, 1);                  /* [msgh] */
    lua_pushvalue(L, 2);
    lmp_dec_value(&D);
    nargs = w_pushargs(L, W->h.flags & LMP_TF_STAR);
    if (!lua_checkstack(T, nargs + 2)) lmp_error(L, "lmp: too many arguments");
    lua_xmove(L, T, nargs + 1);        /* T: [msgh, fn, args...] */
    if (lua_pcall(T, nargs, LUA_MULTRET, 1) != LUA_OK) {
      /* [err, failed index, partial results...] */
      lua_pushcfunction(L, w_senderr);
      lua_pushvalue(L, 1);
      lua_xmove(T, L, 1);
      lua_pushinteger(L, (lua_Integer)i + 1);
      lua_pushvalue(L, results);
      lua_call(L, 4, 0);
      w_send(W);
      return 0;
    }
    if (apply) {                       /* all the values of one call */
      int nres = lua_gettop(T) - 1;
      luaL_checkstack(L, nres + 4, "lmp: too many results");
      lua_xmove(T, L, nres);
      w_sendvalues(L, W, results + 1, nres);
      return 0;
    }
    lua_settop(T, 2);                  /* first result only */
    lua_xmove(T, L, 1);
    if (W->h.flags & LMP_TF_STREAM) w_senditem(L, W, (lua_Integer)i + 1);
    lua_rawseti(L, results, (lua_Integer)i + 1);
  }
  w_sendresults(L, W, results, n);
  W->failat = 1;                       /* a corrupt message: trust none */
  lmp_dec_end(&D);
  w_send(W);                           /* results table still anchored */
  return 0;
}

/* protected: decodes a task function */
static int w_loadfn_p(lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 1);
  size_t len = (size_t)lua_tointeger(L, 2);
  lmp_dec D;
  lmp_dec_begin(&D, L, p, len, LMP_DEC_TRUSTED);
  lmp_dec_value(&D);
  lmp_dec_end(&D);
  return 1;
}

/*
** Decodes a task function onto L.  If it won't decode, reports that as the
** task's error and returns -1.
*/
static int w_loadfn(lua_State *L, WState *W, const char *p, size_t len) {
  lua_pushcfunction(L, w_loadfn_p);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)len);
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) return 0;
  w_reporterr(L, W, 1, 0);
  return -1;
}

/* drops function `id` from the cache (and its bytes and upvalues) */
static void w_uncache(lua_State *L, WState *W, uint32_t id) {
  lua_pushnil(L);
  lua_rawseti(L, W->fncache, id);
  lua_pushnil(L);
  lua_rawseti(L, W->fnbad, id);
  lua_pushnil(L);
  lua_rawseti(L, W->fnup, id);
}

/*
** A stateless function's upvalues are only globals, library values or
** shared objects, but the task may assign another value to one
** (`lib = other`): the values it arrived with are kept in fnup[id] and put
** back after every task, so no later call sees what an earlier one did.
** The function is on top.
*/
static void w_keepups(lua_State *L, WState *W, uint32_t id) {
  int f = lua_gettop(L), i;
  lua_newtable(L);
  for (i = 1; lua_getupvalue(L, f, i) != NULL; i++) lua_rawseti(L, -2, i);
  lua_rawseti(L, W->fnup, id);
}

static void w_restoreups(lua_State *L, WState *W, uint32_t id) {
  int top = lua_gettop(L);
  if (lmp_rawgeti(L, W->fnup, id) == LUA_TTABLE &&
      lmp_rawgeti(L, W->fncache, id) == LUA_TFUNCTION) {
    lua_Integer i, n = (lua_Integer)lmp_rawlen(L, top + 1);
    for (i = 1; i <= n; i++) {
      lmp_rawgeti(L, top + 1, i);
      lua_setupvalue(L, top + 2, (int)i);
    }
  }
  lua_settop(L, top);
}

/* caches the function on top under id (popped) */
static void w_keep(lua_State *L, WState *W, uint32_t id) {
  if (W->h.flags & LMP_TF_KEEP) w_keepups(L, W, id);
  lua_rawseti(L, W->fncache, id);
}

/*
** Makes the task's function cached under its id: an inline one is loaded
** (and takes the next FIFO slot even if it fails, so the cache evicts in
** step with the parent's mirror); one that failed before is tried again
** (a module it names may be loadable now).  -1: it failed, and that was
** reported as the task's error.
*/
static int w_function(lua_State *L, WState *W, const char *fn, size_t fnlen) {
  uint32_t id = W->h.fnid;
  if (W->h.flags & LMP_TF_FLUSH) {     /* job ids start over */
    int k;
    for (k = 0; k < FNCACHE; k++) {
      if (W->fnids[k]) w_uncache(L, W, W->fnids[k]);
      W->fnids[k] = 0;
    }
    W->fnpos = 0;
  }
  if (fn != NULL) {
    if (W->fnids[W->fnpos]) w_uncache(L, W, W->fnids[W->fnpos]);
    W->fnids[W->fnpos] = id;
    W->fnpos = (W->fnpos + 1) % FNCACHE;
    if (w_loadfn(L, W, fn, fnlen) != 0) {
      /* kept as its bytes: a later call tries again and fails the same
         way if nothing changed */
      lua_pushlstring(L, fn, fnlen);
      lua_rawseti(L, W->fnbad, id);
      return -1;
    }
    w_keep(L, W, id);
  } else if (lmp_rawgeti(L, W->fncache, id) == LUA_TNIL &&
             lmp_rawgeti(L, W->fnbad, id) == LUA_TSTRING) {
    size_t blen;
    const char *b = lua_tolstring(L, -1, &blen);
    if (w_loadfn(L, W, b, blen) != 0) return -1;
    w_keep(L, W, id);
    lua_pushnil(L);
    lua_rawseti(L, W->fnbad, id);
  }
  return 0;
}

/* one task frame */
static void w_run(lua_State *L, WState *W, const char *p, size_t n) {
  const char *fn;
  size_t fnlen;
  int base = lua_gettop(L), r;
  if (lmp_task_parse(p, n, &W->h, &fn, &fnlen, &W->args, &W->argslen) != 0)
    w_leave(W, 1);                     /* not from our pool */
  W->streamed = 0;
  w_started(W);
  if (w_function(L, W, fn, fnlen) != 0) {
    lua_settop(L, base);
    return;
  }
  lua_settop(L, base);
  lua_pushcfunction(L, w_task);
  lua_pushlightuserdata(L, W);
  lmp_rawgeti(L, W->fncache, W->h.fnid);
  W->failat = 1;
  W->streamed = 0;
  if (W->C->running != NULL) W->C->running(W->C, W->T, W->h.task);
  r = lua_pcall(L, 2, 0, 0);
  if (W->C->running != NULL) W->C->running(W->C, NULL, W->h.task);
  if (r != LUA_OK) {
    /* decoding an argument or encoding a result failed: the results
       before it still go to the parent */
    lmp_rawgetp(L, LUA_REGISTRYINDEX, W);
    lua_insert(L, -2);
    w_reporterr(L, W, W->failat, lua_istable(L, -2) ? lua_gettop(L) - 1 : 0);
  }
  lua_pushnil(L);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, W);
  lua_settop(W->T, 1);
  lua_settop(L, base);
  if (W->h.flags & LMP_TF_KEEP) w_restoreups(L, W, W->h.fnid);
}

/* protected: runs the initializer on the task thread.  [f, W, initargs] */
static int w_init(lua_State *L) {
  WState *W = (WState *)lua_touserdata(L, 2);
  int n;
  lua_settop(W->T, 1);
  lua_pushvalue(L, 1);
  n = lmp_pushargs(L, 3);
  if (!lua_checkstack(W->T, n + 2)) lmp_error(L, "lmp: too many arguments");
  lua_xmove(L, W->T, n + 1);
  if (lua_pcall(W->T, n, 0, 1) != LUA_OK) {
    lua_xmove(W->T, L, 1);
    return lua_error(L);
  }
  return 0;
}

/* runs the initializer, if any; a failure is reported and ends us */
static void w_initialize(lua_State *L, WState *W, const lmp_workercfg *cfg) {
  if (lua_isnil(L, cfg->init)) return;
  lua_pushcfunction(L, w_init);
  lua_pushvalue(L, cfg->init);
  lua_pushlightuserdata(L, W);
  lua_pushvalue(L, cfg->initargs);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    W->h.task = 0;                     /* task 0: the initializer */
    w_reporterr(L, W, 0, 0);
    w_leave(W, 3);
  }
}

void lmp_workercfg_push(lua_State *L, int idx, lmp_workercfg *cfg) {
  idx = lmp_absindex(L, idx);
  lmp_uvfield(L, idx, "initializer");
  cfg->init = lua_gettop(L);
  lmp_uvfield(L, idx, "initargs");
  cfg->initargs = lua_gettop(L);
}

void lmp_worker_run(lua_State *L, lmp_channel *C, const lmp_workercfg *cfg) {
  WState W;
  int base;
  memset(&W, 0, sizeof W);
  W.L = L;
  W.C = C;
  W.maxtasks = cfg->maxtasks;
  W.E = lmp_enc_new(L, 1);
  /* results may hold what the parent and this worker share */
  lmp_enc_ident(W.E, cfg->identmark);
  W.T = lua_newthread(L);
  lua_pushcfunction(W.T, lmp_msgh);
  lua_newtable(L);
  W.fncache = lua_gettop(L);
  lua_newtable(L);
  W.fnbad = lua_gettop(L);
  lua_newtable(L);
  W.fnup = lua_gettop(L);
  base = W.fnup;
  w_initialize(L, &W, cfg);
  lua_settop(L, base);
  w_header(&W, 0, LMP_RS_READY);
  w_send(&W);
  for (;;) {
    const char *p;
    size_t n;
    int r = C->recv(C, &p, &n);
    if (r == 0) w_leave(&W, 0);        /* the pool ended our channel */
    if (r < 0) w_leave(&W, 1);
    w_run(L, &W, p, n);
    lua_settop(L, base);
    lmp_enc_reset(W.E, L);
    if (W.maxtasks > 0 && ++W.done >= W.maxtasks) w_leave(&W, 0);
  }
}
