-- The receptionist between real node processes: check-ins seen everywhere, stopped actors, killed
-- nodes, a listing's order, a healed partition, garbage from the wire, and `atoll receptionist`.
local atoll = require "atoll"
local cluster = require "atoll.cluster"
local async = require "helpers.async"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local members = require "helpers.members"
local wait = require "helpers.wait"
local json = require "atoll.util.json"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local APP = "tests/functional/apps/reception.lua"

-- A listing line the node printed (apps/reception.lua), into view.listings[key]:
-- { events = { { type, at, names (snapshot) | name } ... }, set = { [name] = true } }
local function take_listing(v, line)
  local key, kind, at, rest = line:match("^listing (%S+) (%a+) ([%d%.]+) ?(.*)$")
  if key == nil then return end
  local l = v.listings[key]
  if l == nil then
    l = { events = {}, set = {} }
    v.listings[key] = l
  end
  local e = { type = kind, at = tonumber(at) }
  if kind == "snapshot" then
    e.names = {}
    for n in rest:gmatch("%S+") do
      e.names[#e.names + 1] = n
      l.set[n] = true
    end
  else
    e.name = rest
    l.set[rest] = kind == "added" or nil
  end
  l.events[#l.events + 1] = e
end

-- A member node running the reception app: a members view (helpers/members) that also follows
-- the listings the node prints, with its desk. `digests`: seconds between its anti-entropy digests.
local function start(name, extra, digests)
  local env = digests and { RECEPTION_DIGEST_INTERVAL = tostring(digests) } or nil
  local v = members.start(name, extra, { app = APP, env = env })
  v.listings, v.other = {}, take_listing
  v.desk = nodes.named(v.address, "desk")
  return v
end

-- Five members, the first starting the cluster; each lists `key` (if given) from the start.
local function five(prefix, key, digests, extra)
  local first = start(prefix .. "1", extra, digests)
  local views = { first }
  for i = 2, 5 do
    local args = { "--join", first.address }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    views[i] = start(prefix .. i, args, digests)
  end
  await_all(views, seeing(addresses(views), "up"), 15, "all five members up")
  if key then
    for _, v in ipairs(views) do v.desk:listen(key) end
  end
  return views
end

-- Names (ADDRESS#ID) in the receptionist's order: by address, then actor id.
local function ordered(list)
  local out = {}
  for i, n in ipairs(list) do out[i] = n end
  table.sort(out, function(a, b)
    local aa, ai = a:match("^(.*)#(%d+)$")
    local ba, bi = b:match("^(.*)#(%d+)$")
    if aa ~= ba then return aa < ba end
    return tonumber(ai) < tonumber(bi)
  end)
  return out
end

-- What a view's listing of key holds now, in order.
local function listed(v, key)
  local out = {}
  for n in pairs((v.listings[key] or { set = {} }).set) do out[#out + 1] = n end
  return ordered(out)
end

-- Waits until the listing of `key` of every view holds exactly `expected` (after at least
-- `events` events, if given); returns how long that took.
local function await_listings(views, key, expected, seconds, what, events)
  local want = table.concat(ordered(expected), " ")
  local t0 = atoll.now()
  local ok, err = pcall(await_all, views, function(v)
    local l = v.listings[key]
    return table.concat(listed(v, key), " ") == want and (events == nil or #l.events >= events)
  end, seconds, what)
  if not ok then
    local lines = { tostring(err), "--- wanted: " .. want }
    for _, v in ipairs(views) do lines[#lines + 1] = "--- " .. v.name .. ": " .. table.concat(listed(v, key), " ") end
    error(table.concat(lines, "\n"), 0)
  end
  return atoll.now() - t0
end

local function others(views, except)
  local out = {}
  for _, v in ipairs(views) do
    if not except[v] then out[#out + 1] = v end
  end
  return out
end

local function without(list, gone)
  local out = {}
  for _, n in ipairs(list) do
    if not gone[n] then out[#out + 1] = n end
  end
  return out
end

local function escape(s)
  return (s:gsub("%p", "%%%0"))
end

describe("the receptionist", function()
  before_each(function() nodes.self() end)

  it("shows check-ins from every node on all five, in lookups and listings, until actors stop or check out",
    async(function()
      local views = five("in", "room")
      local guests = {}
      for _, v in ipairs(views) do
        for _ = 1, 2 do guests[#guests + 1] = v.desk:guest("room") end
      end
      local hall = views[1].desk:guest("hall")
      await_listings(views, "room", guests, 5, "every check-in in every listing")
      for _, v in ipairs(views) do
        -- Each listing began before any check-in: an empty snapshot, then one event per check-in.
        local ev = v.listings.room.events
        assert.equal("snapshot", ev[1].type)
        assert.same({}, ev[1].names)
        assert.equal(1 + #guests, #ev)
        for i = 2, #ev do assert.equal("added", ev[i].type) end
        assert.same(ordered(guests), v.desk:lookup("room"))
        assert.same({ hall }, v.desk:lookup("hall"))
      end
      -- The first guest of node 3 stops; node 2 checks its first one out.
      local quitter, leaver = guests[5], guests[3]
      assert.is_true(views[3].desk:quit(quitter))
      assert.is_true(views[2].desk:check_out(leaver, "room"))
      local rest = without(guests, { [quitter] = true, [leaver] = true })
      await_listings(views, "room", rest, 5, "the stopped and checked-out guests gone from every listing")
      for _, v in ipairs(views) do
        assert.same(ordered(rest), v.desk:lookup("room"))
        local last = v.listings.room.events
        assert.equal("removed", last[#last].type)
      end
      -- `atoll receptionist` shows one node's view, and its counters.
      local env = { env = { ATOLL_SECRET = nodes.secret } }
      local code, out, err = node.exec({ "receptionist", "--node", views[4].address, "room" }, env)
      assert.equal(0, code, err)
      assert.matches("^KEY%s+NODE%s+ACTOR%s+TYPE\n", out)
      for _, n in ipairs(rest) do
        local address, id = n:match("^(.*)#(%d+)$")
        assert.matches("\nroom%s+" .. escape(address) .. "%s+" .. id .. "%s+Guest\n", out)
      end
      assert.is_nil(out:find("hall", 1, true))
      assert.matches("entries 9 %(own 2%), members 4", out)
      code, out = node.exec({ "receptionist", "--node", views[4].address, "--json" }, env)
      assert.equal(0, code)
      local view = json.decode(out)
      assert.equal(#rest + 1, #view.entries)
      assert.equal("hall", view.entries[1].key)
      assert.equal(views[4].address, view.address)
      assert.equal(2, view.stats.own)
      assert.equal(4, view.stats.members)
      assert.equal(0, view.stats.gaps)
      assert.equal(0, view.stats.refused)
      assert.is_true(view.stats.changes_received >= 7)
      local code4, _, err4 = node.exec({ "receptionist", "--node", "127.0.0.1:1", "--timeout", "1" }, env)
      assert.equal(4, code4, err4)
    end, 60))

  it("delivers a listing's events in the order of the changes, its snapshot first", async(function()
    local views = five("order")
    local here, there = views[1], views[4]
    local early = { there.desk:guest("order"), there.desk:guest("order"), there.desk:guest("order") }
    wait.retry(function() return #here.desk:lookup("order") == 3 end, 5, "the first check-ins seen")
    here.desk:listen("order")
    there.desk:listen("order")
    local ops = there.desk:churn("order", 200)
    local final = {}
    for _, n in ipairs(early) do final[n] = true end
    for _, op in ipairs(ops) do
      local kind, n = op:match("^(%a+) (%S+)$")
      final[n] = kind == "added" or nil
    end
    local list = {}
    for n in pairs(final) do list[#list + 1] = n end
    await_listings({ here, there }, "order", list, 5, "the churn's end", 1 + #ops)
    for _, v in ipairs { here, there } do
      local ev = v.listings.order.events
      assert.equal("snapshot", ev[1].type)
      assert.same(ordered(early), ev[1].names)
      local seen = {}
      for i = 2, #ev do seen[#seen + 1] = ev[i].type .. " " .. ev[i].name end
      assert.same(ops, seen)
    end
  end, 60))

  it("drops a SIGKILLed node's actors from every listing once the others see it down", async(function()
    local views = five("kill", "room")
    local guests, theirs = {}, {}
    for i, v in ipairs(views) do
      local g = v.desk:guest("room")
      guests[#guests + 1] = g
      if i == 5 then theirs[g] = true end
    end
    await_listings(views, "room", guests, 5, "every check-in")
    local victim = views[5]
    local t0 = atoll.now()
    victim.p:kill("SIGKILL")
    local rest = others(views, { [victim] = true })
    await_listings(rest, "room", without(guests, theirs), 15, "the killed node's guest gone")
    await_all(rest, function(v) return v:first(victim.address, "down") ~= nil end, 5, "the killed node down")
    for _, v in ipairs(rest) do
      local down = v:first(victim.address, "down")
      -- Removed with the verdict (in the same loop turn: the receptionist hears of it before
      -- the app's subscription prints it), not before: a suspicion lasts 2 s at least.
      local ev = v.listings.room.events
      assert.equal("removed", ev[#ev].type)
      assert.is_true(ev[#ev].at - t0 > 1.5, "removed before any verdict could be")
      assert.is_true(math.abs(ev[#ev].at - down.at) < 0.5, "removed apart from the verdict")
      assert.same(ordered(without(guests, theirs)), v.desk:lookup("room"))
    end
  end, 60))

  it("replaces a restarted node's entries with its new run's", async(function()
    -- Digests a minute apart: what the spec sees is the full exchange's doing.
    local a = start("again1", nil, 60)
    local b = start("again2", { "--join", a.address }, 60)
    local c = start("again3", { "--join", a.address }, 60)
    local three = { a, b, c }
    await_all(three, seeing(addresses(three), "up"), 10, "all three up")
    for _, v in ipairs(three) do v.desk:listen("room") end
    local guests = { a.desk:guest("room"), b.desk:guest("room"), c.desk:guest("room") }
    await_listings(three, "room", guests, 5, "every check-in")
    local old = a.members[c.address].incarnation
    c.p:kill("SIGKILL")
    c.p:wait(5)
    -- The same address at once: the new run joins, and the old one is gone with it (membership
    -- says so as the new incarnation appears, long before a failure detector would).
    local again = start("again3", { "--listen", c.address, "--join", a.address }, 60)
    assert(atoll.connect(again.address, 5)) -- this process's link to the address dropped: dial again now
    local fresh = again.desk:guest("room")
    assert.equal(c.address .. "#" .. fresh:match("#(%d+)$"), fresh)
    local expected = { guests[1], guests[2], fresh }
    await_listings({ a, b }, "room", expected, 5, "the old run's guest replaced by the new run's")
    for _, v in ipairs { a, b } do
      local e = v.members[c.address]
      assert.truthy(e and e.incarnation ~= old, "a new incarnation")
      assert.same(ordered(expected), v.desk:lookup("room"))
    end
    wait.retry(function() return table.concat(again.desk:lookup("room"), " ") == table.concat(ordered(expected), " ") end,
      5, "the new run's own view")
  end, 60))

  it("agrees on one view on all five nodes after a partition heals", async(function()
    -- Digests a minute apart: the views agree through the full exchanges that membership (a
    -- member back up) and the links (a link up again) bring, not through anti-entropy.
    -- (--downing off: the stopped side comes back as the same runs, whose entries must agree with
    -- the others' again; with keep-majority the majority downs them and they start again as new
    -- runs, which the singleton and split-brain specs cover)
    local views = five("part", "room", 60, { "--downing", "off" })
    local guests = {}
    for _, v in ipairs(views) do guests[#guests + 1] = v.desk:guest("room") end
    await_listings(views, "room", guests, 5, "every check-in")
    local cut = { [views[4]] = true, [views[5]] = true }
    local majority = others(views, cut)
    -- The stopped side has check-ins queued for the moment it runs again.
    local queued = { views[4].desk:later("room", 0.5), views[5].desk:later("room", 0.5) }
    views[4].p:kill("SIGSTOP")
    views[5].p:kill("SIGSTOP")
    await_all(majority, seeing({ views[4].address, views[5].address }, "down"), 20, "the stopped two down")
    await_listings(majority, "room", { guests[1], guests[2], guests[3] }, 5,
      "the stopped side's guests gone from the majority's listings")
    -- Meanwhile, the majority changes: one guest comes, one stops.
    local newcomer = views[1].desk:guest("room")
    assert.is_true(views[2].desk:quit(guests[2]))
    local t0 = atoll.now()
    views[4].p:kill("SIGCONT")
    views[5].p:kill("SIGCONT")
    -- And the other side changes right after it is continued.
    local late = views[5].desk:guest("room")
    local expected = { guests[1], newcomer, guests[3], guests[4], guests[5], queued[1], queued[2], late }
    local want = ordered(expected)
    -- Within 8 s of the continue: membership brings the two back up (on loopback, at once:
    -- they refute the verdict as soon as they run), and that brings a full exchange each way.
    wait.retry(function()
      for _, v in ipairs(views) do
        local got = v.desk:lookup("room")
        if table.concat(got, " ") ~= table.concat(want, " ") then
          error(v.name .. " looks up " .. table.concat(got, " "), 0)
        end
      end
      return true
    end, 8, "the same lookup on all five")
    local took = atoll.now() - t0
    await_listings(views, "room", expected, 2, "every listing as the lookups")
    print(("\n    (all five agreed %.2f s after the continue)"):format(took))
  end, 90))

  it("refuses garbage from the wire without an error in the log, and says so once", async(function()
    -- Digests every second: the anti-entropy that puts right what the forgeries did comes soon.
    local a = start("junk1", nil, 1)
    local b = start("junk2", { "--join", a.address }, 1)
    await_all({ a, b }, seeing({ a.address, b.address }, "up"), 10, "both up")
    local g = b.desk:guest("room")
    wait.retry(function() return #a.desk:lookup("room") == 1 end, 5, "the check-in at a")
    local ref = b.desk:ref(g)
    local inc = tonumber(b.members[b.address].incarnation, 16)
    local seq = b.desk:stats().seq
    local function forge(method, ...)
      cluster.send_name(a.address, "atoll.node", method, ...)
    end
    forge("reception_change", b.address, inc, seq + 1, "add", ("k"):rep(100000), ref, "Guest") -- a huge key
    forge("reception_change", b.address, inc, seq + 2, "add", "room", g, "Guest")              -- not a ref
    forge("reception_change", 42, inc, seq + 3, "add", "room", ref, "Guest")                   -- no address
    forge("reception_set", b.address, inc, "many", 1, 1, {})                                    -- no number
    forge("reception_digest", b.address, { inc }, seq)                                          -- no incarnation
    forge("reception_pull", nil, nil)
    forge("reception_set", b.address, inc, seq + 9, 1, 1, { "room", ref, "Guest", "", ref, "Guest", 1, 2, 3 })
    local stats = wait.retry(function()
      local s = a.desk:stats()
      return s.refused >= 8 and s
    end, 5, "eight refusals")
    assert.equal(8, stats.refused)
    -- The good entry of the forged set is b's guest: a still finds it.
    assert.same({ g }, a.desk:lookup("room"))
    -- One warning, nothing at error level, and the node goes on.
    local err = a.p:stderr()
    assert.equal(1, select(2, err:gsub("receptionist: refused", "")), err)
    assert.is_nil(err:find(" ERROR ", 1, true), err)
    assert.equal("pong", nodes.named(a.address, "atoll.node"):ping())
    -- b's real changes still reach a: its digest makes a pull b's whole set.
    local g2 = b.desk:guest("room")
    wait.retry(function() return #a.desk:lookup("room") == 2 end, 5, "b's next check-in at a")
    assert.same(ordered({ g, g2 }), a.desk:lookup("room"))
  end, 60))

  it("refuses to check in an actor of another node, naming the rule", async(function()
    local a = start("rule1")
    local b = start("rule2", { "--join", a.address })
    await_all({ a, b }, seeing({ a.address, b.address }, "up"), 10, "both up")
    local ref = b.desk:ref(b.desk:guest())
    local ok, kind, message = a.desk:try_check_in(ref, "room")
    assert.is_false(ok)
    assert.equal("bad_argument", kind)
    assert.matches("check in an actor on its own node", message)
    assert.same({ true, true }, { b.desk:try_check_in(ref, "room") })
  end, 30))
end)
