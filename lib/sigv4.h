/* sigv4: AWS Signature Version 4 for requests signed in the Authorization
 * header, with the S3 rules for canonical URIs (no normalisation, no double
 * encoding). The caller builds the URL from the same canonical pieces it signs,
 * so what is sent is exactly what was signed. */
#ifndef POCKITY_SIGV4_H
#define POCKITY_SIGV4_H

#include <stddef.h>
#include <time.h>

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* SHA-256 of the empty string, hex: the payload hash of a bodiless request. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_param { /* a query parameter, raw (not encoded); value may be "" */
    const char *name;
    const char *value;
};

struct sigv4_header { /* a header to sign; the name in any case, the value raw */
    const char *name;
    const char *value;
};

struct sigv4_request {
    const char *method;        /* "GET", "PUT", ... */
    const char *canonical_uri; /* already encoded, e.g. from sigv4_uri_encode(path, keep_slash=1) */
    const char *canonical_query; /* already sorted and encoded (sigv4_canonical_query), or "" */
    const struct sigv4_header *headers; /* every header to sign; must include host and x-amz-date */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD */
    const char *region;       /* e.g. "us-east-1" */
    const char *service;      /* "s3" or "sts" */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ", the same value as the x-amz-date header */
    const char *access_key;
    const char *secret_key;
    /* optional: sigv4_signing_key of secret_key for amz_date's day, region
     * and service, which every request of the day shares; NULL: derived */
    const unsigned char *signing_key;
};

/* Percent-encode len bytes of s as AWS's UriEncode: A-Z a-z 0-9 - . _ ~ stay,
 * every other byte (NUL and bytes >= 0x80 included, so UTF-8 is encoded byte
 * by byte) becomes %XX (upper-case hex); '/' stays when keep_slash.
 * Returns a malloc'd string the caller frees, NULL when out of memory (or s is
 * NULL with len > 0). */
char *sigv4_uri_encode(const char *s, size_t len, int keep_slash);

/* The canonical query string of n raw parameters: each name and value encoded
 * (keep_slash off), pairs sorted by encoded name then value (byte order),
 * joined with '&'; an empty or NULL value gives "name=". Usable as the query
 * part of the URL too. Returns a malloc'd string ("" for n == 0) the caller
 * frees, NULL when out of memory or when params or a name is NULL. */
char *sigv4_canonical_query(const struct sigv4_param *params, size_t n);

/* Format t as the x-amz-date value "YYYYMMDDTHHMMSSZ" (UTC) into out; out is
 * "" when t is outside years 0..9999 (sigv4_sign then refuses it). */
void sigv4_amz_date(time_t t, char out[17]);

/* Hex SHA-256 of len bytes into out (64 hex digits and a NUL). */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* The signing key of a day (date: "YYYYMMDD", or an amz_date), region and
 * service: the HMAC-SHA256 chain of "AWS4" + secret over them and
 * "aws4_request". Returns 0, -EINVAL or -ENOMEM. The caller wipes it
 * (OPENSSL_cleanse) when done. */
int sigv4_signing_key(const char *secret, const char *date, const char *region, const char *service,
                      unsigned char key[32]);

/* Sign req. On success returns 0 and *authorization receives a malloc'd
 * Authorization header value ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") the caller frees. Header names are lower-cased and sorted,
 * values trimmed with inner runs of spaces and tabs folded to one space, and
 * repeated names joined into one line with their values in request order
 * separated by ',', as the specification says.
 * Returns -EINVAL for a missing (NULL or empty) field, a malformed amz_date, no
 * host or x-amz-date header, an x-amz-date header that differs from amz_date,
 * a header name that is not an HTTP token, a header value holding CR, LF or
 * another control character, a region, service or access key holding '/',
 * ',', ';', '=' or blanks, or a canonical request over 8 MiB; -ENOMEM when out
 * of memory. On failure every output pointer is set to NULL.
 * When canonical_request_out / string_to_sign_out are not NULL they receive
 * malloc'd copies of those intermediate strings (for tests and debugging).
 * Derived key material is wiped (OPENSSL_cleanse) before returning. */
int sigv4_sign(const struct sigv4_request *req, char **authorization, char **canonical_request_out,
               char **string_to_sign_out);

#endif
