/*
** phash.h -- map from object addresses to small integers, cleared in O(1).
** Plain C; builds on buf.h (for LMP_INTERNAL).
*/
#ifndef LMP_PHASH_H
#define LMP_PHASH_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lmp_pslot {
  const void *k;
  uint32_t gen;         /* the slot is empty unless gen is the map's */
  uint32_t v;
} lmp_pslot;

typedef struct lmp_phash {
  lmp_pslot *s;         /* key and value side by side: one cache miss */
  size_t cap, n;        /* cap is 0 or a power of two; n: live entries */
  uint32_t gen;
  size_t peak;          /* largest n since the last decay check */
  unsigned clears;
} lmp_phash;

/* the value of p, 0 if absent (values are > 0) */
LMP_INTERNAL int64_t lmp_ph_get(const lmp_phash *h, const void *p);
/* the value of p if present; else stores v (1..UINT32_MAX) and returns 0;
   -1 (nothing stored) when out of memory or v does not fit */
LMP_INTERNAL int64_t lmp_ph_getput(lmp_phash *h, const void *p, int64_t v);
LMP_INTERNAL int lmp_ph_put(lmp_phash *h, const void *p, int64_t v); /* 0/-1 */
/* empties the map for the next message, keeping its memory within bounds */
LMP_INTERNAL void lmp_ph_clear(lmp_phash *h);
LMP_INTERNAL void lmp_ph_free(lmp_phash *h);

#endif
