/* test_db: the database layer, the same tests on SQLite (a temporary file) and on
 * PostgreSQL when POCKITY_TEST_PG_URL names a server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "migrations.h"
#include "test_target.h"

static int setup(void **state)
{
    return db_fixture_setup(state, "db");
}

/* Create a user, and a pocket on a tier of max_bytes, used_bytes already used. */
static void make_pocket(struct db_conn *c, const char *pocket, int64_t max_bytes,
                        int64_t used_bytes)
{
    int rc = db_exec(c,
                     "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                     " VALUES ('u1', 'a@example.org', 'A', 'x', 1, 1)",
                     NULL, 0, NULL);
    assert_int_equal(rc, DB_OK);
    rc = db_exec(c,
                 "INSERT INTO tiers (id, name, max_bytes, max_objects, needs_approval, "
                 "created_at) VALUES ('small', 'Small', $1, 100, 0, 1)",
                 DB_ARGS(DB_INT(max_bytes)), NULL);
    assert_int_equal(rc, DB_OK);
    rc = db_exec(c,
                 "INSERT INTO pockets (id, user_id, name, tier_id, status, prefix, used_bytes,"
                 " created_at, updated_at) VALUES ($1, 'u1', $1, 'small', 'active', $1, $2, 1, 1)",
                 DB_ARGS(DB_TEXT(pocket), DB_INT(used_bytes)), NULL);
    assert_int_equal(rc, DB_OK);
}

/* The conditional reservation: granted only when it fits the pocket's tier. */
static const char *const reserve_sql =
        "UPDATE pockets SET reserved_bytes = reserved_bytes + $1"
        " WHERE id = $2 AND used_bytes + reserved_bytes + $1 <="
        " (SELECT max_bytes FROM tiers WHERE tiers.id = pockets.tier_id)";

static int64_t count_rows(struct db_conn *c, const char *sql)
{
    int64_t n = -1;
    assert_int_equal(db_query_int(c, sql, NULL, 0, &n), DB_OK);
    return n;
}

/* ---- tests run on each backend ---- */

static void test_migrations(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM schema_migrations"), migrations_latest());
    assert_int_equal(count_rows(c, "SELECT MAX(version) FROM schema_migrations"),
                     migrations_latest());
    assert_int_equal(count_rows(c, "SELECT max_bytes FROM tiers WHERE id = 'free'"), 1073741824);
    assert_int_equal(count_rows(c, "SELECT max_objects FROM tiers WHERE id = 'free'"), 10000);
    assert_int_equal(count_rows(c, "SELECT needs_approval FROM tiers WHERE id = 'free'"), 0);
    assert_true(count_rows(c, "SELECT created_at FROM tiers WHERE id = 'free'") > 1600000000);
    db_release(c);

    /* Opening again applies nothing and changes nothing. */
    db_close(f->db);
    char err[256];
    assert_int_equal(db_open(f->t.url, NULL, &f->db, err, sizeof(err)), DB_OK);
    c = db_acquire(f->db);
    assert_non_null(c);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM schema_migrations"), migrations_latest());
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM tiers"), 1);
    assert_int_equal(db_dialect(f->db), g_backend == BK_SQLITE ? DB_SQLITE : DB_POSTGRES);
    db_release(c);
}

static void test_newer_schema_refused(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    assert_int_equal(db_exec(c,
                             "INSERT INTO schema_migrations (version, name, applied_at)"
                             " VALUES ($1, 'from the future', 0)",
                             DB_ARGS(DB_INT(migrations_latest() + 1)), NULL),
                     DB_OK);
    db_release(c);
    db_close(f->db);

    char err[256];
    assert_int_equal(db_open(f->t.url, NULL, &f->db, err, sizeof(err)), DB_ERR_SCHEMA);
    assert_null(f->db);
    assert_non_null(strstr(err, "newer than this program"));
}

struct open_job {
    const char *url;
    int rc;
    char err[256];
};

static void *open_thread(void *arg)
{
    struct open_job *j = arg;
    struct db *db = NULL;
    j->rc = db_open(j->url, NULL, &db, j->err, sizeof(j->err));
    db_close(db);
    return NULL;
}

/* Several replicas starting at once on one empty database migrate it exactly once. */
static void test_concurrent_open(void **state)
{
    struct target t;
    assert_int_equal(target_make(&t, "db"), 0);
    enum {
        N = 4
    };
    pthread_t th[N];
    struct open_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i].url = t.url;
        jobs[i].rc = -1;
        assert_int_equal(pthread_create(&th[i], NULL, open_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        if (jobs[i].rc)
            fprintf(stderr, "open %d: %s\n", i, jobs[i].err);
        assert_int_equal(jobs[i].rc, DB_OK);
    }
    struct db *db;
    char err[256];
    assert_int_equal(db_open(t.url, NULL, &db, err, sizeof(err)), DB_OK);
    struct db_conn *c = db_acquire(db);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM schema_migrations"), migrations_latest());
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM tiers"), 1);
    db_release(c);
    db_close(db);
    target_drop(&t);
}

static void test_params_roundtrip(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    assert_int_equal(
            db_exec(c, "CREATE TABLE t (id TEXT PRIMARY KEY, i BIGINT, s TEXT)", NULL, 0, NULL),
            DB_OK);

    static const struct {
        const char *id;
        int64_t i;
        const char *s;
    } rows[] = {
            {"max", INT64_MAX, "plain"},
            {"max-1", INT64_MAX - 1, "it's \"quoted\" \\ back"},
            {"min", INT64_MIN, "'; DROP TABLE users; --"},
            {"zero", 0, "$1 ? :name %s %n"},
            {"neg", -1, "z\xc3\xbcrich \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82"},
            {"empty", 42, ""},
    };
    const size_t n = sizeof(rows) / sizeof(rows[0]);
    for (size_t k = 0; k < n; k++) {
        int64_t changes = -1;
        assert_int_equal(
                db_exec(c, "INSERT INTO t (id, i, s) VALUES ($1, $2, $3)",
                        DB_ARGS(DB_TEXT(rows[k].id), DB_INT(rows[k].i), DB_TEXT(rows[k].s)),
                        &changes),
                DB_OK);
        assert_int_equal(changes, 1);
    }
    /* NULLs: DB_NULL and DB_TEXT(NULL); a counted string that is not terminated. */
    assert_int_equal(db_exec(c, "INSERT INTO t (id, i, s) VALUES ('nulls', $1, $2)",
                             DB_ARGS(DB_NULL(), DB_TEXT(NULL)), NULL),
                     DB_OK);
    assert_int_equal(db_exec(c, "INSERT INTO t (id, i, s) VALUES ($1, 7, $2)",
                             DB_ARGS(DB_TEXTN("counted-XXX", 7), DB_TEXTN("abcdef", 3)), NULL),
                     DB_OK);

    for (size_t k = 0; k < n; k++) {
        struct db_result *res = NULL;
        assert_int_equal(db_query_row(c, "SELECT i, s, id FROM t WHERE id = $1",
                                      DB_ARGS(DB_TEXT(rows[k].id)), &res),
                         DB_OK);
        assert_int_equal(db_result_rows(res), 1);
        assert_int_equal(db_result_cols(res), 3);
        assert_string_equal(db_result_name(res, 0), "i");
        assert_string_equal(db_result_name(res, 1), "s");
        assert_true(db_result_int(res, 0, 0) == rows[k].i);
        assert_string_equal(db_result_text(res, 0, 1), rows[k].s);
        assert_string_equal(db_result_text(res, 0, 2), rows[k].id);
        assert_false(db_result_is_null(res, 0, 1));
        db_result_free(res);
    }

    struct db_result *res = NULL;
    assert_int_equal(db_query_row(c, "SELECT i, s FROM t WHERE id = 'nulls'", NULL, 0, &res),
                     DB_OK);
    assert_true(db_result_is_null(res, 0, 0));
    assert_true(db_result_is_null(res, 0, 1));
    assert_null(db_result_text(res, 0, 1));
    assert_int_equal(db_result_int(res, 0, 0), 0);
    db_result_free(res);
    assert_int_equal(db_query_row(c, "SELECT s FROM t WHERE id = 'counted'", NULL, 0, &res), DB_OK);
    assert_string_equal(db_result_text(res, 0, 0), "abc");
    db_result_free(res);

    /* The injection text was stored, not run. */
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 0);
    /* Ordering and comparisons on 64-bit values. */
    assert_int_equal(db_query(c, "SELECT id FROM t WHERE i >= $1 ORDER BY i DESC",
                              DB_ARGS(DB_INT(INT64_MAX - 1)), &res),
                     DB_OK);
    assert_int_equal(db_result_rows(res), 2);
    assert_string_equal(db_result_text(res, 0, 0), "max");
    assert_string_equal(db_result_text(res, 1, 0), "max-1");
    db_result_free(res);

    /* Integer parameters work in arithmetic without casts; $1 may repeat. */
    int64_t v = 0;
    assert_int_equal(db_query_int(c, "SELECT $1 + 1", DB_ARGS(DB_INT(41)), &v), DB_OK);
    assert_int_equal(v, 42);
    assert_int_equal(
            db_query_int(c, "SELECT $1 * $1 - $2", DB_ARGS(DB_INT(3000000000LL), DB_INT(1)), &v),
            DB_OK);
    assert_true(v == 9000000000000000000LL - 1);
    assert_int_equal(db_query_row(c, "SELECT $1 || $2 AS joined",
                                  DB_ARGS(DB_TEXT("ab"), DB_TEXT("cd")), &res),
                     DB_OK);
    assert_string_equal(db_result_text(res, 0, 0), "abcd");
    assert_string_equal(db_result_name(res, 0), "joined");
    db_result_free(res);
    assert_int_equal(db_query_int(c, "SELECT COUNT(*) FROM t WHERE CAST($1 AS TEXT) IS NULL",
                                  DB_ARGS(DB_NULL()), &v),
                     DB_OK);
    assert_int_equal(v, 8);

    /* An UPDATE reports the rows it changed; a SELECT reports none. */
    int64_t changes = -1;
    assert_int_equal(db_exec(c, "UPDATE t SET s = $1 WHERE i > $2",
                             DB_ARGS(DB_TEXT("x"), DB_INT(0)), &changes),
                     DB_OK);
    assert_int_equal(changes, 4);
    assert_int_equal(db_exec(c, "SELECT * FROM t", NULL, 0, &changes), DB_OK);
    assert_int_equal(changes, 0);

    /* RETURNING works on both. */
    assert_int_equal(db_query(c, "DELETE FROM t WHERE i < 0 RETURNING id", NULL, 0, &res), DB_OK);
    assert_int_equal(db_result_rows(res), 2);
    db_result_free(res);
    db_release(c);
}

/* Array parameters: a batch of rows in one statement, spelled per engine. */
static void test_array_params(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    bool pg = db_conn_dialect(c) == DB_POSTGRES;
    assert_int_equal(
            db_exec(c, "CREATE TABLE t (id TEXT PRIMARY KEY, i BIGINT, s TEXT)", NULL, 0, NULL),
            DB_OK);
    static const char *const ids[] = {"a", "b", "c", "d", "e", "f", "g"};
    static const int64_t ints[] = {INT64_MAX, INT64_MIN, 0, -1, 42, 7, 1};
    static const char *const texts[] = {
            "plain",
            "it's \"quoted\" \\ back\\",
            "{NULL}, {a,b} [1] ",
            NULL,
            "tab\there\nnl \x01\x1f z\xc3\xbcrich \xf0\x9f\x99\x82",
            "",
            "NULL",
    };
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    int64_t changes = 0;
    assert_int_equal(
            db_exec(c,
                    pg ? "INSERT INTO t (id, i, s) SELECT * FROM unnest($1, $2, $3)"
                       : "INSERT INTO t (id, i, s) SELECT value, $2 ->> key, $3 ->> key"
                         " FROM json_each($1)",
                    DB_ARGS(DB_TEXT_ARRAY(ids, n), DB_INT_ARRAY(ints, n), DB_TEXT_ARRAY(texts, n)),
                    &changes),
            DB_OK);
    assert_int_equal(changes, n);
    for (size_t k = 0; k < n; k++) {
        struct db_result *res = NULL;
        assert_int_equal(
                db_query_row(c, "SELECT i, s FROM t WHERE id = $1", DB_ARGS(DB_TEXT(ids[k])), &res),
                DB_OK);
        assert_true(db_result_int(res, 0, 0) == ints[k]);
        if (texts[k])
            assert_string_equal(db_result_text(res, 0, 1), texts[k]);
        else
            assert_true(db_result_is_null(res, 0, 1));
        db_result_free(res);
    }
    /* Membership, and each element's position. */
    static const char *const some[] = {"g", "zz", "b"};
    struct db_result *res = NULL;
    assert_int_equal(db_query(c,
                              pg ? "SELECT u.i - 1, t.i FROM unnest($1) WITH ORDINALITY"
                                   " AS u(id, i) JOIN t ON t.id = u.id ORDER BY 1"
                                 : "SELECT u.key, t.i FROM json_each($1) u JOIN t"
                                   " ON t.id = u.value ORDER BY 1",
                              DB_ARGS(DB_TEXT_ARRAY(some, 3)), &res),
                     DB_OK);
    assert_int_equal(db_result_rows(res), 2);
    assert_int_equal(db_result_int(res, 0, 0), 0);
    assert_int_equal(db_result_int(res, 0, 1), 1);
    assert_int_equal(db_result_int(res, 1, 0), 2);
    assert_true(db_result_int(res, 1, 1) == INT64_MIN);
    db_result_free(res);
    int64_t v = -1;
    assert_int_equal(db_query_int(c,
                                  pg ? "SELECT COUNT(*) FROM t WHERE i = ANY($1)"
                                     : "SELECT COUNT(*) FROM t WHERE i IN"
                                       " (SELECT value FROM json_each($1))",
                                  DB_ARGS(DB_INT_ARRAY(ints + 3, 3)), &v),
                     DB_OK);
    assert_int_equal(v, 3);
    /* Empty arrays are arrays too. */
    assert_int_equal(db_query_int(c,
                                  pg ? "SELECT COUNT(*) FROM unnest($1) WHERE $2 = 0"
                                     : "SELECT COUNT(*) FROM json_each($1) WHERE $2 = 0",
                                  DB_ARGS(DB_TEXT_ARRAY(NULL, 0), DB_INT(0)), &v),
                     DB_OK);
    assert_int_equal(v, 0);
    /* An element that is not UTF-8 is refused before it reaches the engine. */
    static const char *const bad[] = {"ok", "\xc3\x28"};
    assert_int_equal(db_exec(c, pg ? "SELECT unnest($1)" : "SELECT 1 FROM json_each($1)",
                             DB_ARGS(DB_TEXT_ARRAY(bad, 2)), NULL),
                     DB_ERR_INVALID);
    assert_non_null(strstr(db_conn_errmsg(c), "$1[2]"));
    assert_int_equal(db_exec(c, "SELECT $1", DB_ARGS(DB_INT_ARRAY(NULL, 2)), NULL), DB_ERR_INVALID);
    db_release(c);
}

static void test_bad_statements(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    struct db_result *res = (struct db_result *)&res; /* must be reset to NULL */

    /* Text with a NUL inside or bad UTF-8 is refused before it reaches the engine. */
    assert_int_equal(db_exec(c, "SELECT $1", DB_ARGS(DB_TEXTN("a\0b", 3)), NULL), DB_ERR_INVALID);
    assert_non_null(strstr(db_conn_errmsg(c), "$1"));
    assert_int_equal(db_exec(c, "SELECT $2", DB_ARGS(DB_INT(1), DB_TEXT("\xc3\x28")), NULL),
                     DB_ERR_INVALID);
    assert_int_equal(db_exec(c, "SELECT $1", DB_ARGS(DB_TEXT("\xed\xa0\x80")), NULL),
                     DB_ERR_INVALID);
    assert_int_equal(db_exec(c, "SELECT $1", DB_ARGS(DB_TEXT("\xc0\xaf")), NULL), DB_ERR_INVALID);
    assert_int_equal(db_exec(c, NULL, NULL, 0, NULL), DB_ERR_INVALID);
    assert_int_equal(db_query(c, "SELECT 1", NULL, 0, NULL), DB_ERR_INVALID);

    /* A placeholder without its parameter, a syntax error, two statements. */
    assert_int_not_equal(db_query(c, "SELECT $2", DB_ARGS(DB_INT(1)), &res), DB_OK);
    assert_null(res);
    assert_int_not_equal(db_query(c, "SELECT ?", DB_ARGS(DB_INT(1)), &res), DB_OK);
    assert_int_equal(db_exec(c, "SELEKT 1", NULL, 0, NULL), DB_ERR_SQL);
    assert_true(strlen(db_conn_errmsg(c)) > 0);
    assert_int_not_equal(db_exec(c, "SELECT 1; DELETE FROM tiers", NULL, 0, NULL), DB_OK);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM tiers"), 1);
    assert_int_not_equal(db_exec(c, "", NULL, 0, NULL), DB_OK);

    /* The connection still works after all that, and errmsg is cleared by success. */
    assert_int_equal(count_rows(c, "SELECT 7"), 7);
    assert_string_equal(db_conn_errmsg(c), "");
    db_release(c);
}

static void test_constraints(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pocket(c, "p1", 100, 0);

    const char *ins = "INSERT INTO users (id, email, name, password_hash, role, created_at,"
                      " updated_at) VALUES ($1, $2, 'B', 'hash', $3, 1, 1)";
    int rc = db_exec(c, ins, DB_ARGS(DB_TEXT("u2"), DB_TEXT("a@example.org"), DB_TEXT("user")),
                     NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT);
    /* The message names the constraint, never the value. */
    assert_true(strlen(db_conn_errmsg(c)) > 0);
    assert_null(strstr(db_conn_errmsg(c), "a@example.org"));

    rc = db_exec(c, ins, DB_ARGS(DB_TEXT("u1"), DB_TEXT("other@example.org"), DB_TEXT("user")),
                 NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT); /* primary key */
    rc = db_exec(c, ins, DB_ARGS(DB_TEXT("u3"), DB_TEXT("c@example.org"), DB_TEXT("root")), NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT); /* check */
    rc = db_exec(c,
                 "INSERT INTO api_keys (id, pocket_id, user_id, name, access, secret_hash,"
                 " created_at) VALUES ('k1', 'nope', 'u1', 'k', 'rw', 'h', 1)",
                 NULL, 0, NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT); /* foreign key */
    rc = db_exec(c, "UPDATE pockets SET used_bytes = used_bytes - $1 WHERE id = 'p1'",
                 DB_ARGS(DB_INT(1)), NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT); /* used_bytes >= 0 */
    rc = db_exec(c,
                 "INSERT INTO pockets (id, user_id, name, tier_id, prefix, created_at,"
                 " updated_at) VALUES ('p2', 'u1', 'p1', 'free', 'x/p2', 1, 1)",
                 NULL, 0, NULL);
    assert_int_equal(rc, DB_ERR_CONSTRAINT); /* unique (user_id, name) */

    /* One pending tier request per pocket. */
    const char *req = "INSERT INTO tier_requests (id, pocket_id, user_id, from_tier, to_tier,"
                      " created_at) VALUES ($1, 'p1', 'u1', 'small', 'free', 1)";
    assert_int_equal(db_exec(c, req, DB_ARGS(DB_TEXT("r1")), NULL), DB_OK);
    assert_int_equal(db_exec(c, req, DB_ARGS(DB_TEXT("r2")), NULL), DB_ERR_CONSTRAINT);

    /* Deleting a pocket takes its dependent rows along. */
    assert_int_equal(db_exec(c,
                             "INSERT INTO objects (pocket_id, key, size, updated_at)"
                             " VALUES ('p1', 'a/b.txt', 5, 1)",
                             NULL, 0, NULL),
                     DB_OK);
    assert_int_equal(db_exec(c, "DELETE FROM pockets WHERE id = 'p1'", NULL, 0, NULL), DB_OK);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM objects"), 0);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM tier_requests"), 0);

    /* audit_log numbers its rows itself. */
    struct db_result *res;
    const char *audit = "INSERT INTO audit_log (at, actor_type, action, target_type, detail)"
                        " VALUES ($1, 'system', 'test', 'pocket', '{}') RETURNING id";
    assert_int_equal(db_query_row(c, audit, DB_ARGS(DB_INT(time(NULL))), &res), DB_OK);
    int64_t id1 = db_result_int(res, 0, 0);
    db_result_free(res);
    assert_int_equal(db_query_row(c, audit, DB_ARGS(DB_INT(time(NULL))), &res), DB_OK);
    assert_true(db_result_int(res, 0, 0) > id1);
    db_result_free(res);
    db_release(c);
}

static int tx_insert_user(struct db_conn *c, void *arg)
{
    int rc = db_exec(c,
                     "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                     " VALUES ($1, $1, 'T', 'h', 1, 1)",
                     DB_ARGS(DB_TEXT("tx@example.org")), NULL);
    if (rc)
        return rc;
    return *(int *)arg;
}

static int tx_nothing(struct db_conn *c, void *arg)
{
    return DB_OK;
}

static void test_transactions(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    const char *ins = "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                      " VALUES ($1, $1, 'T', 'h', 1, 1)";

    /* Rollback leaves nothing. */
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_ERR_INVALID); /* no nesting */
    assert_int_equal(db_transact_on(c, tx_nothing, NULL), DB_ERR_INVALID);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("r@x")), NULL), DB_OK);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(db_rollback(c), DB_OK);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 0);
    assert_int_equal(db_rollback(c), DB_ERR_INVALID);
    assert_int_equal(db_commit(c), DB_ERR_INVALID);

    /* Commit keeps it, and another connection sees it. */
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("c@x")), NULL), DB_OK);
    assert_int_equal(db_commit(c), DB_OK);
    struct db_conn *c2 = db_acquire(f->db);
    assert_non_null(c2);
    assert_ptr_not_equal(c, c2);
    assert_int_equal(count_rows(c2, "SELECT COUNT(*) FROM users"), 1);

    /* A constraint error inside a transaction, then rollback, leaves the first row. */
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("c@x")), NULL), DB_ERR_CONSTRAINT);
    assert_int_equal(db_rollback(c), DB_OK);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 1);

    /* A transaction in which a statement failed does not commit, on both backends. */
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("f@x")), NULL), DB_OK);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("c@x")), NULL), DB_ERR_CONSTRAINT);
    assert_int_equal(db_commit(c), DB_ERR_CONSTRAINT);
    assert_non_null(strstr(db_conn_errmsg(c), "rolled back"));
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK); /* usable again */
    assert_int_equal(db_commit(c), DB_OK);

    /* A read transaction sees one snapshot. */
    assert_int_equal(db_begin(c2, DB_TX_READ), DB_OK);
    assert_int_equal(count_rows(c2, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("d@x")), NULL), DB_OK);
    assert_int_equal(count_rows(c2, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(db_commit(c2), DB_OK);
    assert_int_equal(count_rows(c2, "SELECT COUNT(*) FROM users"), 2);
    db_release(c2);

    /* Releasing a connection with an open transaction rolls it back. */
    assert_int_equal(db_begin(c, DB_TX_WRITE), DB_OK);
    assert_int_equal(db_exec(c, ins, DB_ARGS(DB_TEXT("e@x")), NULL), DB_OK);
    db_release(c);
    c = db_acquire(f->db);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users"), 2);
    db_release(c);

    /* db_transact: a nonzero return rolls back and comes back unchanged; 0 commits. */
    int ret = 1234;
    assert_int_equal(db_transact(f->db, tx_insert_user, &ret), 1234);
    c = db_acquire(f->db);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users WHERE id = 'tx@example.org'"), 0);
    db_release(c);
    ret = DB_OK;
    assert_int_equal(db_transact(f->db, tx_insert_user, &ret), DB_OK);
    assert_int_equal(db_transact(f->db, tx_insert_user, &ret), DB_ERR_CONSTRAINT);
    c = db_acquire(f->db);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users WHERE id = 'tx@example.org'"), 1);
    db_release(c);
}

static int retry_counter(struct db_conn *c, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return *calls < 3 ? DB_ERR_RETRY : DB_OK;
}

static void test_transact_retries(void **state)
{
    struct db_fixture *f = *state;
    int calls = 0;
    assert_int_equal(db_transact(f->db, retry_counter, &calls), DB_OK);
    assert_int_equal(calls, 3);
    calls = -100; /* always asks to retry: bounded */
    assert_int_equal(db_transact(f->db, retry_counter, &calls), DB_ERR_RETRY);
    assert_int_equal(calls, -100 + DB_TRANSACT_ATTEMPTS);
}

/* Many threads' write transactions at once (grouped into shared transactions
 * on SQLite): each body's outcome stays its own. A body that inserts a row
 * and then refuses, or inserts one and then hits a constraint, leaves nothing;
 * the others commit. */
enum {
    GROUP_THREADS = 48, /* more than one group (32) of callers waiting at once */
    GROUP_TRIES = 40
};

struct group_job {
    const char *id;
    int kind; /* 0 commit, 1 refuse after inserting, 2 constraint after inserting */
};

static int tx_group_body(struct db_conn *c, void *arg)
{
    const struct group_job *j = arg;
    const char *ins = "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                      " VALUES ($1, $1, 'G', 'h', 1, 1)";
    int rc = db_exec(c, ins, DB_ARGS(DB_TEXT(j->id)), NULL);
    if (rc || j->kind == 0)
        return rc;
    if (j->kind == 1)
        return 4242;
    (void)db_exec(c, ins, DB_ARGS(DB_TEXT("group-taken@example.org")), NULL);
    return DB_OK; /* the failed statement still fails the transaction */
}

struct group_thread {
    struct db *db;
    int n;
    int wrong; /* statuses not as expected */
};

static void *group_thread_main(void *arg)
{
    struct group_thread *t = arg;
    for (int i = 0; i < GROUP_TRIES; i++) {
        char id[64];
        snprintf(id, sizeof(id), "g%d-%d@example.org", t->n, i);
        struct group_job j = {id, i % 3};
        int want = j.kind == 0 ? DB_OK : j.kind == 1 ? 4242 : DB_ERR_CONSTRAINT;
        if (db_transact(t->db, tx_group_body, &j) != want)
            t->wrong++;
    }
    return NULL;
}

static void test_transact_group(void **state)
{
    struct db_fixture *f = *state;
    /* a pool as large as the callers, so that they all queue at once */
    db_close(f->db);
    char err[256];
    struct db_options opt = {.pool_size = GROUP_THREADS};
    assert_int_equal(db_open(f->t.url, &opt, &f->db, err, sizeof(err)), DB_OK);
    struct group_job taken = {"group-taken@example.org", 0};
    assert_int_equal(db_transact(f->db, tx_group_body, &taken), DB_OK);
    struct group_thread t[GROUP_THREADS];
    pthread_t th[GROUP_THREADS];
    for (int i = 0; i < GROUP_THREADS; i++) {
        t[i] = (struct group_thread){.db = f->db, .n = i};
        assert_int_equal(pthread_create(&th[i], NULL, group_thread_main, &t[i]), 0);
    }
    for (int i = 0; i < GROUP_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].wrong, 0);
    }
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    /* kinds 0, 1, 2 in turn: a third of the tries committed, plus "taken" */
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users WHERE name = 'G'"),
                     GROUP_THREADS * ((GROUP_TRIES + 2) / 3) + 1);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM users WHERE id = 'g3-1@example.org'"
                                   " OR id = 'g3-2@example.org'"),
                     0);
    db_release(c);
}

/* SQLite's write-ahead log under a steady load of commits from many threads
 * (with readers between them): the checkpointer thread copies it and has it
 * start over, so the file stays near its threshold (1000 pages) instead of
 * growing with everything written (~70 MB here; the log would be larger
 * still, as a row of 3000 bytes takes two pages). */
enum {
    WAL_THREADS = 8,
    WAL_TRIES = 3000,
    WAL_VALUE = 3000
};

static char wal_value[WAL_VALUE + 1];

static int wal_body(struct db_conn *c, void *arg)
{
    return db_exec(c, "INSERT INTO wal_load (v) VALUES ($1)", DB_ARGS(DB_TEXT(arg)), NULL);
}

static void *wal_thread_main(void *arg)
{
    struct db *db = arg;
    intptr_t wrong = 0;
    for (int i = 0; i < WAL_TRIES; i++) {
        if (db_transact(db, wal_body, wal_value) != DB_OK)
            wrong++;
        struct db_conn *c = db_acquire(db);
        int64_t n = -1;
        if (!c || db_query_int(c, "SELECT MAX(id) FROM wal_load", NULL, 0, &n) != DB_OK || n < 1)
            wrong++;
        db_release(c);
    }
    return (void *)wrong;
}

static void test_wal_bounded(void **state)
{
    struct db_fixture *f = *state;
    memset(wal_value, 'w', WAL_VALUE);
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    assert_int_equal(
            db_exec(c, "CREATE TABLE wal_load (id INTEGER PRIMARY KEY, v TEXT)", NULL, 0, NULL),
            DB_OK);
    db_release(c);
    pthread_t th[WAL_THREADS];
    for (int i = 0; i < WAL_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, wal_thread_main, f->db), 0);
    for (int i = 0; i < WAL_THREADS; i++) {
        void *wrong = NULL;
        pthread_join(th[i], &wrong);
        assert_int_equal((intptr_t)wrong, 0);
    }
    c = db_acquire(f->db);
    assert_int_equal(count_rows(c, "SELECT COUNT(*) FROM wal_load"), WAL_THREADS * WAL_TRIES);
    db_release(c);
    char wal[320];
    snprintf(wal, sizeof(wal), "%s-wal", f->t.path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    long written = (long)WAL_THREADS * WAL_TRIES * WAL_VALUE;
    printf("written %ld MB, write-ahead log %.1f MB\n", written >> 20, st.st_size / 1048576.0);
    /* 6-8 MB alone, 15-27 MB beside four busy loops on the two cores (before
     * the second pass waited for readers: 13-18 and 26-54 MB, once 72 MB);
     * 190-210 MB without the second pass */
    assert_true(st.st_size < written);
    assert_true(db_checkpoints(f->db) > 0); /* by the thread, not inside commits */
}

static void test_reservation(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pocket(c, "p1", 100, 40);

    int64_t changes = -1;
    assert_int_equal(db_exec(c, reserve_sql, DB_ARGS(DB_INT(50), DB_TEXT("p1")), &changes), DB_OK);
    assert_int_equal(changes, 1);
    assert_int_equal(db_exec(c, reserve_sql, DB_ARGS(DB_INT(20), DB_TEXT("p1")), &changes), DB_OK);
    assert_int_equal(changes, 0); /* 40 + 50 + 20 > 100 */
    assert_int_equal(db_exec(c, reserve_sql, DB_ARGS(DB_INT(10), DB_TEXT("p1")), &changes), DB_OK);
    assert_int_equal(changes, 1); /* exactly full */
    assert_int_equal(db_exec(c, reserve_sql, DB_ARGS(DB_INT(1), DB_TEXT("p1")), &changes), DB_OK);
    assert_int_equal(changes, 0);
    assert_int_equal(db_exec(c, reserve_sql, DB_ARGS(DB_INT(1), DB_TEXT("nope")), &changes), DB_OK);
    assert_int_equal(changes, 0);
    assert_int_equal(count_rows(c, "SELECT reserved_bytes FROM pockets WHERE id = 'p1'"), 60);

    /* Values near INT64_MAX cannot wrap past the limit: SQLite turns the overflowing
     * sum into a float that fails the comparison, PostgreSQL reports an overflow. */
    changes = -1;
    int rc = db_exec(c, reserve_sql, DB_ARGS(DB_INT(INT64_MAX), DB_TEXT("p1")), &changes);
    assert_true(rc != DB_OK || changes == 0);
    assert_int_equal(count_rows(c, "SELECT reserved_bytes FROM pockets WHERE id = 'p1'"), 60);
    db_release(c);
}

enum {
    RACE_THREADS = 16,
    RACE_TRIES = 200,
    RACE_LIMIT = 1000
};

struct race {
    struct db *db;
    atomic_long granted_bytes;
    atomic_int failures;
    atomic_int over_limit;
    char last_error[256];
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < RACE_TRIES; i++) {
        int64_t delta = 1 + i % 3;
        struct db_conn *c = db_acquire(r->db);
        if (!c) {
            atomic_fetch_add(&r->failures, 1);
            continue;
        }
        int64_t changes = 0;
        int rc = db_exec(c, reserve_sql, DB_ARGS(DB_INT(delta), DB_TEXT("race")), &changes);
        if (rc) {
            snprintf(r->last_error, sizeof(r->last_error), "%s: %s", db_strerror(rc),
                     db_conn_errmsg(c));
            atomic_fetch_add(&r->failures, 1);
        } else if (changes == 1) {
            atomic_fetch_add(&r->granted_bytes, delta);
        }
        if (i % 16 == 0) {
            int64_t now = 0;
            if (db_query_int(c, "SELECT reserved_bytes FROM pockets WHERE id = 'race'", NULL, 0,
                             &now) == DB_OK &&
                now > RACE_LIMIT)
                atomic_fetch_add(&r->over_limit, 1);
        }
        db_release(c);
    }
    return NULL;
}

static void test_reservation_race(void **state)
{
    struct db_fixture *f = *state;
    struct db_conn *c = db_acquire(f->db);
    assert_non_null(c);
    make_pocket(c, "race", RACE_LIMIT, 0);
    db_release(c);

    struct race r = {.db = f->db};
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r), 0);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    if (r.failures)
        fprintf(stderr, "last failure: %s\n", r.last_error);
    assert_int_equal(r.failures, 0);
    assert_int_equal(r.over_limit, 0);
    /* 3200 tries of 1-3 bytes are far more than the limit: it fills exactly. */
    assert_int_equal(r.granted_bytes, RACE_LIMIT);
    c = db_acquire(f->db);
    assert_int_equal(count_rows(c, "SELECT reserved_bytes FROM pockets WHERE id = 'race'"),
                     RACE_LIMIT);
    db_release(c);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct late_release {
    struct db_conn *c;
};

static void *release_later(void *arg)
{
    struct late_release *l = arg;
    usleep(100 * 1000);
    db_release(l->c);
    return NULL;
}

static void test_pool_exhaustion(void **state)
{
    struct db_fixture *f = *state;
    struct db_options opt = {.pool_size = 2, .acquire_timeout_ms = 300};
    struct db *db;
    char err[256];
    assert_int_equal(db_open(f->t.url, &opt, &db, err, sizeof(err)), DB_OK);
    struct db_conn *a = db_acquire(db);
    struct db_conn *b = db_acquire(db);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);

    double t0 = now_s();
    assert_null(db_acquire(db));
    double waited = now_s() - t0;
    assert_true(waited >= 0.25);
    assert_true(waited < 3.0);
    assert_int_equal(db_transact(db, tx_insert_user, &(int){0}), DB_ERR_BUSY);

    /* A connection released during the wait is handed over. */
    struct late_release l = {b};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &l), 0);
    struct db_conn *c = db_acquire(db);
    pthread_join(th, NULL);
    assert_ptr_equal(c, b);
    db_release(c);
    db_release(a);
    db_release(NULL);
    db_close(db);
}

static void test_result_cap_and_accessors(void **state)
{
    struct db_fixture *f = *state;
    struct db_options opt = {.pool_size = 1, .max_result_bytes = 1024};
    struct db *db;
    char err[256];
    assert_int_equal(db_open(f->t.url, &opt, &db, err, sizeof(err)), DB_OK);
    struct db_conn *c = db_acquire(db);
    assert_non_null(c);
    char big[2001];
    memset(big, 'x', 2000);
    big[2000] = '\0';
    struct db_result *res = NULL;
    assert_int_equal(db_query(c, "SELECT $1", DB_ARGS(DB_TEXT(big)), &res), DB_ERR_TOO_BIG);
    assert_null(res);
    assert_int_equal(db_exec(c, "SELECT $1", DB_ARGS(DB_TEXT(big)), NULL), DB_OK);

    assert_int_equal(db_query(c, "SELECT id, max_bytes FROM tiers WHERE id = $1",
                              DB_ARGS(DB_TEXT("none")), &res),
                     DB_OK);
    assert_int_equal(db_result_rows(res), 0);
    assert_int_equal(db_result_cols(res), 2);
    assert_string_equal(db_result_name(res, 1), "max_bytes");
    assert_null(db_result_name(res, 2));
    assert_null(db_result_text(res, 0, 0));
    assert_true(db_result_is_null(res, 0, 0));
    db_result_free(res);

    assert_int_equal(db_query_row(c, "SELECT id FROM tiers WHERE id = 'none'", NULL, 0, &res),
                     DB_ERR_NOT_FOUND);
    assert_null(res);
    int64_t v = 5;
    assert_int_equal(db_query_int(c, "SELECT 1 FROM tiers WHERE id = 'none'", NULL, 0, &v),
                     DB_ERR_NOT_FOUND);
    assert_int_equal(v, 0);

    assert_int_equal(db_query_row(c, "SELECT 'abc', 'x' || $1", DB_ARGS(DB_TEXT("1")), &res),
                     DB_OK);
    assert_int_equal(db_result_int(res, 0, 0), 0); /* not an integer */
    assert_int_equal(db_result_int(res, 0, 1), 0); /* not an integer either */
    assert_null(db_result_text(res, 1, 0));        /* row out of range */
    assert_null(db_result_text(res, 0, 2));        /* column out of range */
    assert_int_equal(db_result_int(res, 9, 9), 0);
    db_result_free(res);
    assert_int_equal(db_result_rows(NULL), 0);
    db_result_free(NULL);
    db_release(c);
    db_close(db);
    db_close(NULL);
}

/* ---- PostgreSQL only ---- */

/* A connection killed by the server fails its next statement with DB_ERR_CONN and is
 * reset when it is next acquired. */
static void test_pg_reconnect(void **state)
{
    struct db_fixture *f = *state;
    struct db_options opt = {.pool_size = 1};
    struct db *db;
    char err[256];
    assert_int_equal(db_open(f->t.url, &opt, &db, err, sizeof(err)), DB_OK);
    struct db_conn *c = db_acquire(db);
    int64_t pid = 0, v = 0;
    assert_int_equal(db_query_int(c, "SELECT pg_backend_pid()", NULL, 0, &pid), DB_OK);
    db_release(c);
    assert_int_equal(pg_admin("SELECT pg_terminate_backend(%" PRId64 ")", pid), 0);
    usleep(200 * 1000);

    c = db_acquire(db);
    assert_non_null(c);
    assert_int_equal(db_query_int(c, "SELECT 1", NULL, 0, &v), DB_ERR_CONN);
    assert_true(strlen(db_conn_errmsg(c)) > 0);
    db_release(c);
    c = db_acquire(db);
    assert_non_null(c);
    assert_int_equal(db_query_int(c, "SELECT pg_backend_pid()", NULL, 0, &v), DB_OK);
    assert_true(v != pid);
    db_release(c);
    db_close(db);
}

/* ---- independent of the backend ---- */

static void test_bad_urls(void **state)
{
    struct db *db = (struct db *)&db;
    char err[256];
    assert_int_equal(db_open(NULL, NULL, &db, err, sizeof(err)), DB_ERR_INVALID);
    assert_null(db);
    assert_int_equal(db_open("mysql://root:hunter2@localhost/x", NULL, &db, err, sizeof(err)),
                     DB_ERR_INVALID);
    assert_non_null(strstr(err, "'mysql'"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(db_open("", NULL, &db, err, sizeof(err)), DB_ERR_INVALID);
    assert_int_equal(db_open("sqlite:", NULL, &db, err, sizeof(err)), DB_ERR_INVALID);
    assert_int_equal(db_open("sqlite:/nonexistent-dir/x/pockity.db", NULL, &db, err, sizeof(err)),
                     DB_ERR_CONN);
    assert_non_null(strstr(err, "/nonexistent-dir/x/pockity.db"));
    assert_int_equal(db_open("sqlite:/tmp", NULL, &db, err, sizeof(err)), DB_ERR_CONN);
    struct db_options big = {.pool_size = 100000};
    assert_int_equal(db_open("sqlite:/tmp/never", &big, &db, err, sizeof(err)), DB_ERR_INVALID);
    assert_int_equal(access("/tmp/never", F_OK), -1);
    assert_int_equal(
            db_open("postgresql://u@127.0.0.1:5432/db?bogus=1", NULL, &db, err, sizeof(err)),
            DB_ERR_INVALID);
    assert_non_null(strstr(err, "invalid postgresql url"));

    /* Nobody listens on port 1: a quick, clear failure without the password. */
    assert_int_equal(
            db_open("postgresql://pockity:s3cret@127.0.0.1:1/pockity", NULL, &db, err, sizeof(err)),
            DB_ERR_CONN);
    assert_non_null(strstr(err, "cannot connect to postgresql"));
    assert_null(strstr(err, "s3cret"));
    assert_null(db);
    assert_int_equal(db_open("postgres://127.0.0.1:1/x", NULL, &db, NULL, 0), DB_ERR_CONN);

    /* A file that is not a database. */
    char path[] = "/tmp/pockity-test-notdb-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "this is not sqlite, not at all, really not\n", 43), 43);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "sqlite:%s", path);
    assert_int_not_equal(db_open(url, NULL, &db, err, sizeof(err)), DB_OK);
    assert_true(strlen(err) > 0);
    unlink(path);
}

static void test_strerror(void **state)
{
    for (int s = 0; s < DB_STATUS_COUNT; s++) {
        assert_non_null(db_strerror(s));
        assert_true(strlen(db_strerror(s)) > 0);
    }
    assert_string_equal(db_strerror(-1), "unknown database status");
    assert_string_equal(db_strerror(DB_STATUS_COUNT), "unknown database status");
    assert_string_equal(db_conn_errmsg(NULL), "");
    assert_null(db_acquire(NULL));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, db_fixture_teardown)

int main(void)
{
    const struct CMUnitTest common[] = {
            cmocka_unit_test(test_bad_urls),
            cmocka_unit_test(test_strerror),
    };
    const struct CMUnitTest both[] = {
            T(test_migrations),
            T(test_newer_schema_refused),
            cmocka_unit_test(test_concurrent_open),
            T(test_params_roundtrip),
            T(test_array_params),
            T(test_bad_statements),
            T(test_constraints),
            T(test_transactions),
            T(test_transact_retries),
            T(test_transact_group),
            T(test_reservation),
            T(test_reservation_race),
            T(test_pool_exhaustion),
            T(test_result_cap_and_accessors),
    };
    const struct CMUnitTest sqlite_only[] = {
            T(test_wal_bounded),
    };
    const struct CMUnitTest pg_only[] = {
            T(test_pg_reconnect),
    };

    int failed = cmocka_run_group_tests_name("db", common, NULL, NULL);
    g_backend = BK_SQLITE;
    failed += cmocka_run_group_tests_name("db sqlite", both, NULL, NULL);
    failed += cmocka_run_group_tests_name("db sqlite only", sqlite_only, NULL, NULL);

    g_pg_url = getenv("POCKITY_TEST_PG_URL");
    if (!g_pg_url || !*g_pg_url) {
        printf("skipping postgresql: POCKITY_TEST_PG_URL not set\n");
        return failed ? 1 : 0;
    }
    g_backend = BK_PG;
    failed += cmocka_run_group_tests_name("db postgresql", both, NULL, NULL);
    failed += cmocka_run_group_tests_name("db postgresql only", pg_only, NULL, NULL);
    return failed ? 1 : 0;
}
