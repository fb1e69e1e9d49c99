/* atoll.c.swim: the node's SWIM membership (host/membership.c), for lib/atoll/membership.lua. */
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/membership.h"
#include "../host/vm.h"
#include "bindings.h"

#define MEMBERSHIP(L) ((membership_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* The binding's part of the membership: the Lua handler. */
typedef struct binding_s {
  lua_State *L;
  int handler_ref;
} binding_t;

static const char *const event_names[] = {"added", "changed", "removed"};

static membership_t *started(lua_State *L) {
  membership_t *m = MEMBERSHIP(L);
  if (m->swim == NULL) luaL_error(L, "membership is not started");
  return m;
}

static void push_member(lua_State *L, const swim_member_t *mem, int self) {
  lua_createtable(L, 0, 10);
  lua_pushstring(L, mem->addr);
  lua_setfield(L, -2, "address");
  lua_pushstring(L, mem->name);
  lua_setfield(L, -2, "name");
  lua_pushnumber(L, (double)mem->uid);
  lua_setfield(L, -2, "incarnation");
  lua_pushnumber(L, mem->version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, swim_state_name(mem->state));
  lua_setfield(L, -2, "state");
  lua_pushstring(L, swim_phase_name(mem->phase));
  lua_setfield(L, -2, "phase");
  lua_pushnumber(L, (double)mem->since);
  lua_setfield(L, -2, "since");
  lua_pushnumber(L, mem->upno); /* 0 until it went up */
  lua_setfield(L, -2, "upno");
  if (self) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "self");
  }
}

/* Hands the news to Lua: handler(events, pulls). */
static void on_news(membership_t *m) {
  binding_t *b = m->data;
  lua_State *L = b->L;
  size_t nev = m->nevents, npl = m->npulls;
  if (b->handler_ref == LUA_NOREF) {
    m->nevents = m->npulls = 0;
    return;
  }
  const char *self = swim_self(m->swim)->addr;
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->handler_ref);
  lua_createtable(L, (int)nev, 0);
  for (size_t i = 0; i < nev; i++) {
    const membership_event_t *e = &m->events[i];
    push_member(L, &e->member, strcmp(e->member.addr, self) == 0);
    lua_pushstring(L, event_names[e->event]);
    lua_setfield(L, -2, "event");
    lua_pushstring(L, swim_state_name(e->old_state));
    lua_setfield(L, -2, "old_state");
    lua_pushstring(L, swim_phase_name(e->old_phase));
    lua_setfield(L, -2, "old_phase");
    lua_rawseti(L, -2, (int)i + 1);
  }
  lua_createtable(L, (int)npl, 0);
  for (size_t i = 0; i < npl; i++) {
    lua_pushstring(L, m->pulls[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  /* Taken: what the handler causes queues up anew. */
  m->nevents = m->npulls = 0;
  vm_pcall(L, 2, 0, "membership handler");
}

/* A setting from the table at t: a number from lo to hi. */
static double opt_field(lua_State *L, int t, const char *field, double def, double lo, double hi) {
  return binding_opt_number(L, t, "membership", field, def, lo, hi);
}

/* Reads settings (seconds for times) over the defaults. */
static void read_config(lua_State *L, int t, swim_config_t *c) {
  swim_default_config(c);
  if (lua_isnoneornil(L, t)) return;
  luaL_checktype(L, t, LUA_TTABLE);
  c->probe_interval_ms =
      (uint32_t)(opt_field(L, t, "probe_interval", c->probe_interval_ms / 1e3, 0.01, 60) * 1e3);
  c->probe_timeout_ms =
      (uint32_t)(opt_field(L, t, "probe_timeout", c->probe_timeout_ms / 1e3, 0.005, 60) * 1e3);
  c->indirect_k = (uint32_t)opt_field(L, t, "indirect_probes", c->indirect_k, 0, SWIM_MAX_K);
  c->suspicion_alpha = opt_field(L, t, "suspicion_alpha", c->suspicion_alpha, 0.5, 100);
  c->suspicion_beta = opt_field(L, t, "suspicion_beta", c->suspicion_beta, 1, 100);
  c->confirmations_k =
      (uint32_t)opt_field(L, t, "confirmations", c->confirmations_k, 0, SWIM_MAX_K);
  c->retransmit_lambda = opt_field(L, t, "retransmit_lambda", c->retransmit_lambda, 1, 100);
  c->max_lhm = (uint32_t)opt_field(L, t, "max_lhm", c->max_lhm, 0, 64);
  c->gossip_interval_ms =
      (uint32_t)(opt_field(L, t, "gossip_interval", c->gossip_interval_ms / 1e3, 0.01, 60) * 1e3);
  c->gossip_fanout = (uint32_t)opt_field(L, t, "gossip_fanout", c->gossip_fanout, 0, SWIM_MAX_K);
  c->push_pull_interval_ms =
      (uint32_t)(opt_field(L, t, "push_pull_interval", c->push_pull_interval_ms / 1e3, 0.1, 86400) *
                 1e3);
  c->leave_grace_ms =
      (uint32_t)(opt_field(L, t, "leave_grace", c->leave_grace_ms / 1e3, 0, 60) * 1e3);
  c->tombstone_ms = (uint32_t)(opt_field(L, t, "tombstone", c->tombstone_ms / 1e3, 1, 86400) * 1e3);
  double keep = opt_field(L, t, "keep_unreachable", c->keep_unreachable, 0, 1);
  if (keep != 0 && keep != 1) luaL_error(L, "membership: keep_unreachable must be 0 or 1");
  c->keep_unreachable = keep == 1;
  if (c->probe_timeout_ms >= c->probe_interval_ms) {
    luaL_error(L, "membership setting probe_timeout must be shorter than probe_interval");
  }
}

/* t[name] = value, t at the top of the stack */
#define SET_NUMBER(name, value)                                                                    \
  do {                                                                                             \
    lua_pushnumber(L, (double)(value));                                                            \
    lua_setfield(L, -2, name);                                                                     \
  } while (0)

static void push_config(lua_State *L, const swim_config_t *c) {
  lua_createtable(L, 0, 14);
#define F SET_NUMBER
  F("probe_interval", c->probe_interval_ms / 1e3);
  F("probe_timeout", c->probe_timeout_ms / 1e3);
  F("indirect_probes", c->indirect_k);
  F("suspicion_alpha", c->suspicion_alpha);
  F("suspicion_beta", c->suspicion_beta);
  F("confirmations", c->confirmations_k);
  F("retransmit_lambda", c->retransmit_lambda);
  F("max_lhm", c->max_lhm);
  F("gossip_interval", c->gossip_interval_ms / 1e3);
  F("gossip_fanout", c->gossip_fanout);
  F("push_pull_interval", c->push_pull_interval_ms / 1e3);
  F("leave_grace", c->leave_grace_ms / 1e3);
  F("tombstone", c->tombstone_ms / 1e3);
  F("keep_unreachable", c->keep_unreachable);
#undef F
}

/* start{ bind_host, port, address, name, incarnation, cluster, secret, config }
 * -> true | nil, message, kind */
static int l_start(lua_State *L) {
  membership_t *m = MEMBERSHIP(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  if (m->swim) return luaL_error(L, "membership is already started");
  lua_getfield(L, 1, "bind_host");
  lua_getfield(L, 1, "port");
  lua_getfield(L, 1, "address");
  lua_getfield(L, 1, "name");
  lua_getfield(L, 1, "incarnation");
  lua_getfield(L, 1, "cluster");
  lua_getfield(L, 1, "secret");
  lua_getfield(L, 1, "config");
  const char *bind_host = luaL_checkstring(L, 2);
  int port = (int)luaL_checkinteger(L, 3);
  const char *address = luaL_checkstring(L, 4);
  const char *name = luaL_optstring(L, 5, "");
  double inc = luaL_checknumber(L, 6);
  const char *cluster = luaL_checkstring(L, 7);
  size_t slen;
  const char *secret = luaL_checklstring(L, 8, &slen);
  swim_config_t cfg;
  read_config(L, 9, &cfg);
  if (strlen(address) >= SWIM_ADDR_MAX) return luaL_error(L, "the address %s is too long", address);
  if (!(inc >= 0 && inc <= (double)SWIM_UID_MAX)) return luaL_error(L, "bad incarnation");
  int rc = membership_start(m, m->host, &cfg, bind_host, port, address, name, (uint64_t)inc,
                            cluster, secret, slen);
  if (rc) {
    return binding_fail(L, atoll_err_name(rc), "cannot open the membership socket on UDP %s:%d: %s",
                        bind_host, port, atoll_strerror(rc));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* set_handler(fn(events, pulls)) */
static int l_set_handler(lua_State *L) {
  membership_t *m = MEMBERSHIP(L);
  binding_t *b = m->data;
  binding_setref(L, 1, &b->handler_ref);
  return 0;
}

static int l_join(lua_State *L) {
  membership_t *m = started(L);
  const char *addr = luaL_checkstring(L, 1);
  swim_join(m->swim, uv_now(&m->host->loop), addr);
  membership_kick(m);
  return 0;
}

static int l_set_phase(lua_State *L) {
  membership_t *m = started(L);
  static const char *const phases[] = {"joining", "up", "leaving", NULL};
  int ph = luaL_checkoption(L, 1, NULL, phases);
  swim_set_phase(m->swim, uv_now(&m->host->loop), (swim_phase_t)ph);
  membership_kick(m);
  return 0;
}

/* down(address [, final]) -> true if the member was marked down (final:
 * downed for good, swim_down_final; else declared dead, which it may refute) */
static int l_down(lua_State *L) {
  membership_t *m = started(L);
  const char *addr = luaL_checkstring(L, 1);
  int final = lua_toboolean(L, 2);
  uint64_t now = uv_now(&m->host->loop);
  int rc = final ? swim_down_final(m->swim, now, addr) : swim_down(m->swim, now, addr);
  membership_kick(m);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* members() -> { member... }, this node first */
static int l_members(lua_State *L) {
  membership_t *m = started(L);
  size_t n;
  const swim_member_t *mem = swim_members(m->swim, &n);
  lua_createtable(L, (int)n, 0);
  int k = 0;
  for (size_t i = 0; i < n; i++) {
    if (!mem[i].addr[0]) continue;
    push_member(L, &mem[i], i == 0);
    lua_rawseti(L, -2, ++k);
  }
  return 1;
}

/* stats() -> counters */
static int l_stats(lua_State *L) {
  membership_t *m = started(L);
  const swim_stats_t *s = swim_stats(m->swim);
  lua_createtable(L, 0, 20);
#define F SET_NUMBER
  F("probes", s->probes);
  F("indirect_probes", s->indirect_probes);
  F("acks", s->acks);
  F("nacks", s->nacks);
  F("suspicions", s->suspicions);
  F("refutations", s->refutations);
  F("deaths", s->deaths);
  F("leaves", s->leaves);
  F("packets_sent", s->packets_sent);
  F("packets_received", s->packets_received);
  F("bytes_sent", s->bytes_sent);
  F("dropped_malformed", s->dropped + m->too_short);
  F("dropped_auth", m->auth_failed);
  F("send_failed", m->send_failed);
  F("unresolved", m->unresolved);
  F("gossip_pending", swim_pending(m->swim));
  F("health", swim_lhm(m->swim));
#undef F
  return 1;
}

static int l_state(lua_State *L) {
  membership_t *m = started(L);
  buf_t out;
  buf_init(&out);
  int rc = swim_state(m->swim, &out);
  if (rc) {
    buf_close(&out);
    return luaL_error(L, "membership state: %s", atoll_strerror(rc));
  }
  lua_pushlstring(L, out.data ? out.data : "", out.len);
  buf_close(&out);
  return 1;
}

/* merge(bytes) -> true | nil, message, kind */
static int l_merge(lua_State *L) {
  membership_t *m = started(L);
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int rc = swim_merge(m->swim, uv_now(&m->host->loop), s, len);
  membership_kick(m);
  if (rc) {
    return binding_fail(L, atoll_err_name(rc), "a membership state that does not decode: %s",
                        atoll_strerror(rc));
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_has_majority(lua_State *L) {
  membership_t *m = started(L);
  lua_pushboolean(L, swim_has_majority(m->swim));
  return 1;
}

static int l_config(lua_State *L) {
  membership_t *m = MEMBERSHIP(L);
  if (m->swim) {
    push_config(L, &m->cfg);
  } else {
    swim_config_t c;
    read_config(L, 1, &c);
    push_config(L, &c);
  }
  return 1;
}

/* now() -> the clock members' `since` is on (ms) */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_now(&MEMBERSHIP(L)->host->loop));
  return 1;
}

static int l_stop(lua_State *L) {
  membership_t *m = MEMBERSHIP(L);
  if (m->swim) membership_stop(m);
  return 0;
}

static int l_gc(lua_State *L) {
  membership_t *m = lua_touserdata(L, 1);
  binding_t *b = m->data;
  membership_free(m);
  if (b) {
    luaL_unref(L, LUA_REGISTRYINDEX, b->handler_ref);
    free(b);
    m->data = NULL;
  }
  return 0;
}

static const luaL_Reg fns[] = {
    {"start", l_start},   {"set_handler", l_set_handler},
    {"join", l_join},     {"set_phase", l_set_phase},
    {"down", l_down},     {"members", l_members},
    {"stats", l_stats},   {"state", l_state},
    {"merge", l_merge},   {"has_majority", l_has_majority},
    {"config", l_config}, {"now", l_now},
    {"stop", l_stop},     {NULL, NULL},
};

int luaopen_atoll_c_swim(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  membership_t *m = lua_newuserdata(L, sizeof *m); /* [m] */
  membership_init(m, h);
  binding_t *b = calloc(1, sizeof *b);
  if (b == NULL) return luaL_error(L, "out of memory");
  b->L = h->L; /* the main state, whichever coroutine required this module */
  b->handler_ref = LUA_NOREF;
  m->data = b;
  m->on_news = on_news;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  /* Its handles live inside it: the registry keeps it until lua_close. */
  lua_pushvalue(L, -1);
  luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L); /* [m, M] */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "_state");
  return 1;
}
