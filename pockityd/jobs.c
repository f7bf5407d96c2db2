/* jobs: one thread per job, each sleeping its interval between rounds and woken
 * at once to stop. */
#include "jobs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "allowance.h"
#include "api.h"
#include "log.h"
#include "usage.h"

/* The table of jobs: what runs, and how often (a config field in seconds;
 * a job whose interval is 0 or less does not run on a timer). */
static const struct job {
    const char *name;
    job_fn run;
    size_t interval_offset;
} job_table[] = {
        {"usage", usage_job, offsetof(struct config, sweep_interval)},
        {"billing", billing_job, offsetof(struct config, billing_interval)},
        {"notify", notify_job, offsetof(struct config, sweep_interval)},
        {"reconcile", reconcile_job, offsetof(struct config, reconcile_interval)},
};
#define N_JOBS (sizeof(job_table) / sizeof(job_table[0]))

struct worker {
    struct jobs *jobs;
    const struct job *job;
    pthread_t thread;
    bool started;
};

struct jobs {
    struct app *app;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop; /* guarded by lock */
    struct worker workers[N_JOBS];
};

/* One process runs one set of jobs; long rounds poll this. */
static atomic_int stopping;

int jobs_stopping(struct app *app)
{
    (void)app;
    return atomic_load(&stopping);
}

static int64_t interval_of(const struct app *app, const struct job *job)
{
    return *(const int64_t *)((const char *)&app->cfg + job->interval_offset);
}

/* Webhook events that changed nothing ('ignored') matter only while their
 * provider may deliver them again (Stripe retries for three days, Razorpay
 * for one); a later replay is ignored again anyway, as the payments it could
 * repeat are recorded by payment_ref. Events that moved money stay. */
#define IGNORED_EVENTS_KEPT (30 * 86400)

static void forget_old_rows(struct app *app, int64_t now)
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return;
    /* Keep ended sessions a day, so a revoked token still reads as revoked. */
    int rc = db_exec(c, "DELETE FROM auth_sessions WHERE expires_at < $1",
                     DB_ARGS(DB_INT(now - 86400)), NULL);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM rate_limits WHERE window_start < $1",
                     DB_ARGS(DB_INT(now - app->cfg.login_window * 2)), NULL);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM webhook_events WHERE received_at < $1 AND outcome = 'ignored'",
                     DB_ARGS(DB_INT(now - IGNORED_EVENTS_KEPT)), NULL);
    if (rc)
        log_warn("jobs: forgetting old rows: %s: %s", db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
}

void usage_job(struct app *app, int64_t now)
{
    int released = usage_sweep_expired(app->db, now);
    if (released > 0)
        log_info("jobs: released %d expired reservation(s)", released);
    else if (released < 0)
        log_warn("jobs: sweeping reservations failed: %s", db_strerror(-released));
    released = allowance_sweep_expired(app->db, now);
    if (released > 0)
        log_info("jobs: released %d expired allowance(s)", released);
    else if (released < 0)
        log_warn("jobs: sweeping allowances failed: %s", db_strerror(-released));
    forget_old_rows(app, now);
}

void jobs_run_once(struct app *app)
{
    for (size_t i = 0; i < N_JOBS; i++)
        job_table[i].run(app, api_now());
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct jobs *j = w->jobs;
    int64_t interval = interval_of(j->app, w->job);
    pthread_mutex_lock(&j->lock);
    while (!j->stop) {
        pthread_mutex_unlock(&j->lock);
        w->job->run(j->app, api_now());
        pthread_mutex_lock(&j->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += interval;
        while (!j->stop && pthread_cond_timedwait(&j->wake, &j->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

struct jobs *jobs_start(struct app *app)
{
    struct jobs *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->app = app;
    atomic_store(&stopping, 0);
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < N_JOBS; i++) {
        struct worker *w = &j->workers[i];
        w->jobs = j;
        w->job = &job_table[i];
        if (interval_of(app, w->job) <= 0)
            continue;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_error("jobs: cannot start the '%s' job's thread", w->job->name);
            jobs_stop(j);
            return NULL;
        }
        w->started = true;
    }
    return j;
}

void jobs_stop(struct jobs *j)
{
    if (!j)
        return;
    atomic_store(&stopping, 1);
    pthread_mutex_lock(&j->lock);
    j->stop = true;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    for (size_t i = 0; i < N_JOBS; i++)
        if (j->workers[i].started)
            pthread_join(j->workers[i].thread, NULL);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
