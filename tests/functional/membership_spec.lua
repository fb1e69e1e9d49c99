-- Membership between real node processes: joining, failure detection, pauses, leaving,
-- discovery, restarts, lifecycle watch, the UDP door, and `atoll members`.
local atoll = require "atoll"
local async = require "helpers.async"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local members = require "helpers.members"
local namespace = require "helpers.namespace"
local tmp = require "helpers.tmp"

local await_all, seeing, addresses, others = members.await_all, members.seeing, members.addresses,
  members.others

-- Five members: the first starts the cluster, the others join through it.
local function five(prefix, extra)
  local first = members.start(prefix .. "1", extra)
  local views = { first }
  for i = 2, 5 do
    local args = { "--join", first.address }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    views[i] = members.start(prefix .. i, args)
  end
  await_all(views, seeing(addresses(views), "up"), 15, "all five members up")
  return views
end


local function keeper(v, seconds)
  return nodes.named(v.address, "keeper", seconds)
end

-- SIGKILLs members (together) and waits until the others have declared
-- them down (or, with `status`, seen them so); returns the others.
local function kill(views, victims, status)
  status = status or "down"
  local rest = views
  for _, victim in ipairs(victims) do
    victim.p:kill("SIGKILL")
    rest = others(rest, victim)
  end
  for _, victim in ipairs(victims) do
    victim.p:wait(5)
    await_all(rest, function(v) return v:first(victim.address, status) ~= nil end, 15,
      victim.name .. " " .. status)
  end
  return rest
end

-- Waits until every view in `rest` sees a new run at `again`'s address up
-- (not the incarnation `old`), and `again` sees every one of them up, within
-- `seconds` from now.
local function rejoined(rest, again, old, seconds)
  local deadline = atoll.now() + seconds
  await_all(rest, function(v)
    local e = v.members[again.address]
    return e and e.status == "up" and e.incarnation ~= old
  end, seconds, "the new run of " .. again.name .. " up")
  again:await(seeing(addresses(rest), "up"), math.max(0.001, deadline - atoll.now()),
    "every other member up")
end

describe("membership", function()
  before_each(function() nodes.self() end)

  it("has five nodes that join through one see each other up, and `atoll members` shows it", async(function()
    local views = five("join")
    -- Each got a snapshot first (itself, joining), then saw the others
    -- join, and itself go from joining to up.
    for _, v in ipairs(views) do
      assert.equal("snapshot", v.events[1].previous)
      assert.equal(v.address, v.events[1].address)
      assert.equal("up", v:status(v.address))
      for _, w in ipairs(views) do assert.truthy(v:first(w.address, "up"), v.name .. " saw " .. w.name) end
    end
    assert.is_true(keeper(views[3]):majority())
    local code, out, err = node.exec({ "members", "--node", views[2].address },
      { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(0, code, err)
    for _, v in ipairs(views) do
      assert.matches(v.name .. "[ *]*%s+" .. v.address:gsub("%p", "%%%0") .. "%s+up%s", out)
    end
    assert.matches("majority: yes", out)
    assert.matches("probes %d+", out)
    assert.matches("dropped auth 0", out)
    code, out = node.exec({ "members", "--node", views[2].address, "--json" },
      { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(0, code)
    local view = require("atoll.util.json").decode(out)
    assert.equal(5, #view.members)
    assert.is_true(view.majority)
    assert.is_number(view.stats.probes)
    assert.equal(0.5, view.config.probe_interval)
  end, 40))

  it("reports a SIGKILLed node down at every other member within 10 s", async(function()
    local views = five("kill")
    local victim = views[4]
    local t0 = atoll.now()
    victim.p:kill("SIGKILL")
    local rest = others(views, victim)
    await_all(rest, function(v) return v:status(victim.address) == "down" end, 10,
      victim.name .. " down")
    for _, v in ipairs(rest) do
      local took = v:first(victim.address, "down").at - t0
      assert.is_true(took < 10, v.name .. " took " .. took .. " s")
      -- and nobody else was ever declared down
      for _, e in ipairs(v.events) do
        assert.is_true(e.status ~= "down" or e.address == victim.address, v.name .. ": " .. e.address)
      end
    end
    -- Four of five alive: still a majority.
    assert.is_true(keeper(views[1]):majority())
  end, 40))

  it("never declares down a node stopped for 2 s and continued", async(function()
    local views = five("pause")
    local napper = views[2]
    local rest = others(views, napper)
    napper.p:kill("SIGSTOP")
    atoll.sleep(2) -- the pause itself
    napper.p:kill("SIGCONT")
    -- Every member sees it up and not suspect (any suspicion refuted), so no
    -- verdict is still pending anywhere.
    await_all(rest, function(v)
      local _, e = v:status(napper.address)
      return e and e.status == "up" and not e.suspect and v.p:stdout() ~= nil
    end, 10, napper.name .. " up and trusted")
    for _, v in ipairs(rest) do
      assert.is_nil(v:first(napper.address, "down"), v.name .. " declared it down:\n" .. v:describe())
    end
    -- It still answers calls.
    assert.is_true(keeper(napper):majority())
  end, 40))

  it("fails calls pending on a member that goes down with unreachable, and tells its watchers",
    async(function()
      -- (without downing: continued, the member refutes and comes back as the same run)
      local views = five("hang", { "--downing", "off" })
      local caller, sleeper = views[1], views[3]
      local pet = keeper(sleeper):pet()
      assert.is_true(nodes.named(caller.address, "watcher"):watch(pet))
      -- A call from the caller's node to the sleeper's pet, pending when the
      -- sleeper stops: its link stays open, so only membership can fail it.
      local pending = atoll.task(function()
        return { keeper(caller, 60):try(pet, "nap", 50) }
      end)
      atoll.sleep(0.2)
      local t0 = atoll.now()
      sleeper.p:kill("SIGSTOP")
      local ok, kind, message = unpack(pending:wait(20))
      local took = atoll.now() - t0
      assert.is_false(ok)
      assert.equal("unreachable", kind)
      assert.matches("is down", message)
      assert.is_true(took < 10, "failed after " .. took .. " s")
      caller:await(function(v) return #v.terminated > 0 end, 5, "the watch end")
      assert.equal("node down", caller.terminated[1].reason)
      -- New calls fail at once too.
      local t1 = atoll.now()
      local ok2, kind2 = keeper(caller):try(pet, "ping")
      assert.is_false(ok2)
      assert.equal("unreachable", kind2)
      assert.is_true(atoll.now() - t1 < 1)
      -- Continued, it refutes the verdict and comes back up.
      sleeper.p:kill("SIGCONT")
      caller:await(function(v) return v:status(sleeper.address) == "up" end, 10, "it back up")
      assert.equal("pong", pet:ping())
    end, 60))

  it("marks a member down by hand with --downing off; a member that is alive refutes and comes back up",
    async(function()
    local a = members.start("hand1", { "--downing", "off" })
    local b = members.start("hand2", { "--join", a.address, "--downing", "off" })
    local c = members.start("hand3", { "--join", a.address, "--downing", "off" })
    local all = { a, b, c }
    await_all(all, seeing(addresses(all), "up"), 10, "all three up")
    assert.is_true(keeper(a):down(c.address))
    a:await(function(v) return v:first(c.address, "down") ~= nil end, 5, "c down")
    -- c hears of it, raises its version, and is up again at a; b, which
    -- could reach c all along, took a's verdict as a suspicion that c
    -- refuted, and never saw c down.
    a:await(function(v) return v:status(c.address) == "up" end, 10, "c back up")
    b:await(function(v)
      local _, e = v:status(c.address)
      return e and e.status == "up" and not e.suspect and a:status(c.address) == "up"
    end, 10, "c trusted")
    assert.is_nil(b:first(c.address, "down"))
    local ok, err = pcall(keeper(a).down, keeper(a), a.address)
    assert.is_false(ok)
    assert.matches("cannot mark itself down", tostring(err))
    assert.is_false(keeper(a):down("127.0.0.1:1")) -- not a member
  end, 30))

  it("downs a live member for good: the others keep that run down, and it starts again as a new run; "
    .. "every view numbers the members alike, the first node the oldest", async(function()
    local a = members.start("final1")
    local b = members.start("final2", { "--join", a.address })
    local c = members.start("final3", { "--join", a.address })
    local all = { a, b, c }
    await_all(all, seeing(addresses(all), "up"), 10, "all three up")
    -- Seniority: each member's upno is the same in every view; the first
    -- node went up first, so its number is the smallest.
    local upno = {}
    for _, v in ipairs(all) do
      for _, m in ipairs(keeper(v):members()) do
        assert.is_true(m.upno > 0, v.name .. " holds no upno for " .. m.address)
        upno[m.address] = upno[m.address] or m.upno
        assert.equal(upno[m.address], m.upno, v.name .. "'s upno for " .. m.address)
      end
    end
    assert.is_true(upno[a.address] < upno[b.address] and upno[a.address] < upno[c.address],
      ("upnos %d, %d, %d"):format(upno[a.address], upno[b.address], upno[c.address]))

    local old = a.members[c.address].incarnation
    assert.is_true(keeper(a):down_final(c.address))
    await_all({ a, b }, function(v) return v:status(c.address) == "down" end, 5, "c down")
    -- c hears it, says so, and starts again as a new run (in the same process), which joins
    -- the members the old one knew, at a new port.
    c.p:expect("this node was downed", 5, "stderr")
    c.p:expect("the cluster downed this node: .* starting again as a new run", 5, "stderr")
    local _, again = c.p:expect("listening on (%S+)", 5, "stderr")
    c.p:expect("run 1 after the cluster downed this node", 5, "stderr")
    await_all({ a, b }, function(v)
      local e = v.members[again]
      return e and e.status == "up" and e.incarnation ~= old
    end, 10, "c's new run up")
    -- The old run never came back: for 3 s and more, every view holds it down.
    local deadline = atoll.now() + 3
    for _, v in ipairs { a, b } do
      while atoll.now() < deadline and v:pump(deadline - atoll.now()) do end
    end
    for _, v in ipairs { a, b } do
      local e = v.members[c.address]
      assert.equal("down", e.status, v.name .. ":\n" .. v:describe())
      assert.equal(old, e.incarnation)
      local since = v:first(c.address, "down")
      for _, later in ipairs(v.events) do
        assert.is_true(later.address ~= c.address or later.at < since.at or later.status == "down",
          v.name .. " saw c's old run again:\n" .. v:describe())
      end
    end
    -- The new run is the youngest.
    local newest = 0
    for _, m in ipairs(keeper(a):members()) do
      if m.address == again then newest = m.upno end
    end
    assert.is_true(newest > upno[b.address], "the new run's upno " .. newest)
    -- Downed members do not count against the majority.
    assert.is_true(keeper(a):majority())
    local ok, err = pcall(keeper(a).down_final, keeper(a), a.address)
    assert.is_false(ok)
    assert.matches("cannot down itself", tostring(err))
    assert.is_false(keeper(a):down_final("127.0.0.1:1")) -- not a member
  end, 40))

  it("tells a watcher on one node when an actor on another stops", async(function()
    local a = members.start("w1")
    local b = members.start("w2", { "--join", a.address })
    await_all({ a, b }, seeing({ a.address, b.address }, "up"), 10, "both up")
    local watcher = nodes.named(a.address, "watcher")
    local pet, gone = keeper(b):pet(), keeper(b):pet()
    assert.is_true(watcher:watch(pet))
    assert.is_true(watcher:watch(gone))
    assert.is_true(watcher:unwatch(gone))
    pet:quit()
    gone:quit()
    a:await(function(v) return #v.terminated >= 1 end, 5, "the watch end")
    assert.equal("stopped", a.terminated[1].reason)
    assert.matches("@" .. b.address:gsub("%p", "%%%0"), a.terminated[1].ref)
    -- A watch placed on an actor that is gone already ends at once.
    assert.is_true(watcher:watch(gone))
    a:await(function(v) return #v.terminated >= 2 end, 5, "the second watch end")
    assert.equal("stopped", a.terminated[2].reason)
    -- Only those two: the unwatched stop said nothing.
    atoll.sleep(0.2)
    a:pump(0.05)
    assert.equal(2, #a.terminated)
  end, 30))

  it("sees a graceful leave as leaving, then removed", async(function()
    local views = five("leave")
    local leaver = views[5]
    local rest = others(views, leaver)
    leaver.p:kill("SIGTERM")
    local code = leaver.p:wait(10)
    assert.equal(0, code)
    await_all(rest, function(v) return v:first(leaver.address, "removed") ~= nil end, 10,
      leaver.name .. " removed")
    for _, v in ipairs(rest) do
      local leaving, removed = v:first(leaver.address, "leaving"), v:first(leaver.address, "removed")
      assert.truthy(leaving, v.name .. " did not see it leaving:\n" .. v:describe())
      assert.is_true(leaving.at <= removed.at)
      assert.is_nil(v:first(leaver.address, "down"), v.name .. " saw it down")
      assert.is_nil(v:status(leaver.address))
    end
    -- Those left do not count it against the majority.
    assert.is_true(keeper(views[1]):majority())
  end, 40))

  it("rejoins a restarted node as a new incarnation, and its old actors' watchers are told",
    async(function()
      local first = members.start("re1")
      local second = members.start("re2", { "--join", first.address })
      await_all({ first, second }, seeing({ first.address, second.address }, "up"), 10, "both up")
      local old_inc = first.members[second.address].incarnation
      local pet = keeper(second):pet()
      assert.is_true(nodes.named(first.address, "watcher"):watch(pet))
      second.p:kill("SIGKILL")
      second.p:wait(5)
      -- The same address, at once: no time for the failure detector.
      local again = members.start("re2", { "--listen", second.address, "--join", first.address })
      first:await(function(v)
        local e = v.members[second.address]
        return e and e.status == "up" and e.incarnation ~= old_inc
      end, 10, "the new incarnation up")
      first:await(function(v) return #v.terminated > 0 end, 5, "the watch end")
      assert.equal("node down", first.terminated[1].reason)
      -- The old incarnation's actors are gone; the node itself answers.
      local ok, kind = keeper(first):try(pet, "ping")
      assert.is_false(ok)
      assert.is_truthy(kind == "no_such_actor" or kind == "unreachable", kind)
      assert.is_true(keeper(again):majority())
    end, 40))

  it("lets the node the others joined through back in within seconds when it restarts without --join",
    async(function()
      local views = five("back")
      local first = views[1]
      local rest = kill(views, { first })
      local old = rest[1].members[first.address].incarnation
      -- The same address and command: no seed. The others still remember it.
      local again = members.start("back1", { "--listen", first.address })
      rejoined(rest, again, old, 5)
      -- Calls from the others reach it again.
      local pet = keeper(again):pet()
      assert.same({ true, "pong" }, { keeper(views[3]):try(pet, "ping") })
    end, 60))

  it("lets a restarted member whose seed is gone back in through the members that remember it",
    async(function()
      local views = five("orphan")
      local seed, orphan = views[1], views[3]
      local rest = kill(views, { seed, orphan })
      local old = rest[1].members[orphan.address].incarnation
      -- Its own command again: --join a seed that stays dead.
      local again = members.start("orphan3", { "--listen", orphan.address, "--join", seed.address })
      rejoined(rest, again, old, 5)
      -- It said at once that its seed did not answer, and only once, though
      -- it keeps trying it.
      local said = select(2, again.p:stderr():gsub("seed [^\n]* did not answer", ""))
      assert.equal(1, said, again.p:stderr())
      assert.matches("seed " .. seed.address:gsub("%p", "%%%0") .. " did not answer .*keeps trying",
        again.p:stderr())
    end, 60))

  it("finds the node the others joined through again after its tombstone expired, through their seeds",
    async(function()
      -- Quick settings: forgotten 1 s after it is down; seeds that are not
      -- members tried again every 2 s (the push-pull interval).
      local fast = { "--membership", "tombstone=1,push_pull_interval=2" }
      local first = members.start("tomb1", fast)
      local views = { first }
      for i = 2, 5 do
        views[i] = members.start("tomb" .. i, { "--join", first.address, unpack(fast) })
      end
      await_all(views, seeing(addresses(views), "up"), 15, "all five members up")
      local rest = kill(views, { first }, "removed")
      local again = members.start("tomb1", { "--listen", first.address, unpack(fast) })
      rejoined(rest, again, nil, 5)
    end, 60))

  it("brings together two halves of a cluster restarted apart, through their seeds", async(function()
    local fast = { "--membership", "push_pull_interval=2" }
    -- The first node's address, taken by a node that is then gone.
    local gone = members.start("half1", fast)
    local a1 = gone.address
    gone.p:kill("SIGKILL")
    gone.p:wait(5)
    -- One half, while the first node is not there: the third joins through
    -- it (in vain), the fourth and fifth through it or the third.
    local h3 = members.start("half3", { "--join", a1, unpack(fast) })
    local h4 = members.start("half4", { "--join", a1 .. "," .. h3.address, unpack(fast) })
    local h5 = members.start("half5", { "--join", a1 .. "," .. h3.address, unpack(fast) })
    local b = { h3, h4, h5 }
    await_all(b, seeing(addresses(b), "up"), 15, "the second half up")
    -- The other half: the first node again, and the second joining it.
    local h1 = members.start("half1", { "--listen", a1, unpack(fast) })
    local h2 = members.start("half2", { "--join", a1, unpack(fast) })
    local all = { h1, h2, h3, h4, h5 }
    await_all(all, seeing(addresses(all), "up"), 10, "all five members up")
  end, 60))

  it("refuses calls to a member that is down at once, but not the membership's own exchange",
    async(function()
      -- (--downing off: a member declared down by hand is down until it refutes)
      local a = members.start("route1", { "--downing", "off" })
      local b = members.start("route2", { "--join", a.address, "--downing", "off" })
      await_all({ a, b }, seeing({ a.address, b.address }, "up"), 10, "both up")
      local pet = keeper(b):pet()
      local named_ok, named_kind, named_msg, ex_ok, ex_kind, ex_msg = keeper(a):down_then_call(b.address)
      assert.is_false(named_ok)
      assert.equal("unreachable", named_kind)
      assert.matches("is down", named_msg)
      assert.is_true(ex_ok, tostring(ex_kind) .. ": " .. tostring(ex_msg))
      -- b heard it was declared down, refuted, and is up again at a.
      a:await(function(v) return v:first(b.address, "down") and v:status(b.address) == "up" end, 10,
        "b back up")
      assert.same({ true, "pong" }, { keeper(a):try(pet, "ping") })
    end, 30))

  it("shows a node's own `since` no earlier than its process started", async(function()
    local started = require("atoll.c.host").wall() / 1000
    local v = members.start("since")
    for _ = 1, 3 do
      local code, out = node.exec({ "members", "--node", v.address, "--json" },
        { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(0, code)
      local me = require("atoll.util.json").decode(out).members[1]
      assert.equal(v.address, me.address)
      assert.is_true(me.since >= started, ("since %.3f, started %.3f"):format(me.since, started))
      assert.is_true(me.since <= require("atoll.c.host").wall() / 1000)
    end
  end, 30))

  it("refuses bad membership flags with usage errors", async(function()
    local function usage(args, pattern)
      local code, _, err = node.exec(args, { env = { ATOLL_SECRET = nodes.secret } })
      assert.equal(2, code, err)
      assert.matches(pattern, err)
    end
    usage({ "run", members.app, "--join", "127.0.0.1:1" }, "need %-%-listen")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--join", "nowhere" }, "%-%-join must be HOST:PORT")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--membership", "bogus=1" },
      "unknown membership setting 'bogus' %(known: .*probe_interval")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--membership", "probe_interval=fast" },
      "KEY=NUMBER")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--membership", "probe_timeout=1" },
      "probe_timeout must be shorter than probe_interval")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--membership", "keep_unreachable=0.5" },
      "keep_unreachable must be 0 or 1")
    usage({ "run", members.app, "--listen", "127.0.0.1:0", "--discovery", "carrier-pigeon" },
      "clusterd%[:HOST:PORT%] or dns:NAME%[:PORT%]")
    usage({ "members" }, "missing %-%-node")
    -- Settings that are fine are taken, and shown.
    local v = members.start("tuned", { "--membership", "probe_interval=0.25,suspicion_alpha=5",
      "--membership", "probe_timeout=0.1,keep_unreachable=1" })
    local code, out = node.exec({ "members", "--node", v.address, "--json" },
      { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(0, code)
    local view = require("atoll.util.json").decode(out)
    assert.equal(0.25, view.config.probe_interval)
    assert.equal(0.1, view.config.probe_timeout)
    assert.equal(5, view.config.suspicion_alpha)
    assert.equal(1, view.config.keep_unreachable)
    -- A node that cannot be reached: exit code 4.
    code = node.exec({ "members", "--node", "127.0.0.1:1", "--timeout", "1" },
      { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(4, code)
  end, 30))

  it("forms a cluster through clusterd", async(function()
    local dir = tmp.dir("clusterd")
    local pf = dir .. "/port"
    local d = node.start({ "clusterd", "--listen", "127.0.0.1:0", "--port-file", pf },
      { env = { ATOLL_SECRET = nodes.secret } })
    d:expect("nodes can register at (%S+)", 10, "stderr")
    local addr = "127.0.0.1:" .. assert(tmp.read(pf)):match("%d+")
    local views = {}
    for i = 1, 3 do views[i] = members.start("cd" .. i, { "--discovery", "clusterd:" .. addr }) end
    await_all(views, seeing(addresses(views), "up"), 20, "all three up")
    local list = nodes.named(addr, "atoll.clusterd"):list()
    assert.equal(3, #list)
    -- clusterd is not a member itself.
    local code, _, err = node.exec({ "members", "--node", addr }, { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(1, code)
    assert.matches("is not a member of a cluster", err)
    -- A node that leaves deregisters.
    views[3].p:kill("SIGTERM")
    assert.equal(0, views[3].p:wait(10))
    assert.equal(2, #nodes.named(addr, "atoll.clusterd"):list())
    tmp.remove(dir)
  end, 40))

  -- Member nodes in mount namespaces of their own, where /etc/hosts is
  -- `hosts`: names the rest of the machine does not know.
  local function namespaced(hosts)
    local dir = tmp.dir("names")
    tmp.write(dir .. "/hosts", "127.0.0.1 localhost\n" .. hosts)
    local ns = { dir = dir }
    -- start(name, address, args...) -> view; unshare and sh both exec, so
    -- the process is the node, and a kill reaches it.
    function ns.start(name, address, ...)
      local args = table.concat({ ... }, " ")
      local inner = ("mount --bind \"$(realpath %s/hosts)\" /etc/hosts && exec %s run %s --name %s %s")
        :format(dir, node.bin, members.app, name, args)
      local p = node.start_command(namespace.command(inner), { env = { ATOLL_SECRET = nodes.secret } })
      return members.wrap(p, address, name)
    end
    return ns
  end

  it("forms a cluster through a DNS name", async(function()
    -- Three nodes on 127.0.0.2, .3 and .4 at one port; the name resolves
    -- to all three. This process holds its port on 127.0.0.1 only: the same
    -- number is free on the other loopback addresses.
    local port = nodes.self():match(":(%d+)$")
    local ns = namespaced("127.0.0.2 atoll-members.test\n127.0.0.3 atoll-members.test\n"
      .. "127.0.0.4 atoll-members.test\n")
    local views = {}
    for i = 2, 4 do
      local address = "127.0.0." .. i .. ":" .. port
      views[#views + 1] = ns.start("dns" .. i, address, "--listen", address,
        "--discovery", "dns:atoll-members.test")
    end
    await_all(views, seeing(addresses(views), "up"), 20, "all three up")
    tmp.remove(ns.dir)
  end, 40))

  it("works with members known by host name", async(function()
    local port = nodes.self():match(":(%d+)$")
    local ns = namespaced("127.0.0.6 alpha.atoll.test\n127.0.0.7 beta.atoll.test\n")
    local alpha = ns.start("alpha", "alpha.atoll.test:" .. port, "--listen", "127.0.0.6:" .. port,
      "--advertise", "alpha.atoll.test:" .. port)
    local beta = ns.start("beta", "beta.atoll.test:" .. port, "--listen", "127.0.0.7:" .. port,
      "--advertise", "beta.atoll.test:" .. port, "--join", "alpha.atoll.test:" .. port)
    await_all({ alpha, beta }, seeing({ alpha.address, beta.address }, "up"), 10, "both up")
    -- Probes to a host name: a crash is still found.
    beta.p:kill("SIGKILL")
    alpha:await(function(v) return v:status(beta.address) == "down" end, 10, "beta down")
    tmp.remove(ns.dir)
  end, 30))

  it("drops packets that fail authentication or do not decode, and counts them", async(function()
    local a = members.start("udp1")
    local b = members.start("udp2", { "--join", a.address })
    await_all({ a, b }, seeing({ a.address, b.address }, "up"), 10, "both up")
    local ka = keeper(a)
    local before = keeper(b):stats()
    assert.is_true(ka:send_raw(b.address, string.rep("x", 40), false))    -- a forged tag
    assert.is_true(ka:send_raw(b.address, "\x93\x01\x02", true))          -- sealed nonsense
    assert.is_true(ka:send_raw(b.address, string.rep("\xff", 300), true)) -- sealed garbage
    assert.is_true(ka:send_raw(b.address, "tiny", false))                  -- shorter than a tag
    local after
    for _ = 1, 100 do
      after = keeper(b):stats()
      if after.dropped_auth - before.dropped_auth >= 1
        and after.dropped_malformed - before.dropped_malformed >= 3 then break end
      atoll.sleep(0.02)
    end
    assert.equal(1, after.dropped_auth - before.dropped_auth)
    assert.equal(3, after.dropped_malformed - before.dropped_malformed)
    -- Nobody was hurt: both still see each other up.
    assert.equal("up", b:status(a.address))
    assert.is_true(keeper(b):majority())
  end, 30))
end)
