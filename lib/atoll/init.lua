-- atoll: the API for actor code and apps (spawn, calls, sends, timers, names, run, reload).
local host = require "atoll.c.host"
local codec = require "atoll.c.codec"
local runtime = require "atoll.runtime"
local actor = require "atoll.actor"
local errors = require "atoll.util.errors"
local reload = require "atoll.reload"
local log = require "atoll.log"

local atoll = {
  version = host.version,
  actor = actor,
  errors = errors,
  log = log,
  codec = codec,
}

-- Tables with this metatable encode as MessagePack arrays even when empty
-- (an empty table is otherwise a map); decoding an empty array sets it.
local ArrayMT = { __name = "atoll.array" }
atoll.ARRAY = ArrayMT

local installed = false
local function install()
  if installed then return end
  installed = true
  runtime.install()
  codec.configure { array_mt = ArrayMT }
  require "atoll.cluster.virtual_ref" -- gives the codec the metatable of virtual refs
  local ok, cjson = pcall(require, "cjson")
  if ok and type(cjson) == "table" and cjson.array_mt then
    codec.configure { json_array_mt = cjson.array_mt }
  end
  require("atoll.util.json").set_array_mt(ArrayMT)
  actor.install_loader()
  require("atoll.cluster.watch").install()
  require("atoll.cluster.receptionist").install()
  local persistence = require "atoll.persistence"
  persistence.install(actor.Base)
  runtime.set_persistence(persistence.activate)
  runtime.on_stop(persistence.on_stopped)
end
install()

---------------------------------------------------------------------------
-- Actors
---------------------------------------------------------------------------

-- spawn(type_or_module_name, ...) -> ref
-- Creates an actor, runs its init(...) and returns a ref to it.
function atoll.spawn(spec, ...)
  local T, err = actor.resolve(spec)
  if T == nil then error("spawn: " .. tostring(err), 2) end
  return runtime.spawn(T, ...)
end

-- self() -> the ref of the actor whose code is running (nil outside actors)
function atoll.self()
  local rec = runtime.current()
  return rec and rec[runtime.R_REF] or nil
end

-- stop([ref]) -> true if the actor was running. Without a ref: the running actor.
function atoll.stop(ref)
  if ref == nil then
    local rec = runtime.current()
    if rec == nil or rec[runtime.R_REF] == nil then error("stop: no actor is running here", 2) end
    return runtime.stop_record(rec)
  end
  if not runtime.is_ref(ref) then error("stop: expected an actor ref", 2) end
  local rec = runtime.record_of(ref)
  if rec == nil then
    if runtime.is_local(ref) then return false end
    error("stop: only actors of this node can be stopped (send them a message instead)", 2)
  end
  return runtime.stop_record(rec)
end

atoll.send = runtime.send
atoll.call = runtime.call
atoll.timeout = runtime.timeout
atoll.is_ref = runtime.is_ref
atoll.default_timeout = runtime.default_timeout

-- Methods every actor has (a type may define its own of the same name).
function actor.Base.ref(state)
  local rec = runtime.current()
  if rec == nil or rec[runtime.R_STATE] ~= state then
    error("self:ref() must run inside the actor's own code", 2)
  end
  return rec[runtime.R_REF]
end

function actor.Base.stop(state)
  local rec = runtime.current()
  if rec == nil or rec[runtime.R_STATE] ~= state then
    error("self:stop() must run inside the actor's own code", 2)
  end
  return runtime.stop_record(rec)
end

-- local_actors() -> how many actors this node runs
function atoll.local_actors()
  return runtime.count()
end

---------------------------------------------------------------------------
-- Names on this node
---------------------------------------------------------------------------

-- register(name, ref) -> true | nil, message
function atoll.register(name, ref)
  if type(name) ~= "string" or name == "" then error("register: name must be a non-empty string", 2) end
  if not runtime.is_ref(ref) then error("register: expected an actor ref", 2) end
  return runtime.register(name, ref)
end

-- whereis(name) -> ref | nil
function atoll.whereis(name)
  return runtime.whereis(name)
end

function atoll.unregister(name)
  return runtime.unregister(name)
end

---------------------------------------------------------------------------
-- Time
---------------------------------------------------------------------------

atoll.sleep = runtime.sleep
atoll.after = runtime.after
atoll.every = runtime.every
atoll.yield = runtime.yield

-- future() -> a value to be set later: f:set(v), f:fail(err), f:wait([s]), f:ready()
atoll.future = runtime.future
-- task(fn, ...) -> future of fn's result; fn runs concurrently as the running actor
atoll.task = runtime.task

-- now() -> monotonic seconds, with sub-microsecond resolution
function atoll.now()
  return host.hrtime() / 1e9
end

---------------------------------------------------------------------------
-- Values
---------------------------------------------------------------------------

-- array([t]) -> t, marked to encode as an array even when empty
function atoll.array(t)
  return setmetatable(t or {}, ArrayMT)
end

---------------------------------------------------------------------------
-- The node
---------------------------------------------------------------------------

-- node() -> { name, address, incarnation }
function atoll.node()
  local n = runtime.node
  return { name = n.name, address = n.address, incarnation = n.incarnation }
end

local shutdown_hooks = {}

-- on_shutdown(fn): fn() runs (inside an actor context) when the node stops
-- gracefully, on SIGINT or SIGTERM, before it exits.
function atoll.on_shutdown(fn)
  if type(fn) ~= "function" then error("on_shutdown needs a function", 2) end
  shutdown_hooks[#shutdown_hooks + 1] = fn
end

function atoll._shutdown_hooks()
  return shutdown_hooks
end

local exit_requested = nil

-- exit([code]): stops the node with this exit code (0 by default), after the
-- message being handled; nothing more is dispatched.
function atoll.exit(code)
  code = code or 0
  if type(code) ~= "number" then error("exit: code must be a number", 2) end
  exit_requested = code
  host.stop(code)
  if runtime.in_actor() then
    -- Never returns: the rest of this handler must not run after exit.
    runtime.suspend()
  end
end

local function run(level, seconds, fn, ...)
  if type(fn) ~= "function" then error("run needs a function", level) end
  if coroutine.running() ~= nil then
    error("atoll.run must be called from the main thread, not from inside an actor or coroutine", level)
  end
  local done, ok, res, tb = false, nil, nil, nil
  local timed_out = false
  runtime.refresh_now()
  runtime.start_root(fn, function(o, r, t)
    done, ok, res, tb = true, o, r, t
    host.interrupt()
  end, "run", ...)
  local deadline = seconds and runtime.after_raw(seconds, function()
    timed_out = true
    host.interrupt()
  end)
  runtime.drain()
  while not done do
    local stopped = host.run()
    if exit_requested then os.exit(exit_requested, true) end
    if timed_out and not done then
      error(("atoll.run: the function did not finish within %g s"):format(seconds), level)
    end
    if not done and not stopped then
      error("atoll.run: nothing is left that could wake the function up "
        .. "(it waits for something that will never happen)", level)
    end
  end
  if deadline then deadline:cancel() end
  if not ok then
    if type(res) == "string" and tb then error(tb, 0) end
    error(res, 0)
  end
  return unpack(res, 1, res.n)
end

-- run(fn, ...) -> fn's results. Runs fn as an actor-like coroutine (it can
-- call actors and sleep), driving the loop until fn returns; raises fn's
-- error. For scripts and tests under `atoll lua`; not from inside an actor.
function atoll.run(fn, ...)
  return run(3, nil, fn, ...)
end

-- run_for(seconds, fn, ...) -> like run, but raises if fn has not returned
-- within `seconds`.
function atoll.run_for(seconds, fn, ...)
  if type(seconds) ~= "number" or seconds <= 0 then error("run_for needs a positive number of seconds", 2) end
  return run(3, seconds, fn, ...)
end

---------------------------------------------------------------------------
-- Other nodes
---------------------------------------------------------------------------

-- remote(address, name [, seconds]) -> a handle whose calls go to the actor
-- registered as `name` on the node at address: atoll.remote(a, "lobby"):join(p)
function atoll.remote(address, name, seconds)
  return require("atoll.cluster").named(address, name, seconds)
end

-- connect(address [, seconds]) -> true | nil, error: waits for a link to the node
function atoll.connect(address, seconds)
  return require("atoll.cluster").connect(address, seconds)
end

---------------------------------------------------------------------------
-- Membership and lifecycle watch
---------------------------------------------------------------------------

-- membership: members(), member(address), subscribe(fn), join(addresses),
-- leave(), down(address), down_final(address), has_majority(), stats(), config()
-- (see lib/atoll/cluster/membership.lua)
atoll.membership = require "atoll.cluster.membership"

local watch = require "atoll.cluster.watch"

-- watch(ref) -> true: from inside an actor whose type has a
-- terminated(ref, reason) hook; the hook runs once, when the watched actor
-- stops or its node leaves, goes down, or cannot be reached.
function atoll.watch(ref)
  return watch.watch(ref)
end

-- unwatch(ref) -> true if the running actor was watching ref
function atoll.unwatch(ref)
  return watch.unwatch(ref)
end

---------------------------------------------------------------------------
-- The receptionist: actors found by key on every node
---------------------------------------------------------------------------

local receptionist = require "atoll.cluster.receptionist"

-- receptionist.check_in(ref, key) -> true: lists an actor of this node under
-- key (a string of 1 to 200 bytes), on every node, until it is checked out
-- or stops, or its node goes.
-- receptionist.check_out(ref, key) -> true if it was listed there
-- receptionist.lookup(key) -> { ref... } on any node, by node address then actor id
-- receptionist.listing(key, fn) -> subscription (:cancel()); fn(event) runs
-- with { type = "snapshot", key, refs }, then { type = "added" | "removed",
-- key, ref } for every change, as messages of the calling actor, in order.
-- receptionist.stats() -> counters (see lib/atoll/cluster/receptionist.lua)
atoll.receptionist = {
  check_in = receptionist.check_in,
  check_out = receptionist.check_out,
  lookup = receptionist.lookup,
  listing = receptionist.listing,
  stats = receptionist.stats,
}

---------------------------------------------------------------------------
-- Persistence
---------------------------------------------------------------------------

-- persistence: configure{ journal, data_dir }, info(), list(), events(pid),
-- snapshot(pid) (see lib/atoll/persistence.lua); persistent actors emit
-- with self:emit(event) and self:emit_all{...}.
atoll.persistence = require "atoll.persistence"

-- http: routes (get, post, route, stream, static) and listen; see lib/atoll/http.lua
atoll.http = require "atoll.http"

---------------------------------------------------------------------------
-- Cluster services, loaded when first used
---------------------------------------------------------------------------

-- singleton: host(name, T, ...), ref(name) (see lib/atoll/cluster/singleton.lua)
-- receptionist: check_in(ref, key), check_out(ref, key), lookup(key), listing(key, fn)
-- (see lib/atoll/cluster/receptionist.lua)
-- virtual: define(T, opts), host(T), get(type, id [, deps]) (see lib/atoll/cluster/virtual.lua)
local services = { singleton = "atoll.cluster.singleton", receptionist = "atoll.cluster.receptionist",
                   virtual = "atoll.cluster.virtual" }
setmetatable(atoll, { __index = function(t, k)
  local module = services[k]
  if module == nil then return nil end
  local v = require(module)
  rawset(t, k, v)
  return v
end })

---------------------------------------------------------------------------
-- Hot reload
---------------------------------------------------------------------------

-- reload(module_name) -> true, event | false, message
atoll.reload = reload.reload
-- on_reload(fn(event)) -> fn; event = { module, path, ok, error?, migrated? }
atoll.on_reload = reload.on_reload

return atoll
