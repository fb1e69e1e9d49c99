-- The watchdog: handlers that do not return, and actors that take all the memory, against real
-- nodes. A node reports a long handler, interrupts a stuck one, ends itself when it cannot, and
-- bounds its Lua heap.
local atoll = require "atoll"
local async = require "helpers.async"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local cluster = require "atoll.cluster"

local APP = "tests/functional/apps/stuck.lua"

local function start(...)
  local p, address = nodes.start("stuck", { ... }, { app = APP })
  return p, nodes.named(address, "stuck", 10), address
end

-- The error a call raised: its kind and message.
local function failure(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected the call to fail")
  return atoll.errors.kind(err), tostring(err.message or err)
end

describe("the watchdog", function()
  before_each(function() nodes.self() end)

  it("logs a handler that runs past the warn limit, and only reports one that ends", async(function()
    local p, stuck = start("--watchdog", "warn=0.3,interrupt=0,exit=0")
    assert.equal("done", stuck:work(1.2))
    p:expect("Stuck#%d+%.work has run for 0%.3 s without returning: the node's loop is blocked", 5,
      "stderr")
    p:expect("Stuck#%d+%.work finished after 1%.%d s", 5, "stderr")
    assert.equal("pong", stuck:ping())
    assert.equal(0, node.stop(p))
    assert.not_matches("interrupting", p:stderr())
  end, 30))

  it("interrupts a handler stuck in a compiled loop with an `interrupted` error; the node goes on",
    async(function()
      local p, stuck = start("--watchdog", "warn=0.2,interrupt=0.5,exit=20")
      local t0 = atoll.now()
      local kind, message = failure(stuck.spin, stuck)
      assert.equal("interrupted", kind)
      assert.matches("Stuck#%d+%.spin ran for 0%.%d s without returning and was interrupted", message)
      assert.is_true(atoll.now() - t0 < 3, "took " .. (atoll.now() - t0) .. " s")
      p:expect("interrupting Stuck#%d+%.spin after 0%.%d s", 5, "stderr")
      -- The node serves the next call, and the next stuck one is interrupted too.
      assert.equal("pong", stuck:ping())
      assert.equal("interrupted", (failure(stuck.spin, stuck)))
      assert.equal("pong", stuck:ping())
      assert.equal(0, node.stop(p))
      node.assert_clean(p)
    end, 30))

  it("logs a task interrupted while nothing waited for it", async(function()
    local p, stuck = start("--watchdog", "warn=0.2,interrupt=0.5,exit=20")
    assert.equal("started", stuck:spin_task())
    p:expect("interrupting Stuck#%d+%.task after 0%.%d s", 5, "stderr")
    stuck:collect()
    p:expect("Stuck#%d+: a task failed and nothing waited for it: interrupted: Stuck#%d+%.task ran for", 5,
      "stderr")
    assert.equal("pong", stuck:ping())
  end, 30))

  it("names the code that is stuck where it is: an actor's init, not the caller that spawned it",
    async(function()
      local p, stuck = start("--watchdog", "warn=0.2,interrupt=0.5,exit=20")
      local kind, message = failure(stuck.spawn_spinner, stuck)
      assert.equal("interrupted", kind)
      assert.matches("Spinner#%d+%.init ran for 0%.%d s without returning", message)
      p:expect("Spinner#%d+%.init has run for 0%.2 s", 5, "stderr")
      assert.equal("pong", stuck:ping())
    end, 30))

  it("ends the node with code 5 when a handler keeps the loop blocked past the exit limit",
    async(function()
      local p, _, address = start("--watchdog", "warn=0.2,interrupt=0.3,exit=1.5")
      cluster.send_name(address, "stuck", "stubborn") -- it catches every interrupt and loops on
      local code = p:wait(10)
      assert.equal(5, code)
      local err = p:stderr()
      assert.matches("interrupting Stuck#%d+%.stubborn", err)
      assert.matches("Stuck#%d+%.stubborn has kept the loop blocked for 1%.%d s %(%-%-watchdog exit=1%.5%): "
        .. "exiting with code 5", err)
    end, 30))

  it("lets a second SIGTERM end a node whose loop is blocked", async(function()
    local p, _, address = start("--watchdog", "warn=0.2,interrupt=0,exit=0")
    cluster.send_name(address, "stuck", "spin")
    p:expect("Stuck#%d+%.spin has run for", 5, "stderr")
    p:kill("SIGTERM")
    atoll.sleep(0.2) -- the first one cannot be served: the loop is blocked
    p:kill("SIGTERM")
    local t0 = atoll.now()
    local code = p:wait(5)
    assert.equal(143, code)
    assert.is_true(atoll.now() - t0 < 1)
    assert.matches("SIGTERM again: stopping now", p:stderr())
  end, 30))

  it("fails a handler that allocates past --max-heap with kind `memory`; the node goes on",
    async(function()
      local p, stuck = start("--max-heap", "64M")
      local kind, message = failure(stuck.hog, stuck)
      assert.equal("memory", kind)
      assert.matches("the node's Lua heap reached its ceiling of 64 MiB %(%-%-max%-heap%) while "
        .. "Stuck#%d+%.hog was running", message)
      p:expect("the Lua heap crossed its ceiling of 64 MiB %(%-%-max%-heap%); Stuck#%d+%.hog failed with "
        .. "`memory`; after a full collection it holds [%d%.]+ MiB %(what was running then may not be "
        .. "what holds the memory%); the largest actors: ", 5, "stderr")
      assert.equal("pong", stuck:ping())
      -- The ceiling holds again after the first time.
      assert.equal("memory", (failure(stuck.hog, stuck)))
      assert.equal("pong", stuck:ping())
      assert.equal(0, node.stop(p))
      node.assert_clean(p)
    end, 60))

  it("ends the node with code 6 when live data keeps the heap over --max-heap, naming the largest actors",
    async(function()
      local p, stuck = start("--max-heap", "64M")
      local kind = failure(stuck.hoard, stuck)
      assert.equal("memory", kind)
      assert.equal(6, p:wait(10))
      local err = p:stderr()
      assert.matches("after a full collection the Lua heap still holds [%d%.]+ MiB of its 64 MiB ceiling "
        .. "%(%-%-max%-heap%); Stuck#%d+%.hoard failed with `memory`: live data fills it, so the node "
        .. "exits with code 6", err)
      assert.matches("the largest actors[^:]*: Stuck#%d+ ~[%d%.]+ MiB", err)
    end, 60))

  it("crosses --max-heap from compiled code without crashing: the handler fails, then the node exits with 6",
    async(function()
      -- LuaJIT cannot raise an out-of-memory error from a trace: this crashed the node.
      local p, stuck = start("--max-heap", "64M")
      assert.equal(40960, stuck:keep(40))
      local kind = failure(stuck.keep, stuck, 40)
      assert.equal("memory", kind)
      assert.equal(6, p:wait(10))
      assert.matches("live data fills it, so the node exits with code 6", p:stderr())
    end, 60))

  it("refuses bad --watchdog and --max-heap values with a usage error", async(function()
    local code, _, err = node.exec({ "run", APP, "--watchdog", "warn=x" })
    assert.equal(2, code)
    assert.matches("%-%-watchdog wants KEY=SECONDS pairs", err)
    code, _, err = node.exec({ "run", APP, "--watchdog", "nap=1" })
    assert.equal(2, code)
    assert.matches("unknown watchdog setting 'nap'", err)
    code, _, err = node.exec({ "run", APP, "--max-heap", "lots" })
    assert.equal(2, code)
    assert.matches("%-%-max%-heap wants a size such as 512M", err)
    code, _, err = node.exec({ "run", APP, "--max-heap", "1M" })
    assert.equal(2, code)
    assert.matches("at least 16M", err)
  end))
end)
