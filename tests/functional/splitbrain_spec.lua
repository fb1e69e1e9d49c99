-- Split brains: five real nodes, each in a network namespace of its own on one bridge
-- (tests/helpers/netns.lua), hosting the persistent singleton counter of
-- tests/functional/apps/singles.lua and calling it steadily; the network is cut into 3 | 2 and
-- into 2 | 2 | 1, then healed. With keep-majority downing: the majority side keeps or takes the
-- singleton, the minority stops serving before the majority starts a new instance, a cut where
-- no side has a majority stops every side, the journal's history has no fork and no gap, and
-- once healed the cluster is one view with one instance. Pending, with the reason, where
-- namespaces cannot be made.
local async = require "helpers.async"
local netns = require "helpers.netns"
local nodes = require "helpers.cluster"
local node = require "helpers.node"
local tmp = require "helpers.tmp"
local wait = require "helpers.wait"
local json = require "atoll.util.json"

local PORT = 7000
local APP = "tests/functional/apps/singles.lua"

describe("a cluster cut in parts", function()
  local net, why = netns.create(5)
  if not net then
    pending("needs network namespaces: " .. why)
    return
  end
  local dir = tmp.dir("splitbrain")
  teardown(function() tmp.remove(dir) end)

  local function address(i) return net.nodes[i].ip .. ":" .. PORT end

  local procs = {}

  local function start(i)
    local args = { "run", APP, "--listen", address(i), "--name", "sb" .. i, "--data-dir", dir,
      "--log-level", os.getenv("SB_LOG") or "info" }
    if i > 1 then
      args[#args + 1] = "--join"
      args[#args + 1] = address(1)
    end
    procs[i] = net:spawn(i, args, { env = { ATOLL_SECRET = nodes.secret, SINGLE_PERSISTENT = "1" } })
    return procs[i]
  end

  -- atoll call through node i's namespace: the decoded answer, or nil and the error.
  local function call(i, name, method, args, seconds)
    local argv = { "call", "--node", address(i), "--timeout", tostring(seconds or 5), name, method }
    if args then argv[#argv + 1] = json.encode(args) end
    local code, out, err = net:exec(i, { node.bin, unpack(argv) },
      { env = { ATOLL_SECRET = nodes.secret }, timeout = (seconds or 5) + 5 })
    if code ~= 0 then return nil, err end
    return json.decode(out)
  end

  -- members(i) -> { address -> status } in node i's view
  local function view(i)
    local v = call(i, "atoll.node", "members")
    if v == nil then return nil end
    local out = {}
    for _, m in ipairs(v.members) do out[m.address] = m.status end
    return out
  end

  local function all_up(list, seconds, what)
    wait.retry(function()
      for _, i in ipairs(list) do
        local v = view(i)
        if v == nil then return false end
        for _, j in ipairs(list) do
          if v[address(j)] ~= "up" then return false end
        end
      end
      return true
    end, seconds, what)
  end

  -- where(i) -> the address node i reaches the counter at, or nil
  local function where(i)
    return (call(i, "caller", "where", nil, 3))
  end

  local function index_of(addr)
    for i = 1, 5 do
      if address(i) == addr then return i end
    end
  end

  -- Every instance's interval (start to last call served), from what all five printed.
  local function intervals()
    local runs = {}
    for i = 1, 5 do
      for line in procs[i]:stdout():gmatch("[^\n]+") do
        local run, t = line:match("^start (%S+) ([%d%.]+)$")
        if run then runs[run] = { run = run, node = i, from = tonumber(t), to = tonumber(t), served = 0 } end
        local srun, _, st = line:match("^serve (%S+) (%d+) ([%d%.]+)$")
        if srun and runs[srun] then
          runs[srun].to = math.max(runs[srun].to, tonumber(st))
          runs[srun].served = runs[srun].served + 1
        end
      end
    end
    local list = {}
    for _, r in pairs(runs) do list[#list + 1] = r end
    table.sort(list, function(a, b) return a.from < b.from end)
    return list
  end

  local account -- (below)

  local function assert_no_overlap()
    local list = intervals()
    for k = 2, #list do
      local a, b = list[k - 1], list[k]
      if a.to >= b.from then io.stderr:write(account({ 1, 2, 3, 4, 5 }), "\n") end
      assert.is_true(a.to < b.from, ("instances %s on sb%d (%.3f to %.3f, %d served) and %s on sb%d "
        .. "(from %.3f) overlap by %.0f ms"):format(a.run, a.node, a.from, a.to, a.served, b.run, b.node,
        b.from, (a.to - b.from) * 1000))
    end
    return list
  end

  local function complement(group)
    local inside, out = {}, {}
    for _, i in ipairs(group) do inside[i] = true end
    for i = 1, 5 do
      if not inside[i] then out[#out + 1] = i end
    end
    return out
  end

  -- What each node of `list` says of its singletons and membership, and its log's tail: the
  -- account a failure prints.
  function account(list)
    local out = {}
    for _, i in ipairs(list) do
      local info = call(i, "caller", "info", nil, 3)
      local lines = {}
      for line in procs[i]:stderr():gmatch("[^\n]+") do
        if line:find("singleton", 1, true) or line:find("downing", 1, true) or line:find("WARN", 1, true) then
          lines[#lines + 1] = line
        end
      end
      local log = table.concat(lines, "\n")
      out[#out + 1] = ("--- sb%d (%s): singletons %s\n%s"):format(i, address(i), json.encode(info),
        log:sub(-4000))
    end
    return table.concat(out, "\n")
  end

  local function agreed_host(list, seconds, what)
    local host
    local ok, err = pcall(wait.retry, function()
      host = nil
      for _, i in ipairs(list) do
        local w = where(i)
        if w == nil or (host and w ~= host) then return false end
        host = w
      end
      return host ~= nil
    end, seconds, what)
    if not ok then error(tostring(err) .. "\n" .. account(list), 2) end
    return index_of(host)
  end

  it("keeps one instance through a cut of 3 | 2, one of 2 | 2 | 1, and the heals after them",
    async(function()
      local t0 = require("atoll").now()
      local function phase(what) -- (with SB_LOG set: how long each phase took)
        if os.getenv("SB_LOG") == nil then return end
        io.stderr:write(("  %6.1f s  %s\n"):format(require("atoll").now() - t0, what))
      end
      for i = 1, 5 do start(i) end
      for i = 1, 5 do procs[i]:expect("^ready$", wait.seconds(15)) end
      all_up({ 1, 2, 3, 4, 5 }, 20, "five members up")
      local h = agreed_host({ 1, 2, 3, 4, 5 }, 20, "the five to agree where the counter runs")
      phase("five up, host agreed")
      for i = 1, 5 do assert(call(i, "caller", "start", { 0.05, 3 })) end

      -- 3 | 2, with the counter's host on the side of two.
      local minority = { h, h % 5 + 1 }
      local majority = complement(minority)
      net:cut { majority, minority }
      phase("cut 3 | 2")
      local h2 = agreed_host(majority, 30, "the majority side to run the counter")
      assert.is_true(h2 ~= minority[1] and h2 ~= minority[2], "the counter stayed on the minority side")
      -- The majority goes on serving; the minority's calls fail once it stops its instances.
      local before = call(majority[1], "caller", "counter", nil, 10)
      wait.retry(function() return call(majority[1], "caller", "counter", nil, 10) >= before + 20 end, 15,
        "the majority side to serve calls")
      assert_no_overlap()
      phase("majority served")

      -- Heal: the minority was downed, starts again as new runs, and rejoins; one view, one instance.
      net:heal()
      for _, i in ipairs(minority) do
        procs[i]:expect("the cluster downed this node", wait.seconds(20), "stderr")
      end
      all_up({ 1, 2, 3, 4, 5 }, 30, "five members up after the heal")
      phase("minority downed")
      agreed_host({ 1, 2, 3, 4, 5 }, 20, "one instance after the heal")
      assert_no_overlap()

      -- 2 | 2 | 1: no side has a majority; every side stops its instance.
      local h3 = agreed_host({ 1, 2, 3, 4, 5 }, 20, "one instance before the second cut")
      local a = { h3, h3 % 5 + 1 }
      local b = { (h3 + 1) % 5 + 1, (h3 + 2) % 5 + 1 }
      local c = { (h3 + 3) % 5 + 1 }
      net:cut { a, b, c }
      phase("cut 2 | 2 | 1")
      -- Within stable-after and a little, every side has stopped serving: the counter stops growing.
      wait.retry(function()
        local x = call(a[1], "caller", "counter", nil, 1)
        return x == nil
      end, 20, "the counter to stop answering on the side that ran it")
      local runs = intervals()
      local last = 0
      for _, r in ipairs(runs) do last = math.max(last, r.to) end
      wait.retry(function()
        local now_runs = intervals()
        local latest = 0
        for _, r in ipairs(now_runs) do latest = math.max(latest, r.to) end
        return latest == last
      end, 5, "no instance to serve while no side has a majority")
      -- (still nothing served a second later)
      require("atoll").sleep(1)
      local latest = 0
      for _, r in ipairs(intervals()) do latest = math.max(latest, r.to) end
      assert.equal(last, latest, "an instance served while no side had a majority")

      net:heal()
      all_up({ 1, 2, 3, 4, 5 }, 30, "five members up after the second heal")
      phase("no side served")
      local h4 = agreed_host({ 1, 2, 3, 4, 5 }, 20, "one instance after the second heal")
      phase("agreed")
      local n0 = call(h4, "caller", "counter", nil, 10)
      wait.retry(function() return call(h4, "caller", "counter", nil, 10) >= n0 + 20 end, 15,
        "calls served after the second heal")
      assert_no_overlap()
      phase("served after heal")

      -- The journal: one history, 1..N with no fork and no gap, and the counter is N.
      for i = 1, 5 do call(i, "caller", "stop", nil, 30) end
      phase("callers stopped")
      local n = call(h4, "caller", "counter", nil, 10)
      local code, out = net:exec(1, { node.bin, "journal", "show", "singleton/counter", "--data-dir", dir })
      assert.equal(0, code)
      local seq = 0
      for line in out:gmatch("[^\n]+") do
        local e = json.decode(line)
        seq = seq + 1
        assert.equal(seq, e.seq, "a gap or a fork in the counter's history")
      end
      assert.equal(n, seq)
      phase("journal checked")
    end, 240))
end)
