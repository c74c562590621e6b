/*
** libvals.c -- the map from library values to their names.  It lives in
** the registry (a Lua table that also keeps the values alive, so a pointer
** in the C map can never be reused by another object) and is rebuilt when
** package.loaded or the registered metatables change.
*/
#include "libvals.h"

#include <string.h>

#define BLOOM_BITS 4096
struct lmp_libvals {
  lmp_phash h;          /* value -> index of its names in the user value */
  uint64_t bloom[BLOOM_BITS / 64];   /* most values are not library ones:
                                        one bit test says so, cheaper than
                                        a probe of h */
  lua_Integer nloaded;  /* fingerprint of package.loaded */
  lua_Integer mtver;    /* mp.register calls seen */
};

static unsigned bloom_bit(const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ULL)
                    >> 52);            /* 12 bits: BLOOM_BITS */
}

static int libvals_gc(lua_State *L) {
  lmp_libvals *K = (lmp_libvals *)lua_touserdata(L, 1);
  lmp_ph_free(&K->h);
  return 0;
}

/*
** A fingerprint of package.loaded (its names and values): the map is
** rebuilt when a module is loaded, unloaded or replaced.
*/
static lua_Integer fingerprint(lua_State *L, int loaded) {
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

/* names[i] = module, names[i+1] = key / false / true, names[i+2] = value */
static void add(lua_State *L, lmp_libvals *K, int names, int v, int mod,
                int key) {
  const void *p = lua_topointer(L, v);
  lua_Integer i;
  unsigned b;
  if (p == NULL || lmp_ph_get(&K->h, p) != 0) return;
  i = (lua_Integer)lmp_rawlen(L, names) + 1;
  lua_pushvalue(L, mod);
  lua_rawseti(L, names, i);
  if (key > 0) lua_pushvalue(L, key);
  else lua_pushboolean(L, key < 0);    /* true: a registered metatable */
  lua_rawseti(L, names, i + 1);
  lua_pushvalue(L, v);                 /* keeps the value alive */
  lua_rawseti(L, names, i + 2);
  if (lmp_ph_put(&K->h, p, i) != 0) lmp_error(L, "lmp: not enough memory");
  b = bloom_bit(p);
  K->bloom[b / 64] |= (uint64_t)1 << (b % 64);
}

static int isnamed(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return (t == LUA_TFUNCTION && lua_iscfunction(L, idx)) || t == LUA_TUSERDATA;
}

/* fills a new map's names from package.loaded and registered metatables */
static void build(lua_State *L, lmp_libvals *K, int loaded, int names) {
  lua_pushnil(L);
  while (lua_next(L, loaded)) {        /* mod, value */
    int mod = lua_gettop(L) - 1, val = lua_gettop(L);
    if (lua_type(L, mod) == LUA_TSTRING &&
        (lua_istable(L, val) || isnamed(L, val))) {
      add(L, K, names, val, mod, 0);
      if (lua_istable(L, val)) {
        lua_pushnil(L);
        while (lua_next(L, val)) {     /* key, member */
          if (lua_type(L, -2) == LUA_TSTRING && isnamed(L, -1))
            add(L, K, names, lua_gettop(L), mod, lua_gettop(L) - 1);
          lua_pop(L, 1);
        }
      }
    }
    lua_pop(L, 1);
  }
  if (lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METABYNAME) == LUA_TTABLE) {
    int byname = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, byname)) {
      add(L, K, names, lua_gettop(L), lua_gettop(L) - 1, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

lmp_libvals *lmp_libvals_push(lua_State *L, int force) {
  lmp_libvals *K;
  lua_Integer n, ver;
  int top = lua_gettop(L), loaded;
  luaL_checkstack(L, 10, NULL);
  lmp_pushloaded(L);
  loaded = lua_gettop(L);
  n = fingerprint(L, loaded);
  lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METAVER);
  ver = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_KNOWN) == LUA_TUSERDATA) {
    K = (lmp_libvals *)lua_touserdata(L, -1);
    if (!force && K->nloaded == n && K->mtver == ver) {
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      return K;
    }
  }
  lua_pop(L, 1);
  K = (lmp_libvals *)lmp_newud(L, sizeof *K, 1);
  memset(K, 0, sizeof *K);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, libvals_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_newtable(L);
  build(L, K, loaded, lua_gettop(L));
  lmp_setuv(L, -2, 1);
  K->nloaded = n;
  K->mtver = ver;
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_KNOWN);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return K;
}

int64_t lmp_libvals_find(const lmp_libvals *K, const void *p) {
  unsigned b = bloom_bit(p);
  if (!(K->bloom[b / 64] >> (b % 64) & 1)) return 0;
  return lmp_ph_get(&K->h, p);
}

int lmp_libvals_current(lua_State *L, int kidx, int64_t i, const void *p) {
  int ok, top = lua_gettop(L), names;
  lmp_getuv(L, kidx, 1);
  names = top + 1;
  lmp_rawgeti(L, names, i + 1);        /* key, false (module) or true */
  if (lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
    lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METABYNAME);
    lmp_rawgeti(L, names, i);
    if (lua_istable(L, -2)) lmp_rawget(L, -2);
    else lua_pushnil(L);
  } else {
    lmp_pushloaded(L);
    lmp_rawgeti(L, names, i);
    lmp_rawget(L, -2);                 /* [key, loaded, module] */
    if (lua_type(L, -3) == LUA_TSTRING) {
      if (lua_istable(L, -1)) {
        lua_pushvalue(L, -3);
        lmp_rawget(L, -2);
      } else lua_pushnil(L);
    } else lua_pushvalue(L, -1);
  }
  ok = lua_topointer(L, -1) == p;
  lua_settop(L, top);
  return ok;
}

void lmp_libvals_pushname(lua_State *L, int kidx, int64_t i) {
  lmp_getuv(L, kidx, 1);
  lmp_rawgeti(L, -1, i);
  lmp_rawgeti(L, -2, i + 1);
  lua_remove(L, -3);
}

/* ---------------------------------------------------------------------- */
/* registered metatables                                                  */
/* ---------------------------------------------------------------------- */
void lmp_register(lua_State *L, int name, int mt) {
  name = lmp_absindex(L, name);
  mt = lmp_absindex(L, mt);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_METABYNAME);
  lmp_getsubtable(L, LUA_REGISTRYINDEX, LMP_KEY_METABYMT);
  /* one name, one table: the latest registration replaces both pairs */
  lua_pushvalue(L, name);
  if (lmp_rawget(L, -3) != LUA_TNIL) { /* the table the name had */
    lua_pushnil(L);
    lua_rawset(L, -3);
  } else lua_pop(L, 1);
  lua_pushvalue(L, mt);
  if (lmp_rawget(L, -2) != LUA_TNIL) { /* the name the table had */
    lua_pushnil(L);
    lua_rawset(L, -4);
  } else lua_pop(L, 1);
  lua_pushvalue(L, name);
  lua_pushvalue(L, mt);
  lua_rawset(L, -4);                   /* byname[name] = mt */
  lua_pushvalue(L, mt);
  lua_pushvalue(L, name);
  lua_rawset(L, -3);                   /* bymt[mt] = name */
  lua_pop(L, 2);
  lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METAVER);
  lua_pushinteger(L, lua_tointeger(L, -1) + 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_METAVER);
  lua_pop(L, 1);
}

void lmp_registered_name(lua_State *L, int mt) {
  mt = lmp_absindex(L, mt);
  if (lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METABYMT) == LUA_TTABLE) {
    lua_pushvalue(L, mt);
    lmp_rawget(L, -2);
    lua_remove(L, -2);
  }
}

void lmp_registered_mt(lua_State *L, const char *name) {
  if (lmp_getfield(L, LUA_REGISTRYINDEX, LMP_KEY_METABYNAME) != LUA_TTABLE ||
      lmp_getfield(L, -1, name) != LUA_TTABLE)
    lmp_error(L, "lmp: decode: metatable '%s' is not registered in this "
                 "process (mp.register)", name);
  lua_remove(L, -2);
}
