/*
** libvals.h -- values that travel by name: loaded modules, the C functions
** and userdata directly inside them, and metatables given a name with
** mp.register.  The receiver has its own copy of each.  Builds on luax.h
** and phash.h.
*/
#ifndef LMP_LIBVALS_H
#define LMP_LIBVALS_H

#include "luax.h"
#include "phash.h"

typedef struct lmp_libvals lmp_libvals;

/*
** Pushes the map (a userdata; its names live in its user value) and
** returns it: the registry's, rebuilt when package.loaded or the set of
** registered metatables changed since, or when `force` (a module's members
** changed, which the fingerprint of package.loaded misses).
*/
LMP_INTERNAL lmp_libvals *lmp_libvals_push(lua_State *L, int force);
/* the entry of p in the map, 0 if p is no library value (a bit test
   answers most of these) */
LMP_INTERNAL int64_t lmp_libvals_find(const lmp_libvals *K, const void *p);
/* 1 if entry i of the map at kidx still names p (a module's member may
   have been replaced since the map was built) */
LMP_INTERNAL int lmp_libvals_current(lua_State *L, int kidx, int64_t i,
                                     const void *p);
/* pushes entry i's module name, then its key in the module (a string),
   false (the module itself) or true (a registered metatable) */
LMP_INTERNAL void lmp_libvals_pushname(lua_State *L, int kidx, int64_t i);

/* registered metatables (mp.register) */
LMP_INTERNAL void lmp_register(lua_State *L, int name, int mt);
/* pushes the name of the metatable at idx, or nil */
LMP_INTERNAL void lmp_registered_name(lua_State *L, int mt);
/* pushes the metatable registered as `name`, or raises
   "lmp: decode: metatable '<name>' is not registered in this process" */
LMP_INTERNAL void lmp_registered_mt(lua_State *L, const char *name);

#endif
