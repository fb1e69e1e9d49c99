-- Review repros (branch vreview): defects of virtual actors on one node. Each `it` FAILS on the
-- code as it is and passes once the defect is fixed.
local atoll = require "atoll"
local virtual = require "atoll.cluster.virtual"
local reminders = require "atoll.cluster.reminders"
local heap = require "atoll.util.heap"
local async = require "helpers.async"
local persistence = require "atoll.persistence"
local tmp = require "helpers.tmp"

local dir
setup(function()
  dir = tmp.dir("vreview")
  -- (busted runs every unit spec in one process: another may have opened the journal already)
  pcall(persistence.configure, { journal = "sqlite:" .. dir .. "/journal.db" })
end)
teardown(function() tmp.remove(dir) end)

local started = {}

local function counter(name, init_fn)
  local C = atoll.actor.define(name)
  function C:init(id, deps)
    started[#started + 1] = name .. ":" .. tostring(id)
    self.n = 0
    if init_fn then init_fn(self, id, deps) end
  end
  function C.distributed:add(k) self.n = self.n + k return self.n end
  function C.distributed:whoami() return { id = virtual.id(self), n = self.n } end
  virtual.define(C)
  virtual.host(C)
  return C
end

local function count(prefix)
  local n = 0
  for _, s in ipairs(started) do if s == prefix then n = n + 1 end end
  return n
end

describe("virtual review repros (one node)", function()
  -- D1: 0 and -0 are the same Lua number (equal refs, same table key, same bytes on the wire),
  -- but key_of formats them "n0" and "n-0": two activations, two placements, two streams.
  it("0 and -0 name one actor", async(function()
    counter("VRZero")
    local zero, negzero = virtual.get("VRZero", 0), virtual.get("VRZero", -0)
    assert.is_true(zero == negzero)
    assert.equal(1, zero:add(1))
    assert.equal(2, negzero:add(1)) -- fails: 1, a second activation
    assert.equal(1, count("VRZero:0"))
  end))

  -- D2: an activation whose init raises: each held call waits for its whole timeout and fails
  -- with `timeout`, while the node retries init every 0.05..0.5 s; the caller never learns why.
  it("a call to an actor whose init raises fails at once with init's error", async(function()
    counter("VRBadInit", function() error("no such player in the database") end)
    local t0 = atoll.now()
    local ok, err = pcall(function() return virtual.get("VRBadInit", "x", nil, 2):add(1) end)
    assert.is_false(ok)
    assert.matches("no such player", tostring(err)) -- fails: "timeout ..."
    assert.is_true(atoll.now() - t0 < 1, ("failed after %.2f s"):format(atoll.now() - t0))
  end))

  -- D3: the key of an activation is TYPE .. "\0" .. kind .. ID, so a type name with a NUL
  -- ("A\0sx", a name get() and the codec accept) collides with another type's id: the call to
  -- (A\0sx, "y") runs on the activation of (VRColl, "x\0sy")... when the type is "VRColl\0sx".
  it("a type name with a NUL does not reach another type's activation", async(function()
    counter("VRColl")
    local a = virtual.get("VRColl", "x\0sy")
    assert.equal(1, a:add(1))
    local other = virtual.get("VRColl\0sx", "y", nil, 0.5) -- no such type anywhere
    local ok, res = pcall(function() return other:whoami() end)
    -- expected: no activation to run it (timeout, or an error naming the type); got: VRColl x\0sy's
    assert.is_false(ok, "the call ran on " .. (ok and tostring(res.id) or "?"))
  end))
end)

describe("virtual review repros (persistent)", function()
  -- D15: README: "42" and 42 are two actors; but the default persistence id is
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
    assert.equal(1, virtual.get("VRPersist", "42"):add(1)) -- fails: conflict, or 6 (the number's history)
  end))
end)

describe("virtual review repros (refs)", function()
  -- D13: a ref is { type, id, deps, timeout } with the methods behind __index: a virtual type's
  -- distributed method named id, type, deps or timeout cannot be called through a ref (nothing
  -- says those names are taken).
  it("call a distributed method named id through a ref", async(function()
    local C = atoll.actor.define("VRNamed")
    function C.distributed:id() return "the id method" end
    virtual.define(C)
    virtual.host(C)
    local ok, res = pcall(function() return virtual.get("VRNamed", 5):id() end)
    assert.is_true(ok, tostring(res)) -- fails: attempt to call method 'id' (a number value)
    assert.equal("the id method", res)
  end))

  -- sound: a deactivate that raises is logged, and the id activates again on the next call
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

describe("reminders review repros", function()
  local R = reminders.Reminders
  local function fresh() return { r = {}, count = 0, fired = 0, queue = heap.new() } end

  -- D4: the reminder key is TYPE\0 kindID \0 NAME: id "a\0b" + name "c" and id "a" + name
  -- "b\0c" are one key, so setting one replaces the other actor's reminder (ids and names are
  -- any bytes, 1 to 200).
  it("keep reminders of two actors apart whatever bytes their ids and names hold", function()
    local s = fresh()
    R.apply(s, { "set", "Player", "a\0b", "c", 5000 })
    R.apply(s, { "set", "Player", "a", "b\0c", 6000 })
    assert.equal(2, s.count) -- fails: 1, the first actor's reminder is gone
    assert.is_not.equal(reminders.key_of("Player", "a\0b", "c"), reminders.key_of("Player", "a", "b\0c"))
  end)

  -- D14: when() checks at/after/every are finite seconds, but their milliseconds may not be:
  -- { at = 1e306 } gives an infinite due, which the singleton's set then refuses as a
  -- "bad_request" naming none of the caller's arguments.
  it("refuse a when whose due is not a finite number of milliseconds", function()
    local ok, due = pcall(reminders.when, { at = 1e306 }, "remind", 0)
    assert.is_false(ok, "when gave due " .. tostring(due)) -- fails: due = inf
  end)
end)
