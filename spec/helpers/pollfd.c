/*
** A test-only Lua module: poll(2) on fds, so a spec can drive lmp from an
** event loop as luv, cqueues or copas would (lmp itself needs no such
** binding).  Built by spec/control_spec.lua into a temporary directory.
**   local pollfd = require "pollfd"
**   pollfd.poll({fd1, fd2}, timeout_ms) --> array of the ready fds
*/
#include <poll.h>
#include <stdlib.h>

#include "lua.h"
#include "lauxlib.h"

static int l_poll(lua_State *L) {
  lua_Integer n = luaL_len(L, 1), i;
  int ms = (int)luaL_optinteger(L, 2, -1), r, k = 0;
  struct pollfd *pf = (struct pollfd *)lua_newuserdatauv(L, sizeof *pf * (size_t)(n ? n : 1), 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    pf[i - 1].fd = (int)lua_tointeger(L, -1);
    pf[i - 1].events = POLLIN;
    pf[i - 1].revents = 0;
    lua_pop(L, 1);
  }
  r = poll(pf, (nfds_t)n, ms);
  lua_newtable(L);
  for (i = 0; r > 0 && i < n; i++)
    if (pf[i].revents) {
      lua_pushinteger(L, pf[i].fd);
      lua_rawseti(L, -2, ++k);
    }
  return 1;
}

int luaopen_pollfd(lua_State *L);
int luaopen_pollfd(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_poll);
  lua_setfield(L, -2, "poll");
  return 1;
}
