/* libFuzzer target for everything that reads bytes from the network: frames,
 * envelopes, handshake messages, the MessagePack validator and decoder.
 *
 * Besides crashes and sanitizer reports, it checks that the validator (which
 * guards every received frame) and the Lua decoder agree: a value one accepts
 * the other must accept too; and that a frame the fuzzer makes up never
 * passes authentication. */
#include <lauxlib.h>
#include <lualib.h>
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
  /* The decoder interns refs with a metatable; any table will do here. */
  lua_newtable(L);
  codec.ref_mt = lua_topointer(L, -1);
  codec.ref_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void agree(const char *data, size_t len) {
  char err[256];
  int valid = codec_validate(data, len, CODEC_DEFAULT_MAX_DEPTH, err, sizeof err) == 0;
  int top = lua_gettop(L);
  int decoded = codec_decode_value(&codec, L, data, len) == 0;
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
