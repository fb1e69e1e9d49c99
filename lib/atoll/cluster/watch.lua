-- Lifecycle watch: an actor watches a ref; its type's terminated(ref, reason) hook runs once when
-- the watched actor stops, or when its node leaves, is declared down, or cannot be reached.
--
-- Watches on this node's actors are kept here. A watch on another node's
-- actor is kept here too (so that a node that dies can still be mourned), and
-- registered with that node's node actor, which sends `terminated` back when
-- the actor stops. Membership (atoll.membership) tells when a node is down
-- or gone; for a node that is not a member, losing the link to it is taken
-- as the end of its actors.
--
-- Reasons: "stopped" (the actor stopped, or was not running when watched),
-- "node down", "node left", "unreachable" (the watch could not be placed, or
-- the link to a node that is not a member was lost).
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"

local M = {}

local NODE_ACTOR = "atoll.node"
local R_STATE, R_TYPE, R_REF, R_ID = runtime.R_STATE, runtime.R_TYPE, runtime.R_REF, runtime.R_ID
local REF_ADDR, REF_INC, REF_ID = runtime.REF_ADDR, runtime.REF_INC, runtime.REF_ID
local REF_KEY = 1
local node = runtime.node

-- Watches held by this node's actors:
local targets = {}    -- ref key -> { ref, watchers = { [rec] = true }, remote = bool }
local by_watcher = setmetatable({}, { __mode = "k" }) -- rec -> { [ref key] = true }
local by_node = {}    -- address -> { [ref key] = true }: targets on that node
-- Watches other nodes hold on this node's actors:
local remote_watchers = {} -- local actor id -> { [watcher node address] = true }
local watchers_from = {}   -- watcher node address -> { [local actor id] = true }

local function log(level, msg)
  host.log(level, "watch", msg)
end

local set_of = require("atoll.util.sets").of

local function cluster()
  return require "atoll.cluster"
end

-- Tells every watcher of a target, once, and forgets the target.
local function fire(key, reason)
  local t = targets[key]
  if t == nil then return end
  targets[key] = nil
  local ref = t.ref
  if t.remote then
    local s = by_node[ref[REF_ADDR]]
    if s then s[key] = nil end
  end
  for rec in pairs(t.watchers) do
    local w = by_watcher[rec]
    if w then w[key] = nil end
    runtime.run_in(rec, function()
      local hook = rec[R_TYPE].terminated
      if hook == nil then return end -- its code was reloaded without the hook
      local ok, err = xpcall(hook, debug.traceback, rec[R_STATE], ref, reason)
      if not ok then log("error", runtime.actor_label(rec) .. ": error in terminated(): " .. tostring(err)) end
    end, nil, "terminated")
  end
end

local function send_to_node(address, method, ...)
  local ok, err = pcall(cluster().send_name, address, NODE_ACTOR, method, ...)
  return ok, err
end

-- Takes rec off a target's watchers; the last one out forgets the target,
-- and tells the target's node. False if rec did not watch it.
local function drop_watcher(key, rec)
  local t = targets[key]
  if t == nil or not t.watchers[rec] then return false end
  t.watchers[rec] = nil
  if next(t.watchers) == nil then
    targets[key] = nil
    if t.remote then
      local address = t.ref[REF_ADDR]
      local s = by_node[address]
      if s then s[key] = nil end
      send_to_node(address, "unwatch", t.ref, node.address)
    end
  end
  return true
end

-- Forgets that the node at address watches this node's actor `id`.
local function drop_remote_watcher(id, address)
  local nodes = remote_watchers[id]
  if nodes then
    nodes[address] = nil
    if next(nodes) == nil then remote_watchers[id] = nil end
  end
  local s = watchers_from[address]
  if s then s[id] = nil end
end

-- watch(ref): see atoll.watch.
function M.watch(ref)
  local rec = runtime.current()
  if rec == nil or rec[R_REF] == nil then error("watch must be called from inside an actor", 3) end
  local T = rec[R_TYPE]
  if type(T.terminated) ~= "function" then
    error("watch: " .. T.__name .. " needs a terminated(ref, reason) hook to be told with", 3)
  end
  if not runtime.is_ref(ref) then error("watch: expected an actor ref", 3) end
  if ref == rec[R_REF] then error("watch: an actor cannot watch itself", 3) end
  local remote = not runtime.is_local(ref)
  if remote and node.address == "" then
    error("watch: watching an actor of another node needs this node to listen (--listen)", 3)
  end
  local key = ref[REF_KEY]
  local t = targets[key]
  if t and t.watchers[rec] then return true end
  set_of(by_watcher, rec)[key] = true
  if t then
    t.watchers[rec] = true
    return true
  end
  t = { ref = ref, watchers = { [rec] = true }, remote = remote }
  targets[key] = t
  if not t.remote then
    if runtime.record_of(ref) == nil then fire(key, "stopped") end
    return true
  end
  local address = ref[REF_ADDR]
  set_of(by_node, address)[key] = true
  local membership = require "atoll.cluster.membership"
  local status, inc = membership.status(address)
  if status == "down" or address == node.address then
    fire(key, "node down") -- (or an earlier run of this very node)
  elseif status and inc ~= ref[REF_INC] then
    fire(key, "node down") -- that run of the node is gone: another one is a member
  else
    local ok = send_to_node(address, "watch", ref, node.address)
    if not ok then fire(key, "unreachable") end
  end
  return true
end

-- unwatch(ref): the running actor stops watching ref (true if it was).
function M.unwatch(ref)
  local rec = runtime.current()
  if rec == nil then error("unwatch must be called from inside an actor", 3) end
  if not runtime.is_ref(ref) then error("unwatch: expected an actor ref", 3) end
  local key = ref[REF_KEY]
  if not drop_watcher(key, rec) then return false end
  local w = by_watcher[rec]
  if w then w[key] = nil end
  return true
end

-- An actor of this node stopped: tell its watchers, here and elsewhere, and
-- drop the watches it held.
local function on_stopped(rec)
  local ref = rec[R_REF]
  if ref then
    fire(ref[REF_KEY], "stopped")
    local id = rec[R_ID]
    local nodes = remote_watchers[id]
    if nodes then
      for address in pairs(nodes) do
        drop_remote_watcher(id, address)
        send_to_node(address, "watch_ended", ref, "stopped")
      end
    end
  end
  local w = by_watcher[rec]
  if w then
    by_watcher[rec] = nil
    for key in pairs(w) do drop_watcher(key, rec) end
  end
end

-- Every watch on actors of the node at address (of its run `incarnation`,
-- or of any run if nil) ends with `reason`; and the watches that node held
-- here are dropped.
function M.node_gone(address, incarnation, reason)
  local s = by_node[address]
  if s then
    local keys = {}
    for key in pairs(s) do
      local t = targets[key]
      if t and (incarnation == nil or t.ref[REF_INC] == incarnation) then keys[#keys + 1] = key end
    end
    for _, key in ipairs(keys) do fire(key, reason) end
  end
  local ids = watchers_from[address]
  if ids then
    for id in pairs(ids) do drop_remote_watcher(id, address) end
  end
end

---------------------------------------------------------------------------
-- What the node actor does for other nodes
---------------------------------------------------------------------------

-- A node watches `ref`, one of ours.
function M.remote_watch(ref, watcher_address)
  if not runtime.is_ref(ref) or type(watcher_address) ~= "string" then return end
  local rec = runtime.is_local(ref) and runtime.record_of(ref)
  if not rec then
    send_to_node(watcher_address, "watch_ended", ref, "stopped")
    return
  end
  local id = rec[R_ID]
  set_of(remote_watchers, id)[watcher_address] = true
  set_of(watchers_from, watcher_address)[id] = true
end

function M.remote_unwatch(ref, watcher_address)
  if not runtime.is_ref(ref) or type(watcher_address) ~= "string" then return end
  drop_remote_watcher(ref[REF_ID], watcher_address)
end

-- A node tells us that `ref`, which we watch, ended.
function M.remote_terminated(ref, reason)
  if not runtime.is_ref(ref) then return end
  fire(ref[REF_KEY], type(reason) == "string" and reason or "stopped")
end

-- count() -> how many refs this node's actors watch (for tests and tools)
function M.count()
  local n = 0
  for _ in pairs(targets) do n = n + 1 end
  return n
end

function M.install()
  runtime.on_stop(on_stopped)
  local membership = require "atoll.cluster.membership"
  membership.listen(function(m, previous)
    if m.self then return end
    if m.status == "down" then
      M.node_gone(m.address, m.incarnation, "node down")
    elseif m.status == "removed" and previous ~= "down" then
      -- Removed after it said goodbye: it left; removed otherwise (a new run replaced it
      -- before it was downed, or it was forgotten while unreachable): that run is down.
      M.node_gone(m.address, m.incarnation, previous == "leaving" and "node left" or "node down")
    end
  end)
end

return M
