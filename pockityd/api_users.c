/* api_users: user accounts — registration, verification of the address by a
 * code sent by mail, login (rate limited in the shared database), logout, the
 * signed-in user, password changes, and the administrators' user routes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "keycache.h"
#include "log.h"
#include "mail.h"
#include "password.h"
#include "routes.h"
#include "secret.h"

#define NAME_MAX_BYTES   100  /* a user's display name, after trimming */
#define NAME_INPUT_MAX   1000 /* what we read before trimming */
#define EMAIL_INPUT_MAX  320  /* an address before trimming and normalisation */
#define REASON_MAX_BYTES 500  /* an admin's note on a suspension */
/* Sign-ups allowed per client address and window: this many times
 * login_max_attempts (100 per 15 minutes by default). */
#define REGISTER_FACTOR 10
#define SCOPE_MAX       320 /* "login:acct:" + an address */
#define LOGIN_FAILED    "invalid email or password"

/* Email verification codes: VERIFY_DIGITS decimal digits, valid VERIFY_TTL
 * seconds, VERIFY_GUESSES wrong guesses per code, and at most VERIFY_SENDS
 * codes mailed per user and login window (the one sent at sign-up included). */
#define VERIFY_DIGITS  8
#define VERIFY_TTL     1800
#define VERIFY_GUESSES 5
#define VERIFY_SENDS   3
#define VERIFY_RESEND  "POST /v1/auth/verify/resend"

/* The columns user_json() reads, in order, from "users u". */
#define USER_COLS "u.id, u.email, u.name, u.role, u.status, u.email_verified, u.created_at"
/* Column 7 for user_json(..., true). Pockets being deleted no longer count. */
#define POCKETS_COUNT                                                                              \
    "(SELECT COUNT(*) FROM pockets p WHERE p.user_id = u.id AND p.status <> 'deleting')"

/* The admin list's filter: $1 is a LIKE pattern escaped with a backslash, or NULL. */
#define LIST_FILTER " WHERE (CAST($1 AS TEXT) IS NULL OR u.email LIKE $1 ESCAPE '\\')"

/* A user as JSON from a row of USER_COLS, with pockets_count from column 7. */
static json_t *user_json(const struct db_result *res, size_t row, bool with_count)
{
    json_t *u = json_pack("{s:o, s:o, s:o, s:o, s:o, s:b, s:o}", "id", api_json_text(res, row, 0),
                          "email", api_json_text(res, row, 1), "name", api_json_text(res, row, 2),
                          "role", api_json_text(res, row, 3), "status", api_json_text(res, row, 4),
                          "email_verified", db_result_int(res, row, 5) != 0, "created_at",
                          api_json_int(res, row, 6));
    if (u && with_count)
        json_object_set_new(u, "pockets_count", api_json_int(res, row, 7));
    return u;
}

/* Commit when rc is DB_OK; returns the final status. A failed transaction is
 * left for db_release() to roll back, so that api_db_fail() still logs the
 * database's message. */
static int tx_end(struct db_conn *c, int rc)
{
    return rc == DB_OK ? db_commit(c) : rc;
}

/* ---- Rate limiting: fixed windows counted in the rate_limits table, so every
 * replica on the same database sees the same counts. */

/* Count one attempt against scope in its current window of window seconds (a
 * new window starts once the last one has ended). One statement, so it is
 * atomic on both engines with any number of replicas. Sets *count to the
 * attempts in the window including this one, and *retry_after to the seconds
 * left in the window (at least 1). */
static int rate_hit(struct db_conn *c, const char *scope, int64_t now, int64_t window,
                    int64_t *count, int64_t *retry_after)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "INSERT INTO rate_limits (scope, window_start, count) VALUES ($1, $2, 1)"
                          " ON CONFLICT (scope) DO UPDATE SET"
                          " count = CASE WHEN rate_limits.window_start <= $3 THEN 1"
                          " ELSE rate_limits.count + 1 END,"
                          " window_start = CASE WHEN rate_limits.window_start <= $3 THEN $2"
                          " ELSE rate_limits.window_start END"
                          " RETURNING count, window_start",
                          DB_ARGS(DB_TEXT(scope), DB_INT(now), DB_INT(now - window)), &res);
    if (rc)
        return rc;
    *count = db_result_int(res, 0, 0);
    int64_t end = db_result_int(res, 0, 1) + window;
    *retry_after = end > now ? end - now : 1;
    db_result_free(res);
    return DB_OK;
}

/* Take back one attempt counted by rate_hit in the current window. */
static int rate_undo(struct db_conn *c, const char *scope, int64_t now, int64_t window)
{
    return db_exec(c,
                   "UPDATE rate_limits SET count = count - 1"
                   " WHERE scope = $1 AND count > 0 AND window_start > $2",
                   DB_ARGS(DB_TEXT(scope), DB_INT(now - window)), NULL);
}

static int rate_clear(struct db_conn *c, const char *scope)
{
    return db_exec(c, "DELETE FROM rate_limits WHERE scope = $1", DB_ARGS(DB_TEXT(scope)), NULL);
}

static void reply_rate_limited(struct http_request *req, int64_t retry_after, const char *what)
{
    char v[24];
    snprintf(v, sizeof(v), "%" PRId64, retry_after);
    http_set_header(req, "Retry-After", v);
    http_reply_error(req, 429, "rate_limited", "too many %s, try again in %" PRId64 " seconds",
                     what, retry_after);
}

/* The rate-limit scopes of a password attempt on account email from the
 * request's client address. */
struct attempt {
    char acct[SCOPE_MAX];
    char addr[SCOPE_MAX];
};

static void attempt_init(struct attempt *a, struct http_request *req, const char *email)
{
    snprintf(a->acct, sizeof(a->acct), "login:acct:%s", email);
    snprintf(a->addr, sizeof(a->addr), "login:addr:%s", http_client_addr(req));
}

/* Count a password attempt before the password is checked, so that parallel
 * guesses cannot slip past the limit; a correct password takes the attempt
 * back (attempt_succeeded), so only failures add up. The address is counted
 * first: a locked-out address does not touch account counters. Sets
 * *retry_after to 0 when the attempt may go ahead, else to the seconds until
 * the blocking window ends. */
static int attempt_begin(struct http_request *req, struct db_conn *c, const struct attempt *a,
                         int64_t now, int64_t *retry_after)
{
    const struct config *cfg = &api_app(req)->cfg;
    int64_t count = 0, wait = 0;
    *retry_after = 0;
    int rc = rate_hit(c, a->addr, now, cfg->login_window, &count, &wait);
    if (rc)
        return rc;
    if (count > cfg->login_max_attempts) {
        *retry_after = wait;
        return DB_OK;
    }
    rc = rate_hit(c, a->acct, now, cfg->login_window, &count, &wait);
    if (rc)
        return rc;
    if (count > cfg->login_max_attempts) {
        *retry_after = wait;
        /* The address's attempt was not spent on a password check. */
        rc = rate_undo(c, a->addr, now, cfg->login_window);
    }
    return rc;
}

/* The password was right: clear the account's failures and give the address
 * its attempt back. Failures here only leave the counters stricter. */
static void attempt_succeeded(struct http_request *req, struct db_conn *c, const struct attempt *a,
                              int64_t now)
{
    int rc = rate_clear(c, a->acct);
    if (rc == DB_OK)
        rc = rate_undo(c, a->addr, now, api_app(req)->cfg.login_window);
    if (rc)
        log_warn("request %s: cannot reset login counters: %s", http_request_id(req),
                 db_strerror(rc));
}

/* ---- Input checks */

/* Normalise the address in field key into out, or answer 400. */
static bool get_email(struct http_request *req, const char *key, char out[EMAIL_MAX_LEN + 1])
{
    const char *in;
    if (!http_json_get_string(req, key, 1, EMAIL_INPUT_MAX, &in))
        return false;
    if (email_normalize(in, out, EMAIL_MAX_LEN + 1) != 0) {
        http_reply_error(req, 400, "invalid_request", "field '%s' is not a valid email address",
                         key);
        return false;
    }
    return true;
}

/* Whether a new password passes the policy; answers 400 with its reason. */
static bool check_policy(struct http_request *req, const char *key, const char *password)
{
    char why[128];
    if (password_check_policy(password, why, sizeof(why)) != 0) {
        http_reply_error(req, 400, "invalid_request", "field '%s': %s", key, why);
        return false;
    }
    return true;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Read field "name": trimmed of ASCII whitespace, 1..NAME_MAX_BYTES bytes, no
 * control characters (C0, DEL, C1). The JSON parser already refused invalid
 * UTF-8 and NUL. */
static bool get_name(struct http_request *req, char out[NAME_MAX_BYTES + 1])
{
    const char *in;
    if (!http_json_get_string(req, "name", 1, NAME_INPUT_MAX, &in))
        return false;
    size_t len = strlen(in);
    while (len && is_space(in[len - 1]))
        len--;
    while (len && is_space(*in)) {
        in++;
        len--;
    }
    if (len == 0 || len > NAME_MAX_BYTES) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'name' must be 1 to %d bytes long without surrounding spaces",
                         NAME_MAX_BYTES);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)in[i];
        bool c1 = b == 0xc2 && i + 1 < len && (unsigned char)in[i + 1] >= 0x80 &&
                  (unsigned char)in[i + 1] <= 0x9f;
        if (b < 0x20 || b == 0x7f || c1) {
            http_reply_error(req, 400, "invalid_request",
                             "field 'name' must not contain control characters");
            return false;
        }
    }
    memcpy(out, in, len);
    out[len] = '\0';
    return true;
}

/* Parse an integer query argument within [min, max] into *out (untouched when
 * absent); answers 400 otherwise. */
static bool query_int(struct http_request *req, const char *name, int64_t min, int64_t max,
                      int64_t *out)
{
    const char *v = http_query(req, name);
    if (!v)
        return true;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < min || n > max) {
        http_reply_error(req, 400, "invalid_request",
                         "query argument '%s' must be an integer in %lld..%lld", name,
                         (long long)min, (long long)max);
        return false;
    }
    *out = n;
    return true;
}

/* The {id} of an admin user route if it has the shape of a user id; else
 * answers 404 and returns NULL. */
static const char *user_param(struct http_request *req)
{
    const char *id = http_param(req, "id");
    if (!secret_id_valid("usr_", id)) {
        http_reply_error(req, 404, "not_found", "no such user");
        return NULL;
    }
    return id;
}

/* ---- Email verification codes */

/* A fresh code of VERIFY_DIGITS uniformly random decimal digits. */
static int code_new(char out[VERIFY_DIGITS + 1])
{
    for (int i = 0; i < VERIFY_DIGITS;) {
        unsigned char b[16];
        int rc = secret_random(b, sizeof(b));
        if (rc)
            return rc;
        for (size_t j = 0; j < sizeof(b) && i < VERIFY_DIGITS; j++)
            if (b[j] < 250) /* 250 = 25 * 10: no digit more likely than another */
                out[i++] = (char)('0' + b[j] % 10);
        secret_wipe(b, sizeof(b));
    }
    out[VERIFY_DIGITS] = '\0';
    return 0;
}

static bool code_shape_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return n == VERIFY_DIGITS;
}

/* The stored form of a code: HMAC-SHA256 under a login-token key over the
 * user id and the code, in hex. Keyed, so a copy of the database alone does
 * not let anyone try the 10^8 codes offline. Stored under the current key;
 * checked under the previous one too, so a secret rotation does not break
 * the codes already mailed. */
static int code_hash_with(const uint8_t key[32], const char *user_id, const char *code,
                          char out[65])
{
    char msg[200];
    uint8_t mac[32];
    int n = snprintf(msg, sizeof(msg), "pockity-email-code|%s|%s", user_id, code);
    int rc = n > 0 && (size_t)n < sizeof(msg) ? secret_hmac_sha256(key, 32, msg, (size_t)n, mac)
                                              : -EINVAL;
    if (rc == 0)
        rc = secret_hex_encode(mac, sizeof(mac), out, 65);
    secret_wipe(msg, sizeof(msg));
    secret_wipe(mac, sizeof(mac));
    return rc;
}

static int code_hash(struct http_request *req, const char *user_id, const char *code, char out[65])
{
    return code_hash_with(api_app(req)->token_key.current, user_id, code, out);
}

/* Replace the user's pending code by the one hashed, with a fresh expiry and
 * no guesses counted. */
static int code_store(struct db_conn *c, const char *user_id, const char *hash, int64_t now)
{
    return db_exec(c,
                   "INSERT INTO email_verifications (user_id, code_hash, expires_at, attempts,"
                   " sent_at) VALUES ($1, $2, $3, 0, $4) ON CONFLICT (user_id) DO UPDATE SET"
                   " code_hash = excluded.code_hash, expires_at = excluded.expires_at,"
                   " attempts = 0, sent_at = excluded.sent_at",
                   DB_ARGS(DB_TEXT(user_id), DB_TEXT(hash), DB_INT(now + VERIFY_TTL), DB_INT(now)),
                   NULL);
}

/* Count one code mailed to the user; *retry_after is 0 when it may go, else
 * the seconds until it may. */
static int code_send_allowed(struct http_request *req, struct db_conn *c, const char *user_id,
                             int64_t now, int64_t *retry_after)
{
    char scope[SCOPE_MAX];
    int64_t count = 0, wait = 0, window = api_app(req)->cfg.login_window;
    snprintf(scope, sizeof(scope), "verify:send:%s", user_id);
    int rc = rate_hit(c, scope, now, window, &count, &wait);
    *retry_after = rc == DB_OK && count > VERIFY_SENDS ? wait : 0;
    return rc;
}

/* Mail the code (no database connection may be held: the server can be slow).
 * Returns whether the server took it; failures are logged without the code. */
static bool code_mail(struct http_request *req, const char *email, const char *name,
                      const char *code)
{
    char body[1024], err[256];
    snprintf(body, sizeof(body),
             "Hello %s,\n\n"
             "Your code to verify this email address for Pockity is:\n\n"
             "    %s\n\n"
             "It works for %d minutes: send it with POST /v1/auth/verify while signed in.\n"
             "If you did not sign up for Pockity, ignore this message.\n",
             name, code, VERIFY_TTL / 60);
    int rc = mail_send(&api_app(req)->cfg, email, "Your Pockity verification code", body, err,
                       sizeof(err));
    secret_wipe(body, sizeof(body));
    if (rc)
        log_warn("request %s: cannot mail a verification code: %s", http_request_id(req), err);
    return rc == 0;
}

/* ---- Handlers */

/* POST /v1/auth/register {email, password, name} → 201 {"user": {...},
 * "verification": {"required", "sent"}}. The address starts unverified; with
 * a mail server a code is mailed to it, without one verification is not
 * required (api_user() treats every account as verified). */
static void h_register(struct http_request *req)
{
    static const char *const keys[] = {"email", "password", "name", NULL};
    const struct config *cfg = &api_app(req)->cfg;
    char email[EMAIL_MAX_LEN + 1], name[NAME_MAX_BYTES + 1], hash[PASSWORD_HASH_MAX];
    char code[VERIFY_DIGITS + 1] = "", code_h[65] = "";
    const char *password;
    if (!http_json_only_keys(req, keys) || !get_email(req, "email", email) ||
        !http_json_get_string(req, "password", 0, PASSWORD_MAX_BYTES, &password) ||
        !check_policy(req, "password", password) || !get_name(req, name))
        return;

    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    bool verify = mail_enabled(cfg), sent = false;
    char scope[SCOPE_MAX], id[64];
    int64_t now = api_now(), count = 0, wait = 0;
    snprintf(scope, sizeof(scope), "register:addr:%s", http_client_addr(req));
    int rc = rate_hit(c, scope, now, cfg->login_window, &count, &wait);
    if (rc) {
        api_db_fail(req, c, rc, "register");
        goto out;
    }
    if (count > cfg->login_max_attempts * REGISTER_FACTOR) {
        reply_rate_limited(req, wait, "sign-ups from this address");
        goto out;
    }
    rc = password_hash(password, hash, sizeof(hash));
    if (rc) {
        log_error("request %s: cannot hash a password: %s", http_request_id(req), strerror(-rc));
        http_reply_error(req, rc == -ENOMEM ? 503 : 500,
                         rc == -ENOMEM ? "unavailable" : "internal_error",
                         "cannot hash the password");
        goto out;
    }
    api_new_id("usr", id, sizeof(id));
    if (verify && (code_new(code) != 0 || code_hash(req, id, code, code_h) != 0)) {
        log_error("request %s: cannot make a verification code", http_request_id(req));
        http_reply_error(req, 500, "internal_error", "cannot make a verification code");
        goto out;
    }
    rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK) {
        /* The unique email column decides a race between two sign-ups. */
        rc = db_exec(
                c,
                "INSERT INTO users (id, email, name, password_hash, role, status,"
                " email_verified, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, 'user', 'active', 0, $5, $5)",
                DB_ARGS(DB_TEXT(id), DB_TEXT(email), DB_TEXT(name), DB_TEXT(hash), DB_INT(now)),
                NULL);
        if (rc == DB_OK && verify)
            rc = code_store(c, id, code_h, now);
        if (rc == DB_OK && verify)
            rc = code_send_allowed(req, c, id, now, &wait); /* counts this first code */
        if (rc == DB_OK)
            rc = api_audit(req, c, "user", id, "user.register", "user", id,
                           json_pack("{s:s}", "email", email));
        rc = tx_end(c, rc);
    }
    if (rc == DB_ERR_CONSTRAINT) {
        http_reply_error(req, 409, "conflict", "an account with this email address already exists");
        goto out;
    }
    if (rc) {
        api_db_fail(req, c, rc, "register");
        goto out;
    }
    db_release(c); /* not held while the mail server answers */
    c = NULL;
    if (verify)
        sent = code_mail(req, email, name, code);
    json_t *user = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I}", "id", id, "email", email,
                             "name", name, "role", "user", "status", "active", "email_verified", 0,
                             "created_at", (json_int_t)now);
    http_reply_json(req, 201,
                    json_pack("{s:o, s:{s:b, s:b}}", "user", user, "verification", "required",
                              verify, "sent", sent));
out:
    secret_wipe(code, sizeof(code));
    secret_wipe(hash, sizeof(hash));
    db_release(c);
}

/* POST /v1/auth/verify {code} → 200 {"user": {...}}: the signed-in user proves
 * the address with the code mailed to it. Each code allows VERIFY_GUESSES
 * guesses (counted before the comparison, in one statement) and expires. */
static void h_verify(struct http_request *req)
{
    static const char *const keys[] = {"code", NULL};
    const char *code;
    char code_h[65], prev_h[65] = "";
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_user(req, c, &p))
        goto out;
    if (!mail_enabled(&api_app(req)->cfg)) {
        http_reply_error(req, 409, "conflict", "email verification is off on this server");
        goto out;
    }
    if (p.verified) {
        http_reply_error(req, 409, "conflict", "the email address is already verified");
        goto out;
    }
    if (!http_json_only_keys(req, keys) || !http_json_get_string(req, "code", 1, 64, &code))
        goto out;
    if (!code_shape_ok(code)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'code' must be the %d digits sent by mail", VERIFY_DIGITS);
        goto out;
    }
    const struct token_key *key = &api_app(req)->token_key;
    if (code_hash(req, p.user_id, code, code_h) != 0 ||
        (key->has_previous && code_hash_with(key->previous, p.user_id, code, prev_h) != 0)) {
        http_reply_error(req, 500, "internal_error", "cannot check the code");
        goto out;
    }
    int64_t now = api_now();
    int rc = db_query_row(c,
                          "UPDATE email_verifications SET attempts = attempts + 1"
                          " WHERE user_id = $1 AND attempts < $2"
                          " RETURNING code_hash, expires_at, attempts",
                          DB_ARGS(DB_TEXT(p.user_id), DB_INT(VERIFY_GUESSES)), &res);
    if (rc == DB_ERR_NOT_FOUND) {
        int64_t spent = 0;
        rc = db_query_int(c, "SELECT COUNT(*) FROM email_verifications WHERE user_id = $1",
                          DB_ARGS(DB_TEXT(p.user_id)), &spent);
        if (rc == DB_OK && spent)
            http_reply_error(req, 429, "rate_limited",
                             "too many wrong codes: ask for a new one with " VERIFY_RESEND);
        else if (rc == DB_OK)
            http_reply_error(req, 409, "conflict",
                             "no verification code is pending: ask for one with " VERIFY_RESEND);
        else
            api_db_fail(req, c, rc, "verify the email address");
        goto out;
    }
    if (rc) {
        api_db_fail(req, c, rc, "verify the email address");
        goto out;
    }
    const char *stored = db_result_text(res, 0, 0);
    /* Both compared in constant time, the previous key's always when set. */
    bool ok = stored && strlen(stored) == 64;
    bool cur = ok && secret_equal(stored, code_h, 64);
    bool prev = ok && key->has_previous && secret_equal(stored, prev_h, 64);
    bool match = cur | prev;
    if (db_result_int(res, 0, 1) <= now) {
        http_reply_error(
                req, 400, "invalid_request",
                "the verification code has expired: ask for a new one with " VERIFY_RESEND);
        goto out;
    }
    if (!match) {
        int64_t left = VERIFY_GUESSES - db_result_int(res, 0, 2);
        http_reply_error(req, 400, "invalid_request",
                         "wrong verification code (%" PRId64 " attempt%s left)", left,
                         left == 1 ? "" : "s");
        goto out;
    }
    db_result_free(res);
    res = NULL;
    rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK)
        rc = db_exec(c, "UPDATE users SET email_verified = 1, updated_at = $2 WHERE id = $1",
                     DB_ARGS(DB_TEXT(p.user_id), DB_INT(now)), NULL);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM email_verifications WHERE user_id = $1",
                     DB_ARGS(DB_TEXT(p.user_id)), NULL);
    if (rc == DB_OK)
        rc = api_audit(req, c, "user", p.user_id, "user.verify_email", "user", p.user_id,
                       json_pack("{s:s}", "email", p.email));
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT " USER_COLS ", " POCKETS_COUNT " FROM users u WHERE u.id = $1",
                          DB_ARGS(DB_TEXT(p.user_id)), &res);
    rc = tx_end(c, rc);
    if (rc)
        api_db_fail(req, c, rc, "verify the email address");
    else
        http_reply_json(req, 200, json_pack("{s:o}", "user", user_json(res, 0, true)));
out:
    secret_wipe(code_h, sizeof(code_h));
    secret_wipe(prev_h, sizeof(prev_h));
    db_result_free(res);
    db_release(c);
}

/* POST /v1/auth/verify/resend → 200 {"expires_at"}: mail the signed-in user a
 * new code (the previous one stops working); at most VERIFY_SENDS per login
 * window, then 429 with Retry-After. */
static void h_verify_resend(struct http_request *req)
{
    char code[VERIFY_DIGITS + 1] = "", code_h[65] = "", name[NAME_MAX_BYTES + 1] = "";
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_user(req, c, &p))
        goto out;
    if (!mail_enabled(&api_app(req)->cfg)) {
        http_reply_error(req, 409, "conflict", "email verification is off on this server");
        goto out;
    }
    if (p.verified) {
        http_reply_error(req, 409, "conflict", "the email address is already verified");
        goto out;
    }
    int64_t now = api_now(), wait = 0;
    int rc = code_send_allowed(req, c, p.user_id, now, &wait);
    if (rc) {
        api_db_fail(req, c, rc, "send a verification code");
        goto out;
    }
    if (wait) {
        reply_rate_limited(req, wait, "verification codes");
        goto out;
    }
    if (code_new(code) != 0 || code_hash(req, p.user_id, code, code_h) != 0) {
        http_reply_error(req, 500, "internal_error", "cannot make a verification code");
        goto out;
    }
    struct db_result *res = NULL;
    rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT name FROM users WHERE id = $1", DB_ARGS(DB_TEXT(p.user_id)),
                          &res);
    if (rc == DB_OK) {
        snprintf(name, sizeof(name), "%s", db_result_text(res, 0, 0));
        rc = code_store(c, p.user_id, code_h, now);
    }
    db_result_free(res);
    if (rc == DB_OK)
        rc = api_audit(req, c, "user", p.user_id, "user.verify_code_sent", "user", p.user_id, NULL);
    rc = tx_end(c, rc);
    if (rc) {
        api_db_fail(req, c, rc, "send a verification code");
        goto out;
    }
    db_release(c);
    c = NULL;
    if (!code_mail(req, p.email, name, code)) {
        http_set_header(req, "Retry-After", "60");
        http_reply_error(req, 503, "unavailable", "cannot send mail now, try again later");
        goto out;
    }
    http_reply_json(req, 200, json_pack("{s:I}", "expires_at", (json_int_t)(now + VERIFY_TTL)));
out:
    secret_wipe(code, sizeof(code));
    secret_wipe(code_h, sizeof(code_h));
    db_release(c);
}

/* Replace the stored hash of a correct password when the hashing cost has
 * changed; only if nobody changed the password meanwhile. Best effort. */
static void maybe_rehash(struct http_request *req, struct db_conn *c, const char *user_id,
                         const char *password, const char *old_hash)
{
    char hash[PASSWORD_HASH_MAX];
    if (!password_needs_rehash(old_hash) || password_hash(password, hash, sizeof(hash)) != 0)
        return;
    int rc = db_exec(c,
                     "UPDATE users SET password_hash = $2, updated_at = $4"
                     " WHERE id = $1 AND password_hash = $3",
                     DB_ARGS(DB_TEXT(user_id), DB_TEXT(hash), DB_TEXT(old_hash), DB_INT(api_now())),
                     NULL);
    if (rc)
        log_warn("request %s: cannot rehash a password: %s", http_request_id(req), db_strerror(rc));
    secret_wipe(hash, sizeof(hash));
}

/* Check password against a stored hash. Returns 0 on a match, 1 on a mismatch
 * (an unusable stored hash counts as one, and is logged), -ENOMEM. */
static int verify(struct http_request *req, const char *user_id, const char *password,
                  const char *hash)
{
    int v = password_verify(password, hash);
    if (v == -EINVAL) {
        log_error("request %s: user '%s' has an unusable password hash", http_request_id(req),
                  user_id);
        password_dummy_verify(password); /* same time as a real check */
        return 1;
    }
    return v;
}

/* POST /v1/auth/login {email, password} → 200 {token, expires_at, user} */
static void h_login(struct http_request *req)
{
    static const char *const keys[] = {"email", "password", NULL};
    struct app *app = api_app(req);
    char email[EMAIL_MAX_LEN + 1];
    const char *password;
    if (!http_json_only_keys(req, keys) || !get_email(req, "email", email) ||
        !http_json_get_string(req, "password", 1, PASSWORD_MAX_BYTES, &password))
        return;

    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct db_result *res = NULL;
    struct attempt a;
    int64_t now = api_now(), retry = 0;
    attempt_init(&a, req, email);
    int rc = attempt_begin(req, c, &a, now, &retry);
    if (rc) {
        api_db_fail(req, c, rc, "log in");
        goto out;
    }
    if (retry) {
        reply_rate_limited(req, retry, "failed logins");
        goto out;
    }

    rc = db_query_row(c, "SELECT " USER_COLS ", u.password_hash FROM users u WHERE u.email = $1",
                      DB_ARGS(DB_TEXT(email)), &res);
    if (rc && rc != DB_ERR_NOT_FOUND) {
        api_db_fail(req, c, rc, "log in");
        goto out;
    }
    const char *user_id = rc ? NULL : db_result_text(res, 0, 0);
    int v = rc ? password_dummy_verify(password)
               : verify(req, user_id, password, db_result_text(res, 0, 7));
    if (v < 0) {
        http_set_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "cannot check the password now, try again");
        goto out;
    }
    if (v != 0) {
        /* Unknown addresses are recorded too: it shows credential stuffing and
         * keeps both failures equally slow. */
        rc = api_audit(req, c, "user", NULL, "user.login_failed", "user", user_id,
                       json_pack("{s:s, s:s}", "email", email, "reason",
                                 user_id ? "wrong password" : "unknown email"));
        if (rc)
            log_warn("request %s: cannot audit a failed login: %s", http_request_id(req),
                     db_strerror(rc));
        http_reply_error(req, 401, "unauthenticated", LOGIN_FAILED);
        goto out;
    }
    attempt_succeeded(req, c, &a, now);
    if (strcmp(db_result_text(res, 0, 4), "active") != 0) {
        http_reply_error(req, 403, "forbidden", "account suspended");
        goto out;
    }
    maybe_rehash(req, c, user_id, password, db_result_text(res, 0, 7));

    char sid[64], token[TOKEN_MAX_LEN + 1];
    int64_t expires = now + app->cfg.login_ttl;
    api_new_id("ses", sid, sizeof(sid));
    if (token_issue(&app->token_key, sid, expires, token, sizeof(token)) != 0) {
        log_error("request %s: cannot issue a login token", http_request_id(req));
        http_reply_error(req, 500, "internal_error", "cannot issue a login token");
        goto out;
    }
    rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK) {
        rc = db_exec(c,
                     "INSERT INTO auth_sessions (id, user_id, created_at, expires_at,"
                     " client_addr) VALUES ($1, $2, $3, $4, $5)",
                     DB_ARGS(DB_TEXT(sid), DB_TEXT(user_id), DB_INT(now), DB_INT(expires),
                             DB_TEXT(http_client_addr(req))),
                     NULL);
        if (rc == DB_OK)
            rc = api_audit(req, c, "user", user_id, "user.login", "user", user_id,
                           json_pack("{s:s}", "session_id", sid));
        rc = tx_end(c, rc);
    }
    if (rc) {
        secret_wipe(token, sizeof(token));
        api_db_fail(req, c, rc, "log in");
        goto out;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s, s:I, s:o}", "token", token, "expires_at", (json_int_t)expires,
                              "user", user_json(res, 0, false)));
    secret_wipe(token, sizeof(token));
out:
    db_result_free(res);
    db_release(c);
}

/* POST /v1/auth/logout → 204, ending the session of the token presented */
static void h_logout(struct http_request *req)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_user(req, c, &p))
        goto out;
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK) {
        rc = db_exec(c,
                     "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1"
                     " AND revoked_at IS NULL",
                     DB_ARGS(DB_TEXT(p.session_id), DB_INT(api_now())), NULL);
        if (rc == DB_OK)
            rc = api_audit(req, c, "user", p.user_id, "user.logout", "user", p.user_id,
                           json_pack("{s:s}", "session_id", p.session_id));
        rc = tx_end(c, rc);
    }
    if (rc)
        api_db_fail(req, c, rc, "log out");
    else
        http_reply_empty(req, 204);
out:
    db_release(c);
}

/* GET /v1/me → {"user": {..., pockets_count}} */
static void h_me(struct http_request *req)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_user(req, c, &p))
        goto out;
    struct db_result *res = NULL;
    int rc = db_query_row(c, "SELECT " USER_COLS ", " POCKETS_COUNT " FROM users u WHERE u.id = $1",
                          DB_ARGS(DB_TEXT(p.user_id)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "read the user");
        goto out;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "user", user_json(res, 0, true)));
    db_result_free(res);
out:
    db_release(c);
}

/* POST /v1/me/password {current_password, new_password} → 204; every session
 * of the user ends, this one included. */
static void h_password(struct http_request *req)
{
    static const char *const keys[] = {"current_password", "new_password", NULL};
    const char *current, *fresh;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    struct db_result *res = NULL;
    char hash[PASSWORD_HASH_MAX] = "";
    if (!api_user(req, c, &p) || !http_json_only_keys(req, keys) ||
        !http_json_get_string(req, "current_password", 1, PASSWORD_MAX_BYTES, &current) ||
        !http_json_get_string(req, "new_password", 0, PASSWORD_MAX_BYTES, &fresh) ||
        !check_policy(req, "new_password", fresh))
        goto out;
    if (strcmp(current, fresh) == 0) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'new_password' must differ from the current password");
        goto out;
    }
    /* Guessing the password through a stolen token counts like failed logins. */
    struct attempt a;
    int64_t now = api_now(), retry = 0;
    attempt_init(&a, req, p.email);
    int rc = attempt_begin(req, c, &a, now, &retry);
    if (rc) {
        api_db_fail(req, c, rc, "change the password");
        goto out;
    }
    if (retry) {
        reply_rate_limited(req, retry, "failed password checks");
        goto out;
    }
    rc = db_query_row(c, "SELECT password_hash FROM users WHERE id = $1",
                      DB_ARGS(DB_TEXT(p.user_id)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "change the password");
        goto out;
    }
    const char *old_hash = db_result_text(res, 0, 0);
    int v = verify(req, p.user_id, current, old_hash);
    if (v < 0) {
        http_set_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "cannot check the password now, try again");
        goto out;
    }
    if (v != 0) {
        http_reply_error(req, 401, "unauthenticated", "the current password is incorrect");
        goto out;
    }
    attempt_succeeded(req, c, &a, now);
    rc = password_hash(fresh, hash, sizeof(hash));
    if (rc) {
        log_error("request %s: cannot hash a password: %s", http_request_id(req), strerror(-rc));
        http_reply_error(req, 500, "internal_error", "cannot hash the password");
        goto out;
    }
    int64_t changed = 0;
    rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK) {
        /* Only over the hash we checked: a concurrent change wins, this one 409s. */
        rc = db_exec(c,
                     "UPDATE users SET password_hash = $2, updated_at = $3"
                     " WHERE id = $1 AND password_hash = $4",
                     DB_ARGS(DB_TEXT(p.user_id), DB_TEXT(hash), DB_INT(now), DB_TEXT(old_hash)),
                     &changed);
        if (rc == DB_OK && changed == 0)
            rc = DB_ERR_CONSTRAINT;
        if (rc == DB_OK)
            rc = db_exec(c,
                         "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1"
                         " AND revoked_at IS NULL",
                         DB_ARGS(DB_TEXT(p.user_id), DB_INT(now)), NULL);
        if (rc == DB_OK)
            rc = api_audit(req, c, "user", p.user_id, "user.password_change", "user", p.user_id,
                           NULL);
        rc = tx_end(c, rc);
    }
    if (rc == DB_ERR_CONSTRAINT)
        http_reply_error(req, 409, "conflict", "the password was changed meanwhile");
    else if (rc)
        api_db_fail(req, c, rc, "change the password");
    else
        http_reply_empty(req, 204);
out:
    secret_wipe(hash, sizeof(hash));
    db_result_free(res);
    db_release(c);
}

/* GET /v1/admin/users?limit=N&offset=N&q=TEXT → {users, total, limit, offset};
 * q keeps the addresses that contain it (case-insensitive). */
static void h_admin_list(struct http_request *req)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    struct db_result *res = NULL;
    int64_t limit = 50, offset = 0, total = 0;
    if (!api_admin(req, c, &p) || !query_int(req, "limit", 1, 1000, &limit) ||
        !query_int(req, "offset", 0, 1000000000, &offset))
        goto out;
    const char *q = http_query(req, "q");
    char pattern[2 * EMAIL_MAX_LEN + 3];
    if (q && *q) {
        if (strlen(q) > EMAIL_MAX_LEN) {
            http_reply_error(req, 400, "invalid_request",
                             "query argument 'q' must be at most %d bytes", EMAIL_MAX_LEN);
            goto out;
        }
        /* LIKE with its wildcards and the escape character escaped. Addresses
         * are stored in lower case, so the pattern is too. */
        size_t n = 0;
        pattern[n++] = '%';
        for (const char *s = q; *s; s++) {
            if (*s == '%' || *s == '_' || *s == '\\')
                pattern[n++] = '\\';
            pattern[n++] = (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
        }
        pattern[n++] = '%';
        pattern[n] = '\0';
    } else {
        q = NULL;
    }
    const char *pat = q ? pattern : NULL;
    int rc = db_query_int(c, "SELECT COUNT(*) FROM users u" LIST_FILTER, DB_ARGS(DB_TEXT(pat)),
                          &total);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT " USER_COLS ", " POCKETS_COUNT " FROM users u" LIST_FILTER
                      " ORDER BY u.created_at, u.id LIMIT $2 OFFSET $3",
                      DB_ARGS(DB_TEXT(pat), DB_INT(limit), DB_INT(offset)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "list users");
        goto out;
    }
    json_t *users = json_array();
    for (size_t i = 0; i < db_result_rows(res); i++)
        json_array_append_new(users, user_json(res, i, true));
    http_reply_json(req, 200,
                    json_pack("{s:o, s:I, s:I, s:I}", "users", users, "total", (json_int_t)total,
                              "limit", (json_int_t)limit, "offset", (json_int_t)offset));
out:
    db_result_free(res);
    db_release(c);
}

/* GET /v1/admin/users/{id} → {"user": {...}, "pockets": [...]} */
static void h_admin_get(struct http_request *req)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    struct db_result *user = NULL, *pockets = NULL;
    const char *id;
    if (!api_admin(req, c, &p) || !(id = user_param(req)))
        goto out;
    int rc = db_begin(c, DB_TX_READ);
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT " USER_COLS ", " POCKETS_COUNT " FROM users u WHERE u.id = $1",
                          DB_ARGS(DB_TEXT(id)), &user);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT id, name, tier_id, status, used_bytes, used_objects, created_at"
                      " FROM pockets WHERE user_id = $1 ORDER BY created_at, id",
                      DB_ARGS(DB_TEXT(id)), &pockets);
    rc = tx_end(c, rc);
    if (rc == DB_ERR_NOT_FOUND) {
        http_reply_error(req, 404, "not_found", "no such user");
        goto out;
    }
    if (rc) {
        api_db_fail(req, c, rc, "read the user");
        goto out;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < db_result_rows(pockets); i++)
        json_array_append_new(
                list,
                json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", api_json_text(pockets, i, 0),
                          "name", api_json_text(pockets, i, 1), "tier",
                          api_json_text(pockets, i, 2), "status", api_json_text(pockets, i, 3),
                          "used_bytes", api_json_int(pockets, i, 4), "used_objects",
                          api_json_int(pockets, i, 5), "created_at", api_json_int(pockets, i, 6)));
    http_reply_json(req, 200,
                    json_pack("{s:o, s:o}", "user", user_json(user, 0, true), "pockets", list));
out:
    db_result_free(user);
    db_result_free(pockets);
    db_release(c);
}

/* Run sql (an UPDATE of users taking $1 id, $2 value, $3 now) as an admin, in
 * one transaction with the audit row (and the end of the user's sessions when
 * end_sessions), then answer {"user": {...}}. detail is stolen. */
static void admin_update(struct http_request *req, struct db_conn *c, const struct principal *p,
                         const char *id, const char *sql, const char *value, bool end_sessions,
                         const char *action, json_t *detail)
{
    struct db_result *res = NULL;
    int64_t now = api_now(), changed = 0;
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK)
        rc = db_exec(c, sql, DB_ARGS(DB_TEXT(id), DB_TEXT(value), DB_INT(now)), &changed);
    if (rc == DB_OK && changed == 0)
        rc = DB_ERR_NOT_FOUND;
    if (rc == DB_OK && end_sessions)
        rc = db_exec(c,
                     "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1"
                     " AND revoked_at IS NULL",
                     DB_ARGS(DB_TEXT(id), DB_INT(now)), NULL);
    if (rc == DB_OK) {
        rc = api_audit(req, c, "admin", p->user_id, action, "user", id, detail);
        detail = NULL;
    }
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT " USER_COLS ", " POCKETS_COUNT " FROM users u WHERE u.id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    rc = tx_end(c, rc);
    json_decref(detail);
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "no such user");
    else if (rc)
        api_db_fail(req, c, rc, "update the user");
    else
        http_reply_json(req, 200, json_pack("{s:o}", "user", user_json(res, 0, true)));
    db_result_free(res);
}

static void admin_set_status(struct http_request *req, const char *status)
{
    static const char *const keys[] = {"reason", NULL};
    bool suspend = strcmp(status, "suspended") == 0;
    const char *reason = NULL, *id;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_admin(req, c, &p) || !(id = user_param(req)) || !http_json_only_keys(req, keys) ||
        !http_json_opt_string(req, "reason", 0, REASON_MAX_BYTES, &reason))
        goto out;
    if (suspend && strcmp(id, p.user_id) == 0) {
        http_reply_error(req, 409, "conflict", "an administrator cannot suspend themselves");
        goto out;
    }
    json_t *detail = json_object();
    if (reason)
        json_object_set_new(detail, "reason", json_string(reason));
    admin_update(req, c, &p, id, "UPDATE users SET status = $2, updated_at = $3 WHERE id = $1",
                 status, suspend, suspend ? "user.suspend" : "user.unsuspend", detail);
    keycache_forget(NULL); /* the owner's keys are refused while suspended */
out:
    db_release(c);
}

/* POST /v1/admin/users/{id}/suspend [{reason}] → 200 {"user"}; the user's
 * sessions end (their API keys are refused while the account is suspended) */
static void h_admin_suspend(struct http_request *req)
{
    admin_set_status(req, "suspended");
}

/* POST /v1/admin/users/{id}/unsuspend [{reason}] → 200 {"user"} */
static void h_admin_unsuspend(struct http_request *req)
{
    admin_set_status(req, "active");
}

/* POST /v1/admin/users/{id}/role {role: "user"|"admin"} → 200 {"user"} */
static void h_admin_role(struct http_request *req)
{
    static const char *const keys[] = {"role", NULL};
    const char *role, *id;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_admin(req, c, &p) || !(id = user_param(req)) || !http_json_only_keys(req, keys) ||
        !http_json_get_string(req, "role", 1, 16, &role))
        goto out;
    if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
        http_reply_error(req, 400, "invalid_request", "field 'role' must be \"user\" or \"admin\"");
        goto out;
    }
    if (strcmp(id, p.user_id) == 0 && strcmp(role, "admin") != 0) {
        http_reply_error(req, 409, "conflict", "an administrator cannot demote themselves");
        goto out;
    }
    admin_update(req, c, &p, id, "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", role,
                 false, "user.role", json_pack("{s:s}", "role", role));
out:
    db_release(c);
}

const struct http_route api_users_routes[] = {
        {"POST", "/v1/auth/register", h_register, NULL, HTTP_JSON},
        {"POST", "/v1/auth/verify", h_verify, NULL, HTTP_JSON},
        {"POST", "/v1/auth/verify/resend", h_verify_resend, NULL, 0},
        {"POST", "/v1/auth/login", h_login, NULL, HTTP_JSON},
        {"POST", "/v1/auth/logout", h_logout, NULL, 0},
        {"GET", "/v1/me", h_me, NULL, 0},
        {"POST", "/v1/me/password", h_password, NULL, HTTP_JSON},
        {"GET", "/v1/admin/users", h_admin_list, NULL, 0},
        {"GET", "/v1/admin/users/{id}", h_admin_get, NULL, 0},
        {"POST", "/v1/admin/users/{id}/suspend", h_admin_suspend, NULL, HTTP_JSON},
        {"POST", "/v1/admin/users/{id}/unsuspend", h_admin_unsuspend, NULL, HTTP_JSON},
        {"POST", "/v1/admin/users/{id}/role", h_admin_role, NULL, HTTP_JSON},
};
const size_t api_users_n_routes = sizeof(api_users_routes) / sizeof(api_users_routes[0]);
