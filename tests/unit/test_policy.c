/* Unit tests for policy: the STS session policy, parsed back and checked
 * structurally for each access, with prefixes that need JSON escaping; and the
 * pure parts of the per-pocket roles built on it (role names, IAM answers). */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "iam.h"
#include "policy.h"
#include "roles.h"

/* Assert that array holds exactly the n strings of want, in order. */
static void assert_strings(json_t *array, const char *const *want, size_t n)
{
    assert_true(json_is_array(array));
    assert_int_equal(json_array_size(array), n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(array, i);
        assert_true(json_is_string(v));
        assert_string_equal(json_string_value(v), want[i]);
    }
}

/* Assert that the object has exactly n members. */
static void assert_members(json_t *obj, size_t n)
{
    assert_true(json_is_object(obj));
    assert_int_equal(json_object_size(obj), n);
}

/* Assert that the JSON text has no whitespace at all: none between tokens,
 * and none raw inside strings (control characters must be escaped; a space
 * may only come from the data itself, which these tests put in on purpose). */
static void assert_no_whitespace(const char *text)
{
    bool in_string = false;
    for (const char *p = text; *p; p++) {
        assert_false(*p == '\n' || *p == '\t' || *p == '\r');
        if (in_string) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_string = false;
        } else {
            assert_false(*p == ' ');
            if (*p == '"')
                in_string = true;
        }
    }
    assert_false(in_string);
}

/* Build the policy, check it has no whitespace, parse it back and check its
 * whole structure; dir is the prefix as it must appear (with its '/'). */
static void check_policy(const char *bucket, const char *prefix, enum policy_access access,
                         const char *dir, const char *const *actions, size_t n_actions)
{
    char *text = NULL;
    assert_int_equal(policy_session(bucket, prefix, access, &text), 0);
    assert_non_null(text);
    assert_no_whitespace(text);

    json_error_t err;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(doc);
    assert_members(doc, 2);
    assert_string_equal(json_string_value(json_object_get(doc, "Version")), "2012-10-17");
    json_t *st = json_object_get(doc, "Statement");
    assert_true(json_is_array(st));
    assert_int_equal(json_array_size(st), 2);

    char bucket_arn[512], objects_arn[1024], dir_any[512];
    snprintf(bucket_arn, sizeof(bucket_arn), "arn:aws:s3:::%s", bucket);
    snprintf(dir_any, sizeof(dir_any), "%s*", dir);
    snprintf(objects_arn, sizeof(objects_arn), "arn:aws:s3:::%s/%s*", bucket, dir);

    json_t *list = json_array_get(st, 0);
    assert_members(list, 4);
    assert_string_equal(json_string_value(json_object_get(list, "Effect")), "Allow");
    const char *list_actions[] = {"s3:ListBucket"};
    assert_strings(json_object_get(list, "Action"), list_actions, 1);
    assert_string_equal(json_string_value(json_object_get(list, "Resource")), bucket_arn);
    json_t *cond = json_object_get(list, "Condition");
    assert_members(cond, 1);
    json_t *like = json_object_get(cond, "StringLike");
    assert_members(like, 1);
    const char *prefixes[] = {dir, dir_any};
    assert_strings(json_object_get(like, "s3:prefix"), prefixes, 2);

    json_t *obj = json_array_get(st, 1);
    assert_members(obj, 3);
    assert_string_equal(json_string_value(json_object_get(obj, "Effect")), "Allow");
    assert_strings(json_object_get(obj, "Action"), actions, n_actions);
    assert_string_equal(json_string_value(json_object_get(obj, "Resource")), objects_arn);

    json_decref(doc);
    free(text);
}

static const char *const rw_actions[] = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                         "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"};
static const char *const ro_actions[] = {"s3:GetObject"};
static const char *const rd_actions[] = {"s3:GetObject", "s3:DeleteObject"};

static void test_rw(void **state)
{
    (void)state;
    check_policy("pockity", "pockets/pkt_abc/", POLICY_RW, "pockets/pkt_abc/", rw_actions, 5);
}

static void test_ro(void **state)
{
    (void)state;
    check_policy("pockity", "pockets/pkt_abc/", POLICY_RO, "pockets/pkt_abc/", ro_actions, 1);
}

static void test_read_delete(void **state)
{
    (void)state;
    check_policy("pockity", "pockets/pkt_abc/", POLICY_READ_DELETE, "pockets/pkt_abc/", rd_actions,
                 2);
}

static void test_exact_text(void **state)
{
    (void)state;
    char *text = NULL;
    assert_int_equal(policy_session("b", "r/p/", POLICY_RO, &text), 0);
    assert_string_equal(text,
                        "{\"Version\":\"2012-10-17\",\"Statement\":["
                        "{\"Effect\":\"Allow\",\"Action\":[\"s3:ListBucket\"],"
                        "\"Resource\":\"arn:aws:s3:::b\","
                        "\"Condition\":{\"StringLike\":{\"s3:prefix\":[\"r/p/\",\"r/p/*\"]}}},"
                        "{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\"],"
                        "\"Resource\":\"arn:aws:s3:::b/r/p/*\"}]}");
    free(text);
}

static void test_trailing_slash_added(void **state)
{
    (void)state;
    check_policy("bkt", "root/pkt_x", POLICY_RW, "root/pkt_x/", rw_actions, 5);
    check_policy("bkt", "x", POLICY_RO, "x/", ro_actions, 1);
}

static void test_escaping(void **state)
{
    (void)state;
    /* Quotes, backslashes, control characters, a space and non-ASCII text all
     * survive the round trip and never break the document's structure. */
    check_policy("bkt", "we\"ird\\root/p\x01\t q/", POLICY_RW, "we\"ird\\root/p\x01\t q/",
                 rw_actions, 5);
    check_policy("bkt", "r\xc3\xa9sum\xc3\xa9/\xe6\x97\xa5/", POLICY_RO,
                 "r\xc3\xa9sum\xc3\xa9/\xe6\x97\xa5/", ro_actions, 1);
    check_policy("bkt", "}]},{\"Effect\":\"Allow\"/", POLICY_READ_DELETE,
                 "}]},{\"Effect\":\"Allow\"/", rd_actions, 2);

    /* Escaped as JSON, not left raw: the space sits inside a string only. */
    char *text = NULL;
    assert_int_equal(policy_session("bkt", "a\"b\nc", POLICY_RO, &text), 0);
    assert_non_null(strstr(text, "a\\\"b\\nc/"));
    assert_null(strchr(text, '\n'));
    free(text);
}

static void test_refused(void **state)
{
    (void)state;
    char *text = (char *)1;
    assert_int_equal(policy_session("bkt", "", POLICY_RW, &text), -EINVAL);
    assert_null(text);
    assert_int_equal(policy_session("", "p/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session(NULL, "p/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("bkt", NULL, POLICY_RW, &text), -EINVAL);
    /* Wildcards and policy variables would reach other pockets. */
    assert_int_equal(policy_session("bkt", "root/*/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("bkt", "root/p?/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("bkt", "root/${aws:username}/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("b*", "root/p/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("b/c", "root/p/", POLICY_RW, &text), -EINVAL);
    /* Invalid UTF-8 cannot be carried. */
    assert_int_equal(policy_session("bkt", "root/\xff/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("bkt", "root/\xc3/", POLICY_RW, &text), -EINVAL);
    assert_int_equal(policy_session("bkt", "root/p/", (enum policy_access)42, &text), -EINVAL);
    assert_null(text);
}

static void test_access_names(void **state)
{
    (void)state;
    assert_string_equal(policy_access_name(POLICY_RW), "rw");
    assert_string_equal(policy_access_name(POLICY_RO), "ro");
    assert_string_equal(policy_access_name(POLICY_READ_DELETE), "read-delete");
}

static void test_access_codes(void **state)
{
    (void)state;
    assert_string_equal(policy_access_code(POLICY_RW), "rw");
    assert_string_equal(policy_access_code(POLICY_RO), "ro");
    assert_string_equal(policy_access_code(POLICY_READ_DELETE), "rd");
    assert_null(policy_access_code((enum policy_access)42));
}

static void test_role_names(void **state)
{
    (void)state;
    char name[IAM_ROLE_NAME_MAX + 1];
    assert_int_equal(roles_name("pkt_abc234", POLICY_RW, name, sizeof(name)), 0);
    assert_string_equal(name, "pky-pkt.abc234-rw");
    assert_true(iam_role_name_valid(name));
    assert_int_equal(roles_name("pkt_abc234", POLICY_RO, name, sizeof(name)), 0);
    assert_string_equal(name, "pky-pkt.abc234-ro");
    assert_int_equal(roles_name("pkt_abc234", POLICY_READ_DELETE, name, sizeof(name)), 0);
    assert_string_equal(name, "pky-pkt.abc234-rd");

    /* The longest id that fits: 64 characters in all. */
    char id[64];
    memset(id, 'a', 56);
    id[56] = '\0';
    assert_int_equal(roles_name(id, POLICY_RW, name, sizeof(name)), 0);
    assert_int_equal(strlen(name), 63);
    assert_true(iam_role_name_valid(name));
    id[56] = 'a';
    id[57] = '\0';
    assert_int_equal(roles_name(id, POLICY_RW, name, sizeof(name)), -EINVAL);

    /* Anything that could make two ids share a name, or that IAM refuses. */
    const char *bad[] = {"",        "pkt.abc", "PKT_abc",      "pkt-abc",  "pkt abc",
                         "pkt/abc", "pkt+abc", "pkt_\xc3\xa9", "pkt_abc\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(roles_name(bad[i], POLICY_RW, name, sizeof(name)), -EINVAL);
    assert_int_equal(roles_name(NULL, POLICY_RW, name, sizeof(name)), -EINVAL);
    assert_int_equal(roles_name("pkt_a", (enum policy_access)7, name, sizeof(name)), -EINVAL);
    assert_int_equal(roles_name("pkt_abc", POLICY_RW, name, 14), -EINVAL);
    assert_int_equal(roles_name("pkt_abc", POLICY_RW, name, 15), 0);
}

static void test_iam_names(void **state)
{
    (void)state;
    assert_true(iam_role_name_valid("pockity"));
    assert_true(iam_role_name_valid("a=b,c.d@e-f"));
    assert_false(iam_role_name_valid(""));
    assert_false(iam_role_name_valid(NULL));
    assert_false(iam_role_name_valid("under_score")); /* RGW 16.2 refuses '_' */
    assert_false(iam_role_name_valid("plus+"));
    assert_false(iam_role_name_valid("sla/sh"));
    char long_name[70];
    memset(long_name, 'r', 65);
    long_name[65] = '\0';
    assert_false(iam_role_name_valid(long_name));
    long_name[64] = '\0';
    assert_true(iam_role_name_valid(long_name));

    char name[IAM_ROLE_NAME_MAX + 1];
    assert_int_equal(iam_arn_role_name("arn:aws:iam:::role/pockity", name, sizeof(name)), S3_OK);
    assert_string_equal(name, "pockity");
    assert_int_equal(
            iam_arn_role_name("arn:aws:iam::123456789012:role/a/b/c-d", name, sizeof(name)), S3_OK);
    assert_string_equal(name, "c-d");
    const char *bad[] = {"",
                         "pockity",
                         "arn:aws:s3:::bucket",
                         "arn:aws:iam:::user/pockity",
                         "arn:aws:iam:::role/",
                         "arn:aws:iam:::role/a/",
                         "arn:aws:iam:::role/bad_name",
                         "arn:aws:sts:::role/x",
                         "arn:aws:iam::role/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(iam_arn_role_name(bad[i], name, sizeof(name)), S3_ERR_INVALID_ARG);
        assert_string_equal(name, "");
    }
    assert_int_equal(iam_arn_role_name(NULL, name, sizeof(name)), S3_ERR_INVALID_ARG);
    assert_int_equal(iam_arn_role_name("arn:aws:iam:::role/pockity", name, 7), S3_ERR_INVALID_ARG);
}

/* A GetRole answer as RGW 16.2 sends it (the trust policy XML-escaped). */
static const char get_role_xml[] =
        "<GetRoleResponse><ResponseMetadata><RequestId>tx1</RequestId></ResponseMetadata>"
        "<GetRoleResult><Role><RoleId>8039ff19</RoleId><RoleName>pockity</RoleName>"
        "<Path>/</Path><Arn>arn:aws:iam:::role/pockity</Arn>"
        "<CreateDate>2026-11-26T02:18:57.632Z</CreateDate>"
        "<MaxSessionDuration>3600</MaxSessionDuration><AssumeRolePolicyDocument>"
        "{&quot;Version&quot;:&quot;2012-10-17&quot;,&quot;Statement&quot;:[{&quot;Effect&quot;:"
        "&quot;Allow&quot;,&quot;Principal&quot;:{&quot;AWS&quot;:[&quot;arn:aws:iam:::user/"
        "pockity-root&quot;]},&quot;Action&quot;:[&quot;sts:AssumeRole&quot;]}]}"
        "</AssumeRolePolicyDocument></Role></GetRoleResult></GetRoleResponse>";

static void test_iam_parse_role(void **state)
{
    (void)state;
    struct iam_role r;
    assert_int_equal(iam_parse_role(get_role_xml, strlen(get_role_xml), "GetRoleResponse", &r),
                     S3_OK);
    assert_string_equal(r.name, "pockity");
    assert_string_equal(r.path, "/");
    assert_string_equal(r.arn, "arn:aws:iam:::role/pockity");
    assert_int_equal(r.max_session_s, 3600);
    assert_string_equal(r.trust_policy,
                        "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\","
                        "\"Principal\":{\"AWS\":[\"arn:aws:iam:::user/pockity-root\"]},"
                        "\"Action\":[\"sts:AssumeRole\"]}]}");
    assert_int_equal(r.existed, 0);
    iam_role_release(&r);
    assert_null(r.name);
    iam_role_release(&r); /* twice is fine */

    const char create[] = "<CreateRoleResponse><CreateRoleResult><Role><RoleName>pky-a-rw"
                          "</RoleName><Path>/pockity/</Path><Arn>arn:aws:iam:::role/pockity/"
                          "pky-a-rw</Arn></Role></CreateRoleResult></CreateRoleResponse>";
    assert_int_equal(iam_parse_role(create, strlen(create), "CreateRoleResponse", &r), S3_OK);
    assert_string_equal(r.arn, "arn:aws:iam:::role/pockity/pky-a-rw");
    assert_null(r.trust_policy);
    assert_int_equal(r.max_session_s, 0);
    iam_role_release(&r);

    /* The wrong answer, a missing ARN or name, a bad name or duration, garbage. */
    assert_int_equal(iam_parse_role(create, strlen(create), "GetRoleResponse", &r),
                     S3_ERR_BAD_RESPONSE);
    assert_null(r.name);
    const char *bad[] = {
            "<GetRoleResponse><GetRoleResult><Role><RoleName>x</RoleName></Role>"
            "</GetRoleResult></GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult><Role><Arn>arn:aws:iam:::role/x</Arn></Role>"
            "</GetRoleResult></GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult><Role><RoleName>a_b</RoleName><Arn>a</Arn></Role>"
            "</GetRoleResult></GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult><Role><RoleName>x</RoleName><Arn>a</Arn>"
            "<MaxSessionDuration>-1</MaxSessionDuration></Role></GetRoleResult>"
            "</GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult><Role><RoleName>x</RoleName><Arn>a</Arn>"
            "<MaxSessionDuration>12ab</MaxSessionDuration></Role></GetRoleResult>"
            "</GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult></GetRoleResult></GetRoleResponse>",
            "<GetRoleResponse><GetRoleResult><Role><RoleName>x</RoleName><Arn>a</Arn>",
            "not xml",
            "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(iam_parse_role(bad[i], strlen(bad[i]), "GetRoleResponse", &r),
                         S3_ERR_BAD_RESPONSE);
        assert_null(r.name);
        assert_null(r.arn);
    }
    /* A DOCTYPE is refused before anything is expanded. */
    const char dtd[] = "<!DOCTYPE a [<!ENTITY x \"y\">]><GetRoleResponse/>";
    assert_int_equal(iam_parse_role(dtd, strlen(dtd), "GetRoleResponse", &r), S3_ERR_BAD_RESPONSE);
}

static void test_iam_refuses_bad_arguments(void **state)
{
    (void)state;
    /* Checked before any request: a NULL client is never reached. */
    struct iam_role r;
    assert_int_equal(iam_role_get(NULL, "x", &r), S3_ERR_INVALID_ARG);
    assert_int_equal(iam_role_create(NULL, "x", "/", "{}", 0, &r), S3_ERR_INVALID_ARG);
    assert_int_equal(iam_role_policy_put(NULL, "x", "p", "{}"), S3_ERR_INVALID_ARG);
    assert_int_equal(iam_role_policy_delete(NULL, "x", "p"), S3_ERR_INVALID_ARG);
    assert_int_equal(iam_role_delete(NULL, "x"), S3_ERR_INVALID_ARG);
    char **names = (char **)1;
    size_t n = 5;
    assert_int_equal(iam_role_policy_list(NULL, "x", &names, &n), S3_ERR_INVALID_ARG);
    assert_null(names);
    assert_int_equal(n, 0);
    iam_names_free(NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_rw),
            cmocka_unit_test(test_ro),
            cmocka_unit_test(test_read_delete),
            cmocka_unit_test(test_exact_text),
            cmocka_unit_test(test_trailing_slash_added),
            cmocka_unit_test(test_escaping),
            cmocka_unit_test(test_refused),
            cmocka_unit_test(test_access_names),
            cmocka_unit_test(test_access_codes),
            cmocka_unit_test(test_role_names),
            cmocka_unit_test(test_iam_names),
            cmocka_unit_test(test_iam_parse_role),
            cmocka_unit_test(test_iam_refuses_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
