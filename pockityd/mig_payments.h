/* mig_payments: migration 4 — payment attempts (what each provider was asked
 * to collect) and the webhook events already applied (deduplication). */
#ifndef POCKITYD_MIG_PAYMENTS_H
#define POCKITYD_MIG_PAYMENTS_H

/*
 * payment_attempts: one row per POST /v1/invoices/{id}/pay. provider_ref is the
 * provider's handle on the attempt (Stripe checkout session, Razorpay order,
 * BTCPay invoice; NULL for eth/usdc, which an admin confirms), unique per
 * provider so a webhook finds its attempt. paid_ref is the provider's payment
 * id once a webhook applied it.
 *
 * webhook_events: every verified event applied or ignored, keyed by the
 * provider's event id (for Razorpay one derived from the signed body). Its
 * insert shares the transaction that marks the invoice paid, so a replay or
 * concurrent deliveries apply once. outcome: 'paid' (the event paid its
 * invoice), 'unapplied' (money arrived for an invoice that could no longer
 * take it — voided, or paid otherwise meanwhile — and went to the user's
 * credit instead), 'ignored' (nothing to do, or a payment already recorded).
 * payment_ref is the provider's payment id of a paid or unapplied event: one
 * payment is recorded once, whichever events tell it.
 */
#define MIG_PAYMENTS_SQL                                                                           \
    "CREATE TABLE payment_attempts ("                                                              \
    " id TEXT PRIMARY KEY,"                                                                        \
    " invoice_id TEXT NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,"                        \
    " user_id TEXT NOT NULL,"                                                                      \
    " provider TEXT NOT NULL"                                                                      \
    "  CHECK (provider IN ('stripe', 'razorpay', 'btcpay', 'eth', 'usdc')),"                       \
    " provider_ref TEXT,"                                                                          \
    " amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),"                                      \
    " currency TEXT NOT NULL CHECK (length(currency) = 3),"                                        \
    " status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid')),"               \
    " paid_ref TEXT,"                                                                              \
    " created_at BIGINT NOT NULL,"                                                                 \
    " paid_at BIGINT,"                                                                             \
    " UNIQUE (provider, provider_ref));\n"                                                         \
    "CREATE INDEX payment_attempts_invoice ON payment_attempts (invoice_id);\n"                    \
                                                                                                   \
    "CREATE TABLE webhook_events ("                                                                \
    " provider TEXT NOT NULL CHECK (provider IN ('stripe', 'razorpay', 'btcpay')),"                \
    " event_id TEXT NOT NULL CHECK (length(event_id) > 0),"                                        \
    " type TEXT NOT NULL,"                                                                         \
    " outcome TEXT NOT NULL CHECK (outcome IN ('paid', 'unapplied', 'ignored')),"                  \
    " invoice_id TEXT,"                                                                            \
    " payment_ref TEXT,"                                                                           \
    " received_at BIGINT NOT NULL,"                                                                \
    " PRIMARY KEY (provider, event_id));\n"                                                        \
    "CREATE INDEX webhook_events_received ON webhook_events (received_at);\n"                      \
    "CREATE UNIQUE INDEX webhook_events_payment ON webhook_events (provider, payment_ref)"         \
    " WHERE payment_ref IS NOT NULL;\n"

#define MIG_PAYMENTS_SQLITE   MIG_PAYMENTS_SQL
#define MIG_PAYMENTS_POSTGRES MIG_PAYMENTS_SQL

#endif
