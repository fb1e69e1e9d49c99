-- bench/run remote: two nodes over loopback, this process and a child node. Prints BENCH lines.
--
--   remote.send.rate       one-way messages/s to an actor on the other node
--   remote.call.rate       round trips/s, one caller
--   remote.call.rate.c64   round trips/s, 64 concurrent callers
--   remote.call.p50.us     latency of calls made at a steady 10,000 calls/s,
--   remote.call.p99.us     measured from when each call was due to start
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"
local process = require "atoll.process"

local bin = arg[1] or host.exepath()
local secret = "bench-" .. host.pid()

local function bench(name, value, unit)
  print(("BENCH %s %.0f %s"):format(name, value, unit))
  io.stdout:flush()
end

atoll.log.level("warn")

atoll.run(function()
  assert(cluster.start { listen = "127.0.0.1:0", secret = secret, name = "bench-client" })
  local server = assert(process.spawn { bin, "run", "bench/apps/remote_server.lua", "--listen",
    "127.0.0.1:0", "--name", "bench-server", "--log-level", "info", env = { ATOLL_SECRET = secret } })
  local _, address = server:expect("listening on (%S+)", 10, "stderr")
  server:expect("^ready$", 10)
  local node = cluster.named(address, "atoll.node")
  local sink = node:whereis("sink")
  local echo = node:whereis("echo")
  local now = atoll.now

  -- Warm both sides up (JIT, buffers).
  for i = 1, 20000 do echo:echo(i) end

  -- One-way: the sender yields every 1000 messages so the loop can hand
  -- them to the socket while it goes on (a stream, as a real sender makes).
  -- The best of three runs, as for the Erlang peer: the figure is the
  -- path's speed, not the machine's noise.
  local N = 2000000
  local best = 0
  for _ = 1, 3 do
    sink:reset()
    local t0 = now()
    for i = 1, N do
      atoll.send(sink, "ping", i)
      if i % 1000 == 0 then atoll.yield() end
    end
    assert(sink:count() == N) -- a call after the sends arrives after them all
    best = math.max(best, N / (now() - t0))
  end
  bench("remote.send.rate", best, "msg/s")

  local calls = 100000
  local t0 = now()
  for i = 1, calls do echo:echo(i) end
  bench("remote.call.rate", calls / (now() - t0), "calls/s")

  local per, tasks = 10000, {}
  t0 = now()
  for k = 1, 64 do
    tasks[k] = atoll.task(function() for i = 1, per do echo:echo(i) end end)
  end
  for k = 1, 64 do tasks[k]:wait(120) end
  bench("remote.call.rate.c64", 64 * per / (now() - t0), "calls/s")

  -- Open loop at 10,000 calls/s for 5 s: a call every 100 us, each timed
  -- from when it was due, not from when it got to start.
  local rate, seconds = 10000, 5
  local total = rate * seconds
  local latencies, done = {}, 0
  local finished = atoll.future()
  local start = now()
  local issued = 0
  while issued < total do
    local due = start + issued / rate
    if now() >= due then
      issued = issued + 1
      local i = issued
      atoll.task(function()
        echo:echo(i)
        latencies[i] = (now() - due) * 1e6
        done = done + 1
        if done == total then finished:set(true) end
      end)
    else
      atoll.yield()
    end
  end
  finished:wait(60)
  table.sort(latencies)
  bench("remote.call.p50.us", latencies[math.floor(total * 0.50)], "us")
  bench("remote.call.p99.us", latencies[math.floor(total * 0.99)], "us")

  server:kill("SIGTERM")
  server:wait(10)
end)
