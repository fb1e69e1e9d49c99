-- The HTTP gateway: routes declared in Lua, handled in coroutines of their own that may call
-- any actor; message streams carried as JSON lines (both ways on one request), WebSocket or
-- Server-Sent Events; static files, /health and /metrics. The bytes are the C server's
-- (host/http.c, through atoll.c.http).
--
--   http.get(path, fn) / http.post(path, fn) / http.route(method, path, fn)
--       fn(req) -> value | status, value [, headers]   (a table is sent as JSON)
--   http.stream(path, fn [, opts])      fn(req, stream): stream:send(msg), stream:receive()
--   http.static(prefix, dir)            files under dir, tried before the routes
--   http.listen("HOST:PORT" [, opts])   -> server
local raw = require "atoll.c.http"
local host = require "atoll.c.host"
local json = require "atoll.util.json"
local runtime = require "atoll.runtime"

local M = {}

local routes = {}      -- { method, segments, fn, kind, opts }
local statics = {}     -- { prefix, dir }
local servers = {}     -- listening servers
-- server -> { exchanges = { connection id -> exchange }, high_water = bytes unread before send waits }
local state = setmetatable({}, { __mode = "k" })

M.config = {
  heartbeat = 15,      -- seconds between the server's heartbeats on a stream
  idle_timeout = 45,   -- a stream whose client sends nothing for this long is closed
  max_inbound = 1024,  -- messages a stream holds for its handler before reading pauses
}

local function log(level, msg)
  host.log(level, "http", msg)
end

-- to_json(value) -> JSON text | nil, why. What goes to a client as JSON must be UTF-8 (RFC 8259),
-- and json.encode passes a string's bytes through: a string that is not UTF-8 is refused here,
-- not sent for the client to choke on (escaping cannot help: JSON has no escape for a byte).
local function to_json(value)
  local ok, text = pcall(json.encode, value)
  if not ok then return nil, tostring(text) end
  local bad = json.utf8_error(text)
  if bad then return nil, "its JSON is " .. bad end
  return text
end

---------------------------------------------------------------------------
-- Routes
---------------------------------------------------------------------------

local function split_path(path)
  local segs = {}
  for s in path:gmatch("[^/]+") do segs[#segs + 1] = s end
  return segs
end

local function add(method, path, fn, kind, opts)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then error("a route's path starts with /", 3) end
  if type(fn) ~= "function" then error("a route needs a handler function", 3) end
  -- A route declared again (a reload) replaces the old one.
  for i, r in ipairs(routes) do
    if r.method == method and r.path == path then
      table.remove(routes, i)
      break
    end
  end
  routes[#routes + 1] = { method = method, path = path, segs = split_path(path), fn = fn, kind = kind,
    opts = opts or {}, label = "http " .. path }
end

-- route(method, path, fn): fn(req) answers. Segments ":name" match anything (req.params.name).
function M.route(method, path, fn)
  add(method:upper(), path, fn, "plain")
end

function M.get(path, fn) add("GET", path, fn, "plain") end
function M.post(path, fn) add("POST", path, fn, "plain") end
function M.put(path, fn) add("PUT", path, fn, "plain") end
function M.delete(path, fn) add("DELETE", path, fn, "plain") end

-- stream(path, fn [, opts]): a stream of JSON messages, reachable three ways:
--   POST with Content-Type application/jsonl (or application/x-ndjson): JSON lines both ways
--   GET with a WebSocket handshake: one JSON text message per message, both ways
--   GET with Accept: text/event-stream: Server-Sent Events, server to client only
-- opts: heartbeat (seconds), idle_timeout (seconds), heartbeat_message (a value sent as the
-- JSON-lines and WebSocket heartbeat instead of an empty line or a ping), methods.
function M.stream(path, fn, opts)
  for _, key in ipairs { "heartbeat", "idle_timeout" } do
    local v = opts and opts[key]
    if v ~= nil and v ~= false and not (type(v) == "number" and v >= 0 and v < math.huge) then
      error(("stream: %s must be a number of seconds (0 or false: none), got %s"):format(key, tostring(v)), 2)
    end
  end
  if opts and opts.heartbeat_message ~= nil then
    local _, why = to_json(opts.heartbeat_message)
    if why then error("stream: the heartbeat_message cannot be sent: " .. why, 2) end
  end
  add("STREAM", path, fn, "stream", opts)
end

function M.static(prefix, dir)
  if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  statics[#statics + 1] = { prefix = prefix, dir = dir }
  for _, s in ipairs(servers) do assert(s.raw:static(prefix, dir)) end
end

local function match(route, segs)
  if #route.segs ~= #segs then return nil end
  local params
  for i, s in ipairs(route.segs) do
    if s:sub(1, 1) == ":" then
      params = params or {}
      params[s:sub(2)] = segs[i]
    elseif s ~= segs[i] then
      return nil
    end
  end
  return params or {}
end

-- find(method, path) -> route, params | nil, allowed methods
local function find(method, path)
  local segs = split_path(path)
  local allowed = {}
  for _, r in ipairs(routes) do
    local params = match(r, segs)
    if params then
      if r.kind == "stream" then
        if method == "GET" or method == "POST" then return r, params end
        allowed[#allowed + 1] = "GET, POST"
      elseif r.method == method or (method == "HEAD" and r.method == "GET") then
        return r, params
      else
        allowed[#allowed + 1] = r.method
      end
    end
  end
  return nil, allowed
end

---------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local t = {}
  if q == nil then return t end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[unescape(k)] = unescape(v)
  end
  return t
end

local Request = {}
Request.__index = Request

-- req:json() -> the body decoded | nil, message, kind ("utf8": the body is not UTF-8, and the
-- message says where; "syntax": it is not JSON)
function Request:json()
  if self.body == nil or self.body == "" then return nil, "the request has no body" end
  local value, err, kind = json.decode(self.body)
  if kind == "utf8" then return nil, "the body is " .. err, kind end
  return value, err, kind
end

local function header_lines(headers)
  if headers == nil then return "" end
  local out = {}
  for k, v in pairs(headers) do out[#out + 1] = k .. ": " .. tostring(v) .. "\r\n" end
  return table.concat(out)
end

local JSON_TYPE = "application/json"

-- s with each byte that breaks UTF-8 replaced by U+FFFD: for messages that quote the client.
local function scrub(s)
  while true do
    local ok, at = raw.utf8_valid(s)
    if ok then return s end
    s = s:sub(1, at) .. "\239\191\189" .. s:sub(at + 2)
  end
end

local function send_error(srv, id, status, message)
  srv:respond(id, status, "Content-Type: " .. JSON_TYPE .. "\r\n", json.encode({ error = scrub(message) }) .. "\n")
end

-- What a plain handler returned, as a response.
local function respond(ex, ok, a, b, c)
  local srv, id = ex.srv, ex.id
  if not ok then
    log("error", ("%s %s failed: %s"):format(ex.req.method, ex.req.path, tostring(a)))
    return send_error(srv, id, 500, "the handler failed")
  end
  local status, value, headers = 200, a, b
  -- A first result that is an HTTP status is one; any other number is the answer.
  if type(a) == "number" and a == math.floor(a) and a >= 100 and a <= 599 then
    status, value, headers = a, b, c
  end
  headers = headers or {}
  local has_type = false
  for k in pairs(headers) do if k:lower() == "content-type" then has_type = true end end
  local body
  if type(value) == "table" then
    local text, why = to_json(value)
    if text == nil then
      log("error", ("%s %s failed: its answer cannot be sent: %s"):format(ex.req.method, ex.req.path, why))
      return send_error(srv, id, 500, "the handler failed")
    end
    body = text .. "\n"
    if not has_type then headers["Content-Type"] = JSON_TYPE end
  elseif value == nil then
    body = ""
  else
    body = tostring(value)
    if not has_type then headers["Content-Type"] = "text/plain; charset=utf-8" end
  end
  srv:respond(id, status, header_lines(headers), body)
end

local function run_plain(ex)
  runtime.start_root(function()
    return ex.route.fn(ex.req)
  end, function(ok, res, tb)
    if ex.tab[ex.id] == ex then ex.tab[ex.id] = nil end
    if ex.gone then return end
    if ok then
      respond(ex, true, res[1], res[2], res[3])
    else
      respond(ex, false, tb or res)
    end
  end, ex.route.label)
end

---------------------------------------------------------------------------
-- Streams
---------------------------------------------------------------------------

local Stream = {}
Stream.__index = Stream

local function sse_accepted(headers)
  local accept = headers.accept or ""
  return accept:find("text/event-stream", 1, true) ~= nil
end

local function jsonl_type(ct)
  ct = (ct or ""):lower()
  return ct:find("application/jsonl", 1, true) or ct:find("application/x-ndjson", 1, true)
    or ct:find("application/json-lines", 1, true)
end

-- A stream starts with its handler's first send or receive (or heartbeat, or return): the head
-- of a JSON-lines or SSE response goes then, and a WebSocket handshake's 101. Until then the
-- handler may refuse it with a status, whatever the transport.
local function ensure_started(st)
  if st.started then return end
  st.started = true
  local srv, id = st.srv, st.id
  if st.kind == "jsonl" then
    srv:stream_start(id, 200, "Content-Type: application/jsonl\r\nCache-Control: no-store\r\n")
  elseif st.kind == "sse" then
    srv:stream_start(id, 200, "Content-Type: text/event-stream\r\nCache-Control: no-store\r\n"
      .. "X-Accel-Buffering: no\r\n")
  else
    srv:ws_accept(id)
  end
end

-- Lets go of a stream that ends: its heartbeat, its exchange, and whoever waits on it.
local function release(st, why)
  st.closed = true
  st.why = st.why or why
  if st.timer then st.timer:cancel() end
  if st.tab[st.id] == st.ex then st.tab[st.id] = nil end
  if st.recv_waiter then st.recv_waiter:wake(nil) end
  if st.drain_waiter then st.drain_waiter:wake(false) end
end

-- Ends the stream from the server's side; a WebSocket closes with `code` and `reason` if given.
local function finish(st, why, code, reason)
  if st.closed then return end
  release(st, why)
  if st.gone then return end
  ensure_started(st)
  if st.kind == "websocket" then
    st.srv:ws_close(st.id, code or (why == "error" and 1011 or 1000),
      reason or (why == "error" and "server error" or ""))
  else
    st.srv:stream_end(st.id)
  end
end

-- Refuses a stream that has not started: the client gets the status and {"error": message}, as
-- the answer to its request (for a WebSocket, to its handshake).
local function refuse(st, status, message, why)
  release(st, why)
  if not st.gone then send_error(st.srv, st.id, status, message) end
end

local function gone(st, why)
  if st.gone then return end
  st.gone = true
  st.why = why
  finish(st, why)
end

-- frame(kind, json) -> one message as its transport carries it
local function frame(kind, text)
  if kind == "jsonl" then return text .. "\n" end
  if kind == "sse" then return "data: " .. text .. "\n\n" end
  return text -- a WebSocket text message
end

local function write_raw(st, bytes)
  local srv, id = st.srv, st.id
  local queued, err
  ensure_started(st)
  if st.kind == "websocket" then
    queued, err = srv:ws_send(id, bytes)
  else
    queued, err = srv:stream_write(id, bytes)
  end
  if queued == nil then
    gone(st, err)
    return nil, err
  end
  return queued
end

-- Sources whose frames are the gateway's, not the app's: a misuse is reported past them.
local OWN_SOURCES = { [debug.getinfo(1, "S").source] = true,
  [debug.getinfo(runtime.start_root, "S").source] = true }

-- Raises msg for a misuse of a stream method, at the app's line that called the method. A
-- handler that called it in a tail call (`return stream:reject(...)`) has no frame left for that
-- line (LuaJIT keeps none): the handler's own first line is named then, not the runtime's.
local function misuse(st, msg)
  local caller = debug.getinfo(3, "S") -- 1: misuse, 2: the method, 3: its caller
  if caller and caller.what ~= "C" and not OWN_SOURCES[caller.source] then error(msg, 3) end
  local handler = debug.getinfo(st.ex.route.fn, "S")
  error(("%s:%d: %s (called in a tail call by the handler of %s, which starts here)"):format(
    handler.short_src, handler.linedefined, msg, st.path), 0)
end

-- stream:send(msg) -> true | nil, why: sends one JSON message; waits while the client is slow
-- (more than the server's high-water mark unread). A message that cannot be JSON (a string
-- that is not UTF-8, a table that contains itself) raises.
function Stream:send(msg)
  if self.closed then return nil, self.why or "closed" end
  local text, bad = to_json(msg)
  if text == nil then misuse(self, "send: the message cannot be sent: " .. bad) end
  local queued, err = write_raw(self, frame(self.kind, text))
  if queued == nil then return nil, err end
  self.sent = self.sent + 1
  if queued > self.high_water then
    -- The server may say "drained" at once (its own mark is lower): that is not lost.
    self.drained = false
    self.srv:want_drain(self.id)
    if not self.drained and not self.closed then
      self.drain_waiter = runtime.waiter()
      local _, ok = self.drain_waiter:wait()
      self.drain_waiter = nil
      if not ok then return nil, self.why or "closed" end
    end
    if self.closed then return nil, self.why or "closed" end
  end
  return true
end

local Complaint = {} -- the metatable of an inbox entry that is an error for the client

-- stream:receive([seconds]) -> msg | nil, why ("closed", "timeout", or why the client went).
-- A message that could not be read is answered on the stream with {"error": ...}, in its
-- place among the others, and skipped.
function Stream:receive(seconds)
  while true do
    local q = self.inbox
    if q.head <= q.tail then
      local msg = q[q.head]
      q[q.head] = nil
      q.head = q.head + 1
      if self.paused and q.tail - q.head < self.max_inbound / 4 then
        self.paused = false
        self.srv:pause(self.id, false)
      end
      if getmetatable(msg) ~= Complaint then return msg end
      self:send({ error = msg.error })
    else
      if self.closed or self.ended then return nil, self.why or "closed" end
      -- A handler that waits for the client has accepted the stream: the head goes now.
      ensure_started(self)
      self.recv_waiter = runtime.waiter()
      local ok = self.recv_waiter:wait(seconds)
      self.recv_waiter = nil
      if not ok then return nil, "timeout" end
    end
  end
end

-- for msg in stream:messages() do ... end: until the client ends or goes
function Stream:messages()
  return function() return (self:receive()) end
end

-- The longest prefix of s, up to n bytes, that does not cut a UTF-8 character (s is UTF-8).
local function utf8_prefix(s, n)
  s = s:sub(1, n)
  while not raw.utf8_valid(s) do s = s:sub(1, -2) end
  return s
end

-- stream:reject(status [, message]) -> true | nil, why: refuses the stream. Before the handler
-- has sent or received anything, the client gets the status (400 to 599) and {"error": message}
-- as the answer to its request, a WebSocket handshake included. After, no status can go: the
-- stream ends with {"error": message, "status": status} as its last message, or a WebSocket
-- close with code 4000 + status and the message as its reason.
function Stream:reject(status, message)
  if type(status) ~= "number" or status % 1 ~= 0 or status < 400 or status > 599 then
    misuse(self, "reject: the status must be a number from 400 to 599, not "
      .. (type(status) == "string" and ("the string %q"):format(status) or tostring(status)))
  end
  if message == nil then message = "refused" end
  if type(message) ~= "string" then misuse(self, "reject: the message must be a string, not " .. type(message)) end
  local bad = json.utf8_error(message)
  if bad then misuse(self, "reject: the message is " .. bad) end
  if self.closed then return nil, self.why or "closed" end
  if not self.started then
    refuse(self, status, message, "rejected")
  elseif self.kind == "websocket" then
    finish(self, "rejected", 4000 + status, utf8_prefix(message, 123))
  else
    write_raw(self, frame(self.kind, json.encode({ error = message, status = status })))
    finish(self, "rejected")
  end
  return true
end

-- stream:close(): ends the stream (the handler returning does too)
function Stream:close()
  finish(self, "closed by the server")
end

local function deliver(st, msg)
  local q = st.inbox
  q.tail = q.tail + 1
  q[q.tail] = msg
  if not st.paused and q.tail - q.head + 1 >= st.max_inbound then
    st.paused = true
    st.srv:pause(st.id, true)
  end
  if st.recv_waiter then st.recv_waiter:wake(true) end
end

-- An inbound line or WebSocket text: JSON, or a complaint on the stream.
local function inbound(st, text)
  st.seen = runtime.now_ms()
  st.received = st.received + 1
  local complaint
  if text == false then
    complaint = "message " .. st.received .. " is longer than the server accepts; it was dropped"
  elseif text:match("^%s*$") then
    st.received = st.received - 1
    return -- a heartbeat
  else
    local msg, err, kind = json.decode(text)
    if err == nil and msg ~= nil then return deliver(st, msg) end
    if kind == "utf8" then
      complaint = "message " .. st.received .. " is " .. err .. "; it was dropped"
    else
      complaint = "message " .. st.received .. " is not JSON (" .. tostring(err) .. "); it was dropped"
    end
  end
  st.bad = st.bad + 1
  deliver(st, setmetatable({ error = complaint }, Complaint))
end

local heartbeat_tick

-- A stream's heartbeat and idle limit, in seconds; 0 or false turns one off.
local function stream_setting(st, key)
  local v = st.opts[key]
  if v == nil then v = M.config[key] end
  return v and v > 0 and v or nil
end

-- The next tick: at the heartbeat, or (without one) often enough to see an
-- idle client in time; none when neither is on.
local function schedule_heartbeat(st)
  local every = stream_setting(st, "heartbeat")
  if every == nil then
    local idle = stream_setting(st, "idle_timeout")
    if idle == nil then return end
    every = math.min(idle / 3, 1)
  end
  st.timer = runtime.after_raw(every, function()
    runtime.refresh_now()
    heartbeat_tick(st)
  end)
end

function heartbeat_tick(st)
  if st.closed then return end
  local opts = st.opts
  local now = runtime.now_ms()
  local idle = (stream_setting(st, "idle_timeout") or math.huge) * 1000
  -- A JSON-lines client whose body has ended has nothing more to say: only its socket tells.
  if st.kind ~= "sse" and not st.ended and now - st.seen > idle then
    log("info", ("%s %s: the client sent nothing for %g s; closing"):format(st.kind, st.path, idle / 1000))
    -- Gone, not finished: the client must not take a cut stream for a complete one.
    gone(st, "the client disconnected: nothing received for " .. (idle / 1000) .. " s")
    st.srv:abort(st.id)
    return
  end
  if stream_setting(st, "heartbeat") == nil then -- luacheck: ignore 542
    -- no heartbeat: this tick only watched for an idle client
  elseif st.kind == "sse" then
    write_raw(st, ": heartbeat\n\n")
  elseif opts.heartbeat_message ~= nil then
    write_raw(st, frame(st.kind, json.encode(opts.heartbeat_message)))
  elseif st.kind == "websocket" then
    ensure_started(st)
    st.srv:ws_ping(st.id)
  else
    write_raw(st, "\n")
  end
  schedule_heartbeat(st)
end

local function run_stream(ex, kind)
  local st = setmetatable({ srv = ex.srv, id = ex.id, tab = ex.tab, ex = ex, kind = kind, path = ex.req.path,
    opts = ex.route.opts,
    inbox = { head = 1, tail = 0 }, sent = 0, bad = 0, received = 0, seen = runtime.now_ms(),
    max_inbound = M.config.max_inbound, high_water = state[ex.srv].high_water }, Stream)
  ex.stream = st
  schedule_heartbeat(st)
  runtime.start_root(function()
    return ex.route.fn(ex.req, st)
  end, function(ok, err, tb)
    if not ok then
      log("error", ("stream %s failed: %s"):format(ex.req.path, tostring(tb or err)))
      if not st.closed and not st.gone then
        -- Not started: the failure is the answer, as a plain handler's is.
        if not st.started then return refuse(st, 500, "the handler failed", "error") end
        -- Written directly: this runs outside any coroutine, where send cannot wait.
        write_raw(st, frame(kind, json.encode({ error = "the handler failed" })))
      end
      finish(st, "error")
    else
      finish(st, "done")
    end
  end, ex.route.label)
end

---------------------------------------------------------------------------
-- Built-in routes
---------------------------------------------------------------------------

local function metrics_text(srv)
  local s = srv:stats()
  local out = {
    "# HELP atoll_http_connections_total Connections accepted.",
    "# TYPE atoll_http_connections_total counter",
    "atoll_http_connections_total " .. s.connections_total,
    "# HELP atoll_http_open_connections Connections open now.",
    "# TYPE atoll_http_open_connections gauge",
    "atoll_http_open_connections " .. s.open_connections,
    "# HELP atoll_http_requests_total Requests received.",
    "# TYPE atoll_http_requests_total counter",
    "atoll_http_requests_total " .. s.requests_total,
    "# HELP atoll_http_responses_total Responses sent, by status class.",
    "# TYPE atoll_http_responses_total counter",
  }
  for i = 1, 5 do out[#out + 1] = ('atoll_http_responses_total{code="%dxx"} %d'):format(i, s.by_status[i]) end
  local more = {
    { "open_streams", "gauge", "JSON-lines and SSE responses streaming now.", s.open_streams },
    { "open_websockets", "gauge", "WebSocket connections open now.", s.open_websockets },
    { "received_bytes_total", "counter", "Bytes received from clients.", s.bytes_in },
    { "sent_bytes_total", "counter", "Bytes sent to clients.", s.bytes_out },
    { "errors_total", "counter", "Requests refused as malformed, too large or too slow.", s.errors_total },
  }
  for _, m in ipairs(more) do
    out[#out + 1] = ("# HELP atoll_http_%s %s"):format(m[1], m[3])
    out[#out + 1] = ("# TYPE atoll_http_%s %s"):format(m[1], m[2])
    out[#out + 1] = ("atoll_http_%s %d"):format(m[1], m[4])
  end
  return table.concat(out, "\n") .. "\n"
end

local function builtin(srv, id, method, path)
  if path == "/health" and (method == "GET" or method == "HEAD") then
    local node = runtime.node or {}
    srv:respond(id, 200, "Content-Type: " .. JSON_TYPE .. "\r\nCache-Control: no-store\r\n",
      json.encode({ status = "ok", node = node.name or host.name(),
        address = (node.address and node.address ~= "") and node.address or json.null }) .. "\n")
    return true
  elseif path == "/metrics" and (method == "GET" or method == "HEAD") then
    srv:respond(id, 200, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", metrics_text(srv))
    return true
  end
  return false
end

---------------------------------------------------------------------------
-- Events from the server
---------------------------------------------------------------------------

local function on_request(srv, id, method, target, headers, peer)
  local path, q = target:match("^([^?#]*)%??([^#]*)")
  if path == nil or path:sub(1, 1) ~= "/" then
    send_error(srv, id, 400, "the request target must be a path")
    return "buffer"
  end
  if builtin(srv, id, method, path) then return "buffer" end
  local route, params = find(method, path)
  if route == nil then
    if #params > 0 then
      srv:respond(id, 405, "Allow: " .. table.concat(params, ", ") .. "\r\nContent-Type: " .. JSON_TYPE .. "\r\n",
        json.encode({ error = method .. " is not allowed here" }) .. "\n")
    else
      send_error(srv, id, 404, "no route for " .. path)
    end
    return "buffer"
  end
  local req = setmetatable({ method = method, target = target, path = path, query = parse_query(q),
    headers = headers, peer = peer, params = params }, Request)
  local tab = state[srv].exchanges
  local ex = { srv = srv, id = id, route = route, req = req, tab = tab }
  if route.kind == "stream" then
    local kind
    if method == "GET" and (headers.upgrade or ""):lower():find("websocket", 1, true) then
      kind = "websocket"
    elseif method == "GET" and sse_accepted(headers) then
      kind = "sse"
    elseif method == "POST" and jsonl_type(headers["content-type"]) then
      kind = "jsonl"
    else
      send_error(srv, id, method == "POST" and 415 or 406, "this stream takes POST with Content-Type "
        .. "application/jsonl, a WebSocket handshake, or GET with Accept: text/event-stream")
      return "buffer"
    end
    tab[id] = ex
    -- JSON lines start now, while the body streams in; a WebSocket or SSE handler starts once
    -- the request is complete (a WebSocket's handshake is checked, and its 101 waits for the
    -- handler: see ensure_started).
    if kind == "jsonl" then run_stream(ex, kind) else ex.stream_kind = kind end
    return kind == "websocket" and "websocket" or (kind == "jsonl" and "lines" or "buffer")
  end
  tab[id] = ex
  return "buffer"
end

local function on_event(srv, kind, id, a, b, c, d)
  if kind == "request" then return on_request(srv, id, a, b, c, d) end
  local ex = state[srv].exchanges[id]
  if ex == nil then return end
  local st = ex.stream
  if kind == "body" then
    ex.req.body = a
  elseif kind == "end" then
    if ex.stream_kind and not st then
      run_stream(ex, ex.stream_kind)
    elseif st then
      -- The end of a JSON-lines body ends the client's messages; a WebSocket handshake and an
      -- SSE request have no body that matters.
      if st.kind == "jsonl" then st.ended = true end
      if st.recv_waiter then st.recv_waiter:wake(true) end
    else
      run_plain(ex)
    end
  elseif kind == "lines" then
    if st then
      for i = 1, #a do
        if st.closed then break end
        inbound(st, a[i])
      end
    end
  elseif kind == "ws" then
    if st then
      if a == nil then st.seen = runtime.now_ms() else inbound(st, a) end
    end
  elseif kind == "drain" then
    if st then
      st.drained = true
      if st.drain_waiter then st.drain_waiter:wake(true) end
    end
  elseif kind == "gone" then
    ex.tab[id] = nil
    ex.gone = true
    if st then gone(st, "the client disconnected: " .. tostring(a)) end
  end
end

---------------------------------------------------------------------------
-- Listening
---------------------------------------------------------------------------

local function parse_address(spec)
  local h, p = spec:match("^%[(.+)%]:(%d+)$")
  if not h then h, p = spec:match("^(.*):(%d+)$") end
  if not h or h == "" then return nil end
  return h, tonumber(p)
end

-- listen("HOST:PORT" [, limits]) -> server { port, address, close() } | nil, message
-- limits: max_header, max_body, max_line, max_ws_message (bytes); header_timeout,
-- idle_timeout (seconds) for requests; high_water (bytes unread before send waits).
function M.listen(spec, limits)
  local ip, port = parse_address(spec)
  if not ip then return nil, ("bad HTTP address '%s' (want HOST:PORT)"):format(tostring(spec)) end
  local srv
  local handler = function(kind, id, a, b, c, d)
    runtime.refresh_now()
    local r = on_event(srv, kind, id, a, b, c, d)
    runtime.drain()
    return r
  end
  local err
  srv, err = raw.listen(ip, port, limits or {}, handler)
  if not srv then return nil, err end
  state[srv] = { exchanges = {}, high_water = (limits or {}).high_water or 256 * 1024 }
  for _, s in ipairs(statics) do assert(srv:static(s.prefix, s.dir)) end
  local server = { raw = srv, port = srv:port(), address = ip .. ":" .. srv:port() }
  function server.close()
    for i, s in ipairs(servers) do if s == server then table.remove(servers, i) end end
    srv:close()
  end
  function server.stats() return srv:stats() end
  -- Stops accepting and ends open streams; answers in progress finish.
  function server.shutdown()
    srv:shutdown(false)
    local open = {}
    for _, ex in pairs(state[srv].exchanges) do
      if ex.stream then open[#open + 1] = ex.stream end
    end
    for _, st in ipairs(open) do finish(st, "the server is shutting down") end
  end
  servers[#servers + 1] = server
  return server
end

function M.servers()
  return servers
end

return M
