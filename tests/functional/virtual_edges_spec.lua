-- Virtual actors at their edges, between real nodes (tests/functional/apps/vedges.lua): the
-- defects the review of issue 13 reproduced, each `it` failing before its fix (the comments say
-- what the code did then).
local async = require "helpers.async"
local members = require "helpers.members"
local nodes = require "helpers.cluster"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local APP = "tests/functional/apps/vedges.lua"

local function start(name, join, env)
  local extra = {}
  if join then extra = { "--join", join } end
  return members.start(name, extra, { app = APP, env = env })
end

local function driver(v, seconds)
  return nodes.named(v.address, "driver", seconds or 60)
end

-- an id "PREFIXn" whose owner among `list` (addresses) is `want`, as node v's placement says
-- (rendezvous hashing is a pure function: every node says the same)
local function id_owned(prefix, list, want, v)
  return nodes.named(v, "driver", 10):id_owned(prefix, list, want)
end

local function starts(v, id)
  local n = 0
  for _ in v.p:stdout():gmatch("vstart " .. id:gsub("%p", "%%%0") .. " ") do n = n + 1 end
  return n
end

describe("virtual actors between nodes", function()
  before_each(function() nodes.self() end)

  -- Before the fix: a claim that reaches a node while its activation's init is suspended (or while it waits
  -- for the lease) turns the record back to "waiting" and answers "done"; when init returns,
  -- activate() sets it "active" anyway (virtual.lua:484-493 check nothing after the spawn).
  -- Both nodes then serve the id, for as long as they run.
  it("keeps one activation when a claim comes while init is suspended", async(function()
    local atoll = require "atoll"
    local env = { VR_INIT_SLEEP = "4" }
    local a = start("vra", nil, { VR_INIT_SLEEP = "4", VR_HOST = "0" })
    local b = start("vrb", a.address, env)
    await_all({ a, b }, seeing(addresses { a, b }, "up"), 15, "both up")
    local id = id_owned("slow", { a.address, b.address }, a.address, a.address)
    -- (an id that stays on B keeps B's lease renewed; without it, B's activation of `id` ends up
    -- "active" under a lease that nothing renews: gated for good, every call to it on B stuck)
    local keep = id_owned("keep", { a.address, b.address }, b.address, a.address)
    assert.is_true(driver(b):add(keep, 10))
    -- B is the only host: B activates the id, and its init sleeps 4 s
    local first
    local t1 = atoll.task(function() first = { driver(b):add(id, 30) } end)
    atoll.sleep(0.5)
    assert.equal(1, starts(b, id))
    -- A hosts too now, and owns the id: it claims it from B (activating) and activates it
    driver(a):host()
    atoll.sleep(1)
    local second = { driver(a):add(id, 30) }
    t1:wait(30)
    if os.getenv("VR_DEBUG") then
      local json = require "atoll.util.json"
      print("dump A", json.encode(driver(a):dump()))
      print("dump B", json.encode(driver(b):dump()))
      print("second", json.encode(second))
      print("--- vrb stdout\n" .. b.p:stdout() .. "--- vrb stderr\n" .. b.p:stderr())
      print("--- vra stdout\n" .. a.p:stdout() .. "--- vra stderr\n" .. a.p:stderr())
    end
    assert.is_true(first[1], tostring(first[3]))
    assert.is_true(second[1], tostring(second[3]))
    -- from now on, every call made on either node
    local from_a, from_b = { driver(a):add(id, 10) }, { driver(b):add(id, 10) }
    assert.equal(from_a[2].node, from_b[2].node, ("calls on A run on %s (count %d), calls on B on %s (count %d)")
      :format(from_a[2].node, from_a[2].n, from_b[2].node, from_b[2].n))
    assert.equal(1, starts(a, id) + starts(b, id) - 1) -- one hand-over at most
    for _, v in ipairs { a, b } do v.p:kill("SIGKILL") v.p:wait(5) end
  end, 90))

  -- Before the fix: deps travel only with a call made on the owner's node: a call forwarded to another node
  -- goes by name (atoll.virtual/HOPS/TYPE ID) and accept() there gets deps = nil.
  it("passes the deps of the get to init when the call comes from another node", async(function()
    local a = start("vda", nil, {})
    local b = start("vdb", a.address, {})
    await_all({ a, b }, seeing(addresses { a, b }, "up"), 15, "both up")
    require("atoll").sleep(1) -- (receptionist entries)
    local id = id_owned("d", { a.address, b.address }, a.address, a.address)
    local got = driver(b):deps(id, { name = "Ann" })
    assert.equal(a.address, got.node)
    assert.same({ name = "Ann" }, got.deps)
    for _, v in ipairs { a, b } do v.p:kill("SIGKILL") v.p:wait(5) end
  end, 60))
end)

describe("virtual actors on one real node", function()
  before_each(function() nodes.self() end)

  -- Before the fix: one-way messages to an id that no up member hosts are held with no expiry
  -- (moving.expired: reply_to 0 never expires): acts and held_of grow by one record per id,
  -- for ever. (The same for a type whose hosts are all down, or a type name mistyped.)
  it("keeps one-way messages to ids nobody hosts no longer than a call would wait", async(function()
    local atoll = require "atoll"
    local v = start("vs1", nil, {})
    atoll.sleep(0.5)
    assert.is_true(driver(v):sends("Nobody", 1, 5000))
    -- (a one-way message waits for a host as long as a call would: the default timeout, 5 s)
    require("helpers.wait").retry(function()
      local n = 0
      for _ in pairs(driver(v):dump().acts) do n = n + 1 end
      return n == 0
    end, 10, "the node to drop the records of messages nobody could take")
    v.p:kill("SIGKILL") v.p:wait(5)
  end, 60))

  -- Before the fix: KEY .. name ("atoll.virtual:" .. name) is over the receptionist's 200-byte key limit for
  -- a type name of 187 to 200 bytes, which get, define and the codec accept: watch_type raises
  -- after runtime.set_current(nil) and never restores it, so the calling handler goes on with no
  -- current actor.
  it("refuses a type name too long for its receptionist key, clearly, the handler keeping its actor", async(function()
    local v = start("vl1", nil, {})
    local r = driver(v):long_name(190)
    assert.is_true(r.current, "the handler lost its actor after the call, which failed with: " .. r.call_err)
    assert.is_false(r.ok)
    assert.matches("name is 1 to 186 bytes", r.err)
    assert.is_false(r.call_ok)
    assert.matches("bad_argument: a virtual type's name is 1 to 186 bytes, not 190", r.call_err)
    v.p:kill("SIGKILL") v.p:wait(5)
  end, 60))
end)

describe("virtual actors' held calls", function()
  before_each(function() nodes.self() end)

  -- Before the fix: a call for an id owned by a member whose link is not up (dropped, being dialed) is held
  -- (moving.may_forward: link_up dials and says no), and nothing pumps the held queue again when
  -- the link comes up a few ms later: no timer (singletons have one, HELD_STEP), no link event.
  -- The call waits for its whole timeout unless another call for the same id comes by.
  it("sends a held call on as soon as the link to the owner is up again", async(function()
    local atoll = require "atoll"
    local shell = require "helpers.shell"
    local a = start("vla", nil, {})
    local b = start("vlb", a.address, {})
    await_all({ a, b }, seeing(addresses { a, b }, "up"), 15, "both up")
    atoll.sleep(1)
    local port = a.address:match(":(%d+)$")
    local slow = {}
    -- 0.05 s: the call comes within the link's redial backoff (0.1 s): link_up does not dial, and
    -- nothing dials later; 0.5 s: link_up dials, the link is up in a few ms (B logs "link to A
    -- is up" at once), and the held call still waits
    for try, pause in ipairs { 0.05, 0.5, 0.5 } do
      local id = id_owned("link" .. try .. "-", { a.address, b.address }, a.address, a.address)
      -- drop the TCP connections of A's port (B's link to A among them), then call on B
      shell.run("ss -K '( sport = :" .. port .. " or dport = :" .. port .. " )' >/dev/null 2>&1")
      atoll.sleep(pause)
      local t0 = atoll.now()
      local r = { driver(b):add(id, 5) }
      local took = atoll.now() - t0
      if took > 1 then slow[#slow + 1] = ("%s: %.2f s (%s)"):format(id, took, tostring(r[2] and r[2].node or r[3])) end
      atoll.sleep(0.5)
    end
    if os.getenv("VR_DEBUG") then print(b.p:stderr()) end
    assert.same({}, slow)
    for _, v in ipairs { a, b } do v.p:kill("SIGKILL") v.p:wait(5) end
  end, 90))
end)

describe("virtual actors' records", function()
  before_each(function() nodes.self() end)

  -- Before the fix: a call held for an id (here: a type no member hosts) that times out leaves its record in
  -- acts and its entry in held_of: expired entries are dropped only by a pump, and nothing pumps
  -- a queue but a new call for the same id or a membership change (no timer). Calls to ids of a
  -- type whose hosts are all gone grow acts by one record per id.
  it("keeps no record of calls that timed out", async(function()
    local atoll = require "atoll"
    local v = start("vn0", nil, {})
    atoll.sleep(0.5)
    local d = driver(v, 120)
    d:spray("NoHost", 1, 5000, 0.01, true)
    atoll.sleep(1)
    local records = 0
    for _ in pairs(d:dump().acts) do records = records + 1 end
    assert.equal(0, records, records .. " records left in acts by calls that timed out")
    v.p:kill("SIGKILL") v.p:wait(5)
  end, 60))

  -- Before the fix: every type name a node routes a call for gets a receptionist listing (watch_type), a
  -- `watched` entry, a `heads` entry and a placement, kept for as long as the node runs: calls
  -- to many type names (a typo in a loop, names decoded from other nodes' messages) grow the heap
  -- without bound.
  it("keeps nothing per type name once calls to it ended", async(function()
    local atoll = require "atoll"
    local v = start("vn1", nil, {})
    atoll.sleep(0.5)
    local d = driver(v, 120)
    d:spray("Warm", 1, 2000, 0.01)
    atoll.sleep(1)
    local before = d:mem()
    d:spray("Typo", 1, 20000, 0.01)
    atoll.sleep(2)
    -- (a membership change pumps every record, dropping the expired ones: then measure)
    local w = start("vn2", v.address, {})
    await_all({ v, w }, seeing(addresses { v, w }, "up"), 15, "both up")
    atoll.sleep(1)
    local after = d:mem()
    local records = 0
    for _ in pairs(d:dump().acts) do records = records + 1 end
    assert.is_true(after - before < 1024, ("%.0f KiB more after calls to 20,000 type names (%d records in acts)")
      :format(after - before, records))
    for _, p in ipairs { v, w } do p.p:kill("SIGKILL") p.p:wait(5) end
  end, 120))
end)
