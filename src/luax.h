/*
** luax.h -- Lua helpers every object of lmp shares: the error convention,
** argument checks, class checks, the registry's keys, fields kept in user
** values, deadlines, and waits that Ctrl-C can interrupt.  Builds on
** compat.h and sys.h.
*/
#ifndef LMP_LUAX_H
#define LMP_LUAX_H

#include "compat.h"
#include "sys.h"

/* class names (metatables in the registry) */
#define LMP_PROCESS "lmp.Process"
#define LMP_POOL    "lmp.Pool"
#define LMP_RESULT  "lmp.AsyncResult"
#define LMP_ENCBOX  "lmp.Encoder"
/* objects processes share (shm.h and the files above it) */
#define LMP_LOCK      "lmp.Lock"
#define LMP_RLOCK     "lmp.RLock"
#define LMP_SEMAPHORE "lmp.Semaphore"
#define LMP_CONDITION "lmp.Condition"
#define LMP_EVENT     "lmp.Event"
#define LMP_BARRIER   "lmp.Barrier"
#define LMP_QUEUE     "lmp.Queue"
#define LMP_CONN      "lmp.Connection"
#define LMP_VALUE     "lmp.Value"
#define LMP_ARRAY     "lmp.Array"
#define LMP_GUARD     "lmp.Guard"          /* what hold() returns */

/*
** Every registry key lmp uses.  String keys are registry fields; the
** others are light userdata keys (lmp_rawgetp) of static variables, or of
** an object's own address (a pool's encoder, an encoder's anchors).
*/
#define LMP_KEY_STATE     "lmp.state"      /* runtime: the module state */
#define LMP_KEY_CHILDREN  "lmp.children"   /* runtime: pid -> object */
#define LMP_KEY_PARKED    "lmp.parked"     /* runtime: pid -> status */
#define LMP_KEY_METABYNAME "lmp.mt.byname" /* codec: name -> metatable */
#define LMP_KEY_METABYMT  "lmp.mt.bymt"    /* codec: metatable -> name */
#define LMP_KEY_METAVER   "lmp.mt.version" /* codec: mp.register calls */
#define LMP_KEY_KNOWN     "lmp.known"      /* libvals: the value map */
#define LMP_KEY_IDENT     "lmp.ident"      /* ident: shared objects */
#define LMP_KEY_PROCS     "lmp.procs"      /* process: pid -> Process */

/* deepest nesting of tables/functions the codec accepts either way */
#define LMP_MAXDEPTH 1000

/*
** Errors.  Objects and arguments raise "lmp: ..." sentences that say what
** was wrong (API.md); system-call wrappers return nil, msg, errno instead.
*/
LMP_INTERNAL int lmp_error(lua_State *L, const char *fmt, ...);
/* "lmp: <what> must be <expected>, got <type of the value at idx>" */
LMP_INTERNAL int lmp_typeerror(lua_State *L, int idx, const char *what,
                               const char *expected);
/* "lmp: <what>: strerror(errno)" */
LMP_INTERNAL int lmp_syserror(lua_State *L, const char *what);
/* an integer argument; an integral float counts (4.0, cpu_count() / 2) */
LMP_INTERNAL lua_Integer lmp_checkint(lua_State *L, int idx, const char *what);
LMP_INTERNAL int lmp_iscallable(lua_State *L, int idx);
/* the userdata of class tname at idx, or "lmp: expected a <what>, ..." */
LMP_INTERNAL void *lmp_checkudata(lua_State *L, int idx, const char *tname,
                                  const char *what);
/* optional timeout argument -> monotonic deadline; -1 for none (or huge) */
LMP_INTERNAL double lmp_optdeadline(lua_State *L, int idx);
/* pushes the elements of the args table at idx (nil: none), honouring
   args.n so nils survive; returns how many */
LMP_INTERNAL int lmp_pushargs(lua_State *L, int idx);
/* message handler for tasks: a string error gets the traceback */
LMP_INTERNAL int lmp_msgh(lua_State *L);
/* how many upvalues the function at idx has */
LMP_INTERNAL int lmp_nupvalues(lua_State *L, int idx);

/*
** Checks that every key of the options table at idx is one of `names`
** (NULL-terminated); otherwise raises "lmp: unknown option 'x' for <call>"
** (with "(did you mean 'y'?)" when a name is close).
*/
LMP_INTERNAL void lmp_checkopts(lua_State *L, int idx, const char *call,
                                const char *const names[]);
/* an optional positive number of seconds (a timeout option); 0 if nil,
   -1 for math.huge (none, overriding any default) */
LMP_INTERNAL double lmp_optseconds(lua_State *L, int idx, const char *what);

/* objects keep their Lua values in a table, their first user value */
LMP_INTERNAL int lmp_uvfield(lua_State *L, int idx, const char *k);
LMP_INTERNAL void lmp_setuvfield(lua_State *L, int idx, const char *k);

/* a light userdata that stands for nil where nil cannot be stored */
LMP_INTERNAL void lmp_pushnilmark(lua_State *L);
LMP_INTERNAL int lmp_isnilmark(lua_State *L, int idx);

/*
** Interrupts.  lua.c answers SIGINT with a count hook on the main thread;
** a C wait that resumes after EINTR would never let it run, so lmp's waits
** give up when that hook (or the waiting thread's) changes under them.
*/
typedef struct lmp_hook {
  lua_State *L, *M;     /* the waiting thread; the main one (NULL if L) */
  lua_Hook f, mf;
  int mask, count, mmask, mcount;
} lmp_hook;

LMP_INTERNAL void lmp_hook_save(lua_State *L, lmp_hook *h);
LMP_INTERNAL int lmp_hook_changed(const lmp_hook *h);
/* the caller raises "lmp: interrupted" itself: the hooks go back */
LMP_INTERNAL void lmp_hook_restore(const lmp_hook *h);
/* the caller lets the interrupt reach the script: it fires in this thread */
LMP_INTERNAL void lmp_hook_deliver(const lmp_hook *h);
/* poll() until deadline: >0 ready, 0 timeout, -1 error, -2 interrupted
   (hooks restored: raise "lmp: interrupted") */
LMP_INTERNAL int lmp_poll(const lmp_hook *h, void *fds, unsigned nfds,
                          double deadline);

#endif
