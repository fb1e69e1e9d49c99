/* WebSocket for the HTTP server (RFC 6455 on wslay): the handshake checked and its 101 held until
 * the owner accepts (http_ws_accept) or refuses with an ordinary response; frames read through
 * wslay from the bytes the core hands over, text messages checked as UTF-8, pings and close codes.
 * The core owns the connection; this file only frames its bytes. */
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_int.h"
#include "utf8.h"

/* wslay reads from the bytes ws_feed lends it (c->ws_in), and would block when they are used. */
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
  return n ? http__conn_write(c, bufs, (int)n) : 0;
}

/* wslay writes through ws_write, so that the 101 goes first. */
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

/* A whole message: text goes to the owner, binary closes (1003), pings and pongs are a sign of
 * life the owner hears as an empty message (data NULL). */
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

/* Sends what wslay queued; closes the connection once both sides have closed or it failed. */
static void ws_pump(http_conn_t *c) {
  if (c->closing || c->ws == NULL || c->ws_held) return;
  if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) {
    http__conn_close(c, "the WebSocket failed");
    return;
  }
  if (c->closing) return;
  if (!wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)) {
    http__conn_close(c, wslay_event_get_close_received(c->ws) ? "closed by the client" : "closed");
  }
}

/* Reads frames from bytes the client sent (after the 101), then sends what they call for. */
static void ws_feed(http_conn_t *c, const char *data, size_t len) {
  if (c->closing || c->ws == NULL) return;
  c->ws_in = data;
  c->ws_in_len = len;
  int rc = wslay_event_recv(c->ws);
  c->ws_in_len = 0;
  if (rc != 0) {
    http__conn_close(c, "a bad WebSocket frame");
    return;
  }
  ws_pump(c);
}

/* Bytes after a WebSocket handshake. A client must not send before the 101 (RFC 6455, 4.1): what
 * one sends anyway waits with it, and what follows, in order. */
void http__ws_input(http_conn_t *c, const char *data, size_t len) {
  if (c->ws_held || c->held.len) {
    buf_append(&c->held, data, len);
    http__schedule_resume(c);
    http__set_reading(c);
    return;
  }
  ws_feed(c, data, len);
}
/* Whether a comma-separated header value holds token (any case). */
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
int http__ws_handshake(http_conn_t *c, const http_request_t *r) {
  const char *key = http__header(r, "sec-websocket-key");
  const char *version = http__header(r, "sec-websocket-version");
  if (strcmp(r->method, "GET") != 0 || !r->upgrade ||
      !has_token(http__header(r, "upgrade"), "websocket") ||
      !has_token(http__header(r, "connection"), "upgrade") || key == NULL || strlen(key) != 24) {
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
  http__arm(c, TIMER_OFF, 0);
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
  http__schedule_resume(c); /* frames the client sent too early */
}

/* See http.h: answers a held handshake 101 (once). */
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

/* See http.h: a text message. */
int http_ws_send(http_conn_t *c, const char *data, size_t len) {
  struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
  return ws_queue(c, &m);
}

/* See http.h: a ping; the pong arrives as on_ws_message with data NULL. */
int http_ws_ping(http_conn_t *c) {
  struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
  return ws_queue(c, &m);
}

/* See http.h: a close frame with code and reason (cut to 123 bytes); the connection closes when
 * the client answers it, or after 5 s. The owner is not told (on_gone): it asked. */
int http_ws_close(http_conn_t *c, uint16_t code, const char *reason) {
  if (c->closing || c->ws == NULL) return UV_EPIPE;
  ws_open(c);
  c->gone_sent = 1;    /* the owner closes it: it needs no telling */
  c->owner_paused = 0; /* the client's close frame must be read */
  http__set_reading(c);
  http__arm(c, TIMER_IDLE, 5); /* and if it never comes, the connection closes anyway */
  size_t rl = reason ? strlen(reason) : 0;
  if (rl > 123) rl = 123;
  wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rl);
  ws_pump(c);
  return ws_write(c, NULL, 0); /* the 101, had the close not gone */
}

/* See http_int.h. */
void http__ws_refuse(http_conn_t *c) {
  if (c->ws == NULL || !c->ws_held) return;
  /* No 101 went, so the owner's response is the handshake's answer. The parser stopped at the
   * upgrade, so the connection ends with it. No frame was read (http__ws_input holds them), so
   * the context is not in use. */
  wslay_event_context_free(c->ws);
  c->ws = NULL;
  c->ws_held = 0;
  c->keep_alive = 0;
}

/* See http_int.h. */
void http__ws_free(http_conn_t *c) {
  if (c->ws) wslay_event_context_free(c->ws);
  c->ws = NULL;
}
