-- A node of bench/receptionist.lua: checks guests in under "bench" when asked, and notes when
-- its listing of "bench" sees each one (atoll.now(): the machine's monotonic clock, the same in
-- every process).
local atoll = require "atoll"
local r = atoll.receptionist

local Guest = atoll.actor.define "BenchGuest"
function Guest.distributed:ping() return true end

local Bench = atoll.actor.define "BenchDesk"
function Bench:init()
  self.seen = {} -- tostring(ref) -> when the listing saw it added
  r.listing("bench", function(ev)
    if ev.type == "added" then self.seen[tostring(ev.ref)] = atoll.now() end
  end)
end
-- check_in() -> the new guest's ref, and when its check-in began
function Bench.distributed:check_in()
  local g = atoll.spawn(Guest)
  local t0 = atoll.now()
  r.check_in(g, "bench")
  return g, t0
end
-- seen(refs) -> for each ref, when this node's listing saw it added (false: not yet)
function Bench.distributed:seen(refs)
  local out = {}
  for i, ref in ipairs(refs) do out[i] = self.seen[tostring(ref)] or false end
  return out
end

atoll.register("bench", atoll.spawn(Bench))
print("ready")
