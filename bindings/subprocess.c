/* atoll.c.subprocess: child processes with piped stdin, stdout and stderr. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/vm.h"
#include "bindings.h"

#define PROC_MT   "atoll.c.subprocess"
#define READ_SIZE 65536

/* The callbacks, in the handle's slots. */
enum { ON_STDOUT, ON_STDERR, ON_EXIT };

typedef struct proc_s {
  host_handle_t base; /* first: every handle below points here through ->data */
  binding_handle_t h;
  uv_process_t process;
  uv_pipe_t io[3]; /* stdin, stdout, stderr */
  int open_handles;
  int exited;
} proc_t;

static proc_t *check_proc(lua_State *L) {
  binding_handle_t *bh = binding_handle_check(L, 1, PROC_MT);
  return bh ? BINDING_CONTAINER(bh, proc_t, h) : NULL;
}

static void on_closed(uv_handle_t *handle) {
  proc_t *p = handle->data;
  if (--p->open_handles > 0) return;
  binding_handle_release(&p->h);
  free(p);
}

static void close_all(proc_t *p) {
  uv_handle_t *hs[4] = {(uv_handle_t *)&p->process, (uv_handle_t *)&p->io[0],
                        (uv_handle_t *)&p->io[1], (uv_handle_t *)&p->io[2]};
  for (int i = 0; i < 4; i++) {
    if (!uv_is_closing(hs[i])) uv_close(hs[i], on_closed);
  }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  (void)suggested;
  buf->base = malloc(READ_SIZE);
  buf->len = buf->base ? READ_SIZE : 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  proc_t *p = stream->data;
  int cb = stream == (uv_stream_t *)&p->io[1] ? ON_STDOUT : ON_STDERR;
  if (nread == 0) {
    free(buf->base);
    return;
  }
  lua_State *L = p->h.L;
  int called = binding_handle_callback(&p->h, cb);
  if (called) {
    if (nread > 0)
      lua_pushlstring(L, buf->base, (size_t)nread);
    else
      lua_pushnil(L); /* end of stream (or a read error) */
  }
  free(buf->base);
  if (nread < 0) uv_read_stop(stream);
  if (called) vm_pcall(L, 1, 0, "subprocess output callback");
}

static void exit_cb(uv_process_t *process, int64_t status, int term_signal) {
  proc_t *p = process->data;
  p->exited = 1;
  if (!binding_handle_callback(&p->h, ON_EXIT)) return;
  lua_State *L = p->h.L;
  lua_pushinteger(L, (lua_Integer)status);
  lua_pushinteger(L, term_signal);
  vm_pcall(L, 2, 0, "subprocess exit callback");
}

static const char *const callback_names[] = {"on_stdout", "on_stderr", "on_exit"};

/* Raises unless each callback in the options (argument 1) is a function or nil. */
static void check_callbacks(lua_State *L) {
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, callback_names[i]);
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) {
      luaL_error(L, "spawn: %s must be a function", callback_names[i]);
    }
    lua_pop(L, 1);
  }
}

/* Reads t[field] as an array of strings into a NULL-terminated vector
 * allocated in a userdata left on the stack (freed by the GC). */
static char **string_vector(lua_State *L, int t, const char *field, const char *first) {
  lua_getfield(L, t, field);
  if (lua_isnil(L, -1) && first == NULL) {
    lua_pop(L, 1);
    return NULL;
  }
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  int off = first ? 1 : 0;
  char **v = lua_newuserdata(L, sizeof(char *) * (size_t)(n + off + 1)); /* [list, v] */
  if (first) v[0] = (char *)first;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -2, i);
    /* Only strings: a number converted here would be a new string that
     * nothing keeps alive until uv_spawn has used it. */
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "spawn: %s[%d] must be a string", field, i);
    v[off + i - 1] = (char *)lua_tostring(L, -1); /* kept alive by the list table below */
    lua_pop(L, 1);
  }
  v[n + off] = NULL;
  return v;
}

/* spawn{ file = path, args = {...}, env = {"K=V", ...}, cwd = dir,
 *        on_stdout = fn(data|nil), on_stderr = fn(data|nil), on_exit = fn(code, signal) }
 * -> handle | nil, message, kind */
static int l_spawn(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  /* The strings stay in the options table, which outlives uv_spawn. */
  const char *file = binding_opt_string(L, 1, "spawn", "file", NULL, 4096, NULL);
  if (file == NULL) return luaL_error(L, "spawn: file must be a string");
  const char *cwd = binding_opt_string(L, 1, "spawn", "cwd", NULL, 4096, NULL);
  int base = lua_gettop(L);
  char **args = string_vector(L, 1, "args", file);
  char **env = string_vector(L, 1, "env", NULL);
  check_callbacks(L);

  proc_t *p = calloc(1, sizeof *p);
  if (p == NULL) return luaL_error(L, "out of memory");
  p->base.on_close = on_closed;
  binding_handle_init(&p->h, h);
  /* Callbacks first: nothing that can raise may come after a successful spawn. */
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, callback_names[i]);
    binding_handle_set_callback(L, &p->h, i, -1);
    lua_pop(L, 1);
  }
  for (int i = 0; i < 3; i++) {
    uv_pipe_init(&h->loop, &p->io[i], 0);
    p->io[i].data = p;
  }
  p->open_handles = 3;

  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&p->io[0];
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->io[1];
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&p->io[2];

  uv_process_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.file = file;
  opts.args = args;
  opts.env = env;
  opts.cwd = cwd;
  opts.exit_cb = exit_cb;
  opts.stdio_count = 3;
  opts.stdio = stdio;

  p->process.data = p;
  int rc = uv_spawn(&h->loop, &p->process, &opts);
  p->open_handles++; /* uv_spawn initializes the process handle even on failure */
  if (rc) {
    close_all(p);
    lua_settop(L, base);
    return binding_fail(L, atoll_err_name(rc), "cannot start %s: %s", file, uv_strerror(rc));
  }
  uv_read_start((uv_stream_t *)&p->io[1], alloc_cb, read_cb);
  uv_read_start((uv_stream_t *)&p->io[2], alloc_cb, read_cb);

  lua_settop(L, base);
  binding_handle_new(L, &p->h, PROC_MT);
  return 1;
}

static int signal_number(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)lua_tointeger(L, idx);
  const char *name = luaL_optstring(L, idx, "SIGTERM");
  static const struct {
    const char *name;
    int num;
  } sigs[] = {{"SIGTERM", SIGTERM}, {"SIGKILL", SIGKILL}, {"SIGINT", SIGINT},
              {"SIGSTOP", SIGSTOP}, {"SIGCONT", SIGCONT}, {"SIGHUP", SIGHUP},
              {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGQUIT", SIGQUIT}};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    if (strcmp(name, sigs[i].name) == 0) return sigs[i].num;
  }
  return luaL_argerror(L, idx, "unknown signal name");
}

/* handle:kill([signal]) -> true | nil, message, kind
 * (signal: "SIGTERM" by default, a name or number) */
static int l_kill(lua_State *L) {
  proc_t *p = check_proc(L);
  int sig = signal_number(L, 2);
  if (p == NULL || p->exited) return binding_fail(L, "ESRCH", "the process has exited");
  return binding_result(L, uv_process_kill(&p->process, sig));
}

/* handle:pid() -> the child's process id */
static int l_pid(lua_State *L) {
  proc_t *p = check_proc(L);
  if (p == NULL) return 0;
  lua_pushinteger(L, p->process.pid);
  return 1;
}

/* handle:write(data) -> true | nil, message, kind */
static int l_write(lua_State *L) {
  proc_t *p = check_proc(L);
  size_t n;
  const char *data = binding_check_bytes(L, 2, &n);
  if (p == NULL || uv_is_closing((uv_handle_t *)&p->io[0])) {
    return binding_fail(L, "EPIPE", "stdin is closed");
  }
  return binding_write(L, (uv_stream_t *)&p->io[0], data, n);
}

/* handle:close_stdin() -- the child reads end of file */
static int l_close_stdin(lua_State *L) {
  proc_t *p = check_proc(L);
  if (p && !uv_is_closing((uv_handle_t *)&p->io[0])) uv_close((uv_handle_t *)&p->io[0], on_closed);
  return 0;
}

/* handle:close() -- releases the handles (the child keeps running if alive) */
static int l_close(lua_State *L) {
  proc_t *p = check_proc(L);
  if (p) close_all(p);
  return 0;
}

static int l_gc(lua_State *L) {
  binding_handle_t *bh = binding_handle_gc(L, 1, PROC_MT);
  if (bh && !bh->host->closing) close_all(BINDING_CONTAINER(bh, proc_t, h));
  return 0;
}

static const luaL_Reg methods[] = {
    {"kill", l_kill},   {"pid", l_pid}, {"write", l_write}, {"close_stdin", l_close_stdin},
    {"close", l_close}, {NULL, NULL},
};
static const luaL_Reg fns[] = {{"spawn", l_spawn}, {NULL, NULL}};

int luaopen_atoll_c_subprocess(lua_State *L) {
  binding_class(L, PROC_MT, methods, l_gc, NULL);
  binding_module(L, fns);
  return 1;
}
