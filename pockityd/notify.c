/* notify: the outbox that turns audit log rows into mail — claiming rows with
 * a compare-and-set cursor, writing the texts, sending with retries. */
#include "notify.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "jobs.h"
#include "log.h"
#include "mail.h"
#include "metrics.h"
#include "secret.h"

/* Beyond the db statuses: another replica moved the cursor first. */
#define CLAIM_LOST 1000
/* Beyond the db statuses: the message no longer needs sending. */
#define COMPOSE_DROP 1001

/* ---- Claiming audit rows */

enum recipients {
    TO_ADMINS,    /* every active administrator */
    TO_REQUESTER, /* the owner of the tier request (target) */
    TO_OWNER,     /* detail.user_id */
};

static const struct mailed {
    const char *action;
    enum recipients to;
} mailed[] = {
        {"tier_request.create", TO_ADMINS},    {"tier_request.approve", TO_REQUESTER},
        {"tier_request.reject", TO_REQUESTER}, {"invoice.open", TO_OWNER},
        {"subscription.past_due", TO_OWNER},   {"subscription.restore", TO_OWNER},
};

static const struct mailed *mailed_find(const char *action)
{
    for (size_t i = 0; i < sizeof(mailed) / sizeof(mailed[0]); i++)
        if (strcmp(mailed[i].action, action) == 0)
            return &mailed[i];
    return NULL;
}

struct claim {
    struct app *app;
    int64_t now;
    int taken; /* audit rows consumed */
};

static int enqueue(struct db_conn *c, int64_t now, int64_t audit_id, const char *user_id,
                   const char *action, const char *actor_type, const char *target_id,
                   const char *detail)
{
    char id[64];
    api_new_id("mal", id, sizeof(id));
    return db_exec(c,
                   "INSERT INTO mail_outbox (id, audit_id, user_id, action, actor_type, target_id,"
                   " detail, status, attempts, next_attempt_at, claimed_until, created_at)"
                   " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, 0, $8)"
                   " ON CONFLICT (audit_id, user_id) DO NOTHING",
                   DB_ARGS(DB_TEXT(id), DB_INT(audit_id), DB_TEXT(user_id), DB_TEXT(action),
                           DB_TEXT(actor_type), DB_TEXT(target_id), DB_TEXT(detail), DB_INT(now)),
                   NULL);
}

/* The outbox rows of one audit row (columns: id, at, actor_type, action,
 * target_id, detail). Rows that mail nobody are fine. */
static int fan_out(struct db_conn *c, int64_t now, const struct db_result *res, size_t i)
{
    const struct mailed *m = mailed_find(db_result_text(res, i, 3));
    if (!m)
        return DB_OK;
    int64_t audit_id = db_result_int(res, i, 0);
    const char *actor = db_result_text(res, i, 2), *action = db_result_text(res, i, 3);
    const char *target = db_result_text(res, i, 4), *text = db_result_text(res, i, 5);
    json_t *detail = json_loads(text ? text : "{}", 0, NULL);
    struct db_result *to = NULL;
    int rc = DB_OK;
    switch (m->to) {
    case TO_ADMINS:
        /* A tier granted at once needs nobody's decision. */
        if (json_is_true(json_object_get(detail, "automatic")))
            break;
        rc = db_query(c, "SELECT id FROM users WHERE role = 'admin' AND status = 'active'", NULL, 0,
                      &to);
        break;
    case TO_REQUESTER:
        /* Only an administrator's decision: automatic approvals answer the
         * user's own request at once. */
        if (strcmp(actor, "admin") != 0 || !target)
            break;
        rc = db_query(c, "SELECT user_id FROM tier_requests WHERE id = $1",
                      DB_ARGS(DB_TEXT(target)), &to);
        break;
    case TO_OWNER: {
        const char *uid = json_string_value(json_object_get(detail, "user_id"));
        if (!secret_id_valid("usr_", uid)) {
            log_warn("notify: audit row %" PRId64 " (%s) names no user: no mail", audit_id, action);
            break;
        }
        rc = enqueue(c, now, audit_id, uid, action, actor, target, text);
        break;
    }
    }
    for (size_t r = 0; rc == DB_OK && r < db_result_rows(to); r++)
        rc = enqueue(c, now, audit_id, db_result_text(to, r, 0), action, actor, target, text);
    db_result_free(to);
    json_decref(detail);
    return rc;
}

static int claim_tx(struct db_conn *c, void *arg)
{
    struct claim *a = arg;
    struct db_result *res = NULL;
    int64_t old = 0, last = 0;
    a->taken = 0;
    int rc = db_query_int(c, "SELECT last_audit_id FROM mail_cursor WHERE id = 1", NULL, 0, &old);
    if (rc)
        return rc;
    last = old;
    if (!mail_enabled(&a->app->cfg)) {
        /* Nothing to send: follow the log, so that history is not mailed
         * once a server is configured. */
        rc = db_query_int(c, "SELECT COALESCE(MAX(id), 0) FROM audit_log", NULL, 0, &last);
        if (rc)
            return rc;
    } else {
        rc = db_query(c,
                      "SELECT id, at, actor_type, action, target_id, detail FROM audit_log"
                      " WHERE id > $1 ORDER BY id LIMIT $2",
                      DB_ARGS(DB_INT(old), DB_INT(NOTIFY_BATCH)), &res);
        for (size_t i = 0; rc == DB_OK && i < db_result_rows(res); i++) {
            int64_t id = db_result_int(res, i, 0);
            /* A hole may be a transaction that has its id but no commit yet. */
            if (id != last + 1 && db_result_int(res, i, 1) > a->now - NOTIFY_GAP_WAIT)
                break;
            rc = fan_out(c, a->now, res, i);
            if (rc == DB_OK) {
                last = id;
                a->taken++;
            }
        }
        db_result_free(res);
        if (rc)
            return rc;
    }
    if (last == old)
        return DB_OK;
    int64_t changes = 0;
    rc = db_exec(c,
                 "UPDATE mail_cursor SET last_audit_id = $2, updated_at = $3"
                 " WHERE id = 1 AND last_audit_id = $1",
                 DB_ARGS(DB_INT(old), DB_INT(last), DB_INT(a->now)), &changes);
    if (rc == DB_OK && changes != 1)
        return CLAIM_LOST;
    return rc;
}

int notify_claim(struct app *app, int64_t now)
{
    struct claim a = {.app = app, .now = now};
    int rc = db_transact(app->db, claim_tx, &a);
    if (rc == CLAIM_LOST)
        return 0;
    return rc ? -rc : a.taken;
}

/* ---- Writing the texts */

struct text {
    char subject[400];
    struct buf body;
};

/* One value of a one-row query, copied into out ("" when NULL). */
static int query_text(struct db_conn *c, const char *sql, const char *arg, char *out, size_t outlen)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, sql, DB_ARGS(DB_TEXT(arg)), &res);
    if (rc == DB_OK) {
        const char *v = db_result_text(res, 0, 0);
        snprintf(out, outlen, "%s", v ? v : "");
    }
    db_result_free(res);
    return rc;
}

static void tier_words(struct db_conn *c, const char *tier_id, char *out, size_t outlen)
{
    struct db_result *res = NULL;
    snprintf(out, outlen, "'%s'", tier_id ? tier_id : "?");
    if (!tier_id || db_query_row(c, "SELECT name, max_bytes, max_objects FROM tiers WHERE id = $1",
                                 DB_ARGS(DB_TEXT(tier_id)), &res) != DB_OK)
        return;
    double gib = (double)db_result_int(res, 0, 1) / (1024.0 * 1024.0 * 1024.0);
    snprintf(out, outlen, "'%s' (%.4g GiB, %" PRId64 " files)", db_result_text(res, 0, 0), gib,
             db_result_int(res, 0, 2));
    db_result_free(res);
}

/* The tier request of an outbox row: pocket id and name, tiers, reason,
 * comment, status, requester's address. */
struct request_info {
    char pocket_id[64], pocket[128], from[64], to[64], status[16], email[MAIL_ADDRESS_MAX + 1];
    char *reason, *comment;
};

static int request_read(struct db_conn *c, const char *id, struct request_info *r)
{
    struct db_result *res = NULL;
    memset(r, 0, sizeof(*r));
    int rc = db_query_row(c,
                          "SELECT r.pocket_id, p.name, r.from_tier, r.to_tier, r.status, u.email,"
                          " r.reason, r.comment FROM tier_requests r"
                          " JOIN pockets p ON p.id = r.pocket_id JOIN users u ON u.id = r.user_id"
                          " WHERE r.id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc == DB_ERR_NOT_FOUND ? COMPOSE_DROP : rc;
    const char *v;
    snprintf(r->pocket_id, sizeof(r->pocket_id), "%s", db_result_text(res, 0, 0));
    snprintf(r->pocket, sizeof(r->pocket), "%s", db_result_text(res, 0, 1));
    v = db_result_text(res, 0, 2);
    snprintf(r->from, sizeof(r->from), "%s", v ? v : "");
    snprintf(r->to, sizeof(r->to), "%s", db_result_text(res, 0, 3));
    snprintf(r->status, sizeof(r->status), "%s", db_result_text(res, 0, 4));
    snprintf(r->email, sizeof(r->email), "%s", db_result_text(res, 0, 5));
    v = db_result_text(res, 0, 6);
    r->reason = strdup(v ? v : "");
    v = db_result_text(res, 0, 7);
    r->comment = strdup(v ? v : "");
    db_result_free(res);
    return r->reason && r->comment ? DB_OK : DB_ERR_NOMEM;
}

static void request_release(struct request_info *r)
{
    free(r->reason);
    free(r->comment);
}

static int compose_request_new(struct db_conn *c, const char *id, struct text *t)
{
    struct request_info r;
    int rc = request_read(c, id, &r);
    if (rc == DB_OK && strcmp(r.status, "pending") != 0)
        rc = COMPOSE_DROP; /* decided before the mail went: nothing to do */
    if (rc == DB_OK) {
        char to[200];
        tier_words(c, r.to, to, sizeof(to));
        snprintf(t->subject, sizeof(t->subject), "Tier request for pocket '%s' needs a decision",
                 r.pocket);
        buf_addf(&t->body, "%s asks for the tier %s for the pocket '%s' (%s)", r.email, to,
                 r.pocket, r.pocket_id);
        if (r.from[0])
            buf_addf(&t->body, ", now on the tier '%s'", r.from);
        buf_addf(&t->body, ".\n\n");
        if (r.reason[0])
            buf_addf(&t->body, "Their reason:\n%s\n\n", r.reason);
        buf_addf(&t->body,
                 "Approve or reject it:\n"
                 "  pockity-admin requests approve %s [--comment TEXT]\n"
                 "  pockity-admin requests reject %s [--comment TEXT]\n",
                 id, id);
    }
    request_release(&r);
    return rc;
}

static int compose_request_decided(struct db_conn *c, const char *id, bool approved, json_t *detail,
                                   struct text *t)
{
    struct request_info r;
    int rc = request_read(c, id, &r);
    if (rc == DB_OK) {
        char to[200];
        tier_words(c, r.to, to, sizeof(to));
        if (approved) {
            snprintf(t->subject, sizeof(t->subject), "Pocket '%s' now has the tier you asked for",
                     r.pocket);
            buf_addf(&t->body, "Your request for the tier %s for the pocket '%s' was approved.\n",
                     to, r.pocket);
            buf_addf(&t->body, "The new limits apply now; nothing else is needed from you.\n");
        } else {
            const char *moved = json_string_value(json_object_get(detail, "pocket_moved_to"));
            snprintf(t->subject, sizeof(t->subject), "Tier request for pocket '%s' was declined",
                     r.pocket);
            buf_addf(&t->body, "Your request for the tier %s for the pocket '%s' was declined.\n",
                     to, r.pocket);
            if (moved)
                buf_addf(&t->body, "The pocket was opened on the tier '%s' instead.\n", moved);
            else if (r.from[0])
                buf_addf(&t->body, "The pocket stays on the tier '%s'.\n", r.from);
            buf_addf(&t->body, "You may ask for another tier: POST /v1/pockets/%s/tier-requests\n",
                     r.pocket_id);
        }
        if (r.comment[0])
            buf_addf(&t->body, "\nThe administrator's note:\n%s\n", r.comment);
    }
    request_release(&r);
    return rc;
}

static void pocket_name(struct db_conn *c, const char *pocket_id, char *out, size_t outlen)
{
    if (!pocket_id ||
        query_text(c, "SELECT name FROM pockets WHERE id = $1", pocket_id, out, outlen) != DB_OK)
        snprintf(out, outlen, "%s", pocket_id ? pocket_id : "");
}

static int compose_invoice_open(struct db_conn *c, const char *id, struct text *t)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT status, total_minor, currency, due_at, pocket_id, kind"
                          " FROM invoices WHERE id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc == DB_ERR_NOT_FOUND ? COMPOSE_DROP : rc;
    if (strcmp(db_result_text(res, 0, 0), "open") != 0) {
        db_result_free(res); /* paid or voided before the mail went */
        return COMPOSE_DROP;
    }
    char amount[64], due[32] = "", pocket[128] = "";
    mail_format_amount(db_result_int(res, 0, 1), db_result_text(res, 0, 2), amount, sizeof(amount));
    if (!db_result_is_null(res, 0, 3))
        mail_format_time(db_result_int(res, 0, 3), due, sizeof(due));
    if (!db_result_is_null(res, 0, 4))
        pocket_name(c, db_result_text(res, 0, 4), pocket, sizeof(pocket));
    snprintf(t->subject, sizeof(t->subject), "Invoice %s: %s%s%s", id, amount,
             due[0] ? " due " : "", due[0] ? due : "");
    buf_addf(&t->body, "A new invoice is open: %s", id);
    if (pocket[0])
        buf_addf(&t->body, " for the pocket '%s'", pocket);
    buf_addf(&t->body, ".\n\nTotal: %s\n", amount);
    if (due[0])
        buf_addf(&t->body, "Due:   %s\n", due);
    buf_addf(&t->body,
             "\nPlease pay it by the due date%s.\n"
             "See it with GET /v1/invoices/%s and pay it with POST /v1/invoices/%s/pay.\n",
             pocket[0] ? " to keep the pocket writable" : "", id, id);
    db_result_free(res);
    return DB_OK;
}

static int compose_subscription(struct db_conn *c, const char *id, bool past_due, struct text *t)
{
    struct db_result *res = NULL, *inv = NULL;
    int rc = db_query_row(c, "SELECT status, pocket_id FROM subscriptions WHERE id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc == DB_ERR_NOT_FOUND ? COMPOSE_DROP : rc;
    char pocket[128], pocket_id[64];
    snprintf(pocket_id, sizeof(pocket_id), "%s", db_result_text(res, 0, 1));
    bool still = strcmp(db_result_text(res, 0, 0), past_due ? "past_due" : "active") == 0;
    db_result_free(res);
    if (!still)
        return COMPOSE_DROP; /* the news is stale: a later mail says what holds now */
    pocket_name(c, pocket_id, pocket, sizeof(pocket));
    if (!past_due) {
        snprintf(t->subject, sizeof(t->subject), "Pocket '%s' is writable again", pocket);
        buf_addf(&t->body,
                 "Thank you: the payment for the pocket '%s' has arrived and the pocket is "
                 "writable again.\nNothing else is needed from you.\n",
                 pocket);
        return DB_OK;
    }
    snprintf(t->subject, sizeof(t->subject), "Pocket '%s' is read-only: payment overdue", pocket);
    buf_addf(&t->body,
             "The payment for the pocket '%s' is overdue, so the pocket is now read-only:\n"
             "you can still read and delete files, but not add or change them.\n",
             pocket);
    rc = db_query(c,
                  "SELECT id, total_minor, currency, due_at FROM invoices"
                  " WHERE pocket_id = $1 AND status = 'open' ORDER BY due_at, id LIMIT 10",
                  DB_ARGS(DB_TEXT(pocket_id)), &inv);
    if (rc)
        return rc;
    if (db_result_rows(inv))
        buf_addf(&t->body, "\nOpen invoices:\n");
    for (size_t i = 0; i < db_result_rows(inv); i++) {
        char amount[64], due[32] = "";
        mail_format_amount(db_result_int(inv, i, 1), db_result_text(inv, i, 2), amount,
                           sizeof(amount));
        if (!db_result_is_null(inv, i, 3))
            mail_format_time(db_result_int(inv, i, 3), due, sizeof(due));
        buf_addf(&t->body, "  %s  %s%s%s\n", db_result_text(inv, i, 0), amount,
                 due[0] ? "  due " : "", due);
    }
    buf_addf(&t->body,
             "\nPay them (POST /v1/invoices/ID/pay) and the pocket is writable again at once.\n");
    db_result_free(inv);
    return DB_OK;
}

/* The text of one outbox row for its recipient. COMPOSE_DROP when the mail is
 * no longer worth sending. */
static int compose(struct app *app, struct db_conn *c, const char *action, const char *target,
                   const char *detail_text, const char *name, struct text *t)
{
    json_t *detail = json_loads(detail_text ? detail_text : "{}", 0, NULL);
    int rc = COMPOSE_DROP;
    buf_addf(&t->body, "Hello %s,\n\n", name);
    size_t greeting = t->body.len;
    if (!target)
        rc = COMPOSE_DROP;
    else if (!strcmp(action, "tier_request.create"))
        rc = compose_request_new(c, target, t);
    else if (!strcmp(action, "tier_request.approve"))
        rc = compose_request_decided(c, target, true, detail, t);
    else if (!strcmp(action, "tier_request.reject"))
        rc = compose_request_decided(c, target, false, detail, t);
    else if (!strcmp(action, "invoice.open"))
        rc = compose_invoice_open(c, target, t);
    else if (!strcmp(action, "subscription.past_due"))
        rc = compose_subscription(c, target, true, t);
    else if (!strcmp(action, "subscription.restore"))
        rc = compose_subscription(c, target, false, t);
    json_decref(detail);
    if (rc == DB_OK && t->body.len == greeting)
        rc = COMPOSE_DROP;
    if (rc == DB_OK) {
        buf_addf(&t->body, "\n-- \nPockity");
        if (app->cfg.public_url && *app->cfg.public_url)
            buf_addf(&t->body, " · %s", app->cfg.public_url);
        /* The cap is far above any text written here: a failed append is a
         * failed allocation, and the message is tried again later. */
        if (buf_adds(&t->body, "\n") != 0 || !t->body.data)
            rc = DB_ERR_NOMEM;
    }
    return rc;
}

/* ---- Delivering */

/* Seconds to wait after the attempts-th failed attempt: the job's interval,
 * doubling, at most NOTIFY_BACKOFF_MAX. */
static int64_t backoff(const struct app *app, int64_t attempts)
{
    int64_t d = app->cfg.sweep_interval > 0 ? app->cfg.sweep_interval : 60;
    for (int64_t i = 1; i < attempts && d < NOTIFY_BACKOFF_MAX; i++)
        d *= 2;
    return d < NOTIFY_BACKOFF_MAX ? d : NOTIFY_BACKOFF_MAX;
}

/* Record the outcome of a send: sql runs with params on a fresh connection. A
 * failure only means the message may be sent again once its lease ends. */
static void settle(struct app *app, const char *id, const char *sql, const struct db_param *params,
                   size_t n)
{
    struct db_conn *c = db_acquire(app->db);
    int rc = c ? db_exec(c, sql, params, n, NULL) : DB_ERR_BUSY;
    if (rc)
        log_warn("notify: cannot record the outcome of message '%s': %s (it may be sent again)", id,
                 db_strerror(rc));
    db_release(c);
}

/* Lease, write, send and settle one outbox row. Returns 1 when sent, 0 when
 * not (another replica holds it, dropped, failed), or a negative db status. */
static int deliver_one(struct app *app, const char *id)
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return -DB_ERR_BUSY;
    int64_t now = api_now(), changes = 0;
    struct db_result *res = NULL;
    struct text t = {.subject = ""};
    buf_init(&t.body, MAIL_BODY_MAX);
    int result = 0;
    int rc = db_exec(c,
                     "UPDATE mail_outbox SET claimed_until = $2, attempts = attempts + 1"
                     " WHERE id = $1 AND status = 'pending' AND next_attempt_at <= $3"
                     " AND claimed_until <= $3",
                     DB_ARGS(DB_TEXT(id), DB_INT(now + NOTIFY_LEASE), DB_INT(now)), &changes);
    if (rc == DB_OK && changes == 1)
        rc = db_query_row(c,
                          "SELECT o.action, o.target_id, o.detail, o.attempts, u.email, u.name,"
                          " u.status FROM mail_outbox o LEFT JOIN users u ON u.id = o.user_id"
                          " WHERE o.id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc || changes != 1) {
        result = rc ? -rc : 0; /* else another replica has it */
        goto out;
    }
    const char *action = db_result_text(res, 0, 0), *email = db_result_text(res, 0, 4);
    int64_t attempts = db_result_int(res, 0, 3);
    if (!email || strcmp(db_result_text(res, 0, 6), "active") != 0)
        rc = COMPOSE_DROP; /* the user is gone or suspended */
    else
        rc = compose(app, c, action, db_result_text(res, 0, 1), db_result_text(res, 0, 2),
                     db_result_text(res, 0, 5), &t);
    db_release(c); /* no connection is held while the mail server answers */
    c = NULL;
    if (rc == COMPOSE_DROP) {
        settle(app, id,
               "UPDATE mail_outbox SET status = 'dropped', claimed_until = 0,"
               " last_error = 'no longer relevant' WHERE id = $1",
               DB_ARGS(DB_TEXT(id)));
        metrics_counter_add("pockityd_mail_total", "outcome", "dropped", 1);
        goto out;
    }
    char err[256] = "";
    int sent = -EIO;
    if (rc)
        snprintf(err, sizeof(err), "cannot write the message: %s", db_strerror(rc));
    else
        sent = mail_send(&app->cfg, email, t.subject, t.body.data, err, sizeof(err));
    for (char *e = err; *e; e++)
        if ((unsigned char)*e < 0x20 || (unsigned char)*e >= 0x7f)
            *e = '?'; /* server replies go to the database as plain ASCII */
    if (sent == 0) {
        settle(app, id,
               "UPDATE mail_outbox SET status = 'sent', sent_at = $2, claimed_until = 0,"
               " last_error = NULL WHERE id = $1",
               DB_ARGS(DB_TEXT(id), DB_INT(api_now())));
        log_info("notify: sent '%s' mail (message '%s')", action, id);
        metrics_counter_add("pockityd_mail_total", "outcome", "sent", 1);
        result = 1;
    } else if (sent == -EPERM || sent == -EINVAL || attempts >= NOTIFY_MAX_ATTEMPTS) {
        settle(app, id,
               "UPDATE mail_outbox SET status = 'failed', claimed_until = 0, last_error = $2"
               " WHERE id = $1",
               DB_ARGS(DB_TEXT(id), DB_TEXT(err)));
        metrics_counter_add("pockityd_mail_total", "outcome", "failed", 1);
        log_warn("notify: giving up on '%s' mail (message '%s') after %" PRId64 " attempt(s): %s",
                 action, id, attempts, err);
    } else {
        settle(app, id,
               "UPDATE mail_outbox SET next_attempt_at = $2, claimed_until = 0, last_error = $3"
               " WHERE id = $1",
               DB_ARGS(DB_TEXT(id), DB_INT(api_now() + backoff(app, attempts)), DB_TEXT(err)));
        metrics_counter_add("pockityd_mail_total", "outcome", "retry", 1);
        log_warn("notify: cannot send '%s' mail (message '%s', attempt %" PRId64
                 "), will retry: %s",
                 action, id, attempts, err);
    }
out:
    db_result_free(res);
    buf_release(&t.body);
    db_release(c);
    return result;
}

int notify_deliver(struct app *app, int64_t now)
{
    if (!mail_enabled(&app->cfg))
        return 0;
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return -DB_ERR_BUSY;
    struct db_result *due = NULL;
    int rc =
            db_query(c,
                     "SELECT id FROM mail_outbox WHERE status = 'pending' AND next_attempt_at <= $1"
                     " AND claimed_until <= $1 ORDER BY next_attempt_at, id LIMIT $2",
                     DB_ARGS(DB_INT(now), DB_INT(NOTIFY_SEND_BATCH)), &due);
    db_release(c);
    if (rc)
        return -rc;
    int sent = 0;
    for (size_t i = 0; i < db_result_rows(due) && !jobs_stopping(app); i++) {
        int r = deliver_one(app, db_result_text(due, i, 0));
        if (r < 0) {
            sent = r;
            break;
        }
        sent += r;
    }
    db_result_free(due);
    return sent;
}

static void forget_old(struct app *app, int64_t now)
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return;
    int rc = db_exec(c, "DELETE FROM mail_outbox WHERE status <> 'pending' AND created_at < $1",
                     DB_ARGS(DB_INT(now - NOTIFY_KEEP)), NULL);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM email_verifications WHERE expires_at < $1",
                     DB_ARGS(DB_INT(now - 86400)), NULL);
    if (rc)
        log_warn("notify: cannot forget old messages: %s", db_strerror(rc));
    db_release(c);
}

void notify_job(struct app *app, int64_t now)
{
    int n;
    /* Catch up on the log a batch at a time, then send. */
    for (int round = 0; round < 50 && !jobs_stopping(app); round++) {
        n = notify_claim(app, now);
        if (n < 0)
            log_warn("notify: cannot read the audit log: %s", db_strerror(-n));
        if (n < NOTIFY_BATCH)
            break;
    }
    n = notify_deliver(app, now);
    if (n < 0)
        log_warn("notify: cannot send mail: %s", db_strerror(-n));
    forget_old(app, now);
}
