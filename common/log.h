/*
 * log.h: diagnostics to stderr, or to a sink the program installs (the
 * station's systemd journal, station/service.h).
 *
 * Never pass a PIN, key or token to these functions.  Messages are one line
 * each; the prefix names the program and the level.  Thread-safe (one
 * fprintf, or one sink call, per message).
 */
#ifndef KL_LOG_H
#define KL_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

/*
 * Which board a message is about, for a sink that keeps structured
 * fields (the journal's KEYLINE_SLOT, KEYLINE_SERIAL, KEYLINE_DEVICE_ID).
 * slot 0: none; NULL or "": not known yet.  Borrowed for the call.
 */
struct log_board {
	int slot;
	const char *serial;
	const char *device_id;
};

/*
 * Receives each message instead of stderr: lvl, the board or NULL, and the
 * text without prefix or newline.  Called from any thread; must not call
 * log_*.  Borrowed for the call.
 */
typedef void (*log_sink_fn)(enum log_level lvl, const struct log_board *b,
    const char *msg);

void log_init(const char *progname, enum log_level min);
const char *log_progname(void);
/* NULL: stderr again.  Set before threads start, not while they log. */
void log_set_sink(log_sink_fn fn);
/* Leaves errno as it found it, so a caller may log and then test it. */
void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * The same about one board: stderr shows the text only (write the slot
 * into it as usual: "slot 3: ..."); a sink also gets the fields.
 */
void log_board_msg(enum log_level lvl, const struct log_board *b,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Logs and clears the OpenSSL error queue at LOG_LVL_ERROR, prefixed. */
void log_openssl(const char *what);

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif
