-- The transport's policy: one link per peer, dialing on demand, backoff, and routing remote calls.
--
-- The C transport (atoll.c.transport) owns sockets, the handshake and frames.
-- This module decides which link carries traffic to which node, and turns
-- frames into run-queue entries and back.
--
-- A peer (another node, by its address) has at most one link that carries
-- traffic. Frames are written to a link only once it is up; until then, a
-- peer's messages wait here in order, so that when two nodes dial each other
-- at once the connection that wins (the one dialed by the node with the
-- lower address) gets every message, in order, and the loser none.
local host = require "atoll.c.host"
local codec = require "atoll.c.codec"
local transport = require "atoll.c.transport"
local runtime = require "atoll.runtime"
local errors = require "atoll.util.errors"

local M = {}

local new_error = errors.new
local node = runtime.node
local actors = runtime.actors
local enqueue = runtime.enqueue
local REF_ADDR, REF_INC, REF_ID = runtime.REF_ADDR, runtime.REF_INC, runtime.REF_ID

local BACKOFF_MIN, BACKOFF_MAX = 0.1, 5 -- seconds between attempts to reach a peer that failed
local WAIT_FOR_PEER = 5                  -- seconds to wait for the peer's own connection after a duplicate

local peers = {}       -- address -> peer
local link_info = setmetatable({}, { __mode = "k" }) -- link -> { peer, pending = { rid = true } }
local started, listening = false, false
local config = {}

-- Envelope kinds (host/frame.h).
local CALL, SEND, REPLY, CALL_NAME, SEND_NAME = 1, 2, 3, 4, 5

local function log(level, msg)
  host.log(level, "cluster", msg)
end

local membership = require "atoll.cluster.membership"
local member_status = membership.status

local function unreachable(fmt, ...)
  return new_error("unreachable", fmt:format(...))
end

local ensure_started -- defined with the transport's start, below

-- Ends a call this node sent with an error (its link went down, ...).
local function fail(rid, err)
  runtime.enqueue_reply(rid, false, err)
end

---------------------------------------------------------------------------
-- Peers
---------------------------------------------------------------------------

local function peer_for(address)
  local p = peers[address]
  if p == nil then
    p = { address = address, link = nil, queue = {}, nqueue = 0, queued_bytes = 0,
          retry_at = 0, delay = BACKOFF_MIN }
    peers[address] = p
  end
  return p
end

-- Fails every call a link carried (they may never be answered).
local function fail_link_calls(li, err)
  for rid in pairs(li.pending) do fail(rid, err) end
  li.pending = {}
end

-- Fails everything a peer holds back: queued messages and their calls.
local function fail_queue(p, err)
  local q = p.queue
  for i = 1, p.nqueue do
    local m = q[i]
    if m.rid then fail(m.rid, err) end
  end
  p.queue, p.nqueue, p.queued_bytes = {}, 0, 0
end

local function write(link, li, m)
  local ok, msg, kind
  local kd = m.kind
  if kd == CALL then
    ok, msg, kind = link:call(m.rid, m.inc, m.id, m.method, m.payload)
  elseif kd == SEND then
    ok, msg, kind = link:send(m.inc, m.id, m.method, m.payload)
  elseif kd == CALL_NAME then
    ok, msg, kind = link:call_name(m.rid, m.name, m.method, m.payload)
  else
    ok, msg, kind = link:send_name(m.name, m.method, m.payload)
  end
  if ok and m.rid then li.pending[m.rid] = true end
  return ok, msg, kind
end

-- A link went up: it carries the peer's traffic from now on, starting with
-- whatever waited.
local function attach(p, link)
  local old = p.link
  p.link = link
  p.delay = BACKOFF_MIN
  p.retry_at = 0
  if p.wait_timer then
    p.wait_timer:cancel()
    p.wait_timer = nil
  end
  local li = link_info[link]
  local q, n = p.queue, p.nqueue
  p.queue, p.nqueue, p.queued_bytes = {}, 0, 0
  for i = 1, n do
    local m = q[i]
    local ok, msg, kind = write(link, li, m)
    if not ok and m.rid then fail(m.rid, new_error(kind, msg)) end
  end
  if old and old ~= link and old:state() ~= "closed" then old:close("replaced by a newer connection") end
  if p.waiters then
    local ws = p.waiters
    p.waiters = nil
    for _, f in ipairs(ws) do if not f:ready() then f:set(true) end end
  end
end

local function dial(p)
  local link, err = transport.dial(p.address)
  if link == nil then return nil, err end
  link_info[link] = { peer = p, pending = {}, dialed = true }
  p.link = link
  return link
end

-- Sends or queues one message to the node at `address`: true, or nil and an
-- error object (unreachable, overloaded, bad_argument).
local function route(address, m)
  if address == "" then
    return nil, unreachable("the actor's node does not listen, so it cannot be reached")
  end
  if address == node.address then
    return nil, unreachable("this node's earlier incarnation is gone")
  end
  -- Calls to a member declared down fail at once: those by name, and those
  -- through a ref to the run that is down. A ref to another run of that
  -- node goes through (an earlier run's actors are gone, and the node says
  -- so if it is back; a later run is alive), and so does the membership's
  -- own exchange, by which a member declared down that is alive after all,
  -- or a new run at its address, is found again.
  if not m.any_status then
    local status, incarnation = member_status(address)
    if status == "down" and (m.inc == nil or m.inc == incarnation) then
      return nil, unreachable("%s is down", address)
    end
  end
  local p = peer_for(address)
  local link = p.link
  if link then
    local st = link:state()
    if st == "up" then
      local ok, msg, kind = write(link, link_info[link], m)
      if ok then return true end
      return nil, new_error(kind, msg)
    end
    if st == "closed" then
      p.link = nil
      link = nil
    end
  end
  if link == nil and not p.wait_timer then
    if runtime.now_ms() < p.retry_at then
      return nil, unreachable("%s cannot be reached (next attempt in %.1f s)", address,
        (p.retry_at - runtime.now_ms()) / 1000)
    end
    local _, err = dial(p)
    if err then return nil, unreachable("%s", err) end
  end
  -- Connecting: hold it here, in order, within the link's queue limit.
  local size = (m.payload and #codec.bytes(m.payload) or 0) + 64
  if p.queued_bytes + size > (config.max_queue or 64 * 1024 * 1024) then
    return nil, new_error("overloaded", "too much is waiting for the link to " .. address)
  end
  p.nqueue = p.nqueue + 1
  p.queue[p.nqueue] = m
  p.queued_bytes = p.queued_bytes + size
  return true
end

---------------------------------------------------------------------------
-- The router: actors of other nodes, by ref or by name
---------------------------------------------------------------------------

local function error_bytes(err)
  return codec.encode(errors.to_wire(err))
    or codec.encode(errors.to_wire(new_error(err.kind, tostring(err.message))))
end

-- An actor registered under a name on another node: atoll.remote(address,
-- name) makes one, and calls and sends take it as their target like a ref.
-- `system` marks the runtime's own traffic between members (the
-- membership's state exchange), which also goes to a member declared down.
local Named = {}
M.Named = Named
runtime.target_kind(Named)

-- The message a call or send to `target` makes, and the address it goes to.
local function message_to(target, method, payload, rid)
  if getmetatable(target) == Named then
    return rawget(target, "address"), { kind = rid and CALL_NAME or SEND_NAME, rid = rid,
      name = rawget(target, "name"), method = method, payload = payload,
      any_status = rawget(target, "system") }
  end
  return target[REF_ADDR], { kind = rid and CALL or SEND, rid = rid, inc = target[REF_INC],
    id = target[REF_ID], method = method, payload = payload }
end

local router = {}

-- Other kinds of targets (a singleton by name, ...) have routers of their own:
-- route_kind(mt, r) hands targets with metatable mt to r.call(target, method,
-- payload, rid) and r.send(target, method, payload).
local kind_routers = {}

function M.route_kind(mt, r)
  runtime.target_kind(mt)
  kind_routers[mt] = r
end

-- The common case first: a ref to an actor of a member that is not down, over a
-- link that is up, goes straight to the link, with no message table made (route()
-- holds the same checks, in the same order, for everything else).
local function link_up_to(target)
  if not started or getmetatable(target) == Named then return nil end
  local address = target[REF_ADDR]
  local p = peers[address]
  local link = p and p.link
  if link == nil or address == node.address then return nil end
  local status, incarnation = member_status(address)
  if status == "down" and target[REF_INC] == incarnation then return nil end
  if link:state() ~= "up" then return nil end
  return link
end

function router.call(target, method, payload, rid)
  local kr = kind_routers[getmetatable(target)]
  if kr then return kr.call(target, method, payload, rid) end
  local link = link_up_to(target)
  if link then
    local ok, msg, kind = link:call(rid, target[REF_INC], target[REF_ID], method, payload)
    if not ok then return nil, new_error(kind, msg) end
    link_info[link].pending[rid] = true
    return true
  end
  local ok, err = ensure_started()
  if not ok then return nil, err end
  return route(message_to(target, method, payload, rid))
end

function router.send(target, method, payload)
  local kr = kind_routers[getmetatable(target)]
  if kr then return kr.send(target, method, payload) end
  local link = link_up_to(target)
  if link then
    local ok, msg, kind = link:send(target[REF_INC], target[REF_ID], method, payload)
    if not ok then return nil, new_error(kind, msg) end
    return true
  end
  local ok, err = ensure_started()
  if not ok then return nil, err end
  return route(message_to(target, method, payload, nil))
end

runtime.set_router(router)

-- route_name(address, name, method, payload [, rid]) -> true | nil, error: a call (with rid) or
-- a one-way message to the actor registered under `name` on that node, the payload already
-- encoded: for the routers of other kinds of targets.
function M.route_name(address, name, method, payload, rid)
  -- The common case first, as for refs (link_up_to): a member not down, over a link that is up,
  -- with no message table made. A virtual actor's call to another node comes this way.
  local p = started and peers[address]
  local link = p and p.link
  if link and address ~= node.address and member_status(address) ~= "down" and link:state() == "up" then
    local sent, msg, kind
    if rid then
      sent, msg, kind = link:call_name(rid, name, method, payload)
    else
      sent, msg, kind = link:send_name(name, method, payload)
    end
    if not sent then return nil, new_error(kind, msg) end
    if rid then link_info[link].pending[rid] = true end
    return true
  end
  local ok, err = ensure_started()
  if not ok then return nil, err end
  return route(address, { kind = rid and CALL_NAME or SEND_NAME, rid = rid, name = name, method = method,
    payload = payload })
end

-- link_up(address) -> whether a link to that node is up now; if not, one is dialed (unless one
-- is being dialed, or the last attempt failed and its backoff has not run out): for routers
-- that hold messages until a link is up rather than fail them.
function M.link_up(address)
  local p = peers[address]
  if p ~= nil and p.link ~= nil then
    local st = p.link:state()
    if st == "up" then return true end
    if st ~= "closed" then return false end
    p.link = nil
  end
  if not started or address == "" or address == node.address then return false end
  p = peer_for(address)
  if not p.wait_timer and runtime.now_ms() >= p.retry_at then dial(p) end
  return false
end

-- Names no actor registers, which a service answers instead (atoll.singleton's
-- "atoll.singleton/..."): on_named(prefix, fn(name, method, payload, reply_to)), reply_to a
-- reply-to record for a call, 0 for a one-way message.
local named_services = {}

function M.on_named(prefix, fn)
  named_services[#named_services + 1] = { prefix, fn }
end

local function named_service(name)
  for i = 1, #named_services do
    local s = named_services[i]
    if name:find(s[1], 1, true) == 1 then return s[2] end -- (no string made per message)
  end
  return nil
end

-- A call from another node waits for its handler with this as its reply-to:
-- the link it came on, and the caller's rid there.
local ReplyTo = {}
ReplyTo.__index = ReplyTo

function ReplyTo:reply(ok, res)
  local link = self.link
  if link:state() ~= "up" then return end -- the caller's link is gone
  local bytes = ok and res or error_bytes(res)
  local sent, msg, kind = link:reply(self.rid, ok, bytes)
  if not sent and ok and kind == "bad_argument" then
    -- The result is too large for a frame: tell the caller instead.
    link:reply(self.rid, false, error_bytes(new_error("bad_argument", "the result: " .. msg)))
  end
end

-- An error reply's bytes, as the error object the caller raises.
local function wire_error(payload)
  local ok, t = codec.try_decode(codec.bytes(payload))
  if not ok then return new_error("bad_argument", "an error reply that does not decode: " .. tostring(t)) end
  return errors.from_wire(t)
end

---------------------------------------------------------------------------
-- Frames from other nodes
---------------------------------------------------------------------------

local inbox = transport.inbox()

local function local_target(inc, id)
  if inc ~= node.incarnation then return nil end
  return actors[id]
end

local function named_target(name)
  local ref = runtime.whereis(name)
  return ref and runtime.record_of(ref)
end

local function on_frames(link, n)
  runtime.refresh_now()
  local li = link_info[link]
  for i = 0, n - 1 do
    local b = i * 6
    local kind, rid, a, id, method, payload =
      inbox[b + 1], inbox[b + 2], inbox[b + 3], inbox[b + 4], inbox[b + 5], inbox[b + 6]
    inbox[b + 6] = nil
    if kind == REPLY then
      if li then li.pending[rid] = nil end
      if a then
        runtime.enqueue_reply(rid, true, payload)
      else
        runtime.enqueue_reply(rid, false, wire_error(payload))
      end
    elseif kind == CALL or kind == CALL_NAME then
      local rec, service
      if kind == CALL then rec = local_target(a, id) else rec = named_target(a) end
      if rec == nil and kind == CALL_NAME then service = named_service(a) end
      if rec then
        enqueue(rec, method, payload, setmetatable({ link = link, rid = rid }, ReplyTo))
      elseif service then
        service(a, method, payload, setmetatable({ link = link, rid = rid }, ReplyTo))
      else
        local what = kind == CALL and ("actor #" .. tostring(id) .. (a ~= node.incarnation
          and " of an earlier run of " or " on ") .. node.address)
          or ("no actor named " .. tostring(a) .. " on " .. node.address)
        link:reply(rid, false, error_bytes(new_error("no_such_actor",
          kind == CALL and (what .. " does not exist") or what)))
      end
    else -- SEND, SEND_NAME
      local rec
      if kind == SEND then rec = local_target(a, id) else rec = named_target(a) end
      if rec then
        enqueue(rec, method, payload, 0)
      elseif kind == SEND_NAME then
        local service = named_service(a)
        if service then service(a, method, payload, 0) end
      end
    end
  end
  runtime.drain()
end

---------------------------------------------------------------------------
-- Link events
---------------------------------------------------------------------------

-- An authenticated connection from another node: take it, unless it
-- duplicates one of ours. When both nodes dial each other at once, the
-- connection dialed by the lower address wins, on both sides.
local function decide(link, peer)
  if peer.address == "" then return true end -- a client that does not listen
  if peer.address == node.address then return false, "that address is this node's own" end
  local p = peers[peer.address]
  local cur = p and p.link
  if cur == nil or cur == link or cur:state() == "closed" then return true end
  local li = link_info[cur]
  if cur:state() == "up" and li and li.incarnation ~= peer.incarnation then
    return true -- the peer restarted
  end
  if li and li.dialed then
    if peer.address < node.address then return true end
    return false, "duplicate"
  end
  return true -- a newer connection from the same peer replaces the old one
end

local function on_up(link, peer)
  runtime.refresh_now()
  local li = link_info[link]
  if li == nil then
    li = { pending = {}, dialed = false }
    link_info[link] = li
  end
  li.incarnation = peer.incarnation
  li.name = peer.name
  li.address = peer.address
  if peer.address == "" then
    log("debug", "client " .. peer.name .. " connected from " .. peer.target)
    return
  end
  -- A node dialed by another name than the address it gives (a host name,
  -- say) is the same node: what waited under that name goes on this link.
  local dialed_as = li.dialed and li.peer or nil
  local p = peer_for(peer.address)
  li.peer = p
  p.name, p.incarnation = peer.name, peer.incarnation
  log("info", "link to " .. peer.address .. " (" .. peer.name .. ") is up")
  attach(p, link)
  if dialed_as and dialed_as ~= p then
    dialed_as.name, dialed_as.incarnation = peer.name, peer.incarnation
    attach(dialed_as, link)
  end
  require("atoll.cluster.receptionist").link_up(p.address)
  runtime.drain()
end

local function on_down(link, reason, was_up)
  runtime.refresh_now()
  local li = link_info[link]
  link_info[link] = nil
  if li == nil then return end
  local p = li.peer
  local where = li.address or (p and p.address) or "?"
  local err = was_up and unreachable("the link to %s was lost: %s", where, reason)
    or unreachable("cannot reach %s: %s", where, reason)
  fail_link_calls(li, err)
  if p == nil or p.link ~= link then
    runtime.drain()
    return
  end
  p.link = nil
  if reason ~= "duplicate" and member_status(p.address) == nil then
    -- Not a member: nothing else will say when its actors are gone.
    require("atoll.cluster.watch").node_gone(p.address, li.incarnation, "unreachable")
  end
  if reason == "duplicate" then
    -- The peer keeps its own connection to us; wait for it.
    p.wait_timer = runtime.after_raw(WAIT_FOR_PEER, function()
      p.wait_timer = nil
      if p.link == nil then
        fail_queue(p, unreachable("%s refused our connection and did not connect back", p.address))
      end
    end)
  else
    if was_up then log("info", "link to " .. p.address .. " is down: " .. reason) end
    fail_queue(p, unreachable("%s cannot be reached: %s", p.address, reason))
    p.retry_at = runtime.now_ms() + p.delay * 1000
    p.delay = math.min(p.delay * 2, BACKOFF_MAX)
    if p.waiters then
      local ws = p.waiters
      p.waiters = nil
      for _, f in ipairs(ws) do if not f:ready() then f:fail(err) end end
    end
  end
  runtime.drain()
end

-- A member that is down or gone: calls it carries fail now, with
-- unreachable, and so do the messages waiting for a link to it. A member
-- that is back (a new run, or alive after all) is dialed at once, not after
-- the backoff its silence earned.
membership.listen(function(m, previous)
  if m.self then return end
  local p = peers[m.address]
  if p == nil then return end
  if m.status ~= "down" and m.status ~= "removed" then
    if previous == nil or previous == "down" then p.retry_at, p.delay = 0, BACKOFF_MIN end
    return
  end
  local why = m.status == "down" and (m.address .. " is down") or (m.address .. " left the cluster")
  local link = p.link
  if link and link:state() ~= "closed" then
    local li = link_info[link]
    -- A link to a newer run of the node stays.
    if li == nil or li.incarnation == nil or li.incarnation == m.incarnation then
      link:close(why)
    end
  end
  fail_queue(p, unreachable("%s", why))
end)

---------------------------------------------------------------------------
-- Starting
---------------------------------------------------------------------------

local function split_address(address, what)
  local h, port = tostring(address):match("^%[?([^%]]*)%]?:(%d+)$")
  if h == nil or tonumber(port) > 65535 then
    return nil, what .. " must be HOST:PORT, got " .. tostring(address)
  end
  return h, tonumber(port)
end
M.split_address = split_address

local function setup(opts)
  if started then error("the cluster transport is already started", 3) end
  if type(opts.secret) ~= "string" or opts.secret == "" then
    error("a cluster secret is needed (--secret, ATOLL_SECRET or ~/.atoll/secret)", 3)
  end
  config = opts
  transport.configure {
    cluster = opts.cluster or "atoll",
    secret = opts.secret,
    name = opts.name or node.name,
    address = node.address,
    incarnation = node.incarnation,
    max_frame = opts.max_frame,
    max_queue = opts.max_queue,
    -- What this node's decoder takes is what its links let through.
    max_depth = codec.limits().max_depth,
    handshake_timeout = opts.handshake_timeout,
  }
  transport.set_handlers { up = on_up, frames = on_frames, down = on_down, decide = decide }
  started = true
end

-- start{ listen = "HOST:PORT", advertise = "HOST:PORT", secret, cluster, name,
--        max_frame, max_queue } -> the address other nodes reach this one at.
-- Must run before any actor is spawned that other nodes should reach: refs
-- carry the address.
function M.start(opts)
  local lh, lport = split_address(opts.listen, "--listen")
  if lh == nil then error(lport, 2) end
  local adv_host, adv_port
  if opts.advertise then
    adv_host, adv_port = split_address(opts.advertise, "--advertise")
    if adv_host == nil then error(adv_port, 2) end
  end
  if runtime.count() > 0 and not opts.allow_late then
    log("warn", "actors spawned before the node listens have refs other nodes cannot reach")
  end
  setup(opts)
  local port, err = transport.listen(lh, lport)
  if port == nil then
    started = false
    return nil, err
  end
  listening = true
  if adv_host == nil then
    adv_host = lh
    if lh == "0.0.0.0" or lh == "::" then
      adv_host = "127.0.0.1"
      log("warn", "listening on all interfaces without --advertise: other nodes will be told "
        .. "to reach this one at " .. adv_host)
    end
    adv_port = port
  end
  node.address = (adv_host:find(":", 1, true) and ("[" .. adv_host .. "]") or adv_host) .. ":"
    .. adv_port
  transport.configure { address = node.address }
  return node.address, port
end

-- client{ secret, cluster, name }: reach other nodes without listening (refs
-- of this node's actors cannot be called from elsewhere).
function M.client(opts)
  setup(opts)
end

function M.started()
  return started
end

-- What a node that does not listen does when it first calls another node:
-- nothing (an `unreachable` error that says what to do), or, after
-- on_demand(fn), start as a client with the options fn() returns.
local NOT_STARTED = "this node has no cluster transport: start it with --listen HOST:PORT "
  .. "(or, in a script, atoll.cluster.client{ secret = ... }) to reach other nodes"
local start_on_demand = nil

-- ensure_started() -> true | nil, error (kind unreachable)
function ensure_started()
  if started then return true end
  if start_on_demand == nil then return nil, unreachable("%s", NOT_STARTED) end
  local opts, err = start_on_demand()
  if opts == nil then return nil, unreachable("%s", err) end
  setup(opts)
  log("info", "this node does not listen: it reaches other nodes as a client, and they cannot "
    .. "call its actors (--listen makes it a member)")
  return true
end

-- on_demand(fn): `atoll run` without --listen; fn() -> client options | nil,
-- message. The first call or send to another node starts the client.
function M.on_demand(fn)
  start_on_demand = fn
end

function M.listening()
  return listening
end

-- connect(address [, seconds]) -> true | nil, error: waits until a link to
-- the node at address is up.
function M.connect(address, seconds)
  local ok0, err0 = ensure_started()
  if not ok0 then error(err0, 2) end
  local p = peer_for(address)
  if p.link and p.link:state() == "up" then return true end
  if p.link == nil and not p.wait_timer then
    p.retry_at = 0
    local _, err = dial(p)
    if err then return nil, unreachable("%s", err) end
  end
  local f = runtime.future()
  p.waiters = p.waiters or {}
  p.waiters[#p.waiters + 1] = f
  local ok, err = pcall(f.wait, f, seconds or 5)
  if ok then return true end
  if errors.is(err, "timeout") then
    return nil, unreachable("no link to %s within %g s", address, seconds or 5)
  end
  return nil, err
end

-- link_to(address) -> the link that carries traffic to that node, if any
-- (for tools and tests).
function M.link_to(address)
  local p = peers[address]
  return p and p.link
end

-- peers() -> { [address] = { name, incarnation, state, queued } }
function M.peers()
  local out = {}
  for address, p in pairs(peers) do
    out[address] = { name = p.name, incarnation = p.incarnation,
                     state = p.link and p.link:state() or "down",
                     queued = p.link and p.link:queued() or 0 }
  end
  return out
end

---------------------------------------------------------------------------
-- Named actors on other nodes: atoll.remote(address, name):method(...)
---------------------------------------------------------------------------

Named.__index = runtime.method_table(function(method)
  return function(self, ...)
    if getmetatable(self) ~= Named then
      error("call a distributed function with a colon: remote:" .. method .. "(...)", 2)
    end
    return runtime.call_with(self, method, rawget(self, "timeout") or runtime.default_timeout(), ...)
  end
end)
Named.__tostring = function(r)
  return "actor named " .. rawget(r, "name") .. " on " .. rawget(r, "address")
end

-- named(address, name [, seconds]) -> a handle that calls the actor
-- registered under `name` on that node (with this timeout, by default).
function M.named(address, name, seconds)
  if type(address) ~= "string" or type(name) ~= "string" then
    error("named(address, name): both must be strings", 2)
  end
  return setmetatable({ address = address, name = name, timeout = seconds }, Named)
end

-- call_name(address, name, method, seconds, ...): the one call, to a named actor.
function M.call_name(address, name, method, seconds, ...)
  return runtime.call_with(M.named(address, name), method, seconds or runtime.default_timeout(), ...)
end

-- call_system(address, name, method, seconds, ...): call_name for the
-- runtime's own traffic between members (the membership's state exchange),
-- which also goes to a member declared down.
function M.call_system(address, name, method, seconds, ...)
  local target = setmetatable({ address = address, name = name, system = true }, Named)
  return runtime.call_with(target, method, seconds or runtime.default_timeout(), ...)
end

function M.send_name(address, name, method, ...)
  return runtime.send(M.named(address, name), method, ...)
end

return M
