-- bench/run virtual: virtual actors (atoll.virtual) on three member nodes on loopback
-- (bench/apps/virtual_node.lua), then a fourth that joins. The nodes measure from inside (their
-- actor "bench"); this process only starts them and asks. Prints BENCH lines:
--
--   virtual.activate.p50.ms   the first call to a new id whose owner is another node, from the
--   virtual.activate.p99.ms   call to its answer: 2,000 ids, one call at a time (sequential, so
--                             that each figure is the path alone, not a queue), from node 1
--   virtual.call.rate.c64     calls/s of 64 concurrent callers on node 1 over 300 active ids
--                             (about a third owned by each of the three nodes, node 1 included)
--   direct.call.rate.c64      the same calls to the same activations through their plain refs
--                             (each asked for its own with me()); best of five runs each,
--                             alternated, as the machine is shared
--   virtual.rebalance.s       10,000 ids active across the three; a fourth node joins: from when
--                             node 1 sees it up to when the last id it now owns first answers
--                             from it (node 1 asks each moved id where() until it does)
--   virtual.idle.bytes        node 1's VmRSS (/proc/self/status, after two full collections)
--                             before and after 100,000 activations of ids it owns, left idle,
--                             per activation; virtual.idle.heap.bytes: the same for the Lua heap
--                             (collectgarbage "count"), the part of it that is Lua tables and
--                             strings. (RSS is about twice the heap: the collector lets garbage
--                             grow to the live heap's size before a cycle, by default.)
--   actor.idle.bytes          the same for 100,000 plain actors of a type like the virtual one,
--   actor.idle.heap.bytes     on node 2 before anything else runs there (a node that has run
--                             more reuses memory freed before), then stopped: the runtime's
--                             share of an activation
--
--   build/atoll lua bench/virtual.lua [BUILD/atoll]
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"

local bin = arg[1] or host.exepath()
local secret = "bench-" .. host.pid()
local ACTIVATIONS, WARMUP = 2000, 300
local RATE_IDS, RATE_PER, RATE_RUNS = 300, 3000, 5
local REBALANCE_IDS = 10000
local IDLE = 100000

local lib = dofile "bench/lib.lua"
local bench, quantile = lib.bench, lib.quantile

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

atoll.log.level("warn")

atoll.run(function()
  assert(cluster.start { listen = "127.0.0.1:0", secret = secret, name = "bench-virtual" })
  local procs, addresses, benches = {}, {}, {}

  local function start(i)
    local p, address = lib.member(bin, "bench/apps/virtual_node.lua", "v" .. i, secret, addresses[1])
    procs[i], addresses[i], benches[i] = p, address, cluster.named(address, "bench", 600)
  end

  -- Until every node places ids on all `n` nodes (members up, the type's hosts listed).
  local function placed_on_all(n)
    local deadline = atoll.now() + 30
    for i = 1, n do
      while true do
        local _, owners = benches[i]:ids("probe", 300, "any")
        if count(owners) == n then break end
        assert(atoll.now() < deadline, "the nodes do not all place ids on all " .. n)
        atoll.sleep(0.05)
      end
    end
  end

  for i = 1, 3 do start(i) end
  placed_on_all(3)
  local b = benches[1]
  local plain_rss_kb, plain_heap_kb = benches[2]:plain(IDLE)

  -- Activation: warm-up ids first (JIT, links, the lease), then the measured ones.
  local ids = b:ids("a", WARMUP + ACTIVATIONS, "elsewhere")
  local ms = b:first_calls(ids, 1)
  local latencies = {}
  for i = WARMUP + 1, #ms do latencies[#latencies + 1] = ms[i] end
  table.sort(latencies)
  bench("virtual.activate.p50.ms", quantile(latencies, 0.50), "ms", "%.3f")
  bench("virtual.activate.p99.ms", quantile(latencies, 0.99), "ms", "%.3f")

  -- Calls to active ids, virtual and direct, alternated.
  local owners
  ids, owners = b:ids("c", RATE_IDS, "any")
  b:activate(ids, 64)
  local best = { virtual = 0, direct = 0 }
  for run = 0, 2 * RATE_RUNS do
    local how = run % 2 == 0 and "virtual" or "direct"
    local rate = b:calls(ids, how, RATE_PER, 64)
    if run > 0 then best[how] = math.max(best[how], rate) end -- (run 0: a warm-up)
    io.stderr:write(("%s c64: %.0f calls/s\n"):format(how, rate))
  end
  local shares = {}
  for i = 1, 3 do shares[i] = ("v%d %d"):format(i, owners[addresses[i]] or 0) end
  io.stderr:write(("call ids by owner: %s\n"):format(table.concat(shares, ", ")))
  bench("virtual.call.rate.c64", best.virtual, "calls/s", "%.0f")
  bench("direct.call.rate.c64", best.direct, "calls/s", "%.0f")

  -- Rebalancing when a fourth node joins.
  ids = b:ids("r", REBALANCE_IDS, "any")
  b:activate(ids, 64)
  local t_spawn = atoll.now()
  start(4)
  local moved = b:owned_by(ids, addresses, addresses[4])
  local up_at, last, missing = b:moved(moved, addresses[4], 120)
  assert(last, ("%d of %d moved ids did not answer from the new node within 120 s"):format(missing, #moved))
  io.stderr:write(("rebalance: %d of %d ids moved; node 4 spawned to seen up by node 1 %.3f s\n")
    :format(#moved, #ids, up_at - t_spawn))
  bench("virtual.rebalance.s", last - up_at, "s", "%.3f")

  -- Memory of idle activations, on node 1.
  local rss_kb, heap_kb = b:idle("m", IDLE, 64)
  bench("virtual.idle.bytes", rss_kb * 1024 / IDLE, "bytes", "%.0f")
  bench("virtual.idle.heap.bytes", heap_kb * 1024 / IDLE, "bytes", "%.0f")
  bench("actor.idle.bytes", plain_rss_kb * 1024 / IDLE, "bytes", "%.0f")
  bench("actor.idle.heap.bytes", plain_heap_kb * 1024 / IDLE, "bytes", "%.0f")

  for _, p in ipairs(procs) do p:kill("SIGTERM") end
  for _, p in ipairs(procs) do
    if p:wait(20) == nil then p:kill("SIGKILL") end
  end
end)
