-- Persistent actors: emit, recovery before the first message, snapshots, the single writer,
-- errors that say where they come from. On the SQLite journal in a scratch directory (the other
-- backends are covered by tests/unit/journal_spec.lua and the functional specs).
local atoll = require "atoll"
local persistence = require "atoll.persistence"
local runtime = require "atoll.runtime"
local async = require "helpers.async"
local spec = require "helpers.spec"
local tmp = require "helpers.tmp"
local logs = require "helpers.logs"
local wait = require "helpers.wait"

local catch, fresh = spec.catch, spec.fresh
local dir

setup(function()
  dir = tmp.dir("persistence")
  persistence.configure { journal = "sqlite:" .. dir .. "/journal.db" }
end)

teardown(function()
  tmp.remove(dir)
end)

local ids = 0
local function new_id()
  ids = ids + 1
  return "spec-" .. ids
end

-- An account: deposits are events.
local function account_type(options)
  local T = fresh("Account")
  rawset(T, "__options", options or { persistent = true })
  function T:init(id) self.id, self.balance, self.seen = id, 0, {} end
  function T:persistence_id() return "account/" .. self.id end
  function T:apply(ev)
    self.balance = self.balance + ev.amount
    self.seen[#self.seen + 1] = ev.amount
  end
  function T:snapshot() return { balance = self.balance, seen = self.seen } end
  function T:restore(s) self.balance, self.seen = s.balance, s.seen end
  function T.distributed:deposit(n) return self:emit { amount = n } end
  function T.distributed:deposit_many(list)
    local evs = {}
    for i, n in ipairs(list) do evs[i] = { amount = n } end
    return self:emit_all(evs)
  end
  function T.distributed:state() return self.balance, self.seen, self:last_seq() end
  return T
end

describe("persistent actors", function()
  it("emit durably, apply, and recover the same state after a restart", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    assert.equal(1, a:deposit(10))
    assert.equal(2, a:deposit(5))
    assert.equal(4, a:deposit_many { 1, 2 })
    local balance, seen, seq = a:state()
    assert.equal(18, balance)
    assert.same({ 10, 5, 1, 2 }, seen)
    assert.equal(4, seq)
    atoll.stop(a)
    local b = atoll.spawn(T, id)
    assert.same({ 18, { 10, 5, 1, 2 }, 4 }, { b:state() })
    assert.equal(5, b:deposit(100))
    assert.same({ { seq = 5, event = { amount = 100 } } }, persistence.events("account/" .. id, 4))
  end))

  it("apply what recovery will replay: a decoded copy, not the caller's table", async(function()
    local T = fresh("Notes")
    rawset(T, "__options", { persistent = true })
    function T:init() self.notes = {} end
    function T:persistence_id() return "notes/" .. new_id() end
    function T:apply(ev) self.notes[#self.notes + 1] = ev end
    function T.distributed:note(t) self:emit(t) return self.notes[#self.notes] end
    local n = atoll.spawn(T)
    local applied = n:note { text = "hi", tags = atoll.array() }
    assert.same({ text = "hi", tags = {} }, applied)
  end))

  it("serve messages that arrive during recovery only after it, in order", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    local many = {}
    for i = 1, 2000 do many[i] = 1 end
    for _ = 1, 5 do a:deposit_many(many) end -- 10,000 events to replay
    atoll.stop(a)
    local b = atoll.spawn(T, id) -- recovering now
    for i = 1, 3 do atoll.send(b, "deposit", i) end
    -- Served once the whole history is applied (while the deposits sent
    -- before it wait on the journal: a handler that suspends lets the next
    -- message in).
    assert.is_true(b:state() >= 10000)
    -- Emits of one actor are applied in the order they were made.
    assert.equal(10004, b:deposit(0))
    local balance, seen = b:state()
    assert.equal(10006, balance)
    assert.same({ 1, 2, 3, 0 }, { seen[10001], seen[10002], seen[10003], seen[10004] })
  end))

  it("bound what waits for an actor that is recovering", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    a:deposit_many((function() local t = {} for i = 1, 3000 do t[i] = 1 end return t end)())
    atoll.stop(a)
    local saved = runtime.STARTING_MAX
    runtime.STARTING_MAX = 3
    local b = atoll.spawn(T, id)
    local kinds = {}
    for i = 1, 5 do
      atoll.task(function()
        local ok, err = pcall(b.deposit, b, i)
        kinds[i] = ok and "ok" or atoll.errors.kind(err)
      end)
    end
    atoll.yield() -- the tasks' calls go first
    runtime.STARTING_MAX = saved
    local _ = b:state()
    atoll.sleep(0.05)
    table.sort(kinds)
    assert.same({ "ok", "ok", "ok", "overloaded", "overloaded" }, kinds)
  end))

  it("take a snapshot every N events and recover from it", async(function()
    local T = account_type { persistent = true, snapshot_every = 10 }
    local id = new_id()
    local a = atoll.spawn(T, id)
    for i = 1, 25 do a:deposit(i) end
    atoll.stop(a)
    -- The snapshot save is not awaited by emit: wait for it.
    local snap_seq, snap = wait.retry(function()
      local seq, value = persistence.snapshot("account/" .. id)
      if seq == 20 then return seq, value end
    end, 5, "the snapshot at 20")
    assert.equal(20, snap_seq)
    assert.equal(210, snap.balance)
    local b = atoll.spawn(T, id)
    local balance, seen, seq = b:state()
    assert.equal(325, balance)
    assert.equal(25, #seen)
    assert.equal(25, seq)
  end))

  it("stop an instance whose persistence id another writer took, with conflict", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    a:deposit(1)
    -- Another node's instance writes event 2 first.
    assert.equal("ok", (persistence.request("append", "account/" .. id, 2, atoll.codec.encode { amount = 50 })))
    local out, err
    out = logs(function() err = catch(a.deposit, a, 7) end)
    assert.equal("conflict", err.kind)
    assert.matches("already written", err.message)
    assert.matches("stale", out)
    -- It stopped: its state was stale.
    assert.equal("no_such_actor", catch(a.state, a).kind)
    -- A fresh instance recovers both writers' events, in order.
    local b = atoll.spawn(T, id)
    assert.same({ 51, { 1, 50 }, 2 }, { b:state() })
  end))

  it("refuse a second live instance of one persistence id on a node", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    local err = catch(atoll.spawn, T, id)
    assert.truthy(tostring(err):find("persistence id account/" .. id .. " is live already on this node", 1, true))
    atoll.stop(a)
    assert.equal(0, (atoll.spawn(T, id):state()))
  end))

  it("leave the state as it was when an event cannot be encoded", async(function()
    local T = fresh("Picky")
    rawset(T, "__options", { persistent = true })
    function T:init() self.n = 0 end
    function T:persistence_id() return "picky/" .. new_id() end
    function T:apply() self.n = self.n + 1 end
    function T.distributed:bad() return self:emit { f = function() end } end
    function T.distributed:n() return self.n, self:last_seq() end
    local p = atoll.spawn(T)
    local err = catch(p.bad, p)
    assert.equal("remote", err.kind) -- (bad_argument inside the handler, not the call's)
    assert.matches("a function cannot be sent", err.message)
    assert.same({ 0, 0 }, { p:n() })
  end))

  it("say what is wrong with a type or a call", async(function()
    local NoApply = fresh("NoApply")
    rawset(NoApply, "__options", { persistent = true })
    function NoApply:persistence_id() return "x" end
    assert.matches("has no apply%(event%) hook", tostring(catch(atoll.spawn, NoApply)))
    local NoId = fresh("NoId")
    rawset(NoId, "__options", { persistent = true })
    function NoId:apply() end
    assert.matches("has no persistence_id%(%) hook", tostring(catch(atoll.spawn, NoId)))
    local BadId = fresh("BadId")
    rawset(BadId, "__options", { persistent = true })
    function BadId:apply() end
    function BadId:persistence_id() return 42 end
    assert.matches("must return a string", tostring(catch(atoll.spawn, BadId)))
    local NoSnap = account_type { persistent = true, snapshot_every = 5 }
    rawset(NoSnap, "snapshot", nil)
    assert.matches("lacks snapshot%(%) or restore", tostring(catch(atoll.spawn, NoSnap, new_id())))
    local EmitsEarly = account_type()
    function EmitsEarly:init(id)
      self.id, self.balance, self.seen = id, 0, {}
      self:emit { amount = 1 }
    end
    assert.matches("during init or recovery", tostring(catch(atoll.spawn, EmitsEarly, new_id())))
    local Plain = fresh("Plain")
    function Plain.distributed:go() return self:emit { x = 1 } end
    assert.matches("is not persistent", catch(atoll.spawn(Plain).go, atoll.spawn(Plain)).message)
  end))

  it("stop an actor whose recovery fails, failing what waited with journal", async(function()
    local T = account_type()
    local id = new_id()
    local a = atoll.spawn(T, id)
    a:deposit(1)
    a:deposit(2)
    atoll.stop(a)
    -- The code changed: apply now raises on the second event.
    function T:apply(ev)
      if ev.amount == 2 then error("cannot apply this one") end
      self.balance = self.balance + ev.amount
    end
    local b
    local out = logs(function()
      b = atoll.spawn(T, id)
      local err = catch(b.state, b)
      assert.equal("journal", err.kind)
      assert.truthy(err.message:find("recovery of account/" .. id .. " failed at event 2: ", 1, true))
      assert.matches("cannot apply this one$", err.message)
    end)
    assert.truthy(out:find("recovery of account/" .. id .. " failed", 1, true))
    assert.equal("no_such_actor", catch(b.state, b).kind)
  end))

  it("apply emits of one actor in the order they were made, even when they overlap", async(function()
    local T = fresh("Ordered")
    rawset(T, "__options", { persistent = true })
    function T:init() self.log = {} end
    function T:persistence_id() return "ordered/" .. new_id() end
    function T:apply(ev) self.log[#self.log + 1] = ev.n end
    function T.distributed:add(n) return self:emit { n = n } end
    function T.distributed:log() return self.log end
    local o = atoll.spawn(T)
    local seqs = {}
    local done = atoll.future()
    local left = 50
    for i = 1, 50 do
      atoll.task(function()
        seqs[i] = o:add(i)
        left = left - 1
        if left == 0 then done:set(true) end
      end)
    end
    done:wait(10)
    local log = o:log()
    for i = 1, 50 do
      assert.equal(i, log[i])
      assert.equal(i, seqs[i])
    end
  end))
end)
