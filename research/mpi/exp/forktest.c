/*
** forktest.c -- fork() in an MPI rank after MPI_Init (Open MPI 4.1).
**
** usage: mpirun -n 2 forktest MODE
** Rank 1 (a "worker") does MODE after MPI_Init, then ranks 0 and 1 check
** that MPI still works: 1000 8-byte round trips, a 4 MiB message each way
** (vader's single-copy path) and an MPI_Allreduce.
**   _exit      fork; the child calls _exit(0) at once
**   exit       fork; the child calls exit(0) (runs atexit handlers and
**              library destructors inherited from the parent)
**   exec       fork; the child execs /bin/true
**   system     system("true") (glibc: posix_spawn, i.e. clone(CLONE_VFORK))
**   popen      popen("echo hi") and read it
**   work       fork; the child touches 64 MiB and sums it, then _exit(0)
**   mpicall    fork; the child calls MPI_Send to rank 0 (never do this)
**   orphan     fork; the child sleeps 5 s and is never waited for: is it
**              still there after the job ends?
**   orphanq    the same, but the child first points fds 0-2 at /dev/null
*/
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int me;

static void check_mpi(const char *when) {
  static char big[4 << 20];
  long v = 0;
  int i, sum = 0, one = 1;
  double t0 = MPI_Wtime();
  for (i = 0; i < 1000; i++) {
    if (me == 0) {
      MPI_Send(&v, 1, MPI_LONG, 1, 0, MPI_COMM_WORLD);
      MPI_Recv(&v, 1, MPI_LONG, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (me == 1) {
      MPI_Recv(&v, 1, MPI_LONG, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      v++;
      MPI_Send(&v, 1, MPI_LONG, 0, 0, MPI_COMM_WORLD);
    }
  }
  t0 = (MPI_Wtime() - t0) / 1000 * 1e6;
  memset(big, me + 1, sizeof big);
  if (me == 0) {
    MPI_Send(big, sizeof big, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
    MPI_Recv(big, sizeof big, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else if (me == 1) {
    MPI_Recv(big, sizeof big, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    big[0]++;
    MPI_Send(big, sizeof big, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
  }
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (me == 0)
    printf("rank 0: MPI %s: %ld round trips, %.2f us each; 4 MiB echo %s; allreduce %d\n",
           when, v, t0, big[0] == 2 && big[1] == 1 ? "ok" : "CORRUPT", sum);
  fflush(stdout);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "_exit";
  pid_t pid = 0;
  int st = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  check_mpi("before");
  if (me == 1) {
    if (!strcmp(mode, "system")) {
      st = system("true");
      printf("rank 1: system() returned %d\n", st);
    } else if (!strcmp(mode, "popen")) {
      char buf[64] = "";
      FILE *p = popen("echo hi", "r");
      if (fgets(buf, sizeof buf, p) == NULL) buf[0] = 0;
      printf("rank 1: popen read %s", buf);
      pclose(p);
    } else {
      pid = fork();
      if (pid == 0) {
        if (!strcmp(mode, "exit")) exit(0);
        if (!strcmp(mode, "exec")) {
          execl("/bin/true", "true", (char *)NULL);
          _exit(127);
        }
        if (!strcmp(mode, "work")) {
          size_t n = 64 << 20, k;
          unsigned char *m = malloc(n);
          unsigned long s = 0;
          memset(m, 1, n);
          for (k = 0; k < n; k += 4096) s += m[k];
          _exit(s == n / 4096 ? 0 : 1);
        }
        if (!strcmp(mode, "mpicall")) {
          long v = 42;
          int rc = MPI_Send(&v, 1, MPI_LONG, 0, 7, MPI_COMM_WORLD);
          fprintf(stderr, "child of rank 1: MPI_Send returned %d\n", rc);
          _exit(0);
        }
        if (!strcmp(mode, "orphanq")) {
          int fd = open("/dev/null", O_RDWR);
          dup2(fd, 0);
          dup2(fd, 1);
          dup2(fd, 2);
          sleep(5);
          _exit(0);
        }
        if (!strcmp(mode, "orphan")) {
          sleep(5);
          _exit(0);
        }
        _exit(0);
      }
      if (strncmp(mode, "orphan", 6) != 0) {
        waitpid(pid, &st, 0);
        printf("rank 1: child %d ended, status %d\n", (int)pid, st);
      } else {
        printf("rank 1: orphan child %d left running\n", (int)pid);
      }
    }
    fflush(stdout);
  }
  check_mpi("after");
  if (me == 0 && !strcmp(mode, "mpicall")) {
    int flag;
    MPI_Iprobe(1, 7, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
    printf("rank 0: a message from the child (tag 7) %s\n", flag ? "ARRIVED" : "did not arrive");
  }
  MPI_Finalize();
  return 0;
}
