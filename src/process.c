/*
** process.c -- mp.Process: a forked child that runs a target and sends
** back its values (or its error) through a pipe, and mp.active_children.
*/
#include "process.h"
#include "process_child.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct Proc {
  pid_t pid;            /* 0 until started */
  pid_t owner;          /* the process that created the object */
  int fd;               /* read end of the result pipe, -1 when closed */
  int pidfd;            /* -1 when closed or unsupported */
  int reaped, status;
  int daemon;
  int gotframe;
  int lost;             /* reaped by someone else's waitpid: no status */
  int sentinel;         /* p.sentinel was handed out: its fd stays open */
  const char *frame;    /* into rd, once gotframe */
  size_t framelen;
  lmp_reader rd;
  double started;       /* lmp_now() at start */
} Proc;

/* what this process knows of its Processes; reset in each child */
typedef struct procs {
  unsigned long next;   /* for "Process-N" names */
  size_t scanwait;      /* starts before the next full scan of children */
  int finishint;        /* Ctrl-C while waiting for children at exit */
  int finishmsg;        /* ... and we said whom we were waiting for */
} procs;

/* registry: the procs state (LMP_KEY_PROCS maps pid -> running Process) */
static const char procs_key = 0;

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

static procs *getprocs(lua_State *L) {
  procs *P;
  lmp_rawgetp(L, LUA_REGISTRYINDEX, &procs_key);
  P = (procs *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return P;
}

static Proc *checkproc(lua_State *L, int idx) {
  return (Proc *)lmp_checkudata(L, idx, LMP_PROCESS, "Process");
}

static Proc *ownproc(lua_State *L, int idx) {
  Proc *p = checkproc(L, idx);
  if (p->owner != getpid())
    lmp_error(L, "lmp: this Process belongs to process %d", (int)p->owner);
  return p;
}

static void proc_closefds(lua_State *L, Proc *p) {
  lmp_close_fd(L, p->fd);
  p->fd = -1;
  if (!p->sentinel) {
    lmp_close_fd(L, p->pidfd);
    p->pidfd = -1;
  }
}

static void procs_set(lua_State *L, pid_t pid, int idx) {
  idx = lmp_absindex(L, idx);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, (lua_Integer)pid);
  lua_pop(L, 1);
}

static void proc_setreaped(lua_State *L, Proc *p, int status) {
  p->reaped = 1;
  p->status = status;
  if (!p->sentinel) {                  /* an event loop may be watching it */
    lmp_close_fd(L, p->pidfd);
    p->pidfd = -1;
  }
  lmp_child_remove(L, p->pid);
  lua_pushnil(L);
  procs_set(L, p->pid, -1);
  lua_pop(L, 1);
}

/*
** Non-blocking status check.  A status mp.wait() took comes first (the
** pid may name another process by then); a child reaped by a waitpid not
** ours ends with its status lost.
*/
static void proc_poll(lua_State *L, Proc *p) {
  int status = 0;
  pid_t r;
  if (p->pid <= 0 || p->reaped) return;
  r = lmp_reap(L, p->pid, &status, 1);
  if (r == p->pid) proc_setreaped(L, p, status);
  else if (r < 0 && errno == ECHILD) {
    p->lost = 1;
    proc_setreaped(L, p, 0);
  }
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
      lmp_close_fd(L, p->fd);
      p->fd = -1;
      return;
    }
    r = lmp_reader_fill(&p->rd, p->fd);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (r < 0) lmp_syserror(L, "reading a child's result");
    if (lmp_reader_frame(&p->rd, &p->frame, &p->framelen)) p->gotframe = 1;
    if (r == 0) {
      lmp_close_fd(L, p->fd);
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
  procs *P = getprocs(L);
  int k;
  size_t n = 0;
  lmp_zombie_reap(lmp_getstate(L), 0);   /* lmp's own killed workers */
  for (k = 0; k < 64; k++) {
    siginfo_t si;
    Proc *q;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        si.si_pid == 0)
      return;                          /* nothing has ended */
    lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
    lmp_rawgeti(L, -1, (lua_Integer)si.si_pid);
    q = (Proc *)lua_touserdata(L, -1);
    lua_pop(L, 2);
    if (q == NULL || q->owner != getpid() || q->reaped) break;
    proc_collect(L, q);
    if (!q->reaped) break;             /* cannot happen; do not loop */
  }
  if (P->scanwait > 0) {
    P->scanwait--;
    return;
  }
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {            /* proc_collect may clear it */
    Proc *q = (Proc *)lua_touserdata(L, -1);
    if (q->owner == getpid()) {
      proc_collect(L, q);
      if (!q->reaped) n++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  P->scanwait = n < SCANGAP ? n : SCANGAP;
}

/* no pidfd, no more data expected: the child is exiting; 0 at deadline */
static int proc_waitblind(lua_State *L, Proc *p, double deadline) {
  int status;
  if (deadline < 0) {
    if (lmp_waitpid(p->pid, &status, 0) == p->pid) proc_setreaped(L, p, status);
    else if (errno == ECHILD) {
      p->lost = 1;
      proc_setreaped(L, p, 0);
    } else lmp_syserror(L, "waitpid");
    return 1;
  }
  if (lmp_now() >= deadline) return 0;
  lmp_sleep_ms(1);
  return 1;
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
    int r, piped = 0;
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
      if (!proc_waitblind(L, p, deadline)) return 0;
      continue;
    }
    r = lmp_poll(&h, fds, n, until);
    if (r == -2) return -2;
    if (r < 0) lmp_syserror(L, "poll");
    if (r > 0 && piped && fds[0].revents) proc_drain(L, p);
    if (deadline >= 0 && lmp_now() >= deadline) {
      proc_poll(L, p);
      if (!p->reaped) return 0;
    }
  }
}

static void finish_children(lua_State *L);

/* ====================================================================== */
/* Process methods                                                        */
/* ====================================================================== */
/* Process(f, ...) or Process{target=, args=, name=, daemon=} */
static void proc_options(lua_State *L, Proc *p, int n) {
  static const char *const names[] = {"target", "args", "name", "daemon",
                                      NULL};
  if (n > 1) lmp_error(L, "lmp: Process{...} takes one options table");
  lmp_checkopts(L, 1, "Process", names);
  lmp_getfield(L, 1, "target");
  lua_setfield(L, -2, "target");
  if (lmp_getfield(L, 1, "args") != LUA_TNIL && !lua_istable(L, -1))
    lmp_typeerror(L, -1, "Process args", "a table");
  lua_setfield(L, -2, "args");
  if (lmp_getfield(L, 1, "name") != LUA_TNIL && lua_type(L, -1) != LUA_TSTRING)
    lmp_typeerror(L, -1, "Process name", "a string");
  lua_setfield(L, -2, "name");
  lmp_getfield(L, 1, "daemon");
  p->daemon = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

static int proc_new(lua_State *L) {
  Proc *p;
  int n = lua_gettop(L), i;
  int opts = lua_istable(L, 1) && !lmp_iscallable(L, 1);
  p = (Proc *)lmp_newud(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  p->fd = p->pidfd = -1;
  p->owner = getpid();
  luaL_setmetatable(L, LMP_PROCESS);
  lua_createtable(L, 0, 4);            /* user value: target, args, name */
  if (opts) proc_options(L, p, n);
  else {
    if (n > 0) lua_pushvalue(L, 1);
    else lua_pushnil(L);
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
  lmp_getfield(L, -1, "target");
  if (!lmp_iscallable(L, -1)) lmp_typeerror(L, -1, "Process target", "callable");
  lua_pop(L, 1);
  if (lmp_getfield(L, -1, "name") == LUA_TNIL) {
    lua_pushfstring(L, "Process-%d", (int)++getprocs(L)->next);
    lua_setfield(L, -3, "name");
  }
  lua_pop(L, 1);
  lmp_setuv(L, -2, 1);
  return 1;
}

/* the parent's side of start: the pipe, the pidfd, the bookkeeping */
static void proc_started(lua_State *L, Proc *p, pid_t pid, int rfd) {
  int pfd;
  p->pid = pid;
  p->started = lmp_now();
  lmp_child_add(L, pid);
  procs_set(L, pid, 1);                /* reaped by someone, whatever follows */
  lmp_nonblock(rfd);
  lmp_track_fd(L, rfd);                /* closes it if it raises */
  p->fd = rfd;
  pfd = lmp_pidfd(pid);
  if (pfd >= 0) {
    lmp_track_fd(L, pfd);
    p->pidfd = pfd;
  }
}

/* "lmp: <name>: <what>: <strerror(errno)>", the name on the stack's top */
static int start_error(lua_State *L, const char *what) {
  int e = errno;
  const char *name = lua_tostring(L, -1);
  return lmp_error(L, "lmp: %s: %s: %s", name != NULL ? name : "Process",
                   what, strerror(e));
}

static int proc_start(lua_State *L) {
  Proc *p = ownproc(L, 1);
  int fds[2];
  pid_t pid;
  if (p->pid != 0) return lmp_error(L, "lmp: process already started");
  /* like Python's start(): finished children nobody joined give back
     their fds and zombies now, not at exit */
  check_children(L);
  lmp_uvfield(L, 1, "name");
  if (lmp_pipe(fds) != 0) return start_error(L, "pipe");
  pid = lmp_fork(L, lua_tostring(L, -1), p->daemon ? LMP_FORK_PDEATH : 0);
  if (pid < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    errno = e;
    return start_error(L, "fork");
  }
  if (pid == 0) {
    /* a collection step here would touch (and so copy) most of the
       parent's heap pages; the target runs with the collector on */
    lmp_gc_stop(L);
    close(fds[0]);
    lmp_track_fd(L, fds[1]);           /* grandchildren must not hold it */
    lmp_process_child(L, 1, fds[1], finish_children);
  }
  close(fds[1]);
  proc_started(L, p, pid, fds[0]);
  lua_settop(L, 1);
  return 1;
}

static Proc *startedproc(lua_State *L) {
  Proc *p = ownproc(L, 1);
  if (p->pid == 0) lmp_error(L, "lmp: process not started");
  return p;
}

static int proc_join(lua_State *L) {
  Proc *p = startedproc(L);
  int r = proc_wait(L, p, lmp_optdeadline(L, 2));
  if (r == -2) lmp_error(L, "lmp: interrupted");
  lua_pushboolean(L, r == 1);
  return 1;
}

static int proc_get(lua_State *L) {
  Proc *p = startedproc(L);
  int r = proc_wait(L, p, lmp_optdeadline(L, 2)), top;
  size_t n, i;
  lmp_dec D;
  if (r == -2) lmp_error(L, "lmp: interrupted");
  if (r == 0) return lmp_error(L, "lmp: timeout");
  if (!p->gotframe) {
    lmp_uvfield(L, 1, "name");
    if (p->lost) lua_pushliteral(L, "was reaped by another waitpid");
    else lmp_pushhow(L, p->status);
    return lmp_error(L, "lmp: process %s (pid %d) %s before returning",
                     lua_tostring(L, -2), (int)p->pid, lua_tostring(L, -1));
  }
  top = lua_gettop(L);
  n = lmp_dec_begin(&D, L, p->frame, p->framelen, LMP_DEC_TRUSTED);
  luaL_checkstack(L, (int)(n < 1000000 ? n : 1000000) + 4,
                  "lmp: too many results");
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
  } else if (strcmp(k, "name") == 0) lmp_uvfield(L, 1, "name");
  else if (strcmp(k, "daemon") == 0) lua_pushboolean(L, p->daemon);
  else if (strcmp(k, "sentinel") == 0) {
    /* an fd readable once the child has ended (its pidfd), for event
       loops; it stays open until the object is collected */
    if (p->pid > 0 && p->pidfd >= 0 && p->owner == getpid()) {
      p->sentinel = 1;
      lua_pushinteger(L, p->pidfd);
    } else lua_pushnil(L);
  }
  else if (strcmp(k, "exitcode") == 0) {
    proc_check(L, p);
    if (!p->reaped || p->lost) lua_pushnil(L);   /* lost: unknown */
    else if (WIFSIGNALED(p->status))
      lua_pushinteger(L, -(lua_Integer)WTERMSIG(p->status));
    else lua_pushinteger(L, WEXITSTATUS(p->status));
  } else {
    luaL_getmetatable(L, LMP_PROCESS);
    lmp_getfield(L, -1, "__methods");
    lmp_getfield(L, -1, k);
  }
  return 1;
}

static int proc_newindex(lua_State *L) {
  Proc *p = checkproc(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
  if (strcmp(k, "name") == 0) {
    if (lua_type(L, 3) != LUA_TSTRING)
      return lmp_typeerror(L, 3, "Process name", "a string");
    lua_pushvalue(L, 3);
    lmp_setuvfield(L, 1, "name");
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
  lmp_uvfield(L, 1, "name");
  lua_pushfstring(L, "lmp.Process{%s, pid=%d, %s%s}", lua_tostring(L, -1),
                  (int)p->pid, state, p->daemon ? ", daemon" : "");
  return 1;
}

/* ====================================================================== */
/* the end: children still running                                       */
/* ====================================================================== */
/* terminates the child (SIGKILL a second later) and reaps it */
static void proc_stop(lua_State *L, Proc *p) {
  kill(p->pid, SIGTERM);
  if (proc_wait(L, p, lmp_now() + 1.0) != 1) {
    kill(p->pid, SIGKILL);
    proc_wait(L, p, lmp_now() + 5.0);
  }
}

static void kill_daemons(lua_State *L) {
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)lua_touserdata(L, -1);
    if (q->daemon && q->owner == getpid()) {
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
** (the runtime's state re-raises it) as it would have without lmp.  lua.c
** has put SIGINT's default back by now, so a handler of ours stands in for
** it while we wait (not if SIGINT is ignored).
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
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)lua_touserdata(L, -1);
    if (q->owner == getpid() && !q->daemon && !q->reaped) {
      lmp_uvfield(L, -1, "name");
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

static void finish_say(lua_State *L) {
  int n = push_waitlist(L);
  fprintf(stderr, "lmp: waiting for %d child process%s to finish: %s "
                  "(Ctrl-C stops %s)\n", n, n == 1 ? "" : "es",
          lua_tostring(L, -1), n == 1 ? "it" : "them");
  fflush(stderr);
  lua_pop(L, 1);
}

static void finish_wait(lua_State *L, Proc *p) {
  procs *P = getprocs(L);
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
    if (finish_sigint) P->finishint = 1;
    if (P->finishint) {                /* stop it instead */
      proc_stop(L, p);
      break;
    }
    r = proc_wait(L, p, lmp_now() + 0.1);
    if (r == 1) break;
    if (r == -2) P->finishint = 1;     /* lua.c's own handler saw it */
    if (!P->finishmsg && lmp_now() - start >= FINISH_QUIET) {
      P->finishmsg = 1;
      finish_say(L);
    }
  }
  if (installed) {
    if (P->finishint && old.sa_handler == SIG_DFL)
      lmp_getstate(L)->raiseint = 1;
    sigaction(SIGINT, &old, NULL);
  }
}

/*
** A running child's object is held by the procs table until reaped, so
** only lua_close (the main script ending) can finalize it while it runs:
** then non-daemon children are joined and daemons terminated.
*/
static void proc_finish(lua_State *L, Proc *p) {
  proc_poll(L, p);                     /* a reaped pid is no longer ours */
  if (p->pid > 0 && !p->reaped) {
    if (p->daemon) proc_stop(L, p);
    else {
      kill_daemons(L);
      finish_wait(L, p);
    }
  }
  proc_closefds(L, p);
}

/*
** metatable.__fileno: the result pipe's fd while it is open, or nothing.
** mp.wait(objects) polls it beside the child's pidfd: a child whose big
** result fills the pipe ends only once someone reads, which is_alive does.
*/
static int proc_fileno(lua_State *L) {
  Proc *p = checkproc(L, 1);
  if (p->owner != getpid() || p->fd < 0) return 0;
  lua_pushinteger(L, p->fd);
  return 1;
}

static int proc_gc(lua_State *L) {
  Proc *p = checkproc(L, 1);
  if (p->owner == getpid()) {
    proc_finish(L, p);
    p->sentinel = 0;
    proc_closefds(L, p);
  }
  /* else inherited: its fds were closed at the fork; only memory is ours */
  lmp_reader_free(&p->rd);
  return 0;
}

/* `local p <close> = mp.Process(f):start()`: terminated if it still runs,
   and joined, at scope exit (an inherited one is left alone) */
static int proc_close(lua_State *L) {
  Proc *p = checkproc(L, 1);
  if (p->owner != getpid() || p->pid == 0) return 0;
  proc_poll(L, p);
  if (!p->reaped) proc_stop(L, p);
  proc_collect(L, p);
  return 0;
}

/*
** A Process child ends as the main script does (Python's _exit_function):
** daemons it started are terminated, its other children joined.
*/
static void finish_children(lua_State *L) {
  kill_daemons(L);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {            /* proc_finish clears the entry */
    Proc *q = (Proc *)lua_touserdata(L, -1);
    if (q->owner == getpid()) proc_finish(L, q);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int mp_active_children(lua_State *L) {
  int i = 0;
  lua_newtable(L);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    Proc *q = (Proc *)lua_touserdata(L, -1);
    proc_check(L, q);                  /* reaps finished ones */
    if (q->owner == getpid() && !q->reaped) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, -5, ++i);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/* a new child knows no Process yet (at-fork function) */
static int procs_forked(lua_State *L) {
  procs *P = getprocs(L);
  memset(P, 0, sizeof *P);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_PROCS);
  return 0;
}

void lmp_process_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"start", proc_start},
    {"join", proc_join},
    {"get", proc_get},
    {"is_alive", proc_is_alive},
    {"terminate", proc_terminate},
    {"kill", proc_kill},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__fileno", proc_fileno},
    {"__index", proc_index},
    {"__newindex", proc_newindex},
    {"__tostring", proc_tostring},
    {"__gc", proc_gc},
    {"__close", proc_close},
    {NULL, NULL}
  };
  if (lmp_rawgetp(L, LUA_REGISTRYINDEX, &procs_key) != LUA_TUSERDATA) {
    procs *P = (procs *)lmp_newud(L, sizeof *P, 0);
    memset(P, 0, sizeof *P);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, &procs_key);
    lua_pushcfunction(L, procs_forked);
    lmp_atfork(L);
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LMP_PROCESS)) {
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__methods");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, proc_new);
  lua_setfield(L, -2, "Process");
  lua_pushcfunction(L, mp_active_children);
  lua_setfield(L, -2, "active_children");
}
