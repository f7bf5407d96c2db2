/* readahead: a pool of threads doing ranged GETs ahead of sequential
 * readers into a fixed set of buffers; each fetch lands in its cfile under
 * the owner's lock, or its buffer stays held by the cfile. */
#include "readahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs.h"
#include "log.h"

_Static_assert(RA_BUFS > RA_WORKERS, "a worker must always find a buffer it can take");

struct job {
    struct job *next;
    uint64_t ino, cf_id, gen;
    uint64_t start, len;
    char *key;
    char etag[S3_ETAG_MAX];
};

/* One chunk of memory: free, filling (a worker's GET), or held by a cfile. */
struct buffer {
    char *data; /* RA_CHUNK bytes */
    int filling;
    int held;
    uint64_t ino, cf_id; /* the holder */
    uint64_t seq;        /* when it was kept: the oldest goes back first */
};

struct readahead {
    struct fs *fs;
    pthread_mutex_t lock; /* guards the queue, stopping and the buffers' states */
    pthread_cond_t cond;
    struct job *head, *tail;
    int stopping;
    pthread_t threads[RA_WORKERS];
    int n_threads;
    struct buffer bufs[RA_BUFS];
    uint64_t seq;
};

/* A buffer to fetch into: a free one, else the one held longest, taken
 * back from its cfile (whose reader then fetches it again if it still
 * needs it). Called with no lock held. */
static struct buffer *take(struct readahead *ra)
{
    for (;;) {
        struct buffer *v = NULL;
        pthread_mutex_lock(&ra->lock);
        for (int i = 0; i < RA_BUFS; i++) {
            struct buffer *b = &ra->bufs[i];
            if (b->filling)
                continue;
            if (!b->held) {
                b->filling = 1;
                pthread_mutex_unlock(&ra->lock);
                return b;
            }
            if (!v || b->seq < v->seq)
                v = b;
        }
        uint64_t ino = v->ino, cf_id = v->cf_id, seq = v->seq;
        pthread_mutex_unlock(&ra->lock);
        /* the owner's lock before ours, as readers giving back take them;
         * then, if the buffer is still that holding, it is ours (a cfile
         * being freed, already out of the table, gives it back by its id) */
        struct inode *in = inode_get(&ra->fs->inodes, ino);
        if (in)
            pthread_mutex_lock(&in->lock);
        pthread_mutex_lock(&ra->lock);
        int mine = v->held && !v->filling && v->seq == seq;
        if (mine) {
            v->held = 0;
            v->filling = 1;
        }
        pthread_mutex_unlock(&ra->lock);
        if (in) {
            if (mine && in->cf && in->cf->id == cf_id)
                cfile_ra_drop(in->cf, v->data);
            pthread_mutex_unlock(&in->lock);
            inode_put(&ra->fs->inodes, in);
        }
        if (mine) {
            log_debug("read-ahead took back a chunk held for inode %llu", (unsigned long long)ino);
            return v;
        }
    }
}

void readahead_give_back(struct readahead *ra, uint64_t cf_id, const char *buf)
{
    pthread_mutex_lock(&ra->lock);
    for (int i = 0; i < RA_BUFS; i++) {
        struct buffer *b = &ra->bufs[i];
        if (b->data == buf && b->held && b->cf_id == cf_id)
            b->held = 0;
    }
    pthread_mutex_unlock(&ra->lock);
}

/* Fetch j into a buffer and land it, or leave the buffer held. */
static void run(struct readahead *ra, struct job *j)
{
    struct fs *fs = ra->fs;
    struct buffer *b = take(ra);
    log_debug("fetching '%s' bytes %llu-%llu ahead", j->key, (unsigned long long)j->start,
              (unsigned long long)(j->start + j->len - 1));
    char etag[S3_ETAG_MAX];
    struct s3_mem m = {.data = b->data, .len = j->len};
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
    int kept = 0;
    struct inode *in = inode_get(&fs->inodes, j->ino);
    if (in) {
        pthread_mutex_lock(&in->lock);
        if (in->cf && in->cf->id == j->cf_id) {
            int err = ok ? 0 : st != S3_OK ? -s3_status_errno(st) : -EIO;
            kept = cfile_ra_land(&fs->cache, in->cf, j->gen, j->start, j->len, ok ? b->data : NULL,
                                 etag, err);
        }
    }
    pthread_mutex_lock(&ra->lock); /* still under the owner's lock: a give-back waits */
    b->filling = 0;
    b->held = kept;
    if (kept) {
        b->ino = j->ino;
        b->cf_id = j->cf_id;
        b->seq = ++ra->seq;
    }
    pthread_mutex_unlock(&ra->lock);
    if (in) {
        pthread_mutex_unlock(&in->lock);
        inode_put(&fs->inodes, in);
    }
    cache_trim(&fs->cache);
}

static void *worker(void *arg)
{
    struct readahead *ra = arg;
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
        run(ra, j);
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
    for (int i = 0; i < RA_BUFS; i++) {
        /* not resident until touched by a fetch */
        if (!(ra->bufs[i].data = malloc(RA_CHUNK))) {
            readahead_free(ra);
            return -ENOMEM;
        }
    }
    for (int i = 0; i < RA_WORKERS; i++)
        if (pthread_create(&ra->threads[ra->n_threads], NULL, worker, ra) == 0)
            ra->n_threads++;
    if (!ra->n_threads) {
        readahead_free(ra);
        return -EAGAIN;
    }
    *out = ra;
    return 0;
}

void readahead_stop(struct readahead *ra)
{
    if (!ra)
        return;
    pthread_mutex_lock(&ra->lock);
    ra->stopping = 1;
    pthread_cond_broadcast(&ra->cond);
    pthread_mutex_unlock(&ra->lock);
    for (int i = 0; i < ra->n_threads; i++)
        pthread_join(ra->threads[i], NULL);
    ra->n_threads = 0;
    while (ra->head) {
        struct job *j = ra->head;
        ra->head = j->next;
        free(j->key);
        free(j);
    }
    ra->tail = NULL;
}

void readahead_free(struct readahead *ra)
{
    if (!ra)
        return;
    readahead_stop(ra);
    for (int i = 0; i < RA_BUFS; i++)
        free(ra->bufs[i].data);
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
        cfile_ra_land(&ra->fs->cache, cf, j->gen, j->start, j->len, NULL, "", 0);
        free(j->key);
        free(j);
    }
}
