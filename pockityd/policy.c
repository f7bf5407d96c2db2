/* policy: builds the STS session policy that confines a mount's credentials to
 * its pocket's prefix, with jansson so every string is escaped correctly. */
#include "policy.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

const char *policy_access_name(enum policy_access access)
{
    switch (access) {
    case POLICY_RW:
        return "rw";
    case POLICY_RO:
        return "ro";
    case POLICY_READ_DELETE:
        return "read-delete";
    }
    return "ro";
}

const char *policy_access_code(enum policy_access access)
{
    switch (access) {
    case POLICY_RW:
        return "rw";
    case POLICY_RO:
        return "ro";
    case POLICY_READ_DELETE:
        return "rd";
    }
    return NULL;
}

/* Whether s could widen the grant if placed in an ARN or a StringLike pattern. */
static bool has_wildcard(const char *s)
{
    return strchr(s, '*') || strchr(s, '?') || strstr(s, "${");
}

/* The object actions each access allows. */
static json_t *object_actions(enum policy_access access)
{
    switch (access) {
    case POLICY_RW:
        return json_pack("[sssss]", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                         "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts");
    case POLICY_RO:
        return json_pack("[s]", "s3:GetObject");
    case POLICY_READ_DELETE:
        return json_pack("[ss]", "s3:GetObject", "s3:DeleteObject");
    }
    return NULL;
}

/* malloc'd concatenation of a, b and c. */
static char *concat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

int policy_session(const char *bucket, const char *prefix, enum policy_access access, char **out)
{
    *out = NULL;
    if (!bucket || !prefix || !*bucket || !*prefix || strchr(bucket, '/') || has_wildcard(bucket) ||
        has_wildcard(prefix) ||
        (access != POLICY_RW && access != POLICY_RO && access != POLICY_READ_DELETE))
        return -EINVAL;

    size_t plen = strlen(prefix);
    char *dir = concat3(prefix, prefix[plen - 1] == '/' ? "" : "/", "");
    char *dir_any = dir ? concat3(dir, "*", "") : NULL;
    char *bucket_arn = concat3("arn:aws:s3:::", bucket, "");
    char *objects_arn = dir_any ? concat3(bucket_arn ? bucket_arn : "", "/", dir_any) : NULL;
    json_t *doc = NULL;
    int rc = -ENOMEM;
    if (!dir || !dir_any || !bucket_arn || !objects_arn)
        goto out;

    /* json_pack fails on a string that is not valid UTF-8: the only reason it
     * can fail besides memory, so report it as a bad argument. */
    json_t *actions = object_actions(access);
    if (!actions)
        goto out;
    doc = json_pack("{s:s,s:[{s:s,s:[s],s:s,s:{s:{s:[ss]}}},{s:s,s:O,s:s}]}", "Version",
                    "2012-10-17", "Statement", "Effect", "Allow", "Action", "s3:ListBucket",
                    "Resource", bucket_arn, "Condition", "StringLike", "s3:prefix", dir, dir_any,
                    "Effect", "Allow", "Action", actions, "Resource", objects_arn);
    json_decref(actions);
    if (!doc) {
        rc = -EINVAL;
        goto out;
    }
    *out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = *out ? 0 : -ENOMEM;
out:
    json_decref(doc);
    free(dir);
    free(dir_any);
    free(bucket_arn);
    free(objects_arn);
    return rc;
}
