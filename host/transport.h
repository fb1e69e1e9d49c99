/* TCP links between nodes: handshake, framing, write coalescing, bounded queues. It knows no
 * Lua: what it reads and what happens to links reaches the events' owner (bindings/transport.c)
 * through transport_events_t, which is also how the fuzz target drives it without sockets. */
#ifndef ATOLL_TRANSPORT_H
#define ATOLL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

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

/* Who is at the other end of a link, once the handshake has authenticated it. The strings live
 * as long as the link. */
typedef struct transport_peer_s {
  const char *name;
  const char *address; /* where it listens; "" for a node that does not (a client) */
  double incarnation;
  int dialer;         /* this node dialed */
  const char *target; /* what was dialed, or the peer's socket address */
} transport_peer_t;

/* What the transport reports. Each callback gets the owner's `ud`. A callback may close the link
 * (link_close) or queue frames on it; the link stays valid until on_down has returned. */
typedef struct transport_events_s {
  /* An authenticated peer whose proof this node checked (it accepted the connection): return 1
   * to take it, or 0 with a reason (at most cap bytes, sent to the peer) to refuse it. NULL:
   * every peer is taken. */
  int (*decide)(void *ud, link_t *l, const transport_peer_t *peer, char *reason, size_t cap);
  /* The handshake is over: the link carries envelopes from now on. */
  void (*on_up)(void *ud, link_t *l, const transport_peer_t *peer);
  /* The envelopes of every whole frame one read brought, in order (n >= 1); each passed
   * authentication and envelope_parse. They point into the link's read buffer: valid during
   * the call only. */
  void (*on_frames)(void *ud, link_t *l, const envelope_t *env, size_t n);
  /* The peer broke the protocol (code: ATOLL_ETOOBIG for a frame over the limit, ATOLL_EAUTH
   * for one that failed authentication, ATOLL_EMALFORMED for a handshake message or envelope
   * that does not parse, ATOLL_ETYPE for an unexpected handshake message): why, already
   * logged. The link closes after it; frames read before the bad one were delivered. NULL:
   * not reported. */
  void (*on_error)(void *ud, link_t *l, int code, const char *why);
  /* The link is gone (also while the host shuts down: loop.h's closing tells): why, and whether
   * it was ever up. The last event for l, which is freed when it returns. */
  void (*on_down)(void *ud, link_t *l, const char *reason, int was_up);
} transport_events_t;

/* What a transport says about itself and checks its peers against. */
typedef struct transport_config_s {
  char cluster[HS_MAX_TEXT]; /* "atoll" by default */
  char name[HS_MAX_TEXT];
  char address[HS_MAX_TEXT]; /* where this node listens, as peers should dial it; "" if not */
  double incarnation;        /* the host's, by default */
  size_t max_frame;          /* FRAME_DEFAULT_MAX */
  size_t max_queue;          /* bytes queued per link: TRANSPORT_DEFAULT_MAX_QUEUE */
  unsigned max_depth;        /* of a payload's nesting: CODEC_DEFAULT_MAX_DEPTH */
  uint64_t handshake_ms;     /* TRANSPORT_HANDSHAKE_MS */
  uint64_t report_ms;        /* between summaries of shed connections: TRANSPORT_REPORT_MS */
} transport_config_t;

/* Creates the node's transport on h's loop, reporting to events (copied) with ud. Its handles
 * close with the host's (host_close); free it with transport_free after that. 0 or UV_ENOMEM. */
int transport_new(transport_t **out, host_t *h, const transport_events_t *events, void *ud);
void transport_free(transport_t *t);

void transport_get_config(const transport_t *t, transport_config_t *out);
/* Takes effect for links whose handshake starts after it. */
void transport_set_config(transport_t *t, const transport_config_t *cfg);
/* The cluster secret, of which only a derived key is kept. */
void transport_set_secret(transport_t *t, const char *secret, size_t len);
int transport_has_secret(const transport_t *t);

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

/* Binds and listens; *port may be 0 (the chosen port is written back). 0, UV_EALREADY when it
 * listens already, or a libuv error. */
int transport_listen(transport_t *t, const char *host, int *port);
int transport_listening(const transport_t *t);
void transport_stop_listening(transport_t *t);

/* Starts dialing "host:port" (a name is resolved on the thread pool); the link is handed back
 * at once and goes up later, or down. 0, UV_EINVAL (not HOST:PORT) or UV_ENOMEM. */
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

/* Closes the link; on_down follows once libuv has let go. */
void link_close(link_t *l, const char *reason);

link_state_t link_state(const link_t *l);
const char *link_state_name(link_state_t s);
/* What was dialed, or the peer's socket address. */
const char *link_target(const link_t *l);
int link_dialer(const link_t *l);
/* Bytes queued on the link, written or not. */
size_t link_queued(const link_t *l);
/* The transport's frame limit, as the link checks it. */
size_t link_max_frame(const link_t *l);

typedef struct link_counters_s {
  double frames_in, frames_out, bytes_in, bytes_out;
} link_counters_t;
void link_counters(const link_t *l, link_counters_t *out);

/* The events' owner's pointer for the link (NULL until set). */
void link_set_data(link_t *l, void *data);
void *link_data(const link_t *l);

/* Links without sockets, for the fuzz target: a transport without a loop (no listening, no
 * dialing, no deadlines, no admission), whose links take their input from transport_test_feed
 * and write what they send to a buffer the caller reads with transport_test_output. Nonces come
 * from `nonce` (the caller's, so that a run can be repeated), and links close only at
 * transport_test_free_link, which reports on_down. */
transport_t *transport_test_new(const transport_config_t *cfg, const char *secret, size_t slen,
                                const transport_events_t *events, void *ud,
                                void (*nonce)(void *ctx, unsigned char *out, size_t n),
                                void *nonce_ctx);
void transport_test_free(transport_t *t);
link_t *transport_test_link(transport_t *t, int dialer);
void transport_test_feed(link_t *l, const char *data, size_t len);
/* What the link has sent since the last call; *len bytes, valid until the next feed. */
const char *transport_test_output(link_t *l, size_t *len);
void transport_test_free_link(link_t *l);

#endif
