/* usage: the usage ledger (one row per object of a pocket) and the per-pocket
 * totals, with quota reservations granted atomically against the tier's limits.
 * Handlers and background jobs (the sweeper, event ingestion) share it. */
#ifndef POCKITYD_USAGE_H
#define POCKITYD_USAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

/*
 * The model. objects(pocket_id, key) holds each object's size and ETag, key
 * RELATIVE to the pocket's prefix (the S3 key is prefix + key); a deleted
 * object stays as a tombstone (deleted = 1, size 0). pockets.used_bytes and
 * used_objects are the sums over live rows, kept in step in the same
 * transaction as every ledger change; reserved_bytes and reserved_objects are
 * the sums over the pocket's reservations. The invariant the quota relies on:
 * a reservation is granted only when used + reserved + its amount fits the
 * tier's max_bytes and max_objects, decided by ONE conditional UPDATE of the
 * pocket row, which is atomic on SQLite and on PostgreSQL (READ COMMITTED
 * re-checks the WHERE clause on the latest row version) with any number of
 * pockityd replicas.
 *
 * Every operation here that writes locks the pocket's row first
 * (usage_lock_pocket), so on PostgreSQL the ledger reads that follow see every
 * earlier change to that pocket: the same upload committed twice or
 * concurrently counts once and an overwrite counts its size difference. On
 * PostgreSQL, reserve and commit are each one call of a function
 * (pockityd/mig_quota.h) that takes that lock and then runs one statement of
 * data-modifying WITH queries: one statement in autocommit, one round trip.
 * SQLite runs the same steps as separate statements in a write transaction
 * (in-process, they are cheap).
 *
 * Calling convention: functions taking a struct db_conn run their own write
 * transaction on it (c must not be in one), retried on DB_ERR_RETRY. They
 * return DB_OK, a db status, or one of the USAGE_ outcomes below.
 */

/* Outcomes beyond the db statuses. */
enum {
    USAGE_QUOTA_EXCEEDED = 100, /* the reservation does not fit the quota */
    USAGE_INACTIVE,             /* the pocket is not active (status in struct usage_pocket) */
    USAGE_HELD,                 /* the pocket is active but on hold (hold in struct usage_pocket) */
    USAGE_KEY_TOO_LONG,         /* the key with the pocket's prefix is too long */
};

#define USAGE_MAX_OBJECT_SIZE ((int64_t)5 << 40) /* 5 TiB, S3's largest object */

/* A pocket's totals and limits. */
struct usage_pocket {
    char status[16]; /* pending, active, suspended, deleting */
    char hold[32];   /* why the pocket is read-only ("past_due"), or "" */
    int64_t used_bytes;
    int64_t used_objects;
    int64_t reserved_bytes;
    int64_t reserved_objects;
    int64_t max_bytes;   /* the tier's */
    int64_t max_objects; /* the tier's */
};

/* A granted reservation. */
struct usage_reservation {
    char id[64];
    int64_t bytes;   /* reserved: the growth over the ledger's current size, >= 0 */
    int64_t objects; /* reserved: 1 for a new key (or a tombstone), else 0 */
    int64_t size;    /* the object's announced full size */
    int64_t expires_at;
    size_t prefix_len; /* bytes of the pocket's prefix (usage_reserve fills it) */
};

/* Whether the pocket holds more than its tier allows (after a tier downgrade,
 * or a commit larger than reserved): its mounts may then only read and delete. */
int usage_over_quota(const struct usage_pocket *p);

/* Why the pocket's mounts may only read and delete, as JSON: null when they
 * may write, else {"code": "past_due" | "over_quota" | ..., "message": "..."}.
 * hold is the pocket's hold ("" or NULL for none); a hold wins over quota. */
json_t *usage_restriction_json(const char *hold, int over_quota);

/* Add the members "usage": {bytes, objects}, "reserved": {bytes, objects},
 * "quota": {max_bytes, max_objects} and "restriction" (see above) describing
 * p to the JSON object obj. Returns 0, or -1 when out of memory. */
int usage_json_add(json_t *obj, const struct usage_pocket *p);

/* Why a pocket in this status takes no new data, for a 403's message:
 * "pocket is pending approval", "pocket is suspended", ... */
const char *usage_status_message(const char *status);

/* Read a pocket's totals (no transaction needed). DB_ERR_NOT_FOUND when there
 * is no such pocket. */
int usage_get(struct db_conn *c, const char *pocket_id, struct usage_pocket *out);

/* Reserve room for key (relative, 1..1024 bytes of valid UTF-8 without NUL)
 * to become size bytes long, until now + ttl. The whole S3 key, the pocket's
 * prefix then key, must hold at most key_max bytes: else USAGE_KEY_TOO_LONG
 * (checked before anything else about the pocket; out->prefix_len says how
 * long the prefix is). Reserves max(size - current ledger size, 0) bytes and
 * one object when the key is absent from the ledger or a tombstone. Returns
 * DB_OK with *out filled and *pocket the totals after; USAGE_QUOTA_EXCEEDED or
 * USAGE_INACTIVE or USAGE_HELD with *pocket describing the pocket (its totals
 * unchanged) and out->bytes / out->objects / out->size what the upload needed
 * (no id); DB_ERR_NOT_FOUND for an unknown pocket; DB_ERR_INVALID for a bad
 * argument; or a db status. pocket may be NULL. On PostgreSQL the whole
 * transaction is one round trip to the server. */
int usage_reserve(struct db_conn *c, const char *pocket_id, const char *key, size_t key_max,
                  int64_t size, int64_t now, int64_t ttl, struct usage_reservation *out,
                  struct usage_pocket *pocket);

/* The upload of a reservation happened: delete the reservation, release what
 * it held, and set its key's ledger row to size bytes and etag (may be NULL),
 * live, adjusting the pocket's used totals by the difference from the previous
 * row. size is the object's actual size as S3 holds it, so it is recorded even
 * when it is larger than what was reserved (the ledger follows S3; the next
 * reservations see the pocket's true usage). DB_ERR_NOT_FOUND when the
 * reservation does not exist or belongs to another pocket. *after (may be
 * NULL) receives the pocket's totals after the change. On PostgreSQL the
 * whole transaction is one round trip to the server. */
int usage_commit(struct db_conn *c, const char *pocket_id, const char *reservation_id, int64_t size,
                 const char *etag, int64_t now, struct usage_pocket *after);

/* Drop a reservation of pocket_id and release what it held. DB_ERR_NOT_FOUND
 * when it does not exist or belongs to another pocket. */
int usage_release(struct db_conn *c, const char *pocket_id, const char *reservation_id);

/* Record that the n keys (relative) were deleted: each live ledger row becomes
 * a tombstone and the pocket's used totals shrink by its size and one object;
 * unknown keys and tombstones are skipped. One transaction. *deleted receives
 * how many rows changed; *after (may be NULL) the totals after. */
int usage_mark_deleted(struct db_conn *c, const char *pocket_id, const char *const *keys, size_t n,
                       int64_t now, int64_t *deleted, struct usage_pocket *after);

/* For writers that already run a write transaction on c and hold the pocket's
 * lock (usage_lock_pocket, once per transaction: event ingestion,
 * reconciliation, allowance commits): set key's ledger row to size/etag
 * (live), or with size < 0 turn it into a tombstone, adjusting the pocket's
 * used totals. *bytes_delta / *objects_delta (may be NULL) receive
 * the change applied to the totals. DB_ERR_NOT_FOUND for an unknown pocket. */
int usage_ledger_set(struct db_conn *c, const char *pocket_id, const char *key, int64_t size,
                     const char *etag, int64_t now, int64_t *bytes_delta, int64_t *objects_delta);

/* One change of a batch for usage_ledger_set_many. */
struct usage_change {
    const char *pocket_id; /* its row locked by the caller */
    const char *key;       /* relative, non-empty */
    int64_t size;          /* >= 0: live, size bytes with etag; < 0: a tombstone */
    const char *etag;      /* may be NULL */
    /* NULL: applied whatever came before it. Else the change is applied only
     * when its sequencer sorts (strcmp) after the one the key's row holds, and
     * the row then keeps it, also when the change is the removal of a key the
     * ledger never had (a tombstone then holds it: a late create reads as
     * stale). */
    const char *sequencer;
    /* set by usage_ledger_set_many */
    bool stale;          /* not applied: its sequencer was not newer */
    int64_t bytes_delta; /* what it changed in the used totals, as usage_ledger_set's */
    int64_t objects_delta;
};

/* For writers in a write transaction that holds the lock of every pocket the
 * changes name: apply n changes as usage_ledger_set would one by one, in the
 * array's order (and with the sequencer rule above): the same ledger rows,
 * and each pocket's used totals as if clamped at zero after every change.
 * Changes may name several pockets and the same key several times. On
 * PostgreSQL two statements whatever n (the rows read; the rows written and the
 * totals moved), with array parameters; SQLite, where a statement costs no
 * round trip, runs one per key. Fills each change's results.
 * DB_ERR_INVALID for a bad change (nothing written), else a db status. */
int usage_ledger_set_many(struct db_conn *c, struct usage_change *changes, size_t n, int64_t now);

/* Inside a write transaction: find the pockets whose prefixes are the n given
 * (distinct) and lock their rows as usage_lock_pocket does, in one statement,
 * in the order of their ids (so concurrent callers never wait on each other in
 * a cycle). ids[i] receives the id of prefixes[i]'s pocket, or "" when no pocket
 * has that prefix. */
int usage_lock_prefixes(struct db_conn *c, const char *const *prefixes, size_t n, char (*ids)[64]);

/* ---- for writers that build on the totals (allowance.c) ---- */

/* A pocket's totals as SQL columns of the pockets table, in the order
 * usage_totals_read reads them. */
#define USAGE_TOTALS_COLUMNS                                                                       \
    "status, used_bytes, used_objects, reserved_bytes, reserved_objects,"                          \
    " (SELECT max_bytes FROM tiers WHERE id = pockets.tier_id),"                                   \
    " (SELECT max_objects FROM tiers WHERE id = pockets.tier_id), hold"

/* Read USAGE_TOTALS_COLUMNS from row 0 of res, starting at column col. */
void usage_totals_read(const struct db_result *res, size_t col, struct usage_pocket *out);

/* Why a grant that fit no quota check was refused, given the pocket as it is:
 * USAGE_INACTIVE, USAGE_HELD or USAGE_QUOTA_EXCEEDED. */
int usage_refusal(const struct usage_pocket *p);

/* Inside a write transaction: add bytes and objects to the pocket's reserved
 * totals by ONE conditional UPDATE, only when used + reserved + them fits the
 * tier and the pocket is active and not on hold. DB_OK with *pocket (may be
 * NULL) the totals after; else the usage_refusal with *pocket as the pocket is
 * (nothing changed), DB_ERR_NOT_FOUND or a db status. */
int usage_grant(struct db_conn *c, const char *pocket_id, int64_t bytes, int64_t objects,
                struct usage_pocket *pocket);

/* Inside a write transaction: lock the pocket's row for the rest of it (on
 * SQLite the write transaction holds the whole database already), so changes
 * to one pocket's totals happen one after the other. *prefix_len (may be
 * NULL) receives the length of the pocket's prefix. DB_ERR_NOT_FOUND: no such
 * pocket. */
int usage_lock_pocket(struct db_conn *c, const char *pocket_id, size_t *prefix_len);

/* Release every reservation with expires_at <= now, each in a short
 * transaction of its own so a big backlog never holds locks for long. Returns
 * how many were released (>= 0), or -status of the db failure that stopped the
 * sweep (what was released before it stays released). */
int usage_sweep_expired(struct db *db, int64_t now);

/* The sweep above over any table of grants with columns id, pocket_id and
 * expires_at (a constant name, never input): release(c, pocket_id, id, now)
 * runs its own transaction for each row expired at now; DB_ERR_NOT_FOUND from
 * it (the row went meanwhile) is skipped. Same returns. */
int usage_sweep(struct db *db, int64_t now, const char *table,
                int (*release)(struct db_conn *c, const char *pocket_id, const char *id,
                               int64_t now));

#endif
