/* client: HTTP/JSON calls to pockityd with libcurl, and the saved login file. */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct client {
    CURL *curl;
    char *server; /* without a trailing '/' */
    char *auth;   /* "Authorization: Bearer ..." or NULL; wiped on free */
    const volatile sig_atomic_t *cancel;
    struct buf body;   /* the last response */
    long status;       /* its HTTP status, 0 when none */
    char code[64];     /* the last error's code */
    char message[600]; /* the last error for a human */
    char curl_err[CURL_ERROR_SIZE];
};

void client_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static void wipe_free(char *s)
{
    if (s)
        client_wipe(s, strlen(s));
    free(s);
}

/* Whether s is all visible ASCII (no space, no control character), so it is
 * safe inside a header line or a URL. */
static int visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

struct client *client_new(const char *server, const char *token, const char **why)
{
    const char *reason = "out of memory";
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    buf_init(&c->body, CLIENT_MAX_RESPONSE);
    if ((strncmp(server, "http://", 7) != 0 && strncmp(server, "https://", 8) != 0) ||
        !visible_ascii(server) || strlen(server) <= 8) {
        reason = "the server must be an http:// or https:// URL";
        goto fail;
    }
    if (token && (!*token || !visible_ascii(token))) {
        reason = "the token holds spaces or control characters";
        goto fail;
    }
    c->server = strdup(server);
    if (!c->server)
        goto fail;
    size_t n = strlen(c->server);
    while (n > 8 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    if (token) {
        static const char prefix[] = "Authorization: Bearer ";
        c->auth = malloc(sizeof(prefix) + strlen(token));
        if (!c->auth)
            goto fail;
        memcpy(c->auth, prefix, sizeof(prefix) - 1);
        strcpy(c->auth + sizeof(prefix) - 1, token);
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        reason = "cannot set up libcurl";
        goto fail;
    }
    return c;
fail:
    if (why)
        *why = reason;
    client_free(c);
    return NULL;
}

void client_free(struct client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->server);
    wipe_free(c->auth);
    if (c->body.data)
        client_wipe(c->body.data, c->body.len);
    buf_release(&c->body);
    free(c);
}

void client_set_cancel(struct client *c, const volatile sig_atomic_t *flag)
{
    c->cancel = flag;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct client *c = arg;
    size_t n = size * nmemb;
    if (buf_add(&c->body, data, n) != 0)
        return 0; /* too big or out of memory: curl stops with a write error */
    return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const struct client *c = arg;
    return c->cancel && *c->cancel;
}

static void set_error(struct client *c, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void set_error(struct client *c, const char *code, const char *fmt, ...)
{
    va_list ap;
    snprintf(c->code, sizeof(c->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
}

/* Keep the server's {"error": {"code", "message"}} of a failed call. */
static void take_api_error(struct client *c)
{
    json_t *doc = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0, NULL);
    json_t *err = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (code && msg)
        set_error(c, code, "%s (%s)", msg, code);
    else
        set_error(c, "http_error", "HTTP %ld from '%s'", c->status, c->server);
    json_decref(doc);
}

int client_call(struct client *c, const char *method, const char *path, json_t *body, json_t **out)
{
    int rc = CLIENT_ERR_NOMEM;
    char *text = NULL;
    struct curl_slist *headers = NULL, *h;
    struct buf url;
    buf_init(&url, 64 * 1024);
    if (out)
        *out = NULL;
    /* The last answer may have held a secret (a login's token). */
    if (c->body.data)
        client_wipe(c->body.data, c->body.len);
    buf_reset(&c->body);
    c->status = 0;
    c->code[0] = c->message[0] = c->curl_err[0] = '\0';
    set_error(c, "nomem", "out of memory");

    if (buf_adds(&url, c->server) || buf_adds(&url, path))
        goto out;
    if (body && !(text = json_dumps(body, JSON_COMPACT)))
        goto out;
    static const char *const fixed[] = {"Accept: application/json",
                                        "User-Agent: pockity-admin/" POCKITY_VERSION, NULL};
    for (size_t i = 0; fixed[i]; i++) {
        if (!(h = curl_slist_append(headers, fixed[i])))
            goto out;
        headers = h;
    }
    if (text) {
        if (!(h = curl_slist_append(headers, "Content-Type: application/json")))
            goto out;
        headers = h;
    }
    if (c->auth) {
        if (!(h = curl_slist_append(headers, c->auth)))
            goto out;
        headers = h;
    }

    CURL *k = c->curl;
    curl_easy_reset(k);
    curl_easy_setopt(k, CURLOPT_URL, url.data);
    curl_easy_setopt(k, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, CLIENT_TIMEOUT_MS);
    /* Never follow redirects: the token must go to the server named, nowhere else. */
    curl_easy_setopt(k, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(k, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, c->curl_err);
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(k, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(k, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(k, CURLOPT_NOPROGRESS, 0L);
    if (text) {
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0) {
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE, 0L);
    }

    CURLcode cc = curl_easy_perform(k);
    curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &c->status);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        rc = CLIENT_ERR_CANCELED;
        set_error(c, "canceled", "interrupted");
    } else if (cc == CURLE_WRITE_ERROR) {
        rc = CLIENT_ERR_RESPONSE;
        set_error(c, "too_big", "the answer from '%s' is larger than %u MiB", c->server,
                  CLIENT_MAX_RESPONSE >> 20);
    } else if (cc != CURLE_OK) {
        rc = CLIENT_ERR_TRANSPORT;
        set_error(c, "transport", "cannot reach '%s': %s", c->server,
                  c->curl_err[0] ? c->curl_err : curl_easy_strerror(cc));
    } else if (c->status < 200 || c->status > 299) {
        rc = CLIENT_ERR_API;
        take_api_error(c);
    } else {
        rc = CLIENT_OK;
        c->code[0] = c->message[0] = '\0';
        if (out && c->body.len) {
            json_error_t jerr;
            *out = json_loadb(c->body.data, c->body.len, 0, &jerr);
            if (!*out) {
                rc = CLIENT_ERR_RESPONSE;
                set_error(c, "bad_response", "the answer from '%s' is not JSON: %s", c->server,
                          jerr.text);
            }
        }
    }
out:
    if (text) {
        client_wipe(text, strlen(text));
        free(text);
    }
    curl_slist_free_all(headers);
    buf_release(&url);
    return rc;
}

const char *client_raw(const struct client *c)
{
    return c->body.data ? c->body.data : "";
}

long client_http_status(const struct client *c)
{
    return c->status;
}

const char *client_errcode(const struct client *c)
{
    return c->code;
}

const char *client_errmsg(const struct client *c)
{
    return c->message;
}

int client_escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int rc;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            rc = buf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            rc = buf_add(b, e, 3);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int client_query(struct buf *b, const char *name, const char *value)
{
    if (!value)
        return 0;
    int rc = buf_adds(b, b->data && strchr(b->data, '?') ? "&" : "?");
    if (!rc)
        rc = client_escape(b, name);
    if (!rc)
        rc = buf_adds(b, "=");
    if (!rc)
        rc = client_escape(b, value);
    return rc;
}

/* ---- The saved login */

#define CONFIG_SECTION "admin"
#define CONFIG_MAX     (64 * 1024) /* bytes; the file holds two short lines */

static const struct {
    const char *key;
    size_t offset;
} config_keys[] = {
        {"server", offsetof(struct client_config, server)},
        {"token", offsetof(struct client_config, token)},
};

struct config_parse {
    struct client_config *cfg;
    char err[256];
};

static int on_config(void *arg, const char *section, const char *key, const char *value)
{
    struct config_parse *p = arg;
    if (strcmp(section, CONFIG_SECTION) != 0) {
        snprintf(p->err, sizeof(p->err), "unknown section '%.64s'", section);
        return 0;
    }
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        if (strcmp(key, config_keys[i].key) != 0)
            continue;
        char **field = (char **)((char *)p->cfg + config_keys[i].offset);
        wipe_free(*field);
        if (!(*field = strdup(value))) {
            snprintf(p->err, sizeof(p->err), "out of memory");
            return 0;
        }
        return 1;
    }
    snprintf(p->err, sizeof(p->err), "unknown key '%.64s'", key);
    return 0;
}

int client_config_path(char *out, size_t outlen)
{
    const char *home = getenv("HOME");
    if (!home || !*home)
        return -1;
    int n = snprintf(out, outlen, "%s/.config/pockity/admin.ini", home);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int client_config_load(const char *path, struct client_config *cfg, int *insecure, char *err,
                       size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    if (insecure)
        *insecure = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX) {
        snprintf(err, errlen, "'%s' is not a small regular file", path);
        fclose(f);
        return -1;
    }
    if (insecure)
        *insecure = (st.st_mode & 077) != 0;
    struct config_parse p = {.cfg = cfg};
    int rc = ini_parse_file(f, on_config, &p);
    fclose(f);
    if (rc != 0) {
        if (p.err[0] && rc > 0)
            snprintf(err, errlen, "'%s' line %d: %s", path, rc, p.err);
        else if (p.err[0])
            snprintf(err, errlen, "'%s': %s", path, p.err);
        else
            snprintf(err, errlen, "'%s' line %d: malformed", path, rc);
        client_config_release(cfg);
        return -1;
    }
    return 0;
}

/* mkdir -p of the folders above path, each created with mode 0700. */
static int make_parents(const char *path, char *err, size_t errlen)
{
    char dir[4096];
    if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir)) {
        snprintf(err, errlen, "path too long: '%.64s...'", path);
        return -1;
    }
    for (char *s = dir + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create '%s': %s", dir, strerror(errno));
            return -1;
        }
        *s = '/';
    }
    return 0;
}

int client_config_save(const char *path, const struct client_config *cfg, char *err, size_t errlen)
{
    char tmp[4096 + 16];
    if (make_parents(path, err, errlen) != 0)
        return -1;
    if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "path too long: '%.64s...'", path);
        return -1;
    }
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        const char *v = *(char *const *)((const char *)cfg + config_keys[i].offset);
        if (v && strpbrk(v, "\r\n")) {
            snprintf(err, errlen, "the %s holds a line break", config_keys[i].key);
            return -1;
        }
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create '%s': %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    int bad = fprintf(f, "# pockity-admin's login, written by 'pockity-admin login'\n[%s]\n",
                      CONFIG_SECTION) < 0;
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        const char *v = *(char *const *)((const char *)cfg + config_keys[i].offset);
        if (v && fprintf(f, "%s = %s\n", config_keys[i].key, v) < 0)
            bad = 1;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        bad = 1;
    int saved = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        saved = errno;
    }
    if (bad || rename(tmp, path) != 0) {
        if (!bad)
            saved = errno;
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(saved));
        unlink(tmp);
        return -1;
    }
    return 0;
}

void client_config_release(struct client_config *cfg)
{
    free(cfg->server);
    wipe_free(cfg->token);
    memset(cfg, 0, sizeof(*cfg));
}
