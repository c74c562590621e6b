/*
** wire.c -- framing and EINTR-safe system-call helpers shared by Process
** and Pool.  A frame is an 8-byte little-endian payload length followed by
** the payload.
*/
#include "lmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* the wire is little-endian; on such hosts these are plain copies */
uint64_t lmp_get64(const void *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
#else
  const unsigned char *b = (const unsigned char *)p;
  uint64_t v = 0;
  int i;
  for (i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
#endif
}

void lmp_put64(void *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(p, &v, 8);
#else
  unsigned char *b = (unsigned char *)p;
  int i;
  for (i = 0; i < 8; i++) {
    b[i] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
#endif
}

/*
** lua.c answers SIGINT by installing a count hook on the main thread that
** raises "interrupted!" at its next instruction; a C loop that retries
** EINTR would never let it run, so waits give up when that hook (or the
** running thread's own) changes under them.  The main thread's is the one
** to watch: a wait inside a coroutine would never see its own change.
*/
void lmp_hook_save(lua_State *L, lmp_hook *h) {
  h->L = L;
  h->f = lua_gethook(L);
  h->mask = lua_gethookmask(L);
  h->count = lua_gethookcount(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  h->M = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (h->M == L) h->M = NULL;
  if (h->M != NULL) {
    h->mf = lua_gethook(h->M);
    h->mmask = lua_gethookmask(h->M);
    h->mcount = lua_gethookcount(h->M);
  }
}

int lmp_hook_changed(lua_State *L, const lmp_hook *h) {
  (void)L;
  if (lua_gethook(h->L) != h->f || lua_gethookmask(h->L) != h->mask ||
      lua_gethookcount(h->L) != h->count)
    return 1;
  return h->M != NULL &&
         (lua_gethook(h->M) != h->mf || lua_gethookmask(h->M) != h->mmask ||
          lua_gethookcount(h->M) != h->mcount);
}

/* the caller turns the interrupt into "lmp: interrupted": the hooks go
   back as they were, so it is not raised a second time */
void lmp_hook_restore(const lmp_hook *h) {
  lua_sethook(h->L, h->f, h->mask, h->count);
  if (h->M != NULL) lua_sethook(h->M, h->mf, h->mmask, h->mcount);
}

/*
** The caller lets the interrupt reach the script itself (mp.sleep): from a
** coroutine, the main thread's new hook is copied onto the running thread
** so that it fires there at once; the main thread keeps it, and fires too
** when it runs again, in case the coroutine's caller catches the error.
*/
void lmp_hook_deliver(const lmp_hook *h) {
  if (h->M != NULL &&
      (lua_gethook(h->M) != h->mf || lua_gethookmask(h->M) != h->mmask ||
       lua_gethookcount(h->M) != h->mcount))
    lua_sethook(h->L, lua_gethook(h->M), lua_gethookmask(h->M),
                lua_gethookcount(h->M));
}

double lmp_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* milliseconds until a deadline, for poll(): -1 none; never overflows */
int lmp_pollms(double deadline) {
  double left;
  if (deadline < 0) return -1;
  left = deadline - lmp_now();
  if (left <= 0) return 0;
  if (left > 1e6) return 1000000000;   /* poll again then */
  return (int)(left * 1000.0) + 1;
}

int lmp_poll(lua_State *L, const lmp_hook *h, void *fds, unsigned nfds,
             double deadline) {
  for (;;) {
    int r = poll((struct pollfd *)fds, (nfds_t)nfds, lmp_pollms(deadline));
    if (r >= 0) return r;
    if (errno != EINTR) return -1;
    if (h != NULL && lmp_hook_changed(L, h)) {
      lmp_hook_restore(h);
      return -2;
    }
  }
}

int lmp_writeall(int fd, const void *p, size_t n) {
  const char *s = (const char *)p;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

ssize_t lmp_read(int fd, void *p, size_t n) {
  for (;;) {
    ssize_t r = read(fd, p, n);
    if (r >= 0 || errno != EINTR) return r;
  }
}

/*
** Result pipes get 1 MiB of kernel buffer when the system allows it: big
** results then cross in far fewer wake-ups (64 KiB is the default).
*/
int lmp_pipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
#if defined(F_SETPIPE_SZ)
  (void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
#endif
  return 0;
}

/* ---------------------------------------------------------------------- */
/* frame reader                                                           */
/* ---------------------------------------------------------------------- */
int lmp_reader_frame(lmp_reader *r, const char **p, size_t *n) {
  size_t avail = r->b.n - r->pos;
  uint64_t len;
  if (avail < 8) return 0;
  len = lmp_get64(r->b.p + r->pos);
  if (len > avail - 8) return 0;
  *p = r->b.p + r->pos + 8;
  *n = (size_t)len;
  r->pos += 8 + (size_t)len;
  return 1;
}

void lmp_reader_compact(lmp_reader *r) {
  if (r->pos == 0) return;
  if (r->pos == r->b.n) {
    r->b.n = 0;
    if (r->b.cap > (4u << 20)) lmp_buf_free(&r->b);  /* after a huge frame */
  } else {
    memmove(r->b.p, r->b.p + r->pos, r->b.n - r->pos);
    r->b.n -= r->pos;
  }
  r->pos = 0;
}

/*
** One read.  When a frame header is buffered, room for the whole frame is
** made at once so a large payload arrives in few, large reads.
*/
int lmp_reader_fill(lmp_reader *r, int fd) {
  size_t want = 64 * 1024, avail;
  ssize_t got;
  lmp_reader_compact(r);
  avail = r->b.n;
  if (avail >= 8) {
    uint64_t len = lmp_get64(r->b.p);
    if (len + 8 > avail && len + 8 - avail > want) {
      if (len > (uint64_t)SIZE_MAX - 16) {
        errno = EFBIG;
        return -1;
      }
      want = (size_t)(len + 8 - avail);
    }
  }
  if (r->b.cap - r->b.n < want && lmp_buf_grow(&r->b, want) != 0) {
    errno = ENOMEM;
    return -1;
  }
  got = lmp_read(fd, r->b.p + r->b.n, r->b.cap - r->b.n);
  if (got < 0) return -1;
  if (got == 0) return 0;
  r->b.n += (size_t)got;
  return 1;
}

void lmp_reader_free(lmp_reader *r) {
  lmp_buf_free(&r->b);
  r->pos = 0;
}

int lmp_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int lmp_iscallable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* math.huge (or any timeout past ~30 years) means no limit */
double lmp_optdeadline(lua_State *L, int arg) {
  lua_Number t;
  if (lua_isnoneornil(L, arg)) return -1;
  if (lua_type(L, arg) != LUA_TNUMBER)
    lmp_error(L, "lmp: timeout must be a number, got %s",
              luaL_typename(L, arg));
  t = lua_tonumber(L, arg);
  if (t != t) lmp_error(L, "lmp: timeout must be a number, got nan");
  if (t < 0) lmp_error(L, "lmp: negative timeout");
  if (t > 1e9) return -1;
  return lmp_now() + (double)t;
}

/* luaL_checkudata with an lmp: message (objects raise lmp: errors) */
void *lmp_checkudata(lua_State *L, int idx, const char *tname,
                     const char *what) {
  void *u = luaL_testudata(L, idx, tname);
  if (u == NULL)
    lmp_error(L, "lmp: expected a %s, got %s (call methods with ':')", what,
              luaL_typename(L, idx));
  return u;
}

int lmp_pushargs(lua_State *L, int idx) {
  lua_Integer n, i;
  idx = lua_absindex(L, idx);
  if (lua_isnil(L, idx)) return 0;
  if (!lua_istable(L, idx))
    return lmp_error(L, "lmp: args must be a table, got %s",
                     luaL_typename(L, idx));
  if (lua_getfield(L, idx, "n") == LUA_TNUMBER) n = lua_tointeger(L, -1);
  else n = (lua_Integer)luaL_len(L, idx);
  lua_pop(L, 1);
  if (n < 0) n = 0;
  if (n > 1000000 || !lua_checkstack(L, (int)n + 4))
    lmp_error(L, "lmp: too many arguments");
  for (i = 1; i <= n; i++) lua_rawgeti(L, idx, i);
  return (int)n;
}

int lmp_syserror(lua_State *L, const char *what) {
  return lmp_error(L, "lmp: %s: %s", what, strerror(errno));
}

/*
** Message handler for tasks: a string error gets the traceback appended;
** any other value is kept as it is.
*/
int lmp_traceback(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}
