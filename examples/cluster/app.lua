-- Two nodes playing ping-pong across a link. Start the first:
--   atoll run examples/cluster/app.lua --listen 127.0.0.1:7001 --name east
-- then the second, pointing at the first:
--   atoll run examples/cluster/app.lua --listen 127.0.0.1:7002 --name west -- --rally 127.0.0.1:7001
-- and from the shell:
--   atoll call --node 127.0.0.1:7001 table stats
local atoll = require "atoll"

local me = atoll.spawn("pingpong", atoll.node().name)
atoll.register("table", me)
print(("table %s is open at %s"):format(atoll.node().name, atoll.node().address))

local peer = arg[1] == "--rally" and arg[2]
if peer then
  local other = atoll.remote(peer, "table")
  local n, t0 = 0, atoll.now()
  for _ = 1, 10000 do n = other:ping(n) end
  print(("rallied %d balls with %s in %.0f ms"):format(n, peer, (atoll.now() - t0) * 1000))

  -- Hold on to a ball; if the other node dies meanwhile, the call fails
  -- at once with `unreachable` instead of waiting for its timeout.
  print("holding a ball on " .. peer .. " for 30 s")
  local t1 = atoll.now()
  local ok, err = pcall(other.hold, other, 30)
  print(ok and "the ball came back" or ("%s after %.0f ms: %s"):format(err.kind,
    (atoll.now() - t1) * 1000, err.message))
  atoll.exit(0)
end
