/*
** conn.c -- mp.Pipe and Connection.
**
** Both ends of a pipe are a SOCK_SEQPACKET socket pair: the kernel keeps
** packet boundaries, so a small message is one send() and one recv() (no
** read-ahead: a process that forks while holding a Connection leaves
** nothing buffered that its child would see twice), and MSG_NOSIGNAL turns
** a closed peer into EPIPE without touching SIGPIPE.  A message is a frame
** (wire.h: 8-byte length, payload) cut into packets of at most CHUNK bytes.
** The sockets have a receive/send timeout of one slice: a blocking call
** then fails with EINTR on a signal even under SA_RESTART, and wakes every
** slice, so Ctrl-C and deadlines are seen.
*/
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

typedef struct conn {
  int fd;
  int readable, writable;
  uint64_t identmark;   /* objects both ends share */
  char *rbuf;           /* CHUNK bytes for one packet, made on first recv */
} conn;

static const char cenc = 0;           /* registry: the send encoder */

static conn *checkconn(lua_State *L) {
  conn *c = (conn *)lmp_checkudata(L, 1, LMP_CONN, "Connection");
  if (c->fd < 0) lmp_error(L, "lmp: connection is closed");
  return c;
}

/* ---------------------------------------------------------------------- */
/* packets                                                                */
/* ---------------------------------------------------------------------- */
static int closed_errno(int e) {
  return e == EPIPE || e == ECONNRESET || e == ENOTCONN;
}

/* sends one packet; 0, or raises */
static void sendpkt(lua_State *L, conn *c, const char *p, size_t n,
                    lmp_hook *h) {
  for (;;) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0) return;
    if (closed_errno(errno)) lmp_error(L, "lmp: connection closed");
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      lmp_syserror(L, "send");
    if (lmp_hook_changed(h)) {
      lmp_hook_restore(h);
      lmp_error(L, "lmp: interrupted");
    }
  }
}

/*
** Receives one packet into p (room for CHUNK); its length, or raises.  A
** peer that answers at once (a request/reply exchange) usually does so
** within a few microseconds: looking for its packet for up to SPIN_S
** before sleeping saves a sleep and a wake-up, which on a VM cost more
** than the exchange itself.
*/
#define SPIN_S 20e-6

static size_t recvpkt(lua_State *L, conn *c, char *p, lmp_hook *h) {
  double until = lmp_now() + SPIN_S;
  do {
    ssize_t r = recv(c->fd, p, CHUNK, MSG_DONTWAIT);
    if (r > 0) return (size_t)r;
    if (r == 0 || errno != EAGAIN) break;
  } while (lmp_now() < until);
  for (;;) {
    ssize_t r = recv(c->fd, p, CHUNK, 0);
    if (r > 0) return (size_t)r;
    if (r == 0 || closed_errno(errno)) lmp_error(L, "lmp: connection closed");
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      lmp_syserror(L, "recv");
    if (lmp_hook_changed(h)) {
      lmp_hook_restore(h);
      lmp_error(L, "lmp: interrupted");
    }
  }
}

/* sends a whole frame whose 8 header bytes are at p */
static void sendframe(lua_State *L, conn *c, char *p, size_t n) {
  lmp_hook h;
  size_t off = 0;
  lmp_frame_header(p, (uint64_t)(n - LMP_FRAME_HDR));
  lmp_hook_save(L, &h);
  while (off < n) {
    size_t k = n - off < CHUNK ? n - off : CHUNK;
    sendpkt(L, c, p + off, k, &h);
    off += k;
  }
}

/*
** Receives a frame; its payload is at the returned pointer: in c->rbuf
** for one packet, else in a userdata pushed on the stack.
*/
static const char *recvframe(lua_State *L, conn *c, size_t *len) {
  lmp_hook h;
  size_t got, total;
  char *to;
  if (!c->readable) lmp_error(L, "lmp: this Connection only sends");
  if (c->rbuf == NULL && (c->rbuf = (char *)malloc(CHUNK)) == NULL)
    lmp_error(L, "lmp: not enough memory");
  lmp_hook_save(L, &h);
  got = recvpkt(L, c, c->rbuf, &h);
  if (got < LMP_FRAME_HDR) lmp_error(L, "lmp: corrupt message on a Connection");
  total = (size_t)lmp_get64(c->rbuf);
  got -= LMP_FRAME_HDR;
  *len = total;
  if (got >= total) return c->rbuf + LMP_FRAME_HDR;
  to = (char *)lmp_newud(L, total, 0);
  memcpy(to, c->rbuf + LMP_FRAME_HDR, got);
  while (got < total) {
    size_t k = recvpkt(L, c, c->rbuf, &h);
    if (k > total - got) lmp_error(L, "lmp: corrupt message on a Connection");
    memcpy(to + got, c->rbuf, k);
    got += k;
  }
  return to;
}

/* ---------------------------------------------------------------------- */
/* methods                                                                */
/* ---------------------------------------------------------------------- */
static int c_send(lua_State *L) {
  conn *c = checkconn(L);
  int n = lua_gettop(L) - 1, i, top;
  char hdr[LMP_FRAME_HDR] = {0};
  lmp_enc *E;
  const char *p;
  size_t len;
  if (!c->writable) return lmp_error(L, "lmp: this Connection only receives");
  E = lmp_enc_take(L, &cenc, 0);
  top = lua_gettop(L);
  lmp_enc_ident(E, c->identmark);
  lmp_enc_raw(E, hdr, sizeof hdr);
  lmp_enc_begin(E, (size_t)n);
  for (i = 1; i <= n; i++) lmp_enc_value(E, i + 1, "args", i);
  p = lmp_enc_flatten(E, &len);
  sendframe(L, c, (char *)p, len);
  lmp_enc_give(L, top, &cenc);
  return 0;
}

static int c_recv(lua_State *L) {
  conn *c = checkconn(L);
  size_t len, n, i;
  const char *p;
  lmp_dec D;
  lua_settop(L, 1);
  p = recvframe(L, c, &len);
  n = lmp_dec_begin(&D, L, p, len, LMP_DEC_TRUSTED);
  for (i = 0; i < n; i++) {
    if (!lua_checkstack(L, 8)) lmp_error(L, "lmp: decode: too many values");
    lmp_dec_value(&D);
  }
  lmp_dec_end(&D);
  return (int)n;
}

static int c_send_bytes(lua_State *L) {
  conn *c = checkconn(L);
  size_t n;
  const char *s;
  char *p;
  if (!c->writable) return lmp_error(L, "lmp: this Connection only receives");
  if (lua_type(L, 2) != LUA_TSTRING) return lmp_typeerror(L, 2, "bytes", "a string");
  s = lua_tolstring(L, 2, &n);
  p = (char *)lmp_newud(L, n + LMP_FRAME_HDR, 0);
  memcpy(p + LMP_FRAME_HDR, s, n);
  sendframe(L, c, p, n + LMP_FRAME_HDR);
  return 0;
}

static int c_recv_bytes(lua_State *L) {
  conn *c = checkconn(L);
  size_t len;
  const char *p;
  lua_settop(L, 1);
  p = recvframe(L, c, &len);
  lua_pushlstring(L, p, len);
  return 1;
}

static int c_poll(lua_State *L) {
  conn *c = checkconn(L);
  double deadline = lua_isnoneornil(L, 2) ? lmp_now() : lmp_optdeadline(L, 2);
  struct pollfd f;
  lmp_hook h;
  int r;
  if (!c->readable) return lmp_error(L, "lmp: this Connection only sends");
  f.fd = c->fd;
  f.events = POLLIN;
  lmp_hook_save(L, &h);
  r = lmp_poll(&h, &f, 1, deadline);
  if (r == -2) return lmp_error(L, "lmp: interrupted");
  if (r < 0) return lmp_syserror(L, "poll");
  lua_pushboolean(L, r > 0);
  return 1;
}

static int c_fileno(lua_State *L) {
  lua_pushinteger(L, checkconn(L)->fd);
  return 1;
}

/* closes this process's end; the peer sees the end of the stream once
   every process holding this end closed it */
static int c_close(lua_State *L) {
  conn *c = (conn *)lmp_checkudata(L, 1, LMP_CONN, "Connection");
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->rbuf);
  c->rbuf = NULL;
  return 0;
}

static int c_index(lua_State *L) {
  conn *c = (conn *)lua_touserdata(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k != NULL && strcmp(k, "closed") == 0) {
    lua_pushboolean(L, c->fd < 0);
    return 1;
  }
  if (k != NULL && strcmp(k, "readable") == 0) {
    lua_pushboolean(L, c->readable);
    return 1;
  }
  if (k != NULL && strcmp(k, "writable") == 0) {
    lua_pushboolean(L, c->writable);
    return 1;
  }
  lmp_getmetafield(L, 1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int c_tostring(lua_State *L) {
  conn *c = (conn *)lua_touserdata(L, 1);
  if (c->fd < 0) lua_pushliteral(L, "Connection (closed)");
  else lua_pushfstring(L, "Connection (fd %d%s)", c->fd,
                       c->readable && c->writable ? ", duplex"
                       : c->readable ? ", receives" : ", sends");
  return 1;
}

int lmp_conn_fd(lua_State *L, int idx) {
  conn *c = (conn *)lmp_checkudata(L, idx, LMP_CONN, "Connection");
  if (c->fd < 0) lmp_error(L, "lmp: connection is closed");
  return c->fd;
}

/* ---------------------------------------------------------------------- */
static conn *newconn(lua_State *L, int readable, int writable) {
  conn *c = (conn *)lmp_newud(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->readable = readable;
  c->writable = writable;
  luaL_setmetatable(L, LMP_CONN);
  return c;
}

static int mp_pipe(lua_State *L) {
  int duplex = lua_isnoneornil(L, 1) || lua_toboolean(L, 1), fds[2], i;
  struct timeval tv;
  conn *a, *b;
  a = newconn(L, 1, duplex);
  b = newconn(L, duplex, 1);
  /* not tracked (runtime.h): children that inherit a Connection use it */
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
    return lmp_syserror(L, "Pipe: socketpair");
  a->fd = fds[0];
  b->fd = fds[1];
  tv.tv_sec = 0;
  tv.tv_usec = (long)(LMP_SLICE * 1e6);
  for (i = 0; i < 2; i++) {
    /* a packet must fit in the send buffer whole (best effort: the
       default, 208 KiB on Linux, is enough) */
    int sz = 4 * CHUNK;
    setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  if (!duplex) {
    shutdown(fds[0], SHUT_WR);
    shutdown(fds[1], SHUT_RD);
  }
  lmp_ident_register(L, -2);
  lmp_ident_register(L, -1);
  a->identmark = b->identmark = lmp_ident_mark(L);
  return 2;
}

void lmp_conn_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", c_send}, {"recv", c_recv}, {"send_bytes", c_send_bytes},
    {"recv_bytes", c_recv_bytes}, {"poll", c_poll}, {"fileno", c_fileno},
    {"close", c_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__index", c_index}, {"__gc", c_close}, {"__close", c_close},
    {"__tostring", c_tostring}, {NULL, NULL}
  };
  lmp_shm_class(L, LMP_CONN, methods, meta);
  lua_pop(L, 1);
  lua_pushcfunction(L, mp_pipe);
  lua_setfield(L, -2, "Pipe");
}
