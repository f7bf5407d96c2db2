/* cmd_usage: one pocket's quota against what it uses and holds reserved, and
 * reconciling the usage ledger with what S3 holds. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "format.h"

static int reconcile(struct cli *cli, int argc, char **argv);

static int usage(struct cli *cli, int argc, char **argv)
{
    /* "usage reconcile" is a command of its own (pocket ids are pkt_...);
     * global options may come between the two words. */
    int at = 1;
    while (at < argc && argv[at][0] == '-' && strcmp(argv[at], "--help") != 0 &&
           strcmp(argv[at], "-h") != 0 && cli_global_option(cli, argc, argv, &at))
        at++;
    if (at < argc && strcmp(argv[at], "reconcile") == 0) {
        cli->cmd = &cmd_usage[1];
        return reconcile(cli, argc - at, argv + at);
    }
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

/* "+1,234 B" / "-3" / "0": a signed change. */
static char *signed_change(int64_t d, bool bytes, char *out, size_t outlen)
{
    char n[40];
    format_count(d < 0 ? -d : d, n, sizeof(n));
    snprintf(out, outlen, "%s%s%s", d > 0 ? "+" : d < 0 ? "-" : "", n, bytes ? " B" : "");
    return out;
}

/* The lines after the table: what else the run did, or could not do. */
static void reconcile_notes(json_t *ans)
{
    int64_t aborted = cli_int(ans, "uploads_aborted"), purged = cli_int(ans, "objects_purged");
    if (aborted)
        printf("aborted %lld abandoned multipart upload%s\n", (long long)aborted,
               aborted == 1 ? "" : "s");
    if (purged)
        printf("removed %lld object%s of pockets being deleted\n", (long long)purged,
               purged == 1 ? "" : "s");
    json_t *skipped = json_object_get(ans, "skipped");
    if (json_array_size(skipped)) {
        struct table *t = cli_table(1, (const char *const[]){"SKIPPED (another run holds them)"});
        size_t i;
        json_t *id;
        json_array_foreach(skipped, i, id)
        {
            const char *cells[] = {json_string_value(id)};
            cli_row(t, cells);
        }
        putchar('\n');
        table_flush(t, stdout);
        table_free(t);
    }
}

static int reconcile(struct cli *cli, int argc, char **argv)
{
    const char *pocket = NULL;
    size_t n = cli_parse(cli, argc, argv, NULL, &pocket, 0, 1);
    json_t *body = n ? json_pack("{s:s}", "pocket_id", pocket) : json_object();
    if (!body)
        cli_usage_error(cli, "the pocket id is not valid UTF-8");
    json_t *ans = cli_call(cli, "POST", "/v1/admin/reconcile", body);
    int64_t failed = cli_int(ans, "failed");
    if (cli->json) {
        cli_print_raw(cli);
    } else {
        json_t *corrections = json_object_get(ans, "corrections");
        size_t nc = json_array_size(corrections);
        int64_t pockets = cli_int(ans, "pockets");
        printf("checked %lld pocket%s against S3: %zu correction%s\n", (long long)pockets,
               pockets == 1 ? "" : "s", nc, nc == 1 ? "" : "s");
        if (nc) {
            static const char *const head[] = {
                    "POCKET",         "BYTES BEFORE",  "BYTES AFTER", "CHANGE",
                    "OBJECTS BEFORE", "OBJECTS AFTER", "CHANGE",      "KEYS"};
            struct table *t = cli_table(8, head);
            size_t i;
            json_t *c;
            json_array_foreach(corrections, i, c)
            {
                int64_t b0 = cli_int(c, "before.bytes"), b1 = cli_int(c, "after.bytes");
                int64_t o0 = cli_int(c, "before.objects"), o1 = cli_int(c, "after.objects");
                char sb0[32], sb1[32], db[48], so0[32], so1[32], dobj[48], keys[32];
                const char *cells[] = {cli_str(c, "pocket_id"),
                                       format_size(b0, sb0, sizeof(sb0)),
                                       format_size(b1, sb1, sizeof(sb1)),
                                       signed_change(b1 - b0, true, db, sizeof(db)),
                                       format_count(o0, so0, sizeof(so0)),
                                       format_count(o1, so1, sizeof(so1)),
                                       signed_change(o1 - o0, false, dobj, sizeof(dobj)),
                                       cli_text(c, "keys", keys, sizeof(keys))};
                cli_row(t, cells);
            }
            putchar('\n');
            table_flush(t, stdout);
            table_free(t);
        }
        reconcile_notes(ans);
    }
    json_decref(ans);
    /* Printed what was done; the run is still a failure when a pocket failed. */
    if (failed)
        cli_die("%lld pocket%s could not be reconciled (S3 or the database failed: see"
                " pockityd's log)",
                (long long)failed, failed == 1 ? "" : "s");
    return EXIT_OK;
}

const struct cmd cmd_usage[] = {
        {"usage", usage, "POCKET",
         "a pocket's quota against what it uses and what uploads hold reserved",
         "  USE is (used + reserved) / quota; FREE is what new uploads may still reserve.\n"},
        /* Reached through "usage" above: its name is what the help prints. */
        {"usage reconcile", reconcile, "[POCKET]",
         "correct the usage ledger of one pocket (or all) from what S3 holds",
         "  POCKET           only this pocket; without it, every pocket\n"
         "  Each correction is in the audit log; the table shows each pocket's usage\n"
         "  before and after; CHANGE is exact, KEYS the ledger rows corrected. It also\n"
         "  aborts abandoned multipart uploads. Exit status 1 when a pocket failed.\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
