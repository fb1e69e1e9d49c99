-- Virtual actors on one node: activation on the first call with the id and deps, one activation
-- per id, passivation when idle (deactivate first) and activation again on the next call, a
-- persistent type's state across passivations, and rendezvous placement as a pure function.
-- Between nodes: tests/functional/virtual_spec.lua.
local atoll = require "atoll"
local persistence = require "atoll.persistence"
local virtual = require "atoll.cluster.virtual"
local async = require "helpers.async"
local spec = require "helpers.spec"
local wait = require "helpers.wait"

spec.journal("virtual", setup, teardown)

local started, deactivated = {}, {}

local function counter_type(name, opts, persistent)
  local C = atoll.actor.define(name, persistent and { persistent = true } or nil)
  function C:init(id, deps)
    self.id, self.deps, self.n = id, deps, 0
    started[#started + 1] = name .. ":" .. tostring(id)
  end
  function C:apply(e) self.n = self.n + e.k end
  function C.distributed:add(k)
    if persistent then self:emit { k = k } else self.n = self.n + k end
    return self.n
  end
  function C.distributed:whoami() return { id = self.id, deps = self.deps, vid = virtual.id(self) } end
  function C:deactivate() deactivated[#deactivated + 1] = name .. ":" .. tostring(self.id) .. ":" .. self.n end
  virtual.define(C, opts)
  virtual.host(C)
  return C
end

local function count(list, item)
  local n = 0
  for _, v in ipairs(list) do
    if v == item then n = n + 1 end
  end
  return n
end

describe("virtual actors on one node", function()
  it("activate on the first call, with the id and the deps of the get that activates", async(function()
    local T = counter_type("VCounter")
    local a = atoll.virtual.get("VCounter", "ann", { team = "fish" })
    assert.same({ id = "ann", deps = { team = "fish" }, vid = "ann" }, a:whoami())
    assert.equal(1, count(started, "VCounter:ann"))
    -- Another get names the same activation: deps are not part of the name.
    local again = atoll.virtual.get(T, "ann")
    assert.equal(5, again:add(5))
    assert.equal(7, a:add(2))
    assert.is_true(a == again)
    assert.equal(1, count(started, "VCounter:ann"))
    -- Numbers and strings are different ids.
    assert.equal(1, atoll.virtual.get(T, 42):add(1))
    assert.equal(1, atoll.virtual.get(T, "42"):add(1))
  end))

  it("keep one activation per id under many concurrent first calls", async(function()
    counter_type("VMany")
    local done = 0
    for k = 1, 200 do
      atoll.task(function()
        atoll.virtual.get("VMany", k % 10):add(1)
        done = done + 1
      end)
    end
    wait.retry(function() return done == 200 end, 5, "the calls to be answered")
    for id = 0, 9 do
      assert.equal(1, count(started, "VMany:" .. id))
      assert.equal(21, atoll.virtual.get("VMany", id):add(1))
    end
  end))

  it("passivate when idle, running deactivate first, and activate again on the next call", async(function()
    counter_type("VIdle", { idle_timeout = 0.1 })
    local v = atoll.virtual.get("VIdle", "bob")
    assert.equal(3, v:add(3))
    wait.retry(function() return count(deactivated, "VIdle:bob:3") == 1 end, 3, "the idle activation to go")
    assert.equal(0, virtual.info("VIdle").types.VIdle.active)
    -- Not persistent: a new activation starts from its init.
    assert.equal(1, v:add(1))
    assert.equal(2, count(started, "VIdle:bob"))
  end))

  it("recover a persistent type's state in a new activation, under virtual/TYPE/sID", async(function()
    counter_type("VKept", { idle_timeout = 0.1 }, true)
    local v = atoll.virtual.get("VKept", "cat")
    assert.equal(4, v:add(4))
    wait.retry(function() return count(deactivated, "VKept:cat:4") == 1 end, 3, "the idle activation to go")
    assert.equal(6, v:add(2))
    assert.equal(2, #persistence.events("virtual/VKept/scat"))
  end))

  it("refuse bad ids and types that are not virtual", function()
    assert.has_error(function() atoll.virtual.get("VCounter", "") end)
    assert.has_error(function() atoll.virtual.get("VCounter", 1.5) end)
    assert.has_error(function() atoll.virtual.get("VCounter", {}) end)
    assert.has_error(function() virtual.host(spec.fresh "NotVirtual") end)
  end)
end)

describe("rendezvous placement", function()
  local function members(n)
    local list = {}
    for i = 1, n do list[i] = { address = "10.0.0." .. i .. ":7000" } end
    return list
  end

  it("spreads ids evenly and moves about 1/N of them when a member joins", function()
    local three, four = members(3), members(4)
    local per, moved = {}, 0
    local N = 10000
    for id = 1, N do
      local o3 = virtual.owner_among(three, "Player", id).address
      per[o3] = (per[o3] or 0) + 1
      local o4 = virtual.owner_among(four, "Player", id).address
      if o3 ~= o4 then
        moved = moved + 1
        assert.equal(four[4].address, o4) -- ids only move to the new member
      end
    end
    for _, m in ipairs(three) do
      assert.is_true(math.abs(per[m.address] - N / 3) < N * 0.03, "uneven: " .. per[m.address])
    end
    assert.is_true(math.abs(moved - N / 4) < N * 0.03, "moved " .. moved)
    -- The same answer whatever the order of the list.
    local reversed = { three[3], three[2], three[1] }
    for id = 1, 100 do
      assert.equal(virtual.owner_among(three, "Player", id).address,
        virtual.owner_among(reversed, "Player", id).address)
    end
  end)
end)

describe("virtual refs through the codec", function()
  it("decode equal to the get they name, and their calls reach the virtual actor", async(function()
    local codec = require "atoll.c.codec"
    local E = atoll.actor.define "VCodecEcho"
    function E.distributed:hello(who) return "hello " .. who .. " from " .. tostring(virtual.id(self)) end
    virtual.define(E)
    virtual.host(E)
    local back = codec.decode(assert(codec.encode(virtual.get("VCodecEcho", 9, { some = "deps" }))))
    assert.equal(virtual.Ref, getmetatable(back))
    assert.is_true(back == virtual.get("VCodecEcho", 9))
    assert.equal("hello ann from 9", back:hello("ann"))
    -- and as an argument of a local call, a copy the callee can call
    local Greeter = atoll.actor.define "VCodecGreeter"
    function Greeter.distributed:greet(r, who) return r:hello(who) end
    assert.equal("hello bob from 9", atoll.spawn(Greeter):greet(virtual.get("VCodecEcho", 9), "bob"))
  end))
end)

-- The reminders' bookkeeping (lib/atoll/cluster/reminders.lua): when a spec is due, and what
-- each journaled event does to the state a recovery rebuilds. (In this file: busted loads the
-- actor types of a module once per process.)
local reminders = require "atoll.cluster.reminders"
local heap = require "atoll.util.heap"

local R = reminders.Reminders

local function fresh_reminders()
  return { r = {}, count = 0, fired = 0, queue = heap.new() }
end

describe("reminders", function()
  it("read when as seconds from now, at, after, or every", function()
    local now = 1000000
    assert.same({ now + 1500 }, { reminders.when(1.5, "t", now) })
    assert.same({ 2000000 }, { reminders.when({ at = 2000 }, "t", now) })
    assert.same({ now + 250 }, { reminders.when({ after = 0.25 }, "t", now) })
    assert.same({ now + 60000, 60000 }, { reminders.when({ every = 60 }, "t", now) })
    assert.same({ now + 5000, 60000 }, { reminders.when({ after = 5, every = 60 }, "t", now) })
  end)

  it("refuse a malformed when with the caller's mistake named", function()
    local function err(when)
      local ok, e = pcall(reminders.when, when, "remind")
      assert.is_false(ok)
      return tostring(e)
    end
    assert.matches("say when", err({}))
    assert.matches("not both", err({ at = 1, after = 2 }))
    assert.matches("every is at least 1", err({ every = 0.01 }))
    assert.matches("after is not negative", err(-1))
    assert.matches("is a number", err({ after = "soon" }))
    assert.matches("is a number", err({ at = 0 / 0 }))
    assert.matches("when is seconds", err("tomorrow"))
    assert.has_error(function() reminders.check_name("", "remind") end)
    assert.has_error(function() reminders.check_name(("x"):rep(201), "remind") end)
  end)

  it("rebuild the same state from the events, firing each due once", function()
    local s = fresh_reminders()
    R.apply(s, { "set", "Player", "ann", "turn", 5000 })
    R.apply(s, { "set", "Player", 7, "tick", 3000, 1000 })
    R.apply(s, { "set", "Player", "7", "tick", 4000 })
    assert.equal(3, s.count)
    assert.equal(3000, (s.queue:peek()))
    -- a periodic one moves on to its next due; the string id "7" is another actor
    R.apply(s, { "fired", "Player", 7, "tick", 3000, 4000 })
    assert.equal(4000, s.r[reminders.key_of("Player", 7, "tick")][4])
    assert.equal(3, s.count)
    -- a firing of a due that is no longer there (set again meanwhile) changes nothing
    R.apply(s, { "set", "Player", "ann", "turn", 9000 })
    R.apply(s, { "fired", "Player", "ann", "turn", 5000 })
    assert.equal(9000, s.r[reminders.key_of("Player", "ann", "turn")][4])
    -- a one-off that fired is gone; so is a forgotten one
    R.apply(s, { "fired", "Player", "7", "tick", 4000 })
    R.apply(s, { "forget", "Player", 7, "tick" })
    assert.equal(1, s.count)
    assert.equal(9000, (s.queue:peek()))
    assert.equal(2, s.fired)
    -- a snapshot restores the same reminders
    local t = fresh_reminders()
    R.restore(t, R.snapshot(s))
    assert.equal(1, t.count)
    assert.equal(9000, (t.queue:peek()))
    assert.equal(2, t.fired)
  end)

  it("keep integer ids above 1e14 apart", function()
    assert.is_not.equal(reminders.key_of("T", 2 ^ 53, "n"), reminders.key_of("T", 2 ^ 53 - 1, "n"))
  end)
end)

-- Edges the review of issue 13 found (each failed before its fix).
local edge_started = {}

local function edge_counter(name, init_fn)
  local C = atoll.actor.define(name)
  function C:init(id, deps)
    edge_started[#edge_started + 1] = name .. ":" .. tostring(id)
    self.n = 0
    if init_fn then init_fn(self, id, deps) end
  end
  function C.distributed:add(k) self.n = self.n + k return self.n end
  function C.distributed:whoami() return { id = virtual.id(self), n = self.n } end
  virtual.define(C)
  virtual.host(C)
  return C
end

local function edge_count(prefix)
  local n = 0
  for _, x in ipairs(edge_started) do if x == prefix then n = n + 1 end end
  return n
end

describe("virtual actors, at their edges,", function()
  -- 0 and -0 are the same Lua number (equal refs, same table key, same bytes on the wire),
  -- but key_of formats them "n0" and "n-0": two activations, two placements, two streams.
  it("0 and -0 name one actor", async(function()
    edge_counter("VRZero")
    local zero, negzero = virtual.get("VRZero", 0), virtual.get("VRZero", -0)
    assert.is_true(zero == negzero)
    assert.equal(1, zero:add(1))
    assert.equal(2, negzero:add(1))
    assert.equal(1, edge_count("VRZero:0"))
  end))

  -- an activation whose init raises: each held call waits for its whole timeout and fails
  -- with `timeout`, while the node retries init every 0.05..0.5 s; the caller never learns why.
  it("a call to an actor whose init raises fails at once with init's error", async(function()
    edge_counter("VRBadInit", function() error("no such player in the database") end)
    local t0 = atoll.now()
    local ok, err = pcall(function() return virtual.get("VRBadInit", "x", nil, 2):add(1) end)
    assert.is_false(ok)
    assert.matches("no such player", tostring(err))
    assert.is_true(atoll.now() - t0 < 1, ("failed after %.2f s"):format(atoll.now() - t0))
  end))

  -- the key of an activation is TYPE .. "\0" .. kind .. ID, so a type name with a NUL
  -- ("A\0sx", a name get() and the codec accept) collides with another type's id: the call to
  -- (A\0sx, "y") runs on the activation of (VRColl, "x\0sy")... when the type is "VRColl\0sx".
  it("a type name with a NUL does not reach another type's activation", async(function()
    edge_counter("VRColl")
    local a = virtual.get("VRColl", "x\0sy")
    assert.equal(1, a:add(1))
    local other = virtual.get("VRColl\0sx", "y", nil, 0.5) -- no such type anywhere
    local ok, res = pcall(function() return other:whoami() end)
    -- expected: no activation to run it (timeout, or an error naming the type); got: VRColl x\0sy's
    assert.is_false(ok, "the call ran on " .. (ok and tostring(res.id) or "?"))
  end))
end)

describe("virtual actors, persistent,", function()
  -- README: "42" and 42 are two actors; but the default persistence id is
  -- "virtual/TYPE/" .. ID for both (virtual.lua:108), so the two share one journal stream: each
  -- recovers the other's events, and two activations of it at once conflict.
  it("keep the histories of the ids 42 and \"42\" apart", async(function()
    local C = atoll.actor.define("VRPersist", { persistent = true })
    function C:init() self.n = 0 end
    function C:apply(e) self.n = self.n + e.k end
    function C.distributed:add(k) self:emit { k = k } return self.n end
    virtual.define(C)
    virtual.host(C)
    assert.equal(5, virtual.get("VRPersist", 42):add(5))
    assert.equal(1, virtual.get("VRPersist", "42"):add(1))
  end))
end)

describe("virtual refs", function()
  -- (the fields of a ref would hide such methods: define refuses them)
  it("refuse a virtual type with a distributed method named id, type, deps or timeout", function()
    local C = atoll.actor.define("VRNamed")
    function C.distributed:id() return "the id method" end
    local ok, err = pcall(virtual.define, C)
    assert.is_false(ok)
    assert.matches("distributed id, a name its refs keep", tostring(err))
  end)

  -- a deactivate that raises is logged, and the id activates again on the next call
  it("survive a deactivate that raises", async(function()
    local C = atoll.actor.define("VRBadDeact")
    function C:init() self.n = 0 end
    function C.distributed:add(k) self.n = self.n + k return self.n end
    function C:deactivate() error("cannot save") end
    virtual.define(C, { idle_timeout = 0.05 })
    virtual.host(C)
    assert.equal(1, virtual.get("VRBadDeact", 1):add(1))
    atoll.sleep(0.3)
    assert.equal(0, virtual.info("VRBadDeact").types.VRBadDeact.active)
    assert.equal(1, virtual.get("VRBadDeact", 1):add(1))
  end))
end)

describe("reminders, at their edges,", function()
  local function fresh_state() return { r = {}, count = 0, fired = 0, queue = heap.new() } end

  -- the reminder key is TYPE\0 kindID \0 NAME: id "a\0b" + name "c" and id "a" + name
  -- "b\0c" are one key, so setting one replaces the other actor's reminder (ids and names are
  -- any bytes, 1 to 200).
  it("keep reminders of two actors apart whatever bytes their ids and names hold", function()
    local s = fresh_state()
    R.apply(s, { "set", "Player", "a\0b", "c", 5000 })
    R.apply(s, { "set", "Player", "a", "b\0c", 6000 })
    assert.equal(2, s.count)
    assert.is_not.equal(reminders.key_of("Player", "a\0b", "c"), reminders.key_of("Player", "a", "b\0c"))
  end)

  -- when() checks at/after/every are finite seconds, but their milliseconds may not be:
  -- { at = 1e306 } gives an infinite due, which the singleton's set then refuses as a
  -- "bad_request" naming none of the caller's arguments.
  it("refuse a when whose due is not a finite number of milliseconds", function()
    local ok, due = pcall(reminders.when, { at = 1e306 }, "remind", 0)
    assert.is_false(ok, "when gave due " .. tostring(due))
  end)
end)
