/* atoll_testhooks: what the specs need to send that a correct node never would, kept out of
 * the library a node runs. Built as build/atoll_testhooks.so; tests/run puts build/ on
 * LUA_CPATH, so a spec (or a node a spec starts) loads it with require "atoll_testhooks".
 * It calls into the executable (linked with -Wl,-E): the host's link and membership functions,
 * and the transport binding's link accessor. */
#include <lauxlib.h>
#include <lua.h>

#include "../../bindings/bindings.h"
#include "../../host/membership.h"
#include "../../host/transport.h"

/* The queueing functions' result, as the bindings give it: true | nil, message, kind. */
static int queued(lua_State *L, int rc) {
  return binding_result(L, rc);
}

static link_t *open_link(lua_State *L) {
  link_t *l = binding_link(L, 1);
  if (l == NULL) luaL_error(L, "the link is closed");
  return l;
}

/* write_raw(link, bytes) -> true | nil, message, kind: bytes as they are, frames or not. */
static int l_write_raw(lua_State *L) {
  link_t *l = open_link(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  return queued(L, link_write_raw(l, s, n));
}

/* write_sealed(link, body) -> true | nil, message, kind: body as a sealed frame, whatever it
 * holds (a malformed envelope that passes authentication). */
static int l_write_sealed(lua_State *L) {
  link_t *l = open_link(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  return queued(L, link_write_sealed(l, s, n));
}

/* swim_send_raw(address, bytes [, seal]) -> true | nil, message, kind: a SWIM packet body from
 * this node's membership socket, sealed or with a broken tag. */
static int l_swim_send_raw(lua_State *L) {
  size_t len;
  const char *addr = luaL_checkstring(L, 1);
  const char *data = luaL_checklstring(L, 2, &len);
  int seal = lua_toboolean(L, 3);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "atoll.c.swim");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "_state");
  membership_t *m = lua_touserdata(L, -1);
  if (m == NULL || m->swim == NULL) return luaL_error(L, "membership is not started");
  return queued(L, membership_send_raw(m, addr, data, len, seal));
}

static const luaL_Reg fns[] = {
    {"write_raw", l_write_raw},
    {"write_sealed", l_write_sealed},
    {"swim_send_raw", l_swim_send_raw},
    {NULL, NULL},
};

int luaopen_atoll_testhooks(lua_State *L);
int luaopen_atoll_testhooks(lua_State *L) {
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
