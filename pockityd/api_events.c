/* api_events: the push endpoint of S3 event notifications, and reconciliation
 * on demand for administrators. */
#include "api.h"
#include "routes.h"

#include <string.h>

#include "events.h"
#include "reconcile.h"
#include "secret.h"

#define TOKEN_MAX      512
#define ID_MAX         64
#define RECONCILE_WAIT 30 /* seconds an on-demand run waits for a busy pocket */

/* The push's token: ?token=... (what the topic's push endpoint carries) or
 * Authorization: Bearer. */
static const char *events_token_of(struct http_request *req)
{
    const char *t = http_query(req, "token");
    if (t)
        return t;
    const char *auth = http_header(req, "Authorization");
    if (auth && !strncmp(auth, "Bearer ", 7))
        return auth + 7;
    return NULL;
}

/* ---- POST /v1/events/s3 */

static void h_events(struct http_request *req)
{
    struct app *app = api_app(req);
    const char *want = app->cfg.events_token, *got = events_token_of(req);
    if (!want || !*want) {
        http_reply_error(req, 404, "not_found", "event ingestion is not configured");
        return;
    }
    if (!got || strlen(got) > TOKEN_MAX || !secret_streq(got, want)) {
        http_reply_error(req, 401, "unauthenticated", "missing or wrong event token");
        return;
    }
    size_t len = 0;
    http_body(req, &len);
    json_t *doc = len ? http_json(req) : NULL;
    if (!doc) {
        http_reply_error(req, 400, "invalid_request", "the body must be a JSON object");
        return;
    }
    struct events_result r;
    int rc = events_ingest(app, doc, api_now(), &r);
    if (rc == EVENTS_BAD_DOCUMENT) {
        http_reply_error(req, 400, "invalid_request",
                         "the body must be {\"Records\": [...]} with at most %d records",
                         EVENTS_MAX_RECORDS);
        return;
    }
    if (rc) {
        api_db_fail(req, NULL, rc, "apply events");
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:I, s:I, s:I, s:I, s:I}", "applied", (json_int_t)r.applied,
                              "stale", (json_int_t)r.stale, "outside", (json_int_t)r.outside,
                              "ignored", (json_int_t)r.ignored, "invalid", (json_int_t)r.invalid));
}

/* ---- POST /v1/admin/reconcile {"pocket_id"?} */

static bool id_shape_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static void h_reconcile(struct http_request *req)
{
    static const char *const keys[] = {"pocket_id", NULL};
    struct app *app = api_app(req);
    struct principal who;
    const char *pocket_id = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (http_json(req) && (!http_json_only_keys(req, keys) ||
                           !http_json_opt_string(req, "pocket_id", 1, ID_MAX, &pocket_id)))
        goto out;
    if (pocket_id) {
        int64_t n = 0;
        int rc = id_shape_ok(pocket_id)
                         ? db_query_int(c, "SELECT COUNT(*) FROM pockets WHERE id = $1",
                                        DB_ARGS(DB_TEXT(pocket_id)), &n)
                         : DB_OK;
        if (rc) {
            api_db_fail(req, c, rc, "find pocket");
            goto out;
        }
        if (n == 0) {
            http_reply_error(req, 404, "not_found", "no pocket '%s'", pocket_id);
            goto out;
        }
    }
    /* The run takes its own connections: do not hold this one meanwhile. */
    db_release(c);
    c = NULL;
    struct reconcile_report rep;
    if (reconcile_run(app, pocket_id, RECONCILE_NOW, pocket_id ? RECONCILE_WAIT : 0, api_now(),
                      &rep) != 0) {
        http_reply_error(req, 503, "unavailable", "the database is unavailable");
        return;
    }
    http_reply_json(req, 200, reconcile_report_json(&rep));
    reconcile_report_release(&rep);
out:
    db_release(c);
}

const struct http_route api_events_routes[] = {
        {"POST", EVENTS_PATH, h_events, "events_s3", 0},
        {"POST", "/v1/admin/reconcile", h_reconcile, "admin_reconcile", HTTP_JSON},
};
const size_t api_events_n_routes = sizeof(api_events_routes) / sizeof(api_events_routes[0]);
