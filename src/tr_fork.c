/*
** tr_fork.c -- workers as forked children.  One socket (tasks, parent ->
** worker) and one pipe (replies, worker -> parent) each; the parent writes
** without blocking (what the socket does not take waits in `out`) and
** multiplexes every worker's fds in one poll.
*/
#include "tr_fork.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/*
** After each reply a worker polls its socket SPIN seconds before it
** blocks, and the parent polls for replies as long before it sleeps: a
** caller applying tasks back to back then never waits for a wake-up.
*/
#define SPIN 50e-6
#define KILLWAIT 0.25    /* how long a collector waits for killed workers */

typedef struct fworker {
  pid_t pid;            /* 0: empty slot */
  int tfd, rfd;
  lmp_buf out;          /* queued bytes the socket has not taken */
  size_t outpos;
  lmp_reader rd;
  int eof;              /* its pipe ended: it is gone */
  int pf;               /* its entry in the poll array, -1 none */
} fworker;

typedef struct trfork {
  lmp_transport T;      /* first: the scheduler's view */
  pid_t owner;
  int epfd;             /* fileno(): an epoll set of the reply pipes, -1 */
  fworker *w;
  struct pollfd *pf;
  unsigned long seq;    /* worker names */
  long maxtasks;
  uint64_t identmark;
} trfork;

static trfork *F_(lmp_transport *T) { return (trfork *)T; }

/* ---------------------------------------------------------------------- */
/* the worker's side                                                      */
/* ---------------------------------------------------------------------- */
typedef struct fchannel {
  lmp_channel C;
  int tfd, rfd;
  lmp_reader rd;
} fchannel;

/*
** Waits a little for the next task before the worker blocks in read: a
** caller that applies tasks one after another sends it within
** microseconds, and a worker that is still awake then saves a wake-up.
*/
static void spin(int fd) {
  struct pollfd pf;
  double end = lmp_now() + SPIN;
  pf.fd = fd;
  pf.events = POLLIN;
  do {
    pf.revents = 0;
    if (poll(&pf, 1, 0) != 0) return;  /* data, hangup, or EINTR */
  } while (lmp_now() < end);
}

static int ch_recv(lmp_channel *C, const char **p, size_t *n) {
  fchannel *c = (fchannel *)C;
  while (!lmp_reader_frame(&c->rd, p, n)) {
    int r;
    spin(c->tfd);
    r = lmp_reader_fill(&c->rd, c->tfd);
    if (r <= 0) return r;              /* 0: the pool closed our socket */
  }
  return 1;
}

static int ch_send(lmp_channel *C, lmp_enc *E) {
  return lmp_enc_writeframe(E, ((fchannel *)C)->rfd);
}

/* [transport, tfd, rfd]: the child's life; never returns */
static int child_main(lua_State *L) {
  trfork *F = (trfork *)lua_touserdata(L, 1);
  fchannel ch;
  lmp_workercfg cfg;
  memset(&ch, 0, sizeof ch);
  ch.C.recv = ch_recv;
  ch.C.send = ch_send;
  ch.tfd = (int)lua_tointeger(L, 2);
  ch.rfd = (int)lua_tointeger(L, 3);
  lmp_track_fd(L, ch.tfd);             /* grandchildren must not hold them */
  lmp_track_fd(L, ch.rfd);
  lmp_workercfg_push(L, 1, &cfg);
  cfg.maxtasks = F->maxtasks;
  cfg.identmark = F->identmark;
  lmp_worker_run(L, &ch.C, &cfg);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* the parent's side                                                      */
/* ---------------------------------------------------------------------- */
static int failed(lmp_transport *T, const char *what, int e) {
  snprintf(T->err, sizeof T->err, "%s: %s", what, strerror(e));
  return -1;
}

static void closefds(lua_State *L, fworker *w) {
  lmp_close_fd(L, w->tfd);
  lmp_close_fd(L, w->rfd);
  w->tfd = w->rfd = -1;
  lmp_buf_free(&w->out);
  w->outpos = 0;
  lmp_reader_free(&w->rd);
}

static void epoll_watch(int epfd, int fd) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  (void)epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int tf_start(lua_State *L, lmp_transport *T, int i) {
  trfork *F = F_(T);
  fworker *w = &F->w[i];
  int sv[2], rp[2], e;
  char name[48];
  pid_t pid;
  if (lmp_socketpair(sv) != 0) return failed(T, "socketpair", errno);
  if (lmp_pipe(rp) != 0) {
    e = errno;
    close(sv[0]);
    close(sv[1]);
    return failed(T, "pipe", e);
  }
  /* the parent's ends are tracked before the fork, so the new worker
     closes them (and every other worker's) straight away */
  lmp_track_fd(L, sv[0]);
  lmp_track_fd(L, rp[0]);
  snprintf(name, sizeof name, "PoolWorker-%lu", ++F->seq);
  pid = lmp_fork(L, name, LMP_FORK_PDEATH | LMP_FORK_NOINT);
  if (pid < 0) {
    e = errno;
    lmp_close_fd(L, sv[0]);
    lmp_close_fd(L, rp[0]);
    close(sv[1]);
    close(rp[1]);
    return failed(T, "fork", e);
  }
  if (pid == 0) {
    /* protected, so no error can unwind into the parent's script */
    lua_pushcfunction(L, child_main);
    lmp_rawgetp(L, LUA_REGISTRYINDEX, F);
    lua_pushinteger(L, sv[1]);
    lua_pushinteger(L, rp[1]);
    lua_pcall(L, 3, 0, 0);
    lmp_child_exit(1);
  }
  close(sv[1]);
  close(rp[1]);
  memset(w, 0, sizeof *w);
  w->pid = pid;
  w->tfd = sv[0];
  w->rfd = rp[0];
  w->pf = -1;
  lmp_nonblock(w->tfd);
  lmp_nonblock(w->rfd);
  lmp_child_add(L, pid);
  if (F->epfd >= 0) epoll_watch(F->epfd, w->rfd);
  T->err[0] = '\0';
  return 0;
}

/* writes what the socket takes now; -1 if the worker is gone */
static int flush(fworker *w) {
  while (w->outpos < w->out.n) {
    ssize_t r = send(w->tfd, w->out.p + w->outpos, w->out.n - w->outpos,
                     MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;                       /* EPIPE: its pipe tells us how */
    }
    w->outpos += (size_t)r;
  }
  w->out.n = w->outpos = 0;
  if (w->out.cap > (4u << 20)) lmp_buf_free(&w->out);
  return 0;
}

static void tf_send(lua_State *L, lmp_transport *T, int i, const char *p,
                    size_t n) {
  fworker *w = &F_(T)->w[i];
  if (lmp_buf_grow(&w->out, n + LMP_FRAME_HDR) != 0)
    lmp_error(L, "lmp: not enough memory");
  lmp_frame_header(w->out.p + w->out.n, (uint64_t)n);
  memcpy(w->out.p + w->out.n + LMP_FRAME_HDR, p, n);
  w->out.n += n + LMP_FRAME_HDR;
}

static int tf_backlog(lmp_transport *T, int i) {
  fworker *w;
  if (F_(T)->w == NULL) return 0;
  w = &F_(T)->w[i];
  return w->out.n > w->outpos;
}

/*
** One read of what the pipe has (room for a whole frame when its header
** is in): the scheduler takes the frames before the next read, so the
** buffer holds at most about one frame more than it consumes.  EOF or an
** error: the worker is gone.
*/
static void fill(fworker *w) {
  int r = lmp_reader_fill(&w->rd, w->rfd);
  if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) return;
  w->eof = 1;
}

/* the poll array: each live worker's pipe, and its socket if it has a
   backlog; returns how many entries */
static unsigned pollset(trfork *F) {
  unsigned nf = 0;
  int i;
  for (i = 0; i < F->T.n; i++) {
    fworker *w = &F->w[i];
    w->pf = -1;
    if (w->pid <= 0 || w->eof) continue;
    w->pf = (int)nf;
    F->pf[nf].fd = w->rfd;
    F->pf[nf].events = POLLIN;
    F->pf[nf].revents = 0;
    nf++;
    if (w->out.n > w->outpos) {
      F->pf[nf].fd = w->tfd;
      F->pf[nf].events = POLLOUT;
      F->pf[nf].revents = 0;
      nf++;
    }
  }
  return nf;
}

/* a worker gone before the poll (EOF seen, or its slot emptied) counts as
   something to look at */
static int pending_loss(trfork *F) {
  int i;
  for (i = 0; i < F->T.n; i++)
    if (F->w[i].pid > 0 && F->w[i].eof) return 1;
  return 0;
}

static void tf_flush(lmp_transport *T) {
  trfork *F = F_(T);
  int i;
  for (i = 0; F->w != NULL && i < T->n; i++) {
    fworker *w = &F->w[i];
    if (w->pid > 0 && !w->eof && w->out.n > w->outpos) flush(w);
  }
}

static int tf_wait(lua_State *L, lmp_transport *T, const lmp_hook *h,
                   double deadline) {
  trfork *F = F_(T);
  unsigned nf;
  int i, r = 0;
  (void)L;
  tf_flush(T);                         /* first, whatever can go now */
  if (pending_loss(F)) return 1;
  nf = pollset(F);
  if (nf == 0) return 1;               /* nobody to wait for: look now */
  /*
  ** A reply to a short task comes back within microseconds: polling for a
  ** little while first saves the far slower sleep and wake-up (not when
  ** the caller would not wait that long: ready(), a step).
  */
  if (deadline < 0 || deadline > lmp_now() + SPIN) {
    double spinend = lmp_now() + SPIN;
    do r = lmp_poll(h, F->pf, nf, 0);
    while (r == 0 && lmp_now() < spinend);
  }
  if (r == 0) r = lmp_poll(h, F->pf, nf, deadline);
  if (r <= 0) return r;
  for (i = 0; i < T->n; i++) {
    fworker *w = &F->w[i];
    int p = w->pf;
    if (p < 0) continue;
    if (w->out.n > w->outpos && F->pf[p + 1].revents) flush(w);
    if (F->pf[p].revents) fill(w);
  }
  return r;
}

static int tf_alive(lmp_transport *T, int i) {
  return F_(T)->w != NULL && F_(T)->w[i].pid > 0;
}

static int tf_recv(lmp_transport *T, int i, const char **p, size_t *n) {
  fworker *w;
  if (!tf_alive(T, i)) return 0;
  w = &F_(T)->w[i];
  return lmp_reader_frame(&w->rd, p, n);
}

static int tf_gone(lmp_transport *T, int i) {
  return tf_alive(T, i) && F_(T)->w[i].eof;
}

/* reaps a worker whose pipe ended: 200 ms to finish dying, then SIGKILL */
static int reap_dead(lua_State *L, fworker *w) {
  int status = 0, k;
  for (k = 0; k < 200; k++) {
    pid_t r = lmp_reap(L, w->pid, &status, 1);
    if (r == w->pid) return status;
    if (r < 0) return 0;
    lmp_sleep_ms(1);
  }
  kill(w->pid, SIGKILL);
  if (lmp_reap(L, w->pid, &status, 0) != w->pid) status = 0;
  return status;
}

static void tf_lost(lua_State *L, lmp_transport *T, int i) {
  fworker *w = &F_(T)->w[i];
  int status = reap_dead(L, w);
  pid_t pid = w->pid;
  lmp_child_remove(L, pid);
  closefds(L, w);
  w->pid = 0;
  w->eof = 0;
  lmp_pushhow(L, status);
  lua_pushfstring(L, "pool worker %d %s", (int)pid, lua_tostring(L, -1));
  lua_remove(L, -2);
}

/*
** Kills the workers (SIGKILL) and reaps them, or (LMP_STOP_JOIN) closes
** their sockets, so each exits when its task queue is empty, and reaps
** them.  LMP_STOP_BRIEF (a collector, which must not block on anything
** alive) waits for the killed workers' deaths only up to KILLWAIT seconds
** in all -- a killed process takes about a millisecond -- and leaves the
** stragglers to lmp's zombie list.
*/
static void tf_stopall(lua_State *L, lmp_transport *T, int how) {
  trfork *F = F_(T);
  int i, left = 0, st;
  double until = lmp_now() + KILLWAIT;
  if (F->w == NULL) return;            /* collected already (tf_gc) */
  if (how == LMP_STOP_JOIN) {
    for (i = 0; i < T->n; i++) {
      fworker *w = &F->w[i];
      if (w->pid <= 0) continue;
      lmp_close_fd(L, w->tfd);
      w->tfd = -1;
    }
    for (i = 0; i < T->n; i++) {
      fworker *w = &F->w[i];
      if (w->pid <= 0) continue;
      reap_dead(L, w);
      lmp_child_remove(L, w->pid);
      closefds(L, w);
      w->pid = 0;
    }
    return;
  }
  for (i = 0; i < T->n; i++) {
    fworker *w = &F->w[i];
    if (w->pid <= 0) continue;
    closefds(L, w);
    lmp_child_remove(L, w->pid);
    if (lmp_parked(L, w->pid, &st)) w->pid = 0;    /* mp.wait reaped it */
    else {
      kill(w->pid, SIGKILL);
      left++;
    }
  }
  while (left > 0) {
    for (i = 0; i < T->n; i++) {
      fworker *w = &F->w[i];
      if (w->pid > 0 && lmp_reap(L, w->pid, &st, how != LMP_STOP_KILL) != 0) {
        w->pid = 0;                    /* reaped (or not ours any more) */
        left--;
      }
    }
    if (left == 0 || (how == LMP_STOP_BRIEF && lmp_now() >= until)) break;
    lmp_sleep_ms(1);
  }
  for (i = 0; i < T->n; i++) {
    if (F->w[i].pid > 0) lmp_zombie_add(lmp_getstate(L), F->w[i].pid);
    F->w[i].pid = 0;
  }
}

static void tf_cancel(lmp_transport *T, int i, uint32_t task) {
  fworker *w = &F_(T)->w[i];
  (void)task;                          /* it runs nothing else */
  if (w->pid > 0 && !w->eof) kill(w->pid, SIGKILL);
}

static lua_Integer tf_ident(lmp_transport *T, int i) {
  return F_(T)->w != NULL ? (lua_Integer)F_(T)->w[i].pid : 0;
}

/*
** One fd for event loops: an epoll set of the reply pipes (a pipe closed
** leaves the set by itself), readable when a worker sent something or is
** gone.  Made on first use; workers started later join it.
*/
static int tf_fileno(lua_State *L, lmp_transport *T) {
  trfork *F = F_(T);
  int i;
  if (F->epfd >= 0 || F->w == NULL) return F->epfd;
  F->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (F->epfd < 0) lmp_syserror(L, "epoll_create1");
  lmp_track_fd(L, F->epfd);
  for (i = 0; i < T->n; i++)
    if (F->w[i].pid > 0) epoll_watch(F->epfd, F->w[i].rfd);
  return F->epfd;
}

static void freemem(trfork *F) {
  int i;
  for (i = 0; F->w != NULL && i < F->T.n; i++) {
    lmp_buf_free(&F->w[i].out);
    lmp_reader_free(&F->w[i].rd);
  }
  free(F->w);
  free(F->pf);
  F->w = NULL;
  F->pf = NULL;
}

/* the box's anchor goes too: the collector may have it now */
static void tf_free(lua_State *L, lmp_transport *T) {
  lmp_close_fd(L, F_(T)->epfd);
  F_(T)->epfd = -1;
  freemem(F_(T));
  lua_pushnil(L);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, T);
}

static const lmp_tr_ops fork_ops = {
  tf_start, tf_send, tf_backlog, tf_flush, tf_wait, tf_recv, tf_gone,
  tf_lost, tf_stopall, tf_cancel, tf_ident, tf_fileno, tf_alive, NULL,
  tf_free
};

/*
** The pool stops its workers before it lets go of its transport, but when
** both are collected at once (a dropped pool, the end of the script) this
** may run first: then the workers are stopped here, as the pool would.
*/
static int tf_gc(lua_State *L) {
  trfork *F = (trfork *)lua_touserdata(L, 1);
  if (F->owner == getpid() && F->w != NULL)
    tf_stopall(L, &F->T, LMP_STOP_BRIEF);
  freemem(F);
  return 0;
}

lmp_transport *lmp_trfork_new(lua_State *L, int n, const lmp_workercfg *cfg) {
  trfork *F;
  int i;
  F = (trfork *)lmp_newud(L, sizeof *F, 1);
  memset(F, 0, sizeof *F);
  F->T.ops = &fork_ops;
  F->owner = getpid();
  F->epfd = -1;
  F->maxtasks = cfg->maxtasks;
  F->identmark = cfg->identmark;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, tf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, cfg->init);
  lua_setfield(L, -2, "initializer");
  lua_pushvalue(L, cfg->initargs);
  lua_setfield(L, -2, "initargs");
  lmp_setuv(L, -2, 1);
  F->w = (fworker *)calloc((size_t)n, sizeof *F->w);
  F->pf = (struct pollfd *)calloc((size_t)n * 2, sizeof *F->pf);
  if (F->w == NULL || F->pf == NULL) lmp_error(L, "lmp: not enough memory");
  F->T.n = n;
  for (i = 0; i < n; i++) F->w[i].tfd = F->w[i].rfd = F->w[i].pf = -1;
  /* a new worker finds the box (its initializer) here, until tf_free */
  lua_pushvalue(L, -1);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, F);
  return &F->T;
}
