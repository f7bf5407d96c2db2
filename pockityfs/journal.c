/* journal: SQLite-backed list of uploads still owed to S3. */
#include "journal.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

struct journal {
    pthread_mutex_t lock; /* guards db and the statements; taken before qlock */
    sqlite3 *db;
    sqlite3_stmt *put, *remove; /* prepared once: each close and upload runs one */
    sqlite3_stmt *begin, *commit, *rollback;
    pthread_mutex_t qlock; /* guards the queued removals (journal_uploaded) */
    char **queue;
    size_t queued, queue_cap;
    char **flight; /* the removals a write_batch runs now */
    size_t n_flight;
};

static const char *const put_sql = "INSERT OR REPLACE INTO pending"
                                   " (path, file, size, mode, uid, gid, mtime, updated, data)"
                                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char *const remove_sql = "DELETE FROM pending WHERE path = ?1";

/* The mount holds the cache folder's lock (see main.c), so no other process
 * opens the journal while it runs: exclusive locking takes SQLite's file
 * locks once and keeps the WAL index in memory, which saves a quarter of
 * the CPU of each commit. It must precede the switch to WAL. */
static const char *const schema =
        "PRAGMA locking_mode=EXCLUSIVE;"
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS pending ("
        " path TEXT PRIMARY KEY, file TEXT NOT NULL, size INTEGER NOT NULL,"
        " mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
        " mtime INTEGER NOT NULL, updated INTEGER NOT NULL, data BLOB);"
        "CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, key TEXT NOT NULL);";

/* Journals written before rows could hold the content lack its column. */
static int add_data_column(sqlite3 *db, char **msg)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
            db, "SELECT count(*) FROM pragma_table_info('pending') WHERE name = 'data'", -1, &st,
            NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st) == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(db);
    int has = rc == SQLITE_OK && sqlite3_column_int(st, 0) > 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_OK || has)
        return rc;
    return sqlite3_exec(db, "ALTER TABLE pending ADD COLUMN data BLOB", NULL, NULL, msg);
}

static void finalize_all(struct journal *j)
{
    sqlite3_finalize(j->put);
    sqlite3_finalize(j->remove);
    sqlite3_finalize(j->begin);
    sqlite3_finalize(j->commit);
    sqlite3_finalize(j->rollback);
}

/* Run a prepared statement to its end, then make it ready for the next use. */
static int step_done(struct journal *j, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        log_error("journal: cannot %s: %s", what, sqlite3_errmsg(j->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Append path (owned from now on) to the queued removals. Returns 0 or
 * -ENOMEM (path freed). Caller holds j->qlock. */
static int queue_push(struct journal *j, char *path)
{
    if (j->queued == j->queue_cap) {
        size_t nc = j->queue_cap ? j->queue_cap * 2 : JOURNAL_BATCH;
        char **q = realloc(j->queue, nc * sizeof(*q));
        if (!q) {
            free(path);
            return -ENOMEM;
        }
        j->queue = q;
        j->queue_cap = nc;
    }
    j->queue[j->queued++] = path;
    return 0;
}

/* Give back to the queue the removals q (n of them, room for cap) that a
 * failed transaction took; those queued meanwhile follow them. Caller
 * holds j->qlock. */
static void requeue(struct journal *j, char **q, size_t n, size_t cap)
{
    if (!n) {
        free(q);
        return;
    }
    size_t total = n + j->queued;
    if (cap < total) {
        char **m = realloc(q, total * sizeof(*q));
        if (!m) {
            log_error("journal: out of memory: the rows of %zu uploaded files stay (replayed)", n);
            for (size_t i = 0; i < n; i++)
                free(q[i]);
            free(q);
            return;
        }
        q = m;
        cap = total;
    }
    if (j->queued)
        memcpy(q + n, j->queue, j->queued * sizeof(*q));
    free(j->queue);
    j->queue = q;
    j->queued = total;
    j->queue_cap = cap;
}

/* Run in one transaction: the queued removals, the removal of the row of
 * also (may be NULL), then extra (a prepared statement with its parameters
 * bound, or NULL). When it fails, the queued removals stay queued. Returns
 * 0 or -EIO. Caller holds j->lock. */
static int write_batch(struct journal *j, const char *also, sqlite3_stmt *extra, const char *what)
{
    pthread_mutex_lock(&j->qlock);
    char **q = j->queue;
    size_t n = j->queued, cap = j->queue_cap;
    j->queue = NULL;
    j->queued = j->queue_cap = 0;
    j->flight = q;
    j->n_flight = n;
    pthread_mutex_unlock(&j->qlock);
    int tx = n + (also != NULL) + (extra != NULL) > 1;
    int rc = tx ? step_done(j, j->begin, "begin a transaction") : 0;
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_bind_text(j->remove, 1, q[i], -1, SQLITE_STATIC);
        rc = step_done(j, j->remove, "remove the row of an uploaded file");
    }
    if (also && !rc) {
        sqlite3_bind_text(j->remove, 1, also, -1, SQLITE_STATIC);
        rc = step_done(j, j->remove, what);
    }
    if (extra && !rc)
        rc = step_done(j, extra, what);
    else if (extra)
        sqlite3_clear_bindings(extra);
    if (tx && !rc)
        rc = step_done(j, j->commit, "commit a transaction");
    if (tx && rc && !sqlite3_get_autocommit(j->db))
        step_done(j, j->rollback, "roll back a transaction");
    pthread_mutex_lock(&j->qlock);
    j->flight = NULL;
    j->n_flight = 0;
    if (rc) {
        requeue(j, q, n, cap);
    } else {
        for (size_t i = 0; i < n; i++)
            free(q[i]);
        free(q);
    }
    pthread_mutex_unlock(&j->qlock);
    return rc;
}

int journal_open(const char *path, struct journal **out, char *err, size_t errlen)
{
    struct journal *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = sqlite3_open_v2(
            path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    char *msg = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(j->db, 5000);
        rc = sqlite3_exec(j->db, schema, NULL, NULL, &msg);
    }
    if (rc == SQLITE_OK)
        rc = add_data_column(j->db, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(j->db, put_sql, -1, &j->put, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(j->db, remove_sql, -1, &j->remove, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(j->db, "BEGIN", -1, &j->begin, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(j->db, "COMMIT", -1, &j->commit, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(j->db, "ROLLBACK", -1, &j->rollback, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the journal '%s': %s", path,
                 msg ? msg : (j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc)));
        sqlite3_free(msg);
        finalize_all(j);
        sqlite3_close(j->db);
        free(j);
        return -EIO;
    }
    pthread_mutex_init(&j->lock, NULL);
    pthread_mutex_init(&j->qlock, NULL);
    *out = j;
    return 0;
}

void journal_free(struct journal *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    write_batch(j, NULL, NULL, NULL);
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; i < j->queued; i++)
        free(j->queue[i]); /* a journal that failed to remove them replays them */
    free(j->queue);
    finalize_all(j);
    sqlite3_close(j->db);
    pthread_mutex_destroy(&j->lock);
    pthread_mutex_destroy(&j->qlock);
    free(j);
}

int journal_put(struct journal *j, const struct journal_entry *e, int durable)
{
    pthread_mutex_lock(&j->lock);
    /* WAL with synchronous=NORMAL commits without an fsync: enough for a
     * crash of the process; FULL syncs the WAL at commit */
    if (durable)
        sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    sqlite3_stmt *st = j->put;
    sqlite3_bind_text(st, 1, e->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, e->file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)e->size);
    sqlite3_bind_int64(st, 4, e->mode);
    sqlite3_bind_int64(st, 5, e->uid);
    sqlite3_bind_int64(st, 6, e->gid);
    sqlite3_bind_int64(st, 7, e->mtime);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)time(NULL));
    if (!e->file[0])
        sqlite3_bind_blob64(st, 9, e->data ? e->data : "", e->data ? e->size : 0, SQLITE_STATIC);
    int rc = write_batch(j, NULL, st, "record a pending upload");
    if (durable)
        sqlite3_exec(j->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int journal_remove(struct journal *j, const char *path)
{
    pthread_mutex_lock(&j->lock);
    int rc = write_batch(j, path, NULL, "remove a pending upload");
    pthread_mutex_unlock(&j->lock);
    return rc;
}

/* Whether the path q is path or below it. */
static int is_under(const char *q, const char *path, size_t len)
{
    return strncmp(q, path, len) == 0 && (q[len] == '\0' || q[len] == '/' || len == 0);
}

int journal_settle(struct journal *j, const char *path)
{
    size_t len = path ? strlen(path) : 0;
    pthread_mutex_lock(&j->qlock);
    int due = 0;
    for (size_t i = 0; i < j->queued && !due; i++)
        due = !path || is_under(j->queue[i], path, len);
    /* a removal another thread is committing: its end is awaited below */
    for (size_t i = 0; i < j->n_flight && !due; i++)
        due = !path || is_under(j->flight[i], path, len);
    pthread_mutex_unlock(&j->qlock);
    if (!due)
        return 0;
    pthread_mutex_lock(&j->lock); /* after the batch under way, if any */
    int rc = write_batch(j, NULL, NULL, NULL);
    pthread_mutex_unlock(&j->lock);
    return rc;
}

void journal_uploaded(struct journal *j, const char *path)
{
    char *copy = strdup(path);
    pthread_mutex_lock(&j->qlock);
    int full = copy && queue_push(j, copy) == 0 ? j->queued >= JOURNAL_BATCH : -1;
    pthread_mutex_unlock(&j->qlock);
    if (full < 0)
        journal_remove(j, path); /* out of memory: at once */
    else if (full)
        journal_settle(j, NULL);
}

void journal_entries_free(struct journal_entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++) {
        free(e[i].path);
        free(e[i].file);
        free(e[i].data);
    }
    free(e);
}

int journal_list(struct journal *j, struct journal_entry **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct journal_entry *v = NULL;
    size_t count = 0, cap = 0;
    int rc = 0;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&j->lock);
    write_batch(j, NULL, NULL, NULL); /* failed: those rows are listed, and replayed */
    if (sqlite3_prepare_v2(j->db,
                           "SELECT path, file, size, mode, uid, gid, mtime, data FROM pending"
                           " ORDER BY updated, rowid",
                           -1, &st, NULL) != SQLITE_OK) {
        log_error("journal: %s", sqlite3_errmsg(j->db));
        pthread_mutex_unlock(&j->lock);
        return -EIO;
    }
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct journal_entry *nv = realloc(v, nc * sizeof(*nv));
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        struct journal_entry *e = &v[count];
        memset(e, 0, sizeof(*e));
        const char *p = (const char *)sqlite3_column_text(st, 0);
        const char *f = (const char *)sqlite3_column_text(st, 1);
        e->path = strdup(p ? p : "");
        e->file = strdup(f ? f : "");
        count++;
        if (!e->path || !e->file) {
            rc = -ENOMEM;
            break;
        }
        e->size = (uint64_t)sqlite3_column_int64(st, 2);
        e->mode = (mode_t)sqlite3_column_int64(st, 3);
        e->uid = (uid_t)sqlite3_column_int64(st, 4);
        e->gid = (gid_t)sqlite3_column_int64(st, 5);
        e->mtime = sqlite3_column_int64(st, 6);
        if (!e->file[0]) { /* the content is in the row */
            const void *data = sqlite3_column_blob(st, 7);
            e->size = (uint64_t)sqlite3_column_bytes(st, 7);
            if (e->size && !(e->data = malloc(e->size))) {
                rc = -ENOMEM;
                break;
            }
            if (e->data)
                memcpy(e->data, data, e->size);
        }
    }
    if (rc == 0 && s != SQLITE_DONE) {
        log_error("journal: cannot list pending uploads: %s", sqlite3_errmsg(j->db));
        rc = -EIO;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    if (rc) {
        journal_entries_free(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

int journal_move(struct journal *j, const char *from, const char *to)
{
    /* bytes, not characters: paths are UTF-8 (or anything but NUL) */
    static const char *const sql = "UPDATE OR REPLACE pending SET path = ?2 || "
                                   "CAST(substr(CAST(path AS BLOB), ?3) AS TEXT)"
                                   " WHERE substr(CAST(path AS BLOB), 1, ?4) = ?1";
    size_t nf = strlen(from);
    char *prefix = malloc(nf + 2), *dest = malloc(strlen(to) + 2);
    sqlite3_stmt *st = NULL;
    int rc = -ENOMEM;
    if (prefix && dest) {
        sprintf(prefix, "%s/", from);
        sprintf(dest, "%s/", to);
        pthread_mutex_lock(&j->lock);
        rc = -EIO;
        if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_blob(st, 1, prefix, (int)nf + 1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, dest, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)nf + 2);
            sqlite3_bind_int64(st, 4, (sqlite3_int64)nf + 1);
            rc = write_batch(j, NULL, st, "move pending uploads to their new names");
        } else {
            log_error("journal: cannot move pending uploads: %s", sqlite3_errmsg(j->db));
        }
        sqlite3_finalize(st);
        pthread_mutex_unlock(&j->lock);
    }
    free(prefix);
    free(dest);
    return rc;
}

/* Run sql with text parameters a and b (b may be NULL); with batch, after
 * the queued removals, in their transaction (write_batch). changed (may be
 * NULL) receives the number of rows it changed. */
static int exec_text(struct journal *j, const char *sql, const char *a, const char *b, int batch,
                     const char *what, int *changed)
{
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&j->lock);
    int rc = -EIO;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
        if (b)
            sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
        rc = batch ? write_batch(j, NULL, st, what) : step_done(j, st, what);
        if (changed)
            *changed = rc ? 0 : sqlite3_changes(j->db);
    } else {
        log_error("journal: cannot %s: %s", what, sqlite3_errmsg(j->db));
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    return rc;
}

int journal_rename(struct journal *j, const char *from, const char *to)
{
    /* the queued removals first: one of to's row must not remove this one */
    int changed = 0;
    int rc = exec_text(j, "UPDATE OR REPLACE pending SET path = ?2 WHERE path = ?1", from, to, 1,
                       "give a pending upload its new name", &changed);
    return rc ? rc : changed ? 0 : -ENOENT;
}

int journal_upload_add(struct journal *j, const char *key, const char *id)
{
    return exec_text(j, "INSERT OR REPLACE INTO uploads (id, key) VALUES (?1, ?2)", id, key, 0,
                     "record an upload under way", NULL);
}

int journal_upload_remove(struct journal *j, const char *id)
{
    return exec_text(j, "DELETE FROM uploads WHERE id = ?1", id, NULL, 0, "remove an upload", NULL);
}

void journal_uploads_free(struct journal_upload *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].key);
        free(v[i].id);
    }
    free(v);
}

int journal_uploads(struct journal *j, struct journal_upload **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct journal_upload *v = NULL;
    size_t count = 0, cap = 0;
    int rc = -EIO, s = SQLITE_ERROR;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&j->lock);
    if (sqlite3_prepare_v2(j->db, "SELECT key, id FROM uploads ORDER BY rowid", -1, &st, NULL) ==
        SQLITE_OK) {
        rc = 0;
        while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
            if (count == cap) {
                size_t nc = cap ? cap * 2 : 8;
                struct journal_upload *nv = realloc(v, nc * sizeof(*nv));
                if (!nv) {
                    rc = -ENOMEM;
                    break;
                }
                v = nv;
                cap = nc;
            }
            struct journal_upload *u = &v[count++];
            u->key = strdup((const char *)sqlite3_column_text(st, 0));
            u->id = strdup((const char *)sqlite3_column_text(st, 1));
            if (!u->key || !u->id)
                rc = -ENOMEM;
        }
        if (rc == 0 && s != SQLITE_DONE)
            rc = -EIO;
    }
    if (rc == -EIO)
        log_error("journal: cannot list uploads under way: %s", sqlite3_errmsg(j->db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&j->lock);
    if (rc) {
        journal_uploads_free(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}
