-- atoll lua: a LuaJIT interpreter with atoll's modules, as `lua SCRIPT` is.
local host = require "atoll.c.host"
local common = require "atoll.cli.common"

local M = {}

local say, load_script, set_arg = common.say, common.load_script, common.set_arg
local EXIT_APP, EXIT_LOAD = common.EXIT.APP, common.EXIT.LOAD

function M.run(opts)
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

return M
