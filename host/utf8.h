/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF). */
#ifndef ATOLL_UTF8_H
#define ATOLL_UTF8_H

#include <stddef.h>

/* Returns 1 if the n bytes at s are well-formed UTF-8, else 0. */
int utf8_valid(const char *s, size_t n);

#endif
