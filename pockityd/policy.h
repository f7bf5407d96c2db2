/* policy: the permission document of one pocket's prefix: the inline session
 * policy pockityd hands to STS AssumeRole, and the policy of the pocket's own
 * role (pockityd/roles.h), so the two grant exactly the same. */
#ifndef POCKITYD_POLICY_H
#define POCKITYD_POLICY_H

/* What a mount's credentials may do inside its prefix. */
enum policy_access {
    POLICY_RW,          /* get, put, delete, abort and list multipart uploads' parts */
    POLICY_RO,          /* get only */
    POLICY_READ_DELETE, /* get and delete: a pocket over its quota may only free space */
};

/* The access's name as shown in the API: "rw", "ro" or "read-delete". */
const char *policy_access_name(enum policy_access access);

/* A two-letter code of the access, for names with little room (IAM role
 * names): "rw", "ro" or "rd". NULL for a value outside the enum. */
const char *policy_access_code(enum policy_access access);

/*
 * Build the policy for prefix of bucket (used both as the session policy and
 * as the permission policy of the pocket's role for that access): ListBucket
 * on the bucket limited by an s3:prefix condition to "PREFIX" and "PREFIX*",
 * and the object actions of access on "arn:aws:s3:::BUCKET/PREFIX*". The
 * prefix is given with or without its trailing '/' ("pockets/pkt_x" and
 * "pockets/pkt_x/" both give "pockets/pkt_x/"); it must not be empty nor hold
 * the IAM wildcards '*' and '?' or a "${" policy variable, which would widen
 * the grant. The bucket must be a non-empty name without those either, nor
 * '/'. Both must be valid UTF-8.
 *
 * The document is compact JSON (no whitespace at all, as RGW needs: it decodes
 * '+' in a form body as a literal) with every string escaped by jansson.
 *
 * Returns 0 with *out a malloc'd NUL-terminated string the caller frees,
 * -EINVAL for a bad argument, or -ENOMEM. *out is NULL on error.
 */
int policy_session(const char *bucket, const char *prefix, enum policy_access access, char **out);

#endif
