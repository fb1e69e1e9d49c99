-- The server side of bench/http.lua: static files from BENCH_STATIC at /, and /echo, a stream
-- that sends back each message it receives. Prints "http port N".
local atoll = require "atoll"
local http = atoll.http

http.static("/", assert(os.getenv("BENCH_STATIC")))
http.stream("/echo", function(_, stream)
  for msg in stream:messages() do
    if not stream:send(msg) then return end
  end
end, { heartbeat = 600, idle_timeout = 3600 })

local server = assert(http.listen("127.0.0.1:0"))
print("http port " .. server.port)
