-- Cluster singletons between five real nodes: a steady stream of calls from every node to one
-- counter while its host leaves, is SIGKILLed, or is stopped past its suspicion and continued.
-- Every instance prints when it starts and every call it serves on the monotonic clock that all
-- processes of a machine share (tests/functional/apps/singles.lua); no two instances' intervals
-- (start to last call served) may overlap.
local atoll = require "atoll"
local async = require "helpers.async"
local json = require "atoll.util.json"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local instances = require "helpers.instances"
local members = require "helpers.members"
local wait = require "helpers.wait"
local tmp = require "helpers.tmp"

local await_all, seeing, addresses, others = members.await_all, members.seeing, members.addresses,
  members.others
local APP = "tests/functional/apps/singles.lua"

local dirs = {}

-- Five members hosting the counter; persistent ones share one SQLite journal.
local function five(prefix, persistent)
  local dir = tmp.dir("singleton")
  dirs[#dirs + 1] = dir
  local opts = { app = APP, env = { SINGLE_PERSISTENT = persistent and "1" or "0" } }
  local extra = { "--data-dir", dir }
  local first = members.start(prefix .. "1", extra, opts)
  local views = { first }
  for i = 2, 5 do
    views[i] = members.start(prefix .. i, { "--data-dir", dir, "--join", first.address }, opts)
  end
  await_all(views, seeing(addresses(views), "up"), 15, "all five members up")
  return views
end

local function caller(v)
  return nodes.named(v.address, "caller", 30)
end

-- The view whose node runs the counter, once every node agrees where it runs.
local function host_of(views, except)
  local where
  wait.retry(function()
    where = nil
    for _, v in ipairs(views) do
      if v ~= except then
        local ok, w = pcall(caller(v).where, caller(v))
        if not ok then return false end
        if where and w ~= where then return false end
        where = w
      end
    end
    return where ~= nil and (except == nil or where ~= except.address)
  end, 20, "every node to reach the counter in one place")
  for _, v in ipairs(views) do
    if v.address == where then return v end
  end
  error("the counter runs on " .. tostring(where) .. ", which is none of the five")
end

-- Every instance's interval from what the nodes printed (helpers.instances).
local function intervals(views)
  local outputs = {}
  for _, v in ipairs(views) do outputs[v.name] = v.p:stdout() end
  return instances.intervals(outputs)
end

local function assert_no_overlap(list, views)
  local _, why = instances.overlap(list)
  if why then
    local logs = {}
    for _, v in ipairs(views or {}) do logs[#logs + 1] = "--- " .. v.name .. ":\n" .. v.p:stderr() end
    error(why .. "\n" .. table.concat(logs, "\n"), 2)
  end
end

local function start_callers(views, pause)
  for _, v in ipairs(views) do assert.is_true(caller(v):start(pause or 0.02)) end
end

local function stop_callers(views)
  local total = { made = 0, ok = 0, failed = 0, kinds = {} }
  for _, v in ipairs(views) do
    local s = caller(v):stop()
    total.made, total.ok, total.failed = total.made + s.made, total.ok + s.ok, total.failed + s.failed
    for k, n in pairs(s.kinds) do total.kinds[k] = (total.kinds[k] or 0) + n end
  end
  return total
end


-- The counter's value, read through a node.
local function value(v)
  return caller(v):counter()
end

-- Callers on `rest` (every node but the host) call the counter until it has served 50.
local function serving(rest, pause)
  start_callers(rest, pause)
  wait.retry(function() return value(rest[1]) >= 50 end, 10, "calls to be served")
end

-- Five members, where the counter runs, and the four others calling it steadily.
local function five_serving(prefix, persistent)
  local views = five(prefix, persistent)
  local host = host_of(views)
  local rest = others(views, host)
  serving(rest)
  return views, host, rest
end

describe("a cluster singleton", function()
  before_each(function() nodes.self() end)
  -- (after every spec's nodes have been stopped)
  teardown(function()
    for _, dir in ipairs(dirs) do tmp.remove(dir) end
  end)

  it("moves when its host leaves without failing a call or serving one twice", async(function()
    local views, host, rest = five_serving("leave", true)
    host.p:kill("SIGTERM")
    assert.equal(0, host.p:wait(wait.seconds(15)))
    local new = host_of(rest, host)
    local before = value(new)
    wait.retry(function() return value(rest[1]) >= before + 50 end, 10, "calls served by the new instance")
    local total = stop_callers(rest)
    if total.failed > 0 then
      local lines = {}
      for _, v in ipairs(views) do
        for line in v.p:stdout():gmatch("[^\n]+") do
          if line:match("^failed ") or line:match("^start ") or line:match("^stop ") then
            lines[#lines + 1] = v.name .. ": " .. line
          end
        end
        lines[#lines + 1] = v.name .. " stderr:\n" .. v.p:stderr()
      end
      error(("%d calls failed: %s\n%s"):format(total.failed, require("atoll.util.json").encode(total.kinds),
        table.concat(lines, "\n")))
    end
    assert.equal(total.ok, value(new))
    assert_no_overlap(intervals(views), views)
  end, 90))

  it("stops at once on SIGTERM when its host is alone, failing the calls it holds as unreachable",
    async(function()
      local dir = tmp.dir("singleton")
      dirs[#dirs + 1] = dir
      local v = members.start("alone1", { "--data-dir", dir },
        { app = APP, env = { SINGLE_PERSISTENT = "1" } })
      start_callers({ v }, 0.001)
      wait.retry(function() return value(v) >= 50 end, 10, "calls to be served")
      -- (a node alone that is leaving has nobody to hand its singleton to: it used to start it
      -- again after releasing it, and the shutdown waited its full 8 s for it)
      local t0 = atoll.now()
      v.p:kill("SIGTERM")
      assert.equal(0, v.p:wait(wait.seconds(15)))
      local took = atoll.now() - t0
      assert.is_true(took < 3, ("the node took %.2f s to stop"):format(took))
      for line in v.p:stdout():gmatch("[^\n]+") do
        if line:match("^failed ") then
          assert.truthy(line:find("shutting down, and is alone", 1, true), line)
        end
      end
    end, 60))

  it("loses no call when the next oldest host leaves too, while it takes the singleton over",
    async(function()
      local views = five("leave2", true)
      local host = host_of(views)
      -- The next oldest, by (up number, address) as membership gives them.
      local best
      for _, m in ipairs(nodes.named(host.address, "atoll.node", 10):members().members) do
        if m.address ~= host.address and (best == nil or m.upno < best.upno
          or (m.upno == best.upno and m.address < best.address)) then
          best = m
        end
      end
      local next_host
      for _, v in ipairs(views) do
        if v.address == best.address then next_host = v end
      end
      local rest = others(others(views, host), next_host)
      serving(rest, 0.001)
      host.p:kill("SIGTERM")
      atoll.sleep(0.01)
      next_host.p:kill("SIGTERM")
      assert.equal(0, host.p:wait(wait.seconds(15)))
      assert.equal(0, next_host.p:wait(wait.seconds(15)))
      local new = host_of(rest)
      local before = value(new)
      wait.retry(function() return value(rest[1]) >= before + 50 end, 10, "calls served by the third host")
      local total = stop_callers(rest)
      assert.same({}, total.kinds)
      assert.equal(total.ok, value(new))
      assert_no_overlap(intervals(views), views)
    end, 90))

  it("starts again on the next oldest host when its host is SIGKILLed, with its journal intact",
    async(function()
      -- The host's own caller would die with it: only the others call.
      local _, host, rest = five_serving("kill", true)
      local killed_at = atoll.now()
      host.p:kill("SIGKILL")
      host.p:wait(5)
      local new = host_of(rest, host)
      wait.retry(function() return value(new) >= 1 end, 10, "the new instance to answer")
      local runs = intervals(rest)
      local started = runs[#runs].from
      assert.is_true(started - killed_at < 10, ("the new instance started %.1f s after the kill")
        :format(started - killed_at))
      local before = value(new)
      wait.retry(function() return value(rest[1]) >= before + 50 end, 10, "calls served by the new instance")
      local total = stop_callers(rest)
      -- Calls failed only until the new instance started (those in flight at the kill, and
      -- those made before it started that did not wait long enough).
      for _, v in ipairs(rest) do
        for line in v.p:stdout():gmatch("[^\n]+") do
          local t = tonumber(line:match("^failed .* (%d+%.%d+)$"))
          if t then
            assert.is_true(t <= started + 0.5, ("a call failed at %.3f, after the new instance "
              .. "started at %.3f: %s"):format(t, started, line))
          end
        end
      end
      -- Every acknowledged add is in the state; at most those whose answer was lost besides.
      local n = value(new)
      assert.is_true(n >= total.ok and n <= total.made, ("counter %d, %d acknowledged, %d made")
        :format(n, total.ok, total.made))
    end, 90))

  it("never has two instances serving when its host is stopped past its suspicion and continued",
    async(function()
      local views, host, rest = five_serving("stall", false)
      host.p:kill("SIGSTOP")
      -- The others down it and start the counter elsewhere.
      local new = host_of(rest, host)
      local before = value(new)
      wait.retry(function() return value(rest[1]) >= before + 20 end, 10, "calls served by the new instance")
      host.p:kill("SIGCONT")
      -- The stalled node learns it was downed and starts again as a new run.
      host.p:expect("the cluster downed this node", wait.seconds(15), "stderr")
      host.p:expect("listening on", wait.seconds(15), "stderr")
      local after = value(new)
      wait.retry(function() return value(rest[1]) >= after + 20 end, 10, "calls served after the continue")
      stop_callers(rest)
      local runs = intervals(views)
      assert_no_overlap(runs, views)
      -- The stalled instance served nothing once continued.
      assert.is_true(#runs >= 2)
    end, 90))
  it("counts three members after two crashes, and two of those three down the third and run it",
    async(function()
      local views = five("crash", false)
      local host = host_of(views)
      local rest = others(views, host)
      local k1, k2, survivors = rest[1], rest[2], { rest[3], rest[4] }
      -- Two members crash, one after the other; each is downed by the four, then three, left.
      k1.p:kill("SIGKILL")
      k1.p:wait(5)
      await_all({ host, k2, rest[3], rest[4] }, seeing({ k1.address }, "down"), 15, "the first crash downed")
      k2.p:kill("SIGKILL")
      k2.p:wait(5)
      await_all({ host, rest[3], rest[4] }, seeing({ k2.address }, "down"), 15, "the second crash downed")
      -- Then the counter's host: the two left are two of the three members that count.
      host.p:kill("SIGKILL")
      host.p:wait(5)
      await_all(survivors, seeing({ host.address }, "down"), 15, "two of three to down the third")
      local new = host_of(survivors, host)
      assert.equal(0, value(new)) -- (not persistent: a new instance starts from nothing)
      -- `atoll singletons` shows where it runs, and the failover, from either survivor.
      local env = { env = { ATOLL_SECRET = nodes.secret } }
      local code, out, err = node.exec({ "singletons", "--node", new.address }, env)
      assert.equal(0, code, err)
      assert.matches("\ncounter%s+" .. new.address:gsub("%p", "%%%0") .. "%s", "\n" .. out)
      assert.matches("majority", out)
      code, out = node.exec({ "singletons", "--node", new.address, "--json" }, env)
      assert.equal(0, code)
      local view = json.decode(out)
      local s = view.singletons[1]
      assert.equal("counter", s.name)
      assert.equal(new.address, s.host)
      assert.is_true(s.running)
      assert.equal(1, s.failovers)
      assert.equal("majority", view.downing.status)
      assert.equal(2, view.downing.counted)
    end, 90))

  it("runs and fails over when only two of five members host it, the others calling it",
    async(function()
      local dir = tmp.dir("singleton")
      dirs[#dirs + 1] = dir
      local hosting = { app = APP, env = { SINGLE_PERSISTENT = "1" } }
      local calling = { app = APP, env = { SINGLE_PERSISTENT = "1", SINGLE_HOST = "0" } }
      local first = members.start("few1", { "--data-dir", dir }, calling)
      local views = { first }
      for i = 2, 5 do
        views[i] = members.start("few" .. i, { "--data-dir", dir, "--join", first.address },
          (i == 2 or i == 4) and hosting or calling)
      end
      await_all(views, seeing(addresses(views), "up"), 15, "all five members up")
      local host = host_of(views)
      assert.is_true(host == views[2] or host == views[4], "it runs on a member that does not host it")
      local rest = others(views, host)
      serving(rest)
      host.p:kill("SIGKILL")
      host.p:wait(5)
      -- The other host takes it over: the three members that do not host it confirm the down.
      local new = host_of(rest, host)
      assert.is_true(new == views[2] or new == views[4])
      local before = value(new)
      wait.retry(function() return value(rest[1]) >= before + 50 end, 15, "calls served by the other host")
      local total = stop_callers(rest)
      local n = value(new)
      assert.is_true(n >= total.ok and n <= total.made, ("counter %d, %d acknowledged, %d made")
        :format(n, total.ok, total.made))
    end, 90))

  it("converges to one instance when two clusters that each ran it meet", async(function()
    local opts = { app = APP, env = { SINGLE_PERSISTENT = "0" } }
    local fast = { "--membership", "push_pull_interval=2" }
    -- The first node's address, taken by a node that is then gone.
    local gone = members.start("meet1", fast, opts)
    local a1 = gone.address
    gone.p:kill("SIGKILL")
    gone.p:wait(5)
    -- One cluster of three formed while the first node is not there (it joins through it in vain)...
    local m3 = members.start("meet3", { "--join", a1, unpack(fast) }, opts)
    local m4 = members.start("meet4", { "--join", a1 .. "," .. m3.address, unpack(fast) }, opts)
    local m5 = members.start("meet5", { "--join", a1 .. "," .. m3.address, unpack(fast) }, opts)
    local b = { m3, m4, m5 }
    await_all(b, seeing(addresses(b), "up"), 15, "the cluster of three up")
    local hb = host_of(b)
    assert.is_number(value(hb)) -- (it runs there, apart)
    -- ...and another of two, which the three find through their seeds.
    local m1 = members.start("meet1", { "--listen", a1, unpack(fast) }, opts)
    -- (alone, it runs its own instance at once; the three look for it every 2 s)
    assert.is_not_nil(m1:line("^start (%S+) ", 5), "the cluster of two ran no instance of its own")
    local m2 = members.start("meet2", { "--join", a1, unpack(fast) }, opts)
    local all = { m1, m2, m3, m4, m5 }
    await_all(all, seeing(addresses(all), "up"), 20, "all five members up")
    local h = host_of(all)
    -- One instance left running: every other one ran its stopped hook.
    wait.retry(function()
      local started, stopped = {}, {}
      for _, v in ipairs(all) do
        for line in v.p:stdout():gmatch("[^\n]+") do
          local run = line:match("^start (%S+) ") or line:match("^stop (%S+) ")
          if run then (line:match("^start") and started or stopped)[run] = true end
        end
      end
      local live = 0
      for run in pairs(started) do
        if not stopped[run] then live = live + 1 end
      end
      return live == 1
    end, 20, "one instance left of the two")
    local before = value(h)
    start_callers(all)
    wait.retry(function() return value(h) >= before + 50 end, 10, "calls served by the one instance")
    local total = stop_callers(all)
    assert.equal(0, total.failed)
    assert.equal(before + total.ok, value(h))
  end, 90))
end)
