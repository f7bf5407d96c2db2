/* s3bench: the raw S3 side of the benchmarks (bench/mount, bench/daemon): parallel
 * PUT/GET, listings and STS AssumeRole over lib/s3, with the root credentials.
 *
 *   s3bench put-files PREFIX DIR THREADS   PUT every regular file under DIR at
 *                                          PREFIX/relative/path
 *   s3bench put-big KEY FILE THREADS PART_MIB   multipart upload, parts in parallel
 *   s3bench get-big KEY THREADS PART_MIB   ranged GETs in parallel, data discarded
 *   s3bench list PREFIX                    ListObjectsV2 with delimiter '/', every page
 *   s3bench count PREFIX                   objects (not "dir/" markers) and bytes
 *   s3bench wait PREFIX COUNT BYTES SECS   poll count until both match (or time out)
 *   s3bench rm PREFIX                      delete every object under PREFIX
 *   s3bench sts ROLE_ARN THREADS SECS      AssumeRole in a loop, each with a
 *                                          prefix-scoped session policy
 *
 * Settings from the environment as for tests/tools/s3tool (POCKITY_S3_ENDPOINT,
 * _REGION, _BUCKET, _ACCESS_KEY, _SECRET_KEY; _SESSION_TOKEN with STS
 * credentials, e.g. a mount's from POST /v1/session). Prints one line
 * "RESULT name=value ..." on success (seconds with 3 decimals); exit 1 on failure
 * with "error: ..." on stderr, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3.h"

#define MAX_THREADS 256
#define MAX_PARTS   10000

static struct s3_client *client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "error: %s: %s: %s\n", what, s3_strerror(rc), s3_last_error_detail());
    return 1;
}

static int parse_count(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "error: '%s' is not a number from %ld to %ld\n", s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Run fn(i) for i in [0, n) on threads workers; returns the first failure. */
struct pool {
    long n;
    atomic_long next;
    atomic_int rc;
    int (*fn)(long i, void *arg);
    void *arg;
};

static void *pool_worker(void *p_)
{
    struct pool *p = p_;
    long i;
    while (atomic_load(&p->rc) == 0 && (i = atomic_fetch_add(&p->next, 1)) < p->n) {
        int rc = p->fn(i, p->arg);
        if (rc) {
            int zero = 0;
            atomic_compare_exchange_strong(&p->rc, &zero, rc);
        }
    }
    return NULL;
}

static int run_pool(long n, long threads, int (*fn)(long, void *), void *arg)
{
    struct pool p = {.n = n, .fn = fn, .arg = arg};
    pthread_t tid[MAX_THREADS];
    long started = 0;
    for (; started < threads && started < n; started++)
        if (pthread_create(&tid[started], NULL, pool_worker, &p) != 0)
            break;
    if (started == 0 && n > 0)
        pool_worker(&p);
    for (long i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    return atomic_load(&p.rc);
}

/* ---- put-files */

static char **files;
static size_t n_files, cap_files;
static size_t root_len;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    if (n_files == cap_files) {
        cap_files = cap_files ? cap_files * 2 : 1024;
        char **f = realloc(files, cap_files * sizeof(*files));
        if (!f)
            return -1;
        files = f;
    }
    files[n_files] = strdup(path);
    return files[n_files++] ? 0 : -1;
}

struct put_files_args {
    const char *prefix;
    atomic_ullong bytes;
};

static int put_one(long i, void *arg)
{
    struct put_files_args *a = arg;
    char key[S3_MAX_KEY_LEN + 1];
    const char *rel = files[i] + root_len;
    while (*rel == '/')
        rel++;
    if ((size_t)snprintf(key, sizeof(key), "%s%s", a->prefix, rel) >= sizeof(key)) {
        fprintf(stderr, "error: key too long for '%s'\n", files[i]);
        return 1;
    }
    int fd = open(files[i], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "error: '%s': %s\n", files[i], strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct s3_fd f = {.fd = fd};
    struct s3_source src = s3_source_fd(&f, (uint64_t)st.st_size);
    int rc = s3_put_object(client, key, &src, NULL, NULL);
    close(fd);
    if (rc)
        return fail(key, rc);
    atomic_fetch_add(&a->bytes, (unsigned long long)st.st_size);
    return 0;
}

static int cmd_put_files(const char *prefix, const char *dir, long threads)
{
    root_len = strlen(dir);
    if (nftw(dir, collect, 64, FTW_PHYS) != 0) {
        fprintf(stderr, "error: cannot walk '%s'\n", dir);
        return 1;
    }
    struct put_files_args a = {.prefix = prefix};
    double t0 = now_s();
    int rc = run_pool((long)n_files, threads, put_one, &a);
    double t = now_s() - t0;
    if (rc)
        return 1;
    printf("RESULT files=%zu bytes=%llu seconds=%.3f\n", n_files,
           (unsigned long long)atomic_load(&a.bytes), t);
    return 0;
}

/* ---- put-big / get-big */

struct big_args {
    const char *key;
    const char *upload_id;
    int fd;
    uint64_t size, part;
    char (*etags)[S3_ETAG_MAX];
};

static int put_part(long i, void *arg)
{
    struct big_args *a = arg;
    uint64_t off = (uint64_t)i * a->part;
    uint64_t len = a->size - off < a->part ? a->size - off : a->part;
    struct s3_fd f = {.fd = a->fd, .base = off};
    struct s3_source src = s3_source_fd(&f, len);
    int rc = s3_multipart_upload_part(client, a->key, a->upload_id, (int)i + 1, &src, a->etags[i]);
    return rc ? fail("upload part", rc) : 0;
}

static int discard(void *arg, uint64_t offset, const void *data, size_t n)
{
    return 0;
}

static int get_part(long i, void *arg)
{
    struct big_args *a = arg;
    uint64_t off = (uint64_t)i * a->part;
    uint64_t len = a->size - off < a->part ? a->size - off : a->part;
    struct s3_sink sink = {.write = discard};
    uint64_t got = 0;
    int rc = s3_get_object(client, a->key, off, len, &sink, NULL, &got);
    if (rc)
        return fail("get range", rc);
    if (got != len) {
        fprintf(stderr, "error: short read at %llu\n", (unsigned long long)off);
        return 1;
    }
    return 0;
}

static int cmd_put_big(const char *key, const char *path, long threads, long part_mib)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "error: '%s': %s\n", path, strerror(errno));
        return 1;
    }
    struct big_args a = {
            .key = key, .fd = fd, .size = (uint64_t)st.st_size, .part = (uint64_t)part_mib << 20};
    long n = (long)((a.size + a.part - 1) / a.part);
    if (n < 1 || n > MAX_PARTS) {
        fprintf(stderr, "error: %ld parts: pick another part size\n", n);
        close(fd);
        return 1;
    }
    a.etags = calloc((size_t)n, sizeof(*a.etags));
    int *numbers = calloc((size_t)n, sizeof(*numbers));
    const char **etag_ptrs = calloc((size_t)n, sizeof(*etag_ptrs));
    char *upload_id = NULL;
    int status = 1;
    if (!a.etags || !numbers || !etag_ptrs) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    double t0 = now_s();
    int rc = s3_multipart_create(client, key, NULL, &upload_id);
    if (rc) {
        fail("create multipart upload", rc);
        goto out;
    }
    a.upload_id = upload_id;
    if (run_pool(n, threads, put_part, &a)) {
        s3_multipart_abort(client, key, upload_id);
        goto out;
    }
    for (long i = 0; i < n; i++) {
        numbers[i] = (int)i + 1;
        etag_ptrs[i] = a.etags[i];
    }
    rc = s3_multipart_complete(client, key, upload_id, numbers, etag_ptrs, (size_t)n, NULL);
    if (rc) {
        fail("complete multipart upload", rc);
        s3_multipart_abort(client, key, upload_id);
        goto out;
    }
    double t = now_s() - t0;
    printf("RESULT bytes=%llu parts=%ld seconds=%.3f\n", (unsigned long long)a.size, n, t);
    status = 0;
out:
    free(upload_id);
    free(etag_ptrs);
    free(numbers);
    free(a.etags);
    close(fd);
    return status;
}

static int cmd_get_big(const char *key, long threads, long part_mib)
{
    double t0 = now_s();
    struct s3_head h = {0};
    int rc = s3_head_object(client, key, &h);
    if (rc)
        return fail(key, rc);
    struct big_args a = {.key = key, .size = h.size, .part = (uint64_t)part_mib << 20};
    s3_head_release(&h);
    long n = (long)((a.size + a.part - 1) / a.part);
    if (n > 0 && run_pool(n, threads, get_part, &a))
        return 1;
    double t = now_s() - t0;
    printf("RESULT bytes=%llu seconds=%.3f\n", (unsigned long long)a.size, t);
    return 0;
}

/* ---- listings */

/* Walk every page under prefix; count entries (objects not ending in '/' when
 * files_only) and their bytes. */
static int walk(const char *prefix, const char *delim, bool files_only, uint64_t *count,
                uint64_t *bytes, uint64_t *pages)
{
    char *token = NULL;
    *count = *bytes = *pages = 0;
    for (;;) {
        struct s3_list_page pg = {0};
        int rc = s3_list_objects(client, prefix, delim, token, NULL, 1000, &pg);
        free(token);
        token = NULL;
        if (rc)
            return fail("list", rc);
        (*pages)++;
        for (size_t i = 0; i < pg.n_objects; i++) {
            size_t kl = strlen(pg.objects[i].key);
            if (files_only && kl && pg.objects[i].key[kl - 1] == '/')
                continue;
            (*count)++;
            *bytes += pg.objects[i].size;
        }
        if (!files_only)
            *count += pg.n_prefixes;
        bool more = pg.is_truncated && pg.next_token;
        if (more)
            token = strdup(pg.next_token);
        s3_list_page_release(&pg);
        if (!more)
            return 0;
        if (!token) {
            fprintf(stderr, "error: out of memory\n");
            return 1;
        }
    }
}

static int cmd_list(const char *prefix)
{
    uint64_t count, bytes, pages;
    double t0 = now_s();
    if (walk(prefix, "/", false, &count, &bytes, &pages))
        return 1;
    printf("RESULT entries=%llu pages=%llu seconds=%.3f\n", (unsigned long long)count,
           (unsigned long long)pages, now_s() - t0);
    return 0;
}

static int cmd_count(const char *prefix)
{
    uint64_t count, bytes, pages;
    if (walk(prefix, NULL, true, &count, &bytes, &pages))
        return 1;
    printf("RESULT objects=%llu bytes=%llu\n", (unsigned long long)count,
           (unsigned long long)bytes);
    return 0;
}

static int cmd_wait(const char *prefix, long want_count, long long want_bytes, long secs)
{
    double t0 = now_s();
    uint64_t count = 0, bytes = 0, pages;
    for (;;) {
        if (walk(prefix, NULL, true, &count, &bytes, &pages))
            return 1;
        if (count == (uint64_t)want_count && bytes == (uint64_t)want_bytes)
            break;
        if (now_s() - t0 > (double)secs) {
            fprintf(stderr, "error: after %lds: %llu objects, %llu bytes under '%s'\n", secs,
                    (unsigned long long)count, (unsigned long long)bytes, prefix);
            return 1;
        }
        usleep(100 * 1000);
    }
    printf("RESULT objects=%llu bytes=%llu seconds=%.3f\n", (unsigned long long)count,
           (unsigned long long)bytes, now_s() - t0);
    return 0;
}

static int cmd_rm(const char *prefix)
{
    uint64_t deleted = 0;
    for (;;) {
        struct s3_list_page pg = {0};
        int rc = s3_list_objects(client, prefix, NULL, NULL, NULL, 1000, &pg);
        if (rc)
            return fail("list", rc);
        if (pg.n_objects == 0) {
            s3_list_page_release(&pg);
            break;
        }
        const char **keys = calloc(pg.n_objects, sizeof(*keys));
        if (!keys) {
            s3_list_page_release(&pg);
            fprintf(stderr, "error: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < pg.n_objects; i++)
            keys[i] = pg.objects[i].key;
        struct s3_delete_result res = {0};
        rc = s3_delete_objects(client, keys, pg.n_objects, &res);
        free(keys);
        bool stuck = rc == 0 && res.n_failures == pg.n_objects;
        deleted += pg.n_objects - (rc ? pg.n_objects : res.n_failures);
        s3_delete_result_release(&res);
        s3_list_page_release(&pg);
        if (rc)
            return fail("delete", rc);
        if (stuck) {
            fprintf(stderr, "error: objects under '%s' cannot be deleted\n", prefix);
            return 1;
        }
    }
    printf("RESULT deleted=%llu\n", (unsigned long long)deleted);
    return 0;
}

/* ---- sts */

struct sts_args {
    const char *role;
    double until;
    atomic_long failures;
};

struct sts_thread {
    struct sts_args *a;
    long id;
    double *lat;
    size_t n, cap;
};

static void *sts_worker(void *p)
{
    struct sts_thread *t = p;
    char policy[512], name[64];
    snprintf(policy, sizeof(policy),
             "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":"
             "[\"s3:GetObject\",\"s3:PutObject\"],\"Resource\":\"arn:aws:s3:::%s/bench/%ld/*\"}]}",
             getenv("POCKITY_S3_BUCKET"), t->id);
    snprintf(name, sizeof(name), "s3bench-%ld", t->id);
    while (now_s() < t->a->until) {
        double t0 = now_s();
        struct sts_credentials cr = {0};
        int rc = sts_assume_role(client, t->a->role, name, policy, 900, &cr);
        if (rc) {
            atomic_fetch_add(&t->a->failures, 1);
            continue;
        }
        sts_credentials_release(&cr);
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 4096;
            double *l = realloc(t->lat, t->cap * sizeof(*l));
            if (!l)
                break;
            t->lat = l;
        }
        t->lat[t->n++] = now_s() - t0;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_sts(const char *role, long threads, long secs)
{
    struct sts_args a = {.role = role};
    struct sts_thread th[MAX_THREADS] = {0};
    pthread_t tid[MAX_THREADS];
    double t0 = now_s();
    a.until = t0 + (double)secs;
    long started = 0;
    for (; started < threads; started++) {
        th[started] = (struct sts_thread){.a = &a, .id = started};
        if (pthread_create(&tid[started], NULL, sts_worker, &th[started]) != 0)
            break;
    }
    size_t total = 0;
    for (long i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
        total += th[i].n;
    }
    double t = now_s() - t0;
    double *all = malloc((total ? total : 1) * sizeof(*all));
    if (!all) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    size_t k = 0;
    for (long i = 0; i < started; i++) {
        memcpy(all + k, th[i].lat, th[i].n * sizeof(*all));
        k += th[i].n;
        free(th[i].lat);
    }
    qsort(all, total, sizeof(*all), cmp_double);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(total * 99) / 100] : 0;
    free(all);
    if (!total) {
        fprintf(stderr, "error: no AssumeRole call succeeded (%ld failed)\n",
                atomic_load(&a.failures));
        return 1;
    }
    printf("RESULT requests=%zu failures=%ld seconds=%.3f rps=%.1f p50_ms=%.2f p99_ms=%.2f\n",
           total, atomic_load(&a.failures), t, (double)total / t, p50 * 1000, p99 * 1000);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: s3bench put-files PREFIX DIR THREADS | put-big KEY FILE THREADS "
                    "PART_MIB | get-big KEY THREADS PART_MIB | list PREFIX | count PREFIX | "
                    "wait PREFIX COUNT BYTES SECS | rm PREFIX | sts ROLE_ARN THREADS SECS\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *op = argv[1];
    struct s3_config cfg = {
            .endpoint = getenv("POCKITY_S3_ENDPOINT"),
            .region = getenv("POCKITY_S3_REGION"),
            .bucket = getenv("POCKITY_S3_BUCKET"),
            .access_key = getenv("POCKITY_S3_ACCESS_KEY"),
            .secret_key = getenv("POCKITY_S3_SECRET_KEY"),
            .session_token = getenv("POCKITY_S3_SESSION_TOKEN"),
            .max_retries = 3,
            .request_timeout_ms = 120000,
    };
    if (s3_client_new(&cfg, &client)) {
        fprintf(stderr, "error: bad S3 settings in the environment\n");
        return 2;
    }
    long a = 0, b = 0, c = 0;
    long long bytes = 0;
    int rc;
    if (!strcmp(op, "put-files") && argc == 5) {
        rc = parse_count(argv[4], 1, MAX_THREADS, &a) ? 2 : cmd_put_files(argv[2], argv[3], a);
    } else if (!strcmp(op, "put-big") && argc == 6) {
        rc = parse_count(argv[4], 1, MAX_THREADS, &a) || parse_count(argv[5], 5, 5120, &b)
                     ? 2
                     : cmd_put_big(argv[2], argv[3], a, b);
    } else if (!strcmp(op, "get-big") && argc == 5) {
        rc = parse_count(argv[3], 1, MAX_THREADS, &a) || parse_count(argv[4], 1, 5120, &b)
                     ? 2
                     : cmd_get_big(argv[2], a, b);
    } else if (!strcmp(op, "list") && argc == 3) {
        rc = cmd_list(argv[2]);
    } else if (!strcmp(op, "count") && argc == 3) {
        rc = cmd_count(argv[2]);
    } else if (!strcmp(op, "wait") && argc == 6) {
        char *end;
        errno = 0;
        bytes = strtoll(argv[4], &end, 10);
        rc = errno || *end || bytes < 0 || parse_count(argv[3], 0, 100000000, &a) ||
                             parse_count(argv[5], 1, 86400, &c)
                     ? 2
                     : cmd_wait(argv[2], a, bytes, c);
    } else if (!strcmp(op, "rm") && argc == 3) {
        rc = cmd_rm(argv[2]);
    } else if (!strcmp(op, "sts") && argc == 5) {
        rc = parse_count(argv[3], 1, MAX_THREADS, &a) || parse_count(argv[4], 1, 3600, &b)
                     ? 2
                     : cmd_sts(argv[2], a, b);
    } else {
        rc = usage();
    }
    if (rc == 2)
        usage();
    s3_client_free(client);
    for (size_t i = 0; i < n_files; i++)
        free(files[i]);
    free(files);
    return rc;
}
