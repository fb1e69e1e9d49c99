-- atoll run and atoll clusterd: a node, from its flags to its graceful shutdown.
local host = require "atoll.c.host"
local atoll = require "atoll"
local runtime = require "atoll.runtime"
local reload = require "atoll.reload"
local common = require "atoll.cli.common"

local M = {}

local EXIT = common.EXIT
local EXIT_APP, EXIT_USAGE, EXIT_LOAD = EXIT.APP, EXIT.USAGE, EXIT.LOAD
local say, cluster_secret, cluster_options = common.say, common.cluster_secret, common.cluster_options
local load_script, set_arg = common.load_script, common.set_arg
local SHUTDOWN_GRACE = 10 -- seconds the shutdown hooks get before the node stops anyway

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
  local membership = require "atoll.cluster.membership"
  local discovery = require "atoll.cluster.discovery"
  local downing = require "atoll.cluster.downing"
  local n = runtime.node
  for _, d in ipairs(opts.discover) do
    if d.kind == "dns" and d.port == nil then d.port = port end
  end
  -- A run started again after the cluster downed the last one joins the members that one knew.
  local rejoin = os.getenv("ATOLL_REJOIN")
  if rejoin and rejoin ~= "" then
    for a in rejoin:gmatch("[^,]+") do opts.seeds[#opts.seeds + 1] = a end
    host.log("info", "node", ("run %s after the cluster downed this node: joining through %s")
      :format(os.getenv("ATOLL_RESTARTS") or "?", rejoin))
  end
  local dcfg = opts.downing or assert(downing.parse(""))
  dcfg.stable_after = opts.stable_after
  local final = dcfg.strategy ~= "off"
  local config = opts.membership or {}
  -- With downing, a member SWIM declares dead is unreachable and keeps counting until a
  -- majority downs it: SWIM must not forget it meanwhile.
  if final and require("atoll.c.swim").config().keep_unreachable ~= nil then config.keep_unreachable = 1 end
  membership.set_downing(final)
  local ok, err = membership.start {
    bind_host = (cluster.split_address(opts.listen, "--listen")), port = port,
    address = n.address, name = n.name, incarnation = n.incarnation,
    cluster = opts.cluster or "atoll", secret = secret, config = config,
    seeds = opts.seeds, wait_for_seeds = #opts.discover > 0,
  }
  if not ok then
    say(err)
    return EXIT_APP
  end
  downing.start(dcfg)
  local downed = false
  membership.listen(function(m)
    if not m.self or m.status ~= "down" or downed then return end
    downed = true
    local restart = opts.when_downed ~= "exit"
    host.log("error", "node", "the cluster downed this node: a majority of the members could not reach "
      .. "it long enough (its actors' refs are dead for the others); "
      .. (restart and "starting again as a new run" or "exiting with code " .. EXIT.DOWNED))
    if restart then
      -- The new run joins the members this one knew (a first node, started without --join,
      -- would otherwise start a cluster of its own beside the one that downed it).
      local seeds = {}
      for _, other in ipairs(membership.members()) do
        if not other.self and (other.status == "up" or other.status == "leaving") then
          seeds[#seeds + 1] = other.address
        end
      end
      host.setenv("ATOLL_REJOIN", table.concat(seeds, ","))
      host.restart()
    end
    host.stop(restart and 0 or EXIT.DOWNED)
  end)
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
  local Node = require "atoll.cluster.node"
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
  local membership = require "atoll.cluster.membership"
  -- HTTP: no new connections; open streams end, answers under way finish.
  for _, server in ipairs(require("atoll.http").servers()) do server.shutdown() end
  local hooks = atoll._shutdown_hooks()
  local hooks_done = #hooks == 0
  local function maybe_stop()
    if hooks_done and membership.left() then host.stop(0) end
  end
  if membership.leave() then
    host.log("info", "node", "leaving the cluster")
    require("atoll.cluster.discovery").stop(runtime.node)
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

function M.run(opts)
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

-- atoll clusterd: the discovery daemon.
function M.clusterd(opts)
  opts.listen = opts.listen or ("127.0.0.1:" .. require("atoll.cluster.discovery").CLUSTERD_PORT)
  host.name(opts.name or "clusterd")
  runtime.node.name = host.name()
  local code = start_listening(opts)
  if code then return code end
  local Registry = require "atoll.cluster.clusterd"
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

return M
