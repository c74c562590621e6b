/*
** shvalue.h -- mp.Value and mp.Array: typed shared memory (Python's type
** codes), 1-based arrays, an optional lock, atomic add.  Builds on sync.h.
*/
#ifndef LMP_SHVALUE_H
#define LMP_SHVALUE_H

#include "sync.h"

LMP_INTERNAL void lmp_shvalue_open(lua_State *L);

#endif
