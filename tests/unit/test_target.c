/* test_target: fresh databases for the database-layer unit tests (see
 * test_target.h). */
#include "test_target.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"

enum backend g_backend;
const char *g_pg_url;
static int counter;

static void quiet(void *arg, const char *msg)
{
}

int pg_admin(const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGconn *pg = PQconnectdb(g_pg_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to '%s': %s", g_pg_url, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    PQsetNoticeProcessor(pg, quiet, NULL);
    PGresult *r = PQexec(pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "'%s' failed: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return ok ? 0 : -1;
}

int target_make(struct target *t, const char *name)
{
    memset(t, 0, sizeof(*t));
    if (g_backend == BK_SQLITE) {
        snprintf(t->dir, sizeof(t->dir), "/tmp/pockity-test-%s-XXXXXX", name);
        if (!mkdtemp(t->dir))
            return -1;
        snprintf(t->path, sizeof(t->path), "%s/pockity.db", t->dir);
        snprintf(t->url, sizeof(t->url), "sqlite:%s", t->path);
        return 0;
    }
    snprintf(t->schema, sizeof(t->schema), "pockity_test_%s_%ld_%d", name, (long)getpid(),
             ++counter);
    if (pg_admin("DROP SCHEMA IF EXISTS %s CASCADE", t->schema) ||
        pg_admin("CREATE SCHEMA %s", t->schema))
        return -1;
    snprintf(t->url, sizeof(t->url), "%s%coptions=-csearch_path%%3D%s", g_pg_url,
             strchr(g_pg_url, '?') ? '&' : '?', t->schema);
    return 0;
}

void target_drop(struct target *t)
{
    if (g_backend == BK_SQLITE) {
        const char *suffix[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < 4; i++) {
            char p[320];
            snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
            unlink(p);
        }
        rmdir(t->dir);
    } else {
        pg_admin("DROP SCHEMA IF EXISTS %s CASCADE", t->schema);
    }
}

int db_fixture_setup(void **state, const char *name)
{
    struct db_fixture *f = calloc(1, sizeof(*f));
    if (!f || target_make(&f->t, name)) {
        free(f);
        return -1;
    }
    char err[256];
    int rc = db_open(f->t.url, NULL, &f->db, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "db_open: %s: %s\n", db_strerror(rc), err);
        target_drop(&f->t);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

int db_fixture_teardown(void **state)
{
    struct db_fixture *f = *state;
    db_close(f->db);
    target_drop(&f->t);
    free(f);
    return 0;
}
