/* mig_quota: migration 8, PostgreSQL functions that take a quota reservation
 * and commit one in a single call (pockityd/usage.c), so each is one statement
 * and one round trip in autocommit instead of BEGIN, a row lock, the work and
 * COMMIT. SQLite has nothing to add: usage.c runs the statements one by one. */
#ifndef POCKITYD_MIG_QUOTA_H
#define POCKITYD_MIG_QUOTA_H

/* Both functions first lock the pocket's row, then run one statement; PL/pgSQL
 * takes a new snapshot for each statement, so the second sees every change
 * committed before the lock was granted. No row back: no such pocket (or, for
 * the commit, no such reservation in it). Result columns after the first ones
 * are the pocket's totals: status, used bytes and objects, reserved bytes and
 * objects, the tier's max bytes and objects, hold. */

/* pockity_reserve(pocket, key, size, reservation id, now, expires_at,
 * longest prefix that keeps prefix+key within S3's limit): one row of
 * granted (0/1), bytes and objects needed, the prefix's length, the totals
 * (after the grant, or as they are when refused). */
#define MIG_QUOTA_RESERVE                                                                          \
    "CREATE OR REPLACE FUNCTION pockity_reserve(TEXT, TEXT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT)" \
    " RETURNS TABLE (r_granted INT, r_bytes BIGINT, r_objects INT, r_prefix_len INT,"              \
    " r_status TEXT, r_used_bytes BIGINT, r_used_objects BIGINT, r_reserved_bytes BIGINT,"         \
    " r_reserved_objects BIGINT, r_max_bytes BIGINT, r_max_objects BIGINT, r_hold TEXT)"           \
    " LANGUAGE plpgsql AS $fn$\n"                                                                  \
    "BEGIN\n"                                                                                      \
    " PERFORM 1 FROM pockets WHERE id = $1 FOR UPDATE;\n"                                          \
    " RETURN QUERY"                                                                                \
    " WITH old AS (SELECT size FROM objects WHERE pocket_id = $1 AND key = $2 AND deleted = 0),"   \
    " need AS (SELECT GREATEST($3 - COALESCE((SELECT size FROM old), 0), 0) AS bytes,"             \
    " CASE WHEN EXISTS (SELECT 1 FROM old) THEN 0 ELSE 1 END AS objects),"                         \
    " upd AS (UPDATE pockets SET reserved_bytes = reserved_bytes + need.bytes,"                    \
    " reserved_objects = reserved_objects + need.objects FROM need"                                \
    " WHERE id = $1 AND octet_length(prefix) <= $7 AND status = 'active' AND hold IS NULL"         \
    " AND used_bytes + reserved_bytes + need.bytes <="                                             \
    " (SELECT max_bytes FROM tiers WHERE id = pockets.tier_id)"                                    \
    " AND used_objects + reserved_objects + need.objects <="                                       \
    " (SELECT max_objects FROM tiers WHERE id = pockets.tier_id)"                                  \
    " RETURNING octet_length(prefix) AS prefix_len, status, used_bytes, used_objects,"             \
    " reserved_bytes, reserved_objects,"                                                           \
    " (SELECT max_bytes FROM tiers WHERE id = pockets.tier_id) AS max_bytes,"                      \
    " (SELECT max_objects FROM tiers WHERE id = pockets.tier_id) AS max_objects, hold),"           \
    " ins AS (INSERT INTO reservations (id, pocket_id, key, bytes, objects, size, created_at,"     \
    " expires_at) SELECT $4, $1, $2, need.bytes, need.objects, $3, $5, $6 FROM need, upd)"         \
    " SELECT 1, need.bytes, need.objects, upd.* FROM need, upd"                                    \
    " UNION ALL SELECT 0, need.bytes, need.objects, octet_length(p.prefix), p.status,"             \
    " p.used_bytes, p.used_objects, p.reserved_bytes, p.reserved_objects,"                         \
    " (SELECT max_bytes FROM tiers WHERE id = p.tier_id),"                                         \
    " (SELECT max_objects FROM tiers WHERE id = p.tier_id), p.hold"                                \
    " FROM pockets p, need WHERE p.id = $1 AND NOT EXISTS (SELECT 1 FROM upd);\n"                  \
    "END\n"                                                                                        \
    "$fn$;\n"

/* pockity_commit(pocket, reservation id, size, etag, now): deletes the
 * reservation, writes the key's ledger row and moves the totals (used by the
 * growth, reserved down by what the reservation held, none below zero); one
 * row of the totals after. */
#define MIG_QUOTA_COMMIT                                                                           \
    "CREATE OR REPLACE FUNCTION pockity_commit(TEXT, TEXT, BIGINT, TEXT, BIGINT)"                  \
    " RETURNS TABLE (r_status TEXT, r_used_bytes BIGINT, r_used_objects BIGINT,"                   \
    " r_reserved_bytes BIGINT, r_reserved_objects BIGINT, r_max_bytes BIGINT,"                     \
    " r_max_objects BIGINT, r_hold TEXT)"                                                          \
    " LANGUAGE plpgsql AS $fn$\n"                                                                  \
    "BEGIN\n"                                                                                      \
    " PERFORM 1 FROM pockets WHERE id = $1 FOR UPDATE;\n"                                          \
    " RETURN QUERY"                                                                                \
    " WITH r AS (DELETE FROM reservations WHERE id = $2 AND pocket_id = $1"                        \
    " RETURNING key, bytes, objects),"                                                             \
    " old AS (SELECT o.size FROM objects o, r WHERE o.pocket_id = $1 AND o.key = r.key"            \
    " AND o.deleted = 0),"                                                                         \
    " up AS (INSERT INTO objects (pocket_id, key, size, etag, deleted, updated_at)"                \
    " SELECT $1, r.key, $3, $4, 0, $5 FROM r ON CONFLICT (pocket_id, key)"                         \
    " DO UPDATE SET size = excluded.size, etag = excluded.etag, deleted = 0,"                      \
    " updated_at = excluded.updated_at),"                                                          \
    " d AS (SELECT r.bytes AS rb, r.objects AS ro,"                                                \
    " $3 - COALESCE((SELECT size FROM old), 0) AS ub,"                                             \
    " CASE WHEN EXISTS (SELECT 1 FROM old) THEN 0 ELSE 1 END AS uo FROM r)"                        \
    " UPDATE pockets SET"                                                                          \
    " used_bytes = CASE WHEN used_bytes + d.ub < 0 THEN 0 ELSE used_bytes + d.ub END,"             \
    " used_objects = CASE WHEN used_objects + d.uo < 0 THEN 0 ELSE used_objects + d.uo END,"       \
    " reserved_bytes = CASE WHEN reserved_bytes < d.rb THEN 0 ELSE reserved_bytes - d.rb END,"     \
    " reserved_objects = CASE WHEN reserved_objects < d.ro THEN 0"                                 \
    " ELSE reserved_objects - d.ro END FROM d WHERE id = $1"                                       \
    " RETURNING status, used_bytes, used_objects, reserved_bytes, reserved_objects,"               \
    " (SELECT max_bytes FROM tiers WHERE id = pockets.tier_id),"                                   \
    " (SELECT max_objects FROM tiers WHERE id = pockets.tier_id), hold;\n"                         \
    "END\n"                                                                                        \
    "$fn$;\n"

#define MIG_QUOTA_SQLITE   "SELECT 1;\n"
#define MIG_QUOTA_POSTGRES MIG_QUOTA_RESERVE MIG_QUOTA_COMMIT

#endif
