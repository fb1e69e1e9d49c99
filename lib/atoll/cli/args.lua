-- The command line's words: which command, its flags (as fields of an options table) and its arguments.
local commands = require "atoll.cli.commands"

local M = {}

local EXIT = commands.EXIT

-- Prints a usage error the way every command does; returns exit code 2.
local function usage_error(command, fmt, ...)
  local name = command and (" " .. command) or ""
  io.stderr:write("atoll", name, ": ", fmt:format(...), "\nRun 'atoll help", name, "' for usage.\n")
  return EXIT.USAGE
end
M.usage_error = usage_error

-- The flag argv names among these groups (--flag or --flag=VALUE), or nil.
local function find_flag(groups, a)
  for _, g in ipairs(groups) do
    for _, f in ipairs(g) do
      local n = #f.flag
      if a:sub(1, n) == f.flag and (#a == n or a:sub(n + 1, n + 1) == "=") then return f end
    end
  end
  return nil
end

-- Tries argv[i] as one of the command's flags; returns the next index, or
-- nil and an exit code after reporting a usage error; false if not a flag.
local function take_flag(c, opts, argv, i)
  local a = argv[i]
  local f = find_flag(c.groups, a)
  if f == nil then return false end
  local n = #f.flag
  if f.takes == commands.SWITCH then
    if #a > n then return nil, usage_error(c.name, "%s takes no value", f.flag) end
    opts[f.field] = true
    return i + 1
  end
  local v
  if #a > n then
    v = a:sub(n + 2)
  else
    i = i + 1
    v = argv[i]
  end
  if v == nil or v == "" then return nil, usage_error(c.name, "%s needs a value", f.flag) end
  if f.takes == commands.REPEATABLE and opts[f.field] then
    opts[f.field] = opts[f.field] .. "," .. v
  else
    opts[f.field] = v
  end
  return i + 1
end

-- atoll lua [options] [SCRIPT | -e CODE | -] [ARGS...]: options come first.
local function parse_lua(c, opts, argv, i)
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then
      io.stdout:write(c.usage)
      return nil, EXIT.OK
    elseif a == "-e" then
      if argv[i + 1] == nil then return nil, usage_error("lua", "-e needs a value") end
      opts.code = argv[i + 1]
      i = i + 2
      break
    elseif a == "--" then
      i = i + 1
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local nxt, code = take_flag(c, opts, argv, i)
      if nxt == nil then return nil, code end
      if nxt == false then return nil, usage_error("lua", "unknown flag '%s'", a) end
      i = nxt
    else
      break
    end
  end
  if opts.code == nil then
    opts.script = argv[i] or "-"
    i = i + 1
  end
  for k = i, #argv do opts.args[#opts.args + 1] = argv[k] end
  return opts
end

-- Every other command: flags anywhere, positionals in order. For run, what
-- follows APP.lua belongs to the script, and so does everything after --.
local function parse_flags(c, opts, argv, i)
  local positional = {}
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for k = i + 1, #argv do opts.args[#opts.args + 1] = argv[k] end
      break
    end
    if a == "-h" or a == "--help" then
      io.stdout:write(c.usage)
      return nil, EXIT.OK
    end
    local nxt, code = take_flag(c, opts, argv, i)
    if nxt == nil then return nil, code end
    if nxt then
      i = nxt
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, usage_error(c.name, "unknown flag '%s'", a)
    else
      if c.name == "run" and #positional == 1 then
        opts.args[#opts.args + 1] = a
      else
        positional[#positional + 1] = a
      end
      i = i + 1
    end
  end
  return opts, positional
end

-- What each command's arguments must be, named in the options.
local positionals = {
  run = function(opts, p)
    if #p < 1 then return "missing APP.lua" end
    opts.script = p[1]
  end,
  call = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p < 2 then return "missing NAME and METHOD" end
    if #p > 3 then return ("unexpected argument '%s' (pass arguments as one JSON array)"):format(p[4]) end
    opts.target, opts.method, opts.json = p[1], p[2], p[3]
  end,
  reload = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p ~= 1 then return "expected one MODULE" end
    opts.module = p[1]
  end,
  members = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p > 0 then return ("unexpected argument '%s'"):format(p[1]) end
  end,
  singletons = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p > 0 then return ("unexpected argument '%s'"):format(p[1]) end
  end,
  receptionist = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p > 1 then return ("unexpected argument '%s' (one KEY at most)"):format(p[2]) end
    if p[1] and (#p[1] < 1 or #p[1] > 200) then
      return ("a KEY is 1 to 200 bytes (this one has %d)"):format(#p[1])
    end
    opts.key = p[1]
  end,
  virtual = function(opts, p)
    if opts.node == nil then return "missing --node HOST:PORT" end
    if #p > 1 then return ("unexpected argument '%s' (one TYPE at most)"):format(p[2]) end
    opts.type = p[1]
    if opts.id == nil then
      if opts.numeric_id then return "--numeric-id goes with --id ID" end
      return
    end
    if opts.type == nil then return "--id needs a TYPE (atoll virtual --node HOST:PORT TYPE --id ID)" end
    if opts.numeric_id then
      -- (an integer that a double holds exactly, as atoll.virtual.get wants it)
      local n = opts.id:match("^%-?%d+$") and tonumber(opts.id)
      if not n or math.abs(n) > 2 ^ 53 then
        return ("--numeric-id: '%s' is not an integer within 2^53"):format(opts.id)
      end
      -- (digits a double does not hold exactly would name another actor; -0 is 0)
      if ("%.0f"):format(n + 0) ~= opts.id:gsub("^%-0$", "0"):gsub("^(%-?)0+(%d)", "%1%2") then
        return ("--numeric-id: '%s' is not an integer a double holds exactly"):format(opts.id)
      end
      opts.id = n + 0
    elseif #opts.id > 200 then
      return ("an ID is 1 to 200 bytes (this one has %d)"):format(#opts.id)
    end
  end,
  clusterd = function(_, p)
    if #p > 0 then return ("unexpected argument '%s'"):format(p[1]) end
  end,
  journal = function(opts, p)
    local sub = p[1]
    if sub == nil then return "missing ls or show ID" end
    if sub == "ls" then
      if #p > 1 then return ("unexpected argument '%s'"):format(p[2]) end
    elseif sub == "show" then
      if #p ~= 2 then return "show takes one persistence ID" end
      opts.id = p[2]
    else
      return ("unknown journal command '%s' (ls, show)"):format(sub)
    end
    opts.subcommand = sub
  end,
}

-- parse(argv0, argv) -> command, options | nil, exit code. The options
-- table has `command`, `argv0`, `args` (what the script gets) and one field
-- per flag given.
function M.parse(argv0, argv, version)
  local base = argv0:match("([^/]*)$")
  local name, first
  if base == "atoll-lua" then
    name, first = "lua", 1
  else
    name, first = argv[1], 2
    if name == nil then
      io.stderr:write(commands.main_usage(version))
      return nil, EXIT.USAGE
    end
    if name == "--version" or name == "-v" or name == "version" then
      io.stdout:write(("atoll %s (%s, libuv %s)\n"):format(version, jit.version,
        require("atoll.c.host").libuv_version))
      return nil, EXIT.OK
    end
    if name == "--help" or name == "-h" or name == "help" then
      local topic = argv[2]
      if topic == nil then
        io.stdout:write(commands.main_usage(version))
      elseif commands.by_name[topic] then
        io.stdout:write(commands.by_name[topic].usage)
      else
        return nil, usage_error(nil, "no help for unknown command '%s'", topic)
      end
      return nil, EXIT.OK
    end
  end
  local c = commands.by_name[name]
  if c == nil then
    if name:sub(1, 1) == "-" then return nil, usage_error(nil, "unknown flag '%s'", name) end
    return nil, usage_error(nil, "unknown command '%s'", name)
  end
  local opts = { command = name, argv0 = argv0, args = {} }
  if name == "lua" then
    local ok, code = parse_lua(c, opts, argv, first)
    if not ok then return nil, code end
    return c, opts
  end
  local ok, p = parse_flags(c, opts, argv, first)
  if not ok then return nil, p end
  local problem = positionals[name](opts, p)
  if problem then return nil, usage_error(name, "%s", problem) end
  return c, opts
end

return M
