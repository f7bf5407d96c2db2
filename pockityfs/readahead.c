/* readahead: a pool of threads doing ranged GETs ahead of sequential
 * readers; each fetch lands in its cfile under the owner's lock. */
#include "readahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "log.h"

struct job {
    struct job *next;
    uint64_t ino, cf_id, gen;
    uint64_t start, len;
    char *key;
    char etag[S3_ETAG_MAX];
};

struct readahead {
    struct fs *fs;
    pthread_mutex_t lock; /* guards the queue and stopping */
    pthread_cond_t cond;
    struct job *head, *tail;
    int stopping;
    pthread_t threads[RA_WORKERS];
    int n_threads;
    struct worker { /* each worker's buffer: no allocation per fetch */
        struct readahead *ra;
        char *buf; /* RA_CHUNK bytes */
    } workers[RA_WORKERS];
};

/* Fetch j into buf (RA_CHUNK bytes, the worker's own) and land it. */
static void run(struct readahead *ra, struct job *j, char *buf)
{
    struct fs *fs = ra->fs;
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = buf, .len = j->len};
    struct s3_sink sink = s3_sink_mem(&m);
    struct s3_head head = {0};
    uint64_t got = 0;
    int st = s3_get_object(fs->s3, j->key, j->start, j->len, &sink, &head, &got);
    int ok = st == S3_OK && got == j->len;
    if (st != S3_OK && st != S3_ERR_NOT_FOUND)
        log_debug("read-ahead of '%s' at %llu: %s", j->key, (unsigned long long)j->start,
                  s3_strerror(st));
    snprintf(etag, sizeof(etag), "%s", head.etag);
    s3_head_release(&head);
    struct inode *in = inode_get(&fs->inodes, j->ino);
    if (in) {
        pthread_mutex_lock(&in->lock);
        if (in->cf && in->cf->id == j->cf_id)
            cfile_ra_land(&fs->cache, in->cf, j->gen, j->start, j->len, ok ? buf : NULL, etag);
        pthread_mutex_unlock(&in->lock);
        inode_put(&fs->inodes, in);
    }
    cache_trim(&fs->cache);
}

static void *worker(void *arg)
{
    struct worker *w = arg;
    struct readahead *ra = w->ra;
    pthread_mutex_lock(&ra->lock);
    for (;;) {
        while (!ra->head && !ra->stopping)
            pthread_cond_wait(&ra->cond, &ra->lock);
        if (ra->stopping)
            break;
        struct job *j = ra->head;
        ra->head = j->next;
        if (!ra->head)
            ra->tail = NULL;
        pthread_mutex_unlock(&ra->lock);
        run(ra, j, w->buf);
        free(j->key);
        free(j);
        pthread_mutex_lock(&ra->lock);
    }
    pthread_mutex_unlock(&ra->lock);
    return NULL;
}

int readahead_start(struct fs *fs, struct readahead **out)
{
    struct readahead *ra = calloc(1, sizeof(*ra));
    if (!ra)
        return -ENOMEM;
    ra->fs = fs;
    pthread_mutex_init(&ra->lock, NULL);
    pthread_cond_init(&ra->cond, NULL);
    for (int i = 0; i < RA_WORKERS; i++) {
        struct worker *w = &ra->workers[ra->n_threads];
        w->ra = ra;
        if (!w->buf && !(w->buf = malloc(RA_CHUNK)))
            break;
        if (pthread_create(&ra->threads[ra->n_threads], NULL, worker, w) == 0)
            ra->n_threads++;
    }
    if (!ra->n_threads) {
        readahead_free(ra);
        return -EAGAIN;
    }
    *out = ra;
    return 0;
}

void readahead_free(struct readahead *ra)
{
    if (!ra)
        return;
    pthread_mutex_lock(&ra->lock);
    ra->stopping = 1;
    pthread_cond_broadcast(&ra->cond);
    pthread_mutex_unlock(&ra->lock);
    for (int i = 0; i < ra->n_threads; i++)
        pthread_join(ra->threads[i], NULL);
    for (int i = 0; i < RA_WORKERS; i++)
        free(ra->workers[i].buf);
    while (ra->head) {
        struct job *j = ra->head;
        ra->head = j->next;
        free(j->key);
        free(j);
    }
    pthread_mutex_destroy(&ra->lock);
    pthread_cond_destroy(&ra->cond);
    free(ra);
}

int readahead_queue(struct readahead *ra, struct cfile *cf, const char *key, uint64_t start,
                    uint64_t len)
{
    if (len > RA_CHUNK)
        return -EINVAL;
    struct job *j = calloc(1, sizeof(*j));
    if (!j || !(j->key = strdup(key))) {
        free(j);
        return -ENOMEM;
    }
    j->ino = cf->owner->ino;
    j->cf_id = cf->id;
    j->gen = cf->gen;
    j->start = start;
    j->len = len;
    snprintf(j->etag, sizeof(j->etag), "%s", cf->etag);
    pthread_mutex_lock(&ra->lock);
    if (ra->tail)
        ra->tail->next = j;
    else
        ra->head = j;
    ra->tail = j;
    pthread_cond_signal(&ra->cond);
    pthread_mutex_unlock(&ra->lock);
    return 0;
}

void readahead_cancel(struct readahead *ra, struct cfile *cf)
{
    if (!ra || !cf->inflight)
        return;
    struct job *dropped = NULL;
    pthread_mutex_lock(&ra->lock);
    struct job **p = &ra->head, *prev = NULL;
    while (*p) {
        struct job *j = *p;
        if (j->cf_id == cf->id) {
            *p = j->next;
            j->next = dropped;
            dropped = j;
            continue;
        }
        prev = j;
        p = &j->next;
    }
    ra->tail = prev;
    pthread_mutex_unlock(&ra->lock);
    while (dropped) {
        struct job *j = dropped;
        dropped = j->next;
        cfile_ra_land(&ra->fs->cache, cf, j->gen, j->start, j->len, NULL, "");
        free(j->key);
        free(j);
    }
}
