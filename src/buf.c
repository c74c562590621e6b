/*
** buf.c -- growable byte buffer, little-endian integers and varints.
*/
#include "buf.h"

#include <stdlib.h>
#include <string.h>

int lmp_buf_grow(lmp_buf *b, size_t extra) {
  size_t need, ncap;
  char *np;
  if (extra > SIZE_MAX - b->n) return -1;
  need = b->n + extra;
  if (need <= b->cap) return 0;
  ncap = b->cap ? b->cap : 256;
  while (ncap < need) ncap = (ncap > SIZE_MAX / 2) ? need : ncap * 2;
  np = (char *)realloc(b->p, ncap);
  if (np == NULL) return -1;
  b->p = np;
  b->cap = ncap;
  return 0;
}

void lmp_buf_free(lmp_buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* the wire is little-endian; on such hosts these are plain copies */
uint64_t lmp_get64(const void *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
#else
  const unsigned char *b = (const unsigned char *)p;
  uint64_t v = 0;
  int i;
  for (i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
#endif
}

void lmp_put64(void *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(p, &v, 8);
#else
  unsigned char *b = (unsigned char *)p;
  int i;
  for (i = 0; i < 8; i++) {
    b[i] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
#endif
}

uint32_t lmp_get32(const void *p) {
  const unsigned char *b = (const unsigned char *)p;
  return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
         ((uint32_t)b[3] << 24);
}

void lmp_put32(void *p, uint32_t v) {
  unsigned char *b = (unsigned char *)p;
  b[0] = (unsigned char)(v & 0xff);
  b[1] = (unsigned char)((v >> 8) & 0xff);
  b[2] = (unsigned char)((v >> 16) & 0xff);
  b[3] = (unsigned char)((v >> 24) & 0xff);
}

