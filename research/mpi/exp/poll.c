/*
** poll.c -- how should rank 0 and the workers wait for MPI messages on an
** oversubscribed node (3 ranks, 2 cores)?
**
** usage: mpirun -n 3 --oversubscribe poll POLICY [rt|map] [N] [INFLIGHT] [SPIN_US]
**   rt    N sequential 16-byte round trips rank 0 <-> rank 1 (rank 2 idles,
**         as the second worker of a pool does during apply)
**   map   N 16-byte echo tasks, INFLIGHT (default 64) in flight per worker,
**         rank 0 refills a worker as each reply arrives
** POLICY, used by every rank whenever it waits for a message:
**   block    MPI_Recv (rank 0: MPI_ANY_SOURCE); Open MPI spins inside
**   spin     MPI_Iprobe loop, nothing else
**   yield    MPI_Iprobe + sched_yield()
**   backoff  MPI_Iprobe + nanosleep, mpi4py.futures' Backoff: 0, then
**            ~1 us doubling to 1 ms, reset on every message
**   hybrid   MPI_Iprobe spin for SPIN_US (default 50) then nanosleep
**            backoff from 20 us doubling to 1 ms
**   bell     MPI_Iprobe spin for SPIN_US, then announce "sleeping" ('S')
**            on a TCP side socket to the peer(s), probe once more and
**            block in poll() on the side sockets (1 ms timeout as a
**            backstop); a sender that finds 'S' on the socket after an
**            MPI send rings back ('W').
**   serial  rank 0 computes (a fixed 3*10^9-step integer loop, ~3 s here) while the
**           workers wait for a task that comes only at the end: how much
**           do waiting workers slow a busy rank 0?  Result: seconds.
** Prints rank 0's result and, per rank, CPU seconds used during the timed
** part and how often it slept / rang:
**   RESULT poll_<rt|map> <us per round trip | tasks/s> policy=... cpu0= cpu1= cpu2= ...
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <mpi.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { P_BLOCK, P_SPIN, P_YIELD, P_BACKOFF, P_HYBRID, P_BELL };
static const char *pnames[] = { "block", "spin", "yield", "backoff", "hybrid", "bell", NULL };
static int policy, me, size;
static double spin_s = 50e-6;
static int sock[64];                     /* side sockets: rank 0 has one per worker */
static long nsleep, nring;

#define T_TASK 1
#define T_STOP 2

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static void sleep_s(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  nsleep++;
}

static void setup_sockets(void) {
  int port = 0, i;
  if (me == 0) {
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(ls, (struct sockaddr *)&a, sizeof a);
    listen(ls, 64);
    getsockname(ls, (struct sockaddr *)&a, &al);
    port = ntohs(a.sin_port);
    MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
    for (i = 1; i < size; i++) {
      int s = accept(ls, NULL, NULL), r, one = 1;
      if (read(s, &r, sizeof r) != sizeof r) abort();
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      sock[r] = s;
    }
    close(ls);
  } else {
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) abort();
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (write(s, &me, sizeof me) != sizeof me) abort();
    sock[0] = s;
  }
}

/* after an MPI send to `peer`: ring it if it said it was going to sleep */
static void after_send(int peer) {
  char b[64];
  ssize_t n, i;
  int ring = 0;
  if (policy != P_BELL) return;
  while ((n = recv(sock[peer], b, sizeof b, MSG_DONTWAIT)) > 0)
    for (i = 0; i < n; i++)
      if (b[i] == 'S') ring = 1;
  if (ring) {
    char w = 'W';
    if (write(sock[peer], &w, 1) == 1) nring++;
  }
}

/* waits until a message from src (or any source) can be received */
static void wait_msg(int src, MPI_Status *st) {
  int flag = 0;
  double t0, back = 0;
  if (policy == P_BLOCK) {
    MPI_Probe(src, MPI_ANY_TAG, MPI_COMM_WORLD, st);
    return;
  }
  t0 = now();
  for (;;) {
    MPI_Iprobe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, st);
    if (flag) return;
    switch (policy) {
    case P_SPIN:
      break;
    case P_YIELD:
      sched_yield();
      break;
    case P_BACKOFF:                      /* mpi4py.futures._lib.Backoff */
      sleep_s(back);
      back = back == 0 ? 1e-3 / 1024 : (back * 2 > 1e-3 ? 1e-3 : back * 2);
      break;
    case P_HYBRID:
      if (now() - t0 < spin_s) break;
      sleep_s(back);
      back = back == 0 ? 20e-6 : (back * 2 > 1e-3 ? 1e-3 : back * 2);
      break;
    case P_BELL: {
      struct pollfd pf[64];
      int n = 0, i, r;
      if (now() - t0 < spin_s) break;
      for (i = 0; i < size; i++) {
        if (i == me || (me != 0 && i != 0)) continue;
        if (write(sock[i], "S", 1) != 1) abort();
        pf[n].fd = sock[i];
        pf[n].events = POLLIN;
        n++;
      }
      MPI_Iprobe(src, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, st);
      if (flag) return;
      r = poll(pf, n, 1);
      nsleep++;
      if (r > 0)
        for (i = 0; i < n; i++)
          if (pf[i].revents) {
            char b[64];
            if (recv(pf[i].fd, b, sizeof b, MSG_DONTWAIT) <= 0) {}
          }
      t0 = now();                        /* spin again after a wake-up */
      break;
    }
    }
  }
}

int main(int argc, char **argv) {
  const char *pol = argc > 1 ? argv[1] : "block";
  const char *work = argc > 2 ? argv[2] : "rt";
  long n = argc > 3 ? atol(argv[3]) : 0;
  int inflight = argc > 4 ? atoi(argv[4]) : 64, i;
  double c0, t0, t, res, mycpu, cpus[64];
  long slept[64], rang[64];
  long msg[2];
  MPI_Status st;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc > 5) spin_s = atof(argv[5]) * 1e-6;
  for (policy = 0; pnames[policy] && strcmp(pnames[policy], pol); policy++) {}
  if (!pnames[policy] || size < 3 || size > 64) {
    if (me == 0) fprintf(stderr, "poll: bad policy or rank count\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  if (n <= 0) n = strcmp(work, "rt") ? 100000 : 10000;
  if (policy == P_BELL) setup_sockets();
  /* warm-up: everyone exchanges a few messages */
  for (i = 0; i < 100; i++) {
    if (me == 0) {
      int w;
      for (w = 1; w < size; w++) MPI_Send(msg, 2, MPI_LONG, w, T_TASK, MPI_COMM_WORLD);
      for (w = 1; w < size; w++)
        MPI_Recv(msg, 2, MPI_LONG, w, T_TASK, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Recv(msg, 2, MPI_LONG, 0, T_TASK, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(msg, 2, MPI_LONG, 0, T_TASK, MPI_COMM_WORLD);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  nsleep = nring = 0;
  c0 = cpu();
  t0 = now();
  if (me == 0) {
    if (!strcmp(work, "serial")) {
      volatile unsigned long acc = 0;
      unsigned long k;
      for (k = 0; k < 3000000000UL; k++) acc = acc * 31 + k;
      t = now() - t0;
      res = t;
    } else if (!strcmp(work, "rt")) {
      for (i = 0; i < n; i++) {
        msg[0] = i;
        MPI_Send(msg, 2, MPI_LONG, 1, T_TASK, MPI_COMM_WORLD);
        after_send(1);
        wait_msg(1, &st);
        MPI_Recv(msg, 2, MPI_LONG, 1, T_TASK, MPI_COMM_WORLD, &st);
        if (msg[0] != i + 1) MPI_Abort(MPI_COMM_WORLD, 3);
      }
      t = now() - t0;
      res = t / n * 1e6;
    } else {
      long sent = 0, got = 0;
      int w, k;
      for (k = 0; k < inflight; k++)
        for (w = 1; w < size && sent < n; w++) {
          msg[0] = sent++;
          MPI_Send(msg, 2, MPI_LONG, w, T_TASK, MPI_COMM_WORLD);
        }
      for (w = 1; w < size; w++) after_send(w);
      while (got < n) {
        wait_msg(MPI_ANY_SOURCE, &st);
        MPI_Recv(msg, 2, MPI_LONG, st.MPI_SOURCE, T_TASK, MPI_COMM_WORLD, &st);
        got++;
        if (sent < n) {
          msg[0] = sent++;
          MPI_Send(msg, 2, MPI_LONG, st.MPI_SOURCE, T_TASK, MPI_COMM_WORLD);
          after_send(st.MPI_SOURCE);
        }
      }
      t = now() - t0;
      res = n / t;
    }
    for (i = 1; i < size; i++) MPI_Send(msg, 2, MPI_LONG, i, T_STOP, MPI_COMM_WORLD);
    for (i = 1; i < size; i++) after_send(i);
  } else {
    for (;;) {
      wait_msg(0, &st);
      MPI_Recv(msg, 2, MPI_LONG, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
      if (st.MPI_TAG == T_STOP) break;
      msg[0]++;
      MPI_Send(msg, 2, MPI_LONG, 0, T_TASK, MPI_COMM_WORLD);
      after_send(0);
    }
    t = now() - t0;
    res = 0;
  }
  mycpu = cpu() - c0;
  /* CPU share of the timed part: each rank's own elapsed time is about the same */
  MPI_Gather(&mycpu, 1, MPI_DOUBLE, cpus, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  MPI_Gather(&nsleep, 1, MPI_LONG, slept, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  MPI_Gather(&nring, 1, MPI_LONG, rang, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  if (me == 0) {
    printf("RESULT poll_%s %.4g policy=%s n=%ld inflight=%d spin_us=%.0f wall=%.3f", work, res,
           pnames[policy], n, inflight, spin_s * 1e6, t);
    for (i = 0; i < size; i++) printf(" cpu%d=%.0f%%", i, cpus[i] / t * 100);
    for (i = 0; i < size; i++) printf(" sleeps%d=%ld", i, slept[i]);
    if (policy == P_BELL)
      for (i = 0; i < size; i++) printf(" rings%d=%ld", i, rang[i]);
    printf("\n");
  }
  if (policy == P_BELL)
    for (i = 0; i < 64; i++)
      if (sock[i] > 0) close(sock[i]);
  MPI_Finalize();
  return 0;
}
