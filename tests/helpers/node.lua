-- Runs real atoll processes for functional specs: start, read output with deadlines, stop.
local host = require "atoll.c.host"
local process = require "atoll.process"

local M = {}

-- The binary under test: the one running these specs (tests/run sets it).
M.bin = os.getenv("ATOLL_BIN") or host.exepath()

local function env(extra)
  local e = {}
  if os.getenv("ATOLL_SANITIZED") then
    -- Nodes shut down cleanly, so leaks in them are real.
    e.ASAN_OPTIONS = "detect_leaks=1:abort_on_error=0:exitcode=66"
  end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- start(args [, opts]) -> process running `atoll args...`
-- opts.env: extra environment; opts.cwd: working directory
function M.start(args, opts)
  opts = opts or {}
  local cmd = { M.bin }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  cmd.env = env(opts.env)
  cmd.cwd = opts.cwd
  local p = assert(process.spawn(cmd))
  return p
end

-- start_command(cmd [, opts]) -> process running cmd (an array, file first),
-- with the same environment handling as start.
function M.start_command(cmd, opts)
  opts = opts or {}
  local c = {}
  for i, a in ipairs(cmd) do c[i] = a end
  c.env = env(opts.env)
  c.cwd = opts.cwd
  return assert(process.spawn(c))
end

-- exec(args [, opts]) -> exit code, stdout, stderr, signal. Raises if the
-- process does not exit within opts.timeout seconds (default 10).
function M.exec(args, opts)
  opts = opts or {}
  local p = M.start(args, opts)
  if opts.stdin then
    p:write(opts.stdin)
    p:close_stdin()
  end
  local code, signal = p:wait(opts.timeout or 10)
  if code == nil then
    p:close()
    error("atoll " .. table.concat(args, " ") .. " did not exit in time\n--- stderr:\n" .. p:stderr(), 2)
  end
  return code, p:stdout(), p:stderr(), signal
end

-- Stops a process and returns its exit code, raising with its output if it
-- does not exit within `seconds`.
function M.stop(p, signal, seconds)
  p:kill(signal or "SIGTERM")
  local code, sig = p:wait(seconds or 10)
  if code == nil then
    p:close()
    error("the process did not stop in time\n--- stderr:\n" .. p:stderr(), 2)
  end
  return code, sig
end

-- Asserts a node's stderr shows a clean shutdown: nothing left open, no
-- sanitizer report.
function M.assert_clean(p)
  local err = p:stderr()
  assert(not err:find("handle still open", 1, true), "a handle was left open:\n" .. err)
  assert(not err:find("Sanitizer", 1, true), "sanitizer report:\n" .. err)
end

function M.cleanup()
  process.kill_all()
end

return M
