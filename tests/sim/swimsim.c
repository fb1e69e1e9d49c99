/* swimsim: the SWIM core (host/swim.c) for N nodes in one process, on a
 * seeded virtual clock and network.
 *
 *   swimsim [options] SCENARIO      (swimsim --help lists them)
 *
 * The network loses, delays and reorders packets, and can be cut
 * (symmetrically or one way); nodes can be paused (their packets wait, their
 * timers stop) and crashed. Everything random comes from the seed, so a run
 * is replayed exactly by giving the same options: a failure prints the
 * command line that replays it.
 *
 * Output: `key value` lines (times in seconds, sizes in bytes). Exit status
 * 1 when an invariant breaks (a member's version went down, a member held
 * an upno its node did not give its run, a downed run came back, a crashed
 * node was not declared dead in time, a live one was declared dead where
 * the scenario allows none, views did not converge), 2 on bad usage. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/swim.h"

/* ---- randomness ----------------------------------------------------------- */

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double unit_rand(uint64_t *x) {
  return (double)(splitmix(x) >> 11) / 9007199254740992.0;
}

/* ---- options ---------------------------------------------------------------- */

typedef struct opts_s {
  const char *scenario;
  int nodes;
  uint64_t seed;
  double loss;       /* probability that a packet is lost */
  uint32_t delay_ms; /* one-way delay: delay_ms + [0, jitter_ms] */
  uint32_t jitter_ms;
  int kills;         /* crash: how many crashes, one after another */
  int periods;       /* quiet, loss: how long to run */
  uint32_t pause_ms; /* pause: how long the node stays paused */
  uint32_t split_ms; /* partition: how long the network stays cut */
  int asymmetric;    /* partition: cut one way only */
  int trials;        /* disseminate: how many changes to follow */
  int joins;         /* seniority: nodes that join one after another */
  int isolate;       /* down: the node is cut off while it is downed */
  int cold;          /* join through gossip only (no warm start) */
  int no_join;       /* crash: a crashed node restarts without joining anyone */
  int trace;         /* print every change seen about this node (-1: none) */
  swim_config_t cfg;
} opts_t;

static opts_t opt;
static int g_argc;
static char **g_argv;

static void usage(FILE *f) {
  fprintf(f, "usage: swimsim [options] SCENARIO\n"
             "\n"
             "Runs the SWIM core for N nodes on a seeded virtual clock and network.\n"
             "\n"
             "scenarios:\n"
             "  quiet        no faults for --periods; no member may be declared dead\n"
             "  loss         --loss packet loss for --periods; counts false deaths\n"
             "  crash        --kills crashes, one after another (each node restarts as a\n"
             "               new run once every member declared it dead, and joins through\n"
             "               a random member, or with --no-join through no one); detection\n"
             "               and rejoin times, and push-pulls per rejoin\n"
             "  pause        one node paused for --pause-ms; it must not be declared dead\n"
             "  partition    the cluster cut in two for --split-ms (--asymmetric: one way),\n"
             "               then healed; every view must converge again (deaths.after:\n"
             "               live members declared dead after the heal, deaths.same.side:\n"
             "               by a member that could reach them all along)\n"
             "  disseminate  --trials members (at most N) announce they are up; periods\n"
             "               until every member heard\n"
             "  seniority    N - --joins nodes start the cluster, then the others join one\n"
             "               after another, then --kills nodes crash and restart as new\n"
             "               runs (joining through a random member, up after their first\n"
             "               push-pull); each time, every member must hold every member's\n"
             "               upno, and the newcomer's must be the largest\n"
             "  down         a live node is downed for good (swim_down_final) by one member\n"
             "               while another declares it dead by hand, so that it refutes;\n"
             "               every member must hold it downed, and it must know, within\n"
             "               the dissemination bound (--isolate: it is cut off for\n"
             "               --split-ms first, and must know 20 periods after the heal);\n"
             "               then for --periods no member may see that run otherwise\n"
             "               (past its tombstone too), and a new run must get back in\n"
             "  unreachable  a node crashes for good; once every member declared it dead,\n"
             "               the run goes on for the tombstone time and 4 periods: with\n"
             "               --keep-unreachable every member must still hold it dead,\n"
             "               without, every member must have forgotten it\n"
             "\n"
             "options:\n"
             "  -n, --nodes N        cluster size (10)\n"
             "  -s, --seed S         seed (1)\n"
             "  --loss P             packet loss, 0..1 (0; loss scenario: 0.05)\n"
             "  --delay-ms D         one-way delay (1)\n"
             "  --jitter-ms J        extra random delay, 0..J (2)\n"
             "  --kills K            crash (10)\n"
             "  --periods P          quiet, loss (1000)\n"
             "  --pause-ms D         pause (2000)\n"
             "  --split-ms D         partition (10000)\n"
             "  --asymmetric         partition: only one direction is cut\n"
             "  --trials T           disseminate (20)\n"
             "  --joins J            seniority (3)\n"
             "  --isolate            down: cut the node off before downing it\n"
             "  --trace ID           print every change any node sees about node ID\n"
             "                       (-2: print each false death)\n"
             "  --cold               nodes join through one seed and gossip (default: warm\n"
             "                       start, every node merges the seed's full state)\n"
             "  --no-join            crash: restarted nodes join no one; the members that\n"
             "                       remember them must find them\n"
             "SWIM settings (defaults: host/swim.c):\n"
             "  --interval MS --timeout MS --k N --alpha A --beta B --confirm K\n"
             "  --lambda L --max-lhm N --push-pull MS --gossip-interval MS --fanout N\n"
             "  --tombstone MS --keep-unreachable\n");
}

static const char *need(int *i, int argc, char **argv) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "swimsim: %s needs a value\n", argv[*i]);
    exit(2);
  }
  return argv[++*i];
}

static double num(const char *name, const char *v, double lo, double hi) {
  char *end;
  double d = strtod(v, &end);
  if (*v == '\0' || *end != '\0' || !(d >= lo && d <= hi)) {
    fprintf(stderr, "swimsim: %s wants a number in [%g, %g], got '%s'\n", name, lo, hi, v);
    exit(2);
  }
  return d;
}

static void parse(int argc, char **argv) {
  memset(&opt, 0, sizeof opt);
  opt.nodes = 10;
  opt.seed = 1;
  opt.loss = -1;
  opt.delay_ms = 1;
  opt.jitter_ms = 2;
  opt.kills = 10;
  opt.periods = 1000;
  opt.pause_ms = 2000;
  opt.split_ms = 10000;
  opt.trials = 20;
  opt.joins = 3;
  opt.trace = -1;
  swim_default_config(&opt.cfg);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
#define OPT(s)      (strcmp(a, s) == 0)
#define VAL(lo, hi) num(a, need(&i, argc, argv), lo, hi)
    if (OPT("-h") || OPT("--help")) {
      usage(stdout);
      exit(0);
    } else if (OPT("-n") || OPT("--nodes"))
      opt.nodes = (int)VAL(1, 100000);
    else if (OPT("-s") || OPT("--seed"))
      opt.seed = (uint64_t)VAL(0, 1e15);
    else if (OPT("--loss"))
      opt.loss = VAL(0, 1);
    else if (OPT("--delay-ms"))
      opt.delay_ms = (uint32_t)VAL(0, 60000);
    else if (OPT("--jitter-ms"))
      opt.jitter_ms = (uint32_t)VAL(0, 60000);
    else if (OPT("--kills"))
      opt.kills = (int)VAL(1, 1e6);
    else if (OPT("--periods"))
      opt.periods = (int)VAL(1, 1e7);
    else if (OPT("--pause-ms"))
      opt.pause_ms = (uint32_t)VAL(0, 1e7);
    else if (OPT("--split-ms"))
      opt.split_ms = (uint32_t)VAL(0, 1e8);
    else if (OPT("--asymmetric"))
      opt.asymmetric = 1;
    else if (OPT("--trials"))
      opt.trials = (int)VAL(1, 1e6);
    else if (OPT("--joins"))
      opt.joins = (int)VAL(0, 100000);
    else if (OPT("--isolate"))
      opt.isolate = 1;
    else if (OPT("--cold"))
      opt.cold = 1;
    else if (OPT("--no-join"))
      opt.no_join = 1;
    else if (OPT("--trace"))
      opt.trace = (int)VAL(-2, 100000);
    else if (OPT("--interval"))
      opt.cfg.probe_interval_ms = (uint32_t)VAL(1, 1e6);
    else if (OPT("--timeout"))
      opt.cfg.probe_timeout_ms = (uint32_t)VAL(1, 1e6);
    else if (OPT("--k"))
      opt.cfg.indirect_k = (uint32_t)VAL(0, SWIM_MAX_K);
    else if (OPT("--alpha"))
      opt.cfg.suspicion_alpha = VAL(0.1, 1000);
    else if (OPT("--beta"))
      opt.cfg.suspicion_beta = VAL(1, 1000);
    else if (OPT("--confirm"))
      opt.cfg.confirmations_k = (uint32_t)VAL(0, SWIM_MAX_K);
    else if (OPT("--lambda"))
      opt.cfg.retransmit_lambda = VAL(0.1, 100);
    else if (OPT("--max-lhm"))
      opt.cfg.max_lhm = (uint32_t)VAL(0, 100);
    else if (OPT("--push-pull"))
      opt.cfg.push_pull_interval_ms = (uint32_t)VAL(1, 1e8);
    else if (OPT("--gossip-interval"))
      opt.cfg.gossip_interval_ms = (uint32_t)VAL(1, 1e6);
    else if (OPT("--tombstone"))
      opt.cfg.tombstone_ms = (uint32_t)VAL(1, 1e9);
    else if (OPT("--keep-unreachable"))
      opt.cfg.keep_unreachable = 1;
    else if (OPT("--fanout"))
      opt.cfg.gossip_fanout = (uint32_t)VAL(0, SWIM_MAX_K);
    else if (a[0] == '-') {
      fprintf(stderr, "swimsim: unknown option %s (see --help)\n", a);
      exit(2);
    } else if (opt.scenario == NULL)
      opt.scenario = a;
    else {
      fprintf(stderr, "swimsim: one scenario at a time ('%s' and '%s')\n", opt.scenario, a);
      exit(2);
    }
#undef OPT
#undef VAL
  }
  if (opt.scenario == NULL) {
    usage(stderr);
    exit(2);
  }
  if (opt.loss < 0) opt.loss = strcmp(opt.scenario, "loss") == 0 ? 0.05 : 0;
}

/* A broken invariant: say what, and how to replay it. */
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stdout, "FAIL seed=%" PRIu64 ": ", opt.seed);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fprintf(stdout, "\nreplay:");
  for (int i = 0; i < g_argc; i++) fprintf(stdout, " %s", g_argv[i]);
  int has_seed = 0;
  for (int i = 1; i < g_argc; i++)
    has_seed |= !strcmp(g_argv[i], "-s") || !strcmp(g_argv[i], "--seed");
  if (!has_seed) fprintf(stdout, " --seed %" PRIu64, opt.seed);
  fprintf(stdout, "\n");
  exit(1);
}

/* ---- the world ------------------------------------------------------------- */

enum { EV_PACKET = 0, EV_PUSH_PULL = 1, EV_TICK = 2 }; /* at equal times, packets first */

typedef struct event_s {
  uint64_t at, seq;
  int type, from, to;
  char *data;
  size_t len;
} event_t;

typedef struct node_s {
  int id;
  char addr[SWIM_ADDR_MAX];
  swim_t *swim;
  uint64_t uid;
  uint64_t rng;
  int crashed;
  uint64_t paused_until; /* 0: running */
  uint64_t tick_at;      /* the tick scheduled; others in the queue are stale */
  int group;             /* partition side */
  int up_after_merge;    /* joining: goes up after its first push-pull, as nodes do */
  uint32_t upno;         /* its last run's upno, once crashed */
  int saw_downed;        /* it held the downed run (down_id, down_uid) downed */
  int self_downed;       /* its own slot was reported downed */
  uint64_t bytes_sent, packets_sent;
  /* what this node last saw of each node: its uid and version */
  uint64_t *seen_uid;
  uint32_t *seen_version;
} node_t;

static node_t *nodes;
static int n_nodes;
static uint64_t now_ms;
static uint64_t net_rng;
static uint64_t ev_seq;
static event_t *heap;
static size_t heap_n, heap_cap;
static int cut;         /* the network is cut between groups */
static int cut_one_way; /* only group 0 -> group 1 is cut */
static uint64_t packets_lost;
static uint64_t push_pulls; /* exchanges asked for */
static double net_loss;     /* opt.loss, once the cluster has started */

/* What the scenario watches for, fed by the nodes' `changed` callbacks. */
static int watch_id = -1; /* the node whose verdicts are counted */
static uint64_t watch_uid;
static int watch_dead_count; /* members that declared it dead */
static uint64_t watch_first_dead, watch_last_dead;
static int watch_up_count; /* members that saw it up */
static uint64_t watch_last_up;
static uint64_t false_deaths;     /* live members declared dead */
static uint64_t same_side_deaths; /* ... by a member on the same side of a partition */
static int deaths_allowed;
static int down_id = -1; /* the node whose run was downed, and that run */
static uint64_t down_uid;

static int ev_before(const event_t *a, const event_t *b) {
  if (a->at != b->at) return a->at < b->at;
  if (a->type != b->type) return a->type < b->type;
  return a->seq < b->seq;
}

static void push(event_t ev) {
  if (heap_n == heap_cap) {
    heap_cap = heap_cap ? heap_cap * 2 : 1024;
    heap = realloc(heap, heap_cap * sizeof *heap);
    if (heap == NULL) abort();
  }
  ev.seq = ev.seq ? ev.seq : ++ev_seq;
  size_t i = heap_n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_before(&ev, &heap[parent])) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = ev;
}

static event_t pop(void) {
  event_t top = heap[0];
  event_t last = heap[--heap_n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= heap_n) break;
    if (c + 1 < heap_n && ev_before(&heap[c + 1], &heap[c])) c++;
    if (!ev_before(&heap[c], &last)) break;
    heap[i] = heap[c];
    i = c;
  }
  if (heap_n > 0) heap[i] = last;
  return top;
}

static int node_of(const char *addr) {
  const char *colon = strrchr(addr, ':');
  if (colon == NULL) return -1;
  int id = atoi(colon + 1) - 10000;
  return id >= 0 && id < n_nodes ? id : -1;
}

static int blocked(int from, int to) {
  if (!cut || nodes[from].group == nodes[to].group) return 0;
  return cut_one_way ? nodes[from].group == 0 : 1;
}

static uint64_t delay(void) {
  return opt.delay_ms + (opt.jitter_ms ? splitmix(&net_rng) % (opt.jitter_ms + 1) : 0);
}

static void env_send(void *ctx, const char *addr, const char *data, size_t len) {
  node_t *from = ctx;
  from->bytes_sent += len;
  from->packets_sent++;
  int to = node_of(addr);
  if (len > SWIM_PACKET_MAX) fail("node %d sent a packet of %zu bytes", from->id, len);
  if (opt.trace >= 0 && (to == opt.trace || from->id == opt.trace) && len > 1) {
    static const char *const types[] = {"?", "ping", "ack", "ping-req", "nack"};
    printf("trace %.3f %d -> %d %s (%zu bytes)\n", (double)now_ms / 1000, from->id, to,
           types[(unsigned char)data[1] <= 4 ? (unsigned char)data[1] : 0], len);
  }
  if (to < 0 || blocked(from->id, to) || unit_rand(&net_rng) < net_loss) {
    packets_lost++;
    return;
  }
  event_t ev = {.at = now_ms + delay(), .type = EV_PACKET, .from = from->id, .to = to, .len = len};
  ev.data = malloc(len);
  if (ev.data == NULL) abort();
  memcpy(ev.data, data, len);
  push(ev);
}

static void env_push_pull(void *ctx, const char *addr) {
  node_t *from = ctx;
  int to = node_of(addr);
  if (to < 0) return;
  push_pulls++;
  /* A TCP exchange: connect, send, reply: two round trips. */
  event_t ev = {.at = now_ms + 4 * delay(), .type = EV_PUSH_PULL, .from = from->id, .to = to};
  push(ev);
}

static uint32_t env_random(void *ctx) {
  node_t *nd = ctx;
  return (uint32_t)splitmix(&nd->rng);
}

/* The upno a node gave its current run (its last run's, once crashed). */
static uint32_t own_upno(const node_t *nd) {
  return nd->swim ? swim_self(nd->swim)->upno : nd->upno;
}

/* What must hold of every member a node holds: its version never goes
 * down, and its upno, once known, is the one its node gave that run (a
 * core that took another would have heard two different ones). */
static void check_member(node_t *obs, const swim_member_t *m) {
  int id = node_of(m->addr);
  if (id < 0) fail("node %d knows an address no node has: %s", obs->id, m->addr);
  if (obs->seen_uid[id] == m->uid && m->version < obs->seen_version[id]) {
    fail("node %d saw member %d's version go down from %u to %u", obs->id, id,
         obs->seen_version[id], m->version);
  }
  obs->seen_uid[id] = m->uid;
  obs->seen_version[id] = m->version;
  if (id == down_id && m->uid == down_uid) {
    if (obs->saw_downed && m->state != SWIM_DOWNED) {
      fail("node %d held node %d's downed run %s again", obs->id, id, swim_state_name(m->state));
    }
    obs->saw_downed |= m->state == SWIM_DOWNED;
  }
  if (m->upno && m->uid == nodes[id].uid && m->upno != own_upno(&nodes[id])) {
    fail("node %d holds upno %u for node %d, whose run has %u", obs->id, m->upno, id,
         own_upno(&nodes[id]));
  }
}

static void env_changed(void *ctx, const swim_member_t *m, swim_event_t event,
                        swim_state_t old_state, swim_phase_t old_phase) {
  node_t *obs = ctx;
  int id = node_of(m->addr);
  if (id == opt.trace) {
    static const char *const evn[] = {"added", "changed", "removed"};
    printf("trace %.3f node %d: %d %s %s/%s v%u (was %s/%s) lhm %u\n", (double)now_ms / 1000,
           obs->id, id, evn[event], swim_state_name(m->state), swim_phase_name(m->phase),
           m->version, swim_state_name(old_state), swim_phase_name(old_phase), swim_lhm(obs->swim));
  }
  if (id == obs->id && m->state == SWIM_DOWNED) {
    if (!swim_is_downed(obs->swim)) fail("node %d reported itself downed, but is not", id);
    obs->self_downed = 1;
  }
  if (event == SWIM_REMOVED && id != obs->id && obs->seen_uid[id] == m->uid) {
    /* Forgotten: what the node learns of that run later starts afresh. */
    obs->seen_uid[id] = 0;
    obs->seen_version[id] = 0;
  }
  if (id == obs->id || event == SWIM_REMOVED) return;
  check_member(obs, m);
  node_t *subject = &nodes[id];
  if (m->state == SWIM_DEAD && old_state != SWIM_DEAD && event == SWIM_CHANGED) {
    int real = subject->crashed || subject->uid != m->uid;
    if (!real) {
      false_deaths++;
      if (obs->group == subject->group) same_side_deaths++;
      if (opt.trace == -2) {
        printf("false death %.3f: node %d declared node %d dead\n", (double)now_ms / 1000, obs->id,
               id);
      }
      if (!deaths_allowed) {
        fail("node %d declared node %d dead at %.3f s, but it is alive", obs->id, id,
             (double)now_ms / 1000);
      }
    }
    if (id == watch_id && m->uid == watch_uid) {
      if (watch_dead_count++ == 0) watch_first_dead = now_ms;
      watch_last_dead = now_ms;
    }
  }
  if (id == watch_id && m->uid == watch_uid && m->phase == SWIM_UP && m->state == SWIM_ALIVE &&
      (event == SWIM_ADDED || old_phase != SWIM_UP || old_state != SWIM_ALIVE)) {
    watch_up_count++;
    watch_last_up = now_ms;
  }
}

static void node_start(node_t *nd) {
  swim_env_t env = {
      .ctx = nd,
      .send = env_send,
      .push_pull = env_push_pull,
      .changed = env_changed,
      .random = env_random,
  };
  nd->uid = (splitmix(&net_rng) & (SWIM_UID_MAX - 1)) | 1;
  nd->crashed = 0;
  nd->paused_until = 0;
  nd->up_after_merge = 0;
  nd->upno = 0;
  nd->self_downed = 0;
  /* A new run remembers nothing. */
  memset(nd->seen_uid, 0, (size_t)opt.nodes * sizeof *nd->seen_uid);
  memset(nd->seen_version, 0, (size_t)opt.nodes * sizeof *nd->seen_version);
  nd->swim = swim_create(&opt.cfg, &env, nd->addr, "", nd->uid, now_ms);
  if (nd->swim == NULL) fail("swim_create failed for node %d", nd->id);
  nd->tick_at = now_ms + 1;
  push((event_t){.at = nd->tick_at, .type = EV_TICK, .to = nd->id});
}

static void node_crash(node_t *nd) {
  nd->crashed = 1;
  nd->upno = swim_self(nd->swim)->upno;
  swim_destroy(nd->swim);
  nd->swim = NULL;
}

/* Runs a node's timers and schedules its next tick. */
static void node_tick(node_t *nd) {
  uint64_t next = swim_tick(nd->swim, now_ms);
  if (next <= now_ms) next = now_ms + 1;
  if (next != nd->tick_at || nd->tick_at <= now_ms) {
    nd->tick_at = next;
    push((event_t){.at = next, .type = EV_TICK, .to = nd->id});
  }
}

/* A push-pull: a sends its state, b merges it and replies with its own
 * (which may now hold a refutation), a merges that. */
static void exchange(node_t *a, node_t *b) {
  buf_t sa, sb;
  buf_init(&sa);
  buf_init(&sb);
  if (swim_state(a->swim, &sa)) fail("swim_state failed");
  if (swim_merge(b->swim, now_ms, sa.data, sa.len)) fail("node %d could not merge a state", b->id);
  if (swim_state(b->swim, &sb)) fail("swim_state failed");
  if (swim_merge(a->swim, now_ms, sb.data, sb.len)) fail("node %d could not merge a state", a->id);
  buf_close(&sa);
  buf_close(&sb);
  /* A joining node goes up once an exchange told it the cluster (in the
   * node: became_joined, lib/atoll/cluster/membership.lua). */
  node_t *both[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    if (both[i]->up_after_merge) {
      both[i]->up_after_merge = 0;
      swim_set_phase(both[i]->swim, now_ms, SWIM_UP);
    }
  }
  node_tick(a);
  node_tick(b);
}

/* Runs the world until `until` (virtual ms). */
static void run_until(uint64_t until) {
  while (heap_n > 0 && heap[0].at <= until) {
    event_t ev = pop();
    now_ms = ev.at;
    node_t *to = &nodes[ev.to];
    if (to->crashed || (ev.type == EV_PACKET && to->crashed)) {
      free(ev.data);
      continue;
    }
    if (to->paused_until > now_ms) {
      /* Everything waits for the node to run again, in the same order. */
      if (ev.type == EV_TICK) {
        if (ev.at != to->tick_at) continue;
        to->tick_at = to->paused_until;
      }
      ev.at = to->paused_until;
      push(ev);
      continue;
    }
    switch (ev.type) {
      case EV_PACKET:
        swim_receive(to->swim, now_ms, ev.data, ev.len);
        free(ev.data);
        node_tick(to);
        break;
      case EV_PUSH_PULL: {
        node_t *from = &nodes[ev.from];
        if (from->crashed || blocked(ev.from, ev.to) || blocked(ev.to, ev.from)) break;
        if (from->paused_until > now_ms) {
          ev.at = from->paused_until;
          push(ev);
          break;
        }
        exchange(from, to);
        break;
      }
      case EV_TICK:
        if (ev.at != to->tick_at) break; /* stale */
        node_tick(to);
        break;
    }
  }
  now_ms = until;
}

static uint64_t period_ms(void) {
  return opt.cfg.probe_interval_ms;
}

/* ---- views ---------------------------------------------------------------------- */

static int live_count(void) {
  int c = 0;
  for (int i = 0; i < n_nodes; i++) c += !nodes[i].crashed;
  return c;
}

/* Checks every live node's view of every node it knows: versions never
 * went down. */
static void check_views(void) {
  for (int i = 0; i < n_nodes; i++) {
    if (nodes[i].crashed) continue;
    if (swim_stats(nodes[i].swim)->dropped) fail("node %d dropped a packet it could not read", i);
    size_t count;
    const swim_member_t *m = swim_members(nodes[i].swim, &count);
    for (size_t k = 1; k < count; k++) {
      if (m[k].addr[0]) check_member(&nodes[i], &m[k]);
    }
  }
}

/* 1 when every live node sees every live node alive and up, at the version
 * that node has of itself, and sees no crashed node alive. */
static int converged(void) {
  for (int i = 0; i < n_nodes; i++) {
    if (nodes[i].crashed) continue;
    for (int j = 0; j < n_nodes; j++) {
      if (i == j) continue;
      const swim_member_t *m = swim_find(nodes[i].swim, nodes[j].addr);
      if (nodes[j].crashed) {
        if (m && m->uid == nodes[j].uid && m->state != SWIM_DEAD) return 0;
        continue;
      }
      const swim_member_t *self = swim_self(nodes[j].swim);
      if (m == NULL || m->uid != self->uid || m->state != SWIM_ALIVE ||
          m->version != self->version || m->phase != self->phase) {
        return 0;
      }
    }
  }
  return 1;
}

/* Runs period by period until the views converge; the periods it took, or
 * fails after `limit`. */
static int run_until_converged(int limit, const char *what) {
  for (int p = 0; p <= limit; p++) {
    if (converged()) return p;
    run_until(now_ms + period_ms());
    if (n_nodes <= 200) check_views();
  }
  fail("views did not converge %s within %d periods", what, limit);
  return -1;
}

/* Starts the cluster: every node joins through node 0 and announces it is
 * up; with a warm start every node then merges node 0's full state, so that
 * large clusters are ready at once. The last `late` nodes are not started
 * (they count as crashed until they are). */
static void start_cluster(int announce_up, int late) {
  n_nodes = opt.nodes;
  nodes = calloc((size_t)n_nodes, sizeof *nodes);
  net_rng = opt.seed * 0x2545f4914f6cdd1dull + 1;
  for (int i = 0; i < n_nodes; i++) {
    node_t *nd = &nodes[i];
    nd->id = i;
    nd->rng = splitmix(&net_rng);
    snprintf(nd->addr, sizeof nd->addr, "10.0.%d.%d:%d", i / 250, i % 250 + 1, 10000 + i);
    nd->seen_uid = calloc((size_t)n_nodes, sizeof *nd->seen_uid);
    nd->seen_version = calloc((size_t)n_nodes, sizeof *nd->seen_version);
    if (i < n_nodes - late)
      node_start(nd);
    else
      nd->crashed = 1;
  }
  int started = n_nodes - late;
  for (int i = 1; i < started; i++) swim_join(nodes[i].swim, now_ms, nodes[0].addr);
  if (announce_up) {
    for (int i = 0; i < started; i++) swim_set_phase(nodes[i].swim, now_ms, SWIM_UP);
  }
  run_until(now_ms + 2 * period_ms());
  if (!opt.cold) {
    for (int i = 1; i < started; i++) exchange(&nodes[0], &nodes[i]);
  }
  int limit = opt.cold ? 400 : 40;
  int p = run_until_converged(limit, "after the cluster started");
  printf("join.periods %d\n", p + 2);
  /* Let the news of the joins die down before measuring anything. */
  int settle = 0;
  for (;; settle++) {
    size_t pending = 0;
    for (int i = 0; i < n_nodes; i++) pending += nodes[i].swim ? swim_pending(nodes[i].swim) : 0;
    if (pending == 0) break;
    if (settle == 400) fail("gossip still pending after 400 periods (%zu updates)", pending);
    run_until(now_ms + period_ms());
  }
  printf("settle.periods %d\n", settle);
  net_loss = opt.loss; /* faults start once the cluster stands */
}

/* ---- scenarios ----------------------------------------------------------------- */

static uint64_t total_bytes(void) {
  uint64_t b = 0;
  for (int i = 0; i < n_nodes; i++) b += nodes[i].bytes_sent;
  return b;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile of sorted values (nearest rank). */
static uint64_t quantile(const uint64_t *v, size_t n, double q) {
  size_t rank = (size_t)ceil(q * (double)n);
  if (rank < 1) rank = 1;
  return v[rank - 1];
}

/* Runs `periods` periods and reports bytes per member per period. */
static void steady(int periods) {
  uint64_t b0 = total_bytes(), t0 = now_ms;
  for (int p = 0; p < periods; p++) {
    run_until(now_ms + period_ms());
    if (n_nodes <= 100) check_views();
  }
  double per = (double)(total_bytes() - b0) / live_count() / ((double)(now_ms - t0) / period_ms());
  printf("bytes.per.member.period %.1f\n", per);
}

static void scenario_quiet(void) {
  start_cluster(1, 0);
  steady(opt.periods);
  printf("deaths.false %" PRIu64 "\n", false_deaths);
}

static void scenario_loss(void) {
  start_cluster(1, 0);
  deaths_allowed = 1; /* count them */
  uint64_t refutations0 = 0;
  for (int i = 0; i < n_nodes; i++) refutations0 += swim_stats(nodes[i].swim)->refutations;
  steady(opt.periods);
  uint64_t suspicions = 0, refutations = 0;
  for (int i = 0; i < n_nodes; i++) {
    suspicions += swim_stats(nodes[i].swim)->suspicions;
    refutations += swim_stats(nodes[i].swim)->refutations;
  }
  printf("suspicions %" PRIu64 "\n", suspicions);
  printf("refutations %" PRIu64 "\n", refutations - refutations0);
  printf("deaths.false %" PRIu64 "\n", false_deaths);
}

/* The longest a crash may take to be declared dead by all, from the
 * parameters: every member probes every other at least once in two rounds
 * of its shuffled order (2(n - 1) periods), suspects it at the end of that
 * period, and declares it dead at the latest when the longest suspicion
 * runs out; allow one more period for timers and delays. */
static double detection_bound_s(void) {
  double n = n_nodes, lg = n > 1 ? log10(n) : 1;
  if (lg < 1) lg = 1;
  double interval = opt.cfg.probe_interval_ms / 1000.0;
  double max_suspicion = opt.cfg.suspicion_beta * opt.cfg.suspicion_alpha * lg * interval;
  return (2 * (n - 1) + 2) * interval + max_suspicion;
}

/* Crashes a random node at a random moment within a period and runs until every other member
 * has declared it dead, failing past `bound` seconds (crash number k); returns the node, and when
 * it crashed in *crashed_at. */
static node_t *crash_one_until_dead(double bound, int k, uint64_t *crashed_at) {
  run_until(now_ms + splitmix(&net_rng) % period_ms());
  node_t *victim = &nodes[splitmix(&net_rng) % (uint64_t)n_nodes];
  watch_id = victim->id;
  watch_uid = victim->uid;
  watch_dead_count = 0;
  *crashed_at = now_ms;
  node_crash(victim);
  int others = n_nodes - 1;
  while (watch_dead_count < others) {
    if ((double)(now_ms - *crashed_at) / 1000 > bound) {
      fail("crash %d: node %d declared dead by %d of %d members after %.1f s (bound %.1f s)", k,
           victim->id, watch_dead_count, others, (double)(now_ms - *crashed_at) / 1000, bound);
    }
    run_until(now_ms + 10);
  }
  return victim;
}

static void scenario_crash(void) {
  if (opt.nodes < 3) fail("crash needs at least 3 nodes");
  start_cluster(1, 0);
  uint64_t *all = calloc((size_t)opt.kills, sizeof *all);
  uint64_t *first = calloc((size_t)opt.kills, sizeof *first);
  uint64_t *rejoin = calloc((size_t)opt.kills, sizeof *rejoin);
  uint64_t *pulls = calloc((size_t)opt.kills, sizeof *pulls);
  double bound = detection_bound_s();
  uint64_t b0 = total_bytes(), t0 = now_ms;
  for (int k = 0; k < opt.kills; k++) {
    uint64_t crashed_at;
    node_t *victim = crash_one_until_dead(bound, k, &crashed_at);
    all[k] = watch_last_dead - crashed_at;
    first[k] = watch_first_dead - crashed_at;
    /* Restart it as a new run, joining through a random live member, or
     * (--no-join) through no one: then the members that remember it must
     * find it. */
    run_until(now_ms + splitmix(&net_rng) % (2 * period_ms()));
    node_start(victim);
    swim_set_phase(victim->swim, now_ms, SWIM_UP);
    if (!opt.no_join) {
      int seed;
      do seed = (int)(splitmix(&net_rng) % (uint64_t)n_nodes);
      while (seed == victim->id);
      swim_join(victim->swim, now_ms, nodes[seed].addr);
    }
    watch_id = -1;
    uint64_t restarted_at = now_ms, pulls0 = push_pulls;
    run_until_converged(200, "after a restart");
    rejoin[k] = now_ms - restarted_at;
    pulls[k] = push_pulls - pulls0;
  }
  double per = (double)(total_bytes() - b0) / n_nodes / ((double)(now_ms - t0) / period_ms());
  qsort(all, (size_t)opt.kills, sizeof *all, cmp_u64);
  qsort(first, (size_t)opt.kills, sizeof *first, cmp_u64);
  qsort(rejoin, (size_t)opt.kills, sizeof *rejoin, cmp_u64);
  qsort(pulls, (size_t)opt.kills, sizeof *pulls, cmp_u64);
  printf("kills %d\n", opt.kills);
  printf("detect.first.p50.s %.3f\n", (double)quantile(first, (size_t)opt.kills, 0.5) / 1000);
  printf("detect.p50.s %.3f\n", (double)quantile(all, (size_t)opt.kills, 0.5) / 1000);
  printf("detect.p99.s %.3f\n", (double)quantile(all, (size_t)opt.kills, 0.99) / 1000);
  printf("detect.max.s %.3f\n", (double)all[opt.kills - 1] / 1000);
  printf("detect.bound.s %.3f\n", bound);
  /* Views converged again (to the period): every member sees the new run
   * up, and it sees every member. */
  printf("rejoin.p50.s %.3f\n", (double)quantile(rejoin, (size_t)opt.kills, 0.5) / 1000);
  printf("rejoin.max.s %.3f\n", (double)rejoin[opt.kills - 1] / 1000);
  printf("rejoin.push.pulls.max %" PRIu64 "\n", pulls[opt.kills - 1]);
  printf("bytes.per.member.period %.1f\n", per);
  printf("deaths.false %" PRIu64 "\n", false_deaths);
  free(all);
  free(first);
  free(rejoin);
  free(pulls);
}

static void scenario_pause(void) {
  start_cluster(1, 0);
  run_until(now_ms + splitmix(&net_rng) % period_ms());
  node_t *victim = &nodes[splitmix(&net_rng) % (uint64_t)n_nodes];
  victim->paused_until = now_ms + opt.pause_ms;
  uint64_t s0 = 0;
  for (int i = 0; i < n_nodes; i++) s0 += swim_stats(nodes[i].swim)->suspicions;
  run_until(victim->paused_until);
  int p = run_until_converged(40, "after the pause");
  uint64_t s1 = 0;
  for (int i = 0; i < n_nodes; i++) s1 += swim_stats(nodes[i].swim)->suspicions;
  printf("suspicions %" PRIu64 "\n", s1 - s0);
  printf("recovered.periods %d\n", p);
  printf("deaths.false %" PRIu64 "\n", false_deaths);
}

static void scenario_partition(void) {
  start_cluster(1, 0);
  for (int i = 0; i < n_nodes; i++) nodes[i].group = i % 2;
  cut = 1;
  cut_one_way = opt.asymmetric;
  deaths_allowed = 1; /* a partition long enough is meant to end in deaths */
  uint64_t split_at = now_ms;
  while (now_ms - split_at < opt.split_ms) {
    run_until(now_ms + period_ms());
    if (n_nodes <= 100) check_views();
  }
  cut = 0;
  printf("deaths.during %" PRIu64 "\n", false_deaths);
  uint64_t before = false_deaths;
  /* Push-pull with dead members reconnects the sides; allow four of its
   * intervals (it starts at a random point in the first). */
  int limit = (int)(4 * opt.cfg.push_pull_interval_ms / period_ms()) + 40;
  int p = run_until_converged(limit, "after the partition healed");
  printf("converge.periods %d\n", p);
  printf("deaths.after %" PRIu64 "\n", false_deaths - before);
  printf("deaths.same.side %" PRIu64 "\n", same_side_deaths);
}

static void scenario_disseminate(void) {
  start_cluster(0, 0);
  if (opt.trials > n_nodes) opt.trials = n_nodes; /* each node announces itself once */
  uint64_t *periods = calloc((size_t)opt.trials, sizeof *periods);
  for (int t = 0; t < opt.trials; t++) {
    node_t *nd = &nodes[t % n_nodes];
    run_until(now_ms + splitmix(&net_rng) % period_ms());
    watch_id = nd->id;
    watch_uid = nd->uid;
    watch_up_count = 0;
    uint64_t t0 = now_ms;
    swim_set_phase(nd->swim, now_ms, SWIM_UP);
    node_tick(nd); /* as the node does after any call into the core */
    while (watch_up_count < n_nodes - 1) {
      if (now_ms - t0 > 200 * period_ms()) {
        fail("disseminate: node %d's news reached %d of %d members in 200 periods", nd->id,
             watch_up_count, n_nodes - 1);
      }
      run_until(now_ms + 10);
    }
    periods[t] = (watch_last_up - t0 + period_ms() - 1) / period_ms();
    watch_id = -1;
    run_until(now_ms + 2 * period_ms());
  }
  qsort(periods, (size_t)opt.trials, sizeof *periods, cmp_u64);
  printf("trials %d\n", opt.trials);
  printf("dissemination.periods.p50 %" PRIu64 "\n", quantile(periods, (size_t)opt.trials, 0.5));
  printf("dissemination.periods.max %" PRIu64 "\n", periods[opt.trials - 1]);
  printf("dissemination.bound %d\n", (int)ceil(3 * log2((double)n_nodes)));
  free(periods);
}

/* Checks, once the views converged, that every live node holds every
 * live node's upno as that node gave it, that every live node has one,
 * and that `newest` (unless -1), which went up last, has the largest. */
static void check_seniority(int newest, const char *what) {
  for (int j = 0; j < n_nodes; j++) {
    if (nodes[j].crashed) continue;
    uint32_t upno = own_upno(&nodes[j]);
    if (upno == 0) fail("%s: node %d is up without an upno", what, j);
    if (newest >= 0 && j != newest && upno >= own_upno(&nodes[newest])) {
      fail("%s: node %d went up last with upno %u, but node %d, up before it, has %u", what, newest,
           own_upno(&nodes[newest]), j, upno);
    }
    for (int i = 0; i < n_nodes; i++) {
      if (nodes[i].crashed) continue;
      const swim_member_t *m = swim_find(nodes[i].swim, nodes[j].addr);
      if (m == NULL || m->upno != upno) {
        fail("%s: node %d holds upno %u for node %d, whose run has %u", what, i, m ? m->upno : 0, j,
             upno);
      }
    }
  }
}

/* A node starts (as a new run, if it ran before) and joins through a
 * random live member, going up after its first push-pull. */
static void join_late(node_t *nd) {
  int seed;
  do seed = (int)(splitmix(&net_rng) % (uint64_t)n_nodes);
  while (seed == nd->id || nodes[seed].crashed);
  node_start(nd);
  nd->up_after_merge = 1;
  swim_join(nd->swim, now_ms, nodes[seed].addr);
}

static void scenario_seniority(void) {
  if (opt.nodes < 3 || opt.joins > opt.nodes - 2) fail("seniority needs --joins <= N - 2");
  start_cluster(1, opt.joins);
  check_seniority(-1, "after the cluster started");
  for (int j = opt.nodes - opt.joins; j < opt.nodes; j++) {
    run_until(now_ms + splitmix(&net_rng) % (2 * period_ms()));
    join_late(&nodes[j]);
    run_until_converged(200, "after a join");
    check_seniority(j, "after a join");
  }
  for (int k = 0; k < opt.kills; k++) {
    run_until(now_ms + splitmix(&net_rng) % (2 * period_ms()));
    node_t *victim = &nodes[splitmix(&net_rng) % (uint64_t)n_nodes];
    node_crash(victim);
    /* Back at once, or after the others declared it dead. */
    run_until(now_ms + splitmix(&net_rng) % (20 * period_ms()));
    join_late(victim);
    run_until_converged(200, "after a restart");
    check_seniority(victim->id, "after a restart");
  }
  uint32_t max = 0;
  for (int j = 0; j < n_nodes; j++) max = own_upno(&nodes[j]) > max ? own_upno(&nodes[j]) : max;
  printf("joins %d\nkills %d\nupno.max %u\n", opt.joins, opt.kills, max);
}

/* The members, other than the downed node, that hold its run downed; and
 * whether it knows. */
static int holding_down(const node_t *victim) {
  int c = 0;
  for (int i = 0; i < n_nodes; i++) {
    if (i == victim->id || nodes[i].crashed) continue;
    const swim_member_t *m = swim_find(nodes[i].swim, victim->addr);
    c += m && m->uid == victim->uid && m->state == SWIM_DOWNED;
  }
  return c;
}

static int random_other(int a, int b) {
  int id;
  do id = (int)(splitmix(&net_rng) % (uint64_t)n_nodes);
  while (id == a || id == b);
  return id;
}

static void scenario_down(void) {
  if (opt.nodes < 3) fail("down needs at least 3 nodes");
  start_cluster(1, 0);
  deaths_allowed = 1; /* the death by hand */
  run_until(now_ms + splitmix(&net_rng) % period_ms());
  node_t *victim = &nodes[splitmix(&net_rng) % (uint64_t)n_nodes];
  node_t *downer = &nodes[random_other(victim->id, -1)];
  node_t *killer = &nodes[random_other(victim->id, downer->id)];
  uint64_t bound = (uint64_t)ceil(3 * log2((double)n_nodes)) * period_ms();
  if (opt.isolate) {
    /* Cut off: the others declare it dead, it declares them dead. */
    for (int i = 0; i < n_nodes; i++) nodes[i].group = i == victim->id;
    cut = 1;
    run_until(now_ms + opt.split_ms / 2);
  }
  down_id = victim->id;
  down_uid = victim->uid;
  uint64_t t0 = now_ms;
  /* A verdict it refutes, raced by one it may not. */
  if (swim_down(killer->swim, now_ms, victim->addr) == 0) node_tick(killer);
  if (swim_down_final(downer->swim, now_ms, victim->addr)) fail("swim_down_final refused");
  node_tick(downer);
  if (opt.isolate) {
    run_until(t0 + opt.split_ms / 2);
    cut = 0;
    t0 = now_ms;
    bound = 20 * period_ms();
  }
  int others = n_nodes - 1;
  while (holding_down(victim) < others || !victim->self_downed) {
    if (now_ms - t0 > bound) {
      fail("node %d was held downed by %d of %d members%s after %.1f s (bound %.1f s)", victim->id,
           holding_down(victim), others, victim->self_downed ? "" : ", and did not know it",
           (double)(now_ms - t0) / 1000, (double)bound / 1000);
    }
    run_until(now_ms + 10);
  }
  printf("down.node %d\ndown.periods %.1f\n", victim->id, (double)(now_ms - t0) / period_ms());
  /* It keeps running: no member may hold that run otherwise (check_member),
   * not even once its tombstone expired. */
  for (int p = 0; p < opt.periods; p++) {
    run_until(now_ms + period_ms());
    check_views();
  }
  int remembered = holding_down(victim);
  printf("down.remembered %d\n", remembered);
  /* Restarted as a new run, it is a member again. */
  node_crash(victim);
  join_late(victim);
  int p = run_until_converged(200, "after the downed node restarted");
  printf("rejoin.periods %d\n", p);
}

static void scenario_unreachable(void) {
  if (opt.nodes < 3) fail("unreachable needs at least 3 nodes");
  start_cluster(1, 0);
  uint64_t crashed_at;
  node_t *victim = crash_one_until_dead(detection_bound_s(), 0, &crashed_at);
  int others = n_nodes - 1;
  run_until(now_ms + opt.cfg.tombstone_ms + 4 * period_ms());
  int kept = 0, forgotten = 0;
  for (int i = 0; i < n_nodes; i++) {
    if (nodes[i].crashed) continue;
    const swim_member_t *m = swim_find(nodes[i].swim, victim->addr);
    if (m == NULL)
      forgotten++;
    else if (m->uid == victim->uid && m->state == SWIM_DEAD)
      kept++;
    else
      fail("node %d holds node %d as %s", i, victim->id, swim_state_name(m->state));
  }
  if (opt.cfg.keep_unreachable ? kept != others : forgotten != others) {
    fail(
        "%d of %d members still hold node %d, dead for longer than its tombstone (keep_unreachable "
        "%d)",
        kept, others, victim->id, opt.cfg.keep_unreachable);
  }
  printf("unreachable.kept %d\nunreachable.forgotten %d\n", kept, forgotten);
  printf("majority %d\n", swim_has_majority(nodes[victim->id == 0 ? 1 : 0].swim));
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  parse(argc, argv);
  printf("scenario %s\nnodes %d\nseed %" PRIu64 "\n", opt.scenario, opt.nodes, opt.seed);
  if (!strcmp(opt.scenario, "quiet"))
    scenario_quiet();
  else if (!strcmp(opt.scenario, "loss"))
    scenario_loss();
  else if (!strcmp(opt.scenario, "crash"))
    scenario_crash();
  else if (!strcmp(opt.scenario, "pause"))
    scenario_pause();
  else if (!strcmp(opt.scenario, "partition"))
    scenario_partition();
  else if (!strcmp(opt.scenario, "disseminate"))
    scenario_disseminate();
  else if (!strcmp(opt.scenario, "seniority"))
    scenario_seniority();
  else if (!strcmp(opt.scenario, "down"))
    scenario_down();
  else if (!strcmp(opt.scenario, "unreachable"))
    scenario_unreachable();
  else {
    fprintf(stderr, "swimsim: unknown scenario '%s' (see --help)\n", opt.scenario);
    return 2;
  }
  printf("packets.lost %" PRIu64 "\n", packets_lost);
  printf("ok\n");
  return 0;
}
