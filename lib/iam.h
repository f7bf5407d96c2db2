/* iam: the role calls of the IAM API (CreateRole, GetRole, PutRolePolicy,
 * ListRolePolicies, DeleteRolePolicy, DeleteRole) as Ceph RGW serves them on
 * its S3 endpoint, over the S3 client's request engine. */
#ifndef POCKITY_IAM_H
#define POCKITY_IAM_H

#include <stddef.h>

#include "s3.h"

/*
 * Every call is a form-encoded POST to the client's endpoint, signed (SigV4,
 * payload hashed) for the service "iam" in the client's region with the
 * client's credentials, which need the right to manage roles (on RGW: the
 * user's caps "roles=*"). Every call returns an enum s3_status; IAM's own
 * error codes map as: NoSuchEntity → S3_ERR_NOT_FOUND, EntityAlreadyExists
 * and DeleteConflict → S3_ERR_CONFLICT, InvalidInput and MalformedPolicyDocument
 * → S3_ERR_INVALID. s3_last_error_detail() tells the code and message.
 *
 * RGW 16.2 facts this follows (checked on the real service): role names may
 * hold only [A-Za-z0-9:=,.@-] (no '_' nor '+', unlike AWS), paths are "/" or
 * "/TEXT/"; the policies come back as raw JSON (XML-escaped, not URL-encoded);
 * DeleteRole answers DeleteConflict while the role still has a policy.
 */

#define IAM_ROLE_NAME_MAX   64
#define IAM_POLICY_NAME_MAX 128
#define IAM_DOC_MAX         (10 * 1024) /* trust and permission policy documents */

/* What GetRole and CreateRole tell about a role. Owns its strings. */
struct iam_role {
    char *name;
    char *path;
    char *arn;
    char *trust_policy; /* AssumeRolePolicyDocument, as JSON text */
    int max_session_s;  /* MaxSessionDuration; 0 when the answer had none */
    int existed;        /* iam_role_create only: the role was there already */
};

/* Free the strings of role and zero it. Accepts a zeroed role. */
void iam_role_release(struct iam_role *role);

/* Whether name is a role name both RGW and AWS accept: 1 to 64 characters of
 * [A-Za-z0-9=,.@-] (the intersection of their rules). */
int iam_role_name_valid(const char *name);

/* The role name of a role ARN "arn:PARTITION:iam::ACCOUNT:role/PATH/NAME"
 * (the part after the last '/') copied into name (size n). Returns S3_OK, or
 * S3_ERR_INVALID_ARG when arn is not a role ARN or the name does not fit or is
 * not valid. */
int iam_arn_role_name(const char *arn, char *name, size_t n);

/* GetRole. On S3_OK *out is filled and must be released; S3_ERR_NOT_FOUND
 * when there is no such role. */
int iam_role_get(struct s3_client *c, const char *name, struct iam_role *out);

/* CreateRole with path ("/" or "/TEXT/", NULL for "/"), the trust policy
 * trust (compact JSON) and max_session_s (0: the service's default, else
 * 3600..43200). A role that exists already is not an error: it is read back
 * with GetRole and out->existed is set (its trust policy is not changed: the
 * caller decides whether it is acceptable). On S3_OK *out must be released. */
int iam_role_create(struct s3_client *c, const char *name, const char *path, const char *trust,
                    int max_session_s, struct iam_role *out);

/* PutRolePolicy: create or replace the inline policy policy_name (1..128 of
 * [\w+=,.@-]) of the role with doc (compact JSON). */
int iam_role_policy_put(struct s3_client *c, const char *role, const char *policy_name,
                        const char *doc);

/* ListRolePolicies: the names of the role's inline policies. On S3_OK *names
 * is a malloc'd array of *n malloc'd strings (NULL when *n is 0) that the
 * caller frees with iam_names_free. */
int iam_role_policy_list(struct s3_client *c, const char *role, char ***names, size_t *n);
void iam_names_free(char **names, size_t n);

/* DeleteRolePolicy and DeleteRole. A policy or role already gone is S3_OK.
 * DeleteRole of a role that still has policies gives S3_ERR_CONFLICT. */
int iam_role_policy_delete(struct s3_client *c, const char *role, const char *policy_name);
int iam_role_delete(struct s3_client *c, const char *role);

/* Parse a GetRoleResponse or CreateRoleResponse (response names which) into
 * *out, which must then be released. S3_ERR_BAD_RESPONSE when the document
 * is not one or lacks the name or the ARN. For the unit tests. */
int iam_parse_role(const char *xml, size_t len, const char *response, struct iam_role *out);

#endif
