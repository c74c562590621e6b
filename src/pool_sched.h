/*
** pool_sched.h -- a Pool's scheduler: hands tasks to workers through the
** transport (transport.h: it never knows which one), takes in replies,
** notices lost workers, runs callbacks.  Builds on pool_job.h and transport.h.
*/
#ifndef LMP_POOL_SCHED_H
#define LMP_POOL_SCHED_H

#include "pool_job.h"
#include "pool_report.h"

typedef int (*lmp_donefn)(lua_State *L, Pool *P, int pidx, void *ud);

/*
** Moves the pool at pidx along until done() says so; 1, or 0 at the
** deadline (monotonic; < 0 none).  SIGINT terminates the pool and raises
** "lmp: interrupted".
*/
LMP_INTERNAL int lmp_pool_pump(lua_State *L, Pool *P, int pidx,
                               lmp_donefn done, void *ud, double deadline);
/* takes in what came back and runs callbacks, without waiting */
LMP_INTERNAL void lmp_pool_poll(lua_State *L, Pool *P, int pidx);
/* a new job came: hand out its first tasks now, without waiting; async
   (not an imap, whose consumer pumps): as many as the workers take */
LMP_INTERNAL void lmp_pool_submitted(lua_State *L, Pool *P, int pidx, int async);
LMP_INTERNAL int lmp_done_job(lua_State *L, Pool *P, int pidx, void *ud);
LMP_INTERNAL int lmp_done_all(lua_State *L, Pool *P, int pidx, void *ud);
/* 1 if some imap job is held back, waiting for its consumer */
LMP_INTERNAL int lmp_imap_waiting(lua_State *L, Pool *P, int pidx);

/* starts workers in the empty slots: 0, or -1 (why: P->T->err) */
LMP_INTERNAL int lmp_pool_respawn(lua_State *L, Pool *P, int pidx);
/* waits until every worker ran the initializer: 0, or -1 (broken) */
LMP_INTERNAL int lmp_pool_waitready(lua_State *L, Pool *P, int pidx);
/* stops the workers (LMP_STOP_*) and fails what was pending with `why` */
LMP_INTERNAL void lmp_pool_stop(lua_State *L, Pool *P, int pidx, int how,
                                const char *why);

#endif
