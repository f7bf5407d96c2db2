/* Unit tests of mail.c: the RFC 5322 message builder (headers, encodings,
 * header injection), addresses, and the amounts and dates written in mail. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail.h"

static struct mail_message base(void)
{
    return (struct mail_message){.from = "Pockity <no-reply@example.com>",
                                 .to = "ann@example.org",
                                 .subject = "Your code",
                                 .body = "Hello,\nline two\n",
                                 .message_id = "abc123@example.com",
                                 .date = 0};
}

/* Every line ends with CRLF, none is longer than max characters. */
static void assert_lines(const char *text, size_t max)
{
    const char *p = text;
    while (*p) {
        const char *lf = strchr(p, '\n');
        assert_non_null(lf);
        assert_true(lf > p && lf[-1] == '\r');
        assert_true((size_t)(lf - 1 - p) <= max);
        assert_null(memchr(p, '\r', (size_t)(lf - 1 - p))); /* no bare CR inside */
        p = lf + 1;
    }
}

static const char *body_of(const char *text)
{
    const char *b = strstr(text, "\r\n\r\n");
    assert_non_null(b);
    return b + 4;
}

static void test_headers(void **state)
{
    (void)state;
    struct mail_message m = base();
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    assert_lines(out, 78);
    const char *want = "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
                       "From: Pockity <no-reply@example.com>\r\n"
                       "To: ann@example.org\r\n"
                       "Subject: Your code\r\n"
                       "Message-ID: <abc123@example.com>\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: quoted-printable\r\n"
                       "Auto-Submitted: auto-generated\r\n"
                       "\r\n"
                       "Hello,\r\nline two\r\n";
    assert_string_equal(out, want);
    free(out);

    m.from = "no-reply@example.com";
    m.date = 1751983200; /* 2025-07-08 14:00:00 UTC, a Tuesday */
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_non_null(strstr(out, "Date: Tue, 08 Jul 2025 14:00:00 +0000\r\n"));
    assert_non_null(strstr(out, "\r\nFrom: no-reply@example.com\r\n"));
    free(out);

    m.from = "Pockity \"Ops\" <no-reply@example.com>";
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_non_null(strstr(out, "From: \"Pockity \\\"Ops\\\"\" <no-reply@example.com>\r\n"));
    free(out);

    m.from = "Équipe Pockity, facturation et paiements <no-reply@example.com>";
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_lines(out, 78);
    assert_non_null(strstr(out, "From: =?UTF-8?B?"));
    assert_non_null(strstr(out, "?= <no-reply@example.com>\r\n"));
    free(out);
}

static void test_injection_refused(void **state)
{
    (void)state;
    char *out = (char *)1;
    size_t len = 1;
    struct mail_message m = base();
    m.subject = "hi\r\nBcc: victim@example.net";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    assert_null(out);
    m = base();
    m.subject = "hi\nthere";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.subject = "tab\there";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.to = "ann@example.org\r\nBcc: x@y.z";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.to = "ann@example.org, bob@example.org";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.from = "Evil\r\nBcc: x@y.z <a@b.c>";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.message_id = "a b@c";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.message_id = "a@b>\r\nX: y";
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    m = base();
    m.subject = NULL;
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
}

static void test_subject_encoded(void **state)
{
    (void)state;
    struct mail_message m = base();
    m.subject = "Pocket 'café' — payment overdue";
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(mail_build(&m, &out, &len), 0);
    /* "Pocket 'café' — payment overdue" in base64, in one word */
    assert_non_null(strstr(
            out, "Subject: =?UTF-8?B?UG9ja2V0ICdjYWbDqScg4oCUIHBheW1lbnQgb3ZlcmR1ZQ==?=\r\n"));
    free(out);

    /* A long subject is folded into several words of whole characters. */
    char longs[400] = "";
    for (int i = 0; i < 60; i++)
        strcat(longs, "é-"); /* 3 bytes each */
    m.subject = longs;
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_lines(out, 78);
    const char *s = strstr(out, "Subject: ");
    assert_non_null(s);
    assert_non_null(strstr(s, "?=\r\n =?UTF-8?B?"));
    free(out);
}

static void test_body_quoted_printable(void **state)
{
    (void)state;
    struct mail_message m = base();
    char *out = NULL;
    size_t len = 0;
    m.body = "a=b café  \r\nlone\rcr\n.\nlast";
    assert_int_equal(mail_build(&m, &out, &len), 0);
    assert_lines(out, 78);
    assert_string_equal(body_of(out), "a=3Db caf=C3=A9 =20\r\nlone\r\ncr\r\n.\r\nlast\r\n");
    free(out);

    /* A long line gets soft breaks; each encoded line stays within 76. */
    char line[500];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    m.body = line;
    assert_int_equal(mail_build(&m, &out, &len), 0);
    const char *b = body_of(out);
    assert_lines(b, 76);
    assert_non_null(strstr(b, "=\r\nx"));
    size_t xs = 0;
    for (const char *p = b; *p; p++)
        xs += *p == 'x';
    assert_int_equal(xs, sizeof(line) - 1);
    free(out);

    /* An encoded byte is never split by a soft break. */
    char many[300] = "";
    for (int i = 0; i < 90; i++)
        strcat(many, "é");
    m.body = many;
    assert_int_equal(mail_build(&m, &out, &len), 0);
    b = body_of(out);
    assert_lines(b, 76);
    for (const char *p = b; (p = strchr(p, '=')); p++)
        assert_true(p[1] == '\r' || (p[1] == 'C' || p[1] == 'A'));
    free(out);

    char *huge = malloc(MAIL_BODY_MAX + 2);
    assert_non_null(huge);
    memset(huge, 'y', MAIL_BODY_MAX + 1);
    huge[MAIL_BODY_MAX + 1] = '\0';
    m.body = huge;
    assert_int_equal(mail_build(&m, &out, &len), -EINVAL);
    free(huge);
}

static void test_addresses(void **state)
{
    (void)state;
    char a[MAIL_ADDRESS_MAX + 1];
    assert_int_equal(mail_address("Pockity <no-reply@example.com>", a, sizeof(a)), 0);
    assert_string_equal(a, "no-reply@example.com");
    assert_int_equal(mail_address("no-reply@example.com", a, sizeof(a)), 0);
    assert_string_equal(a, "no-reply@example.com");
    assert_int_equal(mail_address("<x@y.z>", a, sizeof(a)), 0);
    assert_string_equal(a, "x@y.z");
    assert_int_equal(mail_address("Name <x@y.z> trailing", a, sizeof(a)), -EINVAL);
    assert_int_equal(mail_address("Name <x@y.z", a, sizeof(a)), -EINVAL);
    assert_int_equal(mail_address("no at sign", a, sizeof(a)), -EINVAL);
    assert_int_equal(mail_address("x@y.z\n", a, sizeof(a)), -EINVAL);
    assert_int_equal(mail_address(NULL, a, sizeof(a)), -EINVAL);
    assert_int_equal(mail_address("x@y.z", a, 3), -EINVAL);

    assert_true(mail_address_ok("ann@example.org"));
    assert_true(mail_address_ok("ünï@exämple.org"));
    assert_false(mail_address_ok("@example.org"));
    assert_false(mail_address_ok("ann@"));
    assert_false(mail_address_ok("a@b@c"));
    assert_false(mail_address_ok("a b@c.d"));
    assert_false(mail_address_ok("a<b@c.d"));
    assert_false(mail_address_ok("a@c.d>"));
    assert_false(mail_address_ok(NULL));
    char longa[300];
    memset(longa, 'a', sizeof(longa));
    memcpy(longa + 250, "@b.cd", 6);
    assert_false(mail_address_ok(longa));
}

static void test_amounts_and_times(void **state)
{
    (void)state;
    char s[64];
    mail_format_amount(123456, "EUR", s, sizeof(s));
    assert_string_equal(s, "1234.56 EUR");
    mail_format_amount(-5, "USD", s, sizeof(s));
    assert_string_equal(s, "-0.05 USD");
    mail_format_amount(0, "USD", s, sizeof(s));
    assert_string_equal(s, "0.00 USD");
    mail_format_amount(500, "JPY", s, sizeof(s));
    assert_string_equal(s, "500 JPY");
    mail_format_amount(1234, "KWD", s, sizeof(s));
    assert_string_equal(s, "1.234 KWD");
    mail_format_amount(INT64_MIN, "USD", s, sizeof(s));
    assert_string_equal(s, "-92233720368547758.08 USD");
    mail_format_amount(100, "US", s, sizeof(s)); /* not a code: two decimals */
    assert_string_equal(s, "1.00 US");
    mail_format_amount(123456, "EUR", s, 5);
    assert_string_equal(s, "1234");

    mail_format_time(0, s, sizeof(s));
    assert_string_equal(s, "1970-01-01 00:00 UTC");
    mail_format_time(1751983200, s, sizeof(s));
    assert_string_equal(s, "2025-07-08 14:00 UTC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_headers),         cmocka_unit_test(test_injection_refused),
            cmocka_unit_test(test_subject_encoded), cmocka_unit_test(test_body_quoted_printable),
            cmocka_unit_test(test_addresses),       cmocka_unit_test(test_amounts_and_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
