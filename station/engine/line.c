/*
 * line.c: the engine's life and its slots (engine.h, internal.h): new,
 * run once over the jig or as a line, operator requests (retry,
 * acknowledge, power cycle, stop), line-mode probes and held slots, and
 * the snapshots front-ends take.
 */
#include "station/engine/internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "db/audit.h"
#include "station/ca/ca.h"
#include "station/config/ota.h"
#include "common/clock.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "common/log.h"
#include "station/link/serial.h"

static const char *const step_names[STEP__COUNT] = {
	[STEP_CONNECT] = "connect",
	[STEP_IDENTIFY] = "identify",
	[STEP_DUPCHECK] = "dupcheck",
	[STEP_KEYGEN] = "keygen",
	[STEP_CSR] = "csr",
	[STEP_CA] = "ca",
	[STEP_VALIDATE] = "validate",
	[STEP_WRITE] = "write",
	[STEP_VERIFY] = "verify",
	[STEP_POP] = "pop",
	[STEP_DONE] = "done",
};

static const char *const state_names[] = {
	[SLOT_IDLE] = "idle",
	[SLOT_WORKING] = "working",
	[SLOT_WAITING_CA] = "waiting_ca",
	[SLOT_PASSED] = "passed",
	[SLOT_FAILED] = "failed",
	[SLOT_WAITING_REGISTRY] = "waiting_registry",
};

static const char *const kind_names[] = {
	[EV_STEP] = "step",
	[EV_PASSED] = "passed",
	[EV_FAILED] = "failed",
	[EV_INFO] = "info",
	[EV_ALREADY] = "already_provisioned",
	[EV_IN_DOUBT] = "in_doubt",
	[EV_CONFLICT] = "registry_conflict",
};

const char *
engine_step_name(enum engine_step s)
{
	return (unsigned)s < STEP__COUNT ? step_names[s] : "unknown";
}

const char *
engine_state_name(enum slot_state s)
{
	return (unsigned)s <= SLOT__LAST ? state_names[s] : "unknown";
}

const char *
engine_event_kind_name(enum engine_event_kind k)
{
	return (unsigned)k <= EV__LAST ? kind_names[k] : "unknown";
}

/* The device path of slot s now (see struct engine_jig_ops). */
int
slot_device(struct engine_slot *s, char *path, size_t pathsz)
{
	const struct engine_jig_ops *jig = s->e->o.jig;

	if (jig != NULL && jig->resolve != NULL)
		return jig->resolve(jig->ctx, s->cs->number, path, pathsz);
	if (snprintf(path, pathsz, "%s", s->cs->device) >= (int)pathsz)
		return KL_ERR_PATH;
	return 0;
}

/* Under e->mu: the slot takes a new board. */
static void
slot_begin(struct engine *e, struct engine_slot *s)
{
	memset(s->view.serial, 0, sizeof(s->view.serial));
	s->view.device_id[0] = '\0';
	s->view.error[0] = '\0';
	s->view.state = SLOT_WORKING;
	s->view.step = STEP_CONNECT;
	s->view.started_ms = engine_now_ms();
	s->view.finished_ms = 0;
	s->nsteps = 0;
	s->cert_serial[0] = '\0';
	s->key_fpr[0] = '\0';
	e->counts.in_flight++;
}

static void *
slot_once(void *arg)
{
	struct engine_slot *s = arg;
	struct engine *e = s->e;

	pthread_mutex_lock(&e->mu);
	while (e->gate_closed)
		pthread_cond_wait(&e->cond, &e->mu);
	pthread_mutex_unlock(&e->mu);
	slot_provision(s);
	return NULL;
}

#define PROBE_TIMEOUT_MS 1000
#define PROBE_IDLE_MS 1000

/*
 * Is there a board in slot s, and which?  A short HELLO; "" when nothing
 * answers (no board, or the device node is gone).
 */
static void
slot_probe(struct engine_slot *s, char *serial, size_t serialsz)
{
	struct engine *e = s->e;
	struct link_params lp = { .baud = e->o.cfg->baud };
	struct link *l = NULL;
	struct buf req, resp;
	char dev[PATH_MAX];

	serial[0] = '\0';
	buf_init(&req, 64);
	buf_init(&resp, FRAME_MAX_PAYLOAD);
	if (slot_device(s, dev, sizeof(dev)) != 0 ||
	    link_open(&l, &serial_link_ops, dev, &lp) != 0)
		goto out;
	link_set_attempts(l, 2);
	link_set_cancel(l, &e->cancel);
	if (proto_put_u32(&req, PT_VERSION_MIN, PROTO_VERSION_MIN) != 0 ||
	    proto_put_u32(&req, PT_VERSION_MAX, PROTO_VERSION_MAX) != 0)
		goto out;
	if (link_call(l, PROTO_HELLO, &req, &resp, PROBE_TIMEOUT_MS, NULL,
	    0) != 0)
		goto out;
	if (proto_get_str(resp.data, resp.len, PT_SERIAL, serial,
	    serialsz) != 0)
		serial[0] = '\0';
out:
	link_close(l);
	buf_free(&req);
	buf_free(&resp);
}

/* Under e->mu: wait for a state change or ms. */
void
engine_wait(struct engine *e, int ms)
{
	struct timespec ts;

	kl_deadline_ms(&ts, ms);	/* e->cond's clock */
	pthread_cond_timedwait(&e->cond, &e->mu, &ts);
}

/* A board gone for this many probes in a row is gone: one lost or
 * corrupted HELLO is not a board taken out. */
#define PROBE_GONE_AFTER 3

/*
 * The operator's power cycle, run by the slot's own thread while the slot
 * is idle, so power is never cut under a board being worked on and the
 * screen that asked never waits for it.  Audited like the engine's own.
 */
static void
slot_power_cycle(struct engine_slot *s)
{
	const struct engine_jig_ops *jig = s->e->o.jig;
	struct board b;
	char msg[128];
	int r;

	board_init(&b, s, engine_now_ms());
	pthread_mutex_lock(&s->e->mu);
	snprintf(b.serial, sizeof(b.serial), "%s", s->view.serial);
	pthread_mutex_unlock(&s->e->mu);
	r = jig->power_cycle(jig->ctx, s->cs->number);
	snprintf(msg, sizeof(msg), "power cycle on the operator's request: %s",
	    r == 0 ? "done" : kl_strerror(r));
	(void)board_audit(&b, "power", r == 0 ? "info" : "failed", msg);
	board_emit(&b, EV_INFO, r, msg);
	board_cleanup(&b);
}

/*
 * Line mode: a slot provisions each new board that appears while the line
 * runs.  A board already handled, passed or failed, is not done again
 * until it changes (another serial, or none for a few probes and then
 * one) or the operator retries it; a failure stays on show until then or
 * until acknowledged, so a headless line keeps moving and an operator
 * still sees it.
 */
/*
 * Under e->mu, after a board in line mode: whether the slot should now be
 * held for the operator.  A slot turning boards over faster than a person
 * swaps them (a fake board that changes its serial at every HELLO), or
 * whose boards keep failing (a broken pogo pin, a bad batch), stops
 * starting boards and raises an alert, instead of burning device IDs or
 * certificates.  Fills why when it holds.
 */
static int
slot_hold_check(struct engine *e, struct engine_slot *s, int64_t started,
    char *why, size_t whysz)
{
	const struct config *cfg = e->o.cfg;
	int64_t now = engine_mono_ms(), oldest;
	int i, n, recent = 0;

	s->starts[s->nstarts++ % ENGINE_HOLD_RING] = started;
	s->fail_run = s->view.state == SLOT_FAILED ? s->fail_run + 1 : 0;
	if (cfg->jig_hold_failures > 0 &&
	    s->fail_run >= cfg->jig_hold_failures) {
		snprintf(why, whysz, "%d boards in a row failed in this slot; "
		    "check the fixture, then release the slot", s->fail_run);
		return 1;
	}
	if (cfg->jig_hold_boards <= 0)
		return 0;
	n = s->nstarts < ENGINE_HOLD_RING ? s->nstarts : ENGINE_HOLD_RING;
	oldest = now - (int64_t)cfg->jig_hold_window_s * 1000;
	for (i = 0; i < n; i++)
		if (s->starts[i] >= oldest)
			recent++;
	if (recent > cfg->jig_hold_boards) {
		snprintf(why, whysz, "%d boards started in this slot within "
		    "%d s, more than a person swaps (at most %d); check what is "
		    "in the slot, then release it", recent,
		    cfg->jig_hold_window_s, cfg->jig_hold_boards);
		return 1;
	}
	return 0;
}

/* Under e->mu (dropped and taken again): hold the slot and say so. */
static void
slot_hold(struct engine *e, struct engine_slot *s, const char *why)
{
	const struct config *cfg = e->o.cfg;
	struct audit_event ev;
	char msg[300], serial[PROTO_MAX_STR + 1], devid[sizeof(s->view.device_id)];
	int number = s->cs->number;

	s->view.held = 1;
	snprintf(s->view.hold_reason, sizeof(s->view.hold_reason), "%s", why);
	snprintf(serial, sizeof(serial), "%s", s->view.serial);
	snprintf(devid, sizeof(devid), "%s", s->view.device_id);
	pthread_mutex_unlock(&e->mu);
	snprintf(msg, sizeof(msg), "slot %d held: %s", number, why);
	log_warn("%s", msg);
	memset(&ev, 0, sizeof(ev));
	ev.station = cfg->station_id;
	ev.slot = number;
	ev.step = "hold";
	ev.outcome = "info";
	ev.error = why;
	(void)audit_append(e->o.audit, &ev, NULL);
	engine_note(e, number, EV_INFO, serial, devid, msg);
	pthread_mutex_lock(&e->mu);
}

static void *
slot_line(void *arg)
{
	struct engine_slot *s = arg;
	struct engine *e = s->e;
	char serial[PROTO_MAX_STR + 1], why[200];
	int64_t started;

	pthread_mutex_lock(&e->mu);
	for (;;) {
		if (e->line == LINE_STOPPING)
			break;
		if (s->power_req) {
			s->power_req = 0;
			pthread_mutex_unlock(&e->mu);
			slot_power_cycle(s);
			pthread_mutex_lock(&e->mu);
			continue;
		}
		if (s->retry_req) {
			s->retry_req = 0;
			slot_begin(e, s);
			started = engine_mono_ms();
			pthread_mutex_unlock(&e->mu);
			slot_provision(s);
			pthread_mutex_lock(&e->mu);
			if (slot_hold_check(e, s, started, why, sizeof(why)))
				slot_hold(e, s, why);
			engine_wait(e, PROBE_IDLE_MS);
			continue;
		}
		if (e->line != LINE_RUNNING || s->view.held) {
			engine_wait(e, PROBE_IDLE_MS);
			continue;
		}
		pthread_mutex_unlock(&e->mu);
		slot_probe(s, serial, sizeof(serial));
		pthread_mutex_lock(&e->mu);
		if (e->line != LINE_RUNNING || s->retry_req || s->power_req)
			continue;
		if (serial[0] == '\0') {
			if (++s->empty_probes >= PROBE_GONE_AFTER) {
				/* The board is gone: the next one is new. */
				s->last_serial[0] = '\0';
				if (s->view.state == SLOT_PASSED) {
					s->view.state = SLOT_IDLE;
					s->view.serial[0] = '\0';
					s->view.device_id[0] = '\0';
				}
			}
			engine_wait(e, PROBE_IDLE_MS);
			continue;
		}
		s->empty_probes = 0;
		if (strcmp(serial, s->last_serial) == 0) {
			engine_wait(e, PROBE_IDLE_MS);
			continue;
		}
		/* Remember the board as the probe read it, raw: what the
		 * engine shows may have been made printable. */
		memcpy(s->last_serial, serial, sizeof(s->last_serial));
		slot_begin(e, s);
		started = engine_mono_ms();
		pthread_mutex_unlock(&e->mu);
		slot_provision(s);
		pthread_mutex_lock(&e->mu);
		if (slot_hold_check(e, s, started, why, sizeof(why)))
			slot_hold(e, s, why);
		/* Never straight into the next probe after a board. */
		engine_wait(e, PROBE_IDLE_MS);
	}
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

/* ---- engine ------------------------------------------------------------ */

/*
 * root.crt as one DER certificate, for a version 2 board to PEM-encode:
 * only when the configured file is exactly what that encoding gives back
 * (one certificate, no text around it), so the board writes the same
 * bytes either way.  1 and *der (OPENSSL_free), or 0: send the file.
 */
static int
engine_root_crt_der(const struct ota_files *ota, unsigned char **der,
    long *der_len)
{
	BIO *in = NULL, *out = NULL;
	char *name = NULL, *header = NULL, *pem;
	unsigned char *data = NULL;
	long len = 0, pem_len;
	int ok = 0;

	if (ota->root_crt_len == 0 || ota->root_crt_len > PROTO_MAX_FILE ||
	    (in = BIO_new_mem_buf(ota->root_crt,
	    (int)ota->root_crt_len)) == NULL ||
	    PEM_read_bio(in, &name, &header, &data, &len) != 1 ||
	    strcmp(name, PEM_STRING_X509) != 0 || header[0] != '\0' ||
	    BIO_pending(in) != 0 || (out = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio(out, PEM_STRING_X509, "", data, len) <= 0)
		goto out;
	pem_len = BIO_get_mem_data(out, &pem);
	if (pem_len < 0 || (size_t)pem_len != ota->root_crt_len ||
	    memcmp(pem, ota->root_crt, ota->root_crt_len) != 0)
		goto out;
	*der = data;
	*der_len = len;
	data = NULL;
	ok = 1;
out:
	ERR_clear_error();
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	BIO_free(in);
	BIO_free(out);
	return ok;
}

/*
 * The intermediates appended to client.pem, re-encoded from the parsed
 * certificates: a bundle file that also holds a key (an export with its
 * key) must never be copied to boards, so any block that is not a
 * CERTIFICATE stops the station.
 */
static int
engine_load_intermediates(struct engine *e)
{
	const char *path = e->o.cfg->ca_intermediates;
	BIO *in = NULL, *out = NULL;
	char *name = NULL, *header = NULL, *p;
	unsigned char *data = NULL;
	const unsigned char *q;
	long len, n;
	X509 *x;
	int count = 0, r = KL_ERR_CONFIG;

	if (path[0] == '\0')
		return 0;
	if ((in = BIO_new_file(path, "r")) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL) {
		log_error("[ca] intermediates: cannot read %s", path);
		r = KL_ERR_IO;
		goto out;
	}
	while (PEM_read_bio(in, &name, &header, &data, &len) == 1) {
		if (strcmp(name, PEM_STRING_X509) != 0) {
			log_error("[ca] intermediates: %s holds a %s block; only "
			    "certificates may go to boards", path, name);
			goto out;
		}
		q = data;
		if ((x = d2i_X509(NULL, &q, len)) == NULL || q != data + len ||
		    PEM_write_bio_X509(out, x) != 1) {
			X509_free(x);
			log_error("[ca] intermediates: %s: a certificate does not "
			    "parse", path);
			goto out;
		}
		X509_free(x);
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_clear_free(data, (size_t)len);
		name = header = NULL;
		data = NULL;
		count++;
	}
	ERR_clear_error();
	if (count == 0) {
		log_error("[ca] intermediates: %s holds no certificate", path);
		goto out;
	}
	n = BIO_get_mem_data(out, &p);
	if (n <= 0 || n > ENGINE_MAX_PEM / 2 ||
	    (e->intermediates_pem = malloc((size_t)n)) == NULL) {
		log_error("[ca] intermediates: %s is too large", path);
		goto out;
	}
	memcpy(e->intermediates_pem, p, (size_t)n);
	e->intermediates_len = (size_t)n;
	r = 0;
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	/* Stopped at a block that is not a certificate: maybe a key. */
	OPENSSL_clear_free(data, data != NULL ? (size_t)len : 0);
	BIO_free(in);
	BIO_free(out);
	return r;
}

void
engine_note(struct engine *e, int slot, enum engine_event_kind kind,
    const char *serial, const char *device_id, const char *msg)
{
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.time_ms = engine_now_ms();
	ev.slot = slot;
	ev.kind = kind;
	ev.step = STEP_CONNECT;
	ev.serial = serial;
	ev.device_id = device_id;
	ev.message = msg;
	ev.cert_serial = ev.cert_fpr = ev.key_fpr = "";
	pthread_mutex_lock(&e->emit_mu);
	pthread_mutex_lock(&e->mu);
	ev.seq = ++e->event_seq;
	engine_ring_put(e, &ev);
	pthread_mutex_unlock(&e->mu);
	if (e->o.on_event != NULL)
		e->o.on_event(e->o.arg, &ev);
	pthread_mutex_unlock(&e->emit_mu);
}

static int
engine_doubt_note(void *arg, const char *device_id,
    const struct audit_device_state *st)
{
	struct engine *e = arg;
	char msg[1200], serial[AUDIT_REC_TEXT];

	snprintf(msg, sizeof(msg), "in doubt since %s: %s slot %lld stopped "
	    "at %s (certificate serial %s); resolved when the board is seen",
	    st->doubt.time, st->doubt.station, (long long)st->doubt.slot,
	    st->doubt_step, st->doubt.cert_serial[0] ?
	    st->doubt.cert_serial : "none");
	snprintf(serial, sizeof(serial), "%s", st->doubt.board_serial);
	(void)board_text(serial);
	(void)board_text(msg);
	{
		struct log_board lb = { .slot = (int)st->doubt.slot,
		    .serial = serial, .device_id = device_id };

		log_board_msg(LOG_LVL_WARN, &lb, "device %s %s", device_id,
		    msg);
	}
	engine_note(e, 0, EV_IN_DOUBT, serial, device_id, msg);
	return 0;
}

int
engine_new(struct engine **out, const struct engine_opts *o)
{
	int64_t more = 0;
	const struct config *cfg = o->cfg;
	struct engine *e;
	int i, r = KL_ERR_INTERNAL;

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return KL_ERR_NOMEM;
	e->o = *o;
	pthread_mutex_init(&e->mu, NULL);
	pthread_mutex_init(&e->emit_mu, NULL);
	pthread_mutex_init(&e->key_mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&e->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	e->nslots = cfg->nslots;
	if ((e->slots = calloc((size_t)(e->nslots > 0 ? e->nslots : 1),
	    sizeof(*e->slots))) == NULL ||
	    (e->inflight = calloc((size_t)(e->nslots > 0 ? e->nslots : 1),
	    sizeof(*e->inflight))) == NULL ||
	    (e->inflight_key = calloc((size_t)(e->nslots > 0 ? e->nslots : 1),
	    sizeof(*e->inflight_key))) == NULL) {
		r = KL_ERR_NOMEM;
		goto fail;
	}
	if ((r = hsm_key_type_from_name(cfg->key_type, &e->key_type)) != 0 ||
	    (r = hsm_id_from_hex(cfg->tls_key_id, e->tls_id,
	    sizeof(e->tls_id), &e->tls_id_len)) != 0 ||
	    (r = hsm_id_from_hex(cfg->cert_id, e->cert_id, sizeof(e->cert_id),
	    &e->cert_id_len)) != 0 ||
	    (r = hsm_id_from_hex(cfg->uptane_key_id, e->uptane_id,
	    sizeof(e->uptane_id), &e->uptane_id_len)) != 0) {
		r = KL_ERR_CONFIG;
		goto fail;
	}
	if (o->ota != NULL && !engine_root_crt_der(o->ota, &e->root_der,
	    &e->root_der_len))
		e->root_der = NULL;	/* sent as the file's own bytes */
	if ((r = engine_load_intermediates(e)) != 0)
		goto fail;
	for (i = 0; i < e->nslots; i++) {
		e->slots[i].e = e;
		e->slots[i].cs = &cfg->slots[i];
		e->slots[i].view.number = cfg->slots[i].number;
		snprintf(e->slots[i].view.device,
		    sizeof(e->slots[i].view.device), "%.*s",
		    (int)sizeof(e->slots[i].view.device) - 1,
		    cfg->slots[i].device);
	}
	/* What an earlier run left in doubt, said before any board starts. */
	if ((r = audit_in_doubt(e->o.audit, engine_doubt_note, e,
	    &more)) != 0) {
		log_error("cannot read the audit log for attempts in doubt: %s",
		    kl_strerror(r));
		goto fail;
	}
	if (more > 0) {
		char msg[128];

		snprintf(msg, sizeof(msg), "and %lld more devices in doubt",
		    (long long)more);
		engine_note(e, 0, EV_IN_DOUBT, "", "", msg);
	}
	if ((r = reconcile_start(e)) != 0)
		goto fail;
	*out = e;
	return 0;
fail:
	engine_free(e);
	return r;
}

void
engine_free(struct engine *e)
{
	if (e == NULL)
		return;
	reconcile_stop(e);
	pthread_mutex_destroy(&e->mu);
	pthread_mutex_destroy(&e->emit_mu);
	pthread_mutex_destroy(&e->key_mu);
	pthread_cond_destroy(&e->cond);
	free(e->slots);
	free(e->inflight);
	free(e->inflight_key);
	free(e->intermediates_pem);
	OPENSSL_free(e->root_der);
	free(e);
}

/* Under e->mu. */
static void
engine_set_line(struct engine *e, enum line_state st)
{
	int64_t now = engine_now_ms();

	if (e->line == LINE_RUNNING && st != LINE_RUNNING &&
	    e->running_since != 0) {
		e->running_ms += now - e->running_since;
		e->running_since = 0;
	}
	if (st == LINE_RUNNING && e->line != LINE_RUNNING)
		e->running_since = now;
	e->line = st;
	pthread_cond_broadcast(&e->cond);
}

/* Start one thread per slot (the first n) on fn. */
static int
engine_spawn(struct engine *e, int n, void *(*fn)(void *), int begin)
{
	int i, started = 0;

	for (i = 0; i < n; i++) {
		struct engine_slot *s = &e->slots[i];

		pthread_mutex_lock(&e->mu);
		if (begin)
			slot_begin(e, s);
		pthread_mutex_unlock(&e->mu);
		if (pthread_create(&s->thread, NULL, fn, s) != 0) {
			log_error("slot %d: cannot start a thread",
			    s->view.number);
			pthread_mutex_lock(&e->mu);
			s->view.state = SLOT_FAILED;
			snprintf(s->view.error, sizeof(s->view.error),
			    "cannot start a thread for this slot");
			if (begin) {
				e->counts.in_flight--;
				e->counts.failed++;
			}
			if (e->first_err == 0)
				e->first_err = KL_ERR_NOMEM;
			pthread_mutex_unlock(&e->mu);
			continue;
		}
		s->started = 1;
		started++;
	}
	return started;
}

static void
engine_join(struct engine *e)
{
	int i;

	for (i = 0; i < e->nslots; i++) {
		if (e->slots[i].started) {
			pthread_join(e->slots[i].thread, NULL);
			e->slots[i].started = 0;
		}
	}
	/* Every board ends with a durable row, so nothing should be left
	 * queued; if a row is, it is written now, not at close. */
	if (audit_flush(e->o.audit) != 0)
		log_error("engine: audit rows queued by the slots were lost");
}

int
engine_run(struct engine *e, int max_boards)
{
	int n = e->nslots;

	if (max_boards > 0 && max_boards < n)
		n = max_boards;
	/*
	 * The slots start together: each thread waits at the gate until all
	 * exist.  Started one by one, the first boards' work (and their
	 * boards' key generation) took the CPU from the loop that starts the
	 * rest, and the last slot began up to 130 ms after the first (64
	 * slots, two cores).
	 */
	pthread_mutex_lock(&e->mu);
	e->started_ms = engine_now_ms();
	engine_set_line(e, LINE_RUNNING);
	e->gate_closed = 1;
	pthread_mutex_unlock(&e->mu);
	(void)engine_spawn(e, n, slot_once, 1);
	pthread_mutex_lock(&e->mu);
	e->gate_closed = 0;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->mu);
	engine_join(e);
	pthread_mutex_lock(&e->mu);
	engine_set_line(e, LINE_PAUSED);
	pthread_mutex_unlock(&e->mu);
	return e->first_err;
}

const char *
engine_line_state_name(enum line_state s)
{
	static const char *const names[] = {
		[LINE_PAUSED] = "paused",
		[LINE_RUNNING] = "running",
		[LINE_STOPPING] = "stopping",
	};

	return (unsigned)s <= LINE_STOPPING ? names[s] : "unknown";
}

int
engine_start(struct engine *e)
{
	pthread_mutex_lock(&e->mu);
	if (e->line_mode) {
		pthread_mutex_unlock(&e->mu);
		return KL_ERR_INVALID;
	}
	e->line_mode = 1;
	e->started_ms = engine_now_ms();
	e->line = LINE_PAUSED;
	pthread_mutex_unlock(&e->mu);
	if (engine_spawn(e, e->nslots, slot_line, 0) == 0 && e->nslots > 0)
		return KL_ERR_NOMEM;
	return 0;
}

void
engine_set_running(struct engine *e, int running)
{
	pthread_mutex_lock(&e->mu);
	if (e->line != LINE_STOPPING)
		engine_set_line(e, running ? LINE_RUNNING : LINE_PAUSED);
	pthread_mutex_unlock(&e->mu);
}

static struct engine_slot *
engine_slot_by_number(struct engine *e, int n)
{
	int i;

	for (i = 0; i < e->nslots; i++)
		if (e->slots[i].view.number == n)
			return &e->slots[i];
	return NULL;
}

/* Under e->mu: the operator releases a held slot; its counts start over. */
static void
slot_release(struct engine_slot *s)
{
	s->view.held = 0;
	s->view.hold_reason[0] = '\0';
	s->nstarts = 0;
	s->fail_run = 0;
}

int
engine_retry(struct engine *e, int n)
{
	struct engine_slot *s;
	int r = 0;

	pthread_mutex_lock(&e->mu);
	if ((s = engine_slot_by_number(e, n)) == NULL)
		r = KL_ERR_NOT_FOUND;
	else if (!e->line_mode || e->line == LINE_STOPPING ||
	    s->view.state != SLOT_FAILED || s->retry_req)
		r = KL_ERR_INVALID;
	else {
		slot_release(s);
		s->retry_req = 1;
		pthread_cond_broadcast(&e->cond);
	}
	pthread_mutex_unlock(&e->mu);
	return r;
}

int
engine_ack(struct engine *e, int n)
{
	struct engine_slot *s;
	int r = 0;

	pthread_mutex_lock(&e->mu);
	if ((s = engine_slot_by_number(e, n)) == NULL)
		r = KL_ERR_NOT_FOUND;
	else if ((s->view.state != SLOT_FAILED && !s->view.held) ||
	    s->retry_req)
		r = KL_ERR_INVALID;
	else {
		/* The failed board stays "handled" (last_serial) until it is
		 * taken out; a retry is the way to run it again. */
		if (s->view.state == SLOT_FAILED) {
			s->view.state = SLOT_IDLE;
			s->view.error[0] = '\0';
		}
		slot_release(s);
		pthread_cond_broadcast(&e->cond);
	}
	pthread_mutex_unlock(&e->mu);
	return r;
}

int
engine_power_cycle(struct engine *e, int n)
{
	const struct engine_jig_ops *jig = e->o.jig;
	struct engine_slot *s;
	int r = 0;

	pthread_mutex_lock(&e->mu);
	if ((s = engine_slot_by_number(e, n)) == NULL)
		r = KL_ERR_NOT_FOUND;
	else if (jig == NULL || jig->power_cycle == NULL)
		r = KL_ERR_UNSUPPORTED;
	/* Only an idle slot: power is never cut under a board in flight
	 * (the engine's own retry handles a board that hangs). */
	else if (!e->line_mode || e->line == LINE_STOPPING ||
	    s->view.state == SLOT_WORKING || s->view.state == SLOT_WAITING_CA ||
	    s->view.state == SLOT_WAITING_REGISTRY ||
	    s->retry_req || s->power_req)
		r = KL_ERR_INVALID;
	else {
		s->power_req = 1;
		pthread_cond_broadcast(&e->cond);
	}
	pthread_mutex_unlock(&e->mu);
	return r;
}

void
engine_kick(struct engine *e, int n)
{
	(void)n;
	pthread_mutex_lock(&e->mu);
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->mu);
}

void
engine_stop(struct engine *e)
{
	pthread_mutex_lock(&e->mu);
	e->cancel = 1;
	engine_set_line(e, LINE_STOPPING);
	pthread_mutex_unlock(&e->mu);
	engine_join(e);
}

void
engine_status(struct engine *e, struct engine_status *s)
{
	int64_t now = engine_now_ms();
	int i, done;

	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&e->mu);
	s->line = e->line;
	s->counts = e->counts;
	s->started_ms = e->started_ms;
	s->running_ms = e->running_ms +
	    (e->running_since != 0 ? now - e->running_since : 0);
	for (i = 0; i < e->nslots; i++) {
		if (e->slots[i].view.state == SLOT_WAITING_CA)
			s->slots_waiting_ca++;
		if (e->slots[i].view.state == SLOT_WAITING_REGISTRY)
			s->slots_waiting_registry++;
		if (e->slots[i].view.held)
			s->slots_held++;
	}
	pthread_mutex_unlock(&e->mu);
	done = s->counts.passed + s->counts.failed;
	s->boards_per_hour = s->running_ms > 0 ?
	    done * 3600000.0 / (double)s->running_ms : 0.0;
	s->ca_name = e->o.ca != NULL ? e->o.ca->name : "";
	s->ca_state = s->slots_waiting_ca > 0 ? "waiting" : "ok";
	reconcile_status(e, s);
}

int
engine_slot_detail(struct engine *e, int n, struct engine_slot_detail *d)
{
	struct engine_slot *s;

	memset(d, 0, sizeof(*d));
	pthread_mutex_lock(&e->mu);
	if ((s = engine_slot_by_number(e, n)) == NULL) {
		pthread_mutex_unlock(&e->mu);
		return KL_ERR_NOT_FOUND;
	}
	d->view = s->view;
	memcpy(d->steps, s->steps, sizeof(d->steps));
	d->nsteps = s->nsteps;
	memcpy(d->cert_serial, s->cert_serial, sizeof(d->cert_serial));
	memcpy(d->key_fpr, s->key_fpr, sizeof(d->key_fpr));
	pthread_mutex_unlock(&e->mu);
	return 0;
}

int
engine_events(struct engine *e, uint64_t since,
    struct engine_event_copy *out, int max)
{
	uint64_t seq, first;
	int n = 0;

	pthread_mutex_lock(&e->mu);
	first = e->event_seq > ENGINE_RING ? e->event_seq - ENGINE_RING + 1 :
	    1;
	if (since + 1 > first)
		first = since + 1;
	for (seq = first; seq <= e->event_seq && n < max; seq++)
		out[n++] = e->ring[seq % ENGINE_RING];
	pthread_mutex_unlock(&e->mu);
	return n;
}

void
engine_metrics(struct engine *e, struct engine_metrics *m)
{
	pthread_mutex_lock(&e->mu);
	*m = e->metrics;
	pthread_mutex_unlock(&e->mu);
}

void
engine_cancel(struct engine *e)
{
	e->cancel = 1;
}

int
engine_slots(struct engine *e, struct engine_slot_view *v, int max)
{
	int i, n;

	pthread_mutex_lock(&e->mu);
	n = e->nslots < max ? e->nslots : max;
	for (i = 0; i < n; i++)
		v[i] = e->slots[i].view;
	pthread_mutex_unlock(&e->mu);
	return n;
}

void
engine_counts(struct engine *e, struct engine_counts *c)
{
	pthread_mutex_lock(&e->mu);
	*c = e->counts;
	pthread_mutex_unlock(&e->mu);
}

