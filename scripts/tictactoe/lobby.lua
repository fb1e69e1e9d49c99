-- The lobby: a persistent cluster singleton that knows who is waiting, who is ready, which games
-- run and which finished, and pairs a ready player with a ready player of the other team (fish
-- and rodents) at once, at random among those. A lobby that moves (hand-over or failover) keeps
-- all of it: it is the replay of its events.
--
--   local lobby = atoll.singleton.host(lobby.NAME, lobby.Lobby)   -- on the nodes that may run it
--   atoll.singleton.ref(lobby.NAME):join(player)   -- then ready(id), cancel(id), leave(id)
--
-- Events: { "joined", player }, { "ready", id }, { "cancelled", id }, { "left", id },
-- { "matched", session_id, one, two, first }, { "finished", game }.
--
-- A matched player leaves the ready set at once (one player is never matched twice) and is in
-- at most one session; after the game both are back among the waiting. Each finished game is
-- recorded once (the session reports it until the lobby answers; a report of a session that is
-- not running here is a repeat, and ignored). Changes go to subscribers (each gateway node's
-- lobby feed) as they happen, numbered, with the whole state on subscribing.
local atoll = require "atoll"

local M = {}

M.NAME = "tictactoe.lobby"
M.COMPLETED_MAX = 20 -- finished games kept, newest first
M.SESSION = "tictactoe.Session"
M.PLAYER = "tictactoe.Player"

local Lobby = atoll.actor.define("tictactoe.Lobby", { persistent = true, snapshot_every = 200 })
M.Lobby = Lobby

local TEAMS = { fish = "rodents", rodents = "fish" }

-- init([name]): name ("lobby" by default) names its stream, tictactoe/NAME
function Lobby:init(name)
  self.name = name or "lobby"
  self.players = {}   -- id -> player ({ playerId, name, team })
  self.ready = {}     -- id -> order it got ready in (a number)
  self.playing = {}   -- id -> session id
  self.sessions = {}  -- session id -> { one, two }
  self.completed = {} -- newest first: GameState summaries
  self.totals = { games = 0, fish = 0, rodents = 0, draws = 0 }
  self.order = 0
  self.watchers = {}  -- subscribers (transient): ref -> true
  self.version = 0
  -- After a move or a failover, every session matched here is started again (start is
  -- idempotent): one matched just before the lobby's node went may never have been. (A timer of
  -- a singleton waits, as its messages do, until it has recovered.)
  atoll.after(0, function()
    for sid, s in pairs(self.sessions) do
      local one, two = self.players[s.one], self.players[s.two]
      if one and two then M.start_session(sid, one, two, s.first) end
    end
  end)
end

function Lobby:persistence_id()
  return "tictactoe/" .. self.name
end

function Lobby:apply(e)
  local kind = e[1]
  if kind == "joined" then
    local p = e[2]
    self.players[p.playerId] = p
  elseif kind == "ready" then
    self.order = self.order + 1
    self.ready[e[2]] = self.order
  elseif kind == "cancelled" then
    self.ready[e[2]] = nil
  elseif kind == "left" then
    self.players[e[2]], self.ready[e[2]] = nil, nil
  elseif kind == "matched" then
    local sid, one, two = e[2], e[3], e[4]
    self.ready[one], self.ready[two] = nil, nil
    self.playing[one], self.playing[two] = sid, sid
    self.sessions[sid] = { one = one, two = two, first = e[5] }
  elseif kind == "finished" then
    local game = e[2]
    local s = self.sessions[game.sessionId]
    if s then
      self.sessions[game.sessionId] = nil
      if self.playing[s.one] == game.sessionId then self.playing[s.one] = nil end
      if self.playing[s.two] == game.sessionId then self.playing[s.two] = nil end
    end
    table.insert(self.completed, 1, game)
    self.completed[M.COMPLETED_MAX + 1] = nil
    local t = self.totals
    t.games = t.games + 1
    local winner = game.result and game.result.result and game.result.result.player
    if winner then t[winner.team] = (t[winner.team] or 0) + 1 else t.draws = t.draws + 1 end
  end
end

function Lobby:snapshot()
  return { players = self.players, ready = self.ready, playing = self.playing, sessions = self.sessions,
           completed = self.completed, totals = self.totals, order = self.order }
end

function Lobby:restore(v)
  for k, val in pairs(v) do self[k] = val end
end

-- The lists of LobbyState (openapi.yaml), capped at `cap` each (totals say how many in all).
local function state_of(self, cap)
  cap = cap or math.huge
  local waiting, ready = {}, {}
  local nwaiting, nready = 0, 0
  local ready_list = {}
  for id, order in pairs(self.ready) do
    if not self.playing[id] then ready_list[#ready_list + 1] = { id, order } end
  end
  table.sort(ready_list, function(a, b) return a[2] < b[2] end)
  for _, r in ipairs(ready_list) do
    nready = nready + 1
    if nready <= cap then ready[#ready + 1] = self.players[r[1]] end
  end
  local ids = {}
  for id in pairs(self.players) do
    if not self.ready[id] and not self.playing[id] then ids[#ids + 1] = id end
  end
  table.sort(ids)
  for _, id in ipairs(ids) do
    nwaiting = nwaiting + 1
    if nwaiting <= cap then waiting[#waiting + 1] = self.players[id] end
  end
  local playing = 0
  for _ in pairs(self.sessions) do playing = playing + 1 end
  return { waitingPlayers = atoll.array(waiting), readyPlayers = atoll.array(ready),
           completedSessions = atoll.array(self.completed),
           totals = { waiting = nwaiting, ready = nready, playing = playing, games = self.totals.games,
                      fish = self.totals.fish, rodents = self.totals.rodents, draws = self.totals.draws } }
end
M.state_of = state_of

local function changed(self)
  self.version = self.version + 1
  for ref in pairs(self.watchers) do atoll.send(ref, "lobby_changed", self.version) end
end

local function tell(player_id, message)
  atoll.send(atoll.virtual.get(M.PLAYER, player_id), "lobby_event", message)
end

local function uuid4()
  local t = { require("atoll.c.host").random_bytes(16):byte(1, 16) }
  t[7] = bit.bor(bit.band(t[7], 0x0f), 0x40) -- version 4
  t[9] = bit.bor(bit.band(t[9], 0x3f), 0x80) -- the RFC 4122 variant
  local hex = ("%02x"):rep(16):format(unpack(t))
  return ("%s-%s-%s-%s-%s"):format(hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21, 32))
end
M.uuid4 = uuid4

-- random(n) -> 1..n, from the system's generator
local function random(n)
  local b1, b2, b3 = require("atoll.c.host").random_bytes(3):byte(1, 3)
  return (b1 * 65536 + b2 * 256 + b3) % n + 1
end


-- Pairs ready players of the two teams while there are some: the one who got ready first with
-- one of the other team at random (who moves first: at random too). One round at a time: a
-- handler may run while another waits for the journal, and a player must not be paired twice.
local function matchmake(self)
  if self.matching then
    self.match_again = true
    return
  end
  self.matching = true
  local ok, err = pcall(function()
    repeat
      self.match_again = false
      local first_id, first_order = nil, math.huge
      for id, order in pairs(self.ready) do
        if order < first_order and not self.playing[id] then first_id, first_order = id, order end
      end
      local me = first_id and self.players[first_id]
      local others = {}
      if me then
        for id in pairs(self.ready) do
          local p = self.players[id]
          if p and p.team == TEAMS[me.team] and not self.playing[id] then others[#others + 1] = id end
        end
      end
      -- (the earliest has nobody of the other team: then nobody has)
      if #others > 0 then
        table.sort(others)
        local one, two = me, self.players[others[random(#others)]]
        local first = random(2) == 1 and one.playerId or two.playerId
        local sid = uuid4()
        self:emit { "matched", sid, one.playerId, two.playerId, first }
        changed(self)
        M.start_session(sid, one, two, first)
        self.match_again = true
      end
    until not self.match_again
  end)
  self.matching = false
  if not ok then error(err, 0) end
end

-- The session is started until it answers (it may be moving); then both players hear.
function M.start_session(sid, one, two, first)
  atoll.task(function()
    local delay = 0.2
    while true do
      local ok, game = pcall(function()
        return atoll.virtual.get(M.SESSION, sid, nil, 10):start(one, two, first)
      end)
      if ok then
        tell(one.playerId, { type = "started", game = game })
        tell(two.playerId, { type = "started", game = game })
        return
      end
      atoll.sleep(delay)
      delay = math.min(delay * 2, 5)
    end
  end)
end

local function check_player(p)
  if type(p) ~= "table" or type(p.playerId) ~= "string" or type(p.name) ~= "string" or TEAMS[p.team] == nil then
    error("a player is { playerId, name, team = fish | rodents }", 0)
  end
end

-- join(player) -> LobbyState: the player is in the lobby (waiting, unless ready or playing)
function Lobby.distributed:join(player)
  check_player(player)
  local known = self.players[player.playerId]
  if not (known and known.name == player.name and known.team == player.team) then
    self:emit { "joined", { playerId = player.playerId, name = player.name, team = player.team } }
    changed(self)
  end
  return state_of(self, 100), self.playing[player.playerId]
end

-- ready(id) -> true; the player is matched at once if a ready player of the other team waits.
-- A player still in a game (its result on its way here) is matched once the game is recorded.
function Lobby.distributed:ready(id)
  if self.players[id] == nil then error("join the lobby first", 0) end
  if not self.ready[id] then
    self:emit { "ready", id }
    changed(self)
    matchmake(self)
  end
  return true
end

-- cancel(id): the player is no longer ready (if it was not matched meanwhile)
function Lobby.distributed:cancel(id)
  if self.ready[id] then
    self:emit { "cancelled", id }
    changed(self)
    return true
  end
  return false
end

-- leave(id): the player left the lobby (its game, if any, goes on)
function Lobby.distributed:leave(id)
  if self.players[id] and not self.playing[id] then
    self:emit { "left", id }
    changed(self)
  end
end

-- session_finished(game) -> true: a session's result, recorded once
function Lobby.distributed:session_finished(game)
  if type(game) ~= "table" or type(game.sessionId) ~= "string" then error("expected a GameState", 0) end
  if self.sessions[game.sessionId] then
    self:emit { "finished", game }
    changed(self)
    matchmake(self) -- (its players may have got ready again already)
  end
  return true
end

-- state([cap]) -> LobbyState with totals; subscribe(ref) -> version, state: ref hears
-- lobby_changed(version) after each change (a feed fetches the state when it wants it)
function Lobby.distributed:state(cap)
  return state_of(self, cap), self.version
end

function Lobby.distributed:subscribe(ref)
  if not self.watchers[ref] then
    self.watchers[ref] = true
    atoll.watch(ref)
  end
  return self.version, state_of(self, 100)
end

function Lobby:terminated(ref)
  self.watchers[ref] = nil
end

-- playing(id) -> the session id the player is in, or nil
function Lobby.distributed:playing(id)
  return self.playing[id]
end

return M
