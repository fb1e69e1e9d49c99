-- bench/run cluster: a singleton between five member nodes on loopback, with the default
-- settings (keep-majority downing). The singleton is the specs' persistent counter
-- (tests/functional/apps/singles.lua), its journal one SQLite file all five share. A prober on
-- another node asks the counter which instance answers every 2 ms and prints each change and
-- each failure on the monotonic clock every process of the machine shares.
--
--   singleton.handover.ms            SIGTERM of the host to the first answer from the new
--                                    instance, median of 10 graceful leaves
--   singleton.handover.failed.calls  calls that failed during those leaves (the prober's)
--   singleton.failover.p50.s         SIGKILL of the host to the first answer from the new
--   singleton.failover.p99.s         instance, over 20 kills (nearest rank)
--
-- After each leave or kill the node starts again (a new run, the youngest) and rejoins, so that
-- the next round has five members again.
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"

package.path = "tests/?.lua;" .. package.path
local members = require "helpers.members"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"

local bin = arg[1] or host.exepath()
local LEAVES = tonumber(arg[2]) or 10
local KILLS = tonumber(arg[3]) or 20
local N = 5
local APP = "tests/functional/apps/singles.lua"

nodes.secret = "bench-" .. host.pid()
require("helpers.node").bin = bin
atoll.log.level("warn")

local lib = dofile "bench/lib.lua"
local bench, quantile = lib.bench, lib.quantile

local dir = tmp.dir("bench-cluster")
local opts = { app = APP, env = { SINGLE_PERSISTENT = "1" } }

local function start(name, join)
  local extra = { "--data-dir", dir }
  if join then
    extra[#extra + 1] = "--join"
    extra[#extra + 1] = join
  end
  return members.start(name, extra, opts)
end

local function caller(v)
  return nodes.named(v.address, "caller", 30)
end

local function all_up(views)
  members.await_all(views, members.seeing(members.addresses(views), "up"), 30, "all members up")
end

-- The view whose node runs the counter, once all agree.
local function host_of(views)
  local deadline = atoll.now() + 30
  while atoll.now() < deadline do
    local where, agreed = nil, true
    for _, v in ipairs(views) do
      local ok, w = pcall(function() return caller(v):where() end)
      if not ok or (where and w ~= where) then agreed = false end
      where = ok and w or where
    end
    if agreed and where then
      for _, v in ipairs(views) do
        if v.address == where then return v end
      end
    end
    atoll.sleep(0.05)
  end
  error("the five did not agree where the counter runs within 30 s")
end

-- One round: stops the host with `signal`, and returns the seconds from then to the first answer
-- from the new instance, and how many calls failed meanwhile; then restarts it.
local function round(views, signal)
  local victim = host_of(views)
  local prober
  for _, v in ipairs(views) do
    if v ~= victim then prober = v end
  end
  assert(caller(prober):probe(0.002))
  local current = prober:line("^answer (%S+) ", 10)
  assert(current, "the prober got no answer")
  atoll.sleep(0.2 + math.random() * 0.3)
  local t0 = atoll.now()
  victim.p:kill(signal)
  local failed, t1 = 0, nil
  while t1 == nil do
    local line = prober:line("^(%S+ %S+ [%d%.]+)$", 30)
    if line == nil then error("no answer from a new instance within 30 s") end
    local what, run, t = line:match("^(%S+) (%S+) ([%d%.]+)$")
    if what == "fail" then
      failed = failed + 1
    elseif what == "answer" and run ~= current then
      t1 = tonumber(t)
    end
  end
  caller(prober):unprobe()
  victim.p:wait(15)
  local rest = {}
  for _, v in ipairs(views) do
    if v ~= victim then rest[#rest + 1] = v end
  end
  local again = start(victim.name, rest[1].address)
  for i, v in ipairs(views) do
    if v == victim then views[i] = again end
  end
  all_up(views)
  return t1 - t0, failed
end

local views = {}

local function measure()
  views[1] = start("s1")
  for i = 2, N do views[i] = start("s" .. i, views[1].address) end
  all_up(views)

  local handovers, failed_total = {}, 0
  for k = 1, LEAVES do
    local s, failed = round(views, "SIGTERM")
    handovers[#handovers + 1] = s * 1000
    failed_total = failed_total + failed
    io.stderr:write(("leave %d: first answer from the new instance after %.1f ms, %d calls failed\n")
      :format(k, s * 1000, failed))
  end
  table.sort(handovers)
  bench("singleton.handover.ms", quantile(handovers, 0.5), "ms", "%.1f")
  bench("singleton.handover.failed.calls", failed_total, "calls", "%d")

  local failovers = {}
  for k = 1, KILLS do
    local s, failed = round(views, "SIGKILL")
    failovers[#failovers + 1] = s
    io.stderr:write(("kill %d: first answer from the new instance after %.2f s (%d calls failed)\n")
      :format(k, s, failed))
  end
  table.sort(failovers)
  bench("singleton.failover.p50.s", quantile(failovers, 0.5), "s")
  bench("singleton.failover.p99.s", quantile(failovers, 0.99), "s")
end

atoll.run(function()
  math.randomseed(host.pid())
  assert(cluster.start { listen = "127.0.0.1:0", secret = nodes.secret, name = "bench-cluster" })
  local ok, err = xpcall(measure, debug.traceback)
  -- The nodes go whatever happened (a failed round would leave them running).
  for _, v in pairs(views) do pcall(v.p.kill, v.p, "SIGKILL") end
  tmp.remove(dir)
  if not ok then error(err, 0) end
end)
