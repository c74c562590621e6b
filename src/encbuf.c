/*
** encbuf.c -- the encoder's life (made, kept, reset), its buffers, and
** whole messages: header, count, flattening, writing a frame.  Values are
** encode.c's.
*/
#include "encode_i.h"

#include <stdlib.h>

/* ====================================================================== */
/* the encoder's life                                                     */
/* ====================================================================== */
static void enc_release(lmp_enc *E) {
  lmp_buf_free(&E->buf);
  lmp_ph_free(&E->skeys);
  lmp_ph_free(&E->checked);
  lmp_ph_free(&E->refs);
  lmp_ph_free(&E->upv);
  free(E->tagat);
  E->tagat = NULL;
  E->tagn = E->tagcap = 0;
  free(E->segs);
  E->segs = NULL;
  E->nsegs = E->capsegs = 0;
  free(E->nilc.v);
  free(E->open.v);
  memset(&E->nilc, 0, sizeof E->nilc);
  memset(&E->open, 0, sizeof E->open);
}

/* the registry entries this message holds: its anchors and its map */
static void enc_unanchor(lmp_enc *E, lua_State *L) {
  if (E->knownready) {
    lua_pushnil(L);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, &E->known);
    E->knownready = 0;
  }
  if (E->anchor) {
    lua_pushnil(L);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, E);
    E->anchor = 0;
  }
}

static int box_gc(lua_State *L) {
  lmp_enc *E = (lmp_enc *)luaL_checkudata(L, 1, LMP_ENCBOX);
  enc_release(E);
  enc_unanchor(E, L);
  return 0;
}

lmp_enc *lmp_enc_new(lua_State *L, int zerocopy) {
  lmp_enc *E = (lmp_enc *)lmp_newud(L, sizeof *E, 1);
  memset(E, 0, sizeof *E);
  E->L = L;
  E->zerocopy = zerocopy;
  if (luaL_newmetatable(L, LMP_ENCBOX)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return E;
}

/*
** It stays out of the registry while in use, so a nested user (a
** __serialize that calls mp.encode) makes its own; one lost to an error
** is collected.
*/
lmp_enc *lmp_enc_take(lua_State *L, const void *key, int zerocopy) {
  lmp_enc *E;
  if (lmp_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TUSERDATA) {
    E = (lmp_enc *)lua_touserdata(L, -1);
    lua_pushnil(L);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, key);
  } else {
    lua_pop(L, 1);
    E = lmp_enc_new(L, zerocopy);
  }
  lmp_enc_reset(E, L);
  return E;
}

void lmp_enc_give(lua_State *L, int idx, const void *key) {
  lmp_enc *E = (lmp_enc *)lua_touserdata(L, idx);
  idx = lmp_absindex(L, idx);
  lmp_enc_reset(E, L);
  lua_pushvalue(L, idx);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, key);
  lua_remove(L, idx);
}

/*
** Buffers are kept from one message to the next (a pool sends messages
** back to back; fresh pages cost a fault each), within bounds: the byte
** buffer up to ENC_KEEP bytes and the tag array up to TAG_KEEP entries;
** bigger ones, or ones more than 8 times too big for every message of the
** last DECAY, are freed (the maps bound themselves: phash.c).
*/
#define ENC_KEEP ((size_t)16 << 20)
#define TAG_KEEP ((size_t)1 << 20)
#define DECAY 32

void lmp_enc_reset(lmp_enc *E, lua_State *L) {
  E->L = L;                            /* the thread using it now */
  if (E->buf.n > E->peak) E->peak = E->buf.n;
  if (E->buf.cap > ENC_KEEP) lmp_buf_free(&E->buf);
  if (E->buf.n > 0 && ++E->clears >= DECAY) {
    if (E->buf.cap > 65536 && E->buf.cap > 8 * E->peak) lmp_buf_free(&E->buf);
    E->clears = 0;
    E->peak = 0;
  }
  E->buf.n = 0;
  lmp_ph_clear(&E->refs);
  lmp_ph_clear(&E->upv);
  lmp_ph_clear(&E->skeys);
  lmp_ph_clear(&E->checked);
  E->nrefs = 0;
  E->tagn = 0;
  if (E->tagcap > TAG_KEEP) {
    free(E->tagat);
    E->tagat = NULL;
    E->tagcap = 0;
  }
  E->depth = 0;
  E->nsegs = 0;
  E->extbytes = 0;
  E->knownfresh = 0;
  E->open.n = 0;
  E->nilc.n = 0;
  enc_unanchor(E, L);                  /* what the last message kept */
}

void lmp_enc_nomem(lmp_enc *E) {
  enc_release(E);
  lmp_error(E->L, "lmp: not enough memory to encode");
}

void lmp_enc_raw(lmp_enc *E, const void *p, size_t n) { put(E, p, n); }

size_t lmp_enc_size(lmp_enc *E) { return E->buf.n + E->extbytes; }

void lmp_enc_truncate(lmp_enc *E, size_t n) {
  if (E->nsegs == 0 && n <= E->buf.n) E->buf.n = n;
}

/* ====================================================================== */
/* messages                                                               */
/* ====================================================================== */
void lmp_enc_begin(lmp_enc *E, size_t nvalues) {
  char h[LMP_HEADER_MAX];
  int later = nvalues == LMP_COUNT_LATER;
  lmp_pushglobals(E->L);
  E->globals = lua_topointer(E->L, -1);
  lua_pop(E->L, 1);
  E->countat = E->buf.n;
  put(E, h, lmp_wire_header(h, later ? 0 : (uint64_t)nvalues, later));
}

void lmp_enc_count(lmp_enc *E, size_t nvalues) {
  lmp_wire_setcount(E->buf.p + E->countat, (uint64_t)nvalues);
}

const char *lmp_enc_flatten(lmp_enc *E, size_t *len) {
  size_t i, total = E->buf.n + E->extbytes, pos = 0, from = 0;
  char *out;
  if (E->nsegs == 0) {
    *len = E->buf.n;
    return E->buf.p;
  }
  out = (char *)malloc(total ? total : 1);
  if (out == NULL) lmp_enc_nomem(E);
  for (i = 0; i < E->nsegs; i++) {
    memcpy(out + pos, E->buf.p + from, E->segs[i].off - from);
    pos += E->segs[i].off - from;
    from = E->segs[i].off;
    memcpy(out + pos, E->segs[i].p, E->segs[i].n);
    pos += E->segs[i].n;
  }
  memcpy(out + pos, E->buf.p + from, E->buf.n - from);
  free(E->buf.p);
  E->buf.p = out;
  E->buf.n = E->buf.cap = total;
  E->nsegs = 0;
  E->extbytes = 0;
  *len = total;
  return E->buf.p;
}

/* one frame, written with writev straight from the Lua strings */
int lmp_enc_writeframe(lmp_enc *E, int fd) {
  char hdr[LMP_FRAME_HDR];
  struct iovec iov[64];
  size_t si = 0, from = 0;
  int n = 1;
  lmp_frame_header(hdr, (uint64_t)(E->buf.n + E->extbytes));
  iov[0].iov_base = hdr;
  iov[0].iov_len = LMP_FRAME_HDR;
  for (;;) {
    while (n < 62 && (si < E->nsegs || from < E->buf.n)) {
      size_t upto = si < E->nsegs ? E->segs[si].off : E->buf.n;
      if (upto > from) {
        iov[n].iov_base = E->buf.p + from;
        iov[n].iov_len = upto - from;
        n++;
      }
      from = upto;
      if (si < E->nsegs) {
        iov[n].iov_base = (void *)E->segs[si].p;
        iov[n].iov_len = E->segs[si].n;
        n++;
        si++;
      }
    }
    if (n == 0) return 0;
    if (lmp_writevall(fd, iov, n) != 0) return -1;
    n = 0;
  }
}
