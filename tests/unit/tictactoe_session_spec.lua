-- A game session on one node (scripts/tictactoe/session.lua): a persistent virtual actor that
-- enforces the rules, journals each accepted move and no refused one, tells both players every
-- move and the result, tells the lobby once, and ends a game on its turn timer or when a player
-- stays away past the grace period.
package.path = "scripts/?.lua;" .. package.path
local atoll = require "atoll"
local persistence = require "atoll.persistence"
local virtual = require "atoll.cluster.virtual"
local async = require "helpers.async"
local tmp = require "helpers.tmp"
local wait = require "helpers.wait"
local session = require "tictactoe.session"

local dir
setup(function()
  dir = tmp.dir("session")
  -- (busted runs every unit spec in one process: another may have opened the journal already)
  pcall(persistence.configure, { journal = "sqlite:" .. dir .. "/journal.db" })
end)
teardown(function() tmp.remove(dir) end)

local ANN = { playerId = "00000000-0000-4000-8000-00000000000a", name = "Ann", team = "fish" }
local BOB = { playerId = "00000000-0000-4000-8000-00000000000b", name = "Bob", team = "rodents" }

-- Stand-ins for the players (what each was told) and the lobby (the games it was told of).
local told = {}
local Player = atoll.actor.define(session.PLAYER)
function Player.distributed:session_event(session_id, message)
  local id = virtual.id(self)
  told[id] = told[id] or {}
  table.insert(told[id], { session = session_id, message = message })
end
virtual.define(Player)
virtual.host(Player)

local finished = {}
local Lobby = atoll.actor.define "SessionSpecLobby"
function Lobby.distributed:session_finished(game)
  finished[#finished + 1] = game
  return true
end
atoll.singleton.host(session.LOBBY, Lobby)
session.host()

local n = 0
local function new_session()
  n = n + 1
  return ("20000000-0000-4000-8000-%012d"):format(n)
end

local function move(p, position)
  return { playerId = p.playerId, position = position, team = p.team, teamCharacterId = 1 }
end

local function kinds(player, sid)
  local out = {}
  for _, t in ipairs(told[player.playerId] or {}) do
    if t.session == sid then out[#out + 1] = t.message.type end
  end
  return out
end

local function finished_of(sid)
  local out = {}
  for _, g in ipairs(finished) do if g.sessionId == sid then out[#out + 1] = g end end
  return out
end

describe("a game session", function()
  it("plays a game to a win, journals accepted moves only, tells both players and the lobby once",
    async(function()
      local sid = new_session()
      local s = virtual.get(session.TYPE, sid)
      local st = s:start(ANN, BOB, ANN.playerId)
      assert.equal(ANN.playerId, st.currentPlayerId)
      assert.is_true(st.deadline > os.time())
      -- a start again is the same game
      assert.equal(sid, s:start(ANN, BOB, ANN.playerId).sessionId)
      assert.equal("not_your_turn", s:move(BOB.playerId, move(BOB, 4)).code)
      assert.is_true(s:move(ANN.playerId, move(ANN, 0)).ok)
      assert.equal("occupied", s:move(BOB.playerId, move(BOB, 0)).code)
      -- the move's player and team come from the stream's player, not the message
      assert.equal("not_yours", s:move(BOB.playerId, move(ANN, 3)).code)
      assert.is_true(s:move(BOB.playerId, move(BOB, 3)).ok)
      assert.is_true(s:move(ANN.playerId, move(ANN, 1)).ok)
      assert.is_true(s:move(BOB.playerId, move(BOB, 4)).ok)
      local last = s:move(ANN.playerId, move(ANN, 2))
      assert.same(ANN, last.game.result.result.player)
      assert.same({ 0, 1, 2 }, last.game.result.line)
      assert.equal("finished", s:move(BOB.playerId, move(BOB, 5)).code)
      -- the journal: started, five moves (no refused one), then the lobby's acknowledgement
      wait.retry(function() return #finished_of(sid) == 1 end, 5, "the lobby to hear of the game")
      local events
      wait.retry(function()
        events = persistence.events("virtual/" .. session.TYPE .. "/s" .. sid)
        return #events == 7
      end, 5, "the report to be journaled")
      local seen = {}
      for _, e in ipairs(events) do seen[#seen + 1] = e.event[1] end
      assert.same({ "started", "moved", "moved", "moved", "moved", "moved", "reported" }, seen)
      -- both players heard the start, the five moves and the end, in order
      local expect = { "started", "move", "move", "move", "move", "move", "finished" }
      wait.retry(function() return #kinds(BOB, sid) == 7 and #kinds(ANN, sid) == 7 end, 5, "the players' news")
      assert.same(expect, kinds(ANN, sid))
      assert.same(expect, kinds(BOB, sid))
      assert.equal(1, #finished_of(sid))
    end))

  it("ends a game when the player whose turn it is lets the timer run out", async(function()
    local sid = new_session()
    local s = virtual.get(session.TYPE, sid)
    s:start(ANN, BOB, BOB.playerId, { turn = 1 })
    assert.is_true(s:move(BOB.playerId, move(BOB, 4)).ok)
    -- Ann does not move: she forfeits about a second later
    wait.retry(function() return s:state().result ~= nil end, 5, "the turn timer")
    local result = s:state().result
    assert.same(BOB, result.result.player)
    assert.same({ playerId = ANN.playerId, reason = "timeout" }, result.forfeit)
    wait.retry(function() return #finished_of(sid) == 1 end, 5, "the lobby to hear of the forfeit")
  end))

  it("forfeits a player away past the grace period, not one who came back", async(function()
    local sid = new_session()
    local s = virtual.get(session.TYPE, sid)
    s:start(ANN, BOB, ANN.playerId, { grace = 0.3 })
    s:disconnected(BOB.playerId)
    s:connected(BOB.playerId)
    s:disconnected(ANN.playerId)
    wait.retry(function() return s:state().result ~= nil end, 5, "the grace period")
    assert.same({ playerId = ANN.playerId, reason = "disconnected" }, s:state().result.forfeit)
  end))

  it("comes back from its events, or its snapshot, the same game", function()
    local S = session.Session
    local sid = new_session()
    local a = { id = sid }
    S.apply(a, { "started", ANN, BOB, ANN.playerId, 30, 60, 1000 })
    S.apply(a, { "moved", move(ANN, 4), 1030 })
    S.apply(a, { "moved", move(BOB, 0), 1060 })
    local b = { id = sid }
    S.restore(b, S.snapshot(a))
    assert.same(session.state_of(a), session.state_of(b))
    assert.equal(1060, session.state_of(b).deadline)
    S.apply(a, { "forfeited", BOB.playerId, "timeout" })
    local c = { id = sid }
    S.restore(c, S.snapshot(a))
    assert.same(session.state_of(a), session.state_of(c))
    assert.same(ANN, session.state_of(c).result.result.player)
  end)
end)
