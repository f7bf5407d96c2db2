/* client: pockity-admin's side of pockityd's HTTP/JSON API (libcurl, bounded
 * responses, timeouts), and the saved login in ~/.config/pockity/admin.ini. */
#ifndef POCKITY_ADMIN_CLIENT_H
#define POCKITY_ADMIN_CLIENT_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>

#include "buf.h"

/* The one error vocabulary of the client. 0 is success. */
enum client_status {
    CLIENT_OK = 0,
    CLIENT_ERR_API,       /* the server answered with a non-2xx status */
    CLIENT_ERR_TRANSPORT, /* no answer: connect, TLS, timeout, ... */
    CLIENT_ERR_RESPONSE,  /* an answer we cannot use: too big, not JSON */
    CLIENT_ERR_CANCELED,  /* the cancel flag was raised during the call */
    CLIENT_ERR_NOMEM,
};

#define CLIENT_MAX_RESPONSE       (16u << 20) /* bytes of one response body */
#define CLIENT_CONNECT_TIMEOUT_MS 10000L
#define CLIENT_TIMEOUT_MS         60000L /* the whole request */

struct client;

/* A client for server ("http://host:port" or "https://...", a trailing '/' is
 * ignored) that sends token (may be NULL) as a bearer token. Both strings are
 * copied; the copy of the token is wiped on free. Returns NULL when server is
 * not an http(s) URL or memory runs out; *why (may be NULL) then says which. */
struct client *client_new(const char *server, const char *token, const char **why);

/* Free c, wiping its copy of the token. NULL is accepted. */
void client_free(struct client *c);

/* The call stops with CLIENT_ERR_CANCELED soon after *flag becomes nonzero
 * (set from a signal handler). flag may be NULL. */
void client_set_cancel(struct client *c, const volatile sig_atomic_t *flag);

/* Send method path (absolute, with its query string already encoded) with
 * body serialised as JSON when not NULL (body is borrowed; its text is wiped
 * after sending since it may hold a password). On 2xx returns CLIENT_OK and
 * *out (may be NULL) receives the parsed JSON, owned by the caller, or NULL
 * for an empty body. Otherwise returns a status and *out is NULL; for
 * CLIENT_ERR_API the server's code and message are kept (client_errmsg). */
int client_call(struct client *c, const char *method, const char *path, json_t *body, json_t **out);

/* The body of the last response exactly as received ("" when none). Owned by
 * c, valid until the next call. */
const char *client_raw(const struct client *c);

/* The HTTP status of the last response, 0 when there was none. */
long client_http_status(const struct client *c);

/* The error code of the last failed call ("not_found", ...; "" when there is
 * none) and a message for a human: "<message> (<code>)" for an API error,
 * the transport's reason otherwise. Owned by c, never NULL. */
const char *client_errcode(const struct client *c);
const char *client_errmsg(const struct client *c);

/* Percent-encode s (everything but A-Z a-z 0-9 - . _ ~) onto b. Same returns
 * as buf_add. */
int client_escape(struct buf *b, const char *s);

/* Append "?name=value" (or "&name=value" when b already holds a '?') to the
 * path in b, value percent-encoded; nothing when value is NULL. Same returns
 * as buf_add. */
int client_query(struct buf *b, const char *name, const char *value);

/* ---- The saved login. */

struct client_config {
    char *server; /* malloc'd or NULL */
    char *token;  /* malloc'd or NULL; wiped by client_config_release */
};

/* The path of the saved login, $HOME/.config/pockity/admin.ini, into out.
 * Returns 0, or -1 when HOME is unknown or the path does not fit. */
int client_config_path(char *out, size_t outlen);

/* Read path into *cfg (zeroed first). A missing file is not an error: cfg
 * stays empty and 0 is returned. Returns -1 with a message in err for an
 * unreadable or malformed file. *insecure is set when the file can be read
 * by other users (may be NULL). */
int client_config_load(const char *path, struct client_config *cfg, int *insecure, char *err,
                       size_t errlen);

/* Write cfg to path atomically with mode 0600, creating its folder (0700)
 * when missing. A NULL field is left out. Returns 0, or -1 with a message in
 * err. */
int client_config_save(const char *path, const struct client_config *cfg, char *err, size_t errlen);

/* Free the fields (wiping the token) and zero cfg. */
void client_config_release(struct client_config *cfg);

/* Overwrite n bytes at p with zeros in a way the compiler keeps. */
void client_wipe(void *p, size_t n);

#endif
