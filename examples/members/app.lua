-- A member that says what it sees of its cluster, and watches the others' lookouts.
--
-- Start the first node, then others that join through it:
--   atoll run examples/members/app.lua --listen 127.0.0.1:7001 --name a
--   atoll run examples/members/app.lua --listen 127.0.0.1:7002 --name b --join 127.0.0.1:7001
--   atoll run examples/members/app.lua --listen 127.0.0.1:7003 --name c --join 127.0.0.1:7001
-- then look, and kill or stop one:
--   atoll members --node 127.0.0.1:7001
local atoll = require "atoll"

local Lookout = atoll.actor.define "Lookout"

function Lookout:init()
  self.me = atoll.node().name
  self.watched = {}
  -- Called as this actor's message, in order: first the snapshot, then
  -- every change.
  atoll.membership.subscribe(function(ev)
    if ev.type == "snapshot" then return end
    local m = ev.member
    if m.self then return end
    print(("%s: %s (%s) is %s%s"):format(self.me, m.name, m.address, m.status,
      m.suspect and " (suspect)" or ""))
    if m.status == "up" and not self.watched[m.address] then
      -- Watch the lookout on that node: told once, when it stops or its
      -- node leaves or goes down.
      self.watched[m.address] = true
      local theirs = atoll.remote(m.address, "atoll.node"):whereis("lookout")
      if theirs then atoll.watch(theirs) end
    end
  end)
end

function Lookout:terminated(ref, reason)
  print(("%s: the lookout %s ended: %s"):format(self.me, tostring(ref), reason))
end

function Lookout.distributed:majority()
  return atoll.membership.has_majority()
end

atoll.register("lookout", atoll.spawn(Lookout))
print(("%s is looking out from %s"):format(atoll.node().name, atoll.node().address))
