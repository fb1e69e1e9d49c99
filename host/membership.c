/* Drives the SWIM core over UDP: one non-blocking socket on the node's listening port, a timer for
 * the core's deadlines, packet MACs, and host names resolved on the loop.
 *
 * The socket is read with recvfrom rather than through uv_udp, so that the
 * timer callback can take every packet that is waiting before the core
 * judges anything: a node that was paused (SIGSTOP, a VM stall, a long GC)
 * must see the pings and acks that queued up meanwhile before it decides
 * that its own probe failed. */
#include "membership.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "handshake.h"
#include "log.h"

#define DRAIN_MAX 1024 /* packets read per wake-up before the loop gets a turn */

struct resolved_s {
  char host[SWIM_ADDR_MAX];
  struct sockaddr_storage sa; /* port 0; the member's port is set per packet */
  int ok;                     /* sa holds an address (maybe stale: see expires) */
  int pending;                /* a lookup is under way */
  uint64_t expires;
  uv_getaddrinfo_t req;
  membership_t *m; /* NULL once the membership is gone */
};

/* ---- keys and seals ------------------------------------------------------- */

void membership_key(const char *cluster, const char *secret, size_t secret_len,
                    unsigned char key[crypto_shorthash_siphashx24_KEYBYTES]) {
  unsigned char base[HS_KEY];
  hs_key(secret, secret_len, base);
  crypto_generichash_state st;
  crypto_generichash_init(&st, base, sizeof base, crypto_shorthash_siphashx24_KEYBYTES);
  static const char label[] = "atoll swim packets v1\n";
  crypto_generichash_update(&st, (const unsigned char *)label, sizeof label - 1);
  crypto_generichash_update(&st, (const unsigned char *)cluster, strlen(cluster));
  crypto_generichash_final(&st, key, crypto_shorthash_siphashx24_KEYBYTES);
  sodium_memzero(base, sizeof base);
}

void membership_seal(const unsigned char key[crypto_shorthash_siphashx24_KEYBYTES],
                     const char *body, size_t len, char *out) {
  if (out != body) memmove(out, body, len);
  crypto_shorthash_siphashx24((unsigned char *)out + len, (const unsigned char *)out, len, key);
}

/* ---- addresses ----------------------------------------------------------------- */

int membership_split(const char *addr, char *host, size_t cap, int *port) {
  const char *colon = strrchr(addr, ':');
  if (colon == NULL || colon == addr || colon[1] == '\0') return -1;
  const char *h = addr;
  size_t hlen = (size_t)(colon - addr);
  if (h[0] == '[') {
    if (hlen < 2 || h[hlen - 1] != ']') return -1;
    h++;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= cap) return -1;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end != '\0' || p <= 0 || p > 65535) return -1;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (int)p;
  return 0;
}

static void set_port(struct sockaddr_storage *sa, int port) {
  if (sa->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

static socklen_t sa_len(const struct sockaddr_storage *sa) {
  return sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  resolved_t *r = req->data;
  r->pending = 0;
  if (r->m == NULL) { /* the membership is gone */
    if (res) uv_freeaddrinfo(res);
    free(r);
    return;
  }
  uint64_t now = uv_now(req->loop);
  if (status == 0 && res) {
    memcpy(&r->sa, res->ai_addr, res->ai_addrlen);
    r->ok = 1;
    r->expires = now + MEMBERSHIP_DNS_TTL_MS;
  } else if (status != UV_ECANCELED) {
    log_debug("membership", "cannot resolve %s: %s", r->host, uv_strerror(status));
    r->expires = now + 1000; /* try again in a second */
  }
  if (res) uv_freeaddrinfo(res);
}

/* The socket address of a member: IP literals at once, host names from the
 * cache (a stale answer while a new lookup runs). 0, or -1 if not known. */
static int member_sockaddr(membership_t *m, const char *addr, struct sockaddr_storage *sa) {
  char host[SWIM_ADDR_MAX];
  int port;
  if (membership_split(addr, host, sizeof host, &port)) return -1;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)sa) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)sa) == 0) return 0;
  uint64_t now = uv_now(&m->host->loop);
  resolved_t *r = NULL;
  for (size_t i = 0; i < m->nnames && r == NULL; i++) {
    if (strcmp(m->names[i]->host, host) == 0) r = m->names[i];
  }
  if (r == NULL) {
    resolved_t **grown = realloc(m->names, (m->nnames + 1) * sizeof *grown);
    if (grown == NULL) return -1;
    m->names = grown;
    r = calloc(1, sizeof *r);
    if (r == NULL) return -1;
    m->names[m->nnames++] = r;
    snprintf(r->host, sizeof r->host, "%s", host);
    r->m = m;
  }
  if (!r->pending && now >= r->expires && !m->stopped) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = m->family;
    hints.ai_socktype = SOCK_DGRAM;
    r->req.data = r;
    if (uv_getaddrinfo(&m->host->loop, &r->req, resolved_cb, r->host, NULL, &hints) == 0) {
      r->pending = 1;
    } else {
      r->expires = now + 1000;
    }
  }
  if (!r->ok) return -1;
  memcpy(sa, &r->sa, sizeof *sa);
  set_port(sa, port);
  return 0;
}

/* ---- what the core asks of the node ---------------------------------------- */

static int send_wire(membership_t *m, const char *addr, size_t len) {
  struct sockaddr_storage sa;
  if (member_sockaddr(m, addr, &sa)) {
    m->unresolved++;
    return UV_EAI_NONAME;
  }
  ssize_t n;
  do n = sendto(m->fd, m->wire, len, MSG_DONTWAIT, (struct sockaddr *)&sa, sa_len(&sa));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    /* A full socket buffer or an unreachable route: a lost packet, which
     * the protocol is built to survive. */
    m->send_failed++;
    return -errno;
  }
  return 0;
}

static void env_send(void *ctx, const char *addr, const char *data, size_t len) {
  membership_t *m = ctx;
  if (m->fd < 0 || len > SWIM_PACKET_MAX) return;
  membership_seal(m->key, data, len, m->wire);
  send_wire(m, addr, len + MEMBERSHIP_TAG);
}

static void env_push_pull(void *ctx, const char *addr) {
  membership_t *m = ctx;
  for (size_t i = 0; i < m->npulls; i++) {
    if (strcmp(m->pulls[i], addr) == 0) return; /* already asked */
  }
  if (m->npulls == m->pulls_cap) {
    size_t cap = m->pulls_cap ? m->pulls_cap * 2 : 8;
    void *p = realloc(m->pulls, cap * sizeof *m->pulls);
    if (p == NULL) return;
    m->pulls = p;
    m->pulls_cap = cap;
  }
  snprintf(m->pulls[m->npulls++], SWIM_ADDR_MAX, "%s", addr);
}

static void env_changed(void *ctx, const swim_member_t *mem, swim_event_t event,
                        swim_state_t old_state, swim_phase_t old_phase) {
  membership_t *m = ctx;
  if (m->nevents == m->events_cap) {
    size_t cap = m->events_cap ? m->events_cap * 2 : 16;
    void *p = realloc(m->events, cap * sizeof *m->events);
    if (p == NULL) {
      log_error("membership", "out of memory: a membership event was lost");
      return;
    }
    m->events = p;
    m->events_cap = cap;
  }
  membership_event_t *e = &m->events[m->nevents++];
  e->member = *mem;
  e->event = event;
  e->old_state = old_state;
  e->old_phase = old_phase;
}

static uint32_t env_random(void *ctx) {
  (void)ctx;
  return randombytes_random();
}

/* ---- the loop ---------------------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

/* Hands queued events and push-pull requests to the binding, until none is
 * left (its handler may cause more); never from inside itself. */
static void deliver(membership_t *m) {
  if (m->delivering || m->on_news == NULL || m->host->closing) return;
  m->delivering = 1;
  while (m->nevents > 0 || m->npulls > 0) m->on_news(m);
  m->delivering = 0;
}

static void arm(membership_t *m, uint64_t next) {
  if (m->stopped) return;
  uint64_t now = uv_now(&m->host->loop);
  m->due = next;
  uv_timer_start(&m->timer, timer_cb, next > now ? next - now : 0, 0);
}

void membership_kick(membership_t *m) {
  if (m->swim == NULL) return;
  uint64_t now = uv_now(&m->host->loop);
  arm(m, swim_tick(m->swim, now));
  deliver(m);
}

/* Takes every packet waiting on the socket. */
static void drain(membership_t *m) {
  if (m->fd < 0) return;
  uint64_t now = uv_now(&m->host->loop);
  for (int i = 0; i < DRAIN_MAX; i++) {
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(m->fd, m->wire, sizeof m->wire, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&from, &flen);
    if (n < 0) {
      if (errno == EINTR) continue;
      break; /* EAGAIN: nothing more; anything else: try again on the next wake-up */
    }
    if ((size_t)n <= MEMBERSHIP_TAG || (size_t)n > sizeof m->wire) {
      m->too_short++;
      continue;
    }
    size_t body = (size_t)n - MEMBERSHIP_TAG;
    unsigned char tag[MEMBERSHIP_TAG];
    crypto_shorthash_siphashx24(tag, (const unsigned char *)m->wire, body, m->key);
    if (crypto_verify_16(tag, (const unsigned char *)m->wire + body) != 0) {
      m->auth_failed++;
      continue;
    }
    /* A packet that does not decode is counted by the core (stats.dropped). */
    swim_receive(m->swim, now, m->wire, body);
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  membership_t *m = p->data;
  (void)events;
  if (status < 0) {
    log_warn("membership", "the UDP socket failed: %s", uv_strerror(status));
    return;
  }
  drain(m);
  membership_kick(m);
}

static void timer_cb(uv_timer_t *t) {
  membership_t *m = t->data;
  drain(m); /* what arrived while this node was not running comes first */
  membership_kick(m);
}

/* ---- starting and stopping ------------------------------------------------- */

void membership_init(membership_t *m, host_t *h) {
  memset(m, 0, sizeof *m);
  m->host = h;
  m->fd = -1;
}

int membership_start(membership_t *m, host_t *h, const swim_config_t *cfg, const char *bind_host,
                     int port, const char *address, const char *name, uint64_t uid,
                     const char *cluster, const char *secret, size_t secret_len) {
  m->host = h;
  m->cfg = *cfg;
  membership_key(cluster, secret, secret_len, m->key);

  struct sockaddr_storage sa;
  int rc = uv_ip4_addr(bind_host, port, (struct sockaddr_in *)&sa);
  if (rc) rc = uv_ip6_addr(bind_host, port, (struct sockaddr_in6 *)&sa);
  if (rc) return rc;
  m->family = sa.ss_family;
  m->fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (m->fd < 0) return -errno;
  if (bind(m->fd, (struct sockaddr *)&sa, sa_len(&sa)) != 0) {
    rc = -errno;
    close(m->fd);
    m->fd = -1;
    return rc;
  }
  swim_env_t env = {
      .ctx = m,
      .send = env_send,
      .push_pull = env_push_pull,
      .changed = env_changed,
      .random = env_random,
  };
  m->swim = swim_create(&m->cfg, &env, address, name, uid, uv_now(&h->loop));
  if (m->swim == NULL) {
    close(m->fd);
    m->fd = -1;
    return UV_EINVAL;
  }
  uv_poll_init(&h->loop, &m->poll, m->fd);
  uv_timer_init(&h->loop, &m->timer);
  m->poll.data = m;
  m->timer.data = m;
  m->handles = 1;
  uv_poll_start(&m->poll, UV_READABLE, poll_cb);
  arm(m, uv_now(&h->loop));
  return 0;
}

static void handle_closed(uv_handle_t *h) {
  (void)h;
}

void membership_stop(membership_t *m) {
  if (m->stopped) return;
  m->stopped = 1;
  if (m->handles) {
    if (!uv_is_closing((uv_handle_t *)&m->poll)) uv_close((uv_handle_t *)&m->poll, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&m->timer)) uv_close((uv_handle_t *)&m->timer, handle_closed);
  }
  for (size_t i = 0; i < m->nnames; i++) {
    if (m->names[i]->pending) uv_cancel((uv_req_t *)&m->names[i]->req);
  }
}

void membership_free(membership_t *m) {
  if (m->fd >= 0) close(m->fd);
  m->fd = -1;
  swim_destroy(m->swim);
  m->swim = NULL;
  for (size_t i = 0; i < m->nnames; i++) {
    /* A lookup still under way frees its entry when it ends. */
    if (m->names[i]->pending)
      m->names[i]->m = NULL;
    else
      free(m->names[i]);
  }
  free(m->names);
  free(m->events);
  free(m->pulls);
  m->names = NULL;
  m->events = NULL;
  m->pulls = NULL;
  m->nnames = m->nevents = m->npulls = 0;
}

int membership_send_raw(membership_t *m, const char *addr, const char *data, size_t len, int seal) {
  if (m->fd < 0) return UV_EBADF;
  size_t total = len + (seal ? MEMBERSHIP_TAG : 0);
  if (total > sizeof m->wire) return UV_E2BIG;
  memcpy(m->wire, data, len);
  if (seal) membership_seal(m->key, m->wire, len, m->wire);
  return send_wire(m, addr, total);
}
