-- Cluster singletons between five real nodes: a steady stream of calls from every node to one
-- counter while its host leaves, is SIGKILLed, or is stopped past its suspicion and continued.
-- Every instance prints when it starts and every call it serves on the monotonic clock that all
-- processes of a machine share (tests/functional/apps/singles.lua); no two instances' intervals
-- (start to last call served) may overlap.
local atoll = require "atoll"
local async = require "helpers.async"
local nodes = require "helpers.cluster"
local members = require "helpers.members"
local wait = require "helpers.wait"
local tmp = require "helpers.tmp"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
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

-- Every instance's interval from what the nodes printed: { run, from, to, served, pid }.
local function intervals(views)
  local runs = {}
  for _, v in ipairs(views) do
    for line in v.p:stdout():gmatch("[^\n]+") do
      local run, t = line:match("^start (%S+) ([%d%.]+)$")
      if run then runs[run] = { run = run, from = tonumber(t), to = tonumber(t), served = 0 } end
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

local function assert_no_overlap(list, views)
  for i = 2, #list do
    local a, b = list[i - 1], list[i]
    if a.to >= b.from then
      local logs = {}
      for _, v in ipairs(views or {}) do logs[#logs + 1] = "--- " .. v.name .. ":\n" .. v.p:stderr() end
      error(("instances %s (%.3f to %.3f, %d served) and %s (from %.3f) overlap\n%s")
        :format(a.run, a.from, a.to, a.served, b.run, b.from, table.concat(logs, "\n")), 2)
    end
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

local function others(views, except)
  local out = {}
  for _, v in ipairs(views) do
    if v ~= except then out[#out + 1] = v end
  end
  return out
end

-- The counter's value, read through a node.
local function value(v)
  return caller(v):counter()
end

describe("a cluster singleton", function()
  before_each(function() nodes.self() end)
  -- (after every spec's nodes have been stopped)
  teardown(function()
    for _, dir in ipairs(dirs) do tmp.remove(dir) end
  end)

  it("moves when its host leaves without failing a call or serving one twice", async(function()
    local views = five("leave", true)
    local host = host_of(views)
    local rest = others(views, host)
    start_callers(rest)
    wait.retry(function() return value(rest[1]) >= 50 end, 10, "calls to be served")
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

  it("starts again on the next oldest host when its host is SIGKILLed, with its journal intact",
    async(function()
      local views = five("kill", true)
      local host = host_of(views)
      local rest = others(views, host)
      -- The host's own caller would die with it: only the others call.
      start_callers(rest)
      wait.retry(function() return value(rest[1]) >= 50 end, 10, "calls to be served")
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
      local views = five("stall", false)
      local host = host_of(views)
      local rest = others(views, host)
      start_callers(rest)
      wait.retry(function() return value(rest[1]) >= 50 end, 10, "calls to be served")
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
end)
