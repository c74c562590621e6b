/*
** tr_mpi.c -- rank 0's side of the MPI backend (part of lmp.mpi): the
** Pool's workers are ranks 1..n-1, driven through lmp_tr_ops like forked
** ones.  Each frame is one MPI message (or an M_BIG header and M_PARTs
** when it passes maxmsg), sent with MPI_Isend from a buffer the transport
** owns until MPI_Testsome says it went.  Receives match any source with
** MPI_Improbe and take the message with MPI_Mrecv, or MPI_Imrecv when it
** is big, so that rank 0 never blocks on one worker's transfer; a worker's
** frames are handed out whole and in order.
**
** Waiting (src/DESIGN.md, "MPI transport"): spin on MPI_Improbe for
** `spin` seconds, then sleep in poll() on the lifelines, which a worker
** rings when it predicts rank 0 may be asleep; rank 0 likewise rings a
** worker that may be asleep when it sends it work.  Never sleep while a
** large transfer is in progress: without CMA (and over TCP) its data moves
** only while the sender is inside MPI.  A lifeline that closes means its
** worker died: the worker is lost (no MPI call would ever say so).
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

#define BIGRECV   (64 * 1024)   /* from here on, receive without blocking */
#define LOWWATER  (1 << 20)     /* owed this many bytes: give it no more */
#define HELLOWAIT 60.0          /* seconds for a rank to say hello */
#define STOPWAIT  5.0           /* for the stops to go out */
#define SOCKGAP   1e-3          /* lifelines are checked this often */

enum { MW_NEW, MW_RUN, MW_REFUSED, MW_LOST };

typedef struct inframe {        /* a frame being received, or ready */
  char *p;
  size_t n;
  int left;                     /* messages of it still to complete */
} inframe;

typedef struct mworker {
  int state;                    /* MW_* */
  int dead;                     /* its lifeline closed */
  int hello;                    /* it said hello */
  pid_t pid;
  char desc[HOSTMAX + 32];      /* "mpi rank 2 (node17)" */
  char where[HOSTMAX + 32];     /* "mpi rank 2 on host node17" */
  char sig[SIGMAX];
  size_t siglen;
  inframe *in;                  /* a ring of frames, oldest at inbase */
  size_t inbase, incount, incap;
  char *cur;                    /* the frame recv handed out last */
  int bigleft;                  /* M_PARTs of a big frame still to come */
  size_t bigoff;
  size_t pending;               /* bytes of sends not complete */
  int nbig;                     /* sends above EAGER not complete */
  int taking;                   /* it rang RING_BIG: it is receiving one */
  int fd;                       /* lifeline, -1 none */
  double lastrecv;
  long outstanding;             /* frames sent minus frames back */
  int stale;                    /* its last frame may have waited */
} mworker;

typedef struct blk {            /* a big frame, shared by its parts */
  char *buf;
  int refs;
} blk;

typedef struct outreq {
  int w;
  size_t len;
  char *own;                    /* freed when it completes */
  blk *b;
} outreq;

typedef struct pendrecv {
  int w;
  size_t slot;                  /* its frame's sequence number */
} pendrecv;

typedef struct trmpi {
  lmp_transport T;              /* first: the scheduler's view */
  mpi_net N;
  pid_t owner;
  int stopped;
  mworker *w;
  outreq *out;
  MPI_Request *orq;
  int nout, capout;
  pendrecv *pend;
  MPI_Request *prq;
  int npend, cappend;
  int *idx;
  int capidx;
  struct pollfd *pf;
  char sig[SIGMAX];
  size_t siglen;
  mpi_bufs B;
  int poke;                     /* a hello or a loss: the caller looks */
  int empties;                  /* empty probe passes since the wait began
                                   or the last sleep (ob1 matches a message
                                   that arrived meanwhile on the 2nd probe) */
} trmpi;

/*
** The open transport, for a rank 0 that leaves with os.exit() without
** closing its Lua state: an exit handler then stops the workers, or they
** would wait in MPI_Finalize for ever.  It names its process (owner).
*/
static trmpi *live;

static trmpi *M_(lmp_transport *T) { return (trmpi *)T; }

static void *grow(void *p, int *cap, int need, size_t each) {
  if (need <= *cap) return p;
  while (*cap < need) *cap = *cap ? 2 * *cap : 64;
  p = realloc(p, (size_t)*cap * each);
  if (p == NULL) lmpi_oom();
  return p;
}

/* room for one more send (out and orq grow together) */
static void room_out(trmpi *M) {
  int cap = M->capout;
  if (M->nout < cap) return;
  M->out = (outreq *)grow(M->out, &cap, M->nout + 1, sizeof *M->out);
  cap = M->capout;
  M->orq = (MPI_Request *)grow(M->orq, &cap, M->nout + 1, sizeof *M->orq);
  M->capout = cap;
}

static void room_pend(trmpi *M) {
  int cap = M->cappend;
  if (M->npend < cap) return;
  M->pend = (pendrecv *)grow(M->pend, &cap, M->npend + 1, sizeof *M->pend);
  cap = M->cappend;
  M->prq = (MPI_Request *)grow(M->prq, &cap, M->npend + 1, sizeof *M->prq);
  M->cappend = cap;
}

/* ====================================================================== */
/* sending                                                                */
/* ====================================================================== */
static void add_send(trmpi *M, int w, char *buf, size_t len, int tag,
                     blk *b, char *own) {
  outreq *o;
  room_out(M);
  o = &M->out[M->nout];
  o->w = w;
  o->len = len;
  o->own = own;
  o->b = b;
  MPI_Isend(buf, (int)len, MPI_BYTE, w + 1, tag, M->N.comm, &M->orq[M->nout]);
  M->nout++;
  M->w[w].pending += len;
  if (len > EAGER) M->w[w].nbig++;
}

/* a frame the transport owns: one message, or a header and parts */
static void post_frame(trmpi *M, int w, char *frame, size_t len) {
  size_t off, max = M->N.maxmsg;
  uint64_t l = len;
  char *hdr;
  blk *b;
  if (len <= max) {
    add_send(M, w, frame, len, M_FRAME, NULL, frame);
    return;
  }
  b = (blk *)malloc(sizeof *b);
  if (b == NULL) lmpi_oom();
  b->buf = frame;
  b->refs = (int)((len + max - 1) / max);
  hdr = (char *)lmpi_alloc(&M->B, 8);
  memcpy(hdr, &l, 8);
  add_send(M, w, hdr, 8, M_BIG, NULL, hdr);
  for (off = 0; off < len; off += max)
    add_send(M, w, frame + off, len - off < max ? len - off : max, M_PART, b,
             NULL);
}

/* a short control message (its payload copied) */
static void post_ctl(trmpi *M, int w, int tag, const void *p, size_t n) {
  char *buf = (char *)lmpi_alloc(&M->B, n);
  if (n > 0) memcpy(buf, p, n);
  add_send(M, w, buf, n, tag, NULL, buf);
  if (M->w[w].fd >= 0) lmpi_ring(M->w[w].fd, RING_WAKE);
}

static void send_done(trmpi *M, outreq *o) {
  mworker *W = &M->w[o->w];
  W->pending -= o->len;
  if (o->len > EAGER && --W->nbig == 0) W->taking = 0;
  lmpi_free(&M->B, o->own);
  if (o->b != NULL && --o->b->refs == 0) {
    lmpi_free(&M->B, o->b->buf);
    free(o->b);
  }
}

static void complete_sends(trmpi *M) {
  int n = 0, k;
  if (M->nout == 0) return;
  M->idx = (int *)grow(M->idx, &M->capidx, M->nout, sizeof *M->idx);
  MPI_Testsome(M->nout, M->orq, &n, M->idx, MPI_STATUSES_IGNORE);
  /* indices ascend: fill the holes from the end, highest first */
  for (k = n - 1; k >= 0; k--) {
    int i = M->idx[k];
    send_done(M, &M->out[i]);
    M->nout--;
    M->out[i] = M->out[M->nout];
    M->orq[i] = M->orq[M->nout];
  }
}

/*
** Forgets a lost worker's transfers: sends to a dead rank never complete
** (Open MPI 4.1 reports nothing), so their requests and buffers are dropped
** unfinished and leaked on purpose.  MPI may still use them, and
** MPI_Request_free made MPI_Finalize hang (research/mpi/NOTES.md 3).
*/
static void forget(trmpi *M, int w) {
  mworker *W = &M->w[w];
  size_t k;
  int i;
  for (i = M->nout - 1; i >= 0; i--) {
    if (M->out[i].w != w) continue;
    M->nout--;
    M->out[i] = M->out[M->nout];
    M->orq[i] = M->orq[M->nout];
  }
  for (i = M->npend - 1; i >= 0; i--) {
    if (M->pend[i].w != w) continue;
    M->npend--;
    M->pend[i] = M->pend[M->npend];
    M->prq[i] = M->prq[M->npend];
  }
  W->pending = 0;
  W->nbig = 0;
  /* replies it completed before it died still count (the scheduler reads
     them before it learns of the loss); the frames after the first
     unfinished one leak with their requests */
  for (k = 0; k < W->incount && W->in[(W->inbase + k) % W->incap].left == 0; k++) {}
  W->incount = k;
  W->bigleft = 0;
}

/* ====================================================================== */
/* receiving                                                              */
/* ====================================================================== */
static inframe *in_at(mworker *W, size_t seq) {
  return &W->in[seq % W->incap];
}

static inframe *in_push(mworker *W) {
  if (W->incount == W->incap) {        /* grow the ring, keep the order */
    size_t nc = W->incap ? W->incap * 2 : 16, k;
    inframe *ni = (inframe *)malloc(nc * sizeof *ni);
    if (ni == NULL) lmpi_oom();
    for (k = 0; k < W->incount; k++) ni[(W->inbase + k) % nc] = *in_at(W, W->inbase + k);
    free(W->in);
    W->in = ni;
    W->incap = nc;
  }
  W->incount++;
  return in_at(W, W->inbase + W->incount - 1);
}

static void drop(MPI_Message *m, int cnt) {
  char *x = (char *)malloc(cnt > 0 ? (size_t)cnt : 1);
  if (x == NULL) lmpi_oom();
  MPI_Mrecv(x, cnt, MPI_BYTE, m, MPI_STATUS_IGNORE);
  free(x);
}

/* HELLO: rank and pid (2 x int32), then the build signature */
static void take_hello(trmpi *M, mworker *W, MPI_Message *m, int cnt) {
  char buf[8 + SIGMAX];
  int32_t h[2];
  if (cnt < 8 || cnt > (int)sizeof buf) {
    drop(m, cnt);
    return;
  }
  MPI_Mrecv(buf, cnt, MPI_BYTE, m, MPI_STATUS_IGNORE);
  memcpy(h, buf, 8);
  W->pid = (pid_t)h[1];
  W->siglen = (size_t)cnt - 8;
  memcpy(W->sig, buf + 8, W->siglen);
  W->hello = 1;
  M->poke = 1;
}

/* a frame, or a part of a big one, into its slot of the inbox */
static void take_data(trmpi *M, int w, MPI_Message *m, int cnt, int tag) {
  mworker *W = &M->w[w];
  inframe *f;
  size_t seq;
  char *dst;
  if (tag == M_PART) {
    if (W->bigleft <= 0 || W->incount == 0) {
      drop(m, cnt);
      return;
    }
    seq = W->inbase + W->incount - 1;
    f = in_at(W, seq);
    if (W->bigoff + (size_t)cnt > f->n) lmpi_oom();  /* not our peer */
    dst = f->p + W->bigoff;
    W->bigoff += (size_t)cnt;
    W->bigleft--;
  } else {
    f = in_push(W);
    seq = W->inbase + W->incount - 1;
    f->p = dst = (char *)lmpi_alloc(&M->B, (size_t)cnt);
    f->n = (size_t)cnt;
    f->left = 1;
  }
  if (cnt < BIGRECV) {
    MPI_Mrecv(dst, cnt, MPI_BYTE, m, MPI_STATUS_IGNORE);
    f->left--;
    return;
  }
  room_pend(M);
  M->pend[M->npend].w = w;
  M->pend[M->npend].slot = seq;
  MPI_Imrecv(dst, cnt, MPI_BYTE, m, &M->prq[M->npend]);
  M->npend++;
}

/* the 8-byte length of a frame that comes in parts */
static void take_big(trmpi *M, mworker *W, MPI_Message *m, int cnt) {
  uint64_t len = 0;
  inframe *f;
  if (cnt != 8) {
    drop(m, cnt);
    return;
  }
  MPI_Mrecv(&len, 8, MPI_BYTE, m, MPI_STATUS_IGNORE);
  f = in_push(W);
  f->p = (char *)lmpi_alloc(&M->B, (size_t)len);
  f->n = (size_t)len;
  f->left = (int)((len + M->N.maxmsg - 1) / M->N.maxmsg);
  W->bigleft = f->left;
  W->bigoff = 0;
}

static void take(trmpi *M, MPI_Message *m, MPI_Status *st) {
  int cnt = 0, w = st->MPI_SOURCE - 1;
  mworker *W;
  MPI_Get_count(st, MPI_BYTE, &cnt);
  if (w < 0 || w >= M->T.n || M->w[w].state >= MW_REFUSED) {
    drop(m, cnt);                      /* not a worker of ours (any more) */
    return;
  }
  W = &M->w[w];
  W->lastrecv = M->N.X->now();
  W->stale = M->empties < 2;
  switch (st->MPI_TAG) {
  case M_HELLO: take_hello(M, W, m, cnt); break;
  case M_BIG:
    if (W->outstanding > 0) W->outstanding--;
    take_big(M, W, m, cnt);
    break;
  case M_FRAME:
    if (W->outstanding > 0) W->outstanding--;
    /* fall through */
  case M_PART: take_data(M, w, m, cnt, st->MPI_TAG); break;
  default: drop(m, cnt);
  }
}

/* takes what arrived (a bounded number per pass); how many */
static int take_messages(trmpi *M) {
  int k;
  for (k = 0; k < 256; k++) {
    MPI_Message m;
    MPI_Status st;
    int flag = 0;
    MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, M->N.comm, &flag, &m, &st);
    if (!flag) break;
    take(M, &m, &st);
  }
  if (k == 0) M->empties++;
  return k;
}

static void complete_recvs(trmpi *M) {
  int n = 0, k;
  if (M->npend == 0) return;
  M->idx = (int *)grow(M->idx, &M->capidx, M->npend, sizeof *M->idx);
  MPI_Testsome(M->npend, M->prq, &n, M->idx, MPI_STATUSES_IGNORE);
  for (k = n - 1; k >= 0; k--) {
    int i = M->idx[k];
    mworker *W = &M->w[M->pend[i].w];
    in_at(W, M->pend[i].slot)->left--;
    M->npend--;
    M->pend[i] = M->pend[M->npend];
    M->prq[i] = M->prq[M->npend];
  }
}

static void progress(trmpi *M) {
  complete_sends(M);
  take_messages(M);
  complete_recvs(M);
}

/* ====================================================================== */
/* lifelines and losses                                                   */
/* ====================================================================== */
/* worker w's process died: what it sent before is real and was taken */
static void lose(lua_State *L, trmpi *M, int w) {
  mworker *W = &M->w[w];
  if (W->dead) return;
  W->dead = 1;
  forget(M, w);
  if (L != NULL) M->N.X->close_fd(L, W->fd);
  else close(W->fd);
  W->fd = -1;
  M->poke = 1;
  if (W->state == MW_RUN || W->state == MW_NEW) {
    /* now: without mpirun --enable-recovery the job ends in a second */
    fprintf(stderr, "lmp: %s lost\n", W->desc);
    fflush(stderr);
  }
}

/*
** Polls the lifelines until `until` (0: just look): rings are taken, a
** closed one is a loss.  1 if one rang, 0 if not, -2 interrupted.
*/
static int lifelines(lua_State *L, trmpi *M, const lmp_hook *h,
                     double until) {
  int i, n = 0, r, rung = 0;
  for (i = 0; i < M->T.n; i++) {
    if (M->w[i].fd < 0) continue;
    M->pf[n].fd = M->w[i].fd;
    M->pf[n].events = POLLIN;
    M->pf[n++].revents = 0;
  }
  r = M->N.X->poll(h, M->pf, (unsigned)n, until);
  if (r <= 0) return r == -2 ? -2 : 0;
  for (i = 0, n = 0; i < M->T.n; i++) {
    int d;
    if (M->w[i].fd < 0) continue;
    if (M->pf[n++].revents == 0) continue;
    d = lmpi_drain(M->w[i].fd);
    if (d < 0) {
      progress(M);                     /* its last replies first */
      lose(L, M, i);
    } else {
      if (d & 2) M->w[i].taking = 1;
      if (d) rung = 1;
    }
  }
  return rung;
}

/* ====================================================================== */
/* waiting                                                                */
/* ====================================================================== */
/* something for the scheduler: a whole frame, a loss, a hello */
static int ready(trmpi *M) {
  int i;
  for (i = 0; i < M->T.n; i++) {
    mworker *W = &M->w[i];
    if (W->state != MW_RUN) continue;
    if (W->dead || (W->incount > 0 && in_at(W, W->inbase)->left == 0))
      return 1;
  }
  if (M->poke) {
    M->poke = 0;
    return 1;
  }
  return 0;
}

/* a transfer that moves only while we are inside MPI */
static int busy(trmpi *M) {
  int i;
  if (M->npend > 0) return 1;
  for (i = 0; i < M->T.n; i++)
    if (M->w[i].nbig > 0 && (M->w[i].taking || !M->N.lifelines)) return 1;
  return 0;
}

/*
** One sleep: on the lifelines, from 1 ms doubling to the backstop (a ring
** cuts it short and starts the spin again), or without lifelines a
** back-off from 20 us doubling to 1 ms.  1 rung, 0 not, -2 interrupted.
*/
static int nap(lua_State *L, trmpi *M, const lmp_hook *h, double deadline,
               double *sleep) {
  double until = M->N.X->now() + *sleep;
  int r;
  if (deadline >= 0 && deadline < until) until = deadline;
  if (!M->N.lifelines) {
    struct timespec ts;
    double d = until - M->N.X->now();
    ts.tv_sec = 0;
    ts.tv_nsec = d > 0 ? (long)(d * 1e9) : 0;
    nanosleep(&ts, NULL);              /* a signal ends it: fine */
    *sleep = *sleep * 2 > 1e-3 ? 1e-3 : *sleep * 2;
    return 0;
  }
  r = lifelines(L, M, h, until);
  if (r > 0) *sleep = 1e-3;
  else *sleep = *sleep * 2 > M->N.backstop ? M->N.backstop : *sleep * 2;
  return r;
}

static int tm_wait(lua_State *L, lmp_transport *T, const lmp_hook *h,
                   double deadline) {
  trmpi *M = M_(T);
  const lmp_capsule *X = M->N.X;
  double t = X->now(), spinend = t + M->N.spin, sockat = t + SOCKGAP;
  double sleep = M->N.lifelines ? 1e-3 : 20e-6;
  M->empties = 0;
  for (;;) {
    int r;
    progress(M);
    if (ready(M)) return 1;
    if (h != NULL && X->hook_changed(h)) {
      X->hook_restore(h);
      return -2;
    }
    t = X->now();
    if (deadline >= 0 && t >= deadline) {
      if (M->empties >= 2) return 0;
      continue;                        /* a second look, without sleeping */
    }
    if (t >= sockat) {                 /* losses, even while spinning */
      if (lifelines(L, M, h, 0) == -2) return -2;
      sockat = t + SOCKGAP;
      if (ready(M)) return 1;
    }
    if (t < spinend || busy(M) || M->empties < 2) continue;
    r = nap(L, M, h, deadline, &sleep);
    if (r == -2) return -2;
    if (r > 0) spinend = X->now() + M->N.spin;
    sockat = X->now() + SOCKGAP;
    M->empties = 0;
  }
}

/* ====================================================================== */
/* the scheduler's operations                                             */
/* ====================================================================== */
static int failed(trmpi *M, mworker *W, const char *why) {
  snprintf(M->T.err, sizeof M->T.err, "%.200s %s", W->desc, why);
  return -1;
}

/* the verdict on a rank that said hello: the same build as ours? */
static int judge(trmpi *M, int i) {
  mworker *W = &M->w[i];
  size_t k = 0;
  if (W->siglen == M->siglen && memcmp(W->sig, M->sig, M->siglen) == 0) {
    post_ctl(M, i, M_OK, NULL, 0);
    W->state = MW_RUN;
    return 0;
  }
  while (k < W->siglen && k < M->siglen && W->sig[k] == M->sig[k]) k++;
  post_ctl(M, i, M_REFUSE, NULL, 0);
  W->state = MW_REFUSED;
  /* the message fits: desc is at most 95 bytes of host name long */
  snprintf(M->T.err, sizeof M->T.err, "%.120s runs another Lua or lmp "
           "build than rank 0 (their build signatures differ at byte %u: "
           "lmp or Lua version, bytecode format, number sizes or byte "
           "order); run the same lua and lmp on every rank", W->desc,
           (unsigned)k);
  return -1;
}

static int tm_start(lua_State *L, lmp_transport *T, int i) {
  trmpi *M = M_(T);
  mworker *W = &M->w[i];
  double until = M->N.X->now() + HELLOWAIT;
  if (W->state == MW_RUN) return 0;
  if (W->state != MW_NEW)
    return failed(M, W, "was lost and cannot be replaced");
  while (!W->hello && !W->dead && M->N.X->now() < until)
    if (tm_wait(L, T, NULL, until) < 0) break;
  if (W->dead) return failed(M, W, "was lost at start");
  if (!W->hello) return failed(M, W, "did not answer at start");
  return judge(M, i);
}

static void tm_send(lua_State *L, lmp_transport *T, int i, const char *p,
                    size_t n) {
  trmpi *M = M_(T);
  mworker *W = &M->w[i];
  char *buf;
  (void)L;
  if (W->state != MW_RUN || W->dead) return;   /* its loss comes next */
  buf = (char *)lmpi_alloc(&M->B, n);
  memcpy(buf, p, n);
  post_frame(M, i, buf, n);
  W->outstanding++;
  /* ring a worker that may be asleep: nothing came from it for a while,
     or it is idle and its last reply was found late (it may have slept
     since); in a tight apply loop neither holds and nothing rings */
  if (W->fd >= 0 &&
      (M->N.X->now() - W->lastrecv >= M->N.spin / 2 ||
       (W->outstanding == 1 && W->stale)))
    lmpi_ring(W->fd, RING_WAKE);
}

static int tm_backlog(lmp_transport *T, int i) {
  mworker *W = &M_(T)->w[i];
  return W->pending >= LOWWATER || W->nbig > 0;
}

static void tm_flush(lmp_transport *T) {
  complete_sends(M_(T));
}

static int tm_recv(lmp_transport *T, int i, const char **p, size_t *n) {
  trmpi *M = M_(T);
  mworker *W = &M->w[i];
  inframe *f;
  lmpi_free(&M->B, W->cur);
  W->cur = NULL;
  if (W->state != MW_RUN || W->incount == 0) return 0;
  f = in_at(W, W->inbase);
  if (f->left != 0) return 0;
  W->cur = f->p;
  *p = f->p;
  *n = f->n;
  W->inbase++;
  W->incount--;
  return 1;
}

static int tm_alive(lmp_transport *T, int i) {
  return M_(T)->w != NULL && M_(T)->w[i].state == MW_RUN;
}

static int tm_gone(lmp_transport *T, int i) {
  return tm_alive(T, i) && M_(T)->w[i].dead;
}

static void tm_lost(lua_State *L, lmp_transport *T, int i) {
  mworker *W = &M_(T)->w[i];
  W->state = MW_LOST;
  lua_pushfstring(L, "%s lost", W->desc);
}

static void tm_cancel(lmp_transport *T, int i, uint32_t task) {
  trmpi *M = M_(T);
  if (M->w[i].state == MW_RUN && !M->w[i].dead)
    post_ctl(M, i, M_CANCEL, &task, 4);
}

/*
** Ends the pool on every rank: a running task is cancelled unless the
** pool joins (its workers are idle then), and every rank that is not
** lost gets M_STOP.  Then MPI_Finalize, which returns once every rank
** called it: a worker stuck in a C call holds it up (doc/mpi.md).
*/
static void stop_all(trmpi *M, int cancel) {
  double until = M->N.X->now() + STOPWAIT;
  uint32_t any = 0;
  int i;
  if (M->stopped) return;
  M->stopped = 1;
  for (i = 0; i < M->T.n; i++)
    if (M->w[i].dead) M->N.nofinal = 1;
  for (i = 0; i < M->T.n; i++) {
    mworker *W = &M->w[i];
    uint32_t nofinal = (uint32_t)M->N.nofinal;
    if (W->dead || (W->state != MW_RUN && W->state != MW_NEW)) continue;
    if (cancel && W->state == MW_RUN) post_ctl(M, i, M_CANCEL, &any, 4);
    post_ctl(M, i, M_STOP, &nofinal, 4);
  }
  while (M->nout > 0 && M->N.X->now() < until) {
    struct timespec ts = { 0, 100000 };
    complete_sends(M);
    if (M->nout > 0) nanosleep(&ts, NULL);
  }
  lmpi_finalize(&M->N);
  if (live == M) live = NULL;
}

static void tm_stopall(lua_State *L, lmp_transport *T, int how) {
  trmpi *M = M_(T);
  int i;
  stop_all(M, how != LMP_STOP_JOIN);
  for (i = 0; M->w != NULL && i < T->n; i++) {
    M->N.X->close_fd(L, M->w[i].fd);
    M->w[i].fd = -1;
  }
}

static lua_Integer tm_ident(lmp_transport *T, int i) {
  return M_(T)->w != NULL ? (lua_Integer)M_(T)->w[i].pid : 0;
}

/* MPI has no fd that wakes up when a message arrives */
static int tm_fileno(lua_State *L, lmp_transport *T) {
  (void)L;
  (void)T;
  return -1;
}

static const char *tm_where(lmp_transport *T, int i) {
  return M_(T)->w[i].where;
}

static void freemem(trmpi *M) {
  int i;
  for (i = 0; M->w != NULL && i < M->T.n; i++) {
    mworker *W = &M->w[i];
    if (!W->dead) {                    /* a dead one's may still be MPI's */
      lmpi_free(&M->B, W->cur);
      while (W->incount > 0) {
        lmpi_free(&M->B, in_at(W, W->inbase)->p);
        W->inbase++;
        W->incount--;
      }
    }
    free(W->in);
  }
  free(M->w);
  free(M->out);
  free(M->orq);
  free(M->pend);
  free(M->prq);
  free(M->idx);
  free(M->pf);
  free(M->N.hosts);
  lmpi_freeall(&M->B);
  M->w = NULL;
  M->out = NULL;
  M->orq = NULL;
  M->pend = NULL;
  M->prq = NULL;
  M->idx = NULL;
  M->pf = NULL;
  M->N.hosts = NULL;
}

/* after MPI_Finalize no transfer uses a buffer any more */
static void tm_free(lua_State *L, lmp_transport *T) {
  if (!M_(T)->stopped) tm_stopall(L, T, LMP_STOP_BRIEF);
  freemem(M_(T));
}

static const lmp_tr_ops mpi_ops = {
  tm_start, tm_send, tm_backlog, tm_flush, tm_wait, tm_recv, tm_gone,
  tm_lost, tm_stopall, tm_cancel, tm_ident, tm_fileno, tm_alive, tm_where,
  tm_free
};

/* ====================================================================== */
/* making one                                                             */
/* ====================================================================== */
/* the pool stops its workers before it lets go of the transport; if both
   are collected at once, this may run first */
static int tm_gc(lua_State *L) {
  trmpi *M = (trmpi *)lua_touserdata(L, 1);
  int i;
  if (M->owner != getpid()) return 0;
  stop_all(M, 1);
  for (i = 0; M->w != NULL && i < M->T.n; i++) {   /* the lifelines */
    M->N.X->close_fd(L, M->w[i].fd);
    M->w[i].fd = -1;
  }
  freemem(M);
  return 0;
}

static void at_exit(void) {
  if (live != NULL && live->owner == getpid()) stop_all(live, 1);
}

static void names(trmpi *M) {
  int i;
  for (i = 0; i < M->T.n; i++) {
    mworker *W = &M->w[i];
    const char *host = M->N.hosts[i + 1];
    snprintf(W->desc, sizeof W->desc, "mpi rank %d (%s)", i + 1, host);
    snprintf(W->where, sizeof W->where, "mpi rank %d on host %s", i + 1, host);
  }
}

lmp_transport *lmp_trmpi_new(lua_State *L, const mpi_net *N, const int *fds) {
  static int hooked;
  trmpi *M = (trmpi *)lmp_newud(L, sizeof *M, 0);
  int i;
  memset(M, 0, sizeof *M);
  M->N = *N;
  M->T.ops = &mpi_ops;
  M->T.n = N->size - 1;
  M->T.fixed = 1;
  M->owner = getpid();
  M->stopped = 1;                      /* until it is complete */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, tm_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  M->w = (mworker *)calloc((size_t)M->T.n, sizeof *M->w);
  M->pf = (struct pollfd *)calloc((size_t)M->T.n, sizeof *M->pf);
  if (M->w == NULL || M->pf == NULL) lmpi_oom();
  for (i = 0; i < M->T.n; i++) M->w[i].fd = fds[i];
  names(M);
  M->siglen = lmpi_buildsig(L, N->X, M->sig, sizeof M->sig);
  M->stopped = 0;
  live = M;
  if (!hooked) hooked = atexit(at_exit) == 0;
  return &M->T;
}
