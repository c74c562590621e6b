/*
** encode.h -- the encoder: Lua values -> one value message (wire.h).
** Builds on wire.h, phash.h, libvals.h and ident.h.
*/
#ifndef LMP_ENCODE_H
#define LMP_ENCODE_H

#include "ident.h"
#include "libvals.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lmp_enc lmp_enc;

/*
** An encoder belongs to a userdata pushed on the stack, so an error
** anywhere frees its buffers at the next collection.  `zerocopy`: large
** strings are written from the Lua strings themselves, which must then
** stay alive until lmp_enc_writeframe is done.
*/
LMP_INTERNAL lmp_enc *lmp_enc_new(lua_State *L, int zerocopy);
/* the encoder kept in registry[key] (or a new one), pushed and reset;
   lmp_enc_give(L, idx, key) ends the message and keeps it again */
LMP_INTERNAL lmp_enc *lmp_enc_take(lua_State *L, const void *key,
                                   int zerocopy);
LMP_INTERNAL void lmp_enc_give(lua_State *L, int idx, const void *key);
/* starts the next message, from thread L (and ends the last one) */
LMP_INTERNAL void lmp_enc_reset(lmp_enc *E, lua_State *L);
/* bytes before the message (a protocol header: wire.h) */
LMP_INTERNAL void lmp_enc_raw(lmp_enc *E, const void *p, size_t n);
/* the message header; LMP_COUNT_LATER: the count comes with lmp_enc_count */
#define LMP_COUNT_LATER ((size_t)-1)
LMP_INTERNAL void lmp_enc_begin(lmp_enc *E, size_t nvalues);
LMP_INTERNAL void lmp_enc_count(lmp_enc *E, size_t nvalues);
/* objects the receiver shares (ident.h): ids up to identmax travel as
   ids; 0: none; LMP_IDENT_ALL: all, and a function's _ENV table gets one */
#define LMP_IDENT_ALL UINT64_MAX
LMP_INTERNAL void lmp_enc_ident(lmp_enc *E, uint64_t identmax);
/* encodes the value at idx; on error raises "lmp: cannot serialize ... at
   <root>[<rootindex>]..." (rootindex < 0: the path starts at <root>) */
LMP_INTERNAL void lmp_enc_value(lmp_enc *E, int idx, const char *root,
                                lua_Integer rootindex);
LMP_INTERNAL size_t lmp_enc_size(lmp_enc *E);
/* drops what was encoded after byte n (when nothing went zero-copy) */
LMP_INTERNAL void lmp_enc_truncate(lmp_enc *E, size_t n);
/* writes one frame (wire.h) of everything since the reset: 0 / -1 errno */
LMP_INTERNAL int lmp_enc_writeframe(lmp_enc *E, int fd);
/* everything since the reset, in one buffer (copies zero-copy pieces) */
LMP_INTERNAL const char *lmp_enc_flatten(lmp_enc *E, size_t *len);

/* 1: a Lua function whose upvalues are only _G, library values or objects
   its receiver shares (ids up to identmax) -- a worker may keep it */
LMP_INTERNAL int lmp_fn_stateless(lua_State *L, int idx, uint64_t identmax);

#endif
