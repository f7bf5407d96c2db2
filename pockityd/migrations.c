/* migrations: the ordered schema changes of pockityd's database and the runner that
 * applies them at open, safely when several replicas start at once. */
#include "migrations.h"
#include "db_backend.h"

#include "mig_allowances.h"
#include "mig_billing.h"
#include "mig_events.h"
#include "mig_mail.h"
#include "mig_payments.h"
#include "mig_quota.h"
#include "mig_roles.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

/* Any constant unique to pockity: the key of the PostgreSQL advisory lock that
 * serialises migration runs ("pockity" in ASCII). */
#define MIGRATION_LOCK_KEY "31647670186112121"

/*
 * Migration 1: the initial schema. Conventions: ids are TEXT chosen by the
 * application, timestamps BIGINT unix seconds, flags INTEGER 0/1. Emails are stored
 * normalised to lower case by the application (lower() differs between the engines
 * outside ASCII, so no CHECK enforces it).
 */
#define MIG1_COMMON                                                                                \
    "CREATE TABLE users ("                                                                         \
    " id TEXT PRIMARY KEY,"                                                                        \
    " email TEXT NOT NULL UNIQUE CHECK (length(email) > 0),"                                       \
    " name TEXT NOT NULL,"                                                                         \
    " password_hash TEXT NOT NULL,"                                                                \
    " role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),"                        \
    " status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),"            \
    " email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),"                 \
    " created_at BIGINT NOT NULL,"                                                                 \
    " updated_at BIGINT NOT NULL);\n"                                                              \
                                                                                                   \
    "CREATE TABLE auth_sessions ("                                                                 \
    " id TEXT PRIMARY KEY,"                                                                        \
    " user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"                              \
    " created_at BIGINT NOT NULL,"                                                                 \
    " expires_at BIGINT NOT NULL,"                                                                 \
    " revoked_at BIGINT,"                                                                          \
    " client_addr TEXT);\n"                                                                        \
    "CREATE INDEX auth_sessions_user ON auth_sessions (user_id);\n"                                \
    "CREATE INDEX auth_sessions_expires ON auth_sessions (expires_at);\n"                          \
                                                                                                   \
    "CREATE TABLE rate_limits ("                                                                   \
    " scope TEXT PRIMARY KEY,"                                                                     \
    " window_start BIGINT NOT NULL,"                                                               \
    " count BIGINT NOT NULL CHECK (count >= 0));\n"                                                \
                                                                                                   \
    "CREATE TABLE tiers ("                                                                         \
    " id TEXT PRIMARY KEY CHECK (length(id) > 0),"                                                 \
    " name TEXT NOT NULL,"                                                                         \
    " max_bytes BIGINT NOT NULL CHECK (max_bytes >= 0),"                                           \
    " max_objects BIGINT NOT NULL CHECK (max_objects >= 0),"                                       \
    " price_minor BIGINT NOT NULL DEFAULT 0 CHECK (price_minor >= 0),"                             \
    " currency TEXT NOT NULL DEFAULT 'USD' CHECK (length(currency) = 3),"                          \
    " needs_approval INTEGER NOT NULL CHECK (needs_approval IN (0, 1)),"                           \
    " active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),"                                 \
    " created_at BIGINT NOT NULL);\n"                                                              \
                                                                                                   \
    "CREATE TABLE pockets ("                                                                       \
    " id TEXT PRIMARY KEY,"                                                                        \
    " user_id TEXT NOT NULL REFERENCES users (id),"                                                \
    " name TEXT NOT NULL CHECK (length(name) > 0),"                                                \
    " tier_id TEXT NOT NULL REFERENCES tiers (id),"                                                \
    " status TEXT NOT NULL DEFAULT 'pending'"                                                      \
    "  CHECK (status IN ('pending', 'active', 'suspended', 'deleting')),"                          \
    " prefix TEXT NOT NULL UNIQUE,"                                                                \
    " used_bytes BIGINT NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),"                               \
    " used_objects BIGINT NOT NULL DEFAULT 0 CHECK (used_objects >= 0),"                           \
    " reserved_bytes BIGINT NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),"                       \
    " reserved_objects BIGINT NOT NULL DEFAULT 0 CHECK (reserved_objects >= 0),"                   \
    " created_at BIGINT NOT NULL,"                                                                 \
    " updated_at BIGINT NOT NULL,"                                                                 \
    " UNIQUE (user_id, name));\n"                                                                  \
    "CREATE INDEX pockets_tier ON pockets (tier_id);\n"                                            \
                                                                                                   \
    "CREATE TABLE tier_requests ("                                                                 \
    " id TEXT PRIMARY KEY,"                                                                        \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"                              \
    " from_tier TEXT REFERENCES tiers (id),"                                                       \
    " to_tier TEXT NOT NULL REFERENCES tiers (id),"                                                \
    " reason TEXT NOT NULL DEFAULT '',"                                                            \
    " status TEXT NOT NULL DEFAULT 'pending'"                                                      \
    "  CHECK (status IN ('pending', 'approved', 'rejected', 'canceled')),"                         \
    " decided_by TEXT REFERENCES users (id) ON DELETE SET NULL,"                                   \
    " comment TEXT,"                                                                               \
    " created_at BIGINT NOT NULL,"                                                                 \
    " decided_at BIGINT);\n"                                                                       \
    "CREATE INDEX tier_requests_status ON tier_requests (status);\n"                               \
    "CREATE INDEX tier_requests_pocket ON tier_requests (pocket_id);\n" /* At most one open        \
                                                                           request per pocket. */  \
    "CREATE UNIQUE INDEX tier_requests_one_pending ON tier_requests (pocket_id)"                   \
    " WHERE status = 'pending';\n"                                                                 \
                                                                                                   \
    "CREATE TABLE api_keys ("                                                                      \
    " id TEXT PRIMARY KEY,"                                                                        \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"                              \
    " name TEXT NOT NULL,"                                                                         \
    " access TEXT NOT NULL CHECK (access IN ('rw', 'ro')),"                                        \
    " secret_hash TEXT NOT NULL,"                                                                  \
    " created_at BIGINT NOT NULL,"                                                                 \
    " expires_at BIGINT,"                                                                          \
    " revoked_at BIGINT,"                                                                          \
    " last_used_at BIGINT,"                                                                        \
    " last_used_addr TEXT);\n"                                                                     \
    "CREATE INDEX api_keys_pocket ON api_keys (pocket_id);\n"                                      \
    "CREATE INDEX api_keys_user ON api_keys (user_id);\n"                                          \
                                                                                                   \
    "CREATE TABLE objects ("                                                                       \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " key TEXT NOT NULL,"                                                                          \
    " size BIGINT NOT NULL CHECK (size >= 0),"                                                     \
    " etag TEXT,"                                                                                  \
    " sequencer TEXT,"                                                                             \
    " deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),"                               \
    " updated_at BIGINT NOT NULL,"                                                                 \
    " PRIMARY KEY (pocket_id, key));\n"                                                            \
                                                                                                   \
    "CREATE TABLE reservations ("                                                                  \
    " id TEXT PRIMARY KEY,"                                                                        \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " key TEXT NOT NULL,"                                                                          \
    " bytes BIGINT NOT NULL CHECK (bytes >= 0),"                                                   \
    " objects INTEGER NOT NULL CHECK (objects IN (0, 1)),"                                         \
    " size BIGINT NOT NULL CHECK (size >= 0),"                                                     \
    " created_at BIGINT NOT NULL,"                                                                 \
    " expires_at BIGINT NOT NULL);\n"                                                              \
    "CREATE INDEX reservations_expires ON reservations (expires_at);\n"                            \
    "CREATE INDEX reservations_pocket ON reservations (pocket_id);\n"

/* audit_log differs only in how its id counts up. */
#define MIG1_AUDIT(id_column)                                                                      \
    "CREATE TABLE audit_log ("                                                                     \
    " id " id_column ","                                                                           \
    " at BIGINT NOT NULL,"                                                                         \
    " actor_type TEXT NOT NULL,"                                                                   \
    " actor_id TEXT,"                                                                              \
    " action TEXT NOT NULL,"                                                                       \
    " target_type TEXT NOT NULL,"                                                                  \
    " target_id TEXT,"                                                                             \
    " detail TEXT NOT NULL DEFAULT '{}',"                                                          \
    " client_addr TEXT);\n"                                                                        \
    "CREATE INDEX audit_log_at ON audit_log (at);\n"                                               \
    "CREATE INDEX audit_log_target ON audit_log (target_type, target_id);\n"

/* The default tier: 1 GiB, 10000 objects, free, granted without approval. */
#define MIG1_SEED(now)                                                                             \
    "INSERT INTO tiers (id, name, max_bytes, max_objects, price_minor, currency,"                  \
    " needs_approval, active, created_at)"                                                         \
    " VALUES ('free', 'Free', 1073741824, 10000, 0, 'USD', 0, 1, " now ");\n"

/* Migration 2: a hold on a pocket makes it read-only (its sessions may read
 * and delete, its reservations are refused) without changing its status; the
 * value says why ("past_due"). */
#define MIG2 "ALTER TABLE pockets ADD COLUMN hold TEXT;\n"

static const struct migration migrations[] = {
        {
                .version = 1,
                .name = "initial schema",
                .sql_sqlite = MIG1_COMMON MIG1_AUDIT("INTEGER PRIMARY KEY AUTOINCREMENT")
                        MIG1_SEED("CAST(strftime('%s', 'now') AS INTEGER)"),
                .sql_postgres = MIG1_COMMON MIG1_AUDIT("BIGSERIAL PRIMARY KEY")
                        MIG1_SEED("CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)"),
        },
        {.version = 2, .name = "pocket holds", .sql_sqlite = MIG2, .sql_postgres = MIG2},
        {.version = 3,
         .name = "billing",
         .sql_sqlite = MIG_BILLING_SQLITE,
         .sql_postgres = MIG_BILLING_POSTGRES},
        {.version = 4,
         .name = "payments",
         .sql_sqlite = MIG_PAYMENTS_SQLITE,
         .sql_postgres = MIG_PAYMENTS_POSTGRES},
        {.version = 5,
         .name = "mail",
         .sql_sqlite = MIG_MAIL_SQLITE,
         .sql_postgres = MIG_MAIL_POSTGRES},
        {.version = 6,
         .name = "events",
         .sql_sqlite = MIG_EVENTS_SQLITE,
         .sql_postgres = MIG_EVENTS_POSTGRES},
        {.version = 7,
         .name = "pocket roles",
         .sql_sqlite = MIG_ROLES_SQLITE,
         .sql_postgres = MIG_ROLES_POSTGRES},
        {.version = 8,
         .name = "quota functions",
         .sql_sqlite = MIG_QUOTA_SQLITE,
         .sql_postgres = MIG_QUOTA_POSTGRES},
        {.version = 9,
         .name = "allowances",
         .sql_sqlite = MIG_ALLOWANCES_SQLITE,
         .sql_postgres = MIG_ALLOWANCES_POSTGRES},
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

int migrations_latest(void)
{
    return migrations[N_MIGRATIONS - 1].version;
}

/* One check-and-apply step in its own transaction: *done is set when the schema is
 * already current. */
static int migrate_step(struct db *db, struct db_conn *c, bool *done, char *err, size_t errlen)
{
    *done = false;
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc) {
        snprintf(err, errlen, "cannot start a migration transaction: %s", db_conn_errmsg(c));
        return rc;
    }
    /* SQLite's BEGIN IMMEDIATE already holds the one write lock; PostgreSQL needs a
     * lock of its own, released by the commit, since no row exists to lock yet. */
    if (db_dialect(db) == DB_POSTGRES)
        rc = db_exec(c, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", NULL, 0, NULL);
    if (rc == DB_OK)
        rc = db_exec(c,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version BIGINT PRIMARY KEY,"
                     " name TEXT NOT NULL,"
                     " applied_at BIGINT NOT NULL)",
                     NULL, 0, NULL);
    int64_t current = 0;
    if (rc == DB_OK)
        rc = db_query_int(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, 0,
                          &current);
    if (rc) {
        snprintf(err, errlen, "cannot read the schema version: %s", db_conn_errmsg(c));
        goto fail;
    }
    if (current > migrations_latest()) {
        snprintf(err, errlen,
                 "database schema version %" PRId64 " is newer than this program knows (%d): "
                 "upgrade pockityd",
                 current, migrations_latest());
        rc = DB_ERR_SCHEMA;
        goto fail;
    }

    const struct migration *m = NULL;
    for (size_t i = 0; i < N_MIGRATIONS && !m; i++)
        if (migrations[i].version > current)
            m = &migrations[i];
    if (!m) {
        *done = true;
        rc = db_commit(c);
        if (rc)
            snprintf(err, errlen, "cannot commit: %s", db_conn_errmsg(c));
        return rc;
    }

    rc = db_exec_script(c, db_dialect(db) == DB_SQLITE ? m->sql_sqlite : m->sql_postgres);
    if (rc == DB_OK)
        rc = db_exec(c,
                     "INSERT INTO schema_migrations (version, name, applied_at)"
                     " VALUES ($1, $2, $3)",
                     DB_ARGS(DB_INT(m->version), DB_TEXT(m->name), DB_INT(time(NULL))), NULL);
    if (rc) {
        snprintf(err, errlen, "migration %d '%s' failed: %s", m->version, m->name,
                 db_conn_errmsg(c));
        goto fail;
    }
    rc = db_commit(c);
    if (rc)
        snprintf(err, errlen, "cannot commit migration %d '%s': %s", m->version, m->name,
                 db_conn_errmsg(c));
    return rc;

fail:
    db_rollback(c);
    return rc;
}

int migrations_apply(struct db *db, struct db_conn *c, char *err, size_t errlen)
{
    bool done = false;
    while (!done) {
        int rc = migrate_step(db, c, &done, err, errlen);
        if (rc)
            return rc;
    }
    return DB_OK;
}
