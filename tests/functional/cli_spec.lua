-- The command line: help, version, flags, exit codes, signals, logging.
local async = require "helpers.async"
local node = require "helpers.node"
local tmp = require "helpers.tmp"

describe("the atoll command", function()
  local dir
  setup(function() dir = tmp.dir("cli") end)
  teardown(function() tmp.remove(dir) end)

  local function script(name, text)
    local path = dir .. "/" .. name
    tmp.write(path, text)
    return path
  end

  describe("help and version", function()
    it("prints the version", async(function()
      local code, out = node.exec { "--version" }
      assert.equal(0, code)
      assert.matches("^atoll %d+%.%d+%.%d+ %(LuaJIT", out)
    end))

    it("prints usage, commands and exit codes with --help", async(function()
      local code, out = node.exec { "--help" }
      assert.equal(0, code)
      for _, word in ipairs { "atoll run APP.lua", "atoll lua", "Exit codes:", "usage error" } do
        assert.truthy(out:find(word, 1, true), word)
      end
      code, out = node.exec { "help", "run" }
      assert.equal(0, code)
      assert.matches("%-%-watch", out)
      assert.matches("%-%-log%-level LEVEL", out)
      code, out = node.exec { "run", "--help" }
      assert.equal(0, code)
      assert.matches("%-%-name NAME", out)
      code, out = node.exec { "help", "receptionist" }
      assert.equal(0, code)
      assert.matches("Usage: atoll receptionist %-%-node HOST:PORT %[KEY%]", out)
    end))

    it("lists every membership setting in `atoll help run`", async(function()
      local code, out = node.exec { "help", "run" }
      assert.equal(0, code)
      local settings = out:match("%-%-membership KEY=VALUE.-\n(.-)\n  %-")
      assert.truthy(settings, out)
      for key, value in pairs(require("atoll.c.swim").config()) do
        assert.truthy(settings:find(key .. " (" .. value .. ")", 1, true), key .. " missing from:\n" .. settings)
      end
    end))
  end)

  describe("atoll members", function()
    it("lines its columns up, with a suspect member, long incarnations and a UTF-8 name", function()
      local boot = require "atoll.cli.client"
      local now = 1700000000
      local view = { members = {
        { name = "a", address = "127.0.0.1:7001", status = "up", incarnation = 0x123456789abc,
          since = now - 3, self = true },
        { name = "b", address = "127.0.0.1:17002", status = "up", suspect = true,
          incarnation = 0x1fffffffffffff, since = now - 30 },
        { name = "", address = "10.0.0.3:7003", status = "down", incarnation = 0xf, since = now - 300 },
        { name = "s\195\169ance", address = "10.0.0.4:7004", status = "leaving",
          incarnation = 0xabcdef012345, since = now - 4000 },
      } }
      local lines = boot.members_table(view, now)
      assert.equal(5, #lines)
      -- Where each column starts, in characters (the header's is the measure).
      local function column(line, text)
        local at = line:find(text, 1, true)
        assert.truthy(at, text .. " not in: " .. line)
        return #line:sub(1, at - 1):gsub("[\128-\191]", "") + 1
      end
      local header = lines[1]
      local function line_of(address)
        for i = 2, #lines do
          if lines[i]:find(address, 1, true) then return lines[i] end
        end
        error(address .. " is missing")
      end
      for _, m in ipairs(view.members) do
        local line = line_of(m.address)
        local status = m.status .. (m.suspect and " (suspect)" or "")
        assert.equal(column(header, "ADDRESS"), column(line, m.address), line)
        assert.equal(column(header, "STATUS"), column(line, status), line)
        assert.equal(column(header, "INCARNATION"), column(line, ("%x"):format(m.incarnation)), line)
        assert.equal(column(header, "SINCE"), column(line, " ago") - #line:match("(%S+) ago$"), line)
      end
      -- Members by name (none first), so the table reads the same every time.
      assert.matches("^%- ", lines[2])
      assert.matches("^a %*", lines[3])
      assert.matches("up %(suspect%)", lines[4])
      assert.matches("66m ago$", lines[5])
    end)
  end)

  describe("atoll receptionist", function()
    it("lines its columns up, says when a key is empty, and when the list is cut", function()
      local boot = require "atoll.cli.client"
      local stats = { own = 1, entries = 3, members = 2, changes_sent = 4, changes_received = 7, sets_sent = 1,
                      sets_received = 2, digests_sent = 9, digests_received = 8, pulls_sent = 2, gaps = 1,
                      stale = 0, ignored = 3, refused = 0 }
      local view = { address = "127.0.0.1:7001", total = 3, truncated = false, stats = stats, entries = {
        { key = "lobby", address = "127.0.0.1:7001", id = 3, type = "Player" },
        { key = "lobby", address = "127.0.0.1:17002", id = 12345, type = "Player" },
        { key = "room:s\195\169ance", address = "10.0.0.3:7003", id = 9, type = "Host" },
      } }
      local lines = boot.receptionist_lines(view)
      assert.equal("KEY          NODE             ACTOR  TYPE", lines[1])
      assert.equal("lobby        127.0.0.1:7001   3      Player", lines[2])
      assert.equal("lobby        127.0.0.1:17002  12345  Player", lines[3])
      assert.equal("room:s\195\169ance  10.0.0.3:7003    9      Host", lines[4])
      assert.equal("", lines[5])
      assert.equal("entries 3 (own 1), members 2   (the node asked: 127.0.0.1:7001)", lines[6])
      assert.equal("changes sent 4, changes received 7, sets sent 1, sets received 2", lines[7])
      assert.equal("digests sent 9, digests received 8, pulls sent 2, gaps 1", lines[8])
      assert.equal("stale 0, ignored 3, refused 0", lines[9])
      view.entries, view.total = { view.entries[1] }, 20000
      view.truncated = true
      assert.equal("(the first 1 of 20000 entries)", boot.receptionist_lines(view)[3])
      view.entries = {}
      assert.equal("no actor is checked in under lobby", boot.receptionist_lines(view, "lobby")[1])
      assert.equal("no actor is checked in", boot.receptionist_lines(view)[1])
    end)
  end)

  describe("usage errors exit with 2 and say what is wrong", function()
    local cases = {
      { {}, "Usage:" },
      { { "jump" }, "unknown command 'jump'" },
      { { "--bogus" }, "unknown flag '%-%-bogus'" },
      { { "run" }, "missing APP.lua" },
      { { "run", "app.lua", "--bogus" }, "unknown flag '%-%-bogus'" },
      { { "run", "app.lua", "--name" }, "%-%-name needs a value" },
      { { "run", "app.lua", "--log-level", "loud" }, "bad %-%-log%-level 'loud'" },
      { { "help", "jump" }, "no help for unknown command 'jump'" },
      { { "lua", "-e" }, "%-e needs a value" },
      -- Flag values: one check for all of them, before anything starts.
      { { "run", "app.lua", "--listen", "127.0.0.1:99999" }, "%-%-listen must be HOST:PORT with a port" },
      { { "run", "app.lua", "--journal", "bogus" }, "unknown journal 'bogus': use sqlite %(the default%)" },
      { { "run", "app.lua", "--http", "127.0.0.1" }, "bad HTTP address '127%.0%.0%.1' %(want HOST:PORT" },
      { { "run", "app.lua", "--http", "127.0.0.1:0", "--http-static", "/nonexistent" },
        "%-%-http%-static: /nonexistent is not a directory" },
      { { "run", "app.lua", "--max-frame", "10" }, "%-%-max%-frame needs a whole number of bytes from 64 to" },
      { { "run", "app.lua", "--listen", "127.0.0.1:0", "--join", "nowhere" }, "%-%-join must be HOST:PORT" },
      { { "run", "app.lua", "--listen", "127.0.0.1:0", "--membership", "probe_interval=x" },
        "%-%-membership wants KEY=NUMBER pairs" },
      { { "run", "app.lua", "--watchdog", "warn=x" }, "%-%-watchdog wants KEY=SECONDS pairs" },
      { { "run", "app.lua", "--listen", "127.0.0.1:0", "--membership", "gossip_fanout=0.5" },
        "gossip_fanout counts, so it takes a whole number" },
      { { "run", "app.lua", "--max-heap", "lots" }, "%-%-max%-heap wants a size" },
      { { "run", "app.lua", "--secret-file", "/nonexistent" }, "%-%-secret%-file: cannot read /nonexistent" },
      { { "run", "app.lua", "--secret-file", "/tmp" }, "%-%-secret%-file: cannot read /tmp: Is a directory" },
      { { "run", "app.lua", "--listen", "localhost:0" }, "%-%-listen binds a socket: give an IP address" },
      { { "run", "app.lua", "--http", "localhost:0" }, "%-%-http binds a socket: give an IP address" },
      { { "run", "app.lua", "--max-queue", "2000000000" }, "%-%-max%-queue needs a whole number of bytes from 64 to" },
      { { "call", "--node", "127.0.0.1:1", "--timeout", "0", "a", "b" }, "%-%-timeout needs a number of seconds" },
      { { "call", "--node", "localhost", "a", "b" }, "%-%-node must be HOST:PORT" },
      { { "journal", "show", "x", "--limit", "-2" }, "%-%-limit takes a whole number" },
      { { "receptionist", "lobby" }, "missing %-%-node HOST:PORT" },
      { { "receptionist", "--node", "127.0.0.1:1", "lobby", "hall" }, "unexpected argument 'hall' %(one KEY at most%)" },
    }
    for _, case in ipairs(cases) do
      it("atoll " .. table.concat(case[1], " "), async(function()
        local code, _, err = node.exec(case[1])
        assert.equal(2, code)
        assert.matches(case[2], err)
      end))
    end
  end)

  describe("loading", function()
    it("exits with 3 when the script is missing", async(function()
      local code, _, err = node.exec { "run", dir .. "/nosuch.lua" }
      assert.equal(3, code)
      assert.matches("cannot open .*nosuch%.lua: No such file or directory", err)
    end))

    it("exits with 3 on a syntax error, naming file and line", async(function()
      local path = script("broken.lua", "local x = 1\nlocal y = = 2\n")
      local code, _, err = node.exec { "run", path }
      assert.equal(3, code)
      assert.matches("broken%.lua:2: unexpected symbol near '='", err)
      code, _, err = node.exec { "lua", path }
      assert.equal(3, code)
      assert.matches("broken%.lua:2:", err)
    end))
  end)

  describe("running", function()
    it("passes arguments to the script and exits 0 when nothing is left to do", async(function()
      local path = script("args.lua", [[
local a, b = ...
print(arg[0]:match("args%.lua$") and "script ok", a, b, #arg)
]])
      local code, out, err = node.exec { "run", path, "one", "--", "--two" }
      assert.equal(0, code, err)
      assert.equal("script ok\tone\t--two\t2\n", out)
    end))

    it("exits with 1 when the main script raises, with message and traceback", async(function()
      local path = script("fails.lua", "local function f() error('it broke') end\nf()\n")
      local code, _, err = node.exec { "run", path }
      assert.equal(1, code)
      assert.matches("fails%.lua:1: it broke", err)
      assert.matches("stack traceback:", err)
    end))

    it("exits with the code given to atoll.exit, running nothing after it", async(function()
      local path = script("exit.lua", [[
local atoll = require "atoll"
atoll.every(0.001, function() print("tick") end)
print("before")
atoll.exit(7)
print("after")
]])
      local code, out = node.exec { "run", path }
      assert.equal(7, code)
      assert.equal("before\n", out)
    end))

    it("keeps running while timers are pending, then exits cleanly", async(function()
      local path = script("timers.lua", [[
local atoll = require "atoll"
local n = 0
local t
t = atoll.every(0.01, function()
  n = n + 1
  print("tick " .. n)
  if n == 3 then t:cancel() end
end)
]])
      local p = node.start { "run", path }
      assert.equal(0, p:wait(10))
      assert.equal("tick 1\ntick 2\ntick 3\n", p:stdout())
      node.assert_clean(p)
    end))

    it("names the node in its log lines", async(function()
      local path = script("named.lua", 'require("atoll").log.info("hello from the app")\n')
      local code, _, err = node.exec { "run", path, "--name", "island-7" }
      assert.equal(0, code)
      assert.matches("INFO  island%-7 main#0: hello from the app", err)
    end))

    it("filters log lines by --log-level", async(function()
      local path = script("levels.lua", [[
local log = require("atoll").log
log.debug("a debug line")
log.info("an info line")
log.warn("a warn line")
]])
      local _, _, err = node.exec { "run", path, "--log-level", "warn" }
      assert.is_nil(err:find("info line", 1, true))
      assert.truthy(err:find("a warn line", 1, true))
      _, _, err = node.exec { "run", path, "--log-level=debug" }
      assert.truthy(err:find("a debug line", 1, true))
      _, _, err = node.exec { "run", path, "--log-level", "off" }
      assert.equal("", err)
    end))
  end)

  describe("signals", function()
    local server = [[
local atoll = require "atoll"
local T = atoll.actor.define "Keeper"
function T:init() self.n = 0 end
function T.distributed:bump() self.n = self.n + 1 return self.n end
local k = atoll.spawn(T)
atoll.every(0.005, function() k:bump() end)
atoll.on_shutdown(function() print("shutdown hook saw " .. (k:bump() > 0 and "a live actor" or "?")) end)
print("ready")
]]

    it("SIGTERM stops gracefully: hooks run, exit 0, nothing left open", async(function()
      local p = node.start { "run", script("term.lua", server) }
      p:expect("^ready$", 5)
      local code = node.stop(p, "SIGTERM")
      assert.equal(0, code)
      assert.matches("shutdown hook saw a live actor", p:stdout())
      assert.matches("SIGTERM: shutting down", p:stderr())
      node.assert_clean(p)
    end))

    it("SIGINT does the same", async(function()
      local p = node.start { "run", script("int.lua", server) }
      p:expect("^ready$", 5)
      assert.equal(0, node.stop(p, "SIGINT"))
      assert.matches("shutdown hook saw a live actor", p:stdout())
      node.assert_clean(p)
    end))

    it("a second SIGINT stops at once when a hook hangs", async(function()
      local p = node.start { "run", script("hang.lua", [[
local atoll = require "atoll"
atoll.on_shutdown(function() print("hook waits") atoll.sleep(60) end)
atoll.every(1, function() end)
print("ready")
]]) }
      p:expect("^ready$", 5)
      p:kill("SIGINT")
      p:expect("^hook waits$", 5)
      assert.equal(130, node.stop(p, "SIGINT"))
      assert.matches("SIGINT again: stopping now", p:stderr())
    end))
  end)

  describe("atoll lua", function()
    it("runs -e code with arguments", async(function()
      local code, out = node.exec { "lua", "-e", "print(#arg, ...)", "x", "y" }
      assert.equal(0, code)
      assert.equal("2\tx\ty\n", out)
    end))

    it("reads the script from standard input", async(function()
      local code, out = node.exec({ "lua", "-" }, { stdin = "print(require('atoll').version)" })
      assert.equal(0, code)
      assert.matches("^%d+%.%d+%.%d+\n$", out)
    end))

    it("runs actors to completion with atoll.run", async(function()
      local path = script("run.lua", [[
local atoll = require "atoll"
local T = atoll.actor.define "Adder"
function T.distributed:add(a, b) return a + b end
print(atoll.run(function() return atoll.spawn(T):add(20, 22) end))
]])
      local code, out = node.exec { "lua", path }
      assert.equal(0, code)
      assert.equal("42\n", out)
    end))

    it("exits with 1 and a traceback when the script raises", async(function()
      local code, _, err = node.exec { "lua", "-e", "error('lua mode failure')" }
      assert.equal(1, code)
      assert.matches("lua mode failure", err)
      assert.matches("stack traceback", err)
    end))

    it("answers to the name atoll-lua, as interpreters do", async(function()
      local link = dir .. "/atoll-lua"
      os.execute("ln -sf '" .. node.bin .. "' '" .. link .. "'")
      local process = require "atoll.process"
      local p = assert(process.spawn { link, "-e", "print('interpreter', ...)", "a" })
      assert.equal(0, p:wait(10))
      assert.equal("interpreter\ta\n", p:stdout())
    end))
  end)
end)
