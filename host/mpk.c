/* Small MessagePack writing and reading on libmpack, for the host's own fixed-shape messages. */
#include "mpk.h"

#include <string.h>

#include "error.h"

/* ---- writing ---------------------------------------------------------- */

void mpk_writer_init(mpk_writer_t *w, buf_t *out) {
  w->out = out;
  w->rc = 0;
  mpack_tokbuf_init(&w->tb);
}

static void put(mpk_writer_t *w, mpack_token_t t) {
  if (w->rc) return;
  if (buf_reserve(w->out, MPACK_MAX_TOKEN_LEN)) {
    w->rc = ATOLL_ENOMEM;
    return;
  }
  char *p = w->out->data + w->out->len;
  size_t avail = w->out->cap - w->out->len;
  if (mpack_write(&w->tb, &p, &avail, &t) != MPACK_OK) w->rc = ATOLL_EMALFORMED;
  w->out->len = (size_t)(p - w->out->data);
}

void mpk_raw(mpk_writer_t *w, const void *s, size_t n) {
  if (w->rc == 0 && buf_append(w->out, s, n)) w->rc = ATOLL_ENOMEM;
}

void mpk_array(mpk_writer_t *w, uint32_t n) {
  put(w, mpack_pack_array(n));
}

void mpk_map(mpk_writer_t *w, uint32_t n) {
  put(w, mpack_pack_map(n));
}

void mpk_uint(mpk_writer_t *w, uint64_t v) {
  put(w, mpack_pack_uint((mpack_uintmax_t)v));
}

void mpk_bool(mpk_writer_t *w, int v) {
  put(w, mpack_pack_boolean((unsigned)(v != 0)));
}

void mpk_nil(mpk_writer_t *w) {
  put(w, mpack_pack_nil());
}

void mpk_str(mpk_writer_t *w, const char *s, size_t n) {
  put(w, mpack_pack_str((mpack_uint32_t)n));
  mpk_raw(w, s, n);
}

void mpk_cstr(mpk_writer_t *w, const char *s) {
  mpk_str(w, s, strlen(s));
}

void mpk_bin(mpk_writer_t *w, const void *s, size_t n) {
  put(w, mpack_pack_bin((mpack_uint32_t)n));
  mpk_raw(w, s, n);
}

/* ---- reading ---------------------------------------------------------- */

void mpk_reader_init(mpk_reader_t *r, const char *data, size_t len) {
  r->p = data;
  r->n = len;
  r->rc = 0;
  mpack_tokbuf_init(&r->tb);
}

static int get(mpk_reader_t *r, mpack_token_t *t) {
  if (r->rc) return r->rc;
  if (r->n == 0) return r->rc = ATOLL_ETRUNCATED;
  int st = mpack_read(&r->tb, &r->p, &r->n, t);
  if (st == MPACK_EOF) return r->rc = ATOLL_ETRUNCATED;
  if (st != MPACK_OK) return r->rc = ATOLL_EMALFORMED;
  return 0;
}

static const char *chunk(mpk_reader_t *r, size_t len) {
  if (r->rc) return NULL;
  if (len == 0) return r->p;
  if (len > r->n) {
    r->rc = ATOLL_ETRUNCATED;
    return NULL;
  }
  mpack_token_t ch;
  if (get(r, &ch)) return NULL;
  if (ch.type != MPACK_TOKEN_CHUNK || ch.length != len) {
    r->rc = ATOLL_EMALFORMED;
    return NULL;
  }
  return ch.data.chunk_ptr;
}

uint32_t mpk_read_array(mpk_reader_t *r) {
  mpack_token_t t;
  if (get(r, &t)) return 0;
  if (t.type != MPACK_TOKEN_ARRAY || t.length > r->n) {
    r->rc = ATOLL_EMALFORMED;
    return 0;
  }
  return t.length;
}

uint32_t mpk_read_map(mpk_reader_t *r) {
  mpack_token_t t;
  if (get(r, &t)) return 0;
  if (t.type != MPACK_TOKEN_MAP || (size_t)t.length * 2 > r->n) {
    r->rc = ATOLL_EMALFORMED;
    return 0;
  }
  return t.length;
}

uint64_t mpk_read_uint(mpk_reader_t *r, uint64_t max) {
  mpack_token_t t;
  if (get(r, &t)) return 0;
  if (t.type != MPACK_TOKEN_UINT) {
    r->rc = ATOLL_EMALFORMED;
    return 0;
  }
  uint64_t v = (uint64_t)mpack_unpack_uint(t);
  if (v > max) {
    r->rc = ATOLL_ERANGE;
    return 0;
  }
  return v;
}

int mpk_read_bool(mpk_reader_t *r) {
  mpack_token_t t;
  if (get(r, &t)) return 0;
  if (t.type != MPACK_TOKEN_BOOLEAN) {
    r->rc = ATOLL_EMALFORMED;
    return 0;
  }
  return (int)mpack_unpack_boolean(t);
}

static const char *read_blob(mpk_reader_t *r, mpack_token_type_t type, size_t max, size_t *len) {
  mpack_token_t t;
  *len = 0;
  if (get(r, &t)) return NULL;
  if (t.type != type || t.length > max) {
    r->rc = ATOLL_EMALFORMED;
    return NULL;
  }
  const char *s = chunk(r, t.length);
  if (s) *len = t.length;
  return s;
}

const char *mpk_read_str(mpk_reader_t *r, size_t max, size_t *len) {
  return read_blob(r, MPACK_TOKEN_STR, max, len);
}

const char *mpk_read_bin(mpk_reader_t *r, size_t max, size_t *len) {
  return read_blob(r, MPACK_TOKEN_BIN, max, len);
}

void mpk_read_cstr(mpk_reader_t *r, char *dst, size_t cap) {
  size_t n;
  const char *s = mpk_read_str(r, cap - 1, &n);
  dst[0] = '\0';
  if (s == NULL) return;
  if (memchr(s, 0, n)) {
    r->rc = ATOLL_EMALFORMED;
    return;
  }
  memcpy(dst, s, n);
  dst[n] = '\0';
}

void mpk_skip(mpk_reader_t *r, int depth) {
  mpack_token_t t;
  if (get(r, &t)) return;
  if (t.type == MPACK_TOKEN_STR || t.type == MPACK_TOKEN_BIN || t.type == MPACK_TOKEN_EXT) {
    chunk(r, t.length);
  } else if (t.type == MPACK_TOKEN_ARRAY || t.type == MPACK_TOKEN_MAP) {
    if (depth <= 0) {
      r->rc = ATOLL_EDEPTH;
      return;
    }
    uint64_t items = (uint64_t)t.length * (t.type == MPACK_TOKEN_MAP ? 2 : 1);
    if (items > r->n) {
      r->rc = ATOLL_ETRUNCATED;
      return;
    }
    for (uint64_t i = 0; i < items && r->rc == 0; i++) mpk_skip(r, depth - 1);
  }
}

int mpk_done(const mpk_reader_t *r) {
  return r->rc == 0 && r->n == 0;
}
