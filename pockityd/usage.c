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

int usage_lock_prefixes(struct db_conn *c, const char *const *prefixes, size_t n, char (*ids)[64])
{
    for (size_t i = 0; i < n; i++)
        ids[i][0] = '\0';
    if (!n)
        return DB_OK;
    /* The rows come out of the sort before they are locked, so every caller
     * takes its locks in the same order. */
    struct db_result *res = NULL;
    int rc = db_query(c,
                      db_conn_dialect(c) == DB_POSTGRES
                              ? "SELECT u.i, p.id FROM unnest($1) WITH ORDINALITY AS u(prefix, i)"
                                " JOIN pockets p ON p.prefix = u.prefix ORDER BY p.id"
                                " FOR UPDATE OF p"
                              : "SELECT u.key + 1, p.id FROM json_each($1) u"
                                " JOIN pockets p ON p.prefix = u.value",
                      DB_ARGS(DB_TEXT_ARRAY(prefixes, n)), &res);
    for (size_t k = 0; rc == DB_OK && k < db_result_rows(res); k++) {
        int64_t i = db_result_int(res, k, 0);
        if (i >= 1 && (size_t)i <= n)
            snprintf(ids[i - 1], 64, "%s", db_result_text(res, k, 1));
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

/* ---- batches ---- */

/* One (pocket, key) of a batch: its ledger row as read, then as the batch
 * leaves it. */
struct batch_row {
    const char *pocket_id, *key; /* borrowed from the first change of the key */
    size_t pocket;               /* index into the batch's pockets */
    bool exists, dirty;          /* dirty: to be written */
    int64_t size, deleted, updated_at;
    char *etag, *sequencer; /* owned */
};

/* One pocket of a batch: the steps of its used totals, as sums S and lowest
 * running sums M (see totals_walk). */
struct batch_pocket {
    const char *id;
    bool moved;
    int64_t sum_bytes, low_bytes, sum_objects, low_objects;
};

struct batch {
    struct usage_change *ch;
    size_t n;
    size_t *row_of;         /* n: the row of each change */
    struct batch_row *rows; /* distinct (pocket, key), sorted */
    size_t n_rows;
    struct batch_pocket *pockets; /* distinct, sorted */
    size_t n_pockets;
};

static int change_cmp(const void *a, const void *b)
{
    const struct usage_change *x = *(const struct usage_change *const *)a;
    const struct usage_change *y = *(const struct usage_change *const *)b;
    int c = strcmp(x->pocket_id, y->pocket_id);
    if (!c)
        c = strcmp(x->key, y->key);
    return c ? c : x < y ? -1 : x > y; /* same key: in the batch's order */
}

static void batch_release(struct batch *b)
{
    for (size_t i = 0; b->rows && i < b->n_rows; i++) {
        free(b->rows[i].etag);
        free(b->rows[i].sequencer);
    }
    free(b->rows);
    free(b->row_of);
    free(b->pockets);
}

/* Group the changes by pocket and key. */
static int batch_group(struct batch *b)
{
    size_t n = b->n;
    struct usage_change **sorted = calloc(n, sizeof(*sorted));
    b->row_of = calloc(n, sizeof(*b->row_of));
    b->rows = calloc(n, sizeof(*b->rows));
    b->pockets = calloc(n, sizeof(*b->pockets));
    if (!sorted || !b->row_of || !b->rows || !b->pockets) {
        free(sorted);
        return DB_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = &b->ch[i];
    qsort(sorted, n, sizeof(*sorted), change_cmp);
    for (size_t i = 0; i < n; i++) {
        const struct usage_change *ch = sorted[i];
        const struct batch_row *last = b->n_rows ? &b->rows[b->n_rows - 1] : NULL;
        if (!last || strcmp(last->pocket_id, ch->pocket_id) || strcmp(last->key, ch->key)) {
            if (!b->n_pockets || strcmp(b->pockets[b->n_pockets - 1].id, ch->pocket_id))
                b->pockets[b->n_pockets++].id = ch->pocket_id;
            b->rows[b->n_rows++] = (struct batch_row){
                    .pocket_id = ch->pocket_id, .key = ch->key, .pocket = b->n_pockets - 1};
        }
        b->row_of[ch - b->ch] = b->n_rows - 1;
    }
    free(sorted);
    return DB_OK;
}

/* Fill row r from columns col.. of res: size, etag, sequencer, deleted, updated_at. */
static int row_read(struct batch_row *r, const struct db_result *res, size_t row, size_t col)
{
    const char *etag = db_result_text(res, row, col + 1);
    const char *seq = db_result_text(res, row, col + 2);
    r->exists = true;
    r->size = db_result_int(res, row, col);
    r->deleted = db_result_int(res, row, col + 3);
    r->updated_at = db_result_int(res, row, col + 4);
    r->etag = etag ? strdup(etag) : NULL;
    r->sequencer = seq ? strdup(seq) : NULL;
    return (etag && !r->etag) || (seq && !r->sequencer) ? DB_ERR_NOMEM : DB_OK;
}

#define ROW_COLUMNS "size, etag, sequencer, deleted, updated_at"

/* Read the batch's rows as they are: one statement on PostgreSQL; one per key
 * on SQLite, where a statement costs no round trip. */
static int batch_read(struct db_conn *c, struct batch *b)
{
    if (db_conn_dialect(c) == DB_SQLITE) {
        for (size_t i = 0; i < b->n_rows; i++) {
            struct batch_row *r = &b->rows[i];
            struct db_result *res = NULL;
            int rc = db_query(c,
                              "SELECT " ROW_COLUMNS " FROM objects WHERE pocket_id = $1"
                              " AND key = $2",
                              DB_ARGS(DB_TEXT(r->pocket_id), DB_TEXT(r->key)), &res);
            if (rc == DB_OK && db_result_rows(res))
                rc = row_read(r, res, 0, 0);
            db_result_free(res);
            if (rc)
                return rc;
        }
        return DB_OK;
    }
    const char **pockets = calloc(b->n_rows ? b->n_rows : 1, sizeof(*pockets));
    const char **keys = calloc(b->n_rows ? b->n_rows : 1, sizeof(*keys));
    struct db_result *res = NULL;
    int rc = pockets && keys ? DB_OK : DB_ERR_NOMEM;
    for (size_t i = 0; rc == DB_OK && i < b->n_rows; i++) {
        pockets[i] = b->rows[i].pocket_id;
        keys[i] = b->rows[i].key;
    }
    /* LIMIT 1 (the key is unique anyway) keeps the lookup a probe of the
     * primary key per key: a join could turn into a scan of the pockets' whole
     * ledgers when the planner's statistics lag behind a ledger that grows. */
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT u.i, o.*"
                      " FROM unnest($1, $2) WITH ORDINALITY AS u(pocket_id, key, i),"
                      " LATERAL (SELECT " ROW_COLUMNS " FROM objects"
                      " WHERE pocket_id = u.pocket_id AND key = u.key LIMIT 1) o",
                      DB_ARGS(DB_TEXT_ARRAY(pockets, b->n_rows), DB_TEXT_ARRAY(keys, b->n_rows)),
                      &res);
    for (size_t k = 0; rc == DB_OK && k < db_result_rows(res); k++) {
        int64_t i = db_result_int(res, k, 0);
        if (i < 1 || (size_t)i > b->n_rows)
            rc = DB_ERR_SQL;
        else
            rc = row_read(&b->rows[i - 1], res, k, 1);
    }
    db_result_free(res);
    free(pockets);
    free(keys);
    return rc;
}

/* Note a step of one of a pocket's used totals. One by one, the total is
 * clamped at zero after every step (totals_adjust): with S_k the sum of the
 * first k steps, x ends at max(x + S_n, S_n - min(0, S_1, ..., S_n)) (by
 * induction on n), so one UPDATE applies them all given *sum = S_n and *low =
 * min(0, S_1, ..., S_n). */
static void totals_walk(int64_t *sum, int64_t *low, int64_t step)
{
    *sum += step;
    if (*sum < *low)
        *low = *sum;
}

static int set_text(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? DB_ERR_NOMEM : DB_OK;
}

/* Apply the changes in order to the rows as read, as ledger_apply and the
 * sequencer rule would one by one, noting each change's deltas and each
 * pocket's steps. */
static int batch_apply(struct batch *b, int64_t now)
{
    for (size_t i = 0; i < b->n; i++) {
        struct usage_change *ch = &b->ch[i];
        struct batch_row *r = &b->rows[b->row_of[i]];
        ch->stale = ch->sequencer && r->exists && r->sequencer &&
                    strcmp(ch->sequencer, r->sequencer) <= 0;
        ch->bytes_delta = ch->objects_delta = 0;
        if (ch->stale)
            continue;
        bool live = r->exists && r->deleted == 0;
        int64_t old = live ? r->size : 0;
        int rc = DB_OK;
        if (ch->size >= 0) {
            r->exists = true; /* a new row's sequencer is NULL: r's already is */
            r->size = ch->size;
            r->deleted = 0;
            r->updated_at = now;
            r->dirty = true;
            ch->bytes_delta = ch->size - old;
            ch->objects_delta = live ? 0 : 1;
            rc = set_text(&r->etag, ch->etag);
        } else if (live) {
            r->size = 0;
            r->deleted = 1;
            r->updated_at = now;
            r->dirty = true;
            ch->bytes_delta = -old;
            ch->objects_delta = -1;
            rc = set_text(&r->etag, NULL);
        }
        if (rc == DB_OK && ch->sequencer) {
            /* remembered also for the removal of a key the ledger never had:
             * a late create of it then reads as stale */
            if (!r->exists) {
                r->exists = true;
                r->size = 0;
                r->deleted = 1;
                r->updated_at = now;
                rc = set_text(&r->etag, NULL);
            }
            r->dirty = true;
            if (rc == DB_OK)
                rc = set_text(&r->sequencer, ch->sequencer);
        }
        if (rc)
            return rc;
        if (ch->bytes_delta || ch->objects_delta) {
            struct batch_pocket *p = &b->pockets[r->pocket];
            p->moved = true;
            totals_walk(&p->sum_bytes, &p->low_bytes, ch->bytes_delta);
            totals_walk(&p->sum_objects, &p->low_objects, ch->objects_delta);
        }
    }
    return DB_OK;
}

#define ROW_UPSERT_SET                                                                             \
    " ON CONFLICT (pocket_id, key) DO UPDATE SET size = excluded.size, etag = excluded.etag,"      \
    " sequencer = excluded.sequencer, deleted = excluded.deleted,"                                 \
    " updated_at = excluded.updated_at"

/* SQLite: write the rows the changes touched, whole, then move each pocket's
 * used totals by its steps (see totals_walk). */
static int batch_write_sqlite(struct db_conn *c, const struct batch *b)
{
    int rc = DB_OK;
    for (size_t i = 0; rc == DB_OK && i < b->n_rows; i++) {
        const struct batch_row *r = &b->rows[i];
        if (r->dirty)
            rc = db_exec(c,
                         "INSERT INTO objects (pocket_id, key, " ROW_COLUMNS ")"
                         " VALUES ($1, $2, $3, $4, $5, $6, $7)" ROW_UPSERT_SET,
                         DB_ARGS(DB_TEXT(r->pocket_id), DB_TEXT(r->key), DB_INT(r->size),
                                 DB_TEXT(r->etag), DB_TEXT(r->sequencer), DB_INT(r->deleted),
                                 DB_INT(r->updated_at)),
                         NULL);
    }
    for (size_t i = 0; rc == DB_OK && i < b->n_pockets; i++) {
        const struct batch_pocket *p = &b->pockets[i];
        if (p->moved)
            rc = db_exec(c,
                         "UPDATE pockets SET used_bytes = CASE WHEN used_bytes + $2 < $2 - $3"
                         " THEN $2 - $3 ELSE used_bytes + $2 END,"
                         " used_objects = CASE WHEN used_objects + $4 < $4 - $5"
                         " THEN $4 - $5 ELSE used_objects + $4 END WHERE id = $1",
                         DB_ARGS(DB_TEXT(p->id), DB_INT(p->sum_bytes), DB_INT(p->low_bytes),
                                 DB_INT(p->sum_objects), DB_INT(p->low_objects)),
                         NULL);
    }
    return rc;
}

/* The columns of batch_write_pg's arrays. */
struct batch_arrays {
    /* the rows written */
    const char **pockets, **keys, **etags, **seqs;
    int64_t *sizes, *deleted, *updated;
    /* the pockets moved */
    const char **ids;
    int64_t *sb, *lb, *so, *lo;
};

static void arrays_release(struct batch_arrays *a)
{
    free(a->pockets);
    free(a->keys);
    free(a->etags);
    free(a->seqs);
    free(a->sizes);
    free(a->deleted);
    free(a->updated);
    free(a->ids);
    free(a->sb);
    free(a->lb);
    free(a->so);
    free(a->lo);
}

/* PostgreSQL: the same in one statement (a data-modifying WITH query), the
 * rows and the totals as arrays. */
static int batch_write_pg(struct db_conn *c, const struct batch *b)
{
    size_t n = 0, m = 0, rows = b->n_rows ? b->n_rows : 1, ps = b->n_pockets ? b->n_pockets : 1;
    struct batch_arrays a = {
            .pockets = calloc(rows, sizeof(char *)),
            .keys = calloc(rows, sizeof(char *)),
            .etags = calloc(rows, sizeof(char *)),
            .seqs = calloc(rows, sizeof(char *)),
            .sizes = calloc(rows, sizeof(int64_t)),
            .deleted = calloc(rows, sizeof(int64_t)),
            .updated = calloc(rows, sizeof(int64_t)),
            .ids = calloc(ps, sizeof(char *)),
            .sb = calloc(ps, sizeof(int64_t)),
            .lb = calloc(ps, sizeof(int64_t)),
            .so = calloc(ps, sizeof(int64_t)),
            .lo = calloc(ps, sizeof(int64_t)),
    };
    if (!a.pockets || !a.keys || !a.etags || !a.seqs || !a.sizes || !a.deleted || !a.updated ||
        !a.ids || !a.sb || !a.lb || !a.so || !a.lo) {
        arrays_release(&a);
        return DB_ERR_NOMEM;
    }
    for (size_t i = 0; i < b->n_rows; i++) {
        const struct batch_row *r = &b->rows[i];
        if (!r->dirty)
            continue;
        a.pockets[n] = r->pocket_id;
        a.keys[n] = r->key;
        a.sizes[n] = r->size;
        a.etags[n] = r->etag;
        a.seqs[n] = r->sequencer;
        a.deleted[n] = r->deleted;
        a.updated[n] = r->updated_at;
        n++;
    }
    for (size_t i = 0; i < b->n_pockets; i++) {
        const struct batch_pocket *p = &b->pockets[i];
        if (!p->moved)
            continue;
        a.ids[m] = p->id;
        a.sb[m] = p->sum_bytes;
        a.lb[m] = p->low_bytes;
        a.so[m] = p->sum_objects;
        a.lo[m] = p->low_objects;
        m++;
    }
    int rc = DB_OK;
    if (n || m)
        rc = db_exec(c,
                     "WITH w AS (INSERT INTO objects (pocket_id, key, " ROW_COLUMNS ")"
                     " SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7)" ROW_UPSERT_SET ")"
                     " UPDATE pockets SET used_bytes = CASE WHEN used_bytes + d.sb < d.sb - d.lb"
                     " THEN d.sb - d.lb ELSE used_bytes + d.sb END,"
                     " used_objects = CASE WHEN used_objects + d.so < d.so - d.lo"
                     " THEN d.so - d.lo ELSE used_objects + d.so END"
                     " FROM unnest($8, $9, $10, $11, $12) AS d(id, sb, lb, so, lo)"
                     " WHERE pockets.id = d.id",
                     DB_ARGS(DB_TEXT_ARRAY(a.pockets, n), DB_TEXT_ARRAY(a.keys, n),
                             DB_INT_ARRAY(a.sizes, n), DB_TEXT_ARRAY(a.etags, n),
                             DB_TEXT_ARRAY(a.seqs, n), DB_INT_ARRAY(a.deleted, n),
                             DB_INT_ARRAY(a.updated, n), DB_TEXT_ARRAY(a.ids, m),
                             DB_INT_ARRAY(a.sb, m), DB_INT_ARRAY(a.lb, m), DB_INT_ARRAY(a.so, m),
                             DB_INT_ARRAY(a.lo, m)),
                     NULL);
    arrays_release(&a);
    return rc;
}

int usage_ledger_set_many(struct db_conn *c, struct usage_change *changes, size_t n, int64_t now)
{
    if (n && !changes)
        return DB_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        const struct usage_change *ch = &changes[i];
        if (!ch->pocket_id || !ch->key || !*ch->key || ch->size > USAGE_MAX_OBJECT_SIZE)
            return DB_ERR_INVALID;
    }
    if (!n)
        return DB_OK;
    struct batch b = {.ch = changes, .n = n};
    int rc = batch_group(&b);
    if (rc == DB_OK)
        rc = batch_read(c, &b);
    if (rc == DB_OK)
        rc = batch_apply(&b, now);
    if (rc == DB_OK)
        rc = db_conn_dialect(c) == DB_POSTGRES ? batch_write_pg(c, &b) : batch_write_sqlite(c, &b);
    batch_release(&b);
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
