/* db_checkpointer: copies a write-ahead log (SQLite's) into the database from
 * a thread of its own.
 *
 * Left to itself, SQLite checkpoints inside the commit that makes the log
 * pass 1000 pages: that commit, and on group commit every caller of its group,
 * waits for the copy and its fsyncs (13 ms at p99 of the server-side latency
 * of reservations, against 1-2 ms without). Here commits only report the log's
 * length; past CHECKPOINT_PAGES the thread copies the log on a connection of
 * its own, in two passes: the first while writers go on, the second, holding
 * the process's writer mutex, for the few pages they appended meanwhile, and
 * waiting up to a few milliseconds for the readers still using the log. Once
 * the log is copied whole and no reader holds it, the next writer starts it
 * again from the beginning, so it stays near CHECKPOINT_PAGES under a steady
 * load instead of growing. */
#include "db_checkpointer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "db_backend.h"
#include "log.h"
#include "monotime.h"

#define CHECKPOINT_PAGES   1000 /* SQLite's own default threshold */
#define RESTART_BACKOFF_MS 100  /* after readers outlasted a restart's wait */

struct db_checkpointer {
    struct db *db;
    struct db_conn conn;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool due;          /* guarded by lock */
    bool stopping;     /* guarded by lock */
    atomic_bool asked; /* due or running: commits need not ask again */
    atomic_ulong rounds;
    int64_t restart_after; /* the thread's: no restart before (mono_ns) */
};

/* A commit's report (any connection, any thread): the log holds pages. */
static void on_commit(void *arg, int pages)
{
    struct db_checkpointer *ck = arg;
    if (pages < CHECKPOINT_PAGES || atomic_exchange(&ck->asked, true))
        return;
    pthread_mutex_lock(&ck->lock);
    ck->due = true;
    pthread_cond_signal(&ck->cond);
    pthread_mutex_unlock(&ck->lock);
}

/* A round: copy the log while writers go on, then, holding them off, the
 * pages they appended meanwhile, waiting a moment for the readers still using
 * the log so that the next writer starts it over. Readers that outlast the
 * wait (a long read) keep it from starting over; then, for RESTART_BACKOFF_MS,
 * rounds hold writers off only to copy pages, without waiting. (Without the
 * wait, under a steady load of writes and reads, the log grew 2-3 times
 * larger, or by everything written when the machine was busy enough that
 * readers were always present.) */
static void checkpoint(struct db_checkpointer *ck)
{
    const struct db_backend *be = ck->db->be;
    int left = 0;
    int rc = be->checkpoint(&ck->conn, false, &left);
    bool restart = mono_ns() >= ck->restart_after;
    if (rc == DB_OK && (restart || left > 0)) {
        pthread_mutex_lock(&ck->db->writer);
        rc = be->checkpoint(&ck->conn, restart, &left);
        pthread_mutex_unlock(&ck->db->writer);
        if (restart && rc == DB_ERR_RETRY)
            ck->restart_after = mono_ns() + RESTART_BACKOFF_MS * 1000000;
    }
    if (rc != DB_OK && rc != DB_ERR_RETRY)
        log_warn("database checkpoint failed: %s", ck->conn.errmsg);
    atomic_fetch_add(&ck->rounds, 1);
}

static void *run(void *arg)
{
    struct db_checkpointer *ck = arg;
    pthread_mutex_lock(&ck->lock);
    while (!ck->stopping) {
        if (!ck->due) {
            pthread_cond_wait(&ck->cond, &ck->lock);
            continue;
        }
        ck->due = false;
        pthread_mutex_unlock(&ck->lock);
        checkpoint(ck);
        atomic_store(&ck->asked, false);
        pthread_mutex_lock(&ck->lock);
    }
    pthread_mutex_unlock(&ck->lock);
    return NULL;
}

/* Hand every committing connection of db (the pool's, the group's) to fn. */
static void hook_all(struct db *db, void (*fn)(void *arg, int pages), void *arg)
{
    for (size_t i = 0; i < db->opt.pool_size; i++)
        db->be->wal_handover(&db->conns[i], fn, arg);
    if (db->group_conn)
        db->be->wal_handover(db->group_conn, fn, arg);
}

int db_checkpointer_start(struct db *db, const char *target, struct db_checkpointer **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    struct db_checkpointer *ck = calloc(1, sizeof(*ck));
    if (!ck) {
        snprintf(err, errlen, "out of memory");
        return DB_ERR_NOMEM;
    }
    ck->db = db;
    ck->conn.db = db;
    int rc = db->be->connect(&ck->conn, target, &db->opt, err, errlen);
    if (rc) {
        free(ck);
        return rc;
    }
    pthread_mutex_init(&ck->lock, NULL);
    pthread_cond_init(&ck->cond, NULL);
    if (pthread_create(&ck->thread, NULL, run, ck) != 0) {
        snprintf(err, errlen, "cannot start the database checkpointer thread");
        db->be->disconnect(&ck->conn);
        pthread_cond_destroy(&ck->cond);
        pthread_mutex_destroy(&ck->lock);
        free(ck);
        return DB_ERR_NOMEM;
    }
    hook_all(db, on_commit, ck);
    *out = ck;
    return DB_OK;
}

unsigned long db_checkpointer_rounds(const struct db_checkpointer *ck)
{
    return ck ? atomic_load(&ck->rounds) : 0;
}

void db_checkpointer_stop(struct db_checkpointer *ck)
{
    if (!ck)
        return;
    hook_all(ck->db, NULL, NULL);
    pthread_mutex_lock(&ck->lock);
    ck->stopping = true;
    pthread_cond_signal(&ck->cond);
    pthread_mutex_unlock(&ck->lock);
    pthread_join(ck->thread, NULL);
    ck->db->be->disconnect(&ck->conn);
    pthread_cond_destroy(&ck->cond);
    pthread_mutex_destroy(&ck->lock);
    free(ck);
}
