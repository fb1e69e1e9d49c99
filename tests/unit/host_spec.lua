-- The host bindings the runtime stands on: clocks, logging, the loop.
local host = require "atoll.c.host"
local atoll = require "atoll"

describe("host", function()
  it("has a version and a random incarnation", function()
    assert.matches("^%d+%.%d+%.%d+$", host.version)
    local inc = host.incarnation()
    assert.is_true(inc > 0 and inc < 2 ^ 52 and inc == math.floor(inc))
    assert.equal(inc, atoll.node().incarnation)
  end)

  it("reads monotonic clocks", function()
    local a = host.hrtime()
    local b = host.hrtime()
    assert.is_true(b >= a)
    assert.is_true(host.update_time() >= host.now() - 1)
  end)

  it("validates log levels", function()
    local old = atoll.log.level()
    assert.equal("warn", atoll.log.level("warn"))
    assert.is_false(atoll.log.enabled("info"))
    assert.is_true(atoll.log.enabled("error"))
    atoll.log.level(old)
    assert.has_error(function() atoll.log.level("loud") end)
  end)

  it("reports the resident set size and the executable", function()
    assert.is_true(host.rss() > 1e6)
    assert.matches("atoll$", host.exepath())
  end)
end)
