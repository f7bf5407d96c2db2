/* cmd_invoices: invoices of every user: list, show, create (manual ones),
 * and the status changes an administrator makes (finalize, mark-paid, void,
 * uncollectible). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "format.h"

static const char *const statuses[] = {"draft", "open", "paid", "void", "uncollectible", NULL};
static const char *const networks[] = {"btc", "eth", "usdc", "other", NULL};

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
    cli_path(path, "/v1/admin/invoices", NULL, NULL);
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
    static const char *const head[] = {"ID",     "USER",  "POCKET", "KIND",
                                       "STATUS", "TOTAL", "DUE",    "CREATED"};
    struct table *t = cli_table(8, head);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(ans, "invoices"), i, v)
    {
        char total[64], due[32], created[32];
        const char *cells[] = {cli_str(v, "id"),
                               cli_str(v, "user_id"),
                               cli_str(v, "pocket_id"),
                               cli_str(v, "kind"),
                               cli_str(v, "status"),
                               cli_money(v, "total_minor", "currency", total, sizeof(total)),
                               cli_time(v, "due_at", due, sizeof(due)),
                               cli_time(v, "created_at", created, sizeof(created))};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    cli_more(ans);
    json_decref(ans);
    return EXIT_OK;
}

/* Add "key  time" to t when the invoice has that time. */
static void kv_time(struct table *t, json_t *v, const char *key, const char *member)
{
    char when[32];
    const char *text = cli_time(v, member, when, sizeof(when));
    if (text)
        cli_kv(t, key, text);
}

static void print_invoice(json_t *v)
{
    char total[64], period[80], a[32], b[32];
    struct table *t = cli_kv_table();
    cli_kv(t, "id", cli_str(v, "id"));
    cli_kv(t, "user", cli_str(v, "user_id"));
    cli_kv(t, "pocket", cli_str(v, "pocket_id"));
    if (cli_str(v, "subscription_id"))
        cli_kv(t, "subscription", cli_str(v, "subscription_id"));
    cli_kv(t, "kind", cli_str(v, "kind"));
    cli_kv(t, "status", cli_str(v, "status"));
    cli_kv(t, "total", cli_money(v, "total_minor", "currency", total, sizeof(total)));
    if (cli_time(v, "period_start", a, sizeof(a)) && cli_time(v, "period_end", b, sizeof(b))) {
        snprintf(period, sizeof(period), "%s to %s", cli_time(v, "period_start", a, sizeof(a)),
                 cli_time(v, "period_end", b, sizeof(b)));
        cli_kv(t, "period", period);
    }
    kv_time(t, v, "due", "due_at");
    kv_time(t, v, "created", "created_at");
    kv_time(t, v, "finalized", "finalized_at");
    kv_time(t, v, "paid", "paid_at");
    kv_time(t, v, "voided", "voided_at");
    kv_time(t, v, "uncollectible", "uncollectible_at");
    if (cli_str(v, "provider"))
        cli_kv(t, "paid with", cli_str(v, "provider"));
    if (cli_str(v, "provider_ref"))
        cli_kv(t, "payment ref", cli_str(v, "provider_ref"));
    table_flush(t, stdout);
    table_free(t);

    json_t *lines = json_object_get(v, "lines");
    if (!json_array_size(lines))
        return;
    static const char *const head[] = {"LINE", "DESCRIPTION", "AMOUNT"};
    struct table *l = cli_table(3, head);
    table_set_cell_max(l, 0);
    size_t i;
    json_t *line;
    const char *currency = cli_str(v, "currency");
    json_array_foreach(lines, i, line)
    {
        char n[24], amount[64];
        snprintf(n, sizeof(n), "%zu", i + 1);
        const char *cells[] = {n, cli_str(line, "description"),
                               json_is_integer(json_object_get(line, "amount_minor"))
                                       ? format_money(cli_int(line, "amount_minor"), currency,
                                                      amount, sizeof(amount))
                                       : NULL};
        cli_row(l, cells);
    }
    putchar('\n');
    table_flush(l, stdout);
    table_free(l);
}

static int show(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/invoices/", id, NULL);
    json_t *ans = cli_call(cli, "GET", path->data, NULL);
    if (cli->json)
        cli_print_raw(cli);
    else
        print_invoice(cli_unwrap(ans, "invoice"));
    json_decref(ans);
    return EXIT_OK;
}

/* A JSON string of text, or a usage error naming what it is. */
static json_t *utf8(const struct cli *cli, const char *text, const char *what)
{
    json_t *s = json_string(text);
    if (!s)
        cli_usage_error(cli, "%s is not valid UTF-8", what);
    return s;
}

/* One --line "DESCRIPTION=AMOUNT" as {"description", "amount_minor"}. The
 * amount follows the last '=', so a description may hold '=' itself. */
static json_t *parse_line(const struct cli *cli, const char *arg, const char *currency)
{
    const char *eq = strrchr(arg, '=');
    int64_t minor;
    if (!eq)
        cli_usage_error(cli, "invalid line '%s': write it as DESCRIPTION=AMOUNT", arg);
    size_t n = (size_t)(eq - arg);
    while (n && arg[n - 1] == ' ')
        n--;
    const char *desc = arg;
    while (n && *desc == ' ')
        desc++, n--;
    if (n == 0)
        cli_usage_error(cli, "invalid line '%s': the description is empty", arg);
    const char *amount = eq + 1;
    while (*amount == ' ')
        amount++;
    if (format_parse_money(amount, currency, &minor) != 0) {
        int dec = format_currency_decimals(currency);
        if (dec)
            cli_usage_error(cli,
                            "invalid amount '%s' in line '%s': write it in %s with at most %d"
                            " decimals, e.g. 12.50",
                            amount, arg, currency, dec);
        cli_usage_error(cli,
                        "invalid amount '%s' in line '%s': %s has no decimals: write a whole"
                        " number, e.g. 500",
                        amount, arg, currency);
    }
    if (minor < 0)
        cli_usage_error(cli, "invalid amount '%s' in line '%s': amounts cannot be negative", amount,
                        arg);
    char *text = strndup(desc, n);
    if (!text)
        cli_die("out of memory");
    json_t *d = json_string(text);
    free(text);
    if (!d)
        cli_usage_error(cli, "the description in line '%s' is not valid UTF-8", arg);
    json_t *line = json_object();
    if (!line || json_object_set_new(line, "description", d) ||
        json_object_set_new(line, "amount_minor", json_integer(minor)))
        cli_die("out of memory");
    return line;
}

static int create(struct cli *cli, int argc, char **argv)
{
    const char *user = NULL, *pocket = NULL, *currency_arg = NULL;
    struct opt_list lines = {0};
    int64_t due_days = 0;
    struct opt opts[] = {
            {"user", OPT_STRING, &user, false},
            {"pocket", OPT_STRING, &pocket, false},
            {"currency", OPT_STRING, &currency_arg, false},
            {"line", OPT_LIST, &lines, false},
            {"due-days", OPT_COUNT, &due_days, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    for (size_t i = 0; i < 4; i++)
        if (i != 1 && !opts[i].seen)
            cli_usage_error(cli, "'--%s' is required", opts[i].name);
    char currency[4];
    cli_currency(cli, "currency", currency_arg, currency);

    json_t *body = json_object(), *arr = json_array();
    if (!body || !arr)
        cli_die("out of memory");
    json_object_set_new(body, "user_id", utf8(cli, user, "the user id"));
    if (pocket)
        json_object_set_new(body, "pocket_id", utf8(cli, pocket, "the pocket id"));
    json_object_set_new(body, "currency", json_string(currency));
    for (size_t i = 0; i < lines.n; i++)
        json_array_append_new(arr, parse_line(cli, lines.items[i], currency));
    json_object_set_new(body, "lines", arr);
    if (opts[4].seen)
        json_object_set_new(body, "due_days", json_integer(due_days));

    json_t *ans = cli_call(cli, "POST", "/v1/admin/invoices", body);
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        json_t *v = cli_unwrap(ans, "invoice");
        printf("created draft invoice %s: 'pockity-admin invoices finalize %s' opens it\n",
               cli_str(v, "id") ?: "-", cli_str(v, "id") ?: "ID");
        print_invoice(v);
    }
    json_decref(ans);
    return EXIT_OK;
}

/* POST /v1/admin/invoices/{id}/<verb> with body (stolen; NULL sends {});
 * prints "invoice ID <done>" and the invoice. */
static int act(struct cli *cli, const char *id, const char *verb, json_t *body, const char *done)
{
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/admin/invoices/", id, verb);
    json_t *ans = cli_call(cli, "POST", path->data, body ? body : json_object());
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        json_t *v = cli_unwrap(ans, "invoice");
        printf("invoice %s %s\n", cli_str(v, "id") ?: id, done);
        if (cli_str(v, "id"))
            print_invoice(v);
    }
    json_decref(ans);
    return EXIT_OK;
}

static int finalize(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    return act(cli, id, "/finalize", NULL, "finalized");
}

static int void_(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    return act(cli, id, "/void", NULL, "voided");
}

static int uncollectible(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    return act(cli, id, "/uncollectible", NULL, "marked uncollectible");
}

static int mark_paid(struct cli *cli, int argc, char **argv)
{
    const char *id, *network = NULL, *tx_hash = NULL, *note = NULL;
    struct opt opts[] = {
            {"network", OPT_STRING, &network, false},
            {"tx-hash", OPT_STRING, &tx_hash, false},
            {"note", OPT_STRING, &note, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, &id, 1, 1);
    for (size_t i = 0; i < 2; i++)
        if (!opts[i].seen)
            cli_usage_error(cli, "'--%s' is required", opts[i].name);
    cli_check_choice(cli, "network", network, networks);
    if (!*tx_hash || strpbrk(tx_hash, " \t\r\n"))
        cli_usage_error(cli, "invalid transaction hash '%s'", tx_hash);
    json_t *body = json_object();
    if (!body)
        cli_die("out of memory");
    json_object_set_new(body, "network", json_string(network));
    json_object_set_new(body, "tx_hash", utf8(cli, tx_hash, "the transaction hash"));
    if (note)
        json_object_set_new(body, "note", utf8(cli, note, "the note"));
    return act(cli, id, "/mark-paid", body, "marked paid");
}

const struct cmd cmd_invoices[] = {
        {"list", list, "[--status STATUS] [--user ID] [--limit N] [--cursor C]",
         "list invoices, newest first",
         "  --status STATUS  only draft, open, paid, void or uncollectible ones\n"
         "  --user ID        only this user's\n"
         "  --limit N        at most N (1 to 200; the server's default is 50)\n"
         "  --cursor C       the next page, as the previous one said\n"},
        {"show", show, "ID", "show an invoice and its lines", NULL},
        {"create", create,
         "--user ID [--pocket ID] --currency CUR --line DESCRIPTION=AMOUNT... [--due-days N]",
         "create a draft manual invoice (finalize it to send it)",
         "  --user ID        the user who owes it\n"
         "  --pocket ID      the pocket it is for, if any\n"
         "  --currency CUR   ISO 4217 code: USD, EUR, JPY, ...\n"
         "  --line DESCRIPTION=AMOUNT\n"
         "                   one line of the invoice; repeat for more (up to 100). AMOUNT\n"
         "                   is in the currency's units with its decimals: 'Setup=12.50'\n"
         "                   is 12.50 USD (1250 minor units), 'Setup=500' is 500 JPY. The\n"
         "                   amount follows the last '='. The total must be more than 0\n"
         "  --due-days N     due N days after it is finalized (0 to 365; default: the\n"
         "                   server's [billing] due_days)\n"},
        {"finalize", finalize, "ID", "open a draft invoice: it can now be paid", NULL},
        {"mark-paid", mark_paid, "ID --network NETWORK --tx-hash HASH [--note TEXT]",
         "record a crypto payment made outside the payment providers (an open or"
         " uncollectible invoice)",
         "  --network NETWORK  btc, eth, usdc or other\n"
         "  --tx-hash HASH   the transaction's hash, kept as the payment reference: 0x and\n"
         "                   64 hex digits for eth and usdc, 64 hex digits for btc\n"
         "  --note TEXT      kept in the audit log\n"},
        {"void", void_, "ID",
         "void an open or uncollectible invoice: nothing is owed on it any more", NULL},
        {"uncollectible", uncollectible, "ID",
         "mark an open invoice uncollectible (it can still be marked paid)", NULL},
        {NULL, NULL, NULL, NULL, NULL},
};
