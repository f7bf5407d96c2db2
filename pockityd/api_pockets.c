/* api_pockets: tiers, pockets and tier requests — what users create and ask
 * for, and the administrators' side of it (tier catalogue, approvals, suspension). */
#include "api.h"
#include "routes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing.h"
#include "keycache.h"
#include "log.h"
#include "secret.h"
#include "usage.h"

#define POCKETS_PER_USER_MAX 100
#define POCKET_NAME_MAX      64
#define TIER_ID_MAX          32
#define TIER_NAME_MAX        64
#define TEXT_MAX             1000 /* reasons and comments */
#define PAGE_DEFAULT         100
#define PAGE_MAX             1000
#define OFFSET_MAX           1000000000
#define DEFAULT_TIER         "free"

/* ---- Input checks */

/* A pocket name: 1..64 bytes of [A-Za-z0-9._-], and neither "." nor "..". */
static bool pocket_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > POCKET_NAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* A tier id: 1..32 bytes of [a-z0-9-]. */
static bool tier_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > TIER_ID_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

/* An id our own api_new_id() could have made with some prefix: 1..64 bytes of
 * [a-z0-9_]. Anything else cannot name a row, so it is refused before a query. */
static bool any_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* Free text (names, reasons, comments): no control characters except, when
 * multiline, tab and line breaks. UTF-8 validity is the framework's check. */
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

static bool currency_ok(const char *s)
{
    return strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

/* A decimal query argument within min..max; false for anything else. */
static bool parse_count(const char *s, int64_t min, int64_t max, int64_t *out)
{
    size_t n = strlen(s);
    if (n < 1 || n > 10)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ?limit= (1..1000, default 100) and ?offset= (default 0). Answers 400 itself. */
static bool page_args(struct http_request *req, int64_t *limit, int64_t *offset)
{
    const char *l = http_query(req, "limit"), *o = http_query(req, "offset");
    *limit = PAGE_DEFAULT;
    *offset = 0;
    if (l && !parse_count(l, 1, PAGE_MAX, limit)) {
        http_reply_error(req, 400, "invalid_request", "'limit' must be an integer from 1 to %d",
                         PAGE_MAX);
        return false;
    }
    if (o && !parse_count(o, 0, OFFSET_MAX, offset)) {
        http_reply_error(req, 400, "invalid_request", "'offset' must be an integer from 0 to %d",
                         OFFSET_MAX);
        return false;
    }
    return true;
}

/* Wrap a page of items: {"<key>": items, "next_offset": N or null}. The query
 * fetched limit + 1 rows; the extra one only tells that more exist. */
static json_t *page_json(const char *key, json_t *items, int64_t limit, int64_t offset, bool more)
{
    return json_pack("{s:o, s:o}", key, items, "next_offset",
                     more ? json_integer(offset + limit) : json_null());
}

/* ---- Row shapes */

#define TIER_COLS                                                                                  \
    "t.id, t.name, t.max_bytes, t.max_objects, t.price_minor, t.currency,"                         \
    " t.needs_approval, t.active, t.created_at"
enum {
    TC_ID,
    TC_NAME,
    TC_MAX_BYTES,
    TC_MAX_OBJECTS,
    TC_PRICE,
    TC_CURRENCY,
    TC_APPROVAL,
    TC_ACTIVE,
    TC_CREATED,
    TC_N
};

/* The tier whose columns start at col. admin adds active and created_at. */
static json_t *tier_json(const struct db_result *res, size_t row, size_t col, bool admin)
{
    json_t *t = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:b}", "id",
                          api_json_text(res, row, col + TC_ID), "name",
                          api_json_text(res, row, col + TC_NAME), "max_bytes",
                          api_json_int(res, row, col + TC_MAX_BYTES), "max_objects",
                          api_json_int(res, row, col + TC_MAX_OBJECTS), "price_minor",
                          api_json_int(res, row, col + TC_PRICE), "currency",
                          api_json_text(res, row, col + TC_CURRENCY), "needs_approval",
                          (int)db_result_int(res, row, col + TC_APPROVAL));
    if (t && admin) {
        json_object_set_new(t, "active", json_boolean(db_result_int(res, row, col + TC_ACTIVE)));
        json_object_set_new(t, "created_at", api_json_int(res, row, col + TC_CREATED));
    }
    return t;
}

#define POCKET_SELECT                                                                              \
    "SELECT p.id, p.name, p.status, p.prefix, p.used_bytes, p.used_objects, p.reserved_bytes,"     \
    " p.reserved_objects, p.created_at, p.updated_at, p.user_id, u.email, " TIER_COLS ","          \
    " r.id, r.from_tier, r.to_tier, r.reason, r.created_at, p.hold"                                \
    " FROM pockets p JOIN tiers t ON t.id = p.tier_id JOIN users u ON u.id = p.user_id"            \
    " LEFT JOIN tier_requests r ON r.pocket_id = p.id AND r.status = 'pending'"
enum {
    PC_ID,
    PC_NAME,
    PC_STATUS,
    PC_PREFIX,
    PC_USED_BYTES,
    PC_USED_OBJECTS,
    PC_RES_BYTES,
    PC_RES_OBJECTS,
    PC_CREATED,
    PC_UPDATED,
    PC_USER,
    PC_EMAIL,
    PC_TIER,
    PC_REQ_ID = PC_TIER + TC_N,
    PC_REQ_FROM,
    PC_REQ_TO,
    PC_REQ_REASON,
    PC_REQ_CREATED,
    PC_HOLD,
};

static json_t *pocket_json(const struct db_result *res, size_t row, bool admin)
{
    json_t *pending = json_null();
    if (!db_result_is_null(res, row, PC_REQ_ID))
        pending = json_pack("{s:o, s:o, s:o, s:o, s:o}", "id", api_json_text(res, row, PC_REQ_ID),
                            "from_tier", api_json_text(res, row, PC_REQ_FROM), "to_tier",
                            api_json_text(res, row, PC_REQ_TO), "reason",
                            api_json_text(res, row, PC_REQ_REASON), "created_at",
                            api_json_int(res, row, PC_REQ_CREATED));
    json_t *p = json_pack(
            "{s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o}, s:{s:o, s:o}, s:{s:o, s:o}, s:o,"
            " s:o, s:o}",
            "id", api_json_text(res, row, PC_ID), "name", api_json_text(res, row, PC_NAME),
            "user_id", api_json_text(res, row, PC_USER), "status",
            api_json_text(res, row, PC_STATUS), "prefix", api_json_text(res, row, PC_PREFIX),
            "tier", tier_json(res, row, PC_TIER, false), "usage", "bytes",
            api_json_int(res, row, PC_USED_BYTES), "objects",
            api_json_int(res, row, PC_USED_OBJECTS), "reserved", "bytes",
            api_json_int(res, row, PC_RES_BYTES), "objects", api_json_int(res, row, PC_RES_OBJECTS),
            "quota", "max_bytes", api_json_int(res, row, PC_TIER + TC_MAX_BYTES), "max_objects",
            api_json_int(res, row, PC_TIER + TC_MAX_OBJECTS), "pending_request", pending,
            "created_at", api_json_int(res, row, PC_CREATED), "updated_at",
            api_json_int(res, row, PC_UPDATED));
    if (p) {
        int over = db_result_int(res, row, PC_USED_BYTES) >
                           db_result_int(res, row, PC_TIER + TC_MAX_BYTES) ||
                   db_result_int(res, row, PC_USED_OBJECTS) >
                           db_result_int(res, row, PC_TIER + TC_MAX_OBJECTS);
        json_object_set_new(p, "restriction",
                            usage_restriction_json(db_result_text(res, row, PC_HOLD), over));
    }
    if (p && admin)
        json_object_set_new(p, "owner_email", api_json_text(res, row, PC_EMAIL));
    return p;
}

/* One pocket as JSON into *out: the caller's (user_id) or anyone's (user_id
 * NULL). DB_ERR_NOT_FOUND when there is no such pocket for that user. */
static int pocket_load(struct db_conn *c, const char *id, const char *user_id, bool admin,
                       json_t **out)
{
    struct db_result *res = NULL;
    int rc =
            user_id ? db_query_row(c, POCKET_SELECT " WHERE p.id = $1 AND p.user_id = $2",
                                   DB_ARGS(DB_TEXT(id), DB_TEXT(user_id)), &res)
                    : db_query_row(c, POCKET_SELECT " WHERE p.id = $1", DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc;
    *out = pocket_json(res, 0, admin);
    db_result_free(res);
    return *out ? DB_OK : DB_ERR_NOMEM;
}

#define REQUEST_SELECT                                                                             \
    "SELECT r.id, r.pocket_id, p.name, r.user_id, u.email, r.from_tier, r.to_tier, r.reason,"      \
    " r.status, r.decided_by, r.comment, r.created_at, r.decided_at"                               \
    " FROM tier_requests r JOIN pockets p ON p.id = r.pocket_id JOIN users u ON u.id = r.user_id"
enum {
    RC_ID,
    RC_POCKET,
    RC_POCKET_NAME,
    RC_USER,
    RC_EMAIL,
    RC_FROM,
    RC_TO,
    RC_REASON,
    RC_STATUS,
    RC_DECIDED_BY,
    RC_COMMENT,
    RC_CREATED,
    RC_DECIDED,
};

static json_t *request_json(const struct db_result *res, size_t row, bool admin)
{
    json_t *r = json_pack(
            "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
            api_json_text(res, row, RC_ID), "pocket_id", api_json_text(res, row, RC_POCKET),
            "pocket_name", api_json_text(res, row, RC_POCKET_NAME), "user_id",
            api_json_text(res, row, RC_USER), "from_tier", api_json_text(res, row, RC_FROM),
            "to_tier", api_json_text(res, row, RC_TO), "reason", api_json_text(res, row, RC_REASON),
            "status", api_json_text(res, row, RC_STATUS), "decided_by",
            api_json_text(res, row, RC_DECIDED_BY), "comment", api_json_text(res, row, RC_COMMENT),
            "created_at", api_json_int(res, row, RC_CREATED), "decided_at",
            api_json_int(res, row, RC_DECIDED));
    if (r && admin)
        json_object_set_new(r, "user_email", api_json_text(res, row, RC_EMAIL));
    return r;
}

/* Answer 200 with a page of the query's rows, each turned into JSON by
 * row_json(res, row, admin); the query fetched limit + 1 rows. */
static void reply_rows(struct http_request *req, const char *key, const struct db_result *res,
                       int64_t limit, int64_t offset,
                       json_t *(*row_json)(const struct db_result *, size_t, bool), bool admin)
{
    json_t *items = json_array();
    size_t n = db_result_rows(res);
    for (size_t i = 0; i < n && (int64_t)i < limit; i++)
        json_array_append_new(items, row_json(res, i, admin));
    http_reply_json(req, 200, page_json(key, items, limit, offset, (int64_t)n > limit));
}

/* A tier request with its pocket: {...request, "pocket": {...}}. */
static int request_load(struct db_conn *c, const char *id, bool admin, json_t **out)
{
    struct db_result *res = NULL;
    *out = NULL;
    int rc = db_query_row(c, REQUEST_SELECT " WHERE r.id = $1", DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        return rc;
    json_t *r = request_json(res, 0, admin);
    json_t *pocket = NULL;
    rc = r ? pocket_load(c, db_result_text(res, 0, RC_POCKET), NULL, admin, &pocket) : DB_ERR_NOMEM;
    db_result_free(res);
    if (rc) {
        json_decref(r);
        return rc;
    }
    json_object_set_new(r, "pocket", pocket);
    *out = r;
    return DB_OK;
}

/* ---- Shared steps inside transactions */

/* Look up an active tier's limits and approval flag. Refuses 400 when it does
 * not exist or is retired. */
struct tier_info {
    int64_t max_bytes, max_objects;
    bool needs_approval;
};

static int tier_get_active(struct db_conn *c, const char *id, struct tier_info *t,
                           struct api_refusal *ref)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT max_bytes, max_objects, needs_approval FROM tiers"
                          " WHERE id = $1 AND active = 1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 400, "invalid_request", "unknown tier '%s'", id);
    if (rc)
        return rc;
    t->max_bytes = db_result_int(res, 0, 0);
    t->max_objects = db_result_int(res, 0, 1);
    t->needs_approval = db_result_int(res, 0, 2) != 0;
    db_result_free(res);
    return DB_OK;
}

/* Move pocket_id to tier (and a pending pocket to active), but only while what
 * it holds and has reserved fits the tier: one conditional UPDATE, so a
 * concurrent reservation cannot slip past. Refuses 409 otherwise. */
static int pocket_set_tier(struct db_conn *c, const char *pocket_id, const char *tier,
                           const struct tier_info *t, struct api_refusal *ref)
{
    int64_t changes = 0;
    int rc = db_exec(c,
                     "UPDATE pockets SET tier_id = $2, updated_at = $5,"
                     " status = CASE WHEN status = 'pending' THEN 'active' ELSE status END"
                     " WHERE id = $1 AND used_bytes + reserved_bytes <= $3"
                     " AND used_objects + reserved_objects <= $4",
                     DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(tier), DB_INT(t->max_bytes),
                             DB_INT(t->max_objects), DB_INT(api_now())),
                     &changes);
    if (rc)
        return rc;
    if (changes != 1)
        return api_refuse(ref, 409, "conflict",
                          "pocket '%s' holds more than tier '%s' allows: free space first",
                          pocket_id, tier);
    return DB_OK;
}

/* Why billing_tier_change() answers DB_ERR_INVALID: an invoice it would open
 * is out of range (a tier priced above the cap, set before it existed). */
#define BILLING_INVALID_TIER "its price is outside what an invoice may hold"

/* Move pocket_id to tier with its billing: the subscription side first
 * (created, changed or scheduled, see billing.h), then the pocket itself
 * unless the change waits for the period's end (bc->deferred). Refuses 409
 * when billing refuses (a downgrade that does not fit, another currency). */
static int pocket_change_tier(struct http_request *req, struct db_conn *c, const char *pocket_id,
                              const char *tier, const struct tier_info *t, const char *actor_type,
                              const char *actor_id, struct billing_change *bc,
                              struct api_refusal *ref)
{
    int rc = billing_tier_change(req, c, pocket_id, tier, api_now(), actor_type, actor_id, bc);
    if (rc == BILLING_REFUSED)
        return api_refuse(ref, 409, "conflict", "%s", bc->message);
    if (rc == DB_ERR_INVALID)
        return api_refuse(ref, 409, "conflict", "tier '%s' cannot be billed: %s", tier,
                          BILLING_INVALID_TIER);
    if (rc || bc->deferred)
        return rc;
    return pocket_set_tier(c, pocket_id, tier, t, ref);
}

/* What a tier change's audit detail says about its billing. */
static void billing_detail(json_t *detail, const struct billing_change *bc)
{
    if (!detail || !bc->subscription_id[0])
        return;
    json_object_set_new(detail, "subscription_id", json_string(bc->subscription_id));
    json_object_set_new(detail, "effective_at", json_integer(bc->effective_at));
    json_object_set_new(detail, "deferred", json_boolean(bc->deferred));
    if (bc->invoice_id[0])
        json_object_set_new(detail, "invoice_id", json_string(bc->invoice_id));
}

/* After the pending request of a pending pocket was rejected or canceled: put
 * the pocket on the default tier, active, when that tier is offered and the
 * pocket fits; otherwise it stays pending and its owner may ask for another
 * tier. *fallback tells which happened. */
static int pocket_settle(struct db_conn *c, const char *pocket_id, bool *fallback)
{
    *fallback = false;
    int64_t changes = 0;
    int rc = db_exec(c,
                     "UPDATE pockets SET tier_id = t.id, status = 'active', updated_at = $3"
                     " FROM tiers t WHERE pockets.id = $1 AND pockets.status = 'pending'"
                     " AND t.id = $2 AND t.active = 1"
                     " AND pockets.used_bytes + pockets.reserved_bytes <= t.max_bytes"
                     " AND pockets.used_objects + pockets.reserved_objects <= t.max_objects",
                     DB_ARGS(DB_TEXT(pocket_id), DB_TEXT(DEFAULT_TIER), DB_INT(api_now())),
                     &changes);
    if (rc == DB_OK)
        *fallback = changes == 1;
    return rc;
}

/* ---- GET /v1/tiers */

static void h_tiers(struct http_request *req)
{
    int64_t limit, offset;
    struct principal who;
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who) || !page_args(req, &limit, &offset))
        goto out;
    int rc = db_query(c,
                      "SELECT " TIER_COLS " FROM tiers t WHERE t.active = 1"
                      " ORDER BY t.price_minor, t.max_bytes, t.id LIMIT $1 OFFSET $2",
                      DB_ARGS(DB_INT(limit + 1), DB_INT(offset)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "list tiers");
        goto out;
    }
    json_t *items = json_array();
    size_t n = db_result_rows(res);
    for (size_t i = 0; i < n && (int64_t)i < limit; i++)
        json_array_append_new(items, tier_json(res, i, 0, false));
    http_reply_json(req, 200, page_json("tiers", items, limit, offset, (int64_t)n > limit));
out:
    db_result_free(res);
    db_release(c);
}

/* ---- POST /v1/pockets */

struct create_pocket {
    struct http_request *req;
    const struct principal *who;
    const char *name, *tier;
    const char *root;
    char id[64];
    char request_id[64];
};

static int create_pocket_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct create_pocket *a = arg;
    int64_t now = api_now(), count = 0;
    a->request_id[0] = '\0';
    api_new_id("pkt", a->id, sizeof(a->id));

    /* Taking the user's row lock serialises this user's creations on
     * PostgreSQL, so the count below cannot be raced past the cap. */
    int rc = db_exec(c, "UPDATE users SET updated_at = updated_at WHERE id = $1",
                     DB_ARGS(DB_TEXT(a->who->user_id)), NULL);
    if (rc)
        return rc;
    rc = db_query_int(c, "SELECT COUNT(*) FROM pockets WHERE user_id = $1",
                      DB_ARGS(DB_TEXT(a->who->user_id)), &count);
    if (rc)
        return rc;
    if (count >= POCKETS_PER_USER_MAX)
        return api_refuse(ref, 409, "conflict", "pocket limit reached: at most %d pockets per user",
                          POCKETS_PER_USER_MAX);
    rc = db_query_int(c, "SELECT COUNT(*) FROM pockets WHERE user_id = $1 AND name = $2",
                      DB_ARGS(DB_TEXT(a->who->user_id), DB_TEXT(a->name)), &count);
    if (rc)
        return rc;
    if (count)
        return api_refuse(ref, 409, "conflict", "you already have a pocket named '%s'", a->name);
    struct tier_info t;
    rc = tier_get_active(c, a->tier, &t, ref);
    if (rc)
        return rc;

    char prefix[256];
    int len = snprintf(prefix, sizeof(prefix), "%s/%s/", a->root, a->id);
    if (len < 0 || (size_t)len >= sizeof(prefix))
        return DB_ERR_INVALID;
    rc = db_exec(c,
                 "INSERT INTO pockets (id, user_id, name, tier_id, status, prefix, created_at,"
                 " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                 DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->who->user_id), DB_TEXT(a->name),
                         DB_TEXT(a->tier), DB_TEXT(t.needs_approval ? "pending" : "active"),
                         DB_TEXT(prefix), DB_INT(now)),
                 NULL);
    if (rc)
        return rc;
    rc = api_audit(
            a->req, c, "user", a->who->user_id, "pocket.create", "pocket", a->id,
            json_pack("{s:s, s:s, s:s}", "name", a->name, "tier", a->tier, "prefix", prefix));
    if (rc == DB_OK && !t.needs_approval) {
        /* Active at once: a paid tier starts its subscription now. */
        struct billing_change bc;
        rc = billing_tier_change(a->req, c, a->id, a->tier, now, "user", a->who->user_id, &bc);
        if (rc == BILLING_REFUSED)
            rc = api_refuse(ref, 409, "conflict", "%s", bc.message);
        else if (rc == DB_ERR_INVALID)
            rc = api_refuse(ref, 409, "conflict", "tier '%s' cannot be billed: %s", a->tier,
                            BILLING_INVALID_TIER);
    }
    if (rc || !t.needs_approval)
        return rc;

    api_new_id("trq", a->request_id, sizeof(a->request_id));
    rc = db_exec(c,
                 "INSERT INTO tier_requests (id, pocket_id, user_id, from_tier, to_tier, reason,"
                 " status, created_at) VALUES ($1, $2, $3, NULL, $4, '', 'pending', $5)",
                 DB_ARGS(DB_TEXT(a->request_id), DB_TEXT(a->id), DB_TEXT(a->who->user_id),
                         DB_TEXT(a->tier), DB_INT(now)),
                 NULL);
    if (rc)
        return rc;
    return api_audit(
            a->req, c, "user", a->who->user_id, "tier_request.create", "tier_request",
            a->request_id,
            json_pack("{s:s, s:n, s:s}", "pocket_id", a->id, "from_tier", "to_tier", a->tier));
}

/* The S3 root prefix without trailing slashes ("pockets" by default). */
static void root_prefix(struct http_request *req, char *out, size_t outlen)
{
    const char *root = api_app(req)->cfg.s3_root_prefix;
    snprintf(out, outlen, "%s", root && *root ? root : "pockets");
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
}

static void h_pocket_create(struct http_request *req)
{
    static const char *const keys[] = {"name", "tier", NULL};
    struct principal who;
    struct create_pocket a = {.req = req, .who = &who, .tier = DEFAULT_TIER};
    char root[200];
    json_t *body = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!who.verified) {
        http_reply_error(req, 403, "forbidden",
                         "verify your email address before creating a pocket");
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !http_json_get_string(req, "name", 1, POCKET_NAME_MAX, &a.name) ||
        !http_json_opt_string(req, "tier", 1, TIER_ID_MAX, &a.tier))
        goto out;
    if (!pocket_name_ok(a.name)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'name' may hold only letters, digits, '.', '_' and '-'"
                         " (and is not '.' or '..')");
        goto out;
    }
    if (!tier_id_ok(a.tier)) {
        http_reply_error(req, 400, "invalid_request", "unknown tier '%s'", a.tier);
        goto out;
    }
    root_prefix(req, root, sizeof(root));
    a.root = root;
    if (!api_tx_run(req, c, create_pocket_tx, &a, "create pocket"))
        goto out;
    int rc = pocket_load(c, a.id, NULL, false, &body);
    if (rc) {
        api_db_fail(req, c, rc, "read pocket");
        goto out;
    }
    http_reply_json(req, 201, body);
out:
    db_release(c);
}

/* ---- GET /v1/pockets, GET /v1/pockets/{id} */

static void h_pockets(struct http_request *req)
{
    int64_t limit, offset;
    struct principal who;
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who) || !page_args(req, &limit, &offset))
        goto out;
    int rc = db_query(c,
                      POCKET_SELECT " WHERE p.user_id = $1 ORDER BY p.created_at, p.id"
                                    " LIMIT $2 OFFSET $3",
                      DB_ARGS(DB_TEXT(who.user_id), DB_INT(limit + 1), DB_INT(offset)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "list pockets");
        goto out;
    }
    reply_rows(req, "pockets", res, limit, offset, pocket_json, false);
out:
    db_result_free(res);
    db_release(c);
}

static void h_pocket_get(struct http_request *req)
{
    struct principal who;
    const char *id = http_param(req, "id");
    json_t *body = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    int rc = DB_ERR_NOT_FOUND;
    if (secret_id_valid("pkt_", id))
        rc = pocket_load(c, id, who.admin ? NULL : who.user_id, who.admin, &body);
    if (rc == DB_ERR_NOT_FOUND)
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", id);
    else if (rc)
        api_db_fail(req, c, rc, "read pocket");
    else
        http_reply_json(req, 200, body);
out:
    db_release(c);
}

/* ---- POST /v1/pockets/{id}/tier-requests */

struct ask_tier {
    struct http_request *req;
    const struct principal *who;
    const char *pocket_id, *tier, *reason;
    char id[64];
};

static int ask_tier_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct ask_tier *a = arg;
    int64_t now = api_now();
    struct db_result *res = NULL;
    api_new_id("trq", a->id, sizeof(a->id));

    int rc = db_query_row(c,
                          "SELECT tier_id, status, used_bytes, used_objects FROM pockets"
                          " WHERE id = $1 AND user_id = $2",
                          DB_ARGS(DB_TEXT(a->pocket_id), DB_TEXT(a->who->user_id)), &res);
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "no pocket '%s'", a->pocket_id);
    if (rc)
        return rc;
    char from[TIER_ID_MAX + 1], status[16];
    snprintf(from, sizeof(from), "%s", db_result_text(res, 0, 0));
    snprintf(status, sizeof(status), "%s", db_result_text(res, 0, 1));
    int64_t used_bytes = db_result_int(res, 0, 2), used_objects = db_result_int(res, 0, 3);
    db_result_free(res);

    if (!strcmp(status, "deleting"))
        return api_refuse(ref, 409, "conflict", "pocket '%s' is being deleted", a->pocket_id);
    int64_t pending = 0;
    rc = db_query_int(c,
                      "SELECT COUNT(*) FROM tier_requests WHERE pocket_id = $1"
                      " AND status = 'pending'",
                      DB_ARGS(DB_TEXT(a->pocket_id)), &pending);
    if (rc)
        return rc;
    if (pending)
        return api_refuse(ref, 409, "conflict", "a request is already pending for pocket '%s'",
                          a->pocket_id);
    struct tier_info t;
    rc = tier_get_active(c, a->tier, &t, ref);
    if (rc)
        return rc;
    /* A pending pocket (its first request refused) may ask again for its tier. */
    if (!strcmp(from, a->tier) && strcmp(status, "pending") != 0)
        return api_refuse(ref, 409, "conflict", "pocket '%s' is already on tier '%s'", a->pocket_id,
                          a->tier);
    if (used_bytes > t.max_bytes || used_objects > t.max_objects)
        return api_refuse(ref, 409, "conflict",
                          "pocket '%s' holds more than tier '%s' allows: free space first",
                          a->pocket_id, a->tier);

    rc = db_exec(c,
                 "INSERT INTO tier_requests (id, pocket_id, user_id, from_tier, to_tier, reason,"
                 " status, comment, created_at, decided_at)"
                 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                 DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->pocket_id), DB_TEXT(a->who->user_id),
                         DB_TEXT(from), DB_TEXT(a->tier), DB_TEXT(a->reason),
                         DB_TEXT(t.needs_approval ? "pending" : "approved"),
                         DB_TEXT(t.needs_approval ? NULL : "automatic"), DB_INT(now),
                         t.needs_approval ? DB_NULL() : DB_INT(now)),
                 NULL);
    if (rc == DB_ERR_CONSTRAINT) /* the one-pending index, raced */
        return api_refuse(ref, 409, "conflict", "a request is already pending for pocket '%s'",
                          a->pocket_id);
    if (rc)
        return rc;
    rc = api_audit(a->req, c, "user", a->who->user_id, "tier_request.create", "tier_request", a->id,
                   json_pack("{s:s, s:s, s:s, s:b}", "pocket_id", a->pocket_id, "from_tier", from,
                             "to_tier", a->tier, "automatic", !t.needs_approval));
    if (rc || t.needs_approval)
        return rc;
    struct billing_change bc;
    rc = pocket_change_tier(a->req, c, a->pocket_id, a->tier, &t, "system", NULL, &bc, ref);
    if (rc)
        return rc;
    json_t *detail = json_pack("{s:s, s:s, s:s, s:s, s:s}", "pocket_id", a->pocket_id, "user_id",
                               a->who->user_id, "from_tier", from, "to_tier", a->tier, "comment",
                               "automatic");
    billing_detail(detail, &bc);
    return api_audit(a->req, c, "system", NULL, "tier_request.approve", "tier_request", a->id,
                     detail);
}

/* Shared ending of the handlers that change a request: answer with it. */
static void reply_request(struct http_request *req, struct db_conn *c, const char *id, bool admin,
                          int status)
{
    json_t *body = NULL;
    int rc = request_load(c, id, admin, &body);
    if (rc)
        api_db_fail(req, c, rc, "read tier request");
    else
        http_reply_json(req, status, body);
}

static void h_tier_request_create(struct http_request *req)
{
    static const char *const keys[] = {"tier", "reason", NULL};
    struct principal who;
    struct ask_tier a = {.req = req, .who = &who, .pocket_id = http_param(req, "id"), .reason = ""};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!secret_id_valid("pkt_", a.pocket_id)) {
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", a.pocket_id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !http_json_get_string(req, "tier", 1, TIER_ID_MAX, &a.tier) ||
        !http_json_opt_string(req, "reason", 0, TEXT_MAX, &a.reason))
        goto out;
    if (!tier_id_ok(a.tier)) {
        http_reply_error(req, 400, "invalid_request", "unknown tier '%s'", a.tier);
        goto out;
    }
    if (!text_ok(a.reason, true)) {
        http_reply_error(req, 400, "invalid_request", "field 'reason' holds control characters");
        goto out;
    }
    if (api_tx_run(req, c, ask_tier_tx, &a, "request tier"))
        reply_request(req, c, a.id, false, 201);
out:
    db_release(c);
}

/* ---- GET /v1/tier-requests, POST /v1/tier-requests/{id}/cancel */

static void list_requests(struct http_request *req, bool admin)
{
    int64_t limit, offset;
    struct principal who;
    struct db_result *res = NULL;
    const char *status = http_query(req, "status");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!(admin ? api_admin(req, c, &who) : api_user(req, c, &who)) ||
        !page_args(req, &limit, &offset))
        goto out;
    if (status && strcmp(status, "pending") && strcmp(status, "approved") &&
        strcmp(status, "rejected") && strcmp(status, "canceled")) {
        http_reply_error(req, 400, "invalid_request",
                         "'status' must be pending, approved, rejected or canceled");
        goto out;
    }
    /* The admin sees everyone's, a user their own; both may filter by status. */
    int rc = db_query(c,
                      REQUEST_SELECT " WHERE (CAST($1 AS TEXT) IS NULL OR r.user_id = $1)"
                                     " AND (CAST($2 AS TEXT) IS NULL OR r.status = $2)"
                                     " ORDER BY r.created_at DESC, r.id DESC LIMIT $3 OFFSET $4",
                      DB_ARGS(DB_TEXT(admin ? NULL : who.user_id), DB_TEXT(status),
                              DB_INT(limit + 1), DB_INT(offset)),
                      &res);
    if (rc) {
        api_db_fail(req, c, rc, "list tier requests");
        goto out;
    }
    reply_rows(req, "tier_requests", res, limit, offset, request_json, admin);
out:
    db_result_free(res);
    db_release(c);
}

static void h_tier_requests(struct http_request *req)
{
    list_requests(req, false);
}

static void h_admin_tier_requests(struct http_request *req)
{
    list_requests(req, true);
}

/* Deciding a request: approve, reject (admin) or cancel (its owner). */
enum decision {
    APPROVE,
    REJECT,
    CANCEL
};

struct decide {
    struct http_request *req;
    const struct principal *who;
    enum decision what;
    const char *id, *comment;
};

static int decide_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    static const char *const state[] = {"approved", "rejected", "canceled"};
    static const char *const action[] = {"tier_request.approve", "tier_request.reject",
                                         "tier_request.cancel"};
    struct decide *a = arg;
    struct db_result *res = NULL;
    int rc = db_query_row(c,
                          "SELECT r.pocket_id, r.from_tier, r.to_tier, r.status, r.user_id,"
                          " p.status FROM tier_requests r JOIN pockets p ON p.id = r.pocket_id"
                          " WHERE r.id = $1",
                          DB_ARGS(DB_TEXT(a->id)), &res);
    if (rc == DB_OK && a->what == CANCEL && strcmp(db_result_text(res, 0, 4), a->who->user_id)) {
        db_result_free(res);
        rc = DB_ERR_NOT_FOUND; /* someone else's request does not exist for this user */
    }
    if (rc == DB_ERR_NOT_FOUND)
        return api_refuse(ref, 404, "not_found", "no tier request '%s'", a->id);
    if (rc)
        return rc;
    char pocket[64], to[TIER_ID_MAX + 1], status[16], pocket_status[16], owner[64];
    snprintf(pocket, sizeof(pocket), "%s", db_result_text(res, 0, 0));
    snprintf(owner, sizeof(owner), "%s", db_result_text(res, 0, 4));
    json_t *from = api_json_text(res, 0, 1);
    snprintf(to, sizeof(to), "%s", db_result_text(res, 0, 2));
    snprintf(status, sizeof(status), "%s", db_result_text(res, 0, 3));
    snprintf(pocket_status, sizeof(pocket_status), "%s", db_result_text(res, 0, 5));
    db_result_free(res);
    if (strcmp(status, "pending") != 0) {
        json_decref(from);
        return api_refuse(ref, 409, "conflict", "tier request '%s' is already %s", a->id, status);
    }

    /* Only the first decision wins, also against a concurrent one. */
    int64_t changes = 0;
    rc = db_exec(c,
                 "UPDATE tier_requests SET status = $2, decided_by = $3, comment = $4,"
                 " decided_at = $5 WHERE id = $1 AND status = 'pending'",
                 DB_ARGS(DB_TEXT(a->id), DB_TEXT(state[a->what]),
                         DB_TEXT(a->what == CANCEL ? NULL : a->who->user_id), DB_TEXT(a->comment),
                         DB_INT(api_now())),
                 &changes);
    if (rc == DB_OK && changes != 1)
        rc = api_refuse(ref, 409, "conflict", "tier request '%s' was decided meanwhile", a->id);
    struct billing_change bc = {0};
    if (rc == DB_OK && a->what == APPROVE) {
        struct tier_info t;
        rc = tier_get_active(c, to, &t, ref);
        if (rc == API_TX_REFUSED)
            api_refuse(ref, 409, "conflict", "tier '%s' is no longer offered: reject the request",
                       to);
        if (rc == DB_OK)
            rc = pocket_change_tier(a->req, c, pocket, to, &t, "admin", a->who->user_id, &bc, ref);
    }
    bool fallback = false;
    if (rc == DB_OK && a->what != APPROVE && !strcmp(pocket_status, "pending"))
        rc = pocket_settle(c, pocket, &fallback);
    if (rc) {
        json_decref(from);
        return rc;
    }
    json_t *detail = json_pack("{s:s, s:s, s:o, s:s, s:s*}", "pocket_id", pocket, "user_id", owner,
                               "from_tier", from, "to_tier", to, "comment", a->comment);
    if (detail && fallback)
        json_object_set_new(detail, "pocket_moved_to", json_string(DEFAULT_TIER));
    billing_detail(detail, &bc);
    return api_audit(a->req, c, a->what == CANCEL ? "user" : "admin", a->who->user_id,
                     action[a->what], "tier_request", a->id, detail);
}

static void decide(struct http_request *req, enum decision what)
{
    static const char *const keys[] = {"comment", NULL};
    struct principal who;
    struct decide a = {.req = req, .who = &who, .what = what, .id = http_param(req, "id")};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!(what == CANCEL ? api_user(req, c, &who) : api_admin(req, c, &who)))
        goto out;
    if (!secret_id_valid("trq_", a.id)) {
        http_reply_error(req, 404, "not_found", "no tier request '%.64s'", a.id);
        goto out;
    }
    if (what == CANCEL) {
        a.comment = "canceled by the user";
    } else {
        if (!http_json_only_keys(req, keys) ||
            !http_json_opt_string(req, "comment", 0, TEXT_MAX, &a.comment))
            goto out;
        if (a.comment && !text_ok(a.comment, true)) {
            http_reply_error(req, 400, "invalid_request",
                             "field 'comment' holds control characters");
            goto out;
        }
    }
    if (api_tx_run(req, c, decide_tx, &a, "decide tier request"))
        reply_request(req, c, a.id, what != CANCEL, 200);
out:
    db_release(c);
}

static void h_tier_request_cancel(struct http_request *req)
{
    decide(req, CANCEL);
}

static void h_admin_approve(struct http_request *req)
{
    decide(req, APPROVE);
}

static void h_admin_reject(struct http_request *req)
{
    decide(req, REJECT);
}

/* ---- Admin: tiers */

static void h_admin_tiers(struct http_request *req)
{
    int64_t limit, offset;
    struct principal who;
    struct db_result *res = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who) || !page_args(req, &limit, &offset))
        goto out;
    int rc = db_query(c,
                      "SELECT " TIER_COLS ", (SELECT COUNT(*) FROM pockets p"
                      " WHERE p.tier_id = t.id) FROM tiers t"
                      " ORDER BY t.active DESC, t.price_minor, t.max_bytes, t.id"
                      " LIMIT $1 OFFSET $2",
                      DB_ARGS(DB_INT(limit + 1), DB_INT(offset)), &res);
    if (rc) {
        api_db_fail(req, c, rc, "list tiers");
        goto out;
    }
    json_t *items = json_array();
    size_t n = db_result_rows(res);
    for (size_t i = 0; i < n && (int64_t)i < limit; i++) {
        json_t *t = tier_json(res, i, 0, true);
        if (t)
            json_object_set_new(t, "pockets", api_json_int(res, i, TC_N));
        json_array_append_new(items, t);
    }
    http_reply_json(req, 200, page_json("tiers", items, limit, offset, (int64_t)n > limit));
out:
    db_result_free(res);
    db_release(c);
}

/* The fields of a tier in a create or update body; absent ones stay unset. */
struct tier_fields {
    const char *name, *currency;
    int64_t max_bytes, max_objects, price_minor;
    bool needs_approval, active;
};

/* Whether the body has key with a non-null value. */
static bool has_field(struct http_request *req, const char *key)
{
    json_t *v = json_object_get(http_json(req), key);
    return v && !json_is_null(v);
}

/* Read and check the tier fields of the body into f; absent ones keep what
 * the caller put there. *approval_set and *active_set tell whether the two
 * booleans were given. Answers 400 itself. */
static bool tier_fields_read(struct http_request *req, struct tier_fields *f, bool *approval_set,
                             bool *active_set)
{
    *approval_set = has_field(req, "needs_approval");
    *active_set = has_field(req, "active");
    if (!http_json_opt_string(req, "name", 1, TIER_NAME_MAX, &f->name) ||
        !http_json_opt_string(req, "currency", 3, 3, &f->currency) ||
        !http_json_opt_int(req, "max_bytes", 0, INT64_MAX, &f->max_bytes) ||
        !http_json_opt_int(req, "max_objects", 0, INT64_MAX, &f->max_objects) ||
        !http_json_opt_int(req, "price_minor", 0, BILLING_AMOUNT_MAX, &f->price_minor) ||
        !http_json_opt_bool(req, "needs_approval", &f->needs_approval) ||
        !http_json_opt_bool(req, "active", &f->active))
        return false;
    if (f->name && !text_ok(f->name, false)) {
        http_reply_error(req, 400, "invalid_request", "field 'name' holds control characters");
        return false;
    }
    if (f->currency && !currency_ok(f->currency)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'currency' must be 3 upper-case letters (ISO 4217)");
        return false;
    }
    return true;
}

static const char *const tier_keys[] = {"id",          "name",     "max_bytes",      "max_objects",
                                        "price_minor", "currency", "needs_approval", "active",
                                        NULL};

struct tier_change {
    struct http_request *req;
    const struct principal *who;
    const char *id;
    struct tier_fields f;
    bool approval_set, active_set;
};

static int tier_create_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct tier_change *a = arg;
    int64_t exists = 0;
    int rc = db_query_int(c, "SELECT COUNT(*) FROM tiers WHERE id = $1", DB_ARGS(DB_TEXT(a->id)),
                          &exists);
    if (rc)
        return rc;
    if (exists)
        return api_refuse(ref, 409, "conflict", "tier '%s' already exists", a->id);
    rc = db_exec(c,
                 "INSERT INTO tiers (id, name, max_bytes, max_objects, price_minor, currency,"
                 " needs_approval, active, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                 DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->f.name), DB_INT(a->f.max_bytes),
                         DB_INT(a->f.max_objects), DB_INT(a->f.price_minor), DB_TEXT(a->f.currency),
                         DB_INT(a->f.needs_approval), DB_INT(a->f.active), DB_INT(api_now())),
                 NULL);
    if (rc == DB_ERR_CONSTRAINT)
        return api_refuse(ref, 409, "conflict", "tier '%s' already exists", a->id);
    if (rc)
        return rc;
    return api_audit(a->req, c, "admin", a->who->user_id, "tier.create", "tier", a->id,
                     json_pack("{s:s, s:I, s:I, s:I, s:s, s:b, s:b}", "name", a->f.name,
                               "max_bytes", (json_int_t)a->f.max_bytes, "max_objects",
                               (json_int_t)a->f.max_objects, "price_minor",
                               (json_int_t)a->f.price_minor, "currency", a->f.currency,
                               "needs_approval", a->f.needs_approval, "active", a->f.active));
}

static void reply_tier(struct http_request *req, struct db_conn *c, const char *id, int status)
{
    struct db_result *res = NULL;
    int rc = db_query_row(c, "SELECT " TIER_COLS " FROM tiers t WHERE t.id = $1",
                          DB_ARGS(DB_TEXT(id)), &res);
    if (rc)
        api_db_fail(req, c, rc, "read tier");
    else
        http_reply_json(req, status, tier_json(res, 0, 0, true));
    db_result_free(res);
}

static void h_admin_tier_create(struct http_request *req)
{
    struct principal who;
    struct tier_change a = {
            .req = req,
            .who = &who,
            .f = {.currency = "USD", .max_bytes = -1, .max_objects = -1, .active = true}};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!http_json_only_keys(req, tier_keys) ||
        !http_json_get_string(req, "id", 1, TIER_ID_MAX, &a.id) ||
        !tier_fields_read(req, &a.f, &a.approval_set, &a.active_set))
        goto out;
    if (!tier_id_ok(a.id)) {
        http_reply_error(req, 400, "invalid_request",
                         "field 'id' may hold only a-z, 0-9 and '-' (1 to %d bytes)", TIER_ID_MAX);
        goto out;
    }
    const char *missing = !a.f.name             ? "name"
                          : a.f.max_bytes < 0   ? "max_bytes"
                          : a.f.max_objects < 0 ? "max_objects"
                                                : NULL;
    if (missing) {
        http_reply_error(req, 400, "invalid_request", "missing field '%s'", missing);
        goto out;
    }
    if (api_tx_run(req, c, tier_create_tx, &a, "create tier"))
        reply_tier(req, c, a.id, 201);
out:
    db_release(c);
}

static int tier_update_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct tier_change *a = arg;
    struct tier_fields *f = &a->f;
    int64_t changes = 0;
    /* Absent fields bind NULL and keep their column. */
    int rc = db_exec(c,
                     "UPDATE tiers SET name = COALESCE(CAST($2 AS TEXT), name),"
                     " max_bytes = COALESCE(CAST($3 AS BIGINT), max_bytes),"
                     " max_objects = COALESCE(CAST($4 AS BIGINT), max_objects),"
                     " price_minor = COALESCE(CAST($5 AS BIGINT), price_minor),"
                     " currency = COALESCE(CAST($6 AS TEXT), currency),"
                     " needs_approval = COALESCE(CAST($7 AS INTEGER), needs_approval),"
                     " active = COALESCE(CAST($8 AS INTEGER), active) WHERE id = $1",
                     DB_ARGS(DB_TEXT(a->id), DB_TEXT(f->name),
                             f->max_bytes >= 0 ? DB_INT(f->max_bytes) : DB_NULL(),
                             f->max_objects >= 0 ? DB_INT(f->max_objects) : DB_NULL(),
                             f->price_minor >= 0 ? DB_INT(f->price_minor) : DB_NULL(),
                             DB_TEXT(f->currency),
                             a->approval_set ? DB_INT(f->needs_approval) : DB_NULL(),
                             a->active_set ? DB_INT(f->active) : DB_NULL()),
                     &changes);
    if (rc)
        return rc;
    if (changes != 1)
        return api_refuse(ref, 404, "not_found", "no tier '%s'", a->id);
    json_t *detail = json_object();
    if (f->name)
        json_object_set_new(detail, "name", json_string(f->name));
    if (f->currency)
        json_object_set_new(detail, "currency", json_string(f->currency));
    if (f->max_bytes >= 0)
        json_object_set_new(detail, "max_bytes", json_integer(f->max_bytes));
    if (f->max_objects >= 0)
        json_object_set_new(detail, "max_objects", json_integer(f->max_objects));
    if (f->price_minor >= 0)
        json_object_set_new(detail, "price_minor", json_integer(f->price_minor));
    if (a->approval_set)
        json_object_set_new(detail, "needs_approval", json_boolean(f->needs_approval));
    if (a->active_set)
        json_object_set_new(detail, "active", json_boolean(f->active));
    return api_audit(a->req, c, "admin", a->who->user_id, "tier.update", "tier", a->id, detail);
}

static void h_admin_tier_update(struct http_request *req)
{
    static const char *const keys[] = {"name",     "max_bytes",      "max_objects", "price_minor",
                                       "currency", "needs_approval", "active",      NULL};
    struct principal who;
    struct tier_change a = {.req = req,
                            .who = &who,
                            .id = http_param(req, "id"),
                            .f = {.max_bytes = -1, .max_objects = -1, .price_minor = -1}};
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!tier_id_ok(a.id)) {
        http_reply_error(req, 404, "not_found", "no tier '%.64s'", a.id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !tier_fields_read(req, &a.f, &a.approval_set, &a.active_set))
        goto out;
    if (!a.f.name && !a.f.currency && a.f.max_bytes < 0 && a.f.max_objects < 0 &&
        a.f.price_minor < 0 && !a.approval_set && !a.active_set) {
        http_reply_error(req, 400, "invalid_request", "nothing to change: give at least one field");
        goto out;
    }
    if (api_tx_run(req, c, tier_update_tx, &a, "update tier"))
        reply_tier(req, c, a.id, 200);
out:
    db_release(c);
}

/* ---- Admin: pockets */

static void h_admin_pockets(struct http_request *req)
{
    int64_t limit, offset;
    struct principal who;
    struct db_result *res = NULL;
    const char *user = http_query(req, "user"), *status = http_query(req, "status");
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who) || !page_args(req, &limit, &offset))
        goto out;
    if (user && !any_id_ok(user)) {
        http_reply_error(req, 400, "invalid_request", "'user' is not a user id");
        goto out;
    }
    if (status && strcmp(status, "pending") && strcmp(status, "active") &&
        strcmp(status, "suspended") && strcmp(status, "deleting")) {
        http_reply_error(req, 400, "invalid_request",
                         "'status' must be pending, active, suspended or deleting");
        goto out;
    }
    int rc = db_query(c,
                      POCKET_SELECT " WHERE (CAST($1 AS TEXT) IS NULL OR p.user_id = $1)"
                                    " AND (CAST($2 AS TEXT) IS NULL OR p.status = $2)"
                                    " ORDER BY p.created_at DESC, p.id LIMIT $3 OFFSET $4",
                      DB_ARGS(DB_TEXT(user), DB_TEXT(status), DB_INT(limit + 1), DB_INT(offset)),
                      &res);
    if (rc) {
        api_db_fail(req, c, rc, "list pockets");
        goto out;
    }
    reply_rows(req, "pockets", res, limit, offset, pocket_json, true);
out:
    db_result_free(res);
    db_release(c);
}

struct suspend {
    struct http_request *req;
    const struct principal *who;
    const char *id, *reason;
    bool suspend;
};

static int suspend_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct suspend *a = arg;
    const char *from = a->suspend ? "active" : "suspended",
               *to = a->suspend ? "suspended" : "active";
    int64_t changes = 0;
    int rc = db_exec(c,
                     "UPDATE pockets SET status = $3, updated_at = $4 WHERE id = $1"
                     " AND status = $2",
                     DB_ARGS(DB_TEXT(a->id), DB_TEXT(from), DB_TEXT(to), DB_INT(api_now())),
                     &changes);
    if (rc)
        return rc;
    if (changes != 1) {
        struct db_result *res = NULL;
        rc = db_query_row(c, "SELECT status FROM pockets WHERE id = $1", DB_ARGS(DB_TEXT(a->id)),
                          &res);
        if (rc == DB_ERR_NOT_FOUND)
            return api_refuse(ref, 404, "not_found", "no pocket '%s'", a->id);
        if (rc)
            return rc;
        api_refuse(ref, 409, "conflict", "pocket '%s' is %s, not %s", a->id,
                   db_result_text(res, 0, 0), from);
        db_result_free(res);
        return API_TX_REFUSED;
    }
    return api_audit(a->req, c, "admin", a->who->user_id,
                     a->suspend ? "pocket.suspend" : "pocket.unsuspend", "pocket", a->id,
                     json_pack("{s:s*}", "reason", a->reason));
}

static void suspend(struct http_request *req, bool on)
{
    static const char *const keys[] = {"reason", NULL};
    struct principal who;
    struct suspend a = {.req = req, .who = &who, .id = http_param(req, "id"), .suspend = on};
    json_t *body = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_admin(req, c, &who))
        goto out;
    if (!secret_id_valid("pkt_", a.id)) {
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", a.id);
        goto out;
    }
    if (!http_json_only_keys(req, keys) ||
        !http_json_opt_string(req, "reason", 0, TEXT_MAX, &a.reason))
        goto out;
    if (a.reason && !text_ok(a.reason, true)) {
        http_reply_error(req, 400, "invalid_request", "field 'reason' holds control characters");
        goto out;
    }
    if (!api_tx_run(req, c, suspend_tx, &a, on ? "suspend pocket" : "unsuspend pocket"))
        goto out;
    int rc = pocket_load(c, a.id, NULL, true, &body);
    if (rc)
        api_db_fail(req, c, rc, "read pocket");
    else
        http_reply_json(req, 200, body);
out:
    db_release(c);
}

static void h_admin_suspend(struct http_request *req)
{
    suspend(req, true);
}

static void h_admin_unsuspend(struct http_request *req)
{
    suspend(req, false);
}

/* ---- DELETE /v1/pockets/{id}: the owner (or an admin) deletes a pocket. It
 * turns 'deleting' at once — no new session, key or reservation — its keys are
 * revoked, its reservations dropped, its pending tier requests canceled and its
 * subscription ended; reconciliation then empties its prefix and deletes its
 * roles in the background (reconcile.c). */

struct pocket_delete {
    struct http_request *req;
    const struct principal *who;
    const char *id;
};

static int pocket_delete_tx(struct db_conn *c, void *arg, struct api_refusal *ref)
{
    struct pocket_delete *a = arg;
    int64_t now = api_now(), changes = 0;
    int rc = db_exec(
            c,
            "UPDATE pockets SET status = 'deleting', reserved_bytes = 0,"
            " reserved_objects = 0, updated_at = $3 WHERE id = $1"
            " AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) AND status <> 'deleting'",
            DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->who->admin ? NULL : a->who->user_id), DB_INT(now)),
            &changes);
    if (rc)
        return rc;
    if (changes != 1) {
        int64_t n = 0;
        rc = db_query_int(c,
                          "SELECT COUNT(*) FROM pockets WHERE id = $1"
                          " AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)",
                          DB_ARGS(DB_TEXT(a->id), DB_TEXT(a->who->admin ? NULL : a->who->user_id)),
                          &n);
        if (rc)
            return rc;
        return n ? api_refuse(ref, 409, "conflict", "pocket '%s' is already being deleted", a->id)
                 : api_refuse(ref, 404, "not_found", "no pocket '%s'", a->id);
    }
    rc = db_exec(c,
                 "UPDATE api_keys SET revoked_at = $2 WHERE pocket_id = $1 AND revoked_at IS NULL",
                 DB_ARGS(DB_TEXT(a->id), DB_INT(now)), NULL);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM reservations WHERE pocket_id = $1", DB_ARGS(DB_TEXT(a->id)),
                     NULL);
    if (rc == DB_OK)
        rc = db_exec(c,
                     "UPDATE tier_requests SET status = 'canceled', decided_at = $2"
                     " WHERE pocket_id = $1 AND status = 'pending'",
                     DB_ARGS(DB_TEXT(a->id), DB_INT(now)), NULL);
    if (rc)
        return rc;
    struct db_result *res = NULL;
    rc = db_query(c, "SELECT id FROM subscriptions WHERE pocket_id = $1 AND status <> 'canceled'",
                  DB_ARGS(DB_TEXT(a->id)), &res);
    if (rc)
        return rc;
    for (size_t i = 0; rc == DB_OK && i < db_result_rows(res); i++) {
        rc = billing_subscription_cancel(a->req, c, db_result_text(res, i, 0), "pocket deleted",
                                         now, a->who->admin ? "admin" : "user", a->who->user_id);
        if (rc == BILLING_INVALID_STATE)
            rc = DB_OK;
    }
    db_result_free(res);
    if (rc)
        return rc;
    return api_audit(a->req, c, a->who->admin ? "admin" : "user", a->who->user_id, "pocket.delete",
                     "pocket", a->id, NULL);
}

static void h_pocket_delete(struct http_request *req)
{
    struct principal who;
    struct pocket_delete a = {.req = req, .who = &who, .id = http_param(req, "id")};
    json_t *body = NULL;
    struct db_conn *c = api_conn(req);
    if (!c)
        return;
    if (!api_user(req, c, &who))
        goto out;
    if (!secret_id_valid("pkt_", a.id)) {
        http_reply_error(req, 404, "not_found", "no pocket '%.64s'", a.id);
        goto out;
    }
    if (!api_tx_run(req, c, pocket_delete_tx, &a, "delete pocket"))
        goto out;
    keycache_forget(NULL); /* its keys are revoked */
    int rc = pocket_load(c, a.id, who.admin ? NULL : who.user_id, who.admin, &body);
    if (rc)
        api_db_fail(req, c, rc, "read pocket");
    else
        http_reply_json(req, 202, body);
out:
    db_release(c);
}

/* ---- Routes */

const struct http_route api_pockets_routes[] = {
        {"GET", "/v1/tiers", h_tiers, "tiers", 0},
        {"POST", "/v1/pockets", h_pocket_create, "pocket_create", HTTP_JSON},
        {"GET", "/v1/pockets", h_pockets, "pockets", 0},
        {"GET", "/v1/pockets/{id}", h_pocket_get, "pocket", 0},
        {"DELETE", "/v1/pockets/{id}", h_pocket_delete, "pocket_delete", 0},
        {"POST", "/v1/pockets/{id}/tier-requests", h_tier_request_create, "tier_request_create",
         HTTP_JSON},
        {"GET", "/v1/tier-requests", h_tier_requests, "tier_requests", 0},
        {"POST", "/v1/tier-requests/{id}/cancel", h_tier_request_cancel, "tier_request_cancel",
         HTTP_JSON},
        {"GET", "/v1/admin/tier-requests", h_admin_tier_requests, "admin_tier_requests", 0},
        {"POST", "/v1/admin/tier-requests/{id}/approve", h_admin_approve, "admin_tier_approve",
         HTTP_JSON},
        {"POST", "/v1/admin/tier-requests/{id}/reject", h_admin_reject, "admin_tier_reject",
         HTTP_JSON},
        {"GET", "/v1/admin/tiers", h_admin_tiers, "admin_tiers", 0},
        {"POST", "/v1/admin/tiers", h_admin_tier_create, "admin_tier_create", HTTP_JSON},
        {"PATCH", "/v1/admin/tiers/{id}", h_admin_tier_update, "admin_tier_update", HTTP_JSON},
        {"GET", "/v1/admin/pockets", h_admin_pockets, "admin_pockets", 0},
        {"POST", "/v1/admin/pockets/{id}/suspend", h_admin_suspend, "admin_pocket_suspend",
         HTTP_JSON},
        {"POST", "/v1/admin/pockets/{id}/unsuspend", h_admin_unsuspend, "admin_pocket_unsuspend",
         HTTP_JSON},
};

const size_t api_pockets_n_routes = sizeof(api_pockets_routes) / sizeof(api_pockets_routes[0]);
