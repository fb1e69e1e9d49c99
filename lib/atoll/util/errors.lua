-- Error objects with a kind, so callers can tell a transport failure from an application error.
local M = {}

-- The kinds an atoll call can fail with.
M.KINDS = {
  timeout = "the call got no reply within its timeout",
  unreachable = "the actor's node cannot be reached",
  no_such_actor = "the actor does not exist (it stopped, or never existed)",
  not_distributed = "the method is not a distributed function of the actor",
  bad_argument = "a value could not be encoded or decoded",
  remote = "the called function raised an error",
  conflict = "another writer holds the persistence id",
  overloaded = "a queue limit was reached",
  journal = "the journal failed: the event was not applied",
  interrupted = "the watchdog interrupted the called function: it ran too long without returning",
  memory = "the node's Lua heap reached its ceiling (--max-heap) while the called function allocated",
}

local Error = {}
Error.__index = Error
M.Error = Error

function Error.__tostring(e)
  local s = e.kind .. ": " .. tostring(e.message)
  if e.traceback then s = s .. "\n" .. e.traceback end
  return s
end

-- new(kind, message [, fields]) -> an error object
function M.new(kind, message, fields)
  local e = fields or {}
  e.kind = kind
  e.message = message
  return setmetatable(e, Error)
end

-- is(value [, kind]) -> true if value is an atoll error (of that kind)
function M.is(value, kind)
  return type(value) == "table" and getmetatable(value) == Error and (kind == nil or value.kind == kind)
end

-- kind(value) -> the kind of an atoll error, or nil for anything else
function M.kind(value)
  if type(value) == "table" and getmetatable(value) == Error then return value.kind end
  return nil
end

-- to_wire(e) -> a plain table that can cross the codec
function M.to_wire(e)
  return { kind = e.kind, message = e.message, traceback = e.traceback, value = e.value,
           actor = e.actor, method = e.method }
end

-- from_wire(t) -> an error object again
function M.from_wire(t)
  if type(t) ~= "table" or type(t.kind) ~= "string" then
    return M.new("bad_argument", "malformed error reply")
  end
  return setmetatable(t, Error)
end

return M
