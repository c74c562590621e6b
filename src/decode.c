/*
** decode.c -- the decoder.  Only back-referenced values (T_TABR tables,
** short strings, functions, custom values) are kept in the ref table; a
** reference to anything else is refused.  Counts a message declares are
** hints held to the message's length, so nested hostile counts cannot make
** it allocate more than its size allows.
*/
#include "decode.h"

#include <limits.h>
#include <string.h>

static void dec_fail(lmp_dec *D, const char *msg) {
  lmp_error(D->L, "lmp: decode: %s", msg);
}

static uint64_t dec_varint(lmp_dec *D) {
  uint64_t v = 0;
  int r = lmp_varint_get(&D->p, D->end, &v);
  if (r != 0) dec_fail(D, r == -1 ? "truncated message" : "malformed varint");
  return v;
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
  /* as the encoder's: a level takes at most 8 slots */
  if ((D->depth & 7) == 1 && !lua_checkstack(D->L, 8 * 8))
    dec_fail(D, "stack overflow");
}

static lua_Integer dec_newref(lmp_dec *D) {
  lua_pushvalue(D->L, -1);
  lua_rawseti(D->L, D->refs, ++D->nrefs);
  return D->nrefs;
}

/* a key the decoder must check: only these tags could give nil or NaN (a
   T_REF names a kept table, string, function or custom value, never nil) */
static int key_needs_check(lmp_dec *D, int tag) {
  return !(tag == LMP_T_SKEY || tag == LMP_T_STR || tag == LMP_T_INT ||
           (tag == LMP_T_REF && D->oddrefs == 0));
}

static void check_key(lmp_dec *D) {
  lua_State *L = D->L;
  switch (lua_type(L, -1)) {
    case LUA_TNIL: dec_fail(D, "nil table key"); break;
    case LUA_TNUMBER:
      if (!lmp_isinteger(L, -1)) {
        lua_Number k = lua_tonumber(L, -1);
        if (k != k) dec_fail(D, "NaN table key");
      }
      break;
    default: break;
  }
}

/* a table body; `keep`: a later T_REF may point to it (T_TABR) */
static void dec_table(lmp_dec *D, int keep) {
  lua_State *L = D->L;
  size_t narr, nhash, i, ha, hh;
  dec_enter(D);
  narr = dec_len(D, 1);
  nhash = dec_len(D, 2);
  if (narr + nhash > (size_t)(D->end - D->p))
    dec_fail(D, "declared length exceeds the message");
  /* counts are only a hint: nested tables of a hostile message could each
     claim the whole rest of it.  A real message has at most one byte per
     element in all, so the sum of the hints is held to its length. */
  ha = narr > D->budget ? D->budget : narr;
  D->budget -= ha;
  hh = nhash > D->budget ? D->budget : nhash;
  D->budget -= hh;
  lua_createtable(L, ha > INT_MAX ? INT_MAX : (int)ha,
                  hh > INT_MAX ? INT_MAX : (int)hh);
  if (keep) dec_newref(D);
  else D->nrefs++;                     /* the id is used, the slot stays
                                          empty: a T_REF to it is refused */
  for (i = 1; i <= narr; i++) {
    dec_value(D);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  for (i = 0; i < nhash; i++) {
    int check = key_needs_check(D, D->p < D->end ? *D->p : LMP_T_NIL);
    dec_value(D);
    if (check) check_key(D);
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

/* upvalue i of the function at f shares an earlier closure's (T_JOIN) */
static void dec_join(lmp_dec *D, int f, int i) {
  lua_State *L = D->L;
  lua_Integer fid = (lua_Integer)dec_varint(D);
  int up = (int)dec_varint(D);
  if (fid < 1 || fid > D->nrefs ||
      lmp_rawgeti(L, D->refs, fid) != LUA_TFUNCTION ||
      lua_iscfunction(L, -1) || up < 1 || up > lmp_nupvalues(L, -1))
    dec_fail(D, "bad shared upvalue");
  lmp_upvaluejoin(L, f, i, lua_gettop(L), up);
  lua_pop(L, 1);
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
  if (lmp_loadbinary(L, load_reader, &ls, "=lmp") != LUA_OK)
    lmp_error(L, "lmp: decode: bad function: %s", lua_tostring(L, -1));
  f = lua_gettop(L);
  dec_newref(D);
  nups = (int)dec_varint(D);
  if (nups != lmp_nupvalues(L, f)) dec_fail(D, "upvalue count mismatch");
  for (i = 1; i <= nups; i++) {
    if (D->p < D->end && *D->p == LMP_T_JOIN) {
      D->p++;
      dec_join(D, f, i);
    } else {
      dec_value(D);
      lua_setupvalue(L, f, i);
    }
  }
  D->depth--;
}

/*
** Over lmp's own pipes a module the sender named but this process has not
** loaded is required here (a task names `lfs`, required by the parent after
** the pool forked).  Never for mp.decode: that would run code chosen by the
** message.  Replaces the nil on top by package.loaded[name] (or nil).
*/
static void dec_require(lmp_dec *D, int name) {
  lua_State *L = D->L;
  lua_pop(L, 1);
  if (!(D->flags & LMP_DEC_REQUIRE)) {
    lua_pushnil(L);
    return;
  }
  lmp_pushglobals(L);
  lmp_getfield(L, -1, "require");
  lua_remove(L, -2);
  lua_pushvalue(L, name);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    lmp_error(L, "lmp: decode: module %s is not loaded in this process, and "
                 "require failed: %s", lua_tostring(L, name),
              lua_tostring(L, -1));
  lua_pop(L, 1);
  lmp_pushloaded(L);
  lua_pushvalue(L, name);
  lmp_rawget(L, -2);
  lua_remove(L, -2);
}

/* a library value (libvals.h): module name, then a key, false or true */
static void dec_named(lmp_dec *D) {
  lua_State *L = D->L;
  int base = lua_gettop(L) + 1, haskey;
  dec_string(D);                                       /* [mod] */
  if (D->p >= D->end) dec_fail(D, "truncated message");
  haskey = *D->p++;
  if (haskey == 2) {                   /* a registered metatable */
    lmp_registered_mt(L, lua_tostring(L, base));
    lua_replace(L, base);
    return;
  }
  lmp_pushloaded(L);
  lua_pushvalue(L, base);
  lmp_rawget(L, -2);                                   /* [mod, loaded, m] */
  if (lua_isnil(L, -1)) dec_require(D, base);
  if (haskey) {
    dec_string(D);                                     /* [.., m, key] */
    if (lua_istable(L, base + 2)) {
      lua_pushvalue(L, base + 3);
      lmp_rawget(L, base + 2);
    } else lua_pushnil(L);                             /* [.., key, v] */
    if (lua_isnil(L, -1) && strcmp(lua_tostring(L, base), "_G") == 0)
      lmp_error(L, "lmp: decode: global %s is not set in this process: the "
                   "sender sent its value (a userdata or C function) by its "
                   "global name, and this process started before it was "
                   "assigned", lua_tostring(L, base + 3));
    if (lua_isnil(L, -1))
      lmp_error(L, "lmp: decode: library value %s.%s is not loaded in this "
                   "process", lua_tostring(L, base), lua_tostring(L, base + 3));
  } else if (lua_isnil(L, -1))
    lmp_error(L, "lmp: decode: module %s is not loaded in this process",
              lua_tostring(L, base));
  lua_replace(L, base);
  lua_settop(L, base);
}

/* an object the sender knows the receiver inherited (ident.h) */
static void dec_inherited(lmp_dec *D) {
  lua_State *L = D->L;
  uint64_t id;
  if (!(D->flags & LMP_DEC_IDENT))
    dec_fail(D, "message contains an object shared across fork (pass "
                "{functions=true} to accept it, only from a trusted source)");
  id = dec_varint(D);
  if (id <= (uint64_t)LMP_MAXINTEGER) lmp_ident_push(L, (lua_Integer)id);
  else lua_pushnil(L);
  if (lua_isnil(L, -1))
    lmp_error(L, "lmp: decode: object " LMP_FMTINT " shared across fork is "
                 "not known in this process (it was made after this process "
                 "was forked, or is gone)", LMP_INTARG(id));
}

/*
** 1 if the value whose encoding starts at p is a table this message built:
** written in full, or a back-reference to one (custom values' slots are
** marked in refs at minus their id).
*/
static int dec_fresh(lmp_dec *D, const unsigned char *p) {
  lua_State *L = D->L;
  if (*p == LMP_T_TAB || *p == LMP_T_TABR || *p == LMP_T_META ||
      *p == LMP_T_MTVAL)
    return 1;
  if (*p == LMP_T_REF) {
    uint64_t id = 0;
    int custom;
    p++;
    (void)lmp_varint_get(&p, D->end, &id);   /* read once already: valid */
    custom = lmp_rawgeti(L, D->refs, -(lua_Integer)id) != LUA_TNIL;
    lua_pop(L, 1);
    return !custom;
  }
  return 0;
}

/*
** A __serialize replacement (T_CUSTOM): rebuilt with the registered
** metatable's __deserialize, or given that metatable (only a table this
** message made: never the receiver's globals, a library table or another
** custom value).  Its slot in refs holds the result (nil as the nil mark).
*/
static void dec_custom(lmp_dec *D) {
  lua_State *L = D->L;
  lua_Integer id;
  const unsigned char *rp;
  dec_enter(D);
  id = ++D->nrefs;                     /* slot filled once rebuilt */
  dec_string(D);
  rp = D->p;
  dec_value(D);                        /* [name, replacement] */
  if (lmp_rawlen(L, -2) > 0) {
    lmp_registered_mt(L, lua_tostring(L, -2));
    if (lmp_getfield(L, -1, "__deserialize") != LUA_TNIL) {
      lua_pushvalue(L, -3);
      lua_call(L, 1, 1);
      lua_replace(L, -3);
      lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
      if (lua_istable(L, -2) && dec_fresh(D, rp)) lua_setmetatable(L, -2);
      else lua_pop(L, 1);
    }
  }
  lua_remove(L, -2);
  switch (lua_type(L, -1)) {
    case LUA_TTABLE: case LUA_TSTRING: case LUA_TFUNCTION:
    case LUA_TUSERDATA: break;
    default: D->oddrefs++;             /* nil, a number, a boolean */
  }
  if (lua_isnil(L, -1)) lmp_pushnilmark(L);
  else lua_pushvalue(L, -1);
  lua_rawseti(L, D->refs, id);
  lua_pushboolean(L, 1);
  lua_rawseti(L, D->refs, -id);        /* for dec_fresh */
  D->depth--;
}

static void dec_ref(lmp_dec *D) {
  lua_State *L = D->L;
  uint64_t id = dec_varint(D);
  if (id < 1 || id > (uint64_t)D->nrefs) dec_fail(D, "bad reference");
  if (lmp_rawgeti(L, D->refs, (lua_Integer)id) == LUA_TNIL)
    dec_fail(D, "bad reference (to a value not marked as referenced, "
                "or still being decoded)");
  if (lmp_isnilmark(L, -1)) {          /* a custom value that became nil */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* a table with a metatable: registered by name (T_META), or by value
   after the body (T_MTVAL) */
static void dec_meta(lmp_dec *D, int byname) {
  lua_State *L = D->L;
  if (byname) dec_string(D);
  if (D->p >= D->end || (*D->p != LMP_T_TAB && *D->p != LMP_T_TABR))
    dec_fail(D, byname ? "metatable name not followed by a table"
                       : "metatable not attached to a table");
  dec_table(D, *D->p++ == LMP_T_TABR);
  if (byname) {
    lmp_registered_mt(L, lua_tostring(L, -2));
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
    return;
  }
  dec_enter(D);
  dec_value(D);
  if (!lua_istable(L, -1)) dec_fail(D, "metatable is not a table");
  lua_setmetatable(L, -2);
  D->depth--;
}

static void dec_value(lmp_dec *D) {
  lua_State *L = D->L;
  int tag;
  if (D->p >= D->end) dec_fail(D, "truncated message");
  tag = *D->p++;
  switch (tag) {
    case LMP_T_NIL: lua_pushnil(L); break;
    case LMP_T_FALSE: lua_pushboolean(L, 0); break;
    case LMP_T_TRUE: lua_pushboolean(L, 1); break;
    case LMP_T_INT: {
      uint64_t z = dec_varint(D);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
      break;
    }
    case LMP_T_FLT: {
      uint64_t u;
      double d;
      if (D->end - D->p < 8) dec_fail(D, "truncated message");
      u = lmp_get64(D->p);
      memcpy(&d, &u, 8);
      D->p += 8;
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case LMP_T_STR: dec_string(D); break;
    case LMP_T_SKEY:                   /* a string later referred to */
      dec_string(D);
      dec_newref(D);
      break;
    case LMP_T_TAB: dec_table(D, 0); break;
    case LMP_T_TABR: dec_table(D, 1); break;
    case LMP_T_REF: dec_ref(D); break;
    case LMP_T_META: dec_meta(D, 1); break;
    case LMP_T_MTVAL: dec_meta(D, 0); break;
    case LMP_T_CUSTOM: dec_custom(D); break;
    case LMP_T_FUNC: dec_function(D); break;
    case LMP_T_GLOBALS: lmp_pushglobals(L); break;
    case LMP_T_NAMED: dec_named(D); break;
    case LMP_T_INHERITED: dec_inherited(D); break;
    default: dec_fail(D, "unknown value tag (corrupt message)");
  }
}

size_t lmp_dec_begin(lmp_dec *D, lua_State *L, const char *p, size_t len,
                     int flags) {
  uint64_t n;
  int version = 0;
  D->L = L;
  D->p = (const unsigned char *)p;
  D->end = D->p + len;
  D->nrefs = 0;
  D->depth = 0;
  D->flags = flags;
  D->refs = 0;
  D->budget = len;
  D->oddrefs = 0;
  switch (lmp_wire_readheader(&D->p, D->end, &n, &version)) {
    case 0: break;
    case -1: dec_fail(D, "not an lmp message (bad magic)"); break;
    case -2:
      lmp_error(L, "lmp: decode: wire format version %d, this lmp reads "
                   "version %d", version, LMP_WIRE_VERSION);
      break;
    case -3: dec_fail(D, "truncated message"); break;
    default: dec_fail(D, "malformed varint");
  }
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
