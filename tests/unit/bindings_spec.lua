-- What every C module (atoll.c.*) shares: runtime failures as nil, message, kind; options
-- refused with the field's name; handles that close once, and read as closed after.
local atoll = require "atoll"
local async = require "helpers.async"
local tcp = require "atoll.c.tcp"
local fswatch = require "atoll.c.fswatch"
local subprocess = require "atoll.c.subprocess"
local http = require "atoll.c.http"
local transport = require "atoll.c.transport"
local journal = require "atoll.c.journal"
local codec = require "atoll.c.codec"
local swim = require "atoll.c.swim"

-- The failure shape, with the kind it must carry.
local function fails(kind, ok, message, got_kind)
  assert.is_nil(ok)
  assert.equal("string", type(message))
  assert.equal(kind, got_kind)
  return message
end

describe("the C modules", function()
  it("fail at run time with nil, message and a kind", function()
    assert.matches("not an IP address", fails("EINVAL", tcp.connect("not an address", 1, function() end)))
    assert.matches("cannot watch", fails("ENOENT", fswatch.watch("/no/such/dir", function() end)))
    assert.matches("cannot start", fails("ENOENT", subprocess.spawn { file = "/no/such/program" }))
    transport.configure { secret = "the bindings spec" } -- dial needs one; cluster.start sets its own
    assert.matches("expected HOST:PORT", fails("EINVAL", transport.dial("nowhere")))
    assert.matches("unknown journal", fails("EUSAGE", journal.open("nowhere:")))
    local bad, message, kind = codec.encode(function() end)
    fails("ETYPE", bad, message, kind)
  end)

  it("refuse an option naming the field and its range", function()
    local function refused(fn, ...)
      local ok, err = pcall(fn, ...)
      assert.is_false(ok)
      return tostring(err)
    end
    assert.matches("configure: max_frame must be a number from 64 to 1073741824",
      refused(transport.configure, { max_frame = 1 }))
    assert.matches("configure: name must be a string", refused(transport.configure, { name = 7 }))
    assert.matches("listen: header_timeout must be a number",
      refused(http.listen, "127.0.0.1", 0, { header_timeout = "soon" }, function() end))
    assert.matches("limits: max_depth must be a number from 1 to 256",
      refused(codec.limits, { max_depth = 0 }))
    assert.matches("membership: probe_interval must be a number from 0.01 to 60",
      refused(swim.config, { probe_interval = 600 }))
    assert.matches("spawn: on_exit must be a function",
      refused(subprocess.spawn, { file = "/bin/true", on_exit = 1 }))
  end)

  it("hold a handle until it closes, then read it as closed", async(function()
    local events = {}
    local done = atoll.future()
    local held = setmetatable({ assert(http.listen("127.0.0.1", 0, {}, function() end)) },
      { __mode = "v" })
    local port = held[1]:port()
    collectgarbage() -- only the registry holds the server now, while it listens
    assert.is_not_nil(held[1])
    local sock
    sock = assert(tcp.connect("127.0.0.1", port, function(event)
      events[#events + 1] = event
      if event == "connected" then sock:close() end
      if event == "closed" then done:set(true) end
    end))
    done:wait(5)
    assert.same({ "connected", "closed" }, events)
    assert.matches("closed", fails("ENOTCONN", sock:write("late")))
    held[1]:close()
    local s2 = assert(http.listen("127.0.0.1", 0, {}, function() end))
    s2:close()
    assert.has_error(function() s2:port() end, "the HTTP server is closed")
  end))
end)
