-- `atoll run --watch`: a module rewritten while calls flow reloads without losing a call.
local async = require "helpers.async"
local node = require "helpers.node"
local tmp = require "helpers.tmp"

-- The counter under test; `version` and `step` vary between rewrites.
local function counter(version, extra)
  return ([[
local actor = require "atoll.actor"
local Counter = actor.define "Counter"
Counter.version = %d
function Counter:init() self.count = 0 end
function Counter.distributed:add(k) self.count = self.count + k; return self.count end
function Counter.distributed:version() return Counter.version end
function Counter.distributed:count() return self.count end
%s
return Counter
]]):format(version, extra or "")
end

-- Eight callers call add(1) back to back and count their successes and
-- failures; a status line every 20 ms; on SIGTERM they stop and the app
-- prints the final tally against the counter's own count.
local APP = [[
local atoll = require "atoll"
local c = atoll.spawn("counter")
local calls, failures, running = 0, 0, true
local callers = {}
for i = 1, 8 do
  callers[i] = atoll.task(function()
    while running do
      local ok, err = pcall(c.add, c, 1)
      if ok then calls = calls + 1 else
        failures = failures + 1
        io.stderr:write("call failed: " .. tostring(err) .. "\n")
      end
      if calls % 50 == 0 then atoll.yield() end
    end
  end)
end
atoll.every(0.02, function()
  print(("status version=%d calls=%d failures=%d"):format(c:version(), calls, failures))
end)
atoll.on_shutdown(function()
  running = false
  for _, t in ipairs(callers) do t:wait(5) end
  print(("final calls=%d count=%d failures=%d version=%d"):format(calls, c:count(), failures, c:version()))
end)
]]

describe("atoll run --watch", function()
  local dir
  before_each(function() dir = tmp.dir("watch") end)
  after_each(function()
    node.cleanup()
    tmp.remove(dir)
  end)

  local function start()
    tmp.write(dir .. "/counter.lua", counter(1))
    tmp.write(dir .. "/app.lua", APP)
    local p = node.start { "run", "--watch", dir .. "/app.lua" }
    p:expect("^status version=1 calls=%d+ failures=0$", 5)
    return p
  end

  local function status_with(p, pattern)
    return p:expect("^status " .. pattern, 5)
  end

  it("reloads a rewritten module while calls flow: state kept, no call lost or failed", async(function()
    local p = start()
    tmp.replace(dir .. "/counter.lua", counter(2))
    status_with(p, "version=2 calls=%d+ failures=0$")
    tmp.write(dir .. "/counter.lua", counter(3)) -- written in place, not renamed
    status_with(p, "version=3 calls=%d+ failures=0$")
    assert.equal(0, node.stop(p))
    local _, calls, count, failures = p:stdout():match("(final calls=(%d+) count=(%d+) failures=(%d+))")
    assert.truthy(calls, p:stdout())
    assert.equal(calls, count)
    assert.equal("0", failures)
    assert.is_true(tonumber(calls) > 100, "only " .. calls .. " calls")
    assert.matches("reloaded counter %(.*counter%.lua%)", p:stderr())
    node.assert_clean(p)
  end))

  it("keeps the old code running when the new file is broken, and says where", async(function()
    local p = start()
    tmp.replace(dir .. "/counter.lua", counter(2) .. "\nthis is not lua\n")
    p:expect("reload of counter failed, old code kept: .*counter%.lua:%d+:", 5, "stderr")
    -- the old code goes on answering, and a fixed file is picked up
    status_with(p, "version=1 calls=%d+ failures=0$")
    tmp.replace(dir .. "/counter.lua", counter(4))
    status_with(p, "version=4 calls=%d+ failures=0$")
    assert.equal(0, node.stop(p))
    local calls, count = p:stdout():match("final calls=(%d+) count=(%d+) failures=0")
    assert.equal(calls, count)
  end))

  it("runs migrate once per live actor, and keeps the old code if it raises", async(function()
    local p = start()
    tmp.replace(dir .. "/counter.lua", counter(2, [[
function Counter:migrate(old)
  error("migration refused from version " .. old.version)
end]]))
    p:expect("reload of counter failed, old code kept: .*migration refused from version 1", 5, "stderr")
    status_with(p, "version=1 ")
    tmp.replace(dir .. "/counter.lua", counter(3, [[
function Counter:migrate(old)
  self.count = self.count + 1000000
end]]))
    status_with(p, "version=3 ")
    assert.equal(0, node.stop(p))
    local calls, count = p:stdout():match("final calls=(%d+) count=(%d+) failures=0")
    assert.equal(tonumber(calls) + 1000000, tonumber(count))
  end))
end)
