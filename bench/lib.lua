-- What the benchmark scripts share: printing a figure, a quantile, and starting member nodes of
-- a bench app on loopback that join the first.
--   local lib = dofile "bench/lib.lua"
local process = require "atoll.process"

local M = {}

-- bench(name, value, unit [, fmt]): a BENCH line (the value as fmt says, %.2f by default)
function M.bench(name, value, unit, fmt)
  print(("BENCH %s " .. (fmt or "%.2f") .. " %s"):format(name, value, unit))
  io.stdout:flush()
end

-- quantile(sorted, q) -> the nearest-rank q-quantile of a sorted list
function M.quantile(sorted, q)
  return sorted[math.max(1, math.ceil(q * #sorted))]
end

-- member(bin, app, name, secret [, join]) -> process, address: `atoll run app` listening on
-- 127.0.0.1 (port 0), joining `join` if given, once it says it is ready
function M.member(bin, app, name, secret, join)
  local cmd = { bin, "run", app, "--listen", "127.0.0.1:0", "--name", name, env = { ATOLL_SECRET = secret } }
  if join then
    cmd[#cmd + 1] = "--join"
    cmd[#cmd + 1] = join
  end
  local p = assert(process.spawn(cmd))
  local _, address = p:expect("listening on (%S+)", 10, "stderr")
  p:expect("^ready$", 10)
  return p, address
end

return M
