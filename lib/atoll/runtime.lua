-- The actor runtime: run queue, dispatcher coroutines, calls, sends, spawn, stop, timers, mailboxes.
--
-- One node is one loop thread and one Lua state. Every message an actor
-- receives sits in one FIFO run queue as (actor, method, payload, reply id);
-- a payload is the MessagePack encoding of the arguments, made by the codec
-- also between actors of the same node, so an actor sees a copy whether its
-- peer is local or remote.
--
-- Messages run on dispatcher coroutines. A dispatcher calls handlers directly,
-- one after another; when a handler suspends (it made a call, or sleeps), the
-- whole dispatcher is handed to that handler and a fresh dispatcher from the
-- pool takes over the queue. So every running message has a coroutine of its
-- own, while a message that never suspends costs no coroutine switch at all.
-- A handed-over dispatcher, once its handler finishes, yields DONE to whoever
-- resumed it and goes back to the pool.

local host = require "atoll.c.host"
local codec = require "atoll.c.codec"
local errors = require "atoll.util.errors"
local Heap = require "atoll.util.heap"

local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_running, co_status = coroutine.running, coroutine.status
local band = bit.band
local table_new = require "table.new"
local pack, pack_results, unpack_ = codec.pack, codec.pack_results, codec.unpack
local xpcall, type, select, getmetatable, setmetatable = xpcall, type, select, getmetatable, setmetatable
local tostring, error, rawget = tostring, error, rawget
local traceback = debug.traceback
local new_error = errors.new
local ffi = require "ffi"

-- What runs, for the watchdog thread (host/watchdog.h): the actor, its type
-- and the method of the handler started or resumed last. Only pointers to
-- strings that live as long as the node go there: type names, method names
-- (pinned by atoll.actor as they are defined), root labels (pinned in
-- start_root) and constants. Nothing is cleared when a handler returns: a
-- store after xpcall costs a third of a local send.
ffi.cdef [[
typedef struct watchdog_running_s {
  double actor;
  const char *type;
  const char *method;
} watchdog_running_t;
]]
local running = ffi.cast("watchdog_running_t *", host.watchdog_running())

local M = {}

-- Tokens a managed coroutine yields to whoever resumed it.
local SUSPEND = { "suspend" } -- waiting for a reply, a timer or an event
local IDLE = { "idle" }       -- a dispatcher found the run queue empty (or its budget spent)
local DONE = { "done" }       -- a handed-over dispatcher finished its handler

-- Slots of an actor record (an array: a million idle actors stay small).
local R_STATE, R_TYPE, R_REF, R_STATUS, R_MAILBOX, R_TIMERS, R_ID, R_NAME = 1, 2, 3, 4, 5, 6, 7, 8
-- Slots only a gated actor (a cluster singleton's instance) has: see M.gate.
local R_GATE, R_BUSY, R_IDLE = 9, 10, 11
local STARTING, RUNNING, STOPPED, HELD = 1, 2, 3, 4
M.R_STATE, M.R_TYPE, M.R_REF, M.R_STATUS, M.R_ID = R_STATE, R_TYPE, R_REF, R_STATUS, R_ID
M.STARTING, M.RUNNING, M.STOPPED, M.HELD = STARTING, RUNNING, STOPPED, HELD
local stop_hooks = {} -- functions run when an actor stops (M.on_stop)

-- Slots of a ref (set by the codec, which interns refs by their payload).
local REF_ADDR, REF_INC, REF_ID, REF_REC = 2, 3, 4, 5 -- slot 1: the encoded payload, the intern key
M.REF_ADDR, M.REF_INC, M.REF_ID = REF_ADDR, REF_INC, REF_ID

-- Queue entry kinds other than a delivery (whose first slot is the actor record).
local REPLY = { "reply" } -- rid, ok, payload-or-error
local WAKE = { "wake" }   -- coroutine, a, b
local RUN = { "run" }     -- actor record, function, timer
local DRAIN = { "drain" } -- actor record whose mailbox holds the next message
local TIMER_DUE = { "timer due" } -- a gated actor's timer, waiting in its mailbox like a message

-- A loop turn runs at most BUDGET queue entries or about TURN_NS of work,
-- whichever comes first, so slow handlers cannot starve timers and I/O. The
-- clock is read every CLOCK_EVERY entries (a power of two).
local BUDGET = 4096
local TURN_NS = 5e6
local CLOCK_EVERY = 32
local POOL_MAX = 256      -- idle dispatchers kept for reuse

---------------------------------------------------------------------------
-- Node identity
---------------------------------------------------------------------------

local node = {
  address = "",                       -- where other nodes reach this one ("" until it listens)
  incarnation = host.incarnation(),   -- random per start: refs of an earlier run are dead
  name = "atoll",
}
M.node = node

---------------------------------------------------------------------------
-- Run queue: a ring of 4 slots per entry, grown by doubling
---------------------------------------------------------------------------

local qcap = 1024 -- entries; a power of two
local q = table_new(qcap * 4, 0)
local qhead = 0   -- index of the first entry
local qn = 0      -- entries queued
local scheduled = false -- the idle handle is on, or a drain is under way
local draining = false

local function grow()
  local ncap = qcap * 2
  local nq = table_new(ncap * 4, 0)
  for k = 0, qn - 1 do
    local i = band(qhead + k, qcap - 1) * 4
    local j = k * 4
    nq[j + 1], nq[j + 2], nq[j + 3], nq[j + 4] = q[i + 1], q[i + 2], q[i + 3], q[i + 4]
  end
  q, qcap, qhead = nq, ncap, 0
end

local function enqueue(a, b, c, d)
  if qn == qcap then grow() end
  local i = band(qhead + qn, qcap - 1) * 4
  q[i + 1], q[i + 2], q[i + 3], q[i + 4] = a, b, c, d
  qn = qn + 1
  if not scheduled then
    scheduled = true
    host.idle(true)
  end
end
M.enqueue = enqueue

local function dequeue()
  local i = qhead * 4
  local a, b, c, d = q[i + 1], q[i + 2], q[i + 3], q[i + 4]
  q[i + 1], q[i + 2], q[i + 3], q[i + 4] = nil, nil, nil, nil
  qhead = band(qhead + 1, qcap - 1)
  qn = qn - 1
  return a, b, c, d
end

-- Coroutines that yielded, resumed at the start of the next loop turn:
-- after everything queued now, and after the loop has polled for I/O.
local next_turn, n_next = {}, 0

local function release_yielders()
  local n = n_next
  if n == 0 then return end
  local list = next_turn
  next_turn, n_next = {}, 0
  for i = 1, n do enqueue(WAKE, list[i], true) end
end

---------------------------------------------------------------------------
-- Time and timers
---------------------------------------------------------------------------

-- The runtime's clock, in ms: the monotonic clock, re-read on every entry
-- from the loop and every few dispatched messages, so a deadline starts at
-- most a few messages late and a timer never fires before its deadline (the
-- loop's own timer may wake us early; expiry checks this clock).
local hrtime = host.hrtime
local now = hrtime() / 1e6
local timers = Heap.new()
local armed_at = nil   -- deadline the host's wake timer is set for

local function refresh_now()
  now = hrtime() / 1e6
  return now
end
M.refresh_now = refresh_now

function M.now_ms()
  return now
end

local function arm()
  local d = timers:peek()
  if d == nil then
    if armed_at then
      host.disarm()
      armed_at = nil
    end
  elseif armed_at == nil or d < armed_at then
    host.arm(d - now)
    armed_at = d
  end
end

local function add_timer(deadline, item)
  timers:push(deadline, item)
  if armed_at == nil or deadline < armed_at then arm() end
end

---------------------------------------------------------------------------
-- Managed coroutines and the current actor
---------------------------------------------------------------------------

local current = nil                         -- record of the actor whose code is running
local current_method = nil                  -- the method it runs (for the watchdog)
local managed = setmetatable({}, { __mode = "k" }) -- coroutines the runtime may suspend
local handed = {}                           -- dispatchers handed to a suspended handler
local roots = {}                            -- root coroutine -> completion callback
local pool, npool = {}, 0
local budget = 0
local turn_deadline = 0

function M.current()
  return current
end

function M.set_current(rec)
  local prev = current
  current = rec
  return prev
end

-- Tells the watchdog that code outside any actor runs, under this label
-- (kept for the life of the node: the watchdog may point at it).
local running_labels = {} -- luacheck: ignore 241 (kept, never read)
function M.running_as(label)
  running_labels[label] = true
  current_method = nil
  running.actor, running.type, running.method = 0, label, ""
end

-- Tells the watchdog that rec's code runs `method`.
local function show_running(rec, method)
  current_method = method
  running.actor = rec[R_ID]
  running.type = rec[R_TYPE].__name
  running.method = method
end

-- The running coroutine, if atoll may suspend it; raises otherwise (at
-- `level`), before the caller has set anything up that would need undoing.
local function suspendable(what, level)
  local co = co_running()
  if co == nil or not managed[co] then
    error("atoll: " .. what .. " must run inside an actor (or atoll.run); "
      .. (co and "this coroutine was not started by atoll" or "this is the main thread"), level + 1)
  end
  return co
end
M.suspendable = suspendable

-- Suspends the running handler until someone resumes it through the queue,
-- and returns what it was resumed with. Callers have checked suspendable().
local function suspend()
  local saved, saved_method = current, current_method
  handed[co_running()] = true
  local a, b = co_yield(SUSPEND)
  current = saved
  if saved then show_running(saved, saved_method) end
  return a, b
end

-- The same, checked: for code outside this module.
function M.suspend()
  suspendable("suspending", 2)
  return suspend()
end

local on_root_finished -- defined below
local depth = 0 -- coroutines resumed from inside a dispatcher, and still running

-- Resumes a suspended coroutine and deals with how it stops again.
local function resume(co, a, b)
  depth = depth + 1
  local ok, st = co_resume(co, a, b)
  depth = depth - 1
  if ok then
    if st == SUSPEND then return end
    if st == DONE then
      handed[co] = nil
      if npool < POOL_MAX then
        npool = npool + 1
        pool[npool] = co
      end
      return
    end
  end
  local status = co_status(co)
  if status == "dead" then
    if ok then
      on_root_finished(co, true, st)
    else
      on_root_finished(co, false, st, traceback(co, tostring(st)))
    end
  elseif ok then
    host.log("error", "atoll", "internal: a coroutine yielded an unknown value: " .. tostring(st))
  else
    host.log("error", "atoll", "internal: cannot resume a coroutine that is " .. status .. ": " .. tostring(st))
  end
end

---------------------------------------------------------------------------
-- Payloads: what a message carries
---------------------------------------------------------------------------

-- A message's arguments, and a call's results, travel as a payload. Between
-- nodes, and whenever a value could be mutated (a table), that is the
-- codec's encoding (a userdata), which the receiver decodes into a copy of
-- its own. Values that cannot be mutated - nil, booleans, numbers, strings -
-- need no copy to keep copy semantics, so between actors of one node they
-- travel as they are: NO_VALUES for none, the value itself for one, a Values
-- table for several. The codec would give the receiver exactly these values
-- (it encodes every number and string losslessly); what would make it
-- refuse them (too many, too large) sends them to the codec instead, which
-- refuses them with its own message.
local NO_VALUES = setmetatable({}, { __name = "atoll.no_values" })
local Values = { __name = "atoll.values" }
local MAX_VALUES = 250 -- host/codec.h's CODEC_MAX_VALUES
local SHORT = 4096     -- strings this long at most travel as they are...
local lite = true      -- ...while the codec's size limit is 1 MiB or more

-- The fast path follows the codec's size limit, which apps and specs may set.
local codec_limits = codec.limits
function codec.limits(t)
  local l = codec_limits(t)
  lite = l.max_bytes >= 1048576 -- then MAX_VALUES strings of SHORT bytes always fit
  return l
end
codec.limits()

local function plain(v)
  local t = type(v)
  return t == "number" or t == "boolean" or (t == "string" and #v <= SHORT)
end

-- Several values, or one nil, as a Values table; nil if one could be mutated.
local function values_table(n, ...)
  if n > MAX_VALUES or not lite then return nil end
  local t = setmetatable({ n = n, ... }, Values)
  for i = 1, n do
    local v = t[i]
    if v ~= nil and not plain(v) then return nil end
  end
  return t
end

-- args(n, ...) -> the payload of a local message: its values as they are
-- when none could be mutated, else the codec's (nil and a message when it
-- refuses them).
local function args(n, a, ...)
  if n == 1 and a ~= nil and lite and plain(a) then return a end
  if n == 0 then return NO_VALUES end
  local t = values_table(n, a, ...)
  if t then return t end
  return pack(a, ...)
end

-- results(...) -> the same for a call's results (refused as "result").
local function results_of(...)
  local n = select("#", ...)
  local a = ...
  if n == 1 and a ~= nil and lite and plain(a) then return a end
  if n == 0 then return NO_VALUES end
  local t = values_table(n, ...)
  if t then return t end
  return pack_results(...)
end

-- open(payload) -> the values it carries
local function open(p)
  local t = type(p)
  if t == "userdata" then return unpack_(p) end
  if t ~= "table" then return p end
  if p == NO_VALUES then return end
  return unpack(p, 1, p.n)
end
M.open = open

-- encoded(payload) -> the payload as the codec's encoding, for a link
function M.encoded(p)
  if type(p) == "userdata" then return p end
  return pack(open(p))
end

---------------------------------------------------------------------------
-- The router: where a call goes when its target is not an actor here
---------------------------------------------------------------------------

-- A call or send names a target. An actor of this node is delivered here;
-- every other target - an actor of another node, an actor registered under
-- a name on another node, and (later) a singleton or a virtual actor - is
-- handed to the router, which the cluster registers once:
--
--   router.call(target, method, payload, rid) -> true | nil, error
--   router.send(target, method, payload)      -> true | nil, error
--
-- with payload the codec's encoding, and rid the pending call that the
-- reply completes (complete/fail below). A call from another node names
-- who to answer with a reply-to record (its :reply(ok, res) method), which
-- the router gives as the message's reply-to instead of a local rid.
local router = nil

function M.set_router(r)
  router = r
end

---------------------------------------------------------------------------
-- Replies and pending calls
---------------------------------------------------------------------------

-- Pending calls live in dense slot arrays. A call id (rid) is a slot plus a
-- generation, so a reply that arrives after its call timed out cannot reach
-- a newer call that reuses the slot.
local P_SLOTS = 16777216 -- 2^24 calls pending at once, at most
local P_GENS = 268435456 -- 2^28 generations per slot, wrapping (rid < 2^53)
local p_co, p_rid, p_tq = {}, {}, {} -- slot -> waiting coroutine, its rid, its timeout queue
local p_slots = require("atoll.util.slots").new()
local npending = 0

-- Calls time out in FIFO queues, one per distinct timeout: within a queue,
-- deadlines come in the order calls were made, so no per-call heap entry is
-- needed. Completed calls are dropped lazily (pruned once per loop turn,
-- compacted when mostly stale); each queue holds one timer in the heap, for
-- its oldest call.
local tqueues, ntqueues = {}, 0 -- array of queues
local tq_by_ms = {}

local TQueue = {}
TQueue.__index = TQueue

local function live(rid)
  local slot = rid % P_SLOTS
  return p_rid[slot] == rid and p_co[slot] ~= nil
end

local function take(rid)
  local slot = rid % P_SLOTS
  if p_rid[slot] ~= rid then return nil end
  local co = p_co[slot]
  if co == nil then return nil end
  local tq = p_tq[slot]
  p_co[slot], p_tq[slot] = nil, nil
  p_slots:give(slot)
  npending = npending - 1
  tq.live = tq.live - 1
  return co
end

-- Drops completed calls from the front; true if the queue still holds calls.
function TQueue:prune()
  local head, tail, rids = self.head, self.tail, self.rid
  while head <= tail and not live(rids[head]) do
    rids[head], self.due[head] = nil, nil
    head = head + 1
  end
  if head > tail then
    self.head, self.tail = 1, 0
    return false
  end
  self.head = head
  -- Mostly stale (a long call holding up the front): keep only live calls.
  if tail - head + 1 > 4 * self.live + 64 then
    local nr, nd, n = {}, {}, 0
    local due = self.due
    for i = head, tail do
      if live(rids[i]) then
        n = n + 1
        nr[n], nd[n] = rids[i], due[i]
      end
    end
    self.rid, self.due, self.head, self.tail = nr, nd, 1, n
    if n == 0 then return false end
  end
  return true
end

-- Keeps this queue's timer at its oldest call's deadline (or none).
function TQueue:rearm()
  if self:prune() then
    local due = self.due[self.head]
    if self.timer_due ~= due then
      if self.timer_due then timers:remove(self) end
      self.timer_due = due
      add_timer(due, self)
    end
  elseif self.timer_due then
    timers:remove(self)
    self.timer_due = nil
  end
end

-- The oldest call's deadline passed: time out every call that is due.
function TQueue:fire()
  self.timer_due = nil
  local rids, due = self.rid, self.due
  while self.head <= self.tail do
    local h = self.head
    local rid = rids[h]
    if live(rid) then
      if due[h] > now then break end
      local co = take(rid)
      enqueue(WAKE, co, false,
        new_error("timeout", ("no reply within the call's timeout (%g s)"):format(self.ms / 1000)))
    end
    rids[h], due[h] = nil, nil
    self.head = h + 1
  end
  self:rearm()
end

local function timeout_queue(ms)
  local tq = tq_by_ms[ms]
  if tq == nil then
    tq = setmetatable({ ms = ms, rid = {}, due = {}, head = 1, tail = 0, live = 0 }, TQueue)
    tq_by_ms[ms] = tq
    ntqueues = ntqueues + 1
    tqueues[ntqueues] = tq
  end
  return tq
end

-- Registers coroutine co (the running one) as waiting for a reply; returns the rid.
local function new_call(seconds, co)
  local slot = p_slots:take()
  local old = p_rid[slot]
  local rid = old and (old + P_SLOTS) or slot
  if rid >= P_SLOTS * P_GENS then rid = slot end
  local ms = seconds * 1000
  local tq = timeout_queue(ms)
  p_rid[slot], p_co[slot], p_tq[slot] = rid, co or co_running(), tq
  npending = npending + 1
  local t = tq.tail + 1
  tq.tail = t
  tq.rid[t], tq.due[t] = rid, now + ms
  tq.live = tq.live + 1
  if tq.timer_due == nil then tq:rearm() end
  return rid
end
M.new_call = new_call

-- Withdraws a call that could not be sent.
local function cancel_call(rid)
  take(rid)
end
M.cancel_call = cancel_call

-- call_pending(rid) -> whether the call still waits for its reply (it has not
-- timed out): a router holding calls drops those whose caller gave up.
function M.call_pending(rid)
  local slot = rid % P_SLOTS
  return p_rid[slot] == rid and p_co[slot] ~= nil
end

-- A pending call ends with (true, payload of its results) or (false, an
-- error object): failures stay error objects on this node, and become bytes
-- only to cross a link (lib/atoll/cluster.lua).
local function complete(rid, ok, res)
  local co = take(rid)
  if co == nil then return end -- timed out already: a late reply is dropped
  resume(co, ok, res)
end

-- Answers the message's reply-to: a call of this node (a number, its rid),
-- or a caller on another node (a record that knows its link). A reply made
-- by a dispatcher the loop resumed wakes its caller at once; one made deeper
-- (a resumed handler replying in turn) goes through the queue, so
-- coroutines never nest more than one level.
local function reply(to, ok, res)
  if type(to) == "number" then
    if depth == 0 and draining then
      complete(to, ok, res)
    else
      enqueue(REPLY, to, ok, res)
    end
  else
    to:reply(ok, res)
  end
end
M.reply = reply

local function fail_call(to, err)
  reply(to, false, err)
end
M.fail_call = fail_call

-- Queues the outcome of the call rid, from another node or from a link that
-- failed: (true, payload) or (false, error object).
function M.enqueue_reply(rid, ok, res)
  enqueue(REPLY, rid, ok, res)
end

---------------------------------------------------------------------------
-- Delivery
---------------------------------------------------------------------------

local function actor_label(rec)
  local T = rec[R_TYPE]
  return (T and T.__name or "actor") .. "#" .. tostring(rec[R_ID])
end
M.actor_label = actor_label

-- Message handler for a failing distributed function: keeps the error value
-- and the callee's traceback.
local function capture(e)
  return { e, traceback("", 2) }
end

-- A call's handler: its results as a payload for a caller of this node, or
-- encoded for one on another node.
local function run_call(fn, state, payload)
  return results_of(fn(state, open(payload)))
end

local function run_remote_call(fn, state, payload)
  return pack_results(fn(state, open(payload)))
end

local function run_send(fn, state, payload)
  fn(state, open(payload))
end

-- Errors of these kinds, raised in a handler and not caught, reach its
-- caller with their kind: the call's own effect failed, or the watchdog
-- stopped it.
local PASSED_ON = { conflict = true, journal = true, interrupted = true, memory = true }

-- LuaJIT's message for an allocation the system refused (the heap's own
-- ceiling raises a `memory` error object instead; host/watchdog.c).
local NOT_ENOUGH_MEMORY = "not enough memory"

-- The part of a handler's traceback that is the application's: without the
-- dispatcher's frames below the handler, nor the call to error() on top,
-- and with the handler named as the actor's method.
local function app_traceback(tb, T, method)
  if tb == nil then return nil end
  local lines, last_app = {}, 0
  for line in tb:gmatch("[^\n]+") do
    if line ~= "stack traceback:" and not line:match("^%s*%[C%]: in function 'error'$") then
      lines[#lines + 1] = line
      if not line:match("^%s*%[C%]") and not line:match("^%s*lib/atoll/") then last_app = #lines end
    end
  end
  if last_app == 0 then return nil end
  local name = T.__name .. "." .. tostring(method)
  lines[last_app] = lines[last_app]:gsub("in function 'fn'$", "in function '" .. name .. "'")
  return "stack traceback:\n" .. table.concat(lines, "\n", 1, last_app)
end
M.app_traceback = app_traceback

local function handler_error(rec, method, caught)
  -- A memory error skips xpcall's message handler: it arrives bare.
  local e, tb = caught, nil
  if type(caught) == "table" then e, tb = caught[1], caught[2] end
  tb = app_traceback(tb, rec[R_TYPE], method)
  if e == NOT_ENOUGH_MEMORY then
    e = new_error("memory", ("the system refused memory while %s.%s was allocating")
      :format(actor_label(rec), tostring(method)))
  end
  if errors.is(e, "bad_argument") and e.decode then
    return new_error("bad_argument", e.message)
  end
  if errors.is(e) and PASSED_ON[e.kind] then
    return new_error(e.kind, e.message, { actor = actor_label(rec), method = method,
                                          traceback = tb })
  end
  local label = actor_label(rec)
  local message = tostring(e)
  local value = nil
  local te = type(e)
  if te == "table" and getmetatable(e) == nil then
    -- error{ message = ... } says its own message; another table shows what it holds.
    if type(e.message) == "string" then
      message = e.message
    else
      local ok, text = pcall(require("atoll.util.json").encode, e)
      message = "a table was raised: " .. (ok and #text <= 300 and text or tostring(e))
    end
  end
  if te == "string" or te == "number" or te == "boolean" then
    value = e
  elseif te == "table" and getmetatable(e) == nil then
    -- A copy, as a caller on another node would get: the raiser keeps its own.
    local bytes = codec.encode(e)
    if bytes then value = codec.decode(bytes) end
  end
  return new_error("remote", message, {
    traceback = tb,
    value = value, actor = label, method = method,
  })
end

local mailbox_push -- defined below
local timer_gated -- defined below

-- Runs one message on a running actor.
local function invoke(rec, method, payload, rid)
  local T = rec[R_TYPE]
  local fn = T.distributed[method]
  if fn == nil then
    local what = rawget(T, method) ~= nil and "is not a distributed function"
      or "is not a function of this actor"
    local err = new_error("not_distributed", T.__name .. "." .. tostring(method) .. " " .. what)
    if rid ~= 0 then
      fail_call(rid, err)
    else
      host.log("warn", actor_label(rec), "one-way message dropped: " .. err.message)
    end
    return
  end
  current, current_method = rec, method
  running.actor, running.type, running.method = rec[R_ID], T.__name, method
  if rid == 0 then
    local ok, caught = xpcall(run_send, capture, fn, rec[R_STATE], payload)
    if not ok then
      local e = handler_error(rec, method, caught)
      host.log("error", actor_label(rec),
        "error in one-way " .. method .. ": " .. tostring(e.message)
        .. (e.traceback and ("\n" .. e.traceback) or ""))
    end
  else
    local ok, res, perr = xpcall(type(rid) == "number" and run_call or run_remote_call, capture, fn,
      rec[R_STATE], payload)
    if not ok then
      reply(rid, false, handler_error(rec, method, res))
    elseif res == nil then
      reply(rid, false, new_error("bad_argument", T.__name .. "." .. method .. " returned " .. perr))
    else
      reply(rid, true, res)
    end
  end
end

local function stopped_error(rec)
  return new_error("no_such_actor", actor_label(rec) .. " has stopped")
end

-- A gated actor's message: its gate says whether it may run now; if not, the
-- actor is held (HELD: its messages wait in its mailbox, in order) until
-- M.release. Counts the handlers it is running, for M.when_idle.
local function busy_ended(rec)
  local busy = rec[R_BUSY] - 1
  rec[R_BUSY] = busy
  local idle = rec[R_IDLE]
  if busy == 0 and idle then
    rec[R_IDLE] = nil
    idle()
  end
end

local function invoke_gated(rec, method, payload, rid)
  rec[R_BUSY] = (rec[R_BUSY] or 0) + 1
  invoke(rec, method, payload, rid)
  busy_ended(rec)
end

-- Routes a message: runs it, holds it in the actor's mailbox, or fails it.
local function deliver(rec, method, payload, rid)
  if rec[R_STATUS] == RUNNING and rec[R_MAILBOX] == nil then
    local gate = rec[R_GATE]
    if gate == nil then return invoke(rec, method, payload, rid) end
    if gate(rec) then return invoke_gated(rec, method, payload, rid) end
    rec[R_STATUS] = HELD
  end
  if rec[R_STATUS] == STOPPED then
    if rid ~= 0 then fail_call(rid, stopped_error(rec)) end
    return
  end
  mailbox_push(rec, method, payload, rid)
end

-- Messages wait in an actor's own mailbox while it is starting (or, later,
-- recovering); once it runs, its mailbox drains one message per DRAIN entry,
-- and new messages queue behind the mailbox until it is empty, so order holds.
M.STARTING_MAX = 10000 -- messages that may wait for an actor that is starting (recovering)

function mailbox_push(rec, method, payload, rid)
  local mb = rec[R_MAILBOX]
  if mb == nil then
    mb = { head = 1, tail = 0 }
    rec[R_MAILBOX] = mb
  elseif (rec[R_STATUS] == STARTING or rec[R_STATUS] == HELD)
    and (mb.tail - mb.head + 1) / 3 >= M.STARTING_MAX then
    local err = new_error("overloaded", ("%s is %s and %d messages wait for it already")
      :format(actor_label(rec), rec[R_STATUS] == HELD and "held" or "starting", M.STARTING_MAX))
    if rid ~= 0 then fail_call(rid, err) end
    return
  end
  local t = mb.tail + 3
  mb[t - 2], mb[t - 1], mb[t] = method, payload, rid
  mb.tail = t
end

local function flush_mailbox(rec, err)
  local mb = rec[R_MAILBOX]
  rec[R_MAILBOX] = nil
  if mb == nil then return end
  for h = mb.head, mb.tail, 3 do
    local rid = mb[h + 2]
    if rid ~= 0 then fail_call(rid, err) end
  end
end

local function drain_mailbox(rec)
  local mb = rec[R_MAILBOX]
  if mb == nil then return end
  if rec[R_STATUS] == STOPPED then
    flush_mailbox(rec, stopped_error(rec))
    return
  end
  if rec[R_STATUS] ~= RUNNING then return end -- paused again; resumes with a new DRAIN
  local gate = rec[R_GATE]
  if gate and not gate(rec) then
    rec[R_STATUS] = HELD -- the message stays first; M.release drains again
    return
  end
  local h = mb.head
  local method, payload, rid = mb[h], mb[h + 1], mb[h + 2]
  mb[h], mb[h + 1], mb[h + 2] = nil, nil, nil
  h = h + 3
  if h > mb.tail then
    rec[R_MAILBOX] = nil
  else
    mb.head = h
    enqueue(DRAIN, rec)
  end
  if gate then
    if method == TIMER_DUE then return timer_gated(rec, payload[1], payload[2]) end
    -- A call of this node that waited while the actor was held, and whose caller gave up (its
    -- timeout), is not run late.
    if type(rid) == "number" and rid ~= 0 and not M.call_pending(rid) then return end
    return invoke_gated(rec, method, payload, rid)
  end
  invoke(rec, method, payload, rid)
end

-- Sets a record running; queued mail drains in order before anything newer.
function M.set_running(rec)
  rec[R_STATUS] = RUNNING
  if rec[R_MAILBOX] then enqueue(DRAIN, rec) end
end

-- Gated actors: a cluster singleton's instance may serve a message only while
-- its node holds the singleton's lease, and not at all once it hands over.
-- gate(rec, fn): before each message, fn(rec) says whether it runs now; when
-- it says no, the actor is HELD, its messages waiting in order in its
-- mailbox, until release(rec). The check is made when the message is about
-- to run, not when it was queued: after the process was stopped or stalled,
-- nothing queued before runs unchecked.
function M.gate(rec, fn)
  rec[R_GATE] = fn
end

-- hold(rec): no message of it starts until release(rec) (one already running
-- goes on).
function M.hold(rec)
  if rec[R_STATUS] == RUNNING then rec[R_STATUS] = HELD end
end

-- release(rec): a held actor runs its waiting messages, then new ones.
function M.release(rec)
  if rec[R_STATUS] == HELD then M.set_running(rec) end
end

-- when_idle(rec, fn): fn() once none of a gated actor's handlers is running
-- (at once if none is). Handlers suspended in a call count as running.
function M.when_idle(rec, fn)
  if (rec[R_BUSY] or 0) == 0 then return fn() end
  local prev = rec[R_IDLE]
  rec[R_IDLE] = prev and function() prev(); fn() end or fn
end

-- take_mailbox(rec) -> { method, payload, reply_to, method, ... }: the
-- messages waiting for rec, in order, which it will no longer see (a
-- singleton's instance handing them to its next instance). reply_to is a
-- pending call's id, a reply-to record of a call from another node, or 0
-- for a one-way message.
function M.take_mailbox(rec)
  local mb = rec[R_MAILBOX]
  rec[R_MAILBOX] = nil
  local out = {}
  if mb == nil then return out end
  for h = mb.head, mb.tail, 3 do
    if mb[h] ~= TIMER_DUE then -- its timers end with it
      out[#out + 1] = mb[h]
      out[#out + 1] = mb[h + 1]
      out[#out + 1] = mb[h + 2]
    end
  end
  return out
end

---------------------------------------------------------------------------
-- Timer entries that run code in an actor's context
---------------------------------------------------------------------------

local function timer_body(rec, fn, timer)
  current = rec
  if rec then show_running(rec, timer.label or "timer") end
  local ok, caught = xpcall(fn, capture)
  if not ok then
    host.log("error", rec and actor_label(rec) or "timer",
      "error in timer callback: " .. tostring(caught[1]) .. "\n" .. (caught[2] or ""):gsub("^\n", ""))
  end
end

-- A gated actor's timer that may run now, counted as one of its handlers.
function timer_gated(rec, fn, timer)
  if timer.cancelled then return end
  rec[R_BUSY] = (rec[R_BUSY] or 0) + 1
  timer_body(rec, fn, timer)
  busy_ended(rec)
end

local function run_timer(rec, fn, timer)
  if timer.cancelled or rec and rec[R_STATUS] == STOPPED then return end
  local gate = rec and rec[R_GATE]
  if gate then
    -- A gated actor's timer is one of its messages: it runs when they may, in their order.
    if rec[R_STATUS] ~= RUNNING or rec[R_MAILBOX] ~= nil or not gate(rec) then
      if rec[R_STATUS] == RUNNING then rec[R_STATUS] = HELD end
      mailbox_push(rec, TIMER_DUE, { fn, timer }, 0)
      return
    end
    return timer_gated(rec, fn, timer)
  end
  timer_body(rec, fn, timer)
end

---------------------------------------------------------------------------
-- Dispatchers and the loop's entry points
---------------------------------------------------------------------------

local function dispatcher_main()
  local me = co_running()
  while true do
    while qn > 0 and budget > 0 do
      budget = budget - 1
      if band(budget, CLOCK_EVERY - 1) == 0 then
        local t = hrtime()
        now = t / 1e6
        if t > turn_deadline then budget = 0 end
      end
      local a, b, c, d = dequeue()
      if a == REPLY then
        complete(b, c, d)
      elseif a == WAKE then
        resume(b, c, d)
      elseif a == RUN then
        run_timer(b, c, d)
      elseif a == DRAIN then
        drain_mailbox(b)
      else
        deliver(a, b, c, d)
      end
      if handed[me] then
        -- This coroutine was handed to a handler that suspended and has now
        -- finished: give it back rather than keep dispatching while nested.
        co_yield(DONE)
      end
    end
    co_yield(IDLE)
  end
end

local function take_dispatcher()
  if npool > 0 then
    local co = pool[npool]
    pool[npool] = nil
    npool = npool - 1
    return co
  end
  local co = co_create(dispatcher_main)
  managed[co] = true
  return co
end

-- Runs queued work for one loop turn; leaves the idle handle on if some remains.
local function drain()
  if draining then return end
  draining = true
  budget = BUDGET
  local t = hrtime()
  now = t / 1e6
  turn_deadline = t + TURN_NS
  while qn > 0 and budget > 0 do
    local co = take_dispatcher()
    local ok, st = co_resume(co)
    if not ok then
      host.log("error", "atoll", "internal: dispatcher failed: " .. tostring(st))
    elseif st == IDLE or st == DONE then
      handed[co] = nil
      npool = npool + 1
      pool[npool] = co
    end
    -- SUSPEND: the dispatcher now belongs to a waiting handler; take another.
  end
  draining = false
  if qn == 0 and n_next == 0 and scheduled then
    scheduled = false
    host.idle(false)
  end
  -- Completed calls stay in their timeout queues until pruned here, once per
  -- turn; a queue left empty drops its timer, and once nothing is left to
  -- time the wake timer is disarmed so that an idle node can exit.
  for i = 1, ntqueues do
    local tq = tqueues[i]
    if tq.timer_due then tq:rearm() end
  end
  if armed_at and timers.n == 0 then
    host.disarm()
    armed_at = nil
  end
end
M.drain = drain

local function expire_timers()
  local t = timers
  while true do
    local d, item = t:peek()
    if d == nil or d > now then break end
    t:remove(item)
    item:fire()
  end
end

local function on_wake()
  refresh_now()
  armed_at = nil
  expire_timers()
  arm()
  drain()
end

local function on_idle()
  refresh_now()
  release_yielders()
  drain()
end

local NEVER_CANCELLED = {}

-- run_in(rec, fn [, token]): runs fn as a message of the actor of `rec` (in
-- its context: it may call and sleep), unless token.cancelled is set or the
-- actor has stopped by then. Entries run in the order they were queued.
function M.run_in(rec, fn, token, label)
  if label then
    -- The token carries what the watchdog calls this code ("terminated", ...).
    token = setmetatable({ label = label }, { __index = token or NEVER_CANCELLED })
  end
  enqueue(RUN, rec, fn, token or NEVER_CANCELLED)
end

-- Wraps a callback from the loop (file watch, process output, ...) so the
-- work it queues runs before the loop sleeps again.
function M.callback(fn)
  return function(...)
    refresh_now()
    fn(...)
    drain()
  end
end

---------------------------------------------------------------------------
-- Timers for actors: sleep, after, every
---------------------------------------------------------------------------

local Timer = {}
Timer.__index = Timer

-- A timer fires from expire_timers: a sleep wakes its coroutine; after/every
-- queue their function to run as a message of the actor that made them.
function Timer:fire()
  if self.co then
    enqueue(WAKE, self.co, true)
    return
  end
  if self.raw then
    -- Runs right here, outside any actor (the loop's own timer callback).
    if not self.cancelled then
      local ok, err = xpcall(self.raw, traceback)
      if not ok then host.log("error", "atoll", "timer callback failed: " .. tostring(err)) end
    end
    return
  end
  if self.cancelled then return end
  enqueue(RUN, self.rec, self.fn, self)
  if self.interval then
    -- Re-arm from the scheduled time, so an `every` does not drift; skip
    -- ticks that were missed entirely.
    local nxt = self.deadline + self.interval
    if nxt <= now then nxt = now + self.interval end
    self.deadline = nxt
    add_timer(nxt, self)
  else
    self:forget()
  end
end

function Timer:forget()
  local rec = self.rec
  local set = rec and rec[R_TIMERS]
  if set then set[self] = nil end
end

-- timer:cancel() -> true if it had not fired yet (or, for every, was active)
function Timer:cancel()
  if self.cancelled then return false end
  self.cancelled = true
  self:forget()
  local was = timers:remove(self)
  arm()
  return was
end

local function check_seconds(s, what)
  if type(s) ~= "number" or s ~= s or s < 0 or s == math.huge then
    error(what .. " must be a non-negative number of seconds", 3)
  end
  return s * 1000
end

function M.sleep(seconds)
  local ms = check_seconds(seconds, "sleep")
  local co = suspendable("sleep", 2)
  local t = setmetatable({ co = co }, Timer)
  t.deadline = now + ms
  add_timer(t.deadline, t)
  suspend()
end

local function schedule(seconds, fn, interval, what)
  local ms = check_seconds(seconds, what)
  if type(fn) ~= "function" then error(what .. " needs a function", 3) end
  local rec = current
  local t = setmetatable({ rec = rec, fn = fn, interval = interval }, Timer)
  t.deadline = now + ms
  if rec then
    local set = rec[R_TIMERS]
    if set == nil then
      set = {}
      rec[R_TIMERS] = set
    end
    set[t] = true
  end
  add_timer(t.deadline, t)
  return t
end

function M.after(seconds, fn)
  return schedule(seconds, fn, nil, "after")
end

function M.every(seconds, fn)
  local ms = check_seconds(seconds, "every")
  if ms <= 0 then error("every needs an interval above zero", 2) end
  return schedule(seconds, fn, ms, "every")
end

-- after_raw(seconds, fn): runs fn outside any actor when the time comes
-- (for the runtime's own housekeeping). Returns a cancellable timer.
function M.after_raw(seconds, fn)
  local t = setmetatable({ raw = fn }, Timer)
  t.deadline = now + check_seconds(seconds, "after_raw")
  add_timer(t.deadline, t)
  return t
end

-- A waiter suspends one coroutine until wake() or a timeout: the building
-- block for waiting on I/O (process output, sockets, replies of any kind).
local Waiter = {}
Waiter.__index = Waiter

function M.waiter()
  return setmetatable({}, Waiter)
end

-- waiter:wait([seconds]) -> true, value | false, "timeout"
function Waiter:wait(seconds)
  local co = suspendable("waiting", 2)
  if self.co then error("this waiter already has a coroutine waiting", 2) end
  self.co = co
  if seconds then
    local me = self
    self.timer = M.after_raw(seconds, function()
      if me.co == co then
        me.co, me.timer = nil, nil
        enqueue(WAKE, co, false, "timeout")
      end
    end)
  end
  return suspend()
end

-- waiter:wake(value) -> true if a coroutine was waiting
function Waiter:wake(value)
  local co = self.co
  if co == nil then return false end
  self.co = nil
  if self.timer then
    self.timer:cancel()
    self.timer = nil
  end
  enqueue(WAKE, co, true, value)
  return true
end

function Waiter:waiting()
  return self.co ~= nil
end

-- A future holds a value that arrives later; any number of coroutines can
-- wait for it. set() resolves it once; fail() makes wait() raise.
local Future = {}
Future.__index = Future

function M.future()
  return setmetatable({ done = false }, Future)
end

local function settle(f, ok, value)
  if f.done then error("this future is already resolved", 3) end
  f.done, f.ok, f.value = true, ok, value
  local ws = f.waiters
  f.waiters = nil
  if ws then
    for i = 1, #ws do ws[i]:wake() end
  end
end

-- future:set(value) resolves it, waking every waiter
function Future:set(value)
  settle(self, true, value)
end

-- future:fail(err) makes every wait() raise err
function Future:fail(err)
  settle(self, false, err)
end

function Future:ready()
  return self.done
end

-- future:wait([seconds]) -> the value; raises the failure, or a timeout error
function Future:wait(seconds)
  self.seen = true
  if not self.done then
    local w = M.waiter()
    local ws = self.waiters
    if ws == nil then
      ws = {}
      self.waiters = ws
    end
    ws[#ws + 1] = w
    local ok = w:wait(seconds)
    if not ok and not self.done then
      for i = #ws, 1, -1 do
        if ws[i] == w then table.remove(ws, i) end
      end
      error(new_error("timeout", "the future was not resolved within " .. seconds .. " s"), 2)
    end
  end
  if not self.ok then error(self.value, 2) end
  return self.value
end

-- A task's failure that nobody retrieves is logged, once its future is
-- garbage: waiting for it later (a fan-out awaiting each in turn) is not an
-- error, and nothing fails silently either. The guard is a userdata whose
-- finalizer sees the future (Lua 5.1 runs __gc only on userdata).
local function watch_failure(f, rec)
  local guard = newproxy(true)
  local label = rec and actor_label(rec) or "main"
  getmetatable(guard).__gc = function()
    if f.done and not f.ok and not f.seen then
      local ok, text = pcall(tostring, f.value)
      pcall(host.log, "error", label, "a task failed and nothing waited for it: " .. (ok and text or "?"))
    end
  end
  f.guard = guard
end

-- task(fn, ...) -> future. Runs fn(...) concurrently, as the running actor
-- (so its calls and timers are that actor's); the future resolves to fn's
-- first result, or fails with its error.
function M.task(fn, ...)
  if type(fn) ~= "function" then error("task needs a function", 2) end
  local f = M.future()
  local rec = current
  local argv, nargs = { ... }, select("#", ...)
  local co = co_create(function()
    current = rec
    if rec then show_running(rec, "task") end
    local ok, res = xpcall(fn, function(e)
      if type(e) == "string" then return traceback(e, 2) end
      return e
    end, unpack(argv, 1, nargs))
    if ok then f:set(res) else f:fail(res) end
    return nil
  end)
  watch_failure(f, rec)
  managed[co] = true
  roots[co] = {}
  enqueue(WAKE, co)
  return f
end

-- Lets everything else run - queued messages, timers, I/O - then continues
-- (a long loop's courtesy).
function M.yield()
  local co = suspendable("yield", 2)
  n_next = n_next + 1
  next_turn[n_next] = co
  if not scheduled then
    scheduled = true
    host.idle(true)
  end
  suspend()
end



---------------------------------------------------------------------------
-- Refs
---------------------------------------------------------------------------

local Ref = {}
M.Ref = Ref
local DEFAULT_TIMEOUT = 5.0
local call -- defined below

-- default_timeout([seconds]) -> the default in force before this call
function M.default_timeout(seconds)
  local old = DEFAULT_TIMEOUT
  if seconds ~= nil then
    check_seconds(seconds, "the default timeout")
    if seconds <= 0 then error("the default timeout must be above zero", 2) end
    DEFAULT_TIMEOUT = seconds
  end
  return old
end

local function make_caller(name)
  return function(self, ...)
    if getmetatable(self) ~= Ref then
      error("call a distributed function with a colon: ref:" .. name .. "(...)", 2)
    end
    return call(self, name, DEFAULT_TIMEOUT, ...)
  end
end

-- method_table(make) -> a table whose t[name] is make(name), made on first
-- use: as an __index, it makes obj:method(...) a plain table lookup, which
-- stays inside compiled traces.
local function method_table(make)
  return setmetatable({}, { __index = function(t, name)
    if type(name) ~= "string" then return nil end
    local f = make(name)
    rawset(t, name, f)
    return f
  end })
end
M.method_table = method_table

Ref.__index = method_table(make_caller)

function Ref.__tostring(ref)
  local rec = rawget(ref, REF_REC)
  if rec then return actor_label(rec) end
  local addr = ref[REF_ADDR]
  return "actor#" .. tostring(ref[REF_ID]) .. "@" .. (addr ~= "" and addr or "?")
    .. string.format("/%x", ref[REF_INC])
end

function M.is_ref(v)
  return type(v) == "table" and getmetatable(v) == Ref
end

-- A view of a ref whose calls use another timeout: atoll.timeout(ref, 0.5):add(1)
local TimeoutView = {}
TimeoutView.__index = method_table(function(name)
  return function(self, ...)
    return call(rawget(self, 1), name, rawget(self, 2), ...)
  end
end)
TimeoutView.__tostring = function(v) return tostring(rawget(v, 1)) .. " (timeout " .. rawget(v, 2) .. " s)" end

---------------------------------------------------------------------------
-- Calls and sends
---------------------------------------------------------------------------

-- The incarnation is drawn at random at every start, so it alone tells
-- whether a ref names an actor of this run of this node.
local function is_local(ref)
  return ref[REF_INC] == node.incarnation
end
M.is_local = is_local

-- The kinds of call targets: actor refs, and those the router knows
-- (an actor named on another node, ...), each by its metatable.
local target_kinds = { [Ref] = true }

-- target_kind(mt): values with this metatable are call targets, which the
-- router resolves (lib/atoll/cluster.lua registers its named-actor handles).
function M.target_kind(mt)
  target_kinds[mt] = true
end

local function check_target(target, level)
  if not target_kinds[getmetatable(target)] then
    error("expected an actor ref, got " .. (getmetatable(target) == TimeoutView and "a timeout view"
      or type(target)), level + 1)
  end
end

local function no_route(target)
  return new_error("unreachable", "no route to " .. tostring(target) .. ": this node has no "
    .. "cluster transport (start it with --listen HOST:PORT)")
end

-- Suspends until the reply to the call just registered; returns its values
-- or raises its error.
local function await_reply()
  local ok, res = suspend()
  if ok then return open(res) end
  error(res, 0)
end
M.await_reply = await_reply

-- The one call: to an actor of this node directly, to any other target
-- through the router.
function call(target, method, timeout, ...)
  local rec = rawget(target, REF_REC)
  if rec ~= nil then
    local payload, err = args(select("#", ...), ...)
    if payload == nil then error(new_error("bad_argument", err), 2) end
    local co = co_running()
    if co == nil or not managed[co] then suspendable("ref:" .. tostring(method) .. "(...)", 3) end
    enqueue(rec, method, payload, new_call(timeout, co))
    return await_reply()
  end
  local payload, err = pack(...)
  if payload == nil then error(new_error("bad_argument", err), 2) end
  local co = co_running()
  if co == nil or not managed[co] then suspendable("ref:" .. tostring(method) .. "(...)", 3) end
  if getmetatable(target) == Ref and is_local(target) then
    error(new_error("no_such_actor", tostring(target) .. " does not exist"), 2)
  end
  if router == nil then error(no_route(target), 2) end
  local rid = new_call(timeout, co)
  local ok, rerr = router.call(target, method, payload, rid)
  if not ok then
    cancel_call(rid)
    error(rerr, 2)
  end
  return await_reply()
end
M.call_with = call

-- call_payload(target, method, payload, seconds) -> true, results payload |
-- false, error object: a call whose arguments are already a payload, and
-- whose results stay one (a router relaying a call it holds to where its
-- target now lives, the reply going back as it came).
function M.call_payload(target, method, payload, seconds)
  local co = suspendable("call_payload", 2)
  local rid = new_call(seconds, co)
  local rec = rawget(target, REF_REC)
  if rec ~= nil then
    enqueue(rec, method, payload, rid)
  else
    if router == nil then
      cancel_call(rid)
      return false, no_route(target)
    end
    local ok, rerr = router.call(target, method, payload, rid)
    if not ok then
      cancel_call(rid)
      return false, rerr
    end
  end
  return suspend()
end

-- call(target, method, ...) with the default timeout, for dynamic method names.
function M.call(target, method, ...)
  check_target(target, 2)
  if type(method) ~= "string" then error("call: method name must be a string", 2) end
  return call(target, method, DEFAULT_TIMEOUT, ...)
end

function M.timeout(target, seconds)
  check_target(target, 2)
  check_seconds(seconds, "the timeout")
  return setmetatable({ target, seconds }, TimeoutView)
end

-- send(target, method, ...): one-way; returns true once queued. A message to
-- an actor that no longer exists is dropped.
function M.send(target, method, ...)
  check_target(target, 2)
  if type(method) ~= "string" then error("send: method name must be a string", 2) end
  local rec = rawget(target, REF_REC)
  if rec ~= nil then
    local payload, err = args(select("#", ...), ...)
    if payload == nil then error(new_error("bad_argument", err), 2) end
    enqueue(rec, method, payload, 0)
    return true
  end
  local payload, err = pack(...)
  if payload == nil then error(new_error("bad_argument", err), 2) end
  if getmetatable(target) == Ref and is_local(target) then return false end
  if router == nil then error(no_route(target), 2) end
  local ok, rerr = router.send(target, method, payload)
  if not ok then error(rerr, 2) end
  return true
end

---------------------------------------------------------------------------
-- Actors
---------------------------------------------------------------------------

local actors = {}     -- local id -> record
local next_id = 1
local count = 0
M.actors = actors

function M.count()
  return count
end

local function keep(e)
  return e
end

-- Recovers a persistent actor before it takes messages (set once, by
-- lib/atoll/persistence.lua).
local activate_persistent = function()
  error("persistent actors need atoll.persistence", 0)
end

function M.set_persistence(activate)
  activate_persistent = activate
end

-- spawn(T, ...) -> ref. Runs T:init(...) at once, in the caller's coroutine,
-- so an error in init raises from spawn; messages that arrive while init is
-- suspended wait in the actor's mailbox.
local function spawn(T, preset, ...)
  local payload, err = args(select("#", ...), ...)
  if payload == nil then error(new_error("bad_argument", err), 4) end
  local id = next_id
  next_id = id + 1
  local state = setmetatable(preset or {}, T.__instance_mt)
  local ref = codec.make_ref(node.address, node.incarnation, id)
  local rec = { state, T, ref, STARTING, nil, nil, id }
  ref[REF_REC] = rec
  actors[id] = rec
  count = count + 1
  local init = T.init
  if init then
    local saved, saved_method = current, current_method
    current = rec
    show_running(rec, "init")
    local ok, e = xpcall(init, keep, state, open(payload))
    current = saved
    if saved then show_running(saved, saved_method) end
    if not ok then
      M.stop_record(rec, true)
      error(e, 0)
    end
  end
  if T.__options.persistent then
    -- It runs once recovered (lib/atoll/persistence.lua); messages wait.
    local ok, e = xpcall(activate_persistent, keep, rec)
    if not ok then
      M.stop_record(rec, true)
      error(e, 0)
    end
    return ref
  end
  M.set_running(rec)
  return ref
end

function M.spawn(T, ...)
  return spawn(T, nil, ...)
end

-- spawn_with(T, fields, ...) -> ref: spawn, with the instance's table starting as `fields` (a
-- fresh table the runtime keeps), which init and persistence_id already see: how a virtual
-- actor's activation learns its id before anything of its own runs.
function M.spawn_with(T, fields, ...)
  return spawn(T, fields, ...)
end

-- Stops the actor of `rec`: later messages fail with no_such_actor; handlers
-- already running finish; its timers are cancelled; T:stopped() runs (not
-- when quiet). Calls waiting in its mailbox fail with err (no_such_actor by
-- default).
function M.stop_record(rec, quiet, err)
  if rec[R_STATUS] == STOPPED then return false end
  rec[R_STATUS] = STOPPED
  actors[rec[R_ID]] = nil
  count = count - 1
  local ref = rec[R_REF]
  ref[REF_REC] = nil
  if rec[R_NAME] then M.unregister(rec[R_NAME]) end
  local set = rec[R_TIMERS]
  rec[R_TIMERS] = nil
  if set then
    for t in pairs(set) do
      t.cancelled = true
      timers:remove(t)
    end
    arm()
  end
  flush_mailbox(rec, err or stopped_error(rec))
  local stopped = rec[R_TYPE].stopped
  if stopped and not quiet then
    local saved, saved_method = current, current_method
    current = rec
    show_running(rec, "stopped")
    local ok, caught = xpcall(stopped, capture, rec[R_STATE])
    current = saved
    if saved then show_running(saved, saved_method) end
    if not ok then
      host.log("error", actor_label(rec), "error in stopped(): " .. tostring(caught[1]))
    end
  end
  for i = 1, #stop_hooks do stop_hooks[i](rec) end
  return true
end

-- on_stop(fn(rec)): fn runs whenever an actor of this node stops (watch,
-- persistence).
function M.on_stop(fn)
  stop_hooks[#stop_hooks + 1] = fn
end

function M.record_of(ref)
  return rawget(ref, REF_REC)
end

---------------------------------------------------------------------------
-- Names
---------------------------------------------------------------------------

local names = {} -- name -> ref of a local actor

function M.register(name, ref)
  local rec = rawget(ref, REF_REC)
  if rec == nil then return nil, tostring(ref) .. " is not a live local actor" end
  local other = names[name]
  if other and other ~= ref and rawget(other, REF_REC) then
    return nil, "the name " .. name .. " is taken by " .. tostring(other)
  end
  if rec[R_NAME] and rec[R_NAME] ~= name then names[rec[R_NAME]] = nil end
  names[name] = ref
  rec[R_NAME] = name
  return true
end

function M.unregister(name)
  local ref = names[name]
  if ref == nil then return false end
  names[name] = nil
  local rec = rawget(ref, REF_REC)
  if rec then rec[R_NAME] = nil end
  return true
end

function M.whereis(name)
  local ref = names[name]
  if ref and rawget(ref, REF_REC) == nil then
    names[name] = nil
    return nil
  end
  return ref
end

---------------------------------------------------------------------------
-- Root coroutines: the main script, atoll.run bodies, system tasks
---------------------------------------------------------------------------

-- A root is a managed coroutine with a pseudo-actor record (no type) so that
-- code in it can make calls and sleep. on_done(true, results) runs when it
-- returns (results = { n = count, ... }), on_done(false, err, traceback) when
-- it raises.
local RootType = { __name = "main", distributed = {}, __instance_mt = {} }
local root_types = setmetatable({}, { __mode = "v" }) -- label -> its pseudo-type
-- Every label used, kept and never read: the watchdog may point at one.
local root_labels = {} -- luacheck: ignore 241

local function results(...)
  return { n = select("#", ...), ... }
end

function M.start_root(fn, on_done, label, ...)
  local T = RootType
  if label then
    -- One pseudo-type per label, made once: roots are started per HTTP request, per recovery.
    T = root_types[label]
    if T == nil then
      root_labels[label] = true
      T = { __name = label, distributed = {}, __instance_mt = {} }
      root_types[label] = T
    end
  end
  local rec = { {}, T, nil, RUNNING, nil, nil, 0 }
  local argv, nargs = { ... }, select("#", ...)
  local co = co_create(function()
    current = rec
    show_running(rec, "")
    return results(fn(unpack(argv, 1, nargs)))
  end)
  managed[co] = true
  roots[co] = { on_done = on_done, rec = rec }
  enqueue(WAKE, co)
  return co
end

function on_root_finished(co, ok, res, tb)
  local root = roots[co]
  roots[co] = nil
  managed[co] = nil
  handed[co] = nil
  if root == nil then
    if not ok then host.log("error", "atoll", "internal: dispatcher died: " .. tostring(tb or res)) end
    return
  end
  -- Timers the root set keep running after it returns (the main script's
  -- `every` is the node's heartbeat); they run as the root's pseudo-actor.
  if root.on_done then
    local ok2, err = xpcall(root.on_done, traceback, ok, res, tb)
    if not ok2 then host.log("error", "atoll", "root completion failed: " .. tostring(err)) end
  end
end

-- The coroutine running now, if atoll manages it.
function M.in_actor()
  local co = co_running()
  return co ~= nil and managed[co] == true
end

---------------------------------------------------------------------------
-- Wiring to the host
---------------------------------------------------------------------------

-- What SIGINT and SIGTERM do (the first of them: a second ends the process
-- from the C signal handler): stop at once, unless the command line set a
-- graceful shutdown.
local on_signal = function() host.stop(0) end

function M.set_signal_handler(fn)
  on_signal = fn
end

function M.install()
  codec.configure { ref_mt = Ref, error_mt = errors.Error }
  host.set_handlers { wake = on_wake, idle = on_idle, signal = function(name)
    refresh_now()
    on_signal(name)
    drain()
  end }
end

return M
