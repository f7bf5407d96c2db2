/* db: pockityd's one database interface (a connection pool, statements with bound
 * parameters, transactions) over two backends, SQLite and PostgreSQL. */
#ifndef POCKITYD_DB_H
#define POCKITYD_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Threads: a struct db is shared by all threads. A struct db_conn belongs to one
 * thread between db_acquire() and db_release(); it must not be used by two threads at
 * once, nor after it is released.
 *
 * SQL: one text for both backends. Rules that keep it portable:
 *  - Parameters are written PostgreSQL-style, $1, $2, ... (never '?' or ':name'); the
 *    same $N may appear several times. Every value goes through a parameter: SQL text
 *    is never built from input.
 *  - Integer parameters (DB_INT) are sent to PostgreSQL typed as bigint, so arithmetic
 *    and comparisons such as "reserved + $1 <= lim" need no cast. Text and NULL
 *    parameters are sent untyped: PostgreSQL infers their type from the context.
 *    Where the context cannot tell (e.g. "$1 IS NULL" alone), write a portable
 *    CAST($1 AS TEXT) / CAST($1 AS BIGINT), never "$1::text".
 *  - A parameter's type must suit its column: PostgreSQL refuses text = bigint where
 *    SQLite would convert.
 *  - Timestamps are BIGINT unix seconds; flags are INTEGER 0/1; ids are TEXT made by
 *    the application. Use only SQL both engines accept (ON CONFLICT ... DO UPDATE,
 *    RETURNING, CASE, COALESCE, LIMIT/OFFSET all work on both).
 *  - db_exec/db_query run ONE statement.
 *  - An array parameter (DB_INT_ARRAY, DB_TEXT_ARRAY) lets one statement work on a
 *    whole batch of rows. The engines spell an array's rows differently, so such a
 *    statement has one text per dialect:
 *      PostgreSQL binds a typed array (bigint[] or text[]): unnest($1), several side
 *      by side with unnest($1, $2) WITH ORDINALITY AS t(a, b, i) (i counts from 1),
 *      or x = ANY($1);
 *      SQLite binds a JSON array (text): json_each($1), whose column value holds an
 *      element and key its index (counting from 0). One json_each per statement
 *      reads well; joining several on their index does not (SQLite scans them).
 *
 * Results are copied in full, so they outlive the statement and the connection;
 * every value reads back as text (integers in decimal).
 */

/* The one error vocabulary of the database layer. 0 is success. */
enum db_status {
    DB_OK = 0,
    DB_ERR_NOMEM,      /* an allocation failed */
    DB_ERR_CONSTRAINT, /* a unique, foreign key, check or not-null constraint refused it */
    DB_ERR_RETRY,      /* busy, serialization failure or deadlock: run the transaction again */
    DB_ERR_CONN,       /* the server is unreachable or the connection was lost */
    DB_ERR_SQL,        /* any other error reported by the database */
    DB_ERR_BUSY,       /* the pool had no free connection within the wait */
    DB_ERR_INVALID,    /* a bad argument: URL, parameter (NUL, bad UTF-8), several statements */
    DB_ERR_TOO_BIG,    /* a result larger than db_options.max_result_bytes */
    DB_ERR_NOT_FOUND,  /* no row (only from db_query_row and db_query_int) */
    DB_ERR_SCHEMA,     /* the database's schema is newer than this program knows */
    DB_STATUS_COUNT
};

/* A short lowercase description of status; never NULL. */
const char *db_strerror(int status);

/* Which engine a database runs on. The migration runner looks at it, and hot paths
 * may take a faster PostgreSQL-only route (data-modifying WITH queries) as long as
 * the SQLite route does the same thing and the tests run both: pockityd must work
 * the same on both. */
enum db_dialect {
    DB_SQLITE,
    DB_POSTGRES
};

struct db_options {
    unsigned pool_size;          /* connections kept open; 0 = 8 */
    unsigned busy_timeout_ms;    /* SQLite: how long a statement waits for a lock; 0 = 5000 */
    unsigned acquire_timeout_ms; /* how long db_acquire waits for a free connection; 0 = 5000 */
    unsigned connect_timeout_s;  /* PostgreSQL: connect timeout; 0 = 10 (the URL may override) */
    size_t max_result_bytes;     /* cap on one materialised result; 0 = 64 MiB */
};

struct db;
struct db_conn;
struct db_result;

/* Open the database named by url and bring its schema up to date:
 *   sqlite:PATH                        a file (created with mode 0600 if missing)
 *   postgresql://... or postgres://...  a libpq connection URI
 * opt may be NULL for the defaults. On success *out owns the database (free it with
 * db_close) and DB_OK is returned. On failure returns a status, sets *out to NULL and
 * writes a message to err (errlen bytes, may be 0). Messages never hold the URL's
 * password. DB_ERR_SCHEMA when the database was migrated by a newer program. */
int db_open(const char *url, const struct db_options *opt, struct db **out, char *err,
            size_t errlen);

/* Close every connection and free db. All connections must have been released.
 * NULL is accepted. */
void db_close(struct db *db);

/* Rounds of write-ahead log checkpoints db's own thread has run (SQLite; 0 on
 * PostgreSQL, whose server does its own). */
unsigned long db_checkpoints(const struct db *db);

enum db_dialect db_dialect(const struct db *db);
/* The dialect of c's database. */
enum db_dialect db_conn_dialect(const struct db_conn *c);

/* Take a connection from the pool, waiting up to acquire_timeout_ms for one to be
 * released. Returns NULL when none frees up in time (report DB_ERR_BUSY). A PostgreSQL
 * connection found broken is reset here; if the server is still unreachable the
 * connection is returned anyway and its statements fail with DB_ERR_CONN. */
struct db_conn *db_acquire(struct db *db);

/* Give c back to its pool. An open transaction is rolled back first. NULL is accepted. */
void db_release(struct db_conn *c);

/* The backend's message for the last failed call on c, "" if none. It never holds
 * parameter values. Valid until the next call on c. */
const char *db_conn_errmsg(const struct db_conn *c);

/* A bound parameter. Build them with the macros below:
 *   struct db_param p[] = {DB_TEXT(id), DB_INT(delta)};
 *   db_exec(c, "UPDATE t SET n = n + $2 WHERE id = $1", p, 2, &changes);
 * or inline with DB_ARGS: db_exec(c, sql, DB_ARGS(DB_TEXT(id), DB_INT(delta)), NULL).
 * Text is borrowed, not copied; it must stay valid for the call only. It must be
 * valid UTF-8 without NUL bytes (else DB_ERR_INVALID). DB_TEXT(NULL) binds SQL NULL. */
enum db_type {
    DB_TYPE_NULL,
    DB_TYPE_INT,
    DB_TYPE_TEXT,
    DB_TYPE_INT_ARRAY,
    DB_TYPE_TEXT_ARRAY
};

struct db_param {
    enum db_type type;
    int64_t i;                /* DB_TYPE_INT */
    const char *s;            /* DB_TYPE_TEXT */
    const int64_t *ints;      /* DB_TYPE_INT_ARRAY: len values */
    const char *const *texts; /* DB_TYPE_TEXT_ARRAY: len NUL-terminated strings (NULL: SQL NULL) */
    size_t len;               /* DB_TYPE_TEXT: bytes of s, or DB_LEN_AUTO for strlen(s);
                                 the arrays: their number of elements */
};

#define DB_LEN_AUTO    ((size_t)-1)
#define DB_NULL()      ((struct db_param){.type = DB_TYPE_NULL})
#define DB_INT(v)      ((struct db_param){.type = DB_TYPE_INT, .i = (int64_t)(v)})
#define DB_TEXT(v)     ((struct db_param){.type = DB_TYPE_TEXT, .s = (v), .len = DB_LEN_AUTO})
#define DB_TEXTN(v, n) ((struct db_param){.type = DB_TYPE_TEXT, .s = (v), .len = (size_t)(n)})
/* n values as one array parameter (see the SQL rules above); the values are borrowed
 * for the call, each text element valid UTF-8 like DB_TEXT's. */
#define DB_INT_ARRAY(v, n)                                                                         \
    ((struct db_param){.type = DB_TYPE_INT_ARRAY, .ints = (v), .len = (size_t)(n)})
#define DB_TEXT_ARRAY(v, n)                                                                        \
    ((struct db_param){.type = DB_TYPE_TEXT_ARRAY, .texts = (v), .len = (size_t)(n)})
/* Expands to the two arguments "params, n" for an inline list of parameters. */
#define DB_ARGS(...)                                                                               \
    ((const struct db_param[]){__VA_ARGS__}),                                                      \
            (sizeof((const struct db_param[]){__VA_ARGS__}) / sizeof(struct db_param))

/* Run one statement with n parameters (params may be NULL when n is 0). Rows it
 * returns are discarded. *changes (may be NULL) receives the number of rows inserted,
 * updated or deleted. Returns DB_OK or a status; on error db_conn_errmsg says why. */
int db_exec(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
            int64_t *changes);

/* Run one statement and copy its rows into *out, which the caller owns (free it with
 * db_result_free). *out is NULL on error. */
int db_query(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
             struct db_result **out);

/* Like db_query, but DB_ERR_NOT_FOUND (and *out NULL) when there is no row. */
int db_query_row(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                 struct db_result **out);

/* Run a query and read the first column of its first row as an integer into *out
 * (0 for SQL NULL). DB_ERR_NOT_FOUND when there is no row. */
int db_query_int(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                 int64_t *out);

size_t db_result_rows(const struct db_result *res);
size_t db_result_cols(const struct db_result *res);

/* The column's name, or NULL when col is out of range. Owned by res. */
const char *db_result_name(const struct db_result *res, size_t col);

/* The value as NUL-terminated text, owned by res: NULL for SQL NULL or when row or col
 * is out of range. */
const char *db_result_text(const struct db_result *res, size_t row, size_t col);

/* The value as a 64-bit integer: 0 for SQL NULL, out of range, or text that is not an
 * integer. */
int64_t db_result_int(const struct db_result *res, size_t row, size_t col);

/* Whether the value is SQL NULL (true when row or col is out of range). */
bool db_result_is_null(const struct db_result *res, size_t row, size_t col);

/* Free a result. NULL is accepted. */
void db_result_free(struct db_result *res);

/* Transactions. DB_TX_WRITE takes the write lock at once on SQLite (BEGIN IMMEDIATE,
 * so two writers never deadlock upgrading a read lock); on PostgreSQL it is a plain
 * READ COMMITTED transaction, so guard check-then-write logic with a conditional
 * UPDATE or SELECT ... FOR UPDATE (FOR UPDATE is PostgreSQL-only: prefer the UPDATE).
 * DB_TX_READ is for reads over one consistent snapshot (SQLite deferred BEGIN;
 * PostgreSQL REPEATABLE READ READ ONLY, which also refuses writes). Transactions do not
 * nest. A transaction in which a statement failed cannot commit: PostgreSQL refuses
 * every later statement in it, and on both backends db_commit then rolls back and
 * returns the first error. */
enum db_tx {
    DB_TX_READ,
    DB_TX_WRITE
};

/* On PostgreSQL db_begin sends nothing: its BEGIN goes out with the transaction's
 * first statement (one round trip fewer), and a transaction that ran no statement
 * costs nothing to commit or roll back. Errors of the BEGIN itself (a lost
 * connection) are then reported by that first statement. */
int db_begin(struct db_conn *c, enum db_tx mode);
int db_commit(struct db_conn *c);
int db_rollback(struct db_conn *c);

/* Run fn in a write transaction on a pooled connection: commit when it returns DB_OK,
 * roll back otherwise. When fn or the commit fails with DB_ERR_RETRY the whole
 * transaction runs again, at most DB_TRANSACT_ATTEMPTS times in all, so fn must have no
 * effects outside the database (or be safe to repeat), and must not commit or roll
 * back itself. Returns DB_OK, fn's own
 * nonzero return (passed through unchanged), DB_ERR_BUSY when no connection was free,
 * or the failing db status. */
#define DB_TRANSACT_ATTEMPTS 5
typedef int (*db_tx_fn)(struct db_conn *c, void *arg);
int db_transact(struct db *db, db_tx_fn fn, void *arg);

/* db_transact on a connection the caller holds (not in a transaction). */
int db_transact_on(struct db_conn *c, db_tx_fn fn, void *arg);

/* Run fn (a statement in autocommit, or a transaction it ends itself) again
 * after DB_ERR_RETRY with the same pauses, at most DB_TRANSACT_ATTEMPTS times. */
int db_retry(struct db_conn *c, db_tx_fn fn, void *arg);

#endif
