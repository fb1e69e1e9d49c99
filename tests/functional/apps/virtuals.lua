-- A member that hosts the virtual counter type VCounter (persistent with VIRTUAL_PERSISTENT=1),
-- with a driver actor that calls many ids, for the virtual actors' specs. Every activation
-- prints its start and every call it serves on the monotonic clock all processes share:
--
--   vstart ID RUN T      an activation of ID started (RUN: this node's incarnation, a number)
--   vserve ID RUN N T    it served its Nth add
--   vstop ID RUN T       it was deactivated
local atoll = require "atoll"

local persistent = os.getenv("VIRTUAL_PERSISTENT") == "1"
local idle = tonumber(os.getenv("VIRTUAL_IDLE") or "") or 600
local runs = 0

local VCounter = atoll.actor.define("VCounter", { persistent = persistent })
function VCounter:init(id)
  self.id, self.n = id, 0
  runs = runs + 1
  self.run = ("%x.%d"):format(atoll.node().incarnation, runs)
  print(("vstart %s %s %.6f"):format(tostring(id), self.run, atoll.now()))
end
function VCounter:apply(e) self.n = self.n + e.k end
function VCounter.distributed:add(k)
  if persistent then self:emit { k = k } else self.n = self.n + k end
  print(("vserve %s %s %d %.6f"):format(tostring(self.id), self.run, self.n, atoll.now()))
  return self.n
end
function VCounter.distributed:get() return self.n end
function VCounter.distributed:where() return atoll.node().address end
-- Reminders: remind(name, seconds) sets one; each firing prints
--   vremind ID RUN NAME DUE WALL T   (DUE and WALL: unix seconds; T: the monotonic clock)
function VCounter.distributed:remind(name, seconds) return atoll.virtual.remind(self, name, seconds) end
function VCounter.distributed:forget(name) return atoll.virtual.forget(self, name) end
function VCounter.distributed:reminded(name, due)
  print(("vremind %s %s %s %.3f %.3f %.6f"):format(tostring(self.id), self.run, name, due,
    require("atoll.c.host").wall() / 1000, atoll.now()))
end
function VCounter:deactivate() print(("vstop %s %s %.6f"):format(tostring(self.id), self.run, atoll.now())) end
atoll.virtual.define(VCounter, { idle_timeout = idle })
atoll.virtual.host(VCounter)

-- pool(n, next_job, seconds): n tasks each taking jobs from next_job() (a function, or nil when
-- there are no more) and running them, until none is left or `seconds` passed.
local function pool(n, next_job, seconds)
  local running = 0
  local waiter = require("atoll.runtime").waiter()
  local function worker()
    while true do
      local job = next_job()
      if job == nil then break end
      job()
    end
    running = running - 1
    if running == 0 then waiter:wake() end
  end
  for _ = 1, n do
    running = running + 1
    atoll.task(worker)
  end
  waiter:wait(seconds)
end

-- A tally of calls: { ok, failed, kinds = { kind -> n } }, and add(id, timeout) that counts one.
local function tally()
  local t = { ok = 0, failed = 0, kinds = {} }
  local function add(id, seconds)
    local good, err = pcall(function() return atoll.virtual.get("VCounter", id, nil, seconds):add(1) end)
    if good then
      t.ok = t.ok + 1
    else
      t.failed = t.failed + 1
      local kind = atoll.errors.kind(err) or tostring(err)
      t.kinds[kind] = (t.kinds[kind] or 0) + 1
    end
  end
  return t, add
end

local Driver = atoll.actor.define "Driver"
-- Calls add(1) on ids first..last, `concurrency` at a time; returns { ok, failed, kinds }.
function Driver.distributed:run(first, last, concurrency)
  local t, add = tally()
  local next_id = first
  pool(concurrency or 32, function()
    if next_id > last then return nil end
    local id = next_id
    next_id = next_id + 1
    return function() add(id, 10) end
  end, 600)
  return t
end
-- Calls add(1) on random ids first..last for `seconds`, `concurrency` at a time (calls time out
-- after 5 s); returns { ok, failed, kinds }.
function Driver.distributed:loop(first, last, concurrency, seconds, seed)
  local t, add = tally()
  local stop_at = atoll.now() + seconds
  local s = seed or 1
  pool(concurrency, function()
    if atoll.now() >= stop_at then return nil end
    s = s * 16807 % 2147483647
    local id = first + s % (last - first + 1)
    return function() add(id, 5) end
  end, seconds + 30)
  return t
end
-- counts(first, last) -> { [id] = count }, read 32 at a time (each within 10 s, tried again)
function Driver.distributed:counts(first, last)
  local out, next_id = {}, first
  pool(32, function()
    if next_id > last then return nil end
    local id = next_id
    next_id = next_id + 1
    return function()
      for _ = 1, 5 do
        local good, n = pcall(function() return atoll.virtual.get("VCounter", id, nil, 10):get() end)
        if good then
          out[id] = n
          return
        end
      end
    end
  end, 600)
  return out
end
function Driver.distributed:get(id) return atoll.virtual.get("VCounter", id):get() end
function Driver.distributed:where(id) return atoll.virtual.get("VCounter", id):where() end
function Driver.distributed:info() return atoll.virtual.info() end
function Driver.distributed:remind(id, name, seconds) return atoll.virtual.get("VCounter", id):remind(name, seconds) end
function Driver.distributed:forget(id, name) return atoll.virtual.get("VCounter", id):forget(name) end
function Driver.distributed:reminders(id) return atoll.virtual.reminders(atoll.virtual.get("VCounter", id)) end
atoll.register("driver", atoll.spawn(Driver))
require "member"
