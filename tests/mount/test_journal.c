/* Unit tests of pockityfs/journal: rows survive reopening, replace, remove. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"

static void test_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-journal.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/journal.db", dir);
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
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
