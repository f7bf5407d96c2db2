/* fs: the state of one mount shared by the FUSE operations, and the
 * operations table (ops.c) that main.c hands to libfuse. */
#ifndef POCKITYFS_FS_H
#define POCKITYFS_FS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cfile.h"
#include "flusher.h"
#include "inode.h"
#include "journal.h"
#include "meta.h"
#include "names.h"
#include "readahead.h"
#include "remote.h"
#include "s3.h"
#include "stream.h"

struct fs_options {
    char *key_file;
    char *cache_dir;
    char *cache_size; /* as given; parsed into fs.cache.limit */
    char *copy_max;   /* as given; parsed into fs.copy_max */
    double attr_timeout;
    double dir_timeout;
    int write_timeout;   /* seconds quota calls wait for an unreachable pockityd */
    int upload_threads;  /* parts in flight per multipart upload */
    double upload_after; /* seconds open files stay dirty before a background upload */
    char *log_level;
    int ro;
};

struct fs {
    struct fs_options opt;
    struct remote *remote;
    struct remote_session session; /* prefix, bucket, quota at start */
    struct s3_client *s3;
    struct inode_table inodes;
    struct cache cache;
    struct journal *journal;
    struct flusher *flusher;     /* NULL until the mount serves */
    struct readahead *readahead; /* NULL: reads fetch inline */
    struct streams streams;      /* uploads of files as they are written */
    struct meta_defaults defaults;
    int read_only;                  /* ro mount or read-only key */
    uint64_t copy_max;              /* largest object copied with one CopyObject */
    atomic_int part_copy_refused;   /* the service refuses UploadPartCopy (upload.c) */
    char dir[PATH_MAX];             /* the pocket's cache folder */
    char index_path[PATH_MAX + 16]; /* its cache index (cache_index.h) */
    char source[2048];              /* the bucket the index is of: endpoint and name */
    pthread_mutex_t dir_lock;       /* guards every inode's dir and dir_expire, and: */
    pthread_cond_t listers_idle;
    int listers;                 /* threads listing the rest of a directory (ops_dir.c) */
    int stopping;                /* the mount is going away: listers stop */
    struct names names;          /* changes to S3 apart from a directory rename */
    pthread_mutex_t rename_lock; /* one rename at a time: it locks two inodes */
};

/* The low-level operations of the mount; userdata is the struct fs. */
extern const struct fuse_lowlevel_ops fs_ops;

/* Free what an inode holds besides itself (inode_table on_free hook). */
void fs_inode_free(struct inode *inode, void *arg);

/* Upload every journaled pending upload (at start-up, before serving),
 * after aborting the multipart uploads an earlier run left under way.
 * What cannot be uploaded stays journaled and is served from the cache.
 * Returns the number left pending. */
size_t fs_replay(struct fs *fs);

/* Hand the files still pending after fs_replay to the flusher, which
 * retries them while the mount runs. */
void fs_watch_pending(struct fs *fs);

#endif
