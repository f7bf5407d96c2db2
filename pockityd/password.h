/* password: what a login checks — argon2id password hashing and verification, the
 * password policy, and the normal form of e-mail addresses. */
#ifndef POCKITYD_PASSWORD_H
#define POCKITYD_PASSWORD_H

#include <stddef.h>
#include <stdint.h>

/* The cost of new hashes. The default is OWASP's minimum for argon2id (19 MiB,
 * 2 passes, 1 lane): about 30-50 ms of one core per login here, so a 2-core
 * machine still serves dozens of logins a second. Existing hashes keep the cost they were made with
 * (it is written in the encoded string). */
struct password_cost {
    uint32_t m_kib; /* memory in KiB: 8 * p .. PASSWORD_MAX_M_KIB */
    uint32_t t;     /* passes: 1 .. PASSWORD_MAX_T */
    uint32_t p;     /* lanes (threads): 1 .. PASSWORD_MAX_P */
};

#define PASSWORD_DEFAULT_M_KIB 19456
#define PASSWORD_DEFAULT_T     2
#define PASSWORD_DEFAULT_P     1
/* Limits of both new costs and the costs read from stored hashes, so a corrupt or
 * planted hash cannot make a login allocate gigabytes or run for minutes. */
#define PASSWORD_MAX_M_KIB 1048576 /* 1 GiB */
#define PASSWORD_MAX_T     32
#define PASSWORD_MAX_P     16

/* Size of a buffer that holds any hash password_hash() makes, with its NUL. */
#define PASSWORD_HASH_MAX 128

/* Policy: at least PASSWORD_MIN_CHARS characters (Unicode code points), at most
 * PASSWORD_MAX_BYTES bytes of UTF-8. */
#define PASSWORD_MIN_CHARS 10
#define PASSWORD_MAX_BYTES 1024

/* Set the cost of new hashes (NULL restores the defaults). Thread-safe, but meant
 * for start-up (from configuration) and tests (a low cost keeps them fast).
 * Returns 0, or -EINVAL for a cost outside the limits (nothing changes then). */
int password_set_cost(const struct password_cost *cost);

/* The cost of new hashes. */
void password_get_cost(struct password_cost *cost);

/* Hash password with argon2id, a fresh random 16-byte salt and the current cost,
 * into out as the standard encoded string
 * "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>" (unpadded base64). The password
 * is hashed as bytes: it is not Unicode-normalised. Returns 0, -EINVAL (NULL or a
 * password longer than PASSWORD_MAX_BYTES), -ENOSPC (outlen too small;
 * PASSWORD_HASH_MAX is enough), -ENOMEM, or -EIO. */
int password_hash(const char *password, char *out, size_t outlen);

/* Check password against an encoded argon2id hash, in time that does not depend
 * on where they differ. Returns 0 when it matches, 1 when it does not, -EINVAL
 * when encoded is not a well-formed argon2id v=19 hash within the cost limits, or
 * -ENOMEM. */
int password_verify(const char *password, const char *encoded);

/* Spend the time of a password_verify() at the current cost, for a login whose
 * e-mail matches no user, so response times do not tell which addresses have an
 * account: it verifies password against a hash of an unknown random password,
 * made once per cost (so the first call after start-up or a change of cost takes
 * twice as long). Returns 1 (no match), or -ENOMEM (or another negative errno)
 * when it could not run. */
int password_dummy_verify(const char *password);

/* Whether a hash was made with another cost than the current one (or is
 * malformed), so it should be replaced by a fresh password_hash() after a
 * successful login. Returns 1 or 0. */
int password_needs_rehash(const char *encoded);

/* Check a new password against the policy: valid UTF-8 (no overlong forms, no
 * surrogates), no control characters (C0, DEL, C1; spaces and other printable
 * characters are fine), at least PASSWORD_MIN_CHARS code points and at most
 * PASSWORD_MAX_BYTES bytes. Returns 0, or -EINVAL with a reason for the user in
 * why (e.g. "password must be at least 10 characters"); why may be NULL. The
 * caller must refuse passwords with an embedded NUL before this (jansson does by
 * default), as a C string ends there. */
int password_check_policy(const char *password, char *why, size_t whylen);

/* The longest normalised address (RFC 5321), excluding NUL. */
#define EMAIL_MAX_LEN 254

/* Normalise an e-mail address for storage and lookup: trim ASCII whitespace at
 * both ends and lower-case it. We treat whole addresses as case-insensitive
 * (Alice@Example.com and alice@example.com are one account), which is what
 * nearly every mail system does even though RFC 5321 lets the local part be
 * case-sensitive. Then check a sane shape: exactly one '@'; a local part of 1..64
 * bytes of letters, digits and !#$%&'*+-/=?^_`{|}~ with dots only between
 * other characters; a domain of at least two dot-separated labels of 1..63
 * characters of [a-z0-9-], not starting or ending with '-', and a top-level
 * label that is not all digits; at most EMAIL_MAX_LEN bytes. Quoted local parts,
 * IP literals, comments and non-ASCII addresses are refused (international
 * domains must be given in their xn-- form). in and out may be the same buffer.
 * Returns 0, -EINVAL for an unacceptable address, or -ENOSPC when outlen is too
 * small (EMAIL_MAX_LEN + 1 is always enough). */
int email_normalize(const char *in, char *out, size_t outlen);

#endif
