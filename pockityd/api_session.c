/* api_session: POST /v1/session, where a mount trades its API key for
 * short-lived S3 credentials (STS AssumeRole) confined to its pocket's prefix,
 * by the pocket's own role (s3.scoped_roles, see roles.h) and the session
 * policy. */
#include "api.h"
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "roles.h"
#include "s3.h"
#include "usage.h"

/* What the session needs to know about the key's pocket. */
struct pocket_info {
    char name[128];
    char prefix[1100];
    struct usage_pocket totals;
};

static int pocket_read(struct db_conn *c, const char *pocket_id, struct pocket_info *out)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, "SELECT name, prefix FROM pockets WHERE id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc)
        return rc;
    snprintf(out->name, sizeof(out->name), "%s", db_result_text(res, 0, 0));
    /* Pockets are made with "ROOT/ID/"; be strict about the trailing '/' anyway,
     * since without it the grant would also cover "ROOT/ID2...". */
    const char *prefix = db_result_text(res, 0, 1);
    size_t n = strlen(prefix);
    snprintf(out->prefix, sizeof(out->prefix), "%s%s", prefix,
             n && prefix[n - 1] == '/' ? "" : "/");
    db_result_free(res);
    return usage_get(c, pocket_id, &out->totals);
}

/* The time the IAM and STS calls of one session may take in all, retries
 * included: a mount waits 10 s for its answer, which should be a clear 503
 * rather than its own timeout, and a storage service that stopped answering
 * (a full Ceph cluster blocks writes such as a role's creation) must not
 * hold a server thread for every retry of the S3 client's 15 s timeouts. */
#define SESSION_S3_MS 8000

static void session_reply(struct http_request *req)
{
    static const char *const allowed[] = {NULL};
    struct app *app = api_app(req);
    const struct config *cfg = &app->cfg;
    struct key_principal k;
    struct pocket_info p;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_key(req, c, &k) || !http_json_only_keys(req, allowed)) {
        db_release(c);
        return;
    }
    int rc = pocket_read(c, k.pocket_id, &p);
    if (rc) {
        api_db_fail(req, c, rc, "read pocket");
        db_release(c);
        return;
    }
    if (strcmp(p.totals.status, "active") != 0) {
        db_release(c);
        http_reply_error(req, 403, "forbidden", "%s", usage_status_message(p.totals.status));
        return;
    }
    enum policy_access access = !k.writable ? POLICY_RO
                                : p.totals.hold[0] || usage_over_quota(&p.totals)
                                        ? POLICY_READ_DELETE
                                        : POLICY_RW;
    char *policy = NULL;
    if (policy_session(cfg->s3_bucket, p.prefix, access, &policy) != 0) {
        db_release(c);
        log_error("request %s: cannot build the session policy of pocket '%s' (prefix '%s')",
                  http_request_id(req), k.pocket_id, p.prefix);
        http_reply_error(req, 500, "internal_error", "cannot build the session policy");
        return;
    }
    /* The role: the pocket's own for this access (found on this connection
     * when it was made before with this very policy), else the configured
     * shared one, for storage that authenticates its session tokens. */
    char role_arn[ROLES_ARN_MAX];
    int role_found = 1;
    if (cfg->s3_scoped_roles) {
        rc = roles_lookup(c, k.pocket_id, access, policy, role_arn);
        if (rc != DB_OK && rc != DB_ERR_NOT_FOUND) {
            api_db_fail(req, c, rc, "read pocket role");
            db_release(c);
            free(policy);
            return;
        }
        role_found = rc == DB_OK;
    } else {
        snprintf(role_arn, sizeof(role_arn), "%s", cfg->s3_role_arn ? cfg->s3_role_arn : "");
    }
    /* No database connection is held across the IAM and STS calls. */
    db_release(c);

    if (!role_found) {
        rc = roles_arn_for(app, k.pocket_id, p.prefix, access, role_arn);
        if (rc) {
            log_error("request %s: no role for pocket '%s' (%s): %s", http_request_id(req),
                      k.pocket_id, policy_access_name(access), strerror(-rc));
            free(policy);
            http_set_header(req, "Retry-After", "5");
            http_reply_error(req, 503, "unavailable",
                             "cannot obtain storage credentials right now, try again");
            return;
        }
    }
    /* RoleSessionName: 2..64 characters of [\w+=,.@-]; key ids are base32. */
    char session_name[64];
    snprintf(session_name, sizeof(session_name), "pky-%.59s", k.key_id);
    struct sts_credentials creds;
    rc = app->s3 ? sts_assume_role(app->s3, role_arn, session_name, policy,
                                   (int)cfg->session_seconds, &creds)
                 : S3_ERR_INVALID_ARG;
    if (rc == S3_ERR_NOT_FOUND && cfg->s3_scoped_roles) {
        /* The recorded role was deleted behind our back: make it again, once. */
        if (roles_invalidate(app, k.pocket_id, access) == 0 &&
            roles_arn_for(app, k.pocket_id, p.prefix, access, role_arn) == 0)
            rc = sts_assume_role(app->s3, role_arn, session_name, policy, (int)cfg->session_seconds,
                                 &creds);
    }
    free(policy);
    if (rc != S3_OK) {
        log_error("request %s: STS AssumeRole for pocket '%s' failed: %s (%s)",
                  http_request_id(req), k.pocket_id, s3_strerror(rc), s3_last_error_detail());
        http_set_header(req, "Retry-After", "5");
        http_reply_error(req, 503, "unavailable",
                         "cannot obtain storage credentials right now, try again");
        return;
    }

    json_t *body = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:{s:s, s:s, s:s}}", "endpoint",
            cfg->s3_public_endpoint && *cfg->s3_public_endpoint ? cfg->s3_public_endpoint
                                                                : cfg->s3_endpoint,
            "region", cfg->s3_region ? cfg->s3_region : "", "bucket", cfg->s3_bucket, "prefix",
            p.prefix, "access_key_id", creds.access_key, "secret_access_key", creds.secret_key,
            "session_token", creds.session_token ? creds.session_token : "", "expiration",
            (json_int_t)creds.expiration, "access", policy_access_name(access), "pocket", "id",
            k.pocket_id, "name", p.name, "status", p.totals.status);
    sts_credentials_release(&creds);
    if (body && usage_json_add(body, &p.totals) != 0) {
        json_decref(body);
        body = NULL;
    }
    if (body)
        metrics_counter_inc("pockityd_sessions_issued_total");
    http_reply_json(req, 200, body);
}

static void h_session(struct http_request *req)
{
    s3_thread_deadline(SESSION_S3_MS);
    session_reply(req);
    s3_thread_deadline(0);
}

const struct http_route api_session_routes[] = {
        {"POST", "/v1/session", h_session, "session.create", HTTP_JSON},
};
const size_t api_session_n_routes = sizeof(api_session_routes) / sizeof(api_session_routes[0]);
