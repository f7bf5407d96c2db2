/* Unit tests of pockityfs/cache_index over a real cache folder: what one
 * run keeps is taken up by the next, least recently used first; an index
 * of another bucket, files changed in size, files of pending uploads, rows
 * sharing a file and hostile rows are left out; a smaller budget trims
 * what is taken up; the index is gone once read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_index.h"

#define MIB (1u << 20)

/* Each test's cache folder (files/) and index path. */
struct dir {
    char dir[40];
    char files[64];
    char index[64];
};

static int dir_setup(void **state)
{
    struct dir *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    snprintf(d->dir, sizeof(d->dir), "/tmp/test-cache-index.XXXXXX");
    if (!mkdtemp(d->dir)) {
        free(d);
        return -1;
    }
    snprintf(d->files, sizeof(d->files), "%s/files", d->dir);
    snprintf(d->index, sizeof(d->index), "%s/cache.db", d->dir);
    if (mkdir(d->files, 0700) != 0) {
        free(d);
        return -1;
    }
    *state = d;
    return 0;
}

static int dir_teardown(void **state)
{
    struct dir *d = *state;
    char cmd[80];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
    int rc = system(cmd);
    free(d);
    return rc == 0 ? 0 : -1;
}

/* A file of size bytes (a hole) in the cache folder. */
static void make_file(const struct dir *d, const char *name, off_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", d->files, name);
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, size), 0);
    close(fd);
}

/* A local file of size bytes, all its blocks present, kept for key. */
static void keep(struct cache *c, const struct dir *d, const char *name, const char *key,
                 uint64_t size, const char *etag)
{
    make_file(d, name, (off_t)size);
    uint8_t bits[8];
    memset(bits, 0xff, sizeof(bits));
    assert_int_equal(cache_adopt_kept(c, key, name, size, etag, bits, sizeof(bits)), 0);
}

static int add_key(void *arg, const struct cfile *cf)
{
    char *out = arg;
    strcat(out, cf->key);
    strcat(out, " ");
    return 0;
}

/* The kept keys, least recently used first, into out. */
static const char *kept_keys(struct cache *c, char out[256])
{
    out[0] = '\0';
    cache_each_kept(c, add_key, out);
    return out;
}

static int exists(const struct dir *d, const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", d->files, name);
    return access(path, F_OK) == 0;
}

/* A run keeps a, then b, and saves; the next takes both up. */
static void save_two(const struct dir *d, const char *source)
{
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    keep(&c, d, "fa", "p/a", 3 * MIB, "\"ea\"");
    keep(&c, d, "fb", "p/b", 2 * MIB + 5, "\"eb\"");
    assert_int_equal(cache_index_save(&c, d->index, source), 2);
    cache_release(&c, 1);
    assert_true(exists(d, "fa") && exists(d, "fb"));
}

static void test_roundtrip(void **state)
{
    const struct dir *d = *state;
    save_two(d, "http://s3 bucket");
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    assert_int_equal(cache_index_load(&c, d->index, "http://s3 bucket", NULL, 0), 2);
    char keys[256], etag[S3_ETAG_MAX];
    assert_string_equal(kept_keys(&c, keys), "p/a p/b ");
    assert_true(cache_kept_etag(&c, "p/b", etag));
    assert_string_equal(etag, "\"eb\"");
    assert_int_equal(c.used, 5 * MIB + 5);
    assert_int_equal(access(d->index, F_OK), -1); /* read once only */
    assert_int_equal(cache_index_load(&c, d->index, "http://s3 bucket", NULL, 0), 0);
    cache_release(&c, 0);
    assert_false(exists(d, "fa") || exists(d, "fb"));
}

static void test_other_source(void **state)
{
    const struct dir *d = *state;
    save_two(d, "http://s3 bucket");
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    assert_int_equal(cache_index_load(&c, d->index, "http://s3 other", NULL, 0), 0);
    assert_int_equal(access(d->index, F_OK), -1);
    cache_release(&c, 0);
}

/* A file of another size than the index says, and one a pending upload
 * owns, are left out. */
static void test_changed_and_busy(void **state)
{
    const struct dir *d = *state;
    save_two(d, "s");
    char path[128];
    snprintf(path, sizeof(path), "%s/fa", d->files);
    assert_int_equal(truncate(path, 100), 0);
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    const char *busy[] = {"fb"};
    assert_int_equal(cache_index_load(&c, d->index, "s", busy, 1), 0);
    char keys[256];
    assert_string_equal(kept_keys(&c, keys), "");
    cache_release(&c, 1);
    assert_true(exists(d, "fb")); /* not the cache's to remove */
}

/* A budget smaller than what was kept takes up the most recent only. */
static void test_trimmed(void **state)
{
    const struct dir *d = *state;
    save_two(d, "s");
    struct cache c;
    cache_init(&c, d->files, 3 * MIB);
    assert_int_equal(cache_index_load(&c, d->index, "s", NULL, 0), 2);
    char keys[256];
    assert_string_equal(kept_keys(&c, keys), "p/b ");
    assert_false(exists(d, "fa"));
    cache_release(&c, 0);
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Rows no run writes: a second naming a file, names outside the folder,
 * empty or missing blocks, nothing present, a size not the file's, an
 * empty key or ETag. None is taken up and nothing crashes; a good row
 * beside them is. */
static void test_hostile_rows(void **state)
{
    const struct dir *d = *state;
    save_two(d, "s");
    const char *names[] = {"fz", "fg", "fh", "fi", "fj", "fk"};
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        make_file(d, names[i], MIB);
    exec_sql(d->index, "INSERT INTO files (key, file, size, etag, blocks) VALUES"
                       " ('p/z', 'fz', 1048576, '\"ez\"', x'01'),"
                       " ('p/c', 'fa', 3145728, '\"ec\"', x'ff'),"
                       " ('p/d', '../cache.db', 0, '\"ed\"', x'ff'),"
                       " ('p/e', '/etc/passwd', 1, '\"ee\"', x'ff'),"
                       " ('p/f', '', 1, '\"ef\"', x'ff'),"
                       " ('p/g', 'fg', 1048576, '\"eg\"', x''),"
                       " ('p/h', 'fh', 1048576, '\"eh\"', x'00'),"
                       " ('p/i', 'fi', 9223372036854775807, '\"ei\"', x'ff'),"
                       " ('', 'fj', 1048576, '\"ej\"', x'ff'),"
                       " ('p/k', 'fk', 1048576, '', x'ff')");
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    /* p/a and p/c name one file: both go; so do all the others but p/b */
    assert_int_equal(cache_index_load(&c, d->index, "s", NULL, 0), 2);
    char keys[256];
    assert_string_equal(kept_keys(&c, keys), "p/b p/z ");
    cache_release(&c, 1);
}

static void test_missing_or_broken(void **state)
{
    const struct dir *d = *state;
    struct cache c;
    cache_init(&c, d->files, 1ull << 30);
    assert_int_equal(cache_index_load(&c, d->index, "s", NULL, 0), 0);
    FILE *f = fopen(d->index, "w");
    assert_non_null(f);
    fputs("not a database", f);
    fclose(f);
    assert_int_equal(cache_index_load(&c, d->index, "s", NULL, 0), 0);
    assert_int_equal(access(d->index, F_OK), -1);
    cache_release(&c, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_roundtrip, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_other_source, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_changed_and_busy, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_trimmed, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_hostile_rows, dir_setup, dir_teardown),
            cmocka_unit_test_setup_teardown(test_missing_or_broken, dir_setup, dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
