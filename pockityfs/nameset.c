/* nameset: open addressing with linear probing, at most half full. */
#include "nameset.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t nameset_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 29));
}

/* The slot holding name (hash h), or the free slot where it would go. */
static struct nameset_slot *find(const struct nameset *s, const char *name, size_t h)
{
    size_t mask = s->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct nameset_slot *e = &s->slot[i];
        if (!e->name || (e->hash == h && strcmp(e->name, name) == 0))
            return e;
    }
}

static int grow(struct nameset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 16;
    struct nameset_slot *old = s->slot, *slot = calloc(cap, sizeof(*slot));
    if (!slot || cap < s->cap) {
        free(slot);
        return -ENOMEM;
    }
    size_t old_cap = s->cap;
    s->slot = slot;
    s->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].name)
            *find(s, old[i].name, old[i].hash) = old[i];
    free(old);
    return 0;
}

int nameset_add(struct nameset *s, const char *name)
{
    if (nameset_has(s, name))
        return 0;
    if ((s->n + 1) * 2 > s->cap && grow(s))
        return -ENOMEM;
    size_t h = nameset_hash(name);
    struct nameset_slot *e = find(s, name, h);
    if (!(e->name = strdup(name)))
        return -ENOMEM;
    e->hash = h;
    s->n++;
    return 1;
}

int nameset_has(const struct nameset *s, const char *name)
{
    return s->n && find(s, name, nameset_hash(name))->name != NULL;
}

void nameset_release(struct nameset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slot[i].name);
    free(s->slot);
    s->slot = NULL;
    s->n = s->cap = 0;
}
