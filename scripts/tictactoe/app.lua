-- A node of the tic-tac-toe cluster: it may run players, sessions and the lobby, and, with
-- --http, serves the game's API (scripts/tictactoe/gateway.lua).
--   atoll run scripts/tictactoe/app.lua --listen HOST:PORT [--join SEED] [--http HOST:PORT]
-- (the game's modules are tictactoe.*, beside this file: found from any working directory)
package.path = (debug.getinfo(1, "S").source:match("^@(.-)/?tictactoe/[^/]*$") or "scripts") .. "/?.lua;"
  .. package.path
local atoll = require "atoll"
local lobby = require "tictactoe.lobby"
local session = require "tictactoe.session"
local player = require "tictactoe.player"
require "tictactoe.gateway"

session.host()
player.host()
if os.getenv("TICTACTOE_LOBBY") ~= "0" then atoll.singleton.host(lobby.NAME, lobby.Lobby) end
print("ready")
