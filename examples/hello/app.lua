-- Two actors talking: run with `atoll run examples/hello/app.lua`.
local atoll = require "atoll"

local greeter = atoll.spawn("greeter", "Hello")
local ann = atoll.spawn("friend", "Ann")
local bob = atoll.spawn("friend", "Bob")

print(ann:visit(greeter))
print(bob:visit(greeter))

-- A one-way message: no answer, no waiting.
atoll.send(ann, "visit", greeter)

-- Errors come back with a kind: here the greeter has no `shout` function.
local ok, err = pcall(greeter.shout, greeter)
print(ok, err.kind, err.message)
