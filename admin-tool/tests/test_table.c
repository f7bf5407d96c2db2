/* Unit tests of pockity-admin's aligned tables: widths in display columns,
 * safe cell text, the cap with an ellipsis, incremental flushing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"

/* Flush t into a string the caller frees. */
static char *render(struct table *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    table_flush(t, f);
    fclose(f);
    return text;
}

static void test_width(void **state)
{
    assert_int_equal(table_width(""), 0);
    assert_int_equal(table_width("abc"), 3);
    assert_int_equal(table_width("Gr\xc3\xb6\xc3\x9f"
                                 "e"),
                     5);                                          /* Größe */
    assert_int_equal(table_width("e\xcc\x81"), 1);                /* e + combining acute */
    assert_int_equal(table_width("\xe6\x97\xa5\xe6\x9c\xac"), 4); /* 日本 */
    assert_int_equal(table_width("\xf0\x9f\x9a\x80"), 2);         /* rocket emoji */
    assert_int_equal(table_width("a\xff"
                                 "b"),
                     3);                              /* invalid byte: 1 */
    assert_int_equal(table_width("\xe6\x97"), 2);     /* truncated sequence */
    assert_int_equal(table_width("\xc0\xaf"), 2);     /* overlong '/' */
    assert_int_equal(table_width("\xed\xa0\x80"), 3); /* a surrogate */
}

static void test_alignment_by_display_width(void **state)
{
    const char *head[] = {"ID", "NAME", "SIZE"};
    struct table *t = table_new(3, head);
    assert_non_null(t);
    const char *r1[] = {"a", "\xe6\x97\xa5\xe6\x9c\xac", "1 GiB"}; /* 日本: 4 columns */
    const char *r2[] = {"bbb", "Zo\xc3\xab", "10 GiB"};            /* Zoë: 3 columns */
    assert_int_equal(table_add(t, r1), 0);
    assert_int_equal(table_add(t, r2), 0);
    assert_int_equal(table_pending(t), 2);
    char *out = render(t);
    assert_string_equal(out, "ID   NAME  SIZE\n"
                             "a    \xe6\x97\xa5\xe6\x9c\xac  1 GiB\n"
                             "bbb  Zo\xc3\xab   10 GiB\n");
    assert_int_equal(table_pending(t), 0);
    free(out);
    table_free(t);
}

static void test_cells_are_made_safe(void **state)
{
    struct table *t = table_new(2, NULL);
    assert_non_null(t);
    const char *r1[] = {"\x1b[31mred\x1b[0m", "line\none\ttab\r\n"};
    const char *r2[] = {NULL, "bad\xff utf8 \xc2\x9b csi"};
    const char *r3[] = {"rtl\xe2\x80\xaeoverride", "del\x7f"};
    assert_int_equal(table_add(t, r1), 0);
    assert_int_equal(table_add(t, r2), 0);
    assert_int_equal(table_add(t, r3), 0);
    char *out = render(t);
    assert_string_equal(out, "?[31mred?[0m  line one tab  \n"
                             "-             bad? utf8 ? csi\n"
                             "rtl?override  del?\n");
    free(out);
    table_free(t);
}

static void test_cap_with_ellipsis(void **state)
{
    const char *head[] = {"A", "B"};
    struct table *t = table_new(2, head);
    assert_non_null(t);
    table_set_cell_max(t, 6);
    const char *r1[] = {"abcdef", "x"};  /* exactly 6: kept whole */
    const char *r2[] = {"abcdefg", "y"}; /* 7: cut to 5 + "…" */
    const char *r3[] = {"\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5", "z"}; /* 8 cols */
    assert_int_equal(table_add(t, r1), 0);
    assert_int_equal(table_add(t, r2), 0);
    assert_int_equal(table_add(t, r3), 0);
    char *out = render(t);
    assert_string_equal(out, "A       B\n"
                             "abcdef  x\n"
                             "abcde\xe2\x80\xa6  y\n"
                             "\xe6\x97\xa5\xe6\x97\xa5\xe2\x80\xa6   z\n");
    free(out);
    table_set_cell_max(t, 0); /* no cap */
    const char *r4[] = {"abcdefghij", "w"};
    assert_int_equal(table_add(t, r4), 0);
    out = render(t);
    assert_string_equal(out, "abcdefghij  w\n");
    free(out);
    table_free(t);
}

static void test_incremental_flush_keeps_header_and_widths(void **state)
{
    const char *head[] = {"ID", "ACTION", "DETAIL"};
    struct table *t = table_new(3, head);
    assert_non_null(t);
    const char *r1[] = {"1", "tier.create", "{}"};
    assert_int_equal(table_add(t, r1), 0);
    char *out = render(t);
    assert_string_equal(out, "ID  ACTION       DETAIL\n"
                             "1   tier.create  {}\n");
    free(out);
    /* A narrower batch keeps the widths; a wider one widens them; no header again. */
    const char *r2[] = {"2", "a", ""};
    assert_int_equal(table_add(t, r2), 0);
    out = render(t);
    assert_string_equal(out, "2   a\n"); /* no blanks after the last non-empty cell */
    free(out);
    const char *r3[] = {"12345", "b", "c"};
    assert_int_equal(table_add(t, r3), 0);
    out = render(t);
    assert_string_equal(out, "12345  b            c\n");
    free(out);
    out = render(t); /* nothing pending: nothing printed */
    assert_string_equal(out, "");
    free(out);
    table_free(t);
}

static void test_bad_arguments(void **state)
{
    assert_null(table_new(0, NULL));
    assert_null(table_new(17, NULL));
    table_free(NULL);
    struct table *t = table_new(1, NULL);
    assert_non_null(t);
    table_set_cell_max(t, 1); /* raised to the minimum, 4 */
    const char *r[] = {"abcdef"};
    assert_int_equal(table_add(t, r), 0);
    char *out = render(t);
    assert_string_equal(out, "abc\xe2\x80\xa6\n");
    free(out);
    table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_width),
            cmocka_unit_test(test_alignment_by_display_width),
            cmocka_unit_test(test_cells_are_made_safe),
            cmocka_unit_test(test_cap_with_ellipsis),
            cmocka_unit_test(test_incremental_flush_keeps_header_and_widths),
            cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
