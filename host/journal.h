/* The event journal: (persistence_id, seq, payload) rows behind one interface, with three
 * backends (SQLite, PostgreSQL, memory). Requests go in from the loop thread; their results come
 * back on the loop thread, through on_done, whichever thread did the work. */
#ifndef ATOLL_JOURNAL_H
#define ATOLL_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "loop.h"

#define JOURNAL_SCHEMA_VERSION 1
#define JOURNAL_MAX_PID        255  /* bytes in a persistence id */
#define JOURNAL_READ_PAGE      4096 /* events a read returns at most */
#define JOURNAL_BATCH_MAX      4096 /* events one commit takes at most */

typedef enum {
  JOURNAL_OK = 0,
  JOURNAL_CONFLICT = 1, /* (pid, seq) is taken: another writer got there first */
  JOURNAL_FAILED = 2,   /* the backend failed: error says why */
} journal_status_t;

typedef enum {
  JREQ_APPEND,    /* events seq, seq + 1, ... of pid, atomically */
  JREQ_READ,      /* events of pid after seq, at most limit */
  JREQ_SNAP_SAVE, /* a snapshot of pid at seq */
  JREQ_SNAP_LOAD, /* the latest snapshot of pid */
  JREQ_LIST,      /* persistence ids, with their event counts and last seq */
} jreq_kind_t;

typedef struct jreq_s jreq_t;
struct jreq_s {
  jreq_t *next;
  jreq_kind_t kind;
  double token; /* the caller's, handed back with the result */
  char pid[JOURNAL_MAX_PID + 1];
  size_t pid_len;
  uint64_t seq;
  uint32_t count; /* append: events in data; read: limit */
  buf_t data;     /* append: events as (u32 length, bytes)...; snapshot save: the payload */

  /* The result. */
  int status;
  char error[512];
  buf_t out;     /* read: rows as (u64 seq, u32 length, bytes)...; snapshot load: (u64 seq,
                    bytes); list: (u8 pid length, pid, u64 count, u64 last seq)... */
  uint32_t rows; /* read, list: rows in out; snapshot load: 1 if found */
};

typedef struct journal_s journal_t;

typedef struct journal_backend_s {
  /* Takes a request; its result comes through journal_complete. */
  void (*submit)(journal_t *j, jreq_t *r);
  /* Finishes what is under way, then releases the backend. */
  void (*close)(journal_t *j);
} journal_backend_t;

struct journal_s {
  host_handle_t base; /* first: the async handle's data */
  host_t *host;
  const journal_backend_t *backend;
  void *impl;
  char kind[16];   /* sqlite, postgres, memory */
  char where[512]; /* the file, or the server (no password), for messages */
  uv_async_t async;
  int async_open;
  uv_mutex_t lock; /* guards done */
  jreq_t *done_head, *done_tail;
  /* Called on the loop thread for each finished request (last: no other
   * one follows in this wake-up); takes ownership. */
  void (*on_done)(journal_t *j, jreq_t *r, int last);
  void *data; /* the binding's */
  int closed;
  /* Requests submitted and not yet handed back: while there are some, the
   * journal keeps the loop alive (a node waits for its writes); an idle
   * journal does not (a node with nothing left to do exits). */
  int outstanding;
};

/* Opens a journal. spec: "memory", "sqlite:PATH", or a PostgreSQL URI
 * ("postgres://..." or "postgresql://..."). 0, or an error with the
 * backend's own message in err. The journal is not usable until... it is:
 * SQLite and memory open at once; PostgreSQL connects on the loop, and
 * requests wait for it (or fail, if it cannot connect). */
int journal_open(journal_t *j, host_t *h, const char *spec, char *err, size_t errlen);

/* Queues a request (the journal owns it until on_done gives it back). */
void journal_submit(journal_t *j, jreq_t *r);

/* New requests, zeroed; freed with journal_req_free. */
jreq_t *journal_req_new(jreq_kind_t kind, double token, const char *pid, size_t pid_len);
void journal_req_free(jreq_t *r);

/* For backends: a request is done (any thread). */
void journal_complete(journal_t *j, jreq_t *r);
void journal_fail(journal_t *j, jreq_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Finishes pending work and releases everything; the loop must still run
 * to close the async handle. */
void journal_close(journal_t *j);

/* Backends. */
int journal_memory_open(journal_t *j, char *err, size_t errlen);
int journal_sqlite_open(journal_t *j, const char *path, char *err, size_t errlen);
int journal_pg_open(journal_t *j, const char *conninfo, char *err, size_t errlen);

/* Helpers for the encodings in jreq_t. */
void journal_put_u32(buf_t *b, uint32_t v);
void journal_put_u64(buf_t *b, uint64_t v);
uint32_t journal_get_u32(const char *p);
uint64_t journal_get_u64(const char *p);

#endif
