-- Lifecycle watch between actors of one node: terminated runs once, unwatch, errors, cleanup.
-- (Watches across nodes, and nodes that go down, are in tests/functional/membership_spec.lua.)
local atoll = require "atoll"
local async = require "helpers.async"
local spec = require "helpers.spec"
local catch, fresh = spec.catch, spec.fresh
local watch = require "atoll.cluster.watch"
local codec = require "atoll.c.codec"

-- A watcher that records what it was told, and wakes a future on each.
local function watcher_type()
  local W = fresh "Watcher"
  function W:init() self.told = {} end
  function W.distributed:watch(ref) return atoll.watch(ref) end
  function W.distributed:unwatch(ref) return atoll.unwatch(ref) end
  function W.distributed:told() return self.told end
  function W:terminated(ref, reason)
    self.told[#self.told + 1] = { ref = ref, reason = reason }
    if self.on_told then self.on_told:set(true) end
  end
  function W.distributed:arm() self.on_told = atoll.future() return true end
  function W.distributed:wait_told(seconds)
    self.on_told:wait(seconds)
    return #self.told
  end
  return W
end

local function pet()
  local P = fresh "Pet"
  function P.distributed:ping() return "pong" end
  function P.distributed:quit() self:stop() end
  return atoll.spawn(P)
end

describe("lifecycle watch", function()
  it("runs the watcher's terminated hook once when the watched actor stops", async(function()
    local w = atoll.spawn(watcher_type())
    local p = pet()
    assert.is_true(w:watch(p))
    assert.is_true(w:watch(p)) -- watching twice is one watch
    w:arm()
    p:quit()
    assert.equal(1, w:wait_told(2))
    local told = w:told()
    assert.equal(p, told[1].ref)
    assert.equal("stopped", told[1].reason)
    -- Nothing more comes.
    atoll.sleep(0.05)
    assert.equal(1, #w:told())
    assert.equal(0, watch.count())
  end))

  it("tells every watcher of an actor", async(function()
    local W = watcher_type()
    local a, b = atoll.spawn(W), atoll.spawn(W)
    local p = pet()
    a:watch(p)
    b:watch(p)
    a:arm()
    b:arm()
    atoll.stop(p)
    assert.equal(1, a:wait_told(2))
    assert.equal(1, b:wait_told(2))
  end))

  it("tells at once about an actor that had already stopped", async(function()
    local w = atoll.spawn(watcher_type())
    local p = pet()
    atoll.stop(p)
    w:arm()
    assert.is_true(w:watch(p))
    assert.equal(1, w:wait_told(2))
    assert.equal("stopped", w:told()[1].reason)
  end))

  it("says nothing after unwatch", async(function()
    local w = atoll.spawn(watcher_type())
    local p = pet()
    w:watch(p)
    assert.is_true(w:unwatch(p))
    assert.is_false(w:unwatch(p))
    assert.equal(0, watch.count())
    atoll.stop(p)
    atoll.sleep(0.05)
    assert.same({}, w:told())
  end))

  it("drops the watches of a watcher that stops", async(function()
    local w = atoll.spawn(watcher_type())
    local p = pet()
    w:watch(p)
    assert.equal(1, watch.count())
    atoll.stop(w)
    assert.equal(0, watch.count())
    assert.equal("pong", p:ping())
  end))

  it("refuses what cannot work, saying why", async(function()
    local p = pet()
    -- not from inside an actor of a type with the hook
    local NoHook = fresh "NoHook"
    function NoHook.distributed:watch(ref) return atoll.watch(ref) end
    local err = catch(atoll.spawn(NoHook).watch, atoll.spawn(NoHook), p)
    assert.matches("needs a terminated%(ref, reason%) hook", tostring(err))
    local w = atoll.spawn(watcher_type())
    assert.matches("expected an actor ref", tostring(catch(w.watch, w, "not a ref")))
    assert.matches("cannot watch itself", tostring(catch(w.watch, w, w)))
    -- an actor of another node, while this node does not listen
    local elsewhere = codec.make_ref("127.0.0.1:1", 12345, 1)
    if atoll.node().address == "" then
      assert.matches("needs this node to listen", tostring(catch(w.watch, w, elsewhere)))
    end
  end))

  it("logs an error in a terminated hook and keeps the watcher running", async(function()
    local W = fresh "Clumsy"
    function W.distributed:watch(ref) return atoll.watch(ref) end
    function W.distributed:ping() return "still here" end
    function W:terminated() error("oops in the hook") end
    local w = atoll.spawn(W)
    local p = pet()
    w:watch(p)
    local logs = require "helpers.logs"
    local out = logs(function()
      atoll.stop(p)
      atoll.sleep(0.05)
    end)
    assert.matches("error in terminated%(%): .*oops in the hook", out)
    assert.equal("still here", w:ping())
  end))
end)
