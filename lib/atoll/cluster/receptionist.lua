-- The receptionist: actors are listed under keys, and found by key on every node of the cluster.
--
-- Every node owns the entries of its own actors: check_in and check_out
-- change them, and an actor that stops is checked out of every key. Each
-- change gets the next number of the node's sequence (one per run: it
-- starts again with a new incarnation) and goes at once, as a one-way
-- message to the node actor (`reception_change`), to every other member
-- that is not down or removed. Each node keeps a replica of every other
-- member's entries (atoll.cluster.replica): a change applies right after the
-- one before it, an old one is ignored, and a gap makes the node ask the
-- owner for its whole set (`reception_pull`).
--
-- A full exchange happens when a member comes up, or back up (a partition
-- healed: membership reports it up again), and when the link to it comes
-- (back) up: each side tells the other its sequence number
-- (`reception_digest`, asking for the other's), and each side whose replica
-- is behind pulls the whole set, which comes as `reception_set` in parts of
-- 1,000 entries. So a whole set goes only where it is missing, and a member
-- that knows this node before this node knows it still gets it. Every 10 s
-- each node tells every member its sequence number again (anti-entropy): a
-- member whose replica is behind pulls. Views converge after anything that
-- lost messages: within a few round trips when membership or a link notices,
-- within 10 s otherwise.
--
-- A member's entries go when membership reports it down or removed (for
-- that incarnation), and a new run at an address replaces the replica of
-- the old one. Messages from a run that is not a live member in this node's
-- view are ignored: its whole set comes once membership reports it up.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"
local errors = require "atoll.util.errors"
local replica = require "atoll.cluster.replica"

local M = {}

local NODE_ACTOR = "atoll.node"
local PULL_AGAIN = 1       -- seconds before a node asks the same owner for its whole set again
local VIEW_MAX = 10000     -- entries at most in view() (what `atoll receptionist` prints)

local R_TYPE, R_REF, R_ID, R_STATUS = runtime.R_TYPE, runtime.R_REF, runtime.R_ID, runtime.R_STATUS
local STOPPED = runtime.STOPPED
local REF_ADDR, REF_INC, REF_ID = runtime.REF_ADDR, runtime.REF_INC, runtime.REF_ID
local node = runtime.node
local new_error = errors.new

-- The limits and settings in force (specs change them): entries this node
-- may list of its own actors; seconds between two digests to each member.
M.limits = { entries = replica.MAX_ENTRIES }
M.settings = { digest_interval = 10 }

local own = replica.new(nil, nil) -- this node's entries (the refs say its address)
local by_actor = {}               -- local actor id -> { [key] = true }
local replicas = {}               -- address -> replica of that member's entries
local members = {}                -- address -> incarnation, for live members other than this node
local listings = {}               -- key -> { [subscription] = true }
local by_rec = setmetatable({}, { __mode = "k" }) -- actor record -> { [subscription] = true }
local digest_timer = nil
local warned = false

local stats = {
  changes_sent = 0, changes_received = 0, sets_sent = 0, sets_received = 0, digests_sent = 0,
  digests_received = 0, pulls_sent = 0, gaps = 0, stale = 0, ignored = 0, refused = 0,
}

local function log(level, msg)
  host.log(level, "receptionist", msg)
end

local set_of = require("atoll.util.sets").of

local send_name = nil -- atoll.cluster.send_name, once the cluster is loaded

-- Sends a one-way message to a node's node actor; false if it cannot go.
local function send(address, method, ...)
  if send_name == nil then send_name = require("atoll.cluster").send_name end
  local ok, err = pcall(send_name, address, NODE_ACTOR, method, ...)
  if not ok then log("debug", method .. " to " .. address .. " not sent: " .. tostring(err)) end
  return ok
end

-- What came from the wire and is not a receptionist's message: counted,
-- and said once at warn level (then at debug level), never raised.
local function refuse(from, why)
  stats.refused = stats.refused + 1
  local sender = type(from) == "string" and #from <= 64 and from
    or ("a sender named by a " .. (type(from) == "string" and (#from .. "-byte string") or type(from)))
  local msg = "refused from " .. sender .. ": " .. tostring(why)
  if warned then
    log("debug", msg)
  else
    warned = true
    log("warn", msg .. " (more are counted in `atoll receptionist`, and logged at debug level)")
  end
end

---------------------------------------------------------------------------
-- Listings
---------------------------------------------------------------------------

local Subscription = {}
Subscription.__index = Subscription

local function drop_subscription(sub)
  sub.cancelled = true
  local subs = listings[sub.key]
  if subs then
    subs[sub] = nil
    if next(subs) == nil then listings[sub.key] = nil end
  end
  local mine = sub.rec and by_rec[sub.rec]
  if mine then mine[sub] = nil end
end

-- subscription:cancel(): no more events (those already queued are dropped too)
function Subscription:cancel()
  drop_subscription(self)
end

-- Tells the listings of `key` that ref was added or removed, as messages
-- of their actors, in order.
local function emit(event_type, key, ref)
  local subs = listings[key]
  if subs == nil then return end
  for sub in pairs(subs) do
    local rec = sub.rec
    if rec and rec[R_STATUS] == STOPPED then
      drop_subscription(sub)
    else
      local fn, ev = sub.fn, { type = event_type, key = key, ref = ref }
      runtime.run_in(rec, function() fn(ev) end, sub)
    end
  end
end

---------------------------------------------------------------------------
-- Sending this node's entries
---------------------------------------------------------------------------

-- Sends one change of this node's entries to every live member.
local function broadcast(op, key, ref, type_name)
  local seq = own.seq
  for address in pairs(members) do
    if send(address, "reception_change", node.address, node.incarnation, seq, op, key, ref, type_name) then
      stats.changes_sent = stats.changes_sent + 1
    end
  end
end

-- Sends this node's whole set to a node, in parts.
local function push(address)
  local parts = replica.parts(own)
  local seq, n = own.seq, #parts
  for i = 1, n do
    if not send(address, "reception_set", node.address, node.incarnation, seq, i, n, parts[i]) then return false end
  end
  stats.sets_sent = stats.sets_sent + 1
  return true
end

-- Tells a node this node's sequence number: if its replica is behind, it
-- pulls the whole set. With `ask`, it answers with its own number, so that
-- this node pulls its set if need be: a full exchange, in which each whole
-- set goes only where it is missing.
local function digest(address, ask)
  if send(address, "reception_digest", node.address, node.incarnation, own.seq, ask or nil) then
    stats.digests_sent = stats.digests_sent + 1
  end
end

-- Asks an owner for its whole set, at most once per PULL_AGAIN (the changes
-- after a gap keep coming until the set does; a set that broke off, its
-- owner's link lost halfway, is asked for again at the next gap or digest).
local function pull(r)
  local now = runtime.now_ms()
  if (r.pull_at or 0) > now then return end
  r.pull_at = now + PULL_AGAIN * 1000
  if send(r.address, "reception_pull", node.address, node.incarnation) then
    stats.pulls_sent = stats.pulls_sent + 1
  end
end

-- Every digest_interval, each member hears this node's sequence number.
local function digest_round()
  digest_timer = nil
  if next(members) == nil then return end
  for address in pairs(members) do digest(address, false) end
  digest_timer = runtime.after_raw(M.settings.digest_interval, digest_round)
end

---------------------------------------------------------------------------
-- This node's entries
---------------------------------------------------------------------------

local function bad_argument(fmt, ...)
  error(new_error("bad_argument", fmt:format(...)), 3)
end

local function check_key(what, key)
  if not replica.valid_key(key) then
    bad_argument("%s: the key must be a string of 1 to %d bytes, got %s", what, replica.MAX_KEY,
      type(key) == "string" and (#key .. " bytes") or type(key))
  end
end

-- The record of a live actor of this node, for check_in and check_out.
local function local_record(what, ref, key)
  if not runtime.is_ref(ref) then bad_argument("%s: expected an actor ref, got %s", what, type(ref)) end
  check_key(what, key)
  if not runtime.is_local(ref) then
    bad_argument("%s: %s is an actor of another node: check in an actor on its own node "
      .. "(its own code, or an actor there, calls %s)", what, tostring(ref), what)
  end
  return runtime.record_of(ref)
end

-- check_in(ref, key) -> true: see atoll.receptionist.
function M.check_in(ref, key)
  local rec = local_record("check_in", ref, key)
  if rec == nil then error(new_error("no_such_actor", "check_in: " .. tostring(ref) .. " has stopped"), 2) end
  if replica.listed(own, key, ref) then return true end
  if own.count >= M.limits.entries then
    error(new_error("overloaded", ("check_in: this node lists %d entries already, the most it may"):format(
      own.count)), 2)
  end
  local type_name = rec[R_TYPE].__name
  own.seq = own.seq + 1
  replica.add(own, key, ref, type_name, emit)
  set_of(by_actor, rec[R_ID])[key] = true
  broadcast("add", key, ref, type_name)
  return true
end

local function remove_own(ref, key, id)
  own.seq = own.seq + 1
  replica.remove(own, key, ref, emit)
  local keys = by_actor[id]
  if keys then
    keys[key] = nil
    if next(keys) == nil then by_actor[id] = nil end
  end
  broadcast("remove", key, ref, nil)
end

-- check_out(ref, key) -> true if ref was listed under key.
function M.check_out(ref, key)
  local_record("check_out", ref, key)
  if not replica.listed(own, key, ref) then return false end
  remove_own(ref, key, ref[REF_ID])
  return true
end

-- An actor of this node stopped: it leaves every key, and its listings end.
local function on_stopped(rec)
  local id = rec[R_ID]
  local keys = by_actor[id]
  if keys then
    local ref = rec[R_REF]
    local list = {}
    for key in pairs(keys) do list[#list + 1] = key end
    table.sort(list)
    for _, key in ipairs(list) do remove_own(ref, key, id) end
  end
  local subs = by_rec[rec]
  if subs then
    by_rec[rec] = nil
    for sub in pairs(subs) do drop_subscription(sub) end
  end
end

---------------------------------------------------------------------------
-- Looking up
---------------------------------------------------------------------------

-- Refs by node address, then actor id (then incarnation).
local function before(a, b)
  local aa, ba = a[REF_ADDR], b[REF_ADDR]
  if aa ~= ba then return aa < ba end
  if a[REF_ID] ~= b[REF_ID] then return a[REF_ID] < b[REF_ID] end
  return a[REF_INC] < b[REF_INC]
end

local function collect(out, r, key)
  local refs = r.keys[key]
  if refs then
    for ref in pairs(refs) do out[#out + 1] = ref end
  end
end

-- lookup(key) -> { ref... }: see atoll.receptionist.
function M.lookup(key)
  check_key("lookup", key)
  local out = {}
  collect(out, own, key)
  for _, r in pairs(replicas) do collect(out, r, key) end
  table.sort(out, before)
  return out
end

-- listing(key, fn) -> subscription: see atoll.receptionist.
function M.listing(key, fn)
  check_key("listing", key)
  if type(fn) ~= "function" then bad_argument("listing: expected a function, got %s", type(fn)) end
  local sub = setmetatable({ key = key, fn = fn, rec = runtime.current() }, Subscription)
  set_of(listings, key)[sub] = true
  if sub.rec then set_of(by_rec, sub.rec)[sub] = true end
  local snapshot = { type = "snapshot", key = key, refs = M.lookup(key) }
  runtime.run_in(sub.rec, function() fn(snapshot) end, sub)
  return sub
end

-- stats() -> the counters: own (entries of this node's actors), seq (the
-- number of its last change), entries (all it holds), members (live members
-- it replicates to), changes_sent and
-- changes_received (messages), sets_sent and sets_received (whole sets:
-- full exchanges and answers to pulls), digests_sent, digests_received,
-- pulls_sent, gaps (changes that came after a missing one), stale (old
-- changes ignored), ignored (messages from runs that are not live
-- members), refused (malformed messages and entries)
function M.stats()
  local out = { own = own.count, seq = own.seq, entries = own.count, members = 0 }
  for _, r in pairs(replicas) do out.entries = out.entries + r.count end
  for _ in pairs(members) do out.members = out.members + 1 end
  for k, v in pairs(stats) do out[k] = v end
  return out
end

-- view([key]) -> what `atoll receptionist` prints: { address, entries = { {
-- key, address, id, incarnation, type }... } by key, address and id (at
-- most VIEW_MAX), total, truncated, stats }
function M.view(key)
  local rows = {}
  local function add(r)
    local keys = r.keys
    if key ~= nil then keys = { [key] = keys[key] } end
    for k, refs in pairs(keys) do
      for ref, type_name in pairs(refs) do
        rows[#rows + 1] = { key = k, address = ref[REF_ADDR], id = ref[REF_ID], incarnation = ref[REF_INC],
                            type = type_name, ref = ref }
      end
    end
  end
  add(own)
  for _, r in pairs(replicas) do add(r) end
  table.sort(rows, function(a, b)
    if a.key ~= b.key then return a.key < b.key end
    return before(a.ref, b.ref)
  end)
  local total = #rows
  for i = VIEW_MAX + 1, total do rows[i] = nil end
  for _, row in ipairs(rows) do row.ref = nil end
  return { address = node.address, entries = rows, total = total, truncated = total > VIEW_MAX,
           stats = M.stats() }
end

---------------------------------------------------------------------------
-- What the node actor hears from other nodes
---------------------------------------------------------------------------

-- The replica of the run `inc` of the member at `owner`, if that run is a
-- live member in this node's view (nil: the message is ignored).
local function replica_of(owner, inc)
  if members[owner] ~= inc then return nil end
  local r = replicas[owner]
  if r == nil or r.incarnation ~= inc then
    r = replica.new(owner, inc)
    replicas[owner] = r
  end
  return r
end

local function owner_problem(owner, inc)
  if type(owner) ~= "string" or #owner == 0 or #owner > 300 then return "a message without an owner address" end
  if type(inc) ~= "number" then return "a message without an owner incarnation" end
  return nil
end

-- reception_change: one change of an owner's entries.
function M.received_change(owner, inc, seq, op, key, ref, type_name)
  local problem = owner_problem(owner, inc)
  if problem then return refuse(owner, problem) end
  stats.changes_received = stats.changes_received + 1
  local r = replica_of(owner, inc)
  if r == nil then
    stats.ignored = stats.ignored + 1
    return
  end
  local outcome, why = replica.change(r, seq, op, key, ref, type_name, emit)
  if outcome == "gap" then
    stats.gaps = stats.gaps + 1
    pull(r)
  elseif outcome == "stale" then
    stats.stale = stats.stale + 1
  elseif outcome == "refused" then
    refuse(owner, why)
  end
end

-- heard(address, incarnation) -> whether this node holds all of that run's entries as of some
-- moment (a whole set, or its changes from the first): until then, it may list actors this node
-- has not heard of (atoll.singleton waits for that before it starts an instance).
function M.heard(address, incarnation)
  if address == node.address then return true end
  local r = replicas[address]
  return r ~= nil and r.incarnation == incarnation and (r.heard or r.seq > 0)
end

-- reception_set: a part of an owner's whole set.
function M.received_set(owner, inc, seq, part, parts, entries)
  local problem = owner_problem(owner, inc)
  if problem then return refuse(owner, problem) end
  local r = replica_of(owner, inc)
  if r == nil then
    stats.ignored = stats.ignored + 1
    return
  end
  local outcome, refused, why = replica.set_part(r, seq, part, parts, entries, emit)
  if outcome == "applied" then r.heard = true end
  if refused > 0 then
    stats.refused = stats.refused + refused - 1
    refuse(owner, why)
  end
  if outcome == "applied" then
    stats.sets_received = stats.sets_received + 1
    r.pull_at = nil
  elseif outcome == "broken" then
    pull(r)
  elseif outcome == "refused" then
    refuse(owner, why)
  end
end

-- reception_digest: an owner's sequence number; a replica behind it pulls.
-- With `ask`, the owner wants this node's number back.
function M.received_digest(owner, inc, seq, ask)
  local problem = owner_problem(owner, inc)
  if problem then return refuse(owner, problem) end
  stats.digests_received = stats.digests_received + 1
  local r = replica_of(owner, inc)
  if r == nil then
    stats.ignored = stats.ignored + 1
  elseif r.seq ~= seq then
    pull(r)
  else
    -- Up to date with that run as of its digest: so too when it has never checked anything in
    -- (a member that hosts nothing is heard this way, or an atoll.singleton elsewhere would wait
    -- for it for good).
    r.heard = true
  end
  -- Answered even when ignored: the owner may know this node before this
  -- node knows the owner.
  if ask and owner ~= node.address then digest(owner, false) end
end

-- reception_pull: a node asks for this node's whole set.
function M.received_pull(requester, inc)
  local problem = owner_problem(requester, inc)
  if problem then return refuse(requester, problem) end
  if requester == node.address then return end
  push(requester)
end

---------------------------------------------------------------------------
-- Membership and links
---------------------------------------------------------------------------

local function drop_replica(address)
  local r = replicas[address]
  if r == nil then return end
  replicas[address] = nil
  replica.clear(r, emit)
end

local function on_member(m, previous)
  if m.self then return end
  local address, inc = m.address, m.incarnation
  local r = replicas[address]
  if m.status == "down" or m.status == "removed" then
    if members[address] == inc then members[address] = nil end
    if r and r.incarnation == inc then drop_replica(address) end
    return
  end
  if r and r.incarnation ~= inc then drop_replica(address) end -- an earlier run of that node
  members[address] = inc
  if previous == nil or previous == "down" then
    -- A full exchange, after every listener has run: the link policy's own
    -- (atoll.cluster) lets a member that is back be dialed at once.
    runtime.run_in(nil, function()
      if members[address] == inc then digest(address, true) end
    end)
  end
  if digest_timer == nil then digest_timer = runtime.after_raw(M.settings.digest_interval, digest_round) end
end

-- link_up(address): from atoll.cluster. A link to a member that comes
-- (back) up brings a full exchange: what went on an old link may be lost.
function M.link_up(address)
  if members[address] then digest(address, true) end
end

function M.install()
  runtime.on_stop(on_stopped)
  require("atoll.cluster.membership").listen(on_member)
end

return M
