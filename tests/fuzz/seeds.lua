-- Writes seed inputs for the fuzzers:
--   atoll lua tests/fuzz/seeds.lua FRAMES-DIR SWIM-DIR [HTTP-DIR [TRANSPORT-DIR]]
local codec = require "atoll.c.codec"
local atoll = require "atoll"
local dir = assert(arg[1], "usage: seeds.lua FRAMES-DIR SWIM-DIR")
local swim_dir = assert(arg[2], "usage: seeds.lua FRAMES-DIR SWIM-DIR")

local function frame(body)
  local n = #body
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. body
end

local function cat(...)
  local parts = { ... }
  return table.concat(parts)
end

local ref = codec.make_ref("127.0.0.1:7000", 12345, 7)
local VirtualRef = require("atoll.cluster.virtual_ref").Ref
local vrefs = { setmetatable({ type = "Player", id = "ann" }, VirtualRef),
                setmetatable({ type = "Player", id = -42 }, VirtualRef) }
local args = codec.bytes(codec.pack(1, "two", { three = 3 }, ref, atoll.array(), 0.5, -7, vrefs))
-- Envelope bodies, one of each kind (host/frame.h).
local bodies = {
  call = cat(codec.encode(1):sub(1, 0), "\150\1\42\205\48\57\7\163add", args),
  send = cat("\149\2\205\48\57\7\164note", args),
  reply = cat("\148\3\42\195", args),
  error_reply = cat("\148\3\42\194", codec.encode { kind = "remote", message = "boom" }),
  call_name = cat("\149\4\42\167counter\163add", args),
  send_name = cat("\148\5\167counter\163add", args),
}
local seeds = {
  call = frame(bodies.call),
  send = frame(bodies.send),
  reply = frame(bodies.reply),
  error_reply = frame(bodies.error_reply),
  call_name = frame(bodies.call_name),
  send_name = frame(bodies.send_name),
  hello = frame(codec.encode { t = "hello", v = 1, cluster = "atoll", name = "n", addr = "127.0.0.1:1",
                               inc = 5, nonce = string.rep("\255", 32) }),
  refuse = frame(codec.encode { t = "refuse", v = 1, reason = "duplicate" }),
  value = codec.encode { list = { 1, 2, { deep = { true, false } } }, ["k"] = "v", n = 2 ^ 53 },
}
seeds.stream = seeds.hello .. seeds.call .. seeds.reply

-- Inputs that once failed, kept so every run checks them again:
-- a handshake error message that pointed at an out-of-scope key buffer,
-- and an envelope kind beyond int cast to int.
local function unbase64(s)
  local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  s = s:gsub("[^%w%+/]", "")
  return (s:gsub(".", function(c) return ("%06d"):format(tonumber((function(v)
    local bits = ""
    for i = 5, 0, -1 do bits = bits .. (math.floor(v / 2 ^ i) % 2) end
    return bits
  end)(b64:find(c, 1, true) - 1))) end):gsub("%d%d%d%d%d%d%d%d", function(byte)
    return string.char(tonumber(byte, 2))
  end))
end
seeds.regression_hs_key = unbase64("AAAAX4ejaW5jBaVvbm5jZcQg//////////////////////////////////////////+kbmFtZaFu"
  .. "p2NsdXN0ZXKlYWluYwWlb25uY2XEIP////////////////90b2xsoXSlaGVsbG+kYWRkcqsxMjcuMC4wLjE6MaF2AQ==")
seeds.regression_kind_cast = unbase64("AAAAF5TOzs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Oz"
  .. "s7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7OzgWnubm5ubmvubm5ublOTk5OTi5BTjBOAQAA")
local function write_all(d, set)
  for name, bytes in pairs(set) do
    local f = assert(io.open(d .. "/" .. name, "wb"))
    f:write(bytes)
    f:close()
  end
end
write_all(dir, seeds)

-- SWIM packets and states (host/swim.c's wire format); the first byte
-- tells fuzz_swim what follows: 0 a packet, 1 a state, 2 length-prefixed
-- packets. Updates have 8 fields, the last the member's upno; without it,
-- the 7 of nodes before it.
local function update(addr, uid, version, state, phase, name, from, upno)
  local u = { addr, uid, version, state, phase, name, from or "" }
  if upno then u[8] = upno end
  return u
end
local gossip = {
  update("10.0.0.2:7000", 222, 1, 0, 1, "b", nil, 1),
  update("10.0.0.3:7000", 333, 2, 1, 1, "c", "10.0.0.2:7000", 2),
  update("10.0.0.4:7000", 444, 0, 2, 0, "d"),
  update("10.0.0.1:7000", 12345, 0, 1, 1, "fuzz", "10.0.0.2:7000", 3), -- suspects the fuzzed node
  update("10.0.0.5:7000", 555, 3, 3, 2, "e"),
  update("10.0.0.2:7000", 222, 1, 0, 1, "b", nil, 7), -- another upno for b's run: the smaller stays
  update("10.0.0.6:7000", 666, 1, 0, 1, "f", nil, 4294967295),
  update("10.0.0.7:7000", 777, 2, 4, 1, "g", nil, 5), -- downed
}
local function packet(kind, seq, with_target)
  local p = { kind, seq, "10.0.0.2:7000", 222 }
  if with_target then
    p[#p + 1] = "10.0.0.3:7000"
    p[#p + 1] = 333
  end
  p[#p + 1] = atoll.array(gossip)
  return codec.encode(atoll.array(p))
end
local function u16(n) return string.char(math.floor(n / 256), n % 256) end
-- Gossip that downs b, then says b is alive at a higher version, then that
-- the fuzzed node itself is downed.
local function gossip_packet(updates)
  return codec.encode(atoll.array { 5, 0, "10.0.0.3:7000", 333, atoll.array(updates) })
end
local downs_b = gossip_packet { update("10.0.0.2:7000", 222, 1, 4, 1, "b", nil, 1) }
local b_again = gossip_packet { update("10.0.0.2:7000", 222, 9, 0, 1, "b", nil, 1),
  update("10.0.0.2:7000", 222, 10, 1, 1, "b", "10.0.0.3:7000", 1) }
local downs_me = gossip_packet { update("10.0.0.1:7000", 12345, 0, 4, 0, "fuzz", nil, 0) }
-- Found by the fuzzer: two new runs at b's address, then stale news of the
-- downed one, which must not bring it back.
local two_runs = gossip_packet { update("10.0.0.2:7000", 218, 9, 0, 1, "b", nil, 1),
  update("10.0.0.2:7000", 220, 10, 1, 1, "b", "10.0.0.3:7000", 1) }
local stale_b = gossip_packet { update("10.0.0.2:7000", 222, 1, 0, 1, "b", nil, 1) }
local ping, ack = packet(1, 7, true), packet(2, 7, false)
local ping_req, nack, gossip_only = packet(3, 9, true), packet(4, 9, false), packet(5, 0, false)
write_all(swim_dir, {
  ping = "\0" .. ping,
  ack = "\0" .. ack,
  ping_req = "\0" .. ping_req,
  nack = "\0" .. nack,
  gossip = "\0" .. gossip_only,
  state = "\1" .. codec.encode(atoll.array(gossip)),
  state_then_up = "\5" .. codec.encode(atoll.array(gossip)), -- bit 2: the node goes up after
  run = "\2" .. u16(#ping) .. ping .. u16(#ping_req) .. ping_req .. u16(#ack) .. ack
    .. u16(#gossip_only) .. gossip_only,
  -- bit 3: the node downs the first member it knows itself
  ping_downing = "\8" .. ping,
  run_downing = "\10" .. u16(#gossip_only) .. gossip_only .. u16(#b_again) .. b_again,
  downed = "\2" .. u16(#downs_b) .. downs_b .. u16(#b_again) .. b_again .. u16(#downs_me) .. downs_me
    .. u16(#ping) .. ping,
  -- bit 4: dead members kept, with a tombstone time of a second
  state_keep_unreachable = "\17" .. codec.encode(atoll.array(gossip)),
  -- Found by the fuzzer: b downed, forgotten (a tombstone time of a second),
  -- then a ping from b's run, which must not bring it back.
  regression_downed_forgotten = "\18" .. u16(#downs_b) .. downs_b .. string.rep(u16(0), 30)
    .. u16(#ping) .. ping,
  regression_downed_stale = "\2" .. u16(#downs_b) .. downs_b .. u16(#two_runs) .. two_runs
    .. u16(#stale_b) .. stale_b,
})

-- HTTP (tests/fuzz/fuzz_http.c): an input is a cut byte (how the rest is cut
-- into reads), a plan of 4 bytes (the application's answer to each request
-- that reaches it, in turn), then what the client sends.
local http_dir = arg[3]
if http_dir then
  -- The target's answer_t, in its order.
  local ECHO, NOW, REFUSE, LINES, WS, WS_REFUSE, WS_LATE, LATE = 0, 1, 2, 3, 4, 5, 6, 7
  local function input(cut, plan, bytes)
    local p = {}
    for i = 1, 4 do p[i] = plan[i] or ECHO end
    return string.char(cut, p[1], p[2], p[3], p[4]) .. bytes
  end
  local key = "dGhlIHNhbXBsZSBub25jZQ=="
  -- A masked client frame: FIN + opcode, MASK + length, a zero mask, the payload.
  local function ws_frame(opcode, payload)
    return string.char(0x80 + opcode, 0x80 + #payload) .. "\0\0\0\0" .. payload
  end
  local ws_head = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Key: " .. key .. "\r\nSec-WebSocket-Version: 13\r\n\r\n"
  local ws_talk = ws_frame(1, "hello") .. ws_frame(9, "") .. ws_frame(1, "p")
    .. string.char(0x01, 0x82) .. "\0\0\0\0ab" .. string.char(0x80, 0x81) .. "\0\0\0\0c"
    .. ws_frame(1, "close") .. ws_frame(8, "\3\232")
  local function get(target, extra)
    return "GET " .. target .. " HTTP/1.1\r\nHost: x\r\n" .. (extra or "") .. "\r\n"
  end
  write_all(http_dir, {
    get = input(3, { ECHO }, get("/hello?x=1")),
    pipelined = input(0, { ECHO, NOW, ECHO }, get("/later") .. get("/now")
      .. "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    post = input(7, { ECHO }, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
      .. "Expect: 100-continue\r\n\r\nhello"),
    now = input(4, { NOW }, "POST /now HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" .. get("/")),
    chunked = input(1, { ECHO }, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n"),
    lines = input(2, { LINES }, "POST /lines HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
      .. "Content-Type: application/jsonl\r\n\r\nc\r\n{\"a\":1}\n{\"b\r\n6\r\n\":2}\r\n\r\n0\r\n\r\n"),
    too_large = input(2, { ECHO }, "POST /big HTTP/1.1\r\nContent-Length: 5000\r\n\r\nabc"),
    long_line = input(8, { LINES }, "POST /lines HTTP/1.1\r\nContent-Length: 304\r\n\r\n"
      .. string.rep("x", 300) .. "\n{}\n"),
    refuse = input(5, { REFUSE, ECHO }, "POST /refuse HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
      .. "GET / HTTP/1.1\r\n\r\n"),
    late = input(0, { LATE, ECHO, NOW }, "POST /late HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
      .. get("/next") .. get("/last", "Connection: close\r\n")),
    http10 = input(9, { ECHO }, "GET / HTTP/1.0\r\n\r\n"),
    static = input(6, { ECHO }, get("/static/") .. get("/static/app.js") .. get("/static/app.js")
      .. "HEAD /static/%61pp.js HTTP/1.1\r\n\r\n" .. get("/static/sub/a%20b.css")
      .. get("/static/sub/") .. get("/static/empty.txt") .. get("/static/.hidden")
      .. get("/static/../etc/passwd") .. get("/static/nothing.css")),
    websocket = input(31, { WS }, ws_head .. ws_talk),
    websocket_refused = input(31, { WS_REFUSE }, ws_head .. ws_frame(1, "early")),
    websocket_late = input(0, { WS_LATE }, ws_head .. ws_talk),
  })
end

-- A link's input (tests/fuzz/fuzz_transport.c): flags, where to flip a byte and with what
-- mask, a split seed, then records `u16 n | body` (sealed by the fuzzer) or `u16 0x8000 + n |
-- raw bytes`.
local transport_dir = arg[4]
if transport_dir then
  local DIALER, CORRUPT, REFUSE, CLOSE_ON_UP, WRONG_SECRET, OTHER_CLUSTER, REPLY = 1, 2, 4, 8, 16, 32, 64
  local function record(body, raw)
    local n = #body + (raw and 0x8000 or 0)
    return string.char(math.floor(n / 256), n % 256) .. body
  end
  local all = {}
  for _, kind in ipairs { "call", "send", "reply", "error_reply", "call_name", "send_name" } do
    all[#all + 1] = record(bodies[kind])
  end
  local envelopes = table.concat(all)
  local function input(flags, flip_at, mask, seed, records)
    return string.char(flags, math.floor(flip_at / 256), flip_at % 256, mask,
      math.floor(seed / 256), seed % 256) .. records
  end
  write_all(transport_dir, {
    accepted = input(REPLY, 0, 0, 1, envelopes),
    dialed = input(DIALER + REPLY, 0, 0, 2, envelopes),
    many = input(0, 0, 0, 3, string.rep(record(bodies.send), 200)),
    corrupt_frame = input(CORRUPT, 400, 1, 4, envelopes),
    corrupt_handshake = input(CORRUPT + DIALER, 20, 0x20, 5, envelopes),
    refused = input(REFUSE, 0, 0, 6, envelopes),
    closed_on_up = input(CLOSE_ON_UP + DIALER, 0, 0, 7, envelopes),
    wrong_secret = input(WRONG_SECRET, 0, 0, 8, envelopes),
    other_cluster = input(OTHER_CLUSTER + DIALER, 0, 0, 9, envelopes),
    raw_after = input(0, 0, 0, 10, record(bodies.call) .. record("\0\0\0\5hello", true)
      .. record(bodies.send)),
    bad_envelope = input(0, 0, 0, 11, record(bodies.call) .. record("\147\1\2") .. record(bodies.send)),
    too_big = input(0, 0, 0, 12, record(bodies.call) .. record(string.rep("x", 5000))),
  })
end
