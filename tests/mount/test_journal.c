/* Unit tests of pockityfs/journal: rows survive reopening, replace, remove;
 * rows holding the content; journals from before content rows; uploads
 * under way; rows moving with a renamed directory; removals of uploaded
 * rows queued, and applied before any later change, across a kill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"

/* Each test's folder and the journal's path in it. */
struct dir {
    char dir[32];
    char path[64];
};

static int dir_setup(void **state)
{
    struct dir *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    snprintf(d->dir, sizeof(d->dir), "/tmp/test-journal.XXXXXX");
    if (!mkdtemp(d->dir)) {
        free(d);
        return -1;
    }
    snprintf(d->path, sizeof(d->path), "%s/journal.db", d->dir);
    *state = d;
    return 0;
}

static int dir_teardown(void **state)
{
    struct dir *d = *state;
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
    int rc = system(cmd);
    free(d);
    return rc == 0 ? 0 : -1;
}

static void test_roundtrip(void **state)
{
    const char *path = ((struct dir *)*state)->path;
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    struct journal_entry e = {.path = "a/b c",
                              .file = "f1",
                              .size = 10,
                              .mode = 0100644,
                              .uid = 1,
                              .gid = 2,
                              .mtime = 99};
    assert_int_equal(journal_put(j, &e, 1), 0);
    e.path = "other";
    e.file = "f2";
    assert_int_equal(journal_put(j, &e, 0), 0);
    e.path = "a/b c";
    e.file = "f3"; /* replaces the first row */
    e.size = 11;
    assert_int_equal(journal_put(j, &e, 0), 0);
    journal_free(j);

    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    struct journal_entry *v;
    size_t n;
    assert_int_equal(journal_list(j, &v, &n), 0);
    assert_int_equal(n, 2);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].path, "a/b c") == 0) {
            assert_string_equal(v[i].file, "f3");
            assert_int_equal(v[i].size, 11);
            assert_int_equal(v[i].mode, 0100644);
            assert_int_equal(v[i].uid, 1);
            assert_int_equal(v[i].gid, 2);
            assert_int_equal(v[i].mtime, 99);
            seen++;
        }
    }
    assert_int_equal(seen, 1);
    journal_entries_free(v, n);
    assert_int_equal(journal_remove(j, "other"), 0);
    assert_int_equal(journal_remove(j, "missing"), 0);
    assert_int_equal(journal_list(j, &v, &n), 0);
    assert_int_equal(n, 1);
    journal_entries_free(v, n);
    journal_free(j);

    /* a folder that does not exist: a clear error */
    assert_int_not_equal(journal_open("/nonexistent/dir/j.db", &j, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "/nonexistent/dir/j.db"));
}

/* Rows holding the content (file ""): the bytes come back as written, an
 * empty content too, and a row can change from content to file. */
static void test_content_rows(void **state)
{
    const char *path = ((struct dir *)*state)->path;
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    char bytes[5000];
    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (char)(i * 7); /* NULs included */
    struct journal_entry e = {.path = "small", .file = "", .data = bytes, .size = sizeof(bytes)};
    assert_int_equal(journal_put(j, &e, 0), 0);
    e = (struct journal_entry){.path = "empty", .file = "", .data = NULL, .size = 0};
    assert_int_equal(journal_put(j, &e, 1), 0);
    e = (struct journal_entry){.path = "grew", .file = "", .data = bytes, .size = 10};
    assert_int_equal(journal_put(j, &e, 0), 0);
    e = (struct journal_entry){.path = "grew", .file = "f9", .size = 70000};
    assert_int_equal(journal_put(j, &e, 0), 0);
    journal_free(j);

    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    struct journal_entry *v;
    size_t n;
    assert_int_equal(journal_list(j, &v, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].path, "small") == 0) {
            assert_string_equal(v[i].file, "");
            assert_int_equal(v[i].size, sizeof(bytes));
            assert_memory_equal(v[i].data, bytes, sizeof(bytes));
        } else if (strcmp(v[i].path, "empty") == 0) {
            assert_string_equal(v[i].file, "");
            assert_int_equal(v[i].size, 0);
        } else {
            assert_string_equal(v[i].path, "grew");
            assert_string_equal(v[i].file, "f9");
            assert_int_equal(v[i].size, 70000);
            assert_null(v[i].data);
        }
    }
    journal_entries_free(v, n);
    journal_free(j);
}

/* A journal written before rows could hold content (no data column) opens,
 * keeps its rows and takes content rows. */
static void test_old_journal(void **state)
{
    const char *path = ((struct dir *)*state)->path;
    char cmd[512], err[256];
    snprintf(cmd, sizeof(cmd),
             "sqlite3 %s \"CREATE TABLE pending (path TEXT PRIMARY KEY, file TEXT NOT NULL,"
             " size INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL,"
             " gid INTEGER NOT NULL, mtime INTEGER NOT NULL, updated INTEGER NOT NULL);"
             " INSERT INTO pending VALUES ('old', 'f1', 3, 33188, 0, 0, 5, 6);\"",
             path);
    assert_int_equal(system(cmd), 0); /* the sqlite3 shell: scripts/test installs it */
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    struct journal_entry e = {.path = "new", .file = "", .data = "abc", .size = 3};
    assert_int_equal(journal_put(j, &e, 0), 0);
    struct journal_entry *v;
    size_t n;
    assert_int_equal(journal_list(j, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].path, "old");
    assert_string_equal(v[0].file, "f1");
    assert_null(v[0].data);
    assert_string_equal(v[1].path, "new");
    assert_memory_equal(v[1].data, "abc", 3);
    journal_entries_free(v, n);
    journal_free(j);
}

static void test_uploads(void **state)
{
    const char *path = ((struct dir *)*state)->path;
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    struct journal_upload *v = NULL;
    size_t n = 9;
    assert_int_equal(journal_uploads(j, &v, &n), 0);
    assert_int_equal(n, 0);
    journal_uploads_free(v, n);
    assert_int_equal(journal_upload_add(j, "p/big file", "2~one"), 0);
    assert_int_equal(journal_upload_add(j, "p/other", "2~two"), 0);
    assert_int_equal(journal_upload_add(j, "p/third", "2~three"), 0);
    assert_int_equal(journal_upload_remove(j, "2~two"), 0);
    assert_int_equal(journal_upload_remove(j, "2~none"), 0); /* unknown is fine */
    journal_free(j);

    /* a new process sees what was left, in the order it was started */
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    assert_int_equal(journal_uploads(j, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].key, "p/big file");
    assert_string_equal(v[0].id, "2~one");
    assert_string_equal(v[1].key, "p/third");
    assert_string_equal(v[1].id, "2~three");
    journal_uploads_free(v, n);
    /* pending rows and uploads are apart */
    struct journal_entry *e = NULL;
    assert_int_equal(journal_list(j, &e, &n), 0);
    assert_int_equal(n, 0);
    journal_entries_free(e, n);
    journal_free(j);
}

/* journal_move renames the rows below a directory, by bytes, and no other. */
static void test_move(void **state)
{
    const char *path = ((struct dir *)*state)->path;
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err, sizeof(err)), 0);
    const char *names[] = {"d\xc3\xa9/b", "d\xc3\xa9/c/d", "d\xc3\xa9x/y", "d\xc3\xa9", "e/f"};
    for (size_t i = 0; i < 5; i++) {
        struct journal_entry e = {.path = (char *)names[i], .file = "", .data = "x", .size = 1};
        assert_int_equal(journal_put(j, &e, 0), 0);
    }
    assert_int_equal(journal_move(j, "d\xc3\xa9", "new/\xe2\x82\xac"), 0);
    struct journal_entry *v;
    size_t n;
    assert_int_equal(journal_list(j, &v, &n), 0);
    assert_int_equal(n, 5);
    const char *want[] = {"new/\xe2\x82\xac/b", "new/\xe2\x82\xac/c/d", "d\xc3\xa9x/y", "d\xc3\xa9",
                          "e/f"};
    for (size_t i = 0; i < n; i++) /* listed in the order they were put */
        assert_string_equal(v[i].path, want[i]);
    journal_entries_free(v, n);
    journal_free(j);
}

/* Put a row of path holding content. Returns 0 or -errno. */
static int put_row(struct journal *j, const char *path, const char *content)
{
    struct journal_entry e = {
            .path = (char *)path, .file = "", .data = (void *)content, .size = strlen(content)};
    return journal_put(j, &e, 0);
}

/* The rows of the journal at db, by path and content, one "path=content;"
 * each, in the order they were put, into out. */
static void rows_of(const char *db, char *out, size_t size)
{
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(db, &j, err, sizeof(err)), 0);
    struct journal_entry *v;
    size_t n, len = 0;
    assert_int_equal(journal_list(j, &v, &n), 0);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, size - len, "%s=%.*s;", v[i].path, (int)v[i].size,
                                v[i].data ? (const char *)v[i].data : "");
    journal_entries_free(v, n);
    journal_free(j);
}

/* Remove the journal at db, with its WAL. */
static void remove_journal(const char *db)
{
    char name[96];
    unlink(db);
    snprintf(name, sizeof(name), "%s-wal", db);
    unlink(name);
    snprintf(name, sizeof(name), "%s-shm", db);
    unlink(name);
}

/* Run steps on the journal at db in a child process that then ends the
 * way a kill -9 ends the mount: without journal_free. */
static void killed_after(const char *db, int (*steps)(struct journal *))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        struct journal *j = NULL;
        _exit(journal_open(db, &j, err, sizeof(err)) != 0 || steps(j) != 0 ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int queued_only(struct journal *j)
{
    int rc = put_row(j, "a", "1") || put_row(j, "b", "2");
    journal_uploaded(j, "a");
    return rc;
}

static int applied_by_put(struct journal *j)
{
    int rc = put_row(j, "a", "1") || put_row(j, "b", "2");
    journal_uploaded(j, "a");
    journal_uploaded(j, "b");
    return rc || put_row(j, "b", "new") || put_row(j, "c", "3");
}

static int applied_by_settle(struct journal *j)
{
    int rc = put_row(j, "d/x", "1") || put_row(j, "d/y", "2") || put_row(j, "dx", "3") ||
             put_row(j, "e", "4");
    journal_uploaded(j, "d/x");
    journal_uploaded(j, "dx");
    journal_uploaded(j, "e");
    /* no queued row is "d/" or below it, nor "x": nothing applied */
    rc = rc || journal_settle(j, "d/") || journal_settle(j, "x") || journal_settle(j, "d/y");
    return rc || journal_settle(j, "d"); /* d/x is: all three go */
}

static int applied_by_batch(struct journal *j)
{
    char name[32];
    int rc = 0;
    for (int i = 0; i < JOURNAL_BATCH && !rc; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        rc = put_row(j, name, "x");
    }
    rc = rc || put_row(j, "kept", "y");
    for (int i = 0; i < JOURNAL_BATCH; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        journal_uploaded(j, name);
    }
    return rc;
}

static int applied_by_move(struct journal *j)
{
    int rc = put_row(j, "d/x", "1") || put_row(j, "d/y", "2");
    journal_uploaded(j, "d/x");
    return rc || journal_move(j, "d", "e");
}

static int applied_by_remove(struct journal *j)
{
    int rc = put_row(j, "a", "1") || put_row(j, "b", "2") || put_row(j, "c", "3");
    journal_uploaded(j, "a");
    return rc || journal_remove(j, "b");
}

/* journal_uploaded queues a row's removal: a kill before anything applies
 * it leaves the row (replayed: an upload of what S3 holds); any later write
 * to the journal, a settle of its path or a full queue applies it first. */
static void test_uploaded(void **state)
{
    const char *db = ((struct dir *)*state)->path;
    const struct {
        int (*steps)(struct journal *);
        const char *rows; /* what the next process finds */
    } cases[] = {
            {queued_only, "a=1;b=2;"},
            {applied_by_put, "b=new;c=3;"}, /* b's removal came before its new row */
            {applied_by_settle, "d/y=2;"},
            {applied_by_batch, "kept=y;"},
            {applied_by_move, "e/y=2;"}, /* d/x went before the move: no e/x */
            {applied_by_remove, "c=3;"},
    };
    char rows[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        remove_journal(db);
        killed_after(db, cases[i].steps);
        rows_of(db, rows, sizeof(rows));
        assert_string_equal(rows, cases[i].rows);
    }

    /* closing applies the queue too */
    char err[256];
    struct journal *j = NULL;
    assert_int_equal(journal_open(db, &j, err, sizeof(err)), 0);
    assert_int_equal(put_row(j, "z", "9"), 0);
    journal_uploaded(j, "z");
    journal_uploaded(j, "never put"); /* a removal of no row is fine */
    journal_free(j);
    rows_of(db, rows, sizeof(rows));
    assert_string_equal(rows, "c=3;");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_roundtrip, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_content_rows, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_old_journal, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_uploads, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_move, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_uploaded, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
