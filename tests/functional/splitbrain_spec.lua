-- Split brains: five real nodes, each in a network namespace of its own on one bridge
-- (tests/helpers/netns.lua), hosting the persistent singleton counter of
-- tests/functional/apps/singles.lua and calling it steadily; the network is cut into 3 | 2 and
-- into 2 | 2 | 1, then healed (tests/helpers/partition.lua, which `bench/run cluster` repeats to
-- measure splitbrain.overlap.ms). With keep-majority downing: the majority side keeps or takes
-- the singleton, the minority stops serving before the majority starts a new instance, a cut
-- where no side has a majority stops every side, the journal's history has no fork and no gap,
-- and once healed the cluster is one view with one instance within 30 s (members) and 20 s more
-- (one place for the counter). Pending, with the reason, where namespaces cannot be made.
local async = require "helpers.async"
local netns = require "helpers.netns"
local partition = require "helpers.partition"
local tmp = require "helpers.tmp"

describe("a cluster cut in parts", function()
  local net, why = netns.create(5)
  if not net then
    pending("needs network namespaces: " .. why)
    return
  end
  local dir = tmp.dir("splitbrain")
  teardown(function() tmp.remove(dir) end)

  it("keeps one instance through a cut of 3 | 2, one of 2 | 2 | 1, and the heals after them",
    async(function()
      local five = partition.new(net, dir)
      local t0 = require("atoll").now()
      local n, history = five:scenario {
        -- No two instances ever served at once.
        checkpoint = function()
          local ms, what = five:overlap()
          if what then error(what .. "\n" .. five:account { 1, 2, 3, 4, 5 }) end
          assert.equal(0, ms)
        end,
        -- (with SB_LOG set: how long each step took)
        phase = function(what)
          if os.getenv("SB_LOG") then io.stderr:write(("  %6.1f s  %s\n"):format(require("atoll").now() - t0, what)) end
        end,
      }
      -- The journal: one history, 1..N with no fork and no gap, and the counter is N.
      for i, e in ipairs(history) do
        assert.equal(i, e.seq, "a gap or a fork in the counter's history")
      end
      assert.equal(n, #history)
    end, 240))
end)
