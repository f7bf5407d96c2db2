/* ops_file: file data — create, open, read, write, truncate, flush, fsync,
 * release — through the local cache file of each inode; close journals
 * small files and queues them for the flusher's upload workers, fsync
 * uploads; and the replay of the journal at start-up. */
#include "ops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_index.h"
#include "log.h"
#include "upload.h"

/* The source of in's missing blocks; key is filled. */
static int src_of(struct fs *fs, struct inode *in, char key[S3_MAX_KEY_LEN + 1],
                  struct cfile_src *src)
{
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc == -ENOENT) {
        /* unlinked while open: the old key is gone too; blocks are local */
        key[0] = '\0';
        rc = 0;
    } else if (!rc) {
        rc = ops_key(fs, path, 0, key);
        free(path);
    }
    src->s3 = fs->s3;
    src->key = key;
    src->ra = fs->readahead;
    return rc;
}

int ops_fill(struct fs *fs, struct inode *in)
{
    struct cfile *cf = in->cf;
    if (!cf || cfile_whole(cf))
        return 0;
    char key[S3_MAX_KEY_LEN + 1];
    struct cfile_src src;
    int rc = src_of(fs, in, key, &src);
    int fd = rc ? rc : cfile_fd(&fs->cache, cf);
    return fd < 0 ? fd : cfile_fill(cf, &src);
}

/* The ETag of in is etag when a listing gave only its hash (a lookup from
 * `ls -l` then an open): take it, so that cached blocks of it serve. */
static void etag_by_hash(struct inode *in, const char *etag)
{
    if (!in->etag[0] && in->etag_hash && etag[0] && ops_etag_hash(etag) == in->etag_hash)
        snprintf(in->etag, sizeof(in->etag), "%s", etag);
}

/* Make sure in has a cfile for its current object (the one the cache kept
 * for its key, if any). Caller holds in->lock. */
static int ensure_cfile(struct fs *fs, struct inode *in)
{
    if (in->cf)
        return 0;
    char key[S3_MAX_KEY_LEN + 1], kept[S3_ETAG_MAX];
    struct cfile_src src;
    int known = src_of(fs, in, key, &src) == 0;
    if (known && !in->etag[0] && in->etag_hash && cache_kept_etag(&fs->cache, key, kept))
        etag_by_hash(in, kept);
    return cfile_new(&fs->cache, in, (uint64_t)in->st.st_size, in->etag, known ? key : NULL,
                     &in->cf);
}

int ops_fetch_whole(struct fs *fs, struct inode *in)
{
    int rc = ensure_cfile(fs, in);
    return rc ? rc : ops_fill(fs, in);
}

void ops_resv_drop(struct fs *fs, struct cfile *cf)
{
    if (!cf)
        return;
    if (cf->resv_id[0])
        remote_release(fs->remote, cf->resv_id);
    cf->resv_id[0] = '\0';
    free(cf->resv_path);
    cf->resv_path = NULL;
}

int ops_resv_hold(struct fs *fs, struct cfile *cf, const char *path)
{
    if (cf->resv_id[0] &&
        (!cf->resv_path || strcmp(cf->resv_path, path) != 0 || cf->size > cf->resv_size))
        ops_resv_drop(fs, cf);
    if (cf->resv_id[0])
        return 0;
    int rc = remote_reserve(fs->remote, path, cf->size, cf->resv_id);
    if (rc) {
        cf->resv_id[0] = '\0';
        return rc;
    }
    cf->resv_size = cf->size;
    cf->resv_path = strdup(path);
    if (!cf->resv_path)
        ops_resv_drop(fs, cf); /* the upload reserves then */
    return 0;
}

/* The held reservation when it covers path at the cfile's size (it is then
 * handed over: the upload consumes it); else drop it. */
static const char *resv_take(struct fs *fs, struct cfile *cf, const char *path, char id[64])
{
    if (!cf->resv_id[0])
        return NULL;
    if (!cf->resv_path || strcmp(cf->resv_path, path) != 0 || cf->size > cf->resv_size) {
        ops_resv_drop(fs, cf);
        return NULL;
    }
    memcpy(id, cf->resv_id, 64);
    cf->resv_id[0] = '\0';
    free(cf->resv_path);
    cf->resv_path = NULL;
    return id;
}

/* The journal row of in's pending content at path: the content itself
 * when it is in memory, else the name of its local file. */
static struct journal_entry pending_entry(const struct inode *in, const char *path)
{
    const struct cfile *cf = in->cf;
    return (struct journal_entry){.path = (char *)path,
                                  .file = cf->in_mem ? "" : (char *)cf->name,
                                  .data = cf->in_mem ? cf->mem : NULL,
                                  .size = cf->size,
                                  .mode = in->st.st_mode,
                                  .uid = in->st.st_uid,
                                  .gid = in->st.st_gid,
                                  .mtime = in->st.st_mtim.tv_sec};
}

int ops_journal_attrs(struct fs *fs, struct inode *in)
{
    if (!in->cf || !in->cf->journaled)
        return 0;
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc)
        return rc == -ENOENT ? 0 : rc;
    struct journal_entry e = pending_entry(in, path);
    rc = journal_put(fs->journal, &e, 0);
    free(path);
    return rc;
}

/* An upload of in failed with rc: keep the data, durable on disk and in the
 * journal, and let the flusher retry it. fd: the local file's descriptor
 * (-1 in memory). */
static void keep_pending(struct fs *fs, struct inode *in, const char *path, int fd, int local,
                         int rc)
{
    struct cfile *cf = in->cf;
    struct journal_entry e = pending_entry(in, path);
    /* a row naming a file with holes would replay them as zeros */
    if ((cf->in_mem || (fd >= 0 && cfile_whole(cf) && fdatasync(fd) == 0)) &&
        journal_put(fs->journal, &e, 1) == 0) {
        cf->journaled = 1;
        inode_set_flags(&fs->inodes, in, 1, local);
        flusher_note(fs->flusher, in);
        log_warn("'%s' stays in the cache, not uploaded: %s", path, strerror(-rc));
    } else {
        log_error("cannot journal '%s': its data lives only in this process (retried)", path);
    }
}

static int sync_locked(struct fs *fs, struct inode *in)
{
    struct cfile *cf = in->cf;
    struct stream *stream = cf->stream; /* handed to the upload, else cancelled */
    cf->stream = NULL;
    cf->deferred = 0; /* uploaded now, or failed and retried as such */
    cf->tried = 1;
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc == -ENOENT) { /* unlinked: nothing to upload */
        stream_cancel(stream);
        ops_resv_drop(fs, cf);
        cf->dirty = in->opens > 0; /* its readers keep it (off the cache's LRU) */
        return 0;
    }
    if (rc) {
        stream_cancel(stream);
        return rc;
    }
    char key[S3_MAX_KEY_LEN + 1];
    struct cfile_src src;
    int local = inode_is_local(&fs->inodes, in);
    rc = src_of(fs, in, key, &src);
    int refused = rc ? 0 : remote_write_check(fs->remote);
    int fd = -1;
    if (!rc && !cf->in_mem && (fd = cfile_fd(&fs->cache, cf)) < 0)
        rc = fd;
    int at_hand = !rc; /* the content: a failure below keeps it pending */
    if (!rc)
        rc = cfile_fill(cf, &src);
    if (!rc && refused)
        rc = refused; /* journaled below; uploaded once writes are allowed again */
    char etag[S3_ETAG_MAX] = "", id[64];
    struct stat st = in->st;
    meta_set_size(&st, cf->size);
    if (!rc) {
        struct upload_body body = {.fd = fd, .data = cf->mem, .size = cf->size, .stream = stream};
        stream = NULL;
        rc = upload_put_reserved(fs, path, &body, &st, resv_take(fs, cf, path, id), etag);
    }
    stream_cancel(stream);
    if (!rc) {
        cfile_set_clean(&fs->cache, cf, etag);
        snprintf(in->etag, sizeof(in->etag), "%s", etag);
        ops_wrote(in);
        in->attr_expire = inode_now() + fs->opt.attr_timeout;
        /* a row holding the content may go later (its replay uploads the
         * same bytes); one naming the cache file goes now, as writes may
         * change that file in place from here on */
        if (cf->in_mem)
            journal_uploaded(fs->journal, path);
        else
            journal_remove(fs->journal, path);
        /* the cached listing goes before the name stops counting as local:
         * a listing meanwhile lists it one way or the other */
        if (local)
            ops_dir_changed(fs, path);
        inode_set_flags(&fs->inodes, in, 0, 0);
        if (in->opens == 0) /* uploaded in the background: the fd goes */
            cfile_idle(&fs->cache, cf);
    } else if (at_hand) {
        keep_pending(fs, in, path, fd, local, rc);
    }
    free(path);
    return rc;
}

int ops_sync(struct fs *fs, struct inode *in)
{
    if (!in->cf || !in->cf->dirty)
        return 0;
    /* the upload may take long (a large file, a slow or silent S3): a stat,
     * a lookup or a listing meanwhile answers from these */
    ops_publish_attrs(in);
    int rc = sync_locked(fs, in);
    inode_unpublish(in);
    return rc;
}

/* Close of a written file: a small file is journaled and queued for the
 * flusher's upload workers, after a quota reservation taken now so that a
 * refusal still fails the close with EDQUOT; a large one (or any file while
 * the flusher is not running) uploads at once. With defer (the close of a
 * descriptor another process shares, see ops_flush), and for an empty
 * file, the file of any size is journaled and left for a later close, its
 * last release or upload_after.
 * Caller holds in->lock. */
static int close_sync(struct fs *fs, struct inode *in, int defer)
{
    struct cfile *cf = in->cf;
    if (!cf || !cf->dirty)
        return 0;
    cf->deferred = 0; /* set again below if deferred again: else uploaded or failed */
    if (!fs->flusher || (!defer && cf->size >= UPLOAD_MULTIPART_MIN) ||
        remote_write_check(fs->remote))
        return ops_sync(fs, in); /* the refusal path journals and reports */
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc)
        return ops_sync(fs, in); /* unlinked (nothing to do) or out of memory */
    int local = inode_is_local(&fs->inodes, in);
    /* an empty file: most often the shell's close of the duplicate it made
     * for a redirection (`cmd > f`), with the writes to come */
    if (cf->size == 0)
        defer = 1;
    int fd = cf->in_mem ? -1 : cfile_fd(&fs->cache, cf);
    if (fd < 0 && !cf->in_mem) {
        free(path);
        return fd;
    }
    /* a change to part of an object: the row must name all of it, so fetch
     * the rest now (on failure the flusher retries the upload) */
    if ((rc = ops_fill(fs, in)) != 0) {
        log_error("cannot fetch the rest of '%s' before journaling it: %s", path, strerror(-rc));
        free(path);
        return rc;
    }
    /* an empty file not yet in S3 (the first close of `echo x > f`)
     * reserves when it uploads */
    if (!(local && cf->size == 0) && (rc = ops_resv_hold(fs, cf, path)) != 0) {
        if (rc != -EDQUOT)
            log_error("cannot reserve %llu bytes for '%s': %s", (unsigned long long)cf->size, path,
                      strerror(-rc));
        cfile_unstream(cf); /* its parts would not count: as a close uploading */
        keep_pending(fs, in, path, fd, local, rc);
        free(path);
        return rc;
    }
    struct journal_entry e = pending_entry(in, path);
    if (journal_put(fs->journal, &e, 0) != 0) {
        free(path);
        return ops_sync(fs, in); /* cannot journal: upload now */
    }
    cf->journaled = 1;
    inode_set_flags(&fs->inodes, in, 1, local);
    cf->deferred = defer;
    if (defer)
        flusher_note(fs->flusher, in);
    else
        flusher_queue(fs->flusher, in);
    free(path);
    return 0;
}

int ops_truncate(struct fs *fs, struct inode *in, uint64_t size, int open_handle)
{
    if (size > S3_MAX_OBJECT)
        return -EFBIG;
    int rc = ensure_cfile(fs, in);
    if (!rc)
        rc = cfile_truncate(&fs->cache, in->cf, size);
    if (rc)
        return rc;
    clock_gettime(CLOCK_REALTIME, &in->st.st_mtim);
    in->st.st_ctim = in->st.st_mtim;
    meta_set_size(&in->st, size);
    flusher_note(fs->flusher, in);
    /* truncate(2) by name: no flush will follow */
    if (!open_handle)
        rc = ops_sync(fs, in);
    return rc;
}

/* A handle's fh: 0 read-only, else FH_WRITER and, above it, the thread id
 * of the caller of req (the opener, or a closer in ops_flush). */
#define FH_WRITER 1u

static uint64_t writer_fh(fuse_req_t req)
{
    return (uint64_t)(uint32_t)fuse_req_ctx(req)->pid << 1 | FH_WRITER;
}

void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    char *path = NULL;
    int rc = ops_write_check(fs);
    /* not a change to S3 yet, but a name below a directory being renamed */
    if (!rc)
        rc = ops_enter_child(fs, parent, name, &path);
    struct inode *in = NULL;
    if (!rc && !(in = inode_make(&fs->inodes, path, NULL)))
        rc = -ENOMEM;
    if (rc) {
        ops_leave(fs, path);
        fuse_reply_err(req, -rc);
        return;
    }
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct stat st = {0};
    st.st_mode = S_IFREG | (mode & 07777);
    st.st_nlink = 1;
    st.st_uid = ctx->uid;
    st.st_gid = ctx->gid;
    st.st_blksize = 4096;
    clock_gettime(CLOCK_REALTIME, &st.st_mtim);
    st.st_atim = st.st_ctim = st.st_mtim;
    pthread_mutex_lock(&in->lock);
    if (in->cf) {
        rc = cfile_truncate(&fs->cache, in->cf, 0);
    } else {
        rc = cfile_new(&fs->cache, in, 0, "", NULL, &in->cf);
        if (!rc)
            cfile_set_dirty(&fs->cache, in->cf);
    }
    struct fuse_entry_param e = {0};
    if (!rc) {
        ops_set_attr(fs, in, &st, "", 0, 1);
        in->opens++;
        ops_entry(fs, in, &e);
        flusher_note(fs->flusher, in);
    }
    pthread_mutex_unlock(&in->lock);
    if (!rc) {
        inode_set_flags(&fs->inodes, in, 0, 1);
        ops_dir_changed(fs, path);
        inode_count_lookup(&fs->inodes, in);
        fi->fh = writer_fh(req); /* created: written, even if opened read-only */
        if (fuse_reply_create(req, &e, fi) != 0) {
            pthread_mutex_lock(&in->lock);
            in->opens--;
            pthread_mutex_unlock(&in->lock);
            inode_forget(&fs->inodes, in->ino, 1);
        }
    } else {
        fuse_reply_err(req, -rc);
    }
    inode_put(&fs->inodes, in);
    ops_leave(fs, path);
}

void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    int rc = 0;
    if (fs->read_only && (fi->flags & O_ACCMODE) != O_RDONLY)
        rc = -EROFS;
    else if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY)
        rc = ops_write_check(fs);
    pthread_mutex_lock(&in->lock);
    struct stat st;
    /* close-to-open: look at the object again, unless a lookup just did */
    if (!rc && !(in->cf && in->cf->dirty) && in->opens == 0 &&
        in->attr_expire - fs->opt.attr_timeout < inode_now() - 1.0)
        in->attr_expire = 0;
    if (!rc)
        rc = ops_stat(fs, in, &st);
    if (!rc && S_ISDIR(st.st_mode))
        rc = -EISDIR;
    int keep = 0;
    if (!rc && in->cf && !in->cf->dirty) {
        etag_by_hash(in, in->cf->etag);
        if (strcmp(in->cf->etag, in->etag) != 0 || in->cf->size != (uint64_t)st.st_size) {
            if (in->opens == 0) {
                cfile_free(&fs->cache, in->cf, 1);
                in->cf = NULL;
            }
        } else {
            keep = 1;
        }
    } else if (!rc && in->cf) {
        keep = 1; /* our own pending data */
    }
    if (!rc)
        rc = ensure_cfile(fs, in);
    if (!rc && (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY)
        rc = ops_truncate(fs, in, 0, 1);
    if (!rc)
        in->opens++;
    pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : writer_fh(req);
    fi->keep_cache = keep;
    if (fuse_reply_open(req, fi) != 0) {
        in = inode_get(&fs->inodes, ino);
        if (in) {
            pthread_mutex_lock(&in->lock);
            in->opens--;
            pthread_mutex_unlock(&in->lock);
            inode_put(&fs->inodes, in);
        }
    }
}

void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    char key[S3_MAX_KEY_LEN + 1];
    struct cfile_src src;
    struct cfile_span span;
    pthread_mutex_lock(&in->lock);
    long n = ensure_cfile(fs, in);
    if (!n)
        n = src_of(fs, in, key, &src);
    if (!n) {
        ops_publish_attrs(in); /* for a stat meanwhile, as the read may wait on S3 */
        n = cfile_read(&fs->cache, in->cf, &src, (uint64_t)off, size, &span);
        inode_unpublish(in);
    }
    /* the reply goes while the lock keeps the bytes where span says */
    if (n < 0) {
        fuse_reply_err(req, (int)-n);
    } else if (n == 0 || span.mem) {
        fuse_reply_buf(req, span.mem, (size_t)n);
    } else { /* spliced from the local file when the kernel allows it (op_init) */
        struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)n);
        bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
        bv.buf[0].fd = span.fd;
        bv.buf[0].pos = off;
        fuse_reply_data(req, &bv, 0);
    }
    pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    cache_trim(&fs->cache);
}

/* A new file the pocket has no room for: its close will be refused, so no
 * part of it is streamed for nothing (a file replacing another may fit). */
static int no_room(struct fs *fs, struct inode *in)
{
    /* the totals first: inode_is_local takes the table's lock, at every write */
    return remote_no_room(fs->remote, in->cf->size) && inode_is_local(&fs->inodes, in);
}

/* After a write at the end of in's content: feed its stream, or start one
 * once the content qualifies (stream.h). key: the object's, "" when in was
 * unlinked. */
static void stream_feed(struct fs *fs, struct inode *in, const char *key)
{
    struct cfile *cf = in->cf;
    if (cf->stream) {
        if (no_room(fs, in) || stream_grow(cf->stream, key, cf->size) != 0)
            cfile_unstream(cf); /* the close uploads it whole */
        return;
    }
    /* every byte local: blocks an upload made clean may have been evicted
     * since (an open file's cache keeps only what is near its reader) */
    if (!cf->appending || cf->size < STREAM_START || cf->size > STREAM_MAX || !key[0] ||
        !cfile_whole(cf) || no_room(fs, in))
        return;
    int fd = cfile_fd(&fs->cache, cf);
    if (fd >= 0)
        cf->stream = stream_start(&fs->streams, fs->s3, key, fd, &in->st, cf->size,
                                  fs->opt.upload_threads);
    if (!cf->stream)
        cfile_unstream(cf);
}

void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
               struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    long n = !in ? -ENOENT : ops_write_check(fs);
    if (!n) {
        char key[S3_MAX_KEY_LEN + 1];
        struct cfile_src src;
        pthread_mutex_lock(&in->lock);
        n = ensure_cfile(fs, in);
        if (!n)
            n = src_of(fs, in, key, &src);
        if (!n && (uint64_t)off + size > S3_MAX_OBJECT)
            n = -EFBIG;
        if (!n)
            n = cfile_write(&fs->cache, in->cf, &src, (uint64_t)off, buf, size);
        if (n >= 0) {
            flusher_note(fs->flusher, in);
            meta_set_size(&in->st, in->cf->size);
            clock_gettime(CLOCK_REALTIME, &in->st.st_mtim);
            in->st.st_ctim = in->st.st_mtim;
            stream_feed(fs, in, key);
        }
        pthread_mutex_unlock(&in->lock);
    }
    inode_put(&fs->inodes, in);
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_write(req, (size_t)n);
}

enum sync_kind {
    SYNC_FSYNC,      /* upload now */
    SYNC_CLOSE,      /* the opener's close: close_sync */
    SYNC_CLOSE_COPY, /* a close by another thread or process: deferred */
};

static void sync_reply(fuse_req_t req, fuse_ino_t ino, enum sync_kind kind)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    int rc = 0;
    if (in) {
        char *entered = NULL;
        ops_enter_inode(fs, in, 1, &entered); /* out of memory: goes on regardless */
        pthread_mutex_lock(&in->lock);
        if (in->cf && in->cf->dirty)
            rc = kind == SYNC_FSYNC ? ops_sync(fs, in)
                                    : close_sync(fs, in, kind == SYNC_CLOSE_COPY);
        pthread_mutex_unlock(&in->lock);
        ops_leave(fs, entered);
        inode_put(&fs->inodes, in);
    }
    fuse_reply_err(req, -rc);
}

void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    /* closing a read-only handle does not retry a refused upload */
    if (!fi->fh) {
        fuse_reply_err(req, 0);
        return;
    }
    /* Every close of a descriptor is a flush, also of a copy a child
     * inherited (`cmd >> log` run by a shell loop, make's children): a
     * close by another thread than the opener journals the file, which
     * keeps what close promises, and leaves the upload to the opener's
     * close or the last release, instead of sending it whole each time. */
    sync_reply(req, ino, writer_fh(req) == fi->fh ? SYNC_CLOSE : SYNC_CLOSE_COPY);
}

void ops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)datasync; /* data and attributes go up together: one PUT */
    (void)fi;
    sync_reply(req, ino, SYNC_FSYNC); /* waits for this file's upload */
}

void ops_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    /* directory changes are in S3 when they return; `sync DIR` waits for
     * the uploads closed files still wait for */
    fuse_reply_err(req, -flusher_wait(fs_of(req)->flusher));
}

void fs_watch_pending(struct fs *fs)
{
    struct journal_entry *v = NULL;
    size_t n = 0;
    if (journal_list(fs->journal, &v, &n) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct inode *in = inode_get_path(&fs->inodes, v[i].path);
        if (!in)
            continue;
        pthread_mutex_lock(&in->lock);
        if (in->cf && in->cf->dirty)
            flusher_note(fs->flusher, in);
        pthread_mutex_unlock(&in->lock);
        inode_put(&fs->inodes, in);
    }
    journal_entries_free(v, n);
}

static int inode_still_named(struct fs *fs, struct inode *in)
{
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    free(path);
    return rc != -ENOENT;
}

void ops_release_locked(struct fs *fs, struct inode *in)
{
    if (in->opens > 0)
        in->opens--;
    if (in->opens == 0 && in->cf) {
        if (!in->cf->dirty)
            cfile_idle(&fs->cache, in->cf);
        else if (!inode_still_named(fs, in)) {
            ops_resv_drop(fs, in->cf);
            in->cf->dirty = 0; /* unlinked while open */
        } else if (in->cf->deferred && in->cf->journaled) {
            flusher_queue(fs->flusher, in); /* its last close was another process's */
        }
    }
}

void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    fuse_reply_err(req, 0); /* the caller's close has returned: nothing waits for this */
    if (!in)
        return;
    if (pthread_mutex_trylock(&in->lock) != 0) {
        /* held, often by an upload: the flusher finishes this, so that
         * releases behind slow uploads do not hold every FUSE thread */
        if (fs->flusher && flusher_release_later(fs->flusher, in) == 0)
            return;
        pthread_mutex_lock(&in->lock);
    }
    ops_release_locked(fs, in);
    pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    cache_trim(&fs->cache);
}

/* Upload one journaled file; on failure adopt it so the mount serves it. */
static int replay_one(struct fs *fs, const struct journal_entry *e)
{
    char file[PATH_MAX + 64];
    snprintf(file, sizeof(file), "%s/%s", fs->cache.dir, e->file);
    int fd = -1;
    struct upload_body body = {.fd = -1, .data = e->data, .size = e->size};
    if (e->file[0] && (fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
        log_error("pending upload of '%s' lost its cache file '%s': %s", e->path, file,
                  strerror(errno));
        journal_remove(fs->journal, e->path);
        return 0;
    }
    struct stat fst;
    if (fd >= 0)
        body = (struct upload_body){.fd = fd,
                                    .size = fstat(fd, &fst) == 0 ? (uint64_t)fst.st_size : e->size};
    struct stat st = {0};
    st.st_mode = e->mode;
    st.st_uid = e->uid;
    st.st_gid = e->gid;
    st.st_mtim.tv_sec = (time_t)e->mtime;
    int rc = upload_put(fs, e->path, 0, &body, &st, NULL);
    if (fd >= 0)
        close(fd);
    if (!rc) {
        log_info("uploaded pending '%s' (%llu bytes)", e->path, (unsigned long long)body.size);
        journal_remove(fs->journal, e->path);
        if (fd >= 0)
            unlink(file);
        return 0;
    }
    log_warn("pending '%s' still not uploaded: %s", e->path, strerror(-rc));
    struct inode *in = inode_make(&fs->inodes, e->path, NULL);
    if (!in)
        return 1;
    pthread_mutex_lock(&in->lock);
    if (!in->cf && (e->file[0] ? cfile_adopt(&fs->cache, in, e->file, &in->cf)
                               : cfile_adopt_mem(&fs->cache, in, e->data, e->size, &in->cf)) == 0) {
        st.st_nlink = 1;
        meta_set_size(&st, in->cf->size);
        st.st_blksize = 4096;
        st.st_ctim = st.st_atim = st.st_mtim;
        ops_set_attr(fs, in, &st, "", 0, 1);
        in->cf->replayed = 1;
    }
    pthread_mutex_unlock(&in->lock);
    inode_set_flags(&fs->inodes, in, 1, 1);
    inode_put(&fs->inodes, in);
    return 1;
}

/* Abort the multipart uploads an earlier run left under way (killed while
 * uploading): their parts would stay in the bucket, counted nowhere. */
static void abort_left_uploads(struct fs *fs)
{
    struct journal_upload *v = NULL;
    size_t n = 0;
    if (journal_uploads(fs->journal, &v, &n) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int st = s3_multipart_abort(fs->s3, v[i].key, v[i].id);
        if (st == S3_OK || st == S3_ERR_NO_UPLOAD) {
            journal_upload_remove(fs->journal, v[i].id);
            log_info("aborted the unfinished upload of '%s' an earlier run left", v[i].key);
        } else {
            log_warn("cannot abort the unfinished upload of '%s': %s (next start retries)",
                     v[i].key, s3_strerror(st));
        }
    }
    journal_uploads_free(v, n);
}

struct name_list {
    const char **v;
    size_t n, cap;
};

static int names_add(struct name_list *ns, const char *name)
{
    if (ns->n == ns->cap) {
        size_t nc = ns->cap ? ns->cap * 2 : 64;
        const char **nv = realloc(ns->v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        ns->v = nv;
        ns->cap = nc;
    }
    ns->v[ns->n++] = name;
    return 0;
}

static int add_kept_name(void *arg, const struct cfile *cf)
{
    return names_add(arg, cf->name);
}

/* Take up what the cache index names, but the files of journal rows (v, n
 * of them); then sweep the cache files that neither names: leftovers of
 * the previous run. Before the replay, which may create cache files. */
static void take_up_cache(struct fs *fs, const struct journal_entry *v, size_t n)
{
    struct name_list ns = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (v[i].file[0])
            rc = names_add(&ns, v[i].file);
    if (rc) { /* no way to tell: nothing is taken up or swept */
        free(ns.v);
        return;
    }
    if (ns.n)
        qsort(ns.v, ns.n, sizeof(*ns.v), cache_index_name_cmp);
    cache_index_load(&fs->cache, fs->index_path, fs->source, ns.v, ns.n);
    if (cache_each_kept(&fs->cache, add_kept_name, &ns) != 0) {
        free(ns.v);
        return;
    }
    if (ns.n)
        qsort(ns.v, ns.n, sizeof(*ns.v), cache_index_name_cmp);
    DIR *d = opendir(fs->cache.dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *name = de->d_name;
        if (name[0] != '.' &&
            !(ns.n && bsearch(&name, ns.v, ns.n, sizeof(*ns.v), cache_index_name_cmp)))
            unlinkat(dirfd(d), name, 0);
    }
    if (d)
        closedir(d);
    free(ns.v);
}

size_t fs_replay(struct fs *fs)
{
    struct journal_entry *v = NULL;
    size_t n = 0, left = 0;
    abort_left_uploads(fs);
    if (journal_list(fs->journal, &v, &n) != 0)
        return 0;
    take_up_cache(fs, v, n);
    for (size_t i = 0; i < n; i++)
        left += (size_t)replay_one(fs, &v[i]);
    journal_entries_free(v, n);
    return left;
}
