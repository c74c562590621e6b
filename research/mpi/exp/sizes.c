/*
** sizes.c -- round-trip time and bandwidth of 8 B .. 64 MiB messages
** between ranks 0 and 1 (blocking MPI_Send/MPI_Recv, the same buffer both
** ways), to see vader's eager / rendezvous / single-copy thresholds.
**
** usage: mpirun -n 2 sizes [MAXBYTES [MODE [MINBYTES]]]   (default 64 MiB, recv, 8)
**   MODE  recv     MPI_Recv
**         mprobe   MPI_Mprobe + MPI_Mrecv (how a transport takes messages of
**                  unknown size)
**         improbe  MPI_Improbe loop + MPI_Mrecv
**         iprobe   MPI_Iprobe loop + MPI_Recv
**   any further rank waits politely (MPI_Ibarrier + 1 ms nanosleep)
** output per size: RESULT size_<bytes> <us per round trip> mbps=<MB/s one way>
*/
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void recv(char *buf, size_t s, int src, const char *mode) {
  MPI_Message m;
  MPI_Status st;
  int flag = 0;
  if (!strcmp(mode, "mprobe")) {
    MPI_Mprobe(src, 0, MPI_COMM_WORLD, &m, &st);
    MPI_Mrecv(buf, (int)s, MPI_BYTE, &m, MPI_STATUS_IGNORE);
  } else if (!strcmp(mode, "improbe")) {
    while (!flag) MPI_Improbe(src, 0, MPI_COMM_WORLD, &flag, &m, &st);
    MPI_Mrecv(buf, (int)s, MPI_BYTE, &m, MPI_STATUS_IGNORE);
  } else if (!strcmp(mode, "iprobe")) {
    while (!flag) MPI_Iprobe(src, 0, MPI_COMM_WORLD, &flag, &st);
    MPI_Recv(buf, (int)s, MPI_BYTE, src, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(buf, (int)s, MPI_BYTE, src, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
}

int main(int argc, char **argv) {
  size_t max = argc > 1 ? (size_t)atoll(argv[1]) : (size_t)64 << 20, s;
  const char *mode = argc > 2 ? argv[2] : "recv";
  size_t min = argc > 3 ? (size_t)atoll(argv[3]) : 8;
  int me;
  char *buf;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  buf = malloc(max);
  memset(buf, 1, max);
  for (s = min; s <= max; s *= 2) {
    /* about 0.2 s per size (fewer rounds for big ones), after one warm-up */
    int reps = s <= 65536 ? 5000 : (int)(512 * 65536 / s) + 3, i;
    double t0 = 0;
    for (i = -1; i < reps; i++) {
      if (i == 0) t0 = MPI_Wtime();
      if (me == 0) {
        MPI_Send(buf, (int)s, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
        recv(buf, s, 1, mode);
      } else if (me == 1) {
        recv(buf, s, 0, mode);
        MPI_Send(buf, (int)s, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
      }
    }
    if (me == 0) {
      double rt = (MPI_Wtime() - t0) / reps;
      printf("RESULT size_%zu %.2f mbps=%.0f reps=%d\n", s, rt * 1e6, 2.0 * s / rt / 1e6, reps);
      fflush(stdout);
    }
  }
  if (me > 1) {}
  {
    MPI_Request rq;
    int flag = 0;
    struct timespec ts = { 0, 1000000 };
    MPI_Ibarrier(MPI_COMM_WORLD, &rq);
    while (!flag) {
      MPI_Test(&rq, &flag, MPI_STATUS_IGNORE);
      if (!flag) nanosleep(&ts, NULL);
    }
  }
  free(buf);
  MPI_Finalize();
  return 0;
}
