/* flusher: the workers that upload the files close queued; and one thread
 * that uploads, in the background, journaled files whose upload failed and
 * files held open with data dirty for too long, and writes the journal's
 * queued removals on each tick. */
#include "flusher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"
#include "ops.h"

#define TICK_MS 500

struct watched {
    uint64_t ino;
    double next_try; /* monotonic; 0: as soon as due */
    double backoff;  /* seconds before the next retry after a failure */
    int restricted;  /* the last failure was the pocket's restriction */
    int unreachable; /* the last failure was pockityd's silence */
    int s3_silent;   /* the last failure was S3's (s3_client_silent) */
};

struct flusher {
    struct fs *fs;
    double upload_after;
    pthread_t thread;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    int stopping;
    struct watched *v;
    size_t n, cap;
    /* the upload queue: a ring of inode numbers, each due FLUSHER_SETTLE
     * after it was queued (so in order of due time) */
    pthread_t workers[FLUSHER_WORKERS];
    int n_workers;
    pthread_cond_t work; /* something queued, or stopping */
    pthread_cond_t due;  /* (CLOCK_MONOTONIC) for the one worker timing the head */
    int timing;          /* a worker waits on due for the head's time */
    pthread_cond_t idle; /* busy dropped to 0 */
    struct queued {
        uint64_t ino;
        double due; /* monotonic */
    } * q;
    size_t q_head, q_len, q_cap;
    int hurry;         /* flusher_wait callers: what is queued is due at once */
    size_t busy;       /* queued plus running */
    uint64_t failures; /* uploads of the queue that failed */
    int draining;      /* workers exit once the queue is empty */
    /* releases left for a tick (flusher_release_later), a reference each */
    struct inode **released;
    size_t n_released, cap_released;
};

int flusher_release_later(struct flusher *f, struct inode *in)
{
    pthread_mutex_lock(&f->lock);
    if (f->n_released == f->cap_released) {
        size_t nc = f->cap_released ? f->cap_released * 2 : 64;
        struct inode **v = realloc(f->released, nc * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&f->lock);
            return -ENOMEM;
        }
        f->released = v;
        f->cap_released = nc;
    }
    f->released[f->n_released++] = in;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

/* Finish the releases whose inode's lock is free (all of them, waiting,
 * when wait). Called without f->lock. */
static void finish_releases(struct flusher *f, int wait)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->n_released;
    struct inode **v = f->released;
    f->released = NULL;
    f->n_released = f->cap_released = 0;
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; i < n; i++) {
        struct inode *in = v[i];
        if (wait)
            pthread_mutex_lock(&in->lock);
        else if (pthread_mutex_trylock(&in->lock) != 0) {
            if (flusher_release_later(f, in) == 0)
                continue;
            pthread_mutex_lock(&in->lock);
        }
        ops_release_locked(f->fs, in);
        pthread_mutex_unlock(&in->lock);
        inode_put(&f->fs->inodes, in);
    }
    free(v);
    if (n)
        cache_trim(&f->fs->cache);
}

void flusher_queue(struct flusher *f, struct inode *in)
{
    if (!f || !in->cf || in->cf->queued)
        return;
    pthread_mutex_lock(&f->lock);
    if (f->q_len == f->q_cap) {
        size_t nc = f->q_cap ? f->q_cap * 2 : 256;
        struct queued *q = malloc(nc * sizeof(*q));
        if (q) {
            for (size_t i = 0; i < f->q_len; i++)
                q[i] = f->q[(f->q_head + i) % f->q_cap];
            free(f->q);
            f->q = q;
            f->q_head = 0;
            f->q_cap = nc;
        }
    }
    if (f->q_len < f->q_cap) {
        f->q[(f->q_head + f->q_len) % f->q_cap] =
                (struct queued){in->ino, inode_now() + FLUSHER_SETTLE};
        f->q_len++;
        f->busy++;
        in->cf->queued = 1;
        pthread_cond_signal(&f->work);
    }
    pthread_mutex_unlock(&f->lock);
    if (!in->cf->queued)
        flusher_note(f, in); /* out of memory: the retry list uploads it */
}

/* Queue, for the workers, the files the flusher watches that a close left
 * journaled without queuing them (cf->deferred, also while another holder
 * keeps them open), and with failed the closed ones whose upload failed
 * (waiting for their retry): flusher_wait tries them all now, and counts
 * their failures; the end of the mount sends the deferred ones. */
static void queue_closed(struct flusher *f, int failed)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->n;
    struct watched *v = n ? malloc(n * sizeof(*v)) : NULL;
    if (v)
        memcpy(v, f->v, n * sizeof(*v));
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; v && i < n; i++) {
        struct inode *in = inode_get(&f->fs->inodes, v[i].ino);
        if (!in)
            continue;
        pthread_mutex_lock(&in->lock);
        struct cfile *cf = in->cf;
        if (cf && cf->dirty && cf->journaled &&
            (cf->deferred || (failed && v[i].next_try > 0 && in->opens == 0)))
            flusher_queue(f, in);
        pthread_mutex_unlock(&in->lock);
        inode_put(&f->fs->inodes, in);
    }
    free(v);
}

int flusher_wait(struct flusher *f)
{
    if (!f)
        return 0;
    pthread_mutex_lock(&f->lock);
    uint64_t failures = f->failures;
    pthread_mutex_unlock(&f->lock);
    finish_releases(f, 0); /* a last release may queue its file */
    queue_closed(f, 1);
    pthread_mutex_lock(&f->lock);
    f->hurry++;
    pthread_cond_broadcast(&f->work);
    pthread_cond_broadcast(&f->due);
    while (f->busy > 0)
        pthread_cond_wait(&f->idle, &f->lock);
    f->hurry--;
    int rc = f->failures != failures ? -EIO : 0;
    pthread_mutex_unlock(&f->lock);
    journal_settle(f->fs->journal, NULL); /* the rows of what is uploaded go too */
    finish_releases(f, 0);                /* and the descriptors of uploaded files */
    return rc;
}

/* Upload the file numbered ino if it still needs it. Returns 0 or -errno. */
static int upload_queued(struct fs *fs, uint64_t ino)
{
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in)
        return 0;
    char *entered = NULL;
    ops_enter_inode(fs, in, 1, &entered); /* out of memory: goes on regardless */
    int rc = 0;
    pthread_mutex_lock(&in->lock);
    if (in->cf) {
        in->cf->queued = 0;
        if (in->cf->dirty)
            rc = ops_sync(fs, in);
        else
            ops_resv_drop(fs, in->cf);
    }
    pthread_mutex_unlock(&in->lock);
    ops_leave(fs, entered);
    inode_put(&fs->inodes, in);
    return rc;
}

static void *worker_main(void *arg)
{
    struct flusher *f = arg;
    double delay = 0;
    const char *d = getenv("POCKITYFS_UPLOAD_DELAY_MS"); /* tests: widen the window */
    if (d)
        delay = atof(d) / 1000.0;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->q_len && !f->draining)
            pthread_cond_wait(&f->work, &f->lock);
        if (!f->q_len)
            break;
        double due = f->q[f->q_head].due;
        if (!f->draining && !f->hurry && due > inode_now()) {
            /* one worker waits for the head's time, the others for it to
             * hand on the next (a herd woken at each due time would cost
             * more than the uploads) */
            if (f->timing) {
                pthread_cond_wait(&f->work, &f->lock);
            } else {
                struct timespec until = {(time_t)due, (long)((due - (double)(time_t)due) * 1e9)};
                f->timing = 1;
                pthread_cond_timedwait(&f->due, &f->lock, &until);
                f->timing = 0;
            }
            continue;
        }
        uint64_t ino = f->q[f->q_head].ino;
        f->q_head = (f->q_head + 1) % f->q_cap;
        f->q_len--;
        if (f->q_len)
            pthread_cond_signal(&f->work); /* another worker for the next one */
        int draining = f->draining;
        pthread_mutex_unlock(&f->lock);
        if (delay > 0 && !draining) {
            struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
            nanosleep(&ts, NULL);
        }
        int rc = upload_queued(f->fs, ino);
        pthread_mutex_lock(&f->lock);
        if (rc)
            f->failures++;
        if (--f->busy == 0)
            pthread_cond_broadcast(&f->idle);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

void flusher_note(struct flusher *f, struct inode *in)
{
    if (!f || in->flush_watched)
        return;
    pthread_mutex_lock(&f->lock);
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        struct watched *v = realloc(f->v, nc * sizeof(*v));
        if (v) {
            f->v = v;
            f->cap = nc;
        }
    }
    if (f->n < f->cap) {
        f->v[f->n++] = (struct watched){.ino = in->ino, .backoff = FLUSHER_RETRY_MIN};
        in->flush_watched = 1;
    } /* out of memory: close or the next mount uploads it */
    pthread_mutex_unlock(&f->lock);
}

enum visit {
    KEEP,
    DROP
};

/* Look at one watched inode; upload it when due. Called without f->lock.
 * *silent: an upload of this tick found S3 silent (each would wait
 * write_timeout in turn): the others wait for the next tick. */
static enum visit visit(struct flusher *f, struct watched *w, double now, int *silent)
{
    struct fs *fs = f->fs;
    struct inode *in = inode_get(&fs->inodes, w->ino);
    if (!in)
        return DROP;
    char *entered = NULL;
    if (ops_enter_inode(fs, in, 0, &entered) != 0) {
        inode_put(&fs->inodes, in); /* a directory rename over it; next tick */
        return KEEP;
    }
    if (pthread_mutex_trylock(&in->lock) != 0) {
        ops_leave(fs, entered);
        inode_put(&fs->inodes, in); /* busy: a writer or an upload; next tick */
        return KEEP;
    }
    enum visit r = KEEP;
    struct cfile *cf = in->cf;
    if (!cf || !cf->dirty) {
        in->flush_watched = 0;
        r = DROP;
    } else if (cf->queued || *silent) {
        /* the workers upload it; or the next tick */
    } else if ((cf->journaled && !cf->deferred) || in->opens == 0) {
        /* a failed upload (or a closed file a close deferred): retry with
         * backoff, or at once when the pocket that refused writes takes
         * them again, or pockityd answers again, or S3 may be tried again
         * (a probe of a silent S3 is due) */
        if (now >= w->next_try || (w->restricted && remote_write_check(fs->remote) == 0) ||
            (w->unreachable && !remote_quota_down(fs->remote)) ||
            (w->s3_silent && !s3_client_silent(fs->s3))) {
            int rc = ops_sync(fs, in);
            w->restricted = rc == -EDQUOT || rc == -EROFS ? remote_write_check(fs->remote) != 0 : 0;
            w->unreachable = rc == -EIO && remote_quota_down(fs->remote);
            w->s3_silent = rc == -ETIMEDOUT;
            *silent = w->s3_silent;
            if (!rc) {
                log_info("uploaded a pending file in the background");
                in->flush_watched = 0;
                r = DROP;
            } else {
                w->next_try = now + w->backoff;
                w->backoff =
                        w->backoff * 2 > FLUSHER_RETRY_MAX ? FLUSHER_RETRY_MAX : w->backoff * 2;
            }
        }
    } else if ((now - cf->dirty_since >= f->upload_after &&
                now - cf->last_write >= FLUSHER_QUIET) ||
               now - cf->dirty_since >= 4 * f->upload_after) {
        /* open for a while with data not uploaded (or journaled by a
         * close of another process, cf->deferred) */
        int rc = ops_sync(fs, in);
        if (!rc) {
            in->flush_watched = 0;
            r = DROP;
        } else {
            w->next_try = now + w->backoff;
            *silent = rc == -ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&in->lock);
    ops_leave(fs, entered);
    inode_put(&fs->inodes, in);
    return r;
}

static void *flusher_main(void *arg)
{
    struct flusher *f = arg;
    /* tests: leave the journal's queued removals to the other triggers, so
     * that a kill finds them */
    int settle = !getenv("POCKITYFS_KEEP_QUEUED_REMOVALS");
    pthread_mutex_lock(&f->lock);
    while (!f->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&f->cond, &f->lock, &until);
        if (f->stopping)
            break;
        pthread_mutex_unlock(&f->lock);
        finish_releases(f, 0);
        if (settle)
            journal_settle(f->fs->journal, NULL); /* rows of uploads ended meanwhile */
        pthread_mutex_lock(&f->lock);
        if (f->stopping)
            break;
        /* visit a copy: flusher_note may grow the list meanwhile */
        size_t n = f->n;
        struct watched *copy = n ? malloc(n * sizeof(*copy)) : NULL;
        if (!copy)
            continue;
        memcpy(copy, f->v, n * sizeof(*copy));
        int draining = f->draining;
        pthread_mutex_unlock(&f->lock);
        double now = inode_now();
        enum visit *what = calloc(n, sizeof(*what));
        int silent = 0;
        for (size_t i = 0; i < n && what && !draining; i++) {
            what[i] = visit(f, &copy[i], now, &silent);
            pthread_mutex_lock(&f->lock);
            draining = f->draining; /* unmounting: what is left stays journaled */
            pthread_mutex_unlock(&f->lock);
        }
        pthread_mutex_lock(&f->lock);
        /* the first n entries are still the ones copied: notes only append */
        size_t w = 0;
        for (size_t i = 0; i < f->n; i++) {
            if (i < n && what && what[i] == DROP)
                continue;
            f->v[w++] = i < n ? copy[i] : f->v[i];
        }
        f->n = w;
        free(what);
        free(copy);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

int flusher_start(struct fs *fs, double upload_after, struct flusher **out)
{
    struct flusher *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->fs = fs;
    f->upload_after = upload_after;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_cond_init(&f->due, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&f->work, NULL);
    pthread_cond_init(&f->idle, NULL);
    int e = pthread_create(&f->thread, NULL, flusher_main, f);
    if (e) {
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->cond);
        pthread_cond_destroy(&f->work);
        pthread_cond_destroy(&f->due);
        pthread_cond_destroy(&f->idle);
        free(f);
        return -e;
    }
    for (int i = 0; i < FLUSHER_WORKERS; i++)
        if (pthread_create(&f->workers[f->n_workers], NULL, worker_main, f) == 0)
            f->n_workers++;
    if (!f->n_workers) { /* closes then upload at once */
        flusher_free(f);
        return -EAGAIN;
    }
    *out = f;
    return 0;
}

void flusher_free(struct flusher *f)
{
    if (!f)
        return;
    finish_releases(f, 1);
    queue_closed(f, 0);
    pthread_mutex_lock(&f->lock);
    f->draining = 1; /* the workers empty the queue, then end */
    pthread_cond_broadcast(&f->work);
    pthread_cond_broadcast(&f->due);
    pthread_mutex_unlock(&f->lock);
    for (int i = 0; i < f->n_workers; i++)
        pthread_join(f->workers[i], NULL);
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    finish_releases(f, 1);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    pthread_cond_destroy(&f->work);
    pthread_cond_destroy(&f->due);
    pthread_cond_destroy(&f->idle);
    free(f->q);
    free(f->v);
    free(f->released);
    free(f);
}
