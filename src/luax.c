/*
** luax.c -- Lua helpers shared by lmp's objects.
*/
#include "luax.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

int lmp_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int lmp_typeerror(lua_State *L, int idx, const char *what,
                  const char *expected) {
  return lmp_error(L, "lmp: %s must be %s, got %s", what, expected,
                   luaL_typename(L, idx));
}

int lmp_syserror(lua_State *L, const char *what) {
  return lmp_error(L, "lmp: %s: %s", what, strerror(errno));
}

lua_Integer lmp_checkint(lua_State *L, int idx, const char *what) {
  int isint = 0;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint || lua_type(L, idx) != LUA_TNUMBER) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      lmp_error(L, "lmp: %s must be an integer, got %s", what,
                lua_tostring(L, idx));
    lmp_typeerror(L, idx, what, "an integer");
  }
  return v;
}

int lmp_iscallable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  if (lmp_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

void *lmp_checkudata(lua_State *L, int idx, const char *tname,
                     const char *what) {
  void *u = luaL_testudata(L, idx, tname);
  if (u == NULL)
    lmp_error(L, "lmp: expected a %s, got %s (call methods with ':')", what,
              luaL_typename(L, idx));
  return u;
}

/* math.huge (or any timeout past ~30 years) means no limit */
double lmp_optdeadline(lua_State *L, int idx) {
  lua_Number t;
  if (lua_isnoneornil(L, idx)) return -1;
  if (lua_type(L, idx) != LUA_TNUMBER)
    lmp_typeerror(L, idx, "timeout", "a number");
  t = lua_tonumber(L, idx);
  if (t != t) lmp_error(L, "lmp: timeout must be a number, got nan");
  if (t < 0) lmp_error(L, "lmp: negative timeout");
  if (t > 1e9) return -1;
  return lmp_now() + (double)t;
}

/* edit distance of two short names, capped at 3 */
static int distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), i, j;
  int d[32][32];
  if (la > 30 || lb > 30) return 3;
  for (i = 0; i <= la; i++) d[i][0] = (int)i;
  for (j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (i = 1; i <= la; i++)
    for (j = 1; j <= lb; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb] < 3 ? d[la][lb] : 3;
}

void lmp_checkopts(lua_State *L, int idx, const char *call,
                   const char *const names[]) {
  idx = lmp_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k, *near = NULL;
    int i, best = 3;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      lmp_error(L, "lmp: option names for %s must be strings, got %s", call,
                luaL_typename(L, -1));
    k = lua_tostring(L, -1);
    for (i = 0; names[i] != NULL; i++) {
      int d;
      if (strcmp(k, names[i]) == 0) break;
      d = distance(k, names[i]);
      if (d < best || (strncmp(k, names[i], strlen(k)) == 0 && d < 3)) {
        best = d;
        near = names[i];
      }
    }
    if (names[i] != NULL) continue;
    if (near != NULL)
      lmp_error(L, "lmp: unknown option '%s' for %s (did you mean '%s'?)", k,
                call, near);
    lmp_error(L, "lmp: unknown option '%s' for %s", k, call);
  }
}

double lmp_optseconds(lua_State *L, int idx, const char *what) {
  lua_Number t;
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_type(L, idx) != LUA_TNUMBER)
    lmp_typeerror(L, idx, what, "a number of seconds");
  t = lua_tonumber(L, idx);
  if (t != t)
    lmp_error(L, "lmp: %s must be a positive number of seconds, got NaN", what);
  if (!(t > 0))   /* 0 would fail every task before it starts */
    lmp_error(L, "lmp: %s must be a positive number of seconds, got %s",
              what, lua_tostring(L, idx));
  return t > 1e9 ? -1 : (double)t;    /* math.huge: none, said explicitly */
}

int lmp_pushargs(lua_State *L, int idx) {
  lua_Integer n, i;
  idx = lmp_absindex(L, idx);
  if (lua_isnil(L, idx)) return 0;
  if (!lua_istable(L, idx)) return lmp_typeerror(L, idx, "args", "a table");
  if (lmp_getfield(L, idx, "n") == LUA_TNUMBER) n = lua_tointeger(L, -1);
  else n = (lua_Integer)luaL_len(L, idx);
  lua_pop(L, 1);
  if (n < 0) n = 0;
  if (n > 1000000 || !lua_checkstack(L, (int)n + 4))
    lmp_error(L, "lmp: too many arguments");
  for (i = 1; i <= n; i++) lmp_rawgeti(L, idx, i);
  return (int)n;
}

int lmp_msgh(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING)
    lmp_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

int lmp_nupvalues(lua_State *L, int idx) {
  int n = 0;
  while (lua_getupvalue(L, idx, n + 1) != NULL) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}

int lmp_uvfield(lua_State *L, int idx, const char *k) {
  int t;
  lmp_getuv(L, idx, 1);
  t = lmp_getfield(L, -1, k);
  lua_remove(L, -2);
  return t;
}

void lmp_setuvfield(lua_State *L, int idx, const char *k) {
  idx = lmp_absindex(L, idx);
  lmp_getuv(L, idx, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
}

static const char nilmark = 0;

void lmp_pushnilmark(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&nilmark);
}

int lmp_isnilmark(lua_State *L, int idx) {
  return lua_touserdata(L, idx) == (void *)&nilmark &&
         lua_type(L, idx) == LUA_TLIGHTUSERDATA;
}

/* ---------------------------------------------------------------------- */
/* interrupts                                                             */
/* ---------------------------------------------------------------------- */
/*
** The main thread's hook is the one to watch: lua.c sets it there, so a
** wait inside a coroutine would never see its own hook change.
*/
void lmp_hook_save(lua_State *L, lmp_hook *h) {
  h->L = L;
  h->f = lua_gethook(L);
  h->mask = lua_gethookmask(L);
  h->count = lua_gethookcount(L);
  lmp_pushmainthread(L);
  h->M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (h->M == L) h->M = NULL;
  if (h->M != NULL) {
    h->mf = lua_gethook(h->M);
    h->mmask = lua_gethookmask(h->M);
    h->mcount = lua_gethookcount(h->M);
  }
}

static int main_changed(const lmp_hook *h) {
  return h->M != NULL &&
         (lua_gethook(h->M) != h->mf || lua_gethookmask(h->M) != h->mmask ||
          lua_gethookcount(h->M) != h->mcount);
}

int lmp_hook_changed(const lmp_hook *h) {
  return lua_gethook(h->L) != h->f || lua_gethookmask(h->L) != h->mask ||
         lua_gethookcount(h->L) != h->count || main_changed(h);
}

void lmp_hook_restore(const lmp_hook *h) {
  lua_sethook(h->L, h->f, h->mask, h->count);
  if (h->M != NULL) lua_sethook(h->M, h->mf, h->mmask, h->mcount);
}

/*
** From a coroutine, the main thread's new hook is copied onto the waiting
** thread so that it fires there at once; the main thread keeps it, and
** fires too when it runs again, in case the coroutine's caller catches
** the error.
*/
void lmp_hook_deliver(const lmp_hook *h) {
  if (main_changed(h))
    lua_sethook(h->L, lua_gethook(h->M), lua_gethookmask(h->M),
                lua_gethookcount(h->M));
}

static int hook_stop(void *ud) {
  return lmp_hook_changed((const lmp_hook *)ud);
}

int lmp_poll(const lmp_hook *h, void *fds, unsigned nfds, double deadline) {
  int r = lmp_sys_poll(fds, nfds, deadline, h ? hook_stop : NULL, (void *)h);
  if (r == -2) lmp_hook_restore(h);
  return r;
}
