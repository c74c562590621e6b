/*
** encode_i.h -- the encoder's insides, shared by encbuf.c (its life, its
** buffers, whole messages) and encode.c (values).  Not for other files:
** they use encode.h.
*/
#ifndef LMP_ENCODE_I_H
#define LMP_ENCODE_I_H

#include "encode.h"

#include <string.h>

/* strings at least this long are written from the Lua string itself */
#define ZEROCOPY_MIN (64 * 1024)

typedef struct seg {
  size_t off;           /* position in buf where the external piece goes */
  const char *p;
  size_t n;
} seg;

/* where the value being encoded sits, for error messages */
enum { P_INDEX, P_KEY, P_UPVAL, P_ISKEY, P_CUSTOM, P_META };
typedef struct epath {
  const struct epath *up;
  int kind;
  lua_Integer i;        /* P_INDEX */
  int idx;              /* P_KEY: stack index of the key */
  const char *s;        /* P_UPVAL: upvalue name */
} epath;

/* a growable list of ids */
typedef struct idlist {
  lua_Integer *v;
  size_t n, cap;
} idlist;

struct lmp_enc {
  lua_State *L;
  lmp_buf buf;
  lmp_phash refs;       /* table/function/custom -> ref id */
  lmp_phash upv;        /* upvalue id -> func ref id * 256 + upvalue index */
  lmp_phash skeys;      /* short string keys -> ref id */
  lmp_phash checked;    /* library values found current in this message */
  lua_Integer nrefs;
  /* tagat[id]: where table `id`'s T_TAB tag is, 0 once it became T_TABR
     (or for other ids).  Only back-referenced tables are written T_TABR,
     so the decoder keeps only those in its ref table. */
  size_t *tagat;
  size_t tagn, tagcap;
  int depth;
  int zerocopy;
  seg *segs;
  size_t nsegs, capsegs, extbytes;
  int anchor;           /* registry[E] holds a table keeping values alive
                           (enc_anchor), 0 until needed */
  lua_Integer nanchor;
  int knownready;       /* library values map checked during this message */
  int knownfresh;       /* ... and built anew during it */
  lmp_libvals *known;
  const void *globals;  /* the globals table travels as T_GLOBALS */
  const char *root;
  lua_Integer rootindex;
  size_t countat;       /* where lmp_enc_begin wrote the value count */
  size_t peak;          /* biggest message since the last decay check */
  unsigned clears;
  uint64_t identmax;    /* see lmp_enc_ident */
  lmp_ident *ident;
  /* custom values being written (a __serialize result must not refer back
     to its own value: it would decode as a dangling reference) */
  idlist open;
  /* custom values whose replacement is nil or NaN: never a table key */
  idlist nilc;
};

/* the encoder's buffers go (an error left it unusable); raises */
LMP_INTERNAL void lmp_enc_nomem(lmp_enc *E);

/* room for n more bytes; returns where they go */
static inline char *room(lmp_enc *E, size_t n) {
  if (E->buf.cap - E->buf.n < n && lmp_buf_grow(&E->buf, n) != 0)
    lmp_enc_nomem(E);
  return E->buf.p + E->buf.n;
}

static inline void put(lmp_enc *E, const void *p, size_t n) {
  memcpy(room(E, n), p, n);
  E->buf.n += n;
}

static inline void putbyte(lmp_enc *E, int c) {
  if (E->buf.n == E->buf.cap && lmp_buf_grow(&E->buf, 1) != 0)
    lmp_enc_nomem(E);
  E->buf.p[E->buf.n++] = (char)c;
}

static inline void putvarint(lmp_enc *E, uint64_t v) {
  char *p = room(E, LMP_VARINT_MAX);
  E->buf.n += (size_t)lmp_varint_put(p, v);
}

static inline void putlstring(lmp_enc *E, const char *s, size_t n) {
  putvarint(E, n);
  put(E, s, n);
}

#endif
