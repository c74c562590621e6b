/*
** lmp.c -- the module: luaopen_lmp opens each part into one table, and
** publishes the capsule lmp.mpi calls lmp through (capsule.h).  The only
** symbol lmp.so exports.  Builds on runtime.h, procfns.h, process.h,
** codec.h, pool.h, ipc.h and capsule.h.  src/DESIGN.md draws the layers.
*/
#include "capsule.h"
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

static const lmp_capsule capsule = {
  LMP_CAPSULE_VERSION, LMP_CAPSULE_SIZES, LMP_VERSION, LMP_WIRE_VERSION,
  lmp_now, lmp_poll, lmp_hook_changed, lmp_hook_restore, lmp_enc_flatten,
  lmp_track_fd, lmp_close_fd, lmp_child_exit
};

int luaopen_lmp(lua_State *L) {
  static void (*const parts[])(lua_State *L) = {
    lmp_procfns_open, lmp_process_open, lmp_codec_open, lmp_pool_open,
    lmp_ipc_open, NULL
  };
  int i;
  lmp_runtime_open(L);
  lua_pushlightuserdata(L, (void *)&capsule);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_KEY_CAPSULE);
  lua_newtable(L);
  for (i = 0; parts[i] != NULL; i++) parts[i](L);
  lua_pushliteral(L, LMP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
