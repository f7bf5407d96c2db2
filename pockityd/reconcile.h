/* reconcile: S3 is the truth — passes that list each pocket's prefix and
 * correct the usage ledger to what S3 holds, abort abandoned multipart
 * uploads, and empty pockets being deleted. One replica at a time per pocket,
 * through a lease row in the database. */
#ifndef POCKITYD_RECONCILE_H
#define POCKITYD_RECONCILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct app;

/* Seconds a pocket's lease lasts without renewal; a pass renews it on every
 * page, so a replica that dies mid-pass holds the pocket this long at most. */
#define RECONCILE_LEASE_SECONDS 120

struct reconcile_totals {
    int64_t bytes;
    int64_t objects;
};

/* One pocket whose ledger was corrected: its used totals before the first
 * correction and after the last. */
struct reconcile_correction {
    char pocket_id[64];
    struct reconcile_totals before, after;
    int64_t keys; /* ledger rows corrected */
};

struct reconcile_report {
    int64_t pockets; /* pockets reconciled (or purged) */
    struct reconcile_correction *corrections;
    size_t n_corrections;
    char (*skipped)[64]; /* pockets another run held throughout */
    size_t n_skipped;
    int64_t uploads_aborted; /* incomplete multipart uploads aborted */
    int64_t objects_purged;  /* objects removed from pockets being deleted */
    int failed;              /* pockets whose pass failed (S3 or database) */
};

/* Which pockets a run takes. */
enum reconcile_mode {
    RECONCILE_DUE, /* those not reconciled within cfg.reconcile_interval (the job) */
    RECONCILE_NOW, /* all of them, now (the admin route) */
};

/* Reconcile pocket_id (NULL: every pocket) at time now. A pocket in status
 * 'deleting' is emptied instead: its objects and uploads removed, its ledger
 * tombstoned. Listings go at most cfg.reconcile_list_rate pages per second
 * (process-wide). A pocket whose lease another run holds is waited for up to
 * wait_s seconds, then reported in skipped. Rows written while the pass runs
 * and keys with a live reservation (an upload may be in flight) are left for
 * the next pass. Each batch of corrections is one transaction with its
 * "usage.correct" audit row (before/after totals). *out is filled (release it
 * with reconcile_report_release) even on failure. Returns 0, or -1 when a
 * database failure stopped the run before it started. */
int reconcile_run(struct app *app, const char *pocket_id, enum reconcile_mode mode, int wait_s,
                  int64_t now, struct reconcile_report *out);

void reconcile_report_release(struct reconcile_report *r);

/* {"pockets": N, "corrections": [{"pocket_id", "before": {"bytes", "objects"},
 * "after": {...}, "keys"}], "skipped": [ids], "uploads_aborted": N,
 * "objects_purged": N, "failed": N}; NULL when out of memory. */
json_t *reconcile_report_json(const struct reconcile_report *r);

#endif
