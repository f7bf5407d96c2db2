/* billing: subscriptions of pockets on paid tiers, invoices with Stripe's state
 * machine, the per-user credit ledger, and the renewal / past-due job. */
#ifndef POCKITYD_BILLING_H
#define POCKITYD_BILLING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "http.h"

/*
 * The model (see docs/api/billing.md for the user's view).
 *
 * Money is integer minor units with an ISO 4217 currency code, never a float.
 * One invoice, line or credit grant holds at most BILLING_AMOUNT_MAX; a user's
 * balance in one currency at most BILLING_BALANCE_MAX, so no sum can overflow.
 *
 * Periods: one calendar month in UTC from the subscription's anchor (the
 * moment it started), keeping the anchor's day of month and time of day, with
 * the day clamped to the month's length (anchor Jan 31 → Feb 28/29 → Mar 31).
 *
 * Tier changes of a pocket with a live subscription, by the tiers' prices:
 *  - to a dearer or equally priced paid tier: at once; a `proration` invoice
 *    (opened at once) charges (new price − old price) × remaining seconds of
 *    the current period / the period's seconds, rounded down (128-bit
 *    arithmetic); nothing when that is 0;
 *  - to a cheaper tier: at the period's end (pending_tier_id), refused while
 *    the pocket's usage plus reservations exceeds the smaller tier; to a free
 *    tier the subscription is canceled at the period's end;
 *  - a renewal invoice R already opened for the next period at the old price
 *    is voided and replaced when unpaid; when already paid, what is settled
 *    for that period (R + its paid proration invoices − the grants refunded
 *    against R; its unpaid proration invoices are voided) is netted against
 *    the new price: a shortfall is charged (one proration invoice), an excess
 *    credited (a grant tied to R). Changing down and back up thus nets to 0.
 * A pocket without a live subscription moving to a paid tier (including a
 * pending pocket approved for one) gets a new subscription starting now and
 * an open invoice for its first period; it can use the tier at once.
 *
 * Invoices: draft → open → paid | void | uncollectible; uncollectible → paid |
 * void. Every transition is one conditional UPDATE (so concurrent callers
 * apply it once), stamps its time and writes the audit log.
 *
 * Past due: an open or uncollectible invoice of a subscription, opened since
 * it (re)started (created_at >= anchor_at), whose due_at + billing.grace has
 * passed makes the subscription past_due and sets the
 * pocket's hold to 'past_due' (read + delete only, no reservations). Paying
 * (or voiding) the last such invoice restores it: status active, hold cleared.
 *
 * Calling convention: functions taking req (may be NULL for jobs) and a
 * struct db_conn run INSIDE the caller's write transaction and write the audit
 * log there. They return DB_OK, a db status, or a BILLING_ outcome below.
 */

#define BILLING_AMOUNT_MAX   ((int64_t)1000000000000)             /* 10^12 minor units */
#define BILLING_BALANCE_MAX  ((int64_t)1000 * BILLING_AMOUNT_MAX) /* 10^15 */
#define BILLING_LINES_MAX    100
#define BILLING_DESC_MAX     200 /* bytes of a line's description */
#define BILLING_DUE_DAYS_MAX 365

/* Outcomes beyond the db statuses. */
enum {
    BILLING_INVALID_STATE = 200, /* the invoice's (or subscription's) status forbids it */
    BILLING_AMOUNT_MISMATCH,     /* amount or currency differ from the invoice's */
    BILLING_REFUSED,             /* a tier change or grant refused; see the message */
    BILLING_NO_CREDIT,           /* the credit balance does not cover the invoice */
};

struct billing_invoice {
    char id[64], user_id[64], status[16], currency[4], kind[16];
    int64_t total_minor;
};

/* Read an invoice (no transaction needed). DB_ERR_NOT_FOUND when unknown. */
int billing_invoice_read(struct db_conn *c, const char *invoice_id, struct billing_invoice *out);

/* Mark an open or uncollectible invoice paid, INSIDE the caller's write
 * transaction on c: checks status (else BILLING_INVALID_STATE) and that
 * amount_minor/currency equal the invoice's (else BILLING_AMOUNT_MISMATCH),
 * sets paid_at/provider/provider_ref, applies its effects and writes the audit
 * log (action "invoice.paid"). provider is one of credit, stripe, razorpay,
 * btcpay, crypto, manual; provider_ref may be NULL. Effects: a `credit`
 * invoice adds a `topup` entry to the ledger; provider "credit" takes a
 * `debit` entry (BILLING_NO_CREDIT when the balance does not cover it; a
 * credit invoice cannot be paid from credit: BILLING_INVALID_STATE); a
 * past_due subscription whose last overdue invoice this was becomes active
 * and its pocket's 'past_due' hold is cleared (grace read from req's config;
 * with req NULL any unpaid invoice past its due date keeps it past due).
 * No tier change ever waits for a payment, so none is applied here. req may
 * be NULL (jobs). */
int billing_invoice_mark_paid(struct http_request *req, struct db_conn *c, const char *invoice_id,
                              const char *provider, const char *provider_ref, int64_t amount_minor,
                              const char *currency, int64_t now, const char *actor_type,
                              const char *actor_id);

/* As billing_invoice_mark_paid, with extra members merged into the audit
 * detail (stolen; may be NULL), e.g. an admin's network and note. */
int billing_invoice_mark_paid_ex(struct http_request *req, struct db_conn *c,
                                 const char *invoice_id, const char *provider,
                                 const char *provider_ref, int64_t amount_minor,
                                 const char *currency, int64_t now, const char *actor_type,
                                 const char *actor_id, json_t *extra);

/* Move an invoice to "open" (finalize: from draft; due_at = now + its due
 * days), "void" (from open or uncollectible) or "uncollectible" (from open),
 * stamping the transition's time and writing the audit log ("invoice.open",
 * "invoice.void", "invoice.uncollectible"). BILLING_INVALID_STATE when its
 * status forbids it, with that status in from (16 bytes, may be NULL);
 * DB_ERR_NOT_FOUND when unknown. Voiding an overdue invoice may restore its
 * subscription as paying does. detail is merged into the audit detail
 * (stolen; may be NULL). */
int billing_invoice_transition(struct http_request *req, struct db_conn *c, const char *invoice_id,
                               const char *to, int64_t now, const char *actor_type,
                               const char *actor_id, json_t *detail, char *from);

/* A line of a new invoice. */
struct billing_line {
    const char *description; /* 1..BILLING_DESC_MAX bytes */
    int64_t amount_minor;    /* 0..BILLING_AMOUNT_MAX */
};

/* A new invoice. pocket_id and subscription_id may be NULL. */
struct billing_new_invoice {
    const char *user_id, *pocket_id, *subscription_id;
    const char *kind; /* subscription, proration, credit, manual */
    const char *currency;
    const struct billing_line *lines;
    size_t n_lines;                   /* 1..BILLING_LINES_MAX */
    bool has_period;                  /* period_start/end are set */
    int64_t period_start, period_end; /* with has_period */
    int64_t due_days;                 /* 0..BILLING_DUE_DAYS_MAX */
    bool open;                        /* open at once (else a draft) */
};

/* Create an invoice (and its lines) into id (64 bytes), writing
 * "invoice.create" and, when opened, "invoice.open". DB_ERR_INVALID when the
 * total exceeds BILLING_AMOUNT_MAX or is below 1, or a field is out of range. */
int billing_invoice_create(struct http_request *req, struct db_conn *c,
                           const struct billing_new_invoice *inv, int64_t now,
                           const char *actor_type, const char *actor_id, char *id);

/* What billing_tier_change() did. */
struct billing_change {
    bool deferred;            /* waits for the period's end: do not move the pocket now */
    int64_t effective_at;     /* when the change applies (now unless deferred) */
    char subscription_id[64]; /* the pocket's subscription, "" when none */
    char invoice_id[64];      /* the invoice the change opened, "" when none */
    char message[256];        /* with BILLING_REFUSED: why, for a 409 */
};

/* Decide the billing side of moving pocket_id to to_tier (an existing tier),
 * BEFORE the caller moves the pocket: creates, changes or schedules the
 * subscription as described above and opens the invoices it implies. When
 * out->deferred is false the caller must then move the pocket to to_tier in
 * the same transaction (its conditional update refuses when usage does not
 * fit, rolling this back too); when true the pocket keeps its tier until the
 * period's end. BILLING_REFUSED (with out->message) when a downgrade does not
 * fit the smaller tier or the tiers' currencies differ. */
int billing_tier_change(struct http_request *req, struct db_conn *c, const char *pocket_id,
                        const char *to_tier, int64_t now, const char *actor_type,
                        const char *actor_id, struct billing_change *out);

/* Cancel a subscription at once (admin): status canceled, its pocket moved to the free tier "free"
 * (read + delete only if it holds more than that allows) and any 'past_due' hold cleared. Its
 * unpaid invoices stay as they are (void them to forgive them). BILLING_INVALID_STATE when already
 * canceled; DB_ERR_NOT_FOUND. */
int billing_subscription_cancel(struct http_request *req, struct db_conn *c, const char *sub_id,
                                const char *reason, int64_t now, const char *actor_type,
                                const char *actor_id);

/* Set a subscription's renewal mode ("manual" or "credit").
 * BILLING_INVALID_STATE when canceled; DB_ERR_NOT_FOUND. */
int billing_subscription_renewal(struct http_request *req, struct db_conn *c, const char *sub_id,
                                 const char *renewal, int64_t now, const char *actor_type,
                                 const char *actor_id);

/* A user's balance in currency: the sum of the ledger (no transaction needed). */
int billing_credit_balance(struct db_conn *c, const char *user_id, const char *currency,
                           int64_t *out);

/* Add a `grant` entry (amount 1..BILLING_AMOUNT_MAX) with a reason, writing
 * "credit.grant". BILLING_REFUSED when the balance would pass
 * BILLING_BALANCE_MAX (every credit to the ledger is so capped, also a paid
 * top-up invoice and a tier change's refund). id receives the entry's id (64 bytes). */
int billing_credit_grant(struct http_request *req, struct db_conn *c, const char *user_id,
                         int64_t amount_minor, const char *currency, const char *reason,
                         int64_t now, const char *actor_id, char *id);

/* Add a `topup` entry tied to no invoice (amount 1..BILLING_AMOUNT_MAX):
 * money that arrived for an invoice that could no longer take it (a provider's
 * payment of an invoice already paid or voided), reason naming it. Writes
 * "credit.topup" as actor_type/actor_id. BILLING_REFUSED when the balance
 * would pass BILLING_BALANCE_MAX; DB_ERR_NOT_FOUND for an unknown user. id
 * receives the entry's id (64 bytes; may be NULL). */
int billing_credit_topup(struct http_request *req, struct db_conn *c, const char *user_id,
                         int64_t amount_minor, const char *currency, const char *reason,
                         int64_t now, const char *actor_type, const char *actor_id, char *id);

/* ---- Calendar arithmetic (pure; exported for tests) */

/* t moved by months calendar months in UTC, keeping the time of day and the
 * day of month clamped to the target month's length. */
int64_t billing_add_months(int64_t t, int months);

/* The end of the period that starts at start for a subscription anchored at
 * anchor (start >= anchor): the first anchor + k months that is after start. */
int64_t billing_period_end(int64_t anchor, int64_t start);

/* diff × remaining / period rounded down, computed in 128 bits. Returns 0,
 * or -1 when period <= 0, remaining is outside 0..period or diff < 0. */
int billing_prorate(int64_t diff, int64_t remaining, int64_t period, int64_t *out);

#endif
