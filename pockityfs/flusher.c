/* flusher: one thread that uploads, in the background, journaled files
 * whose upload failed and files held open with data dirty for too long. */
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
};

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

/* Look at one watched inode; upload it when due. Called without f->lock. */
static enum visit visit(struct flusher *f, struct watched *w, double now)
{
    struct fs *fs = f->fs;
    struct inode *in = inode_get(&fs->inodes, w->ino);
    if (!in)
        return DROP;
    if (pthread_mutex_trylock(&in->lock) != 0) {
        inode_put(&fs->inodes, in); /* busy: a writer or an upload; next tick */
        return KEEP;
    }
    enum visit r = KEEP;
    struct cfile *cf = in->cf;
    if (!cf || !cf->dirty) {
        in->flush_watched = 0;
        r = DROP;
    } else if (cf->journaled || in->opens == 0) {
        /* a failed upload: retry with backoff, or at once when the pocket
         * that refused writes takes them again */
        if (now >= w->next_try || (w->restricted && remote_write_check(fs->remote) == 0)) {
            int rc = ops_sync(fs, in);
            w->restricted = rc == -EDQUOT || rc == -EROFS ? remote_write_check(fs->remote) != 0 : 0;
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
        /* open for a while with data not uploaded */
        int rc = ops_sync(fs, in);
        if (!rc) {
            in->flush_watched = 0;
            r = DROP;
        } else {
            w->next_try = now + w->backoff;
        }
    }
    pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    return r;
}

static void *flusher_main(void *arg)
{
    struct flusher *f = arg;
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
        /* visit a copy: flusher_note may grow the list meanwhile */
        size_t n = f->n;
        struct watched *copy = n ? malloc(n * sizeof(*copy)) : NULL;
        if (!copy)
            continue;
        memcpy(copy, f->v, n * sizeof(*copy));
        pthread_mutex_unlock(&f->lock);
        double now = inode_now();
        enum visit *what = calloc(n, sizeof(*what));
        for (size_t i = 0; i < n && what; i++)
            what[i] = visit(f, &copy[i], now);
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
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&f->thread, NULL, flusher_main, f);
    if (e) {
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->cond);
        free(f);
        return -e;
    }
    *out = f;
    return 0;
}

void flusher_free(struct flusher *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->v);
    free(f);
}
