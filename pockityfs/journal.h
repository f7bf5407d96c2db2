/* journal: the pending-upload journal of a mount, an SQLite database in the
 * cache folder (WAL, synchronous=FULL). A row names a path of the pocket
 * whose newest content sits in a local file and is not in S3 yet; it is
 * written durably before the failure of an upload is reported, and removed
 * once the content is in S3 (or the file is deleted). Thread-safe. */
#ifndef POCKITYFS_JOURNAL_H
#define POCKITYFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct journal;

struct journal_entry {
    char *path; /* relative to the pocket prefix */
    char *file; /* name of the data file inside the cache folder's files/ */
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

/* Insert or replace the row of e->path and make it durable. Returns 0 or -EIO. */
int journal_put(struct journal *j, const struct journal_entry *e);

/* Remove the row of path (none is fine). Returns 0 or -EIO. */
int journal_remove(struct journal *j, const char *path);

/* Every row, oldest first, into a malloc'd array the caller frees with
 * journal_entries_free. Returns 0, -EIO or -ENOMEM. */
int journal_list(struct journal *j, struct journal_entry **out, size_t *n);
void journal_entries_free(struct journal_entry *e, size_t n);

#endif
