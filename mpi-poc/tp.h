/*
** tp.h -- a pool transport, as the scheduler should see it (proposal).
**
** The scheduler (pool.c's dispatch/reply logic: per-worker FIFOs, adaptive
** depth, function caches, requeue on loss) drives workers only through
** this interface; what carries the frames -- fork + socket/pipe, or MPI
** ranks -- is the transport's business.  A frame is an opaque byte string
** (lmp's task header + encoded arguments one way, status + encoded results
** the other); a transport delivers a worker's frames whole and in order.
**
** Differences from a plain start/send/wait/recv/stop over file descriptors,
** and why (details in NOTES.md):
**  - tp_wait() owns the blocking.  Pipes block in poll(); MPI has no file
**    descriptor to poll, so its wait spins on MPI_Improbe for a while and
**    then sleeps in poll() on side sockets that a sender "rings" when it
**    predicts the receiver may be asleep.  Exposing fds to the scheduler
**    would make it poll() something MPI never wakes.
**  - tp_send() takes whole frames, not a byte stream: MPI messages are
**    frames already, and its non-blocking send needs the buffer kept alive
**    until completion, so the transport takes ownership (TP_GIVE) or copies.
**  - Every worker can become TP_LOST; for MPI that is only known through a
**    side channel (Open MPI 4.1 reports nothing through MPI), and a lost
**    MPI worker cannot be replaced: tp_start() on a lost slot fails.
**  - tp_describe() gives the text errors use ("rank 2 (node17)" / "pid 4242").
*/
#ifndef TP_H
#define TP_H

#include <stddef.h>

typedef struct tp tp;

/* tp_wait() events, per worker */
#define TP_READABLE 1   /* tp_recv() has at least one frame */
#define TP_WRITABLE 2   /* its queued output dropped below the low-water mark */
#define TP_LOST     4   /* gone: no more frames will come; tp_why() says why */

typedef struct tp_event {
  int worker;
  unsigned what;
} tp_event;

/* tp_send() flags */
#define TP_GIVE 1       /* the transport owns `frame` (malloc'ed) and frees it */

typedef struct tp_ops {
  /* number of worker slots (fork: processes; MPI: ranks 1..n-1) */
  int (*workers)(tp *T);
  /* makes slot w usable: fork spawns; MPI handshakes (build check) once.
     0 = ok; -1 = failed, message in tp_why() */
  int (*start)(tp *T, int w);
  /* queues a frame; never blocks.  0 ok, -1 if w is lost */
  int (*send)(tp *T, int w, void *frame, size_t len, int flags);
  /* bytes queued for w that the peer has not taken yet (flow control) */
  size_t (*pending)(tp *T, int w);
  /* waits until an event or the deadline (absolute, lmp_now() clock;
     < 0 = none; 0 = just poll).  Fills up to max events, returns how
     many; 0 on timeout; -1 interrupted (EINTR and the caller's hook
     changed: the Lua "interrupted!" case) */
  int (*wait)(tp *T, double deadline, tp_event *ev, int max);
  /* next complete frame of w: 1 and *p, *n (valid until the next recv or
     wait call), or 0 if none */
  int (*recv)(tp *T, int w, const char **p, size_t *n);
  /* "rank 2 (node17)", "pid 4242" */
  const char *(*describe)(tp *T, int w);
  /* why w was lost or failed to start */
  const char *(*why)(tp *T, int w);
  /* orderly end: w finishes what it has and exits (MPI: STOP message) */
  void (*stop)(tp *T, int w);
  /* ends the whole transport; waits for the stops to be delivered */
  void (*close)(tp *T);
} tp_ops;

#endif
