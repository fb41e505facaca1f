/*
 * internal.h: what the engine's own files share (station/engine/); nothing
 * outside this folder includes it.  The public interface is engine.h.
 *
 * Four files, one concern each:
 *   line.c    the engine's life (new, run, start, stop), the slot threads
 *             of line mode (probes, holds, operator requests) and the
 *             snapshots front-ends take;
 *   runner.c  one board from start to end: the step table walked in order,
 *             events (board_emit), audit rows (board_audit), the first
 *             failure in words (board_fail), link exchanges (board_call),
 *             the clean-up after a failure (board_clear) and the finish;
 *   steps.c   what each step does, and the step table itself;
 *   reconcile.c  the plant registry after an outage (offline = local):
 *             a thread that records devices provisioned offline and
 *             reports conflicts.
 *
 * Locking: e->mu guards views, counts, the event sequence, in-flight
 * device IDs and line state; e->key_mu makes the key-uniqueness check and
 * the claim on the key one step (the claim is held until the "ca
 * requested" row is on file); e->emit_mu orders events (taken before
 * mu, held without it during the callback).
 */
#ifndef KL_ENGINE_INTERNAL_H
#define KL_ENGINE_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "db/plant.h"
#include "hsm/hsm.h"
#include "common/buf.h"
#include "station/config/devid.h"
#include "station/engine/engine.h"
#include "station/link/link.h"
#include "station/link/proto.h"

#define ENGINE_CHALLENGE_LEN 32
#define ENGINE_HOLD_RING 64	/* the largest [jig] hold_boards */
#define ENGINE_MAX_PEM (16 * 1024)

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
					 * claim on the key (inflight_key)
					 * as one step */
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
	/* Keys whose "ca requested" row is being written, by slot, under
	 * key_mu: a second slot with the same key is refused before the
	 * first one's row is on file (step_ca). */
	struct engine_key_claim {
		char key_fpr[65];
		char device_id[DEVID_MAX + 1];
	} *inflight_key;
	enum hsm_key_type key_type;
	uint8_t tls_id[PROTO_MAX_KEY_ID], cert_id[PROTO_MAX_KEY_ID],
	    uptane_id[PROTO_MAX_KEY_ID];
	size_t tls_id_len, cert_id_len, uptane_id_len;
	char *intermediates_pem;	/* appended to client.pem, or NULL */
	size_t intermediates_len;
	unsigned char *root_der;	/* root.crt as DER for version 2
					 * boards when the file is exactly
					 * one PEM certificate, else NULL
					 * (made once at engine_new) */
	long root_der_len;
	/* Line mode and front-end views, under mu. */
	pthread_cond_t cond;		/* line state or a slot request changed */
	int gate_closed;		/* engine_run: slots wait on cond until
					 * every slot's thread exists */
	enum line_state line;
	int line_mode;			/* engine_start() was used */
	int64_t started_ms;
	int64_t running_ms;		/* accumulated while LINE_RUNNING */
	int64_t running_since;		/* 0 when not running */
	struct engine_event_copy ring[ENGINE_RING];
	struct engine_metrics metrics;
	/* The plant registry after an outage (reconcile.c), under rec_mu. */
	pthread_mutex_t rec_mu;
	pthread_cond_t rec_cond;
	pthread_t rec_thread;
	int rec_init;			/* rec_mu and rec_cond exist */
	int rec_dirty;			/* the queue may have changed */
	int64_t rec_logged_ms;		/* thread only: the last failure
					 * said, and how many since */
	int64_t rec_unlogged;
	int rec_started, rec_stop, rec_wake;
	int registry_offline;		/* the last claim found it down */
	int64_t rec_queued;		/* devices waiting to be reconciled */
	int64_t rec_conflicts;		/* "registry conflict" rows */
	int64_t rec_last_id;		/* newest device_conflicts.id seen */
	struct engine_conflict rec_list[ENGINE_CONFLICTS];	/* newest
								 * first */
	int rec_n;
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
	EVP_PKEY *csr_key;		/* a P-256 CSR's key, the CSR
					 * checked (step_csr); owned */
	uint32_t version;		/* protocol version HELLO agreed */
	uint8_t *keygen_csr;		/* v2: the CSR KEYGEN answered, not
					 * yet checked (step_csr); OPENSSL_free */
	size_t keygen_csr_len;
	uint8_t readback[32];		/* v2: COMMIT's read-back digest */
	size_t readback_len;
	int readback_valid;
	uint8_t *cert;
	size_t cert_len;
	char cert_serial[80];
	char cert_fpr[65];
	X509 *x509;			/* cert parsed, once (board_x509);
					 * NULL until then */
	int staged;			/* files staged on the board */
	int commit_sent;		/* COMMIT went out: the new key, its
					 * certificate and files may be in
					 * place */
	int committed;			/* ... and they are: COMMIT was
					 * answered, or a recovered board
					 * holds them */
	int64_t rows[STEP__COUNT];	/* each step's "ok" row id, 0 if none */
	const struct engine_step_def *def;	/* the running step */
	const char *ok_outcome;		/* the running step's "ok" row: outcome */
	char ok_note[900];		/* ... and words; "" for none */
	char ok_info[1400];		/* an EV_INFO the runner emits once
					 * that row is written; "" for none */
	/* The board already holds credentials this plant recorded: */
	int recovered;			/* ... from an attempt in doubt, which
					 * this one finishes */
	int already;			/* ... from an attempt that passed */
	int plant_claimed;		/* holds the device ID's claim in the
					 * plant registry */
	struct plant_owner plant_owner;	/* who holds it, when refused */
	int plant_offline;		/* [registry] offline = local, and the
					 * registry could not be reached for
					 * the claim: provisioned on the
					 * local check, reconciled later */
	int plant_done;			/* the registry learnt the pass, or
					 * it was queued for reconciliation */
	char why[512];			/* failure in words */
	struct buf req, resp;
};

/* ---- the step table (steps.c), walked by the runner (runner.c) ---------- */

typedef int (*step_fn)(struct board *);

/* Which boards run a step: every one, a board that needs new
 * credentials, or not one that was already provisioned. */
enum step_for { FOR_ALL, FOR_NEW, FOR_NOT_ALREADY };

/*
 * One step.  The runner (board_run_steps) walks the table in order: it
 * skips a step whose runs_for does not fit the board, checks for an
 * operator stop while cancellable, marks the step, calls fn, and when fn
 * returns 0 writes the step's "ok" row under the audit name (outcome and
 * words from b->ok_outcome and b->ok_note when the step set them), which
 * fails the board if it cannot be written, and then emits b->ok_info, so
 * an event never tells of a success the log does not hold.  A step
 * writes its own rows only for what is not its success ("ca requested",
 * "validate refused").
 */
struct engine_step_def {
	enum engine_step step;
	step_fn fn;
	const char *audit;	/* the step in the audit log; NULL: no row */
	int cancellable;	/* nothing on the board yet: an operator stop
				 * ends the board before this step */
	int power_retry;	/* a board that stops answering here may be
				 * power-cycled and tried once more: no
				 * certificate has been asked for yet */
	enum step_for runs_for;
};

extern const struct engine_step_def engine_steps[];
extern const size_t engine_nsteps;

/* The operator asked to re-provision device ID id (steps.c). */
int engine_reprovision_allowed(const struct engine *e, const char *id);

/* ---- runner.c ----------------------------------------------------------- */

int64_t engine_now_ms(void);		/* wall clock, for what is shown */
int64_t engine_mono_ms(void);		/* for deadlines and sleeps */
void engine_hex(const uint8_t *p, size_t n, char *out);	/* 2n + 1 */
int engine_sha256(const void *p, size_t n, uint8_t out[32]);
int engine_dup_bytes(const uint8_t *p, size_t n, uint8_t **out);
void engine_ring_put(struct engine *e, const struct engine_event *ev);

void board_init(struct board *b, struct engine_slot *s, int64_t t0);
void board_cleanup(struct board *b);
void board_emit(struct board *b, enum engine_event_kind kind, int err,
    const char *msg);
int board_audit_row(struct board *b, const char *step, const char *outcome,
    const char *error, int64_t *row);
int board_audit(struct board *b, const char *step, const char *outcome,
    const char *error);
/* b->cert parsed, once per certificate (OpenSSL's decoder costs about a
 * million instructions a time); NULL when it does not parse.  Borrowed. */
X509 *board_x509(struct board *b);
struct log_board;
const struct log_board *board_log_of(const struct board *b,
    struct log_board *lb);
int board_fail(struct board *b, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int board_text(char *s);
int board_call(struct board *b, uint8_t type, int timeout_ms);
int board_resp_str(struct board *b, uint8_t tag, char *out, size_t outsz);
int board_resp_bytes(struct board *b, uint8_t tag, size_t max,
    const uint8_t **p, size_t *n);
int board_sleep(struct board *b, int64_t ms);
int board_registry_wait(struct board *b, const char *what,
    int (*op)(struct board *, char *, size_t), char *why, size_t whysz);
void board_set_state(struct board *b, enum slot_state st);
void slot_provision(struct engine_slot *s);

/* ---- reconcile.c: the plant registry after an outage -------------------- */

int reconcile_start(struct engine *e);	/* no-op without a registry */
void reconcile_stop(struct engine *e);	/* a last round, then joins */
void reconcile_wake(struct engine *e);	/* a device was queued */
void reconcile_set_offline(struct engine *e, int offline);
void reconcile_status(struct engine *e, struct engine_status *s);

/* The "registry queued" row's words start so when re-provisioning was
 * asked for: the reconciliation claims the device as re-provisioned. */
#define BOARD_REPROVISION_NOTE "re-provisioning asked for; "

/* ---- line.c ------------------------------------------------------------- */

int slot_device(struct engine_slot *s, char *path, size_t pathsz);
/* An event that belongs to no board (slot 0). */
void engine_note(struct engine *e, int slot, enum engine_event_kind kind,
    const char *serial, const char *device_id, const char *msg);
void engine_wait(struct engine *e, int ms);	/* under e->mu */

/*
 * The claims on keys between the uniqueness check and the "ca requested"
 * row (e->inflight_key; step_ca), with e->key_mu held.  claimed: the slot
 * (index) that claims key_fpr for a device other than device_id, other
 * than self; -1 when none (one device in two slots is the duplicate
 * check's to refuse).  claim: self's claim, or with key_fpr NULL its
 * release.
 */
int engine_key_claimed(const struct engine *e, int self, const char *key_fpr,
    const char *device_id);
void engine_key_claim(struct engine *e, int self, const char *key_fpr,
    const char *device_id);

#endif
