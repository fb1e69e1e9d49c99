-- A node for functional specs: a few named actors that echo, log, relay refs and count.
local atoll = require "atoll"
local actor = atoll.actor

local Echo = actor.define "Echo"
function Echo.distributed:echo(...) return ... end
function Echo.distributed:slow(seconds, v)
  atoll.sleep(seconds)
  return v
end
function Echo.distributed:fail(message) error(message) end

local Log = actor.define "Log"
function Log:init() self.seen = {} end
function Log.distributed:note(x) self.seen[#self.seen + 1] = x end
function Log.distributed:seen() return self.seen end
function Log.distributed:count() return #self.seen end

local Counter = actor.define "Counter"
function Counter:init() self.n = 0 end
function Counter.distributed:add(k)
  self.n = self.n + (k or 1)
  return self.n
end

-- Holds a ref, hands it on, and calls through it.
local Relay = actor.define "Relay"
function Relay.distributed:keep(ref) self.ref = ref return true end
function Relay.distributed:kept() return self.ref end
function Relay.distributed:give(other) return other:keep(self.ref) end
function Relay.distributed:call_kept(method, ...) return atoll.call(self.ref, method, ...) end
function Relay.distributed:call(ref, method, ...) return atoll.call(ref, method, ...) end
function Relay.distributed:send_many(ref, method, n)
  for i = 1, n do atoll.send(ref, method, i) end
  return n
end
-- Sends until a send fails; returns how many went and the error's kind.
function Relay.distributed:flood(ref, size, limit)
  local blob = string.rep("x", size)
  for i = 1, limit do
    local ok, err = pcall(atoll.send, ref, "note", blob)
    if not ok then return i - 1, atoll.errors.kind(err) or tostring(err) end
  end
  return limit, nil
end

local Spawner = actor.define "Spawner"
function Spawner.distributed:counter() return atoll.spawn(Counter) end

atoll.register("echo", atoll.spawn(Echo))
atoll.register("log", atoll.spawn(Log))
atoll.register("relay", atoll.spawn(Relay))
atoll.register("spawner", atoll.spawn(Spawner))
print("ready")
