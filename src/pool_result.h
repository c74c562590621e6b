/*
** pool_result.h -- AsyncResult (get, wait, ready, successful) and the iterators
** imap and imap_unordered return.  Builds on pool_sched.h.
*/
#ifndef LMP_POOL_RESULT_H
#define LMP_POOL_RESULT_H

#include "pool_sched.h"

/* moves the job's pool along until the job is done or the deadline
   passes; `raise`: "lmp: timeout" then */
LMP_INTERNAL void lmp_job_wait(lua_State *L, Job *J, int jidx,
                               double deadline, int raise);
/* a blocking call's wait (apply, map): when it is left by an error -- a
   callback's or a progress function's, Ctrl-C -- the job is abandoned
   before the error goes on, so it does not run on behind later calls */
LMP_INTERNAL void lmp_job_waitcall(lua_State *L, Job *J, int jidx);
/* replaces the job on top by imap's four values: iterator, nil, nil, and
   the job (to close when a generic for is left) */
LMP_INTERNAL int lmp_imap_iterator(lua_State *L);
/* makes the AsyncResult class; adds as_completed to the module table on
   top */
LMP_INTERNAL void lmp_result_open(lua_State *L);

#endif
