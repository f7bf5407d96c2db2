/* s3_request: the request engine behind s3.h, shared by the files that
 * implement the operations (s3_object.c, s3_multipart.c, sts.c). Not for
 * users of the library. */
#ifndef POCKITY_S3_REQUEST_H
#define POCKITY_S3_REQUEST_H

#include "buf.h"
#include "s3.h"
#include "sigv4.h"

enum s3_target {
    S3_TARGET_OBJECT,  /* /bucket/key */
    S3_TARGET_BUCKET,  /* /bucket */
    S3_TARGET_SERVICE, /* / (STS and other service-level calls) */
};

/* One logical request; s3_request retries it as configured. */
struct s3_req {
    const char *method;
    enum s3_target target;
    const char *key;                 /* S3_TARGET_OBJECT only */
    const struct sigv4_param *query; /* raw query parameters */
    size_t n_query;
    const struct sigv4_header *headers; /* extra headers, all signed */
    size_t n_headers;
    const char *service; /* NULL: "s3" */

    /* At most one body: a data source, or a small document in memory. */
    const struct s3_source *body;
    const char *doc;
    size_t doc_len;
    const char *content_type;
    int content_md5; /* send Content-MD5 of doc (DeleteObjects needs it) */

    /* Where the answer goes. */
    const struct s3_sink *sink; /* data of a 2xx answer (GET) */
    uint64_t range_offset;      /* the range requested, for a server ignoring it */
    uint64_t range_length;      /* 0: to the end */
    int has_range;
    struct buf *response; /* body of a 2xx answer without sink (XML) */
    struct s3_head *head; /* headers of the answer, when not NULL */
    int no_body;          /* HEAD */

    /* Filled by s3_request. */
    long http_status;
    char error_code[64]; /* S3 error code of the last error answer, or "" */
    int attempts;
    uint64_t got; /* bytes written to sink by the last attempt */
};

/* Send r, retrying as configured. Returns an s3_status. On an error answer the
 * thread's s3_last_error_detail() describes it. */
int s3_request(struct s3_client *c, struct s3_req *r);

/* Helpers shared by the operation files. */
const char *s3_client_bucket(const struct s3_client *c);
int s3_key_valid(const char *key);
/* Copy at most S3_ETAG_MAX-1 bytes of src into etag. */
void s3_etag_copy(char etag[S3_ETAG_MAX], const char *src);
/* Record a detail message for s3_last_error_detail(). */
void s3_set_error_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
