/* cmd_pockets: everyone's pockets: list, show. */
#include <stdio.h>

#include "cli.h"
#include "format.h"

static const char *const statuses[] = {"pending", "active", "suspended", "deleting", NULL};

static int list(struct cli *cli, int argc, char **argv)
{
    const char *user = NULL, *status = NULL;
    int64_t limit = 0, offset = 0;
    struct opt opts[] = {
            {"user", OPT_STRING, &user, false},
            {"status", OPT_STRING, &status, false},
            {"limit", OPT_COUNT, &limit, false},
            {"offset", OPT_COUNT, &offset, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    cli_check_choice(cli, "status", status, statuses);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/pockets", NULL, NULL);
    cli_query(path, "user", user);
    cli_query(path, "status", status);
    cli_query_int(path, "limit", limit, opts[2].seen);
    cli_query_int(path, "offset", offset, opts[3].seen);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    static const char *const head[] = {"ID",     "NAME", "OWNER",   "TIER",
                                       "STATUS", "USED", "OBJECTS", "CREATED"};
    struct table *t = cli_table(8, head);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ans, "pockets"), i, p)
    {
        char used[80], usize[32], qsize[32], objects[32], created[32];
        snprintf(used, sizeof(used), "%s / %s",
                 format_size(cli_int(p, "usage.bytes"), usize, sizeof(usize)),
                 format_size(cli_int(p, "quota.max_bytes"), qsize, sizeof(qsize)));
        const char *cells[] = {cli_str(p, "id"),
                               cli_str(p, "name"),
                               cli_str(p, "owner_email") ?: cli_str(p, "user_id"),
                               cli_str(p, "tier.id"),
                               cli_str(p, "status"),
                               used,
                               format_count(cli_int(p, "usage.objects"), objects, sizeof(objects)),
                               format_time(cli_int(p, "created_at"), created, sizeof(created))};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    cli_more(ans);
    json_decref(ans);
    return EXIT_OK;
}

static void print_pocket(json_t *p)
{
    char owner[512], tier[256], used[128], reserved[128], quota[128], when[32], updated[32];
    char a[32], b[32];
    snprintf(owner, sizeof(owner), "%s (%s)", cli_str(p, "owner_email") ?: "-",
             cli_str(p, "user_id") ?: "-");
    snprintf(tier, sizeof(tier), "%s (%s)", cli_str(p, "tier.id") ?: "-",
             cli_str(p, "tier.name") ?: "-");
    snprintf(used, sizeof(used), "%s in %s objects",
             format_size(cli_int(p, "usage.bytes"), a, sizeof(a)),
             format_count(cli_int(p, "usage.objects"), b, sizeof(b)));
    snprintf(reserved, sizeof(reserved), "%s in %s objects",
             format_size(cli_int(p, "reserved.bytes"), a, sizeof(a)),
             format_count(cli_int(p, "reserved.objects"), b, sizeof(b)));
    snprintf(quota, sizeof(quota), "%s in %s objects",
             format_size(cli_int(p, "quota.max_bytes"), a, sizeof(a)),
             format_count(cli_int(p, "quota.max_objects"), b, sizeof(b)));
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(p, "id"));
    cli_kv(t, "name", cli_str(p, "name"));
    cli_kv(t, "owner", owner);
    cli_kv(t, "status", cli_str(p, "status"));
    cli_kv(t, "tier", tier);
    cli_kv(t, "prefix", cli_str(p, "prefix"));
    cli_kv(t, "used", used);
    cli_kv(t, "reserved", reserved);
    cli_kv(t, "quota", quota);
    json_t *req = json_object_get(p, "pending_request");
    if (json_is_object(req)) {
        char line[256];
        snprintf(line, sizeof(line), "%s: %s -> %s", cli_str(req, "id") ?: "-",
                 cli_str(req, "from_tier") ?: "(new)", cli_str(req, "to_tier") ?: "-");
        cli_kv(t, "pending request", line);
    }
    cli_kv(t, "created", format_time(cli_int(p, "created_at"), when, sizeof(when)));
    cli_kv(t, "updated", format_time(cli_int(p, "updated_at"), updated, sizeof(updated)));
    table_flush(t, stdout);
    table_free(t);
}

static int show(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/pockets/", id, NULL);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json)
        cli_print_raw(cli);
    else
        print_pocket(ans);
    json_decref(ans);
    return EXIT_OK;
}

const struct cmd cmd_pockets[] = {
        {"list", list, "[--user ID] [--status STATUS] [--limit N] [--offset N]",
         "list pockets, newest first",
         "  --user ID        only this user's\n"
         "  --status STATUS  only pending, active, suspended or deleting ones\n"
         "  --limit N        at most N (1 to 1000; the server's default is 100)\n"
         "  --offset N       skip the first N\n"},
        {"show", show, "ID", "show a pocket: owner, tier, usage, pending request", NULL},
        {NULL, NULL, NULL, NULL, NULL},
};
