-- Child processes for actor code: start one, read its output line by line, wait, signal.
--
--   local process = require "atoll.process"
--   local p = process.spawn{ "build/atoll", "run", "app.lua", env = {...} }
--   local line = p:expect("listening on (%S+)", 5)   -- suspends until it prints that
--   p:kill("SIGTERM"); local code = p:wait(5)
local host = require "atoll.c.host"
local subprocess = require "atoll.c.subprocess"
local runtime = require "atoll.runtime"

local M = {}

local Process = {}
Process.__index = Process

local live = setmetatable({}, { __mode = "k" })

-- Complete lines wait in lines[head..tail]; buf holds a partial last line.
local function stream()
  return { buf = "", lines = {}, head = 1, tail = 0, eof = false, all = {} }
end

local function push_line(s, line)
  s.tail = s.tail + 1
  s.lines[s.tail] = line
end

-- Splits what arrived into complete lines; keeps the rest for later.
local function feed(s, data)
  if data == nil then
    s.eof = true
    if s.buf ~= "" then
      push_line(s, s.buf)
      s.buf = ""
    end
    return
  end
  s.all[#s.all + 1] = data
  local buf = s.buf .. data
  local start = 1
  while true do
    local i = buf:find("\n", start, true)
    if i == nil then break end
    push_line(s, buf:sub(start, i - 1))
    start = i + 1
  end
  s.buf = buf:sub(start)
end

-- Every task waiting on the process (for a line on either stream, or its exit) looks again.
local function wake(p)
  for w in pairs(p.waiters) do w:wake(true) end
end

-- spawn{ file, args..., env = { K = V } or { "K=V" }, cwd = dir, inherit_env = true }
-- -> process | nil, message. The command is the array part: file first.
function M.spawn(opts)
  if type(opts) ~= "table" or type(opts[1]) ~= "string" then
    error("process.spawn needs { file, args... }", 2)
  end
  local args = {}
  for i = 2, #opts do args[#args + 1] = tostring(opts[i]) end
  local env = nil
  if opts.env then
    env = {}
    local seen = {}
    for k, v in pairs(opts.env) do
      if type(k) == "number" then
        env[#env + 1] = v
        seen[v:match("^([^=]*)")] = true
      else
        env[#env + 1] = k .. "=" .. tostring(v)
        seen[k] = true
      end
    end
    if opts.inherit_env ~= false then
      -- Start from this process's environment, overridden by opts.env.
      local f = io.open("/proc/self/environ", "rb")
      if f then
        for kv in f:read("*a"):gmatch("([^%z]+)") do
          local k = kv:match("^([^=]*)")
          if not seen[k] then env[#env + 1] = kv end
        end
        f:close()
      end
    end
  end
  local p = setmetatable({
    out = stream(), err = stream(), waiters = {},
    exited = false, code = nil, signal = nil, command = table.concat(opts, " "),
  }, Process)
  local handle, err = subprocess.spawn {
    file = opts[1], args = args, env = env, cwd = opts.cwd,
    on_stdout = runtime.callback(function(data)
      feed(p.out, data)
      if opts.echo and data then io.stderr:write(data) end
      wake(p)
    end),
    on_stderr = runtime.callback(function(data)
      feed(p.err, data)
      if opts.echo and data then io.stderr:write(data) end
      wake(p)
    end),
    on_exit = runtime.callback(function(code, signal)
      p.exited, p.code, p.signal = true, code, signal
      wake(p)
    end),
  }
  if handle == nil then return nil, err end
  p.handle = handle
  live[p] = true
  return p
end

-- Suspends until cond(p) holds or the deadline passes; true if it held.
local function wait_until(p, seconds, cond)
  local deadline = seconds and (host.hrtime() / 1e9 + seconds)
  while not cond(p) do
    local left = deadline and (deadline - host.hrtime() / 1e9)
    if left and left <= 0 then return false end
    local w = runtime.waiter()
    p.waiters[w] = true
    local ok = w:wait(left)
    p.waiters[w] = nil
    if not ok and deadline and host.hrtime() / 1e9 >= deadline then return cond(p) end
  end
  return true
end

local function next_line(s)
  if s.head <= s.tail then
    local line = s.lines[s.head]
    s.lines[s.head] = nil
    s.head = s.head + 1
    return line
  end
  return nil
end

local function has_line(s)
  return s.head <= s.tail
end

-- read_line([seconds [, "stderr"]]) -> line | nil, "eof" | "timeout"
function Process:read_line(seconds, which)
  local s = which == "stderr" and self.err or self.out
  if not wait_until(self, seconds, function() return has_line(s) or s.eof end) then
    return nil, "timeout"
  end
  local line = next_line(s)
  if line == nil then return nil, "eof" end
  return line
end

-- expect(pattern, [seconds [, "stderr"]]) -> the first line matching the Lua
-- pattern, and its captures. Lines before it are consumed. Raises, with what
-- the process printed, if the stream ends or the time runs out first.
function Process:expect(pattern, seconds, which)
  local deadline = host.hrtime() / 1e9 + (seconds or 5)
  while true do
    local line, why = self:read_line(math.max(0, deadline - host.hrtime() / 1e9), which)
    if line == nil then
      error(("expected a line matching %q on %s of `%s`, got %s\n--- stdout:\n%s\n--- stderr:\n%s")
        :format(pattern, which or "stdout", self.command, why == "eof" and "end of output" or "nothing in time",
          self:stdout(), self:stderr()), 2)
    end
    local caps = { line:match(pattern) }
    if #caps > 0 then return line, unpack(caps) end
  end
end

-- wait([seconds]) -> exit code, signal | nil, "timeout"
function Process:wait(seconds)
  if not wait_until(self, seconds, function(p) return p.exited end) then return nil, "timeout" end
  -- Output can trail the exit notification; collect what the pipes still hold.
  wait_until(self, 1, function(p) return p.out.eof and p.err.eof end)
  return self.code, self.signal
end

-- kill([signal]) -> true | nil, message   ("SIGTERM" by default)
function Process:kill(signal)
  if self.exited then return nil, "the process has exited" end
  return self.handle:kill(signal or "SIGTERM")
end

function Process:write(data)
  return self.handle:write(data)
end

function Process:close_stdin()
  self.handle:close_stdin()
end

function Process:pid()
  return self.handle:pid()
end

-- stdout() / stderr() -> everything the process wrote there so far
function Process:stdout()
  return table.concat(self.out.all)
end

function Process:stderr()
  return table.concat(self.err.all)
end

-- close(): kills the process if still running and releases its handles.
function Process:close()
  if not self.exited then self.handle:kill("SIGKILL") end
  self.handle:close()
  live[self] = nil
end

-- kill_all(): SIGKILL every process started here that still runs.
function M.kill_all()
  for p in pairs(live) do
    if not p.exited then p.handle:kill("SIGKILL") end
  end
end

return M
