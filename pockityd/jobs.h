/* jobs: pockityd's background work on timers — releasing expired quota
 * reservations, forgetting ended login sessions, billing renewals, mail
 * notifications, reconciliation of the ledger with S3. Each job runs on its own
 * thread so a long one never delays the others, and each coordinates through
 * the database, so any number of replicas may run them at once. */
#ifndef POCKITYD_JOBS_H
#define POCKITYD_JOBS_H

#include <stdint.h>

struct app;
struct jobs;

/* One round of a job at time now. It returns when the round is done; a long
 * round should check jobs_stopping() between steps. */
typedef void (*job_fn)(struct app *app, int64_t now);

/* Start the background threads. Returns NULL when they cannot start. */
struct jobs *jobs_start(struct app *app);

/* Run every job once now, one after the other (for start-up and tests). */
void jobs_run_once(struct app *app);

/* Whether jobs_stop() has been called: long rounds stop early when it has. */
int jobs_stopping(struct app *app);

/* Stop the threads (waking them at once) and free jobs; NULL is fine. */
void jobs_stop(struct jobs *jobs);

/* The jobs themselves, each in its module. */
void usage_job(struct app *app, int64_t now);     /* jobs.c: reservations, sessions */
void billing_job(struct app *app, int64_t now);   /* billing.c: renewals, past due */
void notify_job(struct app *app, int64_t now);    /* notify.c: mail from the audit log */
void reconcile_job(struct app *app, int64_t now); /* reconcile.c: ledger vs S3, leftovers */

#endif
