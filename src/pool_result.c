/*
** pool_result.c -- AsyncResult and imap iterators.  Waiting on one moves its
** pool along (pool_sched.c); polling one (ready, successful, wait(0)) does too,
** without waiting, so a loop that only polls ends.
*/
#include "pool_result.h"

#include <stdlib.h>
#include <unistd.h>

/*
** Deadline now: one step that does not wait.  Callbacks of finished jobs
** run on the way, so by the time a result is handed out its callback ran.
*/
void lmp_job_wait(lua_State *L, Job *J, int jidx, double deadline,
                  int raise) {
  Pool *P;
  lmp_uvfield(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (P->owner != getpid()) {
    if (J->state == J_RUN)
      lmp_error(L, "lmp: this AsyncResult belongs to process %d",
                (int)P->owner);
  } else if (!lmp_pool_pump(L, P, lua_gettop(L), lmp_done_job, J, deadline) &&
             raise)
    lmp_error(L, "lmp: timeout");
  lua_pop(L, 1);
}

static Job *checkjob(lua_State *L) {
  return (Job *)lmp_checkudata(L, 1, LMP_RESULT, "AsyncResult");
}

static int res_get(lua_State *L) {
  Job *J = checkjob(L);
  double dl = lmp_optdeadline(L, 2);
  if (J->kind == K_IMAP || J->kind == K_IMAPU)
    return lmp_error(L, "lmp: use the iterator");
  lmp_job_wait(L, J, 1, dl, 1);
  return lmp_job_result(L, J, 1);
}

static int res_wait(lua_State *L) {
  Job *J = checkjob(L);
  lmp_job_wait(L, J, 1, lmp_optdeadline(L, 2), 0);
  lua_pushboolean(L, J->state != J_RUN);
  return 1;
}

static int res_ready(lua_State *L) {
  Job *J = checkjob(L);
  lmp_job_wait(L, J, 1, lmp_now(), 0);
  lua_pushboolean(L, J->state != J_RUN);
  return 1;
}

static int res_successful(lua_State *L) {
  Job *J = checkjob(L);
  lmp_job_wait(L, J, 1, lmp_now(), 0);
  if (J->state == J_RUN) return lmp_error(L, "lmp: result is not ready");
  lua_pushboolean(L, J->state == J_OK);
  return 1;
}

/*
** Takes back a job no worker has any part of yet (nothing of its input was
** handed out): it ends as failed with "lmp: cancelled", and no callback
** runs.  A submit hands tasks out at once while workers have room, so only
** work queued behind a busy pool can still be taken back.
*/
static int res_cancel(lua_State *L) {
  Job *J = checkjob(L);
  Pool *P;
  lmp_uvfield(L, 1, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (P->owner != getpid())
    return lmp_error(L, "lmp: this AsyncResult belongs to process %d",
                     (int)P->owner);
  if (J->state != J_RUN || J->inflight > 0 || J->nextin > 1) {
    lua_pushboolean(L, 0);
    return 1;
  }
  J->stopped = 1;
  J->inputdone = 1;
  J->closed = 1;
  lua_pushliteral(L, "lmp: cancelled");
  lmp_job_seterror(L, J, 1, 1);
  lmp_job_finish(L, J, 1);
  J->cbpending = 0;
  lua_pushboolean(L, 1);
  return 1;
}

/* {pid=, started=, ended=, cpu=, maxrss=}: what is known so far */
static int res_info(lua_State *L) {
  Job *J = checkjob(L);
  lua_createtable(L, 0, 5);
  if (J->pid != 0) {
    lua_pushinteger(L, J->pid);
    lua_setfield(L, -2, "pid");
  }
  if (J->started > 0) {
    lua_pushnumber(L, (lua_Number)J->started);
    lua_setfield(L, -2, "started");
  }
  if (J->ended > 0 && J->state != J_RUN) {
    lua_pushnumber(L, (lua_Number)J->ended);
    lua_setfield(L, -2, "ended");
  }
  if (J->cpu >= 0) {
    lua_pushnumber(L, (lua_Number)J->cpu);
    lua_setfield(L, -2, "cpu");
  }
  if (J->maxrss >= 0) {
    lua_pushinteger(L, J->maxrss);
    lua_setfield(L, -2, "maxrss");
  }
  return 1;
}

/* ---------------------------------------------------------------------- */
/* mp.as_completed                                                        */
/* ---------------------------------------------------------------------- */
typedef struct Ask {
  int rest;             /* stack index of the results not handed out, dense */
  lua_Integer n;        /* how many */
} Ask;

/* is one of them finished, or none left running? */
static int ask_any(lua_State *L, const Ask *a) {
  lua_Integer i;
  for (i = 1; i <= a->n; i++) {
    Job *J;
    lmp_rawgeti(L, a->rest, i);
    J = (Job *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (J->state != J_RUN) return 1;
  }
  return a->n == 0;
}

static int done_any(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)P;
  (void)pidx;
  return ask_any(L, (const Ask *)ud);
}

typedef struct Done {
  double when;          /* finishing times order results of several pools */
  unsigned long seq;    /* ... and the pool's own count breaks ties */
  lua_Integer at;
} Done;

static int by_seq(const void *x, const void *y) {
  const Done *a = (const Done *)x, *b = (const Done *)y;
  if (a->when != b->when) return a->when < b->when ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/*
** Moves every finished result out of the rest (which stays dense) and
** pushes them as an array in the order they finished.  Taking them all at
** once keeps as_completed linear: handing out one at a time, each found by
** a scan of the rest, was quadratic (20,000 results took 5 s).
*/
static void ask_take(lua_State *L, Ask *a) {
  lua_Integer i, k = 0, m = 0;
  int batch;
  Done *d;
  lua_newtable(L);
  batch = lua_gettop(L);
  for (i = 1; i <= a->n; i++) {
    lmp_rawgeti(L, a->rest, i);
    if (((Job *)lua_touserdata(L, -1))->state != J_RUN)
      lua_rawseti(L, batch, ++k);
    else
      lua_rawseti(L, a->rest, ++m);    /* m < i: nothing is overwritten */
  }
  for (i = m + 1; i <= a->n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, a->rest, i);
  }
  a->n = m;
  d = (Done *)lua_newuserdatauv(L, (size_t)k * sizeof *d + 1, 0);
  for (i = 0; i < k; i++) {
    lmp_rawgeti(L, batch, i + 1);
    d[i].when = ((Job *)lua_touserdata(L, -1))->fintime;
    d[i].seq = ((Job *)lua_touserdata(L, -1))->finseq;
    d[i].at = i + 1;
    lua_pop(L, 1);
  }
  qsort(d, (size_t)k, sizeof *d, by_seq);
  lua_createtable(L, k < 1000000 ? (int)k : 0, 0);
  for (i = 0; i < k; i++) {
    lmp_rawgeti(L, batch, d[i].at);
    lua_rawseti(L, -2, i + 1);
  }
  lua_replace(L, batch);
  lua_settop(L, batch);
}

/*
** Moves every pool the pending results belong to along: the one pool
** waits (its pump's own wait); several are stepped in turn, sleeping a
** little between rounds (a millisecond, growing to 20).
*/
static void ask_wait(lua_State *L, Ask *a, double deadline) {
  lua_Integer i;
  int npools = 0, ms = 1;
  Pool *one = NULL;
  lmp_hook h;
  lua_newtable(L);                     /* the pools, as a set */
  for (i = 1; i <= a->n; i++) {
    lmp_rawgeti(L, a->rest, i);
    lmp_uvfield(L, -1, JV_POOL);
    if (((Pool *)lua_touserdata(L, -1))->owner != getpid())
      lmp_error(L, "lmp: this AsyncResult belongs to process %d",
                (int)((Pool *)lua_touserdata(L, -1))->owner);
    if (lmp_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lmp_uvfield(L, -1, JV_POOL);
      one = (Pool *)lua_touserdata(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, -4);
      npools++;
    } else lua_pop(L, 1);
    lua_pop(L, 1);
  }
  if (npools == 1) {
    lua_pushnil(L);
    lua_next(L, -2);                   /* [set, pool, true] */
    lua_pop(L, 1);
    if (!lmp_pool_pump(L, one, lua_gettop(L), done_any, a, deadline))
      lmp_error(L, "lmp: timeout");
    lua_pop(L, 2);
    return;
  }
  lmp_hook_save(L, &h);                /* Ctrl-C between the pools' polls */
  while (!ask_any(L, a)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      lmp_pool_poll(L, (Pool *)lua_touserdata(L, -1), lua_gettop(L));
    }
    if (ask_any(L, a)) break;
    if (deadline >= 0 && lmp_now() >= deadline) lmp_error(L, "lmp: timeout");
    lmp_sleep_ms(ms);
    if (ms < 20) ms *= 2;
    if (lmp_hook_changed(&h)) {        /* each pool stops, as one would */
      lmp_hook_restore(&h);
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lmp_pool_stop(L, (Pool *)lua_touserdata(L, -1), lua_gettop(L),
                      LMP_STOP_KILL, "lmp: interrupted");
      }
      lmp_error(L, "lmp: interrupted");
    }
  }
  lua_pop(L, 1);
}

/* upvalues: the results not handed out, those finished and not yet handed
   out (in the order they finished), the deadline, the next of those */
static int ask_iter(lua_State *L) {
  Ask a;
  lua_Integer head = lua_tointeger(L, lua_upvalueindex(4));
  double deadline = lua_tonumber(L, lua_upvalueindex(3));
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  if (lmp_rawgeti(L, 1, head) == LUA_TNIL) {
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    a.rest = 1;
    a.n = (lua_Integer)lmp_rawlen(L, 1);
    if (a.n == 0) {
      lua_pushnil(L);
      return 1;
    }
    if (!ask_any(L, &a)) ask_wait(L, &a, deadline);
    ask_take(L, &a);
    lua_pushvalue(L, -1);
    lua_replace(L, lua_upvalueindex(2));
    head = 1;
    lmp_rawgeti(L, -1, head);
  }
  lua_pushinteger(L, head + 1);
  lua_replace(L, lua_upvalueindex(4));
  return 1;
}

/* mp.as_completed(results [, timeout]): the results as they finish */
static int mp_as_completed(lua_State *L) {
  lua_Integer i, n;
  double deadline = lmp_optdeadline(L, 2);
  if (!lua_istable(L, 1)) lmp_typeerror(L, 1, "results", "an array of AsyncResults");
  n = (lua_Integer)lmp_rawlen(L, 1);
  lua_createtable(L, (int)(n < 1000000 ? n : 0), 0);
  for (i = 1; i <= n; i++) {
    lmp_rawgeti(L, 1, i);
    if (luaL_testudata(L, -1, LMP_RESULT) == NULL)
      lmp_error(L, "lmp: as_completed takes AsyncResults, got %s at [" LMP_FMTINT "]",
                luaL_typename(L, -1), LMP_INTARG(i));
    lua_rawseti(L, -2, i);
  }
  lua_newtable(L);
  lua_pushnumber(L, (lua_Number)deadline);
  lua_pushinteger(L, 1);
  lua_pushcclosure(L, ask_iter, 4);
  return 1;
}

/*
** metatable.__fileno: an fd readable when the result's pool has replies
** waiting (any job's), or nothing.  mp.wait(objects) polls it instead of
** asking ready() every few milliseconds.
*/
static int res_fileno(lua_State *L) {
  Job *J = checkjob(L);
  Pool *P;
  int fd;
  (void)J;
  lmp_uvfield(L, 1, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (P->owner != getpid() || P->T == NULL || P->state == P_TERM) return 0;
  fd = P->T->ops->fileno(L, P->T);
  if (fd < 0) return 0;
  lua_pushinteger(L, fd);
  return 1;
}

static int res_tostring(lua_State *L) {
  Job *J = checkjob(L);
  lua_pushfstring(L, "lmp.AsyncResult{%s}", J->state == J_RUN ? "pending"
                  : (J->state == J_OK ? "successful" : "failed"));
  return 1;
}

/* a job nobody will read: no more of its input is handed out, and what is
   in flight is dropped when it comes back (no callback, no progress) */
static void job_abandon(lua_State *L, Job *J, int jidx) {
  Pool *P;
  if (J->state != J_RUN) return;
  J->stopped = 1;
  J->inputdone = 1;
  J->closed = 1;
  lmp_uvfield(L, jidx, JV_POOL);
  P = (Pool *)lua_touserdata(L, -1);
  if (P->owner == getpid()) {
    lmp_job_forget(L, lua_gettop(L), J);
    lmp_progress_drop(L, P, lua_gettop(L), J);
  }
  lua_pop(L, 1);
}

/* `for ... in pool:imap(...)` closes the job when the loop is left */
static int res_close(lua_State *L) {
  Job *J = checkjob(L);
  if (J->kind == K_IMAP || J->kind == K_IMAPU) job_abandon(L, J, 1);
  return 0;
}

static int wait_all(lua_State *L) {
  lmp_job_wait(L, (Job *)lua_touserdata(L, 1), 1, -1, 1);
  return 0;
}

void lmp_job_waitcall(lua_State *L, Job *J, int jidx) {
  lua_pushcfunction(L, wait_all);
  lua_pushvalue(L, jidx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    job_abandon(L, J, jidx);
    lua_error(L);
  }
}

/* ---------------------------------------------------------------------- */
/* imap iterators                                                         */
/* ---------------------------------------------------------------------- */
/* is there something for the iterator to hand out? */
static int imap_has(lua_State *L, Job *J, int jidx) {
  int has;
  if (J->kind == K_IMAPU) return J->evtail > J->yielded || J->state != J_RUN;
  if (J->errindex && J->yielded + 1 >= J->errindex) return 1;
  lmp_uvfield(L, jidx, JV_RES);
  has = lmp_rawgeti(L, -1, J->yielded + 1) != LUA_TNIL;
  lua_pop(L, 2);
  return has || J->state != J_RUN;
}

static int done_imap(lua_State *L, Pool *P, int pidx, void *ud) {
  (void)P;
  (void)pidx;
  return imap_has(L, (Job *)ud, 1);
}

/* the job's error, handed out once and raised again after (forgotten) */
static int imap_raise(lua_State *L, Job *J) {
  J->stopped = 1;
  J->raised = 1;
  lmp_job_forget(L, 2, J);
  lmp_uvfield(L, 1, JV_ERR);
  return lua_error(L);
}

/* the next index to hand out, 0 at the end; raises the job's error */
static lua_Integer imap_index(lua_State *L, Job *J) {
  lua_Integer index;
  if (J->kind == K_IMAPU) {
    if (J->evtail <= J->yielded) return 0;
    lmp_uvfield(L, 1, JV_EVENTS);
    lmp_rawgeti(L, -1, ++J->yielded);
    index = lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, -3, J->yielded);    /* consumed: memory stays bounded */
    lua_pop(L, 2);
    if (index < 0) imap_raise(L, J);   /* the error event */
    return index;
  }
  index = ++J->yielded;
  if (J->errindex && index >= J->errindex) {
    J->yielded--;
    imap_raise(L, J);
  }
  return index;
}

/* [job, pool]: hands out the next result, or ends */
static int imap_next(lua_State *L) {
  Job *J = (Job *)lua_touserdata(L, lua_upvalueindex(1));
  Pool *P;
  lua_Integer index;
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  if (J->raised) {                     /* the pool forgot it: never pump */
    lmp_uvfield(L, 1, JV_ERR);
    return lua_error(L);
  }
  if (J->closed) {                     /* its results are no longer kept */
    lua_pushnil(L);
    return 1;
  }
  lmp_uvfield(L, 1, JV_POOL);          /* [job, pool] */
  P = (Pool *)lua_touserdata(L, 2);
  if (!imap_has(L, J, 1)) {
    if (P->owner != getpid())
      lmp_error(L, "lmp: this iterator belongs to process %d", (int)P->owner);
    lmp_pool_pump(L, P, 2, done_imap, J, -1);
  }
  if ((index = imap_index(L, J)) != 0) {
    lmp_uvfield(L, 1, JV_RES);
    if (lmp_rawgeti(L, -1, index) != LUA_TNIL) {
      /* handed out once: the table must not keep every result */
      lua_pushnil(L);
      lua_rawseti(L, -3, index);
      if (lmp_isnilmark(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
      }
      lua_pushinteger(L, index);       /* index, value: as ipairs does, so a
                                          nil result never ends a for */
      lua_insert(L, -2);
      return 2;
    }
    if (J->kind != K_IMAPU) J->yielded--;
  }
  if (J->state != J_RUN) lmp_job_forget(L, 2, J);
  if (J->state == J_FAIL && J->kind == K_IMAPU) {
    lmp_uvfield(L, 1, JV_ERR);
    return lua_error(L);
  }
  lua_pushnil(L);
  return 1;
}

int lmp_imap_iterator(lua_State *L) {
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, imap_next, 1);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2);
  return 4;                            /* iterator, nil, nil, closing value */
}

void lmp_result_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", res_get},
    {"wait", res_wait},
    {"ready", res_ready},
    {"successful", res_successful},
    {"cancel", res_cancel},
    {"info", res_info},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, LMP_RESULT)) {
    lua_pushcfunction(L, res_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, res_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, res_fileno);
    lua_setfield(L, -2, "__fileno");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, mp_as_completed);   /* the module table is on top */
  lua_setfield(L, -2, "as_completed");
}
