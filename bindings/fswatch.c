/* atoll.fswatch: change notifications for a directory (inotify through libuv). */
#include <stdlib.h>

#include "../host/vm.h"
#include "bindings.h"

#define FSWATCH_MT "atoll.fswatch"

typedef struct fswatch_s {
  host_handle_t base; /* first: shutdown closes the handle through it */
  uv_fs_event_t event;
  lua_State *L;
  int cb_ref;   /* the Lua callback */
  int self_ref; /* keeps the userdata alive while the watch is open */
  struct fswatch_s **slot;
} fswatch_t;

static void on_closed(uv_handle_t *handle) {
  fswatch_t *w = handle->data;
  luaL_unref(w->L, LUA_REGISTRYINDEX, w->cb_ref);
  luaL_unref(w->L, LUA_REGISTRYINDEX, w->self_ref);
  if (w->slot) *w->slot = NULL;
  free(w);
}

static void on_event(uv_fs_event_t *event, const char *filename, int events, int status) {
  fswatch_t *w = event->data;
  lua_State *L = w->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->cb_ref);
  if (filename)
    lua_pushstring(L, filename);
  else
    lua_pushnil(L);
  lua_pushstring(L, (events & UV_RENAME) ? "rename" : "change");
  if (status < 0)
    lua_pushstring(L, uv_strerror(status));
  else
    lua_pushnil(L);
  vm_pcall(L, 3, 0, "file watch callback");
}

#define check_watch(L) ((fswatch_t **)luaL_checkudata((L), 1, FSWATCH_MT))

/* watch(dir, fn(filename, "change"|"rename", err)) -> handle | nil, message */
static int l_watch(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  fswatch_t *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "out of memory");
  w->base.on_close = on_closed;
  w->L = h->L; /* callbacks run on the main thread, never on the caller's coroutine */
  w->cb_ref = w->self_ref = LUA_NOREF;
  uv_fs_event_init(&h->loop, &w->event);
  w->event.data = w;
  int rc = uv_fs_event_start(&w->event, on_event, path, 0);
  if (rc) {
    uv_close((uv_handle_t *)&w->event, on_closed);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot watch %s: %s", path, uv_strerror(rc));
    return 2;
  }
  fswatch_t **ud = lua_newuserdata(L, sizeof *ud); /* [ud] */
  *ud = w;
  w->slot = ud;
  luaL_getmetatable(L, FSWATCH_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* handle:close() */
static int l_close(lua_State *L) {
  fswatch_t **ud = check_watch(L);
  if (*ud && !uv_is_closing((uv_handle_t *)&(*ud)->event)) {
    uv_close((uv_handle_t *)&(*ud)->event, on_closed);
  }
  return 0;
}

static int l_gc(lua_State *L) {
  fswatch_t **ud = check_watch(L);
  if (*ud) {
    (*ud)->slot = NULL;
    if (!uv_is_closing((uv_handle_t *)&(*ud)->event)) {
      uv_close((uv_handle_t *)&(*ud)->event, on_closed);
    }
    *ud = NULL;
  }
  return 0;
}

static const luaL_Reg methods[] = {{"close", l_close}, {NULL, NULL}};
static const luaL_Reg fns[] = {{"watch", l_watch}, {NULL, NULL}};

int luaopen_atoll_fswatch(lua_State *L) {
  binding_class(L, FSWATCH_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
