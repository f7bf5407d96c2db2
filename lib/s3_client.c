/* s3_client: the client object, connection sharing, signing and the retry
 * loop every S3 and STS request goes through. */
#include "s3_request.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define POOL_IDLE_MAX      64
#define ERROR_BODY_MAX     (64 * 1024)
#define MAX_SIGNED_HEADERS 96

struct s3_client {
    char *base_url;    /* scheme://host[:port] */
    char *host_header; /* what Host carries, and what is signed */
    char *region;
    char *bucket;
    char *ca_file;
    int sign_payload;
    long connect_timeout_ms;
    long request_timeout_ms;
    long stall_timeout_s;
    long silence_ms; /* 0: none (s3_config) */
    int max_retries;
    long backoff_base_ms;
    long backoff_max_ms;
    size_t max_response;
    s3_refresh_fn refresh;
    void *refresh_arg;

    pthread_rwlock_t cred_lock;
    char *access_key;    /* guarded by cred_lock */
    char *secret_key;    /* guarded by cred_lock */
    char *session_token; /* guarded by cred_lock; NULL without STS */
    uint64_t cred_gen;   /* guarded by cred_lock: bumped by each change of them */

    /* The day's signing key of the credentials of generation gen, one for
     * S3 and one for any other service (STS): each request of the day
     * signs with it instead of deriving it again (four HMACs). */
    pthread_mutex_t key_lock;
    struct day_key {
        uint64_t gen; /* 0: none */
        char date[9];
        char service[8];
        unsigned char key[32];
    } keys[2]; /* guarded by key_lock */

    CURLSH *share; /* DNS cache and TLS sessions */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

    /* Idle easy handles, each holding its own kept-alive connection: the
     * pool is a stack, so the most recently used (warm) one is reused first. */
    pthread_mutex_t pool_lock;
    CURL *idle[POOL_IDLE_MAX]; /* guarded by pool_lock */
    int n_idle;                /* guarded by pool_lock */

    _Atomic uint64_t n_requests;
    _Atomic uint64_t n_retries;
    _Atomic uint64_t n_connects;

    /* The server counts as silent once a request has spent silence_ms
     * without a byte and no other request heard from it meanwhile; then
     * one request at a time tries (a probe, starting at most every
     * PROBE_GAP_MS) and the others fail at once, until any request gets
     * an answer. */
    _Atomic uint64_t n_answers; /* responses whose status line came */
    atomic_bool silent;
    atomic_bool probing;
    _Atomic long long probe_at; /* monotonic ms before which no probe starts */
};

static __thread char error_detail[512];
#define RETRY_MIN_LEFT_MS 20           /* a retry needs this much of a deadline left */
static __thread long long deadline_ms; /* CLOCK_MONOTONIC; 0: none (s3_thread_deadline) */
static __thread long try_stall_s;      /* a try's stall timeout under a silence bound; 0: none */
#define PROBE_GAP_MS 1000              /* between the starts of probes of a silent server */

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void s3_thread_deadline(long ms)
{
    deadline_ms = ms > 0 ? mono_ms() + ms : 0;
}

long long s3_thread_deadline_save(void)
{
    return deadline_ms;
}

void s3_thread_deadline_restore(long long saved)
{
    deadline_ms = saved;
}

/* Milliseconds left before this thread's deadline: -1 with none, 0 past it. */
static long deadline_left(void)
{
    if (!deadline_ms)
        return -1;
    long long left = deadline_ms - mono_ms();
    return left > 0 ? (long)left : 0;
}

/* min(limit, the deadline's time left); limit 0 means none. */
static long deadline_cap(long limit)
{
    long left = deadline_left();
    return left < 0 || (limit > 0 && limit <= left) ? limit : left > 0 ? left : 1;
}

const char *s3_last_error_detail(void)
{
    return error_detail;
}

void s3_set_error_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_detail, sizeof(error_detail), fmt, ap);
    va_end(ap);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;

static void curl_global(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    struct s3_client *c = arg;
    if (data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
    struct s3_client *c = arg;
    if (data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&c->share_locks[data]);
}

/* Split the endpoint into the base URL and the Host header value. */
static int parse_endpoint(struct s3_client *c, const char *endpoint)
{
    int rc = S3_ERR_INVALID_ARG;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    CURLU *u = curl_url();
    if (!u)
        return S3_ERR_NOMEM;
    if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        goto out;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0)
        goto out;
    curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent when the scheme's default */
    struct buf b;
    buf_init(&b, 1024);
    if (port ? buf_addf(&b, "%s", host) || buf_addf(&b, ":%s", port) : buf_adds(&b, host)) {
        buf_release(&b);
        rc = S3_ERR_NOMEM;
        goto out;
    }
    c->host_header = buf_detach(&b, NULL);
    buf_init(&b, 1100);
    if (buf_addf(&b, "%s://%s", scheme, c->host_header)) {
        buf_release(&b);
        rc = S3_ERR_NOMEM;
        goto out;
    }
    c->base_url = buf_detach(&b, NULL);
    rc = c->host_header && c->base_url ? S3_OK : S3_ERR_NOMEM;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int s3_client_new(const struct s3_config *cfg, struct s3_client **out)
{
    *out = NULL;
    if (!cfg || !cfg->endpoint || !cfg->region || !cfg->access_key || !cfg->secret_key)
        return S3_ERR_INVALID_ARG;
    pthread_once(&curl_once, curl_global);
    if (curl_init_rc)
        return S3_ERR_TRANSPORT;

    struct s3_client *c = calloc(1, sizeof(*c));
    if (!c)
        return S3_ERR_NOMEM;
    pthread_rwlock_init(&c->cred_lock, NULL);
    pthread_mutex_init(&c->key_lock, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);

    int rc = parse_endpoint(c, cfg->endpoint);
    if (rc)
        goto fail;
    rc = S3_ERR_NOMEM;
    c->region = strdup(cfg->region);
    c->bucket = dup_or_null(cfg->bucket);
    c->ca_file = dup_or_null(cfg->ca_file);
    if (!c->region || (cfg->bucket && !c->bucket) || (cfg->ca_file && !c->ca_file))
        goto fail;
    c->sign_payload = cfg->sign_payload;
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    c->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 60000;
    c->stall_timeout_s = cfg->stall_timeout_s > 0 ? cfg->stall_timeout_s : 30;
    c->silence_ms = cfg->silence_ms > 0 ? cfg->silence_ms : 0;
    c->max_retries = cfg->max_retries > 0 ? cfg->max_retries : cfg->max_retries < 0 ? 0 : 5;
    c->backoff_base_ms = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 100;
    c->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 5000;
    c->max_response = cfg->max_response_bytes ? cfg->max_response_bytes : 16u << 20;
    c->refresh = cfg->refresh;
    c->refresh_arg = cfg->refresh_arg;

    rc = s3_client_set_credentials(c, cfg->access_key, cfg->secret_key, cfg->session_token);
    if (rc)
        goto fail;

    rc = S3_ERR_NOMEM;
    c->share = curl_share_init();
    if (!c->share)
        goto fail;
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    /* Connections are not shared here: libcurl's shared connection cache is
     * not thread-safe (its known bug 11.11), and it is capped at the
     * MAXCONNECTS of whichever handle returns a connection (5 by default),
     * so with more threads than that nearly every request opened a new
     * connection. Instead each pooled easy handle keeps its own live
     * connection across curl_easy_reset, and a thread taking a handle from
     * the pool takes its kept-alive connection with it. */
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = c;
    return S3_OK;
fail:
    s3_client_free(c);
    return rc;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void s3_client_free(struct s3_client *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    if (c->share)
        curl_share_cleanup(c->share);
    free(c->base_url);
    free(c->host_header);
    free(c->region);
    free(c->bucket);
    free(c->ca_file);
    free(c->access_key);
    free_secret(c->secret_key);
    free_secret(c->session_token);
    OPENSSL_cleanse(c->keys, sizeof(c->keys));
    pthread_rwlock_destroy(&c->cred_lock);
    pthread_mutex_destroy(&c->key_lock);
    pthread_mutex_destroy(&c->pool_lock);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_locks[i]);
    free(c);
}

int s3_client_set_credentials(struct s3_client *c, const char *access_key, const char *secret_key,
                              const char *token)
{
    if (!access_key || !secret_key || !*access_key || !*secret_key)
        return S3_ERR_INVALID_ARG;
    char *ak = strdup(access_key), *sk = strdup(secret_key);
    char *tk = token && *token ? strdup(token) : NULL;
    if (!ak || !sk || (token && *token && !tk)) {
        free(ak);
        free_secret(sk);
        free_secret(tk);
        return S3_ERR_NOMEM;
    }
    pthread_rwlock_wrlock(&c->cred_lock);
    char *old_ak = c->access_key, *old_sk = c->secret_key, *old_tk = c->session_token;
    c->access_key = ak;
    c->secret_key = sk;
    c->session_token = tk;
    c->cred_gen++;
    pthread_rwlock_unlock(&c->cred_lock);
    pthread_mutex_lock(&c->key_lock);
    OPENSSL_cleanse(c->keys, sizeof(c->keys)); /* of the old secret */
    pthread_mutex_unlock(&c->key_lock);
    free(old_ak);
    free_secret(old_sk);
    free_secret(old_tk);
    return S3_OK;
}

void s3_client_stats(struct s3_client *c, struct s3_stats *out)
{
    out->requests = atomic_load(&c->n_requests);
    out->retries = atomic_load(&c->n_retries);
    out->connects = atomic_load(&c->n_connects);
}

const char *s3_client_bucket(const struct s3_client *c)
{
    return c->bucket;
}

int s3_key_valid(const char *key)
{
    if (!key || !*key)
        return 0;
    return strlen(key) <= S3_MAX_KEY_LEN;
}

void s3_etag_copy(char etag[S3_ETAG_MAX], const char *src)
{
    if (!etag)
        return;
    snprintf(etag, S3_ETAG_MAX, "%s", src ? src : "");
}

/* ---- easy handles ---- */

static CURL *handle_get(struct s3_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->n_idle > 0)
        h = c->idle[--c->n_idle];
    pthread_mutex_unlock(&c->pool_lock);
    return h ? h : curl_easy_init();
}

static void handle_put(struct s3_client *c, CURL *h)
{
    curl_easy_reset(h);
    pthread_mutex_lock(&c->pool_lock);
    if (c->n_idle < POOL_IDLE_MAX) {
        c->idle[c->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

/* ---- one attempt ---- */

struct transfer {
    struct s3_req *r;
    CURL *h;
    struct s3_client *c;
    long status;        /* HTTP status once headers are in, else 0 */
    uint64_t sent;      /* body bytes handed to curl */
    uint64_t skip;      /* leading bytes to drop (server ignored our Range) */
    uint64_t limit;     /* bytes wanted when the server ignored our Range; 0: all */
    int write_error;    /* s3_status that made the write callback stop */
    struct buf errbody; /* body of an error answer */
    long stall_ms;      /* a try that moves no byte this long fails */
    uint64_t moved;     /* body bytes sent and received so far */
    long long moved_at; /* monotonic ms when moved last grew */
    int stalled;        /* on_progress ended the try */
};

/* libcurl calls this about once a second, and as data moves: a try that
 * has moved no body byte either way for stall_ms fails. (Curl's own low
 * speed limit averages over a window of seconds, so a small body sent at
 * once would hold a try that long past the stall.) */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)ultotal;
    struct transfer *t = arg;
    uint64_t moved = (uint64_t)dlnow + (uint64_t)ulnow;
    long long now = mono_ms();
    if (moved != t->moved) {
        t->moved = moved;
        t->moved_at = now;
    } else if (now - t->moved_at >= t->stall_ms) {
        t->stalled = 1;
        return 1;
    }
    return 0;
}

static long transfer_status(struct transfer *t)
{
    if (!t->status)
        curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &t->status);
    return t->status;
}

#define RESERVE_MAX (1u << 20) /* of a body allocated before its bytes came */

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct transfer *t = arg;
    size_t n = size * nmemb;
    long status = transfer_status(t);
    if (status < 200 || status >= 300) {
        /* Keep the start of an error body; drop the rest rather than grow. */
        size_t room = t->errbody.max - t->errbody.len;
        if (room)
            buf_add(&t->errbody, data, n < room ? n : room);
        return n;
    }
    if (t->r->sink) {
        const char *p = data;
        size_t len = n;
        if (status == 200 && t->r->has_range && t->skip) {
            size_t drop = t->skip < len ? (size_t)t->skip : len;
            t->skip -= drop;
            p += drop;
            len -= drop;
        }
        if (status == 200 && t->r->has_range && t->limit) {
            uint64_t room = t->limit > t->r->got ? t->limit - t->r->got : 0;
            if (len > room)
                len = (size_t)room;
        }
        if (len && t->r->sink->write(t->r->sink->arg, t->r->got, p, len) != 0) {
            t->write_error = S3_ERR_ABORTED;
            return 0;
        }
        t->r->got += len;
        return n;
    }
    if (t->r->response) {
        struct buf *b = t->r->response;
        curl_off_t announced = -1;
        /* a body of announced length in one allocation, within the cap (a
         * longer one fails below as it would have), up to RESERVE_MAX ahead
         * of the bytes: past it the body grows as they come */
        if (b->len == 0 &&
            curl_easy_getinfo(t->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) == CURLE_OK &&
            announced > 0 && (uint64_t)announced <= b->max)
            buf_reserve(b, (uint64_t)announced < RESERVE_MAX ? (size_t)announced : RESERVE_MAX);
        int rc = buf_add(b, data, n);
        if (rc) {
            t->write_error = rc == -E2BIG ? S3_ERR_TOO_LARGE : S3_ERR_NOMEM;
            return 0;
        }
    }
    return n;
}

static size_t on_read(char *buffer, size_t size, size_t nitems, void *arg)
{
    struct transfer *t = arg;
    size_t want = size * nitems;
    const struct s3_req *r = t->r;
    if (r->doc) {
        size_t left = r->doc_len - (size_t)t->sent;
        size_t n = left < want ? left : want;
        memcpy(buffer, r->doc + t->sent, n);
        t->sent += n;
        return n;
    }
    uint64_t left = r->body->length - t->sent;
    if (left == 0)
        return 0;
    if (want > left)
        want = (size_t)left;
    long n = r->body->read(r->body->arg, t->sent, buffer, want);
    if (n < 0 || (n == 0 && want > 0)) {
        t->write_error = S3_ERR_LOCAL_IO;
        return CURL_READFUNC_ABORT;
    }
    t->sent += (uint64_t)n;
    return (size_t)n;
}

static int on_seek(void *arg, curl_off_t offset, int origin)
{
    struct transfer *t = arg;
    if (origin != SEEK_SET || offset < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    t->sent = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static void head_reset(struct s3_head *h)
{
    s3_head_release(h);
    memset(h, 0, sizeof(*h));
}

static char *trim(char *s, char *end)
{
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        end--;
    *end = '\0';
    return s;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || (*end && *end != '/' && *end != '-'))
        return -1;
    *out = v;
    return 0;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
    struct transfer *t = arg;
    size_t n = size * nitems;
    struct s3_head *h = t->r->head;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        t->status = 0; /* a new response (after 100 Continue) */
        if (h)
            head_reset(h);
        return n;
    }
    if (!h)
        return n;
    char line[8192];
    if (n >= sizeof(line))
        return n; /* no header we use is this long */
    memcpy(line, data, n);
    line[n] = '\0';
    char *colon = memchr(line, ':', n);
    if (!colon)
        return n;
    *colon = '\0';
    char *name = trim(line, colon);
    char *value = trim(colon + 1, line + n);
    if (strcasecmp(name, "ETag") == 0) {
        s3_etag_copy(h->etag, value);
    } else if (strcasecmp(name, "Content-Length") == 0) {
        uint64_t v;
        if (!h->size && parse_u64(value, &v) == 0)
            h->size = v;
    } else if (strcasecmp(name, "Content-Range") == 0) {
        /* bytes FIRST-LAST/TOTAL: the whole object's size */
        const char *slash = strchr(value, '/');
        uint64_t v;
        if (slash && parse_u64(slash + 1, &v) == 0)
            h->size = v;
    } else if (strcasecmp(name, "Last-Modified") == 0) {
        time_t tm = curl_getdate(value, NULL);
        h->last_modified = tm > 0 ? tm : 0;
    } else if (strcasecmp(name, "Content-Type") == 0) {
        snprintf(h->content_type, sizeof(h->content_type), "%s", value);
    } else if (strncasecmp(name, "x-amz-meta-", 11) == 0 && name[11] && h->n_meta < S3_MAX_META) {
        if (!h->meta) {
            h->meta = calloc(S3_MAX_META, sizeof(*h->meta));
            if (!h->meta)
                return n;
        }
        char *mn = strdup(name + 11), *mv = strdup(value);
        if (!mn || !mv) {
            free(mn);
            free(mv);
            return n;
        }
        for (char *p = mn; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        h->meta[h->n_meta].name = mn;
        h->meta[h->n_meta].value = mv;
        h->n_meta++;
    }
    return n;
}

static int on_sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    struct transfer *t = arg;
    atomic_fetch_add(&t->c->n_connects, 1);
    return CURL_SOCKOPT_OK;
}

static enum s3_status map_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return S3_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return S3_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return S3_ERR_TIMEOUT;
    case CURLE_OUT_OF_MEMORY:
        return S3_ERR_NOMEM;
    case CURLE_READ_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return S3_ERR_LOCAL_IO;
    case CURLE_UNSUPPORTED_PROTOCOL: /* an HTTP/0.9 (status-less) answer */
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_FILESIZE_EXCEEDED:
        return S3_ERR_BAD_RESPONSE;
    default:
        return S3_ERR_TRANSPORT;
    }
}

/* The canonical URI and the full URL of r. */
static int build_url(struct s3_client *c, const struct s3_req *r, char **canonical_uri,
                     char **canonical_query, char **url)
{
    struct buf uri;
    buf_init(&uri, 4 * S3_MAX_KEY_LEN + 512);
    char *ekey = NULL, *ebucket = NULL, *query = NULL;
    int rc = S3_ERR_NOMEM;
    if (r->target != S3_TARGET_SERVICE) {
        if (!c->bucket) {
            rc = S3_ERR_INVALID_ARG;
            goto out;
        }
        ebucket = sigv4_uri_encode(c->bucket, strlen(c->bucket), 0);
        if (!ebucket || buf_addf(&uri, "/%s", ebucket))
            goto out;
        if (r->target == S3_TARGET_OBJECT) {
            ekey = sigv4_uri_encode(r->key, strlen(r->key), 1);
            if (!ekey || buf_addf(&uri, "/%s", ekey))
                goto out;
        }
    } else if (buf_adds(&uri, "/")) {
        goto out;
    }
    query = sigv4_canonical_query(r->query, r->n_query);
    if (!query)
        goto out;
    struct buf u;
    buf_init(&u, SIZE_MAX / 2);
    if (buf_addf(&u, "%s%s%s%s", c->base_url, uri.data, *query ? "?" : "", query)) {
        buf_release(&u);
        goto out;
    }
    *url = buf_detach(&u, NULL);
    *canonical_uri = buf_detach(&uri, NULL);
    *canonical_query = query;
    query = NULL;
    rc = (*url && *canonical_uri) ? S3_OK : S3_ERR_NOMEM;
out:
    buf_release(&uri);
    free(ekey);
    free(ebucket);
    free(query);
    return rc;
}

static int hash_source(const struct s3_source *src, char out[65])
{
    int rc = S3_ERR_NOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *chunk = malloc(1 << 16);
    if (!ctx || !chunk || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    for (uint64_t off = 0; off < src->length;) {
        size_t want = src->length - off < (1 << 16) ? (size_t)(src->length - off) : (1 << 16);
        long n = src->read(src->arg, off, chunk, want);
        if (n <= 0) {
            rc = S3_ERR_LOCAL_IO;
            goto out;
        }
        EVP_DigestUpdate(ctx, chunk, (size_t)n);
        off += (uint64_t)n;
    }
    unsigned char md[32];
    EVP_DigestFinal_ex(ctx, md, NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    rc = S3_OK;
out:
    EVP_MD_CTX_free(ctx);
    free(chunk);
    return rc;
}

static void md5_base64(const char *data, size_t len, char out[32])
{
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

struct signed_headers {
    struct sigv4_header h[MAX_SIGNED_HEADERS];
    size_t n;
    struct curl_slist *list;
};

static int header_add(struct signed_headers *sh, const char *name, const char *value)
{
    if (sh->n >= MAX_SIGNED_HEADERS)
        return S3_ERR_INVALID_ARG;
    /* A header value with CR, LF or other controls would split the request. */
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return S3_ERR_INVALID_ARG;
    sh->h[sh->n].name = name;
    sh->h[sh->n].value = value;
    sh->n++;
    char line[16384];
    int len = snprintf(line, sizeof(line), "%s: %s", name, value);
    if (len < 0 || (size_t)len >= sizeof(line))
        return S3_ERR_INVALID_ARG;
    struct curl_slist *l = curl_slist_append(sh->list, line);
    if (!l)
        return S3_ERR_NOMEM;
    sh->list = l;
    return S3_OK;
}

/* Map an error answer to a status, record the detail and the error code. */
static int answer_error(struct transfer *t, long status)
{
    struct s3_error_info info;
    memset(&info, 0, sizeof(info));
    int parsed =
            t->errbody.len && s3_xml_parse_error(t->errbody.data, t->errbody.len, &info) == S3_OK;
    if (parsed)
        snprintf(t->r->error_code, sizeof(t->r->error_code), "%s", info.code);
    enum s3_status st = s3_status_from_http(status, parsed ? info.code : NULL);
    if (parsed)
        s3_set_error_detail("http %ld %s: %s", status, info.code, info.message);
    else
        s3_set_error_detail("http %ld", status);
    return st;
}

/* ---- a silent server (s3_config.silence_ms) ---- */

/* A response came: the server is not silent (any more). */
static void heard(struct s3_client *c)
{
    atomic_fetch_add(&c->n_answers, 1);
    atomic_store(&c->silent, false);
}

/* Whether a request may go to a server that counts as silent: it becomes
 * the probe (one try, then probe_release) unless another is under way, or
 * the last one started less than PROBE_GAP_MS ago (a server that refuses
 * connections fails probes at once). */
static bool probe_claim(struct s3_client *c)
{
    if (mono_ms() < atomic_load(&c->probe_at) || atomic_exchange(&c->probing, true))
        return false;
    if (mono_ms() < atomic_load(&c->probe_at)) { /* another probe just started */
        atomic_store(&c->probing, false);
        return false;
    }
    atomic_store(&c->probe_at, mono_ms() + PROBE_GAP_MS);
    return true;
}

static void probe_release(struct s3_client *c)
{
    atomic_store(&c->probing, false);
}

/* A request spent the silence bound: the server counts as silent unless
 * another request heard from it since this one began (answers: the count
 * then; checked again after, as an answer may land in between). */
static void went_silent(struct s3_client *c, uint64_t answers)
{
    if (atomic_load(&c->n_answers) != answers)
        return;
    atomic_store(&c->silent, true);
    if (atomic_load(&c->n_answers) != answers)
        atomic_store(&c->silent, false);
}

bool s3_client_silent(struct s3_client *c)
{
    return atomic_load(&c->silent) &&
           (atomic_load(&c->probing) || mono_ms() < atomic_load(&c->probe_at));
}

/* The signing key of secret (credentials generation gen) for amz_date's
 * day and service into key: the client's, derived and kept at the day's
 * first request. Returns 0, or -errno (the request derives it then). */
static int day_key(struct s3_client *c, uint64_t gen, const char *secret, const char *amz_date,
                   const char *service, unsigned char key[32])
{
    struct day_key *k = &c->keys[strcmp(service, "s3") != 0];
    pthread_mutex_lock(&c->key_lock);
    int hit =
            k->gen == gen && strncmp(k->date, amz_date, 8) == 0 && strcmp(k->service, service) == 0;
    if (hit)
        memcpy(key, k->key, 32);
    pthread_mutex_unlock(&c->key_lock);
    if (hit)
        return 0;
    int rc = sigv4_signing_key(secret, amz_date, c->region, service, key);
    if (rc || strlen(service) >= sizeof(k->service))
        return rc;
    pthread_mutex_lock(&c->key_lock);
    k->gen = gen;
    memcpy(k->date, amz_date, 8);
    k->date[8] = '\0';
    snprintf(k->service, sizeof(k->service), "%s", service);
    memcpy(k->key, key, 32);
    pthread_mutex_unlock(&c->key_lock);
    return 0;
}

static int attempt(struct s3_client *c, struct s3_req *r, const char *payload_hash)
{
    int rc;
    char *canonical_uri = NULL, *canonical_query = NULL, *url = NULL, *auth = NULL;
    char *ak = NULL, *sk = NULL, *token = NULL;
    struct signed_headers sh = {.n = 0, .list = NULL};
    struct transfer t = {.r = r, .c = c};
    buf_init(&t.errbody, ERROR_BODY_MAX);
    CURL *h = NULL;

    r->got = 0;
    r->http_status = 0;
    r->error_code[0] = '\0';
    if (r->head)
        head_reset(r->head);

    rc = build_url(c, r, &canonical_uri, &canonical_query, &url);
    if (rc)
        goto out;

    pthread_rwlock_rdlock(&c->cred_lock);
    ak = strdup(c->access_key);
    sk = strdup(c->secret_key);
    token = c->session_token ? strdup(c->session_token) : NULL;
    uint64_t gen = c->cred_gen;
    int cred_fail = !ak || !sk || (c->session_token && !token);
    pthread_rwlock_unlock(&c->cred_lock);
    rc = S3_ERR_NOMEM;
    if (cred_fail)
        goto out;

    char amz_date[17];
    sigv4_amz_date(time(NULL), amz_date);
    char md5[32] = "";
    char length[32];
    uint64_t body_len = r->doc ? r->doc_len : r->body ? r->body->length : 0;
    snprintf(length, sizeof(length), "%llu", (unsigned long long)body_len);

    if ((rc = header_add(&sh, "Host", c->host_header)) ||
        (rc = header_add(&sh, "x-amz-date", amz_date)) ||
        (rc = header_add(&sh, "x-amz-content-sha256", payload_hash)))
        goto out;
    if (token && (rc = header_add(&sh, "x-amz-security-token", token)))
        goto out;
    if (r->content_type && (rc = header_add(&sh, "Content-Type", r->content_type)))
        goto out;
    if (r->doc && r->content_md5) {
        md5_base64(r->doc, r->doc_len, md5);
        if ((rc = header_add(&sh, "Content-MD5", md5)))
            goto out;
    }
    for (size_t i = 0; i < r->n_headers; i++)
        if ((rc = header_add(&sh, r->headers[i].name, r->headers[i].value)))
            goto out;

    struct sigv4_request sreq = {
            .method = r->method,
            .canonical_uri = canonical_uri,
            .canonical_query = canonical_query,
            .headers = sh.h,
            .n_headers = sh.n,
            .payload_hash = payload_hash,
            .region = c->region,
            .service = r->service ? r->service : "s3",
            .amz_date = amz_date,
            .access_key = ak,
            .secret_key = sk,
    };
    unsigned char key[32];
    if (day_key(c, gen, sk, amz_date, sreq.service, key) == 0)
        sreq.signing_key = key;
    int signed_rc = sigv4_sign(&sreq, &auth, NULL, NULL);
    OPENSSL_cleanse(key, sizeof(key));
    if (signed_rc != 0) {
        rc = S3_ERR_INVALID_ARG;
        goto out;
    }
    struct curl_slist *l = sh.list;
    struct buf authline;
    buf_init(&authline, 64 * 1024);
    if (buf_addf(&authline, "Authorization: %s", auth)) {
        rc = S3_ERR_NOMEM;
        goto out;
    }
    l = curl_slist_append(l, authline.data);
    buf_release(&authline);
    if (!l || !(sh.list = l) || !(l = curl_slist_append(l, "Expect:")) || !(sh.list = l) ||
        !(l = curl_slist_append(l, "Accept:")) || !(sh.list = l)) {
        rc = S3_ERR_NOMEM;
        goto out;
    }

    h = handle_get(c);
    if (!h) {
        rc = S3_ERR_NOMEM;
        goto out;
    }
    t.h = h;
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L); /* keys may hold "//", "./" or "../" */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, sh.list);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    long connect_ms = c->connect_timeout_ms;
    if (try_stall_s > 0 && try_stall_s * 1000L < connect_ms)
        connect_ms = try_stall_s * 1000L; /* the silence bound */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, deadline_cap(connect_ms));
    t.stall_ms = (try_stall_s > 0 ? try_stall_s : c->stall_timeout_s) * 1000L;
    t.moved_at = mono_ms();
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
    long total = deadline_cap(!r->sink && !r->body ? c->request_timeout_ms : 0);
    if (total > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, &t);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "pockity/" POCKITY_VERSION);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (r->no_body) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (r->doc || r->body) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &t);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &t);
        if (strcmp(r->method, "PUT") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    }
    if (r->has_range) {
        t.skip = r->range_offset;
        t.limit = r->range_length;
    }

    atomic_fetch_add(&c->n_requests, 1);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    r->http_status = status;
    if (status)
        heard(c);
    if (cc != CURLE_OK) {
        if (t.stalled) {
            rc = S3_ERR_TIMEOUT;
            s3_set_error_detail("no byte moved for %ld s", t.stall_ms / 1000);
        } else {
            rc = t.write_error ? t.write_error : (int)map_curl(cc);
            s3_set_error_detail("%s", t.write_error ? s3_strerror(rc) : curl_easy_strerror(cc));
        }
        goto out;
    }
    if (status < 200 || status >= 300) {
        rc = answer_error(&t, status);
        /* A HEAD answer has no body to name the error: with session
         * credentials, a bare 400 is how S3 says the token has expired. */
        if (r->no_body && status == 400 && token && rc == S3_ERR_INVALID)
            rc = S3_ERR_EXPIRED_TOKEN;
        goto out;
    }
    rc = S3_OK;
out:
    if (h)
        handle_put(c, h);
    curl_slist_free_all(sh.list);
    buf_release(&t.errbody);
    free(canonical_uri);
    free(canonical_query);
    free(url);
    free(auth);
    free(ak);
    free_secret(sk);
    free_secret(token);
    return rc;
}

/* Whether c signs with session credentials. */
static int has_token(struct s3_client *c)
{
    pthread_rwlock_rdlock(&c->cred_lock);
    int has = c->session_token != NULL;
    pthread_rwlock_unlock(&c->cred_lock);
    return has;
}

/* Full jitter: a random wait in [0, min(max, base * 2^n)] milliseconds. */
static long backoff_ms(const struct s3_client *c, int n)
{
    static __thread unsigned int seed;
    if (!seed)
        seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)&seed ^ (unsigned int)getpid();
    long ceiling = c->backoff_base_ms;
    for (int i = 0; i < n && ceiling < c->backoff_max_ms; i++)
        ceiling *= 2;
    if (ceiling > c->backoff_max_ms)
        ceiling = c->backoff_max_ms;
    return (long)(rand_r(&seed) % (unsigned long)(ceiling + 1));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The caller's deadline ends the retries of a request. The error to give
 * is the last one the deadline did not cause: real (0: none) with its
 * detail, else rc, the last try's. */
static int no_time_left(int rc, int real, const char *real_detail)
{
    char last[sizeof(error_detail)];
    memcpy(last, real ? real_detail : error_detail, sizeof(last));
    s3_set_error_detail("%s; no time left to retry", last);
    return real ? real : rc;
}

int s3_request(struct s3_client *c, struct s3_req *r)
{
    error_detail[0] = '\0';
    r->attempts = 0;
    if (r->target == S3_TARGET_OBJECT && !s3_key_valid(r->key))
        return S3_ERR_INVALID_ARG;

    char hash[65];
    if (r->doc) {
        sigv4_sha256_hex(r->doc, r->doc_len, hash);
    } else if (r->body) {
        if (c->sign_payload) {
            int rc = hash_source(r->body, hash);
            if (rc)
                return rc;
        } else {
            snprintf(hash, sizeof(hash), "%s", SIGV4_UNSIGNED_PAYLOAD);
        }
    } else {
        snprintf(hash, sizeof(hash), "%s", SIGV4_EMPTY_SHA256);
    }

    int refreshed = 0, rc = S3_ERR_TIMEOUT, real = 0;
    char real_detail[sizeof(error_detail)] = "";
    long silence = c->silence_ms;
    long quiet_left = silence; /* of the silence this request may wait */
    bool probe = false;
    if (silence && atomic_load(&c->silent)) {
        if (!(probe = probe_claim(c))) {
            s3_set_error_detail("the server has sent nothing for %ld s; one request at a time "
                                "tries until it answers",
                                silence / 1000);
            return S3_ERR_TIMEOUT;
        }
    }
    uint64_t answers = atomic_load(&c->n_answers);
    for (int retry = 0;; retry++) {
        if (deadline_left() == 0) {
            if (probe)
                probe_release(c);
            if (r->attempts)
                return no_time_left(rc, real, real_detail);
            s3_set_error_detail("the caller's deadline passed before the request");
            return S3_ERR_TIMEOUT;
        }
        r->attempts++;
        /* the try's stall timeout: the client's, or the silence left if less */
        long stall_s = c->stall_timeout_s;
        if (silence && (quiet_left + 999) / 1000 < stall_s)
            stall_s = (quiet_left + 999) / 1000;
        try_stall_s = silence ? stall_s : 0;
        long long began = mono_ms();
        rc = attempt(c, r, hash);
        try_stall_s = 0;
        if (probe) { /* one try: an answer ended the silence, else it goes on */
            probe = false;
            bool still = atomic_load(&c->silent);
            probe_release(c);
            if (still) {
                char last[sizeof(error_detail)];
                memcpy(last, error_detail, sizeof(last));
                s3_set_error_detail("the server still sends nothing (%s)", last);
                return rc;
            }
        }
        if (rc == S3_OK)
            return rc;
        if (rc != S3_ERR_TIMEOUT || deadline_left() != 0) { /* not cut short by the deadline */
            real = rc;
            memcpy(real_detail, error_detail, sizeof(real_detail));
        }
        if (rc == S3_ERR_TIMEOUT && silence && !r->http_status && deadline_left() != 0) {
            long waited = (long)(mono_ms() - began);
            quiet_left -= waited < stall_s * 1000 ? waited : stall_s * 1000;
            if (quiet_left < 1000) {
                s3_set_error_detail("the server sent nothing for %ld s", silence / 1000);
                went_silent(c, answers);
                return rc;
            }
        }
        if ((rc == S3_ERR_EXPIRED_TOKEN || (rc == S3_ERR_ACCESS_DENIED && has_token(c))) &&
            c->refresh && !refreshed) {
            refreshed = 1;
            char saved[sizeof(error_detail)];
            memcpy(saved, error_detail, sizeof(saved));
            if (c->refresh(c->refresh_arg, c, rc) == 0) {
                retry--;
                continue;
            }
            memcpy(error_detail, saved, sizeof(saved));
            return rc;
        }
        if (!s3_status_retryable(rc) || retry >= c->max_retries)
            return rc;
        /* a retry the deadline would cut off at once is not waited for */
        long wait = backoff_ms(c, retry), left = deadline_left();
        if (left >= 0 && wait + RETRY_MIN_LEFT_MS > left)
            return no_time_left(rc, real, real_detail);
        atomic_fetch_add(&c->n_retries, 1);
        sleep_ms(wait);
    }
}

/* ---- sources, sinks and heads ---- */

static long mem_read(void *arg, uint64_t offset, void *buf, size_t n)
{
    struct s3_mem *m = arg;
    if (offset > m->len)
        return -1;
    size_t left = m->len - (size_t)offset;
    if (n > left)
        n = left;
    if (n) /* data may be NULL when len is 0 */
        memcpy(buf, (char *)m->data + offset, n);
    return (long)n;
}

static long fd_read(void *arg, uint64_t offset, void *buf, size_t n)
{
    struct s3_fd *f = arg;
    for (;;) {
        ssize_t got = pread(f->fd, buf, n, (off_t)(f->base + offset));
        if (got < 0 && errno == EINTR)
            continue;
        return got;
    }
}

static int mem_write(void *arg, uint64_t offset, const void *data, size_t n)
{
    struct s3_mem *m = arg;
    if (offset > m->len || n > m->len - offset)
        return -1;
    memcpy((char *)m->data + offset, data, n);
    if (offset + n > m->used)
        m->used = (size_t)(offset + n);
    return 0;
}

static int fd_write(void *arg, uint64_t offset, const void *data, size_t n)
{
    struct s3_fd *f = arg;
    const char *p = data;
    while (n) {
        ssize_t w = pwrite(f->fd, p, n, (off_t)(f->base + offset));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    return 0;
}

struct s3_source s3_source_mem(struct s3_mem *m)
{
    return (struct s3_source){.read = mem_read, .arg = m, .length = m->len};
}

struct s3_source s3_source_fd(struct s3_fd *f, uint64_t length)
{
    return (struct s3_source){.read = fd_read, .arg = f, .length = length};
}

struct s3_sink s3_sink_mem(struct s3_mem *m)
{
    m->used = 0;
    return (struct s3_sink){.write = mem_write, .arg = m};
}

struct s3_sink s3_sink_fd(struct s3_fd *f)
{
    return (struct s3_sink){.write = fd_write, .arg = f};
}

void s3_head_release(struct s3_head *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_meta; i++) {
        free((char *)h->meta[i].name);
        free((char *)h->meta[i].value);
    }
    free(h->meta);
    h->meta = NULL;
    h->n_meta = 0;
}

const char *s3_head_meta(const struct s3_head *h, const char *name)
{
    for (size_t i = 0; i < h->n_meta; i++)
        if (strcasecmp(h->meta[i].name, name) == 0)
            return h->meta[i].value;
    return NULL;
}
