-- Virtual refs kept by a persistent actor (tests/functional/apps/vrefs.lua's book), in its events
-- and its snapshot: after the book's node restarts they come back from the journal as virtual
-- refs, equal to the gets that named them, and their calls reach the same virtual actors,
-- wherever the members place them. On the way they cross the network both ways, as arguments
-- and as results.
local async = require "helpers.async"
local members = require "helpers.members"
local nodes = require "helpers.cluster"
local tmp = require "helpers.tmp"

local await_all, seeing, addresses = members.await_all, members.seeing, members.addresses
local APP = "tests/functional/apps/vrefs.lua"

describe("virtual refs", function()
  local dir
  setup(function() dir = tmp.dir("vrefs") end)
  teardown(function() tmp.remove(dir) end)
  before_each(function() nodes.self() end)

  local function start(name, join, book)
    local extra = { "--data-dir", dir }
    if join then
      extra[#extra + 1] = "--join"
      extra[#extra + 1] = join
    end
    return members.start(name, extra, { app = APP, env = { VREF_BOOK = book and "1" or nil } })
  end

  local function both_up(views)
    await_all(views, seeing(addresses(views), "up"), 15, "both members up")
  end

  it("kept in a persistent actor's events and snapshot work after its node restarts", async(function()
    local atoll = require "atoll"
    local virtual = atoll.virtual
    -- Five refs: the book snapshots after the third, so the last two stay events.
    local ids = { "ann", 7, "bob", -12, "carl" }
    local other = start("vr2")
    local first = start("vr1", other.address, true)
    both_up { other, first }
    assert.matches("\nrecovered 0 0 0 1\n", "\n" .. first.p:stdout())

    local book = nodes.named(first.address, "book", 60)
    for i, id in ipairs(ids) do
      -- The deps go with the get that made the ref, not with the ref: the book never sees them.
      assert.equal(i, book:keep(virtual.get("VRCounter", id, { secret = "deps" })))
    end
    assert.same({ 1, 1, 1, 1, 1 }, book:add_all(1))
    local refs = book:refs()
    for i, id in ipairs(ids) do
      assert.equal(virtual.Ref, getmetatable(refs[i]))
      assert.is_true(refs[i] == virtual.get("VRCounter", id))
      assert.is_nil(rawget(refs[i], "deps"))
    end

    first.p:kill("SIGTERM")
    assert.equal(0, first.p:wait(20))
    local again = start("vr1", other.address, true)
    both_up { other, again }
    -- All five back, three from the snapshot, with the virtual ref metatable before anything on
    -- the node loaded atoll.cluster.virtual.
    assert.matches("\nrecovered 5 3 0 1\n", "\n" .. again.p:stdout())
    book = nodes.named(again.address, "book", 60)
    -- The same counters answer, their own state intact.
    assert.same({ 11, 11, 11, 11, 11 }, book:add_all(10))
    refs = book:refs()
    for i, id in ipairs(ids) do assert.is_true(refs[i] == virtual.get("VRCounter", id)) end
  end, 120))
end)
