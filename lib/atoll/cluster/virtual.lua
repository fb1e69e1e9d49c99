-- Virtual actors: one activation per (type, id) in the whole cluster, made on the first call,
-- collected when idle, moved when members join or leave, and made again elsewhere when its node
-- is lost. (Refs on the wire: atoll.cluster.virtual_ref; reminders: atoll.cluster.reminders;
-- how it works: docs/design.md, "Virtual actors: how they work".)
--
--   local Player = atoll.virtual.define(atoll.actor.define("Player", { persistent = true }),
--                                       { idle_timeout = 600 })
--   atoll.virtual.host(Player)                      -- this node may activate players
--   local p = atoll.virtual.get("Player", id, deps) -- on any node: a name, not a process
--   p:join(lobby)                                   -- activates it where it belongs
--
-- An activation starts as `T:init(id, deps)` with `self` already holding the id
-- (`atoll.virtual.id(self)`); a persistent type's stream is "virtual/TYPE/ID" unless the type
-- says otherwise. `T:deactivate()` runs before the activation is collected.
--
-- Placement: the owner of (type, id) is the member, among the up members that host the type,
-- whose hash of (address, type, id) is highest (rendezvous hashing): a member joining or leaving
-- moves about 1/N of the ids. Single activation: before it activates an id, the owner asks every
-- member that is not down to give up any activation of it (each passivates its own first and
-- hands over what waited for it), and waits while one cannot be reached; it starts only under
-- the node's lease (atoll.cluster.lease), and, after members were downed, only once their last
-- lease ran out.
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"
local errors = require "atoll.util.errors"
local cluster = require "atoll.cluster"
local membership = require "atoll.cluster.membership"
local downing = require "atoll.cluster.downing"
local lease = require "atoll.cluster.lease"
local moving = require "atoll.cluster.moving"
local reminders = require "atoll.cluster.reminders"
local codec = require "atoll.c.codec"

local M = {}

local PREFIX = "atoll.virtual/" -- calls travel under PREFIX .. hops .. "/" .. encoded (type, id)
local KEY = "atoll.virtual:"    -- the receptionist key a node that hosts a type checks in under
local MANAGER = "atoll.virtuals"
M.HOLD_MAX = 2048               -- calls held per id while it moves
M.IDLE_TIMEOUT = 600            -- seconds, by default
local CLAIM_TIMEOUT = 10
local LEASE_WAIT = 2
local RETRY = 0.05              -- seconds before a refused activation is tried again...
local RETRY_MAX = 0.5           -- ...doubling up to this

local new_error = errors.new
local R_REF = runtime.R_REF
local node = runtime.node

local types = {}   -- name -> { T, idle_timeout, hosted }
local acts = {}    -- key -> activation (below)
local manager = nil
local counters = { activations = 0, passivations = 0, forwards = 0, handoffs = 0, overflowed = 0 }

local function log(level, msg)
  host.log(level, "virtual", msg)
end

local function now_ms()
  return host.hrtime() / 1e6
end

-- The same clock as the runtime last read it (at most a few messages old): for when an
-- activation was last used, noted on every call.
local loop_ms = runtime.now_ms

---------------------------------------------------------------------------
-- Types and handles
---------------------------------------------------------------------------

-- A type's name is at most MAX_TYPE bytes: its receptionist key (KEY .. name) is at most 200.
local MAX_TYPE = 200 - #KEY
local MAX_TYPES = 256 -- types whose keys, names and placements are kept (more are worked out)
M.MAX_TYPE = MAX_TYPE

-- valid_id(id) -> the id (an integer -0 as 0), or nil
local function valid_id(id)
  local t = type(id)
  if t == "string" then
    if #id >= 1 and #id <= 200 then return id end
  elseif t == "number" then
    if id % 1 == 0 and math.abs(id) <= 2 ^ 53 then return id + 0 end
  end
  return nil
end

local function check_id(id, what)
  local ok = valid_id(id)
  if ok ~= nil then return ok end
  local t = type(id)
  if t == "string" then error(what .. ": an id is 1 to 200 bytes", 3) end
  if t == "number" then error(what .. ": a numeric id is an integer within 2^53", 3) end
  error(what .. ": an id is a string or an integer, not " .. t, 3)
end

local function check_type_name(name, what)
  if type(name) ~= "string" or #name < 1 or #name > MAX_TYPE then
    error(("%s: a virtual type's name is 1 to %d bytes"):format(what, MAX_TYPE), 3)
  end
end

-- The id as text, its kind first: "n42" (all of an integer's digits: tostring rounds those
-- above 1e14; -0 is 0) or "sann".
local function id_text(id)
  if type(id) ~= "number" then return "s" .. id end
  if id > -1e14 and id < 1e14 then return "n" .. (id + 0) end
  return ("n%.0f"):format(id)
end

-- key_of(name, id): the key of (type, id), on this node and in placement's hash. The name is
-- length-prefixed, so no two (type, id) share a key whatever bytes they hold.
local key_heads = {}
local nkey_heads = 0

local function key_of(name, id)
  local head = key_heads[name]
  if head == nil then
    head = #name .. ":" .. name
    if nkey_heads < MAX_TYPES then
      key_heads[name] = head
      nkey_heads = nkey_heads + 1
    end
  end
  return head .. id_text(id)
end
M.key_of = key_of

-- Distributed functions a virtual type may not have: the fields of its refs.
local RESERVED = { type = true, id = true, deps = true, timeout = true }

-- define(T [, opts]) -> T: T is a virtual type; opts.idle_timeout (seconds).
function M.define(T, opts)
  if type(T) ~= "table" or type(T.distributed) ~= "table" or type(T.__name) ~= "string" then
    error("virtual.define: expected an actor type (atoll.actor.define)", 2)
  end
  check_type_name(T.__name, "virtual.define")
  for method in pairs(RESERVED) do
    if rawget(T.distributed, method) ~= nil then
      error(("virtual.define: %s has a distributed %s, a name its refs keep for themselves (type, id, "
        .. "deps, timeout): rename it"):format(T.__name, method), 2)
    end
  end
  opts = opts or {}
  local idle = opts.idle_timeout or M.IDLE_TIMEOUT
  if type(idle) ~= "number" or idle <= 0 then error("virtual.define: idle_timeout is a number of seconds > 0", 2) end
  local entry = types[T.__name]
  if entry and entry.T ~= T then
    -- (a reload defines the type again: the newest definition wins)
    entry.T, entry.idle_timeout = T, idle
  else
    types[T.__name] = { T = T, idle_timeout = idle, hosted = entry and entry.hosted or false }
  end
  if T.__options and T.__options.persistent and rawget(T, "persistence_id") == nil then
    T.persistence_id = function(self)
      -- (the id's kind first: 42 and "42" are two actors, with two histories)
      return "virtual/" .. T.__name .. "/" .. id_text(rawget(self, "__virtual_id"))
    end
  end
  return T
end

-- id(self) -> the id of the activation `self` is the state of
function M.id(self)
  return rawget(self, "__virtual_id")
end

-- target_of(self or ref) -> type name, id
local function target_of(target, what)
  if type(target) == "table" then
    local id, name = rawget(target, "__virtual_id"), rawget(target, "__virtual_type")
    if id ~= nil and name ~= nil then return name, id end
    if getmetatable(target) == M.Ref then return rawget(target, "type"), rawget(target, "id") end
  end
  error(what .. ": expected a virtual actor (its self) or a virtual ref", 3)
end

local REMIND_TIMEOUT = 30

-- remind(self or ref, name, when) -> the due time (unix seconds), once the reminder is durable.
-- when: seconds from now, or { at = unix seconds | after = seconds [, every = seconds] }. When
-- due, the cluster calls T:reminded(name, due) on the actor, activating it where it belongs
-- (lib/atoll/cluster/reminders.lua). Setting a name again replaces it.
function M.remind(target, name, when)
  local vtype, id = target_of(target, "remind")
  reminders.check_name(name, "remind")
  local due, every = reminders.when(when, "remind")
  local t = types[vtype]
  if t and type(t.T.distributed.reminded) ~= "function" then
    error("remind: " .. vtype .. " has no distributed reminded(name, due) for the reminder to call", 2)
  end
  return reminders.ref(REMIND_TIMEOUT):set(vtype, id, name, due, every) / 1000
end

-- forget(self or ref, name) -> true if the reminder was there (it will not fire again; a firing
-- already being recorded at that moment still goes out)
function M.forget(target, name)
  local vtype, id = target_of(target, "forget")
  reminders.check_name(name, "forget")
  return reminders.ref(REMIND_TIMEOUT):forget(vtype, id, name)
end

-- reminders(self or ref) -> { { name, due = unix seconds, every = seconds or nil }... }, soonest first
function M.reminders(target)
  local vtype, id = target_of(target, "reminders")
  return reminders.ref(REMIND_TIMEOUT):list(vtype, id)
end

-- (the metatable lives in atoll.cluster.virtual_ref, which the codec knows from the node's start)
local virtual_ref = require "atoll.cluster.virtual_ref"
local Ref = virtual_ref.Ref
M.Ref = Ref

local here -- (below)

-- get(T or type name, id [, deps [, timeout]]) -> ref: a name, valid on every node.
function M.get(T, id, deps, seconds)
  local name = type(T) == "table" and T.__name or T
  check_type_name(name, "virtual.get")
  id = check_id(id, "virtual.get")
  return setmetatable({ type = name, id = id, deps = deps, timeout = seconds }, Ref)
end

---------------------------------------------------------------------------
-- Placement
---------------------------------------------------------------------------

-- The hosts of each type, kept: placement is asked on every call for an id that is not active
-- here, and finding the hosts means a receptionist lookup (sorted) and copies of members. What
-- they depend on tells when it changes (placement_changed): a membership change, the type's
-- receptionist entries (its listing), its hosting here, this node's leaving, and the membership
-- starting. name -> { started, hosts = { member... }, eligible = { member... }, owners (below) }
local placements = {}
local watch_type -- (below)
local watched = {} -- type name -> this node's listing of the type's hosts (watch_type)

local function placement_changed()
  if next(placements) ~= nil then placements = {} end
end

-- The members that host the type (this node first when it does).
local function find_hosts(name)
  local t = types[name]
  local me = nil
  if t and t.hosted then
    if membership.started() then
      me = membership.member(node.address)
    else
      me = { address = node.address, status = "up", self = true, incarnation = node.incarnation }
    end
  end
  return moving.hosts(KEY .. name, me)
end

local leaving_now = function() return false end

-- placement(name) -> the type's entry above, made again when it is stale. Callers do not change
-- its lists.
local function placement(name)
  local started = membership.started()
  local p = placements[name]
  if p and p.started == started then return p end
  watch_type(name)
  local list, eligible = find_hosts(name), {}
  for _, m in ipairs(list) do
    if m.status == "up" and not (m.self and leaving_now()) then eligible[#eligible + 1] = m end
  end
  p = { started = started, hosts = list, eligible = eligible, owners = {}, nowners = 0 }
  -- (kept only for a type whose hosts' entries this node follows: another would go stale)
  if watched[name] or not started then placements[name] = p end
  return p
end

-- owner_among(list, name, id) -> the member of `list` (members with an address) that owns the
-- id: the highest hash of (address, type, id). Pure: the same on every node for the same list.
function M.owner_among(list, name, id)
  local best, best_score = nil, -1
  local suffix = "\0" .. key_of(name, id)
  for _, m in ipairs(list) do
    local score = host.hash(m.address .. suffix)
    if score > best_score or (score == best_score and m.address < best.address) then
      best, best_score = m, score
    end
  end
  return best
end

-- owner(name, id [, key]) -> the member that should hold the activation now, or nil. Owners are
-- kept with the type's placement (up to OWNERS_MAX ids, then it starts again): a lookup, where
-- hashing every host would cost a loop on every call (which LuaJIT does not compile into the
-- caller's trace).
local OWNERS_MAX = 16384

local function owner(name, id, k)
  local p = placement(name)
  k = k or key_of(name, id)
  local o = p.owners[k]
  if o == nil then
    o = M.owner_among(p.eligible, name, id) or false
    if p.nowners >= OWNERS_MAX then p.owners, p.nowners = {}, 0 end
    p.owners[k] = o
    p.nowners = p.nowners + 1
  end
  return o or nil
end
M.owner = owner

---------------------------------------------------------------------------
-- Activations
---------------------------------------------------------------------------

-- An activation: { key, name, id, state = waiting | activating | active | passivating, rec, deps,
-- used (ms), epoch }: eight fields, the most a table holds in its smallest hash part but one
-- (256 bytes; nine would take 448, and an idle activation keeps its record). What only some
-- activations have for a while is kept aside: the calls held for one (held_of[a] = { head,
-- tail, [i] = entry }, while there are some), and what waits for a passivation under way to end
-- (waiters_of[a]). An entry: { method, payload, reply_to, hops, expires, held_at }.
local held_of = {}
local waiters_of = {}
local ensure_held_timer -- (below)
local retry_of = {} -- the delay before an activation refused is tried again, while it doubles
local retry_at = {} -- ...and when it may be (ms)
local HELD_STEP = 0.05 -- seconds between pumps of every held queue, while there are some

local poke -- (below)

local function held_count(a)
  local h = held_of[a]
  return h and moving.count(h) or 0
end

local function queue_of(a)
  local h = held_of[a]
  if h == nil then
    h = moving.queue()
    held_of[a] = h
  end
  return h
end

local fail = moving.fail

-- While calls are held anywhere, every queue is pumped every HELD_STEP: a call waits for a link
-- to come up, a hop limit to reset or a retry to come due, with nothing else to wake it, and a
-- queue whose callers all gave up goes (with its record).
local held_timer = nil
local pump -- (below)

local function pump_held()
  held_timer = nil
  local list = {}
  for a in pairs(held_of) do list[#list + 1] = a end
  for _, a in ipairs(list) do
    if acts[a.key] == a then pump(a) else held_of[a] = nil end
  end
  if next(held_of) ~= nil then held_timer = runtime.after_raw(HELD_STEP, pump_held) end
end

function ensure_held_timer()
  if held_timer == nil then held_timer = runtime.after_raw(HELD_STEP, pump_held) end
end

-- fail_held(a, err): every call held for a fails with err
local function fail_held(a, err)
  local h = held_of[a]
  if h == nil then return end
  held_of[a] = nil
  for i = h.head, h.tail do
    if not moving.expired(h[i]) then fail(h[i], err) end
  end
end

local function hold(a, entry)
  if held_count(a) >= M.HOLD_MAX then moving.compact(queue_of(a)) end
  if held_count(a) >= M.HOLD_MAX then
    counters.overflowed = counters.overflowed + 1
    fail(entry, new_error("overloaded", ("%d calls wait for %s %s on this node already")
      :format(M.HOLD_MAX, a.name, tostring(a.id))))
    return
  end
  moving.push(queue_of(a), entry)
  ensure_held_timer()
end

-- The hosts of a type change when a node starts or stops hosting it (its receptionist entry),
-- which may come after the membership change that brought the node: activations are rebalanced
-- on both.
local schedule_rebalance -- (below)

-- (The listing is the node's, not that of the actor whose call happens to come first: a listing
-- made inside an actor ends when that actor stops.)
local nwatched = 0

function watch_type(name)
  if watched[name] or not membership.started() then return end
  -- (types beyond MAX_TYPES that this node does not define are not watched, nor their placement
  -- kept: a node that hears of ever more type names keeps nothing for each)
  if nwatched >= MAX_TYPES and types[name] == nil then return end
  local saved = runtime.set_current(nil)
  local ok, listing = pcall(require("atoll.cluster.receptionist").listing, KEY .. name, function(ev)
    placement_changed()
    if ev.type ~= "snapshot" then schedule_rebalance() end
  end)
  runtime.set_current(saved)
  if not ok then error(listing, 0) end
  watched[name] = listing
  nwatched = nwatched + 1
end

local function activation(name, id, deps, k)
  watch_type(name)
  k = k or key_of(name, id)
  local a = acts[k]
  if a == nil then
    a = { key = k, name = name, id = id, state = "waiting", deps = deps, used = now_ms(), epoch = 0 }
    acts[k] = a
  elseif a.deps == nil then
    a.deps = deps
  end
  return a
end

-- The part of a name before the id, by type and hops, kept: numbers made into strings would cost
-- more than the rest of a forward's name. (Hops are 1 to moving.HOPS_MAX; types are few.)
local heads = {} -- type name -> { [hops] = head }

local function encode_name(hops, name, id)
  local by_hops = heads[name]
  if by_hops == nil then
    if not watched[name] then return PREFIX .. hops .. "/" .. #name .. ":" .. name .. id_text(id) end
    by_hops = {}
    heads[name] = by_hops
  end
  local head = by_hops[hops]
  if head == nil then
    head = PREFIX .. hops .. "/" .. #name .. ":" .. name
    by_hops[hops] = head
  end
  return head .. id_text(id)
end

local function decode_name(full)
  local hops, len, rest = full:sub(#PREFIX + 1):match("^(%d+)/(%d+):(.*)$")
  if hops == nil then return nil end
  len = tonumber(len)
  if len < 1 or len > #rest - 2 then return nil end
  local name, kind, id = rest:sub(1, len), rest:sub(len + 1, len + 1), rest:sub(len + 2)
  if kind == "n" then
    if not id:match("^%-?%d+$") then return nil end
    id = tonumber(id)
  elseif kind ~= "s" then
    return nil
  end
  id = valid_id(id)
  if id == nil or #name > MAX_TYPE then return nil end
  return tonumber(hops), name, id
end

-- Where a message for (name, id), which has no activation here, goes now: "wait", "activate",
-- or an address.
local function destination(name, id, hops, k)
  local o = owner(name, id, k)
  if o == nil then return "wait" end
  if o.self then return "activate" end
  if not moving.may_forward(o, hops) then return "wait" end
  return o.address
end

-- Where a message for activation a goes now: "here", "wait", "activate", "fail", or an address.
local function where(a, hops)
  if downing.status() == "stopped" then return "fail" end
  if a.state == "active" then return "here" end
  if a.state ~= "waiting" then return "wait" end
  return destination(a.name, a.id, hops, a.key)
end


-- Sends a message for (name, id) on to the node at `address`. (No closure in here: LuaJIT does
-- not compile a return past captured locals, and this runs for every call to another node.)
-- A call with deps (the get's, for init) carries them: its method marked with DEPS first, its
-- arguments after them.
local DEPS = "\1"
local relays = 0 -- calls from other nodes relayed and not answered yet (the shutdown waits)

local function relay_ended()
  relays = relays - 1
end

local function with_deps(deps, payload)
  return codec.pack(deps, runtime.open(payload))
end

local function forward(name, id, method, payload, to, hops, address, deps)
  local full = encode_name(hops + 1, name, id)
  counters.forwards = counters.forwards + 1
  if deps ~= nil then
    local packed = with_deps(deps, payload)
    if packed then method, payload = DEPS .. method, packed end
  end
  if type(to) ~= "number" then
    relays = relays + 1
    return moving.relay(address, full, method, payload, to, "virtual relay", relay_ended)
  end
  local ok, err = cluster.route_name(address, full, method, payload, to ~= 0 and to or nil)
  if not ok and to ~= 0 then runtime.fail_call(to, err) end
end

local activate -- (below)

-- Passivation when idle: a timer runs while activations are active, due when the next one would
-- have been idle for its type's idle_timeout.
local sweeper, sweep_due = nil, nil
local sweep -- (below)

local function ensure_sweeper(due_ms)
  if sweeper and sweep_due <= due_ms then return end
  if sweeper then sweeper:cancel() end
  sweep_due = due_ms
  sweeper = runtime.after_raw(math.max(0.01, (due_ms - now_ms()) / 1000), function() sweep() end)
end

-- Sends on what is held for a, in order, as far as it can go now.
function pump(a)
  local h = held_of[a]
  if h then
    moving.pump(h, function(entry)
      local w = where(a, entry[4])
      if w == "activate" then
        if (retry_at[a] or 0) <= now_ms() then activate(a) end
        return nil
      end
      if w ~= "wait" then return w end
    end, function(entry, w)
      if w == "fail" then
        fail(entry, new_error("unreachable", ("%s %s is stopped: this node's side of the cluster has "
          .. "no majority"):format(a.name, tostring(a.id))))
      elseif w == "here" then
        a.used = now_ms()
        runtime.enqueue(a.rec, entry[1], entry[2], entry[3])
      else
        forward(a.name, a.id, entry[1], entry[2], entry[3], entry[4], w, a.deps)
      end
    end)
    -- (what it sent on may have come back here and been held again, in a queue of its own)
    if h.head > h.tail and held_of[a] == h then held_of[a] = nil end
  end
  if a.state == "waiting" and held_count(a) == 0 then
    acts[a.key] = nil
    retry_of[a], retry_at[a] = nil, nil
  end
end

-- Asks every other member that is not down to give up its activation of a: every member, not
-- only the hosts this node knows of (a host that went up a moment ago may not have shown its
-- receptionist entry here yet; a member with no manager hosts nothing). A member that cannot be
-- reached now (a stall, a cut) may hold the activation and serve it again when it comes back:
-- nothing is activated until it answers or is down.
local function others_gave_up(a)
  return moving.ask_all(MANAGER, "claim", CLAIM_TIMEOUT, { unreached = "fail" }, a.name, a.id, node.address)
end

-- The gate of every activation's actor: its messages run while it is the id's activation, active,
-- under this node's lease. One function for all, which finds the activation from the record: a
-- closure per activation would cost an idle one about 100 bytes, this table's slot about 30
-- (finding it by its key instead would cost nothing but a string made for every message).
local activation_of = {} -- rec -> its activation, while it is one

local function gate(rec)
  local a = activation_of[rec]
  return a ~= nil and a.state == "active" and lease.valid()
end

function activate(a)
  if a.state ~= "waiting" then return end
  local t = types[a.name]
  if t == nil or not t.hosted then return end
  a.state = "activating"
  a.epoch = a.epoch + 1
  local epoch = a.epoch
  lease.start()
  runtime.start_root(function()
    local function still()
      local o = owner(a.name, a.id, a.key)
      return a.epoch == epoch and a.state == "activating" and o ~= nil and o.self
        and (downing.strategy() == "off" or downing.status() == "majority")
    end
    if membership.started() then
      if not others_gave_up(a) or not still() then return false end
      local until_ms = lease.confirm_downs()
      if until_ms == nil or not still() then return false end
      if until_ms > now_ms() then
        runtime.sleep((until_ms - now_ms()) / 1000)
        if not still() then return false end
      end
      local deadline = now_ms() + LEASE_WAIT * 1000
      while not lease.valid() do
        if now_ms() > deadline or not still() then return false end
        runtime.sleep(0.005)
      end
      if not still() then return false end
    end
    local ok, ref = pcall(runtime.spawn_with, t.T, { __virtual_id = a.id, __virtual_type = a.name }, a.id, a.deps)
    if not ok then
      log("error", ("%s %s: cannot activate: %s"):format(a.name, tostring(a.id), tostring(ref)))
      return false, "init", ref
    end
    local rec = runtime.record_of(ref)
    if rec == nil then return false, "init", "it stopped in init" end
    -- (init may have waited: a claim or a change of owner meanwhile makes this one void)
    if a.epoch ~= epoch or a.state ~= "activating" then
      runtime.stop_record(rec)
      return false
    end
    runtime.gate(rec, gate)
    activation_of[rec] = a
    a.rec, a.state, a.used = rec, "active", now_ms()
    counters.activations = counters.activations + 1
    ensure_sweeper(a.used + t.idle_timeout * 1000)
    return true
  end, function(ok, res)
    if a.epoch == epoch and a.state == "activating" and not (ok and res[1]) then
      a.state = "waiting"
      if ok and res[2] == "init" then
        -- The type's own init (or recovery) failed: what waited for it fails with that error, and
        -- the next call tries again.
        retry_of[a], retry_at[a] = nil, nil
        fail_held(a, new_error("remote", ("%s %s: init failed: %s"):format(a.name, tostring(a.id),
          tostring(res[3]))))
        poke(a)
        return
      end
      -- (tried again sooner after a membership change: rebalance pokes every waiting id)
      local retry = math.min((retry_of[a] or RETRY / 2) * 2, RETRY_MAX)
      retry_of[a], retry_at[a] = retry, now_ms() + retry * 1000
      runtime.after_raw(retry, function() poke(a) end)
      return
    end
    retry_of[a], retry_at[a] = nil, nil
    poke(a)
  end, "virtual activation")
end

-- Collects activation a after the handlers it runs end: its deactivate hook runs, then it
-- stops; what waited for it is held again (then goes where the id belongs now). done() after.
local function passivate(a, why, done)
  if a.state == "passivating" then
    -- (already under way: told when it ends, like the one that started it)
    if done then
      local w = waiters_of[a] or {}
      w[#w + 1] = done
      waiters_of[a] = w
    end
    return
  end
  if a.state ~= "active" then
    if done then done() end
    return
  end
  waiters_of[a] = nil
  a.state = "passivating"
  a.epoch = a.epoch + 1
  local rec = a.rec
  runtime.hold(rec)
  log("debug", ("%s %s: passivating (%s)"):format(a.name, tostring(a.id), why))
  runtime.when_idle(rec, function()
    local waiting = runtime.take_mailbox(rec)
    local T, state = types[a.name].T, rec[1]
    runtime.start_root(function()
      if type(T.deactivate) == "function" then T.deactivate(state) end
    end, function(ok, res, tb)
      if not ok then
        log("error", ("%s %s: deactivate failed: %s"):format(a.name, tostring(a.id), tostring(tb or res)))
      end
      runtime.stop_record(rec)
      activation_of[rec] = nil
      a.rec = nil
      a.state = "waiting"
      counters.passivations = counters.passivations + 1
      for i = #waiting - 2, 1, -3 do
        moving.push_front(queue_of(a), moving.entry(waiting[i], waiting[i + 1], waiting[i + 2], 0))
      end
      if done then done() end
      local waiters = waiters_of[a]
      waiters_of[a] = nil
      for _, w in ipairs(waiters or {}) do w() end
      poke(a)
    end, "virtual deactivation")
  end)
end
M.passivate = passivate

function poke(a)
  if acts[a.key] ~= a then return end
  pump(a)
end

-- here(ref) -> the plain ref of the id's activation when a call may go straight to it (active on
-- this node, nothing held for it): the call then takes the runtime's local path, its values
-- passed as they are rather than encoded (the same as accept's first case, sooner).
local last_ref, last_key = nil, nil -- (the key here() made, for the route that follows at once)

function here(r)
  local name = rawget(r, "type")
  local t = types[name]
  if t == nil or not t.hosted then return nil end
  local k = key_of(name, rawget(r, "id"))
  local a = acts[k]
  if a and a.state == "active" and held_count(a) == 0 and downing.status() ~= "stopped" then
    a.used = loop_ms() -- (the runtime's clock: no system call per call)
    return a.rec[R_REF]
  end
  last_ref, last_key = r, k
  return nil
end
virtual_ref.here = here

-- A message for (name, id): delivered, forwarded, or held (activating it here if it belongs here).
-- Only a message that must wait here makes an activation record: one for an id of another node
-- goes straight on.
local function accept(name, id, deps, method, payload, to, hops, k)
  if #name > MAX_TYPE then
    -- (a ref decoded from elsewhere: the codec takes names up to 200 bytes)
    return nil, new_error("bad_argument", ("a virtual type's name is 1 to %d bytes, not %d"):format(MAX_TYPE, #name))
  end
  k = k or key_of(name, id)
  local a = acts[k]
  if a and a.state == "active" and held_count(a) == 0 and downing.status() ~= "stopped" then
    a.used = loop_ms()
    runtime.enqueue(a.rec, method, payload, to)
    return true
  end
  if a == nil or held_count(a) == 0 then
    local w
    if downing.status() == "stopped" then
      w = "fail"
    elseif a == nil or a.state == "waiting" then
      w = destination(name, id, hops, k)
    end
    if w == "fail" or (w ~= nil and w ~= "wait" and w ~= "activate") then
      if a and a.state == "waiting" then
        acts[k] = nil
        retry_of[a], retry_at[a] = nil, nil
      end
      if w == "fail" then
        return nil, new_error("unreachable", ("%s %s is stopped: this node's side of the cluster has no "
          .. "majority"):format(name, tostring(id)))
      end
      forward(name, id, method, payload, to, hops, w, deps)
      return true
    end
  end
  a = a or activation(name, id, deps, k)
  hold(a, moving.entry(method, payload, to, hops))
  pump(a)
  return true
end

local function key_made(target)
  local k = rawequal(target, last_ref) and last_key or nil
  last_ref, last_key = nil, nil
  return k
end

M.routes = {
  call = function(target, method, payload, rid)
    return accept(rawget(target, "type"), rawget(target, "id"), rawget(target, "deps"), method, payload, rid, 0,
      key_made(target))
  end,
  send = function(target, method, payload)
    return accept(rawget(target, "type"), rawget(target, "id"), rawget(target, "deps"), method, payload, 0, 0,
      key_made(target))
  end,
}
cluster.route_kind(Ref, M.routes)

-- Names decoded, kept (up to NAMES_MAX, then it starts again): every call from another node
-- comes under one, and decoding it anew takes a pattern match and four new strings.
local NAMES_MAX = 16384
local names, nnames = {}, 0

local function name_parts(full)
  local d = names[full]
  if d == nil then
    local hops, name, id = decode_name(full)
    d = hops and { hops, name, id } or false
    if nnames >= NAMES_MAX then names, nnames = {}, 0 end
    names[full], nnames = d, nnames + 1
  end
  if d then return d[1], d[2], d[3] end
end

cluster.on_named(PREFIX, function(full, method, payload, to)
  local hops, name, id = name_parts(full)
  if hops == nil then
    if to ~= 0 then to:reply(false, new_error("no_such_actor", "no virtual actor named " .. full)) end
    return
  end
  local deps = nil
  if method:byte(1) == 1 then
    -- (a call that carries the deps of its get: they come first among its arguments)
    local unpacked, d, rest = pcall(function(p)
      local function split(first, ...) return first, codec.pack(...) end
      return split(runtime.open(p))
    end, payload)
    if not unpacked or rest == nil then
      if to ~= 0 then to:reply(false, new_error("bad_argument", "a virtual call's deps cannot be read")) end
      return
    end
    deps, payload, method = d, rest, method:sub(2)
  end
  local ok, err = accept(name, id, deps, method, payload, to, hops)
  if not ok and to ~= 0 then to:reply(false, err) end
end)

---------------------------------------------------------------------------
-- The manager: what other nodes ask
---------------------------------------------------------------------------

local Manager = require("atoll.actor").define "atoll.Virtuals"

-- claim(name, id, claimer) -> "done" | "refused": the claimer owns (name, id) in its view; this
-- node gives up its activation of it, unless it owns the id in its own view too.
function Manager.distributed:claim(name, id, claimer)
  id = valid_id(id)
  if type(name) ~= "string" or #name > MAX_TYPE or id == nil or type(claimer) ~= "string" then
    return "refused"
  end
  local a = acts[key_of(name, id)]
  if a == nil or a.state == "waiting" then return "done" end
  local o = owner(name, id)
  if o and o.self then return "refused" end
  if a.state == "activating" then
    -- (the attempt is void: an actor it spawned meanwhile is stopped before it serves)
    a.epoch = a.epoch + 1
    a.state = "waiting"
    return "done"
  end
  local waiter = runtime.waiter()
  passivate(a, claimer .. " owns it", function() waiter:wake() end)
  if a.state ~= "waiting" then waiter:wait(CLAIM_TIMEOUT) end
  if a.state == "waiting" then counters.handoffs = counters.handoffs + 1 end
  return a.state == "waiting" and "done" or "refused"
end

function Manager.distributed:info(name)
  return M.info(name)
end

local function ensure_manager()
  manager = manager or moving.start_manager(Manager, MANAGER, "the virtual actors' manager")
  return manager
end

---------------------------------------------------------------------------
-- Hosting, passivation when idle, rebalancing
---------------------------------------------------------------------------

function sweep()
  sweeper = nil
  local now = now_ms()
  local next_in = nil
  for _, a in pairs(acts) do
    if a.state == "active" then
      local idle = types[a.name].idle_timeout * 1000
      if now - a.used >= idle and held_count(a) == 0 then
        passivate(a, "idle")
      else
        local left = idle - (now - a.used)
        if next_in == nil or left < next_in then next_in = left end
      end
    end
  end
  if next_in then ensure_sweeper(now + next_in) end
end


-- Leaving: every activation here is passivated and what waited for it goes to the id's owner
-- among the members that stay; a hook of the node's graceful shutdown waits for that (and for
-- the calls relayed meanwhile) for up to `seconds`.
local leaving = false
leaving_now = function() return leaving end

function M.shutdown(seconds)
  leaving = true
  placement_changed()
  local deadline = now_ms() + seconds * 1000
  for _, a in pairs(acts) do passivate(a, "this node is leaving") end
  while now_ms() < deadline do
    local pending = false
    for _, a in pairs(acts) do
      pump(a)
      if a.state ~= "waiting" or held_count(a) > 0 then pending = true end
    end
    if not pending and relays == 0 then return true end
    runtime.sleep(0.02)
  end
  return false
end

local shutdown_hooked = false

-- host(T): this node may activate virtual actors of type T (defined with define).
function M.host(T)
  local name = type(T) == "table" and T.__name or T
  local t = types[name]
  if t == nil then error("virtual.host: " .. tostring(name) .. " is not a virtual type (virtual.define)", 2) end
  t.hosted = true
  placement_changed()
  ensure_manager()
  -- (a type with reminders: this node may run the reminders' singleton too)
  if type(t.T.distributed.reminded) == "function" then reminders.host() end
  if not shutdown_hooked then
    shutdown_hooked = true
    require("atoll").on_shutdown(function() M.shutdown(8) end)
  end
  if membership.started() then
    require("atoll.cluster.receptionist").check_in(manager, KEY .. name)
  end
  watch_type(name)
  return T
end

-- Membership changed: activations whose id now belongs elsewhere go there (passivated here
-- first, what waited for them following), and a side without a majority gives up everything.
local function rebalance()
  local stopped = downing.status() == "stopped"
  for _, a in pairs(acts) do
    if a.state == "active" then
      local o = owner(a.name, a.id, a.key)
      if stopped then
        passivate(a, "this node's side of the cluster has no majority")
      elseif o == nil or not o.self then
        counters.handoffs = counters.handoffs + 1
        passivate(a, o and ("it belongs to " .. o.address .. " now") or "no host is up")
      end
    else
      pump(a)
    end
  end
end

local rebalancing = nil

function schedule_rebalance()
  if rebalancing or next(acts) == nil then return end
  rebalancing = runtime.after_raw(0, function()
    rebalancing = nil
    rebalance()
  end)
end

membership.listen(function()
  placement_changed()
  schedule_rebalance()
end)
-- A side that lost its majority passivates everything (and one that got it back activates
-- what is held): the status changes on downing's own clock, not always with a membership change.
downing.on_status(function() schedule_rebalance() end)

lease.use(function()
  for _, a in pairs(acts) do
    if a.state == "active" or a.state == "activating" then return true end
  end
  return false
end, function()
  for _, a in pairs(acts) do
    if a.state == "active" and a.rec then runtime.release(a.rec) end
  end
end)

-- info([name]) -> { types = { name -> { hosted, active } }, counters }
function M.info(name)
  local out = {}
  for n, t in pairs(types) do
    if name == nil or n == name then out[n] = { hosted = t.hosted, active = 0, idle_timeout = t.idle_timeout } end
  end
  for _, a in pairs(acts) do
    if a.state == "active" and out[a.name] then out[a.name].active = out[a.name].active + 1 end
  end
  return { types = out, counters = counters }
end

-- where(name, id) -> this node's view: the owner's address, and whether it is active here
function M.where(name, id)
  local o = owner(name, id)
  local a = acts[key_of(name, id)]
  return o and o.address, a ~= nil and a.state == "active"
end

return M
