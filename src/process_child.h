/*
** process_child.h -- a Process child's side: the target runs in a
** coroutine of its own (clean tracebacks), which SIGINT interrupts as
** lua5.4 interrupts a script; its values or its error go back up the
** pipe.  Builds on runtime.h and encode.h.
*/
#ifndef LMP_PROCESS_CHILD_H
#define LMP_PROCESS_CHILD_H

#include "encode.h"
#include "runtime.h"

/* runs the target of the Process at pidx (its user value's "target" and
   "args"), writes the result frame to fd, calls finish (the child's own
   children end as a script's do) and leaves the process */
LMP_INTERNAL void lmp_process_child(lua_State *L, int pidx, int fd,
                                    void (*finish)(lua_State *L));

#endif
