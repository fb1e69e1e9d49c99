/* atoll's entry point: a host, a Lua state, and the command line handed to lib/atoll/cli. */
#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "vm.h"

/* The command line is Lua's (lib/atoll/cli/: one list of the commands, their
 * flags and usage): the host hands it argv and runs the loop it asks for. */
enum { EXIT_APP = 1 };

/* Pushes argv[1..] as a Lua array. */
static void push_argv(lua_State *L, int argc, char **argv) {
  lua_createtable(L, argc > 1 ? argc - 1 : 0, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
}

/* Runs the command in a fresh host; returns the process exit code, and sets *restart when the
 * node asked to run again (host.restart(): the cluster downed it). */
static int run_host(int argc, char **argv, int *restart) {
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

  /* cli.main(argv0, argv) -> exit code, or nil to run the loop and ask
   * cli.finish() for the code afterwards. */
  int code = EXIT_APP;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "atoll.cli");
  if (vm_pcall(L, 1, 1, "loading atoll.cli") == 0) {
    lua_getfield(L, -1, "main");
    lua_pushstring(L, argv[0]);
    push_argv(L, argc, argv);
    if (vm_pcall(L, 2, 1, "atoll") == 0) {
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

  *restart = host.restart;
  if (host_close(&host) != 0 && code == 0) code = EXIT_APP;
  vm_close(L);
  return code;
}

/* Runs this executable's command line again, in this process (its pid, its standard streams;
 * every other descriptor the node had is close-on-exec). Returns only if that failed. */
static int run_again(char **argv) {
  /* A shutdown signal that came while this run was ending must stop the next one too: blocked
   * from here, one that comes now stays pending across exec, and the next run's handler gets it
   * once installed (host_watch_signals); one that came already ends the process instead. */
  sigset_t both, old;
  sigemptyset(&both);
  sigaddset(&both, SIGINT);
  sigaddset(&both, SIGTERM);
  sigprocmask(SIG_BLOCK, &both, &old);
  if (host_signals_seen() > 0) {
    fprintf(stderr, "atoll: a shutdown signal came while the node was starting again: stopping\n");
    return 0;
  }
  char exe[4096];
  size_t n = sizeof exe;
  if (uv_exepath(exe, &n) != 0) return EXIT_APP;
  char count[16];
  const char *prev = getenv("ATOLL_RESTARTS");
  snprintf(count, sizeof count, "%d", (prev ? atoi(prev) : 0) + 1);
  setenv("ATOLL_RESTARTS", count, 1);
  fflush(stdout);
  fflush(stderr);
  execv(exe, argv);
  sigprocmask(SIG_SETMASK, &old, NULL);
  fprintf(stderr, "atoll: cannot run again (%s): %s\n", exe, strerror(errno));
  return EXIT_APP;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  /* A write past RLIMIT_FSIZE fails with EFBIG, reported where it happened
   * (a journal's emit fails), instead of killing the node. */
  signal(SIGXFSZ, SIG_IGN);
  /* print() output reaches pipes line by line, as it does on a terminal. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  int restart = 0;
  int code = run_host(argc, argv, &restart);
  if (restart) return run_again(argv);
  return code;
}
