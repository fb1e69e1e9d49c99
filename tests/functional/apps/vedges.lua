-- For tests/functional/virtual_edges_spec.lua: a member with the virtual type VSlow,
-- hosted at start unless VR_HOST=0 (then `driver:host()` hosts it later). An activation of an id
-- that starts with "slow" sleeps VR_INIT_SLEEP seconds in its init. Prints, on the shared clock:
--   vstart ID RUN T / vserve ID RUN N T / vstop ID RUN T
local atoll = require "atoll"
local virtual = require "atoll.cluster.virtual"

local init_sleep = tonumber(os.getenv("VR_INIT_SLEEP") or "") or 0
local runs = 0

local VSlow = atoll.actor.define("VSlow")
function VSlow:init(id, deps)
  runs = runs + 1
  self.id, self.deps, self.n = id, deps, 0
  self.run = ("%x.%d"):format(atoll.node().incarnation, runs)
  print(("vstart %s %s %.6f"):format(tostring(id), self.run, atoll.now()))
  io.stdout:flush()
  if type(id) == "string" and id:sub(1, 4) == "slow" and init_sleep > 0 then atoll.sleep(init_sleep) end
end
function VSlow.distributed:add(k)
  self.n = self.n + k
  print(("vserve %s %s %d %.6f"):format(tostring(self.id), self.run, self.n, atoll.now()))
  io.stdout:flush()
  return { n = self.n, node = atoll.node().address, run = self.run }
end
function VSlow.distributed:slow_add(seconds)
  atoll.sleep(seconds)
  self.n = self.n + 1
  print(("vserve %s %s %d %.6f"):format(tostring(self.id), self.run, self.n, atoll.now()))
  io.stdout:flush()
  return { n = self.n, node = atoll.node().address, run = self.run }
end
function VSlow.distributed:mydeps() return { deps = self.deps, node = atoll.node().address } end
function VSlow:deactivate() print(("vstop %s %s %.6f"):format(tostring(self.id), self.run, atoll.now())) end
virtual.define(VSlow)
if os.getenv("VR_HOST") ~= "0" then virtual.host(VSlow) end

local Driver = atoll.actor.define "Driver"
function Driver.distributed:host() virtual.host(VSlow) return true end
-- id_owned(prefix, addresses, want) -> an id "PREFIXn" whose owner among those members is want
function Driver.distributed:id_owned(prefix, list, want)
  local ms = {}
  for i, a in ipairs(list) do ms[i] = { address = a } end
  for n = 1, 10000 do
    local id = prefix .. n
    if virtual.owner_among(ms, "VSlow", id).address == want then return id end
  end
end
-- add(id, timeout) -> true, answer | false, error kind, message
function Driver.distributed:add(id, seconds)
  local ok, res = pcall(function() return virtual.get("VSlow", id, nil, seconds or 10):add(1) end)
  if ok then return true, res end
  return false, atoll.errors.kind(res) or "?", tostring(res)
end
-- slow_adds(id, n, seconds) -> { { true, answer } | { false, kind, message }... }: n calls at once
function Driver.distributed:slow_adds(id, n, seconds)
  local out, left, waiter = {}, n, require("atoll.runtime").waiter()
  for i = 1, n do
    atoll.task(function()
      local ok, res = pcall(function() return virtual.get("VSlow", id, nil, 30):slow_add(seconds) end)
      out[i] = ok and { true, res } or { false, atoll.errors.kind(res) or "?", tostring(res) }
      left = left - 1
      if left == 0 then waiter:wake() end
    end)
    atoll.sleep(0.01)
  end
  waiter:wait(60)
  return out
end
function Driver.distributed:deps(id, deps)
  return virtual.get("VSlow", id, deps, 10):mydeps()
end
function Driver.distributed:where(id) return virtual.where("VSlow", id) end
function Driver.distributed:mem()
  collectgarbage()
  collectgarbage()
  return collectgarbage("count")
end
-- calls get(TYPE_PREFIX .. i, 1) for i = first..last, each with a short timeout, 64 at a time
-- (same_type: calls get(prefix, i) instead, ids first..last of one type)
function Driver.distributed:spray(prefix, first, last, seconds, same_type)
  local waiter, running, nxt = require("atoll.runtime").waiter(), 0, first
  local function worker()
    while nxt <= last do
      local i = nxt
      nxt = nxt + 1
      pcall(function()
        if same_type then return virtual.get(prefix, i, nil, seconds):add(1) end
        return virtual.get(prefix .. i, 1, nil, seconds):add(1)
      end)
    end
    running = running - 1
    if running == 0 then waiter:wake() end
  end
  for _ = 1, 64 do
    running = running + 1
    atoll.task(worker)
  end
  waiter:wait(600)
  return true
end
-- one-way add(1) to (TYPE, i) for i = first..last
function Driver.distributed:sends(vtype, first, last)
  for i = first, last do atoll.send(virtual.get(vtype, i), "add", 1) end
  return true
end
-- a call to a type with a long name (1 to 200 bytes is what get and the codec accept); then
-- whether this handler still runs as its actor
-- long_name(len) -> what get says of a type name of len bytes, and what a call through a ref
-- with such a name says (as a ref decoded from another node's message would be: the codec takes
-- names up to 200 bytes); and whether the handler still runs as its actor after both
function Driver.distributed:long_name(len)
  local name = ("L"):rep(len)
  local ok, err = pcall(virtual.get, name, 1, nil, 1)
  local decoded = setmetatable({ type = name, id = 1, timeout = 1 }, virtual.Ref)
  local cok, cerr = pcall(function() return decoded:add(1) end)
  return { ok = ok, err = tostring(err), call_ok = cok, call_err = tostring(cerr),
           current = require("atoll.runtime").current() ~= nil }
end
atoll.register("driver", atoll.spawn(Driver))
require "member"
-- The records of virtual.lua, read through debug: { key = { state, held, in_acts } }
local function upvalue(fn, name)
  for i = 1, 200 do
    local n, v = debug.getupvalue(fn, i)
    if n == nil then return nil end
    if n == name then return v end
  end
end
function Driver.distributed:dump()
  local acts = upvalue(virtual.info, "acts")
  local held_of = upvalue(upvalue(upvalue(virtual.passivate, "poke") or virtual.passivate, "pump") or virtual.passivate, "held_of")
  local out = { acts = {}, counters = virtual.info().counters }
  for k, a in pairs(acts) do
    local h = held_of and held_of[a]
    out.acts[k:gsub("%z", "|")] = { state = a.state, held = h and (h.tail - h.head + 1) or 0, epoch = a.epoch }
  end
  return out
end
