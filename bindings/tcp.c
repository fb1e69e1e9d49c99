/* atoll.c.tcp: a plain TCP client socket, for tools and tests that speak raw bytes. */
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/vm.h"
#include "bindings.h"

#define TCP_MT "atoll.c.tcp"

typedef struct sock_s {
  host_handle_t base; /* first: shutdown closes the handle through it */
  binding_handle_t h; /* callback 0: fn(event, data) */
  uv_tcp_t tcp;
  uv_connect_t connect;
  int closing;
} sock_t;

static sock_t *check_sock(lua_State *L) {
  binding_handle_t *bh = binding_handle_check(L, 1, TCP_MT);
  return bh ? BINDING_CONTAINER(bh, sock_t, h) : NULL;
}

static void emit(sock_t *s, const char *event, const char *data, size_t len) {
  if (!binding_handle_callback(&s->h, 0)) return;
  lua_State *L = s->h.L;
  lua_pushstring(L, event);
  if (data)
    lua_pushlstring(L, data, len);
  else
    lua_pushnil(L);
  vm_pcall(L, 2, 0, "tcp callback");
}

static void on_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  emit(s, "closed", NULL, 0);
  binding_handle_release(&s->h);
  free(s);
}

static void sock_close(sock_t *s) {
  s->closing = 1;
  /* The host's shutdown walk may have closed it already. */
  if (!uv_is_closing((uv_handle_t *)&s->tcp)) uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  b->base = malloc(suggested);
  b->len = b->base ? suggested : 0;
}

static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b) {
  sock_t *s = stream->data;
  if (n > 0)
    emit(s, "data", b->base, (size_t)n);
  else if (n == UV_EOF)
    emit(s, "eof", NULL, 0);
  else if (n < 0) {
    const char *msg = uv_strerror((int)n);
    emit(s, "error", msg, strlen(msg));
  }
  free(b->base);
  if (n < 0) uv_read_stop(stream);
}

static void connect_cb(uv_connect_t *req, int status) {
  sock_t *s = req->data;
  if (s->closing || uv_is_closing((uv_handle_t *)&s->tcp)) return;
  if (status < 0) {
    const char *msg = uv_strerror(status);
    emit(s, "error", msg, strlen(msg));
    sock_close(s);
    return;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  emit(s, "connected", NULL, 0);
  if (!s->closing) uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
}

/* connect(host, port, fn(event, data)) -> socket | nil, message, kind
 * events: "connected", "data" (bytes), "eof", "error" (message), "closed" */
static int l_connect(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
  if (rc) return binding_fail(L, atoll_err_name(rc), "not an IP address: %s", host);
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "out of memory");
  s->base.on_close = on_closed;
  binding_handle_init(&s->h, h);
  binding_handle_set_callback(L, &s->h, 0, 3);
  binding_handle_new(L, &s->h, TCP_MT);
  uv_tcp_init(&h->loop, &s->tcp);
  s->tcp.data = s;
  s->connect.data = s;
  rc = uv_tcp_connect(&s->connect, &s->tcp, (struct sockaddr *)&ss, connect_cb);
  if (rc) {
    sock_close(s);
    return binding_result(L, rc);
  }
  return 1;
}

/* sock:write(bytes) -> true | nil, message, kind */
static int l_write(lua_State *L) {
  sock_t *s = check_sock(L);
  size_t n;
  const char *data = binding_check_bytes(L, 2, &n);
  if (s == NULL || s->closing) return binding_fail(L, "ENOTCONN", "the socket is closed");
  return binding_write(L, (uv_stream_t *)&s->tcp, data, n);
}

/* sock:close() */
static int l_close(lua_State *L) {
  sock_t *s = check_sock(L);
  if (s) sock_close(s);
  return 0;
}

static int l_gc(lua_State *L) {
  binding_handle_t *bh = binding_handle_gc(L, 1, TCP_MT);
  if (bh && !bh->host->closing) sock_close(BINDING_CONTAINER(bh, sock_t, h));
  return 0;
}

static const luaL_Reg methods[] = {{"write", l_write}, {"close", l_close}, {NULL, NULL}};
static const luaL_Reg fns[] = {{"connect", l_connect}, {NULL, NULL}};

int luaopen_atoll_c_tcp(lua_State *L) {
  binding_class(L, TCP_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
