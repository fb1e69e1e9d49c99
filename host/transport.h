/* TCP links between nodes: handshake, framing, write coalescing, bounded queues. */
#ifndef ATOLL_TRANSPORT_H
#define ATOLL_TRANSPORT_H

#include <lua.h>
#include <uv.h>

#include "buf.h"
#include "frame.h"
#include "handshake.h"
#include "loop.h"

#define TRANSPORT_DEFAULT_MAX_QUEUE ((size_t)64 << 20)
#define TRANSPORT_HANDSHAKE_MS      5000 /* the whole handshake, either side */
#define TRANSPORT_READ_CHUNK        65536
/* Accepted connections that have not authenticated (see "admission" in transport.c). */
#define TRANSPORT_HELLO_MS          1000  /* the hello: a dialer sends it at once */
#define TRANSPORT_HANDSHAKES_PER_IP 16    /* from one address (an IPv6 /64), in each stage, */
#define TRANSPORT_HELLO_GRACE_MS    250   /* counting those in that stage this long; */
#define TRANSPORT_MAX_HANDSHAKES    1024  /* in all (fewer with few descriptors) */
#define TRANSPORT_REPORT_MS         10000 /* at most one summary of shed connections this often, */
#define TRANSPORT_REPORT_BURST      10    /* and this many failed handshakes in full */
#define TRANSPORT_FLUSH_FRAMES      32    /* within a turn, write after this many frames, */
#define TRANSPORT_FLUSH_FRAMES_MAX  4096  /* doubling up to this many, */
#define TRANSPORT_FLUSH_BYTES       (256 * 1024) /* or this many bytes */

typedef enum {
  LINK_CONNECTING, /* dialing */
  LINK_HANDSHAKE,  /* connected, proving identities */
  LINK_UP,         /* carrying envelopes */
  LINK_CLOSED,     /* closing or closed; waiting for libuv to let go */
} link_state_t;

typedef struct transport_s transport_t;
typedef struct link_s link_t;

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
  buf_t inflight; /* frames a uv_write owns */
  uv_write_t wreq;
  int writing;
  int unflushed; /* frames queued since the last write */
  int flush_at;  /* write early once this many are queued */
  unsigned turn; /* the loop turn flush_at belongs to */
  int dirty;
  link_t *next_dirty;
  int in_callback; /* frames are being handed to Lua */
  int self_ref;    /* keeps the Lua userdata alive until the link is gone */
  link_t **slot;   /* the userdata's pointer, cleared when the link is freed */
  double frames_in, frames_out, bytes_in, bytes_out;
  char reason[256]; /* why it closed */
};

struct transport_s {
  host_handle_t base; /* first: the listener's and flusher's handle->data */
  host_t *host;
  lua_State *L;
  char cluster[HS_MAX_TEXT];
  char name[HS_MAX_TEXT];
  char address[HS_MAX_TEXT];
  double incarnation;
  unsigned char key[HS_KEY];
  int has_key;
  size_t max_frame;
  size_t max_queue;
  unsigned max_depth;
  uint64_t handshake_ms;
  uint64_t report_ms; /* the report period (TRANSPORT_REPORT_MS) */
  uv_tcp_t listener;
  int listening;
  uv_prepare_t flusher;
  int flusher_on;
  link_t *dirty;
  int on_up_ref, on_frames_ref, on_down_ref, decide_ref, inbox_ref;
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

/* Sets defaults; the Lua binding fills in identity, secret and limits. */
void transport_init(transport_t *t, host_t *h);

/* Counters for stats: what was refused, shed and dropped, and how many
 * accepted connections are in the handshake now. */
typedef struct transport_stats_s {
  double refused;      /* handshakes refused: version, cluster, secret, duplicate */
  double evicted;      /* unauthenticated connections closed to make room */
  double timed_out;    /* unauthenticated connections past their deadline */
  double not_accepted; /* connections the listener could not take (out of descriptors) */
  double dropped_frames;
  int unauthenticated;     /* accepted connections in the handshake now */
  int max_unauthenticated; /* the most there may be (TRANSPORT_MAX_HANDSHAKES or fewer) */
} transport_stats_t;

void transport_stats(const transport_t *t, transport_stats_t *out);

/* Binds and listens; *port may be 0 (the chosen port is written back). */
int transport_listen(transport_t *t, const char *host, int *port);

/* Starts dialing "host:port"; the link queues frames until it is up. */
int transport_dial(transport_t *t, const char *address, link_t **out);

/* Queue a frame on a link that is up. Returns 0, ATOLL_ETOOBIG (over the
 * frame limit), ATOLL_ETYPE (a method or name the peer would refuse),
 * ATOLL_ERANGE (an id that is not an integer up to 2^53), UV_ENOBUFS (the
 * queue is full) or UV_ENOTCONN (the link is not up). */
int link_call(link_t *l, double rid, double inc, double id, const char *method, size_t mlen,
              const char *payload, size_t plen);
int link_send(link_t *l, double inc, double id, const char *method, size_t mlen,
              const char *payload, size_t plen);
int link_reply(link_t *l, double rid, int ok, const char *payload, size_t plen);
int link_call_name(link_t *l, double rid, const char *name, size_t nlen, const char *method,
                   size_t mlen, const char *payload, size_t plen);
int link_send_name(link_t *l, const char *name, size_t nlen, const char *method, size_t mlen,
                   const char *payload, size_t plen);

/* Queues bytes as they are, or a body sealed as a frame: tests use them to
 * send what a correct node never would. */
int link_write_raw(link_t *l, const char *bytes, size_t len);
int link_write_sealed(link_t *l, const char *body, size_t len);

/* Closes the link; Lua hears about it once libuv has let go. */
void link_close(link_t *l, const char *reason);

/* Bytes queued on the link, written or not. */
size_t link_queued(const link_t *l);

const char *link_state_name(link_state_t s);

#endif
