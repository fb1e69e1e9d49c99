-- Sets kept in tables of sets (an index from a key to { member = true }).
local M = {}

-- of(t, k) -> t[k], made an empty set first if it was none
function M.of(t, k)
  local s = t[k]
  if s == nil then
    s = {}
    t[k] = s
  end
  return s
end

return M
