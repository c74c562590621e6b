/*
** capsule.h -- what lmp.so and the separately built lmp.mpi module
** (lmp/mpi.so) lend each other, as tables of function pointers published
** as light userdata in the registry ("API capsules").  lmp.so never links
** libmpi and lmp.mpi duplicates none of lmp's internals: it calls them
** through lmp's capsule, and pool.c reaches the MPI transport through
** lmp.mpi's.  Each capsule carries a version and the sizes of the structs
** both sides share, so a module built against another lmp is refused with
** a clear error instead of crashing.  Builds on transport.h.
*/
#ifndef LMP_CAPSULE_H
#define LMP_CAPSULE_H

#include "transport.h"

/* bump when a field below, or a struct in `sizes`, changes */
#define LMP_CAPSULE_VERSION 1

#define LMP_KEY_CAPSULE    "lmp.capsule"      /* lmp.so's, for lmp.mpi */
#define LMP_KEY_MPICAPSULE "lmp.mpi.capsule"  /* lmp.mpi's, for pool.c */

/* the layout both sides must agree on */
#define LMP_CAPSULE_SIZES \
  ((unsigned long)(sizeof(lmp_transport) + 1000 * sizeof(lmp_channel) + \
                   1000000ul * sizeof(lmp_hook)))

/* lmp.so -> lmp.mpi */
typedef struct lmp_capsule {
  int version;                  /* LMP_CAPSULE_VERSION */
  unsigned long sizes;          /* LMP_CAPSULE_SIZES */
  const char *lmp_version;      /* "0.2.0": ranks must run the same */
  int wire_version;             /* LMP_WIRE_VERSION */
  double (*now)(void);          /* monotonic seconds */
  /* poll() until deadline; -2 when a Ctrl-C hook arrived (hooks restored) */
  int (*poll)(const lmp_hook *h, void *fds, unsigned nfds, double deadline);
  int (*hook_changed)(const lmp_hook *h);
  void (*hook_restore)(const lmp_hook *h);
  /* everything the encoder holds, in one buffer (valid until its reset) */
  const char *(*enc_flatten)(lmp_enc *E, size_t *len);
  /* fds lmp's forks close in the child */
  void (*track_fd)(lua_State *L, int fd);
  void (*close_fd)(lua_State *L, int fd);
  void (*child_exit)(int code); /* flush stdio, _exit */
} lmp_capsule;

/* lmp.mpi -> pool.c */
typedef struct lmp_mpi_capsule {
  int version;                  /* LMP_CAPSULE_VERSION */
  unsigned long sizes;          /* LMP_CAPSULE_SIZES */
  /*
  ** Joins MPI (MPI_Init once; a collective: every rank calls it) and
  ** pushes this rank's side: on rank 0 a transport over ranks 1..n-1
  ** (*T set, *C NULL; no worker started yet), on the others a channel to
  ** rank 0 that passed the build check (*C set).  Raises "lmp: ..." when
  ** the job cannot run a pool.
  */
  void (*open)(lua_State *L, lmp_transport **T, lmp_channel **C);
} lmp_mpi_capsule;

#endif
