-- A node with an actor whose handlers misbehave on demand, for the watchdog specs.
local atoll = require "atoll"

local Stuck = atoll.actor.define "Stuck"

function Stuck.distributed:ping() return "pong" end

-- Busy for `seconds`, then returns: a long computation that ends.
function Stuck.distributed:work(seconds)
  local t0 = atoll.now()
  local n = 0
  while atoll.now() - t0 < seconds do n = n + 1 end
  return "done"
end

-- The bug while developing game logic: a loop that never ends (LuaJIT
-- compiles it after a few dozen iterations).
function Stuck.distributed:spin()
  while true do end
end

-- A loop that swallows every error, the watchdog's interrupt included.
function Stuck.distributed:stubborn()
  while true do pcall(function() while true do end end) end
end

-- Allocates without bound; the garbage is the handler's own.
function Stuck.distributed:hog()
  local t = {}
  while #t >= 0 do t[#t + 1] = { 1, 2, 3 } end
end

-- Allocates without bound into the actor's state, which keeps it.
function Stuck.distributed:hoard()
  self.kept = {}
  while true do self.kept[#self.kept + 1] = { 1, 2, 3 } end
end

-- Keeps `mb` more megabytes of strings in the actor's state, in a loop
-- LuaJIT compiles: called twice it takes the heap over its ceiling from a
-- trace.
function Stuck.distributed:keep(mb)
  self.strings = self.strings or {}
  local kept = self.strings
  for _ = 1, mb * 1024 do kept[#kept + 1] = string.rep("k", 1000) .. #kept end
  return #kept
end

-- An actor whose init never returns, spawned from a handler.
local Spinner = atoll.actor.define "Spinner"
function Spinner:init() while true do end end
function Stuck.distributed:spawn_spinner() return atoll.spawn(Spinner) end

-- Starts a task that never returns, and keeps nothing of it: its failure
-- has no one to go to.
function Stuck.distributed:spin_task()
  atoll.task(function() while true do end end)
  return "started"
end

-- Collects garbage (futures nothing holds any more among it).
function Stuck.distributed:collect()
  collectgarbage()
  collectgarbage()
end

atoll.register("stuck", atoll.spawn(Stuck))
print("ready")
