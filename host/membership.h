/* Drives the SWIM core (swim.c) over UDP on the node's loop: sockets, timers, packet MACs. */
#ifndef ATOLL_MEMBERSHIP_H
#define ATOLL_MEMBERSHIP_H

#include <sodium.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "buf.h"
#include "loop.h"
#include "swim.h"

/* A packet on the wire: the SWIM body, then a SipHash-128 tag over it with a
 * key derived from the cluster's name and secret. */
#define MEMBERSHIP_TAG        crypto_shorthash_siphashx24_BYTES
#define MEMBERSHIP_WIRE_MAX   (SWIM_PACKET_MAX + MEMBERSHIP_TAG) /* 1,400 bytes */
#define MEMBERSHIP_DNS_TTL_MS 30000 /* how long a resolved host name is trusted */

/* A change to hand to Lua: the member as it is now, and what it was. */
typedef struct membership_event_s {
  swim_member_t member;
  swim_event_t event;
  swim_state_t old_state;
  swim_phase_t old_phase;
} membership_event_t;

typedef struct resolved_s resolved_t;

typedef struct membership_s membership_t;
struct membership_s {
  host_handle_t base; /* first: the handles' data */
  host_t *host;
  swim_t *swim;
  swim_config_t cfg;
  int fd;
  int family; /* the socket's: host names resolve to addresses it can reach */
  uv_poll_t poll;
  uv_timer_t timer;
  int handles; /* poll and timer initialized */
  int stopped;
  uint64_t due; /* when the core wants to run next (loop ms) */
  unsigned char key[crypto_shorthash_siphashx24_KEYBYTES];
  char wire[MEMBERSHIP_WIRE_MAX];

  /* News for Lua, taken by the binding in on_news. */
  membership_event_t *events;
  size_t nevents, events_cap;
  char (*pulls)[SWIM_ADDR_MAX]; /* push-pull exchanges the core asked for */
  size_t npulls, pulls_cap;
  void (*on_news)(membership_t *m);
  void *data; /* the binding's */
  int delivering;

  resolved_t **names; /* host names of members, resolved */
  size_t nnames;

  /* What the core's stats do not count. */
  uint64_t auth_failed; /* packets whose tag did not match */
  uint64_t too_short;   /* packets too short to carry a tag */
  uint64_t send_failed; /* packets the socket would not take */
  uint64_t unresolved;  /* packets to members whose name is not resolved (yet) */
};

/* Zeroes a membership that is not started. */
void membership_init(membership_t *m, host_t *h);

/* Opens the UDP socket at bind_host:port and starts the core for the node at
 * `address` (the one it advertises). The key comes from the cluster's name
 * and secret. 0, or a libuv error (with the socket closed). */
int membership_start(membership_t *m, host_t *h, const swim_config_t *cfg, const char *bind_host,
                     int port, const char *address, const char *name, uint64_t uid,
                     const char *cluster, const char *secret, size_t secret_len);

/* Runs what is due and hands the news to on_news. Call after using the core
 * directly (join, leave, merge...). */
void membership_kick(membership_t *m);

/* Stops the socket and timers (the core stays, for a last look). */
void membership_stop(membership_t *m);

/* Frees everything; the handles must be closed (stop, or host shutdown). */
void membership_free(membership_t *m);

/* Sends a packet body to addr, sealed (or, for tests, with a broken tag). */
int membership_send_raw(membership_t *m, const char *addr, const char *data, size_t len, int seal);

/* The sealed packet for a body: writes body||tag into out (cap >= len + TAG). */
void membership_seal(const unsigned char key[crypto_shorthash_siphashx24_KEYBYTES],
                     const char *body, size_t len, char *out);

/* Derives the packet key from the cluster's name and secret. */
void membership_key(const char *cluster, const char *secret, size_t secret_len,
                    unsigned char key[crypto_shorthash_siphashx24_KEYBYTES]);

/* Parses "host:port" or "[v6]:port"; host gets the host part. 0 or -1. */
int membership_split(const char *addr, char *host, size_t cap, int *port);

#endif
