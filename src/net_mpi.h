/*
** net_mpi.h -- what both sides of lmp's MPI backend share (part of the
** lmp.mpi module, never of lmp.so): joining the job, the message kinds,
** frame buffers, the lifeline sockets, the waiting policy's settings and
** the build signature.  Rank 0's transport (tr_mpi.c) and the workers'
** channel (ch_mpi.c) build on it.  Builds on capsule.h and mpi.h.
**
** All task and result data travel as MPI messages on a duplicate of
** MPI_COMM_WORLD.  Besides MPI, each worker rank may hold one TCP
** connection to rank 0, the lifeline: it carries no data, only one-byte
** wake-up "rings" (so a rank can sleep in poll() instead of spinning in
** MPI) and, by closing, the news that a process died (Open MPI 4.1 tells
** MPI nothing of a dead rank).  Without it everything still works: ranks
** then poll MPI with a sleep back-off, and mpirun alone handles a death.
*/
#ifndef LMP_NET_MPI_H
#define LMP_NET_MPI_H

#include "capsule.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* message kinds (MPI tags); every receive but the cancel check takes any
   tag, so MPI's non-overtaking rule keeps a sender's messages in order */
enum {
  M_FRAME = 1,          /* a whole frame: a task, or a reply */
  M_BIG,                /* 8-byte length of a frame sent in M_PARTs */
  M_PART,               /* a piece of a big frame (MPI counts are int) */
  M_HELLO,              /* worker -> 0: rank, pid, build signature */
  M_OK, M_REFUSE,       /* 0 -> worker: the build check's verdict */
  M_STOP,               /* 0 -> worker: the pool ended; leave */
  M_CANCEL              /* 0 -> worker: 4-byte task id to fail; 0 = any,
                           and drop queued tasks until M_STOP */
};

/* ring bytes on a lifeline */
#define RING_WAKE 'R'   /* a message is there or on its way */
#define RING_BIG  'B'   /* worker -> 0: I am taking your big frame: keep
                           MPI moving until it is done */

#define EAGER   4000    /* below vader's eager limit (4 KiB with headers):
                           bigger messages need the receiver to match them */
#define HOSTMAX 256

typedef struct mpi_net {
  const lmp_capsule *X;
  MPI_Comm comm;
  int rank, size;
  pid_t owner;          /* the rank's process (a fork must not use MPI) */
  char (*hosts)[HOSTMAX];  /* every rank's host name */
  double spin;          /* seconds of MPI polling before sleeping */
  double backstop;      /* longest sleep when nothing rings */
  size_t maxmsg;        /* largest MPI message; bigger frames go in parts */
  int lifelines;        /* every worker has its lifeline (else: back-off) */
  int finalized;
  int nofinal;          /* a rank died: leave without MPI_Finalize, whose
                           fence may then wait for ever */
} mpi_net;

/* the policy settings from the environment (LMP_MPI_SPIN_US,
   LMP_MPI_BACKSTOP_MS, LMP_MPI_MAXMSG) */
LMP_INTERNAL void lmpi_settings(mpi_net *N);
/* joins MPI and the job: 0, or -1 with msg set */
LMP_INTERNAL int lmpi_join(mpi_net *N, char *msg, size_t cap);
/* leaves MPI once (a collective: waits for every rank to leave too) */
LMP_INTERNAL void lmpi_finalize(mpi_net *N);

/*
** Frame buffers.  A fresh page costs a fault (~20 us per 4 KiB page on
** the reference VM, far more than a copy), so big buffers come from
** power-of-two classes and freed ones are kept for reuse; classes of 2 MiB
** and more are mmap'ed with MADV_HUGEPAGE.
*/
#define MB_CLASSES 48
#define MB_KEEP    4
typedef struct mpi_bufs {
  void *keep[MB_CLASSES][MB_KEEP];
  int nkeep[MB_CLASSES];
  size_t kept;
} mpi_bufs;
LMP_INTERNAL void *lmpi_alloc(mpi_bufs *B, size_t n);   /* never NULL (aborts the job) */
LMP_INTERNAL void lmpi_free(mpi_bufs *B, void *p);
LMP_INTERNAL void lmpi_freeall(mpi_bufs *B);
LMP_INTERNAL void lmpi_oom(void);                       /* ends the job: out of memory */

/* lifelines: rank 0 listens, each worker connects (a collective); fds are
   lmp-tracked (forks close them).  Rank 0 gets fds[i] for rank i+1 */
LMP_INTERNAL void lmpi_lifelines(lua_State *L, mpi_net *N, int *fds, int *wfd);
LMP_INTERNAL void lmpi_ring(int fd, char what);
/* reads the rings that came: RING_* bits (1 wake, 2 big), -1 closed */
LMP_INTERNAL int lmpi_drain(int fd);

/* this rank's build signature: what must match for bytecode and encoded
   values to mean the same on two ranks */
LMP_INTERNAL size_t lmpi_buildsig(lua_State *L, const lmp_capsule *X, char *buf,
                     size_t cap);
#define SIGMAX 512

#endif
