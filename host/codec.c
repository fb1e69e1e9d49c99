/* Lua values <-> MessagePack, on libmpack's token reader and writer. */
#include "codec.h"

#include <lauxlib.h>
#include <math.h>
#include <mpack.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "utf8.h"

static const char *vref_problem(const char *p, size_t len);
static void push_vref(codec_t *c, lua_State *L, const char *payload, size_t len);

/* ---- encoder ---------------------------------------------------------- */

typedef enum { KEY_NONE, KEY_INDEX, KEY_STACK } key_kind_t;

/* One step of the path from the root to the value being encoded: how the
 * value was reached (an array index or a map key still on the Lua stack) and
 * the table it lives in, for cycle detection. */
typedef struct enc_level_s {
  key_kind_t kind;
  double index;
  int key_idx;
  const void *table;
} enc_level_t;

typedef struct enc_s {
  codec_t *c;
  lua_State *L;
  buf_t *out;
  size_t start;
  const char *root;
  mpack_tokbuf_t tb;
  unsigned depth;
  enc_level_t path[CODEC_MAX_DEPTH_CAP + 1];
} enc_t;

static int enc_value(enc_t *e, int idx);

static void describe_key(lua_State *L, const enc_level_t *lv, char *out, size_t cap) {
  if (lv->kind == KEY_INDEX) {
    snprintf(out, cap, "[%.0f]", lv->index);
    return;
  }
  if (lv->kind != KEY_STACK) {
    out[0] = '\0';
    return;
  }
  int t = lua_type(L, lv->key_idx);
  if (t == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, lv->key_idx, &n);
    int ident = n > 0 && n <= 64 && !(s[0] >= '0' && s[0] <= '9');
    for (size_t i = 0; ident && i < n; i++) {
      char ch = s[i];
      ident = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_';
    }
    if (ident)
      snprintf(out, cap, ".%.*s", (int)n, s);
    else
      snprintf(out, cap, "[\"%.*s%s\"]", (int)(n > 32 ? 32 : n), s, n > 32 ? "..." : "");
  } else if (t == LUA_TNUMBER) {
    double d = lua_tonumber(L, lv->key_idx);
    if (d == floor(d) && fabs(d) < 1e15)
      snprintf(out, cap, "[%.0f]", d);
    else
      snprintf(out, cap, "[%.17g]", d);
  } else if (t == LUA_TBOOLEAN) {
    snprintf(out, cap, "[%s]", lua_toboolean(L, lv->key_idx) ? "true" : "false");
  } else {
    snprintf(out, cap, "[<%s key>]", lua_typename(L, t));
  }
}

/* Records the failure with the full path to the current value. */
static int enc_fail(enc_t *e, int code, const char *fmt, const char *arg) {
  char path[384];
  size_t n = (size_t)snprintf(path, sizeof path, "%s", e->root);
  for (unsigned i = 1; i <= e->depth && n < sizeof path; i++) {
    describe_key(e->L, &e->path[i], path + n, sizeof path - n);
    n += strlen(path + n);
  }
  char what[128];
  snprintf(what, sizeof what, fmt, arg);
  snprintf(e->c->err, sizeof e->c->err, "%s: %s", path, what);
  return code;
}

static int enc_tok(enc_t *e, mpack_token_t tok) {
  if (buf_reserve(e->out, MPACK_MAX_TOKEN_LEN))
    return enc_fail(e, ATOLL_ENOMEM, "%s", "out of memory");
  char *p = e->out->data + e->out->len;
  size_t avail = e->out->cap - e->out->len;
  if (mpack_write(&e->tb, &p, &avail, &tok) != MPACK_OK) {
    return enc_fail(e, ATOLL_EMALFORMED, "%s", "MessagePack writer failed");
  }
  e->out->len = (size_t)(p - e->out->data);
  if (e->out->len - e->start > e->c->limits.max_bytes) {
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", e->c->limits.max_bytes);
    return enc_fail(e, ATOLL_ETOOBIG, "message larger than the limit of %s bytes", lim);
  }
  return 0;
}

static int enc_bytes(enc_t *e, const char *s, size_t n) {
  if (e->out->len - e->start + n > e->c->limits.max_bytes) {
    char lim[32];
    snprintf(lim, sizeof lim, "%zu", e->c->limits.max_bytes);
    return enc_fail(e, ATOLL_ETOOBIG, "message larger than the limit of %s bytes", lim);
  }
  if (buf_append(e->out, s, n)) return enc_fail(e, ATOLL_ENOMEM, "%s", "out of memory");
  return 0;
}

static mpack_token_t float_token(double d) {
  mpack_token_t t;
  memset(&t, 0, sizeof t);
  t.type = MPACK_TOKEN_FLOAT;
  float f = (float)d;
  if ((double)f == d && !isnan(d)) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    t.length = 4;
    t.data.value.lo = bits;
  } else {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    t.length = 8;
    t.data.value.lo = (mpack_uint32_t)(bits & 0xffffffffu);
    t.data.value.hi = (mpack_uint32_t)(bits >> 32);
  }
  return t;
}

/* An integer in its smallest MessagePack form, written here rather than by
 * libmpack: Debian's libmpack 1.0.5 picks too narrow a width for some
 * negative values (mpack_pack_sint(-129) gives d0 7f, which every decoder
 * reads as 127), and a wrong width is silent data loss. Non-negative values
 * use the unsigned forms, as the MessagePack spec recommends. */
size_t codec_int_bytes(int64_t v, unsigned char out[9]) {
  uint64_t u = (uint64_t)v;
  int width; /* bytes after the type byte */
  if (v >= 0 && v <= 0x7f) {
    out[0] = (unsigned char)v; /* positive fixint */
    return 1;
  }
  if (v < 0 && v >= -32) {
    out[0] = (unsigned char)(u & 0xff); /* negative fixint: 111xxxxx */
    return 1;
  }
  if (v >= 0) {
    width = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffll ? 4 : 8;
    out[0] = width == 1 ? 0xcc : width == 2 ? 0xcd : width == 4 ? 0xce : 0xcf;
  } else {
    width = v >= INT8_MIN ? 1 : v >= INT16_MIN ? 2 : v >= INT32_MIN ? 4 : 8;
    out[0] = width == 1 ? 0xd0 : width == 2 ? 0xd1 : width == 4 ? 0xd2 : 0xd3;
  }
  /* Big-endian, two's complement for the signed forms. */
  for (int i = 0; i < width; i++) out[1 + i] = (unsigned char)(u >> (8 * (width - 1 - i)));
  return (size_t)width + 1;
}

static int enc_number(enc_t *e, double d) {
  if (d == floor(d) && d >= -CODEC_MAX_EXACT_INT && d <= CODEC_MAX_EXACT_INT &&
      !(d == 0 && signbit(d))) {
    unsigned char b[9];
    size_t n = codec_int_bytes((int64_t)d, b);
    return enc_bytes(e, (const char *)b, n);
  }
  return enc_tok(e, float_token(d));
}

static int enc_string(enc_t *e, const char *s, size_t n) {
  if (n > 0xffffffffu || n > e->c->limits.max_bytes) return enc_bytes(e, s, n);
  /* Text travels as str, anything else as bin, so other decoders get text as
   * text and bytes intact; atoll decodes both to Lua strings. */
  mpack_token_t t =
      utf8_valid(s, n) ? mpack_pack_str((mpack_uint32_t)n) : mpack_pack_bin((mpack_uint32_t)n);
  int rc = enc_tok(e, t);
  if (rc) return rc;
  return enc_bytes(e, s, n);
}

static int enc_ref(enc_t *e, int idx) {
  lua_rawgeti(e->L, idx, 1);
  size_t n;
  const char *payload = lua_tolstring(e->L, -1, &n);
  if (payload == NULL || lua_type(e->L, -1) != LUA_TSTRING || n < CODEC_REF_FIXED) {
    lua_pop(e->L, 1);
    return enc_fail(e, ATOLL_ETYPE, "%s", "a malformed actor ref cannot be sent");
  }
  int rc = enc_tok(e, mpack_pack_ext(CODEC_EXT_REF, (mpack_uint32_t)n));
  if (rc == 0) rc = enc_bytes(e, payload, n);
  lua_pop(e->L, 1);
  return rc;
}

/* A virtual ref travels as its name only: the type and the id, checked here
 * against the bounds the decoder enforces, so that what one node sends every
 * node can read. */
static int enc_vref(enc_t *e, int idx) {
  lua_State *L = e->L;
  char payload[CODEC_VREF_MAX];
  size_t n = 0, tlen = 0, ilen = 0;
  lua_pushliteral(L, "type"); /* raw reads: the ref's __index makes callers */
  lua_rawget(L, idx);
  const char *type = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &tlen) : NULL;
  if (type == NULL || tlen == 0 || tlen > CODEC_VREF_MAX_NAME) {
    lua_pop(L, 1);
    return enc_fail(
        e, ATOLL_ETYPE, "%s",
        "a virtual ref whose type name is not a string of 1 to 200 bytes cannot be sent");
  }
  payload[n++] = (char)tlen;
  memcpy(payload + n, type, tlen);
  n += tlen;
  lua_pop(L, 1);
  lua_pushliteral(L, "id");
  lua_rawget(L, idx);
  int rc = 0;
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *id = lua_tolstring(L, -1, &ilen);
    if (ilen == 0 || ilen > CODEC_VREF_MAX_ID) {
      rc = enc_fail(e, ATOLL_ETYPE, "%s",
                    "a virtual ref whose id is not 1 to 200 bytes cannot be sent");
    } else {
      payload[n++] = CODEC_VREF_ID_STR;
      memcpy(payload + n, id, ilen);
      n += ilen;
    }
  } else if (lua_type(L, -1) == LUA_TNUMBER) {
    double d = lua_tonumber(L, -1);
    if (!(d == floor(d) && d >= -CODEC_MAX_EXACT_INT && d <= CODEC_MAX_EXACT_INT)) {
      rc = enc_fail(
          e, ATOLL_ETYPE, "%s",
          "a virtual ref whose id is a number but not an integer within 2^53 cannot be sent");
    } else {
      uint64_t u = (uint64_t)(int64_t)d;
      payload[n++] = CODEC_VREF_ID_INT;
      for (int i = 0; i < 8; i++) payload[n++] = (char)(u >> (8 * (7 - i)));
    }
  } else {
    rc = enc_fail(e, ATOLL_ETYPE, "%s",
                  "a virtual ref whose id is neither a string nor an integer cannot be sent");
  }
  lua_pop(L, 1);
  if (rc) return rc;
  rc = enc_tok(e, mpack_pack_ext(CODEC_EXT_VIRTUAL_REF, (mpack_uint32_t)n));
  if (rc == 0) rc = enc_bytes(e, payload, n);
  return rc;
}

/* Classifies the table at idx: returns the element count of a proper
 * sequence (keys exactly 1..n), or -1 for a map, with *pairs set. */
static long table_shape(lua_State *L, int idx, size_t *pairs) {
  size_t n = lua_objlen(L, idx);
  size_t count = 0;
  int seq = 1;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    count++;
    if (seq) {
      if (lua_type(L, -1) != LUA_TNUMBER) {
        seq = 0;
      } else {
        double k = lua_tonumber(L, -1);
        seq = k >= 1 && k <= (double)n && k == floor(k);
      }
    }
  }
  *pairs = count;
  return (seq && count == n) ? (long)n : -1;
}

static int enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  const void *self = lua_topointer(L, idx);
  for (unsigned i = 1; i <= e->depth; i++) {
    if (e->path[i].table == self) {
      return enc_fail(e, ATOLL_ECYCLE, "%s", "a table that contains itself cannot be sent");
    }
  }
  if (e->depth >= e->c->limits.max_depth) {
    char lim[16];
    snprintf(lim, sizeof lim, "%u", e->c->limits.max_depth);
    return enc_fail(e, ATOLL_EDEPTH, "tables nested deeper than %s levels cannot be sent", lim);
  }

  int as_array = 0;
  if (lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == e->c->ref_mt && mt != NULL) return enc_ref(e, idx);
    if (mt == e->c->vref_mt && mt != NULL) return enc_vref(e, idx);
    if ((mt == e->c->array_mt || mt == e->c->json_array_mt) && mt != NULL) {
      as_array = 1;
    } else {
      return enc_fail(e, ATOLL_ETYPE, "%s",
                      "a table with a metatable cannot be sent (its methods would be lost)");
    }
  }
  if (!lua_checkstack(L, 6)) return enc_fail(e, ATOLL_ENOMEM, "%s", "Lua stack exhausted");

  size_t pairs;
  long n = table_shape(L, idx, &pairs);
  if (pairs > 0xffffffffu) return enc_fail(e, ATOLL_ETOOBIG, "%s", "table too large");
  unsigned d = ++e->depth;
  enc_level_t *lv = &e->path[d];
  lv->table = self;
  int rc;

  if (n > 0 || (pairs == 0 && as_array)) {
    rc = enc_tok(e, mpack_pack_array((mpack_uint32_t)(n > 0 ? n : 0)));
    lv->kind = KEY_INDEX;
    for (long i = 1; rc == 0 && i <= n; i++) {
      lv->index = (double)i;
      lua_rawgeti(L, idx, (int)i);
      rc = enc_value(e, lua_gettop(L));
      lua_pop(L, 1);
    }
  } else {
    rc = enc_tok(e, mpack_pack_map((mpack_uint32_t)pairs));
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, idx) != 0) {
      int top = lua_gettop(L);
      lv->kind = KEY_STACK;
      lv->key_idx = top - 1;
      int kt = lua_type(L, top - 1);
      if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN && kt != LUA_TTABLE) {
        lv->kind = KEY_NONE;
        rc = enc_fail(e, ATOLL_ETYPE, "a table key of type %s cannot be sent", lua_typename(L, kt));
      } else {
        rc = enc_value(e, top - 1);
        lv->kind = KEY_STACK;
        lv->key_idx = top - 1;
        if (rc == 0) rc = enc_value(e, top);
      }
      if (rc) {
        lua_pop(L, 2);
        break;
      }
      lua_pop(L, 1);
    }
  }
  if (rc == 0) e->depth--;
  return rc;
}

static const char *article_type(int t) {
  switch (t) {
    case LUA_TFUNCTION:
      return "a function";
    case LUA_TUSERDATA:
      return "a userdata";
    case LUA_TLIGHTUSERDATA:
      return "a light userdata";
    case LUA_TTHREAD:
      return "a coroutine";
    default:
      return "a cdata value";
  }
}

static int enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return enc_tok(e, mpack_pack_nil());
    case LUA_TBOOLEAN:
      return enc_tok(e, mpack_pack_boolean((unsigned)lua_toboolean(L, idx)));
    case LUA_TNUMBER:
      return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return enc_string(e, s, n);
    }
    case LUA_TTABLE:
      return enc_table(e, idx);
    case LUA_TLIGHTUSERDATA:
      /* lua-cjson's null is a NULL light userdata: it means nil. */
      if (lua_touserdata(L, idx) == NULL) return enc_tok(e, mpack_pack_nil());
      /* fall through */
    default: {
      int t = lua_type(L, idx);
      return enc_fail(e, ATOLL_ETYPE, "%s cannot be sent", article_type(t));
    }
  }
}

static void enc_setup(enc_t *e, codec_t *c, lua_State *L, const char *root, buf_t *out) {
  e->c = c;
  e->L = L;
  e->out = out;
  e->start = out->len;
  e->root = root;
  e->depth = 0;
  e->path[0].kind = KEY_NONE;
  e->path[0].table = NULL;
  mpack_tokbuf_init(&e->tb);
}

int codec_encode_list(codec_t *c, lua_State *L, int first, int count, const char *root,
                      buf_t *out) {
  enc_t e;
  enc_setup(&e, c, L, root, out);
  if (count > CODEC_MAX_VALUES) {
    snprintf(c->err, sizeof c->err, "%s: more than %d values cannot be sent", root,
             CODEC_MAX_VALUES);
    return ATOLL_ETOOBIG;
  }
  /* The list itself is depth 0; its elements are reached by index. */
  int rc = enc_tok(&e, mpack_pack_array((mpack_uint32_t)count));
  e.depth = 1;
  e.path[1].kind = KEY_INDEX;
  e.path[1].table = NULL;
  for (int i = 0; rc == 0 && i < count; i++) {
    e.path[1].index = (double)(i + 1);
    rc = enc_value(&e, first + i);
  }
  if (rc) out->len = e.start;
  return rc;
}

int codec_encode_value(codec_t *c, lua_State *L, int idx, const char *root, buf_t *out) {
  enc_t e;
  enc_setup(&e, c, L, root, out);
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  int rc = enc_value(&e, idx);
  if (rc) out->len = e.start;
  return rc;
}

/* An ext token's type as MessagePack defines it: a signed byte (libmpack
 * hands it over as the unsigned one, so -1 would read as 255). */
static int ext_type(const mpack_token_t *t) {
  return (int)(signed char)(unsigned char)t->data.ext_type;
}

/* Says what is wrong with an ext type the codec does not take. */
static void ext_type_problem(int type, char *out, size_t cap) {
  if (type == -1) {
    snprintf(out, cap,
             "unsupported ext type -1: a MessagePack timestamp has no Lua value in "
             "atoll (send the time as a number)");
  } else if (type < 0) {
    snprintf(out, cap, "unsupported ext type %d (reserved by MessagePack)", type);
  } else {
    snprintf(out, cap,
             "unsupported ext type %d (atoll's ext types are %d, an actor ref, and %d, a virtual "
             "actor's ref)",
             type, CODEC_EXT_REF, CODEC_EXT_VIRTUAL_REF);
  }
}

/* ---- decoder ---------------------------------------------------------- */

typedef struct dec_s {
  codec_t *c;
  lua_State *L;
  const char *base;
  const char *p;
  size_t n;
  mpack_tokbuf_t tb;
  unsigned depth;
} dec_t;

static int dec_fail(dec_t *d, int code, const char *what) {
  snprintf(d->c->err, sizeof d->c->err, "cannot decode MessagePack at byte %zu: %s",
           (size_t)(d->p - d->base), what);
  return code;
}

static int dec_tok(dec_t *d, mpack_token_t *t) {
  if (d->n == 0) return dec_fail(d, ATOLL_ETRUNCATED, "the message ends early");
  int st = mpack_read(&d->tb, &d->p, &d->n, t);
  if (st == MPACK_EOF) return dec_fail(d, ATOLL_ETRUNCATED, "the message ends early");
  if (st != MPACK_OK) return dec_fail(d, ATOLL_EMALFORMED, "invalid type byte");
  return 0;
}

/* Reads the bytes of a str, bin or ext token of length `len`. */
static int dec_chunk(dec_t *d, size_t len, const char **out) {
  if (len == 0) {
    *out = d->p;
    return 0;
  }
  if (len > d->n) return dec_fail(d, ATOLL_ETRUNCATED, "the message ends inside a string");
  mpack_token_t ch;
  int rc = dec_tok(d, &ch);
  if (rc) return rc;
  if (ch.type != MPACK_TOKEN_CHUNK || ch.length != len) {
    return dec_fail(d, ATOLL_EMALFORMED, "string data out of step");
  }
  *out = ch.data.chunk_ptr;
  return 0;
}

static int dec_value(dec_t *d);

static int dec_int(dec_t *d, double v, int exact) {
  if (!exact) return dec_fail(d, ATOLL_ERANGE, "an integer beyond 2^53 cannot be held exactly");
  lua_pushnumber(d->L, v);
  return 0;
}

static int dec_value(dec_t *d) {
  lua_State *L = d->L;
  mpack_token_t t;
  int rc = dec_tok(d, &t);
  if (rc) return rc;
  switch (t.type) {
    case MPACK_TOKEN_NIL:
      lua_pushnil(L);
      return 0;
    case MPACK_TOKEN_BOOLEAN:
      lua_pushboolean(L, (int)mpack_unpack_boolean(t));
      return 0;
    case MPACK_TOKEN_UINT: {
      mpack_uintmax_t v = mpack_unpack_uint(t);
      return dec_int(d, (double)v, v <= (mpack_uintmax_t)CODEC_MAX_EXACT_INT);
    }
    case MPACK_TOKEN_SINT: {
      mpack_sintmax_t v = mpack_unpack_sint(t);
      return dec_int(d, (double)v, v >= -(mpack_sintmax_t)CODEC_MAX_EXACT_INT);
    }
    case MPACK_TOKEN_FLOAT:
      lua_pushnumber(L, mpack_unpack_float(t));
      return 0;
    case MPACK_TOKEN_STR:
    case MPACK_TOKEN_BIN: {
      const char *s;
      if ((rc = dec_chunk(d, t.length, &s))) return rc;
      lua_pushlstring(L, s, t.length);
      return 0;
    }
    case MPACK_TOKEN_EXT: {
      const char *s;
      int type = ext_type(&t);
      if ((rc = dec_chunk(d, t.length, &s))) return rc;
      if (type == CODEC_EXT_REF) {
        rc = codec_push_ref(d->c, L, s, t.length);
        if (rc) return dec_fail(d, rc, "malformed actor ref");
        return 0;
      }
      if (type == CODEC_EXT_VIRTUAL_REF) {
        const char *why = vref_problem(s, t.length);
        if (why) {
          char what[160];
          snprintf(what, sizeof what, "malformed virtual ref: %s", why);
          return dec_fail(d, ATOLL_EMALFORMED, what);
        }
        if (d->c->vref_mt_ref == LUA_NOREF) {
          return dec_fail(d, ATOLL_EMALFORMED,
                          "a virtual ref, but no metatable is configured for one");
        }
        if (!lua_checkstack(L, 4)) return dec_fail(d, ATOLL_ENOMEM, "Lua stack exhausted");
        push_vref(d->c, L, s, t.length);
        return 0;
      }
      char what[128];
      ext_type_problem(type, what, sizeof what);
      return dec_fail(d, ATOLL_EEXTTYPE, what);
    }
    case MPACK_TOKEN_ARRAY:
    case MPACK_TOKEN_MAP: {
      int is_map = t.type == MPACK_TOKEN_MAP;
      size_t count = t.length;
      /* Every element takes at least one byte: a count larger than what is
       * left is a lie, refused before allocating for it. */
      if (count > d->n || (is_map && count * 2 > d->n)) {
        return dec_fail(d, ATOLL_ETRUNCATED, "a container claims more elements than remain");
      }
      if (d->depth >= d->c->limits.max_depth) {
        return dec_fail(d, ATOLL_EDEPTH, "nesting deeper than the limit");
      }
      if (!lua_checkstack(L, 4)) return dec_fail(d, ATOLL_ENOMEM, "Lua stack exhausted");
      d->depth++;
      if (!is_map) {
        lua_createtable(L, (int)count, 0);
        for (size_t i = 1; i <= count; i++) {
          if ((rc = dec_value(d))) return rc;
          lua_rawseti(L, -2, (int)i);
        }
        if (count == 0 && d->c->array_mt_ref != LUA_NOREF) {
          lua_rawgeti(L, LUA_REGISTRYINDEX, d->c->array_mt_ref);
          lua_setmetatable(L, -2);
        }
      } else {
        lua_createtable(L, 0, (int)count);
        for (size_t i = 0; i < count; i++) {
          if ((rc = dec_value(d))) return rc;
          if (lua_isnil(L, -1)) return dec_fail(d, ATOLL_EMALFORMED, "a map key is nil");
          if (lua_type(L, -1) == LUA_TNUMBER && isnan(lua_tonumber(L, -1))) {
            return dec_fail(d, ATOLL_EMALFORMED, "a map key is NaN");
          }
          if ((rc = dec_value(d))) return rc;
          lua_rawset(L, -3);
        }
      }
      d->depth--;
      return 0;
    }
    default:
      return dec_fail(d, ATOLL_EMALFORMED, "unexpected token");
  }
}

static int dec_setup(dec_t *d, codec_t *c, lua_State *L, const char *data, size_t len) {
  d->c = c;
  d->L = L;
  d->base = data;
  d->p = data;
  d->n = len;
  d->depth = 0;
  mpack_tokbuf_init(&d->tb);
  if (len > c->limits.max_bytes) return dec_fail(d, ATOLL_ETOOBIG, "message larger than the limit");
  return 0;
}

int codec_decode_list(codec_t *c, lua_State *L, const char *data, size_t len, int *count) {
  dec_t d;
  int rc = dec_setup(&d, c, L, data, len);
  if (rc) return rc;
  int top = lua_gettop(L);
  mpack_token_t t;
  rc = dec_tok(&d, &t);
  if (rc == 0 && t.type != MPACK_TOKEN_ARRAY) {
    rc = dec_fail(&d, ATOLL_EMALFORMED, "a value list must be an array");
  }
  if (rc == 0 && t.length > CODEC_MAX_VALUES) {
    rc = dec_fail(&d, ATOLL_ETOOBIG, "too many values in a list");
  }
  if (rc == 0 && !lua_checkstack(L, (int)t.length + 8)) {
    rc = dec_fail(&d, ATOLL_ENOMEM, "Lua stack exhausted");
  }
  d.depth = 1;
  for (size_t i = 0; rc == 0 && i < t.length; i++) rc = dec_value(&d);
  if (rc == 0 && d.n != 0) rc = dec_fail(&d, ATOLL_ETRAILING, "trailing bytes after the message");
  if (rc) {
    lua_settop(L, top);
    return rc;
  }
  *count = (int)t.length;
  return 0;
}

int codec_decode_value(codec_t *c, lua_State *L, const char *data, size_t len) {
  dec_t d;
  int rc = dec_setup(&d, c, L, data, len);
  if (rc) return rc;
  int top = lua_gettop(L);
  rc = dec_value(&d);
  if (rc == 0 && d.n != 0) rc = dec_fail(&d, ATOLL_ETRAILING, "trailing bytes after the message");
  if (rc) lua_settop(L, top);
  return rc;
}

int codec_decode_next(codec_t *c, lua_State *L, const char **data, size_t *len) {
  dec_t d;
  int rc = dec_setup(&d, c, L, *data, *len);
  if (rc) return rc;
  int top = lua_gettop(L);
  rc = dec_value(&d);
  if (rc) {
    lua_settop(L, top);
    return rc;
  }
  *data = d.p;
  *len = d.n;
  return 0;
}

/* ---- refs ------------------------------------------------------------- */

static uint64_t be64(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | u[i];
  return v;
}

static void put_be64(char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (char)(v & 0xff);
    v >>= 8;
  }
}

int codec_ref_payload(const char *addr, size_t addr_len, double incarnation, double id, char *out,
                      size_t *out_len) {
  if (addr_len > CODEC_REF_MAX_ADDR) return ATOLL_ETOOBIG;
  if (!(incarnation >= 0 && incarnation <= CODEC_MAX_EXACT_INT) ||
      !(id >= 0 && id <= CODEC_MAX_EXACT_INT)) {
    return ATOLL_ERANGE;
  }
  put_be64(out, (uint64_t)incarnation);
  put_be64(out + 8, (uint64_t)id);
  if (addr_len) memcpy(out + CODEC_REF_FIXED, addr, addr_len);
  *out_len = CODEC_REF_FIXED + addr_len;
  return 0;
}

int codec_push_ref(codec_t *c, lua_State *L, const char *payload, size_t len) {
  if (len < CODEC_REF_FIXED || len > CODEC_REF_FIXED + CODEC_REF_MAX_ADDR) return ATOLL_EMALFORMED;
  uint64_t inc = be64(payload), id = be64(payload + 8);
  if (inc > (uint64_t)CODEC_MAX_EXACT_INT || id > (uint64_t)CODEC_MAX_EXACT_INT) {
    return ATOLL_EMALFORMED;
  }
  if (c->ref_mt_ref == LUA_NOREF) return ATOLL_EMALFORMED;
  lua_checkstack(L, 6);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_cache_ref); /* [cache] */
  lua_pushlstring(L, payload, len);                    /* [cache, key] */
  lua_pushvalue(L, -1);
  lua_rawget(L, -3); /* [cache, key, ref?] */
  if (!lua_isnil(L, -1)) {
    lua_replace(L, -3);
    lua_pop(L, 1); /* [ref] */
    return 0;
  }
  lua_pop(L, 1);
  lua_createtable(L, 5, 0); /* [cache, key, ref] */
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, 1);
  lua_pushlstring(L, payload + CODEC_REF_FIXED, len - CODEC_REF_FIXED);
  lua_rawseti(L, -2, 2);
  lua_pushnumber(L, (double)inc);
  lua_rawseti(L, -2, 3);
  lua_pushnumber(L, (double)id);
  lua_rawseti(L, -2, 4);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_mt_ref);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_rawset(L, -5); /* cache[key] = ref */
  lua_replace(L, -3);
  lua_pop(L, 1); /* [ref] */
  return 0;
}

/* ---- virtual refs ----------------------------------------------------- */

/* Says what is wrong with a virtual ref's payload, or NULL when nothing is:
 * the one check of the decoder and of the validator. */
static const char *vref_problem(const char *p, size_t len) {
  const unsigned char *u = (const unsigned char *)p;
  if (len == 0) return "no type name";
  size_t tlen = u[0];
  if (tlen == 0 || tlen > CODEC_VREF_MAX_NAME) return "its type name is not 1 to 200 bytes";
  if (len < 1 + tlen + 1) return "it ends before its id";
  size_t at = 1 + tlen, ilen = len - at - 1;
  switch (u[at]) {
    case CODEC_VREF_ID_INT: {
      if (ilen != 8) return "its integer id is not 8 bytes";
      int64_t v = (int64_t)be64(p + at + 1);
      if (v > (int64_t)CODEC_MAX_EXACT_INT || v < -(int64_t)CODEC_MAX_EXACT_INT) {
        return "its integer id is beyond 2^53";
      }
      return NULL;
    }
    case CODEC_VREF_ID_STR:
      if (ilen == 0 || ilen > CODEC_VREF_MAX_ID) return "its string id is not 1 to 200 bytes";
      return NULL;
    default:
      return "its id is neither an integer (0) nor a string (1)";
  }
}

/* Pushes the virtual ref of a payload that vref_problem passed, with the
 * configured metatable (the caller checked there is one, and stack room). */
static void push_vref(codec_t *c, lua_State *L, const char *payload, size_t len) {
  const unsigned char *u = (const unsigned char *)payload;
  size_t tlen = u[0], at = 1 + tlen;
  lua_createtable(L, 0, 2); /* [vref] */
  lua_pushlstring(L, payload + 1, tlen);
  lua_setfield(L, -2, "type");
  if (u[at] == CODEC_VREF_ID_INT) {
    lua_pushnumber(L, (double)(int64_t)be64(payload + at + 1));
  } else {
    lua_pushlstring(L, payload + at + 1, len - at - 1);
  }
  lua_setfield(L, -2, "id");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->vref_mt_ref);
  lua_setmetatable(L, -2);
}

/* ---- lifecycle -------------------------------------------------------- */

void codec_init(codec_t *c, lua_State *L) {
  c->limits.max_depth = CODEC_DEFAULT_MAX_DEPTH;
  c->limits.max_bytes = CODEC_DEFAULT_MAX_BYTES;
  c->ref_mt = c->vref_mt = c->array_mt = c->json_array_mt = NULL;
  c->ref_mt_ref = c->vref_mt_ref = c->array_mt_ref = c->json_array_mt_ref = LUA_NOREF;
  c->error_mt_ref = LUA_NOREF;
  buf_init(&c->scratch);
  c->err[0] = '\0';

  lua_newtable(L); /* [cache] */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  c->ref_cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void codec_close(codec_t *c, lua_State *L) {
  int *refs[] = {&c->ref_mt_ref,        &c->vref_mt_ref,   &c->array_mt_ref,
                 &c->json_array_mt_ref, &c->ref_cache_ref, &c->error_mt_ref};
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
    if (L != NULL) luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
    *refs[i] = LUA_NOREF;
  }
  buf_close(&c->scratch);
}

/* ---- validation without Lua ------------------------------------------ */

int codec_validate_prefix(const char *data, size_t len, unsigned max_depth, size_t *used, char *err,
                          size_t errlen) {
  /* remaining[d]: items still to read in the container at depth d; maps
   * count keys and values separately; keyflag[d]: the next item is a key. */
  uint32_t remaining[CODEC_MAX_DEPTH_CAP + 2];
  unsigned char keyflag[CODEC_MAX_DEPTH_CAP + 2];
  if (max_depth > CODEC_MAX_DEPTH_CAP) max_depth = CODEC_MAX_DEPTH_CAP;
  mpack_tokbuf_t tb;
  mpack_tokbuf_init(&tb);
  const char *p = data;
  size_t n = len;
  unsigned depth = 0;
  remaining[0] = 1;
  keyflag[0] = 0;
#define FAIL(code, msg)                                                                            \
  do {                                                                                             \
    snprintf(err, errlen, "invalid MessagePack at byte %zu: %s", (size_t)(p - data), msg);         \
    return code;                                                                                   \
  } while (0)
  while (1) {
    while (depth > 0 && remaining[depth] == 0) depth--;
    if (depth == 0 && remaining[0] == 0) break;
    if (n == 0) FAIL(ATOLL_ETRUNCATED, "the message ends early");
    int is_key = keyflag[depth] && (remaining[depth] % 2 == 0);
    remaining[depth]--;
    mpack_token_t t;
    int st = mpack_read(&tb, &p, &n, &t);
    if (st == MPACK_EOF) FAIL(ATOLL_ETRUNCATED, "the message ends early");
    if (st != MPACK_OK) FAIL(ATOLL_EMALFORMED, "invalid type byte");
    switch (t.type) {
      case MPACK_TOKEN_NIL:
        if (is_key) FAIL(ATOLL_EMALFORMED, "a map key is nil");
        break;
      case MPACK_TOKEN_BOOLEAN:
        break;
      case MPACK_TOKEN_UINT:
        if (mpack_unpack_uint(t) > (mpack_uintmax_t)CODEC_MAX_EXACT_INT) {
          FAIL(ATOLL_ERANGE, "an integer beyond 2^53 cannot be held exactly");
        }
        break;
      case MPACK_TOKEN_SINT:
        if (mpack_unpack_sint(t) < -(mpack_sintmax_t)CODEC_MAX_EXACT_INT) {
          FAIL(ATOLL_ERANGE, "an integer beyond 2^53 cannot be held exactly");
        }
        break;
      case MPACK_TOKEN_FLOAT:
        if (is_key && isnan(mpack_unpack_float(t))) FAIL(ATOLL_EMALFORMED, "a map key is NaN");
        break;
      case MPACK_TOKEN_STR:
      case MPACK_TOKEN_BIN:
      case MPACK_TOKEN_EXT: {
        size_t blen = t.length;
        if (blen > n) FAIL(ATOLL_ETRUNCATED, "the message ends inside a string");
        if (t.type == MPACK_TOKEN_EXT) {
          int type = ext_type(&t);
          if (type == CODEC_EXT_REF) {
            if (blen < CODEC_REF_FIXED || blen > CODEC_REF_FIXED + CODEC_REF_MAX_ADDR ||
                be64(p) > (uint64_t)CODEC_MAX_EXACT_INT ||
                be64(p + 8) > (uint64_t)CODEC_MAX_EXACT_INT) {
              FAIL(ATOLL_EMALFORMED, "malformed actor ref");
            }
          } else if (type == CODEC_EXT_VIRTUAL_REF) {
            const char *why = vref_problem(p, blen);
            if (why) {
              char what[160];
              snprintf(what, sizeof what, "malformed virtual ref: %s", why);
              FAIL(ATOLL_EMALFORMED, what);
            }
          } else {
            char what[128];
            ext_type_problem(type, what, sizeof what);
            FAIL(ATOLL_EEXTTYPE, what);
          }
        }
        if (blen > 0) {
          mpack_token_t ch;
          if (mpack_read(&tb, &p, &n, &ch) != MPACK_OK || ch.type != MPACK_TOKEN_CHUNK ||
              ch.length != blen) {
            FAIL(ATOLL_EMALFORMED, "string data out of step");
          }
        }
        break;
      }
      case MPACK_TOKEN_ARRAY:
      case MPACK_TOKEN_MAP: {
        int is_map = t.type == MPACK_TOKEN_MAP;
        uint64_t items = (uint64_t)t.length * (is_map ? 2u : 1u);
        if (items > n) FAIL(ATOLL_ETRUNCATED, "a container claims more elements than remain");
        if (depth + 1 > max_depth) FAIL(ATOLL_EDEPTH, "nesting deeper than the limit");
        depth++;
        remaining[depth] = (uint32_t)items;
        keyflag[depth] = (unsigned char)is_map;
        break;
      }
      default:
        FAIL(ATOLL_EMALFORMED, "unexpected token");
    }
  }
#undef FAIL
  *used = (size_t)(p - data);
  return 0;
}

int codec_validate(const char *data, size_t len, unsigned max_depth, char *err, size_t errlen) {
  size_t used = 0;
  int rc = codec_validate_prefix(data, len, max_depth, &used, err, errlen);
  if (rc) return rc;
  if (used != len) {
    snprintf(err, errlen, "invalid MessagePack at byte %zu: trailing bytes after the message",
             used);
    return ATOLL_ETRAILING;
  }
  return 0;
}
