/* allowance: quota allowances granted by one conditional UPDATE of the pocket's
 * reserved totals, spent by commits through the usage ledger, swept at expiry. */
#include "allowance.h"

#include <stdio.h>
#include <string.h>

#include "secret.h"

/* Give back bytes and objects of the pocket's reserved totals, never below 0
 * (totals that drifted must not break the update; reconciliation repairs them),
 * and read the totals after. */
#define UNRESERVE                                                                                  \
    "UPDATE pockets SET"                                                                           \
    " reserved_bytes = CASE WHEN reserved_bytes < $2 THEN 0 ELSE reserved_bytes - $2 END,"         \
    " reserved_objects = CASE WHEN reserved_objects < $3 THEN 0"                                   \
    " ELSE reserved_objects - $3 END"                                                              \
    " WHERE id = $1 RETURNING " USAGE_TOTALS_COLUMNS

/* UNRESERVE of the locked pocket; *after (may be NULL) receives the totals. */
static int unreserve(struct db_conn *c, const char *pocket_id, int64_t bytes, int64_t objects,
                     struct usage_pocket *after)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, UNRESERVE, DB_ARGS(DB_TEXT(pocket_id), DB_INT(bytes), DB_INT(objects)),
                          &res);
    if (rc == DB_OK && after)
        usage_totals_read(res, 0, after);
    db_result_free(res);
    return rc;
}

/* ---- grant ---- */

struct grant_args {
    const char *pocket_id;
    int64_t bytes, objects, now, ttl;
    struct allowance *out;
    struct usage_pocket *pocket;
};

static int grant_tx(struct db_conn *c, void *arg)
{
    struct grant_args *a = arg;
    int rc = usage_grant(c, a->pocket_id, a->bytes, a->objects, a->pocket);
    if (rc)
        return rc;
    a->out->bytes = a->bytes;
    a->out->objects = a->objects;
    a->out->expires_at = a->now + a->ttl;
    return db_exec(c,
                   "INSERT INTO allowances (id, pocket_id, bytes, objects, created_at, expires_at)"
                   " VALUES ($1, $2, $3, $4, $5, $6)",
                   DB_ARGS(DB_TEXT(a->out->id), DB_TEXT(a->pocket_id), DB_INT(a->bytes),
                           DB_INT(a->objects), DB_INT(a->now), DB_INT(a->out->expires_at)),
                   NULL);
}

int allowance_grant(struct db_conn *c, const char *pocket_id, int64_t bytes, int64_t objects,
                    int64_t now, int64_t ttl, struct allowance *out, struct usage_pocket *pocket)
{
    memset(out, 0, sizeof(*out));
    if (!pocket_id || bytes < 0 || bytes > ALLOWANCE_MAX_BYTES || objects < 1 ||
        objects > ALLOWANCE_MAX_OBJECTS || ttl <= 0)
        return DB_ERR_INVALID;
    if (secret_id("alw_", out->id, sizeof(out->id)) != 0)
        return DB_ERR_NOMEM;
    struct grant_args a = {pocket_id, bytes, objects, now, ttl, out, pocket};
    int rc = db_transact_on(c, grant_tx, &a);
    if (rc != DB_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- commit ---- */

struct commit_args {
    const char *pocket_id, *id;
    const struct allowance_object *objs;
    size_t n, key_max;
    int64_t now, ttl;
    struct allowance *out;
    size_t *prefix_len;
    struct usage_pocket *after;
};

static int commit_tx(struct db_conn *c, void *arg)
{
    struct commit_args *a = arg;
    size_t plen = 0;
    int rc = usage_lock_pocket(c, a->pocket_id, &plen);
    if (rc)
        return rc;
    if (a->prefix_len)
        *a->prefix_len = plen;
    for (size_t i = 0; i < a->n; i++)
        if (plen + strlen(a->objs[i].key) > a->key_max)
            return USAGE_KEY_TOO_LONG;

    struct db_result *res = NULL;
    rc = db_query_row(c,
                      "SELECT bytes, objects FROM allowances"
                      " WHERE id = $1 AND pocket_id = $2 AND expires_at > $3",
                      DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->pocket_id), DB_INT(a->now)), &res);
    if (rc)
        return rc;
    int64_t left_bytes = db_result_int(res, 0, 0), left_objects = db_result_int(res, 0, 1);
    db_result_free(res);

    /* The allowance pays for the growth it can cover; the rest still counts
     * in used (the object is in S3), so the pocket may end up over quota. */
    struct usage_change ch[ALLOWANCE_COMMIT_MAX];
    memset(ch, 0, a->n * sizeof(ch[0]));
    for (size_t i = 0; i < a->n; i++) {
        ch[i].pocket_id = a->pocket_id;
        ch[i].key = a->objs[i].key;
        ch[i].size = a->objs[i].size;
        ch[i].etag = a->objs[i].etag;
    }
    rc = usage_ledger_set_many(c, ch, a->n, a->now);
    if (rc)
        return rc;
    int64_t paid_bytes = 0, paid_objects = 0;
    for (size_t i = 0; i < a->n; i++) {
        int64_t pb = ch[i].bytes_delta > 0 ? ch[i].bytes_delta : 0;
        int64_t po = ch[i].objects_delta > 0 ? ch[i].objects_delta : 0;
        if (pb > left_bytes - paid_bytes)
            pb = left_bytes - paid_bytes;
        if (po > left_objects - paid_objects)
            po = left_objects - paid_objects;
        paid_bytes += pb;
        paid_objects += po;
    }
    struct allowance *o = a->out;
    o->bytes = left_bytes - paid_bytes;
    o->objects = left_objects - paid_objects;
    o->expires_at = a->now + a->ttl;
    rc = db_exec(
            c, "UPDATE allowances SET bytes = $2, objects = $3, expires_at = $4 WHERE id = $1",
            DB_ARGS(DB_TEXT(a->id), DB_INT(o->bytes), DB_INT(o->objects), DB_INT(o->expires_at)),
            NULL);
    return rc ? rc : unreserve(c, a->pocket_id, paid_bytes, paid_objects, a->after);
}

int allowance_commit(struct db_conn *c, const char *pocket_id, const char *id,
                     const struct allowance_object *objs, size_t n, size_t key_max, int64_t now,
                     int64_t ttl, struct allowance *out, size_t *prefix_len,
                     struct usage_pocket *after)
{
    char copy[sizeof(out->id)]; /* id may be out->id */
    bool bad = !id || strlen(id) >= sizeof(copy) || !pocket_id || !objs || n < 1 ||
               n > ALLOWANCE_COMMIT_MAX || ttl <= 0;
    for (size_t i = 0; !bad && i < n; i++)
        bad = !objs[i].key || !*objs[i].key || objs[i].size < 0 ||
              objs[i].size > USAGE_MAX_OBJECT_SIZE;
    snprintf(copy, sizeof(copy), "%s", bad ? "" : id);
    memset(out, 0, sizeof(*out));
    if (prefix_len)
        *prefix_len = 0;
    if (bad)
        return DB_ERR_INVALID;
    memcpy(out->id, copy, sizeof(copy));
    struct commit_args a = {pocket_id, copy, objs, n, key_max, now, ttl, out, prefix_len, after};
    int rc = db_transact_on(c, commit_tx, &a);
    if (rc != DB_OK)
        out->bytes = out->objects = out->expires_at = 0;
    return rc;
}

/* ---- release and sweep ---- */

struct release_args {
    const char *pocket_id, *id;
    int64_t until; /* only an allowance expiring at or before this */
    struct usage_pocket *after;
};

static int release_tx(struct db_conn *c, void *arg)
{
    struct release_args *a = arg;
    int rc = usage_lock_pocket(c, a->pocket_id, NULL);
    if (rc)
        return rc;
    struct db_result *res = NULL;
    rc = db_query_row(c,
                      "DELETE FROM allowances WHERE id = $1 AND pocket_id = $2 AND expires_at <= $3"
                      " RETURNING bytes, objects",
                      DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->pocket_id), DB_INT(a->until)), &res);
    if (rc)
        return rc;
    int64_t bytes = db_result_int(res, 0, 0), objects = db_result_int(res, 0, 1);
    db_result_free(res);
    return unreserve(c, a->pocket_id, bytes, objects, a->after);
}

int allowance_release(struct db_conn *c, const char *pocket_id, const char *id,
                      struct usage_pocket *after)
{
    if (!pocket_id || !id)
        return DB_ERR_INVALID;
    struct release_args a = {pocket_id, id, INT64_MAX, after};
    return db_transact_on(c, release_tx, &a);
}

static int release_expired(struct db_conn *c, const char *pocket_id, const char *id, int64_t now)
{
    struct release_args a = {pocket_id, id, now, NULL};
    return db_transact_on(c, release_tx, &a);
}

int allowance_sweep_expired(struct db *db, int64_t now)
{
    return usage_sweep(db, now, "allowances", release_expired);
}
