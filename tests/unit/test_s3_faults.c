/* Unit tests of the S3 client against a scripted HTTP server on loopback:
 * retries, timeouts, hostile and broken answers, keep-alive, token refresh,
 * and what goes on the wire (encoding, signing headers, ranges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "s3.h"

/* ---- the scripted server ---- */

struct request {
    char method[16];
    char target[4096];
    char headers[16384];
    size_t body_len;
};

enum action {
    REPLY,          /* send reply, keep the connection */
    REPLY_CLOSE,    /* send reply, then close */
    HANG,           /* send nothing, hold the connection until the client goes */
    STREAM_FOREVER, /* send reply head, then endless body bytes */
};

struct server;
typedef enum action (*scenario_fn)(struct server *s, int index, const struct request *req,
                                   struct buf *reply);

#define SERVER_MAX_CONNS 64

struct server {
    int fd;
    int port;
    pthread_t thread;
    scenario_fn scenario;
    volatile int stop;
    int concurrent; /* serve each connection on its own thread */
    pthread_mutex_t lock;
    int n_requests;                           /* requests seen; guarded by lock */
    int n_connections;                        /* connections accepted; guarded by lock */
    struct request last;                      /* the last request seen; guarded by lock */
    pthread_t conn_threads[SERVER_MAX_CONNS]; /* concurrent mode */
    int conn_fds[SERVER_MAX_CONNS];
    int n_conn_threads;
};

static int read_request(int fd, struct request *req)
{
    char buf[32768];
    size_t len = 0;
    char *end = NULL;
    while (!end) {
        if (len == sizeof(buf) - 1)
            return -1;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    memset(req, 0, sizeof(*req));
    sscanf(buf, "%15s %4095s", req->method, req->target);
    char *hdr = strstr(buf, "\r\n") + 2;
    size_t hlen = (size_t)(end - hdr);
    if (hlen >= sizeof(req->headers))
        hlen = sizeof(req->headers) - 1;
    memcpy(req->headers, hdr, hlen);
    const char *cl = strcasestr(req->headers, "content-length:");
    size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    req->body_len = want;
    size_t have = len - (size_t)(end + 4 - buf);
    while (have < want) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    return 0;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Answer requests on connection c until it closes; closes c. */
static void serve_connection(struct server *s, int c)
{
    for (;;) {
        struct request req;
        if (read_request(c, &req) != 0)
            break;
        pthread_mutex_lock(&s->lock);
        s->last = req;
        int index = s->n_requests++;
        pthread_mutex_unlock(&s->lock);
        struct buf reply;
        buf_init(&reply, 1 << 20);
        enum action a = s->scenario(s, index, &req, &reply);
        if (a == HANG) {
            char tmp[256];
            while (!s->stop && recv(c, tmp, sizeof(tmp), 0) > 0)
                ;
            buf_release(&reply);
            break;
        }
        if (strcmp(req.method, "HEAD") == 0 && reply.data) {
            /* a HEAD answer has headers only, whatever Content-Length says */
            char *end = strstr(reply.data, "\r\n\r\n");
            if (end)
                reply.len = (size_t)(end + 4 - reply.data);
        }
        send_all(c, reply.data, reply.len);
        buf_release(&reply);
        if (a == STREAM_FOREVER) {
            char chunk[65536];
            memset(chunk, 'x', sizeof(chunk));
            for (int i = 0; i < 4096 && !s->stop; i++) {
                ssize_t w = send(c, chunk, sizeof(chunk), MSG_NOSIGNAL);
                if (w <= 0)
                    break;
            }
            break;
        }
        if (a == REPLY_CLOSE)
            break;
    }
    close(c);
}

struct conn_arg {
    struct server *s;
    int fd;
};

static void *connection_main(void *arg)
{
    struct conn_arg a = *(struct conn_arg *)arg;
    free(arg);
    serve_connection(a.s, a.fd);
    return NULL;
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    while (!s->stop) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->n_connections++;
        pthread_mutex_unlock(&s->lock);
        struct conn_arg *ca = s->concurrent ? malloc(sizeof(*ca)) : NULL;
        if (!ca || s->n_conn_threads == SERVER_MAX_CONNS) {
            free(ca);
            serve_connection(s, c);
            continue;
        }
        *ca = (struct conn_arg){.s = s, .fd = c};
        s->conn_fds[s->n_conn_threads] = c;
        if (pthread_create(&s->conn_threads[s->n_conn_threads], NULL, connection_main, ca) != 0) {
            free(ca);
            serve_connection(s, c);
            continue;
        }
        s->n_conn_threads++;
    }
    return NULL;
}

static struct server *server_start_mode(scenario_fn fn, int concurrent)
{
    struct server *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->scenario = fn;
    s->concurrent = concurrent;
    pthread_mutex_init(&s->lock, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t alen = sizeof(a);
    getsockname(s->fd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    assert_int_equal(listen(s->fd, 16), 0);
    pthread_create(&s->thread, NULL, server_main, s);
    return s;
}

static struct server *server_start(scenario_fn fn)
{
    return server_start_mode(fn, 0);
}

static void server_stop(struct server *s)
{
    s->stop = 1;
    pthread_join(s->thread, NULL);
    /* connections the client left open end now (their threads close them) */
    for (int i = 0; i < s->n_conn_threads; i++) {
        shutdown(s->conn_fds[i], SHUT_RDWR);
        pthread_join(s->conn_threads[i], NULL);
    }
    close(s->fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* A client of s; silence_ms: s3_config.silence_ms (0: none). */
static struct s3_client *client_silent_after(struct server *s, int max_retries, long timeout_ms,
                                             long silence_ms)
{
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", s->port);
    struct s3_config cfg = {
            .endpoint = endpoint,
            .region = "us-east-1",
            .bucket = "bkt",
            .access_key = "AKIDTEST",
            .secret_key = "secret",
            .max_retries = max_retries,
            .backoff_base_ms = 5,
            .backoff_max_ms = 20,
            .request_timeout_ms = timeout_ms,
            .stall_timeout_s = 2,
            .max_response_bytes = 1 << 20,
            .silence_ms = silence_ms,
    };
    struct s3_client *c = NULL;
    assert_int_equal(s3_client_new(&cfg, &c), S3_OK);
    return c;
}

static struct s3_client *client_for(struct server *s, int max_retries, long timeout_ms)
{
    return client_silent_after(s, max_retries, timeout_ms, 0);
}

static void reply_status(struct buf *b, int status, const char *extra, const char *body)
{
    buf_addf(b, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n%s", status, strlen(body),
             extra ? extra : "", body);
}

static const char *error_xml(const char *code)
{
    static __thread char xml[256];
    snprintf(xml, sizeof(xml),
             "<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>m</Message></Error>", code);
    return xml;
}

/* ---- scenarios and tests ---- */

static enum action always_500(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 500, NULL, error_xml("InternalError"));
    return REPLY;
}

static void test_500_storm_retries_then_fails(void **state)
{
    struct server *s = server_start(always_500);
    struct s3_client *c = client_for(s, 3, 2000);
    struct s3_head h;
    int rc = s3_head_object(c, "k", &h);
    /* HEAD has no body: the status alone says 500 */
    assert_int_equal(rc, S3_ERR_SERVER);
    assert_int_equal(s->n_requests, 4);
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "abc", .len = 3};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_ERR_SERVER);
    assert_int_equal(s->n_requests, 8);
    assert_non_null(strstr(s3_last_error_detail(), "InternalError"));
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.retries, 6);
    s3_client_free(c);
    server_stop(s);
}

static enum action always_403(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 403, NULL, error_xml("AccessDenied"));
    return REPLY;
}

static void test_4xx_never_retried(void **state)
{
    struct server *s = server_start(always_403);
    struct s3_client *c = client_for(s, 5, 2000);
    struct s3_list_page page;
    assert_int_equal(s3_list_objects(c, "p/", "/", NULL, NULL, 0, &page), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s->n_requests, 1);
    s3_client_free(c);
    server_stop(s);
}

static enum action slow_down_twice(struct server *s, int i, const struct request *r, struct buf *b)
{
    if (i < 2)
        reply_status(b, 503, NULL, error_xml("SlowDown"));
    else
        reply_status(b, 200, "ETag: \"abc\"\r\n", "");
    return REPLY;
}

static void test_throttling_then_success(void **state)
{
    struct server *s = server_start(slow_down_twice);
    struct s3_client *c = client_for(s, 5, 2000);
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "hello", .len = 5};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_OK);
    assert_string_equal(etag, "\"abc\"");
    assert_int_equal(s->n_requests, 3);
    s3_client_free(c);
    server_stop(s);
}

static enum action request_timeout_once(struct server *s, int i, const struct request *r,
                                        struct buf *b)
{
    if (i == 0)
        reply_status(b, 400, NULL, error_xml("RequestTimeout"));
    else
        reply_status(b, 200, "ETag: \"e\"\r\n", "");
    return REPLY;
}

static void test_request_timeout_code_is_retried(void **state)
{
    struct server *s = server_start(request_timeout_once);
    struct s3_client *c = client_for(s, 2, 2000);
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "x", .len = 1};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_OK);
    assert_int_equal(s->n_requests, 2);
    s3_client_free(c);
    server_stop(s);
}

static enum action closes_mid_body(struct server *s, int i, const struct request *r, struct buf *b)
{
    buf_addf(b, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    return REPLY_CLOSE;
}

static void test_server_closes_mid_body(void **state)
{
    struct server *s = server_start(closes_mid_body);
    struct s3_client *c = client_for(s, 2, 2000);
    char data[1000];
    struct s3_mem m = {.data = data, .len = sizeof(data)};
    struct s3_sink sink = s3_sink_mem(&m);
    uint64_t got = 99;
    int rc = s3_get_object(c, "k", 0, 0, &sink, NULL, &got);
    assert_int_equal(rc, S3_ERR_CONNECT);
    assert_int_equal(got, 0);
    assert_int_equal(s->n_requests, 3);
    s3_client_free(c);
    server_stop(s);
}

static enum action endless_listing(struct server *s, int i, const struct request *r, struct buf *b)
{
    buf_addf(b, "HTTP/1.1 200 OK\r\nContent-Length: 268435456\r\n\r\n<ListBucketResult>");
    return STREAM_FOREVER;
}

static void test_over_long_response_is_capped(void **state)
{
    struct server *s = server_start(endless_listing);
    struct s3_client *c = client_for(s, 3, 10000);
    struct s3_list_page page;
    assert_int_equal(s3_list_objects(c, NULL, NULL, NULL, NULL, 0, &page), S3_ERR_TOO_LARGE);
    assert_int_equal(s->n_requests, 1); /* not retried: it would be as large again */
    s3_client_free(c);
    server_stop(s);
}

static enum action garbage_xml(struct server *s, int i, const struct request *r, struct buf *b)
{
    static const char *bodies[] = {
            "<ListBucketResult><Contents><Key>abc",
            "\x01\x02\x03 not xml at all",
            "<Foo/>",
            "",
    };
    reply_status(b, 200, NULL, bodies[i % 4]);
    return REPLY;
}

static void test_malformed_xml_is_bad_response(void **state)
{
    struct server *s = server_start(garbage_xml);
    struct s3_client *c = client_for(s, 3, 2000);
    for (int i = 0; i < 4; i++) {
        struct s3_list_page page;
        assert_int_equal(s3_list_objects(c, NULL, NULL, NULL, NULL, 0, &page), S3_ERR_BAD_RESPONSE);
    }
    assert_int_equal(s->n_requests, 4);
    s3_client_free(c);
    server_stop(s);
}

static enum action garbage_status(struct server *s, int i, const struct request *r, struct buf *b)
{
    buf_adds(b, "NOT-HTTP garbage\r\n\r\n");
    return REPLY_CLOSE;
}

static void test_garbage_status_line(void **state)
{
    struct server *s = server_start(garbage_status);
    struct s3_client *c = client_for(s, 1, 2000);
    struct s3_head h;
    int rc = s3_head_object(c, "k", &h);
    assert_int_not_equal(rc, S3_OK);
    assert_true(rc == S3_ERR_BAD_RESPONSE || rc == S3_ERR_CONNECT);
    s3_client_free(c);
    server_stop(s);
}

static enum action hang(struct server *s, int i, const struct request *r, struct buf *b)
{
    return HANG;
}

static void test_hanging_server_times_out(void **state)
{
    struct server *s = server_start(hang);
    struct s3_client *c = client_for(s, 1, 300);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct s3_head h;
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 5.0);
    assert_int_equal(s->n_requests, 2);
    s3_client_free(c);
    server_stop(s);
}

/* A thread's deadline bounds a request and its retries below the client's
 * own timeouts: 5 tries of 3 s each would take 15 s, the deadline ends
 * them after 0.4 s; a later request finds no time left and sends nothing;
 * lifting the deadline gives the client's timeouts back. */
static void test_thread_deadline(void **state)
{
    struct server *s = server_start(hang);
    struct s3_client *c = client_for(s, 4, 3000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s3_thread_deadline(400);
    struct s3_head h;
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.35 && secs < 1.5);
    usleep(50 * 1000); /* the server has counted what was sent */
    int sent = s->n_requests;
    assert_true(sent >= 1);
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    assert_int_equal(s->n_requests, sent); /* no time left: nothing sent */
    assert_non_null(strstr(s3_last_error_detail(), "deadline"));
    s3_thread_deadline(0);
    s3_client_free(c);
    c = client_for(s, 0, 600);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.55); /* the client's own timeout again */
    s3_client_free(c);
    server_stop(s);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The silence bound ends a request once the server has sent nothing for
 * that long over all its tries: 5 tries of a 2 s stall would hold a GET
 * 10 s against a hanging server; a bound of 3 s ends it after a whole try
 * and a shortened one. */
static void test_silence_bound(void **state)
{
    struct server *s = server_start(hang);
    struct s3_client *c = client_silent_after(s, 4, 60000, 3000);
    char data[100];
    struct s3_mem m = {.data = data, .len = sizeof(data)};
    struct s3_sink sink = s3_sink_mem(&m);
    uint64_t got = 0;
    double t0 = now_s();
    assert_int_equal(s3_get_object(c, "k", 0, sizeof(data), &sink, NULL, &got), S3_ERR_TIMEOUT);
    double secs = now_s() - t0;
    assert_true(secs >= 2.9 && secs < 5.0);
    usleep(50 * 1000); /* the server has counted what was sent */
    assert_int_equal(s->n_requests, 2);
    assert_non_null(strstr(s3_last_error_detail(), "sent nothing for 3 s"));
    s3_client_free(c);
    /* a small body goes at once, and the silence counts from then (curl's
     * own low speed limit averages over seconds: with it, a PUT against a
     * frozen RGW failed 9 s into a bound of 3 s) */
    c = client_silent_after(s, 4, 60000, 1000);
    struct s3_source src = s3_source_mem(&m);
    char etag[S3_ETAG_MAX];
    t0 = now_s();
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_ERR_TIMEOUT);
    secs = now_s() - t0;
    assert_true(secs >= 0.9 && secs < 2.5);
    s3_client_free(c);
    server_stop(s);
}

static volatile int silent_answers; /* the scenario below answers HEADs */

static enum action silent_until_told(struct server *s, int i, const struct request *r,
                                     struct buf *b)
{
    if (!silent_answers)
        return HANG;
    reply_status(b, 200, "ETag: \"e\"\r\n", "");
    return REPLY;
}

struct probe {
    struct s3_client *c;
    int rc;
    char detail[512];
};

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    struct s3_head h;
    p->rc = s3_head_object(p->c, "k", &h);
    snprintf(p->detail, sizeof(p->detail), "%s", s3_last_error_detail());
    if (p->rc == S3_OK)
        s3_head_release(&h);
    return NULL;
}

/* Once a request has spent the silence bound, the server counts as
 * silent: one request at a time tries (once), the others fail at once
 * without sending anything, and the first answer ends it. */
static void test_silent_server_fails_fast(void **state)
{
    silent_answers = 0;
    struct server *s = server_start_mode(silent_until_told, 1);
    struct s3_client *c = client_silent_after(s, 4, 60000, 1000);
    struct s3_head h;
    assert_false(s3_client_silent(c));
    double t0 = now_s();
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    double secs = now_s() - t0;
    assert_true(secs >= 0.9 && secs < 2.5);
    usleep(50 * 1000); /* the server has counted what was sent */
    assert_int_equal(s->n_requests, 1);
    /* silent now, but no request waits on it: the next one tries */
    assert_false(s3_client_silent(c));
    struct probe p = {.c = c};
    pthread_t t;
    t0 = now_s();
    assert_int_equal(pthread_create(&t, NULL, probe_main, &p), 0);
    usleep(300 * 1000);
    /* while it waits, the others fail at once, sending nothing */
    assert_true(s3_client_silent(c));
    double t1 = now_s();
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_TIMEOUT);
    assert_true(now_s() - t1 < 0.2);
    assert_non_null(strstr(s3_last_error_detail(), "one request at a time tries"));
    pthread_join(t, NULL);
    secs = now_s() - t0;
    assert_true(secs >= 0.9 && secs < 2.5); /* one try */
    assert_int_equal(p.rc, S3_ERR_TIMEOUT);
    assert_non_null(strstr(p.detail, "still sends nothing"));
    usleep(50 * 1000);
    assert_int_equal(s->n_requests, 2);
    /* the server answers the next try, and the silence is over */
    silent_answers = 1;
    assert_false(s3_client_silent(c));
    assert_int_equal(s3_head_object(c, "k", &h), S3_OK);
    s3_head_release(&h);
    assert_int_equal(s3_head_object(c, "k", &h), S3_OK);
    s3_head_release(&h);
    assert_int_equal(s->n_requests, 4);
    s3_client_free(c);
    server_stop(s);
}

static enum action slow_down(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 503, NULL, error_xml("SlowDown"));
    return REPLY;
}

/* Retries end when the deadline would cut the next one off, with the
 * server's error, not a "deadline passed" that hides it. */
static void test_deadline_keeps_last_error(void **state)
{
    struct server *s = server_start(slow_down);
    struct s3_client *c = client_for(s, 1000, 3000);
    s3_thread_deadline(150);
    struct s3_head h;
    int rc = s3_head_object(c, "k", &h);
    s3_thread_deadline(0);
    /* even when the last try was cut short by the deadline */
    assert_int_equal(rc, S3_ERR_SLOW_DOWN);
    assert_true(s->n_requests >= 2);
    assert_non_null(strstr(s3_last_error_detail(), "no time left to retry"));
    assert_null(strstr(s3_last_error_detail(), "before the request"));
    s3_client_free(c);
    server_stop(s);
}

static void test_connection_refused(void **state)
{
    /* a port nothing listens on: bind, note it, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t alen = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    close(fd);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct s3_config cfg = {.endpoint = endpoint,
                            .region = "r",
                            .bucket = "b",
                            .access_key = "a",
                            .secret_key = "s",
                            .max_retries = 2,
                            .backoff_base_ms = 1};
    struct s3_client *c;
    assert_int_equal(s3_client_new(&cfg, &c), S3_OK);
    struct s3_head h;
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_CONNECT);
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.requests, 3);
    s3_client_free(c);
}

static enum action ok_keepalive(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 200, "ETag: \"k\"\r\nx-amz-meta-mode: 33188\r\nX-Amz-Meta-Uid: 1000\r\n", "");
    return REPLY;
}

static void test_keepalive_and_metadata(void **state)
{
    struct server *s = server_start(ok_keepalive);
    struct s3_client *c = client_for(s, 0, 2000);
    for (int i = 0; i < 20; i++) {
        struct s3_head h;
        assert_int_equal(s3_head_object(c, "some/key", &h), S3_OK);
        assert_string_equal(h.etag, "\"k\"");
        assert_string_equal(s3_head_meta(&h, "mode"), "33188");
        assert_string_equal(s3_head_meta(&h, "uid"), "1000");
        assert_null(s3_head_meta(&h, "gid"));
        s3_head_release(&h);
    }
    assert_int_equal(s->n_requests, 20);
    assert_int_equal(s->n_connections, 1);
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.connects, 1);
    s3_client_free(c);
    server_stop(s);
}

static enum action echo_ok(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 200, "ETag: \"e\"\r\n", "");
    return REPLY;
}

static void test_wire_encoding_and_signing_headers(void **state)
{
    struct server *s = server_start(echo_ok);
    struct s3_client *c = client_for(s, 0, 2000);
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "data", .len = 4};
    struct s3_source src = s3_source_mem(&m);
    struct s3_meta meta[] = {{"mode", "33188"}, {"mtime", "1700000000"}};
    struct s3_put_opts opts = {.meta = meta, .n_meta = 2, .content_type = "text/plain"};
    assert_int_equal(s3_put_object(c, "a b+c%/\xe6\x97\xa5//./x?#", &src, &opts, etag), S3_OK);
    assert_string_equal(s->last.method, "PUT");
    assert_string_equal(s->last.target, "/bkt/a%20b%2Bc%25/%E6%97%A5//./x%3F%23");
    assert_non_null(strcasestr(s->last.headers, "x-amz-content-sha256: UNSIGNED-PAYLOAD"));
    assert_non_null(strcasestr(s->last.headers, "Authorization: AWS4-HMAC-SHA256 Credential="
                                                "AKIDTEST/"));
    assert_non_null(strcasestr(s->last.headers, "x-amz-meta-mode: 33188"));
    assert_non_null(strcasestr(s->last.headers, "x-amz-meta-mtime: 1700000000"));
    assert_null(strcasestr(s->last.headers, "Expect:"));
    assert_int_equal(s->last.body_len, 4);

    /* metadata that would split the request is refused before sending */
    struct s3_meta bad[] = {{"mode", "1\r\nX-Evil: 1"}};
    struct s3_put_opts bad_opts = {.meta = bad, .n_meta = 1};
    int before = s->n_requests;
    assert_int_equal(s3_put_object(c, "k", &src, &bad_opts, etag), S3_ERR_INVALID_ARG);
    struct s3_meta badname[] = {{"mo de", "1"}};
    bad_opts.meta = badname;
    assert_int_equal(s3_put_object(c, "k", &src, &bad_opts, etag), S3_ERR_INVALID_ARG);
    assert_int_equal(s->n_requests, before);

    /* keys: empty and over-long are refused locally */
    assert_int_equal(s3_put_object(c, "", &src, NULL, etag), S3_ERR_INVALID_ARG);
    char longkey[S3_MAX_KEY_LEN + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(s3_put_object(c, longkey, &src, NULL, etag), S3_ERR_INVALID_ARG);
    assert_int_equal(s->n_requests, before);

    /* the query is sorted and encoded */
    struct s3_list_page page;
    s3_list_objects(c, "p q/", "/", "tok+en=", NULL, 10, &page);
    assert_string_equal(s->last.target,
                        "/bkt?continuation-token=tok%2Ben%3D&delimiter=%2F&encoding-type=url"
                        "&list-type=2&max-keys=10&prefix=p%20q%2F");
    s3_client_free(c);
    server_stop(s);
}

static enum action signed_payload(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 200, "ETag: \"e\"\r\n", "");
    return REPLY;
}

static void test_signed_payload_hash(void **state)
{
    struct server *s = server_start(signed_payload);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", s->port);
    struct s3_config cfg = {.endpoint = endpoint,
                            .region = "us-east-1",
                            .bucket = "bkt",
                            .access_key = "a",
                            .secret_key = "s",
                            .sign_payload = 1};
    struct s3_client *c;
    assert_int_equal(s3_client_new(&cfg, &c), S3_OK);
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "abc", .len = 3};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_OK);
    /* SHA-256("abc") */
    assert_non_null(strcasestr(s->last.headers, "x-amz-content-sha256: ba7816bf8f01cfea414140de5dae"
                                                "2223b00361a396177a9cb410ff61f20015ad"));
    s3_client_free(c);
    server_stop(s);
}

static enum action range_reply(struct server *s, int i, const struct request *r, struct buf *b)
{
    if (i == 0) {
        buf_addf(b, "HTTP/1.1 206 Partial\r\nContent-Length: 4\r\nContent-Range: bytes 5-8/100\r\n"
                    "ETag: \"r\"\r\n\r\n5678");
    } else {
        /* a server that ignores Range and sends everything */
        buf_addf(b, "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n0123456789abcdef");
    }
    return REPLY;
}

static void test_ranged_get(void **state)
{
    struct server *s = server_start(range_reply);
    struct s3_client *c = client_for(s, 0, 2000);
    char data[4];
    struct s3_mem m = {.data = data, .len = sizeof(data)};
    struct s3_sink sink = s3_sink_mem(&m);
    struct s3_head h;
    uint64_t got;
    assert_int_equal(s3_get_object(c, "k", 5, 4, &sink, &h, &got), S3_OK);
    assert_non_null(strcasestr(s->last.headers, "Range: bytes=5-8"));
    assert_int_equal(got, 4);
    assert_memory_equal(data, "5678", 4);
    assert_int_equal(h.size, 100);
    s3_head_release(&h);
    memset(data, 0, sizeof(data));
    sink = s3_sink_mem(&m);
    assert_int_equal(s3_get_object(c, "k", 5, 4, &sink, NULL, &got), S3_OK);
    assert_int_equal(got, 4);
    assert_memory_equal(data, "5678", 4);
    s3_client_free(c);
    server_stop(s);
}

static int refresh_calls;

static int refresh_status;

static int refresh_ok(void *arg, struct s3_client *c, int status)
{
    refresh_status = status;
    refresh_calls++;
    return s3_client_set_credentials(c, "NEWKEY", "newsecret", "newtoken");
}

/* How the server refuses the old credentials (refuse_old_key). */
static struct {
    int status;
    const char *code;
} refusal;

static enum action refuse_old_key(struct server *s, int i, const struct request *r, struct buf *b)
{
    if (!strstr(r->headers, "NEWKEY"))
        reply_status(b, refusal.status, NULL, error_xml(refusal.code));
    else
        reply_status(b, 200, "ETag: \"e\"\r\n", "");
    return REPLY;
}

/* A HEAD signed with session_token (may be NULL) against a server refusing
 * the old credentials with status and code; the client (returned, with its
 * server) has made its requests. */
static struct s3_client *head_refused(int status, const char *code, const char *session_token,
                                      int want, struct server **out)
{
    refusal.status = status;
    refusal.code = code;
    struct server *s = server_start(refuse_old_key);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", s->port);
    struct s3_config cfg = {.endpoint = endpoint,
                            .region = "r",
                            .bucket = "b",
                            .access_key = "OLDKEY",
                            .secret_key = "s",
                            .session_token = session_token,
                            .refresh = refresh_ok};
    struct s3_client *c;
    assert_int_equal(s3_client_new(&cfg, &c), S3_OK);
    refresh_calls = 0;
    struct s3_head h;
    assert_int_equal(s3_head_object(c, "k", &h), want);
    if (want == S3_OK)
        s3_head_release(&h);
    *out = s;
    return c;
}

static void test_expired_token_refresh(void **state)
{
    struct server *s;
    struct s3_client *c = head_refused(400, "ExpiredToken", "oldtoken", S3_OK, &s);
    assert_int_equal(refresh_calls, 1);
    assert_int_equal(s->n_requests, 2);
    assert_non_null(strcasestr(s->last.headers, "x-amz-security-token: newtoken"));
    s3_client_free(c);
    server_stop(s);
}

static enum action always_expired(struct server *s, int i, const struct request *r, struct buf *b)
{
    reply_status(b, 400, NULL, error_xml("ExpiredToken"));
    return REPLY;
}

static void test_expired_token_refresh_once_only(void **state)
{
    struct server *s = server_start(always_expired);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", s->port);
    struct s3_config cfg = {.endpoint = endpoint,
                            .region = "r",
                            .bucket = "b",
                            .access_key = "a",
                            .secret_key = "s",
                            .refresh = refresh_ok};
    struct s3_client *c;
    assert_int_equal(s3_client_new(&cfg, &c), S3_OK);
    refresh_calls = 0;
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = "x", .len = 1};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_put_object(c, "k", &src, NULL, etag), S3_ERR_EXPIRED_TOKEN);
    assert_int_equal(refresh_calls, 1);
    assert_int_equal(s->n_requests, 2);
    s3_client_free(c);
    server_stop(s);
}

/* RGW's answer to expired session credentials: AccessDenied. */
static void test_denied_session_refresh(void **state)
{
    struct server *s;
    struct s3_client *c = head_refused(403, "AccessDenied", "oldtoken", S3_OK, &s);
    assert_int_equal(refresh_calls, 1);
    assert_int_equal(refresh_status, S3_ERR_ACCESS_DENIED);
    assert_int_equal(s->n_requests, 2);
    s3_client_free(c);
    server_stop(s);

    /* without a session, a denial is only that */
    c = head_refused(403, "AccessDenied", NULL, S3_ERR_ACCESS_DENIED, &s);
    assert_int_equal(refresh_calls, 0);
    assert_int_equal(s->n_requests, 1);
    s3_client_free(c);
    server_stop(s);
}

static enum action complete_with_error_body(struct server *s, int i, const struct request *r,
                                            struct buf *b)
{
    /* CompleteMultipartUpload can fail after a 200 status line */
    reply_status(b, 200, NULL, error_xml("InternalError"));
    return REPLY;
}

static void test_complete_200_with_error(void **state)
{
    struct server *s = server_start(complete_with_error_body);
    struct s3_client *c = client_for(s, 0, 2000);
    int nums[] = {1};
    const char *etags[] = {"\"a\""};
    char etag[S3_ETAG_MAX];
    int rc = s3_multipart_complete(c, "k", "upload", nums, etags, 1, etag);
    assert_int_equal(rc, S3_ERR_SERVER);
    s3_client_free(c);
    server_stop(s);
}

/* What a scenario saw, request by request ("METHOD target"). */
static char seen[16][4200];

static void see(int i, const struct request *r)
{
    if (i >= 0 && i < 16)
        snprintf(seen[i], sizeof(seen[i]), "%s %s", r->method, r->target);
}

static const char *head_etag = "\"0123456789abcdef0123456789abcdef-2\"";

static enum action complete_empty_etag(struct server *s, int i, const struct request *r,
                                       struct buf *b)
{
    see(i, r);
    if (strcmp(r->method, "HEAD") == 0) {
        char extra[128];
        snprintf(extra, sizeof(extra), "ETag: %s\r\n", head_etag);
        reply_status(b, 200, extra, "");
    } else {
        reply_status(b, 200, NULL,
                     "<?xml version=\"1.0\"?><CompleteMultipartUploadResult><Bucket>bkt</Bucket>"
                     "<Key>k</Key><ETag></ETag></CompleteMultipartUploadResult>");
    }
    return REPLY;
}

static void test_complete_empty_etag_reads_head(void **state)
{
    struct server *s = server_start(complete_empty_etag);
    struct s3_client *c = client_for(s, 0, 2000);
    int nums[] = {1, 2};
    const char *etags[] = {"\"a\"", "\"b\""};
    char etag[S3_ETAG_MAX] = "";
    assert_int_equal(s3_multipart_complete(c, "k", "up", nums, etags, 2, etag), S3_OK);
    assert_string_equal(etag, head_etag);
    assert_int_equal(s->n_requests, 2);
    assert_string_equal(seen[0], "POST /bkt/k?uploadId=up");
    assert_string_equal(seen[1], "HEAD /bkt/k");
    /* the object HEAD finds is not this upload's (n parts): overwritten since */
    const char *three[] = {"\"a\"", "\"b\"", "\"c\""};
    int nums3[] = {1, 2, 3};
    assert_int_equal(s3_multipart_complete(c, "k", "up", nums3, three, 3, etag),
                     S3_ERR_BAD_RESPONSE);
    assert_non_null(strstr(s3_last_error_detail(), "no etag"));
    head_etag = "\"0123456789abcdef0123456789abcdef\"";
    assert_int_equal(s3_multipart_complete(c, "k", "up", nums, etags, 2, etag),
                     S3_ERR_BAD_RESPONSE);
    s3_client_free(c);
    server_stop(s);
}

static enum action complete_empty_etag_then_gone(struct server *s, int i, const struct request *r,
                                                 struct buf *b)
{
    if (strcmp(r->method, "HEAD") == 0)
        reply_status(b, 404, NULL, "");
    else
        reply_status(b, 200, NULL,
                     "<CompleteMultipartUploadResult><ETag/></CompleteMultipartUploadResult>");
    return REPLY;
}

static void test_complete_empty_etag_object_gone(void **state)
{
    struct server *s = server_start(complete_empty_etag_then_gone);
    struct s3_client *c = client_for(s, 0, 2000);
    int nums[] = {1};
    const char *etags[] = {"\"a\""};
    char etag[S3_ETAG_MAX] = "";
    assert_int_equal(s3_multipart_complete(c, "k", "up", nums, etags, 1, etag), S3_ERR_NOT_FOUND);
    assert_int_equal(s->n_requests, 2);
    s3_client_free(c);
    server_stop(s);
}

static enum action rgw_upload_gone(struct server *s, int i, const struct request *r, struct buf *b)
{
    /* RGW 16.2 answers ListParts of a gone upload with NoSuchKey */
    reply_status(b, 404, NULL,
                 error_xml(strcmp(r->method, "GET") == 0 ? "NoSuchKey" : "NoSuchUpload"));
    return REPLY;
}

static void test_gone_upload_is_no_upload(void **state)
{
    struct server *s = server_start(rgw_upload_gone);
    struct s3_client *c = client_for(s, 0, 2000);
    struct s3_part_list pl;
    assert_int_equal(s3_multipart_list_parts(c, "k", "up", 0, &pl), S3_ERR_NO_UPLOAD);
    assert_int_equal(s3_multipart_abort(c, "k", "up"), S3_ERR_NO_UPLOAD);
    struct s3_mem m = {.data = "x", .len = 1};
    struct s3_source src = s3_source_mem(&m);
    char etag[S3_ETAG_MAX];
    assert_int_equal(s3_multipart_upload_part(c, "k", "up", 1, &src, etag), S3_ERR_NO_UPLOAD);
    /* a plain object's 404 stays "no such key" */
    struct s3_head h;
    assert_int_equal(s3_head_object(c, "k", &h), S3_ERR_NOT_FOUND);
    s3_client_free(c);
    server_stop(s);
}

static int refuse_single_deletes;

static enum action delete_scenario(struct server *s, int i, const struct request *r, struct buf *b)
{
    see(i, r);
    if (strcmp(r->method, "POST") == 0)
        reply_status(b, 200, NULL, "<DeleteResult></DeleteResult>");
    else if (refuse_single_deletes == 1)
        reply_status(b, 403, NULL, error_xml("AccessDenied"));
    else if (refuse_single_deletes == 2)
        reply_status(b, 500, NULL, error_xml("InternalError"));
    else
        reply_status(b, 204, NULL, "");
    return REPLY;
}

static void test_delete_objects_unsendable_keys(void **state)
{
    /* XML 1.0 cannot name "\x01" or invalid UTF-8: those go one by one */
    const char *keys[] = {"a", "ctrl\x01key", "b", "bad-utf8-\xff"};
    struct server *s = server_start(delete_scenario);
    struct s3_client *c = client_for(s, 0, 2000);
    struct s3_delete_result res;
    refuse_single_deletes = 0;
    assert_int_equal(s3_delete_objects(c, keys, 4, &res), S3_OK);
    assert_int_equal(res.n_deleted, 4);
    assert_int_equal(res.n_failures, 0);
    s3_delete_result_release(&res);
    assert_int_equal(s->n_requests, 3);
    assert_string_equal(seen[0], "POST /bkt?delete=");
    assert_string_equal(seen[1], "DELETE /bkt/ctrl%01key");
    assert_string_equal(seen[2], "DELETE /bkt/bad-utf8-%FF");

    /* a refusal is reported like DeleteObjects reports one */
    refuse_single_deletes = 1;
    assert_int_equal(s3_delete_objects(c, keys, 4, &res), S3_OK);
    assert_int_equal(res.n_deleted, 2);
    assert_int_equal(res.n_failures, 2);
    assert_string_equal(res.failures[0].key, "ctrl\x01key");
    assert_string_equal(res.failures[0].code, "AccessDenied");
    assert_string_equal(res.failures[1].key, "bad-utf8-\xff");
    s3_delete_result_release(&res);
    assert_int_equal(s3_delete_objects(c, keys, 4, NULL), S3_OK);

    /* only unsendable keys: no DeleteObjects request at all */
    refuse_single_deletes = 0;
    int before = s->n_requests;
    assert_int_equal(s3_delete_objects(c, keys + 1, 1, &res), S3_OK);
    assert_int_equal(res.n_deleted, 1);
    s3_delete_result_release(&res);
    assert_int_equal(s->n_requests, before + 1);
    assert_string_equal(seen[before], "DELETE /bkt/ctrl%01key");

    /* a failure that is not a refusal fails the call */
    refuse_single_deletes = 2;
    assert_int_equal(s3_delete_objects(c, keys, 4, &res), S3_ERR_SERVER);
    assert_int_equal(res.n_failures, 0);
    assert_null(res.failures);
    s3_client_free(c);
    server_stop(s);
}

struct head_job {
    struct s3_client *c;
    int rc;
};

static void *head_once(void *arg)
{
    struct head_job *j = arg;
    struct s3_head h;
    j->rc = s3_head_object(j->c, "k", &h);
    if (j->rc == S3_OK)
        s3_head_release(&h);
    return NULL;
}

static void test_keepalive_across_threads(void **state)
{
    /* requests from one thread after another share one connection */
    struct server *s = server_start(ok_keepalive);
    struct s3_client *c = client_for(s, 0, 2000);
    for (int i = 0; i < 6; i++) {
        struct head_job j = {.c = c, .rc = -1};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, head_once, &j), 0);
        pthread_join(th, NULL);
        assert_int_equal(j.rc, S3_OK);
    }
    assert_int_equal(s->n_requests, 6);
    assert_int_equal(s->n_connections, 1);
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.connects, 1);
    s3_client_free(c);
    server_stop(s);
}

static enum action slow_ok(struct server *s, int i, const struct request *r, struct buf *b)
{
    /* long enough for the client's threads to overlap */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 2000000};
    nanosleep(&ts, NULL);
    reply_status(b, 200, "ETag: \"k\"\r\n", "");
    return REPLY;
}

#define HAMMER_THREADS 8

struct hammer_job {
    struct s3_client *c;
    pthread_barrier_t *start;
    int failures;
};

static void *hammer_heads(void *arg)
{
    struct hammer_job *j = arg;
    pthread_barrier_wait(j->start);
    for (int i = 0; i < 25; i++) {
        struct s3_head h;
        if (s3_head_object(j->c, "k", &h) == S3_OK)
            s3_head_release(&h);
        else
            j->failures++;
    }
    return NULL;
}

static void test_keepalive_under_concurrency(void **state)
{
    /* Each thread holds one connection at a time, so however the requests
     * interleave, no more connections than threads are ever needed. */
    struct server *s = server_start_mode(slow_ok, 1);
    struct s3_client *c = client_for(s, 0, 5000);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, HAMMER_THREADS);
    pthread_t th[HAMMER_THREADS];
    struct hammer_job jobs[HAMMER_THREADS];
    for (int i = 0; i < HAMMER_THREADS; i++) {
        jobs[i] = (struct hammer_job){.c = c, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_heads, &jobs[i]), 0);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
    pthread_barrier_destroy(&start);
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.requests, HAMMER_THREADS * 25);
    if (st.connects > HAMMER_THREADS)
        fail_msg("%llu connections for %d threads", (unsigned long long)st.connects,
                 HAMMER_THREADS);
    s3_client_free(c);
    pthread_mutex_lock(&s->lock);
    int conns = s->n_connections, reqs = s->n_requests;
    pthread_mutex_unlock(&s->lock);
    assert_int_equal(reqs, HAMMER_THREADS * 25);
    assert_true(conns <= HAMMER_THREADS);
    server_stop(s);
}

static void test_bad_config(void **state)
{
    struct s3_client *c = NULL;
    struct s3_config cfg = {
            .endpoint = "ftp://x", .region = "r", .access_key = "a", .secret_key = "s"};
    assert_int_equal(s3_client_new(&cfg, &c), S3_ERR_INVALID_ARG);
    cfg.endpoint = "http://127.0.0.1:1/some/path";
    assert_int_equal(s3_client_new(&cfg, &c), S3_ERR_INVALID_ARG);
    cfg.endpoint = "not a url";
    assert_int_equal(s3_client_new(&cfg, &c), S3_ERR_INVALID_ARG);
    cfg.endpoint = "http://127.0.0.1:1";
    cfg.secret_key = NULL;
    assert_int_equal(s3_client_new(&cfg, &c), S3_ERR_INVALID_ARG);
    assert_null(c);
    s3_client_free(NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_500_storm_retries_then_fails),
            cmocka_unit_test(test_4xx_never_retried),
            cmocka_unit_test(test_throttling_then_success),
            cmocka_unit_test(test_request_timeout_code_is_retried),
            cmocka_unit_test(test_server_closes_mid_body),
            cmocka_unit_test(test_over_long_response_is_capped),
            cmocka_unit_test(test_malformed_xml_is_bad_response),
            cmocka_unit_test(test_garbage_status_line),
            cmocka_unit_test(test_hanging_server_times_out),
            cmocka_unit_test(test_thread_deadline),
            cmocka_unit_test(test_silence_bound),
            cmocka_unit_test(test_silent_server_fails_fast),
            cmocka_unit_test(test_deadline_keeps_last_error),
            cmocka_unit_test(test_connection_refused),
            cmocka_unit_test(test_keepalive_and_metadata),
            cmocka_unit_test(test_wire_encoding_and_signing_headers),
            cmocka_unit_test(test_signed_payload_hash),
            cmocka_unit_test(test_ranged_get),
            cmocka_unit_test(test_expired_token_refresh),
            cmocka_unit_test(test_expired_token_refresh_once_only),
            cmocka_unit_test(test_denied_session_refresh),
            cmocka_unit_test(test_complete_200_with_error),
            cmocka_unit_test(test_complete_empty_etag_reads_head),
            cmocka_unit_test(test_complete_empty_etag_object_gone),
            cmocka_unit_test(test_gone_upload_is_no_upload),
            cmocka_unit_test(test_delete_objects_unsendable_keys),
            cmocka_unit_test(test_keepalive_across_threads),
            cmocka_unit_test(test_keepalive_under_concurrency),
            cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
