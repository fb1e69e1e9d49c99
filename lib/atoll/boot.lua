-- Starts the Lua side of a node for the command line: `atoll run` and `atoll lua`.
local host = require "atoll.host"
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

-- The cluster secret: --secret, then ATOLL_SECRET, then --secret-file, then
-- ~/.atoll/secret, which is made (random, mode 0600) the first time, so that
-- nodes of one user on one machine share a secret with no set-up.
local function cluster_secret(opts)
  if opts.secret and opts.secret ~= "" then return opts.secret end
  local env = os.getenv("ATOLL_SECRET")
  if env and env ~= "" then return env end
  local path = opts.secret_file
  if path then
    local s, err = read_file(path)
    if s == nil then return nil, "cannot read the secret file: " .. tostring(err) end
    s = s:gsub("%s+$", "")
    if s == "" then return nil, "the secret file " .. path .. " is empty" end
    return s
  end
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
    max_frame = opts.max_frame and tonumber(opts.max_frame),
    max_queue = opts.max_queue and tonumber(opts.max_queue),
  }
end

-- Starts listening (atoll run --listen): returns nil or an exit code.
local function start_listening(opts)
  local secret, serr = cluster_secret(opts)
  if secret == nil then
    say(serr)
    return EXIT_USAGE
  end
  local cluster = require "atoll.cluster"
  for _, k in ipairs { "max_frame", "max_queue" } do
    if opts[k] and not (tonumber(opts[k]) and tonumber(opts[k]) >= 64) then
      say(("--%s needs a number of bytes (at least 64), got %s"):format(k:gsub("_", "-"), opts[k]))
      return EXIT_USAGE
    end
  end
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
  return nil
end

local function run_hooks_then_stop()
  local hooks = atoll._shutdown_hooks()
  if #hooks == 0 then
    host.stop(0)
    return
  end
  local deadline = runtime.after_raw(SHUTDOWN_GRACE, function()
    host.log("warn", "node", "shutdown hooks did not finish within " .. SHUTDOWN_GRACE .. " s")
    host.stop(0)
  end)
  runtime.start_root(function()
    for _, hook in ipairs(hooks) do
      local ok, err = xpcall(hook, debug.traceback)
      if not ok then host.log("error", "node", "shutdown hook failed: " .. tostring(err)) end
    end
  end, function()
    deadline:cancel()
    host.stop(0)
  end, "shutdown")
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

  if opts.listen then
    local code = start_listening(opts)
    if code then return code end
  elseif opts.advertise or opts.port_file then
    say("--advertise and --port-file need --listen")
    return EXIT_USAGE
  end

  host.watch_signals()
  runtime.on_signal = run_hooks_then_stop
  if opts.watch then reload.watch() end

  runtime.refresh_now()
  runtime.start_root(chunk, function(ok, err, tb)
    if not ok then
      host.log("error", "node", (opts.script .. " failed: ") .. tostring(tb or err))
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

-- atoll call / atoll reload: one call to a named actor of a running node.
local function run_client(opts)
  local json = require "atoll.json"
  local cluster = require "atoll.cluster"
  if not opts.node or not cluster.split_address(opts.node, "--node") then
    say((select(2, cluster.split_address(opts.node or "", "--node"))))
    return EXIT_USAGE
  end
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
  local secret, serr = cluster_secret(opts)
  if secret == nil then
    say(serr)
    return EXIT_USAGE
  end
  host.name(opts.name or "atoll-cli")
  cluster.client(cluster_options(opts, secret))
  local code = EXIT_APP
  local timeout = tonumber(opts.timeout) or 5
  runtime.start_root(function()
    local ok, err = cluster.connect(opts.node, timeout)
    if not ok then
      say(tostring(err.message or err))
      code = EXIT_UNREACHABLE
      return
    end
    local results = { pcall(cluster.call_name, opts.node, name, method, timeout,
      unpack(args, 1, table.maxn(args))) }
    if not results[1] then
      local e = results[2]
      local kind = atoll.errors.kind(e)
      if kind == "unreachable" or kind == "timeout" then code = EXIT_UNREACHABLE else code = EXIT_APP end
      io.stderr:write("atoll ", opts.command, ": ", tostring(e), "\n")
      return
    end
    if opts.command == "reload" then
      if results[2] then
        print(("reloaded %s on %s"):format(opts.module, opts.node))
        code = 0
      else
        io.stderr:write("atoll reload: ", tostring(results[3]), "\n")
        code = EXIT_APP
      end
      return
    end
    local n = table.maxn(results) - 1
    if n <= 1 then
      print(json.encode(results[2]))
    else
      local list = {}
      for i = 1, n do list[i] = results[i + 1] == nil and json.null or results[i + 1] end
      print(json.encode(atoll.array(list)))
    end
    code = 0
  end, function(ok, err, tb)
    if not ok then
      say(tostring(tb or err))
      code = EXIT_APP
    end
    host.stop(code)
  end, "client")
  runtime.drain()
  return nil
end

function M.main(opts)
  if opts.command == "run" then return run_node(opts) end
  if opts.command == "lua" then return run_lua(opts) end
  if opts.command == "call" or opts.command == "reload" then return run_client(opts) end
  say("unknown command " .. tostring(opts.command))
  return 2
end

-- Called by the host when the loop has returned; the node's exit code.
function M.finish()
  reload.unwatch()
  return host.exit_code()
end

return M
