#include "lmp.h"
void lmp_pool_open(lua_State *L) { (void)L; }
