/* ops: helpers shared by the FUSE operations (ops.c for names and
 * attributes, ops_dir.c for listings, ops_file.c for data). */
#ifndef POCKITYFS_OPS_H
#define POCKITYFS_OPS_H

#include "fs.h"

/* One entry of a directory listing. */
struct dent {
    char *name;
    uint64_t size;
    time_t mtime;
    int is_dir;
    uint64_t etag;   /* a hash of the object's ETag (ops_etag_hash), 0 when unknown */
    int meta_hidden; /* a multipart or empty object: its type and mode may not be the
                      * defaults (an empty one may be an old s3fs directory) */
    int replaced;    /* an empty object that the directory of its name (listed
                      * after it) stands for: not an entry; kept in place, so
                      * that the offsets of the entries readers got stay */
};

/* A 64-bit hash of an ETag, never 0. */
uint64_t ops_etag_hash(const char *etag);

/* A directory's entries from S3, in S3's (key) order, without duplicates
 * (a file wins over a directory of the same name). It grows page by page
 * while a background thread lists the rest, so readdir can answer before
 * the last page is in; once complete it is immutable. Shared by reference
 * count. */
enum {
    LISTING_GROWING = 1,
    LISTING_DONE = 0
}; /* or -errno: listing failed */
struct listing {
    int refs;             /* atomic */
    int state;            /* atomic: LISTING_GROWING, LISTING_DONE or -errno */
    pthread_mutex_t lock; /* guards pages, n, cap, e while growing */
    pthread_cond_t grown;
    unsigned pages; /* pages listed so far */
    size_t n, cap;
    struct dent *e;
    const struct dent **by_name; /* sorted by name, once done (n_named of them) */
    size_t n_named;              /* the entries not replaced */
    char *key;                   /* the prefix listed */
    char *token;                 /* where the next page starts (the lister's) */
};
void listing_unref(struct listing *l);

static inline struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* What S3 says of a name: attributes from the object's metadata, its ETag
 * ("" for a directory known from keys under it), whether it is a directory
 * marker, and when the object was last written (0: unknown). */
struct obj_attr {
    struct stat st;
    char etag[S3_ETAG_MAX];
    int has_marker;
    int entry_attrs; /* the marker says: listings misstate entries here */
    time_t modified;
};

/* Find what path is in S3: a file or symlink (HEAD path), a directory with
 * a marker (HEAD path/), or a directory implied by keys under it (or by
 * local files not yet uploaded). An object at path itself is a directory
 * when its metadata says so (old s3fs wrote directories without the
 * slash) or when it is empty and keys lie under it: a "bare marker",
 * which rmdir and rename remove.
 * Returns 0 or -errno (-ENOENT). */
int ops_resolve(struct fs *fs, const char *path, struct obj_attr *a);

/* The same for path, a file a listing showed (so no keys lie under it):
 * without the look for keys under an empty object. */
int ops_resolve_listed(struct fs *fs, const char *path, struct obj_attr *a);

/* The same for path, a directory a listing showed: its marker's
 * attributes, or the defaults when it has none. */
int ops_resolve_dir(struct fs *fs, const char *path, struct obj_attr *a);

/* The inode's attributes, refreshed from S3 when stale. Caller holds
 * in->lock. Returns 0 or -errno. */
int ops_stat(struct fs *fs, struct inode *in, struct stat *out);

/* Install fresh attributes (the object's time not known: this mount wrote
 * it, or a listing gave them). Caller holds in->lock. */
void ops_set_attr(struct fs *fs, struct inode *in, const struct stat *st, const char *etag,
                  int has_marker, int meta_known);

/* This mount writes in's object now: its Last-Modified is not known.
 * Caller holds in->lock. */
void ops_wrote(struct inode *in);

/* Install what ops_resolve found. Caller holds in->lock. */
void ops_set_resolved(struct fs *fs, struct inode *in, const struct obj_attr *a);

/* The entry reply for in (caller holds in->lock). */
void ops_entry(struct fs *fs, struct inode *in, struct fuse_entry_param *e);

/* The entry reply for in with attributes st (ops_attrs, or published). */
void ops_entry_from(struct fs *fs, const struct inode *in, const struct stat *st,
                    struct fuse_entry_param *e);

/* in's attributes as they stand: the size of its local content while
 * that is dirty or open (caller holds in->lock). */
void ops_attrs(const struct inode *in, struct stat *out);

/* Publish in's attributes as they stand (inode_publish), before a wait
 * that holds its lock: a stat, a lookup or a listing meanwhile answers
 * from them. inode_unpublish after the wait. */
void ops_publish_attrs(struct inode *in);

/* Forget the cached listing of the directory holding path. */
void ops_dir_changed(struct fs *fs, const char *path);

/* Upload in's dirty content. Caller holds in->lock. On failure the content
 * stays in the cache and is journaled. Returns 0 or -errno. */
int ops_sync(struct fs *fs, struct inode *in);

/* Bring the parts of in's object not in its cache file yet into it (a
 * change about to be journaled; a file open while its name goes). Caller
 * holds in->lock. Returns 0 or -errno. */
int ops_fill(struct fs *fs, struct inode *in);

/* ops_fill, giving in a cache file first if it has none. */
int ops_fetch_whole(struct fs *fs, struct inode *in);

/* Around any change to S3 (an upload, a delete, a marker, new attributes,
 * a new file), before taking any inode's lock: enter the names (names.h)
 * at the path of the change, returned in *path (NULL for an inode without
 * one: unlinked, nothing to change), then leave them with ops_leave. */
int ops_enter_child(struct fs *fs, fuse_ino_t parent, const char *name, char **path);
int ops_enter_inode(struct fs *fs, struct inode *in, int wait, char **path); /* !wait: -EBUSY */
void ops_leave(struct fs *fs, char *path);                                   /* frees path */

/* in's attributes changed while its data waits in the journal for its
 * upload: write them to its row too, so that a restart after a kill uploads
 * them with the data. No-op without a row. Caller holds in->lock. Returns 0
 * or -errno. */
int ops_journal_attrs(struct fs *fs, struct inode *in);

/* Give back the quota reservation cf holds for a queued upload (none is
 * fine). Caller holds the owner's lock. */
void ops_resv_drop(struct fs *fs, struct cfile *cf);

/* Hold in cf a quota reservation of its size for path (one held for another
 * path or a smaller size is given back first). Returns 0 or -errno (EDQUOT:
 * refused), and then holds none. Caller holds the inode's lock. */
int ops_resv_hold(struct fs *fs, struct cfile *cf, const char *path);

/* Whether the mount may write now: 0, -EROFS (a read-only mount, or a
 * pocket on hold: payment past due) or -EDQUOT (the pocket holds more than
 * its tier allows). See remote_write_check. */
int ops_write_check(struct fs *fs);

/* The full key of path into key; -ENAMETOOLONG when it does not fit. */
int ops_key(struct fs *fs, const char *path, int as_dir, char key[S3_MAX_KEY_LEN + 1]);

/* The path of a child of the directory inode parent. */
int ops_child_path(struct fs *fs, fuse_ino_t parent, const char *name, char **out);

/* Wait for the threads still listing directories to end (at unmount). */
void ops_dir_stop(struct fs *fs);

/* Names known in the directory inode d (ops_dir.c; each takes fs dir_lock):
 * set_empty says d was just created empty; note records that
 * this mount created or removed name in d (and drops d's cached listing);
 * absent tells whether name is known not to exist in d; release forgets
 * everything (the inode goes away). */
int ops_dir_set_empty(struct fs *fs, struct inode *d);
void ops_dir_note(struct fs *fs, struct inode *d, const char *name);
int ops_dir_absent(struct fs *fs, struct inode *d, const char *name);
void ops_dir_release(struct fs *fs, struct inode *d);

/* After path was found to be neither an object nor a marker: list its
 * parent (one page) to learn whether it is a directory implied by keys
 * under it, remembering the parent's names for later lookups. Returns 0
 * (absent), 1 (a directory), 2 (cannot tell from one page: ask S3 about
 * the name itself) or -errno. */
int ops_dir_probe(struct fs *fs, const char *path);

/* Directory operations (ops_dir.c). */
void ops_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ops_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     struct fuse_file_info *fi);
void ops_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* File operations (ops_file.c). */
void ops_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                struct fuse_file_info *fi);
void ops_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void ops_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
               struct fuse_file_info *fi);
void ops_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ops_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* The bookkeeping of a handle's release: opens, and a cfile left idle
 * (or dropped, unlinked while open). Caller holds in->lock. */
void ops_release_locked(struct fs *fs, struct inode *in);
void ops_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void ops_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
/* Truncate in to size (setattr). Caller holds in->lock. */
int ops_truncate(struct fs *fs, struct inode *in, uint64_t size, int open_handle);

#endif
