-- Virtual actors across a partition: five real nodes, each in a network namespace of its own on
-- one bridge (tests/helpers/netns.lua), hosting the persistent counter VCounter of
-- tests/functional/apps/virtuals.lua. Cut 3 | 2 with keep-majority downing: the minority
-- passivates every activation it had, the majority serves every id (those of the minority once
-- it is down), and after the heal the downed minority comes back as new runs and every id still
-- has one activation, its count exact. Pending, with the reason, where namespaces cannot be made.
local async = require "helpers.async"
local json = require "atoll.util.json"
local netns = require "helpers.netns"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"
local vchurn = require "helpers.vchurn"
local wait = require "helpers.wait"

local PORT = 7000
local APP = "tests/functional/apps/virtuals.lua"
local IDS = 300

describe("virtual actors in a cluster cut in parts", function()
  local net, why = netns.create(5)
  if not net then
    pending("needs network namespaces: " .. why)
    return
  end
  local dir = tmp.dir("vpartition")
  teardown(function() tmp.remove(dir) end)

  local procs = {}
  local function address(i) return net.nodes[i].ip .. ":" .. PORT end
  local function call(i, name, method, args, seconds)
    local argv = { node.bin, "call", "--node", address(i), "--timeout", tostring(seconds or 5), name, method }
    if args then argv[#argv + 1] = json.encode(args) end
    local code, out, err = net:exec(i, argv, { env = { ATOLL_SECRET = nodes.secret }, timeout = (seconds or 5) + 5 })
    if code ~= 0 then return nil, err end
    return json.decode(out)
  end
  local function all_up(list, seconds, what)
    wait.retry(function()
      for _, i in ipairs(list) do
        local v = call(i, "atoll.node", "members")
        if v == nil then return false end
        local st = {}
        for _, m in ipairs(v.members) do st[m.address] = m.status end
        for _, j in ipairs(list) do
          if st[address(j)] ~= "up" then return false end
        end
      end
      return true
    end, seconds, what)
  end
  local function active(i)
    local info = call(i, "driver", "info", nil, 3)
    return info and info.types.VCounter and info.types.VCounter.active
  end
  local function run(i, seconds)
    local r = assert(call(i, "driver", "run", { 1, IDS, 32 }, seconds or 60))
    return r
  end

  it("passivates on the minority, serves every id on the majority, one activation after the heal",
    async(function()
      for i = 1, 5 do
        local args = { "run", APP, "--listen", address(i), "--name", "vp" .. i, "--data-dir", dir }
        if i > 1 then
          args[#args + 1] = "--join"
          args[#args + 1] = address(1)
        end
        procs[i] = net:spawn(i, args, { env = { ATOLL_SECRET = nodes.secret, VIRTUAL_PERSISTENT = "1" } })
      end
      for i = 1, 5 do procs[i]:expect("^ready$", wait.seconds(15)) end
      all_up({ 1, 2, 3, 4, 5 }, 20, "five members up")
      assert.same({ ok = IDS, failed = 0, kinds = {} }, run(1))
      assert.is_true(active(4) + active(5) > IDS / 5, "the two to be cut off hold a share of the ids")

      -- 3 | 2: the two passivate all they held; the three serve every id, the two's once down.
      net:cut { { 1, 2, 3 }, { 4, 5 } }
      wait.retry(function() return active(4) == 0 and active(5) == 0 end, 20,
        "the minority to passivate its activations")
      local r = run(2, 90)
      assert.same({}, r.kinds)
      assert.equal(IDS, r.ok)

      -- Heal: the two were downed, start again as new runs and rejoin; every id once more from
      -- every node.
      net:heal()
      for _, i in ipairs { 4, 5 } do procs[i]:expect("the cluster downed this node", wait.seconds(20), "stderr") end
      all_up({ 1, 2, 3, 4, 5 }, 30, "five members up after the heal")
      for i = 1, 5 do
        r = run(i, 90)
        assert.same({}, r.kinds)
        assert.equal(IDS, r.ok)
      end
      local counts = {}
      for id = 1, IDS do counts[tostring(id)] = assert(call(3, "driver", "get", { id }, 10)) end
      local views = {}
      for i = 1, 5 do views[i] = { name = "vp" .. i, p = procs[i] } end
      local report = vchurn.check(views, counts)
      local detail = table.concat(report.detail, "\n", 1, math.min(#report.detail, 20))
      assert.equal(0, report.duplicates, detail)
      assert.equal(0, report.forks, detail)
      assert.equal(0, report.lost, detail)
      for id = 1, IDS do assert.equal(7, counts[tostring(id)], "the count of " .. id) end
    end, 240))
end)
