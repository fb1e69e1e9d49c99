-- bench/run http: the HTTP gateway. Prints BENCH lines.
--
--   http.get.rate            keep-alive GETs/s of a small static file (wrk -t1 -c64 -d5s)
--   peer.nginx.get.rate      nginx (one worker, as atoll is one thread) serving the same file
--                            to the same wrk command
--   http.streams.10k.rss.mib the node's RSS with 10,000 JSON-lines streams open
--   http.jsonl.msg.rate      messages/s echoed through 1,000 open JSON-lines streams
--   http.ws.echo.p99.us      WebSocket echo round trip, 99th percentile (Node's ws client)
--
--   atoll lua bench/http.lua BUILD/atoll
local atoll = require "atoll"
local process = require "atoll.process"
local tcp = require "atoll.tcp"
atoll.log.level("warn")

local bin = assert(arg[1], "usage: atoll lua bench/http.lua BUILD/atoll")

local function bench(name, value, unit, fmt)
  print(("BENCH %s " .. (fmt or "%.0f") .. " %s"):format(name, value, unit))
  io.stdout:flush()
end

package.path = "tests/?.lua;" .. package.path
local shell = require "helpers.shell"
local capture = shell.capture

local function sh(cmd)
  assert(shell.run(cmd), cmd)
end

local function rss_mib(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local kb = f:read("*a"):match("VmRSS:%s+(%d+) kB")
  f:close()
  return tonumber(kb) / 1024
end

local function wrk(url)
  local p = assert(process.spawn { "wrk", "-t1", "-c64", "-d5s", url })
  assert(p:wait(60) == 0, "wrk failed: " .. p:stderr())
  local rate = p:stdout():match("Requests/sec:%s+([%d.]+)")
  local errors = p:stdout():match("Non%-2xx or 3xx responses: (%d+)")
  assert(rate, "wrk printed no rate:\n" .. p:stdout())
  assert(errors == nil, "wrk saw errors:\n" .. p:stdout())
  return tonumber(rate)
end

local function free_port()
  local s = assert(require("atoll.c.http").listen("127.0.0.1", 0, {}, function() end))
  local port = s:port()
  s:close()
  return port
end

local cleanup = {} -- run whatever happens: no server outlives the benchmark

local function main()
  local dir = capture("mktemp -d /tmp/atoll-bench-http.XXXXXX"):gsub("%s+$", "")
  cleanup[#cleanup + 1] = function() os.execute("rm -rf " .. dir) end
  sh("mkdir -p " .. dir .. "/www && chmod 755 " .. dir)  -- nginx workers may run as nobody
  local page = io.open(dir .. "/www/index.html", "w")
  page:write("<!doctype html><title>atoll</title>", ("<p>tic-tac-toe</p>\n"):rep(30))
  page:close()

  -- The node.
  local node = assert(process.spawn { bin, "run", "bench/apps/http_server.lua",
    env = { BENCH_STATIC = dir .. "/www" } })
  table.insert(cleanup, 1, function() node:kill("SIGTERM") node:wait(10) end)
  local _, port = node:expect("^http port (%d+)$", 10)
  local base = "http://127.0.0.1:" .. port
  wrk(base .. "/index.html") -- warm up
  bench("http.get.rate", wrk(base .. "/index.html"), "req/s")

  -- nginx, one worker, the same file, the same wrk.
  local nport = free_port()
  local conf = io.open(dir .. "/nginx.conf", "w")
  conf:write(([[
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { text/html html; }
  server { listen 127.0.0.1:%d; root %s/www; }
}
]]):format(dir, dir, nport, dir))
  conf:close()
  local nginx = assert(process.spawn { "/usr/sbin/nginx", "-c", dir .. "/nginx.conf", "-p", dir })
  table.insert(cleanup, 1, function() nginx:kill("SIGTERM") nginx:wait(10) end)
  local up = false
  for _ = 1, 50 do
    local s = tcp.connect("127.0.0.1", nport, 1)
    if s then
      s:close()
      up = true
      break
    end
    atoll.sleep(0.1) -- nginx says nothing when it is ready; its port does
  end
  assert(up, "nginx did not start:\n" .. capture("cat " .. dir .. "/error.log"))
  wrk("http://127.0.0.1:" .. nport .. "/index.html")
  bench("peer.nginx.get.rate", wrk("http://127.0.0.1:" .. nport .. "/index.html"), "req/s")
  nginx:kill("SIGQUIT")
  nginx:wait(10)

  -- 10,000 open JSON-lines streams.
  local head = "POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Type: application/jsonl\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n"
  local streams = {}
  local rss0 = rss_mib(node:pid())
  for i = 1, 10000 do
    local s = assert(tcp.connect("127.0.0.1", tonumber(port), 10))
    s:write(head)
    streams[i] = s
  end
  for i = 1, 10000 do
    local got = ""
    while not got:find("\r\n\r\n", 1, true) do
      got = got .. assert(streams[i]:read(10))
    end
  end
  local rss = rss_mib(node:pid())
  bench("http.streams.10k.rss.mib", rss, "MiB", "%.1f")
  io.stderr:write(("(RSS %.1f MiB before the streams)\n"):format(rss0))

  -- Messages through 1,000 of them: each stream keeps a batch of 8 in flight.
  local line = '{"move":{"position":4,"team":"fish"}}\n'
  local batch = ("%x\r\n%s\r\n"):format(#line * 8, line:rep(8))
  local total, seconds = 0, 3
  local deadline = atoll.now() + seconds
  local t0 = atoll.now()
  local tasks = {}
  for i = 1, 1000 do
    tasks[i] = atoll.task(function()
      local s, n = streams[i], 0
      while atoll.now() < deadline do
        s:write(batch)
        local want = 8
        while want > 0 do
          local data = s:read(10)
          if not data then return n end
          local _, k = data:gsub('"move"', "")
          want = want - k
          n = n + k
        end
      end
      return n
    end)
  end
  for i = 1, 1000 do total = total + tasks[i]:wait(60) end
  bench("http.jsonl.msg.rate", total / (atoll.now() - t0), "msg/s")
  for _, s in ipairs(streams) do s:close() end

  -- WebSocket echo latency.
  local ws = assert(process.spawn { "node", "bench/peers/ws_latency.mjs", "ws://127.0.0.1:" .. port .. "/echo", "20000" })
  assert(ws:wait(120) == 0, ws:stderr())
  local p99 = ws:stdout():match("p99 ([%d.]+)")
  bench("http.ws.echo.p99.us", tonumber(p99), "us")

  node:kill("SIGTERM")
  node:wait(10)
end

atoll.run_for(900, function()
  local ok, err = xpcall(main, debug.traceback)
  for _, fn in ipairs(cleanup) do pcall(fn) end
  process.kill_all()
  if not ok then error(err, 0) end
end)
