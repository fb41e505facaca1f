/*
 * log.h: diagnostics to stderr.
 *
 * Never pass a PIN, key or token to these functions.  Messages are one line
 * each; the prefix names the program and the level.  Thread-safe (one
 * fprintf per call).
 */
#ifndef KL_LOG_H
#define KL_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_init(const char *progname, enum log_level min);
/* Leaves errno as it found it, so a caller may log and then test it. */
void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Logs and clears the OpenSSL error queue at LOG_LVL_ERROR, prefixed. */
void log_openssl(const char *what);

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif
