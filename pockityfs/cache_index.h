/* cache_index: the data cache outlives the mount. At a clean unmount, once
 * the cache folder's local files are on disk, an index of what they hold
 * (each file's object key, ETag, size and present blocks) is saved beside
 * them (cache.db, SQLite); the next mount of the pocket takes them up again
 * as kept cfiles, each used only while its object keeps that ETag (cfile_new).
 * Loading removes the index first: after a kill, or a crash of the machine,
 * there is none, and the files are swept as leftovers. */
#ifndef POCKITYFS_CACHE_INDEX_H
#define POCKITYFS_CACHE_INDEX_H

#include "cfile.h"

/* Sync the cache's file system, then write the index of c's kept cfiles to
 * path; source names the bucket they came from (its endpoint and name).
 * Returns how many were saved, or -errno (then the files are not the next
 * run's: cache_release must remove them). */
int cache_index_save(struct cache *c, const char *path, const char *source);

/* Take up the cfiles the index at path names (a missing index is fine),
 * then remove it. Left out: all of another source, files whose size is not
 * the index's, and the files named in busy (n_busy names, sorted by
 * strcmp: the pending uploads' own). Returns how many were taken up. */
size_t cache_index_load(struct cache *c, const char *path, const char *source,
                        const char *const *busy, size_t n_busy);

/* Order two names (const char *const *), for busy's sort and search. */
int cache_index_name_cmp(const void *a, const void *b);

#endif
