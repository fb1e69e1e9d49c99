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

/* Appends the decimal digits of v, at least `width` of them. */
static size_t put_num(char *out, unsigned long v, int width) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 || n < width);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return (size_t)n;
}

static size_t put_str(char *out, const char *s) {
  size_t n = 0;
  while (s[n]) {
    out[n] = s[n];
    n++;
  }
  return n;
}

void log_write_from_signal(log_level_t level, const char *subsystem, const char *msg) {
  if (level < current_level || level >= LOG_OFF) return;
  char line[512];
  size_t n = 0;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  /* The civil date of a day count (Howard Hinnant's days_from_civil, inverted):
   * gmtime_r is not async-signal-safe. */
  long days = (long)(ts.tv_sec / 86400), secs = (long)(ts.tv_sec % 86400);
  long z = days + 719468, era = z / 146097;
  long doe = z - era * 146097;
  long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  long mp = (5 * doy + 2) / 153;
  long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  long y = yoe + era * 400 + (m <= 2);
  n += put_num(line + n, (unsigned long)y, 4);
  line[n++] = '-';
  n += put_num(line + n, (unsigned long)m, 2);
  line[n++] = '-';
  n += put_num(line + n, (unsigned long)d, 2);
  line[n++] = 'T';
  n += put_num(line + n, (unsigned long)(secs / 3600), 2);
  line[n++] = ':';
  n += put_num(line + n, (unsigned long)(secs / 60 % 60), 2);
  line[n++] = ':';
  n += put_num(line + n, (unsigned long)(secs % 60), 2);
  line[n++] = '.';
  n += put_num(line + n, (unsigned long)(ts.tv_nsec / 1000000), 3);
  n += put_str(line + n, "Z ");
  n += put_str(line + n, level_tags[level]);
  line[n++] = ' ';
  if (node_name[0]) {
    n += put_str(line + n, node_name);
    line[n++] = ' ';
  }
  size_t room = sizeof line - n - 4;
  for (const char *s = subsystem; *s && room > 0; s++, room--) line[n++] = *s;
  line[n++] = ':';
  line[n++] = ' ';
  for (const char *s = msg; *s && room > 0; s++, room--) line[n++] = *s;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, n);
  (void)w;
}
