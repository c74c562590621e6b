/*
** libFuzzer harness for mp.decode: `make fuzz-short` / `make fuzz-long`.
** One interpreter for the whole run; every input is decoded under
** lua_pcall with the default options (functions refused), so an error
** raised for malformed input is fine and only a crash, a sanitizer report
** or a hang is a finding.
*/
#include <stddef.h>
#include <stdint.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#define GC_EVERY 1000   /* full collection every GC_EVERY inputs */

int luaopen_lmp(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int decode_ref = LUA_NOREF;
static unsigned long ninputs;

/*
** Created on the first input (not in LLVMFuzzerInitialize) so the harness
** needs no command-line handling; the state lives until the process exits.
*/
static void setup(void) {
  L = luaL_newstate();
  if (L == NULL)
    __builtin_trap();
  luaL_openlibs(L);
  luaL_requiref(L, "lmp", luaopen_lmp, 0);  /* stack: lmp */
  lua_getfield(L, -1, "decode");             /* stack: lmp decode */
  if (!lua_isfunction(L, -1))
    __builtin_trap();
  decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL)
    setup();
  lua_rawgeti(L, LUA_REGISTRYINDEX, decode_ref);
  lua_pushlstring(L, (const char *)data, size);
  (void)lua_pcall(L, 1, LUA_MULTRET, 0);  /* errors are expected */
  lua_settop(L, 0);
  if (++ninputs % GC_EVERY == 0)
    lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
