/*
** tr_mpi.h -- the Pool's transport over MPI ranks (part of lmp.mpi): rank
** 0's side (tr_mpi.c, implements lmp_tr_ops) and the workers' channel
** (ch_mpi.c, implements lmp_channel).  Builds on net_mpi.h.
*/
#ifndef LMP_TR_MPI_H
#define LMP_TR_MPI_H

#include "net_mpi.h"

/* rank 0: pushes a transport over ranks 1..size-1 (no worker started);
   takes over N (and its lifeline fds) */
LMP_INTERNAL lmp_transport *lmp_trmpi_new(lua_State *L, const mpi_net *N,
                                          const int *fds);
/* a worker rank: says hello, waits for rank 0's verdict, and pushes its
   channel; leaves the process if refused or if the pool ended first */
LMP_INTERNAL lmp_channel *lmp_chmpi_new(lua_State *L, const mpi_net *N,
                                        int fd);

#endif
