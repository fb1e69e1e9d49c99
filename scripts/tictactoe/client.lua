-- A client of the game's HTTP API as any program outside the cluster would be: one POST per
-- stream, JSON lines both ways (a chunked request body the client keeps writing, a chunked
-- response it keeps reading). For the bots (scripts/tictactoe/bot.lua) and the benchmarks.
--
--   local s = assert(client.open("127.0.0.1", 8080, "/matchmaking", player))
--   s:send { message = { status = "ready" } }
--   local m = s:receive(10)      -- the next message, decoded; nil, why at the end or timeout
--   s:close()
local tcp = require "atoll.tcp"
local json = require "atoll.util.json"

local M = {}

local Stream = {}
Stream.__index = Stream

-- open(host, port, path, player [, seconds]) -> stream | nil, why
function M.open(host, port, path, player, seconds)
  local sock, err = tcp.connect(host, port, seconds or 5)
  if not sock then return nil, err end
  sock:write(("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/jsonl\r\n"
    .. "Transfer-Encoding: chunked\r\nplayer_id: %s\r\nplayer_name: %s\r\nplayer_team: %s\r\n\r\n")
    :format(path, host, port, player.playerId, player.name, player.team))
  local s = setmetatable({ sock = sock, buf = "", head = nil, lines = {}, first = 1, chunked = false }, Stream)
  -- The status line and headers
  local deadline = (seconds or 5)
  while s.head == nil do
    local data, why = sock:read(deadline)
    if data == nil then
      sock:close()
      return nil, "no answer: " .. tostring(why)
    end
    s.buf = s.buf .. data
    local i = s.buf:find("\r\n\r\n", 1, true)
    if i then
      s.head = s.buf:sub(1, i + 3)
      s.buf = s.buf:sub(i + 4)
    end
  end
  local status = tonumber(s.head:match("^HTTP/1%.1 (%d+)"))
  if status ~= 200 then
    sock:close()
    return nil, ("HTTP %s: %s"):format(tostring(status), s.buf)
  end
  s.chunked = s.head:lower():find("transfer%-encoding: chunked") ~= nil
  return s
end

-- send(message): one line of the request body (its own chunk)
function Stream:send(message)
  local line = json.encode(message) .. "\n"
  return self.sock:write(("%x\r\n%s\r\n"):format(#line, line))
end

-- Takes the complete chunks out of self.buf, their data to self.body.
local function dechunk(self)
  if not self.chunked then
    self.body = (self.body or "") .. self.buf
    self.buf = ""
    return
  end
  while true do
    local eol = self.buf:find("\r\n", 1, true)
    if eol == nil then return end
    local size = tonumber(self.buf:sub(1, eol - 1):match("^%x+"), 16)
    if size == nil then error("a malformed chunk from the server", 0) end
    if size == 0 then
      self.ended = true
      return
    end
    if #self.buf < eol + 1 + size + 2 then return end
    self.body = (self.body or "") .. self.buf:sub(eol + 2, eol + 1 + size)
    self.buf = self.buf:sub(eol + 2 + size + 2)
  end
end

-- receive([seconds]) -> the next message, or nil, "eof" | "timeout"
function Stream:receive(seconds)
  while true do
    dechunk(self)
    local body = self.body or ""
    local nl = body:find("\n", 1, true)
    while nl do
      local line = body:sub(1, nl - 1)
      body = body:sub(nl + 1)
      self.body = body
      if line ~= "" then return json.decode(line) end
      nl = body:find("\n", 1, true)
    end
    if self.ended then return nil, "eof" end
    local data, why = self.sock:read(seconds or 10)
    if data == nil then return nil, why end
    self.buf = self.buf .. data
  end
end

-- close(): the request body ends; the server ends the stream
function Stream:close()
  self.sock:write("0\r\n\r\n")
  self.sock:close()
end

return M
