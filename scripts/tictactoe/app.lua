-- A node of the tic-tac-toe cluster: it may run players, sessions and the lobby, and, with
-- --http, serves the game's API (scripts/tictactoe/gateway.lua).
--   atoll run scripts/tictactoe/app.lua --listen HOST:PORT [--join SEED] [--http HOST:PORT]
package.path = "scripts/?.lua;" .. package.path
local atoll = require "atoll"
local lobby = require "tictactoe.lobby"
local session = require "tictactoe.session"
local player = require "tictactoe.player"
require "tictactoe.gateway"

session.host()
player.host()
if os.getenv("TICTACTOE_LOBBY") ~= "0" then atoll.singleton.host(lobby.NAME, lobby.Lobby) end
print("ready")
