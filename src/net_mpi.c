/*
** net_mpi.c -- the MPI backend's common ground: joining MPI, frame
** buffers, lifeline sockets and the build signature (net_mpi.h says what
** each is for).  Part of lmp.mpi.  Builds on net_mpi.h.
*/
#include "net_mpi.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* joining                                                                */
/* ---------------------------------------------------------------------- */
static double envnum(const char *name, double def, double lo, double hi) {
  const char *s = getenv(name);
  double v;
  if (s == NULL || *s == '\0') return def;
  v = atof(s);
  return v < lo ? lo : v > hi ? hi : v;
}

void lmpi_settings(mpi_net *N) {
  N->spin = envnum("LMP_MPI_SPIN_US", 250, 0, 1e6) * 1e-6;
  N->backstop = envnum("LMP_MPI_BACKSTOP_MS", 10, 0.1, 1000) * 1e-3;
  N->maxmsg = (size_t)envnum("LMP_MPI_MAXMSG", 1 << 30, 64, 0x7fffffff);
}

/*
** Open MPI loads its plugins with RTLD_GLOBAL and they find libmpi that
** way on Debian 12, even though Lua loaded us with RTLD_LOCAL; other
** builds may need libmpi in the global scope first (mpi4py does this).
*/
static void mpi_global(void) {
  static const char *const names[] = {"libmpi.so.40", "libmpi.so.12",
                                      "libmpi.so", NULL};
  int i;
  for (i = 0; names[i] != NULL; i++)
    if (dlopen(names[i], RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) != NULL) return;
}

static void gethosts(mpi_net *N) {
  char host[MPI_MAX_PROCESSOR_NAME + 1], mine[HOSTMAX];
  int len = 0;
  memset(host, 0, sizeof host);
  memset(mine, 0, sizeof mine);
  if (MPI_Get_processor_name(host, &len) != MPI_SUCCESS) strcpy(host, "?");
  memcpy(mine, host, strnlen(host, HOSTMAX - 1));
  N->hosts = (char (*)[HOSTMAX])calloc((size_t)N->size, HOSTMAX);
  if (N->hosts == NULL) lmpi_oom();
  MPI_Allgather(mine, HOSTMAX, MPI_CHAR, N->hosts, HOSTMAX, MPI_CHAR,
                N->comm);
}

int lmpi_join(mpi_net *N, char *msg, size_t cap) {
  int flag = 0, prov = 0;
  MPI_Finalized(&flag);
  if (flag) {
    snprintf(msg, cap, "lmp: backend \"mpi\" makes one pool per job, and "
             "this job's MPI has ended");
    return -1;
  }
  MPI_Initialized(&flag);
  if (!flag) {
    mpi_global();
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &prov) != MPI_SUCCESS) {
      snprintf(msg, cap, "lmp: backend \"mpi\": MPI_Init failed");
      return -1;
    }
  }
  MPI_Comm_size(MPI_COMM_WORLD, &N->size);
  if (N->size < 2) {
    snprintf(msg, cap, "lmp: backend \"mpi\" needs mpirun -n 2 or more "
             "(this job has 1 rank)");
    return -1;
  }
  /* a communicator of our own: no other MPI user's messages match ours */
  MPI_Comm_dup(MPI_COMM_WORLD, &N->comm);
  MPI_Comm_rank(N->comm, &N->rank);
  MPI_Comm_set_errhandler(N->comm, MPI_ERRORS_ARE_FATAL);
  N->owner = getpid();
  lmpi_settings(N);
  gethosts(N);
  return 0;
}

void lmpi_finalize(mpi_net *N) {
  int fin = 0;
  if (N->finalized || N->nofinal) return;
  N->finalized = 1;
  MPI_Finalized(&fin);
  if (!fin) MPI_Finalize();
}

/* ---------------------------------------------------------------------- */
/* buffers                                                                */
/* ---------------------------------------------------------------------- */
#define CLASSMIN  16                   /* 64 KiB: smaller ones use malloc */
#define HUGEFROM  21                   /* 2 MiB: mmap'ed, huge pages */
#define KEEPMAX   ((size_t)256 << 20)
#define HDR       16                   /* the class; keeps the alignment */

void lmpi_oom(void) {
  fprintf(stderr, "lmp: out of memory in the MPI transport\n");
  MPI_Abort(MPI_COMM_WORLD, 1);
  abort();
}

static char *fresh(int c) {
  char *p;
  if (c < HUGEFROM) {
    p = (char *)malloc((size_t)1 << c);
    if (p == NULL) lmpi_oom();
    return p;
  }
  p = (char *)mmap(NULL, (size_t)1 << c, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) lmpi_oom();
  (void)madvise(p, (size_t)1 << c, MADV_HUGEPAGE);
  return p;
}

void *lmpi_alloc(mpi_bufs *B, size_t n) {
  char *p;
  int c = CLASSMIN;
  if (n + HDR < ((size_t)1 << CLASSMIN)) {
    p = (char *)malloc(n + HDR);
    if (p == NULL) lmpi_oom();
    ((size_t *)(void *)p)[0] = 0;
    return p + HDR;
  }
  while (c < MB_CLASSES - 1 && ((size_t)1 << c) < n + HDR) c++;
  if (B->nkeep[c] > 0) {
    p = (char *)B->keep[c][--B->nkeep[c]];
    B->kept -= (size_t)1 << c;
  } else p = fresh(c);
  ((size_t *)(void *)p)[0] = (size_t)c;
  return p + HDR;
}

static void release(char *p, int c) {
  if (c == 0 || c < HUGEFROM) free(p);
  else munmap(p, (size_t)1 << c);
}

void lmpi_free(mpi_bufs *B, void *q) {
  char *p;
  int c;
  if (q == NULL) return;
  p = (char *)q - HDR;
  c = (int)((size_t *)(void *)p)[0];
  if (c != 0 && B->nkeep[c] < MB_KEEP && B->kept + ((size_t)1 << c) <= KEEPMAX) {
    B->keep[c][B->nkeep[c]++] = p;
    B->kept += (size_t)1 << c;
  } else release(p, c);
}

void lmpi_freeall(mpi_bufs *B) {
  int c;
  for (c = 0; c < MB_CLASSES; c++)
    while (B->nkeep[c] > 0) release((char *)B->keep[c][--B->nkeep[c]], c);
  B->kept = 0;
}

/* ---------------------------------------------------------------------- */
/* lifelines                                                              */
/* ---------------------------------------------------------------------- */
#define LINKWAIT 10.0   /* seconds to set up the lifelines */

static void nodelay(int fd) {
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* a listening socket on an ephemeral port of every address; -1 if none */
static int listen_any(int *port) {
  struct sockaddr_storage a;
  socklen_t al = sizeof a;
  int fam[2] = {AF_INET6, AF_INET}, k;
  for (k = 0; k < 2; k++) {
    int zero = 0, fd = socket(fam[k], SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    memset(&a, 0, sizeof a);
    a.ss_family = (sa_family_t)fam[k];
    if (fam[k] == AF_INET6)
      (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    al = fam[k] == AF_INET6 ? sizeof(struct sockaddr_in6)
                            : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&a, al) == 0 && listen(fd, SOMAXCONN) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0) {
      *port = ntohs(fam[k] == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                       : ((struct sockaddr_in *)&a)->sin_port);
      return fd;
    }
    close(fd);
  }
  return -1;
}

/* waits until fd is ready for `events` or `until` passes: 1, 0, -1 */
static int waitfd(int fd, short events, double until, const lmp_capsule *X) {
  struct pollfd pf;
  pf.fd = fd;
  pf.events = events;
  pf.revents = 0;
  return X->poll(NULL, &pf, 1, until);
}

/* connects without blocking past `until` (connect() and EINTR) */
static int connect_by(const struct addrinfo *ai, double until,
                      const lmp_capsule *X) {
  int e = 0, fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
                                        SOCK_NONBLOCK, 0);
  socklen_t el = sizeof e;
  if (fd < 0) return -1;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
      (errno != EINPROGRESS && errno != EINTR)) {
    close(fd);
    return -1;
  }
  if (waitfd(fd, POLLOUT, until, X) <= 0 ||
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0) {
    close(fd);
    return -1;
  }
  (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

/* sends/receives exactly n bytes by `until`: 0, or -1 */
static int xfer(int fd, void *p, size_t n, int out, double until,
                const lmp_capsule *X) {
  size_t done = 0;
  while (done < n) {
    ssize_t r;
    if (waitfd(fd, out ? POLLOUT : POLLIN, until, X) <= 0) return -1;
    r = out ? send(fd, (char *)p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
            : recv(fd, (char *)p + done, n - done, MSG_DONTWAIT);
    if (r > 0) done += (size_t)r;
    else if (r == 0 || (errno != EINTR && errno != EAGAIN)) return -1;
  }
  return 0;
}

/* a worker: connects to rank 0 (on its host: localhost) and says who it
   is; -1 if it cannot */
static int dial(mpi_net *N, int port, uint64_t cookie) {
  struct addrinfo hints, *res = NULL, *ai;
  char ps[16];
  unsigned char hello[12];
  int fd = -1;
  double until = N->X->now() + LINKWAIT / 2;
  int local = strcmp(N->hosts[0], N->hosts[N->rank]) == 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(local ? "localhost" : N->hosts[0], ps, &hints, &res) != 0)
    return -1;
  for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
    fd = connect_by(ai, until, N->X);
  freeaddrinfo(res);
  if (fd < 0) return -1;
  memcpy(hello, &cookie, 8);
  memcpy(hello + 8, &N->rank, 4);
  if (xfer(fd, hello, sizeof hello, 1, until, N->X) != 0) {
    close(fd);
    return -1;
  }
  nodelay(fd);
  return fd;
}

/* rank 0: takes the workers' connections (an impostor's cookie is
   refused); how many it got */
static int answer(lua_State *L, mpi_net *N, int ls, uint64_t cookie,
                  int *fds) {
  double until = N->X->now() + LINKWAIT;
  int got = 0;
  while (got < N->size - 1 && waitfd(ls, POLLIN, until, N->X) > 0) {
    unsigned char hello[12];
    uint64_t c;
    int r, fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        struct timespec ts = { 0, 10000000 };   /* not a hot spin */
        nanosleep(&ts, NULL);
      }
      continue;                          /* EINTR, ECONNABORTED... */
    }
    if (xfer(fd, hello, sizeof hello, 0, N->X->now() + 1, N->X) == 0) {
      memcpy(&c, hello, 8);
      memcpy(&r, hello + 8, 4);
      if (c == cookie && r >= 1 && r < N->size && fds[r - 1] < 0) {
        nodelay(fd);
        N->X->track_fd(L, fd);
        fds[r - 1] = fd;
        got++;
        continue;
      }
    }
    close(fd);
  }
  return got;
}

/*
** A collective.  Rank 0 listens on an ephemeral port and broadcasts it
** with a random cookie; each worker connects and says its rank; rank 0
** then broadcasts whether every worker got through.  If one did not (a
** firewall, no host name resolution, LMP_MPI_LIFELINE=0), nobody keeps a
** lifeline: the ranks poll MPI with a back-off instead.
*/
void lmpi_lifelines(lua_State *L, mpi_net *N, int *fds, int *wfd) {
  int ls = -1, port = 0, ok = 0, i;
  uint64_t cookie = 0;
  const char *off = getenv("LMP_MPI_LIFELINE");
  *wfd = -1;
  for (i = 0; N->rank == 0 && i < N->size - 1; i++) fds[i] = -1;
  if (N->rank == 0 && (off == NULL || atoi(off) != 0)) {
    ls = listen_any(&port);
    if (getrandom(&cookie, sizeof cookie, 0) != (ssize_t)sizeof cookie)
      cookie = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
  }
  MPI_Bcast(&port, 1, MPI_INT, 0, N->comm);
  MPI_Bcast(&cookie, 1, MPI_UINT64_T, 0, N->comm);
  if (N->rank != 0 && port > 0) *wfd = dial(N, port, cookie);
  if (N->rank == 0 && ls >= 0) {
    ok = answer(L, N, ls, cookie, fds) == N->size - 1;
    close(ls);
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, N->comm);
  N->lifelines = ok;
  if (N->rank != 0 && *wfd >= 0) {
    if (ok) N->X->track_fd(L, *wfd);
    else close(*wfd);
    if (!ok) *wfd = -1;
  }
  for (i = 0; N->rank == 0 && !ok && i < N->size - 1; i++)
    if (fds[i] >= 0) {
      N->X->close_fd(L, fds[i]);
      fds[i] = -1;
    }
}

void lmpi_ring(int fd, char what) {
  if (fd < 0) return;
  /* EAGAIN: rings are pending already, the peer wakes anyway */
  while (send(fd, &what, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR)
    ;
}

int lmpi_drain(int fd) {
  char b[64];
  int got = 0;
  for (;;) {
    ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT), i;
    if (r > 0) {
      for (i = 0; i < r; i++) got |= b[i] == RING_BIG ? 2 : 1;
      continue;
    }
    if (r == 0) return -1;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? got : -1;
  }
}

/* ---------------------------------------------------------------------- */
/* the build signature                                                    */
/* ---------------------------------------------------------------------- */
typedef struct sigbuf {
  char *p;
  size_t n, cap;
} sigbuf;

static int sigwriter(lua_State *L, const void *p, size_t sz, void *ud) {
  sigbuf *b = (sigbuf *)ud;
  (void)L;
  if (b->n + sz > b->cap) return 1;
  memcpy(b->p + b->n, p, sz);
  b->n += sz;
  return 0;
}

/*
** lmp's version and wire format, the C sizes and byte order its codec
** relies on, then the whole stripped dump of a trivial chunk: its header
** is what lundump.c checks (Lua version, format, LUAC_DATA, the sizes of
** Instruction, lua_Integer and lua_Number, the LUAC_INT and LUAC_NUM
** probes for byte order and float format), so no lundump.h offsets are
** needed.  LMP_MPI_FAKE_BUILD (specs only) makes this rank's differ.
*/
size_t lmpi_buildsig(lua_State *L, const lmp_capsule *X, char *buf,
                     size_t cap) {
  uint32_t probe = 0x01020304;
  sigbuf b;
  int n = snprintf(buf, cap, "lmp %s wire %d capsule %d size_t %u ptr %u "
                   "end %02x lua ", X->lmp_version, X->wire_version,
                   LMP_CAPSULE_VERSION, (unsigned)sizeof(size_t),
                   (unsigned)sizeof(void *),
                   (unsigned)((unsigned char *)&probe)[0]);
  b.p = buf;
  b.n = n > 0 && (size_t)n < cap ? (size_t)n : 0;
  b.cap = cap;
  if (luaL_loadstring(L, "return 0") == LUA_OK) lua_dump(L, sigwriter, &b, 1);
  lua_pop(L, 1);
  if (getenv("LMP_MPI_FAKE_BUILD") != NULL && b.n > 0) buf[b.n - 1] ^= 0x55;
  return b.n;
}
