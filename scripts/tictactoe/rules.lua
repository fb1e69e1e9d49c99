-- The rules of tic-tac-toe as the game plays them (openapi.yaml's GameState and GameMove): a
-- pure module, no actors, so that the session enforces them and the specs check them alone.
--
--   local g = rules.new(session_id, player_one, player_two, first_player_id)
--   local err = rules.check(g, player, move)   -- nil, or { code = ..., message = ... }
--   rules.apply(g, move)                        -- the board, the turn and the result move on
--
-- A player is { playerId, name, team } (team: "fish" or "rodents"); a move is { playerId,
-- position (0..8), team, teamCharacterId (0..2) }. Who moves is the stream's player, never the
-- message's: check refuses a move whose playerId or team is not the mover's own.
local M = {}

M.TEAMS = { fish = true, rodents = true }

-- The eight lines, as board positions 0..8 (row by row).
M.LINES = {
  { 0, 1, 2 }, { 3, 4, 5 }, { 6, 7, 8 }, -- rows
  { 0, 3, 6 }, { 1, 4, 7 }, { 2, 5, 8 }, -- columns
  { 0, 4, 8 }, { 2, 4, 6 },              -- diagonals
}

local function integer_in(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- new(session_id, one, two, first) -> a game: { sessionId, playerOne, playerTwo, currentPlayerId,
-- first, moves = {}, board = { [position] = playerId }, result = nil }
function M.new(session_id, one, two, first)
  assert(one.team ~= two.team, "the two players are of different teams")
  assert(first == one.playerId or first == two.playerId, "the first mover is one of the two")
  return { sessionId = session_id, playerOne = one, playerTwo = two, currentPlayerId = first,
           first = first, moves = {}, board = {}, result = nil }
end

-- other(g, player_id) -> the other player of the game
function M.other(g, player_id)
  return g.playerOne.playerId == player_id and g.playerTwo or g.playerOne
end

function M.player(g, player_id)
  if g.playerOne.playerId == player_id then return g.playerOne end
  if g.playerTwo.playerId == player_id then return g.playerTwo end
  return nil
end

local function refuse(code, message)
  return { code = code, message = message }
end

-- check(g, player, move) -> nil when `player` may make `move` now, else { code, message }:
-- codes: not_in_game, finished, not_your_turn, malformed, not_yours, occupied
function M.check(g, player, move)
  if M.player(g, player.playerId) == nil then
    return refuse("not_in_game", "you are not a player of this game")
  end
  if g.result then return refuse("finished", "the game is over") end
  if type(move) ~= "table" then return refuse("malformed", "a move is an object") end
  if not integer_in(move.position, 0, 8) then
    return refuse("malformed", "position is an integer from 0 to 8")
  end
  if not integer_in(move.teamCharacterId, 0, 2) then
    return refuse("malformed", "teamCharacterId is 0, 1 or 2")
  end
  if move.playerId ~= player.playerId or move.team ~= M.player(g, player.playerId).team then
    return refuse("not_yours", "a move names its own player and team")
  end
  if g.currentPlayerId ~= player.playerId then return refuse("not_your_turn", "it is not your turn") end
  if g.board[move.position] ~= nil then return refuse("occupied", "that cell is taken") end
  return nil
end

-- line_of(board, player_id) -> the line (a list of three positions) player_id holds, or nil
function M.line_of(board, player_id)
  for _, line in ipairs(M.LINES) do
    if board[line[1]] == player_id and board[line[2]] == player_id and board[line[3]] == player_id then
      return line
    end
  end
  return nil
end

-- apply(g, move): a move check accepted; the board, the moves, whose turn and the result follow.
-- Returns the result when the move ended the game.
function M.apply(g, move)
  local mover = move.playerId
  g.board[move.position] = mover
  g.moves[#g.moves + 1] = { playerId = mover, position = move.position, team = move.team,
                            teamCharacterId = move.teamCharacterId }
  local line = M.line_of(g.board, mover)
  if line then
    g.result = { result = { player = M.player(g, mover) }, line = line }
  elseif #g.moves == 9 then
    g.result = { result = {} }
  else
    g.currentPlayerId = M.other(g, mover).playerId
  end
  return g.result
end

-- forfeit(g, loser_id, reason) -> the result: the other player wins (reason: "timeout" or
-- "disconnected")
function M.forfeit(g, loser_id, reason)
  if g.result then return g.result end
  g.result = { result = { player = M.other(g, loser_id) }, forfeit = { playerId = loser_id, reason = reason } }
  return g.result
end

-- replay(session_id, one, two, first, moves) -> the game those moves make, or nil and the
-- first refusal (a history is valid only if every move was allowed in turn)
function M.replay(session_id, one, two, first, moves)
  local g = M.new(session_id, one, two, first)
  for i, move in ipairs(moves) do
    local who = type(move) == "table" and M.player(g, move.playerId)
    local err = refuse("not_in_game", "not a player of this game")
    if who then err = M.check(g, who, move) end
    if err then return nil, ("move %d: %s"):format(i, err.message) end
    M.apply(g, move)
  end
  return g
end

return M
