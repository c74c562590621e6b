/*
** sys.h -- system calls that resume after signals, clocks, pipes and
** process handles.  Plain C (POSIX + Linux); builds on nothing of lmp's.
*/
#ifndef LMP_SYS_H
#define LMP_SYS_H

#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "buf.h"

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

LMP_INTERNAL double lmp_now(void);        /* monotonic seconds */
LMP_INTERNAL double lmp_realtime(void);   /* wall-clock seconds */
/* milliseconds until a monotonic deadline, for poll(): -1 for none (a
   deadline < 0), never overflowing */
LMP_INTERNAL int lmp_pollms(double deadline);
/* poll() until `deadline`, resuming after signals unless stop(ud) says to
   give up: >0 ready, 0 timeout, -1 error (errno), -2 stopped */
LMP_INTERNAL int lmp_sys_poll(void *fds, unsigned nfds, double deadline,
                              int (*stop)(void *), void *ud);
LMP_INTERNAL void lmp_sleep_ms(int ms);   /* short pauses; signals end them */

LMP_INTERNAL ssize_t lmp_read(int fd, void *p, size_t n);
LMP_INTERNAL int lmp_writeall(int fd, const void *p, size_t n);  /* 0 / -1 */
/* writes every byte of iov[0..n) (changing iov): 0, or -1 with errno */
LMP_INTERNAL int lmp_writevall(int fd, struct iovec *iov, int n);

LMP_INTERNAL int lmp_pipe(int fds[2]);        /* O_CLOEXEC, 1 MiB if allowed */
LMP_INTERNAL int lmp_socketpair(int fds[2]);  /* stream, O_CLOEXEC */
LMP_INTERNAL void lmp_nonblock(int fd);
LMP_INTERNAL int lmp_pidfd(pid_t pid);        /* -1 where unsupported */
LMP_INTERNAL pid_t lmp_waitpid(pid_t pid, int *status, int flags);
LMP_INTERNAL long lmp_cpu_count(void);   /* CPUs we may run on, >= 1 */

#endif
