/* libFuzzer target for a link's input path (host/transport.c without sockets): the handshake,
 * then sealed frames, read in pieces of any size, batched, corrupted.
 *
 * The fuzzer plays the peer. Its input says which side it plays and how, and holds envelope
 * bodies (and raw bytes) to send; the target makes the handshake messages a correct peer would
 * (with the link's nonces, which repeat from run to run) and seals the bodies with the session
 * keys, so the frames authenticate unless the input says otherwise. The byte stream is then fed
 * to fresh links, whole, in small pieces and in larger ones, with and without one byte flipped,
 * and it checks that:
 * - the link delivers exactly the envelopes a correct node must: those sealed by the peer, in
 *   order, up to the first that is over the frame limit, does not parse, or follows raw bytes;
 * - nothing is delivered that failed authentication (a corrupted stream delivers a prefix of
 *   what the clean one does), and nothing after a frame that failed it;
 * - however the stream is cut into reads, the same envelopes arrive;
 * - envelopes read in one go arrive as one batch, on a link that is up;
 * - each link is reported down once.
 *
 * Input: flags, u16 position and a mask for the flipped byte, u16 split seed, then records
 * `u16 n | bytes`: n < 0x8000, an envelope body to seal; else n & 0x7fff raw bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/codec.h"
#include "../../host/error.h"
#include "../../host/log.h"
#include "../../host/transport.h"

enum {
  F_DIALER = 1,        /* the link dials, the fuzzer accepts */
  F_CORRUPT = 2,       /* flip one byte of the stream */
  F_REFUSE = 4,        /* the link's owner refuses the peer (when the link accepts) */
  F_CLOSE_ON_UP = 8,   /* the link's owner closes it as soon as it is up */
  F_WRONG_SECRET = 16, /* the peer proves a secret other than the node's */
  F_OTHER_CLUSTER = 32,
  F_REPLY = 64, /* the owner answers calls from inside on_frames */
};

#define MAX_FRAME 4096
#define SECRET    "fuzz secret"

typedef struct run_s {
  unsigned flags;
  buf_t got;       /* the envelopes delivered, serialized */
  int batches;     /* on_frames calls */
  int ups, downs;  /* on_up, on_down calls */
  int auth_failed; /* on_error said ATOLL_EAUTH */
} run_t;

static unsigned nonce_counter;

/* Nonces that repeat from run to run: each run restarts the counter. */
static void nonce(void *ctx, unsigned char *out, size_t n) {
  (void)ctx;
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)(nonce_counter * 31 + i);
  nonce_counter++;
}

static void put(buf_t *b, const void *p, size_t n) {
  if (buf_append(b, p, n) != 0) abort();
}

/* An envelope as bytes, every field, so that two lists compare with memcmp. */
static void serialize(buf_t *b, const envelope_t *e) {
  uint32_t n;
  put(b, &e->kind, sizeof e->kind);
  put(b, &e->rid, sizeof e->rid);
  put(b, &e->incarnation, sizeof e->incarnation);
  put(b, &e->id, sizeof e->id);
  put(b, &e->ok, sizeof e->ok);
  n = (uint32_t)e->name_len;
  put(b, &n, sizeof n);
  put(b, e->name ? e->name : "", e->name_len);
  n = (uint32_t)e->method_len;
  put(b, &n, sizeof n);
  put(b, e->method ? e->method : "", e->method_len);
  n = (uint32_t)e->payload_len;
  put(b, &n, sizeof n);
  put(b, e->payload, e->payload_len);
}

static int ev_decide(void *ud, link_t *l, const transport_peer_t *peer, char *reason, size_t cap) {
  run_t *r = ud;
  (void)l;
  if (peer->name == NULL || peer->address == NULL || peer->target == NULL) abort();
  if (!(r->flags & F_REFUSE)) return 1;
  snprintf(reason, cap, "the fuzzer says no");
  return 0;
}

static void ev_up(void *ud, link_t *l, const transport_peer_t *peer) {
  run_t *r = ud;
  (void)peer;
  r->ups++;
  if (link_state(l) != LINK_UP) abort();
  if (r->flags & F_CLOSE_ON_UP) link_close(l, "the fuzzer closes it");
}

static void ev_frames(void *ud, link_t *l, const envelope_t *env, size_t n) {
  run_t *r = ud;
  if (n == 0 || link_state(l) != LINK_UP) {
    fprintf(stderr, "frames delivered on a link that is not up, or none\n");
    abort();
  }
  if (r->auth_failed) {
    fprintf(stderr, "frames delivered after one failed authentication\n");
    abort();
  }
  r->batches++;
  for (size_t i = 0; i < n; i++) {
    serialize(&r->got, &env[i]);
    if ((r->flags & F_REPLY) && env[i].kind == ENV_CALL) {
      link_reply(l, env[i].rid, 1, env[i].payload, env[i].payload_len);
    }
  }
}

static void ev_error(void *ud, link_t *l, int code, const char *why) {
  run_t *r = ud;
  (void)l;
  if (why == NULL || code >= 0) abort();
  if (code == ATOLL_EAUTH) r->auth_failed = 1;
}

static void ev_down(void *ud, link_t *l, const char *reason, int was_up) {
  run_t *r = ud;
  (void)l;
  (void)was_up;
  if (reason == NULL) abort();
  r->downs++;
}

static const transport_events_t events = {ev_decide, ev_up, ev_frames, ev_error, ev_down};

static transport_t *new_transport(run_t *r) {
  transport_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.cluster, sizeof cfg.cluster, "atoll");
  snprintf(cfg.name, sizeof cfg.name, "fuzzed");
  snprintf(cfg.address, sizeof cfg.address, "10.0.0.1:7000");
  cfg.incarnation = 12345;
  cfg.max_frame = MAX_FRAME;
  cfg.max_queue = 1 << 20;
  cfg.max_depth = CODEC_DEFAULT_MAX_DEPTH;
  cfg.handshake_ms = TRANSPORT_HANDSHAKE_MS;
  cfg.report_ms = TRANSPORT_REPORT_MS;
  return transport_test_new(&cfg, SECRET, strlen(SECRET), &events, r, nonce, NULL);
}

static void hs_frame(buf_t *out, const hs_msg_t *m) {
  buf_t body;
  buf_init(&body);
  if (hs_encode(&body, m) != 0 || frame_write_raw(out, NULL, body.data, body.len) != 0) abort();
  buf_close(&body);
}

/* The first handshake message in what the link sent, or 0. */
static int first_message(link_t *l, hs_msg_t *m) {
  size_t len;
  const char *out = transport_test_output(l, &len);
  const char *body;
  size_t blen;
  char err[256];
  if (frame_next(out, len, FRAME_HANDSHAKE_MAX, &body, &blen) != 1) return 0;
  return hs_parse(body, blen, m, err, sizeof err) == 0;
}

static void peer_identity(hs_msg_t *m, hs_type_t type, unsigned flags) {
  memset(m, 0, sizeof *m);
  m->type = type;
  m->version = HS_VERSION;
  snprintf(m->cluster, sizeof m->cluster, "%s", flags & F_OTHER_CLUSTER ? "other" : "atoll");
  snprintf(m->name, sizeof m->name, "peer");
  snprintf(m->address, sizeof m->address, "10.0.0.2:7000");
  m->incarnation = 42;
  memset(m->nonce, 0x5a, HS_NONCE);
  m->has_nonce = 1;
}

/* Plays the peer's side of the handshake against a link, message by message, appending what it
 * sends to `stream`; returns 1 with the key the peer seals with, or 0 when the handshake went
 * wrong on the link's side (the rest of the stream then never authenticates). */
static int handshake(link_t *l, unsigned flags, buf_t *stream, unsigned char seal_key[16]) {
  unsigned char key[HS_KEY], d2a[16], a2d[16];
  const char *secret = flags & F_WRONG_SECRET ? "another secret" : SECRET;
  hs_key(secret, strlen(secret), key);
  hs_msg_t mine, theirs;
  size_t at = stream->len;
  if (flags & F_DIALER) {
    if (!first_message(l, &theirs) || theirs.type != HS_HELLO) abort(); /* its hello */
    peer_identity(&mine, HS_CHALLENGE, flags);
    hs_mac(key, 'A', &theirs, &mine, mine.mac);
    mine.has_mac = 1;
    hs_frame(stream, &mine);
    transport_test_feed(l, stream->data + at, stream->len - at);
    hs_msg_t proof;
    if (!first_message(l, &proof) || proof.type != HS_PROOF) return 0;
    hs_msg_t welcome;
    memset(&welcome, 0, sizeof welcome);
    welcome.type = HS_WELCOME;
    welcome.version = HS_VERSION;
    at = stream->len;
    hs_frame(stream, &welcome);
    transport_test_feed(l, stream->data + at, stream->len - at);
    hs_session_keys(key, &theirs, &mine, d2a, a2d);
    memcpy(seal_key, a2d, 16);
  } else {
    peer_identity(&mine, HS_HELLO, flags);
    hs_frame(stream, &mine);
    transport_test_feed(l, stream->data + at, stream->len - at);
    if (!first_message(l, &theirs) || theirs.type != HS_CHALLENGE) return 0;
    hs_msg_t proof;
    memset(&proof, 0, sizeof proof);
    proof.type = HS_PROOF;
    proof.version = HS_VERSION;
    hs_mac(key, 'D', &mine, &theirs, proof.mac);
    proof.has_mac = 1;
    at = stream->len;
    hs_frame(stream, &proof);
    transport_test_feed(l, stream->data + at, stream->len - at);
    hs_session_keys(key, &mine, &theirs, d2a, a2d);
    memcpy(seal_key, d2a, 16);
  }
  return link_state(l) == LINK_UP;
}

static uint32_t rng_next(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

/* Feeds `stream` to a fresh link in pieces of 1 to max_piece bytes (0: all at once). */
static void feed_run(run_t *r, unsigned flags, const buf_t *stream, uint32_t seed,
                     size_t max_piece) {
  memset(r, 0, sizeof *r);
  r->flags = flags;
  buf_init(&r->got);
  transport_t *t = new_transport(r);
  nonce_counter = 0;
  link_t *l = transport_test_link(t, flags & F_DIALER);
  size_t off = 0;
  uint32_t s = seed | 1;
  while (off < stream->len) {
    size_t n = max_piece ? 1 + rng_next(&s) % max_piece : stream->len;
    if (n > stream->len - off) n = stream->len - off;
    transport_test_feed(l, stream->data + off, n);
    off += n;
  }
  transport_test_free_link(l);
  transport_test_free(t);
  if (r->downs != 1) {
    fprintf(stderr, "a link was reported down %d times\n", r->downs);
    abort();
  }
}

/* Whether the first n bytes of a and b are equal (either may be NULL when n is 0). */
static int equal(const char *a, const char *b, size_t n) {
  return n == 0 || memcmp(a, b, n) == 0;
}

static void same(const run_t *a, const run_t *b, const char *what) {
  if (a->got.len != b->got.len || !equal(a->got.data, b->got.data, a->got.len)) {
    fprintf(stderr, "%s: different envelopes (%zu and %zu bytes of them)\n", what, a->got.len,
            b->got.len);
    abort();
  }
}

static void prefix(const run_t *a, const run_t *whole, const char *what) {
  if (a->got.len > whole->got.len || !equal(a->got.data, whole->got.data, a->got.len)) {
    fprintf(stderr, "%s: delivered an envelope the clean stream does not\n", what);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  log_set_level(LOG_OFF);
  if (size < 6) return 0;
  unsigned flags = data[0];
  size_t flip_at = (size_t)data[1] << 8 | data[2];
  unsigned char mask = data[3] ? data[3] : 0x80;
  uint32_t seed = (uint32_t)data[4] << 8 | data[5];
  data += 6;
  size -= 6;

  /* The peer's side, played against a first link: the stream, and what that link got. */
  run_t clean;
  memset(&clean, 0, sizeof clean);
  clean.flags = flags;
  buf_init(&clean.got);
  transport_t *t = new_transport(&clean);
  nonce_counter = 0;
  link_t *l = transport_test_link(t, flags & F_DIALER);
  buf_t stream, expected;
  buf_init(&stream);
  buf_init(&expected);
  unsigned char key[16];
  int up = handshake(l, flags, &stream, key);
  int authentic = up && !(flags & F_CLOSE_ON_UP); /* what follows reaches the owner */
  frame_seal_t seal;
  memcpy(seal.key, key, sizeof seal.key);
  seal.seq = 0;
  size_t records = stream.len;
  size_t off = 0;
  while (off + 2 <= size) {
    size_t n = (size_t)data[off] << 8 | data[off + 1];
    off += 2;
    int raw = n >= 0x8000;
    n &= 0x7fff;
    if (n > size - off) n = size - off;
    const char *body = (const char *)data + off;
    off += n;
    if (raw) {
      put(&stream, body, n);
      authentic = 0; /* nothing after raw bytes authenticates */
      continue;
    }
    if (frame_write_raw(&stream, &seal, body, n) != 0) abort();
    envelope_t e;
    char err[300];
    if (FRAME_SEALING + n > MAX_FRAME ||
        envelope_parse(body, n, CODEC_DEFAULT_MAX_DEPTH, &e, err, sizeof err) != 0) {
      authentic = 0; /* that frame closes the link */
    }
    if (authentic) serialize(&expected, &e);
  }
  transport_test_feed(l, stream.data + records, stream.len - records);
  transport_test_free_link(l);
  transport_test_free(t);
  if (clean.got.len != expected.len || !equal(clean.got.data, expected.data, expected.len)) {
    fprintf(stderr, "the link delivered other envelopes than the peer sealed (%zu / %zu bytes)\n",
            clean.got.len, expected.len);
    abort();
  }

  /* The same stream in one read (one batch), then in small and in larger pieces. */
  run_t whole, small, large;
  feed_run(&whole, flags, &stream, seed, 0);
  same(&whole, &clean, "read whole");
  if (whole.batches > 1) {
    fprintf(stderr, "one read made %d batches\n", whole.batches);
    abort();
  }
  feed_run(&small, flags, &stream, seed, 7);
  same(&small, &clean, "read in small pieces");
  feed_run(&large, flags, &stream, seed, 600);
  same(&large, &clean, "read in large pieces");
  buf_close(&whole.got);
  buf_close(&small.got);
  buf_close(&large.got);

  /* One byte flipped: never more than the clean stream gives, however it is read. */
  if ((flags & F_CORRUPT) && stream.len > 0) {
    stream.data[flip_at % stream.len] ^= (char)mask;
    run_t a, b;
    feed_run(&a, flags, &stream, seed, 0);
    feed_run(&b, flags, &stream, seed ^ 0x5555, 13);
    prefix(&a, &clean, "a corrupted stream");
    same(&a, &b, "a corrupted stream read in pieces");
    buf_close(&a.got);
    buf_close(&b.got);
  }
  buf_close(&clean.got);
  buf_close(&stream);
  buf_close(&expected);
  return 0;
}
