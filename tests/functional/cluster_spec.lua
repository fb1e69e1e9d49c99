-- The transport between real nodes: calls, sends, refs across nodes, failures, refusals, bad frames.
local atoll = require "atoll"
local codec = require "atoll.c.codec"
local cluster = require "atoll.cluster"
local tcp = require "atoll.tcp"
local async = require "helpers.async"
local spec = require "helpers.spec"
local catch = spec.catch
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local capture = require "helpers.logs"

-- A frame: u32 big-endian length, then the body.
local function frame(body)
  local n = #body
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. body
end

local function split(address)
  local h, p = address:match("^(.*):(%d+)$")
  return h, tonumber(p)
end

describe("the cluster transport", function()
  before_each(function() nodes.self() end)

  describe("calls between nodes", function()
    it("returns results, and carries errors with their kinds", async(function()
      local a, addr = nodes.start("a")
      local echo = nodes.named(addr, "echo")
      local x, y, z = echo:echo(1, nil, { k = "v" })
      assert.equal(1, x)
      assert.is_nil(y)
      assert.same({ k = "v" }, z)
      local err = catch(echo.fail, echo, "it broke")
      assert.equal("remote", err.kind)
      assert.matches("it broke", err.message)
      assert.matches("node%.lua:%d+", err.traceback)
      assert.equal("not_distributed", catch(echo.nope, echo).kind)
      assert.equal("no_such_actor", catch(nodes.named(addr, "nobody").echo, nodes.named(addr, "nobody")).kind)
      local counter = nodes.named(addr, "spawner"):counter() -- a ref to an actor on a
      assert.is_true(atoll.is_ref(counter))
      assert.equal(3, counter:add(3))
      assert.equal(5, counter:add(2))
      node.stop(a)
    end))

    it("times out a call that gets no answer", async(function()
      local _, addr = nodes.start("slowpoke")
      local echo = nodes.named(addr, "echo", 0.1)
      local t0 = atoll.now()
      local err = catch(echo.slow, echo, 2, "late")
      local took = atoll.now() - t0
      assert.equal("timeout", err.kind)
      assert.is_true(took >= 0.1 and took < 1, "took " .. took)
      -- a ref's calls take a timeout the same way
      local c = atoll.timeout(nodes.named(addr, "spawner"):counter(), 0.5)
      assert.equal(1, c:add(1))
    end))

    it("keeps the order of one-way messages from one sender", async(function()
      local _, a_addr = nodes.start("orders-a")
      local _, b_addr = nodes.start("orders-b")
      local log = nodes.named(a_addr, "atoll.node"):whereis("log")
      local relay = nodes.named(b_addr, "relay")
      assert.equal(2000, relay:send_many(log, "note", 2000))
      -- a call from the same sender arrives after its sends
      assert.equal(2000, relay:call(log, "count"))
      local list = log:seen()
      for i = 1, 2000 do assert.equal(i, list[i]) end
    end))

    it("lets a ref received from one node be called from a third one directly", async(function()
      local _, a = nodes.start("three-a")
      local _, b = nodes.start("three-b")
      local _, c = nodes.start("three-c")
      -- A's actor; its ref goes from A to the spec, then to B, then from B to C.
      local x = nodes.named(a, "spawner"):counter()
      assert.is_true(nodes.named(b, "relay"):keep(x))
      local c_relay = nodes.named(c, "atoll.node"):whereis("relay")
      assert.is_true(nodes.named(b, "relay"):give(c_relay))
      assert.equal(7, nodes.named(c, "relay"):call_kept("add", 7))
      assert.equal(8, x:add(1))
      -- C reached A itself, not through B.
      local peers = nodes.named(c, "atoll.node"):info().peers
      assert.equal("up", peers[a].state)
    end))

    it("settles on one link when two nodes dial each other at once", async(function()
      for round = 1, 3 do
        local _, a = nodes.start("race-a" .. round)
        local _, b = nodes.start("race-b" .. round)
        local a_echo = nodes.named(a, "atoll.node"):whereis("echo")
        local b_echo = nodes.named(b, "atoll.node"):whereis("echo")
        local ab = atoll.task(function() return nodes.named(a, "relay"):call(b_echo, "echo", "a->b") end)
        local ba = atoll.task(function() return nodes.named(b, "relay"):call(a_echo, "echo", "b->a") end)
        assert.equal("a->b", ab:wait(5))
        assert.equal("b->a", ba:wait(5))
        local pa = nodes.named(a, "atoll.node"):info().peers[b]
        local pb = nodes.named(b, "atoll.node"):info().peers[a]
        assert.equal("up", pa.state)
        assert.equal("up", pb.state)
        -- and it keeps working both ways
        assert.equal(1, nodes.named(a, "relay"):call(b_echo, "echo", 1))
        assert.equal(2, nodes.named(b, "relay"):call(a_echo, "echo", 2))
        node.cleanup()
      end
    end))
  end)

  describe("failures", function()
    it("fails calls pending on a killed node with unreachable, within a second", async(function()
      local a, addr = nodes.start("doomed")
      local echo = nodes.named(addr, "echo")
      assert.equal("warm", echo:slow(0, "warm"))
      local pending = {}
      for i = 1, 5 do
        pending[i] = atoll.task(function()
          local ok, err = pcall(echo.slow, echo, 30, i)
          return ok and "answered" or err.kind
        end)
      end
      atoll.yield()
      local t0 = atoll.now()
      a:kill("SIGKILL")
      for i = 1, 5 do assert.equal("unreachable", pending[i]:wait(2)) end
      assert.is_true(atoll.now() - t0 < 1, "took " .. (atoll.now() - t0) .. " s")
      -- new calls fail fast too, while the node stays gone
      local t1 = atoll.now()
      assert.equal("unreachable", catch(echo.echo, echo, 1).kind)
      assert.is_true(atoll.now() - t1 < 1)
    end))

    it("reaches a restarted node again, and its old refs are dead", async(function()
      local a, addr = nodes.start("phoenix")
      local port = addr:match(":(%d+)$")
      local old = nodes.named(addr, "spawner"):counter()
      assert.equal(1, old:add(1))
      a:kill("SIGKILL")
      a:wait(5)
      assert.equal("unreachable", catch(old.add, old, 1).kind)
      -- the same address, a new run: a new incarnation
      local b = nodes.start("phoenix", { "--listen", "127.0.0.1:" .. port })
      assert(cluster.connect(addr, 5))
      local fresh = nodes.named(addr, "spawner"):counter()
      assert.equal(1, fresh:add(1))
      local err = catch(old.add, old, 1)
      assert.equal("no_such_actor", err.kind)
      assert.matches("earlier run", err.message)
      node.stop(b)
    end))

    it("refuses a node with the wrong secret, and both sides say why", async(function()
      local tmp = require "helpers.tmp"
      local a, addr = nodes.start("guarded")
      local dir = tmp.dir("intruder")
      tmp.write(dir .. "/intruder.lua", [[
local atoll = require "atoll"
local cluster = require "atoll.cluster"
local target = ...
local ok, err = pcall(function() return cluster.named(target, "echo"):echo(1) end)
print(ok and "answered" or ("refused: " .. err.kind))
atoll.exit(0)
]])
      local w = node.start({ "run", dir .. "/intruder.lua", "--listen", "127.0.0.1:0", "--name",
        "intruder", addr }, { env = { ATOLL_SECRET = "wrong-secret" } })
      assert.equal(0, w:wait(10))
      assert.equal("refused: unreachable\n", w:stdout())
      assert.matches("authentication failed: this node's secret differs from the peer's", w:stderr())
      a:expect("refused the connection: authentication failed: this node's secret differs from the peer's",
        5, "stderr")
      -- the command line with a wrong secret is refused the same way
      local code, _, cerr = node.exec({ "call", "--node", addr, "echo", "echo", "1" },
        { env = { ATOLL_SECRET = "nope" } })
      assert.equal(4, code)
      assert.matches("authentication failed", cerr)
      -- and the node goes on serving those who know the secret
      assert.equal(5, nodes.named(addr, "echo"):echo(5))
      tmp.remove(dir)
    end))

    it("refuses a node of another cluster", async(function()
      local a, addr = nodes.start("home", { "--cluster", "blue" })
      local code, _, err = node.exec({ "call", "--node", addr, "--cluster", "green", "echo", "echo", "1" },
        { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(4, code)
      assert.matches("cluster 'green', but this node is in cluster 'blue'", err)
      a:expect("refused a connection from .*cluster 'green'", 5, "stderr")
    end))

    it("refuses a peer speaking another protocol version before reading anything else", async(function()
      local a, addr = nodes.start("versioned")
      local h, p = split(addr)
      local s = assert(tcp.connect(h, p))
      local hello = assert(codec.encode { t = "hello", v = 99, cluster = "atoll", name = "old",
        addr = "", inc = 1, nonce = string.rep("\255", 32) })
      -- a call frame right behind the hello: it must never be read
      s:write(frame(hello) .. frame("\150\1\1\1\1\161x\144"))
      local reply = s:read(5)
      assert.truthy(reply and reply:find("protocol version 99, but this node speaks 1", 1, true))
      assert.is_true(s:wait_closed(5))
      a:expect("refused a connection from .*protocol version 99", 5, "stderr")
    end))
  end)

  describe("bad bytes close only the link they came on", function()
    local function still_serving(addr)
      local echo = nodes.named(addr, "echo")
      assert.equal("still here", echo:echo("still here"))
    end

    it("an oversized frame before the handshake", async(function()
      local a, addr = nodes.start("big-a")
      local h, p = split(addr)
      local s = assert(tcp.connect(h, p))
      s:write("\255\255\255\255")
      assert.is_true(s:wait_closed(5))
      a:expect("over the limit of 4096", 5, "stderr")
      still_serving(addr)
    end))

    it("garbage instead of a handshake", async(function()
      local a, addr = nodes.start("garbage-a")
      local h, p = split(addr)
      local s = assert(tcp.connect(h, p))
      s:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.is_true(s:wait_closed(5))
      local s2 = assert(tcp.connect(h, p))
      s2:write(frame("\1\2\3 not messagepack"))
      assert.is_true(s2:wait_closed(5))
      a:expect("malformed handshake message", 5, "stderr")
      still_serving(addr)
    end))

    it("an unauthenticated, malformed or oversized frame after the handshake, while other links go on", async(function()
      local a, addr = nodes.start("strict-a")
      local _, b = nodes.start("strict-b")
      local a_echo = nodes.named(addr, "atoll.node"):whereis("echo")
      assert.equal(1, nodes.named(b, "relay"):call(a_echo, "echo", 1)) -- B's link to A is up
      for _, case in ipairs {
        { "raw", frame("\150\1\1\1\1\161x\144"), "failed authentication" }, -- a valid call, unsealed
        { "sealed", "\147\1\2", "malformed envelope" },                  -- an envelope that ends early
        { "sealed", "\150\1\1\1\1\161x\145\212\5\0", "unsupported ext type" }, -- a bad argument
        { "sealed", "\145\99", "unknown kind" },                          -- an unknown envelope kind
        { "raw", "\1\0\0\1", "over the limit of 16777216" },            -- over the frame limit
      } do
        assert(cluster.connect(addr, 5))
        local link = cluster.link_to(addr)
        local pending = atoll.task(function()
          local ok, err = pcall(a_echo.slow, a_echo, 30, "x")
          return ok and "answered" or err.kind
        end)
        atoll.yield()
        capture(function()
          local hooks = require "atoll_testhooks"
          if case[1] == "raw" then hooks.write_raw(link, case[2]) else hooks.write_sealed(link, case[2]) end
          assert.equal("unreachable", pending:wait(5))
        end)
        a:expect(case[3], 5, "stderr")
        assert.equal(2, nodes.named(b, "relay"):call(a_echo, "echo", 2)) -- B's link is untouched
      end
      assert(cluster.connect(addr, 5))
      still_serving(addr)
    end))

    it("a link closed with frames still queued goes quietly, and a new one replaces it", async(function()
      local _, addr = nodes.start("closer")
      local echo = nodes.named(addr, "atoll.node"):whereis("echo")
      for round = 1, 3 do
        assert(cluster.connect(addr, 5))
        local link = cluster.link_to(addr)
        for i = 1, 10 do atoll.send(echo, "echo", i) end -- queued, not yet written
        capture(function()
          link:close("closed by the spec")
          atoll.yield() -- the flusher runs after the link is gone
        end)
        assert(cluster.connect(addr, 5))
        assert.equal(round, echo:echo(round))
      end
    end))

    it("a node that dials itself is refused", async(function()
      local transport = require "atoll.c.transport"
      local link = assert(transport.dial(atoll.node().address))
      capture(function()
        while link:state() ~= "closed" do atoll.sleep(0.005) end
      end)
      assert.equal("closed", link:state())
    end))

    it("a method name the peer would refuse fails the call, not the link", async(function()
      local _, addr = nodes.start("names-a")
      local echo = nodes.named(addr, "atoll.node"):whereis("echo")
      local err = catch(atoll.call, echo, string.rep("m", 300))
      assert.equal("bad_argument", err.kind)
      assert.matches("1 to 255 bytes", err.message)
      assert.equal("bad_argument", catch(atoll.call, echo, "").kind)
      assert.equal(3, echo:echo(3))
    end))
  end)

  describe("backpressure", function()
    it("fails sends with overloaded when a link's queue is full, instead of growing", async(function()
      local a, a_addr = nodes.start("stalled")
      local b, b_addr = nodes.start("flooder", { "--max-queue", "262144" })
      local log = nodes.named(a_addr, "atoll.node"):whereis("log")
      assert.equal(0, log:count())
      assert.equal(1, nodes.named(b_addr, "relay"):send_many(log, "note", 1)) -- B's link to A is up
      a:kill("SIGSTOP")
      local sent, kind = nodes.named(b_addr, "relay", 30):flood(log, 4096, 200000)
      a:kill("SIGCONT")
      assert.equal("overloaded", kind)
      assert.is_true(sent < 200000)
      local rss = nodes.named(b_addr, "atoll.node"):info()
      assert.truthy(rss)
      node.stop(b)
    end))
  end)

  describe("node identity", function()
    it("writes the chosen port to --port-file and advertises what it is told", async(function()
      local tmp = require "helpers.tmp"
      local dir = tmp.dir("ident")
      local port_file = dir .. "/port"
      local p, addr = nodes.start("ident", { "--port-file", port_file, "--advertise", "127.0.0.9:7777" })
      local f = assert(io.open(port_file))
      local port = f:read("*l")
      f:close()
      assert.matches("^%d+$", port)
      assert.equal("127.0.0.9:7777", addr)
      tmp.remove(dir)
      node.stop(p)
    end))

    it("draws a new incarnation at every start", async(function()
      local p1, addr1 = nodes.start("inc1")
      local i1 = nodes.named(addr1, "atoll.node"):info().incarnation
      local p2, addr2 = nodes.start("inc2")
      local i2 = nodes.named(addr2, "atoll.node"):info().incarnation
      assert.are_not.equal(i1, i2)
      assert.is_true(i1 > 0 and i2 > 0)
      node.stop(p1)
      node.stop(p2)
    end))
  end)

  describe("from the shell", function()
    it("atoll call prints results as JSON and fails with the right exit codes", async(function()
      local _, addr = nodes.start("shell")
      local env = { env = { ATOLL_SECRET = nodes.secret } }
      local code, out = node.exec({ "call", "--node", addr, "echo", "echo",
        '[1, "two", {"three": 3}, null, 9007199254740992]' }, env)
      assert.equal(0, code)
      assert.equal('[1,"two",{"three":3},null,9007199254740992]\n', out)
      _, out = node.exec({ "call", "--node", addr, "echo", "echo", '"just one"' }, env)
      assert.equal('"just one"\n', out)
      local err
      code, _, err = node.exec({ "call", "--node", addr, "echo", "fail", '["bad thing"]' }, env)
      assert.equal(1, code)
      assert.matches("remote: .*bad thing", err)
      code, _, err = node.exec({ "call", "--node", addr, "echo", "echo", "[1," }, env)
      assert.equal(2, code)
      assert.matches("not valid JSON", err)
      code, _, err = node.exec({ "call", "--node", "127.0.0.1:1", "echo", "echo" }, env)
      assert.equal(4, code)
      assert.matches("cannot reach 127%.0%.0%.1:1", err)
    end))

    it("reaches a node by a host name as well as by the address it gives", async(function()
      local _, addr = nodes.start("by-name")
      local port = addr:match(":(%d+)$")
      local t0 = atoll.now()
      local code, out, err = node.exec({ "call", "--node", "localhost:" .. port, "echo", "echo", '"named"' },
        { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(0, code, err)
      assert.equal('"named"\n', out)
      assert.is_true(atoll.now() - t0 < 2, "took " .. (atoll.now() - t0) .. " s")
    end))

    it("atoll call shows an application error with the application's frames only", async(function()
      local _, addr = nodes.start("shell-error")
      local code, _, err = node.exec({ "call", "--node", addr, "echo", "fail", '["bad thing"]' },
        { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(1, code)
      assert.matches("atoll call: remote: tests/functional/apps/node%.lua:%d+: bad thing\n", err)
      assert.matches("tests/functional/apps/node%.lua:%d+: in function 'Echo%.fail'", err)
      assert.not_matches("lib/atoll/", err)
      assert.not_matches("in function 'error'", err)
    end))

    it("takes the secret from --secret-file over ATOLL_SECRET, as the help says", async(function()
      local tmp = require "helpers.tmp"
      local dir = tmp.dir("secret")
      tmp.write(dir .. "/secret", nodes.secret .. "\n")
      -- A stale ATOLL_SECRET in the environment, and the right secret in the file named.
      local p = node.start({ "run", nodes.app, "--listen", "127.0.0.1:0", "--name", "filed",
        "--secret-file", dir .. "/secret" }, { env = { ATOLL_SECRET = "stale-secret" } })
      local _, addr = p:expect("listening on (%S+)", 10, "stderr")
      p:expect("^ready$", 10)
      assert.equal("pong", nodes.named(addr, "atoll.node"):ping())
      -- atoll call too: the file it names wins over the environment.
      local code, out = node.exec({ "call", "--node", addr, "--secret-file", dir .. "/secret",
        "echo", "echo", '"hi"' }, { env = { ATOLL_SECRET = "stale-secret" } })
      tmp.remove(dir)
      assert.equal(0, code)
      assert.equal('"hi"\n', out)
    end))

    it("lets a node without --listen call other nodes as a client", async(function()
      local _, addr = nodes.start("server")
      local tmp = require "helpers.tmp"
      local dir = tmp.dir("client")
      tmp.write(dir .. "/client.lua", ([[
        local atoll = require "atoll"
        print(atoll.remote(%q, "echo"):echo("through"))
        print(atoll.remote(%q, "atoll.node"):ping())
      ]]):format(addr, addr))
      local code, out, err = node.exec({ "run", dir .. "/client.lua" }, { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(0, code, err)
      assert.equal("through\npong\n", out)
      assert.matches("this node does not listen: it reaches other nodes as a client", err)
      -- A script that starts no transport gets an error with a kind, and what to do.
      code, out = node.exec({ "lua", "-e", ([[
        local atoll = require "atoll"
        atoll.run(function()
          local ok, e = pcall(function() return atoll.remote(%q, "echo"):echo(1) end)
          print(atoll.errors.kind(e), e.message)
        end)
      ]]):format(addr) })
      tmp.remove(dir)
      assert.equal(0, code)
      assert.matches("^unreachable%s+this node has no cluster transport: start it with %-%-listen HOST:PORT", out)
    end))

    it("atoll reload reloads a module on a running node", async(function()
      local tmp = require "helpers.tmp"
      local dir = tmp.dir("remote-reload")
      tmp.write(dir .. "/greeter.lua", [[
local G = require("atoll.actor").define "Greeter"
function G.distributed:hello() return "v1" end
return G
]])
      tmp.write(dir .. "/app.lua", [[
local atoll = require "atoll"
atoll.register("greeter", atoll.spawn("greeter"))
print("ready")
]])
      local _, addr = nodes.start("reloadable", nil, { app = dir .. "/app.lua" })
      local greeter = nodes.named(addr, "greeter")
      assert.equal("v1", greeter:hello())
      tmp.replace(dir .. "/greeter.lua", (tmp.read(dir .. "/greeter.lua"):gsub("v1", "v2")))
      local env = { env = { ATOLL_SECRET = nodes.secret } }
      local code, out = node.exec({ "reload", "greeter", "--node", addr }, env)
      assert.equal(0, code)
      assert.matches("reloaded greeter", out)
      assert.equal("v2", greeter:hello())
      tmp.replace(dir .. "/greeter.lua", "broken(")
      local err
      code, _, err = node.exec({ "reload", "greeter", "--node", addr }, env)
      assert.equal(1, code)
      assert.matches("greeter%.lua:%d+:", err)
      assert.equal("v2", greeter:hello())
      tmp.remove(dir)
    end))
  end)
end)
