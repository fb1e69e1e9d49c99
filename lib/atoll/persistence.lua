-- Event-sourced actors on the journal (host/journal*.c): recovery, emit, snapshots, single writer.
--
-- An actor type defined with { persistent = true } has
--   T:persistence_id()      -> the id of its event stream (called after init)
--   T:apply(event)          -- changes state; pure: the same events make the same state
--   T:snapshot() / T:restore(value)   (optional; needed with snapshot_every = N)
-- and its code emits events with self:emit(event) (or self:emit_all{...},
-- atomically): emit returns once the event is durable, and then applies it.
--
-- On spawn, init runs, then the actor recovers (the latest snapshot, then the
-- events after it) before it serves its first message; messages that arrive
-- meanwhile wait in its mailbox (at most runtime.STARTING_MAX of them).
--
-- What is guaranteed: an emit that returned is on disk (SQLite: a synced
-- WAL commit; PostgreSQL: a committed transaction) and is applied on every
-- later recovery, in order, once. An emit that failed was not applied; with
-- `journal` it may or may not have been written (a connection lost at
-- commit), and a later recovery decides; with `conflict` another instance
-- of the same persistence id wrote first, and this one stops, because its
-- state is stale. History never forks.
local journal_c = require "atoll.c.journal"
local codec = require "atoll.c.codec"
local runtime = require "atoll.runtime"
local errors = require "atoll.util.errors"
local host = require "atoll.c.host"

local M = {}

local R_STATE, R_TYPE, R_STATUS = runtime.R_STATE, runtime.R_TYPE, runtime.R_STATUS
local STOPPED = runtime.STOPPED
local new_error = errors.new
local READ_PAGE = journal_c.READ_PAGE

local config = { journal = nil, data_dir = "atoll-data" }
local jr = nil       -- the node's journal, opened on first use
local waiting = {}   -- token -> waiter, or a function(status, err, data)
local next_token = 0
local persist = setmetatable({}, { __mode = "k" }) -- rec -> { pid, seq, snap_seq, busy, queue }
local live = {}      -- pid -> rec, for the actors of this node

local function log(level, msg)
  host.log(level, "journal", msg)
end

local function journal_error(fmt, ...)
  return new_error("journal", fmt:format(...))
end

---------------------------------------------------------------------------
-- The journal
---------------------------------------------------------------------------

-- spec(opts) -> the journal spec the options say: --journal, else SQLite
-- in --data-dir.
-- default_path(data_dir) -> the default SQLite journal's file
function M.default_path(data_dir)
  return (data_dir or "atoll-data") .. "/journal.db"
end

local function spec_of(opts)
  local j = opts.journal
  if j == nil or j == "sqlite" then return "sqlite:" .. M.default_path(opts.data_dir) end
  return j
end

-- configure{ journal = SPEC, data_dir = DIR }: SPEC is memory, sqlite,
-- sqlite:PATH or a PostgreSQL URI (postgres://...).
function M.configure(opts)
  if jr then error("the journal is open already; configure it before the first persistent actor", 2) end
  config = { journal = opts.journal, data_dir = opts.data_dir or "atoll-data" }
end

local function on_results(list)
  runtime.refresh_now()
  for i = 1, #list, 4 do
    local token, status, err, data = list[i], list[i + 1], list[i + 2], list[i + 3]
    local w = waiting[token]
    waiting[token] = nil
    if type(w) == "function" then
      local ok, e = xpcall(w, debug.traceback, status, err, data)
      if not ok then log("error", "journal callback failed: " .. tostring(e)) end
    elseif w then
      w:wake({ status, err, data })
    end
  end
  runtime.drain()
end

-- open() -> the journal, or nil and a message. Opens it on first use.
function M.open()
  if jr then return jr end
  local j, err = journal_c.open((spec_of(config)))
  if j == nil then return nil, err end
  j:set_handler(on_results)
  jr = j
  local info = j:info()
  log("info", ("events go to %s %s"):format(info.kind, info.where))
  return jr
end

-- info() -> { kind, where } of the journal, opening it
function M.info()
  local j, err = M.open()
  if j == nil then error(journal_error("%s", err), 2) end
  return j:info()
end

local function token()
  next_token = next_token + 1
  return next_token
end

-- request(method, ...) -> status, error, data: suspends the caller until
-- the journal answers.
local function request(method, ...)
  local j, err = M.open()
  if j == nil then return "failed", err end
  local t = token()
  local w = runtime.waiter()
  waiting[t] = w
  local ok, e = pcall(j[method], j, t, ...)
  if not ok then
    waiting[t] = nil
    error(new_error("bad_argument", tostring(e):gsub("^[^:]*:%d+: ", "")), 3)
  end
  local _, r = w:wait()
  return r[1], r[2], r[3]
end
M.request = request

-- probe() -> true | nil, message: opens the journal and asks it something
-- small, so that a journal that cannot work says so now (PostgreSQL
-- connects only then).
function M.probe()
  local j, err = M.open()
  if j == nil then return nil, err end
  local status, perr = request("load_snapshot", "atoll/probe")
  if status ~= "ok" then return nil, "the journal does not work: " .. tostring(perr) end
  return true
end

-- Sends without waiting: fn(status, err, data) runs when it is done.
local function request_then(fn, method, ...)
  local j, err = M.open()
  if j == nil then
    fn("failed", err)
    return
  end
  local t = token()
  waiting[t] = fn
  j[method](j, t, ...)
end

---------------------------------------------------------------------------
-- Recovery
---------------------------------------------------------------------------

local label = runtime.actor_label

local function decode(bytes, what)
  local v, err = codec.decode(bytes)
  if err then error(("%s does not decode: %s"):format(what, err), 0) end
  return v
end

-- Runs the actor's recovery; true, or false and an error.
local function recover(rec, p)
  local T, state = rec[R_TYPE], rec[R_STATE]
  local status, err, snap = request("load_snapshot", p.pid)
  if status ~= "ok" then return false, journal_error("recovery of %s: %s", p.pid, err) end
  local after = 0
  if snap then
    if type(T.restore) ~= "function" then
      return false, journal_error("the journal holds a snapshot of %s but %s has no restore(value) hook",
        p.pid, T.__name)
    end
    local ok, e = xpcall(function() T.restore(state, decode(snap[2], "the snapshot of " .. p.pid)) end,
      debug.traceback)
    if not ok then
      log("error", ("restoring the snapshot of %s failed: %s"):format(p.pid, e))
      return false, journal_error("restoring the snapshot of %s failed: %s", p.pid,
        (tostring(e):match("^[^\n]*")))
    end
    after = snap[1]
    p.snap_seq = after
  end
  local apply = T.apply
  while true do
    local st, rerr, rows = request("read", p.pid, after, READ_PAGE)
    if st ~= "ok" then return false, journal_error("recovery of %s: %s", p.pid, rerr) end
    local ok, e = xpcall(function()
      for i = 1, #rows, 2 do
        local seq = rows[i]
        if seq ~= after + 1 then
          error(("event %d of %s is missing (the next one is %d)"):format(after + 1, p.pid, seq), 0)
        end
        apply(state, decode(rows[i + 1], ("event %d of %s"):format(seq, p.pid)))
        after = seq
      end
    end, debug.traceback)
    if not ok then
      log("error", ("recovery of %s failed at event %d: %s"):format(p.pid, after + 1, e))
      return false, journal_error("recovery of %s failed at event %d: %s", p.pid, after + 1,
        (tostring(e):match("^[^\n]*")))
    end
    if #rows < 2 * READ_PAGE then break end
  end
  p.seq = after
  return true
end

-- Called by runtime.spawn for a persistent type, once init has run: the
-- actor is STARTING; it runs once recovered, or stops with the error.
function M.activate(rec)
  local T, state = rec[R_TYPE], rec[R_STATE]
  local opts = T.__options
  if type(T.apply) ~= "function" then
    error(T.__name .. " is persistent but has no apply(event) hook", 0)
  end
  if type(T.persistence_id) ~= "function" then
    error(T.__name .. " is persistent but has no persistence_id() hook", 0)
  end
  if opts.snapshot_every and (type(T.snapshot) ~= "function" or type(T.restore) ~= "function") then
    error(T.__name .. " takes snapshots (snapshot_every) but lacks snapshot() or restore(value)", 0)
  end
  local pid = T.persistence_id(state)
  if type(pid) ~= "string" or #pid < 1 or #pid > journal_c.MAX_PID then
    error(("%s:persistence_id() must return a string of 1 to %d bytes, got %s"):format(T.__name,
      journal_c.MAX_PID, tostring(pid)), 0)
  end
  local other = live[pid]
  if other and other[R_STATUS] ~= STOPPED then
    error(("the persistence id %s is live already on this node (%s)"):format(pid, label(other)), 0)
  end
  local _, err = M.open()
  if err then error(journal_error("%s", err), 0) end
  local p = { pid = pid, seq = 0, snap_seq = 0, busy = false, queue = {}, recovering = true }
  persist[rec] = p
  live[pid] = rec
  runtime.start_root(function()
    local ok, rerr = recover(rec, p)
    p.recovering = false
    if rec[R_STATUS] == STOPPED then return end
    if ok then
      runtime.set_running(rec)
    else
      log("error", label(rec) .. ": " .. rerr.message)
      runtime.stop_record(rec, true, rerr)
    end
  end, nil, "recovery")
end

function M.on_stopped(rec)
  local p = persist[rec]
  if p and live[p.pid] == rec then live[p.pid] = nil end
end

---------------------------------------------------------------------------
-- Emitting
---------------------------------------------------------------------------

-- Ends an emit: the next one waiting, if any, takes over (a FIFO lock).
local function release(p)
  local w = table.remove(p.queue, 1)
  if w then
    w:wake(true) -- it owns p.busy now
  else
    p.busy = false
  end
end

-- Wakes every emit waiting (the actor stopped: each of them fails).
local function release_all(p)
  local q = p.queue
  p.queue = {}
  p.busy = false
  for _, w in ipairs(q) do w:wake(false) end
end

local function maybe_snapshot(rec, p)
  local every = rec[R_TYPE].__options.snapshot_every
  if not every or p.seq - p.snap_seq < every then return end
  local ok, value = xpcall(rec[R_TYPE].snapshot, debug.traceback, rec[R_STATE])
  if not ok then
    log("error", label(rec) .. ": snapshot() failed: " .. tostring(value))
    return
  end
  local bytes, err = codec.encode(value)
  if bytes == nil then
    log("error", label(rec) .. ": its snapshot cannot be encoded: " .. tostring(err))
    return
  end
  p.snap_seq = p.seq
  local pid, seq = p.pid, p.seq
  request_then(function(status, serr)
    if status ~= "ok" then log("warn", ("snapshot of %s at %d not saved: %s"):format(pid, seq, serr)) end
  end, "save_snapshot", pid, seq, bytes)
end

local function emit(state, events, what)
  local rec = runtime.current()
  if rec == nil or rec[R_STATE] ~= state then
    error("self:" .. what .. "() must run inside the actor's own code", 3)
  end
  local p = persist[rec]
  if p == nil and not rec[R_TYPE].__options.persistent then
    error(("%s: %s is not persistent (define it with { persistent = true })"):format(what,
      rec[R_TYPE].__name), 3)
  end
  if p == nil or p.recovering then
    error(what .. " during init or recovery: events are emitted once the actor runs", 3)
  end
  local payloads = {}
  for i, ev in ipairs(events) do
    local bytes, err = codec.encode(ev)
    if bytes == nil then error(new_error("bad_argument", ("%s: event %d: %s"):format(what, i, err)), 3) end
    payloads[i] = bytes
  end
  if #payloads == 0 then return p.seq end
  runtime.suspendable(what, 3)
  -- One emit at a time per actor, in the order they were made.
  if p.busy then
    local w = runtime.waiter()
    p.queue[#p.queue + 1] = w
    local _, owner = w:wait()
    if not owner then
      error(new_error("conflict", label(rec) .. " stopped: its persistence id has another writer"), 3)
    end
  end
  p.busy = true
  local first = p.seq + 1
  local status, err = request("append", p.pid, first, #payloads == 1 and payloads[1] or payloads)
  if status == "conflict" then
    release_all(p)
    log("warn", label(rec) .. ": " .. err .. "; stopping, its state is stale")
    runtime.stop_record(rec, false, new_error("conflict", err))
    error(new_error("conflict", ("%s: %s (this instance stopped)"):format(p.pid, err)), 3)
  elseif status ~= "ok" then
    release(p)
    error(journal_error("%s", err), 3)
  end
  -- Durable: apply what will be replayed (the decoded bytes, not the
  -- caller's tables, which it might change later).
  local apply, T = rec[R_TYPE].apply, rec[R_TYPE]
  for i, bytes in ipairs(payloads) do
    p.seq = first + i - 1
    local ok, e = xpcall(apply, debug.traceback, state, codec.decode(bytes))
    if not ok then
      release_all(p)
      log("error", ("%s: apply() failed on event %d, which is written: %s; stopping (a recovery "
        .. "will meet it again)"):format(label(rec), p.seq, tostring(e)))
      runtime.stop_record(rec, false)
      error(new_error("remote", ("%s.apply failed on event %d: %s"):format(T.__name, p.seq, tostring(e))), 3)
    end
  end
  maybe_snapshot(rec, p)
  release(p)
  return p.seq
end

function M.install(Base)
  -- self:emit(event) -> its seq, once durable and applied
  function Base.emit(state, event)
    return emit(state, { event }, "emit")
  end
  -- self:emit_all{ event... } -> the last seq: all durable at once, or none
  function Base.emit_all(state, events)
    if type(events) ~= "table" then error("emit_all needs a list of events", 2) end
    return emit(state, events, "emit_all")
  end
  -- self:last_seq() -> the seq of the last event applied
  function Base.last_seq(state)
    local rec = runtime.current()
    local p = rec and rec[R_STATE] == state and persist[rec]
    return p and p.seq or nil
  end
end

---------------------------------------------------------------------------
-- Looking inside (atoll journal)
---------------------------------------------------------------------------

-- list() -> { { id, events, last_seq }... }
function M.list()
  local status, err, rows = request("list")
  if status ~= "ok" then error(journal_error("%s", err), 2) end
  local out = {}
  for i = 1, #rows, 3 do out[#out + 1] = { id = rows[i], events = rows[i + 1], last_seq = rows[i + 2] } end
  return out
end

-- events(pid, after, limit) -> { { seq, event }... } (up to READ_PAGE)
function M.events(pid, after, limit)
  local status, err, rows = request("read", pid, after or 0, limit or READ_PAGE)
  if status ~= "ok" then error(journal_error("%s", err), 2) end
  local out = {}
  for i = 1, #rows, 2 do out[#out + 1] = { seq = rows[i], event = codec.decode(rows[i + 1]) } end
  return out
end

-- snapshot(pid) -> seq, value | nil
function M.snapshot(pid)
  local status, err, snap = request("load_snapshot", pid)
  if status ~= "ok" then error(journal_error("%s", err), 2) end
  if not snap then return nil end
  return snap[1], codec.decode(snap[2])
end

M.READ_PAGE = READ_PAGE

return M
