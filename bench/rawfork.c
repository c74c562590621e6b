/*
** rawfork: the raw-C reference for W5.
** fork + _exit(0) in the child + waitpid in the parent, ITERS times (default
** 1000); reports microseconds per process.
**
** usage: rawfork [iters [reps]]     (defaults 1000 1)
** output, one line per repetition:   RESULT rawfork_us <us per process>
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RAW_PROG "rawfork"
#include "rawlib.h"

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 1000;
  int reps = argc > 2 ? atoi(argv[2]) : 1;
  int r, i;
  if (iters < 1) iters = 1;
  if (reps < 1) reps = 1;
  for (r = 0; r < reps; r++) {
    double t0 = now(), t;
    for (i = 0; i < iters; i++) {
      int st;
      pid_t pid = fork();
      if (pid < 0) {
        fprintf(stderr, "rawfork: fork: %s\n", strerror(errno));
        return 1;
      }
      if (pid == 0) _exit(0);
      while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
          fprintf(stderr, "rawfork: waitpid: %s\n", strerror(errno));
          return 1;
        }
      }
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "rawfork: child failed\n");
        return 1;
      }
    }
    t = now() - t0;
    printf("RESULT rawfork_us %.2f\n", t / iters * 1e6);
    fflush(stdout);
  }
  return 0;
}
