/*
** codec.c -- lmp's wire format: mp.encode / mp.decode and the encoder and
** decoder that carry tasks, arguments, results and errors between processes.
**
** Message = "LMP" <version byte> <varint count> <value>*
** See doc/design.md and README.md for the value grammar and guarantees.
*/
#include "lmp.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define VERSION 1

enum {
  T_NIL = 0, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TAB, T_REF, T_META,
  T_CUSTOM, T_FUNC, T_GLOBALS, T_NAMED, T_JOIN, T_MTVAL, T_SKEY,
  T_TABR,               /* a table that a later T_REF points to */
  T_INHERITED,          /* an object the receiver inherited (lmp_ident) */
  T_MAX
};

/* strings at least this long are written from the Lua string itself */
#define ZEROCOPY_MIN (64 * 1024)

#define KEY_METABYNAME "lmp.mt.byname"
#define KEY_METABYMT   "lmp.mt.bymt"
#define KEY_KNOWN      "lmp.known"
#define KEY_METAVER    "lmp.mt.version"

/* ====================================================================== */
/* pointer hash: table/function/upvalue identity -> integer               */
/* ====================================================================== */
typedef struct pslot {
  const void *k;
  uint32_t gen;         /* the slot is empty unless gen is the table's */
  uint32_t v;
} pslot;

/*
** An encoder's maps live across messages: a message clears them by moving
** to the next generation, O(1) however big they grew, instead of wiping
** them (a pool sends thousands of small messages after one big one).
*/
typedef struct phash {
  pslot *s;             /* key and value side by side: one cache miss */
  size_t cap, n;        /* cap is 0 or a power of two; n: live entries */
  uint32_t gen;
  size_t peak;          /* largest n of the messages since the last check */
  unsigned clears;
} phash;

#define PH_LIVE(h, i) ((h)->s[i].gen == (h)->gen && (h)->s[i].k != NULL)

/*
** No mixing: objects allocated one after the other (the tables of one big
** value, mostly) land in nearby slots, so the table is walked almost in
** order instead of missing the cache on every lookup.  Heap pointers are
** distinct and 16-byte aligned, so clusters stay short.
*/
static size_t ph_slot(const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p >> 4;
  h ^= h >> 24;                         /* fold in high bits for huge caps */
  return (size_t)h & (cap - 1);
}

static lua_Integer ph_get(const phash *h, const void *p) {
  size_t i;
  if (h->cap == 0) return 0;
  for (i = ph_slot(p, h->cap); PH_LIVE(h, i); i = (i + 1) & (h->cap - 1))
    if (h->s[i].k == p) return (lua_Integer)h->s[i].v;
  return 0;
}

static void ph_free(phash *h) {
  free(h->s);
  h->s = NULL;
  h->cap = h->n = 0;
}

static int ph_grow(phash *h) {
  size_t ncap = h->cap ? h->cap * 2 : 64, i;
  pslot *ns = (pslot *)calloc(ncap, sizeof *ns);
  if (ns == NULL) return -1;
  for (i = 0; i < h->cap; i++) {
    if (PH_LIVE(h, i)) {
      size_t j = ph_slot(h->s[i].k, ncap);
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

/*
** Returns the value of p if present; else stores v (> 0) for p and returns
** 0.  -1 (with nothing stored) when out of memory or v does not fit.
*/
static lua_Integer ph_getput(phash *h, const void *p, lua_Integer v) {
  size_t i;
  if ((h->n + 1) * 2 > h->cap && ph_grow(h) != 0) return -1;
  for (i = ph_slot(p, h->cap); PH_LIVE(h, i); i = (i + 1) & (h->cap - 1))
    if (h->s[i].k == p) return (lua_Integer)h->s[i].v;
  if (v > (lua_Integer)UINT32_MAX) return -1;
  h->s[i].k = p;
  h->s[i].gen = h->gen;
  h->s[i].v = (uint32_t)v;
  h->n++;
  return 0;
}

static int ph_put(phash *h, const void *p, lua_Integer v) {
  return ph_getput(h, p, v) < 0 ? -1 : 0;
}

/*
** Empties the map for the next message.  Memory is kept for the messages
** to come, within bounds: a map bigger than PH_KEEP slots goes at once,
** and one that was more than 8 times too big for every message of the
** last PH_DECAY goes too.
*/
#define PH_KEEP  (1u << 19)    /* 8 MiB of slots */
#define PH_DECAY 64
static void ph_clear(phash *h) {
  if (h->n > h->peak) h->peak = h->n;
  if (h->cap > PH_KEEP) {
    ph_free(h);
    h->peak = 0;
    return;
  }
  if (++h->clears >= PH_DECAY) {
    if (h->cap > 4096 && h->cap > 16 * h->peak) ph_free(h);
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

/* ====================================================================== */
/* buffers                                                                */
/* ====================================================================== */
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

/* ====================================================================== */
/* encoder                                                                */
/* ====================================================================== */
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

struct lmp_enc {
  lua_State *L;
  lmp_buf buf;
  phash refs;           /* table/function/custom -> ref id */
  phash upv;            /* upvalue id -> func ref id * 256 + upvalue index */
  phash skeys;          /* short string keys -> ref id */
  phash checked;        /* library values found current in this message */
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
  int knownready;       /* known-values map checked during this message */
  int knownfresh;       /* ... and built anew during it */
  struct known *known;
  const void *globals;  /* the globals table travels as T_GLOBALS */
  const char *root;
  lua_Integer rootindex;
  size_t countat;       /* where lmp_enc_begin wrote the value count */
  size_t peak;          /* biggest message since the last decay check */
  unsigned clears;
  /* identity across fork (see lmp_ident_*): objects registered up to
     identmax travel by id; LMP_IDENT_ALL also registers a function's
     _ENV table on the way (mp.encode) */
  uint64_t identmax;
  struct ident *ident;  /* the registry's, fetched once per message */
  /* custom values being written (a __serialize result must not refer back
     to its own value: it would decode as a dangling reference) */
  lua_Integer *open;
  size_t nopen, capopen;
  /* custom values whose replacement is nil or NaN: never a table key */
  lua_Integer *nilc;
  size_t nnilc, capnilc;
};

static void enc_release(lmp_enc *E) {
  lmp_buf_free(&E->buf);
  ph_free(&E->skeys);
  ph_free(&E->checked);
  ph_free(&E->refs);
  ph_free(&E->upv);
  free(E->tagat);
  E->tagat = NULL;
  E->tagn = E->tagcap = 0;
  free(E->segs);
  E->segs = NULL;
  E->nsegs = E->capsegs = 0;
  free(E->nilc);
  E->nilc = NULL;
  E->nnilc = E->capnilc = 0;
  free(E->open);
  E->open = NULL;
  E->nopen = E->capopen = 0;
}

static int box_gc(lua_State *L) {
  lmp_enc *E = (lmp_enc *)luaL_checkudata(L, 1, LMP_ENCBOX);
  enc_release(E);
  if (E->anchor) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, E);
    E->anchor = 0;
  }
  if (E->knownready) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &E->known);
    E->knownready = 0;
  }
  return 0;
}

lmp_enc *lmp_enc_new(lua_State *L, int zerocopy) {
  lmp_enc *E = (lmp_enc *)lua_newuserdatauv(L, sizeof *E, 1);
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
** Buffers are kept from one message to the next (a pool sends messages
** back to back; fresh pages cost a fault each), within bounds: the byte
** buffer up to ENC_KEEP bytes and the table-tag array up to TAG_KEEP
** entries; bigger ones, or ones far bigger than every message of the last
** PH_DECAY, are freed.
*/
#define ENC_KEEP ((size_t)16 << 20)
#define TAG_KEEP ((size_t)1 << 20)

/*
** The encoder kept under registry[key] (a new one if there is none), on
** the stack and reset for a message from L.  It stays out of the registry
** while in use, so a nested user (a __serialize that calls mp.encode) makes
** its own; lmp_enc_give puts it back.  One lost to an error is collected.
*/
lmp_enc *lmp_enc_take(lua_State *L, const void *key, int zerocopy) {
  lmp_enc *E;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TUSERDATA) {
    E = (lmp_enc *)lua_touserdata(L, -1);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  } else {
    lua_pop(L, 1);
    E = lmp_enc_new(L, zerocopy);
  }
  lmp_enc_reset(E, L);
  return E;
}

/* ends the message (its anchors go) and keeps the encoder at idx */
void lmp_enc_give(lua_State *L, int idx, const void *key) {
  lmp_enc *E = (lmp_enc *)lua_touserdata(L, idx);
  idx = lua_absindex(L, idx);
  lmp_enc_reset(E, L);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  lua_remove(L, idx);
}

void lmp_enc_reset(lmp_enc *E, lua_State *L) {
  E->L = L;                            /* the thread using it now */
  if (E->buf.n > E->peak) E->peak = E->buf.n;
  if (E->buf.cap > ENC_KEEP) lmp_buf_free(&E->buf);
  if (E->buf.n > 0 && ++E->clears >= PH_DECAY) {
    if (E->buf.cap > 65536 && E->buf.cap > 8 * E->peak) lmp_buf_free(&E->buf);
    E->clears = 0;
    E->peak = 0;
  }
  E->buf.n = 0;
  ph_clear(&E->refs);
  ph_clear(&E->upv);
  ph_clear(&E->skeys);
  ph_clear(&E->checked);
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
  E->nopen = 0;
  E->nnilc = 0;
  if (E->knownready) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &E->known);
    E->knownready = 0;
  }
  if (E->anchor) {     /* drop references kept for the last message */
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, E);
    E->anchor = 0;
  }
}

static void enc_nomem(lmp_enc *E) {
  enc_release(E);
  lmp_error(E->L, "lmp: not enough memory to encode");
}

/* room for n more bytes; returns where they go */
static char *room(lmp_enc *E, size_t n) {
  if (E->buf.cap - E->buf.n < n && lmp_buf_grow(&E->buf, n) != 0)
    enc_nomem(E);
  return E->buf.p + E->buf.n;
}

static void put(lmp_enc *E, const void *p, size_t n) {
  memcpy(room(E, n), p, n);
  E->buf.n += n;
}

static void putbyte(lmp_enc *E, int c) {
  if (E->buf.n == E->buf.cap && lmp_buf_grow(&E->buf, 1) != 0)
    enc_nomem(E);
  E->buf.p[E->buf.n++] = (char)c;
}

static int varint_len(uint64_t v) {
  int n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}

/* writes v in exactly `width` bytes (padded LEB128 is still valid) */
static void put_varint_at(char *p, uint64_t v, int width) {
  int i;
  for (i = 0; i < width - 1; i++) {
    p[i] = (char)((v & 0x7f) | 0x80);
    v >>= 7;
  }
  p[width - 1] = (char)(v & 0x7f);
}

/* writes v at p (10 bytes of room) and returns its length */
static int put_varint(char *p, uint64_t v) {
  int n = 0;
  while (v >= 0x80) {
    p[n++] = (char)((v & 0x7f) | 0x80);
    v >>= 7;
  }
  p[n++] = (char)v;
  return n;
}

static void putvarint(lmp_enc *E, uint64_t v) {
  char *p = room(E, 10);
  E->buf.n += (size_t)put_varint(p, v);
}

void lmp_enc_raw(lmp_enc *E, const void *p, size_t n) { put(E, p, n); }

size_t lmp_enc_size(lmp_enc *E) { return E->buf.n + E->extbytes; }

void lmp_enc_truncate(lmp_enc *E, size_t n) {
  if (E->nsegs == 0 && n <= E->buf.n) E->buf.n = n;
}

/*
** Fills a count reserved `width` bytes wide at `at`; when the count needs
** more room, the bytes after it move (rare: only for big tables).
*/
static int patch_count(lmp_enc *E, size_t at, int width, uint64_t v,
                       lua_Integer after) {
  int need = varint_len(v);
  size_t i;
  if (need > width) {
    size_t extra = (size_t)(need - width);
    if (E->buf.cap - E->buf.n < extra && lmp_buf_grow(&E->buf, extra) != 0)
      enc_nomem(E);
    memmove(E->buf.p + at + need, E->buf.p + at + width,
            E->buf.n - at - (size_t)width);
    E->buf.n += extra;
    for (i = 0; i < E->nsegs; i++)
      if (E->segs[i].off > at) E->segs[i].off += extra;
    /* tables opened after `after` sit in the moved bytes */
    for (i = (size_t)after + 1; i < E->tagn; i++)
      if (E->tagat[i] > at) E->tagat[i] += extra;
    width = need;
  }
  put_varint_at(E->buf.p + at, v, width);
  return width;
}

/* ---------------------------------------------------------------------- */
/* error paths                                                            */
/* ---------------------------------------------------------------------- */
static int is_ident(const char *s, size_t n) {
  size_t i;
  static const char *const reserved[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for",
    "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat",
    "return", "then", "true", "until", "while", NULL
  };
  if (n == 0 || n > 40 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') ||
                            (s[0] >= 'A' && s[0] <= 'Z')))
    return 0;
  for (i = 1; i < n; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9')))
      return 0;
  }
  for (i = 0; reserved[i]; i++)
    if (strlen(reserved[i]) == n && memcmp(reserved[i], s, n) == 0) return 0;
  return 1;
}

static void add_key(luaL_Buffer *b, lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n, i;
      const char *s = lua_tolstring(L, idx, &n);
      if (is_ident(s, n)) {
        luaL_addchar(b, '.');
        luaL_addlstring(b, s, n);
        return;
      }
      luaL_addstring(b, "[\"");
      for (i = 0; i < n && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
          luaL_addchar(b, '\\');
          luaL_addchar(b, (char)c);
        } else if (c < 32 || c >= 127) {
          char esc[8];
          snprintf(esc, sizeof esc, "\\%d", c);
          luaL_addstring(b, esc);
        } else luaL_addchar(b, (char)c);
      }
      if (n > 40) luaL_addstring(b, "...");
      luaL_addstring(b, "\"]");
      return;
    }
    case LUA_TNUMBER: case LUA_TBOOLEAN:
      luaL_addchar(b, '[');
      luaL_tolstring(L, idx, NULL);
      luaL_addvalue(b);
      luaL_addchar(b, ']');
      return;
    default:
      luaL_addstring(b, "[<");
      luaL_addstring(b, luaL_typename(L, idx));
      luaL_addstring(b, ">]");
  }
}

/* pushes the path of the value as a string like args[2].conn */
static void push_path(lmp_enc *E, const epath *path) {
  lua_State *L = E->L;
  const epath *segs[16];
  int n = 0, total = 0, i;
  const epath *p;
  luaL_Buffer b;
  for (p = path; p != NULL; p = p->up) total++;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, E->root);
  if (E->rootindex >= 0) {
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)E->rootindex);
    luaL_addvalue(&b);
  }
  /* innermost segments are the useful ones when the chain is long */
  for (p = path; p != NULL && n < 16; p = p->up) segs[n++] = p;
  if (total > n) luaL_addstring(&b, "...");
  for (i = n - 1; i >= 0; i--) {
    p = segs[i];
    switch (p->kind) {
      case P_INDEX:
        lua_pushfstring(L, "[%I]", (LUAI_UACINT)p->i);
        luaL_addvalue(&b);
        break;
      case P_KEY: add_key(&b, L, p->idx); break;
      case P_UPVAL:
        luaL_addstring(&b, "<upvalue ");
        luaL_addstring(&b, (p->s && *p->s) ? p->s : "?");
        luaL_addchar(&b, '>');
        break;
      case P_ISKEY: luaL_addstring(&b, "<key>"); break;
      case P_CUSTOM: luaL_addstring(&b, "<__serialize>"); break;
      case P_META: luaL_addstring(&b, "<metatable>"); break;
    }
  }
  luaL_pushresult(&b);
}

/* the buffer is kept: the box frees it, and a pool keeps the items
   encoded before the bad one */
static void enc_fail(lmp_enc *E, const epath *path, const char *what) {
  lua_State *L = E->L;
  const epath *p, *env = NULL;
  /* inside a function's environment (the outermost one): the path through
     it (busted's runtime, a sandbox's innards) would only confuse */
  for (p = path; p != NULL; p = p->up)
    if (p->kind == P_UPVAL && p->s != NULL && strcmp(p->s, "_ENV") == 0)
      env = p;
  if (env != NULL) {
    push_path(E, env);
    lmp_error(L, "lmp: cannot serialize the environment of %s: it is not _G, "
                 "the receiving process has no copy of it (it was created "
                 "after the pool or process started), and it cannot be "
                 "copied (it holds a %s). Create the pool after this "
                 "environment exists, or define the function under _G",
              lua_tostring(L, -1), what);
  }
  push_path(E, path);
  lmp_error(L, "lmp: cannot serialize %s at %s", what, lua_tostring(L, -1));
}

/* ---------------------------------------------------------------------- */
/* library values travel by name                                          */
/* ---------------------------------------------------------------------- */
/*
** The map from library values (package.loaded[mod], and the C functions
** and userdata directly inside those modules) to their names lives in the
** registry (a Lua table that also keeps the values alive, so a pointer in
** the C hash can never be reused by another object) and is rebuilt when the
** number of loaded modules changes.
*/
#define BLOOM_BITS 4096
struct known {
  phash h;
  uint64_t bloom[BLOOM_BITS / 64];   /* most values are not library ones:
                                        one bit test says so, cheaper than
                                        a probe of h */
  lua_Integer nloaded;
  lua_Integer mtver;    /* mp.register calls seen */
};
typedef struct known known;

static unsigned bloom_bit(const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ULL)
                    >> 52);            /* 12 bits: BLOOM_BITS */
}

static int known_gc(lua_State *L) {
  known *K = (known *)lua_touserdata(L, 1);
  ph_free(&K->h);
  return 0;
}

/*
** A fingerprint of package.loaded (its names and values): the map is
** rebuilt when a module is loaded, unloaded or replaced.
*/
static lua_Integer count_loaded(lua_State *L, int loaded) {
  uint64_t h = 1469598103934665603ULL;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    uint64_t k = (uint64_t)(uintptr_t)lua_topointer(L, -2);
    uint64_t v = (uint64_t)(uintptr_t)lua_topointer(L, -1);
    h += (k * 0x9e3779b97f4a7c15ULL) ^ (v + 0x632be59bd9b4e019ULL);
    lua_pop(L, 1);
  }
  return (lua_Integer)h;
}

static void known_add(lua_State *L, known *K, int names, int v,
                      int mod, int key) {
  const void *p = lua_topointer(L, v);
  lua_Integer i;
  if (p == NULL || ph_get(&K->h, p) != 0) return;
  i = (lua_Integer)luaL_len(L, names) + 1;
  lua_pushvalue(L, mod);
  lua_rawseti(L, names, i);            /* names[i] = module name */
  if (key > 0) lua_pushvalue(L, key);
  else lua_pushboolean(L, key < 0);    /* true: a registered metatable */
  lua_rawseti(L, names, i + 1);        /* names[i+1] = key or false */
  lua_pushvalue(L, v);
  lua_rawseti(L, names, i + 2);        /* names[i+2] = the value (anchor) */
  if (ph_put(&K->h, p, i) != 0) lmp_error(L, "lmp: not enough memory");
  K->bloom[bloom_bit(p) / 64] |= (uint64_t)1 << (bloom_bit(p) % 64);
}

static int known_isnamed(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return (t == LUA_TFUNCTION && lua_iscfunction(L, idx)) || t == LUA_TUSERDATA;
}

/* pushes the `known` userdata, rebuilt if modules were loaded since (or
   if `force`: a module's members changed, which the fingerprint misses) */
static known *known_get(lua_State *L, int force) {
  known *K;
  lua_Integer n, ver;
  int top = lua_gettop(L), loaded, names;
  luaL_checkstack(L, 10, NULL);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  loaded = lua_gettop(L);
  n = count_loaded(L, loaded);
  lua_getfield(L, LUA_REGISTRYINDEX, KEY_METAVER);
  ver = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_KNOWN) == LUA_TUSERDATA) {
    K = (known *)lua_touserdata(L, -1);
    if (!force && K->nloaded == n && K->mtver == ver) {
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      return K;
    }
  }
  lua_pop(L, 1);
  K = (known *)lua_newuserdatauv(L, sizeof *K, 1);
  memset(K, 0, sizeof *K);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, known_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_newtable(L);
  names = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {        /* mod, value */
    int mod = lua_gettop(L) - 1, val = lua_gettop(L);
    if (lua_type(L, mod) == LUA_TSTRING &&
        (lua_istable(L, val) || known_isnamed(L, val))) {
      known_add(L, K, names, val, mod, 0);
      if (lua_istable(L, val)) {
        lua_pushnil(L);
        while (lua_next(L, val)) {     /* key, member */
          if (lua_type(L, -2) == LUA_TSTRING && known_isnamed(L, -1))
            known_add(L, K, names, lua_gettop(L), mod, lua_gettop(L) - 1);
          lua_pop(L, 1);
        }
      }
    }
    lua_pop(L, 1);
  }
  /* registered metatables themselves travel by name too */
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_METABYNAME) == LUA_TTABLE) {
    int byname = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, byname)) {
      known_add(L, K, names, lua_gettop(L), lua_gettop(L) - 1, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_setiuservalue(L, -2, 1);
  K->nloaded = n;
  K->mtver = ver;
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, KEY_KNOWN);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return K;
}

/* ---------------------------------------------------------------------- */
/* identity across fork                                                   */
/* ---------------------------------------------------------------------- */
/*
** A forked child has its parent's objects as they were at the fork.  An
** object registered here travels as an id, and the receiver uses its own
** copy: a task's _ENV table (found on the stack when a pool starts, see
** lmp_ident_scan) or, later, an IPC object (registered when it is made).
** Ids count up (seq, inherited with the registry, so a process and its
** children count on from the same point) and carry a per-process salt (a
** child's later ids differ from its parent's).  A sender knows which ids
** its receiver shares: those given out before the receiver was forked, or
** before the channel between them existed -- the encoder's identmax.
** Both maps are weak: an object nobody holds any more needs no id.
*/
#define KEY_IDENT "lmp.ident"
struct ident {
  uint64_t seq;         /* ids given out so far */
  uint32_t salt;
  uint64_t bloom[BLOOM_BITS / 64];   /* registered tables: most tables a
                                        message holds are not, and one bit
                                        test says so */
};
typedef struct ident ident;

static uint32_t ident_salt(void) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ (uint32_t)ts.tv_sec;
  }
  return r;
}

/* pushes the ident userdata (created on first use) and returns it */
static ident *ident_push(lua_State *L) {
  ident *I;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, KEY_IDENT) == LUA_TUSERDATA)
    return (ident *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  I = (ident *)lua_newuserdatauv(L, sizeof *I, 2);
  memset(I, 0, sizeof *I);
  I->salt = ident_salt();
  lua_newtable(L);                     /* object -> id, weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, -2, 1);
  lua_newtable(L);                     /* id -> object, weak values */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, KEY_IDENT);
  return I;
}

/* the id of the object at idx, 0 if it has none */
static lua_Integer ident_find(lua_State *L, int idx) {
  lua_Integer id;
  idx = lua_absindex(L, idx);
  ident_push(L);
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, idx);
  id = lua_rawget(L, -2) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 3);
  return id;
}

lua_Integer lmp_ident_register(lua_State *L, int idx) {
  ident *I;
  lua_Integer id = ident_find(L, idx);
  if (id != 0) return id;
  idx = lua_absindex(L, idx);
  I = ident_push(L);
  if (I->seq >= 0x7fffffff) lmp_error(L, "lmp: too many shared objects");
  id = (lua_Integer)((++I->seq << 32) | I->salt);
  if (lua_type(L, idx) == LUA_TTABLE) {
    unsigned b = bloom_bit(lua_topointer(L, idx));
    I->bloom[b / 64] |= (uint64_t)1 << (b % 64);
  }
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, id);
  lua_rawset(L, -3);
  lua_getiuservalue(L, -2, 2);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, id);
  lua_pop(L, 3);
  return id;
}

uint64_t lmp_ident_mark(lua_State *L) {
  uint64_t seq = ident_push(L)->seq;
  lua_pop(L, 1);
  return seq;
}

void lmp_ident_forked(lua_State *L) {
  ident_push(L)->salt = ident_salt();
  lua_pop(L, 1);
}

/* registers the table at idx if it is an environment other than _G */
static void ident_env(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) return;
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  if (!lua_rawequal(L, idx, -1)) lmp_ident_register(L, idx);
  lua_pop(L, 1);
}

/*
** Which environments will a pool's tasks have?  Those of the code creating
** the pool, mostly, and of the code around it -- but that code need not
** use a global itself (busted's `before_each(function() pool = mp.Pool(2)
** end)` has no _ENV upvalue; the spec file's environment is one step away,
** in what busted's frames below hold).  So the search starts at every
** frame of the stack (its function and locals) and goes breadth first
** through upvalues, table entries and metatables, registering each table
** that is some function's _ENV, other than _G.  It is bounded (SCAN_STEPS
** entries in all, SCAN_WIDE per table): functions are looked into before
** tables, so a big data table on the way costs little.
*/
#define SCAN_STEPS 20000
#define SCAN_WIDE  256

typedef struct scan {
  lua_State *L;
  int seen, fq, tq;     /* stack indices: visited set, function and table
                           queues (arrays) */
  lua_Integer fhead, ftail, thead, ttail;
  long steps;
} scan;

/* queues the value on top (pops it) if it is a table or a Lua function */
static void scan_push(scan *sc) {
  lua_State *L = sc->L;
  int t = lua_type(L, -1);
  if ((t == LUA_TFUNCTION && !lua_iscfunction(L, -1)) || t == LUA_TTABLE) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, sc->seen) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, sc->seen);
      if (t == LUA_TFUNCTION) lua_rawseti(L, sc->fq, ++sc->ftail);
      else lua_rawseti(L, sc->tq, ++sc->ttail);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static void scan_frames(scan *sc, lua_State *T) {
  lua_State *L = sc->L;
  lua_Debug ar;
  int level, i;
  for (level = 0; lua_getstack(T, level, &ar); level++) {
    lua_getinfo(T, "f", &ar);
    if (T != L) lua_xmove(T, L, 1);
    scan_push(sc);
    for (i = 1; lua_getlocal(T, &ar, i) != NULL; i++) {
      if (T != L) lua_xmove(T, L, 1);
      scan_push(sc);
    }
  }
}

static void scan_function(scan *sc) {          /* [f] */
  lua_State *L = sc->L;
  const char *name;
  int i;
  for (i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
    sc->steps++;
    if (strcmp(name, "_ENV") == 0) ident_env(L, -1);
    scan_push(sc);
  }
}

static void scan_table(scan *sc) {             /* [t] */
  lua_State *L = sc->L;
  int n = 0, t = lua_gettop(L);
  if (lua_getmetatable(L, t)) scan_push(sc);
  lua_pushnil(L);
  while (n++ < SCAN_WIDE && lua_next(L, t)) {
    sc->steps++;
    lua_pushvalue(L, -2);
    scan_push(sc);                             /* the key */
    scan_push(sc);                             /* the value */
  }
  lua_settop(L, t);
}

void lmp_ident_scan(lua_State *L) {
  scan sc;
  lua_State *M;
  int top = lua_gettop(L);
  luaL_checkstack(L, 16, NULL);
  memset(&sc, 0, sizeof sc);
  sc.L = L;
  lua_newtable(L);
  sc.seen = lua_gettop(L);
  lua_newtable(L);
  sc.fq = lua_gettop(L);
  lua_newtable(L);
  sc.tq = lua_gettop(L);
  scan_frames(&sc, L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (M != NULL && M != L) scan_frames(&sc, M);
  while (sc.steps < SCAN_STEPS) {
    if (sc.fhead < sc.ftail) {
      lua_rawgeti(L, sc.fq, ++sc.fhead);
      scan_function(&sc);
    } else if (sc.thead < sc.ttail) {
      lua_rawgeti(L, sc.tq, ++sc.thead);
      scan_table(&sc);
    } else break;
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/*
** Writes a T_INHERITED for the object at idx if the receiver shares it;
** with LMP_IDENT_ALL, an _ENV table (`env`) is registered first.  A table
** is looked up only when the bloom filter says it may be registered.
*/
static int enc_ident(lmp_enc *E, int idx, int env) {
  lua_State *L = E->L;
  lua_Integer id;
  if (E->identmax == 0) return 0;
  if (E->ident == NULL) {
    E->ident = ident_push(L);
    lua_pop(L, 1);                     /* the registry keeps it */
  }
  if (lua_type(L, idx) == LUA_TTABLE && !env) {
    unsigned b = bloom_bit(lua_topointer(L, idx));
    if (!(E->ident->bloom[b / 64] >> (b % 64) & 1)) return 0;
  }
  if (env && E->identmax == LMP_IDENT_ALL) id = lmp_ident_register(L, idx);
  else {
    id = ident_find(L, idx);
    if (id == 0 || ((uint64_t)id >> 32) > E->identmax) return 0;
  }
  putbyte(E, T_INHERITED);
  putvarint(E, (uint64_t)id);
  return 1;
}

void lmp_enc_ident(lmp_enc *E, uint64_t identmax) { E->identmax = identmax; }

/*
** 1 if the Lua function at idx carries no state of its own: each upvalue is
** the globals table, a library value or an object shared with the receiver
** (all of which a worker has its own copy of).  A pool worker may then keep
** the decoded function for later calls: nothing it could change in it would
** be seen by them.  A nil upvalue is state: the function may assign to it.
*/
int lmp_fn_stateless(lua_State *L, int idx, uint64_t identmax) {
  int i, ok = 1, kidx = 0;
  const void *g;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx)) return 0;
  luaL_checkstack(L, 12, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  g = lua_topointer(L, -1);
  lua_pop(L, 1);
  for (i = 1; ok && lua_getupvalue(L, idx, i) != NULL; i++) {
    int t = lua_type(L, -1);
    const void *p = lua_topointer(L, -1);
    if (t == LUA_TTABLE && p == g) {
      /* the receiver's own */
    } else if (t == LUA_TTABLE || t == LUA_TUSERDATA ||
               (t == LUA_TFUNCTION && lua_iscfunction(L, -1))) {
      if (kidx == 0) {                 /* pushed below the upvalue */
        known_get(L, 0);
        lua_insert(L, -2);
        kidx = lua_gettop(L) - 1;
      }
      ok = ph_get(&((known *)lua_touserdata(L, kidx))->h, p) != 0;
      if (!ok && t != LUA_TFUNCTION && identmax != 0) {
        lua_Integer id = ident_find(L, -1);
        ok = id != 0 && ((uint64_t)id >> 32) <= identmax;
      }
    } else ok = 0;                     /* a value the function could change */
    lua_pop(L, 1);
  }
  if (kidx) lua_pop(L, 1);
  return ok;
}

/* gets the known map for this message (anew if `force`), anchored: a nested
   encode (a __serialize that loads a module) may replace the registry's */
static void enc_known(lmp_enc *E, int force) {
  lua_State *L = E->L;
  E->known = known_get(L, force);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &E->known);
  E->knownready = 1;
  if (force) E->knownfresh = 1;
}

/* 1 if entry i of the known map (its names at `names`) still names p */
static int known_current(lua_State *L, int names, lua_Integer i,
                         const void *p) {
  int ok;
  lua_rawgeti(L, names, i + 1);        /* key, false (module) or true */
  if (lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
    lua_getfield(L, LUA_REGISTRYINDEX, KEY_METABYNAME);
    lua_rawgeti(L, names, i);
    if (lua_istable(L, -2)) lua_rawget(L, -2);
    else lua_pushnil(L);
  } else {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_rawgeti(L, names, i);
    lua_rawget(L, -2);                 /* [key, loaded, module] */
    if (lua_type(L, -3) == LUA_TSTRING) {
      if (lua_istable(L, -1)) {
        lua_pushvalue(L, -3);
        lua_rawget(L, -2);
      } else lua_pushnil(L);
    } else lua_pushvalue(L, -1);
  }
  ok = lua_topointer(L, -1) == p;
  lua_settop(L, names);
  return ok;
}

/*
** Writes a T_NAMED for p if it is a library value.  `rebuild`: on a miss,
** build the map again (once per message) and retry -- for C functions, and
** userdata about to be refused, never for tables.
*/
static int enc_named(lmp_enc *E, const void *p, int rebuild) {
  lua_State *L = E->L;
  lua_Integer i;
  size_t n;
  const char *s;
  if (!E->knownready) enc_known(E, 0);  /* once per message */
  for (;;) {
    i = 0;
    if (E->known->bloom[bloom_bit(p) / 64] >> (bloom_bit(p) % 64) & 1)
      i = ph_get(&E->known->h, p);
    if (i != 0) {
      lua_rawgetp(L, LUA_REGISTRYINDEX, &E->known); /* the map i came from */
      lua_getiuservalue(L, -1, 1);
      if (ph_get(&E->checked, p) != 0) break;       /* this message knows */
      if (known_current(L, lua_gettop(L), i, p)) {
        if (ph_put(&E->checked, p, 1) != 0) enc_nomem(E);
        break;
      }
      lua_pop(L, 2);                   /* its name now means another value */
    } else if (!rebuild)
      return 0;                        /* a plain table, or a userdata that
                                          may have __serialize */
    /* a member added to or replaced in a module since the map was built:
       build it again, once per message */
    if (E->knownfresh) return 0;
    enc_known(E, 1);
  }
  putbyte(E, T_NAMED);
  lua_rawgeti(L, -1, i);
  s = lua_tolstring(L, -1, &n);
  putvarint(E, n);
  put(E, s, n);
  lua_rawgeti(L, -2, i + 1);
  if (lua_type(L, -1) == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &n);
    putbyte(E, 1);
    putvarint(E, n);
    put(E, s, n);
  } else putbyte(E, lua_toboolean(L, -1) ? 2 : 0);
  lua_pop(L, 4);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* values                                                                 */
/* ---------------------------------------------------------------------- */
static int enc_value(lmp_enc *E, int idx, const epath *path);

static void enc_lstring(lmp_enc *E, const char *s, size_t n) {
  putbyte(E, T_STR);
  putvarint(E, n);
  if (E->zerocopy && n >= ZEROCOPY_MIN) {
    if (E->nsegs == E->capsegs) {
      size_t nc = E->capsegs ? E->capsegs * 2 : 8;
      seg *ns = (seg *)realloc(E->segs, nc * sizeof *ns);
      if (ns == NULL) enc_nomem(E);
      E->segs = ns;
      E->capsegs = nc;
    }
    E->segs[E->nsegs].off = E->buf.n;
    E->segs[E->nsegs].p = s;
    E->segs[E->nsegs].n = n;
    E->nsegs++;
    E->extbytes += n;
  } else put(E, s, n);
}

/* the hottest path of big arrays: straight into the buffer */
/* returns 1 for NaN */
static int enc_number(lmp_enc *E, int idx) {
  lua_State *L = E->L;
  char *p = room(E, 11);
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    uint64_t z = ((uint64_t)i << 1) ^ (uint64_t)(i < 0 ? -1 : 0);
    int w = varint_len(z);
    p[0] = T_INT;
    put_varint_at(p + 1, z, w);
    E->buf.n += (size_t)w + 1;
    return 0;
  } else {
    double d = (double)lua_tonumber(L, idx);
    uint64_t u;
    memcpy(&u, &d, 8);
    p[0] = T_FLT;
    lmp_put64(p + 1, u);
    E->buf.n += 9;
    return d != d;
  }
}

/*
** String keys repeat across the records of a message: a short one (Lua
** interns those, so the pointer is the identity) is sent once, then as a
** back-reference, which also spares the receiver hashing it again.
*/
static void enc_short(lmp_enc *E, const char *s, size_t n) {
  lua_Integer id;
  /* s is inside the interned TString, so its address is the identity */
  id = ph_getput(&E->skeys, s, E->nrefs + 1);
  if (id < 0) enc_nomem(E);
  if (id > 0) {
    char *p = room(E, 11);
    p[0] = T_REF;
    E->buf.n += 1 + (size_t)put_varint(p + 1, (uint64_t)id);
    return;
  }
  E->nrefs++;
  putbyte(E, T_SKEY);
  putvarint(E, n);
  put(E, s, n);
}

static void enc_key(lmp_enc *E, int idx) {
  size_t n;
  const char *s = lua_tolstring(E->L, idx, &n);
  if (n > 40) enc_lstring(E, s, n);
  else enc_short(E, s, n);
}

/* 1 if custom value `id` is being written (its __serialize result is) */
static int enc_isopen(lmp_enc *E, lua_Integer id) {
  size_t i;
  for (i = 0; i < E->nopen; i++)
    if (E->open[i] == id) return 1;
  return 0;
}

/* 1 if custom value `id` decodes as nil or NaN */
static int enc_isnilc(lmp_enc *E, lua_Integer id) {
  size_t i;
  for (i = 0; i < E->nnilc; i++)
    if (E->nilc[i] == id) return 1;
  return 0;
}

/* appends v to one of the encoder's id lists */
static void enc_listadd(lmp_enc *E, lua_Integer **a, size_t *n, size_t *cap,
                        lua_Integer v) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 16;
    lua_Integer *na = (lua_Integer *)realloc(*a, nc * sizeof *na);
    if (na == NULL) enc_nomem(E);
    *a = na;
    *cap = nc;
  }
  (*a)[(*n)++] = v;
}

/*
** Writes a back-reference if the object was seen already: returns 0 if not
** (it now has the next id), 1 if a reference was written, 2 if it was and
** the value decodes as nil or NaN (a custom value's replacement).
*/
static int enc_seen(lmp_enc *E, const void *p, const epath *path) {
  lua_Integer id = ph_getput(&E->refs, p, E->nrefs + 1);
  if (id < 0) enc_nomem(E);
  if (id == 0) {
    E->nrefs++;
    return 0;
  }
  if (E->nopen > 0 && enc_isopen(E, id))
    enc_fail(E, path, "value whose __serialize result holds the value itself");
  if ((size_t)id < E->tagn && E->tagat[id] != 0) {
    E->buf.p[E->tagat[id]] = T_TABR;   /* the decoder must keep it */
    E->tagat[id] = 0;
  }
  putbyte(E, T_REF);
  putvarint(E, (uint64_t)id);
  return E->nnilc > 0 && enc_isnilc(E, id) ? 2 : 1;
}

/* remembers where table `id`'s tag is about to be written */
static void enc_tagat(lmp_enc *E, lua_Integer id) {
  size_t need = (size_t)id + 1;
  if (need > E->tagcap) {
    size_t nc = E->tagcap ? E->tagcap * 2 : 4096;
    size_t *nt;
    while (nc < need) nc *= 2;
    nt = (size_t *)realloc(E->tagat, nc * sizeof *nt);
    if (nt == NULL) enc_nomem(E);
    E->tagat = nt;
    E->tagcap = nc;
  }
  if (need > E->tagn) {
    memset(E->tagat + E->tagn, 0, (need - E->tagn) * sizeof *E->tagat);
    E->tagn = need;
  }
  E->tagat[id] = E->buf.n;
}

static void enc_enter(lmp_enc *E, const epath *path) {
  if (++E->depth > LMP_MAXDEPTH)
    enc_fail(E, path, "a value nested more than 1000 levels deep");
  /* room for this level and the next seven (a level takes at most 6
     slots), asked every eighth level: one call, not one per table */
  if ((E->depth & 7) == 1 && !lua_checkstack(E->L, 6 * 8))
    enc_fail(E, path, "a value (stack overflow)");
}

/*
** Keeps the value at idx (a collectable one) alive until the message is
** written: the refs map knows what it wrote by address only, and an object
** freed mid-message (a __serialize runs code that may collect) could have
** its address given to a new one, which the map would take for the old.
** Values held strongly from the message's root need not be kept; these
** are: __serialize replacements, and the entries of weak tables.  In the
** registry (not a stack slot), so any frame can reach it.
*/
static void enc_anchor(lmp_enc *E, int idx) {
  lua_State *L = E->L;
  int t = lua_type(L, idx);
  if (t != LUA_TTABLE && t != LUA_TFUNCTION && t != LUA_TUSERDATA &&
      t != LUA_TTHREAD && t != LUA_TSTRING)   /* short strings are known by
                                                 address too (skeys) */
    return;
  idx = lua_absindex(L, idx);
  if (E->anchor == 0) {
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, E);
    E->anchor = 1;
    E->nanchor = 0;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, E);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, ++E->nanchor);
  lua_pop(L, 1);
}

/*
** The value has a metatable with __serialize (on top of the stack); the
** value's id is `id`.  Returns 1 if it decodes as nil or NaN.
*/
static int enc_custom(lmp_enc *E, int idx, lua_Integer id,
                      const epath *path) {
  lua_State *L = E->L;
  epath sub;
  int mt = lua_gettop(L) - 1, odd;     /* [mt, __serialize] */
  if (!lmp_iscallable(L, -1)) {
    lua_pushfstring(L, "value whose __serialize is a %s, not a function",
                    luaL_typename(L, -1));
    enc_fail(E, path, lua_tostring(L, -1));
  }
  putbyte(E, T_CUSTOM);
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_METABYMT) == LUA_TTABLE) {
    lua_pushvalue(L, mt);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    putvarint(E, n);
    put(E, s, n);
  } else putvarint(E, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);                   /* [mt, replacement] */
  enc_anchor(E, -1);
  sub.up = path;
  sub.kind = P_CUSTOM;
  enc_listadd(E, &E->open, &E->nopen, &E->capopen, id);
  odd = enc_value(E, lua_gettop(L), &sub);
  E->nopen--;
  if (odd) enc_listadd(E, &E->nilc, &E->nnilc, &E->capnilc, id);
  lua_pop(L, 2);
  return odd;
}

/*
** Handles the metatable of the value at idx (whose id is `id`): 1 if the
** value was written (via __serialize), and then *odd says whether it
** decodes as nil or NaN; 0 if the caller writes the body (no metatable, or
** a registered one whose name was just written); 2 if the caller writes the
** body and then the metatable itself, by value (an unregistered one).
*/
static int enc_meta(lmp_enc *E, int idx, lua_Integer id, const epath *path,
                    int *weak, int *odd) {
  lua_State *L = E->L;
  if (!lua_getmetatable(L, idx)) return 0;             /* [mt] */
  if (weak != NULL) {
    lua_pushliteral(L, "__mode");
    *weak = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 1);
  }
  if (lua_getfield(L, -1, "__serialize") != LUA_TNIL) {
    *odd = enc_custom(E, idx, id, path);               /* pops both */
    return 1;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_METABYMT) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);                                 /* [mt, bymt, name] */
  } else lua_pushnil(L);
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    putbyte(E, T_META);
    putvarint(E, n);
    put(E, s, n);
    lua_pop(L, 3);
    return 0;
  }
  lua_pop(L, 3);
  putbyte(E, T_MTVAL);
  return 2;
}

/* returns 1 if the table decodes as nil or NaN (a custom value) */
static int enc_table(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  size_t at, hat;
  int aw, mode, top, weak = 0, odd = 0, seen;
  lua_Unsigned narr = 0, nhash = 0, len;
  lua_Integer tid;
  epath sub;
  const void *p = lua_topointer(L, idx);
  if (p == E->globals) {
    putbyte(E, T_GLOBALS);
    return 0;
  }
  /* library tables and inherited ones are never in refs: check them first */
  if (enc_named(E, p, 0) || enc_ident(E, idx, 0)) return 0;
  if ((seen = enc_seen(E, p, path)) != 0) return seen == 2;
  tid = E->nrefs;
  enc_enter(E, path);
  mode = enc_meta(E, idx, tid, path, &weak, &odd);
  if (mode == 1) {
    E->depth--;
    return odd;
  }
  enc_tagat(E, tid);
  putbyte(E, T_TAB);
  len = (lua_Unsigned)lua_rawlen(L, idx);
  aw = varint_len(len);
  if (E->buf.cap - E->buf.n < (size_t)aw + 1 &&
      lmp_buf_grow(&E->buf, (size_t)aw + 1) != 0)
    enc_nomem(E);
  at = E->buf.n;
  E->buf.n += (size_t)aw + 1;          /* room for both counts */
  hat = 0;
  sub.up = path;
  /* lua_next visits the array part first and in order: that run is the
     array section, everything after it goes as key/value pairs */
  lua_pushnil(L);
  top = lua_gettop(L) + 1;             /* where lua_next leaves the value */
  while (lua_next(L, idx)) {
    int kt = lua_type(L, top - 1), isint = 0;
    /* a float key is never integral (Lua normalizes those), so for a
       number key lua_tointegerx answers "integer?" and "which?" at once */
    if (hat == 0 && kt == LUA_TNUMBER &&
        lua_tointegerx(L, top - 1, &isint) == (lua_Integer)narr + 1 && isint) {
      narr++;
      sub.kind = P_INDEX;
      sub.i = (lua_Integer)narr;
      enc_value(E, top, &sub);
    } else {
      if (hat == 0) hat = at + (size_t)patch_count(E, at, aw, narr, tid);
      nhash++;
      if (kt == LUA_TSTRING) enc_key(E, top - 1);
      else {
        sub.kind = P_ISKEY;
        /* only a custom key can become nil or NaN: the decoder would
           refuse it, so the sender does */
        if (enc_value(E, top - 1, &sub))
          enc_fail(E, &sub, "table key that __serialize turns into nil or NaN");
      }
      sub.kind = P_KEY;
      sub.idx = top - 1;
      enc_value(E, top, &sub);
    }
    if (weak) {                        /* see enc_anchor */
      enc_anchor(E, top - 1);
      enc_anchor(E, top);
    }
    lua_settop(L, top - 1);
  }
  if (hat == 0) hat = at + (size_t)patch_count(E, at, aw, narr, tid);
  patch_count(E, hat, 1, nhash, tid);
  if (mode == 2) {                     /* the metatable, after the body */
    sub.kind = P_META;
    lua_getmetatable(L, idx);
    enc_value(E, lua_gettop(L), &sub);
    lua_pop(L, 1);
  }
  E->depth--;
  return 0;
}

typedef struct dumpst {
  lmp_enc *E;
} dumpst;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  lmp_enc *E = ((dumpst *)ud)->E;
  (void)L;
  put(E, p, n);
  return 0;
}

static void enc_function(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  dumpst ds;
  size_t at;
  int i, nups = 0;
  lua_Integer fid;
  epath sub;
  if (lua_iscfunction(L, idx)) {
    if (enc_named(E, lua_topointer(L, idx), 1)) return;
    enc_fail(E, path, "C function");
  }
  if (enc_seen(E, lua_topointer(L, idx), path)) return;
  fid = E->nrefs;
  if (fid >= ((lua_Integer)1 << 24))   /* upv packs fid * 256 in 32 bits */
    enc_fail(E, path, "function (more than 16 million in one message)");
  enc_enter(E, path);
  putbyte(E, T_FUNC);
  if (E->buf.cap - E->buf.n < 5 && lmp_buf_grow(&E->buf, 5) != 0)
    enc_nomem(E);
  at = E->buf.n;
  E->buf.n += 5;
  ds.E = E;
  lua_pushvalue(L, idx);
  lua_dump(L, dump_writer, &ds, 0);   /* keep debug info for tracebacks */
  lua_pop(L, 1);
  put_varint_at(E->buf.p + at, (uint64_t)(E->buf.n - at - 5), 5);
  while (lua_getupvalue(L, idx, nups + 1) != NULL) {
    lua_pop(L, 1);
    nups++;
  }
  putvarint(E, (uint64_t)nups);
  sub.up = path;
  sub.kind = P_UPVAL;
  for (i = 1; i <= nups; i++) {
    const void *uid = lua_upvalueid(L, idx, i);
    lua_Integer prev = ph_get(&E->upv, uid);
    int v;
    if (prev != 0) {                   /* shared with an earlier closure */
      putbyte(E, T_JOIN);
      putvarint(E, (uint64_t)(prev >> 8));
      putvarint(E, (uint64_t)(prev & 0xff));
      continue;
    }
    if (ph_put(&E->upv, uid, fid * 256 + i) != 0) enc_nomem(E);
    sub.s = lua_getupvalue(L, idx, i);
    v = lua_gettop(L);
    /* the function's environment, when it is not _G, is the receiver's
       copy of it (see lmp_ident_scan) */
    if (!(lua_type(L, v) == LUA_TTABLE && strcmp(sub.s, "_ENV") == 0 &&
          lua_topointer(L, v) != E->globals && enc_ident(E, v, 1)))
      enc_value(E, v, &sub);
    lua_pop(L, 1);
  }
  E->depth--;
}

/* returns 1 if the userdata decodes as nil or NaN (a custom value) */
static int enc_userdata(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  int odd = 0;
  if (enc_named(E, lua_topointer(L, idx), 0) || enc_ident(E, idx, 0))
    return 0;
  if (lua_getmetatable(L, idx)) {
    int has = lua_getfield(L, -1, "__serialize") != LUA_TNIL, seen;
    lua_pop(L, 2);
    if (has) {
      if ((seen = enc_seen(E, lua_topointer(L, idx), path)) != 0)
        return seen == 2;
      enc_enter(E, path);
      enc_meta(E, idx, E->nrefs, path, NULL, &odd);
      E->depth--;
      return odd;
    }
  }
  /* a member added to a module since the map was built? */
  if (enc_named(E, lua_topointer(L, idx), 1)) return 0;
  enc_fail(E, path, "userdata");
  return 0;
}

/* returns 1 if the value decodes as nil or NaN */
static int enc_value(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: putbyte(E, T_NIL); return 1;
    case LUA_TBOOLEAN: putbyte(E, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      return 0;
    case LUA_TNUMBER: return enc_number(E, idx);
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      /* tiny strings (tags, codes, enums) repeat as values too */
      if (n <= 8) enc_short(E, s, n);
      else enc_lstring(E, s, n);
      return 0;
    }
    case LUA_TTABLE: return enc_table(E, idx, path);
    case LUA_TFUNCTION: enc_function(E, idx, path); return 0;
    case LUA_TUSERDATA: return enc_userdata(E, idx, path);
    case LUA_TLIGHTUSERDATA: enc_fail(E, path, "light userdata"); break;
    case LUA_TTHREAD: enc_fail(E, path, "thread"); break;
    default: enc_fail(E, path, luaL_typename(L, idx));
  }
  return 0;
}

/*
** Starts a message of `nvalues` values, or of a count given later with
** lmp_enc_count (LMP_COUNT_LATER: the count gets 10 bytes, a padded varint,
** so patching it moves nothing).
*/
void lmp_enc_begin(lmp_enc *E, size_t nvalues) {
  static const char magic[4] = { 'L', 'M', 'P', VERSION };
  lua_rawgeti(E->L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  E->globals = lua_topointer(E->L, -1);
  lua_pop(E->L, 1);
  put(E, magic, 4);
  E->countat = E->buf.n;
  if (nvalues == LMP_COUNT_LATER) {
    room(E, 10);
    put_varint_at(E->buf.p + E->buf.n, 0, 10);
    E->buf.n += 10;
  } else putvarint(E, (uint64_t)nvalues);
}

void lmp_enc_count(lmp_enc *E, size_t nvalues) {
  put_varint_at(E->buf.p + E->countat, (uint64_t)nvalues, 10);
}

void lmp_enc_value(lmp_enc *E, int idx, const char *root,
                   lua_Integer rootindex) {
  E->root = root;
  E->rootindex = rootindex;
  enc_value(E, lua_absindex(E->L, idx), NULL);
}

const char *lmp_enc_flatten(lmp_enc *E, size_t *len) {
  size_t i, total = E->buf.n + E->extbytes, pos = 0, from = 0;
  char *out;
  if (E->nsegs == 0) {
    *len = E->buf.n;
    return E->buf.p;
  }
  out = (char *)malloc(total ? total : 1);
  if (out == NULL) enc_nomem(E);
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
  return E->buf.p;
}

/* writes the frame with writev, straight from the Lua strings */
int lmp_enc_writeframe(lmp_enc *E, int fd) {
  unsigned char hdr[8];
  struct iovec iov[64];
  size_t si = 0, from = 0;
  int n = 0, first = 1;
  lmp_put64(hdr, (uint64_t)(E->buf.n + E->extbytes));
  for (;;) {
    ssize_t w;
    if (first) {
      iov[n].iov_base = hdr;
      iov[n].iov_len = 8;
      n++;
      first = 0;
    }
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
    {
      int k = 0;
      while (k < n) {
        w = writev(fd, iov + k, n - k);
        if (w < 0) {
          if (errno == EINTR) continue;
          return -1;
        }
        while (k < n && (size_t)w >= iov[k].iov_len) {
          w -= (ssize_t)iov[k].iov_len;
          k++;
        }
        if (k < n) {
          iov[k].iov_base = (char *)iov[k].iov_base + w;
          iov[k].iov_len -= (size_t)w;
        }
      }
    }
    n = 0;
  }
}

/* ====================================================================== */
/* decoder                                                                */
/* ====================================================================== */
static void dec_fail(lmp_dec *D, const char *msg) {
  lmp_error(D->L, "lmp: decode: %s", msg);
}

static uint64_t dec_varint(lmp_dec *D) {
  uint64_t v = 0;
  int shift = 0;
  while (D->p < D->end) {
    unsigned c = *D->p++;
    if (shift == 63 && (c & 0x7e)) break;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
    shift += 7;
    if (shift > 63) break;
  }
  dec_fail(D, D->p >= D->end ? "truncated message" : "malformed varint");
  return 0;
}

static size_t dec_len(lmp_dec *D, size_t unit) {
  uint64_t n = dec_varint(D);
  if (n > (uint64_t)(D->end - D->p) / unit)
    dec_fail(D, "declared length exceeds the message");
  return (size_t)n;
}

static void dec_value(lmp_dec *D);

static void dec_enter(lmp_dec *D) {
  if (++D->depth > LMP_MAXDEPTH)
    dec_fail(D, "value nested more than 1000 levels deep");
  /* as enc_enter: a level takes at most 8 slots */
  if ((D->depth & 7) == 1 && !lua_checkstack(D->L, 8 * 8))
    dec_fail(D, "stack overflow");
}

static lua_Integer dec_newref(lmp_dec *D) {
  lua_pushvalue(D->L, -1);
  lua_rawseti(D->L, D->refs, ++D->nrefs);
  return D->nrefs;
}

/* a table body; `keep`: a later T_REF may point to it (T_TABR) */
static void dec_table(lmp_dec *D, int keep) {
  lua_State *L = D->L;
  size_t narr, nhash, i;
  dec_enter(D);
  narr = dec_len(D, 1);
  nhash = dec_len(D, 2);
  if (narr + nhash > (size_t)(D->end - D->p))
    dec_fail(D, "declared length exceeds the message");
  /* counts are only a hint: nested tables of a hostile message could each
     claim the whole rest of it.  A real message has at most one byte per
     element in all, so the sum of the hints is held to its length. */
  {
    size_t ha = narr > D->budget ? D->budget : narr, hh;
    D->budget -= ha;
    hh = nhash > D->budget ? D->budget : nhash;
    D->budget -= hh;
    lua_createtable(L, ha > INT_MAX ? INT_MAX : (int)ha,
                    hh > INT_MAX ? INT_MAX : (int)hh);
  }
  if (keep) dec_newref(D);
  else D->nrefs++;                     /* the id is used, the slot stays
                                          empty: a T_REF to it is refused */
  for (i = 1; i <= narr; i++) {
    dec_value(D);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    int kt = D->p < D->end ? *D->p : T_NIL;
    dec_value(D);
    /* these tags never decode to nil or NaN (a T_REF names a kept table,
       string, function or custom value, never nil): no check needed */
    if (kt == T_SKEY || kt == T_STR || kt == T_INT ||
        (kt == T_REF && D->oddrefs == 0)) {
      dec_value(D);
      lua_rawset(L, -3);
      continue;
    }
    switch (lua_type(L, -1)) {
      case LUA_TNIL: dec_fail(D, "nil table key"); break;
      case LUA_TNUMBER:
        if (!lua_isinteger(L, -1)) {
          lua_Number k = lua_tonumber(L, -1);
          if (k != k) dec_fail(D, "NaN table key");
        }
        break;
      default: break;
    }
    dec_value(D);
    lua_rawset(L, -3);
  }
  D->depth--;
}

static void dec_string(lmp_dec *D) {
  size_t n = dec_len(D, 1);
  lua_pushlstring(D->L, (const char *)D->p, n);
  D->p += n;
}

typedef struct loadst {
  const char *p;
  size_t n;
} loadst;

static const char *load_reader(lua_State *L, void *ud, size_t *size) {
  loadst *ls = (loadst *)ud;
  (void)L;
  *size = ls->n;
  ls->n = 0;
  return *size ? ls->p : NULL;
}

static int upvalue_count(lua_State *L, int f) {
  int n = 0;
  while (lua_getupvalue(L, f, n + 1) != NULL) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}

static void dec_function(lmp_dec *D) {
  lua_State *L = D->L;
  loadst ls;
  int f, i, nups;
  if (!(D->flags & LMP_DEC_FUNCTIONS))
    dec_fail(D, "message contains a function (pass {functions=true} to "
                "accept bytecode, only from a trusted source)");
  dec_enter(D);
  ls.n = dec_len(D, 1);
  ls.p = (const char *)D->p;
  D->p += ls.n;
  if (lua_load(L, load_reader, &ls, "=lmp", "b") != LUA_OK)
    lmp_error(L, "lmp: decode: bad function: %s", lua_tostring(L, -1));
  f = lua_gettop(L);
  dec_newref(D);
  nups = (int)dec_varint(D);
  if (nups != upvalue_count(L, f)) dec_fail(D, "upvalue count mismatch");
  for (i = 1; i <= nups; i++) {
    if (D->p < D->end && *D->p == T_JOIN) {
      lua_Integer fid;
      int up;
      D->p++;
      fid = (lua_Integer)dec_varint(D);
      up = (int)dec_varint(D);
      if (fid < 1 || fid > D->nrefs ||
          lua_rawgeti(L, D->refs, fid) != LUA_TFUNCTION ||
          lua_iscfunction(L, -1) || up < 1 || up > upvalue_count(L, -1))
        dec_fail(D, "bad shared upvalue");
      lua_upvaluejoin(L, f, i, lua_gettop(L), up);
      lua_pop(L, 1);
    } else {
      dec_value(D);
      lua_setupvalue(L, f, i);
    }
  }
  D->depth--;
}

static void push_registered(lmp_dec *D, const char *name) {
  lua_State *L = D->L;
  if (lua_getfield(L, LUA_REGISTRYINDEX, KEY_METABYNAME) != LUA_TTABLE ||
      lua_getfield(L, -1, name) != LUA_TTABLE)
    lmp_error(L, "lmp: decode: metatable '%s' is not registered in this "
                  "process (mp.register)", name);
  lua_remove(L, -2);
}

/*
** Over lmp's own pipes a module the sender named but this process has not
** loaded is required here (a task names `lfs`, required by the parent after
** the pool forked).  Never for mp.decode: that would run code chosen by the
** message.  Leaves package.loaded[name] (or nil) on the stack.
*/
static void dec_require(lmp_dec *D, int name) {
  lua_State *L = D->L;
  lua_pop(L, 1);                                       /* the nil */
  if (!(D->flags & LMP_DEC_REQUIRE)) {
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_getfield(L, -1, "require");
  lua_remove(L, -2);
  lua_pushvalue(L, name);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    lmp_error(L, "lmp: decode: module %s is not loaded in this process, and "
                 "require failed: %s", lua_tostring(L, name),
              lua_tostring(L, -1));
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, name);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

static void dec_named(lmp_dec *D) {
  lua_State *L = D->L;
  int base = lua_gettop(L) + 1, haskey;
  dec_string(D);                                       /* [mod] */
  if (D->p >= D->end) dec_fail(D, "truncated message");
  haskey = *D->p++;
  if (haskey == 2) {                   /* a registered metatable */
    push_registered(D, lua_tostring(L, base));
    lua_replace(L, base);
    return;
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, base);
  lua_rawget(L, -2);                                   /* [mod, loaded, m] */
  if (lua_isnil(L, -1)) dec_require(D, base);
  if (haskey) {
    dec_string(D);                                     /* [.., m, key] */
    if (lua_istable(L, base + 2)) {
      lua_pushvalue(L, base + 3);
      lua_rawget(L, base + 2);
    } else lua_pushnil(L);                             /* [.., key, v] */
    if (lua_isnil(L, -1))
      lmp_error(L, "lmp: decode: library value %s.%s is not loaded in this "
                    "process", lua_tostring(L, base), lua_tostring(L, base + 3));
  } else if (lua_isnil(L, -1))
    lmp_error(L, "lmp: decode: module %s is not loaded in this process",
               lua_tostring(L, base));
  lua_replace(L, base);
  lua_settop(L, base);
}

/* an object the sender knows the receiver inherited (lmp_ident) */
static void dec_inherited(lmp_dec *D) {
  lua_State *L = D->L;
  uint64_t id;
  if (!(D->flags & LMP_DEC_IDENT))
    dec_fail(D, "message contains an object shared across fork (pass "
                "{functions=true} to accept it, only from a trusted source)");
  id = dec_varint(D);
  ident_push(L);
  lua_getiuservalue(L, -1, 2);
  if (id > (uint64_t)LUA_MAXINTEGER ||
      lua_rawgeti(L, -1, (lua_Integer)id) == LUA_TNIL)
    lmp_error(L, "lmp: decode: object %I shared across fork is not known in "
                 "this process (it was made after this process was forked, "
                 "or is gone)", (LUAI_UACINT)id);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* marks, in a message's ref table, a custom value that became nil */
static const char nilmark = 0;

/*
** 1 if the value whose encoding starts at p is a table this message built:
** written in full, or a back-reference to one (custom values' slots are
** marked in refs at minus their id).
*/
static int dec_fresh(lmp_dec *D, const unsigned char *p) {
  lua_State *L = D->L;
  if (*p == T_TAB || *p == T_TABR || *p == T_META || *p == T_MTVAL) return 1;
  if (*p == T_REF) {
    lmp_dec tmp = *D;
    lua_Integer id;
    int custom;
    tmp.p = p + 1;
    id = (lua_Integer)dec_varint(&tmp);     /* read once already: valid */
    custom = lua_rawgeti(L, D->refs, -id) != LUA_TNIL;
    lua_pop(L, 1);
    return !custom;
  }
  return 0;
}

static void dec_value(lmp_dec *D) {
  lua_State *L = D->L;
  int tag;
  if (D->p >= D->end) dec_fail(D, "truncated message");
  tag = *D->p++;
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      uint64_t z = dec_varint(D);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
      break;
    }
    case T_FLT: {
      uint64_t u;
      double d;
      if (D->end - D->p < 8) dec_fail(D, "truncated message");
      u = lmp_get64(D->p);
      memcpy(&d, &u, 8);
      D->p += 8;
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case T_STR: dec_string(D); break;
    case T_SKEY:                       /* a string later referred to */
      dec_string(D);
      dec_newref(D);
      break;
    case T_TAB: dec_table(D, 0); break;
    case T_TABR: dec_table(D, 1); break;
    case T_REF: {
      uint64_t id = dec_varint(D);
      if (id < 1 || id > (uint64_t)D->nrefs) dec_fail(D, "bad reference");
      switch (lua_rawgeti(L, D->refs, (lua_Integer)id)) {
        case LUA_TNIL:
          dec_fail(D, "bad reference (to a value not marked as referenced, "
                      "or still being decoded)");
          break;
        case LUA_TLIGHTUSERDATA:       /* a custom value that became nil */
          if (lua_touserdata(L, -1) == (void *)&nilmark) {
            lua_pop(L, 1);
            lua_pushnil(L);
          }
          break;
        default: break;
      }
      break;
    }
    case T_META: {
      dec_string(D);
      if (D->p >= D->end || (*D->p != T_TAB && *D->p != T_TABR))
        dec_fail(D, "metatable name not followed by a table");
      dec_table(D, *D->p++ == T_TABR);
      push_registered(D, lua_tostring(L, -2));
      lua_setmetatable(L, -2);
      lua_remove(L, -2);
      break;
    }
    case T_MTVAL: {                    /* table body, then its metatable */
      if (D->p >= D->end || (*D->p != T_TAB && *D->p != T_TABR))
        dec_fail(D, "metatable not attached to a table");
      dec_table(D, *D->p++ == T_TABR);
      dec_enter(D);
      dec_value(D);
      if (!lua_istable(L, -1)) dec_fail(D, "metatable is not a table");
      lua_setmetatable(L, -2);
      D->depth--;
      break;
    }
    case T_CUSTOM: {
      lua_Integer id;
      const unsigned char *rp;
      dec_enter(D);
      id = ++D->nrefs;                 /* slot filled once rebuilt */
      dec_string(D);
      rp = D->p;
      dec_value(D);                    /* [name, replacement] */
      if (lua_rawlen(L, -2) > 0) {
        push_registered(D, lua_tostring(L, -2));
        if (lua_getfield(L, -1, "__deserialize") != LUA_TNIL) {
          lua_pushvalue(L, -3);
          lua_call(L, 1, 1);
          lua_replace(L, -3);
          lua_pop(L, 1);
        } else {
          lua_pop(L, 1);
          /* only a table this message made: never the receiver's own
             globals, a library table or another custom value */
          if (lua_istable(L, -2) && dec_fresh(D, rp))
            lua_setmetatable(L, -2);
          else lua_pop(L, 1);
        }
      }
      lua_remove(L, -2);
      switch (lua_type(L, -1)) {
        case LUA_TTABLE: case LUA_TSTRING: case LUA_TFUNCTION:
        case LUA_TUSERDATA: break;
        default: D->oddrefs++;         /* nil, a number, a boolean */
      }
      if (lua_isnil(L, -1)) lua_pushlightuserdata(L, (void *)&nilmark);
      else lua_pushvalue(L, -1);
      lua_rawseti(L, D->refs, id);
      lua_pushboolean(L, 1);
      lua_rawseti(L, D->refs, -id);    /* for dec_fresh */
      D->depth--;
      break;
    }
    case T_FUNC: dec_function(D); break;
    case T_GLOBALS: lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); break;
    case T_NAMED: dec_named(D); break;
    case T_INHERITED: dec_inherited(D); break;
    default: dec_fail(D, "unknown value tag (corrupt message)");
  }
}

size_t lmp_dec_begin(lmp_dec *D, lua_State *L, const char *p, size_t len,
                     int flags) {
  uint64_t n;
  D->L = L;
  D->p = (const unsigned char *)p;
  D->end = D->p + len;
  D->nrefs = 0;
  D->depth = 0;
  D->flags = flags;
  D->refs = 0;
  D->budget = len;
  D->oddrefs = 0;
  if (len < 4 || memcmp(p, "LMP", 3) != 0)
    dec_fail(D, "not an lmp message (bad magic)");
  if ((unsigned char)p[3] != VERSION)
    lmp_error(L, "lmp: decode: wire format version %d, this lmp reads "
                  "version %d", (unsigned char)p[3], VERSION);
  D->p += 4;
  n = dec_varint(D);
  if (n > (uint64_t)(D->end - D->p)) dec_fail(D, "bad value count");
  lua_newtable(L);
  D->refs = lua_gettop(L);
  return (size_t)n;
}

void lmp_dec_value(lmp_dec *D) { dec_value(D); }

void lmp_dec_end(lmp_dec *D) {
  if (D->p != D->end) dec_fail(D, "trailing bytes after the message");
  if (D->refs) {
    lua_remove(D->L, D->refs);
    D->refs = 0;
  }
}

/* ====================================================================== */
/* Lua API                                                                */
/* ====================================================================== */
/* registry key of mp.encode's encoder */
static const char encache = 0;

static int codec_encode(lua_State *L) {
  int n = lua_gettop(L), i;
  lmp_enc *E = lmp_enc_take(L, &encache, 0);
  size_t len;
  const char *s;
  lmp_enc_ident(E, LMP_IDENT_ALL);
  lmp_enc_begin(E, (size_t)n);
  for (i = 1; i <= n; i++) lmp_enc_value(E, i, "args", i);
  s = lmp_enc_flatten(E, &len);
  lua_pushlstring(L, s, len);
  lmp_enc_give(L, n + 1, &encache);
  return 1;
}

static int codec_decode(lua_State *L) {
  size_t len, n, i;
  const char *s = luaL_checklstring(L, 1, &len);
  int flags = 0;
  lmp_dec D;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_istable(L, 2))
      return lmp_error(L, "lmp: decode options must be a table, got %s",
                       luaL_typename(L, 2));
    lua_getfield(L, 2, "functions");
    if (lua_toboolean(L, -1)) flags = LMP_DEC_FUNCTIONS | LMP_DEC_IDENT;
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  n = lmp_dec_begin(&D, L, s, len, flags);
  for (i = 0; i < n; i++) {
    if (!lua_checkstack(L, 8)) dec_fail(&D, "too many values");
    lmp_dec_value(&D);
  }
  lmp_dec_end(&D);
  return (int)n;
}

static int codec_register(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (*name == '\0') return luaL_argerror(L, 1, "empty name");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_METABYNAME);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, KEY_METABYMT);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -4);                   /* byname[name] = mt */
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  lua_rawset(L, -3);                   /* bymt[mt] = name */
  lua_getfield(L, LUA_REGISTRYINDEX, KEY_METAVER);
  lua_pushinteger(L, lua_tointeger(L, -1) + 1);
  lua_setfield(L, LUA_REGISTRYINDEX, KEY_METAVER);
  lua_settop(L, 2);
  return 1;
}

void lmp_codec_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"encode", codec_encode},
    {"decode", codec_decode},
    {"register", codec_register},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
