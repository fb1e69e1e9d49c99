/* atoll.c.codec: MessagePack for Lua values and actor refs, with limits and path-naming errors.
 *
 * Two MessagePack ext types carry what plain MessagePack has no form for
 * (host/codec.h gives their layouts):
 *   1  an actor ref (EXT_REF): incarnation, local id and node address; it
 *      names one process of one run of one node.
 *   2  a virtual actor's ref (EXT_VIRTUAL_REF): its type name and id only,
 *      a name valid on every node and after restarts, so events and
 *      snapshots may hold it. It decodes to a table with the metatable given
 *      as virtual_ref_mt, whose methods call the virtual actor. */
#include <string.h>

#include "../host/codec.h"
#include "../host/error.h"
#include "bindings.h"

#define CODEC_STATE(L) ((codec_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* The scratch buffer keeps its capacity between calls, except after a
 * message so large that keeping it would pin memory. */
#define SCRATCH_KEEP (256 * 1024)

static int push_encoded(lua_State *L, codec_t *c, int rc) {
  if (rc) {
    buf_reset(&c->scratch);
    buf_shrink(&c->scratch, SCRATCH_KEEP);
    return binding_fail(L, atoll_err_name(rc), "%s", c->err);
  }
  lua_pushlstring(L, c->scratch.data, c->scratch.len);
  buf_reset(&c->scratch);
  buf_shrink(&c->scratch, SCRATCH_KEEP);
  return 1;
}

/* Payloads of calls are full userdata holding the bytes, not strings: they
 * are made and consumed once, so interning them (hashing into LuaJIT's
 * string table) would only cost time - several hundred nanoseconds each
 * once millions are queued. */
static int push_payload(lua_State *L, codec_t *c, int rc) {
  if (rc) return push_encoded(L, c, rc);
  void *p = lua_newuserdata(L, c->scratch.len);
  memcpy(p, c->scratch.data, c->scratch.len);
  buf_reset(&c->scratch);
  buf_shrink(&c->scratch, SCRATCH_KEEP);
  return 1;
}

/* Raises a decode failure as an error object { kind = "bad_argument", message }. */
static int raise_decode(lua_State *L, codec_t *c) {
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "bad_argument");
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, c->err);
  lua_setfield(L, -2, "message");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "decode"); /* the runtime tells a bad payload from a handler's error */
  if (c->error_mt_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->error_mt_ref);
    lua_setmetatable(L, -2);
  }
  return lua_error(L);
}

/* pack(...) -> payload | nil, message, kind    (the values of a call: "args[i]") */
static int l_pack(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  buf_reset(&c->scratch);
  return push_payload(L, c, codec_encode_list(c, L, 1, lua_gettop(L), "args", &c->scratch));
}

/* pack_results(...) -> payload | nil, message, kind    (what a function returned: "result[i]") */
static int l_pack_results(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  buf_reset(&c->scratch);
  return push_payload(L, c, codec_encode_list(c, L, 1, lua_gettop(L), "result", &c->scratch));
}

/* bytes(payload_or_string) -> the encoding as a string */
static int l_bytes(lua_State *L) {
  size_t len;
  const char *s = binding_check_bytes(L, 1, &len);
  lua_pushlstring(L, s, len);
  return 1;
}

/* pack_list(root, ...) -> string | nil, message, kind    (errors name values "root[i]") */
static int l_pack_list(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  const char *root = luaL_checkstring(L, 1);
  buf_reset(&c->scratch);
  return push_encoded(L, c, codec_encode_list(c, L, 2, lua_gettop(L) - 1, root, &c->scratch));
}

/* unpack(payload_or_string) -> ...    raises { kind = "bad_argument" } on malformed input */
static int l_unpack(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  size_t len;
  const char *s = binding_check_bytes(L, 1, &len);
  int count = 0;
  if (codec_decode_list(c, L, s, len, &count) != 0) return raise_decode(L, c);
  return count;
}

/* try_unpack(payload_or_string) -> true, ... | false, message */
static int l_try_unpack(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  size_t len;
  const char *s = binding_check_bytes(L, 1, &len);
  int count = 0;
  lua_pushboolean(L, 1);
  if (codec_decode_list(c, L, s, len, &count) != 0) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, c->err);
    return 2;
  }
  return count + 1;
}

/* encode(value [, root]) -> bytes | nil, message, kind */
static int l_encode(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  luaL_checkany(L, 1);
  const char *root = luaL_optstring(L, 2, "value");
  buf_reset(&c->scratch);
  return push_encoded(L, c, codec_encode_value(c, L, 1, root, &c->scratch));
}

/* decode(bytes) -> value    raises { kind = "bad_argument" } on malformed input */
static int l_decode(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  size_t len;
  const char *s = binding_check_bytes(L, 1, &len);
  if (codec_decode_value(c, L, s, len) != 0) return raise_decode(L, c);
  return 1;
}

/* try_decode(bytes) -> true, value | false, message */
static int l_try_decode(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  size_t len;
  const char *s = binding_check_bytes(L, 1, &len);
  lua_pushboolean(L, 1);
  if (codec_decode_value(c, L, s, len) != 0) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, c->err);
    return 2;
  }
  return 2;
}

/* make_ref(address, incarnation, id) -> the interned ref */
static int l_make_ref(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  size_t alen;
  const char *addr = luaL_checklstring(L, 1, &alen);
  double inc = luaL_checknumber(L, 2), id = luaL_checknumber(L, 3);
  char payload[CODEC_REF_FIXED + CODEC_REF_MAX_ADDR];
  size_t plen;
  int rc = codec_ref_payload(addr, alen, inc, id, payload, &plen);
  if (rc) return luaL_error(L, "make_ref: %s", atoll_strerror(rc));
  if (c->ref_mt_ref == LUA_NOREF) return luaL_error(L, "make_ref: no ref metatable configured");
  rc = codec_push_ref(c, L, payload, plen);
  if (rc) return luaL_error(L, "make_ref: %s", atoll_strerror(rc));
  return 1;
}

static void set_mt(lua_State *L, codec_t *c, const char *field, int *ref, const void **ptr) {
  lua_getfield(L, 1, field);
  if (!lua_isnil(L, -1)) {
    luaL_argcheck(L, lua_istable(L, -1), 1, field);
    binding_setref(L, -1, ref);
    if (ptr) *ptr = lua_topointer(L, -1);
  }
  lua_pop(L, 1);
  (void)c;
}

/* configure{ ref_mt = mt, virtual_ref_mt = mt, array_mt = mt, json_array_mt = mt,
 *            error_mt = mt } */
static int l_configure(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  set_mt(L, c, "ref_mt", &c->ref_mt_ref, &c->ref_mt);
  set_mt(L, c, "virtual_ref_mt", &c->vref_mt_ref, &c->vref_mt);
  set_mt(L, c, "array_mt", &c->array_mt_ref, &c->array_mt);
  set_mt(L, c, "json_array_mt", &c->json_array_mt_ref, &c->json_array_mt);
  set_mt(L, c, "error_mt", &c->error_mt_ref, NULL);
  return 0;
}

/* limits([{ max_depth = n, max_bytes = n }]) -> the limits in force, after applying any given */
static int l_limits(lua_State *L) {
  codec_t *c = CODEC_STATE(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    c->limits.max_depth = (unsigned)binding_opt_number(L, 1, "limits", "max_depth",
                                                       c->limits.max_depth, 1, CODEC_MAX_DEPTH_CAP);
    c->limits.max_bytes = (size_t)binding_opt_number(L, 1, "limits", "max_bytes",
                                                     (double)c->limits.max_bytes, 16, 4294967295.0);
  }
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)c->limits.max_depth);
  lua_setfield(L, -2, "max_depth");
  lua_pushnumber(L, (double)c->limits.max_bytes);
  lua_setfield(L, -2, "max_bytes");
  return 1;
}

static int l_gc(lua_State *L) {
  codec_close(lua_touserdata(L, 1), L);
  return 0;
}

static const luaL_Reg codec_fns[] = {
    {"pack", l_pack},
    {"pack_results", l_pack_results},
    {"pack_list", l_pack_list},
    {"bytes", l_bytes},
    {"unpack", l_unpack},
    {"try_unpack", l_try_unpack},
    {"encode", l_encode},
    {"decode", l_decode},
    {"try_decode", l_try_decode},
    {"make_ref", l_make_ref},
    {"configure", l_configure},
    {"limits", l_limits},
    {NULL, NULL},
};

int luaopen_atoll_c_codec(lua_State *L) {
  codec_t *c = lua_newuserdata(L, sizeof *c); /* [c] */
  codec_init(c, L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, sizeof codec_fns / sizeof codec_fns[0] + 4); /* [c, M] */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, codec_fns, 1);
  lua_pushinteger(L, CODEC_EXT_REF);
  lua_setfield(L, -2, "EXT_REF");
  lua_pushinteger(L, CODEC_EXT_VIRTUAL_REF);
  lua_setfield(L, -2, "EXT_VIRTUAL_REF");
  lua_pushinteger(L, CODEC_MAX_VALUES);
  lua_setfield(L, -2, "MAX_VALUES");
  return 1;
}
