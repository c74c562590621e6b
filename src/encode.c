/*
** encode.c -- values.  They are written depth first; tables and functions
** get ids in the order they are met, so a second meeting writes a
** back-reference (identity, cycles).  Library values travel by name
** (libvals.h), shared objects by id (ident.h).  src/DESIGN.md has the
** value grammar.  The encoder's life and whole messages are encbuf.c's.
*/
#include "encode_i.h"

#include <stdio.h>
#include <stdlib.h>

/*
** Fills a count reserved `width` bytes wide at `at`; when the count needs
** more room, the bytes after it move (rare: only for big tables).
*/
static int patch_count(lmp_enc *E, size_t at, int width, uint64_t v,
                       lua_Integer after) {
  int need = lmp_varint_len(v);
  size_t i;
  if (need > width) {
    size_t extra = (size_t)(need - width);
    room(E, extra);
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
  lmp_varint_putw(E->buf.p + at, v, width);
  return width;
}

/* appends v to one of the encoder's id lists */
static void listadd(lmp_enc *E, idlist *l, lua_Integer v) {
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 16;
    lua_Integer *nv = (lua_Integer *)realloc(l->v, nc * sizeof *nv);
    if (nv == NULL) lmp_enc_nomem(E);
    l->v = nv;
    l->cap = nc;
  }
  l->v[l->n++] = v;
}

static int listhas(const idlist *l, lua_Integer v) {
  size_t i;
  for (i = 0; i < l->n; i++)
    if (l->v[i] == v) return 1;
  return 0;
}

/* ====================================================================== */
/* error paths                                                            */
/* ====================================================================== */
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

/* a string key as .name or ["quoted, cut at 40 bytes"] */
static void add_strkey(luaL_Buffer *b, const char *s, size_t n) {
  size_t i;
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
}

static void add_key(luaL_Buffer *b, lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      add_strkey(b, s, n);
      return;
    }
    case LUA_TNUMBER: case LUA_TBOOLEAN:
      luaL_addchar(b, '[');
      lmp_tolstring(L, idx, NULL);
      luaL_addvalue(b);
      luaL_addchar(b, ']');
      return;
    default:
      luaL_addstring(b, "[<");
      luaL_addstring(b, luaL_typename(L, idx));
      luaL_addstring(b, ">]");
  }
}

static void add_segment(luaL_Buffer *b, lua_State *L, const epath *p) {
  switch (p->kind) {
    case P_INDEX:
      lua_pushfstring(L, "[" LMP_FMTINT "]", LMP_INTARG(p->i));
      luaL_addvalue(b);
      break;
    case P_KEY: add_key(b, L, p->idx); break;
    case P_UPVAL:
      luaL_addstring(b, "<upvalue ");
      luaL_addstring(b, (p->s && *p->s) ? p->s : "?");
      luaL_addchar(b, '>');
      break;
    case P_ISKEY: luaL_addstring(b, "<key>"); break;
    case P_CUSTOM: luaL_addstring(b, "<__serialize>"); break;
    case P_META: luaL_addstring(b, "<metatable>"); break;
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
    lua_pushfstring(L, "[" LMP_FMTINT "]", LMP_INTARG(E->rootindex));
    luaL_addvalue(&b);
  }
  /* innermost segments are the useful ones when the chain is long */
  for (p = path; p != NULL && n < 16; p = p->up) segs[n++] = p;
  if (total > n) luaL_addstring(&b, "...");
  for (i = n - 1; i >= 0; i--) add_segment(&b, L, segs[i]);
  luaL_pushresult(&b);
}

/*
** The buffer is kept: the box frees it, and a pool keeps the items encoded
** before the bad one.  Inside a function's environment (the outermost), the
** path through it (busted's runtime, a sandbox's innards) would only
** confuse: the message names the environment and says what to do.
*/
static void enc_fail(lmp_enc *E, const epath *path, const char *what) {
  lua_State *L = E->L;
  const epath *p, *env = NULL;
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

/* an object shared across fork (a Queue, a Lock...) that the receiver was
   forked too early to have */
static void enc_unshared(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  const char *name = "object";
  if (lmp_getmetafield(L, idx, "__name") == LUA_TSTRING) {
    name = lua_tostring(L, -1);
    if (strncmp(name, "lmp.", 4) == 0) name += 4;
  }
  push_path(E, path);
  lmp_error(L, "lmp: cannot send the %s at %s: the receiving process has no "
               "copy of it (it was created after that process, the pool's "
               "workers, or the Queue or Pipe carrying it). Create it "
               "before them", name, lua_tostring(L, -1));
}

/* ====================================================================== */
/* values the receiver has: library values, shared objects                */
/* ====================================================================== */
/* gets the library map for this message (anew if `force`), anchored: a
   nested encode (a __serialize that loads a module) may replace it */
static void enc_known(lmp_enc *E, int force) {
  lua_State *L = E->L;
  E->known = lmp_libvals_push(L, force);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, &E->known);
  E->knownready = 1;
  if (force) E->knownfresh = 1;
}

/* the entry of p in the map, if p is a library value its name still
   means (the map is pushed then) */
static int64_t named_entry(lmp_enc *E, const void *p, int rebuild) {
  lua_State *L = E->L;
  if (!E->knownready) enc_known(E, 0);  /* once per message */
  for (;;) {
    int64_t i = lmp_libvals_find(E->known, p);
    if (i != 0) {
      lmp_rawgetp(L, LUA_REGISTRYINDEX, &E->known); /* the map i came from */
      if (lmp_ph_get(&E->checked, p) != 0) return i; /* this message knows */
      if (lmp_libvals_current(L, lua_gettop(L), i, p)) {
        if (lmp_ph_put(&E->checked, p, 1) != 0) lmp_enc_nomem(E);
        return i;
      }
      lua_pop(L, 1);                   /* its name now means another value */
    } else if (!rebuild)
      return 0;                        /* a plain table, or a userdata that
                                          may have __serialize */
    /* a member added to or replaced in a module since the map was built:
       build it again, once per message */
    if (E->knownfresh) return 0;
    enc_known(E, 1);
  }
}

/*
** Writes a T_NAMED for p if it is a library value.  `rebuild`: on a miss,
** build the map again (once per message) and retry -- for C functions, and
** userdata about to be refused, never for tables.
*/
static int enc_named(lmp_enc *E, const void *p, int rebuild) {
  lua_State *L = E->L;
  int64_t i = named_entry(E, p, rebuild);
  size_t n;
  const char *s;
  if (i == 0) return 0;
  lmp_libvals_pushname(L, lua_gettop(L), i);       /* [map, mod, key] */
  putbyte(E, LMP_T_NAMED);
  s = lua_tolstring(L, -2, &n);
  putlstring(E, s, n);
  if (lua_type(L, -1) == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &n);
    putbyte(E, 1);
    putlstring(E, s, n);
  } else putbyte(E, lua_toboolean(L, -1) ? 2 : 0);
  lua_pop(L, 3);
  return 1;
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
  if (E->ident == NULL) E->ident = lmp_ident_get(L);
  if (lua_type(L, idx) == LUA_TTABLE && !env &&
      !lmp_ident_maybe(E->ident, lua_topointer(L, idx)))
    return 0;
  if (env && E->identmax == LMP_IDENT_ALL) id = lmp_ident_register(L, idx);
  else {
    id = lmp_ident_find(L, idx);
    if (id == 0 || LMP_IDENT_SEQ(id) > E->identmax) return 0;
  }
  putbyte(E, LMP_T_INHERITED);
  putvarint(E, (uint64_t)id);
  return 1;
}

void lmp_enc_ident(lmp_enc *E, uint64_t identmax) { E->identmax = identmax; }

/* ====================================================================== */
/* values                                                                 */
/* ====================================================================== */
static int enc_value(lmp_enc *E, int idx, const epath *path);

static void enc_lstring(lmp_enc *E, const char *s, size_t n) {
  putbyte(E, LMP_T_STR);
  putvarint(E, n);
  if (E->zerocopy && n >= ZEROCOPY_MIN) {
    if (E->nsegs == E->capsegs) {
      size_t nc = E->capsegs ? E->capsegs * 2 : 8;
      seg *ns = (seg *)realloc(E->segs, nc * sizeof *ns);
      if (ns == NULL) lmp_enc_nomem(E);
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

/* the hottest path of big arrays: straight into the buffer; 1 for NaN */
static int enc_number(lmp_enc *E, int idx) {
  lua_State *L = E->L;
  char *p = room(E, LMP_VARINT_MAX + 1);
  if (lmp_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    uint64_t z = ((uint64_t)i << 1) ^ (uint64_t)(i < 0 ? -1 : 0);
    int w = lmp_varint_len(z);
    p[0] = LMP_T_INT;
    lmp_varint_putw(p + 1, z, w);
    E->buf.n += (size_t)w + 1;
    return 0;
  } else {
    double d = (double)lua_tonumber(L, idx);
    uint64_t u;
    memcpy(&u, &d, 8);
    p[0] = LMP_T_FLT;
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
  /* s is inside the interned TString, so its address is the identity */
  int64_t id = lmp_ph_getput(&E->skeys, s, E->nrefs + 1);
  if (id < 0) lmp_enc_nomem(E);
  if (id > 0) {
    char *p = room(E, LMP_VARINT_MAX + 1);
    p[0] = LMP_T_REF;
    E->buf.n += 1 + (size_t)lmp_varint_put(p + 1, (uint64_t)id);
    return;
  }
  E->nrefs++;
  putbyte(E, LMP_T_SKEY);
  putlstring(E, s, n);
}

static void enc_key(lmp_enc *E, int idx) {
  size_t n;
  const char *s = lua_tolstring(E->L, idx, &n);
  if (n > 40) enc_lstring(E, s, n);
  else enc_short(E, s, n);
}

/*
** Writes a back-reference if the object was seen already: returns 0 if not
** (it now has the next id), 1 if a reference was written, 2 if it was and
** the value decodes as nil or NaN (a custom value's replacement).
*/
static int enc_seen(lmp_enc *E, const void *p, const epath *path) {
  int64_t id = lmp_ph_getput(&E->refs, p, E->nrefs + 1);
  if (id < 0) lmp_enc_nomem(E);
  if (id == 0) {
    E->nrefs++;
    return 0;
  }
  if (E->open.n > 0 && listhas(&E->open, id))
    enc_fail(E, path, "value whose __serialize result holds the value itself");
  if ((size_t)id < E->tagn && E->tagat[id] != 0) {
    E->buf.p[E->tagat[id]] = LMP_T_TABR;   /* the decoder must keep it */
    E->tagat[id] = 0;
  }
  putbyte(E, LMP_T_REF);
  putvarint(E, (uint64_t)id);
  return E->nilc.n > 0 && listhas(&E->nilc, id) ? 2 : 1;
}

/* remembers where table `id`'s tag is about to be written */
static void enc_tagat(lmp_enc *E, lua_Integer id) {
  size_t need = (size_t)id + 1;
  if (need > E->tagcap) {
    size_t nc = E->tagcap ? E->tagcap * 2 : 4096;
    size_t *nt;
    while (nc < need) nc *= 2;
    nt = (size_t *)realloc(E->tagat, nc * sizeof *nt);
    if (nt == NULL) lmp_enc_nomem(E);
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
  idx = lmp_absindex(L, idx);
  if (E->anchor == 0) {
    lua_newtable(L);
    lmp_rawsetp(L, LUA_REGISTRYINDEX, E);
    E->anchor = 1;
    E->nanchor = 0;
  }
  lmp_rawgetp(L, LUA_REGISTRYINDEX, E);
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
  size_t n;
  const char *s;
  if (!lmp_iscallable(L, -1)) {
    lua_pushfstring(L, "value whose __serialize is a %s, not a function",
                    luaL_typename(L, -1));
    enc_fail(E, path, lua_tostring(L, -1));
  }
  putbyte(E, LMP_T_CUSTOM);
  lmp_registered_name(L, mt);
  s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  if (s != NULL) putlstring(E, s, n);
  else putvarint(E, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);                   /* [mt, replacement] */
  enc_anchor(E, -1);
  sub.up = path;
  sub.kind = P_CUSTOM;
  listadd(E, &E->open, id);
  odd = enc_value(E, lua_gettop(L), &sub);
  E->open.n--;
  if (odd) listadd(E, &E->nilc, id);
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
    *weak = lmp_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 1);
  }
  if (lmp_getfield(L, -1, "__serialize") != LUA_TNIL) {
    *odd = enc_custom(E, idx, id, path);               /* pops both */
    return 1;
  }
  lua_pop(L, 1);
  lmp_registered_name(L, -1);                          /* [mt, name] */
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    putbyte(E, LMP_T_META);
    putlstring(E, s, n);
    lua_pop(L, 2);
    return 0;
  }
  lua_pop(L, 2);
  putbyte(E, LMP_T_MTVAL);
  return 2;
}

/*
** A table's body: its array run (lua_next visits the array part first and
** in order), then every other key/value pair.  Both counts are written
** before they are known, in room for the array's length, and patched.
*/
static void enc_body(lmp_enc *E, int idx, lua_Integer tid, const epath *path,
                     int weak) {
  lua_State *L = E->L;
  size_t at, hat = 0;
  int aw, top;
  uint64_t narr = 0, nhash = 0;
  epath sub;
  aw = lmp_varint_len((uint64_t)lmp_rawlen(L, idx));
  room(E, (size_t)aw + 1);
  at = E->buf.n;
  E->buf.n += (size_t)aw + 1;          /* room for both counts */
  sub.up = path;
  lua_pushnil(L);
  top = lua_gettop(L) + 1;             /* where lua_next leaves the value */
  while (lua_next(L, idx)) {
    int kt = lua_type(L, top - 1), isint = 0;
    /* a float key is never integral (Lua normalizes those), so for a
       number key lua_tointegerx answers "integer?" and "which?" at once */
    if (hat == 0 && kt == LUA_TNUMBER &&
        lua_tointegerx(L, top - 1, &isint) == (lua_Integer)narr + 1 && isint) {
      sub.kind = P_INDEX;
      sub.i = (lua_Integer)++narr;
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
}

/* returns 1 if the table decodes as nil or NaN (a custom value) */
static int enc_table(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  int mode, weak = 0, odd = 0, seen;
  lua_Integer tid;
  const void *p = lua_topointer(L, idx);
  if (p == E->globals) {
    putbyte(E, LMP_T_GLOBALS);
    return 0;
  }
  /* library tables and inherited ones are never in refs: check them first */
  if (enc_named(E, p, 0) || enc_ident(E, idx, 0)) return 0;
  if ((seen = enc_seen(E, p, path)) != 0) return seen == 2;
  tid = E->nrefs;
  enc_enter(E, path);
  mode = enc_meta(E, idx, tid, path, &weak, &odd);
  if (mode != 1) {
    enc_tagat(E, tid);
    putbyte(E, LMP_T_TAB);
    enc_body(E, idx, tid, path, weak);
    if (mode == 2) {                   /* the metatable, after the body */
      epath sub;
      sub.up = path;
      sub.kind = P_META;
      lua_getmetatable(L, idx);
      enc_value(E, lua_gettop(L), &sub);
      lua_pop(L, 1);
    }
  }
  E->depth--;
  return odd;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  put((lmp_enc *)ud, p, n);
  return 0;
}

/* a function's upvalue i: a join to an earlier closure's, or its value */
static void enc_upvalue(lmp_enc *E, int idx, lua_Integer fid, int i,
                        epath *sub) {
  lua_State *L = E->L;
  const void *uid = lmp_upvalueid(L, idx, i);
  int64_t prev = lmp_ph_get(&E->upv, uid);
  int v;
  if (prev != 0) {                     /* shared with an earlier closure */
    putbyte(E, LMP_T_JOIN);
    putvarint(E, (uint64_t)(prev >> 8));
    putvarint(E, (uint64_t)(prev & 0xff));
    return;
  }
  if (lmp_ph_put(&E->upv, uid, fid * 256 + i) != 0) lmp_enc_nomem(E);
  sub->s = lua_getupvalue(L, idx, i);
  v = lua_gettop(L);
  /* the function's environment, when it is not _G, is the receiver's copy
     of it (ident.h) */
  if (!(lua_type(L, v) == LUA_TTABLE && strcmp(sub->s, "_ENV") == 0 &&
        lua_topointer(L, v) != E->globals && enc_ident(E, v, 1)))
    enc_value(E, v, sub);
  lua_pop(L, 1);
}

static void enc_function(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  size_t at;
  int i, nups;
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
  putbyte(E, LMP_T_FUNC);
  room(E, 5);
  at = E->buf.n;
  E->buf.n += 5;                       /* the bytecode's length, patched */
  lua_pushvalue(L, idx);
  lmp_dump(L, dump_writer, E);         /* debug info kept: tracebacks */
  lua_pop(L, 1);
  lmp_varint_putw(E->buf.p + at, (uint64_t)(E->buf.n - at - 5), 5);
  nups = lmp_nupvalues(L, idx);
  putvarint(E, (uint64_t)nups);
  sub.up = path;
  sub.kind = P_UPVAL;
  for (i = 1; i <= nups; i++) enc_upvalue(E, idx, fid, i, &sub);
  E->depth--;
}

/* returns 1 if the userdata decodes as nil or NaN (a custom value) */
static int enc_userdata(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  int odd = 0;
  if (enc_named(E, lua_topointer(L, idx), 0) || enc_ident(E, idx, 0))
    return 0;
  if (lua_getmetatable(L, idx)) {
    int has = lmp_getfield(L, -1, "__serialize") != LUA_TNIL, seen;
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
  if (lmp_ident_find(L, idx) != 0) enc_unshared(E, idx, path);
  enc_fail(E, path, "userdata");
  return 0;
}

/* returns 1 if the value decodes as nil or NaN */
static int enc_value(lmp_enc *E, int idx, const epath *path) {
  lua_State *L = E->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: putbyte(E, LMP_T_NIL); return 1;
    case LUA_TBOOLEAN:
      putbyte(E, lua_toboolean(L, idx) ? LMP_T_TRUE : LMP_T_FALSE);
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

void lmp_enc_value(lmp_enc *E, int idx, const char *root,
                   lua_Integer rootindex) {
  E->root = root;
  E->rootindex = rootindex;
  enc_value(E, lmp_absindex(E->L, idx), NULL);
}
