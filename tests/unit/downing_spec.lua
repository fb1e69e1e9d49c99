-- The downing rules, as pure functions of a view: who holds a majority, who is downed, which
-- member is oldest. The same functions run in every node (lib/atoll/cluster/downing.lua).
local downing = require "atoll.cluster.downing"

-- A view: members a..e (addresses "10.0.0.1:1".."10.0.0.5:1"), up numbers 1..5 in that order,
-- `me` the member the view is of; `unreachable` and `down` list member letters.
local function view(me, unreachable, down, extra)
  local out = {}
  for i, letter in ipairs { "a", "b", "c", "d", "e" } do
    local m = { address = "10.0.0." .. i .. ":1", name = letter, upno = i, status = "up", reachable = true }
    if letter == me then m.self = true end
    if unreachable and unreachable:find(letter, 1, true) then m.reachable = false end
    if down and down:find(letter, 1, true) then m.status = "down" end
    out[#out + 1] = m
  end
  for _, m in ipairs(extra or {}) do out[#out + 1] = m end
  return out
end

local KM = { strategy = "keep-majority" }

describe("downing", function()
  describe("keep-majority", function()
    it("gives a cut of 3 | 2 the majority to the three, and names the two it downs", function()
      local three = downing.decide(view("a", "de"), KM)
      assert.is_true(three.majority)
      assert.same({ "10.0.0.4:1", "10.0.0.5:1" }, three.unreachable)
      assert.equal(5, three.counted)
      assert.equal(3, three.reached)
      local two = downing.decide(view("d", "abc"), KM)
      assert.is_false(two.majority)
    end)

    it("does not count a suspected member, or one in doubt, as reached, nor down it", function()
      -- Right after a cut of a b | c d e, seen from a: c and d declared dead, e only suspected.
      local v = view("a", "cd")
      v[5].suspect = true
      local d = downing.decide(v, KM)
      assert.is_false(d.majority)
      assert.equal(2, d.reached)
      assert.same({ "10.0.0.3:1", "10.0.0.4:1" }, d.unreachable)
      assert.same({ "10.0.0.5:1" }, d.unsure)
      -- e not even suspected yet, but it failed a confirmation ping (in doubt, that run of it).
      v[5].suspect, v[5].incarnation = false, 7
      d = downing.decide(v, KM, { ["10.0.0.5:1"] = 7 })
      assert.is_false(d.majority)
      assert.same({ "10.0.0.5:1" }, d.unsure)
      -- A new run of e is not in doubt.
      assert.is_true(downing.decide(v, KM, { ["10.0.0.5:1"] = 6 }).majority)
    end)

    it("gives no side of 2 | 2 | 1 a majority", function()
      assert.is_false(downing.decide(view("a", "cde"), KM).majority)
      assert.is_false(downing.decide(view("c", "abe"), KM).majority)
      assert.is_false(downing.decide(view("e", "abcd"), KM).majority)
    end)

    it("keeps the half that holds the oldest member in an even split, the same on both sides", function()
      local four = view("a", nil, nil)
      table.remove(four) -- a, b, c, d
      four[3].reachable, four[4].reachable = false, false -- a b | c d, seen from a
      assert.is_true(downing.decide(four, KM).majority)
      local other = view("c", nil, nil)
      table.remove(other)
      other[1].reachable, other[2].reachable = false, false -- seen from c
      assert.is_false(downing.decide(other, KM).majority)
      -- The oldest is the lowest up number, not the lowest address.
      four[1].upno, four[3].upno = 9, 1
      assert.is_false(downing.decide(four, KM).majority)
    end)

    it("stops counting members once they are down: 5, two crashes downed, then a third is 2 of 3", function()
      -- d crashed and was downed, then e: a, b and c count.
      local v = view("a", nil, "de")
      local d = downing.decide(v, KM)
      assert.equal(3, d.counted)
      assert.is_true(d.majority)
      assert.same({}, d.unreachable)
      -- Then c crashes: a and b are two of three, still a majority, and down c.
      v = view("a", "c", "de")
      d = downing.decide(v, KM)
      assert.equal(3, d.counted)
      assert.equal(2, d.reached)
      assert.is_true(d.majority)
      assert.same({ "10.0.0.3:1" }, d.unreachable)
      -- c, alone, is one of three.
      assert.is_false(downing.decide(view("c", "ab", "de"), KM).majority)
    end)

    it("does not count joining members, but downs them too when they cannot be reached", function()
      local joining = { address = "10.0.0.9:1", upno = 0, status = "joining", reachable = false }
      local d = downing.decide(view("a", nil, nil, { joining }), KM)
      assert.equal(5, d.counted)
      assert.is_true(d.majority)
      assert.same({ "10.0.0.9:1" }, d.unreachable)
    end)

    it("counts leaving members, and not removed ones", function()
      local v = view("a", "d")
      v[5].status = "removed"
      v[4].status = "leaving"
      local d = downing.decide(v, KM)
      assert.equal(4, d.counted)
      assert.equal(3, d.reached)
      assert.is_true(d.majority)
    end)

    it("is a majority of one for a cluster of one", function()
      local d = downing.decide({ { address = "x:1", upno = 1, status = "up", self = true } }, KM)
      assert.is_true(d.majority)
    end)
  end)

  it("static-quorum=N needs N members reached", function()
    local c = assert(downing.parse("static-quorum=3"))
    assert.same({ strategy = "static-quorum", quorum = 3 }, c)
    assert.is_true(downing.decide(view("a", "de"), c).majority)
    assert.is_false(downing.decide(view("a", "cde"), c).majority)
  end)

  it("off always holds a majority", function()
    assert.is_true(downing.decide(view("a", "bcde"), { strategy = "off" }).majority)
  end)

  it("refuses unknown strategies with the list", function()
    local c, err = downing.parse("keep-oldest")
    assert.is_nil(c)
    assert.matches("keep%-majority, static%-quorum=N or off", err)
    assert.is_nil((downing.parse("static-quorum=0")))
  end)

  it("orders members by up number, then address; a member never up is youngest", function()
    local a = { address = "b:1", upno = 1 }
    local b = { address = "a:1", upno = 2 }
    local c = { address = "0:1", upno = 0 }
    assert.is_true(downing.older(a, b))
    assert.is_false(downing.older(b, a))
    assert.is_true(downing.older(b, c))
    assert.is_true(downing.older({ address = "a:1", upno = 2 }, { address = "b:1", upno = 2 }))
  end)

  it("waits, by default, the shortest suspicion plus a probe interval", function()
    local cfg = { probe_interval = 0.5, suspicion_alpha = 4 }
    assert.equal(2.5, downing.default_stable_after(cfg, 5))
    assert.equal(4.5, downing.default_stable_after(cfg, 100))
  end)
end)
