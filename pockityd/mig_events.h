/* mig_events: migration 6, what event ingestion and reconciliation keep: one
 * lease row per pocket so that only one replica reconciles it at a time (the
 * same SQL on both engines). */
#ifndef POCKITYD_MIG_EVENTS_H
#define POCKITYD_MIG_EVENTS_H

/* holder is a random token of the run holding the lease (NULL: free); the
 * lease is taken by a conditional UPDATE (holder IS NULL OR expires_at <= now)
 * and renewed while the run lasts. last_done_at is when the last full pass
 * ended, so replicas skip pockets reconciled within the interval. The
 * ledger's per-key event order lives in objects.sequencer (migration 1). */
#define MIG_EVENTS_COMMON                                                                          \
    "CREATE TABLE reconcile_leases ("                                                              \
    " pocket_id TEXT PRIMARY KEY REFERENCES pockets (id) ON DELETE CASCADE,"                       \
    " holder TEXT,"                                                                                \
    " expires_at BIGINT NOT NULL DEFAULT 0,"                                                       \
    " last_done_at BIGINT NOT NULL DEFAULT 0,"                                                     \
    " purged_at BIGINT);\n"

#define MIG_EVENTS_SQLITE   MIG_EVENTS_COMMON
#define MIG_EVENTS_POSTGRES MIG_EVENTS_COMMON

#endif
