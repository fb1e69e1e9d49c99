-- The journal's three backends behind one interface: appends, conflicts, atomic batches, group
-- commit, reads in pages, snapshots, listing, and what they say when they fail. PostgreSQL runs
-- as a real server started for this file (tests/helpers/postgres.lua).
local atoll = require "atoll"
local journal = require "atoll.c.journal"
local runtime = require "atoll.runtime"
local async = require "helpers.async"
local postgres = require "helpers.postgres"
local tmp = require "helpers.tmp"

-- A journal whose requests suspend the caller until they are answered:
-- c:call("append", pid, seq, payloads) -> status, error, data
local function client(spec)
  local j, err = journal.open(spec)
  assert(j, err)
  local waiting, token = {}, 0
  j:set_handler(function(list)
    for i = 1, #list, 4 do
      local w = waiting[list[i]]
      waiting[list[i]] = nil
      w:wake({ list[i + 1], list[i + 2], list[i + 3] })
    end
  end)
  local c = { j = j }
  function c.call(method, ...)
    token = token + 1
    local w = runtime.waiter()
    waiting[token] = w
    j[method](j, token, ...)
    local _, r = w:wait(10)
    return r[1], r[2], r[3]
  end
  -- Several at once: they share a commit where the backend batches.
  function c.all(calls)
    local results, left, done = {}, #calls, atoll.future()
    for i, args in ipairs(calls) do
      atoll.task(function()
        results[i] = { c.call(unpack(args)) }
        left = left - 1
        if left == 0 then done:set(true) end
      end)
    end
    done:wait(10)
    return results
  end
  return c
end

local server, dir

setup(function()
  dir = tmp.dir("journal")
  server = postgres.start()
end)

teardown(function()
  if server then server.stop() end
  if dir then tmp.remove(dir) end
end)

local n = 0
local function fresh(kind)
  n = n + 1
  if kind == "memory" then return "memory" end
  if kind == "sqlite" then return "sqlite:" .. dir .. "/j" .. n .. ".db" end
  -- PostgreSQL: one server, a fresh set of ids per test
  return server.url
end

for _, kind in ipairs { "memory", "sqlite", "postgres" } do
  describe("the " .. kind .. " journal", function()
    local pfx
    before_each(function()
      n = n + 1
      pfx = "t" .. n .. "/"
    end)

    it("appends events and reads them back in order, in pages", async(function()
      local c = client(fresh(kind))
      assert.equal("ok", (c.call("append", pfx .. "a", 1, "one")))
      assert.equal("ok", (c.call("append", pfx .. "a", 2, { "two", "three", "\0binary\255" })))
      local status, err, rows = c.call("read", pfx .. "a", 0)
      assert.equal("ok", status, err)
      assert.same({ 1, "one", 2, "two", 3, "three", 4, "\0binary\255" }, rows)
      local _, _, page = c.call("read", pfx .. "a", 1, 2)
      assert.same({ 2, "two", 3, "three" }, page)
      local _, _, none = c.call("read", pfx .. "nobody", 0)
      assert.same({}, none)
      c.j:close()
    end, 30))

    it("refuses a seq already written, with conflict, and writes nothing of that request", async(function()
      local c = client(fresh(kind))
      assert.equal("ok", (c.call("append", pfx .. "a", 1, { "one", "two" })))
      local status, err = c.call("append", pfx .. "a", 2, "again")
      assert.equal("conflict", status)
      assert.matches("already written", err)
      -- a request of three whose middle one conflicts: none is written
      assert.equal("conflict", (c.call("append", pfx .. "a", 1, { "x", "y", "z" })))
      assert.equal("conflict", (c.call("append", pfx .. "a", 2, { "x", "y" })))
      local _, _, rows = c.call("read", pfx .. "a", 0)
      assert.same({ 1, "one", 2, "two" }, rows)
      c.j:close()
    end, 30))

    it("commits many requests at once, failing only the conflicting ones", async(function()
      local c = client(fresh(kind))
      assert.equal("ok", (c.call("append", pfx .. "taken", 1, "first")))
      local calls = {}
      for i = 1, 300 do calls[#calls + 1] = { "append", pfx .. "p" .. i, 1, "e" .. i } end
      calls[150] = { "append", pfx .. "taken", 1, "second" }
      local results = c.all(calls)
      for i, r in ipairs(results) do
        assert.equal(i == 150 and "conflict" or "ok", r[1], r[2])
      end
      local _, _, rows = c.call("read", pfx .. "p300", 0)
      assert.same({ 1, "e300" }, rows)
      local _, _, taken = c.call("read", pfx .. "taken", 0)
      assert.same({ 1, "first" }, taken)
      c.j:close()
    end, 30))

    it("keeps the latest snapshot, and lists ids with counts", async(function()
      local c = client(fresh(kind))
      local _, _, none = c.call("load_snapshot", pfx .. "a")
      assert.is_false(none)
      assert.equal("ok", (c.call("save_snapshot", pfx .. "a", 5, "five")))
      assert.equal("ok", (c.call("save_snapshot", pfx .. "a", 9, "nine")))
      assert.equal("ok", (c.call("save_snapshot", pfx .. "a", 7, "seven"))) -- older: ignored
      local _, _, snap = c.call("load_snapshot", pfx .. "a")
      assert.same({ 9, "nine" }, snap)
      c.call("append", pfx .. "x", 1, { "1", "2", "3" })
      c.call("append", pfx .. "y", 1, "1")
      local status, _, list = c.call("list")
      assert.equal("ok", status)
      local found = {}
      for i = 1, #list, 3 do found[list[i]] = { list[i + 1], list[i + 2] } end
      assert.same({ 3, 3 }, found[pfx .. "x"])
      assert.same({ 1, 1 }, found[pfx .. "y"])
      c.j:close()
    end, 30))

    it("refuses bad requests at once", function()
      local j = assert(journal.open(fresh(kind)))
      assert.has_error(function() j:append(1, "", 1, "x") end, "a persistence id must be 1 to 255 bytes")
      assert.has_error(function() j:append(1, ("x"):rep(256), 1, "x") end)
      assert.has_error(function() j:append(1, "a", 0, "x") end, "sequence numbers start at 1")
      assert.has_error(function() j:append(1, "a", 1.5, "x") end)
      assert.has_error(function() j:append(1, "a", 1, {}) end)
      assert.has_error(function() j:append(1, "a", 1, { "ok", {} }) end, "event 2 is not a string of bytes")
      j:close()
      assert.has_error(function() j:append(1, "a", 1, "x") end, "the journal is closed")
    end)
  end)
end

describe("the SQLite journal", function()
  it("keeps what was committed across a reopen", async(function()
    local path = "sqlite:" .. dir .. "/reopen.db"
    local c = client(path)
    c.call("append", "a", 1, { "one", "two" })
    c.j:close()
    local c2 = client(path)
    local _, _, rows = c2.call("read", "a", 0)
    assert.same({ 1, "one", 2, "two" }, rows)
    c2.j:close()
  end))

  it("creates its directory, and says why it cannot open, with SQLite's own words", function()
    local j, err = journal.open("sqlite:" .. dir .. "/new/dir/j.db")
    assert.truthy(j, err)
    j:close()
    local f = assert(io.open(dir .. "/plain", "w"))
    f:close()
    j, err = journal.open("sqlite:" .. dir .. "/plain/j.db")
    assert.is_nil(j)
    assert.matches("cannot create the journal's directory .*/plain: Not a directory", err)
    os.execute("mkdir '" .. dir .. "/a-dir.db'")
    j, err = journal.open("sqlite:" .. dir .. "/a-dir.db")
    assert.is_nil(j)
    assert.matches("cannot open the journal .*a%-dir.db: unable to open database file", err)
    j, err = journal.open("mysql://nope")
    assert.is_nil(j)
    assert.matches("unknown journal 'mysql://nope'", err)
  end)

  it("refuses a journal of another schema version", async(function()
    local path = dir .. "/future.db"
    local c = client("sqlite:" .. path)
    c.j:close()
    os.execute("sqlite3 '" .. path .. "' \"UPDATE atoll_meta SET value = '99' WHERE key = 'schema_version'\"")
    local j, err = journal.open("sqlite:" .. path)
    assert.is_nil(j)
    assert.matches("schema version 99; this atoll knows version 1 only", err)
  end))
end)

describe("the PostgreSQL journal", function()
  it("says why it cannot connect, with the server's own words", async(function()
    local bad = server.url:gsub(postgres.PASSWORD:gsub("%p", "%%%0"), "wrong")
    local c = client(bad)
    local status, err = c.call("list")
    assert.equal("failed", status)
    assert.matches("password authentication failed for user \"atoll\"", err)
    assert.is_nil(err:find("wrong", 1, true), "the password shows in: " .. err)
    c.j:close()
    c = client("postgres://atoll:x@127.0.0.1:1/postgres")
    status, err = c.call("list")
    assert.equal("failed", status)
    assert.matches("Connection refused", err)
    c.j:close()
  end, 30))

  it("fails requests while the server is down, and reconnects when it is back", async(function()
    local c = client(server.url)
    assert.equal("ok", (c.call("append", "reconnect", 1, "before")))
    server.halt()
    local status, err = c.call("append", "reconnect", 2, "during")
    assert.equal("failed", status)
    assert.truthy(err:find("PostgreSQL", 1, true), err)
    server.start()
    -- Backoff: 0.1 s, doubling; the connection comes back within a few.
    local ok
    for _ = 1, 100 do
      ok = c.call("append", "reconnect", 2, "after") == "ok"
      if ok then break end
      atoll.sleep(0.1)
    end
    assert.is_true(ok, "no reconnect")
    local _, _, rows = c.call("read", "reconnect", 0)
    assert.same({ 1, "before", 2, "after" }, rows)
    c.j:close()
  end, 60))
end)
