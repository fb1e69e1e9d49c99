/* The LuaJIT state: creation, the embedded library, and the one door from C into Lua. */
#ifndef ATOLL_VM_H
#define ATOLL_VM_H

#include <lua.h>

#include "loop.h"

/* Creates the Lua state for host h: standard libraries, atoll's C modules in
 * package.preload, and the embedded Lua library reachable through require.
 * Returns NULL if LuaJIT cannot allocate a state. */
lua_State *vm_open(host_t *h);
void vm_close(lua_State *L);

/* Calls the function below `nargs` arguments on the stack in protected mode,
 * with a traceback attached to any error. Every call from C into Lua goes
 * through here, so a Lua error never unwinds through a libuv callback. On
 * error, logs "<context>: <message> <traceback>", pops the message and
 * returns the lua_pcall status. */
int vm_pcall(lua_State *L, int nargs, int nresults, const char *context);

/* Same, but leaves the error message and traceback on the stack instead of
 * logging it (for callers that report errors their own way). */
int vm_pcall_quiet(lua_State *L, int nargs, int nresults);

/* Pushes the function held in registry slot `ref` and calls it with the
 * `nargs` arguments above it on the stack, via vm_pcall. */
int vm_call_ref(lua_State *L, int ref, int nargs, const char *context);

#endif
