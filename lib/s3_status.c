/* s3_status: mapping of HTTP statuses and S3 error codes to one enum. */
#include "s3_status.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const char *const messages[S3_STATUS_COUNT] = {
    [S3_OK] = "success",
    [S3_ERR_NOMEM] = "out of memory",
    [S3_ERR_INVALID_ARG] = "invalid argument",
    [S3_ERR_LOCAL_IO] = "local i/o error",
    [S3_ERR_ABORTED] = "aborted by caller",
    [S3_ERR_CONNECT] = "cannot connect to the S3 service",
    [S3_ERR_TIMEOUT] = "request timed out",
    [S3_ERR_TRANSPORT] = "transport error",
    [S3_ERR_BAD_RESPONSE] = "malformed response from the S3 service",
    [S3_ERR_TOO_LARGE] = "response too large",
    [S3_ERR_NOT_FOUND] = "no such key",
    [S3_ERR_NO_BUCKET] = "no such bucket",
    [S3_ERR_NO_UPLOAD] = "no such multipart upload",
    [S3_ERR_ACCESS_DENIED] = "access denied",
    [S3_ERR_EXPIRED_TOKEN] = "credentials expired",
    [S3_ERR_AUTH] = "authentication failed",
    [S3_ERR_PRECONDITION] = "precondition failed",
    [S3_ERR_BAD_RANGE] = "invalid range",
    [S3_ERR_TOO_BIG] = "entity size out of range",
    [S3_ERR_QUOTA] = "storage quota exceeded",
    [S3_ERR_CONFLICT] = "conflicting operation",
    [S3_ERR_INVALID] = "invalid request",
    [S3_ERR_SLOW_DOWN] = "throttled by the S3 service",
    [S3_ERR_SERVER] = "S3 service error",
};

const char *s3_strerror(int status)
{
    if (status < 0 || status >= S3_STATUS_COUNT || !messages[status])
        return "unknown error";
    return messages[status];
}

static const struct {
    const char *code;
    enum s3_status status;
} code_table[] = {
    {"NoSuchKey", S3_ERR_NOT_FOUND},
    {"NoSuchBucket", S3_ERR_NO_BUCKET},
    {"NoSuchUpload", S3_ERR_NO_UPLOAD},
    {"AccessDenied", S3_ERR_ACCESS_DENIED},
    {"AllAccessDisabled", S3_ERR_ACCESS_DENIED},
    {"ExpiredToken", S3_ERR_EXPIRED_TOKEN},
    {"TokenRefreshRequired", S3_ERR_EXPIRED_TOKEN},
    {"SignatureDoesNotMatch", S3_ERR_AUTH},
    {"InvalidAccessKeyId", S3_ERR_AUTH},
    {"InvalidToken", S3_ERR_AUTH},
    {"InvalidClientTokenId", S3_ERR_AUTH},
    {"RequestTimeTooSkewed", S3_ERR_AUTH},
    {"PreconditionFailed", S3_ERR_PRECONDITION},
    {"InvalidRange", S3_ERR_BAD_RANGE},
    {"EntityTooLarge", S3_ERR_TOO_BIG},
    {"EntityTooSmall", S3_ERR_TOO_BIG},
    {"InvalidPart", S3_ERR_INVALID},
    {"InvalidPartOrder", S3_ERR_INVALID},
    {"QuotaExceeded", S3_ERR_QUOTA},
    {"SlowDown", S3_ERR_SLOW_DOWN},
    {"Throttling", S3_ERR_SLOW_DOWN},
    {"RequestTimeout", S3_ERR_TIMEOUT},
    {"InternalError", S3_ERR_SERVER},
    {"ServiceUnavailable", S3_ERR_SERVER},
};

enum s3_status s3_status_from_http(long http_status, const char *code)
{
    if (code && *code) {
        for (size_t i = 0; i < sizeof(code_table) / sizeof(code_table[0]); i++)
            if (strcmp(code, code_table[i].code) == 0)
                return code_table[i].status;
    }
    if (http_status >= 200 && http_status < 300)
        return (code && *code) ? S3_ERR_BAD_RESPONSE : S3_OK;
    switch (http_status) {
    case 304:
    case 412:
        return S3_ERR_PRECONDITION;
    case 403:
        return S3_ERR_ACCESS_DENIED;
    case 404:
        return S3_ERR_NOT_FOUND;
    case 408:
        return S3_ERR_TIMEOUT;
    case 409:
        return S3_ERR_CONFLICT;
    case 416:
        return S3_ERR_BAD_RANGE;
    case 429:
        return S3_ERR_SLOW_DOWN;
    case 503:
        return S3_ERR_SLOW_DOWN;
    default:
        break;
    }
    if (http_status >= 500)
        return S3_ERR_SERVER;
    if (http_status >= 400)
        return S3_ERR_INVALID;
    return S3_ERR_BAD_RESPONSE;
}

bool s3_status_retryable(enum s3_status status)
{
    switch (status) {
    case S3_ERR_CONNECT:
    case S3_ERR_TIMEOUT:
    case S3_ERR_TRANSPORT:
    case S3_ERR_SLOW_DOWN:
    case S3_ERR_SERVER:
        return true;
    default:
        return false;
    }
}

int s3_status_errno(enum s3_status status)
{
    switch (status) {
    case S3_OK:
        return 0;
    case S3_ERR_NOMEM:
        return ENOMEM;
    case S3_ERR_INVALID_ARG:
        return EINVAL;
    case S3_ERR_NOT_FOUND:
    case S3_ERR_NO_BUCKET:
    case S3_ERR_NO_UPLOAD:
        return ENOENT;
    case S3_ERR_ACCESS_DENIED:
    case S3_ERR_AUTH:
    case S3_ERR_EXPIRED_TOKEN:
        return EACCES;
    case S3_ERR_TIMEOUT:
        return ETIMEDOUT;
    case S3_ERR_QUOTA:
        return EDQUOT;
    case S3_ERR_TOO_BIG:
        return EFBIG;
    case S3_ERR_BAD_RANGE:
    case S3_ERR_INVALID:
        return EINVAL;
    case S3_ERR_CONFLICT:
        return EBUSY;
    case S3_ERR_ABORTED:
        return ECANCELED;
    default:
        return EIO;
    }
}
