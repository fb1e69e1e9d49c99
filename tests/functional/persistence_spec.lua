-- Persistent actors in real node processes: every emit that returned survives a SIGKILL, in
-- order, with no gap and no duplicate; failures of the journal fail the emit and leave the node
-- up; the journal can be read from the command line.
local async = require "helpers.async"
local json = require "atoll.util.json"
local namespace = require "helpers.namespace"
local node = require "helpers.node"
local postgres = require "helpers.postgres"
local tmp = require "helpers.tmp"

local LEDGER = "tests/functional/apps/ledger.lua"

-- ledger(args, env) -> the process of a ledger node; args follow `run LEDGER`
local function ledger(args, env)
  local cmd = { "run", LEDGER }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return node.start(cmd, { env = env })
end

-- recovered(p) -> the entries the node recovered, e.g. { "1@w", "2@w" }
local function recovered(p)
  local _, count, list = p:expect("^recovered (%d+) ?(.*)$", 10)
  local entries = {}
  for e in list:gmatch("[^,]+") do entries[#entries + 1] = e end
  assert.equal(tonumber(count), #entries)
  return entries
end

-- acked(p) -> the entries whose emit returned, by number, from all the output so far
local function acked(p)
  local out, last = {}, 0
  for n in p:stdout():gmatch("\nacked (%d+)") do
    out[tonumber(n)] = true
    last = math.max(last, tonumber(n))
  end
  return out, last
end

-- Asserts entries are 1@WRITER, 2@WRITER, ... with no gap and no duplicate.
local function assert_contiguous(entries, writer)
  for i, e in ipairs(entries) do
    if e ~= i .. "@" .. (writer or "w") then
      error(("entry %d is %s: the history has a gap or a duplicate"):format(i, e), 2)
    end
  end
end

-- Kills a streaming ledger with SIGKILL after `target` acks and checks, on the next start, that
-- every acked entry came back: at most the one emit in flight may be there too.
local function crash_rounds(args, rounds, first_target)
  local expected = 0
  for round = 1, rounds do
    local env = { LEDGER_SNAPSHOT_EVERY = round % 2 == 0 and "7" or nil }
    local p = ledger(args, env)
    local entries = recovered(p)
    assert_contiguous(entries)
    assert.is_true(#entries >= expected and #entries <= expected + 1,
      ("round %d: %d entries recovered, %d acked before the kill"):format(round, #entries, expected))
    -- Kill points vary from 1 to ~250 emits into the round.
    local target = #entries + first_target + (round * 53) % 250
    p:expect("^acked " .. target .. "$", 20)
    p:kill("SIGKILL")
    assert.equal(9, select(2, p:wait(10)))
    local _, last = acked(p)
    assert.is_true(last >= target)
    expected = last
  end
  local p = ledger({ args[1], args[2] })
  local entries = recovered(p)
  assert_contiguous(entries)
  assert.is_true(#entries >= expected and #entries <= expected + 1)
  node.stop(p)
  return #entries
end

describe("persistent actors", function()
  local dir
  setup(function() dir = tmp.dir("persistence") end)
  teardown(function() tmp.remove(dir) end)

  describe("on SQLite", function()
    it("recover every acknowledged emit after a SIGKILL, at 20 kill points", async(function()
      local data = dir .. "/crash"
      local n = crash_rounds({ "--data-dir", data, "--", "--stream" }, 20, 1)
      assert.is_true(n > 20 * 50)
      -- The journal agrees, from the command line.
      local code, out = node.exec { "journal", "ls", "--data-dir", data, "--json" }
      assert.equal(0, code)
      local row = json.decode(out)
      assert.same({ id = "ledger/main", events = n, last_seq = n }, row)
    end, 120))

    it("fail emits with kind journal when the disk is full, and lose nothing once it has room",
      async(function()
        local data = dir .. "/full"
        -- A soft file-size limit of 150 KiB: the write-ahead log reaches it within ~30 events.
        local p = node.start_command({ "sh", "-c", ("ulimit -S -f 300 && exec %s run %s --data-dir %s -- --stream")
          :format(node.bin, LEDGER, namespace.quote(data)) })
        local _, n, message = p:expect("^failed (%d+) journal (.*)$", 20)
        assert.matches("journal.db: disk I/O error: a write failed", message)
        -- The node stays up and tries again, with the same entry, until the disk has room.
        p:expect("^failed " .. n .. " journal", 5)
        local _, last = acked(p)
        assert.equal(tonumber(n) - 1, last)
        local ok = os.execute(("prlimit --pid %d --fsize=unlimited:unlimited"):format(p:pid()))
        assert.is_true(ok == 0 or ok == true, "prlimit could not lift the limit")
        p:expect("^acked " .. (n + 100) .. "$", 20)
        assert.equal(0, node.stop(p))
        node.assert_clean(p)
        local _, acked_last = acked(p)
        local q = ledger { "--data-dir", data }
        local entries = recovered(q)
        assert_contiguous(entries)
        assert.is_true(#entries == acked_last or #entries == acked_last + 1)
        node.stop(q)
      end, 60))

    it("refuse a read-only data directory at start, with the reason", async(function()
      local data = dir .. "/ro"
      local p = ledger { "--data-dir", data }
      assert.equal(0, #recovered(p))
      node.stop(p)
      local q = node.start_command(namespace.command(("mount --bind %s %s && mount -o remount,ro,bind %s && exec %s run %s --data-dir %s")
        :format(namespace.quote(data), namespace.quote(data), namespace.quote(data), node.bin, LEDGER,
          namespace.quote(data))))
      local code = q:wait(10)
      assert.equal(1, code)
      assert.matches("cannot write in the journal's directory .*/ro: Read%-only file system", q:stderr())
      assert.equal("", q:stdout())
    end))

    it("say why a data directory cannot be made", async(function()
      tmp.write(dir .. "/plain", "")
      local code, out, err = node.exec { "run", LEDGER, "--data-dir", dir .. "/plain/data" }
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("cannot create the journal's directory .*/plain/data: Not a directory", err)
    end))

    it("never fork history: of two nodes writing one id, the loser stops with a conflict",
      async(function()
        local data = dir .. "/two"
        local a = ledger({ "--data-dir", data, "--", "--stream" }, { LEDGER_WRITER = "a" })
        recovered(a)
        a:expect("^acked 50$", 10)
        local b = ledger({ "--data-dir", data, "--", "--stream" }, { LEDGER_WRITER = "b" })
        local from = #recovered(b)
        assert.is_true(from >= 50)
        -- One of them writes first; the other's emit conflicts and its stream ends.
        local line = b:read_line(10)
        local winner
        if line:match("^failed %d+ conflict") then
          winner = a
        else
          assert.matches("^acked %d+$", line)
          a:expect("^failed %d+ conflict", 10)
          winner = b
        end
        local _, last = acked(winner)
        winner:expect("^acked " .. (last + 20) .. "$", 10)
        node.stop(a)
        node.stop(b)
        local entries = recovered(ledger { "--data-dir", data })
        for i, e in ipairs(entries) do assert.matches("^" .. i .. "@[ab]$", e) end
        for who, p in pairs { a = a, b = b } do
          for n in pairs((acked(p))) do
            assert.equal(n .. "@" .. who, entries[n], "an acknowledged entry was lost")
          end
        end
      end, 30))

    it("show what the journal holds as JSON lines", async(function()
      local data = dir .. "/show"
      local p = ledger({ "--data-dir", data, "--", "--stream" }, { LEDGER_ID = "shown" })
      recovered(p)
      p:expect("^acked 10$", 10)
      node.stop(p)
      local code, out = node.exec { "journal", "ls", "--data-dir", data }
      assert.equal(0, code)
      assert.matches("^ID%s+EVENTS%s+LAST SEQ\nledger/shown%s+%d+%s+%d+\n$", out)
      code, out = node.exec { "journal", "show", "ledger/shown", "--data-dir", data, "--from", "3",
        "--limit", "2" }
      assert.equal(0, code)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
      assert.equal(2, #lines)
      assert.same({ 4, 5 }, { lines[1].seq, lines[2].seq })
      assert.same({ 4, "w" }, { lines[1].event.n, lines[1].event.by })
      code, out = node.exec { "journal", "show", "ledger/none", "--data-dir", data }
      assert.equal(0, code)
      assert.equal("", out)
      local _, err
      code, _, err = node.exec { "journal", "ls", "--data-dir", dir .. "/nothing-here" }
      assert.equal(1, code)
      assert.matches("no journal at .*nothing%-here/journal.db", err)
    end))
  end)

  describe("in memory", function()
    it("let a node with nothing left to do exit by itself, its journal idle", async(function()
      -- An idle journal does not keep the loop alive (it once did, for ever).
      local code, out, err = node.exec({ "run", "examples/bank/app.lua", "--journal", "memory", "--",
        "ann", "5" }, { timeout = 10 })
      assert.equal(0, code, err)
      assert.matches("ann has 5 after 1 events", out)
    end))

    it("keep events for the life of the process only", async(function()
      local p = ledger { "--journal", "memory", "--", "--stream" }
      assert.equal(0, #recovered(p))
      p:expect("^acked 100$", 10)
      assert.equal(0, node.stop(p))
      local q = ledger { "--journal", "memory" }
      assert.equal(0, #recovered(q))
      node.stop(q)
    end))
  end)

  describe("on PostgreSQL", function()
    local server
    setup(function() server = postgres.start() end)
    teardown(function() if server then server.stop() end end)

    it("recover every acknowledged emit after a SIGKILL, at 10 kill points", async(function()
      crash_rounds({ "--journal", server.url, "--", "--stream" }, 10, 1)
    end, 120))

    it("refuse to start with a wrong password or no server, with the server's words", async(function()
      local url = ("postgres://atoll:wrong@127.0.0.1:%d/postgres"):format(server.port)
      local code, out, err = node.exec { "run", LEDGER, "--journal", url }
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches('password authentication failed for user "atoll"', err)
      -- libpq's own ways to give the password work too.
      local p = ledger({ "--journal", ("postgres://atoll@127.0.0.1:%d/postgres"):format(server.port) },
        { PGPASSWORD = postgres.PASSWORD, LEDGER_ID = "pgpassword" })
      assert.equal(0, #recovered(p))
      node.stop(p)
      code, out, err = node.exec { "run", LEDGER, "--journal", "postgres://atoll@127.0.0.1:1/postgres" }
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("Connection refused", err)
    end))

    it("fail emits while the server is down, and go on where they stopped when it is back",
      async(function()
        local p = ledger({ "--journal", server.url, "--", "--stream" }, { LEDGER_ID = "outage" })
        recovered(p)
        p:expect("^acked 20$", 10)
        server.halt()
        local _, n = p:expect("^failed (%d+) journal", 20)
        server.start()
        p:expect("^acked " .. n .. "$", 20)
        p:expect("^acked " .. (n + 20) .. "$", 10)
        assert.equal(0, node.stop(p))
        local _, last = acked(p)
        local q = ledger({ "--journal", server.url }, { LEDGER_ID = "outage" })
        local entries = recovered(q)
        assert_contiguous(entries)
        assert.is_true(#entries == last or #entries == last + 1)
        node.stop(q)
      end, 60))
  end)
end)
