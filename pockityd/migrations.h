/* migrations: pockityd's versioned schema, applied by db_open. */
#ifndef POCKITYD_MIGRATIONS_H
#define POCKITYD_MIGRATIONS_H

#include "db.h"

/* One schema change. sql_sqlite and sql_postgres are scripts of several statements
 * without parameters; they are the same text where the dialects agree. */
struct migration {
    int version; /* 1, 2, 3, ... in order, never reused */
    const char *name;
    const char *sql_sqlite;
    const char *sql_postgres;
};

/* The newest schema version this program knows. */
int migrations_latest(void);

/* Apply, on connection c of db, every migration newer than the database's version,
 * each in its own write transaction recorded in schema_migrations. Safe when several
 * processes start at once on one database: each check-and-apply holds the database's
 * write lock (SQLite) or a transaction-level advisory lock (PostgreSQL). Returns
 * DB_OK, DB_ERR_SCHEMA when the database is newer than this program, or the failing
 * status, with a message in err. */
int migrations_apply(struct db *db, struct db_conn *c, char *err, size_t errlen);

#endif
