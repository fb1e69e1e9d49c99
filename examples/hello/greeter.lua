-- A greeter remembers how many people it has greeted.
local actor = require "atoll.actor"

local Greeter = actor.define "Greeter"

function Greeter:init(greeting)
  self.greeting = greeting
  self.greeted = 0
end

function Greeter.distributed:greet(name)
  self.greeted = self.greeted + 1
  return ("%s, %s! (you are visitor number %d)"):format(self.greeting, name, self.greeted)
end

return Greeter
