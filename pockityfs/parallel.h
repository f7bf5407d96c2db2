/* parallel: one piece of work shared by several threads at once. */
#ifndef POCKITYFS_PARALLEL_H
#define POCKITYFS_PARALLEL_H

#define PARALLEL_MAX 16 /* threads of one parallel_run, the caller's included */

/* Run fn(arg) on n threads, the calling one among them (n is capped to
 * PARALLEL_MAX), and return once all have returned. fn takes its items from
 * arg until none is left, so threads that cannot start leave theirs to the
 * others. The caller's S3 deadline (s3_thread_deadline) holds in each. */
void parallel_run(int n, void (*fn)(void *arg), void *arg);

#endif
