/*
 * reconcile.c: the plant registry after an outage ([registry] offline =
 * local, docs/plant.md).
 *
 * A board provisioned while the registry could not be reached passed on
 * this station's own duplicate check; its "registry queued" row (runner.c)
 * puts the device in the queue, which is the audit log itself
 * (audit_registry_queue): nothing is kept anywhere else, so a crash loses
 * nothing.  A thread works the queue whenever the registry answers:
 *
 *   - plant_reconcile records the device as claimed and provisioned then
 *     (a "registry reconciled" row closes it here), or, when the registry
 *     gives the device ID to another board, records a conflict on the
 *     server with both sides;
 *   - then it reads the conflicts this station is part of, on either side,
 *     newer than the last one it wrote down, and for each writes a
 *     "registry conflict" row (which also closes a queued device), logs
 *     it, and emits EV_CONFLICT for the console and the batch output.
 *
 * Every step can run again: the server keeps one conflict per device,
 * station and certificate, and finds a device it already holds with this
 * certificate; the newest conflict id written down here is read back from
 * the log at start ("plant conflict #N: ...").  The thread runs whenever
 * a registry is configured, whatever the offline mode: a station that
 * waits for the registry can still be the other side of a conflict, and
 * a queue left by an earlier run is worked off.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "db/audit.h"
#include "db/plant.h"
#include "station/engine/internal.h"

#define RECONCILE_POLL_MS 2000
#define RECONCILE_BACKOFF_MIN_MS 500
#define RECONCILE_BACKOFF_MAX_MS 10000
#define RECONCILE_CONFLICT_TAG "plant conflict #"

/* One queued device, copied out of its "registry queued" row. */
struct rec_item {
	char device_id[AUDIT_REC_ID];
	int slot;
	char serial[AUDIT_REC_TEXT];
	char key_fpr[AUDIT_REC_FPR];
	char cert_serial[AUDIT_REC_FPR];
	char cert_fpr[AUDIT_REC_FPR];
	char made_at[AUDIT_REC_TIME];
	int reprovision;
};

struct rec_queue {
	struct rec_item *items;	/* AUDIT_EVENTS_MAX of them */
	int n;
};

static struct plant *
rec_plant(struct engine *e)
{
	return e->o.plant_reconcile != NULL ? e->o.plant_reconcile :
	    e->o.plant;
}

static void
rec_copy(char *dst, size_t dstsz, const char *src)
{
	snprintf(dst, dstsz, "%s", src != NULL ? src : "");
}

static int
rec_collect(void *arg, const struct audit_row *row)
{
	struct rec_queue *q = arg;
	struct rec_item *it;

	/* A row without a device or certificate cannot be reconciled (the
	 * engine never writes one); skipped rather than retried forever. */
	if (row->device_id == NULL || row->cert_fpr == NULL ||
	    q->n >= AUDIT_EVENTS_MAX)
		return 0;
	it = &q->items[q->n++];
	memset(it, 0, sizeof(*it));
	rec_copy(it->device_id, sizeof(it->device_id), row->device_id);
	it->slot = (int)row->slot;
	/* The registry's text is UTF-8; a board's raw bytes stay in the
	 * audit log, the registry gets them in words (board_text). */
	rec_copy(it->serial, sizeof(it->serial), row->board_serial);
	(void)board_text(it->serial);
	rec_copy(it->key_fpr, sizeof(it->key_fpr), row->key_fpr);
	rec_copy(it->cert_serial, sizeof(it->cert_serial), row->cert_serial);
	rec_copy(it->cert_fpr, sizeof(it->cert_fpr), row->cert_fpr);
	rec_copy(it->made_at, sizeof(it->made_at), row->time);
	it->reprovision = row->error != NULL && strncmp(row->error,
	    BOARD_REPROVISION_NOTE, strlen(BOARD_REPROVISION_NOTE)) == 0;
	return 0;
}

/* A row of this thread's: slot 0, outside any board's attempt. */
static int
rec_audit(struct engine *e, const char *outcome, const char *serial,
    const char *device_id, const char *key_fpr, const char *cert_serial,
    const char *cert_fpr, const char *note)
{
	const struct config *cfg = e->o.cfg;
	struct audit_event ev = {
		.station = cfg->station_id,
		.operator_name = cfg->operator_name[0] ? cfg->operator_name :
		    NULL,
		.slot = 0,
		.board_serial = serial != NULL && serial[0] ? serial : NULL,
		.device_id = device_id,
		.step = "registry",
		.outcome = outcome,
		.key_fpr = key_fpr != NULL && key_fpr[0] ? key_fpr : NULL,
		.cert_serial = cert_serial != NULL && cert_serial[0] ?
		    cert_serial : NULL,
		.cert_fpr = cert_fpr != NULL && cert_fpr[0] ? cert_fpr : NULL,
		.error = note,
	};
	int r;

	if ((r = audit_append(e->o.audit, &ev, NULL)) != 0)
		log_error("registry: cannot write the audit log: %s (%s)",
		    kl_strerror(r), audit_last_error());
	return r;
}

/* A conflict this station had not written down yet. */
static int
rec_conflict(void *arg, const struct plant_conflict *c)
{
	struct engine *e = arg;
	struct engine_conflict *ec;
	const char *me = e->o.cfg->station_id;
	int ours = strcmp(c->station, me) == 0, r;
	char msg[1400];

	snprintf(msg, sizeof(msg), RECONCILE_CONFLICT_TAG "%" PRId64 ": "
	    "device %s has two certificates: %s%s, slot %d, made it while "
	    "the plant registry was unreachable, at %s (certificate serial "
	    "%s), and the registry gives it to %s%s, slot %d (%s since %s, "
	    "certificate serial %s)", c->id, c->device_id,
	    ours ? "this station " : "station ", ours ? me : c->station,
	    c->slot, c->made_at, c->cert_serial[0] ? c->cert_serial : "?",
	    !ours && strcmp(c->holder_station, me) == 0 ?
	    "this station " : "station ", c->holder_station, c->holder_slot,
	    c->holder_state, c->holder_time, c->holder_cert_serial[0] ?
	    c->holder_cert_serial : "none yet");
	(void)board_text(msg);
	/* Our side's certificate: on the reporting side it also closes the
	 * queued device. */
	if ((r = rec_audit(e, "conflict", ours ? c->board_serial :
	    c->holder_board_serial, c->device_id, ours ? c->key_fpr : NULL,
	    ours ? c->cert_serial : c->holder_cert_serial, ours ?
	    c->cert_fpr : c->holder_cert_fpr, msg)) != 0)
		return r;
	{
		struct log_board lb = { .slot = ours ? c->slot : c->holder_slot,
		    .serial = ours ? c->board_serial : c->holder_board_serial,
		    .device_id = c->device_id };

		log_board_msg(LOG_LVL_ERROR, &lb, "registry: %s", msg);
	}
	pthread_mutex_lock(&e->rec_mu);
	e->rec_last_id = c->id;
	e->rec_conflicts++;
	memmove(&e->rec_list[1], &e->rec_list[0],
	    sizeof(e->rec_list[0]) * (ENGINE_CONFLICTS - 1));
	if (e->rec_n < ENGINE_CONFLICTS)
		e->rec_n++;
	ec = &e->rec_list[0];
	memset(ec, 0, sizeof(*ec));
	ec->id = c->id;
	rec_copy(ec->detected_at, sizeof(ec->detected_at), c->detected_at);
	rec_copy(ec->device_id, sizeof(ec->device_id), c->device_id);
	rec_copy(ec->station, sizeof(ec->station), c->station);
	ec->slot = c->slot;
	rec_copy(ec->cert_serial, sizeof(ec->cert_serial), c->cert_serial);
	rec_copy(ec->holder_station, sizeof(ec->holder_station),
	    c->holder_station);
	ec->holder_slot = c->holder_slot;
	rec_copy(ec->holder_state, sizeof(ec->holder_state),
	    c->holder_state);
	rec_copy(ec->holder_cert_serial, sizeof(ec->holder_cert_serial),
	    c->holder_cert_serial);
	pthread_mutex_unlock(&e->rec_mu);
	engine_note(e, 0, EV_CONFLICT, "", c->device_id, msg);
	return 0;
}

/*
 * The queue, read from the log, and counted for the status; not read at
 * all while it is known to be empty (the usual case: a registry that
 * answers), until a board is queued.
 */
static int
rec_read_queue(struct engine *e, struct rec_queue *q)
{
	int64_t total = 0;
	int r, dirty;

	q->n = 0;
	pthread_mutex_lock(&e->rec_mu);
	dirty = e->rec_dirty || e->rec_queued > 0;
	e->rec_dirty = 0;
	pthread_mutex_unlock(&e->rec_mu);
	if (!dirty)
		return 0;
	if ((r = audit_registry_queue(e->o.audit, rec_collect, q,
	    &total)) != 0) {
		pthread_mutex_lock(&e->rec_mu);
		e->rec_dirty = 1;
		pthread_mutex_unlock(&e->rec_mu);
		return r;
	}
	pthread_mutex_lock(&e->rec_mu);
	e->rec_queued = total;
	pthread_mutex_unlock(&e->rec_mu);
	return 0;
}

/* Whether the registry answered this round, for the status. */
static void
rec_set_offline(struct engine *e, int offline)
{
	pthread_mutex_lock(&e->rec_mu);
	e->registry_offline = offline;
	pthread_mutex_unlock(&e->rec_mu);
}

/* Said at most once a minute: a device that cannot be reconciled is
 * tried at every round, its reason does not change that often. */
static void
rec_log_failure(struct engine *e, const char *device_id, const char *why)
{
	int64_t now = engine_mono_ms();

	if (e->rec_logged_ms != 0 && now - e->rec_logged_ms < 60000) {
		e->rec_unlogged++;
		return;
	}
	log_error("registry: device %s could not be reconciled: %s%s", device_id,
	    why, e->rec_unlogged > 0 ? " (and more failures since the last "
	    "such message)" : "");
	e->rec_logged_ms = now;
	e->rec_unlogged = 0;
}

/*
 * One round: reconcile what is queued, then read new conflicts.  0, or
 * KL_ERR_UNAVAILABLE (try again after a back-off), or another error
 * (said in the log once per round).
 */
static int
rec_round(struct engine *e, struct rec_queue *q)
{
	struct plant *pl = rec_plant(e);
	struct plant_owner owner;
	struct plant_made m;
	char why[600], msg[900];
	int64_t after;
	int i, r, done = 0;

	/* A station whose audit rows the plant store refused must not
	 * push its devices into the registry either. */
	if (e->o.halted != NULL && e->o.halted(e->o.halted_arg, why,
	    sizeof(why)) != 0)
		return KL_ERR_AUDIT_CHAIN;
	if ((r = rec_read_queue(e, q)) != 0) {
		log_error("registry: cannot read the queue in the audit log: "
		    "%s", kl_strerror(r));
		return r;
	}
	for (i = 0; i < q->n; i++) {
		struct rec_item *it = &q->items[i];

		memset(&m, 0, sizeof(m));
		m.device_id = it->device_id;
		m.slot = it->slot;
		m.board_serial = it->serial;
		m.key_fpr = it->key_fpr;
		m.cert_serial = it->cert_serial;
		m.cert_fpr = it->cert_fpr;
		m.made_at = it->made_at;
		m.reprovision = it->reprovision;
		why[0] = '\0';
		r = plant_reconcile(pl, &m, &owner, why, sizeof(why));
		if (r == KL_ERR_UNAVAILABLE) {
			rec_set_offline(e, 1);
			return r;
		}
		rec_set_offline(e, 0);
		/* The conflict is read below; a live claim decides first. */
		if (r == KL_ERR_DUPLICATE || r == KL_ERR_BUSY)
			continue;
		if (r != 0) {
			rec_log_failure(e, it->device_id, why);
			/* Not the device: the registry itself (an old
			 * schema, a lost connection): back off. */
			if (!plant_connected(pl))
				return r;
			continue;
		}
		snprintf(msg, sizeof(msg), "reconciled with the plant "
		    "registry: provisioned in slot %d while it was "
		    "unreachable, at %s; the registry now holds it",
		    it->slot, it->made_at);
		if ((r = rec_audit(e, "reconciled", it->serial, it->device_id,
		    it->key_fpr, it->cert_serial, it->cert_fpr, msg)) != 0)
			return r;
		log_info("registry: device %s %s", it->device_id, msg);
		done++;
	}
	pthread_mutex_lock(&e->rec_mu);
	after = e->rec_last_id;
	pthread_mutex_unlock(&e->rec_mu);
	why[0] = '\0';
	if ((r = plant_conflicts(pl, after, rec_conflict, e, why,
	    sizeof(why))) != 0) {
		if (r == KL_ERR_UNAVAILABLE)
			rec_set_offline(e, 1);
		else
			rec_log_failure(e, "(conflicts)", why[0] ? why :
			    kl_strerror(r));
		return r;
	}
	rec_set_offline(e, 0);
	if (q->n > 0 && (r = rec_read_queue(e, q)) != 0)
		return r;
	if (done > 0)
		log_info("registry: %d devices provisioned offline are now in "
		    "the registry", done);
	return 0;
}

/* Wait up to ms for a wake or stop; 1 when stopping. */
static int
rec_wait(struct engine *e, int ms)
{
	struct timespec ts;
	int stop;

	kl_deadline_ms(&ts, ms);
	pthread_mutex_lock(&e->rec_mu);
	while (!e->rec_stop && !e->rec_wake)
		if (pthread_cond_timedwait(&e->rec_cond, &e->rec_mu,
		    &ts) != 0)
			break;
	e->rec_wake = 0;
	stop = e->rec_stop;
	pthread_mutex_unlock(&e->rec_mu);
	return stop;
}

static void *
rec_main(void *arg)
{
	struct engine *e = arg;
	struct rec_queue q;
	unsigned seed = (unsigned)time(NULL);
	int backoff = 0, r, stop = 0;

	q.n = 0;
	if ((q.items = calloc(AUDIT_EVENTS_MAX, sizeof(*q.items))) == NULL) {
		log_error("registry: reconciliation not started: %s",
		    kl_strerror(KL_ERR_NOMEM));
		return NULL;
	}
	for (;;) {
		r = rec_round(e, &q);
		/* Stopping: that was the last round. */
		if (stop)
			break;
		if (r == KL_ERR_AUDIT_CHAIN) {
			/* Halted: only a restart goes on. */
			stop = rec_wait(e, RECONCILE_POLL_MS);
			if (stop)
				break;
			continue;
		}
		if (r == 0 || r != KL_ERR_UNAVAILABLE) {
			backoff = 0;
			stop = rec_wait(e, RECONCILE_POLL_MS);
			continue;
		}
		backoff = backoff == 0 ? RECONCILE_BACKOFF_MIN_MS :
		    backoff * 2 > RECONCILE_BACKOFF_MAX_MS ?
		    RECONCILE_BACKOFF_MAX_MS : backoff * 2;
		stop = rec_wait(e, backoff / 2 + (int)(rand_r(&seed) %
		    (unsigned)(backoff / 2 + 1)));
		/* Stopping while the registry is away: no last round to
		 * wait a connect timeout for; the queue is in the log. */
		if (stop)
			break;
	}
	free(q.items);
	return NULL;
}

int
reconcile_start(struct engine *e)
{
	char last[AUDIT_REC_ERROR];
	const char *p;
	sigset_t all, old;
	int64_t count = 0;
	int r;

	pthread_mutex_init(&e->rec_mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&e->rec_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	e->rec_init = 1;
	if (rec_plant(e) == NULL)
		return 0;
	/* The first round reads the queue; until it answers, a registry
	 * the station could not reach at start is offline. */
	e->rec_dirty = 1;
	e->registry_offline = !plant_connected(e->o.plant);
	/* Where the conflicts written down so far end. */
	if ((r = audit_registry_conflicts(e->o.audit, &count, last,
	    sizeof(last))) != 0) {
		log_error("registry: cannot read the audit log's conflicts: "
		    "%s", kl_strerror(r));
		return r;
	}
	e->rec_conflicts = count;
	if (strncmp(last, RECONCILE_CONFLICT_TAG,
	    strlen(RECONCILE_CONFLICT_TAG)) == 0) {
		p = last + strlen(RECONCILE_CONFLICT_TAG);
		e->rec_last_id = strtoll(p, NULL, 10);
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&e->rec_thread, NULL, rec_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		log_error("registry: cannot start reconciliation: %s",
		    strerror(r));
		return KL_ERR_INTERNAL;
	}
	e->rec_started = 1;
	return 0;
}

void
reconcile_stop(struct engine *e)
{
	if (!e->rec_init)
		return;
	if (e->rec_started) {
		pthread_mutex_lock(&e->rec_mu);
		e->rec_stop = 1;
		pthread_cond_broadcast(&e->rec_cond);
		pthread_mutex_unlock(&e->rec_mu);
		pthread_join(e->rec_thread, NULL);
		e->rec_started = 0;
		if (e->rec_queued > 0)
			log_warn("registry: %" PRId64 " devices provisioned "
			    "offline wait in the audit log to be reconciled "
			    "at the next start", e->rec_queued);
	}
	pthread_mutex_destroy(&e->rec_mu);
	pthread_cond_destroy(&e->rec_cond);
	e->rec_init = 0;
}

/* A claim found the registry back: work the queue now. */
static void
reconcile_wake_only(struct engine *e)
{
	pthread_mutex_lock(&e->rec_mu);
	e->rec_wake = 1;
	pthread_cond_broadcast(&e->rec_cond);
	pthread_mutex_unlock(&e->rec_mu);
}

void
reconcile_wake(struct engine *e)
{
	if (!e->rec_init)
		return;
	pthread_mutex_lock(&e->rec_mu);
	e->rec_queued++;
	e->rec_dirty = 1;
	/* While the registry is away the thread keeps its back-off;
	 * a claim that finds it back wakes it (reconcile_set_offline). */
	if (!e->registry_offline) {
		e->rec_wake = 1;
		pthread_cond_broadcast(&e->rec_cond);
	}
	pthread_mutex_unlock(&e->rec_mu);
}

void
reconcile_set_offline(struct engine *e, int offline)
{
	int was;

	if (!e->rec_init)
		return;
	pthread_mutex_lock(&e->rec_mu);
	was = e->registry_offline;
	e->registry_offline = offline;
	pthread_mutex_unlock(&e->rec_mu);
	if (was && !offline) {
		log_info("registry: reachable again; boards are claimed in it "
		    "as before");
		reconcile_wake_only(e);
	}
	else if (!was && offline)
		log_warn("registry: unreachable; offline = local: boards go on "
		    "this station's own duplicate check and are reconciled "
		    "later");
}

int
engine_registry_conflicts(struct engine *e, struct engine_conflict *out,
    int max)
{
	int n;

	if (!e->rec_init || max <= 0)
		return 0;
	pthread_mutex_lock(&e->rec_mu);
	n = e->rec_n < max ? e->rec_n : max;
	memcpy(out, e->rec_list, sizeof(*out) * (size_t)n);
	pthread_mutex_unlock(&e->rec_mu);
	return n;
}

/* For engine_status. */
void
reconcile_status(struct engine *e, struct engine_status *s)
{
	if (!e->rec_init)
		return;
	pthread_mutex_lock(&e->rec_mu);
	s->registry_offline = e->registry_offline;
	s->registry_queued = e->rec_queued;
	s->registry_conflicts = e->rec_conflicts;
	pthread_mutex_unlock(&e->rec_mu);
}
