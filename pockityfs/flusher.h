/* flusher: the mount's background uploads — files closed with data not yet
 * uploaded (journaled and queued by close, uploaded by a pool of workers,
 * many small files in flight at once), uploads that failed and were
 * journaled (retried while mounted, with backoff, not only at the next
 * mount) and files kept open with data not uploaded for a while (uploaded
 * without waiting for their close). Each upload holds the inode's lock, so
 * writers of that file wait meanwhile. */
#ifndef POCKITYFS_FLUSHER_H
#define POCKITYFS_FLUSHER_H

#include <stdint.h>

struct fs;
struct inode;
struct flusher;

#define FLUSHER_QUIET     2.0   /* seconds without writes before a background upload */
#define FLUSHER_RETRY_MIN 2.0   /* first pause before retrying a failed upload */
#define FLUSHER_RETRY_MAX 120.0 /* longest pause between retries */
#define FLUSHER_WORKERS   16    /* uploads of closed files in flight at once */
/* Seconds a closed file waits in the queue before its upload: what programs
 * do right after a close (rsync's utimensat, chmod and rename of its
 * temporary file; a save by writing a new file and renaming it over the
 * old) then changes only the file's journal row, not S3 twice over.
 * flusher_wait and the end of the mount do not wait it out. */
#define FLUSHER_SETTLE 0.1

/* Start the thread over fs. upload_after: seconds an open file's data may
 * stay dirty before it is uploaded while quiet (FLUSHER_QUIET without
 * writes), or in any case after four times as long. Returns 0 or -errno. */
int flusher_start(struct fs *fs, double upload_after, struct flusher **out);

/* Upload what is queued (flusher_wait), then stop and join the threads;
 * NULL is fine. */
void flusher_free(struct flusher *f);

/* Queue in for upload by the workers: its cfile is dirty and journaled (and
 * may hold a reservation). Caller holds in->lock. Cheap when already
 * queued. A worker runs ops_sync; a failure leaves the file journaled and
 * retried like any failed upload. */
void flusher_queue(struct flusher *f, struct inode *in);

/* Queue again the closed files whose upload failed before, wait until no
 * queued upload is left or running, then take the rows of the uploaded
 * files out of the journal. Returns 0, or -EIO when an upload ended in
 * failure meanwhile (the file stays journaled). NULL is fine (0). */
int flusher_wait(struct flusher *f);

/* in holds data not uploaded (its cfile is dirty). Caller holds in->lock.
 * Cheap when in is already watched. */
void flusher_note(struct flusher *f, struct inode *in);

/* Finish the release of a handle of in (ops_release_locked) once its lock
 * is free, on a later tick: its holder is an upload, which may wait
 * write_timeout on a silent S3, and a FUSE thread waiting for it is one
 * fewer to serve the mount. Takes over the caller's reference to in.
 * Returns 0, or -ENOMEM (the caller then waits for the lock itself). */
int flusher_release_later(struct flusher *f, struct inode *in);

#endif
