-- Network namespaces for partition specs: nodes on a private bridge, cut into groups with nft, healed.
--
--   local net = netns.create(5)          -- or nil, reason (not root, no namespaces, no nft)
--   local p = net:spawn(1, { "run", app, "--listen", net.nodes[1].ip .. ":7000" }, { env = ... })
--   net:cut { { 1, 2, 3 }, { 4, 5 } }    -- packets between the groups are dropped, both ways
--   net:heal()
--
-- What it builds, all outside the machine's own network namespace (nothing is added to or
-- changed there): a "switch" namespace holding a bridge, and one namespace per node with lo up
-- and a veth whose other end is a port of that bridge, the node at 10.213.0.I/24. The names are
-- atoll-PID-SEQ-I (and -sw for the switch), PID this process's, so that parallel runs never
-- collide and what a dead run left can be told from what a live one uses: create removes the
-- atoll-PID-* namespaces of a PID that no longer runs.
--
-- A cut is an nft table in each node's namespace whose input chain drops every packet from the
-- nodes of other groups: TCP and UDP, established connections too, dropped rather than rejected
-- (and only on input, so that a sender gets no error either): it looks like a real partition,
-- where peers see timeouts, never resets.
--
-- Processes run in a namespace with `ip netns exec NS atoll ...`, which execs the command: the
-- process a spec holds is atoll itself, and signals reach it. They are started through
-- helpers.node, so they are stopped and checked like every node a spec starts. After each spec
-- every net is healed; at the end of the file every net still there is destroyed (its processes
-- stopped and checked, its namespaces deleted); and a guard process in a session of its own
-- deletes them if this process dies without doing so (a crash, SIGKILL, ^C).
local host = require "atoll.c.host"
local node = require "helpers.node"
local shell = require "helpers.shell"

local M = {}

M.subnet = "10.213.0" -- a /24 that exists only inside the namespaces
M.probe = "tests/helpers/netprobe.py"

local quote = shell.quote
local nets = {} -- the nets of this process not destroyed yet
local seq = 0

-- sh(script) -> true, output | false, output: runs a shell script, with its stderr in the output.
local function sh(script)
  local f = io.popen("(" .. script .. "\n) 2>&1; echo \"#exit $?\"")
  local out = f:read("*a")
  f:close()
  local code = tonumber(out:match("#exit (%d+)%s*$"))
  return code == 0, (out:gsub("#exit %d+%s*$", ""))
end

-- running(pid) -> whether a process with that pid exists
local function running(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end
M.running = running

-- The shell line that ends every process in the namespace ns and deletes it.
local function remove_lines(ns)
  return ("ip netns pids %s 2>/dev/null | xargs -r kill -9; ip netns del %s 2>/dev/null"):format(ns, ns)
end

-- Removes the atoll-PID-* namespaces that a process no longer running made.
local function reap_stale()
  local _, list = sh("ip netns list")
  local script = {}
  for name, pid in list:gmatch("(atoll%-(%d+)%-[%w%-]+)") do
    if not running(pid) then script[#script + 1] = remove_lines(quote(name)) end
  end
  if #script > 0 then sh(table.concat(script, "\n")) end
end

-- Why this machine cannot make nets, or nil.
local function unable()
  local _, uid = sh("id -u")
  uid = uid:gsub("%s", "")
  if uid ~= "0" then return "making network namespaces needs root, and this runs as uid " .. uid end
  if not sh("command -v ip") then return "`ip` is missing (Debian package iproute2; tools/deps test)" end
  if not sh("command -v nft") then return "`nft` is missing (Debian package nftables; tools/deps test)" end
  return nil
end

local Net = {}
Net.__index = Net

-- The guard: a process in a session of its own (so that ^C at a terminal does not reach it) that
-- removes the namespaces once this process is gone. Returns its pid.
local function start_guard(names)
  local lines = {}
  for _, ns in ipairs(names) do lines[#lines + 1] = remove_lines(ns) end
  local script = ("while kill -0 %d 2>/dev/null; do sleep 1; done\n%s"):format(host.pid(),
    table.concat(lines, "\n"))
  local f = io.popen(("setsid sh -c %s </dev/null >/dev/null 2>&1 & echo $!"):format(quote(script)))
  local pid = tonumber(f:read("*a"))
  f:close()
  return pid
end

-- create(n) -> net | nil, reason. n node namespaces (at most 200) on one bridge; net.nodes[i] is
-- { ns = NAME, ip = "10.213.0.I" }, net.switch the bridge's namespace, net.id what the names
-- share. The reason says why this machine cannot (not root, no namespaces, `nft` missing):
-- specs skip with it.
function M.create(n)
  assert(type(n) == "number" and n >= 1 and n <= 200, "netns.create needs a number of nodes, 1 to 200")
  local why = unable()
  if why then return nil, why end
  reap_stale()
  seq = seq + 1
  local id = ("%d-%d"):format(host.pid(), seq)
  local net = setmetatable({ id = id, switch = "atoll-" .. id .. "-sw", nodes = {}, procs = {}, down = {} }, Net)
  local names = { net.switch }
  for i = 1, n do
    net.nodes[i] = { ns = ("atoll-%s-%d"):format(id, i), ip = ("%s.%d"):format(M.subnet, i) }
    names[#names + 1] = net.nodes[i].ns
  end
  net.names = names
  -- Probe with the switch alone: the usual failure (no CAP_SYS_ADMIN in a container) says so.
  local ok, out = sh("ip netns add " .. net.switch)
  if not ok then return nil, "cannot make a network namespace (`ip netns add`): " .. out:gsub("%s+$", "") end
  net.guard = start_guard(names)
  nets[net] = true
  local sw = net.switch
  local script = { "set -e", "ip -n " .. sw .. " link set lo up", "ip -n " .. sw .. " link add br0 type bridge",
    "ip -n " .. sw .. " link set br0 up" }
  local function add(fmt, ...) script[#script + 1] = fmt:format(...) end
  for i, nd in ipairs(net.nodes) do
    add("ip netns add %s", nd.ns)
    add("ip -n %s link set lo up", nd.ns)
    -- Both ends are made inside namespaces: no link ever exists in the machine's own.
    add("ip -n %s link add eth0 type veth peer name v%d netns %s", nd.ns, i, sw)
    add("ip -n %s link set v%d master br0 up", sw, i)
    add("ip -n %s addr add %s/24 dev eth0", nd.ns, nd.ip)
    add("ip -n %s link set eth0 up", nd.ns)
    -- Nothing but the nodes' own traffic on the wire (no IPv6 router solicitations or DAD), and
    -- no rate limit on the ICMP errors that probes read as "reachable".
    add("ip netns exec %s sh -c 'f=/proc/sys/net/ipv6/conf/all/disable_ipv6; [ ! -e $f ] || echo 1 >$f; "
      .. "echo 0 >/proc/sys/net/ipv4/icmp_ratelimit'", nd.ns)
  end
  ok, out = sh(table.concat(script, "\n"))
  if not ok then
    net:destroy()
    return nil, "cannot build the namespaces' network: " .. out:gsub("%s+$", "")
  end
  return net
end

-- Node i of the net, or raises (at the caller of the method that asked).
local function checked(net, i)
  if net.destroyed then error("this net was destroyed", 3) end
  if not net.nodes[i] then error(("no node %s in this net of %d"):format(tostring(i), #net.nodes), 3) end
  return net.nodes[i]
end

-- The command argv (an array, file first) run in node i's namespace.
local function inside(net, i, argv)
  local cmd = { "ip", "netns", "exec", checked(net, i).ns }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  return cmd
end

-- net:start(i, argv [, opts]) -> process running the command argv (an array, file first) in
-- node i's namespace, as helpers.node's start_command: a probe, a server, anything.
function Net:start(i, argv, opts)
  local p = node.start_command(inside(self, i, argv), opts)
  self.procs[#self.procs + 1] = p
  return p
end

-- net:spawn(i, args [, opts]) -> process running `atoll args...` in node i's namespace: the same
-- object and cleanup as helpers.node's start (expect, stderr, kill, wait...); its pid is
-- atoll's. opts.env, opts.cwd.
function Net:spawn(i, args, opts)
  local argv = { node.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return self:start(i, argv, opts)
end

-- net:exec(i, argv [, opts]) -> exit code, stdout, stderr, signal of the command argv run in
-- node i's namespace, as helpers.node's exec_command (opts.env, opts.stdin, opts.timeout, 10 s
-- by default: raises past it). Runs in an actor (or atoll.run).
function Net:exec(i, argv, opts)
  return node.exec_command(inside(self, i, argv), opts)
end

-- Replaces node i's rules with a table dropping input from these addresses (none: no table).
local function rules_line(ns, drop)
  local nft = "table inet atoll\ndelete table inet atoll\n"
  if #drop > 0 then
    nft = nft .. ("table inet atoll { chain input { type filter hook input priority filter; policy accept; "
      .. "ip saddr { %s } drop; }; }\n"):format(table.concat(drop, ", "))
  end
  -- One nft -f is one transaction: the old rules and the new never both apply, nor neither.
  return ("ip netns exec %s nft -f - <<'EOF'\n%sEOF"):format(ns, nft)
end

local function apply(net, drops, what)
  local script = { "set -e" }
  for i, nd in ipairs(net.nodes) do script[#script + 1] = rules_line(nd.ns, drops[i] or {}) end
  local ok, out = sh(table.concat(script, "\n"))
  if not ok then error(what .. " failed: " .. out, 3) end
end

-- net:cut(groups): from now on packets between nodes of different groups are dropped, both
-- ways, TCP and UDP, established connections included; within a group they flow. groups is a
-- list of lists of node indices, { { 1, 2, 3 }, { 4, 5 } }; nodes in none form one more group
-- together (so cut { { 5 } } isolates node 5). Replaces the previous cut.
function Net:cut(groups)
  if self.destroyed then error("this net was destroyed", 2) end
  local group_of = {}
  for g, list in ipairs(groups) do
    for _, i in ipairs(list) do
      if not self.nodes[i] then error(("no node %s in this net of %d"):format(tostring(i), #self.nodes), 2) end
      if group_of[i] then error(("node %d is in two groups"):format(i), 2) end
      group_of[i] = g
    end
  end
  for i = 1, #self.nodes do group_of[i] = group_of[i] or 0 end
  local drops = {}
  for i = 1, #self.nodes do
    drops[i] = {}
    for j, nd in ipairs(self.nodes) do
      if group_of[j] ~= group_of[i] then drops[i][#drops[i] + 1] = nd.ip end
    end
  end
  apply(self, drops, "cut")
end

-- The shell lines that take node i's bridge port down or up. Up waits (5 s at most) until both
-- ends say so: the kernel turns the carrier on asynchronously, and a packet sent before that is
-- lost (a first ARP request, and its retry comes a second later).
local function link_lines(net, i, state)
  local lines = ("ip -n %s link set v%d %s"):format(net.switch, i, state)
  if state == "up" then
    lines = lines .. ("\nn=0; until ip -n %s -o link show eth0 | grep -q 'state UP' && "
      .. "ip -n %s -o link show v%d | grep -q 'state UP'; do n=$((n + 1)); [ $n -lt 500 ]; sleep 0.01; done")
      :format(net.nodes[i].ns, net.switch, i)
  end
  return lines
end

-- net:heal(): every rule gone and every link up: all nodes reach each other again.
function Net:heal()
  if self.destroyed then error("this net was destroyed", 2) end
  apply(self, {}, "heal")
  local script = { "set -e" }
  for i in pairs(self.down) do script[#script + 1] = link_lines(self, i, "up") end
  self.down = {}
  local ok, out = sh(table.concat(script, "\n"))
  if not ok then error("heal failed to bring the links up: " .. out, 2) end
end

-- net:link_down(i) / net:link_up(i): node i's port on the bridge down (its cable pulled at the
-- switch: its own interface stays configured, it only loses the carrier), or up again.
local function set_link(net, i, state)
  checked(net, i)
  local ok, out = sh("set -e\n" .. link_lines(net, i, state))
  if not ok then error(("link %s failed: %s"):format(state, out), 3) end
  net.down[i] = state == "down" or nil
end

function Net:link_down(i) set_link(self, i, "down") end
function Net:link_up(i) set_link(self, i, "up") end

-- net:destroy(): stops and checks the processes started in it that still run (as helpers.node
-- does), then ends anything else in its namespaces and deletes them all, with every link and
-- rule in them. Raises afterwards if a process did not stop cleanly. Runs again harmlessly.
function Net:destroy()
  if self.destroyed then return end
  self.destroyed = true
  nets[self] = nil
  local live = {}
  for _, p in ipairs(self.procs) do
    if not p.exited then live[#live + 1] = p end
  end
  local ok, problem = pcall(node.stop_and_check, live)
  local script = {}
  for k = #self.names, 1, -1 do script[#script + 1] = remove_lines(self.names[k]) end
  if self.guard then script[#script + 1] = ("kill -TERM -%d 2>/dev/null"):format(self.guard) end
  sh(table.concat(script, "\n"))
  if not ok then error(problem, 0) end
end

-- net:existing() -> the namespaces of this net that exist (`ip netns list`): none once destroyed.
function Net:existing()
  local _, list = sh("ip netns list")
  local out = {}
  for name in list:gmatch("(atoll%-[%w%-]+)") do
    if name:sub(1, #self.id + 7) == "atoll-" .. self.id .. "-" then out[#out + 1] = name end
  end
  return out
end

-- Every spec file that requires this helper gets its nets healed after each spec and destroyed
-- at its end (busted's API registers that in the file being loaded), like helpers.node's nodes.
local has_busted, busted = pcall(require, "busted")
if has_busted and type(busted) == "table" and busted.after_each then
  busted.after_each(function()
    for net in pairs(nets) do net:heal() end
  end)
  busted.teardown(function()
    local problems = {}
    for net in pairs(nets) do
      local ok, err = pcall(net.destroy, net)
      if not ok then problems[#problems + 1] = tostring(err) end
    end
    assert(#problems == 0, table.concat(problems, "\n"))
  end)
end

return M
