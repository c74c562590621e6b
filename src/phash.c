/*
** phash.c -- open-addressing map from addresses to small integers.  An
** encoder's maps live across messages: a message clears them by moving to
** the next generation, O(1) however big they grew, instead of wiping them
** (a pool sends thousands of small messages after one big one).
*/
#include "phash.h"

#include <stdlib.h>
#include <string.h>

#define LIVE(h, i) ((h)->s[i].gen == (h)->gen && (h)->s[i].k != NULL)

/*
** No mixing: objects allocated one after the other (the tables of one big
** value, mostly) land in nearby slots, so the table is walked almost in
** order instead of missing the cache on every lookup.  Heap pointers are
** distinct and 16-byte aligned, so clusters stay short.
*/
static size_t slot(const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p >> 4;
  h ^= h >> 24;                         /* fold in high bits for huge caps */
  return (size_t)h & (cap - 1);
}

int64_t lmp_ph_get(const lmp_phash *h, const void *p) {
  size_t i;
  if (h->cap == 0) return 0;
  for (i = slot(p, h->cap); LIVE(h, i); i = (i + 1) & (h->cap - 1))
    if (h->s[i].k == p) return (int64_t)h->s[i].v;
  return 0;
}

void lmp_ph_free(lmp_phash *h) {
  free(h->s);
  h->s = NULL;
  h->cap = h->n = 0;
}

static int grow(lmp_phash *h) {
  size_t ncap = h->cap ? h->cap * 2 : 64, i;
  lmp_pslot *ns = (lmp_pslot *)calloc(ncap, sizeof *ns);
  if (ns == NULL) return -1;
  for (i = 0; i < h->cap; i++) {
    if (LIVE(h, i)) {
      size_t j = slot(h->s[i].k, ncap);
      while (ns[j].k != NULL) j = (j + 1) & (ncap - 1);
      ns[j] = h->s[i];
      ns[j].gen = 1;
    }
  }
  free(h->s);
  h->s = ns;
  h->cap = ncap;
  h->gen = 1;
  return 0;
}

int64_t lmp_ph_getput(lmp_phash *h, const void *p, int64_t v) {
  size_t i;
  if ((h->n + 1) * 2 > h->cap && grow(h) != 0) return -1;
  for (i = slot(p, h->cap); LIVE(h, i); i = (i + 1) & (h->cap - 1))
    if (h->s[i].k == p) return (int64_t)h->s[i].v;
  if (v < 1 || v > (int64_t)UINT32_MAX) return -1;
  h->s[i].k = p;
  h->s[i].gen = h->gen;
  h->s[i].v = (uint32_t)v;
  h->n++;
  return 0;
}

int lmp_ph_put(lmp_phash *h, const void *p, int64_t v) {
  return lmp_ph_getput(h, p, v) < 0 ? -1 : 0;
}

/*
** Memory is kept for the messages to come, within bounds: a map bigger
** than KEEP slots goes at once, and one more than 16 times too big for
** every message of the last DECAY clears goes too.
*/
#define KEEP  (1u << 19)    /* 8 MiB of slots */
#define DECAY 64
void lmp_ph_clear(lmp_phash *h) {
  if (h->n > h->peak) h->peak = h->n;
  if (h->cap > KEEP) {
    lmp_ph_free(h);
    h->peak = 0;
    return;
  }
  if (++h->clears >= DECAY) {
    if (h->cap > 4096 && h->cap > 16 * h->peak) lmp_ph_free(h);
    h->clears = 0;
    h->peak = 0;
  }
  h->n = 0;
  if (h->cap == 0) return;
  if (++h->gen == 0) {                 /* wrapped: every stamp is ambiguous */
    memset(h->s, 0, h->cap * sizeof *h->s);
    h->gen = 1;
  }
}
