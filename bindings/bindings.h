/* The C modules the Lua library is built on: each luaopen_* takes the host as upvalue 1. */
#ifndef ATOLL_BINDINGS_H
#define ATOLL_BINDINGS_H

#include <lauxlib.h>
#include <lua.h>

#include "../host/loop.h"

int luaopen_atoll_host(lua_State *L);       /* loop, clock, logging, scheduler hooks */
int luaopen_atoll_codec(lua_State *L);      /* MessagePack encode/decode, refs */
int luaopen_atoll_fswatch(lua_State *L);    /* directory change notifications */
int luaopen_atoll_subprocess(lua_State *L); /* child processes with piped stdio */
int luaopen_atoll_transport(lua_State *L);  /* links to other nodes */
int luaopen_atoll_tcp(lua_State *L);        /* a plain TCP client socket */
int luaopen_atoll_swim(lua_State *L);       /* SWIM membership over UDP */
int luaopen_atoll_journal(lua_State *L);    /* event journals */
int luaopen_atoll_http_raw(lua_State *L);   /* the HTTP server */

/* The host passed to luaopen_* as upvalue 1. */
#define BINDING_HOST(L) ((host_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* Stores the value at `idx` in the registry, replacing the reference in
 * *ref (LUA_NOREF: none); a nil value clears it. */
void binding_setref(lua_State *L, int idx, int *ref);

/* Creates the metatable `name` of a userdata class once: __index holds
 * `methods`, and __gc and __tostring are set when given. */
void binding_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                   lua_CFunction tostring);

/* Pushes true when rc is 0, else nil and libuv's message for it: what a
 * binding's fallible method returns. */
int binding_result(lua_State *L, int rc);

/* Writes a copy of data to a stream (the copy is freed once written) and
 * pushes true, or nil and the error: what a binding's write method returns. */
int binding_write(lua_State *L, uv_stream_t *stream, const char *data, size_t len);

/* Pushes a module table of `fns`, each closing over the host (upvalue 1). */
void binding_module(lua_State *L, const luaL_Reg *fns);

#endif
