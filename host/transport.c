/* TCP links between nodes: handshake, framing, batching into Lua, write coalescing, bounded queues.
 */
#include "transport.h"

#include <lauxlib.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "frame.h"
#include "log.h"
#include "vm.h"

/* Handshake progress: which message the link waits for. */
enum { HS_WAIT_HELLO = 1, HS_WAIT_CHALLENGE, HS_WAIT_PROOF, HS_WAIT_WELCOME };

/* Inbox slots per envelope handed to Lua: kind, rid, a, b, method, payload. */
#define INBOX_SLOTS 6

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

/* ---- lifecycle -------------------------------------------------------- */

static const char *peer_label(const link_t *l) {
  if (l->state >= LINK_HANDSHAKE && (l->dialer ? l->challenge.address[0] : l->hello.address[0])) {
    return l->dialer ? l->challenge.address : l->hello.address;
  }
  return l->target;
}

static void push_link(lua_State *L, const link_t *l) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->self_ref);
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

static void finalize(link_t *l) {
  transport_t *t = l->t;
  lua_State *L = t->L;
  if (l->handshaking) t->handshaking--;
  /* While the host shuts down, Lua hears nothing more: its loop is closing. */
  if (t->on_down_ref != LUA_NOREF && !t->host->closing) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->on_down_ref);
    push_link(L, l);
    lua_pushstring(L, l->reason[0] ? l->reason : "closed");
    lua_pushboolean(L, l->was_up);
    vm_pcall(L, 3, 0, "link down handler");
  }
  luaL_unref(L, LUA_REGISTRYINDEX, l->self_ref);
  if (l->slot) *l->slot = NULL;
  buf_close(&l->in);
  buf_close(&l->out);
  buf_close(&l->inflight);
  free(l);
}

static void on_handle_closed(uv_handle_t *h) {
  link_t *l = h->data;
  /* Closed by the host's shutdown walk, without link_close. */
  if (l->state != LINK_CLOSED) {
    l->state = LINK_CLOSED;
    undirty(l);
  }
  if (--l->open_handles == 0) finalize(l);
}

void link_close(link_t *l, const char *reason) {
  if (l->state == LINK_CLOSED) return;
  if (reason && !l->reason[0]) snprintf(l->reason, sizeof l->reason, "%s", reason);
  l->state = LINK_CLOSED;
  undirty(l);
  uv_handle_t *tcp = (uv_handle_t *)&l->tcp, *timer = (uv_handle_t *)&l->timer;
  if (!uv_is_closing(tcp)) uv_close(tcp, on_handle_closed);
  if (!uv_is_closing(timer)) uv_close(timer, on_handle_closed);
}

static void close_logged(link_t *l, log_level_t level, const char *fmt, const char *arg) {
  char why[256];
  snprintf(why, sizeof why, fmt, arg);
  log_write(level, "link", "%s: %s", peer_label(l), why);
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
  uv_tcp_init(&t->host->loop, &l->tcp);
  uv_timer_init(&t->host->loop, &l->timer);
  l->tcp.data = l->timer.data = l;
  l->open_handles = 2;
  buf_init(&l->in);
  buf_init(&l->out);
  buf_init(&l->inflight);
  /* The Lua userdata that stands for the link, kept alive by the link. */
  lua_State *L = t->L;
  link_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = l;
  l->slot = ud;
  luaL_getmetatable(L, "atoll.link");
  lua_setmetatable(L, -2);
  l->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return l;
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
  buf_t tmp = l->inflight;
  l->inflight = l->out;
  l->out = tmp;
  l->out.len = 0;
  uv_buf_t b = uv_buf_init(l->inflight.data, (unsigned)l->inflight.len);
  int n = uv_try_write((uv_stream_t *)&l->tcp, &b, 1);
  if (n == (int)l->inflight.len) {
    l->bytes_out += n;
    l->inflight.len = 0;
    buf_shrink(&l->inflight, 1 << 20);
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    close_logged(l, LOG_WARN, "write failed: %s", uv_strerror(n));
    return;
  }
  if (n > 0) {
    l->bytes_out += n;
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
  if (size > l->t->max_frame) return ATOLL_ETOOBIG;
  if (link_queued(l) + size > l->t->max_queue) return UV_ENOBUFS;
  return 0;
}

static int queued(link_t *l, int rc) {
  if (rc == 0) {
    l->frames_out++;
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
    hs_write_t *w = malloc(sizeof *w + frame.len);
    if (w) {
      memcpy(w->data, frame.data, frame.len);
      w->len = frame.len;
      uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
      if (uv_write(&w->req, (uv_stream_t *)&l->tcp, &b, 1, hs_write_cb) != 0) free(w);
    }
  }
  buf_close(&body);
  buf_close(&frame);
}

static void fill_identity(transport_t *t, hs_msg_t *m, hs_type_t type) {
  memset(m, 0, sizeof *m);
  m->type = type;
  m->version = HS_VERSION;
  snprintf(m->cluster, sizeof m->cluster, "%s", t->cluster);
  snprintf(m->name, sizeof m->name, "%s", t->name);
  snprintf(m->address, sizeof m->address, "%s", t->address);
  m->incarnation = t->incarnation;
  randombytes_buf(m->nonce, HS_NONCE);
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
  log_write(level, "link", "refused %s %s: %s",
            l->dialer ? "the connection to" : "a connection from", peer_label(l), reason);
  link_close(l, reason);
}

static void push_peer(lua_State *L, const link_t *l) {
  const hs_msg_t *p = l->dialer ? &l->challenge : &l->hello;
  lua_createtable(L, 0, 6);
  lua_pushstring(L, p->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, p->address);
  lua_setfield(L, -2, "address");
  lua_pushnumber(L, p->incarnation);
  lua_setfield(L, -2, "incarnation");
  lua_pushboolean(L, l->dialer);
  lua_setfield(L, -2, "dialer");
  lua_pushstring(L, l->target);
  lua_setfield(L, -2, "target");
}

static void went_up(link_t *l) {
  transport_t *t = l->t;
  if (l->state == LINK_CLOSED) return; /* a handler closed it meanwhile */
  if (l->handshaking) {
    l->handshaking = 0;
    t->handshaking--;
  }
  l->state = LINK_UP;
  l->was_up = 1;
  uv_timer_stop(&l->timer);
  unsigned char d2a[FRAME_KEY], a2d[FRAME_KEY];
  hs_session_keys(t->key, &l->hello, &l->challenge, d2a, a2d);
  memcpy(l->send_seal.key, l->dialer ? d2a : a2d, FRAME_KEY);
  memcpy(l->recv_seal.key, l->dialer ? a2d : d2a, FRAME_KEY);
  l->send_seal.seq = l->recv_seal.seq = 0;
  sodium_memzero(d2a, sizeof d2a);
  sodium_memzero(a2d, sizeof a2d);
  log_debug("link", "%s is up (%s)", peer_label(l), l->dialer ? "dialed" : "accepted");
  if (t->on_up_ref != LUA_NOREF) {
    lua_State *L = t->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->on_up_ref);
    push_link(L, l);
    push_peer(L, l);
    vm_pcall(L, 2, 0, "link up handler");
  }
  if (l->state == LINK_UP && l->out.len) mark_dirty(l);
}

/* Asks Lua whether to take an authenticated connection (it refuses
 * duplicates); returns 1, or 0 with reason filled in. */
static int decide(link_t *l, char *reason, size_t cap) {
  transport_t *t = l->t;
  if (t->decide_ref == LUA_NOREF) return 1;
  lua_State *L = t->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->decide_ref);
  push_link(L, l);
  push_peer(L, l);
  if (vm_pcall(L, 2, 2, "link decision") != 0) {
    snprintf(reason, cap, "internal error");
    return 0;
  }
  int ok = lua_toboolean(L, -2);
  if (!ok) snprintf(reason, cap, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "refused");
  lua_pop(L, 2);
  return ok;
}

static void handshake_step(link_t *l, const char *body, size_t len) {
  transport_t *t = l->t;
  hs_msg_t m;
  char err[256];
  if (hs_parse(body, len, &m, err, sizeof err) != 0) {
    close_logged(l, LOG_WARN, "handshake failed: %s", err);
    return;
  }
  if (m.type == HS_REFUSE) {
    char why[300];
    snprintf(why, sizeof why, "refused by the peer: %s", m.reason);
    int quiet = strcmp(m.reason, "duplicate") == 0;
    log_write(quiet ? LOG_DEBUG : LOG_WARN, "link", "%s refused the connection: %s", peer_label(l),
              m.reason);
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
      if (strcmp(m.cluster, t->cluster) != 0) {
        snprintf(reason, sizeof reason, "cluster '%.80s', but this node is in cluster '%.80s'",
                 m.cluster, t->cluster);
        refuse(l, LOG_WARN, reason);
        return;
      }
      if (m.incarnation == t->incarnation) {
        /* This node's own hello, played back to it. */
        refuse(l, LOG_WARN, "the peer claims this node's own incarnation");
        return;
      }
      fill_identity(t, &l->challenge, HS_CHALLENGE);
      hs_mac(t->key, 'A', &l->hello, &l->challenge, l->challenge.mac);
      l->challenge.has_mac = 1;
      hs_send(l, &l->challenge);
      l->hs_step = HS_WAIT_PROOF;
      return;
    case HS_WAIT_CHALLENGE:
      if (m.type != HS_CHALLENGE) break;
      l->challenge = m;
      if (m.version != HS_VERSION || strcmp(m.cluster, t->cluster) != 0) {
        refuse(l, LOG_WARN, "the peer answered with another protocol version or cluster");
        return;
      }
      if (m.incarnation == t->incarnation ||
          sodium_memcmp(m.nonce, l->hello.nonce, HS_NONCE) == 0) {
        /* A challenge this node's own listener made, reflected back. */
        refuse(l, LOG_WARN, "the peer answered with this node's own identity");
        return;
      }
      hs_mac(t->key, 'A', &l->hello, &l->challenge, mac);
      if (!hs_mac_equal(mac, m.mac)) {
        refuse(l, LOG_WARN, "authentication failed: the peer does not know the cluster secret");
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
        refuse(l, LOG_WARN, "authentication failed: the peer does not know the cluster secret");
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
  close_logged(l, LOG_WARN, "handshake failed: unexpected message (type %s)",
               m.type == HS_HELLO       ? "hello"
               : m.type == HS_CHALLENGE ? "challenge"
               : m.type == HS_PROOF     ? "proof"
                                        : "welcome");
}

static void handshake_timeout(uv_timer_t *timer) {
  link_t *l = timer->data;
  if (l->state == LINK_CONNECTING || l->state == LINK_HANDSHAKE) {
    close_logged(l, LOG_WARN, "%s", "handshake timed out");
  }
}

/* ---- reading ---------------------------------------------------------- */

/* Pushes one envelope into the inbox (table at stack top) at slot n. */
static int push_envelope(link_t *l, const char *body, size_t len, int n) {
  lua_State *L = l->t->L;
  envelope_t e;
  char err[300];
  int rc = envelope_parse(body, len, l->t->max_depth, &e, err, sizeof err);
  if (rc) {
    l->t->dropped_frames++;
    close_logged(l, LOG_WARN, "closing the link: %s", err);
    return rc;
  }
  int base = n * INBOX_SLOTS;
  lua_pushinteger(L, e.kind);
  lua_rawseti(L, -2, base + 1);
  lua_pushnumber(L, e.rid);
  lua_rawseti(L, -2, base + 2);
  switch (e.kind) {
    case ENV_REPLY:
      lua_pushboolean(L, e.ok);
      lua_rawseti(L, -2, base + 3);
      lua_pushnil(L);
      lua_rawseti(L, -2, base + 4);
      lua_pushnil(L);
      lua_rawseti(L, -2, base + 5);
      break;
    case ENV_CALL_NAME:
    case ENV_SEND_NAME:
      lua_pushlstring(L, e.name, e.name_len);
      lua_rawseti(L, -2, base + 3);
      lua_pushnil(L);
      lua_rawseti(L, -2, base + 4);
      lua_pushlstring(L, e.method, e.method_len);
      lua_rawseti(L, -2, base + 5);
      break;
    default:
      lua_pushnumber(L, e.incarnation);
      lua_rawseti(L, -2, base + 3);
      lua_pushnumber(L, e.id);
      lua_rawseti(L, -2, base + 4);
      lua_pushlstring(L, e.method, e.method_len);
      lua_rawseti(L, -2, base + 5);
      break;
  }
  void *p = lua_newuserdata(L, e.payload_len);
  memcpy(p, e.payload, e.payload_len);
  lua_rawseti(L, -2, base + 6);
  l->frames_in++;
  return 0;
}

static void deliver_batch(link_t *l, int n) {
  transport_t *t = l->t;
  lua_State *L = t->L;
  /* [inbox] */
  if (n > 0 && t->on_frames_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->on_frames_ref);
    push_link(L, l);
    lua_pushinteger(L, n);
    l->in_callback = 1;
    vm_pcall(L, 2, 0, "link frames handler");
    l->in_callback = 0;
  }
}

/* Parses every whole frame read so far; envelopes go to Lua in one batch. */
static void process_input(link_t *l) {
  transport_t *t = l->t;
  lua_State *L = t->L;
  int n = 0;
  int have_inbox = 0;
  while (l->state == LINK_HANDSHAKE || l->state == LINK_UP) {
    const char *body;
    size_t blen;
    size_t max = l->state == LINK_UP ? t->max_frame : FRAME_HANDSHAKE_MAX;
    int rc = frame_next(l->in.data + l->in_off, l->in.len - l->in_off, max, &body, &blen);
    if (rc == 0) break;
    if (rc < 0) {
      const unsigned char *u = (const unsigned char *)l->in.data + l->in_off;
      char why[160];
      snprintf(why, sizeof why, "a frame of %lu bytes is over the limit of %zu",
               ((unsigned long)u[0] << 24) | ((unsigned long)u[1] << 16) |
                   ((unsigned long)u[2] << 8) | (unsigned long)u[3],
               max);
      t->dropped_frames++;
      close_logged(l, LOG_WARN, "closing the link: %s", why);
      break;
    }
    l->in_off += FRAME_HEADER + blen;
    l->bytes_in += FRAME_HEADER + blen;
    if (l->state == LINK_UP && frame_open(body, blen, &l->recv_seal, &body, &blen) != 0) {
      t->dropped_frames++;
      close_logged(l, LOG_WARN, "closing the link: %s",
                   "a frame failed authentication (tampered, replayed, or not from the peer)");
      break;
    }
    if (l->state == LINK_HANDSHAKE) {
      /* Envelopes that follow in the same read belong to the batch only
       * once the link is up. */
      if (n > 0) break;
      handshake_step(l, body, blen);
      continue;
    }
    if (!have_inbox) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->inbox_ref); /* [inbox] */
      have_inbox = 1;
    }
    if (push_envelope(l, body, blen, n) != 0) break;
    n++;
  }
  if (have_inbox) {
    deliver_batch(l, n);
    lua_pop(L, 1);
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

static void start_link(link_t *l) {
  uv_tcp_nodelay(&l->tcp, 1); /* writes are already coalesced per loop turn */
  uv_tcp_keepalive(&l->tcp, 1, 30);
  uv_timer_start(&l->timer, handshake_timeout, l->t->handshake_ms, 0);
  int rc = uv_read_start((uv_stream_t *)&l->tcp, alloc_cb, read_cb);
  if (rc) {
    close_logged(l, LOG_WARN, "cannot read: %s", uv_strerror(rc));
    return;
  }
  if (l->dialer) {
    fill_identity(l->t, &l->hello, HS_HELLO);
    hs_send(l, &l->hello);
    l->hs_step = HS_WAIT_CHALLENGE;
  } else {
    l->hs_step = HS_WAIT_HELLO;
  }
}

/* ---- accepting and dialing ------------------------------------------- */

static void socket_name(uv_tcp_t *tcp, int peer, char *out, size_t cap) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int len = sizeof ss;
  int rc = peer ? uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len)
                : uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len);
  char ip[64] = "?";
  int port = 0;
  if (rc == 0 && ss.ss_family == AF_INET) {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  } else if (rc == 0 && ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  snprintf(out, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
}

static void on_connection(uv_stream_t *server, int status) {
  transport_t *t = server->data;
  if (status < 0) {
    log_warn("link", "accept failed: %s", uv_strerror(status));
    return;
  }
  link_t *l = link_new(t, 0);
  if (l == NULL) return;
  if (uv_accept(server, (uv_stream_t *)&l->tcp) != 0) {
    link_close(l, "accept failed");
    return;
  }
  if (t->handshaking >= TRANSPORT_MAX_HANDSHAKES) {
    /* Too many connections that have not proved themselves yet. */
    t->refused++;
    link_close(l, "too many handshakes under way");
    return;
  }
  socket_name(&l->tcp, 1, l->target, sizeof l->target);
  start_link(l);
}

int transport_listen(transport_t *t, const char *host, int *port) {
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
  uv_timer_start(&l->timer, handshake_timeout, t->handshake_ms, 0);
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

void transport_init(transport_t *t, host_t *h) {
  memset(t, 0, sizeof *t);
  t->base.on_close = NULL; /* the listener and flusher live in t itself */
  t->host = h;
  t->L = h->L;
  snprintf(t->cluster, sizeof t->cluster, "atoll");
  t->incarnation = h->incarnation;
  t->max_frame = FRAME_DEFAULT_MAX;
  t->max_queue = TRANSPORT_DEFAULT_MAX_QUEUE;
  t->max_depth = CODEC_DEFAULT_MAX_DEPTH;
  t->handshake_ms = TRANSPORT_HANDSHAKE_MS;
  t->on_up_ref = t->on_frames_ref = t->on_down_ref = t->decide_ref = LUA_NOREF;
  t->inbox_ref = LUA_NOREF;
  uv_prepare_init(&h->loop, &t->flusher);
  t->flusher.data = t;
  uv_prepare_start(&t->flusher, flush_cb);
  uv_unref((uv_handle_t *)&t->flusher);
}
