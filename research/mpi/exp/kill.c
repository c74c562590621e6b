/*
** kill.c -- what rank 0 sees when a worker rank dies (kill -9) mid-job.
**
** usage: mpirun -n 3 --oversubscribe kill MODE [fatal|return] [SECONDS]
**   MODE: how rank 0 waits for replies
**     recv     blocking MPI_Recv(MPI_ANY_SOURCE)
**     recv2    blocking MPI_Recv from rank 2 (the one that dies)
**     waitany  one MPI_Irecv per worker, MPI_Waitany
**     iprobe   MPI_Iprobe(MPI_ANY_SOURCE) + 100 us nanosleep
**     testany  one MPI_Irecv per worker, MPI_Testany + 100 us nanosleep
**     send2    iprobe, and 1.5 s in: MPI_Send 4 bytes to rank 2, then an
**              MPI_Isend of 1 MiB to rank 2 tested for 1 s (does MPI notice
**              the dead peer?)
**   fatal|return: the error handler on MPI_COMM_WORLD (default fatal)
** Rank 2 gets one 30-second "task" (it sleeps in nanosleep, not in MPI)
** and writes its pid to $KILL_PIDFILE; rank 1 answers 20 ms tasks.  Rank 0
** logs every reply, every MPI error code and any SIGTERM/SIGCONT/SIGINT it
** gets, with wall-clock milliseconds, and stops after SECONDS (default 4).
** With IGNORE_TERM set in the environment the ranks log SIGTERM and go on;
** with KILL_LOG=path each rank logs to path.<rank> instead of stderr.
*/
#define _GNU_SOURCE
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int me;
static void logf_(const char *fmt, ...) {
  char b[512];
  int n;
  va_list ap;
  n = snprintf(b, sizeof b, "[%.1f] rank %d: ", wall(), me);
  va_start(ap, fmt);
  n += vsnprintf(b + n, sizeof b - n, fmt, ap);
  va_end(ap);
  b[n++] = '\n';
  write(2, b, n);
}

static void onsig(int sig) {
  char b[128];
  int n = snprintf(b, sizeof b, "[%.1f] rank %d: got signal %d (%s)\n", wall(), me, sig,
                   strsignal(sig));
  write(2, b, n);
  if (sig != SIGCONT && !(sig == SIGTERM && getenv("IGNORE_TERM"))) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

static void chk(int rc, const char *what) {
  if (rc != MPI_SUCCESS) {
    char s[MPI_MAX_ERROR_STRING];
    int l, cls;
    MPI_Error_string(rc, s, &l);
    MPI_Error_class(rc, &cls);
    logf_("%s returned %d (class %d): %s", what, rc, cls, s);
  }
}

#define T_TASK 1
#define T_STOP 2

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "recv";
  int ret = argc > 2 && strcmp(argv[2], "return") == 0;
  double secs = argc > 3 ? atof(argv[3]) : 4;
  int size, len;
  char host[MPI_MAX_PROCESSOR_NAME];
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  if (getenv("KILL_LOG")) {              /* rank logs bypass mpirun's I/O forwarding */
    char fn[512];
    FILE *f;
    snprintf(fn, sizeof fn, "%s.%d", getenv("KILL_LOG"), me);
    f = fopen(fn, "w");
    if (f) dup2(fileno(f), 2);
  }
  if (ret) MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  signal(SIGTERM, onsig);
  signal(SIGCONT, onsig);
  signal(SIGINT, onsig);
  signal(SIGHUP, onsig);
  logf_("pid %d on %s, mode %s, errhandler %s", (int)getpid(), host, mode,
        ret ? "ERRORS_RETURN" : "ERRORS_ARE_FATAL");
  if (me == 0) {
    int ms, n1 = 0, active = 1, rc, idx, flag;
    double t0 = wall(), tlast = 0;
    MPI_Status st;
    MPI_Request rq[3];
    int buf[3];
    ms = 30000;
    chk(MPI_Send(&ms, 1, MPI_INT, 2, T_TASK, MPI_COMM_WORLD), "Send to 2");
    ms = 20;
    chk(MPI_Send(&ms, 1, MPI_INT, 1, T_TASK, MPI_COMM_WORLD), "Send to 1");
    if (!strcmp(mode, "waitany") || !strcmp(mode, "testany")) {
      rq[0] = MPI_REQUEST_NULL;
      chk(MPI_Irecv(&buf[1], 1, MPI_INT, 1, T_TASK, MPI_COMM_WORLD, &rq[1]), "Irecv 1");
      chk(MPI_Irecv(&buf[2], 1, MPI_INT, 2, T_TASK, MPI_COMM_WORLD, &rq[2]), "Irecv 2");
    }
    while (active && wall() - t0 < secs * 1e3) {
      int src = -1, v;
      static int probed;
      if (!strcmp(mode, "send2") && !probed && wall() - t0 > 1500) {
        static char big[1 << 20];
        MPI_Request r2;
        double t1;
        probed = 1;
        logf_("MPI_Send 4 bytes to rank 2...");
        chk(MPI_Send(&v, 1, MPI_INT, 2, T_TASK, MPI_COMM_WORLD), "Send to dead 2");
        logf_("... returned; MPI_Isend 1 MiB to rank 2, testing for 1 s");
        chk(MPI_Isend(big, sizeof big, MPI_BYTE, 2, T_TASK, MPI_COMM_WORLD, &r2), "Isend to dead 2");
        t1 = wall();
        flag = 0;
        while (!flag && wall() - t1 < 1000) {
          struct timespec ts = { 0, 100000 };
          rc = MPI_Test(&r2, &flag, MPI_STATUS_IGNORE);
          chk(rc, "Test Isend to dead 2");
          if (rc != MPI_SUCCESS) break;
          nanosleep(&ts, NULL);
        }
        logf_("Isend to dead rank 2: %s", flag ? "completed" : "still pending after 1 s");
      }
      if (!strcmp(mode, "recv") || !strcmp(mode, "recv2")) {
        rc = MPI_Recv(&v, 1, MPI_INT, strcmp(mode, "recv2") ? MPI_ANY_SOURCE : 2, T_TASK,
                      MPI_COMM_WORLD, &st);
        chk(rc, "Recv");
        if (rc != MPI_SUCCESS) break;
        src = st.MPI_SOURCE;
      } else if (!strcmp(mode, "waitany")) {
        rc = MPI_Waitany(3, rq, &idx, &st);
        chk(rc, "Waitany");
        if (rc != MPI_SUCCESS) break;
        src = idx;
        if (src == 1)
          chk(MPI_Irecv(&buf[1], 1, MPI_INT, 1, T_TASK, MPI_COMM_WORLD, &rq[1]), "Irecv 1");
      } else if (!strcmp(mode, "testany")) {
        struct timespec ts = { 0, 100000 };
        rc = MPI_Testany(3, rq, &idx, &flag, &st);
        chk(rc, "Testany");
        if (rc != MPI_SUCCESS) break;
        if (!flag) { nanosleep(&ts, NULL); continue; }
        src = idx;
        if (src == 1)
          chk(MPI_Irecv(&buf[1], 1, MPI_INT, 1, T_TASK, MPI_COMM_WORLD, &rq[1]), "Irecv 1");
      } else {                           /* iprobe, send2 */
        struct timespec ts = { 0, 100000 };
        rc = MPI_Iprobe(MPI_ANY_SOURCE, T_TASK, MPI_COMM_WORLD, &flag, &st);
        chk(rc, "Iprobe");
        if (rc != MPI_SUCCESS) break;
        if (!flag) { nanosleep(&ts, NULL); continue; }
        rc = MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, T_TASK, MPI_COMM_WORLD, &st);
        chk(rc, "Recv");
        src = st.MPI_SOURCE;
      }
      if (src == 1) {
        n1++;
        if (wall() - tlast > 250) {
          logf_("reply %d from rank 1", n1);
          tlast = wall();
        }
        rc = MPI_Send(&ms, 1, MPI_INT, 1, T_TASK, MPI_COMM_WORLD);
        chk(rc, "Send to 1");
      } else {
        logf_("reply from rank %d", src);
      }
    }
    logf_("done waiting after %d replies from rank 1; stopping rank 1", n1);
    chk(MPI_Send(&ms, 1, MPI_INT, 1, T_STOP, MPI_COMM_WORLD), "Send STOP to 1");
    logf_("MPI_Finalize...");
    MPI_Finalize();
    logf_("finalized");
    return 0;
  } else {
    if (me == 2 && getenv("KILL_PIDFILE")) {
      FILE *f = fopen(getenv("KILL_PIDFILE"), "w");
      fprintf(f, "%d\n", (int)getpid());
      fclose(f);
    }
    for (;;) {
      int ms;
      MPI_Status st;
      struct timespec ts;
      chk(MPI_Recv(&ms, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st), "Recv");
      if (st.MPI_TAG == T_STOP) break;
      ts.tv_sec = ms / 1000;
      ts.tv_nsec = (ms % 1000) * 1000000L;
      nanosleep(&ts, NULL);
      chk(MPI_Send(&ms, 1, MPI_INT, 0, T_TASK, MPI_COMM_WORLD), "Send");
    }
    logf_("stopped; MPI_Finalize...");
    MPI_Finalize();
    logf_("finalized");
  }
  return 0;
}
