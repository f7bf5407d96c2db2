/* mig_roles: placeholder migration, being written. */
#define MIG_ROLES_SQLITE "SELECT 1;"
#define MIG_ROLES_POSTGRES "SELECT 1;"
