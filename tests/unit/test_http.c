/* test_http: the HTTP server and metrics over real loopback connections, with
 * libcurl (and plain sockets for malformed traffic) as the client. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "buf.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (64 * 1024)

static struct http_server *srv;
static uint16_t port;
static int app_token = 42;
static atomic_int slow_started;

/* ---- handlers */

static void h_ping(struct http_request *req)
{
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void h_key(struct http_request *req)
{
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s,s:b}", "id", http_param(req, "id"), "key",
                              http_param(req, "key"), "other", http_param(req, "nope") != NULL));
}

static void h_pocket(struct http_request *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "id", http_param(req, "id")));
}

static void h_create_key(struct http_request *req)
{
    static const char *const allowed[] = {"name", "ttl", "admin", NULL};
    const char *name;
    int64_t ttl = 60;
    bool admin = false;
    if (!http_json_only_keys(req, allowed) || !http_json_get_string(req, "name", 1, 16, &name) ||
        !http_json_opt_int(req, "ttl", 1, 3600, &ttl) || !http_json_opt_bool(req, "admin", &admin))
        return;
    http_set_header(req, "Location", "/v1/keys/k1");
    http_reply_json(req, 201,
                    json_pack("{s:s,s:s,s:I,s:b}", "pocket", http_param(req, "id"), "name", name,
                              "ttl", (json_int_t)ttl, "admin", admin));
}

static void h_delete(struct http_request *req)
{
    http_reply_empty(req, 204);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void h_echo(struct http_request *req)
{
    http_reply_json(
            req, 200,
            json_pack("{s:o,s:o,s:o,s:s,s:s,s:s,s:s,s:s,s:i,s:o,s:b}", "status",
                      str_or_null(http_query(req, "status")), "x",
                      str_or_null(http_query(req, "x")), "flag",
                      str_or_null(http_query(req, "flag")), "client", http_client_addr(req), "id",
                      http_request_id(req), "method", http_method(req), "path", http_path(req),
                      "route", http_route_name(req), "app", *(int *)http_app(req), "header",
                      str_or_null(http_header(req, "x-test")), "started", http_start_ns(req) > 0));
}

static void h_raw(struct http_request *req)
{
    size_t len;
    const char *body = http_body(req, &len);
    json_t *j = http_json(req);
    http_reply_json(req, 200,
                    json_pack("{s:I,s:b,s:b}", "len", (json_int_t)len, "nul",
                              memchr(body, '\0', len) != NULL, "json", json_is_object(j)));
}

static void h_forget(struct http_request *req)
{
    (void)req;
}

static void h_double(struct http_request *req)
{
    http_reply_error(req, 409, "conflict", "first");
    http_reply_json(req, 200, json_pack("{}"));
}

static void h_slow(struct http_request *req)
{
    const char *ms = http_query(req, "ms");
    int n = ms ? atoi(ms) : 500;
    atomic_store(&slow_started, 1);
    struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000};
    nanosleep(&ts, NULL);
    http_reply_json(req, 200, json_pack("{s:i}", "slept", n));
}

static void h_limited(struct http_request *req)
{
    /* cmocka cannot assert off the main thread: a wrong answer shows as 500 */
    if (http_set_header(req, "Retry-After", "7") != 0 ||
        http_set_header(req, "Bad Name", "x") != -EINVAL ||
        http_set_header(req, "X-Ok", "a\r\nInjected: 1") != -EINVAL) {
        http_reply_error(req, 500, "internal_error", "http_set_header misbehaves");
        return;
    }
    http_reply_error(req, 429, "rate_limited", "slow down %d", 3);
}

static const struct http_route routes[] = {
        {"GET", "/v1/ping", h_ping, NULL, 0},
        {"GET", "/v1/pockets/{id}/keys/{key}", h_key, NULL, 0},
        {"POST", "/v1/pockets/{id}/keys", h_create_key, NULL, HTTP_JSON},
        {"GET", "/v1/pockets/{id}", h_pocket, NULL, 0},
        {"DELETE", "/v1/pockets/{id}", h_delete, NULL, 0},
        {"GET", "/v1/echo", h_echo, "echo", 0},
        {"POST", "/v1/raw", h_raw, NULL, 0},
        {"GET", "/v1/forget", h_forget, NULL, 0},
        {"GET", "/v1/double", h_double, NULL, 0},
        {"GET", "/v1/slow", h_slow, NULL, 0},
        {"GET", "/v1/limited", h_limited, NULL, 0},
        {"GET", "/metrics", http_metrics_handler, NULL, 0},
        {"GET", "/", h_ping, "root", 0},
};

/* ---- client side */

struct resp {
    long status;
    struct buf body;
    char request_id[128];
    char allow[128];
    char ctype[128];
    char retry_after[32];
    char location[128];
    char connection[32];
    json_t *json;
};

struct upload {
    const char *data;
    size_t len, pos;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    return buf_add(&r->body, p, sz * n) == 0 ? sz * n : 0;
}

static void take_header(const char *line, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    if (vl >= cap)
        vl = cap - 1;
    memcpy(dst, v, vl);
    dst[vl] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t len = sz * n;
    take_header(p, len, "X-Request-Id", r->request_id, sizeof(r->request_id));
    take_header(p, len, "Allow", r->allow, sizeof(r->allow));
    take_header(p, len, "Content-Type", r->ctype, sizeof(r->ctype));
    take_header(p, len, "Retry-After", r->retry_after, sizeof(r->retry_after));
    take_header(p, len, "Location", r->location, sizeof(r->location));
    take_header(p, len, "Connection", r->connection, sizeof(r->connection));
    return len;
}

static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
    struct upload *u = ud;
    size_t want = sz * n, left = u->len - u->pos;
    if (want > left)
        want = left;
    if (want > 4096)
        want = 4096; /* several chunks */
    memcpy(p, u->data + u->pos, want);
    u->pos += want;
    return want;
}

static void resp_release(struct resp *r)
{
    buf_release(&r->body);
    json_decref(r->json);
    r->json = NULL;
}

enum {
    PLAIN = 0,
    CHUNKED = 1,
    EXPECT = 2
};

/* Send one request; body_len < 0 means no body. Returns the CURLcode. */
static int request_on(uint16_t on_port, const char *host, const char *method, const char *path,
                      const char *body, long body_len, int mode, const char *extra_header,
                      struct resp *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, 8 * 1024 * 1024);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[4096];
    snprintf(url, sizeof(url), "http://%s:%u%s", host, (unsigned)on_port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, mode & EXPECT ? "Expect: 100-continue" : "Expect:");
    if (extra_header)
        hdrs = curl_slist_append(hdrs, extra_header);
    struct upload up = {body, body_len > 0 ? (size_t)body_len : 0, 0};
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (body_len >= 0 && (mode & CHUNKED)) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
    } else if (body_len >= 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "GET") == 0 && body_len < 0)
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (r->body.len && strncmp(r->ctype, "application/json", 16) == 0)
        r->json = json_loadb(r->body.data, r->body.len, 0, NULL);
    return (int)rc;
}

static void request(const char *method, const char *path, const char *body, long body_len, int mode,
                    const char *extra_header, struct resp *r)
{
    int rc = request_on(port, "127.0.0.1", method, path, body, body_len, mode, extra_header, r);
    if (rc != CURLE_OK)
        fail_msg("curl %s %s: %s", method, path, curl_easy_strerror((CURLcode)rc));
    /* every response of ours carries a request id */
    assert_true(strlen(r->request_id) > 0);
}

static void get(const char *path, struct resp *r)
{
    request("GET", path, NULL, -1, PLAIN, NULL, r);
}

static const char *jstr(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* Check {"error":{"code":CODE,"message":...}} and return the message. */
static const char *error_message(const struct resp *r, long status, const char *code)
{
    assert_int_equal(r->status, status);
    assert_string_equal(r->ctype, "application/json");
    assert_non_null(r->json);
    assert_int_equal(json_object_size(r->json), 1);
    json_t *e = json_object_get(r->json, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 2);
    assert_string_equal(jstr(e, "code"), code);
    return jstr(e, "message");
}

static void expect_error(const char *method, const char *path, const char *body, long len,
                         long status, const char *code)
{
    struct resp r;
    request(method, path, body, len, PLAIN, NULL, &r);
    error_message(&r, status, code);
    resp_release(&r);
}

static void ping_ok(void)
{
    struct resp r;
    get("/v1/ping", &r);
    assert_int_equal(r.status, 200);
    resp_release(&r);
}

/* ---- tests */

static void test_routing_params(void **state)
{
    struct resp r;
    get("/v1/pockets/p%20one/keys/k%2Bx%C3%A9", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(jstr(r.json, "id"), "p one");
    assert_string_equal(jstr(r.json, "key"), "k+x\xc3\xa9");
    assert_true(json_is_false(json_object_get(r.json, "other")));
    /* a fresh id is 16 hex digits */
    assert_int_equal(strlen(r.request_id), 16);
    assert_int_equal(strspn(r.request_id, "0123456789abcdef"), 16);
    resp_release(&r);

    get("/v1/pockets/abc", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "id"), "abc");
    resp_release(&r);

    get("/", &r);
    assert_int_equal(r.status, 200);
    resp_release(&r);

    request("DELETE", "/v1/pockets/abc", NULL, -1, PLAIN, NULL, &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body.len, 0);
    resp_release(&r);

    request("HEAD", "/v1/ping", NULL, -1, PLAIN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    resp_release(&r);
}

static void test_not_found(void **state)
{
    expect_error("GET", "/v1/nope", NULL, -1, 404, "not_found");
    expect_error("GET", "/v1/pockets//keys/x", NULL, -1, 404, "not_found");
    expect_error("GET", "/v1/pockets/abc/", NULL, -1, 404, "not_found");
    expect_error("GET", "/v1/ping/extra", NULL, -1, 404, "not_found");
    expect_error("GET", "/V1/ping", NULL, -1, 404, "not_found");
    /* a capture is bounded */
    char path[400] = "/v1/pockets/";
    memset(path + strlen(path), 'a', 300);
    path[12 + 300] = '\0';
    expect_error("GET", path, NULL, -1, 404, "not_found");
    /* more segments than any route */
    char deep[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "/a");
    expect_error("GET", deep, NULL, -1, 404, "not_found");
}

static void test_method_not_allowed(void **state)
{
    struct resp r;
    request("PUT", "/v1/pockets/abc", "{}", 2, PLAIN, NULL, &r);
    const char *msg = error_message(&r, 405, "method_not_allowed");
    assert_non_null(strstr(msg, "PUT"));
    assert_string_equal(r.allow, "GET, HEAD, DELETE");
    resp_release(&r);

    request("POST", "/v1/ping", "x", 1, PLAIN, NULL, &r);
    error_message(&r, 405, "method_not_allowed");
    assert_string_equal(r.allow, "GET, HEAD");
    resp_release(&r);
}

static void test_bad_paths(void **state)
{
    expect_error("GET", "/v1/pockets/a%00b/keys/k", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/a%2Fb", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/..", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/%2e%2E/keys/k", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/./ping", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/%zz", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/%4", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/pockets/a%0Ab", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/echo?x=a%00", NULL, -1, 400, "invalid_request");
    expect_error("GET", "/v1/echo?x=%G1", NULL, -1, 400, "invalid_request");
    ping_ok();
}

static void test_json_body(void **state)
{
    struct resp r;
    const char *body = "{\"name\":\"laptop\",\"ttl\":120,\"admin\":true}";
    request("POST", "/v1/pockets/p1/keys", body, (long)strlen(body), PLAIN,
            "Content-Type: application/json", &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.location, "/v1/keys/k1");
    assert_string_equal(jstr(r.json, "pocket"), "p1");
    assert_string_equal(jstr(r.json, "name"), "laptop");
    assert_int_equal(json_integer_value(json_object_get(r.json, "ttl")), 120);
    assert_true(json_is_true(json_object_get(r.json, "admin")));
    resp_release(&r);

    /* optional fields keep their defaults; null counts as absent */
    body = "{\"name\":\"x\",\"ttl\":null}";
    request("POST", "/v1/pockets/p1/keys", body, (long)strlen(body), PLAIN, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "ttl")), 60);
    assert_true(json_is_false(json_object_get(r.json, "admin")));
    resp_release(&r);
}

static const char *post_error(const char *body, size_t len)
{
    static char msg[512];
    struct resp r;
    request("POST", "/v1/pockets/p1/keys", body, (long)len, PLAIN, NULL, &r);
    snprintf(msg, sizeof(msg), "%s", error_message(&r, 400, "invalid_request"));
    resp_release(&r);
    return msg;
}

#define POST_ERROR(lit) post_error(lit, sizeof(lit) - 1)

static void test_json_errors(void **state)
{
    const char *m = POST_ERROR("{\"name\":");
    assert_non_null(strstr(m, "invalid json body at line 1 column"));
    m = POST_ERROR("[1,2]");
    assert_non_null(strstr(m, "json object"));
    m = POST_ERROR("\"just a string\"");
    assert_non_null(strstr(m, "invalid json"));
    m = POST_ERROR("{\"name\":\"\xff\xfe\"}");
    assert_non_null(strstr(m, "invalid json"));
    assert_non_null(strstr(m, "unable to decode byte 0xff"));
    m = POST_ERROR("{\"name\":\"a\\u0000b\"}");
    assert_non_null(strstr(m, "\\u0000 is not allowed"));
    m = POST_ERROR("{\"name\":\"a\",\"name\":\"b\"}");
    assert_non_null(strstr(m, "duplicate"));
    m = POST_ERROR("{\"na\0me\":1}");
    assert_non_null(strstr(m, "invalid json"));
    /* field helpers */
    m = POST_ERROR("{}");
    assert_string_equal(m, "missing field 'name'");
    m = POST_ERROR("{\"name\":5}");
    assert_string_equal(m, "field 'name' must be a string");
    m = POST_ERROR("{\"name\":\"\"}");
    assert_string_equal(m, "field 'name' must be 1 to 16 bytes long");
    m = POST_ERROR("{\"name\":\"01234567890123456\"}");
    assert_string_equal(m, "field 'name' must be 1 to 16 bytes long");
    m = POST_ERROR("{\"name\":\"x\",\"ttl\":0}");
    assert_string_equal(m, "field 'ttl' must be between 1 and 3600");
    m = POST_ERROR("{\"name\":\"x\",\"ttl\":1.5}");
    assert_string_equal(m, "field 'ttl' must be an integer");
    m = POST_ERROR("{\"name\":\"x\",\"admin\":1}");
    assert_string_equal(m, "field 'admin' must be true or false");
    m = POST_ERROR("{\"name\":\"x\",\"nmae\":1}");
    assert_string_equal(m, "unknown field 'nmae'");
    /* an empty body on a JSON route reaches the handler with no JSON */
    m = post_error("", 0);
    assert_string_equal(m, "missing field 'name'");
}

static void test_raw_body(void **state)
{
    struct resp r;
    static const char bin[] = "a\0b\0c";
    request("POST", "/v1/raw", bin, 5, PLAIN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), 5);
    assert_true(json_is_true(json_object_get(r.json, "nul")));
    assert_true(json_is_false(json_object_get(r.json, "json")));
    resp_release(&r);

    /* a route without HTTP_JSON parses lazily and does not refuse bad JSON */
    request("POST", "/v1/raw", "{\"a\":1}", 7, PLAIN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "json")));
    resp_release(&r);

    /* Expect: 100-continue under the cap gets its continue and the body is read */
    request("POST", "/v1/raw", "hello", 5, EXPECT, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), 5);
    resp_release(&r);

    /* exactly the cap is fine, plain and chunked */
    char *big = malloc(MAX_BODY);
    assert_non_null(big);
    memset(big, 'x', MAX_BODY);
    request("POST", "/v1/raw", big, MAX_BODY, PLAIN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), MAX_BODY);
    resp_release(&r);
    request("POST", "/v1/raw", big, MAX_BODY, CHUNKED, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "len")), MAX_BODY);
    resp_release(&r);
    free(big);
}

static void test_body_limit(void **state)
{
    size_t n = MAX_BODY + 36 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'y', n);
    static const int modes[] = {PLAIN, EXPECT, CHUNKED, CHUNKED | EXPECT};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        struct resp r;
        request("POST", "/v1/raw", big, (long)n, modes[i], NULL, &r);
        const char *msg = error_message(&r, 413, "payload_too_large");
        assert_non_null(strstr(msg, "65536"));
        resp_release(&r);
        ping_ok();
    }
    /* a JSON route checks the size before parsing */
    struct resp r;
    request("POST", "/v1/pockets/p/keys", big, (long)n, PLAIN, NULL, &r);
    error_message(&r, 413, "payload_too_large");
    resp_release(&r);
    free(big);
    ping_ok();
}

static void test_handler_bugs(void **state)
{
    expect_error("GET", "/v1/forget", NULL, -1, 500, "internal_error");
    /* the first reply wins */
    struct resp r;
    get("/v1/double", &r);
    assert_string_equal(error_message(&r, 409, "conflict"), "first");
    resp_release(&r);
    ping_ok();
}

static void test_request_id(void **state)
{
    struct resp r;
    request("GET", "/v1/echo", NULL, -1, PLAIN, "X-Request-Id: abc-123.X_y:z", &r);
    assert_string_equal(r.request_id, "abc-123.X_y:z");
    assert_string_equal(jstr(r.json, "id"), "abc-123.X_y:z");
    resp_release(&r);

    request("GET", "/v1/echo", NULL, -1, PLAIN, "X-Request-Id: bad id<script>", &r);
    assert_int_equal(strlen(r.request_id), 16);
    assert_string_equal(jstr(r.json, "id"), r.request_id);
    resp_release(&r);

    char longid[120] = "X-Request-Id: ";
    memset(longid + strlen(longid), 'a', 65);
    request("GET", "/v1/echo", NULL, -1, PLAIN, longid, &r);
    assert_int_equal(strlen(r.request_id), 16);
    resp_release(&r);

    /* two fresh ids differ; errors carry one too */
    struct resp a, b;
    get("/v1/nope", &a);
    get("/v1/nope", &b);
    assert_int_equal(strlen(a.request_id), 16);
    assert_string_not_equal(a.request_id, b.request_id);
    resp_release(&a);
    resp_release(&b);
}

static void test_query_client_headers(void **state)
{
    struct resp r;
    request("GET", "/v1/echo?status=active&x=a%26b+c%2B&flag&status=second", NULL, -1, PLAIN,
            "X-Test: hello", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), "active");
    assert_string_equal(jstr(r.json, "x"), "a&b c+");
    assert_string_equal(jstr(r.json, "flag"), "");
    assert_string_equal(jstr(r.json, "client"), "127.0.0.1");
    assert_string_equal(jstr(r.json, "method"), "GET");
    assert_string_equal(jstr(r.json, "path"), "/v1/echo");
    assert_string_equal(jstr(r.json, "route"), "echo");
    assert_string_equal(jstr(r.json, "header"), "hello");
    assert_int_equal(json_integer_value(json_object_get(r.json, "app")), 42);
    assert_true(json_is_true(json_object_get(r.json, "started")));
    resp_release(&r);

    get("/v1/echo", &r);
    assert_true(json_is_null(json_object_get(r.json, "status")));
    assert_true(json_is_null(json_object_get(r.json, "header")));
    resp_release(&r);
}

static void test_error_shape_and_headers(void **state)
{
    struct resp r;
    get("/v1/limited", &r);
    assert_string_equal(error_message(&r, 429, "rate_limited"), "slow down 3");
    assert_string_equal(r.retry_after, "7");
    resp_release(&r);
}

/* The value of the sample line starting with series (name and labels), or -1. */
static double metric_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

static char *fetch_metrics(void)
{
    struct resp r;
    get("/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, METRICS_CONTENT_TYPE);
    char *text = buf_detach(&r.body, NULL);
    resp_release(&r);
    return text;
}

/* Metrics are recorded when a request completes, which may be just after the
 * client has its answer: poll until series reaches want. */
static double wait_metric(const char *series, double want)
{
    double v = -1;
    for (int i = 0; i < 200; i++) {
        char *text = fetch_metrics();
        v = metric_value(text, series);
        free(text);
        if (v >= want)
            break;
        usleep(20 * 1000);
    }
    return v;
}

static void test_metrics_http(void **state)
{
    const char *ping200 =
            "pockityd_http_requests_total{route=\"/v1/ping\",method=\"GET\",status=\"200\"}";
    const char *ping_count = "pockityd_http_request_duration_seconds_count{route=\"/v1/ping\"}";
    const char *ping_inf =
            "pockityd_http_request_duration_seconds_bucket{route=\"/v1/ping\",le=\"+Inf\"}";
    ping_ok();
    double before = wait_metric(ping200, 1);
    double count_before = wait_metric(ping_count, before);
    assert_true(before >= 1);
    for (int i = 0; i < 5; i++)
        ping_ok();
    expect_error("GET", "/v1/nowhere", NULL, -1, 404, "not_found");
    expect_error("DELETE", "/v1/ping", NULL, -1, 405, "method_not_allowed");
    assert_true(wait_metric(ping200, before + 5) == before + 5);
    assert_true(wait_metric(ping_count, count_before + 5) >= count_before + 5);

    char *text = fetch_metrics();
    assert_non_null(strstr(text, "# TYPE pockityd_http_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE pockityd_http_request_duration_seconds histogram\n"));
    assert_true(metric_value(text, ping_inf) == metric_value(text, ping_count));
    assert_true(metric_value(text, "pockityd_http_request_duration_seconds_sum{route=\"/v1/"
                                   "ping\"}") >= 0);
    /* buckets are cumulative */
    double prev = 0;
    static const char *const les[] = {"0.001", "0.01", "0.1", "1", "10", "+Inf"};
    for (size_t i = 0; i < sizeof(les) / sizeof(les[0]); i++) {
        char series[200];
        snprintf(series, sizeof(series),
                 "pockityd_http_request_duration_seconds_bucket{route=\"/v1/ping\",le=\"%s\"}",
                 les[i]);
        double v = metric_value(text, series);
        assert_true(v >= prev);
        prev = v;
    }
    /* unknown paths share one label, so random URLs cannot blow up the series */
    assert_true(metric_value(text, "pockityd_http_requests_total{route=\"unmatched\",method="
                                   "\"GET\",status=\"404\"}") >= 1);
    assert_true(metric_value(text, "pockityd_http_requests_total{route=\"/v1/ping\",method="
                                   "\"DELETE\",status=\"405\"}") >= 1);
    assert_null(strstr(text, "nowhere"));
    free(text);
}

static void test_metrics_counters(void **state)
{
    static const char *const results[] = {"granted", "refused", NULL};
    assert_int_equal(metrics_counter_register("pockityd_test_sessions_total",
                                              "Sessions issued\nin tests \\ here"),
                     0);
    assert_int_equal(metrics_counter_register_labels("pockityd_test_reservations_total",
                                                     "Reservations", "result", results),
                     0);
    assert_int_equal(metrics_counter_register("bad name", "x"), -EINVAL);
    metrics_counter_inc("pockityd_test_sessions_total");
    metrics_counter_inc("pockityd_test_sessions_total");
    metrics_counter_add("pockityd_test_reservations_total", "result", "granted", 3);
    metrics_counter_add("pockityd_test_escape_total", "v", "a\"b\\c\nd", 1);
    metrics_counter_inc("9invalid");
    metrics_counter_add("pockityd_test_x_total", "bad-label", "v", 1);
    /* a histogram name cannot be used as a counter */
    metrics_counter_inc("pockityd_http_request_duration_seconds");
    assert_int_equal(metrics_counter_get("pockityd_test_sessions_total", NULL, NULL), 2);
    assert_int_equal(metrics_counter_get("pockityd_test_reservations_total", "result", "granted"),
                     3);
    assert_int_equal(metrics_counter_get("pockityd_test_nothing_total", NULL, NULL), 0);

    char *text = fetch_metrics();
    assert_non_null(strstr(text,
                           "# HELP pockityd_test_sessions_total Sessions issued\\nin tests \\\\ "
                           "here\n# TYPE pockityd_test_sessions_total counter\n"));
    assert_true(metric_value(text, "pockityd_test_sessions_total") == 2);
    assert_true(metric_value(text, "pockityd_test_reservations_total{result=\"granted\"}") == 3);
    assert_true(metric_value(text, "pockityd_test_reservations_total{result=\"refused\"}") == 0);
    assert_true(metric_value(text, "pockityd_test_escape_total{v=\"a\\\"b\\\\c\\nd\"}") == 1);
    assert_null(strstr(text, "9invalid"));
    assert_null(strstr(text, "pockityd_test_x_total"));
    assert_true(metric_value(text, "pockityd_http_request_duration_seconds") < 0);
    /* every line is a comment or "series value" */
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        strtod(sp + 1, &end);
        assert_true(*end == '\0');
    }
    free(text);
}

struct worker {
    int index;
    int ok;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    for (int j = 0; j < 25; j++) {
        struct resp r;
        memset(&r, 0, sizeof(r));
        buf_init(&r.body, 65536);
        char url[256], want[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/pockets/w%d/keys/%d", (unsigned)port,
                 w->index, j);
        snprintf(want, sizeof(want), "\"key\":\"%d\"", j);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200 &&
            r.body.data && strstr(r.body.data, want))
            w->ok++;
        buf_release(&r.body);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrent(void **state)
{
    enum {
        N = 8
    };
    pthread_t t[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i].index = i;
        w[i].ok = 0;
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        total += w[i].ok;
    }
    assert_int_equal(total, 200);
}

/* ---- raw sockets */

static int raw_connect(uint16_t on_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(on_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send data and read the answer until the server closes or goes quiet.
 * Returns the status code of the first response line, 0 for none. */
static int raw_exchange(const char *data, size_t len)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may hang up on garbage before reading it all */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(buf) - 1 && (n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    int status = 0;
    if (strncmp(buf, "HTTP/1.", 7) == 0)
        status = atoi(buf + 9);
    return status;
}

#define RAW(lit) raw_exchange(lit, sizeof(lit) - 1)

static void test_raw_garbage(void **state)
{
    assert_int_equal(RAW("GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_int_equal(RAW("GET http://example.com/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("BREW /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
    assert_int_equal(RAW("GET /v1/pockets/a%00b/keys/k HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("GET /v1/pockets/../keys/k HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("GET /v1/ping?x=%00 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("GET //v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
    /* whatever MHD says to these, it must not take the server down */
    int s = RAW("GARBAGE\r\n\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    s = RAW("\x01\x02\x03\xff\r\n\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    s = RAW("GET /v1/ping HTTP/9.9\r\nHost: x\r\n\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    s = RAW("GET /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    s = RAW("POST /v1/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    s = RAW("POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_true(s == 0 || (s >= 400 && s < 600));
    /* request line and headers are capped by the connection memory */
    static char big[200 * 1024 + 64];
    size_t n = 200 * 1024;
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', n);
    strcpy(big + 5 + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    s = raw_exchange(big, strlen(big));
    assert_true(s == 0 || (s >= 400 && s < 500));
    strcpy(big, "GET /v1/ping HTTP/1.1\r\nHost: x\r\nX-Big: ");
    size_t off = strlen(big);
    memset(big + off, 'b', n - off - 8);
    strcpy(big + n - 8, "\r\n\r\n");
    s = raw_exchange(big, strlen(big));
    assert_true(s == 0 || (s >= 400 && s < 500));
    ping_ok();
}

static void test_raw_disconnect_mid_body(void **state)
{
    static const char *const starts[] = {
            "POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\nabcdef",
            "POST /v1/pockets/p/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n{\"a",
            "POST /v1/raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
            "POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n"
            "Expect: 100-continue\r\n\r\n",
            "GET /v1/ping HTTP/1.1\r\nHo",
    };
    for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        int fd = raw_connect(port);
        assert_true(fd >= 0);
        assert_true(send(fd, starts[i], strlen(starts[i]), MSG_NOSIGNAL) > 0);
        usleep(50 * 1000);
        close(fd);
    }
    ping_ok();
}

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_slowloris(void **state)
{
    /* the server times out a client that never finishes its headers (2 s here) */
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    static const char part[] = "GET /v1/ping HTTP/1.1\r\nHost: x\r\n";
    assert_true(send(fd, part, sizeof(part) - 1, MSG_NOSIGNAL) > 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    double secs = elapsed_s(&t0);
    close(fd);
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
    assert_true(secs > 1.0 && secs < 9.0);
    ping_ok();
}

/* ---- access log */

static void test_access_log(void **state)
{
    char path[] = "/tmp/test_http_log_XXXXXX";
    int lf = mkstemp(path);
    assert_true(lf >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(lf, STDERR_FILENO);
    log_setup("test_http", LOG_LEVEL_INFO, 0);
    struct resp r;
    request("GET", "/v1/echo?token=s3cr3t-token", NULL, -1, PLAIN,
            "Authorization: Bearer hunter2-header", &r);
    char id[160];
    snprintf(id, sizeof(id), "id=%s", r.request_id);
    resp_release(&r);
    char text[65536];
    ssize_t n = 0;
    for (int i = 0; i < 200; i++) {
        n = pread(lf, text, sizeof(text) - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        if (strstr(text, id))
            break;
        usleep(10 * 1000);
    }
    log_setup("test_http", LOG_LEVEL_WARN, 0);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(lf);
    char *line = strstr(text, " info GET /v1/echo 200 ");
    assert_non_null(line);
    assert_non_null(strstr(line, id));
    assert_non_null(strstr(line, "client=127.0.0.1"));
    assert_non_null(strstr(line, "ms "));
    assert_null(strstr(text, "s3cr3t"));
    assert_null(strstr(text, "hunter2"));
}

/* ---- separate servers */

static void test_start_errors(void **state)
{
    struct http_server *s = (struct http_server *)1;
    struct http_config cfg = {.bind = "127.0.0.1"};
    static const char *const bad[] = {"v1/x",      "/v1//x",   "/v1/{",  "/v1/{}",
                                      "/v1/{a-b}", "/v1/x{y}", "/v1/..", "/v1/a%20b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_route r = {"GET", bad[i], h_ping, NULL, 0};
        assert_int_equal(http_server_start(&cfg, &r, 1, NULL, &s), -EINVAL);
        assert_null(s);
    }
    struct http_route nomethod = {NULL, "/x", h_ping, NULL, 0};
    assert_int_equal(http_server_start(&cfg, &nomethod, 1, NULL, &s), -EINVAL);
    /* the port is taken by the main server */
    cfg.port = port;
    assert_int_equal(http_server_start(&cfg, routes, 1, NULL, &s), -EIO);
    assert_null(s);
    http_server_stop(NULL);
}

struct slow_client {
    uint16_t port;
    struct resp r;
    int rc;
};

static void *slow_client_main(void *arg)
{
    struct slow_client *sc = arg;
    sc->rc = request_on(sc->port, "127.0.0.1", "GET", "/v1/slow?ms=800", NULL, -1, PLAIN, NULL,
                        &sc->r);
    return NULL;
}

static void test_graceful_stop(void **state)
{
    struct http_config cfg = {.bind = "127.0.0.1", .threads = 2, .stop_timeout_ms = 5000};
    struct http_server *s;
    assert_int_equal(http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), NULL, &s),
                     0);
    struct slow_client sc = {.port = http_server_port(s)};
    assert_true(sc.port != 0 && sc.port != port);
    atomic_store(&slow_started, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client_main, &sc), 0);
    for (int i = 0; i < 500 && !atomic_load(&slow_started); i++)
        usleep(10 * 1000);
    assert_true(atomic_load(&slow_started));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    http_server_stop(s);
    double secs = elapsed_s(&t0);
    pthread_join(t, NULL);
    assert_int_equal(sc.rc, CURLE_OK);
    assert_int_equal(sc.r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(sc.r.json, "slept")), 800);
    assert_string_equal(sc.r.connection, "close");
    resp_release(&sc.r);
    assert_true(secs > 0.3 && secs < 5.0);
    /* nobody listens there any more */
    int fd = raw_connect(sc.port);
    assert_int_equal(fd, -1);
}

static void test_ipv6(void **state)
{
    struct http_config cfg = {.bind = "::1", .threads = 1};
    struct http_server *s;
    int rc = http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), &app_token, &s);
    if (rc == -EIO || rc == -EADDRNOTAVAIL) {
        print_message("no IPv6 loopback here, skipping the IPv6 check\n");
        return;
    }
    assert_int_equal(rc, 0);
    struct resp r;
    assert_int_equal(
            request_on(http_server_port(s), "[::1]", "GET", "/v1/echo", NULL, -1, PLAIN, NULL, &r),
            CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "client"), "::1");
    resp_release(&r);
    http_server_stop(s);
}

/* [server] trusted_proxies: the list's syntax, membership, and the walk of
 * X-Forwarded-For from the right. */
static void test_proxies_parse(void **state)
{
    (void)state;
    struct http_proxies *p = NULL;
    char err[160];
    assert_int_equal(
            http_proxies_parse(" 10.0.0.7, 192.168.0.0/16,::1 , fd00::/8,::ffff:172.16.0.0/108", &p,
                               err, sizeof(err)),
            0);
    assert_true(http_proxies_trusted(p, "10.0.0.7"));
    assert_false(http_proxies_trusted(p, "10.0.0.8"));
    assert_true(http_proxies_trusted(p, "192.168.255.1"));
    assert_false(http_proxies_trusted(p, "192.169.0.1"));
    assert_true(http_proxies_trusted(p, "::1"));
    assert_true(http_proxies_trusted(p, "::ffff:10.0.0.7")); /* mapped matches IPv4 */
    assert_true(http_proxies_trusted(p, "fd12:3456::1"));
    assert_false(http_proxies_trusted(p, "fe80::1"));
    assert_true(http_proxies_trusted(p, "172.16.9.9")); /* /108 mapped = /12 */
    assert_false(http_proxies_trusted(p, "172.32.0.1"));
    assert_false(http_proxies_trusted(p, "not-an-address"));
    assert_false(http_proxies_trusted(p, NULL));
    http_proxies_free(p);

    /* blank is empty; NULL too */
    assert_int_equal(http_proxies_parse("  ", &p, err, sizeof(err)), 0);
    assert_false(http_proxies_trusted(p, "127.0.0.1"));
    http_proxies_free(p);
    assert_int_equal(http_proxies_parse(NULL, &p, err, sizeof(err)), 0);
    http_proxies_free(p);

    static const char *const bad[] = {
            "10.0.0.1,,10.0.0.2", ",10.0.0.1",   "10.0.0.256",  "10.0.0.0/33",
            "fd00::/129",         "10.0.0.0/",   "10.0.0.0/8x", "10.0.0.0/-1",
            "example.com",        "10.0.0.1:80", "[::1]",       "::ffff:10.0.0.0/95",
            "1.2.3.4 5.6.7.8",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = (struct http_proxies *)1;
        err[0] = '\0';
        if (http_proxies_parse(bad[i], &p, err, sizeof(err)) != -EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_null(p);
        assert_non_null(strstr(err, bad[i][0] == ',' || strstr(bad[i], ",,") ? "empty" : "not an"));
    }
}

static void test_forwarded_client(void **state)
{
    (void)state;
    struct http_proxies *p = NULL;
    char err[160], out[64];
    assert_int_equal(http_proxies_parse("10.0.0.0/8, fd00::/8", &p, err, sizeof(err)), 0);
    static const struct {
        const char *peer, *xff, *want;
    } cases[] = {
            /* an untrusted peer: its header is ignored */
            {"203.0.113.9", "198.51.100.1", "203.0.113.9"},
            /* a trusted peer without a header: the peer */
            {"10.0.0.5", NULL, "10.0.0.5"},
            {"10.0.0.5", "", "10.0.0.5"},
            /* one balancer: the entry it appended */
            {"10.0.0.5", "198.51.100.1", "198.51.100.1"},
            /* a client's forged entries on the left do not count */
            {"10.0.0.5", "1.1.1.1, 2.2.2.2, 198.51.100.1", "198.51.100.1"},
            /* chained trusted proxies are walked past */
            {"10.0.0.5", "198.51.100.1, 10.9.9.9,10.1.1.1", "198.51.100.1"},
            {"fd00::5", "2001:db8::7, fd00::9", "2001:db8::7"},
            /* ports and brackets, IPv4-mapped shown as IPv4 */
            {"10.0.0.5", "198.51.100.1:4711", "198.51.100.1"},
            {"10.0.0.5", "[2001:db8::1]:443", "2001:db8::1"},
            {"10.0.0.5", "::ffff:198.51.100.1", "198.51.100.1"},
            /* garbage stops the walk at the last address read */
            {"10.0.0.5", "198.51.100.1, unknown", "10.0.0.5"},
            {"10.0.0.5", "198.51.100.1, unknown, 10.2.2.2", "10.2.2.2"},
            {"10.0.0.5", "198.51.100.1, 1.2.3.4:x", "10.0.0.5"},
            /* empty elements are skipped */
            {"10.0.0.5", "198.51.100.1, ,", "198.51.100.1"},
            /* every entry trusted: the leftmost */
            {"10.0.0.5", "10.3.3.3, 10.4.4.4", "10.3.3.3"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http_forwarded_client(p, cases[i].peer, cases[i].xff, out, sizeof(out));
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: got '%s', want '%s'", i, out, cases[i].want);
    }
    /* no list: always the peer */
    http_forwarded_client(NULL, "10.0.0.5", "198.51.100.1", out, sizeof(out));
    assert_string_equal(out, "10.0.0.5");
    http_proxies_free(p);
}

/* End to end: a server trusting 127.0.0.1 takes the client from the header,
 * one that does not ignores it, and a bad list refuses to start. */
static void test_trusted_proxy_server(void **state)
{
    (void)state;
    struct http_config cfg = {.bind = "127.0.0.1", .threads = 1, .trusted_proxies = "127.0.0.1"};
    struct http_server *s;
    assert_int_equal(
            http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), &app_token, &s), 0);
    struct resp r;
    assert_int_equal(request_on(http_server_port(s), "127.0.0.1", "GET", "/v1/echo", NULL, -1,
                                PLAIN, "X-Forwarded-For: 6.6.6.6, 198.51.100.7", &r),
                     CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "client"), "198.51.100.7");
    resp_release(&r);
    http_server_stop(s);

    cfg.trusted_proxies = "10.0.0.0/8";
    assert_int_equal(
            http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), &app_token, &s), 0);
    assert_int_equal(request_on(http_server_port(s), "127.0.0.1", "GET", "/v1/echo", NULL, -1,
                                PLAIN, "X-Forwarded-For: 198.51.100.7", &r),
                     CURLE_OK);
    assert_string_equal(jstr(r.json, "client"), "127.0.0.1");
    resp_release(&r);
    http_server_stop(s);

    cfg.trusted_proxies = "10.0.0.0/40";
    assert_int_equal(
            http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), &app_token, &s),
            -EINVAL);
}

static int setup(void **state)
{
    log_setup("test_http", LOG_LEVEL_WARN, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_config cfg = {
            .bind = "127.0.0.1",
            .threads = 4,
            .max_body = MAX_BODY,
            .conn_timeout_s = 2,
            .conn_memory = 32 * 1024,
    };
    if (http_server_start(&cfg, routes, sizeof(routes) / sizeof(routes[0]), &app_token, &srv))
        return -1;
    port = http_server_port(srv);
    return port ? 0 : -1;
}

static int teardown(void **state)
{
    http_server_stop(srv);
    metrics_release();
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_routing_params),
            cmocka_unit_test(test_not_found),
            cmocka_unit_test(test_method_not_allowed),
            cmocka_unit_test(test_bad_paths),
            cmocka_unit_test(test_json_body),
            cmocka_unit_test(test_json_errors),
            cmocka_unit_test(test_raw_body),
            cmocka_unit_test(test_body_limit),
            cmocka_unit_test(test_handler_bugs),
            cmocka_unit_test(test_request_id),
            cmocka_unit_test(test_query_client_headers),
            cmocka_unit_test(test_error_shape_and_headers),
            cmocka_unit_test(test_metrics_http),
            cmocka_unit_test(test_metrics_counters),
            cmocka_unit_test(test_concurrent),
            cmocka_unit_test(test_raw_garbage),
            cmocka_unit_test(test_raw_disconnect_mid_body),
            cmocka_unit_test(test_slowloris),
            cmocka_unit_test(test_access_log),
            cmocka_unit_test(test_start_errors),
            cmocka_unit_test(test_graceful_stop),
            cmocka_unit_test(test_ipv6),
            cmocka_unit_test(test_proxies_parse),
            cmocka_unit_test(test_forwarded_client),
            cmocka_unit_test(test_trusted_proxy_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
