/* Unit tests of the capped growable buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_grow_and_detach(void **state)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_add(&b, "abc", 3), 0);
    assert_int_equal(b.len, 30000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 29997, "abc", 3);
    size_t len;
    char *s = buf_detach(&b, &len);
    assert_int_equal(len, 30000);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
    buf_release(&b);
}

static void test_cap_is_hard(void **state)
{
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_add(&b, "0123456789", 10), 0);
    assert_int_equal(buf_add(&b, "x", 1), -E2BIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_int_equal(buf_addf(&b, "%d", 1), -E2BIG);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_addf(&b, "%s-%d", "ab", 42), 0);
    assert_string_equal(b.data, "ab-42");
    assert_int_equal(buf_add(&b, "toolongtext", 11), -E2BIG);
    assert_string_equal(b.data, "ab-42");
    /* a huge length cannot overflow the size arithmetic */
    assert_int_equal(buf_add(&b, "x", SIZE_MAX), -E2BIG);
    buf_release(&b);
}

static void test_reserve(void **state)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(buf_reserve(&b, 300000), 0);
    assert_int_equal(b.len, 0);
    assert_true(b.alloc > 300000);
    const char *data = b.data;
    char chunk[1000];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_add(&b, chunk, sizeof(chunk)), 0);
    assert_ptr_equal(b.data, data); /* filled in place */
    assert_int_equal(b.len, 300000);
    /* past the cap: refused, the contents as they were */
    assert_int_equal(buf_reserve(&b, 1 << 20), -E2BIG);
    assert_int_equal(b.len, 300000);
    buf_release(&b);
}

static void test_binary_and_empty(void **state)
{
    struct buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_add(&b, "a\0b", 3), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    buf_release(&b);
    buf_init(&b, 100);
    size_t len = 99;
    char *s = buf_detach(&b, &len);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    buf_release(&b); /* releasing an empty buffer is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_grow_and_detach),
            cmocka_unit_test(test_cap_is_hard),
            cmocka_unit_test(test_binary_and_empty),
            cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
