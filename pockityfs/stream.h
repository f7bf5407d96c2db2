/* stream: the upload of a large file while it is still being written. A
 * file written only at its end since it was empty starts a multipart
 * upload once it holds STREAM_START bytes; its full parts go up in the
 * background, read from the cache file, while the writer goes on, so the
 * close only sends the last part and completes. Any other change (a write
 * elsewhere, a truncate, a rename) abandons the stream and the close
 * uploads the whole file as before; the stream changes when data is in S3,
 * never what close and fsync promise. */
#ifndef POCKITYFS_STREAM_H
#define POCKITYFS_STREAM_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

#include "s3.h"
#include "upload.h"

#define STREAM_PART  UPLOAD_PART_MIN /* every part but the last */
#define STREAM_START (2 * STREAM_PART)
/* The largest file streamed: the metadata of a finished stream may need a
 * rewrite (its mtime is the time the stream started), and one CopyObject
 * rewrites at most 5 GiB. A larger file abandons its stream. */
#define STREAM_MAX (5ull << 30)

struct journal;

/* The streams of a mount: counts the live ones so that the mount waits for
 * abandoned ones to abort their upload before its S3 client goes. */
struct streams {
    struct journal *journal; /* records the uploads under way (NULL: not) */
    pthread_mutex_t lock;    /* guards live */
    pthread_cond_t idle;
    int live;
};

/* Set up set; journal (may be NULL) records each upload until it is
 * completed or aborted (journal_upload_add). */
void streams_init(struct streams *set, struct journal *journal);
/* Wait up to timeout_ms for every stream to end, then release set. Returns
 * the number still live (their workers still use the S3 client and the
 * journal: keep both). */
int streams_release(struct streams *set, long timeout_ms);

struct stream;

/* Start streaming the content behind fd (dup'ed: the caller keeps its own)
 * to key, with st's attributes as the object's metadata and size bytes
 * written so far, workers parts in flight. The upload is created in the background. NULL
 * when the stream cannot start (the close uploads as usual). */
struct stream *stream_start(struct streams *set, struct s3_client *s3, const char *key, int fd,
                            const struct stat *st, uint64_t size, int workers);

/* The content of the object key grew to size bytes, written at its end:
 * send the parts now full. Returns 0, or -1 when the stream cannot go on
 * (past STREAM_MAX, a part failed, or key is not the stream's any more: a
 * directory above was renamed): abandon it. */
int stream_grow(struct stream *s, const char *key, uint64_t size);

/* Abandon the stream: parts in flight end in the background, then the
 * upload is aborted and the stream freed. NULL is fine. */
void stream_cancel(struct stream *s);

/* Finish the stream as the object key of size bytes (the whole content,
 * written at its end since the stream started, at most STREAM_MAX): send what is left, wait
 * for every part, complete. *meta_stale is set when the metadata the
 * upload was created with differs from st's (the caller rewrites it).
 * The stream is consumed. Returns 0 with etag, -EAGAIN when the stream does
 * not match (another key, fewer bytes) or a part failed (upload the usual
 * way), or -errno when the completion failed. */
int stream_finish(struct stream *s, const char *key, uint64_t size, const struct stat *st,
                  char etag[S3_ETAG_MAX], int *meta_stale);

#endif
