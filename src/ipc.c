/*
** ipc.c -- opens the inter-process objects, one part per file.
*/
#include "ipc.h"
#include "cond.h"
#include "conn.h"
#include "queue.h"
#include "sync.h"

void lmp_ipc_open(lua_State *L) {
  static void (*const parts[])(lua_State *L) = {
    lmp_sync_open, lmp_cond_open, lmp_queue_open, lmp_conn_open, NULL
  };
  int i;
  for (i = 0; parts[i] != NULL; i++) parts[i](L);
}
