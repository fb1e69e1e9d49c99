-- Discovery: how a node finds members to join through, besides static seeds (--join).
--
--   clusterd[:HOST:PORT]  a discovery daemon (`atoll clusterd`) that nodes
--                         register with; it answers with the others
--   dns:NAME[:PORT]       every address NAME resolves to, at PORT (default:
--                         this node's port): a Kubernetes headless service
--
-- Both are looked up every few seconds for as long as the node runs, so that
-- members that start later, or a cluster split and restarted, are found.
local host = require "atoll.c.host"
local runtime = require "atoll.runtime"
local membership = require "atoll.cluster.membership"

local M = {}

M.CLUSTERD_PORT = 3137
M.REGISTRY = "atoll.clusterd"
local INTERVAL = 5  -- seconds between look-ups
local TTL = 20      -- seconds clusterd keeps a node that stopped registering

local function log(level, msg)
  host.log(level, "discovery", msg)
end

local function join_address(ip, port)
  if ip:find(":", 1, true) then return "[" .. ip .. "]:" .. port end
  return ip .. ":" .. port
end

-- parse(spec, own_port) -> { kind, address | name, port } | nil, message
function M.parse(spec, own_port)
  if spec == "clusterd" then
    return { kind = "clusterd", address = "127.0.0.1:" .. M.CLUSTERD_PORT }
  end
  local rest = spec:match("^clusterd:(.+)$")
  if rest then
    local h, p = rest:match("^%[?([^%]]*)%]?:(%d+)$")
    if h == nil or h == "" or tonumber(p) < 1 or tonumber(p) > 65535 then
      return nil, "--discovery clusterd:HOST:PORT, got " .. spec
    end
    return { kind = "clusterd", address = rest }
  end
  rest = spec:match("^dns:(.+)$")
  if rest then
    local name, p = rest:match("^([^:]+):(%d+)$")
    if name == nil then
      name, p = rest, own_port -- may be nil until the node listens
    else
      p = tonumber(p)
      if p < 1 or p > 65535 then return nil, "--discovery dns:NAME[:PORT], got " .. spec end
    end
    if name:find(":", 1, true) then return nil, "--discovery dns:NAME[:PORT], got " .. spec end
    return { kind = "dns", name = name, port = p }
  end
  return nil, "--discovery wants clusterd[:HOST:PORT] or dns:NAME[:PORT], got " .. spec
end

-- resolve(name) -> { ip... } | nil, message (suspends the calling actor)
function M.resolve(name)
  local w = runtime.waiter()
  host.resolve(name, runtime.callback(function(list, err)
    w:wake({ list, err })
  end))
  local ok, r = w:wait(30)
  if not ok then return nil, "the lookup of " .. name .. " timed out" end
  return r[1], r[2]
end

local REOFFER = 60   -- seconds before an address that was joined through is tried again
local offered = {}  -- address -> when it was last joined through

-- Joins through the candidates that are not alive members already. A
-- candidate that is not a member under that address (members may advertise
-- host names while discovery finds IP addresses) is tried again only now
-- and then.
local function offer(candidates, self_address)
  local fresh, others = {}, 0
  local now = runtime.now_ms() / 1000
  for _, a in ipairs(candidates) do
    if a ~= self_address then
      others = others + 1
      local status = membership.status(a)
      if (status == nil or status == "down") and now - (offered[a] or -math.huge) >= REOFFER then
        fresh[#fresh + 1] = a
        offered[a] = now
      end
    end
  end
  -- Nobody else found: this node starts the cluster (join with no seeds).
  if #fresh > 0 or others == 0 then membership.join(fresh) end
end

local function look_up(d, self)
  if d.kind == "dns" then
    local ips, err = M.resolve(d.name)
    if ips == nil then return nil, err end
    local out = {}
    for _, ip in ipairs(ips) do out[#out + 1] = join_address(ip, d.port) end
    return out
  end
  local cluster = require "atoll.cluster"
  local ok, list = pcall(cluster.call_name, d.address, M.REGISTRY, "register", 3,
    { address = self.address, name = self.name, incarnation = self.incarnation, ttl = TTL })
  if not ok then return nil, tostring(list) end
  if type(list) ~= "table" then return nil, "clusterd answered with a " .. type(list) end
  return list
end

local running = {}

-- start(specs, self): looks each spec up now and every INTERVAL seconds.
function M.start(specs, self)
  for _, d in ipairs(specs) do
    local label = d.kind == "dns" and ("dns:" .. d.name) or ("clusterd at " .. d.address)
    local failing = false
    running[#running + 1] = d
    runtime.start_root(function()
      while not d.stopped do
        local list, err = look_up(d, self)
        if list then
          if failing then log("info", label .. " answers again") end
          failing = false
          offer(list, self.address)
        elseif not failing then
          failing = true
          log("warn", label .. ": " .. tostring(err) .. " (trying again every " .. INTERVAL .. " s)")
        end
        if d.stopped then break end
        runtime.sleep(INTERVAL)
      end
    end, nil, "discovery")
  end
end

-- stop(): no more look-ups; clusterd forgets this node at once.
function M.stop(self)
  for _, d in ipairs(running) do
    d.stopped = true
    if d.kind == "clusterd" then
      pcall(require("atoll.cluster").send_name, d.address, M.REGISTRY, "deregister", self.address)
    end
  end
  running = {}
end

return M
