/*
** pool_report.h -- what a pool tells its user about running work: the
** progress of a call (a bar on stderr, or a function called in the parent)
** and a Chrome/Perfetto trace of its tasks.  Builds on pool_state.h.
*/
#ifndef LMP_POOL_REPORT_H
#define LMP_POOL_REPORT_H

#include "pool_state.h"

/* reports the progress of the jobs that asked for it (user value
   "progress"); `force`: now, not at most every PROGRESS_EVERY seconds.
   A finished job's last report ends it (the bar gets its newline). */
LMP_INTERNAL void lmp_progress_report(lua_State *L, Pool *P, int pidx,
                                      int force);

/* the job J leaves the reports unfinished (abandoned): no more calls,
   and a bar drawn so far gets its newline */
LMP_INTERNAL void lmp_progress_drop(lua_State *L, Pool *P, int pidx, Job *J);

typedef struct lmp_trace lmp_trace;
/* starts a trace file (JSON trace event format); raises if it cannot */
LMP_INTERNAL lmp_trace *lmp_trace_open(lua_State *L, const char *path);
/* one slice on the worker's row: the task of the job at jidx */
LMP_INTERNAL void lmp_trace_task(lua_State *L, lmp_trace *t, int jidx,
                                 lua_Integer worker,
                                 const lmp_replystats *st,
                                 lua_Integer items, size_t in, size_t out,
                                 int failed, const char *error);
/* a marker on a worker's row: "worker lost" (what became of it), "worker
   started" (its replacement) */
LMP_INTERNAL void lmp_trace_worker(lmp_trace *t, lua_Integer worker,
                                   const char *name, const char *what);
/* ends the file (valid JSON from here on) and frees t */
LMP_INTERNAL void lmp_trace_close(lmp_trace *t);

#endif
