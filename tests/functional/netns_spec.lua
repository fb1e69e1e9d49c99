-- The partition harness (tests/helpers/netns.lua): real nodes in network namespaces of their own
-- on one bridge, cut into groups and healed, and nothing left behind. Pending, with the reason,
-- on a machine where namespaces cannot be made.
local async = require "helpers.async"
local members = require "helpers.members"
local netns = require "helpers.netns"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local shell = require "helpers.shell"
local wait = require "helpers.wait"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local PORT = 7000

-- The machine's own links, by name (the lines of `ip -o link` carry counters and states).
local function root_links()
  local out = {}
  for name in shell.capture("ip -o link"):gmatch("%d+: ([^:%s]+)") do out[#out + 1] = name end
  table.sort(out)
  return table.concat(out, " ")
end

local running = netns.running

describe("the partition harness", function()
  local net, why = netns.create(5)
  if not net then
    pending("needs network namespaces: " .. why)
    return
  end

  local function address(i) return net.nodes[i].ip .. ":" .. PORT end

  -- Member nodes in the namespaces 1..n, all joined through the first; waits until each
  -- sees all up.
  local function cluster(n)
    local views = {}
    for i = 1, n do
      -- (--downing off: each side declares the other down, which is what this spec looks for;
      -- the split-brain spec checks keep-majority)
      local args = { "run", members.app, "--listen", address(i), "--name", "ns" .. i, "--downing", "off" }
      if i > 1 then
        args[#args + 1] = "--join"
        args[#args + 1] = address(1)
      end
      views[i] = net:spawn(i, args, { env = { ATOLL_SECRET = nodes.secret } })
    end
    for i = 1, n do views[i] = members.wrap(views[i], address(i), "ns" .. i) end
    await_all(views, seeing(addresses(views), "up"), 15, "all " .. n .. " up")
    return views
  end

  -- reach(list) -> { [i] = { [j] = "tcp yes udp no"... } }: how node i's namespace reaches the
  -- nodes list[i] (all probes at once).
  local function reach(list)
    local probes = {}
    for i, js in pairs(list) do
      local argv = { "python3", netns.probe, "reach", tostring(wait.seconds(0.5)) }
      for _, j in ipairs(js) do argv[#argv + 1] = net.nodes[j].ip end
      probes[i] = net:start(i, argv)
    end
    local seen = {}
    for i, p in pairs(probes) do
      assert(p:wait(wait.seconds(5)) == 0, p:stderr())
      seen[i] = {}
      for ip, what in p:stdout():gmatch("(%S+) (tcp %a+ udp %a+)") do
        seen[i][tonumber(ip:match("%d+$"))] = what
      end
    end
    return seen
  end

  -- Asserts who reaches whom, TCP and UDP alike: groups as for net:cut.
  local function assert_reach(groups)
    local group_of = {}
    for g, list in ipairs(groups) do
      for _, i in ipairs(list) do group_of[i] = g end
    end
    local list = {}
    for i = 1, #net.nodes do
      list[i] = {}
      for j = 1, #net.nodes do
        if j ~= i then list[i][#list[i] + 1] = j end
      end
    end
    local wrong = {}
    for i, seen in pairs(reach(list)) do
      for j, what in pairs(seen) do
        local want = group_of[i] == group_of[j] and "tcp yes udp yes" or "tcp no udp no"
        if what ~= want then wrong[#wrong + 1] = ("%d -> %d: %s, not %s"):format(i, j, what, want) end
      end
    end
    if #wrong > 0 then error(table.concat(wrong, "\n"), 2) end
  end

  it("runs five nodes, one per namespace, that form one cluster over the bridge", async(function()
    local views = cluster(5)
    -- The process a spec holds is the node itself (ip netns exec execs it): signals reach it.
    local exe = shell.capture("readlink -f /proc/" .. views[3].p:pid() .. "/exe"):gsub("%s+$", "")
    assert.equal(shell.capture("readlink -f " .. shell.quote(node.bin)):gsub("%s+$", ""), exe)
    -- `atoll members` run in a node's namespace reaches it over the bridge.
    local code, out, err = net:exec(2, { node.bin, "members", "--node", address(2), "--json" },
      { env = { ATOLL_SECRET = nodes.secret } })
    assert.equal(0, code, err)
    local view = require("atoll.util.json").decode(out)
    assert.equal(5, #view.members)
    for _, m in ipairs(view.members) do assert.equal("up", m.status, m.address) end
  end, 30))

  it("cuts five nodes into {1,2,3} | {4,5}: each side sees the other down, and heal brings all up",
    async(function()
      local views = cluster(5)
      local left, right = { views[1], views[2], views[3] }, { views[4], views[5] }
      -- Down on both sides within 20 s (6 to 11 s here: with no member left to confirm, the
      -- minority's suspicions run to their longest, and failed probes slow its prober down).
      net:cut { { 1, 2, 3 }, { 4, 5 } }
      local across = {}
      for _, v in ipairs(left) do across[v] = seeing(addresses(right), "down") end
      for _, v in ipairs(right) do across[v] = seeing(addresses(left), "down") end
      await_all(views, function(v) return across[v](v) end, 20, "the other side down")
      -- Within each side nobody was ever declared down.
      for _, side in ipairs { left, right } do
        for _, v in ipairs(side) do
          for _, w in ipairs(side) do
            assert.is_nil(v:first(w.address, "down"), v.name .. " declared " .. w.name .. " down:\n" .. v:describe())
          end
        end
      end
      -- Back up within 10 s (under half a second here): the tombstones each side calls on answer.
      net:heal()
      await_all(views, seeing(addresses(views), "up"), 10, "all five up again")
    end, 60))

  it("drops TCP and UDP between groups only; a new cut replaces the last; heal removes every rule",
    async(function()
      net:cut { { 1, 2, 3 }, { 4, 5 } }
      assert_reach { { 1, 2, 3 }, { 4, 5 } }
      net:cut { { 1, 2 }, { 3, 4 }, { 5 } }
      assert_reach { { 1, 2 }, { 3, 4 }, { 5 } }
      net:heal()
      assert_reach { { 1, 2, 3, 4, 5 } }
      for i = 1, 5 do
        local code, out = net:exec(i, { "nft", "list", "ruleset" })
        assert.equal(0, code)
        assert.equal("", out)
      end
      -- A link taken down at the switch, and brought up again.
      net:link_down(5)
      assert.same({ [1] = "tcp yes udp yes", [5] = "tcp no udp no" }, reach({ [2] = { 1, 5 } })[2])
      net:link_up(5)
      assert_reach { { 1, 2, 3, 4, 5 } }
    end, 30))

  it("stops an open TCP connection across a cut without a reset, and it carries data again after heal",
    async(function()
      local server = net:start(4, { "python3", netns.probe, "serve", net.nodes[4].ip, "9000" })
      server:expect("^listening$", wait.seconds(5))
      local client = net:start(1, { "python3", netns.probe, "connect", net.nodes[4].ip, "9000" })
      client:expect("^connected$", wait.seconds(5))
      server:expect("^accepted$", wait.seconds(5))
      client:write("one\n")
      client:expect("^got one$", wait.seconds(2))
      server:expect("^got one$", wait.seconds(2))
      net:cut { { 1, 2, 3 }, { 4, 5 } }
      client:write("two\n")
      -- Nothing comes back, and neither end hears of it: no echo, no reset, no error.
      assert.same({ nil, "timeout" }, { client:read_line(1.5) })
      assert.same({ nil, "timeout" }, { server:read_line(0) })
      net:heal()
      -- TCP retransmits what the cut dropped: within its next backoff (1.4 s after the send).
      server:expect("^got two$", wait.seconds(5))
      client:expect("^got two$", wait.seconds(5))
      client:close_stdin()
      client:expect("^eof$", wait.seconds(5))
      server:expect("^eof$", wait.seconds(5))
    end, 30))

  it("removes every namespace, link, rule and process of a net it destroys, and what dead runs left",
    async(function()
      local links = root_links()
      -- What a run that died made (its pid runs no more) goes at the next create.
      local dead = tonumber(shell.capture("cat /proc/sys/kernel/pid_max")) - 1
      while running(dead) do dead = dead - 1 end
      local stale = ("atoll-%d-1-1"):format(dead)
      assert.is_true(shell.run("ip netns add " .. stale))
      local other = assert(netns.create(2))
      local kept = shell.capture("ip netns list"):find(stale, 1, true)
      shell.run("ip netns del " .. stale .. " 2>/dev/null")
      assert.is_nil(kept, stale .. " was not removed")
      local p = other:spawn(1, { "run", members.app, "--listen", other.nodes[1].ip .. ":" .. PORT, "--name", "gone" },
        { env = { ATOLL_SECRET = nodes.secret } })
      members.wrap(p, other.nodes[1].ip .. ":" .. PORT, "gone")
      other:cut { { 1 }, { 2 } }
      assert.equal(3, #other:existing())
      other:destroy()
      assert.is_true(p.exited)
      assert.same({}, other:existing())
      assert.equal(links, root_links())
      -- Its guard is gone too.
      wait.retry(function() return not running(other.guard) end, 3, "the guard's exit")
    end, 30))
end)
