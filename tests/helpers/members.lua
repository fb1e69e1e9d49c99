-- Member nodes for membership specs, and their views of the cluster, followed through the events
-- they print (tests/functional/apps/member.lua).
local atoll = require "atoll"
local nodes = require "helpers.cluster"

local M = {}

M.app = "tests/functional/apps/member.lua"

local View = {}
View.__index = View

-- start(name [, extra args [, opts]]) -> view of a new member node:
-- view.p (process), view.address, view.members (address -> last event),
-- view.events (all member events), view.terminated (watches that ended)
function M.start(name, extra, opts)
  opts = opts or {}
  opts.app = opts.app or M.app
  local p, address = nodes.start(name, extra, opts)
  return setmetatable({ p = p, address = address, name = name, members = {}, events = {},
                        terminated = {}, lines = {}, seen = 0 }, View)
end

-- wrap(p, address, name) -> a view of a member process started otherwise
-- (it must run the member app); waits for it to be ready.
function M.wrap(p, address, name)
  p:expect("^ready$", 10)
  return setmetatable({ p = p, address = address, name = name, members = {}, events = {},
                        terminated = {}, lines = {}, seen = 0 }, View)
end

-- Takes one line the node printed, waiting up to `seconds` for it; false
-- if none came.
function View:pump(seconds)
  local line, why = self.p:read_line(seconds)
  if line == nil then
    if why == "eof" then
      error(("%s stopped printing (it exited?)\n--- stderr:\n%s"):format(self.name, self.p:stderr()), 0)
    end
    return false
  end
  local addr, status, inc, suspect, previous, t =
    line:match("^member (%S+) (%S+) (%x+) ([01]) (%S+) ([%d%.]+)$")
  if addr then
    local e = { address = addr, status = status, incarnation = inc, suspect = suspect == "1",
                previous = previous, at = tonumber(t) }
    self.events[#self.events + 1] = e
    if status == "removed" then self.members[addr] = nil else self.members[addr] = e end
    return true
  end
  local ref, reason, at = line:match("^terminated (%S+) (.-) ([%d%.]+)$")
  if ref then
    self.terminated[#self.terminated + 1] = { ref = ref, reason = reason, at = tonumber(at) }
  else
    if self.other then self:other(line) end -- a line of another kind, for the spec that set view.other
    self.lines[#self.lines + 1] = line -- and kept, for View:line
  end
  return true
end

-- line(pattern, seconds) -> the captures of the next line the app printed (other than member
-- and watch events) that matches pattern, reading on for up to `seconds`; nil if none came.
-- Lines before it are passed over.
function View:line(pattern, seconds)
  local deadline = atoll.now() + (seconds or 10)
  while true do
    while self.seen < #self.lines do
      self.seen = self.seen + 1
      local caps = { self.lines[self.seen]:match(pattern) }
      if #caps > 0 then return unpack(caps) end
    end
    local left = deadline - atoll.now()
    if left <= 0 then return nil end
    self:pump(left)
  end
end

function View:describe()
  local lines = {}
  for _, e in ipairs(self.events) do
    lines[#lines + 1] = ("  %.3f %s %s%s (was %s)"):format(e.at, e.address, e.status,
      e.suspect and " suspect" or "", e.previous)
  end
  return table.concat(lines, "\n")
end

-- await(cond, seconds, what): reads the node's events until cond(view)
-- holds; raises, with everything it saw, once `seconds` have passed.
function View:await(cond, seconds, what)
  local deadline = atoll.now() + require("helpers.wait").seconds(seconds or 10)
  while not cond(self) do
    local left = deadline - atoll.now()
    if left <= 0 then
      error(("%s (%s) did not see %s within %g s; its events:\n%s\n--- stderr:\n%s"):format(
        self.name, self.address, what or "what was awaited", seconds or 10, self:describe(),
        self.p:stderr()), 0)
    end
    self:pump(left)
  end
end

-- status(address) -> the status this node last saw for address (nil: not a member)
function View:status(address)
  local e = self.members[address]
  return e and e.status, e
end

-- The first event about address with that status, if seen.
function View:first(address, status)
  for _, e in ipairs(self.events) do
    if e.address == address and e.status == status then return e end
  end
end

-- await_all(views, cond, seconds, what): every view, against one deadline.
function M.await_all(views, cond, seconds, what)
  local deadline = atoll.now() + require("helpers.wait").seconds(seconds or 10)
  for _, v in ipairs(views) do
    v:await(cond, math.max(0.001, deadline - atoll.now()), what)
  end
end

-- A condition: the view sees each of these addresses with that status.
function M.seeing(addresses, status)
  return function(v)
    for _, a in ipairs(addresses) do
      if v:status(a) ~= status then return false end
    end
    return true
  end
end

-- others(views, except) -> the views but `except`
function M.others(views, except)
  local out = {}
  for _, v in ipairs(views) do
    if v ~= except then out[#out + 1] = v end
  end
  return out
end

function M.addresses(views)
  local out = {}
  for _, v in ipairs(views) do out[#out + 1] = v.address end
  return out
end

return M
