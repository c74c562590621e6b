/*
** ipc.c -- opens the inter-process objects, one part per file.
*/
#include "ipc.h"
#include "cond.h"
#include "conn.h"
#include "queue.h"
#include "shvalue.h"
#include "sync.h"
#include "waitobj.h"

void lmp_ipc_open(lua_State *L) {
  static void (*const parts[])(lua_State *L) = {
    lmp_sync_open, lmp_cond_open, lmp_queue_open, lmp_conn_open, lmp_shvalue_open,
    lmp_waitobj_open, NULL
  };
  int i;
  for (i = 0; parts[i] != NULL; i++) parts[i](L);
}
