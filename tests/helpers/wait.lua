-- Deadlines for specs, scaled by one load factor, and retry(fn, seconds) for state that converges.
--
-- A deadline in a spec is how long something may take on this machine when
-- it is quiet; on a loaded CI machine or a sanitizer build everything is
-- slower, so every deadline is multiplied by one factor: ATOLL_TEST_SLOWDOWN
-- (3 on the sanitizer build, which tests/run sets; 1 otherwise).
local atoll = require "atoll"

local M = {}

M.factor = tonumber(os.getenv("ATOLL_TEST_SLOWDOWN") or "") or (os.getenv("ATOLL_SANITIZED") and 3 or 1)

-- seconds(s) -> s, scaled by the load factor
function M.seconds(s)
  return s * M.factor
end

-- retry(fn, seconds [, what]) -> fn's results, once fn returns a truthy first
-- value (or returns without raising, when it returns nothing). Raises with
-- `what` and fn's last error or result if that does not happen within the
-- scaled deadline. Runs inside an actor (or atoll.run).
function M.retry(fn, seconds, what)
  local deadline = atoll.now() + M.seconds(seconds)
  local last
  while true do
    local r = { pcall(fn) }
    if r[1] and (r[2] or select("#", unpack(r)) == 1) then return unpack(r, 2, table.maxn(r)) end
    last = r[1] and ("it returned " .. tostring(r[2])) or tostring(r[2])
    if atoll.now() > deadline then
      error(("%s did not happen within %g s: %s"):format(what or "the condition", M.seconds(seconds), last), 2)
    end
    atoll.sleep(0.01)
  end
end

return M
