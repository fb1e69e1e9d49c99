/* The event journal's common part: requests, completions handed back to the loop thread, and the
 * memory backend (for tests, and for nodes that want event sourcing without durability). */
#include "journal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

/* ---- encodings ------------------------------------------------------------ */

void journal_put_u32(buf_t *b, uint32_t v) {
  unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                        (unsigned char)v};
  buf_append(b, p, 4);
}

void journal_put_u64(buf_t *b, uint64_t v) {
  journal_put_u32(b, (uint32_t)(v >> 32));
  journal_put_u32(b, (uint32_t)v);
}

uint32_t journal_get_u32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

uint64_t journal_get_u64(const char *p) {
  return ((uint64_t)journal_get_u32(p) << 32) | journal_get_u32(p + 4);
}

/* ---- requests ------------------------------------------------------------- */

jreq_t *journal_req_new(jreq_kind_t kind, double token, const char *pid, size_t pid_len) {
  if (pid_len > JOURNAL_MAX_PID) return NULL;
  jreq_t *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->kind = kind;
  r->token = token;
  if (pid) memcpy(r->pid, pid, pid_len);
  r->pid[pid_len] = '\0';
  r->pid_len = pid_len;
  buf_init(&r->data);
  buf_init(&r->out);
  return r;
}

void journal_req_free(jreq_t *r) {
  if (r == NULL) return;
  buf_close(&r->data);
  buf_close(&r->out);
  free(r);
}

/* ---- completions ------------------------------------------------------------ */

void journal_complete(journal_t *j, jreq_t *r) {
  r->next = NULL;
  uv_mutex_lock(&j->lock);
  if (j->done_tail)
    j->done_tail->next = r;
  else
    j->done_head = r;
  j->done_tail = r;
  uv_mutex_unlock(&j->lock);
  uv_async_send(&j->async);
}

void journal_fail(journal_t *j, jreq_t *r, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->status = status;
  buf_reset(&r->out);
  r->rows = 0;
  journal_complete(j, r);
}

/* Takes the list of finished requests the backend's threads have handed over. */
static jreq_t *take_done(journal_t *j) {
  uv_mutex_lock(&j->lock);
  jreq_t *r = j->done_head;
  j->done_head = j->done_tail = NULL;
  uv_mutex_unlock(&j->lock);
  return r;
}

static void async_cb(uv_async_t *a) {
  journal_t *j = a->data;
  jreq_t *r = take_done(j);
  while (r) {
    jreq_t *next = r->next;
    if (--j->outstanding == 0 && j->async_open) uv_unref((uv_handle_t *)&j->async);
    if (j->on_done && !j->host->closing)
      j->on_done(j, r, next == NULL);
    else
      journal_req_free(r);
    r = next;
  }
}

void journal_submit(journal_t *j, jreq_t *r) {
  if (j->outstanding++ == 0 && j->async_open) uv_ref((uv_handle_t *)&j->async);
  if (j->closed) {
    journal_fail(j, r, JOURNAL_FAILED, "the journal is closed");
    return;
  }
  j->backend->submit(j, r);
}

/* ---- opening and closing ------------------------------------------------------ */

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The host is shutting down: the backend's threads stop before the loop they post to closes. */
static void journal_shutdown(host_handle_t *owner) {
  journal_close((journal_t *)owner);
}

int journal_open(journal_t *j, host_t *h, const char *spec, char *err, size_t errlen) {
  if (errlen) err[0] = '\0';
  memset(j, 0, sizeof *j);
  j->host = h;
  if (uv_mutex_init(&j->lock)) {
    snprintf(err, errlen, "cannot make a mutex");
    return ATOLL_ENOMEM;
  }
  int rc = uv_async_init(&h->loop, &j->async, async_cb);
  if (rc) {
    uv_mutex_destroy(&j->lock);
    snprintf(err, errlen, "%s", uv_strerror(rc));
    return rc;
  }
  j->async.data = j;
  j->async_open = 1;
  uv_unref((uv_handle_t *)&j->async); /* until a request is under way */
  j->base.on_shutdown = journal_shutdown;
  if (strcmp(spec, "memory") == 0) {
    rc = journal_memory_open(j, err, errlen);
  } else if (starts_with(spec, "sqlite:")) {
    rc = journal_sqlite_open(j, spec + 7, err, errlen);
  } else if (starts_with(spec, "postgres://") || starts_with(spec, "postgresql://")) {
    rc = journal_pg_open(j, spec, err, errlen);
  } else {
    snprintf(err, errlen, "unknown journal '%s' (memory, sqlite:PATH or postgres://...)", spec);
    rc = ATOLL_EUSAGE;
  }
  if (rc) {
    uv_close((uv_handle_t *)&j->async, NULL);
    j->async_open = 0;
    j->closed = 1;
    return rc;
  }
  return 0;
}

void journal_close(journal_t *j) {
  if (j->closed) return;
  j->closed = 1;
  if (j->backend) j->backend->close(j);
  /* What finished meanwhile is dropped: nobody waits for it any more. */
  jreq_t *r = take_done(j);
  while (r) {
    jreq_t *next = r->next;
    journal_req_free(r);
    r = next;
  }
  if (j->async_open && !uv_is_closing((uv_handle_t *)&j->async)) {
    uv_close((uv_handle_t *)&j->async, j->base.on_close);
  }
}

/* ---- the memory backend ----------------------------------------------------- */

typedef struct mem_event_s {
  uint64_t seq;
  char *data;
  size_t len;
} mem_event_t;

typedef struct mem_stream_s {
  char pid[JOURNAL_MAX_PID + 1];
  mem_event_t *events; /* sorted by seq */
  size_t n, cap;
  char *snap;
  size_t snap_len;
  uint64_t snap_seq;
  int has_snap;
} mem_stream_t;

typedef struct mem_s {
  mem_stream_t **streams;
  size_t n, cap;
} mem_t;

static mem_stream_t *mem_find(mem_t *m, const char *pid, int create) {
  for (size_t i = 0; i < m->n; i++) {
    if (strcmp(m->streams[i]->pid, pid) == 0) return m->streams[i];
  }
  if (!create) return NULL;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    mem_stream_t **p = realloc(m->streams, cap * sizeof *p);
    if (p == NULL) return NULL;
    m->streams = p;
    m->cap = cap;
  }
  mem_stream_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  snprintf(s->pid, sizeof s->pid, "%s", pid);
  m->streams[m->n++] = s;
  return s;
}

/* The index of the first event with a seq above `seq`. */
static size_t mem_after(const mem_stream_t *s, uint64_t seq) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->events[mid].seq <= seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static void mem_append(journal_t *j, mem_t *m, jreq_t *r) {
  mem_stream_t *s = mem_find(m, r->pid, 1);
  if (s == NULL) {
    journal_fail(j, r, JOURNAL_FAILED, "out of memory");
    return;
  }
  /* All or nothing: check every seq first. */
  for (uint32_t i = 0; i < r->count; i++) {
    size_t at = mem_after(s, r->seq + i);
    if (at > 0 && s->events[at - 1].seq == r->seq + i) {
      journal_fail(j, r, JOURNAL_CONFLICT, "event %llu of %s is already written",
                   (unsigned long long)(r->seq + i), r->pid);
      return;
    }
  }
  if (s->n + r->count > s->cap) {
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + r->count) cap *= 2;
    mem_event_t *p = realloc(s->events, cap * sizeof *p);
    if (p == NULL) {
      journal_fail(j, r, JOURNAL_FAILED, "out of memory");
      return;
    }
    s->events = p;
    s->cap = cap;
  }
  const char *p = r->data.data;
  for (uint32_t i = 0; i < r->count; i++) {
    uint32_t len = journal_get_u32(p);
    mem_event_t e = {r->seq + i, malloc(len ? len : 1), len};
    if (e.data == NULL) {
      journal_fail(j, r, JOURNAL_FAILED, "out of memory");
      return;
    }
    memcpy(e.data, p + 4, len);
    p += 4 + len;
    size_t at = mem_after(s, e.seq);
    memmove(&s->events[at + 1], &s->events[at], (s->n - at) * sizeof *s->events);
    s->events[at] = e;
    s->n++;
  }
  journal_complete(j, r);
}

static void mem_submit(journal_t *j, jreq_t *r) {
  mem_t *m = j->impl;
  switch (r->kind) {
    case JREQ_APPEND:
      mem_append(j, m, r);
      return;
    case JREQ_READ: {
      mem_stream_t *s = mem_find(m, r->pid, 0);
      if (s) {
        for (size_t i = mem_after(s, r->seq); i < s->n && r->rows < r->count; i++) {
          journal_put_u64(&r->out, s->events[i].seq);
          journal_put_u32(&r->out, (uint32_t)s->events[i].len);
          buf_append(&r->out, s->events[i].data, s->events[i].len);
          r->rows++;
        }
      }
      journal_complete(j, r);
      return;
    }
    case JREQ_SNAP_SAVE: {
      mem_stream_t *s = mem_find(m, r->pid, 1);
      char *copy = malloc(r->data.len ? r->data.len : 1);
      if (s == NULL || copy == NULL) {
        free(copy);
        journal_fail(j, r, JOURNAL_FAILED, "out of memory");
        return;
      }
      memcpy(copy, r->data.data, r->data.len);
      if (!s->has_snap || r->seq >= s->snap_seq) {
        free(s->snap);
        s->snap = copy;
        s->snap_len = r->data.len;
        s->snap_seq = r->seq;
        s->has_snap = 1;
      } else {
        free(copy);
      }
      journal_complete(j, r);
      return;
    }
    case JREQ_SNAP_LOAD: {
      mem_stream_t *s = mem_find(m, r->pid, 0);
      if (s && s->has_snap) {
        journal_put_u64(&r->out, s->snap_seq);
        buf_append(&r->out, s->snap, s->snap_len);
        r->rows = 1;
      }
      journal_complete(j, r);
      return;
    }
    case JREQ_LIST:
      for (size_t i = 0; i < m->n; i++) {
        mem_stream_t *s = m->streams[i];
        if (s->n == 0) continue;
        size_t len = strlen(s->pid);
        unsigned char l = (unsigned char)len;
        buf_append(&r->out, &l, 1);
        buf_append(&r->out, s->pid, len);
        journal_put_u64(&r->out, s->n);
        journal_put_u64(&r->out, s->events[s->n - 1].seq);
        r->rows++;
      }
      journal_complete(j, r);
      return;
  }
}

static void mem_close(journal_t *j) {
  mem_t *m = j->impl;
  if (m == NULL) return;
  for (size_t i = 0; i < m->n; i++) {
    mem_stream_t *s = m->streams[i];
    for (size_t k = 0; k < s->n; k++) free(s->events[k].data);
    free(s->events);
    free(s->snap);
    free(s);
  }
  free(m->streams);
  free(m);
  j->impl = NULL;
}

static const journal_backend_t memory_backend = {mem_submit, mem_close};

int journal_memory_open(journal_t *j, char *err, size_t errlen) {
  j->impl = calloc(1, sizeof(mem_t));
  if (j->impl == NULL) {
    snprintf(err, errlen, "out of memory");
    return ATOLL_ENOMEM;
  }
  j->backend = &memory_backend;
  snprintf(j->kind, sizeof j->kind, "memory");
  snprintf(j->where, sizeof j->where, "memory");
  return 0;
}
