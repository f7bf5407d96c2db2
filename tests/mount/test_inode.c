/* Unit tests of pockityfs/inode: numbers and paths, lookup counts, renames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inode.h"

static int freed;

static void on_free(struct inode *in, void *arg)
{
    (void)in;
    (void)arg;
    freed++;
}

static void count_name(void *arg, const char *name, struct inode *in)
{
    (void)in;
    (void)name;
    (*(int *)arg)++;
}

static void test_lifecycle(void **state)
{
    (void)state;
    struct inode_table t;
    freed = 0;
    assert_int_equal(inode_table_init(&t, on_free, NULL), 0);
    struct inode *root = inode_get(&t, INODE_ROOT);
    assert_non_null(root);
    inode_put(&t, root);
    inode_forget(&t, INODE_ROOT, 100); /* the root stays */
    assert_non_null(root = inode_get(&t, INODE_ROOT));
    inode_put(&t, root);

    int created;
    struct inode *a = inode_make(&t, "a", &created);
    assert_true(created);
    uint64_t ino = a->ino;
    assert_true(ino > INODE_ROOT);
    inode_count_lookup(&t, a);
    inode_put(&t, a);
    struct inode *again = inode_make(&t, "a", &created);
    assert_false(created);
    assert_ptr_equal(again, a);
    inode_put(&t, again);
    inode_forget(&t, ino, 1);
    assert_int_equal(freed, 1);
    assert_null(inode_get(&t, ino));
    /* a new inode for the same path gets a new number */
    a = inode_make(&t, "a", NULL);
    assert_true(a->ino != ino);
    /* kept inodes (pending data) survive nlookup 0 */
    inode_set_flags(&t, a, 1, 1);
    inode_put(&t, a);
    assert_int_equal(freed, 1);
    assert_non_null(a = inode_get_path(&t, "a"));
    assert_true(inode_is_local(&t, a));
    inode_set_flags(&t, a, 0, 0);
    inode_put(&t, a);
    assert_int_equal(freed, 2);
    inode_table_release(&t);
    assert_int_equal(freed, 3); /* the root */
}

struct reader {
    struct inode *in;
    int locked;
    struct stat st;
};

static void *read_attrs(void *arg)
{
    struct reader *r = arg;
    r->locked = inode_lock_or_published(r->in, &r->st);
    if (r->locked)
        pthread_mutex_unlock(&r->in->lock);
    return NULL;
}

/* A reader of attributes gets what the holder of the lock published
 * without waiting for it; with nothing published it waits for the lock. */
static void test_published_attributes(void **state)
{
    (void)state;
    struct inode_table t;
    assert_int_equal(inode_table_init(&t, NULL, NULL), 0);
    struct inode *a = inode_make(&t, "a", NULL);
    struct reader r = {.in = a};
    /* free: the reader takes the lock */
    read_attrs(&r);
    assert_int_equal(r.locked, 1);
    /* held with attributes published: answered from them at once */
    pthread_mutex_lock(&a->lock);
    struct stat st = {.st_size = 1234, .st_mode = 0100644};
    inode_publish(a, &st);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, read_attrs, &r), 0);
    pthread_join(th, NULL); /* it did not wait for the lock */
    assert_int_equal(r.locked, 0);
    assert_int_equal(r.st.st_size, 1234);
    /* held, nothing published: the reader waits for the lock */
    inode_unpublish(a);
    r.locked = -1;
    assert_int_equal(pthread_create(&th, NULL, read_attrs, &r), 0);
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_int_equal(r.locked, -1);
    pthread_mutex_unlock(&a->lock);
    pthread_join(th, NULL);
    assert_int_equal(r.locked, 1);
    inode_put(&t, a);
    inode_table_release(&t);
}

static void test_many_and_move(void **state)
{
    (void)state;
    struct inode_table t;
    assert_int_equal(inode_table_init(&t, NULL, NULL), 0);
    char path[64];
    for (int i = 0; i < 5000; i++) { /* grows the hash tables */
        snprintf(path, sizeof(path), "d/sub/f%d", i);
        struct inode *in = inode_make(&t, path, NULL);
        assert_non_null(in);
        inode_count_lookup(&t, in);
        inode_put(&t, in);
    }
    struct inode *d = inode_make(&t, "d", NULL);
    inode_count_lookup(&t, d);
    struct inode *other = inode_make(&t, "e/x", NULL);
    inode_count_lookup(&t, other);
    struct inode *dd = inode_make(&t, "dd", NULL); /* "d" is not its prefix */
    inode_count_lookup(&t, dd);

    assert_int_equal(inode_move(&t, "d", "e"), 0);
    char *p = NULL;
    assert_int_equal(inode_path(&t, d, &p), 0);
    assert_string_equal(p, "e");
    free(p);
    assert_int_equal(inode_path(&t, dd, &p), 0);
    assert_string_equal(p, "dd");
    free(p);
    /* what sat at the target lost its name */
    assert_int_equal(inode_path(&t, other, &p), -ENOENT);
    struct inode *f = inode_get_path(&t, "e/sub/f4999");
    assert_non_null(f);
    inode_put(&t, f);
    assert_null(inode_get_path(&t, "d/sub/f1"));

    /* local children of a directory */
    struct inode *l = inode_make(&t, "e/sub/new", NULL);
    inode_set_flags(&t, l, 0, 1);
    int n = 0;
    assert_int_equal(inode_local_children(&t, "e/sub", count_name, &n), 1);
    assert_int_equal(n, 1);
    assert_true(inode_has_local_under(&t, "e"));
    assert_false(inode_has_local_under(&t, "dd"));
    inode_detach(&t, l);
    assert_false(inode_has_local_under(&t, "e"));
    inode_put(&t, l);
    inode_put(&t, d);
    inode_put(&t, other);
    inode_put(&t, dd);
    inode_table_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_lifecycle),
            cmocka_unit_test(test_many_and_move),
            cmocka_unit_test(test_published_attributes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
