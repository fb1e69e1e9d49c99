-- Starts the Lua side of a node for the command line: `atoll run` and `atoll lua`.
local host = require "atoll.host"
local atoll = require "atoll"
local runtime = require "atoll.runtime"
local reload = require "atoll.reload"

local M = {}

-- Exit codes (see `atoll --help`).
local EXIT_APP, EXIT_LOAD = 1, 3
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
  runtime.drain()
  return nil
end

function M.main(opts)
  if opts.command == "run" then return run_node(opts) end
  if opts.command == "lua" then return run_lua(opts) end
  say("unknown command " .. tostring(opts.command))
  return 2
end

-- Called by the host when the loop has returned; the node's exit code.
function M.finish()
  reload.unwatch()
  return host.exit_code()
end

return M
