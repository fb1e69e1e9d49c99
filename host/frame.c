/* Node-to-node frames and envelopes, on libmpack; every received byte is validated here first. */
#include "frame.h"

#include <mpack.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "mpk.h"

int frame_next(const char *buf, size_t len, size_t max, const char **body, size_t *body_len) {
  if (len < FRAME_HEADER) return 0;
  const unsigned char *u = (const unsigned char *)buf;
  size_t n = ((size_t)u[0] << 24) | ((size_t)u[1] << 16) | ((size_t)u[2] << 8) | (size_t)u[3];
  if (n > max) return ATOLL_ETOOBIG;
  if (len - FRAME_HEADER < n) return 0;
  *body = buf + FRAME_HEADER;
  *body_len = n;
  return 1;
}

/* ---- sealing ---------------------------------------------------------- */

static void put_be64(unsigned char *p, unsigned long long v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
}

static unsigned long long get_be64(const unsigned char *p) {
  unsigned long long v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

int frame_open(const char *frame, size_t len, frame_seal_t *seal, const char **body,
               size_t *body_len) {
  if (len < FRAME_SEALING) return ATOLL_EAUTH;
  const unsigned char *u = (const unsigned char *)frame;
  if (get_be64(u) != seal->seq) return ATOLL_EAUTH;
  unsigned char tag[FRAME_TAG];
  crypto_shorthash_siphashx24(tag, u, len - FRAME_TAG, seal->key);
  if (crypto_verify_16(tag, u + len - FRAME_TAG) != 0) return ATOLL_EAUTH;
  seal->seq++;
  *body = frame + FRAME_SEQ;
  *body_len = len - FRAME_SEALING;
  return 0;
}

/* ---- parsing ---------------------------------------------------------- */

typedef struct reader_s {
  const char *base;
  const char *p;
  size_t n;
  mpack_tokbuf_t tb;
  char *err;
  size_t errlen;
} reader_t;

static int rfail(reader_t *r, int code, const char *what) {
  snprintf(r->err, r->errlen, "malformed envelope at byte %zu: %s", (size_t)(r->p - r->base), what);
  return code;
}

static int rtok(reader_t *r, mpack_token_t *t) {
  if (r->n == 0) return rfail(r, ATOLL_ETRUNCATED, "it ends early");
  int st = mpack_read(&r->tb, &r->p, &r->n, t);
  if (st == MPACK_EOF) return rfail(r, ATOLL_ETRUNCATED, "it ends early");
  if (st != MPACK_OK) return rfail(r, ATOLL_EMALFORMED, "invalid type byte");
  return 0;
}

/* An unsigned integer a Lua number holds exactly. */
static int rnum(reader_t *r, double *out, const char *what) {
  mpack_token_t t;
  int rc = rtok(r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_UINT) return rfail(r, ATOLL_EMALFORMED, what);
  mpack_uintmax_t v = mpack_unpack_uint(t);
  if (v > (mpack_uintmax_t)CODEC_MAX_EXACT_INT) return rfail(r, ATOLL_ERANGE, what);
  *out = (double)v;
  return 0;
}

/* A short string (method or actor name): 1..FRAME_MAX_NAME bytes. */
static int rname(reader_t *r, const char **s, size_t *len, const char *what) {
  mpack_token_t t;
  int rc = rtok(r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_STR || t.length == 0 || t.length > FRAME_MAX_NAME) {
    return rfail(r, ATOLL_EMALFORMED, what);
  }
  if (t.length > r->n) return rfail(r, ATOLL_ETRUNCATED, what);
  mpack_token_t ch;
  rc = rtok(r, &ch);
  if (rc) return rc;
  if (ch.type != MPACK_TOKEN_CHUNK || ch.length != t.length) {
    return rfail(r, ATOLL_EMALFORMED, what);
  }
  *s = ch.data.chunk_ptr;
  *len = t.length;
  return 0;
}

int envelope_parse(const char *body, size_t len, unsigned max_depth, envelope_t *env, char *err,
                   size_t errlen) {
  reader_t r;
  r.base = r.p = body;
  r.n = len;
  r.err = err;
  r.errlen = errlen;
  mpack_tokbuf_init(&r.tb);
  memset(env, 0, sizeof *env);
  mpack_token_t t;
  int rc = rtok(&r, &t);
  if (rc) return rc;
  if (t.type != MPACK_TOKEN_ARRAY) return rfail(&r, ATOLL_EMALFORMED, "not an array");
  size_t fields = t.length;
  double kind;
  rc = rnum(&r, &kind, "bad kind");
  if (rc) return rc;
  if (kind < ENV_CALL || kind > ENV_SEND_NAME) return rfail(&r, ATOLL_EMALFORMED, "unknown kind");
  env->kind = (int)kind;
  switch (env->kind) {
    case ENV_CALL:
      if (fields != 6) return rfail(&r, ATOLL_EMALFORMED, "a call has 6 fields");
      if ((rc = rnum(&r, &env->rid, "bad call id")) ||
          (rc = rnum(&r, &env->incarnation, "bad incarnation")) ||
          (rc = rnum(&r, &env->id, "bad actor id")) ||
          (rc = rname(&r, &env->method, &env->method_len, "bad method name"))) {
        return rc;
      }
      break;
    case ENV_SEND:
      if (fields != 5) return rfail(&r, ATOLL_EMALFORMED, "a send has 5 fields");
      if ((rc = rnum(&r, &env->incarnation, "bad incarnation")) ||
          (rc = rnum(&r, &env->id, "bad actor id")) ||
          (rc = rname(&r, &env->method, &env->method_len, "bad method name"))) {
        return rc;
      }
      break;
    case ENV_REPLY: {
      if (fields != 4) return rfail(&r, ATOLL_EMALFORMED, "a reply has 4 fields");
      if ((rc = rnum(&r, &env->rid, "bad call id"))) return rc;
      if ((rc = rtok(&r, &t))) return rc;
      if (t.type != MPACK_TOKEN_BOOLEAN) return rfail(&r, ATOLL_EMALFORMED, "bad reply status");
      env->ok = (int)mpack_unpack_boolean(t);
      break;
    }
    case ENV_CALL_NAME:
      if (fields != 5) return rfail(&r, ATOLL_EMALFORMED, "a named call has 5 fields");
      if ((rc = rnum(&r, &env->rid, "bad call id")) ||
          (rc = rname(&r, &env->name, &env->name_len, "bad actor name")) ||
          (rc = rname(&r, &env->method, &env->method_len, "bad method name"))) {
        return rc;
      }
      break;
    case ENV_SEND_NAME:
      if (fields != 4) return rfail(&r, ATOLL_EMALFORMED, "a named send has 4 fields");
      if ((rc = rname(&r, &env->name, &env->name_len, "bad actor name")) ||
          (rc = rname(&r, &env->method, &env->method_len, "bad method name"))) {
        return rc;
      }
      break;
    default:
      return rfail(&r, ATOLL_EMALFORMED, "unknown kind");
  }
  /* The rest is the payload: exactly one value the codec accepts. Calls and
   * sends carry an argument list, which must be an array. */
  env->payload = r.p;
  env->payload_len = r.n;
  if (env->kind != ENV_REPLY || env->ok) {
    /* An argument or result list: an array the codec will unpack, so of at
     * most CODEC_MAX_VALUES values. */
    mpack_tokbuf_t tb;
    mpack_tokbuf_init(&tb);
    const char *p = r.p;
    size_t n = r.n;
    mpack_token_t head;
    if (n == 0 || mpack_read(&tb, &p, &n, &head) != MPACK_OK || head.type != MPACK_TOKEN_ARRAY) {
      return rfail(&r, ATOLL_EMALFORMED, "the payload is not an array");
    }
    if (head.length > CODEC_MAX_VALUES) {
      return rfail(&r, ATOLL_ETOOBIG, "more values in a list than a call may carry");
    }
  }
  char verr[256];
  rc = codec_validate(r.p, r.n, max_depth, verr, sizeof verr);
  if (rc) {
    snprintf(err, errlen, "malformed envelope payload: %s", verr);
    return rc;
  }
  return 0;
}

/* ---- writing ---------------------------------------------------------- */

typedef struct writer_s {
  mpk_writer_t mw;
  frame_seal_t *seal;
  size_t start;
} writer_t;

static void wbegin(writer_t *w, buf_t *out, frame_seal_t *seal) {
  mpk_writer_init(&w->mw, out);
  w->seal = seal;
  w->start = out->len;
  if (buf_reserve(out, FRAME_HEADER + FRAME_SEALING + 64)) {
    w->mw.rc = ATOLL_ENOMEM;
    return;
  }
  /* The length, and the sequence number, are written in wend. */
  out->len += FRAME_HEADER + (seal ? FRAME_SEQ : 0);
}

/* A method or actor name the receiver will take. */
static void wname_check(writer_t *w, size_t n) {
  if (w->mw.rc == 0 && (n == 0 || n > FRAME_MAX_NAME)) w->mw.rc = ATOLL_ETYPE;
}

/* An id: an integer a Lua number holds exactly. */
static void wnum(writer_t *w, double v) {
  if (!(v >= 0 && v <= CODEC_MAX_EXACT_INT) || v != (double)(mpack_uintmax_t)v) {
    if (w->mw.rc == 0) w->mw.rc = ATOLL_ERANGE;
    return;
  }
  mpk_uint(&w->mw, (uint64_t)v);
}

static int wend(writer_t *w) {
  buf_t *out = w->mw.out;
  int rc = w->mw.rc;
  if (rc == 0 && w->seal) {
    if (buf_reserve(out, FRAME_TAG)) {
      rc = ATOLL_ENOMEM;
    } else {
      unsigned char *seq = (unsigned char *)out->data + w->start + FRAME_HEADER;
      put_be64(seq, w->seal->seq);
      size_t covered = out->len - w->start - FRAME_HEADER;
      crypto_shorthash_siphashx24((unsigned char *)out->data + out->len, seq, covered,
                                  w->seal->key);
      out->len += FRAME_TAG;
    }
  }
  if (rc) {
    out->len = w->start;
    return rc;
  }
  size_t n = out->len - w->start - FRAME_HEADER;
  if (n > 0xffffffffu) {
    out->len = w->start;
    return ATOLL_ETOOBIG;
  }
  if (w->seal) w->seal->seq++;
  unsigned char *u = (unsigned char *)out->data + w->start;
  u[0] = (unsigned char)(n >> 24);
  u[1] = (unsigned char)(n >> 16);
  u[2] = (unsigned char)(n >> 8);
  u[3] = (unsigned char)n;
  return 0;
}

int frame_write_call(buf_t *out, frame_seal_t *seal, double rid, double incarnation, double id,
                     const char *method, size_t method_len, const char *payload,
                     size_t payload_len) {
  writer_t w;
  wbegin(&w, out, seal);
  wname_check(&w, method_len);
  mpk_array(&w.mw, 6);
  wnum(&w, ENV_CALL);
  wnum(&w, rid);
  wnum(&w, incarnation);
  wnum(&w, id);
  mpk_str(&w.mw, method, method_len);
  mpk_raw(&w.mw, payload, payload_len);
  return wend(&w);
}

int frame_write_send(buf_t *out, frame_seal_t *seal, double incarnation, double id,
                     const char *method, size_t method_len, const char *payload,
                     size_t payload_len) {
  writer_t w;
  wbegin(&w, out, seal);
  wname_check(&w, method_len);
  mpk_array(&w.mw, 5);
  wnum(&w, ENV_SEND);
  wnum(&w, incarnation);
  wnum(&w, id);
  mpk_str(&w.mw, method, method_len);
  mpk_raw(&w.mw, payload, payload_len);
  return wend(&w);
}

int frame_write_reply(buf_t *out, frame_seal_t *seal, double rid, int ok, const char *payload,
                      size_t payload_len) {
  writer_t w;
  wbegin(&w, out, seal);
  mpk_array(&w.mw, 4);
  wnum(&w, ENV_REPLY);
  wnum(&w, rid);
  mpk_bool(&w.mw, ok);
  mpk_raw(&w.mw, payload, payload_len);
  return wend(&w);
}

int frame_write_call_name(buf_t *out, frame_seal_t *seal, double rid, const char *name,
                          size_t name_len, const char *method, size_t method_len,
                          const char *payload, size_t payload_len) {
  writer_t w;
  wbegin(&w, out, seal);
  wname_check(&w, name_len);
  wname_check(&w, method_len);
  mpk_array(&w.mw, 5);
  wnum(&w, ENV_CALL_NAME);
  wnum(&w, rid);
  mpk_str(&w.mw, name, name_len);
  mpk_str(&w.mw, method, method_len);
  mpk_raw(&w.mw, payload, payload_len);
  return wend(&w);
}

int frame_write_send_name(buf_t *out, frame_seal_t *seal, const char *name, size_t name_len,
                          const char *method, size_t method_len, const char *payload,
                          size_t payload_len) {
  writer_t w;
  wbegin(&w, out, seal);
  wname_check(&w, name_len);
  wname_check(&w, method_len);
  mpk_array(&w.mw, 4);
  wnum(&w, ENV_SEND_NAME);
  mpk_str(&w.mw, name, name_len);
  mpk_str(&w.mw, method, method_len);
  mpk_raw(&w.mw, payload, payload_len);
  return wend(&w);
}

int frame_write_raw(buf_t *out, frame_seal_t *seal, const char *body, size_t body_len) {
  writer_t w;
  wbegin(&w, out, seal);
  mpk_raw(&w.mw, body, body_len);
  return wend(&w);
}
