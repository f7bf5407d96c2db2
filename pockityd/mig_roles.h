/* mig_roles: migration 7, the IAM role made for each pocket and access mode
 * (pockityd/roles.h), so replicas find it instead of making it again. */
#ifndef POCKITYD_MIG_ROLES_H
#define POCKITYD_MIG_ROLES_H

/* access is the policy_access_code ("rw", "ro", "rd"); role_arn is what
 * AssumeRole is given; policy is the permission policy put on the role, so a
 * pockityd building another one (new version, other bucket) puts its own. A
 * row is written only once the role exists with that policy, with INSERT ...
 * ON CONFLICT DO UPDATE: racing replicas write the same values. The same SQL
 * on both engines. */
#define MIG_ROLES_COMMON                                                                           \
    "CREATE TABLE pocket_roles ("                                                                  \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " access TEXT NOT NULL CHECK (access IN ('rw', 'ro', 'rd')),"                                  \
    " role_arn TEXT NOT NULL CHECK (length(role_arn) > 0),"                                        \
    " policy TEXT NOT NULL,"                                                                       \
    " created_at BIGINT NOT NULL,"                                                                 \
    " PRIMARY KEY (pocket_id, access));\n"

#define MIG_ROLES_SQLITE   MIG_ROLES_COMMON
#define MIG_ROLES_POSTGRES MIG_ROLES_COMMON

#endif
