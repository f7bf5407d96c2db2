/* monotime: the monotonic clock, for deadlines, rates and ages (never dates). */
#ifndef POCKITYD_MONOTIME_H
#define POCKITYD_MONOTIME_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
