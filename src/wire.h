/*
** wire.h -- lmp's wire format, in one place: the value message (magic,
** version, value count, the tags of values), frames on a byte stream, and
** the Pool protocol's task and reply headers.  Everything that writes or
** reads format bytes asks this file.  Builds on buf.h and sys.h.
**
** Value message: "LMP" <version> <varint count> <value>*
** Frame:         <8-byte LE payload length> <payload>
** Pool task:     frame of <task header> [<8-byte LE length> <function
**                message>] <argument message>
** Pool reply:    frame of <reply header> [<stats> (OK, ERR)] <value message>
*/
#ifndef LMP_WIRE_H
#define LMP_WIRE_H

#include "buf.h"
#include "sys.h"

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------- */
/* value messages                                                         */
/* ---------------------------------------------------------------------- */
#define LMP_WIRE_VERSION 1

enum {
  LMP_T_NIL = 0, LMP_T_FALSE, LMP_T_TRUE, LMP_T_INT, LMP_T_FLT, LMP_T_STR,
  LMP_T_TAB, LMP_T_REF, LMP_T_META, LMP_T_CUSTOM, LMP_T_FUNC, LMP_T_GLOBALS,
  LMP_T_NAMED, LMP_T_JOIN, LMP_T_MTVAL, LMP_T_SKEY,
  LMP_T_TABR,           /* a table that a later T_REF points to */
  LMP_T_INHERITED,      /* an object the receiver inherited (ident.h) */
  LMP_T_MAX
};

/* room a message header takes at most */
#define LMP_HEADER_MAX (4 + LMP_VARINT_MAX)
/* a header for `count` values at p; `padded`: the count takes the full
   LMP_VARINT_MAX bytes, so lmp_wire_setcount can fill it in later.
   Returns its length */
LMP_INTERNAL size_t lmp_wire_header(char *p, uint64_t count, int padded);
LMP_INTERNAL void lmp_wire_setcount(char *header, uint64_t count);
/* reads a header: 0 (count set, *p past it), -1 not an lmp message, -2 a
   version this lmp does not read (*version set), -3 the count is cut short,
   -4 the count is malformed */
LMP_INTERNAL int lmp_wire_readheader(const unsigned char **p,
                                     const unsigned char *end,
                                     uint64_t *count, int *version);

/* ---------------------------------------------------------------------- */
/* frames                                                                 */
/* ---------------------------------------------------------------------- */
#define LMP_FRAME_HDR 8
LMP_INTERNAL void lmp_frame_header(char *p, uint64_t payload);

/* accumulates bytes from an fd until whole frames are there */
typedef struct lmp_reader {
  lmp_buf b;
  size_t pos;           /* start of the first unconsumed frame */
} lmp_reader;

/* reads once from fd (which may block); 1 data, 0 EOF, -1 error (errno) */
LMP_INTERNAL int lmp_reader_fill(lmp_reader *r, int fd);
/* 1 and the next frame's payload if a whole one is buffered, else 0 */
LMP_INTERNAL int lmp_reader_frame(lmp_reader *r, const char **p, size_t *n);
LMP_INTERNAL void lmp_reader_free(lmp_reader *r);

/* ---------------------------------------------------------------------- */
/* the Pool protocol                                                      */
/* ---------------------------------------------------------------------- */
enum {                  /* task flags */
  LMP_TF_INLINE = 1,    /* the function's message comes with the task */
  LMP_TF_STAR = 2,      /* each item is an args table (starmap, apply) */
  LMP_TF_APPLY = 4,     /* one call; every result value goes back */
  LMP_TF_FLUSH = 8,     /* empty the function cache first (ids wrapped) */
  LMP_TF_KEEP = 16,     /* a stateless function, kept across calls */
  LMP_TF_STREAM = 32,   /* send each item's result as it is done (a task
                           timed per item) */
  LMP_TF_STATS = 64     /* measure the task's CPU time and peak RSS */
};
enum {                  /* reply statuses */
  LMP_RS_OK = 0, LMP_RS_ERR = 1, LMP_RS_READY = 2,
  LMP_RS_ITEM = 3       /* one item of a streamed task: [position, value] */
};

/* what a task's final reply (OK or ERR) says of its run */
typedef struct lmp_replystats {
  double started, ended;   /* wall clock (seconds since the epoch) */
  double cpu;              /* CPU seconds, < 0 if not measured */
  int64_t maxrss;          /* the worker's peak RSS in KB, < 0 if not */
} lmp_replystats;
#define LMP_REPLYSTATS 32

typedef struct lmp_taskhdr {
  uint32_t task;        /* the parent's task slot */
  uint32_t fnid;        /* the function's id in the worker's cache */
  int flags;
  uint64_t start;       /* index of the task's first item */
} lmp_taskhdr;

#define LMP_TASKHDR 17
#define LMP_REPLYHDR 5
LMP_INTERNAL void lmp_taskhdr_put(char *p, const lmp_taskhdr *h);
/* reads a task frame: its header, the inline function's message (if any)
   and the arguments' message; -1 if the frame is malformed */
LMP_INTERNAL int lmp_task_parse(const char *p, size_t n, lmp_taskhdr *h,
                                const char **fn, size_t *fnlen,
                                const char **args, size_t *argslen);
/* the bytes a task frame's payload takes before its function message */
#define LMP_TASK_FNPREFIX 8
LMP_INTERNAL void lmp_replyhdr_put(char *p, uint32_t task, int status);
LMP_INTERNAL int lmp_replyhdr_get(const char *p, size_t n, uint32_t *task,
                                  int *status);   /* -1 if too short */
LMP_INTERNAL void lmp_replystats_put(char *p, const lmp_replystats *s);
LMP_INTERNAL void lmp_replystats_get(const char *p, lmp_replystats *s);

#endif
