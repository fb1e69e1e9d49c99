/* libFuzzer target for everything that reads bytes from the network: frames,
 * envelopes, handshake messages, the MessagePack validator and decoder.
 *
 * Besides crashes and sanitizer reports, it checks that the validator (which
 * guards every received frame) and the Lua decoder agree: a value one accepts
 * the other must accept too; that a frame the fuzzer makes up never
 * passes authentication; and that every integer it meets (read from the raw
 * input, or found in a value that decodes) is encoded in its smallest
 * MessagePack form and decodes back to itself. */
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/codec.h"
#include "../../host/frame.h"
#include "../../host/handshake.h"

static lua_State *L;
static codec_t codec;

static void setup(void) {
  L = luaL_newstate();
  codec_init(&codec, L);
  /* The decoder gives refs and virtual refs a metatable; any table will do
   * here (without one, it would refuse virtual refs the validator passes). */
  lua_newtable(L);
  codec.ref_mt = lua_topointer(L, -1);
  codec.ref_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  codec.vref_mt = lua_topointer(L, -1);
  codec.vref_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The size of v's smallest MessagePack form, stated by ranges (apart from
 * the encoder's own width logic, which it checks). */
static size_t smallest(int64_t v) {
  if (v >= -32 && v <= 127) return 1;
  if (v >= -128 && v <= 255) return 2;
  if (v >= -32768 && v <= 65535) return 3;
  if (v >= -2147483648ll && v <= 4294967295ll) return 5;
  return 9;
}

/* Encodes the integer v, checks its form, decodes it and checks it came back. */
static void int_identity(int64_t v) {
  buf_t out;
  buf_init(&out);
  lua_pushnumber(L, (double)v);
  if (codec_encode_value(&codec, L, -1, "v", &out) != 0) {
    fprintf(stderr, "the integer %lld does not encode: %s\n", (long long)v, codec.err);
    abort();
  }
  lua_pop(L, 1);
  unsigned char first = (unsigned char)out.data[0];
  int sign_ok = v >= 0 ? (first <= 0x7f || (first >= 0xcc && first <= 0xcf))
                       : (first >= 0xe0 || (first >= 0xd0 && first <= 0xd3));
  if (out.len != smallest(v) || !sign_ok) {
    fprintf(stderr, "the integer %lld was encoded in %zu bytes (type byte %02x), not %zu\n",
            (long long)v, out.len, first, smallest(v));
    abort();
  }
  if (codec_decode_value(&codec, L, out.data, out.len) != 0 || lua_tonumber(L, -1) != (double)v) {
    fprintf(stderr, "the integer %lld did not come back from its encoding\n", (long long)v);
    abort();
  }
  lua_pop(L, 1);
  buf_close(&out);
}

/* Checks every integer inside the value at the top of the stack. */
static void ints_within(int depth) {
  if (lua_type(L, -1) == LUA_TNUMBER) {
    double d = lua_tonumber(L, -1);
    if (d == floor(d) && fabs(d) <= CODEC_MAX_EXACT_INT) int_identity((int64_t)d);
  } else if (lua_type(L, -1) == LUA_TTABLE && depth < CODEC_DEFAULT_MAX_DEPTH) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      ints_within(depth + 1);
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      ints_within(depth + 1);
      lua_pop(L, 1);
    }
  }
}

static void agree(const char *data, size_t len) {
  char err[256];
  int valid = codec_validate(data, len, CODEC_DEFAULT_MAX_DEPTH, err, sizeof err) == 0;
  int top = lua_gettop(L);
  int decoded = codec_decode_value(&codec, L, data, len) == 0;
  if (decoded) ints_within(0);
  lua_settop(L, top);
  if (valid != decoded) {
    fprintf(stderr, "validator says %d, decoder says %d (%s / %s)\n", valid, decoded, err,
            codec.err);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  const char *p = (const char *)data;

  /* The input as one MessagePack value. */
  agree(p, size);

  /* The input as integers: each 8 bytes, folded into [-2^53, 2^53]. */
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t u = 0;
    for (int k = 0; k < 8; k++) u = (u << 8) | data[i + k];
    int64_t v = (int64_t)(u % ((1ull << 54) + 1)) - (int64_t)(1ull << 53);
    int_identity(v);
  }

  /* The input as a stream of frames, as a link reads it. */
  size_t off = 0;
  while (off < size) {
    const char *body;
    size_t blen;
    int rc = frame_next(p + off, size - off, 1 << 16, &body, &blen);
    if (rc <= 0) break;
    off += FRAME_HEADER + blen;
    envelope_t env;
    char err[300];
    if (envelope_parse(body, blen, CODEC_DEFAULT_MAX_DEPTH, &env, err, sizeof err) == 0) {
      /* What the envelope check lets through must decode. */
      int top = lua_gettop(L);
      int count;
      int ok = env.kind == ENV_REPLY && !env.ok
                   ? codec_decode_value(&codec, L, env.payload, env.payload_len)
                   : codec_decode_list(&codec, L, env.payload, env.payload_len, &count);
      lua_settop(L, top);
      if (ok != 0) {
        fprintf(stderr, "an envelope passed the check but its payload does not decode: %s\n",
                codec.err);
        abort();
      }
    }
    hs_msg_t msg;
    hs_parse(body, blen, &msg, err, sizeof err);
    agree(body, blen);
    /* Opening a sealed frame: random bytes must fail cleanly. */
    frame_seal_t seal;
    memset(&seal, 7, sizeof seal);
    seal.seq = 0;
    const char *opened;
    size_t olen;
    if (frame_open(body, blen, &seal, &opened, &olen) == 0) {
      fprintf(stderr, "a random frame passed authentication\n");
      abort();
    }
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
