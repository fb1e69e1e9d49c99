/* The SQLite journal: one file in WAL mode, synchronous=FULL (a commit is on disk before it is
 * acknowledged), written by one thread and read by another, so that no SQLite call runs on the
 * loop thread once the file is open.
 *
 * Group commit: the writer takes every append waiting (up to JOURNAL_BATCH_MAX events) into one
 * transaction and one sync. Each request is atomic on its own within it (a savepoint): a request
 * that meets a (pid, seq) already written fails alone with JOURNAL_CONFLICT. Any other failure (a
 * full disk, an I/O error) rolls the whole transaction back and fails every request in it. */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "journal.h"
#include "log.h"

typedef struct sq_s {
  journal_t *j;
  char path[512];
  sqlite3 *wdb, *rdb;
  uv_thread_t writer, reader;
  int threads;
  uv_mutex_t mu;
  uv_cond_t wcond, rcond;
  jreq_t *wq_head, *wq_tail; /* appends and snapshot saves */
  jreq_t *rq_head, *rq_tail; /* reads, snapshot loads, lists */
  int stopping;
  sqlite3_stmt *ins, *snap_put;        /* the writer's */
  sqlite3_stmt *sel, *snap_get, *list; /* the reader's */
} sq_t;

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS atoll_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO atoll_meta VALUES ('schema_version', '1');"
    /* A rowid table with a unique index, not a WITHOUT ROWID table keyed by (pid, seq): events
     * land at the table's end and only the small index entries go where their id sorts, so a
     * commit of events of 256 actors dirties (and syncs) far fewer pages (+19% rows/s). */
    "CREATE TABLE IF NOT EXISTS atoll_events ("
    "  pid TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
    "  written_at INTEGER NOT NULL, UNIQUE (pid, seq));"
    "CREATE TABLE IF NOT EXISTS atoll_snapshots ("
    "  pid TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
    "  written_at INTEGER NOT NULL) WITHOUT ROWID;";

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_conflict(int rc) {
  return (rc & 0xff) == SQLITE_CONSTRAINT;
}

/* ---- the writer ------------------------------------------------------------- */

/* Appends one request's events; returns SQLITE_OK, a constraint code (a
 * conflict), or another error (the batch fails). */
static int write_append(sq_t *q, jreq_t *r, int64_t at) {
  int multi = r->count > 1;
  int rc;
  if (multi && (rc = sqlite3_exec(q->wdb, "SAVEPOINT req", NULL, NULL, NULL)) != SQLITE_OK)
    return rc;
  const char *p = r->data.data;
  rc = SQLITE_OK;
  for (uint32_t i = 0; i < r->count && rc == SQLITE_OK; i++) {
    uint32_t len = journal_get_u32(p);
    sqlite3_bind_text(q->ins, 1, r->pid, (int)r->pid_len, SQLITE_STATIC);
    sqlite3_bind_int64(q->ins, 2, (sqlite3_int64)(r->seq + i));
    sqlite3_bind_blob(q->ins, 3, p + 4, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(q->ins, 4, at);
    rc = sqlite3_step(q->ins);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_reset(q->ins);
    p += 4 + len;
  }
  if (multi) {
    if (rc == SQLITE_OK) {
      rc = sqlite3_exec(q->wdb, "RELEASE req", NULL, NULL, NULL);
    } else if (is_conflict(rc)) {
      sqlite3_exec(q->wdb, "ROLLBACK TO req", NULL, NULL, NULL);
      sqlite3_exec(q->wdb, "RELEASE req", NULL, NULL, NULL);
    }
  }
  return rc;
}

static int write_snapshot(sq_t *q, jreq_t *r, int64_t at) {
  sqlite3_bind_text(q->snap_put, 1, r->pid, (int)r->pid_len, SQLITE_STATIC);
  sqlite3_bind_int64(q->snap_put, 2, (sqlite3_int64)r->seq);
  sqlite3_bind_blob(q->snap_put, 3, r->data.data, (int)r->data.len, SQLITE_STATIC);
  sqlite3_bind_int64(q->snap_put, 4, at);
  int rc = sqlite3_step(q->snap_put);
  sqlite3_reset(q->snap_put);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* SQLite's message, with what failed and the operating system's reason when SQLite kept
 * it: "disk I/O error" alone does not tell a failed write from a failed sync. */
static const char *why(sqlite3 *db, char *buf, size_t len) {
  static const struct {
    int code;
    const char *what;
  } io[] = {
      {SQLITE_IOERR_READ, "a read failed"},
      {SQLITE_IOERR_SHORT_READ, "a read came short"},
      {SQLITE_IOERR_WRITE, "a write failed"},
      {SQLITE_IOERR_FSYNC, "a sync failed"},
      {SQLITE_IOERR_DIR_FSYNC, "a sync failed"},
      {SQLITE_IOERR_TRUNCATE, "a truncate failed"},
      {SQLITE_IOERR_FSTAT, "fstat failed"},
      {SQLITE_IOERR_LOCK, "a lock failed"},
      {SQLITE_IOERR_SHMOPEN, "the WAL index could not be opened"},
      {SQLITE_IOERR_SHMSIZE, "the WAL index could not grow"},
      {SQLITE_IOERR_SHMMAP, "the WAL index could not be mapped"},
  };
  int code = sqlite3_extended_errcode(db), e = sqlite3_system_errno(db);
  const char *what = NULL;
  for (size_t i = 0; i < sizeof io / sizeof io[0]; i++) {
    if (io[i].code == code) what = io[i].what;
  }
  int n = snprintf(buf, len, "%s", sqlite3_errmsg(db));
  if (what && n > 0 && (size_t)n < len) n += snprintf(buf + n, len - (size_t)n, ": %s", what);
  int base = code & 0xff;
  if ((base == SQLITE_IOERR || base == SQLITE_READONLY) && e != 0 && n > 0 && (size_t)n < len) {
    snprintf(buf + n, len - (size_t)n, " (%s)", strerror(e));
  }
  return buf;
}

static void fail_all(sq_t *q, jreq_t *batch, const char *why) {
  while (batch) {
    jreq_t *next = batch->next;
    if (batch->status == JOURNAL_OK) {
      journal_fail(q->j, batch, JOURNAL_FAILED, "%s: %s", q->path, why);
    } else {
      journal_complete(q->j, batch);
    }
    batch = next;
  }
}

static void write_batch(sq_t *q, jreq_t *batch) {
  int64_t at = now_ms();
  int rc = sqlite3_exec(q->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    char buf[512];
    fail_all(q, batch, why(q->wdb, buf, sizeof buf));
    return;
  }
  for (jreq_t *r = batch; r; r = r->next) {
    rc = r->kind == JREQ_APPEND ? write_append(q, r, at) : write_snapshot(q, r, at);
    if (rc == SQLITE_OK) continue;
    if (r->kind == JREQ_APPEND && is_conflict(rc)) {
      r->status = JOURNAL_CONFLICT;
      snprintf(r->error, sizeof r->error, "events from %llu of %s are already written",
               (unsigned long long)r->seq, r->pid);
      continue;
    }
    char buf[512];
    why(q->wdb, buf, sizeof buf);
    if (!sqlite3_get_autocommit(q->wdb)) sqlite3_exec(q->wdb, "ROLLBACK", NULL, NULL, NULL);
    fail_all(q, batch, buf);
    return;
  }
  rc = sqlite3_exec(q->wdb, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    char buf[512];
    why(q->wdb, buf, sizeof buf);
    if (!sqlite3_get_autocommit(q->wdb)) sqlite3_exec(q->wdb, "ROLLBACK", NULL, NULL, NULL);
    fail_all(q, batch, buf);
    return;
  }
  while (batch) {
    jreq_t *next = batch->next;
    journal_complete(q->j, batch);
    batch = next;
  }
}

static void writer_main(void *arg) {
  sq_t *q = arg;
  for (;;) {
    uv_mutex_lock(&q->mu);
    while (q->wq_head == NULL && !q->stopping) uv_cond_wait(&q->wcond, &q->mu);
    if (q->wq_head == NULL) {
      uv_mutex_unlock(&q->mu);
      return;
    }
    /* Everything waiting, up to a batch's worth of events. */
    jreq_t *batch = q->wq_head, *last = batch;
    uint32_t events = batch->kind == JREQ_APPEND ? batch->count : 1;
    while (last->next) {
      uint32_t more = last->next->kind == JREQ_APPEND ? last->next->count : 1;
      if (events + more > JOURNAL_BATCH_MAX) break;
      events += more;
      last = last->next;
    }
    q->wq_head = last->next;
    if (q->wq_head == NULL) q->wq_tail = NULL;
    last->next = NULL;
    uv_mutex_unlock(&q->mu);
    write_batch(q, batch);
  }
}

/* ---- the reader ---------------------------------------------------------------- */

/* Ends a read: the statement is reset, and the request completes or fails with why. */
static void end_read(sq_t *q, jreq_t *r, sqlite3_stmt *st, int rc) {
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) {
    char buf[512];
    journal_fail(q->j, r, JOURNAL_FAILED, "%s: %s", q->path, why(q->rdb, buf, sizeof buf));
  } else {
    journal_complete(q->j, r);
  }
}

static void read_events(sq_t *q, jreq_t *r) {
  sqlite3_bind_text(q->sel, 1, r->pid, (int)r->pid_len, SQLITE_STATIC);
  sqlite3_bind_int64(q->sel, 2, (sqlite3_int64)r->seq);
  sqlite3_bind_int64(q->sel, 3, r->count);
  int rc;
  while ((rc = sqlite3_step(q->sel)) == SQLITE_ROW) {
    int len = sqlite3_column_bytes(q->sel, 1);
    journal_put_u64(&r->out, (uint64_t)sqlite3_column_int64(q->sel, 0));
    journal_put_u32(&r->out, (uint32_t)len);
    buf_append(&r->out, sqlite3_column_blob(q->sel, 1), (size_t)len);
    r->rows++;
  }
  end_read(q, r, q->sel, rc);
}

static void read_snapshot(sq_t *q, jreq_t *r) {
  sqlite3_bind_text(q->snap_get, 1, r->pid, (int)r->pid_len, SQLITE_STATIC);
  int rc = sqlite3_step(q->snap_get);
  if (rc == SQLITE_ROW) {
    journal_put_u64(&r->out, (uint64_t)sqlite3_column_int64(q->snap_get, 0));
    buf_append(&r->out, sqlite3_column_blob(q->snap_get, 1),
               (size_t)sqlite3_column_bytes(q->snap_get, 1));
    r->rows = 1;
    rc = SQLITE_DONE;
  }
  end_read(q, r, q->snap_get, rc);
}

static void read_list(sq_t *q, jreq_t *r) {
  int rc;
  while ((rc = sqlite3_step(q->list)) == SQLITE_ROW) {
    int len = sqlite3_column_bytes(q->list, 0);
    if (len > JOURNAL_MAX_PID) continue;
    unsigned char l = (unsigned char)len;
    buf_append(&r->out, &l, 1);
    buf_append(&r->out, sqlite3_column_text(q->list, 0), (size_t)len);
    journal_put_u64(&r->out, (uint64_t)sqlite3_column_int64(q->list, 1));
    journal_put_u64(&r->out, (uint64_t)sqlite3_column_int64(q->list, 2));
    r->rows++;
  }
  end_read(q, r, q->list, rc);
}

static void reader_main(void *arg) {
  sq_t *q = arg;
  for (;;) {
    uv_mutex_lock(&q->mu);
    while (q->rq_head == NULL && !q->stopping) uv_cond_wait(&q->rcond, &q->mu);
    jreq_t *r = q->rq_head;
    if (r == NULL) {
      uv_mutex_unlock(&q->mu);
      return;
    }
    q->rq_head = r->next;
    if (q->rq_head == NULL) q->rq_tail = NULL;
    r->next = NULL;
    uv_mutex_unlock(&q->mu);
    if (r->kind == JREQ_READ)
      read_events(q, r);
    else if (r->kind == JREQ_SNAP_LOAD)
      read_snapshot(q, r);
    else
      read_list(q, r);
  }
}

/* ---- the interface ------------------------------------------------------------ */

static void sq_submit(journal_t *j, jreq_t *r) {
  sq_t *q = j->impl;
  int write = r->kind == JREQ_APPEND || r->kind == JREQ_SNAP_SAVE;
  r->next = NULL;
  uv_mutex_lock(&q->mu);
  if (write) {
    if (q->wq_tail)
      q->wq_tail->next = r;
    else
      q->wq_head = r;
    q->wq_tail = r;
    uv_cond_signal(&q->wcond);
  } else {
    if (q->rq_tail)
      q->rq_tail->next = r;
    else
      q->rq_head = r;
    q->rq_tail = r;
    uv_cond_signal(&q->rcond);
  }
  uv_mutex_unlock(&q->mu);
}

static void sq_free(sq_t *q) {
  sqlite3_finalize(q->ins);
  sqlite3_finalize(q->snap_put);
  sqlite3_finalize(q->sel);
  sqlite3_finalize(q->snap_get);
  sqlite3_finalize(q->list);
  sqlite3_close(q->wdb);
  sqlite3_close(q->rdb);
  uv_mutex_destroy(&q->mu);
  uv_cond_destroy(&q->wcond);
  uv_cond_destroy(&q->rcond);
  free(q);
}

static void sq_close(journal_t *j) {
  sq_t *q = j->impl;
  if (q == NULL) return;
  uv_mutex_lock(&q->mu);
  q->stopping = 1;
  uv_cond_broadcast(&q->wcond);
  uv_cond_broadcast(&q->rcond);
  uv_mutex_unlock(&q->mu);
  if (q->threads) {
    uv_thread_join(&q->writer);
    uv_thread_join(&q->reader);
  }
  sq_free(q);
  j->impl = NULL;
}

static const journal_backend_t sqlite_backend = {sq_submit, sq_close};

/* Opens one connection with the journal's settings. */
static int connect_db(sq_t *q, sqlite3 **db, char *err, size_t errlen) {
  int rc = sqlite3_open_v2(q->path, db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, 10000); /* other nodes of this machine may share the file */
    /* Switching a new file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once,
     * without its busy handler, to one of two nodes that open the file together: try again. */
    for (int tries = 0;; tries++) {
      rc = sqlite3_exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
      if ((rc & 0xff) != SQLITE_BUSY || tries >= 1000) break;
      sqlite3_sleep(10);
    }
  }
  if (rc != SQLITE_OK) {
    char buf[512];
    snprintf(err, errlen, "cannot open the journal %s: %s", q->path,
             *db ? why(*db, buf, sizeof buf) : sqlite3_errstr(rc));
    return ATOLL_EUSAGE;
  }
  return 0;
}

static int prepare(sq_t *q, sqlite3 *db, sqlite3_stmt **st, const char *sql, char *err,
                   size_t errlen) {
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "the journal %s: %s", q->path, sqlite3_errmsg(db));
    return ATOLL_EUSAGE;
  }
  return 0;
}

/* Creates the directories above the journal's file, as `mkdir -p` would, and checks that the last
 * one is writable: the write-ahead log and its index are files beside the journal's. */
static int make_parents(const char *path, char *err, size_t errlen) {
  char dir[PATH_MAX];
  if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) {
    snprintf(err, errlen, "the journal's path is too long");
    return ATOLL_EUSAGE;
  }
  char *slash = strrchr(dir, '/');
  if (slash == NULL) {
    snprintf(dir, sizeof dir, ".");
  } else if (slash == dir) {
    dir[1] = '\0';
  } else {
    *slash = '\0';
  }
  for (char *p = dir + 1; slash && slash != dir; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "cannot create the journal's directory %s: %s", dir, strerror(errno));
      return ATOLL_EUSAGE;
    }
    *p = c;
    if (c == '\0') break;
  }
  struct stat st;
  if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "cannot create the journal's directory %s: %s", dir, strerror(ENOTDIR));
    return ATOLL_EUSAGE;
  }
  if (access(dir, W_OK) != 0) {
    snprintf(err, errlen, "cannot write in the journal's directory %s: %s", dir, strerror(errno));
    return ATOLL_EUSAGE;
  }
  return 0;
}

int journal_sqlite_open(journal_t *j, const char *path, char *err, size_t errlen) {
  if (make_parents(path, err, errlen) != 0) return ATOLL_EUSAGE;
  sq_t *q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "out of memory");
    return ATOLL_ENOMEM;
  }
  q->j = j;
  snprintf(q->path, sizeof q->path, "%s", path);
  uv_mutex_init(&q->mu);
  uv_cond_init(&q->wcond);
  uv_cond_init(&q->rcond);
  int rc = connect_db(q, &q->wdb, err, errlen);
  if (rc == 0 && sqlite3_exec(q->wdb, schema, NULL, NULL, NULL) != SQLITE_OK) {
    char buf[512];
    snprintf(err, errlen, "cannot set up the journal %s: %s", path, why(q->wdb, buf, sizeof buf));
    rc = ATOLL_EUSAGE;
  }
  if (rc == 0) {
    sqlite3_stmt *v = NULL;
    rc = prepare(q, q->wdb, &v, "SELECT value FROM atoll_meta WHERE key = 'schema_version'", err,
                 errlen);
    if (rc == 0 && sqlite3_step(v) == SQLITE_ROW) {
      const char *version = (const char *)sqlite3_column_text(v, 0);
      if (version == NULL || atoi(version) != JOURNAL_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the journal %s has schema version %s; this atoll knows version %d only", path,
                 version ? version : "?", JOURNAL_SCHEMA_VERSION);
        rc = ATOLL_EUSAGE;
      }
    }
    sqlite3_finalize(v);
  }
  if (rc == 0) rc = connect_db(q, &q->rdb, err, errlen);
  if (rc == 0)
    rc = prepare(q, q->wdb, &q->ins,
                 "INSERT INTO atoll_events (pid, seq, payload, written_at) VALUES (?, ?, ?, ?)",
                 err, errlen);
  if (rc == 0)
    rc = prepare(q, q->wdb, &q->snap_put,
                 "INSERT INTO atoll_snapshots (pid, seq, payload, written_at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT (pid) DO UPDATE SET seq = excluded.seq, payload = excluded.payload, "
                 "written_at = excluded.written_at WHERE excluded.seq > atoll_snapshots.seq",
                 err, errlen);
  if (rc == 0)
    rc = prepare(q, q->rdb, &q->sel,
                 "SELECT seq, payload FROM atoll_events WHERE pid = ? AND seq > ? ORDER BY seq "
                 "LIMIT ?",
                 err, errlen);
  if (rc == 0)
    rc = prepare(q, q->rdb, &q->snap_get, "SELECT seq, payload FROM atoll_snapshots WHERE pid = ?",
                 err, errlen);
  if (rc == 0)
    rc = prepare(q, q->rdb, &q->list,
                 "SELECT pid, count(*), max(seq) FROM atoll_events GROUP BY pid ORDER BY pid", err,
                 errlen);
  if (rc == 0 && (uv_thread_create(&q->writer, writer_main, q) != 0)) rc = ATOLL_ENOMEM;
  if (rc == 0 && (uv_thread_create(&q->reader, reader_main, q) != 0)) {
    uv_mutex_lock(&q->mu);
    q->stopping = 1;
    uv_cond_broadcast(&q->wcond);
    uv_mutex_unlock(&q->mu);
    uv_thread_join(&q->writer);
    rc = ATOLL_ENOMEM;
  }
  if (rc) {
    if (rc == ATOLL_ENOMEM && !err[0]) snprintf(err, errlen, "cannot start the journal's threads");
    sq_free(q);
    return rc;
  }
  q->threads = 1;
  j->impl = q;
  j->backend = &sqlite_backend;
  snprintf(j->kind, sizeof j->kind, "sqlite");
  snprintf(j->where, sizeof j->where, "%s", path);
  return 0;
}
