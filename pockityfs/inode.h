/* inode: the mount's table of inodes, mapping FUSE inode numbers to paths
 * in the pocket (relative to its prefix) and back, with the kernel's lookup
 * counts. An inode lives while the kernel remembers it (nlookup > 0), while
 * a request holds it (pins > 0), or while it keeps data not yet uploaded
 * (keep). Inode numbers are never reused. */
#ifndef POCKITYFS_INODE_H
#define POCKITYFS_INODE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "nameset.h"
#include "s3.h"

#define INODE_ROOT 1

struct cfile;
struct listing;

struct inode {
    uint64_t ino; /* constant */

    /* guarded by the table lock */
    char *path;       /* "" for the root; NULL once unlinked */
    uint64_t nlookup; /* the kernel's lookup count */
    int pins;         /* requests using the inode now */
    int keep;         /* holds data not yet uploaded: not freed at nlookup 0 */
    int local;        /* exists only here so far (created, not yet uploaded) */
    size_t path_hash; /* of path (set with it) */
    struct inode *next_ino, *next_path;

    /* lock guards everything below; take it before the table lock, never after */
    pthread_mutex_t lock;
    struct stat st;     /* st_ino set; the rest valid when attr_expire > 0 */
    double attr_expire; /* monotonic time the attributes go stale; 0: unknown */
    int meta_known;     /* st mode/uid/gid/mtime came from metadata or from us */
    time_t obj_mtime;   /* the object's Last-Modified when those were read from
                           it; 0: unknown (this mount wrote it since, at wrote_at) */
    time_t wrote_at;
    int has_marker;         /* directory with a "name/" marker object */
    int entry_attrs;        /* its marker says listings misstate entries (listed_mark) */
    int marking;            /* (atomic) a listed_mark of this directory is under way */
    char etag[S3_ETAG_MAX]; /* of the object, "" when unknown */
    uint64_t etag_hash;     /* when etag is "": a listing's ops_etag_hash of it, or 0 */
    char *link;             /* symlink target, once read */
    struct cfile *cf;       /* local content (open files, cached data, pending upload) */
    int opens;              /* open file handles */
    int flush_watched;      /* the flusher has it on its list */
    struct listing *dir;    /* cached listing of a directory (fs dir_lock) */
    double dir_expire;      /* (fs dir_lock) */
    uint64_t dir_changes;   /* (fs dir_lock) changes this mount made in it (ops_dir_note) */
    /* Names known to be absent (fs dir_lock): a name that is neither in neg
     * nor in added (names this mount created or removed since neg was
     * listed) does not exist, until neg_expire. Spares the S3 requests of
     * a negative lookup, the common case of tar x, cp -r and shell loops. */
    struct listing *neg;
    double neg_expire;
    struct nameset added;
    pthread_cond_t cond; /* with lock: signalled when background fetches end */
    /* Attributes a holder of lock about to wait long with it (an upload,
     * a read waiting on S3) published for the readers it would hold up
     * (inode_lock_or_published): made at the first publish, kept until the
     * inode is freed, so that most inodes (listed, never read) go without. */
    struct inode_pub *pub;
};

struct inode_table {
    pthread_mutex_t lock;
    struct inode **by_ino, **by_path;
    size_t n_buckets; /* power of two, both arrays */
    size_t count;
    uint64_t next_ino;
    /* called with no lock held when an inode leaves the table, before it is
     * freed: releases what other modules hung on it (cf, dir, link) */
    void (*on_free)(struct inode *inode, void *arg);
    void *on_free_arg;
};

/* Set up a table holding the root inode. Returns 0 or -ENOMEM. */
int inode_table_init(struct inode_table *t, void (*on_free)(struct inode *, void *), void *arg);

/* Free every inode (calling on_free) and the table. */
void inode_table_release(struct inode_table *t);

/* The inode numbered ino, pinned, or NULL. Unpin with inode_put. */
struct inode *inode_get(struct inode_table *t, uint64_t ino);

/* The inode at path, pinned, or NULL. */
struct inode *inode_get_path(struct inode_table *t, const char *path);

/* The inode at path, created (all attributes unknown) when there is none;
 * pinned. *created (optional) tells which. NULL when out of memory. */
struct inode *inode_make(struct inode_table *t, const char *path, int *created);

/* inode_make of name in the directory numbered parent, at the directory's
 * path of the moment (a lookup that raced a rename of the directory does
 * not leave an inode under the old name). NULL with *err -ENOENT (the
 * directory is unknown or gone) or -ENOMEM. */
struct inode *inode_make_child(struct inode_table *t, uint64_t parent, const char *name, int *err);

/* Count one lookup by the kernel (a reply with an entry). */
void inode_count_lookup(struct inode_table *t, struct inode *inode);

/* Unpin; frees the inode when nothing holds it any more. NULL is fine. */
void inode_put(struct inode_table *t, struct inode *inode);

/* The kernel forgets n lookups of ino. */
void inode_forget(struct inode_table *t, uint64_t ino, uint64_t n);

/* A malloc'd copy of the inode's path into *out. Returns 0, -ENOENT when the
 * inode was unlinked, -ENOMEM. */
int inode_path(struct inode_table *t, struct inode *inode, char **out);

/* For a holder of inode->lock about to wait long with it: readers of
 * attributes get st meanwhile, until inode_unpublish (still holding it). */
void inode_publish(struct inode *inode, const struct stat *st);
void inode_unpublish(struct inode *inode);

/* Take inode->lock and return 1; or, when its holder published attributes
 * (inode_publish), copy them into st and return 0 without it. */
int inode_lock_or_published(struct inode *inode, struct stat *st);

/* Set or read the keep and local flags (table lock inside). */
void inode_set_flags(struct inode_table *t, struct inode *inode, int keep, int local);
int inode_is_local(struct inode_table *t, struct inode *inode);

/* The inode no longer has a name (unlink, rmdir, replaced by a rename). */
void inode_detach(struct inode_table *t, struct inode *inode);

/* After a rename of from to to: inodes at to and under to/ lose their names,
 * then the inode at from and those under from/ are renamed. Returns 0 or
 * -ENOMEM (then nothing changed). */
int inode_move(struct inode_table *t, const char *from, const char *to);

/* Call fn for each local-only inode whose parent directory is dir, with
 * its name; fn must not use the table. Returns the number of calls. */
size_t inode_local_children(struct inode_table *t, const char *dir,
                            void (*fn)(void *arg, const char *name, struct inode *inode),
                            void *arg);

/* Whether a local-only inode exists under dir/ (any depth). */
int inode_has_local_under(struct inode_table *t, const char *dir);

/* Monotonic time in seconds. */
double inode_now(void);

#endif
