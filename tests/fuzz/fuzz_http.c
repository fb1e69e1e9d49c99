/* libFuzzer target for the HTTP server without sockets (host/http.c, http_static.c, http_ws.c):
 * the parser, the head and body limits, pipelining, chunked and JSON-lines bodies, streamed and
 * fixed responses, static files, and WebSocket frames after a handshake.
 *
 * One input is one connection, laid out as
 *
 *   [cut: 1 byte] [plan: PLAN bytes] [what the client sends]
 *
 * cut: how the client's bytes are cut into reads (the first read is cut % 32 + 1 bytes, and each
 * read is twice the last plus one), so that every state is also met split across reads.
 *
 * plan: what the application does, which is the one seam between the input and the owner's side
 * of http_events_t. The n-th request that reaches the application (static files are answered
 * before it is asked) gets the answer plan[n % PLAN] % ANSWERS, one of answer_t below. A
 * WebSocket text message is answered by its own first byte: 'c' closes, 'p' pings, anything else
 * is echoed. The target is otherwise the same for every input: one events table, no request
 * treated apart by its path.
 *
 * The server serves a directory the target makes at start (mount_files) under /static/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../host/http.h"

#define PLAN 4

/* What the application does with a request. */
typedef enum {
  ANSWER_ECHO,      /* buffers the body and answers it whole once it is read */
  ANSWER_NOW,       /* answers from on_request, before the body (which is then not read) */
  ANSWER_REFUSE,    /* refuses from on_request (404), the server answering */
  ANSWER_LINES,     /* streams a JSON-lines body back line by line, ends the stream at on_end */
  ANSWER_WS,        /* takes a WebSocket handshake and accepts it at on_end */
  ANSWER_WS_REFUSE, /* takes a WebSocket handshake and refuses it (403) at on_end */
  ANSWER_WS_LATE,   /* takes a WebSocket handshake and accepts it after the read that brought it:
                     * frames the client sent early wait for the 101 */
  ANSWER_LATE,      /* reads the body, and answers only after the read that ended it: requests
                     * pipelined behind it wait */
  ANSWERS
} answer_t;

/* The application's state for the one connection of an input (the connection's data). */
typedef struct app_s {
  const uint8_t *plan;
  size_t requests;   /* requests the application has been asked about */
  answer_t answer;   /* the current request's */
  answer_t deferred; /* ANSWER_WS_LATE or ANSWER_LATE while its action waits for a read; else 0 */
} app_t;

static int on_request(void *ud, http_conn_t *c, const http_request_t *r) {
  (void)ud;
  (void)r;
  app_t *a = http_conn_data(c);
  a->answer = (answer_t)(a->plan[a->requests++ % PLAN] % ANSWERS);
  switch (a->answer) {
    case ANSWER_NOW:
      http_respond(c, 200, NULL, 0, "now\n", 4);
      return HTTP_BODY_BUFFER;
    case ANSWER_REFUSE:
      return 404;
    case ANSWER_LINES:
      http_stream_start(c, 200, "Content-Type: application/jsonl\r\n", 33);
      return HTTP_BODY_LINES;
    case ANSWER_WS_LATE:
      a->deferred = ANSWER_WS_LATE;
      return HTTP_BODY_WEBSOCKET;
    case ANSWER_WS:
    case ANSWER_WS_REFUSE:
      return HTTP_BODY_WEBSOCKET;
    default:
      return HTTP_BODY_BUFFER;
  }
}

static void on_body(void *ud, http_conn_t *c, const char *data, size_t len) {
  (void)ud;
  app_t *a = http_conn_data(c);
  if (a->answer != ANSWER_LATE) http_respond(c, 200, "Content-Type: text/plain\r\n", 26, data, len);
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
  app_t *a = http_conn_data(c);
  if (a->answer == ANSWER_LINES)
    http_stream_end(c);
  else if (a->answer == ANSWER_WS)
    http_ws_accept(c);
  else if (a->answer == ANSWER_WS_REFUSE)
    http_respond(c, 403, NULL, 0, "no\n", 3);
  else if (a->answer == ANSWER_LATE)
    a->deferred = ANSWER_LATE;
}

static void on_ws(void *ud, http_conn_t *c, const char *data, size_t len) {
  (void)ud;
  if (data == NULL) return; /* a ping or a pong */
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
  (void)why;
  app_t *a = http_conn_data(c);
  a->deferred = 0; /* an owner stops writing to an exchange that is gone */
}

static const http_events_t events = {on_request, on_body,  on_lines, on_end,
                                     on_ws,      on_drain, on_gone};

/* Does what a deferred answer waited for; 1 if there was one. */
static int app_act(http_conn_t *c) {
  app_t *a = http_conn_data(c);
  answer_t deferred = a->deferred;
  a->deferred = 0;
  if (deferred == ANSWER_WS_LATE) {
    http_ws_accept(c);
  } else if (deferred == ANSWER_LATE) {
    http_respond(c, 200, "Content-Type: text/plain\r\n", 26, "late\n", 5);
  }
  return deferred != 0;
}

static char files[64]; /* the directory served under /static/ */

static void remove_files(void) {
  static const char *const names[] = {"index.html",  "app.js",         "empty.txt", ".hidden",
                                      "sub/a b.css", "sub/index.html", "sub"};
  char path[128];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", files, names[i]);
    remove(path);
  }
  rmdir(files);
}

static void put_file(const char *name, const char *text) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", files, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL) abort();
  fputs(text, f);
  fclose(f);
}

/* Makes the directory served under /static/: an index, files of a few types, an empty one, a
 * hidden one (never served), and a subdirectory with its own index. */
static void mount_files(http_server_t *s) {
  snprintf(files, sizeof files, "/tmp/atoll-fuzz-http.XXXXXX");
  if (mkdtemp(files) == NULL) abort();
  char sub[96];
  snprintf(sub, sizeof sub, "%s/sub", files);
  if (mkdir(sub, 0755) != 0) abort();
  atexit(remove_files);
  put_file("index.html", "<!doctype html><p>hello</p>\n");
  put_file("app.js", "console.log('hello');\n");
  put_file("empty.txt", "");
  put_file(".hidden", "secret\n");
  put_file("sub/a b.css", "p { color: red }\n");
  put_file("sub/index.html", "<p>sub</p>\n");
  if (http_static(s, "/static/", files) != 0) abort();
}

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
    mount_files(s);
  }
  if (size < 1 + PLAN) return 0;
  size_t step = (size_t)(data[0] % 32) + 1;
  app_t app = {.plan = data + 1};
  data += 1 + PLAN;
  size -= 1 + PLAN;
  http_conn_t *c = http_test_conn(s);
  http_conn_set_data(c, &app);
  for (size_t off = 0; off < size;) {
    size_t n = size - off < step ? size - off : step;
    http_test_feed(c, (const char *)data + off, n);
    off += n;
    app_act(c);
    step = step * 2 + 1; /* reads grow, as they do on a busy connection */
  }
  /* Once the client has sent everything, deferred answers are still given, and what waited
   * behind them is parsed (an empty read resumes held input, as the loop's idle turn would). */
  while (app_act(c)) http_test_feed(c, "", 0);
  http_test_free(c);
  return 0;
}
