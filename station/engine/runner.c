/*
 * runner.c: one board from start to end in its slot (internal.h).
 *
 * Each slot thread walks one board through the step table in a straight
 * line; every step either fills the board context or fails the board with
 * a reason in words.  Nothing reaches the board's import directory until
 * the certificate has been issued, recorded in the audit log and
 * validated, and files are staged and then committed together so a
 * failure leaves no partial file behind.
 */
#include "station/engine/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "db/audit.h"
#include "station/ca/certcheck.h"
#include "station/config/config.h"
#include "station/ca/ca.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "common/log.h"

/* Wall clock: what events, views and the audit log show. */
int64_t
engine_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* For deadlines and sleeps: an NTP step of the wall clock (a station PC
 * just booted) must not end a CA wait at once or stretch it by hours. */
int64_t
engine_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
engine_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * n] = '\0';
}

int
engine_sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned int len = 32;

	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? 0 :
	    KL_ERR_CRYPTO;
}

/* ---- events and audit ---------------------------------------------- */

const double engine_metric_buckets_ms[ENGINE_BUCKETS - 1] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000, 60000,
};

/* Under e->mu. */
static void
engine_histogram_observe(struct engine_histogram *h, double ms)
{
	int i;

	for (i = 0; i < ENGINE_BUCKETS - 1; i++)
		if (ms <= engine_metric_buckets_ms[i])
			h->bucket[i]++;
	h->bucket[ENGINE_BUCKETS - 1]++;
	h->count++;
	h->sum_ms += ms;
}

/* Under e->mu: keep a copy of ev in the ring. */
void
engine_ring_put(struct engine *e, const struct engine_event *ev)
{
	struct engine_event_copy *r = &e->ring[ev->seq % ENGINE_RING];

	r->seq = ev->seq;
	r->time_ms = ev->time_ms;
	r->slot = ev->slot;
	r->kind = ev->kind;
	r->step = ev->step;
	r->err = ev->err;
	snprintf(r->serial, sizeof(r->serial), "%.*s",
	    (int)sizeof(r->serial) - 1, ev->serial);
	snprintf(r->device_id, sizeof(r->device_id), "%.*s",
	    (int)sizeof(r->device_id) - 1, ev->device_id);
	snprintf(r->message, sizeof(r->message), "%.*s",
	    (int)sizeof(r->message) - 1, ev->message);
}

void
board_emit(struct board *b, enum engine_event_kind kind, int err,
    const char *msg)
{
	struct engine *e = b->e;
	const struct link_stats *st = b->link != NULL ? link_stats(b->link) :
	    NULL;
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.time_ms = engine_now_ms();
	ev.slot = b->slot->cs->number;
	ev.kind = kind;
	ev.step = b->step;
	ev.serial = b->serial;
	ev.device_id = b->device_id;
	ev.message = msg != NULL ? msg : "";
	ev.err = err;
	ev.elapsed_ms = ev.time_ms - b->t0;
	ev.cert_serial = b->cert_serial;
	ev.cert_fpr = b->cert_fpr;
	ev.key_fpr = b->key_fpr;
	if (st != NULL) {
		ev.bytes_tx = st->bytes_tx;
		ev.bytes_rx = st->bytes_rx;
		ev.retries = st->retries;
	}
	/* A consumer that stops reading (batch's stdout) holds up the slots
	 * that emit, as intended, but not the snapshots front-ends take
	 * under mu. */
	pthread_mutex_lock(&e->emit_mu);
	pthread_mutex_lock(&e->mu);
	ev.seq = ++e->event_seq;
	engine_ring_put(e, &ev);
	pthread_mutex_unlock(&e->mu);
	if (e->o.on_event != NULL)
		e->o.on_event(e->o.arg, &ev);
	pthread_mutex_unlock(&e->emit_mu);
}

X509 *
board_x509(struct board *b)
{
	if (b->x509 == NULL && b->cert != NULL)
		b->x509 = certcheck_parse_der(b->cert, b->cert_len);
	return b->x509;
}

/* The board's fields for a log sink (the journal's KEYLINE_SLOT, ...). */
const struct log_board *
board_log_of(const struct board *b, struct log_board *lb)
{
	lb->slot = b->slot->cs->number;
	lb->serial = b->serial;
	lb->device_id = b->device_id;
	return lb;
}

/* Steps whose "ok" row must be durable before the next step starts. */
static int
step_row_durable(enum engine_step s)
{
	return s == STEP_IDENTIFY || s == STEP_CA;
}

/*
 * A row of this board's: written and durable before this returns (row
 * NULL or its id), or with later set queued to go with the next durable
 * row of any slot (audit_append_later: for progress rows that gate
 * nothing outside the station).
 */
static int
board_audit_put(struct board *b, const char *step, const char *outcome,
    const char *error, int64_t *row, int later)
{
	const struct config *cfg = b->e->o.cfg;
	struct audit_event ev = {
		.station = cfg->station_id,
		.operator_name = cfg->operator_name[0] ? cfg->operator_name :
		    NULL,
		.slot = b->slot->cs->number,
		.board_serial = b->serial[0] ? b->serial : NULL,
		.device_id = b->device_id[0] ? b->device_id : NULL,
		.step = step,
		.outcome = outcome,
		.key_fpr = b->key_fpr[0] ? b->key_fpr : NULL,
		.cert_serial = b->cert_serial[0] ? b->cert_serial : NULL,
		.cert_fpr = b->cert_fpr[0] ? b->cert_fpr : NULL,
		.ca = b->step >= STEP_CA ? b->e->o.ca->name : NULL,
		.error = error,
	};
	int r;

	r = later ? audit_append_later(b->e->o.audit, &ev) :
	    audit_append(b->e->o.audit, &ev, row);
	if (r != 0) {
		struct log_board lb;

		log_board_msg(LOG_LVL_ERROR, board_log_of(b, &lb),
		    "slot %d: cannot write the audit log: %s", ev.slot,
		    kl_strerror(r));
		/* The first failure names the cause (an I/O error, a full
		 * disk, with the path); the caller's words follow it. */
		(void)board_fail(b, r, "audit log write failed (%s)",
		    audit_last_error());
	}
	return r;
}

int
board_audit_row(struct board *b, const char *step, const char *outcome,
    const char *error, int64_t *row)
{
	return board_audit_put(b, step, outcome, error, row, 0);
}

int
board_audit(struct board *b, const char *step, const char *outcome,
    const char *error)
{
	return board_audit_row(b, step, outcome, error, NULL);
}

/* Record a failure reason (first one wins) and return err. */
int
board_fail(struct board *b, int err, const char *fmt, ...)
{
	va_list ap;

	if (b->why[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(b->why, sizeof(b->why), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* Under e->mu: close the running step's record. */
static void
slot_end_step(struct engine *e, struct engine_slot *sl, int64_t now,
    int failed)
{
	struct engine_step_rec *rec;

	if (sl->nsteps == 0)
		return;
	rec = &sl->steps[sl->nsteps - 1];
	if (rec->end_ms != 0)
		return;
	rec->end_ms = now;
	rec->failed = failed;
	engine_histogram_observe(&e->metrics.step[rec->step],
	    (double)(now - rec->start_ms));
}

static void
board_set_step(struct board *b, enum engine_step s)
{
	struct engine *e = b->e;
	struct engine_slot *sl = b->slot;
	int64_t now = engine_now_ms();

	b->step = s;
	pthread_mutex_lock(&e->mu);
	slot_end_step(e, sl, now, 0);
	if (sl->nsteps < STEP__COUNT) {
		sl->steps[sl->nsteps].step = s;
		sl->steps[sl->nsteps].start_ms = now;
		sl->steps[sl->nsteps].end_ms = s == STEP_DONE ? now : 0;
		sl->steps[sl->nsteps].failed = 0;
		sl->nsteps++;
	}
	b->slot->view.step = s;
	snprintf(b->slot->view.serial, sizeof(b->slot->view.serial), "%s",
	    b->serial);
	snprintf(b->slot->view.device_id, sizeof(b->slot->view.device_id),
	    "%s", b->device_id);
	pthread_mutex_unlock(&e->mu);
	board_emit(b, EV_STEP, 0, NULL);
}

/*
 * Text from a board goes into JSON, the audit log and the console: keep
 * printable ASCII, replace anything else with '?'.  Returns whether the
 * text was clean.
 */
int
board_text(char *s)
{
	int clean = 1;

	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
			*s = '?';
			clean = 0;
		}
	}
	return clean;
}

/* ---- link exchanges --------------------------------------------------- */

int
board_call(struct board *b, uint8_t type, int timeout_ms)
{
	char remote[PROTO_MAX_STR + 64];
	int r;

	remote[0] = '\0';
	r = link_call(b->link, type, &b->req, &b->resp, timeout_ms, remote,
	    sizeof(remote));
	buf_reset(&b->req);
	if (r == KL_ERR_REMOTE) {
		(void)board_text(remote);
		return board_fail(b, r, "board refused %s: %s",
		    proto_type_name(type), remote);
	}
	if (r == KL_ERR_CRC)
		return board_fail(b, r, "%s exchange failed: the line is too "
		    "noisy (%d resends, all corrupt)",
		    proto_type_name(type), b->e->o.cfg->resends);
	if (r == KL_ERR_TIMEOUT)
		return board_fail(b, r, "%s exchange failed: no answer in %d "
		    "attempts of %d ms", proto_type_name(type),
		    b->e->o.cfg->attempts, timeout_ms);
	if (r != 0)
		return board_fail(b, r, "%s exchange failed: %s",
		    proto_type_name(type), kl_strerror(r));
	return 0;
}

/* Shorthands for reading the answer in b->resp. */
int
board_resp_str(struct board *b, uint8_t tag, char *out, size_t outsz)
{
	return proto_get_str(b->resp.data, b->resp.len, tag, out, outsz);
}

int
board_resp_bytes(struct board *b, uint8_t tag, size_t max, const uint8_t **p,
    size_t *n)
{
	return proto_get_bytes(b->resp.data, b->resp.len, tag, max, p, n);
}

int
engine_dup_bytes(const uint8_t *p, size_t n, uint8_t **out)
{
	if ((*out = OPENSSL_malloc(n > 0 ? n : 1)) == NULL)
		return KL_ERR_NOMEM;
	memcpy(*out, p, n);
	return 0;
}

/*
 * Sleep up to ms in the slot, in slices short enough to notice an
 * operator stop (a signal handler cannot wake a condition variable).
 */
int
board_sleep(struct board *b, int64_t ms)
{
	struct engine *e = b->e;
	int64_t until = engine_mono_ms() + ms, left;

	pthread_mutex_lock(&e->mu);
	while (!e->cancel && (left = until - engine_mono_ms()) > 0)
		engine_wait(e, left > 200 ? 200 : (int)left);
	pthread_mutex_unlock(&e->mu);
	return e->cancel ? KL_ERR_CANCELLED : 0;
}

/*
 * The plant registry cannot be reached (KL_ERR_UNAVAILABLE): wait for it
 * as for a CA, in the "waiting for registry" state, with back-off (0.5 s
 * doubling to 30 s, half of it random) until [registry] wait_deadline_s,
 * the wait and the resumption audited and shown.  op is tried first at
 * once; its last result comes back (KL_ERR_UNAVAILABLE after the
 * deadline, KL_ERR_CANCELLED on an operator stop).  what names the call
 * in the words ("claim", "record of the pass").
 */
#define REGISTRY_RETRY_BASE_MS 500
#define REGISTRY_RETRY_MAX_MS 30000

int
board_registry_wait(struct board *b, const char *what,
    int (*op)(struct board *, char *, size_t), char *why, size_t whysz)
{
	const struct config *cfg = b->e->o.cfg;
	int64_t t0 = engine_mono_ms(), deadline, delay = REGISTRY_RETRY_BASE_MS,
	    sleep_ms;
	char msg[800];
	uint32_t rnd;
	int r, tries = 0, waiting = 0;

	deadline = t0 + (int64_t)cfg->registry_wait_deadline_s * 1000;
	for (;;) {
		why[0] = '\0';
		tries++;
		if ((r = op(b, why, whysz)) != KL_ERR_UNAVAILABLE)
			break;
		(void)board_text(why);
		if (engine_mono_ms() >= deadline)
			break;
		if (!waiting) {
			waiting = 1;
			board_set_state(b, SLOT_WAITING_REGISTRY);
			snprintf(msg, sizeof(msg), "waiting for the plant "
			    "registry (%s): %s", what, why);
			(void)board_audit(b, "registry", "waiting", msg);
			board_emit(b, EV_INFO, 0, msg);
		}
		if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
			rnd = (uint32_t)engine_now_ms();
		sleep_ms = delay / 2 + (int64_t)(rnd % (uint32_t)(delay / 2 + 1));
		if (sleep_ms > deadline - engine_mono_ms())
			sleep_ms = deadline - engine_mono_ms();
		if ((r = board_sleep(b, sleep_ms > 0 ? sleep_ms : 0)) != 0) {
			snprintf(why, whysz, "stopped by the operator while "
			    "waiting for the plant registry");
			break;
		}
		delay = delay * 2 > REGISTRY_RETRY_MAX_MS ?
		    REGISTRY_RETRY_MAX_MS : delay * 2;
	}
	if (waiting) {
		board_set_state(b, SLOT_WORKING);
		if (r != 0)
			snprintf(msg, sizeof(msg), "plant registry: gave up the "
			    "%s after %.1f s (%d tries): %s", what,
			    (double)(engine_mono_ms() - t0) / 1000.0, tries,
			    why);
		else
			snprintf(msg, sizeof(msg), "plant registry answered "
			    "after %.1f s (%d tries)",
			    (double)(engine_mono_ms() - t0) / 1000.0, tries);
		(void)board_audit(b, "registry", r == 0 ? "info" : "failed",
		    msg);
		board_emit(b, EV_INFO, r, msg);
	}
	return r;
}

void
board_set_state(struct board *b, enum slot_state st)
{
	pthread_mutex_lock(&b->e->mu);
	b->slot->view.state = st;
	pthread_mutex_unlock(&b->e->mu);
}

/* ---- one board ---------------------------------------------------------- */

void
board_cleanup(struct board *b)
{
	struct engine *e = b->e;

	if (b->reserved) {
		pthread_mutex_lock(&e->mu);
		e->inflight[b->slot - e->slots][0] = '\0';
		pthread_mutex_unlock(&e->mu);
	}
	link_close(b->link);
	OPENSSL_free(b->spki);
	OPENSSL_free(b->keygen_csr);
	OPENSSL_free(b->csr);
	EVP_PKEY_free(b->csr_key);
	X509_free(b->x509);
	OPENSSL_free(b->cert);
	buf_free(&b->req);
	buf_free(&b->resp);
}

static int
board_cancelled(struct board *b)
{
	if (!b->e->cancel)
		return 0;
	return board_fail(b, KL_ERR_CANCELLED,
	    "stopped by the operator before anything was written");
}

/*
 * After a failure, take back what the station wrote.  Staged files are
 * discarded (ABORT).  Once credentials may be in place (the certificate
 * object was sent, files were committed, or a re-provisioned board just
 * got a new key, so its old files no longer match it) the three files and
 * the certificate object are removed too, client.pem first: aktualizr
 * takes it as the sign that credentials are there.  The key pair stays;
 * the next provisioning replaces it.  Best effort: one attempt each, and
 * a board that is gone keeps what it has.  Beyond staged files, what
 * happened is appended to b->why and recorded in a "clear" audit row.
 */
#define ENGINE_CLEAR_RESENDS 16

static void
board_clear(struct board *b)
{
	static const char *const names[] = {
		"client.pem", "gateway.url", "root.crt",
	};
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	char remote[PROTO_MAX_STR + 64], note[PROTO_MAX_STR + 160];
	const char *what = "ABORT";
	int clear = b->committed;
	size_t i, len;
	int r = 0;

	/*
	 * Before COMMIT the board still holds whatever it had.  Staged files
	 * (and with them a staged certificate and keys) are thrown away by
	 * ABORT; a key that is only staged is harmless (aktualizr never sees
	 * its pending id) and goes at the board's next HELLO or start, so a
	 * board busy generating it is not waited for.
	 */
	if (b->commit_sent && !b->committed) {
		/* Clearing now could take away a set the board did commit,
		 * or leave it half-cleared: record the doubt instead, and
		 * let the station that sees the board next ask it. */
		len = strlen(b->why);
		if (len + 2 < sizeof(b->why))
			snprintf(b->why + len, sizeof(b->why) - len, "; COMMIT "
			    "got no answer: the board holds either its old "
			    "credentials or the new ones, and the station "
			    "finds out which when it sees the board again");
		return;
	}
	if (!b->staged && !clear)
		return;
	remote[0] = '\0';
	if (b->link == NULL) {
		r = KL_ERR_CLOSED;
		goto out;
	}
	/* An operator stop must not cut the clean-up short.  One attempt
	 * against silence (a board that stopped answering costs one
	 * timeout), but at least the default resends against noise: a board
	 * cleared halfway is worse than one not cleared at all. */
	link_set_cancel(b->link, NULL);
	link_set_attempts(b->link, 1);
	if (cfg->resends < ENGINE_CLEAR_RESENDS)
		link_set_resends(b->link, ENGINE_CLEAR_RESENDS);
	if (b->staged && !clear) {
		buf_reset(&b->req);
		r = link_call(b->link, PROTO_ABORT, NULL, &b->resp,
		    cfg->timeout_ms, remote, sizeof(remote));
		if (r == 0)
			b->staged = 0;
	}
	for (i = 0; clear && r == 0 && i < sizeof(names) / sizeof(names[0]);
	    i++) {
		what = "REMOVE";
		buf_reset(&b->req);
		if ((r = proto_put_str(&b->req, PT_FILE_NAME, names[i])) == 0)
			r = link_call(b->link, PROTO_REMOVE, &b->req, &b->resp,
			    cfg->timeout_ms, remote, sizeof(remote));
	}
	if (clear && r == 0) {
		what = "DEL_CERT";
		buf_reset(&b->req);
		if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->cert_id,
		    e->cert_id_len)) == 0)
			r = link_call(b->link, PROTO_DEL_CERT, &b->req,
			    &b->resp, cfg->timeout_ms, remote, sizeof(remote));
	}
	buf_reset(&b->req);
out:
	if (!clear)
		return;
	if (r == KL_ERR_REMOTE)
		(void)board_text(remote);
	if (r == 0)
		snprintf(note, sizeof(note), "board cleared: its import "
		    "files and certificate object were removed");
	else
		snprintf(note, sizeof(note), "clearing the board failed at "
		    "%s (%s): it may still hold files or a certificate", what,
		    r == KL_ERR_REMOTE ? remote : kl_strerror(r));
	(void)board_audit(b, "clear", r == 0 ? "ok" : "failed", note);
	len = strlen(b->why);
	if (len + 2 < sizeof(b->why))
		snprintf(b->why + len, sizeof(b->why) - len, "; %s", note);
}

/*
 * The plant registry learns the outcome: a board that passed is recorded
 * provisioned with its key and certificate; one that failed before any
 * certificate existed gives its claim back.  A failed board that may hold
 * a certificate keeps the claim until its lease runs out, so another
 * station cannot start on the device at once.  A registry that cannot
 * record a pass does not fail the board (it holds its credentials): it is
 * said loudly and audited.
 */
static int
board_plant_record(struct board *b, char *why, size_t whysz)
{
	return plant_provisioned(b->e->o.plant, b->device_id, b->key_fpr,
	    b->cert_serial, b->cert_fpr, why, whysz);
}

/*
 * offline = local, a board that passed: the registry learns it now if it
 * can (one try), or else the device is queued for reconciliation by a
 * "registry queued" row (docs/plant.md), written before the "done passed"
 * row so that no pass in the log lacks it.  0, or the audit error.
 */
static int
board_plant_local_pass(struct board *b)
{
	struct engine *e = b->e;
	char why[600] = "", msg[900];
	int r;

	if (e->o.plant == NULL || b->already ||
	    e->o.cfg->registry_offline != CONFIG_OFFLINE_LOCAL ||
	    (!b->plant_offline && !b->plant_claimed))
		return 0;
	if (b->plant_claimed) {
		r = board_plant_record(b, why, sizeof(why));
		if (r == 0)
			b->plant_done = 1;
		/* Refusals are said by board_plant_finish, as ever. */
		if (r != KL_ERR_UNAVAILABLE)
			return 0;
		reconcile_set_offline(e, 1);
		(void)board_text(why);
	}
	snprintf(msg, sizeof(msg), "%sprovisioned while the plant registry "
	    "was unreachable%s%s%s; queued: the device is reconciled with the "
	    "registry when it is back",
	    engine_reprovision_allowed(e, b->device_id) ?
	    BOARD_REPROVISION_NOTE : "", why[0] != '\0' ? " (" : "", why,
	    why[0] != '\0' ? ")" : "");
	if ((r = board_audit(b, "registry", "queued", msg)) != 0)
		return r;
	b->plant_done = 1;
	reconcile_wake(e);
	board_emit(b, EV_INFO, 0, msg);
	return 0;
}

static void
board_plant_finish(struct board *b, int r)
{
	struct plant *pl = b->e->o.plant;
	struct log_board lb;
	char why[600] = "", msg[700];
	int pr;

	if (pl == NULL || !b->plant_claimed || b->plant_done)
		return;
	/* A pass the registry does not hold would let the claim run out
	 * and another station make a second certificate: waited for. */
	if (r == 0)
		pr = board_registry_wait(b, "record of the pass",
		    board_plant_record, why, sizeof(why));
	else if (b->cert == NULL)
		pr = plant_release(pl, b->device_id, b->why[0] != '\0' ?
		    b->why : kl_strerror(r), why, sizeof(why));
	else
		return;
	if (pr == 0)
		return;
	(void)board_text(why);
	snprintf(msg, sizeof(msg), "plant registry did not take the %s: %s",
	    r == 0 ? "pass" : "release", why);
	log_board_msg(LOG_LVL_ERROR, board_log_of(b, &lb), "slot %d: %s",
	    b->slot->cs->number, msg);
	(void)board_audit(b, "registry", "failed", msg);
	board_emit(b, EV_INFO, pr, msg);
}

static void
board_finish(struct board *b, int r)
{
	struct engine *e = b->e;
	struct engine_slot_view *v = &b->slot->view;
	char msg[600];

	if (r == 0)
		r = board_plant_local_pass(b);
	if (r == 0) {
		if (board_audit(b, "done", b->already ? "already" : "passed",
		    NULL) != 0) {
			r = board_fail(b, KL_ERR_DB,
			    "audit log write failed at the final record");
		}
	}
	board_plant_finish(b, r);
	if (r != 0) {
		if (b->why[0] == '\0')
			snprintf(b->why, sizeof(b->why), "%s: %s",
			    engine_step_name(b->step), kl_strerror(r));
		/* A board whose pass the plant registry holds, or will
		 * (queued), keeps what it was given: clearing it would leave
		 * the registry naming a certificate no board has.  Only the
		 * final record is missing, and that is said. */
		if (!b->plant_done)
			board_clear(b);
		snprintf(msg, sizeof(msg), "%s: %s", engine_step_name(b->step),
		    b->why);
		(void)board_audit(b, engine_step_name(b->step), "failed", msg);
	}
	pthread_mutex_lock(&e->mu);
	v->state = r == 0 ? SLOT_PASSED : SLOT_FAILED;
	v->finished_ms = engine_now_ms();
	slot_end_step(e, b->slot, v->finished_ms, r != 0);
	snprintf(b->slot->cert_serial, sizeof(b->slot->cert_serial), "%s",
	    b->cert_serial);
	snprintf(b->slot->key_fpr, sizeof(b->slot->key_fpr), "%s", b->key_fpr);
	engine_histogram_observe(&e->metrics.board, (double)(v->finished_ms - b->t0));
	if (r == 0 && b->already)
		e->metrics.already_total++;
	else if (r == 0)
		e->metrics.passed_total++;
	else
		e->metrics.failed_total++;
	if (b->link != NULL) {
		const struct link_stats *st = link_stats(b->link);

		e->metrics.retries_total += st->retries;
		e->metrics.wire_bytes_total += st->bytes_tx + st->bytes_rx;
	}
	snprintf(v->error, sizeof(v->error), "%.*s",
	    (int)sizeof(v->error) - 1, r == 0 ? "" : b->why);
	if (r == 0 && b->already) {
		e->counts.already++;
	} else if (r == 0) {
		e->counts.passed++;
	} else {
		e->counts.failed++;
		if (e->first_err == 0)
			e->first_err = r;
	}
	e->counts.in_flight--;
	pthread_mutex_unlock(&e->mu);
	board_emit(b, r != 0 ? EV_FAILED : b->already ? EV_ALREADY : EV_PASSED,
	    r, r != 0 ? b->why : b->already ? "already provisioned" :
	    b->recovered ? "provisioned (recovered from an interrupted run)" :
	    "provisioned");
}

/* One board, start to end, in slot s.  The caller has marked the slot
 * working and counted it in flight. */
void
board_init(struct board *b, struct engine_slot *s, int64_t t0)
{
	memset(b, 0, sizeof(*b));
	b->e = s->e;
	b->slot = s;
	b->t0 = t0;
	buf_init(&b->req, FRAME_MAX_PAYLOAD);
	buf_init(&b->resp, FRAME_MAX_PAYLOAD);
}

static int
board_run_steps(struct board *b)
{
	const struct engine_step_def *d;
	char why[400] = "";
	size_t i;
	int r = 0;

	if (b->e->o.halted != NULL &&
	    (r = b->e->o.halted(b->e->o.halted_arg, why, sizeof(why))) != 0)
		return board_fail(b, r, "station stopped provisioning: %s",
		    why[0] != '\0' ? why : kl_strerror(r));

	for (i = 0; i < engine_nsteps; i++) {
		d = &engine_steps[i];
		if ((d->runs_for == FOR_NEW && (b->recovered || b->already)) ||
		    (d->runs_for == FOR_NOT_ALREADY && b->already))
			continue;
		if (d->cancellable && (r = board_cancelled(b)))
			break;
		if (!d->cancellable && b->link != NULL)
			link_set_cancel(b->link, NULL);
		b->def = d;
		b->ok_outcome = NULL;
		b->ok_note[0] = '\0';
		b->ok_info[0] = '\0';
		board_set_step(b, d->step);
		if ((r = d->fn(b)) != 0)
			break;
		/* The step's success on record (the first failure names the
		 * cause: board_audit_put).  Durable before the next step for
		 * identify (dupcheck reads the log up to its row) and the
		 * issuance (the certificate exists); the others go with the
		 * next durable row, which every action outside the station
		 * waits for: the CA request, COMMIT, the outcome
		 * (docs/audit.md, "When rows are written"). */
		if (d->audit != NULL && (r = board_audit_put(b, d->audit,
		    b->ok_outcome != NULL ? b->ok_outcome : "ok",
		    b->ok_note[0] != '\0' ? b->ok_note : NULL,
		    &b->rows[d->step], !step_row_durable(d->step))) != 0)
			break;
		if (b->ok_info[0] != '\0')
			board_emit(b, EV_INFO, 0, b->ok_info);
	}
	return r;
}

/*
 * A board that stopped answering before any certificate was asked for
 * (a hung boot, a wedged agent) is worth one power cycle and a fresh try,
 * where the jig can switch the slot's power and [jig] power_retry allows.
 * Later failures are not retried: a certificate may exist by then.
 */
static int
board_power_retry(struct board *b, int r)
{
	const struct engine_jig_ops *jig = b->e->o.jig;
	char msg[700];
	int pr;

	if (jig == NULL || jig->power_cycle == NULL ||
	    !b->e->o.cfg->jig_power_retry || b->def == NULL ||
	    !b->def->power_retry ||
	    (r != KL_ERR_TIMEOUT && r != KL_ERR_CLOSED) || b->e->cancel)
		return 0;
	/* A jig whose slot has no switchable power says so; nothing
	 * happened, so nothing is recorded. */
	if ((pr = jig->power_cycle(jig->ctx, b->slot->cs->number)) ==
	    KL_ERR_UNSUPPORTED)
		return 0;
	snprintf(msg, sizeof(msg), "board stopped answering at %s (%s); %s",
	    engine_step_name(b->step), b->why, pr == 0 ?
	    "power-cycled the slot, trying once more" :
	    "power cycle failed, not retrying");
	board_emit(b, EV_INFO, pr, msg);
	if (board_audit(b, "power", pr == 0 ? "info" : "failed", msg) != 0)
		return 0;
	if (pr != 0) {
		struct log_board lb;

		log_board_msg(LOG_LVL_WARN, board_log_of(b, &lb),
		    "slot %d: power cycle failed: %s", b->slot->cs->number,
		    kl_strerror(pr));
		return 0;
	}
	return 1;
}

void
slot_provision(struct engine_slot *s)
{
	struct board b;
	int64_t t0 = engine_now_ms();
	int r, tries = 0;

	board_init(&b, s, t0);
	while ((r = board_run_steps(&b)) != 0 && tries++ == 0 &&
	    board_power_retry(&b, r)) {
		/* A fresh start on the same board after its power cycle.  The
		 * first try got no further than CSR (board_power_retry), so
		 * all it left is a staged key, which the agent threw away
		 * when it started again; the step history starts again. */
		board_cleanup(&b);
		board_init(&b, s, t0);
		pthread_mutex_lock(&s->e->mu);
		s->nsteps = 0;
		pthread_mutex_unlock(&s->e->mu);
	}
	if (r == 0)
		board_set_step(&b, STEP_DONE);
	board_finish(&b, r);
	board_cleanup(&b);
}
