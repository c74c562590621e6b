/*
** rawlib.h -- the few helpers the raw C references share (a clock, a fatal
** error, whole reads and writes that retry EINTR).  Define RAW_PROG to the
** program's name before including it.
*/
#ifndef RAWLIB_H
#define RAWLIB_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void die(const char *what) {
  fprintf(stderr, RAW_PROG ": %s: %s\n", what, strerror(errno));
  exit(1);
}

/* returns 0 on EOF before anything was read */
static inline int readall(int fd, void *buf, size_t n) {
  char *p = (char *)buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) return 0;
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

static inline void writeall(int fd, const void *buf, size_t n) {
  const char *p = (const char *)buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

#endif
