/* roles: one IAM role per pocket and access mode, whose own permission policy
 * is the pocket's session policy, so a session can never reach further than
 * its pocket even on storage that ignores (or loses) the session policy. */
#ifndef POCKITYD_ROLES_H
#define POCKITYD_ROLES_H

#include "api.h"
#include "db.h"
#include "policy.h"

/* Room for a role ARN with its NUL. */
#define ROLES_ARN_MAX 512

/* The name of the inline permission policy put on each pocket role. */
#define ROLES_POLICY_NAME "pocket"

/* The IAM path of pocket roles: their ARNs read "arn:aws:iam:::role/pockity/NAME". */
#define ROLES_PATH "/pockity/"

/*
 * Why: Ceph RGW 16.2 encrypts its STS session tokens without authenticating
 * them, and grants the role's full rights when the session policy inside a
 * token no longer parses. With s3.scoped_roles (the default) each pocket and
 * access mode gets its own role, named "pky-<pocket id>-<rw|ro|rd>" (the id's
 * '_' written '.', since RGW refuses '_' in role names), created under
 * ROLES_PATH with the trust policy and session length of the configured role
 * (s3.role_arn, read with GetRole, so no other setting is needed) and the
 * policy_session() document of that prefix and access as its only inline
 * policy. The table pocket_roles (migration 7) records each role, with the
 * policy put on it, once it is complete; it is the truth, read before
 * anything is made.
 *
 * Errors, for all functions below: 0 on success, else a negative errno:
 * -EINVAL a bad argument (pocket id of an unexpected shape, bad prefix),
 * -ENOMEM, -EIO the database failed, -EAGAIN the storage's IAM API failed or
 * is unreachable (worth a retry later), -EPERM a role of that name exists
 * with a policy that is not ours (never used: an operator must look). The
 * cause is logged.
 */

/* Build the role name of pocket_id and access into name (IAM_ROLE_NAME_MAX+1
 * bytes). Returns 0, or -EINVAL when the id holds characters other than
 * [a-z0-9_] (the mapping of '_' must stay one to one) or is too long. */
int roles_name(const char *pocket_id, enum policy_access access, char *name, size_t n);

/* The recorded role ARN of pocket_id and access, read on c (a connection the
 * caller holds, in or out of a transaction), provided the role was made with
 * policy (the policy_session() text of the pocket and access). DB_OK with
 * arn_out filled; DB_ERR_NOT_FOUND when the role was not made yet or was made
 * with another policy (an older pockityd's, another bucket's): roles_arn_for
 * then puts the new policy on it; or a db status. */
int roles_lookup(struct db_conn *c, const char *pocket_id, enum policy_access access,
                 const char *policy, char arn_out[ROLES_ARN_MAX]);

/* The ARN of the role of pocket_id (whose prefix in the bucket is prefix) and
 * access, made now if it is not recorded yet with the current policy:
 * CreateRole (a role that exists already, e.g. made by a racing replica, is
 * reused), PutRolePolicy, then the row (inserted, or updated to the new
 * policy). Takes pooled database connections only for the lookup and the record,
 * never across an IAM call, so the caller must not hold one while calling
 * (pool exhaustion). Safe to call concurrently from any replica: all end up
 * with the same role and the same row. */
int roles_arn_for(struct app *app, const char *pocket_id, const char *prefix,
                  enum policy_access access, char arn_out[ROLES_ARN_MAX]);

/* Drop the record of the role of pocket_id and access (not the role), so the
 * next roles_arn_for makes it again: for when the storage says the recorded
 * role is gone (deleted by an operator). Takes its own connection. */
int roles_invalidate(struct app *app, const char *pocket_id, enum policy_access access);

/* Delete the pocket's roles (every access mode, whether recorded or not when
 * s3.scoped_roles is on; only recorded ones otherwise) and their rows.
 * Idempotent: roles already gone are fine. For the purge of a deleted pocket,
 * after which its credentials must no longer be renewable. Takes its own
 * connection; the caller must not hold one. */
int roles_forget(struct app *app, const char *pocket_id);

#endif
