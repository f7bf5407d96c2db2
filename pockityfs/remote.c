/* remote: the mount's client of pockityd's API — sessions and their renewal,
 * quota reservations, deletions and usage — over libcurl and jansson; the
 * quota allowances are in allowance.c. */
#include "remote.h"

#include "allowance.h"
#include "remote_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "buf.h"
#include "log.h"
#include "s3.h"

#define RESPONSE_MAX         (1 << 20) /* bytes of one answer from pockityd */
#define DEFAULT_TIMEOUT_MS   10000
#define DEFAULT_WRITE_WAIT   30000
#define CONNECT_TIMEOUT_MAX  5000
#define RETRY_FIRST_MS       200  /* first pause of a quota call's retry loop */
#define RETRY_MAX_MS         4000 /* longest pause of a quota call's retry loop */
#define QUOTA_PROBE_MS       3000 /* pause between tries while pockityd is down */
#define RENEW_BACKOFF_FIRST  1    /* seconds: first pause after a failed renewal */
#define RENEW_BACKOFF_MAX    30
#define REFRESH_MIN_INTERVAL 2000  /* ms: a refresh this soon after a fetch is a no-op */
#define EXPIRY_MARGIN        60    /* s: credentials this close to their end may have expired */
#define RENEW_CHECK_MS       30000 /* longest sleep of the renewal thread between clock checks */
#define USAGE_TTL_MS         2000
#define DELETE_BATCH         1000
#define MESSAGE_MAX          300  /* bytes of a server's error message we repeat */
#define ALW_SWEEP_MS         1000 /* how often the renewal thread looks at allowances */

const char *const remote_access_names[] = {"rw", "ro", "read-delete"};

/* ---- small helpers ---- */

static void wipe(void *p, size_t n)
{
    if (p)
        explicit_bzero(p, n);
}

static void free_secret(char *s)
{
    if (s) {
        wipe(s, strlen(s));
        free(s);
    }
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec t = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- connections ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;

static void curl_global(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    (void)h;
    (void)access;
    struct remote *r = arg;
    if (data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&r->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
    (void)h;
    struct remote *r = arg;
    if (data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&r->share_locks[data]);
}

static CURL *handle_get(struct remote *r)
{
    CURL *h = NULL;
    pthread_mutex_lock(&r->pool_lock);
    if (r->n_idle > 0)
        h = r->idle[--r->n_idle];
    pthread_mutex_unlock(&r->pool_lock);
    return h ? h : curl_easy_init();
}

static void handle_put(struct remote *r, CURL *h)
{
    curl_easy_reset(h);
    pthread_mutex_lock(&r->pool_lock);
    if (r->n_idle < POOL_IDLE_MAX) {
        r->idle[r->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&r->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

/* Check server_url and keep scheme://host[:port][/path] without a trailing '/'. */
static int parse_server_url(struct remote *r, const char *server_url, char *err, size_t errlen)
{
    int rc = -EINVAL;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *user = NULL, *query = NULL,
         *fragment = NULL;
    CURLU *u = curl_url();
    if (!u)
        return -ENOMEM;
    if (!server_url || !*server_url || strlen(server_url) > 2048 ||
        curl_url_set(u, CURLUPART_URL, server_url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        seterr(err, errlen,
               "invalid server url '%.200s': expected http://HOST[:PORT] or "
               "https://HOST[:PORT]",
               server_url ? server_url : "");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK) {
        /* Not echoed: a user:password part is a secret. */
        seterr(err, errlen,
               "invalid server url: it may not hold credentials, a query or a "
               "fragment");
        goto out;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    size_t plen = path ? strlen(path) : 0;
    while (plen && path[plen - 1] == '/')
        plen--;
    struct buf b;
    buf_init(&b, 4096);
    if (buf_addf(&b, "%s://%s", scheme, host) || (port && buf_addf(&b, ":%s", port)) ||
        (plen && buf_add(&b, path, plen))) {
        buf_release(&b);
        rc = -ENOMEM;
        goto out;
    }
    r->base_url = buf_detach(&b, NULL);
    rc = r->base_url ? 0 : -ENOMEM;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(user);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(u);
    return rc;
}

/* ---- one HTTP exchange ---- */

struct exchange {
    struct remote *r;
    struct buf body;
    bool too_large;
};

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct exchange *x = arg;
    size_t n = size * nmemb;
    if (buf_add(&x->body, data, n) != 0) {
        x->too_large = true;
        return 0;
    }
    return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct exchange *x = arg;
    return atomic_load(&x->r->stopping) ? 1 : 0;
}

/* What a transport failure means as an errno. */
static int transport_errno(CURL *h, CURLcode cc)
{
    long os_errno = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_COULDNT_CONNECT:
        if (os_errno == EHOSTUNREACH || os_errno == ENETUNREACH)
            return -EHOSTUNREACH;
        if (os_errno == ETIMEDOUT)
            return -ETIMEDOUT;
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return -ECONNRESET;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_ABORTED_BY_CALLBACK:
        return -ECANCELED;
    default:
        return -EPROTO;
    }
}

/* Replace control characters so a server's text stays on one line, and never
 * repeat the API key, whatever the server says. */
static void clean_message(const struct remote *r, char *s)
{
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    if (r->api_key && *r->api_key && strstr(s, r->api_key))
        snprintf(s, MESSAGE_MAX, "(message withheld: it quoted the API key)");
}

/* The message of an error answer {"error":{"code","message"}}, or "". */
static void error_message(const struct remote *r, json_t *body, char msg[MESSAGE_MAX],
                          char code[64])
{
    msg[0] = '\0';
    code[0] = '\0';
    json_t *e = json_is_object(body) ? json_object_get(body, "error") : NULL;
    if (!json_is_object(e))
        return;
    const char *m = json_string_value(json_object_get(e, "message"));
    const char *c = json_string_value(json_object_get(e, "code"));
    if (m)
        snprintf(msg, MESSAGE_MAX, "%s", m);
    if (c)
        snprintf(code, 64, "%s", c);
    clean_message(r, msg);
    clean_message(r, code);
}

/* Send one request. On an HTTP answer returns 0 with *status and *out (the
 * parsed JSON body, or NULL when the body is empty; the caller decrefs).
 * A 2xx answer whose body is not JSON is -EPROTO. Transport failures return
 * a negative errno with err filled. */
int remote_exchange_timeout(struct remote *r, const char *method, const char *path,
                            json_t *req_body, long timeout_ms, long *status, json_t **out,
                            char *err, size_t errlen)
{
    int rc;
    char *url = NULL, *payload = NULL;
    struct curl_slist *headers = NULL, *l;
    struct exchange x = {.r = r};
    buf_init(&x.body, RESPONSE_MAX);
    CURL *h = NULL;
    *status = 0;
    *out = NULL;

    struct buf u;
    buf_init(&u, 8192);
    if (buf_addf(&u, "%s%s", r->base_url, path)) {
        buf_release(&u);
        rc = -ENOMEM;
        goto out;
    }
    url = buf_detach(&u, NULL);
    if (req_body && !(payload = json_dumps(req_body, JSON_COMPACT))) {
        rc = -ENOMEM;
        goto out;
    }
    rc = -ENOMEM;
    if (!url || !(l = curl_slist_append(headers, r->auth_header)) || !(headers = l) ||
        !(l = curl_slist_append(headers, "Accept: application/json")) || !(headers = l) ||
        !(l = curl_slist_append(headers, "Expect:")) || !(headers = l))
        goto out;
    if (payload &&
        (!(l = curl_slist_append(headers, "Content-Type: application/json")) || !(headers = l)))
        goto out;
    if (!(h = handle_get(r)))
        goto out;

    long connect_ms = timeout_ms < CONNECT_TIMEOUT_MAX ? timeout_ms : CONNECT_TIMEOUT_MAX;
    curl_easy_setopt(h, CURLOPT_SHARE, r->share);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pockityfs/" POCKITY_VERSION);
    if (r->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, r->ca_file);
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);

    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        if (x.too_large) {
            seterr(err, errlen, "pockityd at '%s' sent an answer larger than %d bytes", r->base_url,
                   RESPONSE_MAX);
            rc = -EPROTO;
        } else {
            rc = transport_errno(h, cc);
            curl_off_t connected = 0;
            curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connected);
            if (cc == CURLE_OPERATION_TIMEDOUT && connected > 0)
                seterr(err, errlen, "pockityd at '%s' did not answer within %.1f s", r->base_url,
                       timeout_ms / 1000.0);
            else
                seterr(err, errlen, "cannot reach pockityd at '%s': %s", r->base_url,
                       curl_easy_strerror(cc));
        }
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    if (x.body.len) {
        json_error_t jerr;
        *out = json_loadb(x.body.data, x.body.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!*out && *status >= 200 && *status < 300) {
            seterr(err, errlen, "pockityd at '%s' sent an answer that is not json (http %ld)",
                   r->base_url, *status);
            rc = -EPROTO;
            goto out;
        }
    }
    rc = 0;
out:
    if (h)
        handle_put(r, h);
    /* curl copied the Authorization line into the list: wipe that copy too. */
    for (struct curl_slist *p = headers; p; p = p->next)
        wipe(p->data, strlen(p->data));
    curl_slist_free_all(headers);
    free(url);
    free(payload);
    buf_release(&x.body);
    return rc;
}

static int exchange(struct remote *r, const char *method, const char *path, json_t *req_body,
                    long *status, json_t **out, char *err, size_t errlen)
{
    return remote_exchange_timeout(r, method, path, req_body, r->timeout_ms, status, out, err,
                                   errlen);
}

/* ---- validating what pockityd sends ---- */

/* A string member of obj, 1..max bytes (min 0 allows ""). NULL when absent or wrong. */
const char *remote_get_str(json_t *obj, const char *name, size_t min, size_t max)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, name) : NULL;
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n < min || n > max || strlen(s) != n)
        return NULL;
    return s;
}

bool remote_get_u64(json_t *obj, const char *name, uint64_t *out)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, name) : NULL;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* The quota, usage and reserved totals pockityd adds to its answers. */
static bool parse_totals(json_t *body, struct remote_usage *u, bool need_reserved)
{
    json_t *q = json_object_get(body, "quota"), *us = json_object_get(body, "usage");
    json_t *rs = json_object_get(body, "reserved");
    memset(u, 0, sizeof(*u));
    if (!remote_get_u64(q, "max_bytes", &u->max_bytes) ||
        !remote_get_u64(q, "max_objects", &u->max_objects) ||
        !remote_get_u64(us, "bytes", &u->used_bytes) ||
        !remote_get_u64(us, "objects", &u->used_objects))
        return false;
    if (rs || need_reserved)
        return remote_get_u64(rs, "bytes", &u->reserved_bytes) &&
               remote_get_u64(rs, "objects", &u->reserved_objects);
    return true;
}

/* Remember the "restriction" member of an answer carrying the totals
 * (null, or {"code": "over_quota" | "past_due" | ...}); absent: no change. */
static void restriction_from(struct remote *r, json_t *body)
{
    json_t *v = json_is_object(body) ? json_object_get(body, "restriction") : NULL;
    if (!v)
        return;
    int x = RESTRICT_NONE;
    if (json_is_object(v)) {
        const char *code = json_string_value(json_object_get(v, "code"));
        x = code && !strcmp(code, "over_quota") ? RESTRICT_OVER_QUOTA : RESTRICT_HELD;
    }
    int old = atomic_exchange(&r->restriction, x);
    if (old != x && x != RESTRICT_NONE)
        log_warn("the pocket is read-only: %s", x == RESTRICT_OVER_QUOTA
                                                        ? "it holds more than its quota allows"
                                                        : "payment is past due or it is on hold");
    else if (old != x)
        log_info("the pocket is writable again");
}

static const char *access_static(const char *s)
{
    for (size_t i = 0; i < sizeof(remote_access_names) / sizeof(remote_access_names[0]); i++)
        if (!strcmp(s, remote_access_names[i]))
            return remote_access_names[i];
    return NULL;
}

/* Copy a UTF-8 string into dst, cut at a character boundary when too long. */
static void copy_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Fill s and u (the totals, reserved ones when sent) from a session answer.
 * -EPROTO with what saying which field is wrong. */
static int parse_session(json_t *body, struct remote_session *s, struct remote_usage *u, char *what,
                         size_t whatlen)
{
    memset(s, 0, sizeof(*s));
    bool ok = false;
    const char *endpoint = remote_get_str(body, "endpoint", 8, 1024);
    const char *region = remote_get_str(body, "region", 0, 64);
    const char *bucket = remote_get_str(body, "bucket", 3, 255);
    const char *prefix = remote_get_str(body, "prefix", 2, KEY_MAX - 1);
    const char *ak = remote_get_str(body, "access_key_id", 1, 256);
    const char *sk = remote_get_str(body, "secret_access_key", 1, 256);
    const char *token = remote_get_str(body, "session_token", 0, 16384);
    const char *access = remote_get_str(body, "access", 2, 15);
    json_t *pocket = json_object_get(body, "pocket");
    const char *pid = remote_get_str(pocket, "id", 1, sizeof(s->pocket_id) - 1);
    const char *pname = remote_get_str(pocket, "name", 0, 4096);
    json_t *exp = json_object_get(body, "expiration");

    if (!json_is_object(body))
        snprintf(what, whatlen, "not an object");
    else if (!endpoint || (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8)) ||
             !printable(endpoint))
        snprintf(what, whatlen, "'endpoint' is not an http(s) url");
    else if (!region || (*region && !printable(region)))
        snprintf(what, whatlen, "'region' is missing or malformed");
    else if (!bucket || strchr(bucket, '/') || !printable(bucket))
        snprintf(what, whatlen, "'bucket' is missing or malformed");
    else if (!prefix || prefix[0] == '/' || prefix[strlen(prefix) - 1] != '/')
        snprintf(what, whatlen, "'prefix' must be a key prefix ending in '/'");
    else if (!ak || !sk || !token || !printable(ak) || !printable(sk) ||
             (*token && !printable(token)))
        snprintf(what, whatlen, "the credentials are missing or malformed");
    else if (!json_is_integer(exp) || json_integer_value(exp) <= 0)
        snprintf(what, whatlen, "'expiration' must be a positive integer");
    else if (!access || !access_static(access))
        snprintf(what, whatlen, "'access' must be \"rw\", \"ro\" or \"read-delete\"");
    else if (!pid || !printable(pid) || !pname)
        snprintf(what, whatlen, "'pocket' must hold an id and a name");
    else if (!parse_totals(body, u, false))
        snprintf(what, whatlen, "'quota', 'usage' or 'reserved' is missing or malformed");
    else
        ok = true;
    if (!ok)
        return -EPROTO;

    s->endpoint = strdup(endpoint);
    s->region = strdup(*region ? region : "us-east-1");
    s->bucket = strdup(bucket);
    s->prefix = strdup(prefix);
    s->access_key = strdup(ak);
    s->secret_key = strdup(sk);
    s->session_token = strdup(token);
    if (!s->endpoint || !s->region || !s->bucket || !s->prefix || !s->access_key ||
        !s->secret_key || !s->session_token) {
        remote_session_release(s);
        return -ENOMEM;
    }
    s->expiration = (time_t)json_integer_value(exp);
    snprintf(s->access, sizeof(s->access), "%s", access);
    snprintf(s->pocket_id, sizeof(s->pocket_id), "%s", pid);
    copy_utf8(s->pocket_name, sizeof(s->pocket_name), pname);
    s->max_bytes = u->max_bytes;
    s->max_objects = u->max_objects;
    s->used_bytes = u->used_bytes;
    s->used_objects = u->used_objects;
    return 0;
}

void remote_session_release(struct remote_session *s)
{
    if (!s)
        return;
    free(s->endpoint);
    free(s->region);
    free(s->bucket);
    free(s->prefix);
    free(s->access_key);
    free_secret(s->secret_key);
    free_secret(s->session_token);
    s->endpoint = s->region = s->bucket = s->prefix = NULL;
    s->access_key = s->secret_key = s->session_token = NULL;
}

/* ---- sessions ---- */

/* Remember the totals of an answer for sizing allowances (in a session's,
 * reserved ones may be absent: 0; statfs still asks GET /v1/usage first). */
static void seen_store(struct remote *r, const struct remote_usage *u)
{
    pthread_mutex_lock(&r->seen_lock);
    r->seen = *u;
    r->have_seen = true;
    pthread_mutex_unlock(&r->seen_lock);
}

static void usage_store(struct remote *r, const struct remote_usage *u)
{
    pthread_mutex_lock(&r->usage_lock);
    r->usage = *u;
    r->have_usage = true;
    r->usage_at = mono_now();
    r->usage_retry = r->usage_at;
    pthread_mutex_unlock(&r->usage_lock);
    seen_store(r, u);
}

/* POST /v1/session into *s. */
static int session_fetch(struct remote *r, struct remote_session *s, char *err, size_t errlen)
{
    long status;
    json_t *body = NULL;
    char msg[MESSAGE_MAX], code[64];
    int rc = exchange(r, "POST", "/v1/session", NULL, &status, &body, err, errlen);
    if (rc)
        return rc;
    if (status == 200) {
        char what[128];
        struct remote_usage u;
        rc = parse_session(body, s, &u, what, sizeof(what));
        if (rc == -EPROTO)
            seterr(err, errlen, "pockityd at '%s' sent a malformed session: %s", r->base_url, what);
        else if (rc)
            seterr(err, errlen, "out of memory");
        if (rc == 0) {
            /* The session's totals are not cached for statfs: the first
             * remote_usage asks GET /v1/usage, which also counts reservations. */
            atomic_store(&r->access, access_static(s->access));
            atomic_store(&r->prefix_len, strlen(s->prefix));
            seen_store(r, &u);
            restriction_from(r, body);
        }
        json_decref(body);
        return rc;
    }
    error_message(r, body, msg, code);
    json_decref(body);
    switch (status) {
    case 401:
        seterr(err, errlen, "pockityd refused the API key: %s", *msg ? msg : "unauthenticated");
        return -EACCES;
    case 403:
        seterr(err, errlen, "no session for this pocket: %s", *msg ? msg : "forbidden");
        return -EPERM;
    case 503:
        seterr(err, errlen, "pockityd cannot issue credentials now: %s",
               *msg ? msg : "service unavailable");
        return -EAGAIN;
    default:
        if (status >= 500) {
            seterr(err, errlen, "pockityd at '%s' failed (http %ld): %s", r->base_url, status,
                   *msg ? msg : "server error");
            return -EIO;
        }
        seterr(err, errlen, "unexpected answer from '%s' to a session request (http %ld)%s%s",
               r->base_url, status, *msg ? ": " : "", msg);
        return -EPROTO;
    }
}

/* When the renewal thread should next ask for a session: at two thirds of
 * the lifetime of the credentials just received, at least a second from now. */
static void schedule_after(struct remote *r, time_t expiration)
{
    int64_t lifetime_ms = ((int64_t)expiration - (int64_t)time(NULL)) * 1000;
    int64_t wait_ms = lifetime_ms * 2 / 3;
    if (wait_ms < 1000)
        wait_ms = 1000;
    pthread_mutex_lock(&r->state_lock);
    r->renew_at = ts_add_ms(mono_now(), wait_ms);
    r->renew_wall = time(NULL) + (time_t)(wait_ms / 1000);
    pthread_cond_broadcast(&r->state_cond);
    pthread_mutex_unlock(&r->state_lock);
}

/* Fetch a session and install it into client. force: even when the last
 * successful fetch for this client is very recent. */
static int refresh_into(struct remote *r, struct s3_client *client, bool force, char *err,
                        size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&r->refresh_lock);
    if (!force && r->fetched && r->last_into == client &&
        ts_diff_ms(mono_now(), r->last_fetch) < REFRESH_MIN_INTERVAL)
        goto out;
    /* threads queued behind a fetch that just failed do not each wait for
     * their own (pockityd unreachable: seconds apiece) */
    if (!force && r->fail_rc && ts_diff_ms(mono_now(), r->last_fail) < REFRESH_MIN_INTERVAL) {
        rc = r->fail_rc;
        seterr(err, errlen, "the last attempt just failed");
        goto out;
    }
    struct remote_session s;
    rc = session_fetch(r, &s, err, errlen);
    if (rc) {
        r->fail_rc = rc;
        r->last_fail = mono_now();
        goto out;
    }
    rc = s3_client_set_credentials(client, s.access_key, s.secret_key,
                                   *s.session_token ? s.session_token : NULL);
    if (rc) {
        seterr(err, errlen, "cannot install the new credentials: %s", s3_strerror(rc));
        rc = rc == S3_ERR_NOMEM ? -ENOMEM : -EINVAL;
    } else {
        r->fetched = true;
        r->last_fetch = mono_now();
        r->last_into = client;
        r->expires = s.expiration;
        r->fail_rc = 0;
        schedule_after(r, s.expiration);
    }
    remote_session_release(&s);
out:
    pthread_mutex_unlock(&r->refresh_lock);
    return rc;
}

int remote_refresh(void *arg, struct s3_client *client)
{
    struct remote *r = arg;
    if (!r || !client)
        return -EINVAL;
    char err[512];
    int rc = refresh_into(r, client, false, err, sizeof(err));
    if (rc)
        log_warn("cannot renew the storage credentials: %s", err);
    return rc;
}

int remote_s3_refresh(void *arg, struct s3_client *client, int status)
{
    struct remote *r = arg;
    if (r && status == S3_ERR_ACCESS_DENIED) {
        /* RGW denies expired credentials; others are truly denied */
        pthread_mutex_lock(&r->refresh_lock);
        int valid = time(NULL) + EXPIRY_MARGIN < r->expires;
        pthread_mutex_unlock(&r->refresh_lock);
        if (valid)
            return -EACCES;
    }
    return remote_refresh(arg, client);
}

static void *renewal_main(void *arg)
{
    struct remote *r = arg;
    int backoff = RENEW_BACKOFF_FIRST;
    struct timespec next_sweep = ts_add_ms(mono_now(), ALW_SWEEP_MS);
    pthread_mutex_lock(&r->state_lock);
    while (!atomic_load(&r->stopping)) {
        struct timespec now = mono_now();
        if (r->batch && ts_diff_ms(next_sweep, now) <= 0) {
            pthread_mutex_unlock(&r->state_lock);
            allowance_sweep(r);
            pthread_mutex_lock(&r->state_lock);
            next_sweep = ts_add_ms(mono_now(), ALW_SWEEP_MS);
            continue;
        }
        if (ts_diff_ms(r->renew_at, now) > 0 && time(NULL) < r->renew_wall) {
            /* Woken early by a new session (renew_at moved) or by remote_free;
             * the wall clock is looked at now and then (after a sleep). */
            struct timespec until = r->renew_at;
            if (r->batch && ts_diff_ms(until, next_sweep) > 0)
                until = next_sweep;
            if (ts_diff_ms(until, now) > RENEW_CHECK_MS)
                until = ts_add_ms(now, RENEW_CHECK_MS);
            pthread_cond_timedwait(&r->state_cond, &r->state_lock, &until);
            continue;
        }
        struct s3_client *client = r->client;
        pthread_mutex_unlock(&r->state_lock);
        char err[512];
        int rc = refresh_into(r, client, true, err, sizeof(err));
        pthread_mutex_lock(&r->state_lock);
        if (rc == 0) {
            backoff = RENEW_BACKOFF_FIRST;
            log_debug("storage credentials renewed");
        } else if (!atomic_load(&r->stopping)) {
            log_warn("cannot renew the storage credentials, retrying in %d s: %s", backoff, err);
            r->renew_at = ts_add_ms(mono_now(), (int64_t)backoff * 1000);
            r->renew_wall = time(NULL) + backoff;
            backoff = backoff * 2 > RENEW_BACKOFF_MAX ? RENEW_BACKOFF_MAX : backoff * 2;
        }
    }
    pthread_mutex_unlock(&r->state_lock);
    return NULL;
}

int remote_start_renewal(struct remote *r, struct s3_client *client)
{
    if (!r || !client)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&r->state_lock);
    if (r->thread_started) {
        rc = -EALREADY;
    } else {
        r->client = client;
        int e = pthread_create(&r->thread, NULL, renewal_main, r);
        if (e)
            rc = -e;
        else
            r->thread_started = true;
    }
    pthread_mutex_unlock(&r->state_lock);
    return rc;
}

const char *remote_access(struct remote *r)
{
    const char *a = r ? atomic_load(&r->access) : NULL;
    return a ? a : "ro";
}

int remote_open(const char *server_url, const char *api_key, const struct remote_options *opt,
                struct remote **out, struct remote_session *session, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out || !session) {
        seterr(err, errlen, "invalid arguments");
        return -EINVAL;
    }
    *out = NULL;
    memset(session, 0, sizeof(*session));
    /* An API key goes into a header line: printable ASCII only. */
    if (!api_key || !*api_key || strlen(api_key) > 512 || !printable(api_key)) {
        seterr(err, errlen, "malformed API key: expected printable characters without spaces");
        return -EINVAL;
    }
    pthread_once(&curl_once, curl_global);
    if (curl_init_rc) {
        seterr(err, errlen, "cannot initialise libcurl");
        return -ENOMEM;
    }

    struct remote *r = calloc(1, sizeof(*r));
    if (!r) {
        seterr(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&r->share_locks[i], NULL);
    pthread_mutex_init(&r->pool_lock, NULL);
    pthread_mutex_init(&r->refresh_lock, NULL);
    pthread_mutex_init(&r->state_lock, NULL);
    pthread_mutex_init(&r->usage_lock, NULL);
    pthread_mutex_init(&r->seen_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->state_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->prefix_len, 0);
    r->batch = opt && opt->quota_batch;
    atomic_init(&r->access, NULL);
    atomic_init(&r->stopping, false);
    r->timeout_ms = opt && opt->timeout_ms > 0 ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->write_wait_ms = opt && opt->write_wait_ms > 0 ? opt->write_wait_ms : DEFAULT_WRITE_WAIT;

    int rc = r->batch ? allowance_open(r) : 0;
    if (rc) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    rc = parse_server_url(r, server_url, err, errlen);
    if (rc)
        goto fail;
    rc = -ENOMEM;
    static const char bearer[] = "Authorization: Bearer ";
    size_t klen = strlen(api_key);
    r->auth_header = malloc(sizeof(bearer) + klen);
    if (!r->auth_header || (opt && opt->ca_file && !(r->ca_file = strdup(opt->ca_file)))) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    memcpy(r->auth_header, bearer, sizeof(bearer) - 1);
    memcpy(r->auth_header + sizeof(bearer) - 1, api_key, klen + 1);
    r->api_key = r->auth_header + sizeof(bearer) - 1;

    r->share = curl_share_init();
    if (!r->share) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    curl_share_setopt(r->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(r->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(r->share, CURLSHOPT_USERDATA, r);
    curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

    rc = session_fetch(r, session, err, errlen);
    if (rc)
        goto fail;
    pthread_mutex_lock(&r->refresh_lock);
    r->fetched = true;
    r->last_fetch = mono_now();
    r->last_into = NULL; /* the caller installs these credentials itself */
    r->expires = session->expiration;
    pthread_mutex_unlock(&r->refresh_lock);
    schedule_after(r, session->expiration);
    *out = r;
    return 0;
fail:
    remote_free(r);
    return rc;
}

void remote_free(struct remote *r)
{
    if (!r)
        return;
    allowance_stop(r); /* the commits queued are sent first */
    atomic_store(&r->stopping, true);
    pthread_mutex_lock(&r->state_lock);
    bool joined = r->thread_started;
    pthread_cond_broadcast(&r->state_cond);
    pthread_mutex_unlock(&r->state_lock);
    if (joined)
        pthread_join(r->thread, NULL);
    /* No thread is left: requests may run again, for the give-backs. */
    atomic_store(&r->stopping, false);
    allowance_close(r);
    for (int i = 0; i < r->n_idle; i++)
        curl_easy_cleanup(r->idle[i]);
    if (r->share)
        curl_share_cleanup(r->share);
    free(r->base_url);
    free_secret(r->auth_header);
    free(r->ca_file);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&r->share_locks[i]);
    pthread_mutex_destroy(&r->pool_lock);
    pthread_mutex_destroy(&r->refresh_lock);
    pthread_mutex_destroy(&r->state_lock);
    pthread_mutex_destroy(&r->usage_lock);
    pthread_mutex_destroy(&r->seen_lock);
    pthread_cond_destroy(&r->state_cond);
    free(r);
}

/* ---- quota calls ---- */

/* Whether an HTTP status means "pockityd is not able to answer right now". */
static bool status_retryable(long status)
{
    return status == 429 || status == 502 || status == 503 || status == 504;
}

static long long mono_ms(void)
{
    struct timespec t = mono_now();
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* pockityd answered a quota call: it is not down (any more). */
static void quota_answered(struct remote *r, const char *what)
{
    atomic_fetch_add(&r->quota_answers, 1);
    if (atomic_exchange(&r->quota_down, false))
        log_info("pockityd answers again (%s)", what);
}

/* One try of a quota call a writer waits for, while pockityd is down
 * (r->quota_down): the wait was spent by the call that found it down, so a
 * close does not wait write_wait_ms again, and a burst of closes does not
 * queue up behind one another's waits. One call tries at most every
 * QUOTA_PROBE_MS (a frozen pockityd makes the try last its timeout); the
 * others fail at once. */
static int quota_probe(struct remote *r, const char *what, const char *method, const char *path,
                       json_t *req_body, long *status, json_t **out)
{
    if (mono_ms() < atomic_load(&r->quota_probe_at) || atomic_exchange(&r->quota_probing, true))
        return -EIO;
    if (mono_ms() < atomic_load(&r->quota_probe_at)) { /* another probe just ended */
        atomic_store(&r->quota_probing, false);
        return -EIO;
    }
    char err[512];
    long try_ms = r->write_wait_ms < 1000 ? 1000 : r->write_wait_ms;
    int rc = remote_exchange_timeout(r, method, path, req_body,
                                     try_ms < r->timeout_ms ? try_ms : r->timeout_ms, status, out,
                                     err, sizeof(err));
    if (rc == 0 && !status_retryable(*status)) {
        quota_answered(r, what);
    } else {
        if (rc == 0) {
            json_decref(*out);
            *out = NULL;
        }
        log_debug("%s: pockityd is still unreachable", what);
        atomic_store(&r->quota_probe_at, mono_ms() + QUOTA_PROBE_MS);
        rc = -EIO;
    }
    atomic_store(&r->quota_probing, false);
    return rc;
}

/* A quota call; fast: fail at once while pockityd is down (quota_probe). */
static int quota_call(struct remote *r, bool fast, const char *what, const char *method,
                      const char *path, json_t *req_body, long *status, json_t **out)
{
    if (fast && atomic_load(&r->quota_down))
        return quota_probe(r, what, method, path, req_body, status, out);
    unsigned long long answers = atomic_load(&r->quota_answers);
    struct timespec deadline = ts_add_ms(mono_now(), r->write_wait_ms);
    int64_t pause = RETRY_FIRST_MS;
    char err[512];
    bool warned = false;
    for (;;) {
        /* the wait is write_wait_ms in all, not per try (at least a second a try) */
        int64_t left = ts_diff_ms(deadline, mono_now());
        long try_ms = left < 1000 ? 1000 : left < r->timeout_ms ? (long)left : r->timeout_ms;
        int rc = remote_exchange_timeout(r, method, path, req_body, try_ms, status, out, err,
                                         sizeof(err));
        if (rc == 0 && !status_retryable(*status)) {
            if (warned && !atomic_load(&r->quota_down))
                log_info("pockityd answers again (%s)", what);
            quota_answered(r, what);
            return 0;
        }
        if (rc == 0) {
            char msg[MESSAGE_MAX], code[64];
            error_message(r, *out, msg, code);
            snprintf(err, sizeof(err), "pockityd answered http %ld%s%s", *status, *msg ? ": " : "",
                     msg);
            json_decref(*out);
            *out = NULL;
        } else if (rc == -EPROTO || rc == -ENOMEM || rc == -ECANCELED) {
            log_error("%s failed: %s", what, err);
            return -EIO;
        }
        left = ts_diff_ms(deadline, mono_now());
        if (atomic_load(&r->stopping)) {
            log_error("%s failed: %s (unmounting)", what, err);
            return -EIO;
        }
        if (left <= 0) {
            log_error("%s failed: %s (gave up after %ld ms)", what, err, r->write_wait_ms);
            /* unless another call heard from pockityd since this one began
             * (checked again after: an answer may land in between) */
            if (atomic_load(&r->quota_answers) == answers) {
                atomic_store(&r->quota_probe_at, mono_ms() + QUOTA_PROBE_MS);
                bool was = atomic_exchange(&r->quota_down, true);
                if (atomic_load(&r->quota_answers) != answers)
                    atomic_store(&r->quota_down, false);
                else if (!was)
                    log_warn("pockityd counts as down: writes fail at once until it answers");
            }
            return -EIO;
        }
        if (!warned) {
            log_warn("%s: %s; retrying for up to %ld ms", what, err, r->write_wait_ms);
            warned = true;
        }
        /* Full jitter keeps many waiting writers from returning all at once. */
        static __thread unsigned seed;
        if (!seed)
            seed = (unsigned)mono_now().tv_nsec | 1u;
        int64_t wait = pause / 2 + (int64_t)(rand_r(&seed) % (int)(pause / 2 + 1));
        sleep_ms(wait < left ? wait : left);
        pause = pause * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : pause * 2;
    }
}

int remote_quota_call(struct remote *r, const char *what, const char *method, const char *path,
                      json_t *req_body, long *status, json_t **out)
{
    return quota_call(r, false, what, method, path, req_body, status, out);
}

int remote_quota_ask(struct remote *r, const char *what, const char *method, const char *path,
                     json_t *req_body, long *status, json_t **out)
{
    return quota_call(r, true, what, method, path, req_body, status, out);
}

bool remote_quota_down(struct remote *r)
{
    return r && atomic_load(&r->quota_down);
}

/* The errno of a quota call's non-2xx answer, logging the server's reason. */
int remote_quota_errno(struct remote *r, const char *what, long status, json_t *body)
{
    char msg[MESSAGE_MAX], code[64];
    error_message(r, body, msg, code);
    int rc;
    switch (status) {
    case 401:
        rc = -EACCES;
        break;
    case 403:
        rc = -EACCES;
        if (!strcmp(code, "read_only")) { /* a hold: payment past due */
            rc = -EROFS;
            if (atomic_exchange(&r->restriction, RESTRICT_HELD) != RESTRICT_HELD)
                log_warn("the pocket is read-only: %s", *msg ? msg : code);
        }
        break;
    case 404:
        rc = -ENOENT;
        break;
    case 507:
        rc = -EDQUOT;
        break;
    case 400:
    case 413:
    case 422:
        rc = -EINVAL;
        break;
    default:
        rc = -EIO;
    }
    if (rc == -EDQUOT || rc == -ENOENT || rc == -EROFS)
        log_info("%s: %s", what, *msg ? msg : code);
    else
        log_warn("%s: pockityd answered http %ld: %s", what, status, *msg ? msg : code);
    return rc;
}

/* Keep the totals a quota answer carries, for statfs. */
void remote_usage_from_answer(struct remote *r, json_t *body)
{
    struct remote_usage u;
    if (json_is_object(body) && parse_totals(body, &u, true)) {
        usage_store(r, &u);
        restriction_from(r, body);
    }
}

static bool key_valid(const char *key)
{
    return key && *key && strlen(key) <= KEY_MAX;
}

/* Reservation ids go into a URL path: a conservative alphabet. */
bool remote_id_valid(const char *id)
{
    if (!id || !*id || strlen(id) > ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            *p != '_' && *p != '-')
            return false;
    return true;
}

int remote_reserve(struct remote *r, const char *key, uint64_t size, char id_out[64])
{
    if (id_out)
        id_out[0] = '\0';
    if (!r || !id_out || !key_valid(key) || size > (uint64_t)INT64_MAX)
        return -EINVAL;
    json_t *k = json_string(key);
    if (!k) {
        log_warn("cannot reserve quota for a key that is not valid utf-8");
        return -EINVAL;
    }
    int rc = r->batch ? allowance_reserve(r, key, size, id_out) : -EAGAIN;
    if (rc != -EAGAIN) {
        json_decref(k);
        return rc;
    }
    json_t *req = json_pack("{s:o, s:I}", "key", k, "bytes", (json_int_t)size);
    if (!req)
        return -ENOMEM;
    rc = remote_exact_reserve(r, req, id_out);
    if (rc == -EDQUOT && r->batch && allowance_give_back(r))
        rc = remote_exact_reserve(r, req, id_out);
    json_decref(req);
    return rc;
}

/* POST /v1/reservations with req ({key, bytes}). */
int remote_exact_reserve(struct remote *r, json_t *req, char id_out[64])
{
    long status;
    json_t *body = NULL;
    int rc = remote_quota_ask(r, "quota reservation", "POST", "/v1/reservations", req, &status,
                              &body);
    if (rc)
        return rc;
    if (status == 201 || status == 200) {
        const char *id = remote_get_str(body, "id", 1, ID_MAX);
        if (!id || !remote_id_valid(id)) {
            log_error("quota reservation: pockityd at '%s' sent no valid reservation id",
                      r->base_url);
            rc = -EIO;
        } else {
            snprintf(id_out, 64, "%s", id);
            remote_usage_from_answer(r, body);
        }
    } else {
        rc = remote_quota_errno(r, "quota reservation", status, body);
    }
    json_decref(body);
    return rc;
}

int remote_commit_reservation(struct remote *r, const char *id, uint64_t size, const char *etag)
{
    json_t *e = json_string(etag);
    if (!e)
        return -EINVAL;
    json_t *req = json_pack("{s:I, s:o}", "bytes", (json_int_t)size, "etag", e);
    if (!req)
        return -ENOMEM;
    char path[128];
    snprintf(path, sizeof(path), "/v1/reservations/%s/commit", id);
    long status;
    json_t *body = NULL;
    int rc = remote_quota_call(r, "quota commit", "POST", path, req, &status, &body);
    json_decref(req);
    if (rc)
        return rc;
    if (status >= 200 && status < 300)
        remote_usage_from_answer(r, body);
    else
        rc = remote_quota_errno(r, "quota commit", status, body);
    json_decref(body);
    return rc;
}

int remote_commit(struct remote *r, const char *reservation_id, uint64_t size, const char *etag)
{
    uint64_t n;
    int local = allowance_local_id(reservation_id, &n);
    if (!r || local < 0 || (!local && !remote_id_valid(reservation_id)) || !etag || !*etag ||
        strlen(etag) > ETAG_MAX || size > (uint64_t)INT64_MAX)
        return -EINVAL;
    if (local)
        return allowance_commit(r, n, size, etag);
    /* An earlier upload of the same key may have its commit queued: it goes
     * first, or the ledger would keep the older version. */
    allowance_settle(r, r->write_wait_ms);
    return remote_commit_reservation(r, reservation_id, size, etag);
}

int remote_release(struct remote *r, const char *reservation_id)
{
    uint64_t n;
    int local = allowance_local_id(reservation_id, &n);
    if (!r || local < 0 || (!local && !remote_id_valid(reservation_id)))
        return -EINVAL;
    if (local)
        return allowance_release(r, n);
    char path[128];
    snprintf(path, sizeof(path), "/v1/reservations/%s", reservation_id);
    long status;
    json_t *body = NULL;
    int rc = remote_quota_call(r, "quota release", "DELETE", path, NULL, &status, &body);
    if (rc)
        return rc;
    if (status < 200 || status >= 300)
        rc = remote_quota_errno(r, "quota release", status, body);
    json_decref(body);
    return rc;
}

int remote_deleted(struct remote *r, const char *const *keys, size_t n)
{
    if (!r || (n && !keys))
        return -EINVAL;
    /* A commit queued before must not land after it: the ledger would count
     * a deleted object. Not while pockityd is down: the caller is an rm that
     * has done its part, the report then fails at once unless it is the one
     * try (remote_quota_ask), and reconciliation corrects the ledger. */
    if (!remote_quota_down(r) && !allowance_settle(r, r->write_wait_ms))
        log_warn("quota commits still pending: a deletion report may overtake them "
                 "(reconciliation will correct the usage)");
    for (size_t start = 0; start < n; start += DELETE_BATCH) {
        size_t end = n - start > DELETE_BATCH ? start + DELETE_BATCH : n;
        json_t *list = json_array();
        if (!list)
            return -ENOMEM;
        for (size_t i = start; i < end; i++) {
            json_t *k = key_valid(keys[i]) ? json_string(keys[i]) : NULL;
            if (!k || json_array_append_new(list, k) != 0) {
                log_warn("cannot report the deletion of a key that is empty, too long or not "
                         "utf-8");
                json_decref(list);
                return -EINVAL;
            }
        }
        json_t *req = json_pack("{s:o}", "keys", list);
        if (!req)
            return -ENOMEM;
        long status;
        json_t *body = NULL;
        int rc = remote_quota_ask(r, "deletion report", "POST", "/v1/objects/deleted", req, &status,
                                  &body);
        json_decref(req);
        if (rc)
            return rc;
        if (status >= 200 && status < 300)
            remote_usage_from_answer(r, body);
        else
            rc = remote_quota_errno(r, "deletion report", status, body);
        json_decref(body);
        if (rc)
            return rc == -EINVAL || rc == -EACCES ? rc : -EIO;
    }
    return 0;
}

bool remote_settle(struct remote *r, long timeout_ms)
{
    return !r || allowance_settle(r, timeout_ms);
}

bool remote_no_room(struct remote *r, uint64_t bytes)
{
    pthread_mutex_lock(&r->seen_lock);
    bool have = r->have_seen;
    struct remote_usage u = r->seen;
    pthread_mutex_unlock(&r->seen_lock);
    return have && (u.used_bytes > u.max_bytes || bytes > u.max_bytes - u.used_bytes);
}

int remote_usage(struct remote *r, struct remote_usage *u)
{
    if (!r || !u)
        return -EINVAL;
    /* One statfs storm, one request: callers queue behind the lock. */
    pthread_mutex_lock(&r->usage_lock);
    struct timespec now = mono_now();
    if ((r->have_usage && ts_diff_ms(now, r->usage_at) < USAGE_TTL_MS) ||
        ts_diff_ms(r->usage_retry, now) > 0) {
        int rc = r->have_usage && ts_diff_ms(now, r->usage_at) < USAGE_TTL_MS ? 0 : -EIO;
        *u = r->usage;
        pthread_mutex_unlock(&r->usage_lock);
        return rc;
    }
    long status;
    json_t *body = NULL;
    char err[512];
    int rc = exchange(r, "GET", "/v1/usage", NULL, &status, &body, err, sizeof(err));
    struct remote_usage fresh;
    if (rc) {
        log_warn("cannot read the pocket's usage: %s", err);
        rc = -EIO;
    } else if (status != 200) {
        char msg[MESSAGE_MAX], code[64];
        error_message(r, body, msg, code);
        log_warn("cannot read the pocket's usage: pockityd answered http %ld%s%s", status,
                 *msg ? ": " : "", msg);
        rc = -EIO;
    } else if (!parse_totals(body, &fresh, true)) {
        log_warn("cannot read the pocket's usage: pockityd at '%s' sent a malformed answer",
                 r->base_url);
        rc = -EIO;
    }
    now = mono_now();
    if (rc == 0) {
        r->usage = fresh;
        r->have_usage = true;
        seen_store(r, &fresh);
        r->usage_at = now;
        restriction_from(r, body);
    } else {
        r->usage_retry = ts_add_ms(now, USAGE_TTL_MS);
    }
    json_decref(body);
    *u = r->usage;
    pthread_mutex_unlock(&r->usage_lock);
    return rc;
}

int remote_write_check(struct remote *r)
{
    if (!r)
        return -EINVAL;
    const char *access = atomic_load(&r->access);
    int x = atomic_load(&r->restriction);
    if (x == RESTRICT_NONE && access != remote_access_names[2])
        return 0;
    /* Restricted, or holding the credentials of a restricted session: ask
     * again (GET /v1/usage, at most every USAGE_TTL_MS) whether that ended. */
    struct remote_usage u;
    remote_usage(r, &u);
    x = atomic_load(&r->restriction);
    if (x == RESTRICT_NONE && atomic_load(&r->access) == remote_access_names[2]) {
        pthread_mutex_lock(&r->state_lock);
        struct s3_client *client = r->client;
        pthread_mutex_unlock(&r->state_lock);
        if (client && remote_refresh(r, client) == 0)
            log_info("new storage credentials: the pocket is writable again");
        if (atomic_load(&r->access) == remote_access_names[2])
            x = RESTRICT_HELD; /* pockityd still grants read and delete only */
    }
    return x == RESTRICT_OVER_QUOTA ? -EDQUOT : x == RESTRICT_HELD ? -EROFS : 0;
}
