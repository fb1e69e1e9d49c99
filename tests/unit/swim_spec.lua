-- The SWIM core in the simulator (tests/sim/swimsim.c): many nodes on a
-- seeded virtual clock and network. The simulator itself checks, all the
-- time, that no member's version ever goes down, and fails with the seed
-- and a replay command when a scenario's promise breaks.
local async = require "helpers.async"
local node = require "helpers.node"
local process = require "atoll.process"

local SIM = node.bin:gsub("[^/]*$", "") .. "swimsim"

-- sim "args" -> the `key value` lines as a table (numbers where they are),
-- the exit status and the output.
local function sim(args)
  local cmd = { SIM }
  for a in args:gmatch("%S+") do cmd[#cmd + 1] = a end
  local p = assert(process.spawn(cmd))
  local status = p:wait(60)
  assert(status, "swimsim " .. args .. " did not finish in 60 s")
  local out = p:stdout() .. p:stderr()
  local r = {}
  for k, v in out:gmatch("([%w%.]+) ([^\n]*)\n") do r[k] = tonumber(v) or v end
  return r, status, out
end

-- Runs a scenario and asserts it held, with the simulator's own report.
local function passes(args)
  local r, status, out = sim(args)
  assert(status == 0 and out:find("\nok\n", 1, true), "swimsim " .. args .. ":\n" .. out)
  return r
end

local function seeds(n, f)
  for seed = 1, n do f(seed) end
end

describe("SWIM in the simulator", function()
  it("declares no one dead without faults, joining through one seed", async(function()
    seeds(3, function(seed)
      local r = passes(("-n 20 --cold --periods 200 quiet -s %d"):format(seed))
      assert.equal(0, r["deaths.false"])
    end)
    local r = passes("-n 200 --periods 100 quiet")
    assert.equal(0, r["deaths.false"])
  end))

  it("has every member declare a crashed node dead within the bound", async(function()
    -- The simulator fails the run if a crash is not declared dead by every
    -- member within the bound its parameters imply (detect.bound.s).
    seeds(3, function(seed)
      local r = passes(("-n 10 --kills 20 crash -s %d"):format(seed))
      assert.is_true(r["detect.max.s"] <= r["detect.bound.s"])
      assert.is_true(r["detect.p50.s"] <= 4, "median detection " .. r["detect.p50.s"] .. " s")
      assert.equal(0, r["deaths.false"])
    end)
    local r = passes("-n 100 --kills 5 crash")
    assert.is_true(r["detect.max.s"] <= r["detect.bound.s"])
  end))

  it("finds a crashed node that restarts at its address without joining anyone, within seconds",
    async(function()
      -- The members still remember it as dead: they call on it, and its new
      -- run answers. The simulator fails the run if views do not converge.
      seeds(3, function(seed)
        for _, n in ipairs { 5, 10 } do
          local r = passes(("-n %d --kills 10 --no-join crash -s %d"):format(n, seed))
          assert.is_true(r["rejoin.max.s"] <= 3, ("n = %d: rejoined after %s s"):format(n, r["rejoin.max.s"]))
          assert.equal(0, r["deaths.false"])
        end
      end)
      -- In a larger cluster, a handful of members exchange states with the
      -- new run, not every one that hears of it (the periodic push-pull is
      -- left out of the count).
      for _, join in ipairs { "--no-join", "" } do
        local r = passes(("-n 200 --kills 3 --push-pull 100000000 %s crash"):format(join))
        assert.is_true(r["rejoin.max.s"] <= 3, join .. ": rejoined after " .. r["rejoin.max.s"] .. " s")
        assert.is_true(r["rejoin.push.pulls.max"] <= 5, join .. ": " .. r["rejoin.push.pulls.max"])
      end
    end))

  it("does not declare a node paused for 2 s dead", async(function()
    seeds(40, function(seed)
      for _, n in ipairs { 5, 10 } do
        local r = passes(("-n %d --pause-ms 2000 pause -s %d"):format(n, seed))
        assert.equal(0, r["deaths.false"])
      end
    end)
  end))

  it("declares no one dead at 5% packet loss", async(function()
    seeds(3, function(seed)
      for _, n in ipairs { 10, 50 } do
        local r = passes(("-n %d --loss 0.05 --periods 1000 loss -s %d"):format(n, seed))
        assert.equal(0, r["deaths.false"], ("n = %d, seed %d"):format(n, seed))
        assert.is_true(r.suspicions > 0, "the loss should have caused suspicions")
      end
    end)
  end))

  it("converges again after a partition heals", async(function()
    for _, mode in ipairs { "", "--asymmetric" } do
      seeds(3, function(seed)
        -- Long enough for each side to declare the other dead.
        local r = passes(("-n 30 --split-ms 10000 %s partition -s %d"):format(mode, seed))
        assert.is_true(r["deaths.during"] > 0)
        -- Members that could see each other all along are not declared
        -- dead on the other side's word.
        assert.equal(0, r["deaths.same.side"], mode)
        -- Too short for a death: suspicions are refuted.
        r = passes(("-n 12 --split-ms 1500 %s partition -s %d"):format(mode, seed))
        assert.equal(0, r["deaths.during"] + r["deaths.after"], mode)
      end)
    end
  end))

  it("spreads news to every member in O(log n) periods", async(function()
    for _, n in ipairs { 10, 100 } do
      local r = passes(("-n %d disseminate"):format(n))
      assert.is_true(r["dissemination.periods.max"] <= r["dissemination.bound"],
        ("n = %d: %d periods"):format(n, r["dissemination.periods.max"]))
    end
  end))

  it("numbers runs as they go up, alike in every view, a newcomer's and a new run's the largest",
    async(function()
      -- The simulator fails the run if, once views converged, a member holds
      -- another's upno otherwise than that member gave it, a member is up
      -- without one, or the node that went up last (it joined, or restarted
      -- as a new run) does not have the largest.
      seeds(5, function(seed)
        local r = passes(("-n 8 --joins 3 --kills 10 seniority -s %d"):format(seed))
        -- 1 for the five that started together, then one more for each
        -- newcomer at most (a new run may take its earlier run's number,
        -- when the member it merged with held the new run already)
        assert.is_true(r["upno.max"] >= 4 and r["upno.max"] <= 14, r["upno.max"])
      end)
      passes("-n 50 --joins 5 --kills 5 --loss 0.02 seniority")
    end))

  it("holds a node downed for good on every member, though it runs and refutes, until a new run",
    async(function()
      -- One member downs a live node while another declares it dead by hand,
      -- so that it refutes. The simulator fails the run unless every member
      -- holds it downed and it knows, within the dissemination bound
      -- (--isolate: it is cut off when downed, and has 20 periods after the
      -- heal to learn it); if any member holds that run otherwise
      -- afterwards, past its tombstone too; or if its new run does not get
      -- back in.
      for _, mode in ipairs { "", "--isolate" } do
        seeds(5, function(seed)
          for _, n in ipairs { 3, 10, 50 } do
            local r = passes(("-n %d %s --periods 100 --tombstone 20000 down -s %d"):format(n, mode, seed))
            assert.equal(0, r["down.remembered"], "forgotten after its tombstone")
          end
        end)
      end
      local r = passes("-n 20 --loss 0.05 --periods 40 down")
      assert.equal(19, r["down.remembered"], "remembered within its tombstone")
    end))

  it("forgets a crashed node after its tombstone time, unless told to keep the unreachable",
    async(function()
      -- The simulator fails the run unless, past the tombstone time, every
      -- member forgot the node, or (--keep-unreachable) every member still
      -- holds it dead.
      seeds(3, function(seed)
        for _, n in ipairs { 3, 10 } do
          local r = passes(("-n %d --tombstone 10000 unreachable -s %d"):format(n, seed))
          assert.equal(n - 1, r["unreachable.forgotten"])
          r = passes(("-n %d --tombstone 10000 --keep-unreachable unreachable -s %d"):format(n, seed))
          assert.equal(n - 1, r["unreachable.kept"])
        end
      end)
    end))

  it("keeps bytes per member per period flat as the cluster grows", async(function()
    local small = passes("-n 10 --kills 5 crash")["bytes.per.member.period"]
    local large = passes("-n 200 --kills 3 crash")["bytes.per.member.period"]
    assert.is_true(large < 2 * small, ("%s at n = 10, %s at n = 200"):format(small, large))
  end))

  it("prints the seed and a replay command when a promise breaks", async(function()
    -- Paused far longer than any suspicion timeout: declared dead.
    local _, status, out = sim("-n 5 --pause-ms 30000 pause --seed 7")
    assert.equal(1, status)
    assert.matches("FAIL seed=7: node %d+ declared node %d+ dead", out)
    assert.matches("replay: [^\n]*swimsim %-n 5 %-%-pause%-ms 30000 pause %-%-seed 7", out)
    assert.is_nil(out:find("\nok\n", 1, true))
  end))

  it("refuses bad usage", async(function()
    local _, status, out = sim("--nodes many quiet")
    assert.equal(2, status)
    assert.matches("%-%-nodes wants a number", out)
    _, status, out = sim("stampede")
    assert.equal(2, status)
    assert.matches("unknown scenario 'stampede'", out)
  end))
end)
