/* metrics: process-wide counters and the HTTP latency histogram, rendered in
 * the Prometheus text exposition format 0.0.4 for GET /metrics. */
#ifndef POCKITYD_METRICS_H
#define POCKITYD_METRICS_H

#include <stdint.h>

struct buf;

/* Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Record one answered HTTP request (called by the http module for every
 * request): increments pockityd_http_requests_total{route,method,status} and
 * observes seconds in pockityd_http_request_duration_seconds{route}, a
 * histogram per route (not per method or status) with buckets 0.001, 0.0025,
 * 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 and +Inf. route and
 * method must come from a bounded set (route names, known methods): every
 * distinct value is a series kept for the life of the process. */
void metrics_http_observe(const char *route, const char *method, int status, double seconds);

/* Declare a counter without labels with its HELP text so it is shown (at 0)
 * before its first increment. Optional: counters also come to exist on first use. name must
 * match [a-zA-Z_:][a-zA-Z0-9_:]*. Returns 0, -EINVAL or -ENOMEM. */
int metrics_counter_register(const char *name, const char *help);

/* The same for a counter with one label: declares it with a series at 0 for
 * each value of the NULL-terminated list values. */
int metrics_counter_register_labels(const char *name, const char *help, const char *label_name,
                                    const char *const *values);

/* Add n to counter name, optionally with one label (label_name and
 * label_value both NULL for none), e.g.
 *   metrics_counter_add("pockityd_reservations_total", "result", "refused", 1);
 * Thread-safe and cheap (a read lock and an atomic add once the series
 * exists). Label values are escaped; keep them to a bounded set. Invalid
 * names are logged once and ignored; past 10000 series new ones are dropped. */
void metrics_counter_add(const char *name, const char *label_name, const char *label_value,
                         uint64_t n);

/* metrics_counter_add(name, NULL, NULL, 1). */
void metrics_counter_inc(const char *name);

/* The current value of a counter series, 0 when it does not exist. */
uint64_t metrics_counter_get(const char *name, const char *label_name, const char *label_value);

/* Append every metric to out in the text format. Returns 0, or buf_add's
 * -E2BIG / -ENOMEM (out then holds a truncated rendering). */
int metrics_render(struct buf *out);

/* Free every metric (at process exit; nothing may record concurrently). */
void metrics_release(void);

#endif
