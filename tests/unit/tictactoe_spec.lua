-- The game's actors on one node. A session (scripts/tictactoe/session.lua): a persistent virtual
-- actor that enforces the rules, journals each accepted move and no refused one, tells both
-- players every move and the result, tells the lobby once, and ends a game on its turn timer or
-- when a player stays away past the grace period. The lobby (scripts/tictactoe/lobby.lua): pairs
-- ready players of the two teams, never one twice, records each finished game once, and comes
-- back from its events the same.
package.path = "scripts/?.lua;" .. package.path
local atoll = require "atoll"
local persistence = require "atoll.persistence"
local virtual = require "atoll.cluster.virtual"
local async = require "helpers.async"
local wait = require "helpers.wait"
local session = require "tictactoe.session"
local lobby = require "tictactoe.lobby"
local player_mod = require "tictactoe.player"

require("helpers.spec").journal("session", setup, teardown)

local ANN = { playerId = "00000000-0000-4000-8000-00000000000a", name = "Ann", team = "fish" }
local BOB = { playerId = "00000000-0000-4000-8000-00000000000b", name = "Bob", team = "rodents" }

-- Stand-ins for the players (what each was told) and the lobby (the games it was told of). (The
-- real players are hosted too, for their own specs below, which point the session at them.)
local told, lobby_told = {}, {}
session.PLAYER, lobby.PLAYER = "SpecPlayer", "SpecPlayer"
local Player = atoll.actor.define "SpecPlayer"
function Player.distributed:session_event(session_id, message)
  local id = virtual.id(self)
  told[id] = told[id] or {}
  table.insert(told[id], { session = session_id, message = message })
end
function Player.distributed:lobby_event(message)
  local id = virtual.id(self)
  lobby_told[id] = lobby_told[id] or {}
  table.insert(lobby_told[id], message)
end
virtual.define(Player)
virtual.host(Player)

local finished, playing = {}, {}
local Lobby = atoll.actor.define "SessionSpecLobby"
function Lobby.distributed:session_finished(game)
  finished[#finished + 1] = game
  return true
end
function Lobby.distributed:join() return { waitingPlayers = {}, readyPlayers = {}, completedSessions = {} } end
function Lobby.distributed:playing(id) return playing[id] end
atoll.singleton.host(session.LOBBY, Lobby)
session.host()
player_mod.host()

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

local function player(i, team)
  return { playerId = ("30000000-0000-4000-8000-%012d"):format(i), name = "P" .. i, team = team }
end

describe("the lobby", function()
  local lobbies = 0
  local function new_lobby()
    lobbies = lobbies + 1
    return atoll.spawn(lobby.Lobby, "spec" .. lobbies)
  end

  it("pairs each ready player once, with one of the other team, and starts their session",
    async(function()
      local l = new_lobby()
      local fish, rodents = {}, {}
      for i = 1, 20 do
        fish[i], rodents[i] = player(i, "fish"), player(100 + i, "rodents")
        l:join(fish[i])
        l:join(rodents[i])
      end
      -- all forty get ready at once
      local tasks = {}
      for i = 1, 20 do
        tasks[#tasks + 1] = atoll.task(function() return l:ready(fish[i].playerId) end)
        tasks[#tasks + 1] = atoll.task(function() return l:ready(rodents[i].playerId) end)
      end
      for _, t in ipairs(tasks) do t:wait(10) end
      local sessions, seen = {}, {}
      for _, p in ipairs(fish) do
        local sid = l:playing(p.playerId)
        assert.is_not_nil(sid, p.name .. " was not matched")
        sessions[sid] = (sessions[sid] or 0) + 1
        seen[p.playerId] = sid
      end
      for _, p in ipairs(rodents) do
        local sid = l:playing(p.playerId)
        assert.is_not_nil(sid, p.name .. " was not matched")
        sessions[sid] = (sessions[sid] or 0) + 1
      end
      local games = 0
      for _, count in pairs(sessions) do
        games = games + 1
        assert.equal(2, count)
      end
      assert.equal(20, games)
      local st = l:state()
      assert.equal(0, st.totals.ready)
      assert.equal(20, st.totals.playing)
      -- each session runs with one fish and one rodent, and both players were told
      for sid in pairs(sessions) do
        local g
        wait.retry(function()
          g = virtual.get(session.TYPE, sid):state()
          return g ~= nil
        end, 5, "session " .. sid .. " to start")
        assert.is_not.equal(g.playerOne.team, g.playerTwo.team)
        assert.equal(sid, seen[g.playerOne.playerId] or seen[g.playerTwo.playerId])
      end
      wait.retry(function() return #(lobby_told[fish[1].playerId] or {}) >= 1 end, 5, "the player to hear")
      assert.equal("started", lobby_told[fish[1].playerId][1].type)
    end))

  it("waits for a player of the other team, and lets a ready player cancel", async(function()
    local l = new_lobby()
    local a, b, c = player(201, "fish"), player(202, "fish"), player(203, "rodents")
    for _, p in ipairs { a, b, c } do l:join(p) end
    l:ready(a.playerId)
    l:ready(b.playerId)
    assert.is_nil(l:playing(a.playerId))
    assert.equal(2, l:state().totals.ready)
    assert.is_true(l:cancel(a.playerId))
    l:ready(c.playerId)
    -- b got ready before c, and a cancelled: b plays c
    assert.equal(l:playing(b.playerId), l:playing(c.playerId))
    assert.is_nil(l:playing(a.playerId))
    assert.same({ a }, l:state().waitingPlayers)
  end))

  it("records a finished game once, and puts both players back among the waiting", async(function()
    local l = new_lobby()
    local a, b = player(301, "fish"), player(302, "rodents")
    l:join(a)
    l:join(b)
    l:ready(a.playerId)
    l:ready(b.playerId)
    local sid = l:playing(a.playerId)
    local game = { sessionId = sid, playerOne = a, playerTwo = b, currentPlayerId = a.playerId,
                   moves = {}, result = { result = { player = b } } }
    assert.is_true(l:session_finished(game))
    assert.is_true(l:session_finished(game)) -- (a repeat: the session reports until answered)
    local st = l:state()
    assert.equal(1, st.totals.games)
    assert.equal(1, st.totals.rodents)
    assert.equal(1, #st.completedSessions)
    assert.equal(2, st.totals.waiting)
    assert.is_nil(l:playing(a.playerId))
  end))

  it("matches a player who got ready again before its game was recorded, once it is", async(function()
    local l = new_lobby()
    local a, b, c = player(501, "fish"), player(502, "rodents"), player(503, "rodents")
    for _, p in ipairs { a, b, c } do l:join(p) end
    l:ready(a.playerId)
    l:ready(b.playerId)
    local sid = l:playing(a.playerId)
    -- a's game ended, a heard so and got ready again, the lobby not told yet; c is ready
    l:ready(a.playerId)
    l:ready(c.playerId)
    assert.equal(sid, l:playing(a.playerId))
    assert.is_nil(l:playing(c.playerId))
    l:session_finished { sessionId = sid, playerOne = a, playerTwo = b, currentPlayerId = a.playerId,
                         moves = {}, result = { result = {} } }
    assert.is_not_nil(l:playing(a.playerId))
    assert.equal(l:playing(a.playerId), l:playing(c.playerId))
    assert.is_nil(l:playing(b.playerId))
  end))

  it("comes back from its snapshot the same lobby", function()
    local L = lobby.Lobby
    local x = { name = "snap", players = {}, ready = {}, playing = {}, sessions = {}, completed = {},
                totals = { games = 0, fish = 0, rodents = 0, draws = 0 }, order = 0 }
    local a, b, c = player(401, "fish"), player(402, "rodents"), player(403, "fish")
    for _, p in ipairs { a, b, c } do L.apply(x, { "joined", p }) end
    L.apply(x, { "ready", c.playerId })
    L.apply(x, { "matched", "s1", a.playerId, b.playerId, a.playerId })
    local y = { name = "snap" }
    L.restore(y, L.snapshot(x))
    assert.same(lobby.state_of(x), lobby.state_of(y))
    assert.same({ c }, lobby.state_of(y).readyPlayers)
    assert.equal("s1", y.playing[b.playerId])
  end)
end)

describe("a player", function()
  before_each(function() session.PLAYER = player_mod.TYPE end)
  after_each(function() session.PLAYER = "SpecPlayer" end)

  local got = {}
  local Stream = atoll.actor.define "SpecStream"
  function Stream:init(key) self.key = key end
  function Stream.distributed:deliver(message)
    got[self.key] = got[self.key] or {}
    table.insert(got[self.key], message)
  end

  -- (the streams stop after the specs: the watches of their players go with them)
  local streams = {}
  teardown(function()
    for _, ref in ipairs(streams) do atoll.stop(ref) end
  end)

  local function attach(p, kind)
    local ref = atoll.spawn(Stream, p.name .. ":" .. kind)
    streams[#streams + 1] = ref
    local first = virtual.get(player_mod.TYPE, p.playerId, p):attach(kind, ref, p)
    return ref, first
  end

  it("relays its session's moves and end to its game streams, and its moves to its session",
    async(function()
      local sid = new_session()
      local ann = { playerId = "00000000-0000-4000-8000-0000000000aa", name = "Ann2", team = "fish" }
      local bob = { playerId = "00000000-0000-4000-8000-0000000000bb", name = "Bob2", team = "rodents" }
      local _, first = attach(ann, "game")
      assert.is_nil(first.game)
      attach(bob, "game")
      virtual.get(session.TYPE, sid):start(ann, bob, ann.playerId)
      local pa, pb = virtual.get(player_mod.TYPE, ann.playerId), virtual.get(player_mod.TYPE, bob.playerId)
      wait.retry(function() return pa:move(move(ann, 0)).ok end, 5, "Ann's player to know its game")
      -- out of turn: refused, to Ann alone, and nobody's stream hears of it
      assert.equal("not_your_turn", pa:move(move(ann, 1)).code)
      assert.is_true(pb:move(move(bob, 3)).ok)
      assert.is_true(pa:move(move(ann, 1)).ok)
      assert.is_true(pb:move(move(bob, 4)).ok)
      assert.is_true(pa:move(move(ann, 2)).ok)
      wait.retry(function() return #(got["Bob2:game"] or {}) == 6 end, 5, "Bob's stream to hear it all")
      for i, position in ipairs { 0, 3, 1, 4, 2 } do
        assert.equal(position, got["Ann2:game"][i].message.position)
        assert.equal(position, got["Bob2:game"][i].message.position)
      end
      assert.equal("finished", got["Bob2:game"][6].message.type)
      assert.same(ann, got["Bob2:game"][6].message.game.result.result.player)
      -- a stream attached again shows the game so far
      playing[ann.playerId] = sid
      local _, again = attach(ann, "game")
      assert.equal(5, #again.game.moves)
    end))

  it("tells its session when its last game stream goes: away past the grace period, it forfeits",
    async(function()
    local sid = new_session()
    local cat = { playerId = "00000000-0000-4000-8000-0000000000cc", name = "Cat", team = "fish" }
    local dan = { playerId = "00000000-0000-4000-8000-0000000000dd", name = "Dan", team = "rodents" }
    playing[cat.playerId], playing[dan.playerId] = sid, sid
    virtual.get(session.TYPE, sid):start(cat, dan, dan.playerId, { grace = 0.3 })
    local ref = attach(cat, "game")
    attach(dan, "game")
    atoll.stop(ref) -- Cat's connection goes, and she does not come back
    wait.retry(function() return virtual.get(session.TYPE, sid):state().result ~= nil end, 5, "the grace period")
    assert.same({ playerId = cat.playerId, reason = "disconnected" },
      virtual.get(session.TYPE, sid):state().result.forfeit)
  end))
end)
