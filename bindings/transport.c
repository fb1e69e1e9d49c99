/* atoll.transport: links to other nodes, for lib/atoll/cluster.lua. */
#include <string.h>

#include "../host/error.h"
#include "../host/frame.h"
#include "../host/transport.h"
#include "bindings.h"

#define LINK_MT      "atoll.link"
#define TRANSPORT(L) ((transport_t *)lua_touserdata((L), lua_upvalueindex(1)))

static link_t *check_link(lua_State *L, int idx) {
  link_t **ud = luaL_checkudata(L, idx, LINK_MT);
  return *ud;
}

/* The bytes of a payload (userdata) or a string. */
static const char *check_bytes(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) == LUA_TUSERDATA) {
    *len = lua_objlen(L, idx);
    return lua_touserdata(L, idx);
  }
  return luaL_checklstring(L, idx, len);
}

/* Turns a queueing result into true | nil, kind, message. */
static int queue_result(lua_State *L, link_t *l, int rc) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  if (rc == UV_ENOBUFS) {
    lua_pushliteral(L, "overloaded");
    lua_pushfstring(L, "the link to %s has %d bytes queued, its limit", l->target,
                    (int)link_queued(l));
  } else if (rc == ATOLL_ETOOBIG) {
    lua_pushliteral(L, "bad_argument");
    lua_pushfstring(L, "the message is over the frame limit of %d bytes", (int)l->t->max_frame);
  } else if (rc == ATOLL_ETYPE) {
    lua_pushliteral(L, "bad_argument");
    lua_pushfstring(L, "method and actor names must be 1 to %d bytes", FRAME_MAX_NAME);
  } else if (rc == ATOLL_ERANGE) {
    lua_pushliteral(L, "bad_argument");
    lua_pushliteral(L, "ids must be integers from 0 to 2^53");
  } else if (rc == UV_ENOTCONN || l == NULL) {
    lua_pushliteral(L, "unreachable");
    lua_pushfstring(L, "the link to %s is closed", l ? l->target : "?");
  } else {
    lua_pushliteral(L, "unreachable");
    lua_pushstring(L, atoll_strerror(rc));
  }
  return 3;
}

static int closed_link(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "unreachable");
  lua_pushliteral(L, "the link is closed");
  return 3;
}

/* link:call(rid, incarnation, id, method, payload) -> true | nil, kind, message */
static int l_call(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t mlen, plen;
  double rid = luaL_checknumber(L, 2), inc = luaL_checknumber(L, 3), id = luaL_checknumber(L, 4);
  const char *method = luaL_checklstring(L, 5, &mlen);
  const char *payload = check_bytes(L, 6, &plen);
  return queue_result(L, l, link_call(l, rid, inc, id, method, mlen, payload, plen));
}

/* link:send(incarnation, id, method, payload) -> true | nil, kind, message */
static int l_send(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t mlen, plen;
  double inc = luaL_checknumber(L, 2), id = luaL_checknumber(L, 3);
  const char *method = luaL_checklstring(L, 4, &mlen);
  const char *payload = check_bytes(L, 5, &plen);
  return queue_result(L, l, link_send(l, inc, id, method, mlen, payload, plen));
}

/* link:reply(rid, ok, bytes) -> true | nil, kind, message */
static int l_reply(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t plen;
  double rid = luaL_checknumber(L, 2);
  int ok = lua_toboolean(L, 3);
  const char *payload = check_bytes(L, 4, &plen);
  return queue_result(L, l, link_reply(l, rid, ok, payload, plen));
}

/* link:call_name(rid, name, method, payload) -> true | nil, kind, message */
static int l_call_name(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t nlen, mlen, plen;
  double rid = luaL_checknumber(L, 2);
  const char *name = luaL_checklstring(L, 3, &nlen);
  const char *method = luaL_checklstring(L, 4, &mlen);
  const char *payload = check_bytes(L, 5, &plen);
  return queue_result(L, l, link_call_name(l, rid, name, nlen, method, mlen, payload, plen));
}

/* link:send_name(name, method, payload) -> true | nil, kind, message */
static int l_send_name(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t nlen, mlen, plen;
  const char *name = luaL_checklstring(L, 2, &nlen);
  const char *method = luaL_checklstring(L, 3, &mlen);
  const char *payload = check_bytes(L, 4, &plen);
  return queue_result(L, l, link_send_name(l, name, nlen, method, mlen, payload, plen));
}

/* link:write_raw(bytes) -- queues bytes as they are, frames or not: for
 * tests that must send what a correct node never would */
static int l_write_raw(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  return queue_result(L, l, link_write_raw(l, s, n));
}

/* link:write_sealed(body) -- queues body as a sealed frame, whatever it holds
 * (for tests: a malformed envelope that passes authentication) */
static int l_write_sealed(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  return queue_result(L, l, link_write_sealed(l, s, n));
}

/* link:close([reason]) */
static int l_close(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l) link_close(l, luaL_optstring(L, 2, "closed by this node"));
  return 0;
}

/* link:state() -> "connecting" | "handshake" | "up" | "closed" */
static int l_state(lua_State *L) {
  link_t *l = check_link(L, 1);
  lua_pushstring(L, l ? link_state_name(l->state) : "closed");
  return 1;
}

/* link:queued() -> bytes waiting to be written */
static int l_queued(lua_State *L) {
  link_t *l = check_link(L, 1);
  lua_pushnumber(L, l ? (double)link_queued(l) : 0);
  return 1;
}

/* link:info() -> { state, dialer, target, queued, frames_in, frames_out, bytes_in, bytes_out } */
static int l_info(lua_State *L) {
  link_t *l = check_link(L, 1);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, l ? link_state_name(l->state) : "closed");
  lua_setfield(L, -2, "state");
  if (l == NULL) return 1;
  lua_pushboolean(L, l->dialer);
  lua_setfield(L, -2, "dialer");
  lua_pushstring(L, l->target);
  lua_setfield(L, -2, "target");
  lua_pushnumber(L, (double)link_queued(l));
  lua_setfield(L, -2, "queued");
  lua_pushnumber(L, l->frames_in);
  lua_setfield(L, -2, "frames_in");
  lua_pushnumber(L, l->frames_out);
  lua_setfield(L, -2, "frames_out");
  lua_pushnumber(L, l->bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushnumber(L, l->bytes_out);
  lua_setfield(L, -2, "bytes_out");
  return 1;
}

static int l_tostring(lua_State *L) {
  link_t *l = check_link(L, 1);
  lua_pushfstring(L, "link to %s (%s)", l ? l->target : "?",
                  l ? link_state_name(l->state) : "closed");
  return 1;
}

static int l_link_gc(lua_State *L) {
  /* A link holds its userdata until it is freed, so a collected userdata
   * has no link left; nothing to do. */
  (void)L;
  return 0;
}

static void opt_string(lua_State *L, const char *field, char *dst, size_t cap) {
  lua_getfield(L, 1, field);
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *s = luaL_checklstring(L, -1, &n);
    if (n >= cap) luaL_error(L, "configure: %s is too long", field);
    memcpy(dst, s, n + 1);
  }
  lua_pop(L, 1);
}

static double opt_number(lua_State *L, const char *field, double def) {
  lua_getfield(L, 1, field);
  double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* configure{ cluster, secret, name, address, incarnation, max_frame, max_queue,
 *            max_depth, handshake_timeout, report_interval }
 * report_interval: seconds between summaries of shed unauthenticated connections */
static int l_configure(lua_State *L) {
  transport_t *t = TRANSPORT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  opt_string(L, "cluster", t->cluster, sizeof t->cluster);
  opt_string(L, "name", t->name, sizeof t->name);
  opt_string(L, "address", t->address, sizeof t->address);
  lua_getfield(L, 1, "secret");
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *s = luaL_checklstring(L, -1, &n);
    hs_key(s, n, t->key);
    t->has_key = 1;
  }
  lua_pop(L, 1);
  t->incarnation = opt_number(L, "incarnation", t->incarnation);
  t->max_frame = (size_t)opt_number(L, "max_frame", (double)t->max_frame);
  t->max_queue = (size_t)opt_number(L, "max_queue", (double)t->max_queue);
  t->max_depth = (unsigned)opt_number(L, "max_depth", t->max_depth);
  t->handshake_ms = (uint64_t)(opt_number(L, "handshake_timeout", t->handshake_ms / 1000.0) * 1000);
  t->report_ms = (uint64_t)(opt_number(L, "report_interval", t->report_ms / 1000.0) * 1000);
  if (t->max_frame < 64 || t->max_frame > ((size_t)1 << 30)) {
    luaL_error(L, "configure: max_frame must be 64 bytes to 1 GiB");
  }
  if (t->max_queue < 64 || t->max_queue > ((size_t)1 << 30)) {
    luaL_error(L, "configure: max_queue must be 64 bytes to 1 GiB");
  }
  if (t->max_depth < 1 || t->max_depth > 256) luaL_error(L, "configure: max_depth must be 1..256");
  if (t->handshake_ms < 100) luaL_error(L, "configure: handshake_timeout must be 0.1 s or more");
  if (t->report_ms < 100) luaL_error(L, "configure: report_interval must be 0.1 s or more");
  return 0;
}

/* set_handlers{ up = fn(link, peer), frames = fn(link, n), down = fn(link, reason, was_up),
 *               decide = fn(link, peer) -> ok, reason } */
static int l_set_handlers(lua_State *L) {
  transport_t *t = TRANSPORT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "up");
  binding_setref(L, -1, &t->on_up_ref);
  lua_getfield(L, 1, "frames");
  binding_setref(L, -1, &t->on_frames_ref);
  lua_getfield(L, 1, "down");
  binding_setref(L, -1, &t->on_down_ref);
  lua_getfield(L, 1, "decide");
  binding_setref(L, -1, &t->decide_ref);
  lua_pop(L, 4);
  return 0;
}

/* inbox() -> the table frames arrive in: 6 slots per envelope
 * (kind, rid, incarnation|name|ok, id, method, payload) */
static int l_inbox(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, TRANSPORT(L)->inbox_ref);
  return 1;
}

/* listen(host, port) -> port | nil, message */
static int l_listen(lua_State *L) {
  transport_t *t = TRANSPORT(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  if (t->listening) return luaL_error(L, "listen: this node already listens");
  if (!t->has_key) return luaL_error(L, "listen: configure a cluster secret first");
  int rc = transport_listen(t, host, &port);
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
    return 2;
  }
  lua_pushinteger(L, port);
  return 1;
}

/* dial(address) -> link | nil, message */
static int l_dial(lua_State *L) {
  transport_t *t = TRANSPORT(L);
  const char *address = luaL_checkstring(L, 1);
  if (!t->has_key) return luaL_error(L, "dial: configure a cluster secret first");
  link_t *l = NULL;
  int rc = transport_dial(t, address, &l);
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot dial %s: %s", address,
                    rc == UV_EINVAL ? "expected HOST:PORT" : uv_strerror(rc));
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->self_ref);
  return 1;
}

/* stats() -> { refused, evicted, timed_out, not_accepted, dropped_frames, unauthenticated,
 *             max_unauthenticated }:
 * handshakes refused; unauthenticated connections shed to make room, or past
 * their deadline; connections the listener could not take; frames that
 * closed a link; accepted connections in the handshake now, and at most */
static int l_stats(lua_State *L) {
  transport_stats_t st;
  transport_stats(TRANSPORT(L), &st);
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, st.refused);
  lua_setfield(L, -2, "refused");
  lua_pushnumber(L, st.evicted);
  lua_setfield(L, -2, "evicted");
  lua_pushnumber(L, st.timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushnumber(L, st.not_accepted);
  lua_setfield(L, -2, "not_accepted");
  lua_pushnumber(L, st.dropped_frames);
  lua_setfield(L, -2, "dropped_frames");
  lua_pushinteger(L, st.unauthenticated);
  lua_setfield(L, -2, "unauthenticated");
  lua_pushinteger(L, st.max_unauthenticated);
  lua_setfield(L, -2, "max_unauthenticated");
  return 1;
}

/* stop_listening() */
static int l_stop_listening(lua_State *L) {
  transport_t *t = TRANSPORT(L);
  if (t->listening && !uv_is_closing((uv_handle_t *)&t->listener)) {
    uv_close((uv_handle_t *)&t->listener, NULL);
  }
  return 0;
}

static const luaL_Reg link_methods[] = {
    {"call", l_call},
    {"send", l_send},
    {"reply", l_reply},
    {"call_name", l_call_name},
    {"send_name", l_send_name},
    {"write_raw", l_write_raw},
    {"write_sealed", l_write_sealed},
    {"close", l_close},
    {"state", l_state},
    {"queued", l_queued},
    {"info", l_info},
    {NULL, NULL},
};

static const luaL_Reg fns[] = {
    {"configure", l_configure},
    {"set_handlers", l_set_handlers},
    {"inbox", l_inbox},
    {"listen", l_listen},
    {"dial", l_dial},
    {"stats", l_stats},
    {"stop_listening", l_stop_listening},
    {NULL, NULL},
};

int luaopen_atoll_transport(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  binding_class(L, LINK_MT, link_methods, l_link_gc, l_tostring);
  transport_t *t = lua_newuserdata(L, sizeof *t); /* [t] */
  transport_init(t, h);
  /* Its listener and flusher handles live inside it: it must outlive every
   * reference Lua code could drop, so the registry holds it until lua_close. */
  lua_pushvalue(L, -1);
  luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 1024, 0);
  t->inbox_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L); /* [t, M] */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "_state"); /* the module keeps the transport alive */
  return 1;
}
