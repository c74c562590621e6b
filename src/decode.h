/*
** decode.h -- the decoder: one value message (wire.h) -> Lua values.  It
** never crashes or reads out of bounds on hostile input; every failure is
** an "lmp: decode: ..." error.  Builds on wire.h, libvals.h and ident.h.
*/
#ifndef LMP_DECODE_H
#define LMP_DECODE_H

#include "ident.h"
#include "libvals.h"
#include "wire.h"

#include <stddef.h>

#define LMP_DEC_FUNCTIONS 1   /* accept bytecode */
#define LMP_DEC_REQUIRE   2   /* require modules the message names */
#define LMP_DEC_IDENT     4   /* accept objects shared across fork */
/* lmp's own pipes: the peer is a process of ours */
#define LMP_DEC_TRUSTED   (LMP_DEC_FUNCTIONS | LMP_DEC_REQUIRE | LMP_DEC_IDENT)

typedef struct lmp_dec {
  lua_State *L;
  const unsigned char *p, *end;
  int refs;             /* stack index of the ref table, 0 = not created */
  lua_Integer nrefs;
  int depth;
  int flags;            /* LMP_DEC_* */
  size_t budget;        /* table slots still allowed to be preallocated */
  int oddrefs;          /* custom values kept that are nil or numbers: a
                           back-reference may then be a bad table key */
} lmp_dec;

/* reads the header (pushes the ref table); returns the number of values */
LMP_INTERNAL size_t lmp_dec_begin(lmp_dec *D, lua_State *L, const char *p,
                                  size_t len, int flags);
LMP_INTERNAL void lmp_dec_value(lmp_dec *D);   /* pushes one value */
/* checks that nothing follows; drops the ref table */
LMP_INTERNAL void lmp_dec_end(lmp_dec *D);

#endif
