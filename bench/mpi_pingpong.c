/*
** mpi_pingpong: the raw-C reference for W10's apply round trip.
** Ranks 0 and 1 bounce an 8-byte message with blocking MPI_Send/MPI_Recv
** ITERS times (default 10,000) after WARMUP round trips (default 1,000);
** rank 1 echoes value + 1 and rank 0 checks it, like W2's apply(x + 1).
** Reports microseconds per round trip.
**
** Any further rank (W10 runs `-n 3`) takes no part: it waits for the end
** in MPI_Ibarrier + MPI_Test with a 1 ms nanosleep, so it does not steal a
** core from the two that measure (a rank parked in a blocking MPI call
** busy-polls in Open MPI).  See research/mpi/NOTES.md.
**
** build:  mpicc -O2 -Wall -o bench/mpi_pingpong bench/mpi_pingpong.c
** run:    mpirun -n 3 --oversubscribe bench/mpi_pingpong [iters [reps]]
**         (as root add OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
**          to the environment; -n 2 works too)
** output, one line per repetition, from rank 0:
**         RESULT W10pingpong <us per round trip> ranks=<n>
*/
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WARMUP 1000

static void idle_until_done(void) {
  MPI_Request rq;
  int flag = 0;
  struct timespec ts = { 0, 1000000 };
  MPI_Ibarrier(MPI_COMM_WORLD, &rq);
  for (;;) {
    MPI_Test(&rq, &flag, MPI_STATUS_IGNORE);
    if (flag) break;
    nanosleep(&ts, NULL);
  }
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 10000;
  int reps = argc > 2 ? atoi(argv[2]) : 1;
  int rank, size, r, i;
  int64_t v;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (iters < 1) iters = 1;
  if (reps < 1) reps = 1;
  if (size < 2) {
    if (rank == 0) fprintf(stderr, "mpi_pingpong: needs mpirun -n 2 or more\n");
    MPI_Finalize();
    return 1;
  }
  if (rank == 0) {
    for (i = 0; i < WARMUP; i++) {
      v = i;
      MPI_Send(&v, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD);
      MPI_Recv(&v, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    for (r = 0; r < reps; r++) {
      double t0 = MPI_Wtime(), t;
      for (i = 0; i < iters; i++) {
        v = i;
        MPI_Send(&v, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(&v, 1, MPI_INT64_T, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (v != (int64_t)i + 1) {
          fprintf(stderr, "mpi_pingpong: wrong reply\n");
          MPI_Abort(MPI_COMM_WORLD, 1);
        }
      }
      t = MPI_Wtime() - t0;
      printf("RESULT W10pingpong %.3f ranks=%d\n", t / iters * 1e6, size);
      fflush(stdout);
    }
    v = -1;                            /* stop */
    MPI_Send(&v, 1, MPI_INT64_T, 1, 1, MPI_COMM_WORLD);
  } else if (rank == 1) {
    MPI_Status st;
    for (;;) {
      MPI_Recv(&v, 1, MPI_INT64_T, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
      if (st.MPI_TAG == 1) break;
      v += 1;
      MPI_Send(&v, 1, MPI_INT64_T, 0, 0, MPI_COMM_WORLD);
    }
  }
  idle_until_done();
  MPI_Finalize();
  return 0;
}
