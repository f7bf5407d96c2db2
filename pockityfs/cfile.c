/* cfile: sparse local copies of objects, filled block by block with ranged
 * GETs, small new files in memory, and the LRU budget of the data cache. */
#include "cfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "inode.h"
#include "log.h"
#include "readahead.h"
#include "stream.h"

static int bit_get(const struct cfile *cf, size_t b)
{
    return (cf->bits[b / 8] >> (b % 8)) & 1;
}

static void bit_set(struct cfile *cf, size_t b)
{
    if (!bit_get(cf, b)) {
        cf->bits[b / 8] |= (uint8_t)(1u << (b % 8));
        cf->npresent++;
    }
}

static void bit_clear(struct cfile *cf, size_t b)
{
    if (bit_get(cf, b)) {
        cf->bits[b / 8] &= (uint8_t) ~(1u << (b % 8));
        cf->npresent--;
    }
}

static int busy_get(const struct cfile *cf, size_t b)
{
    return b < cf->busy_cap && ((cf->busy[b / 8] >> (b % 8)) & 1);
}

static void busy_set(struct cfile *cf, size_t b, int on)
{
    if (b >= cf->busy_cap)
        return;
    if (on)
        cf->busy[b / 8] |= (uint8_t)(1u << (b % 8));
    else
        cf->busy[b / 8] &= (uint8_t) ~(1u << (b % 8));
}

/* Give back the chunk h of cf holds. */
static void held_drop(struct cache *c, struct cfile *cf, struct cfile_held *h)
{
    if (h->data && c->ra)
        readahead_give_back(c->ra, cf->id, h->data);
    h->data = NULL;
}

/* Give back every chunk cf holds (its content changed, or nobody reads it). */
static void held_release(struct cache *c, struct cfile *cf)
{
    for (size_t i = 0; i < RA_BUFS; i++)
        held_drop(c, cf, &cf->held[i]);
}

/* Give back the chunks a sequential reader at off has passed (by two
 * blocks: the kernel's parallel reads arrive slightly out of order). */
static void held_pass(struct cache *c, struct cfile *cf, uint64_t off)
{
    for (size_t i = 0; i < RA_BUFS; i++) {
        struct cfile_held *h = &cf->held[i];
        if (h->data && h->start + h->len + 2 * (uint64_t)CFILE_BLOCK <= off)
            held_drop(c, cf, h);
    }
}

/* The held bytes [off, off + len), or NULL when no chunk has them all. */
static const char *held_find(const struct cfile *cf, uint64_t off, size_t len)
{
    for (size_t i = 0; i < RA_BUFS; i++) {
        const struct cfile_held *h = &cf->held[i];
        if (h->data && off >= h->start && off + len <= h->start + h->len)
            return h->data + (off - h->start);
    }
    return NULL;
}

/* Whether cf's object is streamed through memory (cfile_ra_land). */
static int streamed(const struct cache *c, const struct cfile *cf)
{
    return c->ra && cf->remote_size > c->limit / 4;
}

static size_t held_count(const struct cfile *cf)
{
    size_t n = 0;
    for (size_t i = 0; i < RA_BUFS; i++)
        n += cf->held[i].data != NULL;
    return n;
}

void cfile_ra_drop(struct cfile *cf, const char *data)
{
    for (size_t i = 0; i < RA_BUFS; i++) {
        struct cfile_held *h = &cf->held[i];
        if (h->data == data) {
            h->data = NULL;
            if (cf->ra_sched > h->start / CFILE_BLOCK)
                cf->ra_sched = (size_t)(h->start / CFILE_BLOCK); /* asked again */
        }
    }
}

/* The blocks change meaning (truncate, upload): fetches running now land
 * nothing, held chunks go, and read-ahead starts over. */
static void gen_bump(struct cache *c, struct cfile *cf)
{
    held_release(c, cf);
    cf->gen++;
    if (cf->busy)
        memset(cf->busy, 0, cf->busy_cap / 8 + 1);
    cf->ra_sched = 0;
}

static size_t blocks_for(uint64_t size)
{
    return (size_t)((size + CFILE_BLOCK - 1) / CFILE_BLOCK);
}

void cache_init(struct cache *c, const char *dir, uint64_t limit)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    c->limit = limit;
    /* random, not the time: the files of earlier runs may stay (cache_index.h) */
    if (getrandom(&c->run, sizeof(c->run), 0) != (ssize_t)sizeof(c->run))
        c->run = (uint64_t)time(NULL) << 22 ^ (uint64_t)getpid();
    c->kept = calloc(CACHE_KEPT_BUCKETS, sizeof(*c->kept)); /* NULL: nothing is kept */
}

static struct cfile **kept_chain(struct cache *c, const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &c->kept[h % CACHE_KEPT_BUCKETS];
}

/* Take cf out of the kept ones, with c->lock held. */
static void kept_unlink(struct cache *c, struct cfile *cf)
{
    for (struct cfile **p = kept_chain(c, cf->key); *p; p = &(*p)->knext) {
        if (*p == cf) {
            *p = cf->knext;
            break;
        }
    }
    free(cf->key);
    cf->key = NULL;
    cf->knext = NULL;
    c->n_kept--;
}

/* With c->lock held. */
static void lru_unlink(struct cache *c, struct cfile *cf)
{
    struct lru *l = cf->in_lru;
    if (!l)
        return;
    if (cf->prev)
        cf->prev->next = cf->next;
    else
        l->head = cf->next;
    if (cf->next)
        cf->next->prev = cf->prev;
    else
        l->tail = cf->prev;
    cf->prev = cf->next = NULL;
    cf->in_lru = NULL;
    c->used -= cf->counted;
    cf->counted = 0;
}

static uint64_t present_bytes(const struct cfile *cf)
{
    uint64_t b = (uint64_t)cf->npresent * CFILE_BLOCK;
    return b < cf->size ? b : cf->size;
}

/* Put a clean cfile at the head of its LRU with its present bytes counted. */
static void lru_touch(struct cache *c, struct cfile *cf)
{
    pthread_mutex_lock(&c->lock);
    lru_unlink(c, cf);
    if (!cf->dirty) {
        struct lru *l = cf->in_mem ? &c->mems : &c->files;
        cf->counted = present_bytes(cf);
        c->used += cf->counted;
        cf->next = l->head;
        if (l->head)
            l->head->prev = cf;
        l->head = cf;
        if (!l->tail)
            l->tail = cf;
        cf->in_lru = l;
    }
    pthread_mutex_unlock(&c->lock);
}

/* Give back the memory of an in-memory cfile. With c->lock held. */
static void mem_free(struct cache *c, struct cfile *cf)
{
    c->mem -= cf->mem_cap;
    free(cf->mem);
    cf->mem = NULL;
    cf->mem_cap = 0;
}

/* Make room for size bytes in an in-memory cfile, zero-filling beyond its
 * current size. -ENOSPC: it must move to a local file (too large, the
 * budget is spent, or no memory). */
static int mem_reserve(struct cache *c, struct cfile *cf, uint64_t size)
{
    if (size > CFILE_MEM_MAX)
        return -ENOSPC;
    if (size > cf->mem_cap) {
        size_t cap = cf->mem_cap ? cf->mem_cap : 4096;
        while (cap < size)
            cap *= 2;
        pthread_mutex_lock(&c->lock);
        int ok = c->mem + (cap - cf->mem_cap) <= CACHE_MEM_MAX;
        char *m = ok ? realloc(cf->mem, cap) : NULL;
        if (m) {
            c->mem += cap - cf->mem_cap;
            cf->mem = m;
            cf->mem_cap = cap;
        }
        pthread_mutex_unlock(&c->lock);
        if (!m)
            return -ENOSPC;
    }
    if (size > cf->size)
        memset(cf->mem + cf->size, 0, (size_t)(size - cf->size));
    return 0;
}

static void local_path(const struct cache *c, const struct cfile *cf, char path[PATH_MAX + 64])
{
    snprintf(path, PATH_MAX + 64, "%s/%s", c->dir, cf->name);
}

static int open_local(struct cache *c, struct cfile *cf, int flags)
{
    char path[PATH_MAX + 64];
    local_path(c, cf, path);
    int fd = open(path, O_RDWR | O_CLOEXEC | flags, 0600);
    if (fd < 0) {
        int e = errno;
        log_error("cannot open the cache file '%s': %s", path, strerror(e));
        return -e;
    }
    return fd;
}

/* Move an in-memory cfile's content to a new local file. */
static int spill(struct cache *c, struct cfile *cf)
{
    int fd = open_local(c, cf, O_CREAT | O_TRUNC);
    if (fd < 0)
        return fd;
    size_t done = 0;
    while (done < cf->size) {
        ssize_t n = pwrite(fd, cf->mem + done, (size_t)cf->size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            log_error("cannot write the cache file '%s': %s", cf->name, strerror(e));
            close(fd);
            char path[PATH_MAX + 64];
            local_path(c, cf, path);
            unlink(path);
            return -e;
        }
        done += (size_t)n;
    }
    pthread_mutex_lock(&c->lock);
    struct lru *was = cf->in_lru;
    lru_unlink(c, cf);
    mem_free(c, cf);
    pthread_mutex_unlock(&c->lock);
    cf->in_mem = 0;
    cf->fd = fd;
    if (was)
        lru_touch(c, cf);
    return 0;
}

int cfile_fd(struct cache *c, struct cfile *cf)
{
    if (cf->in_mem) {
        int rc = spill(c, cf);
        if (rc)
            return rc;
    }
    if (cf->fd < 0)
        cf->fd = open_local(c, cf, 0);
    return cf->fd;
}

static struct cfile *cfile_alloc(struct inode *owner, uint64_t remote_size)
{
    struct cfile *cf = calloc(1, sizeof(*cf));
    if (!cf)
        return NULL;
    cf->nblocks = blocks_for(remote_size);
    cf->bits = calloc(cf->nblocks / 8 + 1, 1);
    cf->busy_cap = cf->nblocks;
    cf->busy = calloc(cf->busy_cap / 8 + 1, 1);
    if (!cf->bits || !cf->busy) {
        free(cf->bits);
        free(cf->busy);
        free(cf);
        return NULL;
    }
    cf->owner = owner;
    cf->fd = -1;
    cf->remote_size = cf->size = remote_size;
    cf->appending = remote_size == 0;
    cf->ra_window = CFILE_BLOCK;
    return cf;
}

static void destroy(struct cache *c, struct cfile *cf, int remove_file);

/* The cfile kept for key, taken up by owner if it holds the object's
 * version (remote_size bytes, etag); a stale one goes. With c->lock held. */
/* The cfile kept for key, or NULL. With c->lock held. */
static struct cfile *kept_find(struct cache *c, const char *key)
{
    struct cfile *cf = c->kept ? *kept_chain(c, key) : NULL;
    while (cf && strcmp(cf->key, key) != 0)
        cf = cf->knext;
    return cf;
}

static struct cfile *kept_take(struct cache *c, struct inode *owner, const char *key,
                               uint64_t remote_size, const char *etag)
{
    struct cfile *cf = kept_find(c, key);
    if (!cf)
        return NULL;
    if (strcmp(cf->etag, etag) != 0 || cf->remote_size != remote_size || cf->size != remote_size) {
        destroy(c, cf, 1); /* the object changed */
        return NULL;
    }
    log_debug("cache: '%s' taken up again (%zu of %zu blocks present)", key, cf->npresent,
              cf->nblocks);
    kept_unlink(c, cf);
    cf->owner = owner;
    cf->id = ++c->seq; /* fetches of its former life land nowhere */
    cf->gen++;
    cf->inflight = 0;
    memset(cf->busy, 0, cf->busy_cap / 8 + 1);
    cf->ra_sched = 0;
    cf->ra_next = cf->ra_shed = 0;
    cf->ra_window = CFILE_BLOCK;
    return cf;
}

int cache_kept_etag(struct cache *c, const char *key, char etag[S3_ETAG_MAX])
{
    int found = 0;
    pthread_mutex_lock(&c->lock);
    struct cfile *cf = kept_find(c, key);
    if (cf) {
        snprintf(etag, S3_ETAG_MAX, "%s", cf->etag);
        found = 1;
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

int cfile_new(struct cache *c, struct inode *owner, uint64_t remote_size, const char *etag,
              const char *key, struct cfile **out)
{
    if (key && key[0] && etag && etag[0] && c->kept) {
        pthread_mutex_lock(&c->lock);
        struct cfile *kept = kept_take(c, owner, key, remote_size, etag);
        pthread_mutex_unlock(&c->lock);
        if (kept) {
            *out = kept;
            return 0;
        }
    }
    struct cfile *cf = cfile_alloc(owner, remote_size);
    if (!cf)
        return -ENOMEM;
    pthread_mutex_lock(&c->lock);
    uint64_t seq = ++c->seq;
    cf->in_mem = remote_size == 0 && c->mem < CACHE_MEM_MAX;
    pthread_mutex_unlock(&c->lock);
    cf->id = seq;
    snprintf(cf->name, sizeof(cf->name), "f%016llx-%llu", (unsigned long long)c->run,
             (unsigned long long)seq);
    snprintf(cf->etag, sizeof(cf->etag), "%s", etag ? etag : "");
    if (cf->in_mem) {
        *out = cf;
        return 0;
    }
    int fd = open_local(c, cf, O_CREAT | O_TRUNC);
    if (fd < 0) {
        cfile_free(c, cf, 0);
        return fd;
    }
    cf->fd = fd;
    if (ftruncate(fd, (off_t)remote_size) != 0) {
        int e = errno;
        cfile_free(c, cf, 1);
        return -e;
    }
    *out = cf;
    return 0;
}

int cfile_adopt(struct cache *c, struct inode *owner, const char *name, struct cfile **out)
{
    struct cfile *cf = cfile_alloc(owner, 0);
    if (!cf)
        return -ENOMEM;
    pthread_mutex_lock(&c->lock);
    cf->id = ++c->seq;
    pthread_mutex_unlock(&c->lock);
    snprintf(cf->name, sizeof(cf->name), "%s", name);
    cf->appending = 0;
    int fd = open_local(c, cf, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = fd < 0 ? -fd : errno;
        if (fd >= 0)
            close(fd);
        cfile_free(c, cf, 0);
        return -e;
    }
    cf->fd = fd;
    cf->size = (uint64_t)st.st_size;
    cf->dirty = cf->journaled = 1;
    cf->dirty_since = cf->last_write = inode_now();
    *out = cf;
    return 0;
}

int cfile_adopt_mem(struct cache *c, struct inode *owner, const void *data, uint64_t size,
                    struct cfile **out)
{
    struct cfile *cf = NULL;
    int rc = cfile_new(c, owner, 0, "", NULL, &cf);
    long n = rc ? rc : cfile_write(c, cf, NULL, 0, data, (size_t)size);
    if (n < 0 || (uint64_t)n != size) {
        cfile_free(c, cf, 1);
        return n < 0 ? (int)n : -EIO;
    }
    cfile_set_dirty(c, cf); /* an empty content wrote nothing */
    cf->journaled = 1;
    *out = cf;
    return 0;
}

/* Free cf (off its list first), with c->lock held. */
static void destroy(struct cache *c, struct cfile *cf, int remove_file)
{
    if (cf->key)
        kept_unlink(c, cf);
    lru_unlink(c, cf);
    held_release(c, cf);
    stream_cancel(cf->stream);
    if (cf->fd >= 0)
        close(cf->fd);
    if (remove_file && !cf->in_mem && cf->name[0]) {
        char path[PATH_MAX + 64];
        local_path(c, cf, path);
        unlink(path);
    }
    mem_free(c, cf);
    free(cf->bits);
    free(cf->busy);
    free(cf->resv_path);
    free(cf);
}

void cfile_free(struct cache *c, struct cfile *cf, int remove_file)
{
    if (!cf)
        return;
    pthread_mutex_lock(&c->lock);
    destroy(c, cf, remove_file);
    pthread_mutex_unlock(&c->lock);
}

void cfile_keep(struct cache *c, struct cfile *cf, const char *key, int remove_file)
{
    if (!cf)
        return;
    if (!c->kept || !key || !key[0] || cf->dirty || cf->in_mem || cf->stream || cf->queued ||
        !cf->npresent || !cf->etag[0]) {
        cfile_free(c, cf, remove_file);
        return;
    }
    readahead_cancel(c->ra, cf);
    held_release(c, cf);
    if (cf->fd >= 0) {
        close(cf->fd);
        cf->fd = -1;
    }
    char *k = strdup(key);
    if (!k) {
        cfile_free(c, cf, remove_file);
        return;
    }
    if (!cf->in_lru)
        lru_touch(c, cf); /* counted in the budget */
    pthread_mutex_lock(&c->lock);
    struct cfile **chain = kept_chain(c, k);
    for (struct cfile *o = *chain; o; o = o->knext) {
        if (strcmp(o->key, k) == 0) { /* an older copy of the same key */
            destroy(c, o, 1);
            break;
        }
    }
    /* at most CACHE_KEPT_MAX: their structs stay in memory */
    for (struct cfile *o = c->files.tail; o && c->n_kept >= CACHE_KEPT_MAX; o = o->prev) {
        if (!o->owner) {
            destroy(c, o, 1);
            break;
        }
    }
    log_debug("cache: keeping '%s' (%zu of %zu blocks present)", k, cf->npresent, cf->nblocks);
    cf->owner = NULL;
    cf->key = k;
    cf->knext = *chain;
    *chain = cf;
    c->n_kept++;
    pthread_mutex_unlock(&c->lock);
}

int cache_each_kept(struct cache *c, int (*fn)(void *arg, const struct cfile *cf), void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    for (struct cfile *cf = c->files.tail; cf && !rc; cf = cf->prev)
        if (!cf->owner && cf->key)
            rc = fn(arg, cf);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cache_adopt_kept(struct cache *c, const char *key, const char *name, uint64_t size,
                     const char *etag, const uint8_t *bits, size_t bits_len)
{
    if (!c->kept || !key[0] || !etag[0] || strlen(etag) >= S3_ETAG_MAX ||
        strlen(name) >= sizeof(((struct cfile *)0)->name))
        return -EINVAL;
    struct cfile *cf = cfile_alloc(NULL, size);
    char *k = cf ? strdup(key) : NULL;
    if (!k) {
        cfile_free(c, cf, 0);
        return -ENOMEM;
    }
    size_t have = cf->nblocks / 8 + 1;
    memcpy(cf->bits, bits, bits_len < have ? bits_len : have);
    for (size_t b = 0; b < have * 8; b++) {
        if (b >= cf->nblocks)
            cf->bits[b / 8] &= (uint8_t) ~(1u << (b % 8));
        else if (bit_get(cf, b))
            cf->npresent++;
    }
    snprintf(cf->name, sizeof(cf->name), "%s", name);
    snprintf(cf->etag, sizeof(cf->etag), "%s", etag);
    cf->appending = 0;
    pthread_mutex_lock(&c->lock);
    int rc = !cf->npresent || kept_find(c, k) ? -EINVAL : c->n_kept >= CACHE_KEPT_MAX ? -ENOSPC : 0;
    if (rc == 0) {
        cf->id = ++c->seq;
        struct cfile **chain = kept_chain(c, k);
        cf->key = k;
        cf->knext = *chain;
        *chain = cf;
        c->n_kept++;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        free(k);
        cfile_free(c, cf, 0);
        return rc;
    }
    lru_touch(c, cf); /* counted in the budget, the most recently used */
    return 0;
}

void cache_release(struct cache *c, int keep_files)
{
    if (c->kept) {
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < CACHE_KEPT_BUCKETS; i++)
            while (c->kept[i])
                destroy(c, c->kept[i], !keep_files);
        pthread_mutex_unlock(&c->lock);
        free(c->kept);
        c->kept = NULL;
    }
    pthread_mutex_destroy(&c->lock);
}

/* GET blocks [b0, b1) of the object into the local file. */
static int fetch(struct cfile *cf, const struct cfile_src *src, size_t b0, size_t b1)
{
    uint64_t start = (uint64_t)b0 * CFILE_BLOCK;
    uint64_t end = (uint64_t)b1 * CFILE_BLOCK;
    if (end > cf->remote_size)
        end = cf->remote_size;
    if (start >= end)
        return 0;
    log_debug("fetching '%s' bytes %llu-%llu", src->key, (unsigned long long)start,
              (unsigned long long)end - 1);
    struct s3_fd sfd = {.fd = cf->fd, .base = start};
    struct s3_sink sink = s3_sink_fd(&sfd);
    struct s3_head head = {0};
    uint64_t got = 0;
    int st = s3_get_object(src->s3, src->key, start, end - start, &sink, &head, &got);
    if (st != S3_OK) {
        log_error("cannot read '%s' at %llu: %s %s", src->key, (unsigned long long)start,
                  s3_strerror(st), s3_last_error_detail());
        return st == S3_ERR_NOT_FOUND ? -ESTALE : -s3_status_errno(st);
    }
    int changed = cf->etag[0] && head.etag[0] && strcmp(cf->etag, head.etag) != 0;
    if (!cf->etag[0])
        snprintf(cf->etag, sizeof(cf->etag), "%s", head.etag);
    s3_head_release(&head);
    if (changed) {
        log_warn("'%s' changed while being read", src->key);
        return -ESTALE;
    }
    if (got < end - start) {
        log_error("short read of '%s' at %llu", src->key, (unsigned long long)start);
        return -EIO;
    }
    for (size_t b = b0; b < b1 && b < cf->nblocks; b++)
        bit_set(cf, b);
    return 0;
}

/* Make [off, off + len) present, fetching missing runs extended by ra bytes
 * of read-ahead (stopping at the first present block). */
static int ensure(struct cfile *cf, const struct cfile_src *src, uint64_t off, uint64_t len,
                  uint64_t ra)
{
    if (len == 0 || off >= cf->remote_size)
        return 0;
    size_t first = (size_t)(off / CFILE_BLOCK);
    size_t last = blocks_for(off + len);
    if (last > cf->nblocks)
        last = cf->nblocks;
    size_t limit = blocks_for(off + len + ra);
    if (limit > cf->nblocks)
        limit = cf->nblocks;
    for (size_t b = first; b < last; b++) {
        if (bit_get(cf, b))
            continue;
        size_t e = b + 1;
        while (e < limit && !bit_get(cf, e))
            e++;
        int rc = fetch(cf, src, b, e);
        if (rc)
            return rc;
        b = e - 1;
    }
    return 0;
}

/* Whether block b needs no fetch now: present, being fetched, or held. */
static int have(const struct cfile *cf, size_t b)
{
    return bit_get(cf, b) || busy_get(cf, b) || held_find(cf, (uint64_t)b * CFILE_BLOCK, 1) != NULL;
}

/* Hand the missing, idle blocks of [b0, b1) to the background fetches, in
 * chunks, while cf has room for more: a streamed file's fetches and held
 * chunks together leave a buffer for another file. */
static void schedule(struct cache *c, struct cfile *cf, const struct cfile_src *src, size_t b0,
                     size_t b1)
{
    const size_t chunk = RA_CHUNK / CFILE_BLOCK;
    const int room = streamed(c, cf) ? RA_BUFS - 1 - (int)held_count(cf) : RA_PER_FILE;
    if (b1 > cf->nblocks)
        b1 = cf->nblocks;
    if (cf->ra_sched > b0)
        b0 = cf->ra_sched;
    size_t b = b0;
    while (b < b1 && cf->inflight < room) {
        if (have(cf, b)) {
            b++;
            continue;
        }
        size_t e = b + 1;
        while (e < b1 && e - b < chunk && !have(cf, e))
            e++;
        /* whole chunks: a window growing a block per read would otherwise
         * ask for one block at a time */
        if (e == b1 && e - b < chunk && b1 < cf->nblocks && !have(cf, e))
            break;
        uint64_t start = (uint64_t)b * CFILE_BLOCK, end = (uint64_t)e * CFILE_BLOCK;
        if (end > cf->remote_size)
            end = cf->remote_size;
        if (readahead_queue(src->ra, cf, src->key, start, end - start) != 0)
            break;
        for (size_t i = b; i < e; i++)
            busy_set(cf, i, 1);
        cf->inflight++;
        b = e;
    }
    cf->ra_sched = b;
}

/* Keep data, the object's bytes [start, start + len), in a free slot of
 * cf->held if none of its blocks is present. Returns whether it was kept. */
static int hold(struct cfile *cf, uint64_t start, uint64_t len, const char *data)
{
    for (size_t b = start / CFILE_BLOCK; b < blocks_for(start + len) && b < cf->nblocks; b++)
        if (bit_get(cf, b))
            return 0;
    for (size_t i = 0; i < RA_BUFS; i++) {
        if (!cf->held[i].data) {
            cf->held[i] = (struct cfile_held){.data = data, .start = start, .len = len};
            return 1;
        }
    }
    return 0;
}

int cfile_ra_land(struct cache *c, struct cfile *cf, uint64_t gen, uint64_t start, uint64_t len,
                  const char *data, const char *etag, int err)
{
    size_t b0 = (size_t)(start / CFILE_BLOCK), b1 = blocks_for(start + len);
    int kept = 0;
    if (cf->inflight > 0)
        cf->inflight--;
    if (gen == cf->gen) {
        for (size_t b = b0; b < b1; b++)
            busy_set(cf, b, 0);
        if (cf->ra_sched > b0)
            cf->ra_sched = b0; /* what did not land may be asked again */
    }
    /* the object's bytes of the layout they were asked for */
    int usable =
            data && gen == cf->gen && (!cf->etag[0] || !etag[0] || strcmp(cf->etag, etag) == 0);
    if (usable && !cf->etag[0])
        snprintf(cf->etag, sizeof(cf->etag), "%s", etag);
    if (gen == cf->gen && (usable || err))
        cf->ra_err = usable ? 0 : err;
    if (usable && !cf->in_mem && streamed(c, cf) && cf->owner->opens > 0)
        kept = hold(cf, start, len, data);
    if (usable && !kept && !cf->in_mem && cfile_fd(c, cf) >= 0) {
        size_t before = cf->npresent;
        for (size_t b = b0; b < b1 && b < cf->nblocks; b++) {
            if (bit_get(cf, b))
                continue; /* written here, or fetched by the reader */
            uint64_t bs = (uint64_t)b * CFILE_BLOCK, be = bs + CFILE_BLOCK;
            if (be > cf->remote_size)
                be = cf->remote_size;
            if (be > start + len || bs < start)
                break;
            size_t done = 0, n = (size_t)(be - bs);
            while (done < n) {
                ssize_t w =
                        pwrite(cf->fd, data + (bs - start) + done, n - done, (off_t)(bs + done));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                done += (size_t)w;
            }
            if (done == n)
                bit_set(cf, b);
        }
        if (cf->npresent != before) {
            /* written back by the time the reader is past it (shed) */
            sync_file_range(cf->fd, (off_t)start, (off_t)len, SYNC_FILE_RANGE_WRITE);
            if (!cf->dirty)
                lru_touch(c, cf);
        }
    }
    pthread_cond_broadcast(&cf->owner->cond);
    return kept;
}

/* A sequential reader at off has passed the bytes well below it: they are
 * in the mount's own page cache now, and on disk, so the local file's pages
 * of them go, and the next fetches reuse that memory instead of taking
 * fresh pages, which cost most of a cold read on a VM whose host takes
 * freed memory back (bench/mount). Dirty pages stay until written. */
static void shed(struct cfile *cf, int fd, uint64_t off)
{
    uint64_t behind = off > 2 * (uint64_t)RA_CHUNK ? off - 2 * (uint64_t)RA_CHUNK : 0;
    behind -= behind % CFILE_BLOCK;
    if (behind < cf->ra_shed + RA_CHUNK)
        return;
    posix_fadvise(fd, (off_t)cf->ra_shed, (off_t)(behind - cf->ra_shed), POSIX_FADV_DONTNEED);
    cf->ra_shed = behind;
}

/* Whether off continues the sequential read that ended at ra_next: reads
 * the kernel sends in parallel may arrive slightly out of order. */
static int sequential(const struct cfile *cf, uint64_t off, size_t len)
{
    if (off == cf->ra_next)
        return 1;
    return cf->ra_next > 0 && off <= cf->ra_next + 2 * (uint64_t)CFILE_BLOCK &&
           off + len + 2 * (uint64_t)CFILE_BLOCK >= cf->ra_next;
}

long cfile_read(struct cache *c, struct cfile *cf, const struct cfile_src *src, uint64_t off,
                size_t len, struct cfile_span *out)
{
    *out = (struct cfile_span){.fd = -1};
    if (off >= cf->size)
        return 0;
    if (len > cf->size - off)
        len = (size_t)(cf->size - off);
    if (cf->in_mem) {
        out->mem = cf->mem + off;
        if (!cf->dirty)
            lru_touch(c, cf);
        return (long)len;
    }
    int fd = cfile_fd(c, cf);
    if (fd < 0)
        return fd;
    /* sequential reads double the read-ahead, a jump starts over */
    if (sequential(cf, off, len)) {
        cf->ra_window = cf->ra_window ? cf->ra_window * 2 : CFILE_BLOCK;
        if (cf->ra_window > CFILE_RA_MAX)
            cf->ra_window = CFILE_RA_MAX;
        if (off + len > cf->ra_next)
            cf->ra_next = off + len;
        shed(cf, fd, off);
        held_pass(c, cf, off);
    } else {
        cf->ra_window = off == 0 ? CFILE_BLOCK : 0;
        cf->ra_next = off + len;
        cf->ra_sched = 0;
        cf->ra_shed = off - off % CFILE_BLOCK;
        if (src->ra)
            readahead_cancel(src->ra, cf);
    }
    size_t before = cf->npresent;
    int rc = 0, waited = 0;
    if (!src->ra) {
        rc = ensure(cf, src, off, len, cf->ra_window);
    } else {
        for (;;) {
            size_t first = (size_t)(off / CFILE_BLOCK), last = blocks_for(off + len);
            if (last > cf->nblocks)
                last = cf->nblocks;
            if (cf->ra_window && src->key[0])
                schedule(c, cf, src, last, blocks_for(off + len + cf->ra_window));
            if ((out->mem = held_find(cf, off, len)))
                return (long)len;
            size_t b = first;
            while (b < last && bit_get(cf, b))
                b++;
            if (b >= last) /* present, or past the object: local only */
                break;
            if (busy_get(cf, b)) { /* a background fetch brings it */
                pthread_cond_wait(&cf->owner->cond, &cf->owner->lock);
                waited = 1;
                if (off >= cf->size)
                    return 0;
                if (len > cf->size - off)
                    len = (size_t)(cf->size - off);
                continue;
            }
            if (waited && cf->ra_err) { /* it did not come: S3 failed, or is silent */
                rc = cf->ra_err;
                cf->ra_err = 0; /* the next read tries again */
                break;
            }
            size_t e = b + 1;
            while (e < last && !bit_get(cf, e) && !busy_get(cf, e))
                e++;
            rc = fetch(cf, src, b, e);
            if (rc)
                break;
        }
    }
    if (rc)
        return rc;
    out->fd = fd;
    if (!cf->dirty && (cf->npresent != before || !cf->in_lru))
        lru_touch(c, cf);
    return (long)len;
}

void cfile_unstream(struct cfile *cf)
{
    stream_cancel(cf->stream);
    cf->stream = NULL;
    cf->appending = 0;
}

/* A write of len bytes ending at end, over blocks [first, last), landed. */
static long wrote(struct cache *c, struct cfile *cf, size_t first, size_t last, uint64_t end,
                  size_t len)
{
    for (size_t b = first; b < last && b < cf->nblocks; b++)
        bit_set(cf, b);
    if (end > cf->size)
        cf->size = end;
    cfile_set_dirty(c, cf);
    cf->last_write = inode_now();
    return (long)len;
}

long cfile_write(struct cache *c, struct cfile *cf, const struct cfile_src *src, uint64_t off,
                 const char *buf, size_t len)
{
    if (len == 0)
        return 0;
    held_release(c, cf);
    if (off != cf->size)
        cfile_unstream(cf);
    size_t first = (size_t)(off / CFILE_BLOCK), last = blocks_for(off + len);
    if (cf->in_mem) {
        /* everything is present: nothing to fetch */
        if (off + len >= off && mem_reserve(c, cf, off + len) == 0) {
            memcpy(cf->mem + off, buf, len);
            return wrote(c, cf, first, last, off + len, len);
        }
    }
    int fd = cfile_fd(c, cf);
    if (fd < 0)
        return fd;
    /* blocks the write covers whole need no fetch; partial ones do */
    for (size_t b = first; b < last && b < cf->nblocks; b++) {
        if (bit_get(cf, b))
            continue;
        uint64_t bs = (uint64_t)b * CFILE_BLOCK, be = bs + CFILE_BLOCK;
        if (be > cf->remote_size)
            be = cf->remote_size;
        if (off <= bs && off + len >= be)
            continue;
        int rc = fetch(cf, src, b, b + 1);
        if (rc)
            return rc;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            if (!cf->dirty) /* part written: those blocks are the object's no more */
                for (size_t b = first; b < last && b < cf->nblocks; b++)
                    bit_clear(cf, b);
            return -e;
        }
        done += (size_t)n;
    }
    return wrote(c, cf, first, last, off + len, len);
}

int cfile_truncate(struct cache *c, struct cfile *cf, uint64_t size)
{
    cfile_unstream(cf);
    if (!cf->in_mem || (size > cf->size && mem_reserve(c, cf, size) != 0)) {
        int fd = cfile_fd(c, cf);
        if (fd < 0)
            return fd;
        if (ftruncate(fd, (off_t)size) != 0)
            return -errno;
    }
    cf->appending = size == 0;
    if (size < cf->remote_size) {
        gen_bump(c, cf);
        cf->remote_size = size;
        size_t nb = blocks_for(size);
        for (size_t b = nb; b < cf->nblocks; b++)
            bit_clear(cf, b);
        cf->nblocks = nb;
    }
    cf->size = size;
    cfile_set_dirty(c, cf);
    cf->last_write = inode_now();
    return 0;
}

int cfile_whole(const struct cfile *cf)
{
    return cf->npresent == cf->nblocks;
}

int cfile_fill(struct cfile *cf, const struct cfile_src *src)
{
    if (cfile_whole(cf))
        return 0;
    if (cf->fd < 0)
        return -EBADF;
    return ensure(cf, src, 0, cf->remote_size, 0);
}

void cfile_set_dirty(struct cache *c, struct cfile *cf)
{
    if (cf->dirty)
        return;
    cf->dirty = 1;
    cf->dirty_since = cf->last_write = inode_now();
    pthread_mutex_lock(&c->lock);
    lru_unlink(c, cf);
    pthread_mutex_unlock(&c->lock);
}

void cfile_set_clean(struct cache *c, struct cfile *cf, const char *etag)
{
    size_t nb = blocks_for(cf->size);
    uint8_t *bits = malloc(nb / 8 + 1);
    if (bits && nb > cf->busy_cap) {
        uint8_t *busy = calloc(nb / 8 + 1, 1);
        if (busy) {
            free(cf->busy);
            cf->busy = busy;
            cf->busy_cap = nb;
        }
    }
    gen_bump(c, cf);
    if (bits) {
        memset(bits, 0xff, nb / 8 + 1);
        free(cf->bits);
        cf->bits = bits;
        cf->nblocks = cf->npresent = nb;
        cf->remote_size = cf->size;
    } else {
        /* keep what is known present; the rest reads from the new object */
        cf->remote_size = cf->size < cf->remote_size ? cf->size : cf->remote_size;
    }
    snprintf(cf->etag, sizeof(cf->etag), "%s", etag);
    cf->dirty = 0;
    cf->journaled = 0;
    lru_touch(c, cf);
}

void cfile_idle(struct cache *c, struct cfile *cf)
{
    readahead_cancel(c->ra, cf);
    held_release(c, cf);
    if (cf->fd >= 0 && !cf->dirty) {
        close(cf->fd);
        cf->fd = -1;
    }
    if (!cf->dirty)
        lru_touch(c, cf);
}

/* With c->lock and the owner's lock held: give back what victim holds. A
 * cfile nobody has open goes entirely; an open one keeps the blocks around
 * its read position. Returns whether the victim left the LRU. */
static int evict(struct cache *c, struct cfile *cf)
{
    struct inode *in = cf->owner;
    if (in->opens == 0) {
        in->cf = NULL;
        destroy(c, cf, 1);
        return 1;
    }
    if (cf->fd < 0)
        return 0;
    size_t keep_from = (size_t)(cf->ra_next / CFILE_BLOCK);
    keep_from = keep_from > 0 ? keep_from - 1 : 0;
    size_t keep_to = blocks_for(cf->ra_next + cf->ra_window) + 1;
    for (size_t b = 0; b < cf->nblocks; b++) {
        if ((b >= keep_from && b < keep_to) || !bit_get(cf, b))
            continue;
        if (fallocate(cf->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)b * CFILE_BLOCK,
                      CFILE_BLOCK) == 0)
            bit_clear(cf, b);
    }
    c->used -= cf->counted;
    cf->counted = present_bytes(cf);
    c->used += cf->counted;
    return 0;
}

static int over_limit(const struct cache *c)
{
    return c->used > c->limit;
}

static int over_memory(const struct cache *c)
{
    return c->mem > CACHE_MEM_MAX / 2; /* room for new small files */
}

/* Evict from the tail of l while over(c). With c->lock held. */
static void trim(struct cache *c, struct lru *l, int (*over)(const struct cache *))
{
    struct cfile *cf = l->tail;
    while (over(c) && cf) {
        struct cfile *prev = cf->prev;
        struct inode *in = cf->owner;
        if (!in) { /* kept: nobody else can reach it without c->lock */
            destroy(c, cf, 1);
        } else if (pthread_mutex_trylock(&in->lock) == 0) {
            if (!cf->dirty && in->cf == cf)
                evict(c, cf);
            pthread_mutex_unlock(&in->lock);
        }
        cf = prev;
    }
}

void cache_trim(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    trim(c, &c->files, over_limit);
    trim(c, &c->mems, over_limit);
    trim(c, &c->mems, over_memory);
    pthread_mutex_unlock(&c->lock);
}
