/*
** cond.c -- Condition, Event, Barrier.
**
** A Condition gives each waiter a slot of its own in shared memory and a
** futex word in it: notify(n) marks the n oldest live waiters and wakes
** exactly those.  A process-shared pthread_cond_t was not used: a waiter
** killed inside pthread_cond_wait stays counted in the condvar's groups, and
** a later signal can go to it and be lost.  Slots of dead waiters are
** freed when a notify meets them.
*/
#include "cond.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

/* ====================================================================== */
/* Condition                                                              */
/* ====================================================================== */
#define COND_SLOTS 64
enum { S_FREE = 0, S_WAITING = 1, S_NOTIFIED = 2 };

typedef struct condblk {
  uint64_t tickets;     /* waiters so far: the order of notification */
  struct cslot {
    int32_t pid;
    uint32_t state;     /* futex word of this waiter */
    uint64_t ticket;
  } slots[COND_SLOTS];
} condblk;

typedef struct cond {
  condblk *b;
  lmp_lock *k;          /* its lock, user value 1 */
} cond;

static cond *checkcond(lua_State *L) {
  cond *c = (cond *)lmp_checkudata(L, 1, LMP_CONDITION, "Condition");
  if (c->b == NULL) lmp_error(L, "lmp: condition is closed");
  return c;
}

static void mustown(lua_State *L, cond *c, const char *what) {
  if (!lmp_mutex_mine(&c->k->b->m))
    lmp_error(L, "lmp: %s on a Condition whose lock this process does not "
                 "hold", what);
}

/* calls the lock's method `name` with the arguments after the Condition */
static int cond_delegate(lua_State *L, const char *name) {
  int n;
  checkcond(L);
  lmp_getuv(L, 1, 1);
  lua_replace(L, 1);
  lmp_getfield(L, 1, name);
  lua_insert(L, 1);
  n = lua_gettop(L);
  lua_call(L, n - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int cond_acquire(lua_State *L) { return cond_delegate(L, "acquire"); }
static int cond_release(lua_State *L) { return cond_delegate(L, "release"); }
static int cond_hold(lua_State *L) { return cond_delegate(L, "hold"); }

/* marks up to n of the oldest live waiters notified; returns how many */
static int notify(condblk *b, int n) {
  int done = 0;
  while (done < n) {
    int i, best = -1;
    for (i = 0; i < COND_SLOTS; i++) {
      struct cslot *s = &b->slots[i];
      if (s->state != S_WAITING) continue;
      if (!lmp_pid_alive(s->pid)) {
        s->pid = 0;
        __atomic_store_n(&s->state, S_FREE, __ATOMIC_SEQ_CST);
        continue;
      }
      if (best < 0 || s->ticket < b->slots[best].ticket) best = i;
    }
    if (best < 0) break;
    __atomic_store_n(&b->slots[best].state, S_NOTIFIED, __ATOMIC_SEQ_CST);
    lmp_futex_wake(&b->slots[best].state, 1);
    done++;
  }
  return done;
}

static struct cslot *take_slot(lua_State *L, condblk *b) {
  int i, pass;
  for (pass = 0; pass < 2; pass++) {
    for (i = 0; i < COND_SLOTS; i++) {
      struct cslot *s = &b->slots[i];
      if (s->state == S_FREE) {
        s->pid = (int32_t)getpid();
        s->ticket = ++b->tickets;
        __atomic_store_n(&s->state, S_WAITING, __ATOMIC_SEQ_CST);
        return s;
      }
      /* a dead waiter's slot, or one notified whose waiter died */
      if (pass == 1 && !lmp_pid_alive(s->pid)) s->state = S_FREE;
    }
  }
  lmp_error(L, "lmp: more than %d processes wait on one Condition",
            COND_SLOTS);
  return NULL;
}

/*
** wait: the slot is taken under the lock, the lock released in full (all
** levels of an RLock), the slot's word slept on, the lock taken back (even
** after a timeout or Ctrl-C: the caller's scope releases it), and the slot
** read and freed under the lock.  A waiter interrupted after it was
** notified passes the notification on.
*/
static int cond_wait(lua_State *L) {
  cond *c = checkcond(L);
  double deadline = lmp_optdeadline(L, 2);
  struct cslot *s;
  lmp_hook h;
  uint32_t depth;
  int r = LMP_W_OK, notified, dead;
  mustown(L, c, "wait");
  s = take_slot(L, c->b);
  lmp_hook_save(L, &h);
  depth = lmp_lock_releaseall(c->k);
  while (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) == S_WAITING) {
    r = lmp_futex_wait(&s->state, S_WAITING, &h, deadline, 0);
    if (r != LMP_W_OK) break;
  }
  dead = lmp_lock_reacquire(c->k, depth);
  notified = s->state == S_NOTIFIED;
  s->pid = 0;
  __atomic_store_n(&s->state, S_FREE, __ATOMIC_SEQ_CST);
  if (r == LMP_W_INTR || r == LMP_W_ERROR) {
    if (notified) notify(c->b, 1);
    lmp_wait_check(L, r, "condition wait");
  }
  lua_pushboolean(L, notified);
  if (dead) {
    lua_pushliteral(L, "owner died");
    return 2;
  }
  return 1;
}

/* Python's wait_for: the predicate's last result */
static int cond_wait_for(lua_State *L) {
  double deadline;
  checkcond(L);
  if (!lmp_iscallable(L, 2)) return lmp_typeerror(L, 2, "predicate", "a function");
  deadline = lmp_optdeadline(L, 3);
  lua_settop(L, 2);
  for (;;) {
    double left;
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1)) return 1;
    left = deadline < 0 ? -1 : deadline - lmp_now();
    if (deadline >= 0 && left <= 0) return 1;
    lua_pop(L, 1);
    lua_pushcfunction(L, cond_wait);
    lua_pushvalue(L, 1);
    if (left < 0) lua_pushnil(L);
    else lua_pushnumber(L, left);
    lua_call(L, 2, 0);
  }
}

static int cond_notify(lua_State *L) {
  cond *c = checkcond(L);
  lua_Integer n = lua_isnoneornil(L, 2) ? 1 : lmp_checkint(L, 2, "n");
  mustown(L, c, "notify");
  if (n > 0) notify(c->b, n > INT_MAX ? INT_MAX : (int)n);
  return 0;
}

static int cond_notify_all(lua_State *L) {
  cond *c = checkcond(L);
  mustown(L, c, "notify_all");
  notify(c->b, INT_MAX);
  return 0;
}

static int cond_gc(lua_State *L) {
  cond *c = (cond *)lua_touserdata(L, 1);
  lmp_shm_unmap(c->b, sizeof *c->b);
  c->b = NULL;
  return 0;
}

static int cond_tostring(lua_State *L) {
  lua_pushfstring(L, "Condition (%p)", lua_touserdata(L, 1));
  return 1;
}

static int mp_condition(lua_State *L) {
  cond *c;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lmp_getfield(L, lua_upvalueindex(1), "RLock");
    lua_call(L, 0, 1);
  }
  lmp_tolock(L, 1, "lock");
  lua_settop(L, 1);
  c = (cond *)lmp_newud(L, sizeof *c, 1);
  c->b = NULL;
  c->k = (lmp_lock *)lua_touserdata(L, 1);
  luaL_setmetatable(L, LMP_CONDITION);
  lua_pushvalue(L, 1);
  lmp_setuv(L, -2, 1);
  if ((c->b = (condblk *)lmp_shm_anon(sizeof *c->b)) == NULL)
    return lmp_syserror(L, "condition: mmap");
  lmp_ident_register(L, -1);
  return 1;
}

/* ====================================================================== */
/* Event                                                                  */
/* ====================================================================== */
typedef struct evblk {
  uint32_t flag;
  uint32_t seq;         /* futex word: bumped by set() */
} evblk;

typedef struct event {
  evblk *b;
} event;

static event *checkevent(lua_State *L) {
  event *e = (event *)lmp_checkudata(L, 1, LMP_EVENT, "Event");
  if (e->b == NULL) lmp_error(L, "lmp: event is closed");
  return e;
}

static int ev_set(lua_State *L) {
  event *e = checkevent(L);
  __atomic_store_n(&e->b->flag, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&e->b->seq, 1, __ATOMIC_SEQ_CST);
  lmp_futex_wake(&e->b->seq, INT_MAX);
  return 0;
}

static int ev_clear(lua_State *L) {
  event *e = checkevent(L);
  __atomic_store_n(&e->b->flag, 0, __ATOMIC_SEQ_CST);
  return 0;
}

static int ev_is_set(lua_State *L) {
  event *e = checkevent(L);
  lua_pushboolean(L, __atomic_load_n(&e->b->flag, __ATOMIC_SEQ_CST) != 0);
  return 1;
}

/* the flag is read after the word: a set() in between changes the word,
   so the futex wait returns at once */
static int ev_wait(lua_State *L) {
  event *e = checkevent(L);
  double deadline = lmp_optdeadline(L, 2);
  lmp_hook h;
  lmp_hook_save(L, &h);
  for (;;) {
    uint32_t seq = __atomic_load_n(&e->b->seq, __ATOMIC_SEQ_CST);
    int r;
    if (__atomic_load_n(&e->b->flag, __ATOMIC_SEQ_CST)) break;
    r = lmp_wait_check(L, lmp_futex_wait(&e->b->seq, seq, &h, deadline, 0),
                       "event wait");
    if (r == LMP_W_TIMEOUT) break;
  }
  lua_pushboolean(L, __atomic_load_n(&e->b->flag, __ATOMIC_SEQ_CST) != 0);
  return 1;
}

static int ev_gc(lua_State *L) {
  event *e = (event *)lua_touserdata(L, 1);
  lmp_shm_unmap(e->b, sizeof *e->b);
  e->b = NULL;
  return 0;
}

static int ev_tostring(lua_State *L) {
  event *e = (event *)lua_touserdata(L, 1);
  lua_pushfstring(L, "Event (%s)", e->b == NULL ? "closed"
                                   : e->b->flag ? "set" : "clear");
  return 1;
}

static int mp_event(lua_State *L) {
  event *e = (event *)lmp_newud(L, sizeof *e, 0);
  e->b = NULL;
  luaL_setmetatable(L, LMP_EVENT);
  if ((e->b = (evblk *)lmp_shm_anon(sizeof *e->b)) == NULL)
    return lmp_syserror(L, "event: mmap");
  lmp_ident_register(L, -1);
  return 1;
}

/* ====================================================================== */
/* Barrier                                                                */
/* ====================================================================== */
/*
** Python's algorithm (threading.Barrier) on a robust mutex and a futex
** word: parties fill, the last one runs the action and lets all through
** (draining), the last to leave opens it again.  The pids of the waiting
** parties are kept so that a party that died while waiting breaks the
** barrier instead of holding the others until their timeout.
*/
#define BAR_PIDS 64
enum { B_FILLING = 0, B_DRAINING = 1, B_RESETTING = -1, B_BROKEN = -2 };

typedef struct barblk {
  pthread_mutex_t m;
  uint32_t seq;         /* futex word: bumped on every change of state */
  int32_t parties, count, state;
  int32_t pids[BAR_PIDS];
} barblk;

typedef struct barrier {
  barblk *b;
  double timeout;       /* default for wait(); < 0: none */
} barrier;

static barrier *checkbarrier(lua_State *L) {
  barrier *br = (barrier *)lmp_checkudata(L, 1, LMP_BARRIER, "Barrier");
  if (br->b == NULL) lmp_error(L, "lmp: barrier is closed");
  return br;
}

static void bar_change(barblk *b, int state) {
  b->state = state;
  __atomic_add_fetch(&b->seq, 1, __ATOMIC_SEQ_CST);
  lmp_futex_wake(&b->seq, INT_MAX);
}

static void bar_pid(barblk *b, int32_t pid, int32_t set) {
  int i;
  for (i = 0; i < BAR_PIDS; i++)
    if (b->pids[i] == (set ? 0 : pid)) {
      b->pids[i] = set ? pid : 0;
      return;
    }
}

/*
** Drops the parties that died while waiting (mutex held): each one's pid
** and its place in `count`, since it will never leave.  A filling barrier
** that lost one is broken; a draining or resetting one whose last party
** was the dead one opens again.
*/
static void bar_reap(barblk *b) {
  int i, dead = 0;
  for (i = 0; i < BAR_PIDS; i++)
    if (b->pids[i] != 0 && !lmp_pid_alive(b->pids[i])) {
      b->pids[i] = 0;
      b->count--;
      dead++;
    }
  if (dead == 0) return;
  if (b->state == B_FILLING) bar_change(b, B_BROKEN);
  else if (b->count == 0 && (b->state == B_DRAINING || b->state == B_RESETTING))
    bar_change(b, B_FILLING);
}

/* waits (mutex held, released while asleep) until the state is not
   `state`: LMP_W_OK or a wait result */
static int bar_sleep(barblk *b, int state, const lmp_hook *h, double deadline) {
  while (b->state == state) {
    uint32_t seq = b->seq;
    int r;
    pthread_mutex_unlock(&b->m);
    r = lmp_futex_wait(&b->seq, seq, h, deadline, 0.2);
    lmp_mutex_enter(&b->m);
    if (r != LMP_W_OK) return r;
    if (b->state == state) bar_reap(b);
  }
  return LMP_W_OK;
}

/* the last party: the action (mutex held, as Python holds its lock) */
static int bar_release(lua_State *L, barblk *b) {
  lmp_getuv(L, 1, 1);
  if (!lua_isnil(L, -1) && lua_pcall(L, 0, 0, 0) != LUA_OK) {
    bar_change(b, B_BROKEN);
    return 0;
  }
  bar_change(b, B_DRAINING);
  return 1;
}

static int bar_wait(lua_State *L) {
  barrier *br = checkbarrier(L);
  barblk *b = br->b;
  double deadline = lua_isnoneornil(L, 2) ? (br->timeout < 0 ? -1
                    : lmp_now() + br->timeout) : lmp_optdeadline(L, 2);
  int32_t pid = (int32_t)getpid(), index;
  int r = LMP_W_OK, failed = 0;
  lmp_hook h;
  lmp_hook_save(L, &h);
  lua_settop(L, 1);
  lmp_mutex_enter(&b->m);
  /* a party that died waiting breaks the barrier before this one counts
     itself in: the last arriver too, which otherwise never sleeps */
  bar_reap(b);
  /* a barrier still letting the last round out, or being reset */
  while (b->state == B_DRAINING || b->state == B_RESETTING) {
    r = bar_sleep(b, b->state, &h, -1);
    if (r != LMP_W_OK) break;
  }
  if (r == LMP_W_OK && b->state == B_BROKEN) failed = 1;
  if (r != LMP_W_OK || failed) {
    pthread_mutex_unlock(&b->m);
    lmp_wait_check(L, r, "barrier wait");
    return lmp_error(L, "lmp: broken barrier");
  }
  index = b->count++;
  if (index + 1 == b->parties) failed = !bar_release(L, b);
  else {
    bar_pid(b, pid, 1);
    r = bar_sleep(b, B_FILLING, &h, deadline);
    bar_pid(b, pid, 0);
    if (r == LMP_W_TIMEOUT) bar_change(b, B_BROKEN);
    failed = r == LMP_W_OK && b->state < 0;
  }
  /* leaving: the last one out opens the barrier again */
  if (--b->count == 0 && (b->state == B_DRAINING || b->state == B_RESETTING))
    bar_change(b, B_FILLING);
  pthread_mutex_unlock(&b->m);
  if (index + 1 == b->parties && failed) return lua_error(L);  /* action's */
  lmp_wait_check(L, r, "barrier wait");
  if (failed || r == LMP_W_TIMEOUT) return lmp_error(L, "lmp: broken barrier");
  lua_pushinteger(L, (lua_Integer)index + 1);
  return 1;
}

static int bar_abort(lua_State *L) {
  barrier *br = checkbarrier(L);
  lmp_mutex_enter(&br->b->m);
  bar_change(br->b, B_BROKEN);
  pthread_mutex_unlock(&br->b->m);
  return 0;
}

static int bar_reset(lua_State *L) {
  barrier *br = checkbarrier(L);
  barblk *b = br->b;
  lmp_mutex_enter(&b->m);
  if (b->count > 0) {
    if (b->state == B_FILLING || b->state == B_BROKEN)
      bar_change(b, B_RESETTING);
    else bar_change(b, b->state);
  } else bar_change(b, B_FILLING);
  pthread_mutex_unlock(&b->m);
  return 0;
}

static int bar_index(lua_State *L) {
  barrier *br = (barrier *)lua_touserdata(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && br->b != NULL) {
    int broken = strcmp(k, "broken") == 0;
    if (broken || strcmp(k, "n_waiting") == 0) {
      barblk *b = br->b;
      int v;
      lmp_mutex_enter(&b->m);
      bar_reap(b);                      /* a dead party counts no more */
      v = broken ? b->state == B_BROKEN : b->state == B_FILLING ? b->count : 0;
      pthread_mutex_unlock(&b->m);
      if (broken) lua_pushboolean(L, v);
      else lua_pushinteger(L, v);
      return 1;
    }
    if (strcmp(k, "parties") == 0) {
      lua_pushinteger(L, br->b->parties);
      return 1;
    }
  }
  lmp_getmetafield(L, 1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int bar_gc(lua_State *L) {
  barrier *br = (barrier *)lua_touserdata(L, 1);
  lmp_shm_unmap(br->b, sizeof *br->b);
  br->b = NULL;
  return 0;
}

static int bar_tostring(lua_State *L) {
  barrier *br = (barrier *)lua_touserdata(L, 1);
  if (br->b == NULL) lua_pushliteral(L, "Barrier (closed)");
  else lua_pushfstring(L, "Barrier(parties=%d, waiting=%d%s)",
                       (int)br->b->parties, (int)br->b->count,
                       br->b->state == B_BROKEN ? ", broken" : "");
  return 1;
}

static int mp_barrier(lua_State *L) {
  lua_Integer n = lmp_checkint(L, 1, "parties");
  barrier *br;
  double t = -1;
  int r;
  if (n < 1 || n > INT_MAX) return lmp_error(L, "lmp: parties must be 1 or more");
  if (!lua_isnoneornil(L, 2) && !lmp_iscallable(L, 2))
    return lmp_typeerror(L, 2, "action", "a function");
  if (!lua_isnoneornil(L, 3)) {
    t = lmp_optdeadline(L, 3);
    if (t >= 0) t -= lmp_now();
  }
  lua_settop(L, 2);
  br = (barrier *)lmp_newud(L, sizeof *br, 1);
  br->b = NULL;
  br->timeout = t;
  luaL_setmetatable(L, LMP_BARRIER);
  lua_pushvalue(L, 2);
  lmp_setuv(L, -2, 1);
  if ((br->b = (barblk *)lmp_shm_anon(sizeof *br->b)) == NULL)
    return lmp_syserror(L, "barrier: mmap");
  if ((r = lmp_mutex_init(&br->b->m, 0)) != 0) {
    errno = r;
    return lmp_syserror(L, "barrier");
  }
  br->b->parties = (int32_t)n;
  lmp_ident_register(L, -1);
  return 1;
}

/* ====================================================================== */
void lmp_cond_open(lua_State *L) {
  static const luaL_Reg condm[] = {
    {"acquire", cond_acquire}, {"release", cond_release},
    {"hold", cond_hold}, {"wait", cond_wait}, {"wait_for", cond_wait_for},
    {"notify", cond_notify}, {"notify_all", cond_notify_all}, {NULL, NULL}
  };
  static const luaL_Reg condmeta[] = {
    {"__gc", cond_gc}, {"__tostring", cond_tostring}, {NULL, NULL}
  };
  static const luaL_Reg evm[] = {
    {"set", ev_set}, {"clear", ev_clear}, {"is_set", ev_is_set},
    {"wait", ev_wait}, {NULL, NULL}
  };
  static const luaL_Reg evmeta[] = {
    {"__gc", ev_gc}, {"__tostring", ev_tostring}, {NULL, NULL}
  };
  static const luaL_Reg barm[] = {
    {"wait", bar_wait}, {"abort", bar_abort}, {"reset", bar_reset},
    {NULL, NULL}
  };
  static const luaL_Reg barmeta[] = {
    {"__index", bar_index}, {"__gc", bar_gc}, {"__tostring", bar_tostring},
    {NULL, NULL}
  };
  lmp_shm_class(L, LMP_CONDITION, condm, condmeta);
  lmp_shm_class(L, LMP_EVENT, evm, evmeta);
  lmp_shm_class(L, LMP_BARRIER, barm, barmeta);
  lua_pop(L, 3);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, mp_condition, 1);
  lua_setfield(L, -2, "Condition");
  lua_pushcfunction(L, mp_event);
  lua_setfield(L, -2, "Event");
  lua_pushcfunction(L, mp_barrier);
  lua_setfield(L, -2, "Barrier");
}
