/* What every binding shares: handle ownership, argument and option readers, the failure shape. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "bindings.h"

/* ---- failures ------------------------------------------------------------ */

int binding_fail(lua_State *L, const char *kind, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, kind);
  return 3;
}

int binding_result(lua_State *L, int rc) {
  if (rc) return binding_fail(L, atoll_err_name(rc), "%s", atoll_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- arguments ------------------------------------------------------------ */

const char *binding_check_bytes(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) == LUA_TUSERDATA) {
    if (lua_getmetatable(L, idx) == 0) {
      *len = lua_objlen(L, idx);
      return lua_touserdata(L, idx);
    }
    lua_pop(L, 1);
  }
  return luaL_checklstring(L, idx, len);
}

/* Pushes field `name` of the table at idx (nil when idx is no table). */
static int opt_field(lua_State *L, int idx, const char *name) {
  if (!lua_istable(L, idx)) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_getfield(L, idx, name);
  return lua_type(L, -1);
}

double binding_opt_number(lua_State *L, int idx, const char *what, const char *name, double def,
                          double lo, double hi) {
  int type = opt_field(L, idx, name);
  double v = def;
  if (type != LUA_TNIL) {
    v = lua_tonumber(L, -1);
    if (type != LUA_TNUMBER || !(v >= lo && v <= hi)) {
      luaL_error(L, "%s: %s must be a number from %f to %f", what, name, lo, hi);
    }
  }
  lua_pop(L, 1);
  return v;
}

int binding_opt_bool(lua_State *L, int idx, const char *what, const char *name, int def) {
  int type = opt_field(L, idx, name);
  int v = def;
  if (type != LUA_TNIL) {
    if (type != LUA_TBOOLEAN) luaL_error(L, "%s: %s must be true or false", what, name);
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

const char *binding_opt_string(lua_State *L, int idx, const char *what, const char *name,
                               const char *def, size_t max, size_t *len) {
  int type = opt_field(L, idx, name);
  const char *s = def;
  size_t n = def ? strlen(def) : 0;
  if (type != LUA_TNIL) {
    if (type != LUA_TSTRING) luaL_error(L, "%s: %s must be a string", what, name);
    s = lua_tolstring(L, -1, &n);
    if (n > max) luaL_error(L, "%s: %s must be at most %d bytes", what, name, (int)max);
  }
  lua_pop(L, 1); /* the table still holds the string */
  if (len) *len = n;
  return s;
}

/* ---- objects that own libuv handles ---------------------------------------- */

void binding_handle_init(binding_handle_t *bh, host_t *h) {
  bh->host = h;
  bh->L = h->L;
  bh->slot = NULL;
  bh->ref = LUA_NOREF;
  for (int i = 0; i < BINDING_CALLBACKS; i++) bh->cb[i] = LUA_NOREF;
}

void binding_handle_new(lua_State *L, binding_handle_t *bh, const char *mt) {
  binding_handle_t **ud = lua_newuserdata(L, sizeof *ud); /* [ud] */
  *ud = bh;
  bh->slot = ud;
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  bh->ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int binding_handle_push(lua_State *L, const binding_handle_t *bh) {
  if (bh->ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, bh->ref);
  return 1;
}

binding_handle_t *binding_handle_check(lua_State *L, int idx, const char *mt) {
  return *(binding_handle_t **)luaL_checkudata(L, idx, mt);
}

binding_handle_t *binding_handle_gc(lua_State *L, int idx, const char *mt) {
  binding_handle_t **ud = luaL_checkudata(L, idx, mt);
  binding_handle_t *bh = *ud;
  if (bh == NULL) return NULL;
  *ud = NULL;
  bh->slot = NULL;
  return bh;
}

void binding_handle_release(binding_handle_t *bh) {
  lua_State *L = bh->L;
  for (int i = 0; i < BINDING_CALLBACKS; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, bh->cb[i]);
    bh->cb[i] = LUA_NOREF;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, bh->ref);
  bh->ref = LUA_NOREF;
  if (bh->slot) *bh->slot = NULL;
  bh->slot = NULL;
}

void binding_handle_set_callback(lua_State *L, binding_handle_t *bh, int i, int idx) {
  if (!lua_isnoneornil(L, idx) && !lua_isfunction(L, idx)) {
    luaL_error(L, "a callback must be a function, not a %s", luaL_typename(L, idx));
  }
  binding_setref(L, idx, &bh->cb[i]);
}

int binding_handle_callback(const binding_handle_t *bh, int i) {
  if (bh->cb[i] == LUA_NOREF || bh->host->closing) return 0;
  lua_rawgeti(bh->L, LUA_REGISTRYINDEX, bh->cb[i]);
  return 1;
}

/* ---- the rest -------------------------------------------------------------- */

typedef struct write_req_s {
  uv_write_t req;
  char data[];
} write_req_t;

static void write_done(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

int binding_write(lua_State *L, uv_stream_t *stream, const char *data, size_t len) {
  write_req_t *w = malloc(sizeof *w + len);
  if (w == NULL) return luaL_error(L, "out of memory");
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, stream, &b, 1, write_done);
  if (rc) free(w);
  return binding_result(L, rc);
}

void binding_setref(lua_State *L, int idx, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (lua_isnoneornil(L, idx)) return;
  lua_pushvalue(L, idx);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void binding_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                   lua_CFunction tostring) {
  if (luaL_newmetatable(L, name)) { /* [mt] */
    if (gc) {
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
    }
    if (tostring) {
      lua_pushcfunction(L, tostring);
      lua_setfield(L, -2, "__tostring");
    }
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

void binding_module(lua_State *L, const luaL_Reg *fns) {
  host_t *h = BINDING_HOST(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, h);
  luaL_setfuncs(L, fns, 1);
}
