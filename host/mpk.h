/* Small MessagePack writing and reading on libmpack, for the host's own fixed-shape messages. */
#ifndef ATOLL_MPK_H
#define ATOLL_MPK_H

#include <mpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* A writer appends tokens to a buffer; the first failure sticks in rc. */
typedef struct mpk_writer_s {
  buf_t *out;
  mpack_tokbuf_t tb;
  int rc;
} mpk_writer_t;

void mpk_writer_init(mpk_writer_t *w, buf_t *out);
void mpk_array(mpk_writer_t *w, uint32_t n);
void mpk_map(mpk_writer_t *w, uint32_t n);
void mpk_uint(mpk_writer_t *w, uint64_t v);
void mpk_bool(mpk_writer_t *w, int v);
void mpk_nil(mpk_writer_t *w);
void mpk_str(mpk_writer_t *w, const char *s, size_t n);
void mpk_cstr(mpk_writer_t *w, const char *s);
void mpk_bin(mpk_writer_t *w, const void *s, size_t n);
/* Appends bytes that already hold MessagePack values. */
void mpk_raw(mpk_writer_t *w, const void *s, size_t n);

/* A reader walks a buffer; every read checks bounds and types, and the first
 * failure sticks in rc (later reads fail too), so a caller can read a whole
 * message and check rc once. */
typedef struct mpk_reader_s {
  const char *p;
  size_t n;
  mpack_tokbuf_t tb;
  int rc;
} mpk_reader_t;

void mpk_reader_init(mpk_reader_t *r, const char *data, size_t len);
uint32_t mpk_read_array(mpk_reader_t *r);
uint32_t mpk_read_map(mpk_reader_t *r);
/* An unsigned integer no larger than max. */
uint64_t mpk_read_uint(mpk_reader_t *r, uint64_t max);
int mpk_read_bool(mpk_reader_t *r);
/* A str (or bin, if bin != 0) of at most max bytes; points into the input. */
const char *mpk_read_str(mpk_reader_t *r, size_t max, size_t *len);
const char *mpk_read_bin(mpk_reader_t *r, size_t max, size_t *len);
/* Copies a str of at most cap - 1 bytes, without NULs, into dst, terminated. */
void mpk_read_cstr(mpk_reader_t *r, char *dst, size_t cap);
/* Skips one value of any shape, nested at most `depth` levels. */
void mpk_skip(mpk_reader_t *r, int depth);
/* 1 when every byte was read and nothing failed. */
int mpk_done(const mpk_reader_t *r);

#endif
