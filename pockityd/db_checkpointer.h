/* db_checkpointer: checkpoints of a one-writer engine's write-ahead log
 * (SQLite), run by a thread of their own instead of inside commits. */
#ifndef POCKITYD_DB_CHECKPOINTER_H
#define POCKITYD_DB_CHECKPOINTER_H

#include <stddef.h>

struct db;
struct db_checkpointer;

/* Open a connection of its own to target and start the thread; from then on
 * the commits on db's connections hand their checkpoints to it. On failure
 * describe it in err. */
int db_checkpointer_start(struct db *db, const char *target, struct db_checkpointer **out,
                          char *err, size_t errlen);

/* Stop the thread (waiting for a checkpoint under way) and free ck (may be
 * NULL). Call once no connection of db commits any more. */
void db_checkpointer_stop(struct db_checkpointer *ck);

#endif
