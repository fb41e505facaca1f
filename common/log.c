/* log.c: one-line diagnostics on stderr or to a sink (see log.h). */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include <openssl/err.h>

static const char *log_prog = "keyline";
static enum log_level log_min = LOG_LVL_INFO;
static log_sink_fn log_sink;

static const char *const log_names[] = { "debug", "info", "warning", "error" };

void
log_init(const char *progname, enum log_level min)
{
	if (progname != NULL)
		log_prog = progname;
	log_min = min;
}

const char *
log_progname(void)
{
	return log_prog;
}

void
log_set_sink(log_sink_fn fn)
{
	log_sink = fn;
}

static void
log_emit(enum log_level lvl, const struct log_board *b, const char *fmt,
    va_list ap)
{
	char line[1024];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_sink != NULL)
		log_sink(lvl, b, line);
	else
		fprintf(stderr, "%s: %s: %s\n", log_prog, log_names[lvl],
		    line);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (lvl < log_min)
		return;
	va_start(ap, fmt);
	log_emit(lvl, NULL, fmt, ap);
	va_end(ap);
	/* Callers log first and then look at errno to pick their code. */
	errno = saved;
}

void
log_board_msg(enum log_level lvl, const struct log_board *b, const char *fmt,
    ...)
{
	va_list ap;
	int saved = errno;

	if (lvl < log_min)
		return;
	va_start(ap, fmt);
	log_emit(lvl, b, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_openssl(const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_error("%s: %s", what, buf);
	}
}
