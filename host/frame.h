/* Node-to-node frames: `u32 length | MessagePack envelope`, parsed and written without Lua. */
#ifndef ATOLL_FRAME_H
#define ATOLL_FRAME_H

#include <stddef.h>

#include "buf.h"

#define FRAME_HEADER        4
#define FRAME_DEFAULT_MAX   ((size_t)16 << 20)
#define FRAME_HANDSHAKE_MAX 4096
#define FRAME_MAX_NAME      255 /* method and actor names */

/* After the handshake every frame is sealed: `u32 length | u64 sequence |
 * envelope | tag`, the tag a SipHash-128 of sequence and envelope under the
 * link's key for that direction. A frame injected, replayed, reordered or
 * reflected back fails. */
#define FRAME_SEQ     8
#define FRAME_TAG     16
#define FRAME_KEY     16
#define FRAME_SEALING (FRAME_SEQ + FRAME_TAG)

typedef struct frame_seal_s {
  unsigned char key[FRAME_KEY];
  unsigned long long seq; /* the next frame's sequence number */
} frame_seal_t;

/* Envelope kinds: the first element of every envelope array.
 *   CALL       [1, rid, incarnation, id, method, args]
 *   SEND       [2, incarnation, id, method, args]
 *   REPLY      [3, rid, ok, value]      value: results array, or an error map
 *   CALL_NAME  [4, rid, name, method, args]   to an actor registered by name
 *   SEND_NAME  [5, name, method, args] */
enum {
  ENV_CALL = 1,
  ENV_SEND = 2,
  ENV_REPLY = 3,
  ENV_CALL_NAME = 4,
  ENV_SEND_NAME = 5,
};

typedef struct envelope_s {
  int kind;
  double rid;
  double incarnation;
  double id;
  const char *name; /* CALL_NAME, SEND_NAME */
  size_t name_len;
  const char *method;
  size_t method_len;
  int ok;              /* REPLY */
  const char *payload; /* args array, or the reply's value: one MessagePack value */
  size_t payload_len;
} envelope_t;

/* Looks for a whole frame at the start of buf. Returns 1 and sets
 * body and body_len when one is there (it takes FRAME_HEADER + *body_len
 * bytes), 0 when more bytes are needed, or ATOLL_ETOOBIG when the announced
 * length is over `max`. */
int frame_next(const char *buf, size_t len, size_t max, const char **body, size_t *body_len);

/* Parses and validates an envelope: its fields, and its payload as a
 * MessagePack value the codec will accept (depth up to max_depth). On
 * failure returns a negative code and writes why into err. */
int envelope_parse(const char *body, size_t len, unsigned max_depth, envelope_t *env, char *err,
                   size_t errlen);

/* Checks a sealed frame's sequence number and tag (on the bytes frame_next
 * returned), advancing seal->seq; then body and body_len hold the envelope.
 * ATOLL_EAUTH when it is not the next frame this key sealed. */
int frame_open(const char *frame, size_t len, frame_seal_t *seal, const char **body,
               size_t *body_len);

/* Append one whole frame to out, sealed with `seal` (NULL: unsealed, for
 * tests that must send what a correct node never would). The payload bytes
 * are copied as they are (a MessagePack value made by the codec). Returns 0,
 * ATOLL_ENOMEM, or ATOLL_ETYPE for a method or name that is not 1 to
 * FRAME_MAX_NAME bytes (the receiver would refuse the whole frame). */
int frame_write_call(buf_t *out, frame_seal_t *seal, double rid, double incarnation, double id,
                     const char *method, size_t method_len, const char *payload,
                     size_t payload_len);
int frame_write_send(buf_t *out, frame_seal_t *seal, double incarnation, double id,
                     const char *method, size_t method_len, const char *payload,
                     size_t payload_len);
int frame_write_reply(buf_t *out, frame_seal_t *seal, double rid, int ok, const char *payload,
                      size_t payload_len);
int frame_write_call_name(buf_t *out, frame_seal_t *seal, double rid, const char *name,
                          size_t name_len, const char *method, size_t method_len,
                          const char *payload, size_t payload_len);
int frame_write_send_name(buf_t *out, frame_seal_t *seal, const char *name, size_t name_len,
                          const char *method, size_t method_len, const char *payload,
                          size_t payload_len);

/* Appends a frame whose body is `body` as it is, sealed or not (handshake
 * messages are not; tests seal malformed envelopes with it). */
int frame_write_raw(buf_t *out, frame_seal_t *seal, const char *body, size_t body_len);

#endif
