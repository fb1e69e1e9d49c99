-- A binary min-heap of (deadline, item) pairs with removal of any item: the timer queue.
local floor = math.floor

local Heap = {}
Heap.__index = Heap

local M = {}

function M.new()
  -- key[i] is the deadline of item[i]; pos[item] is its index.
  return setmetatable({ n = 0, key = {}, item = {}, pos = {} }, Heap)
end

local function swap(h, i, j)
  local key, item, pos = h.key, h.item, h.pos
  key[i], key[j] = key[j], key[i]
  item[i], item[j] = item[j], item[i]
  pos[item[i]] = i
  pos[item[j]] = j
end

local function up(h, i)
  local key = h.key
  while i > 1 do
    local p = floor(i / 2)
    if key[p] <= key[i] then break end
    swap(h, i, p)
    i = p
  end
end

local function down(h, i)
  local key, n = h.key, h.n
  while true do
    local l = i * 2
    if l > n then break end
    local m = l
    if l + 1 <= n and key[l + 1] < key[l] then m = l + 1 end
    if key[i] <= key[m] then break end
    swap(h, i, m)
    i = m
  end
end

-- push(deadline, item): item must not be in the heap already
function Heap:push(deadline, item)
  local n = self.n + 1
  self.n = n
  self.key[n] = deadline
  self.item[n] = item
  self.pos[item] = n
  up(self, n)
end

-- remove(item) -> true if it was in the heap
function Heap:remove(item)
  local i = self.pos[item]
  if i == nil then return false end
  local n = self.n
  self.pos[item] = nil
  if i ~= n then
    self.key[i] = self.key[n]
    self.item[i] = self.item[n]
    self.pos[self.item[i]] = i
  end
  self.key[n] = nil
  self.item[n] = nil
  self.n = n - 1
  if i < n then
    down(self, i)
    up(self, i)
  end
  return true
end

-- peek() -> deadline, item of the earliest entry, or nil
function Heap:peek()
  if self.n == 0 then return nil end
  return self.key[1], self.item[1]
end

-- pop() -> deadline, item of the earliest entry, removed, or nil
function Heap:pop()
  if self.n == 0 then return nil end
  local d, item = self.key[1], self.item[1]
  self:remove(item)
  return d, item
end

function Heap:size()
  return self.n
end

function Heap:contains(item)
  return self.pos[item] ~= nil
end

return M
