-- Small things specs share.
local atoll = require "atoll"
local assert = require "luassert"

local M = {}

-- catch(fn, ...) -> the error fn raises; fails the spec if it does not raise.
function M.catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- fresh(name) -> a new actor type with a name no other spec uses
local n = 0
function M.fresh(name)
  n = n + 1
  return atoll.actor.define(name .. n)
end

return M
