/* The watchdog: a thread beside the loop that notices Lua code running too long, and a ceiling on
 * the Lua heap.
 *
 * A node is one thread: a handler that never returns (`while true do end`,
 * a bug while developing game logic) blocks everything, silently. The loop
 * thread marks every outermost entry into Lua (vm.c's one door) with a
 * sequence number; the runtime writes which actor and method run into a
 * struct through the FFI. A thread of its own samples both: while the loop
 * stays inside the same entry it logs what runs and for how long (at the
 * warn limit, then at doubling intervals), then asks for an interrupt, then
 * ends the process so that a supervisor restarts it.
 *
 * The interrupt is a count hook set from a signal handler on the loop thread
 * (lua_sethook is meant to be called that way); the hook raises a kinded
 * error in the handler, but only in user code, never inside atoll's own
 * library, whose invariants an error could break halfway. LuaJIT runs hooks
 * only in the interpreter, and a loop compiled into a trace (`while true do
 * end` is one after 56 iterations) would never leave it; so the watchdog
 * runs LuaJIT's own profiler in line mode, whose traces check a flag at every
 * source line, with a timer that never fires: the interrupt raises the
 * profiler's signal itself, the trace exits at its next line, and the hook
 * runs. What stays out of reach is a loop inside one C function (a huge
 * string.rep, say): only the exit limit ends that.
 *
 * The heap ceiling wraps LuaJIT's allocator, which never refuses: LuaJIT
 * cannot raise "not enough memory" safely from compiled code (the stack
 * walk crashes). Past the ceiling, the allocator asks for the same kind of
 * interrupt as a stuck handler, with kind `memory`: the hook raises it in the
 * next user code that runs, most likely the allocating handler, which fails
 * while the node goes on. At the next safe point a full collection decides:
 * the heap is back under the ceiling (the failed handler's garbage is gone)
 * or live data holds it there, and the node exits with its own code before
 * the operating system's OOM killer ends it with nothing said. An allocation
 * past a hard limit above the ceiling (what the interrupt did not stop in
 * time: a handler that catches its error and goes on, one C function) ends
 * the node at once, with a message. */
#include "watchdog.h"

#include <errno.h>
#include <lauxlib.h>
#include <luajit.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"

#define INTERRUPT_SIGNAL SIGURG  /* ignored by default; nothing else in the node uses it */
#define PROFILE_SIGNAL   SIGPROF /* LuaJIT's profiler's timer signal */
/* The profiler in line mode, with a timer that never fires in practice (a
 * billion ms of CPU time): only the watchdog's own signal triggers it. */
#define PROFILE_MODE   "li1000000000"
#define REPORT_MAX_GAP 5000.0 /* ms: while stuck, log at least this often */

static struct {
  lua_State *L;
  watchdog_running_t running;

  /* The loop thread's side. seq and busy are read by the watchdog thread. */
  int depth;           /* nested protected calls */
  uint32_t seq;        /* bumped at every outermost entry into Lua */
  int busy;            /* inside an outermost entry */
  int hook_set;        /* the interrupt hook is installed */
  uint32_t interrupts; /* handlers interrupted so far */
  int want_hook;       /* the watchdog asked for an interrupt of entry interrupt_seq */
  int want;            /* the interrupt the hook raises: WANT_STUCK or WANT_MEMORY */
  uint32_t interrupt_seq;
  double interrupt_after_ms;
  int interrupt_ref;
  int profiling; /* LuaJIT's profiler runs, so that traces can be left */

  /* The thread. */
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  int thread_on;
  int stop;
  pthread_t loop_thread;
  watchdog_config_t cfg;

  /* The heap. */
  lua_Alloc orig;
  void *orig_ud;
  size_t used;
  size_t limit;       /* 0: no ceiling */
  size_t hard;        /* past this, the node exits at once */
  int over;           /* the heap crossed the ceiling; not collected since */
  char victim[160];   /* what the memory interrupt was raised in */
  int collected_high; /* a collection ran since the heap crossed 3/4 of the ceiling */
  int report_ref;
  int reporting;
  void (*stop_node)(void *ctx, int code); /* ends the node after the current loop turn */
  void *stop_ctx;
} wd = {.interrupt_ref = LUA_NOREF, .report_ref = LUA_NOREF};

void watchdog_default_config(watchdog_config_t *cfg) {
  cfg->warn_ms = 1000;
  cfg->interrupt_ms = 5000;
  cfg->exit_ms = 30000;
}

watchdog_running_t *watchdog_running(void) {
  return &wd.running;
}

/* ---- what runs, as text ------------------------------------------------- */

static void copy_name(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  if (src) {
    for (; i + 1 < cap && src[i]; i++) dst[i] = src[i];
  }
  dst[i] = '\0';
}

/* Names what runs on the loop thread ("Counter#3.add"), as the runtime
 * last described it, if the loop is still inside entry `seq`: the strings
 * belong to the handler that runs, so they are read only while it runs. */
static void describe(uint32_t seq, char *out, size_t cap) {
  char type[64], method[64];
  double actor = wd.running.actor;
  const char *t = __atomic_load_n(&wd.running.type, __ATOMIC_ACQUIRE);
  const char *m = __atomic_load_n(&wd.running.method, __ATOMIC_ACQUIRE);
  if (m == NULL) {
    snprintf(out, cap, "code outside any actor");
    return;
  }
  copy_name(type, sizeof type, t);
  copy_name(method, sizeof method, m);
  if (__atomic_load_n(&wd.seq, __ATOMIC_ACQUIRE) != seq) {
    snprintf(out, cap, "a handler");
    return;
  }
  if (actor > 0)
    snprintf(out, cap, "%s#%.0f.%s", type, actor, method);
  else if (method[0])
    snprintf(out, cap, "%s (%s)", type, method);
  else
    snprintf(out, cap, "%s", type); /* a root: "main", a route's label */
}

/* ---- interrupting ------------------------------------------------------- */

enum { WANT_NONE = 0, WANT_STUCK = 1, WANT_MEMORY = 2 };

static void start_profiling(void);

static int in_atoll_library(lua_State *L, lua_Debug *ar) {
  return lua_getinfo(L, "S", ar) && strncmp(ar->source, "@lib/atoll/", 11) == 0;
}

/* Raises the runtime's error of `kind` with `message` (the constructor the
 * runtime gave; a string without one). */
static void raise_kind(lua_State *L, const char *kind, const char *message) {
  if (wd.interrupt_ref == LUA_NOREF) {
    lua_pushstring(L, message);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, wd.interrupt_ref);
    lua_pushstring(L, kind);
    lua_pushstring(L, message);
    if (lua_pcall(L, 2, 1, 0) != 0) {
      lua_pop(L, 1);
      lua_pushstring(L, message);
    }
  }
  lua_error(L);
}

static void remove_hook(lua_State *L) {
  lua_sethook(L, NULL, 0, 0);
  wd.hook_set = 0;
}

/* Runs at every instruction of interpreted code while an interrupt is
 * wanted: raises its error in the next user code (a stuck handler, or what
 * runs when the heap crossed its ceiling). */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  int want = wd.want;
  if (want == WANT_NONE ||
      (want == WANT_STUCK &&
       (!wd.busy || wd.seq != __atomic_load_n(&wd.interrupt_seq, __ATOMIC_ACQUIRE)))) {
    remove_hook(L);
    return;
  }
  /* Wait for user code: atoll's own, interrupted halfway, could leave the
   * runtime's tables inconsistent. */
  if (wd.running.method == NULL || in_atoll_library(L, ar)) return;
  remove_hook(L);
  wd.want = WANT_NONE;
  char what[160], msg[400];
  describe(wd.seq, what, sizeof what);
  if (want == WANT_MEMORY) {
    snprintf(wd.victim, sizeof wd.victim, "%s", what);
    snprintf(msg, sizeof msg,
             "the node's Lua heap reached its ceiling of %.0f MiB (--max-heap) while %s was "
             "running",
             (double)wd.limit / 1048576.0, what);
    raise_kind(L, "memory", msg);
  }
  __atomic_store_n(&wd.interrupts, wd.interrupts + 1, __ATOMIC_RELEASE);
  snprintf(msg, sizeof msg,
           "%s ran for %.1f s without returning and was interrupted by the watchdog "
           "(--watchdog interrupt=%g)",
           what, wd.interrupt_after_ms / 1000, wd.cfg.interrupt_ms / 1000);
  raise_kind(L, "interrupted", msg);
}

/* Installs the hook at every instruction: after a trace exits, the first
 * interpreted instruction (its JLOOP, before it re-enters the trace) must
 * see it; and makes a running trace exit at its next source line.
 * lua_sethook and the profiler's signal are both safe anywhere on the loop
 * thread: in a signal handler, inside an allocation. */
static void want_interrupt(int want) {
  wd.want = want;
  wd.hook_set = 1;
  lua_sethook(wd.L, interrupt_hook, LUA_MASKCOUNT, 1);
  if (wd.profiling) raise(PROFILE_SIGNAL);
}

/* On the loop thread, when the watchdog asks: installs the hook (lua_sethook
 * is safe in a signal handler), unless the stuck entry ended meanwhile. */
static void on_interrupt_signal(int signum) {
  (void)signum;
  int saved = errno;
  if (wd.L && __atomic_load_n(&wd.want_hook, __ATOMIC_ACQUIRE) && wd.busy &&
      wd.seq == __atomic_load_n(&wd.interrupt_seq, __ATOMIC_ACQUIRE)) {
    wd.want_hook = 0;
    if (wd.want != WANT_MEMORY) want_interrupt(WANT_STUCK);
  }
  errno = saved;
}

/* The profiler's callback, on the loop thread between two instructions:
 * nothing to record; the profiler is there for the trace exits. */
static void profile_cb(void *data, lua_State *L, int samples, int vmstate) {
  (void)data;
  (void)L;
  (void)samples;
  (void)vmstate;
}

/* Runs LuaJIT's profiler (line mode, a timer that never fires), whose
 * traces can then be left: for interrupts and for the heap's ceiling. */
static void start_profiling(void) {
  if (wd.profiling || wd.L == NULL) return;
  luaJIT_profile_start(wd.L, PROFILE_MODE, profile_cb, NULL);
  wd.profiling = 1;
}

/* ---- the thread ----------------------------------------------------------- */

static double sample_period(const watchdog_config_t *c) {
  double p = 100;
  const double limits[] = {c->warn_ms, c->interrupt_ms, c->exit_ms};
  for (int i = 0; i < 3; i++) {
    if (limits[i] > 0 && limits[i] / 5 < p) p = limits[i] / 5;
  }
  return p < 10 ? 10 : p;
}

static void thread_main(void *arg) {
  (void)arg;
  /* Signals are the loop thread's business. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);

  uint32_t last_seq = 0, last_interrupts = 0;
  double last_actor = 0;
  const char *last_method = NULL;
  double stuck = 0, next_report = 0;
  double blocked = 0; /* the loop's time inside this entry, across handlers */
  int reported = 0, interrupted = 0;
  char what[160] = "";
  uint64_t prev = uv_hrtime();
  uv_mutex_lock(&wd.mu);
  while (!wd.stop) {
    watchdog_config_t cfg = wd.cfg;
    double period = sample_period(&cfg);
    uv_cond_timedwait(&wd.cv, &wd.mu, (uint64_t)(period * 1e6));
    if (wd.stop) break;
    uint64_t now = uv_hrtime();
    double dt = (double)(now - prev) / 1e6;
    prev = now;
    /* A process stopped (SIGSTOP, a suspended VM) or starved of CPU was not
     * stuck for all that time: count at most two periods per sample. */
    if (dt > 2 * period) dt = 2 * period;
    uint32_t seq = __atomic_load_n(&wd.seq, __ATOMIC_ACQUIRE);
    int busy = __atomic_load_n(&wd.busy, __ATOMIC_ACQUIRE);
    uint32_t interrupts = __atomic_load_n(&wd.interrupts, __ATOMIC_ACQUIRE);
    const char *method = __atomic_load_n(&wd.running.method, __ATOMIC_ACQUIRE);
    double actor = wd.running.actor;
    /* A new entry into Lua, or within one, another handler (or the same
     * one again after an interrupt): a new stall, if any. */
    if (!busy || seq != last_seq || interrupts != last_interrupts || method != last_method ||
        actor != last_actor) {
      if (reported && !interrupted) {
        log_info("watchdog", "%s finished after %.1f s", what, stuck / 1000);
      }
      if (!busy || seq != last_seq) blocked = 0;
      last_seq = seq;
      last_interrupts = interrupts;
      last_method = method;
      last_actor = actor;
      stuck = 0;
      reported = interrupted = 0;
      next_report = cfg.warn_ms;
      continue;
    }
    stuck += dt;
    blocked += dt;
    if (cfg.warn_ms > 0 && stuck >= next_report) {
      if (!reported) describe(seq, what, sizeof what);
      log_warn("watchdog",
               "%s has run for %.1f s without returning: the node's loop is blocked "
               "(calls to it time out, and the cluster may declare it down)",
               what, stuck / 1000);
      reported = 1;
      double gap = next_report < REPORT_MAX_GAP ? next_report : REPORT_MAX_GAP;
      next_report += gap;
    }
    if (cfg.interrupt_ms > 0 && !interrupted && stuck >= cfg.interrupt_ms) {
      interrupted = 1;
      if (!reported) describe(seq, what, sizeof what);
      wd.interrupt_after_ms = stuck;
      __atomic_store_n(&wd.interrupt_seq, seq, __ATOMIC_RELEASE);
      __atomic_store_n(&wd.want_hook, 1, __ATOMIC_RELEASE);
      pthread_kill(wd.loop_thread, INTERRUPT_SIGNAL);
      log_warn("watchdog", "interrupting %s after %.1f s", what, stuck / 1000);
    }
    /* The exit limit counts the whole time the loop has been blocked: a
     * handler that catches its interrupts and loops on must still end. */
    if (cfg.exit_ms > 0 && blocked >= cfg.exit_ms) {
      if (!reported) describe(seq, what, sizeof what);
      log_error("watchdog",
                "%s has kept the loop blocked for %.1f s (--watchdog exit=%g): exiting with "
                "code %d so that a supervisor can restart the node",
                what, blocked / 1000, cfg.exit_ms / 1000, WATCHDOG_EXIT_STUCK);
      _exit(WATCHDOG_EXIT_STUCK);
    }
  }
  uv_mutex_unlock(&wd.mu);
}

int watchdog_start(const watchdog_config_t *cfg, int interrupt_ref) {
  if (wd.L == NULL) return UV_EINVAL;
  if (wd.interrupt_ref != LUA_NOREF && wd.interrupt_ref != interrupt_ref) {
    luaL_unref(wd.L, LUA_REGISTRYINDEX, wd.interrupt_ref);
  }
  wd.interrupt_ref = interrupt_ref;
  if (cfg->interrupt_ms > 0) start_profiling();
  if (wd.thread_on) {
    uv_mutex_lock(&wd.mu);
    wd.cfg = *cfg;
    uv_cond_signal(&wd.cv);
    uv_mutex_unlock(&wd.mu);
    return 0;
  }
  wd.cfg = *cfg;
  wd.loop_thread = pthread_self();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(INTERRUPT_SIGNAL, &sa, NULL) != 0) return -errno;
  int rc = uv_mutex_init(&wd.mu);
  if (rc) return rc;
  rc = uv_cond_init(&wd.cv);
  if (rc) {
    uv_mutex_destroy(&wd.mu);
    return rc;
  }
  wd.stop = 0;
  rc = uv_thread_create(&wd.thread, thread_main, NULL);
  if (rc) {
    uv_cond_destroy(&wd.cv);
    uv_mutex_destroy(&wd.mu);
    return rc;
  }
  wd.thread_on = 1;
  return 0;
}

void watchdog_stop(void) {
  if (wd.thread_on) {
    uv_mutex_lock(&wd.mu);
    wd.stop = 1;
    uv_cond_signal(&wd.cv);
    uv_mutex_unlock(&wd.mu);
    uv_thread_join(&wd.thread);
    uv_cond_destroy(&wd.cv);
    uv_mutex_destroy(&wd.mu);
    wd.thread_on = 0;
    signal(INTERRUPT_SIGNAL, SIG_IGN);
  }
  if (wd.profiling) {
    luaJIT_profile_stop(wd.L);
    wd.profiling = 0;
  }
  if (wd.L) {
    if (wd.interrupt_ref != LUA_NOREF) luaL_unref(wd.L, LUA_REGISTRYINDEX, wd.interrupt_ref);
    if (wd.report_ref != LUA_NOREF) luaL_unref(wd.L, LUA_REGISTRYINDEX, wd.report_ref);
  }
  wd.interrupt_ref = wd.report_ref = LUA_NOREF;
}

/* ---- the heap ------------------------------------------------------------ */

/* Ends the node from inside an allocation: past the hard limit. */
static void heap_exhausted(size_t want) {
  log_error("memory",
            "the Lua heap would reach %.0f MiB, past its ceiling of %.0f MiB (--max-heap) and "
            "what the node allows above it before stopping what allocates: exiting with code %d "
            "before the operating system kills the node",
            (double)want / 1048576.0, (double)wd.limit / 1048576.0, WATCHDOG_EXIT_HEAP);
  _exit(WATCHDOG_EXIT_HEAP);
}

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (ptr == NULL) osize = 0;
  if (nsize > osize && wd.limit > 0) {
    size_t next = wd.used + (nsize - osize);
    if (next > wd.hard && !wd.reporting) heap_exhausted(next);
    if (next > wd.limit && !wd.over && !wd.reporting) {
      wd.over = 1;
      wd.victim[0] = '\0';
      want_interrupt(WANT_MEMORY);
    }
  }
  void *p = wd.orig(wd.orig_ud, ptr, osize, nsize);
  if (p != NULL || nsize == 0) wd.used = wd.used - osize + nsize;
  return p;
}

void watchdog_init(lua_State *L, void (*stop)(void *ctx, int code), void *ctx) {
  wd.L = L;
  wd.stop_node = stop;
  wd.stop_ctx = ctx;
  wd.orig = lua_getallocf(L, &wd.orig_ud);
  wd.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  lua_setallocf(L, heap_alloc, NULL);
}

void watchdog_set_heap_limit(size_t bytes, int report_ref) {
  wd.limit = bytes;
  /* A quarter more, and at least 32 MiB: room for the interrupt to reach
   * user code and for the collection and report that follow. */
  wd.hard = bytes + (bytes / 4 > ((size_t)32 << 20) ? bytes / 4 : ((size_t)32 << 20));
  if (bytes > 0) start_profiling();
  if (wd.report_ref != LUA_NOREF && wd.report_ref != report_ref) {
    luaL_unref(wd.L, LUA_REGISTRYINDEX, wd.report_ref);
  }
  wd.report_ref = report_ref;
}

size_t watchdog_heap_used(void) {
  return wd.used;
}

size_t watchdog_heap_limit(void) {
  return wd.limit;
}

int watchdog_heap_over(void) {
  return wd.over;
}

static int full_collect(lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}

/* Collects everything, in protected mode (finalizers run Lua). */
static void collect(lua_State *L) {
  lua_pushcfunction(L, full_collect);
  if (lua_pcall(L, 0, 0, 0) != 0) lua_pop(L, 1);
}

static void report(lua_State *L, const char *msg) {
  if (wd.report_ref == LUA_NOREF) {
    log_warn("memory", "%s", msg);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, wd.report_ref);
  lua_pushstring(L, msg);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    log_warn("memory", "%s", msg);
    lua_pop(L, 1);
  }
}

/* At a safe point after the heap crossed its ceiling: collect, then either
 * go on or end the node. */
static void after_ceiling(lua_State *L) {
  wd.reporting = 1;
  if (wd.want == WANT_MEMORY) wd.want = WANT_NONE; /* no user code met it: too late now */
  collect(L);
  double mib = 1024.0 * 1024.0;
  size_t limit = wd.limit;
  char msg[400], who[200] = "";
  if (wd.victim[0]) snprintf(who, sizeof who, "; %s failed with `memory`", wd.victim);
  /* The report weighs the actors, which takes memory of its own. */
  wd.limit = 0;
  if (wd.used <= limit - limit / 8) {
    snprintf(msg, sizeof msg,
             "the Lua heap crossed its ceiling of %.0f MiB (--max-heap)%s; after a full "
             "collection it holds %.1f MiB",
             (double)limit / mib, who, (double)wd.used / mib);
    report(L, msg);
    wd.limit = limit;
    wd.over = 0;
    wd.collected_high = 1;
  } else {
    /* Too close to the ceiling to do any work: each step would fail. */
    snprintf(msg, sizeof msg,
             "after a full collection the Lua heap still holds %.1f MiB of its %.0f MiB ceiling "
             "(--max-heap)%s: live data fills it, so the node exits with code %d before the "
             "operating system kills it",
             (double)wd.used / mib, (double)limit / mib, who, WATCHDOG_EXIT_HEAP);
    report(L, msg);
    /* The node stops after this loop turn, so that answers already made
     * (the failed call's error) go out; the ceiling stays lifted for that. */
    if (wd.stop_node) {
      wd.stop_node(wd.stop_ctx, WATCHDOG_EXIT_HEAP);
      return; /* reporting stays set: no more checks */
    }
    _exit(WATCHDOG_EXIT_HEAP);
  }
  wd.reporting = 0;
}

void watchdog_enter(void) {
  if (wd.depth++ > 0) return;
  __atomic_store_n(&wd.seq, wd.seq + 1, __ATOMIC_RELEASE);
  __atomic_store_n(&wd.busy, 1, __ATOMIC_RELEASE);
}

void watchdog_leave(lua_State *L) {
  if (--wd.depth > 0) return;
  __atomic_store_n(&wd.busy, 0, __ATOMIC_RELEASE);
  if (wd.hook_set) remove_hook(L);
  if (wd.limit == 0 || wd.reporting) return;
  if (wd.over) {
    after_ceiling(L);
  } else if (wd.used > wd.limit / 4 * 3) {
    /* LuaJIT's collector lets garbage grow to twice the live heap before a
     * cycle ends: near the ceiling, collect now rather than refuse later. */
    if (!wd.collected_high) {
      wd.collected_high = 1;
      collect(L);
    }
  } else if (wd.used < wd.limit / 2) {
    wd.collected_high = 0;
  }
}
