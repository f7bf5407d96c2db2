/* Unit tests for pockityd's security primitives: random ids, codecs, digests, API
 * keys (secret.c), argon2id passwords, policy and e-mails (password.c), and session
 * tokens (token.c). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "password.h"
#include "secret.h"
#include "token.h"

/* A low argon2 cost keeps the tests fast (and quick under valgrind). */
static const struct password_cost test_cost = {64, 1, 1};

static bool all_base32(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '2' && s[i] <= '7')))
            return false;
    return true;
}

/* ---- randomness and ids ---- */

static void test_random(void **state)
{
    uint8_t a[64], b[64], zero[64] = {0};

    assert_int_equal(secret_random(a, sizeof(a)), 0);
    assert_int_equal(secret_random(b, sizeof(b)), 0);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, zero, sizeof(a));
    assert_int_equal(secret_random(a, 0), 0);

    /* Larger than one getrandom() call may return at once. */
    size_t big = 1 << 20;
    uint8_t *buf = calloc(1, big);
    assert_non_null(buf);
    assert_int_equal(secret_random(buf, big), 0);
    size_t zeros = 0;
    for (size_t i = 0; i < big; i++)
        zeros += buf[i] == 0;
    assert_true(zeros > big / 512 && zeros < big / 128); /* about 1/256 */
    free(buf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_id_unique(void **state)
{
    enum {
        N = 100000,
        W = 4 + SECRET_ID_CHARS + 1
    };
    char *ids = malloc((size_t)N * W);
    char **ptrs = malloc(N * sizeof(*ptrs));
    int counts[256] = {0};

    assert_non_null(ids);
    assert_non_null(ptrs);
    for (size_t i = 0; i < N; i++) {
        char *id = ids + i * W;
        assert_int_equal(secret_id("usr_", id, W), 0);
        assert_int_equal(strlen(id), 4 + SECRET_ID_CHARS);
        assert_memory_equal(id, "usr_", 4);
        assert_true(all_base32(id + 4, SECRET_ID_CHARS));
        assert_true(secret_id_valid("usr_", id));
        for (size_t j = 4; j < 4 + SECRET_ID_CHARS; j++)
            counts[(unsigned char)id[j]]++;
        ptrs[i] = id;
    }
    qsort(ptrs, N, sizeof(*ptrs), cmp_str);
    for (size_t i = 1; i < N; i++)
        assert_string_not_equal(ptrs[i - 1], ptrs[i]);
    /* Every one of the 32 characters is used, about evenly (62500 each). */
    const char *alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    for (const char *c = alphabet; *c; c++) {
        assert_true(counts[(unsigned char)*c] > 60000);
        assert_true(counts[(unsigned char)*c] < 65000);
    }
    free(ptrs);
    free(ids);
}

/* Ordered ids: the same shape, sorting by creation time across milliseconds,
 * distinct within one (their 50 random bits), and made from several threads
 * (each with its own buffer of random bytes) without repeats. (Sorting is
 * checked across a pause only: the wall clock may be stepped back.) */
enum {
    ORDERED_THREADS = 4,
    ORDERED_N = 20000,
    ORDERED_W = 4 + SECRET_ID_CHARS + 1
};

static void *make_ordered(void *arg)
{
    char *ids = arg;
    for (size_t i = 0; i < ORDERED_N; i++)
        if (secret_id_ordered("rsv_", ids + i * ORDERED_W, ORDERED_W) != 0)
            return ids;
    return NULL;
}

static void test_id_ordered(void **state)
{
    char a[ORDERED_W], b[ORDERED_W];
    assert_int_equal(secret_id_ordered("rsv_", a, sizeof(a)), 0);
    assert_true(secret_id_valid("rsv_", a));
    struct timespec pause = {0, 2 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_int_equal(secret_id_ordered("rsv_", b, sizeof(b)), 0);
    assert_true(strcmp(a, b) < 0);
    assert_int_equal(secret_id_ordered("rsv_", a, 4 + SECRET_ID_CHARS), -ENOSPC);
    assert_int_equal(secret_id_ordered("RSV", a, sizeof(a)), -EINVAL);

    char *ids = malloc((size_t)ORDERED_THREADS * ORDERED_N * ORDERED_W);
    char **ptrs = malloc((size_t)ORDERED_THREADS * ORDERED_N * sizeof(*ptrs));
    assert_non_null(ids);
    assert_non_null(ptrs);
    pthread_t th[ORDERED_THREADS];
    for (size_t t = 0; t < ORDERED_THREADS; t++)
        assert_int_equal(
                pthread_create(&th[t], NULL, make_ordered, ids + t * ORDERED_N * ORDERED_W), 0);
    for (size_t t = 0; t < ORDERED_THREADS; t++) {
        void *failed = NULL;
        pthread_join(th[t], &failed);
        assert_null(failed);
    }
    size_t n = (size_t)ORDERED_THREADS * ORDERED_N;
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = ids + i * ORDERED_W;
        assert_true(secret_id_valid("rsv_", ptrs[i]));
    }
    qsort(ptrs, n, sizeof(*ptrs), cmp_str);
    for (size_t i = 1; i < n; i++)
        assert_string_not_equal(ptrs[i - 1], ptrs[i]);
    free(ptrs);
    free(ids);
}

static void test_id_errors(void **state)
{
    char out[64];

    assert_int_equal(secret_id("", out, sizeof(out)), 0);
    assert_int_equal(strlen(out), SECRET_ID_CHARS);
    assert_true(secret_id_valid("", out));
    assert_false(secret_id_valid("usr_", out));

    /* Exactly enough room, then one byte short. */
    assert_int_equal(secret_id("pkt_", out, 4 + SECRET_ID_CHARS + 1), 0);
    assert_int_equal(secret_id("pkt_", out, 4 + SECRET_ID_CHARS), -ENOSPC);
    assert_int_equal(secret_id("Usr_", out, sizeof(out)), -EINVAL);
    assert_int_equal(secret_id("us r", out, sizeof(out)), -EINVAL);
    assert_int_equal(secret_id("abcdefghijklmnopq", out, sizeof(out)), -EINVAL); /* 17 */
    assert_int_equal(secret_id("abcdefghijklmnop", out, sizeof(out)), 0);        /* 16 */
    assert_int_equal(secret_id(NULL, out, sizeof(out)), -EINVAL);

    assert_true(secret_id_valid("usr_", "usr_abcdefghijklmnopqrst"));
    assert_true(secret_id_valid("usr_", "usr_234567abcdefghijklm"
                                        "n"));
    assert_false(secret_id_valid("usr_", "usr_abcdefghijklmnopqrs"));   /* 19 */
    assert_false(secret_id_valid("usr_", "usr_abcdefghijklmnopqrstu")); /* 21 */
    assert_false(secret_id_valid("usr_", "usr_abcdefghijklmnopqrs1"));  /* '1' */
    assert_false(secret_id_valid("usr_", "usr_Abcdefghijklmnopqrst"));
    assert_false(secret_id_valid("usr_", "usr_abcdefghijklmnopqrs/"));
    assert_false(secret_id_valid("usr_", "pkt_abcdefghijklmnopqrst"));
    assert_false(secret_id_valid("usr_", NULL));
    assert_false(secret_id_valid("usr_", ""));
}

/* ---- comparison ---- */

static void test_equal(void **state)
{
    assert_true(secret_equal("abcdef", "abcdef", 6));
    assert_false(secret_equal("abcdef", "abcdeg", 6));
    assert_false(secret_equal("xbcdef", "abcdef", 6));
    assert_true(secret_equal("ab", "ac", 1));
    assert_true(secret_equal("", "", 0));

    assert_true(secret_streq("secret", "secret"));
    assert_true(secret_streq("", ""));
    assert_false(secret_streq("secret", "secreT"));
    assert_false(secret_streq("secret", "secret2"));
    assert_false(secret_streq("secret", "secre"));
    assert_false(secret_streq("", "a"));
    assert_false(secret_streq(NULL, "a"));
    assert_false(secret_streq("a", NULL));
    assert_false(secret_streq(NULL, NULL));
    /* Many near-identical pairs: a comparison of only part of the digests would
     * let some through. */
    for (int i = 0; i < 4000; i++) {
        char x[32], y[32];
        snprintf(x, sizeof(x), "token-%d", i);
        snprintf(y, sizeof(y), "token-%d", i + 1);
        assert_false(secret_streq(x, y));
        assert_true(secret_streq(x, x));
    }
}

/* ---- hex and base64url ---- */

static void test_hex(void **state)
{
    const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    uint8_t back[6];

    assert_int_equal(secret_hex_encode(bytes, sizeof(bytes), out, sizeof(out)), 0);
    assert_string_equal(out, "00017f80abff");
    assert_int_equal(secret_hex_encode(bytes, sizeof(bytes), out, 12), -ENOSPC);
    assert_int_equal(secret_hex_encode(bytes, 0, out, 1), 0);
    assert_string_equal(out, "");

    assert_int_equal(secret_hex_decode("00017f80abff", 12, back, sizeof(back)), 6);
    assert_memory_equal(back, bytes, 6);
    assert_int_equal(secret_hex_decode("", 0, back, 0), 0);
    assert_int_equal(secret_hex_decode("00017f80abff", 12, back, 5), -ENOSPC);
    assert_int_equal(secret_hex_decode("00017f80abf", 11, back, sizeof(back)), -EINVAL);
    assert_int_equal(secret_hex_decode("00017F80ABFF", 12, back, sizeof(back)), -EINVAL);
    assert_int_equal(secret_hex_decode("0g", 2, back, sizeof(back)), -EINVAL);
    assert_int_equal(secret_hex_decode("0 ", 2, back, sizeof(back)), -EINVAL);
    assert_int_equal(secret_hex_decode("0\0", 2, back, sizeof(back)), -EINVAL);

    /* Round trip of random data of every length up to 64. */
    for (size_t n = 0; n <= 64; n++) {
        uint8_t in[64], dec[64];
        char enc[129];
        assert_int_equal(secret_random(in, n), 0);
        assert_int_equal(secret_hex_encode(in, n, enc, sizeof(enc)), 0);
        assert_int_equal(strlen(enc), 2 * n);
        assert_int_equal(secret_hex_decode(enc, 2 * n, dec, sizeof(dec)), (ssize_t)n);
        assert_memory_equal(in, dec, n);
    }
}

static void check_b64(const char *plain, const char *want)
{
    char out[64];
    uint8_t back[64];
    size_t n = strlen(plain);

    assert_int_equal(secret_b64url_encode(plain, n, out, sizeof(out)), 0);
    assert_string_equal(out, want);
    assert_int_equal(strlen(want), SECRET_B64URL_LEN(n));
    assert_int_equal(secret_b64url_decode(want, strlen(want), back, sizeof(back)), (ssize_t)n);
    assert_memory_equal(back, plain, n);
}

static void test_b64url(void **state)
{
    /* RFC 4648 §10 vectors (unpadded). */
    check_b64("", "");
    check_b64("f", "Zg");
    check_b64("fo", "Zm8");
    check_b64("foo", "Zm9v");
    check_b64("foob", "Zm9vYg");
    check_b64("fooba", "Zm9vYmE");
    check_b64("foobar", "Zm9vYmFy");

    /* The URL alphabet: 0xfb 0xff is "+/8=" in standard base64. */
    const uint8_t urlbytes[] = {0xfb, 0xff};
    char out[8];
    uint8_t back[64];
    assert_int_equal(secret_b64url_encode(urlbytes, 2, out, sizeof(out)), 0);
    assert_string_equal(out, "-_8");
    assert_int_equal(secret_b64url_encode(urlbytes, 2, out, 3), -ENOSPC);
    assert_int_equal(secret_b64url_encode(urlbytes, 2, out, 4), 0);

    /* Strict decoding. */
    const char *bad[] = {"Zm9v=", "Zm8=",  "Zm+v", "Zm/v", "Zm9 v",   " Zm9v", "Zm9v\n",
                         "Z",     "Zm9vY", "Zh",   "Zm9",  "Zm9vYmF", "Zm.v",  "Zm9v\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(secret_b64url_decode(bad[i], strlen(bad[i]), back, sizeof(back)), -EINVAL);
    /* "Zh" and "Zm9" carry non-zero unused bits; "Zg" and "Zm8" are the canonical forms. */
    assert_int_equal(secret_b64url_decode("Zg", 2, back, sizeof(back)), 1);
    assert_int_equal(secret_b64url_decode("Zm8", 3, back, sizeof(back)), 2);
    /* An embedded NUL, passed through the length. */
    assert_int_equal(secret_b64url_decode("Zm\0v", 4, back, sizeof(back)), -EINVAL);
    assert_int_equal(secret_b64url_decode("Zm9vYmFy", 8, back, 5), -ENOSPC);

    for (size_t n = 0; n <= 64; n++) {
        uint8_t in[64], dec[64];
        char enc[100];
        assert_int_equal(secret_random(in, n), 0);
        assert_int_equal(secret_b64url_encode(in, n, enc, sizeof(enc)), 0);
        assert_int_equal(strlen(enc), SECRET_B64URL_LEN(n));
        assert_null(strpbrk(enc, "+/="));
        assert_int_equal(secret_b64url_decode(enc, strlen(enc), dec, sizeof(dec)), (ssize_t)n);
        assert_memory_equal(in, dec, n);
    }
}

/* ---- digests ---- */

static void test_digests(void **state)
{
    char hex[65];
    uint8_t mac[32];

    assert_int_equal(secret_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(secret_sha256_hex("", 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* RFC 4231 test case 2. */
    const char *data = "what do ya want for nothing?";
    assert_int_equal(secret_hmac_sha256("Jefe", 4, data, strlen(data), mac), 0);
    assert_int_equal(secret_hex_encode(mac, 32, hex, sizeof(hex)), 0);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    uint8_t w[8];
    memset(w, 0xaa, sizeof(w));
    secret_wipe(w, sizeof(w));
    for (size_t i = 0; i < sizeof(w); i++)
        assert_int_equal(w[i], 0);
    secret_wipe(NULL, 4);
}

/* ---- API keys ---- */

static void test_apikey_roundtrip(void **state)
{
    char key[APIKEY_LEN + 1], key2[APIKEY_LEN + 1];
    char id[APIKEY_ID_LEN + 1], id2[APIKEY_ID_LEN + 1];
    char hash[APIKEY_HASH_LEN + 1], hash2[APIKEY_HASH_LEN + 1];
    char pid[APIKEY_ID_LEN + 1], psecret[APIKEY_SECRET_LEN + 1];

    assert_int_equal(apikey_generate(key, sizeof(key), id, hash), 0);
    assert_int_equal(strlen(key), APIKEY_LEN);
    assert_int_equal(strlen(key), 68);
    assert_memory_equal(key, "pky_", 4);
    assert_memory_equal(key + 4, id, APIKEY_ID_LEN);
    assert_int_equal(key[24], '_');
    assert_true(all_base32(id, APIKEY_ID_LEN));
    assert_int_equal(strlen(hash), 64);

    assert_int_equal(apikey_parse(key, pid, psecret), 0);
    assert_string_equal(pid, id);
    assert_string_equal(psecret, key + 25);
    assert_int_equal(apikey_verify(psecret, hash), 0);

    /* The stored hash is SHA-256 over a tag and the secret, not the bare secret. */
    char bare[65];
    assert_int_equal(secret_sha256_hex(psecret, strlen(psecret), bare), 0);
    assert_string_not_equal(bare, hash);
    assert_int_equal(apikey_hash(psecret, hash2), 0);
    assert_string_equal(hash2, hash);

    /* Another key: another id, secret and hash, and neither verifies the other. */
    assert_int_equal(apikey_generate(key2, sizeof(key2), id2, hash2), 0);
    assert_string_not_equal(key, key2);
    assert_string_not_equal(id, id2);
    assert_string_not_equal(hash, hash2);
    assert_int_equal(apikey_verify(psecret, hash2), 1);

    char small[APIKEY_LEN];
    assert_int_equal(apikey_generate(small, sizeof(small), id2, hash2), -ENOSPC);
}

static void test_apikey_rejects(void **state)
{
    char key[APIKEY_LEN + 1], id[APIKEY_ID_LEN + 1], hash[APIKEY_HASH_LEN + 1];
    char pid[APIKEY_ID_LEN + 1], psecret[APIKEY_SECRET_LEN + 1];
    char bad[160];

    assert_int_equal(apikey_generate(key, sizeof(key), id, hash), 0);
    assert_int_equal(apikey_parse(key, pid, psecret), 0);

    /* Tampered secret: one character changed (still a valid shape). */
    strcpy(bad, psecret);
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    assert_int_equal(apikey_verify(bad, hash), 1);
    /* Tampered stored hash. */
    strcpy(bad, hash);
    bad[63] = bad[63] == '0' ? '1' : '0';
    assert_int_equal(apikey_verify(psecret, bad), 1);
    /* Malformed stored hashes and secrets. */
    assert_int_equal(apikey_verify(psecret, ""), -EINVAL);
    assert_int_equal(apikey_verify(psecret, NULL), -EINVAL);
    strcpy(bad, hash);
    bad[0] = 'G';
    assert_int_equal(apikey_verify(psecret, bad), -EINVAL);
    snprintf(bad, sizeof(bad), "%s0", hash);
    assert_int_equal(apikey_verify(psecret, bad), -EINVAL);
    assert_int_equal(apikey_verify("short", hash), -EINVAL);
    assert_int_equal(apikey_verify(NULL, hash), -EINVAL);
    snprintf(bad, sizeof(bad), "%s=", psecret);
    assert_int_equal(apikey_verify(bad, hash), -EINVAL);

    /* Parsing. */
    memset(pid, 'x', sizeof(pid));
    memset(psecret, 'x', sizeof(psecret));
    const char *prefixes[] = {"pkx_", "PKY_", "pks_", "pky-"};
    for (size_t i = 0; i < 4; i++) {
        strcpy(bad, key);
        memcpy(bad, prefixes[i], 4);
        assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    }
    /* The outputs are untouched on error. */
    assert_int_equal(pid[0], 'x');
    assert_int_equal(psecret[0], 'x');

    strcpy(bad, key);
    bad[APIKEY_LEN - 1] = '\0'; /* truncated */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    snprintf(bad, sizeof(bad), "%sA", key); /* one more character */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    snprintf(bad, sizeof(bad), " %s", key);
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    snprintf(bad, sizeof(bad), "%s\n", key);
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[30] = '\0'; /* a NUL in the middle: the key seen is only 30 bytes long */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[24] = '-'; /* separator */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[10] = '1'; /* not base32 */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[10] = 'A'; /* uppercase is not base32 here */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[40] = '+'; /* standard base64, not url */
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    strcpy(bad, key);
    bad[40] = ' ';
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    /* Unicode: two bytes of "é" in place of two secret characters (same length). */
    strcpy(bad, key);
    memcpy(bad + 40, "\xc3\xa9", 2);
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    /* A non-canonical last character (unused bits set): 'B' has its low bit set. */
    strcpy(bad, key);
    bad[APIKEY_LEN - 1] = 'B';
    assert_int_equal(apikey_parse(bad, pid, psecret), -EINVAL);
    assert_int_equal(apikey_parse("", pid, psecret), -EINVAL);
    assert_int_equal(apikey_parse(NULL, pid, psecret), -EINVAL);
    assert_int_equal(apikey_parse("pky_", pid, psecret), -EINVAL);

    /* A hand-built key of the right shape parses, and parse → hash is stable. */
    const char *handmade = "pky_abcdefghijklmnopqrst_"
                           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_int_equal(apikey_parse(handmade, pid, psecret), 0);
    assert_string_equal(pid, "abcdefghijklmnopqrst");
    assert_int_equal(apikey_hash(psecret, hash), 0);
    assert_int_equal(apikey_verify(psecret, hash), 0);
}

/* ---- passwords ---- */

static void test_password_roundtrip(void **state)
{
    char enc[PASSWORD_HASH_MAX], enc2[PASSWORD_HASH_MAX];
    struct password_cost c;

    assert_int_equal(password_set_cost(&test_cost), 0);
    password_get_cost(&c);
    assert_int_equal(c.m_kib, 64);

    assert_int_equal(password_hash("correct horse battery", enc, sizeof(enc)), 0);
    assert_memory_equal(enc, "$argon2id$v=19$m=64,t=1,p=1$", 28);
    assert_int_equal(password_verify("correct horse battery", enc), 0);
    assert_int_equal(password_verify("correct horse batterY", enc), 1);
    assert_int_equal(password_verify("correct horse battery ", enc), 1);
    assert_int_equal(password_verify("", enc), 1);
    assert_int_equal(password_needs_rehash(enc), 0);

    /* A fresh salt each time. */
    assert_int_equal(password_hash("correct horse battery", enc2, sizeof(enc2)), 0);
    assert_string_not_equal(enc, enc2);
    assert_int_equal(password_verify("correct horse battery", enc2), 0);

    /* Multibyte passwords are hashed as their bytes. */
    assert_int_equal(password_hash("p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac", enc, sizeof(enc)), 0);
    assert_int_equal(password_verify("p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac", enc), 0);
    assert_int_equal(password_verify("passw\xc3\xb6rd \xe2\x82\xac", enc), 1);

    assert_int_equal(password_hash("x", enc, 20), -ENOSPC);
    assert_int_equal(password_hash(NULL, enc, sizeof(enc)), -EINVAL);
    char *huge = malloc(PASSWORD_MAX_BYTES + 2);
    assert_non_null(huge);
    memset(huge, 'a', PASSWORD_MAX_BYTES + 1);
    huge[PASSWORD_MAX_BYTES + 1] = '\0';
    assert_int_equal(password_hash(huge, enc, sizeof(enc)), -EINVAL);
    huge[PASSWORD_MAX_BYTES] = '\0';
    assert_int_equal(password_hash(huge, enc, sizeof(enc)), 0);
    assert_int_equal(password_verify(huge, enc), 0);
    free(huge);

    /* Changing the cost: old hashes still verify and ask for a rehash. */
    struct password_cost other = {128, 2, 2};
    assert_int_equal(password_set_cost(&other), 0);
    assert_int_equal(password_needs_rehash(enc), 1);
    assert_int_equal(password_hash("another password", enc2, sizeof(enc2)), 0);
    assert_memory_equal(enc2, "$argon2id$v=19$m=128,t=2,p=2$", 29);
    assert_int_equal(password_verify("another password", enc2), 0);
    assert_int_equal(password_needs_rehash(enc2), 0);
    assert_int_equal(password_set_cost(&test_cost), 0);
}

static void test_password_reference_hashes(void **state)
{
    /* Made by the reference argon2 command-line tool, not by this code. */
    assert_int_equal(password_verify("correct horse battery",
                                     "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
                                     "wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L4"),
                     0);
    assert_int_equal(password_verify("correct horse battery",
                                     "$argon2id$v=19$m=64,t=2,p=2$c29tZXNhbHRzb21lc2FsdA$"
                                     "uAVXsrMM+mZ5G2ryARPVtpZaov+ngefVDKuvausM2kk"),
                     0);
    assert_int_equal(password_verify("p\xc3\xa4ssw\xc3\xb6rd \xe2\x82\xac",
                                     "$argon2id$v=19$m=32,t=1,p=1$c2FsdHNhbHRzYWx0$"
                                     "9reQRp17d2qfKu13Cnux7yS/I7nYtCURc3z5O+c21CQ"),
                     0);
    assert_int_equal(password_verify("correct horse batterz",
                                     "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
                                     "wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L4"),
                     1);
    /* A flipped bit in the stored hash. */
    assert_int_equal(password_verify("correct horse battery",
                                     "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
                                     "xZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L4"),
                     1);
    /* Unused bits set in the last character: not a canonical encoding. */
    assert_int_equal(password_verify("correct horse battery",
                                     "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
                                     "wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L5"),
                     -EINVAL);
}

static void test_password_bad_encoded(void **state)
{
    const char *good_tail = "$c29tZXNhbHRzb21lc2FsdA$wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L4";
    const char *bad_heads[] = {
            "$argon2i$v=19$m=64,t=1,p=1",       /* another variant */
            "$argon2d$v=19$m=64,t=1,p=1",       /* another variant */
            "$argon2id$v=16$m=64,t=1,p=1",      /* old version */
            "$argon2id$m=64,t=1,p=1",           /* no version */
            "$argon2id$v=19$m=064,t=1,p=1",     /* leading zero */
            "$argon2id$v=19$m=+64,t=1,p=1",     /* sign */
            "$argon2id$v=19$m=64,t=0,p=1",      /* t below 1 */
            "$argon2id$v=19$m=64,t=33,p=1",     /* t above the limit */
            "$argon2id$v=19$m=4,t=1,p=1",       /* m below 8 KiB */
            "$argon2id$v=19$m=2097152,t=1,p=1", /* 2 GiB: above the limit */
            "$argon2id$v=19$m=99999999,t=1,p=1",
            "$argon2id$v=19$m=64,t=1,p=0",
            "$argon2id$v=19$m=1024,t=1,p=17",
            "$argon2id$v=19$m=64,p=1,t=1", /* order */
            "$argon2id$v=19$m=64,t=1,p=1,x=1",
            "$ARGON2ID$v=19$m=64,t=1,p=1",
            " $argon2id$v=19$m=64,t=1,p=1",
    };
    char enc[512];

    for (size_t i = 0; i < sizeof(bad_heads) / sizeof(bad_heads[0]); i++) {
        snprintf(enc, sizeof(enc), "%s%s", bad_heads[i], good_tail);
        assert_int_equal(password_verify("correct horse battery", enc), -EINVAL);
        assert_int_equal(password_needs_rehash(enc), 1);
    }
    const char *bad[] = {
            "",
            "$",
            "$argon2id$",
            "$argon2id$v=19$m=64,t=1,p=1$",
            "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA",
            "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$",
            "$argon2id$v=19$m=64,t=1,p=1$c29tZ$wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXwNGZgBH/L4",
            "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkX!"
            "NGZgBH/L4",
            "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$wZeUqErRQM9fr7+3IJVQyFsb5QPhYeqkXw"
            "NGZgBH/L4$extra",
            "plain text password",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(password_verify("correct horse battery", bad[i]), -EINVAL);
    assert_int_equal(password_verify(NULL, bad[0]), -EINVAL);
    assert_int_equal(password_verify("x", NULL), -EINVAL);

    /* Over-long stored strings are refused before any decoding. */
    char *huge = malloc(100001);
    assert_non_null(huge);
    snprintf(huge, 100001, "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$");
    size_t n = strlen(huge);
    memset(huge + n, 'A', 100000 - n);
    huge[100000] = '\0';
    assert_int_equal(password_verify("x", huge), -EINVAL);
    free(huge);
}

static void test_password_cost(void **state)
{
    struct password_cost c;

    assert_int_equal(password_set_cost(NULL), 0);
    password_get_cost(&c);
    assert_int_equal(c.m_kib, 19456);
    assert_int_equal(c.t, 2);
    assert_int_equal(c.p, 1);

    struct password_cost bad[] = {
            {0, 1, 1},   {7, 1, 1},   {64, 0, 1}, {64, 1, 0},
            {64, 33, 1}, {64, 1, 17}, {15, 1, 2}, {PASSWORD_MAX_M_KIB + 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(password_set_cost(&bad[i]), -EINVAL);
    password_get_cost(&c);
    assert_int_equal(c.m_kib, 19456); /* unchanged */
    assert_int_equal(password_set_cost(&test_cost), 0);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_password_dummy(void **state)
{
    struct password_cost mid = {2048, 2, 1};
    char enc[PASSWORD_HASH_MAX];
    double real = 0, dummy = 0;

    assert_int_equal(password_dummy_verify("whatever password"), 1);
    assert_int_equal(password_dummy_verify(""), 1);
    assert_int_equal(password_dummy_verify(NULL), 1);

    /* The dummy costs about what a real verification costs (CPU time, so a busy
     * machine does not matter; the bound is loose for sanitizers and valgrind). */
    assert_int_equal(password_set_cost(&mid), 0);
    assert_int_equal(password_hash("the real password", enc, sizeof(enc)), 0);
    for (int i = 0; i < 3; i++) {
        double t0 = cpu_seconds();
        assert_int_equal(password_verify("a wrong password", enc), 1);
        double t1 = cpu_seconds();
        assert_int_equal(password_dummy_verify("a wrong password"), 1);
        double t2 = cpu_seconds();
        real += t1 - t0;
        dummy += t2 - t1;
    }
    assert_true(dummy > real / 2);
    assert_true(dummy < real * 2);
    /* And it follows the cost: a much cheaper cost is measurably faster. */
    assert_int_equal(password_set_cost(&test_cost), 0);
    double t0 = cpu_seconds();
    for (int i = 0; i < 3; i++)
        password_dummy_verify("a wrong password");
    assert_true(cpu_seconds() - t0 < dummy / 4);
}

static void check_policy(const char *pw, int want, const char *why_part)
{
    char why[128];

    assert_int_equal(password_check_policy(pw, why, sizeof(why)), want);
    if (want == 0)
        assert_string_equal(why, "");
    else
        assert_non_null(strstr(why, why_part));
}

static void test_password_policy(void **state)
{
    check_policy("123456789", -EINVAL, "at least 10 characters");
    check_policy("1234567890", 0, NULL);
    check_policy("correct horse battery staple", 0, NULL);
    check_policy("", -EINVAL, "at least 10");
    /* Ten 2-byte characters (é), ten 3-byte (€), ten 4-byte (emoji): code points count. */
    check_policy("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                 0, NULL);
    check_policy("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
                 "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac",
                 0, NULL);
    check_policy("\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91"
                 "\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91\xf0\x9f\x94\x91"
                 "\xf0\x9f\x94\x91\xf0\x9f\x94\x91",
                 0, NULL);
    /* Nine 2-byte characters are 18 bytes but only nine characters. */
    check_policy("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                 -EINVAL, "at least 10");

    /* Invalid UTF-8. */
    check_policy("abcdefghij\xff", -EINVAL, "not valid UTF-8");
    check_policy("abcdefghij\xc3", -EINVAL, "not valid UTF-8");             /* cut */
    check_policy("abcdefghij\xc3(", -EINVAL, "not valid UTF-8");            /* bad continuation */
    check_policy("abcdefghij\xc0\xaf", -EINVAL, "not valid UTF-8");         /* overlong '/' */
    check_policy("abcdefghij\xe0\x80\xaf", -EINVAL, "not valid UTF-8");     /* overlong */
    check_policy("abcdefghij\xed\xa0\x80", -EINVAL, "not valid UTF-8");     /* surrogate */
    check_policy("abcdefghij\xf4\x90\x80\x80", -EINVAL, "not valid UTF-8"); /* > U+10FFFF */
    check_policy("abcdefghij\x80", -EINVAL, "not valid UTF-8");
    check_policy("abcdefghij\xf8\x88\x80\x80\x80", -EINVAL, "not valid UTF-8");

    /* Control characters: C0, DEL and C1 (U+0085 encoded as c2 85). */
    check_policy("abcdefghij\t", -EINVAL, "control characters");
    check_policy("abcde\nfghij", -EINVAL, "control characters");
    check_policy("\x1b[31mabcdefghij", -EINVAL, "control characters");
    check_policy("abcdefghij\x7f", -EINVAL, "control characters");
    check_policy("abcdefghij\xc2\x85", -EINVAL, "control characters");
    check_policy("abcdefghij\xc2\xa0", 0, NULL); /* no-break space is fine */

    /* Length in bytes: 1024 accepted, 1025 refused. */
    char *pw = malloc(PASSWORD_MAX_BYTES + 2);
    assert_non_null(pw);
    memset(pw, 'a', PASSWORD_MAX_BYTES);
    pw[PASSWORD_MAX_BYTES] = '\0';
    check_policy(pw, 0, NULL);
    pw[PASSWORD_MAX_BYTES] = 'a';
    pw[PASSWORD_MAX_BYTES + 1] = '\0';
    check_policy(pw, -EINVAL, "at most 1024 bytes");
    free(pw);

    /* why may be NULL or tiny, and is cut safely. */
    assert_int_equal(password_check_policy("short", NULL, 0), -EINVAL);
    char tiny[5];
    assert_int_equal(password_check_policy("short", tiny, sizeof(tiny)), -EINVAL);
    assert_string_equal(tiny, "pass");
    assert_int_equal(password_check_policy(NULL, tiny, sizeof(tiny)), -EINVAL);
}

/* ---- e-mail addresses ---- */

static void test_email(void **state)
{
    static const struct {
        const char *in, *want;
    } ok[] = {
            {"  Alice@Example.COM ", "alice@example.com"},
            {"alice@example.com", "alice@example.com"},
            {"\talice+tag@mail.example.co.uk\r\n", "alice+tag@mail.example.co.uk"},
            {"first.last@sub-domain.example.io", "first.last@sub-domain.example.io"},
            {"a_b-c@x1.io", "a_b-c@x1.io"},
            {"x@xn--bcher-kva.example", "x@xn--bcher-kva.example"},
            {"1@2.example", "1@2.example"},
            {"o!#$%&*/=?^{|}~@example.com", "o!#$%&*/=?^{|}~@example.com"},
            {"a@b.c", "a@b.c"},
    };
    static const char *bad[] = {
            "",
            "   ",
            "a@b",
            "a@@b.c",
            "a@b@c.d",
            "a b@c.d",
            "@x.io",
            "x@.io",
            "x@io.",
            "x@io..com",
            "x@-io.com",
            "x@io-.com",
            "x@i_o.com",
            "x@1.2.3.4",
            "x@[127.0.0.1]",
            "alice",
            "alice@",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "\"alice\"@example.com",
            "o'brien@example.com",
            "al`ice@example.com",
            "al\tice@example.com",
            "alice@exa\x01mple.com",
            "al(ice)@example.com",
            "al,ice@example.com",
            "al\\ice@example.com",
            "j\xc3\xb6rg@example.com",
            "jorg@ex\xc3\xa4mple.com",
            "alice@example.com\n\x01",
    };
    char out[EMAIL_MAX_LEN + 1];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        memset(out, 0, sizeof(out));
        assert_int_equal(email_normalize(ok[i].in, out, sizeof(out)), 0);
        assert_string_equal(out, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (email_normalize(bad[i], out, sizeof(out)) != -EINVAL)
            fail_msg("accepted bad address '%s'", bad[i]);
    }

    /* In place. */
    char inplace[64] = " Bob@Example.ORG  ";
    assert_int_equal(email_normalize(inplace, inplace, sizeof(inplace)), 0);
    assert_string_equal(inplace, "bob@example.org");
    assert_int_equal(email_normalize("bob@example.org", out, 15), -ENOSPC);
    assert_int_equal(email_normalize("bob@example.org", out, 16), 0);
    assert_int_equal(email_normalize(NULL, out, sizeof(out)), -EINVAL);

    /* Local part: 64 bytes accepted, 65 refused. */
    char addr[400];
    memset(addr, 'l', 64);
    strcpy(addr + 64, "@example.com");
    assert_int_equal(email_normalize(addr, out, sizeof(out)), 0);
    memset(addr, 'l', 65);
    strcpy(addr + 65, "@example.com");
    assert_int_equal(email_normalize(addr, out, sizeof(out)), -EINVAL);

    /* Labels of 63 accepted, 64 refused. */
    strcpy(addr, "x@");
    memset(addr + 2, 'd', 63);
    strcpy(addr + 65, ".com");
    assert_int_equal(email_normalize(addr, out, sizeof(out)), 0);
    memset(addr + 2, 'd', 64);
    strcpy(addr + 66, ".com");
    assert_int_equal(email_normalize(addr, out, sizeof(out)), -EINVAL);

    /* Total length: 254 accepted, 255 refused. Domain of 63-byte labels. */
    size_t n;
    for (int total = 254; total <= 255; total++) {
        strcpy(addr, "abcdefghij@"); /* 11 bytes */
        n = 11;
        while (n < (size_t)total) {
            size_t label = (size_t)total - n > 64 ? 63 : (size_t)total - n - 1;
            if (n > 11)
                addr[n++] = '.';
            else
                label = 60;
            memset(addr + n, 'e', label);
            n += label;
        }
        addr[n] = '\0';
        assert_int_equal(strlen(addr), (size_t)total);
        assert_int_equal(email_normalize(addr, out, sizeof(out)), total == 254 ? 0 : -EINVAL);
    }
    /* Surrounding whitespace does not count toward the length. */
    char padded[600];
    memset(padded, ' ', 100);
    strcpy(padded + 100, out);
    strcat(padded, "   ");
    char out2[EMAIL_MAX_LEN + 1];
    assert_int_equal(email_normalize(padded, out2, sizeof(out2)), 0);
    assert_string_equal(out2, out);
}

/* ---- tokens ---- */

#define SECRET_A "0123456789abcdef0123456789abcdef-a"
#define SECRET_B "0123456789abcdef0123456789abcdef-b"

static void test_token_roundtrip(void **state)
{
    struct token_key k;
    char tok[TOKEN_MAX_LEN + 1], sid[TOKEN_SESSION_ID_MAX + 1];
    int64_t exp = 0;

    assert_int_equal(token_key_init(&k, SECRET_A), 0);
    assert_int_equal(token_issue(&k, "ses_abcdefghijklmnopqrst", 1700000000, tok, sizeof(tok)), 0);
    assert_memory_equal(tok, "pks_ses_abcdefghijklmnopqrst.1700000000.", 40);
    assert_int_equal(strlen(tok), 40 + 43);
    assert_int_equal(token_verify(&k, tok, 1699999999, sid, &exp), 0);
    assert_string_equal(sid, "ses_abcdefghijklmnopqrst");
    assert_int_equal(exp, 1700000000);
    assert_int_equal(token_verify(&k, tok, 0, sid, NULL), 0);

    /* Expired at exactly expires_at, and after; the outputs are still filled. */
    memset(sid, 0, sizeof(sid));
    exp = 0;
    assert_int_equal(token_verify(&k, tok, 1700000000, sid, &exp), -ETIMEDOUT);
    assert_string_equal(sid, "ses_abcdefghijklmnopqrst");
    assert_int_equal(exp, 1700000000);
    assert_int_equal(token_verify(&k, tok, INT64_MAX, sid, &exp), -ETIMEDOUT);

    /* Same inputs, same token (deterministic); another key, another token. */
    char tok2[TOKEN_MAX_LEN + 1];
    assert_int_equal(token_issue(&k, "ses_abcdefghijklmnopqrst", 1700000000, tok2, sizeof(tok2)),
                     0);
    assert_string_equal(tok, tok2);
    struct token_key kb;
    assert_int_equal(token_key_init(&kb, SECRET_B), 0);
    assert_int_equal(token_issue(&kb, "ses_abcdefghijklmnopqrst", 1700000000, tok2, sizeof(tok2)),
                     0);
    assert_string_not_equal(tok, tok2);
    assert_int_equal(token_verify(&k, tok2, 0, sid, &exp), -EACCES);

    /* The longest session id and the largest expiry fit in TOKEN_MAX_LEN. */
    char longsid[TOKEN_SESSION_ID_MAX + 1];
    memset(longsid, 'z', TOKEN_SESSION_ID_MAX);
    longsid[TOKEN_SESSION_ID_MAX] = '\0';
    assert_int_equal(token_issue(&k, longsid, INT64_MAX, tok, sizeof(tok)), 0);
    assert_int_equal(token_verify(&k, tok, 1, sid, &exp), 0);
    assert_string_equal(sid, longsid);
    assert_int_equal(exp, INT64_MAX);
    assert_int_equal(token_issue(&k, longsid, INT64_MAX, tok, strlen(tok)), -ENOSPC);

    /* Issue refuses bad inputs. */
    char toolong[TOKEN_SESSION_ID_MAX + 2];
    memset(toolong, 'z', TOKEN_SESSION_ID_MAX + 1);
    toolong[TOKEN_SESSION_ID_MAX + 1] = '\0';
    assert_int_equal(token_issue(&k, toolong, 1, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, "", 1, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, "ses.x", 1, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, "Ses_x", 1, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, "ses_x", 0, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, "ses_x", -5, tok, sizeof(tok)), -EINVAL);
    assert_int_equal(token_issue(&k, NULL, 5, tok, sizeof(tok)), -EINVAL);
    token_key_release(&k);
    token_key_release(&kb);
}

/* The format is pinned: recompute a token with OpenSSL directly. */
static void test_token_known_answer(void **state)
{
    struct token_key k;
    uint8_t dkey[32], mac[32];
    unsigned int len = 0;
    char tok[TOKEN_MAX_LEN + 1], want[TOKEN_MAX_LEN + 1], mac64[44];
    const char *label = "pockity-session-token-key-v1";
    const char *msg = "pks1|ses_k5w2abc|1800000000";

    assert_non_null(HMAC(EVP_sha256(), label, (int)strlen(label), (const unsigned char *)SECRET_A,
                         strlen(SECRET_A), dkey, &len));
    assert_non_null(
            HMAC(EVP_sha256(), dkey, 32, (const unsigned char *)msg, strlen(msg), mac, &len));
    assert_int_equal(secret_b64url_encode(mac, 32, mac64, sizeof(mac64)), 0);
    snprintf(want, sizeof(want), "pks_ses_k5w2abc.1800000000.%s", mac64);

    assert_int_equal(token_key_init(&k, SECRET_A), 0);
    assert_int_equal(token_issue(&k, "ses_k5w2abc", 1800000000, tok, sizeof(tok)), 0);
    assert_string_equal(tok, want);
}

static void test_token_tampered(void **state)
{
    struct token_key k;
    char tok[TOKEN_MAX_LEN + 1], bad[TOKEN_MAX_LEN + 1], sid[TOKEN_SESSION_ID_MAX + 1];
    char mac64[44];
    int64_t exp;

    assert_int_equal(token_key_init(&k, SECRET_A), 0);
    assert_int_equal(token_issue(&k, "ses_abcdefghijklmnopqrst", 1700000000, tok, sizeof(tok)), 0);
    const char *mac = strrchr(tok, '.') + 1;
    strcpy(mac64, mac);

    /* Each character of the signature changed to another canonical one. */
    for (size_t i = 0; i < 42; i++) {
        strcpy(bad, tok);
        char *c = bad + (mac - tok) + i;
        *c = *c == 'A' ? 'B' : 'A';
        assert_int_equal(token_verify(&k, bad, 0, sid, &exp), -EACCES);
    }
    /* Another session id, same signature. */
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrsu.1700000000.%s", mac64);
    assert_int_equal(token_verify(&k, bad, 0, sid, &exp), -EACCES);
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrs.1700000000.%s", mac64);
    assert_int_equal(token_verify(&k, bad, 0, sid, &exp), -EACCES);
    /* A later expiry, same signature: refused even though the time is fine. */
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrst.1700000001.%s", mac64);
    assert_int_equal(token_verify(&k, bad, 0, sid, &exp), -EACCES);
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrst.2700000000.%s", mac64);
    assert_int_equal(token_verify(&k, bad, 1700000005, sid, &exp), -EACCES);
    /* The signature is checked before the expiry: a forged expired token is -EACCES. */
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrst.1600000000.%s", mac64);
    assert_int_equal(token_verify(&k, bad, 1700000005, sid, &exp), -EACCES);
    /* A signature of all zero bytes. */
    snprintf(bad, sizeof(bad), "pks_ses_abcdefghijklmnopqrst.1700000000.%s",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_int_equal(token_verify(&k, bad, 0, sid, &exp), -EACCES);
}

static void check_malformed(const struct token_key *k, const char *tok)
{
    char sid[TOKEN_SESSION_ID_MAX + 1] = "untouched";
    int64_t exp = 42;

    if (token_verify(k, tok, 0, sid, &exp) != -EINVAL)
        fail_msg("accepted malformed token '%s'", tok ? tok : "(null)");
    assert_string_equal(sid, "untouched");
    assert_int_equal(exp, 42);
}

static void test_token_malformed(void **state)
{
    struct token_key k;
    char tok[TOKEN_MAX_LEN + 1], bad[4096];
    char mac64[44];

    assert_int_equal(token_key_init(&k, SECRET_A), 0);
    assert_int_equal(token_issue(&k, "ses_abc", 1700000000, tok, sizeof(tok)), 0);
    strcpy(mac64, strrchr(tok, '.') + 1);

    check_malformed(&k, NULL);
    check_malformed(&k, "");
    check_malformed(&k, "pks_");
    check_malformed(&k, "pks_ses_abc");
    check_malformed(&k, "pks_ses_abc.1700000000");
    check_malformed(&k, "pks_ses_abc.1700000000.");
    check_malformed(&k, "pks_.1700000000.x");
    check_malformed(&k, "pks_ses_abc..x");

#define WITH(fmt)                                                                                  \
    do {                                                                                           \
        snprintf(bad, sizeof(bad), fmt, mac64);                                                    \
        check_malformed(&k, bad);                                                                  \
    } while (0)
    WITH("pky_ses_abc.1700000000.%s");          /* prefix */
    WITH("PKS_ses_abc.1700000000.%s");          /* prefix */
    WITH(" pks_ses_abc.1700000000.%s");         /* leading space */
    WITH("pks_ses_abc.1700000000.%s ");         /* trailing space */
    WITH("pks_ses_abc.1700000000.%s\n");        /* trailing newline */
    WITH("pks_ses_abc.1700000000.%s.");         /* extra part */
    WITH("pks_ses_abc.1700000000.%sA");         /* long signature */
    WITH("pks_ses_abc.+1700000000.%s");         /* sign */
    WITH("pks_ses_abc.-1700000000.%s");         /* sign */
    WITH("pks_ses_abc.01700000000.%s");         /* leading zero */
    WITH("pks_ses_abc.0.%s");                   /* zero */
    WITH("pks_ses_abc.17e8.%s");                /* not decimal */
    WITH("pks_ses_abc. 1700000000.%s");         /* space */
    WITH("pks_ses_abc.9223372036854775808.%s"); /* INT64_MAX + 1 */
    WITH("pks_ses_abc.99999999999999999999.%s");
    WITH("pks_ses_ABC.1700000000.%s"); /* session id alphabet */
    WITH("pks_ses-abc.1700000000.%s");
    WITH("pks_ses\xc3\xa9.1700000000.%s"); /* unicode */
#undef WITH
    /* Signature: short, standard base64, padded, non-canonical last character. */
    strcpy(bad, tok);
    bad[strlen(bad) - 1] = '\0';
    check_malformed(&k, bad);
    strcpy(bad, tok);
    bad[strlen(bad) - 5] = '+';
    check_malformed(&k, bad);
    strcpy(bad, tok);
    bad[strlen(bad) - 5] = '/';
    check_malformed(&k, bad);
    snprintf(bad, sizeof(bad), "%s=", tok);
    check_malformed(&k, bad);
    strcpy(bad, tok);
    bad[strlen(bad) - 1] = 'B'; /* low bits set in the last of 43 characters */
    check_malformed(&k, bad);

    /* Session id of 65 characters; a token just over TOKEN_MAX_LEN; a huge one. */
    memset(bad, 0, sizeof(bad));
    strcpy(bad, "pks_");
    memset(bad + 4, 'a', TOKEN_SESSION_ID_MAX + 1);
    snprintf(bad + 4 + TOKEN_SESSION_ID_MAX + 1, 100, ".1700000000.%s", mac64);
    check_malformed(&k, bad);
    memset(bad, 'a', sizeof(bad) - 1);
    memcpy(bad, "pks_", 4);
    bad[sizeof(bad) - 1] = '\0';
    check_malformed(&k, bad);
    bad[TOKEN_MAX_LEN + 1] = '\0';
    check_malformed(&k, bad);

    /* Not confused by what it is not. */
    char sid[TOKEN_SESSION_ID_MAX + 1];
    assert_int_equal(token_verify(&k, tok, 0, sid, NULL), 0);
    assert_int_equal(token_verify(NULL, tok, 0, sid, NULL), -EINVAL);
    assert_int_equal(token_verify(&k, tok, 0, NULL, NULL), -EINVAL);
}

static void test_token_keys(void **state)
{
    struct token_key k, other;
    char tok_a[TOKEN_MAX_LEN + 1], tok_b[TOKEN_MAX_LEN + 1], tok_c[TOKEN_MAX_LEN + 1];
    char sid[TOKEN_SESSION_ID_MAX + 1];
    int64_t exp;

    /* Secrets shorter than 32 bytes are refused. */
    assert_int_equal(token_key_init(&k, "0123456789abcdef0123456789abcde"), -EINVAL);
    assert_int_equal(token_key_init(&k, ""), -EINVAL);
    assert_int_equal(token_key_init(&k, NULL), -EINVAL);
    assert_int_equal(token_key_init(&k, "0123456789abcdef0123456789abcdef"), 0);

    assert_int_equal(token_key_init(&k, SECRET_A), 0);
    assert_int_equal(token_issue(&k, "ses_one", 2000000000, tok_a, sizeof(tok_a)), 0);

    /* Rotation: new tokens use B; tokens of A still verify; A's key alone does not
     * verify B's tokens. */
    assert_int_equal(token_key_rotate(&k, SECRET_B), 0);
    assert_true(k.has_previous);
    assert_int_equal(token_issue(&k, "ses_two", 2000000000, tok_b, sizeof(tok_b)), 0);
    assert_int_equal(token_verify(&k, tok_a, 0, sid, &exp), 0);
    assert_string_equal(sid, "ses_one");
    assert_int_equal(token_verify(&k, tok_b, 0, sid, &exp), 0);
    assert_string_equal(sid, "ses_two");
    struct token_key only_a;
    assert_int_equal(token_key_init(&only_a, SECRET_A), 0);
    assert_int_equal(token_verify(&only_a, tok_b, 0, sid, &exp), -EACCES);

    /* The same state built from configuration: current B, previous A. */
    struct token_key cfg;
    assert_int_equal(token_key_init(&cfg, SECRET_B), 0);
    assert_false(cfg.has_previous);
    assert_int_equal(token_verify(&cfg, tok_a, 0, sid, &exp), -EACCES);
    assert_int_equal(token_key_set_previous(&cfg, SECRET_A), 0);
    assert_int_equal(token_verify(&cfg, tok_a, 0, sid, &exp), 0);
    assert_int_equal(token_verify(&cfg, tok_b, 0, sid, &exp), 0);
    assert_int_equal(token_key_set_previous(&cfg, "short"), -EINVAL);
    assert_false(cfg.has_previous);
    assert_int_equal(token_verify(&cfg, tok_a, 0, sid, &exp), -EACCES);

    /* A second rotation drops A. */
    assert_int_equal(token_key_rotate(&k, "a third secret of at least thirty-two bytes"), 0);
    assert_int_equal(token_verify(&k, tok_a, 0, sid, &exp), -EACCES);
    assert_int_equal(token_verify(&k, tok_b, 0, sid, &exp), 0);
    assert_int_equal(token_key_rotate(&k, "too short"), -EINVAL);
    assert_int_equal(token_verify(&k, tok_b, 0, sid, &exp), 0); /* unchanged */

    /* Random keys: each one different, refusing the others' tokens. */
    assert_int_equal(token_key_random(&other), 0);
    assert_false(other.has_previous);
    assert_int_equal(token_verify(&other, tok_a, 0, sid, &exp), -EACCES);
    assert_int_equal(token_verify(&other, tok_b, 0, sid, &exp), -EACCES);
    assert_int_equal(token_issue(&other, "ses_three", 2000000000, tok_c, sizeof(tok_c)), 0);
    assert_int_equal(token_verify(&other, tok_c, 0, sid, &exp), 0);
    assert_int_equal(token_verify(&k, tok_c, 0, sid, &exp), -EACCES);
    struct token_key other2;
    assert_int_equal(token_key_random(&other2), 0);
    assert_int_equal(token_verify(&other2, tok_c, 0, sid, &exp), -EACCES);

    /* Release wipes the key. */
    uint8_t zero[32] = {0};
    token_key_release(&other);
    assert_memory_equal(other.current, zero, 32);
    assert_false(other.has_previous);
    token_key_release(NULL);
    token_key_release(&k);
    token_key_release(&other2);
    token_key_release(&cfg);
    token_key_release(&only_a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_random),
            cmocka_unit_test(test_id_unique),
            cmocka_unit_test(test_id_errors),
            cmocka_unit_test(test_id_ordered),
            cmocka_unit_test(test_equal),
            cmocka_unit_test(test_hex),
            cmocka_unit_test(test_b64url),
            cmocka_unit_test(test_digests),
            cmocka_unit_test(test_apikey_roundtrip),
            cmocka_unit_test(test_apikey_rejects),
            cmocka_unit_test(test_password_roundtrip),
            cmocka_unit_test(test_password_reference_hashes),
            cmocka_unit_test(test_password_bad_encoded),
            cmocka_unit_test(test_password_cost),
            cmocka_unit_test(test_password_dummy),
            cmocka_unit_test(test_password_policy),
            cmocka_unit_test(test_email),
            cmocka_unit_test(test_token_roundtrip),
            cmocka_unit_test(test_token_known_answer),
            cmocka_unit_test(test_token_tampered),
            cmocka_unit_test(test_token_malformed),
            cmocka_unit_test(test_token_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
