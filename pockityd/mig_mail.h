/* mig_mail: migration 5 — email verification codes, and the mail outbox fed
 * from the audit log (its read position, and the messages waiting to go). */
#ifndef POCKITYD_MIG_MAIL_H
#define POCKITYD_MIG_MAIL_H

/*
 * email_verifications: the one pending code of a user, stored as a keyed hash,
 * with its expiry and the wrong guesses counted against it.
 *
 * mail_cursor: one row, the id of the last audit_log row the notifier has
 * turned into outbox rows. It starts at the audit log's end, so history is
 * never mailed. Replicas advance it with a compare-and-set UPDATE.
 *
 * mail_outbox: one row per message to one user: what happened (copied from the
 * audit row), delivery state, attempts, when to try next, and a short lease
 * (claimed_until) held by the replica sending it. (audit_id, user_id) is
 * unique, so a row of the audit log mails a user at most once.
 */
#define MIG_MAIL_COMMON(now)                                                                       \
    "CREATE TABLE email_verifications ("                                                           \
    " user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,"                           \
    " code_hash TEXT NOT NULL,"                                                                    \
    " expires_at BIGINT NOT NULL,"                                                                 \
    " attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"                                  \
    " sent_at BIGINT NOT NULL);\n"                                                                 \
                                                                                                   \
    "CREATE TABLE mail_cursor ("                                                                   \
    " id INTEGER PRIMARY KEY CHECK (id = 1),"                                                      \
    " last_audit_id BIGINT NOT NULL,"                                                              \
    " updated_at BIGINT NOT NULL);\n"                                                              \
    "INSERT INTO mail_cursor (id, last_audit_id, updated_at)"                                      \
    " SELECT 1, COALESCE(MAX(id), 0), " now " FROM audit_log;\n"                                   \
                                                                                                   \
    "CREATE TABLE mail_outbox ("                                                                   \
    " id TEXT PRIMARY KEY,"                                                                        \
    " audit_id BIGINT NOT NULL,"                                                                   \
    " user_id TEXT NOT NULL,"                                                                      \
    " action TEXT NOT NULL,"                                                                       \
    " actor_type TEXT NOT NULL,"                                                                   \
    " target_id TEXT,"                                                                             \
    " detail TEXT NOT NULL DEFAULT '{}',"                                                          \
    " status TEXT NOT NULL DEFAULT 'pending'"                                                      \
    "  CHECK (status IN ('pending', 'sent', 'failed', 'dropped')),"                                \
    " attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"                                  \
    " next_attempt_at BIGINT NOT NULL,"                                                            \
    " claimed_until BIGINT NOT NULL DEFAULT 0,"                                                    \
    " last_error TEXT,"                                                                            \
    " created_at BIGINT NOT NULL,"                                                                 \
    " sent_at BIGINT,"                                                                             \
    " UNIQUE (audit_id, user_id));\n"                                                              \
    "CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);\n"

#define MIG_MAIL_SQLITE   MIG_MAIL_COMMON("CAST(strftime('%s', 'now') AS INTEGER)")
#define MIG_MAIL_POSTGRES MIG_MAIL_COMMON("CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)")

#endif
