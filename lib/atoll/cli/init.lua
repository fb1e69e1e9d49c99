-- The command line: the host calls main(argv0, argv) and, once the loop has run, finish().
local host = require "atoll.c.host"
local args = require "atoll.cli.args"
local common = require "atoll.cli.common"

local M = {}

local EXIT = common.EXIT

-- main(argv0, argv) -> an exit code, or nil for the host to run the loop
-- and ask finish() for the code afterwards.
function M.main(argv0, argv)
  local command, opts = args.parse(argv0, argv, host.version)
  if command == nil then return opts end
  -- A command whose output is its answer logs warnings only, unless asked.
  local level = opts.log_level or (command.quiet and "warn") or nil
  if level then
    local ok = pcall(host.log_level, level)
    if not ok then
      return args.usage_error(command.name, "bad --log-level '%s' (debug, info, warn, error, off)", level)
    end
  end
  local problem = require("atoll.cli.flags").check(opts)
  if problem then
    common.say(problem)
    return EXIT.USAGE
  end
  local module, fn = command.run[1], command.run[2]
  return require(module)[fn](opts)
end

-- finish() -> the node's exit code, once its loop has returned.
function M.finish()
  require("atoll.reload").unwatch()
  return host.exit_code()
end

return M
