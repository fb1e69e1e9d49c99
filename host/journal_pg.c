/* The PostgreSQL journal: libpq's asynchronous API driven by the loop (a uv_poll on the
 * connection's socket), so that no call blocks the loop thread. Two connections: one writes, one
 * reads, so that an actor recovering a long history does not hold up everyone's emits.
 *
 * Group commit: the writer sends every append waiting as one multi-row INSERT (one statement,
 * one transaction, one WAL flush with synchronous_commit on). If that statement meets a (pid, seq)
 * already written, the whole statement fails; the writer then sends the same requests one by one
 * to tell the conflicting ones from the others. A connection that fails is tried again with a
 * growing pause (0.1 s to 5 s); meanwhile requests fail at once with the last error. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "journal.h"
#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define PG_BATCH_ROWS  2000 /* rows per INSERT: 3 parameters each, under libpq's 65535 */

typedef enum { C_DOWN, C_CONNECTING, C_SETUP, C_READY } cstate_t;

typedef enum {
  Q_NONE,
  Q_SETUP,  /* the schema, then its version */
  Q_APPEND, /* a batch of appends, as one statement */
  Q_ONE,    /* one append, while telling conflicts apart */
  Q_SNAP_SAVE,
  Q_READ,
  Q_SNAP_LOAD,
  Q_LIST,
} qkind_t;

typedef struct pg_s pg_t;

typedef struct conn_s {
  host_handle_t base; /* first: the handles' data (the host's shutdown closes them through it) */
  pg_t *pg;
  const char *role; /* "writer" or "reader", for messages */
  PGconn *c;
  cstate_t state;
  int ever_ready;
  uv_poll_t poll;
  int poll_fd, poll_open, poll_events;
  uv_timer_t timer;
  int timer_open;
  uint64_t backoff_ms;
  char error[512];         /* why it is down */
  jreq_t *q_head, *q_tail; /* waiting */
  qkind_t qkind;           /* the query in flight */
  jreq_t *inflight;        /* its requests */
  jreq_t *sorting;         /* Q_ONE: the requests still to send one by one */
  int failed;              /* the query in flight failed: the error is in qerror */
  char qerror[512];
  char sqlstate[6];
  int setup_version; /* the schema version read */
  int closing;
  uv_getaddrinfo_t lookup; /* the server's host name, resolved off the loop thread */
  char hostaddr[64];
} conn_t;

struct pg_s {
  journal_t *j;
  char conninfo[1024];
  /* The connection's parameters, as libpq parsed them, with room for a
   * hostaddr: libpq would resolve a host name itself, blocking the loop. */
  const char **keys, **values;
  int nparams;
  char host[256]; /* to resolve ("" when it is an address, a socket, or several) */
  conn_t writer, reader;
  int handles;  /* uv handles not yet closed */
  int released; /* the journal let go: the last handle to close frees this */
};

static void conn_connect(conn_t *c);
static void conn_dispatch(conn_t *c);

static void free_pg(pg_t *pg) {
  if (pg->keys) {
    for (int i = 0; i < pg->nparams; i++) {
      free((void *)pg->keys[i]);
      free((void *)pg->values[i]);
    }
  }
  free(pg->keys);
  free(pg->values);
  free(pg);
}
static void poll_cb(uv_poll_t *p, int status, int events);
static void ignore_notice(void *arg, const char *message);

/* In one transaction, under an advisory lock, so that nodes (and a node's
 * two connections) starting at once do not race each other's CREATE. */
static const char schema_sql[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(7368751);"
    "CREATE TABLE IF NOT EXISTS atoll_meta (key text PRIMARY KEY, value text NOT NULL);"
    "INSERT INTO atoll_meta VALUES ('schema_version', '1') ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS atoll_events ("
    "  pid text NOT NULL, seq bigint NOT NULL, payload bytea NOT NULL,"
    "  written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pid, seq));"
    "CREATE TABLE IF NOT EXISTS atoll_snapshots ("
    "  pid text PRIMARY KEY, seq bigint NOT NULL, payload bytea NOT NULL,"
    "  written_at timestamptz NOT NULL DEFAULT now());"
    "SELECT value FROM atoll_meta WHERE key = 'schema_version';"
    "COMMIT;";

/* ---- errors ------------------------------------------------------------------ */

/* libpq's messages end with a newline and may span lines: one line here. */
static void tidy(char *dst, size_t cap, const char *msg) {
  if (cap == 0) return;
  size_t n = 0;
  for (const char *p = msg ? msg : "unknown error"; *p && n + 1 < cap; p++) {
    char ch = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
    if (ch == ' ' && (n == 0 || dst[n - 1] == ' ')) continue;
    dst[n++] = ch;
  }
  while (n > 0 && dst[n - 1] == ' ') n--;
  dst[n] = '\0';
}

static void fail_list(conn_t *c, jreq_t *list, const char *why) {
  while (list) {
    jreq_t *next = list->next;
    journal_fail(c->pg->j, list, JOURNAL_FAILED, "PostgreSQL %s: %s", c->pg->j->where, why);
    list = next;
  }
}

/* ---- the socket ----------------------------------------------------------------- */

/* Every handle of a connection closes through here. A poll handle also
 * closes when the connection's socket changes while connecting: then the
 * connection goes on with a new one. */
static void handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  pg_t *pg = c->pg;
  int poll = h == (uv_handle_t *)&c->poll;
  if (poll)
    c->poll_open = 0;
  else
    c->timer_open = 0;
  if (--pg->handles == 0 && pg->released) {
    free_pg(pg);
    return;
  }
  if (poll && !c->closing && !pg->j->host->closing && c->state != C_DOWN) conn_dispatch(c);
}

static void close_poll(conn_t *c) {
  if (c->poll_open && !uv_is_closing((uv_handle_t *)&c->poll))
    uv_close((uv_handle_t *)&c->poll, handle_closed);
}

/* Watches the connection's socket for `events` (it may change while
 * connecting: then the old watch closes and a new one starts). */
static void watch(conn_t *c, int events) {
  int fd = c->c ? PQsocket(c->c) : -1;
  if (c->poll_open && (fd != c->poll_fd || fd < 0)) {
    close_poll(c);
    return; /* handle_closed comes back here */
  }
  if (fd < 0 || c->closing) return;
  if (!c->poll_open) {
    if (uv_poll_init_socket(&c->pg->j->host->loop, &c->poll, fd) != 0) return;
    uv_unref((uv_handle_t *)&c->poll); /* the journal's own count keeps the loop alive */
    c->poll.data = c;
    c->poll_open = 1;
    c->pg->handles++;
    c->poll_fd = fd;
    c->poll_events = 0;
  }
  if (events != c->poll_events || !uv_is_active((uv_handle_t *)&c->poll)) {
    c->poll_events = events;
    uv_poll_start(&c->poll, events, poll_cb);
  }
}

static void timer_cb(uv_timer_t *t) {
  conn_t *c = t->data;
  if (c->state == C_DOWN && !c->closing) conn_connect(c);
}

/* The connection is lost or could not be made: fail what it held, and try
 * again later. */
static void conn_down(conn_t *c, const char *why) {
  tidy(c->error, sizeof c->error, why);
  close_poll(c); /* before the socket closes */
  if (c->c) {
    PQfinish(c->c);
    c->c = NULL;
  }
  int was_ready = c->state == C_READY || c->state == C_SETUP;
  c->state = C_DOWN;
  if (was_ready)
    log_warn("journal", "PostgreSQL %s (%s): %s; connecting again", c->pg->j->where, c->role,
             c->error);
  else
    log_debug("journal", "PostgreSQL %s (%s): %s", c->pg->j->where, c->role, c->error);
  jreq_t *held = c->inflight;
  c->inflight = NULL;
  if (c->sorting) {
    jreq_t **tail = &held;
    while (*tail) tail = &(*tail)->next;
    *tail = c->sorting;
    c->sorting = NULL;
  }
  c->qkind = Q_NONE;
  fail_list(c, held, c->error);
  jreq_t *queued = c->q_head;
  c->q_head = c->q_tail = NULL;
  fail_list(c, queued, c->error);
  if (c->closing) return;
  c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (c->backoff_ms > BACKOFF_MAX_MS) c->backoff_ms = BACKOFF_MAX_MS;
  uv_timer_start(&c->timer, timer_cb, c->backoff_ms, 0);
}

/* ---- queries -------------------------------------------------------------------- */

/* Sends what is queued, if the connection is free: a batch of appends, or
 * one other request. */
static void send_next(conn_t *c);

static int flush(conn_t *c) {
  int rc = PQflush(c->c);
  if (rc < 0) {
    conn_down(c, PQerrorMessage(c->c));
    return -1;
  }
  watch(c, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
  return 0;
}

static void u64_text(char *dst, uint64_t v) {
  snprintf(dst, 24, "%llu", (unsigned long long)v);
}

/* An INSERT of these requests' events, as one statement. */
static int send_appends(conn_t *c, jreq_t *list) {
  size_t rows = 0;
  for (jreq_t *r = list; r; r = r->next) rows += r->count;
  buf_t sql;
  buf_init(&sql);
  const char head[] = "INSERT INTO atoll_events (pid, seq, payload) VALUES ";
  buf_append(&sql, head, sizeof head - 1);
  const char **values = malloc(rows * 3 * sizeof *values);
  int *lengths = malloc(rows * 3 * sizeof *lengths);
  int *formats = malloc(rows * 3 * sizeof *formats);
  char(*seqs)[24] = malloc(rows * sizeof *seqs);
  int ok = values && lengths && formats && seqs;
  size_t k = 0;
  for (jreq_t *r = list; r && ok; r = r->next) {
    const char *p = r->data.data;
    for (uint32_t i = 0; i < r->count; i++, k++) {
      uint32_t len = journal_get_u32(p);
      u64_text(seqs[k], r->seq + i);
      values[3 * k] = r->pid;
      lengths[3 * k] = (int)r->pid_len;
      formats[3 * k] = 0;
      values[3 * k + 1] = seqs[k];
      lengths[3 * k + 1] = 0;
      formats[3 * k + 1] = 0;
      values[3 * k + 2] = p + 4;
      lengths[3 * k + 2] = (int)len;
      formats[3 * k + 2] = 1; /* bytea, binary */
      p += 4 + len;
      char tuple[64];
      int n = snprintf(tuple, sizeof tuple, "%s($%zu,$%zu::bigint,$%zu::bytea)", k ? "," : "",
                       3 * k + 1, 3 * k + 2, 3 * k + 3);
      buf_append(&sql, tuple, (size_t)n);
    }
  }
  buf_append(&sql, "", 1);
  int sent =
      ok && PQsendQueryParams(c->c, sql.data, (int)(rows * 3), NULL, values, lengths, formats, 0);
  free(values);
  free(lengths);
  free(formats);
  free(seqs);
  buf_close(&sql);
  return sent ? 0 : -1;
}

static int send_request(conn_t *c, jreq_t *r) {
  char seq[24], limit[24];
  u64_text(seq, r->seq);
  u64_text(limit, r->count);
  switch (r->kind) {
    case JREQ_SNAP_SAVE: {
      const char *v[3] = {r->pid, seq, r->data.data ? r->data.data : ""};
      int l[3] = {(int)r->pid_len, 0, (int)r->data.len}, f[3] = {0, 0, 1};
      return PQsendQueryParams(c->c,
                               "INSERT INTO atoll_snapshots (pid, seq, payload) "
                               "VALUES ($1, $2::bigint, $3::bytea) ON CONFLICT (pid) DO UPDATE SET "
                               "seq = excluded.seq, payload = excluded.payload, written_at = now() "
                               "WHERE excluded.seq > atoll_snapshots.seq",
                               3, NULL, v, l, f, 0)
                 ? 0
                 : -1;
    }
    case JREQ_READ: {
      const char *v[3] = {r->pid, seq, limit};
      int l[3] = {(int)r->pid_len, 0, 0}, f[3] = {0, 0, 0};
      return PQsendQueryParams(c->c,
                               "SELECT seq, payload FROM atoll_events WHERE pid = $1 AND "
                               "seq > $2::bigint ORDER BY seq LIMIT $3::bigint",
                               3, NULL, v, l, f, 1)
                 ? 0
                 : -1;
    }
    case JREQ_SNAP_LOAD: {
      const char *v[1] = {r->pid};
      int l[1] = {(int)r->pid_len}, f[1] = {0};
      return PQsendQueryParams(c->c, "SELECT seq, payload FROM atoll_snapshots WHERE pid = $1", 1,
                               NULL, v, l, f, 1)
                 ? 0
                 : -1;
    }
    case JREQ_LIST:
      return PQsendQueryParams(c->c,
                               "SELECT pid, count(*)::bigint, max(seq) FROM atoll_events "
                               "GROUP BY pid ORDER BY pid",
                               0, NULL, NULL, NULL, NULL, 1)
                 ? 0
                 : -1;
    default:
      return -1;
  }
}

static void send_next(conn_t *c) {
  if (c->state != C_READY || c->qkind != Q_NONE || c->closing) return;
  jreq_t *list = NULL;
  qkind_t kind = Q_NONE;
  if (c->sorting) {
    /* One by one, to tell conflicts apart. */
    list = c->sorting;
    c->sorting = list->next;
    list->next = NULL;
    kind = Q_ONE;
  } else if (c->q_head && c->q_head->kind == JREQ_APPEND) {
    /* Every append at the front of the queue, up to a statement's worth. */
    jreq_t *last = c->q_head;
    size_t rows = last->count;
    while (last->next && last->next->kind == JREQ_APPEND &&
           rows + last->next->count <= PG_BATCH_ROWS) {
      rows += last->next->count;
      last = last->next;
    }
    list = c->q_head;
    c->q_head = last->next;
    last->next = NULL;
    kind = Q_APPEND;
  } else if (c->q_head) {
    list = c->q_head;
    c->q_head = list->next;
    list->next = NULL;
    static const qkind_t kinds[] = {[JREQ_SNAP_SAVE] = Q_SNAP_SAVE,
                                    [JREQ_READ] = Q_READ,
                                    [JREQ_SNAP_LOAD] = Q_SNAP_LOAD,
                                    [JREQ_LIST] = Q_LIST};
    kind = kinds[list->kind];
  }
  if (c->q_head == NULL) c->q_tail = NULL;
  if (list == NULL) return;
  c->inflight = list;
  c->qkind = kind;
  c->failed = 0;
  int rc = (kind == Q_APPEND || kind == Q_ONE) ? send_appends(c, list) : send_request(c, list);
  if (rc != 0) {
    conn_down(c, PQerrorMessage(c->c));
    return;
  }
  flush(c);
}

/* A result of the query in flight. */
static void take_result(conn_t *c, PGresult *res) {
  ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    if (!c->failed) {
      c->failed = 1;
      tidy(c->qerror, sizeof c->qerror, PQresultErrorMessage(res));
      const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    }
    return;
  }
  jreq_t *r = c->inflight;
  int rows = PQntuples(res);
  switch (c->qkind) {
    case Q_SETUP:
      if (rows == 1 && strcmp(PQfname(res, 0), "value") == 0) {
        c->setup_version = atoi(PQgetvalue(res, 0, 0));
      }
      break;
    case Q_READ:
      for (int i = 0; i < rows; i++) {
        journal_put_u64(&r->out, journal_get_u64(PQgetvalue(res, i, 0)));
        journal_put_u32(&r->out, (uint32_t)PQgetlength(res, i, 1));
        buf_append(&r->out, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        r->rows++;
      }
      break;
    case Q_SNAP_LOAD:
      if (rows == 1) {
        journal_put_u64(&r->out, journal_get_u64(PQgetvalue(res, 0, 0)));
        buf_append(&r->out, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
        r->rows = 1;
      }
      break;
    case Q_LIST:
      for (int i = 0; i < rows; i++) {
        int len = PQgetlength(res, i, 0);
        if (len > JOURNAL_MAX_PID) continue;
        unsigned char l = (unsigned char)len;
        buf_append(&r->out, &l, 1);
        buf_append(&r->out, PQgetvalue(res, i, 0), (size_t)len);
        journal_put_u64(&r->out, journal_get_u64(PQgetvalue(res, i, 1)));
        journal_put_u64(&r->out, journal_get_u64(PQgetvalue(res, i, 2)));
        r->rows++;
      }
      break;
    default:
      break;
  }
}

/* The query in flight is over: hand its requests back. */
static void query_done(conn_t *c) {
  jreq_t *list = c->inflight;
  qkind_t kind = c->qkind;
  c->inflight = NULL;
  c->qkind = Q_NONE;
  journal_t *j = c->pg->j;
  int unique = strcmp(c->sqlstate, "23505") == 0;
  if (kind == Q_SETUP) {
    if (c->failed) {
      conn_down(c, c->qerror);
      return;
    }
    if (c->setup_version != JOURNAL_SCHEMA_VERSION) {
      char why[256];
      snprintf(why, sizeof why,
               "the journal has schema version %d; this atoll knows version %d only",
               c->setup_version, JOURNAL_SCHEMA_VERSION);
      c->closing = 1; /* no point trying again */
      conn_down(c, why);
      return;
    }
    c->state = C_READY;
    c->ever_ready = 1;
    c->backoff_ms = 0;
    log_debug("journal", "PostgreSQL %s (%s): ready", j->where, c->role);
  } else if (kind == Q_APPEND && c->failed && unique && (list == NULL || list->next != NULL)) {
    /* Somebody's (pid, seq) is taken: find whose, one request at a time. */
    c->sorting = list;
  } else {
    while (list) {
      jreq_t *next = list->next;
      if (!c->failed)
        journal_complete(j, list);
      else if (unique && (kind == Q_APPEND || kind == Q_ONE)) {
        journal_fail(j, list, JOURNAL_CONFLICT, "events from %llu of %s are already written",
                     (unsigned long long)list->seq, list->pid);
      } else {
        journal_fail(j, list, JOURNAL_FAILED, "PostgreSQL %s: %s", j->where, c->qerror);
      }
      list = next;
    }
  }
  c->sqlstate[0] = '\0';
  send_next(c);
}

static void read_results(conn_t *c) {
  if (!PQconsumeInput(c->c)) {
    conn_down(c, PQerrorMessage(c->c));
    return;
  }
  while (c->qkind != Q_NONE && !PQisBusy(c->c)) {
    PGresult *res = PQgetResult(c->c);
    if (res == NULL) {
      query_done(c);
      if (c->state == C_DOWN) return;
      continue;
    }
    take_result(c, res);
    PQclear(res);
  }
  if (c->state != C_DOWN && PQstatus(c->c) == CONNECTION_BAD) conn_down(c, PQerrorMessage(c->c));
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  conn_t *c = p->data;
  if (c->closing) return;
  /* A socket error: libpq says what it was (a refused connection, a reset),
   * so it is asked rather than taking libuv's word. */
  if (status < 0 && c->state != C_CONNECTING) {
    /* The socket failed (libuv says EBADF for any POLLERR, and stops
     * watching): take what the server said last, then give up on it. */
    read_results(c);
    if (c->state != C_DOWN) {
      conn_down(c, PQstatus(c->c) == CONNECTION_BAD ? PQerrorMessage(c->c)
                                                    : "the connection to the server broke");
    }
    return;
  }
  if (c->state == C_CONNECTING) {
    switch (PQconnectPoll(c->c)) {
      case PGRES_POLLING_READING:
        watch(c, UV_READABLE);
        return;
      case PGRES_POLLING_WRITING:
        watch(c, UV_WRITABLE);
        return;
      case PGRES_POLLING_FAILED:
        conn_down(c, PQerrorMessage(c->c));
        return;
      default:
        break; /* connected */
    }
    PQsetnonblocking(c->c, 1);
    PQsetNoticeProcessor(c->c, ignore_notice, NULL);
    c->state = C_SETUP;
    c->qkind = Q_SETUP;
    c->failed = 0;
    c->setup_version = 0;
    if (!PQsendQuery(c->c, schema_sql)) {
      conn_down(c, PQerrorMessage(c->c));
      return;
    }
    flush(c);
    return;
  }
  if ((events & UV_WRITABLE) && flush(c) < 0) return;
  if (events & UV_READABLE) read_results(c);
}

/* Notices ("relation already exists, skipping") are not for the node's log. */
static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void start_connect(conn_t *c) {
  pg_t *pg = c->pg;
  int n = pg->nparams;
  if (c->hostaddr[0]) {
    pg->keys[n] = "hostaddr";
    pg->values[n] = c->hostaddr;
    n++;
  }
  pg->keys[n] = NULL;
  pg->values[n] = NULL;
  c->c = PQconnectStartParams(pg->keys, pg->values, 0);
  if (c->c == NULL) {
    conn_down(c, "out of memory");
    return;
  }
  if (PQstatus(c->c) == CONNECTION_BAD) {
    conn_down(c, PQerrorMessage(c->c));
    return;
  }
  watch(c, UV_WRITABLE);
}

static void lookup_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  conn_t *c = req->data;
  pg_t *pg = c->pg;
  char ip[64] = "";
  if (status == 0 && res) {
    if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    else
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
  }
  if (res) uv_freeaddrinfo(res);
  if (--pg->handles == 0 && pg->released) {
    free_pg(pg);
    return;
  }
  if (c->closing || pg->j->host->closing) return;
  if (status != 0) {
    char why[512];
    snprintf(why, sizeof why, "cannot resolve %s: %s", pg->host, uv_strerror(status));
    conn_down(c, why);
    return;
  }
  snprintf(c->hostaddr, sizeof c->hostaddr, "%s", ip);
  start_connect(c);
}

static void conn_connect(conn_t *c) {
  pg_t *pg = c->pg;
  c->state = C_CONNECTING;
  c->hostaddr[0] = '\0';
  if (pg->host[0] == '\0') {
    start_connect(c);
    return;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->lookup.data = c;
  int rc = uv_getaddrinfo(&pg->j->host->loop, &c->lookup, lookup_cb, pg->host, NULL, &hints);
  if (rc) {
    char why[512];
    snprintf(why, sizeof why, "cannot resolve %s: %s", pg->host, uv_strerror(rc));
    conn_down(c, why);
    return;
  }
  pg->handles++; /* the lookup holds pg like a handle */
}

/* After a poll handle closed (the socket changed), the connection goes on. */
static void conn_dispatch(conn_t *c) {
  if (c->state == C_CONNECTING)
    watch(c, UV_WRITABLE);
  else if (c->state == C_SETUP || c->state == C_READY)
    flush(c);
}

/* ---- the interface ------------------------------------------------------------------ */

static void pg_submit(journal_t *j, jreq_t *r) {
  pg_t *pg = j->impl;
  conn_t *c = (r->kind == JREQ_APPEND || r->kind == JREQ_SNAP_SAVE) ? &pg->writer : &pg->reader;
  if (c->state == C_DOWN && (c->ever_ready || c->closing)) {
    /* Down after having worked (or for good): say so at once rather than
     * hold the request until a reconnect that may take seconds. */
    journal_fail(j, r, JOURNAL_FAILED, "PostgreSQL %s: %s", j->where, c->error);
    return;
  }
  r->next = NULL;
  if (c->q_tail)
    c->q_tail->next = r;
  else
    c->q_head = r;
  c->q_tail = r;
  send_next(c);
}

static void conn_close(conn_t *c) {
  c->closing = 1;
  uv_cancel((uv_req_t *)&c->lookup); /* if one runs; its callback still comes */
  close_poll(c);                     /* before the socket closes */
  if (c->c) {
    PQfinish(c->c);
    c->c = NULL;
  }
  jreq_t *lists[3] = {c->inflight, c->sorting, c->q_head};
  for (int i = 0; i < 3; i++) {
    while (lists[i]) {
      jreq_t *next = lists[i]->next;
      journal_req_free(lists[i]);
      lists[i] = next;
    }
  }
  c->inflight = c->sorting = c->q_head = c->q_tail = NULL;
  if (c->timer_open && !uv_is_closing((uv_handle_t *)&c->timer)) {
    uv_close((uv_handle_t *)&c->timer, handle_closed);
  }
}

static void pg_close(journal_t *j) {
  pg_t *pg = j->impl;
  if (pg == NULL) return;
  conn_close(&pg->writer);
  conn_close(&pg->reader);
  j->impl = NULL;
  pg->released = 1;
  if (pg->handles == 0) free_pg(pg); /* else the last handle to close does */
}

static const journal_backend_t pg_backend = {pg_submit, pg_close};

static void conn_init(pg_t *pg, conn_t *c, const char *role) {
  c->base.on_close = handle_closed;
  c->pg = pg;
  c->role = role;
  c->state = C_DOWN;
  uv_timer_init(&pg->j->host->loop, &c->timer);
  uv_unref((uv_handle_t *)&c->timer); /* the journal's own count keeps the loop alive */
  c->timer.data = c;
  c->timer_open = 1;
  pg->handles++;
}

/* "user@host:port/db" from a connection string, for messages (no password). */
static void describe(const char *conninfo, char *out, size_t cap) {
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
  const char *user = "", *host = "", *port = "", *db = "";
  if (opts) {
    for (PQconninfoOption *o = opts; o->keyword; o++) {
      if (!o->val) continue;
      if (strcmp(o->keyword, "user") == 0)
        user = o->val;
      else if (strcmp(o->keyword, "host") == 0)
        host = o->val;
      else if (strcmp(o->keyword, "port") == 0)
        port = o->val;
      else if (strcmp(o->keyword, "dbname") == 0)
        db = o->val;
    }
  }
  snprintf(out, cap, "%s%s%s%s%s/%s", user, user[0] ? "@" : "", host[0] ? host : "localhost",
           port[0] ? ":" : "", port, db);
  if (opts) PQconninfoFree(opts);
  if (err) PQfreemem(err);
}

int journal_pg_open(journal_t *j, const char *conninfo, char *err, size_t errlen) {
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
  if (opts == NULL) {
    char why[256];
    tidy(why, sizeof why, perr ? perr : "out of memory");
    snprintf(err, errlen, "bad PostgreSQL connection string: %s", why);
    if (perr) PQfreemem(perr);
    return ATOLL_EUSAGE;
  }
  if (strlen(conninfo) >= sizeof(((pg_t *)0)->conninfo)) {
    PQconninfoFree(opts);
    snprintf(err, errlen, "the PostgreSQL connection string is too long");
    return ATOLL_EUSAGE;
  }
  pg_t *pg = calloc(1, sizeof *pg);
  int count = 0;
  for (PQconninfoOption *o = opts; o->keyword; o++) count += o->val != NULL;
  if (pg) {
    pg->keys = calloc((size_t)count + 2, sizeof *pg->keys);
    pg->values = calloc((size_t)count + 2, sizeof *pg->values);
  }
  if (pg == NULL || pg->keys == NULL || pg->values == NULL) {
    PQconninfoFree(opts);
    if (pg) free_pg(pg);
    snprintf(err, errlen, "out of memory");
    return ATOLL_ENOMEM;
  }
  const char *host = NULL, *hostaddr = NULL;
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (o->val == NULL) continue;
    if (strcmp(o->keyword, "host") == 0) host = o->val;
    if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
    pg->keys[pg->nparams] = strdup(o->keyword);
    pg->values[pg->nparams] = strdup(o->val);
    pg->nparams++;
  }
  /* A single host name (not an address, a socket directory, or a list)
   * is resolved on libuv's thread pool before each connection. */
  struct sockaddr_in6 probe6;
  struct sockaddr_in probe4;
  if (host && !hostaddr && host[0] != '/' && host[0] != '@' && !strchr(host, ',') &&
      uv_ip4_addr(host, 0, &probe4) != 0 && uv_ip6_addr(host, 0, &probe6) != 0 &&
      strlen(host) < sizeof pg->host) {
    snprintf(pg->host, sizeof pg->host, "%s", host);
  }
  PQconninfoFree(opts);
  pg->j = j;
  snprintf(pg->conninfo, sizeof pg->conninfo, "%s", conninfo);
  j->impl = pg;
  j->backend = &pg_backend;
  snprintf(j->kind, sizeof j->kind, "postgres");
  describe(conninfo, j->where, sizeof j->where);
  conn_init(pg, &pg->writer, "writer");
  conn_init(pg, &pg->reader, "reader");
  conn_connect(&pg->writer);
  conn_connect(&pg->reader);
  return 0;
}
