/* The HTTP/1.1 server (see http.h). One parser per connection (Debian's http-parser); requests
 * on a kept-alive connection are answered in order: when a response is still being made, the
 * parser pauses at the end of the next request's head and the bytes after it wait. */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "log.h"
#include "utf8.h"

#define STATIC_CACHE          128
#define STATIC_CACHE_MAX_FILE (1u << 20)
#define STATIC_MAX_FILE       (64u << 20)

enum { RESP_NONE = 0, RESP_STREAMING = 1, RESP_DONE = 2 };
enum { TIMER_OFF, TIMER_HEADER, TIMER_BODY, TIMER_IDLE };

typedef struct mount_s {
  char *prefix, *dir;
  size_t plen;
} mount_t;

typedef struct cached_s {
  char *path;
  char *data;
  size_t len;
  time_t mtime;
  off_t size;
  ino_t ino;
} cached_t;

struct http_conn_s {
  host_handle_t base; /* first: the handles' data */
  uv_tcp_t tcp;
  uv_timer_t timer;
  int handles, timer_kind;
  http_server_t *s;
  http_conn_t *prev, *next; /* the server's connections */
  http_conn_t *ready_next;  /* the server's list of connections with input to resume */
  int in_ready;
  uint64_t id;
  uint32_t slot;
  char peer[64];
  void *data;

  http_parser p;
  buf_t head; /* method\0target\0 then name\0value\0 pairs */
  size_t target_at, nheaders;
  int in_field, error_status, head_done;
  int mode;
  buf_t body; /* HTTP_BODY_BUFFER: the body; HTTP_BODY_LINES: a partial line */
  int line_overflow;

  int in_message, body_done, expect_body, resp, keep_alive, is_head, chunked_out, owner_knows,
      gone_sent;
  int held_waiting, owner_paused, reading;
  buf_t held; /* input not parsed yet */
  size_t queued;
  int want_drain, close_after_write, closing, test, eof, resuming;

  wslay_event_context_ptr ws;
  int ws_held;        /* a valid handshake whose 101 waits for the owner (or a refusal) */
  int ws_head_unsent; /* accepted: the 101 goes with the next bytes written */
  char ws_accept_key[32];
  const char *ws_in;
  size_t ws_in_len;
};

struct http_server_s {
  host_handle_t base; /* first: the listener's data */
  uv_tcp_t tcp;
  uv_idle_t idle;
  int tcp_open, idle_open, idle_on, port, shutting, test;
  host_t *host;
  http_limits_t lim;
  http_events_t ev;
  void *ud;
  http_conn_t *conns, *ready;
  mount_t *mounts;
  size_t nmounts;
  cached_t cache[STATIC_CACHE];
  http_stats_t st;
  size_t live;         /* connections not freed yet (closing ones included) */
  http_conn_t **slots; /* connections by the low 24 bits of their id */
  uint32_t nslots, cap_slots, *free_slots, nfree;
  uint64_t generation;
  char date[40];
  time_t date_at;
  char readbuf[65536];
};

static http_parser_settings settings;

const char *http_status_text(int status) {
  switch (status) {
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void http_default_limits(http_limits_t *l) {
  l->max_header = 16384;
  l->max_body = 1u << 20;
  l->max_line = 1u << 20;
  l->max_ws_message = 1u << 20;
  l->header_timeout = 10;
  l->idle_timeout = 60;
  l->high_water = 256u << 10;
}

/* ---- writing --------------------------------------------------------------------------- */

typedef struct wreq_s {
  uv_write_t req;
  http_conn_t *c;
  size_t len;
  char data[];
} wreq_t;

static void conn_close(http_conn_t *c, const char *why);
static void set_reading(http_conn_t *c);
static void schedule_resume(http_conn_t *c);
static void tell_gone(http_conn_t *c, const char *why);
static void fail(http_conn_t *c, int status, const char *why);

static void write_cb(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  http_conn_t *c = w->c;
  c->queued -= w->len;
  c->s->st.bytes_out += status == 0 ? w->len : 0;
  free(w);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c, uv_strerror(status));
  } else if (c->close_after_write && c->queued == 0) {
    conn_close(c, NULL);
  } else {
    if (c->want_drain && c->queued <= c->s->lim.high_water / 2) {
      c->want_drain = 0;
      if (c->s->ev.on_drain) c->s->ev.on_drain(c->s->ud, c);
    }
    if (!c->closing && !c->reading && c->queued <= c->s->lim.high_water / 2) {
      set_reading(c);
      if (!c->held_waiting) schedule_resume(c);
    }
  }
}

static int conn_write(http_conn_t *c, uv_buf_t *bufs, int n) {
  if (c->closing) return UV_EPIPE;
  size_t total = 0, done = 0;
  for (int i = 0; i < n; i++) total += bufs[i].len;
  if (c->test) {
    c->s->st.bytes_out += total;
    return 0;
  }
  if (c->queued == 0) {
    int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)n);
    if (rc > 0) {
      done = (size_t)rc;
      c->s->st.bytes_out += done;
    } else if (rc < 0 && rc != UV_EAGAIN) {
      conn_close(c, uv_strerror(rc));
      return rc;
    }
  }
  if (done == total) {
    if (c->close_after_write) conn_close(c, NULL);
    return 0;
  }
  wreq_t *w = malloc(sizeof *w + (total - done));
  if (w == NULL) {
    conn_close(c, "out of memory");
    return UV_ENOMEM;
  }
  size_t skip = done, at = 0;
  for (int i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    memcpy(w->data + at, bufs[i].base + skip, len - skip);
    at += len - skip;
    skip = 0;
  }
  w->c = c;
  w->len = at;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)at);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
  if (rc) {
    free(w);
    conn_close(c, uv_strerror(rc));
    return rc;
  }
  c->queued += at;
  return 0;
}

static const char *date_header(http_server_t *s) {
  time_t now = time(NULL);
  if (now != s->date_at) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    s->date_at = now;
  }
  return s->date;
}

/* ---- timers ---------------------------------------------------------------------------- */

static void arm(http_conn_t *c, int kind, double seconds);

/* Closes once what is written has gone; a client that never reads it has the idle timeout. */
static void close_after(http_conn_t *c, const char *why) {
  c->close_after_write = 1;
  if (c->queued == 0)
    conn_close(c, why);
  else
    arm(c, TIMER_IDLE, c->s->lim.idle_timeout);
}

static void timer_cb(uv_timer_t *t) {
  http_conn_t *c = t->data;
  int kind = c->timer_kind;
  c->timer_kind = TIMER_OFF;
  if (c->closing) return;
  if (kind == TIMER_IDLE) {
    conn_close(c, NULL);
  } else if (c->resp == RESP_NONE) {
    if (c->owner_knows) tell_gone(c, "the client stopped sending its request");
    c->owner_knows = 0;
    c->expect_body = 1; /* what is left of it will not be read */
    fail(c, 408, "the request was not sent in time");
  } else {
    conn_close(c, "timed out");
  }
}

static void arm(http_conn_t *c, int kind, double seconds) {
  if (c->test) return;
  c->timer_kind = kind;
  if (kind == TIMER_OFF || !(seconds > 0)) {
    uv_timer_stop(&c->timer);
    c->timer_kind = TIMER_OFF;
    return;
  }
  uv_timer_start(&c->timer, timer_cb, (uint64_t)(seconds * 1000), 0);
}

/* ---- closing --------------------------------------------------------------------------- */

static void ready_remove(http_server_t *s, http_conn_t *c) {
  if (!c->in_ready) return;
  for (http_conn_t **p = &s->ready; *p; p = &(*p)->ready_next) {
    if (*p == c) {
      *p = c->ready_next;
      break;
    }
  }
  c->in_ready = 0;
}

static void conn_free(http_conn_t *c) {
  c->s->live--;
  buf_close(&c->head);
  buf_close(&c->body);
  buf_close(&c->held);
  if (c->ws) wslay_event_context_free(c->ws);
  free(c);
}

static void server_maybe_free(http_server_t *s);

static void handle_closed(uv_handle_t *h) {
  http_conn_t *c = h->data;
  if (--c->handles > 0) return;
  http_server_t *s = c->s;
  conn_free(c);
  server_maybe_free(s);
}

static void tell_gone(http_conn_t *c, const char *why) {
  if (c->gone_sent || !c->owner_knows) return;
  if (c->resp == RESP_DONE && !c->ws) return;
  c->gone_sent = 1;
  if (c->s->ev.on_gone) c->s->ev.on_gone(c->s->ud, c, why);
}

static void conn_close(http_conn_t *c, const char *why) {
  if (c->closing) return;
  c->closing = 1;
  http_server_t *s = c->s;
  if (c->resp == RESP_STREAMING && s->st.open_streams) s->st.open_streams--;
  if (c->ws && !c->ws_held && s->st.open_websockets) s->st.open_websockets--;
  tell_gone(c, why ? why : "the connection closed");
  ready_remove(s, c);
  s->slots[c->slot] = NULL;
  s->free_slots[s->nfree++] = c->slot;
  if (c->prev)
    c->prev->next = c->next;
  else if (s->conns == c)
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (s->st.open_connections) s->st.open_connections--;
  if (c->test) return; /* http_test_free frees it */
  uv_close((uv_handle_t *)&c->timer, handle_closed);
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
  else
    c->handles--;
}

void http_abort(http_conn_t *c) {
  conn_close(c, "closed by the server");
}

/* ---- reading and resuming -------------------------------------------------------------- */

static void feed(http_conn_t *c, const char *data, size_t len);
static void ws_feed(http_conn_t *c, const char *data, size_t len);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)suggested;
  http_conn_t *c = h->data;
  b->base = c->s->readbuf;
  b->len = sizeof c->s->readbuf;
}

static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b) {
  http_conn_t *c = stream->data;
  if (n > 0) {
    c->s->st.bytes_in += (uint64_t)n;
    if (c->timer_kind == TIMER_BODY) {
      arm(c, TIMER_BODY, c->s->lim.idle_timeout);
    } else if (c->timer_kind == TIMER_IDLE) {
      /* Bytes between requests begin a head (or are blank lines): the head's clock runs. */
      arm(c, TIMER_HEADER, c->s->lim.header_timeout);
    }
    feed(c, b->base, (size_t)n);
  } else if (n == UV_EOF) {
    /* A client that half-closes after sending whole requests still gets their answers
     * (pipelined ones included), then the connection closes. One that goes during a stream,
     * a WebSocket, a request half sent, or while idle, is gone. */
    c->eof = 1;
    uv_read_stop(stream);
    c->reading = 0;
    if (c->ws || c->resp == RESP_STREAMING || (c->in_message && !c->body_done) ||
        (!c->in_message && c->held.len == 0)) {
      conn_close(c, "closed by the client");
    }
  } else if (n < 0) {
    conn_close(c, uv_strerror((int)n));
  }
}

static void set_reading(http_conn_t *c) {
  if (c->test || c->closing) return;
  /* Not while the owner pauses, nor while answers pile up unread (pipelined requests answered
   * at once), nor while requests wait behind the one being answered. */
  int want = !c->eof && !c->owner_paused && c->queued <= c->s->lim.high_water &&
             !((c->held_waiting || c->held.len) && c->held.len > c->s->lim.max_header);
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0) c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

void http_pause(http_conn_t *c, int paused) {
  c->owner_paused = paused;
  set_reading(c);
}

static void idle_cb(uv_idle_t *h);

static void schedule_resume(http_conn_t *c) {
  http_server_t *s = c->s;
  /* With answers piling up unread, the write callback resumes it later. */
  if (c->in_ready || c->held.len == 0 || c->queued > s->lim.high_water || c->ws_held) return;
  c->in_ready = 1;
  c->ready_next = s->ready;
  s->ready = c;
  if (!s->idle_on && s->idle_open) {
    uv_idle_start(&s->idle, idle_cb);
    s->idle_on = 1;
  }
}

/* Parses the input that waited behind an answer (the idle callback, or the fuzz target). */
static void resume(http_conn_t *c) {
  if (c->closing || c->held_waiting || c->held.len == 0) return;
  /* The held buffer is swapped out first, since feed may hold more. */
  buf_t held = c->held;
  buf_init(&c->held);
  c->resuming = 1;
  feed(c, held.data, held.len);
  c->resuming = 0;
  buf_close(&held);
  /* A client that half-closed has had every answer it asked for. */
  if (!c->closing && c->eof && !c->in_message && c->held.len == 0) close_after(c, NULL);
  set_reading(c); /* held input past max_header stopped it */
}

static void idle_cb(uv_idle_t *h) {
  http_server_t *s = h->data;
  http_conn_t *list = s->ready;
  s->ready = NULL;
  uv_idle_stop(&s->idle);
  s->idle_on = 0;
  while (list) {
    http_conn_t *c = list;
    list = c->ready_next;
    c->in_ready = 0;
    resume(c);
  }
}

/* The exchange is over (response sent, request read): ready for the next request. */
static void exchange_done(http_conn_t *c) {
  if (!c->body_done) return; /* on_message_complete ends it */
  c->in_message = 0;
  c->owner_knows = 0;
  c->gone_sent = 0;
  c->resp = RESP_NONE;
  if (c->owner_paused) {
    c->owner_paused = 0; /* a pause belonged to the exchange that ended */
    set_reading(c);
  }
  buf_reset(&c->body);
  buf_shrink(&c->body, 16384);
  buf_reset(&c->head);
  buf_shrink(&c->head, 16384);
  if (!c->keep_alive || c->s->shutting || (c->eof && c->held.len == 0 && !c->resuming)) {
    close_after(c, NULL);
    return;
  }
  if (c->held_waiting) {
    c->held_waiting = 0;
    set_reading(c);
  }
  arm(c, TIMER_IDLE, c->s->lim.idle_timeout);
  schedule_resume(c);
}

/* ---- responses ------------------------------------------------------------------------- */

static int write_head(http_conn_t *c, int status, const char *headers, size_t hlen,
                      const char *framing, const char *body, size_t blen) {
  char head[512];
  int close = !c->keep_alive || c->s->shutting || (!c->body_done && c->expect_body);
  if (close) c->keep_alive = 0;
  /* A server answers with its own version (RFC 9110, 6.2), whatever the client's. */
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s", status,
                   http_status_text(status), date_header(c->s), framing,
                   close ? "Connection: close\r\n"
                         : (c->p.http_minor == 0 ? "Connection: keep-alive\r\n" : ""));
  if (n < 0 || (size_t)n >= sizeof head) return UV_EINVAL;
  uv_buf_t bufs[4] = {
      uv_buf_init(head, (unsigned)n), uv_buf_init((char *)(headers ? headers : ""), (unsigned)hlen),
      uv_buf_init("\r\n", 2), uv_buf_init((char *)(body ? body : ""), (unsigned)blen)};
  int sc = status / 100;
  if (sc >= 1 && sc <= 5) c->s->st.by_status[sc]++;
  return conn_write(c, bufs, blen ? 4 : 3);
}

int http_respond(http_conn_t *c, int status, const char *headers, size_t hlen, const char *body,
                 size_t blen) {
  if (c->closing) return UV_EPIPE;
  if (!c->in_message) return UV_EINVAL; /* no request waits for an answer */
  if (c->ws && c->ws_held) {
    /* A WebSocket handshake refused: no 101 went, so this is its answer. The parser stopped at
     * the upgrade, so the connection ends with it. No frame was read (ws_input holds them), so
     * the context is not in use. */
    wslay_event_context_free(c->ws);
    c->ws = NULL;
    c->ws_held = 0;
    c->keep_alive = 0;
  }
  if (c->resp != RESP_NONE || c->ws) return UV_EALREADY;
  char framing[64];
  snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", blen);
  c->resp = RESP_DONE;
  int rc = write_head(c, status, headers, hlen, framing, c->is_head ? NULL : body,
                      c->is_head ? 0 : blen);
  if (rc == 0 && !c->closing) exchange_done(c);
  if (!c->body_done && c->expect_body && !c->closing) {
    /* Answered before the body was read: it is not worth reading now. */
    close_after(c, NULL);
  }
  return rc;
}

int http_stream_start(http_conn_t *c, int status, const char *headers, size_t hlen) {
  if (c->closing) return UV_EPIPE;
  if (!c->in_message) return UV_EINVAL;
  if (c->resp != RESP_NONE || c->ws) return UV_EALREADY;
  c->chunked_out = c->p.http_minor >= 1;
  if (!c->chunked_out) c->keep_alive = 0; /* HTTP/1.0: the body ends when the connection does */
  c->resp = RESP_STREAMING;
  c->s->st.open_streams++;
  return write_head(c, status, headers, hlen,
                    c->chunked_out ? "Transfer-Encoding: chunked\r\n" : "", NULL, 0);
}

int http_stream_write(http_conn_t *c, const char *data, size_t len) {
  if (c->closing) return UV_EPIPE;
  if (c->resp != RESP_STREAMING) return UV_EINVAL;
  if (len == 0 || c->is_head) return 0;
  if (!c->chunked_out) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return conn_write(c, &b, 1);
  }
  char size[24];
  int n = snprintf(size, sizeof size, "%zx\r\n", len);
  uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                      uv_buf_init("\r\n", 2)};
  return conn_write(c, bufs, 3);
}

int http_stream_end(http_conn_t *c) {
  if (c->closing) return UV_EPIPE;
  if (c->resp != RESP_STREAMING) return UV_EINVAL;
  c->resp = RESP_DONE;
  if (c->s->st.open_streams) c->s->st.open_streams--;
  int rc = 0;
  if (c->chunked_out && !c->is_head) {
    uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
    rc = conn_write(c, &b, 1);
  }
  if (c->closing) return rc;
  if (!c->body_done && c->expect_body) {
    /* A duplex stream ended while the client still sends: the connection cannot be reused. */
    c->keep_alive = 0;
    close_after(c, NULL);
    return rc;
  }
  if (!c->chunked_out) {
    close_after(c, NULL);
    return rc;
  }
  exchange_done(c);
  return rc;
}

size_t http_queued(const http_conn_t *c) {
  return c->queued;
}

void http_want_drain(http_conn_t *c) {
  if (c->queued <= c->s->lim.high_water / 2) {
    c->want_drain = 0;
    if (c->s->ev.on_drain) c->s->ev.on_drain(c->s->ud, c);
    return;
  }
  c->want_drain = 1;
}

/* An error answered by the server itself; the connection closes after it. */
static void fail(http_conn_t *c, int status, const char *why) {
  c->s->st.errors_total++;
  c->keep_alive = 0;
  if (c->resp == RESP_NONE && !c->ws) {
    char body[256], framing[64];
    int n = snprintf(body, sizeof body, "%s\n", why);
    if (n < 0 || (size_t)n >= sizeof body) n = (int)sizeof body - 1;
    snprintf(framing, sizeof framing, "Content-Length: %d\r\n", n);
    c->resp = RESP_DONE;
    write_head(c, status, "Content-Type: text/plain; charset=utf-8\r\n", 41, framing, body,
               (size_t)n);
  }
  if (c->closing) return;
  if (c->queued) tell_gone(c, why);
  close_after(c, why);
}

/* ---- static files ---------------------------------------------------------------------- */

static const char *content_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},
      {".webp", "image/webp"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".yaml", "application/yaml"},
      {".yml", "application/yaml"},
      {".wasm", "application/wasm"},
      {".woff2", "font/woff2"},
      {".map", "application/json"},
  };
  const char *dot = strrchr(path, '.');
  if (dot && !strchr(dot, '/')) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
      if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    }
  }
  return "application/octet-stream";
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  ch = tolower(ch);
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

/* The file a target names under a mount, or 0 when it names none. */
static int static_path(http_server_t *s, const char *target, char *out, size_t cap) {
  for (size_t m = 0; m < s->nmounts; m++) {
    mount_t *mt = &s->mounts[m];
    if (strncmp(target, mt->prefix, mt->plen) != 0) continue;
    char rel[PATH_MAX];
    size_t n = 0;
    for (const char *p = target + mt->plen; *p && *p != '?' && *p != '#'; p++) {
      int ch = (unsigned char)*p;
      if (ch == '%') {
        int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
        if (lo < 0) return 0;
        ch = hi * 16 + lo;
        p += 2;
      }
      if (ch == 0 || n + 1 >= sizeof rel) return 0;
      rel[n++] = (char)ch;
    }
    rel[n] = '\0';
    /* No way out of the directory: no "..", no hidden files. */
    if (strstr(rel, "/.") || rel[0] == '.' || rel[0] == '/') return 0;
    const char *index = (n == 0 || rel[n - 1] == '/') ? "index.html" : "";
    if ((size_t)snprintf(out, cap, "%s/%s%s", mt->dir, rel, index) >= cap) return 0;
    return 1;
  }
  return 0;
}

static cached_t *cache_slot(http_server_t *s, const char *path) {
  unsigned h = 5381;
  for (const char *p = path; *p; p++) h = h * 33 + (unsigned char)*p;
  return &s->cache[h % STATIC_CACHE];
}

/* Serves a static file: 1 if it answered, 0 if no file is there. */
static int serve_static(http_conn_t *c, const char *method, const char *target) {
  http_server_t *s = c->s;
  if (s->nmounts == 0 || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)) return 0;
  char path[PATH_MAX];
  if (!static_path(s, target, path, sizeof path)) return 0;
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  char headers[160];
  int hn = snprintf(headers, sizeof headers, "Content-Type: %s\r\nCache-Control: no-cache\r\n",
                    content_type(path));
  cached_t *e = cache_slot(s, path);
  if (e->path && strcmp(e->path, path) == 0 && e->mtime == st.st_mtime && e->size == st.st_size &&
      e->ino == st.st_ino) {
    http_respond(c, 200, headers, (size_t)hn, e->data, e->len);
    return 1;
  }
  if ((size_t)st.st_size > STATIC_MAX_FILE) {
    fail(c, 500, "the file is too large to serve");
    return 1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t len = (size_t)st.st_size, got = 0;
  char *data = malloc(len ? len : 1);
  while (data && got < len) {
    ssize_t r = read(fd, data + got, len - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (data == NULL || got != len) {
    free(data);
    fail(c, 500, "the file could not be read");
    return 1;
  }
  http_respond(c, 200, headers, (size_t)hn, data, len);
  if (len <= STATIC_CACHE_MAX_FILE) {
    free(e->path);
    free(e->data);
    e->path = strdup(path);
    e->data = data;
    e->len = len;
    e->mtime = st.st_mtime;
    e->size = st.st_size;
    e->ino = st.st_ino;
    if (e->path == NULL) {
      free(e->data);
      e->data = NULL;
    }
  } else {
    free(data);
  }
  return 1;
}

int http_static(http_server_t *s, const char *prefix, const char *dir) {
  size_t plen = strlen(prefix);
  if (plen == 0 || prefix[0] != '/' || prefix[plen - 1] != '/') return UV_EINVAL;
  mount_t *m = realloc(s->mounts, (s->nmounts + 1) * sizeof *m);
  if (m == NULL) return UV_ENOMEM;
  s->mounts = m;
  m[s->nmounts].prefix = strdup(prefix);
  m[s->nmounts].dir = strdup(dir);
  m[s->nmounts].plen = plen;
  if (!m[s->nmounts].prefix || !m[s->nmounts].dir) return UV_ENOMEM;
  s->nmounts++;
  return 0;
}

/* ---- WebSocket ------------------------------------------------------------------------- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud) {
  (void)flags;
  http_conn_t *c = ud;
  if (c->ws_in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < c->ws_in_len ? len : c->ws_in_len;
  memcpy(buf, c->ws_in, n);
  c->ws_in += n;
  c->ws_in_len -= n;
  return (ssize_t)n;
}

/* Writes WebSocket bytes, after the 101 if it has not gone yet: a handler's first message shares
 * its write (and most often its packet) with the 101. */
static int ws_write(http_conn_t *c, const char *data, size_t len) {
  uv_buf_t bufs[2];
  unsigned n = 0;
  char head[256];
  if (c->ws_head_unsent) {
    c->ws_head_unsent = 0;
    int hn =
        snprintf(head, sizeof head,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n",
                 c->ws_accept_key);
    bufs[n++] = uv_buf_init(head, (unsigned)hn);
  }
  if (len) bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
  return n ? conn_write(c, bufs, (int)n) : 0;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *ud) {
  (void)flags;
  http_conn_t *c = ud;
  if (ws_write(c, (const char *)data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud) {
  http_conn_t *c = ud;
  if (c->closing) return;
  switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
      if (!utf8_valid((const char *)arg->msg, arg->msg_length)) {
        wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA,
                                (const uint8_t *)"invalid UTF-8", 13);
        return;
      }
      if (c->s->ev.on_ws_message)
        c->s->ev.on_ws_message(c->s->ud, c, (const char *)arg->msg, arg->msg_length);
      break;
    case WSLAY_BINARY_FRAME:
      wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA,
                              (const uint8_t *)"text messages only", 18);
      break;
    case WSLAY_PING:
    case WSLAY_PONG:
      /* A sign of life: the owner's heartbeat timer restarts. */
      if (c->s->ev.on_ws_message) c->s->ev.on_ws_message(c->s->ud, c, NULL, 0);
      break;
    default:
      break;
  }
}

static void ws_pump(http_conn_t *c) {
  if (c->closing || c->ws == NULL || c->ws_held) return;
  if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
    conn_close(c, "the WebSocket failed");
    return;
  }
  if (c->closing) return;
  if (!wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)) {
    conn_close(c, wslay_event_get_close_received(c->ws) ? "closed by the client" : "closed");
  }
}

static void ws_feed(http_conn_t *c, const char *data, size_t len) {
  if (c->closing || c->ws == NULL) return;
  c->ws_in = data;
  c->ws_in_len = len;
  int rc = wslay_event_recv(c->ws);
  c->ws_in_len = 0;
  if (rc != 0) {
    conn_close(c, "a bad WebSocket frame");
    return;
  }
  ws_pump(c);
}

/* Bytes after a WebSocket handshake. A client must not send before the 101 (RFC 6455, 4.1): what
 * one sends anyway waits with it, and what follows, in order. */
static void ws_input(http_conn_t *c, const char *data, size_t len) {
  if (c->ws_held || c->held.len) {
    buf_append(&c->held, data, len);
    schedule_resume(c);
    set_reading(c);
    return;
  }
  ws_feed(c, data, len);
}

static const char *header(const http_request_t *r, const char *name) {
  const char *p = r->headers;
  for (size_t i = 0; i < r->nheaders; i++) {
    const char *v = p + strlen(p) + 1;
    if (strcmp(p, name) == 0) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

static int has_token(const char *value, const char *token) {
  size_t tl = strlen(token);
  for (const char *p = value; p && *p;) {
    while (*p == ' ' || *p == ',' || *p == '\t') p++;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
    if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0) return 1;
    p = e;
  }
  return 0;
}

/* Checks the handshake of RFC 6455 section 4.2 and readies the connection for frames; the 101
 * waits for http_ws_accept, so that the owner may still refuse. 0, or a status to answer with. */
static int ws_handshake(http_conn_t *c, const http_request_t *r) {
  const char *key = header(r, "sec-websocket-key");
  const char *version = header(r, "sec-websocket-version");
  if (strcmp(r->method, "GET") != 0 || !r->upgrade ||
      !has_token(header(r, "upgrade"), "websocket") ||
      !has_token(header(r, "connection"), "upgrade") || key == NULL || strlen(key) != 24) {
    return 400;
  }
  if (version == NULL || strcmp(version, "13") != 0) return 426;
  struct sha1_ctx sha;
  uint8_t digest[SHA1_DIGEST_SIZE];
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  sha1_init(&sha);
  sha1_update(&sha, 24, (const uint8_t *)key);
  sha1_update(&sha, sizeof guid - 1, (const uint8_t *)guid);
  sha1_digest(&sha, SHA1_DIGEST_SIZE, digest);
  _Static_assert(BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) < sizeof c->ws_accept_key,
                 "the accept key fits");
  base64_encode_raw(c->ws_accept_key, SHA1_DIGEST_SIZE, digest);
  c->ws_accept_key[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
  static const struct wslay_event_callbacks cbs = {ws_recv_cb, ws_send_cb, NULL,     NULL,
                                                   NULL,       NULL,       ws_msg_cb};
  if (wslay_event_context_server_init(&c->ws, &cbs, c) != 0) return 500;
  wslay_event_config_set_max_recv_msg_length(c->ws, c->s->lim.max_ws_message);
  c->ws_held = 1;
  arm(c, TIMER_OFF, 0);
  return 0;
}

/* Accepts a held handshake: its 101 goes with the next bytes written. */
static void ws_open(http_conn_t *c) {
  if (!c->ws_held) return;
  c->ws_held = 0;
  c->ws_head_unsent = 1;
  c->resp = RESP_DONE;
  c->s->st.by_status[1]++;
  c->s->st.open_websockets++;
  schedule_resume(c); /* frames the client sent too early */
}

int http_ws_accept(http_conn_t *c) {
  if (c->closing || c->ws == NULL) return UV_EPIPE;
  ws_open(c);
  return ws_write(c, NULL, 0);
}

/* Queues a frame (accepting the handshake first) and sends it, with the 101 if it waits. */
static int ws_queue(http_conn_t *c, const struct wslay_event_msg *m) {
  if (c->closing || c->ws == NULL) return UV_EPIPE;
  ws_open(c);
  if (wslay_event_queue_msg(c->ws, m) != 0) return UV_EPIPE;
  ws_pump(c);
  return ws_write(c, NULL, 0); /* the 101, had the frame not gone */
}

int http_ws_send(http_conn_t *c, const char *data, size_t len) {
  struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
  return ws_queue(c, &m);
}

int http_ws_ping(http_conn_t *c) {
  struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
  return ws_queue(c, &m);
}

int http_ws_close(http_conn_t *c, uint16_t code, const char *reason) {
  if (c->closing || c->ws == NULL) return UV_EPIPE;
  ws_open(c);
  c->gone_sent = 1;    /* the owner closes it: it needs no telling */
  c->owner_paused = 0; /* the client's close frame must be read */
  set_reading(c);
  arm(c, TIMER_IDLE, 5); /* and if it never comes, the connection closes anyway */
  size_t rl = reason ? strlen(reason) : 0;
  if (rl > 123) rl = 123;
  wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rl);
  ws_pump(c);
  return ws_write(c, NULL, 0); /* the 101, had the close not gone */
}

/* ---- the parser's callbacks ------------------------------------------------------------ */

static int head_add(http_conn_t *c, const char *at, size_t len, int lower) {
  http_server_t *s = c->s;
  if (c->head.len + len + 2 > s->lim.max_header) {
    c->error_status = c->nheaders == 0 && !c->in_field ? 414 : 431;
    return -1;
  }
  size_t from = c->head.len;
  if (buf_append(&c->head, at, len)) {
    c->error_status = 500;
    return -1;
  }
  if (lower) {
    for (size_t i = from; i < c->head.len; i++)
      c->head.data[i] = (char)tolower((unsigned char)c->head.data[i]);
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  http_conn_t *c = p->data;
  buf_reset(&c->head);
  buf_reset(&c->body);
  c->nheaders = 0;
  c->in_field = 0;
  c->error_status = 0;
  c->head_done = 0;
  c->mode = 0;
  c->line_overflow = 0;
  c->in_message = 1;
  c->body_done = 0;
  c->resp = RESP_NONE;
  c->owner_knows = 0;
  c->gone_sent = 0;
  c->s->st.requests_total++;
  /* The method is read at the end of the head: here the parser has seen one letter of it. */
  c->target_at = 0;
  arm(c, TIMER_HEADER, c->s->lim.header_timeout);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (c->head.len - c->target_at + len > 8192) {
    c->error_status = 414;
    return -1;
  }
  return head_add(c, at, len, 0);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (!c->in_field) {
    /* Ends the target (first field) or the previous value. */
    if (buf_append(&c->head, "", 1)) return -1;
    c->in_field = 1;
  }
  return head_add(c, at, len, 1);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (c->in_field) {
    if (buf_append(&c->head, "", 1)) return -1;
    c->in_field = 0;
    c->nheaders++;
  }
  return head_add(c, at, len, 0);
}

static int on_headers_complete(http_parser *p) {
  http_conn_t *c = p->data;
  http_server_t *s = c->s;
  c->head_done = 1;
  if (buf_append(&c->head, "", 1)) return -1; /* ends the last value, or the target */
  if (c->in_field) {
    /* A field without a value (only possible at the very end): keep it as empty. */
    buf_append(&c->head, "", 1);
    c->nheaders++;
  }
  arm(c, TIMER_OFF, 0);
  if (p->http_major != 1) {
    c->error_status = 505;
    return -1;
  }
  c->keep_alive = http_should_keep_alive(p);
  c->is_head = p->method == HTTP_HEAD;
  c->expect_body =
      (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
  http_request_t r;
  r.method = http_method_str((enum http_method)p->method);
  r.target = c->head.data + c->target_at;
  r.headers = r.target + strlen(r.target) + 1;
  r.nheaders = c->nheaders;
  r.content_length = (p->flags & F_CONTENTLENGTH) ? (int64_t)p->content_length : -1;
  r.chunked = (p->flags & F_CHUNKED) != 0;
  r.upgrade = p->upgrade;
  r.keep_alive = c->keep_alive;
  r.http_minor = p->http_minor;
  if (!r.upgrade && serve_static(c, r.method, r.target)) {
    c->mode = 0; /* a body, if any, is read and dropped */
    return 0;
  }
  /* A client that waits for leave to send its body (curl does, for uploads) gets it before the
   * owner sees the request, since the owner may start its response at once. A refusal after it
   * is allowed (RFC 9110, 10.1.1). */
  const char *expect = header(&r, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && c->expect_body && p->http_minor >= 1 &&
      !(r.content_length > (int64_t)s->lim.max_body && !r.chunked)) {
    uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
    conn_write(c, &b, 1);
  }
  c->owner_knows = 1;
  int mode = s->ev.on_request(s->ud, c, &r);
  if (c->closing) return 0;
  if (mode >= 400) {
    c->owner_knows = 0;
    c->error_status = mode;
    fail(c, mode, http_status_text(mode));
    return 0;
  }
  if (mode != HTTP_BODY_WEBSOCKET) p->upgrade = 0; /* e.g. h2c: answered as HTTP/1.1 */
  if (mode == HTTP_BODY_WEBSOCKET) {
    int status = ws_handshake(c, &r);
    if (status) {
      tell_gone(c, "not a valid WebSocket handshake");
      c->owner_knows = 0;
      if (status == 426) {
        c->keep_alive = 0;
        c->resp = RESP_DONE;
        write_head(c, 426, "Sec-WebSocket-Version: 13\r\n", 27, "Content-Length: 0\r\n", NULL, 0);
        close_after(c, NULL);
      } else {
        fail(c, status, "not a valid WebSocket handshake");
      }
    }
    return 0;
  }
  if (mode == HTTP_BODY_BUFFER && r.content_length > (int64_t)s->lim.max_body) {
    c->error_status = 413;
    tell_gone(c, "the request body is too large");
    c->owner_knows = 0;
    fail(c, 413, "the request body is too large");
    return 0;
  }
  c->mode = mode;
  if (mode == HTTP_BODY_BUFFER && c->resp == RESP_NONE) arm(c, TIMER_BODY, s->lim.idle_timeout);
  return 0;
}

static void deliver_lines(http_conn_t *c, const char *at, size_t len) {
  http_server_t *s = c->s;
  const char *lines[64];
  size_t lens[64];
  size_t n = 0;
  const char *p = at, *end = at + len;
  while (p < end && !c->closing) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t chunk = (size_t)((nl ? nl : end) - p);
    if (!c->line_overflow) {
      if (c->body.len + chunk > s->lim.max_line) {
        c->line_overflow = 1;
        buf_reset(&c->body);
      } else {
        buf_append(&c->body, p, chunk);
      }
    }
    if (!nl) break;
    p = nl + 1;
    /* A complete line. */
    if (c->line_overflow) {
      lines[n] = NULL;
      lens[n] = SIZE_MAX;
      c->line_overflow = 0;
    } else {
      size_t l = c->body.len;
      if (l && c->body.data[l - 1] == '\r') l--;
      /* Copy out: the body buffer is reused for the next line. */
      char *copy = malloc(l + 1);
      if (copy == NULL) break;
      if (l) memcpy(copy, c->body.data, l);
      copy[l] = '\0';
      lines[n] = copy;
      lens[n] = l;
      buf_reset(&c->body);
    }
    if (++n == 64) {
      s->ev.on_lines(s->ud, c, lines, lens, n);
      for (size_t i = 0; i < n; i++) free((char *)lines[i]);
      n = 0;
    }
  }
  if (n) {
    if (!c->closing) s->ev.on_lines(s->ud, c, lines, lens, n);
    for (size_t i = 0; i < n; i++) free((char *)lines[i]);
  }
}

static int on_body(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  http_server_t *s = c->s;
  if (c->closing) return -1;
  switch (c->mode) {
    case HTTP_BODY_BUFFER:
      if (c->body.len + len > s->lim.max_body) {
        c->error_status = 413;
        return -1;
      }
      if (buf_append(&c->body, at, len)) {
        c->error_status = 500;
        return -1;
      }
      break;
    case HTTP_BODY_LINES:
      if (c->owner_knows && !c->gone_sent) deliver_lines(c, at, len);
      break;
    default:
      break; /* dropped */
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  http_conn_t *c = p->data;
  http_server_t *s = c->s;
  c->body_done = 1;
  if (c->timer_kind == TIMER_BODY) arm(c, TIMER_OFF, 0);
  if (c->owner_knows && !c->gone_sent && !c->closing) {
    if (c->mode == HTTP_BODY_BUFFER && s->ev.on_body)
      s->ev.on_body(s->ud, c, c->body.data, c->body.len);
    if (c->mode == HTTP_BODY_LINES && c->body.len && !c->closing) {
      deliver_lines(c, "\n", 1); /* the last line, without its newline */
    }
    if (!c->closing && s->ev.on_end) s->ev.on_end(s->ud, c);
  }
  if (c->closing || p->upgrade) return 0;
  if (!c->in_message) {
    /* Answered during the callbacks above: the exchange is over already. */
    if (c->close_after_write) http_parser_pause(p, 1);
    return 0;
  }
  if (c->resp == RESP_DONE) {
    exchange_done(c);
    if (c->closing || c->close_after_write) http_parser_pause(p, 1);
    return 0;
  }
  /* The response is still being made: what follows waits. */
  c->held_waiting = 1;
  http_parser_pause(p, 1);
  return 0;
}

/* What the parser refused, in words for the client. http-parser reads a chunk size into its
 * content length and reports its overflow as an invalid Content-Length header, which the request
 * may not even have: past the head of a chunked request, that error is the chunk size's. */
static const char *parse_error(const http_conn_t *c, enum http_errno e) {
  if (e == HPE_INVALID_CONTENT_LENGTH && c->head_done && (c->p.flags & F_CHUNKED))
    return "chunk size too large";
  if (e == HPE_INVALID_CHUNK_SIZE) return "invalid chunk size";
  return http_errno_description(e);
}

/* Parses data; what is not parsed yet is held. */
static void feed(http_conn_t *c, const char *data, size_t len) {
  if (c->closing || c->close_after_write) return;
  if (c->ws) {
    ws_input(c, data, len);
    return;
  }
  if (c->held_waiting || c->held.len) {
    buf_append(&c->held, data, len);
    if (!c->held_waiting) schedule_resume(c);
    set_reading(c);
    return;
  }
  size_t off = 0;
  while (off < len && !c->closing && !c->close_after_write && !c->held_waiting && !c->ws &&
         c->queued <= c->s->lim.high_water) {
    size_t n = http_parser_execute(&c->p, &settings, data + off, len - off);
    off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->p, 0);
      continue;
    }
    if (e != HPE_OK) {
      if (c->closing) return;
      int status = c->error_status ? c->error_status : 400;
      const char *why = parse_error(c, e);
      if (c->owner_knows) tell_gone(c, why);
      c->owner_knows = 0;
      if (c->resp == RESP_STREAMING) {
        conn_close(c, "a malformed request body");
      } else {
        c->resp = c->resp == RESP_DONE ? RESP_DONE : RESP_NONE;
        fail(c, status, status == 400 ? why : http_status_text(status));
      }
      return;
    }
    if (c->p.upgrade) {
      /* A refused handshake was answered during the parse, and the connection ends with it. */
      if (c->ws)
        ws_input(c, data + off, len - off);
      else if (!c->closing && !c->close_after_write)
        fail(c, 400, "an upgrade this server does not do");
      return;
    }
    if (n == 0) break;
  }
  if (off < len && !c->closing && !c->close_after_write && !c->ws) {
    buf_append(&c->held, data + off, len - off);
    set_reading(c);
  }
}

/* ---- accepting ------------------------------------------------------------------------- */

static http_conn_t *conn_new(http_server_t *s) {
  http_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->s = s;
  uint32_t slot;
  if (s->nfree) {
    slot = s->free_slots[--s->nfree];
  } else {
    if (s->nslots == s->cap_slots) {
      uint32_t cap = s->cap_slots ? s->cap_slots * 2 : 64;
      http_conn_t **slots = realloc(s->slots, cap * sizeof *slots);
      uint32_t *fr = slots ? realloc(s->free_slots, cap * sizeof *fr) : NULL;
      if (slots) s->slots = slots;
      if (fr) s->free_slots = fr;
      if (slots == NULL || fr == NULL || cap > (1u << 24)) {
        free(c);
        return NULL;
      }
      s->cap_slots = cap;
    }
    slot = s->nslots++;
  }
  s->slots[slot] = c;
  c->slot = slot;
  s->live++;
  s->generation = (s->generation + 1) & ((1ull << 28) - 1); /* ids stay below 2^52 */
  c->id = ((s->generation + 1) << 24) | slot;
  buf_init(&c->head);
  buf_init(&c->body);
  buf_init(&c->held);
  http_parser_init(&c->p, HTTP_REQUEST);
  c->p.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->st.connections_total++;
  s->st.open_connections++;
  return c;
}

static void conn_shutdown(host_handle_t *owner);

static void accept_cb(uv_stream_t *server, int status) {
  http_server_t *s = server->data;
  if (status < 0) return;
  http_conn_t *c = conn_new(s);
  if (c == NULL) return;
  c->base.on_close = handle_closed;
  c->base.on_shutdown = conn_shutdown;
  uv_tcp_init(&s->host->loop, &c->tcp);
  uv_timer_init(&s->host->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c, "accept failed");
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    char ip[48] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  }
  arm(c, TIMER_HEADER, s->lim.header_timeout);
  set_reading(c);
}

/* ---- the server ------------------------------------------------------------------------ */

static void init_settings(void) {
  static int done;
  if (done) return;
  done = 1;
  memset(&settings, 0, sizeof settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
}

static void server_free(http_server_t *s) {
  for (size_t i = 0; i < s->nmounts; i++) {
    free(s->mounts[i].prefix);
    free(s->mounts[i].dir);
  }
  free(s->mounts);
  free(s->slots);
  free(s->free_slots);
  for (size_t i = 0; i < STATIC_CACHE; i++) {
    free(s->cache[i].path);
    free(s->cache[i].data);
  }
  free(s);
}

static int released(http_server_t *s) {
  return s->shutting == 2 && s->live == 0 && !s->tcp_open && !s->idle_open;
}

static void server_maybe_free(http_server_t *s) {
  if (released(s)) server_free(s);
}

static void server_handle_closed(uv_handle_t *h) {
  http_server_t *s = h->data;
  if (h == (uv_handle_t *)&s->tcp)
    s->tcp_open = 0;
  else
    s->idle_open = 0;
  server_maybe_free(s);
}

static void server_shutdown(host_handle_t *owner) {
  http_shutdown((http_server_t *)owner, 1);
}

static void conn_shutdown(host_handle_t *owner) {
  http_conn_t *c = (http_conn_t *)owner;
  http_shutdown(c->s, 1);
}

int http_listen(http_server_t **out, host_t *h, const char *ip, int port,
                const http_limits_t *limits, const http_events_t *events, void *ud, char *err,
                size_t errlen) {
  init_settings();
  http_server_t *s = calloc(1, sizeof *s);
  if (s == NULL) return UV_ENOMEM;
  s->host = h;
  s->lim = *limits;
  s->ev = *events;
  s->ud = ud;
  s->base.on_close = server_handle_closed;
  s->base.on_shutdown = server_shutdown;
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(ip, port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ss);
  if (rc) {
    snprintf(err, errlen, "not an IP address: %s", ip);
    free(s);
    return rc;
  }
  uv_tcp_init(&h->loop, &s->tcp);
  s->tcp.data = s;
  s->tcp_open = 1;
  uv_idle_init(&h->loop, &s->idle);
  s->idle.data = s;
  s->idle_open = 1;
  rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->tcp, 1024, accept_cb);
  if (rc) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", ip, port, uv_strerror(rc));
    s->shutting = 2;
    uv_close((uv_handle_t *)&s->tcp, server_handle_closed);
    uv_close((uv_handle_t *)&s->idle, server_handle_closed);
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  *out = s;
  return 0;
}

int http_port(const http_server_t *s) {
  return s->port;
}

void http_shutdown(http_server_t *s, int now) {
  if (s->shutting == 0) s->shutting = 1;
  if (s->tcp_open && !s->test && !uv_is_closing((uv_handle_t *)&s->tcp)) {
    uv_close((uv_handle_t *)&s->tcp, server_handle_closed);
  }
  for (http_conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (now || !c->in_message) {
      conn_close(c, "the server is shutting down");
    } else if (c->ws && c->ws_held) {
      /* Its handler has not accepted it: it is refused, as a new connection would be. */
      http_respond(c, 503, "Content-Type: text/plain; charset=utf-8\r\n", 41,
                   "the server is shutting down\n", 28);
    } else if (c->ws) {
      http_ws_close(c, 1001, "the server is shutting down");
    } else {
      c->keep_alive = 0;
    }
  }
}

void http_close(http_server_t *s) {
  http_shutdown(s, 1);
  s->shutting = 2;
  if (s->idle_open && !s->test && !uv_is_closing((uv_handle_t *)&s->idle)) {
    uv_close((uv_handle_t *)&s->idle, server_handle_closed);
  }
  server_maybe_free(s);
}

void http_stats(const http_server_t *s, http_stats_t *out) {
  *out = s->st;
}

uint64_t http_conn_id(const http_conn_t *c) {
  return c->id;
}

http_conn_t *http_find(const http_server_t *s, uint64_t id) {
  uint32_t slot = (uint32_t)(id & 0xffffff);
  if (slot >= s->nslots) return NULL;
  http_conn_t *c = s->slots[slot];
  return c && c->id == id ? c : NULL;
}

const char *http_conn_peer(const http_conn_t *c) {
  return c->peer;
}

void http_conn_set_data(http_conn_t *c, void *data) {
  c->data = data;
}

void *http_conn_data(const http_conn_t *c) {
  return c->data;
}

/* ---- without sockets (the fuzz target) ------------------------------------------------- */

http_server_t *http_test_server(const http_limits_t *limits, const http_events_t *events,
                                void *ud) {
  init_settings();
  http_server_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->lim = *limits;
  s->ev = *events;
  s->ud = ud;
  s->test = 1;
  return s;
}

void http_test_server_free(http_server_t *s) {
  server_free(s);
}

http_conn_t *http_test_conn(http_server_t *s) {
  http_conn_t *c = conn_new(s);
  if (c) c->test = 1;
  return c;
}

void http_test_feed(http_conn_t *c, const char *data, size_t len) {
  feed(c, data, len);
  /* What the idle callback would resume. */
  while (!c->closing && c->in_ready) {
    ready_remove(c->s, c);
    resume(c);
  }
}

void http_test_free(http_conn_t *c) {
  conn_close(c, "done");
  conn_free(c);
}
