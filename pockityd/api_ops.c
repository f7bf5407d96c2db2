/* api_ops: operations routes — health, Prometheus metrics, and the audit log
 * for administrators. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "s3.h"

/* GET /healthz: 200 when the database answers and the bucket is reachable
 * with the root credentials, else 503 naming what failed. */
static void h_healthz(struct http_request *req)
{
    struct app *app = api_app(req);
    const char *db_state = "ok", *s3_state = "ok";
    struct db_conn *c = db_acquire(app->db);
    int64_t one = 0;
    if (!c || db_query_int(c, "SELECT 1", NULL, 0, &one) != DB_OK || one != 1)
        db_state = "unavailable";
    db_release(c);
    struct s3_list_page page;
    int rc = s3_list_objects(app->s3, app->cfg.s3_root_prefix, "/", NULL, NULL, 1, &page);
    if (rc == S3_OK)
        s3_list_page_release(&page);
    else
        s3_state = s3_strerror(rc);
    int ok = strcmp(db_state, "ok") == 0 && strcmp(s3_state, "ok") == 0;
    if (!ok)
        log_warn("health check failed: database %s, s3 %s (%s)", db_state, s3_state,
                 rc ? s3_last_error_detail() : "");
    http_reply_json(req, ok ? 200 : 503,
                    json_pack("{s:s, s:s, s:s, s:s}", "status", ok ? "ok" : "unavailable",
                              "database", db_state, "s3", s3_state, "version", POCKITY_VERSION));
}

/* Parse a non-negative integer query argument; answers 400 and returns false
 * when it is present but not a number in [min, max]. */
static bool query_int(struct http_request *req, const char *name, int64_t min, int64_t max,
                      int64_t *out)
{
    const char *v = http_query(req, name);
    if (!v)
        return true;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        http_reply_error(req, 400, "invalid_request", "'%s' must be an integer in %lld..%lld", name,
                         (long long)min, (long long)max);
        return false;
    }
    *out = n;
    return true;
}

/* GET /v1/admin/audit?since=ID&limit=N&target_type=&target_id=&action=
 * Entries after the id since (oldest first, so a client can follow the log
 * by passing the last id it saw), at most limit (default 100, max 1000). */
static void h_audit(struct http_request *req)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal p;
    if (!api_admin(req, c, &p))
        goto out;
    int64_t since = 0, limit = 100;
    if (!query_int(req, "since", 0, INT64_MAX, &since) || !query_int(req, "limit", 1, 1000, &limit))
        goto out;
    const char *target_type = http_query(req, "target_type");
    const char *target_id = http_query(req, "target_id");
    const char *action = http_query(req, "action");
    struct db_result *res = NULL;
    int rc = db_query(c,
                      "SELECT id, at, actor_type, actor_id, action, target_type, target_id,"
                      " detail, client_addr FROM audit_log WHERE id > $1"
                      " AND (CAST($2 AS TEXT) IS NULL OR target_type = $2)"
                      " AND (CAST($3 AS TEXT) IS NULL OR target_id = $3)"
                      " AND (CAST($4 AS TEXT) IS NULL OR action = $4)"
                      " ORDER BY id LIMIT $5",
                      DB_ARGS(DB_INT(since), DB_TEXT(target_type), DB_TEXT(target_id),
                              DB_TEXT(action), DB_INT(limit)),
                      &res);
    if (rc) {
        api_db_fail(req, c, rc, "read the audit log");
        goto out;
    }
    json_t *entries = json_array();
    for (size_t i = 0; i < db_result_rows(res); i++) {
        json_t *detail = json_loads(db_result_text(res, i, 7), 0, NULL);
        json_array_append_new(
                entries, json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                                   (json_int_t)db_result_int(res, i, 0), "at",
                                   (json_int_t)db_result_int(res, i, 1), "actor_type",
                                   api_json_text(res, i, 2), "actor_id", api_json_text(res, i, 3),
                                   "action", api_json_text(res, i, 4), "target_type",
                                   api_json_text(res, i, 5), "target_id", api_json_text(res, i, 6),
                                   "detail", detail ? detail : json_object(), "client_addr",
                                   api_json_text(res, i, 8)));
    }
    size_t n = db_result_rows(res);
    json_int_t last = n ? (json_int_t)db_result_int(res, n - 1, 0) : (json_int_t)since;
    db_result_free(res);
    http_reply_json(req, 200, json_pack("{s:o, s:I}", "entries", entries, "last_id", last));
out:
    db_release(c);
}

const struct http_route api_ops_routes[] = {
        {"GET", "/healthz", h_healthz, NULL, 0},
        {"GET", "/metrics", http_metrics_handler, NULL, 0},
        {"GET", "/v1/admin/audit", h_audit, NULL, 0},
};
const size_t api_ops_n_routes = sizeof(api_ops_routes) / sizeof(api_ops_routes[0]);
