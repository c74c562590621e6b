/*
** shm.c -- shared memory, robust mutexes, futex waits.  Everything here
** lives in memory that a fork shares (MAP_SHARED), so nothing in it may
** point into one process's memory.
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

size_t lmp_shm_round(size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  if (n == 0) n = 1;
  return (n + pg - 1) / pg * pg;
}

void *lmp_shm_anon(size_t n) {
  void *p = mmap(NULL, lmp_shm_round(n), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void lmp_shm_unmap(void *p, size_t n) {
  if (p != NULL) munmap(p, lmp_shm_round(n));
}

int lmp_mutex_init(pthread_mutex_t *m, int recursive) {
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r != 0) return r;
  if ((r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
      (r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0 &&
      (r = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                   : PTHREAD_MUTEX_NORMAL)) == 0)
    r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return r;
}

static struct timespec abstime(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  return ts;
}

/* what pthread said about a lock that may have been left by a dead holder */
static int locked(pthread_mutex_t *m, int r) {
  if (r == 0) return LMP_W_OK;
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(m);
    return LMP_W_OWNERDEAD;
  }
  errno = r;
  return LMP_W_ERROR;
}

/*
** lmp_now() is CLOCK_MONOTONIC, as pthread_mutex_clocklock's clock: a
** wall-clock change neither ends nor stretches a wait.
*/
int lmp_mutex_lock(pthread_mutex_t *m, const lmp_hook *h, double deadline) {
  int r = pthread_mutex_trylock(m);
  if (r != EBUSY) return locked(m, r);
  if (deadline == 0) return LMP_W_TIMEOUT;
  for (;;) {
    double now = lmp_now(), until = now + LMP_SLICE;
    struct timespec ts;
    if (deadline > 0 && deadline <= now) return LMP_W_TIMEOUT;
    if (deadline > 0 && deadline < until) until = deadline;
    ts = abstime(until);
    r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    if (r != ETIMEDOUT) return locked(m, r);
    if (h != NULL && lmp_hook_changed(h)) {
      lmp_hook_restore(h);
      return LMP_W_INTR;
    }
  }
}

int lmp_mutex_enter(pthread_mutex_t *m) {
  int r;
  while ((r = pthread_mutex_lock(m)) == EINTR) {}
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(m);
    return 1;
  }
  return 0;
}

int lmp_futex_wait(uint32_t *word, uint32_t val, const lmp_hook *h,
                   double deadline, double slice) {
  double now = lmp_now(), len;
  struct timespec ts;
  long r;
  if (deadline > 0 && deadline <= now) return LMP_W_TIMEOUT;
  len = slice > 0 ? slice : LMP_SLICE;
  if (deadline > 0 && deadline - now < len) len = deadline - now;
  ts.tv_sec = (time_t)len;
  ts.tv_nsec = (long)((len - (double)ts.tv_sec) * 1e9);
  /* not FUTEX_PRIVATE: the word is shared between processes */
  r = syscall(SYS_futex, word, FUTEX_WAIT, val, &ts, NULL, 0);
  if (r != 0 && errno != EAGAIN && errno != ETIMEDOUT && errno != EINTR)
    return LMP_W_ERROR;
  if (h != NULL && lmp_hook_changed(h)) {
    lmp_hook_restore(h);
    return LMP_W_INTR;
  }
  return LMP_W_OK;
}

void lmp_futex_wake(uint32_t *word, int n) {
  syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/*
** A zombie answers kill(pid, 0) too: a child of ours that died and was not
** joined yet would keep its place (a Barrier party its parent killed kept
** the parent waiting at the barrier for it).  waitid(WNOWAIT) tells such a child without
** reaping it (its Process still gets the status); another process's zombie
** is not ours to see, and counts as alive until its parent reaps it.
*/
int lmp_pid_alive(pid_t pid) {
  siginfo_t si;
  if (pid <= 0) return 1;
  if (kill(pid, 0) != 0) return errno != ESRCH;
  si.si_pid = 0;
  if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
      si.si_pid == pid)
    return 0;
  return 1;
}

int lmp_wait_check(lua_State *L, int r, const char *what) {
  if (r == LMP_W_INTR) lmp_error(L, "lmp: interrupted");
  if (r == LMP_W_ERROR) lmp_syserror(L, what);
  return r;
}

/* ---------------------------------------------------------------------- */
/* classes, guards, arguments                                             */
/* ---------------------------------------------------------------------- */
void lmp_shm_class(lua_State *L, const char *name, const luaL_Reg *methods,
                   const luaL_Reg *meta) {
  if (!luaL_newmetatable(L, name)) return;
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  if (lmp_getfield(L, -2, "__index") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
  } else lua_pop(L, 1);
  lua_setfield(L, -2, "__methods");
}

int lmp_mutex_mine(pthread_mutex_t *m) {
#if defined(__GLIBC__)
  /* glibc keeps the holder's thread id in the mutex; lmp's processes are
     single-threaded as far as lmp's objects go, so the tid is the pid */
  return (m->__data.__lock & 0x3fffffff) == (int)getpid();
#else
  (void)m;
  return 1;
#endif
}

typedef struct guard {
  lua_CFunction release;
} guard;

static int guard_close(lua_State *L) {
  guard *g = (guard *)luaL_checkudata(L, 1, LMP_GUARD);
  lua_CFunction f = g->release;
  if (f == NULL) return 0;
  g->release = NULL;
  lua_settop(L, 1);
  lua_pushcfunction(L, f);
  lmp_getuv(L, 1, 1);
  lua_call(L, 1, 0);
  return 0;
}

void lmp_guard_push(lua_State *L, int idx, lua_CFunction release) {
  guard *g;
  idx = lmp_absindex(L, idx);
  g = (guard *)lmp_newud(L, sizeof *g, 1);
  g->release = release;
  if (luaL_newmetatable(L, LMP_GUARD)) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "release");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, idx);
  lmp_setuv(L, -2, 1);
}

double lmp_acq_deadline(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, idx)) return lmp_now();     /* try once */
    return lmp_optdeadline(L, idx + 1);
  }
  return lmp_optdeadline(L, idx);
}
