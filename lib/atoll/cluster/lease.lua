-- The node's lease: what lets a node act as the one place of something in the cluster (a
-- singleton's instance; virtual actors' activations) only while a majority still sees it.
--
-- While any user needs it, the node asks every member that counts (downing.counts), every ROUND
-- seconds, with `lease_ask` to their node actor; a member answers yes while it sees the asker up
-- (or leaving) and not down, in that run, and remembers when it last said yes to whom. A round
-- that a majority answers (downing's rule, this node included) holds the lease for LEASE seconds
-- from when the round was sent, by this node's monotonic clock. So a node cut off from the
-- majority, or stopped or stalled for longer than LEASE, holds no lease once it resumes until a
-- new round succeeds.
--
-- Taking over from members that were downed: `confirm_downs()` has a majority confirm that they
-- are down (after which none of them can renew a lease) and says until when the last lease any
-- of them was granted may run; a user starts only after that.
--
-- Every member answers these messages (through its node actor, atoll.cluster.node), whether or
-- not it uses a lease itself: a member that does not is still part of the majority.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"
local cluster = require "atoll.cluster"
local membership = require "atoll.cluster.membership"
local downing = require "atoll.cluster.downing"

local M = {}

M.LEASE = 1.0  -- seconds a round answered by a majority holds
M.ROUND = 0.25 -- seconds between rounds
M.RECENT = 60  -- seconds a member downed counts as recent (longer than any lease it held)
local NODE = "atoll.node"
local CONFIRM_TIMEOUT = 2

local node = runtime.node
local lease = { until_ms = 0, round = 0, rounds = {}, timer = nil }
local acked = {}        -- address .. "/" .. incarnation -> hrtime ms of the last yes this node gave
local recent_downs = {} -- address -> { incarnation, at }: members this node saw downed
local users = {}        -- { needs = fn() -> bool, granted = fn() }
local warned_down = {}

local function log(level, msg)
  host.log(level, "lease", msg)
end

local function now_ms()
  return host.hrtime() / 1e6
end

local function key(address, incarnation)
  return address .. "/" .. tostring(incarnation)
end

-- use(needs, granted): a user of the lease. needs() says whether it needs one now; granted() is
-- called when the lease becomes valid again after it was not.
function M.use(needs, granted)
  users[#users + 1] = { needs = needs, granted = granted }
end

local function needed()
  if downing.strategy() == "off" or not membership.started() then return false end
  for _, u in ipairs(users) do
    if u.needs() then return true end
  end
  return false
end

-- valid() -> whether this node holds the lease now (always, without downing or membership).
function M.valid()
  if downing.strategy() == "off" or not membership.started() then return true end
  return now_ms() < lease.until_ms
end

local function granted(until_ms)
  local was = M.valid()
  if until_ms > lease.until_ms then lease.until_ms = until_ms end
  if not was and M.valid() then
    for _, u in ipairs(users) do
      if u.granted then u.granted() end
    end
  end
end

local function round()
  lease.timer = nil
  if not needed() then return end
  lease.round = lease.round + 1
  local r = { sent = now_ms(), acks = {} }
  lease.rounds[lease.round] = r
  lease.rounds[lease.round - 16] = nil
  for _, m in ipairs(membership.members()) do
    if not m.self and downing.counts(m) then
      pcall(cluster.send_name, m.address, NODE, "lease_ask", lease.round, node.address, node.incarnation)
    end
  end
  if downing.quorum_of({}) then granted(r.sent + M.LEASE * 1000) end
  lease.timer = runtime.after_raw(M.ROUND, round)
end

-- start(): runs rounds while a user needs the lease (a user calls it when it starts needing one).
function M.start()
  if lease.timer == nil and needed() then round() end
end

-- ask(round, address, incarnation): another member asks for this node's part of its lease:
-- granted while this node sees it up (or leaving) and not down, in that run, and while this
-- node's own side holds a majority (a member cut off with a minority, which may have been downed
-- without knowing it yet, vouches for nobody: a node that rejoined through it would otherwise
-- take its word for a majority).
function M.ask(round_no, address, incarnation)
  if type(address) ~= "string" or type(round_no) ~= "number" or type(incarnation) ~= "number" then return end
  local m = membership.member(address)
  local ok = m ~= nil and not m.self and m.incarnation == incarnation and m.status ~= "down"
    and m.status ~= "removed" and (downing.strategy() == "off" or downing.status() == "majority")
  if ok then acked[key(address, incarnation)] = now_ms() end
  pcall(cluster.send_name, address, NODE, "lease_ack", round_no, node.address, ok and "ok" or "down")
end

-- ack(round, address, verdict): a member's answer to this node's round.
function M.ack(round_no, address, verdict)
  local r = lease.rounds[round_no]
  if r == nil or type(address) ~= "string" then return end
  if verdict ~= "ok" then
    if not warned_down[address] then
      warned_down[address] = true
      log("warn", address .. " sees this node as down: it cannot hold a lease")
    end
    return
  end
  local m = membership.member(address)
  if m == nil or m.self or not downing.counts(m) then return end
  r.acks[address] = true
  local reached = {}
  for a in pairs(r.acks) do reached[a] = true end
  if downing.quorum_of(reached) then granted(r.sent + M.LEASE * 1000) end
end

---------------------------------------------------------------------------
-- Taking over from members that were downed
---------------------------------------------------------------------------

local function prune()
  local now = runtime.now_ms()
  for address, d in pairs(recent_downs) do
    if now - d.at > M.RECENT * 1000 then recent_downs[address] = nil end
  end
end

-- recent() -> whether members were downed in the last RECENT seconds (in this node's view).
function M.recent()
  prune()
  return next(recent_downs) ~= nil
end

-- confirm_downs() -> hrtime ms until which one of the members this node saw downed lately may
-- still hold a lease (0 when none were), or nil if no majority confirmed they are down. Runs in
-- a task: it asks every member that counts.
function M.confirm_downs()
  prune()
  local list = {}
  for address, d in pairs(recent_downs) do list[#list + 1] = { address, d.incarnation } end
  if #list == 0 or downing.strategy() == "off" then return 0 end
  local members = {}
  for _, m in ipairs(membership.members()) do
    if not m.self and downing.counts(m) then members[#members + 1] = m end
  end
  -- This node counts in the majority that confirms: its own grants count too.
  local reached, latest, pending, nreached = {}, 0, 0, 0
  for _, d in ipairs(list) do
    local t = acked[key(d[1], d[2])]
    if t then latest = math.max(latest, t) end
  end
  local waiter = runtime.waiter()
  local done = false
  for _, m in ipairs(members) do
    pending = pending + 1
    runtime.task(function()
      local ok, yes, age = pcall(cluster.call_system, m.address, NODE, "confirm_down", CONFIRM_TIMEOUT, list)
      if ok and yes == true then
        reached[m.address] = true
        nreached = nreached + 1
        if type(age) == "number" then latest = math.max(latest, now_ms() - age) end
      end
      pending = pending - 1
      if pending == 0 and not done then waiter:wake() end
    end)
  end
  if pending > 0 then waiter:wait(CONFIRM_TIMEOUT + 1) end
  done = true
  log("debug", ("downs confirmed by %d of %d asked"):format(nreached, #members))
  if not downing.quorum_of(reached) then return nil end
  return latest + M.LEASE * 1000
end

-- confirm(list) -> true, age | false: whether every { address, incarnation } listed is down (or
-- gone, or replaced by a newer run) in this node's view; age: ms since this node last granted
-- any of them a lease (nil if never).
function M.confirm(list)
  if type(list) ~= "table" then return false end
  local youngest = nil
  for _, d in ipairs(list) do
    if type(d) ~= "table" then return false end
    local address, incarnation = d[1], d[2]
    if type(address) ~= "string" or type(incarnation) ~= "number" then return false end
    local m = membership.member(address)
    if m and m.incarnation == incarnation and m.status ~= "down" and m.status ~= "removed" then
      return false
    end
    local t = acked[key(address, incarnation)]
    if t and (youngest == nil or t > youngest) then youngest = t end
  end
  return true, youngest and (now_ms() - youngest) or nil
end

membership.listen(function(m, previous)
  if m.status == "down" and previous ~= "down" and not m.self then
    recent_downs[m.address] = { incarnation = m.incarnation, at = runtime.now_ms() }
  elseif m.status ~= "down" and recent_downs[m.address]
    and recent_downs[m.address].incarnation == m.incarnation then
    recent_downs[m.address] = nil
  end
end)

return M
