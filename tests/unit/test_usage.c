/* test_usage: the usage ledger's batches (usage_ledger_set_many,
 * usage_lock_prefixes) against the one-by-one path they replace, on SQLite (a
 * temporary file) and on PostgreSQL when POCKITY_TEST_PG_URL names a server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "test_target.h"
#include "usage.h"

static int setup(void **state)
{
    return db_fixture_setup(state, "usage");
}

/* Pockets "b0".."b<n-1>" (the batch's) and "r0".. (the reference's), with
 * prefixes "root/<id>/". */
static void make_pockets(struct db_conn *c, int n)
{
    assert_int_equal(db_exec(c,
                             "INSERT INTO users (id, email, name, password_hash, created_at,"
                             " updated_at) VALUES ('u1', 'a@example.org', 'A', 'x', 1, 1)",
                             NULL, 0, NULL),
                     DB_OK);
    for (int i = 0; i < 2 * n; i++) {
        char id[16], prefix[32];
        snprintf(id, sizeof(id), "%c%d", i < n ? 'b' : 'r', i % n);
        snprintf(prefix, sizeof(prefix), "root/%s/", id);
        assert_int_equal(db_exec(c,
                                 "INSERT INTO pockets (id, user_id, name, tier_id, status, prefix,"
                                 " created_at, updated_at)"
                                 " VALUES ($1, 'u1', $1, 'free', 'active', $2, 1, 1)",
                                 DB_ARGS(DB_TEXT(id), DB_TEXT(prefix)), NULL),
                         DB_OK);
    }
}

/* The path the batch replaces, one change at a time: events.c's apply_one
 * before the batch (the sequencer check, usage_ledger_set, the sequencer
 * kept). */
static int apply_one(struct db_conn *c, struct usage_change *ch, int64_t now)
{
    ch->stale = false;
    ch->bytes_delta = ch->objects_delta = 0;
    if (ch->sequencer) {
        struct db_result *res = NULL;
        int rc = db_query(c, "SELECT sequencer FROM objects WHERE pocket_id = $1 AND key = $2",
                          DB_ARGS(DB_TEXT(ch->pocket_id), DB_TEXT(ch->key)), &res);
        if (rc)
            return rc;
        const char *have = db_result_rows(res) ? db_result_text(res, 0, 0) : NULL;
        ch->stale = have && strcmp(ch->sequencer, have) <= 0;
        db_result_free(res);
        if (ch->stale)
            return DB_OK;
    }
    int rc = usage_ledger_set(c, ch->pocket_id, ch->key, ch->size, ch->etag, now, &ch->bytes_delta,
                              &ch->objects_delta);
    if (rc || !ch->sequencer)
        return rc;
    return db_exec(
            c,
            "INSERT INTO objects (pocket_id, key, size, etag, sequencer, deleted,"
            " updated_at) VALUES ($1, $2, 0, NULL, $3, 1, $4) ON CONFLICT (pocket_id, key)"
            " DO UPDATE SET sequencer = excluded.sequencer",
            DB_ARGS(DB_TEXT(ch->pocket_id), DB_TEXT(ch->key), DB_TEXT(ch->sequencer), DB_INT(now)),
            NULL);
}

/* Every column of pocket id's ledger rows and totals, as one text. */
static char *dump(struct db_conn *c, const char *id)
{
    struct db_result *res = NULL;
    assert_int_equal(db_query(c,
                              "SELECT 0, key, size, COALESCE(etag, '-'),"
                              " COALESCE(sequencer, '-'), deleted, updated_at FROM objects"
                              " WHERE pocket_id = $1 UNION ALL SELECT 1, 'totals', used_bytes,"
                              " '', '', used_objects, reserved_bytes FROM pockets WHERE id = $1"
                              " ORDER BY 1, 2",
                              DB_ARGS(DB_TEXT(id)), &res),
                     DB_OK);
    size_t len = 1, cap = 1024;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    for (size_t r = 0; r < db_result_rows(res); r++) {
        char line[512];
        int n = snprintf(line, sizeof(line), "%s %s %s %s %s %s\n", db_result_text(res, r, 1),
                         db_result_text(res, r, 2), db_result_text(res, r, 3),
                         db_result_text(res, r, 4), db_result_text(res, r, 5),
                         db_result_text(res, r, 6));
        while (len + (size_t)n > cap) {
            cap *= 2;
            char *grown = realloc(out, cap);
            assert_non_null(grown);
            out = grown;
        }
        memcpy(out + len - 1, line, (size_t)n + 1);
        len += (size_t)n;
    }
    db_result_free(res);
    return out;
}

static const char *const keys[] = {"a",        "b",   "c", "dir/d", "e e", "z\xc3\xbcrich",
                                   "\"q\\,{}", "NULL"};
static const char *const seqs[] = {
        "00000000000000000000000000000001", "00000000000000000000000000000002",
        "00000000000000000000000000000003", "0000000000000000000000000000000A"};
static const char *const etags[] = {"\"e1\"", "\"e2\"", "\"e3\""};

#define N_KEYS    (sizeof(keys) / sizeof(keys[0]))
#define N_POCKETS 3
#define ROUNDS    120
#define MAX_BATCH 40

/* Random batches over a few keys of a few pockets, with sequencers or
 * without, on ledgers that already hold rows and totals that drifted below
 * them (so they clamp): the batch leaves every row and total as the
 * one-by-one path leaves its twin pocket, and reports the same per change. */
static void test_batch_matches_one_by_one(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pockets(c, N_POCKETS);
    unsigned seed = 12345;
    int64_t now = 1700000000;
    int stale_seen = 0, clamped_seen = 0;
    for (int round = 0; round < ROUNDS; round++) {
        now += rand_r(&seed) % 2; /* some rounds in the same second as the last */
        /* Now and then the totals drift below the ledger, as after a bug. */
        if (rand_r(&seed) % 4 == 0) {
            int64_t ub = rand_r(&seed) % 50, uo = rand_r(&seed) % 2;
            assert_int_equal(db_exec(c, "UPDATE pockets SET used_bytes = $1, used_objects = $2",
                                     DB_ARGS(DB_INT(ub), DB_INT(uo)), NULL),
                             DB_OK);
            clamped_seen++;
        }
        struct usage_change batch[MAX_BATCH], ref[MAX_BATCH];
        char pocket_b[MAX_BATCH][8], pocket_r[MAX_BATCH][8];
        size_t n = (size_t)(rand_r(&seed) % MAX_BATCH) + (round == 0 ? 1 : 0);
        for (size_t i = 0; i < n; i++) {
            int p = rand_r(&seed) % N_POCKETS;
            snprintf(pocket_b[i], sizeof(pocket_b[i]), "b%d", p);
            snprintf(pocket_r[i], sizeof(pocket_r[i]), "r%d", p);
            int kind = rand_r(&seed) % 10;
            batch[i] = (struct usage_change){
                    .pocket_id = pocket_b[i],
                    .key = keys[rand_r(&seed) % N_KEYS],
                    .size = kind < 3    ? -1
                            : kind == 3 ? 0
                                        : rand_r(&seed) % 1000,
                    .etag = rand_r(&seed) % 4 ? etags[rand_r(&seed) % 3] : NULL,
                    .sequencer = rand_r(&seed) % 3 ? seqs[rand_r(&seed) % 4] : NULL,
            };
            ref[i] = batch[i];
            ref[i].pocket_id = pocket_r[i];
        }
        assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
        for (int p = 0; p < N_POCKETS; p++) {
            char b[8], r[8];
            snprintf(b, sizeof(b), "b%d", p);
            snprintf(r, sizeof(r), "r%d", p);
            assert_int_equal(usage_lock_pocket(c, b, NULL), DB_OK);
            assert_int_equal(usage_lock_pocket(c, r, NULL), DB_OK);
        }
        for (size_t i = 0; i < n; i++)
            assert_int_equal(apply_one(c, &ref[i], now), DB_OK);
        assert_int_equal(usage_ledger_set_many(c, batch, n, now), DB_OK);
        assert_int_equal(db_commit(c), DB_OK);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(batch[i].stale, ref[i].stale);
            assert_true(batch[i].bytes_delta == ref[i].bytes_delta);
            assert_true(batch[i].objects_delta == ref[i].objects_delta);
            stale_seen += ref[i].stale;
        }
        for (int p = 0; p < N_POCKETS; p++) {
            char b[8], r[8];
            snprintf(b, sizeof(b), "b%d", p);
            snprintf(r, sizeof(r), "r%d", p);
            char *got = dump(c, b), *want = dump(c, r);
            if (strcmp(got, want) != 0)
                fprintf(stderr, "round %d, pocket %d:\nbatch:\n%sone by one:\n%s", round, p, got,
                        want);
            assert_string_equal(got, want);
            free(got);
            free(want);
        }
    }
    /* The random rounds did reach the interesting cases. */
    assert_true(stale_seen > 10);
    assert_true(clamped_seen > 10);
    db_release(c);
}

/* A page as reconciliation makes one: new keys, overwrites with and without
 * a size change, removals of live rows and of tombstones, with the deltas it
 * reports and the rows it leaves, row by row. */
static void test_batch_page(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pockets(c, 1);
    assert_int_equal(
            db_exec(c,
                    "INSERT INTO objects (pocket_id, key, size, etag, sequencer, deleted,"
                    " updated_at) VALUES ('b0', 'same', 10, 'x', NULL, 0, 5),"
                    " ('b0', 'grow', 10, 'x', 'S', 0, 5), ('b0', 'gone', 30, 'x', NULL, 0, 5),"
                    " ('b0', 'dead', 0, NULL, NULL, 1, 5)",
                    NULL, 0, NULL),
            DB_OK);
    assert_int_equal(
            db_exec(c, "UPDATE pockets SET used_bytes = 50, used_objects = 3", NULL, 0, NULL),
            DB_OK);
    struct usage_change ch[] = {
            {.pocket_id = "b0", .key = "dead", .size = -1},
            {.pocket_id = "b0", .key = "gone", .size = -1},
            {.pocket_id = "b0", .key = "grow", .size = 25, .etag = "y"},
            {.pocket_id = "b0", .key = "new", .size = 7, .etag = "n"},
            {.pocket_id = "b0", .key = "new0", .size = 0},
            {.pocket_id = "b0", .key = "same", .size = 10, .etag = "z"},
            {.pocket_id = "b0", .key = "unknown", .size = -1},
    };
    const size_t n = sizeof(ch) / sizeof(ch[0]);
    const int64_t want[][2] = {{0, 0}, {-30, -1}, {15, 0}, {7, 1}, {0, 1}, {0, 0}, {0, 0}};
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(usage_lock_pocket(c, "b0", NULL), DB_OK);
    assert_int_equal(usage_ledger_set_many(c, ch, n, 99), DB_OK);
    assert_int_equal(db_commit(c), DB_OK);
    for (size_t i = 0; i < n; i++) {
        assert_false(ch[i].stale);
        assert_true(ch[i].bytes_delta == want[i][0]);
        assert_true(ch[i].objects_delta == want[i][1]);
    }
    char *got = dump(c, "b0");
    assert_string_equal(got, "dead 0 - - 1 5\n"
                             "gone 0 - - 1 99\n"
                             "grow 25 y S 0 99\n"
                             "new 7 n - 0 99\n"
                             "new0 0 - - 0 99\n"
                             "same 10 z - 0 99\n"
                             "totals 42   4 0\n");
    free(got);
    /* Bad changes write nothing. */
    struct usage_change bad = {.pocket_id = "b0", .key = "", .size = 1};
    assert_int_equal(usage_ledger_set_many(c, &bad, 1, 100), DB_ERR_INVALID);
    bad.key = "k";
    bad.size = USAGE_MAX_OBJECT_SIZE + 1;
    assert_int_equal(usage_ledger_set_many(c, &bad, 1, 100), DB_ERR_INVALID);
    assert_int_equal(usage_ledger_set_many(c, NULL, 0, 100), DB_OK);
    db_release(c);
}

/* Pockets found by prefix, the unknown ones left "". */
static void test_lock_prefixes(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pockets(c, 2);
    const char *prefixes[] = {"root/b1/", "root/none/", "root/b0/", "root/r0/"};
    char ids[4][64];
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(usage_lock_prefixes(c, prefixes, 4, ids), DB_OK);
    assert_int_equal(db_commit(c), DB_OK);
    assert_string_equal(ids[0], "b1");
    assert_string_equal(ids[1], "");
    assert_string_equal(ids[2], "b0");
    assert_string_equal(ids[3], "r0");
    assert_int_equal(usage_lock_prefixes(c, NULL, 0, NULL), DB_OK);
    db_release(c);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, db_fixture_teardown)

int main(void)
{
    const struct CMUnitTest both[] = {
            T(test_batch_matches_one_by_one),
            T(test_batch_page),
            T(test_lock_prefixes),
    };
    g_backend = BK_SQLITE;
    int failed = cmocka_run_group_tests_name("usage sqlite", both, NULL, NULL);
    g_pg_url = getenv("POCKITY_TEST_PG_URL");
    if (!g_pg_url || !*g_pg_url) {
        printf("skipping postgresql: POCKITY_TEST_PG_URL not set\n");
        return failed ? 1 : 0;
    }
    g_backend = BK_PG;
    failed += cmocka_run_group_tests_name("usage postgresql", both, NULL, NULL);
    return failed ? 1 : 0;
}
