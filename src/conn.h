/*
** conn.h -- mp.Pipe and its Connections: messages (any number of values,
** boundaries kept) and raw byte strings between processes.  waitobj.c
** polls a Connection's fd.  Builds on shm.h, encode.h, decode.h and wire.h.
*/
#ifndef LMP_CONN_H
#define LMP_CONN_H

#include "decode.h"
#include "encode.h"
#include "shm.h"

/* the fd of the Connection at idx (raises if closed) */
LMP_INTERNAL int lmp_conn_fd(lua_State *L, int idx);

LMP_INTERNAL void lmp_conn_open(lua_State *L);

#endif
