-- bench/run swim, simulated: the SWIM core with its default settings in tests/sim/swimsim, for
-- clusters of 10, 100 and 1,000 members.
--
--   swim.sim.nN.detect.p50.s                crash to declared dead by every member, median
--   swim.sim.nN.detect.p99.s                ... 99th percentile (nearest rank)
--   swim.sim.nN.dissemination.periods       a change reaching every member, worst of 20
--   swim.sim.nN.bytes.per.member.period     sent per member per probe interval, over the crashes
--                                           (probes, suspicions, deaths, restarts, rejoins)
--   swim.sim.nN.false.positives.loss5       live members declared dead by anyone over 1,000
--                                           intervals at 5% packet loss
--
--   atoll lua bench/swim_sim.lua BUILD/swimsim
local atoll = require "atoll"
local process = require "atoll.process"

local sim = assert(arg[1], "usage: swim_sim.lua SWIMSIM")

-- Kills per size: enough for the percentiles, few enough for minutes.
local KILLS = { [10] = 200, [100] = 60, [1000] = 20 }

local function run(args)
  local cmd = { sim }
  for a in args:gmatch("%S+") do cmd[#cmd + 1] = a end
  local p = assert(process.spawn(cmd))
  local code = p:wait(600)
  local out = p:stdout()
  if code ~= 0 then error("swimsim " .. args .. " failed:\n" .. out .. p:stderr(), 0) end
  local r = {}
  for k, v in out:gmatch("([%w%.]+) ([^\n]*)\n") do r[k] = tonumber(v) or v end
  return r
end

local function bench(name, value, unit)
  print(("BENCH %s %s %s"):format(name, value, unit))
  io.stdout:flush()
end

atoll.run(function()
  for _, n in ipairs { 10, 100, 1000 } do
    local prefix = "swim.sim.n" .. n
    local crash = run(("-n %d --kills %d crash"):format(n, KILLS[n]))
    bench(prefix .. ".detect.p50.s", ("%.2f"):format(crash["detect.p50.s"]), "s")
    bench(prefix .. ".detect.p99.s", ("%.2f"):format(crash["detect.p99.s"]), "s")
    local dis = run(("-n %d --trials 20 disseminate"):format(n))
    bench(prefix .. ".dissemination.periods", dis["dissemination.periods.max"], "periods")
    bench(prefix .. ".bytes.per.member.period", ("%.0f"):format(crash["bytes.per.member.period"]), "bytes")
    local loss = run(("-n %d --loss 0.05 --periods 1000 loss"):format(n))
    bench(prefix .. ".false.positives.loss5", loss["deaths.false"], "deaths")
  end
end)
