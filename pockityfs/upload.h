/* upload: putting objects of the pocket with the quota protocol around
 * them — remote_reserve before, remote_commit after success,
 * remote_release after failure — as one PUT or as a parallel multipart
 * upload for large bodies, and server-side copies (rename). A multipart
 * upload is recorded in the journal while under way, so that the next start
 * aborts one a kill cut short. */
#ifndef POCKITYFS_UPLOAD_H
#define POCKITYFS_UPLOAD_H

#include <stdint.h>
#include <sys/stat.h>

#include "s3.h"

struct fs;

#define UPLOAD_MULTIPART_MIN (16ull << 20) /* bodies from this size go multipart */
/* The smallest part: RGW takes parts of 8 MiB faster and with less CPU than
 * larger ones (a 1 GiB close: 2.8-2.9 s against 3.2-3.7 s with 16 MiB). */
#define UPLOAD_PART_MIN (8ull << 20)

struct stream;

/* Where the body comes from: a descriptor (fd >= 0, read with pread) or
 * memory (fd < 0, data may be NULL when size is 0). stream (optional): the
 * streamed upload of that content (stream.h), consumed by the upload, which
 * finishes it, or falls back to uploading the body when it does not match. */
struct upload_body {
    int fd;
    const void *data;
    uint64_t size;
    struct stream *stream;
    long s3_ms; /* the upload's time in all, retries included, for the parts this
                 * thread sends (0: the S3 client's limits); not for a stream */
};

/* Whether the file at path with attributes st is to be uploaded
 * multipart so that listings tell by its ETag that they misstate it
 * (meta_listing_misstates): for its mode, or for its owner or time when
 * its directory's marker cannot say so instead (listed_mark, tried
 * here). An empty file is uploaded as one empty part. */
int upload_misstated(struct fs *fs, const char *path, const struct stat *st);

/* Upload path (relative to the pocket prefix; as_dir adds the '/' of a
 * directory marker) with st's mode, uid, gid and mtime as metadata. etag
 * (optional) receives the new ETag. Returns 0 or -errno: -EDQUOT when the
 * reservation is refused, -EACCES when the key may not write, -EIO. */
int upload_put(struct fs *fs, const char *path, int as_dir, const struct upload_body *body,
               const struct stat *st, char etag[S3_ETAG_MAX]);

/* upload_put of a file (not a marker) with a reservation the caller took
 * already for path and at least body->size bytes (NULL: reserve here). The
 * reservation is consumed either way: committed after success, released
 * after failure. */
int upload_put_reserved(struct fs *fs, const char *path, const struct upload_body *body,
                        const struct stat *st, const char *reservation, char etag[S3_ETAG_MAX]);

/* Copy of from to to (both relative), size bytes, keeping the metadata:
 * one CopyObject up to the mount's copy_max (5 GiB, S3's limit), else a
 * multipart copy, server-side (UploadPartCopy) unless the service refuses
 * that, then through the mount (each part fetched into a temporary file
 * in the cache folder and uploaded; the source must keep its ETag
 * meanwhile, and size must be its size). Reserves and commits like an
 * upload. Returns 0 or -errno. */
int upload_copy(struct fs *fs, const char *from, const char *to, uint64_t size);

/* Give the object key (size bytes, ETag was when not NULL or "") the
 * metadata of opts: a copy onto itself, as upload_copy makes them (no
 * reservation: the size stays). Past copy_max an object that is no longer
 * of that size and ETag is left alone (-EIO). etag receives the new ETag.
 * Returns 0 or -errno (logged). */
int upload_restamp(struct fs *fs, const char *key, uint64_t size, const char *was,
                   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX]);

/* Complete the multipart upload upload_id of key: parts 1..n with etags,
 * size bytes in all; etag receives the object's. Returns an S3 status. */
int upload_complete(struct s3_client *s3, const char *key, const char *upload_id, int n,
                    char (*etags)[S3_ETAG_MAX], uint64_t size, char etag[S3_ETAG_MAX]);

/* Part size for a multipart upload of size bytes: UPLOAD_PART_MIN, or
 * more to stay within 10000 parts; whole MiB. */
uint64_t upload_part_size(uint64_t size);

#endif
