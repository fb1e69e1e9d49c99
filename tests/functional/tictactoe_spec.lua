-- The game through its HTTP API (scripts/tictactoe/app.lua on a real node, curl as the clients,
-- JSON lines both ways as openapi.yaml says): two players meet in the lobby, are matched, play
-- a game to a win over their game streams, each move acknowledged to both, a refused move told
-- to its player alone, and the result in both lobbies. Every message the server sent validates
-- against openapi.yaml with a third-party validator (tests/js/validate-messages.mjs).
local async = require "helpers.async"
local json = require "atoll.util.json"
local node = require "helpers.node"
local process = require "atoll.process"
local tmp = require "helpers.tmp"

local ANN = { id = "3f2504e0-4f89-11d3-9a0c-0305e82c3301", name = "Ann", team = "fish" }
local BOB = { id = "3f2504e0-4f89-11d3-9a0c-0305e82c3302", name = "Bob", team = "rodents" }

-- A stream of the API as curl holds it: lines in with say, lines out with next_line.
local function open(port, path, who)
  local c = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST",
    "-H", "Content-Type: application/jsonl", "-H", "player_id: " .. who.id, "-H", "player_name: " .. who.name,
    "-H", "player_team: " .. who.team, "http://127.0.0.1:" .. port .. path })
  local s = { c = c, lines = {} }
  function s.say(message) c:write(json.encode { message = message } .. "\n") end
  -- until(pred, seconds) -> the first message (decoded) for which pred is true
  function s.until_(pred, seconds)
    while true do
      local line = c:read_line(seconds or 10)
      assert(line, "the stream ended or said nothing for " .. tostring(seconds or 10) .. " s")
      if line ~= "" then
        s.lines[#s.lines + 1] = line
        local m = json.decode(line)
        if pred(m) then return m end
      end
    end
  end
  function s.close()
    c:close_stdin()
    c:wait(5)
  end
  return s
end

-- valid(lines, schema...): the third-party validator says every line is one of the schemas
local function valid(lines, ...)
  local argv = { "node", "tests/js/validate-messages.mjs", "openapi.yaml", ... }
  local v = assert(process.spawn(argv))
  v:write(table.concat(lines, "\n") .. "\n")
  v:close_stdin()
  local code = v:wait(30)
  assert.equal(0, code, v:stderr() .. v:stdout())
end

local function move(who, position)
  return { playerId = who.id, position = position, team = who.team, teamCharacterId = 0 }
end

describe("the tic-tac-toe game over HTTP", function()
  local dir = tmp.dir("tictactoe")
  teardown(function() tmp.remove(dir) end)

  it("matches two players, plays their game to a win, and records it", async(function()
    local p = node.start { "run", "scripts/tictactoe/app.lua", "--http", "127.0.0.1:0", "--data-dir", dir }
    local _, port = p:expect("serving on http://127%.0%.0%.1:(%d+)", 10, "stderr")
    p:expect("^ready$", 10)
    local la, lb = open(port, "/matchmaking", ANN), open(port, "/matchmaking", BOB)
    la.until_(function(m) return m.message and m.message.status == "connect" end)
    lb.until_(function(m) return m.message and m.message.status == "connect" end)
    la.say { status = "ready" }
    lb.say { status = "ready" }
    local function started(m) return m.message and m.message.type == "started" end
    local game = la.until_(started).message.game
    assert.equal(game.sessionId, lb.until_(started).message.game.sessionId)
    assert.is_not.equal(game.playerOne.team, game.playerTwo.team)

    local ga, gb = open(port, "/game", ANN), open(port, "/game", BOB)
    -- (each game stream shows the game so far first)
    assert.equal(game.sessionId, ga.until_(started).message.game.sessionId)
    assert.equal(game.sessionId, gb.until_(started).message.game.sessionId)
    local streams = { [ANN.id] = ga, [BOB.id] = gb }
    local who = { [ANN.id] = ANN, [BOB.id] = BOB }
    local first = game.currentPlayerId
    local second = first == ANN.id and BOB.id or ANN.id
    -- out of turn: refused, to that player alone
    streams[second].say(move(who[second], 4))
    local refused = streams[second].until_(function(m) return m.error ~= nil end)
    assert.equal("not_your_turn", refused.code)
    -- the first mover takes the top row; the second plays the middle row
    local plan = { { first, 0 }, { second, 3 }, { first, 1 }, { second, 4 }, { first, 2 } }
    for _, step in ipairs(plan) do
      local mover, pos = step[1], step[2]
      streams[mover].say(move(who[mover], pos))
      for _, s in pairs(streams) do
        local m = s.until_(function(x) return x.message and x.message.position ~= nil end)
        assert.equal(pos, m.message.position)
        assert.equal(mover, m.message.playerId)
      end
    end
    for _, s in pairs(streams) do
      local m = s.until_(function(x) return x.message and x.message.type == "finished" end)
      assert.equal(first, m.message.game.result.result.player.playerId)
    end
    -- the lobby recorded it once, and both are back among the waiting
    local lobby = la.until_(function(m)
      return m.message and m.message.totals and m.message.totals.games == 1
    end).message
    assert.equal(1, #lobby.completedSessions)
    assert.equal(game.sessionId, lobby.completedSessions[1].sessionId)
    assert.equal(2, lobby.totals.waiting)
    for _, s in ipairs { la, lb, ga, gb } do s.close() end
    for _, s in ipairs { la, lb } do valid(s.lines, "LobbyMessage", "StreamError") end
    for _, s in ipairs { ga, gb } do valid(s.lines, "SessionMessage", "StreamError") end
    assert.equal(0, node.stop(p))
  end, 60))

  it("lets bots play through the public API, game after game", async(function()
    local p = node.start { "run", "scripts/tictactoe/app.lua", "--http", "127.0.0.1:0", "--data-dir", dir }
    local _, port = p:expect("serving on http://127%.0%.0%.1:(%d+)", 10, "stderr")
    p:expect("^ready$", 10)
    local code, out, err = node.exec({ "lua", "scripts/tictactoe/bot.lua", "--http", "127.0.0.1:" .. port,
      "--players", "6", "--games", "3", "--quiet" }, { timeout = 60 })
    assert.equal(0, code, err)
    local won, lost, drawn = out:match("bots: 6 players, 3 games each: (%d+) won, (%d+) lost, (%d+) drawn\n$")
    assert.is_not_nil(won, out)
    -- 9 games of two bots each: every win is a loss on the other side
    assert.equal(tonumber(won), tonumber(lost))
    assert.equal(18, tonumber(won) + tonumber(lost) + tonumber(drawn))
    assert.equal(0, node.stop(p))
  end, 90))
end)
