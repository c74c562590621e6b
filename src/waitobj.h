/*
** waitobj.h -- mp.wait(objects [, timeout]) over Connections, Queues,
** Processes, AsyncResults and fds; mp.wait(pid [, nohang]) stays
** procfns.c's.  Builds on conn.h and queue.h; knows Process and
** AsyncResult only by their class names and Lua methods.
*/
#ifndef LMP_WAITOBJ_H
#define LMP_WAITOBJ_H

#include "luax.h"

/* the module table on top, its "wait" already there: wraps it */
LMP_INTERNAL void lmp_waitobj_open(lua_State *L);

#endif
