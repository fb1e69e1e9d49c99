-- bench/run cluster: the split-brain spec's cuts (tests/helpers/partition.lua: five nodes in
-- network namespaces of their own, a persistent singleton counter called steadily from all five,
-- cut 3 | 2 with its host on the side of two, healed, cut 2 | 2 | 1, healed), ROUNDS times on
-- fresh namespaces. Prints
--
--   splitbrain.overlap.ms   the longest time two instances served at once, over every round
--                           (each instance prints its start and every call it serves on the
--                           monotonic clock all processes of the machine share); 0 when none did
--   splitbrain.rounds       rounds run (each ends with a history with no fork and no gap)
--
-- Needs root (network namespaces, nft): elsewhere it says why and prints nothing.
--
--   build/atoll lua bench/splitbrain.lua [BUILD/atoll [ROUNDS]]
local atoll = require "atoll"
local host = require "atoll.c.host"

package.path = "tests/?.lua;" .. package.path
local netns = require "helpers.netns"
local nodes = require "helpers.cluster"
local partition = require "helpers.partition"
local tmp = require "helpers.tmp"

require("helpers.node").bin = arg[1] or host.exepath()
local ROUNDS = tonumber(arg[2]) or 5
nodes.secret = "bench-" .. host.pid()
atoll.log.level("warn")

atoll.run(function()
  local worst, rounds = 0, 0
  for k = 1, ROUNDS do
    local net, why = netns.create(5)
    if not net then
      io.stderr:write("bench/splitbrain.lua: skipped: needs network namespaces: " .. why .. "\n")
      return
    end
    local dir = tmp.dir("bench-splitbrain")
    local five = partition.new(net, dir)
    local round_worst = 0
    local ok, err = pcall(function()
      local n, history = five:scenario {
        checkpoint = function()
          local ms, what = five:overlap()
          if ms > round_worst then
            round_worst = ms
            io.stderr:write(what, "\n")
          end
        end,
      }
      for i, e in ipairs(history) do
        if e.seq ~= i then error("a gap or a fork in the counter's history at " .. i) end
      end
      if n ~= #history then error(("the counter says %d, its history has %d events"):format(n, #history)) end
    end)
    net:destroy()
    tmp.remove(dir)
    if not ok then error(("round %d: %s"):format(k, tostring(err)), 0) end
    worst, rounds = math.max(worst, round_worst), rounds + 1
    io.stderr:write(("round %d: longest overlap %.0f ms\n"):format(k, round_worst))
  end
  print(("BENCH splitbrain.overlap.ms %.0f ms"):format(worst))
  print(("BENCH splitbrain.rounds %d rounds"):format(rounds))
end)
