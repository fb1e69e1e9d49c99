-- An HTTP app for the gateway specs. Listens on 127.0.0.1:0 with the limits WEB_* set, and
-- prints "http port N" once it serves.
local atoll = require "atoll"
local http = atoll.http

local function env_num(name)
  return tonumber(os.getenv(name) or "")
end

http.get("/hello", function(req)
  return { hello = req.query.name or "world" }
end)

http.post("/echo", function(req)
  local v, err = req:json()
  if err then return 400, { error = err } end
  return 200, v
end)

-- Answers after a pause: pipelined requests behind it must still be answered in order.
http.get("/slow", function(req)
  atoll.sleep(tonumber(req.query.s) or 0.2)
  return "slow done\n"
end)

-- A number that is not an HTTP status is the answer itself.
http.get("/number", function() return 5 end)

http.get("/fail", function()
  error("this handler fails on purpose")
end)

http.stream("/chat", function(req, stream)
  stream:send({ welcome = req.peer, kind = stream.kind })
  while true do
    local msg, why = stream:receive()
    if msg == nil then
      print("chat ended: " .. tostring(why))
      break
    end
    stream:send({ echo = msg })
  end
end, { heartbeat = env_num("WEB_HEARTBEAT"), idle_timeout = env_num("WEB_IDLE") })

-- Sends `n` messages of 1 KiB as fast as the client takes them, printing its progress.
http.stream("/flood", function(req, stream)
  local n = tonumber(req.query.n) or 10000
  local pad = ("x"):rep(1024)
  for i = 1, n do
    if not stream:send({ i = i, pad = pad }) then
      print("flood stopped at " .. i)
      return
    end
    if i % 100 == 0 then print("flood sent " .. i) end
  end
  print("flood done")
end)

http.stream("/picky", function(req, stream)
  if req.headers["x-token"] ~= "yes" then return stream:reject(403, "no token") end
  stream:send({ ok = true })
end)

local static = os.getenv("WEB_STATIC")
if static then http.static("/files/", static) end

local server = assert(http.listen("127.0.0.1:0", {
  header_timeout = env_num("WEB_HEADER_TIMEOUT"),
  idle_timeout = env_num("WEB_IDLE_TIMEOUT"),
  max_header = env_num("WEB_MAX_HEADER"),
  max_body = env_num("WEB_MAX_BODY"),
  max_line = env_num("WEB_MAX_LINE"),
  max_ws_message = env_num("WEB_MAX_WS"),
}))
print("http port " .. server.port)
if os.getenv("WEB_SECOND") then
  -- A second server on the same node, with the same routes: exchanges must not mix.
  print("second port " .. assert(http.listen("127.0.0.1:0")).port)
end
