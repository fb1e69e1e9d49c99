-- Small integers handed out and given back: indexes into dense arrays, reused first.
local Slots = {}
Slots.__index = Slots

local M = {}

function M.new()
  return setmetatable({ free = {}, nfree = 0, next = 1 }, Slots)
end

-- take() -> a slot no one holds: the last given back, else a new one
function Slots:take()
  local n = self.nfree
  if n > 0 then
    local k = self.free[n]
    self.free[n] = nil
    self.nfree = n - 1
    return k
  end
  local k = self.next
  self.next = k + 1
  return k
end

function Slots:give(k)
  local n = self.nfree + 1
  self.nfree = n
  self.free[n] = k
end

return M
