-- A friend introduces itself to a greeter, then tells who it met.
local atoll = require "atoll"
local actor = require "atoll.actor"

local Friend = actor.define "Friend"

function Friend:init(name)
  self.name = name
end

-- `greeter` is a ref: it arrived as an argument, and calling it suspends
-- this handler until the greeter answers.
function Friend.distributed:visit(greeter)
  local answer = greeter:greet(self.name)
  atoll.log.info("%s heard: %s", self.name, answer)
  return answer
end

return Friend
