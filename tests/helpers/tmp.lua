-- Scratch directories for specs, removed by the spec that made them.
local M = {}

local sh = require("helpers.shell").run

-- dir() -> a new empty directory under tests/tmp (ignored by git)
function M.dir(label)
  os.execute("mkdir -p tests/tmp")
  local p = io.popen("mktemp -d " .. "tests/tmp/" .. (label or "spec") .. ".XXXXXX")
  local path = p:read("*l")
  p:close()
  assert(path and path ~= "", "mktemp failed")
  return path
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Replaces a file the way editors do: write a temporary file, rename it over.
function M.replace(path, text)
  M.write(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.remove(dir)
  assert(dir:match("^tests/tmp/"), "refusing to remove " .. dir)
  sh("rm -rf '" .. dir .. "'")
end

return M
