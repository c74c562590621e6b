/*
** exit3.c -- does mpirun's exit status carry a rank's?  Rank 0 returns 3
** after MPI_Finalize.
**
**   mpirun -n 2 exit3; echo $?                      # 3
**   mpirun --enable-recovery -n 2 exit3; echo $?    # 0 (Open MPI 4.1.4)
*/
#include <mpi.h>

int main(int argc, char **argv) {
  int r;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Finalize();
  return r == 0 ? 3 : 0;
}
