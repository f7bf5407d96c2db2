/* cfile: the local content of one file in the cache folder — a sparse local
 * file with a bitmap of the 1 MiB blocks already fetched from the object —
 * and the data cache: a byte budget over the clean cfiles, trimmed least
 * recently used first. Writes go to the local file; blocks a write touches
 * partially are fetched first, so uploading only needs the blocks not yet
 * present. A file the mount creates starts in memory instead (no local
 * file, whose creation is most of the cost of a small file): it moves to a
 * local file once it outgrows CFILE_MEM_MAX or the memory budget. A large
 * object read sequentially streams through read-ahead buffers instead of
 * the local file (cfile_ra_land). Unless said otherwise the caller holds the
 * owning inode's lock. */
#ifndef POCKITYFS_CFILE_H
#define POCKITYFS_CFILE_H

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "readahead.h"
#include "s3.h"

#define CFILE_BLOCK        (1u << 20)
#define CFILE_RA_MAX       (32u << 20) /* largest read-ahead */
#define CFILE_MEM_MAX      (64u << 10) /* largest content held in memory */
#define CACHE_MEM_MAX      (16u << 20) /* memory of all in-memory contents */
#define CACHE_KEPT_BUCKETS 1024
#define CACHE_KEPT_MAX     4096 /* cfiles kept after their inodes, at most */

struct inode;

/* A list of clean cfiles, most recently used first. */
struct lru {
    struct cfile *head, *tail;
};

struct cache {
    pthread_mutex_t lock; /* guards used, mem, the lists, seq and each cfile's lru fields */
    uint64_t limit;       /* bytes of clean data kept */
    uint64_t used;
    uint64_t mem;         /* bytes allocated by in-memory cfiles, at most CACHE_MEM_MAX */
    struct lru files;     /* clean cfiles with a local file */
    struct lru mems;      /* clean in-memory cfiles */
    char dir[PATH_MAX];   /* where the local files live */
    struct readahead *ra; /* where held chunks go back; NULL: none are held */
    struct cfile **kept;  /* CACHE_KEPT_BUCKETS chains of kept cfiles (cfile_keep), or NULL */
    size_t n_kept;
    uint64_t seq;
    uint64_t run; /* random: local file names never repeat across runs (cache_index.h) */
};

struct cfile {
    struct inode *owner;  /* NULL while kept (cfile_keep), constant otherwise */
    char *key;            /* while kept: the object's key; NULL otherwise */
    struct cfile *knext;  /* while kept: the next in its chain */
    int fd;               /* -1 while closed (idle), and in memory */
    char name[48];        /* file name inside cache->dir */
    int in_mem;           /* the content is mem[0, size): no local file */
    char *mem;            /* NULL while in_mem with nothing allocated */
    size_t mem_cap;       /* allocated, counted in cache->mem */
    uint64_t size;        /* logical size */
    uint64_t remote_size; /* bytes [0, remote_size) not present come from the object */
    char etag[S3_ETAG_MAX];
    uint8_t *bits;  /* present blocks below remote_size */
    size_t nblocks; /* blocks covering remote_size */
    size_t npresent;
    int dirty;             /* differs from the object */
    double dirty_since;    /* monotonic time it became dirty */
    double last_write;     /* monotonic time of the last write or truncate */
    int journaled;         /* has a journal row */
    int tried;             /* an upload of it was begun: the object may exist */
    int deferred;          /* journaled by the close of a descriptor another process
                              holds (ops_flush): uploads at its opener's close, its
                              last release or upload_after, not at once */
    int replayed;          /* pending at start-up: its object may exist already */
    int appending;         /* every write since the content was empty was at its end */
    struct stream *stream; /* the upload of the content as it is written (stream.h), or NULL */
    uint64_t ra_next;      /* where a sequential read would continue */
    uint64_t ra_window;    /* current read-ahead */
    uint64_t ra_shed;      /* the local file's pages below it were let go (cfile_read) */
    /* background read-ahead (readahead.c) */
    uint64_t id;     /* unique in the mount: background fetches name their cfile by it */
    uint64_t gen;    /* bumped when the block layout changes (truncate, upload) */
    uint8_t *busy;   /* blocks a background fetch is bringing (one bit each) */
    size_t busy_cap; /* blocks busy can describe */
    int inflight;    /* background fetches of this cfile not yet ended */
    int ra_err;      /* -errno of the last background fetch, if it failed */
    size_t ra_sched; /* first block not yet handed to background fetches */
    /* chunks of a streamed file held in read-ahead buffers: the object's
     * bytes [start, start + len), not in the local file */
    struct cfile_held {
        const char *data; /* NULL: a free slot */
        uint64_t start, len;
    } held[RA_BUFS];
    /* the quota reservation close took for the queued upload (ops_file.c) */
    char resv_id[64]; /* "" when none */
    uint64_t resv_size;
    char *resv_path;
    int queued; /* in the flusher's upload queue */
    /* guarded by cache->lock */
    struct lru *in_lru; /* the list it is on, or NULL */
    uint64_t counted;   /* bytes counted in cache->used */
    struct cfile *prev, *next;
};

/* Where missing blocks come from. */
struct cfile_src {
    struct s3_client *s3;
    const char *key;      /* full object key */
    struct readahead *ra; /* background read-ahead; NULL: fetch inline */
};

/* Set up the cache over dir (which must exist). */
void cache_init(struct cache *c, const char *dir, uint64_t limit);

/* Free the kept cfiles and the cache. Their local files are removed,
 * unless keep_files (the cache index names them: cache_index.h). */
void cache_release(struct cache *c, int keep_files);

/* Call fn on each kept cfile, least recently used first, with c->lock
 * held, until fn returns non-zero. Returns that, or 0. */
int cache_each_kept(struct cache *c, int (*fn)(void *arg, const struct cfile *cf), void *arg);

/* Keep, as the most recently used, what an earlier run of the mount kept:
 * its local file name, holding size bytes of the object key at etag, the
 * 1 MiB blocks present as bits (bits_len bytes, one bit a block) says.
 * Returns 0, or -EINVAL (nothing present, or key already kept), -ENOSPC
 * (CACHE_KEPT_MAX are kept) or -ENOMEM; the local file is then not the
 * cache's. */
int cache_adopt_kept(struct cache *c, const char *key, const char *name, uint64_t size,
                     const char *etag, const uint8_t *bits, size_t bits_len);

/* Drop clean data, least recently used first, until the budget holds. Call
 * with no inode lock held. */
void cache_trim(struct cache *c);

/* Whether a cfile is kept for the object key; if so, its ETag goes to etag. */
int cache_kept_etag(struct cache *c, const char *key, char etag[S3_ETAG_MAX]);

/* A cfile for the object key (remote_size bytes, etag): the one kept for
 * it when its inode went (cfile_keep) if it still holds that version of
 * the object, else a new one with nothing present, in memory when
 * remote_size is 0 and the budget allows. key may be NULL (not known, or a
 * new file). Returns 0 or -errno. */
int cfile_new(struct cache *c, struct inode *owner, uint64_t remote_size, const char *etag,
              const char *key, struct cfile **out);

/* cf's inode goes: a clean cfile with blocks in its local file stays in
 * the cache as the object key's (counted in the budget, trimmed least
 * recently used first; past CACHE_KEPT_MAX the least recently used kept
 * one goes), for cfile_new to take up again; any other is
 * freed, its local file removed unless remove_file is 0. Caller holds the
 * owner's lock. NULL is fine. */
void cfile_keep(struct cache *c, struct cfile *cf, const char *key, int remove_file);

/* A cfile over an existing local file holding the whole content (a
 * journaled upload found at start-up), dirty and journaled. */
int cfile_adopt(struct cache *c, struct inode *owner, const char *name, struct cfile **out);

/* An in-memory cfile holding a copy of data[0, size) (a journaled upload
 * found at start-up), dirty and journaled. */
int cfile_adopt_mem(struct cache *c, struct inode *owner, const void *data, uint64_t size,
                    struct cfile **out);

/* Free (abandoning the stream); remove_file also deletes the local file.
 * NULL is fine. */
void cfile_free(struct cache *c, struct cfile *cf, int remove_file);

/* Where the bytes of a read are; valid while the owner's lock is held. */
struct cfile_span {
    const char *mem; /* the bytes, when the content is in memory; else NULL */
    int fd;          /* else the local file, holding them at the read's offset */
};

/* Make up to len bytes at off present (fetching what is missing) and say
 * where they are: the caller copies them out, or splices them from the
 * local file, before it lets go of the lock. Returns the count (0 at the
 * end) or -errno. */
long cfile_read(struct cache *c, struct cfile *cf, const struct cfile_src *src, uint64_t off,
                size_t len, struct cfile_span *out);

/* Write len bytes at off; returns len or -errno. Marks the cfile dirty. A
 * write elsewhere than at the end abandons the stream. */
long cfile_write(struct cache *c, struct cfile *cf, const struct cfile_src *src, uint64_t off,
                 const char *buf, size_t len);

/* Set the size; marks the cfile dirty and abandons the stream. Returns 0
 * or -errno. */
int cfile_truncate(struct cache *c, struct cfile *cf, uint64_t size);

/* Abandon the stream (cancelled, NULL) and start none until the content
 * is emptied again: it changed other than at its end, or its upload
 * cannot go on. */
void cfile_unstream(struct cfile *cf);

/* Whether every byte of the content is local (no block left to fetch). */
int cfile_whole(const struct cfile *cf);

/* Fetch every block not yet present (before an upload). Returns 0 or -errno. */
int cfile_fill(struct cfile *cf, const struct cfile_src *src);

/* The open descriptor of the local file (opened when idle; an in-memory
 * cfile moves to a local file first). -errno on failure. */
int cfile_fd(struct cache *c, struct cfile *cf);

/* Mark the content dirty (not counted in the budget) or clean after an
 * upload that produced etag: everything is present and is the object. */
void cfile_set_dirty(struct cache *c, struct cfile *cf);
void cfile_set_clean(struct cache *c, struct cfile *cf, const char *etag);

/* A background fetch of bytes [start, start + len) for cf ended: data
 * (NULL when it failed or was cancelled) lands in the blocks still missing
 * if the layout is still gen and the object's ETag etag; the blocks stop
 * being busy and waiting readers wake. A file streamed through memory (its
 * object larger than a quarter of the cache budget, which caching it would
 * mostly flush, for bytes the kernel's page cache keeps anyway) keeps data
 * instead, when none of its blocks is present: reads are answered from it
 * until the reader passes it, the content changes, or the read-ahead takes
 * the buffer back (cfile_ra_drop). err is the fetch's -errno when it
 * failed (0 when cancelled): a reader that waited for those blocks then
 * fails with it instead of fetching them itself, so that a silent S3 costs
 * it one wait. Returns whether data was kept. Caller holds the owner's
 * lock. */
int cfile_ra_land(struct cache *c, struct cfile *cf, uint64_t gen, uint64_t start, uint64_t len,
                  const char *data, const char *etag, int err);

/* Forget the held chunk data (the read-ahead takes its buffer back).
 * Caller holds the owner's lock. */
void cfile_ra_drop(struct cfile *cf, const char *data);

/* The last handle was closed: close the descriptor, count a clean cfile in
 * the cache budget. */
void cfile_idle(struct cache *c, struct cfile *cf);

#endif
