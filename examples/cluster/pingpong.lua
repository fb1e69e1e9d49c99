-- A ping-pong table: counts the balls it returns, and can hold one for a while.
local actor = require "atoll.actor"
local atoll = require "atoll"

local Table = actor.define "Table"

function Table:init(name)
  self.name = name
  self.returned = 0
end

function Table.distributed:ping(n)
  self.returned = self.returned + 1
  return n + 1
end

-- Keeps the ball `seconds` before returning it (to show what a lost node does).
function Table.distributed:hold(seconds)
  atoll.sleep(seconds)
  return "returned"
end

function Table.distributed:stats()
  return { table = self.name, returned = self.returned, node = atoll.node().address }
end

return Table
