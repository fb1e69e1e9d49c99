/* SWIM membership with the Lifeguard extensions, as a pure state machine (no I/O, clock or
 * randomness of its own). */
#ifndef ATOLL_SWIM_H
#define ATOLL_SWIM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SWIM_ADDR_MAX   64 /* "host:port" */
#define SWIM_NAME_MAX   32
#define SWIM_PACKET_MAX 1384 /* a UDP packet of at most 1,400 bytes, with its 16-byte tag */
#define SWIM_MAX_K      8    /* indirect probes, and confirmations tracked */
/* Node uids travel to Lua as numbers: at most 2^53 keeps them exact. */
#define SWIM_UID_MAX 9007199254740992ull

/* What the failure detector thinks of a member. A member's `version` (SWIM's
 * "incarnation number") only its own node raises: to refute a suspicion and
 * to announce its own status. News with a higher version win; at an equal
 * version, suspect beats alive and dead beats both. Left and downed are
 * final for the run: nothing about it changes them. */
typedef enum {
  SWIM_ALIVE = 0,
  SWIM_SUSPECT = 1,
  SWIM_DEAD = 2,   /* declared dead by the detector (unreachable): a refutation undoes it */
  SWIM_LEFT = 3,   /* it said goodbye */
  SWIM_DOWNED = 4, /* downed for good (swim_down_final): only a new run comes back */
} swim_state_t;

/* What the member says about itself (its lifecycle), gossiped with its version. */
typedef enum {
  SWIM_JOINING = 0,
  SWIM_UP = 1,
  SWIM_LEAVING = 2,
} swim_phase_t;

typedef struct swim_member_s {
  char addr[SWIM_ADDR_MAX];
  char name[SWIM_NAME_MAX];
  uint64_t uid;     /* the node's incarnation: random per start */
  uint32_t version; /* SWIM's incarnation number */
  swim_state_t state;
  swim_phase_t phase;
  uint64_t since; /* when state or phase last changed (ms) */
  /* Seniority: 1 + the largest upno its node knew of when this run went up
   * (0 until then); set once per run. Members are ordered by (upno, addr). */
  uint32_t upno;
  /* suspicion (Lifeguard): who independently suspects it, and when it dies */
  uint64_t suspect_since;
  uint64_t suspect_deadline;
  int confirmations;
  int last_calls; /* pings sent to it since its suspicion began */
  uint64_t last_call_sent;
  uint32_t suspecters[SWIM_MAX_K]; /* hashes of the addresses that confirmed */
} swim_member_t;

typedef enum {
  SWIM_ADDED,   /* a member this node did not know (or a new run at a known address) */
  SWIM_CHANGED, /* its state or phase changed, or its upno became known */
  SWIM_REMOVED, /* forgotten: its tombstone expired, or a new run replaced it */
} swim_event_t;

typedef struct swim_config_s {
  uint32_t probe_interval_ms;  /* one probe per member per interval */
  uint32_t probe_timeout_ms;   /* a direct probe's wait for an ack */
  uint32_t indirect_k;         /* members asked to probe on our behalf */
  double suspicion_alpha;      /* suspicion min = alpha * max(1, log10 n) * interval */
  double suspicion_beta;       /* suspicion max = beta * min */
  uint32_t confirmations_k;    /* independent suspicions that bring the timeout to min */
  double retransmit_lambda;    /* an update rides on about lambda * log10(n + 1) packets */
  uint32_t max_lhm;            /* Lifeguard's local health multiplier stops here */
  uint32_t gossip_interval_ms; /* while news waits, a gossip round this often */
  uint32_t gossip_fanout;      /* members a gossip round sends to */
  uint32_t push_pull_interval_ms;
  uint32_t leave_grace_ms; /* how long a leaving node keeps answering */
  uint32_t tombstone_ms;   /* dead, downed and left members are forgotten after this... */
  int keep_unreachable;    /* ...but with 1, dead ones never are */
  size_t packet_max;       /* body bytes per packet */
} swim_config_t;

/* The defaults, with the reasoning behind them, are in swim.c. */
void swim_default_config(swim_config_t *cfg);

typedef struct swim_stats_s {
  uint64_t probes, indirect_probes, acks, nacks;
  uint64_t suspicions, refutations, deaths, leaves;
  uint64_t packets_sent, packets_received, bytes_sent, dropped;
} swim_stats_t;

/* What a node gives the core. */
typedef struct swim_env_s {
  void *ctx;
  /* Sends a packet body (unreliably: it may be lost, late or reordered). */
  void (*send)(void *ctx, const char *addr, const char *data, size_t len);
  /* Asks for a push-pull state exchange with addr, over a reliable
   * channel: the node sends swim_state() and merges what comes back. */
  void (*push_pull)(void *ctx, const char *addr);
  /* A member was added, changed (old state and phase given) or removed. */
  void (*changed)(void *ctx, const swim_member_t *m, swim_event_t event, swim_state_t old_state,
                  swim_phase_t old_phase);
  /* A random 32-bit number. */
  uint32_t (*random)(void *ctx);
} swim_env_t;

typedef struct swim_s swim_t;

/* Creates a core for the node at addr (starting as joining); NULL when out
 * of memory or an argument does not fit. */
swim_t *swim_create(const swim_config_t *cfg, const swim_env_t *env, const char *addr,
                    const char *name, uint64_t uid, uint64_t now);
void swim_destroy(swim_t *s);

/* Runs what is due at `now` (probes, timeouts, suspicions, push-pulls);
 * returns when it wants to run next. */
uint64_t swim_tick(swim_t *s, uint64_t now);

/* A packet body arrived (already authenticated). Returns 0, or a negative
 * code for a packet that does not decode (counted in stats.dropped). */
int swim_receive(swim_t *s, uint64_t now, const char *data, size_t len);

/* The full state, for a push-pull exchange. */
int swim_state(swim_t *s, buf_t *out);
/* Merges another node's full state. */
int swim_merge(swim_t *s, uint64_t now, const char *data, size_t len);

/* Adds a seed to probe and asks for a push-pull with it. */
void swim_join(swim_t *s, uint64_t now, const char *addr);
/* Sets this node's own phase (joining -> up -> leaving), announcing it.
 * Going up numbers this run: upno = 1 + the largest upno this node knows
 * of (members alive or gone, forgotten ones included). */
void swim_set_phase(swim_t *s, uint64_t now, swim_phase_t phase);
/* Says goodbye: gossips that this node left. */
void swim_leave(swim_t *s, uint64_t now);
/* Declares a member dead by hand; 0, or -1 if it is unknown or this node.
 * A member that is alive refutes it and is back. */
int swim_down(swim_t *s, uint64_t now, const char *addr);
/* Downs a member for good: it is DOWNED on every member once the news
 * spreads, whatever it says afterwards, until a new run appears at its
 * address; the member itself hears it and does not refute (see
 * swim_is_downed). 0 (also if it is downed already), or -1 if it is
 * unknown, this node, or left. */
int swim_down_final(swim_t *s, uint64_t now, const char *addr);
/* 1 once this node heard that its run was downed. From then on it refutes
 * nothing and sends nothing (it still takes news in); its own slot says
 * SWIM_DOWNED (a `changed` event reports it). Restarting as a new run is
 * the node's job. */
int swim_is_downed(const swim_t *s);

/* The members known, this node first. */
const swim_member_t *swim_members(const swim_t *s, size_t *count);
const swim_member_t *swim_find(const swim_t *s, const char *addr);
const swim_member_t *swim_self(const swim_t *s);
uint32_t swim_lhm(const swim_t *s);
const swim_stats_t *swim_stats(const swim_t *s);
/* Updates waiting to be gossiped. */
size_t swim_pending(const swim_t *s);

/* 1 if the members this node thinks alive are more than half of those it
 * knows: alive, suspect and dead ones not yet forgotten; members that left,
 * are leaving or were downed do not count. */
int swim_has_majority(const swim_t *s);

const char *swim_state_name(swim_state_t st);
const char *swim_phase_name(swim_phase_t ph);

#endif
