/* jobs: pockityd's background work on a timer — releasing expired quota
 * reservations and forgetting ended login sessions and old rate-limit windows.
 * Every job is a single conditional statement on the shared database, so any
 * number of replicas may run them at once. */
#ifndef POCKITYD_JOBS_H
#define POCKITYD_JOBS_H

struct app;
struct jobs;

/* Start the background thread. Returns NULL when it cannot start. */
struct jobs *jobs_start(struct app *app);

/* Run every job once now (for start-up and tests). */
void jobs_run_once(struct app *app);

/* Stop the thread (waking it at once) and free jobs; NULL is fine. */
void jobs_stop(struct jobs *jobs);

#endif
