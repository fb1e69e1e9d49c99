/* atoll's command line: parses the command and its flags, then hands the node to the Lua runtime.
 */
#include <lauxlib.h>
#include <luajit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "vm.h"

#ifndef ATOLL_VERSION
#define ATOLL_VERSION "0.0.0"
#endif

/* Exit codes, documented in the README and in --help. */
enum {
  EXIT_OK = 0,
  EXIT_APP = 1,   /* the application raised an error or called atoll.exit(1) */
  EXIT_USAGE = 2, /* unknown command or flag, missing or bad argument */
  EXIT_LOAD = 3,  /* the script could not be loaded: missing file, syntax error */
};

static const char usage_main[] =
    "atoll " ATOLL_VERSION " - a host for distributed actors written in Lua\n"
    "\n"
    "Usage:\n"
    "  atoll run APP.lua [options] [ARGS...]      run a node whose main script is APP.lua\n"
    "  atoll call --node HOST:PORT NAME METHOD [JSON-ARGS]\n"
    "                                             call an actor of a running node\n"
    "  atoll reload MODULE --node HOST:PORT       reload an actor module on a running node\n"
    "  atoll members --node HOST:PORT             show a node's view of the cluster\n"
    "  atoll clusterd [--listen HOST:PORT]        run the discovery daemon nodes register with\n"
    "  atoll journal ls | show ID [options]       look inside an event journal\n"
    "  atoll lua [options] [SCRIPT [ARGS...]]     run a Lua script with atoll's modules\n"
    "  atoll lua [options] -e CODE [ARGS...]\n"
    "  atoll help [COMMAND]                       show help for a command\n"
    "  atoll --version                            print the version\n"
    "\n"
    "Run 'atoll help run' for the options of a node.\n"
    "\n"
    "Exit codes:\n"
    "  0  success, or a graceful shutdown after SIGINT or SIGTERM\n"
    "  1  the application raised an error or called atoll.exit with a non-zero code;\n"
    "     for call and reload: the call failed on the node\n"
    "  2  usage error: unknown command or flag, missing or bad argument\n"
    "  3  the script could not be loaded: missing file or syntax error\n"
    "  4  call, reload and members: the node could not be reached, refused us, or did\n"
    "     not answer\n"
    "  5  the watchdog ended a node whose loop a handler kept blocked (--watchdog exit)\n"
    "  6  the node's Lua heap stayed over its ceiling (--max-heap) after a collection\n"
    "  130, 143  a second SIGINT or SIGTERM stopped the node without waiting\n";

static const char usage_run[] =
    "Usage: atoll run APP.lua [options] [ARGS...] [-- ARGS...]\n"
    "\n"
    "Runs a node. APP.lua is the node's main script: it runs as the node's first\n"
    "actor, so it can spawn actors and call them. The node keeps running while it\n"
    "has work: timers, pending calls, watched files, a listening socket. SIGINT or\n"
    "SIGTERM stops it gracefully. Modules are found next to APP.lua first.\n"
    "ARGS reach the script as `arg` and as `...`; arguments that look like\n"
    "flags go to the script only after --.\n"
    "\n"
    "Options:\n"
    "  --watch               reload actor modules when their files change\n"
    "  --name NAME           the node's name, shown in logs (default: atoll)\n"
    "  --log-level LEVEL     debug, info, warn, error or off (default: info)\n"
    "\n"
    "Cluster options:\n"
    "  --listen HOST:PORT    accept links from other nodes; port 0 picks a free port\n"
    "  --advertise HOST:PORT the address other nodes reach this one at, when it is not\n"
    "                        the listening one (0.0.0.0 in a container, behind NAT)\n"
    "  --port-file FILE      write the port the node listens on to FILE\n"
    "  --cluster NAME        the cluster's name; nodes of other clusters are refused\n"
    "                        (default: atoll)\n"
    "  --secret SECRET       the shared cluster secret (ps shows it: prefer the two below)\n"
    "  --secret-file FILE    read the secret from FILE. A flag wins over ATOLL_SECRET,\n"
    "                        which wins over ~/.atoll/secret (made on first use)\n"
    "  --max-frame BYTES     the largest frame a link accepts (default: 16777216)\n"
    "  --max-queue BYTES     the most a link may hold unsent before new calls fail\n"
    "                        with `overloaded` (default: 67108864)\n"
    "\n"
    "Persistence (see the README):\n"
    "  --journal SPEC        where persistent actors' events go: sqlite (the default:\n"
    "                        DATA-DIR/journal.db), sqlite:PATH, memory (lost on exit),\n"
    "                        or postgres://USER:PASSWORD@HOST:PORT/DB (any libpq URI;\n"
    "                        PGPASSWORD and ~/.pgpass work too). With --journal or\n"
    "                        --data-dir, the journal is opened at start, and one that\n"
    "                        cannot be is an error (exit 1); otherwise on first use.\n"
    "  --data-dir DIR        the node's data, created if missing (default: ./atoll-data)\n"
    "\n"
    "Watchdog (see the README):\n"
    "  --watchdog KEY=SECONDS[,KEY=SECONDS...]\n"
    "                        a thread that watches for handlers that do not return:\n"
    "                        warn (1) logs the actor and method, interrupt (5) raises\n"
    "                        an `interrupted` error in it where LuaJIT can (not in a\n"
    "                        compiled loop), exit (30) ends the node with code 5;\n"
    "                        0 turns one off\n"
    "  --max-heap SIZE       the Lua heap's ceiling, such as 512M or 4G (default: a\n"
    "                        quarter of the machine's memory; 0: none). Past it the\n"
    "                        allocating handler fails with `memory`; a heap that live\n"
    "                        data keeps over it ends the node with code 6\n"
    "\n"
    "HTTP (see the README):\n"
    "  --http HOST:PORT      serve the app's HTTP routes, /health and /metrics here\n"
    "                        (port 0 picks a free port; the log says which)\n"
    "  --http-static [PREFIX=]DIR\n"
    "                        serve the files under DIR at PREFIX (default /); repeatable\n"
    "\n"
    "Membership (a listening node is a member of its cluster; see the README):\n"
    "  --join HOST:PORT      join the cluster through this member, and try it again\n"
    "                        whenever it is not a live member (every 10 s at most);\n"
    "                        repeat it, or give several separated by commas. Without\n"
    "                        --join or --discovery, the node starts a cluster of its own.\n"
    "  --discovery SPEC      find members to join through: clusterd[:HOST:PORT] (the\n"
    "                        daemon, default 127.0.0.1:3137) or dns:NAME[:PORT] (every\n"
    "                        address NAME resolves to, at this node's port by default)\n"
    "  --membership KEY=VALUE[,KEY=VALUE...]\n"
    "                        membership settings, times in seconds: probe_interval (0.5),\n"
    "                        probe_timeout (0.2), indirect_probes (3), suspicion_alpha (4),\n"
    "                        suspicion_beta (4), confirmations (2), retransmit_lambda (4),\n"
    "                        gossip_interval (0.2), gossip_fanout (3), max_lhm (8),\n"
    "                        push_pull_interval (30), leave_grace (1.5), tombstone (300)\n"
    "  -h, --help            show this help\n";

static const char usage_call[] =
    "Usage: atoll call --node HOST:PORT [options] NAME METHOD [JSON-ARGS]\n"
    "\n"
    "Calls METHOD of the actor registered as NAME on the node at HOST:PORT and\n"
    "prints what it returns as JSON. JSON-ARGS is a JSON array of arguments, or a\n"
    "single JSON value for one argument. A failed call prints its error on stderr\n"
    "and exits with 1; a node that cannot be reached, with 4.\n"
    "\n"
    "Options:\n"
    "  --node HOST:PORT      the node to call (required)\n"
    "  --timeout SECONDS     how long to wait for the answer (default: 5)\n"
    "  --cluster NAME        the cluster's name (default: atoll)\n"
    "  --secret SECRET, --secret-file FILE\n"
    "                        the cluster secret (a flag wins over ATOLL_SECRET, which\n"
    "                        wins over ~/.atoll/secret)\n"
    "  --log-level LEVEL     debug, info, warn, error or off (default: warn)\n"
    "  -h, --help            show this help\n";

static const char usage_reload[] =
    "Usage: atoll reload MODULE --node HOST:PORT [options]\n"
    "\n"
    "Reloads the actor module MODULE on a running node, as --watch does when the\n"
    "file changes: live actors keep their state and run the new code from their\n"
    "next message; a module that fails to load leaves the old code running.\n"
    "Exits with 1 if the reload failed (the reason is printed), with 4 if the\n"
    "node cannot be reached.\n"
    "\n"
    "Options: --node, --timeout, --cluster, --secret, --secret-file, --log-level,\n"
    "as for atoll call.\n";

static const char usage_members[] =
    "Usage: atoll members --node HOST:PORT [options]\n"
    "\n"
    "Prints the cluster as the node at HOST:PORT sees it: each member's name,\n"
    "address, status (joining, up, leaving, down), incarnation and how long it has\n"
    "had that status; then the node's membership counters (probes, suspicions,\n"
    "refutations, deaths, dropped packets...). A member that failed a probe and\n"
    "has not refuted yet is marked suspect.\n"
    "\n"
    "Options:\n"
    "  --node HOST:PORT      the node to ask (required)\n"
    "  --json                print the member list and counters as JSON\n"
    "  --timeout, --cluster, --secret, --secret-file, --log-level: as for atoll call\n";

static const char usage_clusterd[] =
    "Usage: atoll clusterd [options]\n"
    "\n"
    "Runs the discovery daemon. Nodes started with --discovery clusterd[:HOST:PORT]\n"
    "register with it every few seconds and hear which other nodes did, so that\n"
    "they find each other without a list of seeds. It is not a member itself: it\n"
    "counts in no majority, and a cluster keeps running without it (new nodes then\n"
    "cannot find it). Nodes that stop registering are forgotten after 20 s.\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT    where nodes reach it (default: 127.0.0.1:3137)\n"
    "  --advertise, --port-file, --cluster, --secret, --secret-file, --name,\n"
    "  --log-level: as for atoll run\n";

static const char usage_journal[] =
    "Usage: atoll journal ls [options]\n"
    "       atoll journal show ID [options]\n"
    "\n"
    "Looks inside an event journal. `ls` lists the persistence ids with their\n"
    "number of events and last sequence number; `show ID` prints one id's events\n"
    "as JSON lines ({\"seq\":N,\"event\":...}), oldest first. The journal may be\n"
    "in use by running nodes.\n"
    "\n"
    "Options:\n"
    "  --journal SPEC        sqlite (default), sqlite:PATH, or postgres://... (as for run)\n"
    "  --data-dir DIR        where the default SQLite journal is (default: ./atoll-data)\n"
    "  --from SEQ            show: events after SEQ only\n"
    "  --limit N             show: at most N events\n"
    "  --json                ls: JSON lines instead of a table\n"
    "  --log-level LEVEL     debug, info, warn, error or off (default: warn)\n";

static const char usage_lua[] =
    "Usage: atoll lua [options] [SCRIPT | -e CODE | -] [ARGS...]\n"
    "\n"
    "A Lua interpreter (LuaJIT) with atoll's modules: `require \"atoll\"` works.\n"
    "The script runs on the main thread like `lua SCRIPT`; `arg` and `...` hold\n"
    "ARGS. The process ends when the script does; atoll.run(fn) runs actor code\n"
    "(calls, sleeps, timers) to completion inside it. With no SCRIPT or with -,\n"
    "the code is read from standard input.\n"
    "\n"
    "Invoked through a link named atoll-lua, atoll behaves as `atoll lua`, so\n"
    "tools that want an interpreter path can use it: busted --lua=atoll-lua.\n"
    "\n"
    "Options:\n"
    "  -e CODE              run CODE instead of a script\n"
    "  --log-level LEVEL    debug, info, warn, error or off (default: info)\n"
    "  -h, --help           show this help\n";

/* A flag and the field of the options table it sets (a string, or true). */
enum { FLAG = 0, VALUE = 1, REPEATABLE = 2 /* values joined with commas */ };

typedef struct option_s {
  const char *flag;
  const char *field;
  int takes_value;
} option_t;

/* Flags come in groups; a command takes a list of groups. */
static const option_t common_flags[] = {
    {"--name", "name", VALUE},
    {"--log-level", "log_level", VALUE},
    {NULL, NULL, 0},
};

static const option_t secret_flags[] = {
    {"--cluster", "cluster", VALUE},
    {"--secret", "secret", VALUE},
    {"--secret-file", "secret_file", VALUE},
    {NULL, NULL, 0},
};

static const option_t listen_flags[] = {
    {"--listen", "listen", VALUE},
    {"--advertise", "advertise", VALUE},
    {"--port-file", "port_file", VALUE},
    {NULL, NULL, 0},
};

static const option_t node_flags[] = {
    {"--watch", "watch", FLAG},
    {"--max-frame", "max_frame", VALUE},
    {"--max-queue", "max_queue", VALUE},
    {"--join", "join", REPEATABLE},
    {"--discovery", "discovery", REPEATABLE},
    {"--membership", "membership", REPEATABLE},
    {"--watchdog", "watchdog", REPEATABLE},
    {"--max-heap", "max_heap", VALUE},
    {NULL, NULL, 0},
};

static const option_t journal_flags[] = {
    {"--journal", "journal", VALUE},
    {"--data-dir", "data_dir", VALUE},
    {NULL, NULL, 0},
};

static const option_t http_flags[] = {
    {"--http", "http", VALUE},
    {"--http-static", "http_static", REPEATABLE},
    {NULL, NULL, 0},
};

static const option_t show_flags[] = {
    {"--from", "from", VALUE},
    {"--limit", "limit", VALUE},
    {"--json", "json_output", FLAG},
    {NULL, NULL, 0},
};

static const option_t client_flags[] = {
    {"--node", "node", VALUE},
    {"--timeout", "timeout", VALUE},
    {NULL, NULL, 0},
};

static const option_t members_flags[] = {
    {"--json", "json_output", FLAG},
    {NULL, NULL, 0},
};

static const option_t lua_flags[] = {
    {"--log-level", "log_level", VALUE},
    {NULL, NULL, 0},
};

static const option_t *const run_options[] = {common_flags,  secret_flags, listen_flags, node_flags,
                                              journal_flags, http_flags,   NULL};
static const option_t *const journal_options[] = {common_flags, journal_flags, show_flags, NULL};
static const option_t *const clusterd_options[] = {common_flags, secret_flags, listen_flags, NULL};
static const option_t *const client_options[] = {common_flags, secret_flags, client_flags, NULL};
static const option_t *const members_options[] = {common_flags, secret_flags, client_flags,
                                                  members_flags, NULL};
static const option_t *const lua_options[] = {lua_flags, NULL};

#define MAX_OPTIONS 32
#define MAX_ARGS    256

#define JOINED_MAX 8192 /* bytes for the values of repeated flags */

typedef struct cli_s {
  const char *command; /* "run", "lua", "call", "reload", "members" or "clusterd" */
  const char *keys[MAX_OPTIONS];
  const char *values[MAX_OPTIONS]; /* NULL for a flag without a value */
  int nopts;
  const char *positional[MAX_ARGS];
  int npositional;
  char *args[MAX_ARGS]; /* what the script gets (run, lua) */
  int nargs;
  const char *code;        /* lua -e CODE */
  char joined[JOINED_MAX]; /* storage for repeated flags' joined values */
  size_t joined_len;
} cli_t;

static int usage_error(const char *command, const char *fmt, const char *arg) {
  fprintf(stderr, "atoll%s%s: ", command ? " " : "", command ? command : "");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'atoll help%s%s' for usage.\n", command ? " " : "",
          command ? command : "");
  return EXIT_USAGE;
}

static const char *option(const cli_t *cli, const char *field) {
  for (int i = 0; i < cli->nopts; i++) {
    if (strcmp(cli->keys[i], field) == 0) return cli->values[i] ? cli->values[i] : "";
  }
  return NULL;
}

/* A repeated flag's values, joined with commas: 0, or -1 if they do not fit. */
static int append_option(cli_t *cli, int i, const char *value) {
  size_t old = strlen(cli->values[i]), add = strlen(value);
  if (cli->joined_len + old + add + 2 > JOINED_MAX) return -1;
  char *dst = cli->joined + cli->joined_len;
  memcpy(dst, cli->values[i], old);
  dst[old] = ',';
  memcpy(dst + old + 1, value, add + 1);
  cli->joined_len += old + add + 2;
  cli->values[i] = dst;
  return 0;
}

static void set_option(cli_t *cli, const char *field, const char *value) {
  for (int i = 0; i < cli->nopts; i++) {
    if (strcmp(cli->keys[i], field) == 0) {
      cli->values[i] = value;
      return;
    }
  }
  if (cli->nopts < MAX_OPTIONS) {
    cli->keys[cli->nopts] = field;
    cli->values[cli->nopts] = value;
    cli->nopts++;
  }
}

/* The option argv names among these groups (--flag or --flag=VALUE), or NULL. */
static const option_t *find_option(const option_t *const *groups, const char *a) {
  for (; *groups; groups++) {
    for (const option_t *o = *groups; o->flag; o++) {
      size_t n = strlen(o->flag);
      if (strncmp(a, o->flag, n) == 0 && (a[n] == '\0' || a[n] == '=')) return o;
    }
  }
  return NULL;
}

/* Tries argv[*i] as one of the options in `groups` (--flag, --flag VALUE,
 * --flag=VALUE). Returns 1 if it was one, 0 if not, -1 after reporting a
 * usage error. */
static int match_option(cli_t *cli, const option_t *const *groups, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  const option_t *o = find_option(groups, a);
  if (o == NULL) return 0;
  size_t n = strlen(o->flag);
  if (o->takes_value == FLAG) {
    if (a[n] == '=') {
      usage_error(cli->command, "%s takes no value", o->flag);
      return -1;
    }
    set_option(cli, o->field, NULL);
    return 1;
  }
  const char *v = NULL;
  if (a[n] == '=')
    v = a + n + 1;
  else if (*i + 1 < argc)
    v = argv[++*i];
  if (v == NULL || v[0] == '\0') {
    usage_error(cli->command, "%s needs a value", o->flag);
    return -1;
  }
  if (o->takes_value == REPEATABLE) {
    for (int k = 0; k < cli->nopts; k++) {
      if (strcmp(cli->keys[k], o->field) != 0) continue;
      if (append_option(cli, k, v) == 0) return 1;
      usage_error(cli->command, "too many values for %s", o->flag);
      return -1;
    }
  }
  set_option(cli, o->field, v);
  return 1;
}

/* run, call, reload: flags anywhere, positionals in order. For run, what
 * follows APP.lua belongs to the script, and so does everything after --. */
static int parse_args(cli_t *cli, const option_t *const *opts, const char *usage, int argc,
                      char **argv) {
  int run = strcmp(cli->command, "run") == 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      for (i++; i < argc && cli->nargs < MAX_ARGS; i++) cli->args[cli->nargs++] = argv[i];
      break;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      exit(EXIT_OK);
    }
    int m = match_option(cli, opts, argc, argv, &i);
    if (m < 0) return EXIT_USAGE;
    if (m > 0) continue;
    if (a[0] == '-' && a[1] != '\0') return usage_error(cli->command, "unknown flag '%s'", a);
    if (run && cli->npositional == 1) {
      if (cli->nargs >= MAX_ARGS) return usage_error(cli->command, "%s", "too many arguments");
      cli->args[cli->nargs++] = (char *)a;
      continue;
    }
    if (cli->npositional >= MAX_ARGS) return usage_error(cli->command, "%s", "too many arguments");
    cli->positional[cli->npositional++] = a;
  }
  return EXIT_OK;
}

static int parse_lua(cli_t *cli, int argc, char **argv) {
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage_lua, stdout);
      exit(EXIT_OK);
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) return usage_error("lua", "%s needs a value", "-e");
      cli->code = argv[++i];
      i++;
      break;
    } else if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      int m = match_option(cli, lua_options, argc, argv, &i);
      if (m < 0) return EXIT_USAGE;
      if (m == 0) return usage_error("lua", "unknown flag '%s'", a);
    } else {
      break;
    }
  }
  if (cli->code == NULL) cli->positional[cli->npositional++] = i < argc ? argv[i++] : "-";
  for (; i < argc && cli->nargs < MAX_ARGS; i++) cli->args[cli->nargs++] = argv[i];
  return EXIT_OK;
}

/* Checks the positionals each command needs and names them in the options. */
static int check_positionals(cli_t *cli) {
  const char *c = cli->command;
  if (strcmp(c, "run") == 0) {
    if (cli->npositional < 1) return usage_error(c, "%s", "missing APP.lua");
    set_option(cli, "script", cli->positional[0]);
  } else if (strcmp(c, "lua") == 0) {
    if (cli->npositional > 0) set_option(cli, "script", cli->positional[0]);
    if (cli->code) set_option(cli, "code", cli->code);
  } else if (strcmp(c, "call") == 0) {
    if (option(cli, "node") == NULL) return usage_error(c, "%s", "missing --node HOST:PORT");
    if (cli->npositional < 2) return usage_error(c, "%s", "missing NAME and METHOD");
    if (cli->npositional > 3) {
      return usage_error(c, "unexpected argument '%s' (pass arguments as one JSON array)",
                         cli->positional[3]);
    }
    set_option(cli, "target", cli->positional[0]);
    set_option(cli, "method", cli->positional[1]);
    if (cli->npositional == 3) set_option(cli, "json", cli->positional[2]);
  } else if (strcmp(c, "reload") == 0) {
    if (option(cli, "node") == NULL) return usage_error(c, "%s", "missing --node HOST:PORT");
    if (cli->npositional != 1) return usage_error(c, "%s", "expected one MODULE");
    set_option(cli, "module", cli->positional[0]);
  } else if (strcmp(c, "members") == 0) {
    if (option(cli, "node") == NULL) return usage_error(c, "%s", "missing --node HOST:PORT");
    if (cli->npositional > 0) return usage_error(c, "unexpected argument '%s'", cli->positional[0]);
  } else if (strcmp(c, "clusterd") == 0) {
    if (cli->npositional > 0) return usage_error(c, "unexpected argument '%s'", cli->positional[0]);
  } else if (strcmp(c, "journal") == 0) {
    const char *sub = cli->npositional > 0 ? cli->positional[0] : NULL;
    if (sub == NULL) return usage_error(c, "%s", "missing ls or show ID");
    if (strcmp(sub, "ls") == 0) {
      if (cli->npositional > 1)
        return usage_error(c, "unexpected argument '%s'", cli->positional[1]);
    } else if (strcmp(sub, "show") == 0) {
      if (cli->npositional != 2) return usage_error(c, "%s", "show takes one persistence ID");
      set_option(cli, "id", cli->positional[1]);
    } else {
      return usage_error(c, "unknown journal command '%s' (ls, show)", sub);
    }
    set_option(cli, "subcommand", sub);
  }
  return EXIT_OK;
}

static int set_log_level(const cli_t *cli) {
  const char *name = option(cli, "log_level");
  if (name == NULL) return 0;
  log_level_t level;
  if (log_parse_level(name, &level) != 0) {
    usage_error(cli->command, "bad --log-level '%s' (debug, info, warn, error, off)", name);
    return -1;
  }
  log_set_level(level);
  return 0;
}

/* Pushes the options table handed to atoll.boot. */
static void push_options(lua_State *L, const cli_t *cli, const char *argv0) {
  lua_createtable(L, 0, cli->nopts + 4);
  lua_pushstring(L, cli->command);
  lua_setfield(L, -2, "command");
  for (int i = 0; i < cli->nopts; i++) {
    if (cli->values[i])
      lua_pushstring(L, cli->values[i]);
    else
      lua_pushboolean(L, 1);
    lua_setfield(L, -2, cli->keys[i]);
  }
  lua_pushstring(L, argv0);
  lua_setfield(L, -2, "argv0");
  lua_createtable(L, cli->nargs, 0);
  for (int i = 0; i < cli->nargs; i++) {
    lua_pushstring(L, cli->args[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "args");
}

/* Runs the command in a fresh host; returns the process exit code. */
static int run_host(const cli_t *cli, const char *argv0) {
  host_t host;
  int rc = host_init(&host);
  if (rc) {
    fprintf(stderr, "atoll: cannot start the event loop: %s\n", uv_strerror(rc));
    return EXIT_APP;
  }
  lua_State *L = vm_open(&host);
  if (L == NULL) {
    fprintf(stderr, "atoll: cannot create the Lua state\n");
    host_close(&host);
    return EXIT_APP;
  }

  /* boot.main(options) -> exit code, or nil to run the loop and ask
   * boot.finish() for the code afterwards. */
  int code = EXIT_APP;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "atoll.boot");
  if (vm_pcall(L, 1, 1, "loading atoll.boot") == 0) {
    lua_getfield(L, -1, "main");
    push_options(L, cli, argv0);
    if (vm_pcall(L, 1, 1, "atoll") == 0) {
      if (lua_isnumber(L, -1)) {
        code = (int)lua_tointeger(L, -1);
      } else {
        host_run(&host);
        lua_getfield(L, -2, "finish");
        if (vm_pcall(L, 0, 1, "atoll shutdown") == 0 && lua_isnumber(L, -1)) {
          code = (int)lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  if (host_close(&host) != 0 && code == EXIT_OK) code = EXIT_APP;
  vm_close(L);
  return code;
}

static int parse_command(cli_t *cli, int argc, char **argv) {
  const char *cmd = cli->command;
  int rc;
  if (strcmp(cmd, "run") == 0)
    rc = parse_args(cli, run_options, usage_run, argc, argv);
  else if (strcmp(cmd, "lua") == 0)
    rc = parse_lua(cli, argc, argv);
  else if (strcmp(cmd, "call") == 0)
    rc = parse_args(cli, client_options, usage_call, argc, argv);
  else if (strcmp(cmd, "reload") == 0) {
    rc = parse_args(cli, client_options, usage_reload, argc, argv);
  } else if (strcmp(cmd, "members") == 0) {
    rc = parse_args(cli, members_options, usage_members, argc, argv);
  } else if (strcmp(cmd, "clusterd") == 0) {
    rc = parse_args(cli, clusterd_options, usage_clusterd, argc, argv);
  } else if (strcmp(cmd, "journal") == 0) {
    rc = parse_args(cli, journal_options, usage_journal, argc, argv);
  } else if (cmd[0] == '-')
    return usage_error(NULL, "unknown flag '%s'", cmd);
  else
    return usage_error(NULL, "unknown command '%s'", cmd);
  if (rc == EXIT_OK) rc = check_positionals(cli);
  return rc;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  /* A write past RLIMIT_FSIZE fails with EFBIG, reported where it happened
   * (a journal's emit fails), instead of killing the node. */
  signal(SIGXFSZ, SIG_IGN);
  /* print() output reaches pipes line by line, as it does on a terminal. */
  setvbuf(stdout, NULL, _IOLBF, 0);

  static cli_t cli;
  memset(&cli, 0, sizeof cli);

  /* Invoked as atoll-lua (a symlink the build makes), atoll is a plain Lua
   * interpreter: `busted --lua=build/atoll-lua` runs specs inside it. */
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  int first = 2;
  if (strcmp(base, "atoll-lua") == 0) {
    cli.command = "lua";
    first = 1;
  } else if (argc < 2) {
    fputs(usage_main, stderr);
    return EXIT_USAGE;
  } else {
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0 || strcmp(cmd, "version") == 0) {
      printf("atoll %s (%s, libuv %s)\n", ATOLL_VERSION, LUAJIT_VERSION, uv_version_string());
      return EXIT_OK;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
      const char *topic = argc > 2 ? argv[2] : NULL;
      if (topic == NULL)
        fputs(usage_main, stdout);
      else if (strcmp(topic, "run") == 0)
        fputs(usage_run, stdout);
      else if (strcmp(topic, "lua") == 0)
        fputs(usage_lua, stdout);
      else if (strcmp(topic, "call") == 0)
        fputs(usage_call, stdout);
      else if (strcmp(topic, "reload") == 0)
        fputs(usage_reload, stdout);
      else if (strcmp(topic, "members") == 0)
        fputs(usage_members, stdout);
      else if (strcmp(topic, "clusterd") == 0)
        fputs(usage_clusterd, stdout);
      else if (strcmp(topic, "journal") == 0)
        fputs(usage_journal, stdout);
      else
        return usage_error(NULL, "no help for unknown command '%s'", topic);
      return EXIT_OK;
    }
    cli.command = cmd;
  }

  int rc = parse_command(&cli, argc - first, argv + first);
  if (rc != EXIT_OK) return rc;
  if (option(&cli, "log_level") == NULL &&
      (strcmp(cli.command, "call") == 0 || strcmp(cli.command, "reload") == 0 ||
       strcmp(cli.command, "members") == 0 || strcmp(cli.command, "journal") == 0)) {
    log_set_level(LOG_WARN); /* a command's output is its answer */
  }
  if (set_log_level(&cli) != 0) return EXIT_USAGE;
  return run_host(&cli, argv[0]);
}
