-- A member that hosts the singleton "counter" (persistent when SINGLE_PERSISTENT=1; not hosted
-- with SINGLE_HOST=0), with a
-- caller actor that calls it steadily, for the singleton specs. Prints, on the monotonic clock
-- that every process of a machine shares (atoll.now()):
--
--   start COUNTER_RUN T            an instance started (COUNTER_RUN: incarnation and a number)
--   serve COUNTER_RUN N T          that instance served its Nth add
--   stop COUNTER_RUN T             its stopped hook ran
--
-- and the membership events the member app prints (see member.lua).
local atoll = require "atoll"

local persistent = os.getenv("SINGLE_PERSISTENT") == "1"
local runs = 0

local Counter = atoll.actor.define("Counter", { persistent = persistent })
function Counter:persistence_id() return "singleton/counter" end
function Counter:init()
  self.n = 0
  runs = runs + 1
  self.run = ("%x.%d"):format(atoll.node().incarnation, runs) -- (a node started again keeps its pid)
  print(("start %s %.6f"):format(self.run, atoll.now()))
end
function Counter:apply(event) self.n = self.n + event.k end
function Counter.distributed:add(k)
  if persistent then self:emit { k = k } else self.n = self.n + k end
  print(("serve %s %d %.6f"):format(self.run, self.n, atoll.now()))
  return self.n
end
function Counter.distributed:get() return self.n end
function Counter.distributed:where() return atoll.node().address end
function Counter.distributed:run_id() return self.run end
function Counter:stopped() print(("stop %s %.6f"):format(self.run, atoll.now())) end

-- (SINGLE_HOST=0: a member that calls the counter without hosting it)
local counter = os.getenv("SINGLE_HOST") == "0" and atoll.singleton.ref("counter")
  or atoll.singleton.host("counter", Counter)

-- Calls the counter in a loop: made, ok, failed (by kind), until stopped.
local Caller = atoll.actor.define "Caller"
-- (`done` until started: a node the cluster downed starts again with a caller never started)
function Caller:init() self.made, self.ok, self.failed, self.kinds, self.running, self.done = 0, 0, 0, {}, false, true end
function Caller.distributed:start(pause, timeout)
  if self.running then return false end
  self.running, self.done = true, false
  local c = atoll.singleton.ref("counter", timeout or 10)
  atoll.task(function()
    while self.running do
      self.made = self.made + 1
      local ok, err = pcall(c.add, c, 1)
      if ok then
        self.ok = self.ok + 1
      else
        self.failed = self.failed + 1
        local kind = atoll.errors.kind(err) or tostring(err)
        self.kinds[kind] = (self.kinds[kind] or 0) + 1
        print(("failed %s %.6f"):format(tostring(err), atoll.now()))
      end
      atoll.sleep(pause or 0.01)
    end
    self.done = true
  end)
  return true
end
function Caller.distributed:stop()
  self.running = false
  while not self.done do atoll.sleep(0.01) end
  return { made = self.made, ok = self.ok, failed = self.failed, kinds = self.kinds }
end
-- Asks the counter which instance answers, every `pause` seconds, and prints each change:
--   answer RUN T     the first answer from instance RUN
--   fail KIND T      a failed call
function Caller.distributed:probe(pause)
  if self.probing then return false end
  self.probing = true
  local c = atoll.singleton.ref("counter", 30)
  atoll.task(function()
    local last
    while self.probing do
      local ok, run = pcall(c.run_id, c)
      if ok and run ~= last then
        last = run
        print(("answer %s %.6f"):format(run, atoll.now()))
      elseif not ok then
        print(("fail %s %.6f"):format(atoll.errors.kind(run) or "?", atoll.now()))
      end
      atoll.sleep(pause or 0.002)
    end
  end)
  return true
end
function Caller.distributed:unprobe() self.probing = false end
function Caller.distributed:counter() return counter:get() end
function Caller.distributed:where() return counter:where() end
function Caller.distributed:info() return require("atoll.cluster.singleton").info() end

atoll.register("caller", atoll.spawn(Caller))
require "member" -- membership events, the watcher and keeper actors; prints "ready"
