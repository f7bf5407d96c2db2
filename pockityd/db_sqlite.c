/* db_sqlite: the SQLite backend of the database layer: one sqlite3 handle per pooled
 * connection on a WAL-mode file, with a small cache of prepared statements. */
#include "buf.h"
#include "db_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STMT_CACHE_SIZE  32
#define MAX_PARAM_NUMBER 65535
#define ARRAY_MAX_BYTES  ((size_t)1 << 30) /* SQLite's default limit on one value */

struct cached_stmt {
    char *sql; /* NULL when the slot is free */
    sqlite3_stmt *stmt;
    uint64_t last_used;
};

struct sq_conn {
    sqlite3 *h;
    uint64_t tick;
    struct cached_stmt cache[STMT_CACHE_SIZE];
    void (*on_commit)(void *arg, int pages); /* set by sq_wal_handover */
    void *on_commit_arg;
    int busy_ms; /* the busy timeout set at connect */
};

static int map_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return DB_OK;
    case SQLITE_NOMEM:
        return DB_ERR_NOMEM;
    case SQLITE_CONSTRAINT:
        return DB_ERR_CONSTRAINT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return DB_ERR_RETRY;
    case SQLITE_TOOBIG:
        return DB_ERR_TOO_BIG;
    case SQLITE_CANTOPEN:
        return DB_ERR_CONN;
    default:
        return DB_ERR_SQL;
    }
}

/* Record SQLite's message for rc and return the matching status. */
static int fail(struct db_conn *c, int rc)
{
    struct sq_conn *sc = c->handle;
    db_conn_set_error(c, "sqlite: %s", sqlite3_errmsg(sc->h));
    return map_status(rc);
}

static void sq_disconnect(struct db_conn *c)
{
    struct sq_conn *sc = c->handle;
    if (!sc)
        return;
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
        sqlite3_finalize(sc->cache[i].stmt);
        free(sc->cache[i].sql);
    }
    sqlite3_close_v2(sc->h);
    free(sc);
    c->handle = NULL;
}

/* Ask for write-ahead logging; mode receives the journal mode now in force (WAL can
 * be refused, e.g. on a file system without shared memory). */
static int set_wal(sqlite3 *h, char *mode, size_t size)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(h, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        snprintf(mode, size, "%s", m ? m : "unknown");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_connect(struct db_conn *c, const char *path, const struct db_options *opt, char *err,
                      size_t errlen)
{
    if (!sqlite3_threadsafe()) {
        snprintf(err, errlen, "sqlite was built without thread support");
        return DB_ERR_SQL;
    }
    /* Create the file ourselves so it is private: it holds password hashes. */
    /* Only when it does not exist yet: closing any descriptor of an open
     * database would drop this process's POSIX locks on it, SQLite's WAL lock
     * included, and let another process delete the WAL under us. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return DB_ERR_CONN;
    }

    struct sq_conn *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    int rc = sqlite3_open_v2(path, &sc->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open '%s': %s", path,
                 sc->h ? sqlite3_errmsg(sc->h) : sqlite3_errstr(rc));
        sqlite3_close_v2(sc->h);
        free(sc);
        return map_status(rc) == DB_ERR_NOMEM ? DB_ERR_NOMEM : DB_ERR_CONN;
    }
    c->handle = sc;
    sqlite3_extended_result_codes(sc->h, 1);
    sc->busy_ms = opt->busy_timeout_ms > INT32_MAX ? INT32_MAX : (int)opt->busy_timeout_ms;
    sqlite3_busy_timeout(sc->h, sc->busy_ms);

    /* Switching to WAL needs a moment of exclusive access, and SQLite may answer busy
     * at once (without its busy handler) while another process opens or recovers the
     * same file: retry for up to the busy timeout. */
    char mode[16] = "";
    unsigned waited_ms = 0;
    while ((rc = set_wal(sc->h, mode, sizeof(mode))) != SQLITE_OK &&
           ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) &&
           waited_ms < opt->busy_timeout_ms) {
        sqlite3_sleep(10);
        waited_ms += 10;
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up '%s': %s", path, sqlite3_errmsg(sc->h));
        goto fail;
    }
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "cannot use write-ahead logging on '%s' (journal mode '%s')", path,
                 mode);
        rc = SQLITE_ERROR;
        goto fail;
    }
    rc = sqlite3_exec(sc->h, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;", NULL, NULL,
                      NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up '%s': %s", path, sqlite3_errmsg(sc->h));
        goto fail;
    }
    return DB_OK;

fail:
    sq_disconnect(c);
    return map_status(rc);
}

static void sq_check(struct db_conn *c)
{
}

static bool sq_in_transaction(struct db_conn *c)
{
    struct sq_conn *sc = c->handle;
    return sc && !sqlite3_get_autocommit(sc->h);
}

static bool sq_transaction_failed(struct db_conn *c)
{
    /* A failed statement only undoes itself; errors that end the whole transaction
     * (SQLITE_FULL, SQLITE_IOERR, ...) leave autocommit on, and COMMIT then fails. */
    return false;
}

static bool blank(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ';')
        s++;
    return *s == '\0';
}

/* Find sql in the cache or prepare it there, evicting the least recently used. */
static int stmt_get(struct db_conn *c, const char *sql, sqlite3_stmt **out)
{
    struct sq_conn *sc = c->handle;
    struct cached_stmt *slot = &sc->cache[0];
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
        struct cached_stmt *cs = &sc->cache[i];
        if (cs->sql && strcmp(cs->sql, sql) == 0) {
            cs->last_used = ++sc->tick;
            *out = cs->stmt;
            return DB_OK;
        }
        if (!cs->sql || (slot->sql && cs->last_used < slot->last_used))
            slot = cs;
    }

    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(sc->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK)
        return fail(c, rc);
    if (!st) {
        db_conn_set_error(c, "empty sql statement");
        return DB_ERR_INVALID;
    }
    if (tail && !blank(tail)) {
        /* Only comments may follow: anything that compiles is a second statement. */
        sqlite3_stmt *next = NULL;
        rc = sqlite3_prepare_v2(sc->h, tail, -1, &next, NULL);
        sqlite3_finalize(next);
        if (rc != SQLITE_OK || next) {
            sqlite3_finalize(st);
            db_conn_set_error(c, "several sql statements in one call");
            return DB_ERR_INVALID;
        }
    }
    char *copy = strdup(sql);
    if (!copy) {
        sqlite3_finalize(st);
        db_conn_set_error(c, "out of memory");
        return DB_ERR_NOMEM;
    }
    sqlite3_finalize(slot->stmt);
    free(slot->sql);
    slot->sql = copy;
    slot->stmt = st;
    slot->last_used = ++sc->tick;
    *out = st;
    return DB_OK;
}

/* An array parameter as the JSON text json_each() reads: [1,-2] or
 * ["a","say \"hi\"",null]. Returns a malloc'd string (its length in *len), or NULL
 * when out of memory. */
static char *array_json(const struct db_param *p, size_t *len)
{
    struct buf b;
    buf_init(&b, ARRAY_MAX_BYTES);
    int rc = buf_add(&b, "[", 1);
    for (size_t k = 0; rc == 0 && k < p->len; k++) {
        if (k)
            rc = buf_add(&b, ",", 1);
        if (rc == 0 && p->type == DB_TYPE_INT_ARRAY) {
            rc = buf_addf(&b, "%" PRId64, p->ints[k]);
        } else if (rc == 0 && !p->texts[k]) {
            rc = buf_adds(&b, "null");
        } else if (rc == 0) {
            /* The text is valid UTF-8 (db.c checked): only quotes, backslashes
             * and control characters need escapes. */
            const unsigned char *t = (const unsigned char *)p->texts[k];
            rc = buf_add(&b, "\"", 1);
            while (rc == 0 && *t) {
                size_t run = 0;
                while (t[run] >= 0x20 && t[run] != '"' && t[run] != '\\')
                    run++;
                rc = buf_add(&b, t, run);
                t += run;
                if (rc == 0 && *t) {
                    rc = *t == '"' || *t == '\\' ? buf_addf(&b, "\\%c", *t)
                                                 : buf_addf(&b, "\\u%04x", *t);
                    t++;
                }
            }
            if (rc == 0)
                rc = buf_add(&b, "\"", 1);
        }
    }
    if (rc == 0)
        rc = buf_add(&b, "]", 1);
    if (rc) {
        buf_release(&b);
        return NULL;
    }
    return buf_detach(&b, len);
}

static int bind_array(sqlite3_stmt *st, int idx, const struct db_param *p)
{
    size_t len = 0;
    char *json = array_json(p, &len);
    /* SQLite frees it when done with it, also when the bind fails */
    return json ? sqlite3_bind_text64(st, idx, json, len, free, SQLITE_UTF8) : SQLITE_NOMEM;
}

/* Bind every parameter the statement names. Each must be $N with 1 <= N <= n. */
static int bind_params(struct db_conn *c, sqlite3_stmt *st, const struct db_param *params, size_t n)
{
    int count = sqlite3_bind_parameter_count(st);
    for (int idx = 1; idx <= count; idx++) {
        const char *name = sqlite3_bind_parameter_name(st, idx);
        size_t num = 0;
        bool ok = name && name[0] == '$' && name[1] >= '1' && name[1] <= '9';
        for (const char *p = ok ? name + 1 : ""; ok && *p; p++) {
            if (*p < '0' || *p > '9' || num > MAX_PARAM_NUMBER)
                ok = false;
            else
                num = num * 10 + (size_t)(*p - '0');
        }
        if (!ok || num > n) {
            db_conn_set_error(c, "statement uses placeholder '%s' but %zu parameters were given",
                              name ? name : "?", n);
            return DB_ERR_INVALID;
        }
        const struct db_param *p = &params[num - 1];
        int rc;
        if (p->type == DB_TYPE_INT)
            rc = sqlite3_bind_int64(st, idx, p->i);
        else if (p->type == DB_TYPE_TEXT && p->s)
            rc = sqlite3_bind_text64(st, idx, p->s, p->len == DB_LEN_AUTO ? strlen(p->s) : p->len,
                                     SQLITE_STATIC, SQLITE_UTF8);
        else if (p->type == DB_TYPE_INT_ARRAY || p->type == DB_TYPE_TEXT_ARRAY)
            rc = bind_array(st, idx, p);
        else
            rc = sqlite3_bind_null(st, idx);
        if (rc != SQLITE_OK)
            return fail(c, rc);
    }
    return DB_OK;
}

/* Copy the current row of st into res. */
static int copy_row(struct db_conn *c, sqlite3_stmt *st, struct db_result *res, int cols)
{
    int rc = db_result_add_row(res);
    for (int i = 0; i < cols && rc == DB_OK; i++) {
        char num[32];
        const char *s = NULL;
        size_t len = 0;
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_NULL:
            break;
        case SQLITE_INTEGER:
            len = (size_t)snprintf(num, sizeof(num), "%" PRId64,
                                   (int64_t)sqlite3_column_int64(st, i));
            s = num;
            break;
        case SQLITE_FLOAT:
            len = (size_t)snprintf(num, sizeof(num), "%.17g", sqlite3_column_double(st, i));
            s = num;
            break;
        default:
            s = (const char *)sqlite3_column_text(st, i);
            len = (size_t)sqlite3_column_bytes(st, i);
            if (!s) {
                db_conn_set_error(c, "out of memory");
                return DB_ERR_NOMEM;
            }
            break;
        }
        rc = db_result_add_cell(res, s, len);
    }
    if (rc == DB_ERR_TOO_BIG)
        db_conn_set_error(c, "result larger than %zu bytes", c->db->opt.max_result_bytes);
    else if (rc)
        db_conn_set_error(c, "out of memory");
    return rc;
}

static int sq_run(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                  int64_t *changes, struct db_result **out)
{
    struct sq_conn *sc = c->handle;
    struct db_result *res = NULL;
    sqlite3_stmt *st = NULL;
    int rc = stmt_get(c, sql, &st);
    if (rc)
        return rc;
    rc = bind_params(c, st, params, n);
    if (rc)
        goto done;

    int cols = sqlite3_column_count(st);
    if (out) {
        res = db_result_new((size_t)cols, c->db->opt.max_result_bytes);
        if (!res) {
            rc = DB_ERR_NOMEM;
            db_conn_set_error(c, "out of memory");
            goto done;
        }
        for (int i = 0; i < cols && rc == DB_OK; i++)
            rc = db_result_set_name(res, (size_t)i, sqlite3_column_name(st, i));
        if (rc) {
            db_conn_set_error(c, "out of memory");
            goto done;
        }
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (res) {
            rc = copy_row(c, st, res, cols);
            if (rc)
                goto done;
        }
    }
    if (step != SQLITE_DONE) {
        rc = fail(c, step);
        goto done;
    }
    if (changes && !sqlite3_stmt_readonly(st))
        *changes = sqlite3_changes64(sc->h);

done:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc) {
        db_result_free(res);
        res = NULL;
    }
    if (out)
        *out = res;
    return rc;
}

static int sq_script(struct db_conn *c, const char *sql)
{
    struct sq_conn *sc = c->handle;
    char *msg = NULL;
    int rc = sqlite3_exec(sc->h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        db_conn_set_error(c, "sqlite: %s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return map_status(rc);
    }
    return DB_OK;
}

static int wal_hook(void *arg, sqlite3 *h, const char *name, int pages)
{
    struct sq_conn *sc = arg;
    sc->on_commit(sc->on_commit_arg, pages);
    return SQLITE_OK;
}

/* Replaces SQLite's own checkpoint-on-commit (itself a WAL hook); fn NULL
 * unhooks (commits then no longer checkpoint at all). */
static void sq_wal_handover(struct db_conn *c, void (*fn)(void *arg, int pages), void *arg)
{
    struct sq_conn *sc = c->handle;
    sc->on_commit = fn;
    sc->on_commit_arg = arg;
    sqlite3_wal_hook(sc->h, fn ? wal_hook : NULL, fn ? sc : NULL);
}

/* How long a restarting checkpoint waits for the readers still using the log. */
#define RESTART_WAIT_MS 5

static int sq_checkpoint(struct db_conn *c, bool restart, int *left)
{
    struct sq_conn *sc = c->handle;
    int log = 0, copied = 0;
    if (restart)
        sqlite3_busy_timeout(sc->h, RESTART_WAIT_MS);
    int rc = sqlite3_wal_checkpoint_v2(
            sc->h, NULL, restart ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE, &log,
            &copied);
    if (restart)
        sqlite3_busy_timeout(sc->h, sc->busy_ms);
    *left = log > copied ? log - copied : 0;
    /* Busy on a restart: readers outlasted the wait; what could be copied
     * was, but the log will not start over. */
    if (restart && (rc & 0xff) == SQLITE_BUSY)
        return DB_ERR_RETRY;
    return rc == SQLITE_OK ? DB_OK : fail(c, rc);
}

const struct db_backend db_backend_sqlite = {
        .name = "sqlite",
        .dialect = DB_SQLITE,
        .begin_read = "BEGIN DEFERRED",
        .begin_write = "BEGIN IMMEDIATE",
        .one_writer = true,
        .connect = sq_connect,
        .disconnect = sq_disconnect,
        .check = sq_check,
        .run = sq_run,
        .script = sq_script,
        .in_transaction = sq_in_transaction,
        .transaction_failed = sq_transaction_failed,
        .wal_handover = sq_wal_handover,
        .checkpoint = sq_checkpoint,
};
