/* webhooks: signature verification (Stripe, Razorpay, BTCPay) over the raw body
 * and the reading of their payment events; pure functions, no I/O. */
#include "webhooks.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"

const char *webhook_strerror(int status)
{
    switch (status) {
    case WEBHOOK_OK:
        return "ok";
    case WEBHOOK_MISSING:
        return "missing signature header";
    case WEBHOOK_MALFORMED:
        return "malformed signature header";
    case WEBHOOK_BAD_SIGNATURE:
        return "signature does not match";
    case WEBHOOK_STALE:
        return "signature timestamp outside the tolerance";
    case WEBHOOK_NO_SECRET:
        return "no webhook secret configured";
    case WEBHOOK_BAD_EVENT:
        return "malformed event";
    default:
        return "unknown webhook status";
    }
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* Copy s[0..n) lower-cased into out (65 bytes) when it is exactly 64 hex
 * digits; false otherwise. */
static bool hex64_lower(const char *s, size_t n, char out[65])
{
    if (n != 64)
        return false;
    for (size_t i = 0; i < 64; i++) {
        if (!is_hex(s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[64] = '\0';
    return true;
}

/* ---- secrets: a comma-separated list, each entry trimmed of blanks */

/* Calls fn for each non-empty secret of the list; returns how many there were. */
typedef void (*secret_fn)(const char *key, size_t keylen, void *arg);

static size_t each_secret(const char *secrets, secret_fn fn, void *arg)
{
    size_t count = 0;
    const char *p = secrets ? secrets : "";
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        if (b > a) {
            fn(a, (size_t)(b - a), arg);
            count++;
        }
        p = *end ? end + 1 : end;
    }
    return count;
}

/* Checks one secret's HMAC of data against every candidate, without
 * stopping at the first match, so timing says nothing about which matched. */
struct hmac_check {
    const void *data;
    size_t len;
    const char (*candidates)[65];
    size_t n;
    bool match;
    bool failed; /* the HMAC itself failed */
};

static void check_secret(const char *key, size_t keylen, void *arg)
{
    struct hmac_check *h = arg;
    uint8_t mac[32];
    char hex[65];
    if (secret_hmac_sha256(key, keylen, h->data, h->len, mac) != 0 ||
        secret_hex_encode(mac, sizeof(mac), hex, sizeof(hex)) != 0) {
        h->failed = true;
        return;
    }
    for (size_t i = 0; i < h->n; i++)
        if (secret_equal(hex, h->candidates[i], 64))
            h->match = true;
    secret_wipe(mac, sizeof(mac));
}

/* WEBHOOK_OK when some secret signs data as one of the candidates. */
static int check_hmac(const char *secrets, const void *data, size_t len,
                      const char (*candidates)[65], size_t n)
{
    struct hmac_check h = {.data = data, .len = len, .candidates = candidates, .n = n};
    size_t count = each_secret(secrets, check_secret, &h);
    if (count == 0)
        return WEBHOOK_NO_SECRET;
    return h.match && !h.failed ? WEBHOOK_OK : WEBHOOK_BAD_SIGNATURE;
}

/* ---- Stripe */

int webhook_stripe_parse_header(const char *header, struct webhook_stripe_header *out)
{
    memset(out, 0, sizeof(*out));
    if (!header)
        return WEBHOOK_MISSING;
    size_t hlen = strlen(header);
    if (hlen > WEBHOOK_HEADER_MAX)
        return WEBHOOK_MALFORMED;
    const char *p = header;
    while (is_blank(*p))
        p++;
    if (!*p)
        return WEBHOOK_MISSING;

    bool have_t = false;
    p = header;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = header + hlen;
        const char *a = p, *b = end;
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        if (a < b) { /* empty entries (",,", a trailing ',') are tolerated */
            const char *eq = memchr(a, '=', (size_t)(b - a));
            if (!eq)
                return WEBHOOK_MALFORMED;
            const char *key_end = eq, *val = eq + 1;
            while (key_end > a && is_blank(key_end[-1]))
                key_end--;
            while (val < b && is_blank(*val))
                val++;
            size_t klen = (size_t)(key_end - a), vlen = (size_t)(b - val);
            if (klen == 1 && a[0] == 't') {
                if (have_t || vlen == 0 || vlen > 18)
                    return WEBHOOK_MALFORMED;
                int64_t t = 0;
                for (size_t i = 0; i < vlen; i++) {
                    if (val[i] < '0' || val[i] > '9')
                        return WEBHOOK_MALFORMED;
                    t = t * 10 + (val[i] - '0');
                }
                if (t <= 0)
                    return WEBHOOK_MALFORMED;
                out->t = t;
                have_t = true;
            } else if (klen == 2 && a[0] == 'v' && a[1] == '1') {
                if (out->n_v1 < WEBHOOK_STRIPE_SIG_MAX &&
                    hex64_lower(val, vlen, out->v1[out->n_v1]))
                    out->n_v1++;
            }
            /* other schemes (v0, ...) are ignored, as Stripe documents */
        }
        if (!*end)
            break;
        p = end + 1;
    }
    if (!have_t)
        return WEBHOOK_MALFORMED;
    if (out->n_v1 == 0)
        return WEBHOOK_BAD_SIGNATURE;
    return WEBHOOK_OK;
}

int webhook_stripe_verify(const char *header, const void *body, size_t len, const char *secrets,
                          int64_t now, int64_t tolerance)
{
    struct webhook_stripe_header h;
    int rc = webhook_stripe_parse_header(header, &h);
    if (rc)
        return rc;
    /* The signed payload is "<t>.<body>". */
    char prefix[24];
    int plen = snprintf(prefix, sizeof(prefix), "%" PRId64 ".", h.t);
    char *signed_payload = malloc((size_t)plen + len + 1);
    if (!signed_payload)
        return WEBHOOK_BAD_SIGNATURE; /* refused, the provider retries */
    memcpy(signed_payload, prefix, (size_t)plen);
    if (len)
        memcpy(signed_payload + plen, body, len);
    rc = check_hmac(secrets, signed_payload, (size_t)plen + len, (const char(*)[65])h.v1, h.n_v1);
    free(signed_payload);
    if (rc)
        return rc;
    int64_t skew = now - h.t;
    if (skew > tolerance || -skew > tolerance)
        return WEBHOOK_STALE;
    return WEBHOOK_OK;
}

/* ---- Razorpay, BTCPay: one hex HMAC of the body */

static int verify_plain(const char *sig, const void *body, size_t len, const char *secrets)
{
    char cand[1][65];
    size_t n = strlen(sig);
    while (n > 0 && is_blank(sig[n - 1]))
        n--;
    while (n > 0 && is_blank(*sig)) {
        sig++;
        n--;
    }
    if (!hex64_lower(sig, n, cand[0]))
        return WEBHOOK_MALFORMED;
    return check_hmac(secrets, body, len, (const char(*)[65])cand, 1);
}

int webhook_razorpay_verify(const char *header, const void *body, size_t len, const char *secrets)
{
    if (!header || !*header)
        return WEBHOOK_MISSING;
    if (strlen(header) > WEBHOOK_HEADER_MAX)
        return WEBHOOK_MALFORMED;
    return verify_plain(header, body, len, secrets);
}

int webhook_btcpay_verify(const char *header, const void *body, size_t len, const char *secrets)
{
    if (!header || !*header)
        return WEBHOOK_MISSING;
    if (strlen(header) > WEBHOOK_HEADER_MAX)
        return WEBHOOK_MALFORMED;
    while (is_blank(*header))
        header++;
    if (strncmp(header, "sha256=", 7) != 0)
        return WEBHOOK_MALFORMED;
    return verify_plain(header + 7, body, len, secrets);
}

/* ---- events */

static int bad_event(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int bad_event(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return WEBHOOK_BAD_EVENT;
}

/* Copy a JSON string into dst (cap bytes); false when v is not a string, is
 * empty, holds a control character or does not fit. */
static bool take_string(json_t *v, char *dst, size_t cap)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    memcpy(dst, s, n + 1);
    return true;
}

/* Three ASCII letters, upper-cased into dst[4]. */
static bool take_currency(json_t *v, char dst[4])
{
    if (!json_is_string(v) || json_string_length(v) != 3)
        return false;
    const char *s = json_string_value(v);
    for (int i = 0; i < 3; i++) {
        if (!isalpha((unsigned char)s[i]) || (unsigned char)s[i] > 0x7f)
            return false;
        dst[i] = (char)toupper((unsigned char)s[i]);
    }
    dst[3] = '\0';
    return true;
}

static json_t *load_object(const void *body, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        bad_event(err, errlen, "the body is not valid JSON");
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        bad_event(err, errlen, "the body is not a JSON object");
        return NULL;
    }
    return root;
}

static void event_init(struct webhook_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->amount_minor = -1;
}

int webhook_stripe_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                         size_t errlen)
{
    event_init(ev);
    json_t *root = load_object(body, len, err, errlen);
    if (!root)
        return WEBHOOK_BAD_EVENT;
    int rc = WEBHOOK_BAD_EVENT;
    if (!take_string(json_object_get(root, "id"), ev->event_id, sizeof(ev->event_id))) {
        bad_event(err, errlen, "field 'id' is missing or invalid");
        goto out;
    }
    if (!take_string(json_object_get(root, "type"), ev->type, sizeof(ev->type))) {
        bad_event(err, errlen, "field 'type' is missing or invalid");
        goto out;
    }
    if (strcmp(ev->type, "checkout.session.completed") != 0 &&
        strcmp(ev->type, "checkout.session.async_payment_succeeded") != 0) {
        rc = WEBHOOK_OK;
        goto out;
    }
    json_t *obj = json_object_get(json_object_get(root, "data"), "object");
    if (!json_is_object(obj)) {
        bad_event(err, errlen, "field 'data.object' is missing");
        goto out;
    }
    json_t *status = json_object_get(obj, "payment_status");
    if (!json_is_string(status) || strcmp(json_string_value(status), "paid") != 0) {
        rc = WEBHOOK_OK; /* e.g. a delayed payment method: its own event follows */
        goto out;
    }
    if (!take_string(json_object_get(obj, "id"), ev->ref, sizeof(ev->ref))) {
        bad_event(err, errlen, "field 'data.object.id' is missing or invalid");
        goto out;
    }
    char from_ref[64] = "", from_meta[64] = "";
    json_t *cri = json_object_get(obj, "client_reference_id");
    json_t *meta = json_object_get(json_object_get(obj, "metadata"), "invoice_id");
    if ((cri && !json_is_null(cri) && !take_string(cri, from_ref, sizeof(from_ref))) ||
        (meta && !json_is_null(meta) && !take_string(meta, from_meta, sizeof(from_meta)))) {
        bad_event(err, errlen, "the session's invoice reference is invalid");
        goto out;
    }
    if (*from_ref && *from_meta && strcmp(from_ref, from_meta) != 0) {
        bad_event(err, errlen,
                  "client_reference_id and metadata.invoice_id name different invoices");
        goto out;
    }
    snprintf(ev->invoice_id, sizeof(ev->invoice_id), "%s", *from_ref ? from_ref : from_meta);
    json_t *amount = json_object_get(obj, "amount_total");
    if (!json_is_integer(amount) || json_integer_value(amount) < 0) {
        bad_event(err, errlen, "field 'data.object.amount_total' is missing or invalid");
        goto out;
    }
    ev->amount_minor = json_integer_value(amount);
    if (!take_currency(json_object_get(obj, "currency"), ev->currency)) {
        bad_event(err, errlen, "field 'data.object.currency' is missing or invalid");
        goto out;
    }
    json_t *pi = json_object_get(obj, "payment_intent");
    if (!take_string(pi, ev->payment_ref, sizeof(ev->payment_ref)))
        snprintf(ev->payment_ref, sizeof(ev->payment_ref), "%s", ev->ref);
    ev->paid = true;
    rc = WEBHOOK_OK;
out:
    json_decref(root);
    return rc;
}

int webhook_razorpay_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                           size_t errlen)
{
    event_init(ev);
    json_t *root = load_object(body, len, err, errlen);
    if (!root)
        return WEBHOOK_BAD_EVENT;
    int rc = WEBHOOK_BAD_EVENT;
    if (!take_string(json_object_get(root, "event"), ev->type, sizeof(ev->type))) {
        bad_event(err, errlen, "field 'event' is missing or invalid");
        goto out;
    }
    json_t *payload = json_object_get(root, "payload");
    json_t *payment = json_object_get(json_object_get(payload, "payment"), "entity");
    char payment_id[128] = "";
    if (payment && !take_string(json_object_get(payment, "id"), payment_id, sizeof(payment_id))) {
        bad_event(err, errlen, "field 'payload.payment.entity.id' is invalid");
        goto out;
    }
    /* The key comes from the signed body only: the X-Razorpay-Event-Id
     * header is not signed, so a replayed body under a fresh header must
     * still be the same event. */
    if (*payment_id) {
        snprintf(ev->event_id, sizeof(ev->event_id), "%s:%s", ev->type, payment_id);
    } else {
        char hex[65];
        if (secret_sha256_hex(body, len, hex) != 0) {
            bad_event(err, errlen, "cannot digest the event");
            goto out;
        }
        snprintf(ev->event_id, sizeof(ev->event_id), "%s:body:%s", ev->type, hex);
    }
    if (strcmp(ev->type, "payment.captured") != 0 && strcmp(ev->type, "order.paid") != 0) {
        rc = WEBHOOK_OK;
        goto out;
    }
    if (!*payment_id) {
        bad_event(err, errlen, "field 'payload.payment.entity' is missing");
        goto out;
    }
    snprintf(ev->payment_ref, sizeof(ev->payment_ref), "%s", payment_id);
    if (!take_string(json_object_get(payment, "order_id"), ev->ref, sizeof(ev->ref))) {
        bad_event(err, errlen, "field 'payload.payment.entity.order_id' is missing or invalid");
        goto out;
    }
    json_t *amount = json_object_get(payment, "amount");
    if (!json_is_integer(amount) || json_integer_value(amount) < 0) {
        bad_event(err, errlen, "field 'payload.payment.entity.amount' is missing or invalid");
        goto out;
    }
    ev->amount_minor = json_integer_value(amount);
    if (!take_currency(json_object_get(payment, "currency"), ev->currency)) {
        bad_event(err, errlen, "field 'payload.payment.entity.currency' is missing or invalid");
        goto out;
    }
    json_t *order = json_object_get(json_object_get(payload, "order"), "entity");
    json_t *receipt = json_object_get(order, "receipt");
    if (receipt && !json_is_null(receipt) &&
        !take_string(receipt, ev->invoice_id, sizeof(ev->invoice_id))) {
        bad_event(err, errlen, "field 'payload.order.entity.receipt' is invalid");
        goto out;
    }
    ev->paid = true;
    rc = WEBHOOK_OK;
out:
    json_decref(root);
    return rc;
}

int webhook_btcpay_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                         size_t errlen)
{
    event_init(ev);
    json_t *root = load_object(body, len, err, errlen);
    if (!root)
        return WEBHOOK_BAD_EVENT;
    int rc = WEBHOOK_BAD_EVENT;
    if (!take_string(json_object_get(root, "type"), ev->type, sizeof(ev->type))) {
        bad_event(err, errlen, "field 'type' is missing or invalid");
        goto out;
    }
    char delivery[64] = "", webhook[64] = "";
    json_t *d = json_object_get(root, "originalDeliveryId");
    if (!take_string(d, delivery, sizeof(delivery)) &&
        !take_string(json_object_get(root, "deliveryId"), delivery, sizeof(delivery))) {
        bad_event(err, errlen, "field 'deliveryId' is missing or invalid");
        goto out;
    }
    if (strcmp(ev->type, "InvoiceSettled") != 0) {
        snprintf(ev->event_id, sizeof(ev->event_id), "%s", delivery);
        rc = WEBHOOK_OK;
        goto out;
    }
    if (!take_string(json_object_get(root, "webhookId"), webhook, sizeof(webhook))) {
        bad_event(err, errlen, "field 'webhookId' is missing or invalid");
        goto out;
    }
    if (!take_string(json_object_get(root, "invoiceId"), ev->ref, sizeof(ev->ref)) ||
        strlen(ev->ref) > 64) {
        bad_event(err, errlen, "field 'invoiceId' is missing or invalid");
        goto out;
    }
    snprintf(ev->payment_ref, sizeof(ev->payment_ref), "%s", ev->ref);
    snprintf(ev->event_id, sizeof(ev->event_id), "%s:%.64s:InvoiceSettled", webhook, ev->ref);
    ev->paid = true;
    rc = WEBHOOK_OK;
out:
    json_decref(root);
    return rc;
}
