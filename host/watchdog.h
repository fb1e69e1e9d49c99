/* The watchdog: a thread beside the loop that notices Lua code running too long, and a ceiling on
 * the Lua heap. */
#ifndef ATOLL_WATCHDOG_H
#define ATOLL_WATCHDOG_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of a node the watchdog ends (documented in --help and the README). */
#define WATCHDOG_EXIT_STUCK 5 /* a handler kept the loop blocked past the exit limit */
#define WATCHDOG_EXIT_HEAP  6 /* the Lua heap stayed over its ceiling after a full collection */

/* What runs on the loop thread: written by the Lua runtime through the FFI
 * (lib/atoll/runtime.lua declares the same struct) as it starts and resumes
 * handlers, read by the watchdog thread while the loop is stuck. The strings
 * are Lua strings the runtime keeps for the life of the node. It describes
 * the handler that started or resumed last, which is the one that runs when
 * the loop is stuck in user code. */
typedef struct watchdog_running_s {
  double actor;       /* the local id of the actor (0 for a root: the main script, a request) */
  const char *type;   /* its type's name, or the root's label */
  const char *method; /* the method, "timer", "task" or "" (a root); NULL before any */
} watchdog_running_t;

typedef struct watchdog_config_s {
  double warn_ms;      /* log a handler that runs longer than this (0: never) */
  double interrupt_ms; /* raise an `interrupted` error in it after this (0: never) */
  double exit_ms;      /* end the process if the loop is still stuck after this (0: never) */
} watchdog_config_t;

/* The defaults: warn after 1 s, interrupt after 5 s, exit after 30 s. */
void watchdog_default_config(watchdog_config_t *cfg);

/* Sets up the heap accounting of L (its allocator is wrapped; no ceiling
 * yet). `stop(ctx, code)` ends the node after the current loop turn (when
 * live data fills the heap). Once per process. */
void watchdog_init(lua_State *L, void (*stop)(void *ctx, int code), void *ctx);

/* The struct the runtime fills in. */
watchdog_running_t *watchdog_running(void);

/* Starts the watchdog thread for the loop running on the calling thread (or
 * reconfigures it). `interrupt_ref` is a registry reference to a Lua
 * function(kind, message) -> error value, raised in an interrupted handler
 * (kind "interrupted", or "memory" past the heap's ceiling). 0 or a negative
 * error code. */
int watchdog_start(const watchdog_config_t *cfg, int interrupt_ref);

/* Stops and joins the thread (at shutdown; harmless if never started). */
void watchdog_stop(void);

/* The outermost entry into Lua begins and ends (vm.c calls these around
 * every protected call). On the way out, the runtime's stuck-handler hook is
 * withdrawn, and a heap over its high mark is collected. */
void watchdog_enter(void);
void watchdog_leave(lua_State *L);

/* The Lua heap's ceiling in bytes (0: none): past it, the next user code
 * that runs raises `memory`, and past a quarter more (32 MiB at least) the
 * node exits. `report_ref`: a registry reference to a Lua function(message)
 * that logs it with what the runtime knows (the largest actors), called
 * after a full collection once the ceiling was crossed; LUA_NOREF for none. */
void watchdog_set_heap_limit(size_t bytes, int report_ref);

/* Bytes the Lua heap holds now, and its ceiling (0: none). */
size_t watchdog_heap_used(void);
size_t watchdog_heap_limit(void);

/* 1 once the heap crossed its ceiling and has not been collected since. */
int watchdog_heap_over(void);

#endif
