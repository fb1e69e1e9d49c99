-- A counter that ticks every second: run with
--   atoll run --watch examples/counter/app.lua
-- then edit examples/counter/counter.lua while it runs. Stop with Ctrl-C.
local atoll = require "atoll"

local interval = tonumber(arg[1]) or 1
-- `--exit-after N` stops the node after N ticks (used by tests and the demo).
local exit_after = arg[2] == "--exit-after" and tonumber(arg[3]) or nil
local ticks = 0

local counter = atoll.spawn("counter", 0)
atoll.register("counter", counter)

atoll.every(interval, function()
  counter:tick()
  print(counter:describe())
  ticks = ticks + 1
  if ticks == exit_after then atoll.exit(0) end
end)

atoll.on_shutdown(function()
  print("stopping at " .. counter:describe())
end)
