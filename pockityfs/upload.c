/* upload: PUT, parallel multipart upload and server-side copy of pocket
 * objects, each wrapped in a quota reservation. */
#include "upload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "listed.h"
#include "log.h"
#include "parallel.h"
#include "stream.h"

#define COPY_MAX  (5ull << 30) /* largest single CopyObject */
#define COPY_PART (1ull << 30)
#define MAX_PARTS 10000

uint64_t upload_part_size(uint64_t size)
{
    uint64_t part = (size + MAX_PARTS - 1) / MAX_PARTS;
    if (part < UPLOAD_PART_MIN)
        part = UPLOAD_PART_MIN;
    return (part + (1u << 20) - 1) / (1u << 20) * (1u << 20);
}

static int s3_fail(const char *what, const char *key, int st)
{
    log_error("cannot %s '%s': %s %s", what, key, s3_strerror(st), s3_last_error_detail());
    return -s3_status_errno(st);
}

struct mp {
    struct fs *fs;
    const char *key;
    const char *upload_id;
    int fd;           /* the body: this file, */
    const char *data; /* else these bytes */
    uint64_t size, part_size;
    int n_parts;
    pthread_mutex_t lock; /* guards next and status */
    int next;
    int status;
    char (*etags)[S3_ETAG_MAX];
};

static void mp_worker(void *arg)
{
    struct mp *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        int n = m->status == S3_OK && m->next <= m->n_parts ? m->next++ : 0;
        pthread_mutex_unlock(&m->lock);
        if (!n)
            return;
        uint64_t off = (uint64_t)(n - 1) * m->part_size;
        uint64_t len = m->size - off < m->part_size ? m->size - off : m->part_size;
        struct s3_fd f = {.fd = m->fd, .base = off};
        struct s3_mem mem = {.data = m->fd >= 0 ? NULL : (void *)(m->data + off), .len = len};
        struct s3_source src = m->fd >= 0 ? s3_source_fd(&f, len) : s3_source_mem(&mem);
        int st =
                s3_multipart_upload_part(m->fs->s3, m->key, m->upload_id, n, &src, m->etags[n - 1]);
        if (st != S3_OK) {
            pthread_mutex_lock(&m->lock);
            if (m->status == S3_OK)
                m->status = st;
            pthread_mutex_unlock(&m->lock);
            log_error("cannot upload part %d of '%s': %s %s", n, m->key, s3_strerror(st),
                      s3_last_error_detail());
        }
    }
}

/* The RGW here answers some completions with an empty <ETag>, which the
 * client rightly calls malformed: then the object itself tells whether the
 * upload landed (its size and an ETag of n parts). */
int upload_complete(struct s3_client *s3, const char *key, const char *upload_id, int n,
                    char (*etags)[S3_ETAG_MAX], uint64_t size, char etag[S3_ETAG_MAX])
{
    int *numbers = malloc((size_t)n * sizeof(*numbers));
    const char **tags = malloc((size_t)n * sizeof(*tags));
    int st = S3_ERR_NOMEM;
    if (numbers && tags) {
        for (int i = 0; i < n; i++) {
            numbers[i] = i + 1;
            tags[i] = etags[i];
        }
        st = s3_multipart_complete(s3, key, upload_id, numbers, tags, (size_t)n, etag);
    }
    if (st == S3_ERR_BAD_RESPONSE) {
        struct s3_head head = {0};
        char suffix[16];
        snprintf(suffix, sizeof(suffix), "-%d\"", n);
        size_t el, sl = strlen(suffix);
        if (s3_head_object(s3, key, &head) == S3_OK && head.size == size &&
            (el = strlen(head.etag)) > sl && strcmp(head.etag + el - sl, suffix) == 0) {
            memcpy(etag, head.etag, S3_ETAG_MAX);
            st = S3_OK;
        }
        s3_head_release(&head);
    }
    free(numbers);
    free(tags);
    return st;
}

static int put_multipart(struct fs *fs, const char *key, const struct upload_body *body,
                         const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    uint64_t size = body->size;
    char *upload_id = NULL;
    int st = s3_multipart_create(fs->s3, key, opts, &upload_id);
    if (st != S3_OK)
        return s3_fail("start the upload of", key, st);
    journal_upload_add(fs->journal, key, upload_id);
    struct mp m = {.fs = fs,
                   .key = key,
                   .upload_id = upload_id,
                   .fd = body->fd,
                   .data = body->data,
                   .size = size};
    m.part_size = upload_part_size(size);
    m.n_parts = size ? (int)((size + m.part_size - 1) / m.part_size) : 1; /* one empty part */
    m.next = 1;
    m.etags = calloc((size_t)m.n_parts, sizeof(*m.etags));
    pthread_mutex_init(&m.lock, NULL);
    if (!m.etags) {
        m.status = S3_ERR_NOMEM;
    } else {
        parallel_run(fs->opt.upload_threads < m.n_parts ? fs->opt.upload_threads : m.n_parts,
                     mp_worker, &m);
    }
    if (m.status == S3_OK)
        m.status = upload_complete(fs->s3, key, upload_id, m.n_parts, m.etags, size, etag);
    int rc = 0;
    st = S3_OK;
    if (m.status != S3_OK) {
        rc = s3_fail("upload", key, m.status);
        st = s3_multipart_abort(fs->s3, key, upload_id);
    }
    if (st == S3_OK || st == S3_ERR_NO_UPLOAD) /* else the next start aborts it */
        journal_upload_remove(fs->journal, upload_id);
    pthread_mutex_destroy(&m.lock);
    free(m.etags);
    free(upload_id);
    return rc;
}

/* Report a landed upload; a lost reservation is replaced by a new one. */
static void commit(struct fs *fs, const char *qkey, char id[64], uint64_t size, const char *etag)
{
    int rc = remote_commit(fs->remote, id, size, etag);
    if (rc == -ENOENT && remote_reserve(fs->remote, qkey, size, id) == 0)
        rc = remote_commit(fs->remote, id, size, etag);
    if (rc)
        log_warn("cannot report the upload of '%s' to the server: %s (reconciliation will)", qkey,
                 strerror(-rc));
}

int upload_misstated(struct fs *fs, const char *path, const struct stat *st)
{
    int mis = meta_listing_misstates(st, &fs->defaults, time(NULL));
    if (mis & META_MISSTATES_MODE)
        return 1;
    return mis && listed_mark(fs, path) != 0;
}

static int put(struct fs *fs, const char *path, int as_dir, const struct upload_body *body,
               const struct stat *st, const char *reservation, char etag_out[S3_ETAG_MAX])
{
    char key[S3_MAX_KEY_LEN + 1], qkey[S3_MAX_KEY_LEN + 2], id[64], etag[S3_ETAG_MAX] = "";
    int rc = meta_key(fs->session.prefix, path, as_dir, key);
    journal_settle(fs->journal, path); /* no replay of an older row over this */
    if (!rc && s3_client_silent(fs->s3))
        rc = -ETIMEDOUT; /* it would fail at once: no reservation for it */
    if (rc) {
        if (reservation)
            remote_release(fs->remote, reservation);
        stream_cancel(body->stream);
        return rc;
    }
    snprintf(qkey, sizeof(qkey), "%s%s", path, as_dir ? "/" : "");
    if (reservation)
        snprintf(id, sizeof(id), "%s", reservation);
    else
        rc = remote_reserve(fs->remote, qkey, body->size, id);
    if (rc) {
        if (rc != -EDQUOT)
            log_error("cannot reserve %llu bytes for '%s': %s", (unsigned long long)body->size,
                      qkey, strerror(-rc));
        stream_cancel(body->stream);
        return rc;
    }
    struct meta_set ms;
    meta_from_stat(st, &ms);
    struct s3_put_opts opts = meta_put_opts(&ms);
    rc = -EAGAIN;
    int landed = 0; /* the content is in S3, whatever happens next */
    if (body->stream) {
        int stale = 0;
        rc = stream_finish(body->stream, key, body->size, st, etag, &stale);
        landed = rc == 0;
        if (!rc && stale) {
            /* the upload was created with the attributes of its start */
            int s = s3_copy_object(fs->s3, key, key, 1, &opts, etag);
            rc = s == S3_OK ? 0 : s3_fail("set the attributes of", key, s);
        }
    }
    long long saved = s3_thread_deadline_save();
    if (body->s3_ms)
        s3_thread_deadline(body->s3_ms);
    if (rc != -EAGAIN) {
        /* finished by its stream */
    } else if ((body->fd >= 0 && body->size >= UPLOAD_MULTIPART_MIN) ||
               (!as_dir && upload_misstated(fs, path, st))) {
        rc = put_multipart(fs, key, body, &opts, etag);
    } else {
        struct s3_fd f = {.fd = body->fd, .base = 0};
        struct s3_mem m = {.data = (void *)body->data, .len = body->size};
        struct s3_source src = body->fd >= 0 ? s3_source_fd(&f, body->size) : s3_source_mem(&m);
        int s = s3_put_object(fs->s3, key, &src, &opts, etag);
        rc = s == S3_OK ? 0 : s3_fail("upload", key, s);
    }
    s3_thread_deadline_restore(saved);
    if (rc && landed) {
        commit(fs, qkey, id, body->size, etag); /* the file stays pending: retried whole */
        return rc;
    }
    if (rc) {
        remote_release(fs->remote, id);
        return rc;
    }
    commit(fs, qkey, id, body->size, etag);
    if (etag_out)
        memcpy(etag_out, etag, S3_ETAG_MAX);
    return 0;
}

int upload_put(struct fs *fs, const char *path, int as_dir, const struct upload_body *body,
               const struct stat *st, char etag[S3_ETAG_MAX])
{
    return put(fs, path, as_dir, body, st, NULL, etag);
}

int upload_put_reserved(struct fs *fs, const char *path, const struct upload_body *body,
                        const struct stat *st, const char *reservation, char etag[S3_ETAG_MAX])
{
    return put(fs, path, 0, body, st, reservation, etag);
}

static int copy_multipart(struct fs *fs, const char *src, const char *dst, uint64_t size,
                          char etag[S3_ETAG_MAX])
{
    struct s3_head head = {0};
    int st = s3_head_object(fs->s3, src, &head);
    if (st != S3_OK)
        return s3_fail("read", src, st);
    struct s3_put_opts opts = {.meta = head.meta, .n_meta = head.n_meta};
    char *upload_id = NULL;
    st = s3_multipart_create(fs->s3, dst, &opts, &upload_id);
    s3_head_release(&head);
    if (st != S3_OK)
        return s3_fail("start the copy to", dst, st);
    journal_upload_add(fs->journal, dst, upload_id);
    int n = (int)((size + COPY_PART - 1) / COPY_PART);
    char(*etags)[S3_ETAG_MAX] = calloc((size_t)n, sizeof(*etags));
    st = etags ? S3_OK : S3_ERR_NOMEM;
    for (int i = 0; i < n && st == S3_OK; i++) {
        uint64_t first = (uint64_t)i * COPY_PART;
        uint64_t last = first + COPY_PART - 1 < size - 1 ? first + COPY_PART - 1 : size - 1;
        st = s3_multipart_copy_part(fs->s3, dst, upload_id, i + 1, src, first, last, etags[i]);
    }
    if (st == S3_OK)
        st = upload_complete(fs->s3, dst, upload_id, n, etags, size, etag);
    int rc = 0;
    if (st != S3_OK) {
        rc = s3_fail("copy to", dst, st);
        st = s3_multipart_abort(fs->s3, dst, upload_id);
    }
    if (st == S3_OK || st == S3_ERR_NO_UPLOAD) /* else the next start aborts it */
        journal_upload_remove(fs->journal, upload_id);
    free(etags);
    free(upload_id);
    return rc;
}

int upload_copy(struct fs *fs, const char *from, const char *to, uint64_t size)
{
    char src[S3_MAX_KEY_LEN + 1], dst[S3_MAX_KEY_LEN + 1], id[64], etag[S3_ETAG_MAX] = "";
    int rc = meta_key(fs->session.prefix, from, 0, src);
    if (!rc)
        rc = meta_key(fs->session.prefix, to, 0, dst);
    if (rc)
        return rc;
    journal_settle(fs->journal, to);
    rc = remote_reserve(fs->remote, to, size, id);
    if (rc)
        return rc;
    if (size > COPY_MAX) {
        rc = copy_multipart(fs, src, dst, size, etag);
    } else {
        int st = s3_copy_object(fs->s3, src, dst, 0, NULL, etag);
        rc = st == S3_OK ? 0 : s3_fail("copy to", dst, st);
    }
    if (rc) {
        remote_release(fs->remote, id);
        return rc;
    }
    commit(fs, to, id, size, etag);
    return 0;
}
