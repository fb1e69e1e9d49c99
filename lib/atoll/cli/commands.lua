-- The one list of atoll's commands: each with its usage text, the flags it takes and the module that runs it.
local M = {}

-- Exit codes, as `atoll --help` and the README list them.
M.EXIT = { OK = 0, APP = 1, USAGE = 2, LOAD = 3, UNREACHABLE = 4, STUCK = 5, HEAP = 6, DOWNED = 7 }

-- Flags come in groups; a command takes a list of groups. A flag sets a
-- field of the options table: true (a switch), a string (a value), or the
-- values of a repeatable flag joined with commas.
local SWITCH, VALUE, REPEATABLE = "switch", "value", "repeatable"
M.SWITCH, M.VALUE, M.REPEATABLE = SWITCH, VALUE, REPEATABLE

local function group(list)
  local out = {}
  for _, f in ipairs(list) do out[#out + 1] = { flag = f[1], field = f[2], takes = f[3] } end
  return out
end

local common = group { { "--name", "name", VALUE }, { "--log-level", "log_level", VALUE } }
local secret = group { { "--cluster", "cluster", VALUE }, { "--secret", "secret", VALUE },
                       { "--secret-file", "secret_file", VALUE } }
local listen = group { { "--listen", "listen", VALUE }, { "--advertise", "advertise", VALUE },
                       { "--port-file", "port_file", VALUE } }
local node = group {
  { "--watch", "watch", SWITCH }, { "--max-frame", "max_frame", VALUE }, { "--max-queue", "max_queue", VALUE },
  { "--join", "join", REPEATABLE }, { "--discovery", "discovery", REPEATABLE },
  { "--membership", "membership", REPEATABLE }, { "--watchdog", "watchdog", REPEATABLE },
  { "--max-heap", "max_heap", VALUE }, { "--downing", "downing", VALUE },
  { "--stable-after", "stable_after", VALUE }, { "--when-downed", "when_downed", VALUE },
}
local journal = group { { "--journal", "journal", VALUE }, { "--data-dir", "data_dir", VALUE } }
local http = group { { "--http", "http", VALUE }, { "--http-static", "http_static", REPEATABLE } }
local show = group { { "--from", "from", VALUE }, { "--limit", "limit", VALUE }, { "--json", "json_output", SWITCH } }
local client = group { { "--node", "node", VALUE }, { "--timeout", "timeout", VALUE } }
local json = group { { "--json", "json_output", SWITCH } }
local virtual = group { { "--id", "id", VALUE }, { "--numeric-id", "numeric_id", SWITCH } }
local lua = group { { "--log-level", "log_level", VALUE } }

local EXIT_CODES = [[
Exit codes:
  0  success, or a graceful shutdown after SIGINT or SIGTERM
  1  the application raised an error or called atoll.exit with a non-zero code;
     for call and reload: the call failed on the node
  2  usage error: unknown command or flag, missing or bad argument
  3  the script could not be loaded: missing file or syntax error
  4  call, reload, members, singletons, receptionist and virtual: the node
     could not be reached, refused us, or did not answer
  5  the watchdog ended a node whose loop a handler kept blocked (--watchdog exit)
  6  the node's Lua heap stayed over its ceiling (--max-heap) after a collection
  7  the cluster downed the node and --when-downed is exit
  130, 143  a second SIGINT or SIGTERM stopped the node without waiting
]]

-- The commands, in the order `atoll --help` lists them. `synopsis` is that
-- list's line (a second one may follow); `usage` is `atoll help COMMAND`;
-- `groups` the flags it takes; `quiet` commands log warnings only unless
-- asked (their output is their answer); `run` names the module and function.
M.list = {
  {
    name = "run", synopsis = { "atoll run APP.lua [options] [ARGS...]", "run a node whose main script is APP.lua" },
    groups = { common, secret, listen, node, journal, http },
    run = { "atoll.cli.node", "run" },
    usage = [[
Usage: atoll run APP.lua [options] [ARGS...] [-- ARGS...]

Runs a node. APP.lua is the node's main script: it runs as the node's first
actor, so it can spawn actors and call them. The node keeps running while it
has work: timers, pending calls, watched files, a listening socket. SIGINT or
SIGTERM stops it gracefully. Modules are found next to APP.lua first.
ARGS reach the script as `arg` and as `...`; arguments that look like
flags go to the script only after --.

Options:
  --watch               reload actor modules when their files change
  --name NAME           the node's name, shown in logs (default: atoll)
  --log-level LEVEL     debug, info, warn, error or off (default: info)

Cluster options:
  --listen HOST:PORT    accept links from other nodes; port 0 picks a free port
  --advertise HOST:PORT the address other nodes reach this one at, when it is not
                        the listening one (0.0.0.0 in a container, behind NAT)
  --port-file FILE      write the port the node listens on to FILE
  --cluster NAME        the cluster's name; nodes of other clusters are refused
                        (default: atoll)
  --secret SECRET       the shared cluster secret (ps shows it: prefer the two below)
  --secret-file FILE    read the secret from FILE. A flag wins over ATOLL_SECRET,
                        which wins over ~/.atoll/secret (made on first use)
  --max-frame BYTES     the largest frame a link accepts (default: 16777216)
  --max-queue BYTES     the most a link may hold unsent before new calls fail
                        with `overloaded` (default: 67108864)
A node without --listen can still call other nodes (as a client: they cannot
call it back).

Persistence (see the README):
  --journal SPEC        where persistent actors' events go: sqlite (the default:
                        DATA-DIR/journal.db), sqlite:PATH, memory (lost on exit),
                        or postgres://USER:PASSWORD@HOST:PORT/DB (any libpq URI;
                        PGPASSWORD and ~/.pgpass work too). With --journal or
                        --data-dir, the journal is opened at start, and one that
                        cannot be is an error (exit 1); otherwise on first use.
  --data-dir DIR        the node's data, created if missing (default: ./atoll-data)

Watchdog (see the README):
  --watchdog KEY=SECONDS[,KEY=SECONDS...]
                        a thread that watches for handlers that do not return:
                        warn (1) logs the actor and method, interrupt (5) raises
                        an `interrupted` error in it, exit (30) ends the node
                        with code 5; 0 turns one off
  --max-heap SIZE       the Lua heap's ceiling, such as 512M or 4G (default: a
                        quarter of the machine's memory; 0: none). Past it the
                        allocating handler fails with `memory`; a heap that live
                        data keeps over it ends the node with code 6

HTTP (see the README):
  --http HOST:PORT      serve the app's HTTP routes, /health and /metrics here
                        (port 0 picks a free port; the log says which)
  --http-static [PREFIX=]DIR
                        serve the files under DIR at PREFIX (default /); repeatable

Membership (a listening node is a member of its cluster; see the README):
  --join HOST:PORT      join the cluster through this member, and try it again
                        whenever it is not a live member (every 10 s at most);
                        repeat it, or give several separated by commas. Without
                        --join or --discovery, the node starts a cluster of its own.
  --discovery SPEC      find members to join through: clusterd[:HOST:PORT] (the
                        daemon, default 127.0.0.1:3137) or dns:NAME[:PORT] (every
                        address NAME resolves to, at this node's port by default)
  --membership KEY=VALUE[,KEY=VALUE...]
                        membership settings, times in seconds: probe_interval (0.5),
                        probe_timeout (0.2), indirect_probes (3), suspicion_alpha (4),
                        suspicion_beta (4), confirmations (2), retransmit_lambda (4),
                        gossip_interval (0.2), gossip_fanout (3), max_lhm (8),
                        push_pull_interval (30), leave_grace (1.5), tombstone (300),
                        keep_unreachable (0), which --downing sets to 1 unless off
                        (members that cannot be reached stay until downed)

Split brains (see the README's "Cluster services"):
  --downing STRATEGY    keep-majority (the default): the side of a partition that
                        reaches more than half of the members (half, with the
                        oldest) downs the others once nothing has changed for
                        --stable-after, and a side without it stops its
                        singletons; static-quorum=N: a side needs N members;
                        off: nobody is downed, a member declared dead is down
                        and comes back up if it answers (no split-brain safety)
  --stable-after SECONDS
                        how long the unreachable members must stay the same
                        before a side acts (default: the shortest suspicion plus
                        one probe interval: 2.5 s up to 10 members)
  --when-downed ACTION  restart (the default): a node the cluster downed starts
                        again as a new run, in the same process; exit: it exits
                        with code 7, for a supervisor to restart
  -h, --help            show this help
]],
  },
  {
    name = "call",
    synopsis = { "atoll call --node HOST:PORT NAME METHOD [JSON-ARGS]", "call an actor of a running node" },
    groups = { common, secret, client }, quiet = true,
    run = { "atoll.cli.client", "call" },
    usage = [[
Usage: atoll call --node HOST:PORT [options] NAME METHOD [JSON-ARGS]

Calls METHOD of the actor registered as NAME on the node at HOST:PORT and
prints what it returns as JSON. JSON-ARGS is a JSON array of arguments, or a
single JSON value for one argument. A failed call prints its error on stderr
and exits with 1; a node that cannot be reached, with 4.

Options:
  --node HOST:PORT      the node to call (required)
  --timeout SECONDS     how long to wait for the answer (default: 5)
  --cluster NAME        the cluster's name (default: atoll)
  --secret SECRET, --secret-file FILE
                        the cluster secret (a flag wins over ATOLL_SECRET, which
                        wins over ~/.atoll/secret)
  --log-level LEVEL     debug, info, warn, error or off (default: warn)
  -h, --help            show this help
]],
  },
  {
    name = "reload", synopsis = { "atoll reload MODULE --node HOST:PORT", "reload an actor module on a running node" },
    groups = { common, secret, client }, quiet = true,
    run = { "atoll.cli.client", "reload" },
    usage = [[
Usage: atoll reload MODULE --node HOST:PORT [options]

Reloads the actor module MODULE on a running node, as --watch does when the
file changes: live actors keep their state and run the new code from their
next message; a module that fails to load leaves the old code running.
Exits with 1 if the reload failed (the reason is printed), with 4 if the
node cannot be reached.

Options: --node, --timeout, --cluster, --secret, --secret-file, --log-level,
as for atoll call.
]],
  },
  {
    name = "members", synopsis = { "atoll members --node HOST:PORT", "show a node's view of the cluster" },
    groups = { common, secret, client, json }, quiet = true,
    run = { "atoll.cli.client", "members" },
    usage = [[
Usage: atoll members --node HOST:PORT [options]

Prints the cluster as the node at HOST:PORT sees it: each member's name,
address, status (joining, up, leaving, down), incarnation and how long it has
had that status, by name; then the node's membership counters (probes,
suspicions, refutations, deaths, dropped packets...). A member that failed a
probe and has not refuted yet is marked suspect.

Options:
  --node HOST:PORT      the node to ask (required)
  --json                print the member list and counters as JSON
  --timeout, --cluster, --secret, --secret-file, --log-level: as for atoll call
]],
  },
  {
    name = "singletons", synopsis = { "atoll singletons --node HOST:PORT", "show the cluster's singletons" },
    groups = { common, secret, client, json }, quiet = true,
    run = { "atoll.cli.client", "singletons" },
    usage = [[
Usage: atoll singletons --node HOST:PORT [options]

Prints the cluster singletons the node at HOST:PORT knows: each one's name,
the member that runs it (or should: the oldest up member that hosts it), how
long its instance has run there, the calls held for it on the node asked
(while it moves, up to 2,048), and that node's counters: hand-overs (its
instance stopped here for another host), failovers (started here after a
host was downed or replaced by a new run), calls refused as overloaded
(`--json` adds held_total, the calls held in all). Then the node's side of
the cluster: whether it holds a majority, and its downing strategy.

Options:
  --node HOST:PORT      the node to ask (required)
  --json                print the same as JSON
  --timeout, --cluster, --secret, --secret-file, --log-level: as for atoll call
]],
  },
  {
    name = "receptionist",
    synopsis = { "atoll receptionist --node HOST:PORT [KEY]", "show the actors a node finds by key" },
    groups = { common, secret, client, json }, quiet = true,
    run = { "atoll.cli.client", "receptionist" },
    usage = [[
Usage: atoll receptionist --node HOST:PORT [KEY] [options]

Prints the receptionist's entries as the node at HOST:PORT sees them: each
key with the actors checked in under it, on any node of the cluster (the
node's address, the actor's id and type), by key, then address, then id;
with KEY, that key's only. Then the node's counters: entries (its own and
all it holds), changes sent and received, whole sets sent and received
(full exchanges and answers to pulls), digests, pulls, gaps, and messages
ignored or refused. At most 10,000 entries are printed.

Options:
  --node HOST:PORT      the node to ask (required)
  --json                print the entries and counters as JSON
  --timeout, --cluster, --secret, --secret-file, --log-level: as for atoll call
]],
  },
  {
    name = "virtual",
    synopsis = { "atoll virtual --node HOST:PORT [TYPE]", "show a node's virtual actors",
                 "atoll virtual --node HOST:PORT TYPE --id ID" },
    groups = { common, secret, client, json, virtual }, quiet = true,
    run = { "atoll.cli.client", "virtual" },
    usage = [[
Usage: atoll virtual --node HOST:PORT [TYPE] [options]
       atoll virtual --node HOST:PORT TYPE --id ID [--numeric-id] [options]

Prints the virtual actor types the node at HOST:PORT defines (with TYPE, that
one only): whether the node hosts it (may activate its ids), how long an
activation may stay idle before it is collected, and how many of its ids are
active on that node now. Then the node's counters, of every type: activations
made and collected there, calls forwarded to another node, activations handed
over to a new owner, and calls refused as overloaded (too many waited for one
id).

With --id, where the id ID of TYPE lives: the member that owns it in the view
of the node asked, and whether it is active on that node; then the owner is
asked too, for its own view and whether it is active there. ID is a string
unless --numeric-id is given: --id 42 names the id "42", --id 42 --numeric-id
the integer 42, and the two are different actors.

Exits with 1 when the node runs no virtual actors (it defines no virtual type)
or does not define TYPE.

Options:
  --node HOST:PORT      the node to ask (required)
  --id ID               the id to look for (needs TYPE)
  --numeric-id          ID is an integer, not a string
  --json                print the same as JSON
  --timeout, --cluster, --secret, --secret-file, --log-level: as for atoll call
]],
  },
  {
    name = "clusterd",
    synopsis = { "atoll clusterd [--listen HOST:PORT]", "run the discovery daemon nodes register with" },
    groups = { common, secret, listen },
    run = { "atoll.cli.node", "clusterd" },
    usage = [[
Usage: atoll clusterd [options]

Runs the discovery daemon. Nodes started with --discovery clusterd[:HOST:PORT]
register with it every few seconds and hear which other nodes did, so that
they find each other without a list of seeds. It is not a member itself: it
counts in no majority, and a cluster keeps running without it (new nodes then
cannot find it). Nodes that stop registering are forgotten after 20 s.

Options:
  --listen HOST:PORT    where nodes reach it (default: 127.0.0.1:3137)
  --advertise, --port-file, --cluster, --secret, --secret-file, --name,
  --log-level: as for atoll run
]],
  },
  {
    name = "journal", synopsis = { "atoll journal ls | show ID [options]", "look inside an event journal" },
    groups = { common, journal, show }, quiet = true,
    run = { "atoll.cli.journal", "run" },
    usage = [[
Usage: atoll journal ls [options]
       atoll journal show ID [options]

Looks inside an event journal. `ls` lists the persistence ids with their
number of events and last sequence number; `show ID` prints one id's events
as JSON lines ({"event":...,"seq":N}), oldest first. The journal may be
in use by running nodes.

Options:
  --journal SPEC        sqlite (default), sqlite:PATH, or postgres://... (as for run)
  --data-dir DIR        where the default SQLite journal is (default: ./atoll-data)
  --from SEQ            show: events after SEQ only
  --limit N             show: at most N events
  --json                ls: JSON lines instead of a table
  --log-level LEVEL     debug, info, warn, error or off (default: warn)
]],
  },
  {
    name = "lua",
    synopsis = { "atoll lua [options] [SCRIPT [ARGS...]]", "run a Lua script with atoll's modules",
                 "atoll lua [options] -e CODE [ARGS...]" },
    groups = { lua },
    run = { "atoll.cli.lua", "run" },
    usage = [[
Usage: atoll lua [options] [SCRIPT | -e CODE | -] [ARGS...]

A Lua interpreter (LuaJIT) with atoll's modules: `require "atoll"` works.
The script runs on the main thread like `lua SCRIPT`; `arg` and `...` hold
ARGS. The process ends when the script does; atoll.run(fn) runs actor code
(calls, sleeps, timers) to completion inside it. With no SCRIPT or with -,
the code is read from standard input.

Invoked through a link named atoll-lua, atoll behaves as `atoll lua`, so
tools that want an interpreter path can use it: busted --lua=atoll-lua.

Options:
  -e CODE              run CODE instead of a script
  --log-level LEVEL    debug, info, warn, error or off (default: info)
  -h, --help           show this help
]],
  },
}

M.by_name = {}
for _, c in ipairs(M.list) do M.by_name[c.name] = c end

-- The usage of `atoll` itself, from the list.
function M.main_usage(version)
  local lines = { ("atoll %s - a host for distributed actors written in Lua"):format(version), "", "Usage:" }
  local function line(left, right)
    if right == nil then
      lines[#lines + 1] = "  " .. left
    elseif #left <= 41 then
      lines[#lines + 1] = ("  %-43s%s"):format(left, right)
    else
      lines[#lines + 1] = "  " .. left
      lines[#lines + 1] = (" "):rep(45) .. right
    end
  end
  for _, c in ipairs(M.list) do
    line(c.synopsis[1], c.synopsis[2])
    if c.synopsis[3] then line(c.synopsis[3]) end
  end
  line("atoll help [COMMAND]", "show help for a command")
  line("atoll --version", "print the version")
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Run 'atoll help run' for the options of a node."
  lines[#lines + 1] = ""
  return table.concat(lines, "\n") .. "\n" .. EXIT_CODES
end

return M
