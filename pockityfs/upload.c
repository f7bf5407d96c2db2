/* upload: PUT, parallel multipart upload and server-side copy of pocket
 * objects, each wrapped in a quota reservation. */
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "listed.h"
#include "log.h"
#include "parallel.h"
#include "stream.h"

#define COPY_PART (1ull << 30) /* largest part of a server-side copy */
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
    int fd;               /* the body: this file, */
    const char *data;     /* else these bytes, */
    const char *src_key;  /* else this object, */
    const char *src_etag; /* as long as it has this ETag */
    uint64_t size, part_size;
    int n_parts;
    pthread_mutex_t lock; /* guards next and status */
    int next;
    int status;
    char (*etags)[S3_ETAG_MAX];
};

/* An unnamed file in dir for this process alone (O_TMPFILE, or a file
 * unlinked at once where the file system cannot). Returns it or -errno. */
static int temp_file(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd >= 0 ? fd : -errno;
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/copy.XXXXXX", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
        return -errno;
    unlink(path);
    return fd;
}

/* Part n of a copy through the mount: bytes [off, off + len) of
 * m->src_key, fetched into the thread's temporary file *tmp (made in the
 * cache folder at its first part, so that memory stays bounded whatever
 * the part size) and uploaded from there. */
static int copy_part_through(struct mp *m, int n, uint64_t off, uint64_t len, int *tmp)
{
    if (*tmp < 0 && (*tmp = temp_file(m->fs->dir)) < 0) {
        log_error("cannot make a temporary file in '%s' to copy '%s': %s", m->fs->dir, m->src_key,
                  strerror(-*tmp));
        return S3_ERR_LOCAL_IO;
    }
    struct s3_fd f = {.fd = *tmp};
    struct s3_sink sink = s3_sink_fd(&f);
    struct s3_head head = {0};
    uint64_t got = 0;
    /* If-Match: a changed source fails before its bytes come; the ETag is
     * compared here too, for a service that ignores the condition */
    int st = s3_get_object_if(m->fs->s3, m->src_key, m->src_etag, off, len, &sink, &head, &got);
    if (st == S3_ERR_BAD_RANGE || st == S3_ERR_PRECONDITION ||
        (st == S3_OK && (got != len || strcmp(head.etag, m->src_etag)))) {
        log_error("'%s' changed while it was copied", m->src_key);
        st = S3_ERR_PRECONDITION;
    }
    s3_head_release(&head);
    if (st != S3_OK)
        return st;
    struct s3_source src = s3_source_fd(&f, len);
    return s3_multipart_upload_part(m->fs->s3, m->key, m->upload_id, n, &src, m->etags[n - 1]);
}

static void mp_worker(void *arg)
{
    struct mp *m = arg;
    int tmp = -1;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        int n = m->status == S3_OK && m->next <= m->n_parts ? m->next++ : 0;
        pthread_mutex_unlock(&m->lock);
        if (!n)
            break;
        uint64_t off = (uint64_t)(n - 1) * m->part_size;
        uint64_t len = m->size - off < m->part_size ? m->size - off : m->part_size;
        int st;
        if (m->src_key) {
            st = copy_part_through(m, n, off, len, &tmp);
        } else {
            struct s3_fd f = {.fd = m->fd, .base = off};
            struct s3_mem mem = {.data = m->fd >= 0 ? NULL : (void *)(m->data + off), .len = len};
            struct s3_source src = m->fd >= 0 ? s3_source_fd(&f, len) : s3_source_mem(&mem);
            st = s3_multipart_upload_part(m->fs->s3, m->key, m->upload_id, n, &src,
                                          m->etags[n - 1]);
        }
        if (st != S3_OK) {
            pthread_mutex_lock(&m->lock);
            if (m->status == S3_OK)
                m->status = st;
            pthread_mutex_unlock(&m->lock);
            log_error("cannot upload part %d of '%s': %s %s", n, m->key, s3_strerror(st),
                      s3_last_error_detail());
        }
    }
    if (tmp >= 0)
        close(tmp);
}

/* The RGW here answers some completions with an empty <ETag>, which the
 * client rightly calls malformed: then the object itself tells whether the
 * upload landed (its size, and the ETag its parts make). */
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
        /* the object's ETag follows from its parts' (so that an older object
         * of the same size and part count with other bytes does not pass);
         * where part ETags are no MD5s, the count in it has to do */
        struct s3_head head = {0};
        char want[S3_ETAG_MAX], suffix[16];
        int exact = s3_multipart_etag(tags, (size_t)n, want) == 0;
        snprintf(suffix, sizeof(suffix), "-%d\"", n);
        size_t el, sl = strlen(suffix);
        if (s3_head_object(s3, key, &head) == S3_OK && head.size == size &&
            (exact ? strcmp(head.etag, want) == 0
                   : (el = strlen(head.etag)) > sl && strcmp(head.etag + el - sl, suffix) == 0)) {
            memcpy(etag, head.etag, S3_ETAG_MAX);
            st = S3_OK;
        }
        s3_head_release(&head);
    }
    free(numbers);
    free(tags);
    return st;
}

/* Cut m->size into parts of part_size (one empty part for nothing), to
 * be sent from part 1 on. Returns an S3 status. */
static int mp_cut(struct mp *m, uint64_t part_size)
{
    m->part_size = part_size;
    m->n_parts = m->size ? (int)((m->size + part_size - 1) / part_size) : 1;
    m->next = 1;
    free(m->etags);
    m->etags = calloc((size_t)m->n_parts, sizeof(*m->etags));
    return m->etags ? S3_OK : S3_ERR_NOMEM;
}

/* Send m's parts from its body, upload_threads at a time. */
static void mp_send(struct mp *m)
{
    m->status = mp_cut(m, upload_part_size(m->size));
    int threads = m->fs->opt.upload_threads;
    if (m->status == S3_OK)
        parallel_run(threads < m->n_parts ? threads : m->n_parts, mp_worker, m);
}

/* A multipart upload of m->key (m->size bytes) with opts: parts(m) fills
 * it, then it is completed into etag, or aborted after a failure (logged
 * as "cannot WHAT key"). Returns 0 or -errno. */
static int multipart(struct mp *m, const struct s3_put_opts *opts, void (*parts)(struct mp *m),
                     const char *what, char etag[S3_ETAG_MAX])
{
    char *upload_id = NULL;
    int st = s3_multipart_create(m->fs->s3, m->key, opts, &upload_id);
    if (st != S3_OK)
        return s3_fail("start the upload of", m->key, st);
    journal_upload_add(m->fs->journal, m->key, upload_id);
    m->upload_id = upload_id;
    pthread_mutex_init(&m->lock, NULL);
    parts(m);
    if (m->status == S3_OK)
        m->status =
                upload_complete(m->fs->s3, m->key, upload_id, m->n_parts, m->etags, m->size, etag);
    int rc = 0;
    st = S3_OK;
    if (m->status != S3_OK) {
        rc = s3_fail(what, m->key, m->status);
        st = s3_multipart_abort(m->fs->s3, m->key, upload_id);
    }
    if (st == S3_OK || st == S3_ERR_NO_UPLOAD) /* else the next start aborts it */
        journal_upload_remove(m->fs->journal, upload_id);
    pthread_mutex_destroy(&m->lock);
    free(m->etags);
    free(upload_id);
    return rc;
}

static int put_multipart(struct fs *fs, const char *key, const struct upload_body *body,
                         const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    struct mp m = {.fs = fs, .key = key, .fd = body->fd, .data = body->data, .size = body->size};
    return multipart(&m, opts, mp_send, "upload", etag);
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

/* Copy m->src_key's parts: server-side (UploadPartCopy), or through the
 * mount when the service refuses that. RGW 16.2 refuses it to session
 * credentials (it checks the source against the object's ACL alone), so
 * the first refusal makes every later copy of the mount go through it. */
static void copy_parts(struct mp *m)
{
    struct fs *fs = m->fs;
    if (!atomic_load(&fs->part_copy_refused)) {
        int refused = 0;
        uint64_t part = fs->copy_max < COPY_PART ? fs->copy_max : COPY_PART;
        if (part < upload_part_size(m->size)) /* within 10,000 parts */
            part = upload_part_size(m->size);
        m->status = mp_cut(m, part);
        for (int i = 0; i < m->n_parts && m->status == S3_OK; i++) {
            uint64_t first = (uint64_t)i * part;
            uint64_t last = m->size - first > part ? first + part - 1 : m->size - 1;
            m->status = s3_multipart_copy_part(fs->s3, m->key, m->upload_id, i + 1, m->src_key,
                                               first, last, m->etags[i]);
            if (i == 0)
                refused = m->status == S3_ERR_ACCESS_DENIED;
        }
        if (!refused)
            return;
        if (!atomic_exchange(&fs->part_copy_refused, 1))
            log_warn("the S3 service refuses part copies (UploadPartCopy) to this mount's "
                     "credentials: files over %llu bytes are copied through the mount",
                     (unsigned long long)fs->copy_max);
    }
    mp_send(m);
}

/* Copy the object src of size bytes (and ETag was, when known) onto dst
 * in parts, with opts' metadata (NULL: src's); etag receives the new
 * object's. An object that is no longer what the caller knew is not
 * copied. Returns 0 or -errno. */
static int copy_multipart(struct fs *fs, const char *src, const char *dst, uint64_t size,
                          const char *was, const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    struct s3_head head = {0};
    int st = s3_head_object(fs->s3, src, &head);
    if (st != S3_OK)
        return s3_fail("read", src, st);
    int rc = 0;
    if (!head.etag[0] || head.size != size || (was && was[0] && strcmp(head.etag, was))) {
        log_error("cannot copy '%s': it changed (%llu bytes, ETag %s; known: %llu bytes, %s)", src,
                  (unsigned long long)head.size, head.etag[0] ? head.etag : "none",
                  (unsigned long long)size, was && was[0] ? was : "any ETag");
        rc = -EIO;
    } else {
        struct s3_put_opts kept = {.content_type = head.content_type[0] ? head.content_type : NULL,
                                   .meta = head.meta,
                                   .n_meta = head.n_meta};
        struct mp m = {.fs = fs,
                       .key = dst,
                       .fd = -1,
                       .size = size,
                       .src_key = src,
                       .src_etag = head.etag};
        rc = multipart(&m, opts ? opts : &kept, copy_parts, "copy to", etag);
    }
    s3_head_release(&head);
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
    if (size > fs->copy_max) {
        rc = copy_multipart(fs, src, dst, size, NULL, NULL, etag);
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

int upload_restamp(struct fs *fs, const char *key, uint64_t size, const char *was,
                   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX])
{
    if (size > fs->copy_max)
        return copy_multipart(fs, key, key, size, was, opts, etag);
    int st = s3_copy_object(fs->s3, key, key, 1, opts, etag);
    return st == S3_OK ? 0 : s3_fail("change the attributes of", key, st);
}
