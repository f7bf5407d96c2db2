/* http: routing, request state and replies on top of libmicrohttpd; every
 * request is logged once and counted in metrics when it completes. */
#include "http.h"

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "secret.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEGMENTS    32  /* path segments; longer paths match no route */
#define MAX_PARAMS      8   /* captures per route */
#define MAX_PARAM_LEN   256 /* a longer segment is never captured */
#define MAX_QUERY_ARGS  64
#define MAX_OUT_HEADERS 16
#define MAX_ALLOW       16
#define MAX_ID_LEN      64
#define JSON_LOAD_FLAGS JSON_REJECT_DUPLICATES

#define DEFAULT_BIND         "127.0.0.1"
#define DEFAULT_THREADS      4
#define DEFAULT_MAX_BODY     (1024 * 1024)
#define DEFAULT_MAX_CONNS    1024
#define DEFAULT_CONN_TIMEOUT 30
#define DEFAULT_CONN_MEMORY  (64 * 1024)
#define DEFAULT_STOP_MS      10000

static const char oom_body[] =
        "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";

struct route_seg {
    const char *text; /* literal, or the capture's name (not NUL-terminated) */
    size_t len;
    bool param;
};

struct compiled_route {
    const struct http_route *r;
    const char *name;
    size_t n_segs;
    struct route_seg segs[MAX_SEGMENTS];
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct compiled_route *routes;
    size_t n_routes;
    void *app;
    size_t max_body;
    unsigned stop_timeout_ms;
    struct http_proxies *proxies; /* NULL: none trusted */
    uint16_t port;
    atomic_bool stopping;
    atomic_int in_flight; /* requests begun and not yet completed */
};

struct kv {
    char *key;
    char *value;
};

struct out_header {
    char *name;
    char *value;
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    const char *method; /* MHD's copy, valid for the request */
    char *path;         /* raw path, no query */
    char *segbuf;       /* decoded path segments, NUL-separated */
    char *segs[MAX_SEGMENTS];
    size_t n_segs;
    const struct compiled_route *route; /* NULL until matched */
    const char *label;                  /* route label for metrics and logs */
    const char *params[MAX_PARAMS];     /* point into segbuf, in capture order */
    struct kv *query;
    size_t n_query;
    const char *query_error; /* set by the argument iterator */
    struct buf body;
    uint64_t drained; /* bytes thrown away after the body went over the cap */
    bool too_large;
    bool body_oom;
    json_t *json;
    bool json_parsed;
    json_t *scope;       /* borrowed: where the field helpers look, NULL for the body */
    char scope_name[48]; /* how their messages name it, e.g. "objects[2]" */
    char id[MAX_ID_LEN + 1];
    char client[INET6_ADDRSTRLEN + 1];
    uint64_t start_ns;

    /* the reply, queued once the handler returns */
    bool replied;
    bool queued;
    int status;
    char *resp; /* malloc'd unless resp_static */
    size_t resp_len;
    bool resp_static;
    char *ctype;
    struct out_header hdrs[MAX_OUT_HEADERS];
    size_t n_hdrs;
};

static uint64_t now_ns(void)
{
    return (uint64_t)mono_ns();
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode %XX escapes (and '+' as a space when plus) in place. In a path
 * segment a '/' or any control character is refused; NUL always is.
 * Returns NULL, or the reason for refusing. */
static const char *pct_decode(char *s, bool plus, bool path)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == '%') {
            int hi = hexval(r[1]);
            int lo = hi < 0 ? -1 : hexval(r[2]);
            if (hi < 0 || lo < 0)
                return "malformed percent-encoding";
            c = (unsigned char)(hi * 16 + lo);
            r += 2;
            if (c == '\0')
                return "encoded NUL byte";
            if (path && c == '/')
                return "encoded '/' in a path segment";
        } else if (plus && c == '+') {
            c = ' ';
        }
        if (path && (c < 0x20 || c == 0x7f))
            return "control character in path";
        *w++ = (char)c;
    }
    *w = '\0';
    return NULL;
}

/* ---- route table */

static int compile_route(const struct http_route *r, struct compiled_route *cr)
{
    const char *p = r->pattern;
    if (!r->method || !*r->method || !r->handler || !p || p[0] != '/')
        return -EINVAL;
    cr->r = r;
    cr->name = r->name ? r->name : r->pattern;
    cr->n_segs = 0;
    if (strcmp(p, "/") == 0)
        return 0;
    size_t n_params = 0;
    p++;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || cr->n_segs == MAX_SEGMENTS)
            return -EINVAL;
        struct route_seg *s = &cr->segs[cr->n_segs++];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}' || n_params == MAX_PARAMS)
                return -EINVAL;
            for (size_t i = 1; i < len - 1; i++) {
                char c = p[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_'))
                    return -EINVAL;
            }
            s->text = p + 1;
            s->len = len - 2;
            s->param = true;
            n_params++;
        } else {
            for (size_t i = 0; i < len; i++)
                if (p[i] == '{' || p[i] == '}' || p[i] == '%')
                    return -EINVAL;
            if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
                return -EINVAL;
            s->text = p;
            s->len = len;
            s->param = false;
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

static bool path_matches(const struct compiled_route *cr, char *const *segs, size_t n)
{
    if (cr->n_segs != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const struct route_seg *s = &cr->segs[i];
        size_t len = strlen(segs[i]);
        if (s->param) {
            if (len == 0 || len > MAX_PARAM_LEN)
                return false;
        } else if (len != s->len || memcmp(segs[i], s->text, len) != 0) {
            return false;
        }
    }
    return true;
}

static bool method_matches(const char *route_method, const char *method)
{
    return strcmp(route_method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

static void allow_add(const char **allow, size_t *n, const char *method)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(allow[i], method) == 0)
            return;
    if (*n < MAX_ALLOW)
        allow[(*n)++] = method;
}

/* ---- replies */

static void set_reply(struct http_request *req, int status, char *body, size_t len,
                      const char *ctype)
{
    if (req->replied) {
        log_error("bug: second reply (%d) to %s '%s' ignored", status, req->method, req->label);
        free(body);
        return;
    }
    req->replied = true;
    if (status < 200 || status > 599) {
        log_error("bug: invalid status %d for %s '%s'", status, req->method, req->label);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    req->status = status;
    char *ct = ctype ? strdup(ctype) : NULL;
    if ((len && !body) || (ctype && !ct)) {
        free(body);
        free(ct);
        req->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        req->resp = (char *)oom_body;
        req->resp_len = sizeof(oom_body) - 1;
        req->resp_static = true;
        req->ctype = NULL; /* queue_reply falls back to JSON */
        return;
    }
    req->resp = body;
    req->resp_len = len;
    req->ctype = ct;
}

void http_reply_json(struct http_request *req, int status, json_t *body)
{
    if (!body) {
        http_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error", "out of memory");
        return;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    set_reply(req, status, text, text ? strlen(text) : 1, "application/json");
}

/* Keep a message valid UTF-8 for json_string: anything non-ASCII goes. */
static void ascii_only(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            *s = '?';
}

static void reply_verror(struct http_request *req, int status, const char *code, const char *fmt,
                         va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    json_t *m = json_string(msg);
    if (!m) {
        ascii_only(msg);
        m = json_string(msg);
    }
    json_t *body = m ? json_pack("{s:{s:s,s:o}}", "error", "code", code, "message", m) : NULL;
    http_reply_json(req, status, body);
}

void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_verror(req, status, code, fmt, ap);
    va_end(ap);
}

void http_reply_text(struct http_request *req, int status, const char *content_type,
                     const char *text)
{
    if (!text)
        text = "";
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (copy)
        memcpy(copy, text, len + 1);
    set_reply(req, status, copy, len ? len : (copy ? 0 : 1), content_type);
}

void http_reply_empty(struct http_request *req, int status)
{
    set_reply(req, status, NULL, 0, NULL);
}

static bool header_name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!(((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')) ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

int http_set_header(struct http_request *req, const char *name, const char *value)
{
    if (!header_name_ok(name) || !value || strpbrk(value, "\r\n"))
        return -EINVAL;
    if (req->n_hdrs == MAX_OUT_HEADERS)
        return -E2BIG;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -ENOMEM;
    }
    req->hdrs[req->n_hdrs].name = n;
    req->hdrs[req->n_hdrs].value = v;
    req->n_hdrs++;
    return 0;
}

/* Hand the recorded reply to MHD. Returns MHD_NO when the connection must be
 * dropped instead. */
static enum MHD_Result queue_reply(struct http_request *req)
{
    struct MHD_Response *resp;
    if (req->resp_len) {
        enum MHD_ResponseMemoryMode mode =
                req->resp_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE;
        resp = MHD_create_response_from_buffer(req->resp_len, req->resp, mode);
        if (resp && !req->resp_static)
            req->resp = NULL; /* MHD owns it now */
    } else {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!resp) {
        log_error("cannot create a response for %s '%s'", req->method, req->label);
        return MHD_NO;
    }
    bool ok = MHD_add_response_header(resp, "X-Request-Id", req->id) == MHD_YES &&
              MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES;
    if (ok && req->status != MHD_HTTP_NO_CONTENT)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                     req->ctype ? req->ctype : "application/json") == MHD_YES;
    for (size_t i = 0; ok && i < req->n_hdrs; i++)
        if (MHD_add_response_header(resp, req->hdrs[i].name, req->hdrs[i].value) != MHD_YES)
            log_warn("response header '%s' refused for %s '%s'", req->hdrs[i].name, req->method,
                     req->label);
    if (ok && (atomic_load(&req->srv->stopping) || req->too_large))
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close") == MHD_YES;
    enum MHD_Result rc = MHD_NO;
    if (ok)
        rc = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    if (rc == MHD_YES)
        req->queued = true;
    else
        log_error("cannot queue a %d response for %s '%s'", req->status, req->method, req->label);
    return rc;
}

/* Answer with an error right away, from inside the access handler. */
static enum MHD_Result answer_error(struct http_request *req, int status, const char *code,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result answer_error(struct http_request *req, int status, const char *code,
                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_verror(req, status, code, fmt, ap);
    va_end(ap);
    return queue_reply(req);
}

/* ---- request set-up */

static void request_free(struct http_request *req)
{
    free(req->path);
    free(req->segbuf);
    for (size_t i = 0; i < req->n_query; i++) {
        free(req->query[i].key);
        free(req->query[i].value);
    }
    free(req->query);
    buf_release(&req->body);
    json_decref(req->json);
    if (!req->resp_static)
        free(req->resp);
    free(req->ctype);
    for (size_t i = 0; i < req->n_hdrs; i++) {
        free(req->hdrs[i].name);
        free(req->hdrs[i].value);
    }
    free(req);
}

static bool id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n == MAX_ID_LEN ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n > 0;
}

static void make_request_id(struct http_request *req)
{
    const char *given = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && id_ok(given)) {
        strcpy(req->id, given);
        return;
    }
    unsigned char rnd[8];
    if (secret_id_random(rnd, sizeof(rnd)) != 0) {
        /* no entropy: still unique enough to correlate logs */
        static atomic_uint_fast64_t counter;
        uint64_t v = now_ns() ^ (atomic_fetch_add(&counter, 1) << 40);
        memcpy(rnd, &v, sizeof(rnd));
    }
    secret_hex_encode(rnd, sizeof(rnd), req->id, sizeof(req->id));
}

/* ---- trusted proxies */

#define MAX_PROXIES 256  /* entries of [server] trusted_proxies */
#define MAX_XFF     8192 /* bytes of X-Forwarded-For read */

struct proxy_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned bits;
};

struct http_proxies {
    size_t n;
    struct proxy_net nets[];
};

/* Parse the address in s (len bytes; with "[v6]" brackets and an optional
 * ":port" when allow_port) into family/addr (16 bytes; IPv4 in the first 4,
 * IPv4-mapped IPv6 turned to IPv4). Returns 0 or -1. */
static int parse_addr(const char *s, size_t len, bool allow_port, int *family, unsigned char *addr)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (allow_port && len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return -1;
        size_t rest = len - (size_t)(close + 1 - s);
        if (rest && (close[1] != ':' || rest < 2))
            return -1;
        for (size_t i = 2; i < rest; i++)
            if (close[i] < '0' || close[i] > '9')
                return -1;
        len = (size_t)(close - s - 1);
        s++;
    } else if (allow_port && memchr(s, '.', len) && memchr(s, ':', len) &&
               memchr(s, ':', len) == memrchr(s, ':', len)) {
        /* IPv4 with a port: a.b.c.d:port (one colon; IPv6 has several) */
        const char *colon = memchr(s, ':', len);
        size_t rest = len - (size_t)(colon - s);
        if (rest < 2)
            return -1;
        for (size_t i = 1; i < rest; i++)
            if (colon[i] < '0' || colon[i] > '9')
                return -1;
        len = (size_t)(colon - s);
    }
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) != 1)
        return -1;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        *family = AF_INET;
        memcpy(addr, &a6.s6_addr[12], 4);
    } else {
        *family = AF_INET6;
        memcpy(addr, a6.s6_addr, 16);
    }
    return 0;
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

int http_proxies_parse(const char *list, struct http_proxies **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t entries = 1;
    for (const char *p = list ? list : ""; *p; p++)
        entries += *p == ',';
    if (entries > MAX_PROXIES) {
        snprintf(err, errlen, "more than %d trusted proxies", MAX_PROXIES);
        return -EINVAL;
    }
    struct http_proxies *l = calloc(1, sizeof(*l) + entries * sizeof(l->nets[0]));
    if (!l)
        return -ENOMEM;
    const char *p = list ? list : "";
    p += strspn(p, " \t"); /* a blank list is an empty one */
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *e = p;
        trim(&e, &len);
        p = comma ? comma + 1 : p + strlen(p);
        if (len == 0) {
            snprintf(err, errlen, "empty entry in the list of trusted proxies");
            free(l);
            return -EINVAL;
        }
        struct proxy_net *net = &l->nets[l->n];
        const char *slash = memchr(e, '/', len);
        size_t alen = slash ? (size_t)(slash - e) : len;
        bool ok = parse_addr(e, alen, false, &net->family, net->addr) == 0;
        unsigned max = net->family == AF_INET ? 32 : 128;
        net->bits = max;
        if (ok && slash) {
            size_t blen = len - alen - 1;
            unsigned bits = 0;
            ok = blen >= 1 && blen <= 3;
            for (size_t i = 0; ok && i < blen; i++) {
                char c = slash[1 + i];
                ok = c >= '0' && c <= '9';
                bits = bits * 10 + (unsigned)(c - '0');
            }
            /* an IPv4-mapped range counts its prefix on the IPv4 part */
            if (ok && net->family == AF_INET && memchr(e, ':', alen)) {
                ok = bits >= 96;
                bits -= ok ? 96 : 0;
            }
            ok = ok && bits <= max;
            net->bits = bits;
        }
        if (!ok) {
            snprintf(err, errlen, "'%.*s' is not an IP address or CIDR range",
                     (int)(len > 64 ? 64 : len), e);
            free(l);
            return -EINVAL;
        }
        l->n++;
    }
    *out = l;
    return 0;
}

void http_proxies_free(struct http_proxies *p)
{
    free(p);
}

static bool net_contains(const struct proxy_net *net, int family, const unsigned char *addr)
{
    if (net->family != family)
        return false;
    unsigned full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, addr, full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (addr[full] & mask);
}

static bool trusted(const struct http_proxies *p, int family, const unsigned char *addr)
{
    for (size_t i = 0; p && i < p->n; i++)
        if (net_contains(&p->nets[i], family, addr))
            return true;
    return false;
}

bool http_proxies_trusted(const struct http_proxies *p, const char *addr)
{
    int family;
    unsigned char a[16];
    return addr && parse_addr(addr, strlen(addr), false, &family, a) == 0 && trusted(p, family, a);
}

static void addr_text(int family, const unsigned char *addr, char *out, size_t outlen)
{
    if (!inet_ntop(family, addr, out, (socklen_t)outlen))
        snprintf(out, outlen, "-");
}

void http_forwarded_client(const struct http_proxies *p, const char *peer, const char *xff,
                           char *out, size_t outlen)
{
    int family;
    unsigned char addr[16];
    if (!peer || parse_addr(peer, strlen(peer), false, &family, addr) != 0) {
        snprintf(out, outlen, "%s", peer && *peer ? peer : "-");
        return;
    }
    /* From the right: while the hop we hold is trusted, step to the address it
     * says it received the request from. */
    size_t end = xff ? strlen(xff) : 0;
    while (trusted(p, family, addr) && end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        const char *e = xff + start;
        size_t len = end - start;
        end = start ? start - 1 : 0;
        trim(&e, &len);
        if (len == 0)
            continue; /* an empty element ("a,,b") */
        int f2;
        unsigned char a2[16];
        if (parse_addr(e, len, true, &f2, a2) != 0)
            break; /* garbage: the last address read is as far as we know */
        family = f2;
        memcpy(addr, a2, sizeof(addr));
    }
    addr_text(family, addr, out, outlen);
}

/* The values of every X-Forwarded-For header, joined with commas in order. */
struct xff_buf {
    char text[MAX_XFF + 1];
    size_t len;
    bool truncated;
};

static enum MHD_Result collect_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct xff_buf *b = cls;
    if (!key || strcasecmp(key, "X-Forwarded-For") != 0 || !value)
        return MHD_YES;
    size_t n = strlen(value);
    if (b->len + n + 1 > MAX_XFF) {
        b->truncated = true;
        return MHD_NO;
    }
    if (b->len)
        b->text[b->len++] = ',';
    memcpy(b->text + b->len, value, n);
    b->len += n;
    b->text[b->len] = '\0';
    return MHD_YES;
}

static void find_client_addr(struct http_request *req)
{
    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    strcpy(req->client, "-");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, req->client, sizeof(req->client));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], req->client, sizeof(req->client));
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, req->client, sizeof(req->client));
    }
    if (!req->srv->proxies || !http_proxies_trusted(req->srv->proxies, req->client))
        return;
    struct xff_buf *b = calloc(1, sizeof(*b));
    if (!b)
        return; /* the proxy's address: rate limits err on the strict side */
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, collect_xff, b);
    if (b->truncated) {
        /* Too long to walk from the right: keep the proxy's own address. */
        log_warn("request %s: X-Forwarded-For longer than %d bytes, ignored", req->id, MAX_XFF);
    } else {
        char peer[sizeof(req->client)];
        memcpy(peer, req->client, sizeof(peer));
        http_forwarded_client(req->srv->proxies, peer, b->text, req->client, sizeof(req->client));
    }
    free(b);
}

/* Split the raw path into decoded segments. Returns NULL or why it is refused. */
static const char *split_path(struct http_request *req)
{
    if (req->path[0] != '/')
        return "request target must be an absolute path";
    req->segbuf = strdup(req->path);
    if (!req->segbuf)
        return "out of memory";
    if (strcmp(req->path, "/") == 0)
        return NULL;
    char *p = req->segbuf + 1;
    for (;;) {
        char *end = strchr(p, '/');
        if (end)
            *end = '\0';
        if (req->n_segs == MAX_SEGMENTS) {
            req->n_segs = MAX_SEGMENTS + 1; /* matches nothing */
            return NULL;
        }
        const char *why = pct_decode(p, false, true);
        if (why)
            return why;
        if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0)
            return "dot segment in path";
        req->segs[req->n_segs++] = p;
        if (!end)
            return NULL;
        p = end + 1;
    }
}

static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    struct http_request *req = cls;
    if (req->n_query == MAX_QUERY_ARGS) {
        req->query_error = "too many query arguments";
        return MHD_NO;
    }
    if (!req->query) {
        req->query = calloc(MAX_QUERY_ARGS, sizeof(*req->query));
        if (!req->query) {
            req->query_error = "out of memory";
            return MHD_NO;
        }
    }
    struct kv *kv = &req->query[req->n_query];
    kv->key = strndup(key, key_size);
    kv->value = value ? strndup(value, value_size) : strdup("");
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        kv->key = kv->value = NULL;
        req->query_error = "out of memory";
        return MHD_NO;
    }
    req->n_query++;
    /* MHD was told not to decode (see unescape_none), so %2F etc. are intact. */
    const char *why = pct_decode(kv->key, true, false);
    if (!why)
        why = pct_decode(kv->value, true, false);
    if (why) {
        req->query_error = why;
        return MHD_NO;
    }
    return MHD_YES;
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

/* Route the request once its headers are in. Returns MHD_YES to go on
 * reading the body, or the result of answering early. */
static enum MHD_Result begin_request(struct http_request *req)
{
    struct http_server *srv = req->srv;
    if (atomic_load(&srv->stopping)) {
        http_set_header(req, "Retry-After", "1");
        return answer_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                            "server is shutting down");
    }
    const char *why = split_path(req);
    if (why)
        return answer_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request", "bad path: %s", why);
    MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, query_iter, req);
    if (req->query_error)
        return answer_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request", "bad query: %s",
                            req->query_error);

    const char *allow[MAX_ALLOW];
    size_t n_allow = 0;
    bool path_found = false;
    for (size_t i = 0; i < srv->n_routes && !req->route; i++) {
        const struct compiled_route *cr = &srv->routes[i];
        if (!path_matches(cr, req->segs, req->n_segs))
            continue;
        if (!path_found)
            req->label = cr->name;
        path_found = true;
        if (method_matches(cr->r->method, req->method)) {
            req->route = cr;
            req->label = cr->name;
        } else {
            allow_add(allow, &n_allow, cr->r->method);
            if (strcmp(cr->r->method, "GET") == 0)
                allow_add(allow, &n_allow, "HEAD");
        }
    }
    if (!path_found)
        return answer_error(req, MHD_HTTP_NOT_FOUND, "not_found", "no such resource");
    if (!req->route) {
        char list[256] = "";
        size_t len = 0;
        for (size_t i = 0; i < n_allow && len < sizeof(list); i++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                    allow[i]);
        http_set_header(req, "Allow", list);
        return answer_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                            "method '%s' is not allowed here", method_label(req->method));
    }
    size_t k = 0;
    for (size_t i = 0; i < req->route->n_segs; i++)
        if (req->route->segs[i].param)
            req->params[k++] = req->segs[i];

    const char *cl =
            MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == ERANGE || n > srv->max_body) {
            req->too_large = true;
            return answer_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                                "request body exceeds %zu bytes", srv->max_body);
        }
    }
    return MHD_YES;
}

/* The whole body is in: check it, run the handler and queue its reply. */
static enum MHD_Result finish_request(struct http_request *req)
{
    if (req->too_large)
        return answer_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                            "request body exceeds %zu bytes", req->srv->max_body);
    if (req->body_oom)
        return answer_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error", "out of memory");
    if ((req->route->r->flags & HTTP_JSON) && req->body.len) {
        json_error_t err;
        req->json = json_loadb(req->body.data, req->body.len, JSON_LOAD_FLAGS, &err);
        req->json_parsed = true;
        if (!req->json)
            return answer_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                                "invalid json body at line %d column %d: %s", err.line, err.column,
                                err.text);
        if (!json_is_object(req->json))
            return answer_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                                "request body must be a json object");
    }
    req->route->r->handler(req);
    if (!req->replied) {
        log_error("bug: handler for %s '%s' returned without replying", req->method, req->label);
        http_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error", "internal error");
    }
    return queue_reply(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        req->srv = srv;
        req->conn = conn;
        req->method = method;
        req->start_ns = now_ns();
        req->label = "unmatched";
        buf_init(&req->body, srv->max_body);
        req->path = strdup(url);
        *con_cls = req;
        atomic_fetch_add(&srv->in_flight, 1);
        make_request_id(req);
        find_client_addr(req);
        if (!req->path)
            return MHD_NO;
        return begin_request(req);
    }
    if (req->queued) {
        *upload_data_size = 0; /* answered early; nothing more to do */
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!req->too_large && !req->body_oom) {
            int rc = buf_add(&req->body, upload_data, n);
            if (rc == -E2BIG) {
                req->too_large = true;
                buf_release(&req->body);
            } else if (rc) {
                req->body_oom = true;
                buf_release(&req->body);
            }
        }
        if (req->too_large || req->body_oom) {
            /* MHD cannot answer mid-body: drop the data until the body ends so
             * the client gets its 413, but never more than another cap's worth. */
            req->drained += n;
            if (req->drained > srv->max_body) {
                log_info("%s %s: body far over the limit, closing the connection", method,
                         req->label);
                return MHD_NO;
            }
        }
        return MHD_YES;
    }
    return finish_request(req);
}

/* Copy s for a log line: printable ASCII only, bounded. */
static void log_safe(char *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[i] = '\0';
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    double secs = (double)(now_ns() - req->start_ns) / 1e9;
    char method[24], path[300];
    log_safe(method, sizeof(method), req->method);
    log_safe(path, sizeof(path), req->path ? req->path : "-");
    if (req->queued) {
        log_info("%s %s %d %.1fms id=%s client=%s%s", method, path, req->status, secs * 1000,
                 req->id, req->client,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (not fully sent)");
        metrics_http_observe(req->label, method_label(req->method), req->status, secs);
    } else {
        log_info("%s %s - %.1fms id=%s client=%s (no reply: connection %s)", method, path,
                 secs * 1000, req->id, req->client,
                 toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "timed out" : "closed");
    }
    request_free(req);
    atomic_fetch_sub(&srv->in_flight, 1);
}

/* Leave URLs and arguments encoded: we decode per segment and per argument,
 * so an encoded '/' or NUL can be told apart from a real one. */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("microhttpd: %s", msg);
}

/* ---- server */

int http_server_start(const struct http_config *cfg, const struct http_route *routes,
                      size_t n_routes, void *app, struct http_server **out)
{
    *out = NULL;
    const char *bind = cfg->bind && *cfg->bind ? cfg->bind : DEFAULT_BIND;
    unsigned threads = cfg->threads ? cfg->threads : DEFAULT_THREADS;
    if (threads > 1024 || (n_routes && !routes)) {
        log_error("http: invalid configuration");
        return -EINVAL;
    }
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->routes = calloc(n_routes ? n_routes : 1, sizeof(*srv->routes));
    if (!srv->routes) {
        free(srv);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_routes; i++) {
        if (compile_route(&routes[i], &srv->routes[i])) {
            log_error("http: invalid route '%s %s'", routes[i].method ? routes[i].method : "",
                      routes[i].pattern ? routes[i].pattern : "");
            free(srv->routes);
            free(srv);
            return -EINVAL;
        }
    }
    if (cfg->trusted_proxies) {
        char err[160];
        int prc = http_proxies_parse(cfg->trusted_proxies, &srv->proxies, err, sizeof(err));
        if (prc) {
            log_error("http: trusted proxies: %s", prc == -ENOMEM ? "out of memory" : err);
            free(srv->routes);
            free(srv);
            return prc;
        }
        if (srv->proxies && srv->proxies->n == 0) {
            http_proxies_free(srv->proxies);
            srv->proxies = NULL;
        }
    }
    srv->n_routes = n_routes;
    srv->app = app;
    srv->max_body = cfg->max_body ? cfg->max_body : DEFAULT_MAX_BODY;
    srv->stop_timeout_ms = cfg->stop_timeout_ms ? cfg->stop_timeout_ms : DEFAULT_STOP_MS;

    struct addrinfo hints = {
            .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(bind, NULL, &hints, &ai);
    if (gai || !ai) {
        log_error("http: cannot resolve '%s': %s", bind, gai_strerror(gai));
        http_proxies_free(srv->proxies);
        free(srv->routes);
        free(srv);
        return -EADDRNOTAVAIL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_port = htons(cfg->port);
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    } else {
        ((struct sockaddr_in *)&ss)->sin_port = htons(cfg->port);
    }

    /* the logger goes first so that MHD's complaints about later options use it */
    srv->daemon = MHD_start_daemon(
            flags, cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
            NULL, MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_THREAD_POOL_SIZE,
            threads > 1 ? threads : 0u, MHD_OPTION_CONNECTION_LIMIT,
            cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNS,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_ip_connections,
            MHD_OPTION_CONNECTION_TIMEOUT,
            cfg->conn_timeout_s ? cfg->conn_timeout_s : DEFAULT_CONN_TIMEOUT,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            cfg->conn_memory ? cfg->conn_memory : (size_t)DEFAULT_CONN_MEMORY,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_UNESCAPE_CALLBACK,
            unescape_none, NULL, MHD_OPTION_END);
    if (!srv->daemon) {
        log_error("http: cannot listen on '%s' port %u", bind, (unsigned)cfg->port);
        http_proxies_free(srv->proxies);
        free(srv->routes);
        free(srv);
        return -EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : cfg->port;
    log_info("http: listening on '%s' port %u with %u threads", bind, (unsigned)srv->port, threads);
    *out = srv;
    return 0;
}

uint16_t http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_stop(struct http_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, true);
    MHD_socket lsock = MHD_quiesce_daemon(srv->daemon);
    uint64_t deadline = now_ns() + (uint64_t)srv->stop_timeout_ms * 1000000u;
    int left;
    while ((left = atomic_load(&srv->in_flight)) > 0 && now_ns() < deadline) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (left > 0)
        log_warn("http: stopping with %d requests still in flight", left);
    MHD_stop_daemon(srv->daemon);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    log_info("http: stopped listening on port %u", (unsigned)srv->port);
    http_proxies_free(srv->proxies);
    free(srv->routes);
    free(srv);
}

/* ---- accessors */

const char *http_method(const struct http_request *req)
{
    return req->method;
}

const char *http_path(const struct http_request *req)
{
    return req->path;
}

const char *http_route_name(const struct http_request *req)
{
    return req->label;
}

const char *http_param(const struct http_request *req, const char *name)
{
    if (!req->route)
        return NULL;
    size_t k = 0, len = strlen(name);
    for (size_t i = 0; i < req->route->n_segs; i++) {
        const struct route_seg *s = &req->route->segs[i];
        if (!s->param)
            continue;
        if (s->len == len && memcmp(s->text, name, len) == 0)
            return req->params[k];
        k++;
    }
    return NULL;
}

const char *http_query(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_query; i++)
        if (strcmp(req->query[i].key, name) == 0)
            return req->query[i].value;
    return NULL;
}

const char *http_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_client_addr(const struct http_request *req)
{
    return req->client;
}

const char *http_request_id(const struct http_request *req)
{
    return req->id;
}

void *http_app(const struct http_request *req)
{
    return req->srv->app;
}

uint64_t http_start_ns(const struct http_request *req)
{
    return req->start_ns;
}

const char *http_body(const struct http_request *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

json_t *http_json(struct http_request *req)
{
    if (!req->json_parsed) {
        req->json_parsed = true;
        if (req->body.len)
            req->json = json_loadb(req->body.data, req->body.len, JSON_LOAD_FLAGS, NULL);
    }
    return req->json;
}

/* ---- JSON helpers */

void http_json_within(struct http_request *req, json_t *obj, const char *name)
{
    req->scope = obj;
    snprintf(req->scope_name, sizeof(req->scope_name), "%s", obj && name ? name : "");
}

/* The object the field helpers read: the body or the current scope. */
static json_t *scope(struct http_request *req)
{
    return req->scope ? req->scope : http_json(req);
}

/* The field key, NULL when absent or null. */
static json_t *field(struct http_request *req, const char *key)
{
    json_t *obj = scope(req);
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_null(v) ? NULL : v;
}

/* key as messages name it: "key", or "objects[2].key" within a scope. */
static const char *field_name(const struct http_request *req, const char *key, char out[128])
{
    if (!req->scope_name[0])
        return key;
    snprintf(out, 128, "%s.%.64s", req->scope_name, key);
    return out;
}

static bool string_field(struct http_request *req, const char *key, size_t min, size_t max,
                         const char **out, bool required)
{
    char name[128];
    json_t *v = field(req, key);
    key = field_name(req, key, name);
    if (!v) {
        if (required)
            http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request", "missing field '%s'",
                             key);
        return !required;
    }
    if (!json_is_string(v)) {
        http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                         "field '%s' must be a string", key);
        return false;
    }
    size_t len = json_string_length(v);
    if (len < min || len > max) {
        http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                         "field '%s' must be %zu to %zu bytes long", key, min, max);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

bool http_json_get_string(struct http_request *req, const char *key, size_t min, size_t max,
                          const char **out)
{
    return string_field(req, key, min, max, out, true);
}

bool http_json_opt_string(struct http_request *req, const char *key, size_t min, size_t max,
                          const char **out)
{
    return string_field(req, key, min, max, out, false);
}

static bool int_field(struct http_request *req, const char *key, int64_t min, int64_t max,
                      int64_t *out, bool required)
{
    char name[128];
    json_t *v = field(req, key);
    key = field_name(req, key, name);
    if (!v) {
        if (required)
            http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request", "missing field '%s'",
                             key);
        return !required;
    }
    if (!json_is_integer(v)) {
        http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                         "field '%s' must be an integer", key);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                         "field '%s' must be between %lld and %lld", key, (long long)min,
                         (long long)max);
        return false;
    }
    *out = n;
    return true;
}

bool http_json_get_int(struct http_request *req, const char *key, int64_t min, int64_t max,
                       int64_t *out)
{
    return int_field(req, key, min, max, out, true);
}

bool http_json_opt_int(struct http_request *req, const char *key, int64_t min, int64_t max,
                       int64_t *out)
{
    return int_field(req, key, min, max, out, false);
}

bool http_json_opt_bool(struct http_request *req, const char *key, bool *out)
{
    char name[128];
    json_t *v = field(req, key);
    key = field_name(req, key, name);
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request",
                         "field '%s' must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

bool http_json_only_keys(struct http_request *req, const char *const *allowed)
{
    json_t *obj = scope(req);
    if (!json_is_object(obj))
        return true;
    char name[128];
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i]) {
            http_reply_error(req, MHD_HTTP_BAD_REQUEST, "invalid_request", "unknown field '%.100s'",
                             field_name(req, key, name));
            return false;
        }
    }
    return true;
}

void http_metrics_handler(struct http_request *req)
{
    struct buf b;
    buf_init(&b, 64 * 1024 * 1024);
    if (metrics_render(&b)) {
        buf_release(&b);
        http_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
                         "cannot render metrics");
        return;
    }
    size_t len;
    char *text = buf_detach(&b, &len);
    set_reply(req, MHD_HTTP_OK, text, text ? len : 1, METRICS_CONTENT_TYPE);
}
