/*
** cond.h -- waiting together: mp.Condition, mp.Event, mp.Barrier.
** Builds on sync.h (a Condition waits on a Lock or RLock) and shm.h.
*/
#ifndef LMP_COND_H
#define LMP_COND_H

#include "sync.h"

LMP_INTERNAL void lmp_cond_open(lua_State *L);

#endif
