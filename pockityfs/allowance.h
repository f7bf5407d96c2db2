/* allowance: a mount's quota allowances — blocks of quota held from
 * pockityd, charged file by file without a request — and the commits of
 * those charges, sent in batches by a committer thread. Part of the remote
 * module: remote.c calls these for a remote opened with quota_batch; the
 * behaviour is documented at remote_reserve and remote_commit (remote.h). */
#ifndef POCKITYFS_ALLOWANCE_H
#define POCKITYFS_ALLOWANCE_H

#include <stdbool.h>
#include <stdint.h>

struct remote;

/* Set up r->alw. Returns 0 or -ENOMEM. */
int allowance_open(struct remote *r);
/* Stop the committer once it has sent what is queued (later commits are
 * sent by their callers). No-op without allowances. */
void allowance_stop(struct remote *r);
/* Give back what is held (one attempt each, 2 s at most) and free r->alw;
 * after allowance_stop and with no other thread left. No-op without. */
void allowance_close(struct remote *r);

/* Charge a file of size bytes under key to an allowance, asking for one when
 * needed: 0 with id_out "local#N", -EAGAIN (take the exact path), -EIO or
 * -ENOMEM. */
int allowance_reserve(struct remote *r, const char *key, uint64_t size, char id_out[64]);
/* Before answering EDQUOT: give back what allowances hold beyond their
 * pending charges, waiting up to 2 s for their commits and for give-backs
 * under way. True when something went or was going back (the exact path may
 * now succeed). */
bool allowance_give_back(struct remote *r);
/* "local#N" -> 1 with *n, a malformed local id -> -1, any other id -> 0. */
int allowance_local_id(const char *id, uint64_t *n);
/* Queue the commit of charge n (size bytes landed with etag); 0, or -ENOENT
 * when the charge is unknown or its allowance gone (reserve again). */
int allowance_commit(struct remote *r, uint64_t n, uint64_t size, const char *etag);
/* Give charge n back to its allowance, without a request: 0 or -ENOENT. */
int allowance_release(struct remote *r, uint64_t n);
/* Wait up to timeout_ms for the commits queued before this call to be
 * answered; true when they are (and always without allowances). */
bool allowance_settle(struct remote *r, long timeout_ms);
/* The renewal thread's look, every second: give back what is spent, idle or
 * retired, and hear of a restriction while an allowance is held. */
void allowance_sweep(struct remote *r);

#endif
