/* remote_int: what the two halves of the mount's client of pockityd share —
 * struct remote, and the quota-call helpers of remote.c that allowance.c
 * uses. Private to remote.c and allowance.c. */
#ifndef POCKITYFS_REMOTE_INT_H
#define POCKITYFS_REMOTE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "remote.h"

#define POOL_IDLE_MAX 16
#define KEY_MAX       1024 /* bytes of an object key, the pocket's prefix included */
#define ETAG_MAX      128
#define ID_MAX        63 /* bytes of a reservation or allowance id */

struct allowances;

struct remote {
    char *base_url;    /* scheme://host[:port][/path], no trailing '/' */
    char *auth_header; /* "Authorization: Bearer KEY": secret, wiped on free */
    char *api_key;     /* points inside auth_header, to hide it from messages */
    char *ca_file;
    long timeout_ms;
    long write_wait_ms;

    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock;
    CURL *idle[POOL_IDLE_MAX]; /* guarded by pool_lock */
    int n_idle;                /* guarded by pool_lock */

    _Atomic(const char *) access; /* one of the static strings in remote_access_names */
    atomic_int restriction;       /* RESTRICT_*: the latest word of pockityd on writes */
    atomic_bool stopping;         /* remote_free has begun: abort transfers */
    /* A quota call gave up after write_wait_ms and none has been answered
     * since: while so, of the calls writers wait for (remote_quota_ask) one
     * at a time tries once, at most every QUOTA_PROBE_MS, the others fail
     * at once. */
    atomic_bool quota_down;
    atomic_bool quota_probing;
    atomic_llong quota_probe_at; /* monotonic ms before which none tries */
    atomic_ullong quota_answers; /* quota calls answered so far */

    /* Serialises session fetches, so a burst of ExpiredToken errors costs one. */
    pthread_mutex_t refresh_lock;
    struct timespec last_fetch;  /* guarded by refresh_lock; monotonic, of the last success */
    struct s3_client *last_into; /* guarded by refresh_lock; client it went into, or NULL */
    bool fetched;                /* guarded by refresh_lock */
    time_t expires;              /* guarded by refresh_lock; wall clock, of the latest session */
    struct timespec last_fail;   /* guarded by refresh_lock; monotonic, of the last failure */
    int fail_rc;                 /* guarded by refresh_lock; its error, 0 when none yet */

    /* The renewal thread's schedule. */
    pthread_mutex_t state_lock;
    pthread_cond_t state_cond; /* signalled on stop and on every new session */
    struct timespec renew_at;  /* guarded by state_lock; monotonic */
    time_t renew_wall;         /* guarded by state_lock; the same on the wall clock, which
                                  goes on while the machine sleeps (monotonic does not) */
    struct s3_client *client;  /* guarded by state_lock; NULL until renewal starts */
    bool thread_started;       /* guarded by state_lock */
    pthread_t thread;

    pthread_mutex_t usage_lock;
    struct remote_usage usage;   /* guarded by usage_lock */
    bool have_usage;             /* guarded by usage_lock */
    struct timespec usage_at;    /* guarded by usage_lock; monotonic, of the last answer */
    struct timespec usage_retry; /* guarded by usage_lock; no new attempt before this */

    /* The latest totals of any answer, to size allowances. seen_lock is a
     * leaf: never held across a request (usage_lock is, in remote_usage). */
    pthread_mutex_t seen_lock;
    struct remote_usage seen; /* guarded by seen_lock */
    bool have_seen;           /* guarded by seen_lock */

    /* Quota allowances (remote_options.quota_batch): see allowance.h. */
    bool batch;               /* set at open, read-only after */
    atomic_size_t prefix_len; /* of the session's key prefix */
    struct allowances *alw;   /* with batch, from open to free */
};

/* The access strings, "rw", "ro" and "read-delete": struct remote's access
 * points at one of them. */
extern const char *const remote_access_names[];

enum {
    RESTRICT_NONE,
    RESTRICT_OVER_QUOTA, /* writes fail with EDQUOT */
    RESTRICT_HELD        /* payment past due or another hold: EROFS */
};

static inline struct timespec mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static inline struct timespec ts_add_ms(struct timespec t, int64_t ms)
{
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    } else if (t.tv_nsec < 0) {
        t.tv_sec--;
        t.tv_nsec += 1000000000L;
    }
    return t;
}

/* a - b in milliseconds. */
static inline int64_t ts_diff_ms(struct timespec a, struct timespec b)
{
    return (int64_t)(a.tv_sec - b.tv_sec) * 1000 + (a.tv_nsec - b.tv_nsec) / 1000000L;
}

/* Send a quota call, retrying with backoff while pockityd is unreachable or
 * unavailable, up to write_wait_ms in all. Returns 0 with *status (never a
 * retryable one) and *out (may be NULL; the caller owns it), or -EIO. For
 * what goes on in the background (commits, releases, deletion reports). */
int remote_quota_call(struct remote *r, const char *what, const char *method, const char *path,
                      json_t *req_body, long *status, json_t **out);
/* The same for a call a writer waits for (a reservation, an allowance):
 * once a call has given up on pockityd, these try once (one at a time, at
 * most every QUOTA_PROBE_MS, the others failing at once) until pockityd
 * answers again. */
int remote_quota_ask(struct remote *r, const char *what, const char *method, const char *path,
                     json_t *req_body, long *status, json_t **out);
/* The errno of a quota call's non-2xx answer, logging the server's reason. */
int remote_quota_errno(struct remote *r, const char *what, long status, json_t *body);
/* One exchange, no retry, with its own timeout. Returns 0 with *status and
 * *out (may be NULL), or -errno with err filled. */
int remote_exchange_timeout(struct remote *r, const char *method, const char *path,
                            json_t *req_body, long timeout_ms, long *status, json_t **out,
                            char *err, size_t errlen);
/* Take the totals (and restriction) of a 2xx answer, when it carries them. */
void remote_usage_from_answer(struct remote *r, json_t *body);
/* POST /v1/reservations/{id}/commit, at once (remote_commit first waits
 * for the commits queued). -EINVAL for an etag that is not utf-8. */
int remote_commit_reservation(struct remote *r, const char *id, uint64_t size, const char *etag);
/* POST /v1/reservations with req ({key, bytes}): id_out on success. */
int remote_exact_reserve(struct remote *r, json_t *req, char id_out[64]);
/* Field readers for what pockityd sends: a string of min..max bytes (NULL
 * otherwise), a non-negative integer. */
const char *remote_get_str(json_t *obj, const char *name, size_t min, size_t max);
bool remote_get_u64(json_t *obj, const char *name, uint64_t *out);
/* Whether id has the shape of a server id (safe in a URL path). */
bool remote_id_valid(const char *id);

#endif
