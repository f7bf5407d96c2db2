/* remotetool: a command line over pockityfs/remote.h (the mount's client of
 * pockityd) for the integration tests.
 *
 *   remotetool [-t TIMEOUT_MS] [-w WRITE_WAIT_MS] [-a] [-p] [-v] SERVER_URL COMMAND [ARGS]
 *
 * The API key comes from the environment (POCKITY_KEY), never the command
 * line. -a: reserve through quota allowances (remote_options.quota_batch).
 * -p: after connecting, print "connected" and wait for a line on stdin
 * before running the command (lets a test stop pockityd in between).
 * Exit status: 0 success, 2 usage, else the positive errno of the failure,
 * with "error: ..." on stderr. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "remote.h"
#include "s3.h"

struct ctx {
    struct remote *r;
    struct remote_session *s;
    int argc;
    char **argv; /* the command's arguments, after its name */
};

static int fail(int rc, const char *what)
{
    fprintf(stderr, "error: %s: %s\n", what, strerror(-rc));
    return -rc;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int print_json(json_t *j)
{
    if (!j || json_dumpf(j, stdout, JSON_COMPACT | JSON_SORT_KEYS) != 0) {
        json_decref(j);
        fprintf(stderr, "error: cannot format the answer\n");
        return ENOMEM;
    }
    json_decref(j);
    putchar('\n');
    return 0;
}

static int cmd_session(struct ctx *c)
{
    const struct remote_session *s = c->s;
    return print_json(json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:{s:I, s:I}, s:{s:I, s:I}, s:b}", "endpoint",
            s->endpoint, "region", s->region, "bucket", s->bucket, "prefix", s->prefix, "access",
            s->access, "expiration", (json_int_t)s->expiration, "pocket_id", s->pocket_id,
            "pocket_name", s->pocket_name, "quota", "max_bytes", (json_int_t)s->max_bytes,
            "max_objects", (json_int_t)s->max_objects, "usage", "bytes", (json_int_t)s->used_bytes,
            "objects", (json_int_t)s->used_objects, "has_session_token",
            *s->session_token != '\0'));
}

static int cmd_access(struct ctx *c)
{
    printf("%s\n", remote_access(c->r));
    return 0;
}

static int cmd_reserve(struct ctx *c)
{
    uint64_t size;
    if (parse_u64(c->argv[1], &size)) {
        fprintf(stderr, "error: invalid size '%s'\n", c->argv[1]);
        return 2;
    }
    char id[64];
    int rc = remote_reserve(c->r, c->argv[0], size, id);
    if (rc)
        return fail(rc, "cannot reserve quota");
    printf("%s\n", id);
    return 0;
}

static int cmd_commit(struct ctx *c)
{
    uint64_t size;
    if (parse_u64(c->argv[1], &size)) {
        fprintf(stderr, "error: invalid size '%s'\n", c->argv[1]);
        return 2;
    }
    int rc = remote_commit(c->r, c->argv[0], size, c->argv[2]);
    return rc ? fail(rc, "cannot commit the reservation") : 0;
}

static int cmd_release(struct ctx *c)
{
    int rc = remote_release(c->r, c->argv[0]);
    return rc ? fail(rc, "cannot release the reservation") : 0;
}

static int cmd_deleted(struct ctx *c)
{
    int rc = remote_deleted(c->r, (const char *const *)c->argv, (size_t)c->argc);
    return rc ? fail(rc, "cannot report deletions") : 0;
}

static int cmd_usage(struct ctx *c)
{
    struct remote_usage u;
    int rc = remote_usage(c->r, &u);
    if (rc)
        return fail(rc, "cannot read the usage");
    return print_json(json_pack(
            "{s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}}", "quota", "max_bytes",
            (json_int_t)u.max_bytes, "max_objects", (json_int_t)u.max_objects, "usage", "bytes",
            (json_int_t)u.used_bytes, "objects", (json_int_t)u.used_objects, "reserved", "bytes",
            (json_int_t)u.reserved_bytes, "objects", (json_int_t)u.reserved_objects));
}

/* An S3 client over the session, refreshed through the remote. */
static int client_new(struct ctx *c, struct s3_client **out)
{
    struct s3_config cfg = {
            .endpoint = c->s->endpoint,
            .region = c->s->region,
            .bucket = c->s->bucket,
            .access_key = c->s->access_key,
            .secret_key = c->s->secret_key,
            .session_token = *c->s->session_token ? c->s->session_token : NULL,
            .max_retries = 1,
            .refresh = remote_s3_refresh,
            .refresh_arg = c->r,
    };
    int rc = s3_client_new(&cfg, out);
    if (rc)
        fprintf(stderr, "error: cannot make an s3 client from the session: %s\n", s3_strerror(rc));
    return rc ? EINVAL : 0;
}

/* renew-check SECONDS: run the renewal thread that long, then stop it. */
static int cmd_renew_check(struct ctx *c)
{
    uint64_t secs;
    if (parse_u64(c->argv[0], &secs) || secs > 3600) {
        fprintf(stderr, "error: invalid duration '%s'\n", c->argv[0]);
        return 2;
    }
    struct s3_client *client;
    int rc = client_new(c, &client);
    if (rc)
        return rc;
    rc = remote_start_renewal(c->r, client);
    if (rc) {
        s3_client_free(client);
        return fail(rc, "cannot start the renewal");
    }
    sleep((unsigned)secs);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    remote_free(c->r); /* must stop the thread promptly */
    c->r = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s3_client_free(client);
    long ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    printf("stopped in %ld ms\n", ms);
    return 0;
}

struct refresher {
    struct remote *r;
    struct s3_client *client;
    pthread_barrier_t *start;
    int rc;
};

static void *refresh_thread(void *arg)
{
    struct refresher *f = arg;
    pthread_barrier_wait(f->start);
    f->rc = remote_refresh(f->r, f->client);
    return NULL;
}

/* refresh THREADS [list]: THREADS threads call remote_refresh at once, then
 * one more call follows; with "list", the refreshed client then lists the
 * pocket's prefix to show the new credentials work. */
static int cmd_refresh(struct ctx *c)
{
    uint64_t n;
    if (parse_u64(c->argv[0], &n) || n < 1 || n > 64) {
        fprintf(stderr, "error: invalid thread count '%s' (1..64)\n", c->argv[0]);
        return 2;
    }
    int list = c->argc > 1 && !strcmp(c->argv[1], "list");
    struct s3_client *client;
    int rc = client_new(c, &client);
    if (rc)
        return rc;
    struct refresher f[64];
    pthread_t th[64];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    size_t started = 0;
    for (size_t i = 0; i < n; i++) {
        f[i] = (struct refresher){.r = c->r, .client = client, .start = &start};
        if (pthread_create(&th[i], NULL, refresh_thread, &f[i]) != 0)
            break;
        started++;
    }
    if (started < n) {
        /* Cannot happen short of resource exhaustion; the barrier would hang. */
        fprintf(stderr, "error: cannot start %zu threads\n", (size_t)n);
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (f[i].rc && !rc)
            rc = f[i].rc;
    }
    pthread_barrier_destroy(&start);
    if (!rc)
        rc = remote_refresh(c->r, client);
    if (!rc && list) {
        struct s3_list_page page;
        int st = s3_list_objects(client, c->s->prefix, "/", NULL, NULL, 1, &page);
        if (st) {
            fprintf(stderr, "error: cannot list '%s' with the refreshed credentials: %s\n",
                    c->s->prefix, s3_strerror(st));
            s3_client_free(client);
            return EACCES;
        }
        s3_list_page_release(&page);
        printf("list ok\n");
    }
    s3_client_free(client);
    if (rc)
        return fail(rc, "cannot refresh the credentials");
    printf("ok\n");
    return 0;
}

/* Reserve key for size and commit it, re-reserving once when the commit
 * finds the reservation gone (as pockityfs's upload does). *local counts
 * local (allowance) ids. */
static int cycle(struct remote *r, const char *key, uint64_t size, int *local)
{
    char id[64], etag[64];
    int rc = remote_reserve(r, key, size, id);
    if (rc)
        return rc;
    if (!strncmp(id, "local#", 6))
        (*local)++;
    snprintf(etag, sizeof(etag), "\"%016" PRIx64 "\"", (uint64_t)size);
    rc = remote_commit(r, id, size, etag);
    if (rc == -ENOENT && (rc = remote_reserve(r, key, size, id)) == 0)
        rc = remote_commit(r, id, size, etag);
    return rc;
}

struct cycler {
    struct remote *r;
    const char *prefix;
    uint64_t size;
    uint64_t first, count; /* this thread's keys: PREFIX<first> .. */
    uint64_t ok;
    int local;
    int rc;
};

static void *cycle_thread(void *arg)
{
    struct cycler *c = arg;
    for (uint64_t i = c->first; i < c->first + c->count && !c->rc; i++) {
        char key[1100];
        snprintf(key, sizeof(key), "%s%" PRIu64, c->prefix, i);
        c->rc = cycle(c->r, key, c->size, &c->local);
        if (!c->rc)
            c->ok++;
    }
    return NULL;
}

/* cycles PREFIX N SIZE [THREADS]: N reserve+commit cycles of the keys
 * PREFIX0..PREFIX<N-1>, SIZE bytes each, spread over THREADS (1..64)
 * threads, each stopping at its first error. Prints {"ok": cycles done,
 * "local": how many used a local id, "error": the first errno name or
 * null}. */
static int cmd_cycles(struct ctx *c)
{
    uint64_t n, size, threads = 1;
    if (parse_u64(c->argv[1], &n) || n > 1000000 || parse_u64(c->argv[2], &size) ||
        (c->argc > 3 && (parse_u64(c->argv[3], &threads) || threads < 1 || threads > 64))) {
        fprintf(stderr, "error: invalid count, size or thread count\n");
        return 2;
    }
    struct cycler w[64];
    pthread_t th[64];
    uint64_t per = n / threads, extra = n % threads, next = 0;
    size_t started = 0;
    for (uint64_t i = 0; i < threads; i++) {
        uint64_t count = per + (i < extra ? 1 : 0);
        w[i] = (struct cycler){
                .r = c->r, .prefix = c->argv[0], .size = size, .first = next, .count = count};
        next += count;
        if (threads == 1)
            cycle_thread(&w[i]);
        else if (pthread_create(&th[i], NULL, cycle_thread, &w[i]) == 0)
            started++;
        else
            w[i].rc = -EAGAIN;
    }
    uint64_t ok = 0;
    int local = 0, rc = 0;
    for (uint64_t i = 0; i < threads; i++) {
        if (threads > 1 && i < started)
            pthread_join(th[i], NULL);
        ok += w[i].ok;
        local += w[i].local;
        if (w[i].rc && !rc)
            rc = w[i].rc;
    }
    printf("{\"ok\": %" PRIu64 ", \"local\": %d, \"error\": ", ok, local);
    if (rc)
        printf("\"%s\"}\n", strerrorname_np(-rc));
    else
        printf("null}\n");
    return 0;
}

/* script OP...: run quota calls in one process, printing one line each.
 *   r:KEY:SIZE      reserve; prints the id (the Ith r op's id is $I, from 0)
 *   c:I:SIZE        commit reservation I with SIZE
 *   x:I             release reservation I
 *   d:KEY           report KEY deleted
 *   u               the usage, once the commits queued are answered:
 *                   "reserved BYTES OBJECTS used BYTES OBJECTS"
 *   w               wait for the commits queued to be answered
 *   s:MS            sleep
 *   R               start the renewal thread (it also looks after allowances)
 * A failed op prints "error ENAME" and the script goes on. */
static int cmd_script(struct ctx *c)
{
    char ids[256][64];
    int n_ids = 0, status = 0;
    struct s3_client *client = NULL;
    for (int i = 0; i < c->argc; i++) {
        char *op = c->argv[i], *a1 = strchr(op, ':'), *a2 = a1 ? strrchr(a1 + 1, ':') : NULL;
        uint64_t v1 = 0, v2 = 0;
        int rc = 0;
        if (op[0] == 'r' && a1 && a2 && n_ids < 256) {
            char key[1100];
            snprintf(key, sizeof(key), "%.*s", (int)(a2 - a1 - 1), a1 + 1);
            if (parse_u64(a2 + 1, &v2))
                goto bad;
            rc = remote_reserve(c->r, key, v2, ids[n_ids]);
            if (rc)
                snprintf(ids[n_ids], 64, "none");
            if (!rc)
                printf("%s\n", ids[n_ids]);
            n_ids++;
        } else if (op[0] == 'c' && a1 && a2 && a2 != a1) {
            *a2 = '\0';
            if (parse_u64(a1 + 1, &v1) || v1 >= (uint64_t)n_ids || parse_u64(a2 + 1, &v2))
                goto bad;
            rc = remote_commit(c->r, ids[v1], v2, "\"0123456789abcdef\"");
            if (!rc)
                printf("committed\n");
        } else if (op[0] == 'x' && a1) {
            if (parse_u64(a1 + 1, &v1) || v1 >= (uint64_t)n_ids)
                goto bad;
            rc = remote_release(c->r, ids[v1]);
            if (!rc)
                printf("released\n");
        } else if (!strcmp(op, "u")) {
            struct remote_usage u;
            sleep(2); /* past the usage cache */
            rc = remote_settle(c->r, 10000) ? remote_usage(c->r, &u) : -ETIMEDOUT;
            if (!rc)
                printf("reserved %" PRIu64 " %" PRIu64 " used %" PRIu64 " %" PRIu64 "\n",
                       u.reserved_bytes, u.reserved_objects, u.used_bytes, u.used_objects);
        } else if (op[0] == 'd' && a1 && a1[1]) {
            const char *keys[1] = {a1 + 1};
            rc = remote_deleted(c->r, keys, 1);
            if (!rc)
                printf("deleted\n");
        } else if (!strcmp(op, "w")) {
            rc = remote_settle(c->r, 10000) ? 0 : -ETIMEDOUT;
            if (!rc)
                printf("settled\n");
        } else if (!strcmp(op, "R") && !client) {
            if ((status = client_new(c, &client)) != 0)
                break;
            rc = remote_start_renewal(c->r, client);
            if (!rc)
                printf("renewing\n");
        } else if (op[0] == 's' && a1) {
            if (parse_u64(a1 + 1, &v1) || v1 > 600000)
                goto bad;
            struct timespec t = {.tv_sec = (time_t)(v1 / 1000),
                                 .tv_nsec = (long)(v1 % 1000) * 1000000L};
            nanosleep(&t, NULL);
            printf("slept\n");
        } else {
            goto bad;
        }
        if (rc)
            printf("error %s\n", strerrorname_np(-rc));
        fflush(stdout);
        continue;
    bad:
        fprintf(stderr, "error: invalid script op '%s'\n", c->argv[i]);
        status = 2;
        break;
    }
    if (client) {
        remote_free(c->r); /* stops the thread before the client goes */
        c->r = NULL;
        s3_client_free(client);
    }
    return status;
}

struct command {
    const char *name;
    int (*fn)(struct ctx *c);
    int min_args, max_args; /* max -1: any number */
    const char *help;
};

static const struct command commands[] = {
        {"session", cmd_session, 0, 0, "session"},
        {"access", cmd_access, 0, 0, "access"},
        {"reserve", cmd_reserve, 2, 2, "reserve KEY SIZE"},
        {"commit", cmd_commit, 3, 3, "commit ID SIZE ETAG"},
        {"release", cmd_release, 1, 1, "release ID"},
        {"deleted", cmd_deleted, 1, -1, "deleted KEY..."},
        {"usage", cmd_usage, 0, 0, "usage"},
        {"renew-check", cmd_renew_check, 1, 1, "renew-check SECONDS"},
        {"refresh", cmd_refresh, 1, 2, "refresh THREADS [list]"},
        {"cycles", cmd_cycles, 3, 4, "cycles PREFIX N SIZE [THREADS]"},
        {"script", cmd_script, 1, -1, "script OP... (r:KEY:SIZE c:I:SIZE x:I u s:MS)"},
};

static int usage(void)
{
    fprintf(stderr, "usage: remotetool [-t TIMEOUT_MS] [-w WRITE_WAIT_MS] [-a] [-p] [-v] "
                    "SERVER_URL COMMAND [ARGS]\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(stderr, "  %s\n", commands[i].help);
    fprintf(stderr, "the API key is read from POCKITY_KEY\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct remote_options opt = {0};
    int pause = 0, opt_c;
    enum log_level level = LOG_LEVEL_WARN;
    while ((opt_c = getopt(argc, argv, "+t:w:apv")) != -1) {
        uint64_t v;
        switch (opt_c) {
        case 't':
        case 'w':
            if (parse_u64(optarg, &v) || v == 0 || v > 3600000) {
                fprintf(stderr, "error: invalid milliseconds '%s'\n", optarg);
                return 2;
            }
            if (opt_c == 't')
                opt.timeout_ms = (long)v;
            else
                opt.write_wait_ms = (long)v;
            break;
        case 'a':
            opt.quota_batch = 1;
            break;
        case 'p':
            pause = 1;
            break;
        case 'v':
            level = LOG_LEVEL_DEBUG;
            break;
        default:
            return usage();
        }
    }
    if (argc - optind < 2)
        return usage();
    log_setup("remotetool", level, 0);
    const char *url = argv[optind], *name = argv[optind + 1];
    int nargs = argc - optind - 2;
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            cmd = &commands[i];
    if (!cmd || nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args))
        return usage();
    const char *key = getenv("POCKITY_KEY");
    if (!key || !*key) {
        fprintf(stderr, "error: 'POCKITY_KEY' is not set\n");
        return 2;
    }

    struct remote_session s;
    struct remote *r;
    char err[512];
    int rc = remote_open(url, key, &opt, &r, &s, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "error: %s\n", err);
        return -rc;
    }
    if (pause) {
        printf("connected\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof(line), stdin)) {
            /* stdin closed: go on at once */
        }
    }
    struct ctx c = {.r = r, .s = &s, .argc = nargs, .argv = argv + optind + 2};
    int status = cmd->fn(&c);
    remote_free(c.r);
    remote_session_release(&s);
    fflush(stdout);
    return status;
}
