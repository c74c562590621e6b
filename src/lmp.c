/*
** lmp.c -- the module: luaopen_lmp opens each part into one table.  The
** only symbol lmp.so exports.  Builds on runtime.h, procfns.h, process.h,
** codec.h, pool.h and ipc.h.  src/DESIGN.md draws the layers.
*/
#include "codec.h"
#include "ipc.h"
#include "pool.h"
#include "procfns.h"
#include "process.h"
#include "runtime.h"

#define LMP_VERSION "0.2.0"

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_lmp(lua_State *L);

int luaopen_lmp(lua_State *L) {
  static void (*const parts[])(lua_State *L) = {
    lmp_procfns_open, lmp_process_open, lmp_codec_open, lmp_pool_open,
    lmp_ipc_open, NULL
  };
  int i;
  lmp_runtime_open(L);
  lua_newtable(L);
  for (i = 0; parts[i] != NULL; i++) parts[i](L);
  lua_pushliteral(L, LMP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
