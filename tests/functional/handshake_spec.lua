-- Connections that have not authenticated yet: a flood of stalled handshakes does not keep peers out.
local atoll = require "atoll"
local cluster = require "atoll.cluster"
local process = require "atoll.process"
local tcp = require "atoll.tcp"
local async = require "helpers.async"
local node = require "helpers.node"
local nodes = require "helpers.cluster"

-- flood(address, count, from) -> the flooder: `count` connections from the
-- local address `from`, each sending a frame header announcing an 80-byte
-- hello and one byte of it, then nothing; reopened as the node closes them.
local function flood(address, count, from, sources)
  local port = address:match(":(%d+)$")
  local f = assert(process.spawn { "node", "tests/js/stall-handshakes.mjs", port, tostring(count), from,
    tostring(sources or 1) })
  f:expect("^flooding$", 10)
  return f
end

-- Stops the flooder; returns how many connections it opened and saw closed.
local function stop_flood(f)
  f:kill("SIGTERM")
  f:wait(5)
  local opened, closed = f:stdout():match('"opened":(%d+),"closed":(%d+)')
  return tonumber(opened) or 0, tonumber(closed) or 0
end

-- n pings from the command line, one every `every` seconds: each a new
-- process, so a new connection and a new handshake. -> how many were
-- answered, and a report of the others.
local function pings(address, n, every)
  local answered, failures, t0 = 0, {}, atoll.now()
  for i = 1, n do
    local code, out, err = node.exec({ "call", "--node", address, "--timeout", "5", "atoll.node", "ping" },
      { env = { ATOLL_SECRET = nodes.secret }, timeout = 15 })
    if code == 0 and out:find("pong", 1, true) then
      answered = answered + 1
    else
      failures[#failures + 1] = ("ping %d: exit %s: %s"):format(i, tostring(code), err)
    end
    local wait = t0 + i * every - atoll.now()
    if wait > 0 then atoll.sleep(wait) end
  end
  return answered, ("%d of %d pings answered\n%s"):format(answered, n, table.concat(failures))
end

-- The node's WARN lines: how many, and how many of them are about unauthenticated connections.
local function warnings(p)
  local all, shedding = 0, {}
  for line in p:stderr():gmatch("[^\n]+") do
    if line:find(" WARN ", 1, true) then
      all = all + 1
      if line:find("unauthenticated connections", 1, true) then shedding[#shedding + 1] = line end
    end
  end
  return all, shedding
end

describe("connections that have not authenticated", function()
  before_each(function() nodes.self() end)

  for _, case in ipairs {
    -- more than the node takes at once (1024, or a quarter of its descriptors):
    -- the address holding the most connections loses its oldest
    { from = "127.0.0.2", what = "another address, more than the node holds,",
      count = function(max) return max + 200 end },
    -- fewer: each is shed once it has had a quarter of a second to send its hello
    { from = "127.0.0.1", what = "the callers' own address",
      count = function(max) return math.min(300, max - 32) end },
    -- more than the node holds, from as many addresses, one connection each: among
    -- addresses holding as many, a connection without a hello goes first, the oldest
    -- first, so a peer whose hello was read goes last
    { from = "127.0.1.1", what = "as many addresses as the node holds and more, one each,",
      count = function(max) return max + 76 end, sources = function(max) return max + 76 end,
      spread = true },
  } do
    it("cannot keep peers out: while stalled handshakes from " .. case.what
      .. " are reopened as they close, every call gets through", async(function()
      -- The node sums up what it sheds every 2 s (apps/flooded.lua), not every 10 s.
      local a, addr = nodes.start("flooded", nil, { app = "tests/functional/apps/flooded.lua" })
      -- How many the node holds at once: 1024, unless it has few descriptors.
      local stats = nodes.named(addr, "atoll.node"):info().transport
      local max = stats and stats.max_unauthenticated or 1024
      local count = case.count(max)
      local f = flood(addr, count, case.from, case.sources and case.sources(max))
      local t0 = atoll.now()
      local answered, report = pings(addr, 15, 0.35)
      -- and calls from this process, over a new link dialed during the flood
      cluster.link_to(addr):close("replaced during the flood")
      while cluster.link_to(addr) do atoll.sleep(0.01) end -- until the cluster module has let go
      local ok, info = pcall(function()
        assert(cluster.connect(addr, 5))
        assert.equal("pong", nodes.named(addr, "atoll.node"):ping())
        return nodes.named(addr, "atoll.node"):info()
      end)
      local seconds = atoll.now() - t0
      local opened, closed = stop_flood(f)
      assert.equal(15, answered, report)
      assert(ok, info)
      -- The flood went on all along: the node shed it, and counted what it shed.
      assert.is_true(seconds >= 5, "the flood lasted " .. seconds .. " s")
      assert.is_true(closed >= count,
        ("the node closed %d of the %d connections the flooder opened"):format(closed, opened))
      stats = info.transport
      assert(stats, "the node reports no transport stats")
      assert.is_true(stats.evicted + stats.timed_out >= count,
        ("evicted %d, timed out %d"):format(stats.evicted, stats.timed_out))
      -- It logged a warning when shedding began and a summary every 2 s, naming
      -- the flood's source: not a line per connection.
      local all, shedding = warnings(a)
      local most = #shedding > 1 and shedding[2]:match("most from (%S+);")
      assert.is_true(#shedding >= 2 and #shedding <= 2 + math.ceil(seconds / 2) and all == #shedding,
        ("%d warnings, %d about shedding, in %.1f s:\n%s"):format(all, #shedding, seconds, a:stderr()))
      -- (From many addresses, one each, no address sent most of it.)
      if not case.spread then assert.equal(case.from, most, shedding[2]) end
    end))
  end

  it("refuses a hello whose identity holds a control character, and forges no log line with it",
    async(function()
      -- MessagePack by hand: the nonce must be binary, which the codec never makes
      local function str(v) return (#v < 32 and string.char(0xa0 + #v) or string.char(0xd9, #v)) .. v end
      local p, addr = nodes.start("plain")
      local h, port = addr:match("^(.*):(%d+)$")
      local s = assert(tcp.connect(h, tonumber(port)))
      local hello = string.char(0x87) .. str("t") .. str("hello") .. str("v") .. string.char(1)
        .. str("cluster") .. str("atoll\n2026-01-01T00:00:00.000Z ERROR FORGED")
        .. str("name") .. str("x") .. str("addr") .. str("127.0.0.1:1")
        .. str("inc") .. string.char(0xcd, 0x30, 0x39)
        .. str("nonce") .. string.char(0xc4, 32) .. string.rep("n", 32)
      local n = #hello
      s:write(string.char(0, 0, math.floor(n / 256), n % 256) .. hello)
      assert.is_true(s:wait_closed(5))
      p:expect("a control character in a name, address, cluster or reason", 5, "stderr")
      assert.not_matches("\n[^\n]*FORGED", p:stderr())
    end))

  it("closes a connection that does not send its hello within a second", async(function()
    local _, addr = nodes.start("impatient")
    local h, p = addr:match("^(.*):(%d+)$")
    local s = assert(tcp.connect(h, tonumber(p)))
    local t0 = atoll.now()
    s:write("\0\0\0\80\135")
    assert.is_true(s:wait_closed(8))
    local took = atoll.now() - t0
    assert.is_true(took >= 0.9 and took < 2, "closed after " .. took .. " s")
    local stats = nodes.named(addr, "atoll.node"):info().transport
    assert.equal(1, stats.timed_out)
    assert.equal(0, stats.unauthenticated)
  end))
end)
