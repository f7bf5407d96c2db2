/* allowance: quota allowances held by a mount, charged file by file, and
 * the committer thread that reports the charges' uploads in batches. */
#include "allowance.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "remote_int.h"

#define ALW_MAX_BYTES    (64ull << 20) /* largest allowance asked for */
#define ALW_MAX_OBJECTS  256
#define ALW_SHARE        8     /* an allowance takes at most 1/8 of what is free */
#define ALW_REFUSED_MS   5000  /* after a refusal, the exact path for this long */
#define ALW_IDLE_MS      10000 /* an allowance not charged this long is given back */
#define ALW_DRAIN_MS     2000  /* longest wait for pending commits before an EDQUOT */
#define ALW_FREE_TIMEOUT 2000  /* ms: one give-back request at allowance_close */
#define ALW_LIFE_MIN_S   10    /* bounds on an allowance's lifetime as we compute it */
#define ALW_LIFE_MAX_S   86400
#define CHARGE_BUCKETS   256
#define COMMIT_BATCH     64       /* commits sent in one request (pockityd takes 256) */
#define COMMIT_LINGER_MS 20       /* a commit waits this long for others to share its request */
#define LOCAL_PREFIX     "local#" /* local reservation ids: '#' is never in a server id */

/* A block of quota (bytes and objects) held from pockityd (POST
 * /v1/allowances) and spent by local charges. Guarded by allowances.lock. */
struct allowance {
    char id[ID_MAX + 1];
    uint64_t bytes_left, objects_left; /* what local charges have not taken */
    unsigned pending;                  /* charges not committed (answered) or released yet */
    int64_t ttl_ms;                    /* its lifetime on the server after a grant or commit */
    struct timespec expires;           /* monotonic, from the latest answer */
    struct timespec last_charge;       /* monotonic */
    bool retired;                      /* charged no more; given back once pending is 0 */
    bool dead;                         /* the server no longer knows it (404) */
    struct allowance *next;
};

/* A file charged to an allowance: the local reservation "local#N". */
struct charge {
    uint64_t n;
    struct allowance *a;
    uint64_t size;
    char *key;           /* relative to the prefix, for the commit */
    struct charge *next; /* in its bucket, or in the commit queue */
    /* Its commit, once queued: what landed, in which order, and the answer. */
    uint64_t landed;
    char etag[ETAG_MAX + 1];
    uint64_t seq;
    int rc;
};

/* A mount's allowances and the queue of its charges' commits. No request is
 * made while holding lock. */
struct allowances {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* signalled when a fetch ends and a charge is settled */
    struct allowance *list;     /* guarded by lock: every allowance held */
    struct allowance *current;  /* guarded by lock: the one charged, or NULL */
    bool fetching;              /* guarded by lock: a thread is asking for one */
    unsigned releasing;         /* guarded by lock: collected, not given back yet */
    bool refused;               /* guarded by lock: refused_at is meaningful */
    bool unsupported;           /* guarded by lock: pockityd has no /v1/allowances */
    struct timespec refused_at; /* guarded by lock; monotonic */
    uint64_t next_charge;       /* guarded by lock */
    struct charge *charges[CHARGE_BUCKETS]; /* guarded by lock, by n */

    /* Commits of local charges: queued by remote_commit in order, sent in
     * batches by the committer thread (started at the first). Guarded by
     * lock; cond is signalled when a batch is answered. */
    struct charge *cq, **cq_tail; /* the queue, oldest first, by seq */
    uint64_t cq_seq;              /* the latest seq given */
    size_t cq_len;
    uint64_t cq_sending; /* seq of the first charge in flight, or 0 */
    unsigned cq_waiters; /* threads waiting for commits: no lingering */
    bool cq_started, cq_stop;
    bool no_thread;         /* the committer could not start: callers send */
    bool single_only;       /* pockityd takes no batched commits */
    bool failing;           /* the latest commit found pockityd unreachable */
    pthread_cond_t cq_cond; /* the committer's: a first or a full batch queued, a waiter, stop */
    pthread_t committer;
};

static bool alw_usable(const struct allowance *a, struct timespec now)
{
    return !a->dead && !a->retired && ts_diff_ms(a->expires, now) > a->ttl_ms / 2;
}

/* The lifetime an answer's expires_at (unix seconds) leaves, in ms, within
 * bounds that keep a skewed clock from making it absurd. */
static int64_t alw_lifetime_ms(json_t *expires_at)
{
    int64_t s = (int64_t)json_integer_value(expires_at) - (int64_t)time(NULL);
    if (s < ALW_LIFE_MIN_S)
        s = ALW_LIFE_MIN_S;
    if (s > ALW_LIFE_MAX_S)
        s = ALW_LIFE_MAX_S;
    return s * 1000;
}

int allowance_local_id(const char *id, uint64_t *n)
{
    size_t plen = sizeof(LOCAL_PREFIX) - 1;
    if (!id || strncmp(id, LOCAL_PREFIX, plen) != 0)
        return 0;
    const char *p = id + plen;
    uint64_t v = 0;
    if (*p < '1' || *p > '9' || strlen(p) > 19)
        return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *n = v;
    return 1;
}

/* Unlink the charge n from the table. Caller holds the lock. */
static struct charge *charge_take(struct remote *r, uint64_t n)
{
    for (struct charge **p = &r->alw->charges[n % CHARGE_BUCKETS]; *p; p = &(*p)->next) {
        struct charge *c = *p;
        if (c->n == n) {
            *p = c->next;
            return c;
        }
    }
    return NULL;
}

static void charge_free(struct charge *c)
{
    if (c) {
        free(c->key);
        free(c);
    }
}

/* Unlink the allowances to give back now — retired, spent, idle for
 * ALW_IDLE_MS, or any with force — but never one with charges pending.
 * Dead and expired ones are freed here (the server holds nothing for them);
 * the rest is returned as a list for alw_release_list, and counts in
 * releasing until it has gone back. Caller holds the lock. */
static struct allowance *alw_collect(struct remote *r, struct timespec now, bool force)
{
    struct allowance *out = NULL;
    for (struct allowance **p = &r->alw->list; *p;) {
        struct allowance *a = *p;
        bool spent = a->bytes_left == 0 || a->objects_left == 0;
        bool idle = ts_diff_ms(now, a->last_charge) >= ALW_IDLE_MS;
        bool expired = ts_diff_ms(a->expires, now) <= 0;
        if (a->pending || !(force || a->retired || a->dead || spent || idle || expired)) {
            p = &a->next;
            continue;
        }
        *p = a->next;
        if (r->alw->current == a)
            r->alw->current = NULL;
        if (a->dead || expired) {
            free(a);
            continue;
        }
        a->next = out;
        out = a;
        r->alw->releasing++;
    }
    return out;
}

/* Give back and free each allowance of list: DELETE, one attempt each (what
 * a failed one holds expires on the server). */
static void alw_release_list(struct remote *r, struct allowance *list, long timeout_ms)
{
    while (list) {
        struct allowance *a = list;
        list = a->next;
        char path[128], err[512];
        long status;
        json_t *body = NULL;
        snprintf(path, sizeof(path), "/v1/allowances/%s", a->id);
        int rc = remote_exchange_timeout(r, "DELETE", path, NULL, timeout_ms, &status, &body, err,
                                         sizeof(err));
        if (rc)
            log_warn("cannot give back quota allowance '%s': %s (it expires on the server)", a->id,
                     err);
        else if (status >= 200 && status < 300)
            remote_usage_from_answer(r, body);
        else if (status != 404)
            remote_quota_errno(r, "quota allowance release", status, body);
        log_debug("quota allowance '%s' given back (%" PRIu64 " bytes, %" PRIu64 " objects left)",
                  a->id, a->bytes_left, a->objects_left);
        json_decref(body);
        free(a);
        pthread_mutex_lock(&r->alw->lock);
        r->alw->releasing--;
        pthread_cond_broadcast(&r->alw->cond);
        pthread_mutex_unlock(&r->alw->lock);
    }
}

/* What to ask for: min(64 MiB, free/8) bytes and min(256, free/8) objects of
 * what the latest totals leave free. False when that cannot hold a file of
 * size bytes, or no totals are known. */
static bool alw_size(struct remote *r, uint64_t size, uint64_t *bytes, uint64_t *objects)
{
    pthread_mutex_lock(&r->seen_lock);
    bool have = r->have_seen;
    struct remote_usage u = r->seen;
    pthread_mutex_unlock(&r->seen_lock);
    if (!have)
        return false;
    uint64_t taken_b = u.used_bytes + u.reserved_bytes,
             taken_o = u.used_objects + u.reserved_objects;
    if (taken_b < u.used_bytes || taken_o < u.used_objects) /* absurd totals: no batching */
        return false;
    uint64_t free_b = u.max_bytes > taken_b ? u.max_bytes - taken_b : 0;
    uint64_t free_o = u.max_objects > taken_o ? u.max_objects - taken_o : 0;
    *bytes = free_b / ALW_SHARE < ALW_MAX_BYTES ? free_b / ALW_SHARE : ALW_MAX_BYTES;
    *objects = free_o / ALW_SHARE < ALW_MAX_OBJECTS ? free_o / ALW_SHARE : ALW_MAX_OBJECTS;
    return *bytes > 0 && *bytes >= size && *objects >= 1;
}

/* POST /v1/allowances. Returns 0 with *out (not linked anywhere), -ENOSYS
 * (pockityd offers none), -EAGAIN (refused or a malformed answer), -EIO
 * (pockityd unreachable past write_wait_ms) or -ENOMEM. */
static int alw_fetch(struct remote *r, uint64_t bytes, uint64_t objects, struct allowance **out)
{
    json_t *req =
            json_pack("{s:I, s:I}", "bytes", (json_int_t)bytes, "objects", (json_int_t)objects);
    if (!req)
        return -ENOMEM;
    long status;
    json_t *body = NULL;
    int rc = remote_quota_ask(r, "quota allowance", "POST", "/v1/allowances", req, &status, &body);
    json_decref(req);
    if (rc)
        return rc;
    if (status == 201 || status == 200) {
        const char *id = remote_get_str(body, "id", 5, ID_MAX);
        json_t *exp = json_object_get(body, "expires_at");
        uint64_t gb, go;
        struct allowance *a = NULL;
        if (!id || strncmp(id, "alw_", 4) != 0 || !remote_id_valid(id) ||
            !remote_get_u64(body, "bytes", &gb) || !remote_get_u64(body, "objects", &go) ||
            !json_is_integer(exp) || json_integer_value(exp) <= 0) {
            /* what it may have granted expires on the server */
            log_error("quota allowance: pockityd at '%s' sent a malformed answer", r->base_url);
            rc = -EAGAIN;
        } else if (!(a = calloc(1, sizeof(*a)))) {
            rc = -ENOMEM;
        } else {
            struct timespec now = mono_now();
            snprintf(a->id, sizeof(a->id), "%s", id);
            a->bytes_left = gb < bytes ? gb : bytes;
            a->objects_left = go < objects ? go : objects;
            a->ttl_ms = alw_lifetime_ms(exp);
            a->expires = ts_add_ms(now, a->ttl_ms);
            a->last_charge = now;
            remote_usage_from_answer(r, body);
            log_debug("quota allowance '%s': %" PRIu64 " bytes, %" PRIu64 " objects", a->id,
                      a->bytes_left, a->objects_left);
            *out = a;
        }
    } else if (status == 404 || status == 405) {
        log_info("pockityd offers no quota allowances: one reservation per upload");
        rc = -ENOSYS;
    } else {
        remote_quota_errno(r, "quota allowance", status, body); /* logs; notes a hold */
        rc = -EAGAIN;
    }
    json_decref(body);
    return rc;
}

/* Charge a file to the current allowance, asking for a new one when needed.
 * Returns 0 with id_out, -EAGAIN (take the exact path), -EIO or -ENOMEM. */
int allowance_reserve(struct remote *r, const char *key, uint64_t size, char id_out[64])
{
    if (size > ALW_MAX_BYTES || atomic_load(&r->restriction) != RESTRICT_NONE ||
        atomic_load(&r->access) != remote_access_names[0] ||
        atomic_load(&r->prefix_len) + strlen(key) > KEY_MAX)
        return -EAGAIN; /* the server's answer is the one to give */
    struct charge *c = calloc(1, sizeof(*c));
    char *k = strdup(key);
    if (!c || !k) {
        free(c);
        free(k);
        return -ENOMEM;
    }
    c->key = k;
    c->size = size;
    bool fetched = false;
    int rc;
    pthread_mutex_lock(&r->alw->lock);
    for (;;) {
        struct timespec now = mono_now();
        struct allowance *a = r->alw->current;
        if (a && alw_usable(a, now) && a->bytes_left >= size && a->objects_left >= 1) {
            a->bytes_left -= size;
            a->objects_left--;
            a->pending++;
            a->last_charge = now;
            c->a = a;
            c->n = ++r->alw->next_charge;
            c->next = r->alw->charges[c->n % CHARGE_BUCKETS];
            r->alw->charges[c->n % CHARGE_BUCKETS] = c;
            snprintf(id_out, 64, LOCAL_PREFIX "%" PRIu64, c->n);
            rc = 0;
            break;
        }
        if (fetched) { /* a fresh allowance that cannot hold it: no loop */
            rc = -EAGAIN;
            break;
        }
        if (r->alw->fetching) {
            /* pockityd counts as down: fail at once, as a fetch of our own
             * would, instead of waiting out that fetch's try */
            if (remote_quota_down(r)) {
                rc = -EIO;
                break;
            }
            pthread_cond_wait(&r->alw->cond, &r->alw->lock);
            continue;
        }
        uint64_t want_b, want_o;
        if (r->alw->unsupported ||
            (r->alw->refused && ts_diff_ms(now, r->alw->refused_at) < ALW_REFUSED_MS) ||
            !alw_size(r, size, &want_b, &want_o)) {
            rc = -EAGAIN; /* no allowance could hold it: the current one stays */
            break;
        }
        if (a) { /* cannot serve this file: retire it, its leftover goes back */
            a->retired = true;
            r->alw->current = NULL;
        }
        /* Give back what can go first: the free figure counts it as reserved. */
        r->alw->fetching = true;
        struct allowance *gone = alw_collect(r, now, false);
        pthread_mutex_unlock(&r->alw->lock);
        alw_release_list(r, gone, r->timeout_ms);
        /* sized again: what was just given back is free now */
        struct allowance *fresh = NULL;
        int frc = alw_size(r, size, &want_b, &want_o) ? alw_fetch(r, want_b, want_o, &fresh)
                                                      : -ERANGE;
        pthread_mutex_lock(&r->alw->lock);
        r->alw->fetching = false;
        pthread_cond_broadcast(&r->alw->cond);
        if (frc == 0) {
            fresh->next = r->alw->list;
            r->alw->list = fresh;
            r->alw->current = fresh;
            fetched = true;
            continue;
        }
        if (frc == -ENOSYS)
            r->alw->unsupported = true;
        else if (frc != -ERANGE && frc != -EIO) { /* too big a file, or no answer */
            r->alw->refused = true;
            r->alw->refused_at = mono_now();
        }
        rc = frc == -EIO || frc == -ENOMEM ? frc : -EAGAIN;
        break;
    }
    pthread_mutex_unlock(&r->alw->lock);
    if (rc)
        charge_free(c);
    return rc;
}

/* Before answering EDQUOT: give back what allowances hold beyond their
 * pending charges, waiting up to ALW_DRAIN_MS for the commits of those
 * charges (sent at once) and for give-backs already under way. True when
 * something went or was going back (the exact path may now succeed). */
bool allowance_give_back(struct remote *r)
{
    struct allowances *s = r->alw;
    struct timespec deadline = ts_add_ms(mono_now(), ALW_DRAIN_MS);
    pthread_mutex_lock(&s->lock);
    bool any = s->releasing > 0;
    for (struct allowance *a = s->list; a; a = a->next) {
        if (a->dead || (!a->bytes_left && !a->objects_left))
            continue;
        a->retired = true;
        any = true;
    }
    s->current = NULL;
    s->cq_waiters++; /* the committer sends without lingering */
    pthread_cond_signal(&s->cq_cond);
    for (;;) {
        bool waiting = s->releasing > 0;
        for (struct allowance *a = s->list; a && !waiting; a = a->next)
            waiting = a->retired && !a->dead && a->pending && (a->bytes_left || a->objects_left);
        if (!any || !waiting || ts_diff_ms(deadline, mono_now()) <= 0)
            break;
        pthread_cond_timedwait(&s->cond, &s->lock, &deadline);
    }
    s->cq_waiters--;
    struct allowance *gone = any ? alw_collect(r, mono_now(), false) : NULL;
    pthread_mutex_unlock(&s->lock);
    alw_release_list(r, gone, r->timeout_ms);
    return any;
}

/* ---- commits of local charges ---- */

/* The request body committing the charges of batch (linked by next). */
static json_t *commit_body(struct charge *batch, size_t n)
{
    if (n == 1)
        return json_pack("{s:s, s:I, s:s}", "key", batch->key, "bytes", (json_int_t)batch->landed,
                         "etag", batch->etag);
    json_t *list = json_array();
    for (struct charge *c = batch; list && c; c = c->next)
        if (json_array_append_new(list, json_pack("{s:s, s:I, s:s}", "key", c->key, "bytes",
                                                  (json_int_t)c->landed, "etag", c->etag)) != 0) {
            json_decref(list);
            list = NULL;
        }
    return list ? json_pack("{s:o}", "objects", list) : NULL;
}

/* What a commit's answer says of its allowance. */
struct commit_answer {
    bool got;
    uint64_t left_b, left_o;
    int64_t life_ms;
};

/* One request committing the first n charges of batch to the allowance aid:
 * POST .../commit for one, .../commits for more. 0 or -errno. */
static int commit_request(struct remote *r, const char *aid, struct charge *batch, size_t n,
                          struct commit_answer *ans)
{
    json_t *body = NULL, *req = commit_body(batch, n);
    if (!req)
        return -ENOMEM; /* keys and ETags are valid utf-8 */
    char path[128];
    long status;
    snprintf(path, sizeof(path), "/v1/allowances/%s/%s", aid, n == 1 ? "commit" : "commits");
    int rc = remote_quota_call(r, "quota commit", "POST", path, req, &status, &body);
    if (rc == 0 && status >= 200 && status < 300) {
        remote_usage_from_answer(r, body);
        json_t *al = json_object_get(body, "allowance");
        json_t *exp = json_is_object(al) ? json_object_get(al, "expires_at") : NULL;
        ans->got = remote_get_u64(al, "bytes", &ans->left_b) &&
                   remote_get_u64(al, "objects", &ans->left_o) && json_is_integer(exp);
        if (ans->got)
            ans->life_ms = alw_lifetime_ms(exp);
    } else if (rc == 0) {
        rc = remote_quota_errno(r, "quota commit", status, body);
    }
    json_decref(req);
    json_decref(body);
    return rc;
}

/* Commit the n charges of batch, all of allowance a, in one request (none
 * when a is dead, or while stopping with pockityd unreachable). A batch
 * answered 404 or 400 goes again one by one, each with its own answer: a
 * pockityd without .../commits answers 404 too (then commits go one by one
 * from now on), and one bad entry must not sink the others. Sets each
 * charge's rc; they no longer count in a->pending. */
static void commit_send(struct remote *r, struct allowance *a, struct charge *batch, size_t n)
{
    struct allowances *s = r->alw;
    pthread_mutex_lock(&s->lock);
    char aid[ID_MAX + 1];
    memcpy(aid, a->id, sizeof(aid));
    int rc = a->dead ? -ENOENT : s->cq_stop && s->failing ? -EIO : 0;
    bool single = s->single_only;
    pthread_mutex_unlock(&s->lock);

    struct commit_answer ans = {0};
    if (!rc && n > 1 && !single) {
        rc = commit_request(r, aid, batch, n, &ans);
        single = rc == -ENOENT || rc == -EINVAL;
    } else if (!rc) {
        single = true;
    }
    if (!single) {
        for (struct charge *c = batch; c; c = c->next)
            c->rc = rc; /* answered as one, dead, or given up */
    } else {
        int batch_rc = rc, stop = 0;
        for (struct charge *c = batch; c; c = c->next) {
            /* after a 404 or an unreachable pockityd, the rest fares alike */
            c->rc = stop ? stop : commit_request(r, aid, c, 1, &ans);
            if (c->rc == -ENOENT || c->rc == -EIO)
                stop = c->rc;
        }
        if (n > 1 && batch_rc == -ENOENT && batch->rc == 0) {
            log_info("pockityd has no batched commits: quota commits go one by one");
            pthread_mutex_lock(&s->lock);
            s->single_only = true;
            pthread_mutex_unlock(&s->lock);
        }
    }

    pthread_mutex_lock(&s->lock);
    struct timespec now = mono_now();
    a->pending -= (unsigned)n;
    bool dead = false, failing = false;
    for (struct charge *c = batch; c; c = c->next) {
        dead = dead || c->rc == -ENOENT;
        failing = failing || c->rc == -EIO;
    }
    s->failing = failing;
    if (dead) { /* expired or released on the server: charge it no more */
        a->dead = true;
        if (s->current == a)
            s->current = NULL;
    }
    if (ans.got) {
        /* Ours is the cautious figure; the server's is lower only when a
         * file grew past its charge. */
        if (ans.left_b < a->bytes_left)
            a->bytes_left = ans.left_b;
        if (ans.left_o < a->objects_left)
            a->objects_left = ans.left_o;
        a->expires = ts_add_ms(now, ans.life_ms);
    }
    pthread_mutex_unlock(&s->lock);
}

/* The commit of a charge whose allowance is gone: reserved and committed
 * again on the exact path. */
static int commit_exact(struct remote *r, const struct charge *c)
{
    if (!*c->etag)
        return -EINVAL; /* a reservation's commit needs the ETag we could not send */
    char id[64];
    json_t *req = json_pack("{s:s, s:I}", "key", c->key, "bytes", (json_int_t)c->landed);
    int rc = req ? remote_exact_reserve(r, req, id) : -ENOMEM;
    json_decref(req);
    return rc ? rc : remote_commit_reservation(r, id, c->landed, c->etag);
}

/* After commit_send: what the server no longer knows goes the exact path,
 * what cannot be reported is logged; frees the charges of batch. Then
 * wakes the waiters and gives back what can go. */
static void commit_settle(struct remote *r, struct charge *batch)
{
    while (batch) {
        struct charge *c = batch;
        batch = c->next;
        int rc = c->rc == -ENOENT ? commit_exact(r, c) : c->rc;
        if (rc)
            log_warn("cannot report the upload of '%s' to the server: %s (reconciliation will)",
                     c->key, strerror(-rc));
        charge_free(c);
    }
    pthread_mutex_lock(&r->alw->lock);
    pthread_cond_broadcast(&r->alw->cond);
    struct allowance *gone = alw_collect(r, mono_now(), false);
    pthread_mutex_unlock(&r->alw->lock);
    alw_release_list(r, gone, r->timeout_ms);
}

/* The committer thread: sends the queue in order, each batch the longest
 * run (up to COMMIT_BATCH) of charges of one allowance at its head. A first
 * commit lingers up to COMMIT_LINGER_MS for others, so a burst of uploads
 * costs a request (and a wake-up of this thread) per batch, not per file;
 * waiters for commits and allowance_stop cut the wait short. Drains the
 * queue before it ends (without requests once pockityd proved unreachable). */
static void *committer_main(void *arg)
{
    struct remote *r = arg;
    struct allowances *s = r->alw;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->cq && !s->cq_stop)
            pthread_cond_wait(&s->cq_cond, &s->lock);
        if (!s->cq)
            break;
        struct timespec until = ts_add_ms(mono_now(), COMMIT_LINGER_MS);
        while (s->cq_len < COMMIT_BATCH && !s->cq_stop && !s->cq_waiters &&
               pthread_cond_timedwait(&s->cq_cond, &s->lock, &until) != ETIMEDOUT)
            ;
        struct charge *batch = s->cq, **end = &s->cq;
        struct allowance *a = batch->a; /* alive: its charges count in pending */
        size_t n = 0;
        while (*end && n < COMMIT_BATCH && (*end)->a == a) {
            end = &(*end)->next;
            n++;
        }
        s->cq = *end;
        s->cq_len -= n;
        if (!s->cq)
            s->cq_tail = &s->cq;
        *end = NULL;
        s->cq_sending = batch->seq;
        pthread_mutex_unlock(&s->lock);

        commit_send(r, a, batch, n);
        commit_settle(r, batch);

        pthread_mutex_lock(&s->lock);
        s->cq_sending = 0;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Whether every commit queued up to seq is answered. Caller holds the lock. */
static bool commits_done(const struct allowances *s, uint64_t seq)
{
    return (!s->cq || s->cq->seq > seq) && (!s->cq_sending || s->cq_sending > seq);
}

bool allowance_settle(struct remote *r, long timeout_ms)
{
    struct allowances *s = r->alw;
    if (!s)
        return true;
    struct timespec deadline = ts_add_ms(mono_now(), timeout_ms);
    pthread_mutex_lock(&s->lock);
    uint64_t seq = s->cq_seq;
    s->cq_waiters++;
    pthread_cond_signal(&s->cq_cond);
    /* while pockityd is unreachable, the queue's own retries are the wait */
    while (!commits_done(s, seq) && !s->failing && ts_diff_ms(deadline, mono_now()) > 0)
        pthread_cond_timedwait(&s->cond, &s->lock, &deadline);
    s->cq_waiters--;
    bool done = commits_done(s, seq);
    pthread_mutex_unlock(&s->lock);
    return done;
}

void allowance_stop(struct remote *r)
{
    struct allowances *s = r->alw;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    bool started = s->cq_started;
    s->cq_stop = true;
    pthread_cond_signal(&s->cq_cond);
    pthread_mutex_unlock(&s->lock);
    if (started)
        pthread_join(s->committer, NULL);
}

int allowance_commit(struct remote *r, uint64_t n, uint64_t size, const char *etag)
{
    struct allowances *s = r->alw;
    if (!s)
        return -ENOENT;
    /* An ETag that is not utf-8 (never seen from S3) would fail the whole
     * batch's JSON: the object is recorded without one. */
    json_t *e = json_string(etag);
    bool etag_ok = e != NULL;
    json_decref(e);
    pthread_mutex_lock(&s->lock);
    struct charge *c = charge_take(r, n);
    if (!c) {
        pthread_mutex_unlock(&s->lock);
        return -ENOENT;
    }
    struct allowance *a = c->a;
    if (a->dead) {
        a->pending--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        charge_free(c);
        return -ENOENT;
    }
    if (!s->cq_started && !s->cq_stop && !s->no_thread) {
        int err = pthread_create(&s->committer, NULL, committer_main, r);
        s->cq_started = err == 0;
        s->no_thread = err != 0;
        if (err)
            log_warn("cannot start the quota committer thread: %s (commits go one by one)",
                     strerror(err));
    }
    c->landed = size;
    snprintf(c->etag, sizeof(c->etag), "%s", etag_ok ? etag : "");
    c->seq = ++s->cq_seq;
    c->next = NULL;
    if (!s->cq_started || s->cq_stop) { /* no committer: send it now */
        pthread_mutex_unlock(&s->lock);
        commit_send(r, a, c, 1);
        commit_settle(r, c);
        return 0;
    }
    *s->cq_tail = c;
    s->cq_tail = &c->next;
    if (++s->cq_len == 1 || s->cq_len == COMMIT_BATCH)
        pthread_cond_signal(&s->cq_cond); /* a first to linger on, or a full batch */
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int allowance_release(struct remote *r, uint64_t n)
{
    if (!r->alw)
        return -ENOENT;
    pthread_mutex_lock(&r->alw->lock);
    struct charge *c = charge_take(r, n);
    if (c) {
        struct allowance *a = c->a;
        a->pending--;
        if (!a->dead) {
            a->bytes_left += c->size;
            a->objects_left++;
        }
        pthread_cond_broadcast(&r->alw->cond);
    }
    pthread_mutex_unlock(&r->alw->lock);
    charge_free(c);
    return c ? 0 : -ENOENT;
}

/* The renewal thread's look at the allowances, every ALW_SWEEP_MS. */
void allowance_sweep(struct remote *r)
{
    pthread_mutex_lock(&r->alw->lock);
    bool held = r->alw->list != NULL;
    if (r->alw->current && atomic_load(&r->restriction) != RESTRICT_NONE) {
        r->alw->current->retired = true;
        r->alw->current = NULL;
    }
    struct allowance *gone = alw_collect(r, mono_now(), false);
    pthread_mutex_unlock(&r->alw->lock);
    alw_release_list(r, gone, r->timeout_ms);
    if (held) {
        /* learn of a restriction or a new tier without a reservation */
        struct remote_usage u;
        remote_usage(r, &u);
    }
}

int allowance_open(struct remote *r)
{
    struct allowances *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_cond_init(&s->cq_cond, &ca);
    pthread_condattr_destroy(&ca);
    s->cq_tail = &s->cq;
    r->alw = s;
    return 0;
}

void allowance_close(struct remote *r)
{
    struct allowances *s = r->alw;
    if (!s)
        return;
    unsigned pending = 0;
    pthread_mutex_lock(&s->lock);
    struct allowance *gone = alw_collect(r, mono_now(), true);
    for (struct allowance *a = s->list; a; a = a->next)
        pending += a->pending;
    pthread_mutex_unlock(&s->lock);
    if (pending)
        log_info("%u quota charge(s) not committed: their allowance expires on the server",
                 pending);
    alw_release_list(r, gone, ALW_FREE_TIMEOUT);

    for (int i = 0; i < CHARGE_BUCKETS; i++)
        while (s->charges[i]) {
            struct charge *c = s->charges[i];
            s->charges[i] = c->next;
            charge_free(c);
        }
    while (s->list) {
        struct allowance *a = s->list;
        s->list = a->next;
        free(a);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->cq_cond);
    free(s);
    r->alw = NULL;
}
