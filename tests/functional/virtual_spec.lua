-- Virtual actors between real nodes (tests/functional/apps/virtuals.lua: the counter VCounter,
-- and a driver that calls many ids). Every activation prints its start, each call it serves and
-- its deactivation on the monotonic clock all processes share; no id may have two activations
-- whose intervals overlap. (Partitions: virtual_partition_spec.lua; the churn run:
-- tests/helpers/vchurn.lua.)
local async = require "helpers.async"
local members = require "helpers.members"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local APP = "tests/functional/apps/virtuals.lua"

local dirs = {}

local function start(name, dir, join, idle)
  local extra = { "--data-dir", dir }
  if join then
    extra[#extra + 1] = "--join"
    extra[#extra + 1] = join
  end
  return members.start(name, extra, { app = APP, env = { VIRTUAL_PERSISTENT = "1", VIRTUAL_IDLE = idle } })
end

local function cluster_of(prefix, n, idle)
  local dir = tmp.dir("virtual")
  dirs[#dirs + 1] = dir
  local views = { start(prefix .. 1, dir, nil, idle) }
  for i = 2, n do views[i] = start(prefix .. i, dir, views[1].address, idle) end
  await_all(views, seeing(addresses(views), "up"), 15, "all members up")
  return views, dir
end

local function driver(v)
  return nodes.named(v.address, "driver", 300)
end

-- Runs the drivers of `views` at once over ids first..last; returns the total of ok and failed.
local function drive(views, first, last)
  local results, tasks = {}, {}
  for i, v in ipairs(views) do
    tasks[i] = require("atoll").task(function() results[i] = driver(v):run(first, last, 64) end)
  end
  local total = { ok = 0, failed = 0, kinds = {} }
  for i, t in ipairs(tasks) do
    t:wait(300)
    total.ok, total.failed = total.ok + results[i].ok, total.failed + results[i].failed
    for k, n in pairs(results[i].kinds) do total.kinds[k] = (total.kinds[k] or 0) + n end
  end
  return total
end

-- Every activation's interval per id, from what the nodes printed: id -> { { node, from, to }... }
local function intervals(views)
  local per = {}
  for _, v in ipairs(views) do
    local open = {}
    for line in v.p:stdout():gmatch("[^\n]+") do
      local id, run, t = line:match("^vstart (%S+) (%S+) ([%d%.]+)$")
      if id then
        local r = { node = v.name, run = run, from = tonumber(t), to = tonumber(t) }
        open[run] = r
        per[id] = per[id] or {}
        per[id][#per[id] + 1] = r
      end
      local sid, srun, _, st = line:match("^vserve (%S+) (%S+) (%d+) ([%d%.]+)$")
      if sid and open[srun] then open[srun].to = math.max(open[srun].to, tonumber(st)) end
    end
  end
  return per
end

local function assert_single(views)
  local per, ids = intervals(views), 0
  for id, list in pairs(per) do
    ids = ids + 1
    table.sort(list, function(a, b) return a.from < b.from end)
    for k = 2, #list do
      local a, b = list[k - 1], list[k]
      assert.is_true(a.to < b.from, ("id %s: activations on %s (%.3f to %.3f) and %s (from %.3f) overlap")
        :format(id, a.node, a.from, a.to, b.node, b.from))
    end
  end
  return per, ids
end

describe("virtual actors", function()
  before_each(function() nodes.self() end)
  teardown(function()
    for _, dir in ipairs(dirs) do tmp.remove(dir) end
  end)

  it("activate each of 10,000 ids once across three nodes, called from all three, counts exact",
    async(function()
      local views = cluster_of("va", 3)
      local N = 10000
      local total = drive(views, 1, N)
      assert.same({}, total.kinds)
      assert.equal(3 * N, total.ok)
      local per, ids = assert_single(views)
      assert.equal(N, ids)
      local spread = {}
      for _, list in pairs(per) do
        assert.equal(1, #list)
        spread[list[1].node] = (spread[list[1].node] or 0) + 1
      end
      for _, v in ipairs(views) do
        local share = (spread[v.name] or 0) / N
        assert.is_true(share > 0.28 and share < 0.39, ("%s holds %.1f%% of the ids"):format(v.name, share * 100))
      end
      for _, id in ipairs { 1, 2, 777, 5000, 9999, 10000 } do assert.equal(3, driver(views[2]):get(id)) end
    end, 240))

  it("loses no call and no count while a fourth node joins and another leaves, moving about 1/N",
    async(function()
      local atoll = require "atoll"
      local views, dir = cluster_of("vj", 3)
      local N = 2000
      assert.equal(3 * N, drive(views, 1, N).ok)
      -- A fourth node joins while the three call every id again.
      local second
      local t = atoll.task(function() second = drive(views, 1, N) end)
      atoll.sleep(0.05)
      views[4] = start("vj4", dir, views[1].address)
      await_all(views, seeing(addresses(views), "up"), 15, "four members up")
      t:wait(300)
      assert.same({}, second.kinds)
      assert.equal(3 * N, second.ok)
      local moved = 0
      for id = 1, N do
        if driver(views[1]):where(id) == views[4].address then moved = moved + 1 end
      end
      assert.is_true(moved > N * 0.18 and moved < N * 0.32, "moved " .. moved)
      -- The second leaves gracefully while the others call every id again.
      local rest = { views[1], views[3], views[4] }
      local third
      t = atoll.task(function() third = drive(rest, 1, N) end)
      atoll.sleep(0.05)
      views[2].p:kill("SIGTERM")
      assert.equal(0, views[2].p:wait(20))
      t:wait(300)
      assert.same({}, third.kinds)
      assert.equal(3 * N, third.ok)
      assert_single(views)
      -- Every count exact, wherever the id lives now: 3 + 3 + 3 calls each.
      for id = 1, N do assert.equal(9, driver(views[1]):get(id)) end
    end, 240))
  it("answers a SIGKILLed node's ids from the others once it is down, their state intact",
    async(function()
      local atoll = require "atoll"
      local views = cluster_of("vk", 3)
      local N = 1000
      assert.equal(3 * N, drive(views, 1, N).ok)
      local victim, rest = views[3], { views[1], views[2] }
      local owned = 0
      for id = 1, N do
        if driver(views[1]):where(id) == victim.address then owned = owned + 1 end
      end
      assert.is_true(owned > 200, "the victim owned only " .. owned)
      local t0 = atoll.now()
      victim.p:kill("SIGKILL")
      victim.p:wait(5)
      -- Calls to its ids wait (within their 10 s) until it is down, then activate elsewhere.
      local again = drive(rest, 1, N)
      assert.same({}, again.kinds)
      assert.equal(2 * N, again.ok)
      assert.is_true(atoll.now() - t0 < 20)
      for id = 1, N do assert.equal(5, driver(views[1]):get(id)) end
      assert_single(views)
    end, 240))
  it("fires a reminder on time and once; its node SIGKILLed before it is due, once elsewhere",
    async(function()
      local wait = require "helpers.wait"
      local views = cluster_of("vr", 3)
      -- (the firings of one reminder, wherever they came from: node, id, name, due, wall)
      local function of(name)
        local out = {}
        for _, f in ipairs(require("helpers.vchurn").firings(views)) do
          if f.name == name then out[#out + 1] = f end
        end
        return out
      end
      -- On time: due in a second, on whichever node the id lives.
      local due = driver(views[2]):remind(7, "soon", 1)
      wait.retry(function() return #of("soon") == 1 end, 10, "the reminder to fire")
      local f = of("soon")[1]
      assert.equal("7", f.id)
      assert.near(due, f.due, 0.002)
      assert.is_true(f.wall >= due and f.wall - due < 0.5, ("fired %.3f s after it was due"):format(f.wall - due))
      -- A periodic one fires every period; forgotten, it is gone from the list.
      driver(views[1]):remind(8, "tick", { every = 1 })
      wait.retry(function() return #of("tick") >= 2 end, 10, "two ticks")
      assert.equal(1, #driver(views[3]):reminders(8))
      assert.is_true(driver(views[3]):forget(8, "tick"))
      assert.same({}, driver(views[3]):reminders(8))
      -- Crash: an id of the oldest node, which runs the reminders' singleton too; it dies
      -- with the reminder due in 2 s, before the cluster has downed it (about 3 s).
      local id = 1
      while driver(views[2]):where(id) ~= views[1].address do id = id + 1 end
      due = driver(views[1]):remind(id, "crash", 2)
      views[1].p:kill("SIGKILL")
      views[1].p:wait(5)
      wait.retry(function() return #of("crash") >= 1 end, 20, "the reminder to fire after the crash")
      -- (and not twice: a second firing would come within the same round)
      wait.retry(function()
        return driver(views[2]):where(id) ~= views[1].address
      end, 10, "the id to have moved")
      local list = of("crash")
      assert.equal(1, #list)
      assert.is_not.equal(views[1].name, list[1].node)
      assert.is_true(list[1].wall >= due and list[1].wall - due < 8,
        ("fired %.3f s after it was due"):format(list[1].wall - due))
      assert.same({}, driver(views[2]):reminders(id))
      assert.equal(1, #of("soon"))
    end, 120))
  it("keeps one activation per id and forks no history through joins, leaves, kills and stops",
    async(function()
      local vchurn = require "helpers.vchurn"
      local seed = tonumber(os.getenv("VCHURN_SEED") or "") or 13 -- (VCHURN_SEED=N replays another)
      local report = vchurn.run { seconds = 20, seed = seed, ids = 1000,
                                  log = os.getenv("VCHURN_LOG") and print or nil }
      vchurn.stop(report)
      local why = "seed " .. seed .. ": " .. table.concat(report.faults, "; ") .. "\n" .. table.concat(report.detail, "\n", 1,
        math.min(#report.detail, 20))
      assert.equal(0, report.duplicates, why)
      assert.equal(0, report.forks, why)
      assert.equal(0, report.lost, why)
      assert.is_true(#report.faults >= 4, why)
      assert.is_true(report.ids > 900, "only " .. report.ids .. " ids were called")
      assert.is_true(report.calls.ok > 5000, ("only %d calls succeeded"):format(report.calls.ok))
    end, 240))
  it("passivates idle activations and activates them again on the next call", async(function()
    local wait = require "helpers.wait"
    local views = cluster_of("vi", 2, "0.3")
    local N = 100
    assert.equal(2 * N, drive(views, 1, N).ok)
    local function stops()
      local n = 0
      for _, v in ipairs(views) do
        for _ in v.p:stdout():gmatch("\nvstop ") do n = n + 1 end
      end
      return n
    end
    wait.retry(function() return stops() == N end, 10, "every idle activation to be collected")
    assert.equal(2 * N, drive(views, 1, N).ok)
    local per = assert_single(views)
    for id = 1, N do
      assert.equal(2, #per[tostring(id)], "activations of " .. id)
      assert.equal(4, driver(views[1]):get(id))
    end
  end, 120))
end)
