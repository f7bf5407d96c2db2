/* cli: option parsing, usage errors, the connection to pockityd and output
 * helpers shared by every pockity-admin command. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_release(struct cli *cli)
{
    client_free(cli->client);
    cli->client = NULL;
    buf_release(&cli->path);
    if (cli->token_opt) {
        client_wipe(cli->token_opt, strlen(cli->token_opt));
        free(cli->token_opt);
        cli->token_opt = NULL;
    }
}

_Noreturn void cli_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_FAIL);
}

void cli_warn(const char *fmt, ...)
{
    va_list ap;
    fputs("warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

_Noreturn void cli_usage_error(const struct cli *cli, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    cli_usage(cli, stderr);
    exit(EXIT_USAGE);
}

/* ---- Options */

bool cli_global_option(struct cli *cli, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        cli->json = true;
        return true;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        cli_usage(cli, stdout);
        exit(EXIT_OK);
    }
    static const char *const valued[] = {"--server", "--token"};
    for (size_t k = 0; k < 2; k++) {
        size_t n = strlen(valued[k]);
        if (strncmp(a, valued[k], n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        char *v;
        if (a[n] == '=') {
            v = argv[*i] + n + 1;
        } else if (*i + 1 < argc) {
            v = argv[++*i];
        } else {
            cli_usage_error(cli, "option '%s' needs a value", valued[k]);
        }
        if (k == 0) {
            cli->server_opt = v;
        } else {
            cli_warn("a token given with --token is visible to other users (ps);"
                     " prefer POCKITY_ADMIN_TOKEN or 'pockity-admin login'");
            if (cli->token_opt) {
                client_wipe(cli->token_opt, strlen(cli->token_opt));
                free(cli->token_opt);
            }
            if (!(cli->token_opt = strdup(v)))
                cli_die("out of memory");
            /* Shorten the time it shows in /proc/PID/cmdline. */
            memset(v, 'x', strlen(v));
        }
        return true;
    }
    return false;
}

static void set_option(struct cli *cli, struct opt *o, const char *v)
{
    int64_t n;
    switch (o->type) {
    case OPT_FLAG:
        *(bool *)o->value = true;
        break;
    case OPT_STRING:
        *(const char **)o->value = v;
        break;
    case OPT_SIZE:
        if (format_parse_size(v, &n) != 0)
            cli_usage_error(cli, "invalid size '%s' for '--%s' (examples: 1048576, 500MB, 10GiB)",
                            v, o->name);
        *(int64_t *)o->value = n;
        break;
    case OPT_COUNT:
        if (format_parse_int(v, 0, INT64_MAX, &n) != 0)
            cli_usage_error(cli, "invalid number '%s' for '--%s'", v, o->name);
        *(int64_t *)o->value = n;
        break;
    case OPT_LIST: {
        struct opt_list *l = o->value;
        if (l->n == OPT_LIST_MAX)
            cli_usage_error(cli, "'--%s' may be given at most %d times", o->name, OPT_LIST_MAX);
        l->items[l->n++] = v;
        break;
    }
    case OPT_BOOL: {
        int b = format_parse_bool(v);
        if (b < 0)
            cli_usage_error(cli, "'--%s' takes true or false, not '%s'", o->name, v);
        *(int *)o->value = b;
        break;
    }
    }
    o->seen = true;
}

size_t cli_parse(struct cli *cli, int argc, char **argv, struct opt *opts, const char **pos,
                 size_t min, size_t max)
{
    size_t npos = 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (npos == max)
                cli_usage_error(cli, "unexpected argument '%s'", a);
            pos[npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (cli_global_option(cli, argc, argv, &i))
            continue;
        struct opt *o = NULL;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (a[1] == '-') {
            for (struct opt *p = opts; p && p->name; p++)
                if (strlen(p->name) == len - 2 && strncmp(p->name, a + 2, len - 2) == 0)
                    o = p;
        }
        if (!o)
            cli_usage_error(cli, "unknown option '%.*s'", (int)len, a);
        if (o->type == OPT_FLAG) {
            if (eq)
                cli_usage_error(cli, "option '--%s' takes no value", o->name);
            set_option(cli, o, NULL);
        } else if (eq) {
            set_option(cli, o, eq + 1);
        } else if (i + 1 < argc) {
            set_option(cli, o, argv[++i]);
        } else {
            cli_usage_error(cli, "option '--%s' needs a value", o->name);
        }
    }
    if (npos < min) {
        /* Name it after the synopsis, whose positional arguments come first. */
        const char *syn = cli->cmd ? cli->cmd->args : "";
        int n = (int)strcspn(syn, " ");
        if (n > 0 && syn[0] != '[' && syn[0] != '-')
            cli_usage_error(cli, "missing %.*s", n, syn);
        cli_usage_error(cli, "missing argument");
    }
    return npos;
}

void cli_check_choice(const struct cli *cli, const char *name, const char *value,
                      const char *const *choices)
{
    if (!value)
        return;
    for (size_t i = 0; choices[i]; i++)
        if (strcmp(value, choices[i]) == 0)
            return;
    char list[256] = "";
    for (size_t i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                 choices[i]);
    cli_usage_error(cli, "invalid value '%s' for '--%s' (one of: %s)", value, name, list);
}

void cli_currency(const struct cli *cli, const char *name, const char *value, char out[4])
{
    out[0] = '\0';
    if (strlen(value) == 3) {
        for (int i = 0; i < 3; i++)
            out[i] = (char)(value[i] >= 'a' && value[i] <= 'z' ? value[i] - 'a' + 'A' : value[i]);
        out[3] = '\0';
    }
    if (!format_is_currency(out))
        cli_usage_error(cli, "invalid value '%s' for '--%s' (an ISO 4217 code such as USD)", value,
                        name);
}

/* ---- The server */

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Whether two server URLs name the same server (ignoring trailing '/'). */
static bool same_server(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    while (na && a[na - 1] == '/')
        na--;
    while (nb && b[nb - 1] == '/')
        nb--;
    return na == nb && strncmp(a, b, na) == 0;
}

struct client *cli_connect(struct cli *cli, bool with_token)
{
    if (cli->client)
        return cli->client;
    struct client_config saved = {0};
    char path[4096], err[512];
    const char *server = cli->server_opt ? cli->server_opt : env_value("POCKITY_SERVER");
    const char *token = cli->token_opt ? cli->token_opt : env_value("POCKITY_ADMIN_TOKEN");
    if (!server || (with_token && !token)) {
        int insecure = 0;
        if (client_config_path(path, sizeof(path)) == 0) {
            if (client_config_load(path, &saved, &insecure, err, sizeof(err)) != 0)
                cli_die("%s", err);
            if (insecure)
                cli_warn("'%s' can be read by other users: run 'chmod 600 %s'", path, path);
        }
        if (!server)
            server = saved.server;
        /* The saved token goes only to the server it was issued by. */
        if (!token && with_token && saved.token && saved.server &&
            same_server(saved.server, server)) {
            token = saved.token;
            cli->token_saved = true;
        }
    }
    if (!server)
        cli_die("no server: give --server URL, set POCKITY_SERVER or run 'pockity-admin login'");
    if (with_token && !token && saved.token)
        cli_die("not logged in to '%s' (the saved login is for '%s'): run 'pockity-admin"
                " login' or set POCKITY_ADMIN_TOKEN",
                server, saved.server ? saved.server : "no server");
    if (with_token && !token)
        cli_die("not logged in: run 'pockity-admin login' or set POCKITY_ADMIN_TOKEN");
    const char *why = NULL;
    cli->client = client_new(server, with_token ? token : NULL, &why);
    if (!cli->client)
        cli_die("cannot use server '%s': %s", server, why);
    snprintf(cli->server, sizeof(cli->server), "%s", server);
    client_set_cancel(cli->client, &cli_stop);
    client_config_release(&saved);
    return cli->client;
}

json_t *cli_call(struct cli *cli, const char *method, const char *path, json_t *body)
{
    struct client *c = cli_connect(cli, true);
    json_t *out = NULL;
    int rc = client_call(c, method, path, body, &out);
    json_decref(body);
    if (rc == CLIENT_OK)
        return out;
    fflush(stdout);
    fprintf(stderr, "error: %s\n", client_errmsg(c));
    if (rc == CLIENT_ERR_API && strcmp(client_errcode(c), "unauthenticated") == 0)
        fprintf(stderr, "hint: the login may have ended: run 'pockity-admin login'\n");
    exit(rc == CLIENT_ERR_CANCELED ? 130 : EXIT_FAIL);
}

void cli_print_raw(const struct cli *cli)
{
    const char *raw = cli->client ? client_raw(cli->client) : "";
    size_t n = strlen(raw);
    fputs(raw, stdout);
    if (!n || raw[n - 1] != '\n')
        fputc('\n', stdout);
}

struct buf *cli_path_buf(struct cli *cli)
{
    if (!cli->path.max)
        buf_init(&cli->path, 64 * 1024);
    buf_reset(&cli->path);
    return &cli->path;
}

void cli_path(struct buf *b, const char *prefix, const char *id, const char *suffix)
{
    if (buf_adds(b, prefix) || (id && client_escape(b, id)) || (suffix && buf_adds(b, suffix)))
        cli_die("request path too long");
}

void cli_query(struct buf *b, const char *name, const char *value)
{
    if (client_query(b, name, value))
        cli_die("request path too long");
}

void cli_query_int(struct buf *b, const char *name, int64_t value, bool set)
{
    char text[32];
    if (!set)
        return;
    snprintf(text, sizeof(text), "%lld", (long long)value);
    cli_query(b, name, text);
}

/* ---- Reading answers */

json_t *cli_json(json_t *root, const char *path)
{
    char key[128];
    json_t *v = root;
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (dot ? 1 : 0);
    }
    return v;
}

const char *cli_str(json_t *root, const char *path)
{
    return json_string_value(cli_json(root, path));
}

int64_t cli_int(json_t *root, const char *path)
{
    return (int64_t)json_integer_value(cli_json(root, path));
}

const char *cli_text(json_t *root, const char *path, char *out, size_t outlen)
{
    json_t *v = cli_json(root, path);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(out, outlen, "%s", json_is_true(v) ? "true" : "false");
    else
        return NULL;
    return out;
}

/* ---- Output */

struct table *cli_table(size_t ncols, const char *const *headers)
{
    struct table *t = table_new(ncols, headers);
    if (!t)
        cli_die("out of memory");
    return t;
}

void cli_row(struct table *t, const char *const *cells)
{
    if (table_add(t, cells) != 0)
        cli_die("out of memory");
}

struct table *cli_kv_table(void)
{
    struct table *t = cli_table(2, NULL);
    table_set_cell_max(t, 0);
    return t;
}

void cli_kv(struct table *t, const char *key, const char *value)
{
    const char *cells[] = {key, value};
    cli_row(t, cells);
}

const char *cli_time(json_t *root, const char *path, char *out, size_t outlen)
{
    json_t *v = cli_json(root, path);
    if (json_is_string(v))
        return json_string_value(v);
    if (!json_is_integer(v))
        return NULL;
    return format_time((int64_t)json_integer_value(v), out, outlen);
}

const char *cli_money(json_t *root, const char *amount_path, const char *currency_path, char *out,
                      size_t outlen)
{
    json_t *v = cli_json(root, amount_path);
    if (!json_is_integer(v))
        return NULL;
    return format_money((int64_t)json_integer_value(v), cli_str(root, currency_path), out, outlen);
}

json_t *cli_unwrap(json_t *answer, const char *key)
{
    json_t *inner = json_object_get(answer, key);
    return json_is_object(inner) ? inner : answer;
}

void cli_more(json_t *answer)
{
    json_t *next = json_object_get(answer, "next_offset");
    if (json_is_integer(next))
        fprintf(stderr, "(more: add --offset %lld)\n", (long long)json_integer_value(next));
    const char *cursor = json_string_value(json_object_get(answer, "next_cursor"));
    if (!cursor || !*cursor)
        return;
    /* The cursor is the server's text: print it only when harmless. */
    for (const char *p = cursor; *p; p++)
        if (*p <= ' ' || *p > '~' || p - cursor > 512) {
            fprintf(stderr, "(more follow)\n");
            return;
        }
    fprintf(stderr, "(more: add --cursor %s)\n", cursor);
}
