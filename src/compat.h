/*
** compat.h -- the Lua API lmp uses that differs between Lua versions, under
** lmp_ names.  The only file where such calls appear: the rest of lmp calls
** these, so supporting Lua 5.1-5.3 or LuaJIT means rewriting this file
** (as LPeg keeps its version differences in lptypes.h).  Builds on lua.h
** and lauxlib.h; today it maps onto Lua 5.4.
*/
#ifndef LMP_COMPAT_H
#define LMP_COMPAT_H

/* POSIX + Linux interfaces (pipe2, waitid, pidfd...) for every file: this
   header comes first in each of them */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM != 504
#error "lmp needs Lua 5.4 (compat.h maps lmp_ names onto 5.4's API)"
#endif

/* userdata with user values */
#define lmp_newud(L, size, nuv)  lua_newuserdatauv((L), (size), (nuv))
#define lmp_getuv(L, idx, n)     lua_getiuservalue((L), (idx), (n))
#define lmp_setuv(L, idx, n)     lua_setiuservalue((L), (idx), (n))

/* getters that return the value's type (void before 5.3) */
#define lmp_getfield(L, idx, k)  lua_getfield((L), (idx), (k))
#define lmp_rawget(L, idx)       lua_rawget((L), (idx))
#define lmp_rawgeti(L, idx, i)   lua_rawgeti((L), (idx), (i))
#define lmp_rawgetp(L, idx, p)   lua_rawgetp((L), (idx), (p))
#define lmp_geti(L, idx, i)      lua_geti((L), (idx), (i))
#define lmp_getmetafield(L, o, e) luaL_getmetafield((L), (o), (e))
#define lmp_rawsetp(L, idx, p)   lua_rawsetp((L), (idx), (p))

/* the registry's fixed entries */
#define lmp_pushglobals(L) \
  ((void)lua_rawgeti((L), LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS))
#define lmp_pushmainthread(L) \
  ((void)lua_rawgeti((L), LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD))
#define lmp_pushloaded(L) \
  ((void)luaL_getsubtable((L), LUA_REGISTRYINDEX, LUA_LOADED_TABLE))
#define lmp_getsubtable(L, idx, k) luaL_getsubtable((L), (idx), (k))

/* numbers: 64-bit integers as their own subtype */
#define lmp_isinteger(L, idx)    lua_isinteger((L), (idx))
#define LMP_MAXINTEGER           LUA_MAXINTEGER
/* lua_pushfstring's conversion for a lua_Integer, and its argument */
#define LMP_FMTINT               "%I"
#define LMP_INTARG(i)            ((LUAI_UACINT)(i))

/* functions: bytecode, upvalue identity, loading */
#define lmp_dump(L, w, ud)       lua_dump((L), (w), (ud), 0)
#define lmp_loadbinary(L, r, ud, name) lua_load((L), (r), (ud), (name), "b")
#define lmp_upvalueid(L, f, n)   lua_upvalueid((L), (f), (n))
#define lmp_upvaluejoin(L, f1, n1, f2, n2) \
  lua_upvaluejoin((L), (f1), (n1), (f2), (n2))

/* lengths and indices */
#define lmp_absindex(L, idx)     lua_absindex((L), (idx))
#define lmp_rawlen(L, idx)       lua_rawlen((L), (idx))
#define lmp_len(L, idx)          lua_len((L), (idx))
#define lmp_tolstring(L, idx, n) luaL_tolstring((L), (idx), (n))
#define lmp_traceback(L, L1, msg, level) luaL_traceback((L), (L1), (msg), (level))

/* the collector */
#define lmp_gc_collect(L)        ((void)lua_gc((L), LUA_GCCOLLECT, 0))
#define lmp_gc_stop(L)           ((void)lua_gc((L), LUA_GCSTOP, 0))
#define lmp_gc_restart(L)        ((void)lua_gc((L), LUA_GCRESTART, 0))

#endif
