/* atoll.c.journal: event journals (host/journal.c), for lib/atoll/persistence.lua and the tools. */
#include <stdlib.h>
#include <string.h>

#include "../host/error.h"
#include "../host/journal.h"
#include "../host/vm.h"
#include "bindings.h"

#define JOURNAL_MT "atoll.c.journal"

typedef struct lj_s {
  journal_t j; /* first: its base is the async handle's owner */
  lua_State *L;
  int self_ref;    /* keeps the userdata alive while its handle is open */
  int handler_ref; /* fn(results) */
  int results_ref; /* the table results are handed over in */
} lj_t;

static const char *const status_names[] = {"ok", "conflict", "failed"};

static lj_t *check(lua_State *L) {
  lj_t *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  if (lj->j.closed) luaL_error(L, "the journal is closed");
  return lj;
}

/* Pushes what a request brought back: rows of a read as { seq, payload,
 * seq, payload, ... }, a snapshot as { seq, payload }, a list as { pid,
 * count, last_seq, ... }; nothing for an append or a snapshot save. */
static void push_data(lua_State *L, const jreq_t *r) {
  const char *p = r->out.data;
  switch (r->kind) {
    case JREQ_READ:
      lua_createtable(L, (int)r->rows * 2, 0);
      for (uint32_t i = 0; i < r->rows; i++) {
        uint32_t len = journal_get_u32(p + 8);
        lua_pushnumber(L, (double)journal_get_u64(p));
        lua_rawseti(L, -2, (int)(2 * i + 1));
        lua_pushlstring(L, p + 12, len);
        lua_rawseti(L, -2, (int)(2 * i + 2));
        p += 12 + len;
      }
      return;
    case JREQ_SNAP_LOAD:
      if (r->rows == 0) {
        lua_pushboolean(L, 0);
        return;
      }
      lua_createtable(L, 2, 0);
      lua_pushnumber(L, (double)journal_get_u64(p));
      lua_rawseti(L, -2, 1);
      lua_pushlstring(L, p + 8, r->out.len - 8);
      lua_rawseti(L, -2, 2);
      return;
    case JREQ_LIST:
      lua_createtable(L, (int)r->rows * 3, 0);
      for (uint32_t i = 0; i < r->rows; i++) {
        unsigned char len = (unsigned char)p[0];
        lua_pushlstring(L, p + 1, len);
        lua_rawseti(L, -2, (int)(3 * i + 1));
        lua_pushnumber(L, (double)journal_get_u64(p + 1 + len));
        lua_rawseti(L, -2, (int)(3 * i + 2));
        lua_pushnumber(L, (double)journal_get_u64(p + 9 + len));
        lua_rawseti(L, -2, (int)(3 * i + 3));
        p += 17 + len;
      }
      return;
    default:
      lua_pushboolean(L, 0);
      return;
  }
}

/* Finished requests, handed to Lua in one batch per wake-up: the handler
 * gets { token, status, error|false, data|false, ... }. */
static void on_done(journal_t *j, jreq_t *r, int last) {
  lj_t *lj = (lj_t *)j;
  lua_State *L = lj->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lj->results_ref);
  int n = (int)lua_objlen(L, -1);
  lua_pushnumber(L, r->token);
  lua_rawseti(L, -2, n + 1);
  lua_pushstring(L, status_names[r->status]);
  lua_rawseti(L, -2, n + 2);
  if (r->status != JOURNAL_OK)
    lua_pushstring(L, r->error);
  else
    lua_pushboolean(L, 0);
  lua_rawseti(L, -2, n + 3);
  if (r->status == JOURNAL_OK)
    push_data(L, r);
  else
    lua_pushboolean(L, 0);
  lua_rawseti(L, -2, n + 4);
  lua_pop(L, 1);
  journal_req_free(r);
  /* The last one of this wake-up delivers the batch. */
  if (!last || lj->handler_ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lj->handler_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lj->results_ref);
  /* A fresh table for the next batch: the handler keeps this one. */
  lua_newtable(L);
  luaL_unref(L, LUA_REGISTRYINDEX, lj->results_ref);
  lj->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  vm_pcall(L, 1, 0, "journal handler");
}

static void async_closed(uv_handle_t *h) {
  lj_t *lj = (lj_t *)h->data;
  if (lj->j.host->closing) return;
  luaL_unref(lj->L, LUA_REGISTRYINDEX, lj->self_ref);
  lj->self_ref = LUA_NOREF;
}

/* open(spec) -> journal | nil, message, kind */
static int l_open(lua_State *L) {
  host_t *h = BINDING_HOST(L);
  const char *spec = luaL_checkstring(L, 1);
  lj_t *lj = lua_newuserdata(L, sizeof *lj);
  memset(lj, 0, sizeof *lj);
  lj->L = h->L;
  lj->self_ref = lj->handler_ref = lj->results_ref = LUA_NOREF;
  char err[512];
  int rc = journal_open(&lj->j, h, spec, err, sizeof err);
  if (rc) return binding_fail(L, atoll_err_name(rc), "%s", err);
  lj->j.on_done = on_done;
  lj->j.base.on_close = NULL; /* the host's shutdown closes the handle; Lua is going too */
  luaL_getmetatable(L, JOURNAL_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lj->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lj->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static jreq_t *new_req(lua_State *L, jreq_kind_t kind, int token_idx, int pid_idx) {
  double token = luaL_checknumber(L, token_idx);
  size_t plen = 0;
  const char *pid = pid_idx ? luaL_checklstring(L, pid_idx, &plen) : NULL;
  if (pid_idx && (plen == 0 || plen > JOURNAL_MAX_PID)) {
    luaL_error(L, "a persistence id must be 1 to %d bytes", JOURNAL_MAX_PID);
  }
  jreq_t *r = journal_req_new(kind, token, pid, plen);
  if (r == NULL) luaL_error(L, "out of memory");
  return r;
}

static uint64_t check_seq(lua_State *L, int idx) {
  double d = luaL_checknumber(L, idx);
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) {
    luaL_error(L, "a sequence number must be an integer from 0 to 2^53");
  }
  return (uint64_t)d;
}

static void add_event(lua_State *L, jreq_t *r, int idx) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  journal_put_u32(&r->data, (uint32_t)len);
  buf_append(&r->data, s, len);
  r->count++;
}

/* j:append(token, pid, first_seq, payload | { payload... }): the events go in
 * atomically, as first_seq, first_seq + 1, ... */
static int l_append(lua_State *L) {
  lj_t *lj = check(L);
  uint64_t seq = check_seq(L, 4);
  if (seq == 0) return luaL_error(L, "sequence numbers start at 1");
  jreq_t *r = new_req(L, JREQ_APPEND, 2, 3);
  r->seq = seq;
  if (lua_istable(L, 5)) {
    int n = (int)lua_objlen(L, 5);
    if (n < 1 || n > JOURNAL_BATCH_MAX) {
      journal_req_free(r);
      return luaL_error(L, "append takes 1 to %d events at once", JOURNAL_BATCH_MAX);
    }
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 5, i);
      if (!lua_isstring(L, -1)) {
        journal_req_free(r);
        return luaL_error(L, "event %d is not a string of bytes", i);
      }
      add_event(L, r, -1);
      lua_pop(L, 1);
    }
  } else {
    if (!lua_isstring(L, 5)) {
      journal_req_free(r);
      return luaL_error(L, "append needs the event's bytes");
    }
    add_event(L, r, 5);
  }
  journal_submit(&lj->j, r);
  return 0;
}

/* j:read(token, pid, after_seq [, limit]) */
static int l_read(lua_State *L) {
  lj_t *lj = check(L);
  uint64_t seq = check_seq(L, 4);
  lua_Integer limit = luaL_optinteger(L, 5, JOURNAL_READ_PAGE);
  if (limit < 1 || limit > JOURNAL_READ_PAGE)
    return luaL_error(L, "read at most %d events", JOURNAL_READ_PAGE);
  jreq_t *r = new_req(L, JREQ_READ, 2, 3);
  r->seq = seq;
  r->count = (uint32_t)limit;
  journal_submit(&lj->j, r);
  return 0;
}

/* j:save_snapshot(token, pid, seq, payload) */
static int l_save_snapshot(lua_State *L) {
  lj_t *lj = check(L);
  uint64_t seq = check_seq(L, 4);
  size_t len;
  const char *s = luaL_checklstring(L, 5, &len);
  jreq_t *r = new_req(L, JREQ_SNAP_SAVE, 2, 3);
  r->seq = seq;
  buf_append(&r->data, s, len);
  journal_submit(&lj->j, r);
  return 0;
}

/* j:load_snapshot(token, pid) */
static int l_load_snapshot(lua_State *L) {
  lj_t *lj = check(L);
  journal_submit(&lj->j, new_req(L, JREQ_SNAP_LOAD, 2, 3));
  return 0;
}

/* j:list(token) */
static int l_list(lua_State *L) {
  lj_t *lj = check(L);
  journal_submit(&lj->j, new_req(L, JREQ_LIST, 2, 0));
  return 0;
}

/* j:set_handler(fn(results)) */
static int l_set_handler(lua_State *L) {
  lj_t *lj = check(L);
  binding_setref(L, 2, &lj->handler_ref);
  return 0;
}

/* j:info() -> { kind, where } */
static int l_info(lua_State *L) {
  lj_t *lj = check(L);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, lj->j.kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, lj->j.where);
  lua_setfield(L, -2, "where");
  return 1;
}

/* j:close(): finishes what is under way (results no longer come) */
static int l_close(lua_State *L) {
  lj_t *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  if (lj->j.closed) return 0;
  lj->j.async.data = lj;
  lj->j.base.on_close = async_closed;
  journal_close(&lj->j);
  return 0;
}

static int l_gc(lua_State *L) {
  lj_t *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  journal_close(&lj->j);
  luaL_unref(L, LUA_REGISTRYINDEX, lj->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lj->results_ref);
  lj->handler_ref = lj->results_ref = LUA_NOREF;
  return 0;
}

static int l_tostring(lua_State *L) {
  lj_t *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  lua_pushfstring(L, "journal %s %s%s", lj->j.kind, lj->j.where, lj->j.closed ? " (closed)" : "");
  return 1;
}

static const luaL_Reg methods[] = {
    {"append", l_append},
    {"read", l_read},
    {"save_snapshot", l_save_snapshot},
    {"load_snapshot", l_load_snapshot},
    {"list", l_list},
    {"set_handler", l_set_handler},
    {"info", l_info},
    {"close", l_close},
    {NULL, NULL},
};

static const luaL_Reg fns[] = {
    {"open", l_open},
    {NULL, NULL},
};

int luaopen_atoll_c_journal(lua_State *L) {
  binding_class(L, JOURNAL_MT, methods, l_gc, l_tostring);
  binding_module(L, fns);
  lua_pushinteger(L, JOURNAL_READ_PAGE);
  lua_setfield(L, -2, "READ_PAGE");
  lua_pushinteger(L, JOURNAL_BATCH_MAX);
  lua_setfield(L, -2, "BATCH_MAX");
  lua_pushinteger(L, JOURNAL_MAX_PID);
  lua_setfield(L, -2, "MAX_PID");
  return 1;
}
