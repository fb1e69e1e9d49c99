-- The docs as specs: finds every code block of a Markdown file, with the mark that says what it is, and runs it.
--
-- Each fenced block is preceded by an HTML comment that marks it:
--
--   <!-- doc: file NAME -->   the block is a file the reader saves as NAME
--   <!-- doc: run -->         shell commands the reader runs as they are
--   <!-- doc: run retry -->   the same, each `$` command tried again until its
--                             output matches (output that converges: a cluster
--                             forming), within 20 s
--   <!-- doc: skip WHY -->    not runnable as written (a fragment, other hosts'
--                             addresses, a sample of output), and WHY says so
--
-- Lua blocks that are not files still have to compile. A `run` block whose
-- lines start with `$ ` holds commands and, after each, the output it must
-- print (`...` inside a line matches anything); otherwise every line is a
-- command that must succeed. `export K=V` sets K for the rest of the
-- document; a command ending in `&` runs in the background until the
-- document ends, and the next command waits until the ports it names
-- (--listen, --http) accept connections. Blocks run in order in one scratch
-- directory per document, where `build`, `examples` and `scripts` lead to the
-- repository's; HOME is that directory, so nothing touches the real one.
-- Every 127.0.0.1 port the document names is replaced by a free one, the same
-- one throughout, so the docs can say 7001 and the specs still bind freely.
local atoll = require "atoll"
local process = require "atoll.process"
local tcp = require "atoll.tcp"
local sh = require "helpers.shell"
local tmp = require "helpers.tmp"

local M = {}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- blocks(path) -> { { line, lang, body, mark = { kind, arg } | nil } ... }
function M.blocks(path)
  local out, lines = {}, {}
  for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    local fence, lang = lines[i]:match("^(```+)(%S*)%s*$")
    if fence then
      local start = i
      local body = {}
      i = i + 1
      while i <= #lines and lines[i] ~= fence do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      -- The mark: the nearest non-blank line above the fence.
      local j = start - 1
      while j > 0 and lines[j]:match("^%s*$") do j = j - 1 end
      local kind, arg = (lines[j] or ""):match("^<!%-%- doc: (%a+)%s*(.-)%s*%-%->$")
      out[#out + 1] = { line = start, lang = lang, body = table.concat(body, "\n"),
                        mark = kind and { kind = kind, arg = arg } or nil }
    end
    i = i + 1
  end
  return out
end

-- A run of one document: its scratch directory, environment, ports and
-- background processes.
local Doc = {}
Doc.__index = Doc

local function free_port()
  -- Bind port 0 for a moment: the kernel's choice is free now.
  local out = sh.capture([[/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  return assert(tonumber(out), "cannot find a free port")
end

function M.start(path)
  local d = setmetatable({ path = path, dir = tmp.dir("docs"), env = {}, ports = {}, background = {} }, Doc)
  local root = sh.capture("pwd"):gsub("%s+$", "")
  for _, name in ipairs { "build", "examples", "scripts" } do
    assert(sh.run(("ln -s %s %s"):format(sh.quote(root .. "/" .. name), sh.quote(d.dir .. "/" .. name))))
  end
  d.env.HOME = root .. "/" .. d.dir
  return d
end

-- The text with every 127.0.0.1 port of the document replaced by its own free one.
function Doc:ports_of(text)
  return (text:gsub("127%.0%.0%.1:(%d+)", function(port)
    if tonumber(port) < 1024 then return nil end
    local mine = self.ports[port]
    if mine == nil then
      mine = free_port()
      self.ports[port] = mine
    end
    return "127.0.0.1:" .. mine
  end))
end

function Doc:write_file(name, body)
  assert(not name:find("%.%."), "a file name with ..")
  tmp.write(self.dir .. "/" .. name, self:ports_of(body) .. "\n")
end

-- Splits a run block into { cmd, expected = { lines } | nil }.
local function commands(body)
  local out, prompt = {}, body:match("^%$ ") or body:find("\n%$ ")
  local pending = nil
  for line in (body .. "\n"):gmatch("([^\n]*)\n") do
    if pending then
      pending.cmd = pending.cmd .. "\n" .. line
      if not line:match("\\$") then pending = nil end
    elseif prompt then
      local cmd = line:match("^%$ (.*)$")
      if cmd then
        out[#out + 1] = { cmd = cmd, expected = {} }
        if cmd:match("\\$") then pending = out[#out] end
      elseif #out > 0 then
        local e = out[#out].expected
        e[#e + 1] = line
      end
    elseif not line:match("^%s*$") and not line:match("^%s*#") then
      out[#out + 1] = { cmd = line }
      if line:match("\\$") then pending = out[#out] end
    end
  end
  for _, c in ipairs(out) do
    if c.expected then
      while #c.expected > 0 and c.expected[#c.expected]:match("^%s*$") do c.expected[#c.expected] = nil end
    end
  end
  return out
end
M.commands = commands

-- Does one output line match an expected one? Runs of spaces count as one
-- (columns widen with the ports the runner picks), and `...` matches anything.
local function line_matches(e, a)
  local norm = function(x) return (x:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end
  local pattern = "^" .. norm(e):gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("%%%.%%%.%%%.", ".-") .. "$"
  return norm(a):match(pattern) ~= nil
end

-- Does the output match the expected lines? A line that is only `...`
-- stands for any number of lines.
local function matches(expected, actual)
  local lines = {}
  for line in (actual .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  local function from(i, j)
    if i > #expected then return j > #lines end
    if expected[i]:match("^%s*%.%.%.%s*$") then
      for k = j, #lines + 1 do
        if from(i + 1, k) then return true end
      end
      return false
    end
    return j <= #lines and line_matches(expected[i], lines[j]) and from(i + 1, j + 1)
  end
  return from(1, 1)
end
M.matches = matches

-- Waits until the TCP addresses a background command listens on accept.
local function wait_listening(cmd, seconds)
  local deadline = atoll.now() + seconds
  for flag, addr in cmd:gmatch("%-%-(%a+)[ =](%S+)") do
    if flag == "listen" or flag == "http" then
      local host, port = addr:match("^(.*):(%d+)$")
      if host and tonumber(port) > 0 then
        while true do
          local s = tcp.connect(host, tonumber(port), 1)
          if s then
            s:close()
            break
          end
          assert(atoll.now() < deadline, "nothing listens on " .. addr .. " after `" .. cmd .. "`")
          atoll.sleep(0.05)
        end
      end
    end
  end
end

-- Runs one command; returns its exit code, stdout and stderr.
function Doc:exec(cmd, seconds)
  local p = assert(process.spawn { "sh", "-c", cmd, cwd = self.dir, env = self.env })
  local code = p:wait(seconds or 30)
  if code == nil then
    p:close()
    error(("`%s` did not finish within %d s\n--- stderr:\n%s"):format(cmd, seconds or 30, p:stderr()), 0)
  end
  return code, p:stdout(), p:stderr()
end

-- run(block): runs a `run` block; raises with what went wrong.
function Doc:run(block)
  local retry = block.mark.arg == "retry"
  for _, c in ipairs(commands(block.body)) do
    local cmd = self:ports_of(c.cmd)
    local k, v = cmd:match("^export ([%w_]+)=(%S+)")
    if k then
      self.env[k] = v:gsub("^'(.*)'$", "%1")
    elseif cmd:match("&%s*$") or cmd:match("&%s+#.*$") then
      local bg = cmd:gsub("%s*#.*$", ""):gsub("&%s*$", "")
      local p = assert(process.spawn { "sh", "-c", "exec " .. bg, cwd = self.dir, env = self.env })
      self.background[#self.background + 1] = p
      wait_listening(bg, 15)
    else
      local deadline = atoll.now() + 20
      while true do
        local code, out, err = self:exec(cmd)
        local expected = nil
        if c.expected then
          expected = {}
          for i, e in ipairs(c.expected) do expected[i] = self:ports_of(e) end
        end
        local ok = code == 0 and (expected == nil or matches(expected, out))
        if ok then break end
        if not retry or atoll.now() > deadline then
          error(("line %d: `%s` exited with %d%s\n--- stdout:\n%s--- stderr:\n%s"):format(block.line, cmd,
            code, expected and ("\n--- expected:\n" .. table.concat(expected, "\n")) or "", out, err), 0)
        end
        atoll.sleep(0.25)
      end
    end
  end
end

-- finish(): stops what the document left running, and removes its directory.
function Doc:finish()
  for _, p in ipairs(self.background) do
    p:kill("SIGTERM")
    if p:wait(10) == nil then p:close() end
  end
  self.background = {}
  tmp.remove(self.dir)
end

return M
