/*
** codec.c -- mp.encode, mp.decode and mp.register.
*/
#include "codec.h"

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
  const char *s;
  int flags = 0;
  lmp_dec D;
  if (lua_type(L, 1) != LUA_TSTRING) lmp_typeerror(L, 1, "message", "a string");
  s = lua_tolstring(L, 1, &len);
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_istable(L, 2)) lmp_typeerror(L, 2, "decode options", "a table");
    lmp_getfield(L, 2, "functions");
    if (lua_toboolean(L, -1)) flags = LMP_DEC_FUNCTIONS | LMP_DEC_IDENT;
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  n = lmp_dec_begin(&D, L, s, len, flags);
  for (i = 0; i < n; i++) {
    if (!lua_checkstack(L, 8)) lmp_error(L, "lmp: decode: too many values");
    lmp_dec_value(&D);
  }
  lmp_dec_end(&D);
  return (int)n;
}

static int codec_register(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) lmp_typeerror(L, 1, "metatable name", "a string");
  if (!lua_istable(L, 2)) lmp_typeerror(L, 2, "metatable", "a table");
  if (lmp_rawlen(L, 1) == 0) lmp_error(L, "lmp: metatable name must not be empty");
  lmp_register(L, 1, 2);
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
