/* Lua values <-> MessagePack on libmpack: the one encoding of every call, local or remote. */
#ifndef ATOLL_CODEC_H
#define ATOLL_CODEC_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* MessagePack ext type of an actor ref. Payload: incarnation (u64 BE),
 * local id (u64 BE), then the node's address as bytes. */
#define CODEC_EXT_REF      1
#define CODEC_REF_FIXED    16
#define CODEC_REF_MAX_ADDR 255

/* MessagePack ext type of a virtual actor's ref (atoll.virtual.get): a name,
 * (type, id), not a process, so it holds on every node and across restarts,
 * and events and snapshots may keep it. Payload: the type name's length
 * (u8, 1 to 200), the type name, then a kind byte and the id: 0 and an
 * integer (i64 BE, within +-2^53), or 1 and a string (1 to 200 bytes, the
 * rest of the payload). What a get adds to the name (deps, a timeout) is not
 * sent: deps are an argument of the activation, not part of the name. */
#define CODEC_EXT_VIRTUAL_REF 2
#define CODEC_VREF_MAX_NAME   200
#define CODEC_VREF_MAX_ID     200
#define CODEC_VREF_ID_INT     0
#define CODEC_VREF_ID_STR     1
#define CODEC_VREF_MAX        (1 + CODEC_VREF_MAX_NAME + 1 + CODEC_VREF_MAX_ID)

#define CODEC_DEFAULT_MAX_DEPTH 32
#define CODEC_DEFAULT_MAX_BYTES ((size_t)16 << 20)
#define CODEC_MAX_DEPTH_CAP     256
/* A value list (call arguments, results) holds at most this many values. */
#define CODEC_MAX_VALUES 250

/* Integers travel exactly up to 2^53, the largest a LuaJIT number holds
 * without rounding. */
#define CODEC_MAX_EXACT_INT 9007199254740992.0

typedef struct codec_limits_s {
  unsigned max_depth; /* tables nested deeper than this are refused */
  size_t max_bytes;   /* an encoding longer than this is refused */
} codec_limits_t;

typedef struct codec_s {
  codec_limits_t limits;
  /* Metatable identities the encoder recognises (NULL: none). Kept alive by
   * registry references. */
  const void *ref_mt;
  const void *vref_mt; /* a virtual actor's ref (atoll.cluster.virtual_ref) */
  const void *array_mt;
  const void *json_array_mt; /* lua-cjson's array marker, when configured */
  int ref_mt_ref;
  int vref_mt_ref;
  int array_mt_ref;
  int json_array_mt_ref;
  int ref_cache_ref; /* weak-valued table: ref payload -> ref, so refs are interned */
  int error_mt_ref;  /* metatable given to decode error objects (LUA_NOREF: none) */
  buf_t scratch;     /* reused encode buffer of the Lua bindings */
  char err[768];     /* message of the last failure */
} codec_t;

void codec_init(codec_t *c, lua_State *L);
void codec_close(codec_t *c, lua_State *L);

/* Encodes `count` values from stack index `first` as one MessagePack array,
 * appended to `out`. On failure returns a negative code, restores out->len,
 * and c->err names the path to the bad value, for example
 * "args[2].on_done: a function cannot be sent". `root` names the list. */
int codec_encode_list(codec_t *c, lua_State *L, int first, int count, const char *root, buf_t *out);

/* Encodes the single value at `idx`, appended to `out`; same failure contract. */
int codec_encode_value(codec_t *c, lua_State *L, int idx, const char *root, buf_t *out);

/* Decodes a MessagePack array that fills all `len` bytes and pushes its
 * elements; *count receives how many. On failure pushes nothing net,
 * returns a negative code and sets c->err. */
int codec_decode_list(codec_t *c, lua_State *L, const char *data, size_t len, int *count);

/* Decodes one value that fills all `len` bytes and pushes it. */
int codec_decode_value(codec_t *c, lua_State *L, const char *data, size_t len);

/* Decodes the next value at *data and advances past it (trailing bytes are
 * the caller's business): for envelopes read field by field. */
int codec_decode_next(codec_t *c, lua_State *L, const char **data, size_t *len);

/* Checks, without Lua, that `len` bytes hold exactly one MessagePack value
 * the decoder would accept (same limits and rules: depth, integer range,
 * map keys, ext types). On failure returns a negative code and writes a
 * message to err. Every byte from the network passes through here. */
int codec_validate(const char *data, size_t len, unsigned max_depth, char *err, size_t errlen);

/* Like codec_validate, but for the first value only: *used receives its
 * length in bytes (the rest of the buffer is not looked at). */
int codec_validate_prefix(const char *data, size_t len, unsigned max_depth, size_t *used, char *err,
                          size_t errlen);

/* Writes v in MessagePack's smallest integer form into out; returns the
 * byte count (1 to 9). */
size_t codec_int_bytes(int64_t v, unsigned char out[9]);

/* Pushes the interned ref for a ref payload (CODEC_EXT_REF bytes). */
int codec_push_ref(codec_t *c, lua_State *L, const char *payload, size_t len);

/* Builds a ref payload into out (CODEC_REF_FIXED + strlen(addr) bytes). */
int codec_ref_payload(const char *addr, size_t addr_len, double incarnation, double id, char *out,
                      size_t *out_len);

#endif
