-- What singletons (atoll.cluster.singleton) and virtual actors (atoll.cluster.virtual) share:
-- both are names whose one instance runs on a node that changes, so calls to them are held in
-- order while it moves, forwarded to where it runs now, and the node that would start it asks
-- every other member to give it up first.
--
-- A held entry: { method, payload, reply_to (a call id of this node, 0 for a one-way message,
-- or the reply-to record of a call from another node), hops, expires (ms; a call from another
-- node waits at most HELD_TTL, a one-way message the default call timeout), held_at (ms) }.
local runtime = require "atoll.runtime"
local errors = require "atoll.util.errors"
local cluster = require "atoll.cluster"
local membership = require "atoll.cluster.membership"

local M = {}

M.HOPS_MAX = 3          -- forwards before a call waits where it is...
M.HOPS_RESET = 100      -- ...for this many ms, before it may be forwarded again
M.HELD_TTL = 60         -- seconds a call from another node may be held here
M.RELAY_TIMEOUT = 60    -- seconds a relayed call may take

local REF_ADDR, REF_INC = runtime.REF_ADDR, runtime.REF_INC
local node = runtime.node
local now_ms = runtime.now_ms

-- hosts(key, me) -> the members the receptionist lists under key, matched against membership
-- by incarnation; `me` (this node's member, when it hosts) first.
function M.hosts(key, me)
  local out, seen = {}, {}
  if me then
    out[1] = me
    seen[me.address] = true
  end
  if not membership.started() then return out end
  local receptionist = require "atoll.cluster.receptionist"
  for _, ref in ipairs(receptionist.lookup(key)) do
    local address = ref[REF_ADDR]
    if not seen[address] then
      local m = membership.member(address)
      if m and m.incarnation == ref[REF_INC] then
        out[#out + 1] = m
        seen[address] = true
      end
    end
  end
  return out
end

---------------------------------------------------------------------------
-- Held queues
---------------------------------------------------------------------------

function M.queue()
  return { head = 1, tail = 0 }
end

function M.count(q)
  return q.tail - q.head + 1
end

-- entry(method, payload, to, hops) -> a held entry
function M.entry(method, payload, to, hops)
  local t = type(to)
  if t == "number" and to ~= 0 then return { method, payload, to, hops } end
  return { method, payload, to, hops, now_ms() + (t == "number" and runtime.default_timeout() or M.HELD_TTL) * 1000 }
end

-- expired(entry) -> true once its caller gave up (a call of this node: its call is no longer
-- pending; a call from another node, or a one-way message: it waited its time)
function M.expired(entry)
  local to = entry[3]
  if type(to) == "number" and to ~= 0 then return not runtime.call_pending(to) end
  return entry[5] ~= nil and now_ms() > entry[5]
end

function M.fail(entry, err)
  local to = entry[3]
  if to ~= 0 then runtime.fail_call(to, err) end
end

function M.push(q, entry)
  entry[6] = now_ms()
  q.tail = q.tail + 1
  q[q.tail] = entry
end

-- push_front(q, entry): an entry that was already on its way (a mailbox taken back) goes first
function M.push_front(q, entry)
  entry[6] = entry[6] or now_ms()
  q.head = q.head - 1
  q[q.head] = entry
end

-- compact(q): drops the entries whose callers gave up, anywhere in the queue
function M.compact(q)
  local n = 0
  for i = q.head, q.tail do
    local entry = q[i]
    q[i] = nil
    if not M.expired(entry) then
      n = n + 1
      q[n] = entry
    end
  end
  q.head, q.tail = 1, n
end

-- pump(q, decide, act): sends on what is held, in order, as far as it can go now.
-- decide(entry) -> nil to stop (the entry stays first), or a decision, and then the entry
-- leaves the queue before act(entry, decision) runs. Expired entries are dropped; an entry that
-- bounced HOPS_MAX times while views disagreed may be forwarded again after HOPS_RESET ms.
function M.pump(q, decide, act)
  while q.head <= q.tail do
    local entry = q[q.head]
    if M.expired(entry) then
      q[q.head] = nil
      q.head = q.head + 1
    else
      if entry[4] >= M.HOPS_MAX and now_ms() - (entry[6] or 0) >= M.HOPS_RESET then entry[4] = 0 end
      local decision = decide(entry)
      if decision == nil then break end
      q[q.head] = nil
      q.head = q.head + 1
      act(entry, decision)
    end
  end
  if q.head > q.tail then q.head, q.tail = 1, 0 end
end

-- may_forward(member, hops) -> true when a call may go to that member now: under the hop limit,
-- and the member reachable over a link that is up (otherwise it waits: the member may be downed
-- soon and the name start elsewhere).
function M.may_forward(m, hops)
  return hops < M.HOPS_MAX and m.reachable ~= false and cluster.link_up(m.address)
end

-- relay(address, name, method, payload, to, label [, done]): a call from another node, held
-- here, goes on to the name on that node as a call of this node's, and its answer is sent back
-- the way it came; done() runs once it ended.
function M.relay(address, name, method, payload, to, label, done)
  runtime.start_root(function()
    local ok, res = runtime.call_payload(cluster.named(address, name), method, payload, M.RELAY_TIMEOUT)
    to:reply(ok, res)
  end, done, label)
end

-- forward(entry, address, name, label [, done]): sends the entry to the name on that node: a
-- call of this node goes straight (its reply comes back to its caller), a call from another node
-- is relayed; done() runs once such a relay ended. (No closure in here: LuaJIT compiles no
-- return past captured locals, and this runs for every call forwarded.)
function M.forward(entry, address, name, label, done)
  local to = entry[3]
  if type(to) ~= "number" then return M.relay(address, name, entry[1], entry[2], to, label, done) end
  local ok, err = cluster.route_name(address, name, entry[1], entry[2], to ~= 0 and to or nil)
  if not ok and to ~= 0 then runtime.fail_call(to, err) end
end

-- start_manager(T, name, what) -> the ref of this node's manager actor of type T, registered as
-- name (where the other members ask it)
function M.start_manager(T, name, what)
  local ref = runtime.spawn(T)
  local ok, err = runtime.register(name, ref)
  if not ok then error("cannot register " .. what .. ": " .. tostring(err), 0) end
  return ref
end

---------------------------------------------------------------------------
-- Asking the other members
---------------------------------------------------------------------------

-- ask_all(manager, method, seconds, opts, ...) -> true when every other member that is not down
-- answered "done" to manager:method(...) (a member without that manager has nothing to give
-- up). opts.unreached: "skip" (a member that cannot be reached now is not asked) or "fail" (it
-- makes the answer false at once, before anyone is asked); opts.log(m, why) hears each refusal.
function M.ask_all(manager, method, seconds, opts, ...)
  local args, nargs = { ... }, select("#", ...)
  local asked = {}
  for _, m in ipairs(membership.members()) do
    if m.address ~= node.address and m.status ~= "down" and m.status ~= "removed" then
      if m.reachable == false then
        if opts.unreached == "fail" then return false end
      else
        asked[#asked + 1] = m
      end
    end
  end
  if #asked == 0 then return true end
  local pending, all_ok = #asked, true
  local waiter = runtime.waiter()
  for _, m in ipairs(asked) do
    runtime.task(function()
      local ok, answer = pcall(cluster.call_system, m.address, manager, method, seconds, unpack(args, 1, nargs))
      if not ok and errors.kind(answer) == "no_such_actor" then ok, answer = true, "done" end
      if not ok or answer ~= "done" then
        all_ok = false
        if opts.log then opts.log(m, answer) end
      end
      pending = pending - 1
      if pending == 0 then waiter:wake() end
    end)
  end
  waiter:wait(seconds + 1)
  return all_ok and pending == 0
end

return M
