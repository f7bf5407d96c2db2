/* Unit tests of pockityfs/nameset: membership across growth, duplicates,
 * names that share a hash bucket, and reuse after a clear. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "nameset.h"

static void test_add_has(void **state)
{
    (void)state;
    struct nameset s = {0};
    assert_false(nameset_has(&s, "a")); /* empty: no table at all */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "f%05d", i);
        assert_int_equal(nameset_add(&s, name), 1);
    }
    assert_int_equal(s.n, 5000);
    assert_true(s.cap >= 2 * s.n); /* at most half full */
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "f%05d", i);
        assert_true(nameset_has(&s, name));
        assert_int_equal(nameset_add(&s, name), 0); /* already there */
    }
    assert_int_equal(s.n, 5000);
    assert_false(nameset_has(&s, "f05000"));
    assert_false(nameset_has(&s, "f0000"));
    assert_false(nameset_has(&s, ""));
    assert_int_equal(nameset_add(&s, ""), 1);
    assert_true(nameset_has(&s, ""));
    nameset_release(&s);
    assert_int_equal(s.n, 0);
    assert_false(nameset_has(&s, "f00001"));
    assert_int_equal(nameset_add(&s, "f00001"), 1);
    assert_true(nameset_has(&s, "f00001"));
    nameset_release(&s);
}

/* Names that start their probes at one slot: each is found past the
 * others, and an absent name of that slot runs through them to a free one. */
static void test_collisions(void **state)
{
    (void)state;
    struct nameset s = {0};
    char names[4][16], name[16];
    size_t slot = 0, found = 0;
    for (int i = 0; found < 4 && i < 100000; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        size_t h = nameset_hash(name) & 15; /* the 16-slot table's start slot */
        if (!found)
            slot = h;
        if (h == slot)
            snprintf(names[found++], sizeof(names[0]), "%s", name);
    }
    assert_int_equal(found, 4);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(nameset_add(&s, names[i]), 1);
    assert_int_equal(s.cap, 16);
    for (size_t i = 0; i < 3; i++)
        assert_true(nameset_has(&s, names[i]));
    assert_false(nameset_has(&s, names[3]));
    assert_int_equal(nameset_add(&s, names[3]), 1);
    assert_true(nameset_has(&s, names[3]));
    assert_int_equal(nameset_add(&s, names[1]), 0);
    assert_int_equal(s.n, 4);
    nameset_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_add_has),
            cmocka_unit_test(test_collisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
