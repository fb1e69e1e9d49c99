/* The node's event loop: one libuv loop, the handles that drive the Lua scheduler, signals and
 * shutdown. */
#ifndef ATOLL_LOOP_H
#define ATOLL_LOOP_H

#include <lua.h>
#include <uv.h>

/* Objects that own a libuv handle put this first in the struct that
 * handle->data points to, so shutdown can close any handle it finds. */
typedef struct host_handle_s {
  uv_close_cb on_close;
  /* Optional. Called at shutdown before the host closes any handle, for an owner that must stop
   * something first (threads that post to its async handle must end before the loop does); it
   * closes its own handles. Owners are zeroed on allocation, so NULL unless set. */
  void (*on_shutdown)(struct host_handle_s *owner);
} host_handle_t;

typedef struct host_s {
  uv_loop_t loop;
  lua_State *L;

  uv_timer_t wake;         /* fires at the earliest deadline of the Lua timer heap */
  uv_idle_t idle;          /* runs the scheduler again while its run queue is non-empty */
  uv_async_t signal_async; /* a shutdown signal arrived (posted by the signal handler) */
  int signals_on;

  /* Lua entry points, registry references (LUA_NOREF until set). */
  int on_wake_ref;
  int on_idle_ref;
  int on_signal_ref;

  double wake_due; /* loop time (ms) the wake timer is armed for, or -1 */
  int running;     /* inside uv_run: uv_stop only means something then */
  int closing;     /* host_close is closing every handle: no more calls into Lua */
  int stopping;    /* shutdown was requested */
  int exit_code;
  int restart;        /* once the loop has ended, run the same command again (a downed node) */
  double incarnation; /* drawn at start: refs of an earlier run of this node are dead */
  char name[64];
} host_t;

/* Initializes the loop and the scheduler's handles. 0 or a libuv error. */
int host_init(host_t *h);

/* Installs SIGINT and SIGTERM handlers: the first asks the loop for a
 * graceful shutdown; a second ends the process from the handler itself, so
 * it works even while a handler keeps the loop blocked. The handles do not
 * keep the loop alive on their own. */
int host_watch_signals(host_t *h);

/* How many SIGINT or SIGTERM signals the handlers have seen. */
int host_signals_seen(void);

/* Runs the loop until nothing keeps it alive or host_stop is called; does
 * not start at all once a stop was requested. */
int host_run(host_t *h);

/* Asks for the node to stop with `exit_code` (the first code asked for is
 * kept); the loop returns after the current turn. Safe from any callback. */
void host_stop(host_t *h, int exit_code);

/* Makes a running loop return after the current turn, nothing more. */
void host_interrupt(host_t *h);

/* Arms the wake timer for `delay_ms` from now; an overdue deadline (zero or
 * negative delay) fires on the next loop turn. */
void host_arm_wake(host_t *h, double delay_ms);

/* Disarms the wake timer, so it no longer keeps the loop alive. */
void host_disarm_wake(host_t *h);

/* Keeps the idle handle running (on != 0) or stops it. */
void host_set_idle(host_t *h, int on);

/* Closes every open handle, runs their close callbacks, and closes the loop.
 * Returns 0, or UV_EBUSY after logging the handles that would not close. */
int host_close(host_t *h);

#endif
