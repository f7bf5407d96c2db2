/* Unit tests for policy: the STS session policy, parsed back and checked
 * structurally for each access, with prefixes that need JSON escaping. */
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

#include "policy.h"

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
