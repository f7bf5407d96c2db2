/* token: the signed, expiring session tokens that users get at login and send as
 * "Authorization: Bearer pks_...". */
#ifndef POCKITYD_TOKEN_H
#define POCKITYD_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A token reads
 *
 *     pks_<session_id>.<expires_at>.<mac>
 *
 * where session_id is 1..TOKEN_SESSION_ID_MAX characters of [a-z0-9_] (a
 * secret_id() such as "ses_..."), expires_at is unix seconds in canonical decimal
 * (no sign, no leading zero, > 0), and mac is the base64url (43 characters) of
 * HMAC-SHA256(key, "pks1|" session_id "|" expires_at).
 *
 * A valid signature only proves that pockityd issued the token and when it ends:
 * the caller must still look the session up in the database, so that logout,
 * password changes and suspensions revoke tokens before they expire.
 */
#define TOKEN_PREFIX         "pks_"
#define TOKEN_SESSION_ID_MAX 64
#define TOKEN_MAX_LEN        200 /* longest accepted token, excluding NUL */
#define TOKEN_SECRET_MIN     32  /* bytes of a configured secret */
#define TOKEN_SECRET_MAX     4096

/* The signing keys: the current one and, during a rotation, the previous one.
 * Tokens are always issued with the current key; both verify. Read-only once
 * set up, so any number of threads may share one; changing it (set_previous,
 * rotate) must not race with token_issue/token_verify. */
struct token_key {
    uint8_t current[32];
    uint8_t previous[32];
    bool has_previous;
};

/* Set k to the key derived from a configured secret (at least TOKEN_SECRET_MIN,
 * at most TOKEN_SECRET_MAX bytes), with no previous key. Every replica of pockityd
 * must be configured with the same secret, or tokens issued by one are refused by
 * the others. Returns 0, -EINVAL (NULL or too short/long secret), or -EIO. */
int token_key_init(struct token_key *k, const char *secret);

/* Set k to a random key, for when no secret is configured. Tokens then do not
 * survive a restart of pockityd (users must log in again) and a second replica
 * would refuse them: configure a secret for anything but a single test instance.
 * Returns 0 or an error of secret_random(). */
int token_key_random(struct token_key *k);

/* Also accept tokens signed with the key derived from secret (the previously
 * configured one). Same rules and returns as token_key_init. */
int token_key_set_previous(struct token_key *k, const char *secret);

/* Make the current key the previous one and the key of new_secret the current
 * one. Same returns as token_key_init; k is unchanged on error. */
int token_key_rotate(struct token_key *k, const char *new_secret);

/* Wipe the key material. */
void token_key_release(struct token_key *k);

/* Write the token of session_id valid until expires_at (unix seconds, > 0) into
 * out (outlen >= TOKEN_MAX_LEN + 1 is always enough). Returns 0, -EINVAL (bad
 * session id or expiry), -ENOSPC, or -EIO. */
int token_issue(const struct token_key *key, const char *session_id, int64_t expires_at, char *out,
                size_t outlen);

/* Check a token presented by a client, at time now (unix seconds). Returns:
 *   0           valid: session_id_out and *expires_out are filled;
 *   -EINVAL     malformed (parsed strictly: any deviation from the shape above,
 *               including a NULL or over-long token);
 *   -EACCES     well formed but signed by neither the current nor the previous key
 *               (forged or tampered);
 *   -ETIMEDOUT  genuine but expired (now >= expires_at); the outputs are filled, so
 *               the caller may clean the session up;
 *   -EIO        OpenSSL failed.
 * The signature is checked before the expiry, in constant time, against both keys.
 * session_id_out needs TOKEN_SESSION_ID_MAX + 1 bytes; expires_out may be NULL. */
int token_verify(const struct token_key *key, const char *token, int64_t now,
                 char session_id_out[TOKEN_SESSION_ID_MAX + 1], int64_t *expires_out);

#endif
