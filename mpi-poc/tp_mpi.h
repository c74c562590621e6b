/*
** tp_mpi.h -- proof-of-concept pool transport over MPI ranks (see tp.h,
** NOTES.md).  Rank 0 drives ranks 1..n-1 through tp_ops; every other rank
** runs tpm_serve() until rank 0 stops it.
*/
#ifndef TP_MPI_H
#define TP_MPI_H

#include "tp.h"

/* how a rank waits once its spin window is over */
enum { TPM_BELL = 0,    /* poll() on the side socket; senders ring it */
       TPM_HYBRID = 1,  /* nanosleep back-off, 20 us doubling to 1 ms */
       TPM_SPIN = 2 };  /* never sleeps (a core per rank) */

typedef struct tpm_opts {
  int policy;           /* TPM_BELL by default */
  double spin;          /* seconds of MPI_Improbe before sleeping (250e-6) */
  double backstop;      /* longest sleep in poll() with TPM_BELL (10e-3) */
  size_t maxmsg;        /* largest MPI message; bigger frames go in parts */
  int lifeline;         /* open side sockets (loss detection + bell), 1 */
} tpm_opts;

/* defaults, overridden by TPM_POLICY=bell|hybrid|spin, TPM_SPIN_US,
   TPM_BACKSTOP_MS, TPM_MAXMSG, TPM_LIFELINE=0 */
void tpm_defaults(tpm_opts *o);

/*
** MPI_Init + side sockets, on every rank (a collective).  Returns the
** transport on rank 0 and NULL on the others (which then call
** tpm_serve()).  *err is set when MPI cannot run a pool (1 rank).
*/
tp *tpm_open(const tpm_opts *o, const char **err);
extern const tp_ops tpm_ops;

/* rank 0: statistics (sleeps, rings sent, rings received, wake-ups) */
void tpm_stats(tp *T, long out[4]);

/*
** Worker ranks: answers task frames until rank 0 stops it or goes away.
** handler(ud, frame, n, &reply, &rn): reply is malloc'ed, the transport
** frees it.  Returns 0 after a STOP, 1 if rank 0's side socket closed,
** -1 if the build check failed (this rank was refused).  Calls
** MPI_Finalize unless rank 0 is gone.
*/
typedef void (*tpm_handler)(void *ud, const char *p, size_t n, char **reply, size_t *rn);
int tpm_serve(tpm_handler h, void *ud);

/*
** Frame buffers.  First-touch page faults cost ~20 us per 4 KiB page on
** the reference VM (100x the copy), so big buffers are mmap'ed with
** MADV_HUGEPAGE (2 MiB faults).  Frames given with TP_GIVE and frames a
** handler returns must come from tp_alloc().
*/
void *tp_alloc(size_t n);
void tp_free(void *p);

/* this rank's Lua build signature (string.dump header of a trivial chunk
   plus lmp's wire parameters), for the start-up check */
size_t tpm_buildsig(char *buf, size_t cap);

#endif
