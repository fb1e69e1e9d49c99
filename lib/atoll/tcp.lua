-- TCP client sockets for actor code: connect, write, read with deadlines.
--
--   local tcp = require "atoll.tcp"
--   local s = assert(tcp.connect("127.0.0.1", 7000, 5))
--   s:write("hello")
--   local data = s:read(5)        -- what has arrived, or nil, "eof" | "timeout"
local raw = require "atoll.c.tcp"
local runtime = require "atoll.runtime"

local M = {}

local Socket = {}
Socket.__index = Socket

local function wake(s)
  if s.waiter:waiting() then s.waiter:wake(true) end
end

-- connect(host, port [, seconds]) -> socket | nil, message
function M.connect(host, port, seconds)
  local s = setmetatable({ chunks = {}, eof = false, closed = false, connected = false,
                           waiter = runtime.waiter() }, Socket)
  local handle, err = raw.connect(host, port, runtime.callback(function(event, data)
    if event == "connected" then
      s.connected = true
    elseif event == "data" then
      s.chunks[#s.chunks + 1] = data
    elseif event == "eof" then
      s.eof = true
    elseif event == "error" then
      s.err = data
      s.eof = true
    elseif event == "closed" then
      s.closed = true
      s.eof = true
    end
    wake(s)
  end))
  if handle == nil then return nil, err end
  s.handle = handle
  local deadline = runtime.now_ms() + (seconds or 5) * 1000
  while not s.connected and not s.eof do
    local left = (deadline - runtime.now_ms()) / 1000
    if left <= 0 then
      handle:close()
      return nil, "connect timed out"
    end
    s.waiter:wait(left)
  end
  if not s.connected then return nil, s.err or "connection failed" end
  return s
end

function Socket:write(data)
  return self.handle:write(data)
end

-- read([seconds]) -> bytes received so far | nil, "eof" | "timeout"
function Socket:read(seconds)
  local deadline = runtime.now_ms() + (seconds or 5) * 1000
  while #self.chunks == 0 and not self.eof do
    local left = (deadline - runtime.now_ms()) / 1000
    if left <= 0 then return nil, "timeout" end
    self.waiter:wait(left)
  end
  if #self.chunks == 0 then return nil, "eof" end
  local data = table.concat(self.chunks)
  self.chunks = {}
  return data
end

-- wait_closed([seconds]) -> true once the peer has closed the connection
function Socket:wait_closed(seconds)
  local deadline = runtime.now_ms() + (seconds or 5) * 1000
  while not self.eof do
    local left = (deadline - runtime.now_ms()) / 1000
    if left <= 0 then return false end
    self.waiter:wait(left)
  end
  return true
end

function Socket:close()
  self.handle:close()
end

return M
