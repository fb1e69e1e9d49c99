-- The tic-tac-toe gateway: build/atoll run examples/tictactoe/app.lua --http 127.0.0.1:8080
-- (see openapi.yaml and the README's HTTP section for curl and WebSocket examples).
require "gateway"
