/* remote: the mount's client of pockityd — it trades the API key for scoped S3
 * credentials (and renews them before they expire), reserves quota before each
 * upload, commits or releases it afterwards, reports deletions, and reads the
 * pocket's quota and usage for statfs. Thread-safe: one struct remote serves
 * every FUSE worker thread. The API key is held in memory only and never
 * logged. */
#ifndef POCKITYFS_REMOTE_H
#define POCKITYFS_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct remote;
struct s3_client;

/* What POST /v1/session answers. Strings are owned by the struct. */
struct remote_session {
    char *endpoint; /* S3 endpoint the mount talks to */
    char *region;   /* "us-east-1" when pockityd names none */
    char *bucket;
    char *prefix; /* "ROOT/POCKET_ID/": keys start with it */
    char *access_key;
    char *secret_key;
    char *session_token; /* "" when the credentials need none */
    time_t expiration;   /* when the credentials stop working */
    char access[16];     /* "rw", "ro" or "read-delete" (over quota / unpaid) */
    char pocket_id[64];
    char pocket_name[128];
    uint64_t max_bytes, max_objects;
    uint64_t used_bytes, used_objects;
};
void remote_session_release(struct remote_session *s);

struct remote_usage {
    uint64_t max_bytes, max_objects;
    uint64_t used_bytes, used_objects;
    uint64_t reserved_bytes, reserved_objects;
};

struct remote_options {
    long timeout_ms;     /* one HTTP request, connecting included; 0: 10000 */
    long write_wait_ms;  /* how long quota calls keep retrying an unreachable
                            pockityd before failing with -EIO; 0: 30000 */
    const char *ca_file; /* optional CA bundle for https servers */
    int quota_batch;     /* nonzero: reserve through quota allowances (see
                            remote_reserve); 0: one reservation per upload */
};

/* Connect: POST /v1/session with api_key (copied; the copy is wiped by
 * remote_free). server_url is http(s)://HOST[:PORT][/PATH]. One attempt, no
 * retry. On success *out is ready and *session (the caller releases it) holds
 * the first credentials, which the caller installs in its S3 client itself.
 * On failure returns a negative errno and writes a one-line reason to err
 * (never holding the key):
 *   -EACCES   bad, revoked or expired key (401)
 *   -EPERM    pocket pending approval or suspended (403; err says which)
 *   -EHOSTUNREACH / -ECONNREFUSED / -ETIMEDOUT / -ECONNRESET  pockityd unreachable
 *   -EAGAIN   pockityd cannot obtain credentials right now (503)
 *   -EIO      pockityd failed (other 5xx)
 *   -EPROTO   an answer that is not what pockityd sends (a malformed or
 *             oversized body, a 404 from something that is not pockityd)
 *   -EINVAL   a malformed server URL or API key */
int remote_open(const char *server_url, const char *api_key, const struct remote_options *opt,
                struct remote **out, struct remote_session *session, char *err, size_t errlen);

/* Stop the renewal thread (if started; a renewal request in flight is
 * aborted within about a second) and free; NULL is fine. No other call may be
 * in flight. With quota_batch, first sends the commits queued (each batch
 * retried up to write_wait_ms while pockityd is unreachable, the rest then
 * dropped to reconciliation), then gives back (DELETE, one attempt of at
 * most 2 s each) the allowances no uncommitted charge still needs; one with
 * charges pending is left to expire on the server (a commit after its
 * release would be refused). */
void remote_free(struct remote *r);

/* Keep client's credentials fresh: a background thread asks for a new session
 * when two thirds of the current one's lifetime have passed (retrying with
 * backoff while pockityd is unreachable) and installs it with
 * s3_client_set_credentials(). With quota_batch the same thread, every
 * second, gives back allowances that are spent, idle or retired, and while
 * one is held refreshes the usage (GET /v1/usage, at most every 2 s) so a
 * restriction of the pocket is learnt without a reservation. Also usable as
 * the client's s3_refresh_fn (see remote_refresh) for a request that hit
 * ExpiredToken. client must outlive the struct remote. Returns 0, -EINVAL,
 * -EALREADY (already started) or -errno of pthread_create. */
int remote_start_renewal(struct remote *r, struct s3_client *client);

/* An s3_refresh_fn: fetch a session now and install it in client. arg is the
 * struct remote. Callers are serialised, and a call within 2 s of the last
 * successful fetch into the same client returns 0 without a request, so a
 * burst of ExpiredToken errors costs one session. Returns 0 or the errnos of
 * remote_open. */
int remote_refresh(void *arg, struct s3_client *client);

/* The s3_refresh_fn of the mount's client: remote_refresh, but for a denial
 * (RGW's answer to expired session credentials) only when the session is
 * within a minute of its end or past it; otherwise -EACCES. */
int remote_s3_refresh(void *arg, struct s3_client *client, int status);

/* The access the latest session granted ("rw", "ro", "read-delete"); a
 * static string, safe to keep. */
const char *remote_access(struct remote *r);

/* Reserve quota before uploading key (relative to the pocket prefix) with its
 * new full size. On success writes the reservation id (at most 64 bytes with
 * its NUL) into id_out. -EROFS when the pocket is on hold (read_only). Quota calls (this, commit,
 * release, deleted) retry with backoff while pockityd is unreachable or answers 429/502/503/504, up
 * to write_wait_ms; other answers are final. A retried reservation whose
 * first answer was lost expires on the server. Returns 0, -EDQUOT
 * (quota_exceeded), -EACCES (the key may not write, or the pocket is not
 * active), -EIO when pockityd stays unreachable past write_wait_ms or fails,
 * or -EINVAL (key empty, over 1024 bytes or not UTF-8).
 *
 * With quota_batch, the reservation is usually local: the remote holds an
 * allowance (POST /v1/allowances: a block of bytes and objects reserved at
 * once, at most 64 MiB and 256 objects, and at most an eighth of what the
 * pocket has free) and charges the file to it without a request; the id is
 * then "local#N", which no server id can be. A new allowance is asked for
 * (by one thread at a time; the others wait for it) when the current one
 * cannot hold the file, is half way to its expiry, or is gone. The exact
 * path (POST /v1/reservations) serves a file an allowance of that size could
 * not hold, a restricted pocket, and every file for 5 s after an allowance
 * was refused: so EDQUOT near a full quota is the server's exact answer (and
 * before it is returned, leftovers of allowances whose charges are about to
 * be committed are given back, waiting up to 2 s for those commits). A
 * restriction or a smaller tier set while an allowance is held takes effect
 * when the mount next hears from pockityd (within about 2 s while the
 * renewal thread runs). */
int remote_reserve(struct remote *r, const char *key, uint64_t size, char id_out[64]);

/* Tell pockityd the upload of a reservation landed with this size and ETag.
 * A server id is committed at once (POST /v1/reservations/{id}/commit),
 * after the commits queued before (an earlier upload of the same key must
 * not land last). A local id is queued for the committer thread, which sends
 * the queue in order, in batches of up to 64 commits to one allowance (POST
 * /v1/allowances/{id}/commits; .../commit for a lone one, and one by one
 * after a batch answered 404 or 400) — commits queued while a request is in
 * flight share the next — and logs what it cannot report (a commit whose
 * allowance the server no longer knows goes the exact path first). A commit
 * queued but not sent when the process dies is left to reconciliation, like
 * one that fails. The id is used up whatever the answer. Returns 0 (for a
 * local id: queued), -ENOENT (unknown or expired reservation or allowance:
 * the caller should report the object another way, e.g. reserve+commit
 * again), -EACCES, -EINVAL (a malformed id or ETag), -EIO. */
int remote_commit(struct remote *r, const char *reservation_id, uint64_t size, const char *etag);

/* Wait up to timeout_ms for the commits queued before this call to be
 * answered, so the server's totals include them (no longer once a commit
 * found pockityd unreachable). True when they are. */
bool remote_settle(struct remote *r, long timeout_ms);

/* Give a reservation back after a failed upload; a local id goes back to
 * its allowance without a request. Returns 0, -ENOENT, -EACCES, -EINVAL (a
 * malformed id), -EIO. */
int remote_release(struct remote *r, const char *reservation_id);

/* Report deleted keys (relative to the prefix), any number: sent in batches
 * of at most 1000 (a failed batch stops the rest), after the commits queued
 * before (remote_settle for up to write_wait_ms), so a commit of a key never
 * lands after its deletion. While pockityd counts as down it fails at once
 * like a reservation (remote_quota_down). Returns 0, -EACCES (the key
 * may not write), -EINVAL (an empty, over-long or non-UTF-8 key) or -EIO. */
int remote_deleted(struct remote *r, const char *const *keys, size_t n);

/* Whether the pocket takes writes now: 0, -EDQUOT (it holds more than its
 * tier allows) or -EROFS (payment past due, or another hold). Learnt from
 * sessions, usage and quota answers; while restricted it asks pockityd again
 * at most every 2 s, and once the restriction is lifted it fetches new
 * credentials (a restricted session's only read and delete) into the client
 * given to remote_start_renewal. Cheap when not restricted. */
int remote_write_check(struct remote *r);

/* Whether a quota call gave up on pockityd and none has been answered since
 * (remote_quota_call): writes fail with EIO at once meanwhile. */
bool remote_quota_down(struct remote *r);

/* Whether the latest totals pockityd gave (of any answer) leave no room for
 * a new object of bytes: used + bytes > the tier's bytes. False when none is
 * known yet. Never blocks; the totals may be a few seconds old. */
bool remote_no_room(struct remote *r, uint64_t bytes);

/* Quota and usage for statfs (GET /v1/usage), cached for 2 s and refreshed
 * too by the totals that reserve/commit/deleted answers carry. One attempt,
 * no retry; after a failure the next attempt waits 2 s. Returns 0 or -EIO
 * (then *u holds the last known figures, or zeros). */
int remote_usage(struct remote *r, struct remote_usage *u);

#endif
