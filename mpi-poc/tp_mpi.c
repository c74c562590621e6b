/*
** tp_mpi.c -- proof-of-concept pool transport over MPI (Open MPI 4.1).
**
** Messages (MPI_COMM_WORLD, tag = kind):
**   T_FRAME  a whole frame (task: rank 0 -> worker; reply: worker -> 0)
**   T_BIG    8-byte total length of a frame bigger than maxmsg; T_PART
**            messages of at most maxmsg bytes follow (MPI counts are int)
**   T_HELLO  worker -> 0 at start: rank, pid, host, build signature
**   T_OK / T_REFUSE  0 -> worker: the build check's verdict
**   T_STOP   0 -> worker: finish and leave
** All receives probe with MPI_ANY_TAG, so MPI's non-overtaking rule keeps
** a sender's messages in order whatever their kind.
**
** Sends are MPI_Isend of buffers the transport owns until the request
** completes (MPI_Testsome over all of them).  Receives match any source
** with MPI_Improbe and take the message with MPI_Mrecv (small) or
** MPI_Imrecv (large, so rank 0 never blocks on a transfer); a worker's
** frames are queued in arrival order and handed out once complete.
**
** Waiting: spin on MPI_Improbe for `spin` seconds, then (TPM_BELL) sleep
** in poll() on the side sockets.  A sender rings the receiver's socket
** (1 byte) only when the receiver may be asleep, judged from the local
** clock: rank 0 rings worker w if nothing came from w for spin/2; a
** worker rings rank 0 if nothing came from rank 0 for spin/2 (rank 0
** sleeps only after `spin` without any event).  A missed ring costs at
** most the backstop (the poll() timeout).  The same sockets are the
** lifeline: EOF on rank 0's side = that worker died (kill -9 included);
** EOF on a worker's side = rank 0 is gone.
*/
#define _GNU_SOURCE
#include "tp_mpi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <mpi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { T_FRAME = 1, T_BIG = 2, T_PART = 3, T_HELLO = 4, T_OK = 5, T_REFUSE = 6,
       T_STOP = 7 };

#define BIGRECV   (64 * 1024)   /* from here on rank 0 receives with Imrecv */
#define LOWWATER  (1 << 20)     /* TP_WRITABLE when pending drops below */
#define EAGER     4000          /* below vader's eager limit (4 KiB with headers) */
/*
** When a sender rings (TPM_RING):
**  "time"   only when the clock says the peer may be asleep: rank 0 rings
**           a worker from which nothing came for spin/2; a worker rings
**           rank 0 after a task that took spin/2 or longer.  Misses a
**           wake-up when a message sat unnoticed (a preempted or busy
**           receiver) and the peer fell asleep meanwhile.
**  "stale"  (default) "time", plus: rank 0 rings an idle worker (nothing
**           outstanding) whose last reply rank 0 found stale (at the first
**           probe of a wait or after a sleep, so it may have waited), and a
**           worker rings rank 0 when it slept before the task came.  In a
**           tight apply loop nothing is stale and nothing rings.
**  "safe"   rings every idle worker, and rank 0 whenever a worker finds
**           nothing more to do after a reply: no missed wake-ups, but one
**           send() per apply round trip (12-26 us instead of 5-6 here).
*/
enum { RING_TIME, RING_STALE, RING_SAFE };
static int ringmode = RING_STALE;
static double busysleep = 0;     /* longest sleep while a rendezvous is in
                                    progress (TPM_BUSY_US; 0 = keep spinning) */
#define SIGMAX    256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "tp_mpi: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return p;
}

/* ---------------------------------------------------------------------- */
/* buffers                                                                */
/* ---------------------------------------------------------------------- */
/*
** Frames of 64 KiB and more come from power-of-two size classes, and freed
** buffers are kept for reuse (at most CACHEN per class, CACHEMAX bytes in
** all): a fresh buffer costs a page fault per 4 KiB page when first
** written, ~20 us each on the reference VM, far more than copying it.
** Classes of 2 MiB and more are mmap'ed with MADV_HUGEPAGE (one fault per
** 2 MiB).  Smaller frames use malloc, whose bins recycle them anyway.
*/
#define CLASSMIN  16                    /* 64 KiB = 1 << 16 */
#define CLASSES   48
#define HUGEFROM  21                    /* 2 MiB */
#define CACHEN    4
#define CACHEMAX  ((size_t)256 << 20)
#define HDR       16                    /* class; keeps 16-byte alignment */

static void *cache[CLASSES][CACHEN];
static int ncache[CLASSES];
static size_t cached;

void *tp_alloc(size_t n) {
  char *p;
  int c = CLASSMIN;
  if (n + HDR < ((size_t)1 << CLASSMIN)) {
    p = (char *)xmalloc(n + HDR);
    ((size_t *)p)[0] = 0;
    return p + HDR;
  }
  while (((size_t)1 << c) < n + HDR) c++;
  if (ncache[c] > 0) {
    p = (char *)cache[c][--ncache[c]];
    cached -= (size_t)1 << c;
  } else if (c < HUGEFROM) {
    p = (char *)xmalloc((size_t)1 << c);
  } else {
    p = (char *)mmap(NULL, (size_t)1 << c, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p == MAP_FAILED) {
      fprintf(stderr, "tp_mpi: out of memory\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    madvise(p, (size_t)1 << c, MADV_HUGEPAGE);
  }
  ((size_t *)p)[0] = (size_t)c;
  return p + HDR;
}

void tp_free(void *q) {
  char *p;
  int c;
  if (q == NULL) return;
  p = (char *)q - HDR;
  c = (int)((size_t *)p)[0];
  if (c == 0) {
    free(p);
  } else if (ncache[c] < CACHEN && cached + ((size_t)1 << c) <= CACHEMAX) {
    cache[c][ncache[c]++] = p;
    cached += (size_t)1 << c;
  } else if (c < HUGEFROM) {
    free(p);
  } else {
    munmap(p, (size_t)1 << c);
  }
}

/* ---------------------------------------------------------------------- */
/* options, build signature                                               */
/* ---------------------------------------------------------------------- */
void tpm_defaults(tpm_opts *o) {
  const char *s;
  o->policy = TPM_BELL;
  o->spin = 250e-6;
  o->backstop = 10e-3;
  o->maxmsg = (size_t)1 << 30;
  o->lifeline = 1;
  if ((s = getenv("TPM_POLICY")) != NULL) {
    if (!strcmp(s, "hybrid")) o->policy = TPM_HYBRID;
    else if (!strcmp(s, "spin")) o->policy = TPM_SPIN;
  }
  if ((s = getenv("TPM_SPIN_US")) != NULL) o->spin = atof(s) * 1e-6;
  if ((s = getenv("TPM_BACKSTOP_MS")) != NULL) o->backstop = atof(s) * 1e-3;
  if ((s = getenv("TPM_MAXMSG")) != NULL) o->maxmsg = (size_t)atoll(s);
  if ((s = getenv("TPM_LIFELINE")) != NULL) o->lifeline = atoi(s);
  if ((s = getenv("TPM_BUSY_US")) != NULL) busysleep = atof(s) * 1e-6;
  if ((s = getenv("TPM_RING")) != NULL)
    ringmode = !strcmp(s, "time") ? RING_TIME : !strcmp(s, "safe") ? RING_SAFE : RING_STALE;
  if (o->maxmsg < 16) o->maxmsg = 16;
  if (o->maxmsg > INT32_MAX) o->maxmsg = INT32_MAX;
}

static int sigwriter(lua_State *L, const void *p, size_t sz, void *ud) {
  luaL_Buffer *b = (luaL_Buffer *)ud;
  (void)L;
  luaL_addlstring(b, (const char *)p, sz);
  return 0;
}

/*
** What must match for rank 0's bytecode and encoded values to mean the
** same on a worker: the header of a stripped string.dump (signature, Lua
** version, format, LUAC_DATA, sizes of Instruction/lua_Integer/lua_Number,
** the LUAC_INT and LUAC_NUM probes, which catch endianness and float
** format), then lmp's own wire parameters.  The whole dump of a trivial
** chunk is compared, so no offsets of lundump.h are needed.
*/
size_t tpm_buildsig(char *buf, size_t cap) {
  lua_State *L = luaL_newstate();
  size_t n = 0, len;
  const char *s;
  uint32_t probe = 0x01020304;
  luaL_Buffer b;
  if (L == NULL) return 0;
  luaL_loadstring(L, "return 0");
  luaL_buffinit(L, &b);
  lua_dump(L, sigwriter, &b, 1);
  luaL_pushresult(&b);
  s = lua_tolstring(L, -1, &len);
  n = snprintf(buf, cap, "lmp-wire-1 size_t=%u ptr=%u end=%02x ", (unsigned)sizeof(size_t),
               (unsigned)sizeof(void *), (unsigned)((unsigned char *)&probe)[0]);
  if (n + len <= cap) {
    memcpy(buf + n, s, len);
    n += len;
  }
  lua_close(L);
  if (getenv("TPM_FAKE_BUILD") && n > 0) buf[n - 1] ^= 0x55;  /* tests the refusal */
  return n;
}

/* ---------------------------------------------------------------------- */
/* side sockets                                                           */
/* ---------------------------------------------------------------------- */
static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* worker: connect to rank 0's host:port, 5 s at most; -1 on failure */
static int side_connect(const char *host, const char *myhost, int port) {
  struct addrinfo hints, *res = NULL, *ai;
  char ps[16];
  int fd = -1;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(strcmp(host, myhost) == 0 ? "localhost" : host, ps, &hints, &res) != 0)
    return -1;
  for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
    struct timeval tv = { 5, 0 };
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd >= 0) nodelay(fd);
  return fd;
}

static void ring(int fd) {
  char c = 'R';
  if (fd >= 0 && send(fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    /* EAGAIN: rings already pending, the peer will wake anyway */
  }
}

/* drains rings; returns 0 ok, -1 if the peer is gone */
static int drain(int fd) {
  char b[256];
  for (;;) {
    ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
    if (r > 0) continue;
    if (r == 0) return -1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

/* ---------------------------------------------------------------------- */
/* rank 0                                                                 */
/* ---------------------------------------------------------------------- */
typedef struct Blk {            /* a frame sent in several parts */
  char *buf;
  int refs;
} Blk;

typedef struct Out {
  int w;
  size_t len;
  char *buf;                    /* freed on completion (single part) */
  Blk *blk;                     /* or shared by the parts */
} Out;

typedef struct In {             /* a frame being received or ready */
  char *p;
  size_t n;
  int left;                     /* parts not yet complete */
} In;

typedef struct Pend {           /* an MPI_Imrecv in progress */
  int w;
  size_t slot;                  /* its In, by sequence number */
} Pend;

typedef struct Wk {
  int rank, pid;
  char host[MPI_MAX_PROCESSOR_NAME];
  char desc[MPI_MAX_PROCESSOR_NAME + 32];
  char why[512];
  int started, failed, lost;
  int hello;                    /* HELLO received */
  char sig[SIGMAX];
  size_t siglen;
  In *in;                       /* ring of frames, by sequence number */
  size_t inbase, incount, incap;
  char *cur;                    /* last frame handed out */
  int bigleft;                  /* T_PART messages still to come */
  size_t bigoff;
  size_t pending;               /* bytes of incomplete Isends */
  int fd;
  double lastrecv;
  long outstanding;             /* frames sent minus frames received */
  int stale;                    /* its last frame was found late (see ringmode) */
  unsigned ev;
} Wk;

struct tp {
  const tp_ops *ops;
  tpm_opts o;
  int n;
  Wk *w;
  Out *out;
  MPI_Request *orq;
  int nout, capout;
  Pend *pend;
  MPI_Request *prq;
  int npend, cappend;
  int *idx;
  int capidx;
  struct pollfd *pf;
  char mysig[SIGMAX];
  size_t mysiglen;
  long nsleep, nring, nrung, nwake;
  int nbigout;                  /* incomplete sends above the eager size */
  int poke;                     /* a HELLO came: tpm_wait returns early */
  int empties;                  /* empty probe passes since the wait began or
                                   the last sleep: a frame found with fewer than
                                   2 before it may have waited (ob1's Improbe
                                   progresses only after a miss, so a message
                                   that arrives is matched on the 2nd call) */
};

static int myrank = -1, nranks = 0;
static char myhost[MPI_MAX_PROCESSOR_NAME];
static tpm_opts wopts;          /* workers' copy */
static int wfd = -1;            /* worker: side socket to rank 0 */

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "tp_mpi: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return p;
}

static void room_out(tp *T) {
  if (T->nout < T->capout) return;
  T->capout = T->capout ? 2 * T->capout : 64;
  T->out = (Out *)xrealloc(T->out, (size_t)T->capout * sizeof *T->out);
  T->orq = (MPI_Request *)xrealloc(T->orq, (size_t)T->capout * sizeof *T->orq);
}

static void room_pend(tp *T) {
  if (T->npend < T->cappend) return;
  T->cappend = T->cappend ? 2 * T->cappend : 16;
  T->pend = (Pend *)xrealloc(T->pend, (size_t)T->cappend * sizeof *T->pend);
  T->prq = (MPI_Request *)xrealloc(T->prq, (size_t)T->cappend * sizeof *T->prq);
}

static void room_idx(tp *T) {
  int need = T->nout > T->npend ? T->nout : T->npend;
  if (need <= T->capidx) return;
  while (T->capidx < need) T->capidx = T->capidx ? 2 * T->capidx : 64;
  T->idx = (int *)xrealloc(T->idx, (size_t)T->capidx * sizeof *T->idx);
}

static In *in_at(Wk *W, size_t seq) {
  return &W->in[seq % W->incap];
}

static In *in_push(Wk *W) {
  if (W->incount == W->incap) {          /* grow the ring, keep the order */
    size_t nc = W->incap ? W->incap * 2 : 16, k;
    In *ni = (In *)xmalloc(nc * sizeof *ni);
    for (k = 0; k < W->incount; k++) ni[(W->inbase + k) % nc] = W->in[(W->inbase + k) % W->incap];
    free(W->in);
    W->in = ni;
    W->incap = nc;
  }
  W->incount++;
  return in_at(W, W->inbase + W->incount - 1);
}

static void add_send(tp *T, int w, char *buf, size_t len, int tag, Blk *blk, char *own) {
  Out *o;
  room_out(T);
  o = &T->out[T->nout];
  o->w = w;
  o->len = len;
  o->buf = own;
  o->blk = blk;
  MPI_Isend(buf, (int)len, MPI_BYTE, w + 1, tag, MPI_COMM_WORLD, &T->orq[T->nout]);
  T->nout++;
  if (len > EAGER) T->nbigout++;
  T->w[w].pending += len;
}

static void post_frame(tp *T, int w, char *frame, size_t len) {
  if (len <= T->o.maxmsg) {
    add_send(T, w, frame, len, T_FRAME, NULL, frame);
  } else {
    size_t off, parts = (len + T->o.maxmsg - 1) / T->o.maxmsg;
    Blk *b = (Blk *)xmalloc(sizeof *b);
    char *hdr = (char *)tp_alloc(8);
    uint64_t l = len;
    memcpy(hdr, &l, 8);
    b->buf = frame;
    b->refs = (int)parts;
    add_send(T, w, hdr, 8, T_BIG, NULL, hdr);
    for (off = 0; off < len; off += T->o.maxmsg)
      add_send(T, w, frame + off, len - off < T->o.maxmsg ? len - off : T->o.maxmsg, T_PART, b,
               NULL);
  }
}

/*
** Forgets a lost worker's transfers: sends to a dead rank never complete
** (Open MPI 4.1 reports nothing), so their requests and buffers are
** dropped unfinished and leaked on purpose -- MPI may still hold them, and
** MPI_Request_free would make MPI_Finalize wait for them forever (tried:
** the job hung at exit).  Its unfinished receives likewise; its inbox is
** dropped.
*/
static void forget_transfers(tp *T, int w) {
  Wk *W = &T->w[w];
  int i;
  for (i = T->nout - 1; i >= 0; i--) {
    if (T->out[i].w != w) continue;
    if (T->out[i].len > EAGER) T->nbigout--;
    T->nout--;
    T->out[i] = T->out[T->nout];
    T->orq[i] = T->orq[T->nout];
  }
  for (i = T->npend - 1; i >= 0; i--) {
    if (T->pend[i].w != w) continue;
    T->npend--;
    T->pend[i] = T->pend[T->npend];
    T->prq[i] = T->prq[T->npend];
  }
  W->pending = 0;
  W->incount = 0;                       /* leaked with the requests above */
}

static void lose(tp *T, int w, const char *why) {
  Wk *W = &T->w[w];
  if (W->lost) return;
  forget_transfers(T, w);
  if (W->failed) {                      /* refused at start: it left on its own */
    W->lost = 1;
    if (W->fd >= 0) close(W->fd);
    W->fd = -1;
    return;
  }
  W->lost = 1;
  W->ev |= TP_LOST;
  snprintf(W->why, sizeof W->why, "lmp: mpi %s lost%s%s", W->desc, why ? ": " : "",
           why ? why : "");
  if (W->fd >= 0) {
    close(W->fd);
    W->fd = -1;
  }
}

static void complete_sends(tp *T) {
  int outcount = 0, k;
  if (T->nout == 0) return;
  room_idx(T);
  MPI_Testsome(T->nout, T->orq, &outcount, T->idx, MPI_STATUSES_IGNORE);
  if (outcount <= 0) return;
  /* indices ascending: remove from the end so moved entries stay valid */
  for (k = outcount - 1; k >= 0; k--) {
    int i = T->idx[k];
    Out *o = &T->out[i];
    Wk *W = &T->w[o->w];
    size_t before = W->pending;
    W->pending -= o->len;
    if (o->len > EAGER) T->nbigout--;
    if (before >= LOWWATER && W->pending < LOWWATER) W->ev |= TP_WRITABLE;
    if (o->buf) tp_free(o->buf);
    if (o->blk && --o->blk->refs == 0) {
      tp_free(o->blk->buf);
      free(o->blk);
    }
    T->nout--;
    T->out[i] = T->out[T->nout];
    T->orq[i] = T->orq[T->nout];
  }
}

static void complete_recvs(tp *T) {
  int outcount = 0, k;
  if (T->npend == 0) return;
  room_idx(T);
  MPI_Testsome(T->npend, T->prq, &outcount, T->idx, MPI_STATUSES_IGNORE);
  if (outcount <= 0) return;
  for (k = outcount - 1; k >= 0; k--) {
    int i = T->idx[k];
    Pend *p = &T->pend[i];
    Wk *W = &T->w[p->w];
    In *f = in_at(W, p->slot);
    if (--f->left == 0 && p->slot == W->inbase) W->ev |= TP_READABLE;
    T->npend--;
    T->pend[i] = T->pend[T->npend];
    T->prq[i] = T->prq[T->npend];
  }
}

static void handle_hello(tp *T, Wk *W, const char *p, size_t n) {
  int32_t h[2];
  size_t hl;
  if (n < 8 + 2) return;
  memcpy(h, p, 8);
  W->pid = h[1];
  hl = strnlen(p + 8, n - 8);
  if (hl >= sizeof W->host) hl = sizeof W->host - 1;
  memcpy(W->host, p + 8, hl);
  W->host[hl] = 0;
  snprintf(W->desc, sizeof W->desc, "rank %d (%s)", W->rank, W->host);
  p += 8 + hl + 1;
  n -= 8 + hl + 1;
  W->siglen = n < SIGMAX ? n : SIGMAX;
  memcpy(W->sig, p, W->siglen);
  W->hello = 1;
  T->poke = 1;
}

/* takes every message that has arrived (up to a bound per call) */
static int take_messages(tp *T) {
  int k, got = 0;
  for (k = 0; k < 256; k++) {
    MPI_Message m;
    MPI_Status st;
    int flag = 0, cnt = 0, w;
    Wk *W;
    MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &m, &st);
    if (!flag) break;
    got++;
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    w = st.MPI_SOURCE - 1;
    if (w < 0 || w >= T->n) {            /* not ours: take and drop it */
      char *x = (char *)xmalloc((size_t)cnt);
      MPI_Mrecv(x, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      free(x);
      continue;
    }
    W = &T->w[w];
    W->lastrecv = now();
    W->stale = T->empties < 2;
    if (st.MPI_TAG == T_HELLO) {
      char *x = (char *)xmalloc((size_t)cnt + 1);
      MPI_Mrecv(x, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      x[cnt] = 0;
      handle_hello(T, W, x, (size_t)cnt);
      free(x);
    } else if (st.MPI_TAG == T_BIG) {
      uint64_t len;
      In *f;
      MPI_Mrecv(&len, 8, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      f = in_push(W);
      W->outstanding--;
      f->p = (char *)tp_alloc((size_t)len);
      f->n = (size_t)len;
      f->left = (int)((len + T->o.maxmsg - 1) / T->o.maxmsg);
      W->bigleft = f->left;
      W->bigoff = 0;
    } else if (st.MPI_TAG == T_PART || st.MPI_TAG == T_FRAME) {
      In *f;
      char *dst;
      size_t seq;
      if (st.MPI_TAG == T_PART) {
        seq = W->inbase + W->incount - 1;
        f = in_at(W, seq);
        dst = f->p + W->bigoff;
        W->bigoff += (size_t)cnt;
        W->bigleft--;
      } else {
        f = in_push(W);
        W->outstanding--;
        seq = W->inbase + W->incount - 1;
        f->p = (char *)tp_alloc((size_t)cnt);
        f->n = (size_t)cnt;
        f->left = 1;
        dst = f->p;
      }
      if (cnt < BIGRECV) {
        MPI_Mrecv(dst, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
        if (--f->left == 0 && seq == W->inbase) W->ev |= TP_READABLE;
      } else {                            /* a large one: don't block on it */
        room_pend(T);
        T->pend[T->npend].w = w;
        T->pend[T->npend].slot = seq;
        MPI_Imrecv(dst, cnt, MPI_BYTE, &m, &T->prq[T->npend]);
        T->npend++;
      }
    } else {
      char x[8];
      MPI_Mrecv(x, cnt > 8 ? 8 : cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
    }
  }
  return got;
}

/* checks the side sockets without sleeping: rings are drained, EOF = lost */
static void check_sockets(tp *T, int timeout_ms, const struct timespec *ts) {
  int i, n = 0, r;
  for (i = 0; i < T->n; i++) {
    if (T->w[i].fd < 0) continue;
    T->pf[n].fd = T->w[i].fd;
    T->pf[n].events = POLLIN;
    T->pf[n].revents = 0;
    n++;
  }
  if (n == 0) {
    if (ts) nanosleep(ts, NULL);
    return;
  }
  r = ts ? ppoll(T->pf, (nfds_t)n, ts, NULL) : poll(T->pf, (nfds_t)n, timeout_ms);
  if (r <= 0) return;
  n = 0;
  for (i = 0; i < T->n; i++) {
    if (T->w[i].fd < 0) continue;
    if (T->pf[n].revents) {
      T->nrung++;
      if (drain(T->w[i].fd) < 0) {
        /* take what it sent before it died: those replies are real */
        take_messages(T);
        lose(T, i, "its connection to rank 0 closed (the process died)");
      }
    }
    n++;
  }
}

static int collect(tp *T, tp_event *ev, int max) {
  int i, k = 0;
  for (i = 0; i < T->n && k < max; i++) {
    Wk *W = &T->w[i];
    if (W->incount > 0 && in_at(W, W->inbase)->left == 0) W->ev |= TP_READABLE;
    if (W->ev) {
      ev[k].worker = i;
      ev[k].what = W->ev;
      W->ev = 0;
      k++;
    }
  }
  return k;
}

static int tpm_workers(tp *T) {
  return T->n;
}

static int tpm_wait(tp *T, double deadline, tp_event *ev, int max);

static int tpm_start(tp *T, int w) {
  Wk *W = &T->w[w];
  double dl = now() + 30;
  tp_event e[8];
  if (W->started) return 0;
  if (W->failed || W->lost) return -1;
  while (!W->hello && !W->lost && now() < dl) tpm_wait(T, dl, e, 8);
  if (!W->hello) {
    W->failed = 1;
    snprintf(W->why, sizeof W->why, "lmp: mpi %s did not answer at start", W->desc);
    return -1;
  }
  if (W->siglen != T->mysiglen || memcmp(W->sig, T->mysig, W->siglen) != 0) {
    size_t i = 0;
    while (i < W->siglen && i < T->mysiglen && W->sig[i] == T->mysig[i]) i++;
    W->failed = 1;
    snprintf(W->why, sizeof W->why,
             "lmp: mpi %s runs a different Lua or lmp build than rank 0 (build signature "
             "differs at byte %zu: Lua version, bytecode format, number sizes or byte order); "
             "run the same lua and lmp on every node",
             W->desc, i);
    add_send(T, w, NULL, 0, T_REFUSE, NULL, NULL);
    return -1;
  }
  add_send(T, w, NULL, 0, T_OK, NULL, NULL);
  W->started = 1;
  return 0;
}

static int tpm_send(tp *T, int w, void *frame, size_t len, int flags) {
  Wk *W = &T->w[w];
  char *buf = (char *)frame;
  double t;
  if (W->lost || !W->started) {
    if (flags & TP_GIVE) tp_free(frame);
    return -1;
  }
  if (!(flags & TP_GIVE)) {
    buf = (char *)tp_alloc(len);
    memcpy(buf, frame, len);
  }
  post_frame(T, w, buf, len);
  W->outstanding++;
  t = now();
  /* ring if the worker may have gone to sleep: nothing from it for spin/2,
     or (safe) it had nothing to do */
  if (T->o.policy == TPM_BELL && W->fd >= 0 &&
      (t - W->lastrecv >= T->o.spin / 2 ||
       (ringmode == RING_SAFE && W->outstanding == 1) ||
       (ringmode == RING_STALE && W->outstanding == 1 && W->stale))) {
    ring(W->fd);
    T->nring++;
  }
  return 0;
}

static size_t tpm_pending(tp *T, int w) {
  return T->w[w].pending;
}

static int tpm_wait(tp *T, double deadline, tp_event *ev, int max) {
  double t = now(), spin_end = t + T->o.spin, lastsock = t, back = 20e-6, bs = 1e-3;
  long rung0 = 0;
  int k;
  T->empties = 0;
  for (;;) {
    complete_sends(T);
    if (take_messages(T) == 0) T->empties++;
    complete_recvs(T);
    if ((k = collect(T, ev, max)) > 0) return k;
    if (T->poke) {
      T->poke = 0;
      return 0;
    }
    t = now();
    /* two empty passes at least: ob1 progresses only after a miss, so one
       MPI_Improbe does not see a message that arrived meanwhile */
    if (deadline >= 0 && t >= deadline && T->empties >= 2) return 0;
    if (t - lastsock > 1e-3) {           /* lifelines, even while spinning */
      check_sockets(T, 0, NULL);
      lastsock = t;
      if ((k = collect(T, ev, max)) > 0) return k;
    }
    if (t < spin_end || T->o.policy == TPM_SPIN) continue;
    /* A rendezvous in progress moves only while we are inside MPI, unless
       the BTL can read the sender's memory (vader with CMA): without CMA
       or over TCP a sleeping rank 0 stalls every large transfer (NOTES.md
       2f), so sleep briefly then.  It costs CPU while a large task waits
       for a busy worker. */
    if (T->npend > 0 || T->nbigout > 0) {
      if (busysleep <= 0) continue;
      bs = busysleep;
    }
    if (T->o.policy == TPM_BELL) {
      struct timespec ts;
      double d = bs;
      if (deadline >= 0 && deadline - t < d) d = deadline - t;
      ts.tv_sec = (time_t)d;
      ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
      T->nsleep++;
      rung0 = T->nrung;
      check_sockets(T, 0, &ts);
      T->empties = 0;
      lastsock = now();
      bs = bs * 2 > T->o.backstop ? T->o.backstop : bs * 2;
      if (T->nrung != rung0) {           /* rung: a message is (nearly) there */
        spin_end = lastsock + T->o.spin;
        bs = 1e-3;
      }
    } else {
      struct timespec ts;
      double d = T->npend > 0 || T->nbigout > 0 ? busysleep : back;
      if (deadline >= 0 && deadline - t < d) d = deadline - t;
      ts.tv_sec = 0;
      ts.tv_nsec = (long)(d * 1e9);
      T->nsleep++;
      nanosleep(&ts, NULL);
      T->empties = 0;
      back = back * 2 > 1e-3 ? 1e-3 : back * 2;
    }
    T->nwake++;
  }
}

static int tpm_recv(tp *T, int w, const char **p, size_t *n) {
  Wk *W = &T->w[w];
  In *f;
  tp_free(W->cur);
  W->cur = NULL;
  (void)T;
  if (W->incount == 0) return 0;
  f = in_at(W, W->inbase);
  if (f->left != 0) return 0;
  W->cur = f->p;
  *p = f->p;
  *n = f->n;
  W->inbase++;
  W->incount--;
  return 1;
}

static const char *tpm_describe(tp *T, int w) {
  return T->w[w].desc;
}

static const char *tpm_why(tp *T, int w) {
  return T->w[w].why;
}

static void tpm_stop(tp *T, int w) {
  Wk *W = &T->w[w];
  if (W->lost) return;
  add_send(T, w, NULL, 0, T_STOP, NULL, NULL);
  if (W->fd >= 0) ring(W->fd);
}

static void tpm_close(tp *T) {
  int i, anylost = 0;
  double dl = now() + 5;
  for (i = 0; i < T->n; i++) {
    if (!T->w[i].lost && !T->w[i].failed) tpm_stop(T, i);
    if (T->w[i].lost) anylost = 1;
  }
  /* sends to a dead rank never complete: give them a few seconds */
  while (T->nout > 0 && now() < dl) {
    struct timespec ts = { 0, 100000 };
    complete_sends(T);
    if (T->nout > 0) nanosleep(&ts, NULL);
  }
  for (i = 0; i < T->n; i++) {
    if (T->w[i].fd >= 0) close(T->w[i].fd);
    tp_free(T->w[i].cur);
    while (T->w[i].incount > 0) {
      tp_free(in_at(&T->w[i], T->w[i].inbase)->p);
      T->w[i].inbase++;
      T->w[i].incount--;
    }
    free(T->w[i].in);
  }
  (void)anylost;
  MPI_Finalize();                       /* completes even with a dead rank (NOTES 2a) */
  free(T->w);
  free(T->out);
  free(T->orq);
  free(T->pend);
  free(T->prq);
  free(T->idx);
  free(T->pf);
  free(T);
}

void tpm_stats(tp *T, long out[4]) {
  out[0] = T->nsleep;
  out[1] = T->nring;
  out[2] = T->nrung;
  out[3] = T->nwake;
}

const tp_ops tpm_ops = { tpm_workers, tpm_start, tpm_send, tpm_pending, tpm_wait,
                         tpm_recv, tpm_describe, tpm_why, tpm_stop, tpm_close };

/* ---------------------------------------------------------------------- */
/* start-up (all ranks)                                                   */
/* ---------------------------------------------------------------------- */
tp *tpm_open(const tpm_opts *o, const char **err) {
  static char msg[160];
  int flag = 0, len, port = 0, ok, allok, i, ls = -1;
  char rhost[MPI_MAX_PROCESSOR_NAME];
  tp *T;
  *err = NULL;
  MPI_Initialized(&flag);
  if (!flag) {
    int prov;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &prov);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &myrank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  MPI_Get_processor_name(myhost, &len);
  if (nranks < 2) {
    snprintf(msg, sizeof msg,
             "lmp: backend \"mpi\" needs mpirun -n 2 or more (this job has %d rank)", nranks);
    *err = msg;
    return NULL;
  }
  wopts = *o;
  /* side sockets: rank 0 listens, the workers connect (a collective) */
  if (myrank == 0 && o->lifeline) {
    struct sockaddr_in6 a;
    socklen_t al = sizeof a;
    int zero = 0;
    ls = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls >= 0) {
      setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      memset(&a, 0, sizeof a);
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, SOMAXCONN) != 0 ||
          getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        close(ls);
        ls = -1;
      } else {
        port = ntohs(a.sin6_port);
      }
    }
    if (ls < 0) {                        /* no IPv6: plain IPv4 */
      struct sockaddr_in a4;
      socklen_t al4 = sizeof a4;
      ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      memset(&a4, 0, sizeof a4);
      a4.sin_family = AF_INET;
      a4.sin_addr.s_addr = htonl(INADDR_ANY);
      if (ls >= 0 && (bind(ls, (struct sockaddr *)&a4, sizeof a4) != 0 ||
                      listen(ls, SOMAXCONN) != 0 ||
                      getsockname(ls, (struct sockaddr *)&a4, &al4) != 0)) {
        close(ls);
        ls = -1;
      }
      if (ls >= 0) port = ntohs(a4.sin_port);
    }
  }
  memcpy(rhost, myhost, sizeof rhost);
  MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Bcast(rhost, sizeof rhost, MPI_CHAR, 0, MPI_COMM_WORLD);
  ok = 1;
  if (myrank != 0 && port > 0) {
    wfd = side_connect(rhost, myhost, port);
    if (wfd >= 0) {
      int32_t r = myrank;
      if (send(wfd, &r, 4, MSG_NOSIGNAL) != 4) {
        close(wfd);
        wfd = -1;
      }
    }
    ok = wfd >= 0;
  }
  MPI_Allreduce(&ok, &allok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (myrank != 0) {
    if (!allok && wfd >= 0) {
      close(wfd);
      wfd = -1;
    }
    if (wfd >= 0) {
      int fl = 1;
      setsockopt(wfd, SOL_SOCKET, SO_KEEPALIVE, &fl, sizeof fl);
    }
    return NULL;
  }
  T = (tp *)calloc(1, sizeof *T);
  T->ops = &tpm_ops;
  T->o = *o;
  T->n = nranks - 1;
  T->w = (Wk *)calloc((size_t)T->n, sizeof *T->w);
  T->pf = (struct pollfd *)calloc((size_t)T->n, sizeof *T->pf);
  T->mysiglen = tpm_buildsig(T->mysig, sizeof T->mysig);
  for (i = 0; i < T->n; i++) {
    T->w[i].rank = i + 1;
    T->w[i].fd = -1;
    snprintf(T->w[i].desc, sizeof T->w[i].desc, "rank %d", i + 1);
  }
  if (ls >= 0) {
    if (allok && port > 0) {
      for (i = 0; i < T->n; i++) {
        struct pollfd lp;
        int fd;
        int32_t r = 0;
        lp.fd = ls;
        lp.events = POLLIN;
        if (poll(&lp, 1, 10000) <= 0) break;  /* all connected before the Allreduce */
        fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) break;
        if (recv(fd, &r, 4, MSG_WAITALL) != 4 || r < 1 || r > T->n) {
          close(fd);
          continue;
        }
        nodelay(fd);
        T->w[r - 1].fd = fd;
      }
    }
    close(ls);
  }
  if (!allok || !o->lifeline) T->o.policy = T->o.policy == TPM_BELL ? TPM_HYBRID : T->o.policy;
  return T;
}

/* ---------------------------------------------------------------------- */
/* worker ranks                                                           */
/* ---------------------------------------------------------------------- */
static double wlastrecv;
static int wpendring;           /* ring rank 0 if nothing more comes at once */
static int wslept;              /* the last task came after we slept */
static long wsleep;

/*
** The side socket closed: rank 0 ended or died.  What it sent before
** closing (its STOP, say) is already deliverable, so look for it a little
** before giving up.  1 = gone, 0 = a message is there after all.
*/
static int w_gone(MPI_Message *m, MPI_Status *st) {
  double end = now() + 0.1;
  int flag = 0;
  close(wfd);
  wfd = -1;
  while (now() < end) {
    struct timespec ts = { 0, 100000 };
    MPI_Improbe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, m, st);
    if (flag) return 0;
    nanosleep(&ts, NULL);
  }
  return 1;
}

/* waits until a message from rank 0 can be received; 1 = rank 0 is gone */
static int w_wait(MPI_Message *m, MPI_Status *st) {
  double t = now(), spin_end = t + wopts.spin, lastsock = t, back = 20e-6, bs = 1e-3;
  int flag = 0;
  wslept = 0;
  for (;;) {
    MPI_Improbe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, m, st);
    if (flag) {
      wlastrecv = now();
      wpendring = 0;
      return 0;
    }
    if (wpendring) {                     /* idle after a reply: rank 0 may sleep */
      ring(wfd);
      wpendring = 0;
    }
    t = now();
    if (wfd >= 0 && t - lastsock > 1e-3) {
      if (drain(wfd) < 0) return w_gone(m, st);
      lastsock = t;
    }
    if (t < spin_end || wopts.policy == TPM_SPIN) continue;
    wsleep++;
    wslept = 1;
    if (wopts.policy == TPM_BELL && wfd >= 0) {
      struct pollfd pf;
      struct timespec ts;
      pf.fd = wfd;
      pf.events = POLLIN;
      ts.tv_sec = 0;
      ts.tv_nsec = (long)(bs * 1e9);
      if (ppoll(&pf, 1, &ts, NULL) > 0) {
        if (drain(wfd) < 0) return w_gone(m, st);
        lastsock = now();
        spin_end = lastsock + wopts.spin;  /* rung: a message is (nearly) there */
        bs = 1e-3;
      } else {
        lastsock = now();
        bs = bs * 2 > wopts.backstop ? wopts.backstop : bs * 2;
      }
    } else {
      struct timespec ts;
      ts.tv_sec = 0;
      ts.tv_nsec = (long)(back * 1e9);
      nanosleep(&ts, NULL);
      back = back * 2 > 1e-3 ? 1e-3 : back * 2;
    }
  }
}

/* sends to rank 0 and completes the send before the next task runs: with
   a rendezvous protocol the data moves only while we are inside MPI */
static void w_send(int tag, char *buf, size_t len) {
  MPI_Request rq;
  int flag = 0;
  double t0 = now(), back = len > EAGER ? busysleep : 20e-6;
  int doring = 0;
  MPI_Isend(buf, (int)len, MPI_BYTE, 0, tag, MPI_COMM_WORLD, &rq);
  if (wopts.policy == TPM_BELL && wfd >= 0) {
    if (t0 - wlastrecv >= wopts.spin / 2 || (ringmode == RING_STALE && wslept)) doring = 1;
    else if (ringmode == RING_SAFE && tag != T_BIG && tag != T_PART) wpendring = 1;
  }
  /* ring once the message can be probed: an eager one when its send
     completes (else rank 0 may wake, find nothing and sleep again), a
     rendezvous at once (rank 0 must match it for it to complete) */
  if (doring && len > EAGER) {
    ring(wfd);
    doring = 0;
  }
  for (;;) {
    MPI_Test(&rq, &flag, MPI_STATUS_IGNORE);
    if (flag) {
      if (doring) ring(wfd);
      return;
    }
    if (now() - t0 > wopts.spin && !(len > EAGER && busysleep <= 0)) {
      struct timespec ts = { 0, (long)(back * 1e9) };
      nanosleep(&ts, NULL);
      if (len <= EAGER) back = back * 2 > 1e-3 ? 1e-3 : back * 2;
    }
  }
}

static void w_sendframe(char *buf, size_t len) {
  if (len <= wopts.maxmsg) {
    w_send(T_FRAME, buf, len);
  } else {
    uint64_t l = len;
    size_t off;
    w_send(T_BIG, (char *)&l, 8);
    for (off = 0; off < len; off += wopts.maxmsg)
      w_send(T_PART, buf + off, len - off < wopts.maxmsg ? len - off : wopts.maxmsg);
  }
}

int tpm_serve(tpm_handler h, void *ud) {
  char hello[8 + MPI_MAX_PROCESSOR_NAME + 1 + SIGMAX];
  int32_t hv[2];
  size_t hn, hl = strlen(myhost);
  char *frame = NULL;
  size_t flen = 0, foff = 0;
  int parts = 0, gone;
  MPI_Message m;
  MPI_Status st;
  hv[0] = myrank;
  hv[1] = (int32_t)getpid();
  memcpy(hello, hv, 8);
  memcpy(hello + 8, myhost, hl + 1);
  hn = 8 + hl + 1;
  hn += tpm_buildsig(hello + hn, sizeof hello - hn);
  wlastrecv = 0;
  w_send(T_HELLO, hello, hn);
  for (;;) {
    int cnt;
    if ((gone = w_wait(&m, &st)) != 0) break;
    MPI_Get_count(&st, MPI_BYTE, &cnt);
    switch (st.MPI_TAG) {
    case T_OK:
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      continue;
    case T_REFUSE:
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      fprintf(stderr, "lmp: mpi rank %d (%s): rank 0 refused this rank: its Lua or lmp "
                      "build differs from rank 0's\n", myrank, myhost);
      if (wfd >= 0) close(wfd);
      MPI_Finalize();
      return -1;
    case T_STOP:
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      if (wfd >= 0) close(wfd);
      MPI_Finalize();
      return 0;
    case T_BIG: {
      uint64_t l;
      MPI_Mrecv(&l, 8, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      flen = (size_t)l;
      frame = (char *)tp_alloc(flen);
      foff = 0;
      parts = (int)((flen + wopts.maxmsg - 1) / wopts.maxmsg);
      continue;
    }
    case T_PART:
      MPI_Mrecv(frame + foff, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      foff += (size_t)cnt;
      if (--parts > 0) continue;
      break;
    case T_FRAME:
      frame = (char *)tp_alloc((size_t)cnt);
      flen = (size_t)cnt;
      MPI_Mrecv(frame, cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      break;
    default: {
      char x[8];
      MPI_Mrecv(x, cnt > 8 ? 8 : cnt, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      continue;
    }
    }
    {
      char *reply = NULL;
      size_t rn = 0;
      h(ud, frame, flen, &reply, &rn);
      tp_free(frame);
      frame = NULL;
      w_sendframe(reply, rn);
      tp_free(reply);
    }
  }
  /* rank 0 is gone: MPI_Finalize would wait for it forever */
  fprintf(stderr, "lmp: mpi rank %d (%s): rank 0 went away; leaving\n", myrank, myhost);
  return 1;
}
