-- Five nodes in network namespaces of their own (helpers.netns) hosting the persistent singleton
-- counter of tests/functional/apps/singles.lua and calling it steadily, and the run of cuts the
-- split-brain spec and `bench/run cluster` both make (3 | 2 with the counter's host on the side of
-- two, heal, 2 | 2 | 1, heal). Every instance prints when it starts and each call it serves on
-- the monotonic clock all processes of the machine share; `overlap` reads those lines.
--
--   local five = partition.new(net, dir)      -- net from netns.create(5), dir for the journal
--   five:scenario { checkpoint = fn(five), phase = fn(what) }
--   five:overlap()                            -- ms, the longest overlap of two instances (<= 0: none)
--
-- Everything raises with an account of each node (its singletons, its log's warnings) when an
-- awaited state does not come in time.
local atoll = require "atoll"
local json = require "atoll.util.json"
local instances = require "helpers.instances"
local node = require "helpers.node"
local nodes = require "helpers.cluster"
local wait = require "helpers.wait"

local M = {}
local Five = {}
Five.__index = Five

local PORT = 7000
local APP = "tests/functional/apps/singles.lua"

function M.new(net, dir)
  return setmetatable({ net = net, dir = dir, procs = {} }, Five)
end

function Five:address(i)
  return self.net.nodes[i].ip .. ":" .. PORT
end

function Five:start(i)
  local args = { "run", APP, "--listen", self:address(i), "--name", "sb" .. i, "--data-dir", self.dir,
    "--log-level", os.getenv("SB_LOG") or "info" }
  if i > 1 then
    args[#args + 1] = "--join"
    args[#args + 1] = self:address(1)
  end
  self.procs[i] = self.net:spawn(i, args, { env = { ATOLL_SECRET = nodes.secret, SINGLE_PERSISTENT = "1" } })
  return self.procs[i]
end

-- five:call(i, name, method [, args [, seconds]]) -> the decoded answer, or nil and the error:
-- `atoll call` through node i's namespace.
function Five:call(i, name, method, args, seconds)
  local argv = { node.bin, "call", "--node", self:address(i), "--timeout", tostring(seconds or 5), name, method }
  if args then argv[#argv + 1] = json.encode(args) end
  local code, out, err = self.net:exec(i, argv, { env = { ATOLL_SECRET = nodes.secret }, timeout = (seconds or 5) + 5 })
  if code ~= 0 then return nil, err end
  return json.decode(out)
end

-- view(i) -> { address -> status } in node i's view, or nil
function Five:view(i)
  local v = self:call(i, "atoll.node", "members")
  if v == nil then return nil end
  local out = {}
  for _, m in ipairs(v.members) do out[m.address] = m.status end
  return out
end

function Five:all_up(list, seconds, what)
  wait.retry(function()
    for _, i in ipairs(list) do
      local v = self:view(i)
      if v == nil then return false end
      for _, j in ipairs(list) do
        if v[self:address(j)] ~= "up" then return false end
      end
    end
    return true
  end, seconds, what)
end

-- What each node of `list` says of its singletons, and the singleton, downing and warning lines
-- of its log: the account a failure prints.
function Five:account(list)
  local out = {}
  local keep = os.getenv("SB_KEEP") -- a directory: every node's whole log goes there too
  if keep then
    for i, p in pairs(self.procs) do
      local f = io.open(("%s/sb%d.log"):format(keep, i), "w")
      if f then
        f:write(p:stderr(), "\n--- stdout\n", p:stdout())
        f:close()
      end
    end
  end
  for _, i in ipairs(list) do
    local info = self:call(i, "caller", "info", nil, 3)
    local lines = {}
    for line in self.procs[i]:stderr():gmatch("[^\n]+") do
      if line:find("singleton", 1, true) or line:find("downing", 1, true) or line:find("WARN", 1, true) then
        lines[#lines + 1] = line
      end
    end
    out[#out + 1] = ("--- sb%d (%s): singletons %s\n%s"):format(i, self:address(i), json.encode(info),
      table.concat(lines, "\n"):sub(-4000))
  end
  return table.concat(out, "\n")
end

-- agreed_host(list, seconds, what) -> the node where every node of `list` reaches the counter.
function Five:agreed_host(list, seconds, what)
  local host
  local ok, err = pcall(wait.retry, function()
    host = nil
    for _, i in ipairs(list) do
      local w = self:call(i, "caller", "where", nil, 3)
      if w == nil or (host and w ~= host) then return false end
      host = w
    end
    return host ~= nil
  end, seconds, what)
  if not ok then error(tostring(err) .. "\n" .. self:account(list), 2) end
  for i = 1, #self.net.nodes do
    if self:address(i) == host then return i end
  end
end

-- Every instance's interval (start to last call served), from what the nodes printed, by start.
function Five:intervals()
  local outputs = {}
  for i, p in pairs(self.procs) do outputs["sb" .. i] = p:stdout() end
  return instances.intervals(outputs)
end

-- overlap() -> ms, the longest time two instances served at once (0 when none did), and a line
-- describing the worst pair.
function Five:overlap()
  return instances.overlap(self:intervals())
end

-- The latest call any instance served.
function Five:last_served()
  local latest = 0
  for _, r in ipairs(self:intervals()) do latest = math.max(latest, r.to) end
  return latest
end

local function complement(group, n)
  local inside, out = {}, {}
  for _, i in ipairs(group) do inside[i] = true end
  for i = 1, n do
    if not inside[i] then out[#out + 1] = i end
  end
  return out
end

-- five:scenario(hooks): starts the five, then cuts and heals as the header says, raising when a
-- step does not happen in time. hooks.checkpoint(five) runs after each step where instances may
-- have overlapped (the spec asserts there, the benchmark measures); hooks.phase(what) is told
-- each step as it ends. Returns the counter's final value and its journal's history
-- (`atoll journal show` lines, decoded).
function Five:scenario(hooks)
  local checkpoint, phase = hooks.checkpoint or function() end, hooks.phase or function() end
  local all = { 1, 2, 3, 4, 5 }
  for i = 1, 5 do self:start(i) end
  for i = 1, 5 do self.procs[i]:expect("^ready$", wait.seconds(15)) end
  self:all_up(all, 20, "five members up")
  local h = self:agreed_host(all, 20, "the five to agree where the counter runs")
  phase("five up, host agreed")
  for i = 1, 5 do assert(self:call(i, "caller", "start", { 0.05, 3 })) end

  -- 3 | 2, with the counter's host on the side of two.
  local minority = { h, h % 5 + 1 }
  local majority = complement(minority, 5)
  self.net:cut { majority, minority }
  phase("cut 3 | 2")
  local h2 = self:agreed_host(majority, 30, "the majority side to run the counter")
  if h2 == minority[1] or h2 == minority[2] then error("the counter stayed on the minority side") end
  -- The majority goes on serving.
  local before = self:call(majority[1], "caller", "counter", nil, 10)
  wait.retry(function() return self:call(majority[1], "caller", "counter", nil, 10) >= before + 20 end, 15,
    "the majority side to serve calls")
  checkpoint(self)
  phase("majority served")

  -- Heal: the minority was downed, starts again as new runs, and rejoins; one view, one instance.
  self.net:heal()
  for _, i in ipairs(minority) do
    self.procs[i]:expect("the cluster downed this node", wait.seconds(20), "stderr")
  end
  self:all_up(all, 30, "five members up after the heal")
  phase("minority downed and back")
  local h3 = self:agreed_host(all, 20, "one instance after the heal")
  checkpoint(self)

  -- 2 | 2 | 1: no side has a majority; every side stops its instance.
  local a = { h3, h3 % 5 + 1 }
  local b = { (h3 + 1) % 5 + 1, (h3 + 2) % 5 + 1 }
  local c = { (h3 + 3) % 5 + 1 }
  self.net:cut { a, b, c }
  phase("cut 2 | 2 | 1")
  -- Within stable-after and a little, every side has stopped serving: the counter stops growing.
  wait.retry(function() return self:call(a[1], "caller", "counter", nil, 1) == nil end, 20,
    "the counter to stop answering on the side that ran it")
  local last = self:last_served()
  wait.retry(function()
    local now = self:last_served()
    if now == last then return true end
    last = now
    return false
  end, 5, "no instance to serve while no side has a majority")
  atoll.sleep(1) -- (still nothing served a second later)
  if self:last_served() ~= last then error("an instance served while no side had a majority") end
  phase("no side served")

  self.net:heal()
  self:all_up(all, 30, "five members up after the second heal")
  local h4 = self:agreed_host(all, 20, "one instance after the second heal")
  local n0 = self:call(h4, "caller", "counter", nil, 10)
  wait.retry(function() return self:call(h4, "caller", "counter", nil, 10) >= n0 + 20 end, 15,
    "calls served after the second heal")
  checkpoint(self)
  phase("healed, one instance serving")

  for i = 1, 5 do self:call(i, "caller", "stop", nil, 30) end
  local n = self:call(h4, "caller", "counter", nil, 10)
  local code, out = self.net:exec(1, { node.bin, "journal", "show", "singleton/counter", "--data-dir", self.dir })
  if code ~= 0 then error("atoll journal show failed: " .. tostring(out)) end
  local history = {}
  for line in out:gmatch("[^\n]+") do history[#history + 1] = json.decode(line) end
  return n, history
end

return M
