/*
** wire.c -- lmp's wire format: message headers, frames, Pool protocol.
*/
#include "wire.h"

#include <errno.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* value messages                                                         */
/* ---------------------------------------------------------------------- */
size_t lmp_wire_header(char *p, uint64_t count, int padded) {
  p[0] = 'L';
  p[1] = 'M';
  p[2] = 'P';
  p[3] = (char)LMP_WIRE_VERSION;
  if (padded) {
    lmp_varint_putw(p + 4, count, LMP_VARINT_MAX);
    return 4 + LMP_VARINT_MAX;
  }
  return 4 + (size_t)lmp_varint_put(p + 4, count);
}

void lmp_wire_setcount(char *header, uint64_t count) {
  lmp_varint_putw(header + 4, count, LMP_VARINT_MAX);
}

int lmp_wire_readheader(const unsigned char **p, const unsigned char *end,
                        uint64_t *count, int *version) {
  const unsigned char *s = *p;
  if (end - s < 4 || memcmp(s, "LMP", 3) != 0) return -1;
  if (s[3] != LMP_WIRE_VERSION) {
    *version = s[3];
    return -2;
  }
  s += 4;
  switch (lmp_varint_get(&s, end, count)) {
    case 0: break;
    case -1: return -3;
    default: return -4;
  }
  *p = s;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* frames                                                                 */
/* ---------------------------------------------------------------------- */
void lmp_frame_header(char *p, uint64_t payload) { lmp_put64(p, payload); }

int lmp_reader_frame(lmp_reader *r, const char **p, size_t *n) {
  size_t avail = r->b.n - r->pos;
  uint64_t len;
  if (avail < LMP_FRAME_HDR) return 0;
  len = lmp_get64(r->b.p + r->pos);
  if (len > avail - LMP_FRAME_HDR) return 0;
  *p = r->b.p + r->pos + LMP_FRAME_HDR;
  *n = (size_t)len;
  r->pos += LMP_FRAME_HDR + (size_t)len;
  return 1;
}

/* frames already handed out leave the buffer */
static void reader_compact(lmp_reader *r) {
  if (r->pos == 0) return;
  if (r->pos == r->b.n) {
    r->b.n = 0;
    if (r->b.cap > (4u << 20)) lmp_buf_free(&r->b);  /* after a huge frame */
  } else {
    memmove(r->b.p, r->b.p + r->pos, r->b.n - r->pos);
    r->b.n -= r->pos;
  }
  r->pos = 0;
}

/*
** One read.  When a frame header is buffered, room for the whole frame is
** made at once so a large payload arrives in few, large reads.
*/
int lmp_reader_fill(lmp_reader *r, int fd) {
  size_t want = 64 * 1024, avail;
  ssize_t got;
  reader_compact(r);
  avail = r->b.n;
  if (avail >= LMP_FRAME_HDR) {
    uint64_t len = lmp_get64(r->b.p);
    if (len + LMP_FRAME_HDR > avail && len + LMP_FRAME_HDR - avail > want) {
      if (len > (uint64_t)SIZE_MAX - 16) {
        errno = EFBIG;
        return -1;
      }
      want = (size_t)(len + LMP_FRAME_HDR - avail);
    }
  }
  if (r->b.cap - r->b.n < want && lmp_buf_grow(&r->b, want) != 0) {
    errno = ENOMEM;
    return -1;
  }
  got = lmp_read(fd, r->b.p + r->b.n, r->b.cap - r->b.n);
  if (got < 0) return -1;
  if (got == 0) return 0;
  r->b.n += (size_t)got;
  return 1;
}

void lmp_reader_free(lmp_reader *r) {
  lmp_buf_free(&r->b);
  r->pos = 0;
}

/* ---------------------------------------------------------------------- */
/* the Pool protocol                                                      */
/* ---------------------------------------------------------------------- */
void lmp_taskhdr_put(char *p, const lmp_taskhdr *h) {
  lmp_put32(p, h->task);
  lmp_put32(p + 4, h->fnid);
  p[8] = (char)h->flags;
  lmp_put64(p + 9, h->start);
}

int lmp_task_parse(const char *p, size_t n, lmp_taskhdr *h, const char **fn,
                   size_t *fnlen, const char **args, size_t *argslen) {
  if (n < LMP_TASKHDR) return -1;
  h->task = lmp_get32(p);
  h->fnid = lmp_get32(p + 4);
  h->flags = (unsigned char)p[8];
  h->start = lmp_get64(p + 9);
  p += LMP_TASKHDR;
  n -= LMP_TASKHDR;
  *fn = NULL;
  *fnlen = 0;
  if (h->flags & LMP_TF_INLINE) {
    uint64_t len;
    if (n < LMP_TASK_FNPREFIX) return -1;
    len = lmp_get64(p);
    if (len > n - LMP_TASK_FNPREFIX) return -1;
    *fn = p + LMP_TASK_FNPREFIX;
    *fnlen = (size_t)len;
    p += LMP_TASK_FNPREFIX + len;
    n -= LMP_TASK_FNPREFIX + (size_t)len;
  }
  *args = p;
  *argslen = n;
  return 0;
}

void lmp_replyhdr_put(char *p, uint32_t task, int status) {
  lmp_put32(p, task);
  p[4] = (char)status;
}

int lmp_replyhdr_get(const char *p, size_t n, uint32_t *task, int *status) {
  if (n < LMP_REPLYHDR) return -1;
  *task = lmp_get32(p);
  *status = (unsigned char)p[4];
  return 0;
}

static void putdouble(char *p, double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  lmp_put64(p, u);
}

static double getdouble(const char *p) {
  uint64_t u = lmp_get64(p);
  double d;
  memcpy(&d, &u, 8);
  return d;
}

void lmp_replystats_put(char *p, const lmp_replystats *s) {
  putdouble(p, s->started);
  putdouble(p + 8, s->ended);
  putdouble(p + 16, s->cpu);
  lmp_put64(p + 24, (uint64_t)s->maxrss);
}

void lmp_replystats_get(const char *p, lmp_replystats *s) {
  s->started = getdouble(p);
  s->ended = getdouble(p + 8);
  s->cpu = getdouble(p + 16);
  s->maxrss = (int64_t)lmp_get64(p + 24);
}
