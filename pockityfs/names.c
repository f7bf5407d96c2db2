/* names: changes to S3 kept apart from a directory rename (names.h). */
#include "names.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void names_init(struct names *n)
{
    memset(n, 0, sizeof(*n));
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->changed, NULL);
}

void names_destroy(struct names *n)
{
    for (size_t i = 0; i < n->n_paths; i++)
        free(n->paths[i]);
    free(n->paths);
    pthread_cond_destroy(&n->changed);
    pthread_mutex_destroy(&n->lock);
}

/* Whether path is dir or lies below it. */
static int below(const char *path, const char *dir)
{
    size_t len = strlen(dir);
    return strncmp(path, dir, len) == 0 && (path[len] == '\0' || path[len] == '/');
}

/* Whether the move under way covers path. Caller holds n->lock. */
static int covered(const struct names *n, const char *path)
{
    return n->from && (below(path, n->from) || below(path, n->to));
}

uint64_t names_moves(struct names *n)
{
    pthread_mutex_lock(&n->lock);
    uint64_t moves = n->moves;
    pthread_mutex_unlock(&n->lock);
    return moves;
}

int names_enter(struct names *n, const char *path, uint64_t moves, int wait)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    pthread_mutex_lock(&n->lock);
    while (wait && n->moves == moves && covered(n, path))
        pthread_cond_wait(&n->changed, &n->lock);
    int rc = 0;
    if (n->moves != moves) {
        rc = -EAGAIN;
    } else if (covered(n, path)) {
        rc = -EBUSY;
    } else if (n->n_paths == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 16;
        char **v = realloc(n->paths, cap * sizeof(*v));
        if (v) {
            n->paths = v;
            n->cap = cap;
        } else {
            rc = -ENOMEM;
        }
    }
    if (!rc)
        n->paths[n->n_paths++] = copy;
    pthread_mutex_unlock(&n->lock);
    if (rc)
        free(copy);
    return rc;
}

void names_leave(struct names *n, const char *path)
{
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->n_paths; i++) {
        if (strcmp(n->paths[i], path) == 0) {
            free(n->paths[i]);
            n->paths[i] = n->paths[--n->n_paths];
            break;
        }
    }
    if (n->from)
        pthread_cond_broadcast(&n->changed);
    pthread_mutex_unlock(&n->lock);
}

void names_move_begin(struct names *n, const char *from, const char *to)
{
    pthread_mutex_lock(&n->lock);
    n->from = from;
    n->to = to;
    n->moves++;
    for (;;) {
        int busy = 0;
        for (size_t i = 0; i < n->n_paths && !busy; i++)
            busy = covered(n, n->paths[i]);
        if (!busy)
            break;
        pthread_cond_wait(&n->changed, &n->lock);
    }
    pthread_mutex_unlock(&n->lock);
}

void names_move_end(struct names *n)
{
    pthread_mutex_lock(&n->lock);
    n->from = n->to = NULL;
    n->moves++;
    pthread_cond_broadcast(&n->changed);
    pthread_mutex_unlock(&n->lock);
}
