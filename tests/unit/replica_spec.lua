-- The receptionist's replica of one node's entries: changes in sequence order, gaps, whole sets in parts.
local codec = require "atoll.c.codec"
local replica = require "atoll.cluster.replica"

local OWNER, INC = "10.0.0.1:7000", 123456789

local function ref(id, address, inc)
  return codec.make_ref(address or OWNER, inc or INC, id)
end

-- A replica and the events it emits, as "added key id" / "removed key id".
local function fresh()
  local r = replica.new(OWNER, INC)
  local events = {}
  local function emit(ev, key, rf) events[#events + 1] = ev .. " " .. key .. " " .. rf[4] end
  return r, events, emit
end

-- The entries of a replica as sorted "key id type" lines.
local function entries(r)
  local out = {}
  for key, refs in pairs(r.keys) do
    for rf, type_name in pairs(refs) do out[#out + 1] = key .. " " .. rf[4] .. " " .. type_name end
  end
  table.sort(out)
  return out
end

describe("a replica", function()
  it("applies changes in sequence order and ignores those it holds", function()
    local r, events, emit = fresh()
    assert.equal("applied", replica.change(r, 1, "add", "room", ref(1), "Guest", emit))
    assert.equal("applied", replica.change(r, 2, "add", "room", ref(2), "Guest", emit))
    assert.equal("applied", replica.change(r, 3, "remove", "room", ref(1), nil, emit))
    assert.equal("stale", replica.change(r, 2, "add", "room", ref(2), "Guest", emit))
    assert.equal("stale", replica.change(r, 3, "remove", "room", ref(1), nil, emit))
    assert.equal(3, r.seq)
    assert.equal(1, r.count)
    assert.same({ "room 2 Guest" }, entries(r))
    assert.same({ "added room 1", "added room 2", "removed room 1" }, events)
  end)

  it("reports a gap without applying the change after it", function()
    local r, events, emit = fresh()
    assert.equal("applied", replica.change(r, 1, "add", "room", ref(1), "Guest", emit))
    assert.equal("gap", replica.change(r, 3, "add", "room", ref(3), "Guest", emit))
    assert.equal(1, r.seq)
    assert.same({ "room 1 Guest" }, entries(r))
    -- A replica that never heard of its owner is at 0: the first change is 1.
    local r2 = fresh()
    assert.equal("gap", replica.change(r2, 2, "add", "room", ref(1), "Guest"))
    assert.equal("applied", replica.change(r2, 1, "add", "room", ref(1), "Guest"))
    assert.same({ "added room 1" }, events)
  end)

  it("replaces itself with a whole set that came in parts, and emits the difference", function()
    local r, events, emit = fresh()
    replica.change(r, 1, "add", "a", ref(1), "Guest", emit)
    replica.change(r, 2, "add", "b", ref(2), "Guest", emit)
    for i = #events, 1, -1 do events[i] = nil end
    -- The owner's set at 7: a lost, b kept, c and d came.
    assert.equal("partial", (replica.set_part(r, 7, 1, 2, { "b", ref(2), "Guest", "c", ref(3), "Host" }, emit)))
    assert.equal(2, r.seq) -- nothing changes before the last part
    assert.same({}, events)
    assert.equal("applied", (replica.set_part(r, 7, 2, 2, { "d", ref(4), "Guest" }, emit)))
    assert.equal(7, r.seq)
    assert.equal(3, r.count)
    assert.same({ "b 2 Guest", "c 3 Host", "d 4 Guest" }, entries(r))
    table.sort(events, function(x, y)
      if x:sub(1, 1) ~= y:sub(1, 1) then return x:sub(1, 1) == "r" end -- removals come first
      return x < y
    end)
    assert.same({ "removed a 1", "added c 3", "added d 4" }, events)
    -- Changes go on from the set's number.
    assert.equal("stale", replica.change(r, 7, "add", "x", ref(9), "Guest"))
    assert.equal("applied", replica.change(r, 8, "remove", "b", ref(2)))
  end)

  it("drops a set whose parts come out of turn, and takes a whole set as the owner's word", function()
    local r = fresh()
    assert.equal("broken", (replica.set_part(r, 5, 2, 2, { "a", ref(1), "Guest" })))
    assert.equal("partial", (replica.set_part(r, 5, 1, 3, {})))
    assert.equal("broken", (replica.set_part(r, 5, 3, 3, {}))) -- part 2 is missing
    assert.equal("broken", (replica.set_part(r, 5, 2, 3, {}))) -- and the set is gone
    assert.equal(0, r.seq)
    for i = 1, 4 do replica.change(r, i, "add", "k", ref(i), "Guest") end
    -- The same number: the same set, no difference.
    local events = {}
    assert.equal("applied", (replica.set_part(r, 4, 1, 1, { "k", ref(1), "Guest", "k", ref(2), "Guest",
      "k", ref(3), "Guest", "k", ref(4), "Guest" }, function(e) events[#events + 1] = e end)))
    assert.same({}, events)
    -- A lower number than the replica's: only a forgery can have put the replica ahead of its
    -- owner, and the owner's whole set puts it right.
    assert.equal("applied", (replica.set_part(r, 3, 1, 1, { "k", ref(1), "Guest" })))
    assert.equal(3, r.seq)
    assert.equal(1, r.count)
    assert.equal("applied", replica.change(r, 4, "add", "k", ref(2), "Guest"))
  end)

  it("refuses entries that are not its owner's or not entries, and moves past them", function()
    local r, events, emit = fresh()
    local cases = {
      { "add", "room", ref(1, "10.0.0.2:7000"), "Guest" },  -- another node's actor
      { "add", "room", ref(1, OWNER, 42), "Guest" },        -- another run of the owner
      { "add", "", ref(1), "Guest" },                       -- an empty key
      { "add", ("k"):rep(201), ref(1), "Guest" },           -- a key too long
      { "add", 7, ref(1), "Guest" },                        -- not a string
      { "add", "room", "actor#1", "Guest" },                -- not a ref
      { "add", "room", ref(1), ("T"):rep(201) },            -- a type name too long
      { "add", "room", ref(1), nil },                       -- none
      { "drop", "room", ref(1), "Guest" },                  -- an unknown operation
    }
    for i, c in ipairs(cases) do
      local outcome, why = replica.change(r, i, c[1], c[2], c[3], c[4], emit)
      assert.equal("refused", outcome, "case " .. i)
      assert.is_string(why)
      assert.equal(i, r.seq, "case " .. i .. " moves the sequence on")
    end
    for _, seq in ipairs { 0, -1, 1.5, "10", math.huge } do
      assert.equal("refused", (replica.change(r, seq, "add", "room", ref(1), "Guest")))
    end
    assert.equal(0, r.count)
    assert.same({}, events)
    -- In a set, bad entries are left out and counted; the good ones stay.
    local outcome, refused = replica.set_part(r, 20, 1, 1, { "room", ref(1), "Guest", "", ref(2), "Guest",
      "room", ref(3, "10.0.0.9:1"), "Guest" })
    assert.equal("applied", outcome)
    assert.equal(2, refused)
    assert.same({ "room 1 Guest" }, entries(r))
    -- Sets whose numbers or shape are wrong are no sets.
    assert.equal("refused", (replica.set_part(r, 21, 1, 1, { "room", ref(1) })))
    assert.equal("refused", (replica.set_part(r, 21, 2, 1, {})))
    assert.equal("refused", (replica.set_part(r, 21, 1, 1, "entries")))
    assert.equal("refused", (replica.set_part(r, 21, 1, replica.MAX_PARTS + 1, {})))
    assert.equal(20, r.seq)
  end)

  it("holds at most MAX_ENTRIES", function()
    local max = replica.MAX_ENTRIES
    replica.MAX_ENTRIES = 3
    local ok, err = pcall(function()
      local r = fresh()
      for i = 1, 3 do assert.equal("applied", replica.change(r, i, "add", "k", ref(i), "Guest")) end
      assert.equal("refused", (replica.change(r, 4, "add", "k", ref(4), "Guest")))
      assert.equal("applied", replica.change(r, 5, "add", "k", ref(1), "Guest")) -- listed already
      assert.equal("applied", replica.change(r, 6, "remove", "k", ref(1)))
      assert.equal("applied", replica.change(r, 7, "add", "k", ref(4), "Guest"))
      local list = {}
      for i = 1, 5 do list[#list + 1], list[#list + 2], list[#list + 3] = "k", ref(i), "Guest" end
      local outcome, refused = replica.set_part(r, 9, 1, 1, list)
      assert.equal("applied", outcome)
      assert.equal(2, refused)
      assert.equal(3, r.count)
    end)
    replica.MAX_ENTRIES = max
    assert(ok, err)
  end)

  it("splits its entries into parts that make the same set again", function()
    local r = fresh()
    local part = replica.PART
    replica.PART = 4
    local ok, err = pcall(function()
      assert.same({ {} }, replica.parts(r)) -- an empty set is one empty part
      for i = 1, 10 do replica.change(r, i, "add", "k" .. (i % 3), ref(i), "Guest") end
      local parts = replica.parts(r)
      assert.equal(3, #parts)
      local copy = replica.new(OWNER, INC)
      for i, p in ipairs(parts) do
        assert.is_true(#p <= 12)
        local outcome = replica.set_part(copy, r.seq, i, #parts, codec.decode(codec.encode(p)))
        assert.equal(i < #parts and "partial" or "applied", outcome)
      end
      assert.same(entries(r), entries(copy))
      assert.equal(10, copy.seq)
    end)
    replica.PART = part
    assert(ok, err)
  end)

  it("clears, telling what went", function()
    local r, events, emit = fresh()
    replica.change(r, 1, "add", "a", ref(1), "Guest")
    replica.change(r, 2, "add", "a", ref(2), "Guest")
    replica.clear(r, emit)
    table.sort(events)
    assert.same({ "removed a 1", "removed a 2" }, events)
    assert.equal(0, r.count)
    assert.same({}, r.keys)
  end)
end)
