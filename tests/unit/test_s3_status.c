/* Unit tests of the S3 status vocabulary: mapping, retry policy, errno. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "s3_status.h"

static void test_codes_win_over_http_status(void **state)
{
    assert_int_equal(s3_status_from_http(404, "NoSuchKey"), S3_ERR_NOT_FOUND);
    assert_int_equal(s3_status_from_http(404, "NoSuchBucket"), S3_ERR_NO_BUCKET);
    assert_int_equal(s3_status_from_http(404, "NoSuchUpload"), S3_ERR_NO_UPLOAD);
    assert_int_equal(s3_status_from_http(403, "AccessDenied"), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_status_from_http(400, "ExpiredToken"), S3_ERR_EXPIRED_TOKEN);
    assert_int_equal(s3_status_from_http(403, "SignatureDoesNotMatch"), S3_ERR_AUTH);
    assert_int_equal(s3_status_from_http(503, "SlowDown"), S3_ERR_SLOW_DOWN);
    assert_int_equal(s3_status_from_http(400, "RequestTimeout"), S3_ERR_TIMEOUT);
    assert_int_equal(s3_status_from_http(403, "QuotaExceeded"), S3_ERR_QUOTA);
    assert_int_equal(s3_status_from_http(400, "EntityTooSmall"), S3_ERR_TOO_BIG);
    /* a 200 carrying an error code is not a success */
    assert_int_equal(s3_status_from_http(200, "InternalError"), S3_ERR_SERVER);
    assert_int_equal(s3_status_from_http(200, "SomethingNew"), S3_ERR_BAD_RESPONSE);
}

static void test_http_status_alone(void **state)
{
    assert_int_equal(s3_status_from_http(200, NULL), S3_OK);
    assert_int_equal(s3_status_from_http(204, ""), S3_OK);
    assert_int_equal(s3_status_from_http(404, NULL), S3_ERR_NOT_FOUND);
    assert_int_equal(s3_status_from_http(403, NULL), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_status_from_http(412, NULL), S3_ERR_PRECONDITION);
    assert_int_equal(s3_status_from_http(416, NULL), S3_ERR_BAD_RANGE);
    assert_int_equal(s3_status_from_http(429, NULL), S3_ERR_SLOW_DOWN);
    assert_int_equal(s3_status_from_http(503, NULL), S3_ERR_SLOW_DOWN);
    assert_int_equal(s3_status_from_http(500, NULL), S3_ERR_SERVER);
    assert_int_equal(s3_status_from_http(502, "Unknown"), S3_ERR_SERVER);
    assert_int_equal(s3_status_from_http(400, "Unknown"), S3_ERR_INVALID);
    assert_int_equal(s3_status_from_http(301, NULL), S3_ERR_BAD_RESPONSE);
}

static void test_retry_policy(void **state)
{
    /* transport failures, timeouts, throttling and 5xx are retried ... */
    assert_true(s3_status_retryable(S3_ERR_CONNECT));
    assert_true(s3_status_retryable(S3_ERR_TIMEOUT));
    assert_true(s3_status_retryable(S3_ERR_SLOW_DOWN));
    assert_true(s3_status_retryable(S3_ERR_SERVER));
    /* ... never a 4xx answer or a local failure */
    for (int st = 0; st < S3_STATUS_COUNT; st++) {
        if (st == S3_ERR_CONNECT || st == S3_ERR_TIMEOUT || st == S3_ERR_SLOW_DOWN ||
            st == S3_ERR_SERVER || st == S3_ERR_TRANSPORT)
            continue;
        assert_false(s3_status_retryable((enum s3_status)st));
    }
}

static void test_strerror_and_errno(void **state)
{
    for (int st = 0; st < S3_STATUS_COUNT; st++) {
        assert_non_null(s3_strerror(st));
        assert_string_not_equal(s3_strerror(st), "unknown error");
    }
    assert_string_equal(s3_strerror(-1), "unknown error");
    assert_string_equal(s3_strerror(S3_STATUS_COUNT), "unknown error");
    assert_int_equal(s3_status_errno(S3_OK), 0);
    assert_int_equal(s3_status_errno(S3_ERR_NOT_FOUND), ENOENT);
    assert_int_equal(s3_status_errno(S3_ERR_ACCESS_DENIED), EACCES);
    assert_int_equal(s3_status_errno(S3_ERR_QUOTA), EDQUOT);
    assert_int_equal(s3_status_errno(S3_ERR_SERVER), EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_codes_win_over_http_status),
            cmocka_unit_test(test_http_status_alone),
            cmocka_unit_test(test_retry_policy),
            cmocka_unit_test(test_strerror_and_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
