-- bench/receptionist.lua: five member nodes on loopback; a guest checks in on one of them (in
-- turn) every 10 ms, and the time from the start of its check-in to the moment the last of the
-- four other nodes' listings sees it is measured (from the nodes' own timestamps: atoll.now() is
-- the machine's monotonic clock, the same in every process). Prints BENCH lines:
--
--   receptionist.propagation.p50.ms   median over the check-ins
--   receptionist.propagation.p99.ms   99th percentile (nearest rank)
--
--   build/atoll lua bench/receptionist.lua [BUILD/atoll [CHECK-INS]]
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"

local bin = arg[1] or host.exepath()
local N = tonumber(arg[2]) or 1000
local WARMUP = 200
local NODES = 5
local secret = "bench-" .. host.pid()

local lib = dofile "bench/lib.lua"
local bench, quantile = lib.bench, lib.quantile

atoll.log.level("warn")

atoll.run(function()
  assert(cluster.start { listen = "127.0.0.1:0", secret = secret, name = "bench-receptionist" })
  local procs, addresses, desks = {}, {}, {}
  for i = 1, NODES do
    local p, address = lib.member(bin, "bench/apps/reception_node.lua", "r" .. i, secret, addresses[1])
    procs[i], addresses[i], desks[i] = p, address, cluster.named(address, "bench")
  end
  -- Every node sees all five up.
  local deadline = atoll.now() + 30
  for i = 1, NODES do
    local node = cluster.named(addresses[i], "atoll.node")
    while true do
      local up = 0
      for _, m in ipairs(node:members().members) do
        if m.status == "up" then up = up + 1 end
      end
      if up == NODES then break end
      assert(atoll.now() < deadline, "the five nodes did not all come up")
      atoll.sleep(0.1)
    end
  end

  -- Check-ins, one every 10 ms, on each node in turn.
  local trials = {}
  for k = 1, WARMUP + N do
    local from = (k - 1) % NODES + 1
    local ref, t0 = desks[from]:check_in()
    if k > WARMUP then trials[#trials + 1] = { from = from, ref = ref, t0 = t0 } end
    atoll.sleep(0.01)
  end
  atoll.sleep(0.5)

  -- When each node saw each check-in.
  local refs = {}
  for i, t in ipairs(trials) do refs[i] = t.ref end
  local seen = {}
  for i = 1, NODES do seen[i] = desks[i]:seen(refs) end
  local latencies, missing = {}, 0
  for k, t in ipairs(trials) do
    local last = 0
    for i = 1, NODES do
      if i ~= t.from then
        local at = seen[i][k]
        if not at then
          missing = missing + 1
        else
          last = math.max(last, at - t.t0)
        end
      end
    end
    latencies[#latencies + 1] = last * 1000
  end
  assert(missing == 0, missing .. " check-ins were not seen everywhere")
  table.sort(latencies)
  bench("receptionist.propagation.p50.ms", quantile(latencies, 0.50), "ms")
  bench("receptionist.propagation.p99.ms", quantile(latencies, 0.99), "ms")

  for _, p in ipairs(procs) do p:kill("SIGTERM") end
  for _, p in ipairs(procs) do p:wait(10) end
end)
