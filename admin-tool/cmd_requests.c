/* cmd_requests: tier requests waiting for an administrator: list, show,
 * approve, reject. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "format.h"

#define PAGE_MAX 1000 /* the server's largest page */

static const char *const statuses[] = {"pending", "approved", "rejected", "canceled", NULL};

static int list(struct cli *cli, int argc, char **argv)
{
    const char *status = NULL;
    int64_t limit = 0, offset = 0;
    struct opt opts[] = {
            {"status", OPT_STRING, &status, false},
            {"limit", OPT_COUNT, &limit, false},
            {"offset", OPT_COUNT, &offset, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    cli_check_choice(cli, "status", status, statuses);

    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/tier-requests", NULL, NULL);
    cli_query(path, "status", status);
    cli_query_int(path, "limit", limit, opts[1].seen);
    cli_query_int(path, "offset", offset, opts[2].seen);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    static const char *const head[] = {"ID",   "STATUS", "POCKET",  "USER",
                                       "FROM", "TO",     "CREATED", "REASON"};
    struct table *t = cli_table(8, head);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(ans, "tier_requests"), i, r)
    {
        char created[32];
        const char *from = cli_str(r, "from_tier");
        const char *cells[] = {cli_str(r, "id"),
                               cli_str(r, "status"),
                               cli_str(r, "pocket_name"),
                               cli_str(r, "user_email"),
                               from ? from : "(new)",
                               cli_str(r, "to_tier"),
                               format_time(cli_int(r, "created_at"), created, sizeof(created)),
                               cli_str(r, "reason")};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    cli_more(ans);
    json_decref(ans);
    return EXIT_OK;
}

/* The request id among every page of the list, or NULL. The result is owned
 * by *page, which the caller frees. */
static json_t *find_request(struct cli *cli, const char *id, json_t **page)
{
    int64_t offset = 0;
    *page = NULL;
    for (;;) {
        struct buf *path = cli_path_buf(cli);
        cli_path(path, "/v1/admin/tier-requests", NULL, NULL);
        cli_query_int(path, "limit", PAGE_MAX, true);
        cli_query_int(path, "offset", offset, true);
        json_decref(*page);
        *page = cli_call(cli, "GET", path->data, NULL);
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(*page, "tier_requests"), i, r)
        {
            const char *rid = cli_str(r, "id");
            if (rid && strcmp(rid, id) == 0)
                return r;
        }
        json_t *next = json_object_get(*page, "next_offset");
        if (!json_is_integer(next) || json_integer_value(next) <= offset)
            return NULL;
        offset = json_integer_value(next);
    }
}

static void show_request(json_t *r)
{
    char when[32], decided[32], pocket[256], user[512];
    const char *from = cli_str(r, "from_tier");
    snprintf(pocket, sizeof(pocket), "%s (%s)", cli_str(r, "pocket_name") ?: "-",
             cli_str(r, "pocket_id") ?: "-");
    snprintf(user, sizeof(user), "%s (%s)", cli_str(r, "user_email") ?: "-",
             cli_str(r, "user_id") ?: "-");
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(r, "id"));
    cli_kv(t, "status", cli_str(r, "status"));
    cli_kv(t, "pocket", pocket);
    cli_kv(t, "user", user);
    cli_kv(t, "from tier", from ? from : "(new pocket)");
    cli_kv(t, "to tier", cli_str(r, "to_tier"));
    cli_kv(t, "reason", cli_str(r, "reason"));
    cli_kv(t, "created", format_time(cli_int(r, "created_at"), when, sizeof(when)));
    if (json_is_integer(cli_json(r, "decided_at")))
        cli_kv(t, "decided", format_time(cli_int(r, "decided_at"), decided, sizeof(decided)));
    cli_kv(t, "decided by", cli_str(r, "decided_by"));
    cli_kv(t, "comment", cli_str(r, "comment"));
    table_flush(t, stdout);
    table_free(t);
}

static int show(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    json_t *page;
    json_t *r = find_request(cli, id, &page);
    if (!r) {
        json_decref(page);
        cli_die("no tier request '%s' (not_found)", id);
    }
    if (cli->json) {
        char *text = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!text)
            cli_die("out of memory");
        puts(text);
        free(text);
    } else {
        show_request(r);
    }
    json_decref(page);
    return EXIT_OK;
}

/* approve or reject: POST .../{id}/<verb> {comment}. */
static int decide(struct cli *cli, int argc, char **argv, const char *verb, const char *done)
{
    const char *id, *comment = NULL;
    struct opt opts[] = {{"comment", OPT_STRING, &comment, false}, {NULL, 0, NULL, false}};
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/tier-requests/", id, verb);
    json_t *body = comment ? json_pack("{s:s}", "comment", comment) : json_object();
    if (!body)
        cli_usage_error(cli, "the comment is not valid UTF-8");
    json_t *ans = cli_call(cli, "POST", path->data, body);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        printf("%s tier request %s: pocket %s (%s) is %s on tier %s\n", done,
               cli_str(ans, "id") ?: id, cli_str(ans, "pocket.name") ?: "-",
               cli_str(ans, "pocket.id") ?: cli_str(ans, "pocket_id") ?: "-",
               cli_str(ans, "pocket.status") ?: "-", cli_str(ans, "pocket.tier.id") ?: "-");
    }
    json_decref(ans);
    return EXIT_OK;
}

static int approve(struct cli *cli, int argc, char **argv)
{
    return decide(cli, argc, argv, "/approve", "approved");
}

static int reject(struct cli *cli, int argc, char **argv)
{
    return decide(cli, argc, argv, "/reject", "rejected");
}

const struct cmd cmd_requests[] = {
        {"list", list, "[--status STATUS] [--limit N] [--offset N]",
         "list tier requests, newest first",
         "  --status STATUS  only pending, approved, rejected or canceled ones\n"
         "  --limit N        at most N (1 to 1000; the server's default is 100)\n"
         "  --offset N       skip the first N\n"},
        {"show", show, "ID", "show one tier request", NULL},
        {"approve", approve, "ID [--comment TEXT]",
         "approve a pending request: the pocket moves to the tier it asked for",
         "  --comment TEXT   a note kept with the decision and in the audit log\n"},
        {"reject", reject, "ID [--comment TEXT]",
         "reject a pending request: the pocket keeps its tier (a new one moves to 'free')",
         "  --comment TEXT   a note kept with the decision and in the audit log\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
