-- A member for the specs of virtual refs kept across restarts (tests/functional/virtual_ref_spec.lua).
-- It hosts the persistent virtual counter VRCounter and, with VREF_BOOK=1, a book of virtual refs
-- (registered as "book"), persistent, that keeps the refs in its events and, every 3 events, in a
-- snapshot. The book is spawned and recovered before this node touches atoll.virtual, so its refs
-- decode with only what atoll installs at start; it says how they came back:
--
--   recovered COUNT FROM_SNAPSHOT VIRTUAL_LOADED(0|1) METATABLES_OK(0|1)
local atoll = require "atoll"
local VirtualRef = require("atoll.cluster.virtual_ref").Ref

atoll.default_timeout(30) -- calls may wait while the members settle after a restart

if os.getenv("VREF_BOOK") == "1" then
  local virtual_loaded, metatables_ok, from_snapshot = false, true, 0
  local function check(ref)
    if package.loaded["atoll.cluster.virtual"] ~= nil then virtual_loaded = true end
    if getmetatable(ref) ~= VirtualRef then metatables_ok = false end
  end

  local Book = atoll.actor.define("VRefBook", { persistent = true, snapshot_every = 3 })
  function Book:init() self.refs = {} end
  function Book:persistence_id() return "vref-book" end
  function Book:apply(e)
    check(e.ref)
    self.refs[#self.refs + 1] = e.ref
  end
  function Book:snapshot() return self.refs end
  function Book:restore(refs)
    for _, r in ipairs(refs) do check(r) end
    self.refs, from_snapshot = refs, #refs
  end
  function Book.distributed:keep(ref)
    self:emit { ref = ref }
    return #self.refs
  end
  function Book.distributed:refs() return self.refs end
  -- Calls add(k) on every ref kept, as it came back; returns the counts they answered.
  function Book.distributed:add_all(k)
    local out = {}
    for i, r in ipairs(self.refs) do out[i] = r:add(k) end
    return out
  end

  local book = atoll.spawn(Book)
  atoll.register("book", book)
  local refs = book:refs() -- answered once the book has recovered
  print(("recovered %d %d %d %d"):format(#refs, from_snapshot, virtual_loaded and 1 or 0, metatables_ok and 1 or 0))
end

local VRCounter = atoll.actor.define("VRCounter", { persistent = true })
function VRCounter:init() self.n = 0 end
function VRCounter:apply(e) self.n = self.n + e.k end
function VRCounter.distributed:add(k)
  self:emit { k = k }
  return self.n
end
atoll.virtual.define(VRCounter)
atoll.virtual.host(VRCounter)

require "member"
