-- A singleton on one node: calls made while no host runs it are held, in order, up to the
-- bound (past it, `overloaded` at once), each within its own timeout, and delivered once a host
-- starts it. (Between nodes: tests/functional/singleton_spec.lua and splitbrain_spec.lua.)
local atoll = require "atoll"
local async = require "helpers.async"
local spec = require "helpers.spec"
local wait = require "helpers.wait"
local catch, fresh = spec.catch, spec.fresh
local singleton = require "atoll.cluster.singleton"

local n = 0
local function name(what)
  n = n + 1
  return what .. "-" .. n
end

-- This node's view of singleton s (`atoll singletons`' row).
local function info(s)
  for _, i in ipairs(singleton.info()) do
    if i.name == s then return i end
  end
end

-- A counter type that records the order of the calls it serves.
local function counter_type()
  local C = fresh "Counter"
  function C:init() self.seen = {} end
  function C.distributed:add(k)
    self.seen[#self.seen + 1] = k
    return #self.seen
  end
  function C.distributed:seen() return self.seen end
  return C
end

describe("a singleton on one node", function()
  it("holds the calls made before a host runs it, in order, and delivers them when one does",
    async(function()
      local s = name("late")
      local ref = atoll.singleton.ref(s, 5)
      local answers, order = {}, {}
      for k = 1, 20 do
        atoll.task(function() answers[k] = ref:add(k) end)
      end
      atoll.sleep(0.1)
      assert.same({}, answers) -- held: nobody hosts it yet
      assert.equal(20, info(s).held)
      atoll.singleton.host(s, counter_type())
      wait.retry(function() return #answers == 20 end, 5, "the held calls to be answered")
      for k = 1, 20 do order[k] = k end
      assert.same(order, ref:seen())
    end))

  it("refuses calls past 2,048 held with overloaded, at once, and keeps the others", async(function()
    local s = name("full")
    local ref = atoll.singleton.ref(s, 10)
    local ok, failed, kinds = 0, 0, {}
    local t0 = atoll.now()
    for k = 1, singleton.HOLD_MAX + 50 do
      atoll.task(function()
        local good, err = pcall(ref.add, ref, k)
        if good then
          ok = ok + 1
        else
          failed = failed + 1
          kinds[atoll.errors.kind(err)] = (kinds[atoll.errors.kind(err)] or 0) + 1
        end
      end)
    end
    wait.retry(function() return failed == 50 end, 5, "50 calls refused")
    assert.same({ overloaded = 50 }, kinds)
    assert.is_true(atoll.now() - t0 < 2, "the refusals did not come at once")
    atoll.singleton.host(s, counter_type())
    wait.retry(function() return ok == singleton.HOLD_MAX end, 10, "the held calls to be answered")
    assert.equal(singleton.HOLD_MAX, #ref:seen())
    assert.equal(50, info(s).overflowed)
    assert.equal(0, info(s).held)
  end, 30))

  it("fails a held call when its own timeout runs out, and never delivers it afterwards", async(function()
    local s = name("patient")
    local short = atoll.singleton.ref(s, 0.2)
    local t0 = atoll.now()
    local err = catch(short.add, short, "late")
    assert.equal("timeout", err.kind)
    assert.is_true(atoll.now() - t0 < 1)
    atoll.singleton.host(s, counter_type())
    local ref = atoll.singleton.ref(s, 5)
    assert.equal(1, ref:add("on time"))
    assert.same({ "on time" }, ref:seen())
  end))
  it("does not count calls whose callers gave up toward the bound", async(function()
    local s = name("expired")
    local long = atoll.singleton.ref(s, 30)
    local short = atoll.singleton.ref(s, 0.2)
    local first
    atoll.task(function() first = long:add("first") end)
    local timeouts = 0
    for k = 1, singleton.HOLD_MAX - 1 do
      atoll.task(function()
        local ok, err = pcall(short.add, short, k)
        if not ok and atoll.errors.kind(err) == "timeout" then timeouts = timeouts + 1 end
      end)
    end
    wait.retry(function() return timeouts == singleton.HOLD_MAX - 1 end, 5, "the short calls to time out")
    -- One call waits; new ones are held, not refused.
    local later = {}
    for k = 1, 10 do atoll.task(function() later[k] = long:add("later " .. k) end) end
    atoll.sleep(0.05)
    assert.equal(11, info(s).held)
    assert.equal(0, info(s).overflowed)
    atoll.singleton.host(s, counter_type())
    wait.retry(function() return first ~= nil and #later == 10 end, 5, "the held calls to be answered")
    assert.equal(1, first)
    assert.equal(11, #long:seen())
  end))

  it("refuses requests of its manager that do not come from a live host, and garbage", async(function()
    local s = name("guarded")
    local ref = atoll.singleton.host(s, counter_type())
    assert.equal(1, ref:add(1))
    local manager = atoll.whereis("atoll.singletons")
    -- Nobody at that address hosts it: the instance keeps running, its state too.
    assert.equal("refused", manager:release(s, "127.0.0.1:9", -1))
    assert.equal("refused", manager:release(s, "127.0.0.1:9", 1))
    assert.equal("refused", manager:release(s, 42, 1))
    assert.equal(2, ref:add(1))
    local lease = require "atoll.cluster.lease"
    assert.is_false(lease.confirm { 1, 2, 3 })
    assert.is_false(lease.confirm { { "127.0.0.1:9" } })
    assert.is_false(lease.confirm "nonsense")
    manager:released(s, "127.0.0.1:9", "x")
    lease.ack("x", 1, "ok")
    lease.ask(1, "127.0.0.1:9", "x")
    assert.equal(3, ref:add(1))
    assert.equal(s, info(s).name)
    assert.is_true(info(s).running)
  end))
end)
