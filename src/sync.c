/*
** sync.c -- Lock, RLock, Semaphore, BoundedSemaphore.
**
** Locks are robust mutexes: when a holder dies the kernel marks the mutex,
** the next acquirer gets it with EOWNERDEAD, makes it consistent and is
** told "owner died".  A semaphore has no owner, so it keeps a table of the
** processes holding permits; a waiter that would block takes back the
** permits of holders that are gone (see reclaim()).
*/
#include "sync.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

/* ====================================================================== */
/* Lock, RLock                                                            */
/* ====================================================================== */
static lmp_lock *checklock(lua_State *L) {
  lmp_lock *k = (lmp_lock *)lua_touserdata(L, 1);
  if (k == NULL || lua_getmetatable(L, 1) == 0) k = NULL;
  else {
    /* the metatable is upvalue 1 (the hot path skips a registry lookup) */
    if (!lua_rawequal(L, -1, lua_upvalueindex(1)) &&
        !lua_rawequal(L, -1, lua_upvalueindex(2)))
      k = NULL;
    lua_pop(L, 1);
  }
  /* called from C (a guard, a Condition): no upvalues */
  if (k == NULL && (k = (lmp_lock *)luaL_testudata(L, 1, LMP_LOCK)) == NULL)
    k = (lmp_lock *)luaL_testudata(L, 1, LMP_RLOCK);
  if (k == NULL)
    lmp_error(L, "lmp: expected a Lock or RLock, got %s (call methods with "
                 "':')", luaL_typename(L, 1));
  if (k->b == NULL) lmp_error(L, "lmp: lock is closed");
  return k;
}

lmp_lock *lmp_tolock(lua_State *L, int idx, const char *what) {
  lmp_lock *k = (lmp_lock *)luaL_testudata(L, idx, LMP_LOCK);
  if (k == NULL) k = (lmp_lock *)luaL_testudata(L, idx, LMP_RLOCK);
  if (k == NULL) lmp_typeerror(L, idx, what, "a Lock or RLock");
  return k;
}

static int lock_result(lua_State *L, lmp_lock *k, int r) {
  lmp_wait_check(L, r, "lock");
  if (r == LMP_W_TIMEOUT) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (k->recursive) k->b->depth++;
  lua_pushboolean(L, 1);
  if (r == LMP_W_OWNERDEAD) {
    /* an RLock whose holder died: its levels died with it */
    if (k->recursive) k->b->depth = 1;
    lua_pushliteral(L, "owner died");
    return 2;
  }
  return 1;
}

int lmp_lock_acquire(lua_State *L) {
  lmp_lock *k = checklock(L);
  lmp_hook h;
  int r;
  if (lua_gettop(L) == 1 && (r = pthread_mutex_trylock(&k->b->m)) != EBUSY) {
    if (r == 0) {
      if (k->recursive) k->b->depth++;
      lua_pushboolean(L, 1);
      return 1;
    }
    if (r == EOWNERDEAD) pthread_mutex_consistent(&k->b->m);
    return lock_result(L, k, r == EOWNERDEAD ? LMP_W_OWNERDEAD
                                             : (errno = r, LMP_W_ERROR));
  }
  lmp_hook_save(L, &h);
  return lock_result(L, k, lmp_mutex_lock(&k->b->m, &h,
                                          lmp_acq_deadline(L, 2)));
}

int lmp_lock_release(lua_State *L) {
  lmp_lock *k = checklock(L);
  uint32_t depth = k->b->depth;
  int r;
  if (k->recursive) {
    if (!lmp_mutex_mine(&k->b->m)) goto notheld;
    k->b->depth = depth - 1;
  }
  r = pthread_mutex_unlock(&k->b->m);
  if (r == 0) return 0;
  if (k->recursive) k->b->depth = depth;
  if (r != EPERM) {
    errno = r;
    return lmp_syserror(L, "lock release");
  }
notheld:
  return lmp_error(L, "lmp: release of a%s that this process does not hold",
                   k->recursive ? "n RLock" : " Lock");
}

int lmp_lock_hold(lua_State *L) {
  int n = lmp_lock_acquire(L);
  if (!lua_toboolean(L, -n)) return lmp_error(L, "lmp: timeout");
  lmp_guard_push(L, 1, lmp_lock_release);
  if (n == 2) {
    lua_pushliteral(L, "owner died");
    return 2;
  }
  return 1;
}

uint32_t lmp_lock_releaseall(lmp_lock *k) {
  uint32_t d = k->recursive ? k->b->depth : 1, i;
  if (k->recursive) k->b->depth = 0;
  for (i = 0; i < d; i++) pthread_mutex_unlock(&k->b->m);
  return d;
}

int lmp_lock_reacquire(lmp_lock *k, uint32_t depth) {
  int r = lmp_mutex_enter(&k->b->m), i;
  for (i = 1; i < (int)depth; i++) pthread_mutex_lock(&k->b->m);
  if (k->recursive) k->b->depth = depth;
  return r;
}

/* a robust mutex this process holds must not vanish from under it (glibc
   keeps it in the process's list of held robust mutexes): unlock first */
static int lock_gc(lua_State *L) {
  lmp_lock *k = (lmp_lock *)lua_touserdata(L, 1);
  if (k->size > 0 && k->b != NULL) {
    if (lmp_mutex_mine(&k->b->m)) lmp_lock_releaseall(k);
    lmp_shm_unmap(k->b, k->size);
  }
  k->b = NULL;
  k->size = 0;
  return 0;
}

static int lock_tostring(lua_State *L) {
  lmp_lock *k = (lmp_lock *)lua_touserdata(L, 1);
  lua_pushfstring(L, "%s (%p)", k->recursive ? "RLock" : "Lock",
                  (void *)k->b);
  return 1;
}

static lmp_lock *newlock(lua_State *L, int recursive) {
  lmp_lock *k = (lmp_lock *)lmp_newud(L, sizeof *k, 1);
  memset(k, 0, sizeof *k);
  k->recursive = recursive;
  luaL_setmetatable(L, recursive ? LMP_RLOCK : LMP_LOCK);
  return k;
}

static int initlock(lua_State *L, lmp_lock *k) {
  int r = lmp_mutex_init(&k->b->m, k->recursive);
  if (r != 0) {
    errno = r;
    return lmp_syserror(L, "lock");
  }
  k->b->depth = 0;
  lmp_ident_register(L, -1);
  return 1;
}

static int mklock(lua_State *L, int recursive) {
  lmp_lock *k = newlock(L, recursive);
  k->b = (lmp_lockblk *)lmp_shm_anon(sizeof *k->b);
  if (k->b == NULL) return lmp_syserror(L, "lock: mmap");
  k->size = sizeof *k->b;
  return initlock(L, k);
}

static int mp_lock(lua_State *L) { return mklock(L, 0); }
static int mp_rlock(lua_State *L) { return mklock(L, 1); }

lmp_lock *lmp_lock_borrowed(lua_State *L, lmp_lockblk *b, int owner) {
  lmp_lock *k;
  owner = lmp_absindex(L, owner);
  k = newlock(L, 0);
  k->b = b;
  lua_pushvalue(L, owner);
  lmp_setuv(L, -2, 1);
  initlock(L, k);
  return k;
}

/* ====================================================================== */
/* Semaphore, BoundedSemaphore                                            */
/* ====================================================================== */
#define SEM_HOLDERS 64

typedef struct semblk {
  pthread_mutex_t m;    /* guards the rest; held only for a few stores */
  uint32_t seq;         /* futex word: bumped by every release */
  uint32_t sleepers;
  int64_t value, initial;
  int bounded;
  int64_t untracked;    /* permits held by processes the table had no
                           room for (never taken back) */
  struct { int32_t pid, n; } holders[SEM_HOLDERS];
} semblk;

typedef struct sem {
  semblk *b;
} sem;

static sem *checksem(lua_State *L) {
  sem *s = (sem *)lmp_checkudata(L, 1, LMP_SEMAPHORE, "Semaphore");
  if (s->b == NULL) lmp_error(L, "lmp: semaphore is closed");
  return s;
}

/* the holder table's entry for pid (add: make one); NULL if none */
static int holder(semblk *b, int32_t pid, int add) {
  int i, fr = -1;
  for (i = 0; i < SEM_HOLDERS; i++) {
    if (b->holders[i].pid == pid) return i;
    if (b->holders[i].pid == 0 && fr < 0) fr = i;
  }
  if (add && fr >= 0) {
    b->holders[fr].pid = pid;
    b->holders[fr].n = 0;
  }
  return add ? fr : -1;
}

/*
** Takes back the permits of holders that died.  Not every permit a process
** took is still its own: a Semaphore(0) used as a signal is released by
** one process and acquired by another, which holds nothing afterwards.  So
** the value never grows past what the live holders leave of the initial
** value: a pool of resources gets back what the dead held, a signal never
** gains a permit.  Returns the permits given back.
*/
static int64_t reclaim(semblk *b) {
  int64_t dead = 0, live = b->untracked, cap;
  int i;
  for (i = 0; i < SEM_HOLDERS; i++) {
    if (b->holders[i].pid == 0) continue;
    if (lmp_pid_alive(b->holders[i].pid)) live += b->holders[i].n;
    else {
      dead += b->holders[i].n;
      b->holders[i].pid = 0;
      b->holders[i].n = 0;
    }
  }
  cap = b->initial - live;
  if (cap < b->value) cap = b->value;
  if (b->value + dead < cap) cap = b->value + dead;
  dead = cap - b->value;
  b->value = cap;
  return dead;
}

static void sem_take(semblk *b, int32_t pid) {
  int i = holder(b, pid, 1);
  if (i >= 0) b->holders[i].n++;
  else b->untracked++;
  b->value--;
}

/* 1 if a permit was taken; 0 if the wait should go on (seq at *seq) */
static int sem_try(semblk *b, int32_t pid, uint32_t *seq) {
  int got = 0;
  lmp_mutex_enter(&b->m);
  if (b->value > 0 || reclaim(b) > 0) {
    sem_take(b, pid);
    got = 1;
  } else {
    *seq = b->seq;
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
  }
  pthread_mutex_unlock(&b->m);
  return got;
}

static int sem_acquire(lua_State *L) {
  sem *s = checksem(L);
  double deadline = lmp_acq_deadline(L, 2);
  int32_t pid = (int32_t)getpid();
  lmp_hook h;
  uint32_t seq;
  int r = LMP_W_OK;
  lmp_hook_save(L, &h);
  while (!sem_try(s->b, pid, &seq)) {
    r = lmp_futex_wait(&s->b->seq, seq, &h, deadline, 0.2);
    __atomic_sub_fetch(&s->b->sleepers, 1, __ATOMIC_SEQ_CST);
    if (r != LMP_W_OK) break;
  }
  lmp_wait_check(L, r, "semaphore");
  lua_pushboolean(L, r == LMP_W_OK);
  return 1;
}

static int sem_release(lua_State *L) {
  sem *s = checksem(L);
  semblk *b = s->b;
  lua_Integer n = lua_isnoneornil(L, 2) ? 1 : lmp_checkint(L, 2, "n");
  int i;
  if (n < 1) return lmp_error(L, "lmp: n must be one or more");
  lmp_mutex_enter(&b->m);
  if (b->bounded && b->value + n > b->initial) {
    pthread_mutex_unlock(&b->m);
    return lmp_error(L, "lmp: BoundedSemaphore released too many times");
  }
  if ((i = holder(b, (int32_t)getpid(), 0)) >= 0) {
    b->holders[i].n -= (int32_t)(n < b->holders[i].n ? n : b->holders[i].n);
    if (b->holders[i].n == 0) b->holders[i].pid = 0;
  }
  b->value += n;
  b->seq++;
  if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
    lmp_futex_wake(&b->seq, n > INT_MAX ? INT_MAX : (int)n);
  pthread_mutex_unlock(&b->m);
  return 0;
}

static int sem_hold(lua_State *L) {
  sem_acquire(L);
  if (!lua_toboolean(L, -1)) return lmp_error(L, "lmp: timeout");
  lua_settop(L, 1);
  lmp_guard_push(L, 1, sem_release);
  return 1;
}

static int sem_get_value(lua_State *L) {
  sem *s = checksem(L);
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(&s->b->value,
                                                  __ATOMIC_SEQ_CST));
  return 1;
}

static int sem_gc(lua_State *L) {
  sem *s = (sem *)lua_touserdata(L, 1);
  lmp_shm_unmap(s->b, sizeof *s->b);
  s->b = NULL;
  return 0;
}

static int sem_tostring(lua_State *L) {
  sem *s = (sem *)lua_touserdata(L, 1);
  if (s->b == NULL) lua_pushliteral(L, "Semaphore (closed)");
  else lua_pushfstring(L, "%s(value=" LMP_FMTINT ")",
                       s->b->bounded ? "BoundedSemaphore" : "Semaphore",
                       LMP_INTARG(s->b->value));
  return 1;
}

static int mksem(lua_State *L, int bounded) {
  lua_Integer n = lua_isnoneornil(L, 1) ? 1 : lmp_checkint(L, 1, "value");
  sem *s;
  int r;
  if (n < 0) return lmp_error(L, "lmp: semaphore value must be 0 or more");
  s = (sem *)lmp_newud(L, sizeof *s, 0);
  s->b = NULL;
  luaL_setmetatable(L, LMP_SEMAPHORE);
  if ((s->b = (semblk *)lmp_shm_anon(sizeof *s->b)) == NULL)
    return lmp_syserror(L, "semaphore: mmap");
  if ((r = lmp_mutex_init(&s->b->m, 0)) != 0) {
    errno = r;
    return lmp_syserror(L, "semaphore");
  }
  s->b->value = s->b->initial = (int64_t)n;
  s->b->bounded = bounded;
  lmp_ident_register(L, -1);
  return 1;
}

static int mp_semaphore(lua_State *L) { return mksem(L, 0); }
static int mp_boundedsemaphore(lua_State *L) { return mksem(L, 1); }

/* ====================================================================== */
void lmp_sync_open(lua_State *L) {
  static const luaL_Reg lockm[] = {
    {"acquire", lmp_lock_acquire}, {"release", lmp_lock_release},
    {"hold", lmp_lock_hold}, {NULL, NULL}
  };
  static const luaL_Reg lockmeta[] = {
    {"__gc", lock_gc}, {"__tostring", lock_tostring}, {NULL, NULL}
  };
  static const luaL_Reg semm[] = {
    {"acquire", sem_acquire}, {"release", sem_release}, {"hold", sem_hold},
    {"get_value", sem_get_value}, {NULL, NULL}
  };
  static const luaL_Reg semmeta[] = {
    {"__gc", sem_gc}, {"__tostring", sem_tostring}, {NULL, NULL}
  };
  static const char *const lockclass[] = {LMP_LOCK, LMP_RLOCK};
  int i;
  for (i = 0; i < 2; i++) {
    lmp_shm_class(L, lockclass[i], lockm, lockmeta);
    lua_pop(L, 1);
  }
  for (i = 0; i < 2; i++) {
    const luaL_Reg *f;
    luaL_getmetatable(L, lockclass[i]);
    lmp_getfield(L, -1, "__methods");
    /* the methods get both metatables as upvalues (checklock) */
    for (f = lockm; f->name != NULL; f++) {
      luaL_getmetatable(L, LMP_LOCK);
      luaL_getmetatable(L, LMP_RLOCK);
      lua_pushcclosure(L, f->func, 2);
      lua_setfield(L, -2, f->name);
    }
    lua_pop(L, 2);
  }
  lmp_shm_class(L, LMP_SEMAPHORE, semm, semmeta);
  lua_pop(L, 1);
  lua_pushcfunction(L, mp_lock);
  lua_setfield(L, -2, "Lock");
  lua_pushcfunction(L, mp_rlock);
  lua_setfield(L, -2, "RLock");
  lua_pushcfunction(L, mp_semaphore);
  lua_setfield(L, -2, "Semaphore");
  lua_pushcfunction(L, mp_boundedsemaphore);
  lua_setfield(L, -2, "BoundedSemaphore");
}
