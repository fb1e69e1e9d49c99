-- A counter that ticks every second: run with
--   atoll run --watch examples/counter/app.lua
-- then edit examples/counter/counter.lua while it runs. Stop with Ctrl-C.
local atoll = require "atoll"

local interval = tonumber(arg[1]) or 1

local counter = atoll.spawn("counter", 0)
atoll.register("counter", counter)

atoll.every(interval, function()
  counter:tick()
  print(counter:describe())
end)

atoll.on_shutdown(function()
  print("stopping at " .. counter:describe())
end)
