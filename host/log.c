/* Leveled log lines on stderr: one write(2) per line so lines never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_level_t current_level = LOG_INFO;
static char node_name[64];

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};

void log_set_level(log_level_t level) {
  current_level = level;
}

log_level_t log_get_level(void) {
  return current_level;
}

int log_parse_level(const char *name, log_level_t *out) {
  for (int i = LOG_DEBUG; i <= LOG_OFF; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (log_level_t)i;
      return 0;
    }
  }
  return -1;
}

const char *log_level_name(log_level_t level) {
  return level <= LOG_OFF ? level_names[level] : "?";
}

void log_set_node(const char *name) {
  if (name == NULL) {
    node_name[0] = '\0';
    return;
  }
  snprintf(node_name, sizeof node_name, "%s", name);
}

void log_write(log_level_t level, const char *subsystem, const char *fmt, ...) {
  if (level < current_level || level >= LOG_OFF) return;

  char line[8192];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(
      line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s%s%s: ", tm.tm_year + 1900,
      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
      level_tags[level], node_name, node_name[0] ? " " : "", subsystem);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = (int)sizeof line - 1;

  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  size_t len = (size_t)n + (size_t)m;
  if (len >= sizeof line - 1) {
    /* Truncated: say so rather than cut a traceback silently. */
    static const char mark[] = " [...]";
    len = sizeof line - sizeof mark - 1;
    memcpy(line + len, mark, sizeof mark - 1);
    len += sizeof mark - 1;
  }
  line[len++] = '\n';

  const char *p = line;
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, p, len);
    if (w <= 0) break;
    p += w;
    len -= (size_t)w;
  }
}
