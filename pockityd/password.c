/* password: argon2id hashing, the password policy and e-mail normalisation (see
 * password.h). */
#include "password.h"

#include <argon2.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "secret.h"

#define SALT_BYTES      16
#define HASH_BYTES      32
#define ENCODED_MAX_LEN 256 /* longest stored hash we even look at */

static pthread_mutex_t cost_lock = PTHREAD_MUTEX_INITIALIZER;
static struct password_cost current_cost = {PASSWORD_DEFAULT_M_KIB, PASSWORD_DEFAULT_T,
                                            PASSWORD_DEFAULT_P}; /* cost_lock */

static bool cost_valid(const struct password_cost *c)
{
    return c->p >= 1 && c->p <= PASSWORD_MAX_P && c->t >= 1 && c->t <= PASSWORD_MAX_T &&
           c->m_kib >= 8 * c->p && c->m_kib <= PASSWORD_MAX_M_KIB;
}

int password_set_cost(const struct password_cost *cost)
{
    struct password_cost c = {PASSWORD_DEFAULT_M_KIB, PASSWORD_DEFAULT_T, PASSWORD_DEFAULT_P};

    if (cost)
        c = *cost;
    if (!cost_valid(&c))
        return -EINVAL;
    pthread_mutex_lock(&cost_lock);
    current_cost = c;
    pthread_mutex_unlock(&cost_lock);
    return 0;
}

void password_get_cost(struct password_cost *cost)
{
    pthread_mutex_lock(&cost_lock);
    *cost = current_cost;
    pthread_mutex_unlock(&cost_lock);
}

static int argon2_errno(int rc)
{
    switch (rc) {
    case ARGON2_OK:
        return 0;
    case ARGON2_MEMORY_ALLOCATION_ERROR:
    case ARGON2_THREAD_FAIL:
        return -ENOMEM;
    case ARGON2_OUTPUT_TOO_SHORT:
    case ARGON2_ENCODING_FAIL:
        return -ENOSPC;
    default:
        return -EINVAL;
    }
}

int password_hash(const char *password, char *out, size_t outlen)
{
    struct password_cost c;
    uint8_t salt[SALT_BYTES];
    size_t len;
    int rc;

    if (!password || !out)
        return -EINVAL;
    len = strnlen(password, PASSWORD_MAX_BYTES + 1);
    if (len > PASSWORD_MAX_BYTES)
        return -EINVAL;
    password_get_cost(&c);
    if (outlen < argon2_encodedlen(c.t, c.m_kib, c.p, SALT_BYTES, HASH_BYTES, Argon2_id))
        return -ENOSPC;
    rc = secret_random(salt, sizeof(salt));
    if (rc < 0)
        return rc;
    rc = argon2id_hash_encoded(c.t, c.m_kib, c.p, password, len, salt, sizeof(salt), HASH_BYTES,
                               out, outlen);
    return argon2_errno(rc);
}

/* Read a canonical decimal (no sign, no leading zero) of at most 7 digits
 * from *s, advancing it. */
static bool parse_uint(const char **s, uint32_t *out)
{
    const char *p = *s;
    uint32_t v = 0;
    int n = 0;

    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return false;
    while (*p >= '0' && *p <= '9' && n < 8) {
        v = v * 10 + (uint32_t)(*p - '0');
        p++;
        n++;
    }
    if (n == 0 || n > 7)
        return false;
    *out = v;
    *s = p;
    return true;
}

static bool expect(const char **s, const char *lit)
{
    size_t n = strlen(lit);

    if (strncmp(*s, lit, n) != 0)
        return false;
    *s += n;
    return true;
}

/* Check the shape "$argon2id$v=19$m=M,t=T,p=P$" of an encoded hash and read its
 * cost; libargon2 checks the salt and hash parts that follow. */
static bool parse_encoded(const char *encoded, struct password_cost *c)
{
    const char *s = encoded;

    if (strnlen(encoded, ENCODED_MAX_LEN + 1) > ENCODED_MAX_LEN)
        return false;
    if (!expect(&s, "$argon2id$v=19$m=") || !parse_uint(&s, &c->m_kib) || !expect(&s, ",t=") ||
        !parse_uint(&s, &c->t) || !expect(&s, ",p=") || !parse_uint(&s, &c->p) || !expect(&s, "$"))
        return false;
    return cost_valid(c);
}

int password_verify(const char *password, const char *encoded)
{
    struct password_cost c;
    int rc;

    if (!password || !encoded || !parse_encoded(encoded, &c))
        return -EINVAL;
    rc = argon2id_verify(encoded, password, strlen(password));
    if (rc == ARGON2_VERIFY_MISMATCH)
        return 1;
    rc = argon2_errno(rc);
    return rc == -ENOSPC ? -EINVAL : rc;
}

/* The hash that logins of unknown e-mails are checked against: made at the
 * current cost on first use (and again after the cost changes), so those logins
 * take exactly the path of a real one: decode, hash, compare. */
static char dummy_encoded[PASSWORD_HASH_MAX]; /* cost_lock */
static struct password_cost dummy_cost;       /* cost_lock; all zero until made */

static bool same_cost(const struct password_cost *a, const struct password_cost *b)
{
    return a->m_kib == b->m_kib && a->t == b->t && a->p == b->p;
}

static int dummy_hash(char out[PASSWORD_HASH_MAX])
{
    struct password_cost c;
    uint8_t pw[32], salt[SALT_BYTES];
    int rc;

    pthread_mutex_lock(&cost_lock);
    c = current_cost;
    if (same_cost(&dummy_cost, &c)) {
        memcpy(out, dummy_encoded, PASSWORD_HASH_MAX);
        pthread_mutex_unlock(&cost_lock);
        return 0;
    }
    pthread_mutex_unlock(&cost_lock);

    /* No one knows the password of the dummy hash. */
    rc = secret_random(pw, sizeof(pw));
    if (rc == 0)
        rc = secret_random(salt, sizeof(salt));
    if (rc < 0)
        return rc;
    rc = argon2id_hash_encoded(c.t, c.m_kib, c.p, pw, sizeof(pw), salt, sizeof(salt), HASH_BYTES,
                               out, PASSWORD_HASH_MAX);
    secret_wipe(pw, sizeof(pw));
    if (rc != ARGON2_OK)
        return argon2_errno(rc);
    pthread_mutex_lock(&cost_lock);
    if (same_cost(&current_cost, &c)) {
        memcpy(dummy_encoded, out, PASSWORD_HASH_MAX);
        dummy_cost = c;
    }
    pthread_mutex_unlock(&cost_lock);
    return 0;
}

int password_dummy_verify(const char *password)
{
    char encoded[PASSWORD_HASH_MAX];
    int rc = dummy_hash(encoded);

    if (rc < 0)
        return rc;
    rc = password_verify(password ? password : "", encoded);
    return rc < 0 ? rc : 1;
}

int password_needs_rehash(const char *encoded)
{
    struct password_cost have, want;

    if (!encoded || !parse_encoded(encoded, &have))
        return 1;
    password_get_cost(&want);
    return have.m_kib != want.m_kib || have.t != want.t || have.p != want.p;
}

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

/* Decode one UTF-8 sequence at s (len bytes left). Returns its length and sets
 * *cp, or 0 for an invalid sequence (overlong, surrogate, > U+10FFFF, cut). */
static size_t utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char b = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    uint32_t v;

    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xc2 && b <= 0xdf) {
        n = 2;
        v = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 3;
        v = b & 0x0f;
        if (b == 0xe0)
            lo = 0xa0; /* overlong */
        else if (b == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4;
        v = b & 0x07;
        if (b == 0xf0)
            lo = 0x90; /* overlong */
        else if (b == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = s[i];
        if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xbf))
            return 0;
        v = v << 6 | (c & 0x3f);
    }
    *cp = v;
    return n;
}

int password_check_policy(const char *password, char *why, size_t whylen)
{
    const unsigned char *s = (const unsigned char *)password;
    size_t len, chars = 0;
    char msg[96];

    set_why(why, whylen, "");
    if (!password) {
        set_why(why, whylen, "password is missing");
        return -EINVAL;
    }
    len = strnlen(password, PASSWORD_MAX_BYTES + 1);
    if (len > PASSWORD_MAX_BYTES) {
        snprintf(msg, sizeof(msg), "password must be at most %d bytes", PASSWORD_MAX_BYTES);
        set_why(why, whylen, msg);
        return -EINVAL;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0) {
            set_why(why, whylen, "password is not valid UTF-8");
            return -EINVAL;
        }
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
            set_why(why, whylen, "password must not contain control characters");
            return -EINVAL;
        }
        i += n;
        chars++;
    }
    if (chars < PASSWORD_MIN_CHARS) {
        snprintf(msg, sizeof(msg), "password must be at least %d characters", PASSWORD_MIN_CHARS);
        set_why(why, whylen, msg);
        return -EINVAL;
    }
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* RFC 5322 atext without the quote characters ' and `. */
static bool is_local_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&*+-/=?^_{|}~", c);
}

static bool local_valid(const char *s, size_t len)
{
    if (len == 0 || len > 64 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (s[i] == '\0' || !is_local_char(s[i])) {
            return false;
        }
    }
    return true;
}

static bool domain_valid(const char *s, size_t len)
{
    size_t start = 0, labels = 0;
    bool digits_only = true;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            size_t n = i - start;
            if (n == 0 || n > 63 || s[start] == '-' || s[i - 1] == '-')
                return false;
            labels++;
            if (i < len) {
                start = i + 1;
                digits_only = true;
            }
        } else if ((s[i] >= 'a' && s[i] <= 'z') || s[i] == '-') {
            digits_only = false;
        } else if (!(s[i] >= '0' && s[i] <= '9')) {
            return false;
        }
    }
    return labels >= 2 && !digits_only;
}

int email_normalize(const char *in, char *out, size_t outlen)
{
    char buf[EMAIL_MAX_LEN + 1];
    const char *at;
    size_t start = 0, end, len;

    if (!in || !out)
        return -EINVAL;
    /* Bound the scan: allow generous whitespace around a maximal address. */
    end = strnlen(in, 4096);
    if (end == 4096)
        return -EINVAL;
    while (start < end && is_space(in[start]))
        start++;
    while (end > start && is_space(in[end - 1]))
        end--;
    len = end - start;
    if (len == 0 || len > EMAIL_MAX_LEN)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = in[start + i];
        buf[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    buf[len] = '\0';
    at = memchr(buf, '@', len);
    if (!at || memchr(at + 1, '@', len - (size_t)(at - buf) - 1))
        return -EINVAL;
    if (!local_valid(buf, (size_t)(at - buf)) ||
        !domain_valid(at + 1, len - (size_t)(at - buf) - 1))
        return -EINVAL;
    if (outlen < len + 1)
        return -ENOSPC;
    memcpy(out, buf, len + 1);
    return 0;
}
