/*
** waitobj.c -- mp.wait(objects [, timeout]): the objects that are ready,
** like Python's multiprocessing.connection.wait.  A Connection is ready
** when recv would not block (data, or the peer closed); a Queue when it has
** an item (its doorbell, queue.c); a Process when its child ended (its
** pidfd, and is_alive(), which also drains the child's result pipe so a
** big result cannot keep the child from ending: that pipe is polled too);
** an AsyncResult when ready() says so (asked again whenever its pool has
** replies waiting, and every 50 ms for what only time brings: a task's
** timeout, a replacement worker); an integer fd, or an object with a
** fileno() method, when the fd is readable.  Process and AsyncResult lend
** their fds through a __fileno metafield, so this file needs only their
** class names.
** mp.wait(pid [, nohang]) keeps its meaning (procfns.c): this file's
** mp.wait calls that one for anything but a table.
*/
#include "waitobj.h"

#include "conn.h"
#include "queue.h"

#include <limits.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

/* kindof() also answers O_FILENO (an object with a fileno method, which
   scan() turns into an O_FD) and O_NONE */
enum { O_NONE, O_FILENO, O_FD, O_CONN, O_QUEUE, O_PROC, O_RESULT };

typedef struct wobj {
  int kind;
  int fd;               /* polled fd, -1 for none */
  int ownfd;            /* fd is ours to close (a pidfd) */
  int fd2;              /* a second fd, -1 for none (__fileno) */
  int ready;
} wobj;

#define RESCAN 0.05     /* seconds between two looks at an AsyncResult */

/* the object's __fileno metafield's fd, or -1 */
static int metafileno(lua_State *L, int idx) {
  int fd = -1;
  if (lmp_getmetafield(L, idx, "__fileno") != LUA_TNIL) {
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    if (lua_isinteger(L, -1)) fd = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  return fd;
}

/* calls method `name` of the object at idx; its first result as a boolean */
static int callmethod(lua_State *L, int idx, const char *name) {
  int r;
  lua_getfield(L, idx, name);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  r = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return r;
}

static int kindof(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return O_FD;
  if (luaL_testudata(L, idx, LMP_CONN)) return O_CONN;
  if (luaL_testudata(L, idx, LMP_QUEUE)) return O_QUEUE;
  if (luaL_testudata(L, idx, LMP_PROCESS)) return O_PROC;
  if (luaL_testudata(L, idx, LMP_RESULT)) return O_RESULT;
  {
    int has = lmp_getmetafield(L, idx, "__index") != LUA_TNIL;
    if (has) lua_pop(L, 1);
    if (has || lua_istable(L, idx)) {
      int t = lmp_getfield(L, idx, "fileno");
      lua_pop(L, 1);
      if (t != LUA_TNIL) return O_FILENO;
    }
  }
  return O_NONE;
}

/*
** First pass: what may raise (type checks, Lua methods) runs before any
** queue is told we poll it or any pidfd is open.  Returns 1 if something
** is ready already.
*/
static int scan(lua_State *L, wobj *w, int n) {
  int i, any = 0;
  for (i = 0; i < n; i++) {
    int idx, k;
    lmp_rawgeti(L, 1, i + 1);
    idx = lua_gettop(L);
    k = kindof(L, idx);
    w[i].fd = -1;
    w[i].ownfd = 0;
    w[i].ready = 0;
    if (k == O_NONE)
      lmp_error(L, "lmp: mp.wait: objects[%d] is a %s, not a Connection, "
                   "Queue, Process, AsyncResult or fd", i + 1,
                luaL_typename(L, idx));
    if (k == O_FILENO) {                /* an object with fileno() */
      lua_getfield(L, idx, "fileno");
      lua_pushvalue(L, idx);
      lua_call(L, 1, 1);
      lua_replace(L, idx);
      k = O_FD;
    }
    w[i].kind = k;
    w[i].fd2 = k == O_PROC || k == O_RESULT ? metafileno(L, idx) : -1;
    if (k == O_FD) {
      lua_Integer fd = lmp_checkint(L, idx, "fd");
      if (fd < 0 || fd > INT_MAX)
        lmp_error(L, "lmp: mp.wait: objects[%d]: %I is not a valid fd",
                  i + 1, fd);
      w[i].fd = (int)fd;
    }
    else if (k == O_CONN) w[i].fd = lmp_conn_fd(L, idx);
    else if (k == O_PROC) w[i].ready = !callmethod(L, idx, "is_alive");
    else if (k == O_RESULT) w[i].ready = callmethod(L, idx, "ready");
    else if (k == O_QUEUE) {
      int fd;
      w[i].ready = lmp_queue_poll(L, idx, &fd);
      lmp_queue_unpoll(L, idx);
    }
    any |= w[i].ready;
    lua_pop(L, 1);
  }
  return any;
}

/* second pass: doorbells and pidfds (nothing here raises) */
static void arm(lua_State *L, wobj *w, int n, struct pollfd *f) {
  int i;
  for (i = 0; i < n; i++) {
    lmp_rawgeti(L, 1, i + 1);
    if (w[i].kind == O_QUEUE) w[i].ready = lmp_queue_poll(L, -1, &w[i].fd);
    else if (w[i].kind == O_PROC) {
      lua_getfield(L, -1, "pid");
      w[i].fd = lmp_pidfd((pid_t)lua_tointeger(L, -1));
      w[i].ownfd = w[i].fd >= 0;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    f[2 * i].fd = w[i].fd;             /* negative: poll skips it */
    f[2 * i + 1].fd = w[i].fd2;
    f[2 * i].events = f[2 * i + 1].events = POLLIN;
    f[2 * i].revents = f[2 * i + 1].revents = 0;
  }
}

static void disarm(lua_State *L, wobj *w, int n, struct pollfd *f) {
  int i;
  for (i = 0; i < n; i++) {
    if (f[2 * i].revents != 0 && w[i].kind != O_QUEUE && w[i].kind != O_RESULT)
      w[i].ready = 1;                  /* a pipe or fd; a pidfd: ended */
    if (w[i].kind == O_QUEUE) {
      lmp_rawgeti(L, 1, i + 1);
      lmp_queue_unpoll(L, -1);
      lua_pop(L, 1);
    }
    if (w[i].ownfd) close(w[i].fd);
    w[i].ownfd = 0;
  }
}

static int waitobjs(lua_State *L) {
  int n = (int)lmp_rawlen(L, 1), i, k = 0, r, any;
  double deadline = lmp_optdeadline(L, 2), pause = 0.001;
  wobj *w;
  struct pollfd *f;
  lmp_hook h;
  lua_settop(L, 2);
  /* nothing to wait for: with no timeout that would be for ever (Python
     blocks), so the empty list at once; with one, after it, as Python */
  if (n == 0) {
    if (deadline >= 0) {
      lmp_hook_save(L, &h);
      for (;;) {
        double left = deadline - lmp_now();
        if (left <= 0) break;
        r = lmp_poll(&h, NULL, 0, deadline);
        if (r == -2) return lmp_error(L, "lmp: interrupted");
        if (r < 0) return lmp_syserror(L, "mp.wait: poll");
      }
    }
    lua_newtable(L);
    return 1;
  }
  w = (wobj *)lmp_newud(L, sizeof *w * (size_t)(n + 1), 0);
  f = (struct pollfd *)lmp_newud(L, sizeof *f * (size_t)(2 * n + 1), 0);
  lmp_hook_save(L, &h);
  for (;;) {
    double until = deadline, now;
    int slow = 0;
    any = scan(L, w, n);
    arm(L, w, n, f);
    now = lmp_now();
    for (i = 0; i < n; i++) {
      any |= w[i].ready;
      if (w[i].kind == O_RESULT) slow |= w[i].fd2 < 0 ? 1 : 2;
      if (w[i].kind == O_PROC && w[i].fd < 0) slow |= 1;   /* no pidfd */
    }
    /* what no fd announces is looked at again every few ms (growing to
       20), or every RESCAN seconds for a result whose pool has an fd */
    if ((slow & 1) && (until < 0 || until > now + pause)) until = now + pause;
    if (slow == 2 && (until < 0 || until > now + RESCAN)) until = now + RESCAN;
    if (any || (deadline >= 0 && deadline <= now)) until = now;
    r = lmp_poll(&h, f, (unsigned)(2 * n), until);
    disarm(L, w, n, f);
    if (r == -2) return lmp_error(L, "lmp: interrupted");
    if (r < 0) return lmp_syserror(L, "mp.wait: poll");
    for (i = 0; i < n; i++) any |= w[i].ready;
    if (any || (deadline >= 0 && lmp_now() >= deadline)) break;
    if (pause < 0.02) pause *= 2;
  }
  lua_newtable(L);
  for (i = 0; i < n; i++)
    if (w[i].ready) {
      lmp_rawgeti(L, 1, i + 1);
      lua_rawseti(L, -2, ++k);
    }
  return 1;
}

static int mp_wait(lua_State *L) {
  int n;
  if (lua_istable(L, 1)) return waitobjs(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  n = lua_gettop(L) - 1;
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

void lmp_waitobj_open(lua_State *L) {
  lmp_getfield(L, -1, "wait");
  lua_pushcclosure(L, mp_wait, 1);
  lua_setfield(L, -2, "wait");
}
