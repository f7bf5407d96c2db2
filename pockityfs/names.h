/* names: keeps changes to S3 apart from a directory rename. A directory
 * rename copies and deletes every object below it, not atomically, and
 * moves the pending uploads below it to the new names. A change below its
 * old or new name (an upload, a delete, a marker, new attributes, a new
 * file) waits until the move is over, and the move first waits for the
 * changes below those names already under way; so each lands before the
 * move (and moves with it) or after it (under the new name). Changes
 * elsewhere go on. One move at a time (renames are serialized). */
#ifndef POCKITYFS_NAMES_H
#define POCKITYFS_NAMES_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct names {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    uint64_t moves;        /* moves begun and ended (odd: one under way); a path
                              computed before it moved on may be stale */
    const char *from, *to; /* the move under way (its caller's strings), or NULL */
    char **paths;          /* changes under way (one entry each) */
    size_t n_paths, cap;
};

void names_init(struct names *n);
void names_destroy(struct names *n);

/* The count of moves begun and ended, to pass to names_enter: read it
 * before computing the path of the change. Odd while a move is under way;
 * the same even count before and after a listing says no rename ran
 * meanwhile. */
uint64_t names_moves(struct names *n);

/* Enter a change at path (relative to the pocket, no trailing '/'): waits
 * while a move covers path (unless !wait: -EBUSY). Returns 0 (then
 * names_leave(path) after the change), -EAGAIN when a move began or ended
 * since moves was read (path may be an old name: compute it again and
 * retry) or -ENOMEM. */
int names_enter(struct names *n, const char *path, uint64_t moves, int wait);
void names_leave(struct names *n, const char *path);

/* A move of the directory from to to: from now on changes below either
 * wait; returns once the changes below them under way have left. */
void names_move_begin(struct names *n, const char *from, const char *to);
void names_move_end(struct names *n);

#endif
