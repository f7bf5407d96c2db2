/* Unit tests of pockity-admin's parsing and printing of sizes, counts, times
 * and money. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "format.h"

static void test_parse_size_units(void **state)
{
    static const struct {
        const char *in;
        int64_t want;
    } ok[] = {
            {"0", 0},
            {"1048576", 1048576},
            {"500MB", 500000000},
            {"500mb", 500000000},
            {"10GiB", 10LL << 30},
            {"10 GiB", 10LL << 30},
            {"7k", 7 << 10},
            {"7K", 7 << 10},
            {"3B", 3},
            {"1.5TiB", 3LL << 39},
            {"0.5KiB", 512},
            {"1.5KB", 1500},
            {"1.9999B", 1}, /* a fraction of a byte is dropped */
            {"1.0000000001GB", 1000000000},
            {"2PB", 2000000000000000LL},
            {"8191PiB", 8191LL << 50},
            {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (format_parse_size(ok[i].in, &v) != 0)
            fail_msg("'%s' was refused", ok[i].in);
        if (v != ok[i].want)
            fail_msg("'%s' gave %lld, not %lld", ok[i].in, (long long)v, (long long)ok[i].want);
    }
}

static void test_parse_size_refuses(void **state)
{
    static const char *const bad[] = {
            "",
            "-1",
            " 1",
            "1 ",
            "10XB",
            "GiB",
            "1.",
            ".5",
            "1..5",
            "1e3",
            "1,000",
            "0x10",
            "10 GiB x",
            "10GiBs",
            "8192PiB",
            "9223372036854775808",
            "99999999999999999999999",
            "1EiB",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 42;
        if (format_parse_size(bad[i], &v) == 0)
            fail_msg("'%s' was accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, 42); /* untouched on failure */
    }
}

static void test_parse_int_and_bool(void **state)
{
    int64_t v;
    assert_int_equal(format_parse_int("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(format_parse_int("10", 0, 10, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(format_parse_int("11", 0, 10, &v), -1);
    assert_int_equal(format_parse_int("-5", 0, 10, &v), -1);
    assert_int_equal(format_parse_int("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(format_parse_int("-9223372036854775808", INT64_MIN, 0, &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(format_parse_int("9223372036854775807", 0, INT64_MAX, &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(format_parse_int("9223372036854775808", 0, INT64_MAX, &v), -1);
    assert_int_equal(format_parse_int("", 0, 10, &v), -1);
    assert_int_equal(format_parse_int("-", -10, 10, &v), -1);
    assert_int_equal(format_parse_int("1x", 0, 10, &v), -1);
    assert_int_equal(format_parse_int("+1", 0, 10, &v), -1);

    assert_int_equal(format_parse_bool("true"), 1);
    assert_int_equal(format_parse_bool("YES"), 1);
    assert_int_equal(format_parse_bool("1"), 1);
    assert_int_equal(format_parse_bool("on"), 1);
    assert_int_equal(format_parse_bool("false"), 0);
    assert_int_equal(format_parse_bool("No"), 0);
    assert_int_equal(format_parse_bool("0"), 0);
    assert_int_equal(format_parse_bool("off"), 0);
    assert_int_equal(format_parse_bool("maybe"), -1);
    assert_int_equal(format_parse_bool(""), -1);
}

static void test_format_size(void **state)
{
    static const struct {
        int64_t in;
        const char *want;
    } cases[] = {
            {0, "0 B"},
            {1023, "1023 B"},
            {1024, "1 KiB"},
            {1536, "1.5 KiB"},
            {1048575, "1023.9 KiB"}, /* never rounded up to 1024.0 */
            {10LL << 30, "10 GiB"},
            {(3LL << 39), "1.5 TiB"},
            {INT64_MAX, "7.9 EiB"},
            {-5, "-5 B"},
    };
    char out[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(format_size(cases[i].in, out, sizeof(out)), cases[i].want);
}

static void test_format_count_money_percent_time(void **state)
{
    char out[64];
    assert_string_equal(format_count(0, out, sizeof(out)), "0");
    assert_string_equal(format_count(999, out, sizeof(out)), "999");
    assert_string_equal(format_count(1000, out, sizeof(out)), "1,000");
    assert_string_equal(format_count(1234567, out, sizeof(out)), "1,234,567");
    assert_string_equal(format_count(-1234567, out, sizeof(out)), "-1,234,567");
    assert_string_equal(format_count(-123, out, sizeof(out)), "-123");
    assert_string_equal(format_count(INT64_MIN, out, sizeof(out)), "-9,223,372,036,854,775,808");
    char tiny[4];
    assert_string_equal(format_count(1234567, tiny, sizeof(tiny)), "1,2");

    assert_string_equal(format_money(1999, "EUR", out, sizeof(out)), "19.99 EUR");
    assert_string_equal(format_money(5, "USD", out, sizeof(out)), "0.05 USD");
    assert_string_equal(format_money(-150, "USD", out, sizeof(out)), "-1.50 USD");
    assert_string_equal(format_money(500, "JPY", out, sizeof(out)), "500 JPY");
    assert_string_equal(format_money(1234, "KWD", out, sizeof(out)), "1.234 KWD");
    assert_string_equal(format_money(100, NULL, out, sizeof(out)), "1.00 ");

    assert_string_equal(format_percent(0, 0, out, sizeof(out)), "-");
    assert_string_equal(format_percent(50, 100, out, sizeof(out)), "50%");
    assert_string_equal(format_percent(999, 1000, out, sizeof(out)), "99%");
    assert_string_equal(format_percent(2000, 1000, out, sizeof(out)), "200%");
    assert_string_equal(format_percent(INT64_MAX, INT64_MAX, out, sizeof(out)), "100%");

    assert_string_equal(format_time(0, out, sizeof(out)), "1970-01-01 00:00:00Z");
    assert_string_equal(format_time(1767225600, out, sizeof(out)), "2026-01-01 00:00:00Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_parse_size_units),
            cmocka_unit_test(test_parse_size_refuses),
            cmocka_unit_test(test_parse_int_and_bool),
            cmocka_unit_test(test_format_size),
            cmocka_unit_test(test_format_count_money_percent_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
