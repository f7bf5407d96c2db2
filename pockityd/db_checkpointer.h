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

/* Rounds of checkpoints run so far (for tests and metrics); 0 for NULL. */
unsigned long db_checkpointer_rounds(const struct db_checkpointer *ck);

/* Stop the thread (waiting for a checkpoint under way) and free ck (may be
 * NULL), after unhooking db's connections: call it before they close. */
void db_checkpointer_stop(struct db_checkpointer *ck);

#endif
