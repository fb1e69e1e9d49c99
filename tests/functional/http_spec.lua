-- The HTTP gateway against real clients: curl for plain requests, JSON lines both ways and SSE;
-- `ws` from npm for WebSocket; raw sockets for malformed input. The node keeps serving
-- everyone else whatever one client sends.
local atoll = require "atoll"
local bit = require "bit"
local async = require "helpers.async"
local json = require "atoll.util.json"
local node = require "helpers.node"
local process = require "atoll.process"
local tcp = require "atoll.tcp"
local tmp = require "helpers.tmp"

local WEB = "tests/functional/apps/web.lua"
local UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

local function web(env)
  local p = node.start({ "run", WEB }, { env = env })
  local _, port = p:expect("^http port (%d+)$", 10)
  return p, tonumber(port)
end

-- curl(args...) -> exit code, stdout, stderr
local function curl(...)
  local cmd = { "curl", "-s", "-S", "--max-time", "10", ... }
  local p = assert(process.spawn(cmd))
  local code = p:wait(15)
  return code, p:stdout(), p:stderr()
end

-- Sends bytes on a fresh connection; returns everything received until the server closes it
-- (or `seconds` pass: then nil and what came).
local function exchange(port, bytes, seconds)
  local s = assert(tcp.connect("127.0.0.1", port))
  if bytes then s:write(bytes) end
  local got = {}
  local deadline = os.time() + (seconds or 5) + 1
  while true do
    local data, why = s:read(seconds or 5)
    if data then
      got[#got + 1] = data
    elseif why == "eof" then
      s:close()
      return table.concat(got)
    else
      s:close()
      return nil, table.concat(got)
    end
    if os.time() > deadline then
      s:close()
      return nil, table.concat(got)
    end
  end
end

local function assert_serving(port)
  local code, out = curl("http://127.0.0.1:" .. port .. "/hello?name=still")
  assert.equal(0, code)
  assert.equal('{"hello":"still"}\n', out)
end

-- A WebSocket opening handshake (RFC 6455, 4.1) for raw sockets, with extra header lines.
local function ws_handshake(path, headers)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" .. (headers or "") .. "\r\n"
end

-- One masked text frame, as a client sends it (RFC 6455, 5.3), for payloads under 126 bytes.
local function ws_text_frame(payload)
  local mask = { 0x12, 0x34, 0x56, 0x78 }
  local out = { string.char(0x81, 0x80 + #payload, unpack(mask)) }
  for i = 1, #payload do
    out[#out + 1] = string.char(bit.bxor(payload:byte(i), mask[(i - 1) % 4 + 1]))
  end
  return table.concat(out)
end

local function ws_client(port, path, ...)
  return assert(process.spawn { "node", "tests/js/ws-client.mjs", "ws://127.0.0.1:" .. port .. path, ... })
end

-- An app of the specs' own, for handlers that web.lua has no reason to carry: the README's /chat
-- as it is there, handlers that refuse late or misuse reject, and answers JSON cannot carry.
local REFUSING_APP = [=[
local atoll = require "atoll"
local http = atoll.http

http.stream("/chat", function(req, stream)
  if req.headers["x-token"] == nil then return stream:reject(401, "no token") end
  stream:send({ welcome = req.peer })
  for msg in stream:messages() do                -- until the client ends or goes
    stream:send({ echo = msg })                  -- waits while the client reads slowly
  end
end, { heartbeat = 15, idle_timeout = 45 })

-- Refuses after waiting, as a handler that asks an actor whether the client may come in.
http.stream("/later", function(req, stream)
  atoll.sleep(0.05)
  return stream:reject(403, "checked later")
end)

-- Accepts after waiting, then echoes.
http.stream("/wait", function(req, stream)
  atoll.sleep(0.05)
  for msg in stream:messages() do stream:send({ echo = msg }) end
end)

-- Refuses a stream it has started already.
http.stream("/after", function(req, stream)
  stream:send({ hello = 1 })
  return stream:reject(409, "too late")
end)

-- Says nothing at all.
http.stream("/nothing", function() end)

http.stream("/misuse", function(req, stream)
  stream:reject("409", "a status as text") -- misuse: called here
  print("misuse went on")
end)

http.stream("/misuse-tail", function(req, stream) -- misuse: the handler
  return stream:reject(200, "not a refusal")
end)

http.get("/bytes", function() return { bytes = "\255\254" } end)

http.stream("/bytes-stream", function(req, stream)
  stream:send({ ok = true })
  stream:send({ bytes = "\255\254" })
end)

print("http port " .. assert(http.listen("127.0.0.1:0")).port)
]=]

-- The line of REFUSING_APP that holds `marker`.
local function app_line(marker)
  local n = 0
  for line in (REFUSING_APP .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find(marker, 1, true) then return n end
  end
  error("no line holds " .. marker)
end

describe("the HTTP gateway", function()

  describe("plain requests", function()
    local p, port, dir
    setup(async(function()
      dir = tmp.dir("web")
      tmp.write(dir .. "/index.html", "<h1>atoll</h1>\n")
      tmp.write(dir .. "/app.js", "console.log(1)\n")
      p, port = web { WEB_STATIC = dir }
    end))
    teardown(async(function()
      node.stop(p)
      tmp.remove(dir)
    end))
    local function url(path) return "http://127.0.0.1:" .. port .. path end

    it("answers routes with JSON, by method, with 404 and 405 otherwise", async(function()
      local code, out = curl("-i", url("/hello?name=ann"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 200 OK\r\n", out)
      assert.matches("Content%-Type: application/json\r\n", out)
      assert.matches('\r\n\r\n{"hello":"ann"}\n$', out)
      code, out = curl("-d", '{"a":[1,2]}', url("/echo"))
      assert.equal(0, code)
      assert.equal('{"a":[1,2]}\n', out)
      code, out = curl("-i", "-d", "not json", url("/echo"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 400", out)
      code, out = curl("-i", url("/number"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\n5$", out)
      code, out = curl("-i", url("/nowhere"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 404", out)
      code, out = curl("-i", "-X", "DELETE", url("/hello"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 405", out)
      assert.matches("Allow: GET\r\n", out)
      -- The method is the one sent, not the parser's first guess (PUT is not POST).
      code, out = curl("-i", "-X", "PUT", "-d", "{}", url("/echo"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 405", out)
      assert.matches("Allow: POST\r\n", out)
      -- An upgrade to something else than WebSocket (h2c) is answered as HTTP/1.1, once.
      local reply = exchange(port, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        .. "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /hello?name=next HTTP/1.1\r\n"
        .. "Host: x\r\nConnection: close\r\n\r\n")
      local _, answers = reply:gsub("HTTP/1.1 ", "")
      assert.equal(2, answers, reply)
      assert.matches('{"hello":"world"}.*{"hello":"next"}', reply)
      code, out = curl("-i", url("/fail"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 500", out)
      assert.matches('{"error":"the handler failed"}', out)
      code, out = curl("-I", url("/hello"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 200", out)
      assert.matches("Content%-Length: 18\r\n", out)
    end))

    it("refuses JSON that is not UTF-8 with a 400 that says where, in a body as in a JSON line", async(function()
      local body = '{"a":"\255\254"}'
      local reply = exchange(port, "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        .. #body .. "\r\n\r\n" .. body)
      assert.matches("^HTTP/1.1 400", reply)
      assert.matches('\r\n\r\n{"error":"the body is not valid UTF%-8 at byte offset 6"}\n$', reply)
      -- The same rule, the same words, for a line of a JSON-lines stream.
      reply = exchange(port, "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/jsonl\r\n"
        .. "Content-Length: " .. (#body + 1) .. "\r\n\r\n" .. body .. "\n")
      assert.matches('\n{"error":"message 1 is not valid UTF%-8 at byte offset 6; it was dropped"}\r?\n', reply)
      -- The server's own messages quote a path as it came: a byte that is not UTF-8 is replaced.
      reply = exchange(port, "GET /\255x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.matches('^HTTP/1.1 404 .*\r\n\r\n{"error":"no route for /\239\191\189x"}\n$', reply)
      assert_serving(port)
    end))

    it("serves static files with their types, and nothing outside their directory", async(function()
      local code, out = curl("-i", url("/files/"))
      assert.equal(0, code)
      assert.matches("Content%-Type: text/html; charset=utf%-8\r\n", out)
      assert.matches("<h1>atoll</h1>\n$", out)
      code, out = curl("-i", url("/files/app.js"))
      assert.equal(0, code)
      assert.matches("Content%-Type: text/javascript", out)
      for _, bad in ipairs { "/files/../web.lua", "/files/%2e%2e/x", "/files/.hidden", "/files/missing.html" } do
        local reply = exchange(port, "GET " .. bad .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.matches("^HTTP/1.1 404", reply, bad)
      end
    end))

    it("keeps connections alive and answers pipelined requests in order", async(function()
      local code, out = curl("-w", "%{num_connects} connects\n", url("/hello?name=a"), url("/hello?name=b"))
      assert.equal(0, code)
      assert.equal('{"hello":"a"}\n1 connects\n{"hello":"b"}\n0 connects\n', out)
      -- Three requests in one write; the first takes 0.2 s.
      local reply = exchange(port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /hello?name=second HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /hello?name=third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local a = reply:find("slow done", 1, true)
      local b = reply:find('"second"', 1, true)
      local c = reply:find('"third"', 1, true)
      assert.truthy(a and b and c, reply)
      assert.is_true(a < b and b < c)
    end))

    it("answers every pipelined request of a client that half-closes, then closes", async(function()
      local c = assert(process.spawn { "node", "tests/js/half-close.mjs", tostring(port) })
      c:write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=two HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /hello?name=three HTTP/1.1\r\nHost: x\r\n\r\n")
      c:close_stdin()
      assert.equal(0, c:wait(10))
      local out = c:stdout()
      local _, answers = out:gsub("HTTP/1.1 200", "")
      assert.equal(3, answers, out)
      assert.matches('slow done.*"two".*"three"', out)
    end))

    it("reports health and metrics", async(function()
      local code, out = curl(url("/health"))
      assert.equal(0, code)
      assert.equal("ok", json.decode(out).status)
      code, out = curl(url("/metrics"))
      assert.equal(0, code)
      assert.matches("# TYPE atoll_http_requests_total counter\n", out)
      local total = tonumber(out:match("\natoll_http_requests_total (%d+)\n"))
      assert.is_true(total >= 1)
      assert.matches('\natoll_http_responses_total{code="2xx"} %d+\n', out)
      assert.matches("\natoll_http_open_connections %d+\n", out)
      assert.matches("\natoll_http_sent_bytes_total %d+\n", out)
      code, out = curl(url("/metrics"))
      assert.equal(0, code)
      assert.is_true(tonumber(out:match("\natoll_http_requests_total (%d+)\n")) > total)
    end))
  end)

  describe("malformed and hostile input", function()
    local p, port
    setup(async(function()
      p, port = web { WEB_HEADER_TIMEOUT = "0.5", WEB_MAX_HEADER = "2048", WEB_MAX_BODY = "1000",
        WEB_MAX_LINE = "200" }
    end))
    teardown(async(function() node.stop(p) end))

    local cases = {
      { "a bad request line", "GARBAGE\r\n\r\n", "^HTTP/1.1 400" },
      { "an unsupported version", "GET / HTTP/9.9\r\n\r\n", "^HTTP/1.1 505" },
      { "oversized headers", "GET /hello HTTP/1.1\r\nX: " .. ("a"):rep(3000) .. "\r\n\r\n", "^HTTP/1.1 431" },
      { "an oversized URL", "GET /" .. ("a"):rep(9000) .. " HTTP/1.1\r\n\r\n", "^HTTP/1.1 41[34]" },
      { "an invalid chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "^HTTP/1.1 400" },
      -- http-parser reads a chunk size into its content length, and calls its overflow an invalid
      -- Content-Length header: the client must hear what it really sent wrong.
      { "an overflowing chunk size, by name", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. ("f"):rep(17) .. "\r\n", "^HTTP/1.1 400 Bad Request\r\n.*\r\n\r\nchunk size too large\n$" },
      { "an invalid chunk size, by name", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "zz\r\n", "^HTTP/1.1 400 Bad Request\r\n.*\r\n\r\ninvalid chunk size\n$" },
      -- ... and a Content-Length too large for 64 bits the same way: it is a body too large,
      -- not a bad character; a bad character is one.
      { "an overflowing Content-Length, by name", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
        .. ("9"):rep(30) .. "\r\n\r\n", "^HTTP/1.1 413 Content Too Large\r\n.*\r\n\r\nthe request body is too large "
        .. "%(its Content%-Length does not fit in 64 bits%)\n$" },
      { "a Content-Length with a space inside, by name", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2"
        .. "\r\n\r\n", "^HTTP/1.1 400 Bad Request\r\n.*\r\n\r\ninvalid character in content%-length header\n$" },
      { "a body over the limit", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", "^HTTP/1.1 413" },
      { "a chunked body over the limit", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "7d0\r\n" .. ("x"):rep(2000) .. "\r\n0\r\n\r\n", "^HTTP/1.1 413" },
      { "binary garbage", "\0\1\2\3\255\254\r\n\r\n", "^HTTP/1.1 400" },
    }
    for _, case in ipairs(cases) do
      it("answers " .. case[1] .. " and closes, and serves others meanwhile", async(function()
        local reply, partial = exchange(port, case[2])
        assert.truthy(reply, "the connection stayed open: " .. tostring(partial))
        assert.matches(case[3], reply)
        assert_serving(port)
      end))
    end

    it("closes a request sent halfway and left open, after the header timeout", async(function()
      local s = assert(tcp.connect("127.0.0.1", port))
      s:write("GET /hello HTTP/1.1\r\nHost: x\r\nX-Half: ")
      assert_serving(port)
      local data = s:read(3)
      assert.matches("^HTTP/1.1 408", data)
      assert.is_true(s:wait_closed(3))
      s:close()
    end))

    it("answers JSON lines that are not JSON, not UTF-8 or too long with an error in place", async(function()
      local body = '{"n":1}\nnope\n{"s":"\255\254"}\n' .. ("z"):rep(300) .. '\n{"n":2}\n'
      local reply = exchange(port, "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/jsonl\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      assert.truthy(reply)
      local lines = {}
      for l in reply:gmatch('{[^\r\n]*}') do lines[#lines + 1] = l end
      assert.matches('"welcome"', lines[1])
      assert.equal('{"echo":{"n":1}}', lines[2])
      assert.matches('"message 2 is not JSON', lines[3])
      assert.matches('"message 3 is not valid UTF%-8', lines[4])
      assert.matches('"message 4 is longer than the server accepts', lines[5])
      assert.equal('{"echo":{"n":2}}', lines[6])
      assert_serving(port)
    end))

    it("takes application/x-ndjson as JSON lines too", async(function()
      local code, out = curl("-X", "POST", "-H", "Content-Type: application/x-ndjson", "--data-binary",
        '{"n":7}\n', "http://127.0.0.1:" .. port .. "/chat")
      assert.equal(0, code)
      assert.matches('\n{"echo":{"n":7}}\n$', out)
    end))

    it("refuses a stream before it starts with a status", async(function()
      local code, out = curl("-i", "-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}",
        "http://127.0.0.1:" .. port .. "/picky")
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 403", out)
      assert.matches('{"error":"no token"}', out)
      code, out = curl("-i", "-X", "POST", "-H", "Content-Type: text/plain", "-d", "{}",
        "http://127.0.0.1:" .. port .. "/chat")
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 415", out)
    end))
  end)

  describe("streams", function()

    it("keep the exchanges of two servers of one node apart", async(function()
      local p, port = web { WEB_SECOND = "1" }
      local _, second = p:expect("^second port (%d+)$", 5)
      -- A request on the first server waits for the rest of its body...
      local a = assert(tcp.connect("127.0.0.1", port))
      a:write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\":")
      -- ...while the second server answers a request of its own, once.
      local reply = exchange(tonumber(second), "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local _, answers = reply:gsub("HTTP/1.1 ", "")
      assert.equal(1, answers, reply)
      a:write("123}")
      local data = a:read(5)
      assert.matches('^HTTP/1.1 200.*{"a":123}\n$', data)
      a:close()
      node.stop(p)
    end))
    it("carry JSON lines both ways on one request, as the client sends", async(function()
      local p, port = web {}
      local c = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST", "-H",
        "Content-Type: application/jsonl", "http://127.0.0.1:" .. port .. "/chat" })
      c:expect('^{"kind":"jsonl","welcome":"127.0.0.1:%d+"}$', 5)
      for i = 1, 3 do
        c:write(('{"n":%d}\n'):format(i))
        -- Each answer arrives before the next line is sent: full duplex.
        c:expect('^{"echo":{"n":' .. i .. '}}$', 5)
      end
      c:close_stdin()
      assert.equal(0, c:wait(5))
      p:expect("^chat ended: closed$", 5)
      node.stop(p)
    end))

    it("carry the same messages over Server-Sent Events, with heartbeats", async(function()
      local p, port = web { WEB_HEARTBEAT = "0.2" }
      local c = assert(process.spawn { "curl", "-s", "-N", "-H", "Accept: text/event-stream",
        "http://127.0.0.1:" .. port .. "/chat" })
      c:expect('^data: {"kind":"sse","welcome":"127.0.0.1:%d+"}$', 5)
      c:expect("^: heartbeat$", 5)
      c:kill("SIGTERM")
      p:expect("^chat ended: the client disconnected", 5)
      node.stop(p)
    end))

    it("carry the same messages over WebSocket", async(function()
      local p, port = web { WEB_MAX_WS = "4096" }
      local ws = assert(process.spawn { "node", "tests/js/ws-client.mjs", "ws://127.0.0.1:" .. port .. "/chat" })
      ws:expect("^open$", 10)
      ws:expect('^message {"kind":"websocket","welcome":"127.0.0.1:%d+"}$', 5)
      ws:write('{"n":1}\n')
      ws:expect('^message {"echo":{"n":1}}$', 5)
      ws:write("not json\n")
      ws:expect('^message {"error":"message 2 is not JSON', 5)
      ws:write("!ping\n")
      ws:write('{"n":2}\n')
      ws:expect('^message {"echo":{"n":2}}$', 5)
      -- A message in three frames is one message.
      ws:write('!fragments {"frag|mented"|:3}\n')
      ws:expect('^message {"echo":{"fragmented":3}}$', 5)
      ws:write("!close 1000\n")
      ws:expect("^close 1000", 5)
      p:expect("^chat ended: ", 5)
      -- Binary messages, invalid UTF-8 and oversized messages close with the RFC's codes.
      for _, case in ipairs { { "!binary abc", 1003 }, { "!raw-bytes 7b2261223a22ff227d", 1007 },
        { ('{"big":"' .. ("b"):rep(5000) .. '"}'), 1009 } } do
        local w = assert(process.spawn { "node", "tests/js/ws-client.mjs", "ws://127.0.0.1:" .. port .. "/chat" })
        w:expect("^open$", 10)
        w:write(case[1] .. "\n")
        w:expect("^close " .. case[2], 5)
      end
      -- A handshake of another version is refused with 426.
      local reply = exchange(port, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
      assert.matches("^HTTP/1.1 426", reply)
      assert.matches("Sec%-WebSocket%-Version: 13", reply)
      node.stop(p)
    end))

    it("close a stream whose client sends nothing for the idle timeout, and tell its handler", async(function()
      local p, port = web { WEB_HEARTBEAT = "0.2", WEB_IDLE = "1" }
      local c = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST", "-H",
        "Content-Type: application/jsonl", "http://127.0.0.1:" .. port .. "/chat" })
      c:expect('"welcome"', 5)
      -- Heartbeats from the server are empty lines; the client says nothing.
      p:expect("^chat ended: the client disconnected: nothing received for 1 s$", 5)
      c:wait(5)
      -- A client that sends heartbeats (empty lines) stays.
      local d = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST", "-H",
        "Content-Type: application/jsonl", "http://127.0.0.1:" .. port .. "/chat" })
      d:expect('"welcome"', 5)
      for _ = 1, 6 do
        d:write("\n")
        atoll.sleep(0.3) -- the client's own pace, as a browser's timer would
      end
      d:write('{"still":"here"}\n')
      d:expect('^{"echo":{"still":"here"}}$', 5)
      d:close_stdin()
      d:wait(5)
      node.stop(p)
    end, 20))

    it("send no heartbeat at all when it is 0, and still close an idle client", async(function()
      local p, port = web { WEB_HEARTBEAT = "0", WEB_IDLE = "0.6" }
      local c = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST", "-H",
        "Content-Type: application/jsonl", "http://127.0.0.1:" .. port .. "/chat" })
      c:expect('"welcome"', 5)
      p:expect("^chat ended: the client disconnected: nothing received for 0%.6 s$", 5)
      c:wait(5)
      -- Nothing came after the welcome: no heartbeat (a heartbeat of 0 once sent them without pause).
      assert.equal(1, select(2, c:stdout():gsub("\n", "")), c:stdout())
      node.stop(p)
    end, 20))

    it("make a handler wait for a client that reads slowly, without buffering without bound", async(function()
      local p, port = web {}
      -- curl reads 20 KiB/s of a 20 MiB stream: the handler must wait for it, not queue it all.
      local c = assert(process.spawn { "curl", "-s", "-N", "--limit-rate", "20k", "-o", "/dev/null", "-H",
        "Accept: text/event-stream", "http://127.0.0.1:" .. port .. "/flood?n=20000" })
      p:expect("^flood sent 100$", 5)
      -- Socket buffers take a few MiB; past them the handler waits. Give it time to show it does.
      local last = 100
      while true do
        local line = p:read_line(1.5)
        if line == nil then break end
        last = tonumber(line:match("^flood sent (%d+)$")) or last
        assert.is_nil(line:match("^flood done"), "the handler sent everything to a client that reads 20 KiB/s")
      end
      assert.is_true(last < 20000)
      -- The client goes: the waiting send fails and the handler stops.
      c:kill("SIGKILL")
      p:expect("^flood stopped at %d+$", 5)
      node.stop(p)
    end, 30))
  end)

  describe("handlers that refuse, or answer what JSON cannot carry", function()
    local p, port, dir
    setup(async(function()
      dir = tmp.dir("refusing")
      tmp.write(dir .. "/app.lua", REFUSING_APP)
      p = node.start { "run", dir .. "/app.lua" }
      local _, n = p:expect("^http port (%d+)$", 10)
      port = tonumber(n)
    end))
    teardown(async(function()
      node.stop(p)
      tmp.remove(dir)
    end))
    local function url(path) return "http://127.0.0.1:" .. port .. path end

    it("refuse a stream with the status and body it was rejected with, on each transport, and carry the others",
      async(function()
        -- JSON lines.
        local code, out = curl("-i", "-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}", url("/chat"))
        assert.equal(0, code)
        assert.matches("^HTTP/1.1 401 Unauthorized\r\n", out)
        assert.matches('\r\n\r\n{"error":"no token"}\n$', out)
        code, out = curl("-X", "POST", "-H", "Content-Type: application/jsonl", "-H", "x-token: t",
          "--data-binary", '{"n":1}\n', url("/chat"))
        assert.equal(0, code)
        assert.matches('^{"welcome":"127.0.0.1:%d+"}\n{"echo":{"n":1}}\n$', out)
        -- Server-Sent Events.
        code, out = curl("-i", "-H", "Accept: text/event-stream", url("/chat"))
        assert.equal(0, code)
        assert.matches("^HTTP/1.1 401 Unauthorized\r\n", out)
        assert.matches('\r\n\r\n{"error":"no token"}\n$', out)
        local sse = assert(process.spawn { "curl", "-s", "-N", "-H", "Accept: text/event-stream", "-H", "x-token: t",
          url("/chat") })
        sse:expect('^data: {"welcome":"127.0.0.1:%d+"}$', 5)
        sse:kill("SIGTERM")
        -- WebSocket: the handshake itself is refused, as a browser without headers sees it...
        local ws = ws_client(port, "/chat")
        ws:expect("^refused 401$", 10)
        local reply = exchange(port, ws_handshake("/chat"))
        assert.truthy(reply, "the connection stayed open")
        assert.matches("^HTTP/1.1 401 Unauthorized\r\n", reply)
        assert.matches('\r\n\r\n{"error":"no token"}\n$', reply)
        -- ...and an accepted one carries messages both ways.
        ws = ws_client(port, "/chat", "x-token=t")
        ws:expect("^open$", 10)
        ws:expect('^message {"welcome":"127.0.0.1:%d+"}$', 5)
        ws:write('{"n":2}\n')
        ws:expect('^message {"echo":{"n":2}}$', 5)
        ws:write("!close 1000\n")
        ws:expect("^close 1000", 5)
      end))

    it("let a handler refuse a WebSocket after it waited, and end a stream it started saying why", async(function()
      local ws = ws_client(port, "/later")
      ws:expect("^refused 403$", 10)
      local reply = exchange(port, ws_handshake("/later"))
      assert.matches("^HTTP/1.1 403 Forbidden\r\n.*\r\n\r\n{\"error\":\"checked later\"}\n$", reply)
      -- A handler that waits and then takes the stream gets what the client sent meanwhile (too
      -- early, since the client must wait for the 101), in order.
      local s = assert(tcp.connect("127.0.0.1", port))
      s:write(ws_handshake("/wait") .. ws_text_frame('{"n":1}') .. ws_text_frame('{"n":2}'))
      local got = ""
      while not got:find('{"echo":{"n":2}}', 1, true) do
        local data = s:read(5)
        assert.truthy(data, "no echo came: " .. got)
        got = got .. data
      end
      s:close()
      assert.matches("^HTTP/1.1 101 Switching Protocols\r\n.-\r\n\r\n.*{\"echo\":{\"n\":1}}.*{\"echo\":{\"n\":2}}", got)
      -- Once a message has gone, no status can: the refusal ends the stream, in its own words.
      ws = ws_client(port, "/after")
      ws:expect('^message {"hello":1}$', 10)
      ws:expect("^close 4409 too late$", 5)
      local code, out = curl("-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}", url("/after"))
      assert.equal(0, code)
      assert.equal('{"hello":1}\n{"error":"too late","status":409}\n', out)
    end))

    it("end a stream whose handler returns without a word, on each transport", async(function()
      local code, out = curl("-i", "-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}", url("/nothing"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 200 OK\r\n.*Content%-Type: application/jsonl\r\n.*\r\n\r\n$", out)
      code, out = curl("-i", "-H", "Accept: text/event-stream", url("/nothing"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 200 OK\r\n.*Content%-Type: text/event%-stream\r\n.*\r\n\r\n$", out)
      local ws = ws_client(port, "/nothing")
      ws:expect("^open$", 10)
      ws:expect("^close 1000", 5)
    end))

    it("point a misused reject at the app's line, not into the runtime", async(function()
      local code, out = curl("-i", "-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}", url("/misuse"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 500", out)
      local line = p:expect("stream /misuse failed", 5, "stderr")
      assert.matches("app%.lua:" .. app_line('"a status as text"') .. ": reject: the status", line)
      -- A handler that calls it in a tail call has no line left on the stack: its own is named.
      local ws = ws_client(port, "/misuse-tail")
      ws:expect("^refused 500$", 10)
      line = p:expect("stream /misuse%-tail failed", 5, "stderr")
      assert.matches("app%.lua:" .. app_line("misuse: the handler") .. ": reject: the status", line)
      assert.is_nil(line:find("runtime.lua", 1, true), line)
    end))

    it("never send a handler's strings that are not UTF-8 as JSON", async(function()
      local code, out = curl("-i", url("/bytes"))
      assert.equal(0, code)
      assert.matches("^HTTP/1.1 500", out)
      assert.matches('\r\n\r\n{"error":"the handler failed"}\n$', out)
      p:expect("GET /bytes failed: .*not valid UTF%-8 at byte offset 10", 5, "stderr")
      code, out = curl("-X", "POST", "-H", "Content-Type: application/jsonl", "-d", "{}", url("/bytes-stream"))
      assert.equal(0, code)
      assert.equal('{"ok":true}\n{"error":"the handler failed"}\n', out)
      p:expect("stream /bytes%-stream failed: .*not valid UTF%-8", 5, "stderr")
      local ws = ws_client(port, "/bytes-stream")
      ws:expect('^message {"ok":true}$', 10)
      ws:expect('^message {"error":"the handler failed"}$', 5)
      ws:expect("^close 1011", 5)
    end))

    it("refuse a browser's WebSocket to the tic-tac-toe /matchmaking before the 101, and accept a player's",
      async(function()
        local t = node.start { "run", "scripts/tictactoe/app.lua", "--http", "127.0.0.1:0", "--journal", "memory" }
        local _, tport = t:expect("serving on http://127%.0%.0%.1:(%d+)", 10, "stderr")
        local ws = ws_client(tport, "/matchmaking")
        ws:expect("^refused 400$", 10)
        local reply = exchange(tonumber(tport), ws_handshake("/matchmaking"))
        assert.matches("^HTTP/1.1 400 Bad Request\r\n", reply)
        assert.matches('\r\n\r\n{"error":"the player_id header must be a UUID"}\n$', reply)
        ws = ws_client(tport, "/matchmaking", "player_id=" .. UUID, "player_name=Ann", "player_team=fish")
        ws:expect("^open$", 10)
        ws:expect('^message {"message":{"player":{.*},"status":"connect"}}$', 5)
        ws:write("!close 1000\n")
        ws:expect("^close 1000", 5)
        assert.equal(0, node.stop(t))
      end))
  end)

  describe("the command line and the API description", function()
    it("serves with --http and stops gracefully on SIGTERM, ending open streams", async(function()
      local p = node.start { "run", "scripts/tictactoe/app.lua", "--http", "127.0.0.1:0", "--journal", "memory" }
      local _, port = p:expect("serving on http://127%.0%.0%.1:(%d+)", 10, "stderr")
      local c = assert(process.spawn { "curl", "-s", "-S", "-N", "-T", ".", "-X", "POST",
        "-H", "Content-Type: application/jsonl", "-H", "player_id: " .. UUID, "-H", "player_name: Ann",
        "-H", "player_team: fish", "http://127.0.0.1:" .. port .. "/matchmaking" })
      c:expect('"status":"connect"', 5)
      c:write('{"message":{"status":"ready"}}\n')
      c:expect('"status":"ready"', 5)
      c:expect('"readyPlayers":%[{', 5)
      assert.equal(0, node.stop(p))
      -- The stream ended properly: curl saw the last chunk, not a broken connection.
      assert.equal(0, c:wait(5))
    end))

    it("refuses bad --http values", async(function()
      local code, _, err = node.exec { "run", WEB, "--http", "nonsense" }
      assert.equal(2, code)
      assert.matches("bad HTTP address 'nonsense'", err)
      code, _, err = node.exec { "run", WEB, "--http-static", "/tmp" }
      assert.equal(2, code)
      assert.matches("%-%-http%-static needs %-%-http", err)
    end))

    it("has an openapi.yaml that a third-party validator accepts", async(function()
      local p = assert(process.spawn { "node", "tests/js/validate-openapi.mjs", "openapi.yaml" })
      local code = p:wait(30)
      assert.equal(0, code, p:stderr() .. p:stdout())
      assert.matches("valid OpenAPI 3%.1", p:stdout())
    end))
  end)
end)
