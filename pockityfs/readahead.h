/* readahead: the mount's background read-ahead — a small pool of threads,
 * shared by every file, that fetch the blocks ahead of a sequential reader
 * with ranged GETs, several in flight at once, and land them in the cfile's
 * local file. RAM is bounded by the pool (one chunk per worker); the data
 * lives in the cache folder. */
#ifndef POCKITYFS_READAHEAD_H
#define POCKITYFS_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

struct fs;
struct cfile;
struct readahead;

/* RGW here serves 2 MiB ranges fastest: 8 GETs of 2 MiB at a time read 1 GiB
 * in 1.4-2.2 s, of 4 MiB in 3.8-8.2 s (s3bench get-big sweeps, see the header
 * of bench/mount). */
#define RA_WORKERS  8
#define RA_CHUNK    (2u << 20) /* bytes of one background GET */
#define RA_PER_FILE 8          /* fetches of one file queued or running at most */

/* Start the pool over fs (its inode table and S3 client). Returns 0 or -errno. */
int readahead_start(struct fs *fs, struct readahead **out);

/* Stop the threads (fetches running end first) and free; NULL is fine. */
void readahead_free(struct readahead *ra);

/* Fetch bytes [start, start + len) of the object key (whose ETag should
 * be etag, "" when unknown) for cf, whose blocks there are already marked
 * busy and counted in cf->inflight. When the fetch ends the owner's lock is
 * taken and cfile_ra_land is called (if cf is still the inode's cfile).
 * Caller holds the owner's lock. Returns 0, or -ENOMEM or -EINVAL (len past
 * RA_CHUNK): nothing queued. */
int readahead_queue(struct readahead *ra, struct cfile *cf, const char *key, uint64_t start,
                    uint64_t len);

/* Drop the fetches of cf not started yet (the reader jumped), clearing their
 * busy blocks. Caller holds the owner's lock. */
void readahead_cancel(struct readahead *ra, struct cfile *cf);

#endif
