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
    "  atoll lua [options] [SCRIPT [ARGS...]]     run a Lua script with atoll's modules\n"
    "  atoll lua [options] -e CODE [ARGS...]\n"
    "  atoll help [COMMAND]                       show help for a command\n"
    "  atoll --version                            print the version\n"
    "\n"
    "Run 'atoll help run' for the options of a node.\n"
    "\n"
    "Exit codes:\n"
    "  0  success, or a graceful shutdown after SIGINT or SIGTERM\n"
    "  1  the application raised an error or called atoll.exit with a non-zero code\n"
    "  2  usage error: unknown command or flag, missing or bad argument\n"
    "  3  the script could not be loaded: missing file or syntax error\n"
    "  130, 143  a second SIGINT or SIGTERM stopped the node without waiting\n";

static const char usage_run[] =
    "Usage: atoll run APP.lua [options] [ARGS...] [-- ARGS...]\n"
    "\n"
    "Runs a node. APP.lua is the node's main script: it runs as the node's first\n"
    "actor, so it can spawn actors and call them. The node keeps running while it\n"
    "has work: timers, pending calls, watched files. SIGINT or SIGTERM stops it\n"
    "gracefully. Modules are found next to APP.lua first (APP_DIR/?.lua).\n"
    "ARGS reach the script as `arg` and as `...`; arguments that look like\n"
    "flags go to the script only after --.\n"
    "\n"
    "Options:\n"
    "  --watch              reload actor modules when their files change\n"
    "  --name NAME          the node's name, shown in logs (default: atoll)\n"
    "  --log-level LEVEL    debug, info, warn, error or off (default: info)\n"
    "  -h, --help           show this help\n";

static const char usage_lua[] =
    "Usage: atoll lua [options] [SCRIPT | -e CODE | -] [ARGS...]\n"
    "\n"
    "A Lua interpreter (LuaJIT) with atoll's modules: `require \"atoll\"` works.\n"
    "The script runs on the main thread like `lua SCRIPT`; `arg` and `...` hold\n"
    "ARGS. Use atoll.run(fn) to run actor code to completion. After the script,\n"
    "the loop runs until nothing is left to do. With no SCRIPT or with -, the\n"
    "code is read from standard input.\n"
    "\n"
    "Invoked through a link named atoll-lua, atoll behaves as `atoll lua`, so\n"
    "tools that want an interpreter path can use it: busted --lua=atoll-lua.\n"
    "\n"
    "Options:\n"
    "  -e CODE              run CODE instead of a script\n"
    "  --log-level LEVEL    debug, info, warn, error or off (default: info)\n"
    "  -h, --help           show this help\n";

typedef struct cli_s {
  const char *command; /* "run" or "lua" */
  const char *script;  /* path, "-" for stdin, NULL with -e */
  const char *code;    /* -e CODE */
  const char *name;
  const char *log_level;
  int watch;
  int argc; /* arguments passed to the script */
  char **argv;
} cli_t;

static int usage_error(const char *command, const char *fmt, const char *arg) {
  fprintf(stderr, "atoll%s%s: ", command ? " " : "", command ? command : "");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'atoll help%s%s' for usage.\n", command ? " " : "",
          command ? command : "");
  return EXIT_USAGE;
}

/* Matches --flag VALUE and --flag=VALUE; advances *i past what it used.
 * Returns 1 on a match with *value set, -1 if the value is missing. */
static int flag_value(int argc, char **argv, int *i, const char *flag, const char **value) {
  size_t n = strlen(flag);
  if (strncmp(argv[*i], flag, n) != 0) return 0;
  if (argv[*i][n] == '=') {
    *value = argv[*i] + n + 1;
    return 1;
  }
  if (argv[*i][n] != '\0') return 0;
  if (*i + 1 >= argc) return -1;
  *value = argv[++*i];
  return 1;
}

static int parse_run(cli_t *cli, int argc, char **argv) {
  static char *script_args[256];
  int nargs = 0;
  cli->argv = script_args;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = NULL;
    int m;
    if (strcmp(a, "--") == 0) {
      for (i++; i < argc && nargs < 255; i++) script_args[nargs++] = argv[i];
      break;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage_run, stdout);
      exit(EXIT_OK);
    } else if (strcmp(a, "--watch") == 0) {
      cli->watch = 1;
    } else if ((m = flag_value(argc, argv, &i, "--name", &v)) != 0) {
      if (m < 0 || v[0] == '\0') return usage_error("run", "%s needs a value", "--name");
      cli->name = v;
    } else if ((m = flag_value(argc, argv, &i, "--log-level", &v)) != 0) {
      if (m < 0) return usage_error("run", "%s needs a value", "--log-level");
      cli->log_level = v;
    } else if (a[0] == '-' && a[1] != '\0') {
      return usage_error("run", "unknown flag '%s'", a);
    } else if (cli->script == NULL) {
      cli->script = a;
    } else if (nargs < 255) {
      script_args[nargs++] = (char *)a;
    } else {
      return usage_error("run", "%s", "too many script arguments");
    }
  }
  cli->argc = nargs;
  if (cli->script == NULL) return usage_error("run", "%s", "missing APP.lua");
  return EXIT_OK;
}

static int parse_lua(cli_t *cli, int argc, char **argv) {
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = NULL;
    int m;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage_lua, stdout);
      exit(EXIT_OK);
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) return usage_error("lua", "%s needs a value", "-e");
      cli->code = argv[++i];
      i++;
      break;
    } else if ((m = flag_value(argc, argv, &i, "--log-level", &v)) != 0) {
      if (m < 0) return usage_error("lua", "%s needs a value", "--log-level");
      cli->log_level = v;
    } else if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      return usage_error("lua", "unknown flag '%s'", a);
    } else {
      break;
    }
  }
  if (cli->code == NULL) cli->script = i < argc ? argv[i++] : "-";
  cli->argc = argc - i;
  cli->argv = argv + i;
  return EXIT_OK;
}

/* Pushes the options table handed to atoll.boot. */
static void push_options(lua_State *L, const cli_t *cli, const char *argv0) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, cli->command);
  lua_setfield(L, -2, "command");
  if (cli->script) {
    lua_pushstring(L, cli->script);
    lua_setfield(L, -2, "script");
  }
  if (cli->code) {
    lua_pushstring(L, cli->code);
    lua_setfield(L, -2, "code");
  }
  if (cli->name) {
    lua_pushstring(L, cli->name);
    lua_setfield(L, -2, "name");
  }
  lua_pushboolean(L, cli->watch);
  lua_setfield(L, -2, "watch");
  lua_pushstring(L, argv0);
  lua_setfield(L, -2, "argv0");
  lua_createtable(L, cli->argc, 0);
  for (int i = 0; i < cli->argc; i++) {
    lua_pushstring(L, cli->argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "args");
}

static int set_log_level(const cli_t *cli) {
  log_level_t level;
  if (log_parse_level(cli->log_level, &level) != 0) {
    usage_error(cli->command, "bad --log-level '%s' (debug, info, warn, error, off)",
                cli->log_level);
    return -1;
  }
  log_set_level(level);
  return 0;
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

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  /* print() output reaches pipes line by line, as it does on a terminal. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* Invoked as atoll-lua (a symlink the build makes), atoll is a plain Lua
   * interpreter: `busted --lua=build/atoll-lua` runs specs inside it. */
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  if (strcmp(base, "atoll-lua") == 0) {
    cli_t cli;
    memset(&cli, 0, sizeof cli);
    cli.command = "lua";
    int rc = parse_lua(&cli, argc - 1, argv + 1);
    if (rc != EXIT_OK) return rc;
    if (cli.log_level && set_log_level(&cli) != 0) return EXIT_USAGE;
    return run_host(&cli, argv[0]);
  }
  if (argc < 2) {
    fputs(usage_main, stderr);
    return EXIT_USAGE;
  }
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
    else
      return usage_error(NULL, "no help for unknown command '%s'", topic);
    return EXIT_OK;
  }

  cli_t cli;
  memset(&cli, 0, sizeof cli);
  cli.command = cmd;
  int rc;
  if (strcmp(cmd, "run") == 0)
    rc = parse_run(&cli, argc - 2, argv + 2);
  else if (strcmp(cmd, "lua") == 0)
    rc = parse_lua(&cli, argc - 2, argv + 2);
  else if (cmd[0] == '-')
    return usage_error(NULL, "unknown flag '%s'", cmd);
  else
    return usage_error(NULL, "unknown command '%s'", cmd);
  if (rc != EXIT_OK) return rc;

  if (cli.log_level && set_log_level(&cli) != 0) return EXIT_USAGE;
  return run_host(&cli, argv[0]);
}
