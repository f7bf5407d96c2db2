/* s3_xml: decoders for S3 and STS XML response bodies and builders for the
 * XML request bodies S3 takes. Every decoder returns an s3_status: S3_OK,
 * S3_ERR_BAD_RESPONSE for malformed, truncated or unexpected XML (including an
 * <Error> document where a result was expected, in which case the error code is
 * mapped instead, see s3_xml_parse_error), S3_ERR_TOO_LARGE past the parser's
 * limits, S3_ERR_NOMEM. Out-parameters are filled only on S3_OK; release them
 * with the matching _release function (which accepts zeroed structs). */
#ifndef POCKITY_S3_XML_H
#define POCKITY_S3_XML_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "s3_status.h"

/* <Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId></Error> */
struct s3_error_info {
    char code[64];       /* "" when absent; truncated to fit */
    char message[256];
    char request_id[128];
};
/* Decode an error body. Returns S3_OK when body is an <Error> document (also
 * STS's <ErrorResponse><Error>...), S3_ERR_BAD_RESPONSE otherwise. */
int s3_xml_parse_error(const char *body, size_t len, struct s3_error_info *out);

struct s3_object_info {
    char *key;
    uint64_t size;
    char *etag;          /* as sent, quotes included; may be NULL */
    time_t last_modified;/* 0 when absent or unparseable */
};

/* ListObjectsV2 (ListBucketResult) page. */
struct s3_list_page {
    struct s3_object_info *objects;
    size_t n_objects;
    char **prefixes;     /* CommonPrefixes/Prefix values */
    size_t n_prefixes;
    int is_truncated;
    char *next_token;    /* NextContinuationToken, NULL when absent */
    int key_count;       /* KeyCount, -1 when absent */
};
int s3_xml_parse_list(const char *body, size_t len, struct s3_list_page *out);
void s3_list_page_release(struct s3_list_page *page);

/* InitiateMultipartUploadResult: *upload_id receives a malloc'd string. */
int s3_xml_parse_initiate(const char *body, size_t len, char **upload_id);

/* CopyObjectResult, CopyPartResult or CompleteMultipartUploadResult: the ETag.
 * These operations can answer 200 with an <Error> body: then the mapped error
 * status is returned (e.g. S3_ERR_SERVER for InternalError) and, when err is
 * not NULL, its details. *etag receives a malloc'd string on S3_OK. */
int s3_xml_parse_etag_result(const char *body, size_t len, char **etag,
                             struct s3_error_info *err);

struct s3_part_info {
    int number;
    uint64_t size;
    char *etag;
};
/* ListPartsResult page. */
struct s3_part_list {
    struct s3_part_info *parts;
    size_t n_parts;
    int is_truncated;
    int next_marker;     /* NextPartNumberMarker, 0 when absent */
};
int s3_xml_parse_parts(const char *body, size_t len, struct s3_part_list *out);
void s3_part_list_release(struct s3_part_list *list);

/* DeleteResult: the keys that failed, with their codes. */
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

/* ListMultipartUploadsResult page. */
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

/* STS AssumeRoleResponse/AssumeRoleResult/Credentials. */
struct sts_credentials {
    char *access_key;
    char *secret_key;
    char *session_token;
    time_t expiration;
};
int s3_xml_parse_assume_role(const char *body, size_t len, struct sts_credentials *out);
void sts_credentials_release(struct sts_credentials *c);

/* Request bodies. Each returns a malloc'd NUL-terminated document the caller
 * frees (length in *len), NULL when out of memory. Text is XML-escaped; keys
 * are never altered otherwise. */
char *s3_xml_build_delete(const char *const *keys, size_t n, int quiet, size_t *len);
char *s3_xml_build_complete(const int *numbers, const char *const *etags, size_t n, size_t *len);

#endif
