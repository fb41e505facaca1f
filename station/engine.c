/*
 * engine.c: per-slot provisioning state machines (see engine.h).
 *
 * Each slot thread walks one board through the steps in a straight line;
 * every step either fills the board context or fails the board with a
 * reason in words.  Nothing reaches the board's import directory until the
 * certificate has been issued, recorded in the audit log and validated, and
 * files are staged and then committed together so a failure leaves no
 * partial file behind.
 */
#include "station/engine.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "db/audit.h"
#include "hsm/hsm.h"
#include "station/buf.h"
#include "station/ca.h"
#include "station/certcheck.h"
#include "station/devid.h"
#include "station/err.h"
#include "station/frame.h"
#include "station/link.h"
#include "station/log.h"
#include "station/ota.h"
#include "station/proto.h"

#define ENGINE_CHALLENGE_LEN 32
#define ENGINE_HOLD_RING 64	/* the largest [jig] hold_boards */
#define ENGINE_MAX_PEM (16 * 1024)

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
};

static const char *const kind_names[] = {
	[EV_STEP] = "step",
	[EV_PASSED] = "passed",
	[EV_FAILED] = "failed",
	[EV_INFO] = "info",
	[EV_ALREADY] = "already_provisioned",
	[EV_IN_DOUBT] = "in_doubt",
};

const char *
engine_step_name(enum engine_step s)
{
	return (unsigned)s < STEP__COUNT ? step_names[s] : "unknown";
}

const char *
engine_state_name(enum slot_state s)
{
	return (unsigned)s <= SLOT_FAILED ? state_names[s] : "unknown";
}

const char *
engine_event_kind_name(enum engine_event_kind k)
{
	return (unsigned)k <= EV_IN_DOUBT ? kind_names[k] : "unknown";
}

struct engine_slot {
	struct engine *e;
	const struct config_slot *cs;
	pthread_t thread;
	int started;
	/* Under e->mu: */
	struct engine_slot_view view;
	struct engine_step_rec steps[STEP__COUNT];
	int nsteps;
	char cert_serial[80];
	char key_fpr[65];
	int retry_req;			/* operator asked for a retry */
	int power_req;			/* operator asked for a power cycle */
	/* Line mode: the raw serial of the board last handled, as the probe
	 * reads it, and how many probes in a row found nobody. */
	char last_serial[PROTO_MAX_STR + 1];
	int empty_probes;
	/* Held slots: when its recent boards started (monotonic ms, a
	 * ring of the last ENGINE_HOLD_RING) and how many failed in a row. */
	int64_t starts[ENGINE_HOLD_RING];
	int nstarts;
	int fail_run;
};

struct engine {
	struct engine_opts o;
	pthread_mutex_t mu;		/* views, counts, event seq, in-flight */
	pthread_mutex_t key_mu;		/* the key-uniqueness check and the
					 * "ca requested" row, as one step */
	pthread_mutex_t emit_mu;	/* one event at a time to on_event, in
					 * seq order; taken before mu, and
					 * held without mu during the call */
	uint64_t event_seq;
	volatile sig_atomic_t cancel;
	struct engine_slot *slots;
	int nslots;
	struct engine_counts counts;
	int first_err;
	/* Device IDs being provisioned right now, so two boards claiming
	 * the same ID cannot both pass the duplicate check. */
	char (*inflight)[DEVID_MAX + 1];
	enum hsm_key_type key_type;
	uint8_t tls_id[PROTO_MAX_KEY_ID], cert_id[PROTO_MAX_KEY_ID],
	    uptane_id[PROTO_MAX_KEY_ID];
	size_t tls_id_len, cert_id_len, uptane_id_len;
	char *intermediates_pem;	/* appended to client.pem, or NULL */
	size_t intermediates_len;
	/* Line mode and front-end views, under mu. */
	pthread_cond_t cond;		/* line state or a slot request changed */
	enum line_state line;
	int line_mode;			/* engine_start() was used */
	int64_t started_ms;
	int64_t running_ms;		/* accumulated while LINE_RUNNING */
	int64_t running_since;		/* 0 when not running */
	struct engine_event_copy ring[ENGINE_RING];
	struct engine_metrics metrics;
};

/* Everything known about the board in one slot. */
struct board {
	struct engine *e;
	struct engine_slot *slot;
	struct link *link;
	int64_t t0;
	enum engine_step step;
	char serial[PROTO_MAX_STR + 1];
	char model[PROTO_MAX_STR + 1];
	char agent_version[PROTO_MAX_STR + 1];
	struct hsm_token_info hsm;
	char device_id[DEVID_MAX + 1];
	int reserved;			/* device_id in e->inflight */
	uint8_t *spki;
	size_t spki_len;
	char key_fpr[65];
	uint8_t *csr;
	size_t csr_len;
	uint8_t *cert;
	size_t cert_len;
	char cert_serial[80];
	char cert_fpr[65];
	int staged;			/* files staged on the board */
	int commit_sent;		/* COMMIT went out: the new key, its
					 * certificate and files may be in
					 * place */
	int committed;			/* ... and they are: COMMIT was
					 * answered, or a recovered board
					 * holds them */
	int64_t identify_row;		/* this attempt's identify row */
	/* The board already holds credentials this plant recorded: */
	int recovered;			/* ... from an attempt in doubt, which
					 * this one finishes */
	int already;			/* ... from an attempt that passed */
	char why[512];			/* failure in words */
	struct buf req, resp;
};

/* Wall clock: what events, views and the audit log show. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* For deadlines and sleeps: an NTP step of the wall clock (a station PC
 * just booted) must not end a CA wait at once or stretch it by hours. */
static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * n] = '\0';
}

static int
sha256(const void *p, size_t n, uint8_t out[32])
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
histogram_observe(struct engine_histogram *h, double ms)
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
static void
ring_put(struct engine *e, const struct engine_event *ev)
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

static void
board_emit(struct board *b, enum engine_event_kind kind, int err,
    const char *msg)
{
	struct engine *e = b->e;
	const struct link_stats *st = b->link != NULL ? link_stats(b->link) :
	    NULL;
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.time_ms = now_ms();
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
	ring_put(e, &ev);
	pthread_mutex_unlock(&e->mu);
	if (e->o.on_event != NULL)
		e->o.on_event(e->o.arg, &ev);
	pthread_mutex_unlock(&e->emit_mu);
}

static int board_fail(struct board *b, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
board_audit_row(struct board *b, const char *step, const char *outcome,
    const char *error, int64_t *row)
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

	if ((r = audit_append(b->e->o.audit, &ev, row)) != 0) {
		log_error("slot %d: cannot write the audit log: %s",
		    ev.slot, kl_strerror(r));
		/* The first failure names the cause (an I/O error, a full
		 * disk, with the path); the caller's words follow it. */
		(void)board_fail(b, r, "audit log write failed (%s)",
		    audit_last_error());
	}
	return r;
}

static int
board_audit(struct board *b, const char *step, const char *outcome,
    const char *error)
{
	return board_audit_row(b, step, outcome, error, NULL);
}

/* Record a failure reason (first one wins) and return err. */
static int
board_fail(struct board *b, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
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
	histogram_observe(&e->metrics.step[rec->step],
	    (double)(now - rec->start_ms));
}

static void
board_set_step(struct board *b, enum engine_step s)
{
	struct engine *e = b->e;
	struct engine_slot *sl = b->slot;
	int64_t now = now_ms();

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
static int
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

static int
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
static int
resp_str(struct board *b, uint8_t tag, char *out, size_t outsz)
{
	return proto_get_str(b->resp.data, b->resp.len, tag, out, outsz);
}

static int
resp_bytes(struct board *b, uint8_t tag, size_t max, const uint8_t **p,
    size_t *n)
{
	return proto_get_bytes(b->resp.data, b->resp.len, tag, max, p, n);
}

static int
dup_bytes(const uint8_t *p, size_t n, uint8_t **out)
{
	if ((*out = OPENSSL_malloc(n > 0 ? n : 1)) == NULL)
		return KL_ERR_NOMEM;
	memcpy(*out, p, n);
	return 0;
}

/* ---- steps -------------------------------------------------------------- */

/* The device path of slot s now (see struct engine_jig_ops). */
static int
slot_device(struct engine_slot *s, char *path, size_t pathsz)
{
	const struct engine_jig_ops *jig = s->e->o.jig;

	if (jig != NULL && jig->resolve != NULL)
		return jig->resolve(jig->ctx, s->cs->number, path, pathsz);
	if (snprintf(path, pathsz, "%s", s->cs->device) >= (int)pathsz)
		return KL_ERR_PATH;
	return 0;
}

static int
step_connect(struct board *b)
{
	const struct config *cfg = b->e->o.cfg;
	struct link_params lp = { .baud = cfg->baud };
	char dev[PATH_MAX];
	int r;

	if ((r = slot_device(b->slot, dev, sizeof(dev))) != 0)
		return board_fail(b, r, "no board in slot %d: %s",
		    b->slot->cs->number, kl_strerror(r));
	r = link_open(&b->link, &serial_link_ops, dev, &lp);
	if (r != 0)
		return board_fail(b, r, "cannot open %s: %s", dev,
		    kl_strerror(r));
	link_set_attempts(b->link, cfg->attempts);
	link_set_resends(b->link, cfg->resends);
	/* An operator stop cuts a wait short until files are being written. */
	link_set_cancel(b->link, &b->e->cancel);
	return 0;
}

static int
step_identify(struct board *b)
{
	const struct config *cfg = b->e->o.cfg;
	struct devid_vars vars;
	char why[256];
	uint32_t version;
	int r, serial_clean;

	if ((r = proto_put_u32(&b->req, PT_VERSION_MIN, PROTO_VERSION_MIN)) ||
	    (r = proto_put_u32(&b->req, PT_VERSION_MAX, PROTO_VERSION_MAX)))
		return r;
	if ((r = board_call(b, PROTO_HELLO, cfg->timeout_ms)) != 0)
		return r;
	if (proto_get_u32(b->resp.data, b->resp.len, PT_VERSION,
	    &version) != 0 || version < PROTO_VERSION_MIN ||
	    version > PROTO_VERSION_MAX)
		return board_fail(b, KL_ERR_VERSION,
		    "board answered HELLO without a protocol version we speak");
	if (resp_str(b, PT_SERIAL, b->serial, sizeof(b->serial)) != 0 ||
	    b->serial[0] == '\0')
		return board_fail(b, KL_ERR_PROTO,
		    "board sent no usable serial number");
	/* Clean at once: every failure below records the serial. */
	serial_clean = board_text(b->serial);
	if (resp_str(b, PT_MODEL, b->model, sizeof(b->model)) != 0 ||
	    b->model[0] == '\0')
		return board_fail(b, KL_ERR_PROTO, "board sent no model");
	(void)resp_str(b, PT_AGENT_VERSION, b->agent_version,
	    sizeof(b->agent_version));
	(void)resp_str(b, PT_HSM_LABEL, b->hsm.label, sizeof(b->hsm.label));
	(void)resp_str(b, PT_HSM_MANUFACTURER, b->hsm.manufacturer,
	    sizeof(b->hsm.manufacturer));
	(void)resp_str(b, PT_HSM_MODEL, b->hsm.model, sizeof(b->hsm.model));
	(void)resp_str(b, PT_HSM_SERIAL, b->hsm.serial, sizeof(b->hsm.serial));
	(void)board_text(b->agent_version);
	(void)board_text(b->hsm.label);
	(void)board_text(b->hsm.manufacturer);
	(void)board_text(b->hsm.model);
	(void)board_text(b->hsm.serial);
	if (!board_text(b->model) || !serial_clean)
		return board_fail(b, KL_ERR_PROTO, "board's serial '%s' or model "
		    "'%s' holds bytes that are not printable ASCII (shown as ?)",
		    b->serial, b->model);

	vars.serial = b->serial;
	vars.model = b->model;
	vars.hsm_serial = b->hsm.serial;
	vars.station = cfg->station_id;
	if ((r = devid_expand(cfg->device_id_template, &vars, b->device_id,
	    sizeof(b->device_id), why, sizeof(why))) != 0) {
		b->device_id[0] = '\0';
		return board_fail(b, r, "no valid device ID for serial '%s': %s",
		    b->serial, why);
	}
	if ((r = board_audit_row(b, "identify", "ok", NULL,
	    &b->identify_row)) != 0)
		return board_fail(b, r, "audit log write failed");
	{
		char msg[1400];

		snprintf(msg, sizeof(msg),
		    "model %s, agent %s, hsm %s/%s serial %s", b->model,
		    b->agent_version, b->hsm.manufacturer, b->hsm.model,
		    b->hsm.serial);
		board_emit(b, EV_INFO, 0, msg);
	}
	return 0;
}

static int
engine_reprovision_allowed(const struct engine *e, const char *id)
{
	int i;

	for (i = 0; i < e->o.nreprovision; i++)
		if (strcmp(e->o.reprovision[i], id) == 0)
			return 1;
	return 0;
}

/* What a board holds now, from INQUIRE; "" or NULL where it has none. */
struct board_holding {
	char key_fpr[65];
	char cert_fpr[65];
	int has_file;
	uint8_t file_sha[32];	/* client.pem */
	uint8_t *spki, *cert;	/* OPENSSL_free */
	size_t spki_len, cert_len;
};

static void
holding_free(struct board_holding *h)
{
	OPENSSL_free(h->spki);
	OPENSSL_free(h->cert);
	memset(h, 0, sizeof(*h));
}

static int
board_inquire(struct board *b, struct board_holding *h)
{
	struct engine *e = b->e;
	const uint8_t *p;
	uint8_t digest[32];
	size_t n;
	int r;

	memset(h, 0, sizeof(*h));
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_bytes(&b->req, PT_CERT_ID, e->cert_id,
	    e->cert_id_len)) ||
	    (r = proto_put_str(&b->req, PT_FILE_NAME, "client.pem")))
		return r;
	if ((r = board_call(b, PROTO_INQUIRE, e->o.cfg->timeout_ms)) != 0)
		return r;
	if (resp_bytes(b, PT_SPKI, 4096, &p, &n) == 0) {
		if ((r = dup_bytes(p, n, &h->spki)) != 0 ||
		    (r = sha256(p, n, digest)) != 0)
			goto fail;
		h->spki_len = n;
		hex(digest, sizeof(digest), h->key_fpr);
	}
	if (resp_bytes(b, PT_CERT, PROTO_MAX_FILE, &p, &n) == 0) {
		if ((r = dup_bytes(p, n, &h->cert)) != 0 ||
		    (r = sha256(p, n, digest)) != 0)
			goto fail;
		h->cert_len = n;
		hex(digest, sizeof(digest), h->cert_fpr);
	}
	if (resp_bytes(b, PT_SHA256, 32, &p, &n) == 0 && n == 32) {
		memcpy(h->file_sha, p, 32);
		h->has_file = 1;
	}
	return 0;
fail:
	holding_free(h);
	return r;
}

/*
 * Whether the board holds exactly the key and certificate of rec: the
 * key at tls_key_id and the certificate object at cert_id, which one
 * board-side commit puts in place together with the files; and a
 * client.pem.  Its bytes are not compared with what this station would
 * write today: an intermediate added to the configuration since must not
 * make a provisioned board a stranger.  (A recovered board's files are
 * read back in the verify step.)  0 (*holds 0/1).
 */
static int
board_holds(const struct board_holding *h, const struct audit_prov *rec,
    int *holds, char *what, size_t whatsz)
{
	*holds = 0;
	if (rec->key_fpr[0] == '\0' || rec->cert_fpr[0] == '\0') {
		snprintf(what, whatsz, "the record names no key or certificate");
		return 0;
	}
	if (h->spki == NULL || strcmp(h->key_fpr, rec->key_fpr) != 0) {
		snprintf(what, whatsz, h->spki == NULL ? "the board has no key "
		    "at its TLS key id" : "the board's key is another one");
		return 0;
	}
	if (h->cert == NULL || strcmp(h->cert_fpr, rec->cert_fpr) != 0) {
		snprintf(what, whatsz, h->cert == NULL ? "the board's token "
		    "holds no certificate" : "the board's certificate object is "
		    "another one");
		return 0;
	}
	if (!h->has_file) {
		snprintf(what, whatsz, "the board has no client.pem");
		return 0;
	}
	snprintf(what, whatsz, "the board holds the recorded key and "
	    "certificate");
	*holds = 1;
	return 0;
}

/* Take the board's own credentials as this attempt's (recovered or
 * already provisioned); the steps that make new ones are skipped. */
static int
board_adopt(struct board *b, struct board_holding *h,
    const struct audit_prov *rec)
{
	b->spki = h->spki;
	b->spki_len = h->spki_len;
	b->cert = h->cert;
	b->cert_len = h->cert_len;
	h->spki = h->cert = NULL;
	/* board_holds() found these equal to the record's. */
	memcpy(b->key_fpr, h->key_fpr, sizeof(b->key_fpr));
	memcpy(b->cert_fpr, h->cert_fpr, sizeof(b->cert_fpr));
	if (certcheck_serial_hex(b->cert, b->cert_len, b->cert_serial,
	    sizeof(b->cert_serial)) != 0)
		snprintf(b->cert_serial, sizeof(b->cert_serial), "%.*s",
		    (int)sizeof(b->cert_serial) - 1, rec->cert_serial);
	return 0;
}

/* The board holds rec's set: this attempt finishes it (the steps that
 * make new credentials are skipped), recorded with msg. */
static int
board_recovered(struct board *b, struct board_holding *h,
    const struct audit_prov *rec, const char *msg)
{
	(void)board_adopt(b, h, rec);
	b->recovered = 1;
	return board_audit(b, "recover", "provisioned", msg);
}

/* Seconds since an audit row's time ("2026-11-29T17:27:51.426Z"), or -1
 * when it does not parse. */
static int64_t
audit_time_age_s(const char *t)
{
	struct tm tm;
	const char *end;
	time_t when;

	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if ((when = timegm(&tm)) == (time_t)-1)
		return -1;
	return (int64_t)(now_ms() / 1000) - (int64_t)when;
}

/*
 * How long another station's attempt, silent since its newest row, is
 * taken as still running there: the longest a healthy attempt can go
 * without writing a row (a CA wait, a slow secure element), and a minute.
 */
static int64_t
engine_foreign_lease_s(const struct config *cfg)
{
	return (int64_t)cfg->ca_wait_deadline_s +
	    (int64_t)cfg->attempts * cfg->keygen_timeout_ms / 1000 + 60;
}

/*
 * The newest attempt at this device ended in doubt (the station died, or
 * COMMIT went out and nothing came back): ask the board what it holds and
 * record what was found.  If it holds that attempt's key and certificate,
 * this attempt finishes it (validate, verify, proof of possession) with no
 * new certificate.  If it does not: a doubt at "ca" means that
 * certificate was never committed on any board, and this one carries on;
 * later doubts mean it may be on another board, so this one is refused
 * unless it is the same board back in the same slot of this station, or
 * re-provisioning was asked for.
 */
static int
board_resolve_doubt(struct board *b, const struct audit_device_state *st)
{
	const struct config *cfg = b->e->o.cfg;
	const struct audit_prov *d = &st->doubt;
	struct board_holding h;
	char what[128], msg[900], attempt[500];
	int64_t age;
	int holds = 0, r;

	memset(&h, 0, sizeof(h));
	snprintf(attempt, sizeof(attempt), "the attempt of station %s, slot "
	    "%lld, at %s (stopped at %s, certificate serial %s)", d->station,
	    (long long)d->slot, d->time, st->doubt_step,
	    d->cert_serial[0] ? d->cert_serial : "none");
	/* Another station sharing this log may still be at it: a station
	 * only knows its own boards in flight. */
	if (strcmp(d->station, cfg->station_id) != 0 &&
	    (age = audit_time_age_s(d->time)) >= 0 &&
	    age < engine_foreign_lease_s(cfg)) {
		snprintf(msg, sizeof(msg), "%s may still be running there "
		    "(its newest record is %lld s old)", attempt,
		    (long long)age);
		(void)board_audit(b, "dupcheck", "refused", msg);
		return board_fail(b, KL_ERR_DUPLICATE, "device ID %s: %s",
		    b->device_id, msg);
	}
	if ((r = board_inquire(b, &h)) != 0)
		return r;
	if ((r = board_holds(&h, d, &holds, what, sizeof(what))) != 0)
		goto out;
	if (holds) {
		snprintf(msg, sizeof(msg), "recovered: provisioned; %s was in "
		    "doubt and %s; finishing it", attempt, what);
		if ((r = board_recovered(b, &h, d, msg)) != 0)
			goto out;
	} else if (strcmp(st->doubt_step, "ca") == 0) {
		snprintf(msg, sizeof(msg), "recovered: not provisioned; %s was "
		    "in doubt and %s%s", attempt, what, d->cert_serial[0] ?
		    "; that certificate was never committed on any board: "
		    "revoke it" : "");
		if ((r = board_audit(b, "recover", "not_provisioned",
		    msg)) != 0)
			goto out;
	} else if (strcmp(d->station, cfg->station_id) == 0 &&
	    d->slot == b->slot->cs->number &&
	    strcmp(d->board_serial, b->serial) == 0) {
		/* The same board back in the same slot of this station
		 * (a power cut, a crash, a cable): a commit it had decided
		 * its agent finished at start, so it did not take. */
		snprintf(msg, sizeof(msg), "recovered: not provisioned; %s was "
		    "in doubt and %s, back in the same slot; its COMMIT did "
		    "not take%s", attempt, what, d->cert_serial[0] ?
		    "; that certificate is on no board: revoke it" : "");
		if ((r = board_audit(b, "recover", "not_provisioned",
		    msg)) != 0)
			goto out;
	} else if (engine_reprovision_allowed(b->e, b->device_id)) {
		snprintf(msg, sizeof(msg), "recovered: elsewhere; %s was in "
		    "doubt and %s; that certificate may be on another board; "
		    "re-provisioning on request", attempt, what);
		if ((r = board_audit(b, "recover", "elsewhere", msg)) != 0)
			goto out;
	} else {
		snprintf(msg, sizeof(msg), "%s may have committed its "
		    "certificate on a board, and this board does not hold it "
		    "(%s); re-provisioning was not requested", attempt, what);
		(void)board_audit(b, "dupcheck", "refused", msg);
		r = board_fail(b, KL_ERR_DUPLICATE, "device ID %s: %s",
		    b->device_id, msg);
		goto out;
	}
	board_emit(b, EV_INFO, 0, msg);
	r = 0;
out:
	holding_free(&h);
	return r;
}

static int
step_dupcheck(struct board *b)
{
	struct engine *e = b->e;
	struct audit_device_state *st = NULL;
	struct board_holding h;
	const struct audit_prov *pv;
	char msg[900], what[128], when[400];
	int holds = 0, i, r;

	memset(&h, 0, sizeof(h));
	/* Claim the ID first, so two slots can't both pass the check. */
	pthread_mutex_lock(&e->mu);
	for (i = 0; i < e->nslots; i++) {
		if (strcmp(e->inflight[i], b->device_id) == 0) {
			pthread_mutex_unlock(&e->mu);
			(void)board_audit(b, "dupcheck", "refused",
			    "device ID in use by another slot");
			return board_fail(b, KL_ERR_DUPLICATE,
			    "device ID %s is being provisioned in another slot",
			    b->device_id);
		}
	}
	snprintf(e->inflight[b->slot - e->slots],
	    sizeof(e->inflight[0]), "%s", b->device_id);
	b->reserved = 1;
	pthread_mutex_unlock(&e->mu);

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return KL_ERR_NOMEM;
	if ((r = audit_device_state(e->o.audit, b->device_id,
	    b->identify_row > 0 ? b->identify_row : INT64_MAX, st)) != 0) {
		r = board_fail(b, r, "cannot read the audit log");
		goto out;
	}
	if (st->doubt_step[0] != '\0') {
		if ((r = board_resolve_doubt(b, st)) != 0)
			goto out;
		if (b->recovered)
			goto ok;
	}
	if (!st->provisioned)
		goto ok;
	pv = &st->prov;
	snprintf(when, sizeof(when), "by station %s, slot %lld, at %s, "
	    "certificate serial %s", pv->station, (long long)pv->slot,
	    pv->time, pv->cert_serial[0] ? pv->cert_serial : "unknown");
	/* Committed but never proven (the station stopped, or the proof
	 * failed and the clean-up could not reach the board): if the board
	 * holds that set, finish it rather than issue another certificate,
	 * re-provisioning asked for or not. */
	if (!st->prov_passed) {
		if ((r = board_inquire(b, &h)) != 0)
			goto out;
		if ((r = board_holds(&h, pv, &holds, what,
		    sizeof(what))) != 0)
			goto out;
		if (holds) {
			snprintf(msg, sizeof(msg), "recovered: provisioned; "
			    "committed %s but never passed; %s; finishing it",
			    when, what);
			if ((r = board_recovered(b, &h, pv, msg)) != 0)
				goto out;
			board_emit(b, EV_INFO, 0, msg);
			goto ok;
		}
		holding_free(&h);
	}
	if (engine_reprovision_allowed(e, b->device_id)) {
		snprintf(msg, sizeof(msg), "re-provisioning on request; "
		    "previous certificate serial %s (provisioned %s)",
		    pv->cert_serial, when);
		if ((r = board_audit(b, "reprovision", "info", msg)) != 0)
			goto out;
		board_emit(b, EV_INFO, 0, msg);
		goto ok;
	}
	/* Provisioned and passed before: the same board, untouched, is no
	 * failure. */
	if (st->prov_passed) {
		if ((r = board_inquire(b, &h)) != 0)
			goto out;
		if ((r = board_holds(&h, pv, &holds, what,
		    sizeof(what))) != 0)
			goto out;
	}
	if (holds) {
		(void)board_adopt(b, &h, pv);
		b->already = 1;
		snprintf(msg, sizeof(msg), "already provisioned %s; %s",
		    when, what);
		if ((r = board_audit(b, "dupcheck", "already", msg)) != 0) {
			r = board_fail(b, r, "audit log write failed");
			goto out;
		}
		board_emit(b, EV_INFO, 0, msg);
		goto ok_noaudit;
	}
	snprintf(msg, sizeof(msg), "already provisioned %s, and this board "
	    "does not hold that key and certificate (%s); re-provisioning "
	    "was not requested", when, what);
	(void)board_audit(b, "dupcheck", "refused", msg);
	r = board_fail(b, KL_ERR_DUPLICATE, "device ID %s %s", b->device_id,
	    msg);
	goto out;
ok:
	if ((r = board_audit(b, "dupcheck", "ok", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed");
		goto out;
	}
ok_noaudit:
	r = 0;
out:
	holding_free(&h);
	free(st);
	return r;
}

/* The SPKI the board reports must be the key type we asked for. */
static int
check_spki(struct board *b, const uint8_t *p, size_t n,
    enum hsm_key_type want)
{
	const unsigned char *q = p;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &q, (long)n);
	char group[64];
	size_t glen;
	int ok = 0;

	if (pk == NULL || q != p + n) {
		EVP_PKEY_free(pk);
		return board_fail(b, KL_ERR_PROTO,
		    "board's public key does not parse");
	}
	switch (want) {
	case HSM_KEY_EC_P256:
		ok = EVP_PKEY_is_a(pk, "EC") &&
		    EVP_PKEY_get_utf8_string_param(pk, "group", group,
		    sizeof(group), &glen) == 1 && strcmp(group, "prime256v1") == 0;
		break;
	case HSM_KEY_RSA2048:
		ok = EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) == 2048;
		break;
	case HSM_KEY_RSA3072:
		ok = EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) == 3072;
		break;
	}
	EVP_PKEY_free(pk);
	if (!ok)
		return board_fail(b, KL_ERR_PROTO,
		    "board made a key that is not %s", hsm_key_type_name(want));
	return 0;
}

static int
step_keygen(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	const uint8_t *p;
	uint8_t digest[32];
	size_t n;
	int r;

	if ((r = proto_put_str(&b->req, PT_KEY_TYPE,
	    hsm_key_type_name(e->key_type))) ||
	    (r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_str(&b->req, PT_KEY_LABEL, cfg->key_label)))
		return r;
	if ((r = board_call(b, PROTO_KEYGEN, cfg->keygen_timeout_ms)) != 0)
		return r;
	if (resp_bytes(b, PT_SPKI, 4096, &p, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "KEYGEN answer has no key");
	if ((r = check_spki(b, p, n, e->key_type)) != 0)
		return r;
	if ((r = dup_bytes(p, n, &b->spki)) != 0)
		return r;
	b->spki_len = n;
	if ((r = sha256(p, n, digest)) != 0)
		return r;
	hex(digest, sizeof(digest), b->key_fpr);

	if (cfg->uptane_key) {
		if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->uptane_id,
		    e->uptane_id_len)) ||
		    (r = proto_put_str(&b->req, PT_KEY_LABEL, "uptane")))
			return r;
		if ((r = board_call(b, PROTO_UPTANE_KEYGEN,
		    cfg->keygen_timeout_ms)) != 0)
			return r;
		if (resp_bytes(b, PT_SPKI, 4096, &p, &n) != 0)
			return board_fail(b, KL_ERR_PROTO,
			    "UPTANE_KEYGEN answer has no key");
		if ((r = check_spki(b, p, n, HSM_KEY_RSA2048)) != 0)
			return r;
	}
	if ((r = board_audit(b, "keygen", "ok", NULL)) != 0)
		return board_fail(b, r, "audit log write failed");
	return 0;
}

/* The CSR must carry the board's new key and be signed by it. */
static int
step_csr(struct board *b)
{
	struct engine *e = b->e;
	const uint8_t *p;
	const unsigned char *q;
	unsigned char *der = NULL;
	X509_REQ *req = NULL;
	EVP_PKEY *pk;
	size_t n;
	int len, r;

	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_str(&b->req, PT_SUBJECT_CN, b->device_id)))
		return r;
	if ((r = board_call(b, PROTO_CSR, e->o.cfg->keygen_timeout_ms)) != 0)
		return r;
	if (resp_bytes(b, PT_CSR, 16384, &p, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "CSR answer has no request");
	q = p;
	if ((req = d2i_X509_REQ(NULL, &q, (long)n)) == NULL || q != p + n) {
		r = board_fail(b, KL_ERR_PROTO, "board's CSR does not parse");
		goto out;
	}
	if ((pk = X509_REQ_get0_pubkey(req)) == NULL ||
	    (len = i2d_PUBKEY(pk, &der)) <= 0 || (size_t)len != b->spki_len ||
	    memcmp(der, b->spki, b->spki_len) != 0) {
		r = board_fail(b, KL_ERR_PROTO,
		    "board's CSR is not for the key it just generated");
		goto out;
	}
	if (X509_REQ_verify(req, pk) != 1) {
		r = board_fail(b, KL_ERR_PROTO,
		    "board's CSR signature does not verify");
		goto out;
	}
	if ((r = dup_bytes(p, n, &b->csr)) != 0)
		goto out;
	b->csr_len = n;
	if ((r = board_audit(b, "csr", "ok", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed");
		goto out;
	}
	r = 0;
out:
	OPENSSL_free(der);
	X509_REQ_free(req);
	return r;
}

static void engine_wait(struct engine *e, int ms);

/*
 * Sleep up to ms in the slot, in slices short enough to notice an
 * operator stop (a signal handler cannot wake a condition variable).
 */
static int
board_sleep(struct board *b, int64_t ms)
{
	struct engine *e = b->e;
	int64_t until = mono_ms() + ms, left;

	pthread_mutex_lock(&e->mu);
	while (!e->cancel && (left = until - mono_ms()) > 0)
		engine_wait(e, left > 200 ? 200 : (int)left);
	pthread_mutex_unlock(&e->mu);
	return e->cancel ? KL_ERR_CANCELLED : 0;
}

static void
board_set_state(struct board *b, enum slot_state st)
{
	pthread_mutex_lock(&b->e->mu);
	b->slot->view.state = st;
	pthread_mutex_unlock(&b->e->mu);
}

/*
 * Ask the CA; while it cannot be reached, wait with exponential backoff
 * and jitter in the "waiting for CA" state, until [ca] wait_deadline_s.
 * The wait and the resumption are audited and shown as events.
 */
/*
 * A key already sent to the CA, or certified, for another device ID is
 * refused: one shared or cloned key would otherwise get a certificate per
 * serial a board cares to report.  Recorded under both device IDs.
 */
static int
board_key_unique(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	struct audit_prov rec;
	struct audit_event ev;
	char other[AUDIT_REC_ID], msg[700];
	int found = 0, r;

	if ((r = audit_key_owner(e->o.audit, b->key_fpr, b->device_id, &found,
	    other, sizeof(other), &rec)) != 0)
		return board_fail(b, r, "cannot read the audit log");
	if (!found)
		return 0;
	(void)board_text(other);
	snprintf(msg, sizeof(msg), "this board's key (%.16s...) was already "
	    "sent to the CA for device %s by station %s, slot %lld, at %s "
	    "(certificate serial %s): one key, one device", b->key_fpr, other,
	    rec.station, (long long)rec.slot, rec.time,
	    rec.cert_serial[0] ? rec.cert_serial : "none");
	(void)board_audit(b, "keygen", "refused", msg);
	memset(&ev, 0, sizeof(ev));
	ev.station = cfg->station_id;
	ev.slot = b->slot->cs->number;
	ev.board_serial = b->serial;
	ev.device_id = other;
	ev.step = "key-reuse";
	ev.outcome = "info";
	ev.key_fpr = b->key_fpr;
	snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "; presented "
	    "again as device %s", b->device_id);
	ev.error = msg;
	(void)audit_append(e->o.audit, &ev, NULL);
	return board_fail(b, KL_ERR_DUPLICATE, "key refused: it belongs to "
	    "device %s (sent to the CA by station %s at %s); one key, one "
	    "device", other, rec.station, rec.time);
}

static int
step_ca(struct board *b)
{
	struct engine *e = b->e;
	const struct config *cfg = e->o.cfg;
	struct ca_request cr = {
		.csr_der = b->csr,
		.csr_len = b->csr_len,
		.device_id = b->device_id,
	};
	int64_t t0 = mono_ms(), deadline, delay, sleep_ms;
	char err[256] = "", msg[600], lost[200] = "";
	uint32_t rnd;
	int r, waiting = 0, tries = 0;

	/*
	 * Recorded before the CSR leaves the station: a CA that signs and
	 * whose answer is lost (a timeout after signing) leaves a certificate
	 * the station never sees, and this row, with the key fingerprint the
	 * certificate must carry, is how it is found in the CA's records.
	 */
	snprintf(msg, sizeof(msg), "CSR for this key sent to %s",
	    e->o.ca->name);
	/* One key, one device: checked and claimed (the "ca requested"
	 * row) in one step, so two slots holding one key cannot both pass. */
	pthread_mutex_lock(&e->key_mu);
	if ((r = board_key_unique(b)) == 0 &&
	    (r = board_audit(b, "ca", "requested", msg)) != 0)
		r = board_fail(b, r, "audit log write failed; the CSR was "
		    "not sent");
	pthread_mutex_unlock(&e->key_mu);
	if (r != 0)
		return r;
	deadline = t0 + (int64_t)cfg->ca_wait_deadline_s * 1000;
	delay = cfg->ca_retry_base_ms;
	for (;;) {
		err[0] = '\0';
		tries++;
		r = ca_issue(e->o.ca, &cr, &b->cert, &b->cert_len, err,
		    sizeof(err));
		if (r == 0)
			break;
		/* Words from a remote server go to the audit log and every
		 * front-end: printable ASCII only, like a board's. */
		(void)board_text(err);
		if (!ca_is_transient(r)) {
			/* Every try before this one went unanswered: if the
			 * CA got any of them, it may have signed it. */
			if (tries > 1)
				snprintf(lost, sizeof(lost), "; %d earlier "
				    "requests got no certificate back: the "
				    "CA's records may hold certificates for "
				    "this key (key_fpr)", tries - 1);
			snprintf(msg, sizeof(msg), "%s%s", err[0] ? err :
			    kl_strerror(r), lost);
			(void)board_audit(b, "ca", "failed", msg);
			return board_fail(b, r, "CA %s did not issue: %s",
			    e->o.ca->name, msg);
		}
		if (mono_ms() >= deadline) {
			snprintf(msg, sizeof(msg), "CA unreachable for %d s "
			    "(%d tries): %s; no certificate came back, but the "
			    "CA's records may hold some for this key (key_fpr)",
			    cfg->ca_wait_deadline_s, tries,
			    err[0] ? err : kl_strerror(r));
			(void)board_audit(b, "ca", "failed", msg);
			return board_fail(b, KL_ERR_UNAVAILABLE, "%s", msg);
		}
		if (!waiting) {
			waiting = 1;
			board_set_state(b, SLOT_WAITING_CA);
			snprintf(msg, sizeof(msg), "waiting for the CA: %s",
			    err[0] ? err : kl_strerror(r));
			if ((r = board_audit(b, "ca", "waiting", msg)) != 0)
				return board_fail(b, r, "audit log write failed");
			board_emit(b, EV_INFO, 0, msg);
		}
		/* Half the delay fixed, half random: slots that lost the CA
		 * together do not all come back in the same millisecond. */
		if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
			rnd = (uint32_t)now_ms();
		sleep_ms = delay / 2 + (int64_t)(rnd % (uint32_t)(delay / 2 + 1));
		if (sleep_ms > deadline - mono_ms())
			sleep_ms = deadline - mono_ms();
		if ((r = board_sleep(b, sleep_ms > 0 ? sleep_ms : 0)) != 0)
			return board_fail(b, r, "stopped by the operator while "
			    "waiting for the CA");
		delay = delay * 2 > cfg->ca_retry_max_ms ? cfg->ca_retry_max_ms :
		    delay * 2;
	}
	if (waiting) {
		board_set_state(b, SLOT_WORKING);
		snprintf(msg, sizeof(msg), "CA answered after %.1f s (%d tries; "
		    "%d earlier requests got no certificate back: the CA's "
		    "records may hold more certificates for this key)",
		    (double)(mono_ms() - t0) / 1000.0, tries, tries - 1);
		board_emit(b, EV_INFO, 0, msg);
	}
	/* Each field on its own: whatever can be read goes in the record. */
	if (certcheck_fingerprint(b->cert, b->cert_len, b->cert_fpr) != 0)
		snprintf(b->cert_fpr, sizeof(b->cert_fpr), "unparseable");
	if (certcheck_serial_hex(b->cert, b->cert_len, b->cert_serial,
	    sizeof(b->cert_serial)) != 0)
		snprintf(b->cert_serial, sizeof(b->cert_serial), "unparseable");
	/*
	 * The certificate exists from here on, whatever happens next: record
	 * its issuance before anything else, and stop if that cannot be done.
	 */
	if ((r = board_audit(b, "issued", "ok", waiting ? msg : NULL)) != 0)
		return board_fail(b, r,
		    "certificate issued but the audit log write failed; "
		    "not sending it to the board");
	return 0;
}

static int
step_validate(struct board *b)
{
	struct certcheck_expect want = {
		.cn = b->device_id,
		.spki = b->spki,
		.spki_len = b->spki_len,
	};
	char why[300] = "";
	int r;

	if ((r = certcheck_verify(b->e->o.trust, b->cert, b->cert_len, &want,
	    why, sizeof(why))) != 0) {
		(void)board_audit(b, "validate", "refused", why);
		return board_fail(b, KL_ERR_CERT_INVALID,
		    "certificate refused, not written to the board: %s", why);
	}
	if ((r = board_audit(b, "validate", "ok", NULL)) != 0)
		return board_fail(b, r, "audit log write failed");
	return 0;
}

/* client.pem: the leaf in PEM, then any configured intermediates. */
static int
make_client_pem_of(struct board *b, const uint8_t *cert, size_t cert_len,
    struct buf *out)
{
	const unsigned char *q = cert;
	X509 *x = d2i_X509(NULL, &q, (long)cert_len);
	BIO *mem = NULL;
	char *p;
	long n;
	int r = KL_ERR_CRYPTO;

	if (x == NULL || (mem = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(mem, x) != 1)
		goto out;
	n = BIO_get_mem_data(mem, &p);
	if ((r = buf_put(out, p, (size_t)n)) != 0)
		goto out;
	if (b->e->intermediates_pem != NULL &&
	    (r = buf_put(out, b->e->intermediates_pem,
	    b->e->intermediates_len)) != 0)
		goto out;
	r = 0;
out:
	BIO_free(mem);
	X509_free(x);
	return r;
}

struct board_file {
	const char *name;
	const uint8_t *data;
	size_t len;
	uint8_t sha[32];
};

static int
put_file(struct board *b, struct board_file *f)
{
	const uint8_t *p;
	size_t n;
	int r;

	if ((r = sha256(f->data, f->len, f->sha)) != 0)
		return r;
	if ((r = proto_put_str(&b->req, PT_FILE_NAME, f->name)) ||
	    (r = proto_put_u32(&b->req, PT_FILE_MODE, 0644)) ||
	    (r = proto_put_bytes(&b->req, PT_FILE_DATA, f->data, f->len)))
		return r;
	b->staged = 1;
	if ((r = board_call(b, PROTO_PUT_FILE, b->e->o.cfg->timeout_ms)) != 0)
		return r;
	if (resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
	    memcmp(p, f->sha, 32) != 0)
		return board_fail(b, KL_ERR_MISMATCH,
		    "board staged %s with a different hash", f->name);
	return 0;
}

/* The three import files, in commit order: client.pem last, since
 * aktualizr treats it as the sign that the device credentials are there.
 * pem holds client.pem's bytes (the caller frees it). */
static int
board_files(struct board *b, struct buf *pem, struct board_file files[3])
{
	const struct ota_files *ota = b->e->o.ota;
	size_t i;
	int r;

	if ((r = make_client_pem_of(b, b->cert, b->cert_len, pem)) != 0)
		return r;
	files[0] = (struct board_file){ "root.crt", ota->root_crt,
		ota->root_crt_len, { 0 } };
	files[1] = (struct board_file){ "gateway.url",
		(const uint8_t *)ota->gateway_url, strlen(ota->gateway_url),
		{ 0 } };
	files[2] = (struct board_file){ "client.pem", pem->data, pem->len,
		{ 0 } };
	for (i = 0; i < 3; i++)
		if ((r = sha256(files[i].data, files[i].len, files[i].sha)) != 0)
			return r;
	return 0;
}

/*
 * Stage the files and the certificate object, record the intent, commit.
 * The board keeps its old key, certificate and files until COMMIT, which
 * swaps them all in one board-side commit (docs/protocol.md).
 */
static int
step_write(struct board *b)
{
	struct engine *e = b->e;
	struct buf pem;
	struct board_file files[3];
	const uint8_t *p;
	uint8_t cert_sha[32];
	size_t i, n;
	int r;

	buf_init(&pem, ENGINE_MAX_PEM);
	if ((r = board_files(b, &pem, files)) != 0)
		goto out;
	for (i = 0; i < 3; i++)
		if ((r = put_file(b, &files[i])) != 0)
			goto out;

	/* The certificate object where aktualizr looks for it. */
	if ((r = sha256(b->cert, b->cert_len, cert_sha)) != 0)
		goto out;
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->cert_id,
	    e->cert_id_len)) ||
	    (r = proto_put_str(&b->req, PT_KEY_LABEL, e->o.cfg->key_label)) ||
	    (r = proto_put_bytes(&b->req, PT_CERT, b->cert, b->cert_len)))
		goto out;
	if ((r = board_call(b, PROTO_PUT_CERT, e->o.cfg->timeout_ms)) != 0)
		goto out;
	if (resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
	    memcmp(p, cert_sha, 32) != 0) {
		r = board_fail(b, KL_ERR_MISMATCH,
		    "certificate read back from the board's HSM differs");
		goto out;
	}
	/*
	 * The intent is on record before COMMIT leaves: if the station dies
	 * now, the next station to see this board knows to ask it what it
	 * holds instead of guessing.
	 */
	if ((r = board_audit(b, "commit", "requested", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed; COMMIT was not "
		    "sent");
		goto out;
	}
	b->commit_sent = 1;
	if ((r = board_call(b, PROTO_COMMIT, e->o.cfg->timeout_ms)) != 0)
		goto out;
	b->staged = 0;
	b->committed = 1;
	if ((r = board_audit(b, "write", "ok", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed");
		goto out;
	}
	r = 0;
out:
	buf_free(&pem);
	return r;
}

/* Read every file back and compare it with what was written. */
static int
step_verify(struct board *b)
{
	struct engine *e = b->e;
	struct buf pem;
	struct board_file files[3];
	const uint8_t *p;
	uint32_t size;
	size_t i, n;
	int r;

	/* A recovered board's credentials are this plant's from here on:
	 * if they fail a check, they are taken back like fresh ones. */
	if (b->recovered)
		b->commit_sent = b->committed = 1;
	buf_init(&pem, ENGINE_MAX_PEM);
	if ((r = board_files(b, &pem, files)) != 0)
		goto out;
	for (i = 0; i < 3; i++) {
		if ((r = proto_put_str(&b->req, PT_FILE_NAME, files[i].name)))
			goto out;
		if ((r = board_call(b, PROTO_FILE_HASH,
		    e->o.cfg->timeout_ms)) != 0)
			goto out;
		if (resp_bytes(b, PT_SHA256, 32, &p, &n) != 0 || n != 32 ||
		    proto_get_u32(b->resp.data, b->resp.len, PT_FILE_SIZE,
		    &size) != 0) {
			r = board_fail(b, KL_ERR_PROTO,
			    "FILE_HASH answer for %s is incomplete",
			    files[i].name);
			goto out;
		}
		if (size != files[i].len || memcmp(p, files[i].sha, 32) != 0) {
			r = board_fail(b, KL_ERR_MISMATCH,
			    "%s read back from the board differs from what "
			    "was written", files[i].name);
			goto out;
		}
	}
	if ((r = board_audit(b, "verify", "ok", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed");
		goto out;
	}
	r = 0;
out:
	buf_free(&pem);
	return r;
}

/* The board signs a fresh challenge with its HSM key; the certificate's
 * public key must verify it. */
static int
step_pop(struct board *b)
{
	struct engine *e = b->e;
	uint8_t challenge[ENGINE_CHALLENGE_LEN];
	const unsigned char *q = b->cert;
	const uint8_t *sig;
	EVP_MD_CTX *md = NULL;
	X509 *x = NULL;
	size_t n;
	int r;

	if (RAND_bytes(challenge, sizeof(challenge)) != 1)
		return KL_ERR_CRYPTO;
	if ((r = proto_put_bytes(&b->req, PT_KEY_ID, e->tls_id,
	    e->tls_id_len)) ||
	    (r = proto_put_bytes(&b->req, PT_CHALLENGE, challenge,
	    sizeof(challenge))))
		return r;
	if ((r = board_call(b, PROTO_SIGN, e->o.cfg->keygen_timeout_ms)) != 0)
		return r;
	if (resp_bytes(b, PT_SIGNATURE, 1024, &sig, &n) != 0)
		return board_fail(b, KL_ERR_PROTO, "SIGN answer has no signature");
	if ((x = d2i_X509(NULL, &q, (long)b->cert_len)) == NULL ||
	    (md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
	    X509_get0_pubkey(x)) != 1) {
		r = board_fail(b, KL_ERR_CRYPTO, "cannot set up the check of "
		    "the board's signature");
		goto out;
	}
	/* The agent signs its context "keyline-pop-v1" (NUL included),
	 * then the challenge; never the station's bytes alone
	 * (docs/protocol.md, "What the agent trusts"). */
	if (EVP_DigestVerifyUpdate(md, "keyline-pop-v1",
	    sizeof("keyline-pop-v1")) != 1 ||
	    EVP_DigestVerifyUpdate(md, challenge, sizeof(challenge)) != 1 ||
	    EVP_DigestVerifyFinal(md, sig, n) != 1) {
		r = board_fail(b, KL_ERR_POP,
		    "board's signature over the challenge does not verify "
		    "with the certificate's key");
		goto out;
	}
	if ((r = board_audit(b, "pop", "ok", NULL)) != 0) {
		r = board_fail(b, r, "audit log write failed");
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	X509_free(x);
	return r;
}

/* ---- one board ---------------------------------------------------------- */

static void
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
	OPENSSL_free(b->csr);
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

static void
board_finish(struct board *b, int r)
{
	struct engine *e = b->e;
	struct engine_slot_view *v = &b->slot->view;
	char msg[600];

	if (r == 0) {
		if (board_audit(b, "done", b->already ? "already" : "passed",
		    NULL) != 0) {
			r = board_fail(b, KL_ERR_DB,
			    "audit log write failed at the final record");
		}
	}
	if (r != 0) {
		if (b->why[0] == '\0')
			snprintf(b->why, sizeof(b->why), "%s: %s",
			    engine_step_name(b->step), kl_strerror(r));
		board_clear(b);
		snprintf(msg, sizeof(msg), "%s: %s", engine_step_name(b->step),
		    b->why);
		(void)board_audit(b, engine_step_name(b->step), "failed", msg);
	}
	pthread_mutex_lock(&e->mu);
	v->state = r == 0 ? SLOT_PASSED : SLOT_FAILED;
	v->finished_ms = now_ms();
	slot_end_step(e, b->slot, v->finished_ms, r != 0);
	snprintf(b->slot->cert_serial, sizeof(b->slot->cert_serial), "%s",
	    b->cert_serial);
	snprintf(b->slot->key_fpr, sizeof(b->slot->key_fpr), "%s", b->key_fpr);
	histogram_observe(&e->metrics.board, (double)(v->finished_ms - b->t0));
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

typedef int (*step_fn)(struct board *);

/* Which boards run a step: every one, a board that needs new
 * credentials, or not one that was already provisioned. */
enum step_for { FOR_ALL, FOR_NEW, FOR_NOT_ALREADY };

static const struct {
	enum engine_step step;
	step_fn fn;
	int cancellable;	/* nothing on the board yet */
	enum step_for runs_for;
} board_steps[] = {
	{ STEP_CONNECT, step_connect, 1, FOR_ALL },
	{ STEP_IDENTIFY, step_identify, 1, FOR_ALL },
	{ STEP_DUPCHECK, step_dupcheck, 1, FOR_ALL },
	{ STEP_KEYGEN, step_keygen, 1, FOR_NEW },
	{ STEP_CSR, step_csr, 1, FOR_NEW },
	{ STEP_CA, step_ca, 1, FOR_NEW },
	{ STEP_VALIDATE, step_validate, 1, FOR_ALL },
	{ STEP_WRITE, step_write, 0, FOR_NEW },
	{ STEP_VERIFY, step_verify, 0, FOR_NOT_ALREADY },
	{ STEP_POP, step_pop, 0, FOR_ALL },
};

/* One board, start to end, in slot s.  The caller has marked the slot
 * working and counted it in flight. */
static void
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
	size_t i;
	int r = 0;

	for (i = 0; i < sizeof(board_steps) / sizeof(board_steps[0]); i++) {
		if ((board_steps[i].runs_for == FOR_NEW &&
		    (b->recovered || b->already)) ||
		    (board_steps[i].runs_for == FOR_NOT_ALREADY && b->already))
			continue;
		if (board_steps[i].cancellable && (r = board_cancelled(b)))
			break;
		if (!board_steps[i].cancellable && b->link != NULL)
			link_set_cancel(b->link, NULL);
		board_set_step(b, board_steps[i].step);
		if ((r = board_steps[i].fn(b)) != 0)
			break;
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
	    !b->e->o.cfg->jig_power_retry || b->step >= STEP_CA ||
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
		log_warn("slot %d: power cycle failed: %s",
		    b->slot->cs->number, kl_strerror(pr));
		return 0;
	}
	return 1;
}

static void
slot_provision(struct engine_slot *s)
{
	struct board b;
	int64_t t0 = now_ms();
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

/* Under e->mu: the slot takes a new board. */
static void
slot_begin(struct engine *e, struct engine_slot *s)
{
	memset(s->view.serial, 0, sizeof(s->view.serial));
	s->view.device_id[0] = '\0';
	s->view.error[0] = '\0';
	s->view.state = SLOT_WORKING;
	s->view.step = STEP_CONNECT;
	s->view.started_ms = now_ms();
	s->view.finished_ms = 0;
	s->nsteps = 0;
	s->cert_serial[0] = '\0';
	s->key_fpr[0] = '\0';
	e->counts.in_flight++;
}

static void *
slot_once(void *arg)
{
	slot_provision(arg);
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
static void
engine_wait(struct engine *e, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);	/* e->cond's clock */
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
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

	board_init(&b, s, now_ms());
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
static void engine_note(struct engine *e, int slot,
    enum engine_event_kind kind, const char *serial, const char *device_id,
    const char *msg);

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
	int64_t now = mono_ms(), oldest;
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
			started = mono_ms();
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
		started = mono_ms();
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

/* An event that belongs to no board (slot 0). */
static void
engine_note(struct engine *e, int slot, enum engine_event_kind kind,
    const char *serial, const char *device_id, const char *msg)
{
	struct engine_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.time_ms = now_ms();
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
	ring_put(e, &ev);
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
	log_warn("device %s %s", device_id, msg);
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
	    sizeof(*e->inflight))) == NULL) {
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
	pthread_mutex_destroy(&e->mu);
	pthread_mutex_destroy(&e->emit_mu);
	pthread_mutex_destroy(&e->key_mu);
	pthread_cond_destroy(&e->cond);
	free(e->slots);
	free(e->inflight);
	free(e->intermediates_pem);
	free(e);
}

/* Under e->mu. */
static void
engine_set_line(struct engine *e, enum line_state st)
{
	int64_t now = now_ms();

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
}

int
engine_run(struct engine *e, int max_boards)
{
	int n = e->nslots;

	if (max_boards > 0 && max_boards < n)
		n = max_boards;
	pthread_mutex_lock(&e->mu);
	e->started_ms = now_ms();
	engine_set_line(e, LINE_RUNNING);
	pthread_mutex_unlock(&e->mu);
	(void)engine_spawn(e, n, slot_once, 1);
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
	e->started_ms = now_ms();
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
	int64_t now = now_ms();
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
		if (e->slots[i].view.held)
			s->slots_held++;
	}
	pthread_mutex_unlock(&e->mu);
	done = s->counts.passed + s->counts.failed;
	s->boards_per_hour = s->running_ms > 0 ?
	    done * 3600000.0 / (double)s->running_ms : 0.0;
	s->ca_name = e->o.ca != NULL ? e->o.ca->name : "";
	s->ca_state = s->slots_waiting_ca > 0 ? "waiting" : "ok";
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
