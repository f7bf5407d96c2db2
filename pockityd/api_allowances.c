/* api_allowances: quota allowances for mounts — a block of quota taken once,
 * each landed upload committed against it, and what is left given back. */
#include "api.h"
#include "routes.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "allowance.h"
#include "metrics.h"
#include "secret.h"
#include "usage.h"

#define S3_KEY_MAX 1024 /* bytes of a whole S3 key, pocket prefix included */
#define ETAG_MAX   128

/* The {id} of the route must have the shape of our ids; else 400 (it is never
 * echoed: it may hold anything). */
static bool id_ok(struct http_request *req, const char *id)
{
    if (secret_id_valid("alw_", id))
        return true;
    http_reply_error(req, 400, "invalid_request",
                     "allowance id must be 'alw_' followed by %d lowercase base32 characters",
                     SECRET_ID_CHARS);
    return false;
}

static void not_found(struct http_request *req, const char *id)
{
    http_reply_error(req, 404, "not_found", "allowance '%s' not found", id);
}

/* ---- POST /v1/allowances */

static void h_grant(struct http_request *req)
{
    static const char *const allowed[] = {"bytes", "objects", NULL};
    struct app *app = api_app(req);
    struct key_principal k;
    int64_t bytes = 0, objects = 0;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !http_json_only_keys(req, allowed) ||
        !http_json_get_int(req, "bytes", 0, ALLOWANCE_MAX_BYTES, &bytes) ||
        !http_json_get_int(req, "objects", 1, ALLOWANCE_MAX_OBJECTS, &objects))
        goto out;

    struct allowance a;
    struct usage_pocket p;
    int rc = allowance_grant(c, k.pocket_id, bytes, objects, api_now(), app->cfg.allowance_ttl, &a,
                             &p);
    if (rc == USAGE_QUOTA_EXCEEDED || rc == USAGE_INACTIVE || rc == USAGE_HELD)
        metrics_counter_add("pockityd_allowances_total", "result", "refused", 1);
    if (rc == USAGE_QUOTA_EXCEEDED) {
        int64_t free_bytes = p.max_bytes - p.used_bytes - p.reserved_bytes;
        int64_t free_objects = p.max_objects - p.used_objects - p.reserved_objects;
        http_reply_error(req, 507, "quota_exceeded",
                         "quota exceeded: the allowance asks for %" PRId64 " bytes and %" PRId64
                         " objects; the pocket has %" PRId64 " bytes and %" PRId64
                         " objects free (it uses %" PRId64 " bytes and %" PRId64
                         " objects, has %" PRId64 " bytes and %" PRId64
                         " objects reserved, and its tier allows %" PRId64 " bytes and %" PRId64
                         " objects)",
                         bytes, objects, free_bytes > 0 ? free_bytes : 0,
                         free_objects > 0 ? free_objects : 0, p.used_bytes, p.used_objects,
                         p.reserved_bytes, p.reserved_objects, p.max_bytes, p.max_objects);
    } else if (rc == USAGE_INACTIVE) {
        http_reply_error(req, 403, "forbidden", "%s", usage_status_message(p.status));
    } else if (rc == USAGE_HELD) {
        json_t *why = usage_restriction_json(p.hold, 0);
        const char *msg = json_string_value(json_object_get(why, "message"));
        http_reply_error(req, 403, "read_only", "%s", msg ? msg : "the pocket is read-only");
        json_decref(why);
    } else if (rc) {
        api_db_fail(req, c, rc, "grant allowance");
    } else {
        metrics_counter_add("pockityd_allowances_total", "result", "granted", 1);
        api_reply_totals(req, 201,
                         json_pack("{s:s, s:I, s:I, s:I}", "id", a.id, "bytes", (json_int_t)a.bytes,
                                   "objects", (json_int_t)a.objects, "expires_at",
                                   (json_int_t)a.expires_at),
                         &p);
    }
out:
    db_release(c);
}

/* ---- POST /v1/allowances/{id}/commit and /commits */

/* Commit the n objects to the allowance id and answer; batch: they came as
 * the field 'objects' (messages name objects[i]), else as the body. */
static void commit(struct http_request *req, struct db_conn *c, const char *pocket_id,
                   const char *id, const struct allowance_object *objs, size_t n, bool batch)
{
    struct app *app = api_app(req);
    struct allowance a;
    struct usage_pocket p;
    size_t plen = 0;
    int rc = allowance_commit(c, pocket_id, id, objs, n, S3_KEY_MAX, api_now(),
                              app->cfg.allowance_ttl, &a, &plen, &p);
    if (rc == USAGE_KEY_TOO_LONG) {
        size_t i = 0;
        while (i + 1 < n && plen + strlen(objs[i].key) <= S3_KEY_MAX)
            i++;
        char name[48] = "key";
        if (batch)
            snprintf(name, sizeof(name), "objects[%zu].key", i);
        http_reply_error(req, 400, "invalid_request",
                         "field '%s' must be 1 to %zu bytes long (%d with the pocket's prefix)",
                         name, plen < S3_KEY_MAX ? S3_KEY_MAX - plen : 0, S3_KEY_MAX);
    } else if (rc == DB_ERR_NOT_FOUND) {
        not_found(req, id);
    } else if (rc) {
        api_db_fail(req, c, rc, "commit to allowance");
    } else {
        json_t *body = json_pack("{s:{s:s, s:I, s:I, s:I}}", "allowance", "id", a.id, "bytes",
                                 (json_int_t)a.bytes, "objects", (json_int_t)a.objects,
                                 "expires_at", (json_int_t)a.expires_at);
        if (body && batch)
            json_object_set_new(body, "committed", json_integer((json_int_t)n));
        api_reply_totals(req, 200, body, &p);
    }
}

/* One object of the body, or of the current scope: {key, bytes, etag}. */
static bool object_field(struct http_request *req, struct allowance_object *o)
{
    static const char *const allowed[] = {"key", "bytes", "etag", NULL};
    o->etag = NULL;
    if (!http_json_only_keys(req, allowed) ||
        !http_json_get_string(req, "key", 1, S3_KEY_MAX, &o->key) ||
        !http_json_get_int(req, "bytes", 0, USAGE_MAX_OBJECT_SIZE, &o->size) ||
        !http_json_opt_string(req, "etag", 0, ETAG_MAX, &o->etag))
        return false;
    if (o->etag && !*o->etag)
        o->etag = NULL; /* no ETag known */
    return true;
}

static void h_commit(struct http_request *req)
{
    const char *id = http_param(req, "id");
    struct key_principal k;
    struct allowance_object o;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (api_key_writer(req, c, &k) && id_ok(req, id) && object_field(req, &o))
        commit(req, c, k.pocket_id, id, &o, 1, false);
    db_release(c);
}

static void h_commits(struct http_request *req)
{
    static const char *const allowed[] = {"objects", NULL};
    const char *id = http_param(req, "id");
    struct key_principal k;
    struct allowance_object objs[ALLOWANCE_COMMIT_MAX];
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !id_ok(req, id) || !http_json_only_keys(req, allowed))
        goto out;
    json_t *list = json_object_get(http_json(req), "objects");
    size_t n = json_array_size(list);
    if (!json_is_array(list) || n < 1 || n > ALLOWANCE_COMMIT_MAX) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'objects' must be an array of 1 to %d objects {key, bytes, etag}",
                         ALLOWANCE_COMMIT_MAX);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        char name[32];
        snprintf(name, sizeof(name), "objects[%zu]", i);
        if (!json_is_object(v)) {
            http_reply_error(req, 400, "invalid_request", "field '%s' must be an object", name);
            goto out;
        }
        http_json_within(req, v, name);
        bool ok = object_field(req, &objs[i]);
        http_json_within(req, NULL, NULL);
        if (!ok)
            goto out;
    }
    commit(req, c, k.pocket_id, id, objs, n, true);
out:
    db_release(c);
}

/* ---- DELETE /v1/allowances/{id} */

static void h_release(struct http_request *req)
{
    const char *id = http_param(req, "id");
    struct key_principal k;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key_writer(req, c, &k) || !id_ok(req, id))
        goto out;
    struct usage_pocket p;
    int rc = allowance_release(c, k.pocket_id, id, &p);
    if (rc == DB_ERR_NOT_FOUND)
        not_found(req, id);
    else if (rc)
        api_db_fail(req, c, rc, "release allowance");
    else
        api_reply_totals(req, 200, json_object(), &p);
out:
    db_release(c);
}

const struct http_route api_allowances_routes[] = {
        {"POST", "/v1/allowances", h_grant, "allowances.create", HTTP_JSON},
        {"POST", "/v1/allowances/{id}/commit", h_commit, "allowances.commit", HTTP_JSON},
        {"POST", "/v1/allowances/{id}/commits", h_commits, "allowances.commits", HTTP_JSON},
        {"DELETE", "/v1/allowances/{id}", h_release, "allowances.release", 0},
};
const size_t api_allowances_n_routes =
        sizeof(api_allowances_routes) / sizeof(api_allowances_routes[0]);
