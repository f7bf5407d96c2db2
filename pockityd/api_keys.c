/* api_keys: the API keys of a pocket, which mounts trade for scoped S3
 * credentials — created (the secret shown once), listed and revoked. */
#include "api.h"
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keycache.h"
#include "log.h"
#include "secret.h"

#define KEYS_PER_POCKET_MAX 50 /* live (neither revoked nor expired) keys */
#define KEY_NAME_MAX        64
#define EXPIRES_AT_MAX      253402300799LL /* 9999-12-31T23:59:59Z */

/* A pocket id as api_new_id() makes them: 1..64 bytes of [a-z0-9_]. */
static bool pocket_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* A display name: no control characters (UTF-8 is the framework's check). */
static bool name_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* ---- POST /v1/pockets/{id}/keys */

struct create_args {
    struct http_request *req;
    const struct principal *who;
    const char *pocket_id, *name, *access;
    int64_t expires_at; /* 0: never */
    int64_t now;
    char id[APIKEY_ID_LEN + 1];
    char key[APIKEY_LEN + 1];
    /* a refusal to answer instead of the key */
    int status;
    const char *code;
    char message[160];
};

static int create_tx(struct db_conn *c, struct create_args *a)
{
    /* Lock the pocket row so concurrent creations count each other's keys. */
    int64_t changes = 0;
    int rc = db_exec(c, "UPDATE pockets SET updated_at = updated_at WHERE id = $1 AND user_id = $2",
                     DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->who->user_id)), &changes);
    if (rc)
        return rc;
    if (changes == 0) {
        a->status = 404;
        a->code = "not_found";
        snprintf(a->message, sizeof(a->message), "pocket '%s' not found", a->pocket_id);
        return DB_OK;
    }
    struct db_result *res = NULL;
    rc = db_query_row(c,
                      "SELECT status, (SELECT COUNT(*) FROM api_keys k WHERE k.pocket_id = $1"
                      " AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2))"
                      " FROM pockets WHERE id = $1",
                      DB_ARGS(DB_TEXT(a->pocket_id), DB_INT(a->now)), &res);
    if (rc)
        return rc;
    bool deleting = strcmp(db_result_text(res, 0, 0), "deleting") == 0;
    int64_t live = db_result_int(res, 0, 1);
    db_result_free(res);
    if (deleting) {
        a->status = 409;
        a->code = "conflict";
        snprintf(a->message, sizeof(a->message), "pocket '%s' is being deleted", a->pocket_id);
        return DB_OK;
    }
    if (live >= KEYS_PER_POCKET_MAX) {
        a->status = 409;
        a->code = "conflict";
        snprintf(a->message, sizeof(a->message),
                 "pocket '%s' already has %d keys: revoke one first", a->pocket_id,
                 KEYS_PER_POCKET_MAX);
        return DB_OK;
    }

    char hash[APIKEY_HASH_LEN + 1];
    if (apikey_generate(a->key, sizeof(a->key), a->id, hash) != 0) {
        log_error("request %s: cannot generate an API key", http_request_id(a->req));
        return DB_ERR_NOMEM;
    }
    rc = db_exec(c,
                 "INSERT INTO api_keys (id, pocket_id, user_id, name, access, secret_hash,"
                 " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                 DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->pocket_id), DB_TEXT(a->who->user_id),
                         DB_TEXT(a->name), DB_TEXT(a->access), DB_TEXT(hash), DB_INT(a->now),
                         a->expires_at ? DB_INT(a->expires_at) : DB_NULL()),
                 NULL);
    if (rc)
        return rc;
    json_t *detail = json_pack("{s:s, s:s, s:s, s:o}", "pocket_id", a->pocket_id, "name", a->name,
                               "access", a->access, "expires_at",
                               a->expires_at ? json_integer(a->expires_at) : json_null());
    return api_audit(a->req, c, "user", a->who->user_id, "key.create", "api_key", a->id, detail);
}

static void h_create(struct http_request *req)
{
    static const char *const allowed[] = {"name", "access", "expires_at", NULL};
    const char *pocket_id = http_param(req, "id");
    const char *name = NULL, *access = "rw";
    int64_t expires_at = 0, now = api_now();
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal who;
    if (!api_user(req, c, &who))
        goto out;
    if (!who.verified) {
        http_reply_error(req, 403, "forbidden", "verify your email address first");
        goto out;
    }
    if (!pocket_id_ok(pocket_id)) {
        http_reply_error(req, 404, "not_found", "pocket '%.64s' not found", pocket_id);
        goto out;
    }
    if (!http_json_only_keys(req, allowed) ||
        !http_json_get_string(req, "name", 1, KEY_NAME_MAX, &name) ||
        !http_json_opt_string(req, "access", 2, 2, &access) ||
        !http_json_opt_int(req, "expires_at", now + 1, EXPIRES_AT_MAX, &expires_at))
        goto out;
    if (!name_ok(name)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'name' must not hold control characters");
        goto out;
    }
    if (strcmp(access, "rw") != 0 && strcmp(access, "ro") != 0) {
        http_reply_error(req, 400, "invalid_request", "field 'access' must be 'rw' or 'ro'");
        goto out;
    }

    struct create_args a = {.req = req,
                            .who = &who,
                            .pocket_id = pocket_id,
                            .name = name,
                            .access = access,
                            .expires_at = expires_at,
                            .now = now};
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK) {
        rc = create_tx(c, &a);
        if (rc == DB_OK && a.status == 0)
            rc = db_commit(c);
        else
            db_rollback(c);
    }
    if (rc) {
        api_db_fail(req, c, rc, "create key");
    } else if (a.status) {
        http_reply_error(req, a.status, a.code, "%s", a.message);
    } else {
        log_info("request %s: key '%s' created for pocket '%s'", http_request_id(req), a.id,
                 pocket_id);
        http_reply_json(req, 201,
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:o}", "id", a.id, "key", a.key,
                                  "pocket_id", pocket_id, "name", name, "access", access,
                                  "created_at", (json_int_t)now, "expires_at",
                                  expires_at ? json_integer(expires_at) : json_null()));
    }
    secret_wipe(a.key, sizeof(a.key));
out:
    db_release(c);
}

/* ---- GET /v1/pockets/{id}/keys */

static void h_list(struct http_request *req)
{
    const char *pocket_id = http_param(req, "id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal who;
    struct db_result *res = NULL;
    if (!api_user(req, c, &who))
        goto out;
    int rc = DB_ERR_NOT_FOUND;
    if (pocket_id_ok(pocket_id))
        rc = db_query_row(c, "SELECT user_id FROM pockets WHERE id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc == DB_OK && !who.admin && strcmp(db_result_text(res, 0, 0), who.user_id) != 0)
        rc = DB_ERR_NOT_FOUND;
    db_result_free(res);
    res = NULL;
    if (rc == DB_ERR_NOT_FOUND) {
        http_reply_error(req, 404, "not_found", "pocket '%.64s' not found", pocket_id);
        goto out;
    }
    if (rc) {
        api_db_fail(req, c, rc, "list keys");
        goto out;
    }
    rc = db_query(c,
                  "SELECT id, name, access, created_at, expires_at, revoked_at, last_used_at,"
                  " last_used_addr FROM api_keys WHERE pocket_id = $1 ORDER BY created_at, id",
                  DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "list keys");
        goto out;
    }
    json_t *keys = json_array();
    for (size_t i = 0; keys && i < db_result_rows(res); i++) {
        json_t *k = json_pack(
                "{s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", api_json_text(res, i, 0),
                "pocket_id", pocket_id, "name", api_json_text(res, i, 1), "access",
                api_json_text(res, i, 2), "created_at", api_json_int(res, i, 3), "expires_at",
                api_json_int(res, i, 4), "revoked_at", api_json_int(res, i, 5), "last_used_at",
                api_json_int(res, i, 6), "last_used_addr", api_json_text(res, i, 7));
        if (!k || json_array_append_new(keys, k)) {
            json_decref(keys);
            keys = NULL;
        }
    }
    http_reply_json(req, 200, keys ? json_pack("{s:o}", "keys", keys) : NULL);
out:
    db_result_free(res);
    db_release(c);
}

/* ---- DELETE /v1/keys/{id} */

static void h_revoke(struct http_request *req)
{
    const char *id = http_param(req, "id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal who;
    struct db_result *res = NULL;
    if (!api_user(req, c, &who))
        goto out;
    if (!secret_id_valid("", id)) {
        http_reply_error(req, 404, "not_found", "key '%.64s' not found", id);
        goto out;
    }
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT user_id, pocket_id FROM api_keys WHERE id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    bool owner = rc == DB_OK && strcmp(db_result_text(res, 0, 0), who.user_id) == 0;
    if (rc == DB_OK && !owner && !who.admin)
        rc = DB_ERR_NOT_FOUND;
    int64_t changes = 0;
    if (rc == DB_OK)
        rc = db_exec(c, "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                     DB_ARGS(DB_TEXT(id), DB_INT(api_now())), &changes);
    /* Revoking twice is not an error, and is recorded once. */
    if (rc == DB_OK && changes)
        rc = api_audit(req, c, owner ? "user" : "admin", who.user_id, "key.revoke", "api_key", id,
                       json_pack("{s:s}", "pocket_id", db_result_text(res, 0, 1)));
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "key '%s' not found", id);
    else if (rc)
        api_db_fail(req, c, rc, "revoke key");
    else {
        keycache_forget(id); /* after the commit: no one can cache it again */
        http_reply_empty(req, 204);
    }
out:
    db_result_free(res);
    db_release(c);
}

const struct http_route api_keys_routes[] = {
        {"POST", "/v1/pockets/{id}/keys", h_create, "keys.create", HTTP_JSON},
        {"GET", "/v1/pockets/{id}/keys", h_list, "keys.list", 0},
        {"DELETE", "/v1/keys/{id}", h_revoke, "keys.revoke", 0},
};
const size_t api_keys_n_routes = sizeof(api_keys_routes) / sizeof(api_keys_routes[0]);
