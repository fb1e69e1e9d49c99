-- The ref of a virtual actor: its name (type, id), valid on every node, carried by the codec.
--
-- A virtual ref names no process, so it holds on every node and across restarts, and events and
-- snapshots may keep one. The codec carries it as ext type 2 (host/codec.h): the type name and
-- the id only; the deps and timeout a get may add stay where the get was made. Its metatable
-- lives here, apart from atoll.cluster.virtual, so that atoll can hand it to the codec at start
-- without loading the virtual actors' machinery (and without a require cycle): a ref decoded
-- from a message, an event or a snapshot is whole even where nothing has used virtual actors yet,
-- and its first call loads atoll.cluster.virtual, which routes it.
local runtime = require "atoll.runtime"
local codec = require "atoll.c.codec"

local M = {}

local Ref = {}
M.Ref = Ref

local routed = false -- atoll.cluster.virtual is loaded (it registers the route of Refs)

-- here(ref) -> the plain ref of the id's activation on this node when a call may go straight to
-- it, or nil (atoll.cluster.virtual puts its own in place)
function M.here() return nil end

Ref.__index = runtime.method_table(function(method)
  return function(self, ...)
    if getmetatable(self) ~= Ref then
      error("call a distributed function with a colon: virtual:" .. method .. "(...)", 2)
    end
    if not routed then
      require "atoll.cluster.virtual"
      routed = true
    end
    -- (an id active on this node is called through its activation's plain ref: the runtime's
    -- local path, the values passed as they are)
    return runtime.call_with(M.here(self) or self, method, rawget(self, "timeout") or runtime.default_timeout(), ...)
  end
end)

Ref.__tostring = function(r)
  return ("virtual %s %s"):format(rawget(r, "type"), tostring(rawget(r, "id")))
end

-- Two refs are equal when they name the same actor, whatever their deps and timeouts.
Ref.__eq = function(a, b)
  return rawget(a, "type") == rawget(b, "type") and rawget(a, "id") == rawget(b, "id")
end

codec.configure { virtual_ref_mt = Ref }

-- atoll.call, atoll.send and atoll.timeout take a virtual ref too before anything loaded
-- atoll.cluster.virtual: this route loads it, and it puts its own in place.
local function lazily(what)
  return function(...)
    routed = true
    local kinds = require("atoll.cluster.virtual").routes
    return kinds[what](...)
  end
end
require("atoll.cluster").route_kind(Ref, { call = lazily("call"), send = lazily("send") })

return M
