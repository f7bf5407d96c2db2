/* Unit tests for s3_xml: S3/STS response decoders and request body builders,
 * with bodies in the shapes AWS documents and Ceph RGW sends. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "s3_xml.h"
#include "xml.h"

#define NS      "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""
#define XMLDECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"

/* Bodies are NUL-terminated here; the decoders take a length. */
#define L(s) (s), strlen(s)

/* ---- error bodies ---- */

static void test_error_s3(void **state)
{
    const char *body = XMLDECL "<Error>\n"
                               "  <Code>NoSuchKey</Code>\n"
                               "  <Message>The resource you requested does not exist</Message>\n"
                               "  <Resource>/mybucket/myfoto.jpg</Resource>\n"
                               "  <RequestId>4442587FB7D0A2F9</RequestId>\n"
                               "</Error>";
    struct s3_error_info e;
    assert_int_equal(s3_xml_parse_error(L(body), &e), S3_OK);
    assert_string_equal(e.code, "NoSuchKey");
    assert_string_equal(e.message, "The resource you requested does not exist");
    assert_string_equal(e.request_id, "4442587FB7D0A2F9");

    /* RGW's shape */
    body = XMLDECL "<Error><Code>NoSuchBucket</Code><BucketName>b</BucketName>"
                   "<RequestId>tx00000abc-0067-default</RequestId>"
                   "<HostId>1234-default-default</HostId></Error>";
    assert_int_equal(s3_xml_parse_error(L(body), &e), S3_OK);
    assert_string_equal(e.code, "NoSuchBucket");
    assert_string_equal(e.message, "");
    assert_string_equal(e.request_id, "tx00000abc-0067-default");

    /* an <Error> without anything in it is still an error document */
    assert_int_equal(s3_xml_parse_error(L("<Error/>"), &e), S3_OK);
    assert_string_equal(e.code, "");
}

static void test_error_sts(void **state)
{
    const char *body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
                       "  <Error>\n"
                       "    <Type>Sender</Type>\n"
                       "    <Code>AccessDenied</Code>\n"
                       "    <Message>Not authorized to perform sts:AssumeRole</Message>\n"
                       "  </Error>\n"
                       "  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
                       "</ErrorResponse>";
    struct s3_error_info e;
    assert_int_equal(s3_xml_parse_error(L(body), &e), S3_OK);
    assert_string_equal(e.code, "AccessDenied");
    assert_string_equal(e.message, "Not authorized to perform sts:AssumeRole");
    assert_string_equal(e.request_id, "c6104cbe-af31-11e0-8154-cbc7ccf896c7");
}

static void test_error_refused(void **state)
{
    struct s3_error_info e;
    memset(&e, 'x', sizeof(e));
    assert_int_equal(s3_xml_parse_error(L("<ListBucketResult/>"), &e), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_error(L("<ErrorResponse/>"), &e), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_error(L("<Error><Code>Oops"), &e), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_error("", 0, &e), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_error(L("<html><body>502 Bad Gateway</body>"), &e),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(e.code[0], 'x'); /* untouched */
}

static void test_error_truncates_fields(void **state)
{
    /* a long message in two-byte characters is cut at a character boundary */
    struct buf b;
    buf_init(&b, 1 << 16);
    assert_int_equal(buf_adds(&b, "<Error><Code>"), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(buf_adds(&b, "C"), 0);
    assert_int_equal(buf_adds(&b, "</Code><Message>"), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_adds(&b, "\xc3\xa9"), 0);
    assert_int_equal(buf_adds(&b, "</Message></Error>"), 0);
    struct s3_error_info e;
    assert_int_equal(s3_xml_parse_error(b.data, b.len, &e), S3_OK);
    assert_int_equal(strlen(e.code), sizeof(e.code) - 1);
    size_t n = strlen(e.message);
    assert_true(n == sizeof(e.message) - 1 || n == sizeof(e.message) - 2);
    assert_int_equal(n % 2, 0);
    for (size_t i = 0; i < n; i += 2)
        assert_memory_equal(e.message + i, "\xc3\xa9", 2);
    buf_release(&b);
}

/* ---- ListObjectsV2 ---- */

static const char list_aws[] =
        XMLDECL "<ListBucketResult " NS ">\n"
                "    <Name>bucket</Name>\n"
                "    <Prefix>photos/</Prefix>\n"
                "    <KeyCount>3</KeyCount>\n"
                "    <MaxKeys>3</MaxKeys>\n"
                "    <Delimiter>/</Delimiter>\n"
                "    <IsTruncated>true</IsTruncated>\n"
                "    <Contents>\n"
                "        <Key>photos/my-image.jpg</Key>\n"
                "        <LastModified>2009-10-12T17:50:30.000Z</LastModified>\n"
                "        <ETag>\"fba9dede5f27731c9771645a39863328\"</ETag>\n"
                "        <Size>434234</Size>\n"
                "        <StorageClass>STANDARD</StorageClass>\n"
                "    </Contents>\n"
                "    <Contents>\n"
                "        <Key>photos/R&amp;D \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac.txt</Key>\n"
                "        <LastModified>2026-11-25T10:00:00.000Z</LastModified>\n"
                "        <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>\n"
                "        <Size>0</Size>\n"
                "        <StorageClass>STANDARD</StorageClass>\n"
                "    </Contents>\n"
                "    <CommonPrefixes><Prefix>photos/2006/</Prefix></CommonPrefixes>\n"
                "    <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
                "</NextContinuationToken>\n"
                "</ListBucketResult>\n";

static void test_list_aws(void **state)
{
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(L(list_aws), &p), S3_OK);
    assert_int_equal(p.n_objects, 2);
    assert_string_equal(p.objects[0].key, "photos/my-image.jpg");
    assert_int_equal(p.objects[0].size, 434234);
    assert_string_equal(p.objects[0].etag, "\"fba9dede5f27731c9771645a39863328\"");
    assert_int_equal(p.objects[0].last_modified, 1255369830);
    assert_string_equal(p.objects[1].key, "photos/R&D \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac.txt");
    assert_int_equal(p.objects[1].size, 0);
    assert_string_equal(p.objects[1].etag, "\"9b2cf535f27731c974343645a3985328\"");
    assert_int_equal(p.objects[1].last_modified, 1795600800);
    assert_int_equal(p.n_prefixes, 1);
    assert_string_equal(p.prefixes[0], "photos/2006/");
    assert_true(p.is_truncated);
    assert_string_equal(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    assert_int_equal(p.key_count, 3);
    s3_list_page_release(&p);
    assert_null(p.objects);
    s3_list_page_release(&p); /* a released page can be released again */
}

static void test_list_rgw_url_encoded(void **state)
{
    /* RGW with encoding-type=url: keys, prefixes escaped; no KeyCount here */
    const char *body =
            XMLDECL "<ListBucketResult " NS "><Name>pockets</Name><Prefix>root%2F42%2F</Prefix>"
                    "<StartAfter>root%2F42%2Fa</StartAfter><MaxKeys>1000</MaxKeys>"
                    "<Delimiter>%2F</Delimiter><IsTruncated>false</IsTruncated>"
                    "<EncodingType>url</EncodingType>"
                    "<Contents><Key>a%20b%2Bc</Key>"
                    "<LastModified>2024-02-29T23:59:59.123Z</LastModified>"
                    "<ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>7</Size>"
                    "<StorageClass>STANDARD</StorageClass><Owner><ID>u</ID>"
                    "<DisplayName>u</DisplayName></Owner><Type>Normal</Type></Contents>"
                    "<Contents><Key>ctl%0A%01%7F%25%e2%82%ac</Key><Size>1</Size></Contents>"
                    "<Contents><Key>plus+is+space</Key><Size>2</Size></Contents>"
                    "<CommonPrefixes><Prefix>dir%20one%2F</Prefix></CommonPrefixes>"
                    "<CommonPrefixes><Prefix>%E6%97%A5%2F</Prefix></CommonPrefixes>"
                    "</ListBucketResult>";
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_OK);
    assert_int_equal(p.n_objects, 3);
    assert_string_equal(p.objects[0].key, "a b+c");
    assert_int_equal(p.objects[0].last_modified, 1709251199);
    assert_string_equal(p.objects[1].key, "ctl\n\x01\x7f%\xe2\x82\xac");
    assert_null(p.objects[1].etag);
    assert_int_equal(p.objects[1].last_modified, 0);
    assert_string_equal(p.objects[2].key, "plus is space");
    assert_int_equal(p.n_prefixes, 2);
    assert_string_equal(p.prefixes[0], "dir one/");
    assert_string_equal(p.prefixes[1], "\xe6\x97\xa5/");
    assert_false(p.is_truncated);
    assert_null(p.next_token);
    assert_int_equal(p.key_count, -1);
    s3_list_page_release(&p);

    /* EncodingType may come after the keys (AWS documents it after them) */
    body = "<ListBucketResult><Contents><Key>a%20b</Key><Size>1</Size></Contents>"
           "<CommonPrefixes><Prefix>d%2Bx%2F</Prefix></CommonPrefixes>"
           "<EncodingType>url</EncodingType></ListBucketResult>";
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_OK);
    assert_string_equal(p.objects[0].key, "a b");
    assert_string_equal(p.prefixes[0], "d+x/");
    s3_list_page_release(&p);
    body = "<ListBucketResult><CommonPrefixes><Prefix>bad%2</Prefix></CommonPrefixes>"
           "<EncodingType>url</EncodingType></ListBucketResult>";
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_ERR_BAD_RESPONSE);

    /* without EncodingType the same text is taken literally */
    body = "<ListBucketResult><Contents><Key>a%20b+c</Key><Size>1</Size></Contents>"
           "</ListBucketResult>";
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_OK);
    assert_string_equal(p.objects[0].key, "a%20b+c");
    s3_list_page_release(&p);
}

static void test_list_bad_escapes(void **state)
{
    static const char *const keys[] = {"a%zz", "a%4", "a%", "%00x", "a%g0"};
    char body[256];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(body, sizeof(body),
                 "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%s</Key>"
                 "<Size>1</Size></Contents></ListBucketResult>",
                 keys[i]);
        struct s3_list_page p;
        assert_int_equal(s3_xml_parse_list(L(body), &p), S3_ERR_BAD_RESPONSE);
    }
    /* an encoding we cannot undo */
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(L("<ListBucketResult><EncodingType>base64</EncodingType>"
                                         "</ListBucketResult>"),
                                       &p),
                     S3_ERR_BAD_RESPONSE);
}

static void test_list_empty(void **state)
{
    const char *body = XMLDECL "<ListBucketResult " NS "><Name>b</Name><Prefix>none/</Prefix>"
                               "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>"
                               "<IsTruncated>false</IsTruncated></ListBucketResult>";
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_OK);
    assert_int_equal(p.n_objects, 0);
    assert_int_equal(p.n_prefixes, 0);
    assert_int_equal(p.key_count, 0);
    assert_false(p.is_truncated);
    s3_list_page_release(&p);
}

static void test_list_1000_keys(void **state)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(buf_adds(&b, XMLDECL "<ListBucketResult " NS "><Name>b</Name>"
                                          "<Prefix>root/7/</Prefix><KeyCount>1000</KeyCount>"
                                          "<MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType>"
                                          "<IsTruncated>true</IsTruncated>"),
                     0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_addf(&b,
                                  "<Contents><Key>root%%2F7%%2Ffile%%20%04d.bin</Key>"
                                  "<LastModified>2026-11-25T10:00:%02d.000Z</LastModified>"
                                  "<ETag>&quot;%032x&quot;</ETag><Size>%d</Size>"
                                  "<StorageClass>STANDARD</StorageClass></Contents>",
                                  i, i % 60, i, i * 1000),
                         0);
    assert_int_equal(buf_adds(&b, "<NextContinuationToken>tok</NextContinuationToken>"
                                  "</ListBucketResult>"),
                     0);
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(b.data, b.len, &p), S3_OK);
    assert_int_equal(p.n_objects, 1000);
    char want[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(want, sizeof(want), "root/7/file %04d.bin", i);
        assert_string_equal(p.objects[i].key, want);
        assert_int_equal(p.objects[i].size, (uint64_t)i * 1000);
        assert_int_equal(p.objects[i].last_modified, 1795600800 + i % 60);
        snprintf(want, sizeof(want), "\"%032x\"", i);
        assert_string_equal(p.objects[i].etag, want);
    }
    assert_string_equal(p.next_token, "tok");
    assert_int_equal(p.key_count, 1000);
    s3_list_page_release(&p);
    buf_release(&b);
}

/* A one-object listing whose <Contents> holds contents. */
static int list_with(const char *contents, const char *tail)
{
    char body[1024];
    snprintf(body, sizeof(body), "<ListBucketResult><Contents>%s</Contents>%s</ListBucketResult>",
             contents, tail);
    struct s3_list_page p;
    memset(&p, 0xa5, sizeof(p));
    int rc = s3_xml_parse_list(L(body), &p);
    if (rc == S3_OK) {
        s3_list_page_release(&p);
    } else {
        /* out is filled only on success */
        unsigned char expect[sizeof(p)];
        memset(expect, 0xa5, sizeof(expect));
        assert_memory_equal(&p, expect, sizeof(p));
    }
    return rc;
}

static void test_list_bad_fields(void **state)
{
    assert_int_equal(list_with("<Key>k</Key><Size>18446744073709551615</Size>", ""), S3_OK);
    /* missing or empty required fields */
    assert_int_equal(list_with("<Size>1</Size>", ""), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with("<Key></Key><Size>1</Size>", ""), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with("<Key>k</Key>", ""), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with("<Key>k</Key><Size></Size>", ""), S3_ERR_BAD_RESPONSE);
    /* numbers: overflow, negative, signs, spaces, junk */
    static const char *const sizes[] = {
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "+1",
            " 1",
            "1 ",
            "0x10",
            "1e3",
            "1.5",
    };
    char contents[128];
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        snprintf(contents, sizeof(contents), "<Key>k</Key><Size>%s</Size>", sizes[i]);
        assert_int_equal(list_with(contents, ""), S3_ERR_BAD_RESPONSE);
    }
    const char *ok = "<Key>k</Key><Size>1</Size>";
    assert_int_equal(list_with(ok, "<KeyCount>2147483647</KeyCount>"), S3_OK);
    assert_int_equal(list_with(ok, "<KeyCount>2147483648</KeyCount>"), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with(ok, "<KeyCount>-1</KeyCount>"), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with(ok, "<IsTruncated>yes</IsTruncated>"), S3_ERR_BAD_RESPONSE);
    /* truncated, but no way to continue */
    assert_int_equal(list_with(ok, "<IsTruncated>true</IsTruncated>"), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with(ok, "<CommonPrefixes></CommonPrefixes>"), S3_ERR_BAD_RESPONSE);
    assert_int_equal(list_with(ok, "<CommonPrefixes><Prefix/></CommonPrefixes>"),
                     S3_ERR_BAD_RESPONSE);
}

static time_t list_time(const char *when)
{
    char body[256];
    snprintf(body, sizeof(body),
             "<ListBucketResult><Contents><Key>k</Key><Size>1</Size>"
             "<LastModified>%s</LastModified></Contents></ListBucketResult>",
             when);
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(L(body), &p), S3_OK);
    time_t t = p.objects[0].last_modified;
    s3_list_page_release(&p);
    return t;
}

static void test_list_times(void **state)
{
    assert_int_equal(list_time("2026-11-25T10:00:00.000Z"), 1795600800);
    assert_int_equal(list_time("2026-11-25T10:00:00Z"), 1795600800);
    assert_int_equal(list_time("2026-11-25T12:30:00.5+02:30"), 1795600800);
    assert_int_equal(list_time("2026-11-25T07:00:00-03:00"), 1795600800);
    assert_int_equal(list_time("2000-03-01T00:00:00Z"), 951868800);
    assert_int_equal(list_time("1999-12-31T23:59:60Z"), 946684800);
    assert_int_equal(list_time("2024-02-29T23:59:59Z"), 1709251199);
    assert_int_equal(list_time("1970-01-01T00:00:01Z"), 1);
    /* unparseable: 0 */
    static const char *const bad[] = {
            "2025-02-29T00:00:00Z",          "2026-13-01T00:00:00Z",
            "2026-11-31T00:00:00Z",          "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00",           "2026-11-25 10:00:00Z",
            "2026-11-25T10:00:00.Z",         "2026-11-25T10:00:00ZZ",
            "Wed, 25 Nov 2026 10:00:00 GMT", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(list_time(bad[i]), 0);
}

static void test_list_wrong_documents(void **state)
{
    struct s3_list_page p;
    /* an error document where a listing was expected: its code is mapped */
    assert_int_equal(s3_xml_parse_list(L("<Error><Code>NoSuchBucket</Code></Error>"), &p),
                     S3_ERR_NO_BUCKET);
    assert_int_equal(s3_xml_parse_list(L("<Error><Code>AccessDenied</Code></Error>"), &p),
                     S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_xml_parse_list(L("<Error><Code>WeirdNewCode</Code></Error>"), &p),
                     S3_ERR_SERVER);
    assert_int_equal(s3_xml_parse_list(L("<Error></Error>"), &p), S3_ERR_BAD_RESPONSE);
    /* an error document is read as one, whatever else it holds */
    assert_int_equal(s3_xml_parse_list(L("<Error><Code>AccessDenied</Code><Contents><Size>1</Size>"
                                         "</Contents></Error>"),
                                       &p),
                     S3_ERR_ACCESS_DENIED);
    /* wrong root */
    assert_int_equal(s3_xml_parse_list(L("<InitiateMultipartUploadResult><UploadId>x</UploadId>"
                                         "</InitiateMultipartUploadResult>"),
                                       &p),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_list(L("<ListBucketResultX/>"), &p), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_list("", 0, &p), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_list(L("\x89PNG\r\n\x1a\n"), &p), S3_ERR_BAD_RESPONSE);
    assert_int_equal(
            s3_xml_parse_list(L("<!DOCTYPE x [<!ENTITY a \"b\">]><ListBucketResult/>"), &p),
            S3_ERR_BAD_RESPONSE);

    /* every truncation of a real listing is refused (up to its closing '>';
     * only the trailing newline may go) */
    size_t len = strlen(list_aws) - 1;
    assert_int_equal(s3_xml_parse_list(list_aws, len, &p), S3_OK);
    s3_list_page_release(&p);
    for (size_t n = 0; n < len; n++) {
        int rc = s3_xml_parse_list(list_aws, n, &p);
        if (rc == S3_OK)
            fail_msg("truncation at %zu accepted", n);
        assert_int_equal(rc, S3_ERR_BAD_RESPONSE);
    }
}

static void test_list_too_large(void **state)
{
    /* past the parser's element limit: 70,000 objects of 3 elements each */
    struct buf b;
    buf_init(&b, 8 << 20);
    assert_int_equal(buf_adds(&b, "<ListBucketResult>"), 0);
    for (int i = 0; i < 70000; i++)
        assert_int_equal(buf_adds(&b, "<Contents><Key>k</Key><Size>1</Size></Contents>"), 0);
    assert_int_equal(buf_adds(&b, "</ListBucketResult>"), 0);
    struct s3_list_page p;
    assert_int_equal(s3_xml_parse_list(b.data, b.len, &p), S3_ERR_TOO_LARGE);
    buf_release(&b);
}

/* ---- multipart ---- */

static void test_initiate(void **state)
{
    const char *body =
            XMLDECL "<InitiateMultipartUploadResult " NS ">\n"
                    "  <Bucket>example-bucket</Bucket>\n"
                    "  <Key>example-object</Key>\n"
                    "  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9h"
                    "ZA</UploadId>\n"
                    "</InitiateMultipartUploadResult>";
    char *id = NULL;
    assert_int_equal(s3_xml_parse_initiate(L(body), &id), S3_OK);
    assert_string_equal(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");
    free(id);

    id = (char *)"untouched";
    assert_int_equal(s3_xml_parse_initiate(L("<InitiateMultipartUploadResult><Key>k</Key>"
                                             "</InitiateMultipartUploadResult>"),
                                           &id),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_initiate(L("<InitiateMultipartUploadResult><UploadId/>"
                                             "</InitiateMultipartUploadResult>"),
                                           &id),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_initiate(L("<ListBucketResult><UploadId>x</UploadId>"
                                             "</ListBucketResult>"),
                                           &id),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_initiate(L("<Error><Code>QuotaExceeded</Code></Error>"), &id),
                     S3_ERR_QUOTA);
    assert_int_equal(s3_xml_parse_initiate(L("<InitiateMultipartUploadResult><UploadId>x"), &id),
                     S3_ERR_BAD_RESPONSE);
    assert_string_equal(id, "untouched");
}

static void test_etag_results(void **state)
{
    static const char *const bodies[] = {
            XMLDECL "<CopyObjectResult " NS "><LastModified>2009-10-12T17:50:30.000Z"
                    "</LastModified><ETag>\"9b2cf535f27731c974343645a3985328\"</ETag>"
                    "</CopyObjectResult>",
            XMLDECL "<CopyPartResult><LastModified>2011-04-11T20:34:56.000Z</LastModified>"
                    "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>",
            XMLDECL "<CompleteMultipartUploadResult " NS ">"
                    "<Location>http://Example-Bucket.s3.amazonaws.com/Example-Object</Location>"
                    "<Bucket>Example-Bucket</Bucket><Key>Example-Object</Key>"
                    "<ETag>\"9b2cf535f27731c974343645a3985328\"</ETag>"
                    "</CompleteMultipartUploadResult>",
            /* RGW 16's copy result: unquoted, read as the ETag header has it */
            XMLDECL "<CopyObjectResult " NS "><LastModified>2026-11-28T13:10:14.724Z"
                    "</LastModified><ETag>9b2cf535f27731c974343645a3985328</ETag>"
                    "</CopyObjectResult>",
    };
    for (size_t i = 0; i < 4; i++) {
        char *etag = NULL;
        struct s3_error_info err;
        memset(&err, 'x', sizeof(err));
        assert_int_equal(s3_xml_parse_etag_result(L(bodies[i]), &etag, &err), S3_OK);
        assert_string_equal(etag, "\"9b2cf535f27731c974343645a3985328\"");
        assert_string_equal(err.code, "");
        free(etag);
        assert_int_equal(s3_xml_parse_etag_result(L(bodies[i]), &etag, NULL), S3_OK);
        free(etag);
    }
}

static void test_etag_result_200_error(void **state)
{
    /* a 200 whose body is an error: CompleteMultipartUpload and copies do that */
    const char *body = XMLDECL "\n\n\n<Error><Code>InternalError</Code>"
                               "<Message>We encountered an internal error. Please try again."
                               "</Message><RequestId>656c76696e6727732072657175657374</RequestId>"
                               "<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg=="
                               "</HostId></Error>";
    char *etag = (char *)"untouched";
    struct s3_error_info err;
    assert_int_equal(s3_xml_parse_etag_result(L(body), &etag, &err), S3_ERR_SERVER);
    assert_string_equal(etag, "untouched");
    assert_string_equal(err.code, "InternalError");
    assert_string_equal(err.message, "We encountered an internal error. Please try again.");
    assert_string_equal(err.request_id, "656c76696e6727732072657175657374");
    assert_int_equal(s3_xml_parse_etag_result(L(body), &etag, NULL), S3_ERR_SERVER);

    assert_int_equal(
            s3_xml_parse_etag_result(L("<Error><Code>SlowDown</Code></Error>"), &etag, &err),
            S3_ERR_SLOW_DOWN);
    assert_int_equal(
            s3_xml_parse_etag_result(L("<Error><Code>InvalidPart</Code></Error>"), &etag, &err),
            S3_ERR_INVALID);
    assert_string_equal(err.code, "InvalidPart");
    assert_int_equal(
            s3_xml_parse_etag_result(L("<Error><Code>NoSuchUpload</Code></Error>"), &etag, &err),
            S3_ERR_NO_UPLOAD);
    assert_int_equal(
            s3_xml_parse_etag_result(L("<Error><Code>SomethingNew</Code></Error>"), &etag, &err),
            S3_ERR_SERVER);
    /* missing ETag, wrong root, truncated */
    assert_int_equal(s3_xml_parse_etag_result(L("<CopyObjectResult><LastModified>x"
                                                "</LastModified></CopyObjectResult>"),
                                              &etag, &err),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(
            s3_xml_parse_etag_result(L("<DeleteResult><ETag>x</ETag></DeleteResult>"), &etag, &err),
            S3_ERR_BAD_RESPONSE);
    assert_string_equal(err.code, "");
    assert_int_equal(
            s3_xml_parse_etag_result(L("<CompleteMultipartUploadResult><ETag>\"ab"), &etag, &err),
            S3_ERR_BAD_RESPONSE);
    assert_string_equal(etag, "untouched");
}

static void test_complete_result(void **state)
{
    char *etag = (char *)"untouched";
    struct s3_error_info err;
    const char *ok = XMLDECL "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/"
                             "2006-03-01/\"><Location>http://h/b/k</Location><Bucket>b</Bucket>"
                             "<Key>k</Key><ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>"
                             "</CompleteMultipartUploadResult>";
    assert_int_equal(s3_xml_parse_complete(L(ok), &etag, &err), S3_OK);
    assert_string_equal(etag, "\"3858f62230ac3c915f300c664312c11f-9\"");
    assert_string_equal(err.code, "");
    free(etag);
    /* RGW 16.2's answer: completed, without the ETag */
    const char *rgw = XMLDECL "<CompleteMultipartUploadResult><Location>http://h/b/k</Location>"
                              "<Bucket>b</Bucket><Key>k</Key><ETag></ETag>"
                              "</CompleteMultipartUploadResult>";
    etag = (char *)"untouched";
    assert_int_equal(s3_xml_parse_complete(L(rgw), &etag, NULL), S3_OK);
    assert_null(etag);
    etag = (char *)"untouched";
    assert_int_equal(s3_xml_parse_complete(L("<CompleteMultipartUploadResult><Key>k</Key>"
                                             "</CompleteMultipartUploadResult>"),
                                           &etag, &err),
                     S3_OK);
    assert_null(etag);
    /* an error after the 200, another result's document, broken XML */
    assert_int_equal(
            s3_xml_parse_complete(L("<Error><Code>InternalError</Code></Error>"), &etag, &err),
            S3_ERR_SERVER);
    assert_null(etag);
    assert_string_equal(err.code, "InternalError");
    assert_int_equal(s3_xml_parse_complete(L("<CopyObjectResult><ETag>\"e\"</ETag>"
                                             "</CopyObjectResult>"),
                                           &etag, &err),
                     S3_ERR_BAD_RESPONSE);
    assert_string_equal(err.code, "");
    assert_int_equal(s3_xml_parse_complete(L("<CompleteMultipartUploadResult><ETag>"), &etag, &err),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_complete(L(""), &etag, &err), S3_ERR_BAD_RESPONSE);
    assert_null(etag);
}

static void test_parts(void **state)
{
    const char *body = XMLDECL
            "<ListPartsResult " NS ">\n"
            "  <Bucket>example-bucket</Bucket>\n"
            "  <Key>example-object</Key>\n"
            "  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>\n"
            "  <Initiator><ID>arn:aws:iam::111122223333:user/some-user</ID>"
            "<DisplayName>umat-user</DisplayName></Initiator>\n"
            "  <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>"
            "<DisplayName>someName</DisplayName></Owner>\n"
            "  <StorageClass>STANDARD</StorageClass>\n"
            "  <PartNumberMarker>1</PartNumberMarker>\n"
            "  <NextPartNumberMarker>3</NextPartNumberMarker>\n"
            "  <MaxParts>2</MaxParts>\n"
            "  <IsTruncated>true</IsTruncated>\n"
            "  <Part>\n"
            "    <PartNumber>2</PartNumber>\n"
            "    <LastModified>2010-11-10T20:48:34.000Z</LastModified>\n"
            "    <ETag>\"7778aef83f66abc1fa1e8477f296d394\"</ETag>\n"
            "    <Size>10485760</Size>\n"
            "  </Part>\n"
            "  <Part>\n"
            "    <PartNumber>3</PartNumber>\n"
            "    <LastModified>2010-11-10T20:48:33.000Z</LastModified>\n"
            "    <ETag>\"aaaa18db4cc2f85cedef654fccc4a4x8\"</ETag>\n"
            "    <Size>5368709120</Size>\n"
            "  </Part>\n"
            "</ListPartsResult>";
    struct s3_part_list l;
    assert_int_equal(s3_xml_parse_parts(L(body), &l), S3_OK);
    assert_int_equal(l.n_parts, 2);
    assert_int_equal(l.parts[0].number, 2);
    assert_int_equal(l.parts[0].size, 10485760);
    assert_string_equal(l.parts[0].etag, "\"7778aef83f66abc1fa1e8477f296d394\"");
    assert_int_equal(l.parts[1].number, 3);
    assert_int_equal(l.parts[1].size, 5368709120ULL);
    assert_true(l.is_truncated);
    assert_int_equal(l.next_marker, 3);
    s3_part_list_release(&l);

    assert_int_equal(s3_xml_parse_parts(L("<ListPartsResult><IsTruncated>false</IsTruncated>"
                                          "</ListPartsResult>"),
                                        &l),
                     S3_OK);
    assert_int_equal(l.n_parts, 0);
    assert_false(l.is_truncated);
    assert_int_equal(l.next_marker, 0);
    s3_part_list_release(&l);
}

static int parts_with(const char *part, const char *tail)
{
    char body[512];
    snprintf(body, sizeof(body), "<ListPartsResult><Part>%s</Part>%s</ListPartsResult>", part,
             tail);
    struct s3_part_list l;
    int rc = s3_xml_parse_parts(L(body), &l);
    if (rc == S3_OK)
        s3_part_list_release(&l);
    return rc;
}

static void test_parts_bad(void **state)
{
    assert_int_equal(parts_with("<PartNumber>10000</PartNumber><Size>1</Size><ETag>e</ETag>", ""),
                     S3_OK);
    assert_int_equal(parts_with("<PartNumber>0</PartNumber><Size>1</Size><ETag>e</ETag>", ""),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<PartNumber>10001</PartNumber><Size>1</Size><ETag>e</ETag>", ""),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<PartNumber>-1</PartNumber><Size>1</Size><ETag>e</ETag>", ""),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<Size>1</Size><ETag>e</ETag>", ""), S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<PartNumber>1</PartNumber><ETag>e</ETag>", ""),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<PartNumber>1</PartNumber><Size>-5</Size><ETag>e</ETag>", ""),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with("<PartNumber>1</PartNumber><Size>1</Size>", ""),
                     S3_ERR_BAD_RESPONSE);
    const char *ok = "<PartNumber>1</PartNumber><Size>1</Size><ETag>e</ETag>";
    assert_int_equal(parts_with(ok, "<IsTruncated>true</IsTruncated>"), S3_ERR_BAD_RESPONSE);
    assert_int_equal(parts_with(ok, "<IsTruncated>true</IsTruncated>"
                                    "<NextPartNumberMarker>1</NextPartNumberMarker>"),
                     S3_OK);
    assert_int_equal(parts_with(ok, "<NextPartNumberMarker>x</NextPartNumberMarker>"),
                     S3_ERR_BAD_RESPONSE);
    struct s3_part_list l;
    assert_int_equal(s3_xml_parse_parts(L("<Error><Code>NoSuchUpload</Code></Error>"), &l),
                     S3_ERR_NO_UPLOAD);
}

/* ---- DeleteObjects ---- */

static void test_delete_result(void **state)
{
    const char *body = XMLDECL "<DeleteResult " NS ">\n"
                               "  <Deleted><Key>sample1.txt</Key></Deleted>\n"
                               "  <Deleted><Key>a &amp; b</Key><DeleteMarker>true</DeleteMarker>"
                               "<DeleteMarkerVersionId>A._w1z6EFiCF5uhtQMDal9JDkID9tQ7F"
                               "</DeleteMarkerVersionId></Deleted>\n"
                               "  <Error>\n"
                               "    <Key>sample2 \xc3\xa9.txt</Key>\n"
                               "    <Code>AccessDenied</Code>\n"
                               "    <Message>Access Denied</Message>\n"
                               "  </Error>\n"
                               "  <Error><Key>x</Key></Error>\n"
                               "</DeleteResult>";
    struct s3_delete_result r;
    assert_int_equal(s3_xml_parse_delete(L(body), &r), S3_OK);
    assert_int_equal(r.n_deleted, 2);
    assert_int_equal(r.n_failures, 2);
    assert_string_equal(r.failures[0].key, "sample2 \xc3\xa9.txt");
    assert_string_equal(r.failures[0].code, "AccessDenied");
    assert_string_equal(r.failures[1].key, "x");
    assert_string_equal(r.failures[1].code, "");
    s3_delete_result_release(&r);

    /* quiet mode with everything deleted */
    assert_int_equal(s3_xml_parse_delete(L(XMLDECL "<DeleteResult " NS "></DeleteResult>"), &r),
                     S3_OK);
    assert_int_equal(r.n_deleted, 0);
    assert_int_equal(r.n_failures, 0);
    s3_delete_result_release(&r);

    assert_int_equal(s3_xml_parse_delete(L("<DeleteResult><Error><Code>AccessDenied</Code>"
                                           "</Error></DeleteResult>"),
                                         &r),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_delete(L("<Error><Code>MalformedXML</Code></Error>"), &r),
                     S3_ERR_SERVER);
    assert_int_equal(s3_xml_parse_delete(L("<DeleteResult><Deleted>"), &r), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_delete(L("<ListPartsResult/>"), &r), S3_ERR_BAD_RESPONSE);
}

/* ---- ListMultipartUploads ---- */

static void test_uploads(void **state)
{
    const char *body =
            XMLDECL "<ListMultipartUploadsResult " NS ">\n"
                    "  <Bucket>bucket</Bucket>\n"
                    "  <KeyMarker></KeyMarker>\n"
                    "  <UploadIdMarker></UploadIdMarker>\n"
                    "  <NextKeyMarker>root%2F7%2Fmy%20movie.m2ts</NextKeyMarker>\n"
                    "  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ"
                    "</NextUploadIdMarker>\n"
                    "  <EncodingType>url</EncodingType>\n"
                    "  <MaxUploads>3</MaxUploads>\n"
                    "  <IsTruncated>true</IsTruncated>\n"
                    "  <Upload>\n"
                    "    <Key>root%2F7%2Fmy-divisor</Key>\n"
                    "    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>\n"
                    "    <Initiator><ID>arn:aws:iam::111122223333:user/user1</ID>"
                    "<DisplayName>user1</DisplayName></Initiator>\n"
                    "    <Owner><ID>75aa57f0</ID><DisplayName>OwnerDisplayName</DisplayName>"
                    "</Owner>\n"
                    "    <StorageClass>STANDARD</StorageClass>\n"
                    "    <Initiated>2010-11-10T20:48:33.000Z</Initiated>\n"
                    "  </Upload>\n"
                    "  <Upload>\n"
                    "    <Key>root%2F7%2Fmy%20movie.m2ts</Key>\n"
                    "    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
                    "</UploadId>\n"
                    "  </Upload>\n"
                    "</ListMultipartUploadsResult>";
    struct s3_upload_list l;
    assert_int_equal(s3_xml_parse_uploads(L(body), &l), S3_OK);
    assert_int_equal(l.n_uploads, 2);
    assert_string_equal(l.uploads[0].key, "root/7/my-divisor");
    assert_string_equal(l.uploads[0].upload_id,
                        "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw");
    assert_int_equal(l.uploads[0].initiated, 1289422113);
    assert_string_equal(l.uploads[1].key, "root/7/my movie.m2ts");
    assert_int_equal(l.uploads[1].initiated, 0);
    assert_true(l.is_truncated);
    assert_string_equal(l.next_key_marker, "root/7/my movie.m2ts");
    assert_string_equal(l.next_upload_id_marker, "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ");
    s3_upload_list_release(&l);

    /* the last page: empty markers come back as NULL */
    assert_int_equal(s3_xml_parse_uploads(L("<ListMultipartUploadsResult><NextKeyMarker/>"
                                            "<NextUploadIdMarker></NextUploadIdMarker>"
                                            "<IsTruncated>false</IsTruncated>"
                                            "</ListMultipartUploadsResult>"),
                                          &l),
                     S3_OK);
    assert_int_equal(l.n_uploads, 0);
    assert_null(l.next_key_marker);
    assert_null(l.next_upload_id_marker);
    s3_upload_list_release(&l);

    assert_int_equal(s3_xml_parse_uploads(L("<ListMultipartUploadsResult><Upload><Key>k</Key>"
                                            "</Upload></ListMultipartUploadsResult>"),
                                          &l),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_uploads(L("<ListMultipartUploadsResult><Upload><UploadId>u"
                                            "</UploadId></Upload></ListMultipartUploadsResult>"),
                                          &l),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_uploads(L("<ListMultipartUploadsResult><IsTruncated>true"
                                            "</IsTruncated></ListMultipartUploadsResult>"),
                                          &l),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_uploads(L("<ListBucketResult/>"), &l), S3_ERR_BAD_RESPONSE);
}

/* ---- STS AssumeRole ---- */

static const char assume_role_body[] =
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <AssumeRoleResult>\n"
        "    <SourceIdentity>Alice</SourceIdentity>\n"
        "    <AssumedRoleUser>\n"
        "      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>\n"
        "      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>\n"
        "    </AssumedRoleUser>\n"
        "    <Credentials>\n"
        "      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>\n"
        "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
        "      <SessionToken>\n"
        "       AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW\n"
        "      </SessionToken>\n"
        "      <Expiration>2019-11-09T13:34:41Z</Expiration>\n"
        "    </Credentials>\n"
        "    <PackedPolicySize>6</PackedPolicySize>\n"
        "  </AssumeRoleResult>\n"
        "  <ResponseMetadata>\n"
        "    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</AssumeRoleResponse>";

static void test_assume_role(void **state)
{
    struct sts_credentials c;
    assert_int_equal(s3_xml_parse_assume_role(L(assume_role_body), &c), S3_OK);
    assert_string_equal(c.access_key, "ASIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.secret_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    /* the token is taken exactly as sent, whitespace included */
    assert_string_equal(c.session_token, "\n       AQoDYXdzEPT//////////"
                                         "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW\n      ");
    assert_int_equal(c.expiration, 1573306481);
    sts_credentials_release(&c);
    assert_null(c.secret_key);
    sts_credentials_release(&c);

    /* RGW's compact shape with a fractional expiration */
    const char *rgw = "<AssumeRoleResponse><AssumeRoleResult><AssumedRoleUser><Arn>a</Arn>"
                      "</AssumedRoleUser><Credentials><AccessKeyId>AK</AccessKeyId>"
                      "<Expiration>2026-11-25T10:00:00.000Z</Expiration>"
                      "<SecretAccessKey>SK</SecretAccessKey><SessionToken>TOK</SessionToken>"
                      "</Credentials><PackedPolicySize>0</PackedPolicySize></AssumeRoleResult>"
                      "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                      "</AssumeRoleResponse>";
    assert_int_equal(s3_xml_parse_assume_role(L(rgw), &c), S3_OK);
    assert_string_equal(c.access_key, "AK");
    assert_string_equal(c.secret_key, "SK");
    assert_string_equal(c.session_token, "TOK");
    assert_int_equal(c.expiration, 1795600800);
    sts_credentials_release(&c);
}

/* The AssumeRole body with the element named field replaced by with. */
static int assume_role_without(const char *field, const char *with)
{
    char open[64];
    snprintf(open, sizeof(open), "<%s>", field);
    const char *start = strstr(assume_role_body, open);
    assert_non_null(start);
    snprintf(open, sizeof(open), "</%s>", field);
    const char *end = strstr(start, open);
    assert_non_null(end);
    end += strlen(open);
    struct buf b;
    buf_init(&b, 1 << 16);
    assert_int_equal(buf_add(&b, assume_role_body, (size_t)(start - assume_role_body)), 0);
    assert_int_equal(buf_adds(&b, with), 0);
    assert_int_equal(buf_adds(&b, end), 0);
    struct sts_credentials c;
    memset(&c, 0, sizeof(c));
    int rc = s3_xml_parse_assume_role(b.data, b.len, &c);
    if (rc == S3_OK)
        sts_credentials_release(&c);
    else
        assert_null(c.access_key);
    buf_release(&b);
    return rc;
}

static void test_assume_role_bad(void **state)
{
    static const char *const fields[] = {"AccessKeyId", "SecretAccessKey", "SessionToken",
                                         "Expiration"};
    char empty[64];
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(assume_role_without(fields[i], ""), S3_ERR_BAD_RESPONSE);
        snprintf(empty, sizeof(empty), "<%s></%s>", fields[i], fields[i]);
        assert_int_equal(assume_role_without(fields[i], empty), S3_ERR_BAD_RESPONSE);
    }
    assert_int_equal(assume_role_without("Expiration", "<Expiration>soon</Expiration>"),
                     S3_ERR_BAD_RESPONSE);
    assert_int_equal(assume_role_without("Credentials", ""), S3_ERR_BAD_RESPONSE);
    assert_int_equal(assume_role_without("AssumeRoleResult", ""), S3_ERR_BAD_RESPONSE);
    /* the replacement itself is fine: the helper works */
    assert_int_equal(assume_role_without("PackedPolicySize", ""), S3_OK);

    struct sts_credentials c;
    const char *denied = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                         "<Error><Type>Sender</Type><Code>AccessDenied</Code>"
                         "<Message>denied</Message></Error><RequestId>r</RequestId>"
                         "</ErrorResponse>";
    assert_int_equal(s3_xml_parse_assume_role(L(denied), &c), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_xml_parse_assume_role(L("<ErrorResponse><Error><Code>ExpiredToken</Code>"
                                                "</Error></ErrorResponse>"),
                                              &c),
                     S3_ERR_EXPIRED_TOKEN);
    assert_int_equal(s3_xml_parse_assume_role(L("<ErrorResponse/>"), &c), S3_ERR_BAD_RESPONSE);
    assert_int_equal(s3_xml_parse_assume_role(L("<AssumeRoleWithWebIdentityResponse/>"), &c),
                     S3_ERR_BAD_RESPONSE);
    /* truncated inside the secret */
    const char *cut = strstr(assume_role_body, "K7MDENG");
    assert_int_equal(
            s3_xml_parse_assume_role(assume_role_body, (size_t)(cut - assume_role_body), &c),
            S3_ERR_BAD_RESPONSE);
}

/* ---- builders ---- */

static void test_build_delete(void **state)
{
    const char *keys[] = {"plain.txt", "a<b>&\"c'd", "\xe6\x97\xa5 \xe2\x82\xac/x", "tab\tlf\ncr\r",
                          " spaces "};
    size_t n = sizeof(keys) / sizeof(keys[0]);
    size_t len = 0;
    char *body = s3_xml_build_delete(keys, n, 1, &len);
    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    assert_non_null(strstr(body, "<Quiet>true</Quiet>"));
    assert_non_null(strstr(body, "<Key>a&lt;b&gt;&amp;&quot;c&apos;d</Key>"));
    assert_non_null(strstr(body, "<Key>tab\tlf\ncr&#13;</Key>"));
    assert_null(strstr(body, "<Key>a<"));

    /* round trip: parsed back, the keys are exactly the originals */
    struct xml_doc *doc;
    assert_int_equal(xml_parse(body, len, NULL, &doc), 0);
    const struct xml_node *root = xml_root(doc);
    assert_string_equal(xml_name(root), "Delete");
    assert_string_equal(xml_child_text(root, "Quiet"), "true");
    assert_int_equal(xml_child_count(root, "Object"), n);
    size_t i = 0;
    for (const struct xml_node *o = xml_child(root, "Object"); o;
         o = xml_next_sibling(o, "Object"), i++)
        assert_string_equal(xml_child_text(o, "Key"), keys[i]);
    assert_int_equal(i, n);
    xml_doc_free(doc);
    free(body);

    /* not quiet: no Quiet element; len may be NULL */
    body = s3_xml_build_delete(keys, 1, 0, NULL);
    assert_non_null(body);
    assert_null(strstr(body, "Quiet"));
    free(body);
}

static void test_build_delete_refused(void **state)
{
    size_t len = 12345;
    const char *ctl[] = {"ok", "bad\x01key"};
    assert_null(s3_xml_build_delete(ctl, 2, 1, &len));
    const char *ctl2[] = {"esc\x1b[0m"};
    assert_null(s3_xml_build_delete(ctl2, 1, 1, &len));
    const char *utf[] = {"bad\xff"};
    assert_null(s3_xml_build_delete(utf, 1, 1, &len));
    const char *empty[] = {"a", ""};
    assert_null(s3_xml_build_delete(empty, 2, 1, &len));
    const char *null[] = {"a", NULL};
    assert_null(s3_xml_build_delete(null, 2, 1, &len));
    assert_null(s3_xml_build_delete(null, 0, 1, &len));
    assert_null(s3_xml_build_delete(NULL, 1, 1, &len));

    /* 1000 keys is the most one request may name */
    const char **many = calloc(1001, sizeof(*many));
    assert_non_null(many);
    char(*names)[16] = calloc(1001, sizeof(*names));
    assert_non_null(names);
    for (int i = 0; i < 1001; i++) {
        snprintf(names[i], sizeof(names[i]), "key-%d", i);
        many[i] = names[i];
    }
    char *body = s3_xml_build_delete(many, 1000, 1, &len);
    assert_non_null(body);
    struct xml_doc *doc;
    assert_int_equal(xml_parse(body, len, NULL, &doc), 0);
    assert_int_equal(xml_child_count(xml_root(doc), "Object"), 1000);
    assert_string_equal(xml_child_text(xml_child(xml_root(doc), "Object"), "Key"), "key-0");
    xml_doc_free(doc);
    free(body);
    assert_null(s3_xml_build_delete(many, 1001, 1, &len));
    free(names);
    free(many);
}

static void test_build_complete(void **state)
{
    const int numbers[] = {1, 2, 5};
    const char *etags[] = {"\"a54357aff0632cce46d942af68356b38\"",
                           "\"0c78aef83f66abc1fa1e8477f296d394\"",
                           "\"acbd18db4cc2f85cedef654fccc4a4d8\""};
    size_t len;
    char *body = s3_xml_build_complete(numbers, etags, 3, &len);
    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    assert_non_null(strstr(body,
                           "<Part><PartNumber>1</PartNumber>"
                           "<ETag>&quot;a54357aff0632cce46d942af68356b38&quot;</ETag></Part>"));
    struct xml_doc *doc;
    assert_int_equal(xml_parse(body, len, NULL, &doc), 0);
    const struct xml_node *root = xml_root(doc);
    assert_string_equal(xml_name(root), "CompleteMultipartUpload");
    size_t i = 0;
    char num[16];
    for (const struct xml_node *p = xml_child(root, "Part"); p;
         p = xml_next_sibling(p, "Part"), i++) {
        snprintf(num, sizeof(num), "%d", numbers[i]);
        assert_string_equal(xml_child_text(p, "PartNumber"), num);
        assert_string_equal(xml_child_text(p, "ETag"), etags[i]);
    }
    assert_int_equal(i, 3);
    xml_doc_free(doc);
    free(body);

    const int unsorted[] = {2, 1, 3};
    assert_null(s3_xml_build_complete(unsorted, etags, 3, &len));
    const int dup[] = {1, 1, 2};
    assert_null(s3_xml_build_complete(dup, etags, 3, &len));
    const int zero[] = {0, 1, 2};
    assert_null(s3_xml_build_complete(zero, etags, 3, &len));
    const int high[] = {1, 2, 10001};
    assert_null(s3_xml_build_complete(high, etags, 3, &len));
    const char *bad_etags[] = {"\"a\"", "\"b\x02\"", "\"c\""};
    assert_null(s3_xml_build_complete(numbers, bad_etags, 3, &len));
    const char *null_etags[] = {"\"a\"", NULL, "\"c\""};
    assert_null(s3_xml_build_complete(numbers, null_etags, 3, &len));
    assert_null(s3_xml_build_complete(numbers, etags, 0, &len));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_error_s3),
            cmocka_unit_test(test_error_sts),
            cmocka_unit_test(test_error_refused),
            cmocka_unit_test(test_error_truncates_fields),
            cmocka_unit_test(test_list_aws),
            cmocka_unit_test(test_list_rgw_url_encoded),
            cmocka_unit_test(test_list_bad_escapes),
            cmocka_unit_test(test_list_empty),
            cmocka_unit_test(test_list_1000_keys),
            cmocka_unit_test(test_list_bad_fields),
            cmocka_unit_test(test_list_times),
            cmocka_unit_test(test_list_wrong_documents),
            cmocka_unit_test(test_list_too_large),
            cmocka_unit_test(test_initiate),
            cmocka_unit_test(test_etag_results),
            cmocka_unit_test(test_etag_result_200_error),
            cmocka_unit_test(test_complete_result),
            cmocka_unit_test(test_parts),
            cmocka_unit_test(test_parts_bad),
            cmocka_unit_test(test_delete_result),
            cmocka_unit_test(test_uploads),
            cmocka_unit_test(test_assume_role),
            cmocka_unit_test(test_assume_role_bad),
            cmocka_unit_test(test_build_delete),
            cmocka_unit_test(test_build_delete_refused),
            cmocka_unit_test(test_build_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
