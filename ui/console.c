/*
 * console.c: `keyline console --config station.conf [--start]`: the
 * operator's screen over the engine in line mode (docs/console.md).
 *
 * The engine never calls into this file: it runs without an event
 * callback, and the UI thread polls snapshots (engine_status,
 * engine_slots, engine_events, engine_slot_detail) every CON_TICK_MS.
 * Those are short copies under the engine mutex, so a terminal that is
 * slow, stalled or gone (SSH) only ever stalls this thread; the slot
 * threads keep provisioning.  For the same reason stderr, where the
 * engine logs, is sent to a file while the screen is up: a blocking
 * write to a stalled terminal must not happen in a slot thread.
 *
 * Quitting goes through engine_stop(), which rolls back boards that have
 * not started writing and lets writing boards finish; it runs on a helper
 * thread so the screen keeps showing the slots while they settle.
 */
#include "ui/console.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "station/config/config.h"
#include "station/engine/engine.h"
#include "common/err.h"
#include "common/log.h"
#include "station/station.h"
#include "ui/http.h"

#define CON_TICK_MS 200		/* redraw and snapshot period */
#define CON_CELL_MIN 38		/* narrowest grid cell, in columns */
#define CON_EVENTS 512		/* events kept for the pane and details */
#define CON_EV_BATCH 64
#define CON_MIN_COLS 40
#define CON_MIN_LINES 12
#define CON_MSG 256
#define CON_LINE 1024

enum con_mode { CON_GRID = 0, CON_DETAIL };

enum con_pair {
	PAIR_IDLE = 1,
	PAIR_WORKING,
	PAIR_PASSED,
	PAIR_FAILED,
	PAIR_WAITING_CA,
	PAIR_BAR,
	PAIR_WARN,
};

struct con {
	struct station *st;		/* borrowed */
	struct engine *e;		/* borrowed */
	const char *config_path;
	char log_path[PATH_MAX];
	int saved_stderr;		/* -1 when stderr was not redirected */

	/* Snapshots, refreshed every tick (UI thread only). */
	struct engine_status status;
	struct engine_slot_view *slots;	/* cfg->nslots entries */
	int nslots;
	struct engine_event_copy *ev;	/* ring of CON_EVENTS */
	int nev, evhead;		/* count, index of the oldest */
	uint64_t ev_since;
	int show_steps;			/* event pane shows step events too */

	/* Screen state. */
	enum con_mode mode;
	int sel;			/* index into slots */
	int grid_rows, grid_cols, per_page;
	int confirm_quit;
	char msg[CON_MSG];
	int msg_warn;
	int64_t msg_ms;
	int64_t start_ms;

	/* Quitting. */
	int quit;			/* leave the loop */
	int stopping;			/* engine_stop running */
	pthread_t stopper;
	int stopper_started;
	volatile int stop_done;		/* written by the stopper thread */
	int term_gone;			/* no more drawing (SIGHUP, EOF) */
	int fast_err;			/* getch ERRs that returned at once */
};

static volatile sig_atomic_t con_sig;

static void
con_on_signal(int sig)
{
	con_sig = sig;
}

static int64_t
con_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
con_msg(struct con *c, int warn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
con_msg(struct con *c, int warn, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	c->msg_warn = warn;
	c->msg_ms = con_now_ms();
}

/* ---- drawing helpers -------------------------------------------------- */

/*
 * Board text is held to printable ASCII by the engine; this keeps the
 * screen safe whatever reaches it (an escape sequence would otherwise
 * reach the operator's terminal).
 */
static void
con_clean(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

/* Print at (y, x), at most w columns, clipped to the screen. */
static void
con_put(int y, int x, int w, attr_t attr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
con_put(int y, int x, int w, attr_t attr, const char *fmt, ...)
{
	char line[CON_LINE];
	va_list ap;

	if (y < 0 || y >= LINES || x < 0 || x >= COLS)
		return;
	if (w > COLS - x)
		w = COLS - x;
	if (w <= 0)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	con_clean(line);
	attron(attr);
	mvaddnstr(y, x, line, w);
	attroff(attr);
}

/* Fill a whole line with attr (bars). */
static void
con_fill(int y, attr_t attr)
{
	if (y < 0 || y >= LINES)
		return;
	attron(attr);
	mvhline(y, 0, ' ', COLS);
	attroff(attr);
}

static void
con_dur(char *out, size_t outsz, int64_t ms)
{
	int64_t s;

	if (ms < 0)
		ms = 0;
	s = ms / 1000;
	if (ms < 1000)
		snprintf(out, outsz, "%dms", (int)ms);
	else if (ms < 60000)
		snprintf(out, outsz, "%d.%ds", (int)(ms / 1000),
		    (int)(ms % 1000 / 100));
	else if (s < 3600)
		snprintf(out, outsz, "%d:%02d", (int)(s / 60), (int)(s % 60));
	else
		snprintf(out, outsz, "%d:%02d:%02d", (int)(s / 3600),
		    (int)(s / 60 % 60), (int)(s % 60));
}

static void
con_clock(char *out, size_t outsz, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL)
		snprintf(out, outsz, "--:--:--");
	else
		strftime(out, outsz, "%H:%M:%S", &tm);
}

/* A state in a word and a colour: readable with and without colour. */
struct con_state_look {
	const char *word;
	enum con_pair pair;
	attr_t extra;
};

static const struct con_state_look con_looks[] = {
	[SLOT_IDLE] = { "IDLE", PAIR_IDLE, A_DIM },
	[SLOT_WORKING] = { "BUSY", PAIR_WORKING, 0 },
	[SLOT_WAITING_CA] = { "WAIT", PAIR_WAITING_CA, A_BOLD },
	[SLOT_PASSED] = { "PASS", PAIR_PASSED, 0 },
	[SLOT_FAILED] = { "FAIL", PAIR_FAILED, A_BOLD },
	[SLOT_WAITING_REGISTRY] = { "WREG", PAIR_WAITING_CA, A_BOLD },
};

static const struct con_state_look *
con_look(enum slot_state s)
{
	static const struct con_state_look unknown = { "????", PAIR_IDLE, 0 };

	return (unsigned)s <= SLOT__LAST ? &con_looks[s] : &unknown;
}

/* A held slot shows HOLD whatever its last board did: it waits for the
 * operator (a to release). */
static const struct con_state_look *
con_view_look(const struct engine_slot_view *v)
{
	static const struct con_state_look held = { "HOLD", PAIR_FAILED,
		A_BOLD | A_REVERSE };

	return v->held ? &held : con_look(v->state);
}

static attr_t
con_pair_attr(enum con_pair p)
{
	return has_colors() ? COLOR_PAIR(p) : 0;
}

static void
con_colors(void)
{
	if (!has_colors())
		return;
	start_color();
	use_default_colors();
	init_pair(PAIR_IDLE, -1, -1);
	init_pair(PAIR_WORKING, COLOR_CYAN, -1);
	init_pair(PAIR_PASSED, COLOR_GREEN, -1);
	init_pair(PAIR_FAILED, COLOR_WHITE, COLOR_RED);
	init_pair(PAIR_WAITING_CA, COLOR_MAGENTA, -1);
	init_pair(PAIR_BAR, COLOR_BLACK, COLOR_CYAN);
	init_pair(PAIR_WARN, COLOR_YELLOW, -1);
}

/* ---- snapshots --------------------------------------------------------- */

static void
con_snapshot(struct con *c)
{
	struct engine_event_copy batch[CON_EV_BATCH];
	int n, i, at;

	engine_status(c->e, &c->status);
	c->nslots = engine_slots(c->e, c->slots, c->st->cfg->nslots);
	if (c->sel >= c->nslots)
		c->sel = c->nslots > 0 ? c->nslots - 1 : 0;
	do {
		n = engine_events(c->e, c->ev_since, batch, CON_EV_BATCH);
		for (i = 0; i < n; i++) {
			c->ev_since = batch[i].seq;
			con_clean(batch[i].serial);
			con_clean(batch[i].device_id);
			con_clean(batch[i].message);
			at = (c->evhead + c->nev) % CON_EVENTS;
			c->ev[at] = batch[i];
			if (c->nev < CON_EVENTS)
				c->nev++;
			else
				c->evhead = (c->evhead + 1) % CON_EVENTS;
		}
	} while (n == CON_EV_BATCH);
}

/* The k-th newest stored event (0 = newest), or NULL. */
static const struct engine_event_copy *
con_event_newest(const struct con *c, int k)
{
	if (k < 0 || k >= c->nev)
		return NULL;
	return &c->ev[(c->evhead + c->nev - 1 - k) % CON_EVENTS];
}

static const struct engine_slot_view *
con_selected(const struct con *c)
{
	return c->nslots > 0 ? &c->slots[c->sel] : NULL;
}

/* ---- header and footer ------------------------------------------------- */

static void
con_upper(char *out, size_t outsz, const char *in)
{
	size_t i;

	for (i = 0; i + 1 < outsz && in[i] != '\0'; i++)
		out[i] = (in[i] >= 'a' && in[i] <= 'z') ? in[i] - 32 : in[i];
	out[i] = '\0';
}

/*
 * The plant registry at the right end of the header's second line, when
 * it needs the operator: conflicts found after an outage (until the
 * station restarts: the audit log and the registry keep them), or boards
 * going on the local check while it is unreachable.
 */
static void
con_draw_registry(struct con *c)
{
	const struct engine_status *s = &c->status;
	struct engine_conflict cf;
	char reg[160];
	int x;

	if (s->registry_conflicts > 0) {
		if (engine_registry_conflicts(c->e, &cf, 1) == 1)
			snprintf(reg, sizeof(reg), " REGISTRY CONFLICTS %lld: "
			    "%.48s also %.12s by %.48s ",
			    (long long)s->registry_conflicts,
			    cf.device_id, cf.holder_state,
			    strcmp(cf.holder_station, c->st->cfg->station_id) ==
			    0 ? cf.station : cf.holder_station);
		else
			snprintf(reg, sizeof(reg), " REGISTRY CONFLICTS %lld ",
			    (long long)s->registry_conflicts);
	} else if (s->registry_offline || s->registry_queued > 0)
		snprintf(reg, sizeof(reg), " registry %s: %lld queued ",
		    s->registry_offline ? "OFFLINE" : "back",
		    (long long)s->registry_queued);
	else
		return;
	x = COLS - (int)strlen(reg);
	if (x < COLS / 2)
		x = COLS / 2;
	con_put(1, x, COLS - x, A_BOLD | A_REVERSE |
	    con_pair_attr(s->registry_conflicts > 0 ? PAIR_WARN :
	    PAIR_WAITING_CA), "%s", reg);
}

/*
 * Two lines.  The CA state sits at the right end of the first, so it is on
 * screen however long the station, operator and work order are.
 */
static void
con_draw_header(struct con *c, int64_t now)
{
	const struct config *cfg = c->st->cfg;
	const struct engine_status *s = &c->status;
	const char *ca_state = s->ca_state != NULL ? s->ca_state : "?";
	char up[32], line[16], ca[64], yield[16], rate[32], already[32];
	int done = s->counts.passed + s->counts.failed, cax;
	attr_t bar = has_colors() ? COLOR_PAIR(PAIR_BAR) : A_REVERSE;

	con_dur(up, sizeof(up), now - (s->started_ms > 0 ? s->started_ms :
	    c->start_ms));
	if (s->slots_waiting_ca > 0)
		snprintf(ca, sizeof(ca), " CA %s: %d slot(s) waiting ",
		    ca_state, s->slots_waiting_ca);
	else
		snprintf(ca, sizeof(ca), " CA %s ", ca_state);
	cax = COLS - (int)strlen(ca);
	if (cax < COLS / 2)
		cax = COLS / 2;
	con_fill(0, bar);
	con_put(0, 0, cax - 1, bar | A_BOLD,
	    " Keyline %s  operator %s  order %s  up %s  CA %s",
	    cfg->station_id, cfg->operator_name[0] ? cfg->operator_name : "-",
	    cfg->work_order[0] ? cfg->work_order : "-", up,
	    s->ca_name != NULL ? s->ca_name : "?");
	con_put(0, cax, COLS - cax, s->slots_waiting_ca > 0 ? A_BOLD |
	    A_REVERSE | con_pair_attr(PAIR_WAITING_CA) : bar | A_BOLD,
	    "%s", ca);

	con_upper(line, sizeof(line), engine_line_state_name(s->line));
	if (done > 0)
		snprintf(yield, sizeof(yield), "%.1f%%",
		    100.0 * s->counts.passed / done);
	else
		snprintf(yield, sizeof(yield), "-");
	snprintf(rate, sizeof(rate), s->boards_per_hour < 1000 ? "%.1f" :
	    "%.0f", s->boards_per_hour);
	/* Boards that already held their credentials: neither made nor
	 * failed here, so outside the yield. */
	already[0] = '\0';
	if (s->counts.already > 0)
		snprintf(already, sizeof(already), "  already %d",
		    s->counts.already);
	con_put(1, 0, COLS, A_BOLD, " line %s", line);
	con_put(1, 6 + (int)strlen(line), COLS, 0,
	    "  passed %d  failed %d%s  yield %s  in flight %d  %s boards/h",
	    s->counts.passed, s->counts.failed, already, yield,
	    s->counts.in_flight, rate);
	con_draw_registry(c);
}

/*
 * The key table: every key the console knows, its label on screen and its
 * handler.  Keys are looked up here, never in a switch.
 */
struct con_key {
	int keys[4];		/* 0-terminated */
	const char *name;	/* as shown; NULL: not listed */
	const char *what;
	void (*fn)(struct con *c);
};

static void key_run(struct con *c);
static void key_retry(struct con *c);
static void key_ack(struct con *c);
static void key_power(struct con *c);
static void key_detail(struct con *c);
static void key_back(struct con *c);
static void key_up(struct con *c);
static void key_down(struct con *c);
static void key_left(struct con *c);
static void key_right(struct con *c);
static void key_pgdn(struct con *c);
static void key_pgup(struct con *c);
static void key_steps(struct con *c);
static void key_quit(struct con *c);
static void key_redraw(struct con *c);

static const struct con_key con_keys[] = {
	{ { 's', 'S', 0 }, "s", "start/pause", key_run },
	{ { 'r', 'R', 0 }, "r", "retry", key_retry },
	{ { 'a', 'A', 0 }, "a", "ack failure", key_ack },
	{ { 'p', 'P', 0 }, "p", "power-cycle", key_power },
	{ { 'd', '\n', '\r', KEY_ENTER }, "d/Enter", "details", key_detail },
	{ { 27, 0 }, NULL, "back", key_back },
	{ { KEY_UP, 'k', 0 }, "arrows/hjkl", "select", key_up },
	{ { KEY_DOWN, 'j', 0 }, NULL, "down", key_down },
	{ { KEY_LEFT, 'h', 0 }, NULL, "left", key_left },
	{ { KEY_RIGHT, 'l', 0 }, NULL, "right", key_right },
	{ { KEY_NPAGE, ' ', 0 }, "PgDn/PgUp", "page", key_pgdn },
	{ { KEY_PPAGE, 0 }, NULL, "page up", key_pgup },
	{ { 'e', 'E', 0 }, "e", "step events", key_steps },
	{ { 'q', 'Q', 0 }, "q", "quit", key_quit },
	{ { 12, KEY_RESIZE, 0 }, NULL, "redraw", key_redraw },
};

#define CON_NKEYS ((int)(sizeof(con_keys) / sizeof(con_keys[0])))

/* Lay the listed keys out over at most two lines; returns lines used. */
static int
con_keybar_lines(int draw, int y0)
{
	char item[64];
	int i, x = 1, y = 0, len;
	attr_t bar = has_colors() ? COLOR_PAIR(PAIR_BAR) : A_REVERSE;

	if (draw) {
		con_fill(y0, bar);
		con_fill(y0 + 1, bar);
	}
	for (i = 0; i < CON_NKEYS; i++) {
		if (con_keys[i].name == NULL)
			continue;
		len = snprintf(item, sizeof(item), "%s %s", con_keys[i].name,
		    con_keys[i].what);
		if (x > 1 && x + len > COLS - 1) {
			y++;
			x = 1;
		}
		if (draw) {
			con_put(y0 + y, x, len, bar | A_BOLD, "%s",
			    con_keys[i].name);
			con_put(y0 + y, x + (int)strlen(con_keys[i].name),
			    len, bar, " %s", con_keys[i].what);
		}
		x += len + 2;
	}
	return y + 1;
}

static void
con_draw_footer(struct con *c, int y_status, int y_keys, int64_t now)
{
	const struct engine_slot_view *v = con_selected(c);

	if (c->stopping) {
		con_put(y_status, 0, COLS, A_BOLD | con_pair_attr(PAIR_WARN),
		    " stopping: %d board(s) in flight finish or roll back ...",
		    c->status.counts.in_flight);
	} else if (c->confirm_quit) {
		con_put(y_status, 0, COLS, A_BOLD | con_pair_attr(PAIR_WARN),
		    " %d board(s) in flight: quit? They finish or roll back. "
		    "(y/n)", c->status.counts.in_flight);
	} else if (c->msg[0] != '\0' && now - c->msg_ms < 15000) {
		con_put(y_status, 0, COLS,
		    c->msg_warn ? A_BOLD | con_pair_attr(PAIR_WARN) : 0,
		    " %s", c->msg);
	} else if (v != NULL) {
		con_put(y_status, 0, COLS, A_DIM, " slot %d selected  (%s)",
		    v->number, v->device);
	}
	con_keybar_lines(1, y_keys);
}

/* ---- the grid ----------------------------------------------------------- */

/* Completed steps out of the ten before done, for the progress bar. */
static int
con_progress(const struct engine_slot_view *v)
{
	if (v->state == SLOT_PASSED)
		return STEP_DONE;
	if (v->state == SLOT_IDLE && v->started_ms == 0)
		return 0;
	return (unsigned)v->step < STEP__COUNT ? (int)v->step : 0;
}

static void
con_bar(char *out, int w, const struct engine_slot_view *v)
{
	int i, done, fill, mark = -1;

	done = con_progress(v);
	fill = done * w / STEP_DONE;
	if (v->state == SLOT_FAILED || v->state == SLOT_WORKING ||
	    v->state == SLOT_WAITING_CA || v->state == SLOT_WAITING_REGISTRY) {
		mark = done * w / STEP_DONE;
		if (mark >= w)
			mark = w - 1;
	}
	for (i = 0; i < w; i++)
		out[i] = i < fill ? '#' : '.';
	if (mark >= 0)
		out[mark] = v->state == SLOT_FAILED ? 'x' : '>';
	out[w] = '\0';
}

/*
 * One slot in one line.  Wide cells (>= CON_CELL_WIDE): state, serial,
 * step, elapsed, a ten-step bar, device ID and, for a failure, the start
 * of its error.  Narrow cells (80 columns, two per line): the bar becomes
 * "n/10" steps done.  The state word is always there.
 */
#define CON_CELL_WIDE 51

static void
con_draw_cell(struct con *c, int y, int x, int w, int idx, int64_t now)
{
	const struct engine_slot_view *v = &c->slots[idx];
	const struct con_state_look *lk = con_view_look(v);
	char el[24], prog[32], cell[CON_LINE];
	const char *step;
	int selected = idx == c->sel, inner = w - 1, n, sw, room;
	attr_t attr;

	if (v->started_ms == 0)
		snprintf(el, sizeof(el), "-");
	else
		con_dur(el, sizeof(el), (v->finished_ms ? v->finished_ms :
		    now) - v->started_ms);
	if (v->state == SLOT_IDLE && v->started_ms == 0)
		step = "-";
	else
		step = engine_step_name(v->step);
	if (inner >= CON_CELL_WIDE) {
		char bar[16];

		con_bar(bar, 10, v);
		snprintf(prog, sizeof(prog), "[%s]", bar);
		sw = 12;
	} else {
		snprintf(prog, sizeof(prog), "%d/%d", con_progress(v),
		    STEP_DONE);
		/* What is left of the line after the fixed fields. */
		sw = inner - 31;
		sw = sw < 6 ? 6 : sw > 12 ? 12 : sw;
	}
	n = snprintf(cell, sizeof(cell), "%c%2d %s %-*.*s %-8s %5s %6s",
	    selected ? '>' : ' ', v->number, lk->word, sw, sw,
	    v->serial[0] ? v->serial : "-", step, prog, el);
	if (n < 0 || n >= (int)sizeof(cell))
		return;
	room = inner - n;
	if (room >= 8 && v->device_id[0] != '\0')
		n += snprintf(cell + n, sizeof(cell) - (size_t)n, " %s",
		    v->device_id);
	room = inner - n;
	if (room >= 12 && v->state == SLOT_FAILED && v->error[0] != '\0')
		snprintf(cell + n, sizeof(cell) - (size_t)n, "  %s",
		    v->error);

	attr = con_pair_attr(lk->pair) | lk->extra;
	if (selected)
		attr = (attr & ~A_DIM) | A_REVERSE;
	con_put(y, x, inner, attr, "%-*s", inner, cell);
}

static void
con_draw_events(struct con *c, int y0, int rows, int64_t now)
{
	const struct engine_event_copy *ev;
	char t[16];
	int k, y = y0 + 1;

	(void)now;
	con_put(y0, 0, COLS, A_BOLD, "-- events (newest first%s) %.*s",
	    c->show_steps ? ", with steps" : "", COLS,
	    "--------------------------------------------------------------"
	    "--------------------------------------------------------------"
	    "--------------------------------------------------------------");
	for (k = 0; y < y0 + rows && (ev = con_event_newest(c, k)) != NULL;
	    k++) {
		attr_t attr = 0;

		if (ev->kind == EV_STEP && !c->show_steps)
			continue;
		con_clock(t, sizeof(t), ev->time_ms);
		if (ev->kind == EV_FAILED)
			attr = con_pair_attr(PAIR_WARN) | A_BOLD;
		else if (ev->kind == EV_PASSED)
			attr = con_pair_attr(PAIR_PASSED);
		switch (ev->kind) {
		case EV_FAILED:
			con_put(y, 0, COLS, attr, " %s #%-2d %-10s FAILED at "
			    "%s: %s", t, ev->slot, ev->serial[0] ? ev->serial :
			    "-", engine_step_name(ev->step), ev->message[0] ?
			    ev->message : kl_strerror(ev->err));
			break;
		case EV_PASSED:
			con_put(y, 0, COLS, attr, " %s #%-2d %-10s passed  %s",
			    t, ev->slot, ev->serial, ev->device_id);
			break;
		case EV_ALREADY:
			con_put(y, 0, COLS, con_pair_attr(PAIR_PASSED),
			    " %s #%-2d %-10s already provisioned  %s", t,
			    ev->slot, ev->serial, ev->device_id);
			break;
		case EV_IN_DOUBT:
			con_put(y, 0, COLS, con_pair_attr(PAIR_WARN),
			    " %s IN DOUBT %s (board %s): %s", t,
			    ev->device_id[0] ? ev->device_id : "-",
			    ev->serial[0] ? ev->serial : "-", ev->message);
			break;
		case EV_CONFLICT:
			con_put(y, 0, COLS, con_pair_attr(PAIR_WARN) | A_BOLD,
			    " %s CONFLICT %s: %s", t, ev->device_id[0] ?
			    ev->device_id : "-", ev->message);
			break;
		case EV_STEP:
			con_put(y, 0, COLS, A_DIM, " %s #%-2d %-10s step %s",
			    t, ev->slot, ev->serial[0] ? ev->serial : "-",
			    engine_step_name(ev->step));
			break;
		default:
			con_put(y, 0, COLS, attr, " %s #%-2d %-10s %s", t,
			    ev->slot, ev->serial[0] ? ev->serial : "-",
			    ev->message);
			break;
		}
		y++;
	}
	if (c->nev == 0)
		con_put(y, 0, COLS, A_DIM, " (no events yet)");
}

/*
 * Grid layout: cells at least CON_CELL_MIN wide, as few columns as
 * needed to show every slot (one column when they fit: widest cells,
 * with device ID, progress bar and error), slots going down each column.
 * When even the widest grid cannot hold them all, it pages; the page
 * follows the selection.
 */
static void
con_draw_grid_view(struct con *c, int64_t now)
{
	int keys = con_keybar_lines(0, 0);
	int y_keys = LINES - keys, y_status = y_keys - 1;
	int avail = y_status - 3;	/* below header and grid title */
	int maxrows, maxcols, cols, rows, per, page, pages, first, i, w;
	int ev_rows;

	maxcols = COLS / CON_CELL_MIN > 0 ? COLS / CON_CELL_MIN : 1;
	maxrows = avail - 4;		/* keep a title and 3 event lines */
	if (maxrows < 1)
		maxrows = 1;
	for (cols = 1; cols < maxcols; cols++)
		if ((c->nslots + cols - 1) / cols <= maxrows)
			break;
	rows = (c->nslots + cols - 1) / cols;
	if (rows > maxrows)
		rows = maxrows;
	if (rows < 1)
		rows = 1;
	per = rows * cols;
	c->grid_rows = rows;
	c->grid_cols = cols;
	c->per_page = per;
	page = c->sel / per;
	pages = (c->nslots + per - 1) / per;
	first = page * per;
	w = COLS / cols;

	if (pages > 1)
		con_put(2, 0, COLS, A_BOLD, "-- slots %d-%d of %d  (page %d/%d,"
		    " PgDn/PgUp) ---", c->slots[first].number,
		    c->slots[first + per < c->nslots ? first + per - 1 :
		    c->nslots - 1].number, c->nslots, page + 1, pages);
	else
		con_put(2, 0, COLS, A_BOLD, "-- %d slot(s): slot state serial"
		    " step progress elapsed device-id ---", c->nslots);
	for (i = first; i < c->nslots && i < first + per; i++) {
		int k = i - first;

		con_draw_cell(c, 3 + k % rows, (k / rows) * w, w, i, now);
	}
	ev_rows = y_status - (3 + rows);
	con_draw_events(c, 3 + rows, ev_rows, now);
	con_draw_footer(c, y_status, y_keys, now);
}

/* ---- the detail view ---------------------------------------------------- */

/* Word-wrap text at column x, width w, from line y; returns next line. */
static int
con_wrap(int y, int x, int w, int ymax, attr_t attr, const char *text)
{
	size_t len = strlen(text), at = 0, n;

	if (w < 8)
		w = 8;
	while (at < len && y < ymax) {
		n = len - at;
		if (n > (size_t)w) {
			n = (size_t)w;
			while (n > (size_t)w / 2 && text[at + n] != ' ')
				n--;
			if (text[at + n] != ' ')
				n = (size_t)w;
		}
		con_put(y++, x, w, attr, "%.*s", (int)n, text + at);
		at += n;
		while (at < len && text[at] == ' ')
			at++;
	}
	return y;
}

static void
con_draw_detail_view(struct con *c, int64_t now)
{
	const struct engine_slot_view *sel = con_selected(c);
	struct engine_slot_detail d;
	const struct engine_event_copy *ev;
	const struct con_state_look *lk;
	int keys = con_keybar_lines(0, 0);
	int y_keys = LINES - keys, y_status = y_keys - 1, y = 2, i, k;
	char a[24], b[24], t[16];

	if (sel == NULL || engine_slot_detail(c->e, sel->number, &d) != 0) {
		con_put(y, 0, COLS, A_BOLD, " no such slot");
		con_draw_footer(c, y_status, y_keys, now);
		return;
	}
	con_clean(d.view.serial);
	con_clean(d.view.device_id);
	con_clean(d.view.error);
	con_clean(d.cert_serial);
	con_clean(d.key_fpr);
	lk = con_view_look(&d.view);
	con_put(y, 0, COLS, A_BOLD, "-- slot %d details (Esc or d: back, "
	    "arrows: other slot) ---", d.view.number);
	y++;
	con_put(y, 1, 9, 0, "state");
	con_put(y, 11, 6, con_pair_attr(lk->pair) | A_BOLD, "%s", lk->word);
	con_put(y++, 17, COLS - 17, 0, " %s, step %s", engine_state_name(
	    d.view.state), engine_step_name(d.view.step));
	con_put(y++, 1, COLS - 1, 0, "%-9s %s", "device", d.view.device);
	if (d.view.held)
		con_put(y++, 1, COLS - 1, A_BOLD, "%-9s %s (a: release)",
		    "HELD", d.view.hold_reason);
	con_put(y++, 1, COLS - 1, 0, "%-9s %-20s  device ID %s", "board",
	    d.view.serial[0] ? d.view.serial : "-",
	    d.view.device_id[0] ? d.view.device_id : "-");
	if (d.view.started_ms != 0) {
		con_clock(t, sizeof(t), d.view.started_ms);
		con_dur(a, sizeof(a), (d.view.finished_ms ? d.view.finished_ms :
		    now) - d.view.started_ms);
		con_put(y++, 1, COLS - 1, 0, "%-9s %s, %s %s", "started", t,
		    d.view.finished_ms ? "took" : "running for", a);
	}
	if (d.cert_serial[0] != '\0')
		con_put(y++, 1, COLS - 1, 0, "%-9s serial %s", "cert",
		    d.cert_serial);
	if (d.key_fpr[0] != '\0')
		con_put(y++, 1, COLS - 1, 0, "%-9s sha256 %s", "key",
		    d.key_fpr);
	if (d.view.error[0] != '\0' || d.view.state == SLOT_FAILED) {
		con_put(y, 1, 9, A_BOLD, "error");
		y = con_wrap(y, 11, COLS - 12, y_status - 2,
		    A_BOLD | con_pair_attr(PAIR_WARN), d.view.error[0] ?
		    d.view.error : "(no reason recorded)");
	}
	if (y < y_status - 1)
		con_put(y++, 1, COLS - 1, A_BOLD, "%-10s %-9s %-9s %s", "step",
		    "start", "took", "result");
	for (i = 0; i < d.nsteps && i < STEP__COUNT && y < y_status; i++) {
		const struct engine_step_rec *s = &d.steps[i];

		snprintf(a, sizeof(a), "+");
		con_dur(a + 1, sizeof(a) - 1, s->start_ms - d.view.started_ms);
		if (s->end_ms != 0)
			con_dur(b, sizeof(b), s->end_ms - s->start_ms);
		else
			snprintf(b, sizeof(b), "...");
		con_put(y++, 1, COLS - 1, s->failed ? A_BOLD |
		    con_pair_attr(PAIR_WARN) : 0, "%-10s %-9s %-9s %s",
		    engine_step_name(s->step), a, b, s->failed ? "FAILED" :
		    s->end_ms != 0 ? "ok" : "running");
	}
	if (d.nsteps == 0 && y < y_status)
		con_put(y++, 1, COLS - 1, A_DIM, "(no board in this slot yet)");
	/* This slot's recent events, below the steps. */
	if (y < y_status - 1) {
		con_put(y++, 0, COLS, A_BOLD, "-- events of slot %d ---",
		    d.view.number);
		for (k = 0; y < y_status && (ev = con_event_newest(c, k)) !=
		    NULL; k++) {
			if (ev->slot != d.view.number || (ev->kind == EV_STEP &&
			    !c->show_steps))
				continue;
			con_clock(t, sizeof(t), ev->time_ms);
			con_put(y++, 0, COLS, 0, " %s %-6s %-8s %s", t,
			    engine_event_kind_name(ev->kind),
			    engine_step_name(ev->step), ev->kind == EV_FAILED &&
			    ev->message[0] == '\0' ? kl_strerror(ev->err) :
			    ev->message);
		}
	}
	con_draw_footer(c, y_status, y_keys, now);
}

static void
con_draw(struct con *c)
{
	int64_t now = con_now_ms();

	erase();
	if (COLS < CON_MIN_COLS || LINES < CON_MIN_LINES) {
		con_put(0, 0, COLS, A_BOLD, "keyline console: terminal too "
		    "small (%dx%d, need %dx%d)", COLS, LINES, CON_MIN_COLS,
		    CON_MIN_LINES);
		con_put(1, 0, COLS, 0, "passed %d failed %d in flight %d",
		    c->status.counts.passed, c->status.counts.failed,
		    c->status.counts.in_flight);
		con_put(2, 0, COLS, 0, "q quit");
		refresh();
		return;
	}
	con_draw_header(c, now);
	if (c->mode == CON_DETAIL)
		con_draw_detail_view(c, now);
	else
		con_draw_grid_view(c, now);
	refresh();
}

/* ---- key handlers ------------------------------------------------------- */

static void
key_run(struct con *c)
{
	if (c->status.line == LINE_RUNNING) {
		engine_set_running(c->e, 0);
		con_msg(c, 0, "line paused: slots finish their board and start "
		    "no new one");
	} else {
		engine_set_running(c->e, 1);
		con_msg(c, 0, "line running");
	}
}

/* Operator actions share one shape: call, then say what happened. */
struct con_action {
	const char *verb;
	int (*fn)(struct engine *e, int n);
	const char *invalid;	/* KL_ERR_INVALID in words */
};

static void
con_act(struct con *c, const struct con_action *a)
{
	const struct engine_slot_view *v = con_selected(c);
	int r;

	if (v == NULL)
		return;
	r = a->fn(c->e, v->number);
	if (r == 0)
		con_msg(c, 0, "slot %d: %s", v->number, a->verb);
	else if (r == KL_ERR_UNSUPPORTED)
		con_msg(c, 1, "slot %d: power switching not supported on this "
		    "jig", v->number);
	else if (r == KL_ERR_INVALID)
		con_msg(c, 1, "slot %d: %s", v->number, a->invalid);
	else
		con_msg(c, 1, "slot %d: %s", v->number, kl_strerror(r));
}

static void
key_retry(struct con *c)
{
	static const struct con_action a = { "retry requested", engine_retry,
	    "nothing to retry (only a failed board is retried)" };

	con_act(c, &a);
}

static void
key_ack(struct con *c)
{
	static const struct con_action a = { "acknowledged (a held slot is "
	    "released)", engine_ack, "no failure or hold to acknowledge" };

	con_act(c, &a);
}

static void
key_power(struct con *c)
{
	static const struct con_action a = { "power cycle requested",
	    engine_power_cycle, "cannot power-cycle in this state" };

	con_act(c, &a);
}

static void
key_detail(struct con *c)
{
	c->mode = c->mode == CON_DETAIL ? CON_GRID : CON_DETAIL;
}

static void
key_back(struct con *c)
{
	c->mode = CON_GRID;
}

static void
con_select(struct con *c, int to)
{
	if (c->nslots == 0)
		return;
	if (to < 0)
		to = 0;
	if (to >= c->nslots)
		to = c->nslots - 1;
	c->sel = to;
}

static void
key_up(struct con *c)
{
	con_select(c, c->sel - 1);
}

static void
key_down(struct con *c)
{
	con_select(c, c->sel + 1);
}

static void
key_left(struct con *c)
{
	con_select(c, c->sel - (c->grid_rows > 0 ? c->grid_rows : 1));
}

static void
key_right(struct con *c)
{
	con_select(c, c->sel + (c->grid_rows > 0 ? c->grid_rows : 1));
}

static void
key_pgdn(struct con *c)
{
	con_select(c, c->sel + (c->per_page > 0 ? c->per_page : 1));
}

static void
key_pgup(struct con *c)
{
	con_select(c, c->sel - (c->per_page > 0 ? c->per_page : 1));
}

static void
key_steps(struct con *c)
{
	c->show_steps = !c->show_steps;
}

static void *
con_stopper(void *arg)
{
	struct con *c = arg;

	engine_stop(c->e);
	__atomic_store_n(&c->stop_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Stop the line on a helper thread; the screen keeps showing the slots. */
static void
con_begin_stop(struct con *c)
{
	if (c->stopping)
		return;
	c->stopping = 1;
	c->confirm_quit = 0;
	if (pthread_create(&c->stopper, NULL, con_stopper, c) == 0) {
		c->stopper_started = 1;
		return;
	}
	/* No thread: stop here; the screen shows "stopping" meanwhile. */
	if (!c->term_gone)
		con_draw(c);
	engine_stop(c->e);
	c->stop_done = 1;
}

static void
key_quit(struct con *c)
{
	if (c->status.counts.in_flight > 0) {
		c->confirm_quit = 1;
		return;
	}
	con_begin_stop(c);
}

static void
key_redraw(struct con *c)
{
	(void)c;
	clear();
}

static void
con_key(struct con *c, int ch)
{
	int i, j;

	if (c->stopping)
		return;
	if (c->confirm_quit) {
		if (ch == 'y' || ch == 'Y')
			con_begin_stop(c);
		else if (ch != KEY_RESIZE) {
			c->confirm_quit = 0;
			con_msg(c, 0, "quit cancelled");
		}
		return;
	}
	for (i = 0; i < CON_NKEYS; i++)
		for (j = 0; j < 4 && con_keys[i].keys[j] != 0; j++)
			if (con_keys[i].keys[j] == ch) {
				con_keys[i].fn(c);
				return;
			}
}

/* ---- set-up and the loop ------------------------------------------------- */

/*
 * Engine logs go to stderr.  While the screen is up they would scribble on
 * it, and a stalled terminal would block the slot thread that logs, so
 * they go to console.log beside station.conf instead.
 */
static void
con_redirect_stderr(struct con *c)
{
	char dir[PATH_MAX];
	char *slash;
	int fd;

	c->saved_stderr = -1;
	if (!isatty(STDERR_FILENO))
		return;
	snprintf(dir, sizeof(dir), "%s", c->config_path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((size_t)snprintf(c->log_path, sizeof(c->log_path), "%s/console.log",
	    dir) >= sizeof(c->log_path) ||
	    (fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
	    0600)) < 0) {
		snprintf(c->log_path, sizeof(c->log_path), "/dev/null");
		if ((fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
			return;
	}
	fflush(stderr);
	c->saved_stderr = dup(STDERR_FILENO);
	if (c->saved_stderr < 0 || dup2(fd, STDERR_FILENO) < 0) {
		if (c->saved_stderr >= 0)
			close(c->saved_stderr);
		c->saved_stderr = -1;
		c->log_path[0] = '\0';
	}
	close(fd);
}

static void
con_restore_stderr(struct con *c)
{
	if (c->saved_stderr < 0)
		return;
	fflush(stderr);
	dup2(c->saved_stderr, STDERR_FILENO);
	close(c->saved_stderr);
	c->saved_stderr = -1;
}

static void
con_signals(void)
{
	struct sigaction sa;

	/* Installed before the screen starts, so ncurses keeps ours. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = con_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void
con_signals_default(void)
{
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGINT, SIG_DFL);
}

/* A signal arrived: SIGINT asks like q; SIGTERM and SIGHUP stop at once. */
static void
con_handle_signal(struct con *c)
{
	int sig = con_sig;

	con_sig = 0;
	if (sig == SIGINT) {
		if (c->confirm_quit)
			con_begin_stop(c);
		else
			key_quit(c);
		return;
	}
	if (sig == SIGHUP)
		c->term_gone = 1;	/* the terminal (SSH) is gone */
	con_begin_stop(c);
}

static int64_t
con_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
con_loop(struct con *c)
{
	int64_t t0, last = 0;
	int ch;

	timeout(CON_TICK_MS);
	while (!c->quit) {
		if (con_sig != 0)
			con_handle_signal(c);
		if (c->stopping && __atomic_load_n(&c->stop_done,
		    __ATOMIC_ACQUIRE)) {
			c->quit = 1;
			break;
		}
		if (c->term_gone) {
			/* Nothing to draw on: wait for the stop. */
			con_begin_stop(c);
			usleep(CON_TICK_MS * 1000);
			continue;
		}
		if (con_mono_ms() - last >= CON_TICK_MS) {
			con_snapshot(c);
			con_draw(c);
			last = con_mono_ms();
		}
		t0 = con_mono_ms();
		ch = getch();
		if (ch == ERR) {
			/* A closed terminal makes getch fail at once, every
			 * time; do not spin on it. */
			if (con_mono_ms() - t0 < CON_TICK_MS / 4 && con_sig == 0) {
				if (++c->fast_err > 50)
					c->term_gone = 1;
			} else {
				c->fast_err = 0;
			}
			continue;
		}
		c->fast_err = 0;
		con_key(c, ch);
		con_snapshot(c);
		con_draw(c);
		last = con_mono_ms();
	}
}

int
console_run(struct station *st, struct engine *e, const char *config_path,
    int start)
{
	struct con *c;
	struct engine_counts counts;
	SCREEN *scr = NULL;
	int r, rc = 2;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		fprintf(stderr, "keyline console: out of memory\n");
		return 1;
	}
	c->saved_stderr = -1;
	c->st = st;
	c->e = e;
	c->config_path = config_path;
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr, "keyline console: needs a terminal (keyline "
		    "batch runs without one)\n");
		goto out;
	}
	c->slots = calloc((size_t)c->st->cfg->nslots + 1, sizeof(*c->slots));
	c->ev = calloc(CON_EVENTS, sizeof(*c->ev));
	if (c->slots == NULL || c->ev == NULL) {
		fprintf(stderr, "keyline console: out of memory\n");
		rc = 1;
		goto out;
	}

	con_signals();
	/* The terminal's character set only (ncursesw needs it): numbers
	 * stay "C" for the status API, the audit log and batch JSON, which
	 * machines read from this same process. */
	setlocale(LC_CTYPE, "");
	con_redirect_stderr(c);
	if ((scr = newterm(NULL, stdout, stdin)) == NULL) {
		con_restore_stderr(c);
		fprintf(stderr, "keyline console: cannot drive this terminal "
		    "(TERM=%s)\n", getenv("TERM") ? getenv("TERM") : "");
		rc = 2;
		goto out;
	}
	set_term(scr);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	curs_set(0);
	set_escdelay(50);
	con_colors();
	c->start_ms = con_now_ms();

	if ((r = engine_start(c->e)) != 0) {
		endwin();
		con_restore_stderr(c);
		fprintf(stderr, "keyline console: cannot start the line: %s\n",
		    kl_strerror(r));
		rc = 1;
		goto out;
	}
	if (start) {
		engine_set_running(c->e, 1);
		con_msg(c, 0, "line running (s pauses it)");
	} else {
		con_msg(c, 0, "line paused: press s to start it");
	}
	if (c->saved_stderr >= 0)
		log_info("console started; station %s", c->st->cfg->station_id);

	con_loop(c);
	if (c->stopper_started)
		pthread_join(c->stopper, NULL);
	endwin();
	con_restore_stderr(c);
	engine_counts(c->e, &counts);
	printf("keyline console: line stopped: %d passed, %d failed, "
	    "%d already, %d in flight%s%s\n", counts.passed,
	    counts.failed, counts.already, counts.in_flight,
	    c->log_path[0] ? "; log: " : "", c->log_path);
	rc = 0;
out:
	con_signals_default();
	if (scr != NULL)
		delscreen(scr);
	free(c->slots);
	free(c->ev);
	free(c);
	return rc;
}
