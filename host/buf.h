/* A growable byte buffer: the codec writes into it, transports flush it. */
#ifndef ATOLL_BUF_H
#define ATOLL_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct buf_s {
  char *data;
  size_t len;
  size_t cap;
} buf_t;

void buf_init(buf_t *b);
void buf_close(buf_t *b); /* frees the storage; the buffer may be reused after buf_init */

/* Makes room for `extra` more bytes; 0 or ATOLL_ENOMEM. */
int buf_reserve(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *p, size_t n);

static inline void buf_reset(buf_t *b) {
  b->len = 0;
}

/* Drops the first n bytes, keeping the rest. */
void buf_consume(buf_t *b, size_t n);

/* Releases storage beyond `keep` bytes of capacity when the buffer is empty,
 * so that one huge message does not pin memory forever. */
void buf_shrink(buf_t *b, size_t keep);

#endif
