-- A player: a virtual actor per player id. A player's connections live on the gateway nodes that
-- accepted them; each has a small stream actor there that attaches to its player (wherever the
-- cluster activates it) and relays between the connection and the player. The player relays the
-- lobby's and its session's news to its streams, and its moves and readiness to them.
--
--   local p = atoll.virtual.get(player.TYPE, id, info)   -- info: { playerId, name, team }
--   p:attach("lobby" | "game", stream_ref, info) -> what the stream shows first
--   p:ready() / p:cancel() / p:move(move)
--
-- A stream actor hears deliver(message), message being one of openapi.yaml's LobbyMessage or
-- SessionMessage bodies. It attaches again every ATTACH_EVERY seconds: that keeps its player
-- active, and lets a player activated anew (after a failover) know its streams again. A player
-- keeps nothing durable of its own: who it is comes with every get and attach, and which game it
-- plays the lobby knows.
local atoll = require "atoll"

local M = {}

M.TYPE = "tictactoe.Player"
M.SESSION = "tictactoe.Session"
M.LOBBY = "tictactoe.lobby"
M.ATTACH_EVERY = 20 -- seconds between a stream's attachments
M.LOBBY_CAP = 100   -- players per list in the lobby state a stream is shown first

local Player = atoll.actor.define(M.TYPE)
M.Player = Player

function Player:init(id, info)
  self.id = id
  self.info = info
  self.streams = { lobby = {}, game = {} } -- kind -> { ref -> true }
  self.session = nil
end

local function lobby(seconds)
  return atoll.singleton.ref(M.LOBBY, seconds or 10)
end

local function session(sid)
  return atoll.virtual.get(M.SESSION, sid, nil, 10)
end

local function relay(self, kind, message)
  for ref in pairs(self.streams[kind]) do atoll.send(ref, "deliver", message) end
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- attach(kind, ref, info) -> for "lobby": { lobby = LobbyState, session = id or nil }; for
-- "game": { game = GameState or nil }. The stream is told from now on.
function Player.distributed:attach(kind, ref, info)
  if self.streams[kind] == nil then error("a stream is a lobby or a game stream", 0) end
  if type(info) == "table" then self.info = info end
  local new = not self.streams[kind][ref]
  if new then
    self.streams[kind][ref] = true
    atoll.watch(ref)
  end
  if self.session == nil then self.session = lobby():playing(self.id) end
  if kind == "lobby" then
    local state = lobby():join(self.info)
    return { lobby = state, session = self.session }
  end
  if self.session == nil then return { game = nil } end
  local s = session(self.session)
  local game = new and s:connected(self.id) or s:state()
  return { game = game }
end

function Player.distributed:detach(kind, ref)
  if self.streams[kind] and self.streams[kind][ref] then
    self.streams[kind][ref] = nil
    atoll.unwatch(ref)
    self:gone(kind)
  end
end

-- A player whose last game stream went is away: its session starts the grace period.
function Player:gone(kind)
  if kind == "game" and self.session and count(self.streams.game) == 0 then
    atoll.send(session(self.session), "disconnected", self.id)
  end
end

function Player:terminated(ref)
  for kind, set in pairs(self.streams) do
    if set[ref] then
      set[ref] = nil
      self:gone(kind)
    end
  end
end

function Player.distributed:ready()
  return lobby():ready(self.id)
end

function Player.distributed:cancel()
  return lobby():cancel(self.id)
end

-- move(move) -> { ok, game } | { error, code }: the session decides; the player id is this
-- player's, whatever the message says
function Player.distributed:move(move)
  if self.session == nil then self.session = lobby():playing(self.id) end
  if self.session == nil then return { error = "you are not in a game", code = "not_in_game" } end
  return session(self.session):move(self.id, move)
end

-- lobby_event(message): the lobby's news for this player (a session started)
function Player.distributed:lobby_event(message)
  if message.type == "started" and message.game then
    self.session = message.game.sessionId
    relay(self, "lobby", { message = { type = "started", game = message.game } })
  end
end

-- session_event(session_id, message): a move (to the game streams: the mover's copy is its
-- acknowledgement) or the end (to both kinds of streams)
function Player.distributed:session_event(sid, message)
  if message.type == "move" then
    relay(self, "game", { message = message.move })
  elseif message.type == "started" then
    self.session = sid
  elseif message.type == "finished" then
    relay(self, "game", { message = { type = "finished", game = message.game } })
    relay(self, "lobby", { message = { type = "finished", game = message.game } })
    if self.session == sid then self.session = nil end
  end
end

atoll.virtual.define(Player, { idle_timeout = 3 * M.ATTACH_EVERY })

-- host(): this node may run players
function M.host()
  atoll.virtual.host(Player)
end

return M
