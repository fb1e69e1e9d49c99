-- The command line's flag values, checked in one place before anything starts: a bad one is a usage error.
--
-- host/main.c knows which flags a command takes; this module knows what
-- their values must be. check(opts) runs every validator for the flags
-- present, replaces each value by its parsed form where there is one (lists,
-- numbers, settings), and returns nil, or the first problem as a message for
-- exit code 2.
local M = {}

local function split_list(s)
  local out = {}
  for item in (s or ""):gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end
M.split_list = split_list

local function ip_literal(h)
  if h:match("^%d+%.%d+%.%d+%.%d+$") then
    for octet in h:gmatch("%d+") do
      if tonumber(octet) > 255 then return false end
    end
    return true
  end
  return h:find(":", 1, true) ~= nil and h:match("^[%x:%.]+$") ~= nil -- IPv6
end

-- HOST:PORT, or [IPv6]:PORT; port 0 only where `any_port` allows it; an IP
-- address, not a name, where the flag binds a socket (`bind`).
local function address(flag, any_port, bind)
  return function(v)
    local h, port = tostring(v):match("^%[?([^%]]*)%]?:(%d+)$")
    port = tonumber(port)
    if h == nil or h == "" or port == nil or port > 65535 or (port == 0 and not any_port) then
      local range = ("a port from %d to 65535"):format(any_port and 0 or 1)
      if flag == "--http" then
        return nil, ("bad HTTP address '%s' (want HOST:PORT, with %s)"):format(tostring(v), range)
      end
      return nil, ("%s must be HOST:PORT with %s, got '%s'"):format(flag, range, tostring(v))
    end
    if bind and not ip_literal(h) then
      return nil, ("%s binds a socket: give an IP address (such as 127.0.0.1, 0.0.0.0 or ::), "
        .. "not the name '%s'"):format(flag, h)
    end
    return v
  end
end
M.address = address

local function list_of(check)
  return function(v)
    local out = {}
    for _, item in ipairs(split_list(v)) do
      local ok, err = check(item)
      if ok == nil then return nil, err end
      out[#out + 1] = ok
    end
    return out
  end
end

local function bytes(flag, min, max)
  return function(v)
    local n = tonumber(v)
    if n == nil or n < min or n > max or n ~= math.floor(n) then
      return nil, ("%s needs a whole number of bytes from %d to %d, got '%s'"):format(flag, min, max, v)
    end
    return n
  end
end

local function seconds(flag)
  return function(v)
    local n = tonumber(v)
    if n == nil or n ~= n or n <= 0 or n == math.huge then
      return nil, ("%s needs a number of seconds above 0, got '%s'"):format(flag, v)
    end
    return n
  end
end

local function whole(flag)
  return function(v)
    local n = tonumber(v)
    if n == nil or n < 0 or n ~= math.floor(n) then
      return nil, ("%s takes a whole number, 0 or more, got '%s'"):format(flag, v)
    end
    return n
  end
end

local function text(flag, max)
  return function(v)
    if v == "" or #v > max or v:find("[%c]") then
      return nil, ("%s must be 1 to %d printable characters, got '%s'"):format(flag, max, v)
    end
    return v
  end
end

-- --journal: memory, sqlite, sqlite:PATH or a PostgreSQL URI.
local function journal(v)
  if v == "memory" or v == "sqlite" or v:match("^sqlite:.") or v:match("^postgres://")
    or v:match("^postgresql://") then
    return v
  end
  return nil, ("unknown journal '%s': use sqlite (the default), sqlite:PATH, memory, or "
    .. "postgres://USER:PASSWORD@HOST:PORT/DB"):format(v)
end

-- Membership settings that count things, not seconds: whole numbers.
local COUNTS = { indirect_probes = true, confirmations = true, gossip_fanout = true, max_lhm = true }

-- --membership KEY=VALUE,... -> settings
local function membership(v)
  local swim = require "atoll.c.swim"
  local known = swim.config()
  local cfg = {}
  for item in v:gmatch("[^,]+") do
    local k, val = item:match("^%s*([%w_]+)%s*=%s*(%S+)%s*$")
    if k == nil or tonumber(val) == nil then
      return nil, "--membership wants KEY=NUMBER pairs, got '" .. item .. "'"
    end
    if known[k] == nil then
      local keys = {}
      for name in pairs(known) do keys[#keys + 1] = name end
      table.sort(keys)
      return nil, "unknown membership setting '" .. k .. "' (known: " .. table.concat(keys, ", ") .. ")"
    end
    cfg[k] = tonumber(val)
    if COUNTS[k] and cfg[k] ~= math.floor(cfg[k]) then
      return nil, ("--membership: %s counts, so it takes a whole number, got %s"):format(k, val)
    end
  end
  local ok, err = pcall(swim.config, cfg)
  if not ok then return nil, "--membership: " .. tostring(err):gsub("^.-: ", "") end
  return cfg
end

local function discovery(v)
  return require("atoll.cluster.discovery").parse(v, nil)
end

-- --http-static [PREFIX=]DIR, repeatable: { { prefix, dir } ... }
local function http_static(v)
  local out = {}
  for _, spec in ipairs(split_list(v)) do
    local prefix, dir = spec:match("^(/[^=]*)=(.+)$")
    prefix, dir = prefix or "/", dir or spec
    local f = io.open(dir .. "/.", "rb")
    if f == nil then return nil, ("--http-static: %s is not a directory that can be read"):format(dir) end
    f:close()
    out[#out + 1] = { prefix, dir }
  end
  return out
end

local function readable(flag)
  return function(v)
    local f, err = io.open(v, "rb")
    if f == nil then return nil, ("%s: cannot read %s"):format(flag, err) end
    local _, rerr = f:read(0) -- a directory opens, and then cannot be read
    f:close()
    if rerr then return nil, ("%s: cannot read %s: %s"):format(flag, v, rerr) end
    return v
  end
end

local function downing(v)
  return require("atoll.cluster.downing").parse(v)
end

local function when_downed(v)
  if v == "restart" or v == "exit" then return v end
  return nil, ("--when-downed takes restart or exit, got '%s'"):format(v)
end

local function watchdog(v)
  return require("atoll.watchdog").parse(v)
end

local function max_heap(v)
  return require("atoll.watchdog").parse_size(v, "--max-heap")
end

-- Options-table field -> its check, in the order problems are reported.
local checks = {
  { "name", text("--name", 63) },
  { "cluster", text("--cluster", 63) },
  { "secret_file", readable("--secret-file") },
  { "listen", address("--listen", true, true) },
  { "advertise", address("--advertise", false) },
  { "node", address("--node", false) },
  { "http", address("--http", true, true) },
  { "http_static", http_static },
  { "max_frame", bytes("--max-frame", 64, 1073741824) },
  { "max_queue", bytes("--max-queue", 64, 1073741824) },
  { "join", list_of(address("--join", false)) },
  { "discovery", list_of(discovery) },
  { "membership", membership },
  { "journal", journal },
  { "data_dir", text("--data-dir", 4096) },
  { "downing", downing },
  { "stable_after", seconds("--stable-after") },
  { "when_downed", when_downed },
  { "watchdog", watchdog },
  { "max_heap", max_heap },
  { "timeout", seconds("--timeout") },
  { "from", whole("--from") },
  { "limit", whole("--limit") },
}

-- check(opts) -> nil | message. On success, opts holds parsed values:
-- join and discovery as lists, membership and watchdog as settings tables,
-- sizes and numbers as numbers, http_static as { { prefix, dir } }.
function M.check(opts)
  for _, c in ipairs(checks) do
    local field, check = c[1], c[2]
    local v = opts[field]
    if v ~= nil then
      if type(v) ~= "string" then return ("--%s needs a value"):format(field:gsub("_", "-")) end
      local parsed, err = check(v)
      if parsed == nil then return err end
      opts[field] = parsed
    end
  end
  return nil
end

return M
