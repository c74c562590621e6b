/*
** process.h -- mp.Process and mp.active_children.  Builds on runtime.h,
** encode.h, decode.h and wire.h.
*/
#ifndef LMP_PROCESS_H
#define LMP_PROCESS_H

#include "decode.h"
#include "encode.h"
#include "runtime.h"

/* adds Process and active_children to the module table on top */
LMP_INTERNAL void lmp_process_open(lua_State *L);

#endif
