-- What the commands share: messages, exit codes, loading scripts, the cluster secret.
local host = require "atoll.c.host"
local commands = require "atoll.cli.commands"

local M = {}

M.EXIT = commands.EXIT

function M.say(msg)
  io.stderr:write("atoll: ", msg, "\n")
end

function M.set_arg(script, args, argv0)
  local a = { [0] = script, [-1] = argv0 }
  for i, v in ipairs(args) do a[i] = v end
  _G.arg = a
end

-- Loads a script the way `lua` does, with a message that says what is wrong.
function M.load_script(path)
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
function M.cluster_secret(opts)
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
function M.cluster_options(opts, secret)
  return {
    listen = opts.listen, advertise = opts.advertise, secret = secret,
    cluster = opts.cluster or "atoll", name = opts.name or "atoll",
    max_frame = opts.max_frame, max_queue = opts.max_queue,
  }
end

return M
