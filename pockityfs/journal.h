/* journal: the pending-upload journal of a mount, an SQLite database in the
 * cache folder (WAL). A row names a path of the pocket whose newest content
 * is not in S3 yet and holds that content (a small file kept in memory) or
 * names the local file that does: written when close hands the file to the
 * background uploads (it survives a kill -9 of the mount), made durable on
 * disk before the failure of an upload is reported, and removed once the
 * content is in S3 (in batches: journal_uploaded) or the file is deleted.
 * It also lists the multipart uploads under way, so that the next start
 * aborts those a kill left behind (their parts would otherwise stay in the
 * bucket, unseen). Thread-safe. */
#ifndef POCKITYFS_JOURNAL_H
#define POCKITYFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct journal;

struct journal_entry {
    char *path; /* relative to the pocket prefix */
    char *file; /* name of the data file inside the cache folder's files/, */
    void *data; /* or "" with the content here: size bytes (NULL when 0) */
    uint64_t size;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    int64_t mtime;
};

/* Open (creating when missing) path. Returns 0, or -errno with a one-line
 * reason in err. */
int journal_open(const char *path, struct journal **out, char *err, size_t errlen);

/* Close; NULL is fine. */
void journal_free(struct journal *j);

/* Insert or replace the row of e->path. The row survives the end of the
 * process (kill -9) once this returns; durable also makes it survive a
 * power loss (an fsync of the journal). Returns 0 or -EIO. */
int journal_put(struct journal *j, const struct journal_entry *e, int durable);

/* Remove the row of path (none is fine). Returns 0 or -EIO. */
int journal_remove(struct journal *j, const char *path);

/* The rows of paths whose content is now in S3 go in batches, not each in a
 * transaction of its own: this queues the removal of path's row, which must
 * hold the content (a row naming a local file goes at once, before that
 * file can change). The next write to the journal (put, remove, move,
 * list, settle) applies the queue before its own change, as do the queue
 * reaching JOURNAL_BATCH and journal_free. A kill of the process before
 * then replays the row, an upload of what S3 already holds; so whatever is
 * about to change S3 at a path calls journal_settle first, lest the replay
 * undo the change. */
#define JOURNAL_BATCH 64
void journal_uploaded(struct journal *j, const char *path);

/* Apply the queued removals if one of them is of path or below it (path a
 * directory), or with path NULL if there are any; a removal that another
 * thread is applying is waited for. Returns 0 or -EIO (the removals stay
 * queued). The callers go on with their change after a failure: the
 * journal is failing then, and their change is newer than the rows. */
int journal_settle(struct journal *j, const char *path);

/* Give the rows below the directory from (from/...) the same names below
 * to (a renamed directory). Returns 0, -EIO or -ENOMEM. */
int journal_move(struct journal *j, const char *from, const char *to);

/* Give the row of the file from the name to, in place of to's row (if
 * any). Returns 0, -ENOENT (from has none) or -EIO. */
int journal_rename(struct journal *j, const char *from, const char *to);

/* Every row, oldest first, into a malloc'd array the caller frees with
 * journal_entries_free. Returns 0, -EIO or -ENOMEM. */
int journal_list(struct journal *j, struct journal_entry **out, size_t *n);
void journal_entries_free(struct journal_entry *e, size_t n);

/* A multipart upload under way: the object key and its upload id. */
struct journal_upload {
    char *key;
    char *id;
};

/* Record the upload id of key, until journal_upload_remove. The row
 * survives a kill of the process. Returns 0 or -EIO. */
int journal_upload_add(struct journal *j, const char *key, const char *id);
/* Remove the row of upload id (none is fine). Returns 0 or -EIO. */
int journal_upload_remove(struct journal *j, const char *id);
/* Every recorded upload into a malloc'd array the caller frees with
 * journal_uploads_free. Returns 0, -EIO or -ENOMEM. */
int journal_uploads(struct journal *j, struct journal_upload **out, size_t *n);
void journal_uploads_free(struct journal_upload *v, size_t n);

#endif
