/* meta: file attributes as S3 user metadata, named as s3fs names them
 * (x-amz-meta-mode, -uid, -gid, -mtime), and the checks on names and keys. */
#ifndef POCKITYFS_META_H
#define POCKITYFS_META_H

#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

#include "s3.h"

#define META_NAME_MAX 255 /* longest file name (one path component) */

/* Defaults for attributes an object does not carry. */
struct meta_defaults {
    uid_t uid;
    gid_t gid;
    mode_t file_mode; /* permission bits of files without x-amz-meta-mode */
    mode_t dir_mode;  /* permission bits of directories without it */
    time_t dir_time;  /* the time of a directory without a marker: the mount's start */
};

/* Fill st from an object's HEAD. is_marker says the key ended in '/' (a
 * directory marker, whatever its size). An object without the slash is a
 * directory when its mode says S_IFDIR or its content type is
 * application/x-directory (older s3fs), a symlink when its mode says
 * S_IFLNK, a regular file otherwise. Mode bits without a type get one from
 * the key. st_ino is left 0. */
void meta_to_stat(const struct s3_head *head, int is_marker, const struct meta_defaults *d,
                  struct stat *st);

#define META_MTIME_SLACK     2 /* seconds a listing's time may be off the mtime */
#define META_MISSTATES_MODE  1
#define META_MISSTATES_OTHER 2

/* What a listing, which shows an object uploaded at time now as
 * S_IFREG | d->file_mode of d's owner, modified at now, would misstate of
 * st: META_MISSTATES_MODE for its type, its execute and set-id bits, or a
 * permission the file withholds (with allow_other the kernel grants what
 * the attributes say; a file that allows more than the default may show
 * less); META_MISSTATES_OTHER for its owner, or its mtime by more than
 * META_MTIME_SLACK (a time kept by cp -p, tar x, rsync -a, touch -d).
 * pockityfs marks such objects, or their directory, so that listings read
 * their attributes from the objects (docs/pockityfs.md). */
int meta_listing_misstates(const struct stat *st, const struct meta_defaults *d, time_t now);

/* st's size and the 512-byte blocks it takes (du and ls -s read those). */
void meta_set_size(struct stat *st, uint64_t size);

/* Attributes of an entry known only from a listing: a directory (a common
 * prefix) or a file of size bytes modified at mtime. */
void meta_default_stat(int is_dir, uint64_t size, time_t mtime, const struct meta_defaults *d,
                       struct stat *st);

/* Metadata for a PUT or a copy with REPLACE: mode, uid, gid and mtime of st
 * as decimal strings, as s3fs writes them. The strings live in the struct. */
struct meta_set {
    char mode[16], uid[16], gid[16], mtime[32];
    struct s3_meta items[5];
    size_t n;
};
void meta_from_stat(const struct stat *st, struct meta_set *out);

/* A directory marker's metadata item saying that the directory's entries
 * may have attributes a listing misstates (listed_mark). */
#define META_ENTRY_ATTRS "pockity-entry-attrs"
void meta_set_entry_attrs(struct meta_set *m);

/* Put options with out's metadata (content type left to the client). */
struct s3_put_opts meta_put_opts(const struct meta_set *m);

/* Parse a decimal unsigned value of metadata; -1 when absent or malformed. */
long long meta_parse_uint(const char *s);

/* Whether name can be a file name here: not empty, not "." or "..", no '/',
 * at most META_NAME_MAX bytes. Returns 0, -EINVAL or -ENAMETOOLONG. */
int meta_check_name(const char *name);

/* Join a directory path ("" for the root) and a name into out (size
 * bytes). Returns 0 or -ENAMETOOLONG. */
int meta_join(const char *dir, const char *name, char *out, size_t size);

/* The full object key of path (relative to prefix): prefix + path, plus '/'
 * when as_dir. Returns 0, or -ENAMETOOLONG past S3_MAX_KEY_LEN bytes. */
int meta_key(const char *prefix, const char *path, int as_dir, char out[S3_MAX_KEY_LEN + 1]);

/* The last component of path (after the last '/'), or path itself. */
const char *meta_basename(const char *path);

/* Length of the parent part of path: "a/b/c" -> 3 ("a/b"), "c" -> 0. */
size_t meta_parent_len(const char *path);

#endif
