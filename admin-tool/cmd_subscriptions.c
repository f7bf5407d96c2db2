/* cmd_subscriptions: the pockets' paid subscriptions: list, cancel. */
#include <stdio.h>

#include "cli.h"
#include "format.h"

static const char *const statuses[] = {"active", "past_due", "canceled", NULL};

static int list(struct cli *cli, int argc, char **argv)
{
    const char *status = NULL, *user = NULL, *cursor = NULL;
    int64_t limit = 0;
    struct opt opts[] = {
            {"status", OPT_STRING, &status, false},
            {"user", OPT_STRING, &user, false},
            {"limit", OPT_COUNT, &limit, false},
            {"cursor", OPT_STRING, &cursor, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    cli_check_choice(cli, "status", status, statuses);
    if (opts[2].seen && (limit < 1 || limit > 200))
        cli_usage_error(cli, "'--limit' must be from 1 to 200");
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/subscriptions", NULL, NULL);
    cli_query(path, "status", status);
    cli_query(path, "user_id", user);
    cli_query_int(path, "limit", limit, opts[2].seen);
    cli_query(path, "cursor", cursor);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    static const char *const head[] = {"ID",      "POCKET",      "USER",         "TIER",   "STATUS",
                                       "RENEWAL", "PERIOD ENDS", "PENDING TIER", "CREATED"};
    struct table *t = cli_table(9, head);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(ans, "subscriptions"), i, s)
    {
        char end[32], created[32];
        const char *cells[] = {cli_str(s, "id"),
                               cli_str(s, "pocket_id"),
                               cli_str(s, "user_id"),
                               cli_str(s, "tier_id"),
                               cli_str(s, "status"),
                               cli_str(s, "renewal"),
                               cli_time(s, "current_period_end", end, sizeof(end)),
                               cli_str(s, "pending_tier_id"),
                               cli_time(s, "created_at", created, sizeof(created))};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    cli_more(ans);
    json_decref(ans);
    return EXIT_OK;
}

static void print_subscription(json_t *s)
{
    char start[32], end[32], created[32], canceled[32];
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(s, "id"));
    cli_kv(t, "pocket", cli_str(s, "pocket_id"));
    cli_kv(t, "user", cli_str(s, "user_id"));
    cli_kv(t, "tier", cli_str(s, "tier_id"));
    cli_kv(t, "status", cli_str(s, "status"));
    cli_kv(t, "renewal", cli_str(s, "renewal"));
    cli_kv(t, "period start", cli_time(s, "current_period_start", start, sizeof(start)));
    cli_kv(t, "period end", cli_time(s, "current_period_end", end, sizeof(end)));
    cli_kv(t, "pending tier", cli_str(s, "pending_tier_id"));
    cli_kv(t, "created", cli_time(s, "created_at", created, sizeof(created)));
    cli_kv(t, "canceled", cli_time(s, "canceled_at", canceled, sizeof(canceled)));
    table_flush(t, stdout);
    table_free(t);
}

static int cancel(struct cli *cli, int argc, char **argv)
{
    const char *id, *reason = NULL;
    struct opt opts[] = {{"reason", OPT_STRING, &reason, false}, {NULL, 0, NULL, false}};
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    json_t *body = reason ? json_pack("{s:s}", "reason", reason) : json_object();
    if (!body)
        cli_usage_error(cli, "the reason is not valid UTF-8");
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/subscriptions/", id, "/cancel");
    json_t *ans = cli_call(cli, "POST", path->data, body);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        json_t *s = cli_unwrap(ans, "subscription");
        printf("canceled subscription %s\n", cli_str(s, "id") ?: id);
        if (cli_str(s, "id"))
            print_subscription(s);
    }
    json_decref(ans);
    return EXIT_OK;
}

const struct cmd cmd_subscriptions[] = {
        {"list", list, "[--status STATUS] [--user ID] [--limit N] [--cursor C]",
         "list subscriptions, one per paid pocket",
         "  --status STATUS  only active, past_due or canceled ones\n"
         "  --user ID        only this user's\n"
         "  --limit N        at most N (1 to 200; the server's default is 50)\n"
         "  --cursor C       the next page, as the previous one said\n"},
        {"cancel", cancel, "ID [--reason TEXT]",
         "cancel a subscription at once: its pocket moves to the free tier",
         "  --reason TEXT    kept in the audit log\n"
         "  Unpaid invoices stay as they are: void them to forgive them.\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
