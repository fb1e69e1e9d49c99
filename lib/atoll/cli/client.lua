-- atoll call, reload, members, singletons, receptionist and virtual: one call to a running node, as a client.
local host = require "atoll.c.host"
local atoll = require "atoll"
local runtime = require "atoll.runtime"
local common = require "atoll.cli.common"

local M = {}

local say, cluster_secret, cluster_options = common.say, common.cluster_secret, common.cluster_options
local EXIT_APP, EXIT_USAGE, EXIT_UNREACHABLE = common.EXIT.APP, common.EXIT.USAGE, common.EXIT.UNREACHABLE

-- Runs body(cluster, timeout) -> exit code against the node at opts.node, as
-- a client: checks --node and the secret, connects, maps errors to exit
-- codes. Returns nil (the loop runs) or an exit code.
local function with_node(opts, body)
  local cluster = require "atoll.cluster"
  if not opts.node or not cluster.split_address(opts.node, "--node") then
    say((select(2, cluster.split_address(opts.node or "", "--node"))))
    return EXIT_USAGE
  end
  local secret, serr = cluster_secret(opts)
  if secret == nil then
    say(serr)
    return EXIT_USAGE
  end
  host.name(opts.name or "atoll-cli")
  cluster.client(cluster_options(opts, secret))
  local code = EXIT_APP
  local timeout = opts.timeout or 5
  runtime.start_root(function()
    local ok, err = cluster.connect(opts.node, timeout)
    if not ok then
      say(tostring(err.message or err))
      code = EXIT_UNREACHABLE
      return
    end
    code = body(cluster, timeout)
  end, function(ok, err, tb)
    if not ok then
      say(tostring(tb or err))
      code = EXIT_APP
    end
    host.stop(code)
  end, opts.command)
  runtime.drain()
  return nil
end

-- The exit code for a failed call: 4 when the node did not answer.
local function call_failed(opts, e)
  local kind = atoll.errors.kind(e)
  io.stderr:write("atoll ", opts.command, ": ", tostring(e), "\n")
  if kind == "unreachable" or kind == "timeout" then return EXIT_UNREACHABLE end
  return EXIT_APP
end

-- Asks the node actor at opts.node for `method` (with the arguments `args`, a list) and prints
-- its answer: as JSON with --json (the field `list` made an array), else as show(view) prints it.
-- prepare(view, cluster, timeout), if given, runs first and may end the command with an exit code.
local function show_view(opts, method, args, list, show, prepare)
  local json = require "atoll.util.json"
  return with_node(opts, function(cluster, timeout)
    local ok, view = pcall(cluster.call_name, opts.node, "atoll.node", method, timeout,
      unpack(args, 1, table.maxn(args)))
    if not ok then return call_failed(opts, view) end
    local code = prepare and prepare(view, cluster, timeout)
    if code then return code end
    if opts.json_output then
      view[list] = atoll.array(view[list])
      print(json.encode(view))
    else
      show(view)
    end
    return 0
  end)
end

-- atoll call / atoll reload: one call to a named actor of a running node.
local function run_client(opts)
  local json = require "atoll.util.json"
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
  return with_node(opts, function(cluster, timeout)
    local results = { pcall(cluster.call_name, opts.node, name, method, timeout,
      unpack(args, 1, table.maxn(args))) }
    if not results[1] then return call_failed(opts, results[2]) end
    if opts.command == "reload" then
      if results[2] then
        print(("reloaded %s on %s"):format(opts.module, opts.node))
        return 0
      end
      io.stderr:write("atoll reload: ", tostring(results[3]), "\n")
      return EXIT_APP
    end
    local n = table.maxn(results) - 1
    if n <= 1 then
      print(json.encode(results[2]))
    else
      local list = {}
      for i = 1, n do list[i] = results[i + 1] == nil and json.null or results[i + 1] end
      print(json.encode(atoll.array(list)))
    end
    return 0
  end)
end

local function ago(seconds)
  seconds = math.max(0, math.floor(seconds + 0.5))
  if seconds < 120 then return seconds .. "s" end
  if seconds < 7200 then return math.floor(seconds / 60) .. "m" end
  if seconds < 172800 then return math.floor(seconds / 3600) .. "h" end
  return math.floor(seconds / 86400) .. "d"
end

-- A cell's width on a terminal: its characters, not its bytes (names may be UTF-8).
local function width(s)
  return #s:gsub("[\128-\191]", "")
end

-- The lines of a table: each column as wide as its widest cell, two spaces apart.
local function columns(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, width(c)) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do cells[i] = i < #r and (c .. (" "):rep(widths[i] - width(c))) or c end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return lines
end

-- members_table(view, now) -> the lines of the member table `atoll members`
-- prints (now: wall-clock seconds): members by name, then address.
function M.members_table(view, now)
  local rows = { { "NAME", "ADDRESS", "STATUS", "INCARNATION", "SINCE" } }
  local members = {}
  for i, m in ipairs(view.members or {}) do members[i] = m end
  table.sort(members, function(a, b)
    if a.name ~= b.name then return a.name < b.name end
    return a.address < b.address
  end)
  for _, m in ipairs(members) do
    local status = m.status .. (m.suspect and " (suspect)" or "")
    rows[#rows + 1] = { (m.name ~= "" and m.name or "-") .. (m.self and " *" or ""), m.address, status,
                        ("%x"):format(m.incarnation), ago(now - m.since) .. " ago" }
  end
  return columns(rows)
end

-- Counters as lines of "name value" pairs, `per` to a line, in this order.
local function counter_lines(counters, order, per)
  local line = {}
  for _, k in ipairs(order) do
    if counters[k] then line[#line + 1] = ("%s %d"):format(k:gsub("_", " "), counters[k]) end
  end
  local lines = {}
  for i = 1, #line, per do lines[#lines + 1] = table.concat(line, ", ", i, math.min(i + per - 1, #line)) end
  return lines
end

-- The member table `atoll members` prints, and the counters.
local function print_members(view)
  for _, line in ipairs(M.members_table(view, host.wall() / 1000)) do print(line) end
  local s = view.stats or {}
  print()
  print(("majority: %s   (* is the node asked: %s)"):format(view.majority and "yes" or "NO", view.address))
  local order = { "probes", "indirect_probes", "acks", "nacks", "suspicions", "refutations", "deaths",
                  "leaves", "packets_sent", "packets_received", "bytes_sent", "dropped_malformed",
                  "dropped_auth", "send_failed", "unresolved", "gossip_pending", "health" }
  for _, line in ipairs(counter_lines(s, order, 4)) do print(line) end
end

-- atoll members: a node's view of the cluster.
function M.members(opts)
  return show_view(opts, "members", {}, "members", print_members, function(view)
    if not view.started then
      io.stderr:write("atoll members: ", opts.node, " is not a member of a cluster (it listens only)\n")
      return EXIT_APP
    end
  end)
end

-- singletons_table(list, now) -> the lines `atoll singletons` prints.
function M.singletons_table(list, now)
  local rows = { { "NAME", "HOST", "SINCE", "HELD", "HANDOVERS", "FAILOVERS", "OVERFLOWED" } }
  for _, s in ipairs(list) do
    rows[#rows + 1] = { s.name, s.host or "-", s.since and (ago(now - s.since) .. " ago") or "-",
                        tostring(s.held or 0), tostring(s.handovers or 0), tostring(s.failovers or 0),
                        tostring(s.overflowed or 0) }
  end
  return columns(rows)
end

-- atoll singletons: the singletons a node knows, with when each started where it runs.
function M.singletons(opts)
  -- How long each has run is known where it runs: ask those nodes (best effort).
  local function since_from_hosts(view, cluster, timeout)
    local asked = {}
    for _, s in ipairs(view.singletons) do
      if s.host and s.host ~= view.address and s.since == nil then
        local there = asked[s.host]
        if there == nil then
          local got, other = pcall(cluster.call_name, s.host, "atoll.node", "singletons", timeout)
          there = got and other or false
          asked[s.host] = there
        end
        for _, o in ipairs(there and there.singletons or {}) do
          if o.name == s.name then s.since = o.since end
        end
      end
    end
  end
  return show_view(opts, "singletons", {}, "singletons", function(view)
    for _, line in ipairs(M.singletons_table(view.singletons, host.wall() / 1000)) do print(line) end
    local d = view.downing or {}
    print()
    print(("%s: %s (%s of %s members reached), downing %s%s"):format(view.address, d.status or "?",
      tostring(d.reached or "?"), tostring(d.counted or "?"), d.strategy or "?",
      d.quorum and ("=" .. d.quorum) or ""))
  end, since_from_hosts)
end

-- receptionist_lines(view [, key]) -> what `atoll receptionist` prints: a
-- table of entries (key, node address, actor id, type), then the counters.
function M.receptionist_lines(view, key)
  local lines
  if #view.entries == 0 then
    lines = { key and ("no actor is checked in under " .. key) or "no actor is checked in" }
  else
    local rows = { { "KEY", "NODE", "ACTOR", "TYPE" } }
    for _, e in ipairs(view.entries) do
      rows[#rows + 1] = { e.key, e.address ~= "" and e.address or "-", tostring(e.id), e.type or "-" }
    end
    lines = columns(rows)
    if view.truncated then
      lines[#lines + 1] = ("(the first %d of %d entries)"):format(#view.entries, view.total)
    end
  end
  local s = view.stats or {}
  lines[#lines + 1] = ""
  lines[#lines + 1] = ("entries %d (own %d), members %d   (the node asked: %s)"):format(s.entries or 0, s.own or 0,
    s.members or 0, view.address)
  local order = { "changes_sent", "changes_received", "sets_sent", "sets_received", "digests_sent",
                  "digests_received", "pulls_sent", "gaps", "stale", "ignored", "refused" }
  for _, line in ipairs(counter_lines(s, order, 4)) do lines[#lines + 1] = line end
  return lines
end

-- atoll receptionist: a node's view of the receptionist's entries.
function M.receptionist(opts)
  return show_view(opts, "receptionist", { opts.key }, "entries", function(view)
    for _, line in ipairs(M.receptionist_lines(view, opts.key)) do print(line) end
  end)
end

-- An id as `atoll virtual` shows it: a string quoted, an integer bare, as JSON writes them.
local function show_id(id)
  return require("atoll.util.json").encode(id)
end

-- virtual_lines(view) -> what `atoll virtual` prints without --id: the node's virtual types (is
-- it a host, idle timeout, activations here), then its counters.
function M.virtual_lines(view)
  local rows = { { "TYPE", "HOSTED", "IDLE TIMEOUT", "ACTIVE" } }
  for _, t in ipairs(view.types) do
    rows[#rows + 1] = { t.name, t.hosted and "yes" or "no", ("%gs"):format(t.idle_timeout), tostring(t.active) }
  end
  local lines = columns(rows)
  lines[#lines + 1] = ""
  lines[#lines + 1] = ("counters of %s (every type):"):format(view.address)
  local order = { "activations", "passivations", "forwards", "handoffs", "overflowed" }
  for _, line in ipairs(counter_lines(view.counters or {}, order, 5)) do lines[#lines + 1] = line end
  return lines
end

-- virtual_where_lines(view) -> what `atoll virtual TYPE --id ID` prints: each node's view of the
-- id (the node asked, then the owner it names, whose answer prepare put in view.owner_answer:
-- { address, owner, active } or { address, error }), then what that comes to.
function M.virtual_where_lines(view)
  local w, answer = view.where, view.owner_answer
  local rows = { { "NODE", "SEES AS OWNER", "ACTIVE ON IT" } }
  rows[2] = { view.address .. " *", w.owner or "-", w.active and "yes" or "no" }
  if answer then
    rows[3] = { answer.address, answer.error and "?" or (answer.owner or "-"),
                answer.error and "?" or (answer.active and "yes" or "no") }
  end
  local lines = columns(rows)
  lines[#lines + 1] = ""
  local what = ("%s %s"):format(w.type, show_id(w.id))
  local owner = w.owner and (w.owner == view.address and w or answer)
  local verdict, hint
  if w.owner == nil then
    verdict = ("no member that hosts %s is up in the view of %s: calls to %s wait for one"):format(w.type,
      view.address, what)
  elseif owner.error then
    verdict = ("%s: its owner %s did not answer (%s)"):format(what, w.owner, owner.error)
  elseif owner.owner ~= w.owner then
    verdict = ("%s: %s and %s name different owners (the hosts of %s are changing)"):format(what, view.address,
      w.owner, w.type)
  elseif owner.active then
    verdict = ("%s is active on its owner, %s"):format(what, w.owner)
  else
    verdict = ("%s is not active on its owner, %s: the next call activates it there"):format(what, w.owner)
    if type(w.id) == "string" and w.id:match("^%-?%d+$") then
      hint = ("(ids are strings unless --numeric-id is given: the integer %s is another id)"):format(w.id)
    end
  end
  lines[#lines + 1] = verdict .. "   (* is the node asked)"
  lines[#lines + 1] = hint
  return lines
end

-- atoll virtual: a node's virtual actor types and counters, or where one id lives.
function M.virtual(opts)
  -- The owner's own view confirms (or not) what the node asked sees: it is asked in turn.
  local function check(view, cluster, timeout)
    if not view.running then
      io.stderr:write("atoll virtual: ", view.address, " runs no virtual actors (it defines no virtual type)\n")
      return EXIT_APP
    end
    if opts.type and #view.types == 0 then
      io.stderr:write(("atoll virtual: %s does not define the virtual type %s (atoll virtual --node %s lists "
        .. "those it does)\n"):format(view.address, opts.type, opts.node))
      return EXIT_APP
    end
    local w = view.where
    if w and w.owner and w.owner ~= view.address then
      local ok, there = pcall(cluster.call_name, w.owner, "atoll.node", "virtuals", timeout, opts.type, opts.id)
      if ok and there.where then
        view.owner_answer = { address = w.owner, owner = there.where.owner, active = there.where.active }
      else
        local why = ok and ("it does not define " .. opts.type) or tostring(there)
        view.owner_answer = { address = w.owner, error = why }
      end
    end
  end
  return show_view(opts, "virtuals", { opts.type, opts.id }, "types", function(view)
    local lines = view.where and M.virtual_where_lines(view) or M.virtual_lines(view)
    for _, line in ipairs(lines) do print(line) end
  end, check)
end

function M.call(opts)
  return run_client(opts)
end

function M.reload(opts)
  return run_client(opts)
end

return M
