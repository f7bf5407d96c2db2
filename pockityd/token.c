/* token: issue and verify signed, expiring session tokens (see token.h). */
#include "token.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "secret.h"

#define TOKEN_MAC_CHARS 43 /* base64url of 32 bytes */
#define TOKEN_EXP_MAX   19 /* digits of INT64_MAX */

/* The secret is stretched into a fixed-size key under a label of its own, so
 * the configured string is never used raw and a future token version can derive
 * an unrelated key from the same secret. */
#define TOKEN_KEY_LABEL "pockity-session-token-key-v1"

static int derive(const char *secret, uint8_t out[32])
{
    size_t len;

    if (!secret)
        return -EINVAL;
    len = strnlen(secret, TOKEN_SECRET_MAX + 1);
    if (len < TOKEN_SECRET_MIN || len > TOKEN_SECRET_MAX)
        return -EINVAL;
    return secret_hmac_sha256(TOKEN_KEY_LABEL, strlen(TOKEN_KEY_LABEL), secret, len, out);
}

int token_key_init(struct token_key *k, const char *secret)
{
    uint8_t key[32];
    int rc = derive(secret, key);

    if (rc < 0)
        return rc;
    token_key_release(k);
    memcpy(k->current, key, sizeof(key));
    secret_wipe(key, sizeof(key));
    return 0;
}

int token_key_random(struct token_key *k)
{
    uint8_t key[32];
    int rc = secret_random(key, sizeof(key));

    if (rc < 0)
        return rc;
    token_key_release(k);
    memcpy(k->current, key, sizeof(key));
    secret_wipe(key, sizeof(key));
    return 0;
}

int token_key_set_previous(struct token_key *k, const char *secret)
{
    int rc = derive(secret, k->previous);

    if (rc < 0) {
        secret_wipe(k->previous, sizeof(k->previous));
        k->has_previous = false;
        return rc;
    }
    k->has_previous = true;
    return 0;
}

int token_key_rotate(struct token_key *k, const char *new_secret)
{
    uint8_t key[32];
    int rc = derive(new_secret, key);

    if (rc < 0)
        return rc;
    memcpy(k->previous, k->current, sizeof(k->previous));
    k->has_previous = true;
    memcpy(k->current, key, sizeof(key));
    secret_wipe(key, sizeof(key));
    return 0;
}

void token_key_release(struct token_key *k)
{
    if (!k)
        return;
    secret_wipe(k, sizeof(*k));
    k->has_previous = false;
}

static bool session_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > TOKEN_SESSION_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* The MAC of one token under one key; exp is the decimal text of the expiry. */
static int token_mac(const uint8_t key[32], const char *sid, size_t sidlen, const char *exp,
                     size_t explen, uint8_t out[32])
{
    char msg[5 + TOKEN_SESSION_ID_MAX + 1 + TOKEN_EXP_MAX];
    size_t n = 0;

    memcpy(msg, "pks1|", 5);
    n += 5;
    memcpy(msg + n, sid, sidlen);
    n += sidlen;
    msg[n++] = '|';
    memcpy(msg + n, exp, explen);
    n += explen;
    return secret_hmac_sha256(key, 32, msg, n, out);
}

int token_issue(const struct token_key *key, const char *session_id, int64_t expires_at, char *out,
                size_t outlen)
{
    char exp[TOKEN_EXP_MAX + 1];
    char mac64[TOKEN_MAC_CHARS + 1];
    uint8_t mac[32];
    size_t sidlen;
    int rc, n;

    if (!key || !session_id || !out)
        return -EINVAL;
    sidlen = strnlen(session_id, TOKEN_SESSION_ID_MAX + 1);
    if (!session_id_valid(session_id, sidlen) || expires_at <= 0)
        return -EINVAL;
    snprintf(exp, sizeof(exp), "%" PRId64, expires_at);
    rc = token_mac(key->current, session_id, sidlen, exp, strlen(exp), mac);
    if (rc < 0)
        return rc;
    secret_b64url_encode(mac, sizeof(mac), mac64, sizeof(mac64));
    n = snprintf(out, outlen, TOKEN_PREFIX "%s.%s.%s", session_id, exp, mac64);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            out[0] = '\0';
        return -ENOSPC;
    }
    return 0;
}

/* Parse canonical positive decimal: digits only, no leading zero, fits int64. */
static bool parse_expiry(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;

    if (len == 0 || len > TOKEN_EXP_MAX || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (INT64_MAX - (s[i] - '0')) / 10)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int token_verify(const struct token_key *key, const char *token, int64_t now,
                 char session_id_out[TOKEN_SESSION_ID_MAX + 1], int64_t *expires_out)
{
    const char *sid, *exp, *mac64, *dot1, *dot2;
    size_t len, sidlen, explen;
    uint8_t mac[32], want[32];
    int64_t expires;
    int ok;

    if (!key || !token || !session_id_out)
        return -EINVAL;
    len = strnlen(token, TOKEN_MAX_LEN + 1);
    if (len > TOKEN_MAX_LEN || len < 4 || memcmp(token, TOKEN_PREFIX, 4) != 0)
        return -EINVAL;
    sid = token + 4;
    dot1 = memchr(sid, '.', len - 4);
    if (!dot1)
        return -EINVAL;
    exp = dot1 + 1;
    dot2 = memchr(exp, '.', (size_t)(token + len - exp));
    if (!dot2)
        return -EINVAL;
    mac64 = dot2 + 1;
    sidlen = (size_t)(dot1 - sid);
    explen = (size_t)(dot2 - exp);
    if (!session_id_valid(sid, sidlen) || !parse_expiry(exp, explen, &expires))
        return -EINVAL;
    if ((size_t)(token + len - mac64) != TOKEN_MAC_CHARS ||
        secret_b64url_decode(mac64, TOKEN_MAC_CHARS, mac, sizeof(mac)) != (ssize_t)sizeof(mac))
        return -EINVAL;

    /* Check both keys whatever the first gives, so the timing does not tell
     * which key (if any) signed the token. */
    if (token_mac(key->current, sid, sidlen, exp, explen, want) < 0)
        return -EIO;
    ok = CRYPTO_memcmp(mac, want, sizeof(mac)) == 0;
    if (key->has_previous) {
        if (token_mac(key->previous, sid, sidlen, exp, explen, want) < 0)
            return -EIO;
        ok |= CRYPTO_memcmp(mac, want, sizeof(mac)) == 0;
    }
    secret_wipe(want, sizeof(want));
    if (!ok)
        return -EACCES;

    memcpy(session_id_out, sid, sidlen);
    session_id_out[sidlen] = '\0';
    if (expires_out)
        *expires_out = expires;
    return now >= expires ? -ETIMEDOUT : 0;
}
