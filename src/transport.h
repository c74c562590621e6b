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
  /* kills worker i now (its loss shows as gone/lost afterwards) */
  void (*kill)(lmp_transport *T, int i);
  /* what names worker i to a user: its pid (or rank) */
  lua_Integer (*ident)(lmp_transport *T, int i);
  /* an fd that is readable when a worker has something to say, -1 if the
     transport has none (event loops poll it) */
  int (*fileno)(lua_State *L, lmp_transport *T);
  /* 1 if worker i is running */
  int (*alive)(lmp_transport *T, int i);
  /* frees what is left (after stopall) */
  void (*free)(lua_State *L, lmp_transport *T);
} lmp_tr_ops;

struct lmp_transport {
  const lmp_tr_ops *ops;
  int n;                /* worker slots */
  char err[128];        /* why the last start failed */
};

/* the worker's side: frames in, frames out */
typedef struct lmp_channel lmp_channel;
struct lmp_channel {
  /* blocks for the next task frame: 1 (p, n set), 0 the pool ended, -1 */
  int (*recv)(lmp_channel *C, const char **p, size_t *n);
  /* sends everything the encoder holds as one frame: 0, -1 */
  int (*send)(lmp_channel *C, lmp_enc *E);
};

#endif
