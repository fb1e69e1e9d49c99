-- bench/run local: one node, one loop thread. Prints BENCH lines.
--
--   local.send.rate        one-way messages/s, one sender to one receiver
--   local.call.rate        round trips/s, one caller
--   local.call.rate.c64    round trips/s, 64 concurrent callers to one actor
--   actor.spawn.rate       actors spawned/s
--   actor.idle.bytes       RSS growth per idle actor, with 1,000,000 of them
--   reload.latency.ms      file write to the first answer from the new code (median of 10)
local atoll = require "atoll"
local host = require "atoll.c.host"
local reload = require "atoll.reload"
atoll.log.level("warn") -- reload logs each reload at info

local function bench(name, value, unit)
  print(("BENCH %s %.0f %s"):format(name, value, unit))
  io.stdout:flush()
end

local function bench_f(name, value, unit)
  print(("BENCH %s %.1f %s"):format(name, value, unit))
  io.stdout:flush()
end

local Sink = atoll.actor.define "BenchSink"
function Sink:init() self.n = 0 end
function Sink.distributed:ping() self.n = self.n + 1 end
function Sink.distributed:count() return self.n end
function Sink.distributed:echo(x) return x end

local Idle = atoll.actor.define "BenchIdle"
function Idle:init(i) self.i = i end
function Idle.distributed:get() return self.i end

local function best_of(runs, fn)
  local best = 0
  for _ = 1, runs do
    local r = fn()
    if r > best then best = r end
  end
  return best
end

atoll.run(function()
  local now = atoll.now

  -- A million idle actors: spawn rate, and memory each. First, in a fresh process: after the
  -- other runs, the heap they grew and freed would take the actors in without growing the
  -- RSS, and the figure would depend on what ran before.
  do
    collectgarbage()
    collectgarbage()
    local rss0 = host.rss()
    local N = 1000000
    local refs = {}
    local t0 = now()
    for i = 1, N do refs[i] = atoll.spawn(Idle, i) end
    local spawn_rate = N / (now() - t0)
    collectgarbage()
    collectgarbage()
    local rss1 = host.rss()
    assert(refs[N]:get() == N)
    bench("actor.spawn.rate", spawn_rate, "actors/s")
    -- The refs table the benchmark keeps is not part of an actor's cost.
    bench("actor.idle.bytes", (rss1 - rss0) / N - 8, "bytes")
    for i = 1, N do atoll.stop(refs[i]) end
    refs = nil -- luacheck: ignore 311 (dropped for the collector)
    collectgarbage()
  end

  -- One-way: a burst of N sends, timed until the receiver has them all.
  local send_rate = best_of(3, function()
    local s = atoll.spawn(Sink)
    local N = 2000000
    local t0 = now()
    for i = 1, N do atoll.send(s, "ping", i) end
    local n = s:count()
    assert(n == N)
    return N / (now() - t0)
  end)
  bench("local.send.rate", send_rate, "msg/s")

  -- Round trips, one caller.
  local call_rate = best_of(3, function()
    local s = atoll.spawn(Sink)
    local N = 1000000
    local t0 = now()
    for i = 1, N do s:echo(i) end
    return N / (now() - t0)
  end)
  bench("local.call.rate", call_rate, "calls/s")

  -- Round trips, 64 callers at once.
  local c64 = best_of(3, function()
    local s = atoll.spawn(Sink)
    local per, tasks = 20000, {}
    local t0 = now()
    for k = 1, 64 do
      tasks[k] = atoll.task(function() for i = 1, per do s:echo(i) end end)
    end
    for k = 1, 64 do tasks[k]:wait(60) end
    return 64 * per / (now() - t0)
  end)
  bench("local.call.rate.c64", c64, "calls/s")

  -- Hot reload: write the module, then call until the new code answers.
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  package.path = dir .. "/?.lua;" .. package.path
  local function module_source(v)
    return ([[
local C = require("atoll.actor").define "BenchReload"
function C.distributed:version() return %d end
return C
]]):format(v)
  end
  local function write(text)
    local f = assert(io.open(dir .. "/bench_reload.lua.tmp", "wb"))
    f:write(text)
    f:close()
    assert(os.rename(dir .. "/bench_reload.lua.tmp", dir .. "/bench_reload.lua"))
  end
  write(module_source(0))
  local r = atoll.spawn("bench_reload")
  reload.watch()
  local samples = {}
  for v = 1, 10 do
    local t = now()
    write(module_source(v))
    while r:version() ~= v do atoll.sleep(0.0002) end
    samples[#samples + 1] = (now() - t) * 1000
  end
  reload.unwatch()
  os.execute("rm -rf " .. dir)
  table.sort(samples)
  bench_f("reload.latency.ms", (samples[5] + samples[6]) / 2, "ms")
end)
