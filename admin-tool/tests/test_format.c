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
    assert_string_equal(format_money(100, NULL, out, sizeof(out)), "1.00");
    assert_string_equal(format_money(1250, "USD", out, sizeof(out)), "12.50 USD");
    assert_string_equal(format_money(0, "USD", out, sizeof(out)), "0.00 USD");
    assert_string_equal(format_money(-5, "JPY", out, sizeof(out)), "-5 JPY");
    assert_string_equal(format_money(INT64_MIN, "USD", out, sizeof(out)),
                        "-92233720368547758.08 USD");
    assert_string_equal(format_money(INT64_MAX, "JPY", out, sizeof(out)),
                        "9223372036854775807 JPY");

    assert_string_equal(format_percent(0, 0, out, sizeof(out)), "-");
    assert_string_equal(format_percent(50, 100, out, sizeof(out)), "50%");
    assert_string_equal(format_percent(999, 1000, out, sizeof(out)), "99%");
    assert_string_equal(format_percent(2000, 1000, out, sizeof(out)), "200%");
    assert_string_equal(format_percent(INT64_MAX, INT64_MAX, out, sizeof(out)), "100%");

    assert_string_equal(format_time(0, out, sizeof(out)), "1970-01-01 00:00:00Z");
    assert_string_equal(format_time(1767225600, out, sizeof(out)), "2026-01-01 00:00:00Z");
}

static void test_currencies(void **state)
{
    assert_int_equal(format_currency_decimals("USD"), 2);
    assert_int_equal(format_currency_decimals("EUR"), 2);
    assert_int_equal(format_currency_decimals("JPY"), 0);
    assert_int_equal(format_currency_decimals("KRW"), 0);
    assert_int_equal(format_currency_decimals("KWD"), 3);
    assert_int_equal(format_currency_decimals("XYZ"), 2);
    assert_int_equal(format_currency_decimals(NULL), 2);
    assert_true(format_is_currency("USD"));
    assert_false(format_is_currency("usd"));
    assert_false(format_is_currency("US"));
    assert_false(format_is_currency("USDT"));
    assert_false(format_is_currency("U$D"));
    assert_false(format_is_currency(""));
    assert_false(format_is_currency(NULL));
}

static void test_parse_money(void **state)
{
    static const struct {
        const char *in, *cur;
        int64_t want;
    } ok[] = {
            {"12.50", "USD", 1250},
            {"12.5", "USD", 1250},
            {"12", "USD", 1200},
            {"0.01", "USD", 1},
            {"0", "EUR", 0},
            {"-3.25", "EUR", -325},
            {"500", "JPY", 500},
            {"1.234", "KWD", 1234},
            {"1.2", "KWD", 1200},
            {"92233720368547758.07", "USD", INT64_MAX},
            {"-92233720368547758.08", "USD", INT64_MIN},
            {"9223372036854775807", "JPY", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (format_parse_money(ok[i].in, ok[i].cur, &v) != 0)
            fail_msg("'%s %s' was refused", ok[i].in, ok[i].cur);
        if (v != ok[i].want)
            fail_msg("'%s %s' gave %lld, not %lld", ok[i].in, ok[i].cur, (long long)v,
                     (long long)ok[i].want);
    }
    static const struct {
        const char *in, *cur;
    } bad[] = {
            {"", "USD"},
            {"-", "USD"},
            {"12.", "USD"},
            {".5", "USD"},
            {"1.505", "USD"},
            {"1,50", "USD"},
            {"1e3", "USD"},
            {"+1", "USD"},
            {" 1", "USD"},
            {"1 ", "USD"},
            {"5.0", "JPY"},
            {"5.", "JPY"},
            {"1.2345", "KWD"},
            {"12USD", "USD"},
            {"92233720368547758.08", "USD"},
            {"99999999999999999999", "JPY"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 42;
        if (format_parse_money(bad[i].in, bad[i].cur, &v) == 0)
            fail_msg("'%s %s' was accepted as %lld", bad[i].in, bad[i].cur, (long long)v);
        assert_int_equal(v, 42);
    }
}

static void test_parse_time(void **state)
{
    const int64_t now = 1767225600; /* 2026-01-01 00:00:00Z */
    static const struct {
        const char *in;
        int64_t want;
    } ok[] = {
            {"2026-01-01", 1767225600},
            {"2026-01-01 00:00", 1767225600},
            {"2026-01-02T15:04:05Z", 1767225600 + 86400 + 15 * 3600 + 4 * 60 + 5},
            {"2026-01-02 15:04:05", 1767225600 + 86400 + 15 * 3600 + 4 * 60 + 5},
            {"2026-01-02T15:04Z", 1767225600 + 86400 + 15 * 3600 + 4 * 60},
            {"2024-02-29", 1709164800},
            {"1970-01-01", 0},
            {"45s", now - 45},
            {"30m", now - 1800},
            {"2h", now - 7200},
            {"7d", now - 7 * 86400},
            {"2w", now - 14 * 86400},
            {"0s", now},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        if (format_parse_time(ok[i].in, now, &v) != 0)
            fail_msg("'%s' was refused", ok[i].in);
        if (v != ok[i].want)
            fail_msg("'%s' gave %lld, not %lld", ok[i].in, (long long)v, (long long)ok[i].want);
    }
    static const char *const bad[] = {
            "",
            "yesterday",
            "2026-1-1",
            "2026-01-01x",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-01-01 24:00",
            "2026-01-01 12:60",
            "2026-01-01 12",
            "2026-01-01T",
            "2026/01/01",
            "1969-12-31",
            "2026-01-01 1:00",
            "h",
            "5",
            "5y",
            "-5m",
            "99999999999999999999d",
            "2026-01-01ZZ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 42;
        if (format_parse_time(bad[i], now, &v) == 0)
            fail_msg("'%s' was accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, 42);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_parse_size_units),
            cmocka_unit_test(test_parse_size_refuses),
            cmocka_unit_test(test_parse_int_and_bool),
            cmocka_unit_test(test_format_size),
            cmocka_unit_test(test_format_count_money_percent_time),
            cmocka_unit_test(test_currencies),
            cmocka_unit_test(test_parse_money),
            cmocka_unit_test(test_parse_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
