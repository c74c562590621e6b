/*
** shm.h -- what lmp's inter-process objects are made of: shared memory that
** a forked child inherits, robust process-shared mutexes, futex waits in
** slices that Ctrl-C can interrupt, and a liveness test for pids.  See
** doc/design.md, "Objects that processes share".  Builds on luax.h (the
** Ctrl-C hook) and sys.h.
*/
#ifndef LMP_SHM_H
#define LMP_SHM_H

#include "luax.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* results of the waits below */
#define LMP_W_OK        0     /* got it / woken (look again) */
#define LMP_W_OWNERDEAD 1     /* got the mutex; its last holder died */
#define LMP_W_TIMEOUT   2
#define LMP_W_INTR      3     /* Ctrl-C: hooks restored, raise */
#define LMP_W_ERROR     4     /* errno set */

/*
** How long one blocking step may take before the Ctrl-C hook is looked at
** again.  Futex waits and mutex waits are restarted by the kernel after a
** signal handler that has SA_RESTART, so the hook is checked between slices.
*/
#define LMP_SLICE 0.05

/* zeroed shared memory that children forked later share; NULL + errno */
LMP_INTERNAL void *lmp_shm_anon(size_t n);
LMP_INTERNAL void lmp_shm_unmap(void *p, size_t n);
/* page-rounded size */
LMP_INTERNAL size_t lmp_shm_round(size_t n);

/* a process-shared robust mutex (recursive: an RLock's); 0 or an errno */
LMP_INTERNAL int lmp_mutex_init(pthread_mutex_t *m, int recursive);
/*
** Takes m before `deadline` (lmp_now() seconds; < 0: none; 0: try once).
** LMP_W_OK, LMP_W_OWNERDEAD (made consistent: the caller holds it),
** LMP_W_TIMEOUT, LMP_W_INTR (h may be NULL: no interrupts), LMP_W_ERROR.
*/
LMP_INTERNAL int lmp_mutex_lock(pthread_mutex_t *m, const lmp_hook *h,
                                double deadline);
/* for internal locks whose critical sections are short: waits without a
   deadline or interrupts; 1 if the last holder died (m is consistent) */
LMP_INTERNAL int lmp_mutex_enter(pthread_mutex_t *m);

/*
** Sleeps while *word == val, at most until deadline (< 0: none) and at
** most `slice` seconds (<= 0: LMP_SLICE): LMP_W_OK (woken, changed, or the
** slice ended: look again), LMP_W_TIMEOUT, LMP_W_INTR.
*/
LMP_INTERNAL int lmp_futex_wait(uint32_t *word, uint32_t val,
                                const lmp_hook *h, double deadline,
                                double slice);
LMP_INTERNAL void lmp_futex_wake(uint32_t *word, int n);

/* 0 if pid is certainly gone (a dead process's permits may be taken back) */
LMP_INTERNAL int lmp_pid_alive(pid_t pid);

/* the error a wait result gives an object's method: raises for INTR and
   ERROR ("lmp: interrupted", "lmp: <what>: strerror"), else returns r */
LMP_INTERNAL int lmp_wait_check(lua_State *L, int r, const char *what);



/*
** Classes and scoped holds shared by the objects.  lmp_shm_class makes the
** metatable `name` (left on the stack): methods in its __index table unless
** meta has its own __index; "__methods" holds them either way.
*/
LMP_INTERNAL void lmp_shm_class(lua_State *L, const char *name,
                                const luaL_Reg *methods, const luaL_Reg *meta);
/* 1 if this thread holds m (a robust mutex) */
LMP_INTERNAL int lmp_mutex_mine(pthread_mutex_t *m);
/* pushes a to-be-closed guard that calls release(object at idx) once */
LMP_INTERNAL void lmp_guard_push(lua_State *L, int idx, lua_CFunction release);
/* a deadline from acquire-style arguments: ([timeout]) or (block
   [, timeout]) as Python's acquire(block, timeout) */
LMP_INTERNAL double lmp_acq_deadline(lua_State *L, int idx);
#endif
