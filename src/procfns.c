/*
** procfns.c -- the process-level functions.  fork, wait and kill follow
** Lua's io convention (nil, message, errno on failure); bad arguments raise.
*/
#include "procfns.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int pushfail(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

static int mp_fork(lua_State *L) {
  pid_t pid = lmp_fork(L, NULL, 0);
  if (pid < 0) return pushfail(L, "fork");
  if (pid == 0) {
    lmp_state *S = lmp_getstate(L);
    snprintf(S->name, sizeof S->name, "Fork-%ld", (long)getpid());
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

static int mp_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int mp_getppid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getppid());
  return 1;
}

/* a pid argument: an integer that fits pid_t (a wider one would wrap,
   4294967295 to -1, which kill() takes for "every process") */
static pid_t checkpid(lua_State *L, int idx) {
  int ok = 0;
  lua_Integer v = lua_tointegerx(L, idx, &ok);
  if (!ok || lua_type(L, idx) != LUA_TNUMBER)
    lmp_typeerror(L, idx, "pid", "an integer");
  if (v < INT_MIN || v > INT_MAX)
    lmp_error(L, "lmp: pid " LMP_FMTINT " out of range", LMP_INTARG(v));
  return (pid_t)v;
}

/*
** Blocks until running child `pid` ends, without reaping it.  waitpid is
** restarted after a signal handler (SA_RESTART); poll on a pidfd is not, so
** Ctrl-C gets through: returns 1 then, with the hook left to raise it (as
** mp.sleep does).  0 when it ended, or when there is no pidfd.
*/
static int hook_stop(void *h) { return lmp_hook_changed((lmp_hook *)h); }

static int wait_exit(lua_State *L, pid_t pid) {
  struct pollfd f;
  lmp_hook h;
  int r;
  f.fd = lmp_pidfd(pid);
  if (f.fd < 0) return 0;
  f.events = POLLIN;
  lmp_hook_save(L, &h);
  r = lmp_sys_poll(&f, 1, -1, hook_stop, &h);
  close(f.fd);
  if (r == -2) {
    lmp_hook_deliver(&h);              /* it fires in this thread too */
    return 1;
  }
  return 0;
}

static int mp_wait(lua_State *L) {
  pid_t pid = lua_isnoneornil(L, 1) ? -1 : checkpid(L, 1), r;
  int nohang = lua_toboolean(L, 2), status = 0;
  if (!nohang && pid > 0) {
    /* only a child of ours still running gets a pidfd: one would wait for
       anyone's process */
    r = lmp_waitpid(pid, &status, WNOHANG);
    if (r == 0) {
      if (wait_exit(L, pid)) {
        errno = EINTR;
        return pushfail(L, "wait");
      }
      r = lmp_waitpid(pid, &status, 0);
    }
  } else r = lmp_waitpid(pid, &status, nohang ? WNOHANG : 0);
  if (r < 0) return pushfail(L, "wait");
  lua_pushinteger(L, (lua_Integer)r);
  if (r == 0) return 1;
  lmp_child_reaped(L, r, status);      /* its owner takes the status */
  if (WIFSIGNALED(status)) {
    lua_pushliteral(L, "signaled");
    lua_pushinteger(L, WTERMSIG(status));
  } else {
    lua_pushliteral(L, "exited");
    lua_pushinteger(L, WEXITSTATUS(status));
  }
  return 3;
}

static int mp_kill(lua_State *L) {
  pid_t pid = checkpid(L, 1);
  int sig = lmp_checksignal(L, 2, "TERM");
  if (kill(pid, sig) != 0) return pushfail(L, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

static int mp_cpu_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp_cpu_count());
  return 1;
}

/* resumes after signals, but returns early on Ctrl-C so it reaches the
   script (in a coroutine too: lmp_hook_deliver) */
static int mp_sleep(lua_State *L) {
  lua_Number s;
  struct timespec ts;
  lmp_hook h;
  if (lua_type(L, 1) != LUA_TNUMBER)
    return lmp_typeerror(L, 1, "sleep time", "a number");
  s = lua_tonumber(L, 1);
  if (s != s) return lmp_error(L, "lmp: sleep time must be a number, got nan");
  if (s < 0) return lmp_error(L, "lmp: negative sleep time");
  if (s > 1e9) s = 1e9;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  lmp_hook_save(L, &h);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    if (lmp_hook_changed(&h)) {
      lmp_hook_deliver(&h);
      break;
    }
  }
  return 0;
}

static int mp_time(lua_State *L) {
  lua_pushnumber(L, (lua_Number)lmp_realtime());
  return 1;
}

static int mp_current_process(lua_State *L) {
  lmp_state *S = lmp_getstate(L);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)getpid());
  lua_setfield(L, -2, "pid");
  lua_pushstring(L, S->name);
  lua_setfield(L, -2, "name");
  return 1;
}

void lmp_procfns_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"fork", mp_fork},
    {"getpid", mp_getpid},
    {"getppid", mp_getppid},
    {"wait", mp_wait},
    {"kill", mp_kill},
    {"cpu_count", mp_cpu_count},
    {"sleep", mp_sleep},
    {"time", mp_time},
    {"current_process", mp_current_process},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
