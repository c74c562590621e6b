/*
** buf.h -- growable byte buffer, little-endian integers and LEB128 varints.
** Plain C; builds on nothing of lmp's.
*/
#ifndef LMP_BUF_H
#define LMP_BUF_H

/* POSIX + Linux interfaces (pipe2, waitid, pidfd...) for every file: this
   header comes first in each of them */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define LMP_INTERNAL __attribute__((visibility("hidden")))
#else
#define LMP_INTERNAL
#endif

typedef struct lmp_buf {
  char *p;
  size_t n, cap;
} lmp_buf;

/* room for `extra` more bytes: 0, or -1 (out of memory, nothing changed) */
LMP_INTERNAL int lmp_buf_grow(lmp_buf *b, size_t extra);
LMP_INTERNAL void lmp_buf_free(lmp_buf *b);

LMP_INTERNAL uint64_t lmp_get64(const void *p);
LMP_INTERNAL void lmp_put64(void *p, uint64_t v);
LMP_INTERNAL uint32_t lmp_get32(const void *p);
LMP_INTERNAL void lmp_put32(void *p, uint32_t v);

/*
** Varints: LEB128, 1 to 10 bytes.  Inline: the codec's hottest paths (every
** integer, length and count) go through them.
*/
#define LMP_VARINT_MAX 10

static inline int lmp_varint_len(uint64_t v) {
  int n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* writes v at p (LMP_VARINT_MAX bytes of room) and returns its length */
static inline int lmp_varint_put(char *p, uint64_t v) {
  int n = 0;
  while (v >= 0x80) {
    p[n++] = (char)((v & 0x7f) | 0x80);
    v >>= 7;
  }
  p[n++] = (char)v;
  return n;
}

/* writes v in exactly `width` bytes (a padded varint is still valid) */
static inline void lmp_varint_putw(char *p, uint64_t v, int width) {
  int i;
  for (i = 0; i < width - 1; i++) {
    p[i] = (char)((v & 0x7f) | 0x80);
    v >>= 7;
  }
  p[width - 1] = (char)(v & 0x7f);
}

/* reads a varint from [*pp, end): 0 and *pp advanced; -1 cut short (or a
   bad last byte), -2 too long or over 64 bits */
static inline int lmp_varint_get(const unsigned char **pp,
                                 const unsigned char *end, uint64_t *out) {
  const unsigned char *p = *pp;
  uint64_t v = 0;
  int shift = 0;
  while (p < end) {
    unsigned c = *p++;
    if (shift == 63 && (c & 0x7e)) break;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *pp = p;
      *out = v;
      return 0;
    }
    shift += 7;
    if (shift > 63) break;
  }
  return p >= end ? -1 : -2;
}

#endif
