/* cmd_audit: read the audit log, once or following it as it grows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "format.h"

#define FOLLOW_INTERVAL_MS 2000
#define FOLLOW_PAGE        1000 /* the server's largest page */

struct audit_args {
    int64_t since, limit; /* since: an entry id */
    bool limit_set;
    const char *action, *target_type, *target_id;
};

static void audit_path(struct buf *b, const struct audit_args *a, int64_t since, int64_t limit,
                       bool limit_set)
{
    buf_reset(b);
    cli_path(b, "/v1/admin/audit", NULL, NULL);
    cli_query_int(b, "since", since, true);
    cli_query_int(b, "limit", limit, limit_set);
    cli_query(b, "action", a->action);
    cli_query(b, "target_type", a->target_type);
    cli_query(b, "target_id", a->target_id);
}

/* "type:id", or "type" alone when there is no id. */
static const char *pair(json_t *e, const char *type, const char *id, char *out, size_t outlen)
{
    const char *t = cli_str(e, type), *i = cli_str(e, id);
    if (!t)
        return i;
    snprintf(out, outlen, "%s%s%s", t, i ? ":" : "", i ? i : "");
    return out;
}

/* Add the entries of one page to t, or print them as JSON lines. */
static void add_entries(const struct cli *cli, struct table *t, json_t *entries)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (cli->json) {
            char *line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!line)
                cli_die("out of memory");
            puts(line);
            free(line);
            continue;
        }
        char id[32], when[32], actor[160], target[160];
        json_t *d = json_object_get(e, "detail");
        char *detail =
                json_object_size(d) ? json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        const char *cells[] = {cli_text(e, "id", id, sizeof(id)),
                               format_time(cli_int(e, "at"), when, sizeof(when)),
                               pair(e, "actor_type", "actor_id", actor, sizeof(actor)),
                               cli_str(e, "action"),
                               pair(e, "target_type", "target_id", target, sizeof(target)),
                               cli_str(e, "client_addr"),
                               detail};
        cli_row(t, cells);
        free(detail);
    }
}

/* Sleep ms milliseconds, or less when interrupted. */
static void nap(int ms)
{
    for (int waited = 0; waited < ms && !cli_stop; waited += 100) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int follow(struct cli *cli, const struct audit_args *a, struct table *t)
{
    struct client *c = cli_connect(cli, true);
    int64_t last = a->since;
    bool warned = false;
    struct buf *path = cli_path_buf(cli);
    while (!cli_stop) {
        json_t *page = NULL;
        audit_path(path, a, last, FOLLOW_PAGE, true);
        int rc = client_call(c, "GET", path->data, NULL, &page);
        if (rc == CLIENT_ERR_CANCELED)
            break;
        if (rc == CLIENT_ERR_API) {
            cli_die("%s", client_errmsg(c));
        }
        if (rc != CLIENT_OK) {
            /* The server may be restarting: say so once and keep polling. */
            if (!warned)
                cli_warn("%s; retrying every %d s", client_errmsg(c), FOLLOW_INTERVAL_MS / 1000);
            warned = true;
            nap(FOLLOW_INTERVAL_MS);
            continue;
        }
        warned = false;
        json_t *entries = json_object_get(page, "entries");
        add_entries(cli, t, entries);
        if (!cli->json)
            table_flush(t, stdout);
        fflush(stdout);
        json_t *next = json_object_get(page, "last_id");
        if (json_is_integer(next) && json_integer_value(next) > last)
            last = json_integer_value(next);
        size_t n = json_array_size(entries);
        json_decref(page);
        if (n < FOLLOW_PAGE) /* caught up: wait for more */
            nap(FOLLOW_INTERVAL_MS);
    }
    return EXIT_OK;
}

/* Whether the first entry after the id since (the log unfiltered) was
 * written at or after t, or there is none; when it is before t, *id is its
 * id. One request for one entry. */
static bool reached(struct cli *cli, int64_t since, int64_t t, int64_t *id)
{
    static const struct audit_args none;
    struct buf *path = cli_path_buf(cli);
    audit_path(path, &none, since, 1, true);
    json_t *page = cli_call(cli, "GET", path->data, NULL);
    json_t *e = json_array_get(json_object_get(page, "entries"), 0);
    bool done = !e || cli_int(e, "at") >= t;
    if (!done)
        *id = cli_int(e, "id");
    json_decref(page);
    return done;
}

/* The id to read after so that the log starts at the first entry written at
 * or after t. Ids grow with time, so this is a binary search over ids with
 * one-entry pages: about 2 log2(entries) small requests. */
static int64_t since_time(struct cli *cli, int64_t t)
{
    int64_t id = 0;
    if (reached(cli, 0, t, &id))
        return 0;
    /* Invariant: reached(lo) is false; first find an hi where it is true. */
    int64_t lo = 0, hi = 1;
    while (!reached(cli, hi, t, &id)) {
        lo = id - 1; /* entry id (> hi) is before t, so reached(id - 1) is false */
        hi = id > INT64_MAX / 2 ? INT64_MAX : id * 2;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (reached(cli, mid, t, &id))
            hi = mid;
        else
            lo = mid;
    }
    /* reached(hi - 1) is false: entry hi exists and is the last before t. */
    return hi;
}

/* --since: an entry id (digits alone) or a time (format_parse_time). */
static int64_t parse_since(struct cli *cli, const char *s)
{
    int64_t v;
    if (format_parse_int(s, 0, INT64_MAX, &v) == 0)
        return v;
    if (format_parse_time(s, (int64_t)time(NULL), &v) != 0)
        cli_usage_error(cli,
                        "invalid value '%s' for '--since': an entry id, a time (2026-01-02,"
                        " '2026-01-02 15:04:05') or a duration ago (30m, 2h, 7d)",
                        s);
    return since_time(cli, v);
}

static int audit(struct cli *cli, int argc, char **argv)
{
    struct audit_args a = {0};
    bool follow_flag = false;
    const char *since = NULL;
    struct opt opts[] = {
            {"since", OPT_STRING, &since, false},
            {"limit", OPT_COUNT, &a.limit, false},
            {"follow", OPT_FLAG, &follow_flag, false},
            {"action", OPT_STRING, &a.action, false},
            {"target-type", OPT_STRING, &a.target_type, false},
            {"target-id", OPT_STRING, &a.target_id, false},
            {NULL, 0, NULL, false},
    };
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);
    a.limit_set = opts[1].seen;
    if (a.limit_set && (a.limit < 1 || a.limit > 1000))
        cli_usage_error(cli, "'--limit' must be from 1 to 1000");
    if (follow_flag && a.limit_set)
        cli_usage_error(cli, "'--limit' and '--follow' do not go together");
    if (since)
        a.since = parse_since(cli, since);

    static const char *const head[] = {"ID", "TIME", "ACTOR", "ACTION", "TARGET", "FROM", "DETAIL"};
    struct table *t = cli_table(7, head);
    int rc = EXIT_OK;
    if (follow_flag) {
        rc = follow(cli, &a, t);
    } else {
        struct buf *path = cli_path_buf(cli);
        audit_path(path, &a, a.since, a.limit, a.limit_set);
        json_t *page = cli_call(cli, "GET", path->data, NULL);
        json_t *entries = json_object_get(page, "entries");
        if (cli->json) {
            cli_print_raw(cli);
        } else {
            add_entries(cli, t, entries);
            table_flush(t, stdout);
        }
        /* A full page suggests more: say how to read on. */
        size_t n = json_array_size(entries);
        if (n && (int64_t)n == (a.limit_set ? a.limit : 100))
            fprintf(stderr, "(more may follow: add --since %lld)\n",
                    (long long)cli_int(page, "last_id"));
        json_decref(page);
    }
    table_free(t);
    return rc;
}

const struct cmd cmd_audit[] = {
        {"audit", audit,
         "[--since ID|TIME] [--limit N] [--follow] [--action A] [--target-type T]"
         " [--target-id ID]",
         "print the audit log, oldest first; --follow keeps printing new entries",
         "  --since ID       only entries after the id ID (default: from the start)\n"
         "  --since TIME     only entries written at or after TIME, UTC: 2026-01-02,\n"
         "                   '2026-01-02 15:04', 2026-01-02T15:04:05Z; or a duration\n"
         "                   ago: 45s, 30m, 2h, 7d, 2w\n"
         "  --limit N        at most N entries (1 to 1000; the server's default is 100)\n"
         "  --follow         then poll every 2 s for new entries until interrupted;\n"
         "                   with --json, one JSON object per line\n"
         "  --action A       only this action (tier.create, user.suspend, ...)\n"
         "  --target-type T  only entries about this kind of object (user, tier, ...)\n"
         "  --target-id ID   only entries about this object\n"},
        {NULL, NULL, NULL, NULL, NULL},
};
