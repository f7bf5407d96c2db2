/* jobs: a thread that sleeps sweep_interval seconds between rounds and can be
 * woken to stop at once. */
#include "jobs.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "api.h"
#include "log.h"
#include "usage.h"

struct jobs {
    struct app *app;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop; /* guarded by lock */
};

static void forget_ended_sessions(struct app *app, int64_t now)
{
    struct db_conn *c = db_acquire(app->db);
    if (!c)
        return;
    int64_t n = 0;
    /* Keep ended sessions a day, so a revoked token still reads as revoked. */
    int rc = db_exec(c, "DELETE FROM auth_sessions WHERE expires_at < $1",
                     DB_ARGS(DB_INT(now - 86400)), &n);
    if (rc == DB_OK)
        rc = db_exec(c, "DELETE FROM rate_limits WHERE window_start < $1",
                     DB_ARGS(DB_INT(now - app->cfg.login_window * 2)), NULL);
    if (rc)
        log_warn("jobs: cleaning sessions: %s: %s", db_strerror(rc), db_conn_errmsg(c));
    db_release(c);
}

void jobs_run_once(struct app *app)
{
    int64_t now = api_now();
    int released = usage_sweep_expired(app->db, now);
    if (released > 0)
        log_info("jobs: released %d expired reservation(s)", released);
    else if (released < 0)
        log_warn("jobs: sweeping reservations failed: %s", db_strerror(-released));
    forget_ended_sessions(app, now);
}

static void *jobs_main(void *arg)
{
    struct jobs *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!j->stop) {
        pthread_mutex_unlock(&j->lock);
        jobs_run_once(j->app);
        pthread_mutex_lock(&j->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += j->app->cfg.sweep_interval;
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
    pthread_mutex_init(&j->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&j->thread, NULL, jobs_main, j) != 0) {
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->lock);
        free(j);
        return NULL;
    }
    return j;
}

void jobs_stop(struct jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stop = true;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
