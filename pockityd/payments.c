/* payments: outbound calls to Stripe, Razorpay and BTCPay Server that start a
 * payment (and ask BTCPay about one), plus money as decimal text. */
#include "payments.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "secret.h"

const char *payments_strerror(int status)
{
    switch (status) {
    case PAYMENTS_OK:
        return "ok";
    case PAYMENTS_ERR_CONFIG:
        return "provider not configured";
    case PAYMENTS_ERR_INVALID:
        return "invalid argument";
    case PAYMENTS_ERR_TRANSPORT:
        return "provider unreachable";
    case PAYMENTS_ERR_PROVIDER:
        return "provider refused the request";
    case PAYMENTS_ERR_RESPONSE:
        return "unexpected provider response";
    case PAYMENTS_ERR_NOMEM:
        return "out of memory";
    default:
        return "unknown payments status";
    }
}

/* ---- money */

bool payments_currency_ok(const char *s)
{
    if (!s || strlen(s) != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return false;
    return true;
}

int payments_currency_exponent(const char *currency)
{
    static const char zero[] = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF";
    static const char three[] = "BHD IQD JOD KWD LYD OMR TND";
    if (!payments_currency_ok(currency))
        return 2;
    for (const char *p = zero; *p; p += p[3] ? 4 : 3)
        if (strncmp(p, currency, 3) == 0)
            return 0;
    for (const char *p = three; *p; p += p[3] ? 4 : 3)
        if (strncmp(p, currency, 3) == 0)
            return 3;
    return 2;
}

static int64_t pow10i(int e)
{
    int64_t v = 1;
    while (e-- > 0)
        v *= 10;
    return v;
}

int payments_amount_format(int64_t amount_minor, const char *currency, char *out, size_t outlen)
{
    if (amount_minor < 0 || !payments_currency_ok(currency))
        return -EINVAL;
    int e = payments_currency_exponent(currency);
    int n;
    if (e == 0) {
        n = snprintf(out, outlen, "%" PRId64, amount_minor);
    } else {
        int64_t unit = pow10i(e);
        n = snprintf(out, outlen, "%" PRId64 ".%0*" PRId64, amount_minor / unit, e,
                     amount_minor % unit);
    }
    return n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
}

int payments_amount_parse(const char *s, const char *currency, int64_t *amount_minor)
{
    if (!s || !payments_currency_ok(currency))
        return -EINVAL;
    int e = payments_currency_exponent(currency);
    int64_t whole = 0, frac = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > (INT64_MAX - 9) / 10)
            return -EINVAL;
        whole = whole * 10 + (*p - '0');
    }
    int digits = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < e)
                frac = frac * 10 + (*p - '0');
            else if (*p != '0')
                return -EINVAL; /* finer than the currency's minor unit */
            if (digits > 64)
                return -EINVAL;
        }
    }
    if (*p)
        return -EINVAL;
    for (int d = digits; d < e; d++)
        frac *= 10;
    int64_t unit = pow10i(e);
    if (whole > (INT64_MAX - frac) / unit)
        return -EINVAL;
    *amount_minor = whole * unit + frac;
    return 0;
}

/* ---- HTTP */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ready = -1;

static void curl_global(void)
{
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct buf *b = arg;
    size_t n = size * nmemb;
    return buf_add(b, ptr, n) == 0 ? n : 0;
}

/* One outbound request. */
struct call {
    const char *provider; /* for messages */
    const char *method;   /* "GET" or "POST" */
    const char *url;
    struct curl_slist *headers;
    const char *body; /* POST only */
    size_t body_len;
    const char *bearer;              /* Authorization: Bearer (Stripe) */
    const char *username, *password; /* basic auth (Razorpay) */
    long status;                     /* out: the HTTP status */
    struct buf response;             /* out: the body, capped */
};

static int call_run(CURL *h, struct call *c, char *err, size_t errlen)
{
    buf_reset(&c->response);
    c->status = 0;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)PAYMENTS_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)PAYMENTS_TIMEOUT_MS);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PAYMENTS_RESPONSE_MAX);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &c->response);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pockityd/" POCKITY_VERSION);
    if (c->headers)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    if (c->bearer) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, c->bearer);
    } else if (c->username) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    if (strcmp(c->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        if (cc == CURLE_WRITE_ERROR || cc == CURLE_FILESIZE_EXCEEDED)
            set_err(err, errlen, "%s: response larger than %d bytes", c->provider,
                    PAYMENTS_RESPONSE_MAX);
        else
            set_err(err, errlen, "%s: %s", c->provider, curl_easy_strerror(cc));
        return PAYMENTS_ERR_TRANSPORT;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    return PAYMENTS_OK;
}

/* The provider's own error text from a JSON error body, sanitised and cut
 * short: Stripe {"error":{"message"}}, Razorpay {"error":{"description"}},
 * BTCPay {"message"} or [{"message"}]. */
static void provider_message(const struct buf *resp, char *out, size_t outlen)
{
    out[0] = '\0';
    json_t *root = resp->data ? json_loadb(resp->data, resp->len, 0, NULL) : NULL;
    if (!root)
        return;
    json_t *e = json_object_get(root, "error");
    const char *msg = NULL;
    if (json_is_object(e))
        msg = json_string_value(json_object_get(e, "message"))
                      ?: json_string_value(json_object_get(e, "description"));
    if (!msg)
        msg = json_string_value(json_object_get(root, "message"));
    if (!msg && json_is_array(root))
        msg = json_string_value(json_object_get(json_array_get(root, 0), "message"));
    if (msg) {
        size_t j = 0;
        for (const char *p = msg; *p && j + 1 < outlen && j < 200; p++)
            out[j++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        out[j] = '\0';
    }
    json_decref(root);
}

/* Run c once (twice when retry is set and the first try failed in a way a
 * retry may fix) and parse a 2xx JSON object answer into *json. */
static int call_json(struct call *c, bool retry, json_t **json, char *err, size_t errlen)
{
    *json = NULL;
    pthread_once(&curl_once, curl_global);
    if (curl_ready != 0) {
        set_err(err, errlen, "%s: libcurl failed to initialise", c->provider);
        return PAYMENTS_ERR_TRANSPORT;
    }
    CURL *h = curl_easy_init();
    if (!h)
        return PAYMENTS_ERR_NOMEM;
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = call_run(h, c, err, errlen);
        bool again = rc == PAYMENTS_ERR_TRANSPORT || (rc == PAYMENTS_OK && c->status >= 500);
        if (!retry || attempt > 0 || !again)
            break;
        log_warn("payments: %s %s failed, retrying once", c->provider, c->method);
    }
    curl_easy_cleanup(h);
    if (rc)
        return rc;
    if (c->status < 200 || c->status > 299) {
        char msg[256];
        provider_message(&c->response, msg, sizeof(msg));
        set_err(err, errlen, "%s answered HTTP %ld%s%s", c->provider, c->status, *msg ? ": " : "",
                msg);
        return PAYMENTS_ERR_PROVIDER;
    }
    json_t *root = c->response.data ? json_loadb(c->response.data, c->response.len, 0, NULL) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        set_err(err, errlen, "%s answered HTTP %ld without a JSON object", c->provider, c->status);
        return PAYMENTS_ERR_RESPONSE;
    }
    *json = root;
    return PAYMENTS_OK;
}

/* Copy a non-empty JSON string of printable characters into dst. */
static bool take(json_t *v, char *dst, size_t cap)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || s[i] == 0x7f)
            return false;
    memcpy(dst, s, n + 1);
    return true;
}

/* base without trailing slashes, then the formatted path. */
static int make_url(struct buf *url, const char *base, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int make_url(struct buf *url, const char *base, const char *fmt, ...)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    int rc = buf_add(url, base, n);
    va_list ap;
    va_start(ap, fmt);
    if (rc == 0)
        rc = buf_vaddf(url, fmt, ap);
    va_end(ap);
    return rc;
}

/* Percent-encode s (everything but unreserved characters). Caller frees. */
static char *escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return NULL;
    char *copy = strdup(e);
    curl_free(e);
    return copy;
}

/* Append "&name=escaped(value)" (no '&' for the first field). */
static int form_add(struct buf *b, const char *name, const char *value)
{
    char *e = escape(value);
    if (!e)
        return -ENOMEM;
    int rc = buf_addf(b, "%s%s=%s", b->len ? "&" : "", name, e);
    free(e);
    return rc;
}

static bool set(const char *s)
{
    return s && *s;
}

bool payments_stripe_ready(const struct config *cfg)
{
    return set(cfg->stripe_api_base) && set(cfg->stripe_secret_key) &&
           set(cfg->stripe_webhook_secret) && set(cfg->public_url);
}

bool payments_razorpay_ready(const struct config *cfg)
{
    return set(cfg->razorpay_api_base) && set(cfg->razorpay_key_id) &&
           set(cfg->razorpay_key_secret) && set(cfg->razorpay_webhook_secret);
}

bool payments_btcpay_ready(const struct config *cfg)
{
    return set(cfg->btcpay_url) && set(cfg->btcpay_api_key) && set(cfg->btcpay_store_id) &&
           set(cfg->btcpay_webhook_secret);
}

static bool args_ok(const char *invoice_id, int64_t amount_minor, const char *currency)
{
    return set(invoice_id) && amount_minor > 0 && payments_currency_ok(currency);
}

/* ---- Stripe */

int payments_stripe_checkout(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                             const char *currency, const char *idempotency_key,
                             struct payments_checkout *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!payments_stripe_ready(cfg))
        return PAYMENTS_ERR_CONFIG;
    if (!args_ok(invoice_id, amount_minor, currency) || !set(idempotency_key))
        return PAYMENTS_ERR_INVALID;
    char lower[4], amount[32], name[128], idem[160];
    for (int i = 0; i < 4; i++)
        lower[i] =
                (char)(currency[i] >= 'A' && currency[i] <= 'Z' ? currency[i] + 32 : currency[i]);
    snprintf(amount, sizeof(amount), "%" PRId64, amount_minor);
    snprintf(name, sizeof(name), "Pockity invoice %s", invoice_id);
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", idempotency_key);
    size_t pub = strlen(cfg->public_url);
    while (pub > 0 && cfg->public_url[pub - 1] == '/')
        pub--;

    int rc = PAYMENTS_ERR_NOMEM;
    struct buf url, form, success, cancel;
    buf_init(&url, 4096);
    buf_init(&form, 16384);
    buf_init(&success, 4096);
    buf_init(&cancel, 4096);
    struct call c = {.provider = "stripe", .method = "POST", .bearer = cfg->stripe_secret_key};
    buf_init(&c.response, PAYMENTS_RESPONSE_MAX);
    json_t *root = NULL;
    if (make_url(&url, cfg->stripe_api_base, "/v1/checkout/sessions") ||
        buf_addf(&success, "%.*s/billing/invoices/%s?payment=success", (int)pub, cfg->public_url,
                 invoice_id) ||
        buf_addf(&cancel, "%.*s/billing/invoices/%s?payment=canceled", (int)pub, cfg->public_url,
                 invoice_id) ||
        form_add(&form, "mode", "payment") ||
        form_add(&form, "line_items[0][price_data][currency]", lower) ||
        form_add(&form, "line_items[0][price_data][unit_amount]", amount) ||
        form_add(&form, "line_items[0][price_data][product_data][name]", name) ||
        form_add(&form, "line_items[0][quantity]", "1") ||
        form_add(&form, "client_reference_id", invoice_id) ||
        form_add(&form, "metadata[invoice_id]", invoice_id) ||
        form_add(&form, "payment_intent_data[metadata][invoice_id]", invoice_id) ||
        form_add(&form, "success_url", success.data) || form_add(&form, "cancel_url", cancel.data))
        goto out;
    c.url = url.data;
    c.body = form.data;
    c.body_len = form.len;
    c.headers = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    if (!c.headers || !curl_slist_append(c.headers, idem))
        goto out;
    rc = call_json(&c, true, &root, err, errlen);
    if (rc)
        goto out;
    if (!take(json_object_get(root, "id"), out->ref, sizeof(out->ref)) ||
        !take(json_object_get(root, "url"), out->url, sizeof(out->url))) {
        set_err(err, errlen, "stripe: the checkout session has no 'id' or 'url'");
        rc = PAYMENTS_ERR_RESPONSE;
    }
out:
    json_decref(root);
    curl_slist_free_all(c.headers);
    buf_release(&c.response);
    buf_release(&url);
    buf_release(&form);
    buf_release(&success);
    buf_release(&cancel);
    return rc;
}

/* ---- Razorpay */

int payments_razorpay_order(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                            const char *currency, struct payments_checkout *out, char *err,
                            size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!payments_razorpay_ready(cfg))
        return PAYMENTS_ERR_CONFIG;
    if (!args_ok(invoice_id, amount_minor, currency))
        return PAYMENTS_ERR_INVALID;
    int rc = PAYMENTS_ERR_NOMEM;
    struct buf url;
    buf_init(&url, 4096);
    struct call c = {.provider = "razorpay",
                     .method = "POST",
                     .username = cfg->razorpay_key_id,
                     .password = cfg->razorpay_key_secret};
    buf_init(&c.response, PAYMENTS_RESPONSE_MAX);
    json_t *root = NULL;
    char *body = NULL;
    json_t *req =
            json_pack("{s:I, s:s, s:s, s:{s:s}}", "amount", (json_int_t)amount_minor, "currency",
                      currency, "receipt", invoice_id, "notes", "invoice_id", invoice_id);
    if (!req || make_url(&url, cfg->razorpay_api_base, "/v1/orders"))
        goto out;
    body = json_dumps(req, JSON_COMPACT);
    c.headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!body || !c.headers)
        goto out;
    c.url = url.data;
    c.body = body;
    c.body_len = strlen(body);
    rc = call_json(&c, false, &root, err, errlen);
    if (rc)
        goto out;
    if (!take(json_object_get(root, "id"), out->ref, sizeof(out->ref))) {
        set_err(err, errlen, "razorpay: the order has no 'id'");
        rc = PAYMENTS_ERR_RESPONSE;
    }
out:
    json_decref(req);
    json_decref(root);
    free(body);
    curl_slist_free_all(c.headers);
    buf_release(&c.response);
    buf_release(&url);
    return rc;
}

/* ---- BTCPay Server */

/* The "Authorization: token KEY" header list (wiping our copy of the line). */
static struct curl_slist *btcpay_headers(const struct config *cfg, bool json_body)
{
    struct buf line;
    buf_init(&line, 4096);
    struct curl_slist *h = NULL;
    if (buf_addf(&line, "Authorization: token %s", cfg->btcpay_api_key) == 0)
        h = curl_slist_append(NULL, line.data);
    if (line.data)
        secret_wipe(line.data, line.len);
    buf_release(&line);
    if (h && json_body) {
        struct curl_slist *more = curl_slist_append(h, "Content-Type: application/json");
        if (!more) {
            curl_slist_free_all(h);
            h = NULL;
        }
    }
    if (h) {
        struct curl_slist *more = curl_slist_append(h, "Accept: application/json");
        if (!more) {
            curl_slist_free_all(h);
            h = NULL;
        }
    }
    return h;
}

int payments_btcpay_invoice(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                            const char *currency, struct payments_checkout *out, char *err,
                            size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!payments_btcpay_ready(cfg))
        return PAYMENTS_ERR_CONFIG;
    char amount[32];
    if (!args_ok(invoice_id, amount_minor, currency) ||
        payments_amount_format(amount_minor, currency, amount, sizeof(amount)) != 0)
        return PAYMENTS_ERR_INVALID;
    int rc = PAYMENTS_ERR_NOMEM;
    struct buf url;
    buf_init(&url, 4096);
    struct call c = {.provider = "btcpay", .method = "POST"};
    buf_init(&c.response, PAYMENTS_RESPONSE_MAX);
    json_t *root = NULL;
    char *body = NULL;
    char *store = escape(cfg->btcpay_store_id);
    json_t *req = json_pack("{s:s, s:s, s:{s:s}}", "amount", amount, "currency", currency,
                            "metadata", "orderId", invoice_id);
    if (!req || !store || make_url(&url, cfg->btcpay_url, "/api/v1/stores/%s/invoices", store))
        goto out;
    body = json_dumps(req, JSON_COMPACT);
    c.headers = btcpay_headers(cfg, true);
    if (!body || !c.headers)
        goto out;
    c.url = url.data;
    c.body = body;
    c.body_len = strlen(body);
    rc = call_json(&c, false, &root, err, errlen);
    if (rc)
        goto out;
    if (!take(json_object_get(root, "id"), out->ref, sizeof(out->ref)) ||
        !take(json_object_get(root, "checkoutLink"), out->url, sizeof(out->url))) {
        set_err(err, errlen, "btcpay: the invoice has no 'id' or 'checkoutLink'");
        rc = PAYMENTS_ERR_RESPONSE;
    }
out:
    json_decref(req);
    json_decref(root);
    free(body);
    free(store);
    curl_slist_free_all(c.headers);
    buf_release(&c.response);
    buf_release(&url);
    return rc;
}

static bool btcpay_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

int payments_btcpay_get(const struct config *cfg, const char *btcpay_invoice_id,
                        struct payments_btcpay_state *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!payments_btcpay_ready(cfg))
        return PAYMENTS_ERR_CONFIG;
    if (!btcpay_id_ok(btcpay_invoice_id))
        return PAYMENTS_ERR_INVALID;
    int rc = PAYMENTS_ERR_NOMEM;
    struct buf url;
    buf_init(&url, 4096);
    struct call c = {.provider = "btcpay", .method = "GET"};
    buf_init(&c.response, PAYMENTS_RESPONSE_MAX);
    json_t *root = NULL;
    char *store = escape(cfg->btcpay_store_id);
    if (!store ||
        make_url(&url, cfg->btcpay_url, "/api/v1/stores/%s/invoices/%s", store, btcpay_invoice_id))
        goto out;
    c.headers = btcpay_headers(cfg, false);
    if (!c.headers)
        goto out;
    c.url = url.data;
    rc = call_json(&c, true, &root, err, errlen);
    if (rc)
        goto out;
    rc = PAYMENTS_ERR_RESPONSE;
    json_t *amount = json_object_get(root, "amount");
    char amount_text[40];
    if (!take(json_object_get(root, "status"), out->status, sizeof(out->status)) ||
        !take(json_object_get(root, "currency"), out->currency, sizeof(out->currency)) ||
        !payments_currency_ok(out->currency)) {
        set_err(err, errlen, "btcpay: the invoice lacks a valid 'status' or 'currency'");
        goto out;
    }
    if (json_is_integer(amount) && json_integer_value(amount) >= 0)
        snprintf(amount_text, sizeof(amount_text), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(amount));
    else if (!take(amount, amount_text, sizeof(amount_text))) {
        set_err(err, errlen, "btcpay: the invoice lacks a valid 'amount'");
        goto out;
    }
    if (payments_amount_parse(amount_text, out->currency, &out->amount_minor) != 0) {
        set_err(err, errlen, "btcpay: the invoice amount '%s' is not a %s amount", amount_text,
                out->currency);
        goto out;
    }
    json_t *order = json_object_get(json_object_get(root, "metadata"), "orderId");
    if (order && !json_is_null(order) && !take(order, out->order_id, sizeof(out->order_id))) {
        set_err(err, errlen, "btcpay: the invoice's metadata.orderId is invalid");
        goto out;
    }
    rc = PAYMENTS_OK;
out:
    json_decref(root);
    free(store);
    curl_slist_free_all(c.headers);
    buf_release(&c.response);
    buf_release(&url);
    return rc;
}
