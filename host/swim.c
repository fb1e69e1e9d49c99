/* SWIM membership with the Lifeguard extensions, as a pure state machine.
 *
 * Every probe interval a node probes the next member of a shuffled
 * round-robin order: a ping; if no ack comes within the probe timeout, a
 * ping-req to k other members, who ping on its behalf and answer with an
 * ack, or a nack when the target does not answer them either. A member that
 * did not answer by the end of the interval becomes suspect; unless it
 * refutes (raising its version) before its suspicion times out, it is
 * declared dead. News of these changes rides on every packet (gossip), each
 * update on about lambda * log10(n + 1) packets, fewest-sent first; while
 * there is news, a gossip round also sends it to a few members at once
 * (memberlist's gossip rounds: without them, news rides only as fast as the
 * probes, and can die out before it reaches a member few probes visit).
 *
 * Lifeguard (Dadgar et al., 2018) adds: a local health multiplier (LHM) that
 * stretches this node's probe timeout and interval while it shows signs of
 * being the slow one (missed nacks, having to refute); a suspicion timeout
 * that starts long and shrinks as other members confirm the suspicion
 * independently; and the buddy system: a ping to a suspect carries the
 * suspicion first, so the suspect learns of it at once.
 *
 * Beyond the papers, each found necessary in the simulator (tests/sim):
 * - A refutation goes at once to the members that pinged this node lately
 *   (after a pause, they are the ones that suspect it) and to a few others.
 * - A packet that suspects this node at a version it already refuted gets
 *   the refutation straight back.
 * - Before declaring a suspect dead, a node pings it twice more ("last
 *   calls"), with the suspicion, so that a live member whose refutation
 *   missed this node answers with it.
 * - News that a member is dead, about one this node sees alive, starts a
 *   suspicion with the shortest timeout rather than a death: after a
 *   partition heals, each side's verdicts about the other reach members that
 *   can see them alive, and those members refute instead of dying.
 * - Push-pull also goes to a member declared dead now and then, so that
 *   the sides of a healed partition find each other again.
 * - Members declared dead or gone (tombstones) are called on with a ping
 *   now and then, round-robin, at a rate that stays flat as the cluster
 *   grows, until they are forgotten (dead ones never are, with
 *   keep_unreachable): a node restarted at the same address answers with
 *   its new run, and is back within seconds whether it was told whom to
 *   join or not; one alive after all hears its verdict and refutes it.
 * - A node that knew no other live member gets the whole view (a
 *   push-pull) from the first member it hears from, and so does a member
 *   from a new run that answers its call on a tombstone.
 * - A full state merged in a push-pull is not gossiped on (the peer itself
 *   excepted): a node joining a large cluster would otherwise flood it with
 *   news everyone has.
 *
 * Downing: a member can also be downed for good (swim_down_final: what a
 * keep-majority decision does to an unreachable member), which, unlike a
 * death, no refutation undoes. News that a run is DOWNED wins over any
 * other news about that run at any version (only its version follows the
 * news, so that views agree), and nothing changes it afterwards; a new run
 * at the address is a restart as usual. A downed member is a tombstone:
 * not probed, called on now and then, forgotten after the tombstone time;
 * but its run is remembered as downed (the last DOWNED_RUNS_MAX) for as
 * long as the node runs, and news of it ignored.
 * The news rides on twice as many packets as other news, since no detector
 * repairs a member that missed it. The downed node itself hears it on the
 * answer to its next ping (the buddy system, as for a suspect) or on a call
 * on its tombstone; it then refutes nothing and falls silent (it sends
 * nothing more, so that it cannot come back as a new member once the others
 * forgot its tombstone), and reports itself DOWNED.
 *
 * Seniority: a node that goes up numbers its run with upno = 1 + the
 * largest upno it knows of (of any member, gone or forgotten ones too), once
 * per run. A joining node goes up only after its first push-pull, so it
 * knows the members up before it and counts as younger than all of them;
 * (upno, addr) orders members totally, without clocks, and alike on every
 * member, since the upno travels with every update about the run. Nodes
 * that go up at the same moment may share a number; the address decides.
 * A member's upno, once known, never changes: a known one replaces 0 (news
 * from a node that does not send it), and of two different ones, which no
 * correct node sends, the smaller stays.
 *
 * Wire format: each packet is a MessagePack array
 *   [type, seq, from_addr, from_uid, (target_addr, target_uid,) gossip]
 * with gossip an array of updates [addr, uid, version, state, phase, name,
 * from, upno]; a full state (push-pull) is an array of the same updates.
 * An update of 7 fields (a node from before upno) is read with upno 0.
 * Packets are authenticated by the node before they get here. */
#include "swim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "mpk.h"

enum { MSG_PING = 1, MSG_ACK = 2, MSG_PING_REQ = 3, MSG_NACK = 4, MSG_GOSSIP = 5 };

#define MAX_HELPING       256  /* ping-reqs served at once */
#define GOSSIP_PER_PACKET 32   /* updates a packet may carry */
#define PINGERS           16   /* recent pingers remembered */
#define LAST_CALLS        2    /* pings to a suspect before declaring it dead */
#define TOMBSTONE_CALLERS 3    /* members calling on each tombstone per probe interval, about */
#define DOWNED_RUNS_MAX   1024 /* downed runs remembered once out of their slot (8 KB) */

/* The defaults, and why (the figures are the simulator's, tests/sim):
 * - probe interval 500 ms, timeout 200 ms: on a LAN or in a data center an
 *   ack takes well under a millisecond; 200 ms leaves room for a busy peer,
 *   and the interval halves memberlist's LAN 1 s so that at n = 10 a crash
 *   is declared dead by every member in about 3.4 s (median; 99th
 *   percentile under 5 s).
 * - k = 3 indirect probes: SWIM's and memberlist's choice; with 5% loss the
 *   chance that a live member fails the direct and all three indirect probes
 *   is under 1%, and it then still has its suspicion timeout to refute.
 * - suspicion min = alpha * max(1, log10 n) * interval with alpha = 4 (2 s
 *   up to n = 10, 6 s at n = 1000), max = beta * min with beta = 4:
 *   memberlist uses 4 and 6 with a 1 s interval. A node stalled for 2 s (a
 *   long GC pause, a VM migration, SIGSTOP) must not be declared dead: with
 *   alpha = 3 it was in 8 of 3,000 simulated pauses, with 4 in none.
 *   Confirmations let the timeout start long (few false positives) while
 *   real failures, which every prober confirms, end near the minimum.
 * - 2 confirmations bring the timeout to its minimum (fewer in clusters
 *   too small to have that many other members): at n = 10 a dead member is
 *   probed by about one member per interval.
 * - lambda = 4: memberlist's retransmit multiplier: 4 * ceil(log10(n + 1))
 *   transmissions per update and member, at least 2 * fanout + 2 (two
 *   gossip rounds and two probes), so that in a small cluster the
 *   round-robin gossip order alone reaches everyone: without that floor, 1
 *   in 70 updates missed a member of five until the next push-pull.
 * - gossip rounds every 200 ms to 3 members (memberlist's LAN values), the
 *   first one as soon as there is news: an update reaches all of 1,000
 *   members within one probe interval.
 * - LHM up to 8: Lifeguard's and memberlist's.
 * - push-pull every 30 s: memberlist's; it repairs whatever gossip missed.
 * - a leaving node answers for 1.5 s (3 intervals) so its goodbye spreads.
 * - dead, downed and left members are remembered 5 minutes, so that stale
 *   gossip about them cannot bring them back, and so that a node cut off
 *   from the majority keeps knowing it for that long.
 * - dead members are forgotten like the others (keep_unreachable 0): a
 *   cluster that lost a member for good shrinks back on its own. Under
 *   keep-majority downing a dead member is only unreachable, and must count
 *   (swim_has_majority) until a majority downs it: keep_unreachable 1. */
void swim_default_config(swim_config_t *c) {
  c->probe_interval_ms = 500;
  c->probe_timeout_ms = 200;
  c->indirect_k = 3;
  c->suspicion_alpha = 4.0;
  c->suspicion_beta = 4.0;
  c->confirmations_k = 2;
  c->retransmit_lambda = 4.0;
  c->max_lhm = 8;
  c->gossip_interval_ms = 200;
  c->gossip_fanout = 3;
  c->push_pull_interval_ms = 30000;
  c->leave_grace_ms = 1500;
  c->tombstone_ms = 300000;
  c->keep_unreachable = 0;
  c->packet_max = SWIM_PACKET_MAX;
}

const char *swim_state_name(swim_state_t st) {
  static const char *const names[] = {"alive", "suspect", "dead", "left", "downed"};
  return st <= SWIM_DOWNED ? names[st] : "?";
}

const char *swim_phase_name(swim_phase_t ph) {
  static const char *const names[] = {"joining", "up", "leaving"};
  return ph <= SWIM_LEAVING ? names[ph] : "?";
}

typedef struct gossip_s {
  int32_t member;       /* slot */
  uint32_t transmitted; /* packets it rode on so far */
  uint32_t from;        /* hash of who suspected, for suspect updates */
  char from_addr[SWIM_ADDR_MAX];
} gossip_t;

typedef struct rr_s {
  uint32_t *slots;
  size_t n, pos, cap;
} rr_t;

typedef struct helping_s {
  uint32_t my_seq;    /* the ping we sent the target */
  uint32_t their_seq; /* the requester's probe */
  char requester[SWIM_ADDR_MAX];
  uint64_t nack_at;
} helping_t;

struct swim_s {
  swim_config_t cfg;
  swim_env_t env;

  swim_member_t *m;  /* slot 0 is this node */
  uint64_t *retired; /* slot -> the previous uid at that address (a restart) */
  /* Runs downed that no slot holds any more (a new run took the address, or
   * the tombstone was forgotten), the last DOWNED_RUNS_MAX of them, for as
   * long as this node runs: news of them is ignored, so that neither stale
   * news nor the run itself (cut off when it was downed, and still running
   * when the partition heals) can bring them back. */
  uint64_t *downed_runs;
  size_t ndowned_runs, downed_runs_cap;
  size_t n, cap;
  int32_t *index; /* open addressing: address -> slot, -1 empty */
  size_t index_cap;

  rr_t probe_order, gossip_order;

  /* the probe under way */
  int32_t target;
  uint32_t probe_seq;
  uint64_t probe_deadline; /* when the direct ping times out */
  uint64_t period_end;     /* when the probe is judged */
  int acked, indirect_sent, nacks;

  helping_t helping[MAX_HELPING];
  int nhelping;

  gossip_t *gossip;
  size_t ngossip, gossip_cap;

  int32_t *suspects; /* slots under suspicion */
  size_t nsuspects, suspects_cap;

  size_t nalive; /* alive or suspect members, this node included; valid if nalive_ok */
  int nalive_ok;
  int indirect_tried;
  uint32_t lhm;
  uint32_t seq;
  uint64_t next_probe, next_push_pull, leave_at, next_sweep, next_gossip;
  int left;
  int downed;               /* this run was downed: it refutes nothing and goes quiet */
  int hush;                 /* merging a full state: learn, but do not pass it on */
  int stale_news;           /* a packet suspected this node at a version it refuted */
  int32_t pingers[PINGERS]; /* who pinged this node lately (a ring of slots) */
  uint64_t pinged_at[PINGERS];
  uint32_t npingers;
  size_t nfree;      /* forgotten slots, to reuse */
  size_t tombstones; /* dead or left members (at least): sweep looks if > 0 */
  uint64_t next_tombstone_call;
  size_t tombstone_cursor; /* the slot called on last (call_on_tombstone) */
  uint32_t tombstone_seq;  /* the ping of that call */
  uint32_t upno_max;       /* the largest upno any news carried, forgotten members' too */
  uint64_t notified;       /* events reported so far */
  swim_stats_t stats;
  buf_t pkt, tmp;
};

/* ---- small helpers ----------------------------------------------------- */

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static uint32_t rnd(swim_t *s) {
  return s->env.random(s->env.ctx);
}

static int state_alive(swim_state_t st) {
  return st == SWIM_ALIVE || st == SWIM_SUSPECT;
}

static int alive_ish(const swim_member_t *m) {
  return state_alive(m->state);
}

/* Alive or suspect members, this node included (cached until a change). */
static size_t count_alive(swim_t *s) {
  if (!s->nalive_ok) {
    size_t c = 0;
    for (size_t i = 0; i < s->n; i++) {
      if (s->m[i].addr[0] && alive_ish(&s->m[i])) c++;
    }
    s->nalive = c;
    s->nalive_ok = 1;
  }
  return s->nalive;
}

static uint64_t scaled(const swim_t *s, uint32_t ms) {
  return (uint64_t)ms * (s->lhm + 1);
}

/* ---- the address index ------------------------------------------------- */

static int index_grow(swim_t *s);
static void index_rebuild(swim_t *s);

static int32_t find_slot(const swim_t *s, const char *addr) {
  if (s->index_cap == 0) return -1;
  size_t mask = s->index_cap - 1;
  for (size_t i = hash_str(addr) & mask;; i = (i + 1) & mask) {
    int32_t slot = s->index[i];
    if (slot < 0) return -1;
    if (strcmp(s->m[slot].addr, addr) == 0) return slot;
  }
}

/* Indexes a slot whose address is set (growing the index indexes it). */
static int index_put(swim_t *s, int32_t slot) {
  if ((s->n + 1) * 2 > s->index_cap) return index_grow(s);
  size_t mask = s->index_cap - 1;
  size_t i = hash_str(s->m[slot].addr) & mask;
  while (s->index[i] >= 0) i = (i + 1) & mask;
  s->index[i] = slot;
  return 0;
}

static int index_grow(swim_t *s) {
  size_t cap = s->index_cap ? s->index_cap * 2 : 64;
  int32_t *idx = malloc(cap * sizeof *idx);
  if (idx == NULL) return ATOLL_ENOMEM;
  free(s->index);
  s->index = idx;
  s->index_cap = cap;
  index_rebuild(s);
  return 0;
}

/* Rebuilds the index from the slots in use. */
static void index_rebuild(swim_t *s) {
  for (size_t i = 0; i < s->index_cap; i++) s->index[i] = -1;
  size_t mask = s->index_cap - 1;
  for (size_t k = 0; k < s->n; k++) {
    if (!s->m[k].addr[0]) continue;
    size_t i = hash_str(s->m[k].addr) & mask;
    while (s->index[i] >= 0) i = (i + 1) & mask;
    s->index[i] = (int32_t)k;
  }
}

/* ---- members ------------------------------------------------------------ */

static void notify(swim_t *s, int32_t slot, swim_event_t ev, swim_state_t old_state,
                   swim_phase_t old_phase) {
  s->nalive_ok = 0;
  s->notified++;
  if (s->env.changed) s->env.changed(s->env.ctx, &s->m[slot], ev, old_state, old_phase);
}

static int add_suspect(swim_t *s, int32_t slot) {
  for (size_t i = 0; i < s->nsuspects; i++) {
    if (s->suspects[i] == slot) return 0;
  }
  if (s->nsuspects == s->suspects_cap) {
    size_t cap = s->suspects_cap ? s->suspects_cap * 2 : 16;
    int32_t *p = realloc(s->suspects, cap * sizeof *p);
    if (p == NULL) return ATOLL_ENOMEM;
    s->suspects = p;
    s->suspects_cap = cap;
  }
  s->suspects[s->nsuspects++] = slot;
  return 0;
}

static void drop_suspect(swim_t *s, int32_t slot) {
  for (size_t i = 0; i < s->nsuspects; i++) {
    if (s->suspects[i] == slot) {
      s->suspects[i] = s->suspects[--s->nsuspects];
      return;
    }
  }
}

#define MASK(st) (1u << (st))

/* Up to k distinct random members (never this node or `exclude`) whose
 * state is in `states`: random draws first, then a scan from a random
 * point, so that a few matches among many members are found too. */
static uint32_t pick_members(swim_t *s, int32_t *out, uint32_t k, int32_t exclude,
                             unsigned states) {
  size_t others = s->n - 1;
  uint32_t got = 0;
  if (others == 0) return 0;
  for (uint32_t pass = 0; pass < 2 && got < k; pass++) {
    size_t start = rnd(s) % others;
    size_t tries = pass == 0 ? 4 * (size_t)k : others;
    for (size_t t = 0; t < tries && got < k; t++) {
      int32_t slot = (int32_t)(1 + (pass == 0 ? rnd(s) % others : (start + t) % others));
      const swim_member_t *m = &s->m[slot];
      if (slot == exclude || !m->addr[0] || !(MASK(m->state) & states)) continue;
      int dup = 0;
      for (uint32_t j = 0; j < got; j++) dup |= out[j] == slot;
      if (!dup) out[got++] = slot;
    }
  }
  return got;
}

/* A round-robin order over the live members: a random permutation walked
 * to its end, then drawn anew; a member that arrives meanwhile is put in at
 * a random place, as SWIM's probe order does. The probe order and the
 * gossip order are two of them. */
static int rr_reserve(rr_t *rr, size_t n) {
  if (n <= rr->cap) return 0;
  size_t cap = rr->cap ? rr->cap : 16;
  while (cap < n) cap *= 2;
  uint32_t *p = realloc(rr->slots, cap * sizeof *p);
  if (p == NULL) return ATOLL_ENOMEM;
  rr->slots = p;
  rr->cap = cap;
  return 0;
}

static void rr_insert(swim_t *s, rr_t *rr, int32_t slot) {
  if (rr_reserve(rr, rr->n + 1)) return;
  /* Somewhere in what is still to come, so it is visited in this round. */
  size_t ahead = rr->n - rr->pos;
  size_t at = rr->pos + (ahead ? rnd(s) % (ahead + 1) : 0);
  rr->slots[rr->n++] = rr->slots[at];
  rr->slots[at] = (uint32_t)slot;
}

static void rr_shuffle(swim_t *s, rr_t *rr) {
  rr->n = rr->pos = 0;
  if (rr_reserve(rr, s->n)) return;
  size_t k = 0;
  for (size_t i = 1; i < s->n; i++) {
    if (s->m[i].addr[0] && alive_ish(&s->m[i])) rr->slots[k++] = (uint32_t)i;
  }
  rr->n = k;
  for (size_t i = k; i > 1; i--) {
    size_t j = rnd(s) % i;
    uint32_t t = rr->slots[i - 1];
    rr->slots[i - 1] = rr->slots[j];
    rr->slots[j] = t;
  }
}

/* The next live member in the order (not `exclude`), or -1 if none. */
static int32_t rr_next(swim_t *s, rr_t *rr, int32_t exclude) {
  for (int round = 0; round < 2; round++) {
    while (rr->pos < rr->n) {
      int32_t slot = (int32_t)rr->slots[rr->pos++];
      if (slot > 0 && slot != exclude && (size_t)slot < s->n && s->m[slot].addr[0] &&
          alive_ish(&s->m[slot])) {
        return slot;
      }
    }
    rr_shuffle(s, rr);
  }
  return -1;
}

static void order_insert(swim_t *s, int32_t slot) {
  rr_insert(s, &s->probe_order, slot);
  rr_insert(s, &s->gossip_order, slot);
}

static int32_t new_slot(swim_t *s, const char *addr) {
  /* Reuse a forgotten slot before growing. */
  int32_t slot = -1;
  for (size_t i = 1; s->nfree > 0 && i < s->n; i++) {
    if (!s->m[i].addr[0]) {
      slot = (int32_t)i;
      s->nfree--;
      break;
    }
  }
  if (slot < 0) {
    if (s->n == s->cap) {
      size_t cap = s->cap ? s->cap * 2 : 16;
      swim_member_t *p = realloc(s->m, cap * sizeof *p);
      if (p == NULL) return -1;
      s->m = p;
      uint64_t *r = realloc(s->retired, cap * sizeof *r);
      if (r == NULL) return -1;
      s->retired = r;
      s->cap = cap;
    }
    slot = (int32_t)s->n++;
  }
  memset(&s->m[slot], 0, sizeof s->m[slot]);
  s->retired[slot] = 0;
  snprintf(s->m[slot].addr, sizeof s->m[slot].addr, "%s", addr);
  if (index_put(s, slot)) {
    s->m[slot].addr[0] = '\0';
    s->nfree++;
    return -1;
  }
  return slot;
}

/* Remembers that a downed run left its slot. */
static void remember_downed(swim_t *s, const swim_member_t *m) {
  if (m->state != SWIM_DOWNED) return;
  if (s->ndowned_runs == s->downed_runs_cap) {
    size_t cap = s->downed_runs_cap ? s->downed_runs_cap * 2 : 8;
    void *p = cap <= DOWNED_RUNS_MAX ? realloc(s->downed_runs, cap * sizeof *s->downed_runs) : NULL;
    if (p == NULL) { /* full: the oldest goes */
      if (s->ndowned_runs == 0) return;
      memmove(s->downed_runs, s->downed_runs + 1, --s->ndowned_runs * sizeof *s->downed_runs);
    } else {
      s->downed_runs = p;
      s->downed_runs_cap = cap;
    }
  }
  s->downed_runs[s->ndowned_runs++] = m->uid;
}

/* 1 if uid is a downed run remembered out of its slot. */
static int was_downed(const swim_t *s, uint64_t uid) {
  for (size_t i = 0; i < s->ndowned_runs; i++) {
    if (s->downed_runs[i] == uid) return 1;
  }
  return 0;
}

/* ---- gossip -------------------------------------------------------------- */

/* How many packets an update rides on: lambda * ceil(log10(n + 1)), and in a
 * small cluster at least two gossip rounds' worth (and two probes'), so
 * that the round-robin gossip order alone reaches every member. */
static uint32_t retransmit_limit(swim_t *s) {
  double n = (double)count_alive(s);
  uint32_t lim = (uint32_t)ceil(s->cfg.retransmit_lambda * ceil(log10(n + 1)));
  uint32_t floor_ = 2 * s->cfg.gossip_fanout + 2;
  return lim < floor_ ? floor_ : lim;
}

/* Queues news about a member (replacing older news about it). */
static void gossip_about(swim_t *s, int32_t slot, const char *from) {
  if (s->hush) return;
  gossip_t *g = NULL;
  for (size_t i = 0; i < s->ngossip; i++) {
    if (s->gossip[i].member == slot) {
      g = &s->gossip[i];
      break;
    }
  }
  if (g == NULL) {
    if (s->ngossip == s->gossip_cap) {
      size_t cap = s->gossip_cap ? s->gossip_cap * 2 : 32;
      gossip_t *p = realloc(s->gossip, cap * sizeof *p);
      if (p == NULL) return;
      s->gossip = p;
      s->gossip_cap = cap;
    }
    g = &s->gossip[s->ngossip++];
    g->member = slot;
  }
  g->transmitted = 0;
  snprintf(g->from_addr, sizeof g->from_addr, "%s", from ? from : "");
  g->from = from ? hash_str(from) : 0;
}

static void drop_gossip_about(swim_t *s, int32_t slot) {
  for (size_t i = 0; i < s->ngossip;) {
    if (s->gossip[i].member == slot)
      s->gossip[i] = s->gossip[--s->ngossip];
    else
      i++;
  }
}

static void write_update(mpk_writer_t *w, const swim_member_t *m, const char *from) {
  mpk_array(w, 8);
  mpk_cstr(w, m->addr);
  mpk_uint(w, m->uid);
  mpk_uint(w, m->version);
  mpk_uint(w, (uint64_t)m->state);
  mpk_uint(w, (uint64_t)m->phase);
  mpk_cstr(w, m->name);
  mpk_cstr(w, from ? from : "");
  mpk_uint(w, m->upno);
}

/* Appends as much gossip as fits in `room` bytes to the packet being built
 * (the array of updates), fewest-sent first. A `buddy` goes first: the
 * member this ping probes, when it is suspect, hears of its suspicion on the
 * ping itself (Lifeguard's buddy system). */
static void write_gossip(swim_t *s, mpk_writer_t *w, size_t room, int32_t buddy) {
  buf_t *tmp = &s->tmp;
  buf_reset(tmp);
  mpk_writer_t gw;
  mpk_writer_init(&gw, tmp);
  uint32_t count = 0;
  if (buddy >= 0) {
    write_update(&gw, &s->m[buddy], s->m[0].addr);
    count++;
  }
  uint32_t limit = retransmit_limit(s);
  /* The queue is kept sorted by transmissions, so its front is the news
   * that travelled least. An update that does not fit is taken back (the
   * writer's tokens are whole, so cutting the buffer is safe): a packet
   * over the limit would not be sent at all, and an update with two long
   * addresses and a name takes about 180 bytes. */
  for (size_t i = 0; i < s->ngossip && count < GOSSIP_PER_PACKET; i++) {
    gossip_t *g = &s->gossip[i];
    if (g->member == buddy) continue;
    size_t before = tmp->len;
    write_update(&gw, &s->m[g->member], g->from_addr[0] ? g->from_addr : NULL);
    if (tmp->len > room) {
      tmp->len = before;
      break;
    }
    g->transmitted++;
    count++;
  }
  for (size_t i = 0; i < s->ngossip;) {
    /* A downing rides on twice as many: no detector repairs a member that
     * missed it, and round-robin targets skip a member for a while after
     * they visited it (with the news just before, often). */
    uint32_t lim = s->m[s->gossip[i].member].state == SWIM_DOWNED ? 2 * limit : limit;
    if (s->gossip[i].transmitted >= lim) {
      s->gossip[i] = s->gossip[--s->ngossip];
    } else {
      i++;
    }
  }
  for (size_t i = 1; i < s->ngossip; i++) { /* insertion sort: nearly sorted already */
    gossip_t g = s->gossip[i];
    size_t j = i;
    while (j > 0 && s->gossip[j - 1].transmitted > g.transmitted) {
      s->gossip[j] = s->gossip[j - 1];
      j--;
    }
    s->gossip[j] = g;
  }
  mpk_array(w, count);
  mpk_raw(w, tmp->data, tmp->len);
}

static void send_packet(swim_t *s, const char *to, int type, uint32_t seq,
                        const swim_member_t *target, int32_t buddy) {
  /* A downed node says nothing more: an answer from it, once the members
   * forgot its tombstone, would bring the run back as a new member. */
  if (s->downed) return;
  buf_t *pkt = &s->pkt;
  buf_reset(pkt);
  mpk_writer_t w;
  mpk_writer_init(&w, pkt);
  int with_target = type == MSG_PING || type == MSG_PING_REQ;
  mpk_array(&w, with_target ? 7 : 5);
  mpk_uint(&w, (uint64_t)type);
  mpk_uint(&w, seq);
  mpk_cstr(&w, s->m[0].addr);
  mpk_uint(&w, s->m[0].uid);
  if (with_target) {
    mpk_cstr(&w, target ? target->addr : "");
    mpk_uint(&w, target ? target->uid : 0);
  }
  size_t used = pkt->len + 5; /* the gossip array's header */
  size_t room = s->cfg.packet_max > used ? s->cfg.packet_max - used : 0;
  write_gossip(s, &w, room, buddy);
  if (w.rc || pkt->len > s->cfg.packet_max) return;
  s->stats.packets_sent++;
  s->stats.bytes_sent += pkt->len;
  s->env.send(s->env.ctx, to, pkt->data, pkt->len);
}

/* ---- suspicion ---------------------------------------------------------- */

/* Lifeguard: the timeout starts at max and falls towards min as independent
 * confirmations arrive: max - (max - min) * ln(C + 1) / ln(K + 1). */
static uint64_t suspicion_timeout(swim_t *s, int confirmations) {
  double n = (double)count_alive(s);
  double lg = n > 1 ? log10(n) : 1;
  if (lg < 1) lg = 1;
  double min = s->cfg.suspicion_alpha * lg * s->cfg.probe_interval_ms;
  double max = s->cfg.suspicion_beta * min;
  /* In a small cluster fewer members can confirm: at most the others
   * besides this node and the suspect. */
  double k = s->cfg.confirmations_k;
  if (k > n - 2) k = n > 2 ? n - 2 : 0;
  double t = k > 0 ? max : min;
  if (k > 0) t = max - (max - min) * log((double)confirmations + 1) / log(k + 1);
  if (t < min) t = min;
  return (uint64_t)t;
}

static void confirm(swim_t *s, swim_member_t *m, uint32_t from) {
  if (from == 0 || from == hash_str(s->m[0].addr)) return;
  for (int i = 0; i < m->confirmations; i++) {
    if (m->suspecters[i] == from) return;
  }
  if (m->confirmations >= SWIM_MAX_K) return;
  m->suspecters[m->confirmations++] = from;
  uint64_t deadline = m->suspect_since + suspicion_timeout(s, m->confirmations);
  if (deadline < m->suspect_deadline) m->suspect_deadline = deadline;
}

/* ---- state changes ------------------------------------------------------ */

static void set_state(swim_t *s, int32_t slot, uint64_t now, swim_state_t st, uint32_t version,
                      swim_phase_t phase, const char *from) {
  swim_member_t *m = &s->m[slot];
  swim_state_t old_state = m->state;
  swim_phase_t old_phase = m->phase;
  m->version = version;
  m->phase = phase;
  if (st == SWIM_SUSPECT && old_state != SWIM_SUSPECT) {
    m->suspect_since = now;
    m->confirmations = 0;
    m->suspect_deadline = now + suspicion_timeout(s, 0);
    m->last_calls = 0;
    add_suspect(s, slot);
    s->stats.suspicions++;
  }
  if (st != SWIM_SUSPECT && old_state == SWIM_SUSPECT) drop_suspect(s, slot);
  if (!state_alive(st) && state_alive(old_state)) s->tombstones++;
  if (st == SWIM_DEAD && old_state != SWIM_DEAD) s->stats.deaths++;
  if (st == SWIM_LEFT && old_state != SWIM_LEFT) s->stats.leaves++;
  m->state = st;
  if (st == SWIM_SUSPECT && from) confirm(s, m, hash_str(from));
  if (st != old_state || phase != old_phase) {
    m->since = now;
    notify(s, slot, SWIM_CHANGED, old_state, old_phase);
  }
  gossip_about(s, slot, st == SWIM_SUSPECT ? from : NULL);
}

/* This node: announce a new version of itself (a refutation or a phase). */
static void announce_self(swim_t *s, uint64_t now, swim_phase_t phase) {
  swim_member_t *me = &s->m[0];
  swim_phase_t old_phase = me->phase;
  me->version++;
  me->phase = phase;
  if (phase != old_phase) {
    me->since = now;
    notify(s, 0, SWIM_CHANGED, me->state, old_phase);
  }
  gossip_about(s, 0, NULL);
}

typedef struct update_s {
  char addr[SWIM_ADDR_MAX];
  char name[SWIM_NAME_MAX];
  char from[SWIM_ADDR_MAX];
  uint64_t uid;
  uint32_t version;
  swim_state_t state;
  swim_phase_t phase;
  uint32_t upno; /* 0 when unknown, or from a node that does not send it */
} update_t;

/* Takes a member's upno from news about its run: a known one replaces 0,
 * and of two different ones (which no correct node sends) the smaller
 * stays, so that every member ends with the same. 1 if it changed. */
static int take_upno(swim_member_t *m, uint32_t upno) {
  if (upno == 0 || upno == m->upno || (m->upno != 0 && m->upno < upno)) return 0;
  m->upno = upno;
  return 1;
}

static void tell_some(swim_t *s, uint64_t now, uint32_t count);
static void apply_state(swim_t *s, uint64_t now, int32_t slot, const update_t *u);

/* Applies one piece of news; the heart of the protocol. News with a higher
 * version wins; at an equal one, suspect beats alive and dead beats both. A
 * member declared dead comes back only by refuting with a higher version
 * (so that both sides of a healed partition converge again); one that left
 * stays gone until a new run appears at its address; one downed too, and
 * news that it was downed wins at any version. */
static void apply(swim_t *s, uint64_t now, const update_t *u) {
  swim_member_t *me = &s->m[0];
  /* Every upno heard of counts when this node numbers its own run, even
   * one of a run it does not keep (its own earlier run, a stale one). */
  if (u->upno > s->upno_max) s->upno_max = u->upno;
  if (strcmp(u->addr, me->addr) == 0) {
    if (u->uid != me->uid || s->left || s->downed) return;
    if (u->state == SWIM_DOWNED) {
      /* Downed: final, so no refutation; the node learns it through the
       * `changed` event for its own slot, and falls silent (send_packet). */
      s->downed = 1;
      set_state(s, 0, now, SWIM_DOWNED, u->version > me->version ? u->version : me->version,
                me->phase, NULL);
      return;
    }
    if ((u->state == SWIM_SUSPECT || u->state == SWIM_DEAD) && u->version < me->version) {
      /* Old news: whoever sent it has not heard the refutation yet. It
       * rides on what this node sends next again, and goes straight back
       * to the sender (swim_receive). */
      gossip_about(s, 0, NULL);
      s->stale_news = 1;
    } else if ((u->state == SWIM_SUSPECT || u->state == SWIM_DEAD) && u->version >= me->version) {
      /* Refute with a higher version; and take it as a sign that this node
       * may be the slow one (Lifeguard). */
      me->version = u->version;
      announce_self(s, now, me->phase);
      s->stats.refutations++;
      if (s->lhm < s->cfg.max_lhm) s->lhm++;
      /* A refutation races the suspicion timeouts of every member: besides
       * riding on gossip, it goes at once to a few members. */
      tell_some(s, now, s->cfg.indirect_k * 2);
    }
    return;
  }
  if (s->ndowned_runs && was_downed(s, u->uid)) return;
  int32_t slot = find_slot(s, u->addr);
  if (slot < 0) {
    slot = new_slot(s, u->addr);
    if (slot < 0) return;
    swim_member_t *m = &s->m[slot];
    snprintf(m->name, sizeof m->name, "%s", u->name);
    m->uid = u->uid;
    m->version = u->version;
    m->phase = u->phase;
    m->upno = u->upno;
    m->state = u->state == SWIM_SUSPECT ? SWIM_ALIVE : u->state;
    m->since = now;
    if (!alive_ish(m)) { /* a tombstone: news of a member already gone */
      s->tombstones++;
      return;
    }
    order_insert(s, slot);
    notify(s, slot, SWIM_ADDED, m->state, m->phase);
    if (u->state == SWIM_SUSPECT) {
      set_state(s, slot, now, SWIM_SUSPECT, u->version, u->phase, u->from[0] ? u->from : NULL);
    } else {
      gossip_about(s, slot, NULL);
    }
    return;
  }
  swim_member_t *m = &s->m[slot];
  if (u->uid != m->uid) {
    if (u->uid == s->retired[slot]) return;             /* stale news of the run before */
    if (!state_alive(u->state) && alive_ish(m)) return; /* an ended other run changes nothing */
    /* The node at this address restarted: its earlier run is gone. */
    if (alive_ish(m)) {
      swim_state_t old_state = m->state;
      drop_suspect(s, slot);
      m->state = SWIM_DEAD;
      s->stats.deaths++;
      notify(s, slot, SWIM_CHANGED, old_state, m->phase);
    }
    notify(s, slot, SWIM_REMOVED, m->state, m->phase);
    drop_gossip_about(s, slot);
    remember_downed(s, m);
    s->retired[slot] = m->uid;
    m->uid = u->uid;
    m->version = u->version;
    m->phase = u->phase;
    m->upno = u->upno;
    m->state = u->state == SWIM_SUSPECT ? SWIM_ALIVE : u->state;
    m->confirmations = 0;
    m->since = now;
    snprintf(m->name, sizeof m->name, "%s", u->name);
    if (alive_ish(m)) {
      order_insert(s, slot);
      notify(s, slot, SWIM_ADDED, m->state, m->phase);
      gossip_about(s, slot, NULL);
    }
    return;
  }
  /* An upno comes with the news that the member is up, so it is reported
   * with that change; alone (learnt from a push-pull, say), as a change of
   * its own. */
  uint64_t notified = s->notified;
  int renumbered = take_upno(m, u->upno);
  apply_state(s, now, slot, u);
  if (renumbered && s->notified == notified) {
    notify(s, slot, SWIM_CHANGED, m->state, m->phase);
  }
}

/* The part of apply about a known run's state. */
static void apply_state(swim_t *s, uint64_t now, int32_t slot, const update_t *u) {
  swim_member_t *m = &s->m[slot];
  if (m->state == SWIM_LEFT) return; /* gone for this run */
  if (m->state == SWIM_DOWNED) {
    /* Final: only its version follows the news (a refutation raced the
     * verdict), so that every view ends with the same, and a view that
     * forgot the tombstone and learns it again sees no version go down. */
    if (u->version > m->version) m->version = u->version;
    return;
  }
  switch (u->state) {
    case SWIM_ALIVE:
      if (u->version > m->version) {
        if (u->name[0]) snprintf(m->name, sizeof m->name, "%s", u->name);
        if (m->state == SWIM_DEAD) order_insert(s, slot); /* back from the dead */
        set_state(s, slot, now, SWIM_ALIVE, u->version, u->phase, NULL);
      }
      break;
    case SWIM_SUSPECT:
      if (m->state == SWIM_DEAD) break;
      if (u->version > m->version || (u->version == m->version && m->state == SWIM_ALIVE)) {
        set_state(s, slot, now, SWIM_SUSPECT, u->version, m->phase, u->from[0] ? u->from : NULL);
      } else if (u->version == m->version && m->state == SWIM_SUSPECT) {
        confirm(s, m, u->from[0] ? hash_str(u->from) : 0);
      }
      break;
    case SWIM_DEAD: {
      if (u->version < m->version || m->state == SWIM_DEAD) break;
      /* Another member's verdict ends this node's suspicion, but only after
       * the last calls (swim_tick): the verdict may come from the other side
       * of a partition that healed, about a member this node can reach, and
       * such a member answers them with a refutation. */
      if (m->state == SWIM_ALIVE || u->version > m->version) {
        set_state(s, slot, now, SWIM_SUSPECT, u->version, m->phase, NULL);
      }
      m->suspect_deadline = now;
      break;
    }
    case SWIM_LEFT:
      if (u->version >= m->version) set_state(s, slot, now, SWIM_LEFT, u->version, m->phase, NULL);
      break;
    case SWIM_DOWNED:
      /* At any version: whatever the member said since, it is down for
       * good (its version only goes up, for the version checks). */
      set_state(s, slot, now, SWIM_DOWNED, u->version > m->version ? u->version : m->version,
                m->phase, NULL);
      break;
  }
}

/* Sends this node's most urgent news (a refutation, a goodbye) straight to
 * the members that pinged it lately and to `count` random others, as acks
 * no probe waits for: only their gossip counts. When this node was slow or
 * paused, those that pinged it are the ones that suspect it. */
static void tell_some(swim_t *s, uint64_t now, uint32_t count) {
  int32_t chosen[PINGERS + 2 * SWIM_MAX_K];
  if (count > 2 * SWIM_MAX_K) count = 2 * SWIM_MAX_K;
  uint32_t got = 0;
  uint64_t recent = 2 * scaled(s, s->cfg.probe_interval_ms);
  for (uint32_t i = 0; i < PINGERS && i < s->npingers; i++) {
    int32_t slot = s->pingers[i];
    if (now - s->pinged_at[i] > recent || !s->m[slot].addr[0] || !alive_ish(&s->m[slot])) continue;
    int dup = 0;
    for (uint32_t j = 0; j < got; j++) dup |= chosen[j] == slot;
    if (!dup) chosen[got++] = slot;
  }
  int32_t more[2 * SWIM_MAX_K];
  uint32_t extra = pick_members(s, more, count, -1, MASK(SWIM_ALIVE) | MASK(SWIM_SUSPECT));
  for (uint32_t i = 0; i < extra; i++) {
    int dup = 0;
    for (uint32_t j = 0; j < got; j++) dup |= chosen[j] == more[i];
    if (!dup) chosen[got++] = more[i];
  }
  for (uint32_t j = 0; j < got; j++) send_packet(s, s->m[chosen[j]].addr, MSG_GOSSIP, 0, NULL, -1);
}

/* Learns of the sender of a packet: a member we did not know, or a new run.
 * `called` says the packet answers this node's call on a tombstone. */
static void heard_from(swim_t *s, uint64_t now, const char *addr, uint64_t uid, int called) {
  if (strcmp(addr, s->m[0].addr) == 0) return;
  int32_t slot = find_slot(s, addr);
  if (slot >= 0 && s->m[slot].uid == uid) return;
  int alone = count_alive(s) == 1;
  int tombstone = slot >= 0 && !alive_ish(&s->m[slot]);
  update_t u;
  memset(&u, 0, sizeof u);
  snprintf(u.addr, sizeof u.addr, "%s", addr);
  u.uid = uid;
  u.state = SWIM_ALIVE;
  u.phase = SWIM_JOINING;
  apply(s, now, &u);
  slot = find_slot(s, addr);
  if (slot < 0 || s->m[slot].uid != uid || !alive_ish(&s->m[slot])) return; /* not taken */
  /* The whole view at once, rather than piecemeal through gossip, for a
   * node that knew no other live member (it restarted, or was cut off),
   * from the first member it hears from; and for a new run found at a
   * tombstone's address, which may know members this node does not (it
   * may have joined others, or be on its own). Not for every new member: in
   * a large cluster, every member would exchange states with every node
   * that joins. */
  if ((alone || (called && tombstone)) && s->env.push_pull && !s->downed) {
    s->env.push_pull(s->env.ctx, addr);
  }
}

/* An update of 8 fields, or of 7 from a node before upno (upno 0). */
static int read_update(mpk_reader_t *r, update_t *u) {
  uint32_t fields = mpk_read_array(r);
  if (r->rc == 0 && fields != 7 && fields != 8) return ATOLL_EMALFORMED;
  mpk_read_cstr(r, u->addr, sizeof u->addr);
  u->uid = mpk_read_uint(r, SWIM_UID_MAX);
  u->version = (uint32_t)mpk_read_uint(r, 0xffffffffu);
  u->state = (swim_state_t)mpk_read_uint(r, SWIM_DOWNED);
  u->phase = (swim_phase_t)mpk_read_uint(r, SWIM_LEAVING);
  mpk_read_cstr(r, u->name, sizeof u->name);
  mpk_read_cstr(r, u->from, sizeof u->from);
  u->upno = fields == 8 ? (uint32_t)mpk_read_uint(r, 0xffffffffu) : 0;
  if (r->rc == 0 && u->addr[0] == '\0') return ATOLL_EMALFORMED;
  return r->rc;
}

/* ---- probing -------------------------------------------------------------- */

static int32_t next_target(swim_t *s) {
  return rr_next(s, &s->probe_order, -1);
}

/* Judges the probe of the last interval. */
static void judge_probe(swim_t *s, uint64_t now) {
  if (s->target < 0) return;
  int32_t slot = s->target;
  s->target = -1;
  if (s->acked) {
    if (s->lhm > 0) s->lhm--;
    return;
  }
  /* Lifeguard: helpers that answer with a nack show that this node hears
   * the others fine and the target is the one in trouble; every nack that
   * did not come counts against this node's own health, and so does a
   * failed probe nobody could help with. */
  uint32_t delta = 0;
  if (s->indirect_sent == 0)
    delta = 1;
  else if (s->indirect_sent > s->nacks)
    delta = (uint32_t)(s->indirect_sent - s->nacks);
  s->lhm = s->lhm + delta > s->cfg.max_lhm ? s->cfg.max_lhm : s->lhm + delta;
  swim_member_t *m = &s->m[slot];
  if (m->addr[0] && m->state == SWIM_ALIVE) {
    set_state(s, slot, now, SWIM_SUSPECT, m->version, m->phase, s->m[0].addr);
  } else if (m->addr[0] && m->state == SWIM_SUSPECT) {
    /* Already suspect: this failed probe is an independent confirmation,
     * which others count. */
    gossip_about(s, slot, s->m[0].addr);
  }
}

static void start_probe(swim_t *s, uint64_t now) {
  judge_probe(s, now);
  uint64_t interval = scaled(s, s->cfg.probe_interval_ms);
  s->next_probe = now + interval;
  int32_t slot = next_target(s);
  if (slot < 0) return;
  s->target = slot;
  s->probe_seq = ++s->seq;
  s->acked = 0;
  s->indirect_sent = 0;
  s->indirect_tried = 0;
  s->nacks = 0;
  s->probe_deadline = now + scaled(s, s->cfg.probe_timeout_ms);
  s->period_end = s->next_probe;
  s->stats.probes++;
  swim_member_t *m = &s->m[slot];
  send_packet(s, m->addr, MSG_PING, s->probe_seq, m, m->state == SWIM_SUSPECT ? slot : -1);
}

static void probe_indirectly(swim_t *s) {
  swim_member_t *target = &s->m[s->target];
  uint32_t k = s->cfg.indirect_k < SWIM_MAX_K ? s->cfg.indirect_k : SWIM_MAX_K;
  int32_t chosen[SWIM_MAX_K];
  uint32_t got = pick_members(s, chosen, k, s->target, MASK(SWIM_ALIVE));
  for (uint32_t j = 0; j < got; j++) {
    send_packet(s, s->m[chosen[j]].addr, MSG_PING_REQ, s->probe_seq, target, -1);
  }
  s->indirect_sent = (int)got;
  s->indirect_tried = 1;
  s->stats.indirect_probes += got;
}

/* ---- the public face ------------------------------------------------------ */

swim_t *swim_create(const swim_config_t *cfg, const swim_env_t *env, const char *addr,
                    const char *name, uint64_t uid, uint64_t now) {
  if (strlen(addr) >= SWIM_ADDR_MAX || addr[0] == '\0') return NULL;
  swim_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->cfg = *cfg;
  if (s->cfg.packet_max > SWIM_PACKET_MAX) s->cfg.packet_max = SWIM_PACKET_MAX;
  s->env = *env;
  s->target = -1;
  buf_init(&s->pkt);
  buf_init(&s->tmp);
  int32_t slot = new_slot(s, addr);
  if (slot != 0) {
    swim_destroy(s);
    return NULL;
  }
  swim_member_t *me = &s->m[0];
  snprintf(me->name, sizeof me->name, "%s", name ? name : "");
  me->uid = uid;
  me->state = SWIM_ALIVE;
  me->phase = SWIM_JOINING;
  me->since = now;
  s->next_probe = now + cfg->probe_interval_ms;
  s->next_push_pull =
      now + cfg->push_pull_interval_ms / 2 + rnd(s) % (cfg->push_pull_interval_ms / 2 + 1);
  s->next_sweep = now + cfg->probe_interval_ms;
  return s;
}

void swim_destroy(swim_t *s) {
  if (s == NULL) return;
  free(s->m);
  free(s->retired);
  free(s->downed_runs);
  free(s->index);
  free(s->probe_order.slots);
  free(s->gossip_order.slots);
  free(s->gossip);
  free(s->suspects);
  buf_close(&s->pkt);
  buf_close(&s->tmp);
  free(s);
}

static uint64_t earliest(uint64_t a, uint64_t b) {
  return a < b ? a : b;
}

/* When a suspect gets its next last call: LAST_CALLS probe intervals
 * before its suspicion runs out, then one interval apart; at once when the
 * suspicion began later than that or was cut short, but a probe timeout
 * after the call before. */
static uint64_t last_call_at(const swim_t *s, const swim_member_t *m) {
  uint64_t lead = (uint64_t)s->cfg.probe_interval_ms * (uint64_t)(LAST_CALLS - m->last_calls);
  uint64_t at =
      m->suspect_deadline > m->suspect_since + lead ? m->suspect_deadline - lead : m->suspect_since;
  uint64_t spaced = m->last_call_sent + s->cfg.probe_timeout_ms;
  return m->last_calls > 0 && at < spaced ? spaced : at;
}

/* When a suspect that had its last calls is declared dead: when its
 * suspicion runs out, and not before the answer to the last call had a
 * probe timeout to come back. */
static uint64_t verdict_at(const swim_t *s, const swim_member_t *m) {
  uint64_t answer = m->last_call_sent + s->cfg.probe_timeout_ms;
  return m->suspect_deadline > answer ? m->suspect_deadline : answer;
}

/* How often this node calls on a tombstone: so that about
 * TOMBSTONE_CALLERS calls per probe interval reach each one (fewer when
 * there are several), whatever the cluster's size, and at most one per
 * interval leaves each member. */
static uint64_t tombstone_call_every(swim_t *s) {
  uint64_t every = s->cfg.probe_interval_ms;
  size_t alive = count_alive(s);
  if (alive > TOMBSTONE_CALLERS) every *= (alive + TOMBSTONE_CALLERS - 1) / TOMBSTONE_CALLERS;
  return every;
}

/* Calls on the next member declared dead or gone (round-robin over them),
 * if any, with a ping: the member may have restarted, or be alive after
 * all (a stall, a partition that healed). A new run at its address answers
 * the ping meant for the run before, with its own uid (see MSG_PING), which
 * heard_from takes for the restart; one declared dead hears its verdict
 * on the ping (the buddy system, as for a suspect) and refutes it. */
static void call_on_tombstone(swim_t *s) {
  size_t others = s->n - 1;
  for (size_t k = 0; k < others; k++) {
    int32_t slot = (int32_t)(1 + (s->tombstone_cursor + k) % others);
    swim_member_t *m = &s->m[slot];
    if (!m->addr[0] || alive_ish(m)) continue;
    s->tombstone_cursor = (size_t)slot;
    s->tombstone_seq = ++s->seq;
    send_packet(s, m->addr, MSG_PING, s->tombstone_seq, m,
                m->state == SWIM_DEAD || m->state == SWIM_DOWNED ? slot : -1);
    return;
  }
}

/* Forgets dead, downed and left members after the tombstone time (dead
 * ones never, with keep_unreachable). */
static void sweep(swim_t *s, uint64_t now) {
  if (s->tombstones == 0) return;
  int forgot = 0;
  size_t left = 0;
  for (size_t i = 1; i < s->n; i++) {
    swim_member_t *m = &s->m[i];
    if (!m->addr[0] || alive_ish(m)) continue;
    if (now - m->since < s->cfg.tombstone_ms ||
        (m->state == SWIM_DEAD && s->cfg.keep_unreachable)) {
      left++;
      continue;
    }
    notify(s, (int32_t)i, SWIM_REMOVED, m->state, m->phase);
    drop_gossip_about(s, (int32_t)i);
    remember_downed(s, m);
    if (s->target == (int32_t)i) s->target = -1;
    m->addr[0] = '\0';
    s->nfree++;
    forgot = 1;
  }
  s->tombstones = left;
  if (forgot) index_rebuild(s);
}

uint64_t swim_tick(swim_t *s, uint64_t now) {
  /* A node that left or was downed probes, gossips and calls on no one. */
  int active = !s->left && !s->downed;
  if (active) {
    if (s->target >= 0 && !s->acked && !s->indirect_tried && now >= s->probe_deadline) {
      probe_indirectly(s);
    }
    if (now >= s->next_probe) start_probe(s, now);
  }
  /* Suspicions: last calls, then the verdict. */
  for (size_t i = 0; i < s->nsuspects;) {
    int32_t slot = s->suspects[i];
    swim_member_t *m = &s->m[slot];
    if (m->last_calls < LAST_CALLS) {
      if (now >= last_call_at(s, m)) {
        /* Before declaring it dead, ping it again, with the suspicion: a
         * member that is alive but missed the news of its suspicion (or
         * whose refutation missed this node) answers with the refutation. */
        m->last_calls++;
        m->last_call_sent = now;
        send_packet(s, m->addr, MSG_PING, ++s->seq, m, slot);
      }
    } else if (now >= verdict_at(s, m)) {
      /* Dead: news the other members are waiting for, straight to some. */
      set_state(s, slot, now, SWIM_DEAD, m->version, m->phase, NULL);
      tell_some(s, now, s->cfg.indirect_k * 2);
      continue; /* set_state removed it from the list */
    }
    i++;
  }
  /* Targets that never answered the pings made for others. */
  for (int i = 0; i < s->nhelping;) {
    helping_t *h = &s->helping[i];
    if (now >= h->nack_at) {
      send_packet(s, h->requester, MSG_NACK, h->their_seq, NULL, -1);
      s->helping[i] = s->helping[--s->nhelping];
      continue;
    }
    i++;
  }
  if (active && s->ngossip > 0 && now >= s->next_gossip) {
    /* News waiting: besides riding on probes, it goes to a few random
     * members now (memberlist's gossip rounds), so that it spreads in a
     * few rounds of this interval rather than of the probe interval, and
     * does not die out before reaching a member that few probes visit. */
    s->next_gossip = now + s->cfg.gossip_interval_ms;
    /* Targets come round-robin, so that consecutive rounds reach
     * different members and a small cluster is covered in a round or two. */
    int32_t sent[SWIM_MAX_K];
    uint32_t nsent = 0,
             fanout = s->cfg.gossip_fanout < SWIM_MAX_K ? s->cfg.gossip_fanout : SWIM_MAX_K;
    for (uint32_t tries = 0; nsent < fanout && tries < 2 * fanout && s->ngossip > 0; tries++) {
      int32_t slot = rr_next(s, &s->gossip_order, -1);
      if (slot < 0) break;
      int dup = 0;
      for (uint32_t j = 0; j < nsent; j++) dup |= sent[j] == slot;
      if (dup) continue; /* the order started over within this round */
      sent[nsent++] = slot;
      send_packet(s, s->m[slot].addr, MSG_GOSSIP, 0, NULL, -1);
    }
  }
  if (active && now >= s->next_push_pull) {
    s->next_push_pull = now + s->cfg.push_pull_interval_ms;
    if (s->env.push_pull && s->n > 1) {
      /* One exchange with a live member, to repair what gossip missed; and
       * one with a member declared dead, if any, so that the two sides of a
       * healed partition find each other again. */
      int32_t slot;
      if (pick_members(s, &slot, 1, -1, MASK(SWIM_ALIVE)))
        s->env.push_pull(s->env.ctx, s->m[slot].addr);
      if (pick_members(s, &slot, 1, -1, MASK(SWIM_DEAD)))
        s->env.push_pull(s->env.ctx, s->m[slot].addr);
    }
  }
  if (!active || s->tombstones == 0) {
    s->next_tombstone_call = 0;
  } else if (s->next_tombstone_call == 0) {
    /* The first tombstone in a while: the first call comes at a random
     * point of an interval, so that the members that declared a death
     * together do not all call on it together. */
    s->next_tombstone_call = now + rnd(s) % (tombstone_call_every(s) + 1);
  } else if (now >= s->next_tombstone_call) {
    uint64_t every = tombstone_call_every(s);
    s->next_tombstone_call = now + every / 2 + rnd(s) % (every + 1);
    call_on_tombstone(s);
  }
  if (s->m[0].phase == SWIM_LEAVING && !s->left && now >= s->leave_at) {
    /* Goodbye: the last news of this node, to a few members directly. */
    swim_state_t old_state = s->m[0].state;
    s->left = 1;
    s->m[0].version++;
    s->m[0].state = SWIM_LEFT;
    gossip_about(s, 0, NULL);
    tell_some(s, now, s->cfg.indirect_k * 2);
    notify(s, 0, SWIM_CHANGED, old_state, SWIM_LEAVING);
  }
  if (now >= s->next_sweep) {
    s->next_sweep = now + s->cfg.probe_interval_ms;
    sweep(s, now);
  }

  uint64_t next = s->next_sweep;
  if (active) {
    next = earliest(next, s->next_probe);
    if (s->target >= 0 && !s->acked && !s->indirect_tried) next = earliest(next, s->probe_deadline);
    next = earliest(next, s->next_push_pull);
    if (s->next_tombstone_call) next = earliest(next, s->next_tombstone_call);
    if (s->ngossip > 0) next = earliest(next, s->next_gossip);
  }
  for (size_t i = 0; i < s->nsuspects; i++) {
    const swim_member_t *m = &s->m[s->suspects[i]];
    next = earliest(next, m->last_calls < LAST_CALLS ? last_call_at(s, m) : verdict_at(s, m));
  }
  for (int i = 0; i < s->nhelping; i++) next = earliest(next, s->helping[i].nack_at);
  if (s->m[0].phase == SWIM_LEAVING && !s->left) next = earliest(next, s->leave_at);
  return next;
}

int swim_receive(swim_t *s, uint64_t now, const char *data, size_t len) {
  mpk_reader_t r;
  mpk_reader_init(&r, data, len);
  uint32_t fields = mpk_read_array(&r);
  int type = (int)mpk_read_uint(&r, MSG_GOSSIP);
  uint32_t seq = (uint32_t)mpk_read_uint(&r, 0xffffffffu);
  char from[SWIM_ADDR_MAX], target[SWIM_ADDR_MAX];
  mpk_read_cstr(&r, from, sizeof from);
  uint64_t from_uid = mpk_read_uint(&r, SWIM_UID_MAX);
  uint64_t target_uid = 0;
  target[0] = '\0';
  int with_target = type == MSG_PING || type == MSG_PING_REQ;
  if (r.rc == 0 && (type < MSG_PING || fields != (uint32_t)(with_target ? 7 : 5) || !from[0])) {
    r.rc = ATOLL_EMALFORMED;
  }
  if (with_target) {
    mpk_read_cstr(&r, target, sizeof target);
    target_uid = mpk_read_uint(&r, SWIM_UID_MAX);
  }
  uint32_t nupdates = mpk_read_array(&r);
  if (r.rc) {
    s->stats.dropped++;
    return r.rc;
  }
  /* Read every update before applying any: a packet is taken whole or not. */
  update_t updates[GOSSIP_PER_PACKET];
  if (nupdates > GOSSIP_PER_PACKET) {
    s->stats.dropped++;
    return ATOLL_EMALFORMED;
  }
  for (uint32_t i = 0; i < nupdates; i++) {
    if (read_update(&r, &updates[i])) {
      s->stats.dropped++;
      return ATOLL_EMALFORMED;
    }
  }
  if (!mpk_done(&r)) {
    s->stats.dropped++;
    return ATOLL_ETRAILING;
  }
  s->stats.packets_received++;
  if (s->left) return 0;
  heard_from(s, now, from, from_uid,
             type == MSG_ACK && s->tombstone_seq && seq == s->tombstone_seq);
  s->stale_news = 0;
  for (uint32_t i = 0; i < nupdates; i++) apply(s, now, &updates[i]);
  if (s->stale_news && type != MSG_PING) {
    /* The sender still suspects this node; a ping gets its answer in the
     * ack, anything else gets one now, with this node's news first. */
    send_packet(s, from, MSG_GOSSIP, 0, NULL, 0);
  }

  switch (type) {
    case MSG_PING: {
      /* A ping meant for an earlier run at this address is answered all the
       * same: the ack carries the new uid. A sender this node thinks
       * suspect or dead hears so first, so that it can refute; one it
       * holds downed, so that it knows. */
      (void)target_uid;
      int32_t slot = find_slot(s, from);
      if (slot > 0) {
        uint32_t at = s->npingers++ % PINGERS;
        s->pingers[at] = slot;
        s->pinged_at[at] = now;
      }
      swim_state_t st = slot > 0 ? s->m[slot].state : SWIM_ALIVE;
      int32_t buddy = slot > 0 && s->m[slot].uid == from_uid &&
                              (st == SWIM_SUSPECT || st == SWIM_DEAD || st == SWIM_DOWNED)
                          ? slot
                          : -1;
      send_packet(s, from, MSG_ACK, seq, NULL, buddy);
      break;
    }
    case MSG_ACK:
      if (s->target >= 0 && seq == s->probe_seq) {
        s->acked = 1;
        s->stats.acks++;
        break;
      }
      for (int i = 0; i < s->nhelping; i++) {
        if (s->helping[i].my_seq == seq) {
          /* The target answered a ping made for someone else: pass it on. */
          send_packet(s, s->helping[i].requester, MSG_ACK, s->helping[i].their_seq, NULL, -1);
          s->helping[i] = s->helping[--s->nhelping];
          break;
        }
      }
      break;
    case MSG_PING_REQ: {
      if (s->nhelping >= MAX_HELPING || !target[0]) break;
      int32_t slot = find_slot(s, target);
      helping_t *h = &s->helping[s->nhelping++];
      h->my_seq = ++s->seq;
      h->their_seq = seq;
      snprintf(h->requester, sizeof h->requester, "%s", from);
      /* Nack before the requester gives up on its probe interval. */
      h->nack_at = now + s->cfg.probe_timeout_ms * 8 / 10;
      send_packet(s, target, MSG_PING, h->my_seq, slot >= 0 ? &s->m[slot] : NULL, -1);
      break;
    }
    case MSG_NACK:
      if (s->target >= 0 && seq == s->probe_seq) {
        s->nacks++;
        s->stats.nacks++;
      }
      break;
  }
  return 0;
}

int swim_state(swim_t *s, buf_t *out) {
  mpk_writer_t w;
  mpk_writer_init(&w, out);
  uint32_t count = 0;
  for (size_t i = 0; i < s->n; i++) count += s->m[i].addr[0] != '\0';
  mpk_array(&w, count);
  for (size_t i = 0; i < s->n; i++) {
    if (s->m[i].addr[0]) write_update(&w, &s->m[i], NULL);
  }
  return w.rc;
}

int swim_merge(swim_t *s, uint64_t now, const char *data, size_t len) {
  mpk_reader_t r;
  mpk_reader_init(&r, data, len);
  uint32_t n = mpk_read_array(&r);
  if (r.rc) return r.rc;
  for (uint32_t i = 0; i < n; i++) {
    update_t u;
    if (read_update(&r, &u)) return r.rc ? r.rc : ATOLL_EMALFORMED;
    /* A full state carries no suspecter: a suspicion in it is not one of
     * ours to confirm, and starts our own timeout at its longest. Members
     * alive in it are not gossiped on: the peer and its own news spread
     * that, and a node that joins a large cluster would otherwise flood
     * it with a thousand updates everyone has. Only the peer itself (the
     * first entry), and suspicions and deaths, are passed on. */
    s->hush = i > 0 && u.state == SWIM_ALIVE;
    apply(s, now, &u);
    s->hush = 0;
  }
  return mpk_done(&r) ? 0 : ATOLL_ETRAILING;
}

void swim_join(swim_t *s, uint64_t now, const char *addr) {
  (void)now;
  if (strcmp(addr, s->m[0].addr) == 0) return;
  if (s->env.push_pull) s->env.push_pull(s->env.ctx, addr);
}

/* This run's upno: one more than any this node knows of, so that a node
 * that goes up after it learnt the cluster (joining nodes do, after their
 * first push-pull) counts as younger than every member up before it. */
static uint32_t next_upno(const swim_t *s) {
  uint32_t max = s->upno_max;
  for (size_t i = 0; i < s->n; i++) {
    if (s->m[i].addr[0] && s->m[i].upno > max) max = s->m[i].upno;
  }
  return max < 0xffffffffu ? max + 1 : max;
}

void swim_set_phase(swim_t *s, uint64_t now, swim_phase_t phase) {
  if (s->left || s->m[0].phase == phase) return;
  if (phase == SWIM_UP && s->m[0].upno == 0) s->m[0].upno = next_upno(s);
  announce_self(s, now, phase);
  /* A goodbye needs a grace period only when there is someone to hear it. */
  if (phase == SWIM_LEAVING) s->leave_at = now + (count_alive(s) > 1 ? s->cfg.leave_grace_ms : 0);
}

void swim_leave(swim_t *s, uint64_t now) {
  swim_set_phase(s, now, SWIM_LEAVING);
}

int swim_down(swim_t *s, uint64_t now, const char *addr) {
  int32_t slot = find_slot(s, addr);
  if (slot <= 0 || !alive_ish(&s->m[slot])) return -1;
  set_state(s, slot, now, SWIM_DEAD, s->m[slot].version, s->m[slot].phase, NULL);
  return 0;
}

int swim_down_final(swim_t *s, uint64_t now, const char *addr) {
  int32_t slot = find_slot(s, addr);
  if (slot <= 0 || s->m[slot].state == SWIM_LEFT) return -1;
  swim_member_t *m = &s->m[slot];
  if (m->state != SWIM_DOWNED) set_state(s, slot, now, SWIM_DOWNED, m->version, m->phase, NULL);
  return 0;
}

int swim_is_downed(const swim_t *s) {
  return s->downed;
}

const swim_member_t *swim_members(const swim_t *s, size_t *count) {
  *count = s->n;
  return s->m;
}

const swim_member_t *swim_find(const swim_t *s, const char *addr) {
  int32_t slot = find_slot(s, addr);
  return slot >= 0 ? &s->m[slot] : NULL;
}

const swim_member_t *swim_self(const swim_t *s) {
  return &s->m[0];
}

uint32_t swim_lhm(const swim_t *s) {
  return s->lhm;
}

size_t swim_pending(const swim_t *s) {
  return s->ngossip;
}

const swim_stats_t *swim_stats(const swim_t *s) {
  return &s->stats;
}

int swim_has_majority(const swim_t *s) {
  size_t alive = 0, known = 0;
  for (size_t i = 0; i < s->n; i++) {
    const swim_member_t *m = &s->m[i];
    if (!m->addr[0] || m->state == SWIM_LEFT || m->state == SWIM_DOWNED) continue;
    /* A member that said it is leaving is as good as gone: its departure
     * must not cost the others their majority. */
    if (i > 0 && alive_ish(m) && m->phase == SWIM_LEAVING) continue;
    known++;
    if (alive_ish(m)) alive++;
  }
  return alive * 2 > known;
}
