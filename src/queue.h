/*
** queue.h -- mp.Queue, mp.SimpleQueue, mp.JoinableQueue: a growable ring of
** encoded items in shared memory (a memfd), see src/DESIGN.md, "Objects processes share".
** waitobj.c asks a queue whether it has items and for its doorbell.
** Builds on shm.h, encode.h and decode.h.
*/
#ifndef LMP_QUEUE_H
#define LMP_QUEUE_H

#include "decode.h"
#include "encode.h"
#include "shm.h"

/* mp.wait: 1 if the queue at idx has items now; else its doorbell fd
   (readable after the next put) in *fd, until lmp_queue_unpoll */
LMP_INTERNAL int lmp_queue_poll(lua_State *L, int idx, int *fd);
LMP_INTERNAL void lmp_queue_unpoll(lua_State *L, int idx);

LMP_INTERNAL void lmp_queue_open(lua_State *L);

#endif
