/* The C modules the Lua library is built on, and the one way they own handles, read arguments
 * and report failures (bindings/common.c). Each luaopen_* takes the host as upvalue 1. */
#ifndef ATOLL_BINDINGS_H
#define ATOLL_BINDINGS_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

#include "../host/loop.h"

/* Module names. The C layer is `atoll.c.<name>`, opened by `luaopen_atoll_c_<name>`:
 * - one rule says which modules are C (lib/atoll/ holds the Lua ones, and a Lua module may
 *   wrap a C one of the same name, as atoll.http wraps atoll.c.http and atoll.tcp atoll.c.tcp,
 *   without a `_raw` suffix on some and not on others);
 * - it is the name Lua's own C searcher derives the entry point from (dots become
 *   underscores), so each module could also be built as a shared library and found by
 *   require without a table of exceptions;
 * - a reader of `require "atoll.c.transport"` knows the values it returns are userdata and
 *   C functions, with the failure shape below. */
int luaopen_atoll_c_host(lua_State *L);       /* loop, clock, logging, scheduler hooks */
int luaopen_atoll_c_codec(lua_State *L);      /* MessagePack encode/decode, refs */
int luaopen_atoll_c_fswatch(lua_State *L);    /* directory change notifications */
int luaopen_atoll_c_subprocess(lua_State *L); /* child processes with piped stdio */
int luaopen_atoll_c_transport(lua_State *L);  /* links to other nodes */
int luaopen_atoll_c_tcp(lua_State *L);        /* a plain TCP client socket */
int luaopen_atoll_c_swim(lua_State *L);       /* SWIM membership over UDP */
int luaopen_atoll_c_journal(lua_State *L);    /* event journals */
int luaopen_atoll_c_http(lua_State *L);       /* the HTTP server */

/* The link of an atoll.c.transport link userdata at idx (raises if it is not one), NULL once
 * closed: for modules built apart from the library (tests/hooks). */
typedef struct link_s link_t;
link_t *binding_link(lua_State *L, int idx);

/* The host passed to luaopen_* as upvalue 1. */
#define BINDING_HOST(L) ((host_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* The struct that holds member `m` at address p. */
#define BINDING_CONTAINER(p, type, m) ((type *)((char *)(p)-offsetof(type, m)))

/* ---- failures ----------------------------------------------------------
 * A runtime failure (the network, the file system, a full queue: what a correct program meets)
 * comes back as nil, message, kind, as luv's do (nil, msg, name); misuse (a wrong argument)
 * raises at once, naming the argument. `kind` is a name a caller can test: the atoll error kind
 * where the caller turns the failure into an error object (unreachable, overloaded,
 * bad_argument: lib/atoll/errors.lua), else the code's name (atoll_err_name: ECONNREFUSED,
 * EADDRINUSE, ETOOBIG, ...). Functions whose result may itself be nil (codec.try_decode) keep
 * pcall's shape instead: true, value | false, message. */

/* Pushes nil, the formatted message (vsnprintf's formats) and kind; returns 3. */
int binding_fail(lua_State *L, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Pushes true when rc is 0 (returns 1), else nil, atoll_strerror(rc), atoll_err_name(rc)
 * (returns 3). */
int binding_result(lua_State *L, int rc);

/* ---- arguments ---------------------------------------------------------- */

/* The bytes of argument idx: a Lua string, or a codec payload (a full userdata without a
 * metatable, as atoll.c.codec's pack makes and as frames arrive). Raises otherwise. */
const char *binding_check_bytes(lua_State *L, int idx, size_t *len);

/* Option tables. Each reads field `name` of the table at idx; nil (or no table at all) gives
 * `def`. A value of another type, or a number outside [lo, hi], raises
 * "<what>: <name> must be ...", naming the field. A string stays valid while the table holds
 * it; one over `max` bytes is refused. */
double binding_opt_number(lua_State *L, int idx, const char *what, const char *name, double def,
                          double lo, double hi);
int binding_opt_bool(lua_State *L, int idx, const char *what, const char *name, int def);
const char *binding_opt_string(lua_State *L, int idx, const char *what, const char *name,
                               const char *def, size_t max, size_t *len);

/* ---- objects that own libuv handles -------------------------------------
 * luv's model. The userdata holds a pointer to a binding_handle_t inside the C object. While
 * the object is open, the registry holds the userdata, so Lua code may drop it without the
 * object closing under a callback. When the object has closed (its last close callback ran),
 * binding_handle_release drops that reference and its callbacks' references and clears the
 * userdata's pointer: methods then see NULL (closed) instead of freed memory. __gc runs only
 * once the registry has let go (after release, or at lua_close) and closes what is still open
 * (binding_handle_gc). Lua hears nothing from an object while the host shuts down. */
#define BINDING_CALLBACKS 3

typedef struct binding_handle_s {
  host_t *host;
  lua_State *L;                   /* the main state: callbacks never run on a caller's coroutine */
  struct binding_handle_s **slot; /* the userdata's pointer: cleared when released */
  int ref;                        /* the userdata, held by the registry while the object is open */
  int cb[BINDING_CALLBACKS];      /* Lua functions the object calls, LUA_NOREF when unset */
} binding_handle_t;

/* Sets up bh for host h; no userdata yet. */
void binding_handle_init(binding_handle_t *bh, host_t *h);

/* Makes the object's userdata of class `mt`, anchors it and pushes it. */
void binding_handle_new(lua_State *L, binding_handle_t *bh, const char *mt);

/* Pushes the object's userdata on L; 0 (nothing pushed) when it has none. */
int binding_handle_push(lua_State *L, const binding_handle_t *bh);

/* The object of argument idx (class mt), or NULL once it has closed. */
binding_handle_t *binding_handle_check(lua_State *L, int idx, const char *mt);

/* For __gc: detaches the object of argument idx from its userdata (which is going) and returns
 * it, for the caller to close; NULL when it has closed already. */
binding_handle_t *binding_handle_gc(lua_State *L, int idx, const char *mt);

/* The object has closed: drops the userdata and the callbacks and clears the userdata's
 * pointer. The caller frees the object after. */
void binding_handle_release(binding_handle_t *bh);

/* Stores the function at idx as callback i (nil clears it); raises if it is not one. */
void binding_handle_set_callback(lua_State *L, binding_handle_t *bh, int i, int idx);

/* Pushes callback i on bh->L; 0 (nothing pushed) when there is none or the host is shutting
 * down. */
int binding_handle_callback(const binding_handle_t *bh, int i);

/* ---- the rest ------------------------------------------------------------ */

/* Stores the value at `idx` in the registry, replacing the reference in
 * *ref (LUA_NOREF: none); a nil value clears it. */
void binding_setref(lua_State *L, int idx, int *ref);

/* Creates the metatable `name` of a userdata class once: __index holds
 * `methods`, and __gc and __tostring are set when given. */
void binding_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                   lua_CFunction tostring);

/* Writes a copy of data to a stream (the copy is freed once written) and
 * pushes true, or the failure: what a binding's write method returns. */
int binding_write(lua_State *L, uv_stream_t *stream, const char *data, size_t len);

/* Pushes a module table of `fns`, each closing over the host (upvalue 1). */
void binding_module(lua_State *L, const luaL_Reg *fns);

#endif
