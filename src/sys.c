/*
** sys.c -- system calls that resume after signals, clocks, pipes.
*/
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double lmp_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double lmp_realtime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int lmp_pollms(double deadline) {
  double left;
  if (deadline < 0) return -1;
  left = deadline - lmp_now();
  if (left <= 0) return 0;
  if (left > 1e6) return 1000000000;   /* poll again then */
  return (int)(left * 1000.0) + 1;
}

int lmp_sys_poll(void *fds, unsigned nfds, double deadline,
                 int (*stop)(void *), void *ud) {
  for (;;) {
    int r = poll((struct pollfd *)fds, (nfds_t)nfds, lmp_pollms(deadline));
    if (r >= 0) return r;
    if (errno != EINTR) return -1;
    if (stop != NULL && stop(ud)) return -2;
  }
}

void lmp_sleep_ms(int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

ssize_t lmp_read(int fd, void *p, size_t n) {
  for (;;) {
    ssize_t r = read(fd, p, n);
    if (r >= 0 || errno != EINTR) return r;
  }
}

int lmp_writeall(int fd, const void *p, size_t n) {
  const char *s = (const char *)p;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

int lmp_writevall(int fd, struct iovec *iov, int n) {
  int k = 0;
  while (k < n) {
    ssize_t w = writev(fd, iov + k, n - k);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (k < n && (size_t)w >= iov[k].iov_len) {
      w -= (ssize_t)iov[k].iov_len;
      k++;
    }
    if (k < n) {
      iov[k].iov_base = (char *)iov[k].iov_base + w;
      iov[k].iov_len -= (size_t)w;
    }
  }
  return 0;
}

/*
** Result pipes get 1 MiB of kernel buffer when the system allows it: big
** results then cross in far fewer wake-ups (64 KiB is the default).
*/
int lmp_pipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
#if defined(F_SETPIPE_SZ)
  (void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
#endif
  return 0;
}

int lmp_socketpair(int fds[2]) {
  return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
}

void lmp_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int lmp_pidfd(pid_t pid) {
#if defined(SYS_pidfd_open)
  return (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec */
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

pid_t lmp_waitpid(pid_t pid, int *status, int flags) {
  pid_t r;
  do r = waitpid(pid, status, flags);
  while (r < 0 && errno == EINTR);
  return r;
}

long lmp_cpu_count(void) {
  cpu_set_t set;
  long n = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n;
}
