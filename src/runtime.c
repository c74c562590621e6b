/*
** runtime.c -- the process runtime: state, fds, fork hygiene, children,
** reaping, signal names.
*/
#include "runtime.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* registry: the at-fork functions (an array) */
static const char atfork_key = 0;

/* runs last at lua_close: nothing lmp killed stays a zombie */
static int state_gc(lua_State *L) {
  lmp_state *S = (lmp_state *)lua_touserdata(L, 1);
  if (S->pid == getpid()) lmp_zombie_reap(S, 1);
  free(S->zombies);
  S->zombies = NULL;
  S->nzombies = S->capzombies = 0;
  free(S->fds);
  S->fds = NULL;
  S->nfds = S->capfds = 0;
  if (S->raiseint && S->pid == getpid()) {
    /* Ctrl-C stopped the children we waited for at exit: the process
       ends as that Ctrl-C would have ended it */
    fflush(NULL);
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
  return 0;
}

void lmp_runtime_open(lua_State *L) {
  lmp_state *S;
  if (lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_STATE) == LUA_TUSERDATA) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  S = (lmp_state *)lmp_newud(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  S->pid = getpid();
  strcpy(S->name, "MainProcess");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_STATE);
}

lmp_state *lmp_getstate(lua_State *L) {
  lmp_state *S;
  lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_STATE);
  S = (lmp_state *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S;
}

/* ---------------------------------------------------------------------- */
/* fds                                                                    */
/* ---------------------------------------------------------------------- */
void lmp_track_fd(lua_State *L, int fd) {
  lmp_state *S = lmp_getstate(L);
  if (S->nfds == S->capfds) {
    size_t nc = S->capfds ? S->capfds * 2 : 16;
    int *nf = (int *)realloc(S->fds, nc * sizeof *nf);
    if (nf == NULL) {
      close(fd);
      lmp_error(L, "lmp: not enough memory");
    }
    S->fds = nf;
    S->capfds = nc;
  }
  S->fds[S->nfds++] = fd;
}

void lmp_close_fd(lua_State *L, int fd) {
  lmp_state *S = lmp_getstate(L);
  size_t i;
  if (fd < 0) return;
  for (i = 0; i < S->nfds; i++) {
    if (S->fds[i] == fd) {
      S->fds[i] = S->fds[--S->nfds];
      break;
    }
  }
  close(fd);
}

/* ---------------------------------------------------------------------- */
/* fork hygiene                                                           */
/* ---------------------------------------------------------------------- */
static void reseed(lua_State *L) {
  struct timespec ts;
  int top = lua_gettop(L);
  clock_gettime(CLOCK_REALTIME, &ts);
  lmp_pushloaded(L);
  if (lmp_getfield(L, -1, "math") == LUA_TTABLE &&
      lmp_getfield(L, -1, "randomseed") == LUA_TFUNCTION) {
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_pcall(L, 2, 0, 0);
  }
  lua_settop(L, top);
}

void lmp_atfork(lua_State *L) {
  lmp_rawgetp(L, LUA_REGISTRYINDEX, &atfork_key);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, &atfork_key);
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lmp_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

/* the child's side of lmp_fork: nothing of the parent's is ours */
static void forked(lua_State *L, lmp_state *S, const char *name) {
  size_t i;
  lua_Integer k, n;
  /* the parent's pipes are not ours: holding them would keep its other
     children from seeing EOF */
  for (i = 0; i < S->nfds; i++) close(S->fds[i]);
  S->nfds = 0;
  S->nzombies = 0;
  S->pid = getpid();
  if (name != NULL) {
    strncpy(S->name, name, sizeof S->name - 1);
    S->name[sizeof S->name - 1] = '\0';
  }
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_CHILDREN);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_PARKED);
  reseed(L);
  lmp_ident_forked(L);
  S->identmark = lmp_ident_mark(L);
  if (lmp_rawgetp(L, LUA_REGISTRYINDEX, &atfork_key) == LUA_TTABLE) {
    n = (lua_Integer)lmp_rawlen(L, -1);
    for (k = 1; k <= n; k++) {
      lmp_rawgeti(L, -1, k);
      lua_call(L, 0, 0);
    }
  }
  lua_pop(L, 1);
}

pid_t lmp_fork(lua_State *L, const char *name, int flags) {
  lmp_state *S = lmp_getstate(L);
  pid_t parent = getpid(), pid;
  fflush(NULL);                        /* nothing buffered prints twice */
  pid = fork();
  if (pid != 0) return pid;
  if (flags & LMP_FORK_PDEATH) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1); /* parent died before prctl */
  }
  if (flags & LMP_FORK_NOINT) signal(SIGINT, SIG_IGN);
  forked(L, S, name);
  return 0;
}

void lmp_child_exit(int code) {
  fflush(NULL);
  _exit(code);
}

/* ---------------------------------------------------------------------- */
/* children and reaping                                                   */
/* ---------------------------------------------------------------------- */
void lmp_child_add(lua_State *L, pid_t pid) {
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_CHILDREN);
  lua_pushboolean(L, 1);
  lua_rawseti(L, -2, (lua_Integer)pid);
  lua_pop(L, 1);
}

void lmp_child_remove(lua_State *L, pid_t pid) {
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_CHILDREN);
  lua_pushnil(L);
  lua_rawseti(L, -2, (lua_Integer)pid);
  lua_pop(L, 1);
}

/* pid was reaped elsewhere (mp.wait): the list must not wait for it again */
static void zombie_forget(lmp_state *S, pid_t pid) {
  size_t i;
  for (i = 0; i < S->nzombies; i++)
    if (S->zombies[i] == pid) {
      S->zombies[i] = S->zombies[--S->nzombies];
      return;
    }
}

void lmp_child_reaped(lua_State *L, pid_t pid, int status) {
  zombie_forget(lmp_getstate(L), pid);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_CHILDREN);
  if (lmp_rawgeti(L, -1, (lua_Integer)pid) != LUA_TNIL) {
    lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PARKED);
    lua_pushinteger(L, status);
    lua_rawseti(L, -2, (lua_Integer)pid);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

int lmp_parked(lua_State *L, pid_t pid, int *status) {
  int found = 0;
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PARKED);
  if (lmp_rawgeti(L, -1, (lua_Integer)pid) == LUA_TNUMBER) {
    *status = (int)lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, -3, (lua_Integer)pid);
    found = 1;
  }
  lua_pop(L, 2);
  return found;
}

pid_t lmp_reap(lua_State *L, pid_t pid, int *status, int nohang) {
  if (lmp_parked(L, pid, status)) return pid;
  return lmp_waitpid(pid, status, nohang ? WNOHANG : 0);
}

void lmp_zombie_add(lmp_state *S, pid_t pid) {
  if (S->nzombies == S->capzombies) {
    size_t nc = S->capzombies ? S->capzombies * 2 : 16;
    pid_t *nz = (pid_t *)realloc(S->zombies, nc * sizeof *nz);
    if (nz == NULL) {                  /* can't remember it: wait now */
      lmp_waitpid(pid, NULL, 0);
      return;
    }
    S->zombies = nz;
    S->capzombies = nc;
  }
  S->zombies[S->nzombies++] = pid;
}

void lmp_zombie_reap(lmp_state *S, int block) {
  size_t i = 0;
  while (i < S->nzombies) {
    pid_t r = lmp_waitpid(S->zombies[i], NULL, block ? 0 : WNOHANG);
    if (r != 0) S->zombies[i] = S->zombies[--S->nzombies];
    else i++;
  }
}

/* ---------------------------------------------------------------------- */
/* signals                                                                */
/* ---------------------------------------------------------------------- */
static const struct { const char *name; int sig; } signames[] = {
  {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
  {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE},
  {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
  {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
  {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
  {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
  {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
  {"SYS", SIGSYS}, {NULL, 0}
};

static const char *signame(int sig) {
  int i;
  for (i = 0; signames[i].name; i++)
    if (signames[i].sig == sig) return signames[i].name;
  return NULL;
}

int lmp_checksignal(lua_State *L, int idx, const char *def) {
  int i;
  const char *s;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = lmp_checkint(L, idx, "signal");
    if (n < 0 || n > 64) lmp_error(L, "lmp: bad signal number " LMP_FMTINT,
                                   LMP_INTARG(n));
    return (int)n;
  }
  if (lua_isnoneornil(L, idx) && def != NULL) s = def;
  else if (lua_type(L, idx) == LUA_TSTRING) s = lua_tostring(L, idx);
  else return lmp_typeerror(L, idx, "signal", "a number or a name");
  if (strncmp(s, "SIG", 3) == 0) s += 3;
  for (i = 0; signames[i].name; i++)
    if (strcmp(signames[i].name, s) == 0) return signames[i].sig;
  return lmp_error(L, "lmp: unknown signal '%s'", s);
}

const char *lmp_pushhow(lua_State *L, int status) {
  if (WIFSIGNALED(status)) {
    const char *n = signame(WTERMSIG(status));
    if (n) return lua_pushfstring(L, "killed by signal %d (SIG%s)",
                                  WTERMSIG(status), n);
    return lua_pushfstring(L, "killed by signal %d", WTERMSIG(status));
  }
  return lua_pushfstring(L, "exited with code %d", WEXITSTATUS(status));
}
