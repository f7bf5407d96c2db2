/* log: one line per message, "TIME PROGRAM LEVEL message", written atomically. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "pockity";
static enum log_level log_threshold = LOG_LEVEL_INFO;
static int log_syslog;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(const char *program, enum log_level level, int use_syslog)
{
    log_program = program;
    log_threshold = level;
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(program, LOG_PID, LOG_DAEMON);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_threshold)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2300];
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_program, level_names[level], msg);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    /* One write per line so lines from several threads never interleave. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nothing sensible to do when stderr is gone */
    }
    if (log_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        syslog(prio[level], "%s", msg);
    }
}
