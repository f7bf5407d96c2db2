/* test_target: a fresh, empty database for the database-layer unit tests — a
 * file in a temporary folder (SQLite) or a schema of its own on the server
 * POCKITY_TEST_PG_URL names (PostgreSQL). */
#ifndef POCKITY_TEST_TARGET_H
#define POCKITY_TEST_TARGET_H

struct db;

enum backend {
    BK_SQLITE,
    BK_PG
};

extern enum backend g_backend; /* which one target_make makes */
extern const char *g_pg_url;   /* POCKITY_TEST_PG_URL, for BK_PG */

struct target {
    char dir[256];
    char path[300];
    char schema[64];
    char url[2048]; /* for db_open */
};

/* Run one statement on the PostgreSQL server outside the layer under test.
 * 0 or -1 (the error printed). */
int pg_admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A fresh database of g_backend, its folder or schema named after name
 * ("db", "usage"). 0 or -1. */
int target_make(struct target *t, const char *name);
/* Remove what target_make made. */
void target_drop(struct target *t);

/* A cmocka fixture: a fresh target, open through the layer under test. */
struct db_fixture {
    struct target t;
    struct db *db;
};

/* Make and open a target named after name into a new fixture in *state.
 * 0 or -1. */
int db_fixture_setup(void **state, const char *name);
/* Close and drop the fixture in *state. */
int db_fixture_teardown(void **state);

#endif
