/* TCP links between nodes: handshake, framing, batching what one read brings, write coalescing,
 * bounded queues (see transport.h). */
#include "transport.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "codec.h"
#include "error.h"
#include "log.h"

/* Handshake progress: which message the link waits for. */
enum { HS_WAIT_HELLO = 1, HS_WAIT_CHALLENGE, HS_WAIT_PROOF, HS_WAIT_WELCOME };

struct link_s {
  host_handle_t base; /* first: shutdown closes the handles through it */
  transport_t *t;
  uv_tcp_t tcp;
  uv_timer_t timer; /* the handshake deadline */
  uv_connect_t connect;
  uv_getaddrinfo_t resolve;
  int open_handles;
  int dialer; /* this node dialed */
  link_state_t state;
  int hs_step;                       /* the handshake message the link waits for */
  frame_seal_t send_seal, recv_seal; /* set when the link goes up */
  int handshaking;                   /* counted in t->handshaking */
  /* Accepted and not yet authenticated: on the transport's admission list. */
  int admitted;
  link_t *adm_prev, *adm_next;
  unsigned char source[16]; /* the peer's address: IPv4 as v4-mapped IPv6, IPv6 as its /64 */
  uint64_t accepted_at;     /* loop time, ms */
  uint64_t stage_at;        /* when it began to wait for its hello, or its proof */
  unsigned accepted_turn;   /* the loop turn it was accepted in */
  int overdue;              /* its deadline passed: closed after one more poll */
  int was_up;
  hs_msg_t hello;           /* the dialer's hello */
  hs_msg_t challenge;       /* the acceptor's challenge */
  char target[HS_MAX_TEXT]; /* what was dialed, or the peer's socket address */
  buf_t in;
  size_t in_off;  /* bytes of `in` already parsed */
  buf_t out;      /* frames queued, not yet handed to the socket */
  buf_t inflight; /* frames a uv_write owns (a test link: what transport_test_output gave) */
  buf_t sent;     /* a test link: what it wrote since transport_test_output */
  uv_write_t wreq;
  int writing;
  int unflushed; /* frames queued since the last write */
  int flush_at;  /* write early once this many are queued */
  unsigned turn; /* the loop turn flush_at belongs to */
  int dirty;
  link_t *next_dirty;
  void *data; /* the events' owner's */
  link_counters_t counters;
  char reason[256]; /* why it closed */
};

struct transport_s {
  host_handle_t base; /* first: the listener's and flusher's handle->data */
  host_t *host;       /* NULL for a test transport */
  transport_events_t ev;
  void *ud;
  transport_config_t cfg;
  unsigned char key[HS_KEY];
  int has_key;
  void (*nonce)(void *ctx, unsigned char *out, size_t n);
  void *nonce_ctx;
  uv_tcp_t listener;
  int listening;
  uv_prepare_t flusher;
  link_t *dirty;
  /* The envelopes of the read being parsed, handed over together. */
  envelope_t *batch;
  size_t batch_cap;
  int handshaking; /* links that have not finished their handshake */
  unsigned turn;   /* counts loop turns (flushes), for write batching and admission */
  double refused, dropped_frames;
  /* Admission: accepted links not yet authenticated, oldest first. */
  link_t *adm_head, *adm_tail;
  int admitted;
  int max_handshakes;     /* TRANSPORT_MAX_HANDSHAKES, or fewer */
  uv_check_t pruner;      /* enforces the limits after a turn's input is read */
  uv_timer_t prune_timer; /* wakes the pruner when a connection's grace ends */
  double evicted, timed_out, not_accepted;
  /* What was shed in the current report period, not yet logged. */
  uv_timer_t reporter;
  struct {
    int open;  /* a period runs: the reporter ends it */
    int burst; /* failed handshakes still logged in full this period */
    double by_address, table_full, timed_out, not_accepted, failed;
    unsigned char top[16]; /* the source seen most (Misra-Gries, one counter) */
    char top_name[64];
    double top_weight;
  } report;
};

const char *link_state_name(link_state_t s) {
  switch (s) {
    case LINK_CONNECTING:
      return "connecting";
    case LINK_HANDSHAKE:
      return "handshake";
    case LINK_UP:
      return "up";
    default:
      return "closed";
  }
}

/* A link of a test transport: no socket, no timer, no loop. */
static int is_test(const link_t *l) {
  return l->t->host == NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

/* Who the link is with, for logs: what was dialed, or for an accepted link
 * the socket's address until the peer has proved who it is (what it only
 * claims could be anyone's). */
static const char *peer_label(const link_t *l) {
  if (l->dialer && l->state >= LINK_HANDSHAKE && l->challenge.address[0])
    return l->challenge.address;
  if (!l->dialer && l->state == LINK_UP && l->hello.address[0]) return l->hello.address;
  return l->target;
}

/* Takes a link off the list the flusher walks: it may be freed before the
 * flusher runs next. */
static void undirty(link_t *l) {
  if (!l->dirty) return;
  link_t **pp = &l->t->dirty;
  while (*pp && *pp != l) pp = &(*pp)->next_dirty;
  if (*pp) *pp = l->next_dirty;
  l->dirty = 0;
  l->next_dirty = NULL;
}

static void admission_leave(link_t *l);

static void finalize(link_t *l) {
  transport_t *t = l->t;
  if (l->handshaking) t->handshaking--;
  admission_leave(l);
  if (t->ev.on_down) t->ev.on_down(t->ud, l, l->reason[0] ? l->reason : "closed", l->was_up);
  buf_close(&l->in);
  buf_close(&l->out);
  buf_close(&l->inflight);
  buf_close(&l->sent);
  free(l);
}

static void on_handle_closed(uv_handle_t *h) {
  link_t *l = h->data;
  /* Closed by the host's shutdown walk, without link_close. */
  if (l->state != LINK_CLOSED) {
    l->state = LINK_CLOSED;
    undirty(l);
    admission_leave(l);
  }
  if (--l->open_handles == 0) finalize(l);
}

/* Closes the link; with `reset`, the socket is reset (RST) rather than
 * closed in order, so a connection shed unheard leaves no TIME_WAIT here. */
static void close_link(link_t *l, const char *reason, int reset) {
  if (l->state == LINK_CLOSED) return;
  if (reason && !l->reason[0]) snprintf(l->reason, sizeof l->reason, "%s", reason);
  l->state = LINK_CLOSED;
  undirty(l);
  admission_leave(l);
  if (is_test(l)) return; /* freed by transport_test_free_link */
  uv_handle_t *tcp = (uv_handle_t *)&l->tcp, *timer = (uv_handle_t *)&l->timer;
  if (!uv_is_closing(tcp) && !(reset && uv_tcp_close_reset(&l->tcp, on_handle_closed) == 0)) {
    uv_close(tcp, on_handle_closed);
  }
  if (!uv_is_closing(timer)) uv_close(timer, on_handle_closed);
}

void link_close(link_t *l, const char *reason) {
  close_link(l, reason, 0);
}

static log_level_t failure_level(link_t *l, log_level_t level);

static void close_logged(link_t *l, log_level_t level, const char *fmt, const char *arg) {
  char why[256];
  snprintf(why, sizeof why, fmt, arg);
  log_write(failure_level(l, level), "link", "%s: %s", peer_label(l), why);
  link_close(l, why);
}

/* The peer broke the protocol: logs why, tells the events' owner, and closes. */
static void protocol_error(link_t *l, int code, const char *fmt, const char *arg) {
  char why[256];
  snprintf(why, sizeof why, fmt, arg);
  log_write(failure_level(l, LOG_WARN), "link", "%s: %s", peer_label(l), why);
  transport_t *t = l->t;
  if (t->ev.on_error) t->ev.on_error(t->ud, l, code, why);
  link_close(l, why);
}

static link_t *link_new(transport_t *t, int dialer) {
  link_t *l = calloc(1, sizeof *l);
  if (l == NULL) return NULL;
  l->handshaking = 1;
  t->handshaking++;
  l->base.on_close = on_handle_closed;
  l->t = t;
  l->dialer = dialer;
  l->state = dialer ? LINK_CONNECTING : LINK_HANDSHAKE;
  buf_init(&l->in);
  buf_init(&l->out);
  buf_init(&l->inflight);
  buf_init(&l->sent);
  if (is_test(l)) return l;
  uv_tcp_init(&t->host->loop, &l->tcp);
  uv_timer_init(&t->host->loop, &l->timer);
  /* A link alone does not keep a node running: a call waiting on it does
   * (its timeout), and so does a listening socket. A node that only dials
   * out ends when its work is done. */
  uv_unref((uv_handle_t *)&l->tcp);
  uv_unref((uv_handle_t *)&l->timer);
  l->tcp.data = l->timer.data = l;
  l->open_handles = 2;
  return l;
}

link_state_t link_state(const link_t *l) {
  return l->state;
}

const char *link_target(const link_t *l) {
  return l->target;
}

int link_dialer(const link_t *l) {
  return l->dialer;
}

size_t link_max_frame(const link_t *l) {
  return l->t->cfg.max_frame;
}

void link_counters(const link_t *l, link_counters_t *out) {
  *out = l->counters;
}

void link_set_data(link_t *l, void *data) {
  l->data = data;
}

void *link_data(const link_t *l) {
  return l->data;
}

/* ---- admission: accepted connections that have not authenticated ------ */

/* Until its proof arrives, an accepted connection has proved nothing, yet it
 * holds a descriptor, memory and a place among the handshakes under way;
 * anyone who can reach the port can open one. What such connections may
 * hold is bounded, and a flood of them must not keep out a peer that knows
 * the secret. That peer's dialer sends its hello as soon as it is connected
 * and its proof one round trip later, so the node asks little of it:
 *
 * - Deadlines: the hello within TRANSPORT_HELLO_MS, the whole handshake
 *   within handshake_ms (5 s).
 * - Per source address (an IPv6 /64, what one host is usually given) and
 *   stage (waiting for the hello, waiting for the proof): beyond
 *   TRANSPORT_HANDSHAKES_PER_IP connections, the oldest go, once they have
 *   been in that stage for TRANSPORT_HELLO_GRACE_MS. A flooding address
 *   churns only its own connections, and a peer that shares its address
 *   (a NAT, the same host) is never shed before it has had the grace to
 *   speak, nor pushed out of the proof stage by a flood that never sent a
 *   hello.
 * - In all, at most max_handshakes (TRANSPORT_MAX_HANDSHAKES, or a quarter
 *   of the descriptors the process may open, if fewer): beyond that, the
 *   address holding the most loses its oldest, grace or not, those without
 *   a hello first. One source cannot push out another's connections while
 *   it holds more than they do.
 * - Nothing is judged before it could be read: a connection is never shed
 *   before a poll has run since it was accepted (its first bytes are read
 *   there), the limits are checked after each poll that accepted some (a
 *   check handle) and when a grace ends, and a deadline is enforced one
 *   poll late, so a busy node does not blame a peer whose hello has been
 *   waiting in the socket. The table may thus exceed its bound by one
 *   turn's accepts (the listen backlog).
 * - Newcomers are never refused. Shed connections are reset (RST: no
 *   TIME_WAIT here) and counted; each is logged at debug level, with one
 *   warning when shedding starts and a summary at most every report_ms.
 *   Failed handshakes of unauthenticated peers are logged in full up to
 *   TRANSPORT_REPORT_BURST per period, then only counted: what an
 *   unauthenticated client sends cannot fill the log either.
 *
 * This node used to refuse the newest beyond a fixed table, and drop each
 * only at the 5 s deadline: whoever filled the table kept everyone else out.
 * OpenSSH's MaxStartups refuses newcomers at random once many are pending,
 * which bounds the cost but refuses legitimate clients at the same rate as
 * the flood; its PerSourceMaxStartups and nginx's limit_conn cap what one
 * address may hold by refusing the newcomer, which is fair across addresses
 * but lets a flood lock out its neighbours on a shared address. A SYN cache
 * (FreeBSD's syncache) evicts the oldest entry of a full bucket instead:
 * eviction is what lets a newcomer that completes its handshake in a round
 * trip through. What a flood from the peer's own address can still do: hold
 * more than the whole table and churn it faster than the peer's hello
 * arrives; the peer then needs its hello read within the time the flood
 * takes to open max_handshakes connections. */

typedef enum {
  SHED_BY_ADDRESS, /* its address is over TRANSPORT_HANDSHAKES_PER_IP */
  SHED_TABLE_FULL, /* over max_handshakes are under way */
  SHED_TIMED_OUT,  /* past its deadline */
} shed_why_t;

static void schedule_prune(transport_t *t);
static void prune_timer_cb(uv_timer_t *timer);

static void source_of(const struct sockaddr_storage *ss, unsigned char key[16]) {
  static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  memset(key, 0, 16);
  if (ss->ss_family == AF_INET) {
    memcpy(key, v4_mapped, 12);
    memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
  } else if (ss->ss_family == AF_INET6) {
    const unsigned char *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
    memcpy(key, a, memcmp(a, v4_mapped, 12) == 0 ? 16 : 8); /* IPv4 on a dual-stack socket */
  }
}

/* Puts an accepted link on the admission list, newest last. */
static void admission_enter(link_t *l) {
  transport_t *t = l->t;
  l->admitted = 1;
  l->accepted_at = l->stage_at = uv_now(&t->host->loop);
  l->accepted_turn = t->turn;
  l->adm_prev = t->adm_tail;
  l->adm_next = NULL;
  if (t->adm_tail)
    t->adm_tail->adm_next = l;
  else
    t->adm_head = l;
  t->adm_tail = l;
  t->admitted++;
  schedule_prune(t);
}

/* Takes a link off the admission list: it authenticated, or it closed. */
static void admission_leave(link_t *l) {
  if (!l->admitted) return;
  transport_t *t = l->t;
  if (l->adm_prev)
    l->adm_prev->adm_next = l->adm_next;
  else
    t->adm_head = l->adm_next;
  if (l->adm_next)
    l->adm_next->adm_prev = l->adm_prev;
  else
    t->adm_tail = l->adm_prev;
  l->adm_prev = l->adm_next = NULL;
  l->admitted = 0;
  t->admitted--;
}

/* The address part of a link's target ("ip:port", "[ip]:port"). */
static void source_name(const link_t *l, char *out, size_t cap) {
  const char *colon = strrchr(l->target, ':');
  size_t n = colon ? (size_t)(colon - l->target) : strlen(l->target);
  if (n >= cap) n = cap - 1;
  memcpy(out, l->target, n);
  out[n] = '\0';
}

/* An accepted connection's deadline for its hello. */
static uint64_t hello_ms(const transport_t *t) {
  return t->cfg.handshake_ms < TRANSPORT_HELLO_MS ? t->cfg.handshake_ms : TRANSPORT_HELLO_MS;
}

static void report_cb(uv_timer_t *timer);

/* Starts a report period if none runs; 1 if this starts one. */
static int report_open(transport_t *t) {
  if (t->report.open || t->host->closing) return 0;
  memset(&t->report, 0, sizeof t->report);
  t->report.open = 1;
  t->report.burst = TRANSPORT_REPORT_BURST;
  uv_timer_start(&t->reporter, report_cb, t->cfg.report_ms, 0);
  return 1;
}

/* Counts a source towards "most from": with one counter (Misra-Gries), the
 * source of more than half of the events, if there is one, ends up there. */
static void report_source(transport_t *t, const link_t *l) {
  if (t->report.top_weight > 0 && memcmp(t->report.top, l->source, 16) == 0) {
    t->report.top_weight++;
  } else if (t->report.top_weight <= 0) {
    memcpy(t->report.top, l->source, 16);
    source_name(l, t->report.top_name, sizeof t->report.top_name);
    t->report.top_weight = 1;
  } else {
    t->report.top_weight--;
  }
}

/* Appends ", N what" to a summary when N is not 0. */
static void report_part(char *line, size_t cap, double n, const char *what) {
  size_t len = strlen(line);
  if (n > 0 && len < cap) snprintf(line + len, cap - len, "%s%.0f %s", len ? ", " : "", n, what);
}

/* Ends a report period: a summary of what it did not log, if anything. */
static void report_cb(uv_timer_t *timer) {
  transport_t *t = timer->data;
  char parts[384] = "";
  report_part(parts, sizeof parts, t->report.by_address, "shed over the per-address limit");
  report_part(parts, sizeof parts, t->report.table_full, "shed with the handshake table full");
  report_part(parts, sizeof parts, t->report.timed_out, "past their deadline");
  report_part(parts, sizeof parts, t->report.not_accepted, "not accepted");
  report_part(parts, sizeof parts, t->report.failed, "failed handshakes not logged");
  t->report.open = 0;
  if (parts[0] == '\0') return; /* a quiet period: the next event is logged at once */
  log_warn("link",
           "unauthenticated connections in the last %.0f s: %s%s%s; %d in the handshake now",
           t->cfg.report_ms / 1000.0, parts, t->report.top_weight > 0 ? "; most from " : "",
           t->report.top_weight > 0 ? t->report.top_name : "", t->admitted);
  report_open(t);
}

/* Logs and counts a connection shed before it authenticated, and resets it. */
static void shed(link_t *l, shed_why_t why) {
  transport_t *t = l->t;
  char reason[96];
  double *count;
  if (why == SHED_BY_ADDRESS) {
    t->evicted++;
    count = &t->report.by_address;
    snprintf(reason, sizeof reason, "over %d handshakes from its address",
             TRANSPORT_HANDSHAKES_PER_IP);
  } else if (why == SHED_TABLE_FULL) {
    t->evicted++;
    count = &t->report.table_full;
    snprintf(reason, sizeof reason, "over %d handshakes under way", t->max_handshakes);
  } else {
    t->timed_out++;
    count = &t->report.timed_out;
    if (l->hs_step == HS_WAIT_HELLO) {
      snprintf(reason, sizeof reason, "no hello within %.1f s", hello_ms(t) / 1000.0);
    } else {
      snprintf(reason, sizeof reason, "handshake timed out");
    }
  }
  if (report_open(t)) {
    /* Shedding starts: say so at once; what follows goes into the summaries. */
    log_warn("link",
             "shedding unauthenticated connections (the first: %s, %s); a summary follows at most "
             "every %.0f s, each one at debug level",
             l->target, reason, t->cfg.report_ms / 1000.0);
  } else {
    (*count)++;
    log_debug("link", "%s: shed: %s", l->target, reason);
  }
  report_source(t, l);
  close_link(l, reason, 1);
}

/* The level to log a failed handshake at: as asked for a link this node
 * dialed or one that authenticated; for an unauthenticated connection, as
 * asked while the period's burst lasts, then debug (and counted). */
static log_level_t failure_level(link_t *l, log_level_t level) {
  if (!l->admitted || level < LOG_WARN || l->t->host->closing) return level;
  transport_t *t = l->t;
  report_open(t);
  report_source(t, l);
  if (t->report.burst > 0) {
    t->report.burst--;
    return level;
  }
  t->report.failed++;
  return LOG_DEBUG;
}

/* A connection the listener could not take (out of descriptors, most likely). */
static void not_accepted(transport_t *t, int status) {
  t->not_accepted++;
  if (report_open(t)) {
    log_warn("link",
             "shedding unauthenticated connections (the first: not accepted: %s); a summary "
             "follows at most every %.0f s, each one at debug level",
             uv_strerror(status), t->cfg.report_ms / 1000.0);
  } else {
    t->report.not_accepted++;
    log_debug("link", "cannot accept a connection: %s", uv_strerror(status));
  }
}

typedef struct {
  link_t *l;
  unsigned order; /* on the admission list: oldest first */
} adm_entry_t;

typedef struct {
  size_t start, end; /* its entries, oldest first */
  int live[2];       /* not shed yet, per stage: waiting for the hello, for the proof */
  size_t next[2];    /* per stage, where its oldest live connection may be */
} adm_source_t;

static const int stage_step[2] = {HS_WAIT_HELLO, HS_WAIT_PROOF};

static int by_source(const void *a, const void *b) {
  const adm_entry_t *x = a, *y = b;
  int c = memcmp(x->l->source, y->l->source, 16);
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* An address over its limit in a stage sheds its oldest connections in that
 * stage that have been in it for the grace; *due learns when the next one
 * will have, *fresh whether some have not been read yet. */
static void by_address(transport_t *t, adm_entry_t *e, adm_source_t *src, int stage, uint64_t now,
                       uint64_t *due, int *fresh) {
  for (size_t i = src->start; i < src->end && src->live[stage] > TRANSPORT_HANDSHAKES_PER_IP; i++) {
    link_t *l = e[i].l;
    if (l->state == LINK_CLOSED || l->hs_step != stage_step[stage]) continue;
    if (l->accepted_turn == t->turn) {
      *fresh = 1;
      break; /* in accept order: the rest are this turn's too */
    }
    if (now < l->stage_at + TRANSPORT_HELLO_GRACE_MS) {
      if (l->stage_at + TRANSPORT_HELLO_GRACE_MS < *due)
        *due = l->stage_at + TRANSPORT_HELLO_GRACE_MS;
      continue;
    }
    shed(l, SHED_BY_ADDRESS);
    src->live[stage]--;
  }
}

/* The address's oldest connection still without a hello, or if it has
 * none, its oldest waiting for the proof; NULL if that one has not been read
 * yet (it is judged after the next poll: a flood's newest connections do
 * not push out one that sent its hello). */
static link_t *oldest(transport_t *t, adm_entry_t *e, adm_source_t *src, int *stage_out,
                      unsigned *order_out) {
  for (int stage = 0; stage < 2; stage++) {
    for (size_t i = src->next[stage]; i < src->end; i++) {
      link_t *l = e[i].l;
      if (l->state == LINK_CLOSED || l->hs_step != stage_step[stage]) {
        if (i == src->next[stage]) src->next[stage]++;
        continue;
      }
      if (l->accepted_turn == t->turn) return NULL; /* the rest are this turn's too */
      *stage_out = stage;
      *order_out = e[i].order;
      return l;
    }
  }
  return NULL;
}

/* Sheds what is over the limits (see above); never a connection accepted
 * since the last poll, which has not been read yet. */
static void prune(transport_t *t) {
  uint64_t now = uv_now(&t->host->loop), due = UINT64_MAX;
  int fresh = 0;
  if (t->admitted > TRANSPORT_HANDSHAKES_PER_IP) {
    size_t n = (size_t)t->admitted, nsrc = 0;
    adm_entry_t *e = malloc(n * sizeof *e);
    adm_source_t *src = malloc(n * sizeof *src);
    if (e == NULL || src == NULL) {
      free(e);
      free(src);
      return; /* the deadlines still hold */
    }
    size_t i = 0;
    for (link_t *l = t->adm_head; l; l = l->adm_next, i++) {
      e[i].l = l;
      e[i].order = (unsigned)i;
    }
    qsort(e, n, sizeof *e, by_source);
    for (i = 0; i < n; i++) {
      if (i == 0 || memcmp(e[i].l->source, e[i - 1].l->source, 16) != 0) {
        memset(&src[nsrc], 0, sizeof src[nsrc]);
        src[nsrc].start = src[nsrc].next[0] = src[nsrc].next[1] = i;
        nsrc++;
      }
      src[nsrc - 1].end = i + 1;
      src[nsrc - 1].live[e[i].l->hs_step == HS_WAIT_HELLO ? 0 : 1]++;
    }
    for (size_t s = 0; s < nsrc; s++) {
      for (int stage = 0; stage < 2; stage++) by_address(t, e, &src[s], stage, now, &due, &fresh);
    }
    /* Over the table's limit: the address holding the most sheds its
     * oldest; among addresses holding as many (a flood from many addresses,
     * one connection each), a connection without a hello goes before one
     * with, and the oldest before a newer one, so that a peer whose hello
     * was read, and whose proof is one round trip away, goes last. */
    while (t->admitted > t->max_handshakes) {
      link_t *victim = NULL;
      size_t from = 0;
      int vstage = 0, vlive = -1;
      unsigned vorder = 0;
      for (size_t s = 0; s < nsrc; s++) {
        int live = src[s].live[0] + src[s].live[1];
        if (live == 0 || live < vlive) continue;
        int stage;
        unsigned order;
        link_t *l = oldest(t, e, &src[s], &stage, &order);
        if (l == NULL) continue;
        if (victim == NULL || live > vlive || stage < vstage ||
            (stage == vstage && order < vorder)) {
          victim = l;
          from = s;
          vstage = stage;
          vlive = live;
          vorder = order;
        }
      }
      if (victim == NULL) {
        fresh = 1; /* nothing read yet: after the next poll */
        break;
      }
      shed(victim, SHED_TABLE_FULL);
      src[from].live[vstage]--;
    }
    free(e);
    free(src);
  }
  if (!fresh) uv_check_stop(&t->pruner);
  if (due != UINT64_MAX) uv_timer_start(&t->prune_timer, prune_timer_cb, due - now, 0);
}

static void prune_cb(uv_check_t *check) {
  prune(check->data);
}

static void prune_timer_cb(uv_timer_t *timer) {
  prune(timer->data);
}

/* Runs the pruner after this turn's input is read. */
static void schedule_prune(transport_t *t) {
  if (t->host->closing || uv_is_closing((uv_handle_t *)&t->pruner)) return;
  uv_check_start(&t->pruner, prune_cb);
}

void transport_stats(const transport_t *t, transport_stats_t *out) {
  out->refused = t->refused;
  out->evicted = t->evicted;
  out->timed_out = t->timed_out;
  out->not_accepted = t->not_accepted;
  out->dropped_frames = t->dropped_frames;
  out->unauthenticated = t->admitted;
  out->max_unauthenticated = t->max_handshakes;
}

/* ---- writing ---------------------------------------------------------- */

static void flush_link(link_t *l);

static void write_cb(uv_write_t *req, int status) {
  link_t *l = req->data;
  l->writing = 0;
  l->inflight.len = 0;
  if (l->state == LINK_CLOSED) return;
  if (status < 0) {
    close_logged(l, LOG_WARN, "write failed: %s", uv_strerror(status));
    return;
  }
  buf_shrink(&l->inflight, 1 << 20);
  if (l->out.len) flush_link(l);
}

/* Hands queued frames to the socket: a direct write when the socket takes
 * it all (the common case), else an asynchronous one for the rest. */
static void flush_link(link_t *l) {
  if (l->state != LINK_UP || l->writing || l->out.len == 0) return;
  l->unflushed = 0;
  if (is_test(l)) {
    /* No socket: what would go out is kept for transport_test_output. */
    l->counters.bytes_out += l->out.len;
    if (l->sent.len < (1u << 20) && buf_append(&l->sent, l->out.data, l->out.len) != 0) {
      l->sent.len = 0;
    }
    l->out.len = 0;
    return;
  }
  buf_t tmp = l->inflight;
  l->inflight = l->out;
  l->out = tmp;
  l->out.len = 0;
  uv_buf_t b = uv_buf_init(l->inflight.data, (unsigned)l->inflight.len);
  int n = uv_try_write((uv_stream_t *)&l->tcp, &b, 1);
  if (n == (int)l->inflight.len) {
    l->counters.bytes_out += n;
    l->inflight.len = 0;
    buf_shrink(&l->inflight, 1 << 20);
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    close_logged(l, LOG_WARN, "write failed: %s", uv_strerror(n));
    return;
  }
  if (n > 0) {
    l->counters.bytes_out += n;
    b = uv_buf_init(l->inflight.data + n, (unsigned)(l->inflight.len - (size_t)n));
  }
  l->wreq.data = l;
  l->writing = 1;
  int rc = uv_write(&l->wreq, (uv_stream_t *)&l->tcp, &b, 1, write_cb);
  if (rc) {
    l->writing = 0;
    close_logged(l, LOG_WARN, "write failed: %s", uv_strerror(rc));
  }
}

static void flush_cb(uv_prepare_t *p) {
  transport_t *t = p->data;
  t->turn++;
  link_t *l = t->dirty;
  t->dirty = NULL;
  while (l) {
    link_t *next = l->next_dirty;
    l->dirty = 0;
    l->next_dirty = NULL;
    flush_link(l);
    l = next;
  }
}

/* Marks the link for the flush at the end of this loop turn: everything
 * queued during the turn goes out in one write. */
static void mark_dirty(link_t *l) {
  if (l->dirty || l->state != LINK_UP) return;
  if (is_test(l)) {
    flush_link(l); /* no loop turn ends for it */
    return;
  }
  l->dirty = 1;
  l->next_dirty = l->t->dirty;
  l->t->dirty = l;
}

size_t link_queued(const link_t *l) {
  return l->out.len + l->inflight.len;
}

/* Checks room before writing a frame of about `size` bytes. */
static int room(link_t *l, size_t size) {
  if (l->state != LINK_UP) return UV_ENOTCONN;
  if (size > l->t->cfg.max_frame) return ATOLL_ETOOBIG;
  if (link_queued(l) + size > l->t->cfg.max_queue) return UV_ENOBUFS;
  return 0;
}

static int queued(link_t *l, int rc) {
  if (rc == 0) {
    l->counters.frames_out++;
    /* Writes are coalesced per loop turn, but a long turn hands frames on
     * as it goes, so the peer can work on them meanwhile: the first time
     * after TRANSPORT_FLUSH_FRAMES frames, then after twice as many each
     * time, so that a long stream still goes out in a few large writes. */
    transport_t *t = l->t;
    if (l->turn != t->turn) {
      l->turn = t->turn;
      l->flush_at = TRANSPORT_FLUSH_FRAMES;
    }
    if (++l->unflushed >= l->flush_at || l->out.len >= TRANSPORT_FLUSH_BYTES) {
      if (l->flush_at < TRANSPORT_FLUSH_FRAMES_MAX) l->flush_at *= 2;
      flush_link(l);
    }
    mark_dirty(l);
  }
  return rc;
}

int link_call(link_t *l, double rid, double inc, double id, const char *method, size_t mlen,
              const char *payload, size_t plen) {
  int rc = room(l, plen + mlen + 40);
  if (rc) return rc;
  return queued(
      l, frame_write_call(&l->out, &l->send_seal, rid, inc, id, method, mlen, payload, plen));
}

int link_send(link_t *l, double inc, double id, const char *method, size_t mlen,
              const char *payload, size_t plen) {
  int rc = room(l, plen + mlen + 32);
  if (rc) return rc;
  return queued(l, frame_write_send(&l->out, &l->send_seal, inc, id, method, mlen, payload, plen));
}

int link_reply(link_t *l, double rid, int ok, const char *payload, size_t plen) {
  int rc = room(l, plen + 16);
  if (rc) return rc;
  return queued(l, frame_write_reply(&l->out, &l->send_seal, rid, ok, payload, plen));
}

int link_call_name(link_t *l, double rid, const char *name, size_t nlen, const char *method,
                   size_t mlen, const char *payload, size_t plen) {
  int rc = room(l, plen + nlen + mlen + 24);
  if (rc) return rc;
  return queued(l, frame_write_call_name(&l->out, &l->send_seal, rid, name, nlen, method, mlen,
                                         payload, plen));
}

int link_send_name(link_t *l, const char *name, size_t nlen, const char *method, size_t mlen,
                   const char *payload, size_t plen) {
  int rc = room(l, plen + nlen + mlen + 16);
  if (rc) return rc;
  return queued(
      l, frame_write_send_name(&l->out, &l->send_seal, name, nlen, method, mlen, payload, plen));
}

int link_write_raw(link_t *l, const char *bytes, size_t len) {
  int rc = room(l, 0);
  if (rc) return rc;
  if (buf_append(&l->out, bytes, len)) return ATOLL_ENOMEM;
  mark_dirty(l);
  return 0;
}

int link_write_sealed(link_t *l, const char *body, size_t len) {
  int rc = room(l, len + FRAME_SEALING);
  if (rc) return rc;
  return queued(l, frame_write_raw(&l->out, &l->send_seal, body, len));
}

/* ---- the handshake ---------------------------------------------------- */

typedef struct hs_write_s {
  uv_write_t req;
  size_t len;
  char data[];
} hs_write_t;

static void hs_write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void hs_send(link_t *l, const hs_msg_t *msg) {
  buf_t body, frame;
  buf_init(&body);
  buf_init(&frame);
  if (hs_encode(&body, msg) == 0 && frame_write_raw(&frame, NULL, body.data, body.len) == 0) {
    if (is_test(l)) {
      buf_append(&l->sent, frame.data, frame.len);
    } else {
      hs_write_t *w = malloc(sizeof *w + frame.len);
      if (w) {
        memcpy(w->data, frame.data, frame.len);
        w->len = frame.len;
        uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
        if (uv_write(&w->req, (uv_stream_t *)&l->tcp, &b, 1, hs_write_cb) != 0) free(w);
      }
    }
  }
  buf_close(&body);
  buf_close(&frame);
}

static void fill_identity(transport_t *t, hs_msg_t *m, hs_type_t type) {
  memset(m, 0, sizeof *m);
  m->type = type;
  m->version = HS_VERSION;
  snprintf(m->cluster, sizeof m->cluster, "%s", t->cfg.cluster);
  snprintf(m->name, sizeof m->name, "%s", t->cfg.name);
  snprintf(m->address, sizeof m->address, "%s", t->cfg.address);
  m->incarnation = t->cfg.incarnation;
  t->nonce(t->nonce_ctx, m->nonce, HS_NONCE);
  m->has_nonce = 1;
}

/* Tells the peer why, logs it, and closes. */
static void refuse(link_t *l, log_level_t level, const char *reason) {
  hs_msg_t m;
  memset(&m, 0, sizeof m);
  m.type = HS_REFUSE;
  m.version = HS_VERSION;
  snprintf(m.reason, sizeof m.reason, "%s", reason);
  hs_send(l, &m);
  l->t->refused++;
  log_write(failure_level(l, level), "link", "refused %s %s: %s",
            l->dialer ? "the connection to" : "a connection from", peer_label(l), reason);
  link_close(l, reason);
}

/* The authenticated peer, as the events report it. */
static void peer_of_link(const link_t *l, transport_peer_t *p) {
  const hs_msg_t *m = l->dialer ? &l->challenge : &l->hello;
  p->name = m->name;
  p->address = m->address;
  p->incarnation = m->incarnation;
  p->dialer = l->dialer;
  p->target = l->target;
}

/* A MAC that does not check out: the peer does not know this node's secret. */
static void refuse_auth(link_t *l) {
  transport_t *t = l->t;
  if (t->ev.on_error) t->ev.on_error(t->ud, l, ATOLL_EAUTH, HS_SECRETS_DIFFER);
  refuse(l, LOG_WARN, HS_SECRETS_DIFFER);
}

static void went_up(link_t *l) {
  transport_t *t = l->t;
  if (l->state == LINK_CLOSED) return; /* a handler closed it meanwhile */
  if (l->handshaking) {
    l->handshaking = 0;
    t->handshaking--;
  }
  admission_leave(l);
  l->state = LINK_UP;
  l->was_up = 1;
  if (!is_test(l)) uv_timer_stop(&l->timer);
  unsigned char d2a[FRAME_KEY], a2d[FRAME_KEY];
  hs_session_keys(t->key, &l->hello, &l->challenge, d2a, a2d);
  memcpy(l->send_seal.key, l->dialer ? d2a : a2d, FRAME_KEY);
  memcpy(l->recv_seal.key, l->dialer ? a2d : d2a, FRAME_KEY);
  l->send_seal.seq = l->recv_seal.seq = 0;
  sodium_memzero(d2a, sizeof d2a);
  sodium_memzero(a2d, sizeof a2d);
  log_debug("link", "%s is up (%s)", peer_label(l), l->dialer ? "dialed" : "accepted");
  if (t->ev.on_up) {
    transport_peer_t peer;
    peer_of_link(l, &peer);
    t->ev.on_up(t->ud, l, &peer);
  }
  if (l->state == LINK_UP && l->out.len) mark_dirty(l);
}

/* Asks the events' owner whether to take an authenticated connection (it
 * refuses duplicates); returns 1, or 0 with reason filled in. */
static int decide(link_t *l, char *reason, size_t cap) {
  transport_t *t = l->t;
  if (t->ev.decide == NULL) return 1;
  transport_peer_t peer;
  peer_of_link(l, &peer);
  snprintf(reason, cap, "refused");
  return t->ev.decide(t->ud, l, &peer, reason, cap);
}

static void handshake_timeout(uv_timer_t *timer);

static void handshake_step(link_t *l, const char *body, size_t len) {
  transport_t *t = l->t;
  hs_msg_t m;
  char err[256];
  int rc = hs_parse(body, len, &m, err, sizeof err);
  if (rc != 0) {
    protocol_error(l, rc, "handshake failed: %s", err);
    return;
  }
  if (m.type == HS_REFUSE) {
    char why[300];
    snprintf(why, sizeof why, "refused by the peer: %s", m.reason);
    int quiet = strcmp(m.reason, "duplicate") == 0;
    log_write(quiet ? LOG_DEBUG : failure_level(l, LOG_WARN), "link",
              "%s refused the connection: %s", peer_label(l), m.reason);
    link_close(l, quiet ? "duplicate" : why);
    return;
  }
  int step = l->hs_step;
  unsigned char mac[HS_MAC];
  char reason[256];
  switch (step) {
    case HS_WAIT_HELLO:
      if (m.type != HS_HELLO) break;
      l->hello = m;
      if (m.version != HS_VERSION) {
        snprintf(reason, sizeof reason, "protocol version %u, but this node speaks %u", m.version,
                 HS_VERSION);
        refuse(l, LOG_WARN, reason);
        return;
      }
      if (strcmp(m.cluster, t->cfg.cluster) != 0) {
        snprintf(reason, sizeof reason, "cluster '%.80s', but this node is in cluster '%.80s'",
                 m.cluster, t->cfg.cluster);
        refuse(l, LOG_WARN, reason);
        return;
      }
      if (m.incarnation == t->cfg.incarnation) {
        /* This node's own hello, played back to it. */
        refuse(l, LOG_WARN, "the peer claims this node's own incarnation");
        return;
      }
      fill_identity(t, &l->challenge, HS_CHALLENGE);
      hs_mac(t->key, 'A', &l->hello, &l->challenge, l->challenge.mac);
      l->challenge.has_mac = 1;
      hs_send(l, &l->challenge);
      l->hs_step = HS_WAIT_PROOF;
      if (l->admitted) {
        /* The hello came: what is left of the whole handshake's time. */
        l->stage_at = uv_now(&t->host->loop);
        uint64_t spent = l->stage_at - l->accepted_at;
        l->overdue = 0;
        uv_timer_start(&l->timer, handshake_timeout,
                       spent < t->cfg.handshake_ms ? t->cfg.handshake_ms - spent : 0, 0);
      }
      return;
    case HS_WAIT_CHALLENGE:
      if (m.type != HS_CHALLENGE) break;
      l->challenge = m;
      if (m.version != HS_VERSION || strcmp(m.cluster, t->cfg.cluster) != 0) {
        refuse(l, LOG_WARN, "the peer answered with another protocol version or cluster");
        return;
      }
      if (m.incarnation == t->cfg.incarnation ||
          sodium_memcmp(m.nonce, l->hello.nonce, HS_NONCE) == 0) {
        /* A challenge this node's own listener made, reflected back. */
        refuse(l, LOG_WARN, "the peer answered with this node's own identity");
        return;
      }
      hs_mac(t->key, 'A', &l->hello, &l->challenge, mac);
      if (!hs_mac_equal(mac, m.mac)) {
        refuse_auth(l);
        return;
      }
      {
        hs_msg_t proof;
        memset(&proof, 0, sizeof proof);
        proof.type = HS_PROOF;
        proof.version = HS_VERSION;
        hs_mac(t->key, 'D', &l->hello, &l->challenge, proof.mac);
        proof.has_mac = 1;
        hs_send(l, &proof);
      }
      l->hs_step = HS_WAIT_WELCOME;
      return;
    case HS_WAIT_PROOF:
      if (m.type != HS_PROOF) break;
      hs_mac(t->key, 'D', &l->hello, &l->challenge, mac);
      if (!hs_mac_equal(mac, m.mac)) {
        refuse_auth(l);
        return;
      }
      if (!decide(l, reason, sizeof reason)) {
        refuse(l, strcmp(reason, "duplicate") == 0 ? LOG_DEBUG : LOG_WARN, reason);
        return;
      }
      if (l->state == LINK_CLOSED) return; /* the decision handler closed it */
      {
        hs_msg_t welcome;
        memset(&welcome, 0, sizeof welcome);
        welcome.type = HS_WELCOME;
        welcome.version = HS_VERSION;
        hs_send(l, &welcome);
      }
      went_up(l);
      return;
    case HS_WAIT_WELCOME:
      if (m.type != HS_WELCOME) break;
      went_up(l);
      return;
    default:
      break;
  }
  protocol_error(l, ATOLL_EMALFORMED, "handshake failed: unexpected message (type %s)",
                 m.type == HS_HELLO       ? "hello"
                 : m.type == HS_CHALLENGE ? "challenge"
                 : m.type == HS_PROOF     ? "proof"
                                          : "welcome");
}

static void handshake_timeout(uv_timer_t *timer) {
  link_t *l = timer->data;
  if (l->admitted) {
    /* One poll late: a node that was busy reads what is waiting in the
     * socket (the message may be there) before it gives up on the peer. */
    if (!l->overdue) {
      l->overdue = 1;
      uv_timer_start(&l->timer, handshake_timeout, 1, 0);
    } else {
      shed(l, SHED_TIMED_OUT);
    }
    return;
  }
  if (l->state == LINK_CONNECTING || l->state == LINK_HANDSHAKE) {
    close_logged(l, LOG_WARN, "%s", "handshake timed out");
  }
}

/* ---- reading ---------------------------------------------------------- */

/* Makes room for one more envelope in the batch; 0 or ATOLL_ENOMEM. */
static int batch_room(transport_t *t, size_t n) {
  if (n < t->batch_cap) return 0;
  size_t cap = t->batch_cap ? t->batch_cap * 2 : 256;
  envelope_t *b = realloc(t->batch, cap * sizeof *b);
  if (b == NULL) return ATOLL_ENOMEM;
  t->batch = b;
  t->batch_cap = cap;
  return 0;
}

/* Parses every whole frame read so far; the envelopes go to the events' owner
 * in one batch, then a frame that broke the protocol (if one did) closes the
 * link. Not reentrant: the owner must not run the loop from inside an event. */
static void process_input(link_t *l) {
  transport_t *t = l->t;
  size_t n = 0;
  int err = 0; /* why parsing stopped early, if the peer broke the protocol */
  char why[320];
  while (l->state == LINK_HANDSHAKE || l->state == LINK_UP) {
    const char *body;
    size_t blen;
    size_t max = l->state == LINK_UP ? t->cfg.max_frame : FRAME_HANDSHAKE_MAX;
    int rc = frame_next(l->in.data + l->in_off, l->in.len - l->in_off, max, &body, &blen);
    if (rc == 0) break;
    if (rc < 0) {
      const unsigned char *u = (const unsigned char *)l->in.data + l->in_off;
      snprintf(why, sizeof why, "a frame of %lu bytes is over the limit of %zu",
               ((unsigned long)u[0] << 24) | ((unsigned long)u[1] << 16) |
                   ((unsigned long)u[2] << 8) | (unsigned long)u[3],
               max);
      err = ATOLL_ETOOBIG;
      break;
    }
    l->in_off += FRAME_HEADER + blen;
    l->counters.bytes_in += FRAME_HEADER + blen;
    if (l->state == LINK_UP && frame_open(body, blen, &l->recv_seal, &body, &blen) != 0) {
      snprintf(why, sizeof why, "%s",
               "a frame failed authentication (tampered, replayed, or not from the peer)");
      err = ATOLL_EAUTH;
      break;
    }
    if (l->state == LINK_HANDSHAKE) {
      /* Envelopes that follow in the same read belong to the batch only
       * once the link is up. */
      if (n > 0) break;
      handshake_step(l, body, blen);
      continue;
    }
    if (batch_room(t, n) != 0) {
      if (n == 0) {
        snprintf(why, sizeof why, "%s", "out of memory for the frames read");
        err = ATOLL_ENOMEM;
        break;
      }
      /* What fits goes now, the rest in another batch. */
      if (t->ev.on_frames) t->ev.on_frames(t->ud, l, t->batch, n);
      n = 0;
      if (l->state != LINK_UP) break;
    }
    rc = envelope_parse(body, blen, t->cfg.max_depth, &t->batch[n], why, sizeof why);
    if (rc) {
      err = rc;
      break;
    }
    l->counters.frames_in++;
    n++;
  }
  if (n > 0 && t->ev.on_frames) t->ev.on_frames(t->ud, l, t->batch, n);
  if (err) {
    t->dropped_frames++;
    if (l->state != LINK_CLOSED) protocol_error(l, err, "closing the link: %s", why);
  }
  /* Keep the unparsed tail at the front of the buffer. */
  if (l->in_off == l->in.len) {
    l->in.len = l->in_off = 0;
  } else if (l->in_off > 0) {
    buf_consume(&l->in, l->in_off);
    l->in_off = 0;
  }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)suggested;
  link_t *l = h->data;
  /* Before the peer has proved itself, a little memory: a handshake frame. */
  size_t want = l->state == LINK_UP ? TRANSPORT_READ_CHUNK : FRAME_HEADER + FRAME_HANDSHAKE_MAX;
  if (buf_reserve(&l->in, want) != 0) {
    b->base = NULL;
    b->len = 0;
    return;
  }
  b->base = l->in.data + l->in.len;
  b->len = l->in.cap - l->in.len;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  link_t *l = s->data;
  if (nread == 0 || l->state == LINK_CLOSED) return;
  if (nread < 0) {
    /* Ordinary ends are the cluster module's to report, with the peer's name. */
    if (nread == UV_EOF)
      close_logged(l, LOG_DEBUG, "%s", "connection closed by the peer");
    else
      close_logged(l, LOG_DEBUG, "connection lost: %s", uv_strerror((int)nread));
    return;
  }
  l->in.len += (size_t)nread;
  process_input(l);
  if (l->state != LINK_CLOSED) buf_shrink(&l->in, TRANSPORT_READ_CHUNK * 4);
}

/* The first step of the handshake: a dialer says hello, an acceptor waits for one. */
static void start_handshake(link_t *l) {
  if (l->dialer) {
    fill_identity(l->t, &l->hello, HS_HELLO);
    hs_send(l, &l->hello);
    l->hs_step = HS_WAIT_CHALLENGE;
  } else {
    l->hs_step = HS_WAIT_HELLO;
  }
}

static void start_link(link_t *l) {
  uv_tcp_nodelay(&l->tcp, 1); /* writes are already coalesced per loop turn */
  uv_tcp_keepalive(&l->tcp, 1, 30);
  /* An accepted connection must send its hello first, and soon. */
  uv_timer_start(&l->timer, handshake_timeout,
                 l->admitted ? hello_ms(l->t) : l->t->cfg.handshake_ms, 0);
  int rc = uv_read_start((uv_stream_t *)&l->tcp, alloc_cb, read_cb);
  if (rc) {
    close_logged(l, LOG_WARN, "cannot read: %s", uv_strerror(rc));
    return;
  }
  start_handshake(l);
}

/* ---- accepting and dialing ------------------------------------------- */

/* The peer's "ip:port" ("[ip]:port" for IPv6) and source key (see source_of). */
static void peer_of(uv_tcp_t *tcp, char *name, size_t cap, unsigned char source[16]) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int len = sizeof ss;
  int rc = uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len);
  char ip[64] = "?";
  int port = 0;
  if (rc == 0 && ss.ss_family == AF_INET) {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  } else if (rc == 0 && ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  snprintf(name, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
  source_of(&ss, source);
}

/* Takes every connection (see admission): the limits are enforced after
 * this turn's input is read. */
static void on_connection(uv_stream_t *server, int status) {
  transport_t *t = server->data;
  if (status < 0) {
    not_accepted(t, status);
    return;
  }
  link_t *l = link_new(t, 0);
  if (l == NULL) return;
  int rc = uv_accept(server, (uv_stream_t *)&l->tcp);
  if (rc != 0) {
    not_accepted(t, rc);
    link_close(l, "accept failed");
    return;
  }
  peer_of(&l->tcp, l->target, sizeof l->target, l->source);
  admission_enter(l);
  start_link(l);
}

int transport_listen(transport_t *t, const char *host, int *port) {
  if (t->listening) return UV_EALREADY;
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(host, *port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(host, *port, (struct sockaddr_in6 *)&ss);
  if (rc) return rc;
  uv_tcp_init(&t->host->loop, &t->listener);
  t->listener.data = t;
  t->listening = 1;
  rc = uv_tcp_bind(&t->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&t->listener, 511, on_connection);
  if (rc) {
    uv_close((uv_handle_t *)&t->listener, NULL);
    t->listening = 0;
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&t->listener, (struct sockaddr *)&bound, &len);
  *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                            : ((struct sockaddr_in *)&bound)->sin_port);
  return 0;
}

static void connect_cb(uv_connect_t *req, int status) {
  link_t *l = req->data;
  if (l->state == LINK_CLOSED) return;
  if (status < 0) {
    close_logged(l, LOG_DEBUG, "cannot connect: %s", uv_strerror(status));
    return;
  }
  l->state = LINK_HANDSHAKE;
  start_link(l);
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  link_t *l = req->data;
  l->open_handles--;
  if (l->state == LINK_CLOSED || uv_is_closing((uv_handle_t *)&l->tcp)) {
    if (res) uv_freeaddrinfo(res);
    if (l->open_handles == 0) finalize(l);
    return;
  }
  if (status < 0 || res == NULL) {
    close_logged(l, LOG_INFO, "cannot resolve the address: %s", uv_strerror(status));
    if (res) uv_freeaddrinfo(res);
    return;
  }
  l->connect.data = l;
  int rc = uv_tcp_connect(&l->connect, &l->tcp, res->ai_addr, connect_cb);
  uv_freeaddrinfo(res);
  if (rc) close_logged(l, LOG_INFO, "cannot connect: %s", uv_strerror(rc));
}

int transport_dial(transport_t *t, const char *address, link_t **out) {
  char host[256];
  const char *colon = strrchr(address, ':');
  if (colon == NULL || colon == address || (size_t)(colon - address) >= sizeof host) {
    return UV_EINVAL;
  }
  const char *hs = address, *he = colon;
  if (*hs == '[' && he[-1] == ']') { /* [v6]:port */
    hs++;
    he--;
  }
  memcpy(host, hs, (size_t)(he - hs));
  host[he - hs] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || port <= 0 || port > 65535) return UV_EINVAL;

  link_t *l = link_new(t, 1);
  if (l == NULL) return UV_ENOMEM;
  snprintf(l->target, sizeof l->target, "%s", address);
  uv_timer_start(&l->timer, handshake_timeout, t->cfg.handshake_ms, 0);
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss);
  if (rc == 0) {
    l->connect.data = l;
    rc = uv_tcp_connect(&l->connect, &l->tcp, (struct sockaddr *)&ss, connect_cb);
  } else {
    /* A name: resolve it on the thread pool. */
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%ld", port);
    l->resolve.data = l;
    l->open_handles++;
    rc = uv_getaddrinfo(&t->host->loop, &l->resolve, resolved_cb, host, portstr, &hints);
    if (rc) l->open_handles--;
  }
  if (rc) {
    close_logged(l, LOG_INFO, "cannot connect: %s", uv_strerror(rc));
  }
  *out = l;
  return 0;
}

/* At shutdown, before handles close: what was queued this turn (an answer
 * made just before the node stopped) goes to the sockets that take it. */
static void transport_shutdown(host_handle_t *owner) {
  flush_cb(&((transport_t *)owner)->flusher);
}

static void default_nonce(void *ctx, unsigned char *out, size_t n) {
  (void)ctx;
  randombytes_buf(out, n);
}

/* Defaults shared by a real transport and a test one. */
static transport_t *transport_alloc(const transport_events_t *events, void *ud,
                                    double incarnation) {
  transport_t *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->ev = *events;
  t->ud = ud;
  snprintf(t->cfg.cluster, sizeof t->cfg.cluster, "atoll");
  t->cfg.incarnation = incarnation;
  t->cfg.max_frame = FRAME_DEFAULT_MAX;
  t->cfg.max_queue = TRANSPORT_DEFAULT_MAX_QUEUE;
  t->cfg.max_depth = CODEC_DEFAULT_MAX_DEPTH;
  t->cfg.handshake_ms = TRANSPORT_HANDSHAKE_MS;
  t->cfg.report_ms = TRANSPORT_REPORT_MS;
  t->nonce = default_nonce;
  t->max_handshakes = TRANSPORT_MAX_HANDSHAKES;
  return t;
}

int transport_new(transport_t **out, host_t *h, const transport_events_t *events, void *ud) {
  transport_t *t = transport_alloc(events, ud, h->incarnation);
  if (t == NULL) return UV_ENOMEM;
  t->base.on_close = NULL; /* the listener and flusher live in t itself */
  t->base.on_shutdown = transport_shutdown;
  t->host = h;
  /* Each connection in the handshake holds a descriptor: leave three
   * quarters of them to everything else (a soft limit of 1024 gives 256). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur / 4 < (rlim_t)t->max_handshakes) {
    t->max_handshakes = rl.rlim_cur / 4 > TRANSPORT_HANDSHAKES_PER_IP ? (int)(rl.rlim_cur / 4)
                                                                      : TRANSPORT_HANDSHAKES_PER_IP;
  }
  uv_prepare_init(&h->loop, &t->flusher);
  t->flusher.data = t;
  uv_prepare_start(&t->flusher, flush_cb);
  uv_unref((uv_handle_t *)&t->flusher);
  /* Admission's handles never keep the loop alive: the links do. */
  uv_check_init(&h->loop, &t->pruner);
  uv_timer_init(&h->loop, &t->prune_timer);
  uv_timer_init(&h->loop, &t->reporter);
  t->pruner.data = t->prune_timer.data = t->reporter.data = t;
  uv_unref((uv_handle_t *)&t->pruner);
  uv_unref((uv_handle_t *)&t->prune_timer);
  uv_unref((uv_handle_t *)&t->reporter);
  *out = t;
  return 0;
}

void transport_free(transport_t *t) {
  if (t == NULL) return;
  sodium_memzero(t->key, sizeof t->key);
  free(t->batch);
  free(t);
}

void transport_get_config(const transport_t *t, transport_config_t *out) {
  *out = t->cfg;
}

void transport_set_config(transport_t *t, const transport_config_t *cfg) {
  t->cfg = *cfg;
}

void transport_set_secret(transport_t *t, const char *secret, size_t len) {
  hs_key(secret, len, t->key);
  t->has_key = 1;
}

int transport_has_secret(const transport_t *t) {
  return t->has_key;
}

int transport_listening(const transport_t *t) {
  return t->listening;
}

void transport_stop_listening(transport_t *t) {
  if (t->listening && !uv_is_closing((uv_handle_t *)&t->listener)) {
    uv_close((uv_handle_t *)&t->listener, NULL);
  }
}

/* ---- links without sockets, for the fuzz target ----------------------- */

transport_t *transport_test_new(const transport_config_t *cfg, const char *secret, size_t slen,
                                const transport_events_t *events, void *ud,
                                void (*nonce)(void *ctx, unsigned char *out, size_t n),
                                void *nonce_ctx) {
  transport_t *t = transport_alloc(events, ud, cfg->incarnation);
  if (t == NULL) return NULL;
  t->cfg = *cfg;
  transport_set_secret(t, secret, slen);
  if (nonce) {
    t->nonce = nonce;
    t->nonce_ctx = nonce_ctx;
  }
  return t;
}

void transport_test_free(transport_t *t) {
  transport_free(t);
}

link_t *transport_test_link(transport_t *t, int dialer) {
  link_t *l = link_new(t, dialer);
  if (l == NULL) return NULL;
  l->state = LINK_HANDSHAKE;
  snprintf(l->target, sizeof l->target, "%s", "test");
  start_handshake(l);
  return l;
}

void transport_test_feed(link_t *l, const char *data, size_t len) {
  if (l->state == LINK_CLOSED || buf_append(&l->in, data, len) != 0) return;
  process_input(l);
  if (l->state != LINK_CLOSED) buf_shrink(&l->in, TRANSPORT_READ_CHUNK * 4);
}

const char *transport_test_output(link_t *l, size_t *len) {
  buf_t tmp = l->inflight;
  l->inflight = l->sent;
  l->sent = tmp;
  l->sent.len = 0;
  *len = l->inflight.len;
  return l->inflight.data;
}

void transport_test_free_link(link_t *l) {
  close_link(l, "the test is over", 0);
  finalize(l);
}
