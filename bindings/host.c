/* atoll.c.host: the loop, clocks, logging and the scheduler's hooks, for lib/atoll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "../host/log.h"
#include "../host/vm.h"
#include "../host/watchdog.h"
#include "bindings.h"

#ifndef ATOLL_VERSION
#define ATOLL_VERSION "0.0.0"
#endif

/* now() -> loop time in milliseconds, as of the start of this loop turn */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_now(&BINDING_HOST(L)->loop));
  return 1;
}

/* update_time() -> refreshes and returns the loop time in milliseconds */
static int l_update_time(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  uv_update_time(&h->loop);
  lua_pushnumber(L, (double)uv_now(&h->loop));
  return 1;
}

/* hrtime() -> monotonic nanoseconds */
static int l_hrtime(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime());
  return 1;
}

/* wall() -> wall-clock milliseconds since the epoch, to the microsecond */
static int l_wall(lua_State *L) {
  uv_timeval64_t tv;
  int rc = uv_gettimeofday(&tv);
  if (rc) return luaL_error(L, "cannot read the clock: %s", uv_strerror(rc));
  lua_pushnumber(L, (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3);
  return 1;
}

/* arm(delay_ms) -- arms the wake timer; an overdue deadline fires on the next turn */
static int l_arm(lua_State *L) {
  host_arm_wake(BINDING_HOST(L), luaL_checknumber(L, 1));
  return 0;
}

/* disarm() -- stops the wake timer */
static int l_disarm(lua_State *L) {
  host_disarm_wake(BINDING_HOST(L));
  return 0;
}

/* idle(on) -- keeps the scheduler's idle handle running, or stops it */
static int l_idle(lua_State *L) {
  host_set_idle(BINDING_HOST(L), lua_toboolean(L, 1));
  return 0;
}

/* set_handlers{ wake = fn, idle = fn, signal = fn } */
static int l_set_handlers(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "wake");
  binding_setref(L, -1, &h->on_wake_ref);
  lua_getfield(L, 1, "idle");
  binding_setref(L, -1, &h->on_idle_ref);
  lua_getfield(L, 1, "signal");
  binding_setref(L, -1, &h->on_signal_ref);
  lua_pop(L, 3);
  return 0;
}

/* run() -> true if stopped by stop(), false if nothing was left to do */
static int l_run(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  int was = h->stopping;
  h->stopping = 0;
  host_run(h);
  lua_pushboolean(L, h->stopping);
  h->stopping = was;
  return 1;
}

/* stop([exit_code]) -- makes run() return; the first code given is kept */
static int l_stop(lua_State *L) {
  host_stop(BINDING_HOST(L), (int)luaL_optinteger(L, 1, 0));
  return 0;
}

/* interrupt() -- makes run() return after this loop turn, with no exit code */
static int l_interrupt(lua_State *L) {
  host_interrupt(BINDING_HOST(L));
  return 0;
}

/* exit_code() -> the code the node will exit with */
static int l_exit_code(lua_State *L) {
  lua_pushinteger(L, BINDING_HOST(L)->exit_code);
  return 1;
}

/* set_exit_code(code) */
static int l_set_exit_code(lua_State *L) {
  BINDING_HOST(L)->exit_code = (int)luaL_checkinteger(L, 1);
  return 0;
}

/* restart() -- once the loop has ended and the node has closed, the process runs its own
 * command line again (host/main.c): a new run of the node, with a new incarnation */
static int l_restart(lua_State *L) {
  BINDING_HOST(L)->restart = 1;
  return 0;
}

/* setenv(name, value) -- for the command run again after host.restart() */
static int l_setenv(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *value = luaL_checkstring(L, 2);
  if (uv_os_setenv(name, value) != 0) return luaL_error(L, "cannot set %s", name);
  return 0;
}

/* watch_signals() -- SIGINT and SIGTERM call the signal handler */
static int l_watch_signals(lua_State *L) {
  int rc = host_watch_signals(BINDING_HOST(L));
  if (rc) return luaL_error(L, "cannot watch signals: %s", uv_strerror(rc));
  return 0;
}

static log_level_t check_level(lua_State *L, int idx) {
  log_level_t level;
  const char *name = luaL_checkstring(L, idx);
  if (log_parse_level(name, &level) != 0) {
    luaL_argerror(L, idx, "log level must be debug, info, warn, error or off");
  }
  return level;
}

/* log(level, subsystem, message) */
static int l_log(lua_State *L) {
  log_level_t level = check_level(L, 1);
  const char *sub = luaL_checkstring(L, 2);
  const char *msg = luaL_checkstring(L, 3);
  log_write(level, sub, "%s", msg);
  return 0;
}

/* log_level([name]) -> the current level's name, after setting it if given */
static int l_log_level(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) log_set_level(check_level(L, 1));
  lua_pushstring(L, log_level_name(log_get_level()));
  return 1;
}

/* incarnation() -> this run's random 52-bit node incarnation */
static int l_incarnation(lua_State *L) {
  lua_pushnumber(L, BINDING_HOST(L)->incarnation);
  return 1;
}

/* name([new]) -> the node's name, after setting it if given */
static int l_name(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  if (!lua_isnoneornil(L, 1)) {
    snprintf(h->name, sizeof h->name, "%s", luaL_checkstring(L, 1));
    log_set_node(h->name);
  }
  lua_pushstring(L, h->name);
  return 1;
}

/* rss() -> resident set size in bytes */
static int l_rss(lua_State *L) {
  size_t rss = 0;
  if (uv_resident_set_memory(&rss) != 0) return 0;
  lua_pushnumber(L, (double)rss);
  return 1;
}

/* exepath() -> absolute path of the running atoll binary */
static int l_exepath(lua_State *L) {
  char buf[4096];
  size_t n = sizeof buf;
  if (uv_exepath(buf, &n) != 0) return 0;
  lua_pushlstring(L, buf, n);
  return 1;
}

/* pid() -> this process's id */
static int l_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  return 1;
}

static void count_walk_cb(uv_handle_t *handle, void *arg) {
  lua_State *L = arg;
  if (uv_is_closing(handle)) return;
  lua_pushstring(L, uv_handle_type_name(handle->type));
  lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
}

/* handles() -> the types of the loop's open handles, e.g. {"timer", "idle"} */
static int l_handles(lua_State *L) {
  lua_newtable(L);
  uv_walk(&BINDING_HOST(L)->loop, count_walk_cb, L);
  return 1;
}

/* active() -> true if the loop has work that keeps it alive */
static int l_active(lua_State *L) {
  lua_pushboolean(L, uv_loop_alive(&BINDING_HOST(L)->loop));
  return 1;
}

/* random_bytes(n) -> n random bytes from the OS */
static int l_random_bytes(lua_State *L) {
  int n = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "between 0 and 4096");
  char buf[4096];
  int rc = uv_random(NULL, NULL, buf, (size_t)n, 0, NULL);
  if (rc) return luaL_error(L, "random_bytes: %s", uv_strerror(rc));
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* hash(s) -> a 53-bit integer: SipHash-2-4 (libsodium's crypto_shorthash) of the bytes of s under
 * a fixed key, the same on every node and every run: for rendezvous placement, not for secrets. */
static int l_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  static const unsigned char key[crypto_shorthash_KEYBYTES] = "atoll-placement";
  unsigned char out[crypto_shorthash_BYTES];
  crypto_shorthash(out, (const unsigned char *)s, len, key);
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | out[i];
  lua_pushnumber(L, (double)(v >> 11));
  return 1;
}

/* A name lookup under way: the Lua callback waits in the registry. */
typedef struct lookup_s {
  uv_getaddrinfo_t req;
  lua_State *L;
  int fn_ref;
} lookup_t;

static void lookup_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  lookup_t *lk = req->data;
  lua_State *L = lk->L;
  host_t *h = req->loop->data;
  if (!h->closing) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->fn_ref);
    if (status == 0) {
      /* Each address once, in the resolver's order. */
      lua_newtable(L);
      lua_newtable(L); /* [fn, list, seen] */
      int n = 0;
      for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[64];
        if (ai->ai_family == AF_INET) {
          uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
        } else if (ai->ai_family == AF_INET6) {
          uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
        } else {
          continue;
        }
        lua_getfield(L, -1, ip);
        int seen = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (seen) continue;
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, ip);
        lua_pushstring(L, ip);
        lua_rawseti(L, -3, ++n);
      }
      lua_pop(L, 1);
      vm_pcall(L, 1, 0, "name lookup callback");
    } else {
      lua_pushnil(L);
      lua_pushstring(L, uv_strerror(status));
      lua_pushstring(L, uv_err_name(status));
      vm_pcall(L, 3, 0, "name lookup callback");
    }
  }
  luaL_unref(L, LUA_REGISTRYINDEX, lk->fn_ref);
  if (res) uv_freeaddrinfo(res);
  free(lk);
}

/* resolve(name, fn) -- looks up name's addresses on the loop's thread pool;
 * fn({ "ip", ... }) or fn(nil, message, kind) when done */
static int l_resolve(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lookup_t *lk = malloc(sizeof *lk);
  if (lk == NULL) return luaL_error(L, "out of memory");
  lk->L = h->L; /* the main state: L may be a coroutine that is suspended by then */
  lua_pushvalue(L, 2);
  lk->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lk->req.data = lk;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(&h->loop, &lk->req, lookup_cb, name, NULL, &hints);
  if (rc) {
    luaL_unref(L, LUA_REGISTRYINDEX, lk->fn_ref);
    free(lk);
    return luaL_error(L, "resolve %s: %s", name, uv_strerror(rc));
  }
  return 0;
}

/* watchdog_running() -> lightuserdata: the struct the runtime tells the
 * watchdog through (host/watchdog.h's watchdog_running_t, via the FFI) */
static int l_watchdog_running(lua_State *L) {
  lua_pushlightuserdata(L, watchdog_running());
  return 1;
}

/* A limit in seconds from the options (argument 1), in milliseconds. */
static double ms_field(lua_State *L, const char *key, double dflt_ms) {
  return binding_opt_number(L, 1, "watchdog", key, dflt_ms / 1000, 0, 31536000) * 1000;
}

/* watchdog{ warn = s, interrupt = s, exit = s, interrupt_error = fn(message) -> err }
 * -> true | nil, message, kind -- starts (or reconfigures) the watchdog thread; 0 turns a
 * limit off */
static int l_watchdog(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  watchdog_config_t cfg;
  watchdog_default_config(&cfg);
  cfg.warn_ms = ms_field(L, "warn", cfg.warn_ms);
  cfg.interrupt_ms = ms_field(L, "interrupt", cfg.interrupt_ms);
  cfg.exit_ms = ms_field(L, "exit", cfg.exit_ms);
  lua_getfield(L, 1, "interrupt_error");
  int ref = LUA_NOREF;
  if (!lua_isnil(L, -1)) {
    luaL_checktype(L, -1, LUA_TFUNCTION);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_pop(L, 1);
  }
  return binding_result(L, watchdog_start(&cfg, ref));
}

/* heap_limit(bytes [, report]) -- the Lua heap's ceiling (0: none); report(message)
 * logs what happened after the ceiling was hit and the heap collected */
static int l_heap_limit(lua_State *L) {
  double bytes = luaL_checknumber(L, 1);
  luaL_argcheck(L, bytes >= 0, 1, "a number of bytes, 0 or more");
  int ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  watchdog_set_heap_limit((size_t)bytes, ref);
  return 0;
}

/* heap() -> bytes used, ceiling (0: none), refused (true once an allocation
 * was refused and the heap not collected since), the machine's memory */
static int l_heap(lua_State *L) {
  lua_pushnumber(L, (double)watchdog_heap_used());
  lua_pushnumber(L, (double)watchdog_heap_limit());
  lua_pushboolean(L, watchdog_heap_over());
  lua_pushnumber(L, (double)uv_get_total_memory());
  return 4;
}

static const luaL_Reg host_fns[] = {
    {"watchdog_running", l_watchdog_running},
    {"watchdog", l_watchdog},
    {"heap_limit", l_heap_limit},
    {"heap", l_heap},
    {"resolve", l_resolve},
    {"now", l_now},
    {"update_time", l_update_time},
    {"hrtime", l_hrtime},
    {"wall", l_wall},
    {"arm", l_arm},
    {"disarm", l_disarm},
    {"idle", l_idle},
    {"set_handlers", l_set_handlers},
    {"run", l_run},
    {"stop", l_stop},
    {"interrupt", l_interrupt},
    {"exit_code", l_exit_code},
    {"set_exit_code", l_set_exit_code},
    {"restart", l_restart},
    {"setenv", l_setenv},
    {"watch_signals", l_watch_signals},
    {"log", l_log},
    {"log_level", l_log_level},
    {"incarnation", l_incarnation},
    {"name", l_name},
    {"rss", l_rss},
    {"exepath", l_exepath},
    {"pid", l_pid},
    {"handles", l_handles},
    {"active", l_active},
    {"random_bytes", l_random_bytes},
    {"hash", l_hash},
    {NULL, NULL},
};

int luaopen_atoll_c_host(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  lua_createtable(L, 0, sizeof host_fns / sizeof host_fns[0] + 1);
  lua_pushlightuserdata(L, h);
  luaL_setfuncs(L, host_fns, 1);
  lua_pushliteral(L, ATOLL_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv_version");
  return 1;
}
