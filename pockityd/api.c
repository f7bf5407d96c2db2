/* api: shared handler plumbing — database errors as replies, login-token and
 * API-key authentication, and the audit log. */
#include "api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "keycache.h"
#include "log.h"
#include "mail.h"
#include "metrics.h"
#include "secret.h"
#include "usage.h"

/* Seconds between two records of an API key's use from the same address. */
#define KEY_USE_EVERY 60

struct app *api_app(struct http_request *req)
{
    return http_app(req);
}

int64_t api_now(void)
{
    return (int64_t)time(NULL);
}

struct db_conn *api_conn(struct http_request *req)
{
    struct db_conn *c = db_acquire(api_app(req)->db);
    if (!c) {
        metrics_counter_add("pockityd_db_errors_total", "kind", "busy", 1);
        http_set_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the database is busy, try again");
    }
    return c;
}

void api_db_fail(struct http_request *req, struct db_conn *c, int status, const char *what)
{
    switch (status) {
    case DB_ERR_CONSTRAINT:
        http_reply_error(req, 409, "conflict", "%s: conflicts with existing data", what);
        return;
    case DB_ERR_NOT_FOUND:
        http_reply_error(req, 404, "not_found", "%s: not found", what);
        return;
    case DB_ERR_INVALID:
        http_reply_error(req, 400, "invalid_request", "%s: invalid text (NUL or bad UTF-8)", what);
        return;
    case DB_ERR_BUSY:
    case DB_ERR_CONN:
    case DB_ERR_RETRY:
        metrics_counter_add("pockityd_db_errors_total", "kind", "unavailable", 1);
        log_warn("request %s: %s: %s: %s", http_request_id(req), what, db_strerror(status),
                 c ? db_conn_errmsg(c) : "");
        http_set_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "%s: the database is unavailable, try again",
                         what);
        return;
    default:
        metrics_counter_add("pockityd_db_errors_total", "kind", "error", 1);
        log_error("request %s: %s: %s: %s", http_request_id(req), what, db_strerror(status),
                  c ? db_conn_errmsg(c) : "");
        http_reply_error(req, 500, "internal_error", "%s failed", what);
    }
}

/* The token of "Authorization: Bearer TOKEN", or NULL. */
static const char *bearer(struct http_request *req)
{
    const char *h = http_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

bool api_user(struct http_request *req, struct db_conn *c, struct principal *p)
{
    struct app *app = api_app(req);
    const char *tok = bearer(req);
    if (!tok) {
        http_reply_error(req, 401, "unauthenticated",
                         "a login token is required "
                         "(Authorization: Bearer ...)");
        return false;
    }
    char sid[TOKEN_SESSION_ID_MAX + 1];
    int64_t expires = 0, now = api_now();
    int rc = token_verify(&app->token_key, tok, now, sid, &expires);
    if (rc == -ETIMEDOUT) {
        http_reply_error(req, 401, "unauthenticated", "the login token has expired");
        return false;
    }
    if (rc) {
        http_reply_error(req, 401, "unauthenticated", "invalid login token");
        return false;
    }
    struct db_result *res = NULL;
    rc = db_query_row(c,
                      "SELECT u.id, u.email, u.role, u.status, u.email_verified, s.revoked_at,"
                      " s.expires_at FROM auth_sessions s JOIN users u ON u.id = s.user_id"
                      " WHERE s.id = $1",
                      DB_ARGS(DB_TEXT(sid)), &res);
    if (rc == DB_ERR_NOT_FOUND) {
        http_reply_error(req, 401, "unauthenticated", "invalid login token");
        return false;
    }
    if (rc) {
        api_db_fail(req, c, rc, "authenticate");
        return false;
    }
    bool ok = false;
    if (!db_result_is_null(res, 0, 5) || db_result_int(res, 0, 6) <= now) {
        http_reply_error(req, 401, "unauthenticated", "the login session has ended");
    } else if (strcmp(db_result_text(res, 0, 3), "active") != 0) {
        http_reply_error(req, 403, "forbidden", "this account is suspended");
    } else {
        memset(p, 0, sizeof(*p));
        snprintf(p->user_id, sizeof(p->user_id), "%s", db_result_text(res, 0, 0));
        snprintf(p->email, sizeof(p->email), "%s", db_result_text(res, 0, 1));
        snprintf(p->session_id, sizeof(p->session_id), "%s", sid);
        p->admin = strcmp(db_result_text(res, 0, 2), "admin") == 0;
        /* Without a mail server no code can be sent, so verification is off. */
        p->verified = db_result_int(res, 0, 4) != 0 || !mail_enabled(&app->cfg);
        ok = true;
    }
    db_result_free(res);
    return ok;
}

bool api_admin(struct http_request *req, struct db_conn *c, struct principal *p)
{
    if (!api_user(req, c, p))
        return false;
    if (!p->admin) {
        http_reply_error(req, 403, "forbidden", "this needs an administrator");
        return false;
    }
    return true;
}

/* Record the key's use from addr unless one from there was recorded within
 * KEY_USE_EVERY: a key is presented on every reservation, and this must not be
 * a hot write. The UPDATE's own condition keeps two concurrent requests from
 * both writing. */
static void key_used(struct http_request *req, struct db_conn *c, const char *id, int64_t used_at,
                     const char *used_addr, int64_t now)
{
    const char *addr = http_client_addr(req);
    if (used_at >= now - KEY_USE_EVERY && used_addr && strcmp(used_addr, addr) == 0)
        return;
    int rc = db_exec(c,
                     "UPDATE api_keys SET last_used_at = $2, last_used_addr = $3 WHERE id = $1"
                     " AND (last_used_at IS NULL OR last_used_at < $2 - $4"
                     " OR last_used_addr IS NULL OR last_used_addr <> $3)",
                     DB_ARGS(DB_TEXT(id), DB_INT(now), DB_TEXT(addr), DB_INT(KEY_USE_EVERY)), NULL);
    if (rc)
        log_warn("request %s: cannot record key use: %s", http_request_id(req), db_strerror(rc));
    else
        keycache_used(id, now, addr);
}

static void principal_of(const struct keycache_entry *e, struct key_principal *k)
{
    memset(k, 0, sizeof(*k));
    snprintf(k->key_id, sizeof(k->key_id), "%s", e->id);
    snprintf(k->pocket_id, sizeof(k->pocket_id), "%s", e->pocket_id);
    snprintf(k->user_id, sizeof(k->user_id), "%s", e->user_id);
    k->writable = e->writable;
}

/* api_key and api_key_writer: with cached, a key this process verified within
 * KEYCACHE_TTL is checked against its cached hash and expiry only; anything
 * else (no entry, a mismatch, an expired key) reads the database, which also
 * gives the precise refusal. */
static bool key_auth(struct http_request *req, struct db_conn *c, struct key_principal *k,
                     bool cached)
{
    const char *tok = bearer(req);
    char id[APIKEY_ID_LEN + 1], secret[APIKEY_SECRET_LEN + 1];
    if (!tok) {
        http_reply_error(req, 401, "unauthenticated",
                         "an API key is required (Authorization: Bearer pky_...)");
        return false;
    }
    if (apikey_parse(tok, id, secret) != 0) {
        http_reply_error(req, 401, "unauthenticated", "malformed API key");
        return false;
    }
    int64_t now = api_now();
    struct keycache_entry e;
    if (cached && keycache_get(id, &e) && apikey_verify(secret, e.hash) == 0 &&
        (e.expires_at == 0 || e.expires_at > now)) {
        secret_wipe(secret, sizeof(secret));
        principal_of(&e, k);
        key_used(req, c, id, e.used_at, e.used_addr, now);
        return true;
    }
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT k.pocket_id, k.user_id, k.access, k.secret_hash, k.expires_at,"
                          " k.revoked_at, u.status, k.last_used_at, k.last_used_addr"
                          " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    int verdict = 1;
    if (rc == DB_OK)
        verdict = apikey_verify(secret, db_result_text(res, 0, 3));
    else
        apikey_verify(secret, "0000000000000000000000000000000000000000000000000000000000000000");
    secret_wipe(secret, sizeof(secret));
    if (rc && rc != DB_ERR_NOT_FOUND) {
        api_db_fail(req, c, rc, "authenticate key");
        return false;
    }
    bool ok = false;
    if (rc == DB_ERR_NOT_FOUND || verdict != 0) {
        http_reply_error(req, 401, "unauthenticated", "unknown API key");
    } else if (!db_result_is_null(res, 0, 5)) {
        http_reply_error(req, 401, "unauthenticated", "this API key has been revoked");
    } else if (!db_result_is_null(res, 0, 4) && db_result_int(res, 0, 4) <= now) {
        http_reply_error(req, 401, "unauthenticated", "this API key has expired");
    } else if (strcmp(db_result_text(res, 0, 6), "active") != 0) {
        http_reply_error(req, 401, "unauthenticated", "the key's owner is suspended");
    } else {
        memset(&e, 0, sizeof(e));
        snprintf(e.id, sizeof(e.id), "%s", id);
        snprintf(e.hash, sizeof(e.hash), "%s", db_result_text(res, 0, 3));
        snprintf(e.pocket_id, sizeof(e.pocket_id), "%s", db_result_text(res, 0, 0));
        snprintf(e.user_id, sizeof(e.user_id), "%s", db_result_text(res, 0, 1));
        e.writable = strcmp(db_result_text(res, 0, 2), "rw") == 0;
        e.expires_at = db_result_is_null(res, 0, 4) ? 0 : db_result_int(res, 0, 4);
        e.used_at = db_result_is_null(res, 0, 7) ? 0 : db_result_int(res, 0, 7);
        const char *addr = db_result_text(res, 0, 8);
        snprintf(e.used_addr, sizeof(e.used_addr), "%s", addr ? addr : "");
        keycache_put(&e);
        principal_of(&e, k);
        ok = true;
    }
    db_result_free(res);
    if (ok)
        key_used(req, c, id, e.used_at, e.used_addr[0] ? e.used_addr : NULL, now);
    return ok;
}

bool api_key(struct http_request *req, struct db_conn *c, struct key_principal *k)
{
    return key_auth(req, c, k, false);
}

bool api_key_writer(struct http_request *req, struct db_conn *c, struct key_principal *k)
{
    if (!key_auth(req, c, k, true))
        return false;
    if (!k->writable) {
        http_reply_error(req, 403, "forbidden", "this API key is read-only");
        return false;
    }
    return true;
}

int api_audit(struct http_request *req, struct db_conn *c, const char *actor_type,
              const char *actor_id, const char *action, const char *target_type,
              const char *target_id, json_t *detail)
{
    char *text = detail ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(detail);
    int rc = db_exec(c,
                     "INSERT INTO audit_log (at, actor_type, actor_id, action, target_type,"
                     " target_id, detail, client_addr) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                     DB_ARGS(DB_INT(api_now()), DB_TEXT(actor_type), DB_TEXT(actor_id),
                             DB_TEXT(action), DB_TEXT(target_type), DB_TEXT(target_id),
                             DB_TEXT(text ? text : "{}"),
                             DB_TEXT(req ? http_client_addr(req) : NULL)),
                     NULL);
    free(text);
    return rc;
}

int api_refuse(struct api_refusal *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->status = status;
    r->code = code;
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    return API_TX_REFUSED;
}

bool api_tx_run(struct http_request *req, struct db_conn *c, api_tx_body body, void *arg,
                const char *what)
{
    struct api_refusal ref;
    int rc = DB_ERR_RETRY;
    for (int attempt = 0; attempt < DB_TRANSACT_ATTEMPTS && rc == DB_ERR_RETRY; attempt++) {
        memset(&ref, 0, sizeof(ref));
        rc = db_begin(c, DB_TX_WRITE);
        if (rc)
            continue;
        rc = body(c, arg, &ref);
        if (rc == DB_OK)
            rc = db_commit(c);
        else
            db_rollback(c);
    }
    if (rc == API_TX_REFUSED) {
        http_reply_error(req, ref.status, ref.code, "%s", ref.message);
        return false;
    }
    if (rc) {
        api_db_fail(req, c, rc, what);
        return false;
    }
    return true;
}

void api_new_id(const char *prefix, char *out, size_t outlen)
{
    char p[SECRET_ID_PREFIX_MAX + 1];
    snprintf(p, sizeof(p), "%s_", prefix);
    if (secret_id(p, out, outlen) != 0)
        snprintf(out, outlen, "%s", ""); /* callers' inserts then fail cleanly */
}

json_t *api_json_text(const struct db_result *res, size_t row, size_t col)
{
    const char *s = db_result_text(res, row, col);
    return s ? json_string(s) : json_null();
}

json_t *api_json_int(const struct db_result *res, size_t row, size_t col)
{
    if (db_result_is_null(res, row, col))
        return json_null();
    return json_integer(db_result_int(res, row, col));
}

void api_reply_totals(struct http_request *req, int status, json_t *body,
                      const struct usage_pocket *p)
{
    if (body && usage_json_add(body, p) != 0) {
        json_decref(body);
        body = NULL;
    }
    http_reply_json(req, status, body);
}
