/* cmd_usage: one pocket's quota against what it uses and holds reserved. */
#include <stdio.h>

#include "cli.h"
#include "format.h"

static int usage(struct cli *cli, int argc, char **argv)
{
    const char *id;
    cli_parse(cli, argc, argv, NULL, &id, 1, 1);
    struct buf *path = cli_path_buf(cli);
    cli_path(path, "/v1/pockets/", id, NULL);
    json_t *p = cli_call(cli, "GET", path->data, NULL);
    if (cli->json) {
        cli_print_raw(cli);
        json_decref(p);
        return EXIT_OK;
    }
    printf("pocket %s (%s), tier %s, %s\n\n", cli_str(p, "name") ?: "-", cli_str(p, "id") ?: id,
           cli_str(p, "tier.id") ?: "-", cli_str(p, "status") ?: "-");
    static const char *const head[] = {"", "QUOTA", "USED", "RESERVED", "FREE", "USE"};
    struct table *t = cli_table(6, head);
    for (int bytes = 1; bytes >= 0; bytes--) {
        int64_t quota = cli_int(p, bytes ? "quota.max_bytes" : "quota.max_objects");
        int64_t used = cli_int(p, bytes ? "usage.bytes" : "usage.objects");
        int64_t held = cli_int(p, bytes ? "reserved.bytes" : "reserved.objects");
        /* Free is what a reservation could still get: quota - used - reserved. */
        int64_t free_ = quota - used - held;
        if (free_ < 0)
            free_ = 0;
        char q[32], u[32], r[32], f[32], pct[16];
        char *(*fmt)(int64_t, char *, size_t) = bytes ? format_size : format_count;
        const char *cells[] = {
                bytes ? "bytes" : "objects", fmt(quota, q, sizeof(q)),
                fmt(used, u, sizeof(u)),     fmt(held, r, sizeof(r)),
                fmt(free_, f, sizeof(f)),    format_percent(used + held, quota, pct, sizeof(pct))};
        cli_row(t, cells);
    }
    table_flush(t, stdout);
    table_free(t);
    if (cli_int(p, "usage.bytes") > cli_int(p, "quota.max_bytes") ||
        cli_int(p, "usage.objects") > cli_int(p, "quota.max_objects"))
        printf("\nthe pocket is over its quota\n");
    json_decref(p);
    return EXIT_OK;
}

const struct cmd cmd_usage[] = {
        {"usage", usage, "POCKET",
         "a pocket's quota against what it uses and what uploads hold reserved",
         "  USE is (used + reserved) / quota; FREE is what new uploads may still reserve.\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
