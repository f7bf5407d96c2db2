/* remote: the mount's client of pockityd's API — sessions and their renewal,
 * quota reservations and allowances, deletions and usage — over libcurl and
 * jansson. */
#include "remote.h"

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
#define POOL_IDLE_MAX        16
#define DEFAULT_TIMEOUT_MS   10000
#define DEFAULT_WRITE_WAIT   30000
#define CONNECT_TIMEOUT_MAX  5000
#define RETRY_FIRST_MS       200  /* first pause of a quota call's retry loop */
#define RETRY_MAX_MS         4000 /* longest pause of a quota call's retry loop */
#define RENEW_BACKOFF_FIRST  1    /* seconds: first pause after a failed renewal */
#define RENEW_BACKOFF_MAX    30
#define REFRESH_MIN_INTERVAL 2000 /* ms: a refresh this soon after a fetch is a no-op */
#define USAGE_TTL_MS         2000
#define DELETE_BATCH         1000
#define KEY_MAX              1024
#define ETAG_MAX             128
#define ID_MAX               63
#define MESSAGE_MAX          300 /* bytes of a server's error message we repeat */

#define ALW_MAX_BYTES    (64ull << 20) /* largest allowance asked for */
#define ALW_MAX_OBJECTS  256
#define ALW_SHARE        8     /* an allowance takes at most 1/8 of what is free */
#define ALW_REFUSED_MS   5000  /* after a refusal, the exact path for this long */
#define ALW_IDLE_MS      10000 /* an allowance not charged this long is given back */
#define ALW_SWEEP_MS     1000  /* how often the renewal thread looks at allowances */
#define ALW_DRAIN_MS     2000  /* longest wait for pending commits before an EDQUOT */
#define ALW_FREE_TIMEOUT 2000  /* ms: one give-back request at remote_free */
#define ALW_LIFE_MIN_S   10    /* bounds on an allowance's lifetime as we compute it */
#define ALW_LIFE_MAX_S   86400
#define CHARGE_BUCKETS   256
#define COMMIT_BATCH     64       /* commits sent in one request (pockityd takes 256) */
#define COMMIT_LINGER_MS 20       /* a commit waits this long for others to share its request */
#define LOCAL_PREFIX     "local#" /* local reservation ids: '#' is never in a server id */

/* A block of quota (bytes and objects) held from pockityd (POST
 * /v1/allowances) and spent by local charges. Fields guarded by alw_lock. */
struct allowance {
    char id[ID_MAX + 1];
    uint64_t bytes_left, objects_left; /* what local charges have not taken */
    unsigned pending;                  /* charges not committed (answered) or released yet */
    int64_t ttl_ms;                    /* its lifetime on the server after a grant or commit */
    struct timespec expires;           /* monotonic, from the latest answer */
    struct timespec last_charge;       /* monotonic */
    bool retired;                      /* charged no more; given back once pending is 0 */
    bool dead;                         /* the server no longer knows it (404) */
    struct allowance *next;
};

/* A file charged to an allowance: the local reservation "local#N". */
struct charge {
    uint64_t n;
    struct allowance *a;
    uint64_t size;
    char *key;           /* relative to the prefix, for the commit */
    struct charge *next; /* in its bucket, or in the commit queue */
    /* Its commit, once queued: what landed, in which order, and the answer. */
    uint64_t landed;
    char etag[ETAG_MAX + 1];
    uint64_t seq;
    int rc;
};

struct remote {
    char *base_url;    /* scheme://host[:port][/path], no trailing '/' */
    char *auth_header; /* "Authorization: Bearer KEY": secret, wiped on free */
    char *api_key;     /* points inside auth_header, to hide it from messages */
    char *ca_file;
    long timeout_ms;
    long write_wait_ms;

    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock;
    CURL *idle[POOL_IDLE_MAX]; /* guarded by pool_lock */
    int n_idle;                /* guarded by pool_lock */

    _Atomic(const char *) access; /* one of the static strings in access_names */
    atomic_int restriction;       /* RESTRICT_*: the latest word of pockityd on writes */
    atomic_bool stopping;         /* remote_free has begun: abort transfers */

    /* Serialises session fetches, so a burst of ExpiredToken errors costs one. */
    pthread_mutex_t refresh_lock;
    struct timespec last_fetch;  /* guarded by refresh_lock; monotonic, of the last success */
    struct s3_client *last_into; /* guarded by refresh_lock; client it went into, or NULL */
    bool fetched;                /* guarded by refresh_lock */

    /* The renewal thread's schedule. */
    pthread_mutex_t state_lock;
    pthread_cond_t state_cond; /* signalled on stop and on every new session */
    struct timespec renew_at;  /* guarded by state_lock; monotonic */
    struct s3_client *client;  /* guarded by state_lock; NULL until renewal starts */
    bool thread_started;       /* guarded by state_lock */
    pthread_t thread;

    pthread_mutex_t usage_lock;
    struct remote_usage usage;   /* guarded by usage_lock */
    bool have_usage;             /* guarded by usage_lock */
    struct timespec usage_at;    /* guarded by usage_lock; monotonic, of the last answer */
    struct timespec usage_retry; /* guarded by usage_lock; no new attempt before this */

    /* The latest totals of any answer, to size allowances. seen_lock is a
     * leaf: never held across a request (usage_lock is, in remote_usage). */
    pthread_mutex_t seen_lock;
    struct remote_usage seen; /* guarded by seen_lock */
    bool have_seen;           /* guarded by seen_lock */

    /* Quota allowances (remote_options.quota_batch). No request is made
     * while holding alw_lock. */
    bool batch;               /* set at open, read-only after */
    atomic_size_t prefix_len; /* of the session's key prefix */
    pthread_mutex_t alw_lock;
    pthread_cond_t alw_cond;    /* signalled when a fetch ends and a charge is settled */
    struct allowance *alws;     /* guarded by alw_lock: every allowance held */
    struct allowance *current;  /* guarded by alw_lock: the one charged, or NULL */
    bool fetching;              /* guarded by alw_lock: a thread is asking for one */
    unsigned releasing;         /* guarded by alw_lock: collected, not given back yet */
    bool refused;               /* guarded by alw_lock: refused_at is meaningful */
    bool unsupported;           /* guarded by alw_lock: pockityd has no /v1/allowances */
    struct timespec refused_at; /* guarded by alw_lock; monotonic */
    uint64_t next_charge;       /* guarded by alw_lock */
    struct charge *charges[CHARGE_BUCKETS]; /* guarded by alw_lock, by n */

    /* Commits of local charges: queued by remote_commit in order, sent in
     * batches by the committer thread (started at the first). Guarded by
     * alw_lock; alw_cond is signalled when a batch is answered. */
    struct charge *cq, **cq_tail; /* the queue, oldest first, by seq */
    uint64_t cq_seq;              /* the latest seq given */
    size_t cq_len;
    uint64_t cq_sending; /* seq of the first charge in flight, or 0 */
    unsigned cq_waiters; /* threads waiting for commits: no lingering */
    bool cq_started, cq_stop;
    pthread_cond_t cq_cond; /* the committer's: a first or a full batch queued, a waiter, stop */
    pthread_t committer;
};

static const char *const access_names[] = {"rw", "ro", "read-delete"};

enum {
    RESTRICT_NONE,
    RESTRICT_OVER_QUOTA, /* writes fail with EDQUOT */
    RESTRICT_HELD        /* payment past due or another hold: EROFS */
};

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

static struct timespec mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static struct timespec ts_add_ms(struct timespec t, int64_t ms)
{
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    } else if (t.tv_nsec < 0) {
        t.tv_sec--;
        t.tv_nsec += 1000000000L;
    }
    return t;
}

/* a - b in milliseconds. */
static int64_t ts_diff_ms(struct timespec a, struct timespec b)
{
    return (int64_t)(a.tv_sec - b.tv_sec) * 1000 + (a.tv_nsec - b.tv_nsec) / 1000000L;
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
static int exchange_timeout(struct remote *r, const char *method, const char *path,
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
    return exchange_timeout(r, method, path, req_body, r->timeout_ms, status, out, err, errlen);
}

/* ---- validating what pockityd sends ---- */

/* A string member of obj, 1..max bytes (min 0 allows ""). NULL when absent or wrong. */
static const char *get_str(json_t *obj, const char *name, size_t min, size_t max)
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

static bool get_u64(json_t *obj, const char *name, uint64_t *out)
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
    if (!get_u64(q, "max_bytes", &u->max_bytes) || !get_u64(q, "max_objects", &u->max_objects) ||
        !get_u64(us, "bytes", &u->used_bytes) || !get_u64(us, "objects", &u->used_objects))
        return false;
    if (rs || need_reserved)
        return get_u64(rs, "bytes", &u->reserved_bytes) &&
               get_u64(rs, "objects", &u->reserved_objects);
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
    for (size_t i = 0; i < sizeof(access_names) / sizeof(access_names[0]); i++)
        if (!strcmp(s, access_names[i]))
            return access_names[i];
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
    const char *endpoint = get_str(body, "endpoint", 8, 1024);
    const char *region = get_str(body, "region", 0, 64);
    const char *bucket = get_str(body, "bucket", 3, 255);
    const char *prefix = get_str(body, "prefix", 2, KEY_MAX - 1);
    const char *ak = get_str(body, "access_key_id", 1, 256);
    const char *sk = get_str(body, "secret_access_key", 1, 256);
    const char *token = get_str(body, "session_token", 0, 16384);
    const char *access = get_str(body, "access", 2, 15);
    json_t *pocket = json_object_get(body, "pocket");
    const char *pid = get_str(pocket, "id", 1, sizeof(s->pocket_id) - 1);
    const char *pname = get_str(pocket, "name", 0, 4096);
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
    struct remote_session s;
    rc = session_fetch(r, &s, err, errlen);
    if (rc)
        goto out;
    rc = s3_client_set_credentials(client, s.access_key, s.secret_key,
                                   *s.session_token ? s.session_token : NULL);
    if (rc) {
        seterr(err, errlen, "cannot install the new credentials: %s", s3_strerror(rc));
        rc = rc == S3_ERR_NOMEM ? -ENOMEM : -EINVAL;
    } else {
        r->fetched = true;
        r->last_fetch = mono_now();
        r->last_into = client;
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

static void alw_sweep(struct remote *r);
static void alw_shutdown(struct remote *r);
static void alw_free_all(struct remote *r);
static void committer_stop(struct remote *r);

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
            alw_sweep(r);
            pthread_mutex_lock(&r->state_lock);
            next_sweep = ts_add_ms(mono_now(), ALW_SWEEP_MS);
            continue;
        }
        if (ts_diff_ms(r->renew_at, now) > 0) {
            /* Woken early by a new session (renew_at moved) or by remote_free. */
            struct timespec until = r->renew_at;
            if (r->batch && ts_diff_ms(until, next_sweep) > 0)
                until = next_sweep;
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
    pthread_mutex_init(&r->alw_lock, NULL);
    pthread_mutex_init(&r->seen_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->state_cond, &ca);
    pthread_cond_init(&r->alw_cond, &ca);
    pthread_cond_init(&r->cq_cond, &ca);
    pthread_condattr_destroy(&ca);
    r->cq_tail = &r->cq;
    atomic_init(&r->prefix_len, 0);
    r->batch = opt && opt->quota_batch;
    atomic_init(&r->access, NULL);
    atomic_init(&r->stopping, false);
    r->timeout_ms = opt && opt->timeout_ms > 0 ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->write_wait_ms = opt && opt->write_wait_ms > 0 ? opt->write_wait_ms : DEFAULT_WRITE_WAIT;

    int rc = parse_server_url(r, server_url, err, errlen);
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
    committer_stop(r); /* what is queued is sent first */
    atomic_store(&r->stopping, true);
    pthread_mutex_lock(&r->state_lock);
    bool joined = r->thread_started;
    pthread_cond_broadcast(&r->state_cond);
    pthread_mutex_unlock(&r->state_lock);
    if (joined)
        pthread_join(r->thread, NULL);
    if (r->batch) {
        /* No thread is left: requests may run again, for the give-backs. */
        atomic_store(&r->stopping, false);
        alw_shutdown(r);
        alw_free_all(r);
    }
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
    pthread_mutex_destroy(&r->alw_lock);
    pthread_mutex_destroy(&r->seen_lock);
    pthread_cond_destroy(&r->state_cond);
    pthread_cond_destroy(&r->alw_cond);
    pthread_cond_destroy(&r->cq_cond);
    free(r);
}

/* ---- quota calls ---- */

/* Whether an HTTP status means "pockityd is not able to answer right now". */
static bool status_retryable(long status)
{
    return status == 429 || status == 502 || status == 503 || status == 504;
}

/* Send a quota call, retrying with backoff while pockityd is unreachable or
 * unavailable, up to write_wait_ms. Returns 0 with *status (never a retryable
 * one) and *out (may be NULL), or -EIO. */
static int quota_call(struct remote *r, const char *what, const char *method, const char *path,
                      json_t *req_body, long *status, json_t **out)
{
    struct timespec deadline = ts_add_ms(mono_now(), r->write_wait_ms);
    int64_t pause = RETRY_FIRST_MS;
    char err[512];
    bool warned = false;
    for (;;) {
        int rc = exchange(r, method, path, req_body, status, out, err, sizeof(err));
        if (rc == 0 && !status_retryable(*status))
            return 0;
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
        int64_t left = ts_diff_ms(deadline, mono_now());
        if (left <= 0 || atomic_load(&r->stopping)) {
            log_error("%s failed: %s (gave up after %ld ms)", what, err, r->write_wait_ms);
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

/* The errno of a quota call's non-2xx answer, logging the server's reason. */
static int quota_errno(struct remote *r, const char *what, long status, json_t *body)
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
static void usage_from_answer(struct remote *r, json_t *body)
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
static bool id_valid(const char *id)
{
    if (!id || !*id || strlen(id) > ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            *p != '_' && *p != '-')
            return false;
    return true;
}

/* ---- quota allowances ---- */

static bool alw_usable(const struct allowance *a, struct timespec now)
{
    return !a->dead && !a->retired && ts_diff_ms(a->expires, now) > a->ttl_ms / 2;
}

/* The lifetime an answer's expires_at (unix seconds) leaves, in ms, within
 * bounds that keep a skewed clock from making it absurd. */
static int64_t alw_lifetime_ms(json_t *expires_at)
{
    int64_t s = (int64_t)json_integer_value(expires_at) - (int64_t)time(NULL);
    if (s < ALW_LIFE_MIN_S)
        s = ALW_LIFE_MIN_S;
    if (s > ALW_LIFE_MAX_S)
        s = ALW_LIFE_MAX_S;
    return s * 1000;
}

/* "local#N" -> 1 with *n, a malformed local id -> -1, any other id -> 0. */
static int local_id(const char *id, uint64_t *n)
{
    size_t plen = sizeof(LOCAL_PREFIX) - 1;
    if (!id || strncmp(id, LOCAL_PREFIX, plen) != 0)
        return 0;
    const char *p = id + plen;
    uint64_t v = 0;
    if (*p < '1' || *p > '9' || strlen(p) > 19)
        return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *n = v;
    return 1;
}

/* Unlink the charge n from the table. Caller holds alw_lock. */
static struct charge *charge_take(struct remote *r, uint64_t n)
{
    for (struct charge **p = &r->charges[n % CHARGE_BUCKETS]; *p; p = &(*p)->next) {
        struct charge *c = *p;
        if (c->n == n) {
            *p = c->next;
            return c;
        }
    }
    return NULL;
}

static void charge_free(struct charge *c)
{
    if (c) {
        free(c->key);
        free(c);
    }
}

/* Unlink the allowances to give back now — retired, spent, idle for
 * ALW_IDLE_MS, or any with force — but never one with charges pending.
 * Dead and expired ones are freed here (the server holds nothing for them);
 * the rest is returned as a list for alw_release_list, and counts in
 * releasing until it has gone back. Caller holds alw_lock. */
static struct allowance *alw_collect(struct remote *r, struct timespec now, bool force)
{
    struct allowance *out = NULL;
    for (struct allowance **p = &r->alws; *p;) {
        struct allowance *a = *p;
        bool spent = a->bytes_left == 0 || a->objects_left == 0;
        bool idle = ts_diff_ms(now, a->last_charge) >= ALW_IDLE_MS;
        bool expired = ts_diff_ms(a->expires, now) <= 0;
        if (a->pending || !(force || a->retired || a->dead || spent || idle || expired)) {
            p = &a->next;
            continue;
        }
        *p = a->next;
        if (r->current == a)
            r->current = NULL;
        if (a->dead || expired) {
            free(a);
            continue;
        }
        a->next = out;
        out = a;
        r->releasing++;
    }
    return out;
}

/* Give back and free each allowance of list: DELETE, one attempt each (what
 * a failed one holds expires on the server). */
static void alw_release_list(struct remote *r, struct allowance *list, long timeout_ms)
{
    while (list) {
        struct allowance *a = list;
        list = a->next;
        char path[128], err[512];
        long status;
        json_t *body = NULL;
        snprintf(path, sizeof(path), "/v1/allowances/%s", a->id);
        int rc = exchange_timeout(r, "DELETE", path, NULL, timeout_ms, &status, &body, err,
                                  sizeof(err));
        if (rc)
            log_warn("cannot give back quota allowance '%s': %s (it expires on the server)", a->id,
                     err);
        else if (status >= 200 && status < 300)
            usage_from_answer(r, body);
        else if (status != 404)
            quota_errno(r, "quota allowance release", status, body);
        log_debug("quota allowance '%s' given back (%" PRIu64 " bytes, %" PRIu64 " objects left)",
                  a->id, a->bytes_left, a->objects_left);
        json_decref(body);
        free(a);
        pthread_mutex_lock(&r->alw_lock);
        r->releasing--;
        pthread_cond_broadcast(&r->alw_cond);
        pthread_mutex_unlock(&r->alw_lock);
    }
}

/* What to ask for: min(64 MiB, free/8) bytes and min(256, free/8) objects of
 * what the latest totals leave free. False when that cannot hold a file of
 * size bytes, or no totals are known. */
static bool alw_size(struct remote *r, uint64_t size, uint64_t *bytes, uint64_t *objects)
{
    pthread_mutex_lock(&r->seen_lock);
    bool have = r->have_seen;
    struct remote_usage u = r->seen;
    pthread_mutex_unlock(&r->seen_lock);
    if (!have)
        return false;
    uint64_t taken_b = u.used_bytes + u.reserved_bytes,
             taken_o = u.used_objects + u.reserved_objects;
    if (taken_b < u.used_bytes || taken_o < u.used_objects) /* absurd totals: no batching */
        return false;
    uint64_t free_b = u.max_bytes > taken_b ? u.max_bytes - taken_b : 0;
    uint64_t free_o = u.max_objects > taken_o ? u.max_objects - taken_o : 0;
    *bytes = free_b / ALW_SHARE < ALW_MAX_BYTES ? free_b / ALW_SHARE : ALW_MAX_BYTES;
    *objects = free_o / ALW_SHARE < ALW_MAX_OBJECTS ? free_o / ALW_SHARE : ALW_MAX_OBJECTS;
    return *bytes > 0 && *bytes >= size && *objects >= 1;
}

/* POST /v1/allowances. Returns 0 with *out (not linked anywhere), -ENOSYS
 * (pockityd offers none), -EAGAIN (refused or a malformed answer), -EIO
 * (pockityd unreachable past write_wait_ms) or -ENOMEM. */
static int alw_fetch(struct remote *r, uint64_t bytes, uint64_t objects, struct allowance **out)
{
    json_t *req =
            json_pack("{s:I, s:I}", "bytes", (json_int_t)bytes, "objects", (json_int_t)objects);
    if (!req)
        return -ENOMEM;
    long status;
    json_t *body = NULL;
    int rc = quota_call(r, "quota allowance", "POST", "/v1/allowances", req, &status, &body);
    json_decref(req);
    if (rc)
        return rc;
    if (status == 201 || status == 200) {
        const char *id = get_str(body, "id", 5, ID_MAX);
        json_t *exp = json_object_get(body, "expires_at");
        uint64_t gb, go;
        struct allowance *a = NULL;
        if (!id || strncmp(id, "alw_", 4) != 0 || !id_valid(id) || !get_u64(body, "bytes", &gb) ||
            !get_u64(body, "objects", &go) || !json_is_integer(exp) ||
            json_integer_value(exp) <= 0) {
            /* what it may have granted expires on the server */
            log_error("quota allowance: pockityd at '%s' sent a malformed answer", r->base_url);
            rc = -EAGAIN;
        } else if (!(a = calloc(1, sizeof(*a)))) {
            rc = -ENOMEM;
        } else {
            struct timespec now = mono_now();
            snprintf(a->id, sizeof(a->id), "%s", id);
            a->bytes_left = gb < bytes ? gb : bytes;
            a->objects_left = go < objects ? go : objects;
            a->ttl_ms = alw_lifetime_ms(exp);
            a->expires = ts_add_ms(now, a->ttl_ms);
            a->last_charge = now;
            usage_from_answer(r, body);
            log_debug("quota allowance '%s': %" PRIu64 " bytes, %" PRIu64 " objects", a->id,
                      a->bytes_left, a->objects_left);
            *out = a;
        }
    } else if (status == 404 || status == 405) {
        log_info("pockityd offers no quota allowances: one reservation per upload");
        rc = -ENOSYS;
    } else {
        quota_errno(r, "quota allowance", status, body); /* logs; notes a hold */
        rc = -EAGAIN;
    }
    json_decref(body);
    return rc;
}

/* Charge a file to the current allowance, asking for a new one when needed.
 * Returns 0 with id_out, -EAGAIN (take the exact path), -EIO or -ENOMEM. */
static int alw_reserve(struct remote *r, const char *key, uint64_t size, char id_out[64])
{
    if (size > ALW_MAX_BYTES || atomic_load(&r->restriction) != RESTRICT_NONE ||
        atomic_load(&r->access) != access_names[0] ||
        atomic_load(&r->prefix_len) + strlen(key) > KEY_MAX)
        return -EAGAIN; /* the server's answer is the one to give */
    struct charge *c = calloc(1, sizeof(*c));
    char *k = strdup(key);
    if (!c || !k) {
        free(c);
        free(k);
        return -ENOMEM;
    }
    c->key = k;
    c->size = size;
    bool fetched = false;
    int rc;
    pthread_mutex_lock(&r->alw_lock);
    for (;;) {
        struct timespec now = mono_now();
        struct allowance *a = r->current;
        if (a && alw_usable(a, now) && a->bytes_left >= size && a->objects_left >= 1) {
            a->bytes_left -= size;
            a->objects_left--;
            a->pending++;
            a->last_charge = now;
            c->a = a;
            c->n = ++r->next_charge;
            c->next = r->charges[c->n % CHARGE_BUCKETS];
            r->charges[c->n % CHARGE_BUCKETS] = c;
            snprintf(id_out, 64, LOCAL_PREFIX "%" PRIu64, c->n);
            rc = 0;
            break;
        }
        if (fetched) { /* a fresh allowance that cannot hold it: no loop */
            rc = -EAGAIN;
            break;
        }
        if (r->fetching) {
            pthread_cond_wait(&r->alw_cond, &r->alw_lock);
            continue;
        }
        uint64_t want_b, want_o;
        if (r->unsupported || (r->refused && ts_diff_ms(now, r->refused_at) < ALW_REFUSED_MS) ||
            !alw_size(r, size, &want_b, &want_o)) {
            rc = -EAGAIN; /* no allowance could hold it: the current one stays */
            break;
        }
        if (a) { /* cannot serve this file: retire it, its leftover goes back */
            a->retired = true;
            r->current = NULL;
        }
        /* Give back what can go first: the free figure counts it as reserved. */
        r->fetching = true;
        struct allowance *gone = alw_collect(r, now, false);
        pthread_mutex_unlock(&r->alw_lock);
        alw_release_list(r, gone, r->timeout_ms);
        /* sized again: what was just given back is free now */
        struct allowance *fresh = NULL;
        int frc = alw_size(r, size, &want_b, &want_o) ? alw_fetch(r, want_b, want_o, &fresh)
                                                      : -ERANGE;
        pthread_mutex_lock(&r->alw_lock);
        r->fetching = false;
        pthread_cond_broadcast(&r->alw_cond);
        if (frc == 0) {
            fresh->next = r->alws;
            r->alws = fresh;
            r->current = fresh;
            fetched = true;
            continue;
        }
        if (frc == -ENOSYS)
            r->unsupported = true;
        else if (frc != -ERANGE) { /* ERANGE: too big a file, not a refusal */
            r->refused = true;
            r->refused_at = mono_now();
        }
        rc = frc == -EIO || frc == -ENOMEM ? frc : -EAGAIN;
        break;
    }
    pthread_mutex_unlock(&r->alw_lock);
    if (rc)
        charge_free(c);
    return rc;
}

/* Before answering EDQUOT: give back what allowances hold beyond their
 * pending charges, waiting up to ALW_DRAIN_MS for the commits of those
 * charges (sent at once) and for give-backs already under way. True when
 * something went back (the exact path may now succeed). */
static bool alw_give_back(struct remote *r)
{
    bool any = false;
    struct timespec deadline = ts_add_ms(mono_now(), ALW_DRAIN_MS);
    pthread_mutex_lock(&r->alw_lock);
    for (struct allowance *a = r->alws; a; a = a->next) {
        if (a->dead || (!a->bytes_left && !a->objects_left))
            continue;
        a->retired = true;
        any = true;
    }
    r->current = NULL;
    r->cq_waiters++; /* the committer sends without lingering */
    pthread_cond_signal(&r->cq_cond);
    for (;;) {
        bool waiting = r->releasing > 0;
        for (struct allowance *a = r->alws; a && !waiting; a = a->next)
            waiting = a->retired && !a->dead && a->pending && (a->bytes_left || a->objects_left);
        if (!any || !waiting || ts_diff_ms(deadline, mono_now()) <= 0)
            break;
        pthread_cond_timedwait(&r->alw_cond, &r->alw_lock, &deadline);
    }
    r->cq_waiters--;
    struct allowance *gone = any ? alw_collect(r, mono_now(), false) : NULL;
    pthread_mutex_unlock(&r->alw_lock);
    alw_release_list(r, gone, r->timeout_ms);
    return any;
}

/* ---- commits of local charges ---- */

static int exact_reserve(struct remote *r, json_t *req, char id_out[64]);

/* The request body committing the charges of batch (linked by next). */
static json_t *commit_body(struct charge *batch, size_t n)
{
    if (n == 1)
        return json_pack("{s:s, s:I, s:s}", "key", batch->key, "bytes", (json_int_t)batch->landed,
                         "etag", batch->etag);
    json_t *list = json_array();
    for (struct charge *c = batch; list && c; c = c->next)
        if (json_array_append_new(list, json_pack("{s:s, s:I, s:s}", "key", c->key, "bytes",
                                                  (json_int_t)c->landed, "etag", c->etag)) != 0) {
            json_decref(list);
            list = NULL;
        }
    return list ? json_pack("{s:o}", "objects", list) : NULL;
}

/* Commit the n charges of batch, all of allowance a, in one request: POST
 * .../commit for one, .../commits for more (none when a is dead). Sets each
 * charge's rc; they no longer count in a->pending. */
static void commit_send(struct remote *r, struct allowance *a, struct charge *batch, size_t n)
{
    pthread_mutex_lock(&r->alw_lock);
    char aid[ID_MAX + 1];
    memcpy(aid, a->id, sizeof(aid));
    bool dead = a->dead;
    pthread_mutex_unlock(&r->alw_lock);

    bool got = false;
    uint64_t left_b = 0, left_o = 0;
    int64_t life_ms = 0;
    json_t *body = NULL, *req = dead ? NULL : commit_body(batch, n);
    int rc;
    if (dead) {
        rc = -ENOENT;
    } else if (!req) {
        rc = -ENOMEM; /* keys and ETags are valid utf-8 */
    } else {
        char path[128];
        long status;
        snprintf(path, sizeof(path), "/v1/allowances/%s/%s", aid, n == 1 ? "commit" : "commits");
        rc = quota_call(r, "quota commit", "POST", path, req, &status, &body);
        if (rc == 0 && status >= 200 && status < 300) {
            usage_from_answer(r, body);
            json_t *al = json_object_get(body, "allowance");
            json_t *exp = json_is_object(al) ? json_object_get(al, "expires_at") : NULL;
            got = get_u64(al, "bytes", &left_b) && get_u64(al, "objects", &left_o) &&
                  json_is_integer(exp);
            if (got)
                life_ms = alw_lifetime_ms(exp);
        } else if (rc == 0) {
            rc = quota_errno(r, "quota commit", status, body);
        }
    }
    json_decref(req);
    json_decref(body);

    pthread_mutex_lock(&r->alw_lock);
    struct timespec now = mono_now();
    a->pending -= (unsigned)n;
    if (rc == -ENOENT) { /* expired or released on the server: charge it no more */
        a->dead = true;
        if (r->current == a)
            r->current = NULL;
    }
    if (got) {
        /* Ours is the cautious figure; the server's is lower only when a
         * file grew past its charge. */
        if (left_b < a->bytes_left)
            a->bytes_left = left_b;
        if (left_o < a->objects_left)
            a->objects_left = left_o;
        a->expires = ts_add_ms(now, life_ms);
    }
    for (struct charge *c = batch; c; c = c->next)
        c->rc = rc;
    pthread_mutex_unlock(&r->alw_lock);
}

/* The commit of a charge whose allowance is gone: reserved and committed
 * again on the exact path. */
static int commit_exact(struct remote *r, const struct charge *c)
{
    char id[64];
    json_t *req = json_pack("{s:s, s:I}", "key", c->key, "bytes", (json_int_t)c->landed);
    int rc = req ? exact_reserve(r, req, id) : -ENOMEM;
    json_decref(req);
    return rc ? rc : remote_commit(r, id, c->landed, c->etag);
}

/* After commit_send: what the server no longer knows goes the exact path,
 * what cannot be reported is logged; frees the charges of batch. */
static void commit_settle(struct remote *r, struct charge *batch)
{
    while (batch) {
        struct charge *c = batch;
        batch = c->next;
        int rc = c->rc == -ENOENT ? commit_exact(r, c) : c->rc;
        if (rc)
            log_warn("cannot report the upload of '%s' to the server: %s (reconciliation will)",
                     c->key, strerror(-rc));
        charge_free(c);
    }
}

/* The committer thread: sends the queue in order, each batch the longest
 * run (up to COMMIT_BATCH) of charges of one allowance at its head. A first
 * commit lingers up to COMMIT_LINGER_MS for others, so a burst of uploads
 * costs a request (and a wake-up of this thread) per batch, not per file;
 * waiters for commits and remote_free cut the wait short. Drains the queue
 * before it ends. */
static void *committer_main(void *arg)
{
    struct remote *r = arg;
    pthread_mutex_lock(&r->alw_lock);
    for (;;) {
        while (!r->cq && !r->cq_stop)
            pthread_cond_wait(&r->cq_cond, &r->alw_lock);
        if (!r->cq)
            break;
        struct timespec until = ts_add_ms(mono_now(), COMMIT_LINGER_MS);
        while (r->cq_len < COMMIT_BATCH && !r->cq_stop && !r->cq_waiters &&
               pthread_cond_timedwait(&r->cq_cond, &r->alw_lock, &until) != ETIMEDOUT)
            ;
        struct charge *batch = r->cq, **end = &r->cq;
        struct allowance *a = batch->a; /* alive: its charges count in pending */
        size_t n = 0;
        while (*end && n < COMMIT_BATCH && (*end)->a == a) {
            end = &(*end)->next;
            n++;
        }
        r->cq = *end;
        r->cq_len -= n;
        if (!r->cq)
            r->cq_tail = &r->cq;
        *end = NULL;
        r->cq_sending = batch->seq;
        pthread_mutex_unlock(&r->alw_lock);

        commit_send(r, a, batch, n);
        commit_settle(r, batch);

        pthread_mutex_lock(&r->alw_lock);
        r->cq_sending = 0;
        pthread_cond_broadcast(&r->alw_cond);
        struct allowance *gone = alw_collect(r, mono_now(), false);
        pthread_mutex_unlock(&r->alw_lock);
        alw_release_list(r, gone, r->timeout_ms);
        pthread_mutex_lock(&r->alw_lock);
    }
    pthread_mutex_unlock(&r->alw_lock);
    return NULL;
}

/* Whether every commit queued up to seq is answered. Caller holds alw_lock. */
static bool commits_done(const struct remote *r, uint64_t seq)
{
    return (!r->cq || r->cq->seq > seq) && (!r->cq_sending || r->cq_sending > seq);
}

/* Wait up to timeout_ms for the commits queued before this call. True when
 * they are all answered. */
static bool commits_wait(struct remote *r, long timeout_ms)
{
    struct timespec deadline = ts_add_ms(mono_now(), timeout_ms);
    pthread_mutex_lock(&r->alw_lock);
    uint64_t seq = r->cq_seq;
    r->cq_waiters++;
    pthread_cond_signal(&r->cq_cond);
    while (!commits_done(r, seq) && ts_diff_ms(deadline, mono_now()) > 0)
        pthread_cond_timedwait(&r->alw_cond, &r->alw_lock, &deadline);
    r->cq_waiters--;
    bool done = commits_done(r, seq);
    pthread_mutex_unlock(&r->alw_lock);
    return done;
}

/* Stop the committer once it has sent what is queued. */
static void committer_stop(struct remote *r)
{
    pthread_mutex_lock(&r->alw_lock);
    bool started = r->cq_started;
    r->cq_stop = true;
    pthread_cond_signal(&r->cq_cond);
    pthread_mutex_unlock(&r->alw_lock);
    if (started)
        pthread_join(r->committer, NULL);
}

/* Queue the commit of the charge n for the committer (or, when it is not
 * running, send it); -ENOENT at once when its allowance is gone (the caller
 * reserves again). */
static int alw_commit(struct remote *r, uint64_t n, uint64_t size, const char *etag)
{
    /* An ETag that is not utf-8 (never seen from S3) would fail the whole
     * batch's JSON: the object is recorded without one. */
    json_t *e = json_string(etag);
    bool etag_ok = e != NULL;
    json_decref(e);
    pthread_mutex_lock(&r->alw_lock);
    struct charge *c = charge_take(r, n);
    if (!c) {
        pthread_mutex_unlock(&r->alw_lock);
        return -ENOENT;
    }
    struct allowance *a = c->a;
    if (a->dead) {
        a->pending--;
        pthread_cond_broadcast(&r->alw_cond);
        pthread_mutex_unlock(&r->alw_lock);
        charge_free(c);
        return -ENOENT;
    }
    if (!r->cq_started && !r->cq_stop &&
        pthread_create(&r->committer, NULL, committer_main, r) == 0)
        r->cq_started = true;
    c->landed = size;
    snprintf(c->etag, sizeof(c->etag), "%s", etag_ok ? etag : "");
    c->seq = ++r->cq_seq;
    c->next = NULL;
    if (!r->cq_started || r->cq_stop) { /* no committer (stopped, or no thread): send it now */
        pthread_mutex_unlock(&r->alw_lock);
        commit_send(r, a, c, 1);
        commit_settle(r, c);
        return 0;
    }
    *r->cq_tail = c;
    r->cq_tail = &c->next;
    if (++r->cq_len == 1 || r->cq_len == COMMIT_BATCH)
        pthread_cond_signal(&r->cq_cond); /* a first to linger on, or a full batch */
    pthread_mutex_unlock(&r->alw_lock);
    return 0;
}

static int alw_release(struct remote *r, uint64_t n)
{
    pthread_mutex_lock(&r->alw_lock);
    struct charge *c = charge_take(r, n);
    if (c) {
        struct allowance *a = c->a;
        a->pending--;
        if (!a->dead) {
            a->bytes_left += c->size;
            a->objects_left++;
        }
        pthread_cond_broadcast(&r->alw_cond);
    }
    pthread_mutex_unlock(&r->alw_lock);
    charge_free(c);
    return c ? 0 : -ENOENT;
}

/* The renewal thread's look at the allowances, every ALW_SWEEP_MS. */
static void alw_sweep(struct remote *r)
{
    pthread_mutex_lock(&r->alw_lock);
    bool held = r->alws != NULL;
    if (r->current && atomic_load(&r->restriction) != RESTRICT_NONE) {
        r->current->retired = true;
        r->current = NULL;
    }
    struct allowance *gone = alw_collect(r, mono_now(), false);
    pthread_mutex_unlock(&r->alw_lock);
    alw_release_list(r, gone, r->timeout_ms);
    if (held) {
        /* learn of a restriction or a new tier without a reservation */
        struct remote_usage u;
        remote_usage(r, &u);
    }
}

static void alw_shutdown(struct remote *r)
{
    unsigned pending = 0;
    pthread_mutex_lock(&r->alw_lock);
    struct allowance *gone = alw_collect(r, mono_now(), true);
    for (struct allowance *a = r->alws; a; a = a->next)
        pending += a->pending;
    pthread_mutex_unlock(&r->alw_lock);
    if (pending)
        log_info("%u quota charge(s) not committed: their allowance expires on the server",
                 pending);
    alw_release_list(r, gone, ALW_FREE_TIMEOUT);
}

static void alw_free_all(struct remote *r)
{
    for (int i = 0; i < CHARGE_BUCKETS; i++)
        while (r->charges[i]) {
            struct charge *c = r->charges[i];
            r->charges[i] = c->next;
            charge_free(c);
        }
    while (r->alws) {
        struct allowance *a = r->alws;
        r->alws = a->next;
        free(a);
    }
    r->current = NULL;
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
    int rc = r->batch ? alw_reserve(r, key, size, id_out) : -EAGAIN;
    if (rc != -EAGAIN) {
        json_decref(k);
        return rc;
    }
    json_t *req = json_pack("{s:o, s:I}", "key", k, "bytes", (json_int_t)size);
    if (!req)
        return -ENOMEM;
    rc = exact_reserve(r, req, id_out);
    if (rc == -EDQUOT && r->batch && alw_give_back(r))
        rc = exact_reserve(r, req, id_out);
    json_decref(req);
    return rc;
}

/* POST /v1/reservations with req ({key, bytes}). */
static int exact_reserve(struct remote *r, json_t *req, char id_out[64])
{
    long status;
    json_t *body = NULL;
    int rc = quota_call(r, "quota reservation", "POST", "/v1/reservations", req, &status, &body);
    if (rc)
        return rc;
    if (status == 201 || status == 200) {
        const char *id = get_str(body, "id", 1, ID_MAX);
        if (!id || !id_valid(id)) {
            log_error("quota reservation: pockityd at '%s' sent no valid reservation id",
                      r->base_url);
            rc = -EIO;
        } else {
            snprintf(id_out, 64, "%s", id);
            usage_from_answer(r, body);
        }
    } else {
        rc = quota_errno(r, "quota reservation", status, body);
    }
    json_decref(body);
    return rc;
}

int remote_commit(struct remote *r, const char *reservation_id, uint64_t size, const char *etag)
{
    uint64_t n;
    int local = local_id(reservation_id, &n);
    if (!r || local < 0 || (!local && !id_valid(reservation_id)) || !etag || !*etag ||
        strlen(etag) > ETAG_MAX || size > (uint64_t)INT64_MAX)
        return -EINVAL;
    if (local)
        return alw_commit(r, n, size, etag);
    json_t *e = json_string(etag);
    if (!e)
        return -EINVAL;
    json_t *req = json_pack("{s:I, s:o}", "bytes", (json_int_t)size, "etag", e);
    if (!req)
        return -ENOMEM;
    char path[128];
    snprintf(path, sizeof(path), "/v1/reservations/%s/commit", reservation_id);
    long status;
    json_t *body = NULL;
    int rc = quota_call(r, "quota commit", "POST", path, req, &status, &body);
    json_decref(req);
    if (rc)
        return rc;
    if (status >= 200 && status < 300)
        usage_from_answer(r, body);
    else
        rc = quota_errno(r, "quota commit", status, body);
    json_decref(body);
    return rc;
}

int remote_release(struct remote *r, const char *reservation_id)
{
    uint64_t n;
    int local = local_id(reservation_id, &n);
    if (!r || local < 0 || (!local && !id_valid(reservation_id)))
        return -EINVAL;
    if (local)
        return alw_release(r, n);
    char path[128];
    snprintf(path, sizeof(path), "/v1/reservations/%s", reservation_id);
    long status;
    json_t *body = NULL;
    int rc = quota_call(r, "quota release", "DELETE", path, NULL, &status, &body);
    if (rc)
        return rc;
    if (status < 200 || status >= 300)
        rc = quota_errno(r, "quota release", status, body);
    json_decref(body);
    return rc;
}

int remote_deleted(struct remote *r, const char *const *keys, size_t n)
{
    if (!r || (n && !keys))
        return -EINVAL;
    /* A commit queued before must not land after it: the ledger would count
     * a deleted object. */
    if (!commits_wait(r, r->write_wait_ms))
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
        int rc = quota_call(r, "deletion report", "POST", "/v1/objects/deleted", req, &status,
                            &body);
        json_decref(req);
        if (rc)
            return rc;
        if (status >= 200 && status < 300)
            usage_from_answer(r, body);
        else
            rc = quota_errno(r, "deletion report", status, body);
        json_decref(body);
        if (rc)
            return rc == -EINVAL || rc == -EACCES ? rc : -EIO;
    }
    return 0;
}

bool remote_settle(struct remote *r, long timeout_ms)
{
    return !r || commits_wait(r, timeout_ms);
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
    if (x == RESTRICT_NONE && access != access_names[2])
        return 0;
    /* Restricted, or holding the credentials of a restricted session: ask
     * again (GET /v1/usage, at most every USAGE_TTL_MS) whether that ended. */
    struct remote_usage u;
    remote_usage(r, &u);
    x = atomic_load(&r->restriction);
    if (x == RESTRICT_NONE && atomic_load(&r->access) == access_names[2]) {
        pthread_mutex_lock(&r->state_lock);
        struct s3_client *client = r->client;
        pthread_mutex_unlock(&r->state_lock);
        if (client && remote_refresh(r, client) == 0)
            log_info("new storage credentials: the pocket is writable again");
        if (atomic_load(&r->access) == access_names[2])
            x = RESTRICT_HELD; /* pockityd still grants read and delete only */
    }
    return x == RESTRICT_OVER_QUOTA ? -EDQUOT : x == RESTRICT_HELD ? -EROFS : 0;
}
