-- A member node for membership specs: prints every membership event and every watch that ends,
-- and has actors to watch, to be watched, and to poke the membership with.
--
--   member ADDRESS STATUS INCARNATION SUSPECT(0|1) PREVIOUS|-|snapshot T
--   terminated REF REASON T
-- with T the node's monotonic clock (atoll.now(), which every process on
-- one machine shares).
local atoll = require "atoll"
local actor = atoll.actor

local function show(m, previous)
  print(("member %s %s %x %d %s %.6f"):format(m.address, m.status, m.incarnation,
    m.suspect and 1 or 0, previous or "-", atoll.now()))
end

atoll.membership.subscribe(function(ev)
  if ev.type == "snapshot" then
    for _, m in ipairs(ev.members) do show(m, "snapshot") end
  else
    show(ev.member, ev.previous)
  end
end)

-- Watches refs it is given and prints when a watch ends.
local Watcher = actor.define "Watcher"
function Watcher.distributed:watch(ref) return atoll.watch(ref) end
function Watcher.distributed:unwatch(ref) return atoll.unwatch(ref) end
function Watcher:terminated(ref, reason)
  print(("terminated %s %s %.6f"):format(tostring(ref), reason, atoll.now()))
end

-- Something to watch.
local Pet = actor.define "Pet"
function Pet.distributed:ping() return "pong" end
function Pet.distributed:nap(seconds)
  atoll.sleep(seconds)
  return "rested"
end
function Pet.distributed:quit() self:stop() end

local Keeper = actor.define "Keeper"
function Keeper.distributed:pet() return atoll.spawn(Pet) end
-- Calls a method of a ref and returns what happened: true, results... or
-- false, error kind, message.
function Keeper.distributed:try(ref, method, ...)
  local r = { pcall(atoll.call, ref, method, ...) }
  if r[1] then return unpack(r, 1, table.maxn(r)) end
  return false, atoll.errors.kind(r[2]) or "?", tostring(r[2])
end
function Keeper.distributed:leave() return atoll.membership.leave() end
function Keeper.distributed:down(address) return atoll.membership.down(address) end
function Keeper.distributed:down_final(address) return atoll.membership.down_final(address) end
-- This node's membership as it lists it: { member... }, itself first.
function Keeper.distributed:members() return atoll.membership.members() end
function Keeper.distributed:majority() return atoll.membership.has_majority() end
function Keeper.distributed:stats() return atoll.membership.stats() end
-- Marks a member down by hand and, before it can refute, calls it by name
-- and with the membership's own state exchange: ok, error kind, message for each.
function Keeper.distributed:down_then_call(address)
  assert(atoll.membership.down(address), "not a live member")
  local function try(f, ...)
    local ok, err = pcall(f, ...)
    if ok then return true, nil, nil end
    return false, atoll.errors.kind(err) or "?", tostring(err)
  end
  local by_name = { try(function() return atoll.remote(address, "keeper"):majority() end) }
  local exchange = { try(require("atoll.cluster").call_system, address, "atoll.node", "exchange", 5,
    require("atoll.c.swim").state()) }
  return by_name[1], by_name[2], by_name[3], exchange[1], exchange[2], exchange[3]
end
-- Sends raw bytes to a member's membership port, sealed or not (through the
-- specs' hooks, which tests/run puts on LUA_CPATH).
function Keeper.distributed:send_raw(address, bytes, seal)
  return require("atoll_testhooks").swim_send_raw(address, bytes, seal)
end

atoll.register("watcher", atoll.spawn(Watcher))
atoll.register("keeper", atoll.spawn(Keeper))
print("ready")
