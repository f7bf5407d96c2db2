/* Unit tests of webhooks.c (signatures, headers, events) and of payments.c's
 * money-as-text helpers. The expected HMACs were computed independently with
 * Python's hmac module, e.g.
 *   hmac.new(b"whsec_test_secret", b"1700000000." + body, hashlib.sha256).hexdigest() */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "payments.h"
#include "webhooks.h"

#define T0 1700000000

static const char stripe_body[] = "{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\"}";
/* HMAC-SHA256("whsec_test_secret", "1700000000." + stripe_body) */
#define STRIPE_SIG "a13d4b1f9003bc2fb6c06224e878b6056185eaa50d40e1e7dc05517f8af41d7b"
/* the same payload under "whsec_other" */
#define STRIPE_SIG_OTHER "f9e5f219a592e1abd56c6b0d3489748da4ddca9b4a5c8bfb31f55c5214e676d2"
/* HMAC-SHA256("whsec_test_secret", "1700000000.") : an empty body */
#define STRIPE_SIG_EMPTY "316b9ab98c15bfa039d243f3196acee619cf29749a91a634e6a8154e2f7b6727"

static const char razor_body[] = "{\"event\":\"payment.captured\"}";
/* HMAC-SHA256("rzp_webhook_secret", razor_body) */
#define RAZOR_SIG "e06c9b7e33d38f47008efdf70c03b31a2120e249976ff6d004a4a00b52acae66"

static const char btc_body[] = "{\"type\":\"InvoiceSettled\"}";
/* HMAC-SHA256("btcpay-secret", btc_body) */
#define BTC_SIG "4c5c844dcf548063b9c01606812d9894cb4a3e4bb04509b274a62e388df1047a"
/* HMAC-SHA256("k", "a\0b") */
#define NUL_SIG "982872ff8422d2d84de2d26d7900850ff9f3b3275079b02813b572f9ff0ef0b2"

static int stripe(const char *header, const char *secrets, int64_t now)
{
    return webhook_stripe_verify(header, stripe_body, strlen(stripe_body), secrets, now,
                                 WEBHOOK_STRIPE_TOLERANCE);
}

/* ---- Stripe-Signature parsing */

static void test_stripe_header_plain(void **state)
{
    struct webhook_stripe_header h;
    assert_int_equal(webhook_stripe_parse_header("t=1700000000,v1=" STRIPE_SIG, &h), WEBHOOK_OK);
    assert_int_equal(h.t, T0);
    assert_int_equal(h.n_v1, 1);
    assert_string_equal(h.v1[0], STRIPE_SIG);
}

static void test_stripe_header_spaces_order_other_schemes(void **state)
{
    struct webhook_stripe_header h;
    assert_int_equal(webhook_stripe_parse_header(" v0=abc , v1 = " STRIPE_SIG
                                                 " ,\tt=1700000000\t, v1=" STRIPE_SIG_OTHER ",",
                                                 &h),
                     WEBHOOK_OK);
    assert_int_equal(h.t, T0);
    assert_int_equal(h.n_v1, 2);
    assert_string_equal(h.v1[0], STRIPE_SIG);
    assert_string_equal(h.v1[1], STRIPE_SIG_OTHER);
}

static void test_stripe_header_uppercase_hex(void **state)
{
    struct webhook_stripe_header h;
    char header[128];
    snprintf(header, sizeof(header), "t=1,v1=%s", STRIPE_SIG);
    for (char *p = header + 7; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 32);
    assert_int_equal(webhook_stripe_parse_header(header, &h), WEBHOOK_OK);
    assert_string_equal(h.v1[0], STRIPE_SIG);
}

static void test_stripe_header_missing(void **state)
{
    struct webhook_stripe_header h;
    assert_int_equal(webhook_stripe_parse_header(NULL, &h), WEBHOOK_MISSING);
    assert_int_equal(webhook_stripe_parse_header("", &h), WEBHOOK_MISSING);
    assert_int_equal(webhook_stripe_parse_header("  \t ", &h), WEBHOOK_MISSING);
}

static void test_stripe_header_malformed(void **state)
{
    struct webhook_stripe_header h;
    static const char *const bad[] = {
            "v1=" STRIPE_SIG,                       /* no t */
            "t=,v1=" STRIPE_SIG,                    /* empty t */
            "t=abc,v1=" STRIPE_SIG,                 /* not a number */
            "t=-5,v1=" STRIPE_SIG,                  /* a sign */
            "t=0,v1=" STRIPE_SIG,                   /* not positive */
            "t=12 34,v1=" STRIPE_SIG,               /* a space inside */
            "t=1234567890123456789,v1=" STRIPE_SIG, /* 19 digits: could overflow */
            "t=1,t=2,v1=" STRIPE_SIG,               /* t twice */
            "t=1,garbage,v1=" STRIPE_SIG,           /* an entry without '=' */
            "garbage",
            "sha256=" STRIPE_SIG,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = webhook_stripe_parse_header(bad[i], &h);
        if (rc != WEBHOOK_MALFORMED)
            fail_msg("'%s' gave %d", bad[i], rc);
    }
    char big[WEBHOOK_HEADER_MAX + 10];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "t=1,v1=", 7);
    assert_int_equal(webhook_stripe_parse_header(big, &h), WEBHOOK_MALFORMED);
}

static void test_stripe_header_no_usable_v1(void **state)
{
    struct webhook_stripe_header h;
    assert_int_equal(webhook_stripe_parse_header("t=1", &h), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_stripe_parse_header("t=1,v0=" STRIPE_SIG, &h), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_stripe_parse_header("t=1,v1=abcd", &h), WEBHOOK_BAD_SIGNATURE);
    /* 64 characters but not hex */
    assert_int_equal(
            webhook_stripe_parse_header(
                    "t=1,v1=zz3d4b1f9003bc2fb6c06224e878b6056185eaa50d40e1e7dc05517f8af41d7b", &h),
            WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_stripe_parse_header("t=1,v1=", &h), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_header_many_v1(void **state)
{
    struct webhook_stripe_header h;
    char header[4096] = "t=1";
    for (int i = 0; i < 20; i++)
        strcat(header, ",v1=" STRIPE_SIG_OTHER);
    assert_int_equal(webhook_stripe_parse_header(header, &h), WEBHOOK_OK);
    assert_int_equal(h.n_v1, WEBHOOK_STRIPE_SIG_MAX);
}

/* ---- Stripe verification */

static void test_stripe_verify_ok(void **state)
{
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, "whsec_test_secret", T0), WEBHOOK_OK);
    assert_int_equal(webhook_stripe_verify("t=1700000000,v1=" STRIPE_SIG_EMPTY, "", 0,
                                           "whsec_test_secret", T0, 300),
                     WEBHOOK_OK);
}

static void test_stripe_verify_wrong(void **state)
{
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, "whsec_wrong", T0),
                     WEBHOOK_BAD_SIGNATURE);
    /* the signature binds the timestamp */
    assert_int_equal(stripe("t=1700000001,v1=" STRIPE_SIG, "whsec_test_secret", T0),
                     WEBHOOK_BAD_SIGNATURE);
    /* and the body */
    assert_int_equal(webhook_stripe_verify("t=1700000000,v1=" STRIPE_SIG, stripe_body,
                                           strlen(stripe_body) - 1, "whsec_test_secret", T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
    /* the secret is used as written, prefix included */
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, "test_secret", T0),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_verify_several_v1_and_secrets(void **state)
{
    /* the matching value second among several */
    assert_int_equal(
            stripe("t=1700000000,v1=" STRIPE_SIG_OTHER ",v1=" STRIPE_SIG, "whsec_test_secret", T0),
            WEBHOOK_OK);
    /* rotation: the second configured secret signs it */
    assert_int_equal(
            stripe("t=1700000000,v1=" STRIPE_SIG_OTHER, "whsec_test_secret, whsec_other", T0),
            WEBHOOK_OK);
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, " whsec_other ,,whsec_test_secret ", T0),
                     WEBHOOK_OK);
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG_OTHER, "whsec_test_secret", T0),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_verify_tolerance(void **state)
{
    const char *h = "t=1700000000,v1=" STRIPE_SIG;
    assert_int_equal(stripe(h, "whsec_test_secret", T0 + 300), WEBHOOK_OK);
    assert_int_equal(stripe(h, "whsec_test_secret", T0 + 301), WEBHOOK_STALE);
    assert_int_equal(stripe(h, "whsec_test_secret", T0 - 300), WEBHOOK_OK);
    assert_int_equal(stripe(h, "whsec_test_secret", T0 - 301), WEBHOOK_STALE);
    assert_int_equal(stripe(h, "whsec_test_secret", T0 + 86400 * 365), WEBHOOK_STALE);
    /* a bad signature is reported as such, whatever the time */
    assert_int_equal(stripe(h, "whsec_other", T0 + 301), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_verify_no_secret(void **state)
{
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, NULL, T0), WEBHOOK_NO_SECRET);
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, "", T0), WEBHOOK_NO_SECRET);
    assert_int_equal(stripe("t=1700000000,v1=" STRIPE_SIG, " , ,", T0), WEBHOOK_NO_SECRET);
    assert_int_equal(stripe(NULL, "whsec_test_secret", T0), WEBHOOK_MISSING);
}

/* ---- Razorpay, BTCPay */

static void test_razorpay_verify(void **state)
{
    size_t n = strlen(razor_body);
    assert_int_equal(webhook_razorpay_verify(RAZOR_SIG, razor_body, n, "rzp_webhook_secret"),
                     WEBHOOK_OK);
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(RAZOR_SIG[i] >= 'a' && RAZOR_SIG[i] <= 'f' ? RAZOR_SIG[i] - 32
                                                                     : RAZOR_SIG[i]);
    assert_int_equal(webhook_razorpay_verify(upper, razor_body, n, "rzp_webhook_secret"),
                     WEBHOOK_OK);
    assert_int_equal(webhook_razorpay_verify(RAZOR_SIG, razor_body, n, "old, rzp_webhook_secret"),
                     WEBHOOK_OK);
    assert_int_equal(webhook_razorpay_verify(RAZOR_SIG, razor_body, n, "other"),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_razorpay_verify(RAZOR_SIG, razor_body, n - 1, "rzp_webhook_secret"),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_razorpay_verify(NULL, razor_body, n, "rzp_webhook_secret"),
                     WEBHOOK_MISSING);
    assert_int_equal(webhook_razorpay_verify("", razor_body, n, "rzp_webhook_secret"),
                     WEBHOOK_MISSING);
    assert_int_equal(webhook_razorpay_verify("abc", razor_body, n, "rzp_webhook_secret"),
                     WEBHOOK_MALFORMED);
    assert_int_equal(
            webhook_razorpay_verify("sha256=" RAZOR_SIG, razor_body, n, "rzp_webhook_secret"),
            WEBHOOK_MALFORMED);
    assert_int_equal(webhook_razorpay_verify(RAZOR_SIG, razor_body, n, NULL), WEBHOOK_NO_SECRET);
}

static void test_btcpay_verify(void **state)
{
    size_t n = strlen(btc_body);
    assert_int_equal(webhook_btcpay_verify("sha256=" BTC_SIG, btc_body, n, "btcpay-secret"),
                     WEBHOOK_OK);
    assert_int_equal(webhook_btcpay_verify("sha256=" BTC_SIG, btc_body, n, "nope"),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(webhook_btcpay_verify(BTC_SIG, btc_body, n, "btcpay-secret"),
                     WEBHOOK_MALFORMED);
    assert_int_equal(webhook_btcpay_verify("sha1=" BTC_SIG, btc_body, n, "btcpay-secret"),
                     WEBHOOK_MALFORMED);
    assert_int_equal(webhook_btcpay_verify("sha256=", btc_body, n, "btcpay-secret"),
                     WEBHOOK_MALFORMED);
    assert_int_equal(webhook_btcpay_verify(NULL, btc_body, n, "btcpay-secret"), WEBHOOK_MISSING);
    /* the raw body, NUL bytes included */
    assert_int_equal(webhook_btcpay_verify("sha256=" NUL_SIG, "a\0b", 3, "k"), WEBHOOK_OK);
    assert_int_equal(webhook_btcpay_verify("sha256=" NUL_SIG, "a\0b", 1, "k"),
                     WEBHOOK_BAD_SIGNATURE);
}

/* ---- events */

static int parse_stripe(const char *json, struct webhook_event *ev)
{
    char err[256];
    return webhook_stripe_parse(json, strlen(json), ev, err, sizeof(err));
}

static void test_stripe_event_paid(void **state)
{
    struct webhook_event ev;
    assert_int_equal(
            parse_stripe("{\"id\":\"evt_9\",\"type\":\"checkout.session.completed\",\"data\":{"
                         "\"object\":{\"id\":\"cs_1\",\"payment_status\":\"paid\","
                         "\"amount_total\":1234,\"currency\":\"usd\","
                         "\"client_reference_id\":\"inv_a\",\"metadata\":{\"invoice_id\":"
                         "\"inv_a\"},\"payment_intent\":\"pi_1\"}}}",
                         &ev),
            WEBHOOK_OK);
    assert_true(ev.paid);
    assert_string_equal(ev.event_id, "evt_9");
    assert_string_equal(ev.ref, "cs_1");
    assert_string_equal(ev.payment_ref, "pi_1");
    assert_string_equal(ev.invoice_id, "inv_a");
    assert_int_equal(ev.amount_minor, 1234);
    assert_string_equal(ev.currency, "USD");

    /* metadata only; no payment_intent: the session stands for the payment */
    assert_int_equal(
            parse_stripe("{\"id\":\"evt_9\",\"type\":\"checkout.session.async_payment_succeeded\","
                         "\"data\":{\"object\":{\"id\":\"cs_1\",\"payment_status\":\"paid\","
                         "\"amount_total\":0,\"currency\":\"jpy\",\"payment_intent\":null,"
                         "\"metadata\":{\"invoice_id\":\"inv_b\"}}}}",
                         &ev),
            WEBHOOK_OK);
    assert_true(ev.paid);
    assert_string_equal(ev.invoice_id, "inv_b");
    assert_string_equal(ev.payment_ref, "cs_1");
    assert_string_equal(ev.currency, "JPY");
}

static void test_stripe_event_not_paid(void **state)
{
    struct webhook_event ev;
    assert_int_equal(parse_stripe("{\"id\":\"evt_2\",\"type\":\"customer.created\","
                                  "\"data\":{\"object\":{}}}",
                                  &ev),
                     WEBHOOK_OK);
    assert_false(ev.paid);
    assert_string_equal(ev.type, "customer.created");
    assert_int_equal(parse_stripe("{\"id\":\"evt_3\",\"type\":\"checkout.session.completed\","
                                  "\"data\":{\"object\":{\"id\":\"cs_1\",\"payment_status\":"
                                  "\"unpaid\"}}}",
                                  &ev),
                     WEBHOOK_OK);
    assert_false(ev.paid);
    assert_string_equal(ev.event_id, "evt_3");
}

static void test_stripe_event_bad(void **state)
{
    struct webhook_event ev;
    static const char *const bad[] = {
            "",
            "not json",
            "[1,2]",
            "{\"type\":\"x\"}",
            "{\"id\":\"\",\"type\":\"x\"}",
            "{\"id\":5,\"type\":\"x\"}",
            "{\"id\":\"evt\",\"id\":\"evt2\",\"type\":\"x\"}",
            "{\"id\":\"evt\"}",
            "{\"id\":\"evt\",\"type\":\"checkout.session.completed\"}",
            /* the two invoice references disagree */
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"id\":\"cs\",\"payment_status\":\"paid\",\"amount_total\":1,\"currency\":\"usd\","
            "\"client_reference_id\":\"inv_a\",\"metadata\":{\"invoice_id\":\"inv_b\"}}}}",
            /* no amount; a float amount; a negative amount; a bad currency */
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"id\":\"cs\",\"payment_status\":\"paid\",\"currency\":\"usd\"}}}",
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"id\":\"cs\",\"payment_status\":\"paid\",\"amount_total\":1.5,\"currency\":\"usd\"}}"
            "}",
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"id\":\"cs\",\"payment_status\":\"paid\",\"amount_total\":-1,\"currency\":\"usd\"}}}",
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"id\":\"cs\",\"payment_status\":\"paid\",\"amount_total\":1,\"currency\":\"us1\"}}}",
            /* no session id */
            "{\"id\":\"e\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
            "\"payment_status\":\"paid\",\"amount_total\":1,\"currency\":\"usd\"}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse_stripe(bad[i], &ev) != WEBHOOK_BAD_EVENT)
            fail_msg("accepted: %s", bad[i]);
}

static int parse_razor(const char *json, struct webhook_event *ev)
{
    char err[256];
    return webhook_razorpay_parse(json, strlen(json), ev, err, sizeof(err));
}

#define RZP_PAYMENT                                                                                \
    "\"payment\":{\"entity\":{\"id\":\"pay_1\",\"amount\":5000,\"currency\":\"INR\","              \
    "\"order_id\":\"order_1\",\"status\":\"captured\"}}"

static void test_razorpay_event(void **state)
{
    struct webhook_event ev;
    assert_int_equal(
            parse_razor("{\"event\":\"payment.captured\",\"payload\":{" RZP_PAYMENT "}}", &ev),
            WEBHOOK_OK);
    assert_true(ev.paid);
    /* keyed on signed data: the event and the payment */
    assert_string_equal(ev.event_id, "payment.captured:pay_1");
    assert_string_equal(ev.ref, "order_1");
    assert_string_equal(ev.payment_ref, "pay_1");
    assert_int_equal(ev.amount_minor, 5000);
    assert_string_equal(ev.currency, "INR");
    assert_string_equal(ev.invoice_id, "");

    assert_int_equal(parse_razor("{\"event\":\"order.paid\",\"payload\":{" RZP_PAYMENT
                                 ",\"order\":{\"entity\":{\"id\":\"order_1\",\"receipt\":"
                                 "\"inv_x\"}}}}",
                                 &ev),
                     WEBHOOK_OK);
    assert_true(ev.paid);
    assert_string_equal(ev.event_id, "order.paid:pay_1");
    assert_string_equal(ev.invoice_id, "inv_x");

    /* no payment: the body's digest, so the same body is the same event and
     * another body another one */
    const char *refund = "{\"event\":\"refund.created\",\"payload\":{}}";
    assert_int_equal(parse_razor(refund, &ev), WEBHOOK_OK);
    assert_false(ev.paid);
    char first[sizeof(ev.event_id)];
    snprintf(first, sizeof(first), "%s", ev.event_id);
    assert_int_equal(strncmp(first, "refund.created:body:", 20), 0);
    assert_int_equal(strlen(first), 20 + 64);
    assert_int_equal(parse_razor(refund, &ev), WEBHOOK_OK);
    assert_string_equal(ev.event_id, first);
    assert_int_equal(parse_razor("{\"event\":\"refund.created\",\"payload\":{},\"x\":1}", &ev),
                     WEBHOOK_OK);
    assert_string_not_equal(ev.event_id, first);
}

static void test_razorpay_event_bad(void **state)
{
    struct webhook_event ev;
    assert_int_equal(parse_razor("{\"event\":\"payment.captured\",\"payload\":{}}", &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_razor("{\"event\":\"payment.captured\",\"payload\":{\"payment\":{"
                                 "\"entity\":{\"id\":\"pay_1\",\"amount\":1,\"currency\":"
                                 "\"INR\"}}}}",
                                 &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_razor("{\"event\":\"payment.captured\",\"payload\":{\"payment\":{"
                                 "\"entity\":{\"id\":\"pay_1\",\"amount\":\"1\",\"currency\":"
                                 "\"INR\",\"order_id\":\"o\"}}}}",
                                 &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_razor("{\"event\":\"payment.captured\",\"payload\":{\"payment\":{"
                                 "\"entity\":{\"id\":5}}}}",
                                 &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_razor("{\"payload\":{}}", &ev), WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_razor("{\"event\":\"x\"", &ev), WEBHOOK_BAD_EVENT);
}

static int parse_btc(const char *json, struct webhook_event *ev)
{
    char err[256];
    return webhook_btcpay_parse(json, strlen(json), ev, err, sizeof(err));
}

static void test_btcpay_event(void **state)
{
    struct webhook_event ev;
    assert_int_equal(parse_btc("{\"deliveryId\":\"d2\",\"originalDeliveryId\":\"d1\","
                               "\"webhookId\":\"w1\",\"type\":\"InvoiceSettled\","
                               "\"invoiceId\":\"BtcInv1\",\"storeId\":\"s\"}",
                               &ev),
                     WEBHOOK_OK);
    assert_true(ev.paid);
    assert_string_equal(ev.event_id, "w1:BtcInv1:InvoiceSettled");
    assert_string_equal(ev.ref, "BtcInv1");
    assert_int_equal(ev.amount_minor, -1);

    assert_int_equal(parse_btc("{\"deliveryId\":\"d2\",\"originalDeliveryId\":\"d1\","
                               "\"webhookId\":\"w1\",\"type\":\"InvoiceCreated\","
                               "\"invoiceId\":\"BtcInv1\"}",
                               &ev),
                     WEBHOOK_OK);
    assert_false(ev.paid);
    assert_string_equal(ev.event_id, "d1");
    assert_int_equal(parse_btc("{\"deliveryId\":\"d2\",\"type\":\"InvoiceExpired\"}", &ev),
                     WEBHOOK_OK);
    assert_string_equal(ev.event_id, "d2");
}

static void test_btcpay_event_bad(void **state)
{
    struct webhook_event ev;
    assert_int_equal(parse_btc("{\"type\":\"InvoiceSettled\"}", &ev), WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_btc("{\"deliveryId\":\"d\",\"type\":\"InvoiceSettled\","
                               "\"invoiceId\":\"i\"}",
                               &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_btc("{\"deliveryId\":\"d\",\"webhookId\":\"w\","
                               "\"type\":\"InvoiceSettled\"}",
                               &ev),
                     WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_btc("{\"deliveryId\":\"d\"}", &ev), WEBHOOK_BAD_EVENT);
    assert_int_equal(parse_btc("{\"deliveryId\":7,\"type\":\"x\"}", &ev), WEBHOOK_BAD_EVENT);
}

/* ---- money as text */

static void fmt_is(int64_t minor, const char *cur, const char *want)
{
    char out[32];
    assert_int_equal(payments_amount_format(minor, cur, out, sizeof(out)), 0);
    assert_string_equal(out, want);
}

static void test_amount_format(void **state)
{
    fmt_is(1234, "USD", "12.34");
    fmt_is(5, "USD", "0.05");
    fmt_is(0, "EUR", "0.00");
    fmt_is(100, "INR", "1.00");
    fmt_is(500, "JPY", "500");
    fmt_is(1234, "KWD", "1.234");
    fmt_is(INT64_MAX, "USD", "92233720368547758.07");
    char out[32];
    assert_int_equal(payments_amount_format(-1, "USD", out, sizeof(out)), -EINVAL);
    assert_int_equal(payments_amount_format(1, "usd", out, sizeof(out)), -EINVAL);
    assert_int_equal(payments_amount_format(1234, "USD", out, 5), -ENOSPC);
    assert_int_equal(payments_currency_exponent("JPY"), 0);
    assert_int_equal(payments_currency_exponent("XPF"), 0);
    assert_int_equal(payments_currency_exponent("BHD"), 3);
    assert_int_equal(payments_currency_exponent("TND"), 3);
    assert_int_equal(payments_currency_exponent("USD"), 2);
}

static void parse_is(const char *s, const char *cur, int64_t want)
{
    int64_t v = -1;
    if (payments_amount_parse(s, cur, &v) != 0)
        fail_msg("'%s' %s refused", s, cur);
    assert_int_equal(v, want);
}

static void test_amount_parse(void **state)
{
    parse_is("12.34", "USD", 1234);
    parse_is("12.3", "USD", 1230);
    parse_is("12", "USD", 1200);
    parse_is("12.340000", "USD", 1234);
    parse_is("0.05", "USD", 5);
    parse_is("500", "JPY", 500);
    parse_is("500.000", "JPY", 500);
    parse_is("1.234", "KWD", 1234);
    parse_is("92233720368547758.07", "USD", INT64_MAX);
    static const char *const bad[] = {"",
                                      "-1",
                                      "+1",
                                      "1e3",
                                      " 1",
                                      "1 ",
                                      "12.",
                                      ".5",
                                      "1.2.3",
                                      "12.345",
                                      "abc",
                                      "0x10",
                                      "92233720368547758.08",
                                      "99999999999999999999",
                                      "1,5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        if (payments_amount_parse(bad[i], "USD", &v) != -EINVAL)
            fail_msg("accepted '%s'", bad[i]);
    }
    int64_t v;
    assert_int_equal(payments_amount_parse("500.5", "JPY", &v), -EINVAL);
    assert_int_equal(payments_amount_parse("1", "usd", &v), -EINVAL);
    assert_int_equal(payments_amount_parse(NULL, "USD", &v), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_stripe_header_plain),
            cmocka_unit_test(test_stripe_header_spaces_order_other_schemes),
            cmocka_unit_test(test_stripe_header_uppercase_hex),
            cmocka_unit_test(test_stripe_header_missing),
            cmocka_unit_test(test_stripe_header_malformed),
            cmocka_unit_test(test_stripe_header_no_usable_v1),
            cmocka_unit_test(test_stripe_header_many_v1),
            cmocka_unit_test(test_stripe_verify_ok),
            cmocka_unit_test(test_stripe_verify_wrong),
            cmocka_unit_test(test_stripe_verify_several_v1_and_secrets),
            cmocka_unit_test(test_stripe_verify_tolerance),
            cmocka_unit_test(test_stripe_verify_no_secret),
            cmocka_unit_test(test_razorpay_verify),
            cmocka_unit_test(test_btcpay_verify),
            cmocka_unit_test(test_stripe_event_paid),
            cmocka_unit_test(test_stripe_event_not_paid),
            cmocka_unit_test(test_stripe_event_bad),
            cmocka_unit_test(test_razorpay_event),
            cmocka_unit_test(test_razorpay_event_bad),
            cmocka_unit_test(test_btcpay_event),
            cmocka_unit_test(test_btcpay_event_bad),
            cmocka_unit_test(test_amount_format),
            cmocka_unit_test(test_amount_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
