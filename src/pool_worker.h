/*
** pool_worker.h -- a Pool worker's loop: runs the pool's initializer, then
** takes task frames from a channel, calls the task on each item, and sends
** back the results or the error.  Whatever the transport, every worker
** runs this.  Builds on transport.h (the channel), encode.h and decode.h.
*/
#ifndef LMP_POOL_WORKER_H
#define LMP_POOL_WORKER_H

#include "decode.h"
#include "encode.h"
#include "transport.h"

#include <stdint.h>

typedef struct lmp_workercfg {
  int init, initargs;   /* stack indices: the initializer (or nil) and its
                           args table (or nil) */
  long maxtasks;        /* leave after this many tasks; 0 never */
  uint64_t identmark;   /* objects shared with the parent (ident.h) */
} lmp_workercfg;

/* pushes the "initializer" and "initargs" fields of the user value table
   of the object at idx, and points cfg at them */
LMP_INTERNAL void lmp_workercfg_push(lua_State *L, int idx,
                                     lmp_workercfg *cfg);
/* the worker's loop; leaves the process (lmp_child_exit) when it ends */
LMP_INTERNAL void lmp_worker_run(lua_State *L, lmp_channel *C,
                                 const lmp_workercfg *cfg);

#endif
