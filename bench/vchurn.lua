-- bench/run virtual, its churn run: the churn of virtual_spec (tests/helpers/vchurn.lua: four to
-- five nodes calling 1,000 ids of a persistent counter continuously while nodes join, leave
-- gracefully, are SIGKILLed and started again, or stopped for 3 s, one fault at a time), for
-- VCHURN_SECONDS (60 by default) with VCHURN_SEED (1 by default). Prints
--
--   virtual.churn.duplicates   ids that had two activations at once (0 is the only good figure)
--   virtual.churn.forks        ids with a count served twice (two writers of one history)
--   virtual.churn.lost         ids whose final count is below one an activation served
--   virtual.churn.faults       faults injected
--   virtual.churn.calls        calls that succeeded, over the run, from every node
--
--   build/atoll lua bench/vchurn.lua [BUILD/atoll]
local atoll = require "atoll"
local host = require "atoll.c.host"

package.path = "tests/?.lua;" .. package.path
local nodes = require "helpers.cluster"
local vchurn = require "helpers.vchurn"

require("helpers.node").bin = arg[1] or host.exepath()
nodes.secret = "bench-" .. host.pid()
atoll.log.level("warn")

local SECONDS = tonumber(os.getenv("VCHURN_SECONDS") or "") or 60
local SEED = tonumber(os.getenv("VCHURN_SEED") or "") or 1

atoll.run(function()
  nodes.self()
  local report = vchurn.run { seconds = SECONDS, seed = SEED, ids = 1000 }
  vchurn.stop(report)
  for _, line in ipairs(report.detail) do io.stderr:write(line, "\n") end
  print(("BENCH virtual.churn.duplicates %d ids"):format(report.duplicates))
  print(("BENCH virtual.churn.forks %d ids"):format(report.forks))
  print(("BENCH virtual.churn.lost %d ids"):format(report.lost))
  print(("BENCH virtual.churn.faults %d faults"):format(#report.faults))
  print(("BENCH virtual.churn.calls %d calls"):format(report.calls.ok))
  io.stderr:write(("bench/vchurn: seed %d, %d s: %s\n"):format(SEED, SECONDS, table.concat(report.faults, "; ")))
end)
