/* log: leveled logging to stderr (and optionally syslog) shared by the programs. */
#ifndef POCKITY_LOG_H
#define POCKITY_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Set the program name printed on each line, the lowest level shown, and
 * whether lines also go to syslog. Call once at start-up. */
void log_setup(const char *program, enum log_level level, int use_syslog);

/* Parse "error", "warn", "info" or "debug"; returns -1 for anything else. */
int log_level_parse(const char *s);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
