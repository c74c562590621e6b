/*
** pool_state.h -- a Pool's state, shared by its parts: pool_job.c (jobs and the
** tasks they are cut into), pool_sched.c (handing tasks to workers, taking
** replies), pool_result.c (AsyncResult, imap iterators) and pool.c (the Lua
** API).  Builds on transport.h.
*/
#ifndef LMP_POOL_STATE_H
#define LMP_POOL_STATE_H

#include "transport.h"

#include <stdint.h>
#include <sys/types.h>

/*
** Tasks queued per worker: about QUEUED seconds of work, from the moving
** average of a task's run time.  Long tasks go one at a time (a free
** worker takes the next, as in Python); tiny ones up to MAXDEPTH at once,
** which batches the system calls on both sides.
*/
#define MINDEPTH  1
#define MAXDEPTH  64
#define QUEUED    5e-3
#define FNCACHE   16         /* functions a worker keeps (pool_worker.c) */
#define JOBID_MAX 0x7fffffff /* job ids start over after this */

enum { K_APPLY, K_MAP, K_IMAP, K_IMAPU };   /* job kinds */
enum { J_RUN, J_OK, J_FAIL };               /* job states */
enum { P_RUN, P_CLOSE, P_TERM };            /* pool states */

typedef struct Task {
  int job;              /* job id, 0 = free slot */
  int fnid;             /* the function's id in the workers' caches */
  lua_Integer start;    /* index of the first item */
  lua_Integer count;
  int flags;            /* LMP_TF_* */
  char *args;           /* encoded items, kept until the result arrives */
  size_t argslen;
  int next;             /* free list / requeue list link */
  double timeout;       /* seconds an item may run; 0 none */
} Task;

/* what the scheduler knows of a worker (the transport knows the rest) */
typedef struct Worker {
  int q[MAXDEPTH];      /* task ids sent, oldest first */
  double sent[MAXDEPTH];
  double lastreply;
  int nq;
  int ready;            /* sent its READY frame */
  long assigned;        /* tasks given, for maxtasksperchild */
  int fn[FNCACHE];      /* mirror of the worker's function cache */
  int fnpos;
  int flush;            /* the worker must empty its cache (ids wrapped) */
  int full;             /* its channel did not take all it was given */
  double itemstart;     /* when its current item began (streamed tasks) */
  int itemsdone;        /* items of its current task already returned */
  double timedout;      /* it was killed for running past this timeout */
} Worker;

typedef struct Pool {
  pid_t owner;
  int state;
  int n;
  Worker *w;
  lmp_transport *T;     /* its box is the user value's "transport" */
  long maxtasks;
  int broken;           /* initializer failed: no worker can run */
  Task *tasks;
  int ntasks, freetask;
  int requeue, requeuetail;  /* tasks to send again, FIFO */
  int nextjob;
  int idmax;            /* job ids start over after this */
  int busy;             /* user value "busy" holds ids in use at the wrap */
  int nfnids;           /* entries of user value "fnids": blob -> fnid */
  double tasktime;      /* moving average of a task's run time */
  lua_Integer ohead, otail;  /* user value "order": jobs with input left */
  lua_Integer fhead, ftail;  /* user value "finished": callbacks to run */
  int depth;
  int building;         /* an input iterator is running */
  int joining;          /* join waits: imaps take input without a consumer */
  int nempty;           /* worker slots without a worker (respawn) */
  double respawnat;     /* when to try starting them again */
  uint64_t identmark;   /* objects registered up to here are the workers'
                           too (ident.h): their envs, IPC objects */
  double timeout;       /* default seconds an item may run; 0 none */
  int nprogress;        /* jobs that report progress (user value
                           "progress": id -> job) */
  struct lmp_trace *trace;   /* a Chrome trace being written, or NULL */
  unsigned long finseq; /* jobs finished so far (as_completed's order) */
} Pool;

typedef struct Job {
  int id;
  int fnid;             /* id of its function in the workers' caches: its
                           own id, or an earlier call's with the same
                           stateless function */
  int kind;
  int star;
  int keep;             /* its function is stateless (LMP_TF_KEEP) */
  int state;
  int stopped;          /* no more input is dispatched */
  int inputdone;
  int iter;             /* input is an iterator function */
  int proxy;            /* input is a table with __index/__len: t[i] */
  lua_Integer chunksize;
  lua_Integer nextin;   /* next item to dispatch */
  lua_Integer ninput;   /* items, once known */
  lua_Integer errindex; /* lowest failing item, 0 = none */
  lua_Integer yielded;  /* imap: items handed out */
  int inflight;
  int cbpending;
  lua_Integer evtail;   /* imap_unordered: events queued (yielded = head) */
  int raised;           /* imap: its error was handed out; raise it again */
  int closed;           /* imap: its closer ran; the iterator ends */
  double timeout;       /* seconds an item may run; 0 none */
  int stats;            /* its tasks measure CPU and RSS */
  int progress;         /* 0 none, 1 a bar on stderr, 2 a function */
  lua_Integer done;     /* items whose results came back */
  double drawn;         /* when progress was last reported */
  double begun;         /* when the job was made (progress: rate, ETA) */
  unsigned long finseq; /* its place in the order jobs finished */
  double fintime;       /* when it finished (lmp_realtime) */
  /* info(): the worker of its last task, wall times, CPU, peak RSS */
  lua_Integer pid;
  double started, ended, cpu;
  lua_Integer maxrss;
} Job;

/* fields of a Job's user value table */
#define JV_POOL    "pool"
#define JV_FN      "fn"
#define JV_INPUT   "input"
#define JV_RES     "results"
#define JV_ERR     "err"
#define JV_CB      "cb"
#define JV_ECB     "ecb"
#define JV_VALUES  "values"
#define JV_EVENTS  "events"   /* imap_unordered: indices in arrival order */
#define JV_PROG    "progress" /* progress = function(done, total) */
#define JV_NAME    "name"     /* its function's source:line, for the trace */

#endif
