/* ops: the FUSE low-level operations on names and attributes — lookup,
 * getattr/setattr, mkdir/rmdir, unlink, rename, symlink, statfs — over the
 * pocket's objects, and the operations table. */
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listed.h"
#include "log.h"
#include "upload.h"

#define LINK_MAX_BYTES   4096
#define STATFS_SETTLE_MS 2000 /* longest wait of df for queued quota commits */

int ops_key(struct fs *fs, const char *path, int as_dir, char key[S3_MAX_KEY_LEN + 1])
{
    return meta_key(fs->session.prefix, path, as_dir, key);
}

int ops_child_path(struct fs *fs, fuse_ino_t parent, const char *name, char **out)
{
    int rc = meta_check_name(name);
    if (rc)
        return rc == -EINVAL ? -ENOENT : rc;
    struct inode *p = inode_get(&fs->inodes, parent);
    if (!p)
        return -ENOENT;
    char *dir = NULL;
    rc = inode_path(&fs->inodes, p, &dir);
    inode_put(&fs->inodes, p);
    if (rc)
        return rc;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) {
        free(dir);
        return -ENOMEM;
    }
    meta_join(dir, name, path, n);
    free(dir);
    char key[S3_MAX_KEY_LEN + 1];
    rc = ops_key(fs, path, 0, key);
    if (rc) {
        free(path);
        return rc;
    }
    *out = path;
    return 0;
}

static int s3_err(const char *what, const char *key, int st)
{
    if (st != S3_ERR_NOT_FOUND)
        log_error("cannot %s '%s': %s %s", what, key, s3_strerror(st), s3_last_error_detail());
    return -s3_status_errno(st);
}

/* HEAD key (a directory's marker when is_marker) into a. Returns the S3
 * status. */
static int head_into(struct fs *fs, const char *key, int is_marker, struct obj_attr *a)
{
    struct s3_head head = {0};
    int s = s3_head_object(fs->s3, key, &head);
    if (s == S3_OK) {
        meta_to_stat(&head, is_marker, &fs->defaults, &a->st);
        snprintf(a->etag, sizeof(a->etag), "%s", head.etag);
        a->modified = head.last_modified;
        a->has_marker = is_marker;
        a->entry_attrs = is_marker && s3_head_meta(&head, META_ENTRY_ATTRS) != NULL;
        s3_head_release(&head);
    }
    return s;
}

/* Whether keys lie under key (which ends in '/'): 1, 0 or -errno. */
static int has_keys_under(struct fs *fs, const char *key)
{
    struct s3_list_page page = {0};
    int s = s3_list_objects(fs->s3, key, "/", NULL, NULL, 1, &page);
    if (s != S3_OK)
        return s3_err("list", key, s);
    int found = page.n_objects > 0 || page.n_prefixes > 0;
    s3_list_page_release(&page);
    return found;
}

/* probe: an empty object at path is a directory when keys lie under it.
 * A directory's marker "path/" has its attributes, also beside a bare one. */
static int resolve(struct fs *fs, const char *path, struct obj_attr *a, int probe)
{
    char key[S3_MAX_KEY_LEN + 2];
    memset(a, 0, sizeof(*a));
    if (!*path) {
        meta_default_stat(1, 0, fs->defaults.dir_time, &fs->defaults, &a->st);
        return 0;
    }
    int rc = ops_key(fs, path, 0, key);
    if (rc)
        return rc;
    int s = head_into(fs, key, 0, a);
    if (s != S3_OK && s != S3_ERR_NOT_FOUND)
        return s3_err("read", key, s);
    size_t n = strlen(key);
    int empty = s == S3_OK && S_ISREG(a->st.st_mode) && a->st.st_size == 0;
    if (s == S3_OK && ((!S_ISDIR(a->st.st_mode) && !(probe && empty)) || n + 1 > S3_MAX_KEY_LEN))
        return 0; /* a file */
    if (n + 1 > S3_MAX_KEY_LEN)
        return -ENOENT;
    key[n] = '/';
    key[n + 1] = '\0';
    if (empty) { /* a directory's bare marker when keys lie under it */
        int under = has_keys_under(fs, key);
        if (under <= 0)
            return under; /* an empty file */
    }
    struct obj_attr bare = *a;
    int has_bare = s == S3_OK;
    s = head_into(fs, key, 1, a);
    if (s == S3_OK)
        return 0;
    if (s != S3_ERR_NOT_FOUND)
        return s3_err("read", key, s);
    if (has_bare) { /* the bare marker alone */
        *a = bare;
        if (empty)
            meta_default_stat(1, 0, a->modified, &fs->defaults, &a->st);
        return 0;
    }
    int found = ops_dir_probe(fs, path);
    if (found < 0)
        return found;
    if (found == 2 && (found = has_keys_under(fs, key)) < 0)
        return found;
    if (found || inode_has_local_under(&fs->inodes, path)) {
        meta_default_stat(1, 0, fs->defaults.dir_time, &fs->defaults, &a->st);
        return 0;
    }
    return -ENOENT;
}

/* A lookup's HEADs and listing get write_timeout in all (unless the caller
 * set a deadline of its own): with S3 silent, a stat fails with ETIMEDOUT
 * then instead of after the S3 client's retries, minutes later. */
static int resolve_timed(struct fs *fs, const char *path, struct obj_attr *a, int probe)
{
    long long saved = s3_thread_deadline_save();
    if (!saved)
        s3_thread_deadline((long)fs->opt.write_timeout * 1000);
    int rc = resolve(fs, path, a, probe);
    s3_thread_deadline_restore(saved);
    return rc;
}

int ops_resolve(struct fs *fs, const char *path, struct obj_attr *a)
{
    return resolve_timed(fs, path, a, 1);
}

int ops_resolve_listed(struct fs *fs, const char *path, struct obj_attr *a)
{
    return resolve_timed(fs, path, a, 0);
}

/* Whether the directory at path has a bare marker, an object at path
 * without the slash that stands for it (resolve): 1 with its key and ETag,
 * 0 when none, or -errno. */
static int bare_marker(struct fs *fs, const char *path, char key[S3_MAX_KEY_LEN + 1],
                       char etag[S3_ETAG_MAX])
{
    int rc = ops_key(fs, path, 0, key);
    if (rc)
        return rc;
    struct obj_attr a;
    int s = head_into(fs, key, 0, &a);
    if (s == S3_ERR_NOT_FOUND)
        return 0;
    if (s != S3_OK)
        return s3_err("read", key, s);
    snprintf(etag, S3_ETAG_MAX, "%s", a.etag);
    return S_ISDIR(a.st.st_mode) || (S_ISREG(a.st.st_mode) && a.st.st_size == 0);
}

/* Delete the bare marker key if it is still the object of that ETag (another
 * client may have written data there while a rename moved the tree): 1 when
 * deleted, 0 when gone or changed (left alone), or -errno. */
static int bare_delete(struct fs *fs, const char *key, const char *etag)
{
    struct obj_attr a;
    int s = head_into(fs, key, 0, &a);
    if (s == S3_ERR_NOT_FOUND)
        return 0;
    if (s == S3_OK && strcmp(a.etag, etag) != 0) {
        log_warn("'%s' changed while its directory was renamed: left alone", key);
        return 0;
    }
    if (s == S3_OK)
        s = s3_delete_object(fs->s3, key);
    return s == S3_OK ? 1 : s3_err("delete", key, s);
}

int ops_resolve_dir(struct fs *fs, const char *path, struct obj_attr *a)
{
    char key[S3_MAX_KEY_LEN + 1];
    memset(a, 0, sizeof(*a));
    int rc = ops_key(fs, path, 1, key);
    if (rc)
        return rc;
    long long saved = s3_thread_deadline_save();
    if (!saved)
        s3_thread_deadline((long)fs->opt.write_timeout * 1000);
    int s = head_into(fs, key, 1, a);
    s3_thread_deadline_restore(saved);
    if (s == S3_ERR_NOT_FOUND)
        meta_default_stat(1, 0, fs->defaults.dir_time, &fs->defaults, &a->st);
    return s == S3_OK || s == S3_ERR_NOT_FOUND ? 0 : s3_err("read", key, s);
}

void ops_set_attr(struct fs *fs, struct inode *in, const struct stat *st, const char *etag,
                  int has_marker, int meta_known)
{
    ino_t ino = in->st.st_ino;
    in->st = *st;
    in->st.st_ino = ino;
    in->attr_expire = inode_now() + fs->opt.attr_timeout;
    if (etag != in->etag)
        snprintf(in->etag, sizeof(in->etag), "%s", etag);
    in->etag_hash = 0;
    in->has_marker = has_marker;
    in->meta_known = meta_known;
    ops_wrote(in);
}

void ops_wrote(struct inode *in)
{
    in->obj_mtime = 0;
    in->wrote_at = time(NULL);
}

void ops_set_resolved(struct fs *fs, struct inode *in, const struct obj_attr *a)
{
    ops_set_attr(fs, in, &a->st, a->etag, a->has_marker, 1);
    in->obj_mtime = a->modified;
    __atomic_store_n(&in->entry_attrs, a->entry_attrs, __ATOMIC_RELEASE); /* listed_mark */
}

void ops_attrs(const struct inode *in, struct stat *out)
{
    *out = in->st;
    if (in->cf && S_ISREG(in->st.st_mode) && (in->cf->dirty || in->opens)) {
        meta_set_size(out, in->cf->size);
    }
}

void ops_publish_attrs(struct inode *in)
{
    struct stat st;
    ops_attrs(in, &st);
    inode_publish(in, &st);
}

int ops_stat(struct fs *fs, struct inode *in, struct stat *out)
{
    if (in->ino == INODE_ROOT) {
        if (in->attr_expire == 0) {
            struct stat st;
            meta_default_stat(1, 0, fs->defaults.dir_time, &fs->defaults, &st);
            ops_set_attr(fs, in, &st, "", 0, 1);
            in->attr_expire = 1e300; /* the root's attributes live in memory */
        }
        *out = in->st;
        return 0;
    }
    if ((in->cf && in->cf->dirty) || in->attr_expire > inode_now()) {
        ops_attrs(in, out);
        return 0;
    }
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc == -ENOENT && in->attr_expire > 0) { /* unlinked but open */
        ops_attrs(in, out);
        return 0;
    }
    if (rc)
        return rc;
    struct obj_attr a;
    rc = ops_resolve(fs, path, &a);
    free(path);
    if (rc)
        return rc;
    if (in->attr_expire > 0 && ((a.st.st_mode ^ in->st.st_mode) & S_IFMT)) {
        /* replaced by something of another type: this inode is stale */
        inode_detach(&fs->inodes, in);
        return -ESTALE;
    }
    ops_set_resolved(fs, in, &a);
    ops_attrs(in, out);
    return 0;
}

void ops_entry_from(struct fs *fs, const struct inode *in, const struct stat *st,
                    struct fuse_entry_param *e)
{
    e->ino = in->ino;
    e->generation = 0;
    e->attr = *st;
    e->attr_timeout = fs->opt.attr_timeout;
    e->entry_timeout = fs->opt.dir_timeout;
}

void ops_entry(struct fs *fs, struct inode *in, struct fuse_entry_param *e)
{
    struct stat st;
    ops_attrs(in, &st);
    ops_entry_from(fs, in, &st, e);
}

void ops_dir_changed(struct fs *fs, const char *path)
{
    char *dir = strndup(path, meta_parent_len(path));
    if (!dir)
        return;
    struct inode *p = inode_get_path(&fs->inodes, dir);
    free(dir);
    if (!p)
        return;
    ops_dir_note(fs, p, meta_basename(path));
    inode_put(&fs->inodes, p);
}

static int read_only(struct fs *fs)
{
    return fs->read_only ? -EROFS : 0;
}

int ops_write_check(struct fs *fs)
{
    return fs->read_only ? -EROFS : remote_write_check(fs->remote);
}

int ops_enter_child(struct fs *fs, fuse_ino_t parent, const char *name, char **path)
{
    int rc;
    do {
        uint64_t moves = names_moves(&fs->names);
        *path = NULL;
        rc = ops_child_path(fs, parent, name, path);
        if (!rc && (rc = names_enter(&fs->names, *path, moves, 1)) != 0) {
            free(*path);
            *path = NULL;
        }
    } while (rc == -EAGAIN); /* renamed meanwhile: the path may be old */
    return rc;
}

int ops_enter_inode(struct fs *fs, struct inode *in, int wait, char **path)
{
    int rc;
    do {
        uint64_t moves = names_moves(&fs->names);
        *path = NULL;
        rc = inode_path(&fs->inodes, in, path);
        if (rc == -ENOENT)
            return 0;
        if (!rc && (rc = names_enter(&fs->names, *path, moves, wait)) != 0) {
            free(*path);
            *path = NULL;
        }
    } while (rc == -EAGAIN);
    return rc;
}

void ops_leave(struct fs *fs, char *path)
{
    if (path)
        names_leave(&fs->names, path);
    free(path);
}

static void reply_entry(fuse_req_t req, struct fs *fs, struct inode *in,
                        const struct fuse_entry_param *e)
{
    inode_count_lookup(&fs->inodes, in);
    if (fuse_reply_entry(req, e) != 0)
        inode_forget(&fs->inodes, in->ino, 1);
}

static void reply_entry_of(fuse_req_t req, struct fs *fs, struct inode *in)
{
    struct fuse_entry_param e = {0};
    pthread_mutex_lock(&in->lock);
    ops_entry(fs, in, &e);
    pthread_mutex_unlock(&in->lock);
    reply_entry(req, fs, in, &e);
}

/* in's attributes (ops_stat), or those an upload or a read holding its
 * lock published, so that a stat or an ls -l does not wait for it. */
static int stat_now(struct fs *fs, struct inode *in, struct stat *st)
{
    if (!inode_lock_or_published(in, st))
        return 0;
    int rc = ops_stat(fs, in, st);
    pthread_mutex_unlock(&in->lock);
    return rc;
}

/* Whether name, not in the inode table, is known absent from the directory
 * parent (ops_dir_absent): no S3 request needed to say so. */
static int known_absent(struct fs *fs, fuse_ino_t parent, const char *name)
{
    struct inode *p = inode_get(&fs->inodes, parent);
    int absent = p && ops_dir_absent(fs, p, name);
    inode_put(&fs->inodes, p);
    return absent;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL;
    int rc = ops_child_path(fs, parent, name, &path);
    struct inode *in = NULL;
    if (rc)
        goto fail;
    in = inode_get_path(&fs->inodes, path);
    if (in) {
        struct stat st;
        rc = stat_now(fs, in, &st);
        if (rc == -ESTALE) { /* type changed: a new inode below */
            inode_put(&fs->inodes, in);
            in = NULL;
        } else if (rc) {
            goto fail;
        } else {
            struct fuse_entry_param e = {0};
            ops_entry_from(fs, in, &st, &e);
            free(path);
            reply_entry(req, fs, in, &e);
            inode_put(&fs->inodes, in);
            return;
        }
    }
    if (!in) {
        struct obj_attr a;
        rc = known_absent(fs, parent, name) ? -ENOENT : ops_resolve(fs, path, &a);
        if (rc)
            goto fail;
        in = inode_make_child(&fs->inodes, parent, name, &rc);
        if (!in)
            goto fail;
        pthread_mutex_lock(&in->lock);
        if (!(in->cf && in->cf->dirty))
            ops_set_resolved(fs, in, &a);
        pthread_mutex_unlock(&in->lock);
    }
    free(path);
    reply_entry_of(req, fs, in);
    inode_put(&fs->inodes, in);
    return;
fail:
    free(path);
    inode_put(&fs->inodes, in);
    if (rc == -ENOENT) {
        struct fuse_entry_param e = {0};
        e.entry_timeout = fs->opt.attr_timeout; /* negative entry */
        fuse_reply_entry(req, &e);
        return;
    }
    fuse_reply_err(req, -rc);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    inode_forget(&fs_of(req)->inodes, ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fs_of(req);
    for (size_t i = 0; i < count; i++)
        inode_forget(&fs->inodes, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    int rc = stat_now(fs, in, &st);
    inode_put(&fs->inodes, in);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, fs->opt.attr_timeout);
}

#define REPUT_MAX (8u << 20) /* files up to this size are PUT again from the cache */

/* Whether in's whole content is in its clean cache file and at most max
 * bytes (REPUT_MAX: small enough that a PUT again is cheaper than a
 * server-side copy, whose answer has a body). Fills body. Caller holds
 * in->lock. */
static int cached_body(struct fs *fs, struct inode *in, struct upload_body *body, uint64_t max)
{
    struct cfile *cf = in->cf;
    if (!cf || cf->dirty || !S_ISREG(in->st.st_mode) || cf->size > max ||
        cf->size != (uint64_t)in->st.st_size || cf->npresent != cf->nblocks ||
        cf->remote_size != cf->size || strcmp(cf->etag, in->etag) != 0)
        return 0;
    int fd = cf->in_mem ? -1 : cfile_fd(&fs->cache, cf);
    if (fd < 0 && !cf->in_mem)
        return 0;
    *body = (struct upload_body){.fd = fd, .data = cf->mem, .size = cf->size};
    return 1;
}

/* Close the cache file again after cached_body when no handle is open. */
static void cached_done(struct fs *fs, struct inode *in)
{
    if (in->cf && in->opens == 0)
        cfile_idle(&fs->cache, in->cf);
}

/* Store in's attributes in its object: a copy onto itself with new
 * metadata (a PUT of the marker for a directory without one, a PUT of the
 * content for a small file held whole in the cache). Caller holds
 * in->lock. */
static int store_meta(struct fs *fs, struct inode *in)
{
    /* the root has no object; pending data uploads with the attributes */
    if (in->ino == INODE_ROOT)
        return 0;
    if (in->cf && in->cf->dirty)
        return ops_journal_attrs(fs, in);
    ops_wrote(in); /* below */
    char *path = NULL;
    int rc = inode_path(&fs->inodes, in, &path);
    if (rc)
        return rc == -ENOENT ? 0 : rc;
    char key[S3_MAX_KEY_LEN + 1];
    int is_dir = S_ISDIR(in->st.st_mode);
    rc = ops_key(fs, path, is_dir, key);
    if (rc)
        goto done;
    if (is_dir && !in->has_marker) {
        struct upload_body empty = {.fd = -1};
        rc = upload_put(fs, path, 1, &empty, &in->st, NULL);
        if (!rc)
            in->has_marker = 1;
        goto done;
    }
    char etag[S3_ETAG_MAX];
    struct upload_body body;
    /* a listing must tell such a file by its ETag (upload_misstated): it
     * is uploaded again, multipart, since RGW answers 403 to an
     * UploadPartCopy of an object onto itself (between two keys it works).
     * pockityfs PUTs only files below UPLOAD_MULTIPART_MIN whole; a larger
     * one of another client keeps a plain copy, which listings misstate */
    int fetched = 0;
    uint64_t reput = REPUT_MAX;
    if (S_ISREG(in->st.st_mode) && !strchr(in->etag, '-') && upload_misstated(fs, path, &in->st) &&
        (uint64_t)in->st.st_size < UPLOAD_MULTIPART_MIN) {
        reput = UPLOAD_MULTIPART_MIN;
        int f = ops_fetch_whole(fs, in);
        if (f)
            log_warn("cannot fetch '%s' to upload it again (%s): listings will show it "
                     "with the default mode",
                     path, strerror(-f));
        fetched = 1;
    }
    if (!is_dir && cached_body(fs, in, &body, reput)) {
        rc = upload_put(fs, path, 0, &body, &in->st, etag);
        cached_done(fs, in);
        if (!rc) {
            snprintf(in->etag, sizeof(in->etag), "%s", etag);
            snprintf(in->cf->etag, sizeof(in->cf->etag), "%s", etag);
        }
        goto done;
    }
    if (fetched)
        cached_done(fs, in);
    struct meta_set ms;
    meta_from_stat(&in->st, &ms);
    if (is_dir && in->entry_attrs)
        meta_set_entry_attrs(&ms); /* kept: listings still misstate entries here */
    struct s3_put_opts opts = meta_put_opts(&ms);
    journal_settle(fs->journal, path);
    uint64_t size = is_dir ? 0 : (uint64_t)in->st.st_size;
    int long_copy = size > fs->copy_max; /* as long as the bytes take to travel */
    if (long_copy)
        ops_publish_attrs(in);
    rc = upload_restamp(fs, key, size, in->etag, &opts, etag);
    if (long_copy)
        inode_unpublish(in);
    if (rc)
        goto done;
    snprintf(in->etag, sizeof(in->etag), "%s", etag);
    if (in->cf && !in->cf->dirty)
        snprintf(in->cf->etag, sizeof(in->cf->etag), "%s", etag);
done:
    free(path);
    return rc;
}

/* Apply the attributes of a setattr to in->st; returns whether one that is
 * stored (mode, owner, mtime) changed. */
static int set_attrs(struct inode *in, const struct stat *attr, int to_set,
                     const struct timespec *now)
{
    int changed = 0;
    if (to_set & FUSE_SET_ATTR_MODE) {
        mode_t mode = (in->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
        changed |= mode != in->st.st_mode;
        in->st.st_mode = mode;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        changed |= attr->st_uid != in->st.st_uid;
        in->st.st_uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        changed |= attr->st_gid != in->st.st_gid;
        in->st.st_gid = attr->st_gid;
    }
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
        struct timespec t = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? *now : attr->st_mtim;
        changed |= t.tv_sec != in->st.st_mtim.tv_sec || t.tv_nsec != in->st.st_mtim.tv_nsec;
        in->st.st_mtim = t;
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
        in->st.st_atim = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? *now : attr->st_atim;
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
        in->st.st_ctim = *now; /* even when nothing changed (POSIX) */
    return changed;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    char *entered = NULL;
    int rc = ops_write_check(fs);
    if (!rc)
        rc = ops_enter_inode(fs, in, 1, &entered);
    pthread_mutex_lock(&in->lock);
    /* attributes from a listing are defaults: read the object's before
     * changing some, or the others would be stored as those defaults (the
     * inode's type is still checked: attr_expire stays above 0); so is a
     * directory known without a marker of its own (a bare one may hold
     * its attributes) */
    int dir = S_ISDIR(in->st.st_mode) && in->ino != INODE_ROOT;
    if ((!in->meta_known || (dir && !in->has_marker)) && in->attr_expire > 0 &&
        in->ino != INODE_ROOT && !(in->cf && in->cf->dirty))
        in->attr_expire = 1;
    int reread = in->attr_expire <= inode_now(); /* ops_stat reads the object */
    if (!rc)
        rc = ops_stat(fs, in, &st);
    if (!rc && (to_set & FUSE_SET_ATTR_SIZE)) {
        if (!S_ISREG(in->st.st_mode))
            rc = -EISDIR;
        else
            rc = ops_truncate(fs, in, (uint64_t)attr->st_size, fi != NULL || in->opens > 0);
    }
    /* only a change is stored: tar and cp -p set owners and modes that
     * often are the ones already there */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int meta = !rc && set_attrs(in, attr, to_set, &now);
    /* a directory's marker is rewritten from the attributes known here
     * while fresh; unless they say it holds the entries mark, it is read
     * again first if they are more than a second old, lest the rewrite drop
     * a mark another mount set since (its entries would then show listing
     * defaults in fresh mounts) */
    if (meta && dir && !in->entry_attrs && !reread &&
        in->attr_expire - fs->opt.attr_timeout < inode_now() - 1.0) {
        in->attr_expire = 1;
        rc = ops_stat(fs, in, &st);
        meta = !rc && set_attrs(in, attr, to_set, &now);
    }
    if (!rc && meta) {
        in->st.st_ctim = now;
        in->meta_known = 1;
        rc = store_meta(fs, in);
        if (rc) /* what S3 holds is unchanged: read it again next time */
            in->attr_expire = 0;
    }
    if (!rc)
        rc = ops_stat(fs, in, &st);
    pthread_mutex_unlock(&in->lock);
    ops_leave(fs, entered);
    inode_put(&fs->inodes, in);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, fs->opt.attr_timeout);
}

static void new_stat(fuse_req_t req, mode_t mode, struct stat *st)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(st, 0, sizeof(*st));
    st->st_mode = mode;
    st->st_nlink = S_ISDIR(mode) ? 2 : 1;
    meta_set_size(st, S_ISDIR(mode) ? 4096 : 0);
    st->st_uid = ctx->uid;
    st->st_gid = ctx->gid;
    st->st_blksize = 4096;
    clock_gettime(CLOCK_REALTIME, &st->st_mtim);
    st->st_atim = st->st_ctim = st->st_mtim;
}

/* Reply with a new inode at path holding st (just stored in S3). */
static void reply_new(fuse_req_t req, struct fs *fs, const char *path, const struct stat *st,
                      const char *etag, int has_marker)
{
    struct inode *in = inode_make(&fs->inodes, path, NULL);
    if (!in) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_lock(&in->lock);
    ops_set_attr(fs, in, st, etag, has_marker, 1);
    pthread_mutex_unlock(&in->lock);
    if (S_ISDIR(st->st_mode))
        ops_dir_set_empty(fs, in); /* lookups inside need not ask S3 */
    ops_dir_changed(fs, path);
    reply_entry_of(req, fs, in);
    inode_put(&fs->inodes, in);
}

/* The S3 calls that change names (a marker, a link, a delete) get
 * write_timeout in all, retries included, instead of the S3 client's
 * minutes: a full Ceph cluster blocks writes without an error, and a mkdir
 * waited 182 s for its ETIMEDOUT. Set right before those calls (not before
 * waits for locks or names, nor a quota reservation), and not for calls
 * that move data; s3_thread_deadline(0) lifts it. */
static long names_ms(struct fs *fs)
{
    return (long)fs->opt.write_timeout * 1000;
}

/* names_ms for the calls of this thread from now on */
static void names_deadline(struct fs *fs)
{
    s3_thread_deadline(names_ms(fs));
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, key[S3_MAX_KEY_LEN + 1], etag[S3_ETAG_MAX] = "";
    int rc = ops_write_check(fs);
    if (!rc)
        rc = ops_enter_child(fs, parent, name, &path);
    if (!rc)
        rc = ops_key(fs, path, 1, key);
    struct stat st;
    new_stat(req, S_IFDIR | (mode & 07777), &st);
    struct upload_body empty = {.fd = -1, .s3_ms = names_ms(fs)};
    if (!rc)
        rc = upload_put(fs, path, 1, &empty, &st, etag);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        reply_new(req, fs, path, &st, etag, 1);
    ops_leave(fs, path);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, etag[S3_ETAG_MAX] = "";
    size_t len = strlen(link);
    int rc = ops_write_check(fs);
    if (!rc && len >= LINK_MAX_BYTES)
        rc = -ENAMETOOLONG;
    if (!rc)
        rc = ops_enter_child(fs, parent, name, &path);
    struct stat st;
    new_stat(req, S_IFLNK | 0777, &st);
    meta_set_size(&st, len);
    struct upload_body body = {.fd = -1, .data = link, .size = len, .s3_ms = names_ms(fs)};
    if (!rc)
        rc = upload_put(fs, path, 0, &body, &st, etag);
    if (rc) {
        ops_leave(fs, path);
        fuse_reply_err(req, -rc);
        return;
    }
    struct inode *in = inode_make(&fs->inodes, path, NULL);
    if (in) {
        pthread_mutex_lock(&in->lock);
        free(in->link);
        in->link = strdup(link);
        pthread_mutex_unlock(&in->lock);
        inode_put(&fs->inodes, in);
    }
    reply_new(req, fs, path, &st, etag, 0);
    ops_leave(fs, path);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    int rc = 0;
    char *path = NULL, key[S3_MAX_KEY_LEN + 1];
    pthread_mutex_lock(&in->lock);
    if (!in->link) {
        rc = inode_path(&fs->inodes, in, &path);
        if (!rc)
            rc = ops_key(fs, path, 0, key);
        char *buf = rc ? NULL : malloc(LINK_MAX_BYTES);
        if (!rc && !buf)
            rc = -ENOMEM;
        if (!rc) {
            struct s3_mem m = {.data = buf, .len = LINK_MAX_BYTES - 1};
            struct s3_sink sink = s3_sink_mem(&m);
            int s = s3_get_object(fs->s3, key, 0, 0, &sink, NULL, NULL);
            if (s == S3_ERR_ABORTED)
                rc = -ENAMETOOLONG;
            else if (s != S3_OK)
                rc = s3_err("read", key, s);
            if (!rc) {
                buf[m.used] = '\0';
                in->link = buf;
                buf = NULL;
            }
        }
        free(buf);
    }
    char *target = !rc ? strdup(in->link) : NULL;
    pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    free(path);
    if (!rc && !target)
        rc = -ENOMEM;
    if (rc)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_readlink(req, target);
    free(target);
}

static void report_deleted(struct fs *fs, const char *const *keys, size_t n)
{
    int rc = remote_deleted(fs->remote, keys, n);
    if (rc)
        log_warn("cannot report %zu deletion(s) to the server: %s (reconciliation will)", n,
                 strerror(-rc));
}

/* The file in, at path, is about to be unlinked or replaced in S3: while
 * it is open its readers go on reading what it held, so the parts not in
 * its cache file yet are fetched now (drop_content then keeps them). Caller
 * holds in->lock. */
static void fill_for_readers(struct fs *fs, struct inode *in, const char *path)
{
    int rc = in->opens > 0 ? ops_fill(fs, in) : 0;
    if (rc)
        log_warn("'%s' is open but its object goes: the parts not read yet go too: %s", path,
                 strerror(-rc));
}

/* The file in, at path, is unlinked or replaced: its pending content is
 * never to be uploaded; while open, its content stays for its readers
 * (dirty: off the cache's LRU). Caller holds in->lock. */
static void drop_content(struct fs *fs, struct inode *in, const char *path)
{
    ops_resv_drop(fs, in->cf);
    if (in->cf && in->cf->journaled) {
        journal_remove(fs->journal, path);
        in->cf->journaled = 0;
    }
    if (in->cf && in->opens == 0) {
        cfile_free(&fs->cache, in->cf, 1);
        in->cf = NULL;
    } else if (in->cf) {
        cfile_set_dirty(&fs->cache, in->cf);
    }
    inode_set_flags(&fs->inodes, in, 0, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, key[S3_MAX_KEY_LEN + 1];
    int rc = read_only(fs);
    if (!rc)
        rc = ops_enter_child(fs, parent, name, &path);
    if (!rc)
        rc = ops_key(fs, path, 0, key);
    struct inode *in = rc ? NULL : inode_get_path(&fs->inodes, path);
    /* under the inode's lock: a background upload of a file only local so
     * far either has ended (the object exists: delete it) or will not run */
    if (in)
        pthread_mutex_lock(&in->lock);
    /* one pending at start-up may replace an object: delete that too */
    int local = in && inode_is_local(&fs->inodes, in) && !(in->cf && in->cf->replayed);
    if (!rc && !local) {
        if (in)
            fill_for_readers(fs, in, path);
        journal_settle(fs->journal, path); /* else a kill could replay it */
        names_deadline(fs);
        int s = s3_delete_object(fs->s3, key);
        s3_thread_deadline(0);
        if (s == S3_OK) {
            const char *keys[1] = {path};
            report_deleted(fs, keys, 1);
        } else {
            rc = s3_err("delete", key, s);
        }
    }
    if (!rc && in) {
        drop_content(fs, in, path);
        inode_detach(&fs->inodes, in);
    }
    if (in)
        pthread_mutex_unlock(&in->lock);
    inode_put(&fs->inodes, in);
    if (!rc)
        ops_dir_changed(fs, path);
    ops_leave(fs, path);
    fuse_reply_err(req, -rc);
}

/* Whether the directory at path holds anything besides its marker. */
static int dir_empty(struct fs *fs, const char *path)
{
    char key[S3_MAX_KEY_LEN + 1];
    int rc = ops_key(fs, path, 1, key);
    if (rc)
        return rc;
    if (inode_has_local_under(&fs->inodes, path))
        return -ENOTEMPTY;
    struct s3_list_page page = {0};
    int s = s3_list_objects(fs->s3, key, NULL, NULL, NULL, 2, &page);
    if (s != S3_OK)
        return s3_err("list", key, s);
    for (size_t i = 0; i < page.n_objects && !rc; i++)
        if (strcmp(page.objects[i].key, key) != 0)
            rc = -ENOTEMPTY;
    s3_list_page_release(&page);
    return rc;
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    char *path = NULL, key[S3_MAX_KEY_LEN + 1];
    int rc = read_only(fs);
    if (!rc)
        rc = ops_enter_child(fs, parent, name, &path);
    if (!rc)
        rc = ops_key(fs, path, 1, key);
    names_deadline(fs);
    if (!rc)
        rc = dir_empty(fs, path);
    /* a bare marker goes first: while it stays, so does the directory */
    char bare[S3_MAX_KEY_LEN + 1], bare_etag[S3_ETAG_MAX];
    int has_bare = rc ? 0 : bare_marker(fs, path, bare, bare_etag);
    if (has_bare == 1) { /* just read: no second HEAD as for a rename's (bare_delete) */
        int s = s3_delete_object(fs->s3, bare);
        if (s != S3_OK)
            has_bare = s3_err("delete", bare, s);
    }
    if (has_bare < 0)
        rc = has_bare;
    if (has_bare == 1) {
        const char *keys[1] = {path};
        report_deleted(fs, keys, 1);
    }
    if (!rc) {
        journal_settle(fs->journal, path);
        int s = s3_delete_object(fs->s3, key);
        if (s != S3_OK)
            rc = s3_err("delete", key, s);
    }
    s3_thread_deadline(0);
    if (!rc) {
        char *qkey = malloc(strlen(path) + 2);
        if (qkey) {
            sprintf(qkey, "%s/", path);
            const char *keys[1] = {qkey};
            report_deleted(fs, keys, 1);
            free(qkey);
        }
        struct inode *in = inode_get_path(&fs->inodes, path);
        if (in) {
            inode_detach(&fs->inodes, in);
            inode_put(&fs->inodes, in);
        }
        ops_dir_changed(fs, path);
    }
    ops_leave(fs, path);
    fuse_reply_err(req, -rc);
}

/* Move every object under from/ to to/ (copy then delete, not atomic). */
static int move_tree(struct fs *fs, const char *from, const char *to)
{
    char key[S3_MAX_KEY_LEN + 1];
    int rc = ops_key(fs, from, 1, key);
    if (rc)
        return rc;
    size_t plen = strlen(fs->session.prefix), flen = strlen(from);
    char *token = NULL;
    do {
        struct s3_list_page page = {0};
        int s = s3_list_objects(fs->s3, key, NULL, token, NULL, 1000, &page);
        free(token);
        token = NULL;
        if (s != S3_OK)
            return s3_err("list", key, s);
        const char **done = calloc(page.n_objects + 1, sizeof(*done));
        const char **rels = calloc(page.n_objects + 1, sizeof(*rels));
        size_t n_done = 0;
        if (!done || !rels)
            rc = -ENOMEM;
        for (size_t i = 0; i < page.n_objects && !rc; i++) {
            const char *full = page.objects[i].key;
            if (strncmp(full, fs->session.prefix, plen) != 0)
                continue;
            const char *rel = full + plen;
            size_t n = strlen(to) + strlen(rel) - flen + 1;
            char *dst = malloc(n);
            if (!dst) {
                rc = -ENOMEM;
                break;
            }
            snprintf(dst, n, "%s%s", to, rel + flen);
            char dkey[S3_MAX_KEY_LEN + 1];
            rc = ops_key(fs, dst, 0, dkey);
            if (!rc)
                rc = upload_copy(fs, rel, dst, page.objects[i].size);
            free(dst);
            if (!rc) {
                done[n_done] = full;
                rels[n_done++] = rel;
            }
        }
        if (n_done) {
            struct s3_delete_result res = {0};
            int s2 = s3_delete_objects(fs->s3, done, n_done, &res);
            if (s2 != S3_OK || res.n_failures) {
                /* keys XML cannot carry, or a partial failure: one by one */
                for (size_t i = 0; i < n_done; i++)
                    s3_delete_object(fs->s3, done[i]);
            }
            s3_delete_result_release(&res);
            report_deleted(fs, rels, n_done);
        }
        free(done);
        free(rels);
        if (!rc && page.is_truncated && page.next_token && !(token = strdup(page.next_token)))
            rc = -ENOMEM;
        s3_list_page_release(&page);
    } while (!rc && token);
    free(token);
    return rc;
}

/* Whether S3 may hold an object at in's name: it is not a file created
 * here and not yet uploaded (a failed upload may have landed; a file
 * pending from an earlier run may replace an object). Caller holds
 * in->lock. */
static int maybe_in_s3(struct fs *fs, struct inode *in)
{
    return !inode_is_local(&fs->inodes, in) || (in->cf && (in->cf->tried || in->cf->replayed));
}

/* Rename the file src at from, created here, closed and queued for its
 * upload, which has not begun: its journal row takes the name to (in
 * place of dn's) and its queued upload sends it there, with a reservation
 * for that name. No S3 request. Returns 0, -ENOENT when src has no row
 * (rename it the usual way), or another -errno. */
static int rename_pending(struct fs *fs, struct inode *src, const char *from, struct inode *dn,
                          int exists, const char *to)
{
    /* an object at to: rm must delete it */
    int in_s3 = exists && (!dn || maybe_in_s3(fs, dn));
    int rc = src->cf->size ? ops_resv_hold(fs, src->cf, to) : 0;
    if (rc)
        return rc;
    if (dn)
        fill_for_readers(fs, dn, to);
    rc = journal_rename(fs->journal, from, to);
    if (rc)
        return rc;
    if (dn) {
        if (dn->cf)
            dn->cf->journaled = 0; /* its row was replaced */
        drop_content(fs, dn, to);
    }
    if (in_s3)
        inode_set_flags(&fs->inodes, src, 1, 0);
    return 0;
}

/* Rename the file src (NULL: not in the table) at from to to, over the file
 * dn (NULL: none or not in the table) or an object (exists). The caller
 * holds the names shared and both inodes' locks, so that no upload of
 * either runs meanwhile: src uploads its pending content first (unless it
 * is only here so far: rename_pending), and dn's is dropped once src's
 * content is under its name. */
static int rename_file(struct fs *fs, struct inode *src, const char *from, struct inode *dn,
                       int exists, const char *to, uint64_t size)
{
    /* closed, its upload not begun (FLUSHER_SETTLE), nothing of it in S3
     * (not even parts streamed under the old name) */
    struct cfile *scf = src ? src->cf : NULL;
    if (scf && scf->dirty && scf->journaled && scf->queued && !scf->stream &&
        !maybe_in_s3(fs, src)) {
        int r = rename_pending(fs, src, from, dn, exists, to);
        if (r != -ENOENT)
            return r;
    }
    char key[S3_MAX_KEY_LEN + 1];
    int rc = ops_key(fs, from, 0, key);
    if (!rc && src && src->cf && src->cf->dirty)
        rc = ops_sync(fs, src);
    if (rc)
        return rc;
    if (dn)
        fill_for_readers(fs, dn, to);
    if (src)
        ops_wrote(src); /* a new object under the new name */
    /* a copy keeps the attributes and a plain ETag: where listings would
     * misstate them and the new directory cannot say so (upload_misstated
     * marks it if it can), a file below UPLOAD_MULTIPART_MIN is uploaded
     * again, fetched first (RGW answered 403 to a mount's UploadPartCopy
     * of a small object to another key); unknown attributes mark the
     * directory, as if */
    uint64_t reput = REPUT_MAX;
    int fetched = 0;
    if (!src)
        listed_mark(fs, to);
    else if (S_ISREG(src->st.st_mode) && !strchr(src->etag, '-') &&
             upload_misstated(fs, to, &src->st) && size < UPLOAD_MULTIPART_MIN) {
        reput = UPLOAD_MULTIPART_MIN;
        fetched = 1;
        int f = ops_fetch_whole(fs, src);
        if (f)
            log_warn("cannot fetch '%s' to upload it again (%s): listings will show it "
                     "with the defaults",
                     from, strerror(-f));
    }
    /* a small file held whole in the cache: PUT it under the new name */
    struct upload_body body;
    if (src && cached_body(fs, src, &body, reput)) {
        char etag[S3_ETAG_MAX];
        rc = upload_put(fs, to, 0, &body, &src->st, etag);
        cached_done(fs, src);
        if (!rc) {
            snprintf(src->etag, sizeof(src->etag), "%s", etag);
            snprintf(src->cf->etag, sizeof(src->cf->etag), "%s", etag);
        }
    } else {
        if (fetched)
            cached_done(fs, src);
        int long_copy = src && size > fs->copy_max;
        if (long_copy)
            ops_publish_attrs(src);
        rc = upload_copy(fs, from, to, size);
        if (long_copy)
            inode_unpublish(src);
    }
    if (rc)
        return rc;
    if (dn)
        drop_content(fs, dn, to);
    journal_settle(fs->journal, from);
    int s = s3_delete_object(fs->s3, key);
    if (s != S3_OK)
        log_warn("renamed '%s' but cannot delete the old name: %s", key, s3_strerror(s));
    const char *keys[1] = {from};
    report_deleted(fs, keys, 1);
    return 0;
}

/* Rename the directory at from (attributes st) to to (absent, or an empty
 * directory): its objects are copied and deleted, the pending uploads below
 * it move along; a bare marker (bare_marker) becomes a marker under the new
 * name. The caller holds the names alone. */
static int rename_dir(struct fs *fs, const char *from, const struct stat *st, const char *to,
                      int exists)
{
    int rc = exists ? dir_empty(fs, to) : 0;
    char bare[S3_MAX_KEY_LEN + 1], bare_etag[S3_ETAG_MAX], key[S3_MAX_KEY_LEN + 1];
    int has_bare = rc ? 0 : bare_marker(fs, from, bare, bare_etag), has_marker = 0;
    if (has_bare == 1 && (rc = ops_key(fs, from, 1, key)) == 0) {
        struct obj_attr m;
        int s = head_into(fs, key, 1, &m); /* a marker move_tree moves */
        has_marker = s == S3_OK;
        if (s != S3_OK && s != S3_ERR_NOT_FOUND)
            rc = s3_err("read", key, s);
    }
    if (has_bare < 0)
        rc = has_bare;
    if (rc)
        return rc;
    journal_settle(fs->journal, from);
    journal_settle(fs->journal, to);
    if (exists && ops_key(fs, to, 1, key) == 0)
        s3_delete_object(fs->s3, key);
    if (has_bare == 1 && !has_marker) { /* the directory's marker under the new name */
        struct upload_body empty = {.fd = -1, .s3_ms = names_ms(fs)};
        char etag[S3_ETAG_MAX];
        rc = upload_put(fs, to, 1, &empty, st, etag);
        if (rc)
            return rc;
    }
    rc = move_tree(fs, from, to);
    if (!rc && journal_move(fs->journal, from, to) != 0)
        log_error("pending uploads below '%s' keep their old names in the journal", from);
    int gone = !rc && has_bare == 1 ? bare_delete(fs, bare, bare_etag) : 0;
    if (gone == 1) {
        const char *keys[1] = {from};
        report_deleted(fs, keys, 1);
    } else if (gone < 0) { /* the content is under its new name: the rename stands */
        log_warn("renamed '%s' but its old marker stays: it shows as an empty directory", from);
    }
    return rc;
}

/* The attributes of the file or directory at path (in: its inode, or NULL). */
static int stat_of(struct fs *fs, struct inode *in, const char *path, struct stat *st)
{
    if (!in) {
        struct obj_attr a;
        int rc = ops_resolve(fs, path, &a);
        *st = a.st;
        return rc;
    }
    pthread_mutex_lock(&in->lock);
    int rc = ops_stat(fs, in, st);
    pthread_mutex_unlock(&in->lock);
    return rc;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct fs *fs = fs_of(req);
    char *from = NULL, *to = NULL;
    struct inode *src = NULL, *dn = NULL;
    int rc = ops_write_check(fs);
    if (!rc && (flags & ~RENAME_NOREPLACE))
        rc = -EINVAL; /* RENAME_EXCHANGE and RENAME_WHITEOUT: S3 cannot */
    pthread_mutex_lock(&fs->rename_lock);
    if (!rc)
        rc = ops_child_path(fs, parent, name, &from);
    if (!rc)
        rc = ops_child_path(fs, newparent, newname, &to);
    if (rc || strcmp(from, to) == 0)
        goto unlocked;
    size_t fl = strlen(from);
    if (strncmp(to, from, fl) == 0 && to[fl] == '/') {
        rc = -EINVAL; /* into itself */
        goto unlocked;
    }
    src = inode_get_path(&fs->inodes, from);
    struct stat sst, dst;
    rc = stat_of(fs, src, from, &sst);
    if (rc)
        goto unlocked;
    int is_dir = S_ISDIR(sst.st_mode);
    /* a file's too: a change that entered its name before waits no more */
    names_move_begin(&fs->names, from, to);
    dn = inode_get_path(&fs->inodes, to);
    rc = !dn && known_absent(fs, newparent, newname) ? -ENOENT : stat_of(fs, dn, to, &dst);
    if (rc == -ESTALE) /* its type changed: what is there now */
        rc = stat_of(fs, NULL, to, &dst);
    int exists = rc == 0;
    if (rc && rc != -ENOENT)
        goto done;
    rc = 0;
    if (exists && (flags & RENAME_NOREPLACE))
        rc = -EEXIST;
    else if (exists && is_dir && !S_ISDIR(dst.st_mode))
        rc = -ENOTDIR;
    else if (exists && !is_dir && S_ISDIR(dst.st_mode))
        rc = -EISDIR;
    if (rc)
        goto done;
    if (is_dir) {
        rc = rename_dir(fs, from, &sst, to, exists);
    } else {
        struct inode *over = exists ? dn : NULL;
        if (over)
            pthread_mutex_lock(&over->lock);
        if (src)
            pthread_mutex_lock(&src->lock);
        rc = rename_file(fs, src, from, over, exists, to, (uint64_t)sst.st_size);
        if (!rc)
            rc = inode_move(&fs->inodes, from, to);
        if (src)
            pthread_mutex_unlock(&src->lock);
        if (over)
            pthread_mutex_unlock(&over->lock);
    }
    if (!rc && is_dir)
        rc = inode_move(&fs->inodes, from, to);
    if (!rc && src) {
        pthread_mutex_lock(&src->lock);
        clock_gettime(CLOCK_REALTIME, &src->st.st_ctim);
        pthread_mutex_unlock(&src->lock);
    }
    if (!rc) {
        ops_dir_changed(fs, from);
        ops_dir_changed(fs, to);
    }
done:
    names_move_end(&fs->names);
unlocked:
    pthread_mutex_unlock(&fs->rename_lock);
    inode_put(&fs->inodes, src);
    inode_put(&fs->inodes, dn);
    free(from);
    free(to);
    fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)ino;
    (void)newparent;
    (void)newname;
    fuse_reply_err(req, EPERM); /* objects cannot share data: documented */
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = fs_of(req);
    struct remote_usage u = {0};
    remote_settle(fs->remote, STATFS_SETTLE_MS); /* count the uploads that landed */
    if (remote_usage(fs->remote, &u) != 0 && u.max_bytes == 0) {
        u.max_bytes = fs->session.max_bytes;
        u.max_objects = fs->session.max_objects;
        u.used_bytes = fs->session.used_bytes;
        u.used_objects = fs->session.used_objects;
    }
    struct statvfs sv = {0};
    sv.f_bsize = sv.f_frsize = 4096;
    sv.f_blocks = u.max_bytes / 4096;
    uint64_t used = (u.used_bytes + 4095) / 4096;
    sv.f_bfree = sv.f_bavail = sv.f_blocks > used ? sv.f_blocks - used : 0;
    sv.f_files = u.max_objects;
    sv.f_ffree = sv.f_favail = u.max_objects > u.used_objects ? u.max_objects - u.used_objects : 0;
    sv.f_namemax = META_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
    conn->max_write = 1u << 20;
    conn->max_readahead = 1u << 20;
    /* reads reply from the cache file by splice(2), without a copy through us */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
}

void fs_inode_free(struct inode *inode, void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&inode->lock);
    ops_resv_drop(fs, inode->cf);
    /* its clean cached blocks stay for the next inode of the same object
     * (the inode is out of the table: its path cannot change any more) */
    char key[S3_MAX_KEY_LEN + 1];
    int known = inode->path && ops_key(fs, inode->path, 0, key) == 0;
    cfile_keep(&fs->cache, inode->cf, known ? key : NULL, !inode->cf || !inode->cf->journaled);
    inode->cf = NULL;
    free(inode->link);
    inode->link = NULL;
    pthread_mutex_unlock(&inode->lock);
    ops_dir_release(fs, inode);
}

const struct fuse_lowlevel_ops fs_ops = {
        .init = op_init,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .setattr = op_setattr,
        .readlink = op_readlink,
        .mkdir = op_mkdir,
        .unlink = op_unlink,
        .rmdir = op_rmdir,
        .symlink = op_symlink,
        .rename = op_rename,
        .link = op_link,
        .open = ops_open,
        .read = ops_read,
        .write = ops_write,
        .flush = ops_flush,
        .release = ops_release,
        .fsync = ops_fsync,
        .fsyncdir = ops_fsyncdir,
        .opendir = ops_opendir,
        .readdir = ops_readdir,
        .releasedir = ops_releasedir,
        .statfs = op_statfs,
        .create = ops_create,
        .readdirplus = ops_readdirplus,
};
