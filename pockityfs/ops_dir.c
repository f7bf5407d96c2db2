/* ops_dir: directory listings from ListObjectsV2 (delimiter '/', every
 * page), cached per directory for dir_timeout, and readdir/readdirplus
 * filling attributes from the listing instead of a HEAD per entry. */
#include "ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void listing_unref(struct listing *l)
{
    if (!l || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    free(l);
}

static int dent_cmp(const void *a, const void *b)
{
    const struct dent *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->is_dir - y->is_dir; /* the file first */
}

static int add_dent(struct listing *l, size_t *cap, const char *name, size_t len, int is_dir,
                    uint64_t size, time_t mtime)
{
    if (len == 0 || len > META_NAME_MAX || memchr(name, '/', len) || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.'))
        return 0; /* not representable as a name here (e.g. "a//b") */
    if (l->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct dent *e = realloc(l->e, nc * sizeof(*e));
        if (!e)
            return -ENOMEM;
        l->e = e;
        *cap = nc;
    }
    char *s = strndup(name, len);
    if (!s)
        return -ENOMEM;
    l->e[l->n++] = (struct dent){s, size, mtime, is_dir};
    return 0;
}

/* The listing of path, at most max_pages pages (0: every page); *complete
 * says whether it holds every entry. */
static int list_dir(struct fs *fs, const char *path, int max_pages, struct listing **out,
                    int *complete)
{
    char key[S3_MAX_KEY_LEN + 1];
    int rc = ops_key(fs, path, 1, key);
    if (rc)
        return rc;
    size_t plen = strlen(key), cap = 0;
    struct listing *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->refs = 1;
    char *token = NULL;
    int pages = 0;
    *complete = 1;
    do {
        if (max_pages && pages++ == max_pages) {
            *complete = 0;
            break;
        }
        struct s3_list_page page = {0};
        int st = s3_list_objects(fs->s3, key, "/", token, NULL, 1000, &page);
        free(token);
        token = NULL;
        if (st != S3_OK) {
            log_error("cannot list '%s': %s %s", key, s3_strerror(st), s3_last_error_detail());
            rc = -s3_status_errno(st);
            break;
        }
        for (size_t i = 0; i < page.n_objects && !rc; i++) {
            const struct s3_object_info *o = &page.objects[i];
            size_t n = strlen(o->key);
            if (n <= plen || strncmp(o->key, key, plen) != 0)
                continue; /* the directory's own marker */
            const char *name = o->key + plen;
            int is_dir = o->key[n - 1] == '/'; /* "x/" with data, defensively */
            rc = add_dent(l, &cap, name, n - plen - (size_t)is_dir, is_dir, o->size,
                          o->last_modified);
        }
        for (size_t i = 0; i < page.n_prefixes && !rc; i++) {
            const char *p = page.prefixes[i];
            size_t n = strlen(p);
            if (n <= plen || strncmp(p, key, plen) != 0)
                continue;
            rc = add_dent(l, &cap, p + plen, n - plen - 1, 1, 0, 0);
        }
        if (!rc && page.is_truncated && page.next_token && !(token = strdup(page.next_token)))
            rc = -ENOMEM;
        s3_list_page_release(&page);
    } while (!rc && token);
    free(token);
    if (rc) {
        listing_unref(l);
        return rc;
    }
    if (l->n)
        qsort(l->e, l->n, sizeof(*l->e), dent_cmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w > 0 && strcmp(l->e[w - 1].name, l->e[i].name) == 0) {
            free(l->e[i].name);
            continue;
        }
        l->e[w++] = l->e[i];
    }
    l->n = w;
    *out = l;
    return 0;
}

int ops_list(struct fs *fs, const char *path, struct listing **out)
{
    int complete;
    return list_dir(fs, path, 0, out, &complete);
}

static int name_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct dent *)elem)->name);
}

static const struct dent *listing_find(const struct listing *l, const char *name)
{
    return l && l->n ? bsearch(name, l->e, l->n, sizeof(*l->e), name_cmp) : NULL;
}

/* With fs dir_lock held. */
static void neg_clear(struct inode *d)
{
    listing_unref(d->neg);
    d->neg = NULL;
    for (size_t i = 0; i < d->n_added; i++)
        free(d->added[i]);
    free(d->added);
    d->added = NULL;
    d->n_added = d->cap_added = 0;
}

void ops_dir_set_names(struct fs *fs, struct inode *d, struct listing *l)
{
    __atomic_add_fetch(&l->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&fs->dir_lock);
    neg_clear(d);
    d->neg = l;
    d->neg_expire = inode_now() + fs->opt.dir_timeout;
    pthread_mutex_unlock(&fs->dir_lock);
}

int ops_dir_set_empty(struct fs *fs, struct inode *d)
{
    struct listing *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->refs = 1;
    ops_dir_set_names(fs, d, l);
    pthread_mutex_lock(&fs->dir_lock);
    listing_unref(d->dir);
    d->dir = l; /* our reference */
    d->dir_expire = d->neg_expire;
    pthread_mutex_unlock(&fs->dir_lock);
    return 0;
}

#define ADDED_MAX 8192 /* past this many changes a directory is listed again */

void ops_dir_note(struct fs *fs, struct inode *d, const char *name)
{
    pthread_mutex_lock(&fs->dir_lock);
    listing_unref(d->dir);
    d->dir = NULL;
    if (d->neg) {
        char *s = NULL;
        if (d->n_added == d->cap_added) {
            size_t nc = d->cap_added ? d->cap_added * 2 : 16;
            char **a = nc <= ADDED_MAX ? realloc(d->added, nc * sizeof(*a)) : NULL;
            if (a) {
                d->added = a;
                d->cap_added = nc;
            }
        }
        if (d->n_added < d->cap_added && (s = strdup(name)))
            d->added[d->n_added++] = s;
        else
            neg_clear(d); /* cannot keep track: forget instead */
    }
    pthread_mutex_unlock(&fs->dir_lock);
}

int ops_dir_absent(struct fs *fs, struct inode *d, const char *name)
{
    int absent = 0;
    pthread_mutex_lock(&fs->dir_lock);
    if (d->neg && d->neg_expire > inode_now() && !listing_find(d->neg, name)) {
        absent = 1;
        for (size_t i = 0; i < d->n_added && absent; i++)
            absent = strcmp(d->added[i], name) != 0;
    }
    pthread_mutex_unlock(&fs->dir_lock);
    return absent;
}

void ops_dir_release(struct fs *fs, struct inode *d)
{
    pthread_mutex_lock(&fs->dir_lock);
    listing_unref(d->dir);
    d->dir = NULL;
    neg_clear(d);
    pthread_mutex_unlock(&fs->dir_lock);
}

int ops_dir_probe(struct fs *fs, const char *path)
{
    size_t plen = meta_parent_len(path);
    char *parent = strndup(path, plen);
    if (!parent)
        return -ENOMEM;
    struct inode *d = inode_get_path(&fs->inodes, parent);
    struct listing *l = NULL;
    int complete = 0, rc = d ? list_dir(fs, parent, 1, &l, &complete) : 1;
    free(parent);
    if (rc == 0 && complete) {
        ops_dir_set_names(fs, d, l);
        const struct dent *e = listing_find(l, path + plen + (plen ? 1 : 0));
        rc = !e ? 0 : e->is_dir ? 1 : 2;
    } else if (rc == 0) {
        rc = 2; /* too large to hold: ask about the name itself */
    }
    listing_unref(l);
    inode_put(&fs->inodes, d);
    return rc;
}

/* An open directory: the listing plus local files not uploaded yet. */
struct dirh {
    char *path;
    struct listing *l;
    char **extra;
    size_t n_extra, cap_extra;
    int oom;
};

static void collect_local(void *arg, const char *name, struct inode *inode)
{
    struct dirh *d = arg;
    struct dent key = {.name = (char *)name};
    if (d->l && d->l->n && bsearch(&key, d->l->e, d->l->n, sizeof(key), dent_cmp))
        return;
    (void)inode;
    if (d->n_extra == d->cap_extra) {
        size_t nc = d->cap_extra ? d->cap_extra * 2 : 8;
        char **e = realloc(d->extra, nc * sizeof(*e));
        if (!e) {
            d->oom = 1;
            return;
        }
        d->extra = e;
        d->cap_extra = nc;
    }
    if (!(d->extra[d->n_extra] = strdup(name)))
        d->oom = 1;
    else
        d->n_extra++;
}

static void dirh_free(struct dirh *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_extra; i++)
        free(d->extra[i]);
    free(d->extra);
    listing_unref(d->l);
    free(d->path);
    free(d);
}

void ops_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    struct dirh *d = calloc(1, sizeof(*d));
    int rc = !in ? -ENOENT : !d ? -ENOMEM : inode_path(&fs->inodes, in, &d->path);
    if (rc)
        goto done;
    double now = inode_now();
    pthread_mutex_lock(&fs->dir_lock);
    if (in->dir && in->dir_expire > now) {
        d->l = in->dir;
        __atomic_add_fetch(&d->l->refs, 1, __ATOMIC_ACQ_REL);
    }
    pthread_mutex_unlock(&fs->dir_lock);
    if (!d->l) {
        rc = ops_list(fs, d->path, &d->l);
        if (rc)
            goto done;
        pthread_mutex_lock(&fs->dir_lock);
        listing_unref(in->dir);
        in->dir = d->l;
        __atomic_add_fetch(&d->l->refs, 1, __ATOMIC_ACQ_REL);
        in->dir_expire = now + fs->opt.dir_timeout;
        pthread_mutex_unlock(&fs->dir_lock);
        ops_dir_set_names(fs, in, d->l);
    }
    inode_local_children(&fs->inodes, d->path, collect_local, d);
    if (d->oom)
        rc = -ENOMEM;
done:
    inode_put(&fs->inodes, in);
    if (rc) {
        dirh_free(d);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    fuse_reply_open(req, fi);
}

void ops_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    dirh_free((struct dirh *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* Attributes for a listed entry: ours when we know better (pending data,
 * metadata seen, still fresh), else the listing's. Caller holds in->lock. */
static void entry_from_dent(struct fs *fs, struct inode *in, const struct dent *de)
{
    if (in->cf && in->cf->dirty)
        return;
    if (in->attr_expire > inode_now() && in->meta_known)
        return;
    struct stat st;
    meta_default_stat(de->is_dir, de->size, de->mtime, &fs->defaults, &st);
    int same_kind = !de->is_dir == !S_ISDIR(in->st.st_mode);
    if (in->attr_expire > 0 && in->meta_known && same_kind &&
        (de->is_dir || (uint64_t)in->st.st_size == de->size)) {
        /* metadata seen before still describes the object */
        st.st_mode = in->st.st_mode;
        st.st_uid = in->st.st_uid;
        st.st_gid = in->st.st_gid;
        st.st_mtim = in->st.st_mtim;
        st.st_ctim = in->st.st_ctim;
        ops_set_attr(fs, in, &st, in->etag, in->has_marker, 1);
        return;
    }
    ops_set_attr(fs, in, &st, "", in->has_marker, 0);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, int plus)
{
    struct fs *fs = fs_of(req);
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0, total = 2 + d->l->n + d->n_extra;
    int err = 0;
    for (size_t i = (size_t)off; i < total; i++) {
        const char *name;
        const struct dent *de = NULL;
        if (i == 0)
            name = ".";
        else if (i == 1)
            name = "..";
        else if (i < 2 + d->l->n)
            name = (de = &d->l->e[i - 2])->name;
        else
            name = d->extra[i - 2 - d->l->n];
        size_t need;
        if (!plus || i < 2) {
            struct stat st = {0};
            st.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
            st.st_mode = de && !de->is_dir ? S_IFREG : S_IFDIR;
            if (i >= 2) {
                size_t n = strlen(d->path) + strlen(name) + 2;
                char *path = malloc(n);
                struct inode *c = NULL;
                if (path && meta_join(d->path, name, path, n) == 0)
                    c = inode_get_path(&fs->inodes, path);
                free(path);
                /* an ino the kernel may ignore; known ones are real */
                st.st_ino = c ? (ino_t)c->ino : (ino_t)(0x8000000000000000ull | i);
                if (c && !de) {
                    pthread_mutex_lock(&c->lock);
                    st.st_mode = c->st.st_mode;
                    pthread_mutex_unlock(&c->lock);
                }
                inode_put(&fs->inodes, c);
            }
            if (plus) {
                struct fuse_entry_param e = {0};
                e.attr = st;
                e.ino = 0; /* "." and "..": no entry */
                need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
            } else {
                need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)i + 1);
            }
            if (need > size - used)
                break;
            used += need;
            continue;
        }
        /* readdirplus: every entry gets an inode and counts a lookup */
        struct fuse_entry_param e = {0};
        need = fuse_add_direntry_plus(req, NULL, 0, name, &e, 0);
        if (need > size - used)
            break;
        size_t n = strlen(d->path) + strlen(name) + 2;
        char *path = malloc(n);
        struct inode *c = NULL;
        if (!path || meta_join(d->path, name, path, n) != 0 ||
            !(c = inode_make(&fs->inodes, path, NULL))) {
            free(path);
            err = ENOMEM;
            break;
        }
        free(path);
        pthread_mutex_lock(&c->lock);
        if (de) {
            entry_from_dent(fs, c, de);
        } else if (ops_stat(fs, c, &e.attr) != 0) {
            pthread_mutex_unlock(&c->lock);
            inode_put(&fs->inodes, c);
            continue; /* a local file that just went away */
        }
        ops_entry(fs, c, &e);
        pthread_mutex_unlock(&c->lock);
        inode_count_lookup(&fs->inodes, c);
        used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
        inode_put(&fs->inodes, c);
    }
    if (err && used == 0)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

void ops_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, 0);
}

void ops_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, 1);
}
