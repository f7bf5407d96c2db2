/* sts: AssumeRole with an inline session policy, over the S3 client's engine. */
#include "s3_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Append name=value to a form body, both percent-encoded ('+' and ' ' too:
 * RGW decodes '+' in a form as a literal plus). */
static int form_add(struct buf *b, const char *name, const char *value)
{
    char *ev = sigv4_uri_encode(value, strlen(value), 0);
    if (!ev)
        return -1;
    int rc = buf_addf(b, "%s%s=%s", b->len ? "&" : "", name, ev);
    free(ev);
    return rc;
}

int sts_assume_role(struct s3_client *c, const char *role_arn, const char *session_name,
                    const char *policy, int duration_s, struct sts_credentials *out)
{
    memset(out, 0, sizeof(*out));
    if (!role_arn || !*role_arn || !session_name || !*session_name || duration_s < 900 ||
        duration_s > 43200)
        return S3_ERR_INVALID_ARG;
    char duration[16];
    snprintf(duration, sizeof(duration), "%d", duration_s);
    struct buf form;
    buf_init(&form, 64 * 1024);
    int rc = S3_ERR_INVALID_ARG;
    if (form_add(&form, "Action", "AssumeRole") || form_add(&form, "DurationSeconds", duration) ||
        (policy && form_add(&form, "Policy", policy)) || form_add(&form, "RoleArn", role_arn) ||
        form_add(&form, "RoleSessionName", session_name) ||
        form_add(&form, "Version", "2011-06-15"))
        goto out;
    struct buf resp;
    buf_init(&resp, 1u << 20);
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_SERVICE,
            .service = "sts",
            .doc = form.data,
            .doc_len = form.len,
            .content_type = "application/x-www-form-urlencoded; charset=utf-8",
            .response = &resp,
    };
    rc = s3_request(c, &r);
    if (rc == S3_OK)
        rc = s3_xml_parse_assume_role(resp.data ? resp.data : "", resp.len, out);
    buf_release(&resp);
out:
    buf_release(&form);
    return rc;
}
