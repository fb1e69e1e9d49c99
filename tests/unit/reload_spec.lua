-- Hot reload inside one node: new code for live actors, state kept, failures rolled back.
local atoll = require "atoll"
local async = require "helpers.async"
local capture = require "helpers.logs"
local tmp = require "helpers.tmp"

local dir
local serial = 0

-- Writes a module that defines actor type `name` with a version marker.
local function counter_source(name, version, extra)
  return ([[
local actor = require "atoll.actor"
local C = actor.define "%s"
C.version = %d
function C:init(n) self.n = n or 0 end
function C.distributed:add(k) self.n = self.n + k; return self.n end
function C.distributed:version() return C.version end
%s
return C
]]):format(name, version, extra or "")
end

local function new_module(version, extra)
  serial = serial + 1
  local mod = "reload_counter_" .. serial
  local name = "ReloadCounter" .. serial
  tmp.write(dir .. "/" .. mod .. ".lua", counter_source(name, version, extra))
  return mod, name
end

local function rewrite(mod, name, version, extra)
  tmp.replace(dir .. "/" .. mod .. ".lua", counter_source(name, version, extra))
end

describe("hot reload", function()
  local old_path
  setup(function()
    dir = tmp.dir("reload")
    old_path = package.path
    package.path = dir .. "/?.lua;" .. package.path
  end)
  teardown(function()
    package.path = old_path
    tmp.remove(dir)
  end)

  it("runs new code from the next message and keeps state", async(function()
    local mod, name = new_module(1)
    local a = atoll.spawn(mod, 10)
    local b = atoll.spawn(mod, 20)
    assert.equal(1, a:version())
    assert.equal(11, a:add(1))
    rewrite(mod, name, 2, [[function C.distributed:double() self.n = self.n * 2; return self.n end]])
    local ok, ev = atoll.reload(mod)
    assert.is_true(ok, tostring(ev))
    assert.equal(mod, ev.module)
    assert.equal(2, a:version())
    assert.equal(22, a:double())
    assert.equal(40, b:double())
    -- new actors get the new code too, and the type is the same table
    assert.equal(2, atoll.spawn(mod):version())
    assert.equal(require(mod), atoll.actor.types[name])
  end))

  it("loses no message and handles none twice while calls flow", async(function()
    local mod, name = new_module(1)
    local c = atoll.spawn(mod, 0)
    local stop = false
    local callers = {}
    for k = 1, 8 do
      callers[k] = atoll.task(function()
        local calls = 0
        while not stop do
          c:add(1)
          calls = calls + 1
        end
        return calls
      end)
    end
    for v = 2, 6 do
      atoll.sleep(0.005)
      rewrite(mod, name, v)
      assert.is_true((atoll.reload(mod)))
    end
    stop = true
    local total = 0
    for _, t in ipairs(callers) do total = total + t:wait(5) end
    assert.equal(total, c:add(0)) -- every call counted exactly once
    assert.equal(6, c:version())
  end))

  it("keeps the old code when the new file does not compile", async(function()
    local mod = new_module(1)
    local c = atoll.spawn(mod, 5)
    tmp.replace(dir .. "/" .. mod .. ".lua", "local x = = 1\n")
    local ok, err
    local log = capture(function() ok, err = atoll.reload(mod) end)
    assert.is_false(ok)
    assert.matches(mod .. "%.lua:1:", err)
    assert.matches("error reload: reload of " .. mod .. " failed, old code kept: .*" .. mod .. "%.lua:1:", log)
    assert.equal(1, c:version())
    assert.equal(6, c:add(1))
  end))

  it("keeps the old code when loading the new file raises", async(function()
    local mod, name = new_module(1)
    local c = atoll.spawn(mod, 5)
    rewrite(mod, name, 2, [[error("refusing to load")]])
    local ok, err
    capture(function() ok, err = atoll.reload(mod) end)
    assert.is_false(ok)
    assert.matches("refusing to load", err)
    assert.equal(1, c:version())
  end))

  it("refuses new code that drops a type live actors use", async(function()
    local mod = new_module(1)
    local c = atoll.spawn(mod)
    tmp.replace(dir .. "/" .. mod .. ".lua", counter_source("SomethingElse" .. serial, 2))
    local ok, err
    capture(function() ok, err = atoll.reload(mod) end)
    assert.is_false(ok)
    assert.matches("no longer defines", err)
    assert.equal(1, c:version())
  end))

  it("runs migrate once per live actor, with the old code's fields", async(function()
    local mod, name = new_module(1)
    local a = atoll.spawn(mod, 1)
    local b = atoll.spawn(mod, 2)
    rewrite(mod, name, 2, [[
function C:migrate(old)
  self.migrations = (self.migrations or 0) + 1
  self.from = old.version
  self.n = self.n * 100
end
function C.distributed:info() return self.n, self.migrations, self.from end
]])
    assert.is_true((atoll.reload(mod)))
    local n, m, from = a:info()
    assert.same({ 100, 1, 1 }, { n, m, from })
    n, m = b:info()
    assert.same({ 200, 1 }, { n, m })
  end))

  it("rolls every actor back when a migrate raises", async(function()
    local mod, name = new_module(1)
    local a = atoll.spawn(mod, 1)
    local b = atoll.spawn(mod, 2)
    rewrite(mod, name, 2, [[
function C:migrate()
  self.n = -1
  self.extra = { touched = true }
  if self.n == -1 and self.fail then error("cannot migrate this one") end
end
]])
    -- make exactly one of them fail
    local Poke = atoll.actor.define("Poke" .. serial)
    function Poke.distributed:noop() end
    b:add(0)
    atoll.actor.types[name].distributed.mark = function(self) self.fail = true end
    atoll.call(b, "mark")
    atoll.actor.types[name].distributed.mark = nil
    local ok, err
    local log = capture(function() ok, err = atoll.reload(mod) end)
    assert.matches("reload_counter_%d+%.lua:%d+: cannot migrate this one", log)
    assert.is_false(ok)
    assert.matches("migrate raised", err)
    assert.matches("cannot migrate this one", err)
    assert.equal(1, a:version())
    assert.equal(1, a:add(0))
    assert.equal(2, b:add(0))
    assert.is_nil(atoll.actor.types[name].migrate)
  end))

  it("refuses a migrate that tries to suspend", async(function()
    local mod, name = new_module(1)
    local c = atoll.spawn(mod, 3)
    rewrite(mod, name, 2, [[function C:migrate() atoll_sleep_probe(0.01) end]])
    _G.atoll_sleep_probe = atoll.sleep
    local ok, err
    capture(function() ok, err = atoll.reload(mod) end)
    _G.atoll_sleep_probe = nil
    assert.is_false(ok)
    assert.matches("migrate raised", err)
    assert.equal(1, c:version())
    assert.equal(3, c:add(0))
  end))

  it("tells listeners about each attempt", async(function()
    local mod, name = new_module(1)
    atoll.spawn(mod)
    local events = {}
    local fn = atoll.on_reload(function(ev) events[#events + 1] = ev end)
    capture(function()
      rewrite(mod, name, 2)
      atoll.reload(mod)
      tmp.replace(dir .. "/" .. mod .. ".lua", "syntax error here")
      atoll.reload(mod)
    end)
    require("atoll.reload").remove_listener(fn)
    assert.equal(2, #events)
    assert.is_true(events[1].ok)
    assert.equal(mod, events[1].module)
    assert.is_false(events[2].ok)
    assert.matches(mod .. "%.lua:1:", events[2].error)
  end))

  it("says so when the module is unknown", function()
    local ok, err = atoll.reload("never_loaded_module")
    assert.is_false(ok)
    assert.matches("no actor module named never_loaded_module", err)
  end)
end)
