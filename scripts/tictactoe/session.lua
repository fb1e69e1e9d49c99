-- A game session: a persistent virtual actor per session id (a uuid), so that it answers from
-- wherever the cluster places it and survives the loss of its node with every move it
-- acknowledged. The rules are scripts/tictactoe/rules.lua; the session enforces them.
--
--   local s = atoll.virtual.get(session.TYPE, session_id)
--   s:start(one, two, first [, { turn = 30, grace = 60 }])   -- once; again: the same game
--   s:move(player_id, move)   -- player_id: the stream's player (its headers), never the message
--   s:state()                 -- openapi.yaml's GameState, plus deadline (unix seconds)
--
-- Events: { "started", one, two, first, turn, grace, deadline }, { "moved", move, deadline },
-- { "forfeited", player_id, reason }, { "reported" } (the lobby has the result).
--
-- Each move, once durable, goes to both players (their virtual actors, Player:session_event,
-- which relay it to their game streams): the mover's copy is its acknowledgement. The turn timer
-- is a durable reminder, so an idle session whose node dies still times out; a player whose
-- streams stay away longer than the grace period forfeits (disconnected / connected below).
local atoll = require "atoll"
local rules = require "tictactoe.rules"

local M = {}

M.TYPE = "tictactoe.Session"
M.PLAYER = "tictactoe.Player" -- the players' virtual type (Player:session_event(message))
M.LOBBY = "tictactoe.lobby"   -- the lobby singleton (lobby:session_finished(game))
M.TURN = 30                   -- seconds a player has for a move, by default
M.GRACE = 60                  -- seconds a player's streams may stay away, by default

local Session = atoll.actor.define(M.TYPE, { persistent = true, snapshot_every = 50 })
M.Session = Session

local function wall()
  return require("atoll.c.host").wall() / 1000
end

local report -- (below)

function Session:init(id)
  self.id = id
  self.game = nil
  self.reported = false
  -- After a recovery (a failover), a result the lobby has not heard of yet is told again. (A
  -- virtual actor's timer waits, as its messages do, until it has recovered.)
  atoll.after(0, function() report(self) end)
end

function Session:apply(e)
  local kind = e[1]
  if kind == "started" then
    self.game = rules.new(self.id, e[2], e[3], e[4])
    self.turn, self.grace, self.deadline = e[5], e[6], e[7]
  elseif kind == "moved" then
    rules.apply(self.game, e[2])
    self.deadline = e[3]
  elseif kind == "forfeited" then
    rules.forfeit(self.game, e[2], e[3])
  elseif kind == "reported" then
    self.reported = true
  end
end

function Session:snapshot()
  local g = self.game
  return { game = g and { one = g.playerOne, two = g.playerTwo, first = g.first, moves = g.moves,
                          forfeit = g.result and g.result.forfeit },
           turn = self.turn, grace = self.grace, deadline = self.deadline, reported = self.reported }
end

function Session:restore(v)
  if v.game then
    local g = assert(rules.replay(self.id, v.game.one, v.game.two, v.game.first, v.game.moves))
    if v.game.forfeit then rules.forfeit(g, v.game.forfeit.playerId, v.game.forfeit.reason) end
    self.game = g
  end
  self.turn, self.grace, self.deadline, self.reported = v.turn, v.grace, v.deadline, v.reported
end

-- state() -> GameState (openapi.yaml), with deadline (when the current turn ends, unix seconds)
local function state_of(self)
  local g = self.game
  if g == nil then return nil end
  return { sessionId = self.id, playerOne = g.playerOne, playerTwo = g.playerTwo,
           currentPlayerId = g.currentPlayerId, moves = atoll.array(g.moves), result = g.result,
           deadline = not g.result and self.deadline or nil }
end
M.state_of = state_of

local function tell_players(self, message)
  local g = self.game
  for _, p in ipairs { g.playerOne, g.playerTwo } do
    atoll.send(atoll.virtual.get(M.PLAYER, p.playerId), "session_event", self.id, message)
  end
end

-- The lobby records each finished game once (it keeps the session ids it has): told until it
-- answers, from the session's own task, and again after a recovery that finds it untold.
function report(self)
  if self.reporting or self.reported or not (self.game and self.game.result) then return end
  self.reporting = true
  atoll.task(function()
    local delay = 0.5
    while true do
      local ok = pcall(function() return atoll.singleton.ref(M.LOBBY, 10):session_finished(state_of(self)) end)
      if ok then break end
      atoll.sleep(delay)
      delay = math.min(delay * 2, 10)
    end
    self:emit { "reported" }
    self.reporting = false
  end)
end

local function ended(self)
  atoll.virtual.forget(self, "turn")
  tell_players(self, { type = "finished", game = state_of(self) })
  report(self)
end

-- start(one, two, first [, opts]) -> GameState: the game begins (first moves first); a start
-- of a session already started answers its state if the players are the same, else fails.
function Session.distributed:start(one, two, first, opts)
  if self.game then
    if self.game.playerOne.playerId == one.playerId and self.game.playerTwo.playerId == two.playerId then
      return state_of(self)
    end
    error("session " .. self.id .. " is another game", 0)
  end
  opts = opts or {}
  local turn, grace = opts.turn or M.TURN, opts.grace or M.GRACE
  rules.new(self.id, one, two, first) -- (raises on players it cannot pair)
  self:emit { "started", one, two, first, turn, grace, wall() + turn }
  atoll.virtual.remind(self, "turn", turn)
  tell_players(self, { type = "started", game = state_of(self) })
  return state_of(self)
end

-- move(player_id, move) -> { ok = true, game } | { error, code }: refused moves go back to their
-- player alone and are not journaled.
function Session.distributed:move(player_id, move)
  local g = self.game
  if g == nil then return { error = "no game in this session", code = "not_in_game" } end
  local player = rules.player(g, player_id)
  if player == nil then return { error = "you are not a player of this game", code = "not_in_game" } end
  local err = rules.check(g, player, move)
  if err then return { error = err.message, code = err.code } end
  local clean = { playerId = player_id, position = move.position, team = player.team,
                  teamCharacterId = move.teamCharacterId }
  local deadline = wall() + self.turn
  self:emit { "moved", clean, deadline }
  tell_players(self, { type = "move", move = clean, game = state_of(self) })
  if g.result then
    ended(self)
  else
    atoll.virtual.remind(self, "turn", self.turn)
  end
  return { ok = true, game = state_of(self) }
end

function Session.distributed:state()
  return state_of(self)
end

-- disconnected(player_id) / connected(player_id): a player's last stream went, or one came back;
-- away past the grace period, it forfeits.
function Session.distributed:disconnected(player_id)
  if self.game and not self.game.result and rules.player(self.game, player_id) then
    atoll.virtual.remind(self, "away:" .. player_id, self.grace)
  end
end

function Session.distributed:connected(player_id)
  if self.game and rules.player(self.game, player_id) then atoll.virtual.forget(self, "away:" .. player_id) end
  return state_of(self)
end

-- The turn timer and the grace periods (durable reminders): the player who did not move, or
-- stayed away, forfeits.
function Session.distributed:reminded(name)
  local g = self.game
  if g == nil or g.result then return end
  local loser, reason
  if name == "turn" then
    if wall() + 0.5 < self.deadline then return end -- (a reminder of an earlier turn)
    loser, reason = g.currentPlayerId, "timeout"
  else
    loser = name:match("^away:(.+)$")
    if loser == nil or rules.player(g, loser) == nil then return end
    reason = "disconnected"
  end
  self:emit { "forfeited", loser, reason }
  ended(self)
end

atoll.virtual.define(Session, { idle_timeout = 600 })

-- host(): this node may run sessions
function M.host()
  atoll.virtual.host(Session)
end

return M
