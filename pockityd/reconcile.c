/* reconcile: the ledger corrected to what S3 lists, under a per-pocket lease,
 * at a bounded listing rate; abandoned multipart uploads aborted; pockets
 * being deleted emptied in the background. */
#include "reconcile.h"
#include "roles.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "events.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "s3.h"
#include "secret.h"
#include "usage.h"

#define BATCH_MAX      1000 /* corrections per transaction */
#define WAIT_STEP_MS   100
#define SETUP_ATTEMPTS 5
#define ETAG_MAX       128

/* ---- listing rate, shared by every run of the process ---- */

static pthread_mutex_t rate_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t rate_next_ns; /* guarded by rate_lock: when the next page may start */

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Wait for this process's turn to list a page. Returns -1 when stopping. */
static int rate_wait(struct app *app)
{
    int64_t rate = app->cfg.reconcile_list_rate > 0 ? app->cfg.reconcile_list_rate : 20;
    pthread_mutex_lock(&rate_lock);
    int64_t now = mono_ns(), slot = rate_next_ns > now ? rate_next_ns : now;
    rate_next_ns = slot + 1000000000 / rate;
    pthread_mutex_unlock(&rate_lock);
    while (slot > now) {
        if (jobs_stopping(app))
            return -1;
        int64_t ms = (slot - now) / 1000000 + 1;
        sleep_ms(ms < WAIT_STEP_MS ? ms : WAIT_STEP_MS);
        now = mono_ns();
    }
    return jobs_stopping(app) ? -1 : 0;
}

/* ---- leases ---- */

struct lease {
    char pocket_id[64];
    char holder[40];
};

static int lease_take(struct db_conn *c, struct lease *l, int64_t now, int64_t done_before)
{
    int rc = db_exec(c,
                     "INSERT INTO reconcile_leases (pocket_id) VALUES ($1)"
                     " ON CONFLICT (pocket_id) DO NOTHING",
                     DB_ARGS(DB_TEXT(l->pocket_id)), NULL);
    int64_t changes = 0;
    if (rc == DB_OK)
        rc = db_exec(c,
                     "UPDATE reconcile_leases SET holder = $2, expires_at = $3"
                     " WHERE pocket_id = $1 AND (holder IS NULL OR expires_at <= $4)"
                     " AND last_done_at <= $5",
                     DB_ARGS(DB_TEXT(l->pocket_id), DB_TEXT(l->holder),
                             DB_INT(now + RECONCILE_LEASE_SECONDS), DB_INT(now),
                             DB_INT(done_before)),
                     &changes);
    return rc ? rc : changes == 1 ? DB_OK : DB_ERR_BUSY;
}

/* Extend the lease; DB_ERR_BUSY when another run took it (ours expired). */
static int lease_renew(struct db_conn *c, const struct lease *l)
{
    int64_t changes = 0;
    int rc = db_exec(c,
                     "UPDATE reconcile_leases SET expires_at = $3 WHERE pocket_id = $1"
                     " AND holder = $2",
                     DB_ARGS(DB_TEXT(l->pocket_id), DB_TEXT(l->holder),
                             DB_INT(api_now() + RECONCILE_LEASE_SECONDS)),
                     &changes);
    return rc ? rc : changes == 1 ? DB_OK : DB_ERR_BUSY;
}

static void lease_release(struct db_conn *c, const struct lease *l, bool done, bool purged)
{
    int64_t now = api_now();
    int rc = db_exec(c,
                     "UPDATE reconcile_leases SET holder = NULL, expires_at = 0,"
                     " last_done_at = CASE WHEN $3 = 1 THEN $4 ELSE last_done_at END,"
                     " purged_at = CASE WHEN $5 = 1 THEN $4 ELSE purged_at END"
                     " WHERE pocket_id = $1 AND holder = $2",
                     DB_ARGS(DB_TEXT(l->pocket_id), DB_TEXT(l->holder), DB_INT(done ? 1 : 0),
                             DB_INT(now), DB_INT(purged ? 1 : 0)),
                     NULL);
    if (rc)
        log_warn("reconcile: releasing the lease of '%s': %s", l->pocket_id, db_strerror(rc));
}

/* ---- the ledger side ---- */

struct row {
    char *key;
    int64_t size;
};

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct row *)a)->key, ((const struct row *)b)->key);
}

/* The pocket's live ledger rows, sorted by key in byte order (S3's listing
 * order). */
static int ledger_load(struct db_conn *c, const char *pocket_id, struct row **out, size_t *n)
{
    struct db_result *res = NULL;
    *out = NULL;
    *n = 0;
    int rc = db_query(c, "SELECT key, size FROM objects WHERE pocket_id = $1 AND deleted = 0",
                      DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc)
        return rc;
    size_t rows = db_result_rows(res);
    struct row *r = calloc(rows ? rows : 1, sizeof(*r));
    if (!r) {
        db_result_free(res);
        return DB_ERR_NOMEM;
    }
    for (size_t i = 0; i < rows; i++) {
        r[i].key = strdup(db_result_text(res, i, 0));
        r[i].size = db_result_int(res, i, 1);
        if (!r[i].key) {
            for (size_t j = 0; j < i; j++)
                free(r[j].key);
            free(r);
            db_result_free(res);
            return DB_ERR_NOMEM;
        }
    }
    db_result_free(res);
    qsort(r, rows, sizeof(*r), row_cmp);
    *out = r;
    *n = rows;
    return DB_OK;
}

static void rows_free(struct row *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        free(r[i].key);
    free(r);
}

/* A change the pass wants: key to size (live) or, size < 0, tombstone. */
struct fix {
    char *key;
    int64_t size;
    char etag[ETAG_MAX];
};

struct pass {
    struct app *app;
    const char *pocket_id;
    int64_t started; /* rows written at or after this are left alone */
    struct fix fixes[BATCH_MAX];
    size_t n_fixes;
    bool busy[BATCH_MAX];                   /* of each fix, in the current flush */
    struct usage_change changes[BATCH_MAX]; /* of the fixes not busy */
    bool final;                             /* the last flush: also recompute the totals */
    /* results of the flushes so far */
    bool corrected;
    struct reconcile_totals before, after;
    int64_t keys;
    uint64_t drift_bytes;
    /* of the current attempt of a flush */
    int64_t tx_keys;
    uint64_t tx_bytes;
    struct reconcile_totals tx_before, tx_after;
};

static void fixes_clear(struct pass *p)
{
    for (size_t i = 0; i < p->n_fixes; i++)
        free(p->fixes[i].key);
    p->n_fixes = 0;
}

/* Which keys of the batch the pass must leave alone (p->busy): a reservation
 * may mean an upload in flight, and a row written since the pass started is
 * newer than the listing. One statement for the whole batch: the pocket's
 * reservations read once, and a probe of the ledger per key (a scalar
 * subquery, which no planner turns into a scan of the whole ledger). */
static int keys_busy(struct db_conn *c, struct pass *p)
{
    const char *keys[BATCH_MAX];
    for (size_t i = 0; i < p->n_fixes; i++) {
        keys[i] = p->fixes[i].key;
        p->busy[i] = false;
    }
    struct db_result *res = NULL;
    int rc = db_query(
            c,
            db_conn_dialect(c) == DB_POSTGRES
                    ? "SELECT u.i FROM unnest($2) WITH ORDINALITY AS u(key, i)"
                      " WHERE u.key IN (SELECT key FROM reservations WHERE pocket_id = $1)"
                      " OR (SELECT updated_at FROM objects WHERE pocket_id = $1"
                      " AND key = u.key) >= $3"
                    : "SELECT u.key + 1 FROM json_each($2) u"
                      " WHERE u.value IN (SELECT key FROM reservations WHERE pocket_id = $1)"
                      " OR (SELECT updated_at FROM objects WHERE pocket_id = $1"
                      " AND key = u.value) >= $3",
            DB_ARGS(DB_TEXT(p->pocket_id), DB_TEXT_ARRAY(keys, p->n_fixes), DB_INT(p->started)),
            &res);
    for (size_t k = 0; rc == DB_OK && k < db_result_rows(res); k++) {
        int64_t i = db_result_int(res, k, 0);
        if (i >= 1 && (size_t)i <= p->n_fixes)
            p->busy[i - 1] = true;
    }
    db_result_free(res);
    return rc;
}

/* Apply the batch's fixes but those of busy keys, as one batch of the ledger. */
static int fixes_apply(struct db_conn *c, struct pass *p)
{
    int rc = p->n_fixes ? keys_busy(c, p) : DB_OK;
    size_t n = 0;
    for (size_t i = 0; rc == DB_OK && i < p->n_fixes; i++) {
        const struct fix *f = &p->fixes[i];
        if (!p->busy[i])
            p->changes[n++] = (struct usage_change){
                    .pocket_id = p->pocket_id,
                    .key = f->key,
                    .size = f->size,
                    .etag = f->etag[0] ? f->etag : NULL,
            };
    }
    if (rc == DB_OK)
        rc = usage_ledger_set_many(c, p->changes, n, api_now());
    for (size_t i = 0; rc == DB_OK && i < n; i++) {
        int64_t db = p->changes[i].bytes_delta;
        if (db || p->changes[i].objects_delta) {
            p->tx_keys++;
            p->tx_bytes += (uint64_t)(db < 0 ? -db : db);
        }
    }
    return rc;
}

static int flush_tx(struct db_conn *c, void *arg)
{
    struct pass *p = arg;
    p->tx_keys = 0;
    p->tx_bytes = 0;
    struct usage_pocket before, after;
    int rc = usage_lock_pocket(c, p->pocket_id, NULL);
    if (rc == DB_OK)
        rc = usage_get(c, p->pocket_id, &before);
    if (rc == DB_OK)
        rc = fixes_apply(c, p);
    if (rc == DB_OK && p->final) {
        /* The totals drift from the ledger only through bugs or clamping;
         * put them back to the ledger's sums. */
        struct db_result *res = NULL;
        rc = db_query_row(c,
                          "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM objects"
                          " WHERE pocket_id = $1 AND deleted = 0",
                          DB_ARGS(DB_TEXT(p->pocket_id)), &res);
        if (rc == DB_OK) {
            int64_t bytes = db_result_int(res, 0, 0), objects = db_result_int(res, 0, 1);
            struct usage_pocket now;
            rc = usage_get(c, p->pocket_id, &now);
            if (rc == DB_OK && (now.used_bytes != bytes || now.used_objects != objects)) {
                rc = db_exec(c,
                             "UPDATE pockets SET used_bytes = $2, used_objects = $3 WHERE id = $1",
                             DB_ARGS(DB_TEXT(p->pocket_id), DB_INT(bytes), DB_INT(objects)), NULL);
                int64_t d = now.used_bytes - bytes;
                p->tx_bytes += (uint64_t)(d < 0 ? -d : d);
            }
        }
        db_result_free(res);
    }
    if (rc == DB_OK)
        rc = usage_get(c, p->pocket_id, &after);
    if (rc)
        return rc;
    p->tx_before = (struct reconcile_totals){before.used_bytes, before.used_objects};
    p->tx_after = (struct reconcile_totals){after.used_bytes, after.used_objects};
    if (!p->tx_keys && before.used_bytes == after.used_bytes &&
        before.used_objects == after.used_objects)
        return DB_OK;
    return api_audit(NULL, c, "system", NULL, "usage.correct", "pocket", p->pocket_id,
                     json_pack("{s:{s:I, s:I}, s:{s:I, s:I}, s:I}", "before", "bytes",
                               (json_int_t)before.used_bytes, "objects",
                               (json_int_t)before.used_objects, "after", "bytes",
                               (json_int_t)after.used_bytes, "objects",
                               (json_int_t)after.used_objects, "keys", (json_int_t)p->tx_keys));
}

static int flush(struct pass *p)
{
    if (!p->n_fixes && !p->final)
        return DB_OK;
    int rc = db_transact(p->app->db, flush_tx, p);
    fixes_clear(p);
    if (rc)
        return rc;
    bool changed = p->tx_keys || p->tx_before.bytes != p->tx_after.bytes ||
                   p->tx_before.objects != p->tx_after.objects;
    if (!changed)
        return DB_OK;
    if (!p->corrected)
        p->before = p->tx_before;
    p->corrected = true;
    p->after = p->tx_after;
    p->keys += p->tx_keys;
    p->drift_bytes += p->tx_bytes;
    metrics_counter_add("pockityd_usage_drift_keys_total", NULL, NULL, (uint64_t)p->tx_keys);
    metrics_counter_add("pockityd_usage_drift_bytes_total", NULL, NULL, p->tx_bytes);
    return DB_OK;
}

static int fix_add(struct pass *p, const char *key, int64_t size, const char *etag)
{
    if (p->n_fixes == BATCH_MAX) {
        int rc = flush(p);
        if (rc)
            return rc;
    }
    struct fix *f = &p->fixes[p->n_fixes];
    f->key = strdup(key);
    if (!f->key)
        return DB_ERR_NOMEM;
    f->size = size;
    snprintf(f->etag, sizeof(f->etag), "%s", etag && strlen(etag) < ETAG_MAX ? etag : "");
    p->n_fixes++;
    return DB_OK;
}

/* ---- one pocket ---- */

enum {
    PASS_OK,
    PASS_S3,
    PASS_DB,
    PASS_LOST,
    PASS_STOPPED
};

/* A page of the pocket's listing fetched by a thread of its own, at the
 * process's listing rate, while the pass writes the corrections of the page
 * before. */
struct page_ahead {
    struct app *app;
    const char *prefix;
    char *token; /* owned; NULL for the first page */
    pthread_t thread;
    bool threaded;
    bool stopped; /* the process is stopping: not listed */
    int rc;       /* of the listing */
    char detail[256];
    struct s3_list_page page; /* when listed (rc 0): the caller releases it */
};

static void *page_fetch(void *arg)
{
    struct page_ahead *a = arg;
    a->stopped = rate_wait(a->app) != 0;
    if (a->stopped)
        return NULL;
    a->rc = s3_list_objects(a->app->s3, a->prefix, NULL, a->token, NULL, 1000, &a->page);
    if (a->rc)
        snprintf(a->detail, sizeof(a->detail), "%s", s3_last_error_detail());
    return NULL;
}

/* Start fetching the page after token (NULL: the first; owned by a from now
 * on); without a thread to spare, fetch it now. */
static void page_start(struct page_ahead *a, struct app *app, const char *prefix, char *token)
{
    *a = (struct page_ahead){.app = app, .prefix = prefix, .token = token};
    a->threaded = pthread_create(&a->thread, NULL, page_fetch, a) == 0;
    if (!a->threaded)
        page_fetch(a);
}

/* Wait for the page; true when it was listed (a->page then holds it). */
static bool page_wait(struct page_ahead *a)
{
    if (a->threaded)
        pthread_join(a->thread, NULL);
    a->threaded = false;
    free(a->token);
    a->token = NULL;
    return !a->stopped && !a->rc;
}

/* Walk the pocket's listing beside its ledger and queue the differences. */
static int reconcile_pocket(struct app *app, struct db_conn *c, const struct lease *l,
                            const char *prefix, struct pass *p)
{
    struct row *rows = NULL;
    size_t n_rows = 0, at = 0, plen = strlen(prefix);
    int result = PASS_DB;
    struct page_ahead ahead;
    bool waiting = false; /* ahead holds a page not yet taken */
    /* The ledger before the listing: a listing at least as new as the rows
     * read cannot take a key back to an older state (rows written after the
     * listing: see keys_busy). */
    if (ledger_load(c, l->pocket_id, &rows, &n_rows) != DB_OK)
        goto out;
    page_start(&ahead, app, prefix, NULL);
    waiting = true;
    for (;;) {
        waiting = false;
        if (!page_wait(&ahead)) {
            if (ahead.rc)
                log_warn("reconcile: listing '%s': %s: %s", prefix, s3_strerror(ahead.rc),
                         ahead.detail);
            result = ahead.stopped ? PASS_STOPPED : PASS_S3;
            break;
        }
        struct s3_list_page page = ahead.page;
        bool more = page.is_truncated;
        int rc = lease_renew(c, l);
        if (rc)
            result = rc == DB_ERR_BUSY ? PASS_LOST : PASS_DB;
        else if (more && !page.next_token)
            result = PASS_S3;
        if (rc || (more && !page.next_token)) {
            s3_list_page_release(&page);
            break;
        }
        if (more) {
            char *token = strdup(page.next_token);
            if (!token) {
                s3_list_page_release(&page);
                break; /* PASS_DB: out of memory */
            }
            page_start(&ahead, app, prefix, token);
            waiting = true;
        }
        int drc = DB_OK;
        for (size_t i = 0; drc == DB_OK && i < page.n_objects; i++) {
            const struct s3_object_info *o = &page.objects[i];
            if (strncmp(o->key, prefix, plen) != 0 || !o->key[plen])
                continue;
            const char *key = o->key + plen;
            while (drc == DB_OK && at < n_rows && strcmp(rows[at].key, key) < 0)
                drc = fix_add(p, rows[at++].key, -1, NULL); /* gone from S3 */
            bool known = at < n_rows && strcmp(rows[at].key, key) == 0;
            if (drc == DB_OK && (!known || rows[at].size != (int64_t)o->size))
                drc = fix_add(p, key, (int64_t)o->size, o->etag);
            if (known)
                at++;
        }
        s3_list_page_release(&page);
        if (drc)
            break; /* PASS_DB */
        if (!more) {
            int rc2 = DB_OK;
            while (rc2 == DB_OK && at < n_rows)
                rc2 = fix_add(p, rows[at++].key, -1, NULL);
            p->final = true;
            result = rc2 || flush(p) ? PASS_DB : PASS_OK;
            break;
        }
    }
out:
    if (waiting && page_wait(&ahead))
        s3_list_page_release(&ahead.page);
    rows_free(rows, n_rows);
    return result;
}

/* Abort the incomplete uploads under prefix started before cutoff (all of
 * them when cutoff is INT64_MAX). */
static int abort_uploads(struct app *app, struct db_conn *c, const struct lease *l,
                         const char *prefix, int64_t cutoff, int64_t *aborted)
{
    char *key_marker = NULL, *id_marker = NULL;
    int result = PASS_OK;
    for (;;) {
        if (rate_wait(app) != 0) {
            result = PASS_STOPPED;
            break;
        }
        int rc = lease_renew(c, l);
        if (rc) {
            result = rc == DB_ERR_BUSY ? PASS_LOST : PASS_DB;
            break;
        }
        struct s3_upload_list list;
        rc = s3_multipart_list_uploads(app->s3, prefix, key_marker, id_marker, &list);
        if (rc) {
            log_warn("reconcile: listing uploads under '%s': %s: %s", prefix, s3_strerror(rc),
                     s3_last_error_detail());
            result = PASS_S3;
            break;
        }
        for (size_t i = 0; i < list.n_uploads; i++) {
            const struct s3_upload_info *u = &list.uploads[i];
            if (strncmp(u->key, prefix, strlen(prefix)) != 0 ||
                (cutoff != INT64_MAX && (u->initiated == 0 || u->initiated >= cutoff)))
                continue;
            rc = s3_multipart_abort(app->s3, u->key, u->upload_id);
            if (rc == S3_OK || rc == S3_ERR_NOT_FOUND) {
                (*aborted)++;
                metrics_counter_inc("pockityd_multipart_aborted_total");
                log_info("reconcile: aborted an incomplete upload of pocket '%s' started %lld",
                         l->pocket_id, (long long)u->initiated);
            } else {
                log_warn("reconcile: aborting an upload of pocket '%s': %s", l->pocket_id,
                         s3_strerror(rc));
            }
        }
        free(key_marker);
        free(id_marker);
        key_marker =
                list.is_truncated && list.next_key_marker ? strdup(list.next_key_marker) : NULL;
        id_marker = list.is_truncated && list.next_upload_id_marker
                            ? strdup(list.next_upload_id_marker)
                            : NULL;
        bool more = list.is_truncated && key_marker;
        s3_upload_list_release(&list);
        if (!more)
            break;
    }
    free(key_marker);
    free(id_marker);
    return result;
}

/* ---- pockets being deleted ---- */

static int delete_keys(struct app *app, const char *const *keys, size_t n, int64_t *purged)
{
    /* Ceph RGW 16.2 aborts on a DeleteObjects that triggers notifications:
     * with events on, delete one by one. */
    if (!app->cfg.events_enabled && n > 1) {
        struct s3_delete_result res;
        int rc = s3_delete_objects(app->s3, keys, n, &res);
        if (rc == S3_OK) {
            *purged += (int64_t)res.n_deleted;
            rc = res.n_failures ? S3_ERR_SERVER : S3_OK;
            s3_delete_result_release(&res);
            return rc;
        }
        if (rc != S3_ERR_INVALID_ARG) /* a key XML cannot carry: one by one */
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = s3_delete_object(app->s3, keys[i]);
        if (rc)
            return rc;
        (*purged)++;
    }
    return S3_OK;
}

struct purge_args {
    const char *pocket_id;
    int64_t purged;
    int64_t now;
};

static int purge_tx(struct db_conn *c, void *arg)
{
    struct purge_args *a = arg;
    int64_t rows = 0;
    int rc = db_exec(c,
                     "UPDATE objects SET deleted = 1, size = 0, etag = NULL, updated_at = $2"
                     " WHERE pocket_id = $1 AND deleted = 0",
                     DB_ARGS(DB_TEXT(a->pocket_id), DB_INT(a->now)), &rows);
    int64_t gone = 0;
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM reservations WHERE pocket_id = $1",
                     DB_ARGS(DB_TEXT(a->pocket_id)), &gone);
    int64_t changes = 0;
    if (rc == DB_OK)
        rc = db_exec(c,
                     "UPDATE pockets SET used_bytes = 0, used_objects = 0, reserved_bytes = 0,"
                     " reserved_objects = 0 WHERE id = $1 AND (used_bytes <> 0"
                     " OR used_objects <> 0 OR reserved_bytes <> 0 OR reserved_objects <> 0)",
                     DB_ARGS(DB_TEXT(a->pocket_id)), &changes);
    if (rc || (!rows && !gone && !changes && !a->purged))
        return rc;
    return api_audit(NULL, c, "system", NULL, "pocket.purge", "pocket", a->pocket_id,
                     json_pack("{s:I, s:I}", "objects_removed", (json_int_t)a->purged,
                               "ledger_rows", (json_int_t)rows));
}

static int purge_pocket(struct app *app, struct db_conn *c, const struct lease *l,
                        const char *prefix, struct reconcile_report *rep)
{
    char *token = NULL;
    int64_t purged = 0;
    int result = PASS_OK;
    /* End the pocket's sessions first (deleting its roles revokes them), so
     * nothing writes while it is emptied. */
    if (app->cfg.s3_scoped_roles && roles_forget(app, l->pocket_id) != 0) {
        log_warn("reconcile: cannot delete the roles of pocket '%s' yet; retrying later",
                 l->pocket_id);
        return PASS_S3;
    }
    for (;;) {
        if (rate_wait(app) != 0) {
            result = PASS_STOPPED;
            break;
        }
        int rc = lease_renew(c, l);
        if (rc) {
            result = rc == DB_ERR_BUSY ? PASS_LOST : PASS_DB;
            break;
        }
        struct s3_list_page page;
        rc = s3_list_objects(app->s3, prefix, NULL, token, NULL, 1000, &page);
        if (rc == S3_OK) {
            const char **keys = calloc(page.n_objects ? page.n_objects : 1, sizeof(*keys));
            size_t n = 0;
            for (size_t i = 0; keys && i < page.n_objects; i++)
                if (!strncmp(page.objects[i].key, prefix, strlen(prefix)))
                    keys[n++] = page.objects[i].key;
            rc = keys ? delete_keys(app, keys, n, &purged) : S3_ERR_NOMEM;
            free(keys);
        }
        free(token);
        token = NULL;
        if (rc) {
            log_warn("reconcile: emptying '%s': %s: %s", prefix, s3_strerror(rc),
                     s3_last_error_detail());
            s3_list_page_release(&page);
            result = PASS_S3;
            break;
        }
        bool more = page.is_truncated && page.next_token;
        token = more ? strdup(page.next_token) : NULL;
        s3_list_page_release(&page);
        if (!more || !token)
            break;
    }
    free(token);
    metrics_counter_add("pockityd_pocket_purged_objects_total", NULL, NULL, (uint64_t)purged);
    rep->objects_purged += purged;
    if (result == PASS_OK)
        result = abort_uploads(app, c, l, prefix, INT64_MAX, &rep->uploads_aborted);
    if (result == PASS_OK) {
        struct purge_args a = {l->pocket_id, purged, api_now()};
        if (db_transact(app->db, purge_tx, &a) != DB_OK)
            result = PASS_DB;
    }
    return result;
}

/* ---- runs ---- */

static int report_add_skipped(struct reconcile_report *r, const char *id)
{
    char(*s)[64] = realloc(r->skipped, (r->n_skipped + 1) * sizeof(*s));
    if (!s)
        return -1;
    r->skipped = s;
    snprintf(s[r->n_skipped++], 64, "%s", id);
    return 0;
}

static int report_add_correction(struct reconcile_report *r, const struct pass *p)
{
    struct reconcile_correction *c = realloc(r->corrections, (r->n_corrections + 1) * sizeof(*c));
    if (!c)
        return -1;
    r->corrections = c;
    c = &c[r->n_corrections++];
    memset(c, 0, sizeof(*c));
    snprintf(c->pocket_id, sizeof(c->pocket_id), "%s", p->pocket_id);
    c->before = p->before;
    c->after = p->after;
    c->keys = p->keys;
    return 0;
}

/* Take the pocket's lease (waiting up to wait_s), then reconcile or empty it. */
static void run_pocket(struct app *app, struct db_conn *c, const char *id, const char *prefix,
                       const char *status, enum reconcile_mode mode, int wait_s,
                       struct reconcile_report *rep)
{
    struct lease l;
    snprintf(l.pocket_id, sizeof(l.pocket_id), "%s", id);
    if (secret_id("rcl_", l.holder, sizeof(l.holder)) != 0) {
        rep->failed++;
        return;
    }
    int64_t deadline = mono_ns() + (int64_t)wait_s * 1000000000;
    int rc;
    for (;;) {
        int64_t now = api_now();
        int64_t done_before = mode == RECONCILE_DUE ? now - app->cfg.reconcile_interval : INT64_MAX;
        rc = lease_take(c, &l, now, done_before);
        if (rc != DB_ERR_BUSY || mono_ns() >= deadline || jobs_stopping(app))
            break;
        sleep_ms(WAIT_STEP_MS);
    }
    if (rc == DB_ERR_BUSY) {
        /* held by another run, or (due mode) reconciled recently */
        if (mode == RECONCILE_NOW && report_add_skipped(rep, id) != 0)
            rep->failed++;
        return;
    }
    if (rc) {
        log_warn("reconcile: lease of '%s': %s: %s", id, db_strerror(rc), db_conn_errmsg(c));
        rep->failed++;
        return;
    }
    int result;
    bool deleting = !strcmp(status, "deleting");
    struct pass *p = NULL;
    if (deleting) {
        result = purge_pocket(app, c, &l, prefix, rep);
    } else {
        p = calloc(1, sizeof(*p));
        if (!p) {
            lease_release(c, &l, false, false);
            rep->failed++;
            return;
        }
        p->app = app;
        p->pocket_id = l.pocket_id;
        p->started = api_now();
        result = reconcile_pocket(app, c, &l, prefix, p);
        fixes_clear(p);
        if (result == PASS_OK && app->cfg.multipart_max_age > 0)
            result = abort_uploads(app, c, &l, prefix, api_now() - app->cfg.multipart_max_age,
                                   &rep->uploads_aborted);
        if (p->corrected && report_add_correction(rep, p) != 0)
            rep->failed++;
        free(p);
    }
    if (result == PASS_OK) {
        rep->pockets++;
        metrics_counter_inc("pockityd_reconcile_pockets_total");
    } else if (result != PASS_STOPPED) {
        rep->failed++;
        log_warn("reconcile: pocket '%s' not finished (%s)", id,
                 result == PASS_LOST ? "lease lost"
                 : result == PASS_S3 ? "S3 failed"
                                     : "database failed");
    }
    lease_release(c, &l, result == PASS_OK, deleting && result == PASS_OK);
}

int reconcile_run(struct app *app, const char *pocket_id, enum reconcile_mode mode, int wait_s,
                  int64_t now, struct reconcile_report *out)
{
    memset(out, 0, sizeof(*out));
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return -1;
    struct db_result *res = NULL;
    int rc = db_query(c,
                      "SELECT p.id, p.prefix, p.status FROM pockets p"
                      " LEFT JOIN reconcile_leases l ON l.pocket_id = p.id"
                      " WHERE (CAST($1 AS TEXT) IS NULL OR p.id = $1)"
                      " AND ($2 = 0 OR l.pocket_id IS NULL OR l.last_done_at <= $3"
                      " OR p.status = 'deleting')"
                      " ORDER BY p.id",
                      DB_ARGS(DB_TEXT(pocket_id), DB_INT(mode == RECONCILE_DUE ? 1 : 0),
                              DB_INT(now - app->cfg.reconcile_interval)),
                      &res);
    if (rc) {
        log_warn("reconcile: listing pockets: %s: %s", db_strerror(rc), db_conn_errmsg(c));
        db_release(c);
        return -1;
    }
    for (size_t i = 0; i < db_result_rows(res) && !jobs_stopping(app); i++)
        run_pocket(app, c, db_result_text(res, i, 0), db_result_text(res, i, 1),
                   db_result_text(res, i, 2), mode, wait_s, out);
    db_result_free(res);
    db_release(c);
    return 0;
}

void reconcile_report_release(struct reconcile_report *r)
{
    if (!r)
        return;
    free(r->corrections);
    free(r->skipped);
    memset(r, 0, sizeof(*r));
}

json_t *reconcile_report_json(const struct reconcile_report *r)
{
    json_t *corr = json_array(), *skipped = json_array();
    for (size_t i = 0; corr && i < r->n_corrections; i++) {
        const struct reconcile_correction *c = &r->corrections[i];
        json_array_append_new(
                corr, json_pack("{s:s, s:{s:I, s:I}, s:{s:I, s:I}, s:I}", "pocket_id", c->pocket_id,
                                "before", "bytes", (json_int_t)c->before.bytes, "objects",
                                (json_int_t)c->before.objects, "after", "bytes",
                                (json_int_t)c->after.bytes, "objects", (json_int_t)c->after.objects,
                                "keys", (json_int_t)c->keys));
    }
    for (size_t i = 0; skipped && i < r->n_skipped; i++)
        json_array_append_new(skipped, json_string(r->skipped[i]));
    if (!corr || !skipped) {
        json_decref(corr);
        json_decref(skipped);
        return NULL;
    }
    return json_pack("{s:I, s:o, s:o, s:I, s:I, s:i}", "pockets", (json_int_t)r->pockets,
                     "corrections", corr, "skipped", skipped, "uploads_aborted",
                     (json_int_t)r->uploads_aborted, "objects_purged",
                     (json_int_t)r->objects_purged, "failed", r->failed);
}

/* ---- the job ---- */

static atomic_int events_ready;

/* Configure the bucket's notifications once per process, from the job's
 * first round so a slow S3 never delays start-up; retried with backoff, then
 * again on the next rounds. */
static void events_once(struct app *app)
{
    if (!app->cfg.events_enabled || atomic_load(&events_ready))
        return;
    for (int attempt = 0; attempt < SETUP_ATTEMPTS && !jobs_stopping(app); attempt++) {
        if (events_setup(app) == 0) {
            atomic_store(&events_ready, 1);
            return;
        }
        for (int64_t ms = 1000LL << attempt; ms > 0 && !jobs_stopping(app); ms -= WAIT_STEP_MS)
            sleep_ms(WAIT_STEP_MS);
    }
}

void reconcile_job(struct app *app, int64_t now)
{
    events_once(app);
    struct reconcile_report rep;
    if (reconcile_run(app, NULL, RECONCILE_DUE, 0, now, &rep) == 0 &&
        (rep.n_corrections || rep.uploads_aborted || rep.objects_purged || rep.failed))
        log_info("reconcile: %lld pocket(s), %zu corrected, %lld upload(s) aborted, %lld "
                 "object(s) purged, %d failed",
                 (long long)rep.pockets, rep.n_corrections, (long long)rep.uploads_aborted,
                 (long long)rep.objects_purged, rep.failed);
    reconcile_report_release(&rep);
}
