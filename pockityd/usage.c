/* usage: the per-object usage ledger, the pocket totals kept in step with it,
 * and quota reservations granted by one conditional UPDATE. */
#include "usage.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "secret.h"

/* Lock the pocket's row for the rest of the write transaction, so every ledger
 * change of one pocket happens one after the other: on PostgreSQL FOR UPDATE
 * (no new row version); SQLite's write transaction (BEGIN IMMEDIATE) already
 * holds the whole database, so there it only reads the row. */
int usage_lock_pocket(struct db_conn *c, const char *pocket_id, size_t *prefix_len)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          db_conn_dialect(c) == DB_POSTGRES
                                  ? "SELECT prefix FROM pockets WHERE id = $1 FOR UPDATE"
                                  : "SELECT prefix FROM pockets WHERE id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc == DB_OK && prefix_len) {
        const char *prefix = db_result_text(res, 0, 0);
        *prefix_len = prefix ? strlen(prefix) : 0;
    }
    db_result_free(res);
    return rc;
}

#define TOTALS_COLUMNS   USAGE_TOTALS_COLUMNS
#define TOTALS_RETURNING " RETURNING " TOTALS_COLUMNS

void usage_totals_read(const struct db_result *res, size_t col, struct usage_pocket *out)
{
    memset(out, 0, sizeof(*out));
    const char *status = db_result_text(res, 0, col);
    snprintf(out->status, sizeof(out->status), "%s", status ? status : "");
    out->used_bytes = db_result_int(res, 0, col + 1);
    out->used_objects = db_result_int(res, 0, col + 2);
    out->reserved_bytes = db_result_int(res, 0, col + 3);
    out->reserved_objects = db_result_int(res, 0, col + 4);
    out->max_bytes = db_result_int(res, 0, col + 5);
    out->max_objects = db_result_int(res, 0, col + 6);
    const char *hold = db_result_text(res, 0, col + 7); /* NULL: no hold */
    snprintf(out->hold, sizeof(out->hold), "%s", hold ? hold : "");
}

static void pocket_read(const struct db_result *res, struct usage_pocket *out)
{
    usage_totals_read(res, 0, out);
}

int usage_refusal(const struct usage_pocket *p)
{
    return strcmp(p->status, "active") != 0 ? USAGE_INACTIVE
           : p->hold[0]                     ? USAGE_HELD
                                            : USAGE_QUOTA_EXCEEDED;
}

int usage_get(struct db_conn *c, const char *pocket_id, struct usage_pocket *out)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, "SELECT " TOTALS_COLUMNS " FROM pockets WHERE id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc)
        return rc;
    pocket_read(res, out);
    db_result_free(res);
    return DB_OK;
}

int usage_over_quota(const struct usage_pocket *p)
{
    return p->used_bytes > p->max_bytes || p->used_objects > p->max_objects;
}

int usage_json_add(json_t *obj, const struct usage_pocket *p)
{
    json_t *usage = json_pack("{s:I, s:I}", "bytes", (json_int_t)p->used_bytes, "objects",
                              (json_int_t)p->used_objects);
    json_t *reserved = json_pack("{s:I, s:I}", "bytes", (json_int_t)p->reserved_bytes, "objects",
                                 (json_int_t)p->reserved_objects);
    json_t *quota = json_pack("{s:I, s:I}", "max_bytes", (json_int_t)p->max_bytes, "max_objects",
                              (json_int_t)p->max_objects);
    /* json_object_set_new steals its value even when it fails. */
    int bad = !usage || !reserved || !quota;
    bad |= json_object_set_new(obj, "usage", usage) != 0;
    bad |= json_object_set_new(obj, "reserved", reserved) != 0;
    bad |= json_object_set_new(obj, "quota", quota) != 0;
    json_t *restriction = usage_restriction_json(p->hold, usage_over_quota(p));
    bad |= !restriction || json_object_set_new(obj, "restriction", restriction) != 0;
    return bad ? -1 : 0;
}

json_t *usage_restriction_json(const char *hold, int over_quota)
{
    if (hold && *hold) {
        const char *why = !strcmp(hold, "past_due")
                                  ? "payment is past due: the pocket is read-only until the"
                                    " open invoice is paid"
                                  : "the pocket is on hold and read-only";
        return json_pack("{s:s, s:s}", "code", hold, "message", why);
    }
    if (over_quota)
        return json_pack("{s:s, s:s}", "code", "over_quota", "message",
                         "the pocket holds more than its tier allows: it is read-only until"
                         " enough is deleted or the tier grows");
    return json_null();
}

const char *usage_status_message(const char *status)
{
    if (!strcmp(status, "pending"))
        return "pocket is pending approval";
    if (!strcmp(status, "suspended"))
        return "pocket is suspended";
    if (!strcmp(status, "deleting"))
        return "pocket is being deleted";
    return "pocket is not active";
}

/* The ledger row of key: whether it is live and its size (0 when not live). */
static int ledger_read(struct db_conn *c, const char *pocket_id, const char *key, bool *live,
                       int64_t *size)
{
    struct db_result *res = NULL;
    int rc = db_query(c, "SELECT size, deleted FROM objects WHERE pocket_id = $1 AND key = $2",
                      DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(key)), &res);
    if (rc)
        return rc;
    *live = db_result_rows(res) > 0 && db_result_int(res, 0, 1) == 0;
    *size = *live ? db_result_int(res, 0, 0) : 0;
    db_result_free(res);
    return DB_OK;
}

/* Set key's row (size >= 0: live with size and etag; size < 0: tombstone) and
 * say how the pocket's used totals must change. The pocket is locked. */
static int ledger_apply(struct db_conn *c, const char *pocket_id, const char *key, int64_t size,
                        const char *etag, int64_t now, int64_t *dbytes, int64_t *dobjects)
{
    bool live = false;
    int64_t old = 0;
    *dbytes = 0;
    *dobjects = 0;
    int rc = ledger_read(c, pocket_id, key, &live, &old);
    if (rc)
        return rc;
    if (size >= 0) {
        rc = db_exec(
                c,
                "INSERT INTO objects (pocket_id, key, size, etag, deleted, updated_at)"
                " VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (pocket_id, key) DO UPDATE"
                " SET size = excluded.size, etag = excluded.etag, deleted = 0,"
                " updated_at = excluded.updated_at",
                DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(key), DB_INT(size), DB_TEXT(etag), DB_INT(now)),
                NULL);
        if (rc)
            return rc;
        *dbytes = size - old;
        *dobjects = live ? 0 : 1;
        return DB_OK;
    }
    if (!live)
        return DB_OK;
    rc = db_exec(c,
                 "UPDATE objects SET deleted = 1, size = 0, etag = NULL, updated_at = $3"
                 " WHERE pocket_id = $1 AND key = $2",
                 DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(key), DB_INT(now)), NULL);
    if (rc)
        return rc;
    *dbytes = -old;
    *dobjects = -1;
    return DB_OK;
}

/* Move the pocket's totals: used by (ub, uo), reserved down by (rb, ro). Never
 * below zero, so totals that drifted from the ledger cannot break the update
 * (reconciliation repairs them). after (may be NULL) receives the new totals,
 * read by the same statement. */
static int totals_adjust(struct db_conn *c, const char *pocket_id, int64_t ub, int64_t uo,
                         int64_t rb, int64_t ro, struct usage_pocket *after)
{
    struct db_result *res = NULL;
    int rc = db_query(c,
                      "UPDATE pockets SET"
                      " used_bytes = CASE WHEN used_bytes + $2 < 0 THEN 0"
                      " ELSE used_bytes + $2 END,"
                      " used_objects = CASE WHEN used_objects + $3 < 0 THEN 0"
                      " ELSE used_objects + $3 END,"
                      " reserved_bytes = CASE WHEN reserved_bytes < $4 THEN 0"
                      " ELSE reserved_bytes - $4 END,"
                      " reserved_objects = CASE WHEN reserved_objects < $5 THEN 0"
                      " ELSE reserved_objects - $5 END"
                      " WHERE id = $1" TOTALS_RETURNING,
                      DB_ARGS(DB_TEXT(pocket_id), DB_INT(ub), DB_INT(uo), DB_INT(rb), DB_INT(ro)),
                      &res);
    if (rc == DB_OK && after) {
        if (db_result_rows(res) == 0)
            rc = DB_ERR_NOT_FOUND;
        else
            pocket_read(res, after);
    }
    db_result_free(res);
    return rc;
}

/* Delete a reservation of the pocket that expires at or before until, and
 * give back what it held. */
static int reservation_drop(struct db_conn *c, const char *pocket_id, const char *id, int64_t until)
{
    struct db_result *res = NULL;
    int rc = db_query(c,
                      "DELETE FROM reservations WHERE id = $1 AND pocket_id = $2"
                      " AND expires_at <= $3 RETURNING bytes, objects",
                      DB_ARGS(DB_TEXT(id), DB_TEXT(pocket_id), DB_INT(until)), &res);
    if (rc)
        return rc;
    if (db_result_rows(res) == 0) {
        db_result_free(res);
        return DB_ERR_NOT_FOUND;
    }
    int64_t bytes = db_result_int(res, 0, 0), objects = db_result_int(res, 0, 1);
    db_result_free(res);
    return totals_adjust(c, pocket_id, 0, 0, bytes, objects, NULL);
}

int usage_grant(struct db_conn *c, const char *pocket_id, int64_t bytes, int64_t objects,
                struct usage_pocket *pocket)
{
    /* The quota check and the grant in one statement: nothing can slip in
     * between, whatever the engine and the number of replicas. It also reads
     * the new totals back. */
    struct db_result *res = NULL;
    int rc =
            db_query(c,
                     "UPDATE pockets SET reserved_bytes = reserved_bytes + $2,"
                     " reserved_objects = reserved_objects + $3"
                     " WHERE id = $1 AND status = 'active' AND hold IS NULL"
                     " AND used_bytes + reserved_bytes + $2 <="
                     " (SELECT max_bytes FROM tiers WHERE id = pockets.tier_id)"
                     " AND used_objects + reserved_objects + $3 <="
                     " (SELECT max_objects FROM tiers WHERE id = pockets.tier_id)" TOTALS_RETURNING,
                     DB_ARGS(DB_TEXT(pocket_id), DB_INT(bytes), DB_INT(objects)), &res);
    if (rc)
        return rc;
    size_t granted = db_result_rows(res);
    if (granted && pocket)
        pocket_read(res, pocket);
    db_result_free(res);
    if (granted)
        return DB_OK;
    struct usage_pocket p;
    rc = usage_get(c, pocket_id, &p);
    if (rc)
        return rc;
    if (pocket)
        *pocket = p;
    return usage_refusal(&p);
}

/* ---- reserve ---- */

struct reserve_args {
    const char *pocket_id, *key;
    size_t key_max;
    int64_t size, now, ttl;
    struct usage_reservation *out;
    struct usage_pocket *pocket;
};

/* SQLite: the statements one by one (BEGIN IMMEDIATE already serialises writers). */
static int reserve_tx(struct db_conn *c, void *arg)
{
    struct reserve_args *a = arg;
    struct usage_reservation *r = a->out;
    /* The pocket's prefix and the key's ledger row in one lookup. */
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT p.prefix, o.size, o.deleted FROM pockets p LEFT JOIN objects o"
                          " ON o.pocket_id = p.id AND o.key = $2 WHERE p.id = $1",
                          DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->key)), &res);
    if (rc)
        return rc;
    const char *prefix = db_result_text(res, 0, 0);
    r->prefix_len = prefix ? strlen(prefix) : 0;
    bool live = !db_result_is_null(res, 0, 2) && db_result_int(res, 0, 2) == 0;
    int64_t old = live ? db_result_int(res, 0, 1) : 0;
    db_result_free(res);
    if (r->prefix_len + strlen(a->key) > a->key_max)
        return USAGE_KEY_TOO_LONG;
    int64_t bytes = a->size > old ? a->size - old : 0;
    int64_t objects = live ? 0 : 1;

    r->bytes = bytes;
    r->objects = objects;
    r->size = a->size;
    rc = usage_grant(c, a->pocket_id, bytes, objects, a->pocket);
    if (rc)
        return rc;
    r->expires_at = a->now + a->ttl;
    return db_exec(c,
                   "INSERT INTO reservations (id, pocket_id, key, bytes, objects, size, created_at,"
                   " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                   DB_ARGS(DB_TEXT(r->id), DB_TEXT(a->pocket_id), DB_TEXT(a->key), DB_INT(bytes),
                           DB_INT(objects), DB_INT(a->size), DB_INT(a->now), DB_INT(r->expires_at)),
                   NULL);
}

/* PostgreSQL: pockity_reserve (pockityd/mig_quota.h) locks the pocket, reads
 * the ledger and the prefix, grants by the same conditional UPDATE as above
 * and inserts the reservation: one statement in autocommit, one round trip.
 * Its one row: granted (0/1), the bytes and objects needed, the prefix's
 * length, then TOTALS_COLUMNS (after the grant, or as they are when refused).
 * No row: no such pocket. */
#define PG_RESERVE "SELECT * FROM pockity_reserve($1, $2, $3, $4, $5, $6, $7)"

static int reserve_pg(struct db_conn *c, void *arg)
{
    struct reserve_args *a = arg;
    struct usage_reservation *r = a->out;
    size_t klen = strlen(a->key);
    int64_t prefix_max = klen < a->key_max ? (int64_t)(a->key_max - klen) : -1;
    r->expires_at = a->now + a->ttl;
    struct db_result *res = NULL;
    int rc = db_query(c, PG_RESERVE,
                      DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->key), DB_INT(a->size),
                              DB_TEXT(r->id), DB_INT(a->now), DB_INT(r->expires_at),
                              DB_INT(prefix_max)),
                      &res);
    if (rc == DB_OK && db_result_rows(res) == 0)
        rc = DB_ERR_NOT_FOUND;
    if (rc) {
        db_result_free(res);
        return rc;
    }
    bool granted = db_result_int(res, 0, 0) == 1;
    r->bytes = db_result_int(res, 0, 1);
    r->objects = db_result_int(res, 0, 2);
    r->size = a->size;
    r->prefix_len = (size_t)db_result_int(res, 0, 3);
    struct usage_pocket p;
    usage_totals_read(res, 4, &p);
    db_result_free(res);
    if (a->pocket)
        *a->pocket = p;
    if (granted)
        return DB_OK;
    if (r->prefix_len + klen > a->key_max)
        return USAGE_KEY_TOO_LONG;
    return usage_refusal(&p);
}

int usage_reserve(struct db_conn *c, const char *pocket_id, const char *key, size_t key_max,
                  int64_t size, int64_t now, int64_t ttl, struct usage_reservation *out,
                  struct usage_pocket *pocket)
{
    memset(out, 0, sizeof(*out));
    if (!pocket_id || !key || !*key || size < 0 || size > USAGE_MAX_OBJECT_SIZE || ttl <= 0)
        return DB_ERR_INVALID;
    struct reserve_args a = {pocket_id, key, key_max, size, now, ttl, out, pocket};
    if (secret_id_ordered("rsv_", out->id, sizeof(out->id)) != 0)
        return DB_ERR_NOMEM;
    int rc = db_conn_dialect(c) == DB_POSTGRES ? db_retry(c, reserve_pg, &a)
                                               : db_transact_on(c, reserve_tx, &a);
    if (rc != DB_OK)
        out->id[0] = '\0';
    return rc;
}

/* ---- commit ---- */

struct commit_args {
    const char *pocket_id, *id, *etag;
    int64_t size, now;
    struct usage_pocket *after;
};

static int commit_tx(struct db_conn *c, void *arg)
{
    struct commit_args *a = arg;
    int rc = usage_lock_pocket(c, a->pocket_id, NULL);
    if (rc)
        return rc;
    struct db_result *res = NULL;
    rc = db_query(c,
                  "DELETE FROM reservations WHERE id = $1 AND pocket_id = $2"
                  " RETURNING key, bytes, objects",
                  DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->pocket_id)), &res);
    if (rc)
        return rc;
    if (db_result_rows(res) == 0) {
        db_result_free(res);
        return DB_ERR_NOT_FOUND;
    }
    int64_t rbytes = db_result_int(res, 0, 1), robjects = db_result_int(res, 0, 2);
    int64_t dbytes = 0, dobjects = 0;
    rc = ledger_apply(c, a->pocket_id, db_result_text(res, 0, 0), a->size, a->etag, a->now, &dbytes,
                      &dobjects);
    db_result_free(res);
    if (rc == DB_OK)
        rc = totals_adjust(c, a->pocket_id, dbytes, dobjects, rbytes, robjects, a->after);
    return rc;
}

/* PostgreSQL: pockity_commit (pockityd/mig_quota.h) locks the pocket, deletes
 * the reservation, reads the key's ledger row, writes the new one and moves the
 * totals as commit_tx does: one statement in autocommit. Its one row: the
 * totals after (TOTALS_COLUMNS); no row: no such reservation in this pocket. */
#define PG_COMMIT "SELECT * FROM pockity_commit($1, $2, $3, $4, $5)"

static int commit_pg(struct db_conn *c, void *arg)
{
    const struct commit_args *a = arg;
    struct db_result *res = NULL;
    int rc = db_query(c, PG_COMMIT,
                      DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->id), DB_INT(a->size),
                              DB_TEXT(a->etag), DB_INT(a->now)),
                      &res);
    if (rc == DB_OK && db_result_rows(res) == 0)
        rc = DB_ERR_NOT_FOUND;
    if (rc == DB_OK && a->after)
        pocket_read(res, a->after);
    db_result_free(res);
    return rc;
}

int usage_commit(struct db_conn *c, const char *pocket_id, const char *reservation_id, int64_t size,
                 const char *etag, int64_t now, struct usage_pocket *after)
{
    if (!pocket_id || !reservation_id || size < 0 || size > USAGE_MAX_OBJECT_SIZE)
        return DB_ERR_INVALID;
    struct commit_args a = {pocket_id, reservation_id, etag, size, now, after};
    return db_conn_dialect(c) == DB_POSTGRES ? db_retry(c, commit_pg, &a)
                                             : db_transact_on(c, commit_tx, &a);
}

/* ---- release ---- */

struct release_args {
    const char *pocket_id, *id;
    int64_t until;
};

static int release_tx(struct db_conn *c, void *arg)
{
    struct release_args *a = arg;
    int rc = usage_lock_pocket(c, a->pocket_id, NULL);
    if (rc == DB_OK)
        rc = reservation_drop(c, a->pocket_id, a->id, a->until);
    return rc;
}

int usage_release(struct db_conn *c, const char *pocket_id, const char *reservation_id)
{
    if (!pocket_id || !reservation_id)
        return DB_ERR_INVALID;
    struct release_args a = {pocket_id, reservation_id, INT64_MAX};
    return db_transact_on(c, release_tx, &a);
}

/* ---- deletions ---- */

struct deleted_args {
    const char *pocket_id;
    const char *const *keys;
    size_t n;
    int64_t now;
    int64_t *deleted;
    struct usage_pocket *after;
};

static int deleted_tx(struct db_conn *c, void *arg)
{
    struct deleted_args *a = arg;
    *a->deleted = 0;
    int rc = usage_lock_pocket(c, a->pocket_id, NULL);
    int64_t bytes = 0, objects = 0;
    for (size_t i = 0; rc == DB_OK && i < a->n; i++) {
        int64_t db = 0, dobj = 0;
        rc = ledger_apply(c, a->pocket_id, a->keys[i], -1, NULL, a->now, &db, &dobj);
        bytes += db;
        objects += dobj;
    }
    if (rc == DB_OK && objects != 0)
        rc = totals_adjust(c, a->pocket_id, bytes, objects, 0, 0, a->after);
    else if (rc == DB_OK && a->after)
        rc = usage_get(c, a->pocket_id, a->after);
    if (rc == DB_OK)
        *a->deleted = -objects;
    return rc;
}

int usage_mark_deleted(struct db_conn *c, const char *pocket_id, const char *const *keys, size_t n,
                       int64_t now, int64_t *deleted, struct usage_pocket *after)
{
    *deleted = 0;
    if (!pocket_id || (n && !keys))
        return DB_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if (!keys[i] || !*keys[i])
            return DB_ERR_INVALID;
    struct deleted_args a = {pocket_id, keys, n, now, deleted, after};
    return db_transact_on(c, deleted_tx, &a);
}

int usage_ledger_set(struct db_conn *c, const char *pocket_id, const char *key, int64_t size,
                     const char *etag, int64_t now, int64_t *bytes_delta, int64_t *objects_delta)
{
    int64_t db = 0, dobj = 0;
    if (!pocket_id || !key || !*key || size > USAGE_MAX_OBJECT_SIZE)
        return DB_ERR_INVALID;
    int rc = ledger_apply(c, pocket_id, key, size, etag, now, &db, &dobj);
    if (rc == DB_OK && (db || dobj))
        rc = totals_adjust(c, pocket_id, db, dobj, 0, 0, NULL);
    if (bytes_delta)
        *bytes_delta = rc == DB_OK ? db : 0;
    if (objects_delta)
        *objects_delta = rc == DB_OK ? dobj : 0;
    return rc;
}

/* ---- sweep ---- */

#define SWEEP_PAGE 256

int usage_sweep(struct db *db, int64_t now, const char *table,
                int (*release)(struct db_conn *c, const char *pocket_id, const char *id,
                               int64_t now))
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT id, pocket_id FROM %s WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
             table);
    struct db_conn *c = db_acquire(db);
    if (!c)
        return -DB_ERR_BUSY;
    int released = 0, rc = DB_OK;
    for (;;) {
        struct db_result *page = NULL;
        rc = db_query(c, sql, DB_ARGS(DB_INT(now), DB_INT(SWEEP_PAGE)), &page);
        if (rc)
            break;
        size_t rows = db_result_rows(page);
        for (size_t i = 0; rc == DB_OK && i < rows; i++) {
            rc = release(c, db_result_text(page, i, 1), db_result_text(page, i, 0), now);
            if (rc == DB_OK)
                released++;
            else if (rc == DB_ERR_NOT_FOUND) /* committed, renewed or released meanwhile */
                rc = DB_OK;
        }
        db_result_free(page);
        if (rc || rows < SWEEP_PAGE)
            break;
    }
    if (rc)
        log_warn("usage: sweeping expired %s: %s: %s", table, db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
    return rc ? -rc : released;
}

static int release_expired(struct db_conn *c, const char *pocket_id, const char *id, int64_t now)
{
    struct release_args a = {pocket_id, id, now};
    return db_transact_on(c, release_tx, &a);
}

int usage_sweep_expired(struct db *db, int64_t now)
{
    return usage_sweep(db, now, "reservations", release_expired);
}
