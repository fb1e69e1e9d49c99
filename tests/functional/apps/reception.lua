-- A member node for receptionist specs: prints every membership event (as apps/member.lua does)
-- and every event of the listings it is asked for, and has a desk that checks guests in and out.
--
--   member ADDRESS STATUS INCARNATION SUSPECT(0|1) PREVIOUS|-|snapshot T
--   listing KEY snapshot T NAME...       (the refs listed when the listing began)
--   listing KEY added|removed T NAME
-- with T the node's monotonic clock (atoll.now(), which every process on
-- one machine shares) and NAME a ref as ADDRESS#ID.
local atoll = require "atoll"
local runtime = require "atoll.runtime"
local actor = atoll.actor
local r = atoll.receptionist

-- RECEPTION_DIGEST_INTERVAL: seconds between anti-entropy digests (10 by default), so that a
-- spec can tell what the full exchanges do from what the digests do.
local interval = tonumber(os.getenv("RECEPTION_DIGEST_INTERVAL") or "")
if interval then require("atoll.cluster.receptionist").settings.digest_interval = interval end

local function name(ref)
  return ref[runtime.REF_ADDR] .. "#" .. ref[runtime.REF_ID]
end

local function names(refs)
  local out = {}
  for i, ref in ipairs(refs) do out[i] = name(ref) end
  return atoll.array(out)
end

atoll.membership.subscribe(function(ev)
  local function show(m, previous)
    print(("member %s %s %x %d %s %.6f"):format(m.address, m.status, m.incarnation,
      m.suspect and 1 or 0, previous or "-", atoll.now()))
  end
  if ev.type == "snapshot" then
    for _, m in ipairs(ev.members) do show(m, "snapshot") end
  else
    show(ev.member, ev.previous)
  end
end)

local Guest = actor.define "Guest"
function Guest.distributed:ping() return "pong" end
function Guest.distributed:quit() self:stop() end

local Listener = actor.define "Listener"
function Listener:init(key)
  r.listing(key, function(ev)
    if ev.type == "snapshot" then
      print(("listing %s snapshot %.6f %s"):format(key, atoll.now(), table.concat(names(ev.refs), " ")))
    else
      print(("listing %s %s %.6f %s"):format(key, ev.type, atoll.now(), name(ev.ref)))
    end
  end)
end

-- Calls f and returns what happened: true, results... or false, error kind, message.
local function try(f, ...)
  local res = { pcall(f, ...) }
  if res[1] then return unpack(res, 1, table.maxn(res)) end
  return false, atoll.errors.kind(res[2]) or "?", tostring(res[2])
end

local Desk = actor.define "Desk"
function Desk:init() self.guests = {} end
-- guest([key]) -> the name of a new guest, checked in under key
function Desk.distributed:guest(key)
  local g = atoll.spawn(Guest)
  self.guests[name(g)] = g
  if key then r.check_in(g, key) end
  return name(g)
end
-- later(key, seconds) -> the name of a new guest that checks in after `seconds`
function Desk.distributed:later(key, seconds)
  local g = atoll.spawn(Guest)
  self.guests[name(g)] = g
  atoll.after(seconds, function() r.check_in(g, key) end)
  return name(g)
end
function Desk.distributed:check_in(who, key) return try(r.check_in, self.guests[who], key) end
function Desk.distributed:check_out(who, key) return try(r.check_out, self.guests[who], key) end
function Desk.distributed:quit(who) return atoll.stop(self.guests[who]) end
function Desk.distributed:ref(who) return self.guests[who] end
function Desk.distributed:try_check_in(ref, key) return try(r.check_in, ref, key) end
function Desk.distributed:lookup(key) return names(r.lookup(key)) end
function Desk.distributed:listen(key)
  atoll.spawn(Listener, key)
  return true
end
function Desk.distributed:stats() return r.stats() end
-- churn(key, n) -> what n random check-ins and check-outs of four guests did, in order, as
-- "added NAME" / "removed NAME" (only those that changed something)
function Desk.distributed:churn(key, n)
  local pool = {}
  for i = 1, 4 do
    pool[i] = atoll.spawn(Guest)
    self.guests[name(pool[i])] = pool[i]
  end
  local done = {}
  for _ = 1, n do
    local g = pool[math.random(1, 4)]
    local listed = false
    for _, ref in ipairs(r.lookup(key)) do listed = listed or ref == g end
    if listed then
      r.check_out(g, key)
      done[#done + 1] = "removed " .. name(g)
    else
      r.check_in(g, key)
      done[#done + 1] = "added " .. name(g)
    end
  end
  return atoll.array(done)
end

atoll.register("desk", atoll.spawn(Desk))
print("ready")
