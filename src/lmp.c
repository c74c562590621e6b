/*
** lmp.c -- module entry, process-level functions and mp.Process.
*/
#include "lmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lualib.h"

#define KEY_STATE    "lmp.state"
#define KEY_CHILDREN "lmp.children"
#define KEY_REAPED   "lmp.reaped"

/* ====================================================================== */
/* module state                                                           */
/* ====================================================================== */
lmp_state *lmp_getstate(lua_State *L) {
  lmp_state *S;
  lua_getfield(L, LUA_REGISTRYINDEX, KEY_STATE);
  S = (lmp_state *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return S;
}

void lmp_track_fd(lua_State *L, lmp_state *S, int fd) {
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

void lmp_close_fd(lmp_state *S, int fd) {
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

/* waitpid, retried after a signal handler ran */
static pid_t waitpid_eintr(pid_t pid, int *status, int flags) {
  pid_t r;
  do r = waitpid(pid, status, flags);
  while (r < 0 && errno == EINTR);
  return r;
}

void lmp_zombie_add(lmp_state *S, pid_t pid) {
  if (S->nzombies == S->capzombies) {
    size_t nc = S->capzombies ? S->capzombies * 2 : 16;
    pid_t *nz = (pid_t *)realloc(S->zombies, nc * sizeof *nz);
    if (nz == NULL) {                  /* can't remember it: wait now */
      waitpid_eintr(pid, NULL, 0);
      return;
    }
    S->zombies = nz;
    S->capzombies = nc;
  }
  S->zombies[S->nzombies++] = pid;
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

void lmp_zombie_reap(lmp_state *S, int block) {
  size_t i = 0;
  while (i < S->nzombies) {
    pid_t r = waitpid_eintr(S->zombies[i], NULL, block ? 0 : WNOHANG);
    if (r != 0) S->zombies[i] = S->zombies[--S->nzombies];
    else i++;
  }
}

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
  if (S->finishraise && S->pid == getpid()) {
    /* Ctrl-C stopped the children we waited for at exit (finish_wait):
       the process ends as that Ctrl-C would have ended it */
    fflush(NULL);
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
  return 0;
}

void lmp_child_add(lua_State *L, pid_t pid, int idx) {
  idx = lua_absindex(L, idx);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, (lua_Integer)pid);
  lua_pop(L, 1);
}

void lmp_child_remove(lua_State *L, pid_t pid) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  lua_rawseti(L, -2, (lua_Integer)pid);
  lua_pop(L, 1);
}

int lmp_parked(lua_State *L, pid_t pid, int *status) {
  int found = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_REAPED);
  if (lua_rawgeti(L, -1, (lua_Integer)pid) == LUA_TNUMBER) {
    *status = (int)lua_tointeger(L, -1);
    lua_pushnil(L);
    lua_rawseti(L, -3, (lua_Integer)pid);
    found = 1;
  }
  lua_pop(L, 2);
  return found;
}

/*
** Reaps pool worker `pid`.  A status mp.wait() parked for it comes first:
** once reaped, the pid may already name another process.
*/
pid_t lmp_reap(lua_State *L, pid_t pid, int *status, int nohang) {
  if (lmp_parked(L, pid, status)) return pid;
  return waitpid_eintr(pid, status, nohang ? WNOHANG : 0);
}

int lmp_pidfd(pid_t pid) {
#if defined(SYS_pidfd_open)
  return (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec by default */
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

/* ====================================================================== */
/* signals                                                                */
/* ====================================================================== */
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

static int checksignal(lua_State *L, int arg, const char *def) {
  int i;
  const char *s;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    if (n < 0 || n > 64) luaL_argerror(L, arg, "lmp: bad signal number");
    return (int)n;
  }
  s = luaL_optstring(L, arg, def);
  if (strncmp(s, "SIG", 3) == 0) s += 3;
  for (i = 0; signames[i].name; i++)
    if (strcmp(signames[i].name, s) == 0) return signames[i].sig;
  return luaL_argerror(L, arg,
                       lua_pushfstring(L, "lmp: unknown signal '%s'", s));
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

/* ====================================================================== */
/* fork hygiene                                                           */
/* ====================================================================== */
static void reseed(lua_State *L) {
  struct timespec ts;
  int top = lua_gettop(L);
  clock_gettime(CLOCK_REALTIME, &ts);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "math") == LUA_TTABLE &&
      lua_getfield(L, -1, "randomseed") == LUA_TFUNCTION) {
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_pcall(L, 2, 0, 0);
  }
  lua_settop(L, top);
}

pid_t lmp_fork(lua_State *L, lmp_state *S, const char *name, int flags) {
  pid_t parent = getpid(), pid;
  size_t i;
  fflush(NULL);                        /* nothing buffered prints twice */
  pid = fork();
  if (pid != 0) return pid;
  S->pid = getpid();
  if (flags & LMP_FORK_PDEATH) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1); /* parent died before prctl */
  }
  if (flags & LMP_FORK_NOINT) signal(SIGINT, SIG_IGN);
  /* the parent's pipes are not ours: holding them would keep its other
     children from seeing EOF */
  for (i = 0; i < S->nfds; i++) close(S->fds[i]);
  S->nfds = 0;
  S->nzombies = 0;                     /* the parent's, not ours */
  S->scanwait = 0;
  S->upfd = -1;
  S->nextproc = 0;
  S->nextpool = 0;
  if (name != NULL) {
    strncpy(S->name, name, sizeof S->name - 1);
    S->name[sizeof S->name - 1] = '\0';
  }
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, KEY_REAPED);
  reseed(L);
  lmp_ident_forked(L);
  S->identmark = lmp_ident_mark(L);
  return 0;
}

void lmp_child_exit(int code) {
  fflush(NULL);
  _exit(code);
}

/* ====================================================================== */
/* process-level functions                                                */
/* ====================================================================== */
static int pushfail(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

static int mp_fork(lua_State *L) {
  lmp_state *S = lmp_getstate(L);
  char name[32];
  pid_t pid;
  snprintf(name, sizeof name, "Fork-%ld", (long)getpid());
  pid = lmp_fork(L, S, NULL, 0);
  if (pid < 0) return pushfail(L, "fork");
  if (pid == 0) {
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
static pid_t checkpid(lua_State *L, int arg) {
  int ok = 0;
  lua_Integer v = lua_tointegerx(L, arg, &ok);
  if (!ok || lua_type(L, arg) != LUA_TNUMBER)
    lmp_error(L, "lmp: pid must be an integer, got %s",
              luaL_typename(L, arg));
  if (v < INT_MIN || v > INT_MAX)
    lmp_error(L, "lmp: pid %I out of range", (LUAI_UACINT)v);
  return (pid_t)v;
}

static void child_reaped(lua_State *L, pid_t pid, int status);
static void pushfield(lua_State *L, int pidx, const char *k);

/*
** Blocks until running child `pid` ends, without reaping it.  waitpid is
** restarted after a signal handler (SA_RESTART); poll on a pidfd is not, so
** Ctrl-C gets through: returns 1 then, with the hook left to raise it (as
** mp.sleep does).  0 when it ended, or when there is no pidfd.
*/
static int wait_exit(lua_State *L, pid_t pid) {
  struct pollfd f;
  lmp_hook h;
  int stop = 0;
  f.fd = lmp_pidfd(pid);
  if (f.fd < 0) return 0;
  f.events = POLLIN;
  lmp_hook_save(L, &h);
  for (;;) {
    f.revents = 0;
    if (poll(&f, 1, -1) >= 0 || errno != EINTR) break;
    if (lmp_hook_changed(L, &h)) {
      lmp_hook_deliver(&h);            /* it fires in this thread too */
      stop = 1;
      break;
    }
  }
  close(f.fd);
  return stop;
}

static int mp_wait(lua_State *L) {
  pid_t pid = lua_isnoneornil(L, 1) ? -1 : checkpid(L, 1), r;
  int nohang = lua_toboolean(L, 2), status = 0;
  if (!nohang && pid > 0) {
    /* only a child of ours still running gets a pidfd: one would wait for
       anyone's process */
    r = waitpid_eintr(pid, &status, WNOHANG);
    if (r == 0) {
      if (wait_exit(L, pid)) {
        errno = EINTR;
        return pushfail(L, "wait");
      }
      r = waitpid_eintr(pid, &status, 0);
    }
  } else r = waitpid_eintr(pid, &status, nohang ? WNOHANG : 0);
  if (r < 0) return pushfail(L, "wait");
  lua_pushinteger(L, (lua_Integer)r);
  if (r == 0) return 1;
  child_reaped(L, r, status);
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
  int sig = checksignal(L, 2, "TERM");
  if (kill(pid, sig) != 0) return pushfail(L, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

static int mp_cpu_count(lua_State *L) {
  cpu_set_t set;
  long n = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n < 1 ? 1 : n);
  return 1;
}

static int mp_sleep(lua_State *L) {
  lua_Number s;
  struct timespec ts;
  lmp_hook h;
  if (lua_type(L, 1) != LUA_TNUMBER)
    return lmp_error(L, "lmp: sleep time must be a number, got %s",
                     luaL_typename(L, 1));
  s = lua_tonumber(L, 1);
  if (s != s) return lmp_error(L, "lmp: sleep time must be a number, got nan");
  if (s < 0) return lmp_error(L, "lmp: negative sleep time");
  if (s > 1e9) s = 1e9;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  lmp_hook_save(L, &h);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    if (lmp_hook_changed(L, &h)) {     /* let the interrupt through */
      lmp_hook_deliver(&h);
      break;
    }
  }
  return 0;
}

static int mp_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
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

/* ====================================================================== */
/* Process                                                                */
/* ====================================================================== */
typedef struct Proc {
  pid_t pid;            /* 0 until started */
  pid_t owner;          /* the process that created the object */
  int fd;               /* read end of the result pipe, -1 when closed */
  int pidfd;            /* -1 when closed or unsupported */
  int reaped, status;
  int daemon;
  int gotframe;
  int lost;             /* reaped by someone else's waitpid: no status */
  const char *frame;    /* into rd, once gotframe */
  size_t framelen;
  lmp_reader rd;
  double started;       /* lmp_now() at start */
} Proc;

/*
** For its first PIPEWAIT seconds a child is waited for by its pidfd alone.
** A wake-up by its pipe write would move the parent to the child's CPU
** (the scheduler pulls a task woken by a pipe to the waker's CPU), and the
** migration costs a short-lived child more than all its other
** bookkeeping; its result waits in the pipe (1 MiB) until it exits.  A
** bigger result would block the child until we read, so after PIPEWAIT
** the pipe is watched too: it is drained at most PIPEWAIT late.
*/
#define PIPEWAIT 1e-3

static Proc *checkproc(lua_State *L, int idx) {
  return (Proc *)lmp_checkudata(L, idx, LMP_PROCESS, "Process");
}

static Proc *ownproc(lua_State *L, int idx) {
  Proc *p = checkproc(L, idx);
  if (p->owner != getpid())
    lmp_error(L, "lmp: this Process belongs to process %d",
               (int)p->owner);
  return p;
}

static void proc_closefds(lua_State *L, Proc *p) {
  lmp_state *S = lmp_getstate(L);
  if (p->fd >= 0) lmp_close_fd(S, p->fd);
  if (p->pidfd >= 0) lmp_close_fd(S, p->pidfd);
  p->fd = p->pidfd = -1;
}

static void proc_setreaped(lua_State *L, Proc *p, int status) {
  p->reaped = 1;
  p->status = status;
  if (p->pidfd >= 0) {
    lmp_close_fd(lmp_getstate(L), p->pidfd);
    p->pidfd = -1;
  }
  lmp_child_remove(L, p->pid);
}

/* the child was reaped by a waitpid not ours: its status is lost */
static void proc_lost(lua_State *L, Proc *p) {
  p->lost = 1;
  proc_setreaped(L, p, 0);
}

/* non-blocking status check */
static void proc_poll(lua_State *L, Proc *p) {
  int status = 0;
  pid_t r;
  if (p->pid <= 0 || p->reaped) return;
  r = waitpid_eintr(p->pid, &status, WNOHANG);  /* mp.wait() hands a
                                                   Process its status */
  if (r == p->pid) proc_setreaped(L, p, status);
  else if (r < 0 && errno == ECHILD) proc_lost(L, p);
}

/*
** mp.wait() reaped `pid`.  A Process takes the status at once, so nothing
** later waits for or signals a pid that may name another process by then;
** a pool worker's is parked for lmp_reap.
*/
static void child_reaped(lua_State *L, pid_t pid, int status) {
  zombie_forget(lmp_getstate(L), pid);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  if (lua_rawgeti(L, -1, (lua_Integer)pid) != LUA_TNIL) {
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q != NULL) proc_setreaped(L, q, status);
    else {
      luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_REAPED);
      lua_pushinteger(L, status);
      lua_rawseti(L, -2, (lua_Integer)pid);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
}

/*
** Reads what is available; closes the pipe at EOF.  The result frame stays
** at the start of the reader's buffer (one frame per child).
*/
static void proc_drain(lua_State *L, Proc *p) {
  while (p->fd >= 0) {
    int r;
    if (p->gotframe) {                 /* only EOF is left to see */
      char c;
      ssize_t k = lmp_read(p->fd, &c, 1);
      if (k > 0) continue;
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      lmp_close_fd(lmp_getstate(L), p->fd);
      p->fd = -1;
      return;
    }
    r = lmp_reader_fill(&p->rd, p->fd);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r < 0) lmp_syserror(L, "reading a child's result");
    if (lmp_reader_frame(&p->rd, &p->frame, &p->framelen)) p->gotframe = 1;
    if (r == 0) {
      lmp_close_fd(lmp_getstate(L), p->fd);
      p->fd = -1;
    }
  }
}

/* reaps the child if it ended; then its fds go (the result stays) */
static void proc_collect(lua_State *L, Proc *p) {
  proc_poll(L, p);
  if (p->reaped) {
    proc_drain(L, p);                  /* whatever it wrote before exiting */
    proc_closefds(L, p);
  }
}

/*
** Non-blocking: reads what the child wrote (a result bigger than the pipe
** must not keep it from exiting while the script only polls), reaps it if
** it ended, and then lets its fds go (the result stays in the reader).
*/
static void proc_check(lua_State *L, Proc *p) {
  if (p->pid <= 0 || p->owner != getpid()) return;
  if (p->fd >= 0 && !p->gotframe) {
    struct pollfd f;                   /* no reader buffer for a child that
                                          has written nothing yet */
    f.fd = p->fd;
    f.events = POLLIN;
    f.revents = 0;
    if (poll(&f, 1, 0) > 0) proc_drain(L, p);
  }
  proc_collect(L, p);
}

/*
** Reaps the Processes of ours that ended (their fds go, the result stays).
** A waitpid per running child at every start would make starting n
** children O(n^2): waitid(WNOWAIT) names an ended child, which is reaped
** alone if it is one of our Processes.  An ended child that is not (an
** mp.fork child nobody waited for, a dead pool worker) keeps being named,
** so then the full scan runs once per as many starts as it left children
** running, but at least every SCANGAP starts: at most SCANGAP ended
** Processes wait for it, holding their fds.
*/
#define SCANGAP 32
static void check_children(lua_State *L) {
  lmp_state *S = lmp_getstate(L);
  int k;
  size_t n = 0;
  lmp_zombie_reap(S, 0);               /* lmp's own killed workers */
  for (k = 0; k < 64; k++) {
    siginfo_t si;
    Proc *q;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        si.si_pid == 0)
      return;                          /* nothing has ended */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
    lua_rawgeti(L, -1, (lua_Integer)si.si_pid);
    q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    lua_pop(L, 2);
    if (q == NULL || q->owner != getpid() || q->reaped) break;
    proc_collect(L, q);
    if (!q->reaped) break;             /* cannot happen; do not loop */
  }
  if (S->scanwait > 0) {
    S->scanwait--;
    return;
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  while (lua_next(L, -2)) {            /* proc_collect may clear it */
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q != NULL && q->owner == getpid()) {
      proc_collect(L, q);
      if (!q->reaped) n++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  S->scanwait = n < SCANGAP ? n : SCANGAP;
}

/*
** Waits for the child to end, draining its result pipe all along (a big
** result must never deadlock against waitpid).  Returns 1 ended, 0 timeout,
** -2 interrupted.
*/
static int proc_wait(lua_State *L, Proc *p, double deadline) {
  lmp_hook h;
  lmp_hook_save(L, &h);
  for (;;) {
    struct pollfd fds[2];
    unsigned n = 0;
    int r, status, piped = 0;
    double until = deadline;
    proc_collect(L, p);
    if (p->reaped) return 1;
    if (p->fd >= 0 && !p->gotframe) {
      double late = p->started + PIPEWAIT;
      if (p->pidfd >= 0 && lmp_now() < late) {
        if (until < 0 || until > late) until = late;
      } else {
        fds[n].fd = p->fd;
        fds[n].events = POLLIN;
        n++;
        piped = 1;
      }
    }
    if (p->pidfd >= 0) {
      fds[n].fd = p->pidfd;
      fds[n].events = POLLIN;
      n++;
    } else if (n == 0) {
      /* no pidfd and no more data expected: the child is exiting */
      if (deadline < 0) {
        if (waitpid_eintr(p->pid, &status, 0) == p->pid)
          proc_setreaped(L, p, status);
        else if (errno == ECHILD) proc_lost(L, p);
        else lmp_syserror(L, "waitpid");
        continue;
      }
      if (lmp_now() >= deadline) return 0;
      {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        continue;
      }
    }
    r = lmp_poll(L, &h, fds, n, until);
    if (r == -2) return -2;
    if (r < 0) lmp_syserror(L, "poll");
    if (r > 0 && piped && fds[0].revents) proc_drain(L, p);
    if (deadline >= 0 && lmp_now() >= deadline) {
      proc_poll(L, p);
      if (!p->reaped) return 0;
    }
  }
}


static void pushfield(lua_State *L, int pidx, const char *k) {
  lua_getiuservalue(L, pidx, 1);
  lua_getfield(L, -1, k);
  lua_remove(L, -2);
}

static int proc_new(lua_State *L) {
  lmp_state *S = lmp_getstate(L);
  Proc *p;
  int n = lua_gettop(L), i;
  int opts = lua_istable(L, 1) && !lmp_iscallable(L, 1);
  p = (Proc *)lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  p->fd = p->pidfd = -1;
  p->owner = getpid();
  luaL_setmetatable(L, LMP_PROCESS);
  lua_createtable(L, 0, 4);            /* uservalue: target, args, name */
  if (opts) {
    if (n > 1) lmp_error(L, "lmp: Process{...} takes one options table");
    lua_getfield(L, 1, "target");
    lua_setfield(L, -2, "target");
    if (lua_getfield(L, 1, "args") != LUA_TNIL &&
        lua_type(L, -1) != LUA_TTABLE)
      lmp_error(L, "lmp: Process args must be a table, got %s",
                 luaL_typename(L, -1));
    lua_setfield(L, -2, "args");
    if (lua_getfield(L, 1, "name") != LUA_TNIL &&
        lua_type(L, -1) != LUA_TSTRING)
      lmp_error(L, "lmp: Process name must be a string");
    lua_setfield(L, -2, "name");
    lua_getfield(L, 1, "daemon");
    p->daemon = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else {
    if (n > 0) lua_pushvalue(L, 1);
    else lua_pushnil(L);             /* index 1 is now the new object */
    lua_setfield(L, -2, "target");
    lua_createtable(L, n > 1 ? n - 1 : 0, 1);
    for (i = 2; i <= n; i++) {
      lua_pushvalue(L, i);
      lua_rawseti(L, -2, i - 1);
    }
    lua_pushinteger(L, n > 1 ? n - 1 : 0);
    lua_setfield(L, -2, "n");
    lua_setfield(L, -2, "args");
  }
  lua_getfield(L, -1, "target");
  if (!lmp_iscallable(L, -1))
    lmp_error(L, "lmp: Process target must be callable, got %s",
              luaL_typename(L, -1));
  lua_pop(L, 1);
  if (lua_getfield(L, -1, "name") == LUA_TNIL) {
    lua_pushfstring(L, "Process-%d", (int)++S->nextproc);
    lua_setfield(L, -3, "name");
  }
  lua_pop(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/*
** SIGINT in a Process child: the target runs in a thread of its own, which
** lua.c's handler (it hooks the main thread) would never stop.  This one,
** installed in the child unless SIGINT is ignored, hooks that thread the
** same way: "interrupted!" at its next instruction, and a second SIGINT
** kills.  The static is the child's own, set after its fork.
*/
static lua_State *child_thread, *child_main_thread;

static void child_stop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* the main thread too, as lua.c does: a wait in another coroutine sees
   it change (lmp_hook_changed) and takes the interrupt there */
static void child_onsigint(int sig) {
  int mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT;
  signal(sig, SIG_DFL);
  if (child_thread != NULL) {
    lua_sethook(child_thread, child_stop, mask, 1);
    lua_sethook(child_main_thread, child_stop, mask, 1);
  }
}

static void child_catchint(lua_State *L, lua_State *T) {
  struct sigaction sa, old;
  if (sigaction(SIGINT, NULL, &old) != 0 || old.sa_handler == SIG_IGN) return;
  child_thread = T;
  child_main_thread = L;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = child_onsigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/*
** Child: runs the target in a thread of its own, so the traceback of an
** error shows the task's frames and not the parent's script that forked.
** Returns ok, values...
*/
static int child_run(lua_State *L) {
  lua_State *T = lua_newthread(L);     /* [target, args, T] */
  int n, st, nres;
  child_catchint(L, T);
  lua_pushcfunction(T, lmp_traceback);
  lua_pushvalue(L, 1);
  n = lmp_pushargs(L, 2);              /* on L: its errors are caught */
  if (!lua_checkstack(T, n + 2)) lmp_error(L, "lmp: too many arguments");
  lua_xmove(L, T, n + 1);              /* T: [msgh, target, args...] */
  lua_gc(L, LUA_GCRESTART);
  st = lua_pcall(T, n, LUA_MULTRET, 1);
  lua_gc(L, LUA_GCSTOP);
  nres = lua_gettop(T) - 1;
  luaL_checkstack(L, nres + 2, "lmp: too many results");
  lua_pushboolean(L, st == LUA_OK);
  lua_xmove(T, L, nres);
  return nres + 1;
}

/* child: encodes and writes [ok, values...] from index 1 */
static int child_send(lua_State *L) {
  int n = lua_gettop(L), fd = (int)lua_tointeger(L, lua_upvalueindex(1)), i;
  lmp_enc *E = lmp_enc_new(L, 1);
  lmp_enc_ident(E, lmp_getstate(L)->identmark);
  lmp_enc_begin(E, (size_t)n);
  for (i = 1; i <= n; i++)
    lmp_enc_value(E, i, lua_toboolean(L, 1) ? "result" : "error",
                  lua_toboolean(L, 1) ? i - 1 : -1);
  if (lmp_enc_writeframe(E, fd) != 0) lmp_child_exit(1);
  return 0;
}

static void finish_children(lua_State *L);

static void child_main(lua_State *L, int fd, int pidx) {
  int ok, code;
  lua_settop(L, pidx);
  lua_pushcfunction(L, child_run);
  pushfield(L, pidx, "target");
  pushfield(L, pidx, "args");
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
  finish_children(L);
  lmp_child_exit(code);
}

/*
** Child: everything after the fork runs protected, so no error can unwind
** into the parent's script (which this child must never run).
*/
static int child_protected(lua_State *L) {
  child_main(L, (int)lua_tointeger(L, 2), 1);   /* [process, fd] */
  return 0;
}

static int proc_start(lua_State *L) {
  lmp_state *S = lmp_getstate(L);
  Proc *p = ownproc(L, 1);
  int fds[2];
  pid_t pid;
  const char *name;
  if (p->pid != 0) return lmp_error(L, "lmp: process already started");
  /* like Python's start(): finished children nobody joined give back
     their fds and zombies now, not at exit */
  check_children(L);
  pushfield(L, 1, "name");
  name = lua_tostring(L, -1);
  if (lmp_pipe(fds) != 0) return lmp_syserror(L, "pipe");
  pid = lmp_fork(L, S, name, p->daemon ? LMP_FORK_PDEATH : 0);
  if (pid < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    errno = e;
    return lmp_syserror(L, "fork");
  }
  if (pid == 0) {
    /* a collection step here would touch (and so copy) most of the
       parent's heap pages; the target runs with the collector on */
    lua_gc(L, LUA_GCSTOP);
    close(fds[0]);
    S->upfd = fds[1];
    lmp_track_fd(L, S, fds[1]);        /* grandchildren must not hold it */
    lua_pushcfunction(L, child_protected);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, fds[1]);
    lua_pcall(L, 2, 0, 0);
    lmp_child_exit(1);
  }
  close(fds[1]);
  p->pid = pid;
  p->started = lmp_now();
  lmp_child_add(L, pid, 1);            /* reaped by someone, whatever follows */
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  lmp_track_fd(L, S, fds[0]);          /* closes it if it raises */
  p->fd = fds[0];
  {
    int pfd = lmp_pidfd(pid);
    if (pfd >= 0) {
      lmp_track_fd(L, S, pfd);
      p->pidfd = pfd;
    }
  }
  lua_settop(L, 1);
  return 1;
}

static Proc *startedproc(lua_State *L) {
  Proc *p = ownproc(L, 1);
  if (p->pid == 0) lmp_error(L, "lmp: process not started");
  return p;
}

static void proc_interrupted(lua_State *L) {
  lmp_error(L, "lmp: interrupted");
}

static int proc_join(lua_State *L) {
  Proc *p = startedproc(L);
  int r = proc_wait(L, p, lmp_optdeadline(L, 2));
  if (r == -2) proc_interrupted(L);
  lua_pushboolean(L, r == 1);
  return 1;
}

static int proc_get(lua_State *L) {
  Proc *p = startedproc(L);
  int r = proc_wait(L, p, lmp_optdeadline(L, 2)), top;
  size_t n, i;
  lmp_dec D;
  if (r == -2) proc_interrupted(L);
  if (r == 0) return lmp_error(L, "lmp: timeout");
  if (!p->gotframe) {
    pushfield(L, 1, "name");
    if (p->lost) lua_pushliteral(L, "was reaped by another waitpid");
    else lmp_pushhow(L, p->status);
    return lmp_error(L, "lmp: process %s (pid %d) %s before returning",
                      lua_tostring(L, -2), (int)p->pid, lua_tostring(L, -1));
  }
  top = lua_gettop(L);
  n = lmp_dec_begin(&D, L, p->frame, p->framelen, LMP_DEC_TRUSTED);
  luaL_checkstack(L, (int)(n < 1000000 ? n : 1000000) + 4, "lmp: too many results");
  for (i = 0; i < n; i++) lmp_dec_value(&D);
  lmp_dec_end(&D);
  if (n == 0 || !lua_toboolean(L, top + 1)) {
    lua_settop(L, top + 2);
    return lua_error(L);
  }
  return (int)n - 1;
}

static int proc_is_alive(lua_State *L) {
  Proc *p = ownproc(L, 1);
  proc_check(L, p);
  lua_pushboolean(L, p->pid > 0 && !p->reaped);
  return 1;
}

static int proc_signal(lua_State *L, int sig) {
  Proc *p = startedproc(L);
  proc_poll(L, p);
  if (!p->reaped && kill(p->pid, sig) != 0 && errno != ESRCH)
    return lmp_syserror(L, "kill");
  return 0;
}

static int proc_terminate(lua_State *L) { return proc_signal(L, SIGTERM); }
static int proc_kill(lua_State *L) { return proc_signal(L, SIGKILL); }

static int proc_index(lua_State *L) {
  Proc *p = checkproc(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "pid") == 0) {
    if (p->pid) lua_pushinteger(L, (lua_Integer)p->pid);
    else lua_pushnil(L);
  } else if (strcmp(k, "name") == 0) pushfield(L, 1, "name");
  else if (strcmp(k, "daemon") == 0) lua_pushboolean(L, p->daemon);
  else if (strcmp(k, "exitcode") == 0) {
    proc_check(L, p);
    if (!p->reaped || p->lost) lua_pushnil(L);   /* lost: unknown */
    else if (WIFSIGNALED(p->status))
      lua_pushinteger(L, -(lua_Integer)WTERMSIG(p->status));
    else lua_pushinteger(L, WEXITSTATUS(p->status));
  } else {
    luaL_getmetatable(L, LMP_PROCESS);
    lua_getfield(L, -1, "__methods");
    lua_getfield(L, -1, k);
  }
  return 1;
}

static int proc_newindex(lua_State *L) {
  Proc *p = checkproc(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
  if (strcmp(k, "name") == 0) {
    if (lua_type(L, 3) != LUA_TSTRING)
      return lmp_error(L, "lmp: Process name must be a string, got %s",
                       luaL_typename(L, 3));
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "name");
  } else if (strcmp(k, "daemon") == 0) {
    if (p->pid) return lmp_error(L, "lmp: cannot set daemon after start");
    p->daemon = lua_toboolean(L, 3);
  } else return lmp_error(L, "lmp: Process has no settable field '%s'", k);
  return 0;
}

static int proc_tostring(lua_State *L) {
  Proc *p = checkproc(L, 1);
  const char *state = p->pid == 0 ? "initial"
                      : (p->reaped ? "stopped" : "started");
  pushfield(L, 1, "name");
  lua_pushfstring(L, "lmp.Process{%s, pid=%d, %s%s}", lua_tostring(L, -1),
                  (int)p->pid, state, p->daemon ? ", daemon" : "");
  return 1;
}

static void kill_daemons(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q && q->daemon && q->owner == getpid()) {
      proc_poll(L, q);                 /* a reaped pid is no longer ours */
      if (!q->reaped) kill(q->pid, SIGTERM);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/*
** The script ended (or a Process child's target returned) while non-daemon
** children run: they are joined, as in Python, but never in silence.  After
** FINISH_QUIET seconds one line on stderr says whom we wait for and that
** Ctrl-C stops them; Ctrl-C then terminates them (SIGTERM, SIGKILL a second
** later) and, once everything is reaped, the process dies of the SIGINT
** (state_gc re-raises it) as it would have without lmp.  lua.c has put
** SIGINT's default back by now, so a handler of ours stands in for it
** while we wait (not if SIGINT is ignored).
*/
#define FINISH_QUIET 1.0
static volatile sig_atomic_t finish_sigint;
static void finish_onsigint(int sig) {
  (void)sig;
  finish_sigint = 1;
}

/* pushes "Process-1 (pid 123), Process-2 (pid 456)": whom we wait for */
static int push_waitlist(lua_State *L) {
  int n = 0, acc;
  lua_pushliteral(L, "");
  acc = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q != NULL && q->owner == getpid() && !q->daemon && !q->reaped) {
      pushfield(L, -1, "name");
      lua_pushfstring(L, "%s%s%s (pid %d)", lua_tostring(L, acc),
                      n++ ? ", " : "", lua_tostring(L, -1), (int)q->pid);
      lua_replace(L, acc);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return n;
}

static void finish_wait(lua_State *L, Proc *p) {
  lmp_state *S = lmp_getstate(L);
  struct sigaction sa, old;
  int installed = 0;
  double start = lmp_now();
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = finish_onsigint;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN &&
      sigaction(SIGINT, &sa, NULL) == 0)
    installed = 1;
  for (;;) {
    int r;
    if (finish_sigint) S->finishint = 1;
    if (S->finishint) {                /* stop it instead */
      kill(p->pid, SIGTERM);
      if (proc_wait(L, p, lmp_now() + 1.0) != 1) {
        kill(p->pid, SIGKILL);
        proc_wait(L, p, lmp_now() + 5.0);
      }
      break;
    }
    r = proc_wait(L, p, lmp_now() + 0.1);
    if (r == 1) break;
    if (r == -2) S->finishint = 1;     /* lua.c's own handler saw it */
    if (!S->finishmsg && lmp_now() - start >= FINISH_QUIET) {
      int n;
      S->finishmsg = 1;
      n = push_waitlist(L);
      fprintf(stderr, "lmp: waiting for %d child process%s to finish: %s "
                      "(Ctrl-C stops %s)\n", n, n == 1 ? "" : "es",
              lua_tostring(L, -1), n == 1 ? "it" : "them");
      fflush(stderr);
      lua_pop(L, 1);
    }
  }
  if (installed) {
    if (S->finishint && old.sa_handler == SIG_DFL) S->finishraise = 1;
    sigaction(SIGINT, &old, NULL);
  }
}

/*
** A running child's object is referenced from the children table until
** reaped, so only lua_close (the main script ending) can finalize it while
** it runs: then non-daemon children are joined and daemons terminated.
*/
static void proc_finish(lua_State *L, Proc *p) {
  proc_poll(L, p);                     /* a reaped pid is no longer ours */
  if (p->pid > 0 && !p->reaped) {
    if (p->daemon) {
      kill(p->pid, SIGTERM);
      if (proc_wait(L, p, lmp_now() + 1.0) != 1) {
        kill(p->pid, SIGKILL);
        proc_wait(L, p, lmp_now() + 5.0);
      }
    } else {
      kill_daemons(L);
      finish_wait(L, p);
    }
  }
  proc_closefds(L, p);
}

static int proc_gc(lua_State *L) {
  Proc *p = checkproc(L, 1);
  if (p->owner == getpid()) proc_finish(L, p);
  /* else inherited: its fds were closed at the fork; only memory is ours */
  lmp_reader_free(&p->rd);
  return 0;
}

/*
** A Process child ends as the main script does (Python's _exit_function):
** daemons it started are terminated, its other children joined.
*/
static void finish_children(lua_State *L) {
  kill_daemons(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  while (lua_next(L, -2)) {            /* proc_finish clears the entry */
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q != NULL && q->owner == getpid()) proc_finish(L, q);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int mp_active_children(lua_State *L) {
  int i = 0;
  lua_newtable(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_CHILDREN);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)luaL_testudata(L, -1, LMP_PROCESS);
    if (q != NULL) {
      proc_check(L, q);                /* reaps finished ones */
      if (!q->reaped) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, -5, ++i);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* ====================================================================== */
/* module                                                                 */
/* ====================================================================== */
static const luaL_Reg proc_methods[] = {
  {"start", proc_start},
  {"join", proc_join},
  {"get", proc_get},
  {"is_alive", proc_is_alive},
  {"terminate", proc_terminate},
  {"kill", proc_kill},
  {NULL, NULL}
};

static const luaL_Reg proc_meta[] = {
  {"__index", proc_index},
  {"__newindex", proc_newindex},
  {"__tostring", proc_tostring},
  {"__gc", proc_gc},
  {NULL, NULL}
};

static const luaL_Reg mp_funcs[] = {
  {"fork", mp_fork},
  {"getpid", mp_getpid},
  {"getppid", mp_getppid},
  {"wait", mp_wait},
  {"kill", mp_kill},
  {"cpu_count", mp_cpu_count},
  {"sleep", mp_sleep},
  {"time", mp_time},
  {"current_process", mp_current_process},
  {"active_children", mp_active_children},
  {"Process", proc_new},
  {NULL, NULL}
};

static void open_state(lua_State *L) {
  lmp_state *S;
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_STATE) == LUA_TUSERDATA) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  S = (lmp_state *)lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  S->pid = getpid();
  S->upfd = -1;
  strcpy(S->name, "MainProcess");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, KEY_STATE);
}

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_lmp(lua_State *L);

int luaopen_lmp(lua_State *L) {
  open_state(L);
  if (luaL_newmetatable(L, LMP_PROCESS)) {
    luaL_setfuncs(L, proc_meta, 0);
    luaL_newlib(L, proc_methods);
    lua_setfield(L, -2, "__methods");
  }
  lua_pop(L, 1);
  luaL_newlib(L, mp_funcs);
  lmp_codec_open(L);
  lmp_pool_open(L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
