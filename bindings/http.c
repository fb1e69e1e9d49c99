/* atoll.c.http: the HTTP server (host/http.c) for lib/atoll/http.lua. Connections are named by
 * numeric ids; every event reaches one Lua handler:
 *   handler("request", id, method, target, headers, peer) -> "buffer" | "lines" | "websocket" |
 * status handler("body", id, bytes)     handler("lines", id, { line | false, ... }) handler("end",
 * id) handler("ws", id, text | nil)  handler("drain", id)   handler("gone", id, why) */
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/http.h"
#include "../host/utf8.h"
#include "../host/vm.h"
#include "bindings.h"

#define HTTP_MT "atoll.c.http.server"

/* The server as Lua holds it: anchored while it listens, released when closed. */
typedef struct lhttp_s {
  binding_handle_t h; /* callback 0: the handler */
  http_server_t *s;
  lua_State *L;
} lhttp_t;

static int push_handler(lhttp_t *h, const char *kind, http_conn_t *c) {
  if (!binding_handle_callback(&h->h, 0)) return 0;
  lua_State *L = h->L;
  lua_pushstring(L, kind);
  lua_pushnumber(L, (lua_Number)http_conn_id(c));
  return 1;
}

static int ev_request(void *ud, http_conn_t *c, const http_request_t *r) {
  lhttp_t *h = ud;
  if (!push_handler(h, "request", c)) return 503;
  lua_State *L = h->L;
  lua_pushstring(L, r->method);
  lua_pushstring(L, r->target);
  lua_createtable(L, 0, (int)r->nheaders);
  const char *p = r->headers;
  for (size_t i = 0; i < r->nheaders; i++) {
    const char *v = p + strlen(p) + 1;
    lua_getfield(L, -1, p);
    if (lua_isstring(L, -1)) {
      /* A repeated header: its values joined, as RFC 9110 allows for lists. */
      lua_pushliteral(L, ", ");
      lua_pushstring(L, v);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, v);
    }
    lua_setfield(L, -2, p);
    p = v + strlen(v) + 1;
  }
  lua_pushstring(L, http_conn_peer(c));
  if (vm_pcall(L, 6, 1, "http request handler") != 0) return 500;
  int mode = 500;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    mode = (int)lua_tointeger(L, -1);
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *m = lua_tostring(L, -1);
    if (strcmp(m, "buffer") == 0)
      mode = HTTP_BODY_BUFFER;
    else if (strcmp(m, "lines") == 0)
      mode = HTTP_BODY_LINES;
    else if (strcmp(m, "websocket") == 0)
      mode = HTTP_BODY_WEBSOCKET;
  }
  lua_pop(L, 1);
  return mode;
}

static void ev_body(void *ud, http_conn_t *c, const char *data, size_t len) {
  lhttp_t *h = ud;
  if (!push_handler(h, "body", c)) return;
  lua_pushlstring(h->L, data ? data : "", len);
  vm_pcall(h->L, 3, 0, "http body handler");
}

static void ev_lines(void *ud, http_conn_t *c, const char *const *lines, const size_t *lens,
                     size_t n) {
  lhttp_t *h = ud;
  if (!push_handler(h, "lines", c)) return;
  lua_State *L = h->L;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    if (lens[i] == SIZE_MAX)
      lua_pushboolean(L, 0);
    else
      lua_pushlstring(L, lines[i], lens[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  vm_pcall(L, 3, 0, "http lines handler");
}

static void ev_end(void *ud, http_conn_t *c) {
  lhttp_t *h = ud;
  if (!push_handler(h, "end", c)) return;
  vm_pcall(h->L, 2, 0, "http end handler");
}

static void ev_ws(void *ud, http_conn_t *c, const char *data, size_t len) {
  lhttp_t *h = ud;
  if (!push_handler(h, "ws", c)) return;
  if (data)
    lua_pushlstring(h->L, data, len);
  else
    lua_pushnil(h->L);
  vm_pcall(h->L, 3, 0, "http websocket handler");
}

static void ev_drain(void *ud, http_conn_t *c) {
  lhttp_t *h = ud;
  if (!push_handler(h, "drain", c)) return;
  vm_pcall(h->L, 2, 0, "http drain handler");
}

static void ev_gone(void *ud, http_conn_t *c, const char *why) {
  lhttp_t *h = ud;
  if (!push_handler(h, "gone", c)) return;
  lua_pushstring(h->L, why ? why : "closed");
  vm_pcall(h->L, 3, 0, "http gone handler");
}

static const http_events_t events = {ev_request, ev_body,  ev_lines, ev_end,
                                     ev_ws,      ev_drain, ev_gone};

static lhttp_t *check(lua_State *L) {
  binding_handle_t *bh = binding_handle_check(L, 1, HTTP_MT);
  if (bh == NULL) luaL_error(L, "the HTTP server is closed");
  return BINDING_CONTAINER(bh, lhttp_t, h);
}

/* A size limit from the options (argument 3). */
static size_t opt_size(lua_State *L, const char *name, size_t def, double lo) {
  return (size_t)binding_opt_number(L, 3, "listen", name, (double)def, lo, 1099511627776.0);
}

/* listen(ip, port, limits, handler) -> server | nil, message, kind */
static int l_listen(lua_State *L) {
  host_t *host = BINDING_HOST(L);
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  http_limits_t lim;
  http_default_limits(&lim);
  lim.max_header = opt_size(L, "max_header", lim.max_header, 64);
  lim.max_body = opt_size(L, "max_body", lim.max_body, 0);
  lim.max_line = opt_size(L, "max_line", lim.max_line, 1);
  lim.max_ws_message = opt_size(L, "max_ws_message", lim.max_ws_message, 1);
  lim.header_timeout =
      binding_opt_number(L, 3, "listen", "header_timeout", lim.header_timeout, 0.001, 86400);
  lim.idle_timeout =
      binding_opt_number(L, 3, "listen", "idle_timeout", lim.idle_timeout, 0.001, 86400);
  lim.high_water = opt_size(L, "high_water", lim.high_water, 1);
  lhttp_t *h = calloc(1, sizeof *h);
  if (h == NULL) return luaL_error(L, "out of memory");
  binding_handle_init(&h->h, host);
  h->L = host->L;
  char err[256];
  int rc = http_listen(&h->s, host, ip, port, &lim, &events, h, err, sizeof err);
  if (rc) {
    free(h);
    return binding_fail(L, atoll_err_name(rc), "%s", err);
  }
  binding_handle_set_callback(L, &h->h, 0, 4);
  binding_handle_new(L, &h->h, HTTP_MT);
  return 1;
}

static http_conn_t *conn_arg(lua_State *L, lhttp_t *h) {
  return http_find(h->s, (uint64_t)luaL_checknumber(L, 2));
}

static int gone(lua_State *L) {
  return binding_fail(L, "ENOTCONN", "the connection is gone");
}

static int result(lua_State *L, int rc) {
  return binding_result(L, rc);
}

/* srv:respond(id, status, headers, body) -> true | nil, message */
static int l_respond(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  int status = (int)luaL_checkinteger(L, 3);
  size_t hl = 0, bl = 0;
  const char *hd = luaL_optlstring(L, 4, "", &hl);
  const char *body = luaL_optlstring(L, 5, "", &bl);
  if (c == NULL) return gone(L);
  return result(L, http_respond(c, status, hd, hl, body, bl));
}

/* srv:stream_start(id, status, headers) -> true | nil, message */
static int l_stream_start(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  int status = (int)luaL_checkinteger(L, 3);
  size_t hl = 0;
  const char *hd = luaL_optlstring(L, 4, "", &hl);
  if (c == NULL) return gone(L);
  return result(L, http_stream_start(c, status, hd, hl));
}

/* srv:stream_write(id, bytes) -> bytes queued | nil, message */
static int l_stream_write(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  size_t n;
  const char *data = luaL_checklstring(L, 3, &n);
  if (c == NULL) return gone(L);
  int rc = http_stream_write(c, data, n);
  if (rc) return result(L, rc);
  lua_pushnumber(L, (lua_Number)http_queued(c));
  return 1;
}

static int l_stream_end(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c == NULL) return gone(L);
  return result(L, http_stream_end(c));
}

/* srv:ws_accept(id) -> true | nil, message: the 101 of a WebSocket handshake the handler did
 * not refuse (sending accepts too) */
static int l_ws_accept(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c == NULL) return gone(L);
  return result(L, http_ws_accept(c));
}

/* srv:ws_send(id, text) -> bytes queued | nil, message */
static int l_ws_send(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  size_t n;
  const char *data = luaL_checklstring(L, 3, &n);
  if (c == NULL) return gone(L);
  int rc = http_ws_send(c, data, n);
  if (rc) return result(L, rc);
  lua_pushnumber(L, (lua_Number)http_queued(c));
  return 1;
}

static int l_ws_ping(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c == NULL) return gone(L);
  return result(L, http_ws_ping(c));
}

static int l_ws_close(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  int code = (int)luaL_optinteger(L, 3, 1000);
  const char *reason = luaL_optstring(L, 4, "");
  if (c == NULL) return gone(L);
  return result(L, http_ws_close(c, (uint16_t)code, reason));
}

/* srv:want_drain(id): a "drain" event once the client has taken enough */
static int l_want_drain(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c) http_want_drain(c);
  return 0;
}

static int l_pause(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c) http_pause(c, lua_toboolean(L, 3));
  return 0;
}

static int l_abort(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c) http_abort(c);
  return 0;
}

/* srv:queued(id) -> bytes not yet taken by the client | nil */
static int l_queued(lua_State *L) {
  lhttp_t *h = check(L);
  http_conn_t *c = conn_arg(L, h);
  if (c == NULL) return 0;
  lua_pushnumber(L, (lua_Number)http_queued(c));
  return 1;
}

/* srv:static(prefix, dir) -> true | nil, message */
static int l_static(lua_State *L) {
  lhttp_t *h = check(L);
  return result(L, http_static(h->s, luaL_checkstring(L, 2), luaL_checkstring(L, 3)));
}

static int l_port(lua_State *L) {
  lhttp_t *h = check(L);
  lua_pushinteger(L, http_port(h->s));
  return 1;
}

static int l_stats(lua_State *L) {
  lhttp_t *h = check(L);
  http_stats_t st;
  http_stats(h->s, &st);
  lua_createtable(L, 0, 12);
#define F(name)                                                                                    \
  lua_pushnumber(L, (lua_Number)st.name);                                                          \
  lua_setfield(L, -2, #name)
  F(connections_total);
  F(requests_total);
  F(bytes_in);
  F(bytes_out);
  F(errors_total);
  F(open_connections);
  F(open_streams);
  F(open_websockets);
#undef F
  lua_createtable(L, 5, 0);
  for (int i = 1; i <= 5; i++) {
    lua_pushnumber(L, (lua_Number)st.by_status[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "by_status");
  return 1;
}

/* srv:shutdown([now]): stops accepting; open exchanges finish (or end now) */
static int l_shutdown(lua_State *L) {
  lhttp_t *h = check(L);
  http_shutdown(h->s, lua_toboolean(L, 2));
  return 0;
}

/* The server frees itself once its connections have closed (http_close); the Lua side goes
 * now, so that no event reaches Lua after close. */
static void release(lhttp_t *h) {
  binding_handle_release(&h->h);
  http_close(h->s);
  free(h);
}

static int l_close(lua_State *L) {
  binding_handle_t *bh = binding_handle_check(L, 1, HTTP_MT);
  if (bh) release(BINDING_CONTAINER(bh, lhttp_t, h));
  return 0;
}

static int l_gc(lua_State *L) {
  binding_handle_t *bh = binding_handle_gc(L, 1, HTTP_MT);
  if (bh) release(BINDING_CONTAINER(bh, lhttp_t, h));
  return 0;
}

static const luaL_Reg methods[] = {
    {"respond", l_respond},
    {"stream_start", l_stream_start},
    {"stream_write", l_stream_write},
    {"stream_end", l_stream_end},
    {"ws_accept", l_ws_accept},
    {"ws_send", l_ws_send},
    {"ws_ping", l_ws_ping},
    {"ws_close", l_ws_close},
    {"want_drain", l_want_drain},
    {"pause", l_pause},
    {"abort", l_abort},
    {"queued", l_queued},
    {"static", l_static},
    {"port", l_port},
    {"stats", l_stats},
    {"shutdown", l_shutdown},
    {"close", l_close},
    {NULL, NULL},
};

/* The offset of the first byte that is not part of well-formed UTF-8, or n. The rules are
 * utf8_valid's, asked of one sequence at a time, and only once the whole is known to break them. */
static size_t utf8_invalid_at(const char *s, size_t n) {
  if (utf8_valid(s, n)) return n;
  size_t i = 0;
  while (i < n) {
    unsigned c = (unsigned char)s[i];
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; /* as the lead byte says */
    if (len > n - i || !utf8_valid(s + i, len)) return i;
    i += len;
  }
  return n;
}

/* utf8_valid(s) -> true | false, the byte offset (from 0) where s stops being UTF-8 */
static int l_utf8_valid(lua_State *L) {
  size_t n;
  const char *str = luaL_checklstring(L, 1, &n);
  size_t at = utf8_invalid_at(str, n);
  lua_pushboolean(L, at == n);
  if (at == n) return 1;
  lua_pushnumber(L, (lua_Number)at);
  return 2;
}

static const luaL_Reg fns[] = {{"listen", l_listen}, {"utf8_valid", l_utf8_valid}, {NULL, NULL}};

int luaopen_atoll_c_http(lua_State *L) {
  binding_class(L, HTTP_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
