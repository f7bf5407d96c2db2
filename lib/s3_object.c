/* s3_object: single-object operations and listings (PUT, GET, HEAD, DELETE,
 * DeleteObjects, ListObjectsV2, CopyObject). */
#include "s3_request.h"

#include "xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_MAX_KEYS 1000

/* Headers of a request that creates an object: content type and metadata.
 * The names live in names[], which the caller provides. */
struct put_headers {
    struct sigv4_header h[S3_MAX_META + 4];
    char names[S3_MAX_META][256];
    size_t n;
};

static int put_headers_build(struct put_headers *ph, const struct s3_put_opts *opts)
{
    ph->n = 0;
    if (!opts)
        return S3_OK;
    if (opts->n_meta > S3_MAX_META)
        return S3_ERR_INVALID_ARG;
    for (size_t i = 0; i < opts->n_meta; i++) {
        const char *name = opts->meta[i].name, *value = opts->meta[i].value;
        if (!name || !*name || !value)
            return S3_ERR_INVALID_ARG;
        /* A token character set keeps the header name well-formed. */
        for (const char *p = name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                return S3_ERR_INVALID_ARG;
        int len = snprintf(ph->names[i], sizeof(ph->names[i]), "x-amz-meta-%s", name);
        if (len < 0 || (size_t)len >= sizeof(ph->names[i]))
            return S3_ERR_INVALID_ARG;
        ph->h[ph->n].name = ph->names[i];
        ph->h[ph->n].value = value;
        ph->n++;
    }
    if (opts->if_none_match) {
        ph->h[ph->n].name = "If-None-Match";
        ph->h[ph->n].value = "*";
        ph->n++;
    }
    return S3_OK;
}

static const char *content_type_of(const struct s3_put_opts *opts)
{
    return opts && opts->content_type ? opts->content_type : "application/octet-stream";
}

int s3_put_object(struct s3_client *c, const char *key, const struct s3_source *body,
                  const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    struct put_headers ph;
    int rc = put_headers_build(&ph, opts);
    if (rc)
        return rc;
    static const struct s3_source empty = {.read = NULL, .arg = NULL, .length = 0};
    struct s3_head head;
    memset(&head, 0, sizeof(head));
    struct s3_req r = {
            .method = "PUT",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .headers = ph.h,
            .n_headers = ph.n,
            .body = body ? body : &empty,
            .content_type = content_type_of(opts),
            .head = &head,
    };
    rc = s3_request(c, &r);
    if (rc == S3_OK)
        s3_etag_copy(etag, head.etag);
    s3_head_release(&head);
    return rc;
}

int s3_get_object(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const struct s3_sink *sink, struct s3_head *head, uint64_t *got)
{
    return s3_get_object_if(c, key, NULL, offset, length, sink, head, got);
}

int s3_get_object_if(struct s3_client *c, const char *key, const char *if_match, uint64_t offset,
                     uint64_t length, const struct s3_sink *sink, struct s3_head *head,
                     uint64_t *got)
{
    char range[64];
    struct sigv4_header hdr[2];
    size_t n_hdr = 0;
    int has_range = offset > 0 || length > 0;
    if (length > 0)
        snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)offset,
                 (unsigned long long)(offset + length - 1));
    else
        snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)offset);
    if (has_range)
        hdr[n_hdr++] = (struct sigv4_header){"Range", range};
    if (if_match && *if_match)
        hdr[n_hdr++] = (struct sigv4_header){"If-Match", if_match};
    struct s3_head local;
    struct s3_head *h = head ? head : &local;
    memset(h, 0, sizeof(*h));
    struct s3_req r = {
            .method = "GET",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .headers = n_hdr ? hdr : NULL,
            .n_headers = n_hdr,
            .sink = sink,
            .has_range = has_range,
            .range_offset = offset,
            .range_length = length,
            .head = h,
    };
    int rc = s3_request(c, &r);
    if (got)
        *got = rc == S3_OK ? r.got : 0;
    if (!head || rc != S3_OK)
        s3_head_release(h);
    return rc;
}

int s3_head_object(struct s3_client *c, const char *key, struct s3_head *head)
{
    memset(head, 0, sizeof(*head));
    struct s3_req r = {
            .method = "HEAD",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .head = head,
            .no_body = 1,
    };
    int rc = s3_request(c, &r);
    if (rc != S3_OK)
        s3_head_release(head);
    return rc;
}

int s3_delete_object(struct s3_client *c, const char *key)
{
    struct s3_req r = {.method = "DELETE", .target = S3_TARGET_OBJECT, .key = key};
    int rc = s3_request(c, &r);
    return rc == S3_ERR_NOT_FOUND ? S3_OK : rc;
}

/* Whether key can be named in a DeleteObjects body: XML 1.0 cannot carry
 * control characters or invalid UTF-8 (see xml_escape). */
static int xml_can_carry(const char *key)
{
    struct buf b;
    buf_init(&b, 8 * S3_MAX_KEY_LEN);
    int rc = xml_escape(&b, key, strlen(key));
    buf_release(&b);
    return rc == 0;
}

/* One DeleteObjects request in quiet mode; *res receives its failures. */
static int delete_batch(struct s3_client *c, const char *const *keys, size_t n,
                        struct s3_delete_result *res)
{
    size_t len = 0;
    char *doc = s3_xml_build_delete(keys, n, 1, &len);
    if (!doc)
        return S3_ERR_NOMEM; /* the keys were checked: only memory can fail */
    static const struct sigv4_param q[] = {{"delete", ""}};
    struct buf resp;
    buf_init(&resp, 16u << 20);
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_BUCKET,
            .query = q,
            .n_query = 1,
            .doc = doc,
            .doc_len = len,
            .content_type = "application/xml",
            .content_md5 = 1,
            .response = &resp,
    };
    int rc = s3_request(c, &r);
    if (rc == S3_OK)
        rc = s3_xml_parse_delete(resp.data ? resp.data : "", resp.len, res);
    buf_release(&resp);
    free(doc);
    return rc;
}

/* A single DELETE for a key a DeleteObjects body cannot name. A refusal is
 * recorded in res->failures (which has room for it), as DeleteObjects would
 * report it; any other failure fails the call. */
static int delete_single(struct s3_client *c, const char *key, struct s3_delete_result *res)
{
    struct s3_req r = {.method = "DELETE", .target = S3_TARGET_OBJECT, .key = key};
    int rc = s3_request(c, &r);
    if (rc == S3_OK || rc == S3_ERR_NOT_FOUND)
        return S3_OK;
    if (rc != S3_ERR_ACCESS_DENIED && rc != S3_ERR_CONFLICT && rc != S3_ERR_INVALID)
        return rc;
    struct s3_delete_failure *f = &res->failures[res->n_failures];
    f->key = strdup(key);
    if (!f->key)
        return S3_ERR_NOMEM;
    snprintf(f->code, sizeof(f->code), "%s", r.error_code);
    res->n_failures++;
    return S3_OK;
}

int s3_delete_objects(struct s3_client *c, const char *const *keys, size_t n,
                      struct s3_delete_result *out)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (n == 0)
        return S3_OK;
    if (!keys || n > S3_MAX_DELETE)
        return S3_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++)
        if (!s3_key_valid(keys[i]))
            return S3_ERR_INVALID_ARG;
    struct s3_delete_result res;
    memset(&res, 0, sizeof(res));
    const char **batch = calloc(n, sizeof(*batch));
    const char **single = calloc(n, sizeof(*single));
    int rc = S3_ERR_NOMEM;
    if (!batch || !single)
        goto out;
    size_t nb = 0, ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (xml_can_carry(keys[i]))
            batch[nb++] = keys[i];
        else
            single[ns++] = keys[i];
    }
    rc = nb ? delete_batch(c, batch, nb, &res) : S3_OK;
    if (rc == S3_OK && ns) {
        struct s3_delete_failure *f = realloc(res.failures, (res.n_failures + ns) * sizeof(*f));
        if (!f) {
            rc = S3_ERR_NOMEM;
            goto out;
        }
        res.failures = f;
        for (size_t i = 0; i < ns && rc == S3_OK; i++)
            rc = delete_single(c, single[i], &res);
    }
    if (rc == S3_OK) {
        /* Quiet mode lists only failures; the rest were deleted. */
        res.n_deleted = n - res.n_failures;
        if (out) {
            *out = res;
            memset(&res, 0, sizeof(res));
        }
    }
out:
    s3_delete_result_release(&res);
    free(batch);
    free(single);
    return rc;
}

int s3_list_objects(struct s3_client *c, const char *prefix, const char *delimiter,
                    const char *token, const char *start_after, int max_keys,
                    struct s3_list_page *out)
{
    memset(out, 0, sizeof(*out));
    char mk[16];
    snprintf(mk, sizeof(mk), "%d",
             max_keys > 0 && max_keys < LIST_MAX_KEYS ? max_keys : LIST_MAX_KEYS);
    struct sigv4_param q[7];
    size_t n = 0;
    q[n++] = (struct sigv4_param){"list-type", "2"};
    q[n++] = (struct sigv4_param){"encoding-type", "url"};
    q[n++] = (struct sigv4_param){"max-keys", mk};
    if (prefix && *prefix)
        q[n++] = (struct sigv4_param){"prefix", prefix};
    if (delimiter && *delimiter)
        q[n++] = (struct sigv4_param){"delimiter", delimiter};
    if (token && *token)
        q[n++] = (struct sigv4_param){"continuation-token", token};
    if (start_after && *start_after)
        q[n++] = (struct sigv4_param){"start-after", start_after};
    struct buf resp;
    buf_init(&resp, 16u << 20);
    struct s3_req r = {
            .method = "GET",
            .target = S3_TARGET_BUCKET,
            .query = q,
            .n_query = n,
            .response = &resp,
    };
    int rc = s3_request(c, &r);
    if (rc == S3_OK)
        rc = s3_xml_parse_list(resp.data ? resp.data : "", resp.len, out);
    buf_release(&resp);
    return rc;
}

/* x-amz-copy-source: "/bucket/key", the key URL-encoded. */
static char *copy_source(struct s3_client *c, const char *src_key)
{
    const char *bucket = s3_client_bucket(c);
    char *ekey = sigv4_uri_encode(src_key, strlen(src_key), 1);
    char *eb = bucket ? sigv4_uri_encode(bucket, strlen(bucket), 0) : NULL;
    struct buf b;
    buf_init(&b, 8 * S3_MAX_KEY_LEN);
    char *out = NULL;
    if (ekey && eb && buf_addf(&b, "/%s/%s", eb, ekey) == 0)
        out = buf_detach(&b, NULL);
    buf_release(&b);
    free(ekey);
    free(eb);
    return out;
}

int s3_copy_object(struct s3_client *c, const char *src_key, const char *dst_key, int replace_meta,
                   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    if (!s3_key_valid(src_key))
        return S3_ERR_INVALID_ARG;
    struct put_headers ph;
    int rc = put_headers_build(&ph, replace_meta ? opts : NULL);
    if (rc)
        return rc;
    char *src = copy_source(c, src_key);
    if (!src)
        return S3_ERR_NOMEM;
    ph.h[ph.n++] = (struct sigv4_header){"x-amz-copy-source", src};
    ph.h[ph.n++] =
            (struct sigv4_header){"x-amz-metadata-directive", replace_meta ? "REPLACE" : "COPY"};
    struct buf resp;
    buf_init(&resp, 1u << 20);
    struct s3_req r = {
            .method = "PUT",
            .target = S3_TARGET_OBJECT,
            .key = dst_key,
            .headers = ph.h,
            .n_headers = ph.n,
            .doc = "", /* sends Content-Length: 0 */
            .content_type = replace_meta ? content_type_of(opts) : NULL,
            .response = &resp,
    };
    rc = s3_request(c, &r);
    if (rc == S3_OK) {
        char *e = NULL;
        rc = s3_xml_parse_etag_result(resp.data ? resp.data : "", resp.len, &e, NULL);
        if (rc == S3_OK)
            s3_etag_copy(etag, e);
        free(e);
    }
    buf_release(&resp);
    free(src);
    return rc;
}
