/*
** ident.c -- identity across fork.  A forked child has its parent's
** objects as they were at the fork.  An object registered here travels as
** an id and the receiver uses its own copy.  Ids count up (seq, inherited
** with the registry, so a process and its children count on from the same
** point) and carry a per-process salt (a child's later ids differ from its
** parent's).  A sender knows which ids its receiver shares: those given out
** before the receiver was forked, or before the channel between them
** existed (the encoder's identmax).  Both maps are weak: an object nobody
** holds any more needs no id.
*/
#include "ident.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define BLOOM_BITS 4096
struct lmp_ident {
  uint64_t seq;         /* ids given out so far */
  uint32_t salt;
  uint64_t bloom[BLOOM_BITS / 64];   /* registered tables: most tables a
                                        message holds are not, and one bit
                                        test says so */
};

static unsigned bloom_bit(const void *p) {
  return (unsigned)((((uint64_t)(uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ULL)
                    >> 52);
}

static uint32_t new_salt(void) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ (uint32_t)ts.tv_sec;
  }
  return r;
}

static void weak_table(lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

/* pushes the ident userdata: user value 1 object -> id, 2 id -> object */
static lmp_ident *ident_push(lua_State *L) {
  lmp_ident *I;
  if (lmp_rawgetp(L, LUA_REGISTRYINDEX, LMP_KEY_IDENT) == LUA_TUSERDATA)
    return (lmp_ident *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  I = (lmp_ident *)lmp_newud(L, sizeof *I, 2);
  memset(I, 0, sizeof *I);
  I->salt = new_salt();
  weak_table(L, "k");
  lmp_setuv(L, -2, 1);
  weak_table(L, "v");
  lmp_setuv(L, -2, 2);
  lua_pushvalue(L, -1);
  lmp_rawsetp(L, LUA_REGISTRYINDEX, LMP_KEY_IDENT);
  return I;
}

lmp_ident *lmp_ident_get(lua_State *L) {
  lmp_ident *I = ident_push(L);
  lua_pop(L, 1);                       /* the registry keeps it */
  return I;
}

lua_Integer lmp_ident_find(lua_State *L, int idx) {
  lua_Integer id;
  idx = lmp_absindex(L, idx);
  ident_push(L);
  lmp_getuv(L, -1, 1);
  lua_pushvalue(L, idx);
  id = lmp_rawget(L, -2) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 3);
  return id;
}

lua_Integer lmp_ident_register(lua_State *L, int idx) {
  lmp_ident *I;
  lua_Integer id = lmp_ident_find(L, idx);
  if (id != 0) return id;
  idx = lmp_absindex(L, idx);
  I = ident_push(L);
  if (I->seq >= 0x7fffffff) lmp_error(L, "lmp: too many shared objects");
  id = (lua_Integer)((++I->seq << 32) | I->salt);
  if (lua_type(L, idx) == LUA_TTABLE) {
    unsigned b = bloom_bit(lua_topointer(L, idx));
    I->bloom[b / 64] |= (uint64_t)1 << (b % 64);
  }
  lmp_getuv(L, -1, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, id);
  lua_rawset(L, -3);
  lmp_getuv(L, -2, 2);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, id);
  lua_pop(L, 3);
  return id;
}

int lmp_ident_maybe(const lmp_ident *I, const void *p) {
  unsigned b = bloom_bit(p);
  return (int)(I->bloom[b / 64] >> (b % 64) & 1);
}

void lmp_ident_push(lua_State *L, lua_Integer id) {
  ident_push(L);
  lmp_getuv(L, -1, 2);
  lmp_rawgeti(L, -1, id);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

uint64_t lmp_ident_mark(lua_State *L) { return lmp_ident_get(L)->seq; }

void lmp_ident_forked(lua_State *L) { lmp_ident_get(L)->salt = new_salt(); }

/* registers the table at idx if it is an environment other than _G */
static void env_found(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) return;
  idx = lmp_absindex(L, idx);
  lmp_pushglobals(L);
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
    if (lmp_rawget(L, sc->seen) == LUA_TNIL) {
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
    if (strcmp(name, "_ENV") == 0) env_found(L, -1);
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
  lmp_pushmainthread(L);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (M != NULL && M != L) scan_frames(&sc, M);
  while (sc.steps < SCAN_STEPS) {
    if (sc.fhead < sc.ftail) {
      lmp_rawgeti(L, sc.fq, ++sc.fhead);
      scan_function(&sc);
    } else if (sc.thead < sc.ttail) {
      lmp_rawgeti(L, sc.tq, ++sc.thead);
      scan_table(&sc);
    } else break;
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}
