-- A real PostgreSQL server for specs (and benchmarks): initdb into a temporary directory, pg_ctl
-- on a loopback port and a socket in that directory; stop() removes it all. Password
-- authentication over TCP (scram-sha-256), so that a wrong password can be tested.
local host = require "atoll.c.host"

local M = {}

local shell = require "helpers.shell"
local sh, capture = shell.run, shell.capture

local function bindir()
  local dir = capture("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1"):gsub("%s+$", "")
  assert(dir ~= "", "PostgreSQL's server is not installed (Debian package postgresql)")
  return dir
end

local function free_port()
  -- A port nothing listens on, from this process's random bytes.
  for _ = 1, 50 do
    local b = host.random_bytes(2)
    local port = 20000 + (b:byte(1) * 256 + b:byte(2)) % 30000
    if not sh(("(exec 3<>/dev/tcp/127.0.0.1/%d) 2>/dev/null"):format(port)) then return port end
  end
  error("no free port found for PostgreSQL")
end

M.PASSWORD = "atoll-spec-pw"

-- start() -> server: { url, port, dir, stop = fn, restart = fn }
function M.start()
  local bin = bindir()
  local dir = capture("mktemp -d /tmp/atoll-pg.XXXXXX"):gsub("%s+$", "")
  local root = capture("id -u"):gsub("%s+$", "") == "0"
  -- initdb refuses to run as root: as root, the server runs as postgres.
  local as = root and "runuser -u postgres -- " or ""
  if root then assert(sh("chown postgres '" .. dir .. "'")) end
  local pwfile = dir .. "/pw"
  local f = assert(io.open(pwfile, "w"))
  f:write(M.PASSWORD, "\n")
  f:close()
  if root then sh("chown postgres '" .. pwfile .. "'") end
  local ok = sh(("%s%s/initdb -D '%s/data' -U atoll --pwfile='%s' --auth-local=trust "
    .. "--auth-host=scram-sha-256 -E UTF8 --no-locale >'%s/initdb.log' 2>&1"):format(as, bin, dir,
    pwfile, dir))
  assert(ok, "initdb failed:\n" .. (capture("cat '" .. dir .. "/initdb.log'")))
  local server = { dir = dir }
  local function pg_ctl(what, extra)
    return sh(("%s%s/pg_ctl -D '%s/data' -l '%s/log' %s %s >/dev/null 2>&1"):format(as, bin, dir, dir,
      extra or "", what))
  end
  -- start(): starts it (again: on the same port, so that clients reconnect)
  function server.start()
    for _ = 1, 5 do
      local port = server.port or free_port()
      if pg_ctl("start", ("-w -o \"-k %s -p %d -h 127.0.0.1\""):format(dir, port)) then
        server.port = port
        server.url = ("postgres://atoll:%s@127.0.0.1:%d/postgres"):format(M.PASSWORD, port)
        return server
      end
      if server.port then break end
    end
    error("PostgreSQL did not start:\n" .. capture("tail -20 '" .. dir .. "/log'"))
  end
  -- stop(): the server stops (its data stays, for start again)
  function server.halt()
    pg_ctl("stop", "-m fast -w")
  end
  -- remove(): stops it and removes everything
  function server.stop()
    pg_ctl("stop", "-m immediate -w")
    sh("rm -rf '" .. dir .. "'")
  end
  -- psql(sql): runs SQL as the spec's user
  function server.psql(sql)
    return capture(("PGPASSWORD=%s psql -X -q -t -A 'postgres://atoll@127.0.0.1:%d/postgres' -c \"%s\" 2>&1")
      :format(M.PASSWORD, server.port, sql))
  end
  return server.start()
end

return M
