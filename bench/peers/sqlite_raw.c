/* The ceiling of the SQLite backend: a plain loop of inserts into the journal's table, with the
 * journal's durability settings (WAL, synchronous=FULL) and its commit pattern under load (256
 * writers, one event each per transaction), without atoll around it.
 *
 *   sqlite_raw DIR [SECONDS]   prints BENCH peer.sqlite-raw.insert.rate N rows/s
 *
 * The table is the journal's (same columns, unique key and rowid), and each row carries an
 * event of the same size as bench/journal.lua's, so the two figures compare like for like. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITERS 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(sqlite3 *db, int rc, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "sqlite_raw: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: sqlite_raw DIR [SECONDS]\n");
    return 2;
  }
  double seconds = argc > 2 ? atof(argv[2]) : 5;
  char path[4096];
  snprintf(path, sizeof path, "%s/raw.db", argv[1]);
  remove(path);
  sqlite3 *db;
  check(NULL, sqlite3_open(path, &db), "open");
  check(db,
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE events (pid TEXT NOT NULL, seq INTEGER NOT NULL,"
                     " payload BLOB NOT NULL, written_at INTEGER NOT NULL,"
                     " UNIQUE (pid, seq));",
                     NULL, NULL, NULL),
        "schema");
  sqlite3_stmt *ins;
  check(db, sqlite3_prepare_v2(db, "INSERT INTO events VALUES (?, ?, ?, ?)", -1, &ins, NULL),
        "prepare");
  /* A MessagePack map of the size bench/journal.lua emits: {amount = 1, note = "..."}. */
  unsigned char payload[40];
  memset(payload, 'x', sizeof payload);
  char pids[WRITERS][32];
  for (int i = 0; i < WRITERS; i++) snprintf(pids[i], sizeof pids[i], "bench/raw/%d", i + 1);
  long long rows = 0, seq = 0;
  double t0 = now();
  while (now() - t0 < seconds) {
    seq++;
    check(db, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), "begin");
    for (int i = 0; i < WRITERS; i++) {
      sqlite3_bind_text(ins, 1, pids[i], -1, SQLITE_STATIC);
      sqlite3_bind_int64(ins, 2, seq);
      sqlite3_bind_blob(ins, 3, payload, sizeof payload, SQLITE_STATIC);
      sqlite3_bind_int64(ins, 4, (sqlite3_int64)time(NULL) * 1000);
      check(db, sqlite3_step(ins), "insert");
      sqlite3_reset(ins);
    }
    check(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "commit");
    rows += WRITERS;
  }
  printf("BENCH peer.sqlite-raw.insert.rate %.0f rows/s\n", (double)rows / (now() - t0));
  sqlite3_finalize(ins);
  sqlite3_close(db);
  remove(path);
  return 0;
}
