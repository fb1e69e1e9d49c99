-- Durable reminders of virtual actors: a reminder survives the loss of the node that set it and
-- the passivation of its actor; when it is due, the cluster calls `T:reminded(name, due)` on the
-- actor, activating it where it belongs.
--
--   atoll.virtual.remind(self, "turn", 30)                 -- once, in 30 s
--   atoll.virtual.remind(self, "tick", { every = 60 })      -- every minute, from a minute on
--   atoll.virtual.remind(self, "end", { at = unix_seconds }) -- once, then
--   atoll.virtual.forget(self, "turn")
--
-- Where they live: one persistent cluster singleton, "atoll.reminders", hosted by every node
-- that hosts a virtual type. Its journal stream ("atoll/reminders") holds every set, forget and
-- firing, so it starts again elsewhere with every reminder when its node is lost (as any
-- persistent singleton: once the node is downed and the last lease it held ran out).
--
-- What a firing guarantees: at most one call per due time. The firing is journaled before the
-- call is sent, so a reminders instance that starts again after a crash never repeats a firing
-- it had recorded; the price is that a crash in the instant between the record and the send
-- loses that one firing (the window is one journal commit's return to one send). A firing that
-- was due while no instance ran (a failover) goes out as soon as the next instance recovers:
-- late by the failover time. A periodic reminder that missed several periods fires once, then
-- keeps its phase. Due times are wall-clock times: the nodes' clocks must agree (NTP) for a
-- reminder to fire on time after it moved.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"
local actor = require "atoll.actor"
local heap = require "atoll.util.heap"
local errors = require "atoll.util.errors"

local M = {}

M.NAME = "atoll.reminders"
M.MIN_EVERY = 1          -- seconds: the shortest period of a periodic reminder
M.CALL_TIMEOUT = 30      -- seconds a firing's call may take
M.RETRY_FOR = 60         -- seconds a firing that could not be delivered is tried again
local RETRY_STEP = 0.25
local MAX_NAME = 200

local function log(level, msg)
  host.log(level, "reminders", msg)
end

local function wall_ms()
  return math.floor(host.wall())
end

-- (each part length-prefixed but the last: no two reminders share a key whatever bytes they hold)
local function key_of(vtype, id, name)
  local idt = type(id) == "number" and ("n%.0f"):format(id + 0) or "s" .. id
  return #vtype .. ":" .. vtype .. #idt .. ":" .. idt .. name
end

-- check(vtype, id, name, what): raises a caller's error for a malformed reminder.
function M.check_name(name, what)
  if type(name) ~= "string" or #name < 1 or #name > MAX_NAME then
    error(what .. ": a reminder's name is a string of 1 to " .. MAX_NAME .. " bytes", 3)
  end
end

-- when(spec) -> first due (ms since the epoch), period (ms) or nil; raises on a malformed spec.
-- spec: seconds from now (a number), or { at = unix seconds } or { after = seconds }, with an
-- optional every = seconds (the first firing is then after `every`, unless at/after says).
function M.when(spec, what, now)
  now = now or wall_ms()
  if type(spec) == "number" then spec = { after = spec } end
  if type(spec) ~= "table" then
    error(what .. ": when is seconds from now, or { at = unix seconds | after = seconds [, every = seconds] }", 3)
  end
  local at, after, every = spec.at, spec.after, spec.every
  for k, v in pairs { at = at, after = after, every = every } do
    if v ~= nil and (type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge) then
      error(what .. ": " .. k .. " is a number of seconds", 3)
    end
  end
  if at and after then error(what .. ": give at or after, not both", 3) end
  if after and after < 0 then error(what .. ": after is not negative", 3) end
  if every and every < M.MIN_EVERY then
    error(("%s: every is at least %g seconds"):format(what, M.MIN_EVERY), 3)
  end
  local due
  if at then
    due = math.floor(at * 1000)
  elseif after then
    due = now + math.floor(after * 1000)
  elseif every then
    due = now + math.floor(every * 1000)
  else
    error(what .. ": say when: at, after or every", 3)
  end
  -- (milliseconds the journal and the timer can hold exactly)
  if math.abs(due) > 2 ^ 53 or (every and every * 1000 > 2 ^ 53) then
    error(what .. ": that is too far away", 3)
  end
  return due, every and math.floor(every * 1000) or nil
end

---------------------------------------------------------------------------
-- The singleton
---------------------------------------------------------------------------

local Reminders = actor.define("atoll.Reminders", { persistent = true, snapshot_every = 1000 })
M.Reminders = Reminders

-- State: r[key] = { vtype, id, name, due, every }, and a heap of (due, entry) for the timer,
-- kept in step with r by put and drop.

function Reminders:init()
  self.r, self.count, self.fired = {}, 0, 0
  self.queue = heap.new()
  -- Its timer starts once it runs: a gated singleton's timer waits in its mailbox until the
  -- instance recovered and serves (lib/atoll/runtime.lua).
  runtime.after(0, function() M.arm(self) end)
end

function Reminders:persistence_id()
  return "atoll/reminders"
end

local function put(self, k, rec)
  local old = self.r[k]
  if old then self.queue:remove(old) else self.count = self.count + 1 end
  self.r[k] = rec
  self.queue:push(rec[4], rec)
end

local function drop(self, k)
  local old = self.r[k]
  if old then
    self.queue:remove(old)
    self.count = self.count - 1
    self.r[k] = nil
  end
end

-- Events: { "set", vtype, id, name, due, every } | { "forget", vtype, id, name } |
-- { "fired", vtype, id, name, due, next } (next: the following due, nil for a one-off).
function Reminders:apply(e)
  local op, vtype, id, name = e[1], e[2], e[3], e[4]
  local k = key_of(vtype, id, name)
  if op == "set" then
    put(self, k, { vtype, id, name, e[5], e[6] })
  elseif op == "forget" then
    drop(self, k)
  elseif op == "fired" then
    local cur = self.r[k]
    if cur and cur[4] == e[5] then
      self.fired = self.fired + 1
      if e[6] then put(self, k, { vtype, id, name, e[6], cur[5] }) else drop(self, k) end
    end
  end
end

function Reminders:snapshot()
  local list = {}
  for _, v in pairs(self.r) do list[#list + 1] = v end
  return { list = list, fired = self.fired }
end

function Reminders:restore(v)
  self.r, self.count, self.fired, self.queue = {}, 0, v.fired or 0, heap.new()
  for _, rec in ipairs(v.list or {}) do put(self, key_of(rec[1], rec[2], rec[3]), rec) end
end

local function deliver(vtype, id, name, due)
  local virtual = require "atoll.cluster.virtual"
  local deadline = runtime.now_ms() + M.RETRY_FOR * 1000
  while true do
    local ok, err = pcall(function()
      return virtual.get(vtype, id, nil, M.CALL_TIMEOUT):reminded(name, due / 1000)
    end)
    if ok then return end
    local kind = errors.kind(err)
    -- Tried again only when the call surely did not run: nowhere to send it yet, or no room.
    if (kind ~= "unreachable" and kind ~= "overloaded") or runtime.now_ms() > deadline then
      log("warn", ("reminder %s of %s %s (due %.3f): %s"):format(name, vtype, tostring(id), due / 1000,
        tostring(err)))
      return
    end
    runtime.sleep(RETRY_STEP)
  end
end

-- Fires what is due, recording each firing before its call goes out. One round at a time (a
-- handler may run while another waits for the journal).
local function fire_due(self)
  if self.firing then
    self.again = true
    return
  end
  self.firing = true
  local ok, err = pcall(function()
    repeat
      self.again = false
      local now = wall_ms()
      local events, taken = {}, {}
      while self.queue:size() > 0 and self.queue:peek() <= now do
        local _, rec = self.queue:pop()
        taken[#taken + 1] = rec
        local nxt = nil
        if rec[5] then
          nxt = rec[4] + rec[5]
          if nxt <= now then nxt = nxt + math.ceil((now - nxt + 1) / rec[5]) * rec[5] end
        end
        events[#events + 1] = { "fired", rec[1], rec[2], rec[3], rec[4], nxt }
      end
      if #events > 0 then
        local written, werr = pcall(self.emit_all, self, events)
        if not written then
          -- (not recorded: they stay due, and are tried again at the next round)
          for _, rec in ipairs(taken) do
            if self.r[key_of(rec[1], rec[2], rec[3])] == rec and not self.queue:contains(rec) then
              self.queue:push(rec[4], rec)
            end
          end
          error(werr, 0)
        end
        for _, e in ipairs(events) do runtime.task(deliver, e[2], e[3], e[4], e[5]) end
      end
    until not self.again
  end)
  self.firing = false
  if not ok then log("error", "firing reminders: " .. tostring(err)) end
  M.arm(self)
end

-- arm(self): the timer, due at the earliest reminder.
function M.arm(self)
  local due = self.queue:peek()
  if due == nil then
    if self.timer then self.timer:cancel() end
    self.timer, self.timer_due = nil, nil
    return
  end
  if self.timer and self.timer_due == due then return end
  if self.timer then self.timer:cancel() end
  self.timer_due = due
  self.timer = runtime.after(math.max(0, (due - wall_ms()) / 1000), function()
    self.timer, self.timer_due = nil, nil
    runtime.task(fire_due, self)
  end)
end
local arm = M.arm

local function check_target(vtype, id)
  if type(vtype) ~= "string" or #vtype < 1 or #vtype > MAX_NAME then return false end
  local t = type(id)
  if t == "string" then return #id >= 1 and #id <= 200 end
  return t == "number" and id % 1 == 0 and math.abs(id) <= 2 ^ 53
end

-- set(vtype, id, name, due_ms, every_ms) -> due_ms, once durable
function Reminders.distributed:set(vtype, id, name, due, every)
  if not check_target(vtype, id) or type(name) ~= "string" or #name < 1 or #name > MAX_NAME
    or type(due) ~= "number" or due % 1 ~= 0 or (every ~= nil and (type(every) ~= "number" or every < 1)) then
    error(errors.new("bad_request", "set: expected (type, id, name, due ms, every ms or nil)"), 0)
  end
  self:emit { "set", vtype, id, name, due, every }
  arm(self)
  return due
end

-- forget(vtype, id, name) -> true if there was such a reminder
function Reminders.distributed:forget(vtype, id, name)
  if not check_target(vtype, id) or type(name) ~= "string" then return false end
  if self.r[key_of(vtype, id, name)] == nil then return false end
  self:emit { "forget", vtype, id, name }
  arm(self)
  return true
end

-- list(vtype, id) -> { { name = , due = unix seconds, every = seconds or nil }... }
function Reminders.distributed:list(vtype, id)
  local out = {}
  for _, rec in pairs(self.r) do
    if rec[1] == vtype and rec[2] == id then
      out[#out + 1] = { name = rec[3], due = rec[4] / 1000, every = rec[5] and rec[5] / 1000 or nil }
    end
  end
  table.sort(out, function(a, b) return a.due < b.due end)
  arm(self)
  return out
end

-- info() -> { count, fired, next_due (unix seconds) }
function Reminders.distributed:info()
  arm(self)
  return { count = self.count, fired = self.fired, next_due = self.timer_due and self.timer_due / 1000 or nil }
end

---------------------------------------------------------------------------
-- Hosting and the API (atoll.virtual.remind/forget/reminders call these)
---------------------------------------------------------------------------

local hosted = false

-- host(): this node may run the reminders' singleton (every node hosting a virtual type does).
function M.host()
  if hosted then return end
  hosted = true
  local singleton = require "atoll.cluster.singleton"
  singleton.host(M.NAME, Reminders)
end

function M.ref(seconds)
  return require("atoll.cluster.singleton").ref(M.NAME, seconds)
end

M.key_of = key_of

return M
