/*
** pool_job.c -- jobs and tasks.  A job's function is encoded once per call; a
** stateless one (lmp_fn_stateless) gets the id under which an earlier
** call sent the same bytes, so workers that kept it are not sent it again.
** Job ids also name functions in the workers' caches; see src/DESIGN.md
** ("Pool: function ids") for how they start over.
*/
#include "pool_job.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ====================================================================== */
/* ids                                                                    */
/* ====================================================================== */
/* marks id as in use (wrap_ids) */
static void busy_add(lua_State *L, int busy, lua_Integer id, int *n) {
  if (id <= 0) return;
  lua_pushboolean(L, 1);
  lua_rawseti(L, busy, id);
  (*n)++;
}

/* every id a job table or an id queue of the pool holds */
static void busy_jobs(lua_State *L, Pool *P, int pidx, int busy, int *n) {
  int i;
  for (i = 0; i < 2; i++) {
    lmp_uvfield(L, pidx, i ? "ijobs" : "jobs");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      busy_add(L, busy, lua_tointeger(L, -2), n);
      busy_add(L, busy, ((Job *)lua_touserdata(L, -1))->fnid, n);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  for (i = 0; i < 2; i++) {            /* the queues of ids */
    lua_Integer k, tail = i ? P->ftail : P->otail;
    lmp_uvfield(L, pidx, i ? "finished" : "order");
    for (k = (i ? P->fhead : P->ohead) + 1; k <= tail; k++) {
      lmp_rawgeti(L, -1, k);
      busy_add(L, busy, lua_tointeger(L, -1), n);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/*
** Job ids (which also name functions in the workers' caches) start over.
** Every worker must forget the functions it has before its next task, or
** a new job could run an old job's function; and every id something still
** refers to -- a job not yet collected, a task in flight or queued, an
** entry of the input or callback queues, a function id a live job uses --
** goes in "busy": no new job takes it before the next wrap, so none can
** receive another's results or run its function.
*/
static void wrap_ids(lua_State *L, Pool *P, int pidx) {
  int i, busy, nbusy = 0;
  P->nextjob = 0;
  for (i = 0; i < P->n; i++) {
    memset(P->w[i].fn, 0, sizeof P->w[i].fn);
    P->w[i].fnpos = 0;
    P->w[i].flush = 1;
  }
  lmp_getuv(L, pidx, 1);
  lua_newtable(L);
  lua_setfield(L, -2, "fnids");
  P->nfnids = 0;
  lua_newtable(L);
  busy = lua_gettop(L);
  busy_jobs(L, P, pidx, busy, &nbusy);
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
static int new_id(lua_State *L, Pool *P, int pidx) {
  int tries = 0;
  for (;;) {
    int id, taken;
    if (P->nextjob >= P->idmax) {
      wrap_ids(L, P, pidx);
      tries = 0;                       /* ids skipped before are free now */
    }
    id = ++P->nextjob;
    if (!P->busy) return id;
    lmp_uvfield(L, pidx, "busy");
    taken = lmp_rawgeti(L, -1, id) != LUA_TNIL;
    lua_pop(L, 2);
    if (!taken) return id;
    if (++tries >= P->idmax) lmp_error(L, "lmp: too many jobs in flight");
  }
}

/* ====================================================================== */
/* jobs                                                                   */
/* ====================================================================== */
/*
** AsyncResults are held strongly in "jobs" (callbacks may be all a caller
** keeps); imap jobs weakly in "ijobs", so a dropped iterator takes its
** input and results with it.
*/
Job *lmp_job_push(lua_State *L, int pidx, int id) {
  lmp_uvfield(L, pidx, "jobs");
  if (lmp_rawgeti(L, -1, id) == LUA_TNIL) {
    lua_pop(L, 2);
    lmp_uvfield(L, pidx, "ijobs");
    lmp_rawgeti(L, -1, id);
  }
  lua_remove(L, -2);
  return (Job *)lua_touserdata(L, -1);
}

/*
** Only if the entry is still J: once forgotten, its id may have gone to a
** newer job (ids start over), which an old iterator or AsyncResult must
** not unregister.
*/
void lmp_job_forget(lua_State *L, int pidx, Job *J) {
  lmp_uvfield(L, pidx, J->kind == K_IMAP || J->kind == K_IMAPU ? "ijobs"
                                                              : "jobs");
  if (lmp_rawgeti(L, -1, J->id) == LUA_TUSERDATA &&
      lua_touserdata(L, -1) == (void *)J) {
    lua_pushnil(L);
    lua_rawseti(L, -3, J->id);
  }
  lua_pop(L, 2);
}

void lmp_job_finish(lua_State *L, Job *J, int jidx) {
  Pool *P;
  J->state = J->errindex ? J_FAIL : J_OK;
  J->cbpending = 1;
  lmp_uvfield(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  J->finseq = ++P->finseq;
  /* when its last task ended in its worker, if the reply said (async
     calls), else now: as_completed orders several pools' results by it */
  J->fintime = J->ended > 0 ? J->ended : lmp_realtime();
  lmp_uvfield(L, -1, "finished");
  lua_pushinteger(L, J->id);
  lua_rawseti(L, -2, ++P->ftail);
  lua_pop(L, 2);
}

void lmp_job_seterror(lua_State *L, Job *J, int jidx, lua_Integer index) {
  J->stopped = 1;
  if (J->errindex == 0 || index < J->errindex) {
    J->errindex = index;
    lmp_setuvfield(L, jidx, JV_ERR);
    if (J->kind == K_IMAPU) {
      lmp_uvfield(L, jidx, JV_EVENTS);
      lua_pushinteger(L, -index);      /* negative: the error event */
      lua_rawseti(L, -2, ++J->evtail);
      lua_pop(L, 1);
    }
  } else lua_pop(L, 1);
}

void lmp_job_check(lua_State *L, Job *J, int jidx) {
  if (J->state == J_RUN && J->inflight == 0 && (J->inputdone || J->stopped))
    lmp_job_finish(L, J, jidx);
}

void lmp_job_store(lua_State *L, Job *J, int jidx, lua_Integer index) {
  if (J->kind == K_IMAP || J->kind == K_IMAPU) {
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lmp_pushnilmark(L);
    }
    if (J->kind == K_IMAPU) {
      lmp_uvfield(L, jidx, JV_EVENTS);
      lua_pushinteger(L, index);
      lua_rawseti(L, -2, ++J->evtail);
      lua_pop(L, 1);
    }
  }
  lmp_uvfield(L, jidx, JV_RES);
  lua_insert(L, -2);
  lua_rawseti(L, -2, index);
  lua_pop(L, 1);
}

/*
** An imap's results wait for its consumer: a job with IMAP_AHEAD chunks
** per worker handed out and not yet consumed takes no more input until the
** consumer catches up (unless the pool is joining).  So an iterator taken
** once and dropped stops taking input, and jobs after it still run.
*/
#define IMAP_AHEAD (2 * MAXDEPTH)
int lmp_job_blocked(Pool *P, Job *J) {
  return (J->kind == K_IMAP || J->kind == K_IMAPU) && !P->joining &&
         J->nextin - 1 - J->yielded >=
           J->chunksize * (lua_Integer)P->n * IMAP_AHEAD;
}

int lmp_job_result(lua_State *L, Job *J, int jidx) {
  if (J->state == J_FAIL) {
    lmp_uvfield(L, jidx, JV_ERR);
    return lua_error(L);
  }
  if (J->kind == K_APPLY) {
    int n, i;
    lmp_uvfield(L, jidx, JV_VALUES);
    lmp_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "lmp: too many results");
    for (i = 1; i <= n; i++) lmp_rawgeti(L, -i, i);
    return n;
  }
  lmp_uvfield(L, jidx, JV_RES);
  return 1;
}
/*
** 1 if the Lua function at idx carries no state of its own: each upvalue is
** the globals table, a library value or an object the workers share (all
** of which a worker has its own copy of).  A worker may then keep the
** decoded function for later calls: nothing it could change in it would
** be seen by them.  A nil upvalue is state: the function may assign to it.
*/
static int fn_stateless(lua_State *L, int idx, uint64_t identmax) {
  int i, ok = 1, kidx = 0;
  const void *g;
  idx = lmp_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx)) return 0;
  luaL_checkstack(L, 12, NULL);
  lmp_pushglobals(L);
  g = lua_topointer(L, -1);
  lua_pop(L, 1);
  for (i = 1; ok && lua_getupvalue(L, idx, i) != NULL; i++) {
    int t = lua_type(L, -1);
    const void *p = lua_topointer(L, -1);
    if (t == LUA_TTABLE && p == g) {
      /* the receiver's own */
    } else if (t == LUA_TTABLE || t == LUA_TUSERDATA ||
               (t == LUA_TFUNCTION && lua_iscfunction(L, -1))) {
      if (kidx == 0) {                 /* pushed below the upvalue */
        lmp_libvals_push(L, 0);
        lua_insert(L, -2);
        kidx = lua_gettop(L) - 1;
      }
      ok = lmp_libvals_find((lmp_libvals *)lua_touserdata(L, kidx), p) != 0;
      if (!ok && t != LUA_TFUNCTION && identmax != 0) {
        lua_Integer id = lmp_ident_find(L, -1);
        ok = id != 0 && LMP_IDENT_SEQ(id) <= identmax;
      }
    } else ok = 0;                     /* a value the function could change */
    lua_pop(L, 1);
  }
  if (kidx) lua_pop(L, 1);
  return ok;
}


/* a new Job: the AsyncResult userdata with its user value table */
static Job *job_alloc(lua_State *L, int pidx, const lmp_jobspec *s) {
  Job *J = (Job *)lmp_newud(L, sizeof *J, 1);
  memset(J, 0, sizeof *J);
  luaL_setmetatable(L, LMP_RESULT);
  J->kind = s->kind;
  J->star = s->star;
  J->chunksize = s->chunksize;
  J->nextin = 1;
  lua_createtable(L, 0, 8);
  lua_pushvalue(L, pidx);
  lua_setfield(L, -2, JV_POOL);
  lua_newtable(L);
  lua_setfield(L, -2, JV_RES);
  if (s->kind == K_IMAPU) {
    lua_newtable(L);
    lua_setfield(L, -2, JV_EVENTS);
  }
  if (s->cb && !lua_isnoneornil(L, s->cb)) {
    if (!lmp_iscallable(L, s->cb)) lmp_error(L, "lmp: callback must be a function");
    lua_pushvalue(L, s->cb);
    lua_setfield(L, -2, JV_CB);
  }
  if (s->ecb && !lua_isnoneornil(L, s->ecb)) {
    if (!lmp_iscallable(L, s->ecb))
      lmp_error(L, "lmp: error_callback must be a function");
    lua_pushvalue(L, s->ecb);
    lua_setfield(L, -2, JV_ECB);
  }
  lmp_setuv(L, -2, 1);
  return J;
}

/*
** The function travels once per call.  A stateless one already sent by an
** earlier call keeps that call's id, so the workers that still have it are
** not sent it again.
*/
static void job_function(lua_State *L, Pool *P, int pidx, Job *J, int jidx,
                         int fn) {
  lmp_enc *E = lmp_enc_take(L, P, 0);
  size_t len;
  const char *s;
  lmp_enc_ident(E, P->identmark);
  lmp_enc_begin(E, 1);
  lmp_enc_value(E, fn, "task", -1);
  s = lmp_enc_flatten(E, &len);
  lua_pushlstring(L, s, len);
  lmp_setuvfield(L, jidx, JV_FN);
  lmp_enc_give(L, -1, P);
  J->fnid = J->id;
  if (!fn_stateless(L, fn, P->identmark)) return;
  J->keep = 1;
  lmp_uvfield(L, pidx, "fnids");
  lmp_uvfield(L, jidx, JV_FN);
  if (lmp_rawget(L, -2) == LUA_TNUMBER) {
    J->fnid = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 2);
  if (++P->nfnids > FNCACHE * 4) {     /* older ones are long evicted */
    lmp_getuv(L, pidx, 1);
    lua_newtable(L);
    lua_setfield(L, -2, "fnids");
    lua_pop(L, 1);
    P->nfnids = 1;
  }
  lmp_uvfield(L, pidx, "fnids");
  lmp_uvfield(L, jidx, JV_FN);
  lua_pushinteger(L, J->id);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* a table input: its length, or (a proxy with __index/__len) #t */
static void job_table(lua_State *L, Job *J, int input) {
  int isnum;
  if (lmp_getmetafield(L, input, "__index") == LUA_TNIL &&
      lmp_getmetafield(L, input, "__len") == LUA_TNIL) {
    J->ninput = (lua_Integer)lmp_rawlen(L, input);
    return;
  }
  lua_pop(L, 1);
  J->proxy = 1;
  lmp_len(L, input);
  J->ninput = lua_tointegerx(L, -1, &isnum);
  if (!isnum || J->ninput < 0)
    lmp_error(L, "lmp: iterable's length must be a non-negative integer, "
                 "got %s", lmp_tolstring(L, -1, NULL));
  lua_pop(L, 1);
}

/* a map's input: an array, a proxy or an iterator; chunksize defaults */
static void job_input(lua_State *L, Pool *P, Job *J, int jidx, int input) {
  if (lua_istable(L, input)) job_table(L, J, input);
  else if (lua_isfunction(L, input)) J->iter = 1;
  else lmp_typeerror(L, input, "iterable", "an array or an iterator function");
  lua_pushvalue(L, input);
  lmp_setuvfield(L, jidx, JV_INPUT);
  if (J->kind == K_MAP && !J->iter) {
    /* the results table at its final size: no rehash as chunks come back
       (out of order, often); rawlen bounds what a __len claims */
    lua_Integer raw = (lua_Integer)lmp_rawlen(L, input);
    lua_Integer want = J->ninput < raw ? J->ninput : raw;
    if (want > 0) {
      lua_createtable(L, want < INT_MAX ? (int)want : INT_MAX, 0);
      lmp_setuvfield(L, jidx, JV_RES);
    }
  }
  if (J->chunksize == 0) {
    if (J->kind == K_MAP && !J->iter) {   /* Python's default */
      lua_Integer c = J->ninput / ((lua_Integer)P->n * 4);
      if (J->ninput % ((lua_Integer)P->n * 4)) c++;
      J->chunksize = c < 1 ? 1 : c;
    } else J->chunksize = 1;
  }
}

/* progress reports (pool_sched.c) and the trace's name for the function */
static void job_extras(lua_State *L, Pool *P, int pidx, Job *J, int jidx,
                       const lmp_jobspec *s) {
  if (s->progress != 0) {
    J->progress = s->progress < 0 ? 1 : 2;
    if (s->progress > 0) {
      lua_pushvalue(L, s->progress);
      lmp_setuvfield(L, jidx, JV_PROG);
    }
    lmp_uvfield(L, pidx, "progress");
    lua_pushvalue(L, jidx);
    lua_rawseti(L, -2, J->id);
    lua_pop(L, 1);
    P->nprogress++;
  }
  if (P->trace != NULL) {
    lua_Debug ar;
    lua_pushvalue(L, s->fn);
    if (lua_isfunction(L, -1) && lua_getinfo(L, ">S", &ar))
      lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
    else lua_pushliteral(L, "task");
    lmp_setuvfield(L, jidx, JV_NAME);
  }
}

Job *lmp_job_new(lua_State *L, Pool *P, int pidx, const lmp_jobspec *s) {
  Job *J;
  int jidx;
  pidx = lmp_absindex(L, pidx);
  J = job_alloc(L, pidx, s);
  jidx = lua_gettop(L);
  J->id = new_id(L, P, pidx);
  /* a call's math.huge (-1) lifts the pool's default; nil (0) keeps it */
  J->timeout = s->timeout < 0 ? 0 : s->timeout > 0 ? s->timeout : P->timeout;
  J->stats = s->stats || P->trace != NULL;
  J->begun = lmp_now();
  J->cpu = -1;
  J->maxrss = -1;
  job_function(L, P, pidx, J, jidx, s->fn);
  job_extras(L, P, pidx, J, jidx, s);
  if (s->kind == K_APPLY) {
    if (s->input && !lua_isnoneornil(L, s->input)) {
      if (!lua_istable(L, s->input))
        lmp_typeerror(L, s->input, "args", "a table");
      lua_pushvalue(L, s->input);
    } else lua_createtable(L, 0, 0);
    lmp_setuvfield(L, jidx, JV_VALUES);
    J->ninput = 1;
  } else job_input(L, P, J, jidx, s->input);
  lmp_uvfield(L, pidx, s->kind == K_IMAP || s->kind == K_IMAPU ? "ijobs"
                                                              : "jobs");
  lua_pushvalue(L, jidx);
  lua_rawseti(L, -2, J->id);
  lua_pop(L, 1);
  lmp_uvfield(L, pidx, "order");
  lua_pushinteger(L, J->id);
  lua_rawseti(L, -2, ++P->otail);
  lua_pop(L, 1);
  return J;
}

/* ====================================================================== */
/* tasks                                                                  */
/* ====================================================================== */
void lmp_task_free(Pool *P, int t) {
  Task *k = &P->tasks[t];
  free(k->args);
  k->args = NULL;
  k->job = 0;
  k->next = P->freetask;
  P->freetask = t;
}

/* a free task slot (slot 0 is never used: 0 means none) */
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

void lmp_task_requeue(Pool *P, int t) {
  P->tasks[t].next = 0;
  if (P->requeuetail) P->tasks[P->requeuetail].next = t;
  else P->requeue = t;
  P->requeuetail = t;
}

typedef struct Build {
  Job *J;
  lmp_enc *E;
  lua_Integer taken;    /* items encoded so far */
  size_t goodlen;       /* bytes of those items */
} Build;

/* pushes the next item of the input at index 3, or returns 0 at its end */
static int next_item(lua_State *L, Job *J, lua_Integer index) {
  if (J->kind == K_APPLY) {
    lua_pushvalue(L, 3);
    return 1;
  }
  if (J->iter) {
    lua_pushvalue(L, 3);
    lua_call(L, 0, 1);
  } else if (index > J->ninput) return 0;
  /* a proxy is read as t[i] sees it; its first nil ends the input (a
     __len that claims too much cannot make the job endless) */
  else if (J->proxy) lmp_geti(L, 3, index);
  else {
    lmp_rawgeti(L, 3, index);
    return 1;
  }
  if (!lua_isnil(L, -1)) return 1;
  lua_pop(L, 1);
  J->ninput = index - 1;
  return 0;
}

/*
** Protected: pulls up to chunksize items from the job's input and encodes
** them.  Stack: [B(light), job, input].  An iterator or encoding error
** raises; the caller turns it into the error of item nextin+taken.
*/
static int build_chunk(lua_State *L) {
  Build *B = (Build *)lua_touserdata(L, 1);
  Job *J = B->J;
  lua_Integer i, want = J->kind == K_APPLY ? 1 : J->chunksize;
  int keep = 0;
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
    if (!next_item(L, J, index)) {
      J->inputdone = 1;
      break;
    }
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

/* task t for the B->taken items just encoded */
static void task_fill(lua_State *L, Pool *P, Job *J, Build *B, int t) {
  Task *k = &P->tasks[t];
  size_t len;
  const char *s;
  lmp_enc_count(B->E, (size_t)B->taken);
  s = lmp_enc_flatten(B->E, &len);
  k->job = J->id;
  k->fnid = J->fnid;
  k->start = J->nextin;
  k->count = B->taken;
  k->flags = (J->star ? LMP_TF_STAR : 0) |
             (J->kind == K_APPLY ? LMP_TF_APPLY : 0) |
             (J->keep ? LMP_TF_KEEP : 0) |
             (J->stats ? LMP_TF_STATS : 0) |
             /* a timeout counts per item: the items of a chunk come back
                one by one, so one that runs too long loses no other */
             (J->timeout > 0 && B->taken > 1 ? LMP_TF_STREAM : 0);
  k->timeout = J->timeout;
  k->args = (char *)malloc(len ? len : 1);
  if (k->args == NULL) {
    lmp_task_free(P, t);
    lmp_error(L, "lmp: not enough memory");
  }
  memcpy(k->args, s, len);
  k->argslen = len;
}

/*
** Items that were pulled before an input error still go out; the error
** becomes the error of the item where it happened.
*/
int lmp_job_nexttask(lua_State *L, Pool *P, int jidx) {
  Job *J = (Job *)lua_touserdata(L, jidx);
  Build B;
  int st, t = 0, box;
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
  lmp_uvfield(L, jidx, J->kind == K_APPLY ? JV_VALUES : JV_INPUT);
  P->building = 1;
  st = lua_pcall(L, 3, 0, 0);
  P->building = 0;
  if (st != LUA_OK) {                  /* [box, err] */
    lmp_job_seterror(L, J, jidx, J->nextin + B.taken);
    J->inputdone = 1;
    lmp_enc_truncate(B.E, B.goodlen);  /* the items before the bad one */
  }
  if (B.taken > 0) {
    t = task_new(L, P);
    task_fill(L, P, J, &B, t);
    J->nextin += B.taken;
    J->inflight++;
  }
  lmp_enc_give(L, box, P);
  if (t == 0) lmp_job_check(L, J, jidx);
  return t;
}
