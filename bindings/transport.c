/* atoll.c.transport: links to other nodes (host/transport.c), for lib/atoll/cluster.lua. The
 * only place links become Lua values: the transport's events become calls of the Lua handlers,
 * its envelopes slots of the inbox table. */
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/frame.h"
#include "../host/transport.h"
#include "../host/vm.h"
#include "bindings.h"

#define LINK_MT      "atoll.c.transport.link"
#define TRANSPORT(L) ((ltransport_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* Inbox slots per envelope handed to Lua: kind, rid, a, b, method, payload. */
#define INBOX_SLOTS 6

/* The module's state: the transport and the Lua handlers. */
typedef struct ltransport_s {
  transport_t *t;
  host_t *host;
  lua_State *L; /* the main state */
  int on_up_ref, on_frames_ref, on_down_ref, decide_ref, inbox_ref;
} ltransport_t;

/* A link that Lua has seen: dialed from Lua, or reported to it. */
typedef struct llink_s {
  binding_handle_t h;
  link_t *link;
} llink_t;

static link_t *check_link(lua_State *L, int idx) {
  binding_handle_t *bh = binding_handle_check(L, idx, LINK_MT);
  return bh ? BINDING_CONTAINER(bh, llink_t, h)->link : NULL;
}

link_t *binding_link(lua_State *L, int idx) {
  return check_link(L, idx);
}

/* Pushes the link's userdata, made the first time Lua meets the link (nil if there is no
 * memory for it). */
static void push_link(lua_State *L, ltransport_t *lt, link_t *l) {
  llink_t *ll = link_data(l);
  if (ll && binding_handle_push(L, &ll->h)) return;
  if (ll == NULL) {
    ll = malloc(sizeof *ll);
    if (ll == NULL) {
      lua_pushnil(L);
      return;
    }
    binding_handle_init(&ll->h, lt->host);
    ll->link = l;
    link_set_data(l, ll);
  }
  binding_handle_new(L, &ll->h, LINK_MT);
}

static void push_peer(lua_State *L, const transport_peer_t *p) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, p->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, p->address);
  lua_setfield(L, -2, "address");
  lua_pushnumber(L, p->incarnation);
  lua_setfield(L, -2, "incarnation");
  lua_pushboolean(L, p->dialer);
  lua_setfield(L, -2, "dialer");
  lua_pushstring(L, p->target);
  lua_setfield(L, -2, "target");
}

/* ---- the transport's events ----------------------------------------------- */

static int ev_decide(void *ud, link_t *l, const transport_peer_t *peer, char *reason, size_t cap) {
  ltransport_t *lt = ud;
  if (lt->decide_ref == LUA_NOREF) return 1;
  lua_State *L = lt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->decide_ref);
  push_link(L, lt, l);
  push_peer(L, peer);
  if (vm_pcall(L, 2, 2, "link decision") != 0) {
    snprintf(reason, cap, "internal error");
    return 0;
  }
  int ok = lua_toboolean(L, -2);
  if (!ok) snprintf(reason, cap, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "refused");
  lua_pop(L, 2);
  return ok;
}

static void ev_up(void *ud, link_t *l, const transport_peer_t *peer) {
  ltransport_t *lt = ud;
  if (lt->on_up_ref == LUA_NOREF) return;
  lua_State *L = lt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->on_up_ref);
  push_link(L, lt, l);
  push_peer(L, peer);
  vm_pcall(L, 2, 0, "link up handler");
}

/* The envelopes go into the inbox, 6 slots each, and the handler gets (link, n): one call for
 * what one read brought, and no table per envelope. Payloads are userdata, as the codec's. */
static void ev_frames(void *ud, link_t *l, const envelope_t *env, size_t n) {
  ltransport_t *lt = ud;
  if (lt->on_frames_ref == LUA_NOREF) return;
  lua_State *L = lt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->on_frames_ref);
  push_link(L, lt, l);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->inbox_ref); /* [fn, link, inbox] */
  for (size_t i = 0; i < n; i++) {
    const envelope_t *e = &env[i];
    int base = (int)i * INBOX_SLOTS;
    lua_pushinteger(L, e->kind);
    lua_rawseti(L, -2, base + 1);
    lua_pushnumber(L, e->rid);
    lua_rawseti(L, -2, base + 2);
    switch (e->kind) {
      case ENV_REPLY:
        lua_pushboolean(L, e->ok);
        lua_rawseti(L, -2, base + 3);
        lua_pushnil(L);
        lua_rawseti(L, -2, base + 4);
        lua_pushnil(L);
        lua_rawseti(L, -2, base + 5);
        break;
      case ENV_CALL_NAME:
      case ENV_SEND_NAME:
        lua_pushlstring(L, e->name, e->name_len);
        lua_rawseti(L, -2, base + 3);
        lua_pushnil(L);
        lua_rawseti(L, -2, base + 4);
        lua_pushlstring(L, e->method, e->method_len);
        lua_rawseti(L, -2, base + 5);
        break;
      default:
        lua_pushnumber(L, e->incarnation);
        lua_rawseti(L, -2, base + 3);
        lua_pushnumber(L, e->id);
        lua_rawseti(L, -2, base + 4);
        lua_pushlstring(L, e->method, e->method_len);
        lua_rawseti(L, -2, base + 5);
        break;
    }
    void *p = lua_newuserdata(L, e->payload_len);
    memcpy(p, e->payload, e->payload_len);
    lua_rawseti(L, -2, base + 6);
  }
  lua_pop(L, 1); /* [fn, link] */
  lua_pushinteger(L, (lua_Integer)n);
  vm_pcall(L, 2, 0, "link frames handler");
}

/* Lua hears of links it has seen only: an accepted connection that never authenticated costs
 * it nothing. */
static void ev_down(void *ud, link_t *l, const char *reason, int was_up) {
  ltransport_t *lt = ud;
  llink_t *ll = link_data(l);
  if (ll == NULL) return;
  lua_State *L = lt->L;
  if (lt->on_down_ref != LUA_NOREF && !lt->host->closing && binding_handle_push(L, &ll->h)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->on_down_ref);
    lua_insert(L, -2);
    lua_pushstring(L, reason);
    lua_pushboolean(L, was_up);
    vm_pcall(L, 3, 0, "link down handler");
  }
  binding_handle_release(&ll->h);
  link_set_data(l, NULL);
  free(ll);
}

static const transport_events_t events = {
    .decide = ev_decide,
    .on_up = ev_up,
    .on_frames = ev_frames,
    .on_error = NULL, /* logged by the transport; the link's down reason says why */
    .on_down = ev_down,
};

/* ---- links ------------------------------------------------------------------ */

/* Turns a queueing result into true | nil, message, kind. */
static int queue_result(lua_State *L, link_t *l, int rc) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  switch (rc) {
    case UV_ENOBUFS:
      return binding_fail(L, "overloaded", "the link to %s has %zu bytes queued, its limit",
                          link_target(l), link_queued(l));
    case ATOLL_ETOOBIG:
      return binding_fail(L, "bad_argument", "the message is over the frame limit of %zu bytes",
                          link_max_frame(l));
    case ATOLL_ETYPE:
      return binding_fail(L, "bad_argument", "method and actor names must be 1 to %d bytes",
                          FRAME_MAX_NAME);
    case ATOLL_ERANGE:
      return binding_fail(L, "bad_argument", "ids must be integers from 0 to 2^53");
    case UV_ENOTCONN:
      return binding_fail(L, "unreachable", "the link to %s is closed", link_target(l));
    default:
      return binding_fail(L, "unreachable", "%s", atoll_strerror(rc));
  }
}

static int closed_link(lua_State *L) {
  return binding_fail(L, "unreachable", "the link is closed");
}

/* link:call(rid, incarnation, id, method, payload) -> true | nil, message, kind */
static int l_call(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t mlen, plen;
  double rid = luaL_checknumber(L, 2), inc = luaL_checknumber(L, 3), id = luaL_checknumber(L, 4);
  const char *method = luaL_checklstring(L, 5, &mlen);
  const char *payload = binding_check_bytes(L, 6, &plen);
  return queue_result(L, l, link_call(l, rid, inc, id, method, mlen, payload, plen));
}

/* link:send(incarnation, id, method, payload) -> true | nil, message, kind */
static int l_send(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t mlen, plen;
  double inc = luaL_checknumber(L, 2), id = luaL_checknumber(L, 3);
  const char *method = luaL_checklstring(L, 4, &mlen);
  const char *payload = binding_check_bytes(L, 5, &plen);
  return queue_result(L, l, link_send(l, inc, id, method, mlen, payload, plen));
}

/* link:reply(rid, ok, bytes) -> true | nil, message, kind */
static int l_reply(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t plen;
  double rid = luaL_checknumber(L, 2);
  int ok = lua_toboolean(L, 3);
  const char *payload = binding_check_bytes(L, 4, &plen);
  return queue_result(L, l, link_reply(l, rid, ok, payload, plen));
}

/* link:call_name(rid, name, method, payload) -> true | nil, message, kind */
static int l_call_name(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t nlen, mlen, plen;
  double rid = luaL_checknumber(L, 2);
  const char *name = luaL_checklstring(L, 3, &nlen);
  const char *method = luaL_checklstring(L, 4, &mlen);
  const char *payload = binding_check_bytes(L, 5, &plen);
  return queue_result(L, l, link_call_name(l, rid, name, nlen, method, mlen, payload, plen));
}

/* link:send_name(name, method, payload) -> true | nil, message, kind */
static int l_send_name(lua_State *L) {
  link_t *l = check_link(L, 1);
  if (l == NULL) return closed_link(L);
  size_t nlen, mlen, plen;
  const char *name = luaL_checklstring(L, 2, &nlen);
  const char *method = luaL_checklstring(L, 3, &mlen);
  const char *payload = binding_check_bytes(L, 4, &plen);
  return queue_result(L, l, link_send_name(l, name, nlen, method, mlen, payload, plen));
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
  lua_pushstring(L, l ? link_state_name(link_state(l)) : "closed");
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
  lua_pushstring(L, l ? link_state_name(link_state(l)) : "closed");
  lua_setfield(L, -2, "state");
  if (l == NULL) return 1;
  link_counters_t c;
  link_counters(l, &c);
  lua_pushboolean(L, link_dialer(l));
  lua_setfield(L, -2, "dialer");
  lua_pushstring(L, link_target(l));
  lua_setfield(L, -2, "target");
  lua_pushnumber(L, (double)link_queued(l));
  lua_setfield(L, -2, "queued");
  lua_pushnumber(L, c.frames_in);
  lua_setfield(L, -2, "frames_in");
  lua_pushnumber(L, c.frames_out);
  lua_setfield(L, -2, "frames_out");
  lua_pushnumber(L, c.bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushnumber(L, c.bytes_out);
  lua_setfield(L, -2, "bytes_out");
  return 1;
}

static int l_tostring(lua_State *L) {
  link_t *l = check_link(L, 1);
  lua_pushfstring(L, "link to %s (%s)", l ? link_target(l) : "?",
                  l ? link_state_name(link_state(l)) : "closed");
  return 1;
}

/* A link's userdata is held until the link is gone, so one that is collected has no link
 * left, except at lua_close, which comes after the host has closed every link (and a link
 * cannot be closed once the loop has). */
static int l_link_gc(lua_State *L) {
  binding_handle_t *bh = binding_handle_gc(L, 1, LINK_MT);
  if (bh && !bh->host->closing) link_close(BINDING_CONTAINER(bh, llink_t, h)->link, "collected");
  return 0;
}

/* ---- the module ------------------------------------------------------------- */

/* configure{ cluster, secret, name, address, incarnation, max_frame, max_queue,
 *            max_depth, handshake_timeout, report_interval }
 * Fields left out keep their values. report_interval: seconds between summaries of shed
 * unauthenticated connections */
static int l_configure(lua_State *L) {
  transport_t *t = TRANSPORT(L)->t;
  luaL_checktype(L, 1, LUA_TTABLE);
  transport_config_t c;
  transport_get_config(t, &c);
  struct {
    const char *name;
    char *dst;
  } strings[] = {{"cluster", c.cluster}, {"name", c.name}, {"address", c.address}};
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
    size_t n;
    const char *s =
        binding_opt_string(L, 1, "configure", strings[i].name, strings[i].dst, HS_MAX_TEXT - 1, &n);
    memmove(strings[i].dst, s, n + 1);
  }
  size_t slen;
  const char *secret = binding_opt_string(L, 1, "configure", "secret", NULL, 4096, &slen);
  c.incarnation =
      binding_opt_number(L, 1, "configure", "incarnation", c.incarnation, 0, 9007199254740992.0);
  c.max_frame = (size_t)binding_opt_number(L, 1, "configure", "max_frame", (double)c.max_frame, 64,
                                           (double)(1 << 30));
  c.max_queue = (size_t)binding_opt_number(L, 1, "configure", "max_queue", (double)c.max_queue, 64,
                                           (double)(1 << 30));
  c.max_depth = (unsigned)binding_opt_number(L, 1, "configure", "max_depth", c.max_depth, 1, 256);
  c.handshake_ms = (uint64_t)(binding_opt_number(L, 1, "configure", "handshake_timeout",
                                                 c.handshake_ms / 1000.0, 0.1, 3600) *
                              1000);
  c.report_ms = (uint64_t)(binding_opt_number(L, 1, "configure", "report_interval",
                                              c.report_ms / 1000.0, 0.1, 86400) *
                           1000);
  transport_set_config(t, &c);
  if (secret) transport_set_secret(t, secret, slen);
  return 0;
}

/* set_handlers{ up = fn(link, peer), frames = fn(link, n), down = fn(link, reason, was_up),
 *               decide = fn(link, peer) -> ok, reason }
 * peer: { name, address, incarnation, dialer, target }. down comes for links Lua has met
 * (dialed, decided or told are up), once each. */
static int l_set_handlers(lua_State *L) {
  ltransport_t *lt = TRANSPORT(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "up");
  binding_setref(L, -1, &lt->on_up_ref);
  lua_getfield(L, 1, "frames");
  binding_setref(L, -1, &lt->on_frames_ref);
  lua_getfield(L, 1, "down");
  binding_setref(L, -1, &lt->on_down_ref);
  lua_getfield(L, 1, "decide");
  binding_setref(L, -1, &lt->decide_ref);
  lua_pop(L, 4);
  return 0;
}

/* inbox() -> the table frames arrive in: 6 slots per envelope
 * (kind, rid, incarnation|name|ok, id, method, payload) */
static int l_inbox(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, TRANSPORT(L)->inbox_ref);
  return 1;
}

/* listen(host, port) -> port | nil, message, kind */
static int l_listen(lua_State *L) {
  transport_t *t = TRANSPORT(L)->t;
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  if (transport_listening(t)) return luaL_error(L, "listen: this node already listens");
  if (!transport_has_secret(t)) return luaL_error(L, "listen: configure a cluster secret first");
  int rc = transport_listen(t, host, &port);
  if (rc) {
    return binding_fail(L, atoll_err_name(rc), "cannot listen on %s:%d: %s", host, port,
                        atoll_strerror(rc));
  }
  lua_pushinteger(L, port);
  return 1;
}

/* dial(address) -> link | nil, message, kind */
static int l_dial(lua_State *L) {
  ltransport_t *lt = TRANSPORT(L);
  const char *address = luaL_checkstring(L, 1);
  if (!transport_has_secret(lt->t)) return luaL_error(L, "dial: configure a cluster secret first");
  link_t *l = NULL;
  int rc = transport_dial(lt->t, address, &l);
  if (rc) {
    return binding_fail(L, atoll_err_name(rc), "cannot dial %s: %s", address,
                        rc == UV_EINVAL ? "expected HOST:PORT" : atoll_strerror(rc));
  }
  push_link(L, lt, l);
  return 1;
}

/* stats() -> { refused, evicted, timed_out, not_accepted, dropped_frames, unauthenticated,
 *             max_unauthenticated }:
 * handshakes refused; unauthenticated connections shed to make room, or past
 * their deadline; connections the listener could not take; frames that
 * closed a link; accepted connections in the handshake now, and at most */
static int l_stats(lua_State *L) {
  transport_stats_t st;
  transport_stats(TRANSPORT(L)->t, &st);
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
  transport_stop_listening(TRANSPORT(L)->t);
  return 0;
}

/* At lua_close, after the host has closed every handle. */
static int l_transport_gc(lua_State *L) {
  ltransport_t *lt = lua_touserdata(L, 1);
  transport_free(lt->t);
  lt->t = NULL;
  return 0;
}

static const luaL_Reg link_methods[] = {
    {"call", l_call},           {"send", l_send},   {"reply", l_reply}, {"call_name", l_call_name},
    {"send_name", l_send_name}, {"close", l_close}, {"state", l_state}, {"queued", l_queued},
    {"info", l_info},           {NULL, NULL},
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

int luaopen_atoll_c_transport(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  binding_class(L, LINK_MT, link_methods, l_link_gc, l_tostring);
  ltransport_t *lt = lua_newuserdata(L, sizeof *lt); /* [lt] */
  memset(lt, 0, sizeof *lt);
  lt->host = h;
  lt->L = h->L;
  lt->on_up_ref = lt->on_frames_ref = lt->on_down_ref = lt->decide_ref = LUA_NOREF;
  if (transport_new(&lt->t, h, &events, lt) != 0) return luaL_error(L, "out of memory");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_transport_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  /* The transport's handles and its links report to lt: it must outlive every reference Lua
   * code could drop, so the registry holds it until lua_close. */
  lua_pushvalue(L, -1);
  luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 1024, 0);
  lt->inbox_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L); /* [lt, M] */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "_state"); /* the module keeps the transport alive */
  return 1;
}
