/* cmd_tiers: the tiers on offer and retired: list, create, update. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "format.h"

static int list(struct cli *cli, int argc, char **argv)
{
    int64_t limit = 0, offset = 0;
    struct opt opts[] = {
            {"limit", OPT_COUNT, &limit, false},
            {"offset", OPT_COUNT, &offset, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/tiers", NULL, NULL);
    cli_query_int(path, "limit", limit, opts[0].seen);
    cli_query_int(path, "offset", offset, opts[1].seen);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(ans);
        return EXIT_OK;
    }
    static const char *const head[] = {"ID",    "NAME",     "MAX SIZE", "MAX OBJECTS",
                                       "PRICE", "APPROVAL", "ACTIVE",   "POCKETS"};
    struct table *t = cli_table(8, head);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(ans, "tiers"), i, r)
    {
        char size[32], objects[32], price[48], pockets[32];
        const char *cells[] = {
                cli_str(r, "id"),
                cli_str(r, "name"),
                format_size(cli_int(r, "max_bytes"), size, sizeof(size)),
                format_count(cli_int(r, "max_objects"), objects, sizeof(objects)),
                format_money(cli_int(r, "price_minor"), cli_str(r, "currency"), price,
                             sizeof(price)),
                json_is_true(json_object_get(r, "needs_approval")) ? "needed" : "-",
                json_is_false(json_object_get(r, "active")) ? "retired" : "yes",
                format_count(cli_int(r, "pockets"), pockets, sizeof(pockets)),
        };
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    cli_more(ans);
    json_decref(ans);
    return EXIT_OK;
}

/* The fields of create and update, as options. */
struct tier_opts {
    const char *name, *currency;
    int64_t max_bytes, max_objects, price;
    bool approval_flag;   /* create: --needs-approval */
    int approval, active; /* update: --needs-approval BOOL, --active BOOL */
};

enum {
    TO_NAME,
    TO_MAX_BYTES,
    TO_MAX_OBJECTS,
    TO_PRICE,
    TO_CURRENCY,
    TO_APPROVAL,
    TO_ACTIVE,
    TO_END
};

static void tier_opts_init(struct tier_opts *v, struct opt *opts, bool update)
{
    struct opt o[] = {
            [TO_NAME] = {"name", OPT_STRING, &v->name, false},
            [TO_MAX_BYTES] = {"max-bytes", OPT_SIZE, &v->max_bytes, false},
            [TO_MAX_OBJECTS] = {"max-objects", OPT_COUNT, &v->max_objects, false},
            [TO_PRICE] = {"price", OPT_COUNT, &v->price, false},
            [TO_CURRENCY] = {"currency", OPT_STRING, &v->currency, false},
            [TO_APPROVAL] =
                    update ? (struct opt){"needs-approval", OPT_BOOL, &v->approval, false}
                           : (struct opt){"needs-approval", OPT_FLAG, &v->approval_flag, false},
            [TO_ACTIVE] = {"active", OPT_BOOL, &v->active, false},
            [TO_END] = {NULL, 0, NULL, false},
    };
    memcpy(opts, o, sizeof(o));
}

/* The JSON body of the options given. */
static json_t *tier_body(const struct cli *cli, const struct tier_opts *v, const struct opt *opts)
{
    json_t *b = json_object();
    if (!b)
        cli_die("out of memory");
    if (opts[TO_NAME].seen) {
        json_t *s = json_string(v->name);
        if (!s)
            cli_usage_error(cli, "the name is not valid UTF-8");
        json_object_set_new(b, "name", s);
    }
    if (opts[TO_MAX_BYTES].seen)
        json_object_set_new(b, "max_bytes", json_integer(v->max_bytes));
    if (opts[TO_MAX_OBJECTS].seen)
        json_object_set_new(b, "max_objects", json_integer(v->max_objects));
    if (opts[TO_PRICE].seen)
        json_object_set_new(b, "price_minor", json_integer(v->price));
    if (opts[TO_CURRENCY].seen) {
        json_t *s = json_string(v->currency);
        if (!s)
            cli_usage_error(cli, "the currency is not valid UTF-8");
        json_object_set_new(b, "currency", s);
    }
    if (opts[TO_APPROVAL].seen)
        json_object_set_new(
                b, "needs_approval",
                json_boolean(opts[TO_APPROVAL].type == OPT_FLAG ? v->approval_flag : v->approval));
    if (opts[TO_ACTIVE].seen)
        json_object_set_new(b, "active", json_boolean(v->active));
    return b;
}

static void print_tier(json_t *r)
{
    char size[32], objects[32], price[48], when[32];
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(r, "id"));
    cli_kv(t, "name", cli_str(r, "name"));
    cli_kv(t, "max size", format_size(cli_int(r, "max_bytes"), size, sizeof(size)));
    cli_kv(t, "max objects", format_count(cli_int(r, "max_objects"), objects, sizeof(objects)));
    cli_kv(t, "price",
           format_money(cli_int(r, "price_minor"), cli_str(r, "currency"), price, sizeof(price)));
    cli_kv(t, "approval", json_is_true(json_object_get(r, "needs_approval")) ? "needed" : "-");
    cli_kv(t, "active", json_is_false(json_object_get(r, "active")) ? "no (retired)" : "yes");
    if (json_is_integer(json_object_get(r, "created_at")))
        cli_kv(t, "created", format_time(cli_int(r, "created_at"), when, sizeof(when)));
    table_flush(t, stdout);
    table_free(t);
}

static int create(struct cli *cli, int argc, char **argv)
{
    struct tier_opts v = {0};
    struct opt opts[TO_END + 1];
    const char *id;
    tier_opts_init(&v, opts, false);
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    static const int required[] = {TO_NAME, TO_MAX_BYTES, TO_MAX_OBJECTS};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!opts[required[i]].seen)
            cli_usage_error(cli, "'--%s' is required", opts[required[i]].name);
    json_t *body = tier_body(cli, &v, opts);
    json_t *s = json_string(id);
    if (!s)
        cli_usage_error(cli, "the tier id is not valid UTF-8");
    json_object_set_new(body, "id", s);
    json_t *ans = cli_call(cli, "POST", "/v1/admin/tiers", body);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        printf("created tier %s\n", cli_str(ans, "id") ?: id);
        print_tier(ans);
    }
    json_decref(ans);
    return EXIT_OK;
}

static int update(struct cli *cli, int argc, char **argv)
{
    struct tier_opts v = {0};
    struct opt opts[TO_END + 1];
    const char *id;
    tier_opts_init(&v, opts, true);
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    bool any = false;
    for (size_t i = 0; i < TO_END; i++)
        any = any || opts[i].seen;
    if (!any)
        cli_usage_error(cli, "nothing to change: give at least one option");
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/tiers/", id, NULL);
    json_t *ans = cli_call(cli, "PATCH", path->data, tier_body(cli, &v, opts));
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        printf("updated tier %s\n", cli_str(ans, "id") ?: id);
        print_tier(ans);
    }
    json_decref(ans);
    return EXIT_OK;
}

#define SIZE_HELP                                                                                  \
    "                   sizes take units: 1048576, 500MB, 10GiB, 1.5TiB (K M G = KiB...)\n"

const struct cmd cmd_tiers[] = {
        {"list", list, "[--limit N] [--offset N]", "list every tier, retired ones too",
         "  --limit N        at most N (1 to 1000; the server's default is 100)\n"
         "  --offset N       skip the first N\n"},
        {"create", create,
         "ID --name NAME --max-bytes SIZE --max-objects N [--price MINOR] [--currency CUR]"
         " [--needs-approval] [--active BOOL]",
         "create a tier",
         "  ID               1 to 32 of a-z 0-9 -\n"
         "  --name NAME      the name shown to users\n"
         "  --max-bytes SIZE the quota in bytes\n" SIZE_HELP
         "  --max-objects N  the quota in objects\n"
         "  --price MINOR    the price in minor units (1999 = 19.99); default 0\n"
         "  --currency CUR   ISO 4217 code (EUR); default USD\n"
         "  --needs-approval pockets and moves to this tier wait for an administrator\n"
         "  --active BOOL    false creates it retired; default true\n"},
        {"update", update,
         "ID [--name NAME] [--max-bytes SIZE] [--max-objects N] [--price MINOR]"
         " [--currency CUR] [--needs-approval BOOL] [--active BOOL]",
         "change a tier (at least one option); --active false retires it",
         "  --name NAME, --max-bytes SIZE, --max-objects N, --price MINOR, --currency CUR\n"
         "                   as for 'tiers create'\n" SIZE_HELP
         "  --needs-approval BOOL  true or false\n"
         "  --active BOOL    false retires the tier: no longer offered, pockets keep it\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
