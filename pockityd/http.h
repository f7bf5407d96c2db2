/* http: the HTTP/JSON server pockityd's API runs on: libmicrohttpd with a thread
 * pool, a route table matched segment by segment, JSON bodies via jansson. */
#ifndef POCKITYD_HTTP_H
#define POCKITYD_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_server;
struct http_request;

/* Server settings. A zero field takes the default shown. */
struct http_config {
    const char *bind;            /* address to listen on, numeric IPv4/IPv6 or a host name
                                    ("127.0.0.1"); "::" listens on IPv6 and IPv4 */
    uint16_t port;               /* 0 = any free port, see http_server_port() */
    unsigned threads;            /* worker threads (4), each with its own epoll loop */
    size_t max_body;             /* request body cap in bytes (1 MiB); larger → 413. A
                                    declared Content-Length over it is refused before
                                    reading; a chunked body that grows past it is read
                                    and dropped up to another max_body bytes to deliver
                                    the 413, then the connection is simply closed */
    unsigned max_connections;    /* concurrent connections (1024) */
    unsigned per_ip_connections; /* concurrent connections per client address
                                    (0: no limit; mind a load balancer in front) */
    unsigned conn_timeout_s;     /* a connection idle this long, e.g. a client that
                                    stops sending mid-request, is closed (30) */
    size_t conn_memory;          /* per-connection memory for request line and headers
                                    (64 KiB); longer headers get 431, a longer URL 414 */
    unsigned stop_timeout_ms;    /* how long http_server_stop() waits for in-flight
                                    requests (10000) */
    const char *trusted_proxies; /* load balancers whose X-Forwarded-For is believed, in
                                    the syntax of http_proxies_parse (NULL: none) */
};

/* ---- Trusted proxies. Behind a load balancer the TCP peer is the balancer; the
 * client's address is then read from X-Forwarded-For, but only as far as it was
 * written by proxies we trust: each proxy appends the address it received the
 * request from, so the list is walked from the right, past trusted proxies, and
 * the first address that is not one is the client's (what is further left was
 * written by the client itself and proves nothing). */
struct http_proxies;

/* Parse a comma-separated list of IPv4 and IPv6 addresses and CIDR ranges
 * ("10.0.0.7, 192.168.0.0/16, ::1, fd00::/8"); spaces around entries are
 * ignored; NULL or blank is an empty list. Returns 0 with *out (free it with
 * http_proxies_free), -EINVAL with a message naming the bad entry in err
 * (errlen bytes), or -ENOMEM. */
int http_proxies_parse(const char *list, struct http_proxies **out, char *err, size_t errlen);
void http_proxies_free(struct http_proxies *p);

/* Whether the address addr (text) is one of the trusted proxies. IPv4-mapped
 * IPv6 addresses match as IPv4. false for NULL or what is not an address. */
bool http_proxies_trusted(const struct http_proxies *p, const char *addr);

/* The client's address of a request from peer (text) carrying xff, the values
 * of its X-Forwarded-For headers joined with commas in order (NULL: none):
 * peer itself unless it is trusted; else the rightmost entry of xff that is not
 * a trusted proxy; an entry that is not an address (inet_pton; brackets and a
 * port are allowed, "[::1]:80", "10.0.0.1:80") stops the walk at the last
 * address read; when every entry is trusted, the leftmost. Written canonical
 * (inet_ntop, IPv4-mapped as IPv4) into out (outlen >= INET6_ADDRSTRLEN). */
void http_forwarded_client(const struct http_proxies *p, const char *peer, const char *xff,
                           char *out, size_t outlen);

/* A handler answers a request by calling exactly one http_reply_*() function.
 * It runs on a worker thread and may block (database, STS calls). */
typedef void (*http_handler)(struct http_request *req);

/* Route flags. */
enum {
    /* The body, when not empty, must be a JSON object: the framework parses it
     * before the handler runs and answers 400 invalid_request itself when it is
     * malformed (bad syntax, invalid UTF-8, "\u0000" in a string, duplicate keys)
     * or not an object. An empty body leaves http_json() NULL. */
    HTTP_JSON = 1 << 0,
};

/* One row of the route table. pattern is an absolute path whose segments are
 * literals or "{name}" captures, e.g. "/v1/pockets/{id}/keys"; "/" alone is the
 * root. Captures match exactly one non-empty path segment, percent-decoded.
 * The first row whose pattern and method match wins, so list literal rows
 * before parameterised ones they overlap with. HEAD is served by GET rows.
 * name labels the route in metrics and logs (NULL: the pattern). */
struct http_route {
    const char *method;
    const char *pattern;
    http_handler handler;
    const char *name;
    unsigned flags; /* HTTP_JSON or 0 */
};

/* Start listening and serving. Each worker thread serves its share of the
 * connections, so a handler that blocks also delays the other requests that
 * its thread holds: size threads accordingly. routes (n_routes rows) and the strings they
 * point to must outlive the server; app is handed to handlers via http_app().
 * Returns 0 and the server in *out, -EINVAL for a bad config or pattern,
 * -EADDRNOTAVAIL when the address does not resolve, -ENOMEM, or -EIO when
 * libmicrohttpd cannot start (e.g. the port is taken); each failure is logged. */
int http_server_start(const struct http_config *cfg, const struct http_route *routes,
                      size_t n_routes, void *app, struct http_server **out);

/* The port actually listened on (useful with port 0). */
uint16_t http_server_port(const struct http_server *srv);

/* Graceful stop: stop accepting connections, let requests in flight finish
 * (up to cfg->stop_timeout_ms; requests that start meanwhile on open
 * keep-alive connections get 503, and responses say Connection: close), close
 * everything and free srv. A handler still blocked after the timeout delays
 * the stop until it returns: it cannot be interrupted. NULL is a no-op. Must
 * not be called from a handler. */
void http_server_stop(struct http_server *srv);

/* ---- Request accessors. Returned strings belong to the request and live
 * until the handler returns; all of them are safe to call from the handler. */

const char *http_method(const struct http_request *req);
/* The raw request path without the query string, as received (not decoded). */
const char *http_path(const struct http_request *req);
/* The route's name as given in the table. */
const char *http_route_name(const struct http_request *req);
/* A "{name}" capture of the matched route, percent-decoded; never NULL for a
 * name in the pattern, NULL for any other name. Contains no NUL and no '/'. */
const char *http_param(const struct http_request *req, const char *name);
/* The first query argument called name, decoded ('+' is a space); "" for an
 * argument without '='; NULL when absent. */
const char *http_query(const struct http_request *req, const char *name);
/* A request header, matched case-insensitively; NULL when absent. */
const char *http_header(const struct http_request *req, const char *name);
/* The client's address as text ("127.0.0.1", "::1"; IPv4-mapped IPv6
 * addresses are shown as IPv4): the TCP peer's, or when that is a trusted proxy
 * the one X-Forwarded-For gives (see http_forwarded_client). */
const char *http_client_addr(const struct http_request *req);
/* The request id sent back in X-Request-Id: the client's when sane
 * (1-64 characters of [A-Za-z0-9._:-]), otherwise 16 random hex digits. */
const char *http_request_id(const struct http_request *req);
/* The app pointer given to http_server_start(). */
void *http_app(const struct http_request *req);
/* When the request's headers arrived, CLOCK_MONOTONIC in nanoseconds. */
uint64_t http_start_ns(const struct http_request *req);
/* The raw body (NUL-terminated for convenience, but may hold NULs) and its
 * length; "" and 0 when there is none. */
const char *http_body(const struct http_request *req, size_t *len);
/* The body parsed as JSON, borrowed (do not decref), or NULL when the body is
 * empty or (for routes without HTTP_JSON) not valid JSON. Parsed on first use
 * for routes without HTTP_JSON. */
json_t *http_json(struct http_request *req);

/* ---- Replies: exactly one per request. A handler that returns without one
 * gets 500 internal_error (logged as a bug); a second reply is ignored and
 * logged; a status outside 200-599 becomes 500. Every response of ours
 * carries X-Request-Id, Cache-Control: no-store and (except 204)
 * Content-Type; only the bare errors libmicrohttpd sends itself for requests
 * it cannot parse (400, 414, 431) lack them and are not logged. */

/* Reply with body serialised as compact JSON (application/json). Steals the
 * reference to body; a NULL body (a failed json_pack) becomes 500. */
void http_reply_json(struct http_request *req, int status, json_t *body);

/* Reply {"error":{"code":CODE,"message":MESSAGE}}. The codes others rely on:
 * 400 invalid_request, 401 unauthenticated, 403 forbidden, 404 not_found,
 * 405 method_not_allowed, 409 conflict, 413 payload_too_large,
 * 429 rate_limited, 500 internal_error, 503 unavailable, 507 quota_exceeded. */
void http_reply_error(struct http_request *req, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Reply with text (copied; NULL is "") and the given Content-Type. */
void http_reply_text(struct http_request *req, int status, const char *content_type,
                     const char *text);

/* Reply without a body (e.g. 204). */
void http_reply_empty(struct http_request *req, int status);

/* Add a response header (e.g. Retry-After, Location); may be called before or
 * after the reply. Returns 0, -EINVAL for a bad name or a value with CR/LF,
 * -E2BIG past 16 headers, or -ENOMEM. */
int http_set_header(struct http_request *req, const char *name, const char *value);

/* ---- JSON body helpers. Each looks up key in the body object; on a problem
 * it answers 400 invalid_request naming the field and returns false, so a
 * handler writes: if (!http_json_get_string(req, "email", 3, 254, &email))
 * return; Borrowed strings live as long as the request. A JSON null counts
 * as absent. Lengths are in bytes. */

/* Required string of min..max bytes. */
bool http_json_get_string(struct http_request *req, const char *key, size_t min, size_t max,
                          const char **out);
/* Optional string: *out is left untouched when the field is absent. */
bool http_json_opt_string(struct http_request *req, const char *key, size_t min, size_t max,
                          const char **out);
/* Required integer within min..max. */
bool http_json_get_int(struct http_request *req, const char *key, int64_t min, int64_t max,
                       int64_t *out);
/* Optional integer: *out is left untouched when the field is absent. */
bool http_json_opt_int(struct http_request *req, const char *key, int64_t min, int64_t max,
                       int64_t *out);
/* Optional boolean: *out is left untouched when the field is absent. */
bool http_json_opt_bool(struct http_request *req, const char *key, bool *out);
/* Reject fields not in the NULL-terminated list allowed (catches typos). */
bool http_json_only_keys(struct http_request *req, const char *const *allowed);
/* Point the helpers above at obj, an object inside the body (an element of
 * an array, say), named in their messages as name ("objects[2]" gives
 * "field 'objects[2].key' must be a string"); obj NULL points them back at
 * the body. obj is borrowed and must outlive its use. */
void http_json_within(struct http_request *req, json_t *obj, const char *name);

/* A ready-made handler serving metrics_render() as Prometheus text. */
void http_metrics_handler(struct http_request *req);

#endif
