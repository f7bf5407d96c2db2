/* db: the backend-neutral half of the database layer: URL dispatch, the connection
 * pool, parameter checks, materialised results and transactions. */
#include "db.h"
#include "db_backend.h"
#include "db_checkpointer.h"
#include "migrations.h"

#include <errno.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_POOL_SIZE       8
#define DEFAULT_BUSY_TIMEOUT_MS 5000
#define DEFAULT_ACQUIRE_MS      5000
#define DEFAULT_CONNECT_S       10
#define DEFAULT_MAX_RESULT      (64u << 20)
#define MAX_POOL_SIZE           256
#define MAX_PARAMS              65535 /* PostgreSQL's protocol limit */

static const char *const status_text[DB_STATUS_COUNT] = {
        [DB_OK] = "success",
        [DB_ERR_NOMEM] = "out of memory",
        [DB_ERR_CONSTRAINT] = "constraint violation",
        [DB_ERR_RETRY] = "database busy or transaction conflict, retry",
        [DB_ERR_CONN] = "database connection failed",
        [DB_ERR_SQL] = "database error",
        [DB_ERR_BUSY] = "no free database connection",
        [DB_ERR_INVALID] = "invalid argument",
        [DB_ERR_TOO_BIG] = "database result too large",
        [DB_ERR_NOT_FOUND] = "no such row",
        [DB_ERR_SCHEMA] = "database schema is newer than this program",
};

const char *db_strerror(int status)
{
    if (status < 0 || status >= DB_STATUS_COUNT)
        return "unknown database status";
    return status_text[status];
}

void db_conn_set_error(struct db_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
}

const char *db_conn_errmsg(const struct db_conn *c)
{
    return c ? c->errmsg : "";
}

enum db_dialect db_dialect(const struct db *db)
{
    return db->be->dialect;
}

enum db_dialect db_conn_dialect(const struct db_conn *c)
{
    return c->db->be->dialect;
}

/* ---- results ---- */

struct db_cell {
    size_t off; /* into data; the text is NUL-terminated there */
    bool null;
};

struct db_result {
    size_t cols, rows;
    size_t *name_off;      /* cols offsets into data */
    struct db_cell *cells; /* rows * cols, row-major */
    size_t ncells, cells_alloc;
    char *data;
    size_t len, alloc, max;
};

struct db_result *db_result_new(size_t cols, size_t max_bytes)
{
    struct db_result *res = calloc(1, sizeof(*res));
    if (!res)
        return NULL;
    res->cols = cols;
    res->max = max_bytes;
    if (cols) {
        res->name_off = calloc(cols, sizeof(*res->name_off));
        if (!res->name_off) {
            free(res);
            return NULL;
        }
    }
    return res;
}

void db_result_free(struct db_result *res)
{
    if (!res)
        return;
    free(res->name_off);
    free(res->cells);
    free(res->data);
    free(res);
}

/* Append len bytes and a NUL to res->data; *off receives where they start. */
static int result_store(struct db_result *res, const char *s, size_t len, size_t *off)
{
    if (len > res->max || res->len > res->max - len - 1)
        return DB_ERR_TOO_BIG;
    size_t need = res->len + len + 1;
    if (need > res->alloc) {
        size_t alloc = res->alloc ? res->alloc : 256;
        while (alloc < need)
            alloc *= 2;
        char *p = realloc(res->data, alloc);
        if (!p)
            return DB_ERR_NOMEM;
        res->data = p;
        res->alloc = alloc;
    }
    if (len)
        memcpy(res->data + res->len, s, len);
    res->data[res->len + len] = '\0';
    *off = res->len;
    res->len = need;
    return DB_OK;
}

int db_result_set_name(struct db_result *res, size_t col, const char *name)
{
    if (col >= res->cols)
        return DB_ERR_INVALID;
    return result_store(res, name ? name : "", name ? strlen(name) : 0, &res->name_off[col]);
}

int db_result_add_row(struct db_result *res)
{
    if (res->ncells != res->rows * res->cols)
        return DB_ERR_INVALID;
    size_t need = res->ncells + res->cols;
    /* The cells' bookkeeping has a cap of its own, as large as the data's. */
    if (need > res->max / sizeof(struct db_cell))
        return DB_ERR_TOO_BIG;
    if (need > res->cells_alloc) {
        size_t alloc = res->cells_alloc ? res->cells_alloc * 2 : 16 * (res->cols ? res->cols : 1);
        while (alloc < need)
            alloc *= 2;
        struct db_cell *p = realloc(res->cells, alloc * sizeof(*p));
        if (!p)
            return DB_ERR_NOMEM;
        res->cells = p;
        res->cells_alloc = alloc;
    }
    res->rows++;
    return DB_OK;
}

int db_result_add_cell(struct db_result *res, const char *s, size_t len)
{
    if (res->ncells >= res->rows * res->cols)
        return DB_ERR_INVALID;
    struct db_cell *cell = &res->cells[res->ncells];
    if (!s) {
        cell->null = true;
        cell->off = 0;
    } else {
        int rc = result_store(res, s, len, &cell->off);
        if (rc)
            return rc;
        cell->null = false;
    }
    res->ncells++;
    return DB_OK;
}

size_t db_result_rows(const struct db_result *res)
{
    return res ? res->rows : 0;
}

size_t db_result_cols(const struct db_result *res)
{
    return res ? res->cols : 0;
}

const char *db_result_name(const struct db_result *res, size_t col)
{
    if (!res || col >= res->cols || !res->data)
        return NULL;
    return res->data + res->name_off[col];
}

static const struct db_cell *result_cell(const struct db_result *res, size_t row, size_t col)
{
    if (!res || row >= res->rows || col >= res->cols)
        return NULL;
    const struct db_cell *cell = &res->cells[row * res->cols + col];
    return cell->null ? NULL : cell;
}

const char *db_result_text(const struct db_result *res, size_t row, size_t col)
{
    const struct db_cell *cell = result_cell(res, row, col);
    return cell ? res->data + cell->off : NULL;
}

int64_t db_result_int(const struct db_result *res, size_t row, size_t col)
{
    const char *s = db_result_text(res, row, col);
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return 0;
    return v;
}

bool db_result_is_null(const struct db_result *res, size_t row, size_t col)
{
    return result_cell(res, row, col) == NULL;
}

/* ---- statements ---- */

/* Whether s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points
 * above U+10FFFF) without NUL bytes. */
static bool text_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char b = s[i];
        if (b == 0)
            return false;
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
            cp = b & 0x1f;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            cp = b & 0x0f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            cp = b & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static int check_params(struct db_conn *c, const char *sql, const struct db_param *params, size_t n)
{
    if (!sql) {
        db_conn_set_error(c, "no sql statement given");
        return DB_ERR_INVALID;
    }
    if (n > MAX_PARAMS || (n && !params)) {
        db_conn_set_error(c, "bad parameter list");
        return DB_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        const struct db_param *p = &params[i];
        switch (p->type) {
        case DB_TYPE_NULL:
        case DB_TYPE_INT:
            break;
        case DB_TYPE_TEXT:
            if (!p->s)
                break;
            if (!text_valid((const unsigned char *)p->s,
                            p->len == DB_LEN_AUTO ? strlen(p->s) : p->len)) {
                db_conn_set_error(c, "parameter $%zu is not valid utf-8 text", i + 1);
                return DB_ERR_INVALID;
            }
            break;
        case DB_TYPE_INT_ARRAY:
            if (p->len && !p->ints) {
                db_conn_set_error(c, "parameter $%zu is an array without values", i + 1);
                return DB_ERR_INVALID;
            }
            break;
        case DB_TYPE_TEXT_ARRAY:
            if (p->len && !p->texts) {
                db_conn_set_error(c, "parameter $%zu is an array without values", i + 1);
                return DB_ERR_INVALID;
            }
            for (size_t k = 0; k < p->len; k++) {
                if (p->texts[k] &&
                    !text_valid((const unsigned char *)p->texts[k], strlen(p->texts[k]))) {
                    db_conn_set_error(c, "parameter $%zu[%zu] is not valid utf-8 text", i + 1,
                                      k + 1);
                    return DB_ERR_INVALID;
                }
            }
            break;
        default:
            db_conn_set_error(c, "parameter $%zu has an unknown type", i + 1);
            return DB_ERR_INVALID;
        }
    }
    return DB_OK;
}

static int run(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
               int64_t *changes, struct db_result **out)
{
    if (out)
        *out = NULL;
    if (changes)
        *changes = 0;
    if (!c)
        return DB_ERR_INVALID;
    c->errmsg[0] = '\0';
    int rc = check_params(c, sql, params, n);
    if (rc == DB_OK && c->begin_pending) {
        /* The deferred BEGIN goes out with this statement. */
        const struct db_stmt both[2] = {{c->begin_pending, NULL, 0, NULL, NULL},
                                        {sql, params, n, out, changes}};
        c->begin_pending = NULL;
        rc = c->db->be->batch(c, both, 2);
    } else if (rc == DB_OK) {
        rc = c->db->be->run(c, sql, params, n, changes, out);
    }
    if (rc && c->in_tx && !c->tx_error)
        c->tx_error = rc;
    return rc;
}

int db_exec(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
            int64_t *changes)
{
    return run(c, sql, params, n, changes, NULL);
}

int db_query(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
             struct db_result **out)
{
    if (!out)
        return DB_ERR_INVALID;
    return run(c, sql, params, n, NULL, out);
}

int db_query_row(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                 struct db_result **out)
{
    int rc = db_query(c, sql, params, n, out);
    if (rc == DB_OK && db_result_rows(*out) == 0) {
        db_result_free(*out);
        *out = NULL;
        rc = DB_ERR_NOT_FOUND;
    }
    return rc;
}

int db_query_int(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                 int64_t *out)
{
    struct db_result *res;
    *out = 0;
    int rc = db_query_row(c, sql, params, n, &res);
    if (rc)
        return rc;
    *out = db_result_int(res, 0, 0);
    db_result_free(res);
    return DB_OK;
}

int db_exec_script(struct db_conn *c, const char *sql)
{
    c->errmsg[0] = '\0';
    return c->db->be->script(c, sql);
}

/* ---- transactions ---- */

/* Take the process's writer mutex for a write transaction on a one-writer
 * engine, waiting at most the busy timeout like the engine's own lock would.
 * Returns DB_OK (also when the engine needs none) or DB_ERR_RETRY. */
static int writer_take(struct db_conn *c)
{
    if (!c->db->be->one_writer)
        return DB_OK;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += c->db->opt.busy_timeout_ms / 1000;
    until.tv_nsec += (long)(c->db->opt.busy_timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_mutex_timedlock(&c->db->writer, &until) != 0) {
        db_conn_set_error(c, "another write transaction held the database for %u ms",
                          c->db->opt.busy_timeout_ms);
        return DB_ERR_RETRY;
    }
    c->holds_writer = true;
    return DB_OK;
}

static void writer_give(struct db_conn *c)
{
    if (c->holds_writer) {
        c->holds_writer = false;
        pthread_mutex_unlock(&c->db->writer);
    }
}

int db_begin(struct db_conn *c, enum db_tx mode)
{
    if (!c)
        return DB_ERR_INVALID;
    if (c->in_tx) {
        db_conn_set_error(c, "a transaction is already open");
        return DB_ERR_INVALID;
    }
    const char *sql = mode == DB_TX_WRITE ? c->db->be->begin_write : c->db->be->begin_read;
    if (mode == DB_TX_WRITE) {
        int rc = writer_take(c);
        if (rc)
            return rc;
    }
    if (c->db->be->batch) {
        /* Sent with the first statement (see run). */
        c->begin_pending = sql;
        c->in_tx = true;
        c->tx_error = DB_OK;
        return DB_OK;
    }
    int rc = db_exec(c, sql, NULL, 0, NULL);
    if (rc == DB_OK) {
        c->in_tx = true;
        c->tx_error = DB_OK;
    } else {
        writer_give(c);
    }
    return rc;
}

static int commit_tx(struct db_conn *c);

int db_commit(struct db_conn *c)
{
    if (!c)
        return DB_ERR_INVALID;
    int rc = commit_tx(c);
    writer_give(c);
    return rc;
}

static int commit_tx(struct db_conn *c)
{
    if (!c)
        return DB_ERR_INVALID;
    if (!c->in_tx) {
        db_conn_set_error(c, "no transaction is open");
        return DB_ERR_INVALID;
    }
    /* PostgreSQL answers COMMIT of an aborted transaction by rolling back, without an
     * error. The same rule holds on SQLite, so callers see one behaviour: a
     * transaction in which a statement failed never commits. */
    if (c->begin_pending) {
        /* No statement ran: there is nothing on the server to end. */
        int rc = c->tx_error;
        c->begin_pending = NULL;
        c->in_tx = false;
        return rc;
    }
    if (c->tx_error || c->db->be->transaction_failed(c)) {
        int rc = c->tx_error ? c->tx_error : DB_ERR_SQL;
        c->db->be->run(c, "ROLLBACK", NULL, 0, NULL, NULL);
        db_conn_set_error(c, "transaction aborted by an earlier error (%s), rolled back",
                          db_strerror(rc));
        c->in_tx = false;
        return rc;
    }
    int rc = db_exec(c, "COMMIT", NULL, 0, NULL);
    /* A failed COMMIT may leave the transaction open (SQLite busy): end it so the
     * connection is usable again; the caller sees the commit's status. */
    if (rc != DB_OK && c->db->be->in_transaction(c)) {
        char saved[DB_ERRMSG_SIZE];
        memcpy(saved, c->errmsg, sizeof(saved));
        c->db->be->run(c, "ROLLBACK", NULL, 0, NULL, NULL);
        memcpy(c->errmsg, saved, sizeof(saved));
    }
    c->in_tx = false;
    return rc;
}

int db_rollback(struct db_conn *c)
{
    if (!c)
        return DB_ERR_INVALID;
    if (!c->in_tx) {
        db_conn_set_error(c, "no transaction is open");
        return DB_ERR_INVALID;
    }
    c->in_tx = false;
    c->begin_pending = NULL;
    /* SQLite may already have rolled back on its own (e.g. after SQLITE_FULL). */
    int rc = c->db->be->in_transaction(c) ? db_exec(c, "ROLLBACK", NULL, 0, NULL) : DB_OK;
    writer_give(c);
    return rc;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* A pause of 5 ms per attempt plus jitter, so contenders spread out. */
static void retry_pause(const struct db_conn *c, int attempt)
{
    unsigned seed = (unsigned)(uintptr_t)c ^ (unsigned)time(NULL) ^ (unsigned)attempt;
    sleep_ms(5u * (unsigned)attempt + (unsigned)(rand_r(&seed) % 20));
}

/* ---- group commit ----
 *
 * On a one-writer engine (SQLite) every write transaction queues on the
 * writer mutex, and each pays its own BEGIN and COMMIT (the WAL frames of
 * every page it touched). Instead, db_transact calls queue as jobs, and one
 * caller at a time leads: it runs the oldest queued jobs (at most GROUP_MAX,
 * so the writer is never held for long) in one transaction, each body inside
 * a savepoint of its own (a body that fails is rolled back to it alone,
 * exactly as its own transaction would have been), commits once, and wakes
 * each caller with its status. It then hands the lead to the oldest job left.
 * Every waiting caller is woken exactly once, either done or to lead: on two
 * cores a broadcast to every waiter costs more than the transaction.
 *
 * Groups run on the engine's writer connection (db->group_conn), kept out of
 * the pool: being the only writer, its page cache stays valid from one group
 * to the next instead of being reloaded by whichever connection leads. A job
 * found alone runs as a plain transaction (transact_once). */

#define GROUP_MAX 32

struct tx_job {
    db_tx_fn fn;
    void *arg;
    int rc;
    bool lead;  /* woken to lead the next group (else: done) */
    sem_t wake; /* posted once, by the leader that ran the job or handed on the lead */
    char errmsg[DB_ERRMSG_SIZE]; /* the job's error, for its caller's connection */
    struct tx_job *next;
};

/* One attempt of fn in a write transaction of its own on c. */
static int transact_once(struct db_conn *c, db_tx_fn fn, void *arg)
{
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc)
        return rc;
    rc = fn(c, arg);
    if (rc == DB_OK)
        return db_commit(c);
    db_rollback(c);
    return rc;
}

/* Run jobs (a list of two or more) in one write transaction on c. */
static void group_run(struct db_conn *c, struct tx_job *jobs)
{
    int rc = db_begin(c, DB_TX_WRITE);
    for (struct tx_job *j = jobs; j; j = j->next) {
        if (rc) {
            j->rc = rc;
            memcpy(j->errmsg, c->errmsg, sizeof(j->errmsg));
            continue;
        }
        j->rc = db_exec(c, "SAVEPOINT tx_job", NULL, 0, NULL);
        if (j->rc == DB_OK)
            j->rc = j->fn(c, j->arg);
        if (j->rc == DB_OK && c->tx_error)
            j->rc = c->tx_error; /* a statement failed: its own commit would have */
        if (j->rc != DB_OK) {
            memcpy(j->errmsg, c->errmsg, sizeof(j->errmsg));
            c->tx_error = DB_OK;
            if (db_exec(c, "ROLLBACK TO tx_job", NULL, 0, NULL) != DB_OK)
                rc = c->tx_error; /* the transaction is unusable: fail the rest */
        }
        if (!rc && db_exec(c, "RELEASE tx_job", NULL, 0, NULL) != DB_OK)
            rc = c->tx_error;
    }
    if (!c->in_tx) /* BEGIN failed */
        return;
    bool any = false;
    for (struct tx_job *j = jobs; j; j = j->next)
        any |= j->rc == DB_OK;
    if (!any || rc) {
        db_rollback(c);
    } else if ((rc = db_commit(c)) == DB_OK) {
        return;
    }
    for (struct tx_job *j = jobs; j; j = j->next) {
        if (j->rc == DB_OK) { /* the transaction failed as a whole */
            j->rc = rc;
            memcpy(j->errmsg, c->errmsg, sizeof(j->errmsg));
        }
    }
}

/* Lead: run the group that starts with self (the queue's head) on the
 * writer connection, then wake its other callers and the next leader. */
static void group_lead(struct db *db, struct tx_job *self)
{
    pthread_mutex_lock(&db->group_lock);
    struct tx_job *jobs = db->group_head, *last = jobs;
    for (int n = 1; n < GROUP_MAX && last->next; n++)
        last = last->next;
    db->group_head = last->next;
    if (!db->group_head)
        db->group_tail = NULL;
    last->next = NULL;
    pthread_mutex_unlock(&db->group_lock);

    struct db_conn *w = db->group_conn;
    if (jobs->next) {
        group_run(w, jobs);
    } else {
        jobs->rc = transact_once(w, jobs->fn, jobs->arg);
        memcpy(jobs->errmsg, w->errmsg, sizeof(jobs->errmsg));
    }

    pthread_mutex_lock(&db->group_lock);
    struct tx_job *heir = db->group_head;
    if (heir)
        heir->lead = true;
    else
        db->group_leading = false;
    pthread_mutex_unlock(&db->group_lock);
    for (struct tx_job *j = jobs, *after; j; j = after) {
        after = j->next; /* a woken caller's job is gone at once */
        if (j != self)
            sem_post(&j->wake);
    }
    if (heir)
        sem_post(&heir->wake);
}

/* One attempt of fn in a write transaction, grouped with other callers'. */
static int group_transact(struct db_conn *c, db_tx_fn fn, void *arg)
{
    struct db *db = c->db;
    struct tx_job job = {.fn = fn, .arg = arg};
    sem_init(&job.wake, 0, 0);
    pthread_mutex_lock(&db->group_lock);
    if (db->group_tail)
        db->group_tail->next = &job;
    else
        db->group_head = &job;
    db->group_tail = &job;
    bool lead = !db->group_leading; /* no leader: the queue held nothing else */
    db->group_leading = true;
    pthread_mutex_unlock(&db->group_lock);
    if (!lead) {
        while (sem_wait(&job.wake) != 0 && errno == EINTR)
            ;
        lead = job.lead;
    }
    if (lead)
        group_lead(db, &job);
    sem_destroy(&job.wake);
    if (job.rc != DB_OK)
        memcpy(c->errmsg, job.errmsg, sizeof(c->errmsg));
    return job.rc;
}

/* The pause is between attempts only: the first runs at once. */
int db_transact_on(struct db_conn *c, db_tx_fn fn, void *arg)
{
    if (c->in_tx) { /* grouped, it would wait for the writer c holds */
        db_conn_set_error(c, "a transaction is already open");
        return DB_ERR_INVALID;
    }
    int rc = DB_ERR_RETRY;
    for (int attempt = 0; attempt < DB_TRANSACT_ATTEMPTS && rc == DB_ERR_RETRY; attempt++) {
        if (attempt)
            retry_pause(c, attempt);
        rc = c->db->be->one_writer ? group_transact(c, fn, arg) : transact_once(c, fn, arg);
    }
    return rc;
}

int db_transact(struct db *db, db_tx_fn fn, void *arg)
{
    struct db_conn *c = db_acquire(db);
    if (!c)
        return DB_ERR_BUSY;
    int rc = db_transact_on(c, fn, arg);
    db_release(c);
    return rc;
}

int db_retry(struct db_conn *c, int (*fn)(struct db_conn *, void *), void *arg)
{
    int rc = DB_ERR_RETRY;
    for (int attempt = 0; attempt < DB_TRANSACT_ATTEMPTS && rc == DB_ERR_RETRY; attempt++) {
        if (attempt)
            retry_pause(c, attempt);
        rc = fn(c, arg);
    }
    return rc;
}

/* ---- the pool ---- */

struct db_conn *db_acquire(struct db *db)
{
    if (!db)
        return NULL;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += db->opt.acquire_timeout_ms / 1000;
    deadline.tv_nsec += (long)(db->opt.acquire_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    struct db_conn *c = NULL;
    pthread_mutex_lock(&db->lock);
    while (db->nidle == 0) {
        int rc = pthread_cond_timedwait(&db->freed, &db->lock, &deadline);
        if (rc == ETIMEDOUT && db->nidle == 0)
            break;
    }
    if (db->nidle) {
        c = db->idle[--db->nidle];
        c->in_pool = false;
    }
    pthread_mutex_unlock(&db->lock);
    if (c) {
        c->errmsg[0] = '\0';
        db->be->check(c);
    }
    return c;
}

void db_release(struct db_conn *c)
{
    if (!c)
        return;
    struct db *db = c->db;
    c->begin_pending = NULL; /* a BEGIN never sent needs no ROLLBACK */
    c->in_tx = false;
    if (db->be->in_transaction(c))
        db->be->run(c, "ROLLBACK", NULL, 0, NULL, NULL);
    writer_give(c);
    pthread_mutex_lock(&db->lock);
    if (!c->in_pool) {
        c->in_pool = true;
        db->idle[db->nidle++] = c;
        pthread_cond_signal(&db->freed);
    }
    pthread_mutex_unlock(&db->lock);
}

/* ---- open and close ---- */

static void apply_defaults(struct db_options *o, const struct db_options *given)
{
    if (given)
        *o = *given;
    else
        memset(o, 0, sizeof(*o));
    if (!o->pool_size)
        o->pool_size = DEFAULT_POOL_SIZE;
    if (!o->busy_timeout_ms)
        o->busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
    if (!o->acquire_timeout_ms)
        o->acquire_timeout_ms = DEFAULT_ACQUIRE_MS;
    if (!o->connect_timeout_s)
        o->connect_timeout_s = DEFAULT_CONNECT_S;
    if (!o->max_result_bytes)
        o->max_result_bytes = DEFAULT_MAX_RESULT;
}

static void free_db(struct db *db, size_t nconnected)
{
    db_checkpointer_stop(db->checkpointer); /* it takes db->writer */
    for (size_t i = 0; i < nconnected; i++)
        db->be->disconnect(&db->conns[i]);
    pthread_cond_destroy(&db->freed);
    pthread_mutex_destroy(&db->lock);
    pthread_mutex_destroy(&db->writer);
    if (db->group_conn) {
        db->be->disconnect(db->group_conn);
        free(db->group_conn);
    }
    pthread_mutex_destroy(&db->group_lock);
    free(db->conns);
    free(db->idle);
    free(db);
}

/* The connection group commit runs on (one-writer engines), outside the pool. */
static int open_group_conn(struct db *db, const char *target, char *err, size_t errlen)
{
    struct db_conn *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    w->db = db;
    int rc = db->be->connect(w, target, &db->opt, err, errlen);
    if (rc) {
        free(w);
        return rc;
    }
    db->group_conn = w;
    return DB_OK;
}

int db_open(const char *url, const struct db_options *opt, struct db **out, char *err,
            size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!out)
        return DB_ERR_INVALID;
    *out = NULL;
    if (!url) {
        snprintf(err, errlen, "no database url given");
        return DB_ERR_INVALID;
    }

    const struct db_backend *be;
    const char *target;
    if (strncmp(url, "sqlite:", 7) == 0) {
        be = &db_backend_sqlite;
        target = url + 7;
        if (!*target) {
            snprintf(err, errlen, "database url 'sqlite:' names no file");
            return DB_ERR_INVALID;
        }
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        be = &db_backend_pg;
        target = url;
    } else {
        /* The URL may hold a password: name only its scheme. */
        size_t scheme = strcspn(url, ":");
        snprintf(err, errlen,
                 "unsupported database url scheme '%.*s' (use sqlite:PATH or "
                 "postgresql://...)",
                 (int)(scheme > 32 ? 32 : scheme), url);
        return DB_ERR_INVALID;
    }

    struct db_options o;
    apply_defaults(&o, opt);
    if (o.pool_size > MAX_POOL_SIZE) {
        snprintf(err, errlen, "database pool size %u is above the maximum %d", o.pool_size,
                 MAX_POOL_SIZE);
        return DB_ERR_INVALID;
    }

    struct db *db = calloc(1, sizeof(*db));
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    db->be = be;
    db->opt = o;
    pthread_mutex_init(&db->lock, NULL);
    pthread_mutex_init(&db->writer, NULL);
    pthread_mutex_init(&db->group_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->freed, &ca);
    pthread_condattr_destroy(&ca);
    db->conns = calloc(o.pool_size, sizeof(*db->conns));
    db->idle = calloc(o.pool_size, sizeof(*db->idle));
    if (!db->conns || !db->idle) {
        free_db(db, 0);
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }

    /* The first connection migrates before the others open, so they all see the
     * final schema. */
    int rc = DB_OK;
    size_t i;
    for (i = 0; i < o.pool_size; i++) {
        struct db_conn *c = &db->conns[i];
        c->db = db;
        rc = be->connect(c, target, &db->opt, err, errlen);
        if (rc)
            break;
        if (i == 0) {
            rc = migrations_apply(db, c, err, errlen);
            if (rc) {
                i++;
                break;
            }
        }
        c->in_pool = true;
        db->idle[db->nidle++] = c;
    }
    if (!rc && be->one_writer)
        rc = open_group_conn(db, target, err, errlen);
    if (!rc && be->checkpoint)
        rc = db_checkpointer_start(db, target, &db->checkpointer, err, errlen);
    if (rc) {
        free_db(db, i);
        return rc;
    }
    *out = db;
    return DB_OK;
}

unsigned long db_checkpoints(const struct db *db)
{
    return db ? db_checkpointer_rounds(db->checkpointer) : 0;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    free_db(db, db->opt.pool_size);
}
