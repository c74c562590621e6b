/*
** sync.h -- locks that processes share: mp.Lock, mp.RLock, mp.Semaphore,
** mp.BoundedSemaphore.  A Lock is a robust process-shared mutex, so the
** next acquirer after a holder died is told so.  cond.c and shvalue.c use
** locks through this header.  Builds on shm.h and ident.h.
*/
#ifndef LMP_SYNC_H
#define LMP_SYNC_H

#include "ident.h"
#include "shm.h"

/* a lock's shared part */
typedef struct lmp_lockblk {
  pthread_mutex_t m;
  uint32_t depth;       /* an RLock's recursion level (its holder's view) */
} lmp_lockblk;

typedef struct lmp_lock {
  lmp_lockblk *b;
  size_t size;          /* mapped by this object (0: inside another's
                           memory, kept alive by user value 1) */
  int recursive;
} lmp_lock;

/* the Lock or RLock at idx, or an error naming `what` */
LMP_INTERNAL lmp_lock *lmp_tolock(lua_State *L, int idx, const char *what);
/* pushes a Lock over a block inside the memory of the object at owner
   (which its user value 1 keeps alive); the block is initialised */
LMP_INTERNAL lmp_lock *lmp_lock_borrowed(lua_State *L, lmp_lockblk *b,
                                         int owner);
/* lock/unlock for a Condition: full release of an RLock, and back */
LMP_INTERNAL uint32_t lmp_lock_releaseall(lmp_lock *k);
LMP_INTERNAL int lmp_lock_reacquire(lmp_lock *k, uint32_t depth);
/* the Lua methods, for objects that delegate to a lock */
LMP_INTERNAL int lmp_lock_acquire(lua_State *L);
LMP_INTERNAL int lmp_lock_release(lua_State *L);
LMP_INTERNAL int lmp_lock_hold(lua_State *L);

LMP_INTERNAL void lmp_sync_open(lua_State *L);

#endif
