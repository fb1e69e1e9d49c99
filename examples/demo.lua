-- `make demo`: atoll's examples, narrated. Runs real nodes and drives them.
--
--   atoll lua examples/demo.lua [BUILD/atoll]
local atoll = require "atoll"
local host = require "atoll.c.host"
local process = require "atoll.process"

local bin = arg[1] or host.exepath()

local tty = os.execute("[ -t 1 ]") == 0
local function say(fmt, ...)
  local text = fmt:format(...)
  if tty then text = "\27[1m" .. text .. "\27[0m" end
  io.write("\n", text, "\n")
end

local function show(prefix, text)
  for line in text:gmatch("[^\n]+") do io.write("  ", prefix, " ", line, "\n") end
end

local function shell(cmd)
  local ok = os.execute(cmd)
  assert(ok == 0 or ok == true, cmd)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes through a temporary file and a rename, as editors do.
local function save(path, text)
  write(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

local function next_line(p, seconds)
  local line = assert(p:read_line(seconds or 5))
  show("|", line)
  return line
end

atoll.run(function()
  say("1. Two actors talking (examples/hello)")
  local p = assert(process.spawn { bin, "run", "examples/hello/app.lua" })
  assert(p:wait(10) == 0, p:stderr())
  show("|", p:stdout())

  say("2. Hot reload (examples/counter, run with --watch)")
  local dir = os.tmpname()
  os.remove(dir)
  shell("mkdir -p " .. dir .. " && cp examples/counter/*.lua " .. dir)
  local source = read(dir .. "/counter.lua")
  local node = assert(process.spawn { bin, "run", "--watch", dir .. "/app.lua", "0.3" })
  for _ = 1, 3 do next_line(node) end

  say("   Editing counter.lua: STEP = 10, and a new describe(). The count goes on:")
  save(dir .. "/counter.lua", source
    :gsub("local STEP = 1", "local STEP = 10")
    :gsub('"count is %%d"', '"count is %%d (new code!)"'))
  local line
  repeat line = next_line(node) until line:find("new code", 1, true)
  next_line(node)

  say("   Saving a broken counter.lua: the old code keeps running.")
  save(dir .. "/counter.lua", "this is not Lua")
  local err = node:expect("reload of counter failed.*", 5, "stderr")
  show("!", err:match("reload of counter failed.*"))
  next_line(node)
  next_line(node)

  say("   SIGTERM: the node stops gracefully, running its shutdown hook.")
  node:kill("SIGTERM")
  local code = node:wait(10)
  show("|", node:stdout():match("stopping at [^\n]*") or "")
  show("=", "exit code " .. tostring(code))
  shell("rm -rf " .. dir)

  say("3. Two nodes (examples/cluster): calls across a link, and a node that dies")
  local secret = "demo-" .. host.pid()
  local env = { ATOLL_SECRET = secret }
  local east = assert(process.spawn { bin, "run", "examples/cluster/app.lua", "--listen",
    "127.0.0.1:0", "--name", "east", env = env })
  local _, east_addr = east:expect("listening on (%S+)", 10, "stderr")
  next_line(east)
  local west = assert(process.spawn { bin, "run", "examples/cluster/app.lua", "--listen",
    "127.0.0.1:0", "--name", "west", "--", "--rally", east_addr, env = env })
  next_line(west)
  next_line(west)

  say("   From the shell: atoll call --node %s table stats", east_addr)
  local call = assert(process.spawn { bin, "call", "--node", east_addr, "table", "stats", env = env })
  call:wait(10)
  show("$", call:stdout())

  say("   West makes a 30 s call to east; east is killed (SIGKILL) meanwhile:")
  next_line(west)
  east:kill("SIGKILL")
  next_line(west)
  west:wait(10)
  east:wait(10)

  say("4. A cluster of three (examples/members): membership, failure detection, watch")
  local function member(name, ...)
    local args = { bin, "run", "examples/members/app.lua", "--listen", "127.0.0.1:0", "--name", name, ... }
    args.env = env
    local m = assert(process.spawn(args))
    local _, address = m:expect("listening on (%S+)", 10, "stderr")
    next_line(m)
    return m, address
  end
  local a, a_addr = member("a")
  local b = member("b", "--join", a_addr)
  local c = member("c", "--join", a_addr)
  local ups = 0
  repeat
    line = next_line(a)
    if line:find("is up", 1, true) then ups = ups + 1 end
  until ups == 2

  say("   From the shell: atoll members --node %s", a_addr)
  local list = assert(process.spawn { bin, "members", "--node", a_addr, env = env })
  list:wait(10)
  show("$", list:stdout())

  say("   c is killed (SIGKILL). Nobody is told; the failure detector finds out:")
  local t0 = atoll.now()
  c:kill("SIGKILL")
  repeat line = next_line(a, 15) until line:find("c %(.*%) is down")
  show("=", ("declared down %.1f s after the kill"):format(atoll.now() - t0))

  say("   b leaves gracefully (SIGTERM): it says goodbye before it goes.")
  b:kill("SIGTERM")
  repeat line = next_line(a, 10) until line:find("is removed", 1, true)
  b:wait(10)
  a:kill("SIGTERM")
  a:wait(10)

  say("5. Persistence (examples/bank): state that is the replay of its events")
  local data = os.tmpname()
  os.remove(data)
  local function bank(...)
    local q = assert(process.spawn { bin, "run", "examples/bank/app.lua", "--data-dir", data, "--", ... })
    return q
  end
  local q = bank("ann", "25", "--exit")
  assert(q:wait(10) == 0, q:stderr())
  show("|", q:stdout())
  say("   Another deposit, then the node is killed (SIGKILL) with no chance to save anything:")
  q = bank("ann", "10")
  repeat line = next_line(q) until line:find("has", 1, true)
  q:kill("SIGKILL")
  q:wait(10)
  say("   A new node recovers the account from the journal before it answers:")
  q = bank("ann", "-100", "--exit")
  assert(q:wait(10) == 0, q:stderr())
  show("|", q:stdout())
  say("   From the shell: atoll journal show account/ann --data-dir %s", data)
  q = assert(process.spawn { bin, "journal", "show", "account/ann", "--data-dir", data })
  q:wait(10)
  show("$", q:stdout())
  shell("rm -rf '" .. data .. "'")

  say("6. The HTTP gateway (the game's, scripts/tictactoe): one stream, JSON lines both ways")
  local web = assert(process.spawn { bin, "run", "scripts/tictactoe/app.lua", "--http", "127.0.0.1:0",
    "--journal", "memory" })
  local _, port = web:expect("serving on http://127%.0%.0%.1:(%d+)", 10, "stderr")
  local base = "http://127.0.0.1:" .. port
  local player = { "-H", "player_id: 3f2504e0-4f89-11d3-9a0c-0305e82c3301", "-H", "player_name: Ann",
    "-H", "player_team: fish" }
  local function curl(args)
    local cmd = { "curl", "-s", "-N" }
    for _, arg_ in ipairs(args) do cmd[#cmd + 1] = arg_ end
    return assert(process.spawn(cmd))
  end
  say("   $ curl %s/health", base)
  local h = curl { base .. "/health" }
  h:wait(10)
  show("|", h:stdout())
  say("   $ curl -N -T . -X POST -H 'Content-Type: application/jsonl' -H player_... %s/matchmaking", base)
  local args = { "-T", ".", "-X", "POST", "-H", "Content-Type: application/jsonl", base .. "/matchmaking" }
  for i, h_ in ipairs(player) do table.insert(args, i, h_) end
  local lobby = curl(args)
  next_line(lobby)
  say("   The client types a line; the answer comes back on the same request:")
  show(">", '{"message":{"status":"ready"}}')
  lobby:write('{"message":{"status":"ready"}}\n')
  next_line(lobby)
  next_line(lobby)
  say("   A line that is not JSON is answered in its place, and the stream goes on:")
  show(">", "ready?")
  lobby:write("ready?\n")
  next_line(lobby)
  lobby:close_stdin()
  lobby:wait(10)
  say("   The same stream as Server-Sent Events (curl -H 'Accept: text/event-stream'):")
  args = { "-H", "Accept: text/event-stream", base .. "/matchmaking" }
  for i, h_ in ipairs(player) do table.insert(args, i, h_) end
  local sse = curl(args)
  next_line(sse)
  sse:kill("SIGTERM")
  sse:wait(10)
  say("   $ curl %s/metrics  (some of it)", base)
  local m = curl { base .. "/metrics" }
  m:wait(10)
  for metric in m:stdout():gmatch("[^\n]+") do
    if metric:match("^atoll_http_requests_total") or metric:match('code="2xx"')
      or metric:match("^atoll_http_sent") then
      show("|", metric)
    end
  end
  web:kill("SIGTERM")
  web:wait(10)

  say("Done. Try it yourself:  build/atoll run --watch examples/counter/app.lua")
end)
