-- Downing: deciding that members that cannot be reached are gone for good, without ever letting
-- both sides of a partition go on as the cluster.
--
-- SWIM tells which members answer. A member that stops answering is *unreachable* (it may come
-- back: a slow network, a paused process). Only the side of a partition that holds a majority of
-- the members that count may *down* it, and only once the set of unreachable members has stayed
-- the same for `stable_after`; a member that is down is gone for that run (its watchers are told,
-- its actors never answer again) and can only come back as a new run. A side without a majority
-- downs nobody: it holds its singletons' calls at once (their lease lapses, atoll.singleton), and
-- once it has been without a majority for `stable_after` it stops them, failing their calls with
-- `unreachable`, and keeps trying to rejoin.
--
-- Strategies (--downing):
--   keep-majority     (the default) a side holds a majority when it reaches more than half of
--                     the members that count; with exactly half, the side that holds the oldest
--                     of them (atoll.cluster.downing.older)
--   static-quorum=N   a side holds a majority when it reaches at least N members that count
--                     (for clusters of a fixed size; N should be more than half of it)
--   off               nobody is downed automatically: a member SWIM declares dead is down, and
--                     comes back up if it answers again (no protection against split brains)
--
-- What a side reaches: a member is reached unless SWIM declared it dead (unreachable), suspects
-- it, or it failed this node's last confirmation. SWIM probes one member at a time, so right
-- after a cut a member on the other side may not have been probed yet and still looks fine;
-- before it downs anyone, a side therefore pings every member it counts as reached, and downs
-- only if those that answer (and itself) are still a majority. A member that did not answer is
-- *in doubt*, counted as not reached (which restarts the wait) until it answers a later ping.
--
-- Members that count: those whose status is up or leaving (joining members do not; members
-- down or removed no longer do). So a cluster of five that loses two members to crashes, one
-- after the other, counts three once both are downed, and when a third crashes the two left
-- are two of three: still a majority, which downs the third.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"

local M = {}

local STEP = 0.1 -- seconds between evaluations (and on every membership change)
local CONFIRM_TIMEOUT = 1.0 -- seconds a member has to answer a confirmation ping
local DOUBT_RETRY = 1.0 -- seconds between pings of members in doubt

local cfg = { strategy = "keep-majority", quorum = nil, stable_after = nil }
local started = false
local status = "majority" -- majority | minority | stopped
local unstable_since = nil
local last_key = nil
local listeners = {}
local counters = { downed = 0, minority = 0, stopped = 0 }
local last = nil -- the last decision, for observers
local doubt = {} -- address -> incarnation: members that failed a confirmation ping
local confirming = false -- a confirmation round is under way
local doubt_timer = nil

local function log(level, msg)
  host.log(level, "downing", msg)
end

---------------------------------------------------------------------------
-- Settings
---------------------------------------------------------------------------

-- parse(spec) -> { strategy, quorum } | nil, message
function M.parse(spec)
  if spec == nil or spec == "" or spec == "keep-majority" then return { strategy = "keep-majority" } end
  if spec == "off" then return { strategy = "off" } end
  local n = tostring(spec):match("^static%-quorum=(.*)$")
  if n then
    if n:match("^%d+$") and tonumber(n) >= 1 and tonumber(n) <= 10000 then
      return { strategy = "static-quorum", quorum = tonumber(n) }
    end
    return nil, ("static-quorum=N needs N, the members a side must reach, from 1 to 10000 (not '%s')"):format(n)
  end
  return nil, ("unknown downing strategy '%s' (keep-majority, static-quorum=N or off)"):format(tostring(spec))
end

-- default_stable_after(config, n) -> seconds: the shortest suspicion the failure detector gives
-- a member at this cluster size, plus one probe interval. Counted from when the set of
-- unreachable members last changed (a member became suspect, was declared dead, or answered
-- again): a crashed member is suspected within about a probe interval, declared dead after the
-- shortest suspicion once others confirm it, and downed about then; a member paused or slowed
-- for less than the shortest suspicion refutes before it (SWIM itself would not declare it dead
-- either), so it is not downed.
function M.default_stable_after(config, n)
  local interval = config.probe_interval or 0.5
  local alpha = config.suspicion_alpha or 4
  local scale = math.max(1, math.log10(math.max(n or 1, 1)))
  return alpha * scale * interval + interval
end

---------------------------------------------------------------------------
-- The rules, as pure functions of a view (specs call them directly)
---------------------------------------------------------------------------

-- older(a, b) -> whether member a is older than member b: the order in which members became up
-- (`upno`, which every member computes alike from membership state; 0, never up, is youngest),
-- then the address as bytes. A member that was downed and comes back is a new run with a new,
-- larger up number: the youngest.
function M.older(a, b)
  local ua, ub = a.upno or 0, b.upno or 0
  if ua ~= ub then
    if ua == 0 then return false end
    if ub == 0 then return true end
    return ua < ub
  end
  return a.address < b.address
end

local function counts(m)
  return m.status == "up" or m.status == "leaving"
end
M.counts = counts

local function reachable(m)
  return m.self or m.reachable ~= false
end

-- reached(m, doubted) -> whether a side counts m as reached: reachable, not suspected, and not
-- in doubt (doubted: address -> incarnation, or nil).
local function reached_now(m, doubted)
  if m.self then return true end
  if m.reachable == false or m.suspect then return false end
  return not (doubted and doubted[m.address] ~= nil and doubted[m.address] == m.incarnation)
end

-- quorum(c, counted, reached) -> whether `reached` (a set: address -> true) is a majority of
-- `counted` (an array of members) under strategy c.
function M.quorum(c, counted, reached)
  if c.strategy == "off" then return true end
  local n, r, oldest = #counted, 0, nil
  for _, m in ipairs(counted) do
    if reached[m.address] then r = r + 1 end
    if oldest == nil or M.older(m, oldest) then oldest = m end
  end
  if c.strategy == "static-quorum" then return r >= c.quorum end
  if n == 0 then return true end
  if r * 2 > n then return true end
  return r * 2 == n and oldest ~= nil and reached[oldest.address] == true
end

-- decide(members, c [, doubted]) -> { majority, counted = n, reached = n, unreachable =
-- { address... }, unsure = { address... }, oldest = address }: `unreachable` holds every member
-- SWIM declared dead that is neither down nor removed (those that count and joining ones alike:
-- a side with a majority downs them all once stable); `unsure`, the members that count as not
-- reached without being dead (suspected, or in doubt: doubted maps address -> incarnation).
-- Both together make the set whose changes restart the wait.
function M.decide(members, c, doubted)
  local counted, reached, unreachable, unsure = {}, {}, {}, {}
  local nreached, oldest = 0, nil
  for _, m in ipairs(members) do
    local gone = m.status == "down" or m.status == "removed"
    if counts(m) then
      counted[#counted + 1] = m
      if oldest == nil or M.older(m, oldest) then oldest = m end
      if reached_now(m, doubted) then
        reached[m.address] = true
        nreached = nreached + 1
      end
    end
    if not m.self and not gone then
      if not reachable(m) then
        unreachable[#unreachable + 1] = m.address
      elseif not reached_now(m, doubted) then
        unsure[#unsure + 1] = m.address
      end
    end
  end
  table.sort(unreachable)
  table.sort(unsure)
  return { majority = M.quorum(c, counted, reached), counted = #counted, reached = nreached,
           unreachable = unreachable, unsure = unsure, oldest = oldest and oldest.address }
end

---------------------------------------------------------------------------
-- Running
---------------------------------------------------------------------------

local function membership()
  return require "atoll.cluster.membership"
end

local function set_status(new, d)
  if new == status then return end
  local previous = status
  status = new
  if new == "minority" then
    counters.minority = counters.minority + 1
    log("warn", ("this node reaches %d of the %d members that count: not a majority; its "
      .. "singletons hold their calls, and stop if this lasts %.1f s"):format(d.reached, d.counted,
      M.stable_after()))
  elseif new == "stopped" then
    counters.stopped = counters.stopped + 1
    log("warn", ("still %d of %d members after %.1f s: this side stops its singletons and keeps "
      .. "trying to rejoin"):format(d.reached, d.counted, M.stable_after()))
  else
    log("info", ("this node reaches %d of the %d members that count again: a majority")
      :format(d.reached, d.counted))
  end
  for _, fn in ipairs(listeners) do
    local ok, err = xpcall(fn, debug.traceback, new, previous)
    if not ok then log("error", "downing listener failed: " .. tostring(err)) end
  end
end

-- stable_after() -> seconds, as configured or for the cluster's size now.
function M.stable_after()
  if cfg.stable_after then return cfg.stable_after end
  local n = last and last.counted or 1
  return M.default_stable_after(membership().config(), n)
end

local evaluating, again = false, false
local evaluate -- (below)

-- Pings `list` (members) at once: calls done(answered) with the set of addresses that answered
-- within CONFIRM_TIMEOUT.
local function ping_all(list, done)
  local cluster = require "atoll.cluster"
  local answered, pending = {}, #list
  if pending == 0 then return done(answered) end
  for _, m in ipairs(list) do
    runtime.start_root(function()
      return pcall(cluster.call_system, m.address, "atoll.node", "ping", CONFIRM_TIMEOUT)
    end, function(ok, res)
      if ok and res[1] == true and res[2] == "pong" then answered[m.address] = true end
      pending = pending - 1
      if pending == 0 then done(answered) end
    end, "downing confirmation")
  end
end

-- Pings the members in doubt every DOUBT_RETRY seconds; one that answers is reached again.
local function retry_doubts()
  if doubt_timer or next(doubt) == nil then return end
  doubt_timer = runtime.after_raw(DOUBT_RETRY, function()
    doubt_timer = nil
    local list = {}
    for _, m in ipairs(membership().members()) do
      if doubt[m.address] ~= nil then
        if doubt[m.address] == m.incarnation and m.status ~= "down" and m.status ~= "removed" then
          list[#list + 1] = m
        else
          doubt[m.address] = nil -- gone, or a new run
        end
      end
    end
    ping_all(list, function(answered)
      for address in pairs(answered) do doubt[address] = nil end
      if next(answered) then evaluate() end
      retry_doubts()
    end)
  end)
end

-- Before downing: pings every member counted as reached (but this node); downs the members of
-- `unreachable` only if those that answered are still a majority and nothing changed meanwhile.
local function confirm_and_down(d, key)
  confirming = true
  local mb = membership()
  local list = {}
  for _, m in ipairs(mb.members()) do
    if not m.self and counts(m) and reached_now(m, doubt) then list[#list + 1] = m end
  end
  ping_all(list, function(answered)
    confirming = false
    local missed = {}
    for _, m in ipairs(list) do
      if not answered[m.address] then
        doubt[m.address] = m.incarnation
        missed[#missed + 1] = m.address
      end
    end
    if #missed > 0 then
      log("warn", ("not downing %s yet: %s did not answer a confirmation ping"):format(
        table.concat(d.unreachable, ", "), table.concat(missed, ", ")))
      retry_doubts()
      evaluate()
      return
    end
    -- Still the same view, and still a majority?
    local now_d = M.decide(mb.members(), cfg, doubt)
    local now_key = table.concat(now_d.unreachable, ",") .. "|" .. table.concat(now_d.unsure, ",")
    if not now_d.majority or now_key ~= key then
      evaluate()
      return
    end
    local now = runtime.now_ms() / 1000
    for _, address in ipairs(now_d.unreachable) do
      local m = mb.member(address)
      if m and m.status ~= "down" and m.status ~= "removed" then
        log("warn", ("downing %s%s: unreachable for %.1f s, and this side reaches %d of %d "
          .. "members (confirmed)"):format(address, m.name ~= "" and (" (" .. m.name .. ")") or "",
          now - unstable_since, now_d.reached, now_d.counted))
        counters.downed = counters.downed + 1
        mb.down_final(address)
      end
    end
  end)
end

local function evaluate_once()
  local mb = membership()
  local d = M.decide(mb.members(), cfg, doubt)
  last = d
  local now = runtime.now_ms() / 1000
  local key = table.concat(d.unreachable, ",") .. "|" .. table.concat(d.unsure, ",")
  if key ~= last_key then
    last_key = key
    unstable_since = now
  end
  if cfg.strategy == "off" then return end
  local stable = now - unstable_since >= M.stable_after()
  if d.majority then
    set_status("majority", d)
    if stable and #d.unreachable > 0 and not confirming then confirm_and_down(d, key) end
  else
    set_status(stable and "stopped" or "minority", d)
  end
end

-- Downing a member changes the membership, whose listeners call back in here: the change is
-- evaluated after this evaluation, not inside it.
function evaluate()
  if not started then return end
  if evaluating then
    again = true
    return
  end
  evaluating = true
  repeat
    again = false
    local ok, err = xpcall(evaluate_once, debug.traceback)
    if not ok then log("error", "evaluation failed: " .. tostring(err)) end
  until not again
  evaluating = false
end

-- start(c): c from parse() plus stable_after (seconds, or nil for the default).
function M.start(c)
  if started then return end
  cfg = c or cfg
  started = true
  unstable_since = runtime.now_ms() / 1000
  membership().listen(function() evaluate() end)
  local function tick()
    evaluate()
    runtime.after_raw(STEP, tick)
  end
  runtime.after_raw(STEP, tick)
end

function M.strategy()
  return cfg.strategy
end

function M.config()
  return cfg
end

-- status() -> "majority" | "minority" | "stopped"
function M.status()
  return status
end

-- on_status(fn(status, previous)): told when this node's side gains or loses its majority.
function M.on_status(fn)
  listeners[#listeners + 1] = fn
end

-- quorum_of(reached) -> whether the members in `reached` (address -> true; this node is added)
-- are a majority of the members that count now (for leases).
function M.quorum_of(reached)
  if cfg.strategy == "off" then return true end
  local counted = {}
  for _, m in ipairs(membership().members()) do
    if counts(m) then counted[#counted + 1] = m end
    if m.self then reached[m.address] = true end
  end
  return M.quorum(cfg, counted, reached)
end

-- doubted() -> address -> incarnation: the members that failed a confirmation ping (decide's
-- third argument).
function M.doubted()
  return doubt
end

-- info() -> what `atoll members` shows about downing
function M.info()
  return { strategy = cfg.strategy, quorum = cfg.quorum, stable_after = M.stable_after(),
           status = status, counted = last and last.counted, reached = last and last.reached,
           unreachable = last and last.unreachable, unsure = last and last.unsure, downed = counters.downed,
           minority = counters.minority, stopped = counters.stopped }
end

return M
