/* roles: finds or makes the IAM role of a pocket and access mode (recorded in
 * pocket_roles), and deletes a removed pocket's roles. */
#include "roles.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iam.h"
#include "log.h"

#define POCKET_ID_MAX 56 /* "pky-" + id + "-rw" fits IAM's 64 */

static const enum policy_access all_access[] = {POLICY_RW, POLICY_RO, POLICY_READ_DELETE};

int roles_name(const char *pocket_id, enum policy_access access, char *name, size_t n)
{
    const char *code = policy_access_code(access);
    size_t len = pocket_id ? strlen(pocket_id) : 0;
    if (!code || len == 0 || len > POCKET_ID_MAX || n < len + 8)
        return -EINVAL;
    char *o = name;
    memcpy(o, "pky-", 4);
    o += 4;
    for (size_t i = 0; i < len; i++) {
        char ch = pocket_id[i];
        if (ch == '_')
            *o++ = '.';
        else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
            *o++ = ch;
        else
            return -EINVAL;
    }
    *o++ = '-';
    memcpy(o, code, 3);
    return 0;
}

int roles_lookup(struct db_conn *c, const char *pocket_id, enum policy_access access,
                 const char *policy, char arn_out[ROLES_ARN_MAX])
{
    arn_out[0] = '\0';
    const char *code = policy_access_code(access);
    if (!code || !pocket_id || !policy)
        return DB_ERR_INVALID;
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT role_arn, policy FROM pocket_roles"
                          " WHERE pocket_id = $1 AND access = $2",
                          DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(code)), &res);
    if (rc)
        return rc;
    const char *arn = db_result_text(res, 0, 0);
    const char *stored = db_result_text(res, 0, 1);
    if (!arn || !*arn || strlen(arn) >= ROLES_ARN_MAX)
        rc = DB_ERR_INVALID;
    else if (!stored || strcmp(stored, policy) != 0)
        rc = DB_ERR_NOT_FOUND; /* made with another policy: put ours */
    else
        memcpy(arn_out, arn, strlen(arn) + 1);
    db_result_free(res);
    return rc;
}

/* Look the role up on a connection of our own. */
static int lookup_pooled(struct app *app, const char *pocket_id, enum policy_access access,
                         const char *policy, char arn_out[ROLES_ARN_MAX])
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return DB_ERR_BUSY;
    int rc = roles_lookup(c, pocket_id, access, policy, arn_out);
    db_release(c);
    return rc;
}

/* Record the role made with policy. A racing replica writes the same values;
 * a row of an older policy is brought up to date. arn_out gets the row's. */
static int record(struct app *app, const char *pocket_id, enum policy_access access,
                  const char *policy, const char *arn, char arn_out[ROLES_ARN_MAX])
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return DB_ERR_BUSY;
    int rc = db_exec(c,
                     "INSERT INTO pocket_roles (pocket_id, access, role_arn, policy, created_at)"
                     " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (pocket_id, access) DO UPDATE"
                     " SET role_arn = excluded.role_arn, policy = excluded.policy",
                     DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(policy_access_code(access)), DB_TEXT(arn),
                             DB_TEXT(policy), DB_INT(api_now())),
                     NULL);
    if (rc == DB_OK)
        rc = roles_lookup(c, pocket_id, access, policy, arn_out);
    if (rc == DB_ERR_NOT_FOUND)
        rc = DB_ERR_RETRY; /* a pockityd of another version put its policy meanwhile */
    if (rc)
        log_error("roles: cannot record the role of pocket '%s': %s: %s", pocket_id,
                  db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
    return rc;
}

/* The trust policy and session length of the configured shared role. */
static int shared_role(struct app *app, struct iam_role *out)
{
    char name[IAM_ROLE_NAME_MAX + 1];
    if (iam_arn_role_name(app->cfg.s3_role_arn, name, sizeof(name)) != S3_OK) {
        log_error("roles: s3.role_arn '%s' is not a role ARN",
                  app->cfg.s3_role_arn ? app->cfg.s3_role_arn : "");
        return -EINVAL;
    }
    int rc = iam_role_get(app->s3, name, out);
    if (rc == S3_OK && (!out->trust_policy || !*out->trust_policy)) {
        log_error("roles: the role '%s' has no trust policy to copy", name);
        iam_role_release(out);
        return -EAGAIN;
    }
    if (rc != S3_OK) {
        log_error("roles: cannot read the role '%s' (s3.role_arn): %s (%s)", name, s3_strerror(rc),
                  s3_last_error_detail());
        return rc == S3_ERR_NOMEM ? -ENOMEM : -EAGAIN;
    }
    return 0;
}

/* A role found already made must carry no policy but ours. */
static int check_foreign_policies(struct app *app, const char *name)
{
    char **names = NULL;
    size_t n = 0;
    int rc = iam_role_policy_list(app->s3, name, &names, &n);
    if (rc != S3_OK) {
        log_error("roles: cannot list the policies of role '%s': %s (%s)", name, s3_strerror(rc),
                  s3_last_error_detail());
        return rc == S3_ERR_NOMEM ? -ENOMEM : -EAGAIN;
    }
    int result = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], ROLES_POLICY_NAME) != 0) {
            log_error("roles: role '%s' exists with a policy '%s' pockityd did not put: "
                      "refusing to use it",
                      name, names[i]);
            result = -EPERM;
        }
    iam_names_free(names, n);
    return result;
}

/* Make the role complete in IAM: created (or found) and its policy put. */
static int make_role(struct app *app, const char *name, const char *policy, char *arn, size_t n)
{
    struct iam_role shared = {0}, role = {0};
    int rc = shared_role(app, &shared);
    if (rc)
        return rc;
    /* Long enough for the configured sessions, never shorter than the shared role's. */
    int max_s = shared.max_session_s;
    if (max_s < app->cfg.session_seconds)
        max_s = (int)app->cfg.session_seconds;
    if (max_s < 3600)
        max_s = 3600;
    if (max_s > 43200)
        max_s = 43200;
    int s3rc = iam_role_create(app->s3, name, ROLES_PATH, shared.trust_policy, max_s, &role);
    iam_role_release(&shared);
    if (s3rc != S3_OK) {
        log_error("roles: cannot create role '%s': %s (%s)", name, s3_strerror(s3rc),
                  s3_last_error_detail());
        return s3rc == S3_ERR_NOMEM ? -ENOMEM : -EAGAIN;
    }
    rc = role.existed ? check_foreign_policies(app, name) : 0;
    if (rc == 0 && strlen(role.arn) >= n) {
        log_error("roles: the ARN of role '%s' is too long", name);
        rc = -EAGAIN;
    }
    if (rc == 0) {
        s3rc = iam_role_policy_put(app->s3, name, ROLES_POLICY_NAME, policy);
        if (s3rc != S3_OK) {
            log_error("roles: cannot put the policy of role '%s': %s (%s)", name, s3_strerror(s3rc),
                      s3_last_error_detail());
            rc = s3rc == S3_ERR_NOMEM ? -ENOMEM : -EAGAIN;
        }
    }
    if (rc == 0) {
        memcpy(arn, role.arn, strlen(role.arn) + 1);
        log_info("roles: role '%s' ready (%s)", name, role.existed ? "found" : "created");
    }
    iam_role_release(&role);
    return rc;
}

static int db_errno(int rc)
{
    return rc == DB_ERR_NOMEM ? -ENOMEM : -EIO;
}

int roles_arn_for(struct app *app, const char *pocket_id, const char *prefix,
                  enum policy_access access, char arn_out[ROLES_ARN_MAX])
{
    arn_out[0] = '\0';
    char name[IAM_ROLE_NAME_MAX + 1];
    if (!app || !app->db || roles_name(pocket_id, access, name, sizeof(name)) != 0)
        return -EINVAL;
    char *policy = NULL;
    int rc = policy_session(app->cfg.s3_bucket, prefix, access, &policy);
    if (rc) {
        log_error("roles: cannot build the policy of pocket '%s' (prefix '%s')", pocket_id,
                  prefix ? prefix : "");
        return rc;
    }
    char arn[ROLES_ARN_MAX];
    rc = lookup_pooled(app, pocket_id, access, policy, arn_out);
    if (rc == DB_OK) {
        rc = 0;
    } else if (rc != DB_ERR_NOT_FOUND) {
        log_error("roles: cannot look up the role of pocket '%s': %s", pocket_id, db_strerror(rc));
        rc = db_errno(rc);
    } else if (!app->s3) {
        rc = -EAGAIN;
    } else {
        rc = make_role(app, name, policy, arn, sizeof(arn));
        if (rc == 0) {
            rc = record(app, pocket_id, access, policy, arn, arn_out);
            rc = rc == DB_ERR_RETRY ? -EAGAIN : rc ? db_errno(rc) : 0;
        }
    }
    free(policy);
    return rc;
}

int roles_invalidate(struct app *app, const char *pocket_id, enum policy_access access)
{
    const char *code = policy_access_code(access);
    if (!app || !app->db || !pocket_id || !code)
        return -EINVAL;
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return -EIO;
    int rc = db_exec(c, "DELETE FROM pocket_roles WHERE pocket_id = $1 AND access = $2",
                     DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(code)), NULL);
    if (rc)
        log_error("roles: cannot drop the role row of pocket '%s': %s: %s", pocket_id,
                  db_strerror(rc), db_conn_errmsg(c));
    else
        log_warn("roles: the role of pocket '%s' (%s) is gone from the storage: making it again",
                 pocket_id, code);
    db_release(c);
    return rc ? db_errno(rc) : 0;
}

int roles_forget(struct app *app, const char *pocket_id)
{
    char name[IAM_ROLE_NAME_MAX + 1];
    if (!app || !app->db || roles_name(pocket_id, POLICY_RW, name, sizeof(name)) != 0)
        return -EINVAL;
    int recorded[3] = {0, 0, 0};
    for (size_t i = 0; i < 3; i++) {
        int64_t n = 0;
        int rc = DB_ERR_BUSY;
        struct db_conn *c = db_acquire(app->db);
        if (c)
            rc = db_query_int(
                    c,
                    "SELECT COUNT(*) FROM pocket_roles WHERE pocket_id = $1"
                    " AND access = $2",
                    DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(policy_access_code(all_access[i]))), &n);
        db_release(c);
        if (rc != DB_OK) {
            log_error("roles: cannot look up the roles of pocket '%s': %s", pocket_id,
                      db_strerror(rc));
            return db_errno(rc);
        }
        recorded[i] = n > 0;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!recorded[i] && !app->cfg.s3_scoped_roles)
            continue;
        if (!app->s3)
            return -EAGAIN;
        roles_name(pocket_id, all_access[i], name, sizeof(name));
        int rc = iam_role_policy_delete(app->s3, name, ROLES_POLICY_NAME);
        if (rc == S3_OK)
            rc = iam_role_delete(app->s3, name);
        if (rc != S3_OK) {
            log_error("roles: cannot delete role '%s': %s (%s)", name, s3_strerror(rc),
                      s3_last_error_detail());
            return rc == S3_ERR_NOMEM ? -ENOMEM : -EAGAIN;
        }
    }
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return -EIO;
    int rc = db_exec(c, "DELETE FROM pocket_roles WHERE pocket_id = $1",
                     DB_ARGS(DB_TEXT(pocket_id)), NULL);
    if (rc)
        log_error("roles: cannot delete the role rows of pocket '%s': %s: %s", pocket_id,
                  db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
    return rc ? db_errno(rc) : 0;
}
