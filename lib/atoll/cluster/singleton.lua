-- Cluster singletons: one instance of an actor in the whole cluster, reachable by name from
-- every node, which moves without losing a call when its node leaves and starts again
-- elsewhere when its node is lost.
--
--   local lobby = atoll.singleton.host("lobby", Lobby, ...)  -- on each node that may run it
--   local lobby = atoll.singleton.ref("lobby")              -- on any node
--   lobby:join(player)                                       -- a call, wherever it runs
--
-- Placement. A singleton runs on the oldest member among those that host its name (whose
-- status is up): oldest by the order in which members became up (downing.older), which every
-- member computes alike from membership state; a member that comes back as a new run is the
-- youngest, so a healed partition does not pull a singleton back and forth. An unreachable
-- member that is not down keeps its place: its singletons move once a majority downs it.
--
-- Safety. The instance serves a message only while its node holds a lease: a round of
-- `lease_ask` to the members that count, answered by a majority (downing's rule) that sees
-- this node up and not down, keeps it for LEASE seconds from when the round was sent. A node
-- cut off from the majority, or stopped or stalled for longer than LEASE, stops serving at once
-- and holds the messages until a new round succeeds (or it learns it was downed). A node that
-- takes a singleton over from members that were downed first has a majority confirm that they
-- are down (after which none of them can renew a lease), and starts once the last lease any of
-- them was granted has run out. The journal's unique (persistence_id, seq) is the last line of
-- defence for a persistent singleton: a second writer fails with `conflict` and stops.
--
-- Moving. When the host leaves (SIGTERM, leave()), its instance finishes the messages it is
-- handling, runs its `stopped` hook, and only then does the next oldest host start it; the
-- messages that waited go to the new instance, in order, and calls made meanwhile are held
-- (up to HOLD_MAX per singleton per node, past which `overloaded`), each within its timeout.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"
local errors = require "atoll.util.errors"
local cluster = require "atoll.cluster"
local membership = require "atoll.cluster.membership"
local downing = require "atoll.cluster.downing"
local lease = require "atoll.cluster.lease"
local moving = require "atoll.cluster.moving"

local M = {}

local PREFIX = "atoll.singleton/" -- the names calls travel under: PREFIX .. hops .. "/" .. name
local KEY = "atoll.singleton:"    -- the receptionist key its hosts check in under
local MANAGER = "atoll.singletons" -- each node's manager actor, by name
M.HOLD_MAX = 2048                 -- calls held per singleton per node
local STEP = 0.25                 -- seconds between evaluations while there is anything to do
local HELD_STEP = 0.02            -- ...and while calls are held
local RELEASE_TIMEOUT = 10        -- seconds to wait for another host to stop its instance
local LEASE_WAIT = 2              -- seconds an acquiring host waits for a lease before it retries

local new_error = errors.new
local node = runtime.node

local singletons = {} -- name -> state (below)
local manager = nil   -- this node's manager actor's ref
local evaluating_timer = nil
local shutdown_hooked = false
local leaving = false -- this node's graceful shutdown has begun (M.shutdown)

local function log(level, msg)
  host.log(level, "singleton", msg)
end

local function now_ms()
  return host.hrtime() / 1e6
end

---------------------------------------------------------------------------
-- State per singleton name (on every node that hosts it or calls it)
---------------------------------------------------------------------------

-- { name, hosted = { T, args, n } | nil, state = idle | acquiring | running | releasing,
--   rec, ref, since, epoch, held = { head, tail, [i] = entry }, released_by = { addr = true },
--   handovers, failovers, held_total, overflowed, relays }
local function state_of(name)
  local st = singletons[name]
  if st == nil then
    st = { name = name, state = "idle", epoch = 0, held = moving.queue(), released_by = {},
           handovers = 0, failovers = 0, held_total = 0, overflowed = 0, relays = 0 }
    singletons[name] = st
  end
  return st
end

local function held_count(st)
  return moving.count(st.held)
end

local function unreachable(fmt, ...)
  return new_error("unreachable", fmt:format(...))
end

---------------------------------------------------------------------------
-- Placement
---------------------------------------------------------------------------

local function self_member()
  if not membership.started() then
    return { address = node.address, status = "up", upno = 1, self = true, incarnation = node.incarnation }
  end
  return membership.member(node.address)
end

-- hosts(name) -> the members that host it: { member... } (this node included when it does).
local function hosts(name)
  local st = singletons[name]
  return moving.hosts(KEY .. name, st and st.hosted and self_member() or nil)
end

-- placement(name) -> the member that should run it now, or nil; and whether this node may not
-- know yet of an older host: the oldest host that is up (a host that told this node it released
-- it while leaving is passed over at once). `unsure` is true while an up member older than that
-- host has not shown this node its receptionist entries yet (a node that just joined does not
-- know who hosts what), or while an up member's up number has not reached this node: such a
-- node starts no instance, even if it looks like the oldest host.
local function placement(name)
  local st = singletons[name]
  local best = nil
  for _, m in ipairs(hosts(name)) do
    if m.status == "up" and not (st and st.released_by[m.address .. "/" .. tostring(m.incarnation)])
      and (best == nil or downing.older(m, best)) then
      best = m
    end
  end
  local unsure = false
  if best and membership.started() then
    local receptionist = require "atoll.cluster.receptionist"
    for _, m in ipairs(membership.members()) do
      -- (an up member whose up number has not reached this node yet may be older than anyone)
      if m.status == "up" and ((m.upno or 0) == 0 or not m.self and downing.older(m, best)
        and not receptionist.heard(m.address, m.incarnation)) then
        unsure = true
        break
      end
    end
  end
  return best, unsure
end
M.placement = placement

---------------------------------------------------------------------------
-- The lease (atoll.cluster.lease)
---------------------------------------------------------------------------

local evaluate_all -- defined below

local function needs_lease()
  for _, st in pairs(singletons) do
    if st.state == "acquiring" or st.state == "running" then return true end
  end
  return false
end

lease.use(needs_lease, function()
  for _, st in pairs(singletons) do
    if st.state == "running" and st.rec then runtime.release(st.rec) end
  end
  evaluate_all()
end)

local lease_valid = lease.valid
M.lease_valid = lease_valid

---------------------------------------------------------------------------
-- Delivering, holding and forwarding
---------------------------------------------------------------------------

-- (held entries: atoll.cluster.moving)
local function hold(st, entry)
  moving.push(st.held, entry)
  st.held_total = st.held_total + 1
end

local fail = moving.fail

-- Where a message for st goes now: "here" (this node runs it), "wait", "fail" (this side has
-- been without a majority for stable_after), or the address of the node to forward it to.
-- alone(name): no other member that hosts `name` is up or joining (none could take it over).
local function alone(name)
  for _, m in ipairs(hosts(name)) do
    if not m.self and (m.status == "up" or m.status == "joining") then return false end
  end
  return true
end

local function where(st, hops)
  if downing.status() == "stopped" then return "fail" end
  if st.state == "running" then return "here" end
  local p = placement(st.name)
  if p == nil or p.self then
    -- A node that is leaving starts nothing; alone, nobody else will either before it is gone.
    if leaving and alone(st.name) then return "alone" end
    return "wait"
  end
  -- A host that cannot be reached now (its link is down: it crashed, or a cut) may be downed
  -- soon and the singleton start elsewhere: its calls wait for that, within their timeouts.
  if not moving.may_forward(p, hops) then return "wait" end
  return p.address
end

-- Sends an entry to the node at address.
local function forward(st, entry, address)
  local name = PREFIX .. tostring(entry[4] + 1) .. "/" .. st.name
  if type(entry[3]) ~= "number" then st.relays = st.relays + 1 end
  moving.forward(entry, address, name, "singleton relay", function() st.relays = st.relays - 1 end)
end

-- Sends on what is held, in order, as far as it can go now.
local function pump(st)
  moving.pump(st.held, function(entry)
    local w = where(st, entry[4])
    if w ~= "wait" then return w end
  end, function(entry, w)
    if w == "fail" then
      fail(entry, unreachable("singleton %s is stopped: this node's side of the cluster has no "
        .. "majority", st.name))
    elseif w == "alone" then
      fail(entry, unreachable("singleton %s is stopped: this node is shutting down, and is alone",
        st.name))
    elseif w == "here" then
      runtime.enqueue(st.rec, entry[1], entry[2], entry[3])
    else
      forward(st, entry, w)
    end
  end)
end

local function compact(st)
  moving.compact(st.held)
end

-- A message for singleton `name` (its target handle's call or send, or a call from another
-- node): delivered, forwarded or held.
local function accept(name, method, payload, to, hops)
  local st = state_of(name)
  if held_count(st) == 0 then
    local w = where(st, hops)
    if w == "here" then
      runtime.enqueue(st.rec, method, payload, to)
      return true
    elseif w == "fail" then
      return nil, unreachable("singleton %s is stopped: this node's side of the cluster has no majority",
        name)
    elseif w == "alone" then
      return nil, unreachable("singleton %s is stopped: this node is shutting down, and is alone", name)
    elseif w ~= "wait" then
      forward(st, { method, payload, to, hops }, w)
      return true
    end
  end
  if held_count(st) >= M.HOLD_MAX then compact(st) end
  if held_count(st) >= M.HOLD_MAX then
    st.overflowed = st.overflowed + 1
    return nil, new_error("overloaded", ("%d calls wait for singleton %s on this node already")
      :format(M.HOLD_MAX, name))
  end
  hold(st, moving.entry(method, payload, to, hops))
  M.poke()
  return true
end

---------------------------------------------------------------------------
-- Handles
---------------------------------------------------------------------------

local Handle = {}
M.Handle = Handle

Handle.__index = runtime.method_table(function(method)
  return function(self, ...)
    if getmetatable(self) ~= Handle then
      error("call a distributed function with a colon: singleton:" .. method .. "(...)", 2)
    end
    return runtime.call_with(self, method, rawget(self, "timeout") or runtime.default_timeout(), ...)
  end
end)
Handle.__tostring = function(h)
  return "singleton " .. rawget(h, "name")
end

cluster.route_kind(Handle, {
  call = function(target, method, payload, rid)
    return accept(rawget(target, "name"), method, payload, rid, 0)
  end,
  send = function(target, method, payload)
    return accept(rawget(target, "name"), method, payload, 0, 0)
  end,
})

-- Calls from other nodes, under PREFIX .. hops .. "/" .. name.
cluster.on_named(PREFIX, function(full, method, payload, to)
  local hops, name = full:sub(#PREFIX + 1):match("^(%d+)/(.+)$")
  if name == nil then
    if to ~= 0 then to:reply(false, new_error("no_such_actor", "no singleton named " .. full)) end
    return
  end
  local ok, err = accept(name, method, payload, to, tonumber(hops))
  if not ok and to ~= 0 then to:reply(false, err) end
end)

local function check_name(name, what)
  if type(name) ~= "string" or name == "" or #name > 200 or name:find("[%c]") then
    error(what .. ": a singleton's name is a string of 1 to 200 printable bytes", 3)
  end
end

-- ref(name [, seconds]) -> a handle on the singleton `name`, from any node (calls through it
-- use this timeout, by default the default timeout).
function M.ref(name, seconds)
  check_name(name, "ref")
  state_of(name)
  return setmetatable({ name = name, timeout = seconds }, Handle)
end

---------------------------------------------------------------------------
-- Moving: acquiring and releasing
---------------------------------------------------------------------------

local function wall()
  return host.wall() / 1000
end

-- Stops this node's instance after the handlers it runs finish; what waited for it is held for
-- the next one, first. done() runs once it has stopped.
local function release(st, why, done)
  if st.state ~= "running" then
    if done then done() end
    return
  end
  st.state = "releasing"
  st.epoch = st.epoch + 1
  local rec = st.rec
  runtime.hold(rec)
  log("info", ("singleton %s: handing over (%s)"):format(st.name, why))
  runtime.when_idle(rec, function()
    local waiting = runtime.take_mailbox(rec)
    runtime.stop_record(rec)
    st.rec, st.ref, st.since = nil, nil, nil
    st.state = "idle"
    st.handovers = st.handovers + 1
    -- What waited in the instance's mailbox came before what is held here.
    for i = #waiting - 2, 1, -3 do
      moving.push_front(st.held, moving.entry(waiting[i], waiting[i + 1], waiting[i + 2], 0))
    end
    log("info", ("singleton %s: stopped here"):format(st.name))
    if done then done() end
    M.poke()
  end)
end

local function spawn_instance(st, failover)
  local T, args = st.hosted.T, st.hosted.args
  local ok, ref = pcall(runtime.spawn, T, unpack(args, 1, args.n))
  if not ok then
    log("error", ("singleton %s: cannot start: %s"):format(st.name, tostring(ref)))
    st.state = "idle"
    return false
  end
  local rec = runtime.record_of(ref)
  if rec == nil then -- it stopped in init
    st.state = "idle"
    return false
  end
  runtime.gate(rec, function() return st.state == "running" and lease_valid() end)
  st.rec, st.ref, st.since, st.state = rec, ref, wall(), "running"
  if failover then st.failovers = st.failovers + 1 end
  log("info", ("singleton %s: running here%s"):format(st.name, failover and " (failover)" or ""))
  return true
end

-- Asks every other live member to stop its instance if it runs one: true when all that can be
-- reached agree, false if one refused (it thinks itself older) or could not be asked. Every
-- member, not only the hosts this node knows of: a host that went up a moment ago may not have
-- shown its receptionist entry here yet (a member with no manager hosts nothing).
local function others_released(st)
  local me = self_member()
  return moving.ask_all(MANAGER, "release", RELEASE_TIMEOUT, {
    unreached = "skip",
    log = function(m, why)
      log("debug", ("singleton %s: %s did not release it: %s"):format(st.name, m.address, tostring(why)))
    end,
  }, st.name, node.address, me and me.upno or 0)
end

local function acquire(st)
  st.state = "acquiring"
  st.epoch = st.epoch + 1
  local epoch = st.epoch
  lease.start()
  runtime.start_root(function()
    local function still()
      local p, unsure = placement(st.name)
      return st.epoch == epoch and st.state == "acquiring" and p ~= nil and p.self and not unsure
        and downing.status() == "majority"
    end
    log("debug", ("singleton %s: acquiring: asking the other hosts to release it"):format(st.name))
    if not others_released(st) or not still() then return false end
    log("debug", ("singleton %s: acquiring: released; confirming downs"):format(st.name))
    -- A failover: members were downed lately, or the run that ran it here last is gone without
    -- saying it released it (a quick restart replaces a run rather than downing it).
    local failover = lease.recent() or (st.last_host ~= nil and not st.released_by[st.last_host])
    local until_ms = lease.confirm_downs()
    if until_ms == nil or not still() then return false end
    if until_ms > now_ms() then
      log("info", ("singleton %s: waiting %.0f ms for the last lease of a downed member to run out")
        :format(st.name, until_ms - now_ms()))
      runtime.sleep((until_ms - now_ms()) / 1000)
      if not still() then return false end
    end
    -- No instance starts (not even its init or its recovery) without a lease.
    local deadline = now_ms() + LEASE_WAIT * 1000
    while not lease_valid() do
      if now_ms() > deadline or not still() then return false end
      runtime.sleep(0.005)
    end
    return spawn_instance(st, failover)
  end, function(ok, res, tb)
    -- (a root's completion gets its results packed: { n, ... }, or the error and its traceback)
    local started = ok and res[1]
    if st.epoch == epoch and st.state == "acquiring" and not started then
      st.state = "idle"
      if not ok then log("error", "singleton " .. st.name .. ": acquiring failed: " .. tostring(tb or res)) end
    end
    M.poke()
  end, "singleton acquire")
end

local function evaluate(st)
  if st.hosted then
    local p, unsure = placement(st.name)
    local mine = p ~= nil and p.self
    if p and not p.self then st.last_host = p.address .. "/" .. tostring(p.incarnation) end
    local status = downing.status()
    if st.state == "running" then
      if status == "stopped" then
        release(st, "this node's side of the cluster has no majority")
      elseif not mine then
        release(st, p and ("the oldest host is now " .. p.address) or "no host is up here")
      end
    elseif st.state == "idle" and mine and not unsure and status == "majority" and not leaving
      and runtime.now_ms() >= (st.retry_at or 0) then
      acquire(st)
    end
  end
  pump(st)
end

function evaluate_all()
  for _, st in pairs(singletons) do evaluate(st) end
  if needs_lease() then lease.start() end
end

local function busy()
  for _, st in pairs(singletons) do
    if st.state ~= "idle" or held_count(st) > 0 or (st.hosted and placement(st.name)) then return true end
  end
  return false
end

-- poke(): evaluate soon (after the current message), and keep evaluating while there is
-- anything to do.
function M.poke()
  if evaluating_timer then
    if evaluating_timer.soon then return end
    -- A periodic evaluation is due later: this one comes first (a host released it, an
    -- instance started: what waits should not wait for the next step).
    evaluating_timer:cancel()
  end
  evaluating_timer = runtime.after_raw(0, function()
    evaluating_timer = nil
    evaluate_all()
    if busy() and evaluating_timer == nil then
      local held = false
      for _, st in pairs(singletons) do held = held or held_count(st) > 0 end
      evaluating_timer = runtime.after_raw(held and HELD_STEP or STEP, function()
        evaluating_timer = nil
        M.poke()
      end)
    end
  end)
  evaluating_timer.soon = true
end

---------------------------------------------------------------------------
-- The manager actor: what other nodes ask
---------------------------------------------------------------------------

local Manager = require("atoll.actor").define "atoll.Singletons"

-- release(name, requester, upno) -> "done" | "refused": the requester thinks it should run
-- the singleton; this node stops its instance unless it is older than the requester.
function Manager.distributed:release(name, requester, upno)
  if type(name) ~= "string" or type(requester) ~= "string" then return "refused" end
  local st = singletons[name]
  if st == nil then return "done" end
  -- The requester must be a member this node sees up, that hosts the name; its age is the one
  -- membership gives it here (what it claims counts only while this node knows none).
  local them = nil
  for _, m in ipairs(hosts(name)) do
    if m.address == requester and not m.self and m.status == "up" then them = m end
  end
  if them == nil then return "refused" end
  if (them.upno or 0) == 0 then
    if type(upno) ~= "number" or upno < 1 or upno % 1 ~= 0 then return "refused" end
    them = { address = requester, upno = upno }
  end
  -- An older host that is up refuses, whether or not it runs the singleton yet: the requester
  -- has not heard of it, and will start nothing while this node is its elder.
  local me = self_member()
  if me and st.hosted and me.status == "up" and downing.older(me, them) then return "refused" end
  if st.state == "idle" then return "done" end
  if st.state == "acquiring" then
    st.epoch = st.epoch + 1
    st.state = "idle"
    return "done"
  end
  local waiter = runtime.waiter()
  release(st, requester .. " takes it over", function() waiter:wake() end)
  if st.state ~= "idle" then waiter:wait(RELEASE_TIMEOUT) end
  return st.state == "idle" and "done" or "refused"
end

-- released(name, address, incarnation): a host that is leaving has stopped its instance. That
-- run of it is passed over from now on (before this node hears that it is leaving); a new run
-- has a new incarnation.
function Manager.distributed:released(name, address, incarnation)
  if type(name) ~= "string" or type(address) ~= "string" or type(incarnation) ~= "number" then return end
  local m = membership.member(address)
  if m == nil or m.self or m.incarnation ~= incarnation then return end
  state_of(name).released_by[address .. "/" .. tostring(incarnation)] = true
  log("debug", ("singleton %s: %s released it"):format(name, address))
  M.poke()
end

-- info() -> { singleton... } (what `atoll singletons` prints)
function Manager.distributed:info()
  return M.info()
end

local function ensure_manager()
  manager = manager or moving.start_manager(Manager, MANAGER, "the singleton manager")
  return manager
end

---------------------------------------------------------------------------
-- Hosting
---------------------------------------------------------------------------

-- host(name, T, ...) -> handle: this node may run singleton `name`, an actor of type T (or of
-- the module T names) started with these arguments; returns the handle ref(name) returns.
function M.host(name, T, ...)
  check_name(name, "host")
  if type(T) == "string" then T = require(T) end
  if type(T) ~= "table" or type(T.distributed) ~= "table" then
    error("host: expected an actor type (atoll.actor.define) or the name of a module returning one", 2)
  end
  local st = state_of(name)
  if st.hosted then error("host: singleton " .. name .. " is hosted on this node already", 2) end
  local args = { n = select("#", ...), ... }
  st.hosted = { T = T, args = args }
  ensure_manager()
  if not shutdown_hooked then
    shutdown_hooked = true
    require("atoll").on_shutdown(function() M.shutdown(8) end)
  end
  if membership.started() then
    require("atoll.cluster.receptionist").check_in(manager, KEY .. name)
  end
  M.poke()
  return M.ref(name)
end

-- Leaving: every instance here is handed over before the node goes; a hook of the node's
-- graceful shutdown waits for that (and for the calls relayed meanwhile) for up to `seconds`.
function M.shutdown(seconds)
  local deadline = runtime.now_ms() + seconds * 1000
  local me = self_member()
  leaving = true
  for _, st in pairs(singletons) do
    if st.state == "running" or st.state == "acquiring" then
      -- Every other host hears it at once (this node's own status may not say `leaving` yet,
      -- and gossip takes a few probes to spread it): the next oldest starts without waiting.
      release(st, "this node is leaving", function()
        for _, m in ipairs(hosts(st.name)) do
          if not m.self and m.status ~= "down" and m.status ~= "removed" then
            pcall(cluster.send_name, m.address, MANAGER, "released", st.name, node.address,
              me and me.incarnation)
          end
        end
      end)
    end
  end
  while runtime.now_ms() < deadline do
    local pending = false
    for _, st in pairs(singletons) do
      pump(st)
      if st.state ~= "idle" or held_count(st) > 0 or st.relays > 0 then pending = true end
    end
    if not pending then return true end
    runtime.sleep(0.02)
  end
  return false
end

-- info() -> { { name, hosted, host, running, since, held, handovers, failovers, held_total,
-- overflowed }... } sorted by name: this node's view.
function M.info()
  local out = {}
  for name, st in pairs(singletons) do
    local p = placement(name)
    compact(st)
    out[#out + 1] = { name = name, hosted = st.hosted ~= nil, host = p and p.address or nil,
      state = st.state, running = st.state == "running", since = st.since, held = held_count(st),
      handovers = st.handovers, failovers = st.failovers, held_total = st.held_total,
      overflowed = st.overflowed, lease = lease_valid() }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

---------------------------------------------------------------------------
-- Wiring
---------------------------------------------------------------------------

membership.listen(function()
  if next(singletons) then M.poke() end
end)

-- An instance that stops by itself (self:stop(), an error in its recovery, a journal conflict
-- with another writer) is started again after a second, if this node should still run it.
runtime.on_stop(function(rec)
  for _, st in pairs(singletons) do
    if st.rec == rec and st.state == "running" then
      st.rec, st.ref, st.since = nil, nil, nil
      st.state = "idle"
      st.epoch = st.epoch + 1
      st.retry_at = runtime.now_ms() + 1000
      log("warn", ("singleton %s: its instance stopped; starting it again in 1 s"):format(st.name))
      M.poke()
    end
  end
end)

downing.on_status(function()
  if next(singletons) then M.poke() end
end)

return M
