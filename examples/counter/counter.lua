-- A stateful actor to hot-reload: run the app with --watch, then edit this
-- file (change STEP, or the text in describe) and save it. The count goes on
-- from where it was; the next tick uses the new code.
local actor = require "atoll.actor"

local Counter = actor.define "Counter"

local STEP = 1

function Counter:init(start)
  self.count = start or 0
end

function Counter.distributed:tick()
  self.count = self.count + STEP
  return self.count
end

function Counter.distributed:describe()
  return ("count is %d"):format(self.count)
end

-- Runs once per live counter after a reload, before its next message.
-- `old` holds the previous code's fields (old.version, ...).
function Counter:migrate(old) -- luacheck: no unused args
end

return Counter
