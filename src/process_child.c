/*
** process_child.c -- a Process child's side.
*/
#include "process_child.h"

#include <signal.h>
#include <string.h>

/* ====================================================================== */
/* the child                                                              */
/* ====================================================================== */
/*
** SIGINT in a Process child: the target runs in a thread of its own, which
** lua.c's handler (it hooks the main thread) would never stop.  This one,
** installed in the child unless SIGINT is ignored, hooks that thread, the
** thread that started the process and the state's main thread the same
** way: "interrupted!" at the next instruction, and a second SIGINT kills.
** The main thread is the one lmp's waits watch from any coroutine (the
** starting thread is not always it: a Process started from a coroutine,
** say by a test runner, runs its child there too).  The statics are the
** child's own, set after its fork.
*/
static lua_State *child_thread, *child_caller, *child_main;

static void child_stop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void child_onsigint(int sig) {
  int mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT;
  signal(sig, SIG_DFL);
  if (child_thread != NULL) {
    lua_sethook(child_thread, child_stop, mask, 1);
    lua_sethook(child_caller, child_stop, mask, 1);
    lua_sethook(child_main, child_stop, mask, 1);
  }
}

static void child_catchint(lua_State *L, lua_State *T) {
  struct sigaction sa, old;
  if (sigaction(SIGINT, NULL, &old) != 0 || old.sa_handler == SIG_IGN) return;
  lmp_pushmainthread(L);
  child_main = lua_tothread(L, -1);    /* the registry keeps it */
  lua_pop(L, 1);
  child_thread = T;
  child_caller = L;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = child_onsigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/*
** Runs the target in a thread of its own, so the traceback of an error
** shows the task's frames and not the parent's script that forked.
** [target, args] -> ok, values...
*/
static int child_run(lua_State *L) {
  lua_State *T = lua_newthread(L);     /* [target, args, T] */
  int n, st, nres;
  child_catchint(L, T);
  lua_pushcfunction(T, lmp_msgh);
  lua_pushvalue(L, 1);
  n = lmp_pushargs(L, 2);              /* on L: its errors are caught */
  if (!lua_checkstack(T, n + 2)) lmp_error(L, "lmp: too many arguments");
  lua_xmove(L, T, n + 1);              /* T: [msgh, target, args...] */
  lmp_gc_restart(L);
  st = lua_pcall(T, n, LUA_MULTRET, 1);
  lmp_gc_stop(L);
  nres = lua_gettop(T) - 1;
  luaL_checkstack(L, nres + 2, "lmp: too many results");
  lua_pushboolean(L, st == LUA_OK);
  lua_xmove(T, L, nres);
  return nres + 1;
}

/* encodes and writes [ok, values...] from index 1 to fd (upvalue 1) */
static int child_send(lua_State *L) {
  int n = lua_gettop(L), fd = (int)lua_tointeger(L, lua_upvalueindex(1)), i;
  int ok = lua_toboolean(L, 1);
  lmp_enc *E = lmp_enc_new(L, 1);
  lmp_enc_ident(E, lmp_getstate(L)->identmark);
  lmp_enc_begin(E, (size_t)n);
  for (i = 1; i <= n; i++)
    lmp_enc_value(E, i, ok ? "result" : "error", ok ? i - 1 : -1);
  if (lmp_enc_writeframe(E, fd) != 0) lmp_child_exit(1);
  return 0;
}

static void child_main_(lua_State *L, int fd, int pidx,
                        void (*finish)(lua_State *L)) {
  int ok, code;
  lua_settop(L, pidx);
  lua_pushcfunction(L, child_run);
  lmp_uvfield(L, pidx, "target");
  lmp_uvfield(L, pidx, "args");
  if (lua_pcall(L, 2, LUA_MULTRET, 0) != LUA_OK) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
  }
  /* a late SIGINT's hook on this thread must not fail the sending */
  if (lua_gethook(L) == child_stop) lua_sethook(L, NULL, 0, 0);
  ok = lua_toboolean(L, pidx + 1);
  code = ok ? 0 : 1;
  lua_pushinteger(L, fd);
  lua_pushcclosure(L, child_send, 1);
  lua_insert(L, pidx + 1);
  if (lua_pcall(L, lua_gettop(L) - pidx - 1, 0, 0) != LUA_OK) {
    /* unserializable result or error value: send why instead */
    lua_pushinteger(L, fd);
    lua_pushcclosure(L, child_send, 1);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lmp_child_exit(1);
    code = 1;
  }
  finish(L);
  lmp_child_exit(code);
}

typedef struct finisher {
  void (*finish)(lua_State *L);
} finisher;

/* [process, fd, finisher (light)]: the child's life, protected */
static int child_protected(lua_State *L) {
  finisher *f = (finisher *)lua_touserdata(L, 3);
  child_main_(L, (int)lua_tointeger(L, 2), 1, f->finish);
  return 0;
}

/*
** Everything after the fork runs protected, so no error can unwind into
** the parent's script (which this child must never run).
*/
void lmp_process_child(lua_State *L, int pidx, int fd,
                       void (*finish)(lua_State *L)) {
  finisher f;
  f.finish = finish;
  lua_pushcfunction(L, child_protected);
  lua_pushvalue(L, pidx);
  lua_pushinteger(L, fd);
  lua_pushlightuserdata(L, &f);
  lua_pcall(L, 3, 0, 0);
  lmp_child_exit(1);
}

