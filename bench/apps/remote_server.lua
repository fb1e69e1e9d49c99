-- The far side of bench/remote.lua: a sink for one-way messages and an echo for calls.
local atoll = require "atoll"

local Sink = atoll.actor.define "BenchSink"
function Sink:init() self.n = 0 end
function Sink.distributed:ping() self.n = self.n + 1 end
function Sink.distributed:count() return self.n end
function Sink.distributed:reset() self.n = 0 end

local Echo = atoll.actor.define "BenchEcho"
function Echo.distributed:echo(x) return x end

atoll.register("sink", atoll.spawn(Sink))
atoll.register("echo", atoll.spawn(Echo))
print("ready")
