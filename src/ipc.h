/*
** ipc.h -- the objects processes use to talk: queues, pipes, locks,
** conditions, events, barriers, shared values, and mp.wait over them.
** lmp_ipc_open adds them all to the module table.  Builds on every file
** of that layer (sync, cond, queue, conn, shvalue, waitobj).
*/
#ifndef LMP_IPC_H
#define LMP_IPC_H

#include "luax.h"

/* the module table on top; mp.wait (procfns) must be there already */
LMP_INTERNAL void lmp_ipc_open(lua_State *L);

#endif
