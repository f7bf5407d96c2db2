/* inode: hash tables from inode number and from path to struct inode, with
 * lookup counts and pins deciding when an inode is freed. */
#include "inode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double inode_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t hash_ino(uint64_t ino)
{
    ino ^= ino >> 33;
    ino *= 0xff51afd7ed558ccdULL;
    return (size_t)(ino ^ (ino >> 33));
}

static void path_unlink(struct inode_table *t, struct inode *in)
{
    if (!in->path)
        return;
    struct inode **pp = &t->by_path[in->path_hash & (t->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next_path) {
        if (*pp == in) {
            *pp = in->next_path;
            break;
        }
    }
    in->next_path = NULL;
}

/* Link in by its path_hash (set whenever its path is). */
static void path_link(struct inode_table *t, struct inode *in)
{
    size_t b = in->path_hash & (t->n_buckets - 1);
    in->next_path = t->by_path[b];
    t->by_path[b] = in;
}

static void ino_link(struct inode_table *t, struct inode *in)
{
    size_t b = hash_ino(in->ino) & (t->n_buckets - 1);
    in->next_ino = t->by_ino[b];
    t->by_ino[b] = in;
}

static void ino_unlink(struct inode_table *t, struct inode *in)
{
    struct inode **pp = &t->by_ino[hash_ino(in->ino) & (t->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next_ino) {
        if (*pp == in) {
            *pp = in->next_ino;
            return;
        }
    }
}

/* Double the buckets when there are more inodes than buckets; failure just
 * keeps the chains longer. */
static void maybe_grow(struct inode_table *t)
{
    if (t->count <= t->n_buckets)
        return;
    size_t n = t->n_buckets * 2;
    struct inode **bi = calloc(n, sizeof(*bi)), **bp = calloc(n, sizeof(*bp));
    if (!bi || !bp) {
        free(bi);
        free(bp);
        return;
    }
    struct inode **old_i = t->by_ino, **old_p = t->by_path;
    size_t old_n = t->n_buckets;
    t->by_ino = bi;
    t->by_path = bp;
    t->n_buckets = n;
    for (size_t i = 0; i < old_n; i++) {
        for (struct inode *in = old_i[i], *next; in; in = next) {
            next = in->next_ino;
            ino_link(t, in);
        }
        for (struct inode *in = old_p[i], *next; in; in = next) {
            next = in->next_path;
            path_link(t, in);
        }
    }
    free(old_i);
    free(old_p);
}

struct inode_pub {
    pthread_mutex_t lock;
    struct stat st;
    int valid;
};

static struct inode *inode_alloc(uint64_t ino, const char *path)
{
    struct inode *in = calloc(1, sizeof(*in));
    if (!in)
        return NULL;
    in->path = strdup(path);
    in->path_hash = nameset_hash(path);
    if (!in->path) {
        free(in);
        return NULL;
    }
    in->ino = ino;
    in->st.st_ino = (ino_t)ino;
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, NULL);
    return in;
}

static void inode_destroy(struct inode_table *t, struct inode *in)
{
    if (t->on_free)
        t->on_free(in, t->on_free_arg);
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->cond);
    if (in->pub) {
        pthread_mutex_destroy(&in->pub->lock);
        free(in->pub);
    }
    free(in->path);
    free(in);
}

void inode_publish(struct inode *in, const struct stat *st)
{
    struct inode_pub *pub = in->pub;
    if (!pub) { /* in->lock held: no other publisher */
        if (!(pub = calloc(1, sizeof(*pub))))
            return; /* readers wait for the lock instead */
        pthread_mutex_init(&pub->lock, NULL);
        __atomic_store_n(&in->pub, pub, __ATOMIC_RELEASE);
    }
    pthread_mutex_lock(&pub->lock);
    pub->st = *st;
    pub->valid = 1;
    pthread_mutex_unlock(&pub->lock);
}

void inode_unpublish(struct inode *in)
{
    struct inode_pub *pub = in->pub;
    if (!pub)
        return;
    pthread_mutex_lock(&pub->lock);
    pub->valid = 0;
    pthread_mutex_unlock(&pub->lock);
}

int inode_lock_or_published(struct inode *in, struct stat *st)
{
    if (pthread_mutex_trylock(&in->lock) == 0)
        return 1;
    struct inode_pub *pub = __atomic_load_n(&in->pub, __ATOMIC_ACQUIRE);
    int valid = 0;
    if (pub) {
        pthread_mutex_lock(&pub->lock);
        if ((valid = pub->valid))
            *st = pub->st;
        pthread_mutex_unlock(&pub->lock);
    }
    if (valid)
        return 0;
    pthread_mutex_lock(&in->lock); /* a short holder, or one yet to publish */
    return 1;
}

int inode_table_init(struct inode_table *t, void (*on_free)(struct inode *, void *), void *arg)
{
    memset(t, 0, sizeof(*t));
    t->n_buckets = 1024;
    t->by_ino = calloc(t->n_buckets, sizeof(*t->by_ino));
    t->by_path = calloc(t->n_buckets, sizeof(*t->by_path));
    struct inode *root = inode_alloc(INODE_ROOT, "");
    if (!t->by_ino || !t->by_path || !root) {
        free(t->by_ino);
        free(t->by_path);
        if (root) {
            free(root->path);
            free(root);
        }
        return -ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->on_free = on_free;
    t->on_free_arg = arg;
    root->nlookup = 1; /* the root is never forgotten */
    ino_link(t, root);
    path_link(t, root);
    t->count = 1;
    t->next_ino = INODE_ROOT + 1;
    return 0;
}

void inode_table_release(struct inode_table *t)
{
    if (!t->by_ino)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        for (struct inode *in = t->by_ino[i], *next; in; in = next) {
            next = in->next_ino;
            inode_destroy(t, in);
        }
    }
    free(t->by_ino);
    free(t->by_path);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof(*t));
}

static struct inode *find_ino(struct inode_table *t, uint64_t ino)
{
    for (struct inode *in = t->by_ino[hash_ino(ino) & (t->n_buckets - 1)]; in; in = in->next_ino)
        if (in->ino == ino)
            return in;
    return NULL;
}

static struct inode *find_path(struct inode_table *t, const char *path)
{
    size_t h = nameset_hash(path);
    for (struct inode *in = t->by_path[h & (t->n_buckets - 1)]; in; in = in->next_path)
        if (in->path_hash == h && in->path && strcmp(in->path, path) == 0)
            return in;
    return NULL;
}

struct inode *inode_get(struct inode_table *t, uint64_t ino)
{
    pthread_mutex_lock(&t->lock);
    struct inode *in = find_ino(t, ino);
    if (in)
        in->pins++;
    pthread_mutex_unlock(&t->lock);
    return in;
}

struct inode *inode_get_path(struct inode_table *t, const char *path)
{
    pthread_mutex_lock(&t->lock);
    struct inode *in = find_path(t, path);
    if (in)
        in->pins++;
    pthread_mutex_unlock(&t->lock);
    return in;
}

/* inode_make with t->lock held. */
static struct inode *make_locked(struct inode_table *t, const char *path, int *created)
{
    if (created)
        *created = 0;
    struct inode *in = find_path(t, path);
    if (!in) {
        in = inode_alloc(t->next_ino, path);
        if (in) {
            t->next_ino++;
            ino_link(t, in);
            path_link(t, in);
            t->count++;
            maybe_grow(t);
            if (created)
                *created = 1;
        }
    }
    if (in)
        in->pins++;
    return in;
}

struct inode *inode_make(struct inode_table *t, const char *path, int *created)
{
    pthread_mutex_lock(&t->lock);
    struct inode *in = make_locked(t, path, created);
    pthread_mutex_unlock(&t->lock);
    return in;
}

struct inode *inode_make_child(struct inode_table *t, uint64_t parent, const char *name, int *err)
{
    pthread_mutex_lock(&t->lock);
    struct inode *p = find_ino(t, parent), *in = NULL;
    char *path = NULL;
    *err = -ENOENT;
    if (p && p->path) {
        *err = -ENOMEM;
        path = malloc(strlen(p->path) + strlen(name) + 2);
        if (path) {
            sprintf(path, "%s%s%s", p->path, *p->path ? "/" : "", name);
            in = make_locked(t, path, NULL);
        }
    }
    pthread_mutex_unlock(&t->lock);
    free(path);
    if (in)
        *err = 0;
    return in;
}

void inode_count_lookup(struct inode_table *t, struct inode *inode)
{
    pthread_mutex_lock(&t->lock);
    inode->nlookup++;
    pthread_mutex_unlock(&t->lock);
}

/* With the table lock held: take in out of the table when nothing holds it.
 * Returns whether the caller must destroy it. */
static int maybe_remove(struct inode_table *t, struct inode *in)
{
    if (in->ino == INODE_ROOT || in->nlookup > 0 || in->pins > 0 || (in->keep && in->path))
        return 0;
    ino_unlink(t, in);
    path_unlink(t, in);
    t->count--;
    return 1;
}

void inode_put(struct inode_table *t, struct inode *inode)
{
    if (!inode)
        return;
    pthread_mutex_lock(&t->lock);
    inode->pins--;
    int gone = maybe_remove(t, inode);
    pthread_mutex_unlock(&t->lock);
    if (gone)
        inode_destroy(t, inode);
}

void inode_forget(struct inode_table *t, uint64_t ino, uint64_t n)
{
    pthread_mutex_lock(&t->lock);
    struct inode *in = find_ino(t, ino);
    int gone = 0;
    if (in && in->ino != INODE_ROOT) {
        in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
        gone = maybe_remove(t, in);
    }
    pthread_mutex_unlock(&t->lock);
    if (gone)
        inode_destroy(t, in);
}

int inode_path(struct inode_table *t, struct inode *inode, char **out)
{
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    if (!inode->path)
        rc = -ENOENT;
    else if (!(*out = strdup(inode->path)))
        rc = -ENOMEM;
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void inode_set_flags(struct inode_table *t, struct inode *inode, int keep, int local)
{
    pthread_mutex_lock(&t->lock);
    inode->keep = keep;
    inode->local = local;
    pthread_mutex_unlock(&t->lock);
}

int inode_is_local(struct inode_table *t, struct inode *inode)
{
    pthread_mutex_lock(&t->lock);
    int local = inode->local && inode->path;
    pthread_mutex_unlock(&t->lock);
    return local;
}

static void detach_locked(struct inode_table *t, struct inode *in)
{
    if (in->ino == INODE_ROOT || !in->path)
        return;
    path_unlink(t, in);
    free(in->path);
    in->path = NULL;
    in->local = 0;
}

void inode_detach(struct inode_table *t, struct inode *inode)
{
    pthread_mutex_lock(&t->lock);
    detach_locked(t, inode);
    pthread_mutex_unlock(&t->lock);
}

/* Whether path is base or lies under base/. */
static int is_under(const char *path, const char *base, size_t n)
{
    return strncmp(path, base, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

int inode_move(struct inode_table *t, const char *from, const char *to)
{
    size_t nf = strlen(from), nt = strlen(to);
    pthread_mutex_lock(&t->lock);
    /* new paths first, so running out of memory changes nothing */
    size_t n_moves = 0, cap = 0;
    struct inode **moves = NULL;
    char **paths = NULL;
    int rc = 0;
    for (size_t b = 0; b < t->n_buckets && rc == 0; b++) {
        for (struct inode *in = t->by_ino[b]; in; in = in->next_ino) {
            if (!in->path || !is_under(in->path, from, nf))
                continue;
            if (n_moves == cap) {
                size_t nc = cap ? cap * 2 : 16;
                struct inode **m = realloc(moves, nc * sizeof(*m));
                if (m)
                    moves = m;
                char **p = realloc(paths, nc * sizeof(*p));
                if (p)
                    paths = p;
                if (!m || !p) {
                    rc = -ENOMEM;
                    break;
                }
                cap = nc;
            }
            size_t len = nt + strlen(in->path) - nf;
            char *np = malloc(len + 1);
            if (!np) {
                rc = -ENOMEM;
                break;
            }
            memcpy(np, to, nt);
            strcpy(np + nt, in->path + nf);
            moves[n_moves] = in;
            paths[n_moves++] = np;
        }
    }
    if (rc == 0) {
        for (size_t b = 0; b < t->n_buckets; b++)
            for (struct inode *in = t->by_ino[b]; in; in = in->next_ino)
                if (in->path && is_under(in->path, to, nt) && !is_under(in->path, from, nf))
                    detach_locked(t, in);
        for (size_t i = 0; i < n_moves; i++) {
            path_unlink(t, moves[i]);
            free(moves[i]->path);
            moves[i]->path = paths[i];
            moves[i]->path_hash = nameset_hash(paths[i]);
            paths[i] = NULL;
            path_link(t, moves[i]);
        }
    }
    for (size_t i = 0; i < n_moves; i++)
        free(paths[i]);
    free(paths);
    free(moves);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

size_t inode_local_children(struct inode_table *t, const char *dir,
                            void (*fn)(void *arg, const char *name, struct inode *inode), void *arg)
{
    size_t nd = strlen(dir), count = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t b = 0; b < t->n_buckets; b++) {
        for (struct inode *in = t->by_ino[b]; in; in = in->next_ino) {
            if (!in->local || !in->path || in->ino == INODE_ROOT)
                continue;
            const char *p = in->path;
            if (nd) {
                if (strncmp(p, dir, nd) != 0 || p[nd] != '/')
                    continue;
                p += nd + 1;
            }
            if (strchr(p, '/'))
                continue;
            fn(arg, p, in);
            count++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return count;
}

int inode_has_local_under(struct inode_table *t, const char *dir)
{
    size_t nd = strlen(dir);
    int found = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t b = 0; b < t->n_buckets && !found; b++)
        for (struct inode *in = t->by_ino[b]; in && !found; in = in->next_ino)
            if (in->local && in->path && strncmp(in->path, dir, nd) == 0 && in->path[nd] == '/')
                found = 1;
    pthread_mutex_unlock(&t->lock);
    return found;
}
