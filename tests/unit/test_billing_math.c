/* Unit tests for billing's pure arithmetic: calendar months in UTC with the
 * day clamped to the month's length, period ends from an anchor, proration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "billing.h"

/* Unix time of a UTC date and time, by the C library (the reference). */
static int64_t utc(int y, int mon, int d, int h, int min, int s)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = min,
                    .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static void test_add_months_keeps_day_and_time(void **state)
{
    (void)state;
    assert_int_equal(billing_add_months(utc(2024, 3, 15, 10, 20, 30), 1),
                     utc(2024, 4, 15, 10, 20, 30));
    assert_int_equal(billing_add_months(utc(2024, 12, 15, 0, 0, 0), 1), utc(2025, 1, 15, 0, 0, 0));
    assert_int_equal(billing_add_months(utc(2024, 1, 15, 0, 0, 0), -1), utc(2023, 12, 15, 0, 0, 0));
    assert_int_equal(billing_add_months(utc(2024, 5, 1, 23, 59, 59), 24),
                     utc(2026, 5, 1, 23, 59, 59));
    assert_int_equal(billing_add_months(utc(2024, 5, 1, 0, 0, 0), 0), utc(2024, 5, 1, 0, 0, 0));
}

static void test_add_months_clamps(void **state)
{
    (void)state;
    /* leap and common Februaries, 30-day months */
    assert_int_equal(billing_add_months(utc(2024, 1, 31, 12, 0, 0), 1), utc(2024, 2, 29, 12, 0, 0));
    assert_int_equal(billing_add_months(utc(2023, 1, 31, 12, 0, 0), 1), utc(2023, 2, 28, 12, 0, 0));
    assert_int_equal(billing_add_months(utc(2100, 1, 29, 0, 0, 0), 1), utc(2100, 2, 28, 0, 0, 0));
    assert_int_equal(billing_add_months(utc(2000, 1, 30, 0, 0, 0), 1), utc(2000, 2, 29, 0, 0, 0));
    assert_int_equal(billing_add_months(utc(2024, 3, 31, 0, 0, 0), 1), utc(2024, 4, 30, 0, 0, 0));
    assert_int_equal(billing_add_months(utc(2024, 3, 31, 0, 0, 0), -1), utc(2024, 2, 29, 0, 0, 0));
}

static void test_add_months_before_1970(void **state)
{
    (void)state;
    assert_int_equal(billing_add_months(utc(1969, 12, 31, 23, 0, 0), 2),
                     utc(1970, 2, 28, 23, 0, 0));
    assert_int_equal(billing_add_months(utc(1970, 1, 1, 0, 0, 0), -1), utc(1969, 12, 1, 0, 0, 0));
}

/* The period ends of a subscription anchored on Jan 31 return to the 31st
 * after a short month: each is anchor + k months, not the previous end + 1. */
static void test_period_end_follows_anchor(void **state)
{
    (void)state;
    int64_t anchor = utc(2024, 1, 31, 9, 0, 0);
    int64_t want[] = {utc(2024, 2, 29, 9, 0, 0), utc(2024, 3, 31, 9, 0, 0),
                      utc(2024, 4, 30, 9, 0, 0), utc(2024, 5, 31, 9, 0, 0),
                      utc(2025, 1, 31, 9, 0, 0)};
    int64_t start = anchor;
    for (int i = 0; i < 4; i++) {
        int64_t end = billing_period_end(anchor, start);
        assert_int_equal(end, want[i]);
        start = end;
    }
    assert_int_equal(billing_period_end(anchor, utc(2024, 12, 31, 9, 0, 0)), want[4]);
    /* a start inside a period (e.g. after a late run) still ends on an anchor day */
    assert_int_equal(billing_period_end(anchor, utc(2024, 3, 5, 0, 0, 0)), want[1]);
    assert_int_equal(billing_period_end(anchor, want[1] - 1), want[1]);
    assert_int_equal(billing_period_end(anchor, want[1]), want[2]);
}

static void test_prorate(void **state)
{
    (void)state;
    int64_t out = -1;
    /* half of a 30-day period left of a 2000 difference */
    assert_int_equal(billing_prorate(2000, 15 * 86400, 30 * 86400, &out), 0);
    assert_int_equal(out, 1000);
    /* rounded down */
    assert_int_equal(billing_prorate(1000, 1, 3, &out), 0);
    assert_int_equal(out, 333);
    assert_int_equal(billing_prorate(1000, 2, 3, &out), 0);
    assert_int_equal(out, 666);
    assert_int_equal(billing_prorate(999, 0, 3, &out), 0);
    assert_int_equal(out, 0);
    assert_int_equal(billing_prorate(999, 3, 3, &out), 0);
    assert_int_equal(out, 999);
    /* no overflow where 64 bits would: 10^15 × 31 days */
    assert_int_equal(billing_prorate(BILLING_BALANCE_MAX, 31 * 86400 - 1, 31 * 86400, &out), 0);
    assert_int_equal(out, BILLING_BALANCE_MAX - BILLING_BALANCE_MAX / (31 * 86400) - 1);
    assert_int_equal(billing_prorate(INT64_MAX, INT64_MAX - 1, INT64_MAX, &out), 0);
    assert_int_equal(out, INT64_MAX - 1);
    /* refused */
    assert_int_equal(billing_prorate(100, 1, 0, &out), -1);
    assert_int_equal(billing_prorate(100, -1, 10, &out), -1);
    assert_int_equal(billing_prorate(100, 11, 10, &out), -1);
    assert_int_equal(billing_prorate(-100, 1, 10, &out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_add_months_keeps_day_and_time),
            cmocka_unit_test(test_add_months_clamps),
            cmocka_unit_test(test_add_months_before_1970),
            cmocka_unit_test(test_period_end_follows_anchor),
            cmocka_unit_test(test_prorate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
