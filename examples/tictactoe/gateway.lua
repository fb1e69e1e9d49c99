-- The tic-tac-toe API of openapi.yaml: /matchmaking and /game as message streams (JSON lines,
-- WebSocket or SSE). The game behind them comes later; for now each route checks the player's
-- headers and messages and answers as the API says, so that clients can be built against it:
--   /matchmaking  PlayerLobbyMessage in; LobbyMessage out: the player's status updates echoed,
--                 and the lobby's state once the player is ready
--   /game         PlayerSessionMessage in; SessionMessage out: each valid move echoed
local atoll = require "atoll"
local http = atoll.http

local M = {}

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local TEAMS = { fish = true, rodents = true }

-- player(req) -> Player | nil, why
function M.player(req)
  local h = req.headers
  local id, name, team = h.player_id, h.player_name, h.player_team
  if id == nil or not id:match(UUID) then return nil, "the player_id header must be a UUID" end
  if name == nil or name == "" then return nil, "the player_name header is required" end
  if not TEAMS[team] then return nil, "the player_team header must be fish or rodents" end
  return { playerId = id:lower(), name = name, team = team }
end

local function is_heartbeat(m)
  return type(m) == "table" and next(m) == nil
end

local function integer_in(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

-- move_error(m, player) -> nil if m is a valid GameMove of this player, else why not
function M.move_error(m, player)
  if type(m) ~= "table" then return "a move is an object" end
  if m.playerId ~= player.playerId then return "playerId must be the player's own id" end
  if not integer_in(m.position, 0, 8) then return "position must be an integer from 0 to 8" end
  if m.team ~= player.team then return "team must be the player's team" end
  if not integer_in(m.teamCharacterId, 0, 2) then return "teamCharacterId must be 0, 1 or 2" end
  return nil
end

local STATUSES = { connect = true, ready = true, disconnect = true }

http.stream("/matchmaking", function(req, stream)
  local player, why = M.player(req)
  if not player then return stream:reject(400, why) end
  stream:send({ message = { player = player, status = "connect" } })
  for msg in stream:messages() do
    local m = type(msg) == "table" and msg.message
    if is_heartbeat(m) then -- luacheck: ignore 542 (alive; nothing to say)
    elseif type(m) == "table" and STATUSES[m.status] then
      stream:send({ message = { player = player, status = m.status } })
      if m.status == "ready" then
        stream:send({ message = { waitingPlayers = atoll.array {}, readyPlayers = { player },
          completedSessions = atoll.array {} } })
      elseif m.status == "disconnect" then
        break
      end
    else
      stream:send({ error = "expected a PlayerLobbyMessage: {\"message\": PlayerStatusUpdate | {}}" })
    end
  end
end)

http.stream("/game", function(req, stream)
  local player, why = M.player(req)
  if not player then return stream:reject(400, why) end
  for msg in stream:messages() do
    local m = type(msg) == "table" and msg.message
    if is_heartbeat(m) then -- luacheck: ignore 542 (alive)
    else
      local err = M.move_error(m, player)
      if err then
        stream:send({ error = err })
      else
        stream:send({ message = m })
      end
    end
  end
end)

return M
