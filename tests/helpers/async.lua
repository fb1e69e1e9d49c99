-- Wraps a spec body so it runs as an actor-like coroutine inside the loop,
-- with a deadline: a hung test fails with a message instead of hanging CI.
local atoll = require "atoll"

return function(fn, seconds)
  return function()
    atoll.run_for(seconds or 20, fn)
  end
end
