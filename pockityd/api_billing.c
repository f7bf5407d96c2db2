/* api_billing: the HTTP side of billing — users' invoices, subscriptions and
 * credit, and the administrators' invoice, subscription and credit routes. */
#include "api.h"
#include "routes.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "secret.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX     200
#define REASON_MAX   1000
#define TX_HASH_MAX  128
#define CURSOR_MAX   96

/* ---- Input checks */

static bool currency_ok(const char *s)
{
    return strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

/* Free text: no control characters except, when multiline, tab and breaks. */
static bool text_ok(const char *s, bool multiline)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == 0x7f)
            return false;
        if (*p < 0x20 && !(multiline && (*p == '\t' || *p == '\n' || *p == '\r')))
            return false;
    }
    return true;
}

static bool hex_ok(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
            return false;
    return true;
}

/* A transaction reference of network: btc 64 hex digits, eth and usdc "0x" and
 * 64 hex digits, other 1..128 of [A-Za-z0-9._:-]. */
static bool tx_hash_ok(const char *network, const char *h)
{
    if (!strcmp(network, "btc"))
        return hex_ok(h, 64);
    if (!strcmp(network, "eth") || !strcmp(network, "usdc"))
        return h[0] == '0' && h[1] == 'x' && hex_ok(h + 2, 64);
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == ':' || *p == '-'))
            return false;
    return *h != '\0';
}

static bool one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (!strcmp(s, *set))
            return true;
    return false;
}

/* A paging position: "<created_at>.<id>" of the last item shown. */
struct cursor {
    bool set;
    int64_t at;
    char id[64];
};

/* ?limit= (1..200, default 50) and ?cursor=. Answers 400 itself. */
static bool page_args(struct http_request *req, const char *id_prefix, int64_t *limit,
                      struct cursor *cur)
{
    const char *l = http_query(req, "limit"), *k = http_query(req, "cursor");
    *limit = PAGE_DEFAULT;
    memset(cur, 0, sizeof(*cur));
    if (l) {
        char *end;
        long long v = strtoll(l, &end, 10);
        if (!*l || *end || *l == '-' || *l == '+' || strlen(l) > 3 || v < 1 || v > PAGE_MAX) {
            http_reply_error(req, 400, "invalid_request", "'limit' must be an integer from 1 to %d",
                             PAGE_MAX);
            return false;
        }
        *limit = v;
    }
    if (!k)
        return true;
    const char *dot = strchr(k, '.');
    int64_t at = 0;
    bool ok = dot && dot > k && dot - k <= 15 && strlen(k) <= CURSOR_MAX;
    for (const char *p = k; ok && p < dot; p++) {
        ok = *p >= '0' && *p <= '9';
        at = at * 10 + (*p - '0');
    }
    if (!ok || !secret_id_valid(id_prefix, dot + 1)) {
        http_reply_error(req, 400, "invalid_request", "'cursor' is not a cursor of this list");
        return false;
    }
    cur->set = true;
    cur->at = at;
    snprintf(cur->id, sizeof(cur->id), "%s", dot + 1);
    return true;
}

/* {"<key>": items, "next_cursor": ... or null} given the last row shown. */
static json_t *page_json(const char *key, json_t *items, bool more, int64_t last_at,
                         const char *last_id)
{
    json_t *next = json_null();
    if (more) {
        char buf[CURSOR_MAX + 32];
        snprintf(buf, sizeof(buf), "%" PRId64 ".%s", last_at, last_id);
        next = json_string(buf);
    }
    return json_pack("{s:o, s:o}", key, items, "next_cursor", next);
}

/* ---- Invoices as JSON */

#define INVOICE_COLS                                                                               \
    "i.id, i.user_id, i.pocket_id, i.subscription_id, i.kind, i.status, i.currency,"               \
    " i.total_minor, i.period_start, i.period_end, i.due_at, i.created_at, i.finalized_at,"        \
    " i.paid_at, i.voided_at, i.uncollectible_at, i.provider, i.provider_ref"
static const char *const invoice_fields[] = {
        "id",           "user_id",     "pocket_id", "subscription_id",
        "kind",         "status",      "currency",  "total_minor",
        "period_start", "period_end",  "due_at",    "created_at",
        "finalized_at", "paid_at",     "voided_at", "uncollectible_at",
        "provider",     "provider_ref"};
#define INVOICE_NCOLS (sizeof(invoice_fields) / sizeof(invoice_fields[0]))
enum {
    IC_ID = 0,
    IC_CREATED = 11
};

/* Integer columns of an invoice row, by position. */
static bool invoice_int_col(size_t col)
{
    return col == 7 || (col >= 8 && col <= 15);
}

static json_t *invoice_json(const struct db_result *res, size_t row)
{
    json_t *o = json_object();
    for (size_t col = 0; o && col < INVOICE_NCOLS; col++)
        json_object_set_new(o, invoice_fields[col],
                            invoice_int_col(col) ? api_json_int(res, row, col)
                                                 : api_json_text(res, row, col));
    if (o)
        json_object_set_new(o, "lines", json_array());
    return o;
}

/* Attach the lines (rows: invoice_id, description, amount_minor) to the
 * invoices of list, found by id through index (id → invoice object). */
static void attach_lines(json_t *index, const struct db_result *lines)
{
    for (size_t i = 0; i < db_result_rows(lines); i++) {
        json_t *inv = json_object_get(index, db_result_text(lines, i, 0));
        if (!inv)
            continue;
        json_array_append_new(json_object_get(inv, "lines"),
                              json_pack("{s:o, s:o}", "description", api_json_text(lines, i, 1),
                                        "amount_minor", api_json_int(lines, i, 2)));
    }
}

/* One invoice with its lines: the owner's (user_id) or anyone's (NULL). */
static int invoice_load(struct db_conn *c, const char *id, const char *user_id, json_t **out)
{
    struct db_result *res = NULL, *lines = NULL;
    *out = NULL;
    int rc = db_query_row(c,
                          "SELECT " INVOICE_COLS " FROM invoices i WHERE i.id = $1"
                          " AND (CAST($2 AS TEXT) IS NULL OR i.user_id = $2)",
                          DB_ARGS(DB_TEXT(id), DB_TEXT(user_id)), &res);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT invoice_id, description, amount_minor FROM invoice_lines"
                      " WHERE invoice_id = $1 ORDER BY position",
                      DB_ARGS(DB_TEXT(id)), &lines);
    if (rc == DB_OK) {
        json_t *inv = invoice_json(res, 0), *index = json_object();
        json_object_set(index, id, inv);
        attach_lines(index, lines);
        json_decref(index);
        *out = inv;
        rc = inv ? DB_OK : DB_ERR_NOMEM;
    }
    db_result_free(res);
    db_result_free(lines);
    return rc;
}

static void reply_invoice(struct http_request *req, struct db_conn *c, const char *id,
                          const char *user_id, int status)
{
    json_t *body = NULL;
    int rc = invoice_load(c, id, user_id, &body);
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "no invoice '%.64s'", id);
    else if (rc)
        api_db_fail(req, c, rc, "read invoice");
    else
        http_reply_json(req, status, body);
}

static const char *const invoice_statuses[] = {"draft", "open",          "paid",
                                               "void",  "uncollectible", NULL};

#define INVOICE_FILTER                                                                             \
    " FROM invoices i WHERE (CAST($1 AS TEXT) IS NULL OR i.user_id = $1)"                          \
    " AND (CAST($2 AS TEXT) IS NULL OR i.status = $2)"                                             \
    " AND (CAST($3 AS BIGINT) IS NULL OR i.created_at < $3"                                        \
    " OR (i.created_at = $3 AND i.id < $4))"                                                       \
    " ORDER BY i.created_at DESC, i.id DESC LIMIT $5"

/* GET /v1/invoices and /v1/admin/invoices: newest first. */
static void list_invoices(struct http_request *req, bool admin)
{
    struct principal who;
    struct cursor cur;
    int64_t limit;
    struct db_result *res = NULL, *lines = NULL;
    const char *status = http_query(req, "status"), *user = http_query(req, "user_id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!(admin ? api_admin(req, c, &who) : api_user(req, c, &who)) ||
        !page_args(req, "inv_", &limit, &cur))
        goto out;
    if (status && !one_of(status, invoice_statuses)) {
        http_reply_error(req, 400, "invalid_request",
                         "'status' must be draft, open, paid, void or uncollectible");
        goto out;
    }
    if (!admin)
        user = who.user_id;
    else if (user && !secret_id_valid("usr_", user)) {
        http_reply_error(req, 400, "invalid_request", "'user_id' is not a user id");
        goto out;
    }
    const struct db_param params[] = {DB_TEXT(user), DB_TEXT(status),
                                      cur.set ? DB_INT(cur.at) : DB_NULL(),
                                      DB_TEXT(cur.set ? cur.id : NULL), DB_INT(limit + 1)};
    /* Both reads see one snapshot, so each invoice gets exactly its lines. */
    int rc = db_begin(c, DB_TX_READ);
    if (rc == DB_OK)
        rc = db_query(c, "SELECT " INVOICE_COLS INVOICE_FILTER, params, 5, &res);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT l.invoice_id, l.description, l.amount_minor FROM invoice_lines l"
                      " WHERE l.invoice_id IN (SELECT i.id" INVOICE_FILTER ")"
                      " ORDER BY l.invoice_id, l.position",
                      params, 5, &lines);
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    if (rc) {
        api_db_fail(req, c, rc, "list invoices");
        goto out;
    }
    json_t *items = json_array(), *index = json_object();
    size_t n = db_result_rows(res), shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++) {
        json_t *inv = invoice_json(res, i);
        json_object_set(index, db_result_text(res, i, IC_ID), inv);
        json_array_append_new(items, inv);
    }
    attach_lines(index, lines);
    json_decref(index);
    http_reply_json(req, 200,
                    page_json("invoices", items, n > shown,
                              shown ? db_result_int(res, shown - 1, IC_CREATED) : 0,
                              shown ? db_result_text(res, shown - 1, IC_ID) : ""));
out:
    db_result_free(res);
    db_result_free(lines);
    db_release(c);
}

static void h_invoices(struct http_request *req)
{
    list_invoices(req, false);
}

static void h_admin_invoices(struct http_request *req)
{
    list_invoices(req, true);
}

static void get_invoice(struct http_request *req, bool admin)
{
    struct principal who;
    const char *id = http_param(req, "id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!(admin ? api_admin(req, c, &who) : api_user(req, c, &who)))
        goto out;
    if (!secret_id_valid("inv_", id))
        http_reply_error(req, 404, "not_found", "no invoice '%.64s'", id);
    else
        reply_invoice(req, c, id, admin ? NULL : who.user_id, 200);
out:
    db_release(c);
}

static void h_invoice(struct http_request *req)
{
    get_invoice(req, false);
}

static void h_admin_invoice(struct http_request *req)
{
    get_invoice(req, true);
}

/* ---- Subscriptions as JSON */

#define SUB_COLS                                                                                   \
    "s.id, s.pocket_id, s.user_id, s.tier_id, s.status, s.renewal, s.current_period_start,"        \
    " s.current_period_end, s.pending_tier_id, s.created_at, s.canceled_at"
enum {
    SC_ID = 0,
    SC_CREATED = 9
};

static json_t *sub_json(const struct db_result *res, size_t row)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                     api_json_text(res, row, 0), "pocket_id", api_json_text(res, row, 1), "user_id",
                     api_json_text(res, row, 2), "tier_id", api_json_text(res, row, 3), "status",
                     api_json_text(res, row, 4), "renewal", api_json_text(res, row, 5),
                     "current_period_start", api_json_int(res, row, 6), "current_period_end",
                     api_json_int(res, row, 7), "pending_tier_id", api_json_text(res, row, 8),
                     "created_at", api_json_int(res, row, 9), "canceled_at",
                     api_json_int(res, row, 10));
}

/* The subscription of a pocket the user owns (any pocket for user_id NULL).
 * Answers 404 itself for an unknown pocket or one without a subscription. */
static void reply_pocket_sub(struct http_request *req, struct db_conn *c, const char *pocket_id,
                             const char *user_id)
{
    struct db_result *res = NULL;
    int64_t owned = 0;
    int rc = db_query_int(c,
                          "SELECT COUNT(*) FROM pockets WHERE id = $1"
                          " AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)",
                          DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(user_id)), &owned);
    if (rc == DB_OK && !owned) {
        http_reply_error(req, 404, "not_found", "no pocket '%s'", pocket_id);
        return;
    }
    if (rc == DB_OK)
        rc = db_query_row(c, "SELECT " SUB_COLS " FROM subscriptions s WHERE s.pocket_id = $1",
                          DB_ARGS(DB_TEXT(pocket_id)), &res);
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "pocket '%s' has no subscription", pocket_id);
    else if (rc)
        api_db_fail(req, c, rc, "read subscription");
    else
        http_reply_json(req, 200, sub_json(res, 0));
    db_result_free(res);
}

static void h_pocket_sub(struct http_request *req)
{
    struct principal who;
    const char *id = http_param(req, "id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!secret_id_valid("pkt_", id))
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", id);
    else
        reply_pocket_sub(req, c, id, who.admin ? NULL : who.user_id);
out:
    db_release(c);
}

struct renewal_change {
    struct http_request *req;
    const struct principal *who;
    const char *pocket_id, *renewal;
};

static int renewal_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct renewal_change *a = arg;
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT s.id FROM subscriptions s JOIN pockets p ON p.id = s.pocket_id"
                          " WHERE s.pocket_id = $1 AND p.user_id = $2",
                          DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->who->user_id)), &res);
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "pocket '%s' has no subscription", a->pocket_id);
    if (rc)
        return rc;
    char id[64];
    snprintf(id, sizeof(id), "%s", db_result_text(res, 0, 0));
    db_result_free(res);
    rc = billing_subscription_renewal(a->req, c, id, a->renewal, api_now(), "user",
                                      a->who->user_id);
    if (rc == BILLING_INVALID_STATE)
        return api_refuse(ref, 409, "invalid_state",
                          "subscription '%s' is canceled: its renewal cannot become %s", id,
                          a->renewal);
    return rc;
}

static void h_pocket_sub_set(struct http_request *req)
{
    static const char *const keys[] = {"renewal", NULL};
    static const char *const modes[] = {"manual", "credit", NULL};
    struct principal who;
    struct renewal_change a = {.req = req, .who = &who, .pocket_id = http_param(req, "id")};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!secret_id_valid("pkt_", a.pocket_id)) {
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", a.pocket_id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) || !http_json_get_string(req, "renewal", 1, 16, &a.renewal))
        goto out;
    if (!one_of(a.renewal, modes)) {
        http_reply_error(req, 400, "invalid_request", "field 'renewal' must be manual or credit");
        goto out;
    }
    if (api_tx_run(req, c, renewal_tx, &a, "set renewal"))
        reply_pocket_sub(req, c, a.pocket_id, who.user_id);
out:
    db_release(c);
}

static void h_admin_subs(struct http_request *req)
{
    static const char *const statuses[] = {"active", "past_due", "canceled", NULL};
    struct principal who;
    struct cursor cur;
    int64_t limit;
    struct db_result *res = NULL;
    const char *status = http_query(req, "status"), *user = http_query(req, "user_id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who) || !page_args(req, "sub_", &limit, &cur))
        goto out;
    if (status && !one_of(status, statuses)) {
        http_reply_error(req, 400, "invalid_request",
                         "'status' must be active, past_due or canceled");
        goto out;
    }
    if (user && !secret_id_valid("usr_", user)) {
        http_reply_error(req, 400, "invalid_request", "'user_id' is not a user id");
        goto out;
    }
    int rc = db_query(c,
                      "SELECT " SUB_COLS " FROM subscriptions s"
                      " WHERE (CAST($1 AS TEXT) IS NULL OR s.user_id = $1)"
                      " AND (CAST($2 AS TEXT) IS NULL OR s.status = $2)"
                      " AND (CAST($3 AS BIGINT) IS NULL OR s.created_at < $3"
                      " OR (s.created_at = $3 AND s.id < $4))"
                      " ORDER BY s.created_at DESC, s.id DESC LIMIT $5",
                      DB_ARGS(DB_TEXT(user), DB_TEXT(status), cur.set ? DB_INT(cur.at) : DB_NULL(),
                              DB_TEXT(cur.set ? cur.id : NULL), DB_INT(limit + 1)),
                      &res);
    if (rc) {
        api_db_fail(req, c, rc, "list subscriptions");
        goto out;
    }
    json_t *items = json_array();
    size_t n = db_result_rows(res), shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(items, sub_json(res, i));
    http_reply_json(req, 200,
                    page_json("subscriptions", items, n > shown,
                              shown ? db_result_int(res, shown - 1, SC_CREATED) : 0,
                              shown ? db_result_text(res, shown - 1, SC_ID) : ""));
out:
    db_result_free(res);
    db_release(c);
}

struct sub_cancel {
    struct http_request *req;
    const struct principal *who;
    const char *id, *reason;
};

static int sub_cancel_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct sub_cancel *a = arg;
    int rc = billing_subscription_cancel(a->req, c, a->id, a->reason, api_now(), "admin",
                                         a->who->user_id);
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "no subscription '%s'", a->id);
    if (rc == BILLING_INVALID_STATE)
        return api_refuse(ref, 409, "invalid_state",
                          "subscription '%s' is canceled: it cannot become canceled again", a->id);
    return rc;
}

static void h_admin_sub_cancel(struct http_request *req)
{
    static const char *const keys[] = {"reason", NULL};
    struct principal who;
    struct sub_cancel a = {.req = req, .who = &who, .id = http_param(req, "id")};
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!secret_id_valid("sub_", a.id)) {
        http_reply_error(req, 404, "not_found", "no subscription '%.64s'", a.id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !http_json_opt_string(req, "reason", 0, REASON_MAX, &a.reason))
        goto out;
    if (a.reason && !text_ok(a.reason, true)) {
        http_reply_error(req, 400, "invalid_request", "field 'reason' holds control characters");
        goto out;
    }
    if (!api_tx_run(req, c, sub_cancel_tx, &a, "cancel subscription"))
        goto out;
    int rc = db_query_row(c, "SELECT " SUB_COLS " FROM subscriptions s WHERE s.id = $1",
                          DB_ARGS(DB_TEXT(a.id)), &res);
    if (rc)
        api_db_fail(req, c, rc, "read subscription");
    else
        http_reply_json(req, 200, sub_json(res, 0));
out:
    db_result_free(res);
    db_release(c);
}

/* ---- Credit */

/* {"balances": [...], "entries": [...], "next_cursor"} of a user. */
static void reply_credits(struct http_request *req, struct db_conn *c, const char *user_id)
{
    struct cursor cur;
    int64_t limit;
    struct db_result *bal = NULL, *res = NULL;
    if (!page_args(req, "crd_", &limit, &cur))
        return;
    int rc = db_begin(c, DB_TX_READ);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT currency, SUM(amount_minor) FROM credit_entries WHERE user_id = $1"
                      " GROUP BY currency ORDER BY currency",
                      DB_ARGS(DB_TEXT(user_id)), &bal);
    if (rc == DB_OK)
        rc = db_query(c,
                      "SELECT id, amount_minor, currency, kind, reason, invoice_id, created_at"
                      " FROM credit_entries WHERE user_id = $1"
                      " AND (CAST($2 AS BIGINT) IS NULL OR created_at < $2"
                      " OR (created_at = $2 AND id < $3))"
                      " ORDER BY created_at DESC, id DESC LIMIT $4",
                      DB_ARGS(DB_TEXT(user_id), cur.set ? DB_INT(cur.at) : DB_NULL(),
                              DB_TEXT(cur.set ? cur.id : NULL), DB_INT(limit + 1)),
                      &res);
    if (rc == DB_OK)
        rc = db_commit(c);
    else
        db_rollback(c);
    if (rc) {
        api_db_fail(req, c, rc, "read credit");
        goto out;
    }
    json_t *balances = json_array(), *entries = json_array();
    for (size_t i = 0; i < db_result_rows(bal); i++)
        json_array_append_new(balances,
                              json_pack("{s:o, s:o}", "currency", api_json_text(bal, i, 0),
                                        "balance_minor", api_json_int(bal, i, 1)));
    size_t n = db_result_rows(res), shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(
                entries,
                json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", api_json_text(res, i, 0),
                          "amount_minor", api_json_int(res, i, 1), "currency",
                          api_json_text(res, i, 2), "kind", api_json_text(res, i, 3), "reason",
                          api_json_text(res, i, 4), "invoice_id", api_json_text(res, i, 5),
                          "created_at", api_json_int(res, i, 6)));
    json_t *body =
            page_json("entries", entries, n > shown, shown ? db_result_int(res, shown - 1, 6) : 0,
                      shown ? db_result_text(res, shown - 1, 0) : "");
    json_object_set_new(body, "balances", balances);
    http_reply_json(req, 200, body);
out:
    db_result_free(bal);
    db_result_free(res);
}

static void h_credits(struct http_request *req)
{
    struct principal who;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (api_user(req, c, &who))
        reply_credits(req, c, who.user_id);
    db_release(c);
}

/* The {id} of an admin user route if it names a user; else answers 404. */
static bool user_exists(struct http_request *req, struct db_conn *c, const char *id)
{
    int64_t n = 0;
    int rc = secret_id_valid("usr_", id)
                     ? db_query_int(c, "SELECT COUNT(*) FROM users WHERE id = $1",
                                    DB_ARGS(DB_TEXT(id)), &n)
                     : DB_OK;
    if (rc) {
        api_db_fail(req, c, rc, "read user");
        return false;
    }
    if (!n)
        http_reply_error(req, 404, "not_found", "no user '%.64s'", id);
    return n != 0;
}

static void h_admin_credits(struct http_request *req)
{
    struct principal who;
    const char *id = http_param(req, "id");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (api_admin(req, c, &who) && user_exists(req, c, id))
        reply_credits(req, c, id);
    db_release(c);
}

struct grant {
    struct http_request *req;
    const struct principal *who;
    const char *user_id, *currency, *reason;
    int64_t amount;
    char id[64];
};

static int grant_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct grant *a = arg;
    int rc = billing_credit_grant(a->req, c, a->user_id, a->amount, a->currency, a->reason,
                                  api_now(), a->who->user_id, a->id);
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "no user '%s'", a->user_id);
    if (rc == BILLING_REFUSED)
        return api_refuse(ref, 409, "conflict",
                          "the balance in %s would exceed %" PRId64 " minor units", a->currency,
                          BILLING_BALANCE_MAX);
    return rc;
}

static void h_admin_grant(struct http_request *req)
{
    static const char *const keys[] = {"amount_minor", "currency", "reason", NULL};
    struct principal who;
    struct grant a = {.req = req, .who = &who, .user_id = http_param(req, "id")};
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!secret_id_valid("usr_", a.user_id)) {
        http_reply_error(req, 404, "not_found", "no user '%.64s'", a.user_id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !http_json_get_int(req, "amount_minor", 1, BILLING_AMOUNT_MAX, &a.amount) ||
        !http_json_get_string(req, "currency", 3, 3, &a.currency) ||
        !http_json_get_string(req, "reason", 1, REASON_MAX, &a.reason))
        goto out;
    if (!currency_ok(a.currency)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'currency' must be 3 upper-case letters (ISO 4217)");
        goto out;
    }
    if (!text_ok(a.reason, true)) {
        http_reply_error(req, 400, "invalid_request", "field 'reason' holds control characters");
        goto out;
    }
    if (!api_tx_run(req, c, grant_tx, &a, "grant credit"))
        goto out;
    int rc = db_query_row(c,
                          "SELECT id, user_id, amount_minor, currency, kind, reason, invoice_id,"
                          " created_at FROM credit_entries WHERE id = $1",
                          DB_ARGS(DB_TEXT(a.id)), &res);
    if (rc)
        api_db_fail(req, c, rc, "read credit entry");
    else
        http_reply_json(req, 201,
                        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                                  api_json_text(res, 0, 0), "user_id", api_json_text(res, 0, 1),
                                  "amount_minor", api_json_int(res, 0, 2), "currency",
                                  api_json_text(res, 0, 3), "kind", api_json_text(res, 0, 4),
                                  "reason", api_json_text(res, 0, 5), "invoice_id",
                                  api_json_text(res, 0, 6), "created_at", api_json_int(res, 0, 7)));
out:
    db_result_free(res);
    db_release(c);
}

/* ---- Creating invoices: a user's credit top-up, an admin's manual invoice */

/* billing.due_days within what an invoice may hold. */
static int64_t default_due_days(struct http_request *req)
{
    int64_t d = api_app(req)->cfg.billing_due_days;
    return d < 0 ? 0 : d > BILLING_DUE_DAYS_MAX ? BILLING_DUE_DAYS_MAX : d;
}

struct new_invoice {
    struct http_request *req;
    const char *actor_type, *actor_id;
    struct billing_new_invoice inv;
    char id[64];
};

static int new_invoice_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct new_invoice *a = arg;
    if (a->inv.pocket_id) {
        int64_t n = 0;
        int rc = db_query_int(c, "SELECT COUNT(*) FROM pockets WHERE id = $1 AND user_id = $2",
                              DB_ARGS(DB_TEXT(a->inv.pocket_id), DB_TEXT(a->inv.user_id)), &n);
        if (rc)
            return rc;
        if (!n)
            return api_refuse(ref, 404, "not_found", "user '%s' has no pocket '%s'", a->inv.user_id,
                              a->inv.pocket_id);
    }
    int rc = billing_invoice_create(a->req, c, &a->inv, api_now(), a->actor_type, a->actor_id,
                                    a->id);
    if (rc == DB_ERR_INVALID)
        return api_refuse(ref, 400, "invalid_request",
                          "the invoice's total must be from 1 to %" PRId64 " minor units",
                          BILLING_AMOUNT_MAX);
    return rc;
}

static void h_top_up(struct http_request *req)
{
    static const char *const keys[] = {"amount_minor", "currency", NULL};
    struct principal who;
    struct billing_line line = {"Prepaid credit", 0};
    struct new_invoice a = {.req = req, .actor_type = "user"};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!http_json_only_keys(req, keys) ||
        !http_json_get_int(req, "amount_minor", 1, BILLING_AMOUNT_MAX, &line.amount_minor) ||
        !http_json_get_string(req, "currency", 3, 3, &a.inv.currency))
        goto out;
    if (!currency_ok(a.inv.currency)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'currency' must be 3 upper-case letters (ISO 4217)");
        goto out;
    }
    a.actor_id = who.user_id;
    a.inv.user_id = who.user_id;
    a.inv.kind = "credit";
    a.inv.lines = &line;
    a.inv.n_lines = 1;
    a.inv.due_days = default_due_days(req);
    a.inv.open = true;
    if (api_tx_run(req, c, new_invoice_tx, &a, "create top-up invoice"))
        reply_invoice(req, c, a.id, NULL, 201);
out:
    db_release(c);
}

/* Read the body's "lines" into lines (BILLING_LINES_MAX). Answers 400 itself. */
static bool read_lines(struct http_request *req, struct billing_line *lines, size_t *n)
{
    static const char *const line_keys[] = {"description", "amount_minor", NULL};
    json_t *arr = json_object_get(http_json(req), "lines");
    if (!json_is_array(arr) || json_array_size(arr) < 1 ||
        json_array_size(arr) > BILLING_LINES_MAX) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'lines' must be an array of 1 to %d lines", BILLING_LINES_MAX);
        return false;
    }
    int64_t total = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *l = json_array_get(arr, i);
        const char *key;
        json_t *v;
        bool ok = json_is_object(l);
        json_object_foreach(ok ? l : NULL, key, v) ok = ok && one_of(key, line_keys);
        json_t *d = ok ? json_object_get(l, "description") : NULL,
               *amt = ok ? json_object_get(l, "amount_minor") : NULL;
        const char *desc = json_string_value(d);
        if (!ok || !desc || strlen(desc) < 1 || strlen(desc) > BILLING_DESC_MAX ||
            !text_ok(desc, false) || !json_is_integer(amt) || json_integer_value(amt) < 0 ||
            json_integer_value(amt) > BILLING_AMOUNT_MAX) {
            http_reply_error(req, 400, "invalid_request",
                             "line %zu must be {\"description\": 1 to %d bytes of text,"
                             " \"amount_minor\": an integer from 0 to %" PRId64 "}",
                             i + 1, BILLING_DESC_MAX, BILLING_AMOUNT_MAX);
            return false;
        }
        lines[i].description = desc;
        lines[i].amount_minor = json_integer_value(amt);
        total += lines[i].amount_minor;
    }
    if (total < 1 || total > BILLING_AMOUNT_MAX) {
        http_reply_error(req, 400, "invalid_request",
                         "the invoice's total must be from 1 to %" PRId64 " minor units",
                         BILLING_AMOUNT_MAX);
        return false;
    }
    *n = json_array_size(arr);
    return true;
}

static void h_admin_invoice_create(struct http_request *req)
{
    static const char *const keys[] = {"user_id", "pocket_id", "currency",
                                       "lines",   "due_days",  NULL};
    struct principal who;
    struct billing_line lines[BILLING_LINES_MAX];
    struct new_invoice a = {.req = req, .actor_type = "admin"};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    a.actor_id = who.user_id;
    a.inv.kind = "manual";
    a.inv.lines = lines;
    a.inv.due_days = default_due_days(req);
    if (!http_json_only_keys(req, keys) ||
        !http_json_get_string(req, "user_id", 1, 64, &a.inv.user_id) ||
        !http_json_opt_string(req, "pocket_id", 1, 64, &a.inv.pocket_id) ||
        !http_json_get_string(req, "currency", 3, 3, &a.inv.currency) ||
        !http_json_opt_int(req, "due_days", 0, BILLING_DUE_DAYS_MAX, &a.inv.due_days) ||
        !read_lines(req, lines, &a.inv.n_lines))
        goto out;
    if (!currency_ok(a.inv.currency)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'currency' must be 3 upper-case letters (ISO 4217)");
        goto out;
    }
    if (a.inv.pocket_id && !secret_id_valid("pkt_", a.inv.pocket_id)) {
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", a.inv.pocket_id);
        goto out;
    }
    if (!user_exists(req, c, a.inv.user_id))
        goto out;
    if (api_tx_run(req, c, new_invoice_tx, &a, "create invoice"))
        reply_invoice(req, c, a.id, NULL, 201);
out:
    db_release(c);
}

/* ---- Admin invoice transitions */

struct inv_action {
    struct http_request *req;
    const struct principal *who;
    const char *id, *to;
    const char *network, *tx_hash, *note;
};

/* 404 for an unknown invoice, 409 invalid_state naming both states. */
static int inv_refusal(struct api_refusal *ref, int rc, const char *id, const char *from,
                       const char *to)
{
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "no invoice '%s'", id);
    if (rc == BILLING_INVALID_STATE)
        return api_refuse(ref, 409, "invalid_state", "invoice '%s' is %s: it cannot become %s", id,
                          from, to);
    if (rc == BILLING_REFUSED) /* a top-up that would pass the balance cap */
        return api_refuse(ref, 409, "conflict",
                          "paying invoice '%s' would take the credit balance past %" PRId64
                          " minor units",
                          id, BILLING_BALANCE_MAX);
    return rc;
}

static int inv_action_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct inv_action *a = arg;
    char from[16] = "";
    int rc = billing_invoice_transition(a->req, c, a->id, a->to, api_now(), "admin",
                                        a->who->user_id, NULL, from);
    return inv_refusal(ref, rc, a->id, from, a->to);
}

static int mark_paid_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct inv_action *a = arg;
    struct billing_invoice inv;
    int rc = billing_invoice_read(c, a->id, &inv);
    if (rc)
        return inv_refusal(ref, rc, a->id, "", "paid");
    json_t *extra = json_pack("{s:s, s:s*}", "network", a->network, "note", a->note);
    rc = billing_invoice_mark_paid_ex(a->req, c, a->id, "crypto", a->tx_hash, inv.total_minor,
                                      inv.currency, api_now(), "admin", a->who->user_id, extra);
    return inv_refusal(ref, rc, a->id, inv.status, "paid");
}

static void inv_action(struct http_request *req, const char *to)
{
    static const char *const none[] = {NULL};
    static const char *const paid_keys[] = {"network", "tx_hash", "note", NULL};
    static const char *const networks[] = {"btc", "eth", "usdc", "other", NULL};
    struct principal who;
    struct inv_action a = {.req = req, .who = &who, .id = http_param(req, "id"), .to = to};
    bool paying = !strcmp(to, "paid");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!secret_id_valid("inv_", a.id)) {
        http_reply_error(req, 404, "not_found", "no invoice '%.64s'", a.id);
        goto out;
    }
    if (!http_json_only_keys(req, paying ? paid_keys : none))
        goto out;
    if (paying) {
        if (!http_json_get_string(req, "network", 1, 8, &a.network) ||
            !http_json_get_string(req, "tx_hash", 1, TX_HASH_MAX, &a.tx_hash) ||
            !http_json_opt_string(req, "note", 0, REASON_MAX, &a.note))
            goto out;
        if (!one_of(a.network, networks)) {
            http_reply_error(req, 400, "invalid_request",
                             "field 'network' must be btc, eth, usdc or other");
            goto out;
        }
        if (!tx_hash_ok(a.network, a.tx_hash)) {
            http_reply_error(req, 400, "invalid_request",
                             "field 'tx_hash' is not a %s transaction hash", a.network);
            goto out;
        }
        if (a.note && !text_ok(a.note, true)) {
            http_reply_error(req, 400, "invalid_request", "field 'note' holds control characters");
            goto out;
        }
    }
    if (api_tx_run(req, c, paying ? mark_paid_tx : inv_action_tx, &a, "change invoice"))
        reply_invoice(req, c, a.id, NULL, 200);
out:
    db_release(c);
}

static void h_admin_finalize(struct http_request *req)
{
    inv_action(req, "open");
}

static void h_admin_mark_paid(struct http_request *req)
{
    inv_action(req, "paid");
}

static void h_admin_void(struct http_request *req)
{
    inv_action(req, "void");
}

static void h_admin_uncollectible(struct http_request *req)
{
    inv_action(req, "uncollectible");
}

/* ---- Routes */

const struct http_route api_billing_routes[] = {
        {"GET", "/v1/invoices", h_invoices, "invoices", 0},
        {"GET", "/v1/invoices/{id}", h_invoice, "invoice", 0},
        {"GET", "/v1/pockets/{id}/subscription", h_pocket_sub, "pocket_subscription", 0},
        {"POST", "/v1/pockets/{id}/subscription", h_pocket_sub_set, "pocket_subscription_set",
         HTTP_JSON},
        {"GET", "/v1/credits", h_credits, "credits", 0},
        {"POST", "/v1/credits/top-up", h_top_up, "credits_top_up", HTTP_JSON},
        {"GET", "/v1/admin/subscriptions", h_admin_subs, "admin_subscriptions", 0},
        {"POST", "/v1/admin/subscriptions/{id}/cancel", h_admin_sub_cancel,
         "admin_subscription_cancel", HTTP_JSON},
        {"GET", "/v1/admin/invoices", h_admin_invoices, "admin_invoices", 0},
        {"POST", "/v1/admin/invoices", h_admin_invoice_create, "admin_invoice_create", HTTP_JSON},
        {"GET", "/v1/admin/invoices/{id}", h_admin_invoice, "admin_invoice", 0},
        {"POST", "/v1/admin/invoices/{id}/finalize", h_admin_finalize, "admin_invoice_finalize",
         HTTP_JSON},
        {"POST", "/v1/admin/invoices/{id}/mark-paid", h_admin_mark_paid, "admin_invoice_mark_paid",
         HTTP_JSON},
        {"POST", "/v1/admin/invoices/{id}/void", h_admin_void, "admin_invoice_void", HTTP_JSON},
        {"POST", "/v1/admin/invoices/{id}/uncollectible", h_admin_uncollectible,
         "admin_invoice_uncollectible", HTTP_JSON},
        {"GET", "/v1/admin/users/{id}/credits", h_admin_credits, "admin_user_credits", 0},
        {"POST", "/v1/admin/users/{id}/credits", h_admin_grant, "admin_user_credit_grant",
         HTTP_JSON},
};

const size_t api_billing_n_routes = sizeof(api_billing_routes) / sizeof(api_billing_routes[0]);
