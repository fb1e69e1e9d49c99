-- The registry `atoll clusterd` runs: nodes register (and re-register every few seconds) and hear
-- which other nodes did. Entries a node stops refreshing expire; clusterd keeps nothing on disk and
-- is not a member itself.
local actor = require "atoll.actor"
local runtime = require "atoll.runtime"
local host = require "atoll.c.host"

local Registry = actor.define "atoll.Clusterd"

Registry.NAME = "atoll.clusterd"
local MAX_TTL = 300
local MAX_NODES = 100000

local function now()
  return runtime.now_ms() / 1000
end

function Registry:init()
  self.nodes = {} -- address -> { name, incarnation, expires }
  self.count = 0
end

function Registry:prune()
  local t = now()
  for address, e in pairs(self.nodes) do
    if e.expires <= t then
      self.nodes[address] = nil
      self.count = self.count - 1
      host.log("info", "clusterd", "forgot " .. address .. " (it stopped registering)")
    end
  end
end

-- register{ address, name, incarnation, ttl } -> { address... } of the other
-- nodes registered
function Registry.distributed:register(info)
  if type(info) ~= "table" or type(info.address) ~= "string" or not info.address:match("^.+:%d+$") then
    error("register needs { address = \"HOST:PORT\", name, incarnation, ttl }")
  end
  local ttl = tonumber(info.ttl) or 20
  if ttl < 1 or ttl > MAX_TTL then error("register: ttl must be 1 to " .. MAX_TTL .. " seconds") end
  self:prune()
  local e = self.nodes[info.address]
  if e == nil then
    if self.count >= MAX_NODES then error("clusterd holds " .. MAX_NODES .. " nodes already") end
    self.count = self.count + 1
    host.log("info", "clusterd", "registered " .. info.address .. " (" .. tostring(info.name) .. ")")
  elseif e.incarnation ~= info.incarnation then
    host.log("info", "clusterd", info.address .. " registered again as a new incarnation")
  end
  self.nodes[info.address] = { name = tostring(info.name or ""), incarnation = info.incarnation,
                               expires = now() + ttl }
  local others = {}
  for address in pairs(self.nodes) do
    if address ~= info.address then others[#others + 1] = address end
  end
  table.sort(others)
  return others
end

-- deregister(address): a node that leaves says so
function Registry.distributed:deregister(address)
  if type(address) ~= "string" then return end
  if self.nodes[address] then
    self.nodes[address] = nil
    self.count = self.count - 1
    host.log("info", "clusterd", address .. " deregistered")
  end
end

-- list() -> { { address, name, incarnation, expires_in }... }
function Registry.distributed:list()
  self:prune()
  local out, t = {}, now()
  for address, e in pairs(self.nodes) do
    out[#out + 1] = { address = address, name = e.name, incarnation = e.incarnation,
                      expires_in = e.expires - t }
  end
  table.sort(out, function(a, b) return a.address < b.address end)
  return out
end

return Registry
