/* stream: a multipart upload fed while its file is written. Its workers
 * are detached threads: the owner either finishes the stream (waiting for
 * them) or cancels it (the last worker out aborts the upload and frees). */
#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "meta.h"
#include "upload.h"

#define WORKERS_MAX 16

struct stream {
    struct streams *set;
    struct s3_client *s3;
    char key[S3_MAX_KEY_LEN + 1];
    struct meta_set meta; /* what the upload is created with */
    int fd;               /* owned */
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* workers wait for parts; finish waits for workers */
    char *upload_id;      /* NULL until created */
    int creating;         /* a worker is creating the upload */
    uint64_t size;        /* bytes written so far */
    int final;            /* size is the whole content: send the last part too */
    int cancelled;
    int status;                 /* S3_OK, or the first failure */
    int next;                   /* the next part to send (1-based) */
    char (*etags)[S3_ETAG_MAX]; /* of parts [1, next) */
    int etags_cap;
    int workers; /* alive */
};

void streams_init(struct streams *set, struct journal *journal)
{
    set->journal = journal;
    pthread_mutex_init(&set->lock, NULL);
    pthread_cond_init(&set->idle, NULL);
    set->live = 0;
}

int streams_release(struct streams *set, long timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&set->lock);
    while (set->live > 0)
        if (pthread_cond_timedwait(&set->idle, &set->lock, &until) == ETIMEDOUT)
            break;
    int live = set->live;
    pthread_mutex_unlock(&set->lock);
    if (live > 0) {
        log_warn("%d abandoned uploads still being aborted at exit", live);
        return live; /* their workers still use set */
    }
    pthread_mutex_destroy(&set->lock);
    pthread_cond_destroy(&set->idle);
    return 0;
}

/* Abort the upload unless completed, forget it and free s. */
static void stream_free(struct stream *s, int completed)
{
    struct streams *set = s->set;
    if (s->upload_id) {
        int st = completed ? S3_OK : s3_multipart_abort(s->s3, s->key, s->upload_id);
        /* an abort that failed stays journaled: the next start tries again */
        if (set->journal && (st == S3_OK || st == S3_ERR_NO_UPLOAD))
            journal_upload_remove(set->journal, s->upload_id);
    }
    close(s->fd);
    free(s->upload_id);
    free(s->etags);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
    pthread_mutex_lock(&set->lock);
    if (--set->live == 0)
        pthread_cond_broadcast(&set->idle);
    pthread_mutex_unlock(&set->lock);
}

/* The length of part n as things stand: a full part, the last one once
 * the size is final, or 0 when it is not ready (or there is none). */
static uint64_t part_len(const struct stream *s, int n)
{
    uint64_t off = (uint64_t)(n - 1) * STREAM_PART;
    if (off + STREAM_PART <= s->size)
        return STREAM_PART;
    return s->final && off < s->size ? s->size - off : 0;
}

/* Room for part n's ETag. Caller holds s->lock. */
static int etag_room(struct stream *s, int n)
{
    if (n <= s->etags_cap)
        return 0;
    int cap = s->etags_cap ? s->etags_cap * 2 : 64;
    void *p = realloc(s->etags, (size_t)cap * sizeof(*s->etags));
    if (!p)
        return -1;
    s->etags = p;
    s->etags_cap = cap;
    return 0;
}

static void fail(struct stream *s, int st)
{
    if (s->status == S3_OK)
        s->status = st;
    pthread_cond_broadcast(&s->cond);
}

/* Create the upload (one worker does, unlocking meanwhile). */
static void create(struct stream *s)
{
    s->creating = 1;
    pthread_mutex_unlock(&s->lock);
    struct s3_put_opts opts = meta_put_opts(&s->meta);
    char *id = NULL;
    int st = s3_multipart_create(s->s3, s->key, &opts, &id);
    if (st == S3_OK && s->set->journal)
        journal_upload_add(s->set->journal, s->key, id);
    pthread_mutex_lock(&s->lock);
    s->creating = 0;
    if (st == S3_OK) {
        s->upload_id = id;
        log_debug("streaming '%s' as it is written (upload %s)", s->key, id);
    } else {
        log_warn("cannot start the streamed upload of '%s': %s %s", s->key, s3_strerror(st),
                 s3_last_error_detail());
        fail(s, st);
    }
    pthread_cond_broadcast(&s->cond);
}

/* Send part n of len bytes (unlocking meanwhile). */
static void send_part(struct stream *s, int n, uint64_t len)
{
    pthread_mutex_unlock(&s->lock);
    struct s3_fd f = {.fd = s->fd, .base = (uint64_t)(n - 1) * STREAM_PART};
    struct s3_source src = s3_source_fd(&f, len);
    char etag[S3_ETAG_MAX];
    int st = s3_multipart_upload_part(s->s3, s->key, s->upload_id, n, &src, etag);
    pthread_mutex_lock(&s->lock);
    if (st == S3_OK) {
        memcpy(s->etags[n - 1], etag, S3_ETAG_MAX);
    } else {
        if (!s->cancelled)
            log_warn("cannot send part %d of '%s': %s %s", n, s->key, s3_strerror(st),
                     s3_last_error_detail());
        fail(s, st);
    }
}

/* A worker stays until the stream is cancelled or finished, even after a
 * failure (it then waits idle): so there is always a last worker out to
 * free a cancelled stream, and cancel never does network work itself. */
static void *worker(void *arg)
{
    struct stream *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->cancelled) {
        if (s->status != S3_OK) {
            if (s->final)
                break;
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        if (!s->upload_id) {
            if (s->creating)
                pthread_cond_wait(&s->cond, &s->lock);
            else
                create(s);
            continue;
        }
        uint64_t len = part_len(s, s->next);
        if (len == 0) {
            if (s->final)
                break; /* nothing left to send */
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        if (etag_room(s, s->next) != 0) {
            fail(s, S3_ERR_NOMEM);
            continue;
        }
        send_part(s, s->next++, len);
    }
    int last = --s->workers == 0;
    int abandon = last && s->cancelled;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (abandon)
        stream_free(s, 0);
    return NULL;
}

struct stream *stream_start(struct streams *set, struct s3_client *s3, const char *key, int fd,
                            const struct stat *st, uint64_t size, int workers)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->fd = dup(fd);
    if (s->fd < 0) {
        free(s);
        return NULL;
    }
    s->set = set;
    s->s3 = s3;
    snprintf(s->key, sizeof(s->key), "%s", key);
    meta_from_stat(st, &s->meta);
    s->size = size;
    s->next = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_lock(&set->lock);
    set->live++;
    pthread_mutex_unlock(&set->lock);
    if (workers > WORKERS_MAX)
        workers = WORKERS_MAX;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < workers; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker, s) == 0)
            s->workers++;
    }
    int none = s->workers == 0;
    pthread_mutex_unlock(&s->lock);
    pthread_attr_destroy(&attr);
    if (none) {
        stream_free(s, 0);
        return NULL;
    }
    return s;
}

int stream_grow(struct stream *s, const char *key, uint64_t size)
{
    pthread_mutex_lock(&s->lock);
    int ok = s->status == S3_OK && size <= STREAM_MAX && strcmp(s->key, key) == 0;
    if (ok && size / STREAM_PART > s->size / STREAM_PART)
        pthread_cond_broadcast(&s->cond); /* a part is full */
    if (size > s->size)
        s->size = size;
    pthread_mutex_unlock(&s->lock);
    return ok ? 0 : -1;
}

void stream_cancel(struct stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->cancelled = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock); /* the last worker out frees s */
}

int stream_finish(struct stream *s, const char *key, uint64_t size, const struct stat *st,
                  char etag[S3_ETAG_MAX], int *meta_stale)
{
    pthread_mutex_lock(&s->lock);
    if (strcmp(s->key, key) != 0 || size < s->size || size > STREAM_MAX) {
        pthread_mutex_unlock(&s->lock);
        stream_cancel(s);
        return -EAGAIN;
    }
    s->size = size;
    s->final = 1;
    pthread_cond_broadcast(&s->cond);
    while (s->workers > 0)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    /* the workers are gone: s is this thread's alone */
    int rc = -EAGAIN;
    if (s->status == S3_ERR_TIMEOUT) {
        rc = -ETIMEDOUT; /* S3 is silent: an upload from the start would wait again */
    } else if (s->status == S3_OK && s->upload_id) {
        int status =
                upload_complete(s->s3, s->key, s->upload_id, s->next - 1, s->etags, size, etag);
        if (status == S3_OK) {
            rc = 0;
            struct meta_set now;
            meta_from_stat(st, &now);
            *meta_stale = strcmp(now.mode, s->meta.mode) || strcmp(now.uid, s->meta.uid) ||
                          strcmp(now.gid, s->meta.gid) || strcmp(now.mtime, s->meta.mtime);
        } else {
            log_error("cannot complete the upload of '%s': %s %s", s->key, s3_strerror(status),
                      s3_last_error_detail());
            rc = -s3_status_errno(status);
        }
    }
    stream_free(s, rc == 0);
    return rc;
}
