/* Link handshake messages (MessagePack maps) and their MACs (libsodium's keyed BLAKE2b). */
#include "handshake.h"

#include <mpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "mpk.h"

static const char *const type_names[] = {"", "hello", "challenge", "proof", "welcome", "refuse"};

/* ---- encoding --------------------------------------------------------- */

int hs_encode(buf_t *out, const hs_msg_t *m) {
  mpk_writer_t w;
  mpk_writer_init(&w, out);
  size_t start = out->len;
  unsigned fields = 2; /* t, v */
  int ids = m->type == HS_HELLO || m->type == HS_CHALLENGE;
  if (ids) fields += 5; /* cluster, name, addr, inc, nonce */
  if (m->has_mac) fields++;
  if (m->type == HS_REFUSE) fields++;
  mpk_map(&w, fields);
  mpk_cstr(&w, "t");
  mpk_cstr(&w, type_names[m->type]);
  mpk_cstr(&w, "v");
  mpk_uint(&w, m->version);
  if (ids) {
    mpk_cstr(&w, "cluster");
    mpk_cstr(&w, m->cluster);
    mpk_cstr(&w, "name");
    mpk_cstr(&w, m->name);
    mpk_cstr(&w, "addr");
    mpk_cstr(&w, m->address);
    mpk_cstr(&w, "inc");
    mpk_uint(&w, (uint64_t)m->incarnation);
    mpk_cstr(&w, "nonce");
    mpk_bin(&w, m->nonce, HS_NONCE);
  }
  if (m->has_mac) {
    mpk_cstr(&w, "mac");
    mpk_bin(&w, m->mac, HS_MAC);
  }
  if (m->type == HS_REFUSE) {
    mpk_cstr(&w, "reason");
    mpk_cstr(&w, m->reason);
  }
  if (w.rc) out->len = start;
  return w.rc;
}

/* ---- parsing ---------------------------------------------------------- */

/* A bin of exactly len bytes. */
static void blob(mpk_reader_t *r, unsigned char *dst, size_t len) {
  size_t n;
  const char *s = mpk_read_bin(r, len, &n);
  if (s && n != len && r->rc == 0) r->rc = ATOLL_EMALFORMED;
  if (r->rc == 0) memcpy(dst, s, len);
}

/* 1 if s holds no control character: what a peer says of itself ends up in
 * logs, where a newline could forge a line. */
static int printable(const char *s) {
  for (; *s; s++) {
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
  }
  return 1;
}

int hs_parse(const char *body, size_t len, hs_msg_t *m, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  mpk_reader_t r;
  mpk_reader_init(&r, body, len);
  const char *bad = "not a map";
  unsigned pairs = mpk_read_map(&r);
  if (r.rc || pairs > 32) goto fail;
  int has_type = 0, has_version = 0, has_ids = 0;
  char key[16]; /* outlives the loop: `bad` may point at it */
  for (unsigned i = 0; i < pairs; i++) {
    bad = "a bad key";
    mpk_read_cstr(&r, key, sizeof key);
    if (r.rc) goto fail;
    bad = key;
    if (strcmp(key, "t") == 0) {
      char name[16];
      mpk_read_cstr(&r, name, sizeof name);
      for (int k = HS_HELLO; k <= HS_REFUSE; k++) {
        if (r.rc == 0 && strcmp(name, type_names[k]) == 0) m->type = (hs_type_t)k;
      }
      has_type = m->type != 0;
    } else if (strcmp(key, "v") == 0) {
      m->version = (unsigned)mpk_read_uint(&r, 65535);
      has_version = 1;
    } else if (strcmp(key, "cluster") == 0) {
      mpk_read_cstr(&r, m->cluster, sizeof m->cluster);
      has_ids |= 1;
    } else if (strcmp(key, "name") == 0) {
      mpk_read_cstr(&r, m->name, sizeof m->name);
      has_ids |= 2;
    } else if (strcmp(key, "addr") == 0) {
      mpk_read_cstr(&r, m->address, sizeof m->address);
      has_ids |= 4;
    } else if (strcmp(key, "inc") == 0) {
      m->incarnation = (double)mpk_read_uint(&r, (uint64_t)CODEC_MAX_EXACT_INT);
      has_ids |= 8;
    } else if (strcmp(key, "nonce") == 0) {
      blob(&r, m->nonce, HS_NONCE);
      m->has_nonce = 1;
    } else if (strcmp(key, "mac") == 0) {
      blob(&r, m->mac, HS_MAC);
      m->has_mac = 1;
    } else if (strcmp(key, "reason") == 0) {
      mpk_read_cstr(&r, m->reason, sizeof m->reason);
    } else {
      mpk_skip(&r, 8); /* an unknown key's value, from a newer peer */
    }
    if (r.rc) goto fail;
  }
  bad = "a control character in a name, address, cluster or reason";
  if (!printable(m->cluster) || !printable(m->name) || !printable(m->address) ||
      !printable(m->reason)) {
    r.rc = ATOLL_EMALFORMED;
    goto fail;
  }
  bad = "trailing bytes";
  if (!mpk_done(&r)) {
    r.rc = ATOLL_ETRAILING;
    goto fail;
  }
  r.rc = ATOLL_EMALFORMED;
  bad = "no message type";
  if (!has_type || !has_version) goto fail;
  bad = "missing node identity";
  if ((m->type == HS_HELLO || m->type == HS_CHALLENGE) && (has_ids != 15 || !m->has_nonce)) {
    goto fail;
  }
  bad = "missing MAC";
  if ((m->type == HS_CHALLENGE || m->type == HS_PROOF) && !m->has_mac) goto fail;
  return 0;
fail:
  snprintf(err, errlen, "malformed handshake message (%s)", bad);
  return r.rc ? r.rc : ATOLL_EMALFORMED;
}

/* ---- MACs ------------------------------------------------------------- */

void hs_key(const char *secret, size_t len, unsigned char key[HS_KEY]) {
  static const unsigned char label[] = "atoll cluster secret v1";
  crypto_generichash(key, HS_KEY, (const unsigned char *)secret, len, label, sizeof label - 1);
}

static void absorb_str(crypto_generichash_state *st, const char *s) {
  unsigned char n[2] = {(unsigned char)(strlen(s) >> 8), (unsigned char)strlen(s)};
  crypto_generichash_update(st, n, 2);
  crypto_generichash_update(st, (const unsigned char *)s, strlen(s));
}

static void absorb_id(crypto_generichash_state *st, const hs_msg_t *m) {
  char inc[32];
  snprintf(inc, sizeof inc, "%.0f", m->incarnation);
  absorb_str(st, m->name);
  absorb_str(st, m->address);
  absorb_str(st, inc);
  crypto_generichash_update(st, m->nonce, HS_NONCE);
}

void hs_mac(const unsigned char key[HS_KEY], char role, const hs_msg_t *hello,
            const hs_msg_t *challenge, unsigned char mac[HS_MAC]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, HS_KEY, HS_MAC);
  const char label[] = {'a', 't', 'o', 'l', 'l', ' ', role, '\0'};
  absorb_str(&st, label);
  char version[16];
  snprintf(version, sizeof version, "%u", hello->version);
  absorb_str(&st, version);
  absorb_str(&st, hello->cluster);
  absorb_id(&st, hello);
  absorb_id(&st, challenge);
  crypto_generichash_final(&st, mac, HS_MAC);
}

static void session_key(const unsigned char key[HS_KEY], const char *label, const hs_msg_t *hello,
                        const hs_msg_t *challenge, unsigned char out[16]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, HS_KEY, 16);
  absorb_str(&st, label);
  absorb_id(&st, hello);
  absorb_id(&st, challenge);
  crypto_generichash_final(&st, out, 16);
}

void hs_session_keys(const unsigned char key[HS_KEY], const hs_msg_t *hello,
                     const hs_msg_t *challenge, unsigned char d2a[16], unsigned char a2d[16]) {
  session_key(key, "atoll frames dialer to acceptor", hello, challenge, d2a);
  session_key(key, "atoll frames acceptor to dialer", hello, challenge, a2d);
}

int hs_mac_equal(const unsigned char a[HS_MAC], const unsigned char b[HS_MAC]) {
  return crypto_verify_32(a, b) == 0;
}
