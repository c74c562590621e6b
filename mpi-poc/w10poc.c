/*
** w10poc.c -- W10's shapes over the MPI transport prototype (tp_mpi.c),
** with trivial C tasks (echo), to find the transport's ceiling; also the
** fault and build-check experiments of NOTES.md.
**
** usage: mpirun -n 3 --oversubscribe ./w10poc [options]
**   --what map|apply|both|serial   (both)
**                           serial: rank 0 computes ~3 s (a 3*10^9-step
**                           integer loop) while the workers wait for work;
**                           RESULT W10serial_poc <seconds> (how much do
**                           waiting workers slow a busy rank 0?)
**   --n N                   map items (100000); apply round trips: N/10
**   --depth D               tasks in flight per worker for map (64)
**   --size BYTES            payload of every task and reply (8)
**   --work-us U             each task spins U microseconds on its worker (0)
**   --on-loss continue|exit what rank 0 does when a worker is lost (continue)
** Environment: TPM_POLICY, TPM_SPIN_US, TPM_BACKSTOP_MS, TPM_MAXMSG,
** TPM_LIFELINE (tp_mpi.h); TPM_FAKE_BUILD=1 on a rank fakes a different
** Lua build there.
**
** Frames look like lmp's: a task is a 17-byte header (task id u32, function
** id u32, flags u8, start index u64) + payload; a reply is a 5-byte header
** (task id u32, status u8) + the payload echoed.  Rank 0 keeps a FIFO of
** task ids per worker, checks that every reply answers the FIFO's head and
** carries the right payload, and on a lost worker fails the head (the task
** that was running) and requeues the rest, as pool.c does.
** Output (rank 0): RESULT W10map_poc <tasks/s> ..., RESULT W10apply_poc <us> ...
*/
#define _GNU_SOURCE
#include "tp_mpi.h"

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAXDEPTH 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t psize = 8;
static double work_s = 0;

static void put32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* the payload of item i: its index, repeated */
static void fill(char *p, size_t n, uint64_t i) {
  size_t k;
  for (k = 0; k + 8 <= n; k += 8) memcpy(p + k, &i, 8);
  for (; k < n; k++) p[k] = (char)i;
}

static int check(const char *p, size_t n, uint64_t i) {
  /* the first and the last 4 KiB: cheap, and catches misplaced parts */
  size_t k;
  for (k = 0; k + 8 <= n; k += 8) {
    if (k == 4096 && n > 8192) k = (n - 4096) & ~(size_t)7;
    if (memcmp(p + k, &i, 8) != 0) return 0;
  }
  return 1;
}

/* ---- worker ---------------------------------------------------------- */
static void echo(void *ud, const char *p, size_t n, char **reply, size_t *rn) {
  char *r;
  (void)ud;
  if (work_s > 0) {
    double end = now() + work_s;
    while (now() < end) {}
  }
  r = (char *)tp_alloc(5 + (n > 17 ? n - 17 : 0));
  memcpy(r, p, 4);                       /* task id */
  r[4] = 0;                              /* status: ok */
  if (n > 17) memcpy(r + 5, p + 17, n - 17);
  *reply = r;
  *rn = 5 + (n > 17 ? n - 17 : 0);
}

/* ---- rank 0: a miniature of pool.c's scheduler ------------------------- */
typedef struct Wq {
  uint32_t q[MAXDEPTH];
  int head, nq;
  int ok;
} Wq;

static const tp_ops *O;
static tp *T;
static int nw, exit_on_loss;
static Wq *wq;
static uint32_t *requeue;
static int nrequeue;
static long failed;

static void send_task(int w, uint32_t id) {
  size_t len = 17 + psize;
  char *f = (char *)tp_alloc(len);
  uint64_t start = id;
  put32(f, id);
  put32(f + 4, 1);                       /* function id */
  f[8] = 0;
  memcpy(f + 9, &start, 8);
  fill(f + 17, psize, id);
  O->send(T, w, f, len, TP_GIVE);
  wq[w].q[(wq[w].head + wq[w].nq) % MAXDEPTH] = id;
  wq[w].nq++;
}

/* one reply frame from w; returns the task id it answered */
static uint32_t take_reply(int w, const char *p, size_t n) {
  uint32_t id = get32(p), want = wq[w].q[wq[w].head];
  if (wq[w].nq == 0 || id != want || p[4] != 0 || n != 5 + psize ||
      !check(p + 5, psize, id)) {
    fprintf(stderr, "w10poc: bad reply from %s (task %u, expected %u)\n", O->describe(T, w), id,
            want);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  wq[w].head = (wq[w].head + 1) % MAXDEPTH;
  wq[w].nq--;
  return id;
}

static void lost(int w) {
  fprintf(stderr, "[%.1f] %s\n", wall_ms(), O->why(T, w));
  wq[w].ok = 0;
  if (wq[w].nq > 0) {
    fprintf(stderr, "[%.1f] w10poc: task %u failed with it; %d queued tasks go to other workers\n",
            wall_ms(), wq[w].q[wq[w].head], wq[w].nq - 1);
    failed++;
    wq[w].head = (wq[w].head + 1) % MAXDEPTH;
    wq[w].nq--;
    while (wq[w].nq > 0) {
      requeue[nrequeue++] = wq[w].q[wq[w].head];
      wq[w].head = (wq[w].head + 1) % MAXDEPTH;
      wq[w].nq--;
    }
  }
  if (exit_on_loss) {
    fprintf(stderr, "[%.1f] w10poc: exiting with status 1\n", wall_ms());
    exit(1);
  }
}

static double run_map(long n, int depth) {
  long next = 0, done = 0;
  double t0 = now();
  tp_event ev[64];
  for (;;) {
    int level, w, k, ne;
    /* dispatch round by round, so idle workers get work first */
    for (level = 1; level <= depth; level++)
      for (w = 0; w < nw; w++) {
        if (!wq[w].ok || wq[w].nq >= level) continue;
        if (nrequeue > 0) send_task(w, requeue[--nrequeue]);
        else if (next < n) send_task(w, (uint32_t)++next);
      }
    if (done + failed >= n) break;
    ne = O->wait(T, -1, ev, 64);
    for (k = 0; k < ne; k++) {
      const char *p;
      size_t len;
      w = ev[k].worker;
      while (O->recv(T, w, &p, &len)) {
        take_reply(w, p, len);
        done++;
      }
      if (ev[k].what & TP_LOST) lost(w);
    }
    {
      int alive = 0;
      for (w = 0; w < nw; w++) alive += wq[w].ok;
      if (!alive) {
        fprintf(stderr, "w10poc: no workers left\n");
        exit(1);
      }
    }
  }
  return (double)done / (now() - t0);
}

static double run_apply(long n) {
  long i;
  double t0 = now();
  tp_event ev[64];
  for (i = 1; i <= n; i++) {
    int w = 0, got = 0;
    while (!wq[w].ok) w++;               /* the first worker with room */
    send_task(w, (uint32_t)i);
    while (!got) {
      int k, ne = O->wait(T, -1, ev, 64);
      for (k = 0; k < ne; k++) {
        const char *p;
        size_t len;
        while (O->recv(T, ev[k].worker, &p, &len)) {
          take_reply(ev[k].worker, p, len);
          got = 1;
        }
        if (ev[k].what & TP_LOST) {
          lost(ev[k].worker);
          if (ev[k].worker == w) got = 1;
        }
      }
    }
  }
  return (now() - t0) / (double)n * 1e6;
}

int main(int argc, char **argv) {
  const char *what = "both", *err;
  long n = 100000;
  int depth = 64, i, w;
  tpm_opts o;
  long st[4];
  for (i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--what") && i + 1 < argc) what = argv[++i];
    else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = atol(argv[++i]);
    else if (!strcmp(argv[i], "--depth") && i + 1 < argc) depth = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) psize = (size_t)atoll(argv[++i]);
    else if (!strcmp(argv[i], "--work-us") && i + 1 < argc) work_s = atof(argv[++i]) * 1e-6;
    else if (!strcmp(argv[i], "--on-loss") && i + 1 < argc)
      exit_on_loss = !strcmp(argv[++i], "exit");
  }
  if (depth < 1) depth = 1;
  if (depth > MAXDEPTH) depth = MAXDEPTH;
  tpm_defaults(&o);
  T = tpm_open(&o, &err);
  if (err) {
    fprintf(stderr, "%s\n", err);
    MPI_Finalize();
    return 1;
  }
  if (T == NULL) return tpm_serve(echo, NULL) < 0 ? 1 : 0;   /* worker ranks */
  O = &tpm_ops;
  nw = O->workers(T);
  wq = (Wq *)calloc((size_t)nw, sizeof *wq);
  requeue = (uint32_t *)malloc(sizeof *requeue * (size_t)(nw * MAXDEPTH + 1));
  for (w = 0; w < nw; w++) {
    if (O->start(T, w) == 0) wq[w].ok = 1;
    else fprintf(stderr, "%s\n", O->why(T, w));
  }
  for (w = 0; w < nw && !wq[w].ok; w++) {}
  if (w == nw) {
    fprintf(stderr, "w10poc: no worker passed the start-up check\n");
    O->close(T);
    return 1;
  }
  /* warm-up: every worker has answered a few small tasks */
  {
    size_t keep = psize;
    psize = 8;
    run_map(64 * nw, 8);
    psize = keep;
  }
  if (!strcmp(what, "serial")) {
    volatile unsigned long acc = 0;
    unsigned long k;
    double t0 = now();
    for (k = 0; k < 3000000000UL; k++) acc = acc * 31 + k;
    printf("RESULT W10serial_poc %.3f policy=%s spin_us=%.0f\n", now() - t0,
           getenv("TPM_POLICY") ? getenv("TPM_POLICY") : "bell", o.spin * 1e6);
    fflush(stdout);
  }
  if (!strcmp(what, "map") || !strcmp(what, "both")) {
    double c0 = cpu(), r = run_map(n, depth);
    c0 = cpu() - c0;
    tpm_stats(T, st);
    printf("RESULT W10map_poc %.0f n=%ld depth=%d size=%zu work_us=%.0f policy=%s spin_us=%.0f "
           "failed=%ld rootcpu_us=%.2f sleeps=%ld rings=%ld rung=%ld\n",
           r, n, depth, psize, work_s * 1e6, getenv("TPM_POLICY") ? getenv("TPM_POLICY") : "bell",
           o.spin * 1e6, failed, c0 / (double)n * 1e6, st[0], st[1], st[2]);
    fflush(stdout);
  }
  if (!strcmp(what, "apply") || !strcmp(what, "both")) {
    long na = n / 10 > 0 ? n / 10 : 1;
    double r = run_apply(na);
    tpm_stats(T, st);
    printf("RESULT W10apply_poc %.2f n=%ld size=%zu policy=%s spin_us=%.0f sleeps=%ld rings=%ld "
           "rung=%ld\n",
           r, na, psize, getenv("TPM_POLICY") ? getenv("TPM_POLICY") : "bell", o.spin * 1e6,
           st[0], st[1], st[2]);
    fflush(stdout);
  }
  O->close(T);
  return 0;
}
