-- bench/run swim, real processes: ten member nodes on loopback with the default settings; one at
-- a time is SIGKILLed, and the time from the kill to the last of the other nine declaring it
-- down is measured (from the timestamps the nodes print: atoll.now() is the machine's monotonic
-- clock, the same in every process); then it is restarted at the same address and rejoins.
--
--   swim.real.n10.detect.p50.s   median over the kills
--   swim.real.n10.detect.p99.s   99th percentile (nearest rank: the worst of fewer than 100)
local atoll = require "atoll"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"

package.path = "tests/?.lua;" .. package.path
local members = require "helpers.members"

local bin = arg[1] or host.exepath()
local KILLS = tonumber(arg[2]) or 20
local N = 10
local secret = "bench-" .. host.pid()

atoll.log.level("warn")

-- Members print through tests/helpers/members.lua's views; it starts nodes
-- through helpers.cluster, which wants the binary and secret from here.
local nodes = require "helpers.cluster"
nodes.secret = secret
require("helpers.node").bin = bin

local function quantile(sorted, q)
  local rank = math.max(1, math.ceil(q * #sorted))
  return sorted[rank]
end

local function bench(name, value, unit)
  print(("BENCH %s %.2f %s"):format(name, value, unit))
  io.stdout:flush()
end

atoll.run(function()
  assert(cluster.start { listen = "127.0.0.1:0", secret = secret, name = "bench-swim" })
  local views = { members.start("m1") }
  for i = 2, N do views[i] = members.start("m" .. i, { "--join", views[1].address }) end
  members.await_all(views, members.seeing(members.addresses(views), "up"), 30, "all members up")

  local times = {}
  math.randomseed(host.pid())
  for k = 1, KILLS do
    local vi = math.random(1, N)
    local victim = views[vi]
    local old = victim.members[victim.address] and victim.members[victim.address].incarnation
    local rest = {}
    for _, v in ipairs(views) do
      if v ~= victim then rest[#rest + 1] = v end
    end
    -- Kill at a random point of the probe interval.
    atoll.sleep(math.random() * 0.5)
    local t0 = atoll.now()
    victim.p:kill("SIGKILL")
    victim.p:wait(5)
    local worst = 0
    for _, v in ipairs(rest) do
      v:await(function(w)
        local e = w.members[victim.address]
        return e and e.status == "down"
      end, 30, victim.name .. " down")
      local e = v.members[victim.address]
      worst = math.max(worst, e.at - t0)
    end
    times[#times + 1] = worst
    io.stderr:write(("kill %d: %s declared down by all %d others in %.3f s\n"):format(k, victim.name,
      #rest, worst))
    -- Back at the same address, as a new incarnation.
    local again = members.start(victim.name, { "--listen", victim.address, "--join", rest[1].address })
    views[vi] = again
    members.await_all(views, function(w)
      local e = w.members[again.address]
      return e and e.status == "up" and e.incarnation ~= old
    end, 30, victim.name .. " back up")
  end
  table.sort(times)
  bench("swim.real.n10.detect.p50.s", quantile(times, 0.5), "s")
  bench("swim.real.n10.detect.p99.s", quantile(times, 0.99), "s")
  for _, v in ipairs(views) do v.p:kill("SIGKILL") end
end)
