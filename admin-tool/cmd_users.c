/* cmd_users: user accounts: list, show, suspend, unsuspend. */
#include <stdio.h>

#include "cli.h"
#include "format.h"

static int list(struct cli *cli, int argc, char **argv)
{
    const char *query = NULL;
    int64_t limit = 0, offset = 0;
    struct opt opts[] = {
            {"query", OPT_STRING, &query, false},
            {"limit", OPT_COUNT, &limit, false},
            {"offset", OPT_COUNT, &offset, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/users", NULL, NULL);
    cli_query(path, "q", query);
    cli_query_int(path, "limit", limit, opts[1].seen);
    cli_query_int(path, "offset", offset, opts[2].seen);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    static const char *const head[] = {"ID",     "EMAIL",   "NAME",   "ROLE",
                                       "STATUS", "POCKETS", "CREATED"};
    struct table *t = cli_table(7, head);
    size_t i;
    json_t *u, *users = json_object_get(ans, "users");
    json_array_foreach(users, i, u)
    {
        char pockets[32], created[32];
        const char *cells[] = {cli_str(u, "id"),
                               cli_str(u, "email"),
                               cli_str(u, "name"),
                               cli_str(u, "role"),
                               cli_str(u, "status"),
                               cli_text(u, "pockets_count", pockets, sizeof(pockets)),
                               format_time(cli_int(u, "created_at"), created, sizeof(created))};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    int64_t total = cli_int(ans, "total"), from = cli_int(ans, "offset");
    if (from + (int64_t)json_array_size(users) < total)
        fprintf(stderr, "(%zu of %lld shown: add --offset %lld for more)\n", json_array_size(users),
                (long long)total, (long long)(from + (int64_t)json_array_size(users)));
    json_decref(ans);
    return EXIT_OK;
}

static void print_user(json_t *u)
{
    char when[32], pockets[32];
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(u, "id"));
    cli_kv(t, "email", cli_str(u, "email"));
    cli_kv(t, "name", cli_str(u, "name"));
    cli_kv(t, "role", cli_str(u, "role"));
    cli_kv(t, "status", cli_str(u, "status"));
    cli_kv(t, "email verified", json_is_true(json_object_get(u, "email_verified")) ? "yes" : "no");
    cli_kv(t, "pockets", cli_text(u, "pockets_count", pockets, sizeof(pockets)));
    cli_kv(t, "created", format_time(cli_int(u, "created_at"), when, sizeof(when)));
    table_flush(t, stdout);
    table_free(t);
}

static int show(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/users/", id, NULL);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    print_user(json_object_get(ans, "user"));
    json_t *pockets = json_object_get(ans, "pockets");
    if (json_array_size(pockets)) {
        static const char *const head[] = {"POCKET", "NAME", "TIER", "STATUS", "USED", "OBJECTS"};
        struct table *t = cli_table(6, head);
        size_t i;
        json_t *p;
        json_array_foreach(pockets, i, p)
        {
            char used[32], objects[32];
            const char *cells[] = {
                    cli_str(p, "id"),
                    cli_str(p, "name"),
                    cli_str(p, "tier"),
                    cli_str(p, "status"),
                    format_size(cli_int(p, "used_bytes"), used, sizeof(used)),
                    format_count(cli_int(p, "used_objects"), objects, sizeof(objects)),
            };
            cli_row(t, cells);
        }
        putchar('\n');
        table_flush(t, stdout);
        table_free(t);
    }
    json_decref(ans);
    return EXIT_OK;
}

/* suspend or unsuspend: POST /v1/admin/users/{id}/<verb> [{reason}]. */
static int set_status(struct cli *cli, int argc, char **argv, const char *verb, const char *done)
{
    const char *id, *reason = NULL;
    struct opt opts[] = {{"reason", OPT_STRING, &reason, false}, {NULL, 0, NULL, false}};
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/users/", id, verb);
    json_t *body = reason ? json_pack("{s:s}", "reason", reason) : json_object();
    if (!body)
        cli_usage_error(cli, "the reason is not valid UTF-8");
    json_t *ans = cli_call(cli, "POST", path->data, body);
    if (cli->json)
        cli_print_raw(cli);
    else
        printf("%s user %s (%s)\n", done, cli_str(ans, "user.email") ?: "-",
               cli_str(ans, "user.id") ?: id);
    json_decref(ans);
    return EXIT_OK;
}

static int suspend(struct cli *cli, int argc, char **argv)
{
    return set_status(cli, argc, argv, "/suspend", "suspended");
}

static int unsuspend(struct cli *cli, int argc, char **argv)
{
    return set_status(cli, argc, argv, "/unsuspend", "unsuspended");
}

const struct cmd cmd_users[] = {
        {"list", list, "[--query TEXT] [--limit N] [--offset N]", "list users, oldest first",
         "  --query TEXT     only addresses containing TEXT (case ignored)\n"
         "  --limit N        at most N (1 to 1000; the server's default is 50)\n"
         "  --offset N       skip the first N\n"},
        {"show", show, "ID", "show a user and their pockets", NULL},
        {"suspend", suspend, "ID [--reason TEXT]",
         "suspend a user: their sessions end and their API keys are refused",
         "  --reason TEXT    kept in the audit log\n"},
        {"unsuspend", unsuspend, "ID [--reason TEXT]", "make a suspended user active again",
         "  --reason TEXT    kept in the audit log\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
