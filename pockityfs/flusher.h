/* flusher: the mount's background uploads — uploads that failed and were
 * journaled (retried while mounted, with backoff, not only at the next
 * mount) and files kept open with data not uploaded for a while (uploaded
 * without waiting for their close). One thread; it takes each inode's lock
 * for the upload, so writers of that file wait meanwhile. */
#ifndef POCKITYFS_FLUSHER_H
#define POCKITYFS_FLUSHER_H

#include <stdint.h>

struct fs;
struct inode;
struct flusher;

#define FLUSHER_QUIET     2.0   /* seconds without writes before a background upload */
#define FLUSHER_RETRY_MIN 2.0   /* first pause before retrying a failed upload */
#define FLUSHER_RETRY_MAX 120.0 /* longest pause between retries */

/* Start the thread over fs. upload_after: seconds an open file's data may
 * stay dirty before it is uploaded while quiet (FLUSHER_QUIET without
 * writes), or in any case after four times as long. Returns 0 or -errno. */
int flusher_start(struct fs *fs, double upload_after, struct flusher **out);

/* Stop and join the thread; NULL is fine. */
void flusher_free(struct flusher *f);

/* in holds data not uploaded (its cfile is dirty). Caller holds in->lock.
 * Cheap when in is already watched. */
void flusher_note(struct flusher *f, struct inode *in);

#endif
