/* libFuzzer target for the HTTP server's request path (host/http.c without sockets): the
 * parser, the head and body limits, pipelining, chunked and JSON-lines bodies, streamed and
 * fixed responses, and WebSocket frames after a handshake. The first input byte picks how the
 * rest is cut into reads, so that every state is also met split across reads.
 *
 * The owner's answers depend on the request target: /lines streams the body back line by line,
 * /wsno takes a WebSocket handshake and refuses it with 403 once the request is complete, /ws
 * accepts one then and echoes it, /wslate accepts it only after the next read (frames sent
 * before the 101 wait for it), /later answers only at the end of the body, /refuse refuses with
 * 404, /now answers before the body, anything else echoes the buffered body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/http.h"

static int on_request(void *ud, http_conn_t *c, const http_request_t *r) {
  (void)ud;
  http_conn_set_data(c, NULL);
  if (strncmp(r->target, "/lines", 6) == 0) {
    http_stream_start(c, 200, "Content-Type: application/jsonl\r\n", 33);
    http_conn_set_data(c, (void *)1);
    return HTTP_BODY_LINES;
  }
  if (strncmp(r->target, "/wsno", 5) == 0) {
    http_conn_set_data(c, (void *)3);
    return HTTP_BODY_WEBSOCKET;
  }
  if (strncmp(r->target, "/wslate", 7) == 0) {
    http_conn_set_data(c, (void *)4);
    return HTTP_BODY_WEBSOCKET;
  }
  if (strncmp(r->target, "/ws", 3) == 0) {
    http_conn_set_data(c, (void *)2);
    return HTTP_BODY_WEBSOCKET;
  }
  if (strncmp(r->target, "/refuse", 7) == 0) return 404;
  if (strncmp(r->target, "/now", 4) == 0) http_respond(c, 200, NULL, 0, "now\n", 4);
  return HTTP_BODY_BUFFER;
}

static void on_body(void *ud, http_conn_t *c, const char *data, size_t len) {
  (void)ud;
  http_respond(c, 200, "Content-Type: text/plain\r\n", 26, data, len);
}

static void on_lines(void *ud, http_conn_t *c, const char *const *lines, const size_t *lens,
                     size_t n) {
  (void)ud;
  for (size_t i = 0; i < n; i++) {
    if (lens[i] == SIZE_MAX)
      http_stream_write(c, "{\"error\":\"long\"}\n", 17);
    else
      http_stream_write(c, lines[i], lens[i]);
  }
}

static void on_end(void *ud, http_conn_t *c) {
  (void)ud;
  void *kind = http_conn_data(c);
  if (kind == (void *)1)
    http_stream_end(c);
  else if (kind == (void *)2)
    http_ws_accept(c);
  else if (kind == (void *)3)
    http_respond(c, 403, NULL, 0, "no\n", 3);
}

static void on_ws(void *ud, http_conn_t *c, const char *data, size_t len) {
  (void)ud;
  if (data == NULL) return;
  if (len > 0 && data[0] == 'c')
    http_ws_close(c, 1000, "bye");
  else if (len > 0 && data[0] == 'p')
    http_ws_ping(c);
  else
    http_ws_send(c, data, len);
}

static void on_drain(void *ud, http_conn_t *c) {
  (void)ud;
  (void)c;
}

static void on_gone(void *ud, http_conn_t *c, const char *why) {
  (void)ud;
  (void)c;
  (void)why;
}

static const http_events_t events = {on_request, on_body,  on_lines, on_end,
                                     on_ws,      on_drain, on_gone};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static http_server_t *s;
  if (s == NULL) {
    http_limits_t lim;
    http_default_limits(&lim);
    lim.max_header = 1024;
    lim.max_body = 4096;
    lim.max_line = 256;
    lim.max_ws_message = 1024;
    s = http_test_server(&lim, &events, NULL);
  }
  if (size == 0) return 0;
  size_t step = (size_t)(data[0] % 32) + 1;
  data++;
  size--;
  http_conn_t *c = http_test_conn(s);
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < step ? size - off : step;
    http_test_feed(c, (const char *)data + off, n);
    off += n;
    if (http_conn_data(c) == (void *)4) {
      http_conn_set_data(c, (void *)2);
      http_ws_accept(c);
    }
    step = step * 2 + 1; /* reads grow, as they do on a busy connection */
  }
  http_test_free(c);
  return 0;
}
