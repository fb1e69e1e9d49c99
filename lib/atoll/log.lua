-- Logging for actors and apps: leveled lines on stderr, tagged with the running actor.
local host = require "atoll.c.host"
local runtime = require "atoll.runtime"

local M = {}

local LEVELS = { debug = 0, info = 1, warn = 2, error = 3, off = 4 }
local threshold = LEVELS[host.log_level()]

-- level([name]) -> the current level, after setting it if given
function M.level(name)
  if name ~= nil then
    if LEVELS[name] == nil then error("log level must be debug, info, warn, error or off", 2) end
    host.log_level(name)
    threshold = LEVELS[name]
  end
  return host.log_level()
end

local function emit(level, fmt, ...)
  if LEVELS[level] < threshold then return end
  local msg
  if select("#", ...) > 0 then
    msg = string.format(fmt, ...)
  else
    msg = tostring(fmt)
  end
  local rec = runtime.current()
  host.log(level, rec and runtime.actor_label(rec) or "app", msg)
end

-- debug/info/warn/error(format, ...): string.format-style
function M.debug(fmt, ...) emit("debug", fmt, ...) end
function M.info(fmt, ...) emit("info", fmt, ...) end
function M.warn(fmt, ...) emit("warn", fmt, ...) end
function M.error(fmt, ...) emit("error", fmt, ...) end

function M.enabled(level)
  return LEVELS[level] ~= nil and LEVELS[level] >= threshold
end

return M
