/*
** queue.c -- Queue, SimpleQueue, JoinableQueue.
**
** A queue is a memfd: its first page holds the header (a robust mutex,
** futex words, the ring's state), the rest is the ring.  An item is
** [8-byte length][encoded value][padding to 8]; a put copies it into the
** ring under the mutex and then commits it by switching the current state
** (two copies of the state, one word says which: a process killed at any
** point leaves either the old state or the new one, so no torn item and no
** item lost).  The ring grows (ftruncate) instead of blocking; every
** process maps the ring again when it sees a bigger capacity.  The header
** is mapped on its own: a held robust mutex must never move (glibc and the
** kernel keep its address in the process's robust list).
*/
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define QHDR     65536                /* header: a multiple of any page size */
#define QCAP0    ((uint64_t)64 << 10) /* first ring size */
#define QWRAP    UINT64_MAX           /* length that says: go on at 0 */
#define QSMALL   4096                 /* items copied onto the C stack */
#define QSPIN    200                  /* looks before a getter sleeps */
#define QSOFT    ((uint64_t)1 << 20)  /* past this, wait for a getter first */
#define QROOMWAIT 0.001               /* ... for at most this long */
#define QKEEP    QSOFT  /* ring bytes kept when it empties */

enum { K_QUEUE, K_SIMPLE, K_JOINABLE };
static const char *const kindname[] = {"Queue", "SimpleQueue", "JoinableQueue"};

typedef struct qstate {
  uint64_t head, tail;  /* ring offsets of the first item and of the end */
  uint64_t wrap;        /* where the items before `tail` wrapped to 0 */
  uint64_t cap;         /* ring bytes */
  uint64_t nitems;
  int64_t unfinished;   /* JoinableQueue: puts not yet task_done */
} qstate;

typedef struct qblk {
  pthread_mutex_t m;
  uint32_t notempty, notfull, alldone;  /* futex words, bumped on change */
  uint32_t getters, putters, joiners;   /* sleepers (a killed one stays
                                           counted: one wake too many) */
  uint32_t pollers;     /* mp.wait callers: ring the doorbell */
  uint32_t cur;         /* st[cur] is the state */
  qstate st[2];
  int64_t maxsize;      /* 0: unbounded */
  uint64_t dirty;       /* ring bytes written since the last trim */
  uint64_t gets;        /* items taken so far (getters' progress) */
  uint64_t stalled;     /* `gets` when a putter last waited in vain */
} qblk;

typedef struct queue {
  qblk *b;              /* the header page */
  char *ring;           /* the ring, `mapped` bytes of it */
  uint64_t mapped;
  int fd, efd;          /* the memfd; the doorbell (an eventfd) */
  int kind;
  uint64_t identmark;   /* objects every holder of the queue shares */
} queue;

static const char qenc = 0;           /* registry: the put encoder */

static queue *checkq(lua_State *L) {
  queue *q = (queue *)lmp_checkudata(L, 1, LMP_QUEUE, "Queue");
  if (q->b == NULL) lmp_error(L, "lmp: queue is closed");
  return q;
}

static uint64_t rec(uint64_t n) { return 8 + ((n + 7) & ~(uint64_t)7); }

/* ---------------------------------------------------------------------- */
/* the ring (mutex held)                                                  */
/* ---------------------------------------------------------------------- */
/* 0, or -1 with errno: this process maps the ring at its current size */
static int remap(queue *q, uint64_t cap) {
  void *p;
  if (cap == q->mapped) return 0;
  if (q->ring != NULL)
    p = mremap(q->ring, q->mapped, cap, MREMAP_MAYMOVE);
  else
    p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, QHDR);
  if (p == MAP_FAILED) return -1;
  q->ring = (char *)p;
  q->mapped = cap;
  return 0;
}

static void commit(qblk *b, const qstate *s) {
  uint32_t next = b->cur ^ 1;
  b->st[next] = *s;
  __atomic_store_n(&b->cur, next, __ATOMIC_SEQ_CST);
}

/* takes the mutex and maps the ring as it is now; 0 or -1 (errno) */
static int qlock(queue *q) {
  lmp_mutex_enter(&q->b->m);
  if (remap(q, q->b->st[q->b->cur].cap) != 0) {
    int e = errno;
    pthread_mutex_unlock(&q->b->m);
    errno = e;
    return -1;
  }
  return 0;
}

/*
** Makes room for a record of `need` bytes by growing the ring: when the
** items wrap, they are copied in order past the old end, so the old bytes
** stay valid until the new state is committed.
*/
static int grow(queue *q, qstate *s, uint64_t need) {
  uint64_t used = s->tail >= s->head ? s->tail - s->head
                                     : (s->wrap - s->head) + s->tail;
  uint64_t nc = s->cap * 2, base = s->cap;
  while (nc < s->cap + used + need) nc *= 2;
  if (ftruncate(q->fd, (off_t)(QHDR + nc)) != 0 || remap(q, nc) != 0)
    return -1;
  if (s->tail < s->head) {
    memcpy(q->ring + base, q->ring + s->head, s->wrap - s->head);
    memcpy(q->ring + base + (s->wrap - s->head), q->ring, s->tail);
    s->head = base;
    s->tail = base + used;
  }
  s->cap = nc;
  return 0;
}

/* where a record of r bytes goes (s changed to hold it), or -1 (errno);
   -2 if the ring would grow past QSOFT and `grow` is 0 */
static int64_t place(queue *q, qstate *s, uint64_t r, int maygrow) {
  if (s->nitems == 0) s->head = s->tail = 0;
  if (s->tail >= s->head) {
    if (s->cap - s->tail >= r) return (int64_t)s->tail;
    if (s->head > r) {                 /* wrap: a marker, then at 0 */
      if (s->cap - s->tail >= 8) lmp_put64(q->ring + s->tail, QWRAP);
      s->wrap = s->tail;
      return 0;
    }
  } else if (s->head - s->tail > r) return (int64_t)s->tail;
  if (!maygrow && s->cap >= QSOFT) return -2;
  if (grow(q, s, r) != 0) return -1;
  return (int64_t)s->tail;
}

/* the offset of the first item (after a wrap marker) */
static uint64_t first(queue *q, const qstate *s) {
  if (s->cap - s->head < 8 || lmp_get64(q->ring + s->head) == QWRAP) return 0;
  return s->head;
}

/* gives back the memory of a big ring that emptied (the size stays: other
   processes may still map it) */
static void trim(queue *q) {
  qblk *b = q->b;
  if (b->dirty > QKEEP) {
#ifdef FALLOC_FL_PUNCH_HOLE
    fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              (off_t)(QHDR + QKEEP), (off_t)(b->dirty - QKEEP));
#endif
    b->dirty = QKEEP;
  }
}

/* ---------------------------------------------------------------------- */
/* waiting                                                                */
/* ---------------------------------------------------------------------- */
/*
** Sleeps on *word (mutex held on entry and on return), counted in
** *sleepers.  Returns a wait result; LMP_W_ERROR also when the ring cannot
** be mapped after waking.
*/
static int qsleep(queue *q, uint32_t *word, uint32_t *sleepers,
                  const lmp_hook *h, double deadline) {
  uint32_t seq = *word;
  int r;
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&q->b->m);
  r = lmp_futex_wait(word, seq, h, deadline, 0.2);
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  if (qlock(q) != 0) return LMP_W_ERROR;
  return r;
}

static void wake(uint32_t *word, uint32_t *sleepers, int n) {
  __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0) lmp_futex_wake(word, n);
}

/* a getter was about to wait: look for an item without the mutex first,
   since a producer is often a few hundred ns away */
static void spin(queue *q) {
  int i;
  for (i = 0; i < QSPIN; i++) {
    qblk *b = q->b;
    if (__atomic_load_n(&b->st[__atomic_load_n(&b->cur, __ATOMIC_SEQ_CST)]
                            .nitems, __ATOMIC_RELAXED) > 0)
      return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

static int fail(lua_State *L, queue *q, const char *what) {
  int e = errno;
  pthread_mutex_unlock(&q->b->m);
  errno = e;
  return lmp_syserror(L, what);
}

/* ---------------------------------------------------------------------- */
/* put                                                                    */
/* ---------------------------------------------------------------------- */
/* mutex held: copies the item in and commits it; 0, -1 (errno), -2 (the
   ring is big and full: see doput) */
static int enqueue(queue *q, const char *p, uint64_t n, int maygrow) {
  qblk *b = q->b;
  qstate s = b->st[b->cur];
  uint64_t r = rec(n);
  int wasempty = s.nitems == 0;
  int64_t at = place(q, &s, r, maygrow);
  if (at < 0) return (int)at;
  lmp_put64(q->ring + at, n);
  memcpy(q->ring + at + 8, p, n);
  s.tail = (uint64_t)at + r;
  s.nitems++;
  if (q->kind == K_JOINABLE) s.unfinished++;
  if (s.tail > b->dirty) b->dirty = s.tail;
  commit(b, &s);
  wake(&b->notempty, &b->getters, 1);
  if (wasempty && __atomic_load_n(&b->pollers, __ATOMIC_SEQ_CST) > 0) {
    uint64_t one = 1;
    if (write(q->efd, &one, sizeof one) < 0) { /* full: rung already */ }
  }
  return 0;
}

#define QAGAIN (-1)                     /* make_room slept: look again */

/*
** Mutex held: puts the item in.  A ring past QSOFT that is full waits up
** to QROOMWAIT for a getter to make room before it grows: a fresh page of
** shared memory costs 10-20 us on this kind of VM, more than moving a
** 10 KB item, so a producer that outruns its consumer would otherwise pay
** for its lead in page faults on both sides.  With no getter making
** progress (none running), the wait happens once and the ring grows from
** then on: an unbounded put never waits for a reader to come.
*/
static int make_room(lua_State *L, queue *q, const char *p, size_t n,
                     const lmp_hook *h) {
  qblk *b = q->b;
  uint64_t gets = 0;
  int r = enqueue(q, p, n, 0);
  if (r == -2 && (gets = b->gets) == b->stalled) r = enqueue(q, p, n, 1);
  if (r == 0) return LMP_W_OK;
  if (r == -1) return fail(L, q, "queue: grow");
  r = qsleep(q, &b->notfull, &b->putters, h, lmp_now() + QROOMWAIT);
  if (r == LMP_W_ERROR) return lmp_syserror(L, "queue: mmap");
  if (r == LMP_W_INTR) return r;
  if (q->b->gets == gets) q->b->stalled = gets;
  return QAGAIN;
}

static int doput(lua_State *L, double deadline) {
  queue *q = checkq(L);
  lmp_enc *E;
  const char *p;
  size_t n;
  int r = LMP_W_OK, top;
  lmp_hook h;
  if (lua_isnoneornil(L, 2)) return lmp_error(L, "lmp: cannot put nil in a queue");
  lua_settop(L, 2);
  E = lmp_enc_take(L, &qenc, 0);       /* an error below: it is collected */
  top = lua_gettop(L);
  lmp_enc_ident(E, q->identmark);
  lmp_enc_begin(E, 1);
  lmp_enc_value(E, 2, "item", -1);
  p = lmp_enc_flatten(E, &n);
  lmp_hook_save(L, &h);
  if (qlock(q) != 0) return lmp_syserror(L, "queue: mmap");
  for (;;) {
    while (q->b->maxsize > 0 &&
           (int64_t)q->b->st[q->b->cur].nitems >= q->b->maxsize) {
      r = qsleep(q, &q->b->notfull, &q->b->putters, &h, deadline);
      if (r == LMP_W_ERROR) return lmp_syserror(L, "queue: mmap");
      if (r != LMP_W_OK) break;
    }
    if (r != LMP_W_OK || (r = make_room(L, q, p, n, &h)) != QAGAIN) break;
    r = LMP_W_OK;                      /* it slept: full again? */
  }
  pthread_mutex_unlock(&q->b->m);
  lmp_enc_give(L, top, &qenc);
  lmp_wait_check(L, r, "queue put");
  if (r == LMP_W_TIMEOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "full");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int q_put(lua_State *L) {
  return doput(L, lua_type(L, 3) == LUA_TBOOLEAN ? lmp_acq_deadline(L, 3)
                                                 : lmp_optdeadline(L, 3));
}
static int q_put_nowait(lua_State *L) { return doput(L, lmp_now()); }

/* ---------------------------------------------------------------------- */
/* get                                                                    */
/* ---------------------------------------------------------------------- */
static uint64_t used(const qstate *s) {
  if (s->nitems == 0) return 0;
  return s->tail >= s->head ? s->tail - s->head : (s->wrap - s->head) + s->tail;
}

/*
** Mutex held, an item there: copies it to `to` (room for `room` bytes) and
** commits its removal.  Returns its length; more than `room`: nothing was
** taken (the caller makes room and tries again).  Putters waiting for
** bytes are woken when a quarter of the ring is free, not for every item:
** one wake-up per item would make producer and consumer take turns.
*/
static uint64_t dequeue(queue *q, char *to, uint64_t room) {
  qblk *b = q->b;
  qstate s = b->st[b->cur];
  uint64_t at = first(q, &s), n = lmp_get64(q->ring + at), before = used(&s);
  uint64_t mark = s.cap - s.cap / 4;
  if (n > room) return n;
  memcpy(to, q->ring + at + 8, n);
  s.head = at + rec(n);
  s.nitems--;
  b->gets++;
  if (s.nitems == 0) s.head = s.tail = 0;
  commit(b, &s);
  if (s.nitems == 0) trim(q);
  if (s.nitems == 0 || (used(&s) <= mark && before > mark) ||
      (b->maxsize > 0 && (int64_t)s.nitems + 1 == b->maxsize))
    wake(&b->notfull, &b->putters, 1);
  return n;
}

static void decode(lua_State *L, const char *p, size_t n) {
  lmp_dec D;
  if (lmp_dec_begin(&D, L, p, n, LMP_DEC_TRUSTED) != 1)
    lmp_error(L, "lmp: corrupt queue item");
  lmp_dec_value(&D);
  lmp_dec_end(&D);
}

/* the next item's bytes, waiting until deadline: its length, with the
   bytes in small or in a userdata pushed on the stack; -1 on timeout */
static int64_t take(lua_State *L, queue *q, char *small, double deadline) {
  char *to = small;
  uint64_t room = QSMALL, n;
  int64_t got = -1;
  int r = LMP_W_OK, spun = 0;
  lmp_hook h;
  lmp_hook_save(L, &h);
  if (qlock(q) != 0) return lmp_syserror(L, "queue: mmap");
  while (r == LMP_W_OK || r == LMP_W_TIMEOUT) {
    qblk *b = q->b;
    if (b->st[b->cur].nitems > 0) {
      if ((n = dequeue(q, to, room)) <= room) {
        got = (int64_t)n;
        break;
      }
      /* too big for the buffer: make one, without the mutex (Lua may
         raise), and look again */
      pthread_mutex_unlock(&b->m);
      if (to != small) lua_pop(L, 1);
      to = (char *)lmp_newud(L, (size_t)n, 0);
      room = n;
      if (qlock(q) != 0) return lmp_syserror(L, "queue: mmap");
      continue;
    }
    if (r == LMP_W_TIMEOUT || (deadline >= 0 && lmp_now() >= deadline)) break;
    if (!spun) {
      spun = 1;
      pthread_mutex_unlock(&b->m);
      spin(q);
      if (qlock(q) != 0) return lmp_syserror(L, "queue: mmap");
      continue;
    }
    r = qsleep(q, &b->notempty, &b->getters, &h, deadline);
    if (r == LMP_W_ERROR) return lmp_syserror(L, "queue: mmap");
  }
  if (r == LMP_W_INTR && q->b->st[q->b->cur].nitems > 0)
    wake(&q->b->notempty, &q->b->getters, 1);   /* not lost on us */
  pthread_mutex_unlock(&q->b->m);
  lmp_wait_check(L, r, "queue get");
  return got;
}

static int doget(lua_State *L, double deadline) {
  queue *q = checkq(L);
  char small[QSMALL];
  int64_t n;
  lua_settop(L, 1);
  n = take(L, q, small, deadline);
  if (n < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "empty");
    return 2;
  }
  decode(L, lua_gettop(L) > 1 ? (const char *)lua_touserdata(L, 2) : small,
         (size_t)n);
  return 1;
}

static int q_get(lua_State *L) { return doget(L, lmp_acq_deadline(L, 2)); }
static int q_get_nowait(lua_State *L) { return doget(L, lmp_now()); }

/* ---------------------------------------------------------------------- */
/* JoinableQueue                                                          */
/* ---------------------------------------------------------------------- */
static queue *checkjoinable(lua_State *L, const char *what) {
  queue *q = checkq(L);
  if (q->kind != K_JOINABLE)
    lmp_error(L, "lmp: %s needs a JoinableQueue, not a %s", what,
              kindname[q->kind]);
  return q;
}

static int q_task_done(lua_State *L) {
  queue *q = checkjoinable(L, "task_done");
  qstate s;
  lmp_mutex_enter(&q->b->m);
  s = q->b->st[q->b->cur];
  if (s.unfinished <= 0) {
    pthread_mutex_unlock(&q->b->m);
    return lmp_error(L, "lmp: task_done() called more times than items were put");
  }
  s.unfinished--;
  commit(q->b, &s);
  if (s.unfinished == 0) wake(&q->b->alldone, &q->b->joiners, INT_MAX);
  pthread_mutex_unlock(&q->b->m);
  return 0;
}

static int q_join(lua_State *L) {
  queue *q = checkjoinable(L, "join");
  double deadline = lmp_optdeadline(L, 2);
  int r = LMP_W_OK;
  lmp_hook h;
  lmp_hook_save(L, &h);
  if (qlock(q) != 0) return lmp_syserror(L, "queue: mmap");
  while (q->b->st[q->b->cur].unfinished > 0 && r == LMP_W_OK) {
    r = qsleep(q, &q->b->alldone, &q->b->joiners, &h, deadline);
    if (r == LMP_W_ERROR) return lmp_syserror(L, "queue: mmap");
  }
  r = q->b->st[q->b->cur].unfinished > 0 ? (r == LMP_W_OK ? LMP_W_TIMEOUT : r)
                                          : LMP_W_OK;
  pthread_mutex_unlock(&q->b->m);
  lmp_wait_check(L, r, "queue join");
  lua_pushboolean(L, r == LMP_W_OK);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* the rest                                                               */
/* ---------------------------------------------------------------------- */
static uint64_t nitems(queue *q) {
  qblk *b = q->b;
  return __atomic_load_n(&b->st[__atomic_load_n(&b->cur, __ATOMIC_SEQ_CST)]
                              .nitems, __ATOMIC_SEQ_CST);
}

static int q_qsize(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)nitems(checkq(L)));
  return 1;
}

static int q_empty(lua_State *L) {
  lua_pushboolean(L, nitems(checkq(L)) == 0);
  return 1;
}

static int q_full(lua_State *L) {
  queue *q = checkq(L);
  lua_pushboolean(L, q->b->maxsize > 0 &&
                     (int64_t)nitems(q) >= q->b->maxsize);
  return 1;
}

/* this process's handle goes: the queue lives on in the others */
static int q_close(lua_State *L) {
  queue *q = (queue *)lmp_checkudata(L, 1, LMP_QUEUE, "Queue");
  if (q->ring != NULL) munmap(q->ring, q->mapped);
  if (q->b != NULL) munmap(q->b, QHDR);
  if (q->fd >= 0) close(q->fd);
  if (q->efd >= 0) close(q->efd);
  q->ring = NULL;
  q->b = NULL;
  q->mapped = 0;
  q->fd = q->efd = -1;
  return 0;
}

static int q_tostring(lua_State *L) {
  queue *q = (queue *)lua_touserdata(L, 1);
  if (q->b == NULL) lua_pushfstring(L, "%s (closed)", kindname[q->kind]);
  else lua_pushfstring(L, "%s (%d items)", kindname[q->kind],
                       (int)nitems(q));
  return 1;
}

static int mkqueue(lua_State *L, int kind) {
  lua_Integer maxsize = 0;
  queue *q;
  int r;
  if (kind != K_SIMPLE && !lua_isnoneornil(L, 1)) {
    maxsize = lmp_checkint(L, 1, "maxsize");
    if (maxsize < 0) maxsize = 0;      /* Python: <= 0 is unbounded */
  }
  q = (queue *)lmp_newud(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  q->fd = q->efd = -1;
  q->kind = kind;
  luaL_setmetatable(L, LMP_QUEUE);
  /* neither fd is tracked (runtime.h): a child that inherits the queue
     keeps using them; O_CLOEXEC keeps them from exec'd programs */
  if ((q->fd = memfd_create("lmp-queue", MFD_CLOEXEC)) < 0)
    return lmp_syserror(L, "queue: memfd_create");
  if ((q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
    return lmp_syserror(L, "queue: eventfd");
  if (ftruncate(q->fd, (off_t)(QHDR + QCAP0)) != 0)
    return lmp_syserror(L, "queue: ftruncate");
  q->b = (qblk *)mmap(NULL, QHDR, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, 0);
  if (q->b == (qblk *)MAP_FAILED) {
    q->b = NULL;
    return lmp_syserror(L, "queue: mmap");
  }
  if ((r = lmp_mutex_init(&q->b->m, 0)) != 0) {
    errno = r;
    return lmp_syserror(L, "queue");
  }
  q->b->st[0].cap = q->b->st[1].cap = QCAP0;
  q->b->maxsize = (int64_t)maxsize;
  q->b->stalled = UINT64_MAX;          /* no getter has been waited for yet */
  if (remap(q, QCAP0) != 0) return lmp_syserror(L, "queue: mmap");
  lmp_ident_register(L, -1);
  q->identmark = lmp_ident_mark(L);
  return 1;
}

static int mp_queue(lua_State *L) { return mkqueue(L, K_QUEUE); }
static int mp_simplequeue(lua_State *L) { return mkqueue(L, K_SIMPLE); }
static int mp_joinablequeue(lua_State *L) { return mkqueue(L, K_JOINABLE); }

/*
** mp.wait: the doorbell is an eventfd that put() writes when the queue
** goes from empty to not empty while someone polls.  It is emptied under
** the mutex only when the queue is empty, so it is readable whenever an
** item came since a poller looked.
*/
int lmp_queue_poll(lua_State *L, int idx, int *fd) {
  queue *q = (queue *)lmp_checkudata(L, idx, LMP_QUEUE, "Queue");
  uint64_t v;
  int ready;
  if (q->b == NULL) lmp_error(L, "lmp: queue is closed");
  lmp_mutex_enter(&q->b->m);
  __atomic_add_fetch(&q->b->pollers, 1, __ATOMIC_SEQ_CST);
  ready = q->b->st[q->b->cur].nitems > 0;
  if (!ready && read(q->efd, &v, sizeof v) < 0) { /* empty already */ }
  pthread_mutex_unlock(&q->b->m);
  *fd = q->efd;
  return ready;
}

void lmp_queue_unpoll(lua_State *L, int idx) {
  queue *q = (queue *)lmp_checkudata(L, idx, LMP_QUEUE, "Queue");
  if (q->b != NULL) __atomic_sub_fetch(&q->b->pollers, 1, __ATOMIC_SEQ_CST);
}

void lmp_queue_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"put", q_put}, {"get", q_get}, {"put_nowait", q_put_nowait},
    {"get_nowait", q_get_nowait}, {"qsize", q_qsize}, {"empty", q_empty},
    {"full", q_full}, {"close", q_close}, {"task_done", q_task_done},
    {"join", q_join}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", q_close}, {"__close", q_close}, {"__tostring", q_tostring},
    {NULL, NULL}
  };
  lmp_shm_class(L, LMP_QUEUE, methods, meta);
  lua_pop(L, 1);
  lua_pushcfunction(L, mp_queue);
  lua_setfield(L, -2, "Queue");
  lua_pushcfunction(L, mp_simplequeue);
  lua_setfield(L, -2, "SimpleQueue");
  lua_pushcfunction(L, mp_joinablequeue);
  lua_setfield(L, -2, "JoinableQueue");
}
