/* api_payments: paying an invoice through a provider (POST /v1/invoices/{id}/pay)
 * and the providers' signed webhooks that mark invoices paid, each event once. */
#include "api.h"
#include "routes.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "log.h"
#include "metrics.h"
#include "payments.h"
#include "webhooks.h"

#define PROVIDER_MAX 16

/* An id as api_new_id() makes them: 1..64 bytes of [a-z0-9_]. */
static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 63)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static bool payable(const char *status)
{
    return strcmp(status, "open") == 0 || strcmp(status, "uncollectible") == 0;
}

/* ---- POST /v1/invoices/{id}/pay */

/* Record an attempt and its audit row in one transaction. */
static int attempt_record(struct http_request *req, struct db_conn *c, const char *attempt_id,
                          const struct billing_invoice *inv, const char *provider,
                          const char *provider_ref, int64_t now)
{
    int rc = db_begin(c, DB_TX_WRITE);
    if (rc)
        return rc;
    rc = db_exec(c,
                 "INSERT INTO payment_attempts (id, invoice_id, user_id, provider, provider_ref,"
                 " amount_minor, currency, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                 DB_ARGS(DB_TEXT(attempt_id), DB_TEXT(inv->id), DB_TEXT(inv->user_id),
                         DB_TEXT(provider), DB_TEXT(provider_ref), DB_INT(inv->total_minor),
                         DB_TEXT(inv->currency), DB_INT(now)),
                 NULL);
    if (rc == DB_OK) {
        json_t *detail =
                json_pack("{s:s, s:s, s:s, s:o, s:I, s:s}", "user_id", inv->user_id, "attempt_id",
                          attempt_id, "provider", provider, "provider_ref",
                          provider_ref ? json_string(provider_ref) : json_null(), "total_minor",
                          (json_int_t)inv->total_minor, "currency", inv->currency);
        rc = api_audit(req, c, "user", inv->user_id, "payment.start", "invoice", inv->id, detail);
    }
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    return rc;
}

/* The provider-specific part of the answer to a started payment. */
static int pay_provider(struct http_request *req, const struct config *cfg,
                        const struct billing_invoice *inv, const char *provider,
                        const char *attempt_id, struct payments_checkout *co, json_t *answer)
{
    char err[512] = "";
    int rc;
    if (strcmp(provider, "stripe") == 0)
        rc = payments_stripe_checkout(cfg, inv->id, inv->total_minor, inv->currency, attempt_id, co,
                                      err, sizeof(err));
    else if (strcmp(provider, "razorpay") == 0)
        rc = payments_razorpay_order(cfg, inv->id, inv->total_minor, inv->currency, co, err,
                                     sizeof(err));
    else
        rc = payments_btcpay_invoice(cfg, inv->id, inv->total_minor, inv->currency, co, err,
                                     sizeof(err));
    if (rc) {
        log_warn("request %s: invoice '%s': %s: %s", http_request_id(req), inv->id,
                 payments_strerror(rc), err);
        metrics_counter_add("pockityd_payment_provider_errors_total", "provider", provider, 1);
        return rc;
    }
    if (strcmp(provider, "stripe") == 0)
        json_object_set_new(answer, "checkout_url", json_string(co->url));
    else if (strcmp(provider, "razorpay") == 0)
        json_object_set_new(answer, "order",
                            json_pack("{s:s, s:I, s:s, s:s}", "id", co->ref, "amount",
                                      (json_int_t)inv->total_minor, "currency", inv->currency,
                                      "key_id", cfg->razorpay_key_id));
    else {
        json_object_set_new(answer, "checkout_link", json_string(co->url));
        json_object_set_new(answer, "btcpay_invoice_id", json_string(co->ref));
    }
    return PAYMENTS_OK;
}

static void h_pay(struct http_request *req)
{
    static const char *const allowed[] = {"provider", NULL};
    const struct config *cfg = &api_app(req)->cfg;
    const char *invoice_id = http_param(req, "id");
    const char *provider = NULL;
    int64_t now = api_now();
    json_t *answer = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    struct principal who;
    if (!api_user(req, c, &who))
        goto out;
    if (!http_json_only_keys(req, allowed) ||
        !http_json_get_string(req, "provider", 1, PROVIDER_MAX, &provider))
        goto out;
    bool crypto = strcmp(provider, "eth") == 0 || strcmp(provider, "usdc") == 0;
    if (!crypto && strcmp(provider, "stripe") != 0 && strcmp(provider, "razorpay") != 0 &&
        strcmp(provider, "btcpay") != 0) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'provider' must be 'stripe', 'razorpay', 'btcpay', 'eth' or "
                         "'usdc'");
        goto out;
    }
    struct billing_invoice inv;
    int rc = id_ok(invoice_id) ? billing_invoice_read(c, invoice_id, &inv) : DB_ERR_NOT_FOUND;
    if (rc == DB_OK && strcmp(inv.user_id, who.user_id) != 0)
        rc = DB_ERR_NOT_FOUND;
    if (rc == DB_ERR_NOT_FOUND) {
        http_reply_error(req, 404, "not_found", "invoice '%.64s' not found", invoice_id);
        goto out;
    }
    if (rc) {
        api_db_fail(req, c, rc, "read invoice");
        goto out;
    }
    if (!payable(inv.status)) {
        http_reply_error(req, 409, "invalid_state", "invoice '%s' is '%s', not open", inv.id,
                         inv.status);
        goto out;
    }
    if (inv.total_minor <= 0 || !payments_currency_ok(inv.currency)) {
        http_reply_error(req, 409, "invalid_state", "invoice '%s' has nothing to pay", inv.id);
        goto out;
    }
    const char *address = strcmp(provider, "eth") == 0    ? cfg->crypto_eth_address
                          : strcmp(provider, "usdc") == 0 ? cfg->crypto_usdc_address
                                                          : NULL;
    bool ready = crypto                              ? address && *address
                 : strcmp(provider, "stripe") == 0   ? payments_stripe_ready(cfg)
                 : strcmp(provider, "razorpay") == 0 ? payments_razorpay_ready(cfg)
                                                     : payments_btcpay_ready(cfg);
    if (!ready) {
        http_reply_error(req, 409, "provider_unavailable",
                         "payment provider '%s' is not configured", provider);
        goto out;
    }

    char attempt_id[64];
    api_new_id("pay", attempt_id, sizeof(attempt_id));
    answer = json_pack("{s:s, s:s, s:I, s:s}", "invoice_id", inv.id, "provider", provider,
                       "amount_minor", (json_int_t)inv.total_minor, "currency", inv.currency);
    if (!answer || !*attempt_id) {
        http_reply_error(req, 500, "internal_error", "cannot start the payment");
        goto out;
    }
    struct payments_checkout co;
    memset(&co, 0, sizeof(co));
    if (crypto) {
        char amount[32];
        if (payments_amount_format(inv.total_minor, inv.currency, amount, sizeof(amount)) != 0) {
            http_reply_error(req, 500, "internal_error", "cannot format the amount");
            goto out;
        }
        json_object_set_new(answer, "crypto",
                            json_pack("{s:s, s:s, s:s, s:s}", "network", provider, "address",
                                      address, "amount", amount, "reference", inv.id));
    } else {
        /* No database connection is held while the provider is called. */
        db_release(c);
        c = NULL;
        rc = pay_provider(req, cfg, &inv, provider, attempt_id, &co, answer);
        if (rc) {
            http_set_header(req, "Retry-After", "30");
            http_reply_error(req, 503, "provider_error",
                             "payment provider '%s' failed, try again later", provider);
            goto out;
        }
        c = api_conn(req);
        if (!c)
            goto out;
    }
    rc = attempt_record(req, c, attempt_id, &inv, provider, crypto ? NULL : co.ref, now);
    if (rc) {
        api_db_fail(req, c, rc, "record payment attempt");
        goto out;
    }
    metrics_counter_add("pockityd_payments_started_total", "provider", provider, 1);
    log_info("request %s: payment '%s' of invoice '%s' started with %s", http_request_id(req),
             attempt_id, inv.id, provider);
    http_reply_json(req, 200, answer);
    answer = NULL;
out:
    json_decref(answer);
    db_release(c);
}

/* ---- webhooks */

/* How a verified event ended. */
struct hook {
    struct http_request *req;
    const char *provider;
    struct webhook_event ev;
    int64_t now;
    /* the refusal, when status is set */
    int status;
    const char *code;
    char message[256];
    bool duplicate;
    bool unapplied; /* paid for an invoice that could not take it: credited */
    char invoice_id[64];
};

static int refuse(struct hook *h, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int refuse(struct hook *h, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->message, sizeof(h->message), fmt, ap);
    va_end(ap);
    h->status = status;
    h->code = code;
    return DB_OK;
}

/* The payment attempt an event refers to: its invoice, amount, currency, and
 * whether (and with which payment) it was already paid. */
struct attempt {
    char id[64], invoice_id[64], currency[4], status[16], paid_ref[128];
    int64_t amount_minor;
};

/* DB_OK, DB_ERR_NOT_FOUND or a db status. */
static int attempt_find(struct db_conn *c, const char *provider, const char *ref, struct attempt *a)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT id, invoice_id, amount_minor, currency, status, paid_ref"
                          " FROM payment_attempts WHERE provider = $1 AND provider_ref = $2",
                          DB_ARGS(DB_TEXT(provider), DB_TEXT(ref)), &res);
    if (rc)
        return rc;
    memset(a, 0, sizeof(*a));
    snprintf(a->id, sizeof(a->id), "%s", db_result_text(res, 0, 0));
    snprintf(a->invoice_id, sizeof(a->invoice_id), "%s", db_result_text(res, 0, 1));
    a->amount_minor = db_result_int(res, 0, 2);
    snprintf(a->currency, sizeof(a->currency), "%s", db_result_text(res, 0, 3));
    snprintf(a->status, sizeof(a->status), "%s", db_result_text(res, 0, 4));
    const char *paid_ref = db_result_text(res, 0, 5);
    snprintf(a->paid_ref, sizeof(a->paid_ref), "%s", paid_ref ? paid_ref : "");
    db_result_free(res);
    return DB_OK;
}

/* Set the event's final row: outcome, invoice and (for paid and unapplied)
 * the payment it recorded. */
static int event_finish(struct db_conn *c, const struct hook *h, const char *outcome,
                        const char *invoice_id, const char *payment_ref)
{
    return db_exec(c,
                   "UPDATE webhook_events SET outcome = $3, invoice_id = $4, payment_ref = $5"
                   " WHERE provider = $1 AND event_id = $2",
                   DB_ARGS(DB_TEXT(h->provider), DB_TEXT(h->ev.event_id), DB_TEXT(outcome),
                           DB_TEXT(invoice_id), DB_TEXT(payment_ref)),
                   NULL);
}

/* The money of a verified payment whose invoice can no longer take it (void,
 * or paid meanwhile by credit, an admin or another session): recorded as an
 * 'unapplied' event, the attempt marked paid, the amount added to the
 * owner's credit as a top-up tied to no invoice, audited. The invoice is left
 * as it is. */
static int hook_unapplied(struct db_conn *c, struct hook *h, const struct attempt *a,
                          const struct billing_invoice *inv)
{
    const struct webhook_event *ev = &h->ev;
    h->unapplied = true;
    int rc = event_finish(c, h, "unapplied", inv->id, ev->payment_ref);
    if (rc == DB_OK && strcmp(a->status, "paid") != 0)
        rc = db_exec(c,
                     "UPDATE payment_attempts SET status = 'paid', paid_ref = $2, paid_at = $3"
                     " WHERE id = $1 AND status = 'pending'",
                     DB_ARGS(DB_TEXT(a->id), DB_TEXT(ev->payment_ref), DB_INT(h->now)), NULL);
    if (rc)
        return rc;
    char reason[256], entry[64] = "";
    snprintf(reason, sizeof(reason), "%s payment %.64s of invoice %s, which was %s", h->provider,
             ev->payment_ref, inv->id, inv->status);
    rc = billing_credit_topup(h->req, c, inv->user_id, ev->amount_minor, ev->currency, reason,
                              h->now, "system", h->provider, entry);
    bool credited = rc == DB_OK;
    if (rc == BILLING_REFUSED) {
        /* Past the balance cap: the audit row below is the record an
         * operator refunds from. */
        log_error("request %s: %s payment '%s' of invoice '%s' could not be credited: the "
                  "balance cap is reached; refund it",
                  http_request_id(h->req), h->provider, ev->payment_ref, inv->id);
        rc = DB_OK;
    }
    if (rc)
        return rc;
    json_t *d = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "user_id", inv->user_id,
                          "total_minor", (json_int_t)ev->amount_minor, "currency", ev->currency,
                          "provider", h->provider, "payment_ref", ev->payment_ref, "event_id",
                          ev->event_id, "attempt_id", a->id, "invoice_status", inv->status,
                          "credited", credited);
    if (d && credited)
        json_object_set_new(d, "credit_entry_id", json_string(entry));
    return api_audit(h->req, c, "system", h->provider, "payment.unapplied", "invoice", inv->id, d);
}

/* Everything a paid event changes, in the caller's write transaction: the
 * event's row (the deduplication), the attempt and the invoice, or the
 * user's credit when the invoice cannot take the payment any more. Refusals
 * set h->status and leave the caller to roll back. */
static int hook_tx(struct db_conn *c, struct hook *h)
{
    const struct webhook_event *ev = &h->ev;
    int64_t changes = 0;
    int rc = db_exec(c,
                     "INSERT INTO webhook_events (provider, event_id, type, outcome, invoice_id,"
                     " received_at) VALUES ($1, $2, $3, $4, NULL, $5)"
                     " ON CONFLICT (provider, event_id) DO NOTHING",
                     DB_ARGS(DB_TEXT(h->provider), DB_TEXT(ev->event_id), DB_TEXT(ev->type),
                             DB_TEXT(ev->paid ? "paid" : "ignored"), DB_INT(h->now)),
                     &changes);
    if (rc)
        return rc;
    if (changes == 0) {
        h->duplicate = true;
        return DB_OK;
    }
    if (!ev->paid)
        return DB_OK;

    /* Lock the attempt first, so two different events of one payment
     * (Razorpay's payment.captured and order.paid) serialise here and the
     * second sees the first's outcome instead of racing it. */
    rc = db_exec(c,
                 "UPDATE payment_attempts SET status = status WHERE provider = $1 AND"
                 " provider_ref = $2",
                 DB_ARGS(DB_TEXT(h->provider), DB_TEXT(ev->ref)), NULL);
    if (rc)
        return rc;
    struct attempt a;
    rc = attempt_find(c, h->provider, ev->ref, &a);
    if (rc == DB_ERR_NOT_FOUND)
        return refuse(h, 400, "unknown_invoice", "no %s payment '%s' was started here", h->provider,
                      ev->ref);
    if (rc)
        return rc;
    snprintf(h->invoice_id, sizeof(h->invoice_id), "%s", a.invoice_id);
    if (*ev->invoice_id && strcmp(ev->invoice_id, a.invoice_id) != 0)
        return refuse(h, 400, "unknown_invoice",
                      "the event names invoice '%s' but %s payment '%s' is for invoice '%s'",
                      ev->invoice_id, h->provider, ev->ref, a.invoice_id);
    /* The same payment told again by another event (Razorpay sends both
     * payment.captured and order.paid; BTCPay one per webhook): recorded
     * already, whether it paid the invoice or went to credit. */
    int64_t known = 0;
    rc = db_query_int(
            c, "SELECT COUNT(*) FROM webhook_events WHERE provider = $1 AND payment_ref = $2",
            DB_ARGS(DB_TEXT(h->provider), DB_TEXT(ev->payment_ref)), &known);
    if (rc)
        return rc;
    if (known || (strcmp(a.status, "paid") == 0 && strcmp(a.paid_ref, ev->payment_ref) == 0)) {
        h->duplicate = true;
        return event_finish(c, h, "ignored", a.invoice_id, NULL);
    }
    struct billing_invoice inv;
    rc = billing_invoice_read(c, a.invoice_id, &inv);
    if (rc == DB_ERR_NOT_FOUND)
        return refuse(h, 400, "unknown_invoice", "invoice '%s' not found", a.invoice_id);
    if (rc)
        return rc;
    if (ev->amount_minor != a.amount_minor || strcmp(ev->currency, a.currency) != 0 ||
        ev->amount_minor != inv.total_minor || strcmp(ev->currency, inv.currency) != 0)
        return refuse(h, 400, "amount_mismatch",
                      "paid %" PRId64 " %s but invoice '%s' is %" PRId64 " %s", ev->amount_minor,
                      ev->currency, inv.id, inv.total_minor, inv.currency);
    /* Another payment of this attempt already paid it, or the invoice is no
     * longer payable: the money goes to credit. */
    if (strcmp(a.status, "paid") == 0 || !payable(inv.status))
        return hook_unapplied(c, h, &a, &inv);
    rc = billing_invoice_mark_paid(h->req, c, inv.id, h->provider, ev->payment_ref,
                                   ev->amount_minor, ev->currency, h->now, "system", h->provider);
    if (rc == BILLING_INVALID_STATE || rc == BILLING_REFUSED) {
        /* Changed meanwhile, or a top-up past the balance cap: nothing was
         * written; record the money as unapplied. */
        int rc2 = billing_invoice_read(c, a.invoice_id, &inv);
        return rc2 ? rc2 : hook_unapplied(c, h, &a, &inv);
    }
    if (rc == BILLING_AMOUNT_MISMATCH)
        return refuse(h, 400, "amount_mismatch", "the amount paid does not match invoice '%s'",
                      inv.id);
    if (rc)
        return rc;
    rc = db_exec(c,
                 "UPDATE payment_attempts SET status = 'paid', paid_ref = $2, paid_at = $3"
                 " WHERE id = $1",
                 DB_ARGS(DB_TEXT(a.id), DB_TEXT(ev->payment_ref), DB_INT(h->now)), NULL);
    if (rc == DB_OK)
        rc = event_finish(c, h, "paid", inv.id, ev->payment_ref);
    return rc;
}

/* Run hook_tx, again after a serialization failure; refusals roll back. */
static int hook_apply(struct db_conn *c, struct hook *h)
{
    int rc = DB_ERR_RETRY;
    for (int attempt = 0; attempt < DB_TRANSACT_ATTEMPTS && rc == DB_ERR_RETRY; attempt++) {
        h->status = 0;
        h->duplicate = false;
        h->unapplied = false;
        h->invoice_id[0] = '\0';
        rc = db_begin(c, DB_TX_WRITE);
        if (rc)
            continue;
        rc = hook_tx(c, h);
        if (rc == DB_OK && h->status == 0)
            rc = db_commit(c);
        else
            db_rollback(c);
    }
    return rc;
}

static void hook_count(const char *result)
{
    metrics_counter_add("pockityd_webhooks_total", "result", result, 1);
}

/* Answer a failed signature check. header names the header (for messages). */
static void hook_reply_signature(struct http_request *req, const char *provider, const char *header,
                                 int rc)
{
    hook_count("rejected");
    log_warn("request %s: %s webhook refused: %s", http_request_id(req), provider,
             webhook_strerror(rc));
    switch (rc) {
    case WEBHOOK_MISSING:
        http_reply_error(req, 401, "unauthenticated", "header '%s' is required", header);
        break;
    case WEBHOOK_MALFORMED:
        http_reply_error(req, 400, "invalid_request", "header '%s' is malformed", header);
        break;
    case WEBHOOK_STALE:
        http_reply_error(req, 401, "unauthenticated",
                         "header '%s' is too old or too far in the future", header);
        break;
    case WEBHOOK_NO_SECRET:
        http_set_header(req, "Retry-After", "300");
        http_reply_error(req, 503, "provider_unavailable", "webhooks of '%s' are not configured",
                         provider);
        break;
    default:
        http_reply_error(req, 401, "unauthenticated", "header '%s' does not match", header);
    }
}

/* Verify-then-parse is done by the callers; this applies the event. confirm,
 * when set, runs after the pre-checks and before the transaction (BTCPay asks
 * its server); it may refuse through h. */
typedef bool (*hook_confirm)(struct hook *h, const struct attempt *a);

static void hook_handle(struct http_request *req, struct hook *h, hook_confirm confirm)
{
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    int rc;
    /* A replay needs no outbound call: answer it before asking anybody. */
    int64_t seen = 0;
    rc = db_query_int(c,
                      "SELECT COUNT(*) FROM webhook_events WHERE provider = $1 AND event_id = $2",
                      DB_ARGS(DB_TEXT(h->provider), DB_TEXT(h->ev.event_id)), &seen);
    if (rc)
        goto dbfail;
    if (seen == 0 && h->ev.paid && confirm) {
        struct attempt a;
        rc = attempt_find(c, h->provider, h->ev.ref, &a);
        if (rc == DB_ERR_NOT_FOUND) {
            refuse(h, 400, "unknown_invoice", "no %s payment '%s' was started here", h->provider,
                   h->ev.ref);
            goto refused;
        }
        if (rc)
            goto dbfail;
        if (strcmp(a.status, "paid") != 0) {
            db_release(c); /* not held across the outbound call */
            c = NULL;
            if (!confirm(h, &a))
                goto refused;
            c = api_conn(req);
            if (!c)
                return;
        }
    }
    rc = hook_apply(c, h);
    if (rc)
        goto dbfail;
    if (h->status)
        goto refused;
    db_release(c);
    if (h->duplicate || seen) {
        hook_count("duplicate");
        log_info("request %s: %s event '%s' (%s) already applied", http_request_id(req),
                 h->provider, h->ev.event_id, h->ev.type);
        http_reply_json(req, 200, json_pack("{s:b, s:b}", "received", 1, "duplicate", 1));
    } else if (h->unapplied) {
        hook_count("unapplied");
        log_warn("request %s: %s event '%s' paid invoice '%s', which could not take it: "
                 "credited to its owner",
                 http_request_id(req), h->provider, h->ev.event_id, h->invoice_id);
        http_reply_json(req, 200,
                        json_pack("{s:b, s:b, s:s}", "received", 1, "unapplied", 1, "invoice_id",
                                  h->invoice_id));
    } else if (!h->ev.paid) {
        hook_count("ignored");
        log_info("request %s: %s event '%s' (%s) ignored", http_request_id(req), h->provider,
                 h->ev.event_id, h->ev.type);
        http_reply_json(req, 200, json_pack("{s:b, s:b}", "received", 1, "ignored", 1));
    } else {
        hook_count("paid");
        log_info("request %s: %s event '%s' paid invoice '%s'", http_request_id(req), h->provider,
                 h->ev.event_id, h->invoice_id);
        http_reply_json(req, 200,
                        json_pack("{s:b, s:s, s:s}", "received", 1, "invoice_id", h->invoice_id,
                                  "status", "paid"));
    }
    return;
refused:
    db_release(c);
    hook_count("refused");
    log_warn("request %s: %s event '%s' (%s) refused: %s", http_request_id(req), h->provider,
             h->ev.event_id, h->ev.type, h->message);
    if (h->status == 503)
        http_set_header(req, "Retry-After", "60");
    http_reply_error(req, h->status, h->code, "%s", h->message);
    return;
dbfail:
    api_db_fail(req, c, rc, "apply webhook");
    db_release(c);
}

static void bad_event(struct http_request *req, const char *provider, const char *err)
{
    hook_count("rejected");
    log_warn("request %s: %s webhook: %s", http_request_id(req), provider, err);
    http_reply_error(req, 400, "invalid_request", "%s", err);
}

static void h_stripe(struct http_request *req)
{
    const struct config *cfg = &api_app(req)->cfg;
    size_t len = 0;
    const char *body = http_body(req, &len);
    struct hook h = {.req = req, .provider = "stripe", .now = api_now()};
    int rc = webhook_stripe_verify(http_header(req, "Stripe-Signature"), body, len,
                                   cfg->stripe_webhook_secret, h.now, WEBHOOK_STRIPE_TOLERANCE);
    if (rc) {
        hook_reply_signature(req, "stripe", "Stripe-Signature", rc);
        return;
    }
    char err[256] = "";
    if (webhook_stripe_parse(body, len, &h.ev, err, sizeof(err))) {
        bad_event(req, "stripe", err);
        return;
    }
    hook_handle(req, &h, NULL);
}

static void h_razorpay(struct http_request *req)
{
    const struct config *cfg = &api_app(req)->cfg;
    size_t len = 0;
    const char *body = http_body(req, &len);
    struct hook h = {.req = req, .provider = "razorpay", .now = api_now()};
    int rc = webhook_razorpay_verify(http_header(req, "X-Razorpay-Signature"), body, len,
                                     cfg->razorpay_webhook_secret);
    if (rc) {
        hook_reply_signature(req, "razorpay", "X-Razorpay-Signature", rc);
        return;
    }
    char err[256] = "";
    if (webhook_razorpay_parse(body, len, &h.ev, err, sizeof(err))) {
        bad_event(req, "razorpay", err);
        return;
    }
    /* Razorpay's own event id is unsigned: logged, never the key. */
    char header_id[65] = "";
    const char *hid = http_header(req, "X-Razorpay-Event-Id");
    for (size_t i = 0; hid && hid[i] && i + 1 < sizeof(header_id); i++)
        header_id[i] = hid[i] > 0x20 && hid[i] < 0x7f ? hid[i] : '?';
    log_info("request %s: razorpay event '%s' (X-Razorpay-Event-Id '%s')", http_request_id(req),
             h.ev.event_id, header_id);
    hook_handle(req, &h, NULL);
}

/* BTCPay's event carries no amount: ask the server what was settled. */
static bool btcpay_confirm(struct hook *h, const struct attempt *a)
{
    const struct config *cfg = &api_app(h->req)->cfg;
    struct payments_btcpay_state st;
    char err[512] = "";
    int rc = payments_btcpay_get(cfg, h->ev.ref, &st, err, sizeof(err));
    if (rc) {
        log_warn("request %s: btcpay invoice '%s': %s: %s", http_request_id(h->req), h->ev.ref,
                 payments_strerror(rc), err);
        metrics_counter_add("pockityd_payment_provider_errors_total", "provider", "btcpay", 1);
        refuse(h, 503, "provider_error", "cannot confirm btcpay invoice '%s', try again later",
               h->ev.ref);
        return false;
    }
    if (strcmp(st.status, "Settled") != 0) {
        refuse(h, 409, "invalid_state", "btcpay invoice '%s' is '%s', not 'Settled'", h->ev.ref,
               st.status);
        return false;
    }
    if (*st.order_id && strcmp(st.order_id, a->invoice_id) != 0) {
        refuse(h, 400, "unknown_invoice", "btcpay invoice '%s' is for order '%s', not '%s'",
               h->ev.ref, st.order_id, a->invoice_id);
        return false;
    }
    h->ev.amount_minor = st.amount_minor;
    snprintf(h->ev.currency, sizeof(h->ev.currency), "%s", st.currency);
    return true;
}

static void h_btcpay(struct http_request *req)
{
    const struct config *cfg = &api_app(req)->cfg;
    size_t len = 0;
    const char *body = http_body(req, &len);
    struct hook h = {.req = req, .provider = "btcpay", .now = api_now()};
    int rc = webhook_btcpay_verify(http_header(req, "BTCPay-Sig"), body, len,
                                   cfg->btcpay_webhook_secret);
    if (rc) {
        hook_reply_signature(req, "btcpay", "BTCPay-Sig", rc);
        return;
    }
    char err[256] = "";
    if (webhook_btcpay_parse(body, len, &h.ev, err, sizeof(err))) {
        bad_event(req, "btcpay", err);
        return;
    }
    hook_handle(req, &h, btcpay_confirm);
}

/* ---- GET /v1/admin/invoices/{id}/payments */

#define PAYMENTS_LIST_MAX 200 /* attempts, and events, listed per invoice */

/* rows as objects with the given keys, one per column (ints where is_int). */
static json_t *rows_json(const struct db_result *res, const char *const *keys, const bool *is_int)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < db_result_rows(res); i++) {
        json_t *o = json_object();
        for (size_t k = 0; o && keys[k]; k++)
            json_object_set_new(o, keys[k],
                                is_int[k] ? api_json_int(res, i, k) : api_json_text(res, i, k));
        json_array_append_new(arr, o);
    }
    return arr;
}

static void h_admin_payments(struct http_request *req)
{
    static const char *const attempt_keys[] = {
            "id",     "provider", "provider_ref", "amount_minor", "currency",
            "status", "paid_ref", "created_at",   "paid_at",      NULL};
    static const bool attempt_int[] = {false, false, false, true, false, false, false, true, true};
    static const char *const event_keys[] = {"provider",    "event_id",    "type", "outcome",
                                             "payment_ref", "received_at", NULL};
    static const bool event_int[] = {false, false, false, false, false, true};
    const char *id = http_param(req, "id");
    struct db_result *attempts = NULL, *events = NULL;
    struct principal who;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    struct billing_invoice inv;
    int rc = id_ok(id) ? billing_invoice_read(c, id, &inv) : DB_ERR_NOT_FOUND;
    if (rc == DB_ERR_NOT_FOUND) {
        http_reply_error(req, 404, "not_found", "no invoice '%.64s'", id);
        goto out;
    }
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT id, provider, provider_ref, amount_minor, currency, status, paid_ref,"
                      " created_at, paid_at FROM payment_attempts WHERE invoice_id = $1"
                      " ORDER BY created_at, id LIMIT $2",
                      DB_ARGS(DB_TEXT(id), DB_INT(PAYMENTS_LIST_MAX)), &attempts);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT provider, event_id, type, outcome, payment_ref, received_at"
                      " FROM webhook_events WHERE invoice_id = $1"
                      " ORDER BY received_at, provider, event_id LIMIT $2",
                      DB_ARGS(DB_TEXT(id), DB_INT(PAYMENTS_LIST_MAX)), &events);
    if (rc) {
        api_db_fail(req, c, rc, "list payments");
        goto out;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s, s:o, s:o}", "invoice_id", inv.id, "attempts",
                              rows_json(attempts, attempt_keys, attempt_int), "events",
                              rows_json(events, event_keys, event_int)));
out:
    db_result_free(attempts);
    db_result_free(events);
    db_release(c);
}

const struct http_route api_payments_routes[] = {
        {"POST", "/v1/invoices/{id}/pay", h_pay, "invoice_pay", HTTP_JSON},
        {"POST", "/v1/webhooks/stripe", h_stripe, "webhook_stripe", 0},
        {"POST", "/v1/webhooks/razorpay", h_razorpay, "webhook_razorpay", 0},
        {"POST", "/v1/webhooks/btcpay", h_btcpay, "webhook_btcpay", 0},
        {"GET", "/v1/admin/invoices/{id}/payments", h_admin_payments, "admin_invoice_payments", 0},
};
const size_t api_payments_n_routes = sizeof(api_payments_routes) / sizeof(api_payments_routes[0]);
