/*
** ch_mpi.c -- a worker rank's side of the MPI backend (part of lmp.mpi):
** the channel pool_worker.c's loop runs over, as over a forked worker's
** pipes.  Task frames come from rank 0 as MPI messages; each reply is sent
** and completed before the next task runs (with a rendezvous protocol the
** data moves only while the sender is inside MPI).  The rank waits as rank
** 0 does (tr_mpi.c): spin on MPI_Improbe, then sleep on its lifeline.
**
** A task cannot be killed from rank 0 (MPI_Abort would end the whole job),
** so a cancelled one (its timeout, or the pool's end) fails in Lua: while
** a task runs, a count hook looks for M_CANCEL every millisecond and then
** raises an error, and again at every instruction until the task ends, so
** a pcall in the task cannot swallow it.  A C call is not interrupted.
**
** Builds on tr_mpi.h (net_mpi.h).
*/
#include "tr_mpi.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECKGAP  1e-3    /* seconds between the hook's looks at MPI */
#define HOOKCOUNT 1000    /* VM instructions between the hook's calls */
#define ORPHANWAIT 0.1    /* after rank 0's lifeline closed, look this long
                             for what it sent before */

typedef struct chmpi {
  lmp_channel C;                /* first: the worker loop's view */
  mpi_net N;
  lua_State *L;                 /* the rank's main thread */
  int fd;                       /* lifeline, -1 none */
  mpi_bufs B;
  char *frame;                  /* the task frame handed out last */
  lua_State *T;                 /* the thread a task runs on (hooked) */
  uint32_t task;                /* the running task's id, 0 none */
  int cancelled;                /* it must fail */
  int dropping;                 /* the pool was terminated: drop tasks */
  int orphan;                   /* rank 0 went away */
  int slept;                    /* this rank slept before the task came */
  double lastrecv, checkat;
} chmpi;

static const char hookkey = 0;  /* registry[&hookkey]: the channel */

static void leave_orphan(chmpi *c) {
  fprintf(stderr, "lmp: mpi rank %d (%s): rank 0 went away; leaving\n",
          c->N.rank, c->N.hosts[c->N.rank]);
  c->N.X->child_exit(1);         /* MPI_Finalize would wait for rank 0 */
}

/* ---------------------------------------------------------------------- */
/* waiting for rank 0                                                     */
/* ---------------------------------------------------------------------- */
/*
** The lifeline closed: rank 0 ended or died.  What it sent before (an
** M_STOP) may be deliverable already, so look for it a little first.
*/
static int orphaned(chmpi *c, MPI_Message *m, MPI_Status *st) {
  double end = c->N.X->now() + ORPHANWAIT;
  c->N.X->close_fd(c->L, c->fd);
  c->fd = -1;
  while (c->N.X->now() < end) {
    struct timespec ts = { 0, 200000 };
    int flag = 0;
    MPI_Improbe(0, MPI_ANY_TAG, c->N.comm, &flag, m, st);
    if (flag) return 0;
    nanosleep(&ts, NULL);
  }
  c->orphan = 1;
  return -1;
}

/* sleeps on the lifeline up to `d` seconds: 1 rung, 0 not, -1 closed */
static int doze(chmpi *c, double d) {
  struct pollfd pf;
  int r;
  pf.fd = c->fd;
  pf.events = POLLIN;
  pf.revents = 0;
  r = c->N.X->poll(NULL, &pf, 1, c->N.X->now() + d);
  if (r <= 0) return 0;
  return lmpi_drain(c->fd) < 0 ? -1 : 1;
}

static void backoff(double *d) {
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = (long)(*d * 1e9);
  nanosleep(&ts, NULL);
  *d = *d * 2 > 1e-3 ? 1e-3 : *d * 2;
}

/*
** Until a message from rank 0 can be received: 0 (m, st set), or -1 if
** rank 0 is gone.  Spins, then sleeps; at least two probes after each
** sleep (ob1 matches a message that arrived meanwhile on the second).
*/
static int ch_wait(chmpi *c, MPI_Message *m, MPI_Status *st) {
  const lmp_capsule *X = c->N.X;
  double t = X->now(), spinend = t + c->N.spin, sockat = t + 1e-3;
  double bs = 1e-3, back = 20e-6;
  int probes = 0;
  c->slept = 0;
  for (;;) {
    int flag = 0, r;
    MPI_Improbe(0, MPI_ANY_TAG, c->N.comm, &flag, m, st);
    if (flag) {
      c->lastrecv = X->now();
      return 0;
    }
    probes++;
    t = X->now();
    if (c->fd >= 0 && t >= sockat) {
      if (lmpi_drain(c->fd) < 0) return orphaned(c, m, st);
      sockat = t + 1e-3;
    }
    if (t < spinend || probes < 2) continue;
    c->slept = 1;
    probes = 0;
    if (c->fd < 0) {
      backoff(&back);
      continue;
    }
    if ((r = doze(c, bs)) < 0) return orphaned(c, m, st);
    sockat = X->now() + 1e-3;
    if (r > 0) {                       /* rung: a message is (nearly) here */
      spinend = sockat + c->N.spin;
      bs = 1e-3;
    } else bs = bs * 2 > c->N.backstop ? c->N.backstop : bs * 2;
  }
}

/* ---------------------------------------------------------------------- */
/* sending                                                                */
/* ---------------------------------------------------------------------- */
/* completes a send: spin, then sleep a little at a time; -1 if rank 0 is
   gone meanwhile */
static int complete(chmpi *c, MPI_Request *rq) {
  double t0 = c->N.X->now(), back = 20e-6, sockat = t0 + 1e-3;
  for (;;) {
    int flag = 0;
    double t;
    MPI_Test(rq, &flag, MPI_STATUS_IGNORE);
    if (flag) return 0;
    t = c->N.X->now();
    if (c->fd >= 0 && t >= sockat) {
      if (lmpi_drain(c->fd) < 0) {
        c->orphan = 1;
        return -1;
      }
      sockat = t + 1e-3;
    }
    if (t - t0 > c->N.spin) backoff(&back);
  }
}

/*
** One message to rank 0, completed.  It rings rank 0 when rank 0 may be
** asleep: after a task that took spin/2 or more, or when this rank slept
** before the task came.  An eager message rings once complete (so rank 0
** finds it when it wakes), a big one at once (rank 0 must match it first).
*/
static int ch_post(chmpi *c, int tag, const char *p, size_t n) {
  MPI_Request rq;
  int ring = c->fd >= 0 && (c->N.X->now() - c->lastrecv >= c->N.spin / 2 ||
                            c->slept);
  MPI_Isend((void *)p, (int)n, MPI_BYTE, 0, tag, c->N.comm, &rq);
  if (ring && n > EAGER) {
    lmpi_ring(c->fd, RING_WAKE);
    ring = 0;
  }
  if (complete(c, &rq) != 0) return -1;
  if (ring) lmpi_ring(c->fd, RING_WAKE);
  return 0;
}

static int ch_send(lmp_channel *C, lmp_enc *E) {
  chmpi *c = (chmpi *)C;
  size_t n, off, max = c->N.maxmsg;
  const char *p = c->N.X->enc_flatten(E, &n);
  uint64_t l = n;
  if (n <= max) return ch_post(c, M_FRAME, p, n);
  if (ch_post(c, M_BIG, (const char *)&l, 8) != 0) return -1;
  for (off = 0; off < n; off += max)
    if (ch_post(c, M_PART, p + off, n - off < max ? n - off : max) != 0)
      return -1;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* receiving                                                              */
/* ---------------------------------------------------------------------- */
/* receives the matched message into a buffer of ours */
static char *ch_take(chmpi *c, MPI_Message *m, int cnt) {
  char *buf = (char *)lmpi_alloc(&c->B, (size_t)cnt);
  /* a big one moves only with rank 0 inside MPI: tell it to stay there */
  if (cnt > EAGER && c->fd >= 0) lmpi_ring(c->fd, RING_BIG);
  MPI_Mrecv(buf, cnt, MPI_BYTE, m, MPI_STATUS_IGNORE);
  return buf;
}

/* the M_PARTs of a big frame of `len` bytes (they follow its M_BIG) */
static char *ch_parts(chmpi *c, size_t len) {
  char *buf = (char *)lmpi_alloc(&c->B, len);
  size_t off = 0;
  while (off < len) {
    MPI_Message m;
    MPI_Status st;
    int cnt = 0;
    if (ch_wait(c, &m, &st) != 0) leave_orphan(c);
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    if (st.MPI_TAG != M_PART || off + (size_t)cnt > len) lmpi_oom();
    if (cnt > EAGER && c->fd >= 0) lmpi_ring(c->fd, RING_BIG);
    MPI_Mrecv(buf + off, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
    off += (size_t)cnt;
  }
  return buf;
}

/* a control message's 4-byte payload (0 if it has none); anything else
   rank 0 might send is taken and dropped */
static uint32_t ch_ctl(chmpi *c, MPI_Message *m, int cnt) {
  uint32_t v = 0;
  if (cnt <= 8) {
    char b[8];
    MPI_Mrecv(b, cnt, MPI_BYTE, m, MPI_STATUS_IGNORE);
    if (cnt >= 4) memcpy(&v, b, 4);
  } else lmpi_free(&c->B, ch_take(c, m, cnt));
  return v;
}

static int ch_recv(lmp_channel *C, const char **p, size_t *n) {
  chmpi *c = (chmpi *)C;
  lmpi_free(&c->B, c->frame);
  c->frame = NULL;
  for (;;) {
    MPI_Message m;
    MPI_Status st;
    int cnt = 0;
    uint64_t len = 0;
    if (ch_wait(c, &m, &st) != 0) return -1;
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    switch (st.MPI_TAG) {
    case M_FRAME: c->frame = ch_take(c, &m, cnt); *n = (size_t)cnt; break;
    case M_BIG:
      MPI_Mrecv(&len, 8, MPI_BYTE, &m, MPI_STATUS_IGNORE);   /* 8: rank 0 */
      c->frame = ch_parts(c, (size_t)len);
      *n = (size_t)len;
      break;
    case M_STOP:                       /* 1: a rank died (tr_mpi.c) */
      c->N.nofinal = ch_ctl(c, &m, cnt) == 1;
      return 0;
    case M_CANCEL:                     /* a task that ended already, or */
      if (ch_ctl(c, &m, cnt) == 0) c->dropping = 1;     /* the pool's end */
      continue;
    default: ch_ctl(c, &m, cnt); continue;
    }
    if (!c->dropping) break;
    lmpi_free(&c->B, c->frame);        /* terminated: it won't run */
    c->frame = NULL;
  }
  *p = c->frame;
  return 1;
}

/* ---------------------------------------------------------------------- */
/* cancelling a running task                                              */
/* ---------------------------------------------------------------------- */
static void look(chmpi *c) {
  for (;;) {
    MPI_Message m;
    MPI_Status st;
    int flag = 0, cnt = 0;
    uint32_t id;
    MPI_Improbe(0, M_CANCEL, c->N.comm, &flag, &m, &st);
    if (!flag) break;
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    id = ch_ctl(c, &m, cnt);
    if (id == 0) c->dropping = 1;
    if (id == 0 || id == c->task) c->cancelled = 1;
  }
  if (c->fd >= 0 && lmpi_drain(c->fd) < 0) leave_orphan(c);
}

static void ch_hook(lua_State *L, lua_Debug *ar) {
  chmpi *c;
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &hookkey);
  c = (chmpi *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL || c->task == 0) return;
  if (!c->cancelled) {
    double t = c->N.X->now();
    if (t < c->checkat) return;
    c->checkat = t + CHECKGAP;
    if (getpid() != c->N.owner) {      /* a fork of the task: no MPI here */
      lua_sethook(L, NULL, 0, 0);
      return;
    }
    look(c);
    /* from now on, at every instruction: a pcall that catches the error
       returns into code that raises it again */
    if (c->cancelled) lua_sethook(L, ch_hook, LUA_MASKCOUNT, 1);
  }
  if (c->cancelled) luaL_error(L, "lmp: task cancelled by rank 0");
}

static void ch_running(lmp_channel *C, lua_State *T, uint32_t task) {
  chmpi *c = (chmpi *)C;
  if (T != NULL) {
    c->T = T;
    c->task = task;
    c->cancelled = 0;
    c->checkat = c->N.X->now() + CHECKGAP;
    lua_sethook(T, ch_hook, LUA_MASKCOUNT, HOOKCOUNT);
  } else {
    if (c->T != NULL) lua_sethook(c->T, NULL, 0, 0);
    c->task = 0;
  }
}

/*
** The worker loop ends: leave MPI, then the process.  Status 0, also when
** its initializer failed (3): rank 0 reports that, and a non-zero status
** would make mpirun end the job before it could.
*/
static void ch_leave(lmp_channel *C, int code) {
  chmpi *c = (chmpi *)C;
  if (c->orphan) leave_orphan(c);
  lmpi_finalize(&c->N);
  c->N.X->child_exit(code == 3 ? 0 : code);
}

/* ---------------------------------------------------------------------- */
/* starting                                                               */
/* ---------------------------------------------------------------------- */
/* hello, then rank 0's verdict; returns only if this rank may serve.  A
   refused rank says why and exits 0, as ch_leave does: rank 0 raises the
   error, and a non-zero status here would make mpirun kill rank 0 before
   it could (the job's status is then rank 0's) */
static void ch_hello(lua_State *L, chmpi *c) {
  char hello[8 + SIGMAX];
  int32_t h[2];
  size_t n;
  h[0] = c->N.rank;
  h[1] = (int32_t)getpid();
  memcpy(hello, h, 8);
  n = 8 + lmpi_buildsig(L, c->N.X, hello + 8, SIGMAX);
  if (ch_post(c, M_HELLO, hello, n) != 0) leave_orphan(c);
  for (;;) {
    MPI_Message m;
    MPI_Status st;
    int cnt = 0;
    if (ch_wait(c, &m, &st) != 0) leave_orphan(c);
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    ch_ctl(c, &m, cnt);
    if (st.MPI_TAG == M_OK) return;
    if (st.MPI_TAG == M_REFUSE) {
      fprintf(stderr, "lmp: mpi rank %d (%s): rank 0 refused this rank: its "
              "Lua or lmp build differs from rank 0's\n", c->N.rank,
              c->N.hosts[c->N.rank]);
      lmpi_finalize(&c->N);
      c->N.X->child_exit(0);
    }
    if (st.MPI_TAG == M_STOP) ch_leave(&c->C, 0);   /* the pool failed */
  }
}

lmp_channel *lmp_chmpi_new(lua_State *L, const mpi_net *N, int fd) {
  chmpi *c = (chmpi *)lmp_newud(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->C.recv = ch_recv;
  c->C.send = ch_send;
  c->C.running = ch_running;
  c->C.leave = ch_leave;
  c->N = *N;
  c->L = L;
  c->fd = fd;
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &hookkey);
  ch_hello(L, c);
  return &c->C;
}
