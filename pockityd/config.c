/* config: a table of keys with their types and offsets drives the INI reader,
 * the defaults and the environment overrides alike. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "http.h"

enum opt_type {
    OPT_STR,
    OPT_INT,
    OPT_BOOL
};

struct opt {
    const char *section;
    const char *name;
    enum opt_type type;
    size_t offset;
    const char *def; /* default, as text; NULL for none */
    const char *env; /* environment variable that overrides it, or NULL */
    int secret;      /* wiped on release */
};

#define O(sec, key, type, field, def, env, secret)                                                 \
    {                                                                                              \
        sec, key, type, offsetof(struct config, field), def, env, secret                           \
    }

static const struct opt opts[] = {
        O("server", "bind", OPT_STR, bind, "127.0.0.1", NULL, 0),
        O("server", "port", OPT_INT, port, "8080", "POCKITYD_PORT", 0),
        O("server", "threads", OPT_INT, threads, "16", NULL, 0),
        O("server", "max_body", OPT_INT, max_body, "1048576", NULL, 0),
        O("server", "log_level", OPT_STR, log_level, "info", NULL, 0),
        O("server", "syslog", OPT_BOOL, syslog, "false", NULL, 0),
        O("server", "port_file", OPT_STR, port_file, NULL, NULL, 0),
        O("server", "trusted_proxies", OPT_STR, trusted_proxies, NULL, NULL, 0),
        O("database", "url", OPT_STR, db_url, "sqlite:pockityd.db", "POCKITYD_DATABASE_URL", 1),
        O("database", "pool", OPT_INT, db_pool, "16", NULL, 0),
        O("s3", "endpoint", OPT_STR, s3_endpoint, NULL, "POCKITYD_S3_ENDPOINT", 0),
        O("s3", "public_endpoint", OPT_STR, s3_public_endpoint, NULL, NULL, 0),
        O("s3", "region", OPT_STR, s3_region, "us-east-1", "POCKITYD_S3_REGION", 0),
        O("s3", "bucket", OPT_STR, s3_bucket, NULL, "POCKITYD_S3_BUCKET", 0),
        O("s3", "access_key", OPT_STR, s3_access_key, NULL, "POCKITYD_S3_ACCESS_KEY", 1),
        O("s3", "secret_key", OPT_STR, s3_secret_key, NULL, "POCKITYD_S3_SECRET_KEY", 1),
        O("s3", "role_arn", OPT_STR, s3_role_arn, NULL, "POCKITYD_S3_ROLE_ARN", 0),
        O("s3", "root_prefix", OPT_STR, s3_root_prefix, "pockets", NULL, 0),
        O("s3", "session_seconds", OPT_INT, session_seconds, "900", NULL, 0),
        O("s3", "scoped_roles", OPT_BOOL, s3_scoped_roles, "true", NULL, 0),
        O("auth", "token_secret", OPT_STR, token_secret, NULL, "POCKITYD_TOKEN_SECRET", 1),
        O("auth", "token_secret_previous", OPT_STR, token_secret_previous, NULL,
          "POCKITYD_TOKEN_SECRET_PREVIOUS", 1),
        O("auth", "login_ttl", OPT_INT, login_ttl, "604800", NULL, 0),
        O("auth", "login_max_attempts", OPT_INT, login_max_attempts, "10", NULL, 0),
        O("auth", "login_window", OPT_INT, login_window, "900", NULL, 0),
        O("auth", "password_cost_kib", OPT_INT, password_cost_kib, "19456", NULL, 0),
        O("auth", "password_cost_t", OPT_INT, password_cost_t, "2", NULL, 0),
        O("quota", "reservation_ttl", OPT_INT, reservation_ttl, "3600", NULL, 0),
        O("quota", "sweep_interval", OPT_INT, sweep_interval, "60", NULL, 0),
        O("quota", "allowance_ttl", OPT_INT, allowance_ttl, "120", NULL, 0),
        O("server", "public_url", OPT_STR, public_url, NULL, "POCKITYD_PUBLIC_URL", 0),
        O("billing", "grace", OPT_INT, billing_grace, "604800", NULL, 0),
        O("billing", "renew_ahead", OPT_INT, billing_renew_ahead, "259200", NULL, 0),
        O("billing", "due_days", OPT_INT, billing_due_days, "7", NULL, 0),
        O("billing", "interval", OPT_INT, billing_interval, "60", NULL, 0),
        O("stripe", "api_base", OPT_STR, stripe_api_base, "https://api.stripe.com", NULL, 0),
        O("stripe", "secret_key", OPT_STR, stripe_secret_key, NULL, "POCKITYD_STRIPE_SECRET_KEY",
          1),
        O("stripe", "webhook_secret", OPT_STR, stripe_webhook_secret, NULL,
          "POCKITYD_STRIPE_WEBHOOK_SECRET", 1),
        O("razorpay", "api_base", OPT_STR, razorpay_api_base, "https://api.razorpay.com", NULL, 0),
        O("razorpay", "key_id", OPT_STR, razorpay_key_id, NULL, NULL, 0),
        O("razorpay", "key_secret", OPT_STR, razorpay_key_secret, NULL,
          "POCKITYD_RAZORPAY_KEY_SECRET", 1),
        O("razorpay", "webhook_secret", OPT_STR, razorpay_webhook_secret, NULL,
          "POCKITYD_RAZORPAY_WEBHOOK_SECRET", 1),
        O("btcpay", "url", OPT_STR, btcpay_url, NULL, NULL, 0),
        O("btcpay", "api_key", OPT_STR, btcpay_api_key, NULL, "POCKITYD_BTCPAY_API_KEY", 1),
        O("btcpay", "store_id", OPT_STR, btcpay_store_id, NULL, NULL, 0),
        O("btcpay", "webhook_secret", OPT_STR, btcpay_webhook_secret, NULL,
          "POCKITYD_BTCPAY_WEBHOOK_SECRET", 1),
        O("crypto", "eth_address", OPT_STR, crypto_eth_address, NULL, NULL, 0),
        O("crypto", "usdc_address", OPT_STR, crypto_usdc_address, NULL, NULL, 0),
        O("smtp", "url", OPT_STR, smtp_url, NULL, "POCKITYD_SMTP_URL", 0),
        O("smtp", "user", OPT_STR, smtp_user, NULL, NULL, 0),
        O("smtp", "password", OPT_STR, smtp_password, NULL, "POCKITYD_SMTP_PASSWORD", 1),
        O("smtp", "from", OPT_STR, smtp_from, NULL, NULL, 0),
        O("smtp", "require_tls", OPT_BOOL, smtp_require_tls, "false", NULL, 0),
        O("events", "enabled", OPT_BOOL, events_enabled, "false", NULL, 0),
        O("events", "token", OPT_STR, events_token, NULL, "POCKITYD_EVENTS_TOKEN", 1),
        O("events", "push_url", OPT_STR, events_push_url, NULL, NULL, 0),
        O("events", "topic", OPT_STR, events_topic, "pockity-events", NULL, 0),
        O("reconcile", "interval", OPT_INT, reconcile_interval, "3600", NULL, 0),
        O("reconcile", "list_rate", OPT_INT, reconcile_list_rate, "20", NULL, 0),
        O("reconcile", "multipart_max_age", OPT_INT, multipart_max_age, "86400", NULL, 0),
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void *field(struct config *cfg, const struct opt *o)
{
    return (char *)cfg + o->offset;
}

static void free_str(char **p, int secret)
{
    if (*p && secret)
        OPENSSL_cleanse(*p, strlen(*p));
    free(*p);
    *p = NULL;
}

/* Set one option from text. Returns 0 or -EINVAL / -ENOMEM. */
static int opt_set(struct config *cfg, const struct opt *o, const char *value)
{
    switch (o->type) {
    case OPT_STR: {
        char *copy = strdup(value);
        if (!copy)
            return -ENOMEM;
        char **p = field(cfg, o);
        free_str(p, o->secret);
        *p = copy;
        return 0;
    }
    case OPT_INT: {
        errno = 0;
        char *end;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            return -EINVAL;
        *(int64_t *)field(cfg, o) = v;
        return 0;
    }
    case OPT_BOOL: {
        int64_t *p = field(cfg, o);
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1"))
            *p = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "0"))
            *p = 0;
        else
            return -EINVAL;
        return 0;
    }
    }
    return -EINVAL;
}

void config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].def)
            opt_set(cfg, &opts[i], opts[i].def);
}

void config_env(struct config *cfg)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = opts[i].env ? getenv(opts[i].env) : NULL;
        if (v && *v)
            opt_set(cfg, &opts[i], v);
    }
}

struct load_ctx {
    struct config *cfg;
    char *err;
    size_t errlen;
    const char *path;
    int failed;
};

static int on_ini(void *arg, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = arg;
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strcmp(opts[i].section, section) || strcmp(opts[i].name, name))
            continue;
        int rc = opt_set(ctx->cfg, &opts[i], value);
        if (rc) {
            snprintf(ctx->err, ctx->errlen, "error: '%s': bad value for '%s.%s'", ctx->path,
                     section, name);
            ctx->failed = 1;
            return 0;
        }
        return 1;
    }
    snprintf(ctx->err, ctx->errlen, "error: '%s': unknown key '%s' in section '%s'", ctx->path,
             name, section);
    ctx->failed = 1;
    return 0;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    struct load_ctx ctx = {.cfg = cfg, .err = err, .errlen = errlen, .path = path};
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "error: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_file(f, on_ini, &ctx);
    fclose(f);
    if (ctx.failed)
        return -1;
    if (rc > 0) {
        snprintf(err, errlen, "error: '%s' line %d: cannot parse", path, rc);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "error: cannot read '%s'", path);
        return -1;
    }
    config_env(cfg);
    return 0;
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
    static const struct {
        size_t offset;
        const char *name;
    } required[] = {
            {offsetof(struct config, db_url), "database.url"},
            {offsetof(struct config, s3_endpoint), "s3.endpoint"},
            {offsetof(struct config, s3_bucket), "s3.bucket"},
            {offsetof(struct config, s3_access_key), "s3.access_key"},
            {offsetof(struct config, s3_secret_key), "s3.secret_key"},
            {offsetof(struct config, s3_role_arn), "s3.role_arn"},
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const char *v = *(char *const *)((const char *)cfg + required[i].offset);
        if (!v || !*v) {
            snprintf(err, errlen, "error: missing setting '%s'", required[i].name);
            return -1;
        }
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(err, errlen, "error: 'server.port' must be 0..65535");
        return -1;
    }
    if (cfg->threads < 1 || cfg->threads > 1024 || cfg->db_pool < 1 || cfg->db_pool > 256) {
        snprintf(err, errlen, "error: 'server.threads' and 'database.pool' must be positive");
        return -1;
    }
    if (cfg->max_body < 1024 || cfg->max_body > (64 << 20)) {
        snprintf(err, errlen, "error: 'server.max_body' must be between 1 KiB and 64 MiB");
        return -1;
    }
    if (cfg->session_seconds < 900 || cfg->session_seconds > 43200) {
        snprintf(err, errlen, "error: 's3.session_seconds' must be 900..43200 (STS limits)");
        return -1;
    }
    const char *rp = cfg->s3_root_prefix;
    if (!rp || !*rp || rp[0] == '/' || rp[strlen(rp) - 1] == '/' || strstr(rp, "//")) {
        snprintf(err, errlen,
                 "error: 's3.root_prefix' must be a non-empty path without "
                 "leading, trailing or double slashes");
        return -1;
    }
    if (cfg->trusted_proxies) {
        char why[160];
        struct http_proxies *proxies = NULL;
        int rc = http_proxies_parse(cfg->trusted_proxies, &proxies, why, sizeof(why));
        http_proxies_free(proxies);
        if (rc) {
            snprintf(err, errlen, "error: 'server.trusted_proxies': %s",
                     rc == -ENOMEM ? "out of memory" : why);
            return -1;
        }
    }
    if (cfg->token_secret && strlen(cfg->token_secret) < 32) {
        snprintf(err, errlen, "error: 'auth.token_secret' must be at least 32 bytes");
        return -1;
    }
    if (cfg->events_enabled && (!cfg->events_token || strlen(cfg->events_token) < 16 ||
                                ((!cfg->events_push_url || !*cfg->events_push_url) &&
                                 (!cfg->public_url || !*cfg->public_url)))) {
        snprintf(err, errlen,
                 "error: 'events.enabled' needs 'events.token' (16 bytes at least) and"
                 " 'events.push_url' or 'server.public_url'");
        return -1;
    }
    if (cfg->billing_grace < 0 || cfg->billing_renew_ahead < 0 || cfg->billing_due_days < 0 ||
        cfg->billing_interval < 0 || cfg->reconcile_interval < 0 || cfg->reconcile_list_rate < 1 ||
        cfg->multipart_max_age < 1) {
        snprintf(err, errlen,
                 "error: billing and reconcile durations must not be negative, "
                 "'reconcile.list_rate' at least 1 and 'reconcile.multipart_max_age' at least 1");
        return -1;
    }
    if (cfg->login_ttl < 60 || cfg->login_max_attempts < 1 || cfg->login_window < 1 ||
        cfg->reservation_ttl < 10 || cfg->sweep_interval < 1) {
        snprintf(err, errlen, "error: auth and quota durations must be positive");
        return -1;
    }
    if (cfg->allowance_ttl < 10) {
        snprintf(err, errlen, "error: 'quota.allowance_ttl' must be at least 10 seconds");
        return -1;
    }
    return 0;
}

void config_release(struct config *cfg)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].type == OPT_STR)
            free_str(field(cfg, &opts[i]), opts[i].secret);
}
