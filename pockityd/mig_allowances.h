/* mig_allowances: migration 9, quota allowances: blocks of a pocket's quota a
 * mount reserves once and spends file by file (pockityd/allowance.h). */
#ifndef POCKITYD_MIG_ALLOWANCES_H
#define POCKITYD_MIG_ALLOWANCES_H

/* bytes and objects are what the allowance has LEFT; they are counted in the
 * pocket's reserved_bytes / reserved_objects while the row exists. expires_at
 * moves forward with each commit; the usage job deletes rows past it and gives
 * back what they had left. The same SQL on both engines. */
#define MIG_ALLOWANCES_COMMON                                                                      \
    "CREATE TABLE allowances ("                                                                    \
    " id TEXT PRIMARY KEY,"                                                                        \
    " pocket_id TEXT NOT NULL REFERENCES pockets (id) ON DELETE CASCADE,"                          \
    " bytes BIGINT NOT NULL CHECK (bytes >= 0),"                                                   \
    " objects BIGINT NOT NULL CHECK (objects >= 0),"                                               \
    " created_at BIGINT NOT NULL,"                                                                 \
    " expires_at BIGINT NOT NULL);\n"                                                              \
    "CREATE INDEX allowances_expires ON allowances (expires_at);\n"                                \
    "CREATE INDEX allowances_pocket ON allowances (pocket_id);\n"

#define MIG_ALLOWANCES_SQLITE   MIG_ALLOWANCES_COMMON
#define MIG_ALLOWANCES_POSTGRES MIG_ALLOWANCES_COMMON

#endif
