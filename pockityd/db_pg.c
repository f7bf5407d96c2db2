/* db_pg: the PostgreSQL backend of the database layer, over libpq: one PGconn per
 * pooled connection, reset when found broken, with a small cache of named prepared
 * statements so that a statement is parsed and planned once per connection. */
#include "buf.h"
#include "db_backend.h"
#include "log.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INT8_OID        20   /* pg_type.oid of bigint */
#define INT8_ARRAY_OID  1016 /* bigint[] */
#define TEXT_ARRAY_OID  1009 /* text[] */
#define STMT_CACHE_SIZE 64   /* prepared statements kept per connection */
#define STMT_MAX_PARAMS 64   /* statements with more parameters are not prepared */

#define ARRAY_MAX_BYTES ((size_t)1 << 30) /* the server's limit on one value */

/* A statement prepared on the server as "pky_<serial>": the key is its SQL text
 * and the types its parameters were prepared with (int8 or unspecified). */
struct pg_stmt {
    char *sql; /* NULL: free slot */
    size_t n;
    Oid types[STMT_MAX_PARAMS];
    uint64_t serial;
    uint64_t last_used;
};

struct pg_conn {
    PGconn *pg;
    uint64_t tick;
    uint64_t next_serial;
    struct pg_stmt cache[STMT_CACHE_SIZE];
};

static PGconn *pg_of(struct db_conn *c)
{
    return ((struct pg_conn *)c->handle)->pg;
}

/* Forget every cached statement (the server forgot them: a new session). */
static void cache_clear(struct pg_conn *pc)
{
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
        free(pc->cache[i].sql);
        pc->cache[i].sql = NULL;
    }
}

/* Copy a libpq message into buf without its trailing newline. */
static void trim_message(char *buf, size_t size, const char *msg)
{
    snprintf(buf, size, "%s", msg && *msg ? msg : "unknown error");
    size_t len = strlen(buf);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
}

/* Turn a failed result (or its absence) into a status and a message. The message is
 * the server's primary text only: the DETAIL part quotes row values. */
static int fail(struct db_conn *c, const PGresult *r)
{
    PGconn *pg = pg_of(c);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state) {
        char msg[DB_ERRMSG_SIZE - 32];
        trim_message(msg, sizeof(msg), PQerrorMessage(pg));
        db_conn_set_error(c, "postgresql: %s", msg);
        if (PQstatus(pg) == CONNECTION_BAD)
            return DB_ERR_CONN;
        return r ? DB_ERR_SQL : DB_ERR_NOMEM;
    }
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (strncmp(state, "22", 2) == 0) {
        /* Data exceptions quote the offending value, which may be a secret. */
        db_conn_set_error(c, "postgresql: invalid data value (sqlstate %s)", state);
        return DB_ERR_SQL;
    }
    db_conn_set_error(c, "postgresql: %s (sqlstate %s)", primary ? primary : "error", state);
    if (strncmp(state, "23", 2) == 0)
        return DB_ERR_CONSTRAINT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
        return DB_ERR_RETRY;
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
        strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0)
        return DB_ERR_CONN;
    if (strcmp(state, "53200") == 0)
        return DB_ERR_NOMEM;
    return DB_ERR_SQL;
}

static void quiet_notice(void *arg, const char *message)
{
    /* Notices ("relation already exists, skipping") are not errors: drop them. */
}

static int pg_connect(struct db_conn *c, const char *url, const struct db_options *opt, char *err,
                      size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *info = PQconninfoParse(url, &perr);
    if (!info) {
        if (!perr) {
            snprintf(err, errlen, "out of memory");
            return DB_ERR_NOMEM;
        }
        char msg[256];
        trim_message(msg, sizeof(msg), perr);
        snprintf(err, errlen, "invalid postgresql url: %s", msg);
        PQfreemem(perr);
        return DB_ERR_INVALID;
    }
    PQconninfoFree(info);

    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%u", opt->connect_timeout_s);
    /* Later keywords override earlier ones and the URL is expanded in place of dbname:
     * the URL may change the timeout, but the encoding is always UTF-8. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                "client_encoding", NULL};
    const char *const vals[] = {timeout, "pockityd", url, "UTF8", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg) {
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[400];
        trim_message(msg, sizeof(msg), PQerrorMessage(pg));
        snprintf(err, errlen, "cannot connect to postgresql: %s", msg);
        PQfinish(pg);
        return DB_ERR_CONN;
    }
    PQsetNoticeProcessor(pg, quiet_notice, NULL);
    struct pg_conn *pc = calloc(1, sizeof(*pc));
    if (!pc) {
        PQfinish(pg);
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    pc->pg = pg;
    c->handle = pc;
    return DB_OK;
}

static void pg_disconnect(struct db_conn *c)
{
    struct pg_conn *pc = c->handle;
    if (pc) {
        PQfinish(pc->pg);
        cache_clear(pc);
        free(pc);
    }
    c->handle = NULL;
}

static void pg_check(struct db_conn *c)
{
    PGconn *pg = pg_of(c);
    if (PQstatus(pg) != CONNECTION_BAD)
        return;
    cache_clear(c->handle); /* a new session has no prepared statements */
    PQreset(pg);
    if (PQstatus(pg) == CONNECTION_OK) {
        log_info("database connection re-established");
    } else {
        char msg[256];
        trim_message(msg, sizeof(msg), PQerrorMessage(pg));
        log_warn("cannot reconnect to postgresql: %s", msg);
    }
}

static bool pg_in_transaction(struct db_conn *c)
{
    switch (PQtransactionStatus(pg_of(c))) {
    case PQTRANS_ACTIVE:
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        return true;
    default:
        return false;
    }
}

static bool pg_transaction_failed(struct db_conn *c)
{
    return PQtransactionStatus(pg_of(c)) == PQTRANS_INERROR;
}

/* The rows a command inserted, updated or deleted. PQcmdTuples also counts the rows
 * a SELECT returned, which db_exec does not report as changes. */
static int64_t rows_changed(PGresult *r)
{
    static const char *const writes[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE "};
    const char *status = PQcmdStatus(r);
    for (size_t i = 0; status && i < sizeof(writes) / sizeof(writes[0]); i++)
        if (strncmp(status, writes[i], strlen(writes[i])) == 0)
            return strtoll(PQcmdTuples(r), NULL, 10);
    return 0;
}

/* Copy row `row` of r into res. */
static int copy_row(struct db_conn *c, const PGresult *r, int row, struct db_result *res)
{
    int rc = db_result_add_row(res);
    int cols = PQnfields(r);
    for (int i = 0; i < cols && rc == DB_OK; i++) {
        if (PQgetisnull(r, row, i))
            rc = db_result_add_cell(res, NULL, 0);
        else
            rc = db_result_add_cell(res, PQgetvalue(r, row, i), (size_t)PQgetlength(r, row, i));
    }
    if (rc == DB_ERR_TOO_BIG)
        db_conn_set_error(c, "result larger than %zu bytes", c->db->opt.max_result_bytes);
    else if (rc)
        db_conn_set_error(c, "out of memory");
    return rc;
}

static int start_result(struct db_conn *c, const PGresult *r, struct db_result **res)
{
    int cols = PQnfields(r);
    *res = db_result_new((size_t)cols, c->db->opt.max_result_bytes);
    int rc = *res ? DB_OK : DB_ERR_NOMEM;
    for (int i = 0; i < cols && rc == DB_OK; i++)
        rc = db_result_set_name(*res, (size_t)i, PQfname(r, i));
    if (rc) {
        db_conn_set_error(c, "out of memory");
        return rc;
    }
    return DB_OK;
}

/* Take one result of a statement: rows into *res (started on the first when
 * want), the count of changed rows into *changes (may be NULL). In single-row
 * mode the rows come one a result, then an empty final one. Returns a status. */
static int take_result(struct db_conn *c, PGresult *r, bool want, struct db_result **res,
                       int64_t *changes)
{
    int rc = DB_OK;
    switch (PQresultStatus(r)) {
    case PGRES_SINGLE_TUPLE:
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        if (want && !*res)
            rc = start_result(c, r, res);
        for (int row = 0; rc == DB_OK && *res && row < PQntuples(r); row++)
            rc = copy_row(c, r, row, *res);
        if (rc == DB_OK && changes && PQresultStatus(r) != PGRES_SINGLE_TUPLE)
            *changes = rows_changed(r);
        return rc;
    case PGRES_EMPTY_QUERY:
        db_conn_set_error(c, "empty sql statement");
        return DB_ERR_INVALID;
    default:
        return fail(c, r);
    }
}

/* Find or prepare (one round trip, the first time on this connection) the
 * statement sql with these parameter types; *name receives its name, or NULL when
 * it is not to be cached (the caller then runs it unnamed). Returns DB_OK, or the
 * status of a failed preparation (a bad statement) with the server's message. */
static int prepared(struct db_conn *c, const char *sql, const Oid *types, size_t n, char buf[32],
                    const char **name)
{
    struct pg_conn *pc = c->handle;
    *name = NULL;
    if (n > STMT_MAX_PARAMS)
        return DB_OK;
    struct pg_stmt *victim = &pc->cache[0];
    for (size_t i = 0; i < STMT_CACHE_SIZE; i++) {
        struct pg_stmt *st = &pc->cache[i];
        if (st->sql && st->n == n && strcmp(st->sql, sql) == 0 &&
            (n == 0 || memcmp(st->types, types, n * sizeof(*types)) == 0)) {
            st->last_used = ++pc->tick;
            snprintf(buf, 32, "pky_%" PRIu64, st->serial);
            *name = buf;
            return DB_OK;
        }
        if (!st->sql || (victim->sql && st->last_used < victim->last_used))
            victim = st;
    }
    /* Inside a failed transaction the server refuses everything: run it unnamed
     * to get that error. */
    if (PQtransactionStatus(pc->pg) == PQTRANS_INERROR)
        return DB_OK;
    char *copy = strdup(sql);
    if (!copy)
        return DB_OK;
    if (victim->sql) {
        char old[64];
        snprintf(old, sizeof(old), "DEALLOCATE pky_%" PRIu64, victim->serial);
        PQclear(PQexec(pc->pg, old)); /* a failure only leaves it allocated */
        free(victim->sql);
        victim->sql = NULL;
    }
    uint64_t serial = ++pc->next_serial;
    snprintf(buf, 32, "pky_%" PRIu64, serial);
    PGresult *r = PQprepare(pc->pg, buf, sql, (int)n, types);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = fail(c, r);
        PQclear(r);
        free(copy);
        return rc;
    }
    PQclear(r);
    victim->sql = copy;
    victim->n = n;
    if (n)
        memcpy(victim->types, types, n * sizeof(*types));
    victim->serial = serial;
    victim->last_used = ++pc->tick;
    *name = buf;
    return DB_OK;
}

/* A statement's parameters in libpq's form. */
struct pg_args {
    Oid *types;
    const char **values;
    char *ints;    /* 24 bytes per parameter: integers in decimal */
    char **copies; /* NUL-terminated copies of counted strings */
    size_t n;
};

static void args_free(struct pg_args *a)
{
    if (a->copies)
        for (size_t i = 0; i < a->n; i++)
            free(a->copies[i]);
    free(a->copies);
    free(a->ints);
    free(a->values);
    free(a->types);
    memset(a, 0, sizeof(*a));
}

/* An array parameter in PostgreSQL's text form: {1,-2} or {"a","say \"hi\"",NULL},
 * every text element quoted (so none reads as NULL) with " and \ escaped.
 * Returns a malloc'd string, or NULL when out of memory. */
static char *array_literal(const struct db_param *p)
{
    struct buf b;
    buf_init(&b, ARRAY_MAX_BYTES);
    int rc = buf_add(&b, "{", 1);
    for (size_t k = 0; rc == 0 && k < p->len; k++) {
        if (k)
            rc = buf_add(&b, ",", 1);
        if (rc == 0 && p->type == DB_TYPE_INT_ARRAY) {
            rc = buf_addf(&b, "%" PRId64, p->ints[k]);
        } else if (rc == 0 && !p->texts[k]) {
            rc = buf_adds(&b, "NULL");
        } else if (rc == 0) {
            const char *t = p->texts[k];
            rc = buf_add(&b, "\"", 1);
            while (rc == 0 && *t) {
                size_t run = strcspn(t, "\"\\");
                rc = buf_add(&b, t, run);
                t += run;
                if (rc == 0 && *t) {
                    const char esc[2] = {'\\', *t++};
                    rc = buf_add(&b, esc, 2);
                }
            }
            if (rc == 0)
                rc = buf_add(&b, "\"", 1);
        }
    }
    if (rc == 0)
        rc = buf_add(&b, "}", 1);
    if (rc) {
        buf_release(&b);
        return NULL;
    }
    return buf_detach(&b, NULL);
}

/* Convert params: integers typed int8, text untyped (the server infers it),
 * arrays typed bigint[] or text[]. */
static int args_make(struct db_conn *c, const struct db_param *params, size_t n, struct pg_args *a)
{
    memset(a, 0, sizeof(*a));
    a->n = n;
    if (!n)
        return DB_OK;
    a->types = calloc(n, sizeof(*a->types));
    a->values = calloc(n, sizeof(*a->values));
    a->ints = calloc(n, 24);
    a->copies = calloc(n, sizeof(*a->copies));
    if (!a->types || !a->values || !a->ints || !a->copies)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const struct db_param *p = &params[i];
        if (p->type == DB_TYPE_INT) {
            a->types[i] = INT8_OID;
            snprintf(a->ints + 24 * i, 24, "%" PRId64, p->i);
            a->values[i] = a->ints + 24 * i;
        } else if (p->type == DB_TYPE_TEXT && p->s) {
            /* libpq wants NUL-terminated text: copy a counted string. */
            if (p->len == DB_LEN_AUTO) {
                a->values[i] = p->s;
            } else {
                a->copies[i] = strndup(p->s, p->len);
                if (!a->copies[i])
                    goto nomem;
                a->values[i] = a->copies[i];
            }
        } else if (p->type == DB_TYPE_INT_ARRAY || p->type == DB_TYPE_TEXT_ARRAY) {
            a->types[i] = p->type == DB_TYPE_INT_ARRAY ? INT8_ARRAY_OID : TEXT_ARRAY_OID;
            a->copies[i] = array_literal(p);
            if (!a->copies[i])
                goto nomem;
            a->values[i] = a->copies[i];
        }
    }
    return DB_OK;
nomem:
    args_free(a);
    db_conn_set_error(c, "out of memory");
    return DB_ERR_NOMEM;
}

static int pg_run(struct db_conn *c, const char *sql, const struct db_param *params, size_t n,
                  int64_t *changes, struct db_result **out)
{
    PGconn *pg = pg_of(c);
    struct db_result *res = NULL;
    struct pg_args a;
    int rc = args_make(c, params, n, &a);
    if (rc)
        goto done;
    Oid *types = a.types;
    const char **values = a.values;

    char name_buf[32];
    const char *name = NULL;
    rc = prepared(c, sql, types, n, name_buf, &name);
    if (rc)
        goto done;
    if (!(name ? PQsendQueryPrepared(pg, name, (int)n, values, NULL, NULL, 0)
               : PQsendQueryParams(pg, sql, (int)n, types, values, NULL, NULL, 0))) {
        rc = fail(c, NULL);
        goto done;
    }
    /* Row by row, so the result cap holds before libpq buffers a huge answer. */
    PQsetSingleRowMode(pg);
    PGresult *r;
    while ((r = PQgetResult(pg)) != NULL) {
        if (rc != DB_OK) {
            PQclear(r); /* drain the rest after a failure */
            continue;
        }
        rc = take_result(c, r, out != NULL, &res, changes);
        PQclear(r);
    }
    if (rc == DB_OK && PQstatus(pg) == CONNECTION_BAD)
        rc = fail(c, NULL);

done:
    args_free(&a);
    if (rc) {
        db_result_free(res);
        res = NULL;
        if (changes)
            *changes = 0;
    }
    if (out)
        *out = res;
    return rc;
}

/* Read the results of one statement of a pipeline (up to the NULL that ends
 * them) into *out / *changes. Returns its status: DB_OK, its own failure, or
 * skipped (DB_ERR_SQL, never reported: an earlier statement failed). */
static int pipeline_read(struct db_conn *c, const struct db_stmt *st, bool *skipped)
{
    PGconn *pg = pg_of(c);
    struct db_result *res = NULL;
    int rc = DB_OK;
    PGresult *r;
    *skipped = false;
    while ((r = PQgetResult(pg)) != NULL) {
        if (rc != DB_OK) {
            PQclear(r);
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
            *skipped = true;
            rc = DB_ERR_SQL;
        } else {
            /* libpq 15 may keep the single-row mode of the query before the
             * pipeline: then rows come one by one here too */
            rc = take_result(c, r, st->out != NULL, &res, st->changes);
        }
        PQclear(r);
        if (PQstatus(pg) == CONNECTION_BAD)
            break;
    }
    if (rc) {
        db_result_free(res);
        res = NULL;
        if (st->changes)
            *st->changes = 0;
    }
    if (st->out)
        *st->out = res;
    return rc;
}

/* Run the statements in one round trip: prepare the new ones first (they stay
 * cached), then send them all in pipeline mode followed by one Sync, and read.
 * The statements before a failure keep their results, as when run one by one. */
static int pg_batch(struct db_conn *c, const struct db_stmt *stmts, size_t n)
{
    PGconn *pg = pg_of(c);
    struct pg_args args[16];
    char names[16][32];
    const char *name[16];
    size_t made = 0, sent = 0;
    int rc = DB_OK;
    if (n > 16) {
        db_conn_set_error(c, "too many statements in one batch");
        return DB_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        if (stmts[i].out)
            *stmts[i].out = NULL;
        if (stmts[i].changes)
            *stmts[i].changes = 0;
    }
    for (; made < n && rc == DB_OK; made++) {
        rc = args_make(c, stmts[made].params, stmts[made].n, &args[made]);
        if (rc == DB_OK)
            rc = prepared(c, stmts[made].sql, args[made].types, stmts[made].n, names[made],
                          &name[made]);
        if (rc) {
            args_free(&args[made]);
            break;
        }
    }
    if (rc)
        goto done;
    if (!PQenterPipelineMode(pg)) {
        rc = fail(c, NULL);
        goto done;
    }
    for (; sent < n; sent++) {
        const struct db_stmt *st = &stmts[sent];
        int ok = name[sent] ? PQsendQueryPrepared(pg, name[sent], (int)st->n, args[sent].values,
                                                  NULL, NULL, 0)
                            : PQsendQueryParams(pg, st->sql, (int)st->n, args[sent].types,
                                                args[sent].values, NULL, NULL, 0);
        if (!ok) {
            rc = fail(c, NULL);
            break;
        }
    }
    if (sent && !PQpipelineSync(pg) && rc == DB_OK)
        rc = fail(c, NULL);
    /* Read every result of what was sent, even after a failure, to leave the
     * connection clean; the first failure is the batch's status. */
    int first = DB_OK;
    char msg[DB_ERRMSG_SIZE] = "";
    for (size_t i = 0; i < sent && PQstatus(pg) != CONNECTION_BAD; i++) {
        bool skipped = false;
        int st = pipeline_read(c, &stmts[i], &skipped);
        if (st && !skipped && first == DB_OK) {
            first = st;
            memcpy(msg, c->errmsg, sizeof(msg));
        }
    }
    if (sent && PQstatus(pg) != CONNECTION_BAD) {
        PGresult *r = PQgetResult(pg); /* PGRES_PIPELINE_SYNC */
        if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC && first == DB_OK)
            first = fail(c, r), memcpy(msg, c->errmsg, sizeof(msg));
        PQclear(r);
    }
    if (!PQexitPipelineMode(pg) && rc == DB_OK && first == DB_OK)
        first = fail(c, NULL), memcpy(msg, c->errmsg, sizeof(msg));
    if (rc == DB_OK && first != DB_OK) {
        rc = first;
        memcpy(c->errmsg, msg, sizeof(msg));
    }
    if (rc == DB_OK && PQstatus(pg) == CONNECTION_BAD)
        rc = fail(c, NULL);

done:
    for (size_t i = 0; i < made; i++)
        args_free(&args[i]);
    return rc;
}

static int pg_script(struct db_conn *c, const char *sql)
{
    PGresult *r = PQexec(pg_of(c), sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = DB_OK;
    if (!r || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY))
        rc = fail(c, r);
    PQclear(r);
    return rc;
}

const struct db_backend db_backend_pg = {
        .name = "postgresql",
        .dialect = DB_POSTGRES,
        .begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        .begin_write = "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE",
        .connect = pg_connect,
        .disconnect = pg_disconnect,
        .check = pg_check,
        .run = pg_run,
        .batch = pg_batch,
        .script = pg_script,
        .in_transaction = pg_in_transaction,
        .transaction_failed = pg_transaction_failed,
};
