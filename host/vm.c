/* The LuaJIT state and the one protected door from C into Lua. */
#include "vm.h"

#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <unistd.h>

#include "../bindings/bindings.h"
#include "log.h"
#include "watchdog.h"

/* Message handler: turns any error value into text and appends a traceback.
 * [err] -> [message with traceback] */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) {
      msg = lua_tostring(L, -1);
    } else {
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int vm_pcall_quiet(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs; /* index of the function */
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  watchdog_enter();
  int rc = lua_pcall(L, nargs, nresults, base);
  watchdog_leave(L);
  lua_remove(L, base);
  return rc;
}

int vm_pcall(lua_State *L, int nargs, int nresults, const char *context) {
  int rc = vm_pcall_quiet(L, nargs, nresults);
  if (rc != 0) {
    log_error("lua", "%s: %s", context ? context : "callback", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  return rc;
}

int vm_call_ref(lua_State *L, int ref, int nargs, const char *context) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref); /* [args..., fn] */
  lua_insert(L, -(nargs + 1));            /* [fn, args...] */
  return vm_pcall(L, nargs, 0, context);
}

static void preload(lua_State *L, host_t *h, const char *name, lua_CFunction open) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload"); /* [package, preload] */
  lua_pushlightuserdata(L, h);
  lua_pushcclosure(L, open, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
}

/* An error outside any protected call: LuaJIT would print it and exit; say
 * why in the node's log first, naming the heap ceiling when that was it. */
static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  if (msg && strcmp(msg, "not enough memory") == 0) {
    log_error("memory",
              "the system refused memory where no error can be handled: exiting "
              "with code %d",
              WATCHDOG_EXIT_HEAP);
    _exit(WATCHDOG_EXIT_HEAP);
  }
  log_error("lua", "unprotected error: %s", msg ? msg : "(not a string)");
  _exit(1);
}

static void stop_host(void *ctx, int code) {
  host_stop(ctx, code);
}

lua_State *vm_open(host_t *h) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  lua_atpanic(L, panic);
  watchdog_init(L, stop_host, h);
  luaL_openlibs(L);
  /* C modules; the Lua library (lib/atoll) is linked in as LuaJIT bytecode
   * and found by require through its luaJIT_BC_* symbols. */
  preload(L, h, "atoll.c.host", luaopen_atoll_c_host);
  preload(L, h, "atoll.c.codec", luaopen_atoll_c_codec);
  preload(L, h, "atoll.c.fswatch", luaopen_atoll_c_fswatch);
  preload(L, h, "atoll.c.subprocess", luaopen_atoll_c_subprocess);
  preload(L, h, "atoll.c.transport", luaopen_atoll_c_transport);
  preload(L, h, "atoll.c.tcp", luaopen_atoll_c_tcp);
  preload(L, h, "atoll.c.swim", luaopen_atoll_c_swim);
  preload(L, h, "atoll.c.journal", luaopen_atoll_c_journal);
  preload(L, h, "atoll.c.http", luaopen_atoll_c_http);
  h->L = L;
  return L;
}

void vm_close(lua_State *L) {
  if (L != NULL) lua_close(L);
}
