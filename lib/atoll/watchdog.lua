-- The watchdog's Lua side: its settings, the error an interrupted handler raises, and the memory report.
--
-- The watchdog itself is C (host/watchdog.c): a thread that notices a
-- handler keeping the loop blocked, and a ceiling on the Lua heap. This
-- module parses `--watchdog` and `--max-heap`, gives the thread the error it
-- raises in a stuck handler (kind `interrupted`), and says which actors hold
-- the most memory when the heap meets its ceiling.
local host = require "atoll.c.host"
local errors = require "atoll.util.errors"
local runtime = require "atoll.runtime"

local M = {}

M.DEFAULTS = { warn = 1, interrupt = 5, exit = 30 }
local MIB = 1024 * 1024

-- The memory this process may use: the machine's, or its control group's
-- limit when that is lower (a container's, cgroup v2 or v1).
local function memory_available()
  local total = select(4, host.heap())
  local own = io.open("/proc/self/cgroup", "rb")
  local path = own and own:read("*a"):match("0::(%S+)") or nil
  if own then own:close() end
  for _, file in ipairs { path and ("/sys/fs/cgroup" .. path .. "/memory.max") or false,
                          "/sys/fs/cgroup/memory.max",
                          "/sys/fs/cgroup/memory/memory.limit_in_bytes" } do
    local f = file and io.open(file, "rb")
    if f then
      local limit = tonumber(f:read("*l") or "")
      f:close()
      if limit and limit > 0 and limit < total then total = limit end
    end
  end
  return total
end

-- The default ceiling: a quarter of the memory available (at least 256
-- MiB), so that a runaway actor fails before the machine (or container)
-- swaps or the OOM killer picks a process, while several nodes fit.
function M.default_max_heap()
  return math.max(256 * MIB, math.floor(memory_available() / 4 / MIB) * MIB)
end

-- parse(spec) -> { warn, interrupt, exit } | nil, message. spec is
-- "KEY=SECONDS[,KEY=SECONDS...]" with keys warn, interrupt and exit; 0 turns
-- one off.
function M.parse(spec)
  local cfg = {}
  for k, v in pairs(M.DEFAULTS) do cfg[k] = v end
  for item in tostring(spec):gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*=%s*(%S+)%s*$")
    local n = tonumber(v)
    if k == nil or n == nil or n < 0 or n ~= n or n == math.huge then
      return nil, "--watchdog wants KEY=SECONDS pairs (0 turns one off), got '" .. item .. "'"
    end
    if M.DEFAULTS[k] == nil then
      return nil, "unknown watchdog setting '" .. k .. "' (known: exit, interrupt, warn)"
    end
    cfg[k] = n
  end
  return cfg
end

-- parse_size("512M") -> bytes | nil, message (suffixes K, M, G; 0: no ceiling)
function M.parse_size(s, flag)
  local n, unit = tostring(s):match("^%s*(%d+%.?%d*)%s*([kKmMgG]?)[iI]?[bB]?%s*$")
  n = tonumber(n)
  if n == nil then
    return nil, ("%s wants a size such as 512M or 2G (0: none), got '%s'"):format(flag, tostring(s))
  end
  local scale = ({ k = 1024, m = MIB, g = 1024 * MIB })[unit:lower()] or 1
  local bytes = math.floor(n * scale)
  if bytes ~= 0 and bytes < 16 * MIB then
    return nil, ("%s must be at least 16M (or 0 for none), got '%s'"):format(flag, tostring(s))
  end
  return bytes
end

-- Rough bytes held by a value: tables and strings reachable from it, each
-- counted once (`seen`), within a budget of visits shared by all actors.
local function weigh(root, seen, budget)
  local bytes, stack, n = 0, { root }, 1
  while n > 0 and budget.left > 0 do
    local v = stack[n]
    stack[n] = nil
    n = n - 1
    local t = type(v)
    if t == "string" then
      if not seen[v] then
        seen[v] = true
        bytes = bytes + 24 + #v
      end
    elseif t == "table" and not seen[v] then
      seen[v] = true
      bytes = bytes + 56
      for k, x in next, v do
        budget.left = budget.left - 1
        bytes = bytes + 24
        if type(k) == "table" or type(k) == "string" then
          n = n + 1
          stack[n] = k
        end
        if type(x) == "table" or type(x) == "string" then
          n = n + 1
          stack[n] = x
        end
      end
    end
  end
  return bytes
end

-- largest(n) -> { { label, bytes }... } the n actors whose state holds the
-- most, and whether the estimate was cut short.
function M.largest(count)
  local budget = { left = 1e6 }
  local seen = setmetatable({}, { __mode = "k" })
  local sizes = {}
  for _, rec in pairs(runtime.actors) do
    if budget.left <= 0 then break end
    sizes[#sizes + 1] = { runtime.actor_label(rec), weigh(rec[runtime.R_STATE], seen, budget) }
  end
  table.sort(sizes, function(a, b) return a[2] > b[2] end)
  local out = {}
  for i = 1, math.min(count, #sizes) do out[i] = sizes[i] end
  return out, budget.left <= 0
end

local function report(message)
  local parts = { message, " (what was running then may not be what holds the memory)" }
  local list, cut = M.largest(5)
  if #list > 0 then
    local items = {}
    for i, e in ipairs(list) do items[i] = ("%s ~%.1f MiB"):format(e[1], e[2] / MIB) end
    parts[#parts + 1] = "; the largest actors" .. (cut and " (estimate cut short)" or "") .. ": "
      .. table.concat(items, ", ")
  end
  host.log("warn", "memory", table.concat(parts))
end

-- start{ warn, interrupt, exit, max_heap }: starts the watchdog thread and
-- sets the heap's ceiling (nil: the default; 0: none).
function M.start(cfg)
  cfg = cfg or {}
  local ok, err = host.watchdog {
    warn = cfg.warn or M.DEFAULTS.warn, interrupt = cfg.interrupt or M.DEFAULTS.interrupt,
    exit = cfg.exit or M.DEFAULTS.exit,
    interrupt_error = function(kind, message) return errors.new(kind, message) end,
  }
  if not ok then return nil, "cannot start the watchdog: " .. tostring(err) end
  local bytes = cfg.max_heap
  if bytes == nil then bytes = M.default_max_heap() end
  host.heap_limit(bytes, report)
  return true
end

return M
