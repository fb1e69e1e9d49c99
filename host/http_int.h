/* What the HTTP server's three files share, and nothing outside them sees: the connection and
 * server structs, and the few functions one file calls in another. http.c is the HTTP/1.1 core
 * (connections, parsing, pipelining, responses, limits, timeouts), http_static.c serves files,
 * http_ws.c speaks WebSocket. Names here are http__ (libuv's uv__): internal, not the API. */
#ifndef ATOLL_HTTP_INT_H
#define ATOLL_HTTP_INT_H

#include <http_parser.h>
#include <sys/types.h>
#include <time.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "http.h"

#define STATIC_CACHE 128 /* slots of the small-file cache, one file each */

/* Where the answer to the current request is (c->resp). */
enum { RESP_NONE = 0, RESP_STREAMING = 1, RESP_DONE = 2 };
/* What the connection's one timer is counting (c->timer_kind). */
enum { TIMER_OFF, TIMER_HEADER, TIMER_BODY, TIMER_IDLE };

/* A directory served under a prefix (http_static). */
typedef struct mount_s {
  char *prefix, *dir;
  size_t plen;
} mount_t;

/* A small file's bytes, valid while a stat of its path still matches. */
typedef struct cached_s {
  char *path;
  char *data;
  size_t len;
  time_t mtime;
  off_t size;
  ino_t ino;
} cached_t;

/* A client connection: its handles, the request being parsed, the answer being made, and, after
 * a handshake, its WebSocket. */
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

  /* WebSocket (http_ws.c); ws is NULL for plain HTTP. */
  wslay_event_context_ptr ws;
  int ws_held;        /* a valid handshake whose 101 waits for the owner (or a refusal) */
  int ws_head_unsent; /* accepted: the 101 goes with the next bytes written */
  char ws_accept_key[32];
  const char *ws_in;
  size_t ws_in_len;
};

/* A listening server (or, for the fuzz target, one without sockets), its connections and its
 * mounts. */
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
  mount_t *mounts; /* static files (http_static.c) */
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

/* ---- the core (http.c) ----------------------------------------------------------------- */

/* Writes bufs to the client, at once if the socket takes them, else queued; closes the
 * connection on failure. 0 or a libuv error (UV_EPIPE once closing). */
int http__conn_write(http_conn_t *c, uv_buf_t *bufs, int n);
/* Closes the connection (once), telling the owner if an exchange was open; why NULL means a
 * plain close. */
void http__conn_close(http_conn_t *c, const char *why);
/* Starts the connection's one timer as TIMER_*, or stops it (TIMER_OFF, or seconds <= 0). */
void http__arm(http_conn_t *c, int kind, double seconds);
/* Starts or stops reading, as pauses, queued answers and held input allow. */
void http__set_reading(http_conn_t *c);
/* Has held input parsed on the next turn of the loop (in the fuzz target: the next feed). */
void http__schedule_resume(http_conn_t *c);
/* An error the server answers itself, unless an answer has begun; the connection closes after
 * it either way. */
void http__fail(http_conn_t *c, int status, const char *why);
/* A request header's value by lower-case name, or NULL. */
const char *http__header(const http_request_t *r, const char *name);

/* ---- static files (http_static.c) ------------------------------------------------------ */

/* Answers a GET or HEAD request for a file under a mount: 1 if it answered (the file, or an
 * error), 0 if no file is there and the owner should be asked. */
int http__static_serve(http_conn_t *c, const char *method, const char *target);
/* Frees the mounts and the file cache (the server itself is the caller's). */
void http__static_free(http_server_t *s);

/* ---- WebSocket (http_ws.c) ------------------------------------------------------------- */

/* Checks the handshake of RFC 6455 section 4.2 and readies the connection for frames, its 101
 * held for http_ws_accept. 0, or a status to answer with (426: a version we do not speak). */
int http__ws_handshake(http_conn_t *c, const http_request_t *r);
/* Bytes the parser did not take after a handshake: frames, or held until the 101 is sent. */
void http__ws_input(http_conn_t *c, const char *data, size_t len);
/* Drops a held handshake that the owner refuses (with an ordinary response): the connection
 * is plain HTTP again, and closes after that response. */
void http__ws_refuse(http_conn_t *c);
/* Frees the connection's WebSocket context, if any. */
void http__ws_free(http_conn_t *c);

#endif
