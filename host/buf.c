/* A growable byte buffer with amortized doubling. */
#include "buf.h"

#include <stdlib.h>

#include "error.h"

void buf_init(buf_t *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void buf_close(buf_t *b) {
  free(b->data);
  buf_init(b);
}

int buf_reserve(buf_t *b, size_t extra) {
  if (b->cap - b->len >= extra) return 0;
  size_t need = b->len + extra;
  if (need < b->len) return ATOLL_ENOMEM; /* overflow */
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > ((size_t)-1) / 2) return ATOLL_ENOMEM;
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (p == NULL) return ATOLL_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int buf_append(buf_t *b, const void *p, size_t n) {
  int rc = buf_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void buf_consume(buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void buf_shrink(buf_t *b, size_t keep) {
  if (b->len == 0 && b->cap > keep) {
    free(b->data);
    buf_init(b);
  }
}
