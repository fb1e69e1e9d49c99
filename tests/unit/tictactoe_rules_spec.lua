-- The game's rules alone (scripts/tictactoe/rules.lua): every line wins, a full board without
-- one is a draw, and the session refuses out of turn, occupied cells, moves after the end,
-- moves naming another player or team, and malformed ones.
package.path = "scripts/?.lua;" .. package.path
local rules = require "tictactoe.rules"

local ANN = { playerId = "00000000-0000-4000-8000-000000000001", name = "Ann", team = "fish" }
local BOB = { playerId = "00000000-0000-4000-8000-000000000002", name = "Bob", team = "rodents" }

local function game()
  return rules.new("10000000-0000-4000-8000-000000000000", ANN, BOB, ANN.playerId)
end

local function move(p, position, character)
  return { playerId = p.playerId, position = position, team = p.team, teamCharacterId = character or 0 }
end

-- play(g, positions): alternate moves, first mover first
local function play(g, positions)
  local result
  for _, pos in ipairs(positions) do
    local mover = rules.player(g, g.currentPlayerId)
    assert(rules.check(g, mover, move(mover, pos)) == nil)
    result = rules.apply(g, move(mover, pos))
  end
  return result
end

describe("tic-tac-toe rules", function()
  it("win on each of the eight lines, with the line named", function()
    for _, line in ipairs(rules.LINES) do
      -- Ann takes the line; Bob plays cells off it that make no line of his own
      local g = game()
      local others = {}
      for pos = 0, 8 do
        if pos ~= line[1] and pos ~= line[2] and pos ~= line[3] then others[#others + 1] = pos end
      end
      local bob_cells = { others[1], others[2] } -- (two cells make no line)
      local result = play(g, { line[1], bob_cells[1], line[2], bob_cells[2], line[3] })
      assert.is_not_nil(result, "no result for line " .. table.concat(line, ","))
      assert.same(ANN, result.result.player)
      assert.same(line, result.line)
      assert.equal(5, #g.moves)
    end
  end)

  it("draw on a full board with no line", function()
    local g = game()
    -- Ann 0 2 3 7 8, Bob 1 4 5 6: no three in a line for either
    local result = play(g, { 0, 1, 2, 4, 3, 5, 7, 6, 8 })
    assert.same({ result = {} }, result)
    assert.equal(9, #g.moves)
  end)

  it("refuse a move out of turn, on an occupied cell, or after the end", function()
    local g = game()
    assert.equal("not_your_turn", rules.check(g, BOB, move(BOB, 4)).code)
    rules.apply(g, move(ANN, 4))
    assert.equal("occupied", rules.check(g, BOB, move(BOB, 4)).code)
    assert.equal("not_your_turn", rules.check(g, ANN, move(ANN, 0)).code)
    local h = game()
    play(h, { 0, 3, 1, 4, 2 })
    assert.equal("finished", rules.check(h, BOB, move(BOB, 8)).code)
    assert.equal(5, #h.moves) -- (a refused move is not recorded)
  end)

  it("refuse a move naming another player or team, or malformed", function()
    local g = game()
    assert.equal("not_yours", rules.check(g, ANN, move(BOB, 0)).code)
    assert.equal("not_yours", rules.check(g, ANN, { playerId = ANN.playerId, position = 0, team = "rodents",
      teamCharacterId = 0 }).code)
    assert.equal("malformed", rules.check(g, ANN, move(ANN, 9)).code)
    assert.equal("malformed", rules.check(g, ANN, move(ANN, 1.5)).code)
    assert.equal("malformed", rules.check(g, ANN, move(ANN, 0, 3)).code)
    assert.equal("malformed", rules.check(g, ANN, "0").code)
    local eve = { playerId = "00000000-0000-4000-8000-000000000003", name = "Eve", team = "fish" }
    assert.equal("not_in_game", rules.check(g, eve, move(eve, 0)).code)
  end)

  it("give the game to the other player on a forfeit, once", function()
    local g = game()
    play(g, { 4 })
    local result = rules.forfeit(g, BOB.playerId, "timeout")
    assert.same(ANN, result.result.player)
    assert.same({ playerId = BOB.playerId, reason = "timeout" }, result.forfeit)
    assert.equal(result, rules.forfeit(g, ANN.playerId, "disconnected"))
    assert.equal("finished", rules.check(g, BOB, move(BOB, 0)).code)
  end)

  it("replay a history, and refuse one with a move that was not allowed", function()
    local moves = { move(ANN, 0), move(BOB, 3), move(ANN, 1), move(BOB, 4), move(ANN, 2) }
    local g = assert(rules.replay("s", ANN, BOB, ANN.playerId, moves))
    assert.same(ANN, g.result.result.player)
    local bad = { move(ANN, 0), move(BOB, 0) }
    local none, why = rules.replay("s", ANN, BOB, ANN.playerId, bad)
    assert.is_nil(none)
    assert.equal("move 2: that cell is taken", why)
  end)
end)
