/* atoll.tcp: a plain TCP client socket, for tools and tests that speak raw bytes. */
#include <stdlib.h>
#include <string.h>

#include "../host/vm.h"
#include "bindings.h"

#define TCP_MT "atoll.tcp"

typedef struct sock_s {
  host_handle_t base; /* first: shutdown closes the handle through it */
  uv_tcp_t tcp;
  uv_connect_t connect;
  lua_State *L;
  host_t *host;
  int cb_ref;   /* fn(event, data) */
  int self_ref; /* keeps the userdata alive while the socket is open */
  struct sock_s **slot;
  int closing;
} sock_t;

static void emit(sock_t *s, const char *event, const char *data, size_t len) {
  lua_State *L = s->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_ref);
  lua_pushstring(L, event);
  if (data)
    lua_pushlstring(L, data, len);
  else
    lua_pushnil(L);
  vm_pcall(L, 2, 0, "tcp callback");
}

static void on_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  if (!s->host->closing) emit(s, "closed", NULL, 0);
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->cb_ref);
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->self_ref);
  if (s->slot) *s->slot = NULL;
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

/* connect(host, port, fn(event, data)) -> socket | nil, message
 * events: "connected", "data" (bytes), "eof", "error" (message), "closed" */
static int l_connect(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "not an IP address: %s", host);
    return 2;
  }
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "out of memory");
  s->base.on_close = on_closed;
  s->L = h->L; /* callbacks run on the main thread */
  s->host = h;
  uv_tcp_init(&h->loop, &s->tcp);
  s->tcp.data = s;
  lua_pushvalue(L, 3);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sock_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = s;
  s->slot = ud;
  luaL_getmetatable(L, TCP_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->connect.data = s;
  rc = uv_tcp_connect(&s->connect, &s->tcp, (struct sockaddr *)&ss, connect_cb);
  if (rc) {
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  return 1;
}

/* sock:write(bytes) -> true | nil, message */
static int l_write(lua_State *L) {
  sock_t **ud = luaL_checkudata(L, 1, TCP_MT);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  if (*ud == NULL || (*ud)->closing) {
    lua_pushnil(L);
    lua_pushliteral(L, "the socket is closed");
    return 2;
  }
  return binding_write(L, (uv_stream_t *)&(*ud)->tcp, data, n);
}

/* sock:close() */
static int l_close(lua_State *L) {
  sock_t **ud = luaL_checkudata(L, 1, TCP_MT);
  if (*ud) sock_close(*ud);
  return 0;
}

static int l_gc(lua_State *L) {
  sock_t **ud = luaL_checkudata(L, 1, TCP_MT);
  if (*ud) {
    (*ud)->slot = NULL;
    sock_close(*ud);
  }
  return 0;
}

static const luaL_Reg methods[] = {{"write", l_write}, {"close", l_close}, {NULL, NULL}};
static const luaL_Reg fns[] = {{"connect", l_connect}, {NULL, NULL}};

int luaopen_atoll_tcp(lua_State *L) {
  binding_class(L, TCP_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
