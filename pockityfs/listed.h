/* listed: the attributes of a directory's listed entries (see listed.c). */
#ifndef POCKITYFS_LISTED_H
#define POCKITYFS_LISTED_H

#include "ops.h"

/* Where the attributes of a listed entry come from. */
enum listed_source {
    LISTED_INODE,    /* the inode: pending data, or metadata still fresh */
    LISTED_KNOWN,    /* the listing, with the metadata seen before */
    LISTED_HEAD,     /* the object's own, read now */
    LISTED_DEFAULTS, /* the listing and the defaults */
};

/* Where in's attributes come from for the listed entry de of a directory
 * marked (listed_mark) or not. in may be NULL (no inode yet). Caller holds
 * in->lock. */
enum listed_source listed_source(const struct inode *in, const struct dent *de, int marked);

/* A HEAD of a listed entry, made before the reply that gives it. */
struct listed_head {
    size_t index; /* the entry's offset in the directory */
    char *path;
    int is_dir;
    int rc;
    struct obj_attr a;
    double started; /* inode_now() before it was sent */
};

/* Attributes for a listed entry, from where listed_source says; h is the
 * entry's HEAD if made already (listed_heads_run). Returns 0, or 1 when
 * there are no attributes to give: the HEAD failed, or the object is of
 * another type than the inode the kernel knows (which the next lookup
 * replaces). Caller holds in->lock. */
int listed_attrs(struct fs *fs, struct inode *in, const struct dent *de, int marked,
                 const struct listed_head *h);

/* HEADs to make at once. */
struct listed_heads {
    struct fs *fs;
    struct listed_head *h;
    size_t n, cap;
    size_t next; /* the next to make, taken atomically */
};

/* Add the HEAD of the entry at index, path (taken: freed by
 * listed_heads_free). Returns 0 or -ENOMEM. */
int listed_heads_add(struct listed_heads *hs, size_t index, char *path, int is_dir);

/* Make them, eight at a time, within the caller's S3 deadline. */
void listed_heads_run(struct fs *fs, struct listed_heads *hs);

void listed_heads_free(struct listed_heads *hs);

/* Make the marker of path's directory say that listings misstate entries
 * in it (META_ENTRY_ATTRS), so that readdirplus reads their attributes
 * from the objects. Returns 0 once it says so, or -errno: the root and a
 * directory known only from its prefix have no marker. */
int listed_mark(struct fs *fs, const char *path);

#endif
