/* sigv4: AWS Signature Version 4 (header auth, S3 canonical-URI rules) over
 * OpenSSL's SHA-256 and HMAC. */
#include "sigv4.h"

#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
/* A canonical request larger than this is refused: no legitimate request
 * signs megabytes of headers, and it bounds what a caller bug can allocate. */
#define SIGV4_MAX_CANONICAL (8u * 1024 * 1024)

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

char *sigv4_uri_encode(const char *s, size_t len, int keep_slash)
{
    if (!s && len)
        return NULL;
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    char *p = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (c == '/' && keep_slash)) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex_upper[c >> 4];
            *p++ = hex_upper[c & 0x0f];
        }
    }
    *p = '\0';
    return out;
}

struct query_pair {
    char *name;
    char *value;
};

static int query_pair_cmp(const void *a, const void *b)
{
    const struct query_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

char *sigv4_canonical_query(const struct sigv4_param *params, size_t n)
{
    if (n == 0)
        return strdup("");
    if (!params || n > SIZE_MAX / sizeof(struct query_pair))
        return NULL;
    struct query_pair *pairs = calloc(n, sizeof(*pairs));
    if (!pairs)
        return NULL;
    char *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = params[i].name;
        const char *value = params[i].value ? params[i].value : "";
        if (!name)
            goto done;
        pairs[i].name = sigv4_uri_encode(name, strlen(name), 0);
        pairs[i].value = sigv4_uri_encode(value, strlen(value), 0);
        if (!pairs[i].name || !pairs[i].value)
            goto done;
        size_t add = strlen(pairs[i].name) + strlen(pairs[i].value) + 2; /* '=' and '&' */
        if (total > SIZE_MAX - add)
            goto done;
        total += add;
    }
    qsort(pairs, n, sizeof(*pairs), query_pair_cmp);
    out = malloc(total); /* n '&'-separators minus one, plus the NUL */
    if (!out)
        goto done;
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = '&';
        size_t ln = strlen(pairs[i].name), lv = strlen(pairs[i].value);
        memcpy(p, pairs[i].name, ln);
        p += ln;
        *p++ = '=';
        memcpy(p, pairs[i].value, lv);
        p += lv;
    }
    *p = '\0';
done:
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
    return out;
}

void sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;
    out[0] = '\0';
    if (!gmtime_r(&t, &tm))
        return;
    /* strftime returns 0 when a 5-digit year would not fit in 16 characters. */
    if (tm.tm_year < -1900 || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        out[0] = '\0';
}

static void to_hex(const unsigned char *md, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_lower[md[i] >> 4];
        out[2 * i + 1] = hex_lower[md[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!data)
        data = "";
    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) || md_len != 32) {
        /* Only on a broken libcrypto; an empty string never matches a signature. */
        out[0] = '\0';
        return;
    }
    to_hex(md, 32, out);
}

/* HMAC-SHA256(key, data) into out[32]. Returns 0, -EINVAL for an absurd key
 * length, or -ENOMEM when libcrypto fails (allocation is its only failure). */
static int hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len,
                       unsigned char out[32])
{
    unsigned int out_len = 0;
    if (key_len > INT32_MAX)
        return -EINVAL;
    if (!HMAC(EVP_sha256(), key, (int)key_len, data, data_len, out, &out_len) || out_len != 32)
        return -ENOMEM;
    return 0;
}

/* Visible ASCII without the separators of the Credential field. */
static int valid_credential_part(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',' || c == ';' || c == '=')
            return 0;
    }
    return 1;
}

/* No control characters, no spaces: what an encoded URI or query may hold. */
static int valid_encoded(const char *s, int allow_empty)
{
    if (!s || (!*s && !allow_empty))
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* An HTTP token (RFC 9110 tchar): header names and methods. */
static int valid_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", c))
            return 0;
    }
    return 1;
}

/* Header values may hold tabs and any byte >= 0x20 except DEL; CR and LF
 * would let a value forge another line of the canonical request. */
static int valid_header_value(const char *s)
{
    if (!s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static int two_digits(const char *s, int lo, int hi)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return 0;
    int v = (s[0] - '0') * 10 + (s[1] - '0');
    return v >= lo && v <= hi;
}

/* "YYYYMMDDTHHMMSSZ" with plausible field ranges. */
static int valid_amz_date(const char *d)
{
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return 0;
    for (int i = 0; i < 4; i++)
        if (d[i] < '0' || d[i] > '9')
            return 0;
    return two_digits(d + 4, 1, 12) && two_digits(d + 6, 1, 31) && two_digits(d + 9, 0, 23) &&
           two_digits(d + 11, 0, 59) && two_digits(d + 13, 0, 60);
}

static int valid_payload_hash(const char *s)
{
    return valid_encoded(s, 0);
}

struct canon_header {
    char *name;        /* lower-cased copy */
    const char *value; /* the caller's, untrimmed */
    size_t index;      /* position in the request, to keep duplicates in order */
};

static int canon_header_cmp(const void *a, const void *b)
{
    const struct canon_header *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Append value with leading/trailing whitespace removed and inner runs of
 * spaces and tabs folded to one space. */
static int add_trimmed(struct buf *b, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    int pending_space = 0;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            pending_space = 1;
            continue;
        }
        if (pending_space) {
            int rc = buf_add(b, " ", 1);
            if (rc)
                return rc;
            pending_space = 0;
        }
        int rc = buf_add(b, v, 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int map_buf_error(int rc)
{
    return rc == -E2BIG ? -EINVAL : rc;
}

/* Lower-case, sort and validate the headers. On success *out holds n entries
 * the caller frees with free_headers. */
static int sort_headers(const struct sigv4_request *req, struct canon_header **out)
{
    size_t n = req->n_headers;
    if (!req->headers || n == 0 || n > SIZE_MAX / sizeof(struct canon_header))
        return -EINVAL;
    struct canon_header *h = calloc(n, sizeof(*h));
    if (!h)
        return -ENOMEM;
    int rc = 0;
    int have_host = 0, have_date = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sigv4_header *in = &req->headers[i];
        if (!valid_token(in->name) || !valid_header_value(in->value)) {
            rc = -EINVAL;
            goto fail;
        }
        h[i].name = strdup(in->name);
        if (!h[i].name) {
            rc = -ENOMEM;
            goto fail;
        }
        for (char *p = h[i].name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        h[i].value = in->value;
        h[i].index = i;
        if (!strcmp(h[i].name, "host"))
            have_host = 1;
        if (!strcmp(h[i].name, "x-amz-date")) {
            /* The signed date must be the one in the scope, or the server
             * derives another key and the request is refused. */
            struct buf v;
            buf_init(&v, 64);
            rc = add_trimmed(&v, in->value);
            int same = !rc && v.data && !strcmp(v.data, req->amz_date);
            buf_release(&v);
            if (!same) {
                rc = -EINVAL;
                goto fail;
            }
            have_date = 1;
        }
    }
    if (!have_host || !have_date) {
        rc = -EINVAL;
        goto fail;
    }
    qsort(h, n, sizeof(*h), canon_header_cmp);
    *out = h;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free(h[i].name);
    free(h);
    return rc;
}

static void free_headers(struct canon_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(h[i].name);
    free(h);
}

/* Canonical request into cr and the signed-headers list into signed_hdrs. */
static int build_canonical(const struct sigv4_request *req, struct buf *cr, struct buf *signed_hdrs)
{
    struct canon_header *h = NULL;
    size_t n = req->n_headers;
    int rc = sort_headers(req, &h);
    if (rc)
        return rc;
    rc = buf_addf(cr, "%s\n%s\n%s\n", req->method, req->canonical_uri, req->canonical_query);
    for (size_t i = 0; !rc && i < n; i++) {
        int first = i == 0 || strcmp(h[i].name, h[i - 1].name) != 0;
        int last = i + 1 == n || strcmp(h[i].name, h[i + 1].name) != 0;
        if (first) {
            rc = buf_addf(cr, "%s:", h[i].name);
            if (!rc && signed_hdrs->len)
                rc = buf_add(signed_hdrs, ";", 1);
            if (!rc)
                rc = buf_adds(signed_hdrs, h[i].name);
        } else {
            rc = buf_add(cr, ",", 1); /* repeated header: values joined in order */
        }
        if (!rc)
            rc = add_trimmed(cr, h[i].value);
        if (!rc && last)
            rc = buf_add(cr, "\n", 1);
    }
    if (!rc)
        rc = buf_addf(cr, "\n%s\n%s", signed_hdrs->data, req->payload_hash);
    free_headers(h, n);
    return map_buf_error(rc);
}

int sigv4_signing_key(const char *secret_key, const char *date, const char *region,
                      const char *service, unsigned char key[32])
{
    if (!secret_key || !*secret_key || !date || strlen(date) < 8 || !region || !service)
        return -EINVAL;
    unsigned char k1[32];
    size_t secret_len = strlen(secret_key);
    size_t key_len = secret_len + 4;
    char *secret = malloc(key_len + 1);
    if (!secret)
        return -ENOMEM;
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, secret_key, secret_len + 1);

    int rc = hmac_sha256(secret, key_len, date, 8, key);
    if (!rc)
        rc = hmac_sha256(key, 32, region, strlen(region), k1);
    if (!rc)
        rc = hmac_sha256(k1, 32, service, strlen(service), key);
    if (!rc)
        rc = hmac_sha256(key, 32, "aws4_request", 12, k1);
    if (!rc)
        memcpy(key, k1, 32);
    else
        OPENSSL_cleanse(key, 32);

    OPENSSL_cleanse(secret, key_len + 1);
    free(secret);
    OPENSSL_cleanse(k1, sizeof(k1));
    return rc;
}

/* The signature of sts, hex, into sig_hex, with req's signing key (given
 * or derived). */
static int compute_signature(const struct sigv4_request *req, const char *sts, char sig_hex[65])
{
    unsigned char derived[32], sig[32];
    const unsigned char *key = req->signing_key;
    int rc = 0;
    if (!key) {
        rc = sigv4_signing_key(req->secret_key, req->amz_date, req->region, req->service, derived);
        key = derived;
    }
    if (!rc)
        rc = hmac_sha256(key, 32, sts, strlen(sts), sig);
    if (!rc)
        to_hex(sig, 32, sig_hex);
    OPENSSL_cleanse(derived, sizeof(derived));
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

static int valid_request(const struct sigv4_request *req)
{
    return req && valid_token(req->method) && valid_encoded(req->canonical_uri, 0) &&
           valid_encoded(req->canonical_query, 1) && valid_payload_hash(req->payload_hash) &&
           valid_credential_part(req->region) && valid_credential_part(req->service) &&
           valid_credential_part(req->access_key) && req->secret_key && *req->secret_key &&
           valid_amz_date(req->amz_date);
}

int sigv4_sign(const struct sigv4_request *req, char **authorization, char **canonical_request_out,
               char **string_to_sign_out)
{
    if (authorization)
        *authorization = NULL;
    if (canonical_request_out)
        *canonical_request_out = NULL;
    if (string_to_sign_out)
        *string_to_sign_out = NULL;
    if (!authorization || !valid_request(req))
        return -EINVAL;

    struct buf cr, signed_hdrs, sts, auth;
    buf_init(&cr, SIGV4_MAX_CANONICAL);
    buf_init(&signed_hdrs, SIGV4_MAX_CANONICAL);
    buf_init(&sts, 1024);
    buf_init(&auth, SIGV4_MAX_CANONICAL);
    char date8[9], scope_hash[65], sig_hex[65];
    char *cr_copy = NULL, *sts_copy = NULL;

    int rc = build_canonical(req, &cr, &signed_hdrs);
    if (rc)
        goto fail;
    sigv4_sha256_hex(cr.data, cr.len, scope_hash);
    if (!scope_hash[0]) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(date8, req->amz_date, 8);
    date8[8] = '\0';
    rc = buf_addf(&sts, SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", req->amz_date, date8,
                  req->region, req->service, scope_hash);
    if (rc)
        goto fail;
    rc = compute_signature(req, sts.data, sig_hex);
    if (rc)
        goto fail;
    rc = buf_addf(&auth,
                  SIGV4_ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                                  "Signature=%s",
                  req->access_key, date8, req->region, req->service, signed_hdrs.data, sig_hex);
    if (rc)
        goto fail;
    if (canonical_request_out && !(cr_copy = buf_detach(&cr, NULL))) {
        rc = -ENOMEM;
        goto fail;
    }
    if (string_to_sign_out && !(sts_copy = buf_detach(&sts, NULL))) {
        rc = -ENOMEM;
        goto fail;
    }
    *authorization = buf_detach(&auth, NULL);
    if (!*authorization) {
        rc = -ENOMEM;
        goto fail;
    }
    if (canonical_request_out)
        *canonical_request_out = cr_copy;
    if (string_to_sign_out)
        *string_to_sign_out = sts_copy;
    buf_release(&cr);
    buf_release(&signed_hdrs);
    buf_release(&sts);
    return 0;
fail:
    free(cr_copy);
    free(sts_copy);
    buf_release(&cr);
    buf_release(&signed_hdrs);
    buf_release(&sts);
    buf_release(&auth);
    return map_buf_error(rc);
}
