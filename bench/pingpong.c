/*
** pingpong: the raw-C reference for W2.
** Parent and a forked child bounce an 8-byte message over two pipes ITERS
** times (default 10,000); reports microseconds per round trip. The child
** echoes value + 1 and the parent checks it, like W2's apply(x + 1).
**
** usage: pingpong [iters [reps]]    (defaults 10000 1)
** output, one line per repetition:   RESULT pingpong_us <us per round trip>
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RAW_PROG "pingpong"
#include "rawlib.h"

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 10000;
  int reps = argc > 2 ? atoi(argv[2]) : 1;
  int down[2], up[2], r, i;
  pid_t pid;
  int64_t v;
  if (iters < 1) iters = 1;
  if (reps < 1) reps = 1;
  if (pipe(down) != 0 || pipe(up) != 0) die("pipe");
  pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    while (readall(down[0], &v, sizeof v)) {
      v += 1;
      writeall(up[1], &v, sizeof v);
    }
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  /* warm up: make sure the child is scheduled and running */
  v = 0;
  writeall(down[1], &v, sizeof v);
  if (!readall(up[0], &v, sizeof v)) die("warm-up");
  for (r = 0; r < reps; r++) {
    double t0 = now(), t;
    for (i = 0; i < iters; i++) {
      v = i;
      writeall(down[1], &v, sizeof v);
      if (!readall(up[0], &v, sizeof v)) die("child exited");
      if (v != (int64_t)i + 1) {
        fprintf(stderr, "pingpong: wrong reply\n");
        return 1;
      }
    }
    t = now() - t0;
    printf("RESULT pingpong_us %.2f\n", t / iters * 1e6);
    fflush(stdout);
  }
  close(down[1]);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  return 0;
}
