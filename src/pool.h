/*
** pool.h -- mp.Pool: the Pool's Lua API.  Builds on pool_result.h, pool_sched.h and
** tr_fork.h (the transport a pool gets unless it asks for another).
*/
#ifndef LMP_POOL_H
#define LMP_POOL_H

#include "pool_result.h"

/* adds Pool to the module table on top */
LMP_INTERNAL void lmp_pool_open(lua_State *L);

#endif
