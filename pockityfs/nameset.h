/* nameset: a set of strings (open addressing), for the names a directory
 * gained or lost since it was listed. Not thread-safe: its owner locks. */
#ifndef POCKITYFS_NAMESET_H
#define POCKITYFS_NAMESET_H

#include <stddef.h>

struct nameset_slot {
    size_t hash;
    char *name; /* NULL: free */
};

struct nameset {
    struct nameset_slot *slot;
    size_t n, cap; /* cap: 0 or a power of two */
};

/* The hash of a string the mount's tables use (FNV-1a, folded). */
size_t nameset_hash(const char *s);

/* Add a copy of name. Returns 1 when added, 0 when already there, or
 * -ENOMEM (the set is unchanged). A zeroed struct is an empty set. */
int nameset_add(struct nameset *s, const char *name);

/* Whether name is in s. */
int nameset_has(const struct nameset *s, const char *name);

/* Empty s and free its memory; it stays usable. */
void nameset_release(struct nameset *s);

#endif
