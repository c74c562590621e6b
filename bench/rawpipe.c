/*
** rawpipe: the raw-C reference for W4 bandwidth.
** A child forked from this process writes 64 MiB (67,108,864 bytes) into a
** pipe in 1 MiB writes; the parent reads it into a 64 MiB buffer. The source
** buffer is built before the fork (like the W4 string) and the destination is
** faulted in after the fork, so only the transfer is timed, from the parent's
** "go" byte to the last byte read. Fork and reaping are outside the timed
** region.
**
** usage: rawpipe [reps]          (default 5)
** output, one line per repetition:   RESULT rawpipe_mbps <MB/s, MB = 10^6 bytes>
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RAW_PROG "rawpipe"
#include "rawlib.h"

#define TOTAL ((size_t)64 << 20)
#define CHUNK ((size_t)1 << 20)

/*
** One long-lived child (like a pool worker) serves every repetition: each
** "go" byte makes it write the whole buffer. The parent's destination buffer
** is allocated and faulted in after the fork, so the parent never pays
** copy-on-write faults for pages it shares with the child.
*/
static pid_t child;
static int data[2], go[2];

static void startchild(const char *src) {
  char c;
  if (pipe(data) != 0 || pipe(go) != 0) die("pipe");
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(data[0]);
    close(go[1]);
    for (;;) {
      ssize_t r = read(go[0], &c, 1);
      size_t off;
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) _exit(0);
      for (off = 0; off < TOTAL; off += CHUNK) writeall(data[1], src + off, CHUNK);
    }
  }
  close(data[1]);
  close(go[0]);
}

static double onerun(const char *src, char *dst) {
  size_t got = 0;
  char c = 'g';
  double t0, t1;
  t0 = now();
  writeall(go[1], &c, 1);
  while (got < TOTAL) {
    ssize_t r = read(data[0], dst + got, TOTAL - got < CHUNK ? TOTAL - got : CHUNK);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) {
      fprintf(stderr, "rawpipe: short read (%zu bytes)\n", got);
      exit(1);
    }
    got += (size_t)r;
  }
  t1 = now();
  if (memcmp(src, dst, TOTAL) != 0) {
    fprintf(stderr, "rawpipe: data mismatch\n");
    exit(1);
  }
  memset(dst, 0, TOTAL);
  return t1 - t0;
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5, i;
  char *src = malloc(TOTAL), *dst;
  size_t k;
  if (src == NULL) die("malloc");
  if (reps < 1) reps = 1;
  for (k = 0; k < TOTAL; k++) src[k] = (char)(k * 7 + (k >> 12));
  startchild(src);
  dst = malloc(TOTAL);
  if (dst == NULL) die("malloc");
  memset(dst, 1, TOTAL);
  for (i = 0; i < reps; i++) {
    double t = onerun(src, dst);
    printf("RESULT rawpipe_mbps %.1f\n", (double)TOTAL / t / 1e6);
    fflush(stdout);
  }
  close(go[1]);
  close(data[0]);
  while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
  free(src);
  free(dst);
  return 0;
}
