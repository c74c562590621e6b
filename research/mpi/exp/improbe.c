/*
** improbe.c -- does one MPI_Improbe see a message that arrived long ago?
** Rank 1 sends 8 bytes; rank 0 sleeps 20 ms (the message is in its shared
** memory by then), then probes up to three times.
**
** usage: mpirun -n 2 improbe
** Open MPI 4.1.4 (ob1 + vader): "1st Improbe 0, 2nd 1" every time -- ob1
** checks its queues first and progresses the BTLs only after a miss.
*/
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv) {
  int r, i;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  for (i = 0; i < 5; i++) {
    long x = i;
    MPI_Barrier(MPI_COMM_WORLD);
    if (r == 1) {
      MPI_Send(&x, 1, MPI_LONG, 0, 0, MPI_COMM_WORLD);
    } else if (r == 0) {
      struct timespec ts = { 0, 20000000 };
      int f1 = 0, f2 = 0, f3 = 0;
      MPI_Message m;
      MPI_Status st;
      nanosleep(&ts, NULL);
      MPI_Improbe(1, 0, MPI_COMM_WORLD, &f1, &m, &st);
      if (!f1) MPI_Improbe(1, 0, MPI_COMM_WORLD, &f2, &m, &st);
      if (!f1 && !f2) MPI_Improbe(1, 0, MPI_COMM_WORLD, &f3, &m, &st);
      printf("message sent 20 ms earlier: 1st Improbe %d, 2nd %d, 3rd %d\n", f1, f2, f3);
      MPI_Mrecv(&x, 1, MPI_LONG, &m, MPI_STATUS_IGNORE);
    }
  }
  MPI_Finalize();
  return 0;
}
