-- Timers: sleep, after, every, cancellation; the heap under them.
local atoll = require "atoll"
local Heap = require "atoll.util.heap"
local async = require "helpers.async"
local capture = require "helpers.logs"

describe("timers", function()
  it("sleep suspends for at least the time asked", async(function()
    local t0 = atoll.now()
    atoll.sleep(0.03)
    local took = atoll.now() - t0
    assert.is_true(took >= 0.03, "woke after " .. took)
    assert.is_true(took < 0.5, "woke after " .. took)
  end))

  it("after runs once, later; cancel stops it", async(function()
    local fired, cancelled = atoll.future(), false
    atoll.after(0.01, function() fired:set(atoll.now()) end)
    local t = atoll.after(0.01, function() cancelled = true end)
    assert.is_true(t:cancel())
    assert.is_false(t:cancel())
    fired:wait(1)
    atoll.sleep(0.02)
    assert.is_false(cancelled)
  end))

  it("every repeats until cancelled, without drifting", async(function()
    local ticks = {}
    local done = atoll.future()
    local t
    t = atoll.every(0.005, function()
      ticks[#ticks + 1] = atoll.now()
      if #ticks == 10 then
        t:cancel()
        done:set(true)
      end
    end)
    done:wait(2)
    local span = ticks[10] - ticks[1]
    assert.is_true(span >= 0.045 - 0.002, "span " .. span)
    assert.is_true(span < 0.5, "span " .. span)
    atoll.sleep(0.02)
    assert.equal(10, #ticks)
  end))

  it("runs timer callbacks as the actor that set them", async(function()
    local T = atoll.actor.define "TimerOwner"
    local seen = atoll.future()
    function T.distributed:arm() atoll.after(0.001, function() seen:set(atoll.self()) end) end
    local r = atoll.spawn(T)
    r:arm()
    assert.equal(r, seen:wait(1))
  end))

  it("fire in deadline order", async(function()
    local order = {}
    local done = atoll.future()
    for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
      atoll.after(d, function()
        order[#order + 1] = d
        if #order == 3 then done:set(true) end
      end)
    end
    done:wait(1)
    assert.same({ 0.01, 0.02, 0.03 }, order)
  end))

  it("keep firing while a busy node misses their deadlines", async(function()
    -- Every message below burns 2 ms, so deadlines are overdue whenever the
    -- loop gets to them: they must fire late, not never.
    local T = atoll.actor.define "Hog"
    function T.distributed:burn()
      local t0 = atoll.now()
      while atoll.now() - t0 < 0.002 do end
    end
    local hog = atoll.spawn(T)
    local running = true
    for _ = 1, 2 do
      atoll.task(function() while running do hog:burn() end end)
    end
    local ticks, done = 0, atoll.future()
    local t
    t = atoll.every(0.001, function()
      ticks = ticks + 1
      if ticks == 10 then
        t:cancel()
        done:set(true)
      end
    end)
    for _ = 1, 10 do
      local once = atoll.future()
      atoll.after(0.0005, function() once:set(true) end)
      once:wait(2)
    end
    done:wait(3)
    running = false
    assert.equal(10, ticks)
  end))

  it("refuse negative or non-numeric times", async(function()
    assert.has_error(function() atoll.sleep(-1) end)
    assert.has_error(function() atoll.after("soon", print) end)
    assert.has_error(function() atoll.every(0, print) end)
  end))

  it("a failing callback is logged and the timer's actor goes on", async(function()
    local T = atoll.actor.define "TimerFailure"
    local fired = atoll.future()
    function T.distributed:arm()
      atoll.after(0, function()
        fired:set(true)
        error("timer boom")
      end)
    end
    function T.distributed:ping() return "pong" end
    local r = atoll.spawn(T)
    local log = capture(function()
      r:arm()
      fired:wait(1) -- resumes after the failing callback has been logged
      assert.equal("pong", r:ping())
    end)
    assert.matches("error TimerFailure#%d+: error in timer callback: .*timer_spec%.lua:%d+: timer boom", log)
  end))
end)

describe("futures and tasks", function()
  it("wait returns the value, to every waiter", async(function()
    local f = atoll.future()
    local a = atoll.task(function() return f:wait(1) + 1 end)
    local b = atoll.task(function() return f:wait(1) + 2 end)
    atoll.yield()
    f:set(10)
    assert.equal(11, a:wait(1))
    assert.equal(12, b:wait(1))
    assert.equal(10, f:wait())
  end))

  it("wait raises a failure, or a timeout", async(function()
    local f = atoll.future()
    f:fail("nope")
    assert.has_error(function() f:wait() end, "nope")
    local g = atoll.future()
    local ok, err = pcall(g.wait, g, 0.01)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.has_error(function() f:set(1) end)
  end))

  it("a task that raises fails its future with a traceback", async(function()
    local t = atoll.task(function() error("task boom") end)
    local ok, err = pcall(t.wait, t, 1)
    assert.is_false(ok)
    assert.matches("task boom", err)
    assert.matches("traceback", err)
  end))
end)

describe("heap", function()
  it("pops in deadline order and removes any item", function()
    local h = Heap.new()
    local items = {}
    for i = 1, 200 do
      items[i] = { i = i }
      h:push((i * 7919) % 211, items[i])
    end
    for i = 1, 200, 3 do assert.is_true(h:remove(items[i])) end
    assert.is_false(h:remove(items[1]))
    local last, count = -1, 0
    while h:size() > 0 do
      local d, item = h:pop()
      assert.is_true(d >= last)
      assert.is_true(item.i % 3 ~= 1)
      last, count = d, count + 1
    end
    assert.equal(200 - 67, count)
    assert.is_nil(h:pop())
  end)
end)
