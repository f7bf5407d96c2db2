/* secret: randomness, random ids, constant-time comparison, codecs, digests and
 * API keys (see secret.h). */
#include "secret.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char hex_digits[] = "0123456789abcdef";
static const char b64url_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Domain separation: an API key hash can never equal a hash made for another
 * purpose from the same bytes. */
#define APIKEY_HASH_TAG "pockity-apikey-v1\n"

int secret_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t done = 0;

    while (done < n) {
        ssize_t r = getrandom(p + done, n - done, 0);
        if (r < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            secret_wipe(buf, n);
            return -err;
        }
        done += (size_t)r;
    }
    return 0;
}

static bool is_base32(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

static bool is_prefix_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool prefix_valid(const char *prefix, size_t *len_out)
{
    size_t len = strnlen(prefix, SECRET_ID_PREFIX_MAX + 1);

    if (len > SECRET_ID_PREFIX_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_prefix_char(prefix[i]))
            return false;
    *len_out = len;
    return true;
}

/* Ids name things, they do not guard them: their bytes come from a buffer
 * per thread, refilled from the kernel 256 bytes at a time, which saves a
 * system call per id (pockityd makes one per request). The process never
 * forks, so no two processes share a buffer. */
int secret_id_random(void *buf, size_t n)
{
    static __thread unsigned char pool[256];
    static __thread size_t left;
    if (n > sizeof(pool))
        return secret_random(buf, n);
    if (left < n) {
        int rc = secret_random(pool, sizeof(pool));
        if (rc < 0)
            return rc;
        left = sizeof(pool);
    }
    memcpy(buf, pool + sizeof(pool) - left, n);
    left -= n;
    return 0;
}

/* prefix and SECRET_ID_CHARS random base32 digits into out, the first
 * SECRET_ID_TIME_CHARS of them the time ms instead when it is not 0. */
static int make_id(const char *prefix, char *out, size_t outlen, uint64_t ms)
{
    unsigned char rnd[SECRET_ID_CHARS];
    size_t plen;
    if (!prefix || !out || !prefix_valid(prefix, &plen))
        return -EINVAL;
    if (outlen < plen + SECRET_ID_CHARS + 1)
        return -ENOSPC;
    int rc = secret_id_random(rnd, sizeof(rnd));
    if (rc < 0)
        return rc;
    memcpy(out, prefix, plen);
    /* 256 is a multiple of 32, so the low 5 bits of a uniform byte are uniform. */
    for (size_t i = 0; i < SECRET_ID_CHARS; i++)
        out[plen + i] = base32_alphabet[rnd[i] & 31];
    /* ordered ids: the time first, most significant digit first, in the
     * same 32 characters taken in ASCII order so that ids sort as times do */
    static const char sorted[] = "234567abcdefghijklmnopqrstuvwxyz";
    for (size_t i = 0; ms && i < SECRET_ID_TIME_CHARS; i++)
        out[plen + i] = sorted[(ms >> (5 * (SECRET_ID_TIME_CHARS - 1 - i))) & 31];
    out[plen + SECRET_ID_CHARS] = '\0';
    return 0;
}

int secret_id(const char *prefix, char *out, size_t outlen)
{
    return make_id(prefix, out, outlen, 0);
}

int secret_id_ordered(const char *prefix, char *out, size_t outlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return make_id(prefix, out, outlen, ms ? ms : 1);
}

bool secret_id_valid(const char *prefix, const char *id)
{
    size_t plen;

    if (!prefix || !id || !prefix_valid(prefix, &plen))
        return false;
    if (strncmp(id, prefix, plen) != 0)
        return false;
    for (size_t i = 0; i < SECRET_ID_CHARS; i++)
        if (!is_base32(id[plen + i]))
            return false;
    return id[plen + SECRET_ID_CHARS] == '\0';
}

bool secret_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

bool secret_streq(const char *a, const char *b)
{
    unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];

    if (!a || !b)
        return false;
    if (!SHA256((const unsigned char *)a, strlen(a), da) ||
        !SHA256((const unsigned char *)b, strlen(b), db))
        return false;
    return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

int secret_hex_encode(const void *in, size_t n, char *out, size_t outlen)
{
    const unsigned char *p = in;

    if (n > (SIZE_MAX - 1) / 2 || outlen < 2 * n + 1)
        return -ENOSPC;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[p[i] >> 4];
        out[2 * i + 1] = hex_digits[p[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

ssize_t secret_hex_decode(const char *in, size_t inlen, void *out, size_t outcap)
{
    unsigned char *p = out;

    if (inlen % 2 != 0 || inlen / 2 > SSIZE_MAX)
        return -EINVAL;
    for (size_t i = 0; i < inlen; i++)
        if (hex_value(in[i]) < 0)
            return -EINVAL;
    if (outcap < inlen / 2)
        return -ENOSPC;
    for (size_t i = 0; i < inlen / 2; i++)
        p[i] = (unsigned char)(hex_value(in[2 * i]) << 4 | hex_value(in[2 * i + 1]));
    return (ssize_t)(inlen / 2);
}

int secret_b64url_encode(const void *in, size_t n, char *out, size_t outlen)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;

    if (n > (SIZE_MAX / 4) * 3 - 3 || outlen < SECRET_B64URL_LEN(n) + 1)
        return -ENOSPC;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return 0;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

ssize_t secret_b64url_decode(const char *in, size_t inlen, void *out, size_t outcap)
{
    unsigned char *p = out;
    size_t rem = inlen % 4, need = inlen / 4 * 3 + (rem ? rem - 1 : 0);
    uint32_t acc = 0;
    size_t o = 0;
    int bits = 0;

    if (rem == 1 || need > SSIZE_MAX)
        return -EINVAL;
    for (size_t i = 0; i < inlen; i++)
        if (b64url_value(in[i]) < 0)
            return -EINVAL;
    /* The bits of the last character beyond the final byte must be zero. */
    if (rem == 2 && (b64url_value(in[inlen - 1]) & 15) != 0)
        return -EINVAL;
    if (rem == 3 && (b64url_value(in[inlen - 1]) & 3) != 0)
        return -EINVAL;
    if (outcap < need)
        return -ENOSPC;
    for (size_t i = 0; i < inlen; i++) {
        acc = (acc << 6 | (uint32_t)b64url_value(in[i])) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

int secret_sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    if (!SHA256(data, n, md))
        return -EIO;
    secret_hex_encode(md, sizeof(md), out, 65);
    return 0;
}

int secret_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                       uint8_t out[32])
{
    unsigned int outlen = 0;

    if (keylen > INT32_MAX)
        return -EINVAL;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) || outlen != 32)
        return -EIO;
    return 0;
}

void secret_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

/* --- API keys --- */

static bool b64url_secret_valid(const char *s)
{
    unsigned char raw[32];
    size_t len = strnlen(s, APIKEY_SECRET_LEN + 1);
    bool ok;

    if (len != APIKEY_SECRET_LEN)
        return false;
    ok = secret_b64url_decode(s, len, raw, sizeof(raw)) == (ssize_t)sizeof(raw);
    secret_wipe(raw, sizeof(raw));
    return ok;
}

int apikey_hash(const char *secret, char hash_out[APIKEY_HASH_LEN + 1])
{
    char buf[sizeof(APIKEY_HASH_TAG) - 1 + APIKEY_SECRET_LEN];
    int rc;

    if (!secret || !b64url_secret_valid(secret))
        return -EINVAL;
    memcpy(buf, APIKEY_HASH_TAG, sizeof(APIKEY_HASH_TAG) - 1);
    memcpy(buf + sizeof(APIKEY_HASH_TAG) - 1, secret, APIKEY_SECRET_LEN);
    rc = secret_sha256_hex(buf, sizeof(buf), hash_out);
    secret_wipe(buf, sizeof(buf));
    return rc;
}

int apikey_generate(char *key_out, size_t keylen, char id_out[APIKEY_ID_LEN + 1],
                    char hash_out[APIKEY_HASH_LEN + 1])
{
    unsigned char raw[32];
    char secret[APIKEY_SECRET_LEN + 1];
    char id[APIKEY_ID_LEN + 1];
    int rc;

    if (!key_out || !id_out || !hash_out)
        return -EINVAL;
    if (keylen < APIKEY_LEN + 1)
        return -ENOSPC;
    rc = secret_id("", id, sizeof(id));
    if (rc < 0)
        return rc;
    rc = secret_random(raw, sizeof(raw));
    if (rc < 0)
        return rc;
    secret_b64url_encode(raw, sizeof(raw), secret, sizeof(secret));
    secret_wipe(raw, sizeof(raw));
    rc = apikey_hash(secret, hash_out);
    if (rc < 0)
        goto out;
    memcpy(key_out, APIKEY_PREFIX, 4);
    memcpy(key_out + 4, id, APIKEY_ID_LEN);
    key_out[4 + APIKEY_ID_LEN] = '_';
    memcpy(key_out + 5 + APIKEY_ID_LEN, secret, APIKEY_SECRET_LEN + 1);
    memcpy(id_out, id, sizeof(id));
out:
    secret_wipe(secret, sizeof(secret));
    return rc;
}

int apikey_parse(const char *key, char id_out[APIKEY_ID_LEN + 1],
                 char secret_out[APIKEY_SECRET_LEN + 1])
{
    const char *id, *secret;

    if (!key || !id_out || !secret_out)
        return -EINVAL;
    if (strnlen(key, APIKEY_LEN + 1) != APIKEY_LEN)
        return -EINVAL;
    if (memcmp(key, APIKEY_PREFIX, 4) != 0 || key[4 + APIKEY_ID_LEN] != '_')
        return -EINVAL;
    id = key + 4;
    secret = key + 5 + APIKEY_ID_LEN;
    for (size_t i = 0; i < APIKEY_ID_LEN; i++)
        if (!is_base32(id[i]))
            return -EINVAL;
    if (!b64url_secret_valid(secret))
        return -EINVAL;
    memcpy(id_out, id, APIKEY_ID_LEN);
    id_out[APIKEY_ID_LEN] = '\0';
    memcpy(secret_out, secret, APIKEY_SECRET_LEN + 1);
    return 0;
}

int apikey_verify(const char *secret, const char *stored_hash)
{
    char hash[APIKEY_HASH_LEN + 1];
    unsigned char want[32], got[32];
    int rc;

    if (!stored_hash || strnlen(stored_hash, APIKEY_HASH_LEN + 1) != APIKEY_HASH_LEN ||
        secret_hex_decode(stored_hash, APIKEY_HASH_LEN, want, sizeof(want)) != 32)
        return -EINVAL;
    rc = apikey_hash(secret, hash);
    if (rc < 0)
        return rc;
    secret_hex_decode(hash, APIKEY_HASH_LEN, got, sizeof(got));
    rc = CRYPTO_memcmp(want, got, sizeof(want)) == 0 ? 0 : 1;
    secret_wipe(hash, sizeof(hash));
    return rc;
}
