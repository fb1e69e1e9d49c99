-- The receptionist on one node: check in and out, lookup, listings, stopped actors, limits, bad input.
-- (Replication between nodes is in tests/functional/receptionist_spec.lua; the ordering rules of a
-- replica in tests/unit/replica_spec.lua.)
local atoll = require "atoll"
local codec = require "atoll.c.codec"
local async = require "helpers.async"
local spec = require "helpers.spec"
local capture = require "helpers.logs"
local catch, fresh = spec.catch, spec.fresh
local r = atoll.receptionist
local receptionist = require "atoll.cluster.receptionist"

local function guest()
  local G = fresh "Guest"
  function G.distributed:ping() return "pong" end
  function G.distributed:quit() self:stop() end
  return atoll.spawn(G)
end

-- An actor that listens to a key and keeps its events; sync() returns them once every event
-- queued before the call has run (messages keep their order).
local function listener(key)
  local L = fresh "Listener"
  function L:init()
    self.events = {}
    self.sub = r.listing(key, function(ev)
      local refs = ev.refs and #ev.refs or nil
      self.events[#self.events + 1] = { type = ev.type, key = ev.key, ref = ev.ref, refs = refs }
    end)
  end
  function L.distributed:events() return self.events end
  function L.distributed:cancel() self.sub:cancel() end
  return atoll.spawn(L)
end

local n = 0
local function key(name)
  n = n + 1
  return name .. "-" .. n
end

describe("the receptionist on one node", function()
  it("lists actors under keys, finds them by key, and checks them out", async(function()
    local k, other = key("room"), key("hall")
    local a, b = guest(), guest()
    assert.same({}, r.lookup(k))
    assert.is_true(r.check_in(b, k))
    assert.is_true(r.check_in(a, k))
    assert.is_true(r.check_in(a, k)) -- again: nothing changes
    assert.is_true(r.check_in(a, other))
    assert.same({ a, b }, r.lookup(k)) -- by node, then actor id
    assert.same({ a }, r.lookup(other))
    assert.is_true(r.check_out(a, k))
    assert.is_false(r.check_out(a, k))
    assert.same({ b }, r.lookup(k))
    assert.same({ a }, r.lookup(other))
    assert.equal("pong", r.lookup(other)[1]:ping())
  end))

  it("checks an actor that stops out of every key", async(function()
    local k1, k2 = key("a"), key("b")
    local a, b = guest(), guest()
    local own = r.stats().own
    r.check_in(a, k1)
    r.check_in(a, k2)
    r.check_in(b, k2)
    assert.equal(own + 3, r.stats().own)
    a:quit()
    assert.same({}, r.lookup(k1))
    assert.same({ b }, r.lookup(k2))
    assert.equal(own + 1, r.stats().own)
    atoll.stop(b)
    assert.same({}, r.lookup(k2))
    assert.equal(own, r.stats().own)
  end))

  it("gives a listing its snapshot first, then every change in order, as messages of its actor",
    async(function()
      local k = key("lobby")
      local a, b = guest(), guest()
      r.check_in(a, k)
      local l = listener(k)
      r.check_in(b, k)
      r.check_out(a, k)
      r.check_in(a, k)
      r.check_in(a, key("elsewhere")) -- another key: not told
      atoll.stop(b)
      local ev = l:events()
      assert.same({ type = "snapshot", key = k, refs = 1 }, ev[1])
      local seen = {}
      for i = 2, #ev do seen[#seen + 1] = ev[i].type .. " " .. (ev[i].ref == a and "a" or "b") end
      assert.same({ "added b", "removed a", "added a", "removed b" }, seen)
      -- Cancelled: nothing more.
      l:cancel()
      r.check_out(a, k)
      assert.equal(#ev, #l:events())
    end))

  it("ends a listing when its actor stops", async(function()
    local k = key("gone")
    local told = 0
    local L = fresh "Short"
    function L:init() r.listing(k, function() told = told + 1 end) end
    function L.distributed:ping() return true end
    local l = atoll.spawn(L)
    l:ping()
    assert.equal(1, told) -- the snapshot
    atoll.stop(l)
    r.check_in(guest(), k)
    atoll.sleep(0.01)
    assert.equal(1, told)
  end))

  it("refuses bad keys, other nodes' actors and stopped actors", async(function()
    local a = guest()
    for _, bad in ipairs { "", ("k"):rep(201), 7, true } do
      local err = catch(r.check_in, a, bad)
      assert.equal("bad_argument", err.kind)
      assert.matches("check_in: the key must be a string of 1 to 200 bytes", err.message)
      assert.equal("bad_argument", catch(r.lookup, bad).kind)
      assert.equal("bad_argument", catch(r.listing, bad, function() end).kind)
    end
    assert.is_true(r.check_in(a, ("k"):rep(200)))
    assert.equal("bad_argument", catch(r.check_in, "a ref", "k").kind)
    assert.equal("bad_argument", catch(r.listing, "k", "not a function").kind)
    local far = codec.make_ref("10.0.0.1:7000", 42, 1)
    local err = catch(r.check_in, far, "k")
    assert.equal("bad_argument", err.kind)
    assert.matches("check in an actor on its own node", err.message)
    assert.equal("bad_argument", catch(r.check_out, far, "k").kind)
    atoll.stop(a)
    err = catch(r.check_in, a, "k")
    assert.equal("no_such_actor", err.kind)
    assert.is_false(r.check_out(a, "k"))
  end))

  it("refuses check-ins past the limit with overloaded", async(function()
    local limit = receptionist.limits.entries
    local k = key("full")
    local ok, err = pcall(function()
      receptionist.limits.entries = r.stats().own + 2
      local a, b, c = guest(), guest(), guest()
      assert.is_true(r.check_in(a, k))
      assert.is_true(r.check_in(b, k))
      assert.is_true(r.check_in(b, k)) -- listed already: fine
      assert.equal("overloaded", catch(r.check_in, c, k).kind)
      r.check_out(a, k)
      assert.is_true(r.check_in(c, k))
      atoll.stop(b)
      atoll.stop(c)
    end)
    receptionist.limits.entries = limit
    assert(ok, err)
  end))

  it("holds 100,000 entries of its own and lists them", async(function()
    assert.equal(100000, receptionist.limits.entries)
    local G = fresh "Many"
    local refs, k = {}, key("many")
    local room = receptionist.limits.entries - r.stats().own -- earlier specs' actors may still be listed
    local t0 = atoll.now()
    for i = 1, room do
      refs[i] = atoll.spawn(G)
      r.check_in(refs[i], k)
    end
    local took = atoll.now() - t0
    assert.equal(room, #r.lookup(k))
    assert.equal(100000, r.stats().own)
    assert.equal("overloaded", catch(r.check_in, guest(), key("one more")).kind)
    for i = 1, room do atoll.stop(refs[i]) end
    assert.same({}, r.lookup(k))
    assert.is_true(took < 10, "100,000 check-ins took " .. took .. " s")
  end, 60))

  it("refuses garbage from other nodes without raising, and says so once", async(function()
    local Node = require "atoll.cluster.node"
    local node = atoll.spawn(Node)
    local before = r.stats().refused
    local log = capture(function()
      atoll.send(node, "reception_change", 42, 1, 1, "add", "k")
      atoll.send(node, "reception_change", ("x"):rep(100000), 1, 1, "add", "k")
      atoll.send(node, "reception_set", "10.0.0.1:7000", "one", 1, 1, 1, {})
      atoll.send(node, "reception_digest", nil, nil, nil)
      atoll.send(node, "reception_pull", {}, 1)
      node:ping() -- after the sends: they have run
    end)
    assert.equal(before + 5, r.stats().refused)
    assert.equal(1, select(2, log:gsub("warn receptionist: refused", "")), log)
    assert.equal(4, select(2, log:gsub("debug receptionist: refused", "")), log)
    assert.is_nil(log:find("error"), log)
    -- Well-formed messages from a node that is not a member are ignored.
    local ignored = r.stats().ignored
    atoll.send(node, "reception_change", "10.0.0.1:7000", 1, 1, "add", "k", codec.make_ref("10.0.0.1:7000", 1, 1),
      "Guest")
    node:ping()
    assert.equal(ignored + 1, r.stats().ignored)
    assert.same({}, r.lookup("k"))
    atoll.stop(node)
  end))
end)
