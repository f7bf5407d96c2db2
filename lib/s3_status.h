/* s3_status: the one error vocabulary of the S3 and STS client. 0 is success. */
#ifndef POCKITY_S3_STATUS_H
#define POCKITY_S3_STATUS_H

#include <stdbool.h>

enum s3_status {
    S3_OK = 0,
    /* local failures */
    S3_ERR_NOMEM,         /* an allocation failed */
    S3_ERR_INVALID_ARG,   /* the caller passed something unusable (e.g. an empty key) */
    S3_ERR_LOCAL_IO,      /* reading or writing a local file failed */
    S3_ERR_ABORTED,       /* the caller's callback asked to stop */
    /* transport */
    S3_ERR_CONNECT,       /* could not connect, or the connection dropped */
    S3_ERR_TIMEOUT,       /* the request took longer than allowed */
    S3_ERR_TRANSPORT,     /* any other libcurl failure */
    /* malformed or hostile responses */
    S3_ERR_BAD_RESPONSE,  /* unparseable or inconsistent response */
    S3_ERR_TOO_LARGE,     /* response body over the size cap */
    /* answers from the service */
    S3_ERR_NOT_FOUND,     /* NoSuchKey, or 404 without a body */
    S3_ERR_NO_BUCKET,     /* NoSuchBucket */
    S3_ERR_NO_UPLOAD,     /* NoSuchUpload */
    S3_ERR_ACCESS_DENIED, /* AccessDenied, 403 */
    S3_ERR_EXPIRED_TOKEN, /* ExpiredToken: the session credentials ran out */
    S3_ERR_AUTH,          /* SignatureDoesNotMatch, InvalidAccessKeyId, bad token */
    S3_ERR_PRECONDITION,  /* 412 PreconditionFailed */
    S3_ERR_BAD_RANGE,     /* 416 InvalidRange */
    S3_ERR_TOO_BIG,       /* EntityTooLarge / EntityTooSmall / bad part */
    S3_ERR_QUOTA,         /* the backend's own QuotaExceeded */
    S3_ERR_CONFLICT,      /* 409 (e.g. BucketNotEmpty, OperationAborted) */
    S3_ERR_INVALID,       /* any other 4xx: the request was wrong */
    S3_ERR_SLOW_DOWN,     /* 429 / SlowDown / 503 throttling */
    S3_ERR_SERVER,        /* 5xx: the service failed */
    S3_STATUS_COUNT
};

/* A short lowercase description of status; never NULL. */
const char *s3_strerror(int status);

/* Map an HTTP status and an S3 error code (may be NULL or "") to a status.
 * http_status 2xx with no code gives S3_OK. */
enum s3_status s3_status_from_http(long http_status, const char *code);

/* Whether a failed request with this status may be retried as is: transport
 * failures, timeouts, throttling and 5xx. Never a 4xx. */
bool s3_status_retryable(enum s3_status status);

/* The closest errno for status (ENOENT, EACCES, EDQUOT, EIO, ...), positive. */
int s3_status_errno(enum s3_status status);

#endif
