/* Link handshake messages (MessagePack maps) and their MACs (libsodium's keyed BLAKE2b). */
#include "handshake.h"

#include <mpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "error.h"

static const char *const type_names[] = {"", "hello", "challenge", "proof", "welcome", "refuse"};

/* ---- encoding --------------------------------------------------------- */

typedef struct enc_s {
  buf_t *out;
  mpack_tokbuf_t tb;
  int rc;
} enc_t;

static void put(enc_t *e, mpack_token_t t) {
  if (e->rc) return;
  if (buf_reserve(e->out, MPACK_MAX_TOKEN_LEN)) {
    e->rc = ATOLL_ENOMEM;
    return;
  }
  char *p = e->out->data + e->out->len;
  size_t avail = e->out->cap - e->out->len;
  if (mpack_write(&e->tb, &p, &avail, &t) != MPACK_OK) e->rc = ATOLL_EMALFORMED;
  e->out->len = (size_t)(p - e->out->data);
}

static void put_bytes(enc_t *e, mpack_token_t head, const void *s, size_t n) {
  put(e, head);
  if (e->rc == 0 && buf_append(e->out, s, n)) e->rc = ATOLL_ENOMEM;
}

static void put_str(enc_t *e, const char *s) {
  size_t n = strlen(s);
  put_bytes(e, mpack_pack_str((mpack_uint32_t)n), s, n);
}

static void put_key(enc_t *e, const char *k) {
  put_str(e, k);
}

int hs_encode(buf_t *out, const hs_msg_t *m) {
  enc_t e = {out, MPACK_TOKBUF_INITIAL_VALUE, 0};
  size_t start = out->len;
  mpack_tokbuf_init(&e.tb);
  unsigned fields = 2; /* t, v */
  int ids = m->type == HS_HELLO || m->type == HS_CHALLENGE;
  if (ids) fields += 5; /* cluster, name, addr, inc, nonce */
  if (m->has_mac) fields++;
  if (m->type == HS_REFUSE) fields++;
  put(&e, mpack_pack_map(fields));
  put_key(&e, "t");
  put_str(&e, type_names[m->type]);
  put_key(&e, "v");
  put(&e, mpack_pack_uint(m->version));
  if (ids) {
    put_key(&e, "cluster");
    put_str(&e, m->cluster);
    put_key(&e, "name");
    put_str(&e, m->name);
    put_key(&e, "addr");
    put_str(&e, m->address);
    put_key(&e, "inc");
    put(&e, mpack_pack_uint((mpack_uintmax_t)m->incarnation));
    put_key(&e, "nonce");
    put_bytes(&e, mpack_pack_bin(HS_NONCE), m->nonce, HS_NONCE);
  }
  if (m->has_mac) {
    put_key(&e, "mac");
    put_bytes(&e, mpack_pack_bin(HS_MAC), m->mac, HS_MAC);
  }
  if (m->type == HS_REFUSE) {
    put_key(&e, "reason");
    put_str(&e, m->reason);
  }
  if (e.rc) out->len = start;
  return e.rc;
}

/* ---- parsing ---------------------------------------------------------- */

typedef struct rd_s {
  const char *p;
  size_t n;
  mpack_tokbuf_t tb;
} rd_t;

static int get(rd_t *r, mpack_token_t *t) {
  if (r->n == 0) return ATOLL_ETRUNCATED;
  int st = mpack_read(&r->tb, &r->p, &r->n, t);
  if (st == MPACK_EOF) return ATOLL_ETRUNCATED;
  return st == MPACK_OK ? 0 : ATOLL_EMALFORMED;
}

/* Reads the bytes of a str or bin token of known length. */
static int get_chunk(rd_t *r, size_t len, const char **s) {
  *s = r->p;
  if (len == 0) return 0;
  if (len > r->n) return ATOLL_ETRUNCATED;
  mpack_token_t ch;
  int rc = get(r, &ch);
  if (rc) return rc;
  if (ch.type != MPACK_TOKEN_CHUNK || ch.length != len) return ATOLL_EMALFORMED;
  *s = ch.data.chunk_ptr;
  return 0;
}

static int text(rd_t *r, char *dst, size_t cap) {
  mpack_token_t t;
  int rc = get(r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_STR || t.length >= cap) return ATOLL_EMALFORMED;
  const char *s;
  if ((rc = get_chunk(r, t.length, &s))) return rc;
  if (memchr(s, 0, t.length)) return ATOLL_EMALFORMED;
  memcpy(dst, s, t.length);
  dst[t.length] = '\0';
  return 0;
}

static int blob(rd_t *r, unsigned char *dst, size_t len) {
  mpack_token_t t;
  int rc = get(r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_BIN || t.length != len) return ATOLL_EMALFORMED;
  const char *s;
  if ((rc = get_chunk(r, t.length, &s))) return rc;
  memcpy(dst, s, len);
  return 0;
}

static int number(rd_t *r, double *out) {
  mpack_token_t t;
  int rc = get(r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_UINT) return ATOLL_EMALFORMED;
  mpack_uintmax_t v = mpack_unpack_uint(t);
  if (v > (mpack_uintmax_t)CODEC_MAX_EXACT_INT) return ATOLL_ERANGE;
  *out = (double)v;
  return 0;
}

/* Skips one value of any shape (an unknown key's value, from a newer peer). */
static int skip(rd_t *r, int depth) {
  mpack_token_t t;
  int rc = get(r, &t);
  if (rc) return rc;
  if (depth > 8) return ATOLL_EDEPTH;
  if (t.type == MPACK_TOKEN_STR || t.type == MPACK_TOKEN_BIN || t.type == MPACK_TOKEN_EXT) {
    const char *s;
    return get_chunk(r, t.length, &s);
  }
  if (t.type == MPACK_TOKEN_ARRAY || t.type == MPACK_TOKEN_MAP) {
    size_t items = (size_t)t.length * (t.type == MPACK_TOKEN_MAP ? 2 : 1);
    if (items > r->n) return ATOLL_ETRUNCATED;
    for (size_t i = 0; i < items; i++) {
      if ((rc = skip(r, depth + 1))) return rc;
    }
  }
  return 0;
}

int hs_parse(const char *body, size_t len, hs_msg_t *m, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  rd_t r = {body, len, MPACK_TOKBUF_INITIAL_VALUE};
  mpack_tokbuf_init(&r.tb);
  mpack_token_t t;
  int rc = get(&r, &t);
  const char *bad = "not a map";
  if (rc || t.type != MPACK_TOKEN_MAP || t.length > 32) goto fail;
  unsigned pairs = t.length;
  int has_type = 0, has_version = 0, has_ids = 0;
  char key[16]; /* outlives the loop: `bad` may point at it */
  for (unsigned i = 0; i < pairs; i++) {
    bad = "a bad key";
    if ((rc = text(&r, key, sizeof key))) goto fail;
    bad = key;
    if (strcmp(key, "t") == 0) {
      char name[16];
      if ((rc = text(&r, name, sizeof name))) goto fail;
      for (int k = HS_HELLO; k <= HS_REFUSE; k++) {
        if (strcmp(name, type_names[k]) == 0) m->type = (hs_type_t)k;
      }
      has_type = m->type != 0;
    } else if (strcmp(key, "v") == 0) {
      double v;
      if ((rc = number(&r, &v)) || v > 65535) goto fail;
      m->version = (unsigned)v;
      has_version = 1;
    } else if (strcmp(key, "cluster") == 0) {
      if ((rc = text(&r, m->cluster, sizeof m->cluster))) goto fail;
      has_ids |= 1;
    } else if (strcmp(key, "name") == 0) {
      if ((rc = text(&r, m->name, sizeof m->name))) goto fail;
      has_ids |= 2;
    } else if (strcmp(key, "addr") == 0) {
      if ((rc = text(&r, m->address, sizeof m->address))) goto fail;
      has_ids |= 4;
    } else if (strcmp(key, "inc") == 0) {
      if ((rc = number(&r, &m->incarnation))) goto fail;
      has_ids |= 8;
    } else if (strcmp(key, "nonce") == 0) {
      if ((rc = blob(&r, m->nonce, HS_NONCE))) goto fail;
      m->has_nonce = 1;
    } else if (strcmp(key, "mac") == 0) {
      if ((rc = blob(&r, m->mac, HS_MAC))) goto fail;
      m->has_mac = 1;
    } else if (strcmp(key, "reason") == 0) {
      if ((rc = text(&r, m->reason, sizeof m->reason))) goto fail;
    } else {
      if ((rc = skip(&r, 0))) goto fail;
    }
  }
  bad = "trailing bytes";
  if (r.n != 0) {
    rc = ATOLL_ETRAILING;
    goto fail;
  }
  rc = ATOLL_EMALFORMED;
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
  return rc ? rc : ATOLL_EMALFORMED;
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
