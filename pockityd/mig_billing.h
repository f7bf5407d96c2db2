/* mig_billing: migration 3, the billing tables: subscriptions, invoices with
 * their lines, and the credit ledger (the same SQL on both engines). */
#ifndef POCKITYD_MIG_BILLING_H
#define POCKITYD_MIG_BILLING_H

/* One subscription per pocket (a canceled one is started afresh in place).
 * anchor_at is when it (re)started: periods are calendar months from it. */
#define MIG_BILLING_COMMON                                                                             \
    "CREATE TABLE subscriptions ("                                                                     \
    " id TEXT PRIMARY KEY,"                                                                            \
    " pocket_id TEXT NOT NULL UNIQUE REFERENCES pockets (id) ON DELETE CASCADE,"                       \
    " user_id TEXT NOT NULL REFERENCES users (id),"                                                    \
    " tier_id TEXT NOT NULL REFERENCES tiers (id),"                                                    \
    " status TEXT NOT NULL DEFAULT 'active'"                                                           \
    "  CHECK (status IN ('active', 'past_due', 'canceled')),"                                          \
    " renewal TEXT NOT NULL DEFAULT 'manual' CHECK (renewal IN ('manual', 'credit')),"                 \
    " anchor_at BIGINT NOT NULL,"                                                                      \
    " current_period_start BIGINT NOT NULL,"                                                           \
    " current_period_end BIGINT NOT NULL,"                                                             \
    " pending_tier_id TEXT REFERENCES tiers (id),"                                                     \
    " created_at BIGINT NOT NULL,"                                                                     \
    " updated_at BIGINT NOT NULL,"                                                                     \
    " canceled_at BIGINT,"                                                                             \
    " CHECK (current_period_end > current_period_start));\n"                                           \
    "CREATE INDEX subscriptions_user ON subscriptions (user_id);\n"                                    \
    "CREATE INDEX subscriptions_status ON subscriptions (status, current_period_end);\n"               \
                                                                                                       \
    "CREATE TABLE invoices ("                                                                          \
    " id TEXT PRIMARY KEY,"                                                                            \
    " user_id TEXT NOT NULL REFERENCES users (id),"                                                    \
    " pocket_id TEXT REFERENCES pockets (id) ON DELETE SET NULL,"                                      \
    " subscription_id TEXT REFERENCES subscriptions (id) ON DELETE SET NULL,"                          \
    " kind TEXT NOT NULL CHECK (kind IN ('subscription', 'proration', 'credit', 'manual')),"           \
    " status TEXT NOT NULL"                                                                            \
    "  CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),"                          \
    " currency TEXT NOT NULL CHECK (length(currency) = 3),"                                            \
    " total_minor BIGINT NOT NULL CHECK (total_minor > 0),"                                            \
    " period_start BIGINT,"                                                                            \
    " period_end BIGINT,"                                                                              \
    " due_days INTEGER NOT NULL DEFAULT 0 CHECK (due_days >= 0),"                                      \
    " due_at BIGINT,"                                                                                  \
    " created_at BIGINT NOT NULL,"                                                                     \
    " finalized_at BIGINT,"                                                                            \
    " paid_at BIGINT,"                                                                                 \
    " voided_at BIGINT,"                                                                               \
    " uncollectible_at BIGINT,"                                                                        \
    " provider TEXT CHECK (provider IS NULL OR provider IN"                                            \
    "  ('credit', 'stripe', 'razorpay', 'btcpay', 'crypto', 'manual')),"                               \
    " provider_ref TEXT,"                                                                              \
    " CHECK ((status = 'paid') = (paid_at IS NOT NULL AND provider IS NOT NULL)),"                     \
    " CHECK (status = 'draft' OR due_at IS NOT NULL));\n"                                              \
    "CREATE INDEX invoices_user ON invoices (user_id, created_at);\n"                                  \
    "CREATE INDEX invoices_created ON invoices (created_at);\n"                                        \
    "CREATE INDEX invoices_subscription ON invoices (subscription_id, status);\n" /* One live          \
                                                                                     invoice per       \
                                                                                     subscription      \
                                                                                     period: the       \
                                                                                     renewal job's     \
                                                                                     guard. */         \
    "CREATE UNIQUE INDEX invoices_one_per_period ON invoices (subscription_id, period_start)"          \
    " WHERE kind = 'subscription' AND status <> 'void';\n"                                             \
                                                                                                       \
    "CREATE TABLE invoice_lines ("                                                                     \
    " invoice_id TEXT NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,"                            \
    " position INTEGER NOT NULL CHECK (position >= 0),"                                                \
    " description TEXT NOT NULL CHECK (length(description) > 0),"                                      \
    " amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),"                                         \
    " PRIMARY KEY (invoice_id, position));\n"                                                          \
                                                                                                       \
    /* The ledger: the balance is the sum of a user's entries in a currency. */                        \
    "CREATE TABLE credit_entries ("                                                                    \
    " id TEXT PRIMARY KEY,"                                                                            \
    " user_id TEXT NOT NULL REFERENCES users (id),"                                                    \
    " amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),"                                         \
    " currency TEXT NOT NULL CHECK (length(currency) = 3),"                                            \
    " kind TEXT NOT NULL CHECK (kind IN ('topup', 'grant', 'debit')),"                                 \
    " reason TEXT NOT NULL DEFAULT '',"                                                                \
    " invoice_id TEXT REFERENCES invoices (id),"                                                       \
    " actor_id TEXT,"                                                                                  \
    " created_at BIGINT NOT NULL,"                                                                     \
    " CHECK ((kind = 'debit') = (amount_minor < 0)));\n"                                               \
    "CREATE INDEX credit_entries_user ON credit_entries (user_id, currency, created_at);\n" /* An      \
                                                                                               invoice \
                                                                                               pays    \
                                                                                               into    \
                                                                                               (topup) \
                                                                                               or      \
                                                                                               out     \
                                                                                               of      \
                                                                                               (debit) \
                                                                                               the     \
                                                                                               ledger  \
                                                                                               at      \
                                                                                               most    \
                                                                                               once.   \
                                                                                             */        \
    "CREATE UNIQUE INDEX credit_entries_invoice ON credit_entries (invoice_id, kind)"                  \
    " WHERE invoice_id IS NOT NULL AND kind <> 'grant';\n"

#define MIG_BILLING_SQLITE   MIG_BILLING_COMMON
#define MIG_BILLING_POSTGRES MIG_BILLING_COMMON

#endif
