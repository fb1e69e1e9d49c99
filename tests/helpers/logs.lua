-- Captures the log lines Lua code writes while fn runs, instead of printing them.
local host = require "atoll.c.host"

return function(fn, ...)
  local lines = {}
  local original = host.log
  host.log = function(level, subsystem, message)
    lines[#lines + 1] = level .. " " .. subsystem .. ": " .. message
  end
  local ok, err = pcall(fn, ...)
  host.log = original
  if not ok then error(err, 0) end
  return table.concat(lines, "\n"), lines
end
