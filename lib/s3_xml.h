/* s3_xml: decoders for S3 and STS XML response bodies and builders for the
 * XML request bodies S3 takes. Every decoder returns an s3_status: S3_OK,
 * S3_ERR_BAD_RESPONSE for malformed, truncated or unexpected XML (wrong root
 * element, missing required field, bad number), S3_ERR_TOO_LARGE past the
 * parser's limits (xml_default_limits in xml.h), S3_ERR_NOMEM. An <Error>
 * document (or STS <ErrorResponse>) where a result was expected gives its code
 * mapped with s3_status_from_http(500, code), so an unknown code counts as a
 * service failure; one without a Code is S3_ERR_BAD_RESPONSE. Times are ISO
 * 8601, in UTC or with an offset, converted without the local time zone.
 * Out-parameters are filled only on S3_OK; release them with the matching
 * _release function (which accepts zeroed structs). */
#ifndef POCKITY_S3_XML_H
#define POCKITY_S3_XML_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "s3_status.h"

/* <Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId></Error> */
struct s3_error_info {
    char code[64]; /* "" when absent; truncated to fit */
    char message[256];
    char request_id[128];
};
/* Decode an error body. Returns S3_OK when body is an <Error> document (also
 * STS's <ErrorResponse><Error>...), S3_ERR_BAD_RESPONSE otherwise. */
int s3_xml_parse_error(const char *body, size_t len, struct s3_error_info *out);

struct s3_object_info {
    char *key;
    uint64_t size;
    char *etag;           /* as sent, quotes included; may be NULL */
    time_t last_modified; /* 0 when absent or unparseable */
};

/* ListObjectsV2 (ListBucketResult) page. Every Contents needs a non-empty Key
 * and a Size (digits only, within 64 bits). When the document carries
 * <EncodingType>url</EncodingType> (we ask for encoding-type=url, so keys
 * with bytes XML cannot carry survive), keys and prefixes are percent-decoded,
 * '+' read as a space; a malformed escape or %00 is S3_ERR_BAD_RESPONSE, as is
 * any other EncodingType, and a truncated page without NextContinuationToken
 * (it could not be continued). */
struct s3_list_page {
    struct s3_object_info *objects;
    size_t n_objects;
    char **prefixes; /* CommonPrefixes/Prefix values */
    size_t n_prefixes;
    int is_truncated;
    char *next_token; /* NextContinuationToken, NULL when absent */
    int key_count;    /* KeyCount, -1 when absent */
};
int s3_xml_parse_list(const char *body, size_t len, struct s3_list_page *out);
void s3_list_page_release(struct s3_list_page *page);

/* InitiateMultipartUploadResult: *upload_id receives a malloc'd string (a
 * missing or empty UploadId is S3_ERR_BAD_RESPONSE). */
int s3_xml_parse_initiate(const char *body, size_t len, char **upload_id);

/* CopyObjectResult, CopyPartResult or CompleteMultipartUploadResult: the ETag.
 * These operations can answer 200 with an <Error> body: then the mapped error
 * status is returned (s3_status_from_http(500, code): S3_ERR_SERVER for
 * InternalError or an unknown code, S3_ERR_SLOW_DOWN for SlowDown, ...) and,
 * when err is not NULL, its details; err is zeroed first. *etag receives a
 * malloc'd string on S3_OK (a missing ETag is S3_ERR_BAD_RESPONSE). */
int s3_xml_parse_etag_result(const char *body, size_t len, char **etag, struct s3_error_info *err);

/* CompleteMultipartUploadResult, as s3_xml_parse_etag_result but for that
 * root only, and a missing or empty ETag is S3_OK with *etag NULL (RGW 16.2
 * answers <ETag></ETag>); *etag is NULL on any error too. */
int s3_xml_parse_complete(const char *body, size_t len, char **etag, struct s3_error_info *err);

struct s3_part_info {
    int number;
    uint64_t size;
    char *etag;
};
/* ListPartsResult page. Each Part needs PartNumber (1..10000), Size and ETag;
 * a truncated page needs NextPartNumberMarker. */
struct s3_part_list {
    struct s3_part_info *parts;
    size_t n_parts;
    int is_truncated;
    int next_marker; /* NextPartNumberMarker, 0 when absent */
};
int s3_xml_parse_parts(const char *body, size_t len, struct s3_part_list *out);
void s3_part_list_release(struct s3_part_list *list);

/* DeleteResult: the number of Deleted entries and the keys that failed, with
 * their codes ("" when absent); an Error entry without Key is
 * S3_ERR_BAD_RESPONSE. */
struct s3_delete_failure {
    char *key;
    char code[64];
};
struct s3_delete_result {
    size_t n_deleted;
    struct s3_delete_failure *failures;
    size_t n_failures;
};
int s3_xml_parse_delete(const char *body, size_t len, struct s3_delete_result *out);
void s3_delete_result_release(struct s3_delete_result *res);

/* ListMultipartUploadsResult page. Each Upload needs Key and UploadId;
 * initiated is 0 when absent or unparseable; the markers are NULL when absent
 * or empty (a truncated page needs NextKeyMarker). Keys and NextKeyMarker are
 * percent-decoded under EncodingType url, as for listings. */
struct s3_upload_info {
    char *key;
    char *upload_id;
    time_t initiated;
};
struct s3_upload_list {
    struct s3_upload_info *uploads;
    size_t n_uploads;
    int is_truncated;
    char *next_key_marker;
    char *next_upload_id_marker;
};
int s3_xml_parse_uploads(const char *body, size_t len, struct s3_upload_list *out);
void s3_upload_list_release(struct s3_upload_list *list);

/* STS AssumeRoleResponse/AssumeRoleResult/Credentials. AccessKeyId,
 * SecretAccessKey, SessionToken (taken as sent) and a parseable Expiration
 * are all required. An STS <ErrorResponse> gives its mapped code. The release
 * function wipes the secret and the token before freeing them. */
struct sts_credentials {
    char *access_key;
    char *secret_key;
    char *session_token;
    time_t expiration;
};
int s3_xml_parse_assume_role(const char *body, size_t len, struct sts_credentials *out);
void sts_credentials_release(struct sts_credentials *c);

/* Request bodies. Each returns a malloc'd NUL-terminated document the caller
 * frees (length in *len when len is not NULL), or NULL when out of memory or
 * when the input cannot be sent as given:
 *  - n is 0, or over 1000 keys (delete) or 10000 parts (complete);
 *  - a key or ETag is NULL or empty;
 *  - part numbers are not strictly ascending within 1..10000;
 *  - a key or ETag holds what XML 1.0 cannot carry: control characters other
 *    than TAB, LF and CR, invalid UTF-8 (see xml_escape). Such a key cannot
 *    be named in a DeleteObjects body; delete it with a single DeleteObject.
 * Text is XML-escaped (CR as "&#13;", so it is not normalised to LF); keys are
 * never altered otherwise. The delete body asks for quiet mode (only failures
 * reported) when quiet is non-zero. */
char *s3_xml_build_delete(const char *const *keys, size_t n, int quiet, size_t *len);
char *s3_xml_build_complete(const int *numbers, const char *const *etags, size_t n, size_t *len);

#endif
