-- A churn run for virtual actors (tests/functional/apps/virtuals.lua, persistent VCounter): the
-- nodes call ids 1..IDS continuously while, one after another, a node joins, one leaves
-- gracefully, one is SIGKILLed and started again, one is stopped (SIGSTOP) for 3 s. Afterwards
-- the check reads what every process printed on the monotonic clock they share:
--   duplicates  ids that had two activations at once (one's start inside the other's interval,
--               which ends at the last message it served)
--   forks       counts served twice for one id (two writers of one history)
--   lost        ids whose count read at the end is below the highest count an activation served
--               (an acknowledged event missing from the history)
-- Used by tests/functional/virtual_spec.lua (20 s) and bench/virtual.lua (longer).
local atoll = require "atoll"
local members = require "helpers.members"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"

local M = {}

local APP = "tests/functional/apps/virtuals.lua"

-- A small deterministic generator (the run's schedule follows from its seed alone).
local function rng(seed)
  local s = seed % 2147483647
  if s <= 0 then s = s + 2147483646 end
  return function(n)
    s = s * 16807 % 2147483647
    return s % n + 1
  end
end

-- intervals(views) -> id -> { { node, run, from, to, served = { n... } }... }
function M.intervals(views)
  local per = {}
  for _, v in ipairs(views) do
    local open = {}
    for line in v.p:stdout():gmatch("[^\n]+") do
      local id, run, t = line:match("^vstart (%S+) (%S+) ([%d%.]+)$")
      if id then
        local r = { node = v.name, run = run, from = tonumber(t), to = tonumber(t), served = {} }
        open[run] = r
        per[id] = per[id] or {}
        per[id][#per[id] + 1] = r
      else
        local sid, srun, n, st = line:match("^vserve (%S+) (%S+) (%d+) ([%d%.]+)$")
        local r = sid and open[srun]
        if r then
          r.to = math.max(r.to, tonumber(st))
          r.served[#r.served + 1] = tonumber(n)
        end
      end
    end
  end
  return per
end

-- firings(views) -> every reminder firing the nodes printed (apps/virtuals.lua's vremind lines):
-- { { node, id, name, due, wall }... }
function M.firings(views)
  local out = {}
  for _, v in ipairs(views) do
    for id, name, due, wall in v.p:stdout():gmatch("\nvremind (%S+) %S+ (%S+) ([%d%.]+) ([%d%.]+)") do
      out[#out + 1] = { node = v.name, id = id, name = name, due = tonumber(due), wall = tonumber(wall) }
    end
  end
  return out
end

-- check(views, counts) -> { duplicates, forks, lost, ids, activations, detail = { lines } }
-- counts: id (string) -> the count read at the end (nil: not read)
function M.check(views, counts)
  local per = M.intervals(views)
  local out = { duplicates = 0, forks = 0, lost = 0, ids = 0, activations = 0, detail = {} }
  for id, list in pairs(per) do
    out.ids = out.ids + 1
    out.activations = out.activations + #list
    table.sort(list, function(a, b) return a.from < b.from end)
    local dup = false
    for k = 2, #list do
      local a, b = list[k - 1], list[k]
      if a.to >= b.from then
        dup = true
        out.detail[#out.detail + 1] = ("id %s: %s (%.3f to %.3f) and %s (from %.3f) overlap")
          :format(id, a.node, a.from, a.to, b.node, b.from)
      end
    end
    if dup then out.duplicates = out.duplicates + 1 end
    local seen, top, fork = {}, 0, false
    for _, r in ipairs(list) do
      for _, n in ipairs(r.served) do
        if seen[n] then fork = true end
        seen[n] = true
        if n > top then top = n end
      end
    end
    if fork then
      out.forks = out.forks + 1
      out.detail[#out.detail + 1] = ("id %s: a count was served twice"):format(id)
    end
    local final = counts and counts[id]
    if final and final < top then
      out.lost = out.lost + 1
      out.detail[#out.detail + 1] = ("id %s: %d at the end, but %d was served"):format(id, final, top)
    end
  end
  return out
end

-- run{ seconds, seed, ids, log } -> report: the check's figures, plus faults (the schedule, as
-- lines), calls (ok, failed), views (every process started; the caller stops them)
function M.run(opts)
  local seconds, ids = opts.seconds or 20, opts.ids or 1000
  local say = opts.log or function() end
  local next_rand = rng(opts.seed or 1)
  local dir = tmp.dir("vchurn")
  local all, alive, count = {}, {}, 0
  local function start()
    count = count + 1
    local extra = { "--data-dir", dir }
    if alive[1] then
      extra[#extra + 1] = "--join"
      extra[#extra + 1] = alive[1].address
    end
    local v = members.start("vc" .. count, extra, { app = APP, env = { VIRTUAL_PERSISTENT = "1" } })
    all[#all + 1], alive[#alive + 1] = v, v
    return v
  end
  local function remove(v)
    for i, w in ipairs(alive) do
      if w == v then table.remove(alive, i) return end
    end
  end
  local function converge(what)
    members.await_all(alive, members.seeing(members.addresses(alive), "up"), 30, what)
  end
  for _ = 1, 4 do start() end
  converge("four members up")

  -- Callers: every node's driver calls random ids until the run ends (a caller on a node that
  -- is killed ends with it).
  local calls = { ok = 0, failed = 0, kinds = {} }
  local t_end = atoll.now() + seconds
  local tasks = {}
  local function drive(v)
    tasks[#tasks + 1] = atoll.task(function()
      local ok, res = pcall(function()
        return nodes.named(v.address, "driver", seconds + 60):loop(1, ids, 16, t_end - atoll.now(), next_rand(1e6))
      end)
      if ok then
        calls.ok, calls.failed = calls.ok + res.ok, calls.failed + res.failed
        for k, n in pairs(res.kinds) do calls.kinds[k] = (calls.kinds[k] or 0) + n end
      end
    end)
  end
  for _, v in ipairs(alive) do drive(v) end

  -- The faults, one at a time, each healed before the next.
  local faults = {}
  local function fault(line)
    faults[#faults + 1] = ("%.1f %s"):format(seconds - (t_end - atoll.now()), line)
    say("fault: " .. faults[#faults])
  end
  local kinds = { "join", "leave", "kill", "stop" }
  while atoll.now() < t_end - 2 do
    local kind = kinds[next_rand(#kinds)]
    if kind == "join" and #alive >= 5 then kind = "leave" end
    if kind == "leave" and #alive <= 3 then kind = "join" end
    if (kind == "kill" or kind == "stop") and #alive <= 3 then kind = "join" end
    local victim = alive[next_rand(#alive - 1) + 1] -- (not the first: the one new nodes join)
    if kind == "join" then
      local v = start()
      fault("join " .. v.name)
      drive(v)
    elseif kind == "leave" then
      fault("leave " .. victim.name)
      remove(victim)
      victim.p:kill("SIGTERM")
      victim.p:wait(20)
    elseif kind == "kill" then
      fault("kill " .. victim.name)
      remove(victim)
      victim.p:kill("SIGKILL")
      victim.p:wait(5)
      atoll.sleep(1)
      local v = start()
      fault("start " .. v.name)
      drive(v)
    else
      fault("stop " .. victim.name .. " for 3 s")
      victim.p:kill("SIGSTOP")
      atoll.sleep(3)
      victim.p:kill("SIGCONT")
    end
    converge("the members up again after a fault")
    atoll.sleep(0.5 + next_rand(10) / 10)
  end
  for _, t in ipairs(tasks) do pcall(t.wait, t, seconds + 90) end
  converge("the members up at the end")

  -- The counts at the end, read through one node.
  local counts = {}
  local reader = nodes.named(alive[1].address, "driver", 60)
  local got = reader:counts(1, ids)
  for id, n in pairs(got) do counts[tostring(id)] = n end
  local report = M.check(all, counts)
  report.faults, report.calls, report.views, report.dir = faults, calls, all, dir
  return report
end

-- stop(report): stops every process of the run and removes its files.
function M.stop(report)
  for _, v in ipairs(report.views or {}) do
    if not v.p.exited then
      v.p:kill("SIGCONT")
      v.p:kill("SIGKILL")
      v.p:wait(5)
    end
  end
  if report.dir then tmp.remove(report.dir) end
end

return M
