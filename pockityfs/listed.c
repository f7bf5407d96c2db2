/* listed: the attributes of a directory's listed entries, which a listing
 * (ListObjectsV2) does not carry: from the inode, the listing, or a HEAD of
 * the object (made in parallel for a readdirplus reply), and the mark a
 * directory's marker gets when listings would misstate entries in it. */
#include "listed.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "parallel.h"

#define HEAD_THREADS 8 /* HEADs in flight for one readdirplus reply */

#define MARK_TRIES 20 /* for the directory's lock, 1 ms apart */

/* Write the marker of the directory at dir (known as d, locked, when in
 * the table) with META_ENTRY_ATTRS. */
static int mark_marker(struct fs *fs, const char *dir, struct inode *d)
{
    struct obj_attr a;
    int rc = 0;
    if (d && d->attr_expire > inode_now() && d->meta_known && S_ISDIR(d->st.st_mode)) {
        a.st = d->st; /* with this mount's latest changes */
        a.has_marker = d->has_marker;
        a.entry_attrs = 0;
    } else if ((rc = ops_resolve_dir(fs, dir, &a)) == 0 && d && S_ISDIR(d->st.st_mode)) {
        ops_set_resolved(fs, d, &a); /* another mount's changes kept */
    }
    if (rc || !a.has_marker)
        return rc ? rc : -ENOENT; /* a prefix only */
    if (a.entry_attrs)
        return 0; /* another mount marked it */
    char key[S3_MAX_KEY_LEN + 1], etag[S3_ETAG_MAX];
    struct meta_set ms;
    meta_from_stat(&a.st, &ms);
    meta_set_entry_attrs(&ms);
    struct s3_put_opts opts = meta_put_opts(&ms);
    rc = ops_key(fs, dir, 1, key);
    long long saved = s3_thread_deadline_save();
    if (!saved) /* the directory's lock is held: no waiting for minutes */
        s3_thread_deadline((long)fs->opt.write_timeout * 1000);
    int s = rc ? S3_OK : s3_copy_object(fs->s3, key, key, 1, &opts, etag);
    s3_thread_deadline_restore(saved);
    if (s != S3_OK) {
        log_warn("cannot mark '%s' for its entries' attributes: %s %s", key, s3_strerror(s),
                 s3_last_error_detail());
        rc = -s3_status_errno(s);
    }
    return rc;
}

int listed_mark(struct fs *fs, const char *path)
{
    size_t plen = meta_parent_len(path);
    if (plen == 0)
        return -ENOTSUP; /* the root has no marker */
    char *dir = strndup(path, plen);
    if (!dir)
        return -ENOMEM;
    struct inode *d = inode_get_path(&fs->inodes, dir);
    int rc = -EBUSY, tried = 0;
    if (!d) {
        rc = mark_marker(fs, dir, NULL);
    } else if (__atomic_load_n(&d->entry_attrs, __ATOMIC_ACQUIRE)) {
        rc = 0;
    } else {
        /* under the directory's lock, so that a change of its attributes
         * (store_meta) does not cross this rewrite of its marker. The
         * caller may hold a child's lock, so no waiting for the parent's
         * (whose holder may wait for that child): a few tries, then the
         * file says it by itself. A holder that is marking it (the uploads
         * of a folder's first files run together) waits for no child: its
         * end is waited for, up to write_timeout, and its result taken. */
        double give_up = inode_now() + fs->opt.write_timeout;
        int waited = 0;
        for (int i = 0; i < MARK_TRIES && !tried; i++) {
            if (pthread_mutex_trylock(&d->lock) != 0) {
                if (__atomic_load_n(&d->marking, __ATOMIC_ACQUIRE) && inode_now() < give_up) {
                    waited = 1;
                    i--;
                }
                usleep(1000);
                continue;
            }
            tried = 1;
            rc = d->entry_attrs ? 0 : -EBUSY;
            if (!d->entry_attrs && !waited) { /* after a failed mark: no retry */
                __atomic_store_n(&d->marking, 1, __ATOMIC_RELEASE);
                rc = mark_marker(fs, dir, d);
                __atomic_store_n(&d->marking, 0, __ATOMIC_RELEASE);
            }
            if (rc == 0)
                __atomic_store_n(&d->entry_attrs, 1, __ATOMIC_RELEASE);
            pthread_mutex_unlock(&d->lock);
        }
        if (!tried && __atomic_load_n(&d->entry_attrs, __ATOMIC_ACQUIRE))
            rc = 0; /* marked meanwhile by another */
    }
    inode_put(&fs->inodes, d);
    free(dir);
    return rc;
}

/* A multipart object's attributes a listing cannot tell (pockityfs uploads
 * files that way when the listing would misstate them), nor a directory's
 * (its marker is not listed): they get a HEAD, as does an object written
 * again since its metadata was read. Caller holds in->lock. */
enum listed_source listed_source(const struct inode *in, const struct dent *de, int marked)
{
    if (!in) /* none yet */
        return de->meta_hidden || de->is_dir || marked ? LISTED_HEAD : LISTED_DEFAULTS;
    if ((in->cf && in->cf->dirty) || (in->attr_expire > inode_now() && in->meta_known))
        return LISTED_INODE;
    int same_kind = !de->is_dir == !S_ISDIR(in->st.st_mode);
    /* the object another client replaced with one of the same size has
     * another ETag: its metadata and cached content are not this one's */
    int same_object =
            de->is_dir || ((uint64_t)in->st.st_size == de->size &&
                           (!de->etag || !in->etag[0] || ops_etag_hash(in->etag) == de->etag));
    /* the same object, unless written again in place since its metadata
     * was read (a copy onto itself with new metadata by another mount keeps
     * the ETag; the time, known to the second, tells): after this mount
     * wrote it, a time past that write's. A directory's marker is not
     * listed: it is read again. */
    if (in->attr_expire > 0 && in->meta_known && same_kind && same_object && !de->is_dir &&
        (in->obj_mtime ? in->obj_mtime == de->mtime : de->mtime <= in->wrote_at + META_MTIME_SLACK))
        return LISTED_KNOWN;
    return listed_source(NULL, de, marked);
}

static void head_run(struct fs *fs, struct listed_head *h)
{
    h->rc = h->is_dir ? ops_resolve_dir(fs, h->path, &h->a)
                      : ops_resolve_listed(fs, h->path, &h->a);
}

int listed_attrs(struct fs *fs, struct inode *in, const struct dent *de, int marked,
                 const struct listed_head *h)
{
    enum listed_source src = listed_source(in, de, marked);
    if (src == LISTED_INODE)
        return 0;
    struct stat st;
    meta_default_stat(de->is_dir, de->size, de->mtime, &fs->defaults, &st);
    if (src == LISTED_KNOWN) {
        st.st_mode = in->st.st_mode;
        st.st_uid = in->st.st_uid;
        st.st_gid = in->st.st_gid;
        st.st_mtim = in->st.st_mtim;
        st.st_ctim = in->st.st_ctim;
        time_t modified = in->obj_mtime ? in->obj_mtime : de->mtime;
        ops_set_attr(fs, in, &st, in->etag, in->has_marker, 1);
        in->obj_mtime = modified; /* what this mount wrote: the listing's time */
        return 0;
    }
    /* a HEAD made before the inode got newer attributes (this mount
     * uploaded it meanwhile) is not installed over them */
    if (h && in->attr_expire - fs->opt.attr_timeout > h->started)
        h = NULL;
    if (src == LISTED_HEAD) {
        struct listed_head own = {.is_dir = de->is_dir, .rc = -ENOENT};
        if (!h && inode_path(&fs->inodes, in, &own.path) == 0) {
            head_run(fs, &own);
            free(own.path);
        }
        if (!h)
            h = &own;
        if (h->rc)
            return 1; /* not the listing's defaults (a private file as 0644) */
        if (in->attr_expire > 0 && ((h->a.st.st_mode ^ in->st.st_mode) & S_IFMT)) {
            in->attr_expire = 1; /* expired: the next lookup finds the new type */
            return 1;
        }
        ops_set_resolved(fs, in, &h->a);
        return 0;
    }
    ops_set_attr(fs, in, &st, "", in->has_marker, 0);
    in->etag_hash = de->is_dir ? 0 : de->etag; /* cached blocks of it still serve */
    return 0;
}

static void heads_worker(void *arg)
{
    struct listed_heads *hs = arg;
    size_t k;
    while ((k = __atomic_fetch_add(&hs->next, 1, __ATOMIC_RELAXED)) < hs->n)
        head_run(hs->fs, &hs->h[k]);
}

void listed_heads_free(struct listed_heads *hs)
{
    for (size_t k = 0; k < hs->n; k++)
        free(hs->h[k].path);
    free(hs->h);
}

int listed_heads_add(struct listed_heads *hs, size_t index, char *path, int is_dir)
{
    if (hs->n == hs->cap) {
        size_t nc = hs->cap ? hs->cap * 2 : 16;
        struct listed_head *h = realloc(hs->h, nc * sizeof(*h));
        if (!h)
            return -ENOMEM;
        hs->h = h;
        hs->cap = nc;
    }
    hs->h[hs->n++] = (struct listed_head){.index = index, .path = path, .is_dir = is_dir};
    return 0;
}

void listed_heads_run(struct fs *fs, struct listed_heads *hs)
{
    hs->fs = fs;
    double now = inode_now();
    for (size_t k = 0; k < hs->n; k++)
        hs->h[k].started = now;
    if (hs->n > 1)
        parallel_run(hs->n < HEAD_THREADS ? (int)hs->n : HEAD_THREADS, heads_worker, hs);
    else if (hs->n == 1)
        heads_worker(hs);
}
