-- A node of bench/virtual.lua: hosts the virtual type BenchVirtual (no state of its own, so that
-- what an idle activation costs is the runtime's share) and registers "bench", which measures
-- from inside the node: the caller's clock is the node's own, and no hop to the bench process
-- is counted. atoll.now() is the machine's monotonic clock, the same in every process.
local atoll = require "atoll"
local virtual = atoll.virtual

local NAME = "BenchVirtual"
local V = atoll.actor.define(NAME)
function V.distributed:ping(x) return x end
function V.distributed:me() return self:ref() end
function V.distributed:where() return atoll.node().address end
virtual.define(V, { idle_timeout = 3600 })
virtual.host(V)

local function ref(id) return virtual.get(NAME, id) end

-- Runs fn(i) for i = 1..n, `concurrency` tasks at a time; waits for them all.
local function each(n, concurrency, fn)
  local next_i, tasks = 1, {}
  for k = 1, math.min(concurrency, n) do
    tasks[k] = atoll.task(function()
      while next_i <= n do
        local i = next_i
        next_i = i + 1
        fn(i)
      end
    end)
  end
  for _, t in ipairs(tasks) do t:wait(600) end
end

local function vmrss_kb()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

local Bench = atoll.actor.define "BenchVirtualDriver"
function Bench:init()
  self.up_at = {} -- address -> when this node's membership saw it up (atoll.now())
  atoll.membership.subscribe(function(ev)
    local list = ev.type == "snapshot" and ev.members or { ev.member }
    for _, m in ipairs(list) do
      if m.status == "up" and not self.up_at[m.address] then self.up_at[m.address] = atoll.now() end
    end
  end)
end

-- ids(prefix, n, where) -> n ids prefix..k whose owner, in this node's view, is this node
-- (where "here"), another node ("elsewhere") or any ("any"); and { address -> count } of their
-- owners.
function Bench.distributed:ids(prefix, n, where)
  local me, out, owners, k = atoll.node().address, {}, {}, 0
  while #out < n do
    k = k + 1
    local id = prefix .. k
    local owner = virtual.where(NAME, id)
    if where == "any" or (owner == me) == (where == "here") then
      out[#out + 1] = id
      owners[owner] = (owners[owner] or 0) + 1
    end
  end
  return out, owners
end

-- first_calls(ids, concurrency) -> milliseconds from each first call to its answer
function Bench.distributed:first_calls(ids, concurrency)
  local ms = {}
  each(#ids, concurrency, function(i)
    local r = ref(ids[i])
    local t0 = atoll.now()
    r:ping(i)
    ms[i] = (atoll.now() - t0) * 1000
  end)
  return ms
end

-- calls(ids, how, per, callers) -> calls/s: `callers` tasks each make `per` calls, over the ids
-- in turn, through virtual refs (how "virtual") or the plain refs of the same activations
-- (how "direct", asked of each activation with me()).
function Bench.distributed:calls(ids, how, per, callers)
  local refs = {}
  for i, id in ipairs(ids) do
    refs[i] = ref(id)
    if how == "direct" then refs[i] = refs[i]:me() end
  end
  local n = #refs
  local tasks, t0 = {}, atoll.now()
  for c = 1, callers do
    tasks[c] = atoll.task(function()
      local j = c
      for _ = 1, per do
        refs[j]:ping(j)
        j = j % n + 1
      end
    end)
  end
  for _, t in ipairs(tasks) do t:wait(600) end
  return callers * per / (atoll.now() - t0)
end

-- activate(ids, concurrency): calls each id once (from this node, in parallel)
function Bench.distributed:activate(ids, concurrency)
  each(#ids, concurrency, function(i) ref(ids[i]):ping(i) end)
  return true
end

-- idle(prefix, n, concurrency) -> VmRSS growth in kB, Lua heap growth in kB: activates n ids
-- this node owns (prefix..k, made as they are needed: no list of them is kept) and leaves them
-- idle; each figure is read after full collections, before and after.
function Bench.distributed:idle(prefix, n, concurrency)
  local me, k = atoll.node().address, 0
  full_gc()
  local rss0, heap0 = vmrss_kb(), collectgarbage("count")
  each(n, concurrency, function(i)
    local id
    repeat
      k = k + 1
      id = prefix .. k
    until virtual.where(NAME, id) == me
    ref(id):ping(i)
  end)
  full_gc()
  return vmrss_kb() - rss0, collectgarbage("count") - heap0
end

-- The same actor, not virtual: what the runtime's share of an activation is.
local Plain = atoll.actor.define "BenchPlain"
function Plain.distributed:ping(x) return x end

-- plain(n) -> VmRSS growth in kB, Lua heap growth in kB: spawns n plain actors, keeping their
-- refs (in a list: 8 bytes each of it), measured as idle() measures; then stops them.
function Bench.distributed:plain(n)
  full_gc()
  local rss0, heap0 = vmrss_kb(), collectgarbage("count")
  local keep = {}
  for i = 1, n do keep[i] = atoll.spawn(Plain) end
  full_gc()
  local rss, heap = vmrss_kb() - rss0, collectgarbage("count") - heap0
  for i = 1, n do atoll.stop(keep[i]) end
  return rss, heap
end

-- owned_by(ids, addresses, address) -> the ids whose owner among `addresses` is `address`
function Bench.distributed:owned_by(ids, addresses, address)
  local list = {}
  for i, a in ipairs(addresses) do list[i] = { address = a } end
  local out = {}
  for _, id in ipairs(ids) do
    if virtual.owner_among(list, NAME, id).address == address then out[#out + 1] = id end
  end
  return out
end

-- moved(ids, address, seconds) -> when this node saw `address` up, and when the last of `ids`
-- first answered from `address` (atoll.now()), or nil if some did not within `seconds`: each id
-- is asked where() over and over until the answer comes from there.
function Bench.distributed:moved(ids, address, seconds)
  local deadline = atoll.now() + seconds
  local pending, last = ids, nil
  while #pending > 0 and atoll.now() < deadline do
    local again = {}
    each(#pending, 64, function(i)
      local ok, at = pcall(function() return ref(pending[i]):where() end)
      if ok and at == address then
        last = atoll.now()
      else
        again[#again + 1] = pending[i]
      end
    end)
    pending = again
    if #pending > 0 then atoll.sleep(0.001) end
  end
  if #pending > 0 then return self.up_at[address], nil, #pending end
  return self.up_at[address], last, 0
end

-- up_at(address) -> when this node saw address up, or false
function Bench.distributed:up_at(address)
  return self.up_at[address] or false
end

atoll.register("bench", atoll.spawn(Bench))
print("ready")
