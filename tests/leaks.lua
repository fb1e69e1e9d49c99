-- Runs nodes under valgrind and fails on any leak or memory error: a clean
-- shutdown, by itself, by atoll.exit or by SIGTERM, frees everything (the
-- loop, every handle, the Lua state).
--
--   atoll lua tests/leaks.lua BUILD/atoll
local atoll = require "atoll"
local process = require "atoll.process"

local bin = assert(arg[1], "usage: atoll lua tests/leaks.lua BUILD/atoll")

if os.getenv("ATOLL_SANITIZED") then
  print("leak check: skipped on a sanitizer build (LeakSanitizer checks the nodes instead)")
  return
end

local failed = false

local function check(name, args, signal_after, env, drive)
  local log = os.tmpname()
  local cmd = { "valgrind", "--quiet", "--leak-check=full", "--show-leak-kinds=all",
    "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99",
    "--suppressions=tests/valgrind.supp",
    "--log-file=" .. log, bin }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  cmd.env = env
  local p = assert(process.spawn(cmd))
  if signal_after then
    local caps = { select(2, p:expect(signal_after, 60)) }
    if drive then drive(unpack(caps)) end
    p:kill("SIGTERM")
  end
  local code = p:wait(120)
  local f = io.open(log)
  local report = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(log)
  if code ~= 0 or report:find("%S") then
    failed = true
    print(("leak check FAILED: %s (exit %s)\n%s\n%s"):format(name, tostring(code), report, p:stderr()))
  else
    print("leak check ok: " .. name)
  end
end

atoll.run(function()
  check("examples/hello", { "run", "examples/hello/app.lua" })
  check("examples/counter stopped by atoll.exit",
    { "run", "examples/counter/app.lua", "0.01", "--", "--exit-after", "3" })
  check("examples/counter stopped by SIGTERM", { "run", "examples/counter/app.lua", "0.01" },
    "^count is 3$")
  check("a node with --watch", { "run", "--watch", "examples/counter/app.lua", "0.01", "--",
    "--exit-after", "3" })
  -- A cluster member: its UDP socket, timers and the SWIM core; it joins a
  -- node run outside valgrind, then leaves on SIGTERM.
  local other = assert(process.spawn { bin, "run", "tests/functional/apps/member.lua",
    "--listen", "127.0.0.1:0", "--name", "peer", env = { ATOLL_SECRET = "leak-check" } })
  local _, peer = other:expect("listening on (%S+)", 10, "stderr")
  other:expect("^ready$", 10)
  local member = { "run", "tests/functional/apps/member.lua", "--listen", "127.0.0.1:0",
    "--name", "checked", "--join", peer }
  check("a cluster member that joins, then leaves on SIGTERM", member,
    "^member " .. peer:gsub("%p", "%%%0") .. " up", { ATOLL_SECRET = "leak-check" })
  other:kill("SIGKILL")
  -- Persistent actors: the journal's threads, statements and connections.
  local data = os.tmpname()
  os.remove(data)
  check("a persistent actor on SQLite, recovering then emitting", { "run",
    "tests/functional/apps/ledger.lua", "--data-dir", data, "--", "--stream" }, "^acked 100$",
    { LEDGER_SNAPSHOT_EVERY = "30" })
  check("the same, recovering from a snapshot", { "run", "tests/functional/apps/ledger.lua",
    "--data-dir", data, "--", "--stream" }, "^acked 200$", { LEDGER_SNAPSHOT_EVERY = "30" })
  check("atoll journal show", { "journal", "show", "ledger/main", "--data-dir", data })
  os.execute("rm -rf '" .. data .. "'")
  package.path = "tests/?.lua;" .. package.path
  local server = require("helpers.postgres").start()
  check("a persistent actor on PostgreSQL", { "run", "tests/functional/apps/ledger.lua",
    "--journal", server.url, "--", "--stream" }, "^acked 100$")
  server.stop()
  -- An HTTP node: plain requests, a JSON-lines stream, a WebSocket, a malformed request and a
  -- stream left open at SIGTERM.
  local function run(cmd)
    local q = assert(process.spawn(cmd))
    q:wait(30)
    return q
  end
  check("an HTTP node serving requests, streams and a WebSocket", { "run", "tests/functional/apps/web.lua" },
    "^http port (%d+)$", nil, function(port)
      local base = "http://127.0.0.1:" .. port
      run { "curl", "-s", base .. "/hello", base .. "/hello?name=again", base .. "/metrics" }
      run { "curl", "-s", "-d", "{}", base .. "/echo" }
      run { "sh", "-c", "printf '{\"n\":1}\\nbad\\n' | curl -s -T . -X POST -H 'Content-Type: application/jsonl' "
        .. base .. "/chat" }
      run { "sh", "-c", "printf 'GARBAGE\\r\\n\\r\\n' | curl -s telnet://127.0.0.1:" .. port .. " --max-time 2" }
      local ws = assert(process.spawn { "node", "tests/js/ws-client.mjs", "ws://127.0.0.1:" .. port .. "/chat" })
      ws:expect("^message", 20)
      ws:write('{"n":1}\n')
      ws:expect("^message {\"echo\"", 20)
      local open = assert(process.spawn { "curl", "-s", "-N", "-H", "Accept: text/event-stream", base .. "/chat" })
      open:expect("^data:", 20)
    end)
  check("interpreter mode", { "lua", "-e",
    "local atoll = require 'atoll' print(atoll.run(function() atoll.sleep(0.01) return 1 end))" })
end)

if failed then os.exit(1) end
