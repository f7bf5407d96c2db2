/* allowance: blocks of a pocket's quota that a mount reserves once and then
 * spends file by file, each landed upload committed against it by key. */
#ifndef POCKITYD_ALLOWANCE_H
#define POCKITYD_ALLOWANCE_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "usage.h"

/*
 * The model. An allowance row (table allowances) holds what it has LEFT, in
 * bytes and objects; while it exists that amount is part of the pocket's
 * reserved_bytes / reserved_objects, exactly like a reservation, so the quota
 * check of every other grant (reservations, allowances) counts it. It is
 * granted by ONE conditional UPDATE of the pocket's reserved totals (see
 * usage.h). A commit records an object in the usage ledger (usage_ledger_set_many)
 * and pays for its growth from what the allowance has left: whatever the
 * allowance cannot cover still counts in used, since the object exists.
 *
 * Every write locks the pocket's row first, then touches the allowance, so
 * grants, commits, releases and the sweep of one pocket happen one after the
 * other on SQLite and on PostgreSQL with any number of replicas.
 *
 * Calling convention as in usage.h: functions taking a struct db_conn run their
 * own write transaction on it (c must not be in one), retried on DB_ERR_RETRY,
 * and return DB_OK, a db status, or a USAGE_ outcome.
 */

#define ALLOWANCE_MAX_BYTES   USAGE_MAX_OBJECT_SIZE /* 5 TiB per allowance */
#define ALLOWANCE_MAX_OBJECTS 100000

/* An allowance as a client sees it. */
struct allowance {
    char id[64];     /* "alw_" + a secret_id */
    int64_t bytes;   /* left to spend */
    int64_t objects; /* left to spend */
    int64_t expires_at;
};

/* Grant pocket_id an allowance of bytes (0..ALLOWANCE_MAX_BYTES) and objects
 * (1..ALLOWANCE_MAX_OBJECTS) until now + ttl: the pocket's reserved totals grow
 * by exactly that, only when used + reserved + it fits the tier and the pocket
 * is active and not on hold. Returns DB_OK with *out filled and *pocket (may
 * be NULL) the totals after; USAGE_QUOTA_EXCEEDED, USAGE_INACTIVE or
 * USAGE_HELD with *pocket as the pocket is (nothing changed); DB_ERR_NOT_FOUND
 * for an unknown pocket; DB_ERR_INVALID for a bad argument; or a db status. */
int allowance_grant(struct db_conn *c, const char *pocket_id, int64_t bytes, int64_t objects,
                    int64_t now, int64_t ttl, struct allowance *out, struct usage_pocket *pocket);

/* An upload that landed, for allowance_commit. */
struct allowance_object {
    const char *key;  /* relative, 1..1024 bytes of valid UTF-8 without NUL */
    int64_t size;     /* 0..USAGE_MAX_OBJECT_SIZE */
    const char *etag; /* may be NULL */
};

#define ALLOWANCE_COMMIT_MAX 256 /* objects in one commit */

/* The n (1..ALLOWANCE_COMMIT_MAX) objects landed: in one transaction, one
 * after the other, each one's ledger row becomes live with its size and etag
 * (the pocket's used totals move by the growth gb, go), and the allowance id
 * of pocket_id pays pb = min(max(gb, 0), left bytes) and po = min(go, left
 * objects) of it (its left amounts and the pocket's reserved totals drop by
 * them, never below 0); its expiry then moves to now + ttl. The prefix then
 * each key must hold at most key_max bytes, else USAGE_KEY_TOO_LONG with
 * *prefix_len set (checked first, nothing written). DB_ERR_NOT_FOUND when
 * pocket_id has no such allowance unexpired at now. On DB_OK *out is the
 * allowance after and *after (may be NULL) the pocket's totals after.
 * prefix_len may be NULL. */
int allowance_commit(struct db_conn *c, const char *pocket_id, const char *id,
                     const struct allowance_object *objs, size_t n, size_t key_max, int64_t now,
                     int64_t ttl, struct allowance *out, size_t *prefix_len,
                     struct usage_pocket *after);

/* Give back what the allowance id of pocket_id has left and delete it (also
 * when it expired and the sweep has not run yet). DB_ERR_NOT_FOUND when it
 * does not exist in that pocket. *after (may be NULL) receives the pocket's
 * totals after. */
int allowance_release(struct db_conn *c, const char *pocket_id, const char *id,
                      struct usage_pocket *after);

/* Release every allowance with expires_at <= now, each in a short transaction
 * of its own (one renewed by a commit meanwhile is kept). Returns how many
 * were released (>= 0), or -status of the db failure that stopped the sweep
 * (what was released before it stays released). */
int allowance_sweep_expired(struct db *db, int64_t now);

#endif
