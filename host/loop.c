/* The node's event loop: scheduler handles, signals, and a shutdown that leaves nothing open. */
#include "loop.h"

#include <errno.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "log.h"
#include "vm.h"
#include "watchdog.h"

static void wake_cb(uv_timer_t *t) {
  host_t *h = t->data;
  h->wake_due = -1;
  if (h->on_wake_ref == LUA_NOREF) return;
  vm_call_ref(h->L, h->on_wake_ref, 0, "timer");
}

static void idle_cb(uv_idle_t *i) {
  host_t *h = i->data;
  if (h->on_idle_ref == LUA_NOREF) {
    uv_idle_stop(i);
    return;
  }
  vm_call_ref(h->L, h->on_idle_ref, 0, "scheduler");
}

/* The host whose loop hears SIGINT and SIGTERM (one per process), and how
 * many of them arrived: set and read by the signal handler. */
static host_t *volatile signal_host;
static volatile sig_atomic_t signals_seen;
static volatile sig_atomic_t first_signal;

static const char *signal_name(int signum) {
  return signum == SIGINT ? "SIGINT" : "SIGTERM";
}

/* The real signal handler: async-signal-safe calls only. */
static void on_shutdown_signal(int signum) {
  int saved = errno;
  int seen = __atomic_add_fetch(&signals_seen, 1, __ATOMIC_SEQ_CST);
  if (seen > 1) {
    /* A second signal means the user will not wait for a graceful stop,
     * and the loop may be blocked: end here. */
    log_write_from_signal(LOG_WARN, "node",
                          signum == SIGINT ? "SIGINT again: stopping now"
                                           : "SIGTERM again: stopping now");
    _exit(128 + signum);
  }
  first_signal = signum;
  host_t *h = signal_host;
  if (h) uv_async_send(&h->signal_async);
  errno = saved;
}

/* The first signal, on the loop: the graceful path. */
static void signal_cb(uv_async_t *a) {
  host_t *h = a->data;
  const char *name = signal_name(first_signal);
  log_info("node", "%s: shutting down", name);
  if (h->on_signal_ref == LUA_NOREF) {
    host_stop(h, 0);
    return;
  }
  lua_pushstring(h->L, name);
  if (vm_call_ref(h->L, h->on_signal_ref, 1, "signal handler") != 0) host_stop(h, 1);
}

int host_init(host_t *h) {
  memset(h, 0, sizeof *h);
  /* libsodium picks its implementations and seeds its generator here. */
  if (sodium_init() < 0) return UV_EIO;
  h->on_wake_ref = h->on_idle_ref = h->on_signal_ref = LUA_NOREF;
  h->wake_due = -1;
  int rc = uv_loop_init(&h->loop);
  if (rc) return rc;
  h->loop.data = h;
  uv_timer_init(&h->loop, &h->wake);
  h->wake.data = h;
  uv_idle_init(&h->loop, &h->idle);
  h->idle.data = h;

  /* The node's incarnation: a random 52-bit number (exact in a Lua number),
   * never 0, so that a restarted node's refs differ from the last run's. */
  uint64_t r = 0;
  if (uv_random(NULL, NULL, &r, sizeof r, 0, NULL) != 0) {
    r = (uint64_t)uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32);
  }
  r &= (((uint64_t)1) << 52) - 1;
  if (r == 0) r = 1;
  h->incarnation = (double)r;
  return 0;
}

int host_watch_signals(host_t *h) {
  if (h->signals_on) return 0;
  int rc = uv_async_init(&h->loop, &h->signal_async, signal_cb);
  if (rc) return rc;
  h->signal_async.data = h;
  uv_unref((uv_handle_t *)&h->signal_async);
  h->signals_on = 1;
  signal_host = h;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_shutdown_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) return -errno;
  /* A run started again (host/main.c) begins with them blocked, any that came meanwhile
   * pending: they reach the handler now. */
  sigset_t both;
  sigemptyset(&both);
  sigaddset(&both, SIGINT);
  sigaddset(&both, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &both, NULL);
  return 0;
}

int host_signals_seen(void) {
  return __atomic_load_n(&signals_seen, __ATOMIC_SEQ_CST);
}

int host_run(host_t *h) {
  if (h->stopping) return 0;
  h->running++;
  int rc = uv_run(&h->loop, UV_RUN_DEFAULT);
  h->running--;
  return rc;
}

void host_stop(host_t *h, int exit_code) {
  if (!h->stopping) h->exit_code = exit_code;
  h->stopping = 1;
  host_interrupt(h);
}

void host_interrupt(host_t *h) {
  /* uv_stop outside uv_run would make the next uv_run return at once. */
  if (h->running) uv_stop(&h->loop);
}

void host_arm_wake(host_t *h, double delay_ms) {
  if (!(delay_ms > 0)) delay_ms = 0; /* overdue (or NaN): fire on the next turn */
  /* libuv timers have millisecond resolution; round up so a timer never
   * fires before its deadline. */
  uint64_t ms = (uint64_t)delay_ms;
  if ((double)ms < delay_ms) ms++;
  uv_timer_start(&h->wake, wake_cb, ms, 0);
  h->wake_due = (double)uv_now(&h->loop) + (double)ms;
}

void host_disarm_wake(host_t *h) {
  uv_timer_stop(&h->wake);
  h->wake_due = -1;
}

void host_set_idle(host_t *h, int on) {
  if (on)
    uv_idle_start(&h->idle, idle_cb);
  else
    uv_idle_stop(&h->idle);
}

static void close_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (uv_is_closing(handle)) return;
  host_handle_t *owner = handle->data;
  host_t *h = handle->loop->data;
  /* The host's own handles are embedded in host_t; everything else that is
   * open at shutdown belongs to a binding and knows how to free itself. */
  int own = handle == (uv_handle_t *)&h->wake || handle == (uv_handle_t *)&h->idle ||
            handle == (uv_handle_t *)&h->signal_async;
  uv_close(handle, own || owner == NULL ? NULL : owner->on_close);
}

static void shutdown_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  host_t *h = handle->loop->data;
  if (uv_is_closing(handle) || handle == (uv_handle_t *)&h->wake ||
      handle == (uv_handle_t *)&h->idle || handle == (uv_handle_t *)&h->signal_async) {
    return;
  }
  host_handle_t *owner = handle->data;
  if (owner && owner->on_shutdown) owner->on_shutdown(owner);
}

static void report_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  log_error("node", "handle still open at exit: %s%s", uv_handle_type_name(handle->type),
            uv_is_closing(handle) ? " (closing)" : "");
}

int host_close(host_t *h) {
  h->closing = 1;
  watchdog_stop();
  /* The node is stopping already: a first signal from here has nothing to
   * ask (and the handle it would post to is about to close); a second one
   * still ends the process at once. */
  if (h->signals_on) signal_host = NULL;
  uv_walk(&h->loop, shutdown_walk_cb, NULL);
  uv_walk(&h->loop, close_walk_cb, NULL);
  /* Every handle is closing now; each turn runs close callbacks until none
   * is left (a few turns at most, bounded in case one never closes). */
  for (int turn = 0; turn < 64 && uv_run(&h->loop, UV_RUN_DEFAULT) != 0; turn++) {
  }
  int rc = uv_loop_close(&h->loop);
  if (rc == UV_EBUSY) uv_walk(&h->loop, report_walk_cb, NULL);
  return rc;
}
