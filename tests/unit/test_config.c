/* Unit tests of pockityd's configuration: defaults, INI, environment, checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char path[64];

static void write_ini(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/pockityd-config-test.%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *const good =
        "[server]\nport = 9000\nthreads = 4\n"
        "[database]\nurl = sqlite:/tmp/x.db\n"
        "[s3]\nendpoint = http://127.0.0.1:7480\nbucket = b\naccess_key = ak\n"
        "secret_key = sk\nrole_arn = arn:aws:iam:::role/r\nroot_prefix = tenants/p\n";

static void test_defaults_and_file(void **state)
{
    struct config cfg;
    char err[256];
    config_init(&cfg);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.session_seconds, 900);
    write_ini(good);
    unsetenv("POCKITYD_S3_SECRET_KEY");
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 9000);
    assert_int_equal(cfg.threads, 4);
    assert_string_equal(cfg.s3_root_prefix, "tenants/p");
    assert_string_equal(cfg.s3_secret_key, "sk");
    assert_null(cfg.trusted_proxies);
    assert_int_equal(cfg.db_pool, 16);
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);
    config_release(&cfg);

    /* trusted proxies: a valid list loads and validates */
    char text[1024];
    snprintf(text, sizeof(text), "%s[server]\ntrusted_proxies = 10.0.0.5, fd00::/8\n", good);
    write_ini(text);
    config_init(&cfg);
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
    assert_string_equal(cfg.trusted_proxies, "10.0.0.5, fd00::/8");
    assert_int_equal(config_validate(&cfg, err, sizeof(err)), 0);
    config_release(&cfg);
    unlink(path);
}

static void test_environment_overrides_secrets(void **state)
{
    struct config cfg;
    char err[256];
    config_init(&cfg);
    write_ini(good);
    setenv("POCKITYD_S3_SECRET_KEY", "from-env", 1);
    setenv("POCKITYD_DATABASE_URL", "postgresql://u:p@h/db", 1);
    assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
    assert_string_equal(cfg.s3_secret_key, "from-env");
    assert_string_equal(cfg.db_url, "postgresql://u:p@h/db");
    unsetenv("POCKITYD_S3_SECRET_KEY");
    unsetenv("POCKITYD_DATABASE_URL");
    config_release(&cfg);
    unlink(path);
}

static void test_bad_files(void **state)
{
    struct config cfg;
    char err[256];
    static const struct {
        const char *text, *expect;
    } cases[] = {
            {"[server]\nprot = 1\n", "unknown key 'prot'"},
            {"[server]\nport = eighty\n", "bad value for 'server.port'"},
            {"[server]\nsyslog = maybe\n", "bad value for 'server.syslog'"},
            {"[nosuch]\nport = 1\n", "unknown key"},
            {"not an ini line\n", "line 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        config_init(&cfg);
        write_ini(cases[i].text);
        assert_int_equal(config_load(&cfg, path, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].expect))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].expect);
        config_release(&cfg);
    }
    unlink(path);
    config_init(&cfg);
    assert_int_equal(config_load(&cfg, "/nonexistent/pockityd.ini", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot open '/nonexistent/pockityd.ini'"));
    config_release(&cfg);
}

static void test_validation(void **state)
{
    struct config cfg;
    char err[256];
    static const struct {
        const char *extra, *expect;
    } cases[] = {
            {"[s3]\nbucket =\n", "missing setting 's3.bucket'"},
            {"[server]\nport = 70000\n", "server.port"},
            {"[s3]\nroot_prefix = /abs\n", "root_prefix"},
            {"[s3]\nroot_prefix = a//b\n", "root_prefix"},
            {"[s3]\nsession_seconds = 60\n", "session_seconds"},
            {"[auth]\ntoken_secret = short\n", "token_secret"},
            {"[server]\nmax_body = 10\n", "max_body"},
            {"[events]\nenabled = true\ntoken = 0123456789abcdef\n", "events.push_url"},
            {"[events]\nenabled = true\npush_url = http://x/\n", "events.token"},
            {"[reconcile]\nlist_rate = 0\n", "list_rate"},
            {"[billing]\ngrace = -1\n", "billing"},
            {"[server]\ntrusted_proxies = 10.0.0.1, nope\n", "'nope' is not an IP address"},
            {"[server]\ntrusted_proxies = 10.0.0.0/99\n", "server.trusted_proxies"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), "%s%s", good, cases[i].extra);
        config_init(&cfg);
        write_ini(text);
        assert_int_equal(config_load(&cfg, path, err, sizeof(err)), 0);
        assert_int_equal(config_validate(&cfg, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].expect))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].expect);
        config_release(&cfg);
    }
    unlink(path);
}

/* etc/pockityd.ini, the example shipped with the source, loads: every key it
 * names exists, and its values parse. */
static void test_example_config(void **state)
{
    (void)state;
    const char *root = getenv("POCKITY_SOURCE_ROOT");
    if (!root)
        skip();
    char example[4096];
    snprintf(example, sizeof(example), "%s/etc/pockityd.ini", root);
    struct config cfg;
    char err[512];
    config_init(&cfg);
    assert_int_equal(config_load(&cfg, example, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.billing_grace, 604800);
    assert_int_equal(cfg.reconcile_list_rate, 20);
    assert_string_equal(cfg.events_topic, "pockity-events");
    config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_defaults_and_file),
            cmocka_unit_test(test_environment_overrides_secrets),
            cmocka_unit_test(test_bad_files),
            cmocka_unit_test(test_validation),
            cmocka_unit_test(test_example_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
