/* Helpers shared by the bindings. */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"

typedef struct write_req_s {
  uv_write_t req;
  char data[];
} write_req_t;

static void write_done(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

int binding_result(lua_State *L, int rc) {
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
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
