/* pockityd: the tenant daemon. Reads its configuration, opens the database
 * (migrating it), serves the HTTP API until SIGTERM/SIGINT, then stops
 * gracefully. `--create-admin EMAIL` makes the first administrator. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "password.h"
#include "routes.h"
#include "s3.h"
#include "secret.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: pockityd --config FILE [--create-admin EMAIL]\n"
               "       pockityd --version | --help\n"
               "\n"
               "  -c, --config FILE        settings (INI); secrets may come from the\n"
               "                           environment instead (see etc/pockityd.ini)\n"
               "      --create-admin EMAIL create an administrator (or make an existing\n"
               "                           user one), reading the password from stdin\n"
               "  -V, --version            print the version\n"
               "  -h, --help               print this help\n");
}

/* Read one line from stdin (the password), without its newline. */
static int read_password(char *out, size_t outlen)
{
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "password: ");
    if (!fgets(out, (int)outlen, stdin))
        return -1;
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n')
        out[--n] = '\0';
    if (n && out[n - 1] == '\r')
        out[--n] = '\0';
    return 0;
}

static int create_admin(struct app *app, const char *email_in)
{
    char email[256], why[256], password[PASSWORD_MAX_BYTES + 2], hash[PASSWORD_HASH_MAX];
    if (email_normalize(email_in, email, sizeof(email)) != 0) {
        fprintf(stderr, "error: invalid email address '%s'\n", email_in);
        return 1;
    }
    if (read_password(password, sizeof(password)) != 0) {
        fprintf(stderr, "error: no password on standard input\n");
        return 1;
    }
    if (password_check_policy(password, why, sizeof(why)) != 0) {
        fprintf(stderr, "error: %s\n", why);
        return 1;
    }
    int rc = password_hash(password, hash, sizeof(hash));
    secret_wipe(password, sizeof(password));
    if (rc) {
        fprintf(stderr, "error: cannot hash the password\n");
        return 1;
    }
    struct db_conn *c = db_acquire(app->db);
    if (!c) {
        fprintf(stderr, "error: no database connection\n");
        return 1;
    }
    char id[64];
    api_new_id("usr", id, sizeof(id));
    int64_t now = api_now(), changes = 0;
    rc = db_begin(c, DB_TX_WRITE);
    if (!rc)
        rc = db_exec(c,
                     "UPDATE users SET role = 'admin', password_hash = $2, email_verified = 1,"
                     " updated_at = $3 WHERE email = $1",
                     DB_ARGS(DB_TEXT(email), DB_TEXT(hash), DB_INT(now)), &changes);
    if (!rc && changes == 0)
        rc = db_exec(c,
                     "INSERT INTO users (id, email, name, password_hash, role, status,"
                     " email_verified, created_at, updated_at)"
                     " VALUES ($1, $2, 'Administrator', $3, 'admin', 'active', 1, $4, $4)",
                     DB_ARGS(DB_TEXT(id), DB_TEXT(email), DB_TEXT(hash), DB_INT(now)), NULL);
    if (!rc)
        rc = api_audit(NULL, c, "system", NULL,
                       changes ? "user.promote_admin" : "user.create_admin", "user", NULL,
                       json_pack("{s:s}", "email", email));
    if (!rc)
        rc = db_commit(c);
    if (rc) {
        fprintf(stderr, "error: cannot create the administrator: %s: %s\n", db_strerror(rc),
                db_conn_errmsg(c));
        db_release(c);
        return 1;
    }
    db_release(c);
    printf("%s administrator %s\n", changes ? "updated" : "created", email);
    return 0;
}

static int open_s3(struct app *app)
{
    const struct config *cfg = &app->cfg;
    struct s3_config sc = {
            .endpoint = cfg->s3_endpoint,
            .region = cfg->s3_region,
            .bucket = cfg->s3_bucket,
            .access_key = cfg->s3_access_key,
            .secret_key = cfg->s3_secret_key,
            .request_timeout_ms = 15000,
            .max_retries = 2,
    };
    int rc = s3_client_new(&sc, &app->s3);
    if (rc)
        log_error("cannot set up the S3 client for '%s': %s", cfg->s3_endpoint, s3_strerror(rc));
    return rc;
}

static int write_port_file(const char *path, unsigned port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        log_error("cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void register_metrics(void)
{
    static const char *const kinds[] = {"busy", "unavailable", "error", NULL};
    static const char *const results[] = {"granted", "refused", NULL};
    metrics_counter_register("pockityd_sessions_issued_total",
                             "Mount sessions (STS credentials) issued.");
    metrics_counter_register_labels("pockityd_reservations_total", "Quota reservations by result.",
                                    "result", results);
    metrics_counter_register_labels("pockityd_allowances_total", "Quota allowances by result.",
                                    "result", results);
    metrics_counter_register_labels("pockityd_db_errors_total", "Database errors by kind.", "kind",
                                    kinds);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
            {"config", required_argument, NULL, 'c'},
            {"create-admin", required_argument, NULL, 'A'},
            {"version", no_argument, NULL, 'V'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *admin_email = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'A':
            admin_email = optarg;
            break;
        case 'V':
            printf("pockityd %s\n", POCKITY_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return 2;
    }

    static struct app app;
    char err[512];
    config_init(&app.cfg);
    if (config_load(&app.cfg, config_path, err, sizeof(err)) != 0 ||
        config_validate(&app.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int level = log_level_parse(app.cfg.log_level);
    log_setup("pockityd", level < 0 ? LOG_LEVEL_INFO : (enum log_level)level, (int)app.cfg.syslog);
    struct password_cost cost = {.m_kib = (uint32_t)app.cfg.password_cost_kib,
                                 .t = (uint32_t)app.cfg.password_cost_t,
                                 .p = 1};
    if (password_set_cost(&cost) != 0) {
        fprintf(stderr, "error: 'auth.password_cost_kib' / 'auth.password_cost_t' out of range\n");
        config_release(&app.cfg);
        return 1;
    }

    struct db_options dbo = {.pool_size = (unsigned)app.cfg.db_pool};
    if (db_open(app.cfg.db_url, &dbo, &app.db, err, sizeof(err)) != DB_OK) {
        fprintf(stderr, "error: cannot open the database: %s\n", err);
        config_release(&app.cfg);
        return 1;
    }
    int status = 1;
    if (admin_email) {
        status = create_admin(&app, admin_email);
        goto out;
    }

    if (app.cfg.token_secret) {
        if (token_key_init(&app.token_key, app.cfg.token_secret) != 0)
            goto out;
        if (app.cfg.token_secret_previous &&
            token_key_set_previous(&app.token_key, app.cfg.token_secret_previous) != 0) {
            log_error("'auth.token_secret_previous' is unusable (at least 32 bytes)");
            goto out;
        }
    } else {
        log_warn("no 'auth.token_secret': logins will not survive a restart and replicas "
                 "will not accept each other's tokens");
        if (token_key_random(&app.token_key) != 0)
            goto out;
    }
    if (open_s3(&app) != 0)
        goto out;
    register_metrics();

    /* Signals are taken by sigwait below, never by the worker threads. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    size_t n_routes = 0;
    struct http_route *routes = routes_build(&n_routes);
    struct http_config hc = {
            .bind = app.cfg.bind,
            .port = (uint16_t)app.cfg.port,
            .threads = (unsigned)app.cfg.threads,
            .max_body = (size_t)app.cfg.max_body,
            .trusted_proxies = app.cfg.trusted_proxies,
    };
    struct http_server *srv = NULL;
    if (!routes || http_server_start(&hc, routes, n_routes, &app, &srv) != 0) {
        free(routes);
        goto out;
    }
    unsigned port = http_server_port(srv);
    if (app.cfg.port_file && write_port_file(app.cfg.port_file, port) != 0) {
        http_server_stop(srv);
        free(routes);
        goto out;
    }
    struct jobs *jobs = jobs_start(&app);
    log_info("pockityd %s listening on %s:%u (database %s)", POCKITY_VERSION, app.cfg.bind, port,
             strncmp(app.cfg.db_url, "sqlite:", 7) == 0 ? "sqlite" : "postgresql");

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("signal %d: stopping (finishing requests in flight)", sig);
    http_server_stop(srv);
    jobs_stop(jobs);
    free(routes);
    status = 0;
    log_info("stopped");
out:
    s3_client_free(app.s3);
    db_close(app.db);
    token_key_release(&app.token_key);
    metrics_release();
    config_release(&app.cfg);
    return status;
}
