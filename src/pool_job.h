/*
** pool_job.h -- a Pool's jobs (each call: an apply, a map, an imap; its
** AsyncResult) and the tasks they are cut into.  Builds on pool_state.h,
** encode.h and decode.h.
*/
#ifndef LMP_POOL_JOB_H
#define LMP_POOL_JOB_H

#include "decode.h"
#include "encode.h"
#include "pool_state.h"

/* what a pool call asks for: stack indices (0: none) and settings */
typedef struct lmp_jobspec {
  int kind, star;
  int fn, input;        /* input: args table (apply), array or iterator */
  lua_Integer chunksize;   /* 0: the default */
  int cb, ecb;
  double timeout;       /* per task (item), seconds; 0: the pool's; -1: none */
  int progress;         /* 0 none, -1 a bar on stderr, else the stack
                           index of a function(done, total) */
  int stats;            /* its tasks measure CPU and RSS (info()) */
} lmp_jobspec;

/* creates and registers a job (the AsyncResult, pushed) for the pool at
   pidx; raises on bad arguments */
LMP_INTERNAL Job *lmp_job_new(lua_State *L, Pool *P, int pidx,
                              const lmp_jobspec *spec);
/* pushes the job with that id (nil if finished or abandoned) */
LMP_INTERNAL Job *lmp_job_push(lua_State *L, int pidx, int id);
/* unregisters J, if its id still names it */
LMP_INTERNAL void lmp_job_forget(lua_State *L, int pidx, Job *J);
/* records the error on top (popped) for item `index`; lowest wins */
LMP_INTERNAL void lmp_job_seterror(lua_State *L, Job *J, int jidx,
                                   lua_Integer index);
/* stores the value on top (popped) as the result of item `index` */
LMP_INTERNAL void lmp_job_store(lua_State *L, Job *J, int jidx,
                                lua_Integer index);
/* the job is done once nothing is in flight and no input is left */
LMP_INTERNAL void lmp_job_check(lua_State *L, Job *J, int jidx);
LMP_INTERNAL void lmp_job_finish(lua_State *L, Job *J, int jidx);
/* an imap job whose consumer fell behind takes no input (joins aside) */
LMP_INTERNAL int lmp_job_blocked(Pool *P, Job *J);
/* pushes a finished job's outcome (returns how many values); raises its
   error */
LMP_INTERNAL int lmp_job_result(lua_State *L, Job *J, int jidx);

/* the next task of the job at jidx (its items encoded), 0 if none */
LMP_INTERNAL int lmp_job_nexttask(lua_State *L, Pool *P, int jidx);
LMP_INTERNAL void lmp_task_free(Pool *P, int t);
LMP_INTERNAL void lmp_task_requeue(Pool *P, int t);

#endif
