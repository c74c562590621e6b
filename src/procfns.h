/*
** procfns.h -- the process-level functions: mp.fork, mp.wait, mp.kill,
** mp.getpid, mp.getppid, mp.cpu_count, mp.sleep, mp.time,
** mp.current_process.  Builds on runtime.h.
*/
#ifndef LMP_PROCFNS_H
#define LMP_PROCFNS_H

#include "runtime.h"

/* adds them to the module table on top */
LMP_INTERNAL void lmp_procfns_open(lua_State *L);

#endif
