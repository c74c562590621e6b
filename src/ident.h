/*
** ident.h -- identity across fork: objects that travel as an id and arrive
** as the receiver's own copy (a task's environment, an IPC object).  See
** src/DESIGN.md, "Identity across fork".  Builds on luax.h.
*/
#ifndef LMP_IDENT_H
#define LMP_IDENT_H

#include "luax.h"

#include <stdint.h>

typedef struct lmp_ident lmp_ident;

/* the registry's ident state (made on first use); pushes nothing */
LMP_INTERNAL lmp_ident *lmp_ident_get(lua_State *L);
/* the id of the object at idx, registering it if it has none */
LMP_INTERNAL lua_Integer lmp_ident_register(lua_State *L, int idx);
/* the id of the object at idx, or 0 */
LMP_INTERNAL lua_Integer lmp_ident_find(lua_State *L, int idx);
/* 0 if the table at p is certainly not registered (a bit test) */
LMP_INTERNAL int lmp_ident_maybe(const lmp_ident *I, const void *p);
/* pushes the object with that id, or nil */
LMP_INTERNAL void lmp_ident_push(lua_State *L, lua_Integer id);
/* ids given out so far: a receiver forked now shares every id up to it */
LMP_INTERNAL uint64_t lmp_ident_mark(lua_State *L);
#define LMP_IDENT_SEQ(id) ((uint64_t)(id) >> 32)
/* in a new child: ids it gives out from now on differ from its parent's */
LMP_INTERNAL void lmp_ident_forked(lua_State *L);
/* registers the environments reachable from the stack (before a pool forks) */
LMP_INTERNAL void lmp_ident_scan(lua_State *L);

#endif
