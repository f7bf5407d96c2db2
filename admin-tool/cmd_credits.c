/* cmd_credits: a user's prepaid credit: show the balances and entries, grant
 * credit. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "format.h"

static void print_credits(json_t *ans)
{
    static const char *const bhead[] = {"CURRENCY", "BALANCE"};
    struct table *b = cli_table(2, bhead);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ans, "balances"), i, e)
    {
        char balance[64];
        const char *cells[] = {cli_str(e, "currency"),
                               cli_money(e, "balance_minor", "currency", balance, sizeof(balance))};
        cli_row(b, cells);
    }
    if (table_pending(b))
        table_flush(b, stdout);
    else
        printf("no credit\n");
    table_free(b);

    json_t *entries = json_object_get(ans, "entries");
    if (!json_array_size(entries))
        return;
    static const char *const ehead[] = {"ID", "TIME", "KIND", "AMOUNT", "INVOICE", "REASON"};
    struct table *t = cli_table(6, ehead);
    json_array_foreach(entries, i, e)
    {
        char when[32], amount[64];
        const char *cells[] = {cli_str(e, "id"),
                               cli_time(e, "created_at", when, sizeof(when)),
                               cli_str(e, "kind"),
                               cli_money(e, "amount_minor", "currency", amount, sizeof(amount)),
                               cli_str(e, "invoice_id"),
                               cli_str(e, "reason")};
        cli_row(t, cells);
    }
    putchar('\n');
    table_flush(t, stdout);
    table_free(t);
}

static int show(struct cli *cli, int argc, char **argv)
{
    const char *user, *cursor = NULL;
    int64_t limit = 0;
    struct opt opts[] = {
            {"limit", OPT_COUNT, &limit, false},
            {"cursor", OPT_STRING, &cursor, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, &user, 1, 1);
    if (opts[0].seen && (limit < 1 || limit > 200))
        cli_usage_error(cli, "'--limit' must be from 1 to 200");
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/users/", user, "/credits");
    cli_query_int(path, "limit", limit, opts[0].seen);
    cli_query(path, "cursor", cursor);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        print_credits(ans);
        cli_more(ans);
    }
    json_decref(ans);
    return EXIT_OK;
}

static int grant(struct cli *cli, int argc, char **argv)
{
    const char *user, *amount = NULL, *currency_arg = NULL, *reason = NULL;
    struct opt opts[] = {
            {"amount", OPT_STRING, &amount, false},
            {"currency", OPT_STRING, &currency_arg, false},
            {"reason", OPT_STRING, &reason, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, &user, 1, 1);
    for (size_t i = 0; i < 3; i++)
        if (!opts[i].seen)
            cli_usage_error(cli, "'--%s' is required", opts[i].name);
    char currency[4];
    cli_currency(cli, "currency", currency_arg, currency);
    int64_t minor;
    if (format_parse_money(amount, currency, &minor) != 0)
        cli_usage_error(cli, "invalid amount '%s' for %s (examples: %s)", amount, currency,
                        format_currency_decimals(currency) ? "10, 12.50" : "500");
    if (minor <= 0)
        cli_usage_error(cli, "'--amount' must be more than 0");
    if (!*reason)
        cli_usage_error(cli, "'--reason' must not be empty");
    json_t *r = json_string(reason);
    if (!r)
        cli_usage_error(cli, "the reason is not valid UTF-8");
    json_t *body = json_pack("{s:I, s:s, s:o}", "amount_minor", (json_int_t)minor, "currency",
                             currency, "reason", r);
    if (!body)
        cli_die("out of memory");
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/users/", user, "/credits");
    json_t *ans = cli_call(cli, "POST", path->data, body);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        json_t *e = cli_unwrap(ans, "entry");
        char money[64];
        printf("granted %s to %s (entry %s)\n", format_money(minor, currency, money, sizeof(money)),
               user, cli_str(e, "id") ?: "-");
    }
    json_decref(ans);
    return EXIT_OK;
}

const struct cmd cmd_credits[] = {
        {"show", show, "USER", "a user's credit balance in each currency and its entries", NULL},
        {"grant", grant, "USER --amount AMOUNT --currency CUR --reason TEXT",
         "give a user credit (a 'grant' entry in their credit)",
         "  --amount AMOUNT  more than 0, in the currency's units with its decimals:\n"
         "                   12.50 is 12.50 USD (1250 minor units); 500 is 500 JPY\n"
         "  --currency CUR   ISO 4217 code: USD, EUR, JPY, ...\n"
         "  --reason TEXT    why (kept with the entry and in the audit log)\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
