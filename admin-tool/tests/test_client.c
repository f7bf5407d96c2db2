/* Unit tests of pockity-admin's client: URL encoding, argument checks, the
 * saved login file, and a call to a server that is not there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"

static void test_escape_and_query(void **state)
{
    struct buf b;
    buf_init(&b, 1024);
    assert_int_equal(client_escape(&b, "a b/c?d=\xc3\xa9~-._&%"), 0);
    assert_string_equal(b.data, "a%20b%2Fc%3Fd%3D%C3%A9~-._%26%25");
    buf_reset(&b);
    assert_int_equal(buf_adds(&b, "/v1/admin/users"), 0);
    assert_int_equal(client_query(&b, "q", NULL), 0);
    assert_string_equal(b.data, "/v1/admin/users");
    assert_int_equal(client_query(&b, "q", "ann@example.com"), 0);
    assert_int_equal(client_query(&b, "limit", "5"), 0);
    assert_int_equal(client_query(&b, "x", ""), 0);
    assert_string_equal(b.data, "/v1/admin/users?q=ann%40example.com&limit=5&x=");
    buf_release(&b);

    /* The cap holds. */
    buf_init(&b, 4);
    assert_int_equal(client_escape(&b, "abcd"), 0);
    assert_int_not_equal(client_escape(&b, "e"), 0);
    buf_release(&b);
}

static void test_new_checks_its_arguments(void **state)
{
    const char *why = NULL;
    static const char *const bad_servers[] = {
            "ftp://example.com",     "http://", "https://", "example.com:8080", "http://a b",
            "http://a\r\nX-Evil: 1", ""};
    for (size_t i = 0; i < sizeof(bad_servers) / sizeof(bad_servers[0]); i++) {
        why = NULL;
        assert_null(client_new(bad_servers[i], NULL, &why));
        assert_non_null(why);
    }
    assert_null(client_new("http://localhost:1", "pks_a\r\nX-Evil: 1", &why));
    assert_string_equal(why, "the token holds spaces or control characters");
    assert_null(client_new("http://localhost:1", "", &why));
    struct client *c = client_new("http://127.0.0.1:1/", "pks_token", NULL);
    assert_non_null(c);
    client_free(c);
    client_free(NULL);
}

static void test_unreachable_server(void **state)
{
    struct client *c = client_new("http://127.0.0.1:1", "pks_token", NULL);
    assert_non_null(c);
    json_t *out = (json_t *)1;
    assert_int_equal(client_call(c, "GET", "/v1/admin/tiers", NULL, &out), CLIENT_ERR_TRANSPORT);
    assert_null(out);
    assert_int_equal(client_http_status(c), 0);
    assert_string_equal(client_errcode(c), "transport");
    assert_true(strncmp(client_errmsg(c), "cannot reach 'http://127.0.0.1:1': ", 35) == 0);
    assert_null(strstr(client_errmsg(c), "pks_token"));
    assert_string_equal(client_raw(c), "");
    client_free(c);
}

static void test_config_round_trip(void **state)
{
    char dir[] = "/tmp/test_admin_client.XXXXXX", path[256], err[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/a/b/admin.ini", dir);

    struct client_config cfg;
    int insecure = -1;
    /* A missing file is an empty login, not an error. */
    assert_int_equal(client_config_load(path, &cfg, &insecure, err, sizeof(err)), 0);
    assert_null(cfg.server);
    assert_null(cfg.token);
    assert_int_equal(insecure, 0);

    struct client_config in = {.server = "http://h:8080", .token = "pks_secret"};
    assert_int_equal(client_config_save(path, &in, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/a/b", dir);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);

    assert_int_equal(client_config_load(path, &cfg, &insecure, err, sizeof(err)), 0);
    assert_string_equal(cfg.server, "http://h:8080");
    assert_string_equal(cfg.token, "pks_secret");
    assert_int_equal(insecure, 0);
    client_config_release(&cfg);
    assert_null(cfg.server);

    /* Without the token; a group-readable file is reported. */
    in.token = NULL;
    assert_int_equal(client_config_save(path, &in, err, sizeof(err)), 0);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(client_config_load(path, &cfg, &insecure, err, sizeof(err)), 0);
    assert_string_equal(cfg.server, "http://h:8080");
    assert_null(cfg.token);
    assert_int_equal(insecure, 1);
    client_config_release(&cfg);

    /* A line break would smuggle a key in: refused, the file unchanged. */
    in.token = "pks_x\nserver = http://evil";
    assert_int_equal(client_config_save(path, &in, err, sizeof(err)), -1);
    assert_string_equal(err, "the token holds a line break");

    /* Malformed files. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[admin]\nserver = http://h\ncolour = blue\n", f);
    fclose(f);
    assert_int_equal(client_config_load(path, &cfg, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "line 3: unknown key 'colour'"));
    assert_null(cfg.server); /* nothing half-loaded */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[other]\nserver = http://h\n", f);
    fclose(f);
    assert_int_equal(client_config_load(path, &cfg, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown section 'other'"));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[admin\n", f);
    fclose(f);
    assert_int_equal(client_config_load(path, &cfg, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "line 1"));

    /* A folder where the file should be. */
    snprintf(sub, sizeof(sub), "%s/a", dir);
    assert_int_equal(client_config_load(sub, &cfg, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "is not a small regular file"));

    unlink(path);
    snprintf(sub, sizeof(sub), "%s/a/b", dir);
    rmdir(sub);
    snprintf(sub, sizeof(sub), "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
}

static void test_config_path(void **state)
{
    char path[64], *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("HOME", "/home/ann", 1);
    assert_int_equal(client_config_path(path, sizeof(path)), 0);
    assert_string_equal(path, "/home/ann/.config/pockity/admin.ini");
    assert_int_equal(client_config_path(path, 10), -1);
    unsetenv("HOME");
    assert_int_equal(client_config_path(path, sizeof(path)), -1);
    if (home)
        setenv("HOME", home, 1);
    free(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_escape_and_query),
            cmocka_unit_test(test_new_checks_its_arguments),
            cmocka_unit_test(test_unreachable_server),
            cmocka_unit_test(test_config_round_trip),
            cmocka_unit_test(test_config_path),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
