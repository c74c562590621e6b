/*
** shvalue.c -- mp.Value and mp.Array: typed shared memory with Python's
** type codes, an optional lock, and atomic add.
**
** Reads and writes of one element are atomic (__atomic loads and stores),
** so `v.value` needs no lock; a read-modify-write does: `v:add(n)` is one
** atomic instruction (a compare-and-swap loop for floats), anything longer
** holds get_lock().
*/
#include "shvalue.h"

#include <string.h>

typedef struct shv {
  char *data;           /* the elements */
  void *mem;            /* the mapping: the lock block, then the data */
  size_t size;
  lua_Integer n;        /* elements (1 for a Value) */
  char code;            /* Python's type code */
  int width;            /* bytes per element */
  int array;
} shv;

static int codewidth(char c) {
  switch (c) {
    case 'b': case 'B': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'l': case 'L': case 'q': case 'Q': case 'd': return 8;
    default: return 0;
  }
}

/*
** Every method and metamethod has upvalues: the two metatables, the
** methods table and the string "value", so that the checks and lookups of
** v:add(1) and v.value cost no registry lookup (W9's atomic increments).
*/
#define UV_VALUE   lua_upvalueindex(1)
#define UV_ARRAY   lua_upvalueindex(2)
#define UV_METHODS lua_upvalueindex(3)
#define UV_KEY     lua_upvalueindex(4)

static shv *checkshv(lua_State *L, int idx) {
  shv *v = (shv *)lua_touserdata(L, idx);
  if (v != NULL && lua_getmetatable(L, idx)) {
    if (!lua_rawequal(L, -1, UV_VALUE) && !lua_rawequal(L, -1, UV_ARRAY))
      v = NULL;
    lua_pop(L, 1);
  } else v = NULL;
  if (v == NULL)
    lmp_error(L, "lmp: expected a Value or Array, got %s (call methods with "
                 "':')", luaL_typename(L, idx));
  if (v->mem == NULL) lmp_error(L, "lmp: shared memory is closed");
  return v;
}

/* ---------------------------------------------------------------------- */
/* elements                                                               */
/* ---------------------------------------------------------------------- */
#define LD(T) __atomic_load_n((T *)p, __ATOMIC_SEQ_CST)

/* an L or Q element: an integer up to math.maxinteger; past it (only a
   wrapping add gets there) a float, as Lua reads a too large numeral */
static void push_u64(lua_State *L, uint64_t u) {
  if (u <= (uint64_t)LUA_MAXINTEGER) lua_pushinteger(L, (lua_Integer)u);
  else lua_pushnumber(L, (lua_Number)u);
}

static void push_elem(lua_State *L, const shv *v, lua_Integer i) {
  char *p = v->data + (size_t)i * (size_t)v->width;
  switch (v->code) {
    case 'b': lua_pushinteger(L, LD(int8_t)); break;
    case 'B': lua_pushinteger(L, LD(uint8_t)); break;
    case 'h': lua_pushinteger(L, LD(int16_t)); break;
    case 'H': lua_pushinteger(L, LD(uint16_t)); break;
    case 'i': lua_pushinteger(L, LD(int32_t)); break;
    case 'I': lua_pushinteger(L, LD(uint32_t)); break;
    case 'f': {
      uint32_t u = LD(uint32_t);
      float f;
      memcpy(&f, &u, sizeof f);
      lua_pushnumber(L, (lua_Number)f);
      break;
    }
    case 'd': {
      uint64_t u = LD(uint64_t);
      double d;
      memcpy(&d, &u, sizeof d);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case 'L': case 'Q': push_u64(L, LD(uint64_t)); break;
    default: lua_pushinteger(L, (lua_Integer)LD(int64_t)); break;
  }
}


/* the integer at idx, checked against the range of v's type */
static lua_Integer int_arg(lua_State *L, const shv *v, int idx,
                           const char *what) {
  lua_Integer x = lmp_checkint(L, idx, what), lo = 0, hi = 0;
  switch (v->code) {
    case 'b': lo = INT8_MIN; hi = INT8_MAX; break;
    case 'B': hi = UINT8_MAX; break;
    case 'h': lo = INT16_MIN; hi = INT16_MAX; break;
    case 'H': hi = UINT16_MAX; break;
    case 'i': lo = INT32_MIN; hi = INT32_MAX; break;
    case 'I': hi = UINT32_MAX; break;
    case 'L': case 'Q': hi = LUA_MAXINTEGER; break;  /* 0..2^63-1 */
    default: return x;                 /* l, q: every integer */
  }
  if (x < lo || x > hi)
    lmp_error(L, "lmp: " LMP_FMTINT " is out of range for type '%c'",
              LMP_INTARG(x), v->code);
  return x;
}

static lua_Number num_arg(lua_State *L, int idx, const char *what) {
  if (lua_type(L, idx) != LUA_TNUMBER) lmp_typeerror(L, idx, what, "a number");
  return lua_tonumber(L, idx);
}

static void set_elem(lua_State *L, const shv *v, lua_Integer i, int idx) {
  char *p = v->data + (size_t)i * (size_t)v->width;
  if (v->code == 'f') {
    float f = (float)num_arg(L, idx, "value");
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    __atomic_store_n((uint32_t *)p, u, __ATOMIC_SEQ_CST);
    return;
  }
  if (v->code == 'd') {
    double d = (double)num_arg(L, idx, "value");
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    __atomic_store_n((uint64_t *)p, u, __ATOMIC_SEQ_CST);
    return;
  }
  {
    lua_Integer x = int_arg(L, v, idx, "value");
    switch (v->width) {
      case 1: __atomic_store_n((uint8_t *)p, (uint8_t)x, __ATOMIC_SEQ_CST); break;
      case 2: __atomic_store_n((uint16_t *)p, (uint16_t)x, __ATOMIC_SEQ_CST); break;
      case 4: __atomic_store_n((uint32_t *)p, (uint32_t)x, __ATOMIC_SEQ_CST); break;
      default: __atomic_store_n((uint64_t *)p, (uint64_t)x, __ATOMIC_SEQ_CST);
    }
  }
}

/* atomic p += n; pushes the new value.  Integers wrap at their width */
#define ADDI(T) \
  lua_pushinteger(L, (lua_Integer)(T)__atomic_add_fetch((T *)p, (T)x, \
                                                        __ATOMIC_SEQ_CST))

static void add_elem(lua_State *L, const shv *v, lua_Integer i, int idx) {
  char *p = v->data + (size_t)i * (size_t)v->width;
  if (v->code == 'f') {
    float d = (float)num_arg(L, idx, "n"), old, nw;
    uint32_t u = __atomic_load_n((uint32_t *)p, __ATOMIC_SEQ_CST), w;
    do {
      memcpy(&old, &u, sizeof old);
      nw = old + d;
      memcpy(&w, &nw, sizeof w);
    } while (!__atomic_compare_exchange_n((uint32_t *)p, &u, w, 0,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    lua_pushnumber(L, (lua_Number)nw);
    return;
  }
  if (v->code == 'd') {
    double d = (double)num_arg(L, idx, "n"), old, nw;
    uint64_t u = __atomic_load_n((uint64_t *)p, __ATOMIC_SEQ_CST), w;
    do {
      memcpy(&old, &u, sizeof old);
      nw = old + d;
      memcpy(&w, &nw, sizeof w);
    } while (!__atomic_compare_exchange_n((uint64_t *)p, &u, w, 0,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    lua_pushnumber(L, (lua_Number)nw);
    return;
  }
  {
    lua_Integer x = lua_isnoneornil(L, idx) ? 1 : lmp_checkint(L, idx, "n");
    switch (v->code) {
      case 'b': ADDI(int8_t); break;
      case 'B': ADDI(uint8_t); break;
      case 'h': ADDI(int16_t); break;
      case 'H': ADDI(uint16_t); break;
      case 'i': ADDI(int32_t); break;
      case 'I': ADDI(uint32_t); break;
      case 'L': case 'Q':
        push_u64(L, __atomic_add_fetch((uint64_t *)p, (uint64_t)x,
                                       __ATOMIC_SEQ_CST));
        break;
      default: ADDI(int64_t);
    }
  }
}

/* a 1-based index argument -> 0-based, bounds checked */
static lua_Integer index_arg(lua_State *L, const shv *v, int idx) {
  lua_Integer i = lmp_checkint(L, idx, "index");
  if (i < 1 || i > v->n)
    lmp_error(L, "lmp: index " LMP_FMTINT " out of range (Array of "
                 LMP_FMTINT ")", LMP_INTARG(i), LMP_INTARG(v->n));
  return i - 1;
}

/* ---------------------------------------------------------------------- */
/* methods                                                                */
/* ---------------------------------------------------------------------- */
static int v_index(lua_State *L) {
  shv *v = checkshv(L, 1);
  if (v->array && lua_type(L, 2) == LUA_TNUMBER) {
    /* as a Lua table: nil outside 1..n (so ipairs stops); writes raise */
    lua_Integer i;
    int isint;
    i = lua_tointegerx(L, 2, &isint);
    if (isint && i >= 1 && i <= v->n) push_elem(L, v, i - 1);
    else lua_pushnil(L);
    return 1;
  }
  if (!v->array && lua_rawequal(L, 2, UV_KEY)) {
    push_elem(L, v, 0);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, UV_METHODS);
  return 1;
}

static int v_newindex(lua_State *L) {
  shv *v = checkshv(L, 1);
  if (v->array && lua_type(L, 2) == LUA_TNUMBER)
    set_elem(L, v, index_arg(L, v, 2), 3);
  else if (!v->array && lua_rawequal(L, 2, UV_KEY))
    set_elem(L, v, 0, 3);
  else if (v->array)
    return lmp_typeerror(L, 2, "Array index", "an integer");
  else
    return lmp_error(L, "lmp: a Value has only the field 'value'");
  return 0;
}

static int v_add(lua_State *L) {
  shv *v = checkshv(L, 1);
  if (v->array) add_elem(L, v, index_arg(L, v, 2), 3);
  else add_elem(L, v, 0, 2);
  return 1;
}

static int v_len(lua_State *L) {
  lua_pushinteger(L, checkshv(L, 1)->n);
  return 1;
}

static int v_totable(lua_State *L) {
  shv *v = checkshv(L, 1);
  lua_Integer i = lua_isnoneornil(L, 2) ? 1 : lmp_checkint(L, 2, "i");
  lua_Integer j = lua_isnoneornil(L, 3) ? v->n : lmp_checkint(L, 3, "j"), k;
  if (i < 1) i = 1;
  if (j > v->n) j = v->n;
  lua_createtable(L, j >= i ? (int)(j - i + 1) : 0, 0);
  for (k = i; k <= j; k++) {
    push_elem(L, v, k - 1);
    lua_rawseti(L, -2, k - i + 1);
  }
  return 1;
}

static int v_get_lock(lua_State *L) {
  checkshv(L, 1);
  if (lmp_getuv(L, 1, 1) == LUA_TNIL)
    return lmp_error(L, "lmp: this %s has no lock (made with {lock = false})",
                     luaL_testudata(L, 1, LMP_ARRAY) ? "Array" : "Value");
  return 1;
}

static int v_gc(lua_State *L) {
  shv *v = (shv *)lua_touserdata(L, 1);
  lmp_lockblk *k = (lmp_lockblk *)v->mem;
  if (v->mem == NULL) return 0;
  /* a robust mutex this process holds must not vanish from under it
     (glibc keeps it in the process's list of held robust mutexes) */
  if (lmp_mutex_mine(&k->m)) pthread_mutex_unlock(&k->m);
  lmp_shm_unmap(v->mem, v->size);
  v->mem = NULL;
  v->data = NULL;
  return 0;
}

static int v_tostring(lua_State *L) {
  shv *v = (shv *)lua_touserdata(L, 1);
  if (v->mem == NULL) lua_pushliteral(L, "shared memory (closed)");
  else if (v->array)
    lua_pushfstring(L, "Array('%c', " LMP_FMTINT ")", v->code,
                    LMP_INTARG(v->n));
  else {
    push_elem(L, v, 0);
    lua_pushfstring(L, "Value('%c', %s)", v->code, lua_tostring(L, -1));
  }
  return 1;
}

/* ---------------------------------------------------------------------- */
/* constructors                                                           */
/* ---------------------------------------------------------------------- */
/* the lock option at idx: 1 own lock, 0 none, 2 the Lock/RLock given */
static int lock_opt(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 1;
  if (!lua_istable(L, idx)) lmp_typeerror(L, idx, "options", "a table");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "lock"))
      lmp_error(L, "lmp: unknown option '%s' for Value/Array",
                lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
    lua_pop(L, 1);
  }
  lmp_getfield(L, idx, "lock");
  if (lua_isboolean(L, -1) || lua_isnil(L, -1)) {
    int r = !lua_isboolean(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lmp_tolock(L, -1, "lock option");
  lua_replace(L, idx);
  return 2;
}

static shv *newshv(lua_State *L, int array, lua_Integer n, int optidx) {
  const char *code = lua_tostring(L, 1);
  int w = lua_type(L, 1) == LUA_TSTRING && lmp_rawlen(L, 1) == 1
          ? codewidth(code[0]) : 0, lk;
  size_t off = (sizeof(lmp_lockblk) + 15) & ~(size_t)15;
  shv *v;
  if (w == 0)
    lmp_error(L, "lmp: type code must be one of b B h H i I l L q Q f d, "
                 "got %s", lua_type(L, 1) == LUA_TSTRING ? code
                                                          : luaL_typename(L, 1));
  if (n < 0 || (uint64_t)n > ((uint64_t)1 << 40) / (uint64_t)w)
    lmp_error(L, "lmp: bad Array size " LMP_FMTINT, LMP_INTARG(n));
  lk = lock_opt(L, optidx);
  v = (shv *)lmp_newud(L, sizeof *v, 1);
  memset(v, 0, sizeof *v);
  v->code = code[0];
  v->width = w;
  v->n = n;
  v->array = array;
  luaL_setmetatable(L, array ? LMP_ARRAY : LMP_VALUE);
  v->size = off + (size_t)n * (size_t)w;
  if ((v->mem = lmp_shm_anon(v->size)) == NULL)
    lmp_syserror(L, array ? "Array: mmap" : "Value: mmap");
  v->data = (char *)v->mem + off;
  lmp_ident_register(L, -1);
  if (lk == 1) lmp_lock_borrowed(L, (lmp_lockblk *)v->mem, -1);
  else if (lk == 2) lua_pushvalue(L, optidx);
  else lua_pushnil(L);
  lmp_setuv(L, -2, 1);
  return v;
}

static int mp_value(lua_State *L) {
  shv *v;
  int hasinit = !lua_isnoneornil(L, 2);
  lua_settop(L, 3);
  v = newshv(L, 0, 1, 3);
  if (hasinit) set_elem(L, v, 0, 2);
  return 1;
}

static int mp_array(lua_State *L) {
  shv *v;
  lua_Integer n, i;
  lua_settop(L, 3);
  if (lua_istable(L, 2)) n = (lua_Integer)lmp_rawlen(L, 2);
  else n = lmp_checkint(L, 2, "Array size");
  v = newshv(L, 1, n, 3);
  if (lua_istable(L, 2))
    for (i = 1; i <= n; i++) {
      lmp_rawgeti(L, 2, i);
      set_elem(L, v, i - 1, -1);
      lua_pop(L, 1);
    }
  return 1;
}

void lmp_shvalue_open(lua_State *L) {
  static const luaL_Reg vmethods[] = {
    {"add", v_add}, {"get_lock", v_get_lock}, {NULL, NULL}
  };
  static const luaL_Reg amethods[] = {
    {"add", v_add}, {"get_lock", v_get_lock}, {"totable", v_totable},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__index", v_index}, {"__newindex", v_newindex}, {"__len", v_len},
    {"__gc", v_gc}, {"__tostring", v_tostring}, {NULL, NULL}
  };
  int base, i;
  luaL_newmetatable(L, LMP_VALUE);
  base = lua_gettop(L);
  luaL_newmetatable(L, LMP_ARRAY);
  lua_newtable(L);                           /* the Value's methods */
  lua_newtable(L);                           /* the Array's */
  lua_pushliteral(L, "value");               /* [Vmt Amt Vm Am "value"] */
  for (i = 0; i < 4; i++) {
    /* into Vm, Am, Vmt, Amt; upvalue 3 is the class's own methods */
    int into = i < 2 ? base + 2 + i : base + i - 2, mine = base + 2 + i % 2;
    lua_pushvalue(L, into);
    lua_pushvalue(L, base);                  /* the two metatables */
    lua_pushvalue(L, base + 1);
    lua_pushvalue(L, mine);
    lua_pushvalue(L, base + 4);              /* "value" */
    luaL_setfuncs(L, i == 0 ? vmethods : i == 1 ? amethods : meta, 4);
    if (i >= 2) {
      lua_pushvalue(L, mine);
      lua_setfield(L, -2, "__methods");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 5);
  lua_pushcfunction(L, mp_value);
  lua_setfield(L, -2, "Value");
  lua_pushcfunction(L, mp_array);
  lua_setfield(L, -2, "Array");
}
