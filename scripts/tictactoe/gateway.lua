-- The game's HTTP gateway (openapi.yaml): /matchmaking and /game as message streams (JSON lines
-- both ways, WebSocket, or SSE for the server's side). The player comes from the stream's
-- headers (player_id, player_name, player_team), or from the query string (a browser cannot set
-- a WebSocket's headers), never from a message.
--
-- Each stream has a small actor on this node, its connection, which attaches to the player's
-- virtual actor (wherever it runs) and relays what the player tells it to the stream; what the
-- client sends goes to the player. Lobby states are fetched once per change and shared by every
-- lobby stream of this node (the feed), at most a few times a second.
local atoll = require "atoll"
local http = atoll.http
local player_mod = require "tictactoe.player"

local M = {}

M.FEED_EVERY = 0.25 -- seconds: lobby states go out at most this often
M.LOBBY_CAP = 100   -- players per list in a lobby state (totals say how many in all)

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local TEAMS = { fish = true, rodents = true }

-- player(req) -> { playerId, name, team } | nil, why
function M.player(req)
  local h, q = req.headers, req.query or {}
  local id = h.player_id or q.player_id
  local name = h.player_name or q.player_name
  local team = h.player_team or q.player_team
  if id == nil or not id:match(UUID) then return nil, "the player_id header must be a UUID" end
  if name == nil or name == "" or #name > 64 then return nil, "the player_name header is 1 to 64 bytes" end
  if not TEAMS[team] then return nil, "the player_team header must be fish or rodents" end
  return { playerId = id:lower(), name = name, team = team }
end

---------------------------------------------------------------------------
-- Connections: the local actors that stand for a stream
---------------------------------------------------------------------------

local streams = {} -- key -> the http stream (a local object: it never leaves this node)
local keys = 0

local Connection = atoll.actor.define "tictactoe.Connection"

function Connection:init(key)
  self.key = key
  self.outbox = { head = 1, tail = 0 }
end

-- deliver(message): to the client, in order (one sender at a time: a send may wait for a slow
-- reader, and the next message waits behind it)
function Connection.distributed:deliver(message)
  local q = self.outbox
  q.tail = q.tail + 1
  q[q.tail] = message
  if self.sending then return end
  self.sending = true
  while q.head <= q.tail do
    local m = q[q.head]
    q[q.head] = nil
    q.head = q.head + 1
    local s = streams[self.key]
    if s then s:send(m) end
  end
  self.sending = false
end

local function connect(stream)
  keys = keys + 1
  streams[keys] = stream
  return atoll.spawn(Connection, keys), keys
end

local function disconnect(conn, key)
  streams[key] = nil
  atoll.stop(conn)
end

---------------------------------------------------------------------------
-- The lobby feed: one subscription to the lobby per node, one fetch per change
---------------------------------------------------------------------------

local lobby_streams = {} -- key -> the connection of a lobby stream
local Feed = atoll.actor.define "tictactoe.LobbyFeed"

function Feed:init()
  self.version = -1
  self.sent = -1
  atoll.every(5, function() self:subscribe() end) -- (again: the lobby may have moved)
  atoll.after(0, function() self:subscribe() end)
end

function Feed:subscribe()
  local ok, version = pcall(function()
    return atoll.singleton.ref(player_mod.LOBBY, 5):subscribe(atoll.self())
  end)
  if ok and version ~= self.version then Feed.distributed.lobby_changed(self, version) end
end

function Feed.distributed:lobby_changed(version)
  self.version = version
  if self.pending then return end
  self.pending = true
  atoll.after(M.FEED_EVERY, function()
    self.pending = false
    local ok, state = pcall(function() return atoll.singleton.ref(player_mod.LOBBY, 5):state(M.LOBBY_CAP) end)
    if not ok then return end
    local message = { message = state }
    for _, conn in pairs(lobby_streams) do atoll.send(conn, "deliver", message) end
  end)
end

local feed = nil

local function ensure_feed()
  feed = feed or atoll.spawn(Feed)
end

---------------------------------------------------------------------------
-- The routes
---------------------------------------------------------------------------

local function is_heartbeat(m)
  return type(m) == "table" and next(m) == nil
end

-- A stream's life: attach, relay what the client says, attach again now and then, detach.
-- Everything the client is sent goes through the stream's connection, in order: say(message).
local function serve(kind, req, stream, on_message, first_messages, on_end)
  local player, why = M.player(req)
  if not player then return stream:reject(400, why) end
  local conn, key = connect(stream)
  local p = atoll.virtual.get(player_mod.TYPE, player.playerId, player, 10)
  local ok, first = pcall(p.attach, p, kind, conn, player)
  if not ok then
    disconnect(conn, key)
    return stream:reject(503, "the game is not reachable now: " .. tostring(first))
  end
  local function say(message) conn:deliver(message) end
  local again = atoll.every(player_mod.ATTACH_EVERY, function()
    pcall(p.attach, p, kind, conn, player)
  end)
  for _, m in ipairs(first_messages(player, first, conn)) do say(m) end
  for msg in stream:messages() do
    local m = type(msg) == "table" and msg.message
    if not is_heartbeat(m) then
      local stop = on_message(player, p, m, say)
      if stop then break end
    end
  end
  again:cancel()
  if on_end then on_end() end
  pcall(p.detach, p, kind, conn)
  disconnect(conn, key)
end

http.stream("/matchmaking", function(req, stream)
  ensure_feed()
  local key
  serve("lobby", req, stream, function(player, p, m, say)
    if type(m) ~= "table" then
      say({ error = "expected a PlayerLobbyMessage: {\"message\": PlayerStatusUpdate | {}}" })
    elseif m.status == "ready" then
      local ok, res = pcall(p.ready, p)
      if ok then
        say({ message = { player = player, status = "ready" } })
      else
        say({ error = tostring(res) })
      end
    elseif m.status == "cancel" then
      pcall(p.cancel, p)
      say({ message = { player = player, status = "connect" } })
    elseif m.status == "disconnect" then
      return true
    elseif m.status ~= "connect" then
      say({ error = "status is connect, ready, cancel or disconnect" })
    end
  end, function(player, first, conn)
    keys = keys + 1
    key = keys
    lobby_streams[key] = conn
    return { { message = { player = player, status = "connect" } }, { message = first.lobby } }
  end, function()
    if key then lobby_streams[key] = nil end
  end)
end)

http.stream("/game", function(req, stream)
  serve("game", req, stream, function(_, p, m, say)
    if type(m) ~= "table" then
      say({ error = "expected a PlayerSessionMessage: {\"message\": GameMove | {}}" })
      return
    end
    local ok, res = pcall(p.move, p, m)
    if not ok then
      say({ error = tostring(res) })
    elseif res.error then
      say({ error = res.error, code = res.code })
    end
    -- (an accepted move comes back to this stream from the session, as its acknowledgement)
  end, function(_, first)
    if first.game then return { { message = { type = "started", game = first.game } } } end
    return {}
  end)
end)

return M
