/*
** pool.c -- mp.Pool and AsyncResult.
**
** One socket (tasks, parent -> worker) and one pipe (results, worker ->
** parent) per worker; the parent multiplexes them with one poll loop that
** runs only while a pool call waits ("pumping"), so callbacks run in the
** parent during pool calls.  The parent keeps, per worker, the FIFO of the
** tasks it sent: when a worker dies the first of them is the one that was
** running (it fails with the pid and the signal or exit code), the others
** are sent again to the other workers, and a replacement is forked.
*/
#include "lmp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
** Tasks queued per worker: about QUEUED seconds of work, from the moving
** average of a task's run time.  Long tasks go one at a time (a free
** worker takes the next, as in Python); tiny ones up to MAXDEPTH at once,
** which batches the syscalls on both sides.
*/
#define MINDEPTH  1
#define MAXDEPTH  64
#define QUEUED    5e-3
#define SPIN      50e-6   /* seconds of polling before sleeping */
#define FNCACHE   16       /* functions a worker keeps, by call id */
#define JOBID_MAX 0x7fffffff /* job ids start over after this */

enum { K_APPLY, K_MAP, K_IMAP, K_IMAPU };
enum { J_RUN, J_OK, J_FAIL };
enum { P_RUN, P_CLOSE, P_TERM };
enum { F_INLINE = 1, F_STAR = 2, F_APPLY = 4,
       F_FLUSH = 8,         /* empty the function cache before this task */
       F_KEEP = 16 };       /* a stateless function, kept across calls */
enum { RS_OK = 0, RS_ERR = 1, RS_READY = 2, RS_INITERR = 3 };

typedef struct Task {
  int job;              /* job id, 0 = free slot */
  int fnid;             /* the function's id in the workers' caches */
  lua_Integer start;    /* index of the first item */
  lua_Integer count;
  int flags;
  char *args;           /* encoded items, kept until the result arrives */
  size_t argslen;
  int next;             /* free list / requeue list link */
} Task;

typedef struct Worker {
  pid_t pid;            /* 0 = empty slot */
  int tfd, rfd;
  lmp_buf out;
  size_t outpos;
  lmp_reader rd;
  int q[MAXDEPTH];      /* task ids sent, oldest first */
  double sent[MAXDEPTH];
  double lastreply;
  int nq;
  int ready;            /* sent its READY frame */
  long assigned;        /* tasks given, for maxtasksperchild */
  int fn[FNCACHE];      /* mirror of the worker's function cache */
  int fnpos;
  int flush;            /* the worker must empty its cache (ids wrapped) */
  int full;             /* its socket did not take all it was given */
} Worker;

typedef struct Pool {
  pid_t owner;
  int state;
  int n;
  Worker *w;
  long maxtasks;
  int broken;           /* initializer failed: no worker can run */
  Task *tasks;
  int ntasks, freetask;
  int requeue, requeuetail;  /* tasks to send again, FIFO */
  int nextjob;
  int idmax;            /* job ids start over after this */
  int busy;             /* uservalue "busy" holds ids in use at the wrap */
  int nfnids;           /* entries of uservalue "fnids": blob -> fnid */
  unsigned long seq;    /* worker names */
  double tasktime;      /* moving average of a task's run time */
  lua_Integer ohead, otail;  /* uservalue "order": jobs with input left */
  lua_Integer fhead, ftail;  /* uservalue "finished": callbacks to run */
  int depth;
  int building;         /* an input iterator is running */
  int joining;          /* join waits: imaps take input without a consumer */
  int holdcb;           /* a submit is pumping: callbacks wait */
  int nempty;           /* worker slots without a worker (pool_respawn) */
  double respawnat;     /* when to try forking into them again */
  char spawnerr[96];    /* why the last fork of a worker failed */
  uint64_t identmark;   /* objects registered up to here are the workers'
                           too (lmp_ident): their envs, IPC objects */
} Pool;

typedef struct Job {
  int id;
  int fnid;             /* id of its function in the workers' caches: its
                           own id, or an earlier call's with the same
                           stateless function */
  int kind;
  int star;
  int keep;             /* its function is stateless (see F_KEEP) */
  int state;
  int stopped;          /* no more input is dispatched */
  int inputdone;
  int iter;             /* input is an iterator function */
  lua_Integer chunksize;
  lua_Integer nextin;   /* next item to dispatch */
  lua_Integer ninput;   /* items, once known */
  lua_Integer errindex; /* lowest failing item, 0 = none */
  lua_Integer yielded;  /* imap: items handed out */
  int inflight;
  int cbpending;
  lua_Integer evtail;   /* imap_unordered: events queued (yielded = head) */
  int proxy;            /* input is a table with __index/__len: t[i] */
  int raised;           /* imap: its error was handed out; raise it again */
  int closed;           /* imap: its closer ran; the iterator ends */
} Job;

/* uservalue slots of a Job's table */
#define JV_POOL    "pool"
#define JV_FN      "fn"
#define JV_INPUT   "input"
#define JV_RES     "results"
#define JV_ERR     "err"
#define JV_CB      "cb"
#define JV_ECB     "ecb"
#define JV_VALUES  "values"
#define JV_EVENTS  "events"   /* imap_unordered: indices in arrival order */

static lua_Integer nilsentinel;  /* address used as "this result was nil" */

/* ====================================================================== */
/* helpers                                                                */
/* ====================================================================== */
static void put32(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff);
  p[1] = (char)((v >> 8) & 0xff);
  p[2] = (char)((v >> 16) & 0xff);
  p[3] = (char)((v >> 24) & 0xff);
}

static uint32_t get32(const char *p) {
  const unsigned char *b = (const unsigned char *)p;
  return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
         ((uint32_t)b[3] << 24);
}


static Pool *checkpool(lua_State *L, int idx) {
  return (Pool *)lmp_checkudata(L, idx, LMP_POOL, "Pool");
}

static Pool *ownpool(lua_State *L, int idx) {
  Pool *P = checkpool(L, idx);
  if (P->owner != getpid())
    lmp_error(L, "lmp: this Pool belongs to process %d", (int)P->owner);
  return P;
}

/* pushes field k of the pool's uservalue table */
static void pool_field(lua_State *L, int pidx, const char *k) {
  lua_getiuservalue(L, pidx, 1);
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
}

static void job_field(lua_State *L, int jidx, const char *k) {
  lua_getiuservalue(L, jidx, 1);
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
}

static void job_setfield(lua_State *L, int jidx, const char *k) {
  jidx = lua_absindex(L, jidx);
  lua_getiuservalue(L, jidx, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
}

/*
** Pushes the Job userdata with id `id` (nil if finished or abandoned).
** AsyncResults are held strongly in "jobs" (callbacks may be all a caller
** keeps); imap jobs weakly in "ijobs", so a dropped iterator takes its
** input and results with it.
*/
static Job *push_job(lua_State *L, int pidx, int id) {
  pool_field(L, pidx, "jobs");
  if (lua_rawgeti(L, -1, id) == LUA_TNIL) {
    lua_pop(L, 2);
    pool_field(L, pidx, "ijobs");
    lua_rawgeti(L, -1, id);
  }
  lua_remove(L, -2);
  return (Job *)lua_touserdata(L, -1);
}

/*
** Unregisters J.  Only if the entry is still J: once forgotten, its id may
** have gone to a newer job (ids start over), which an old iterator or
** AsyncResult must not unregister.
*/
static void forget_job(lua_State *L, int pidx, Job *J) {
  pool_field(L, pidx, J->kind == K_IMAP || J->kind == K_IMAPU ? "ijobs"
                                                              : "jobs");
  if (lua_rawgeti(L, -1, J->id) == LUA_TUSERDATA &&
      lua_touserdata(L, -1) == (void *)J) {
    lua_pushnil(L);
    lua_rawseti(L, -3, J->id);
  }
  lua_pop(L, 2);
}

/* ====================================================================== */
/* worker process                                                         */
/* ====================================================================== */
typedef struct WState {
  lua_State *L;          /* the worker's main thread */
  int tfd, rfd;
  lmp_reader rd;
  lmp_enc *E;
  int fnids[FNCACHE];
  int fnpos;
  lua_State *T;          /* thread tasks run in (clean tracebacks) */
  long maxtasks, done;
  /* current task */
  uint32_t task;
  int flags;
  lua_Integer start;
  const char *args;
  size_t argslen;
  lua_Integer failat;    /* item of the chunk being decoded, run or encoded */
} WState;

static void w_send(lua_State *L, WState *W) {
  (void)L;
  if (lmp_enc_writeframe(W->E, W->rfd) != 0) lmp_child_exit(1);
  fflush(stdout);
}

static void w_header(WState *W, uint32_t task, int status) {
  char h[5];
  lmp_enc_reset(W->E, W->L);
  put32(h, task);
  h[4] = (char)status;
  lmp_enc_raw(W->E, h, 5);
}

/* runs f(args) in W->T; leaves ok on L and the values on T */
static int w_call(lua_State *L, WState *W, int nargs) {
  int st = lua_pcall(W->T, nargs, LUA_MULTRET, 1);
  (void)L;
  return st == LUA_OK;
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
** Protected: [W, err, index, results or nil] -> an RS_ERR reply for item
** `index` of the task, carrying the results of the items before it (so a
** map or imap gets those, and the error where it happened).
*/
static int w_senderr(lua_State *L) {
  WState *W = (WState *)lua_touserdata(L, 1);
  lua_Integer index = lua_tointeger(L, 3), k;
  lua_Integer before = lua_istable(L, 4) ? index - 1 : 0;
  w_header(W, W->task, RS_ERR);
  lmp_enc_begin(W->E, (size_t)before + 2);
  lmp_enc_value(W->E, 2, "error", -1);
  lmp_enc_value(W->E, 3, "error", -1);
  for (k = 1; k <= before; k++) {
    W->failat = k;                     /* for the caller, if it won't */
    lua_rawgeti(L, 4, k);
    lmp_enc_value(W->E, -1, "result", W->start + k - 1);
    lua_pop(L, 1);
  }
  return 0;
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
  int results;
  n = lmp_dec_begin(&D, L, W->args, W->argslen, LMP_DEC_TRUSTED);  /* [W, fn, refs] */
  /* n is at most the message's length: a hint that costs no more than it */
  lua_createtable(L, W->flags & F_APPLY || n > INT_MAX ? 0 : (int)n, 0);
  results = lua_gettop(L);
  lua_pushvalue(L, results);
  lua_rawsetp(L, LUA_REGISTRYINDEX, W);
  for (i = 0; i < n; i++) {
    int nargs, ok;
    W->failat = (lua_Integer)i + 1;
    lua_settop(T, 1);                  /* [msgh] */
    lua_pushvalue(L, 2);
    lmp_dec_value(&D);
    nargs = w_pushargs(L, W->flags & F_STAR);
    if (!lua_checkstack(T, nargs + 2)) lmp_error(L, "lmp: too many arguments");
    lua_xmove(L, T, nargs + 1);        /* T: [msgh, fn, args...] */
    ok = w_call(L, W, nargs);
    if (!ok) {
      /* [err, failed index, partial results...] */
      lua_pushcfunction(L, w_senderr);
      lua_pushvalue(L, 1);
      lua_xmove(T, L, 1);
      lua_pushinteger(L, (lua_Integer)i + 1);
      lua_pushvalue(L, results);
      lua_call(L, 4, 0);
      w_send(L, W);
      return 0;
    }
    if (W->flags & F_APPLY) {          /* all the values of one call */
      int nres = lua_gettop(T) - 1, k;
      luaL_checkstack(L, nres + 4, "lmp: too many results");
      lua_xmove(T, L, nres);
      w_header(W, W->task, RS_OK);
      lmp_enc_begin(W->E, (size_t)nres);
      for (k = 0; k < nres; k++)
        lmp_enc_value(W->E, results + 1 + k, "result", k + 1);
      w_send(L, W);                    /* the values are still on the stack:
                                          big strings go out zero-copy */
      return 0;
    }
    lua_settop(T, 2);                  /* first result only */
    lua_xmove(T, L, 1);
    lua_rawseti(L, results, (lua_Integer)i + 1);
  }
  w_header(W, W->task, RS_OK);
  lmp_enc_begin(W->E, n);
  for (i = 1; i <= n; i++) {
    W->failat = (lua_Integer)i;
    lua_rawgeti(L, results, (lua_Integer)i);
    lmp_enc_value(W->E, -1, "result", W->start + (lua_Integer)i - 1);
    lua_pop(L, 1);
  }
  W->failat = 1;                       /* a corrupt message: trust none */
  lmp_dec_end(&D);
  w_send(L, W);                        /* results table still anchored */
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
** Reports the error on top of L as the error of item `index`, after the
** results in the table at `results` (0: none) of the items before it.
** If one of those won't encode, the report is of that item and its
** encoding error instead: the first failure is what a map raises.  Pops
** the error.
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
    else if (literal) lmp_child_exit(1);   /* out of memory: the parent
                                              reports a dead worker */
    else {                             /* the error value won't encode */
      lua_pop(L, 1);
      lua_pushliteral(L, "lmp: task failed with an error that cannot be "
                         "serialized");
      literal = 1;
    }
    lua_replace(L, err);
  }
  w_send(L, W);                        /* before the error value goes */
  lua_settop(L, err - 1);
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

/*
** Waits a little for the next task before the worker blocks in read: a
** caller that applies tasks one after another sends it within
** microseconds, and a worker that is still awake then saves a wake-up.
*/
static void w_spin(int fd) {
  struct pollfd pf;
  double end = lmp_now() + SPIN;
  pf.fd = fd;
  pf.events = POLLIN;
  do {
    pf.revents = 0;
    if (poll(&pf, 1, 0) != 0) return;  /* data, hangup, or EINTR */
  } while (lmp_now() < end);
}

/* drops function `id` from a worker's cache (fncache, and above it fnbad
   and fnup) */
static void w_uncache(lua_State *L, int fncache, int id) {
  int k;
  for (k = 0; k < 3; k++) {
    lua_pushnil(L);
    lua_rawseti(L, fncache + k, id);
  }
}

/*
** A stateless function's upvalues are only globals or library values, but
** the task may assign another value to one (`lib = other`): the values it
** arrived with are kept in fnup[id] and put back after every task, so no
** later call sees what an earlier one did.  The function is on top.
*/
static void w_keepups(lua_State *L, int fnup, int id) {
  int f = lua_gettop(L), i;
  lua_newtable(L);
  for (i = 1; lua_getupvalue(L, f, i) != NULL; i++) lua_rawseti(L, -2, i);
  lua_rawseti(L, fnup, id);
}

static void w_restoreups(lua_State *L, int fncache, int fnup, int id) {
  int top = lua_gettop(L);
  if (lua_rawgeti(L, fnup, id) == LUA_TTABLE &&
      lua_rawgeti(L, fncache, id) == LUA_TFUNCTION) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, top + 1);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, top + 1, i);
      lua_setupvalue(L, top + 2, (int)i);
    }
  }
  lua_settop(L, top);
}

static void worker_main(lua_State *L, lmp_state *S, int tfd, int rfd,
                        int pidx, long maxtasks) {
  WState W;
  Pool *P = (Pool *)lua_touserdata(L, pidx);
  int fncache, fnbad, fnup, base;
  memset(&W, 0, sizeof W);
  W.tfd = tfd;
  W.rfd = rfd;
  W.maxtasks = maxtasks;
  S->upfd = rfd;
  lmp_track_fd(L, S, tfd);             /* grandchildren must not hold them */
  lmp_track_fd(L, S, rfd);
  lua_settop(L, pidx);
  W.L = L;
  W.E = lmp_enc_new(L, 1);
  /* results may hold what the parent and this worker share */
  lmp_enc_ident(W.E, P->identmark);
  W.T = lua_newthread(L);
  lua_pushcfunction(W.T, lmp_traceback);
  lua_newtable(L);
  fncache = lua_gettop(L);
  lua_newtable(L);                     /* id -> bytes that failed to load */
  fnbad = lua_gettop(L);
  lua_newtable(L);                     /* id -> upvalues it arrived with */
  fnup = lua_gettop(L);
  base = fnup;
  /* initializer */
  pool_field(L, pidx, "initializer");
  if (!lua_isnil(L, -1)) {
    lua_pushcfunction(L, w_init);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &W);
    pool_field(L, pidx, "initargs");   /* [w_init, f, W, initargs] */
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
      W.task = 0;
      w_reporterr(L, &W, 0, 0);
      /* the header said RS_ERR; the parent treats task 0 as init */
      lmp_child_exit(3);
    }
  } else lua_pop(L, 1);
  lua_settop(L, base);
  w_header(&W, 0, RS_READY);
  w_send(L, &W);
  for (;;) {
    const char *p;
    size_t n;
    int r;
    while (!lmp_reader_frame(&W.rd, &p, &n)) {
      w_spin(tfd);
      r = lmp_reader_fill(&W.rd, tfd);
      if (r == 0) lmp_child_exit(0);   /* the pool closed our socket */
      if (r < 0) lmp_child_exit(1);
    }
    if (n < 17) lmp_child_exit(1);
    W.task = get32(p);
    {
      uint32_t callid = get32(p + 4);
      W.flags = (unsigned char)p[8];
      W.start = (lua_Integer)lmp_get64(p + 9);
      p += 17;
      n -= 17;
      if (W.flags & F_FLUSH) {         /* job ids start over */
        int k;
        for (k = 0; k < FNCACHE; k++) {
          if (W.fnids[k]) w_uncache(L, fncache, W.fnids[k]);
          W.fnids[k] = 0;
        }
        W.fnpos = 0;
      }
      if (W.flags & F_INLINE) {
        size_t blen = (size_t)lmp_get64(p);
        /* the cache evicts in the same order as the parent's mirror, even
           when the function fails to load */
        if (W.fnids[W.fnpos]) w_uncache(L, fncache, W.fnids[W.fnpos]);
        W.fnids[W.fnpos] = (int)callid;
        W.fnpos = (W.fnpos + 1) % FNCACHE;
        if (w_loadfn(L, &W, p + 8, blen) == 0) {
          if (W.flags & F_KEEP) w_keepups(L, fnup, (int)callid);
          lua_rawseti(L, fncache, (lua_Integer)callid);
        } else {
          /* kept as its bytes: a later call tries again (a module it
             names may be loaded by then) and fails the same way if not */
          lua_pushlstring(L, p + 8, blen);
          lua_rawseti(L, fnbad, (lua_Integer)callid);
          goto next;
        }
        p += 8 + blen;
        n -= 8 + blen;
      } else if (lua_rawgeti(L, fncache, (lua_Integer)callid) == LUA_TNIL &&
                 lua_rawgeti(L, fnbad, (lua_Integer)callid) == LUA_TSTRING) {
        size_t blen;
        const char *b = lua_tolstring(L, -1, &blen);
        if (w_loadfn(L, &W, b, blen) != 0) goto next;
        if (W.flags & F_KEEP) w_keepups(L, fnup, (int)callid);
        lua_rawseti(L, fncache, (lua_Integer)callid);
        lua_pushnil(L);
        lua_rawseti(L, fnbad, (lua_Integer)callid);
      }
      lua_settop(L, base);
      W.args = p;
      W.argslen = n;
      lua_pushcfunction(L, w_task);
      lua_pushlightuserdata(L, &W);
      lua_rawgeti(L, fncache, (lua_Integer)callid);
      W.failat = 1;
      if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        /* decoding an argument or encoding a result failed: the results
           before it still go to the parent */
        lua_rawgetp(L, LUA_REGISTRYINDEX, &W);
        lua_insert(L, -2);
        w_reporterr(L, &W, W.failat, lua_istable(L, -2) ? lua_gettop(L) - 1 : 0);
      }
      lua_pushnil(L);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &W);
      lua_settop(W.T, 1);
      lua_settop(L, base);
      if (W.flags & F_KEEP) w_restoreups(L, fncache, fnup, (int)callid);
    }
  next:
    lua_settop(L, base);
    lmp_enc_reset(W.E, L);
    W.done++;
    if (W.maxtasks > 0 && W.done >= W.maxtasks) lmp_child_exit(0);
  }
}

/* [pool, tfd, rfd, maxtasks]; never returns */
static int worker_protected(lua_State *L) {
  worker_main(L, lmp_getstate(L), (int)lua_tointeger(L, 2),
              (int)lua_tointeger(L, 3), 1, (long)lua_tointeger(L, 4));
  return 0;
}

/* ====================================================================== */
/* parent: workers                                                        */
/* ====================================================================== */
static void task_free(Pool *P, int t) {
  Task *k = &P->tasks[t];
  free(k->args);
  k->args = NULL;
  k->job = 0;
  k->next = P->freetask;
  P->freetask = t;
}

static int task_new(lua_State *L, Pool *P) {
  int t;
  if (P->freetask == 0) {
    int nn = P->ntasks ? P->ntasks * 2 : 16, i;
    Task *nt = (Task *)realloc(P->tasks, (size_t)nn * sizeof *nt);
    if (nt == NULL) lmp_error(L, "lmp: not enough memory");
    memset(nt + P->ntasks, 0, (size_t)(nn - P->ntasks) * sizeof *nt);
    P->tasks = nt;
    for (i = nn - 1; i >= (P->ntasks ? P->ntasks : 1); i--) {
      nt[i].next = P->freetask;
      P->freetask = i;
    }
    P->ntasks = nn;
  }
  t = P->freetask;
  P->freetask = P->tasks[t].next;
  memset(&P->tasks[t], 0, sizeof P->tasks[t]);
  return t;
}

static void requeue_push(Pool *P, int t) {
  P->tasks[t].next = 0;
  if (P->requeuetail) P->tasks[P->requeuetail].next = t;
  else P->requeue = t;
  P->requeuetail = t;
}

static void worker_closefds(lmp_state *S, Worker *w) {
  lmp_close_fd(S, w->tfd);
  lmp_close_fd(S, w->rfd);
  w->tfd = w->rfd = -1;
  lmp_buf_free(&w->out);
  w->outpos = 0;
  lmp_reader_free(&w->rd);
}

/* a failed system call, for the pool's error messages */
static int spawn_failed(Pool *P, const char *what, int e) {
  snprintf(P->spawnerr, sizeof P->spawnerr, "%s: %s", what, strerror(e));
  return -1;
}

/*
** Forks a worker into slot w: 0, or -1 with P->spawnerr saying why (the
** slot stays empty; nothing is left open).
*/
static int worker_spawn(lua_State *L, Pool *P, int pidx, Worker *w) {
  lmp_state *S = lmp_getstate(L);
  int sv[2], rp[2], e;
  char name[48];
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return spawn_failed(P, "socketpair", errno);
  if (lmp_pipe(rp) != 0) {
    e = errno;
    close(sv[0]);
    close(sv[1]);
    return spawn_failed(P, "pipe", e);
  }
  /* the parent's ends are tracked before the fork, so the new worker
     closes them (and every other worker's) straight away */
  lmp_track_fd(L, S, sv[0]);
  lmp_track_fd(L, S, rp[0]);
  snprintf(name, sizeof name, "PoolWorker-%lu", ++P->seq);
  pid = lmp_fork(L, S, name, LMP_FORK_PDEATH | LMP_FORK_NOINT);
  if (pid < 0) {
    e = errno;
    lmp_close_fd(S, sv[0]);
    lmp_close_fd(S, rp[0]);
    close(sv[1]);
    close(rp[1]);
    return spawn_failed(P, "fork", e);
  }
  if (pid == 0) {
    /* protected, so no error can unwind into the parent's script */
    lua_pushcfunction(L, worker_protected);
    lua_pushvalue(L, pidx);
    lua_pushinteger(L, sv[1]);
    lua_pushinteger(L, rp[1]);
    lua_pushinteger(L, (lua_Integer)P->maxtasks);
    lua_pcall(L, 4, 0, 0);
    lmp_child_exit(1);
  }
  close(sv[1]);
  close(rp[1]);
  memset(w, 0, sizeof *w);
  w->pid = pid;
  w->tfd = sv[0];
  w->rfd = rp[0];
  fcntl(w->tfd, F_SETFL, O_NONBLOCK);
  fcntl(w->rfd, F_SETFL, O_NONBLOCK);
  lua_pushboolean(L, 1);
  lmp_child_add(L, pid, -1);
  lua_pop(L, 1);
  P->spawnerr[0] = '\0';
  return 0;
}

/*
** Forks workers into the empty slots of a pool still at work (one whose
** worker died and could not be replaced then: fork or fds were short).
** A failure is tried again at most every RESPAWN seconds.
*/
#define RESPAWN 0.1
static void pool_respawn(lua_State *L, Pool *P, int pidx) {
  int i;
  if (P->state == P_TERM || P->broken || P->nempty == 0) return;
  if (P->respawnat > 0 && lmp_now() < P->respawnat) return;
  for (i = 0; i < P->n; i++) {
    Worker *w = &P->w[i];
    if (w->pid != 0) continue;
    if (worker_spawn(L, P, pidx, w) != 0) {
      P->respawnat = lmp_now() + RESPAWN;
      return;
    }
    P->nempty--;
  }
  P->respawnat = 0;
}

/* reaps a worker that closed its pipe; returns its wait status */
static int worker_reap(lua_State *L, Worker *w) {
  int status = 0, i;
  for (i = 0; i < 200; i++) {          /* give it 200 ms to finish dying */
    pid_t r = lmp_reap(L, w->pid, &status, 1);
    if (r == w->pid) goto done;
    if (r < 0) {
      status = 0;
      goto done;
    }
    {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  kill(w->pid, SIGKILL);
  if (lmp_reap(L, w->pid, &status, 0) != w->pid) status = 0;
done:
  lmp_child_remove(L, w->pid);
  return status;
}

/* ====================================================================== */
/* parent: jobs                                                           */
/* ====================================================================== */
static void job_finish(lua_State *L, Job *J, int jidx) {
  Pool *P;
  J->state = J->errindex ? J_FAIL : J_OK;
  J->cbpending = 1;
  job_field(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  lua_getiuservalue(L, -1, 1);
  lua_getfield(L, -1, "finished");
  lua_pushinteger(L, J->id);
  lua_rawseti(L, -2, ++P->ftail);
  lua_pop(L, 3);
}

/* records an error for item `index` (lowest index wins) */
static void job_seterror(lua_State *L, Job *J, int jidx, lua_Integer index) {
  /* error value on top */
  J->stopped = 1;
  if (J->errindex == 0 || index < J->errindex) {
    J->errindex = index;
    job_setfield(L, jidx, JV_ERR);
    if (J->kind == K_IMAPU) {
      job_field(L, jidx, JV_EVENTS);
      lua_pushinteger(L, -index);      /* negative: the error event */
      lua_rawseti(L, -2, ++J->evtail);
      lua_pop(L, 1);
    }
  } else lua_pop(L, 1);
}

static void job_check(lua_State *L, Job *J, int jidx) {
  if (J->state == J_RUN && J->inflight == 0 && (J->inputdone || J->stopped))
    job_finish(L, J, jidx);
}

static void store_result(lua_State *L, Job *J, int jidx, lua_Integer index) {
  /* value on top */
  if (J->kind == K_IMAP || J->kind == K_IMAPU) {
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlightuserdata(L, &nilsentinel);
    }
    if (J->kind == K_IMAPU) {
      job_field(L, jidx, JV_EVENTS);
      lua_pushinteger(L, index);
      lua_rawseti(L, -2, ++J->evtail);
      lua_pop(L, 1);
    }
  }
  job_field(L, jidx, JV_RES);
  lua_insert(L, -2);
  lua_rawseti(L, -2, index);
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------------- */
/* building tasks                                                         */
/* ---------------------------------------------------------------------- */
typedef struct Build {
  Job *J;
  lmp_enc *E;
  lua_Integer taken;    /* items encoded so far */
  size_t goodlen;       /* bytes of those items */
} Build;

/*
** Protected: pulls up to chunksize items from the job's input and encodes
** them.  Stack: [B(light), job, input].  An iterator or encoding error
** raises; the caller turns it into the error of item nextin+taken.
*/
static int build_chunk(lua_State *L) {
  Build *B = (Build *)lua_touserdata(L, 1);
  Job *J = B->J;
  lua_Integer i, want = J->chunksize;
  int keep = 0;
  if (J->kind == K_APPLY) want = 1;
  if (J->iter) {
    /* the encoder knows the items it wrote by address only: an item the
       iterator made and nothing else holds could be collected while the
       iterator makes the next, which may then get its address and be
       taken for it.  Items stay here until the chunk is written. */
    lua_createtable(L, want < 64 ? (int)want : 64, 0);
    keep = lua_gettop(L);
  }
  lmp_enc_begin(B->E, LMP_COUNT_LATER);
  for (i = 0; i < want; i++) {
    lua_Integer index = J->nextin + i;
    if (J->kind == K_APPLY) lua_pushvalue(L, 3);
    else if (J->iter) {
      lua_pushvalue(L, 3);
      lua_call(L, 0, 1);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        J->inputdone = 1;
        J->ninput = index - 1;
        break;
      }
    } else if (index > J->ninput) {
      J->inputdone = 1;
      break;
    } else if (J->proxy) {
      /* what t[i] sees; the first nil ends the input (so a __len that
         claims too much cannot make the job endless) */
      if (lua_geti(L, 3, index) == LUA_TNIL) {
        lua_pop(L, 1);
        J->inputdone = 1;
        J->ninput = index - 1;
        break;
      }
    } else lua_rawgeti(L, 3, index);
    lmp_enc_value(B->E, -1, "args", J->kind == K_APPLY ? -1 : index);
    if (keep) lua_rawseti(L, keep, i + 1);
    else lua_pop(L, 1);
    B->taken++;
    B->goodlen = lmp_enc_size(B->E);
  }
  if (J->kind == K_APPLY) J->inputdone = 1;
  else if (!J->iter && J->nextin + B->taken > J->ninput) J->inputdone = 1;
  return 0;
}

/*
** Makes the next task of a job, or returns 0 (nothing to send).  Items
** that were pulled before an input error still go out; the error becomes
** the error of the item where it happened.
*/
static int job_nexttask(lua_State *L, Pool *P, int jidx) {
  Job *J = (Job *)lua_touserdata(L, jidx);
  Build B;
  int st, t, box;
  const char *s;
  size_t len;
  if (J->stopped || J->inputdone) return 0;
  if (P->building)                     /* an input iterator using its pool */
    lmp_error(L, "lmp: a pool's input iterator cannot use the same pool");
  B.J = J;
  B.E = lmp_enc_take(L, P, 0);
  box = lua_gettop(L);
  lmp_enc_ident(B.E, P->identmark);
  B.taken = 0;
  B.goodlen = 0;
  lua_pushcfunction(L, build_chunk);
  lua_pushlightuserdata(L, &B);
  lua_pushvalue(L, jidx);
  job_field(L, jidx, J->kind == K_APPLY ? JV_VALUES : JV_INPUT);
  P->building = 1;
  st = lua_pcall(L, 3, 0, 0);
  P->building = 0;
  if (st != LUA_OK) {                  /* [box, err] */
    job_seterror(L, J, jidx, J->nextin + B.taken);
    J->inputdone = 1;
    lmp_enc_truncate(B.E, B.goodlen);  /* the items before the bad one */
  }
  if (B.taken == 0) {
    lmp_enc_give(L, box, P);
    job_check(L, J, jidx);
    return 0;
  }
  lmp_enc_count(B.E, (size_t)B.taken);
  s = lmp_enc_flatten(B.E, &len);
  t = task_new(L, P);
  P->tasks[t].job = J->id;
  P->tasks[t].fnid = J->fnid;
  P->tasks[t].start = J->nextin;
  P->tasks[t].count = B.taken;
  P->tasks[t].flags = (J->star ? F_STAR : 0) |
                      (J->kind == K_APPLY ? F_APPLY : 0) |
                      (J->keep ? F_KEEP : 0);
  P->tasks[t].args = (char *)malloc(len ? len : 1);
  if (P->tasks[t].args == NULL) {
    task_free(P, t);
    lmp_error(L, "lmp: not enough memory");
  }
  memcpy(P->tasks[t].args, s, len);
  P->tasks[t].argslen = len;
  lmp_enc_give(L, box, P);
  J->nextin += B.taken;
  J->inflight++;
  return t;
}

/* appends task t to the worker's output, with the function if needed */
static void worker_send(lua_State *L, Pool *P, int pidx, Worker *w, int t) {
  Task *k = &P->tasks[t];
  char h[17];
  int i, inl = 1;
  const char *blob = NULL;
  size_t blen = 0;
  int flush = w->flush;
  w->flush = 0;
  for (i = 0; i < FNCACHE; i++)
    if (w->fn[i] == k->fnid) inl = 0;
  if (inl) {
    push_job(L, pidx, k->job);
    job_field(L, -1, JV_FN);
    blob = lua_tolstring(L, -1, &blen);
    w->fn[w->fnpos] = k->fnid;
    w->fnpos = (w->fnpos + 1) % FNCACHE;
  }
  put32(h, (uint32_t)t);
  put32(h + 4, (uint32_t)k->fnid);
  h[8] = (char)(k->flags | (inl ? F_INLINE : 0) | (flush ? F_FLUSH : 0));
  lmp_put64(h + 9, (uint64_t)k->start);
  {
    size_t total = 17 + (inl ? 8 + blen : 0) + k->argslen;
    char *o;
    if (lmp_buf_grow(&w->out, total + 8) != 0)
      lmp_error(L, "lmp: not enough memory");
    o = w->out.p + w->out.n;
    lmp_put64(o, (uint64_t)total);
    memcpy(o + 8, h, 17);
    o += 25;
    if (inl) {
      lmp_put64(o, (uint64_t)blen);
      memcpy(o + 8, blob, blen);
      o += 8 + blen;
    }
    memcpy(o, k->args, k->argslen);
    w->out.n += total + 8;
  }
  if (inl) lua_pop(L, 2);
  w->sent[w->nq] = lmp_now();
  w->q[w->nq++] = t;
  w->assigned++;
}

static int worker_flush(Worker *w) {
  while (w->outpos < w->out.n) {
    ssize_t r = send(w->tfd, w->out.p + w->outpos, w->out.n - w->outpos,
                     MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;                       /* EPIPE: the worker died */
    }
    w->outpos += (size_t)r;
  }
  w->out.n = w->outpos = 0;
  if (w->out.cap > (4u << 20)) lmp_buf_free(&w->out);
  return 0;
}

static int worker_hasroom(Pool *P, Worker *w, int depth) {
  return w->pid > 0 && w->ready && w->nq < depth &&
         (P->maxtasks <= 0 || w->assigned < P->maxtasks) && !w->full;
}

/*
** An imap's results wait for its consumer: a job with IMAP_AHEAD chunks
** per worker handed out and not yet consumed takes no more input until the
** consumer catches up (unless the pool is joining).  So an iterator taken
** once and dropped stops taking input, and jobs after it still run.
*/
#define IMAP_AHEAD (2 * MAXDEPTH)
static int job_blocked(Pool *P, Job *J) {
  return (J->kind == K_IMAP || J->kind == K_IMAPU) && !P->joining &&
         J->nextin - 1 - J->yielded >=
           J->chunksize * (lua_Integer)P->n * IMAP_AHEAD;
}

/*
** The next task to send: one to send again (its worker died), else the
** next chunk of the first job in submission order that has input left
** and is not blocked.  Jobs with nothing left leave the order queue.
*/
static int next_task(lua_State *L, Pool *P, int pidx) {
  int t = 0, order;
  lua_Integer k;
  while (P->requeue && t == 0) {
    t = P->requeue;
    P->requeue = P->tasks[t].next;
    if (P->requeue == 0) P->requeuetail = 0;
    if (push_job(L, pidx, P->tasks[t].job) == NULL) {
      task_free(P, t);                 /* its imap was abandoned */
      t = 0;
    }
    lua_pop(L, 1);
  }
  if (t != 0) return t;
  pool_field(L, pidx, "order");
  order = lua_gettop(L);
  for (k = P->ohead + 1; t == 0 && k <= P->otail; k++) {
    Job *J;
    if (lua_rawgeti(L, order, k) == LUA_TNIL) {   /* left the queue */
      lua_pop(L, 1);
      continue;
    }
    J = push_job(L, pidx, (int)lua_tointeger(L, -1));
    if (J != NULL && !J->stopped && !J->inputdone) {
      if (job_blocked(P, J)) {
        lua_pop(L, 2);
        continue;
      }
      t = job_nexttask(L, P, lua_gettop(L));
    }
    if (J == NULL || J->stopped || J->inputdone) {
      lua_pushnil(L);                  /* nothing left to send: it leaves */
      lua_rawseti(L, order, k);
    }
    lua_pop(L, 2);
  }
  while (P->ohead < P->otail) {        /* the queue starts at a live entry */
    if (lua_rawgeti(L, order, P->ohead + 1) != LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    lua_pop(L, 1);
    P->ohead++;
  }
  lua_pop(L, 1);
  return t;
}

/*
** Hands out work to the workers with room: up to `depth` tasks each, round
** by round, so idle workers get work before busy ones get more.
*/
static void pool_dispatch(lua_State *L, Pool *P, int pidx, int depth) {
  int i, level, t = 1;
  /* a worker whose socket did not take what it was given gets no more:
     what waits in the parent is what it could still give another */
  for (i = 0; i < P->n; i++) P->w[i].full = P->w[i].out.n > P->w[i].outpos;
  for (level = 1; t != 0 && level <= depth; level++) {
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      if (!worker_hasroom(P, w, depth) || w->nq >= level) continue;
      if ((t = next_task(L, P, pidx)) == 0) break;
      worker_send(L, P, pidx, w, t);
    }
  }
  for (i = 0; i < P->n; i++) {         /* one write per worker */
    Worker *w = &P->w[i];
    if (w->pid > 0 && w->out.n > w->outpos && worker_flush(w) != 0) {
      /* the worker is gone; its pipe tells us how */
    }
  }
}

/* ---------------------------------------------------------------------- */
/* replies                                                                */
/* ---------------------------------------------------------------------- */
typedef struct Reply {
  lua_Integer start;    /* a copy: user code may grow P->tasks meanwhile */
  int status;
  const char *p;
  size_t n;
} Reply;

static void fail_job_items(lua_State *L, int pidx, int job, lua_Integer index) {
  /* error value on top */
  Job *J = push_job(L, pidx, job);
  if (J == NULL) {
    lua_pop(L, 2);
    return;
  }
  lua_insert(L, -2);
  job_seterror(L, J, lua_gettop(L) - 1, index);
  lua_pop(L, 1);
}

/*
** Protected: decodes a reply's values into its job.  Stack: [R, job].
** A failure here (a __deserialize that raises, say) becomes the error of
** the task's first item; the bookkeeping is the caller's, so it always
** happens.
*/
static int reply_decode(lua_State *L) {
  Reply *R = (Reply *)lua_touserdata(L, 1);
  Job *J = (Job *)lua_touserdata(L, 2);
  int jidx = 2;
  lmp_dec D;
  size_t n, i;
  n = lmp_dec_begin(&D, L, R->p + 5, R->n - 5, LMP_DEC_TRUSTED);
  if (R->status == RS_OK) {
    if (J->kind == K_APPLY) {
      lua_createtable(L, (int)(n < 1000000 ? n : 1000000), 1);
      for (i = 1; i <= n; i++) {
        lmp_dec_value(&D);
        lua_rawseti(L, -2, (lua_Integer)i);
      }
      lua_pushinteger(L, (lua_Integer)n);
      lua_setfield(L, -2, "n");
      job_setfield(L, jidx, JV_VALUES);
    } else if (J->kind == K_IMAP || J->kind == K_IMAPU) {
      for (i = 0; i < n; i++) {
        lmp_dec_value(&D);
        store_result(L, J, jidx, R->start + (lua_Integer)i);
      }
    } else {                           /* map: straight into its results */
      int res;
      job_field(L, jidx, JV_RES);
      res = lua_gettop(L);
      for (i = 0; i < n; i++) {
        lmp_dec_value(&D);
        lua_rawseti(L, res, R->start + (lua_Integer)i);
      }
      lua_pop(L, 1);
    }
  } else {
    lua_Integer idx;
    if (n < 2) lmp_error(L, "lmp: malformed reply from a worker");
    lmp_dec_value(&D);                 /* err */
    lmp_dec_value(&D);                 /* failed position in the chunk */
    idx = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (idx < 1) idx = 1;
    for (i = 2; i < n; i++) {
      lmp_dec_value(&D);
      store_result(L, J, jidx, R->start + (lua_Integer)i - 2);
    }
    lua_pushvalue(L, -1);
    lua_remove(L, -2);
    job_seterror(L, J, jidx, R->start + idx - 1);
  }
  lmp_dec_end(&D);
  return 0;
}

/* protected: the initializer's error */
static int reply_initerr(lua_State *L) {
  Reply *R = (Reply *)lua_touserdata(L, 1);
  lmp_dec D;
  if (lmp_dec_begin(&D, L, R->p + 5, R->n - 5, LMP_DEC_TRUSTED) < 1)
    lmp_error(L, "lmp: malformed reply from a worker");
  lmp_dec_value(&D);
  return 1;
}

/* one reply frame from worker w */
static void reply_handle(lua_State *L, Pool *P, int pidx, Worker *w,
                         const char *p, size_t n) {
  Reply R;
  int t;
  Job *J;
  if (n < 5) lmp_error(L, "lmp: malformed reply from worker %d", (int)w->pid);
  t = (int)get32(p);
  R.p = p;
  R.n = n;
  R.status = (unsigned char)p[4];
  if (t == 0) {                        /* READY, or the initializer failed */
    if (R.status == RS_READY) {
      w->ready = 1;
      return;
    }
    lua_pushcfunction(L, reply_initerr);
    lua_pushlightuserdata(L, &R);
    lua_pcall(L, 1, 1, 0);             /* the error, or why it can't be read */
    P->broken = 1;
    lua_getiuservalue(L, pidx, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "initerror");
    lua_pop(L, 1);
    return;
  }
  if (w->nq == 0 || w->q[0] != t)
    lmp_error(L, "lmp: worker %d answered a task it was not given",
              (int)w->pid);
  {
    /* the task started when it was sent or when the worker finished the
       one before, whichever came last */
    double now = lmp_now(), d;
    double began = w->sent[0] > w->lastreply ? w->sent[0] : w->lastreply;
    P->tasktime = 0.8 * P->tasktime + 0.2 * (now - began);
    d = QUEUED / (P->tasktime > 1e-9 ? P->tasktime : 1e-9);
    P->depth = d > MAXDEPTH ? MAXDEPTH : (d < MINDEPTH ? MINDEPTH : (int)d);
    w->lastreply = now;
  }
  memmove(w->q, w->q + 1, (size_t)(--w->nq) * sizeof w->q[0]);
  memmove(w->sent, w->sent + 1, (size_t)w->nq * sizeof w->sent[0]);
  R.start = P->tasks[t].start;
  J = push_job(L, pidx, P->tasks[t].job);
  if (J != NULL) {                     /* NULL: an abandoned imap */
    int jidx = lua_gettop(L);
    lua_pushcfunction(L, reply_decode);
    lua_pushlightuserdata(L, &R);
    lua_pushvalue(L, jidx);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      job_seterror(L, J, jidx, R.start);
    J->inflight--;
    job_check(L, J, jidx);
  }
  lua_pop(L, 1);
  task_free(P, t);
}

/* a worker is gone: fail its running task, resend the others, replace it */
static void worker_lost(lua_State *L, Pool *P, int pidx, Worker *w) {
  lmp_state *S = lmp_getstate(L);
  int status = worker_reap(L, w), i;
  pid_t pid = w->pid;
  worker_closefds(S, w);
  w->pid = 0;
  if (!w->ready && !P->broken) {
    /* died before it was ready: its initializer killed it */
    P->broken = 1;
    lmp_pushhow(L, status);
    lua_pushfstring(L, "lmp: pool worker %d %s while running the initializer",
                    (int)pid, lua_tostring(L, -1));
    lua_getiuservalue(L, pidx, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "initerror");
    lua_pop(L, 2);
  }
  for (i = 0; i < w->nq; i++) {
    int t = w->q[i];
    if (i == 0) {
      Job *J;
      Task *k = &P->tasks[t];
      lmp_pushhow(L, status);
      lua_pushfstring(L, "lmp: pool worker %d %s while running a task",
                      (int)pid, lua_tostring(L, -1));
      lua_remove(L, -2);
      fail_job_items(L, pidx, k->job, k->start);
      J = push_job(L, pidx, k->job);
      if (J != NULL) {
        J->inflight--;
        job_check(L, J, lua_gettop(L));
      }
      lua_pop(L, 1);
      task_free(P, t);
    } else requeue_push(P, t);
  }
  w->nq = 0;
  P->nempty++;
  pool_respawn(L, P, pidx);
}

/* fails everything still running (terminate, broken pool, interrupt) */
static void fail_all(lua_State *L, Pool *P, int pidx, const char *why) {
  int i;
  for (i = 0; i < P->n; i++) P->w[i].nq = 0;
  P->requeue = P->requeuetail = 0;
  for (i = 1; i < P->ntasks; i++)
    if (P->tasks[i].job) task_free(P, i);
  for (i = 0; i < 2; i++) {
  pool_field(L, pidx, i ? "ijobs" : "jobs");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Job *J = (Job *)lua_touserdata(L, -1);
    if (J->state == J_RUN) {
      pool_field(L, pidx, "initerror");
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushstring(L, why);
      }
      J->inflight = 0;
      J->inputdone = 1;
      /* every item not handed out yet fails */
      job_seterror(L, J, lua_gettop(L) - 1,
                   J->kind == K_IMAP ? J->yielded + 1 : 1);
      job_finish(L, J, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  }
}

/*
** Kills the workers (SIGKILL) and reaps them.  `block`: wait for each;
** otherwise (a collector, which must not block on anything alive) wait
** for their deaths only up to KILLWAIT seconds in all -- a killed process
** takes about a millisecond -- and leave the stragglers to lmp's zombie
** list, reaped at the next chance.
*/
#define KILLWAIT 0.25
static void pool_kill(lua_State *L, Pool *P, int block) {
  lmp_state *S = lmp_getstate(L);
  int i, left = 0, st;
  double until = lmp_now() + KILLWAIT;
  for (i = 0; i < P->n; i++) {
    Worker *w = &P->w[i];
    if (w->pid <= 0) continue;
    worker_closefds(S, w);
    lmp_child_remove(L, w->pid);
    if (lmp_parked(L, w->pid, &st)) w->pid = 0;   /* mp.wait reaped it */
    else {
      kill(w->pid, SIGKILL);
      left++;
    }
  }
  while (left > 0) {
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      if (w->pid > 0 && lmp_reap(L, w->pid, &st, !block) != 0) {
        w->pid = 0;                    /* reaped (or not ours any more) */
        left--;
      }
    }
    if (left == 0 || (!block && lmp_now() >= until)) break;
    {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  for (i = 0; i < P->n; i++) {
    if (P->w[i].pid > 0) lmp_zombie_add(S, P->w[i].pid);
    P->w[i].pid = 0;
  }
}

/*
** Runs the callbacks of the jobs that finished, in the order they did, and
** lets the pool forget them (their AsyncResult keeps the outcome; imap
** jobs are forgotten by their iterator).  A callback's error is raised.
*/
static void run_callbacks(lua_State *L, Pool *P, int pidx) {
  int fin, jobs;
  if (P->fhead == P->ftail || P->holdcb) return;
  pool_field(L, pidx, "finished");
  fin = lua_gettop(L);
  pool_field(L, pidx, "jobs");
  jobs = fin + 1;
  while (P->fhead < P->ftail) {
    Job *J;
    int jidx, id;
    lua_rawgeti(L, fin, ++P->fhead);
    id = (int)lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, fin, P->fhead);
    lua_rawgeti(L, jobs, id);
    J = (Job *)lua_touserdata(L, -1);
    jidx = lua_gettop(L);
    if (J == NULL || !J->cbpending) {
      lua_settop(L, jobs);
      continue;
    }
    J->cbpending = 0;
    if (J->kind != K_IMAP && J->kind != K_IMAPU) {
      lua_pushnil(L);
      lua_rawseti(L, jobs, id);
    }
    if (J->state == J_OK) {
      job_field(L, jidx, JV_CB);
      if (!lua_isnil(L, -1)) {
        int n;
        if (J->kind == K_APPLY) {
          int a;
          job_field(L, jidx, JV_VALUES);
          lua_getfield(L, -1, "n");
          n = (int)lua_tointeger(L, -1);
          lua_pop(L, 1);
          luaL_checkstack(L, n + 2, NULL);
          for (a = 1; a <= n; a++) lua_rawgeti(L, -a, a);
          lua_remove(L, -n - 1);
        } else {
          job_field(L, jidx, JV_RES);
          n = 1;
        }
        lua_call(L, n, 0);
      }
    } else {
      job_field(L, jidx, JV_ECB);
      if (!lua_isnil(L, -1)) {
        job_field(L, jidx, JV_ERR);
        lua_call(L, 1, 0);
      }
    }
    lua_settop(L, jobs);
  }
  lua_settop(L, fin - 1);
}

/* ---------------------------------------------------------------------- */
/* the pump                                                               */
/* ---------------------------------------------------------------------- */
typedef int (*donefn)(lua_State *L, Pool *P, int pidx, void *ud);

static void pool_interrupted(lua_State *L, Pool *P, int pidx) {
  pool_kill(L, P, 1);
  P->state = P_TERM;
  fail_all(L, P, pidx, "lmp: interrupted");
  lmp_error(L, "lmp: interrupted");
}

static void read_worker(lua_State *L, Pool *P, int pidx, Worker *w) {
  for (;;) {
    const char *p;
    size_t n;
    int r = lmp_reader_fill(&w->rd, w->rfd);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    while (w->pid > 0 && lmp_reader_frame(&w->rd, &p, &n))
      reply_handle(L, P, pidx, w, p, n);
    if (r <= 0) {                      /* EOF or error: the worker is gone */
      worker_lost(L, P, pidx, w);
      return;
    }
  }
}

/*
** Moves work along until done() says so; returns 1, or 0 at the deadline.
** SIGINT (through lua.c's hook) terminates the pool and raises.
*/
static int pool_pump(lua_State *L, Pool *P, int pidx, donefn done, void *ud,
                     double deadline) {
  lmp_hook h;
  struct pollfd fds[2 * 64];
  struct pollfd *pf = fds;
  int i, r, result = 1;
  if (2 * P->n > 2 * 64) {
    pf = (struct pollfd *)lua_newuserdatauv(L, sizeof *pf * 2 * (size_t)P->n, 0);
  }
  lmp_hook_save(L, &h);
  for (;;) {
    unsigned nf = 0;
    pool_respawn(L, P, pidx);
    pool_dispatch(L, P, pidx, P->depth);
    run_callbacks(L, P, pidx);
    if (P->broken) {
      fail_all(L, P, pidx, "lmp: the pool's initializer failed");
    }
    if (done(L, P, pidx, ud)) break;
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      if (w->pid <= 0) continue;
      pf[nf].fd = w->rfd;
      pf[nf].events = POLLIN;
      nf++;
      if (w->out.n > w->outpos) {
        pf[nf].fd = w->tfd;
        pf[nf].events = POLLOUT;
        nf++;
      }
    }
    if (nf == 0) {                     /* nothing can ever finish */
      if (P->spawnerr[0])
        lua_pushfstring(L, "lmp: the pool has no workers (%s)", P->spawnerr);
      else lua_pushliteral(L, "lmp: the pool has no workers");
      fail_all(L, P, pidx, lua_tostring(L, -1));
      lua_pop(L, 1);
      if (!done(L, P, pidx, ud)) result = 0;
      break;
    }
    /*
    ** A reply to a short task comes back within microseconds: polling
    ** for a little while first saves the far slower sleep and wake-up
    ** (not when the caller would not wait that long: ready(), a step).
    */
    r = 0;
    if (deadline < 0 || deadline > lmp_now() + SPIN) {
      double spinend = lmp_now() + SPIN;
      do r = lmp_poll(L, &h, pf, nf, 0);
      while (r == 0 && lmp_now() < spinend);
    }
    if (r == 0) r = lmp_poll(L, &h, pf, nf, deadline);
    if (r == -2) pool_interrupted(L, P, pidx);
    if (r < 0) lmp_syserror(L, "poll");
    if (r == 0) {
      result = 0;
      break;
    }
    nf = 0;
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      int rev, wrev = 0;
      if (w->pid <= 0) continue;
      rev = pf[nf++].revents;
      if (nf < (unsigned)2 * P->n && pf[nf].fd == w->tfd) wrev = pf[nf++].revents;
      if (wrev) worker_flush(w);
      if (rev) read_worker(L, P, pidx, w);
    }
  }
  if (pf != fds) lua_pop(L, 1);
  return result;
}

static int done_never(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)L;
  (void)P;
  (void)pidx;
  (void)ud;
  return 0;
}

/*
** What every pool call does on its way: hands out work and takes in what
** the workers sent back, without waiting.  A submit (apply_async, map_async,
** starmap_async, imap) hands each worker up to MAXDEPTH tasks at once (as
** many as its socket takes), so they work on while the parent does
** something else; it runs no callback (a callback's error would be raised
** by the call that made a new job, whose AsyncResult would then be lost).
** Callbacks run in the calls that wait, if only for 0 s.
*/
static void pool_step(lua_State *L, Pool *P, int pidx, int submit) {
  if (submit) pool_dispatch(L, P, pidx, MAXDEPTH);
  P->holdcb = submit;
  pool_pump(L, P, pidx, done_never, NULL, lmp_now());
  P->holdcb = 0;
}

static int done_job(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)L;
  (void)P;
  (void)pidx;
  return ((Job *)ud)->state != J_RUN;
}

/* 1 if some imap job is held back, waiting for its consumer */
static int imap_waiting(lua_State *L, Pool *P, int pidx) {
  int found = 0;
  pool_field(L, pidx, "ijobs");
  lua_pushnil(L);
  while (!found && lua_next(L, -2)) {
    Job *J = (Job *)lua_touserdata(L, -1);
    found = J->state == J_RUN && !J->stopped && !J->inputdone &&
            job_blocked(P, J);
    lua_pop(L, 1);
  }
  lua_pop(L, found ? 2 : 1);
  return found;
}

static int done_all(lua_State *L, Pool *P, int pidx, void *ud) {
  int running = 0, i;
  (void)P;
  (void)ud;
  for (i = 0; i < 2 && !running; i++) {
    pool_field(L, pidx, i ? "ijobs" : "jobs");
    lua_pushnil(L);
    while (!running && lua_next(L, -2)) {
      running = ((Job *)lua_touserdata(L, -1))->state == J_RUN;
      lua_pop(L, 1);
    }
    lua_pop(L, running ? 2 : 1);
  }
  return !running;
}

/* ====================================================================== */
/* Pool methods                                                           */
/* ====================================================================== */
static lua_Integer optchunk(lua_State *L, int arg) {
  lua_Integer c;
  if (lua_isnoneornil(L, arg)) return 0;
  c = luaL_checkinteger(L, arg);
  if (c < 1) lmp_error(L, "lmp: chunksize must be a positive integer, got %I",
                       (LUAI_UACINT)c);
  return c;
}

static void checkrunning(lua_State *L, Pool *P) {
  if (P->state != P_RUN)
    lmp_error(L, "lmp: pool is %s", P->state == P_CLOSE ? "closed"
                                                         : "terminated");
}

static void checktask(lua_State *L, int arg) {
  if (!lmp_iscallable(L, arg))
    lmp_error(L, "lmp: task must be a function, got %s",
              luaL_typename(L, arg));
}

/* marks id as in use (pool_wrapids) */
static void busy_add(lua_State *L, int busy, lua_Integer id, int *n) {
  if (id <= 0) return;
  lua_pushboolean(L, 1);
  lua_rawseti(L, busy, id);
  (*n)++;
}

/*
** Job ids (which also name functions in the workers' caches) start over.
** Every worker must forget the functions it has before its next task, or
** a new job could run an old job's function; and every
** id something still refers to -- a job not yet collected, a task in
** flight or queued, an entry of the input or callback queues, a function
** id a live job uses -- goes in "busy": no new job takes it before the
** next wrap, so none can receive another's results or run its function.
*/
static void pool_wrapids(lua_State *L, Pool *P, int pidx) {
  int i, busy, nbusy = 0;
  P->nextjob = 0;
  for (i = 0; i < P->n; i++) {
    memset(P->w[i].fn, 0, sizeof P->w[i].fn);
    P->w[i].fnpos = 0;
    P->w[i].flush = 1;
  }
  lua_getiuservalue(L, pidx, 1);
  lua_newtable(L);
  lua_setfield(L, -2, "fnids");
  P->nfnids = 0;
  lua_newtable(L);
  busy = lua_gettop(L);
  for (i = 0; i < 2; i++) {
    pool_field(L, pidx, i ? "ijobs" : "jobs");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      busy_add(L, busy, lua_tointeger(L, -2), &nbusy);
      busy_add(L, busy, ((Job *)lua_touserdata(L, -1))->fnid, &nbusy);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  for (i = 0; i < 2; i++) {            /* the queues of ids */
    lua_Integer k, tail = i ? P->ftail : P->otail;
    pool_field(L, pidx, i ? "finished" : "order");
    for (k = (i ? P->fhead : P->ohead) + 1; k <= tail; k++) {
      lua_rawgeti(L, -1, k);
      busy_add(L, busy, lua_tointeger(L, -1), &nbusy);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  for (i = 1; i < P->ntasks; i++)
    if (P->tasks[i].job) {
      busy_add(L, busy, P->tasks[i].job, &nbusy);
      busy_add(L, busy, P->tasks[i].fnid, &nbusy);
    }
  P->busy = nbusy > 0;
  lua_setfield(L, -2, "busy");
  lua_pop(L, 1);
}

/* a job id no one refers to */
static int pool_newid(lua_State *L, Pool *P, int pidx) {
  int tries = 0;
  for (;;) {
    int id, taken;
    if (P->nextjob >= P->idmax) {
      pool_wrapids(L, P, pidx);
      tries = 0;                       /* ids skipped before are free now */
    }
    id = ++P->nextjob;
    if (!P->busy) return id;
    pool_field(L, pidx, "busy");
    taken = lua_rawgeti(L, -1, id) != LUA_TNIL;
    lua_pop(L, 2);
    if (!taken) return id;
    if (++tries >= P->idmax) lmp_error(L, "lmp: too many jobs in flight");
  }
}

/*
** Creates a job (the AsyncResult) for pool at index 1 and registers it.
** input: stack index of the array/iterator/args table, or 0.
*/
static Job *job_new(lua_State *L, Pool *P, int kind, int star, int fn,
                    int input, lua_Integer chunk, int cb, int ecb) {
  Job *J;
  lmp_enc *E;
  size_t len;
  const char *s;
  int jidx;
  J = (Job *)lua_newuserdatauv(L, sizeof *J, 1);
  memset(J, 0, sizeof *J);
  jidx = lua_gettop(L);
  luaL_setmetatable(L, LMP_RESULT);
  J->id = pool_newid(L, P, 1);
  J->kind = kind;
  J->star = star;
  J->chunksize = chunk;
  J->nextin = 1;
  lua_createtable(L, 0, 8);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, JV_POOL);
  lua_newtable(L);
  lua_setfield(L, -2, JV_RES);
  if (kind == K_IMAPU) {
    lua_newtable(L);
    lua_setfield(L, -2, JV_EVENTS);
  }
  if (cb && !lua_isnoneornil(L, cb)) {
    if (!lmp_iscallable(L, cb)) lmp_error(L, "lmp: callback must be a function");
    lua_pushvalue(L, cb);
    lua_setfield(L, -2, JV_CB);
  }
  if (ecb && !lua_isnoneornil(L, ecb)) {
    if (!lmp_iscallable(L, ecb))
      lmp_error(L, "lmp: error_callback must be a function");
    lua_pushvalue(L, ecb);
    lua_setfield(L, -2, JV_ECB);
  }
  lua_setiuservalue(L, jidx, 1);
  /* the function travels once per call */
  E = lmp_enc_take(L, P, 0);
  lmp_enc_ident(E, P->identmark);
  lmp_enc_begin(E, 1);
  lmp_enc_value(E, fn, "task", -1);
  s = lmp_enc_flatten(E, &len);
  lua_pushlstring(L, s, len);
  job_setfield(L, jidx, JV_FN);
  lmp_enc_give(L, -1, P);
  /* a stateless function already sent by an earlier call is not sent
     again to the workers that still have it */
  J->fnid = J->id;
  if (lmp_fn_stateless(L, fn, P->identmark)) {
    J->keep = 1;
    pool_field(L, 1, "fnids");
    job_field(L, jidx, JV_FN);
    if (lua_rawget(L, -2) == LUA_TNUMBER) J->fnid = (int)lua_tointeger(L, -1);
    else {
      if (++P->nfnids > FNCACHE * 4) { /* older ones are long evicted */
        lua_pop(L, 2);
        lua_getiuservalue(L, 1, 1);
        lua_newtable(L);
        lua_setfield(L, -2, "fnids");
        lua_pop(L, 1);
        pool_field(L, 1, "fnids");
        lua_pushnil(L);
        P->nfnids = 1;
      }
      job_field(L, jidx, JV_FN);
      lua_pushinteger(L, J->id);
      lua_rawset(L, -4);
    }
    lua_pop(L, 2);
  }
  if (kind == K_APPLY) {
    if (input && !lua_isnoneornil(L, input)) {
      if (!lua_istable(L, input))
        lmp_error(L, "lmp: args must be a table, got %s",
                  luaL_typename(L, input));
      lua_pushvalue(L, input);
    } else lua_createtable(L, 0, 0);
    job_setfield(L, jidx, JV_VALUES);
    J->ninput = 1;
  } else {
    if (lua_istable(L, input)) {
      /* a proxy (__index, __len) is mapped as t[i] sees it */
      if (luaL_getmetafield(L, input, "__index") != LUA_TNIL ||
          luaL_getmetafield(L, input, "__len") != LUA_TNIL) {
        int isnum;
        lua_pop(L, 1);
        J->proxy = 1;
        lua_len(L, input);
        J->ninput = lua_tointegerx(L, -1, &isnum);
        if (!isnum || J->ninput < 0)
          lmp_error(L, "lmp: iterable's length must be a non-negative "
                       "integer, got %s", luaL_tolstring(L, -1, NULL));
        lua_pop(L, 1);
      } else J->ninput = (lua_Integer)lua_rawlen(L, input);
    } else if (lua_isfunction(L, input)) {
      J->iter = 1;
    } else lmp_error(L, "lmp: iterable must be an array or an iterator "
                        "function, got %s", luaL_typename(L, input));
    lua_pushvalue(L, input);
    job_setfield(L, jidx, JV_INPUT);
    if (kind == K_MAP && !J->iter) {
      /* the results table at its final size: no rehash as chunks come
         back (out of order, often); rawlen bounds what a __len claims */
      lua_Unsigned raw = (lua_Unsigned)lua_rawlen(L, input);
      lua_Integer want = J->ninput < (lua_Integer)raw ? J->ninput : (lua_Integer)raw;
      if (want > 0) {
        lua_createtable(L, want < INT_MAX ? (int)want : INT_MAX, 0);
        job_setfield(L, jidx, JV_RES);
      }
    }
    if (J->chunksize == 0) {
      if (kind == K_MAP && !J->iter) {  /* Python's default */
        lua_Integer c = J->ninput / ((lua_Integer)P->n * 4);
        if (J->ninput % ((lua_Integer)P->n * 4)) c++;
        J->chunksize = c < 1 ? 1 : c;
      } else J->chunksize = 1;
    }
  }
  pool_field(L, 1, kind == K_IMAP || kind == K_IMAPU ? "ijobs" : "jobs");
  lua_pushvalue(L, jidx);
  lua_rawseti(L, -2, J->id);
  lua_pop(L, 1);
  pool_field(L, 1, "order");
  lua_pushinteger(L, J->id);
  lua_rawseti(L, -2, ++P->otail);
  lua_pop(L, 1);
  return J;
}

/* pushes a finished job's outcome; raises its error */
static int job_result(lua_State *L, Job *J, int jidx) {
  if (J->state == J_FAIL) {
    job_field(L, jidx, JV_ERR);
    return lua_error(L);
  }
  if (J->kind == K_APPLY) {
    int n, i;
    job_field(L, jidx, JV_VALUES);
    lua_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "lmp: too many results");
    for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    return n;
  }
  job_field(L, jidx, JV_RES);
  return 1;
}

/*
** Moves the job's pool along until the job is done or the deadline passes
** (deadline now: one step that does not wait).  Callbacks of finished jobs
** run on the way, so by the time a result is handed out its callback ran.
*/
static void job_wait(lua_State *L, Job *J, int jidx, double deadline,
                     int raise) {
  Pool *P;
  job_field(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (P->owner != getpid()) {
    if (J->state == J_RUN)
      lmp_error(L, "lmp: this AsyncResult belongs to process %d",
                (int)P->owner);
  } else if (!pool_pump(L, P, lua_gettop(L), done_job, J, deadline) &&
             raise)
    lmp_error(L, "lmp: timeout");
  lua_pop(L, 1);
}


static int pool_apply_async(lua_State *L) {
  Pool *P = ownpool(L, 1);
  checkrunning(L, P);
  checktask(L, 2);
  lua_settop(L, 5);
  job_new(L, P, K_APPLY, 1, 2, 3, 0, 4, 5);
  pool_step(L, P, 1, 1);
  return 1;
}

static int pool_apply(lua_State *L) {
  Pool *P = ownpool(L, 1);
  Job *J;
  checkrunning(L, P);
  checktask(L, 2);
  lua_settop(L, 3);
  J = job_new(L, P, K_APPLY, 1, 2, 3, 0, 0, 0);
  job_wait(L, J, 4, -1, 1);
  return job_result(L, J, 4);
}

static int map_common(lua_State *L, int star, int async) {
  Pool *P = ownpool(L, 1);
  lua_Integer chunk;
  Job *J;
  checkrunning(L, P);
  checktask(L, 2);
  chunk = optchunk(L, 4);
  lua_settop(L, 6);
  J = job_new(L, P, K_MAP, star, 2, 3, chunk, async ? 5 : 0, async ? 6 : 0);
  if (async) {
    pool_step(L, P, 1, 1);
    return 1;
  }
  job_wait(L, J, 7, -1, 1);
  return job_result(L, J, 7);
}

static int pool_map(lua_State *L) { return map_common(L, 0, 0); }
static int pool_map_async(lua_State *L) { return map_common(L, 0, 1); }
static int pool_starmap(lua_State *L) { return map_common(L, 1, 0); }
static int pool_starmap_async(lua_State *L) { return map_common(L, 1, 1); }

/* ---------------------------------------------------------------------- */
/* imap                                                                   */
/* ---------------------------------------------------------------------- */
typedef struct ImapWait {
  Job *J;
  int jidx;
} ImapWait;

/* is there something for the iterator to hand out? */
static int imap_has(lua_State *L, Job *J, int jidx) {
  int has;
  if (J->kind == K_IMAPU) return J->evtail > J->yielded || J->state != J_RUN;
  if (J->errindex && J->yielded + 1 >= J->errindex) return 1;
  job_field(L, jidx, JV_RES);
  has = lua_rawgeti(L, -1, J->yielded + 1) != LUA_TNIL;
  lua_pop(L, 2);
  return has || J->state != J_RUN;
}

static int done_imap(lua_State *L, Pool *P, int pidx, void *ud) {
  ImapWait *iw = (ImapWait *)ud;
  (void)P;
  (void)pidx;
  return imap_has(L, iw->J, iw->jidx);
}

static int imap_next(lua_State *L) {
  Job *J = (Job *)lua_touserdata(L, lua_upvalueindex(1));
  int jidx;
  lua_Integer index;
  Pool *P;
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  jidx = 1;
  if (J->raised) {                     /* the pool forgot it: never pump */
    job_field(L, jidx, JV_ERR);
    return lua_error(L);
  }
  if (J->closed) {                     /* its results are no longer kept */
    lua_pushnil(L);
    return 1;
  }
  job_field(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (!imap_has(L, J, jidx)) {
    ImapWait iw;
    if (P->owner != getpid())
      lmp_error(L, "lmp: this iterator belongs to process %d", (int)P->owner);
    iw.J = J;
    iw.jidx = jidx;
    pool_pump(L, P, 2, done_imap, &iw, -1);
  }
  if (J->kind == K_IMAPU) {
    if (J->evtail <= J->yielded) goto finished;
    job_field(L, jidx, JV_EVENTS);
    lua_rawgeti(L, -1, ++J->yielded);
    index = lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, -3, J->yielded);    /* consumed: memory stays bounded */
    if (index < 0) {                   /* the error event */
      J->stopped = 1;
      J->raised = 1;
      forget_job(L, 2, J);
      job_field(L, jidx, JV_ERR);
      return lua_error(L);
    }
  } else {
    index = ++J->yielded;
    if (J->errindex && index >= J->errindex) {
      J->yielded--;
      J->stopped = 1;
      J->raised = 1;
      forget_job(L, 2, J);
      job_field(L, jidx, JV_ERR);
      return lua_error(L);
    }
  }
  job_field(L, jidx, JV_RES);
  if (lua_rawgeti(L, -1, index) == LUA_TNIL) {
    lua_pop(L, 1);
    if (J->kind != K_IMAPU) J->yielded--;
    goto finished;
  }
  /* hand it out once: the table must not keep every result */
  lua_pushnil(L);
  lua_rawseti(L, -3, index);
  if (lua_touserdata(L, -1) == &nilsentinel) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_pushinteger(L, index);
  return 2;
finished:
  if (J->state != J_RUN) forget_job(L, 2, J);
  if (J->state == J_FAIL && J->kind == K_IMAPU) {
    job_field(L, jidx, JV_ERR);
    return lua_error(L);
  }
  lua_pushnil(L);
  return 1;
}

static int imap_common(lua_State *L, int kind) {
  Pool *P = ownpool(L, 1);
  lua_Integer chunk;
  checkrunning(L, P);
  checktask(L, 2);
  chunk = optchunk(L, 4);
  lua_settop(L, 4);
  job_new(L, P, kind, 0, 2, 3, chunk, 0, 0);
  pool_step(L, P, 1, 1);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, imap_next, 1);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  return 4;                            /* iterator, nil, nil, closing value */
}

/* `for ... in pool:imap(...)` closes the job when the loop is left: an
   abandoned imap stops taking input */
static int res_close(lua_State *L) {
  Job *J = (Job *)lmp_checkudata(L, 1, LMP_RESULT, "AsyncResult");
  if ((J->kind == K_IMAP || J->kind == K_IMAPU) && J->state == J_RUN) {
    J->stopped = 1;
    J->inputdone = 1;
    J->closed = 1;
    job_field(L, 1, JV_POOL);
    if (((Pool *)lua_touserdata(L, -1))->owner == getpid())
      forget_job(L, lua_gettop(L), J);
  }
  return 0;
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
  if (P->state == P_TERM && P->w == NULL) return;
  P->state = P_TERM;
  pool_kill(L, P, 1);
  fail_all(L, P, pidx, "lmp: pool terminated");
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
  lmp_state *S = lmp_getstate(L);
  int i;
  if (P->state == P_RUN)
    return lmp_error(L, "lmp: join before close or terminate");
  if (P->state == P_CLOSE) {
    /* an imap whose iterator was dropped waits for a consumer that will
       never come: a full collection lets it go (ijobs is weak) */
    if (imap_waiting(L, P, 1)) lua_gc(L, LUA_GCCOLLECT, 0);
    P->joining = 1;                    /* the others run to the end */
    pool_pump(L, P, 1, done_all, NULL, -1);
    P->joining = 0;
    /* idle now: closing the task sockets makes workers exit */
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      if (w->pid > 0) {
        lmp_close_fd(S, w->tfd);
        w->tfd = -1;
      }
    }
    for (i = 0; i < P->n; i++) {
      Worker *w = &P->w[i];
      if (w->pid > 0) {
        worker_reap(L, w);
        worker_closefds(S, w);
        w->pid = 0;
      }
    }
    P->state = P_TERM;
  }
  return 0;
}

static int pool_gc(lua_State *L) {
  Pool *P = checkpool(L, 1);
  int i;
  if (P->owner == getpid() && P->w != NULL) {
    pool_kill(L, P, 0);                /* never block on a live task */
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, P);   /* its encoder */
  }
  for (i = 0; P->w && i < P->n; i++) {
    lmp_buf_free(&P->w[i].out);
    lmp_reader_free(&P->w[i].rd);
  }
  for (i = 0; i < P->ntasks; i++) free(P->tasks[i].args);
  free(P->tasks);
  free(P->w);
  P->tasks = NULL;
  P->w = NULL;
  P->ntasks = 0;
  P->n = 0;
  return 0;
}

static int pool_tostring(lua_State *L) {
  Pool *P = checkpool(L, 1);
  static const char *const st[] = {"running", "closed", "terminated"};
  lua_pushfstring(L, "lmp.Pool{%d workers, %s}", P->n, st[P->state]);
  return 1;
}

static int pool_new(lua_State *L) {
  Pool *P;
  lua_Integer n = 0;
  int i, pidx;
  lmp_zombie_reap(lmp_getstate(L), 0);
  lua_settop(L, 1);
  P = (Pool *)lua_newuserdatauv(L, sizeof *P, 1);
  memset(P, 0, sizeof *P);
  pidx = lua_gettop(L);
  P->owner = getpid();
  P->state = P_TERM;                   /* harmless until workers exist */
  P->tasktime = QUEUED / MINDEPTH;
  P->depth = MINDEPTH;
  P->idmax = JOBID_MAX;
  luaL_setmetatable(L, LMP_POOL);
  lua_createtable(L, 0, 6);
  lua_newtable(L);
  lua_setfield(L, -2, "jobs");
  lua_newtable(L);
  lua_setfield(L, -2, "order");
  lua_newtable(L);
  lua_setfield(L, -2, "finished");
  lua_newtable(L);                     /* weak values */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "ijobs");
  lua_newtable(L);
  lua_setfield(L, -2, "fnids");
  if (lua_istable(L, 1)) {
    /* for the specs only: a small id range, to reach the wrap-around */
    if (lua_getfield(L, 1, "_jobidmax") == LUA_TNUMBER &&
        lua_tointeger(L, -1) >= 2 && lua_tointeger(L, -1) < JOBID_MAX)
      P->idmax = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "processes") != LUA_TNIL) {
      if (!lua_isinteger(L, -1))
        lmp_error(L, "lmp: Pool processes must be an integer");
      n = lua_tointeger(L, -1);
      if (n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got %I",
                           (LUAI_UACINT)n);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "initializer") != LUA_TNIL &&
        !lmp_iscallable(L, -1))
      lmp_error(L, "lmp: Pool initializer must be a function");
    lua_setfield(L, -2, "initializer");
    if (lua_getfield(L, 1, "initargs") != LUA_TNIL && !lua_istable(L, -1))
      lmp_error(L, "lmp: Pool initargs must be a table");
    lua_setfield(L, -2, "initargs");
    if (lua_getfield(L, 1, "maxtasksperchild") != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
        lmp_error(L, "lmp: Pool maxtasksperchild must be a positive integer");
      P->maxtasks = (long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  } else if (!lua_isnil(L, 1)) {
    if (!lua_isinteger(L, 1))
      lmp_error(L, "lmp: Pool expects a number of processes or an options "
                   "table, got %s", luaL_typename(L, 1));
    n = lua_tointeger(L, 1);
    if (n < 1) lmp_error(L, "lmp: Pool needs at least 1 process, got %I",
                         (LUAI_UACINT)n);
  }
  lua_setiuservalue(L, pidx, 1);
  if (n == 0) {
    lua_getfield(L, LUA_REGISTRYINDEX, "lmp.cpu_count");
    lua_call(L, 0, 1);
    n = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (n > 4096) lmp_error(L, "lmp: Pool of %I processes is too large",
                          (LUAI_UACINT)n);
  P->w = (Worker *)calloc((size_t)n, sizeof *P->w);
  if (P->w == NULL) lmp_error(L, "lmp: not enough memory");
  P->n = (int)n;
  P->state = P_RUN;
  lua_replace(L, 1);                   /* the pool is argument 1 from here */
  lua_settop(L, 1);
  /* the environments of the code creating the pool are the workers' too:
     tasks defined there use their own copy (see lmp_ident_scan) */
  lmp_ident_scan(L);
  P->identmark = lmp_ident_mark(L);
  for (i = 0; i < P->n; i++) P->w[i].tfd = P->w[i].rfd = -1;
  for (i = 0; i < P->n; i++) {
    if (worker_spawn(L, P, 1, &P->w[i]) != 0) {
      /* the workers forked so far go before the error does */
      lua_pushfstring(L, "lmp: Pool(%d): %s", P->n, P->spawnerr);
      pool_doterminate(L, P, 1);
      return lua_error(L);
    }
  }
  /* wait until every worker ran its initializer */
  {
    int all;
    do {
      lmp_hook h;
      struct pollfd pf;
      all = 1;
      for (i = 0; i < P->n && all; i++) {
        Worker *w = &P->w[i];
        if (w->pid > 0 && !w->ready) {
          int r;
          all = 0;
          lmp_hook_save(L, &h);
          pf.fd = w->rfd;
          pf.events = POLLIN;
          r = lmp_poll(L, &h, &pf, 1, -1);
          if (r == -2) pool_interrupted(L, P, 1);
          read_worker(L, P, 1, w);
        }
        if (P->broken) break;
      }
    } while (!all && !P->broken);
  }
  if (P->broken) {
    pool_doterminate(L, P, 1);
    pool_field(L, 1, "initerror");
    if (lua_type(L, -1) == LUA_TSTRING)
      lmp_error(L, "lmp: pool initializer failed: %s", lua_tostring(L, -1));
    return lua_error(L);
  }
  return 1;
}

/* ====================================================================== */
/* AsyncResult                                                            */
/* ====================================================================== */
static Job *checkjob(lua_State *L) {
  return (Job *)lmp_checkudata(L, 1, LMP_RESULT, "AsyncResult");
}

static int res_get(lua_State *L) {
  Job *J = checkjob(L);
  double dl = lmp_optdeadline(L, 2);
  if (J->kind == K_IMAP || J->kind == K_IMAPU)
    return lmp_error(L, "lmp: use the iterator");
  job_wait(L, J, 1, dl, 1);
  return job_result(L, J, 1);
}

static int res_wait(lua_State *L) {
  Job *J = checkjob(L);
  job_wait(L, J, 1, lmp_optdeadline(L, 2), 0);
  lua_pushboolean(L, J->state != J_RUN);
  return 1;
}

/* a poll makes progress: polling ready() until it says true ends */
static int res_ready(lua_State *L) {
  Job *J = checkjob(L);
  job_wait(L, J, 1, lmp_now(), 0);
  lua_pushboolean(L, J->state != J_RUN);
  return 1;
}

static int res_successful(lua_State *L) {
  Job *J = checkjob(L);
  job_wait(L, J, 1, lmp_now(), 0);
  if (J->state == J_RUN) return lmp_error(L, "lmp: result is not ready");
  lua_pushboolean(L, J->state == J_OK);
  return 1;
}

static int res_tostring(lua_State *L) {
  Job *J = checkjob(L);
  lua_pushfstring(L, "lmp.AsyncResult{%s}", J->state == J_RUN ? "pending"
                  : (J->state == J_OK ? "successful" : "failed"));
  return 1;
}

void lmp_pool_open(lua_State *L) {
  static const luaL_Reg pool_methods[] = {
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
  static const luaL_Reg pool_meta[] = {
    {"__gc", pool_gc},
    {"__close", pool_closescope},
    {"__tostring", pool_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg res_methods[] = {
    {"get", res_get},
    {"wait", res_wait},
    {"ready", res_ready},
    {"successful", res_successful},
    {NULL, NULL}
  };
  /* the module table is on top */
  lua_getfield(L, -1, "cpu_count");
  lua_setfield(L, LUA_REGISTRYINDEX, "lmp.cpu_count");
  if (luaL_newmetatable(L, LMP_POOL)) {
    luaL_setfuncs(L, pool_meta, 0);
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LMP_RESULT)) {
    lua_pushcfunction(L, res_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, res_close);
    lua_setfield(L, -2, "__close");
    luaL_newlib(L, res_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, pool_new);
  lua_setfield(L, -2, "Pool");
}
