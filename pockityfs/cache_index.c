/* cache_index: the index of the cache folder's local files a clean unmount
 * leaves for the next mount (cache.db, SQLite, read and removed at start). */
#include "cache_index.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* The tables, then a transaction that empties them for the rows to save. */
static const char *const begin_sql =
        "CREATE TABLE IF NOT EXISTS source (name TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS files (seq INTEGER PRIMARY KEY, key TEXT NOT NULL,"
        " file TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, blocks BLOB NOT NULL);"
        "BEGIN;"
        "DELETE FROM source;"
        "DELETE FROM files;";

struct saving {
    sqlite3_stmt *insert;
    int n;
};

/* Insert the row of cf, a kept cfile: rows go least recently used first. */
static int save_one(void *arg, const struct cfile *cf)
{
    struct saving *s = arg;
    if (cf->size != cf->remote_size)
        return 0; /* not a whole version of the object: cfile_new would not take it */
    sqlite3_bind_text(s->insert, 1, cf->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->insert, 2, cf->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->insert, 3, (sqlite3_int64)cf->size);
    sqlite3_bind_text(s->insert, 4, cf->etag, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->insert, 5, cf->bits, (int)(cf->nblocks / 8 + 1), SQLITE_STATIC);
    int rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    sqlite3_clear_bindings(s->insert);
    if (rc != SQLITE_DONE)
        return -EIO;
    s->n++;
    return 0;
}

int cache_index_save(struct cache *c, const char *path, const char *source)
{
    /* the blocks the index calls present must be on disk before it is */
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || syncfs(dfd) != 0) {
        int e = errno;
        log_warn("cannot sync the cache folder '%s': %s; its files go", c->dir, strerror(e));
        if (dfd >= 0)
            close(dfd);
        return -e;
    }
    close(dfd);
    sqlite3 *db = NULL;
    sqlite3_stmt *src = NULL;
    struct saving s = {0};
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, begin_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT INTO source (name) VALUES (?1)", -1, &src, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(src, 1, source, -1, SQLITE_STATIC);
        rc = sqlite3_step(src) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO files (key, file, size, etag, blocks)"
                                " VALUES (?1, ?2, ?3, ?4, ?5)",
                                -1, &s.insert, NULL);
    if (rc == SQLITE_OK && cache_each_kept(c, save_one, &s) != 0)
        rc = SQLITE_ERROR;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        log_warn("cannot save the cache index '%s': %s; the cached files go", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_finalize(src);
    sqlite3_finalize(s.insert);
    sqlite3_close(db); /* an open transaction rolls back */
    if (rc != SQLITE_OK)
        return -EIO;
    log_info("cache: %d cached file(s) kept for the next mount", s.n);
    return s.n;
}

struct row {
    char *key, *file, *etag;
    uint64_t size;
    void *bits;
    size_t bits_len;
};

static void rows_free(struct row *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].key);
        free(v[i].file);
        free(v[i].etag);
        free(v[i].bits);
    }
    free(v);
}

static char *column_dup(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return strdup(s ? s : "");
}

/* The index's rows, least recently used first, if it is source's. */
static struct row *read_rows(sqlite3 *db, const char *source, size_t *n)
{
    sqlite3_stmt *st = NULL;
    int ours = 0;
    if (sqlite3_prepare_v2(db, "SELECT name FROM source", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        ours = name && strcmp(name, source) == 0;
    }
    sqlite3_finalize(st);
    st = NULL;
    struct row *v = NULL;
    size_t count = 0, cap = 0;
    int ok = ours && sqlite3_prepare_v2(db,
                                        "SELECT key, file, size, etag, blocks FROM files"
                                        " ORDER BY seq DESC LIMIT ?1",
                                        -1, &st, NULL) == SQLITE_OK;
    if (ok) /* the most recently used, as many as can be kept */
        sqlite3_bind_int(st, 1, CACHE_KEPT_MAX);
    while (ok && sqlite3_step(st) == SQLITE_ROW) {
        if (count == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct row *nv = realloc(v, nc * sizeof(*nv));
            if (!nv)
                break;
            v = nv;
            cap = nc;
        }
        struct row *r = &v[count++];
        *r = (struct row){.key = column_dup(st, 0),
                          .file = column_dup(st, 1),
                          .etag = column_dup(st, 3),
                          .size = (uint64_t)sqlite3_column_int64(st, 2)};
        int len = sqlite3_column_bytes(st, 4);
        const void *bits = sqlite3_column_blob(st, 4);
        if (len > 0 && bits && (r->bits = malloc((size_t)len))) {
            memcpy(r->bits, bits, (size_t)len);
            r->bits_len = (size_t)len;
        }
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < count / 2; i++) { /* least recently used first again */
        struct row t = v[i];
        v[i] = v[count - 1 - i];
        v[count - 1 - i] = t;
    }
    *n = count;
    return v;
}

static int row_file_cmp(const void *a, const void *b)
{
    const struct row *x = *(const struct row *const *)a, *y = *(const struct row *const *)b;
    return strcmp(x->file ? x->file : "", y->file ? y->file : "");
}

/* Leave r out (row_fits says no to a row without bits). */
static void row_drop(struct row *r)
{
    free(r->bits);
    r->bits = NULL;
}

/* Rows naming the same file as another are left out, all of them: one's
 * trim would remove the other's file. */
static void drop_shared_files(struct row *v, size_t n)
{
    struct row **by = n ? malloc(n * sizeof(*by)) : NULL;
    if (!by) {
        for (size_t i = 0; i < n; i++)
            row_drop(&v[i]); /* nothing can be told: none fits */
        return;
    }
    for (size_t i = 0; i < n; i++)
        by[i] = &v[i];
    qsort(by, n, sizeof(*by), row_file_cmp);
    for (size_t i = 1; i < n; i++) {
        if (row_file_cmp(&by[i - 1], &by[i]) == 0) {
            row_drop(by[i - 1]);
            row_drop(by[i]);
        }
    }
    free(by);
}

int cache_index_name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether the index row r may name a cache file: a plain name there, of
 * the size it says, not busy. */
static int row_fits(const struct cache *c, const struct row *r, const char *const *busy,
                    size_t n_busy)
{
    if (!r->key || !r->file || !r->etag || !r->bits || !r->file[0] || strchr(r->file, '/') ||
        r->file[0] == '.')
        return 0;
    if (n_busy && bsearch(&r->file, busy, n_busy, sizeof(*busy), cache_index_name_cmp))
        return 0;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", c->dir, r->file);
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == r->size;
}

/* fsync the folder holding path, so that a change of its names lasts. */
static int sync_parent(const char *path)
{
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -errno;
    if (fd >= 0)
        close(fd);
    return rc;
}

size_t cache_index_load(struct cache *c, const char *path, const char *source,
                        const char *const *busy, size_t n_busy)
{
    sqlite3 *db = NULL;
    if (access(path, F_OK) != 0)
        return 0;
    size_t n = 0;
    struct row *v = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK)
        v = read_rows(db, source, &n);
    else
        log_warn("cannot read the cache index '%s': %s", path, sqlite3_errmsg(db));
    sqlite3_close(db);
    /* gone, on disk, before any file is used: after a kill or a crash
     * from now on the files are leftovers, whatever this run does to them */
    char journal[PATH_MAX + 16];
    snprintf(journal, sizeof(journal), "%s-journal", path);
    unlink(journal);
    int rc = unlink(path) == 0 ? sync_parent(path) : -errno;
    if (rc) {
        log_warn("cannot remove the cache index '%s': %s; the cached files go", path,
                 strerror(-rc));
        rows_free(v, n);
        return 0;
    }
    drop_shared_files(v, n);
    size_t taken = 0;
    for (size_t i = 0; i < n; i++)
        if (row_fits(c, &v[i], busy, n_busy) &&
            cache_adopt_kept(c, v[i].key, v[i].file, v[i].size, v[i].etag, v[i].bits,
                             v[i].bits_len) == 0)
            taken++;
    rows_free(v, n);
    cache_trim(c); /* cache_size may be smaller than last time */
    if (n)
        log_info("cache: %zu of %zu file(s) the last mount cached taken up", taken, n);
    return taken;
}
