/* keycache: API keys this process verified lately, so the quota routes a
 * mount calls for every file (reservations, commits, allowances) need no
 * database lookup of the key each time. A key's id, hash, pocket, owner and
 * access never change; what can (revocation, expiry, the owner's suspension)
 * is honoured by dropping entries here when this process makes the change and
 * by their short life otherwise (KEYCACHE_TTL seconds: other replicas' changes).
 * Thread-safe; bounded (KEYCACHE_SLOTS entries, a newer key takes an older
 * one's slot). */
#ifndef POCKITYD_KEYCACHE_H
#define POCKITYD_KEYCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "secret.h"

#define KEYCACHE_TTL   2.0 /* seconds an entry serves after its database read */
#define KEYCACHE_SLOTS 1024

struct keycache_entry {
    char id[APIKEY_ID_LEN + 1];
    char hash[APIKEY_HASH_LEN + 1]; /* the stored hash of the secret */
    char pocket_id[64];
    char user_id[64];
    bool writable;
    int64_t expires_at; /* 0: never */
    int64_t used_at;    /* last recorded use (unix seconds), 0: none */
    char used_addr[64]; /* its client address */
    double fetched;     /* monotonic seconds of the database read */
};

/* Copy the entry of id into *out when there is one younger than KEYCACHE_TTL. */
bool keycache_get(const char *id, struct keycache_entry *out);

/* Store e (fetched is set here). */
void keycache_put(const struct keycache_entry *e);

/* Note that the key's use at `at` from addr was recorded in the database. */
void keycache_used(const char *id, int64_t at, const char *addr);

/* Drop the entry of id, or every entry when id is NULL (a change that may
 * touch many keys: a pocket deleted, an owner suspended). */
void keycache_forget(const char *id);

#endif
