/* Error codes: libuv's negative codes pass through; atoll's own live in a band below them. */
#ifndef ATOLL_ERROR_H
#define ATOLL_ERROR_H

#define ATOLL_ERRNO_MAP(X)                                                                         \
  X(USAGE, "bad command line")                                                                     \
  X(NOTFOUND, "file not found")                                                                    \
  X(LUA, "Lua error")                                                                              \
  X(TYPE, "value cannot be sent")                                                                  \
  X(CYCLE, "table contains itself")                                                                \
  X(DEPTH, "nesting too deep")                                                                     \
  X(TOOBIG, "message too large")                                                                   \
  X(TRUNCATED, "message truncated")                                                                \
  X(MALFORMED, "malformed MessagePack")                                                            \
  X(RANGE, "integer out of range")                                                                 \
  X(TRAILING, "trailing bytes after message")                                                      \
  X(EXTTYPE, "unsupported MessagePack ext type")                                                   \
  X(NOMEM, "out of memory")                                                                        \
  X(AUTH, "frame failed authentication")

#define ATOLL_ERRNO_BASE (-30000)

typedef enum {
  ATOLL_OK = 0,
  ATOLL__SENTINEL = ATOLL_ERRNO_BASE,
#define X(name, text) ATOLL_E##name,
  ATOLL_ERRNO_MAP(X)
#undef X
} atoll_errno_t;

/* One name and one message for any code, ours or libuv's. */
const char *atoll_err_name(int code);
const char *atoll_strerror(int code);

#endif
