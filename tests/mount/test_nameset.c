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
    nameset_clear(&s);
    assert_int_equal(s.n, 0);
    assert_false(nameset_has(&s, "f00001"));
    assert_int_equal(nameset_add(&s, "f00001"), 1);
    assert_true(nameset_has(&s, "f00001"));
    nameset_clear(&s);
}

/* Names whose probe sequences collide: a 16-slot table holds 8 names at
 * most, so several of them share a start slot; each must still be found,
 * and a name absent from a full run of probes is not. */
static void test_collisions(void **state)
{
    (void)state;
    struct nameset s = {0};
    const char *names[] = {"a", "b", "c", "d", "e", "f", "g"};
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(nameset_add(&s, names[i]), 1);
    assert_int_equal(s.cap, 16);
    for (size_t i = 0; i < 7; i++)
        assert_true(nameset_has(&s, names[i]));
    int absent = 0;
    char name[8];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "x%d", i);
        absent += !nameset_has(&s, name);
    }
    assert_int_equal(absent, 200);
    nameset_clear(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_add_has),
            cmocka_unit_test(test_collisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
