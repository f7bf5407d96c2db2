/* ops_dir: directory listings from ListObjectsV2 (delimiter '/'), cached
 * per directory for dir_timeout, and readdir/readdirplus filling attributes
 * from the listing instead of a HEAD per entry. The first readdir of an
 * open directory waits for the first page of a thread that lists them all
 * while readdir already answers with what is in, so a large directory
 * costs about its raw listing time. */
#include "ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "listed.h"
#include "log.h"

static struct listing *listing_new(const char *key)
{
    struct listing *l = calloc(1, sizeof(*l));
    if (!l || !(l->key = strdup(key))) {
        free(l);
        return NULL;
    }
    l->refs = 1;
    l->state = LISTING_GROWING;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->grown, NULL);
    return l;
}

static void listing_ref(struct listing *l)
{
    __atomic_add_fetch(&l->refs, 1, __ATOMIC_ACQ_REL);
}

void listing_unref(struct listing *l)
{
    if (!l || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    free(l->by_name);
    free(l->key);
    free(l->token);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->grown);
    free(l);
}

static int listing_state(const struct listing *l)
{
    return __atomic_load_n(&l->state, __ATOMIC_ACQUIRE);
}

/* Order of the key of a file called name (which holds no '/') against the
 * entry's key in S3 (its name, plus '/' for a directory); for bsearch. */
static int cmp_key(const void *key, const void *elem)
{
    const char *name = key;
    const struct dent *d = elem;
    size_t n = strlen(d->name);
    int c = strncmp(name, d->name, n);
    if (c)
        return c;
    unsigned char a = (unsigned char)name[n], b = d->is_dir ? '/' : 0;
    return a < b ? -1 : a > b;
}

/* The file called name among the entries so far (which are in key order,
 * as S3 lists them), or NULL. Caller holds l->lock. */
static struct dent *find_file(const struct listing *l, const char *name)
{
    return l->n ? bsearch(name, l->e, l->n, sizeof(*l->e), cmp_key) : NULL;
}

uint64_t ops_etag_hash(const char *etag)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)etag; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h | 1;
}

/* Append an entry of key (under l->key). Caller holds l->lock. */
static int add_dent(struct listing *l, const char *key, int prefix, uint64_t size, time_t mtime,
                    const char *etag)
{
    size_t plen = strlen(l->key), n = strlen(key);
    if (n <= plen || strncmp(key, l->key, plen) != 0)
        return 0; /* the directory's own marker */
    const char *name = key + plen;
    int is_dir = key[n - 1] == '/'; /* a prefix, or "x/" with data, defensively */
    size_t len = n - plen - (size_t)is_dir;
    if (len == 0 || len > META_NAME_MAX || memchr(name, '/', len) || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.'))
        return 0; /* not representable as a name here (e.g. "a//b") */
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        struct dent *e = realloc(l->e, nc * sizeof(*e));
        if (!e)
            return -ENOMEM;
        l->e = e;
        l->cap = nc;
    }
    char *s = strndup(name, len);
    if (!s)
        return -ENOMEM;
    struct dent *file = is_dir ? find_file(l, s) : NULL;
    if (file && file->size > 0) {
        free(s); /* a file and a directory of one name: the file is shown */
        return 0;
    }
    if (file) {
        /* an empty object beside keys under its name: the directory's bare
         * marker (ops_resolve); the directory is listed here, in key order
         * ("d/" sorts after "d-1" and "d.txt") */
        mtime = file->mtime;
        file->replaced = 1;
    }
    l->e[l->n++] = (struct dent){.name = s,
                                 .size = prefix ? 0 : size,
                                 .mtime = mtime,
                                 .is_dir = is_dir,
                                 .etag = etag && *etag ? ops_etag_hash(etag) : 0,
                                 .meta_hidden = !is_dir && (!size || (etag && strchr(etag, '-')))};
    return 0;
}

static int dent_cmp(const void *a, const void *b)
{
    const struct dent *x = *(const struct dent *const *)a, *y = *(const struct dent *const *)b;
    return strcmp(x->name, y->name);
}

/* Mark l done (rc 0) or failed (-errno), waking readers. */
static void listing_end(struct listing *l, int rc)
{
    pthread_mutex_lock(&l->lock);
    if (rc == 0 && l->n && !(l->by_name = malloc(l->n * sizeof(*l->by_name))))
        rc = -ENOMEM;
    if (rc == 0) {
        l->n_named = 0;
        for (size_t i = 0; i < l->n; i++)
            if (!l->e[i].replaced)
                l->by_name[l->n_named++] = &l->e[i];
        if (l->n_named)
            qsort(l->by_name, l->n_named, sizeof(*l->by_name), dent_cmp);
    }
    __atomic_store_n(&l->state, rc, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&l->grown);
    pthread_mutex_unlock(&l->lock);
}

/* List the next page into l: objects and prefixes merged in key order.
 * The caller is l's only lister. Returns 0 (the state says whether more
 * pages follow) or -errno (and l has failed). */
static int listing_fetch(struct fs *fs, struct listing *l)
{
    struct s3_list_page page = {0};
    int st = s3_list_objects(fs->s3, l->key, "/", l->token, NULL, 1000, &page);
    free(l->token);
    l->token = NULL;
    if (st != S3_OK) {
        log_error("cannot list '%s': %s %s", l->key, s3_strerror(st), s3_last_error_detail());
        listing_end(l, -s3_status_errno(st));
        return -s3_status_errno(st);
    }
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    size_t o = 0, p = 0;
    while (!rc && (o < page.n_objects || p < page.n_prefixes)) {
        if (p == page.n_prefixes ||
            (o < page.n_objects && strcmp(page.objects[o].key, page.prefixes[p]) < 0)) {
            const struct s3_object_info *obj = &page.objects[o++];
            rc = add_dent(l, obj->key, 0, obj->size, obj->last_modified, obj->etag);
        } else {
            rc = add_dent(l, page.prefixes[p++], 1, 0, fs->defaults.dir_time, NULL);
        }
    }
    l->pages++;
    pthread_cond_broadcast(&l->grown);
    pthread_mutex_unlock(&l->lock);
    if (!rc && page.is_truncated && page.next_token && !(l->token = strdup(page.next_token)))
        rc = -ENOMEM;
    s3_list_page_release(&page);
    if (rc || !l->token)
        listing_end(l, rc);
    return rc;
}

struct lister {
    struct fs *fs;
    struct listing *l;
};

static void *lister_main(void *arg)
{
    struct lister *ls = arg;
    struct fs *fs = ls->fs;
    struct listing *l = ls->l;
    free(ls);
    while (listing_state(l) == LISTING_GROWING) {
        pthread_mutex_lock(&fs->dir_lock);
        int stop = fs->stopping;
        pthread_mutex_unlock(&fs->dir_lock);
        if (stop || __atomic_load_n(&l->refs, __ATOMIC_ACQUIRE) == 1)
            listing_end(l, -ECANCELED); /* unmounting, or no one wants it */
        else
            listing_fetch(fs, l);
    }
    listing_unref(l);
    pthread_mutex_lock(&fs->dir_lock);
    if (--fs->listers == 0)
        pthread_cond_broadcast(&fs->listers_idle);
    pthread_mutex_unlock(&fs->dir_lock);
    return NULL;
}

/* A thread that lists l to its end. Returns whether it started. */
static int start_lister(struct fs *fs, struct listing *l)
{
    struct lister *ls = malloc(sizeof(*ls));
    pthread_t t;
    pthread_mutex_lock(&fs->dir_lock);
    int ok = ls && !fs->stopping;
    if (ok) {
        *ls = (struct lister){fs, l};
        listing_ref(l);
        fs->listers++;
        if (pthread_create(&t, NULL, lister_main, ls) == 0) {
            pthread_detach(t);
        } else {
            fs->listers--;
            __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL);
            ok = 0;
        }
    }
    pthread_mutex_unlock(&fs->dir_lock);
    if (!ok)
        free(ls);
    return ok;
}

/* Start listing path: the first page, and with rest the others. With rest,
 * a thread lists every page, each following the one before at once, and
 * this waits for the first (if no thread can start, all are listed here).
 * Returns 0 or -errno. */
static int list_dir(struct fs *fs, const char *path, int rest, struct listing **out)
{
    char key[S3_MAX_KEY_LEN + 1];
    int rc = ops_key(fs, path, 1, key);
    if (rc)
        return rc;
    struct listing *l = listing_new(key);
    if (!l)
        return -ENOMEM;
    if (rest && start_lister(fs, l)) {
        pthread_mutex_lock(&l->lock);
        while (l->pages == 0 && listing_state(l) == LISTING_GROWING)
            pthread_cond_wait(&l->grown, &l->lock);
        rc = l->pages == 0 ? listing_state(l) : 0; /* the first page failed */
        pthread_mutex_unlock(&l->lock);
    } else {
        rc = listing_fetch(fs, l);
        while (!rc && rest && listing_state(l) == LISTING_GROWING && listing_fetch(fs, l) == 0)
            ;
    }
    if (rc) {
        listing_unref(l);
        return rc;
    }
    *out = l;
    return 0;
}

void ops_dir_stop(struct fs *fs)
{
    pthread_mutex_lock(&fs->dir_lock);
    fs->stopping = 1;
    while (fs->listers > 0)
        pthread_cond_wait(&fs->listers_idle, &fs->dir_lock);
    pthread_mutex_unlock(&fs->dir_lock);
}

static int name_cmp(const void *key, const void *elem)
{
    return strcmp(key, (*(const struct dent *const *)elem)->name);
}

/* The entry called name in a complete listing (NULL if absent or l is
 * not complete). */
static const struct dent *listing_find(const struct listing *l, const char *name)
{
    if (!l || listing_state(l) != LISTING_DONE || !l->n_named)
        return NULL;
    const struct dent *const *e =
            bsearch(name, l->by_name, l->n_named, sizeof(*l->by_name), name_cmp);
    return e ? *e : NULL;
}

/* With fs dir_lock held. */
static void neg_clear(struct inode *d)
{
    listing_unref(d->neg);
    d->neg = NULL;
    nameset_release(&d->added);
}

/* Whether a listing of d begun when d's dir_changes was changes and the
 * names' move count was moves (even: none under way) may be cached: this
 * mount changed nothing in d and renamed nothing since. With fs dir_lock
 * held. */
static int unchanged_since(struct fs *fs, const struct inode *d, uint64_t changes, uint64_t moves)
{
    return d->dir_changes == changes && names_moves(&fs->names) == moves && moves % 2 == 0;
}

/* Install l (a reference is taken) as every name d holds, for dir_timeout.
 * With fs dir_lock held. */
static void set_names_locked(struct fs *fs, struct inode *d, struct listing *l)
{
    listing_ref(l);
    neg_clear(d);
    d->neg = l;
    d->neg_expire = inode_now() + fs->opt.dir_timeout;
}

int ops_dir_set_empty(struct fs *fs, struct inode *d)
{
    struct listing *l = listing_new("");
    if (!l)
        return -ENOMEM;
    listing_end(l, 0);
    pthread_mutex_lock(&fs->dir_lock);
    set_names_locked(fs, d, l);
    listing_unref(d->dir);
    d->dir = l; /* our reference */
    d->dir_expire = d->neg_expire;
    pthread_mutex_unlock(&fs->dir_lock);
    return 0;
}

#define ADDED_MAX 8192 /* past this many names changed a directory is listed again */

void ops_dir_note(struct fs *fs, struct inode *d, const char *name)
{
    pthread_mutex_lock(&fs->dir_lock);
    d->dir_changes++;
    listing_unref(d->dir);
    d->dir = NULL;
    if (d->neg && (d->added.n >= ADDED_MAX || nameset_add(&d->added, name) < 0))
        neg_clear(d); /* cannot keep track: forget instead */
    pthread_mutex_unlock(&fs->dir_lock);
}

int ops_dir_absent(struct fs *fs, struct inode *d, const char *name)
{
    int absent = 0;
    pthread_mutex_lock(&fs->dir_lock);
    if (d->neg && d->neg_expire > inode_now() && listing_state(d->neg) == LISTING_DONE &&
        !listing_find(d->neg, name))
        absent = !nameset_has(&d->added, name);
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
    uint64_t changes = 0, moves = names_moves(&fs->names);
    if (d) {
        pthread_mutex_lock(&fs->dir_lock);
        changes = d->dir_changes;
        pthread_mutex_unlock(&fs->dir_lock);
    }
    int rc = d ? list_dir(fs, parent, 0, &l) : 2;
    free(parent);
    if (rc == 0 && listing_state(l) == LISTING_DONE) {
        pthread_mutex_lock(&fs->dir_lock);
        int current = unchanged_since(fs, d, changes, moves); /* else it may predate a change */
        if (current)
            set_names_locked(fs, d, l);
        pthread_mutex_unlock(&fs->dir_lock);
        const struct dent *e = listing_find(l, path + plen + (plen ? 1 : 0));
        rc = !current ? 2 : !e ? 0 : e->is_dir ? 1 : 2;
    } else if (rc == 0) {
        rc = 2; /* too large to hold, or changed meanwhile: ask about the name itself */
    }
    listing_unref(l);
    inode_put(&fs->inodes, d);
    return rc;
}

/* An open directory: the listing plus local files not uploaded yet (the
 * extras, collected once the listing is complete). */
struct dirh {
    char *path;
    struct listing *l;
    char **extra;
    size_t n_extra, cap_extra;
    char **early; /* local files when the listing started (upload may land meanwhile) */
    size_t n_early, cap_early;
    int extras_known;
    int oom;
    int cached;       /* l is (or was offered as) the directory's cached listing */
    uint64_t changes; /* the directory's dir_changes when l started */
    uint64_t moves;   /* names_moves when l started */
    double listed_at;
};

/* Append a copy of name to *v (n, cap); sets d->oom when out of memory. */
static void names_add(struct dirh *d, char ***v, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **e = realloc(*v, nc * sizeof(*e));
        if (!e) {
            d->oom = 1;
            return;
        }
        *v = e;
        *cap = nc;
    }
    if (!((*v)[*n] = strdup(name)))
        d->oom = 1;
    else
        (*n)++;
}

static void collect_early(void *arg, const char *name, struct inode *inode)
{
    struct dirh *d = arg;
    (void)inode;
    names_add(d, &d->early, &d->n_early, &d->cap_early, name);
}

static void collect_local(void *arg, const char *name, struct inode *inode)
{
    struct dirh *d = arg;
    (void)inode;
    if (!listing_find(d->l, name))
        names_add(d, &d->extra, &d->n_extra, &d->cap_extra, name);
}

/* The extras: local files not listed, now or when the listing started (a
 * file whose upload landed after S3 listed that part of the directory is
 * in neither the listing nor the local files at its end). */
static void collect_extras(struct fs *fs, struct dirh *d)
{
    inode_local_children(&fs->inodes, d->path, collect_local, d);
    for (size_t i = 0; i < d->n_early && !d->oom; i++) {
        const char *name = d->early[i];
        int known = listing_find(d->l, name) != NULL;
        for (size_t k = 0; k < d->n_extra && !known; k++)
            known = strcmp(d->extra[k], name) == 0;
        size_t n = strlen(d->path) + strlen(name) + 2;
        char *path = known ? NULL : malloc(n);
        struct inode *in = NULL;
        if (path && meta_join(d->path, name, path, n) == 0)
            in = inode_get_path(&fs->inodes, path); /* not unlinked meanwhile */
        if (in)
            names_add(d, &d->extra, &d->n_extra, &d->cap_extra, name);
        inode_put(&fs->inodes, in);
        free(path);
    }
}

static void dirh_free(struct dirh *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_extra; i++)
        free(d->extra[i]);
    free(d->extra);
    for (size_t i = 0; i < d->n_early; i++)
        free(d->early[i]);
    free(d->early);
    listing_unref(d->l);
    free(d->path);
    free(d);
}

/* Entry j of the open directory (0: the first after "." and ".."): 1 with
 * *de (a listed entry; de->name stays valid while d holds the listing) or
 * *extra set, 0 at the end, -EAGAIN if not listed yet and !wait, or -errno
 * (the listing failed). */
static int dirh_entry(struct fs *fs, struct dirh *d, size_t j, int wait, struct dent *de,
                      const char **extra)
{
    struct listing *l = d->l;
    pthread_mutex_lock(&l->lock);
    while (j >= l->n && listing_state(l) == LISTING_GROWING && wait)
        pthread_cond_wait(&l->grown, &l->lock);
    int state = listing_state(l);
    size_t n = l->n;
    if (j < n) {
        *de = l->e[j];
        *extra = NULL;
    }
    pthread_mutex_unlock(&l->lock);
    if (j < n)
        return 1;
    if (state != LISTING_DONE)
        return state == LISTING_GROWING ? -EAGAIN : state;
    if (!d->extras_known) {
        collect_extras(fs, d);
        if (d->oom)
            return -ENOMEM;
        d->extras_known = 1;
    }
    if (j - n >= d->n_extra)
        return 0;
    *extra = d->extra[j - n];
    return 1;
}

/* A listing read to its end becomes the directory's cached listing (and the
 * names it implies), unless this mount changed the directory or renamed
 * anything while it was listed: it may predate the change. Only complete
 * listings are cached, so a reader that stops early (ls | head) lets the
 * lister stop too. */
static void cache_listing(struct fs *fs, fuse_ino_t ino, struct dirh *d)
{
    if (d->cached || listing_state(d->l) != LISTING_DONE)
        return;
    d->cached = 1;
    struct inode *in = inode_get(&fs->inodes, ino);
    if (!in)
        return;
    pthread_mutex_lock(&fs->dir_lock);
    if (unchanged_since(fs, in, d->changes, d->moves)) {
        listing_unref(in->dir);
        in->dir = d->l;
        listing_ref(d->l);
        in->dir_expire = d->listed_at + fs->opt.dir_timeout;
        set_names_locked(fs, in, d->l);
    }
    pthread_mutex_unlock(&fs->dir_lock);
    inode_put(&fs->inodes, in);
}

/* Give d, an open directory in, its listing: in's cached one while fresh,
 * else a new one, whose first page is waited for. Returns 0 or -errno. */
static int dirh_list(struct fs *fs, struct inode *in, struct dirh *d)
{
    d->listed_at = inode_now();
    /* local files now: an upload landing before the listing ends takes
     * its file off the local ones, and a cached listing may predate it */
    inode_local_children(&fs->inodes, d->path, collect_early, d);
    int rc = -ENOMEM;
    if (d->oom)
        goto fail;
    pthread_mutex_lock(&fs->dir_lock);
    if (in->dir && in->dir_expire > d->listed_at && listing_state(in->dir) >= 0) {
        d->l = in->dir;
        listing_ref(d->l);
        d->cached = 1;
    }
    d->changes = in->dir_changes;
    d->moves = names_moves(&fs->names);
    pthread_mutex_unlock(&fs->dir_lock);
    if (d->l)
        return 0;
    rc = list_dir(fs, d->path, 1, &d->l);
    if (!rc)
        return 0;
fail: /* a later read starts over */
    for (size_t i = 0; i < d->n_early; i++)
        free(d->early[i]);
    d->n_early = 0;
    d->oom = 0;
    return rc;
}

/* The listing starts at the first read, not here: `sync DIR` opens the
 * directory only to fsync it. */
void ops_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct inode *in = inode_get(&fs->inodes, ino);
    struct dirh *d = calloc(1, sizeof(*d));
    int rc = !in ? -ENOENT : !d ? -ENOMEM : inode_path(&fs->inodes, in, &d->path);
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

/* The HEADs that the entries from off on, as many as a reply of size bytes
 * holds, need (listed ones only: not waiting for more unless there is none
 * yet), made in parallel: a directory of entries to read costs a few
 * HEADs' time per reply rather than one per entry. Best effort: an entry
 * without its HEAD here gets it when answered. */
static void heads_prefetch(fuse_req_t req, struct fs *fs, struct dirh *d, int marked, size_t off,
                           size_t size, struct listed_heads *hs)
{
    size_t used = 0;
    for (size_t i = off; used < size; i++) {
        struct fuse_entry_param e = {0};
        struct dent de;
        const char *extra;
        if (i >= 2 && dirh_entry(fs, d, i - 2, used == 0, &de, &extra) <= 0)
            break;
        if (i >= 2 && !extra && de.replaced)
            continue;
        used += fuse_add_direntry_plus(req, NULL, 0,
                                       i == 0   ? "."
                                       : i == 1 ? ".."
                                       : extra  ? extra
                                                : de.name,
                                       &e, 0);
        /* an entry that needs no HEAD unknown needs none known */
        if (i < 2 || extra || used > size || listed_source(NULL, &de, marked) != LISTED_HEAD)
            continue;
        size_t n = strlen(d->path) + strlen(de.name) + 2;
        char *path = malloc(n);
        if (!path || meta_join(d->path, de.name, path, n) != 0) {
            free(path);
            break;
        }
        struct inode *c = inode_get_path(&fs->inodes, path);
        enum listed_source src = LISTED_HEAD;
        if (c) { /* a file it knows, or pending, may need none */
            pthread_mutex_lock(&c->lock);
            src = listed_source(c, &de, marked);
            pthread_mutex_unlock(&c->lock);
            inode_put(&fs->inodes, c);
        }
        if (src != LISTED_HEAD) {
            free(path);
            continue;
        }
        if (listed_heads_add(hs, i, path, de.is_dir) != 0) {
            free(path);
            break;
        }
    }
    listed_heads_run(fs, hs);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, int plus)
{
    struct fs *fs = fs_of(req);
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    /* the inodes given a lookup, forgotten again if the reply fails (an
     * entry with its attributes takes more than 144 bytes) */
    size_t cap = size / 144 + 1, n_counted = 0;
    uint64_t *counted = malloc(cap * sizeof(*counted));
    if (!buf || !counted) {
        free(buf);
        free(counted);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* the directory's name now: it may have been renamed since opendir
     * (the kernel sends one readdir of a handle at a time) */
    struct inode *dir = inode_get(&fs->inodes, ino);
    char *now = NULL;
    if (dir && inode_path(&fs->inodes, dir, &now) == 0) {
        free(d->path);
        d->path = now;
    }
    if (!d->l) {
        int rc = dir ? dirh_list(fs, dir, d) : -ENOENT;
        if (rc) {
            inode_put(&fs->inodes, dir);
            free(buf);
            free(counted);
            fuse_reply_err(req, -rc);
            return;
        }
    }
    /* changed since it was listed: names only, no attributes, so that the
     * kernel keeps no entry of a name this mount just removed */
    int stale = 0, marked = 0;
    if (dir && plus) {
        pthread_mutex_lock(&dir->lock);
        struct stat st; /* its marker, read again once expired: another mount may have marked it */
        if (dir->ino != INODE_ROOT && dir->attr_expire <= inode_now())
            ops_stat(fs, dir, &st);
        marked = dir->entry_attrs; /* its entries' attributes are read from them */
        pthread_mutex_unlock(&dir->lock);
    }
    if (dir) {
        pthread_mutex_lock(&fs->dir_lock);
        stale = dir->dir_changes != d->changes || names_moves(&fs->names) != d->moves;
        pthread_mutex_unlock(&fs->dir_lock);
    }
    inode_put(&fs->inodes, dir);
    /* the HEADs of multipart entries share write_timeout: a silent S3
     * costs one wait, not one per entry */
    long long saved = s3_thread_deadline_save();
    if (!saved)
        s3_thread_deadline((long)fs->opt.write_timeout * 1000);
    struct listed_heads hs = {0};
    if (plus && !stale)
        heads_prefetch(req, fs, d, marked, (size_t)off, size, &hs);
    size_t next_head = 0;
    size_t used = 0;
    int err = 0;
    for (size_t i = (size_t)off;; i++) {
        const char *name;
        struct dent dent;
        const struct dent *de = NULL;
        if (i == 0) {
            name = ".";
        } else if (i == 1) {
            name = "..";
        } else {
            /* wait for the lister only when there is nothing to answer yet */
            int rc = dirh_entry(fs, d, i - 2, used == 0, &dent, &name);
            if (rc == 0)
                cache_listing(fs, ino, d);
            if (rc <= 0) {
                err = rc == -EAGAIN ? 0 : -rc;
                break;
            }
            if (!name)
                name = (de = &dent)->name;
            if (de && de->replaced)
                continue;
        }
        size_t need;
        if (!plus || i < 2 || stale) {
            struct stat st = {0};
            st.st_ino = i == 0 ? ino : FUSE_ROOT_ID;
            /* a multipart object may be a symlink: its type unknown (the
             * caller, e.g. find -type l, then asks) */
            st.st_mode = !de ? S_IFDIR : de->is_dir ? S_IFDIR : de->meta_hidden ? 0 : S_IFREG;
            if (i >= 2) {
                size_t n = strlen(d->path) + strlen(name) + 2;
                char *path = malloc(n);
                struct inode *c = NULL;
                if (path && meta_join(d->path, name, path, n) == 0)
                    c = inode_get_path(&fs->inodes, path);
                free(path);
                /* an ino the kernel may ignore; known ones are real */
                st.st_ino = c ? (ino_t)c->ino : (ino_t)(0x8000000000000000ull | i);
                if (c && (!de || de->meta_hidden)) {
                    struct stat pub;
                    if (!inode_lock_or_published(c, &pub)) {
                        st.st_mode = pub.st_mode; /* an upload or a read holds it */
                    } else {
                        if (!de || c->meta_known)
                            st.st_mode = c->st.st_mode;
                        pthread_mutex_unlock(&c->lock);
                    }
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
        if (need > size - used || n_counted == cap)
            break;
        int made;
        struct inode *c = inode_make_child(&fs->inodes, ino, name, &made);
        if (!c) {
            err = made == -ENOENT ? 0 : -made; /* the directory went: the listing ends */
            break;
        }
        const struct listed_head *h = NULL;
        while (next_head < hs.n && hs.h[next_head].index < i)
            next_head++;
        if (next_head < hs.n && hs.h[next_head].index == i)
            h = &hs.h[next_head];
        struct stat pub;
        if (!inode_lock_or_published(c, &pub)) {
            ops_entry_from(fs, c, &pub, &e); /* an upload or a read holds it */
        } else {
            if (de && listed_attrs(fs, c, de, marked, h)) {
                pthread_mutex_unlock(&c->lock);
                inode_put(&fs->inodes, c);
                e.attr.st_ino = (ino_t)(0x8000000000000000ull | i);
                e.ino = 0; /* the name only: the kernel looks it up */
                used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
                                               (off_t)i + 1);
                continue;
            }
            if (!de && ops_stat(fs, c, &e.attr) != 0) {
                pthread_mutex_unlock(&c->lock);
                inode_put(&fs->inodes, c);
                continue; /* a local file that just went away */
            }
            ops_entry(fs, c, &e);
            pthread_mutex_unlock(&c->lock);
        }
        inode_count_lookup(&fs->inodes, c);
        counted[n_counted++] = c->ino;
        used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)i + 1);
        inode_put(&fs->inodes, c);
    }
    s3_thread_deadline_restore(saved);
    listed_heads_free(&hs);
    if (err && used == 0)
        fuse_reply_err(req, err);
    else if (fuse_reply_buf(req, buf, used) != 0) /* interrupted: the kernel counts none */
        for (size_t k = 0; k < n_counted; k++)
            inode_forget(&fs->inodes, counted[k], 1);
    free(counted);
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
