-- Runs real atoll processes for functional specs: start, read output with deadlines, stop, check.
--
-- Every process a spec starts through here is stopped after the spec
-- (SIGTERM, so that it shuts down the way a node does) and checked: it must
-- have closed every handle, and no sanitizer or unprotected Lua error may
-- show in its stderr. Requiring this helper registers that with busted, as
-- neovim's test helpers do; a spec asks for nothing.
local host = require "atoll.c.host"
local process = require "atoll.process"

local wait = require "helpers.wait"

local M = {}

local started = {} -- processes started since the last cleanup

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
  started[#started + 1] = p
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
  local p = assert(process.spawn(c))
  started[#started + 1] = p
  return p
end

-- exec_command(cmd [, opts]) -> exit code, stdout, stderr, signal: runs cmd
-- (an array, file first) as start_command does and waits for it, writing
-- opts.stdin to it first. Raises if it does not exit within opts.timeout
-- seconds (default 10).
function M.exec_command(cmd, opts)
  opts = opts or {}
  local p = M.start_command(cmd, opts)
  if opts.stdin then
    p:write(opts.stdin)
    p:close_stdin()
  end
  local code, signal = p:wait(wait.seconds(opts.timeout or 10))
  if code == nil then
    p:close()
    error(("`%s` did not exit in time\n--- stderr:\n%s"):format(p.command, p:stderr()), 3)
  end
  return code, p:stdout(), p:stderr(), signal
end

-- exec(args [, opts]) -> exit code, stdout, stderr, signal of `atoll args...`,
-- as exec_command.
function M.exec(args, opts)
  local cmd = { M.bin }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return M.exec_command(cmd, opts)
end

-- Stops a process and returns its exit code, raising with its output if it
-- does not exit within `seconds`.
function M.stop(p, signal, seconds)
  p:kill(signal or "SIGTERM")
  local code, sig = p:wait(wait.seconds(seconds or 10))
  if code == nil then
    p:close()
    error("the process did not stop in time\n--- stderr:\n" .. p:stderr(), 2)
  end
  return code, sig
end

-- What in a node's stderr says it did not end cleanly: nil, or the problem.
local function unclean(err)
  if err:find("handle still open", 1, true) then return "a handle was left open" end
  if err:find("Sanitizer", 1, true) then return "a sanitizer report" end
  if err:find("unprotected error", 1, true) or err:find("PANIC", 1, true) then
    return "an unprotected Lua error"
  end
  return nil
end

-- Asserts a node's stderr shows a clean shutdown: nothing left open, no
-- sanitizer report, no unprotected error.
function M.assert_clean(p)
  local err = p:stderr()
  local problem = unclean(err)
  assert(problem == nil, (problem or "") .. ":\n" .. err)
end

-- Stops the processes of `list` that still run (a stopped one is continued
-- first), waits for each, and checks them all.
local function stop_and_check_in_actor(list)
  for _, p in ipairs(list) do
    if not p.exited then
      p:kill("SIGCONT")
      p:kill("SIGTERM")
    end
  end
  local problems = {}
  for _, p in ipairs(list) do
    if p:wait(wait.seconds(15)) == nil then
      problems[#problems + 1] = ("`%s` did not stop within 15 s of SIGTERM\n--- stderr:\n%s")
        :format(p.command, p:stderr())
      p:close()
    else
      local problem = unclean(p:stderr())
      if problem then
        problems[#problems + 1] = ("`%s`: %s\n--- stderr:\n%s"):format(p.command, problem, p:stderr())
      end
    end
  end
  assert(#problems == 0, table.concat(problems, "\n"))
end

-- stop_and_check(list): the same from anywhere (waiting needs an actor
-- context, which a spec's after_each, the main thread, does not have). Raises
-- with every problem found.
local function stop_and_check(list)
  if #list == 0 then return end
  if require("atoll.runtime").in_actor() then return stop_and_check_in_actor(list) end
  require("atoll").run(stop_and_check_in_actor, list)
end
M.stop_and_check = stop_and_check

-- Processes started before this index belong to an enclosing setup().
local mark = 0

-- cleanup(): stops and checks what the spec started (not what a setup()
-- started for a whole block: that goes at the end of the file, or when the
-- block's own teardown stops it).
function M.cleanup()
  local mine = {}
  for i = mark + 1, #started do mine[#mine + 1] = started[i] end
  for i = #started, mark + 1, -1 do started[i] = nil end
  stop_and_check(mine)
end

-- Every spec file that requires this helper gets the cleanup after each
-- spec, and what is left at the end of the file (busted's API registers
-- them in the file being loaded).
local has_busted, busted = pcall(require, "busted")
if has_busted and type(busted) == "table" and busted.after_each then
  busted.before_each(function() mark = #started end)
  busted.after_each(M.cleanup)
  busted.teardown(function()
    local all = started
    started, mark = {}, 0
    stop_and_check(all)
    process.kill_all()
  end)
end

return M
