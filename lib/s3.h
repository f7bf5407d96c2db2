/* s3: a thread-safe S3 and STS client on libcurl with our own SigV4 signer.
 *
 * One struct s3_client is shared by every thread of a program: connections
 * are pooled and kept alive across requests and threads, credentials can be
 * swapped at any time (s3_client_set_credentials), and every request has
 * bounded time. Failed requests are retried with exponential backoff and full
 * jitter when s3_status_retryable() says so (transport failures, timeouts,
 * throttling, 5xx), never on a 4xx. Every function returns an enum s3_status
 * (0 is success, see s3_status.h). Response bodies are read into buffers with
 * a hard cap; data bodies stream through the caller's source and sink. */
#ifndef POCKITY_S3_H
#define POCKITY_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "s3_status.h"
#include "s3_xml.h"

#define S3_ETAG_MAX    128 /* room for an ETag with its quotes */
#define S3_MAX_KEY_LEN 1024
#define S3_MAX_OBJECT  (5ull << 40) /* S3's largest object: 5 TiB */
#define S3_MAX_META    64           /* user metadata entries kept from a response */
#define S3_MAX_DELETE  1000

struct s3_client;

/* Called when a request fails with S3_ERR_EXPIRED_TOKEN, or with
 * S3_ERR_ACCESS_DENIED under session credentials (RGW answers expired ones
 * so; status says which): the callee should obtain fresh credentials and
 * install them with s3_client_set_credentials, returning 0; the request is
 * then retried once. For a denial it should do so only when the credentials
 * may have expired, and otherwise return non-zero (the denial stands).
 * Called from the failing request's thread; it may run concurrently in
 * several threads. */
typedef int (*s3_refresh_fn)(void *arg, struct s3_client *client, int status);

struct s3_config {
    const char *endpoint;   /* "http://127.0.0.1:7480"; path-style addressing */
    const char *region;     /* SigV4 region, e.g. "us-east-1" */
    const char *bucket;     /* may be NULL for a client used only for STS */
    const char *access_key; /* initial credentials */
    const char *secret_key;
    const char *session_token; /* NULL without STS */
    int sign_payload;          /* 1: sign data bodies with their SHA-256 (two passes);
                                  0: UNSIGNED-PAYLOAD for data (XML bodies are always signed) */
    long connect_timeout_ms;   /* 0: 5000 */
    long request_timeout_ms;   /* total cap of a request without a data body; 0: 60000 */
    long stall_timeout_s;      /* a transfer moving no bytes this long fails; 0: 30 */
    long silence_ms;           /* a request whose tries have together waited this long with
                                  no byte moving fails with S3_ERR_TIMEOUT instead of being
                                  retried (each try's stall and connect timeouts shortened to
                                  what is left); then the server counts as silent until it
                                  answers (s3_client_silent). A transfer that moves, however
                                  slowly, is not cut. 0: none */
    int max_retries;           /* retries after the first attempt; 0: 5; -1: none */
    long backoff_base_ms;      /* first backoff ceiling, doubling each retry; 0: 100 */
    long backoff_max_ms;       /* ceiling of one backoff; 0: 5000 */
    size_t max_response_bytes; /* cap of a non-data response body; 0: 16 MiB */
    s3_refresh_fn refresh;     /* optional, see above */
    void *refresh_arg;
    const char *ca_file; /* optional CA bundle for https endpoints */
};

/* Create a client. Copies everything it keeps from cfg. */
int s3_client_new(const struct s3_config *cfg, struct s3_client **out);

/* Free a client; NULL is fine. No request may be in flight. */
void s3_client_free(struct s3_client *client);

/* Replace the credentials used by requests started from now on. token may be NULL. */
int s3_client_set_credentials(struct s3_client *client, const char *access_key,
                              const char *secret_key, const char *token);

/* Counters since creation, for tests and metrics. */
struct s3_stats {
    uint64_t requests; /* HTTP requests sent, retries included */
    uint64_t retries;
    uint64_t connects; /* new TCP connections (fewer than requests when reused) */
};
void s3_client_stats(struct s3_client *client, struct s3_stats *out);

/* Where a request body comes from. read copies up to n bytes at offset (from
 * the start of the body) into buf and returns the count, or -1 on error; it
 * may be called again from offset 0 when the request is retried. */
struct s3_source {
    long (*read)(void *arg, uint64_t offset, void *buf, size_t n);
    void *arg;
    uint64_t length;
};

/* Where a response body goes. write stores n bytes at offset (from the start
 * of the requested range) and returns 0, or -1 to abort. A retried request
 * writes again from offset 0. */
struct s3_sink {
    int (*write)(void *arg, uint64_t offset, const void *data, size_t n);
    void *arg;
};

/* Sources and sinks over memory and file descriptors. The structs they point
 * to must outlive the request. */
struct s3_mem {
    void *data;
    size_t len;  /* sink: capacity; bytes past it abort the request */
    size_t used; /* sink: highest offset written */
};
struct s3_fd {
    int fd;
    uint64_t base; /* file offset of body offset 0 */
};
struct s3_source s3_source_mem(struct s3_mem *m);
struct s3_source s3_source_fd(struct s3_fd *f, uint64_t length);
struct s3_sink s3_sink_mem(struct s3_mem *m);
struct s3_sink s3_sink_fd(struct s3_fd *f);

/* User metadata: name without "x-amz-meta-" (lower-case in responses). */
struct s3_meta {
    const char *name;
    const char *value;
};

/* Options of requests that create objects (PUT, copy with REPLACE, multipart create). */
struct s3_put_opts {
    const char *content_type; /* NULL: application/octet-stream */
    const struct s3_meta *meta;
    size_t n_meta;
    int if_none_match; /* 1: fail with S3_ERR_PRECONDITION if the key exists */
};

/* What HEAD (and GET) tell about an object. Owns its strings. */
struct s3_head {
    uint64_t size; /* whole object size (from Content-Range when ranged) */
    char etag[S3_ETAG_MAX];
    time_t last_modified;
    char content_type[128];
    struct s3_meta *meta; /* owned: names and values malloc'd */
    size_t n_meta;
};
void s3_head_release(struct s3_head *head);
/* The value of user metadata name (case-insensitive), or NULL. */
const char *s3_head_meta(const struct s3_head *head, const char *name);

/* Objects. key is the full object key (any bytes but NUL, at most S3_MAX_KEY_LEN). */
int s3_put_object(struct s3_client *c, const char *key, const struct s3_source *body,
                  const struct s3_put_opts *opts, char etag[S3_ETAG_MAX]);
/* Read length bytes from offset (length 0: to the end) into sink. head, when
 * not NULL, receives the object's attributes and must be released. A range
 * past the end gives S3_ERR_BAD_RANGE. *got, when not NULL, receives the
 * number of bytes written to the sink. */
int s3_get_object(struct s3_client *c, const char *key, uint64_t offset, uint64_t length,
                  const struct s3_sink *sink, struct s3_head *head, uint64_t *got);
/* s3_get_object of the object only while its ETag is if_match (quoted, as
 * S3 gives it; NULL or "": any): another gives S3_ERR_PRECONDITION. */
int s3_get_object_if(struct s3_client *c, const char *key, const char *if_match, uint64_t offset,
                     uint64_t length, const struct s3_sink *sink, struct s3_head *head,
                     uint64_t *got);
int s3_head_object(struct s3_client *c, const char *key, struct s3_head *head);
/* Deleting a missing key succeeds, as in S3. */
int s3_delete_object(struct s3_client *c, const char *key);
/* Delete up to S3_MAX_DELETE keys in one request; out (optional) tells which
 * failed. Keys a DeleteObjects body cannot name (control characters or
 * invalid UTF-8, which XML 1.0 cannot carry) are deleted with one DELETE
 * each; one the service refuses is listed among the failures all the same. */
int s3_delete_objects(struct s3_client *c, const char *const *keys, size_t n,
                      struct s3_delete_result *out);

/* One ListObjectsV2 page. prefix, delimiter, token and start_after may be
 * NULL; max_keys 0 means 1000. Keys with any bytes come back intact
 * (encoding-type=url is requested and decoded). */
int s3_list_objects(struct s3_client *c, const char *prefix, const char *delimiter,
                    const char *token, const char *start_after, int max_keys,
                    struct s3_list_page *out);

/* Server-side copy of an object up to 5 GiB. replace_meta 0 copies the
 * source's metadata (opts ignored), 1 replaces it with opts'. */
int s3_copy_object(struct s3_client *c, const char *src_key, const char *dst_key, int replace_meta,
                   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX]);

/* Multipart uploads. *upload_id is malloc'd; the caller frees it. A request
 * naming an upload that is gone (aborted, completed, never was) gives
 * S3_ERR_NO_UPLOAD, whichever 404 the service used. */
int s3_multipart_create(struct s3_client *c, const char *key, const struct s3_put_opts *opts,
                        char **upload_id);
int s3_multipart_upload_part(struct s3_client *c, const char *key, const char *upload_id,
                             int part_number, const struct s3_source *body, char etag[S3_ETAG_MAX]);
/* Copy bytes [first, last] of src_key into a part. */
int s3_multipart_copy_part(struct s3_client *c, const char *key, const char *upload_id,
                           int part_number, const char *src_key, uint64_t first, uint64_t last,
                           char etag[S3_ETAG_MAX]);
/* Complete an upload; etag receives the object's ETag. When the answer's
 * ETag is empty (RGW 16.2 does that) it is read with a HEAD of the object; if
 * that ETag is not a multipart one of n parts ("...-n"), someone overwrote
 * the object meanwhile and the result is S3_ERR_BAD_RESPONSE. */
int s3_multipart_complete(struct s3_client *c, const char *key, const char *upload_id,
                          const int *numbers, const char *const *etags, size_t n,
                          char etag[S3_ETAG_MAX]);
int s3_multipart_abort(struct s3_client *c, const char *key, const char *upload_id);
/* The ETag S3 gives the object of a multipart upload whose n parts have
 * these ETags (each "..." around an MD5 in hex): the MD5 of their MD5s,
 * then "-n". Returns 0, or -1 when a part's ETag holds no MD5. */
int s3_multipart_etag(const char *const *etags, size_t n, char out[S3_ETAG_MAX]);
/* One page of the parts uploaded so far, after part number marker. */
int s3_multipart_list_parts(struct s3_client *c, const char *key, const char *upload_id, int marker,
                            struct s3_part_list *out);
/* One page of the bucket's incomplete uploads under prefix. */
int s3_multipart_list_uploads(struct s3_client *c, const char *prefix, const char *key_marker,
                              const char *upload_id_marker, struct s3_upload_list *out);

/* STS AssumeRole with an inline session policy (compact JSON, may be NULL),
 * signed with the client's credentials, against the client's endpoint. */
int sts_assume_role(struct s3_client *c, const char *role_arn, const char *session_name,
                    const char *policy, int duration_s, struct sts_credentials *out);

/* The message of the last S3 error seen by this thread ("Code: Message"), or
 * "" — for logs. */
const char *s3_last_error_detail(void);

/* Bound the requests this thread makes from now on, their retries and the
 * pauses between them included, to end within ms milliseconds; 0 lifts the
 * bound (the default). For a server whose own client waits a known time:
 * a request past the bound fails with S3_ERR_TIMEOUT instead of holding the
 * thread for every retry of the client's configured timeouts. */
void s3_thread_deadline(long ms);

/* Whether the server counts as silent (s3_config.silence_ms: a request
 * spent the bound and no other heard from it meanwhile) and a request now
 * would fail at once with S3_ERR_TIMEOUT: while it is silent, one request
 * at a time tries, once (a new try starts at most every second), the
 * others fail at once, and the first answer ends it. For callers that
 * would do costly work before a request. */
bool s3_client_silent(struct s3_client *client);

/* The calling thread's deadline, to put back with s3_thread_deadline_restore
 * after a call that sets its own; 0 when there is none. */
long long s3_thread_deadline_save(void);
void s3_thread_deadline_restore(long long saved);

#endif
