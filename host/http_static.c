/* Static files for the HTTP server (see http_static in http.h): a target under a mount names a
 * file in its directory, never outside it; files up to a mebibyte stay in a small cache that a
 * stat revalidates on each request, so an edited file is served fresh at once. */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_int.h"

#define STATIC_CACHE_MAX_FILE (1u << 20)  /* larger files are read for each request */
#define STATIC_MAX_FILE       (64u << 20) /* larger ones are refused (500) */

/* The Content-Type for a file, by its extension; octet-stream when unknown. */
static const char *content_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".htm", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},
      {".webp", "image/webp"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".yaml", "application/yaml"},
      {".yml", "application/yaml"},
      {".wasm", "application/wasm"},
      {".woff2", "font/woff2"},
      {".map", "application/json"},
  };
  const char *dot = strrchr(path, '.');
  if (dot && !strchr(dot, '/')) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
      if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    }
  }
  return "application/octet-stream";
}

/* A hex digit's value, or -1. */
static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  ch = tolower(ch);
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

/* The file a target names under a mount, or 0 when it names none. */
static int static_path(http_server_t *s, const char *target, char *out, size_t cap) {
  for (size_t m = 0; m < s->nmounts; m++) {
    mount_t *mt = &s->mounts[m];
    if (strncmp(target, mt->prefix, mt->plen) != 0) continue;
    char rel[PATH_MAX];
    size_t n = 0;
    for (const char *p = target + mt->plen; *p && *p != '?' && *p != '#'; p++) {
      int ch = (unsigned char)*p;
      if (ch == '%') {
        int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
        if (lo < 0) return 0;
        ch = hi * 16 + lo;
        p += 2;
      }
      if (ch == 0 || n + 1 >= sizeof rel) return 0;
      rel[n++] = (char)ch;
    }
    rel[n] = '\0';
    /* No way out of the directory: no "..", no hidden files. */
    if (strstr(rel, "/.") || rel[0] == '.' || rel[0] == '/') return 0;
    const char *index = (n == 0 || rel[n - 1] == '/') ? "index.html" : "";
    if ((size_t)snprintf(out, cap, "%s/%s%s", mt->dir, rel, index) >= cap) return 0;
    return 1;
  }
  return 0;
}

/* The cache slot a path hashes to (one file per slot: the newest one read wins). */
static cached_t *cache_slot(http_server_t *s, const char *path) {
  unsigned h = 5381;
  for (const char *p = path; *p; p++) h = h * 33 + (unsigned char)*p;
  return &s->cache[h % STATIC_CACHE];
}

/* Serves a static file: 1 if it answered, 0 if no file is there. */
int http__static_serve(http_conn_t *c, const char *method, const char *target) {
  http_server_t *s = c->s;
  if (s->nmounts == 0 || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)) return 0;
  char path[PATH_MAX];
  if (!static_path(s, target, path, sizeof path)) return 0;
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  char headers[160];
  int hn = snprintf(headers, sizeof headers, "Content-Type: %s\r\nCache-Control: no-cache\r\n",
                    content_type(path));
  cached_t *e = cache_slot(s, path);
  if (e->path && strcmp(e->path, path) == 0 && e->mtime == st.st_mtime && e->size == st.st_size &&
      e->ino == st.st_ino) {
    http_respond(c, 200, headers, (size_t)hn, e->data, e->len);
    return 1;
  }
  if ((size_t)st.st_size > STATIC_MAX_FILE) {
    http__fail(c, 500, "the file is too large to serve");
    return 1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t len = (size_t)st.st_size, got = 0;
  char *data = malloc(len ? len : 1);
  while (data && got < len) {
    ssize_t r = read(fd, data + got, len - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (data == NULL || got != len) {
    free(data);
    http__fail(c, 500, "the file could not be read");
    return 1;
  }
  http_respond(c, 200, headers, (size_t)hn, data, len);
  if (len <= STATIC_CACHE_MAX_FILE) {
    free(e->path);
    free(e->data);
    e->path = strdup(path);
    e->data = data;
    e->len = len;
    e->mtime = st.st_mtime;
    e->size = st.st_size;
    e->ino = st.st_ino;
    if (e->path == NULL) {
      free(e->data);
      e->data = NULL;
    }
  } else {
    free(data);
  }
  return 1;
}

/* Adds a mount; the first mount whose prefix matches a target is the one tried. */
int http_static(http_server_t *s, const char *prefix, const char *dir) {
  size_t plen = strlen(prefix);
  if (plen == 0 || prefix[0] != '/' || prefix[plen - 1] != '/') return UV_EINVAL;
  mount_t *m = realloc(s->mounts, (s->nmounts + 1) * sizeof *m);
  if (m == NULL) return UV_ENOMEM;
  s->mounts = m;
  m[s->nmounts].prefix = strdup(prefix);
  m[s->nmounts].dir = strdup(dir);
  m[s->nmounts].plen = plen;
  if (!m[s->nmounts].prefix || !m[s->nmounts].dir) return UV_ENOMEM;
  s->nmounts++;
  return 0;
}

/* Frees the mounts and the cache (http_server_s's own fields: the server stays). */
void http__static_free(http_server_t *s) {
  for (size_t i = 0; i < s->nmounts; i++) {
    free(s->mounts[i].prefix);
    free(s->mounts[i].dir);
  }
  free(s->mounts);
  for (size_t i = 0; i < STATIC_CACHE; i++) {
    free(s->cache[i].path);
    free(s->cache[i].data);
  }
}
