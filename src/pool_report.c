/*
** pool_report.c -- progress and traces.  Both cost nothing when off: the
** scheduler calls here only for jobs that asked (Pool.nprogress) or while
** a trace is open (Pool.trace).
*/
#include "pool_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_EVERY 0.1    /* seconds between two reports of a job */
#define BAR 24                /* characters of the bar itself */

/* "1:05" or "2:03:07" */
static void clock_text(char *out, size_t n, double s) {
  long t = s < 0 ? 0 : (long)(s + 0.5);
  if (t >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
}

/* one line on stderr, drawn over the last one: done/total, %, rate,
   elapsed, ETA (what is known of them) */
static void draw_bar(Job *J, lua_Integer total, int final) {
  char line[200], el[48], eta[48], bar[BAR + 1];
  double elapsed = lmp_now() - J->begun;
  double rate = elapsed > 0 ? (double)J->done / elapsed : 0;
  int k, fill;
  clock_text(el, sizeof el, elapsed);
  if (total > 0) {
    fill = (int)((double)BAR * (double)J->done / (double)total);
    for (k = 0; k < BAR; k++) bar[k] = k < fill ? '#' : '.';
    bar[BAR] = '\0';
    clock_text(eta, sizeof eta, rate > 0 ? (double)(total - J->done) / rate : 0);
    snprintf(line, sizeof line, "\r[%s] %lld/%lld %3d%% %.1f/s %s ETA %s ",
             bar, (long long)J->done, (long long)total,
             (int)(100.0 * (double)J->done / (double)total), rate, el,
             final ? "0:00" : eta);
  } else
    snprintf(line, sizeof line, "\r%lld done %.1f/s %s ", (long long)J->done,
             rate, el);
  fputs(line, stderr);
  if (final) fputc('\n', stderr);
  fflush(stderr);
}

/* the job at jidx: its total (nil until known), and its report */
static void report_job(lua_State *L, Job *J, int jidx, int final) {
  lua_Integer total = J->iter ? -1 : J->ninput;   /* an iterator's: unknown */
  if (J->kind == K_APPLY) total = 1;
  if (J->progress == 1) {
    if (isatty(STDERR_FILENO)) draw_bar(J, total, final);
    return;
  }
  lmp_uvfield(L, jidx, JV_PROG);
  lua_pushinteger(L, J->done);
  if (total >= 0) lua_pushinteger(L, total);
  else lua_pushnil(L);
  lua_call(L, 2, 0);
}

void lmp_progress_report(lua_State *L, Pool *P, int pidx, int force) {
  int tab;
  double now = lmp_now();
  lmp_uvfield(L, pidx, "progress");
  tab = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, tab)) {
    Job *J = (Job *)lua_touserdata(L, -1);
    int final = J->state != J_RUN;
    if (final || force || now - J->drawn >= PROGRESS_EVERY) {
      J->drawn = now;
      if (final) {                     /* its last report: it leaves */
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, tab);
        P->nprogress--;
      }
      report_job(L, J, lua_gettop(L), final);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

void lmp_progress_drop(lua_State *L, Pool *P, int pidx, Job *J) {
  if (J->progress == 0) return;
  lmp_uvfield(L, pidx, "progress");
  if (lmp_rawgeti(L, -1, J->id) == LUA_TUSERDATA &&
      lua_touserdata(L, -1) == (void *)J) {
    lua_pushnil(L);
    lua_rawseti(L, -3, J->id);
    P->nprogress--;
    if (J->progress == 1 && J->drawn > 0 && isatty(STDERR_FILENO)) {
      fputc('\n', stderr);
      fflush(stderr);
    }
  }
  lua_pop(L, 2);
}

/* ---------------------------------------------------------------------- */
/* traces                                                                 */
/* ---------------------------------------------------------------------- */
struct lmp_trace {
  FILE *f;
  int events;           /* written so far: the next needs a comma */
  long pid;             /* the parent's: the trace's "process" */
};

lmp_trace *lmp_trace_open(lua_State *L, const char *path) {
  lmp_trace *t = (lmp_trace *)calloc(1, sizeof *t);
  if (t == NULL) lmp_error(L, "lmp: not enough memory");
  t->f = fopen(path, "we");            /* close-on-exec */
  if (t->f == NULL) {
    free(t);
    lmp_syserror(L, path);
  }
  t->pid = (long)getpid();
  fputs("[\n", t->f);
  return t;
}

/* a JSON string (names are file:line, messages are lmp's) */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 32) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void event_start(lmp_trace *t) {
  if (t->events++ > 0) fputs(",\n", t->f);
}

void lmp_trace_task(lua_State *L, lmp_trace *t, int jidx, lua_Integer worker,
                    const lmp_replystats *st, lua_Integer items, size_t in,
                    size_t out, int failed, const char *error) {
  double dur = (st->ended - st->started) * 1e6;
  event_start(t);
  fputs("{\"name\":", t->f);
  lmp_uvfield(L, jidx, JV_NAME);
  json_string(t->f, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "task");
  lua_pop(L, 1);
  fprintf(t->f, ",\"cat\":\"task\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                "\"pid\":%ld,\"tid\":%lld,\"args\":{\"items\":%lld,"
                "\"bytes_in\":%lu,\"bytes_out\":%lu,\"error\":%s",
          st->started * 1e6, dur < 0 ? 0 : dur, t->pid, (long long)worker,
          (long long)items, (unsigned long)in, (unsigned long)out,
          failed ? "true" : "false");
  if (st->cpu >= 0) fprintf(t->f, ",\"cpu_s\":%.6f", st->cpu);
  if (st->maxrss >= 0) fprintf(t->f, ",\"maxrss_kb\":%lld", (long long)st->maxrss);
  if (error != NULL) {
    fputs(",\"message\":", t->f);
    json_string(t->f, error);
  }
  fputs("}}", t->f);
}

void lmp_trace_worker(lmp_trace *t, lua_Integer worker, const char *name,
                      const char *what) {
  event_start(t);
  fputs("{\"name\":", t->f);
  json_string(t->f, name);
  fprintf(t->f, ",\"cat\":\"worker\",\"ph\":\"i\","
                "\"s\":\"t\",\"ts\":%.3f,\"pid\":%ld,\"tid\":%lld,"
                "\"args\":{\"what\":", lmp_realtime() * 1e6, t->pid,
          (long long)worker);
  json_string(t->f, what);
  fputs("}}", t->f);
}

void lmp_trace_close(lmp_trace *t) {
  if (t == NULL) return;
  fputs("\n]\n", t->f);
  fclose(t->f);
  free(t);
}
