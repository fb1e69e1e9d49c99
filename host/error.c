/* Names and messages for every error code the host returns. */
#include "error.h"

#include <uv.h>

const char *atoll_err_name(int code) {
  switch (code) {
    case ATOLL_OK:
      return "OK";
#define X(name, text)                                                                              \
  case ATOLL_E##name:                                                                              \
    return "E" #name;
      ATOLL_ERRNO_MAP(X)
#undef X
    default:
      return uv_err_name(code);
  }
}

const char *atoll_strerror(int code) {
  switch (code) {
    case ATOLL_OK:
      return "success";
#define X(name, text)                                                                              \
  case ATOLL_E##name:                                                                              \
    return text;
      ATOLL_ERRNO_MAP(X)
#undef X
    default:
      return uv_strerror(code);
  }
}
