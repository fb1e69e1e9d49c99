-- `atoll virtual` against real nodes running tests/functional/apps/virtuals.lua: a node's virtual
-- types and counters, and where one id lives, confirmed by its owner; then its errors and help.
local async = require "helpers.async"
local members = require "helpers.members"
local node = require "helpers.node"
local nodes = require "helpers.cluster"

local APP = "tests/functional/apps/virtuals.lua"
local N = 40 -- ids the driver calls

local function escape(s)
  return (s:gsub("%p", "%%%0"))
end

-- `atoll virtual ARGS...` -> exit code, stdout, stderr
local function virtual(args)
  local argv = { "virtual" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return node.exec(argv, { env = { ATOLL_SECRET = nodes.secret } })
end

local function json_of(args)
  local code, out, err = virtual(args)
  assert.equal(0, code, err)
  return require("atoll.util.json").decode(out)
end

describe("atoll virtual", function()
  before_each(function() nodes.self() end)

  it("shows a node's types and counters, and where an id lives as its owner confirms", async(function()
    local views = { members.start("vc1", {}, { app = APP }) }
    views[2] = members.start("vc2", { "--join", views[1].address }, { app = APP })
    members.await_all(views, members.seeing(members.addresses(views), "up"), 15, "both members up")
    local driver = nodes.named(views[1].address, "driver", 60)
    assert.same({ ok = N, failed = 0, kinds = {} }, driver:run(1, N, 8))

    -- Every id is active on one of the two; the first node forwarded the calls of the other's ids.
    local active, forwarded = 0, 0
    for _, v in ipairs(views) do
      local view = json_of { "--node", v.address, "--json" }
      assert.equal(v.address, view.address)
      assert.is_true(view.running)
      assert.equal(1, #view.types)
      local t = view.types[1]
      assert.same({ name = "VCounter", hosted = true, idle_timeout = 600, active = t.active }, t)
      assert.equal(t.active, view.counters.activations)
      assert.equal(0, view.counters.passivations)
      active, forwarded = active + t.active, forwarded + view.counters.forwards
      local code, out, err = virtual { "--node", v.address, "VCounter" }
      assert.equal(0, code, err)
      assert.matches("^TYPE%s+HOSTED%s+IDLE TIMEOUT%s+ACTIVE\nVCounter%s+yes%s+600s%s+" .. t.active .. "\n\n", out)
      assert.matches("\ncounters of " .. escape(v.address) .. " %(every type%):\nactivations " .. t.active
        .. ", passivations 0, forwards %d+, handoffs 0, overflowed 0\n$", out)
    end
    assert.equal(N, active)
    assert.is_true(forwarded > 0, "no call was forwarded")

    -- Where each of a few ids is, seen from either node: the node its activation answered from.
    local seen = {}
    for id = 1, 6 do
      local served = driver:where(id)
      for _, v in ipairs(views) do
        local view = json_of { "--node", v.address, "VCounter", "--id", tostring(id), "--numeric-id", "--json" }
        assert.same({ type = "VCounter", id = id, owner = served, active = served == v.address }, view.where)
        if served == v.address then
          assert.is_nil(view.owner_answer)
        else
          assert.same({ address = served, owner = served, active = true }, view.owner_answer)
        end
        local code, out, err = virtual { "--node", v.address, "VCounter", "--id", tostring(id), "--numeric-id" }
        assert.equal(0, code, err)
        assert.matches("^NODE%s+SEES AS OWNER%s+ACTIVE ON IT\n" .. escape(v.address) .. " %*%s+" .. escape(served)
          .. "%s+" .. (served == v.address and "yes" or "no") .. "\n", out)
        assert.matches("\nVCounter " .. id .. " is active on its owner, " .. escape(served) .. "   %(%* is the node asked%)\n$",
          out)
      end
      seen[served] = true
    end
    assert.is_true(seen[views[1].address] and seen[views[2].address], "the six ids live on one node only")

    -- An id is a string unless --numeric-id: "3" was never called.
    local view = json_of { "--node", views[1].address, "VCounter", "--id", "3", "--json" }
    assert.equal("3", view.where.id)
    local code, out, err = virtual { "--node", views[1].address, "VCounter", "--id", "3" }
    assert.equal(0, code, err)
    assert.matches('\nVCounter "3" is not active on its owner, 127%.0%.0%.1:%d+: the next call activates it there', out)
    assert.matches("\n%(ids are strings unless %-%-numeric%-id is given: the integer 3 is another id%)\n$", out)

    -- A type the node does not define; a node without virtual actors; a node that does not answer.
    code, out, err = virtual { "--node", views[2].address, "Nope" }
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("does not define the virtual type Nope", err)
    local plain = members.start("vc3", { "--join", views[1].address })
    code, out, err = virtual { "--node", plain.address }
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches(escape(plain.address) .. " runs no virtual actors %(it defines no virtual type%)", err)
    code, out, err = virtual { "--node", "127.0.0.1:1", "--timeout", "1" }
    assert.equal(4, code, err)
    assert.equal("", out)
  end, 90))

  it("says what it comes to when the owner does not answer, disagrees, or is missing", function()
    local client = require "atoll.cli.client"
    local view = { address = "127.0.0.1:7001",
                   where = { type = "Room", id = "lobby", owner = "127.0.0.1:7002", active = false },
                   owner_answer = { address = "127.0.0.1:7002", error = "timeout: no answer in 5 s" } }
    local lines = client.virtual_where_lines(view)
    assert.equal("NODE              SEES AS OWNER   ACTIVE ON IT", lines[1])
    assert.equal("127.0.0.1:7001 *  127.0.0.1:7002  no", lines[2])
    assert.equal("127.0.0.1:7002    ?               ?", lines[3])
    assert.equal('Room "lobby": its owner 127.0.0.1:7002 did not answer (timeout: no answer in 5 s)'
      .. "   (* is the node asked)", lines[5])
    view.owner_answer = { address = "127.0.0.1:7002", owner = "127.0.0.1:7003", active = false }
    assert.matches("127%.0%.0%.1:7001 and 127%.0%.0%.1:7002 name different owners",
      client.virtual_where_lines(view)[5])
    view.where.owner, view.owner_answer = nil, nil
    lines = client.virtual_where_lines(view)
    assert.equal("127.0.0.1:7001 *  -              no", lines[2])
    assert.equal('no member that hosts Room is up in the view of 127.0.0.1:7001: calls to Room "lobby" wait '
      .. "for one   (* is the node asked)", lines[4])
  end)

  it("lists itself in the help and refuses bad arguments with 2", async(function()
    local code, out = node.exec { "--help" }
    assert.equal(0, code)
    assert.matches("\n  atoll virtual %-%-node HOST:PORT %[TYPE%]%s+show a node's virtual actors\n", out)
    code, out = node.exec { "help", "virtual" }
    assert.equal(0, code)
    assert.matches("^Usage: atoll virtual %-%-node HOST:PORT %[TYPE%]", out)
    assert.matches("%-%-numeric%-id%s+ID is an integer", out)
    for _, case in ipairs {
      { { "VCounter" }, "missing %-%-node HOST:PORT" },
      { { "--node", "127.0.0.1:1", "A", "B" }, "unexpected argument 'B' %(one TYPE at most%)" },
      { { "--node", "127.0.0.1:1", "--id", "3" }, "%-%-id needs a TYPE" },
      { { "--node", "127.0.0.1:1", "A", "--numeric-id" }, "%-%-numeric%-id goes with %-%-id ID" },
      { { "--node", "127.0.0.1:1", "A", "--id", "3.5", "--numeric-id" }, "'3%.5' is not an integer" },
      { { "--node", "127.0.0.1:1", "A", "--id", ("x"):rep(201) }, "an ID is 1 to 200 bytes %(this one has 201%)" },
      { { "--node", "127.0.0.1:1", "A", "--id" }, "%-%-id needs a value" },
    } do
      local c, _, err = virtual(case[1])
      assert.equal(2, c, table.concat(case[1], " "))
      assert.matches(case[2], err)
    end
  end))
end)
