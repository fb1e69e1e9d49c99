-- The node actor: every listening node registers one as "atoll.node", for tools and other nodes.
local actor = require "atoll.actor"
local runtime = require "atoll.runtime"
local reload = require "atoll.reload"
local host = require "atoll.c.host"
local membership = require "atoll.cluster.membership"
local watch = require "atoll.cluster.watch"
local receptionist = require "atoll.cluster.receptionist"

local Node = actor.define "atoll.Node"

Node.NAME = "atoll.node"

-- info() -> { name, address, incarnation, actors, version, pid, peers, transport }
-- (transport: the links' counters, atoll.c.transport.stats())
function Node.distributed:info()
  local n = runtime.node
  local cluster = require "atoll.cluster"
  return { name = n.name, address = n.address, incarnation = n.incarnation,
           actors = runtime.count(), version = host.version, pid = host.pid(),
           peers = cluster.peers(), transport = require("atoll.c.transport").stats() }
end

function Node.distributed:ping()
  return "pong"
end

-- reload(module) -> true, event | false, message   (what `atoll reload` runs)
function Node.distributed:reload(module)
  if type(module) ~= "string" then return false, "reload needs a module name" end
  return reload.reload(module)
end

-- whereis(name) -> ref | nil
function Node.distributed:whereis(name)
  return runtime.whereis(name)
end

-- members() -> { members = { member... }, stats = { counters }, majority, config }
-- (what `atoll members` prints)
function Node.distributed:members()
  local downing = require "atoll.cluster.downing"
  return { members = membership.members(), stats = membership.stats(),
           majority = downing.status() == "majority", downing = downing.info(), started = membership.started(),
           config = membership.started() and membership.config() or nil,
           address = runtime.node.address }
end

-- singletons() -> { singletons = { singleton... }, downing = { ... } } (what `atoll singletons`
-- prints; see atoll.cluster.singleton.info and atoll.cluster.downing.info)
function Node.distributed:singletons()
  local loaded = package.loaded["atoll.cluster.singleton"]
  return { singletons = loaded and loaded.info() or {}, downing = require("atoll.cluster.downing").info(),
           address = runtime.node.address }
end

-- virtuals([name [, id]]) -> { address, running, types = { { name, hosted, idle_timeout, active }... },
-- counters, where = { type, id, owner, active } } (what `atoll virtual` prints): the virtual types
-- this node defines (by name; `name`'s only when given), its counters (of every type), and, given
-- a name it defines and an id, the id's owner in this node's view and whether it is active here.
-- running: whether the node defines any virtual type at all.
function Node.distributed:virtuals(name, id)
  if name ~= nil and type(name) ~= "string" then error("virtuals: the type must be a string", 2) end
  if id ~= nil and type(id) ~= "string" and type(id) ~= "number" then
    error("virtuals: an id is a string or an integer", 2)
  end
  local view = { address = runtime.node.address, running = false, types = {} }
  local virtual = package.loaded["atoll.cluster.virtual"]
  if virtual == nil then return view end
  local info = virtual.info()
  view.counters = info.counters
  for n, t in pairs(info.types) do
    view.running = true
    if name == nil or n == name then
      view.types[#view.types + 1] = { name = n, hosted = t.hosted, idle_timeout = t.idle_timeout, active = t.active }
    end
  end
  table.sort(view.types, function(a, b) return a.name < b.name end)
  if id ~= nil and name ~= nil and #view.types == 1 then
    local owner, active = virtual.where(name, id)
    view.where = { type = name, id = id, owner = owner, active = active }
  end
  return view
end

-- The lease (atoll.cluster.lease): every member answers, whether or not it uses one itself.
function Node.distributed:lease_ask(round, address, incarnation)
  require("atoll.cluster.lease").ask(round, address, incarnation)
end

function Node.distributed:lease_ack(round, address, verdict)
  require("atoll.cluster.lease").ack(round, address, verdict)
end

-- confirm_down(list) -> true, age | false (atoll.cluster.lease.confirm)
function Node.distributed:confirm_down(list)
  return require("atoll.cluster.lease").confirm(list)
end

-- exchange(state) -> state: SWIM's push-pull, over this authenticated link.
function Node.distributed:exchange(state)
  return membership.exchange(state)
end

-- One-way messages of lifecycle watch (atoll.watch).
function Node.distributed:watch(ref, watcher_address)
  watch.remote_watch(ref, watcher_address)
end

function Node.distributed:unwatch(ref, watcher_address)
  watch.remote_unwatch(ref, watcher_address)
end

function Node.distributed:watch_ended(ref, reason)
  watch.remote_terminated(ref, reason)
end

-- receptionist([key]) -> this node's view of the receptionist's entries (of
-- one key, or all), and its counters (what `atoll receptionist` prints)
function Node.distributed:receptionist(key)
  if key ~= nil and type(key) ~= "string" then error("receptionist: the key must be a string", 2) end
  return receptionist.view(key)
end

-- One-way messages of the receptionist (atoll.receptionist) between members:
-- a change of the sender's entries, a part of its whole set, its sequence
-- number (and, with `ask`, a request for this node's), and a request for
-- this node's whole set.
function Node.distributed:reception_change(owner, incarnation, seq, op, key, ref, type_name)
  receptionist.received_change(owner, incarnation, seq, op, key, ref, type_name)
end

function Node.distributed:reception_set(owner, incarnation, seq, part, parts, entries)
  receptionist.received_set(owner, incarnation, seq, part, parts, entries)
end

function Node.distributed:reception_digest(owner, incarnation, seq, ask)
  receptionist.received_digest(owner, incarnation, seq, ask)
end

function Node.distributed:reception_pull(requester, incarnation)
  receptionist.received_pull(requester, incarnation)
end

return Node
