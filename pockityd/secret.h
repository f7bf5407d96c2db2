/* secret: randomness, random ids, constant-time comparison, hex and base64url
 * codecs, SHA-256/HMAC helpers and the API keys that mounts present to pockityd. */
#ifndef POCKITYD_SECRET_H
#define POCKITYD_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fill buf with n bytes from the kernel's CSPRNG (getrandom(2)), retrying on
 * EINTR and short reads. Blocks only until the kernel's pool is first seeded.
 * Returns 0, or -errno (buf is then wiped). */
int secret_random(void *buf, size_t n);

/* Random ids: the primary keys of users, pockets, keys, reservations, sessions.
 * An id is a prefix followed by SECRET_ID_CHARS characters of lowercase base32
 * ([a-z2-7], 5 bits each: 100 random bits), so ids are safe in S3 prefixes, URLs,
 * file names and log lines. */
#define SECRET_ID_CHARS      20
#define SECRET_ID_PREFIX_MAX 16 /* bytes; the prefix is [a-z0-9_]* */
#define SECRET_ID_MAX        (SECRET_ID_PREFIX_MAX + SECRET_ID_CHARS) /* excluding NUL */

/* Write prefix + a fresh random id into out (NUL-terminated), e.g.
 * secret_id("usr_", ...) → "usr_k5w2..." (24 chars). prefix may be "" but not
 * NULL. Returns 0, -EINVAL for a bad prefix (too long, other characters),
 * -ENOSPC when outlen < strlen(prefix) + SECRET_ID_CHARS + 1, or an error of
 * secret_random(). */
int secret_id(const char *prefix, char *out, size_t outlen);

/* The same shape, for rows inserted and deleted at a high rate (reservations):
 * the first SECRET_ID_TIME_CHARS characters are the time in milliseconds
 * (sorting as the ids do), the rest random (50 bits), so new rows land side
 * by side in the primary key's index instead of on a random page each. */
#define SECRET_ID_TIME_CHARS 10
int secret_id_ordered(const char *prefix, char *out, size_t outlen);

/* n random bytes for ids and other names that are not secrets (request ids):
 * from a per-thread buffer that getrandom(2) refills. Returns 0 or -errno. */
int secret_id_random(void *buf, size_t n);

/* Whether id is exactly prefix followed by SECRET_ID_CHARS base32 characters
 * (the shape secret_id() makes). Use it on ids that arrive from a client before
 * they go anywhere else (an S3 prefix, a log line). NULLs give false. */
bool secret_id_valid(const char *prefix, const char *id);

/* Compare n bytes in time that depends only on n. True when equal. */
bool secret_equal(const void *a, const void *b, size_t n);

/* Compare two strings in time that depends only on their lengths (both are
 * hashed with SHA-256, then the digests compared in constant time), so neither
 * the position of the first difference nor, beyond the hashing time, the
 * expected string's length leaks. True when equal; false when either is NULL. */
bool secret_streq(const char *a, const char *b);

/* Lowercase hex. encode writes 2n characters and a NUL: returns 0, or -ENOSPC
 * when outlen < 2n + 1. decode reads exactly inlen characters of canonical
 * lowercase hex (uppercase, odd lengths and any other character are refused) and
 * returns the number of bytes written to out, -EINVAL for a bad input, or
 * -ENOSPC when outcap < inlen / 2. */
int secret_hex_encode(const void *in, size_t n, char *out, size_t outlen);
ssize_t secret_hex_decode(const char *in, size_t inlen, void *out, size_t outcap);

/* base64url (RFC 4648 §5, alphabet [A-Za-z0-9-_]) without padding.
 * SECRET_B64URL_LEN(n) is the encoded length of n bytes (excluding NUL).
 * encode returns 0, or -ENOSPC when outlen < SECRET_B64URL_LEN(n) + 1. decode is
 * strict: it refuses '=', whitespace, any character outside the alphabet, a
 * length of 1 mod 4 and non-zero unused bits in the last character (so each
 * byte string has exactly one accepted encoding); it returns the number of bytes
 * written, -EINVAL, or -ENOSPC when out is too small. */
#define SECRET_B64URL_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
int secret_b64url_encode(const void *in, size_t n, char *out, size_t outlen);
ssize_t secret_b64url_decode(const char *in, size_t inlen, void *out, size_t outcap);

/* SHA-256 of n bytes as 64 lowercase hex characters and a NUL. Returns 0 or -EIO
 * (OpenSSL failed). */
int secret_sha256_hex(const void *data, size_t n, char out[65]);

/* HMAC-SHA256 of data under key into out. Returns 0 or -EIO. */
int secret_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                       uint8_t out[32]);

/* Overwrite n bytes with zeros in a way the compiler cannot drop. */
void secret_wipe(void *p, size_t n);

/*
 * API keys: what a mount (pockityfs) presents to pockityd. The whole key is shown
 * to the user once, at creation:
 *
 *     pky_<id>_<secret>      e.g. pky_k5w2...(20)_Xy9-...(43)
 *
 * <id> is SECRET_ID_CHARS base32 characters (the database key of the row, also
 * shown in listings); <secret> is 32 random bytes in base64url (43 characters).
 * The database stores only the id and apikey_hash(secret): the hex SHA-256 of a
 * domain-separation tag followed by the secret text.
 *
 * Why a fast hash and not argon2: the secret has 256 bits of entropy, so no
 * dictionary or brute-force attack on a leaked hash is possible, and a slow hash
 * would only cost CPU on every mount request (keys are checked on each session
 * renewal). Slow hashes exist for low-entropy, human-chosen passwords.
 */
#define APIKEY_PREFIX     "pky_"
#define APIKEY_ID_LEN     SECRET_ID_CHARS
#define APIKEY_SECRET_LEN 43                                          /* base64url of 32 bytes */
#define APIKEY_LEN        (4 + APIKEY_ID_LEN + 1 + APIKEY_SECRET_LEN) /* 68, excluding NUL */
#define APIKEY_HASH_LEN   64                                          /* hex, excluding NUL */

/* Make a new key: key_out receives the full key (keylen >= APIKEY_LEN + 1),
 * id_out its id and hash_out the hash to store. Returns 0, -ENOSPC when keylen
 * is too small, or an error of secret_random() / -EIO. Wipe key_out with
 * secret_wipe() once it has been sent. */
int apikey_generate(char *key_out, size_t keylen, char id_out[APIKEY_ID_LEN + 1],
                    char hash_out[APIKEY_HASH_LEN + 1]);

/* Split a key as presented by a client. Strict: exactly APIKEY_LEN bytes, the
 * prefix "pky_", an id of base32 characters, '_', then a canonical base64url
 * secret of APIKEY_SECRET_LEN characters; anything else (whitespace, another
 * prefix, a wrong length, other characters) gives -EINVAL. Returns 0 with id_out
 * and secret_out filled (NUL-terminated); the outputs are untouched on error. */
int apikey_parse(const char *key, char id_out[APIKEY_ID_LEN + 1],
                 char secret_out[APIKEY_SECRET_LEN + 1]);

/* The stored form of a secret (as parsed by apikey_parse). Returns 0, -EINVAL
 * for a secret that is not APIKEY_SECRET_LEN base64url characters, or -EIO. */
int apikey_hash(const char *secret, char hash_out[APIKEY_HASH_LEN + 1]);

/* Check a presented secret against a stored hash, in constant time. Returns 0
 * when it matches, 1 when it does not, -EINVAL when the secret or the stored
 * hash is malformed. */
int apikey_verify(const char *secret, const char *stored_hash);

#endif
