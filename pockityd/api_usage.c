/* api_usage: what a mount tells pockityd about its writes — quota reservations
 * before uploads, their commit or release after, and deleted objects. */
#include "api.h"
#include "routes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "secret.h"
#include "usage.h"

#define S3_KEY_MAX       1024 /* bytes of a whole S3 key, pocket prefix included */
#define ETAG_MAX         128
#define DELETE_BATCH_MAX 1000

/* The length of the pocket's prefix, to bound relative keys. */
static int prefix_len(struct db_conn *c, const char *pocket_id, size_t *out)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, "SELECT prefix FROM pockets WHERE id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc == DB_OK)
        *out = strlen(db_result_text(res, 0, 0));
    db_result_free(res);
    return rc;
}

/* A relative key: 1 byte at least, and at most S3_KEY_MAX with the prefix.
 * The framework already refused invalid UTF-8 and NUL. */
static bool key_ok(struct http_request *req, const char *key, size_t prefix, const char *what)
{
    size_t n = strlen(key);
    if (n == 0 || n + prefix > S3_KEY_MAX) {
        http_reply_error(req, 400, "invalid_request",
                         "%s must be 1 to %zu bytes long (%d with the pocket's prefix)", what,
                         prefix < S3_KEY_MAX ? S3_KEY_MAX - prefix : 0, S3_KEY_MAX);
        return false;
    }
    return true;
}

/* ---- GET /v1/usage: the key's pocket's quota and usage (statfs of a mount) */

static void h_usage(struct http_request *req)
{
    struct key_principal k;
    struct usage_pocket p;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key(req, c, &k))
        goto out;
    int rc = usage_get(c, k.pocket_id, &p);
    if (rc)
        api_db_fail(req, c, rc, "read usage");
    else
        api_reply_totals(req, 200,
                         json_pack("{s:s, s:s}", "pocket_id", k.pocket_id, "status", p.status), &p);
out:
    db_release(c);
}

/* ---- POST /v1/reservations */

static void h_reserve(struct http_request *req)
{
    static const char *const allowed[] = {"key", "bytes", NULL};
    struct app *app = api_app(req);
    struct key_principal k;
    const char *key = NULL;
    int64_t size = 0;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !http_json_only_keys(req, allowed) ||
        !http_json_get_string(req, "key", 1, S3_KEY_MAX, &key) ||
        !http_json_get_int(req, "bytes", 0, USAGE_MAX_OBJECT_SIZE, &size))
        goto out;

    /* The key's length with the pocket's prefix is checked by usage_reserve,
     * which reads the prefix in the same lookup as the ledger. */
    struct usage_reservation r;
    struct usage_pocket p;
    int rc = usage_reserve(c, k.pocket_id, key, S3_KEY_MAX, size, api_now(),
                           app->cfg.reservation_ttl, &r, &p);
    if (rc == USAGE_KEY_TOO_LONG) {
        if (key_ok(req, key, r.prefix_len, "field 'key'")) /* cannot be: it did not fit */
            http_reply_error(req, 400, "invalid_request", "field 'key' is too long");
    } else if (rc == USAGE_QUOTA_EXCEEDED) {
        metrics_counter_add("pockityd_reservations_total", "result", "refused", 1);
        http_reply_error(req, 507, "quota_exceeded",
                         "quota exceeded: this upload needs %" PRId64 " more bytes and %" PRId64
                         " more objects; the pocket uses %" PRId64 " bytes and %" PRId64
                         " objects, has %" PRId64 " bytes and %" PRId64
                         " objects reserved, and its tier allows %" PRId64 " bytes and %" PRId64
                         " objects",
                         r.bytes, r.objects, p.used_bytes, p.used_objects, p.reserved_bytes,
                         p.reserved_objects, p.max_bytes, p.max_objects);
    } else if (rc == USAGE_INACTIVE) {
        metrics_counter_add("pockityd_reservations_total", "result", "refused", 1);
        http_reply_error(req, 403, "forbidden", "%s", usage_status_message(p.status));
    } else if (rc == USAGE_HELD) {
        metrics_counter_add("pockityd_reservations_total", "result", "refused", 1);
        json_t *why = usage_restriction_json(p.hold, 0);
        http_reply_error(req, 403, "read_only", "%s",
                         json_string_value(json_object_get(why, "message")));
        json_decref(why);
    } else if (rc) {
        api_db_fail(req, c, rc, "reserve");
    } else {
        metrics_counter_add("pockityd_reservations_total", "result", "granted", 1);
        api_reply_totals(req, 201,
                         json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "id", r.id, "key", key,
                                   "bytes", (json_int_t)r.size, "reserved_bytes",
                                   (json_int_t)r.bytes, "reserved_objects", (json_int_t)r.objects,
                                   "expires_at", (json_int_t)r.expires_at),
                         &p);
    }
out:
    db_release(c);
}

/* ---- POST /v1/reservations/{id}/commit */

static void h_commit(struct http_request *req)
{
    static const char *const allowed[] = {"bytes", "etag", NULL};
    const char *id = http_param(req, "id");
    struct key_principal k;
    const char *etag = NULL;
    int64_t size = 0;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !http_json_only_keys(req, allowed) ||
        !http_json_get_int(req, "bytes", 0, USAGE_MAX_OBJECT_SIZE, &size) ||
        !http_json_get_string(req, "etag", 1, ETAG_MAX, &etag))
        goto out;
    struct usage_pocket p;
    int rc = secret_id_valid("rsv_", id)
                     ? usage_commit(c, k.pocket_id, id, size, etag, api_now(), &p)
                     : DB_ERR_NOT_FOUND;
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "reservation '%.64s' not found", id);
    else if (rc)
        api_db_fail(req, c, rc, "commit reservation");
    else
        api_reply_totals(req, 200, json_pack("{s:s, s:I}", "id", id, "bytes", (json_int_t)size),
                         &p);
out:
    db_release(c);
}

/* ---- DELETE /v1/reservations/{id} */

static void h_release(struct http_request *req)
{
    const char *id = http_param(req, "id");
    struct key_principal k;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k))
        goto out;
    int rc = secret_id_valid("rsv_", id) ? usage_release(c, k.pocket_id, id) : DB_ERR_NOT_FOUND;
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "reservation '%.64s' not found", id);
    else if (rc)
        api_db_fail(req, c, rc, "release reservation");
    else
        http_reply_empty(req, 204);
out:
    db_release(c);
}

/* ---- POST /v1/objects/deleted */

static void h_deleted(struct http_request *req)
{
    static const char *const allowed[] = {"keys", NULL};
    struct key_principal k;
    const char **keys = NULL;
    size_t plen = 0;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !http_json_only_keys(req, allowed))
        goto out;
    json_t *list = json_object_get(http_json(req), "keys");
    if (!json_is_array(list)) {
        http_reply_error(req, 400, "invalid_request", "field 'keys' must be an array of strings");
        goto out;
    }
    size_t n = json_array_size(list);
    if (n > DELETE_BATCH_MAX) {
        http_reply_error(req, 400, "invalid_request", "field 'keys' holds at most %d keys",
                         DELETE_BATCH_MAX);
        goto out;
    }
    int rc = prefix_len(c, k.pocket_id, &plen);
    if (rc) {
        api_db_fail(req, c, rc, "record deletions");
        goto out;
    }
    keys = calloc(n ? n : 1, sizeof(*keys));
    if (!keys) {
        http_reply_error(req, 503, "unavailable", "out of memory, try again");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        if (!json_is_string(v)) {
            http_reply_error(req, 400, "invalid_request", "'keys[%zu]' must be a string", i);
            goto out;
        }
        char what[32];
        snprintf(what, sizeof(what), "'keys[%zu]'", i);
        keys[i] = json_string_value(v);
        if (!key_ok(req, keys[i], plen, what))
            goto out;
    }
    int64_t deleted = 0;
    struct usage_pocket p;
    rc = usage_mark_deleted(c, k.pocket_id, keys, n, api_now(), &deleted, &p);
    if (rc)
        api_db_fail(req, c, rc, "record deletions");
    else
        api_reply_totals(req, 200, json_pack("{s:I}", "deleted", (json_int_t)deleted), &p);
out:
    free(keys);
    db_release(c);
}

const struct http_route api_usage_routes[] = {
        {"GET", "/v1/usage", h_usage, "usage.get", 0},
        {"POST", "/v1/reservations", h_reserve, "reservations.create", HTTP_JSON},
        {"POST", "/v1/reservations/{id}/commit", h_commit, "reservations.commit", HTTP_JSON},
        {"DELETE", "/v1/reservations/{id}", h_release, "reservations.release", 0},
        {"POST", "/v1/objects/deleted", h_deleted, "objects.deleted", HTTP_JSON},
};
const size_t api_usage_n_routes = sizeof(api_usage_routes) / sizeof(api_usage_routes[0]);
