-- Membership: who is in the cluster, as SWIM (host/swim.c) sees it, in the statuses apps use.
--
-- A member's status is one of
--   joining   it has started and is joining the cluster
--   up        it has joined
--   leaving   it said it is leaving (a graceful shutdown)
--   down      the failure detector declared it dead (or it was marked down by hand),
--             or it was downed for good (down_final)
--   removed   it left, or was forgotten (down long enough), or restarted as a
--             new incarnation (its earlier run is removed)
-- and, while alive, it may be `suspect`: some member failed to reach it and
-- it has not refuted yet (reachability, not a status).
--
-- A member that is down but turns out to be alive (a healed partition) comes
-- back up at a higher version: down is the detector's verdict, not an exile.
-- Refs to its actors work again; watches fired at the verdict stay fired.
-- A member downed for good (down_final) is the exception: it stays down for
-- that incarnation whatever it says, and only a new incarnation at its
-- address is a member again. Its own node hears it and lists itself down.
--
-- Every member also carries `upno`, its seniority: when its node went up it
-- took 1 + the largest upno it knew of (0 until then), and every member holds
-- the same number for it, so (upno, address) orders members alike everywhere
-- (the oldest first); a new incarnation counts as the youngest.
local swim = require "atoll.c.swim"
local host = require "atoll.c.host"
local runtime = require "atoll.runtime"

local M = {}

local NODE_ACTOR = "atoll.node"
local PUSH_PULL_TIMEOUT = 5        -- seconds a state exchange may take
local JOIN_RETRY_MIN, JOIN_RETRY_MAX = 1, 10 -- seconds between attempts to reach the seeds, joining
local SEED_RETRY = 10       -- once joined, seconds between attempts at a seed that is not a live
                            -- member (the push-pull interval, if shorter)
local SEED_ALIAS_RETRY = 60 -- ...at a seed that answers but is no member under that address
local STILL_JOINING = 30    -- seconds of joining before a warning

local started = false
local members = {}     -- address -> member (see copy())
local order = {}       -- addresses, for a stable listing
local subscribers = {} -- subscription -> true
local listeners = {}   -- internal: fn(member, previous), in the order added
local pulling = {}     -- address -> true while an exchange with it runs
-- Addresses to join through, in the order given: { address, keep, failing, next_at }.
-- Seeds given at start (--join) are kept for as long as the node runs; others
-- (join(), discovery) only until it has joined.
local seeds = {}
local joined = false
local seed_timer, join_delay = nil, JOIN_RETRY_MIN
local joining_since, warned_joining = nil, false
local self_address = nil

local function log(level, msg)
  host.log(level, "membership", msg)
end

-- With a downing strategy (atoll.cluster.downing), a member SWIM declares dead is only
-- unreachable: it keeps its status, with reachable = false, until a majority downs it (SWIM's
-- `downed`, final for that run). Without one (--downing off), dead is down, and a member that
-- answers again comes back up.
local final_downs = false

function M.set_downing(on)
  final_downs = on and true or false
end

local function status_of(state, phase)
  if state == "downed" then return "down" end
  if state == "dead" then return final_downs and phase or "down" end
  if state == "left" then return "removed" end
  return phase -- joining, up, leaving
end

local function reachable_of(state)
  return state ~= "suspect" and state ~= "dead"
end

-- Host milliseconds (the core's clock) to wall-clock seconds, to the millisecond.
local function wall(ms)
  return (host.wall() - (swim.now() - ms)) / 1000
end

-- A member as apps see it: a fresh table they may keep.
local function copy(m)
  return { address = m.address, name = m.name, incarnation = m.incarnation, status = m.status,
           suspect = m.suspect, reachable = m.reachable, upno = m.upno or 0,
           since = wall(m.since_ms), self = m.self or nil }
end

---------------------------------------------------------------------------
-- Events
---------------------------------------------------------------------------

local function notify(m, previous)
  if not m.self and previous ~= m.status then
    local who = m.address .. (m.name ~= "" and (" (" .. m.name .. ")") or "")
    log(m.status == "down" and "warn" or "info", who .. " is " .. m.status
      .. (previous and (", was " .. previous) or ""))
  elseif m.self and m.status == "down" and previous ~= "down" then
    log("error", "this node was downed by the cluster: it is no member any more, and only a new "
      .. "incarnation can be one")
  end
  for _, fn in ipairs(listeners) do
    local ok, err = xpcall(fn, debug.traceback, m, previous)
    if not ok then log("error", "membership listener failed: " .. tostring(err)) end
  end
  if next(subscribers) == nil then return end
  local ev = { type = "member", member = copy(m), previous = previous }
  for sub in pairs(subscribers) do
    local rec = sub.rec
    if rec and rec[runtime.R_STATUS] == runtime.STOPPED then
      subscribers[sub] = nil -- its actor is gone
    else
      local fn = sub.fn
      runtime.run_in(rec, function() fn(ev) end, sub)
    end
  end
end

local function forget(address)
  members[address] = nil
  for i, a in ipairs(order) do
    if a == address then
      table.remove(order, i)
      break
    end
  end
end

local function apply(e)
  local old = members[e.address]
  if e.event == "removed" then
    -- Forgotten by the core (its tombstone expired), or an earlier run
    -- replaced by a new one: only the run we hold is affected.
    if old and old.incarnation == e.incarnation then
      local previous = old.status
      forget(e.address)
      if previous ~= "removed" then
        old.status = "removed"
        old.since_ms = swim.now()
        notify(old, previous)
      end
    end
    return
  end
  local status = status_of(e.state, e.phase)
  local suspect = e.state == "suspect"
  local reachable = e.self or reachable_of(e.state)
  if old and old.incarnation ~= e.incarnation then old = nil end
  if old == nil then
    if status == "removed" then return end -- news of a member already gone
    local m = { address = e.address, name = e.name, incarnation = e.incarnation, status = status,
                suspect = suspect, reachable = reachable, upno = e.upno or 0, since_ms = e.since,
                self = e.self }
    members[e.address] = m
    order[#order + 1] = e.address
    notify(m, nil)
    return
  end
  if e.name ~= "" then old.name = e.name end
  -- The upno comes with the news that the member is up; learnt alone (the
  -- core reports it as a change of nothing else), it is taken silently:
  -- members() shows it at once, listeners and subscribers with the next change.
  if e.upno and e.upno ~= 0 then old.upno = e.upno end
  if old.status == status and old.suspect == suspect and old.reachable == reachable then return end
  local previous = old.status
  old.status, old.suspect, old.reachable, old.since_ms = status, suspect, reachable, e.since
  if status == "removed" then forget(e.address) end
  notify(old, previous)
end

---------------------------------------------------------------------------
-- State exchange (push-pull) over the node actors' authenticated links
---------------------------------------------------------------------------

local visit_seeds -- defined below

-- How long a joined node waits before trying again a seed that is not a live member.
local function seed_retry()
  return math.min(SEED_RETRY, swim.config().push_pull_interval)
end

local function became_joined()
  if joined then return end
  joined = true
  local kept = {}
  for _, s in ipairs(seeds) do
    if s.keep then kept[#kept + 1] = s end
  end
  seeds = kept
  if seed_timer then seed_timer:cancel() end
  seed_timer = #seeds > 0 and runtime.after_raw(seed_retry(), visit_seeds) or nil
  local me = members[self_address]
  if me == nil or me.status == "joining" then swim.set_phase("up") end
end

-- push_pull(address [, done(ok, err)]): a state exchange with the node at
-- address, even one declared down (how one that is alive, or a new run at
-- its address, is found again). Skipped while one with it runs.
local function push_pull(address, done)
  if pulling[address] then return end
  pulling[address] = true
  runtime.start_root(function()
    local cluster = require "atoll.cluster"
    local ok, theirs = pcall(cluster.call_system, address, NODE_ACTOR, "exchange", PUSH_PULL_TIMEOUT,
      swim.state())
    if not ok then
      log("debug", "state exchange with " .. address .. " failed: " .. tostring(theirs))
      if done then done(false, theirs) end
      return
    end
    local merged, err = swim.merge(theirs)
    if not merged then
      log("warn", "state from " .. address .. ": " .. tostring(err))
      if done then done(false, err) end
      return
    end
    became_joined()
    if done then done(true) end
  end, function() pulling[address] = nil end, "membership")
end

local function on_news(events, pulls)
  runtime.refresh_now()
  for i = 1, #events do apply(events[i]) end
  for i = 1, #pulls do push_pull(pulls[i]) end
  runtime.drain()
end

-- The other half of push_pull, run by the node actor: merges the peer's
-- state and answers with this node's (which may now hold a refutation).
function M.exchange(state)
  if not started then error("membership is not started on this node", 2) end
  if type(state) ~= "string" then error("exchange needs a membership state", 2) end
  local ok, err = swim.merge(state)
  if not ok then error(err, 2) end
  -- Another member reached this one: it is part of a cluster now.
  became_joined()
  return swim.state()
end

---------------------------------------------------------------------------
-- Joining, and seeds
---------------------------------------------------------------------------

local function live(address)
  local m = members[address]
  return m ~= nil and m.status ~= "down" and m.status ~= "removed"
end

local function drop_seed(s)
  for i, o in ipairs(seeds) do
    if o == s then
      table.remove(seeds, i)
      return
    end
  end
end

-- One attempt at a seed. Its first failure is said once (at info while
-- joining), and that it answers again after that.
local function try_seed(s)
  push_pull(s.address, function(ok, err)
    local now = runtime.now_ms() / 1000
    if not ok and tostring(err):find("this node's own incarnation", 1, true) then
      -- This node under another name (each node given the same seeds): the
      -- handshake refused it (host/transport.c). It is no seed.
      log("debug", "seed " .. s.address .. " is this node")
      drop_seed(s)
      return
    end
    if ok then
      if s.failing then log(s.failing, "seed " .. s.address .. " answers again") end
      s.failing = nil
      -- A seed that answers but is no member under that address (a host
      -- name, where members advertise IP addresses) is asked less often.
      s.next_at = now + (live(s.address) and seed_retry() or SEED_ALIAS_RETRY)
      return
    end
    s.next_at = now + seed_retry()
    if s.failing then return end
    s.failing = joined and "debug" or "info"
    log(s.failing, ("seed %s did not answer (%s); this node keeps trying it"):format(s.address,
      tostring(err)))
  end)
end

-- Tries the seeds: all of them, with a growing pause, until the node has
-- joined; then, every seed_retry() seconds, those that are not live members
-- (a seed restarted after this node joined, or the other half of a cluster
-- restarted apart).
function visit_seeds()
  seed_timer = nil
  local me = members[self_address]
  if not started or me == nil or me.status == "leaving" or me.status == "removed" then return end
  if not joined and #seeds == 0 then
    became_joined() -- only itself to join: the first node of a cluster
    return
  end
  local now = runtime.now_ms() / 1000
  for _, s in ipairs(seeds) do
    if not joined or (not live(s.address) and now >= (s.next_at or 0)) then try_seed(s) end
  end
  if joined then
    seed_timer = runtime.after_raw(seed_retry(), visit_seeds)
    return
  end
  if not warned_joining and now - joining_since >= STILL_JOINING then
    warned_joining = true
    local list = {}
    for _, s in ipairs(seeds) do list[#list + 1] = s.address end
    log("warn", ("still joining after %d s: no answer from %s"):format(
      math.floor(now - joining_since + 0.5), table.concat(list, ", ")))
  end
  -- The next visit, no later than the warning is due (backoff would put it off by up to
  -- JOIN_RETRY_MAX).
  local delay = join_delay
  if not warned_joining then delay = math.max(0, math.min(delay, joining_since + STILL_JOINING - now)) end
  seed_timer = runtime.after_raw(delay, visit_seeds)
  join_delay = math.min(join_delay * 2, JOIN_RETRY_MAX)
end

local function add_seeds(addresses, keep)
  for _, a in ipairs(addresses) do
    local known = a == self_address
    for _, s in ipairs(seeds) do
      if s.address == a then
        known = true
        s.keep = s.keep or keep
      end
    end
    if not known then seeds[#seeds + 1] = { address = a, keep = keep } end
  end
end

-- join(addresses): joins the cluster through these members. Until one
-- answers this node stays `joining`, trying again with backoff. On a node
-- that is up, merges another cluster's view in (the addresses' nodes learn
-- of this cluster too).
function M.join(addresses)
  if not started then error("membership is not started on this node", 2) end
  if type(addresses) == "string" then addresses = { addresses } end
  if joined then
    for _, a in ipairs(addresses) do
      if a ~= self_address then swim.join(a) end
    end
    return
  end
  add_seeds(addresses, false)
  join_delay = JOIN_RETRY_MIN
  if seed_timer then seed_timer:cancel() end
  visit_seeds()
end

---------------------------------------------------------------------------
-- Starting and leaving
---------------------------------------------------------------------------

-- start{ bind_host, port, address, name, incarnation, cluster, secret, config,
--        seeds = { addresses }, wait_for_seeds = bool }
-- With no seeds (and not told to wait for discovery), the node is a cluster
-- of one and up at once.
function M.start(opts)
  if started then error("membership is already started", 2) end
  local ok, err = swim.start {
    bind_host = opts.bind_host, port = opts.port, address = opts.address, name = opts.name,
    incarnation = opts.incarnation, cluster = opts.cluster, secret = opts.secret,
    config = opts.config,
  }
  if not ok then return nil, err end
  started = true
  self_address = opts.address
  swim.set_handler(on_news)
  -- The core announces this node to itself first.
  local me = { address = opts.address, name = opts.name or "", incarnation = opts.incarnation,
               status = "joining", suspect = false, reachable = true, upno = 0, since_ms = swim.now(),
               self = true }
  members[me.address] = me
  order[#order + 1] = me.address
  joining_since = runtime.now_ms() / 1000
  if opts.seeds and #opts.seeds > 0 then
    add_seeds(opts.seeds, true)
    M.join({})
  elseif not opts.wait_for_seeds then
    became_joined()
  end
  return true
end

function M.started()
  return started
end

-- leave(): says goodbye: this node goes `leaving`, then (after the leave
-- grace, while its goodbye spreads) `removed`. Returns at once.
function M.leave()
  if not started then return false end
  local me = members[self_address]
  if me == nil or me.status == "leaving" or me.status == "removed" then return false end
  if seed_timer then
    seed_timer:cancel()
    seed_timer = nil
  end
  swim.set_phase("leaving")
  return true
end

-- left() -> true once this node's goodbye is said (or it never joined).
function M.left()
  local me = members[self_address]
  return not started or me == nil or me.status == "removed"
end

-- down(address) -> true if the member was marked down. A member that is in
-- fact alive refutes and comes back up.
function M.down(address)
  if not started then error("membership is not started on this node", 2) end
  if address == self_address then error("down: a node cannot mark itself down (use leave)", 2) end
  return swim.down(address)
end

-- down_final(address) -> true if the member was downed for good (or was
-- already); false if it is not a member, or it left. Unlike down(), final
-- for its incarnation: every member holds it down whatever it says, and only
-- a new incarnation at its address is a member again. Its own node hears
-- it and lists itself down; restarting is up to it.
function M.down_final(address)
  if not started then error("membership is not started on this node", 2) end
  if address == self_address then error("down_final: a node cannot down itself (use leave)", 2) end
  return swim.down(address, true)
end

function M.stop()
  if seed_timer then
    seed_timer:cancel()
    seed_timer = nil
  end
  if started then swim.stop() end
end

---------------------------------------------------------------------------
-- Looking
---------------------------------------------------------------------------

-- members() -> { member... } in the order they were first seen, this node
-- first: { address, name, incarnation, status, suspect, since, self, upno }
function M.members()
  local out = {}
  for _, a in ipairs(order) do out[#out + 1] = copy(members[a]) end
  return out
end

-- member(address) -> member | nil
function M.member(address)
  local m = members[address]
  return m and copy(m)
end

-- status(address) -> status, incarnation | nil (not a member)
function M.status(address)
  local m = members[address]
  if m == nil then return nil end
  return m.status, m.incarnation
end

-- has_majority() -> whether this node's side holds a majority, by the downing strategy's rule
-- (atoll.cluster.downing); with --downing off, whether the members it sees alive are more than
-- half of the last known members (those down included, those that left not).
function M.has_majority()
  if not started then return true end
  local downing = require "atoll.cluster.downing"
  if downing.strategy() == "off" then return swim.has_majority() end
  return downing.decide(M.members(), downing.config(), downing.doubted()).majority
end

-- stats() -> the counters: probes, indirect_probes, acks, nacks, suspicions,
-- refutations, deaths, leaves, packets_sent, packets_received, bytes_sent,
-- dropped_malformed, dropped_auth, send_failed, unresolved, gossip_pending,
-- health (Lifeguard's local health multiplier: 0 is healthy)
function M.stats()
  if not started then return {} end
  return swim.stats()
end

-- config() -> the membership settings in force (seconds for times)
function M.config()
  return swim.config()
end

---------------------------------------------------------------------------
-- Subscriptions
---------------------------------------------------------------------------

local Subscription = {}
Subscription.__index = Subscription

function Subscription:cancel()
  self.cancelled = true
  subscribers[self] = nil
end

-- subscribe(fn) -> subscription (:cancel()). fn(event) runs first with
-- { type = "snapshot", members = { member... } }, then for every change with
-- { type = "member", member = member, previous = status | nil }. Called from
-- an actor, fn runs as that actor's message, in order; it stops when the
-- actor does.
function M.subscribe(fn)
  if type(fn) ~= "function" then error("subscribe needs a function", 2) end
  local sub = setmetatable({ fn = fn, rec = runtime.current() }, Subscription)
  subscribers[sub] = true
  local snapshot = { type = "snapshot", members = M.members() }
  runtime.run_in(sub.rec, function() fn(snapshot) end, sub)
  return sub
end

-- listen(fn(member, previous)): for the runtime's own modules (cluster,
-- watch): called synchronously on every change, before subscribers.
function M.listen(fn)
  listeners[#listeners + 1] = fn
end

return M
