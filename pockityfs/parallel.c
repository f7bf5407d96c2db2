/* parallel: one piece of work shared by several threads at once. */
#include "parallel.h"

#include <pthread.h>

#include "s3.h"

struct run {
    void (*fn)(void *arg);
    void *arg;
    long long deadline;
};

static void *run_main(void *p)
{
    const struct run *r = p;
    s3_thread_deadline_restore(r->deadline);
    r->fn(r->arg);
    return NULL;
}

void parallel_run(int n, void (*fn)(void *arg), void *arg)
{
    struct run r = {fn, arg, s3_thread_deadline_save()};
    pthread_t threads[PARALLEL_MAX];
    int started = 0;
    if (n > PARALLEL_MAX)
        n = PARALLEL_MAX;
    for (int i = 1; i < n; i++)
        if (pthread_create(&threads[started], NULL, run_main, &r) == 0)
            started++;
    fn(arg);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
}
