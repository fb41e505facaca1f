/*
 * service.h: the station as a systemd service (docs/install.md).
 *
 * Under systemd (Type=notify, WatchdogSec=, stderr connected to the
 * journal) the line tells the service manager when it is ready, what it
 * is doing (STATUS= with its counts) and that it is alive (WATCHDOG=1
 * from the line's loop, only while the engine answers), and its log lines
 * go to the journal with the board's slot, serial and device ID as fields
 * (KEYLINE_SLOT, KEYLINE_SERIAL, KEYLINE_DEVICE_ID).  Outside systemd
 * every call here does nothing: NOTIFY_SOCKET and JOURNAL_STREAM are
 * unset.  Main thread only, except service_event (the engine's event
 * callback).
 */
#ifndef KL_SERVICE_H
#define KL_SERVICE_H

struct engine;
struct engine_event;

/*
 * When stderr is the journal stream systemd connected (JOURNAL_STREAM
 * names its device and inode), send log lines to the journal from now on,
 * with fields; returns 1 then, else 0.  Call before any thread logs.
 */
int service_journal_init(void);

/* READY=1 and the first STATUS=, once the engine runs the line; reads
 * the watchdog interval (sd_watchdog_enabled). */
void service_ready(struct engine *e);

/* From the line's loop, as often as it likes: STATUS= when the counts
 * change (at most once a second), WATCHDOG=1 every half interval, each
 * after engine_status() answered: a line whose engine lock is stuck
 * stops feeding the watchdog and systemd restarts it. */
void service_tick(struct engine *e);

/* STOPPING=1: the line rolls back or finishes its boards now. */
void service_stopping(void);

/* A board's outcome (passed, failed, already provisioned, in doubt,
 * conflict, info) as a journal entry with its fields; nothing unless
 * service_journal_init() returned 1.  Steps are left to the JSON
 * stream. */
void service_event(const struct engine_event *ev);

#endif
