/* metrics: a small registry of counter and histogram series, looked up in a
 * hash table under a read lock and updated with atomics, rendered on demand. */
#include "metrics.h"

#include "buf.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_REQUESTS  "pockityd_http_requests_total"
#define HTTP_DURATION  "pockityd_http_request_duration_seconds"
#define MAX_SERIES     10000
#define HASH_SIZE      1024
#define MAX_LABELS_LEN 512
#define N_BUCKETS      13

enum series_kind {
    KIND_COUNTER,
    KIND_HISTOGRAM
};

static const double bucket_le[N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10};
static const char *const bucket_le_text[N_BUCKETS] = {"0.001", "0.0025", "0.005", "0.01", "0.025",
                                                      "0.05",  "0.1",    "0.25",  "0.5",  "1",
                                                      "2.5",   "5",      "10"};

struct family {
    struct family *next; /* registration order; guarded by metrics_lock */
    char *name;
    char *help; /* NULL: no HELP line; guarded by metrics_lock */
    enum series_kind kind;
    struct series *first, *last; /* guarded by metrics_lock */
};

struct series {
    struct series *hash_next; /* guarded by metrics_lock */
    struct series *fam_next;  /* guarded by metrics_lock */
    struct family *fam;
    char *labels; /* rendered pairs without braces: route="/x",method="GET"; "" for none */
    unsigned hash;
    _Atomic uint64_t value;                  /* counter */
    _Atomic uint64_t buckets[N_BUCKETS + 1]; /* histogram, non-cumulative; last is +Inf */
    _Atomic uint64_t sum_ns;                 /* histogram */
};

static pthread_rwlock_t metrics_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct series *table[HASH_SIZE];         /* guarded by metrics_lock */
static struct family *families, *families_last; /* guarded by metrics_lock */
static size_t n_series;                         /* guarded by metrics_lock */
static atomic_int warned_invalid, warned_full, warned_kind;

static void warn_once(atomic_int *flag, const char *what, const char *name)
{
    if (atomic_exchange(flag, 1) == 0)
        log_warn("metrics: %s '%s' (further ones not logged)", what, name);
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Append name="value" (with a leading comma unless first) to dst, escaping
 * the value as the text format requires. Returns false when it does not fit. */
static bool label_append(char *dst, size_t cap, size_t *len, const char *name, const char *value)
{
    size_t n = *len;
    int w = snprintf(dst + n, cap - n, "%s%s=\"", n ? "," : "", name);
    if (w < 0 || (size_t)w >= cap - n)
        return false;
    n += (size_t)w;
    for (const char *p = value; *p; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '"')
            esc = "\\\"";
        else if (*p == '\n')
            esc = "\\n";
        size_t need = esc ? 2 : 1;
        if (n + need + 2 > cap)
            return false;
        if (esc) {
            memcpy(dst + n, esc, 2);
        } else {
            dst[n] = *p;
        }
        n += need;
    }
    dst[n++] = '"';
    dst[n] = '\0';
    *len = n;
    return true;
}

static unsigned key_hash(const char *name, const char *labels)
{
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (const char *p = labels; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static struct series *series_find(unsigned h, const char *name, const char *labels)
{
    for (struct series *s = table[h % HASH_SIZE]; s; s = s->hash_next)
        if (s->hash == h && strcmp(s->fam->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
    return NULL;
}

static struct family *family_find(const char *name)
{
    for (struct family *f = families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Caller holds the write lock. */
static struct family *family_get(const char *name, enum series_kind kind, const char *help)
{
    struct family *f = family_find(name);
    if (f) {
        if (f->kind != kind) {
            warn_once(&warned_kind, "metric used with two types", name);
            return NULL;
        }
        if (!f->help && help)
            f->help = strdup(help); /* a missing HELP line is harmless */
        return f;
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = help ? strdup(help) : NULL;
    if (!f->name || (help && !f->help)) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->kind = kind;
    if (families_last)
        families_last->next = f;
    else
        families = f;
    families_last = f;
    return f;
}

/* Find or create the series; NULL when it cannot exist (logged). */
static struct series *series_get(enum series_kind kind, const char *name, const char *help,
                                 const char *labels)
{
    unsigned h = key_hash(name, labels);
    pthread_rwlock_rdlock(&metrics_lock);
    struct series *s = series_find(h, name, labels);
    pthread_rwlock_unlock(&metrics_lock);
    if (s)
        return s->fam->kind == kind ? s : NULL;

    pthread_rwlock_wrlock(&metrics_lock);
    s = series_find(h, name, labels);
    if (s)
        goto out;
    if (n_series >= MAX_SERIES) {
        warn_once(&warned_full, "too many series, dropping", name);
        goto out;
    }
    struct family *f = family_get(name, kind, help);
    if (!f)
        goto out;
    s = calloc(1, sizeof(*s));
    if (!s)
        goto out;
    s->labels = strdup(labels);
    if (!s->labels) {
        free(s);
        s = NULL;
        goto out;
    }
    s->fam = f;
    s->hash = h;
    s->hash_next = table[h % HASH_SIZE];
    table[h % HASH_SIZE] = s;
    if (f->last)
        f->last->fam_next = s;
    else
        f->first = s;
    f->last = s;
    n_series++;
out:
    pthread_rwlock_unlock(&metrics_lock);
    return s && s->fam->kind == kind ? s : NULL;
}

void metrics_http_observe(const char *route, const char *method, int status, double seconds)
{
    char labels[MAX_LABELS_LEN];
    size_t len = 0;
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    labels[0] = '\0';
    if (!label_append(labels, sizeof(labels), &len, "route", route) ||
        !label_append(labels, sizeof(labels), &len, "method", method) ||
        !label_append(labels, sizeof(labels), &len, "status", code)) {
        warn_once(&warned_invalid, "label too long for route", route);
        return;
    }
    struct series *s = series_get(KIND_COUNTER, HTTP_REQUESTS,
                                  "HTTP requests answered, by route, method and status", labels);
    if (s)
        atomic_fetch_add_explicit(&s->value, 1, memory_order_relaxed);

    len = 0;
    labels[0] = '\0';
    label_append(labels, sizeof(labels), &len, "route", route); /* fit above */
    s = series_get(KIND_HISTOGRAM, HTTP_DURATION, "HTTP request latency in seconds, by route",
                   labels);
    if (!s)
        return;
    if (seconds < 0)
        seconds = 0;
    int i = 0;
    while (i < N_BUCKETS && seconds > bucket_le[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

/* Render the label set of a counter into labels; false (logged) when invalid. */
static bool counter_labels(char *labels, size_t cap, const char *name, const char *label_name,
                           const char *label_value)
{
    size_t len = 0;
    labels[0] = '\0';
    if (!valid_name(name, true)) {
        warn_once(&warned_invalid, "invalid metric name", name ? name : "(null)");
        return false;
    }
    if (!label_name && !label_value)
        return true;
    if (!valid_name(label_name, false) || !label_value) {
        warn_once(&warned_invalid, "invalid label for metric", name);
        return false;
    }
    if (!label_append(labels, cap, &len, label_name, label_value)) {
        warn_once(&warned_invalid, "label too long for metric", name);
        return false;
    }
    return true;
}

int metrics_counter_register(const char *name, const char *help)
{
    if (!valid_name(name, true))
        return -EINVAL;
    struct series *s = series_get(KIND_COUNTER, name, help, "");
    return s ? 0 : -ENOMEM;
}

int metrics_counter_register_labels(const char *name, const char *help, const char *label_name,
                                    const char *const *values)
{
    char labels[MAX_LABELS_LEN];
    for (size_t i = 0; values && values[i]; i++) {
        if (!counter_labels(labels, sizeof(labels), name, label_name, values[i]))
            return -EINVAL;
        if (!series_get(KIND_COUNTER, name, help, labels))
            return -ENOMEM;
    }
    return 0;
}

void metrics_counter_add(const char *name, const char *label_name, const char *label_value,
                         uint64_t n)
{
    char labels[MAX_LABELS_LEN];
    if (!counter_labels(labels, sizeof(labels), name, label_name, label_value))
        return;
    struct series *s = series_get(KIND_COUNTER, name, NULL, labels);
    if (s)
        atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
}

void metrics_counter_inc(const char *name)
{
    metrics_counter_add(name, NULL, NULL, 1);
}

uint64_t metrics_counter_get(const char *name, const char *label_name, const char *label_value)
{
    char labels[MAX_LABELS_LEN];
    if (!counter_labels(labels, sizeof(labels), name, label_name, label_value))
        return 0;
    unsigned h = key_hash(name, labels);
    uint64_t v = 0;
    pthread_rwlock_rdlock(&metrics_lock);
    struct series *s = series_find(h, name, labels);
    if (s && s->fam->kind == KIND_COUNTER)
        v = atomic_load_explicit(&s->value, memory_order_relaxed);
    pthread_rwlock_unlock(&metrics_lock);
    return v;
}

static int render_help(struct buf *out, const struct family *f)
{
    int rc = 0;
    if (f->help) {
        rc = buf_addf(out, "# HELP %s ", f->name);
        for (const char *p = f->help; !rc && *p; p++) {
            if (*p == '\\')
                rc = buf_adds(out, "\\\\");
            else if (*p == '\n')
                rc = buf_adds(out, "\\n");
            else
                rc = buf_add(out, p, 1);
        }
        if (!rc)
            rc = buf_adds(out, "\n");
    }
    if (!rc)
        rc = buf_addf(out, "# TYPE %s %s\n", f->name,
                      f->kind == KIND_COUNTER ? "counter" : "histogram");
    return rc;
}

static int render_histogram(struct buf *out, const struct family *f, const struct series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cum = 0;
    int rc = 0;
    for (int i = 0; !rc && i <= N_BUCKETS; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        rc = buf_addf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep,
                      i < N_BUCKETS ? bucket_le_text[i] : "+Inf", (unsigned long long)cum);
    }
    uint64_t sum_ns = atomic_load_explicit(&s->sum_ns, memory_order_relaxed);
    const char *lb = s->labels[0] ? "{" : "";
    const char *rb = s->labels[0] ? "}" : "";
    if (!rc)
        rc = buf_addf(out, "%s_sum%s%s%s %.9f\n", f->name, lb, s->labels, rb, (double)sum_ns / 1e9);
    if (!rc)
        rc = buf_addf(out, "%s_count%s%s%s %llu\n", f->name, lb, s->labels, rb,
                      (unsigned long long)cum);
    return rc;
}

int metrics_render(struct buf *out)
{
    int rc = 0;
    pthread_rwlock_rdlock(&metrics_lock);
    for (const struct family *f = families; !rc && f; f = f->next) {
        rc = render_help(out, f);
        for (const struct series *s = f->first; !rc && s; s = s->fam_next) {
            if (f->kind == KIND_HISTOGRAM) {
                rc = render_histogram(out, f, s);
            } else if (s->labels[0]) {
                rc = buf_addf(out, "%s{%s} %llu\n", f->name, s->labels,
                              (unsigned long long)atomic_load(&s->value));
            } else {
                rc = buf_addf(out, "%s %llu\n", f->name,
                              (unsigned long long)atomic_load(&s->value));
            }
        }
    }
    pthread_rwlock_unlock(&metrics_lock);
    return rc;
}

void metrics_release(void)
{
    pthread_rwlock_wrlock(&metrics_lock);
    for (size_t i = 0; i < HASH_SIZE; i++) {
        struct series *s = table[i];
        while (s) {
            struct series *next = s->hash_next;
            free(s->labels);
            free(s);
            s = next;
        }
        table[i] = NULL;
    }
    struct family *f = families;
    while (f) {
        struct family *next = f->next;
        free(f->name);
        free(f->help);
        free(f);
        f = next;
    }
    families = families_last = NULL;
    n_series = 0;
    pthread_rwlock_unlock(&metrics_lock);
}
