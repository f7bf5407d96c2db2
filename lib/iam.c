/* iam: IAM role management (create, read, inline policies, delete) as
 * form-encoded POSTs signed for the service "iam", parsed with lib/xml. */
#include "iam.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_request.h"
#include "xml.h"

#define FORM_MAX  (64 * 1024)
#define RESP_MAX  (256 * 1024)
#define PATH_MAX_ (512)
#define ARN_MAX   (2048)
#define MAX_NAMES 1000

static const struct xml_limits resp_limits = {
        .max_input = RESP_MAX,
        .max_depth = 16,
        .max_elements = 4 * MAX_NAMES,
        .max_text = RESP_MAX,
};

void iam_role_release(struct iam_role *role)
{
    if (!role)
        return;
    free(role->name);
    free(role->path);
    free(role->arn);
    free(role->trust_policy);
    memset(role, 0, sizeof(*role));
}

int iam_role_name_valid(const char *name)
{
    if (!name || !*name || strlen(name) > IAM_ROLE_NAME_MAX)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("=,.@-", *p)))
            return 0;
    return 1;
}

/* Policy names: 1..128 of [\w+=,.@-]. */
static int policy_name_valid(const char *name)
{
    if (!name || !*name || strlen(name) > IAM_POLICY_NAME_MAX)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_+=,.@-", *p)))
            return 0;
    return 1;
}

/* Paths: "/" or "/TEXT/" with printable ASCII only. */
static int path_valid(const char *path)
{
    size_t n = strlen(path);
    if (n == 0 || n > PATH_MAX_ || path[0] != '/' || path[n - 1] != '/')
        return 0;
    for (const char *p = path; *p; p++)
        if (*p < '!' || *p > '~')
            return 0;
    return 1;
}

static int doc_valid(const char *doc)
{
    return doc && *doc && strlen(doc) <= IAM_DOC_MAX;
}

int iam_arn_role_name(const char *arn, char *name, size_t n)
{
    if (!arn || !name || n == 0)
        return S3_ERR_INVALID_ARG;
    name[0] = '\0';
    /* arn:PARTITION:iam::ACCOUNT:role/... : the sixth field starts with "role/". */
    const char *p = arn;
    if (strncmp(p, "arn:", 4) != 0)
        return S3_ERR_INVALID_ARG;
    for (int field = 0; field < 5; field++) {
        p = strchr(p, ':');
        if (!p)
            return S3_ERR_INVALID_ARG;
        p++;
        if (field == 1 && strncmp(p, "iam:", 4) != 0)
            return S3_ERR_INVALID_ARG;
    }
    if (strncmp(p, "role/", 5) != 0)
        return S3_ERR_INVALID_ARG;
    const char *last = strrchr(p, '/') + 1;
    size_t len = strlen(last);
    if (len == 0 || len >= n)
        return S3_ERR_INVALID_ARG;
    memcpy(name, last, len + 1);
    if (!iam_role_name_valid(name)) {
        name[0] = '\0';
        return S3_ERR_INVALID_ARG;
    }
    return S3_OK;
}

/* Append name=value to a form body, both percent-encoded ('+' and ' ' too). */
static int form_add(struct buf *b, const char *name, const char *value)
{
    char *ev = sigv4_uri_encode(value, strlen(value), 0);
    if (!ev)
        return -1;
    int rc = buf_addf(b, "%s%s=%s", b->len ? "&" : "", name, ev);
    free(ev);
    return rc;
}

/* POST the form; a 2xx answer's body goes to resp. */
static int iam_post(struct s3_client *c, const struct buf *form, struct buf *resp)
{
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_SERVICE,
            .service = "iam",
            .doc = form->data,
            .doc_len = form->len,
            .content_type = "application/x-www-form-urlencoded; charset=utf-8",
            .response = resp,
    };
    int rc = s3_request(c, &r);
    if (rc != S3_OK && r.error_code[0]) {
        /* IAM's codes the S3 table does not know. */
        if (!strcmp(r.error_code, "NoSuchEntity"))
            rc = S3_ERR_NOT_FOUND;
        else if (!strcmp(r.error_code, "EntityAlreadyExists") ||
                 !strcmp(r.error_code, "DeleteConflict"))
            rc = S3_ERR_CONFLICT;
        else if (!strcmp(r.error_code, "InvalidInput") ||
                 !strcmp(r.error_code, "MalformedPolicyDocument"))
            rc = S3_ERR_INVALID;
    }
    return rc;
}

/* Parse body under the response limits; root must be named response. */
static int parse_doc(const char *body, size_t len, const char *response, struct xml_doc **doc)
{
    int x = xml_parse(body, len, &resp_limits, doc);
    if (x)
        return x == -E2BIG ? S3_ERR_TOO_LARGE : x == -ENOMEM ? S3_ERR_NOMEM : S3_ERR_BAD_RESPONSE;
    if (strcmp(xml_name(xml_root(*doc)), response) != 0) {
        xml_doc_free(*doc);
        *doc = NULL;
        return S3_ERR_BAD_RESPONSE;
    }
    return S3_OK;
}

/* A copy of the child's text, or NULL with *bad set when it is missing and
 * required or when memory runs out. */
static char *dup_child(const struct xml_node *n, const char *name, int required, int *bad)
{
    const char *t = xml_child_text(n, name);
    if (!t || !*t) {
        if (required)
            *bad = S3_ERR_BAD_RESPONSE;
        return NULL;
    }
    char *s = strdup(t);
    if (!s)
        *bad = S3_ERR_NOMEM;
    return s;
}

int iam_parse_role(const char *xml, size_t len, const char *response, struct iam_role *out)
{
    memset(out, 0, sizeof(*out));
    if (!xml || !response)
        return S3_ERR_INVALID_ARG;
    struct xml_doc *doc = NULL;
    int rc = parse_doc(xml, len, response, &doc);
    if (rc)
        return rc;
    char result_name[64];
    size_t rn = strlen(response);
    /* "GetRoleResponse" → "GetRoleResult" */
    if (rn < 8 || rn - 8 + 6 >= sizeof(result_name)) {
        xml_doc_free(doc);
        return S3_ERR_INVALID_ARG;
    }
    snprintf(result_name, sizeof(result_name), "%.*sResult", (int)(rn - 8), response);
    const struct xml_node *result = xml_child(xml_root(doc), result_name);
    const struct xml_node *role = result ? xml_child(result, "Role") : NULL;
    if (!role) {
        xml_doc_free(doc);
        return S3_ERR_BAD_RESPONSE;
    }
    int bad = S3_OK;
    out->name = dup_child(role, "RoleName", 1, &bad);
    out->arn = dup_child(role, "Arn", 1, &bad);
    out->path = dup_child(role, "Path", 0, &bad);
    out->trust_policy = dup_child(role, "AssumeRolePolicyDocument", 0, &bad);
    const char *msd = xml_child_text(role, "MaxSessionDuration");
    if (msd && *msd) {
        char *end;
        errno = 0;
        long v = strtol(msd, &end, 10);
        if (errno || *end || v < 0 || v > INT_MAX)
            bad = bad ? bad : S3_ERR_BAD_RESPONSE;
        else
            out->max_session_s = (int)v;
    }
    if (!bad && (strlen(out->arn) > ARN_MAX || !iam_role_name_valid(out->name)))
        bad = S3_ERR_BAD_RESPONSE;
    xml_doc_free(doc);
    if (bad)
        iam_role_release(out);
    return bad;
}

/* Run a role action whose answer is a role (GetRole, CreateRole). */
static int role_call(struct s3_client *c, struct buf *form, const char *response,
                     struct iam_role *out)
{
    struct buf resp;
    buf_init(&resp, RESP_MAX);
    int rc = iam_post(c, form, &resp);
    if (rc == S3_OK)
        rc = iam_parse_role(resp.data ? resp.data : "", resp.len, response, out);
    buf_release(&resp);
    return rc;
}

int iam_role_get(struct s3_client *c, const char *name, struct iam_role *out)
{
    memset(out, 0, sizeof(*out));
    if (!c || !iam_role_name_valid(name))
        return S3_ERR_INVALID_ARG;
    struct buf form;
    buf_init(&form, FORM_MAX);
    int rc = S3_ERR_NOMEM;
    if (!form_add(&form, "Action", "GetRole") && !form_add(&form, "RoleName", name) &&
        !form_add(&form, "Version", "2010-05-08"))
        rc = role_call(c, &form, "GetRoleResponse", out);
    buf_release(&form);
    return rc;
}

int iam_role_create(struct s3_client *c, const char *name, const char *path, const char *trust,
                    int max_session_s, struct iam_role *out)
{
    memset(out, 0, sizeof(*out));
    if (!path)
        path = "/";
    if (!c || !iam_role_name_valid(name) || !path_valid(path) || !doc_valid(trust) ||
        (max_session_s != 0 && (max_session_s < 3600 || max_session_s > 43200)))
        return S3_ERR_INVALID_ARG;
    char msd[16];
    snprintf(msd, sizeof(msd), "%d", max_session_s);
    struct buf form;
    buf_init(&form, FORM_MAX);
    int rc = S3_ERR_NOMEM;
    if (form_add(&form, "Action", "CreateRole") ||
        form_add(&form, "AssumeRolePolicyDocument", trust) ||
        (max_session_s && form_add(&form, "MaxSessionDuration", msd)) ||
        form_add(&form, "Path", path) || form_add(&form, "RoleName", name) ||
        form_add(&form, "Version", "2010-05-08"))
        goto out;
    rc = role_call(c, &form, "CreateRoleResponse", out);
    if (rc == S3_ERR_CONFLICT) {
        /* Made meanwhile by another replica (or by an earlier attempt whose
         * answer was lost): read it back. */
        rc = iam_role_get(c, name, out);
        if (rc == S3_OK)
            out->existed = 1;
    }
out:
    buf_release(&form);
    return rc;
}

/* Run an action answered by an empty success document. */
static int simple_call(struct s3_client *c, struct buf *form)
{
    struct buf resp;
    buf_init(&resp, RESP_MAX);
    int rc = iam_post(c, form, &resp);
    buf_release(&resp);
    return rc;
}

int iam_role_policy_put(struct s3_client *c, const char *role, const char *policy_name,
                        const char *doc)
{
    if (!c || !iam_role_name_valid(role) || !policy_name_valid(policy_name) || !doc_valid(doc))
        return S3_ERR_INVALID_ARG;
    struct buf form;
    buf_init(&form, FORM_MAX);
    int rc = S3_ERR_NOMEM;
    if (!form_add(&form, "Action", "PutRolePolicy") && !form_add(&form, "PolicyDocument", doc) &&
        !form_add(&form, "PolicyName", policy_name) && !form_add(&form, "RoleName", role) &&
        !form_add(&form, "Version", "2010-05-08"))
        rc = simple_call(c, &form);
    buf_release(&form);
    return rc;
}

void iam_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int iam_role_policy_list(struct s3_client *c, const char *role, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    if (!c || !iam_role_name_valid(role))
        return S3_ERR_INVALID_ARG;
    struct buf form, resp;
    buf_init(&form, FORM_MAX);
    buf_init(&resp, RESP_MAX);
    struct xml_doc *doc = NULL;
    int rc = S3_ERR_NOMEM;
    if (form_add(&form, "Action", "ListRolePolicies") || form_add(&form, "RoleName", role) ||
        form_add(&form, "Version", "2010-05-08"))
        goto out;
    rc = iam_post(c, &form, &resp);
    if (rc)
        goto out;
    rc = parse_doc(resp.data ? resp.data : "", resp.len, "ListRolePoliciesResponse", &doc);
    if (rc)
        goto out;
    const struct xml_node *result = xml_child(xml_root(doc), "ListRolePoliciesResult");
    const struct xml_node *list = result ? xml_child(result, "PolicyNames") : NULL;
    rc = S3_ERR_BAD_RESPONSE;
    if (!result)
        goto out;
    if (xml_child_text(result, "IsTruncated") &&
        !strcmp(xml_child_text(result, "IsTruncated"), "true"))
        goto out; /* one page is plenty for our roles; more is not ours to judge */
    size_t count = list ? xml_child_count(list, "member") : 0;
    rc = S3_OK;
    if (count == 0)
        goto out;
    char **v = calloc(count, sizeof(*v));
    rc = S3_ERR_NOMEM;
    if (!v)
        goto out;
    size_t i = 0;
    for (const struct xml_node *m = xml_child(list, "member"); m && i < count;
         m = xml_next_sibling(m, "member")) {
        v[i] = strdup(xml_text(m));
        if (!v[i]) {
            iam_names_free(v, i);
            goto out;
        }
        i++;
    }
    *names = v;
    *n = i;
    rc = S3_OK;
out:
    xml_doc_free(doc);
    buf_release(&form);
    buf_release(&resp);
    return rc;
}

int iam_role_policy_delete(struct s3_client *c, const char *role, const char *policy_name)
{
    if (!c || !iam_role_name_valid(role) || !policy_name_valid(policy_name))
        return S3_ERR_INVALID_ARG;
    struct buf form;
    buf_init(&form, FORM_MAX);
    int rc = S3_ERR_NOMEM;
    if (!form_add(&form, "Action", "DeleteRolePolicy") &&
        !form_add(&form, "PolicyName", policy_name) && !form_add(&form, "RoleName", role) &&
        !form_add(&form, "Version", "2010-05-08"))
        rc = simple_call(c, &form);
    buf_release(&form);
    return rc == S3_ERR_NOT_FOUND ? S3_OK : rc;
}

int iam_role_delete(struct s3_client *c, const char *role)
{
    if (!c || !iam_role_name_valid(role))
        return S3_ERR_INVALID_ARG;
    struct buf form;
    buf_init(&form, FORM_MAX);
    int rc = S3_ERR_NOMEM;
    if (!form_add(&form, "Action", "DeleteRole") && !form_add(&form, "RoleName", role) &&
        !form_add(&form, "Version", "2010-05-08"))
        rc = simple_call(c, &form);
    buf_release(&form);
    return rc == S3_ERR_NOT_FOUND ? S3_OK : rc;
}
