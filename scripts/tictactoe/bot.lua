-- Bots that play tic-tac-toe through the game's public HTTP API (JSON lines), as any client
-- would: each joins the lobby, gets ready, plays the game it is matched into with legal moves
-- (a free cell at random), and gets ready again, GAMES times.
--
--   atoll lua scripts/tictactoe/bot.lua [--http HOST:PORT] [--players N] [--games G]
--                                        [--team fish|rodents|both] [--quiet]
--
-- Prints a line per game ("bot-3 (fish) won against ..."), and at the end
-- "bots: N players, G games each: W won, L lost, D drawn".
package.path = "scripts/?.lua;" .. package.path
local atoll = require "atoll"
local host = require "atoll.c.host"
local client = require "tictactoe.client"

local USAGE = [[
usage: atoll lua scripts/tictactoe/bot.lua [--http HOST:PORT] [--players N] [--games G]
                                           [--team fish|rodents|both] [--quiet]
  --http HOST:PORT   the game's gateway (127.0.0.1:8080)
  --players N        bots playing at once (2)
  --games G          games each bot plays before it stops (1)
  --team T           the bots' team; both: half and half (both)
  --quiet            only the summary line]]

local opts = { http = "127.0.0.1:8080", players = 2, games = 1, team = "both" }
local i = 1
while i <= #arg do
  local a = arg[i]
  if a == "--help" or a == "-h" then
    print(USAGE)
    os.exit(0)
  elseif a == "--quiet" then
    opts.quiet = true
  elseif a == "--http" or a == "--players" or a == "--games" or a == "--team" then
    opts[a:sub(3)] = arg[i + 1]
    i = i + 1
  else
    io.stderr:write("bot: unknown argument '", tostring(a), "'\n", USAGE, "\n")
    os.exit(2)
  end
  i = i + 1
end
local gw_host, gw_port = tostring(opts.http):match("^(.+):(%d+)$")
opts.players, opts.games = tonumber(opts.players), tonumber(opts.games)
if not gw_host or not opts.players or opts.players < 1 or not opts.games or opts.games < 1
  or not (opts.team == "fish" or opts.team == "rodents" or opts.team == "both") then
  io.stderr:write(USAGE, "\n")
  os.exit(2)
end
gw_port = tonumber(gw_port)

local function uuid4()
  local t = { host.random_bytes(16):byte(1, 16) }
  t[7] = bit.bor(bit.band(t[7], 0x0f), 0x40)
  t[9] = bit.bor(bit.band(t[9], 0x3f), 0x80)
  local hex = ("%02x"):rep(16):format(unpack(t))
  return ("%s-%s-%s-%s-%s"):format(hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21, 32))
end

local function random(n)
  local b1, b2 = host.random_bytes(2):byte(1, 2)
  return (b1 * 256 + b2) % n + 1
end

local totals = { won = 0, lost = 0, drawn = 0, failed = 0 }

local function say(fmt, ...)
  if not opts.quiet then print(fmt:format(...)) end
end

-- Plays one game in session `game` (a GameState); returns "won" | "lost" | "drawn".
local function play(me, game)
  local s = assert(client.open(gw_host, gw_port, "/game", me))
  local board, turn, made = {}, game.currentPlayerId, 0
  local function learn(g)
    board, made = {}, 0
    for _, m in ipairs(g.moves or {}) do
      board[m.position] = m.playerId
      made = made + 1
    end
    turn = g.currentPlayerId
  end
  learn(game)
  local sent_for = nil
  while true do
    if turn == me.playerId and sent_for ~= made and not game.result then
      local free = {}
      for pos = 0, 8 do if board[pos] == nil then free[#free + 1] = pos end end
      if #free > 0 then
        s:send { message = { playerId = me.playerId, position = free[random(#free)], team = me.team,
                             teamCharacterId = random(3) - 1 } }
        sent_for = made
      end
    end
    local m, why = s:receive(60)
    if m == nil then
      s:close()
      error("the game stream ended: " .. tostring(why), 0)
    end
    local msg = m.message
    if m.error then
      sent_for = nil -- (refused: try another cell)
    elseif msg and msg.position ~= nil then
      board[msg.position] = msg.playerId
      made = made + 1
      turn = msg.playerId == game.playerOne.playerId and game.playerTwo.playerId or game.playerOne.playerId
    elseif msg and msg.type == "started" then
      learn(msg.game)
    elseif msg and msg.type == "finished" then
      s:close()
      local r = msg.game.result
      local winner = r and r.result and r.result.player
      if winner == nil then return "drawn", msg.game end
      return winner.playerId == me.playerId and "won" or "lost", msg.game
    end
  end
end

local function bot(n)
  local team = opts.team == "both" and (n % 2 == 1 and "fish" or "rodents") or opts.team
  local me = { playerId = uuid4(), name = "bot-" .. n, team = team }
  local lobby = assert(client.open(gw_host, gw_port, "/matchmaking", me))
  for _ = 1, opts.games do
    lobby:send { message = { status = "ready" } }
    local game
    repeat
      local m, why = lobby:receive(60)
      if m == nil then error("the lobby stream ended: " .. tostring(why), 0) end
      if m.message and m.message.type == "started" then game = m.message.game end
    until game
    local outcome, final = play(me, game)
    totals[outcome] = totals[outcome] + 1
    local other = final.playerOne.playerId == me.playerId and final.playerTwo or final.playerOne
    local how = final.result.forfeit and (", a forfeit (" .. final.result.forfeit.reason .. ")") or ""
    say("%s (%s) %s against %s in %d moves%s", me.name, me.team, outcome, other.name, #final.moves, how)
  end
  lobby:send { message = { status = "disconnect" } }
  lobby:close()
end

atoll.run(function()
  local tasks = {}
  for n = 1, opts.players do
    tasks[n] = atoll.task(function()
      local ok, err = pcall(bot, n)
      if not ok then
        totals.failed = totals.failed + 1
        io.stderr:write(("bot-%d: %s\n"):format(n, tostring(err)))
      end
    end)
  end
  for _, t in ipairs(tasks) do pcall(t.wait, t, 3600) end
  print(("bots: %d players, %d games each: %d won, %d lost, %d drawn%s"):format(opts.players, opts.games,
    totals.won, totals.lost, totals.drawn, totals.failed > 0 and (", " .. totals.failed .. " failed") or ""))
  if totals.failed > 0 then os.exit(1) end
end)
