/* Leveled log lines on stderr, shared by the C host and the Lua runtime. */
#ifndef ATOLL_LOG_H
#define ATOLL_LOG_H

typedef enum {
  LOG_DEBUG = 0,
  LOG_INFO = 1,
  LOG_WARN = 2,
  LOG_ERROR = 3,
  LOG_OFF = 4,
} log_level_t;

/* Lines below `level` are dropped. The default is LOG_INFO. */
void log_set_level(log_level_t level);
log_level_t log_get_level(void);

/* Parses "debug", "info", "warn", "error" or "off"; returns 0 or -1. */
int log_parse_level(const char *name, log_level_t *out);
const char *log_level_name(log_level_t level);

/* The node name printed on every line (copied; NULL clears it). */
void log_set_node(const char *name);

/* Writes one line: time, level, node, subsystem, message. A message with
 * newlines (a traceback) is written as is, after the prefix. */
void log_write(log_level_t level, const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same line, made with async-signal-safe calls only: for signal handlers. */
void log_write_from_signal(log_level_t level, const char *subsystem, const char *msg);

#define log_debug(sub, ...)                                                                        \
  do {                                                                                             \
    if (log_get_level() <= LOG_DEBUG) log_write(LOG_DEBUG, sub, __VA_ARGS__);                      \
  } while (0)
#define log_info(sub, ...)  log_write(LOG_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...)  log_write(LOG_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) log_write(LOG_ERROR, sub, __VA_ARGS__)

#endif
