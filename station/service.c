/*
 * service.c: readiness, status, watchdog and journal fields under systemd
 * (service.h).  libsystemd does the talking; this file decides when.
 */
#include "station/service.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include <systemd/sd-daemon.h>
/* CODE_FILE/CODE_LINE would name this file's sink for every message. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "common/log.h"
#include "station/engine/engine.h"

static int service_journal;		/* log lines go to the journal */
static uint64_t service_wd_usec;	/* 0: no watchdog */
static int64_t service_wd_last_ms, service_status_last_ms;
static char service_status_text[256];

static int64_t
service_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* syslog priorities (sd-journal's PRIORITY=), by enum log_level. */
static const int service_prio[] = { 7, 6, 4, 3 };

/*
 * The log sink: one journal entry per line.  A field is left out rather
 * than sent empty; a journal that refuses the entry gets the line on
 * stderr (the stream systemd also keeps), never silence.
 */
static void
service_journal_sink(enum log_level lvl, const struct log_board *b,
    const char *msg)
{
	char f_msg[1100], f_prio[16], f_id[64], f_slot[32], f_serial[160];
	char f_devid[160];
	struct iovec iov[6];
	int n = 0;

#define SERVICE_FIELD(buf, ...) do {					\
	int len_ = snprintf(buf, sizeof(buf), __VA_ARGS__);		\
	if (len_ > 0) {							\
		iov[n].iov_base = buf;					\
		iov[n].iov_len = (size_t)len_ < sizeof(buf) ?		\
		    (size_t)len_ : sizeof(buf) - 1;			\
		n++;							\
	}								\
} while (0)
	SERVICE_FIELD(f_msg, "MESSAGE=%s", msg);
	SERVICE_FIELD(f_prio, "PRIORITY=%d", service_prio[lvl]);
	SERVICE_FIELD(f_id, "SYSLOG_IDENTIFIER=%s", log_progname());
	if (b != NULL && b->slot > 0)
		SERVICE_FIELD(f_slot, "KEYLINE_SLOT=%d", b->slot);
	if (b != NULL && b->serial != NULL && b->serial[0] != '\0')
		SERVICE_FIELD(f_serial, "KEYLINE_SERIAL=%s", b->serial);
	if (b != NULL && b->device_id != NULL && b->device_id[0] != '\0')
		SERVICE_FIELD(f_devid, "KEYLINE_DEVICE_ID=%s", b->device_id);
#undef SERVICE_FIELD
	if (sd_journal_sendv(iov, n) < 0)
		fprintf(stderr, "%s: %s\n", log_progname(), msg);
}

/* "DEV:INO" in decimal, as systemd writes JOURNAL_STREAM. */
static int
service_parse_stream(const char *v, unsigned long long *dev,
    unsigned long long *ino)
{
	char *end;

	if (v == NULL || v[0] < '0' || v[0] > '9')
		return -1;
	*dev = strtoull(v, &end, 10);
	if (*end != ':' || end[1] < '0' || end[1] > '9')
		return -1;
	*ino = strtoull(end + 1, &end, 10);
	return *end == '\0' ? 0 : -1;
}

int
service_journal_init(void)
{
	unsigned long long dev, ino;
	struct stat sb;

	/* systemd sets JOURNAL_STREAM for the stdout/stderr it connected
	 * to the journal; a child whose stderr was redirected inherits the
	 * variable but not the stream, so compare. */
	if (service_parse_stream(getenv("JOURNAL_STREAM"), &dev, &ino) != 0 ||
	    fstat(2, &sb) != 0 || (unsigned long long)sb.st_dev != dev ||
	    (unsigned long long)sb.st_ino != ino)
		return 0;
	service_journal = 1;
	log_set_sink(service_journal_sink);
	return 1;
}

/* STATUS=: what `systemctl status` shows under the unit's name. */
static void
service_status(struct engine *e, int force)
{
	struct engine_status st;
	char text[sizeof(service_status_text)];
	int64_t now = service_mono_ms();

	if (!force && now - service_status_last_ms < 1000)
		return;
	engine_status(e, &st);
	snprintf(text, sizeof(text), "line %s: %d passed, %d failed, "
	    "%d already provisioned, %d in flight%s%s%s",
	    engine_line_state_name(st.line), st.counts.passed,
	    st.counts.failed, st.counts.already, st.counts.in_flight,
	    st.slots_held > 0 ? "; slots held" : "",
	    st.slots_waiting_ca > 0 ? "; waiting for the CA" : "",
	    st.slots_waiting_registry > 0 ? "; waiting for the registry" :
	    "");
	service_status_last_ms = now;
	if (!force && strcmp(text, service_status_text) == 0)
		return;
	memcpy(service_status_text, text, sizeof(text));
	(void)sd_notifyf(0, "STATUS=%s", text);
}

void
service_ready(struct engine *e)
{
	uint64_t usec = 0;

	/* > 0 only when WATCHDOG_USEC is set for this very process
	 * (WATCHDOG_PID, when present, must be ours). */
	if (sd_watchdog_enabled(0, &usec) > 0)
		service_wd_usec = usec;
	service_status(e, 1);
	(void)sd_notify(0, "READY=1");
	service_wd_last_ms = service_mono_ms();
}

void
service_tick(struct engine *e)
{
	int64_t now;

	service_status(e, 0);
	if (service_wd_usec == 0)
		return;
	now = service_mono_ms();
	/* Half the interval, as sd_watchdog_enabled(3) advises. */
	if ((now - service_wd_last_ms) * 1000 * 2 >= (int64_t)service_wd_usec) {
		(void)sd_notify(0, "WATCHDOG=1");
		service_wd_last_ms = now;
	}
}

void
service_stopping(void)
{
	(void)sd_notify(0, "STOPPING=1\nSTATUS=stopping: boards not yet "
	    "writing roll back, writing ones finish");
}

void
service_event(const struct engine_event *ev)
{
	struct log_board b;
	enum log_level lvl = LOG_LVL_INFO;
	const char *what;

	if (!service_journal)
		return;
	switch (ev->kind) {
	case EV_PASSED:
		what = "passed";
		break;
	case EV_ALREADY:
		what = "already provisioned";
		break;
	case EV_FAILED:
		what = "failed";
		lvl = LOG_LVL_ERROR;
		break;
	case EV_IN_DOUBT:
		what = "in doubt";
		lvl = LOG_LVL_WARN;
		break;
	case EV_CONFLICT:
		what = "conflict";
		lvl = LOG_LVL_WARN;
		break;
	case EV_INFO:
		what = "info";
		break;
	default:
		return;
	}
	b.slot = ev->slot;
	b.serial = ev->serial;
	b.device_id = ev->device_id;
	if (ev->slot > 0 && ev->kind == EV_PASSED)
		log_board_msg(lvl, &b, "slot %d: %s passed (certificate "
		    "serial %s)", ev->slot, ev->device_id,
		    ev->cert_serial != NULL ? ev->cert_serial : "");
	else if (ev->slot > 0)
		log_board_msg(lvl, &b, "slot %d: %s %s%s%s", ev->slot,
		    ev->device_id[0] != '\0' ? ev->device_id : ev->serial,
		    what, ev->message[0] != '\0' ? ": " : "", ev->message);
	else
		log_board_msg(lvl, &b, "device %s %s%s%s", ev->device_id,
		    what, ev->message[0] != '\0' ? ": " : "", ev->message);
}
