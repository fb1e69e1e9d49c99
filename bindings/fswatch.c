/* atoll.c.fswatch: change notifications for a directory (inotify through libuv). */
#include <stdlib.h>

#include "../host/error.h"
#include "../host/vm.h"
#include "bindings.h"

#define FSWATCH_MT "atoll.c.fswatch"

typedef struct fswatch_s {
  host_handle_t base; /* first: shutdown closes the handle through it */
  binding_handle_t h; /* callback 0: fn(filename, what, err) */
  uv_fs_event_t event;
} fswatch_t;

static void on_closed(uv_handle_t *handle) {
  fswatch_t *w = handle->data;
  binding_handle_release(&w->h);
  free(w);
}

static void on_event(uv_fs_event_t *event, const char *filename, int events, int status) {
  fswatch_t *w = event->data;
  if (!binding_handle_callback(&w->h, 0)) return;
  lua_State *L = w->h.L;
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

static void watch_close(fswatch_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->event)) uv_close((uv_handle_t *)&w->event, on_closed);
}

/* watch(dir, fn(filename, "change"|"rename", err)) -> handle | nil, message, kind */
static int l_watch(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  fswatch_t *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "out of memory");
  w->base.on_close = on_closed;
  binding_handle_init(&w->h, h);
  uv_fs_event_init(&h->loop, &w->event);
  w->event.data = w;
  int rc = uv_fs_event_start(&w->event, on_event, path, 0);
  if (rc) {
    watch_close(w);
    return binding_fail(L, atoll_err_name(rc), "cannot watch %s: %s", path, uv_strerror(rc));
  }
  binding_handle_set_callback(L, &w->h, 0, 2);
  binding_handle_new(L, &w->h, FSWATCH_MT);
  return 1;
}

/* handle:close() */
static int l_close(lua_State *L) {
  binding_handle_t *bh = binding_handle_check(L, 1, FSWATCH_MT);
  if (bh) watch_close(BINDING_CONTAINER(bh, fswatch_t, h));
  return 0;
}

static int l_gc(lua_State *L) {
  binding_handle_t *bh = binding_handle_gc(L, 1, FSWATCH_MT);
  if (bh && !bh->host->closing) watch_close(BINDING_CONTAINER(bh, fswatch_t, h));
  return 0;
}

static const luaL_Reg methods[] = {{"close", l_close}, {NULL, NULL}};
static const luaL_Reg fns[] = {{"watch", l_watch}, {NULL, NULL}};

int luaopen_atoll_c_fswatch(lua_State *L) {
  binding_class(L, FSWATCH_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
