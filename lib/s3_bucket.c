/* s3_bucket: topics (RGW's SNS-compatible API) and bucket notification
 * configuration, over the S3 client's request engine. */
#include "s3_bucket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_request.h"
#include "xml.h"

#define TOPIC_NAME_MAX  256
#define NOTIF_ID_MAX    64
#define TOPIC_ATTRS_MAX 16
#define FORM_MAX        (64 * 1024)
#define TOPIC_RESP_MAX  (64 * 1024)
#define NOTIF_DOC_MAX   (16 * 1024)

static int name_ok(const char *s, size_t max)
{
    if (!s || !*s || strlen(s) > max)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* Append name=value to a form body, both percent-encoded. */
static int form_add(struct buf *b, const char *name, const char *value)
{
    char *en = sigv4_uri_encode(name, strlen(name), 0);
    char *ev = sigv4_uri_encode(value, strlen(value), 0);
    int rc = -1;
    if (en && ev)
        rc = buf_addf(b, "%s%s=%s", b->len ? "&" : "", en, ev);
    free(en);
    free(ev);
    return rc;
}

/* POST a topic action form; the answer's body goes to resp. */
static int topic_post(struct s3_client *c, struct buf *form, struct buf *resp)
{
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_SERVICE,
            .service = "sns",
            .doc = form->data,
            .doc_len = form->len,
            .content_type = "application/x-www-form-urlencoded; charset=utf-8",
            .response = resp,
    };
    return s3_request(c, &r);
}

/* TopicArn of a CreateTopicResponse. */
static int parse_topic_arn(const char *body, size_t len, char **arn)
{
    struct xml_doc *doc = NULL;
    int x = xml_parse(body, len, NULL, &doc);
    if (x)
        return x == -E2BIG ? S3_ERR_TOO_LARGE : x == -ENOMEM ? S3_ERR_NOMEM : S3_ERR_BAD_RESPONSE;
    int rc = S3_ERR_BAD_RESPONSE;
    const struct xml_node *root = xml_root(doc);
    const struct xml_node *result = xml_child(root, "CreateTopicResult");
    const char *text = result ? xml_child_text(result, "TopicArn") : NULL;
    if (!strcmp(xml_name(root), "CreateTopicResponse") && text && *text) {
        *arn = strdup(text);
        rc = *arn ? S3_OK : S3_ERR_NOMEM;
    }
    xml_doc_free(doc);
    return rc;
}

int s3_topic_create(struct s3_client *c, const char *name, const struct s3_topic_attr *attrs,
                    size_t n, char **arn)
{
    *arn = NULL;
    if (!name_ok(name, TOPIC_NAME_MAX) || n > TOPIC_ATTRS_MAX || (n && !attrs))
        return S3_ERR_INVALID_ARG;
    struct buf form, resp;
    buf_init(&form, FORM_MAX);
    buf_init(&resp, TOPIC_RESP_MAX);
    int rc = S3_ERR_INVALID_ARG;
    if (form_add(&form, "Action", "CreateTopic") || form_add(&form, "Name", name))
        goto out;
    for (size_t i = 0; i < n; i++) {
        char k[64], v[64];
        if (!attrs[i].key || !*attrs[i].key || !attrs[i].value)
            goto out;
        snprintf(k, sizeof(k), "Attributes.entry.%zu.key", i + 1);
        snprintf(v, sizeof(v), "Attributes.entry.%zu.value", i + 1);
        if (form_add(&form, k, attrs[i].key) || form_add(&form, v, attrs[i].value))
            goto out;
    }
    rc = topic_post(c, &form, &resp);
    if (rc == S3_OK)
        rc = parse_topic_arn(resp.data ? resp.data : "", resp.len, arn);
out:
    buf_release(&form);
    buf_release(&resp);
    return rc;
}

int s3_topic_delete(struct s3_client *c, const char *arn)
{
    if (!arn || !*arn || strlen(arn) > 1024)
        return S3_ERR_INVALID_ARG;
    struct buf form, resp;
    buf_init(&form, FORM_MAX);
    buf_init(&resp, TOPIC_RESP_MAX);
    int rc = S3_ERR_INVALID_ARG;
    if (form_add(&form, "Action", "DeleteTopic") == 0 && form_add(&form, "TopicArn", arn) == 0)
        rc = topic_post(c, &form, &resp);
    if (rc == S3_ERR_NOT_FOUND)
        rc = S3_OK;
    buf_release(&form);
    buf_release(&resp);
    return rc;
}

static int add_elem(struct buf *b, const char *name, const char *text)
{
    if (buf_addf(b, "<%s>", name))
        return -1;
    if (xml_escape(b, text, strlen(text)))
        return -1;
    return buf_addf(b, "</%s>", name);
}

char *s3_bucket_notification_xml(const struct s3_notification *n, size_t *len)
{
    if (!n || !name_ok(n->id, NOTIF_ID_MAX) || !n->topic_arn || !*n->topic_arn ||
        n->n_events == 0 || !n->events)
        return NULL;
    struct buf b;
    buf_init(&b, NOTIF_DOC_MAX);
    int bad = buf_adds(&b, "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                           "2006-03-01/\"><TopicConfiguration>") ||
              add_elem(&b, "Id", n->id) || add_elem(&b, "Topic", n->topic_arn);
    for (size_t i = 0; !bad && i < n->n_events; i++)
        bad = !n->events[i] || !*n->events[i] || add_elem(&b, "Event", n->events[i]);
    if (!bad && n->prefix && *n->prefix)
        bad = buf_adds(&b, "<Filter><S3Key><FilterRule><Name>prefix</Name>") ||
              add_elem(&b, "Value", n->prefix) || buf_adds(&b, "</FilterRule></S3Key></Filter>");
    if (!bad)
        bad = buf_adds(&b, "</TopicConfiguration></NotificationConfiguration>");
    if (bad) {
        buf_release(&b);
        return NULL;
    }
    return buf_detach(&b, len);
}

int s3_bucket_put_notification(struct s3_client *c, const struct s3_notification *n)
{
    size_t len = 0;
    char *doc = s3_bucket_notification_xml(n, &len);
    if (!doc)
        return S3_ERR_INVALID_ARG;
    static const struct sigv4_param q[] = {{"notification", ""}};
    struct buf resp;
    buf_init(&resp, TOPIC_RESP_MAX);
    struct s3_req r = {
            .method = "PUT",
            .target = S3_TARGET_BUCKET,
            .query = q,
            .n_query = 1,
            .doc = doc,
            .doc_len = len,
            .content_type = "application/xml",
            .response = &resp,
    };
    int rc = s3_request(c, &r);
    buf_release(&resp);
    free(doc);
    return rc;
}

int s3_bucket_delete_notification(struct s3_client *c, const char *id)
{
    if (!name_ok(id, NOTIF_ID_MAX))
        return S3_ERR_INVALID_ARG;
    const struct sigv4_param q[] = {{"notification", id}};
    struct s3_req r = {.method = "DELETE", .target = S3_TARGET_BUCKET, .query = q, .n_query = 1};
    int rc = s3_request(c, &r);
    return rc == S3_ERR_NOT_FOUND ? S3_OK : rc;
}
