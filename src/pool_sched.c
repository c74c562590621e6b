/*
** pool_sched.c -- the scheduler.  The parent keeps, per worker, the FIFO of the
** tasks it sent: when a worker is lost the first of them is the one that
** was running (it fails with what became of the worker), the others are
** sent again to the other workers, and the slot is filled anew.  The
** scheduler runs only while a pool call runs ("pumping"), so callbacks run
** in the parent during pool calls.
*/
#include "pool_sched.h"

#include <errno.h>
#include <string.h>

#define RESPAWN 0.1   /* seconds between tries to fill an empty slot */

/* ====================================================================== */
/* handing out tasks                                                      */
/* ====================================================================== */
/* appends task t to worker i's channel, with its function if needed */
static void worker_send(lua_State *L, Pool *P, int pidx, int i, int t) {
  Worker *w = &P->w[i];
  Task *k = &P->tasks[t];
  lmp_taskhdr h;
  lmp_buf b = { NULL, 0, 0 };
  int j, inl = 1;
  size_t blen = 0;
  const char *blob = NULL;
  for (j = 0; j < FNCACHE; j++)
    if (w->fn[j] == k->fnid) inl = 0;
  if (inl) {
    lmp_job_push(L, pidx, k->job);
    lmp_uvfield(L, -1, JV_FN);
    blob = lua_tolstring(L, -1, &blen);
    w->fn[w->fnpos] = k->fnid;
    w->fnpos = (w->fnpos + 1) % FNCACHE;
  }
  h.task = (uint32_t)t;
  h.fnid = (uint32_t)k->fnid;
  h.flags = k->flags | (inl ? LMP_TF_INLINE : 0) | (w->flush ? LMP_TF_FLUSH : 0);
  h.start = (uint64_t)k->start;
  w->flush = 0;
  if (lmp_buf_grow(&b, LMP_TASKHDR + LMP_TASK_FNPREFIX + blen + k->argslen))
    lmp_error(L, "lmp: not enough memory");
  lmp_taskhdr_put(b.p, &h);
  b.n = LMP_TASKHDR;
  if (inl) {
    lmp_put64(b.p + b.n, (uint64_t)blen);
    memcpy(b.p + b.n + LMP_TASK_FNPREFIX, blob, blen);
    b.n += LMP_TASK_FNPREFIX + blen;
    lua_pop(L, 2);
  }
  memcpy(b.p + b.n, k->args, k->argslen);
  b.n += k->argslen;
  P->T->ops->send(L, P->T, i, b.p, b.n);
  lmp_buf_free(&b);
  w->sent[w->nq] = lmp_now();
  w->q[w->nq++] = t;
  w->assigned++;
}

static int worker_hasroom(Pool *P, int i, int depth) {
  Worker *w = &P->w[i];
  return P->T->ops->alive(P->T, i) && w->ready && w->nq < depth &&
         (P->maxtasks <= 0 || w->assigned < P->maxtasks) && !w->full;
}

/*
** The next task to send: one to send again (its worker was lost), else
** the next chunk of the first job in submission order that has input left
** and is not held back.  Jobs with nothing left leave the order queue.
*/
static int next_task(lua_State *L, Pool *P, int pidx, Job **job) {
  int t = 0, order;
  lua_Integer k;
  *job = NULL;
  while (P->requeue && t == 0) {
    t = P->requeue;
    P->requeue = P->tasks[t].next;
    if (P->requeue == 0) P->requeuetail = 0;
    if ((*job = lmp_job_push(L, pidx, P->tasks[t].job)) == NULL) {
      lmp_task_free(P, t);             /* its imap was abandoned */
      t = 0;
    }
    lua_pop(L, 1);
  }
  if (t != 0) return t;
  lmp_uvfield(L, pidx, "order");
  order = lua_gettop(L);
  for (k = P->ohead + 1; t == 0 && k <= P->otail; k++) {
    Job *J;
    if (lmp_rawgeti(L, order, k) == LUA_TNIL) {   /* left the queue */
      lua_pop(L, 1);
      continue;
    }
    J = lmp_job_push(L, pidx, (int)lua_tointeger(L, -1));
    if (J != NULL && !J->stopped && !J->inputdone) {
      if (lmp_job_blocked(P, J)) {
        lua_pop(L, 2);
        continue;
      }
      t = lmp_job_nexttask(L, P, lua_gettop(L));
      if (t != 0) *job = J;
    }
    if (J == NULL || J->stopped || J->inputdone) {
      lua_pushnil(L);                  /* nothing left to send: it leaves */
      lua_rawseti(L, order, k);
    }
    lua_pop(L, 2);
  }
  while (P->ohead < P->otail) {        /* the queue starts at a live entry */
    int live = lmp_rawgeti(L, order, P->ohead + 1) != LUA_TNIL;
    lua_pop(L, 1);
    if (live) break;
    P->ohead++;
  }
  lua_pop(L, 1);
  return t;
}

/*
** Hands out work to the workers with room: up to `depth` tasks each, round
** by round, so idle workers get work before busy ones get more.  A worker
** whose channel did not take what it was given gets no more: what waits
** in the parent is what it could still give another.
*/
static void dispatch(lua_State *L, Pool *P, int pidx, int depth) {
  int i, level, t = 1;
  Job *J;
  for (i = 0; i < P->n; i++) P->w[i].full = P->T->ops->backlog(P->T, i);
  for (level = 1; t != 0 && level <= depth; level++) {
    for (i = 0; i < P->n; i++) {
      if (!worker_hasroom(P, i, depth) || P->w[i].nq >= level) continue;
      if ((t = next_task(L, P, pidx, &J)) == 0) break;
      if (J->stats) J->pid = P->T->ops->ident(P->T, i);  /* info() now */
      worker_send(L, P, pidx, i, t);
    }
  }
}

/* ====================================================================== */
/* replies                                                                */
/* ====================================================================== */
typedef struct Reply {
  lua_Integer start;    /* a copy: user code may grow P->tasks meanwhile */
  int status;
  const char *p;        /* the value message */
  size_t n;
  double timedout;      /* the task was cancelled for running past this */
  const char *where;    /* where it ran (transport.h), or NULL */
} Reply;

/*
** A task's error from a worker the pool cannot kill: one it cancelled
** for its timeout says so, as a killed worker's would; a string error
** says where it was raised, before its traceback.  The error is on top.
*/
static void reply_errtext(lua_State *L, const Reply *R) {
  const char *s, *tb;
  if (R->timedout > 0) {
    lua_pop(L, 1);
    lua_pushfstring(L, "lmp: task timed out after %f s",
                    (lua_Number)R->timedout);
    return;
  }
  if (R->where == NULL || lua_type(L, -1) != LUA_TSTRING) return;
  s = lua_tostring(L, -1);
  tb = strstr(s, "\nstack traceback:");
  if (tb == NULL) tb = s + strlen(s);
  lua_pushlstring(L, s, (size_t)(tb - s));
  lua_pushfstring(L, "\n(%s)%s", R->where, tb);
  lua_concat(L, 2);
  lua_remove(L, -2);
}

/* an error reply: [error, failed position, results before it...] */
static void reply_error(lua_State *L, lmp_dec *D, size_t n, Job *J,
                        Reply *R) {
  lua_Integer idx;
  size_t i;
  if (n < 2) lmp_error(L, "lmp: malformed reply from a worker");
  lmp_dec_value(D);                    /* err */
  reply_errtext(L, R);
  lmp_dec_value(D);                    /* failed position in the chunk */
  idx = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (idx < 1) idx = 1;
  /* the results that come with it are those of the items right before it
     (a streamed task sent the earlier ones already) */
  for (i = 2; i < n; i++) {
    lmp_dec_value(D);
    lmp_job_store(L, J, 2,
                  R->start + idx - 1 - (lua_Integer)(n - 2) + (lua_Integer)i - 2);
  }
  lua_pushvalue(L, -1);
  lua_remove(L, -2);
  lmp_job_seterror(L, J, 2, R->start + idx - 1);
}

/*
** Protected: decodes a reply's values into its job.  Stack: [R, job].  A
** failure here (a __deserialize that raises, say) becomes the error of the
** task's first item; the bookkeeping is the caller's, so it always happens.
*/
static int reply_decode(lua_State *L) {
  Reply *R = (Reply *)lua_touserdata(L, 1);
  Job *J = (Job *)lua_touserdata(L, 2);
  lmp_dec D;
  size_t n, i;
  n = lmp_dec_begin(&D, L, R->p, R->n, LMP_DEC_TRUSTED);
  if (R->status != LMP_RS_OK) reply_error(L, &D, n, J, R);
  else if (J->kind == K_APPLY) {
    lua_createtable(L, (int)(n < 1000000 ? n : 1000000), 1);
    for (i = 1; i <= n; i++) {
      lmp_dec_value(&D);
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "n");
    lmp_setuvfield(L, 2, JV_VALUES);
  } else if (J->kind == K_IMAP || J->kind == K_IMAPU) {
    for (i = 0; i < n; i++) {
      lmp_dec_value(&D);
      lmp_job_store(L, J, 2, R->start + (lua_Integer)i);
    }
  } else {                             /* map: straight into its results */
    int res;
    lmp_uvfield(L, 2, JV_RES);
    res = lua_gettop(L);
    for (i = 0; i < n; i++) {
      lmp_dec_value(&D);
      lua_rawseti(L, res, R->start + (lua_Integer)i);
    }
    lua_pop(L, 1);
  }
  lmp_dec_end(&D);
  return 0;
}

/* protected: the initializer's error */
static int reply_initerr(lua_State *L) {
  Reply *R = (Reply *)lua_touserdata(L, 1);
  lmp_dec D;
  if (lmp_dec_begin(&D, L, R->p, R->n, LMP_DEC_TRUSTED) < 1)
    lmp_error(L, "lmp: malformed reply from a worker");
  lmp_dec_value(&D);
  return 1;
}

/* the pool cannot run: `initerror` (the error on top, popped) says why */
static void pool_broken(lua_State *L, Pool *P, int pidx) {
  P->broken = 1;
  lmp_setuvfield(L, pidx, "initerror");
}

/* the task started when it was sent or when the worker finished the one
   before, whichever came last: the queue depth follows its run time */
static void task_timed(Pool *P, Worker *w) {
  double now = lmp_now(), d;
  double began = w->sent[0] > w->lastreply ? w->sent[0] : w->lastreply;
  P->tasktime = 0.8 * P->tasktime + 0.2 * (now - began);
  d = QUEUED / (P->tasktime > 1e-9 ? P->tasktime : 1e-9);
  P->depth = d > MAXDEPTH ? MAXDEPTH : (d < MINDEPTH ? MINDEPTH : (int)d);
  w->lastreply = now;
}

/* protected: one streamed item: [position, value].  Stack: [R, job] */
static int reply_item(lua_State *L) {
  Reply *R = (Reply *)lua_touserdata(L, 1);
  Job *J = (Job *)lua_touserdata(L, 2);
  lmp_dec D;
  lua_Integer pos;
  if (lmp_dec_begin(&D, L, R->p, R->n, LMP_DEC_TRUSTED) != 2)
    lmp_error(L, "lmp: malformed reply from a pool worker");
  lmp_dec_value(&D);
  pos = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lmp_dec_value(&D);
  lmp_dec_end(&D);                     /* [R, job, value] */
  if (J->kind == K_MAP) {
    lmp_uvfield(L, 2, JV_RES);
    lua_insert(L, -2);
    lua_rawseti(L, -2, R->start + pos - 1);
    lua_pop(L, 1);
  } else lmp_job_store(L, J, 2, R->start + pos - 1);
  return 0;
}

/* what a final reply said of its task: the job's info() and the trace */
static void task_done(lua_State *L, Pool *P, int i, Job *J, int jidx,
                      const lmp_replystats *st, Task *k, size_t replylen,
                      int failed) {
  J->pid = P->T->ops->ident(P->T, i);
  if (J->started == 0 || st->started < J->started) J->started = st->started;
  if (st->ended > J->ended) J->ended = st->ended;
  if (st->cpu >= 0) J->cpu = (J->cpu < 0 ? 0 : J->cpu) + st->cpu;
  if (st->maxrss > J->maxrss) J->maxrss = st->maxrss;
  if (P->trace != NULL) {
    int top = lua_gettop(L);
    const char *msg = NULL;            /* the error, if it is this task's */
    if (failed && J->errindex >= k->start &&
        J->errindex < k->start + k->count &&
        lmp_uvfield(L, jidx, JV_ERR) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    lmp_trace_task(L, P->trace, jidx, J->pid, st, k->count, k->argslen,
                   replylen, failed, msg);
    lua_settop(L, top);
  }
}

/* one reply frame from worker i */
static void reply_handle(lua_State *L, Pool *P, int pidx, int i,
                         const char *p, size_t n) {
  Worker *w = &P->w[i];
  Reply R;
  uint32_t t;
  Job *J;
  lmp_replystats st;
  if (lmp_replyhdr_get(p, n, &t, &R.status) != 0)
    lmp_error(L, "lmp: malformed reply from a pool worker");
  R.p = p + LMP_REPLYHDR;
  R.n = n - LMP_REPLYHDR;
  R.timedout = 0;
  R.where = P->T->ops->where != NULL ? P->T->ops->where(P->T, i) : NULL;
  if (R.status == LMP_RS_OK || R.status == LMP_RS_ERR) {
    if (R.n < LMP_REPLYSTATS)
      lmp_error(L, "lmp: malformed reply from a pool worker");
    lmp_replystats_get(R.p, &st);
    R.p += LMP_REPLYSTATS;
    R.n -= LMP_REPLYSTATS;
  }
  if (R.status == LMP_RS_ITEM) {       /* one item of the running task */
    if (w->nq == 0 || w->q[0] != (int)t)
      lmp_error(L, "lmp: a pool worker answered a task it was not given");
    R.start = P->tasks[t].start;
    w->itemsdone++;
    w->itemstart = lmp_now();
    J = lmp_job_push(L, pidx, P->tasks[t].job);
    if (J != NULL) {
      int jidx = lua_gettop(L);
      lua_pushcfunction(L, reply_item);
      lua_pushlightuserdata(L, &R);
      lua_pushvalue(L, jidx);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        lmp_job_seterror(L, J, jidx, R.start + w->itemsdone - 1);
      else J->done++;
    }
    lua_pop(L, 1);
    return;
  }
  if (t == 0) {                        /* READY, or the initializer failed */
    if (R.status == LMP_RS_READY) {
      w->ready = 1;
      return;
    }
    lua_pushcfunction(L, reply_initerr);
    lua_pushlightuserdata(L, &R);
    lua_pcall(L, 1, 1, 0);             /* the error, or why it can't be read */
    pool_broken(L, P, pidx);
    return;
  }
  if (w->nq == 0 || w->q[0] != (int)t)
    lmp_error(L, "lmp: a pool worker answered a task it was not given");
  R.timedout = w->timedout;            /* cancelled, and it survived */
  w->timedout = 0;
  task_timed(P, w);
  memmove(w->q, w->q + 1, (size_t)(--w->nq) * sizeof w->q[0]);
  memmove(w->sent, w->sent + 1, (size_t)w->nq * sizeof w->sent[0]);
  R.start = P->tasks[t].start;
  J = lmp_job_push(L, pidx, P->tasks[t].job);
  if (J != NULL) {                     /* NULL: an abandoned imap */
    int jidx = lua_gettop(L);
    lua_Integer count = P->tasks[t].count - w->itemsdone;
    int ok;
    lua_pushcfunction(L, reply_decode);
    lua_pushlightuserdata(L, &R);
    lua_pushvalue(L, jidx);
    ok = lua_pcall(L, 2, 0, 0) == LUA_OK;
    if (!ok) lmp_job_seterror(L, J, jidx, R.start);
    else if (R.status == LMP_RS_OK) J->done += count;
    task_done(L, P, i, J, jidx, &st, &P->tasks[t], n,
              !ok || R.status != LMP_RS_OK);
    J->inflight--;
    lmp_job_check(L, J, jidx);
  }
  lua_pop(L, 1);
  w->itemsdone = 0;
  lmp_task_free(P, (int)t);
}

/* the error on top (popped) fails items from `index` of job `job` */
static void fail_items(lua_State *L, int pidx, int job, lua_Integer index) {
  Job *J = lmp_job_push(L, pidx, job);
  if (J == NULL) {
    lua_pop(L, 2);
    return;
  }
  lua_insert(L, -2);
  lmp_job_seterror(L, J, lua_gettop(L) - 1, index);
  J->inflight--;
  lmp_job_check(L, J, lua_gettop(L));
  lua_pop(L, 1);
}

static double item_began(Worker *w);

/* the trace's slice of the task worker i was running when it was lost */
static void trace_dead(lua_State *L, Pool *P, int pidx, Worker *w,
                       lua_Integer who, int t, const char *what) {
  lmp_replystats st;
  double now = lmp_now();
  if (lmp_job_push(L, pidx, P->tasks[t].job) != NULL) {
    st.ended = lmp_realtime();
    st.started = st.ended - (now - item_began(w));
    st.cpu = -1;
    st.maxrss = -1;
    lmp_trace_task(L, P->trace, lua_gettop(L), who, &st, P->tasks[t].count,
                   P->tasks[t].argslen, 0, 1,
                   w->timedout > 0 ? "timed out" : what);
  }
  lua_pop(L, 1);
}

/*
** Worker i is gone: the task it was running fails with what became of it,
** the others go to the other workers, and the slot is filled again.
*/
static void worker_lost(lua_State *L, Pool *P, int pidx, int i) {
  Worker *w = &P->w[i];
  int k;
  lua_Integer who = P->T->ops->ident(P->T, i);
  P->T->ops->lost(L, P->T, i);         /* [what] */
  if (P->trace != NULL)
    lmp_trace_worker(P->trace, who, "worker lost", lua_tostring(L, -1));
  if (!w->ready && !P->broken) {       /* its initializer killed it */
    lua_pushfstring(L, "lmp: %s while running the initializer",
                    lua_tostring(L, -1));
    pool_broken(L, P, pidx);
  }
  for (k = 0; k < w->nq; k++) {
    int t = w->q[k];
    if (k == 0) {
      if (P->trace != NULL) trace_dead(L, P, pidx, w, who, t, lua_tostring(L, -1));
      /* the item it was running (a streamed task's earlier items are in) */
      if (w->timedout > 0)
        lua_pushfstring(L, "lmp: task timed out after %f s",
                        (lua_Number)w->timedout);
      else lua_pushfstring(L, "lmp: %s while running a task",
                           lua_tostring(L, -1));
      fail_items(L, pidx, P->tasks[t].job, P->tasks[t].start + w->itemsdone);
      lmp_task_free(P, t);
    } else lmp_task_requeue(P, t);
  }
  lua_pop(L, 1);
  memset(w, 0, sizeof *w);
  if (P->T->fixed) return;             /* an MPI rank: its slot stays empty */
  P->nempty++;
  lmp_pool_respawn(L, P, pidx);
}

/* takes every frame that arrived, and every loss */
static void collect(lua_State *L, Pool *P, int pidx) {
  lmp_transport *T = P->T;
  int i;
  for (i = 0; i < P->n; i++) {
    const char *p;
    size_t n;
    while (T->ops->alive(T, i) && T->ops->recv(T, i, &p, &n))
      reply_handle(L, P, pidx, i, p, n);
    if (T->ops->gone(T, i)) worker_lost(L, P, pidx, i);
  }
}

/* ====================================================================== */
/* ending jobs                                                            */
/* ====================================================================== */
/* fails everything still running (terminate, broken pool, interrupt) */
static void fail_all(lua_State *L, Pool *P, int pidx, const char *why) {
  int i;
  for (i = 0; i < P->n; i++) P->w[i].nq = 0;
  P->requeue = P->requeuetail = 0;
  for (i = 1; i < P->ntasks; i++)
    if (P->tasks[i].job) lmp_task_free(P, i);
  for (i = 0; i < 2; i++) {
    lmp_uvfield(L, pidx, i ? "ijobs" : "jobs");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      Job *J = (Job *)lua_touserdata(L, -1);
      if (J->state == J_RUN) {
        int t = lmp_uvfield(L, pidx, "initerror");
        if (t == LUA_TNIL) {
          lua_pop(L, 1);
          lua_pushstring(L, why);
        } else if (t == LUA_TSTRING) { /* said where it comes from */
          lua_pushfstring(L, "lmp: pool initializer failed in a replacement "
                             "worker: %s", lua_tostring(L, -1));
          lua_remove(L, -2);
        }
        J->inflight = 0;
        J->inputdone = 1;
        /* every item not handed out yet fails */
        lmp_job_seterror(L, J, lua_gettop(L) - 1,
                         J->kind == K_IMAP ? J->yielded + 1 : 1);
        lmp_job_finish(L, J, lua_gettop(L));
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/* calls a finished job's callback (at jidx), if it has one */
static void job_callback(lua_State *L, Job *J, int jidx) {
  int n = 1;
  if (J->state != J_OK) {
    if (lmp_uvfield(L, jidx, JV_ECB) == LUA_TNIL) return;
    lmp_uvfield(L, jidx, JV_ERR);
  } else {
    if (lmp_uvfield(L, jidx, JV_CB) == LUA_TNIL) return;
    if (J->kind == K_APPLY) {
      int a;
      lmp_uvfield(L, jidx, JV_VALUES);
      lmp_getfield(L, -1, "n");
      n = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
      luaL_checkstack(L, n + 2, NULL);
      for (a = 1; a <= n; a++) lmp_rawgeti(L, -a, a);
      lua_remove(L, -n - 1);
    } else lmp_uvfield(L, jidx, JV_RES);
  }
  lua_call(L, n, 0);
}

/*
** Runs the callbacks of the jobs that finished, in the order they did, and
** lets the pool forget them (their AsyncResult keeps the outcome; imap
** jobs are forgotten by their iterator).  A callback's error is raised.
*/
static void run_callbacks(lua_State *L, Pool *P, int pidx) {
  int fin, jobs;
  if (P->fhead == P->ftail) return;
  lmp_uvfield(L, pidx, "finished");
  fin = lua_gettop(L);
  lmp_uvfield(L, pidx, "jobs");
  jobs = fin + 1;
  while (P->fhead < P->ftail) {
    Job *J;
    int id;
    lmp_rawgeti(L, fin, ++P->fhead);
    id = (int)lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, fin, P->fhead);
    lmp_rawgeti(L, jobs, id);
    J = (Job *)lua_touserdata(L, -1);
    if (J != NULL && J->cbpending) {
      J->cbpending = 0;
      if (J->kind != K_IMAP && J->kind != K_IMAPU) {
        lua_pushnil(L);
        lua_rawseti(L, jobs, id);
      }
      job_callback(L, J, lua_gettop(L));
    }
    lua_settop(L, jobs);
  }
  lua_settop(L, fin - 1);
}

/* ====================================================================== */
/* the pump                                                               */
/* ====================================================================== */
static void pool_interrupted(lua_State *L, Pool *P, int pidx) {
  lmp_pool_stop(L, P, pidx, LMP_STOP_KILL, "lmp: interrupted");
  lmp_error(L, "lmp: interrupted");
}

/* no worker is left to finish anything */
static void no_workers(lua_State *L, Pool *P, int pidx) {
  if (P->T->err[0])
    lua_pushfstring(L, "lmp: the pool has no workers (%s)", P->T->err);
  else lua_pushliteral(L, "lmp: the pool has no workers");
  fail_all(L, P, pidx, lua_tostring(L, -1));
  lua_pop(L, 1);
}

static int any_alive(Pool *P) {
  int i;
  for (i = 0; i < P->n; i++)
    if (P->T->ops->alive(P->T, i)) return 1;
  return 0;
}

/* when worker i's current item began: after the item before it came
   back, the task before it came back, or it was sent */
static double item_began(Worker *w) {
  double t = w->sent[0] > w->lastreply ? w->sent[0] : w->lastreply;
  return w->itemsdone > 0 && w->itemstart > t ? w->itemstart : t;
}

/*
** Kills the workers whose current item ran past its task's timeout (their
** loss, seen next, fails that item with "timed out"); returns the next
** deadline such an item has, or `deadline` if that comes first.
*/
static double expire(Pool *P, double deadline) {
  double now = lmp_now();
  int i;
  for (i = 0; i < P->n; i++) {
    Worker *w = &P->w[i];
    Task *k;
    double end;
    if (w->nq == 0 || w->timedout > 0) continue;
    k = &P->tasks[w->q[0]];
    if (k->timeout <= 0) continue;
    end = item_began(w) + k->timeout;
    if (end <= now) {
      w->timedout = k->timeout;
      P->T->ops->cancel(P->T, i, (uint32_t)w->q[0]);
    } else if (deadline < 0 || end < deadline) deadline = end;
  }
  return deadline;
}

int lmp_pool_pump(lua_State *L, Pool *P, int pidx, lmp_donefn done, void *ud,
                  double deadline) {
  lmp_hook h;
  lmp_hook_save(L, &h);
  for (;;) {
    int r;
    double until;
    lmp_pool_respawn(L, P, pidx);
    dispatch(L, P, pidx, P->depth);
    if (P->nprogress > 0) lmp_progress_report(L, P, pidx, 0);
    run_callbacks(L, P, pidx);
    if (P->broken) fail_all(L, P, pidx, "lmp: the pool's initializer failed");
    if (done(L, P, pidx, ud)) return 1;
    if (!any_alive(P)) {               /* nothing can ever finish */
      no_workers(L, P, pidx);
      return done(L, P, pidx, ud);
    }
    until = expire(P, deadline);
    r = P->T->ops->wait(L, P->T, &h, until);
    if (r == -2) pool_interrupted(L, P, pidx);
    if (r < 0) lmp_syserror(L, "poll");
    if (r == 0 && until == deadline) return 0;
    collect(L, P, pidx);
  }
}

/*
** A submit hands out work at once.  An async call (apply_async, submit,
** map_async, starmap_async) gives each worker up to MAXDEPTH tasks (as
** many as its channel takes), so they work on while the parent does
** something else.  An imap, whose consumer pumps the pool as it iterates,
** gives each worker the pool's current depth only (one task while task
** times are long or unknown): a task handed out stays on its worker, so
** queueing uneven tasks round-robin would keep a free worker idle while
** another has a queue.  It neither waits nor
** reads replies (so it runs no callback, whose error would be raised by
** the call that made a new job and lose its AsyncResult; and a worker
** that exits stays for mp.wait to see).  Polls (ready, successful,
** wait(0)) pump with a deadline of now instead: they take in what came
** back and run callbacks, without waiting.
*/
void lmp_pool_submitted(lua_State *L, Pool *P, int pidx, int async) {
  dispatch(L, P, pidx, async ? MAXDEPTH : P->depth);
  P->T->ops->flush(P->T);
}

static int done_never(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)L;
  (void)P;
  (void)pidx;
  (void)ud;
  return 0;
}

void lmp_pool_poll(lua_State *L, Pool *P, int pidx) {
  lmp_pool_pump(L, P, pidx, done_never, NULL, lmp_now());
}

int lmp_done_job(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)L;
  (void)P;
  (void)pidx;
  return ((Job *)ud)->state != J_RUN;
}

int lmp_done_all(lua_State *L, Pool *P, int pidx, void *ud) {
  int running = 0, i;
  (void)P;
  (void)ud;
  for (i = 0; i < 2 && !running; i++) {
    lmp_uvfield(L, pidx, i ? "ijobs" : "jobs");
    lua_pushnil(L);
    while (!running && lua_next(L, -2)) {
      running = ((Job *)lua_touserdata(L, -1))->state == J_RUN;
      lua_pop(L, 1);
    }
    lua_pop(L, running ? 2 : 1);
  }
  return !running;
}

int lmp_imap_waiting(lua_State *L, Pool *P, int pidx) {
  int found = 0;
  lmp_uvfield(L, pidx, "ijobs");
  lua_pushnil(L);
  while (!found && lua_next(L, -2)) {
    Job *J = (Job *)lua_touserdata(L, -1);
    found = J->state == J_RUN && !J->stopped && !J->inputdone &&
            lmp_job_blocked(P, J);
    lua_pop(L, 1);
  }
  lua_pop(L, found ? 2 : 1);
  return found;
}

/* ====================================================================== */
/* workers come and go                                                    */
/* ====================================================================== */
/*
** Fills the empty slots of a pool still at work (a worker died and could
** not be replaced then: processes or fds were short).  A failure is tried
** again at most every RESPAWN seconds.
*/
int lmp_pool_respawn(lua_State *L, Pool *P, int pidx) {
  int i;
  (void)pidx;
  if (P->state == P_TERM || P->broken || P->nempty == 0) return 0;
  if (P->respawnat > 0 && lmp_now() < P->respawnat) return 0;
  for (i = 0; i < P->n; i++) {
    if (P->T->ops->alive(P->T, i)) continue;
    if (P->T->ops->start(L, P->T, i) != 0) {
      P->respawnat = lmp_now() + RESPAWN;
      return -1;
    }
    if (P->trace != NULL)
      lmp_trace_worker(P->trace, P->T->ops->ident(P->T, i), "worker started",
                       "a replacement");
    memset(&P->w[i], 0, sizeof P->w[i]);
    P->nempty--;
  }
  P->respawnat = 0;
  return 0;
}

static int done_ready(lua_State *L, Pool *P, int pidx, void *ud) {
  int i;
  (void)L;
  (void)pidx;
  (void)ud;
  if (P->broken) return 1;
  for (i = 0; i < P->n; i++)
    if (P->T->ops->alive(P->T, i) && !P->w[i].ready) return 0;
  return 1;
}

int lmp_pool_waitready(lua_State *L, Pool *P, int pidx) {
  lmp_pool_pump(L, P, pidx, done_ready, NULL, -1);
  return P->broken ? -1 : 0;
}

void lmp_pool_stop(lua_State *L, Pool *P, int pidx, int how,
                   const char *why) {
  P->state = P_TERM;
  P->T->ops->stopall(L, P->T, how);
  fail_all(L, P, pidx, why);
}
