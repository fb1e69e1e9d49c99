-- Starts the Lua side of a node for the command line: `atoll run` and `atoll lua`.
local host = require "atoll.c.host"
local atoll = require "atoll"
local runtime = require "atoll.runtime"
local reload = require "atoll.reload"

local M = {}

-- Exit codes (see `atoll --help`).
local EXIT_APP, EXIT_USAGE, EXIT_LOAD, EXIT_UNREACHABLE = 1, 2, 3, 4
local SHUTDOWN_GRACE = 10 -- seconds the shutdown hooks get before the node stops anyway

local function say(msg)
  io.stderr:write("atoll: ", msg, "\n")
end

local function set_arg(script, args, argv0)
  local a = { [0] = script, [-1] = argv0 }
  for i, v in ipairs(args) do a[i] = v end
  _G.arg = a
end

-- Loads a script the way `lua` does, with a message that says what is wrong.
local function load_script(path)
  if path == "-" then
    local src = io.stdin:read("*a")
    return loadstring(src, "=stdin")
  end
  local f, err = io.open(path, "rb")
  if f == nil then return nil, "cannot open " .. path .. ": " .. (err:match(": (.*)$") or err) end
  f:close()
  return loadfile(path)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if f == nil then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- The cluster secret: --secret, then --secret-file, then ATOLL_SECRET, then
-- ~/.atoll/secret, which is made (random, mode 0600) the first time, so that
-- nodes of one user on one machine share a secret with no set-up. A flag
-- beats the environment, as in most tools: the environment is set once for
-- a shell, the flag for this command.
local function cluster_secret(opts)
  if opts.secret and opts.secret ~= "" then return opts.secret end
  local path = opts.secret_file
  if path then
    local s, err = read_file(path)
    if s == nil then return nil, "cannot read the secret file: " .. tostring(err) end
    s = s:gsub("%s+$", "")
    if s == "" then return nil, "the secret file " .. path .. " is empty" end
    return s
  end
  local env = os.getenv("ATOLL_SECRET")
  if env and env ~= "" then return env end
  local home = os.getenv("HOME")
  if not home or home == "" then return nil, "no secret: use --secret or ATOLL_SECRET" end
  path = home .. "/.atoll/secret"
  local s = read_file(path)
  if s and s:gsub("%s+$", "") ~= "" then return (s:gsub("%s+$", "")) end
  os.execute("mkdir -p '" .. home .. "/.atoll' && chmod 700 '" .. home .. "/.atoll'")
  local bytes = host.random_bytes(24)
  s = bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  local f = io.open(path, "wb")
  if f == nil then return nil, "cannot create " .. path end
  f:write(s, "\n")
  f:close()
  os.execute("chmod 600 '" .. path .. "'")
  host.log("info", "node", "made a new cluster secret in " .. path)
  return s
end
M.cluster_secret = cluster_secret

local function cluster_options(opts, secret)
  return {
    listen = opts.listen, advertise = opts.advertise, secret = secret,
    cluster = opts.cluster or "atoll", name = opts.name or "atoll",
    max_frame = opts.max_frame, max_queue = opts.max_queue,
  }
end

-- Checks that the membership flags come with --listen: nil, or an exit code.
local function check_membership_flags(opts)
  if not opts.listen and (opts.join or opts.discovery or opts.membership) then
    say("--join, --discovery and --membership need --listen (a member must be reachable)")
    return EXIT_USAGE
  end
  opts.seeds = opts.join or {}
  opts.discover = opts.discovery or {}
  return nil
end

-- Makes the listening node a member: nil, or an exit code.
local function start_membership(opts, secret, port)
  local cluster = require "atoll.cluster"
  local membership = require "atoll.membership"
  local discovery = require "atoll.discovery"
  local n = runtime.node
  for _, d in ipairs(opts.discover) do
    if d.kind == "dns" and d.port == nil then d.port = port end
  end
  local ok, err = membership.start {
    bind_host = (cluster.split_address(opts.listen, "--listen")), port = port,
    address = n.address, name = n.name, incarnation = n.incarnation,
    cluster = opts.cluster or "atoll", secret = secret, config = opts.membership,
    seeds = opts.seeds, wait_for_seeds = #opts.discover > 0,
  }
  if not ok then
    say(err)
    return EXIT_APP
  end
  if #opts.discover > 0 then
    discovery.start(opts.discover, { address = n.address, name = n.name, incarnation = n.incarnation })
  end
  return nil
end

-- Starts listening (atoll run --listen): returns nil or an exit code.
local function start_listening(opts)
  local secret, serr = cluster_secret(opts)
  if secret == nil then
    say(serr)
    return EXIT_USAGE
  end
  local cluster = require "atoll.cluster"
  local ok, address, port = pcall(cluster.start, cluster_options(opts, secret))
  if not ok or address == nil then
    say(tostring(ok and port or address))
    return EXIT_APP
  end
  if opts.port_file then
    local f, err = io.open(opts.port_file, "wb")
    if f == nil then
      say("cannot write the port file: " .. tostring(err))
      return EXIT_APP
    end
    f:write(tostring(port), "\n")
    f:close()
  end
  local Node = require "atoll.node"
  atoll.register(Node.NAME, atoll.spawn(Node))
  host.log("info", "node", ("listening on %s (port %d, incarnation %x)"):format(address, port,
    runtime.node.incarnation))
  if opts.command == "run" then return start_membership(opts, secret, port) end
  return nil
end

-- A graceful shutdown: the node says goodbye to the cluster (leaving, then
-- removed, while its goodbye spreads) and runs the shutdown hooks, both at
-- once; it stops when both are done, or after SHUTDOWN_GRACE seconds.
local function run_hooks_then_stop()
  local membership = require "atoll.membership"
  -- HTTP: no new connections; open streams end, answers under way finish.
  for _, server in ipairs(require("atoll.http").servers()) do server.shutdown() end
  local hooks = atoll._shutdown_hooks()
  local hooks_done = #hooks == 0
  local function maybe_stop()
    if hooks_done and membership.left() then host.stop(0) end
  end
  if membership.leave() then
    host.log("info", "node", "leaving the cluster")
    require("atoll.discovery").stop(runtime.node)
    membership.listen(function(m)
      if m.self and m.status == "removed" then maybe_stop() end
    end)
  end
  runtime.after_raw(SHUTDOWN_GRACE, function()
    if not hooks_done then
      host.log("warn", "node", "shutdown hooks did not finish within " .. SHUTDOWN_GRACE .. " s")
    end
    host.stop(0)
  end)
  if hooks_done then
    maybe_stop()
    return
  end
  runtime.start_root(function()
    for _, hook in ipairs(hooks) do
      local ok, err = xpcall(hook, debug.traceback)
      if not ok then host.log("error", "node", "shutdown hook failed: " .. tostring(err)) end
    end
  end, function()
    hooks_done = true
    maybe_stop()
  end, "shutdown")
end

-- --watchdog and --max-heap: nil, or an exit code.
local function start_watchdog(opts)
  local watchdog = require "atoll.watchdog"
  local cfg = opts.watchdog or assert(watchdog.parse(""))
  cfg.max_heap = opts.max_heap
  local ok, err = watchdog.start(cfg)
  if not ok then
    say(err)
    return EXIT_APP
  end
  return nil
end

local function run_node(opts)
  local chunk, err = load_script(opts.script)
  if chunk == nil then
    say(err)
    return EXIT_LOAD
  end
  host.name(opts.name or "atoll")
  runtime.node.name = host.name()
  local dir = opts.script:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  set_arg(opts.script, opts.args, opts.argv0)

  local code = check_membership_flags(opts)
  if code then return code end
  if opts.listen then
    code = start_listening(opts)
    if code then return code end
  elseif opts.advertise or opts.port_file then
    say("--advertise and --port-file need --listen")
    return EXIT_USAGE
  else
    -- Not a member, but it may still call other nodes: as a client, once
    -- it first does.
    require("atoll.cluster").on_demand(function()
      local secret, serr = cluster_secret(opts)
      if secret == nil then return nil, serr end
      return cluster_options(opts, secret)
    end)
  end

  host.watch_signals()
  runtime.set_signal_handler(run_hooks_then_stop)
  if opts.watch then reload.watch() end
  code = start_watchdog(opts)
  if code then return code end

  local persistence = require "atoll.persistence"
  persistence.configure { journal = opts.journal, data_dir = opts.data_dir }
  if opts.http_static and not opts.http then
    say("--http-static needs --http")
    return EXIT_USAGE
  end
  if opts.http then
    local http = require "atoll.http"
    for _, pd in ipairs(opts.http_static or {}) do http.static(pd[1], pd[2]) end
    local server, herr = http.listen(opts.http)
    if not server then
      say(herr)
      return herr:find("bad HTTP address", 1, true) and EXIT_USAGE or EXIT_APP
    end
    host.log("info", "http", "serving on http://" .. server.address)
  end
  runtime.refresh_now()
  runtime.start_root(function(...)
    -- A journal or data directory named on the command line must work
    -- before anything runs.
    if opts.journal or opts.data_dir then
      local ok, perr = persistence.probe()
      if not ok then
        say(perr)
        host.stop(EXIT_APP)
        return
      end
    end
    return chunk(...)
  end, function(ok, failure, tb)
    if not ok then
      host.log("error", "node", (opts.script .. " failed: ") .. tostring(tb or failure))
      host.stop(EXIT_APP)
    end
  end, "main", unpack(opts.args))
  runtime.drain()
  return nil -- the host runs the loop, then calls finish()
end

local function run_lua(opts)
  local chunk, err
  if opts.code then
    chunk, err = loadstring(opts.code, "=(command line)")
  else
    chunk, err = load_script(opts.script)
  end
  if chunk == nil then
    say(err)
    return EXIT_LOAD
  end
  set_arg(opts.script or "(command line)", opts.args, opts.argv0)
  local ok, e = xpcall(chunk, debug.traceback, unpack(opts.args))
  if not ok then
    say(tostring(e))
    return EXIT_APP
  end
  -- Like `lua`, the interpreter ends with its script; actor code that needs
  -- the loop runs inside atoll.run.
  return host.exit_code()
end

-- Runs body(cluster, timeout) -> exit code against the node at opts.node, as
-- a client: checks --node and the secret, connects, maps errors to exit
-- codes. Returns nil (the loop runs) or an exit code.
local function with_node(opts, body)
  local cluster = require "atoll.cluster"
  if not opts.node or not cluster.split_address(opts.node, "--node") then
    say((select(2, cluster.split_address(opts.node or "", "--node"))))
    return EXIT_USAGE
  end
  local secret, serr = cluster_secret(opts)
  if secret == nil then
    say(serr)
    return EXIT_USAGE
  end
  host.name(opts.name or "atoll-cli")
  cluster.client(cluster_options(opts, secret))
  local code = EXIT_APP
  local timeout = opts.timeout or 5
  runtime.start_root(function()
    local ok, err = cluster.connect(opts.node, timeout)
    if not ok then
      say(tostring(err.message or err))
      code = EXIT_UNREACHABLE
      return
    end
    code = body(cluster, timeout)
  end, function(ok, err, tb)
    if not ok then
      say(tostring(tb or err))
      code = EXIT_APP
    end
    host.stop(code)
  end, opts.command)
  runtime.drain()
  return nil
end

-- The exit code for a failed call: 4 when the node did not answer.
local function call_failed(opts, e)
  local kind = atoll.errors.kind(e)
  io.stderr:write("atoll ", opts.command, ": ", tostring(e), "\n")
  if kind == "unreachable" or kind == "timeout" then return EXIT_UNREACHABLE end
  return EXIT_APP
end

-- atoll call / atoll reload: one call to a named actor of a running node.
local function run_client(opts)
  local json = require "atoll.json"
  local args = {}
  local name, method
  if opts.command == "reload" then
    name, method, args = "atoll.node", "reload", { opts.module }
  else
    name, method = opts.target, opts.method
    if opts.json then
      -- A JSON array is the argument list; any other JSON value is the one argument.
      local v, err = json.decode(opts.json)
      if err then
        say("the arguments are not valid JSON: " .. err)
        return EXIT_USAGE
      end
      if opts.json:match("^%s*%[") then args = v else args = { v } end
    end
  end
  return with_node(opts, function(cluster, timeout)
    local results = { pcall(cluster.call_name, opts.node, name, method, timeout,
      unpack(args, 1, table.maxn(args))) }
    if not results[1] then return call_failed(opts, results[2]) end
    if opts.command == "reload" then
      if results[2] then
        print(("reloaded %s on %s"):format(opts.module, opts.node))
        return 0
      end
      io.stderr:write("atoll reload: ", tostring(results[3]), "\n")
      return EXIT_APP
    end
    local n = table.maxn(results) - 1
    if n <= 1 then
      print(json.encode(results[2]))
    else
      local list = {}
      for i = 1, n do list[i] = results[i + 1] == nil and json.null or results[i + 1] end
      print(json.encode(atoll.array(list)))
    end
    return 0
  end)
end

local function ago(seconds)
  seconds = math.max(0, math.floor(seconds + 0.5))
  if seconds < 120 then return seconds .. "s" end
  if seconds < 7200 then return math.floor(seconds / 60) .. "m" end
  if seconds < 172800 then return math.floor(seconds / 3600) .. "h" end
  return math.floor(seconds / 86400) .. "d"
end

-- A cell's width on a terminal: its characters, not its bytes (names may be UTF-8).
local function width(s)
  return #s:gsub("[\128-\191]", "")
end

-- members_table(view, now) -> the lines of the member table `atoll members`
-- prints (now: wall-clock seconds): members by name, then address; each
-- column as wide as its widest cell, two spaces apart.
function M.members_table(view, now)
  local rows = { { "NAME", "ADDRESS", "STATUS", "INCARNATION", "SINCE" } }
  local members = {}
  for i, m in ipairs(view.members or {}) do members[i] = m end
  table.sort(members, function(a, b)
    if a.name ~= b.name then return a.name < b.name end
    return a.address < b.address
  end)
  for _, m in ipairs(members) do
    local status = m.status .. (m.suspect and " (suspect)" or "")
    rows[#rows + 1] = { (m.name ~= "" and m.name or "-") .. (m.self and " *" or ""), m.address, status,
                        ("%x"):format(m.incarnation), ago(now - m.since) .. " ago" }
  end
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, width(c)) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = i < #r and (c .. (" "):rep(widths[i] - width(c))) or c end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return lines
end

-- The member table `atoll members` prints, and the counters.
local function print_members(view)
  for _, line in ipairs(M.members_table(view, host.wall() / 1000)) do print(line) end
  local s = view.stats or {}
  print()
  print(("majority: %s   (* is the node asked: %s)"):format(view.majority and "yes" or "NO", view.address))
  local order = { "probes", "indirect_probes", "acks", "nacks", "suspicions", "refutations", "deaths",
                  "leaves", "packets_sent", "packets_received", "bytes_sent", "dropped_malformed",
                  "dropped_auth", "send_failed", "unresolved", "gossip_pending", "health" }
  local line = {}
  for _, k in ipairs(order) do
    if s[k] then line[#line + 1] = ("%s %d"):format(k:gsub("_", " "), s[k]) end
  end
  for i = 1, #line, 4 do print(table.concat(line, ", ", i, math.min(i + 3, #line))) end
end

-- atoll members: a node's view of the cluster.
local function run_members(opts)
  local json = require "atoll.json"
  return with_node(opts, function(cluster, timeout)
    local ok, view = pcall(cluster.call_name, opts.node, "atoll.node", "members", timeout)
    if not ok then return call_failed(opts, view) end
    if not view.started then
      io.stderr:write("atoll members: ", opts.node, " is not a member of a cluster (it listens only)\n")
      return EXIT_APP
    end
    if opts.json_output then
      view.members = atoll.array(view.members)
      print(json.encode(view))
    else
      print_members(view)
    end
    return 0
  end)
end

-- atoll journal ls | show ID: look inside a journal.
local function run_journal(opts)
  local json = require "atoll.json"
  local persistence = require "atoll.persistence"
  local from, limit = opts.from or 0, opts.limit or math.huge
  persistence.configure { journal = opts.journal, data_dir = opts.data_dir }
  if (opts.journal == nil or opts.journal == "sqlite") then
    local path = persistence.default_path(opts.data_dir)
    local f = io.open(path, "rb")
    if f == nil then
      say("no journal at " .. path .. " (use --data-dir or --journal)")
      return EXIT_APP
    end
    f:close()
  end
  local code = EXIT_APP
  runtime.start_root(function()
    local ok, err = persistence.probe()
    if not ok then
      say(err)
      return
    end
    if opts.subcommand == "ls" then
      local list = persistence.list()
      if opts.json_output then
        for _, e in ipairs(list) do print(json.encode(e)) end
      else
        local w = 2
        for _, e in ipairs(list) do w = math.max(w, #e.id) end
        print(("%-" .. w .. "s  %10s  %10s"):format("ID", "EVENTS", "LAST SEQ"))
        for _, e in ipairs(list) do print(("%-" .. w .. "s  %10d  %10d"):format(e.id, e.events, e.last_seq)) end
      end
      code = 0
      return
    end
    local after, left = from, limit
    while left > 0 do
      local page = persistence.events(opts.id, after, math.min(left, persistence.READ_PAGE))
      for _, e in ipairs(page) do
        print(json.encode { seq = e.seq, event = e.event == nil and json.null or e.event })
        after = e.seq
      end
      left = left - #page
      if #page < persistence.READ_PAGE then break end
    end
    code = 0
  end, function(ok, err, tb)
    if not ok then say(tostring(tb or err)) end
    host.stop(code)
  end, "journal")
  runtime.drain()
  return nil
end

-- atoll clusterd: the discovery daemon.
local function run_clusterd(opts)
  opts.listen = opts.listen or ("127.0.0.1:" .. require("atoll.discovery").CLUSTERD_PORT)
  host.name(opts.name or "clusterd")
  runtime.node.name = host.name()
  local code = start_listening(opts)
  if code then return code end
  local Registry = require "atoll.clusterd"
  atoll.register(Registry.NAME, atoll.spawn(Registry))
  local ok, err = require("atoll.watchdog").start {}
  if not ok then
    say(err)
    return EXIT_APP
  end
  host.log("info", "clusterd", "nodes can register at " .. runtime.node.address)
  host.watch_signals()
  runtime.set_signal_handler(function() host.stop(0) end)
  runtime.drain()
  return nil
end

function M.main(opts)
  local problem = require("atoll.cli.flags").check(opts)
  if problem then
    say(problem)
    return EXIT_USAGE
  end
  if opts.command == "run" then return run_node(opts) end
  if opts.command == "lua" then return run_lua(opts) end
  if opts.command == "call" or opts.command == "reload" then return run_client(opts) end
  if opts.command == "members" then return run_members(opts) end
  if opts.command == "clusterd" then return run_clusterd(opts) end
  if opts.command == "journal" then return run_journal(opts) end
  say("unknown command " .. tostring(opts.command))
  return 2
end

-- Called by the host when the loop has returned; the node's exit code.
function M.finish()
  reload.unwatch()
  return host.exit_code()
end

return M
