/* s3_multipart: multipart uploads (create, upload part, copy part, complete,
 * abort, list parts, list uploads). */
#include "s3_request.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PART_NUMBER 10000

static int upload_id_valid(const char *id)
{
    return id && *id && strlen(id) < 1024;
}

/* s3_request for a request naming an upload. A 404 there means the upload
 * is gone: S3 says NoSuchUpload, but RGW (16.2) says NoSuchKey for ListParts. */
static int upload_request(struct s3_client *c, struct s3_req *r)
{
    int rc = s3_request(c, r);
    return rc == S3_ERR_NOT_FOUND ? S3_ERR_NO_UPLOAD : rc;
}

int s3_multipart_create(struct s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char **upload_id)
{
    *upload_id = NULL;
    struct sigv4_header h[S3_MAX_META];
    char names[S3_MAX_META][256];
    size_t nh = 0;
    if (opts) {
        if (opts->n_meta > S3_MAX_META)
            return S3_ERR_INVALID_ARG;
        for (size_t i = 0; i < opts->n_meta; i++) {
            if (!opts->meta[i].name || !opts->meta[i].value)
                return S3_ERR_INVALID_ARG;
            int len = snprintf(names[i], sizeof(names[i]), "x-amz-meta-%s", opts->meta[i].name);
            if (len < 0 || (size_t)len >= sizeof(names[i]))
                return S3_ERR_INVALID_ARG;
            h[nh++] = (struct sigv4_header){names[i], opts->meta[i].value};
        }
    }
    static const struct sigv4_param q[] = {{"uploads", ""}};
    struct buf resp;
    buf_init(&resp, 1u << 20);
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = 1,
            .headers = h,
            .n_headers = nh,
            .doc = "",
            .content_type =
                    opts && opts->content_type ? opts->content_type : "application/octet-stream",
            .response = &resp,
    };
    int rc = s3_request(c, &r);
    if (rc == S3_OK)
        rc = s3_xml_parse_initiate(resp.data ? resp.data : "", resp.len, upload_id);
    buf_release(&resp);
    return rc;
}

int s3_multipart_upload_part(struct s3_client *c, const char *key, const char *upload_id,
                             int part_number, const struct s3_source *body, char etag[S3_ETAG_MAX])
{
    if (!upload_id_valid(upload_id) || part_number < 1 || part_number > MAX_PART_NUMBER || !body)
        return S3_ERR_INVALID_ARG;
    char num[16];
    snprintf(num, sizeof(num), "%d", part_number);
    struct sigv4_param q[] = {{"partNumber", num}, {"uploadId", upload_id}};
    struct s3_head head;
    memset(&head, 0, sizeof(head));
    struct s3_req r = {
            .method = "PUT",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = 2,
            .body = body,
            .head = &head,
    };
    int rc = upload_request(c, &r);
    if (rc == S3_OK) {
        if (!head.etag[0])
            rc = S3_ERR_BAD_RESPONSE;
        else
            s3_etag_copy(etag, head.etag);
    }
    s3_head_release(&head);
    return rc;
}

int s3_multipart_copy_part(struct s3_client *c, const char *key, const char *upload_id,
                           int part_number, const char *src_key, uint64_t first, uint64_t last,
                           char etag[S3_ETAG_MAX])
{
    if (!upload_id_valid(upload_id) || part_number < 1 || part_number > MAX_PART_NUMBER ||
        !s3_key_valid(src_key) || last < first)
        return S3_ERR_INVALID_ARG;
    const char *bucket = s3_client_bucket(c);
    char *ekey = sigv4_uri_encode(src_key, strlen(src_key), 1);
    char *eb = bucket ? sigv4_uri_encode(bucket, strlen(bucket), 0) : NULL;
    struct buf src;
    buf_init(&src, 8 * S3_MAX_KEY_LEN);
    int rc = S3_ERR_NOMEM;
    if (!ekey || !eb || buf_addf(&src, "/%s/%s", eb, ekey))
        goto out;
    char num[16], range[64];
    snprintf(num, sizeof(num), "%d", part_number);
    snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)first,
             (unsigned long long)last);
    struct sigv4_param q[] = {{"partNumber", num}, {"uploadId", upload_id}};
    struct sigv4_header h[] = {{"x-amz-copy-source", src.data}, {"x-amz-copy-source-range", range}};
    struct buf resp;
    buf_init(&resp, 1u << 20);
    struct s3_req r = {
            .method = "PUT",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = 2,
            .headers = h,
            .n_headers = 2,
            .doc = "",
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
out:
    buf_release(&src);
    free(ekey);
    free(eb);
    return rc;
}

/* The ETag of key from a HEAD, into etag, for an upload of n parts just
 * completed. A multipart object's ETag ends in "-n"; any other one belongs to
 * an object written since, and is S3_ERR_BAD_RESPONSE as is none at all. */
static int etag_from_head(struct s3_client *c, const char *key, size_t n, char etag[S3_ETAG_MAX])
{
    struct s3_head head;
    int rc = s3_head_object(c, key, &head);
    if (rc != S3_OK)
        return rc;
    char suffix[32];
    int sl = snprintf(suffix, sizeof(suffix), "-%zu\"", n);
    size_t el = strlen(head.etag);
    if (el > (size_t)sl && strcmp(head.etag + el - (size_t)sl, suffix) == 0) {
        s3_etag_copy(etag, head.etag);
    } else {
        s3_set_error_detail("complete: no etag in the answer, and '%s' has etag '%s'", key,
                            head.etag);
        rc = S3_ERR_BAD_RESPONSE;
    }
    s3_head_release(&head);
    return rc;
}

int s3_multipart_complete(struct s3_client *c, const char *key, const char *upload_id,
                          const int *numbers, const char *const *etags, size_t n,
                          char etag[S3_ETAG_MAX])
{
    if (!upload_id_valid(upload_id) || n == 0 || n > MAX_PART_NUMBER)
        return S3_ERR_INVALID_ARG;
    size_t len = 0;
    char *doc = s3_xml_build_complete(numbers, etags, n, &len);
    if (!doc)
        return S3_ERR_INVALID_ARG;
    struct sigv4_param q[] = {{"uploadId", upload_id}};
    struct buf resp;
    buf_init(&resp, 1u << 20);
    struct s3_req r = {
            .method = "POST",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = 1,
            .doc = doc,
            .doc_len = len,
            .content_type = "application/xml",
            .response = &resp,
    };
    int rc = upload_request(c, &r);
    if (rc == S3_OK) {
        char *e = NULL;
        struct s3_error_info info;
        rc = s3_xml_parse_complete(resp.data ? resp.data : "", resp.len, &e, &info);
        if (rc == S3_OK && e) {
            s3_etag_copy(etag, e);
        } else if (rc == S3_OK) {
            /* Completed, but RGW (16.2) can leave the result's ETag empty:
             * the object's own ETag is the one to report. */
            rc = etag_from_head(c, key, n, etag);
        } else if (info.code[0]) {
            s3_set_error_detail("complete: %s: %s", info.code, info.message);
        }
        free(e);
    } else if (rc == S3_ERR_NO_UPLOAD && r.attempts > 1) {
        /* An earlier attempt may have completed the upload before its answer
         * was lost: the object then exists and the upload is gone. */
        char saved[256];
        snprintf(saved, sizeof(saved), "%s", s3_last_error_detail());
        if (etag_from_head(c, key, n, etag) == S3_OK)
            rc = S3_OK;
        else
            s3_set_error_detail("%s", saved);
    }
    buf_release(&resp);
    free(doc);
    return rc;
}

int s3_multipart_abort(struct s3_client *c, const char *key, const char *upload_id)
{
    if (!upload_id_valid(upload_id))
        return S3_ERR_INVALID_ARG;
    struct sigv4_param q[] = {{"uploadId", upload_id}};
    struct s3_req r = {
            .method = "DELETE",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = 1,
    };
    return upload_request(c, &r);
}

int s3_multipart_list_parts(struct s3_client *c, const char *key, const char *upload_id, int marker,
                            struct s3_part_list *out)
{
    memset(out, 0, sizeof(*out));
    if (!upload_id_valid(upload_id) || marker < 0)
        return S3_ERR_INVALID_ARG;
    char m[16];
    snprintf(m, sizeof(m), "%d", marker);
    struct sigv4_param q[] = {{"uploadId", upload_id}, {"part-number-marker", m}};
    struct buf resp;
    buf_init(&resp, 16u << 20);
    struct s3_req r = {
            .method = "GET",
            .target = S3_TARGET_OBJECT,
            .key = key,
            .query = q,
            .n_query = marker ? 2 : 1,
            .response = &resp,
    };
    int rc = upload_request(c, &r);
    if (rc == S3_OK)
        rc = s3_xml_parse_parts(resp.data ? resp.data : "", resp.len, out);
    buf_release(&resp);
    return rc;
}

int s3_multipart_list_uploads(struct s3_client *c, const char *prefix, const char *key_marker,
                              const char *upload_id_marker, struct s3_upload_list *out)
{
    memset(out, 0, sizeof(*out));
    struct sigv4_param q[5];
    size_t n = 0;
    q[n++] = (struct sigv4_param){"uploads", ""};
    if (prefix && *prefix)
        q[n++] = (struct sigv4_param){"prefix", prefix};
    if (key_marker && *key_marker)
        q[n++] = (struct sigv4_param){"key-marker", key_marker};
    if (upload_id_marker && *upload_id_marker)
        q[n++] = (struct sigv4_param){"upload-id-marker", upload_id_marker};
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
        rc = s3_xml_parse_uploads(resp.data ? resp.data : "", resp.len, out);
    buf_release(&resp);
    return rc;
}

/* The 16 bytes of the MD5 an ETag holds ("..." around 32 hex digits).
 * Returns 0, or -1 when it holds none. */
static int etag_md5(const char *etag, unsigned char md5[16])
{
    size_t len = strlen(etag);
    if (len != 34 || etag[0] != '"' || etag[33] != '"')
        return -1;
    for (int i = 0; i < 16; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)etag[1 + 2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)etag[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        md5[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int s3_multipart_etag(const char *const *etags, size_t n, char out[S3_ETAG_MAX])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    for (size_t i = 0; i < n && ok; i++) {
        unsigned char md5[16];
        ok = etag_md5(etags[i], md5) == 0 && EVP_DigestUpdate(ctx, md5, sizeof(md5));
    }
    unsigned char sum[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, sum, &len) && len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    *p++ = '"';
    for (unsigned int i = 0; i < len; i++) {
        *p++ = hex[sum[i] >> 4];
        *p++ = hex[sum[i] & 15];
    }
    snprintf(p, S3_ETAG_MAX - (size_t)(p - out), "-%zu\"", n);
    return 0;
}
