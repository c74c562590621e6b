/*
** runtime.h -- the process runtime: lmp's state in this process, the fds
** it holds, fork hygiene, the children it forked and their reaping, and
** signal names.  Builds on luax.h, sys.h and ident.h.
*/
#ifndef LMP_RUNTIME_H
#define LMP_RUNTIME_H

#include "ident.h"
#include "luax.h"

#include <stdint.h>
#include <sys/types.h>

typedef struct lmp_state {
  pid_t pid;            /* the process this state lives in now */
  int *fds;             /* fds lmp holds in this process: closed in children */
  size_t nfds, capfds;
  char name[64];        /* current_process().name */
  pid_t *zombies;       /* killed children still to be reaped */
  size_t nzombies, capzombies;
  uint64_t identmark;   /* objects this process inherited: ids up to here
                           mean the same to its parent (ident.h) */
  int raiseint;         /* die of SIGINT once the state closes (a Ctrl-C
                           that stopped children at exit: process.c) */
} lmp_state;

/* makes the state (once per Lua state) */
LMP_INTERNAL void lmp_runtime_open(lua_State *L);
LMP_INTERNAL lmp_state *lmp_getstate(lua_State *L);

/* fds lmp holds: a forked child closes them all at once */
LMP_INTERNAL void lmp_track_fd(lua_State *L, int fd);
LMP_INTERNAL void lmp_close_fd(lua_State *L, int fd);   /* untrack + close */

/*
** Fork with lmp's hygiene: stdio flushed, lmp's fds closed in the child,
** math.random reseeded, the child's own name, the at-fork functions run.
** Returns the pid (0 in the child), or -1 with errno set.
*/
#define LMP_FORK_PDEATH 1     /* the child dies with its parent (race-free) */
#define LMP_FORK_NOINT  2     /* the child ignores SIGINT (pool workers) */
LMP_INTERNAL pid_t lmp_fork(lua_State *L, const char *name, int flags);
/* registers the C function on top (popped) to run in every new child */
LMP_INTERNAL void lmp_atfork(lua_State *L);
/* flushes stdio and leaves a child without running finalizers */
LMP_INTERNAL void lmp_child_exit(int code);

/*
** lmp's children: each pid lmp forked and has not reaped.  When mp.wait()
** reaps one, its status is parked here: the pid may name another process
** by then, so its owner must never signal or wait for it again, and finds
** the status with lmp_reap.
*/
LMP_INTERNAL void lmp_child_add(lua_State *L, pid_t pid);
LMP_INTERNAL void lmp_child_remove(lua_State *L, pid_t pid);
/* mp.wait() reaped pid (any pid): parks its status if it is ours */
LMP_INTERNAL void lmp_child_reaped(lua_State *L, pid_t pid, int status);
/* 1 (and the status, taken) if mp.wait() reaped our child pid */
LMP_INTERNAL int lmp_parked(lua_State *L, pid_t pid, int *status);
/* waitpid for our child pid that also finds parked statuses: pid, 0, -1 */
LMP_INTERNAL pid_t lmp_reap(lua_State *L, pid_t pid, int *status, int nohang);
/* a killed child to reap later (a collector must not block) */
LMP_INTERNAL void lmp_zombie_add(lmp_state *S, pid_t pid);
LMP_INTERNAL void lmp_zombie_reap(lmp_state *S, int block);

/* pushes "killed by signal 9 (SIGKILL)" or "exited with code 3" */
LMP_INTERNAL const char *lmp_pushhow(lua_State *L, int status);
/* a signal argument: a number, or a name with or without SIG; `def` when
   absent (NULL: required) */
LMP_INTERNAL int lmp_checksignal(lua_State *L, int idx, const char *def);

#endif
