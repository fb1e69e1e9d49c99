-- bench/run journal: persistent actors on one journal. Prints BENCH lines for NAME (sqlite, pg).
--
--   atoll lua bench/journal.lua NAME JOURNAL-SPEC
--   atoll lua bench/journal.lua pg temporary       (starts a PostgreSQL server of its own)
--
--   journal.NAME.emit.rate.c1       durable emits/s, one actor emitting one event at a time
--   journal.NAME.emit.rate.c256     durable emits/s, 256 actors emitting at once (group commit)
--   journal.NAME.emit.p99.ms        99th percentile of one emit's latency in the c256 run
--   journal.NAME.recover.100k.ms    spawn to first answer of an actor with 100,000 events
--   journal.NAME.recover.100k.snap.ms  the same, with a snapshot every 1,000 events
--
-- Each emit is one event of ~40 bytes and returns only once it is on disk (SQLite: WAL,
-- synchronous=FULL; PostgreSQL: its defaults, fsync and synchronous_commit on).
local atoll = require "atoll"
local persistence = require "atoll.persistence"
atoll.log.level("warn")

local name, spec = arg[1], arg[2]
assert(name and spec, "usage: atoll lua bench/journal.lua NAME JOURNAL-SPEC|temporary")
local server
if spec == "temporary" then
  package.path = "tests/?.lua;" .. package.path
  server = require("helpers.postgres").start()
  spec = server.url
end
persistence.configure { journal = spec }
local runtime = require "atoll.runtime"
runtime.default_timeout(120)

local function bench(metric, value, unit, fmt)
  print(("BENCH journal.%s.%s " .. (fmt or "%.0f") .. " %s"):format(name, metric, value, unit))
  io.stdout:flush()
end

-- A counter: the state a game keeps per player or session is about this small.
local function counter(type_name, opts)
  opts.persistent = true
  local C = atoll.actor.define(type_name, opts)
  function C:init(id)
    self.id, self.count, self.sum = id, 0, 0
  end
  function C:persistence_id() return self.id end
  function C:apply(e)
    self.count = self.count + 1
    self.sum = self.sum + e.amount
  end
  function C:snapshot() return { self.count, self.sum } end
  function C:restore(s) self.count, self.sum = s[1], s[2] end
  function C.distributed:count() return self.count end
  -- Emits one event at a time until the deadline; returns { n = count, lat = each latency }.
  function C.distributed:run(deadline)
    local n, lat, now = 0, {}, atoll.now
    while now() < deadline do
      local t = now()
      self:emit { amount = 1, note = "a small event of a game" }
      n = n + 1
      lat[n] = now() - t
    end
    return { n = n, lat = lat }
  end
  -- Emits `total` events in batches, all durable at once per batch.
  function C.distributed:fill(total, batch)
    local events = {}
    for i = 1, batch do events[i] = { amount = 1, note = "a small event of a game" } end
    for _ = 1, total / batch do self:emit_all(events) end
    return self.count
  end
  return C
end

local Counter = counter("BenchCounter", {})
local Snapshotted = counter("BenchSnapshotted", { snapshot_every = 1000 })
local run_id = ("%x"):format(os.time())

-- concurrency(c, seconds) -> emits/s, latencies
local function concurrency(c, seconds)
  local refs = {}
  for i = 1, c do refs[i] = atoll.spawn(Counter, ("bench/%s/c%d/%d"):format(run_id, c, i)) end
  for i = 1, c do refs[i]:count() end -- recovered, running
  local deadline = atoll.now() + seconds
  local t0 = atoll.now()
  local tasks = {}
  for i = 1, c do tasks[i] = atoll.task(function() return refs[i]:run(deadline) end) end
  local total, all = 0, {}
  for i = 1, c do
    local r = tasks[i]:wait(seconds + 60)
    total = total + r.n
    for _, l in ipairs(r.lat) do all[#all + 1] = l end
  end
  local rate = total / (atoll.now() - t0)
  for i = 1, c do atoll.stop(refs[i]) end
  return rate, all
end

-- recover_ms(T, id) -> ms from spawn to the first answer, median of 3
local function recover_ms(T, id, expected)
  local samples = {}
  for k = 1, 3 do
    local t = atoll.now()
    local r = atoll.spawn(T, id)
    local n = r:count()
    samples[k] = (atoll.now() - t) * 1000
    assert(n == expected, ("recovered %d events, expected %d"):format(n, expected))
    atoll.stop(r)
  end
  table.sort(samples)
  return samples[2]
end

atoll.run_for(600, function()
  local rate1 = concurrency(1, 3)
  bench("emit.rate.c1", rate1, "emits/s")
  local rate, lat = concurrency(256, 5)
  bench("emit.rate.c256", rate, "emits/s")
  table.sort(lat)
  bench("emit.p99.ms", lat[math.ceil(#lat * 0.99)] * 1000, "ms", "%.1f")

  local N = 100000
  for _, case in ipairs { { Counter, "recover.100k.ms" }, { Snapshotted, "recover.100k.snap.ms" } } do
    local id = ("bench/%s/%s"):format(run_id, case[2])
    local f = atoll.spawn(case[1], id)
    assert(f:fill(N, 1000) == N)
    atoll.stop(f)
    bench(case[2], recover_ms(case[1], id, N), "ms", "%.1f")
  end
end)
if server then server.stop() end
