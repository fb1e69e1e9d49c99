-- Shell commands for specs, their helpers and benchmarks.
local M = {}

-- run(cmd) -> true if the command exited 0
function M.run(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

-- capture(cmd) -> what the command printed on stdout
function M.capture(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

-- quote(s) -> s as one shell word
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

return M
