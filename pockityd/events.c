/* events: configuring the bucket's event notifications and applying pushed
 * S3 event records to the usage ledger, in order by sequencer. */
#include "events.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "s3.h"
#include "s3_bucket.h"
#include "secret.h"
#include "sigv4.h"
#include "usage.h"

#define SEQ_LEN      32 /* normalised sequencers: upper-case hex, zero-padded */
#define ETAG_MAX     128
#define SEGMENT_MAX  64 /* a pocket id in a key */
#define PUSH_URL_MAX 2048

/* ---- setup ---- */

int events_setup(struct app *app)
{
    const struct config *cfg = &app->cfg;
    if (!cfg->events_token || !*cfg->events_token) {
        log_error("events: 'events.enabled' needs 'events.token' (or POCKITYD_EVENTS_TOKEN)");
        return -1;
    }
    struct buf url;
    buf_init(&url, PUSH_URL_MAX);
    char *etoken = sigv4_uri_encode(cfg->events_token, strlen(cfg->events_token), 0);
    char *arn = NULL, *prefix = NULL;
    int ret = -1, rc;
    if (!etoken)
        goto out;
    if (cfg->events_push_url && *cfg->events_push_url) {
        rc = buf_adds(&url, cfg->events_push_url);
    } else if (cfg->public_url && *cfg->public_url) {
        size_t n = strcspn(cfg->public_url, "?#");
        while (n && cfg->public_url[n - 1] == '/')
            n--;
        rc = buf_addf(&url, "%.*s" EVENTS_PATH, (int)n, cfg->public_url);
    } else {
        log_error("events: set 'events.push_url' (or 'server.public_url') so RGW can reach us");
        goto out;
    }
    if (rc || buf_addf(&url, "%stoken=%s", strchr(url.data, '?') ? "&" : "?", etoken)) {
        log_error("events: the push url is too long");
        goto out;
    }
    const struct s3_topic_attr attrs[] = {
            {"push-endpoint", url.data},
            /* RGW queues the records and retries until we answer 2xx: nothing
             * is lost while pockityd restarts, and writers never wait on us */
            {"persistent", "true"},
    };
    rc = s3_topic_create(app->s3, cfg->events_topic, attrs, 2, &arn);
    if (rc) {
        log_error("events: cannot create the topic '%s': %s: %s", cfg->events_topic,
                  s3_strerror(rc), s3_last_error_detail());
        goto out;
    }
    size_t plen = strlen(cfg->s3_root_prefix) + 2;
    prefix = malloc(plen);
    if (!prefix)
        goto out;
    snprintf(prefix, plen, "%s/", cfg->s3_root_prefix);
    static const char *const kinds[] = {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"};
    struct s3_notification n = {
            .id = cfg->events_topic,
            .topic_arn = arn,
            .events = kinds,
            .n_events = 2,
            .prefix = prefix,
    };
    rc = s3_bucket_put_notification(app->s3, &n);
    if (rc) {
        log_error("events: cannot configure the bucket's notifications: %s: %s", s3_strerror(rc),
                  s3_last_error_detail());
        goto out;
    }
    log_info("events: bucket notifications for '%s' go to topic '%s'", prefix, arn);
    ret = 0;
out:
    if (url.data)
        secret_wipe(url.data, url.len);
    buf_release(&url);
    free(etoken);
    free(arn);
    free(prefix);
    return ret;
}

/* ---- records ---- */

/* One usable record, its key split into the pocket's prefix and the key
 * relative to it. */
struct rec {
    char *prefix; /* "<root>/<segment>/", owned */
    char *key;    /* relative, owned */
    bool create;
    int64_t size;
    char etag[ETAG_MAX];
    char seq[SEQ_LEN + 1]; /* "" when the record has none */
    size_t index;          /* position in the push, to keep per-key order */
};

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        if (!len || c == 0 || i + len > n || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4))
            return false;
        for (size_t j = 1; j < len; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
        if ((len == 3 && c == 0xe0 && s[i + 1] < 0xa0) ||
            (len == 3 && c == 0xed && s[i + 1] >= 0xa0) ||
            (len == 4 && c == 0xf0 && s[i + 1] < 0x90) ||
            (len == 4 && c == 0xf4 && s[i + 1] >= 0x90))
            return false;
        i += len;
    }
    return true;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* AWS sends keys form-encoded ('+' for a space). Decodes in place; false for
 * a malformed escape or %00. */
static bool url_decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%') {
            int hi = hexval((unsigned char)r[1]), lo = hi < 0 ? -1 : hexval((unsigned char)r[2]);
            if (lo < 0 || (hi == 0 && lo == 0))
                return false;
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return true;
}

/* The sequencer as a string that compares (strcmp) in event order. RGW's is
 * the hex of its in-memory utime_t: seconds then nanoseconds, each 32 bits
 * little-endian; it is turned into big-endian hex. AWS's is hex compared
 * after zero-padding to the same length. "" when absent or unusable. */
static void seq_normalize(bool rgw, const char *in, char out[SEQ_LEN + 1])
{
    out[0] = '\0';
    size_t n = in ? strlen(in) : 0;
    if (n == 0 || n > SEQ_LEN)
        return;
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)in[i]) < 0)
            return;
    if (rgw && n == 16) {
        uint32_t part[2] = {0, 0};
        for (int w = 0; w < 2; w++)
            for (int b = 3; b >= 0; b--) {
                const char *p = in + w * 8 + b * 2;
                part[w] = (part[w] << 8) | (uint32_t)(hexval((unsigned char)p[0]) * 16 +
                                                      hexval((unsigned char)p[1]));
            }
        snprintf(out, SEQ_LEN + 1, "%016X%08X%08X", 0u, part[0], part[1]);
        return;
    }
    memset(out, '0', SEQ_LEN - n);
    for (size_t i = 0; i < n; i++)
        out[SEQ_LEN - n + i] = (char)toupper((unsigned char)in[i]);
    out[SEQ_LEN] = '\0';
}

static const char *obj_str(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)
                   ? json_string_value(v)
                   : NULL;
}

/* The size of a created object: a JSON integer, or a string of digits (RGW
 * documents it as a string). */
static bool size_of(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out >= 0 && *out <= USAGE_MAX_OBJECT_SIZE;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s || !*s || strlen(s) > 15)
        return false;
    int64_t n = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        n = n * 10 + (*p - '0');
    }
    *out = n;
    return n <= USAGE_MAX_OBJECT_SIZE;
}

enum parsed {
    P_OK,
    P_INVALID,
    P_IGNORED,
    P_OUTSIDE,
    P_NOMEM
};

static enum parsed parse_record(const struct config *cfg, json_t *r, size_t index, struct rec *out)
{
    memset(out, 0, sizeof(*out));
    out->index = index;
    if (!json_is_object(r))
        return P_INVALID;
    const char *name = obj_str(r, "eventName");
    if (!name)
        return P_INVALID;
    if (!strncmp(name, "s3:", 3))
        name += 3;
    if (!strncmp(name, "ObjectCreated:", 14))
        out->create = true;
    else if (strncmp(name, "ObjectRemoved:", 14) != 0)
        return P_IGNORED;
    const char *source = obj_str(r, "eventSource");
    bool rgw = source && !strcmp(source, "ceph:s3");
    json_t *s3 = json_object_get(r, "s3");
    json_t *bucket = json_object_get(s3, "bucket"), *obj = json_object_get(s3, "object");
    const char *bname = obj_str(bucket, "name"), *key = obj_str(obj, "key");
    if (!json_is_object(obj) || !key || !*key || strlen(key) > 3 * S3_MAX_KEY_LEN)
        return P_INVALID;
    if (bname && strcmp(bname, cfg->s3_bucket) != 0)
        return P_OUTSIDE;
    if (out->create && !size_of(json_object_get(obj, "size"), &out->size))
        return P_INVALID;
    const char *etag = obj_str(obj, "eTag");
    if (etag && strlen(etag) < ETAG_MAX)
        snprintf(out->etag, sizeof(out->etag), "%s", etag);
    seq_normalize(rgw, obj_str(obj, "sequencer"), out->seq);

    char *k = strdup(key);
    if (!k)
        return P_NOMEM;
    bool decoded = rgw || url_decode(k);
    size_t klen = strlen(k);
    if (!decoded || klen == 0 || klen > S3_MAX_KEY_LEN ||
        !utf8_valid((const unsigned char *)k, klen)) {
        free(k);
        return P_INVALID;
    }
    /* <root>/<pocket id>/<relative key>, the relative key non-empty */
    size_t rlen = strlen(cfg->s3_root_prefix);
    const char *seg = k + rlen + 1;
    const char *slash =
            strncmp(k, cfg->s3_root_prefix, rlen) == 0 && k[rlen] == '/' ? strchr(seg, '/') : NULL;
    bool seg_ok = slash && slash > seg && slash - seg <= SEGMENT_MAX && slash[1];
    for (const char *p = seg; seg_ok && p < slash; p++)
        seg_ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    if (!seg_ok) {
        free(k);
        return P_OUTSIDE;
    }
    size_t plen = (size_t)(slash - k) + 1;
    out->prefix = strndup(k, plen);
    out->key = strdup(k + plen);
    free(k);
    if (!out->prefix || !out->key) {
        free(out->prefix);
        free(out->key);
        out->prefix = out->key = NULL;
        return P_NOMEM;
    }
    return P_OK;
}

/* Group records by pocket and by key, keeping each key's records in push
 * order: the order the batch applies them in (which decides the totals when
 * they clamp at zero). */
static int rec_cmp(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    int c = strcmp(x->prefix, y->prefix);
    if (!c)
        c = strcmp(x->key, y->key);
    return c ? c : x->index < y->index ? -1 : x->index > y->index;
}

struct ingest {
    struct rec *recs;
    size_t n;
    int64_t now;
    int64_t parse_outside;    /* keys in no pocket, seen before the transaction */
    struct events_result res; /* applied/stale/outside: set by the last attempt */
    /* for the transaction, n of each */
    const char **prefixes; /* the distinct prefixes, in the records' order */
    char (*pockets)[64];   /* their pockets' ids ("": none) */
    struct usage_change *changes;
};

/* The whole push in a constant number of statements: the pockets found and
 * locked at once, then every record of theirs applied as one batch. */
static int ingest_tx(struct db_conn *c, void *arg)
{
    struct ingest *in = arg;
    size_t n_prefixes = 0, n_changes = 0;
    for (size_t i = 0; i < in->n; i++)
        if (!n_prefixes || strcmp(in->prefixes[n_prefixes - 1], in->recs[i].prefix) != 0)
            in->prefixes[n_prefixes++] = in->recs[i].prefix;
    int rc = usage_lock_prefixes(c, in->prefixes, n_prefixes, in->pockets);
    if (rc)
        return rc;
    int64_t outside = in->parse_outside, stale = 0;
    for (size_t i = 0, at = 0; i < in->n; i++) {
        const struct rec *r = &in->recs[i];
        while (strcmp(in->prefixes[at], r->prefix) != 0)
            at++;
        if (!in->pockets[at][0]) {
            outside++;
            continue;
        }
        in->changes[n_changes++] = (struct usage_change){
                .pocket_id = in->pockets[at],
                .key = r->key,
                .size = r->create ? r->size : -1,
                .etag = r->etag[0] ? r->etag : NULL,
                .sequencer = r->seq[0] ? r->seq : NULL,
        };
    }
    rc = usage_ledger_set_many(c, in->changes, n_changes, in->now);
    if (rc)
        return rc;
    for (size_t i = 0; i < n_changes; i++)
        stale += in->changes[i].stale;
    in->res.applied = (int64_t)n_changes - stale;
    in->res.stale = stale;
    in->res.outside = outside;
    return DB_OK;
}

static void count(const struct events_result *r)
{
    metrics_counter_add("pockityd_events_records_total", "result", "applied", (uint64_t)r->applied);
    metrics_counter_add("pockityd_events_records_total", "result", "stale", (uint64_t)r->stale);
    metrics_counter_add("pockityd_events_records_total", "result", "outside", (uint64_t)r->outside);
    metrics_counter_add("pockityd_events_records_total", "result", "ignored", (uint64_t)r->ignored);
    metrics_counter_add("pockityd_events_records_total", "result", "invalid", (uint64_t)r->invalid);
}

int events_ingest(struct app *app, json_t *doc, int64_t now, struct events_result *out)
{
    memset(out, 0, sizeof(*out));
    json_t *records = json_object_get(doc, "Records");
    if (!json_is_object(doc) || !json_is_array(records) ||
        json_array_size(records) > EVENTS_MAX_RECORDS)
        return EVENTS_BAD_DOCUMENT;
    size_t n = json_array_size(records);
    struct ingest in = {.recs = calloc(n ? n : 1, sizeof(struct rec)), .now = now};
    if (!in.recs)
        return DB_ERR_NOMEM;
    int rc = DB_OK;
    for (size_t i = 0; i < n && rc == DB_OK; i++) {
        switch (parse_record(&app->cfg, json_array_get(records, i), i, &in.recs[in.n])) {
        case P_OK:
            in.n++;
            break;
        case P_INVALID:
            in.res.invalid++;
            break;
        case P_IGNORED:
            in.res.ignored++;
            break;
        case P_OUTSIDE:
            in.parse_outside++;
            break;
        case P_NOMEM:
            rc = DB_ERR_NOMEM;
            break;
        }
    }
    in.res.outside = in.parse_outside;
    if (rc == DB_OK && in.n) {
        qsort(in.recs, in.n, sizeof(*in.recs), rec_cmp);
        in.prefixes = calloc(in.n, sizeof(*in.prefixes));
        in.pockets = calloc(in.n, sizeof(*in.pockets));
        in.changes = calloc(in.n, sizeof(*in.changes));
        rc = in.prefixes && in.pockets && in.changes ? db_transact(app->db, ingest_tx, &in)
                                                     : DB_ERR_NOMEM;
    }
    if (rc == DB_OK) {
        *out = in.res;
        count(out);
    }
    for (size_t i = 0; i < in.n; i++) {
        free(in.recs[i].prefix);
        free(in.recs[i].key);
    }
    free(in.recs);
    free(in.prefixes);
    free(in.pockets);
    free(in.changes);
    return rc;
}
