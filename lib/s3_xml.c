/* s3_xml: S3 and STS XML response decoders and request body builders, on top
 * of the bounded DOM in xml.h. */
#include "s3_xml.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xml.h"

#define DELETE_MAX_KEYS   1000
#define COMPLETE_MAX_PART 10000
/* request bodies: 1000 keys of S3's 1024-byte maximum, each byte escaped to
 * at most 6, fit well within this */
#define BODY_MAX (16u << 20)

static int status_from_xml_error(int rc)
{
    switch (rc) {
    case -E2BIG:
        return S3_ERR_TOO_LARGE;
    case -ENOMEM:
        return S3_ERR_NOMEM;
    default:
        return S3_ERR_BAD_RESPONSE;
    }
}

/* Copy src into dst[size], cutting at a UTF-8 character boundary. */
static void copy_field(char *dst, size_t size, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Fill info from an <Error> element; outer is its <ErrorResponse> or NULL. */
static void fill_error(const struct xml_node *error, const struct xml_node *outer,
                       struct s3_error_info *info)
{
    const char *request_id = xml_child_text(error, "RequestId");
    if (!request_id && outer)
        request_id = xml_child_text(outer, "RequestId");
    copy_field(info->code, sizeof(info->code), xml_child_text(error, "Code"));
    copy_field(info->message, sizeof(info->message), xml_child_text(error, "Message"));
    copy_field(info->request_id, sizeof(info->request_id), request_id);
}

/* The <Error> element of an S3 or STS error document, or NULL. */
static const struct xml_node *error_element(const struct xml_node *root,
                                            const struct xml_node **outer)
{
    *outer = NULL;
    if (strcmp(xml_name(root), "Error") == 0)
        return root;
    if (strcmp(xml_name(root), "ErrorResponse") == 0) {
        *outer = root;
        return xml_child(root, "Error");
    }
    return NULL;
}

/* The status for an error document found where a result was expected. Such
 * answers come with a 2xx (e.g. CompleteMultipartUpload's InternalError), so
 * an unknown code counts as a service failure. */
static int error_status(const struct s3_error_info *info)
{
    if (!info->code[0])
        return S3_ERR_BAD_RESPONSE;
    return s3_status_from_http(500, info->code);
}

/* Check that doc's root element is one of roots (NULL-ended): S3_OK with
 * *root set. An error document gives its mapped status, with its details in
 * err when err is not NULL. */
static int check_root(const struct xml_doc *doc, const char *const *roots,
                      const struct xml_node **root, struct s3_error_info *err)
{
    *root = xml_root(doc);
    for (size_t i = 0; roots[i]; i++)
        if (strcmp(xml_name(*root), roots[i]) == 0)
            return S3_OK;

    const struct xml_node *outer;
    const struct xml_node *error = error_element(*root, &outer);
    int status = S3_ERR_BAD_RESPONSE;
    if (error) {
        struct s3_error_info info;
        fill_error(error, outer, &info);
        status = error_status(&info);
        if (err)
            *err = info;
    }
    return status;
}

/* Parse body and check its root (check_root). On S3_OK *doc is the document
 * and *root its root; otherwise *doc is NULL. */
static int open_result(const char *body, size_t len, const char *const *roots, struct xml_doc **doc,
                       const struct xml_node **root, struct s3_error_info *err)
{
    int rc = xml_parse(body, len, NULL, doc);
    if (rc)
        return status_from_xml_error(rc);
    rc = check_root(*doc, roots, root, err);
    if (rc) {
        xml_doc_free(*doc);
        *doc = NULL;
    }
    return rc;
}

/* Strict unsigned decimal: digits only, no sign, no space, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return S3_ERR_BAD_RESPONSE;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return S3_ERR_BAD_RESPONSE;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return S3_ERR_BAD_RESPONSE;
        v = v * 10 + d;
    }
    *out = v;
    return S3_OK;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    uint64_t v;
    if (parse_u64(s, &v) || v < (uint64_t)min || v > (uint64_t)max)
        return S3_ERR_BAD_RESPONSE;
    *out = (int)v;
    return S3_OK;
}

/* An optional xsd:boolean child: absent is false. */
static int parse_bool(const struct xml_node *node, const char *name, int *out)
{
    const char *s = xml_child_text(node, name);
    if (!s || strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *out = 0;
    else if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *out = 1;
    else
        return S3_ERR_BAD_RESPONSE;
    return S3_OK;
}

/* n decimal digits at s. */
static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ISO 8601 as S3 and STS send it: YYYY-MM-DDTHH:MM:SS, optional fraction,
 * then Z or +HH:MM / -HH:MM. Computed by hand: timegm is not standard and
 * mktime depends on the local zone. */
static int parse_time(const char *s, time_t *out)
{
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec;
    if (!s || strlen(s) < 19 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
        s[7] != '-' || digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] + (mo == 2 && is_leap(y)) ||
        h > 23 || mi > 59 || sec > 60)
        return -1;
    s += 19;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    long offset = 0;
    if ((*s == 'Z' || *s == 'z') && s[1] == '\0') {
        offset = 0;
    } else if ((*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':') {
        int oh, om;
        if (digits(s + 1, 2, &oh) || digits(s + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset = (oh * 60L + om) * 60L * (*s == '-' ? -1 : 1);
    } else {
        return -1;
    }

    /* days from 1970-01-01 to the start of year y, then into it */
    long long py = y - 1;
    long long days = 365LL * (y - 1970) + (py / 4 - py / 100 + py / 400) -
                     (1969 / 4 - 1969 / 100 + 1969 / 400);
    for (int m = 1; m < mo; m++)
        days += month_days[m - 1] + (m == 2 && is_leap(y));
    days += d - 1;
    long long t = days * 86400LL + h * 3600LL + mi * 60LL + sec - offset;
    if ((long long)(time_t)t != t)
        return -1;
    *out = (time_t)t;
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode S3's encoding-type=url in place: %XX escapes, and '+' for a space
 * (AWS writes spaces as '+' and a literal '+' as %2B; RGW escapes both). A
 * malformed escape or a NUL byte is a bad response. */
static int url_decode(char *s)
{
    char *d = s;
    for (; *s; s++) {
        if (*s == '+') {
            *d++ = ' ';
        } else if (*s == '%') {
            int hi = hex_value(s[1]);
            int lo = hi < 0 ? -1 : hex_value(s[2]);
            if (lo < 0 || (hi == 0 && lo == 0))
                return S3_ERR_BAD_RESPONSE;
            *d++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *d++ = *s;
        }
    }
    *d = '\0';
    return S3_OK;
}

/* Whether the document says its keys are url-encoded; an encoding we do
 * not know is a bad response, as its keys would be misread. */
static int key_encoding(const struct xml_node *root, int *url)
{
    const char *enc = xml_child_text(root, "EncodingType");
    *url = enc && strcmp(enc, "url") == 0;
    return (!enc || *url) ? S3_OK : S3_ERR_BAD_RESPONSE;
}

/* A malloc'd copy of text (decoded when url), or NULL in *out when text is
 * NULL or, with optional set, empty. A missing or empty required value is a
 * bad response. */
static int take_text(const char *text, int url, int optional, char **out)
{
    *out = NULL;
    if (!text || !*text)
        return optional ? S3_OK : S3_ERR_BAD_RESPONSE;
    char *s = strdup(text);
    if (!s)
        return S3_ERR_NOMEM;
    int rc = url ? url_decode(s) : S3_OK;
    if (rc)
        free(s);
    else
        *out = s;
    return rc;
}

/* An ETag element's text, quoted as in an ETag header: RGW quotes it in
 * listings but not in a CopyObjectResult, and a mount compares ETags from
 * both with the ones of HEAD and GET. */
static int take_etag(const char *text, int optional, char **out)
{
    int rc = take_text(text, 0, optional, out);
    if (rc || !*out || **out == '"')
        return rc;
    size_t n = strlen(*out);
    char *q = malloc(n + 3);
    if (!q) {
        free(*out);
        *out = NULL;
        return S3_ERR_NOMEM;
    }
    q[0] = '"';
    memcpy(q + 1, *out, n);
    q[n + 1] = '"';
    q[n + 2] = '\0';
    free(*out);
    *out = q;
    return S3_OK;
}

/* calloc for n elements that returns non-NULL for n == 0 too. */
static void *alloc_array(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

int s3_xml_parse_error(const char *body, size_t len, struct s3_error_info *out)
{
    struct xml_doc *doc;
    int rc = xml_parse(body, len, NULL, &doc);
    if (rc)
        return status_from_xml_error(rc);
    const struct xml_node *outer;
    const struct xml_node *error = error_element(xml_root(doc), &outer);
    if (error)
        fill_error(error, outer, out);
    xml_doc_free(doc);
    return error ? S3_OK : S3_ERR_BAD_RESPONSE;
}

void s3_list_page_release(struct s3_list_page *page)
{
    for (size_t i = 0; i < page->n_objects; i++) {
        free(page->objects[i].key);
        free(page->objects[i].etag);
    }
    free(page->objects);
    for (size_t i = 0; i < page->n_prefixes; i++)
        free(page->prefixes[i]);
    free(page->prefixes);
    free(page->next_token);
    memset(page, 0, sizeof(*page));
}

/* A list page as its parse hands over its items (list_item), whose keys are
 * url-decoded once the page's EncodingType is known: it may come after them. */
struct list_decode {
    struct s3_list_page page;
    size_t cap_objects, cap_prefixes;
    int status; /* why list_item stopped the parse */
};

/* Room for one more of *v (n used of *cap, each size bytes). */
static int grow(void **v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return S3_OK;
    size_t nc = *cap ? *cap * 2 : 256;
    void *e = *cap < SIZE_MAX / 2 / size ? realloc(*v, nc * size) : NULL;
    if (!e)
        return S3_ERR_NOMEM;
    *v = e;
    *cap = nc;
    return S3_OK;
}

static int decode_object(const struct xml_node *c, struct s3_object_info *obj)
{
    int rc = take_text(xml_child_text(c, "Key"), 0, 0, &obj->key);
    if (!rc)
        rc = parse_u64(xml_child_text(c, "Size"), &obj->size);
    if (!rc)
        rc = take_etag(xml_child_text(c, "ETag"), 1, &obj->etag);
    if (!rc && parse_time(xml_child_text(c, "LastModified"), &obj->last_modified))
        obj->last_modified = 0;
    return rc;
}

static int decode_prefixes(const struct xml_node *c, struct list_decode *ld)
{
    struct s3_list_page *page = &ld->page;
    const struct xml_node *p = xml_child(c, "Prefix");
    if (!p)
        return S3_ERR_BAD_RESPONSE;
    for (; p; p = xml_next_sibling(p, "Prefix")) {
        int rc = grow((void **)&page->prefixes, page->n_prefixes, &ld->cap_prefixes,
                      sizeof(*page->prefixes));
        if (!rc)
            rc = take_text(xml_text(p), 0, 0, &page->prefixes[page->n_prefixes]);
        if (rc)
            return rc;
        page->n_prefixes++;
    }
    return S3_OK;
}

/* xml_each_fn: a <Contents> or <CommonPrefixes> of a list into the page,
 * and out of the tree; the page's other elements, and any other document
 * (an error), stay for check_root and decode_list. */
static int list_item(void *arg, const struct xml_node *root, const struct xml_node *c)
{
    struct list_decode *ld = arg;
    struct s3_list_page *page = &ld->page;
    if (strcmp(xml_name(root), "ListBucketResult") != 0)
        return 0;
    int rc;
    if (strcmp(xml_name(c), "Contents") == 0) {
        rc = grow((void **)&page->objects, page->n_objects, &ld->cap_objects,
                  sizeof(*page->objects));
        if (!rc) {
            /* counted before filling, so release frees what was set */
            struct s3_object_info *obj = &page->objects[page->n_objects++];
            memset(obj, 0, sizeof(*obj));
            rc = decode_object(c, obj);
        }
    } else if (strcmp(xml_name(c), "CommonPrefixes") == 0) {
        rc = decode_prefixes(c, ld);
    } else {
        return 0;
    }
    if (rc) {
        ld->status = rc;
        return -ECANCELED;
    }
    return 1;
}

/* The rest of a page whose items list_item took. */
static int decode_list(const struct xml_node *root, struct s3_list_page *page)
{
    int url;
    int rc = key_encoding(root, &url);
    for (size_t i = 0; url && !rc && i < page->n_objects; i++)
        rc = url_decode(page->objects[i].key);
    for (size_t i = 0; url && !rc && i < page->n_prefixes; i++)
        rc = url_decode(page->prefixes[i]);
    if (!rc)
        rc = parse_bool(root, "IsTruncated", &page->is_truncated);
    if (!rc)
        rc = take_text(xml_child_text(root, "NextContinuationToken"), 0, 1, &page->next_token);
    if (rc)
        return rc;
    /* a truncated page without a token cannot be continued: following it
     * would list the first page again, forever */
    if (page->is_truncated && !page->next_token)
        return S3_ERR_BAD_RESPONSE;
    page->key_count = -1;
    const char *key_count = xml_child_text(root, "KeyCount");
    if (key_count)
        rc = parse_int(key_count, 0, INT_MAX, &page->key_count);
    return rc;
}

int s3_xml_parse_list(const char *body, size_t len, struct s3_list_page *out)
{
    static const char *const roots[] = {"ListBucketResult", NULL};
    struct list_decode ld = {0};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = xml_parse_each(body, len, NULL, list_item, &ld, &doc);
    if (rc)
        rc = ld.status ? ld.status : status_from_xml_error(rc);
    if (!rc)
        rc = check_root(doc, roots, &root, NULL);
    if (!rc)
        rc = decode_list(root, &ld.page);
    xml_doc_free(doc);
    if (rc) {
        s3_list_page_release(&ld.page);
        return rc;
    }
    *out = ld.page;
    return S3_OK;
}

int s3_xml_parse_initiate(const char *body, size_t len, char **upload_id)
{
    static const char *const roots[] = {"InitiateMultipartUploadResult", NULL};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, NULL);
    if (rc)
        return rc;
    char *id;
    rc = take_text(xml_child_text(root, "UploadId"), 0, 0, &id);
    xml_doc_free(doc);
    if (!rc)
        *upload_id = id;
    return rc;
}

int s3_xml_parse_etag_result(const char *body, size_t len, char **etag, struct s3_error_info *err)
{
    static const char *const roots[] = {"CopyObjectResult", "CopyPartResult",
                                        "CompleteMultipartUploadResult", NULL};
    if (err)
        memset(err, 0, sizeof(*err));
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, err);
    if (rc)
        return rc;
    char *value;
    rc = take_etag(xml_child_text(root, "ETag"), 0, &value);
    xml_doc_free(doc);
    if (!rc)
        *etag = value;
    return rc;
}

int s3_xml_parse_complete(const char *body, size_t len, char **etag, struct s3_error_info *err)
{
    static const char *const roots[] = {"CompleteMultipartUploadResult", NULL};
    *etag = NULL;
    if (err)
        memset(err, 0, sizeof(*err));
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, err);
    if (rc)
        return rc;
    rc = take_etag(xml_child_text(root, "ETag"), 1, etag);
    xml_doc_free(doc);
    return rc;
}

void s3_part_list_release(struct s3_part_list *list)
{
    for (size_t i = 0; i < list->n_parts; i++)
        free(list->parts[i].etag);
    free(list->parts);
    memset(list, 0, sizeof(*list));
}

static int decode_parts(const struct xml_node *root, struct s3_part_list *list)
{
    size_t n = xml_child_count(root, "Part");
    list->parts = alloc_array(n, sizeof(*list->parts));
    if (!list->parts)
        return S3_ERR_NOMEM;
    for (const struct xml_node *p = xml_child(root, "Part"); p; p = xml_next_sibling(p, "Part")) {
        struct s3_part_info *part = &list->parts[list->n_parts++];
        int rc = parse_int(xml_child_text(p, "PartNumber"), 1, COMPLETE_MAX_PART, &part->number);
        if (!rc)
            rc = parse_u64(xml_child_text(p, "Size"), &part->size);
        if (!rc)
            rc = take_etag(xml_child_text(p, "ETag"), 0, &part->etag);
        if (rc)
            return rc;
    }
    int rc = parse_bool(root, "IsTruncated", &list->is_truncated);
    if (rc)
        return rc;
    const char *marker = xml_child_text(root, "NextPartNumberMarker");
    if (marker && *marker) {
        rc = parse_int(marker, 0, COMPLETE_MAX_PART, &list->next_marker);
        if (rc)
            return rc;
    }
    /* as for listings: a truncated page must say where to go on */
    if (list->is_truncated && list->next_marker == 0)
        return S3_ERR_BAD_RESPONSE;
    return S3_OK;
}

int s3_xml_parse_parts(const char *body, size_t len, struct s3_part_list *out)
{
    static const char *const roots[] = {"ListPartsResult", NULL};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, NULL);
    if (rc)
        return rc;
    struct s3_part_list list = {0};
    rc = decode_parts(root, &list);
    xml_doc_free(doc);
    if (rc) {
        s3_part_list_release(&list);
        return rc;
    }
    *out = list;
    return S3_OK;
}

void s3_delete_result_release(struct s3_delete_result *res)
{
    for (size_t i = 0; i < res->n_failures; i++)
        free(res->failures[i].key);
    free(res->failures);
    memset(res, 0, sizeof(*res));
}

static int decode_delete(const struct xml_node *root, struct s3_delete_result *res)
{
    int url;
    int rc = key_encoding(root, &url);
    if (rc)
        return rc;
    res->n_deleted = xml_child_count(root, "Deleted");
    size_t n = xml_child_count(root, "Error");
    res->failures = alloc_array(n, sizeof(*res->failures));
    if (!res->failures)
        return S3_ERR_NOMEM;
    for (const struct xml_node *e = xml_child(root, "Error"); e; e = xml_next_sibling(e, "Error")) {
        struct s3_delete_failure *f = &res->failures[res->n_failures++];
        rc = take_text(xml_child_text(e, "Key"), url, 0, &f->key);
        if (rc)
            return rc;
        copy_field(f->code, sizeof(f->code), xml_child_text(e, "Code"));
    }
    return S3_OK;
}

int s3_xml_parse_delete(const char *body, size_t len, struct s3_delete_result *out)
{
    static const char *const roots[] = {"DeleteResult", NULL};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, NULL);
    if (rc)
        return rc;
    struct s3_delete_result res = {0};
    rc = decode_delete(root, &res);
    xml_doc_free(doc);
    if (rc) {
        s3_delete_result_release(&res);
        return rc;
    }
    *out = res;
    return S3_OK;
}

void s3_upload_list_release(struct s3_upload_list *list)
{
    for (size_t i = 0; i < list->n_uploads; i++) {
        free(list->uploads[i].key);
        free(list->uploads[i].upload_id);
    }
    free(list->uploads);
    free(list->next_key_marker);
    free(list->next_upload_id_marker);
    memset(list, 0, sizeof(*list));
}

static int decode_uploads(const struct xml_node *root, struct s3_upload_list *list)
{
    int url;
    int rc = key_encoding(root, &url);
    if (rc)
        return rc;
    size_t n = xml_child_count(root, "Upload");
    list->uploads = alloc_array(n, sizeof(*list->uploads));
    if (!list->uploads)
        return S3_ERR_NOMEM;
    for (const struct xml_node *u = xml_child(root, "Upload"); u;
         u = xml_next_sibling(u, "Upload")) {
        struct s3_upload_info *up = &list->uploads[list->n_uploads++];
        rc = take_text(xml_child_text(u, "Key"), url, 0, &up->key);
        if (!rc)
            rc = take_text(xml_child_text(u, "UploadId"), 0, 0, &up->upload_id);
        if (rc)
            return rc;
        if (parse_time(xml_child_text(u, "Initiated"), &up->initiated))
            up->initiated = 0;
    }
    rc = parse_bool(root, "IsTruncated", &list->is_truncated);
    if (!rc)
        rc = take_text(xml_child_text(root, "NextKeyMarker"), url, 1, &list->next_key_marker);
    if (!rc)
        rc = take_text(xml_child_text(root, "NextUploadIdMarker"), 0, 1,
                       &list->next_upload_id_marker);
    if (!rc && list->is_truncated && !list->next_key_marker)
        rc = S3_ERR_BAD_RESPONSE;
    return rc;
}

int s3_xml_parse_uploads(const char *body, size_t len, struct s3_upload_list *out)
{
    static const char *const roots[] = {"ListMultipartUploadsResult", NULL};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, NULL);
    if (rc)
        return rc;
    struct s3_upload_list list = {0};
    rc = decode_uploads(root, &list);
    xml_doc_free(doc);
    if (rc) {
        s3_upload_list_release(&list);
        return rc;
    }
    *out = list;
    return S3_OK;
}

void sts_credentials_release(struct sts_credentials *c)
{
    free(c->access_key);
    if (c->secret_key) {
        /* do not leave the secret in freed memory */
        explicit_bzero(c->secret_key, strlen(c->secret_key));
        free(c->secret_key);
    }
    if (c->session_token) {
        explicit_bzero(c->session_token, strlen(c->session_token));
        free(c->session_token);
    }
    memset(c, 0, sizeof(*c));
}

static int decode_credentials(const struct xml_node *root, struct sts_credentials *c)
{
    const struct xml_node *result = xml_child(root, "AssumeRoleResult");
    const struct xml_node *cred = result ? xml_child(result, "Credentials") : NULL;
    if (!cred)
        return S3_ERR_BAD_RESPONSE;
    int rc = take_text(xml_child_text(cred, "AccessKeyId"), 0, 0, &c->access_key);
    if (!rc)
        rc = take_text(xml_child_text(cred, "SecretAccessKey"), 0, 0, &c->secret_key);
    if (!rc)
        rc = take_text(xml_child_text(cred, "SessionToken"), 0, 0, &c->session_token);
    if (!rc && parse_time(xml_child_text(cred, "Expiration"), &c->expiration))
        rc = S3_ERR_BAD_RESPONSE;
    return rc;
}

int s3_xml_parse_assume_role(const char *body, size_t len, struct sts_credentials *out)
{
    static const char *const roots[] = {"AssumeRoleResponse", NULL};
    struct xml_doc *doc;
    const struct xml_node *root;
    int rc = open_result(body, len, roots, &doc, &root, NULL);
    if (rc)
        return rc;
    struct sts_credentials c = {0};
    rc = decode_credentials(root, &c);
    xml_doc_free(doc);
    if (rc) {
        sts_credentials_release(&c);
        return rc;
    }
    *out = c;
    return S3_OK;
}

/* Append an element whose text is s, escaped. */
static int add_element(struct buf *b, const char *name, const char *s)
{
    int rc = buf_addf(b, "<%s>", name);
    if (!rc)
        rc = xml_escape(b, s, strlen(s));
    if (!rc)
        rc = buf_addf(b, "</%s>", name);
    return rc;
}

static char *finish(struct buf *b, int rc, size_t *len)
{
    if (rc) {
        buf_release(b);
        return NULL;
    }
    return buf_detach(b, len);
}

char *s3_xml_build_delete(const char *const *keys, size_t n, int quiet, size_t *len)
{
    if (!keys || n == 0 || n > DELETE_MAX_KEYS)
        return NULL;
    struct buf b;
    buf_init(&b, BODY_MAX);
    int rc = buf_adds(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                          "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    if (!rc && quiet)
        rc = buf_adds(&b, "<Quiet>true</Quiet>");
    for (size_t i = 0; i < n && !rc; i++) {
        if (!keys[i] || !*keys[i]) {
            rc = -EINVAL;
            break;
        }
        rc = buf_adds(&b, "<Object>");
        if (!rc)
            rc = add_element(&b, "Key", keys[i]);
        if (!rc)
            rc = buf_adds(&b, "</Object>");
    }
    if (!rc)
        rc = buf_adds(&b, "</Delete>\n");
    return finish(&b, rc, len);
}

char *s3_xml_build_complete(const int *numbers, const char *const *etags, size_t n, size_t *len)
{
    if (!numbers || !etags || n == 0 || n > COMPLETE_MAX_PART)
        return NULL;
    struct buf b;
    buf_init(&b, BODY_MAX);
    int rc = buf_adds(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                          "<CompleteMultipartUpload "
                          "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < n && !rc; i++) {
        /* S3 wants part numbers strictly ascending, in 1..10000 */
        if (numbers[i] < 1 || numbers[i] > COMPLETE_MAX_PART ||
            (i > 0 && numbers[i] <= numbers[i - 1]) || !etags[i] || !*etags[i]) {
            rc = -EINVAL;
            break;
        }
        rc = buf_addf(&b, "<Part><PartNumber>%d</PartNumber>", numbers[i]);
        if (!rc)
            rc = add_element(&b, "ETag", etags[i]);
        if (!rc)
            rc = buf_adds(&b, "</Part>");
    }
    if (!rc)
        rc = buf_adds(&b, "</CompleteMultipartUpload>\n");
    return finish(&b, rc, len);
}
