/* The HTTP/1.1 server's core (see http.h): connections, requests parsed by http-parser, answers
 * (fixed, chunked streams), JSON-lines bodies, limits and timeouts. Requests on a kept-alive
 * connection are answered in order: when a response is still being made, the parser pauses at
 * the end of the next request's head and the bytes after it wait. Static files are in
 * http_static.c, WebSocket in http_ws.c; what they share is in http_int.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_int.h"

static http_parser_settings settings;

/* The reason phrase for a status ("Unknown" for one not listed). */
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

/* The defaults: a 16 KiB head; 1 MiB bodies, lines and messages; 10 s to send a head, 60 s
 * idle; 256 KiB queued before writers wait. */
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

static void tell_gone(http_conn_t *c, const char *why);

/* A queued write went (or failed): a close waiting for it happens, a writer waiting for the
 * queue to drain is told, and reading resumes once the queue is low again. */
static void write_cb(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  http_conn_t *c = w->c;
  c->queued -= w->len;
  c->s->st.bytes_out += status == 0 ? w->len : 0;
  free(w);
  if (c->closing) return;
  if (status < 0) {
    http__conn_close(c, uv_strerror(status));
  } else if (c->close_after_write && c->queued == 0) {
    http__conn_close(c, NULL);
  } else {
    if (c->want_drain && c->queued <= c->s->lim.high_water / 2) {
      c->want_drain = 0;
      if (c->s->ev.on_drain) c->s->ev.on_drain(c->s->ud, c);
    }
    if (!c->closing && !c->reading && c->queued <= c->s->lim.high_water / 2) {
      http__set_reading(c);
      if (!c->held_waiting) http__schedule_resume(c);
    }
  }
}

/* See http_int.h. Only what the socket did not take at once is copied and queued. Without a
 * socket (the fuzz target) the bytes are counted and dropped. */
int http__conn_write(http_conn_t *c, uv_buf_t *bufs, int n) {
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
      http__conn_close(c, uv_strerror(rc));
      return rc;
    }
  }
  if (done == total) {
    if (c->close_after_write) http__conn_close(c, NULL);
    return 0;
  }
  wreq_t *w = malloc(sizeof *w + (total - done));
  if (w == NULL) {
    http__conn_close(c, "out of memory");
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
    http__conn_close(c, uv_strerror(rc));
    return rc;
  }
  c->queued += at;
  return 0;
}

/* The Date header's value, formatted at most once a second. */
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

/* Closes once what is written has gone; a client that never reads it has the idle timeout. */
static void close_after(http_conn_t *c, const char *why) {
  c->close_after_write = 1;
  if (c->queued == 0)
    http__conn_close(c, why);
  else
    http__arm(c, TIMER_IDLE, c->s->lim.idle_timeout);
}

/* The connection's timer ran out: an idle connection closes; a request not sent in time is
 * answered 408; one whose answer has begun closes. */
static void timer_cb(uv_timer_t *t) {
  http_conn_t *c = t->data;
  int kind = c->timer_kind;
  c->timer_kind = TIMER_OFF;
  if (c->closing) return;
  if (kind == TIMER_IDLE) {
    http__conn_close(c, NULL);
  } else if (c->resp == RESP_NONE) {
    if (c->owner_knows) tell_gone(c, "the client stopped sending its request");
    c->owner_knows = 0;
    c->expect_body = 1; /* what is left of it will not be read */
    http__fail(c, 408, "the request was not sent in time");
  } else {
    http__conn_close(c, "timed out");
  }
}

/* See http_int.h. Without a socket there is no timer. */
void http__arm(http_conn_t *c, int kind, double seconds) {
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

/* Takes c off the server's list of connections whose held input waits to be resumed. */
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

/* Frees a connection (its handles closed, or it never had any). */
static void conn_free(http_conn_t *c) {
  c->s->live--;
  buf_close(&c->head);
  buf_close(&c->body);
  buf_close(&c->held);
  http__ws_free(c);
  free(c);
}

static void server_maybe_free(http_server_t *s);

/* One of a connection's handles closed: the last one frees it, and the server if it waits for
 * that. */
static void handle_closed(uv_handle_t *h) {
  http_conn_t *c = h->data;
  if (--c->handles > 0) return;
  http_server_t *s = c->s;
  conn_free(c);
  server_maybe_free(s);
}

/* Tells the owner, once per exchange, that an exchange it knows of ended before its answer did
 * (an open WebSocket is an answer that has not ended). */
static void tell_gone(http_conn_t *c, const char *why) {
  if (c->gone_sent || !c->owner_knows) return;
  if (c->resp == RESP_DONE && !c->ws) return;
  c->gone_sent = 1;
  if (c->s->ev.on_gone) c->s->ev.on_gone(c->s->ud, c, why);
}

/* See http_int.h. The connection leaves the server at once (its id finds nothing); its memory
 * goes when its handles have closed. */
void http__conn_close(http_conn_t *c, const char *why) {
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

/* Closes the connection now (http.h); the owner hears on_gone if an exchange was open. */
void http_abort(http_conn_t *c) {
  http__conn_close(c, "closed by the server");
}

/* ---- reading and resuming -------------------------------------------------------------- */

static void feed(http_conn_t *c, const char *data, size_t len);

/* Every read lands in the server's one buffer: feed copies out what it keeps. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)suggested;
  http_conn_t *c = h->data;
  b->base = c->s->readbuf;
  b->len = sizeof c->s->readbuf;
}

/* Bytes from the client (fed to the parser, restarting the head's or the body's clock), its
 * end of sending, or an error. */
static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b) {
  http_conn_t *c = stream->data;
  if (n > 0) {
    c->s->st.bytes_in += (uint64_t)n;
    if (c->timer_kind == TIMER_BODY) {
      http__arm(c, TIMER_BODY, c->s->lim.idle_timeout);
    } else if (c->timer_kind == TIMER_IDLE) {
      /* Bytes between requests begin a head (or are blank lines): the head's clock runs. */
      http__arm(c, TIMER_HEADER, c->s->lim.header_timeout);
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
      http__conn_close(c, "closed by the client");
    }
  } else if (n < 0) {
    http__conn_close(c, uv_strerror((int)n));
  }
}

/* See http_int.h. */
void http__set_reading(http_conn_t *c) {
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

/* The owner stops or resumes reading (http.h); a pause ends with its exchange. */
void http_pause(http_conn_t *c, int paused) {
  c->owner_paused = paused;
  http__set_reading(c);
}

static void idle_cb(uv_idle_t *h);

/* See http_int.h. Nothing to do while no input is held, while a handshake waits for its
 * owner, or while answers pile up unread. */
void http__schedule_resume(http_conn_t *c) {
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
  http__set_reading(c); /* held input past max_header stopped it */
}

/* Resumes every connection on the ready list, then stops until one is added. */
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
    http__set_reading(c);
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
    http__set_reading(c);
  }
  http__arm(c, TIMER_IDLE, c->s->lim.idle_timeout);
  http__schedule_resume(c);
}

/* ---- responses ------------------------------------------------------------------------- */

/* Writes a status line, Date, the framing header, Connection when needed, the owner's headers
 * and the body, in one write; decides whether the connection closes after this answer. */
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
  return http__conn_write(c, bufs, blen ? 4 : 3);
}

/* A whole answer (http.h), also to a held WebSocket handshake (a refusal). Answered before the
 * body was read, the connection closes after it. */
int http_respond(http_conn_t *c, int status, const char *headers, size_t hlen, const char *body,
                 size_t blen) {
  if (c->closing) return UV_EPIPE;
  if (!c->in_message) return UV_EINVAL; /* no request waits for an answer */
  http__ws_refuse(c);                   /* a held WebSocket handshake: this is its answer */
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

/* Starts a streamed answer: chunked to HTTP/1.1, to HTTP/1.0 a body that the close ends. */
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

/* A chunk of a stream (nothing for HEAD, nor for an empty write). */
int http_stream_write(http_conn_t *c, const char *data, size_t len) {
  if (c->closing) return UV_EPIPE;
  if (c->resp != RESP_STREAMING) return UV_EINVAL;
  if (len == 0 || c->is_head) return 0;
  if (!c->chunked_out) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return http__conn_write(c, &b, 1);
  }
  char size[24];
  int n = snprintf(size, sizeof size, "%zx\r\n", len);
  uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                      uv_buf_init("\r\n", 2)};
  return http__conn_write(c, bufs, 3);
}

/* Ends a stream: its last chunk, then the next request, or the close when the connection cannot
 * be reused. */
int http_stream_end(http_conn_t *c) {
  if (c->closing) return UV_EPIPE;
  if (c->resp != RESP_STREAMING) return UV_EINVAL;
  c->resp = RESP_DONE;
  if (c->s->st.open_streams) c->s->st.open_streams--;
  int rc = 0;
  if (c->chunked_out && !c->is_head) {
    uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
    rc = http__conn_write(c, &b, 1);
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

/* Bytes written and not yet taken by the client (http.h). */
size_t http_queued(const http_conn_t *c) {
  return c->queued;
}

/* Asks for on_drain, at once if the queue is low already (http.h). */
void http_want_drain(http_conn_t *c) {
  if (c->queued <= c->s->lim.high_water / 2) {
    c->want_drain = 0;
    if (c->s->ev.on_drain) c->s->ev.on_drain(c->s->ud, c);
    return;
  }
  c->want_drain = 1;
}

/* An error answered by the server itself; the connection closes after it. */
void http__fail(http_conn_t *c, int status, const char *why) {
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

/* ---- the parser's callbacks ------------------------------------------------------------ */

/* See http_int.h: headers are name\0value\0 pairs, names in lower case. */
const char *http__header(const http_request_t *r, const char *name) {
  const char *p = r->headers;
  for (size_t i = 0; i < r->nheaders; i++) {
    const char *v = p + strlen(p) + 1;
    if (strcmp(p, name) == 0) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

/* Appends to the head (lower-cased, for names); past max_header the parse fails with 414 while
 * in the request line, 431 after. */
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

/* A request begins: its state is reset and the clock for its head starts. */
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
  http__arm(c, TIMER_HEADER, c->s->lim.header_timeout);
  return 0;
}

/* Part of the target; one longer than 8 KiB is refused 414. */
static int on_url(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (c->head.len - c->target_at + len > 8192) {
    c->error_status = 414;
    return -1;
  }
  return head_add(c, at, len, 0);
}

/* Part of a header's name; a NUL ends the target or the previous value first. */
static int on_header_field(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (!c->in_field) {
    /* Ends the target (first field) or the previous value. */
    if (buf_append(&c->head, "", 1)) return -1;
    c->in_field = 1;
  }
  return head_add(c, at, len, 1);
}

/* Part of a header's value; a NUL ends its name first. */
static int on_header_value(http_parser *p, const char *at, size_t len) {
  http_conn_t *c = p->data;
  if (c->in_field) {
    if (buf_append(&c->head, "", 1)) return -1;
    c->in_field = 0;
    c->nheaders++;
  }
  return head_add(c, at, len, 0);
}

/* The head is complete: a static file answers it, or the owner says how its body is read (or
 * refuses it); 100 Continue, WebSocket handshakes and a body too large are dealt with here. */
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
  http__arm(c, TIMER_OFF, 0);
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
  if (!r.upgrade && http__static_serve(c, r.method, r.target)) {
    c->mode = 0; /* a body, if any, is read and dropped */
    return 0;
  }
  /* A client that waits for leave to send its body (curl does, for uploads) gets it before the
   * owner sees the request, since the owner may start its response at once. A refusal after it
   * is allowed (RFC 9110, 10.1.1). */
  const char *expect = http__header(&r, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && c->expect_body && p->http_minor >= 1 &&
      !(r.content_length > (int64_t)s->lim.max_body && !r.chunked)) {
    uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
    http__conn_write(c, &b, 1);
  }
  c->owner_knows = 1;
  int mode = s->ev.on_request(s->ud, c, &r);
  if (c->closing) return 0;
  if (mode >= 400) {
    c->owner_knows = 0;
    c->error_status = mode;
    http__fail(c, mode, http_status_text(mode));
    return 0;
  }
  if (mode != HTTP_BODY_WEBSOCKET) p->upgrade = 0; /* e.g. h2c: answered as HTTP/1.1 */
  if (mode == HTTP_BODY_WEBSOCKET) {
    int status = http__ws_handshake(c, &r);
    if (status) {
      tell_gone(c, "not a valid WebSocket handshake");
      c->owner_knows = 0;
      if (status == 426) {
        c->keep_alive = 0;
        c->resp = RESP_DONE;
        write_head(c, 426, "Sec-WebSocket-Version: 13\r\n", 27, "Content-Length: 0\r\n", NULL, 0);
        close_after(c, NULL);
      } else {
        http__fail(c, status, "not a valid WebSocket handshake");
      }
    }
    return 0;
  }
  if (mode == HTTP_BODY_BUFFER && r.content_length > (int64_t)s->lim.max_body) {
    c->error_status = 413;
    tell_gone(c, "the request body is too large");
    c->owner_knows = 0;
    http__fail(c, 413, "the request body is too large");
    return 0;
  }
  c->mode = mode;
  if (mode == HTTP_BODY_BUFFER && c->resp == RESP_NONE)
    http__arm(c, TIMER_BODY, s->lim.idle_timeout);
  return 0;
}

/* Splits a lines body on \n (a partial line waits in c->body for the next read) and hands the
 * lines to on_lines, up to 64 a call; a line past max_line is reported dropped. */
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

/* Body bytes: buffered (413 past max_body), split into lines, or dropped. */
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

/* The request is read: the owner has its body and on_end; the next request is parsed now if
 * this one is answered, or waits (the parser paused) while its answer is being made. */
static int on_message_complete(http_parser *p) {
  http_conn_t *c = p->data;
  http_server_t *s = c->s;
  c->body_done = 1;
  if (c->timer_kind == TIMER_BODY) http__arm(c, TIMER_OFF, 0);
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

/* 1 if the header whose value the parser is reading is Content-Length: its name is the last
 * part of the head, not yet followed by a NUL. */
static int in_content_length(const http_conn_t *c) {
  static const char name[] = "content-length";
  size_t n = sizeof name - 1;
  if (c->head_done || !c->in_field || c->head.len < n + 1) return 0;
  const char *end = c->head.data + c->head.len;
  return end[-(long)n - 1] == '\0' && strncasecmp(end - n, name, n) == 0;
}

/* What the parser refused, in words for the client; *status is set where 400 is not it.
 * http-parser reports a number too large for 64 bits as an invalid Content-Length, and reads a
 * chunk size into the same field: past the head of a chunked request, that error is the chunk
 * size's; in the header, a digit where it stopped means the number overflowed. */
static const char *parse_error(const http_conn_t *c, enum http_errno e, const char *start,
                               const char *stop, const char *end, int *status) {
  if (e == HPE_INVALID_CONTENT_LENGTH && c->head_done && (c->p.flags & F_CHUNKED))
    return "chunk size too large";
  if (e == HPE_INVALID_CONTENT_LENGTH && in_content_length(c) && stop > start && stop < end &&
      isdigit((unsigned char)stop[0]) && isdigit((unsigned char)stop[-1])) {
    *status = 413;
    return "the request body is too large (its Content-Length does not fit in 64 bits)";
  }
  if (e == HPE_INVALID_CHUNK_SIZE) return "invalid chunk size";
  return http_errno_description(e);
}

/* Parses data; what is not parsed yet is held. */
static void feed(http_conn_t *c, const char *data, size_t len) {
  if (c->closing || c->close_after_write) return;
  if (c->ws) {
    http__ws_input(c, data, len);
    return;
  }
  if (c->held_waiting || c->held.len) {
    buf_append(&c->held, data, len);
    if (!c->held_waiting) http__schedule_resume(c);
    http__set_reading(c);
    return;
  }
  size_t off = 0;
  while (off < len && !c->closing && !c->close_after_write && !c->held_waiting && !c->ws &&
         c->queued <= c->s->lim.high_water) {
    size_t n = http_parser_execute(&c->p, &settings, data + off, len - off);
    const char *start = data + off;
    off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->p, 0);
      continue;
    }
    if (e != HPE_OK) {
      if (c->closing) return;
      int status = c->error_status ? c->error_status : 400;
      const char *why = parse_error(c, e, start, data + off, data + len, &status);
      if (c->owner_knows) tell_gone(c, why);
      c->owner_knows = 0;
      if (c->resp == RESP_STREAMING) {
        http__conn_close(c, "a malformed request body");
      } else {
        c->resp = c->resp == RESP_DONE ? RESP_DONE : RESP_NONE;
        http__fail(c, status, status == 400 || !c->error_status ? why : http_status_text(status));
      }
      return;
    }
    if (c->p.upgrade) {
      /* A refused handshake was answered during the parse, and the connection ends with it. */
      if (c->ws)
        http__ws_input(c, data + off, len - off);
      else if (!c->closing && !c->close_after_write)
        http__fail(c, 400, "an upgrade this server does not do");
      return;
    }
    if (n == 0) break;
  }
  if (off < len && !c->closing && !c->close_after_write && !c->ws) {
    buf_append(&c->held, data + off, len - off);
    http__set_reading(c);
  }
}

/* ---- accepting ------------------------------------------------------------------------- */

/* A connection with a fresh id (a generation and a free slot), linked into the server; NULL when
 * out of memory or of slots. */
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

/* A client connected: its handles, its peer's address, and the clock for its first head. */
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
    http__conn_close(c, "accept failed");
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
  http__arm(c, TIMER_HEADER, s->lim.header_timeout);
  http__set_reading(c);
}

/* ---- the server ------------------------------------------------------------------------ */

/* The parser's callbacks, set once for every server. */
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

/* Frees the server (its connections freed, its handles closed). */
static void server_free(http_server_t *s) {
  http__static_free(s);
  free(s->slots);
  free(s->free_slots);
  free(s);
}

/* Whether nothing of the server is in use any longer. */
static int released(http_server_t *s) {
  return s->shutting == 2 && s->live == 0 && !s->tcp_open && !s->idle_open;
}

/* Frees the server if it was closed and nothing of it is in use any longer. */
static void server_maybe_free(http_server_t *s) {
  if (released(s)) server_free(s);
}

/* The listener or the idle handle closed. */
static void server_handle_closed(uv_handle_t *h) {
  http_server_t *s = h->data;
  if (h == (uv_handle_t *)&s->tcp)
    s->tcp_open = 0;
  else
    s->idle_open = 0;
  server_maybe_free(s);
}

/* The host shuts down (host_handle_t's on_shutdown): every connection closes now. */
static void server_shutdown(host_handle_t *owner) {
  http_shutdown((http_server_t *)owner, 1);
}

/* The host shuts down while a connection is open: every connection of its server closes now. */
static void conn_shutdown(host_handle_t *owner) {
  http_conn_t *c = (http_conn_t *)owner;
  http_shutdown(c->s, 1);
}

/* Binds and listens on ip (v4 or v6) and port (http.h); 0, or an error that err explains. */
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

/* The bound port (http.h). */
int http_port(const http_server_t *s) {
  return s->port;
}

/* Stops accepting and closes idle connections (http.h). An open exchange ends first unless now: a
 * held handshake is refused 503, a WebSocket closed 1001, a kept-alive connection closed after its
 * answer. */
void http_shutdown(http_server_t *s, int now) {
  if (s->shutting == 0) s->shutting = 1;
  if (s->tcp_open && !s->test && !uv_is_closing((uv_handle_t *)&s->tcp)) {
    uv_close((uv_handle_t *)&s->tcp, server_handle_closed);
  }
  for (http_conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (now || !c->in_message) {
      http__conn_close(c, "the server is shutting down");
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

/* Shuts down now and frees the server once its handles have closed (http.h). */
void http_close(http_server_t *s) {
  http_shutdown(s, 1);
  s->shutting = 2;
  if (s->idle_open && !s->test && !uv_is_closing((uv_handle_t *)&s->idle)) {
    uv_close((uv_handle_t *)&s->idle, server_handle_closed);
  }
  server_maybe_free(s);
}

/* A copy of the counters (http.h). */
void http_stats(const http_server_t *s, http_stats_t *out) {
  *out = s->st;
}

/* The connection's id, unique for the server's life (http.h). */
uint64_t http_conn_id(const http_conn_t *c) {
  return c->id;
}

/* The open connection with this id, or NULL once it has closed (its slot reused or empty). */
http_conn_t *http_find(const http_server_t *s, uint64_t id) {
  uint32_t slot = (uint32_t)(id & 0xffffff);
  if (slot >= s->nslots) return NULL;
  http_conn_t *c = s->slots[slot];
  return c && c->id == id ? c : NULL;
}

/* The client's "ip:port" (empty without a socket). */
const char *http_conn_peer(const http_conn_t *c) {
  return c->peer;
}

/* The owner's pointer for this connection (http.h). */
void http_conn_set_data(http_conn_t *c, void *data) {
  c->data = data;
}

/* The owner's pointer, NULL until set. */
void *http_conn_data(const http_conn_t *c) {
  return c->data;
}

/* ---- without sockets (the fuzz target) ------------------------------------------------- */

/* A server without sockets, timers or a loop, for the fuzz target (http.h). */
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

/* Frees a server made by http_test_server (the caller has freed its connections). */
void http_test_server_free(http_server_t *s) {
  server_free(s);
}

/* A connection without a socket: what it writes is counted and dropped. */
http_conn_t *http_test_conn(http_server_t *s) {
  http_conn_t *c = conn_new(s);
  if (c) c->test = 1;
  return c;
}

/* Feeds bytes as one read, then resumes held input as the idle callback would. */
void http_test_feed(http_conn_t *c, const char *data, size_t len) {
  feed(c, data, len);
  /* What the idle callback would resume. */
  while (!c->closing && c->in_ready) {
    ready_remove(c->s, c);
    resume(c);
  }
}

/* Closes and frees a connection made by http_test_conn. */
void http_test_free(http_conn_t *c) {
  http__conn_close(c, "done");
  conn_free(c);
}
