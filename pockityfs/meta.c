/* meta: conversion between struct stat and s3fs-compatible object metadata,
 * and the name and key checks of the mount. */
#include "meta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

long long meta_parse_uint(const char *s)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    /* s3fs may write "SECONDS.NANOS" for times: take the seconds */
    if (errno || (*end && *end != '.') || v > (unsigned long long)INT64_MAX)
        return -1;
    return (long long)v;
}

static void base_stat(struct stat *st, const struct meta_defaults *d)
{
    memset(st, 0, sizeof(*st));
    st->st_uid = d->uid;
    st->st_gid = d->gid;
    st->st_nlink = 1;
    st->st_blksize = 4096;
}

void meta_set_size(struct stat *st, uint64_t size)
{
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

int meta_listing_misstates(const struct stat *st, const struct meta_defaults *d, time_t now)
{
    int mode = !S_ISREG(st->st_mode) || ((st->st_mode ^ d->file_mode) & 07111) ||
               (d->file_mode & ~st->st_mode & 0777); /* it would grant more than the file does */
    int other = st->st_uid != d->uid || st->st_gid != d->gid ||
                st->st_mtime < now - META_MTIME_SLACK || st->st_mtime > now + META_MTIME_SLACK;
    return (mode ? META_MISSTATES_MODE : 0) | (other ? META_MISSTATES_OTHER : 0);
}

void meta_default_stat(int is_dir, uint64_t size, time_t mtime, const struct meta_defaults *d,
                       struct stat *st)
{
    base_stat(st, d);
    if (is_dir) {
        st->st_mode = S_IFDIR | d->dir_mode;
        st->st_nlink = 2;
        meta_set_size(st, 4096);
    } else {
        st->st_mode = S_IFREG | d->file_mode;
        meta_set_size(st, size);
    }
    st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = mtime;
}

void meta_to_stat(const struct s3_head *head, int is_marker, const struct meta_defaults *d,
                  struct stat *st)
{
    long long mode = meta_parse_uint(s3_head_meta(head, "mode"));
    long long uid = meta_parse_uint(s3_head_meta(head, "uid"));
    long long gid = meta_parse_uint(s3_head_meta(head, "gid"));
    long long mtime = meta_parse_uint(s3_head_meta(head, "mtime"));
    int is_dir = is_marker;

    if (!is_dir && mode >= 0 && S_ISDIR((mode_t)mode))
        is_dir = 1;
    if (!is_dir && strcasecmp(head->content_type, "application/x-directory") == 0)
        is_dir = 1;
    meta_default_stat(is_dir, head->size, head->last_modified, d, st);
    if (mode >= 0 && mode <= 0177777) {
        mode_t m = (mode_t)mode;
        mode_t type = m & S_IFMT;
        if (is_dir)
            type = S_IFDIR;
        else if (type != S_IFLNK)
            type = S_IFREG; /* devices, fifos and sockets are not served */
        st->st_mode = type | (m & 07777);
    }
    if (uid >= 0 && uid <= UINT32_MAX)
        st->st_uid = (uid_t)uid;
    if (gid >= 0 && gid <= UINT32_MAX)
        st->st_gid = (gid_t)gid;
    if (mtime >= 0)
        st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = (time_t)mtime;
}

void meta_from_stat(const struct stat *st, struct meta_set *out)
{
    snprintf(out->mode, sizeof(out->mode), "%u", (unsigned)st->st_mode);
    snprintf(out->uid, sizeof(out->uid), "%u", (unsigned)st->st_uid);
    snprintf(out->gid, sizeof(out->gid), "%u", (unsigned)st->st_gid);
    snprintf(out->mtime, sizeof(out->mtime), "%lld", (long long)st->st_mtim.tv_sec);
    out->items[0] = (struct s3_meta){"mode", out->mode};
    out->items[1] = (struct s3_meta){"uid", out->uid};
    out->items[2] = (struct s3_meta){"gid", out->gid};
    out->items[3] = (struct s3_meta){"mtime", out->mtime};
    out->n = 4;
}

void meta_set_entry_attrs(struct meta_set *m)
{
    if (m->n < sizeof(m->items) / sizeof(m->items[0]))
        m->items[m->n++] = (struct s3_meta){META_ENTRY_ATTRS, "1"};
}

struct s3_put_opts meta_put_opts(const struct meta_set *m)
{
    struct s3_put_opts o = {.meta = m->items, .n_meta = m->n};
    return o;
}

int meta_check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '/'))
        return -EINVAL;
    if (n > META_NAME_MAX)
        return -ENAMETOOLONG;
    return 0;
}

int meta_join(const char *dir, const char *name, char *out, size_t size)
{
    int n = *dir ? snprintf(out, size, "%s/%s", dir, name) : snprintf(out, size, "%s", name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

int meta_key(const char *prefix, const char *path, int as_dir, char out[S3_MAX_KEY_LEN + 1])
{
    int n = snprintf(out, S3_MAX_KEY_LEN + 1, "%s%s%s", prefix, path, as_dir && *path ? "/" : "");
    if (n < 0 || n > S3_MAX_KEY_LEN)
        return -ENAMETOOLONG;
    return 0;
}

const char *meta_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

size_t meta_parent_len(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? (size_t)(s - path) : 0;
}
