/* keycache: a direct-mapped table of recently verified API keys under one
 * mutex. */
#include "keycache.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "monotime.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct keycache_entry slots[KEYCACHE_SLOTS];

static double mono_now(void)
{
    return (double)mono_ns() / 1e9;
}

/* FNV-1a of the id: ids are random, any spread will do. */
static struct keycache_entry *slot_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &slots[h % KEYCACHE_SLOTS];
}

bool keycache_get(const char *id, struct keycache_entry *out)
{
    bool hit = false;
    double now = mono_now();
    pthread_mutex_lock(&lock);
    struct keycache_entry *e = slot_of(id);
    if (e->id[0] && strcmp(e->id, id) == 0 && now - e->fetched < KEYCACHE_TTL) {
        *out = *e;
        hit = true;
    }
    pthread_mutex_unlock(&lock);
    return hit;
}

void keycache_put(const struct keycache_entry *e)
{
    pthread_mutex_lock(&lock);
    struct keycache_entry *s = slot_of(e->id);
    *s = *e;
    s->fetched = mono_now();
    pthread_mutex_unlock(&lock);
}

void keycache_used(const char *id, int64_t at, const char *addr)
{
    pthread_mutex_lock(&lock);
    struct keycache_entry *e = slot_of(id);
    if (e->id[0] && strcmp(e->id, id) == 0) {
        e->used_at = at;
        snprintf(e->used_addr, sizeof(e->used_addr), "%s", addr);
    }
    pthread_mutex_unlock(&lock);
}

void keycache_forget(const char *id)
{
    pthread_mutex_lock(&lock);
    if (!id) {
        memset(slots, 0, sizeof(slots));
    } else {
        struct keycache_entry *e = slot_of(id);
        if (strcmp(e->id, id) == 0)
            memset(e, 0, sizeof(*e));
    }
    pthread_mutex_unlock(&lock);
}
