/*
** transport.h -- the seam between the Pool's scheduler and the processes
** that run its tasks.  The scheduler (pool_sched.c) sees numbered workers it can
** start, send frames (wire.h) to, wait on, read frames from, and lose; it
** never knows whether they are forked children on pipes (tr_fork.c) or MPI
** ranks on other machines.  A worker's side is a channel: receive a task
** frame, send a reply frame (pool_worker.c runs the loop over one).
** Builds on luax.h, encode.h and wire.h.
*/
#ifndef LMP_TRANSPORT_H
#define LMP_TRANSPORT_H

#include "encode.h"
#include "luax.h"
#include "wire.h"

#include <stdint.h>

typedef struct lmp_transport lmp_transport;

/* how stopall ends the workers */
enum {
  LMP_STOP_JOIN,        /* their input ends; wait until they exit */
  LMP_STOP_KILL,        /* kill them now and wait for them */
  LMP_STOP_BRIEF        /* kill them now; wait a little (a collector) */
};

typedef struct lmp_tr_ops {
  /* starts worker i: 0, or -1 with why in T->err (nothing left behind) */
  int (*start)(lua_State *L, lmp_transport *T, int i);
  /* queues a frame for worker i (its bytes are copied) */
  void (*send)(lua_State *L, lmp_transport *T, int i, const char *p,
               size_t n);
  /* 1 if worker i still has queued bytes its channel did not take */
  int (*backlog)(lmp_transport *T, int i);
  /* writes what the channels take now, without waiting or reading */
  void (*flush)(lmp_transport *T);
  /* writes what is queued and reads what arrived, waiting until something
     did or the deadline (monotonic, < 0 none) passes: >0 something to
     look at, 0 timeout, -1 error (errno), -2 interrupted (hooks restored) */
  int (*wait)(lua_State *L, lmp_transport *T, const lmp_hook *h,
              double deadline);
  /* 1 and the next whole frame of worker i (valid until the next wait) */
  int (*recv)(lmp_transport *T, int i, const char **p, size_t *n);
  /* 1 if worker i is gone; then `lost` pushes what became of it ("pool
     worker 4242 killed by signal 9 (SIGKILL)") and frees its slot */
  int (*gone)(lmp_transport *T, int i);
  void (*lost)(lua_State *L, lmp_transport *T, int i);
  /* ends every worker (LMP_STOP_*) */
  void (*stopall)(lua_State *L, lmp_transport *T, int how);
  /* stops task `task` (the task header's id, wire.h) of worker i now: a
     process it can kill is killed (its loss shows as gone/lost afterwards);
     a worker it cannot kill (an MPI rank) fails that task if it still runs
     it (its error reply follows), or else ignores the request */
  void (*cancel)(lmp_transport *T, int i, uint32_t task);
  /* what names worker i to a user: its pid (or rank) */
  lua_Integer (*ident)(lmp_transport *T, int i);
  /* an fd that is readable when a worker has something to say, -1 if the
     transport has none (event loops poll it) */
  int (*fileno)(lua_State *L, lmp_transport *T);
  /* 1 if worker i is running */
  int (*alive)(lmp_transport *T, int i);
  /* where worker i runs, for its tasks' errors ("mpi rank 2 on host
     node17"); NULL: errors stay as the worker made them */
  const char *(*where)(lmp_transport *T, int i);
  /* frees what is left (after stopall) */
  void (*free)(lua_State *L, lmp_transport *T);
} lmp_tr_ops;

struct lmp_transport {
  const lmp_tr_ops *ops;
  int n;                /* worker slots */
  int fixed;            /* workers cannot be replaced (MPI ranks): a lost
                           one leaves its slot empty for good */
  char err[384];        /* why the last start failed */
};

/* the worker's side: frames in, frames out */
typedef struct lmp_channel lmp_channel;
struct lmp_channel {
  /* blocks for the next task frame: 1 (p, n set), 0 the pool ended, -1 */
  int (*recv)(lmp_channel *C, const char **p, size_t *n);
  /* sends everything the encoder holds as one frame: 0, -1 */
  int (*send)(lmp_channel *C, lmp_enc *E);
  /* optional: task `task` starts running on thread T (T NULL: it ended).
     A channel whose worker cannot be killed hooks T here, to fail the
     task when the pool cancels it */
  void (*running)(lmp_channel *C, lua_State *T, uint32_t task);
  /* optional: leaves the process with status `code` (NULL:
     lmp_child_exit); never returns */
  void (*leave)(lmp_channel *C, int code);
};

#endif
