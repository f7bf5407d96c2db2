/* db_backend: the table of operations each database backend implements, and the
 * structures db.c shares with db_sqlite.c and db_pg.c. Internal to the db layer. */
#ifndef POCKITYD_DB_BACKEND_H
#define POCKITYD_DB_BACKEND_H

#include "db.h"

#include <pthread.h>

#define DB_ERRMSG_SIZE 512

struct db_conn {
    struct db *db;
    void *handle;              /* the backend's connection state */
    bool in_tx;                /* between db_begin and db_commit/db_rollback */
    const char *begin_pending; /* a BEGIN that db_begin deferred to go out with the
                                  transaction's first statement (backends with batch) */
    int tx_error;              /* the first status other than DB_OK inside the transaction */
    bool in_pool;              /* guarded by db->lock: sitting in the free list */
    bool holds_writer;         /* holds db->writer (backends with one_writer) */
    char errmsg[DB_ERRMSG_SIZE];
};

/* One statement of a backend batch (db.c's run sends a deferred BEGIN with
 * the first statement of a transaction): sql with its n params; out (may be
 * NULL) receives its rows as from db_query, changes (may be NULL) its changed
 * rows as from db_exec. */
struct db_stmt {
    const char *sql;
    const struct db_param *params;
    size_t n;
    struct db_result **out;
    int64_t *changes;
};

/*
 * A backend. All functions but connect run on a connection used by one thread.
 * Statuses are enum db_status; on failure a function writes its message with
 * db_conn_set_error, never including parameter values.
 */
struct db_backend {
    const char *name;
    enum db_dialect dialect;
    /* SQL that opens a transaction of each kind. */
    const char *begin_read;
    const char *begin_write;
    /* The engine lets one transaction write at a time (SQLite): db.c queues this
     * process's write transactions on a mutex instead of letting them poll the
     * engine's lock, whose busy handler sleeps for up to 100 ms a turn. */
    bool one_writer;
    /* Open c->handle to target (the URL without "sqlite:" for SQLite, the whole URL
     * for PostgreSQL). On failure leave c->handle NULL and describe it in err. */
    int (*connect)(struct db_conn *c, const char *target, const struct db_options *opt, char *err,
                   size_t errlen);
    /* Close c->handle (may be NULL). */
    void (*disconnect)(struct db_conn *c);
    /* Called when c leaves the pool: repair a broken connection if possible. */
    void (*check)(struct db_conn *c);
    /* Run one statement with params (already validated by db.c). When out is not
     * NULL, copy the rows into a new result (at most opt->max_result_bytes). */
    int (*run)(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
               int64_t *changes, struct db_result **out);
    /* Optional (NULL: db.c runs a batch one statement at a time). Run the n
     * statements (params already validated) in order in one round trip,
     * stopping at the first that fails; the ones after it do not run and their
     * out is NULL. Returns the first failure's status. */
    int (*batch)(struct db_conn *c, const struct db_stmt *stmts, size_t n);
    /* Run a script of several statements without parameters (migrations). */
    int (*script)(struct db_conn *c, const char *sql);
    /* Whether the server side has a transaction open (to clean up on release). */
    bool (*in_transaction)(struct db_conn *c);
    /* Whether the open transaction was aborted by an error and can only roll back. */
    bool (*transaction_failed)(struct db_conn *c);
    /* Optional (engines with a write-ahead log that commits checkpoint, SQLite):
     * wal_handover makes commits on c no longer checkpoint but call fn(arg,
     * pages) with the log's length (fn NULL: no call, no checkpoint); checkpoint copies the log
     * into the database and sets *left to the pages still to copy (appended
     * meanwhile, or held by readers). Without restart it does not block
     * writers; with restart the caller holds writers off, and it also waits a
     * few milliseconds for the readers still using the log so that the next
     * writer starts it over (DB_ERR_RETRY when they outlast the wait). See
     * db_checkpointer.c. */
    void (*wal_handover)(struct db_conn *c, void (*fn)(void *arg, int pages), void *arg);
    int (*checkpoint)(struct db_conn *c, bool restart, int *left);
};

extern const struct db_backend db_backend_sqlite;
extern const struct db_backend db_backend_pg;

struct db {
    const struct db_backend *be;
    struct db_options opt; /* defaults filled in */
    struct db_conn *conns; /* opt.pool_size of them, fixed after open */
    pthread_mutex_t lock;
    pthread_cond_t freed;   /* signalled when a connection returns to the pool */
    struct db_conn **idle;  /* guarded by lock: the connections in the pool */
    size_t nidle;           /* guarded by lock */
    pthread_mutex_t writer; /* held through a write transaction (be->one_writer) */
    /* Group commit (be->one_writer): db_transact calls queue here, and one
     * caller at a time runs the queued bodies in one transaction on
     * group_conn, a connection of its own outside the pool. */
    pthread_mutex_t group_lock;
    struct db_conn *group_conn;
    struct tx_job *group_head, *group_tail; /* guarded by group_lock */
    bool group_leading;                     /* guarded by group_lock */
    struct db_checkpointer *checkpointer;   /* be->checkpoint: see db_checkpointer.c */
};

/* Record the message of the last error on c (printf-style, truncated to fit). */
void db_conn_set_error(struct db_conn *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* Run a parameterless multi-statement script on c (the migration runner's tool). */
int db_exec_script(struct db_conn *c, const char *sql);

/* Building a result, for the backends. db_result_new makes an empty result of cols
 * columns that may hold max_bytes. Each row is db_result_add_row then cols calls of
 * db_result_add_cell (s NULL for SQL NULL). The names are set once with
 * db_result_set_name. Return DB_OK, DB_ERR_NOMEM or DB_ERR_TOO_BIG. */
struct db_result *db_result_new(size_t cols, size_t max_bytes);
int db_result_set_name(struct db_result *res, size_t col, const char *name);
int db_result_add_row(struct db_result *res);
int db_result_add_cell(struct db_result *res, const char *s, size_t len);

#endif
