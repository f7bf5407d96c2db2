/* readahead: the mount's background read-ahead — a small pool of threads,
 * shared by every file, that fetch the blocks ahead of a sequential reader
 * with ranged GETs, several in flight at once. A fetch lands in the cfile's
 * local file, or, for a file streamed through memory (cfile.h), stays in
 * its buffer, held by the cfile until the reader has passed it. RAM is
 * bounded by the buffers (RA_BUFS chunks); cached data lives in the cache
 * folder. */
#ifndef POCKITYFS_READAHEAD_H
#define POCKITYFS_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

struct fs;
struct cfile;
struct readahead;

/* Ranges of 8 MiB came back faster than 2 MiB ones here, and RGW spent a
 * seventh less CPU on them (s3bench get-big sweeps of 1 GiB, 2026-11-28:
 * 4 GETs of 8 MiB at a time 0.83 s, 8 of 2 MiB 0.92 s); four in flight
 * keep the buffers at 48 MiB. */
#define RA_WORKERS  4
#define RA_CHUNK    (8u << 20)       /* bytes of one background GET */
#define RA_BUFS     (RA_WORKERS + 2) /* one per worker, and chunks held for readers */
#define RA_PER_FILE 8                /* fetches of one file queued or running at most */

/* Start the pool over fs (its inode table and S3 client). Returns 0 or -errno. */
int readahead_start(struct fs *fs, struct readahead **out);

/* Stop the threads (fetches running end first) and drop the fetches not
 * started; the buffers stay until readahead_free, so that cfiles freed
 * later can still give theirs back. NULL is fine. */
void readahead_stop(struct readahead *ra);

/* Stop, then free the buffers and ra; NULL is fine. */
void readahead_free(struct readahead *ra);

/* Fetch bytes [start, start + len) of the object key (whose ETag should
 * be etag, "" when unknown) for cf, whose blocks there are already marked
 * busy and counted in cf->inflight. When the fetch ends the owner's lock is
 * taken and cfile_ra_land is called (if cf is still the inode's cfile),
 * which lands the bytes or keeps the buffer.
 * Caller holds the owner's lock. Returns 0, or -ENOMEM or -EINVAL (len past
 * RA_CHUNK): nothing queued. */
int readahead_queue(struct readahead *ra, struct cfile *cf, const char *key, uint64_t start,
                    uint64_t len);

/* The cfile whose id is cf_id lets go of buf, a chunk it held
 * (cfile_ra_land kept it): the buffer is free again, unless the read-ahead
 * took it back meanwhile. Caller holds the owner's lock. */
void readahead_give_back(struct readahead *ra, uint64_t cf_id, const char *buf);

/* Drop the fetches of cf not started yet (the reader jumped), clearing their
 * busy blocks. Caller holds the owner's lock. */
void readahead_cancel(struct readahead *ra, struct cfile *cf);

#endif
