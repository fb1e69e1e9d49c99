/* The link handshake: protocol version, cluster name, node ids, and proof of the shared secret. */
#ifndef ATOLL_HANDSHAKE_H
#define ATOLL_HANDSHAKE_H

#include <stddef.h>

#include "buf.h"

#define HS_VERSION  1
#define HS_NONCE    32
#define HS_MAC      32
#define HS_KEY      32
#define HS_MAX_TEXT 256

/* The four steps, dialer (D) and acceptor (A):
 *   D -> A  hello      version, cluster, D's name/address/incarnation, D's nonce
 *   A -> D  challenge  the same for A, and A's MAC over both (A knows the secret)
 *   D -> A  proof      D's MAC over both (D knows the secret)
 *   A -> D  welcome    or `refuse` with a reason, at any step, from either side
 * The MACs are keyed BLAKE2b over a transcript of both hellos with a label
 * per role, so the secret never crosses the wire, a MAC cannot be replayed
 * (both nonces are fresh) and neither role's MAC stands in for the other's. */
/* The reason given when a MAC does not check out: the two nodes were given
 * different secrets (or the peer is no node of this cluster). The side that
 * checked logs it and sends it in its refusal; "differs" reads true from
 * either side, and blames neither. */
#define HS_SECRETS_DIFFER "authentication failed: this node's secret differs from the peer's"

typedef enum {
  HS_HELLO = 1,
  HS_CHALLENGE,
  HS_PROOF,
  HS_WELCOME,
  HS_REFUSE,
} hs_type_t;

typedef struct hs_msg_s {
  hs_type_t type;
  unsigned version;
  char cluster[HS_MAX_TEXT];
  char name[HS_MAX_TEXT];
  char address[HS_MAX_TEXT];
  double incarnation;
  unsigned char nonce[HS_NONCE];
  unsigned char mac[HS_MAC];
  char reason[HS_MAX_TEXT];
  int has_nonce, has_mac;
} hs_msg_t;

/* Encodes msg as a MessagePack map appended to out (the frame body). */
int hs_encode(buf_t *out, const hs_msg_t *msg);

/* Parses a frame body into msg; checks the fields its type needs. On failure
 * returns a negative code and writes why into err. */
int hs_parse(const char *body, size_t len, hs_msg_t *msg, char *err, size_t errlen);

/* Derives the MAC key from the cluster secret. */
void hs_key(const char *secret, size_t len, unsigned char key[HS_KEY]);

/* The MAC a role proves with: role 'A' (acceptor, in challenge) or 'D'
 * (dialer, in proof), over the dialer's hello and the acceptor's challenge. */
void hs_mac(const unsigned char key[HS_KEY], char role, const hs_msg_t *hello,
            const hs_msg_t *challenge, unsigned char mac[HS_MAC]);

/* The two directions' frame keys (dialer to acceptor, acceptor to dialer),
 * derived from the secret and both hellos: a link's frames are sealed with
 * keys no other link shares. */
void hs_session_keys(const unsigned char key[HS_KEY], const hs_msg_t *hello,
                     const hs_msg_t *challenge, unsigned char d2a[16], unsigned char a2d[16]);

/* Constant-time comparison of two MACs: 1 if equal. */
int hs_mac_equal(const unsigned char a[HS_MAC], const unsigned char b[HS_MAC]);

#endif
