/* The HTTP/1.1 server: connections, requests parsed by http-parser, responses (fixed, chunked
 * streams), JSON-lines request bodies split into lines, WebSocket (wslay) and static files. It
 * knows no Lua: what to do with a request is decided by the events' owner (bindings/http.c). */
#ifndef ATOLL_HTTP_H
#define ATOLL_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "loop.h"

typedef struct http_server_s http_server_t;
typedef struct http_conn_s http_conn_t;

/* How a request's body is read, chosen when its head is complete. */
enum {
  HTTP_BODY_BUFFER = 1,    /* whole, up to max_body bytes, delivered once with on_body */
  HTTP_BODY_LINES = 2,     /* split on \n as it arrives (\r\n too), lines up to max_line bytes */
  HTTP_BODY_WEBSOCKET = 3, /* a WebSocket handshake: checked, its 101 held (http_ws_accept) */
};

typedef struct http_request_s {
  const char *method;
  const char *target;  /* as sent: path and query */
  const char *headers; /* nheaders pairs of NUL-terminated strings: lower-case name, value */
  size_t nheaders;
  int64_t content_length; /* -1 when not given */
  int chunked, upgrade, keep_alive, http_minor;
} http_request_t;

typedef struct http_events_s {
  /* A request's head is complete. Returns an HTTP_BODY_* mode, or a status >= 400 that the
   * server answers at once (and closes after). The owner may respond from inside. */
  int (*on_request)(void *ud, http_conn_t *c, const http_request_t *req);
  /* HTTP_BODY_BUFFER: the whole body, once, before on_end. */
  void (*on_body)(void *ud, http_conn_t *c, const char *data, size_t len);
  /* HTTP_BODY_LINES: lines received in one read (without their \r\n). A line longer than
   * max_line arrives as len == SIZE_MAX, data NULL: the server dropped it. */
  void (*on_lines)(void *ud, http_conn_t *c, const char *const *lines, const size_t *lens,
                   size_t n);
  /* The request body is complete. */
  void (*on_end)(void *ud, http_conn_t *c);
  /* A whole WebSocket text message (valid UTF-8; binary messages close the connection). */
  void (*on_ws_message)(void *ud, http_conn_t *c, const char *data, size_t len);
  /* Bytes queued for the client fell below the low-water mark after http_want_drain. */
  void (*on_drain)(void *ud, http_conn_t *c);
  /* The exchange ended before its response did, or the connection closed while a stream or a
   * WebSocket was open: the owner stops writing to it. Never called twice for a request. */
  void (*on_gone)(void *ud, http_conn_t *c, const char *why);
} http_events_t;

typedef struct http_limits_s {
  size_t max_header; /* request line and headers, bytes (431 past it; 414 for the line) */
  size_t max_body;   /* a buffered body (413 past it) */
  size_t max_line;   /* a line of a lines body */
  size_t max_ws_message;
  double header_timeout; /* seconds to send a request's head (408) */
  double idle_timeout;   /* seconds a kept-alive connection may sit idle between requests */
  size_t high_water;     /* http_queued() above this: writers should wait for on_drain */
} http_limits_t;

void http_default_limits(http_limits_t *l);

/* Starts listening; 0 or a libuv error (err says what). */
int http_listen(http_server_t **out, host_t *h, const char *ip, int port,
                const http_limits_t *limits, const http_events_t *events, void *ud, char *err,
                size_t errlen);
/* The bound port (useful with port 0). */
int http_port(const http_server_t *s);
/* Serves files under dir for GET and HEAD requests under prefix (which ends with '/'), tried
 * before the events' owner is asked. */
int http_static(http_server_t *s, const char *prefix, const char *dir);
/* Stops accepting, closes idle connections, and closes the rest once their exchange ends (or
 * at once with `now`); on_gone is called for each open stream. */
void http_shutdown(http_server_t *s, int now);
/* Frees the server once every connection has closed (after http_shutdown). */
void http_close(http_server_t *s);

/* Counters for /metrics. */
typedef struct http_stats_s {
  uint64_t connections_total, requests_total, bytes_in, bytes_out, errors_total;
  uint64_t by_status[6]; /* 1xx..5xx at [1]..[5] */
  uint64_t open_connections, open_streams, open_websockets;
} http_stats_t;
void http_stats(const http_server_t *s, http_stats_t *out);

/* Responses. Headers are preformatted "Name: value\r\n" lines (the server adds Content-Length
 * or Transfer-Encoding, Connection and Date). Each returns 0 or an error (the exchange is over,
 * or the connection gone). */
int http_respond(http_conn_t *c, int status, const char *headers, size_t hlen, const char *body,
                 size_t blen);
int http_stream_start(http_conn_t *c, int status, const char *headers, size_t hlen);
int http_stream_write(http_conn_t *c, const char *data, size_t len);
int http_stream_end(http_conn_t *c);
/* A WebSocket handshake that on_request took (HTTP_BODY_WEBSOCKET) is answered 101 here, not
 * before: until then the owner may refuse it with http_respond, any status and body (the
 * connection closes after), and frames the client sends too early wait. Sending, pinging and
 * closing accept it first; accepting twice does nothing. */
int http_ws_accept(http_conn_t *c);
int http_ws_send(http_conn_t *c, const char *data, size_t len); /* a text message */
int http_ws_ping(http_conn_t *c);
int http_ws_close(http_conn_t *c, uint16_t code, const char *reason);
/* Bytes written but not yet taken by the client. */
size_t http_queued(const http_conn_t *c);
/* Asks for on_drain once http_queued() falls below half the high-water mark. */
void http_want_drain(http_conn_t *c);
/* Stops or resumes reading the request body (backpressure on a client that sends fast). */
void http_pause(http_conn_t *c, int paused);
/* Closes the connection now. */
void http_abort(http_conn_t *c);

/* A connection's id: unique for the server's life (a generation and a slot), exact in a double. */
uint64_t http_conn_id(const http_conn_t *c);
/* The open connection with this id, or NULL. */
http_conn_t *http_find(const http_server_t *s, uint64_t id);
/* The client's address, "ip:port". */
const char *http_conn_peer(const http_conn_t *c);
void http_conn_set_data(http_conn_t *c, void *data);
void *http_conn_data(const http_conn_t *c);

/* Feeds bytes to a connection without a socket: for the fuzz target. Responses go nowhere. */
http_conn_t *http_test_conn(http_server_t *s);
void http_test_feed(http_conn_t *c, const char *data, size_t len);
void http_test_free(http_conn_t *c);
http_server_t *http_test_server(const http_limits_t *limits, const http_events_t *events, void *ud);
void http_test_server_free(http_server_t *s);

const char *http_status_text(int status);

#endif
