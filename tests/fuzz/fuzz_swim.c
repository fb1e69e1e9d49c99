/* libFuzzer target for the SWIM core's decoders: packets (swim_receive) and
 * full states (swim_merge), as a node reads them from the network after the
 * packet's MAC checked out (so: from a member that knows the secret but may
 * be buggy, or a different version).
 *
 * The first byte picks what the rest is (its two low bits): a packet, a
 * state, or a run of length-prefixed packets with the clock moving between
 * them; whether the node goes up afterwards (bit 2); whether it downs the
 * first other member it knows for good before the input (bit 3; in a run,
 * after the first packet); and whether it keeps unreachable members, with
 * a tombstone time of a second (bit 4). Besides crashes and sanitizer
 * reports, it checks that whatever the core sends in reply fits in a
 * packet, that every member it keeps can be found by its address, that a
 * member downed stays downed whatever comes after, that the node says it
 * was downed exactly when its own slot does, that a node going up numbers
 * its run above every member it knows, and that a member dead at the end
 * of the input is still held dead a minute later when unreachable members
 * are kept. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/swim.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t env_random(void *ctx) {
  (void)ctx;
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)rng;
}

static void env_send(void *ctx, const char *addr, const char *data, size_t len) {
  (void)ctx;
  (void)data;
  if (len > SWIM_PACKET_MAX || addr[0] == '\0') {
    fprintf(stderr, "sent %zu bytes to '%s'\n", len, addr);
    abort();
  }
}

/* Runs seen downed so far in this input: they must stay so. */
#define DOWNED_MAX 64
static struct {
  char addr[SWIM_ADDR_MAX];
  uint64_t uid;
} downed[DOWNED_MAX];
static int ndowned;

static void check(const swim_t *s) {
  size_t n;
  const swim_member_t *m = swim_members(s, &n);
  for (size_t i = 0; i < n; i++) {
    if (!m[i].addr[0]) continue;
    if (swim_find(s, m[i].addr) != &m[i]) {
      fprintf(stderr, "member %s is not found by its address\n", m[i].addr);
      abort();
    }
  }
  if (swim_is_downed(s) != (swim_self(s)->state == SWIM_DOWNED)) {
    fprintf(stderr, "downed %d, but its own slot is %s\n", swim_is_downed(s),
            swim_state_name(swim_self(s)->state));
    abort();
  }
  for (int k = 0; k < ndowned; k++) {
    const swim_member_t *d = swim_find(s, downed[k].addr);
    if (d && d->uid == downed[k].uid && d->state != SWIM_DOWNED) {
      fprintf(stderr, "%s was downed, and is %s again\n", d->addr, swim_state_name(d->state));
      abort();
    }
  }
  for (size_t i = 0; i < n && ndowned < DOWNED_MAX; i++) {
    if (!m[i].addr[0] || m[i].state != SWIM_DOWNED) continue;
    int known = 0;
    for (int k = 0; k < ndowned; k++) {
      known |= downed[k].uid == m[i].uid && strcmp(downed[k].addr, m[i].addr) == 0;
    }
    if (known) continue;
    snprintf(downed[ndowned].addr, sizeof downed[ndowned].addr, "%s", m[i].addr);
    downed[ndowned++].uid = m[i].uid;
  }
}

/* Downs the first other member, if any. */
static void down_one(swim_t *s, uint64_t now) {
  size_t n;
  const swim_member_t *m = swim_members(s, &n);
  for (size_t i = 1; i < n; i++) {
    if (!m[i].addr[0]) continue;
    if (swim_down_final(s, now, m[i].addr) != (m[i].state == SWIM_LEFT ? -1 : 0)) {
      fprintf(stderr, "swim_down_final refused %s (%s)\n", m[i].addr, swim_state_name(m[i].state));
      abort();
    }
    return;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int flags = data[0] >> 2;
  swim_config_t cfg;
  swim_default_config(&cfg);
  if (flags & 4) {
    cfg.keep_unreachable = 1;
    cfg.tombstone_ms = 1000;
  }
  swim_env_t env = {.send = env_send, .random = env_random};
  uint64_t now = 1000;
  swim_t *s = swim_create(&cfg, &env, "10.0.0.1:7000", "fuzz", 12345, now);
  if (s == NULL) abort();
  const char *p = (const char *)data + 1;
  size_t len = size - 1;
  ndowned = 0;
  switch ((data[0] & 3) % 3) {
    case 0:
      if (flags & 2) down_one(s, now);
      swim_receive(s, now, p, len);
      break;
    case 1:
      if (flags & 2) down_one(s, now);
      swim_merge(s, now, p, len);
      break;
    default:
      /* [u16 length, packet]... with 100 ms of clock between packets */
      while (len >= 2) {
        size_t n = ((size_t)(unsigned char)p[0] << 8) | (unsigned char)p[1];
        p += 2;
        len -= 2;
        if (n > len) n = len;
        swim_receive(s, now, p, n);
        p += n;
        len -= n;
        now += 100;
        swim_tick(s, now);
        check(s);
        if ((flags & 2) && ndowned == 0) down_one(s, now);
      }
      break;
  }
  if (flags & 1) {
    swim_set_phase(s, now, SWIM_UP);
    uint32_t mine = swim_self(s)->upno;
    size_t n;
    const swim_member_t *m = swim_members(s, &n);
    for (size_t i = 1; i < n; i++) {
      if (m[i].addr[0] && m[i].upno >= mine && mine != 0xffffffffu) {
        fprintf(stderr, "went up with upno %u, but %s has %u\n", mine, m[i].addr, m[i].upno);
        abort();
      }
    }
  }
  /* The dead, to be found again after the last ticks when they are kept. */
  size_t n;
  const swim_member_t *m = swim_members(s, &n);
  uint64_t dead_uid[32];
  char dead_addr[32][SWIM_ADDR_MAX];
  int ndead = 0;
  for (size_t i = 1; i < n && ndead < 32; i++) {
    if (!m[i].addr[0] || m[i].state != SWIM_DEAD) continue;
    dead_uid[ndead] = m[i].uid;
    snprintf(dead_addr[ndead++], SWIM_ADDR_MAX, "%s", m[i].addr);
  }
  now = swim_tick(s, now + 1);
  swim_tick(s, now + 60000);
  check(s);
  for (int k = 0; k < ndead && cfg.keep_unreachable; k++) {
    const swim_member_t *d = swim_find(s, dead_addr[k]);
    if (d == NULL || d->uid != dead_uid[k] || d->state != SWIM_DEAD) {
      fprintf(stderr, "%s was dead, and is %s a minute later\n", dead_addr[k],
              d ? swim_state_name(d->state) : "forgotten");
      abort();
    }
  }
  swim_destroy(s);
  return 0;
}
