/* Unit tests of pockityfs/meta: s3fs metadata <-> struct stat, names, keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "meta.h"

static const struct meta_defaults defaults = {1000, 100, 0644, 0755, 1000};

static void head_with(struct s3_head *h, struct s3_meta *m, size_t n, uint64_t size)
{
    memset(h, 0, sizeof(*h));
    h->size = size;
    h->last_modified = 1000;
    h->meta = m;
    h->n_meta = n;
}

static void test_to_stat(void **state)
{
    (void)state;
    struct s3_meta m[] = {{"mode", "33184"}, {"uid", "7"}, {"gid", "8"}, {"mtime", "1700000000"}};
    struct s3_head h;
    struct stat st;
    head_with(&h, m, 4, 42);
    meta_to_stat(&h, 0, &defaults, &st);
    assert_int_equal(st.st_mode, S_IFREG | 0640);
    assert_int_equal(st.st_uid, 7);
    assert_int_equal(st.st_gid, 8);
    assert_int_equal(st.st_mtime, 1700000000);
    assert_int_equal(st.st_size, 42);

    /* no metadata: defaults, LastModified */
    head_with(&h, NULL, 0, 3);
    meta_to_stat(&h, 0, &defaults, &st);
    assert_int_equal(st.st_mode, S_IFREG | 0644);
    assert_int_equal(st.st_uid, 1000);
    assert_int_equal(st.st_mtime, 1000);

    /* a marker is a directory whatever its mode says; symlinks keep S_IFLNK */
    struct s3_meta reg[] = {{"mode", "420"}};
    head_with(&h, reg, 1, 5);
    meta_to_stat(&h, 1, &defaults, &st);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0644);
    struct s3_meta lnk[] = {{"mode", "41471"}};
    head_with(&h, lnk, 1, 5);
    meta_to_stat(&h, 0, &defaults, &st);
    assert_true(S_ISLNK(st.st_mode));

    /* garbage is ignored, fractional s3fs times keep their seconds */
    struct s3_meta bad[] = {{"mode", "rw-r--r--"}, {"uid", "-1"}, {"mtime", "12.5"}};
    head_with(&h, bad, 3, 0);
    meta_to_stat(&h, 0, &defaults, &st);
    assert_int_equal(st.st_mode, S_IFREG | 0644);
    assert_int_equal(st.st_uid, 1000);
    assert_int_equal(st.st_mtime, 12);

    /* devices are not served: a mode saying so gives a regular file */
    struct s3_meta dev[] = {{"mode", "8592"}};
    head_with(&h, dev, 1, 0);
    meta_to_stat(&h, 0, &defaults, &st);
    assert_true(S_ISREG(st.st_mode));
}

static void test_from_stat(void **state)
{
    (void)state;
    struct stat st = {0};
    st.st_mode = S_IFDIR | 0750;
    st.st_uid = 12;
    st.st_gid = 34;
    st.st_mtim.tv_sec = 1234567890;
    struct meta_set ms;
    meta_from_stat(&st, &ms);
    assert_string_equal(ms.items[0].name, "mode");
    assert_string_equal(ms.items[0].value, "16872");
    assert_string_equal(ms.items[1].value, "12");
    assert_string_equal(ms.items[2].value, "34");
    assert_string_equal(ms.items[3].value, "1234567890");
    struct s3_put_opts o = meta_put_opts(&ms);
    assert_int_equal(o.n_meta, 4);
    meta_set_entry_attrs(&ms); /* a marker of a directory whose entries need reading */
    o = meta_put_opts(&ms);
    assert_int_equal(o.n_meta, 5);
    assert_string_equal(o.meta[4].name, META_ENTRY_ATTRS);
}

/* What a listing (S_IFREG | 0644 here) would get wrong enough to matter. */
static void test_listing_misstates(void **state)
{
    (void)state;
    struct stat st = {.st_mode = S_IFREG | 0644, .st_uid = 1000, .st_gid = 100};
    st.st_mtime = 5000 - META_MTIME_SLACK; /* written just before its upload */
    assert_false(meta_listing_misstates(&st, &defaults, 5000));
    st.st_mtime = 5000 - META_MTIME_SLACK - 1; /* a time kept from elsewhere */
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_OTHER);
    st.st_mtime = 5000 + META_MTIME_SLACK + 1; /* or in the future */
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_OTHER);
    st.st_mtime = 5000;
    st.st_uid = 0; /* another owner */
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_OTHER);
    st.st_uid = 1000;
    st.st_gid = 0;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_OTHER);
    st.st_mode = S_IFREG | 0755;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000),
                     META_MISSTATES_MODE | META_MISSTATES_OTHER);
    st.st_mode = S_IFREG | 0644;
    st.st_gid = 100;
    assert_false(meta_listing_misstates(&st, &defaults, 5000));
    st.st_mode = S_IFREG | 0600; /* shown 0644, others could read it */
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    st.st_mode = S_IFREG | 0640;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    st.st_mode = S_IFREG | 0664; /* shown 0644: less than it allows */
    assert_false(meta_listing_misstates(&st, &defaults, 5000));
    st.st_mode = S_IFREG | 0755;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    st.st_mode = S_IFREG | 0744;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    st.st_mode = S_IFREG | 04644;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    st.st_mode = S_IFLNK | 0777;
    assert_int_equal(meta_listing_misstates(&st, &defaults, 5000), META_MISSTATES_MODE);
    meta_set_size(&st, 1025);
    assert_int_equal(st.st_size, 1025);
    assert_int_equal(st.st_blocks, 3);
}

static void test_names(void **state)
{
    (void)state;
    char big[300];
    memset(big, 'a', 255);
    big[255] = '\0';
    assert_int_equal(meta_check_name(big), 0);
    big[255] = 'a';
    big[256] = '\0';
    assert_int_equal(meta_check_name(big), -ENAMETOOLONG);
    assert_int_equal(meta_check_name(""), -EINVAL);
    assert_int_equal(meta_check_name(".."), -EINVAL);
    assert_int_equal(meta_check_name("a/b"), -EINVAL);
    assert_int_equal(meta_check_name("sp ace%+#?"), 0);

    char out[16];
    assert_int_equal(meta_join("", "x", out, sizeof(out)), 0);
    assert_string_equal(out, "x");
    assert_int_equal(meta_join("a/b", "x", out, sizeof(out)), 0);
    assert_string_equal(out, "a/b/x");
    assert_int_equal(meta_join("0123456789", "abcdef", out, sizeof(out)), -ENAMETOOLONG);
    assert_string_equal(meta_basename("a/b/c"), "c");
    assert_string_equal(meta_basename("c"), "c");
    assert_int_equal(meta_parent_len("a/b/c"), 3);
    assert_int_equal(meta_parent_len("c"), 0);
}

static void test_keys(void **state)
{
    (void)state;
    char key[S3_MAX_KEY_LEN + 1];
    assert_int_equal(meta_key("root/p1/", "d/e", 1, key), 0);
    assert_string_equal(key, "root/p1/d/e/");
    assert_int_equal(meta_key("root/p1/", "", 1, key), 0);
    assert_string_equal(key, "root/p1/");
    char path[1100];
    memset(path, 'k', sizeof(path));
    path[1024 - 8] = '\0'; /* with the 8-byte prefix: exactly 1024 */
    assert_int_equal(meta_key("root/p1/", path, 0, key), 0);
    assert_int_equal(meta_key("root/p1/", path, 1, key), -ENAMETOOLONG);
    assert_int_equal(meta_parse_uint("18446744073709551616"), -1);
    assert_int_equal(meta_parse_uint(NULL), -1);
    assert_int_equal(meta_parse_uint("12x"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_to_stat),
            cmocka_unit_test(test_from_stat),
            cmocka_unit_test(test_listing_misstates),
            cmocka_unit_test(test_names),
            cmocka_unit_test(test_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
