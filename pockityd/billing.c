/* billing: subscriptions, invoices and their state machine, the credit ledger,
 * proration and the renewal / past-due job (the model is in billing.h). */
#include "billing.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "jobs.h"
#include "log.h"

#define DAY           86400
#define FREE_TIER     "free"
#define JOB_BATCH     500 /* rows one job step looks at per round */
#define TIER_NAME_MAX 64

/* Where a billing operation runs: the request (NULL in jobs), the connection
 * in its write transaction, the time, who acts, and the settings it needs. */
struct ctx {
    struct http_request *req;
    struct db_conn *c;
    int64_t now;
    int64_t grace;    /* seconds past due_at before past_due */
    int64_t due_days; /* days an invoice opened now has */
    const char *actor_type, *actor_id;
};

/* billing.due_days within what an invoice may hold. */
static int64_t due_days_of(const struct config *cfg)
{
    int64_t d = cfg->billing_due_days;
    return d < 0 ? 0 : d > BILLING_DUE_DAYS_MAX ? BILLING_DUE_DAYS_MAX : d;
}

static struct ctx ctx_of(struct http_request *req, struct db_conn *c, int64_t now,
                         const char *actor_type, const char *actor_id)
{
    struct ctx x = {.req = req,
                    .c = c,
                    .now = now,
                    .grace = 0,
                    .due_days = 7,
                    .actor_type = actor_type,
                    .actor_id = actor_id};
    if (req) {
        const struct config *cfg = &api_app(req)->cfg;
        x.grace = cfg->billing_grace;
        x.due_days = due_days_of(cfg);
    }
    return x;
}

static bool one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (!strcmp(s, *set))
            return true;
    return false;
}

static const char *const providers[] = {"credit", "stripe", "razorpay", "btcpay",
                                        "crypto", "manual", NULL};
static const char *const kinds[] = {"subscription", "proration", "credit", "manual", NULL};

static bool currency_ok(const char *s)
{
    return s && strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* ---- Calendar arithmetic: proleptic Gregorian days since 1970-01-01. */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int64_t *m, int64_t *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t days_in_month(int64_t y, int64_t m)
{
    static const int8_t n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : n[m - 1];
}

int64_t billing_add_months(int64_t t, int months)
{
    int64_t days = floor_div(t, DAY), secs = t - days * DAY, y, m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t total = y * 12 + (m - 1) + months;
    int64_t ny = floor_div(total, 12), nm = total - ny * 12 + 1;
    int64_t dim = days_in_month(ny, nm);
    return days_from_civil(ny, nm, d < dim ? d : dim) * DAY + secs;
}

int64_t billing_period_end(int64_t anchor, int64_t start)
{
    int64_t ya, ma, da, ys, ms, ds;
    civil_from_days(floor_div(anchor, DAY), &ya, &ma, &da);
    civil_from_days(floor_div(start, DAY), &ys, &ms, &ds);
    int64_t k = (ys * 12 + ms) - (ya * 12 + ma) - 1;
    if (k < 0)
        k = 0;
    int64_t end = billing_add_months(anchor, (int)k);
    while (end <= start)
        end = billing_add_months(anchor, (int)++k);
    return end;
}

int billing_prorate(int64_t diff, int64_t remaining, int64_t period, int64_t *out)
{
    if (period <= 0 || remaining < 0 || remaining > period || diff < 0)
        return -1;
    *out = (int64_t)((__int128)diff * remaining / period);
    return 0;
}

/* "2024-02-29" in UTC. */
static void fmt_date(int64_t t, char out[16])
{
    int64_t y, m, d;
    civil_from_days(floor_div(t, DAY), &y, &m, &d);
    snprintf(out, 16, "%04" PRId64 "-%02" PRId64 "-%02" PRId64, y, m, d);
}

/* ---- Reading rows */

struct inv_row {
    char id[64], user_id[64], pocket_id[64], sub_id[64], kind[16], status[16], currency[4];
    int64_t total, due_days;
};

static int inv_load(struct db_conn *c, const char *id, struct inv_row *r)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT id, user_id, pocket_id, subscription_id, kind, status, currency,"
                          " total_minor, due_days FROM invoices WHERE id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc;
    copy(r->id, sizeof(r->id), db_result_text(res, 0, 0));
    copy(r->user_id, sizeof(r->user_id), db_result_text(res, 0, 1));
    copy(r->pocket_id, sizeof(r->pocket_id), db_result_text(res, 0, 2));
    copy(r->sub_id, sizeof(r->sub_id), db_result_text(res, 0, 3));
    copy(r->kind, sizeof(r->kind), db_result_text(res, 0, 4));
    copy(r->status, sizeof(r->status), db_result_text(res, 0, 5));
    copy(r->currency, sizeof(r->currency), db_result_text(res, 0, 6));
    r->total = db_result_int(res, 0, 7);
    r->due_days = db_result_int(res, 0, 8);
    db_result_free(res);
    return DB_OK;
}

int billing_invoice_read(struct db_conn *c, const char *invoice_id, struct billing_invoice *out)
{
    struct inv_row r;
    int rc = inv_load(c, invoice_id, &r);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    copy(out->id, sizeof(out->id), r.id);
    copy(out->user_id, sizeof(out->user_id), r.user_id);
    copy(out->status, sizeof(out->status), r.status);
    copy(out->currency, sizeof(out->currency), r.currency);
    copy(out->kind, sizeof(out->kind), r.kind);
    out->total_minor = r.total;
    return DB_OK;
}

struct sub_row {
    char id[64], pocket_id[64], user_id[64], tier_id[64], status[16], renewal[16], pending[64];
    int64_t anchor, start, end;
};

static int sub_load_where(struct db_conn *c, const char *column_is_pocket, const char *key,
                          struct sub_row *s)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          column_is_pocket
                                  ? "SELECT id, pocket_id, user_id, tier_id, status, renewal,"
                                    " pending_tier_id, anchor_at, current_period_start,"
                                    " current_period_end FROM subscriptions WHERE pocket_id = $1"
                                  : "SELECT id, pocket_id, user_id, tier_id, status, renewal,"
                                    " pending_tier_id, anchor_at, current_period_start,"
                                    " current_period_end FROM subscriptions WHERE id = $1",
                          DB_ARGS(DB_TEXT(key)), &res);
    if (rc)
        return rc;
    copy(s->id, sizeof(s->id), db_result_text(res, 0, 0));
    copy(s->pocket_id, sizeof(s->pocket_id), db_result_text(res, 0, 1));
    copy(s->user_id, sizeof(s->user_id), db_result_text(res, 0, 2));
    copy(s->tier_id, sizeof(s->tier_id), db_result_text(res, 0, 3));
    copy(s->status, sizeof(s->status), db_result_text(res, 0, 4));
    copy(s->renewal, sizeof(s->renewal), db_result_text(res, 0, 5));
    copy(s->pending, sizeof(s->pending), db_result_text(res, 0, 6));
    s->anchor = db_result_int(res, 0, 7);
    s->start = db_result_int(res, 0, 8);
    s->end = db_result_int(res, 0, 9);
    db_result_free(res);
    return DB_OK;
}

static int sub_load(struct db_conn *c, const char *id, struct sub_row *s)
{
    return sub_load_where(c, NULL, id, s);
}

/* Take the row lock of a subscription (by id, or by pocket with by_pocket),
 * so on PostgreSQL everything that reads a subscription to change it or its
 * invoices runs one after the other and reads what the previous one wrote. */
static int sub_lock(struct db_conn *c, const char *key, bool by_pocket)
{
    return db_exec(c,
                   by_pocket
                           ? "UPDATE subscriptions SET updated_at = updated_at WHERE pocket_id = $1"
                           : "UPDATE subscriptions SET updated_at = updated_at WHERE id = $1",
                   DB_ARGS(DB_TEXT(key)), NULL);
}

struct tier_row {
    char name[TIER_NAME_MAX + 1], currency[4];
    int64_t price, max_bytes, max_objects;
};

static int tier_load(struct db_conn *c, const char *id, struct tier_row *t)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT name, currency, price_minor, max_bytes, max_objects FROM tiers"
                          " WHERE id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc;
    copy(t->name, sizeof(t->name), db_result_text(res, 0, 0));
    copy(t->currency, sizeof(t->currency), db_result_text(res, 0, 1));
    t->price = db_result_int(res, 0, 2);
    t->max_bytes = db_result_int(res, 0, 3);
    t->max_objects = db_result_int(res, 0, 4);
    db_result_free(res);
    return DB_OK;
}

/* ---- Audit */

/* The detail every invoice action carries, with extra merged in (stolen). */
static json_t *inv_detail(const struct inv_row *r, json_t *extra)
{
    json_t *d = json_pack("{s:s, s:I, s:s, s:s}", "user_id", r->user_id, "total_minor",
                          (json_int_t)r->total, "currency", r->currency, "kind", r->kind);
    if (d && r->pocket_id[0])
        json_object_set_new(d, "pocket_id", json_string(r->pocket_id));
    if (d && r->sub_id[0])
        json_object_set_new(d, "subscription_id", json_string(r->sub_id));
    if (d && extra)
        json_object_update(d, extra);
    json_decref(extra);
    return d;
}

static int audit(struct ctx *x, const char *action, const char *target_type, const char *target_id,
                 json_t *detail)
{
    return api_audit(x->req, x->c, x->actor_type, x->actor_id, action, target_type, target_id,
                     detail);
}

static json_t *sub_detail(const struct sub_row *s)
{
    return json_pack("{s:s, s:s, s:s}", "user_id", s->user_id, "pocket_id", s->pocket_id, "tier_id",
                     s->tier_id);
}

/* ---- Credit ledger */

/* Take the user's row lock, so on PostgreSQL two writers of one user's
 * ledger (a grant, a debit) run one after the other and a balance read after
 * it is current. DB_ERR_NOT_FOUND for an unknown user. */
static int lock_user(struct db_conn *c, const char *user_id)
{
    int64_t changes = 0;
    int rc = db_exec(c, "UPDATE users SET updated_at = updated_at WHERE id = $1",
                     DB_ARGS(DB_TEXT(user_id)), &changes);
    if (rc == DB_OK && changes != 1)
        rc = DB_ERR_NOT_FOUND;
    return rc;
}

int billing_credit_balance(struct db_conn *c, const char *user_id, const char *currency,
                           int64_t *out)
{
    return db_query_int(c,
                        "SELECT COALESCE(SUM(amount_minor), 0) FROM credit_entries"
                        " WHERE user_id = $1 AND currency = $2",
                        DB_ARGS(DB_TEXT(user_id), DB_TEXT(currency)), out);
}

static int credit_insert(struct ctx *x, const char *user_id, int64_t amount, const char *currency,
                         const char *kind, const char *reason, const char *invoice_id, char *id)
{
    char own[64];
    if (!id)
        id = own;
    int rc = DB_OK;
    if (amount > 0) {
        int64_t balance = 0;
        rc = lock_user(x->c, user_id);
        if (rc == DB_OK)
            rc = billing_credit_balance(x->c, user_id, currency, &balance);
        if (rc)
            return rc;
        if (amount > BILLING_AMOUNT_MAX || balance > BILLING_BALANCE_MAX - amount)
            return BILLING_REFUSED;
    }
    api_new_id("crd", id, 64);
    rc = db_exec(x->c,
                 "INSERT INTO credit_entries (id, user_id, amount_minor, currency, kind,"
                 " reason, invoice_id, actor_id, created_at)"
                 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                 DB_ARGS(DB_TEXT(id), DB_TEXT(user_id), DB_INT(amount), DB_TEXT(currency),
                         DB_TEXT(kind), DB_TEXT(reason ? reason : ""), DB_TEXT(invoice_id),
                         DB_TEXT(x->actor_id), DB_INT(x->now)),
                 NULL);
    if (rc)
        return rc;
    json_t *d = json_pack("{s:s, s:s, s:I, s:s, s:s}", "user_id", user_id, "entry_id", id,
                          "amount_minor", (json_int_t)amount, "currency", currency, "reason",
                          reason ? reason : "");
    if (d && invoice_id)
        json_object_set_new(d, "invoice_id", json_string(invoice_id));
    char action[32];
    snprintf(action, sizeof(action), "credit.%s", kind);
    return audit(x, action, "user", user_id, d);
}

int billing_credit_grant(struct http_request *req, struct db_conn *c, const char *user_id,
                         int64_t amount_minor, const char *currency, const char *reason,
                         int64_t now, const char *actor_id, char *id)
{
    struct ctx x = ctx_of(req, c, now, "admin", actor_id);
    if (amount_minor < 1 || amount_minor > BILLING_AMOUNT_MAX || !currency_ok(currency))
        return DB_ERR_INVALID;
    return credit_insert(&x, user_id, amount_minor, currency, "grant", reason, NULL, id);
}

int billing_credit_topup(struct http_request *req, struct db_conn *c, const char *user_id,
                         int64_t amount_minor, const char *currency, const char *reason,
                         int64_t now, const char *actor_type, const char *actor_id, char *id)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    if (amount_minor < 1 || amount_minor > BILLING_AMOUNT_MAX || !currency_ok(currency))
        return DB_ERR_INVALID;
    return credit_insert(&x, user_id, amount_minor, currency, "topup", reason, NULL, id);
}

/* ---- Invoices */

int billing_invoice_create(struct http_request *req, struct db_conn *c,
                           const struct billing_new_invoice *inv, int64_t now,
                           const char *actor_type, const char *actor_id, char *id)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    if (!inv->user_id || !one_of(inv->kind, kinds) || !currency_ok(inv->currency) ||
        inv->n_lines < 1 || inv->n_lines > BILLING_LINES_MAX || inv->due_days < 0 ||
        inv->due_days > BILLING_DUE_DAYS_MAX)
        return DB_ERR_INVALID;
    int64_t total = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        const struct billing_line *l = &inv->lines[i];
        size_t dl = l->description ? strlen(l->description) : 0;
        if (dl < 1 || dl > BILLING_DESC_MAX || l->amount_minor < 0 ||
            l->amount_minor > BILLING_AMOUNT_MAX)
            return DB_ERR_INVALID;
        total += l->amount_minor; /* at most 100 × 10^12: no overflow */
    }
    if (total < 1 || total > BILLING_AMOUNT_MAX)
        return DB_ERR_INVALID;

    api_new_id("inv", id, 64);
    int rc = db_exec(c,
                     "INSERT INTO invoices (id, user_id, pocket_id, subscription_id, kind, status,"
                     " currency, total_minor, period_start, period_end, due_days, due_at,"
                     " created_at, finalized_at)"
                     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                     DB_ARGS(DB_TEXT(id), DB_TEXT(inv->user_id), DB_TEXT(inv->pocket_id),
                             DB_TEXT(inv->subscription_id), DB_TEXT(inv->kind),
                             DB_TEXT(inv->open ? "open" : "draft"), DB_TEXT(inv->currency),
                             DB_INT(total), inv->has_period ? DB_INT(inv->period_start) : DB_NULL(),
                             inv->has_period ? DB_INT(inv->period_end) : DB_NULL(),
                             DB_INT(inv->due_days),
                             inv->open ? DB_INT(now + inv->due_days * DAY) : DB_NULL(), DB_INT(now),
                             inv->open ? DB_INT(now) : DB_NULL()),
                     NULL);
    for (size_t i = 0; rc == DB_OK && i < inv->n_lines; i++)
        rc = db_exec(c,
                     "INSERT INTO invoice_lines (invoice_id, position, description, amount_minor)"
                     " VALUES ($1, $2, $3, $4)",
                     DB_ARGS(DB_TEXT(id), DB_INT(i), DB_TEXT(inv->lines[i].description),
                             DB_INT(inv->lines[i].amount_minor)),
                     NULL);
    struct inv_row r;
    if (rc == DB_OK)
        rc = inv_load(c, id, &r);
    if (rc == DB_OK)
        rc = audit(&x, "invoice.create", "invoice", id,
                   inv_detail(&r, json_pack("{s:s}", "status", r.status)));
    if (rc == DB_OK && inv->open)
        rc = audit(&x, "invoice.open", "invoice", id,
                   inv_detail(&r, json_pack("{s:n, s:s}", "from", "to", "open")));
    return rc;
}

/* The subscription's count of unpaid invoices past due_at + grace, among
 * those opened since it (re)started: a canceled subscription's old debts stay
 * owed but do not hold a restarted one. */
static int overdue_count(struct ctx *x, const char *sub_id, int64_t *n)
{
    return db_query_int(x->c,
                        "SELECT COUNT(*) FROM invoices i JOIN subscriptions s"
                        " ON s.id = i.subscription_id WHERE i.subscription_id = $1"
                        " AND i.status IN ('open', 'uncollectible') AND i.due_at IS NOT NULL"
                        " AND i.due_at <= $2 AND i.created_at >= s.anchor_at",
                        DB_ARGS(DB_TEXT(sub_id), DB_INT(x->now - x->grace)), n);
}

/* Back to active when past_due and nothing is overdue any more. */
static int sub_restore_if_clear(struct ctx *x, const char *sub_id)
{
    int64_t overdue = 0, changes = 0;
    int rc = sub_lock(x->c, sub_id, false);
    if (rc == DB_OK)
        rc = overdue_count(x, sub_id, &overdue);
    if (rc || overdue)
        return rc;
    rc = db_exec(x->c,
                 "UPDATE subscriptions SET status = 'active', updated_at = $2"
                 " WHERE id = $1 AND status = 'past_due'",
                 DB_ARGS(DB_TEXT(sub_id), DB_INT(x->now)), &changes);
    if (rc || changes != 1)
        return rc;
    struct sub_row s;
    rc = sub_load(x->c, sub_id, &s);
    if (rc == DB_OK)
        rc = db_exec(x->c,
                     "UPDATE pockets SET hold = NULL, updated_at = $2"
                     " WHERE id = $1 AND hold = 'past_due'",
                     DB_ARGS(DB_TEXT(s.pocket_id), DB_INT(x->now)), NULL);
    if (rc == DB_OK)
        rc = audit(x, "subscription.restore", "subscription", sub_id, sub_detail(&s));
    return rc;
}

static int mark_paid(struct ctx *x, const char *invoice_id, const char *provider,
                     const char *provider_ref, int64_t amount_minor, const char *currency,
                     json_t *extra)
{
    struct inv_row r;
    int rc = one_of(provider, providers) && currency ? inv_load(x->c, invoice_id, &r)
                                                     : DB_ERR_INVALID;
    if (rc)
        goto out;
    if (strcmp(r.status, "open") && strcmp(r.status, "uncollectible")) {
        rc = BILLING_INVALID_STATE;
        goto out;
    }
    if (amount_minor != r.total || strcmp(currency, r.currency)) {
        rc = BILLING_AMOUNT_MISMATCH;
        goto out;
    }
    bool from_credit = !strcmp(provider, "credit");
    if (from_credit) {
        int64_t balance = 0;
        if (!strcmp(r.kind, "credit")) {
            rc = BILLING_INVALID_STATE;
            goto out;
        }
        rc = lock_user(x->c, r.user_id);
        if (rc == DB_OK)
            rc = billing_credit_balance(x->c, r.user_id, r.currency, &balance);
        if (rc == DB_OK && balance < r.total)
            rc = BILLING_NO_CREDIT;
        if (rc)
            goto out;
    } else if (!strcmp(r.kind, "credit")) {
        /* Refused before anything is written, so the caller may still
         * record the payment otherwise. */
        int64_t balance = 0;
        rc = lock_user(x->c, r.user_id);
        if (rc == DB_OK)
            rc = billing_credit_balance(x->c, r.user_id, r.currency, &balance);
        if (rc == DB_OK && balance > BILLING_BALANCE_MAX - r.total)
            rc = BILLING_REFUSED;
        if (rc)
            goto out;
    }
    int64_t changes = 0;
    rc = db_exec(
            x->c,
            "UPDATE invoices SET status = 'paid', paid_at = $2, provider = $3,"
            " provider_ref = $4 WHERE id = $1 AND status IN ('open', 'uncollectible')",
            DB_ARGS(DB_TEXT(invoice_id), DB_INT(x->now), DB_TEXT(provider), DB_TEXT(provider_ref)),
            &changes);
    if (rc == DB_OK && changes != 1)
        rc = BILLING_INVALID_STATE; /* paid or voided meanwhile */
    if (rc)
        goto out;
    char reason[128];
    snprintf(reason, sizeof(reason), "invoice %s", invoice_id);
    if (from_credit)
        rc = credit_insert(x, r.user_id, -r.total, r.currency, "debit", reason, invoice_id, NULL);
    else if (!strcmp(r.kind, "credit"))
        rc = credit_insert(x, r.user_id, r.total, r.currency, "topup", reason, invoice_id, NULL);
    if (rc)
        goto out;
    json_t *d = json_pack("{s:s, s:s, s:s, s:s*}", "from", r.status, "to", "paid", "provider",
                          provider, "provider_ref", provider_ref);
    if (d && extra)
        json_object_update(d, extra);
    rc = audit(x, "invoice.paid", "invoice", invoice_id, inv_detail(&r, d));
    if (rc == DB_OK && r.sub_id[0])
        rc = sub_restore_if_clear(x, r.sub_id);
    json_decref(extra);
    return rc;
out:
    json_decref(extra);
    return rc;
}

int billing_invoice_mark_paid_ex(struct http_request *req, struct db_conn *c,
                                 const char *invoice_id, const char *provider,
                                 const char *provider_ref, int64_t amount_minor,
                                 const char *currency, int64_t now, const char *actor_type,
                                 const char *actor_id, json_t *extra)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    return mark_paid(&x, invoice_id, provider, provider_ref, amount_minor, currency, extra);
}

int billing_invoice_mark_paid(struct http_request *req, struct db_conn *c, const char *invoice_id,
                              const char *provider, const char *provider_ref, int64_t amount_minor,
                              const char *currency, int64_t now, const char *actor_type,
                              const char *actor_id)
{
    return billing_invoice_mark_paid_ex(req, c, invoice_id, provider, provider_ref, amount_minor,
                                        currency, now, actor_type, actor_id, NULL);
}

/* The transitions other than paying: target, allowed sources, the update. */
static const struct transition {
    const char *to, *action;
    const char *from[3];
    const char *sql;
} transitions[] = {
        {"open",
         "invoice.open",
         {"draft", NULL, NULL},
         "UPDATE invoices SET status = 'open', finalized_at = $2, due_at = $2 + due_days * 86400"
         " WHERE id = $1 AND status = 'draft'"},
        {"void",
         "invoice.void",
         {"open", "uncollectible", NULL},
         "UPDATE invoices SET status = 'void', voided_at = $2"
         " WHERE id = $1 AND status IN ('open', 'uncollectible')"},
        {"uncollectible",
         "invoice.uncollectible",
         {"open", NULL, NULL},
         "UPDATE invoices SET status = 'uncollectible', uncollectible_at = $2"
         " WHERE id = $1 AND status = 'open'"},
};

static int transition(struct ctx *x, const char *invoice_id, const char *to, json_t *detail,
                      char *from_out)
{
    const struct transition *t = NULL;
    for (size_t i = 0; i < sizeof(transitions) / sizeof(transitions[0]); i++)
        if (!strcmp(transitions[i].to, to))
            t = &transitions[i];
    struct inv_row r;
    int rc = t ? inv_load(x->c, invoice_id, &r) : DB_ERR_INVALID;
    if (rc)
        goto out;
    if (from_out)
        copy(from_out, 16, r.status);
    if (!one_of(r.status, t->from)) {
        rc = BILLING_INVALID_STATE;
        goto out;
    }
    int64_t changes = 0;
    rc = db_exec(x->c, t->sql, DB_ARGS(DB_TEXT(invoice_id), DB_INT(x->now)), &changes);
    if (rc == DB_OK && changes != 1)
        rc = BILLING_INVALID_STATE;
    if (rc)
        goto out;
    json_t *d = json_pack("{s:s, s:s}", "from", r.status, "to", t->to);
    if (d && detail)
        json_object_update(d, detail);
    json_decref(detail);
    detail = NULL;
    rc = audit(x, t->action, "invoice", invoice_id, inv_detail(&r, d));
    if (rc == DB_OK && !strcmp(to, "void") && r.sub_id[0])
        rc = sub_restore_if_clear(x, r.sub_id);
out:
    json_decref(detail);
    return rc;
}

int billing_invoice_transition(struct http_request *req, struct db_conn *c, const char *invoice_id,
                               const char *to, int64_t now, const char *actor_type,
                               const char *actor_id, json_t *detail, char *from)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    return transition(&x, invoice_id, to, detail, from);
}

/* ---- Subscriptions */

/* Open the invoice of one period of tier t for subscription s. */
static int open_period_invoice(struct ctx *x, const struct sub_row *s, const struct tier_row *t,
                               int64_t start, int64_t end, char *id)
{
    char a[16], b[16], desc[BILLING_DESC_MAX + 1];
    fmt_date(start, a);
    fmt_date(end, b);
    snprintf(desc, sizeof(desc), "Tier '%s' from %s to %s (UTC)", t->name, a, b);
    struct billing_line line = {desc, t->price};
    struct billing_new_invoice inv = {.user_id = s->user_id,
                                      .pocket_id = s->pocket_id,
                                      .subscription_id = s->id,
                                      .kind = "subscription",
                                      .currency = t->currency,
                                      .lines = &line,
                                      .n_lines = 1,
                                      .has_period = true,
                                      .period_start = start,
                                      .period_end = end,
                                      .due_days = x->due_days,
                                      .open = true};
    return billing_invoice_create(x->req, x->c, &inv, x->now, x->actor_type, x->actor_id, id);
}

/* A one-line proration invoice over [start, end). */
static int open_proration(struct ctx *x, const struct sub_row *s, const char *currency,
                          int64_t amount, int64_t start, int64_t end, const char *desc, char *id)
{
    struct billing_line line = {desc, amount};
    struct billing_new_invoice inv = {.user_id = s->user_id,
                                      .pocket_id = s->pocket_id,
                                      .subscription_id = s->id,
                                      .kind = "proration",
                                      .currency = currency,
                                      .lines = &line,
                                      .n_lines = 1,
                                      .has_period = true,
                                      .period_start = start,
                                      .period_end = end,
                                      .due_days = x->due_days,
                                      .open = true};
    return billing_invoice_create(x->req, x->c, &inv, x->now, x->actor_type, x->actor_id, id);
}

/* After s changed what its next period costs (now tier t): an unpaid invoice
 * already opened for the next period is voided and replaced. When it (R) is
 * paid, what is settled for that period is netted against the new price:
 * settled = R's total + the paid proration invoices of that period − the
 * grants already refunded against R; unpaid proration invoices of that period
 * are voided first. A shortfall opens one proration invoice, an excess is
 * granted back (tied to R), so any sequence of changes charges or refunds
 * exactly the difference to the final price. */
static int renewal_reprice(struct ctx *x, const struct sub_row *s, const struct tier_row *t)
{
    struct db_result *res = NULL;
    int rc = db_query(x->c,
                      "SELECT id, status, total_minor, currency FROM invoices"
                      " WHERE subscription_id = $1 AND kind = 'subscription'"
                      " AND period_start = $2 AND status <> 'void'",
                      DB_ARGS(DB_TEXT(s->id), DB_INT(s->end)), &res);
    if (rc || db_result_rows(res) == 0) {
        db_result_free(res);
        return rc;
    }
    char id[64], status[16], currency[4];
    copy(id, sizeof(id), db_result_text(res, 0, 0));
    copy(status, sizeof(status), db_result_text(res, 0, 1));
    int64_t paid = db_result_int(res, 0, 2);
    copy(currency, sizeof(currency), db_result_text(res, 0, 3));
    db_result_free(res);
    int64_t end = billing_period_end(s->anchor, s->end);
    if (strcmp(status, "paid") != 0) {
        rc = transition(x, id, "void", json_pack("{s:s}", "reason", "tier changed"), NULL);
        if (rc == DB_OK && t->price > 0) {
            char fresh[64];
            rc = open_period_invoice(x, s, t, s->end, end, fresh);
        }
        return rc;
    }

    /* Unpaid differences of earlier changes are replaced by the one below. */
    rc = db_query(x->c,
                  "SELECT id FROM invoices WHERE subscription_id = $1 AND kind = 'proration'"
                  " AND period_start = $2 AND status IN ('open', 'uncollectible') ORDER BY id",
                  DB_ARGS(DB_TEXT(s->id), DB_INT(s->end)), &res);
    for (size_t i = 0; rc == DB_OK && i < db_result_rows(res); i++)
        rc = transition(x, db_result_text(res, i, 0), "void",
                        json_pack("{s:s}", "reason", "tier changed again"), NULL);
    db_result_free(res);
    int64_t topped = 0, refunded = 0;
    if (rc == DB_OK)
        rc = db_query_int(x->c,
                          "SELECT COALESCE(SUM(total_minor), 0) FROM invoices"
                          " WHERE subscription_id = $1 AND kind = 'proration'"
                          " AND period_start = $2 AND status = 'paid'",
                          DB_ARGS(DB_TEXT(s->id), DB_INT(s->end)), &topped);
    if (rc == DB_OK)
        rc = db_query_int(x->c,
                          "SELECT COALESCE(SUM(amount_minor), 0) FROM credit_entries"
                          " WHERE invoice_id = $1 AND kind = 'grant'",
                          DB_ARGS(DB_TEXT(id)), &refunded);
    if (rc)
        return rc;
    /* Each term is at most a few times BILLING_AMOUNT_MAX: no overflow. */
    int64_t settled = paid + topped - refunded;
    int64_t d = (t->price > 0 ? t->price : 0) - settled;
    if (d > 0) {
        char desc[BILLING_DESC_MAX + 1], fresh[64];
        snprintf(desc, sizeof(desc),
                 "Tier '%.60s' for the next period, less %" PRId64 " already paid (%.40s)", t->name,
                 settled, id);
        return open_proration(x, s, currency, d, s->end, end, desc, fresh);
    }
    if (d == 0)
        return DB_OK;
    char reason[128];
    snprintf(reason, sizeof(reason), "tier change: refund for the period paid by %s", id);
    return credit_insert(x, s->user_id, -d, currency, "grant", reason, id, NULL);
}

/* A new subscription (or a canceled one started afresh) for pocket_id on
 * tier to, its first period opened and invoiced. */
static int sub_start(struct ctx *x, const char *pocket_id, const char *user_id, const char *to,
                     const struct tier_row *t, bool exists, const char *existing_id,
                     struct billing_change *out)
{
    struct sub_row s = {.anchor = x->now, .start = x->now};
    s.end = billing_add_months(x->now, 1);
    copy(s.pocket_id, sizeof(s.pocket_id), pocket_id);
    copy(s.user_id, sizeof(s.user_id), user_id);
    copy(s.tier_id, sizeof(s.tier_id), to);
    copy(s.status, sizeof(s.status), "active");
    int rc;
    if (exists) {
        copy(s.id, sizeof(s.id), existing_id);
        rc = db_exec(x->c,
                     "UPDATE subscriptions SET tier_id = $2, status = 'active',"
                     " renewal = 'manual', anchor_at = $3, current_period_start = $3,"
                     " current_period_end = $4, pending_tier_id = NULL, canceled_at = NULL,"
                     " user_id = $5, updated_at = $3 WHERE id = $1",
                     DB_ARGS(DB_TEXT(s.id), DB_TEXT(to), DB_INT(x->now), DB_INT(s.end),
                             DB_TEXT(user_id)),
                     NULL);
    } else {
        api_new_id("sub", s.id, sizeof(s.id));
        rc = db_exec(x->c,
                     "INSERT INTO subscriptions (id, pocket_id, user_id, tier_id, status, renewal,"
                     " anchor_at, current_period_start, current_period_end, created_at,"
                     " updated_at) VALUES ($1, $2, $3, $4, 'active', 'manual', $5, $5, $6, $5, $5)",
                     DB_ARGS(DB_TEXT(s.id), DB_TEXT(pocket_id), DB_TEXT(user_id), DB_TEXT(to),
                             DB_INT(x->now), DB_INT(s.end)),
                     NULL);
    }
    if (rc == DB_OK)
        rc = open_period_invoice(x, &s, t, s.start, s.end, out->invoice_id);
    if (rc == DB_OK) {
        json_t *d = sub_detail(&s);
        json_object_set_new(d, "current_period_end", json_integer(s.end));
        json_object_set_new(d, "invoice_id", json_string(out->invoice_id));
        rc = audit(x, "subscription.create", "subscription", s.id, d);
    }
    copy(out->subscription_id, sizeof(out->subscription_id), s.id);
    return rc;
}

int billing_tier_change(struct http_request *req, struct db_conn *c, const char *pocket_id,
                        const char *to_tier, int64_t now, const char *actor_type,
                        const char *actor_id, struct billing_change *out)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    memset(out, 0, sizeof(*out));
    out->effective_at = now;
    struct tier_row to, cur;
    int rc = tier_load(c, to_tier, &to);
    if (rc)
        return rc;
    struct db_result *res = NULL;
    rc = db_query_row(c,
                      "SELECT user_id, used_bytes + reserved_bytes,"
                      " used_objects + reserved_objects FROM pockets WHERE id = $1",
                      DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc)
        return rc;
    char user_id[64];
    copy(user_id, sizeof(user_id), db_result_text(res, 0, 0));
    int64_t bytes = db_result_int(res, 0, 1), objects = db_result_int(res, 0, 2);
    db_result_free(res);

    struct sub_row s;
    rc = sub_lock(c, pocket_id, true);
    if (rc == DB_OK)
        rc = sub_load_where(c, "pocket", pocket_id, &s);
    if (rc && rc != DB_ERR_NOT_FOUND)
        return rc;
    bool exists = rc == DB_OK, live = exists && strcmp(s.status, "canceled") != 0;
    if (!live)
        return to.price > 0 ? sub_start(&x, pocket_id, user_id, to_tier, &to, exists, s.id, out)
                            : DB_OK;

    copy(out->subscription_id, sizeof(out->subscription_id), s.id);
    rc = tier_load(c, s.tier_id, &cur);
    if (rc)
        return rc;
    if (to.price > 0 && strcmp(to.currency, cur.currency)) {
        snprintf(out->message, sizeof(out->message),
                 "tier '%s' is billed in %s, the pocket's subscription in %s", to_tier, to.currency,
                 cur.currency);
        return BILLING_REFUSED;
    }
    json_t *d = sub_detail(&s);
    json_object_set_new(d, "from_tier", json_string(s.tier_id));
    json_object_set_new(d, "to_tier", json_string(to_tier));

    if (!strcmp(to_tier, s.tier_id) || (to.price > 0 && to.price >= cur.price)) {
        /* At once: charge the rest of the period's difference. */
        int64_t amount = 0, remaining = s.end - now;
        if (remaining < 0)
            remaining = 0;
        if (remaining > s.end - s.start)
            remaining = s.end - s.start;
        if (billing_prorate(to.price - cur.price > 0 ? to.price - cur.price : 0, remaining,
                            s.end - s.start, &amount) != 0)
            amount = 0;
        if (amount > 0) {
            char desc[BILLING_DESC_MAX + 1];
            snprintf(desc, sizeof(desc),
                     "Upgrade from tier '%.60s' to '%.60s' for %" PRId64 " of %" PRId64
                     " seconds left in the period",
                     cur.name, to.name, remaining, s.end - s.start);
            rc = open_proration(&x, &s, to.currency, amount, now, s.end, desc, out->invoice_id);
        }
        if (rc == DB_OK)
            rc = db_exec(c,
                         "UPDATE subscriptions SET tier_id = $2, pending_tier_id = NULL,"
                         " updated_at = $3 WHERE id = $1",
                         DB_ARGS(DB_TEXT(s.id), DB_TEXT(to_tier), DB_INT(now)), NULL);
        copy(s.tier_id, sizeof(s.tier_id), to_tier);
        if (rc == DB_OK)
            rc = renewal_reprice(&x, &s, &to);
        json_object_set_new(d, "effective_at", json_integer(now));
        json_object_set_new(d, "proration_minor", json_integer(amount));
        if (amount > 0)
            json_object_set_new(d, "invoice_id", json_string(out->invoice_id));
    } else {
        /* Cheaper: at the period's end, and only when the pocket fits. */
        if (bytes > to.max_bytes || objects > to.max_objects) {
            json_decref(d);
            snprintf(out->message, sizeof(out->message),
                     "pocket '%s' holds more than tier '%s' allows: free space first", pocket_id,
                     to_tier);
            return BILLING_REFUSED;
        }
        out->deferred = true;
        out->effective_at = s.end;
        rc = db_exec(c,
                     "UPDATE subscriptions SET pending_tier_id = $2, updated_at = $3 WHERE id = $1",
                     DB_ARGS(DB_TEXT(s.id), DB_TEXT(to_tier), DB_INT(now)), NULL);
        if (rc == DB_OK)
            rc = renewal_reprice(&x, &s, &to);
        json_object_set_new(d, "pending_tier_id", json_string(to_tier));
        json_object_set_new(d, "effective_at", json_integer(s.end));
        json_object_set_new(d, "cancel_at_period_end", json_boolean(to.price == 0));
    }
    if (rc) {
        json_decref(d);
        if (rc == BILLING_REFUSED && !out->message[0])
            snprintf(out->message, sizeof(out->message),
                     "the refund would take the credit balance past %" PRId64 " minor units",
                     BILLING_BALANCE_MAX);
        return rc;
    }
    return audit(&x, "subscription.change", "subscription", s.id, d);
}

int billing_subscription_cancel(struct http_request *req, struct db_conn *c, const char *sub_id,
                                const char *reason, int64_t now, const char *actor_type,
                                const char *actor_id)
{
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    struct sub_row s;
    int rc = sub_lock(c, sub_id, false);
    if (rc == DB_OK)
        rc = sub_load(c, sub_id, &s);
    if (rc)
        return rc;
    int64_t changes = 0;
    rc = db_exec(c,
                 "UPDATE subscriptions SET status = 'canceled', canceled_at = $2,"
                 " pending_tier_id = NULL, updated_at = $2 WHERE id = $1 AND status <> 'canceled'",
                 DB_ARGS(DB_TEXT(sub_id), DB_INT(now)), &changes);
    if (rc == DB_OK && changes != 1)
        rc = BILLING_INVALID_STATE;
    if (rc == DB_OK)
        rc = db_exec(c,
                     "UPDATE pockets SET tier_id = $2, updated_at = $3,"
                     " hold = CASE WHEN hold = 'past_due' THEN NULL ELSE hold END WHERE id = $1",
                     DB_ARGS(DB_TEXT(s.pocket_id), DB_TEXT(FREE_TIER), DB_INT(now)), NULL);
    if (rc)
        return rc;
    json_t *d = sub_detail(&s);
    json_object_set_new(d, "reason", reason ? json_string(reason) : json_null());
    json_object_set_new(d, "pocket_moved_to", json_string(FREE_TIER));
    return audit(&x, "subscription.cancel", "subscription", sub_id, d);
}

int billing_subscription_renewal(struct http_request *req, struct db_conn *c, const char *sub_id,
                                 const char *renewal, int64_t now, const char *actor_type,
                                 const char *actor_id)
{
    static const char *const modes[] = {"manual", "credit", NULL};
    struct ctx x = ctx_of(req, c, now, actor_type, actor_id);
    if (!one_of(renewal, modes))
        return DB_ERR_INVALID;
    struct sub_row s;
    int rc = sub_lock(c, sub_id, false);
    if (rc == DB_OK)
        rc = sub_load(c, sub_id, &s);
    if (rc)
        return rc;
    int64_t changes = 0;
    rc = db_exec(c,
                 "UPDATE subscriptions SET renewal = $2, updated_at = $3"
                 " WHERE id = $1 AND status <> 'canceled'",
                 DB_ARGS(DB_TEXT(sub_id), DB_TEXT(renewal), DB_INT(now)), &changes);
    if (rc == DB_OK && changes != 1)
        rc = BILLING_INVALID_STATE;
    if (rc)
        return rc;
    json_t *d = sub_detail(&s);
    json_object_set_new(d, "renewal", json_string(renewal));
    json_object_set_new(d, "previous_renewal", json_string(s.renewal));
    return audit(&x, "subscription.change", "subscription", sub_id, d);
}

/* ---- The job: one round of renewals, period ends, credit payments and
 * past-due checks. Each step handles one row in its own transaction with a
 * conditional update, so replicas running it at once apply each change once. */

struct step {
    struct app *app;
    int64_t now;
    const char *id;
    int (*fn)(struct ctx *x, const char *id, int64_t renew_ahead);
};

static int step_tx(struct db_conn *c, void *arg)
{
    struct step *st = arg;
    struct ctx x = {.c = c,
                    .now = st->now,
                    .grace = st->app->cfg.billing_grace,
                    .due_days = due_days_of(&st->app->cfg),
                    .actor_type = "system"};
    return st->fn(&x, st->id, st->app->cfg.billing_renew_ahead);
}

/* Open the next period's invoice when its time has come. */
static int renew_one(struct ctx *x, const char *id, int64_t renew_ahead)
{
    struct sub_row s;
    int64_t exists = 0;
    int rc = sub_lock(x->c, id, false);
    if (rc == DB_OK)
        rc = sub_load(x->c, id, &s);
    if (rc || !strcmp(s.status, "canceled") || s.end - renew_ahead > x->now)
        return rc;
    rc = db_query_int(x->c,
                      "SELECT COUNT(*) FROM invoices WHERE subscription_id = $1"
                      " AND kind = 'subscription' AND period_start = $2",
                      DB_ARGS(DB_TEXT(id), DB_INT(s.end)), &exists);
    if (rc || exists)
        return rc;
    struct tier_row t;
    rc = tier_load(x->c, s.pending[0] ? s.pending : s.tier_id, &t);
    if (rc || t.price <= 0)
        return rc;
    char inv[64];
    return open_period_invoice(x, &s, &t, s.end, billing_period_end(s.anchor, s.end), inv);
}

/* Start the next period, applying a scheduled change first. */
static int roll_one(struct ctx *x, const char *id, int64_t renew_ahead)
{
    (void)renew_ahead;
    struct sub_row s;
    int rc = sub_lock(x->c, id, false);
    if (rc == DB_OK)
        rc = sub_load(x->c, id, &s);
    if (rc || !strcmp(s.status, "canceled") || s.end > x->now)
        return rc;
    int64_t next = billing_period_end(s.anchor, s.end), changes = 0;
    struct tier_row t = {.price = 1};
    if (s.pending[0])
        rc = tier_load(x->c, s.pending, &t);
    if (rc)
        return rc;
    json_t *d = sub_detail(&s);
    const char *action = "subscription.renew";
    if (s.pending[0] && t.price == 0) {
        rc = db_exec(x->c,
                     "UPDATE subscriptions SET status = 'canceled', canceled_at = $3,"
                     " tier_id = pending_tier_id, pending_tier_id = NULL, updated_at = $3"
                     " WHERE id = $1 AND current_period_end = $2 AND status <> 'canceled'",
                     DB_ARGS(DB_TEXT(id), DB_INT(s.end), DB_INT(x->now)), &changes);
        action = "subscription.cancel";
        json_object_set_new(d, "reason", json_string("changed to a free tier"));
    } else {
        rc = db_exec(x->c,
                     "UPDATE subscriptions SET tier_id = COALESCE(pending_tier_id, tier_id),"
                     " pending_tier_id = NULL, current_period_start = $2,"
                     " current_period_end = $3, updated_at = $4"
                     " WHERE id = $1 AND current_period_end = $2 AND status <> 'canceled'",
                     DB_ARGS(DB_TEXT(id), DB_INT(s.end), DB_INT(next), DB_INT(x->now)), &changes);
        if (s.pending[0])
            action = "subscription.change";
        json_object_set_new(d, "current_period_start", json_integer(s.end));
        json_object_set_new(d, "current_period_end", json_integer(next));
    }
    if (rc == DB_OK && changes == 1 && s.pending[0]) {
        /* The scheduled tier applies now, fitting or not: a pocket that grew
         * meanwhile becomes read + delete until it fits. */
        rc = db_exec(
                x->c,
                "UPDATE pockets SET tier_id = $2, updated_at = $3,"
                " hold = CASE WHEN hold = 'past_due' AND $4 = 0 THEN NULL ELSE hold END"
                " WHERE id = $1",
                DB_ARGS(DB_TEXT(s.pocket_id), DB_TEXT(s.pending), DB_INT(x->now), DB_INT(t.price)),
                NULL);
        json_object_set_new(d, "from_tier", json_string(s.tier_id));
        json_object_set_new(d, "to_tier", json_string(s.pending));
    }
    if (rc || changes != 1) {
        json_decref(d);
        return rc;
    }
    return audit(x, action, "subscription", id, d);
}

static int pay_one(struct ctx *x, const char *id, int64_t renew_ahead)
{
    (void)renew_ahead;
    struct inv_row r;
    int rc = inv_load(x->c, id, &r);
    if (rc)
        return rc;
    rc = mark_paid(x, id, "credit", NULL, r.total, r.currency, NULL);
    return rc == BILLING_NO_CREDIT || rc == BILLING_INVALID_STATE ? DB_OK : rc;
}

static int past_due_one(struct ctx *x, const char *id, int64_t renew_ahead)
{
    (void)renew_ahead;
    int64_t overdue = 0, changes = 0;
    int rc = sub_lock(x->c, id, false);
    if (rc == DB_OK)
        rc = overdue_count(x, id, &overdue);
    if (rc || !overdue)
        return rc;
    rc = db_exec(x->c,
                 "UPDATE subscriptions SET status = 'past_due', updated_at = $2"
                 " WHERE id = $1 AND status = 'active'",
                 DB_ARGS(DB_TEXT(id), DB_INT(x->now)), &changes);
    if (rc || changes != 1)
        return rc;
    struct sub_row s;
    rc = sub_load(x->c, id, &s);
    if (rc == DB_OK)
        rc = db_exec(x->c,
                     "UPDATE pockets SET hold = 'past_due', updated_at = $2"
                     " WHERE id = $1 AND hold IS NULL",
                     DB_ARGS(DB_TEXT(s.pocket_id), DB_INT(x->now)), NULL);
    if (rc)
        return rc;
    json_t *d = sub_detail(&s);
    json_object_set_new(d, "overdue_invoices", json_integer(overdue));
    return audit(x, "subscription.past_due", "subscription", id, d);
}

static int restore_one(struct ctx *x, const char *id, int64_t renew_ahead)
{
    (void)renew_ahead;
    return sub_restore_if_clear(x, id);
}

/* Run fn on each id the query selects (its parameters: $1 now, $2 the
 * batch size, $3 the setting the step needs). */
static void job_step(struct app *app, int64_t now, const char *name, const char *sql,
                     int64_t setting, int (*fn)(struct ctx *, const char *, int64_t))
{
    struct db_conn *c = db_acquire(app->db);
    if (!c) {
        log_warn("billing: %s: no database connection", name);
        return;
    }
    struct db_result *res = NULL;
    int rc = db_query(c, sql, DB_ARGS(DB_INT(now), DB_INT(JOB_BATCH), DB_INT(setting)), &res);
    if (rc)
        log_warn("billing: %s: %s: %s", name, db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
    size_t n = db_result_rows(res);
    for (size_t i = 0; i < n && !jobs_stopping(app); i++) {
        struct step st = {.app = app, .now = now, .id = db_result_text(res, i, 0), .fn = fn};
        rc = db_transact(app->db, step_tx, &st);
        if (rc == DB_ERR_CONSTRAINT) /* another replica did it first */
            continue;
        if (rc)
            log_warn("billing: %s '%s': %s", name, st.id, db_strerror(rc));
    }
    db_result_free(res);
}

void billing_job(struct app *app, int64_t now)
{
    const struct config *cfg = &app->cfg;
    job_step(app, now, "renew",
             "SELECT s.id FROM subscriptions s"
             " JOIN tiers t ON t.id = COALESCE(s.pending_tier_id, s.tier_id)"
             " WHERE s.status <> 'canceled' AND s.current_period_end - $3 <= $1"
             " AND t.price_minor > 0 AND NOT EXISTS"
             " (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id"
             " AND i.kind = 'subscription' AND i.period_start = s.current_period_end)"
             " ORDER BY s.current_period_end, s.id LIMIT $2",
             cfg->billing_renew_ahead, renew_one);
    job_step(app, now, "period end",
             "SELECT id FROM subscriptions WHERE status <> 'canceled'"
             " AND current_period_end <= $1 + $3 ORDER BY current_period_end, id LIMIT $2",
             0, roll_one);
    job_step(app, now, "credit payment",
             "SELECT i.id FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id"
             " WHERE s.renewal = 'credit' AND s.status <> 'canceled'"
             " AND i.status IN ('open', 'uncollectible') AND i.created_at <= $1 + $3"
             " AND (SELECT COALESCE(SUM(e.amount_minor), 0) FROM credit_entries e"
             " WHERE e.user_id = i.user_id AND e.currency = i.currency) >= i.total_minor"
             " ORDER BY i.created_at, i.id LIMIT $2",
             0, pay_one);
    job_step(app, now, "past due",
             "SELECT s.id FROM subscriptions s WHERE s.status = 'active' AND EXISTS"
             " (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id"
             " AND i.status IN ('open', 'uncollectible') AND i.due_at <= $1 - $3"
             " AND i.created_at >= s.anchor_at)"
             " ORDER BY s.id LIMIT $2",
             cfg->billing_grace, past_due_one);
    job_step(app, now, "restore",
             "SELECT s.id FROM subscriptions s WHERE s.status = 'past_due' AND NOT EXISTS"
             " (SELECT 1 FROM invoices i WHERE i.subscription_id = s.id"
             " AND i.status IN ('open', 'uncollectible') AND i.due_at <= $1 - $3"
             " AND i.created_at >= s.anchor_at)"
             " ORDER BY s.id LIMIT $2",
             cfg->billing_grace, restore_one);
}
