/*
** lmp.h -- internal header shared by the lmp sources (not installed).
** Only luaopen_lmp is exported from the shared object; everything declared
** here is hidden.
*/
#ifndef LMP_H
#define LMP_H

#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lua.h"
#include "lauxlib.h"

#if defined(__GNUC__)
#define LMP_INTERNAL __attribute__((visibility("hidden")))
#else
#define LMP_INTERNAL
#endif

#define LMP_PROCESS "lmp.Process"
#define LMP_POOL    "lmp.Pool"
#define LMP_RESULT  "lmp.AsyncResult"
#define LMP_ENCBOX  "lmp.Encoder"

/* Deepest nesting of tables/functions the codec accepts either way. */
#define LMP_MAXDEPTH 1000

/* ---------------------------------------------------------------------- */
/* growable byte buffer                                                   */
/* ---------------------------------------------------------------------- */
typedef struct lmp_buf {
  char *p;
  size_t n, cap;
} lmp_buf;

LMP_INTERNAL int lmp_buf_grow(lmp_buf *b, size_t extra);  /* 0 ok, -1 ENOMEM */
LMP_INTERNAL void lmp_buf_free(lmp_buf *b);

/* ---------------------------------------------------------------------- */
/* module state: one per lua_State, upvalue 1 of every module function    */
/* ---------------------------------------------------------------------- */
typedef struct lmp_state {
  pid_t pid;            /* the process this state currently lives in */
  int *fds;             /* fds lmp holds in this process: closed in children */
  size_t nfds, capfds;
  int upfd;             /* this process's result pipe to its lmp parent */
  unsigned long nextproc;   /* counter for "Process-N" names */
  unsigned long nextpool;
  char name[64];        /* current_process().name */
  pid_t *zombies;       /* killed workers still to be reaped */
  size_t nzombies, capzombies;
  size_t scanwait;      /* starts before the next full scan of children */
  uint64_t identmark;   /* shared objects this process inherited: ids up to
                           here mean the same to its parent (lmp_ident) */
  int finishint;        /* Ctrl-C while waiting for children at exit */
  int finishmsg;        /* ... and we said whom we were waiting for */
  int finishraise;      /* die of that SIGINT once all is reaped */
} lmp_state;

LMP_INTERNAL lmp_state *lmp_getstate(lua_State *L);   /* from upvalue 1 */
LMP_INTERNAL void lmp_track_fd(lua_State *L, lmp_state *S, int fd);
LMP_INTERNAL void lmp_close_fd(lmp_state *S, int fd);  /* untrack + close */

/*
** Fork with lmp's hygiene: stdio flushed, inherited lmp fds closed in the
** child, math.random reseeded, current_process renamed.  `pdeath` makes the
** child die with its parent (race-free).  Returns the pid (0 in the child),
** or -1 with errno set.
*/
#define LMP_FORK_PDEATH  1
#define LMP_FORK_NOINT   2   /* child ignores SIGINT (pool workers) */
LMP_INTERNAL pid_t lmp_fork(lua_State *L, lmp_state *S, const char *name,
                            int flags);
/* flush stdio and leave the child process without running finalizers */
LMP_INTERNAL void lmp_child_exit(int code);

/*
** Children lmp started in this process are listed in the registry
** (pid -> object) so that mp.wait() reaping one of them does not lose its
** status: it is parked in a second table where lmp_reap finds it.
*/
LMP_INTERNAL void lmp_child_add(lua_State *L, pid_t pid, int idx);
LMP_INTERNAL void lmp_child_remove(lua_State *L, pid_t pid);
/* 1 (and the status) if mp.wait() reaped pool worker `pid`: that pid may
   name another process by now, so it must not be signalled or waited for */
LMP_INTERNAL int lmp_parked(lua_State *L, pid_t pid, int *status);
/* waitpid(pid) that also finds statuses mp.wait() took: pid, 0, or -1 */
LMP_INTERNAL pid_t lmp_reap(lua_State *L, pid_t pid, int *status, int nohang);
/* "killed by signal 9 (SIGKILL)" / "exited with code 3" */
LMP_INTERNAL const char *lmp_pushhow(lua_State *L, int status);
LMP_INTERNAL int lmp_pidfd(pid_t pid);   /* -1 if unsupported */
/* remembers a child to reap later (a collector must not block) */
LMP_INTERNAL void lmp_zombie_add(lmp_state *S, pid_t pid);
LMP_INTERNAL void lmp_zombie_reap(lmp_state *S, int block);

/* ---------------------------------------------------------------------- */
/* codec                                                                  */
/* ---------------------------------------------------------------------- */
typedef struct lmp_enc lmp_enc;

/*
** Creates an encoder whose resources belong to a userdata pushed on the
** stack (so an error anywhere frees them at the next collection).
** `zerocopy`: large strings are referenced, not copied; the values must
** then stay alive until lmp_enc_writeframe is done.
*/
LMP_INTERNAL lmp_enc *lmp_enc_new(lua_State *L, int zerocopy);
/* the encoder kept in registry[key] (or a new one), pushed and reset;
   lmp_enc_give(L, idx, key) ends the message and keeps it again */
LMP_INTERNAL lmp_enc *lmp_enc_take(lua_State *L, const void *key,
                                   int zerocopy);
LMP_INTERNAL void lmp_enc_give(lua_State *L, int idx, const void *key);
/* starts the next message, used from thread L (ends the last one) */
LMP_INTERNAL void lmp_enc_reset(lmp_enc *E, lua_State *L);
LMP_INTERNAL void lmp_enc_raw(lmp_enc *E, const void *p, size_t n);
#define LMP_COUNT_LATER ((size_t)-1)
LMP_INTERNAL void lmp_enc_begin(lmp_enc *E, size_t nvalues);
LMP_INTERNAL void lmp_enc_count(lmp_enc *E, size_t nvalues);
/* objects shared with the receiver: ids up to identmax (lmp_ident_mark);
   0 none; LMP_IDENT_ALL: every id, and _ENV tables get one (mp.encode) */
#define LMP_IDENT_ALL UINT64_MAX
LMP_INTERNAL void lmp_enc_ident(lmp_enc *E, uint64_t identmax);
/* encodes the value at idx; on error raises "lmp: cannot serialize ... at
** <root>[<rootindex>]..." (rootindex < 0: path is just <root>) */
LMP_INTERNAL void lmp_enc_value(lmp_enc *E, int idx, const char *root,
                                lua_Integer rootindex);
LMP_INTERNAL size_t lmp_enc_size(lmp_enc *E);
/* drops what was encoded after byte n (no zero-copy pieces) */
LMP_INTERNAL void lmp_enc_truncate(lmp_enc *E, size_t n);
/* frame = 8-byte LE length + everything encoded since the last reset */
LMP_INTERNAL int lmp_enc_writeframe(lmp_enc *E, int fd);   /* 0 / -1 errno */
/* flatten into one buffer (copies the zero-copy pieces) */
LMP_INTERNAL const char *lmp_enc_flatten(lmp_enc *E, size_t *len);

/* decoder flags */
#define LMP_DEC_FUNCTIONS 1   /* accept bytecode */
#define LMP_DEC_REQUIRE   2   /* require modules the message names */
#define LMP_DEC_IDENT     4   /* accept objects shared across fork */
#define LMP_DEC_TRUSTED   (LMP_DEC_FUNCTIONS | LMP_DEC_REQUIRE | LMP_DEC_IDENT)

typedef struct lmp_dec {
  lua_State *L;
  const unsigned char *p, *end;
  int refs;             /* stack index of the ref table, 0 = not created */
  lua_Integer nrefs;
  int depth;
  int flags;            /* LMP_DEC_* */
  size_t budget;        /* table slots still allowed to be preallocated */
  int oddrefs;          /* custom values kept that are nil or numbers: a
                           back-reference may then be a bad table key */
} lmp_dec;

/* reads the header; returns the number of values */
LMP_INTERNAL size_t lmp_dec_begin(lmp_dec *D, lua_State *L, const char *p,
                                  size_t len, int flags);
LMP_INTERNAL void lmp_dec_value(lmp_dec *D);   /* pushes one value */
LMP_INTERNAL void lmp_dec_end(lmp_dec *D);     /* checks trailing bytes,
                                                  drops the ref table */

/* 1: a Lua function whose upvalues are only _G, library values or objects
   shared with its receiver (ids up to identmax) */
LMP_INTERNAL int lmp_fn_stateless(lua_State *L, int idx, uint64_t identmax);

/* identity across fork (see codec.c) */
LMP_INTERNAL lua_Integer lmp_ident_register(lua_State *L, int idx);
LMP_INTERNAL uint64_t lmp_ident_mark(lua_State *L);  /* ids so far */
LMP_INTERNAL void lmp_ident_forked(lua_State *L);    /* in a new child */
LMP_INTERNAL void lmp_ident_scan(lua_State *L);      /* the stack's _ENVs */

LMP_INTERNAL void lmp_codec_open(lua_State *L);  /* adds encode/decode/register
                                                    to the table on top */

/* ---------------------------------------------------------------------- */
/* wire: EINTR-safe I/O                                                   */
/* ---------------------------------------------------------------------- */
/*
** Snapshot of the Lua hook, to notice that a signal handler (lua.c's
** SIGINT handler sets a hook) wants the interpreter's attention while we
** block in C.
*/
typedef struct lmp_hook {
  lua_State *L, *M;     /* the waiting thread; the main one (NULL if L) */
  lua_Hook f, mf;
  int mask, count, mmask, mcount;
} lmp_hook;

LMP_INTERNAL void lmp_hook_save(lua_State *L, lmp_hook *h);
LMP_INTERNAL int lmp_hook_changed(lua_State *L, const lmp_hook *h);
LMP_INTERNAL void lmp_hook_restore(const lmp_hook *h);
LMP_INTERNAL void lmp_hook_deliver(const lmp_hook *h);
LMP_INTERNAL void *lmp_checkudata(lua_State *L, int idx, const char *tname,
                                  const char *what);

LMP_INTERNAL double lmp_now(void);   /* monotonic seconds */
/*
** poll() retrying on EINTR until `deadline` (monotonic; < 0 = forever).
** Returns >0 ready, 0 timeout, -1 error (errno), -2 interrupted.
*/
LMP_INTERNAL int lmp_poll(lua_State *L, const lmp_hook *h, void *fds,
                          unsigned nfds, double deadline);
LMP_INTERNAL int lmp_pollms(double deadline);  /* poll()'s timeout */
LMP_INTERNAL int lmp_writeall(int fd, const void *p, size_t n);
LMP_INTERNAL ssize_t lmp_read(int fd, void *p, size_t n);  /* EINTR-safe */
LMP_INTERNAL int lmp_pipe(int fds[2]);  /* O_CLOEXEC */

/* frame reader: accumulates bytes until one whole frame is present */
typedef struct lmp_reader {
  lmp_buf b;
  size_t pos;           /* start of the first unconsumed frame */
} lmp_reader;

/* reads once from fd (fd may be blocking); 1 data, 0 EOF, -1 error */
LMP_INTERNAL int lmp_reader_fill(lmp_reader *r, int fd);
/* 1 and the frame's payload if a whole frame is buffered, else 0 */
LMP_INTERNAL int lmp_reader_frame(lmp_reader *r, const char **p, size_t *n);
LMP_INTERNAL void lmp_reader_compact(lmp_reader *r);
LMP_INTERNAL void lmp_reader_free(lmp_reader *r);

LMP_INTERNAL uint64_t lmp_get64(const void *p);
LMP_INTERNAL void lmp_put64(void *p, uint64_t v);

/* like luaL_error, without position information: lmp's messages say
   where the problem is themselves */
LMP_INTERNAL int lmp_error(lua_State *L, const char *fmt, ...);
LMP_INTERNAL int lmp_iscallable(lua_State *L, int idx);
/* optional timeout argument -> monotonic deadline, -1 for none */
LMP_INTERNAL double lmp_optdeadline(lua_State *L, int arg);
/* pushes the elements of the args table at idx (nil: none), honouring
   args.n so nils survive; returns how many */
LMP_INTERNAL int lmp_pushargs(lua_State *L, int idx);
/* raises "lmp: <what>: strerror(errno)" */
LMP_INTERNAL int lmp_syserror(lua_State *L, const char *what);
/* pushes the error a task raised, with its traceback, and raises it */
LMP_INTERNAL int lmp_traceback(lua_State *L);   /* message handler */

/* pool.c */
LMP_INTERNAL void lmp_pool_open(lua_State *L);   /* adds Pool to the table on top */

#endif
