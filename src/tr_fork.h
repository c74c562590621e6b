/*
** tr_fork.h -- the Pool's transport on this machine: each worker a forked
** child, tasks down a socket, replies up a pipe.  Implements transport.h.
** Builds on transport.h, pool_worker.h and runtime.h.
*/
#ifndef LMP_TR_FORK_H
#define LMP_TR_FORK_H

#include "runtime.h"
#include "transport.h"
#include "pool_worker.h"

/*
** A transport for n workers, as a userdata pushed on the stack (it must
** stay reachable while the pool lives).  Workers run lmp_worker_run with
** `cfg`; its initializer and initargs are taken from the stack now and
** kept.  No worker is started yet.
*/
LMP_INTERNAL lmp_transport *lmp_trfork_new(lua_State *L, int n,
                                           const lmp_workercfg *cfg);

#endif
