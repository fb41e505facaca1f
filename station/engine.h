/*
 * engine.h: the provisioning engine: one state machine per jig slot.
 *
 * One worker thread per slot (a slot spends nearly all its time waiting on
 * its board or the CA, so threads are cheap and keep each board's sequence
 * plain and linear; 64 slots are 64 mostly-sleeping threads).  Shared
 * pieces are thread-safe: the audit log and the CA serialise inside, the
 * engine's own state sits behind one mutex.  Front-ends (batch JSON lines,
 * the console, the HTTP API) never drive a board: they get events through
 * a callback and read snapshots with engine_slots()/engine_counts().
 *
 * Per board: connect -> identify -> duplicate check -> keygen -> csr -> ca
 * -> validate -> write -> verify -> pop -> done.  A certificate is recorded
 * in the audit log ("issued") before any of it is sent to the board, and
 * every failure is audited with its reason in words.
 */
#ifndef KL_ENGINE_H
#define KL_ENGINE_H

#include <stdint.h>

#include "station/config.h"

struct audit;
struct ca;
struct certcheck_trust;
struct ota_files;

enum engine_step {
	STEP_CONNECT = 0,
	STEP_IDENTIFY,
	STEP_DUPCHECK,
	STEP_KEYGEN,
	STEP_CSR,
	STEP_CA,
	STEP_VALIDATE,
	STEP_WRITE,
	STEP_VERIFY,
	STEP_POP,
	STEP_DONE,
	STEP__COUNT
};

enum slot_state {
	SLOT_IDLE = 0,
	SLOT_WORKING,
	SLOT_WAITING_CA,
	SLOT_PASSED,
	SLOT_FAILED,
};

const char *engine_step_name(enum engine_step s);
const char *engine_state_name(enum slot_state s);

enum engine_event_kind {
	EV_STEP = 0,	/* a step started */
	EV_PASSED,	/* the board is provisioned */
	EV_FAILED,	/* the board failed; message says why */
	EV_INFO,	/* something worth telling (re-provisioning, retries) */
};

const char *engine_event_kind_name(enum engine_event_kind k);

/* Everything borrowed for the duration of the callback. */
struct engine_event {
	uint64_t seq;		/* increases by one per event */
	int64_t time_ms;	/* wall clock, ms since the epoch */
	int slot;
	enum engine_event_kind kind;
	enum engine_step step;
	const char *serial;	/* "" until identified */
	const char *device_id;	/* "" until known */
	const char *message;	/* "" or words */
	int err;		/* KL_ERR_* for EV_FAILED */
	int64_t elapsed_ms;	/* since the board's start */
	/* Set for EV_PASSED and EV_FAILED: */
	const char *cert_serial;
	const char *cert_fpr;
	const char *key_fpr;
	uint64_t bytes_tx, bytes_rx;
	uint32_t retries;
};

/* Called from slot threads, one call at a time (serialised by the engine).
 * Must not block for long and must not call back into the engine. */
typedef void (*engine_event_fn)(void *arg, const struct engine_event *ev);

struct engine_opts {
	const struct config *cfg;		/* borrowed for the engine's life */
	struct ca *ca;				/* borrowed */
	struct audit *audit;			/* borrowed */
	const struct certcheck_trust *trust;	/* borrowed */
	const struct ota_files *ota;		/* borrowed */
	/* Device IDs the operator explicitly asked to re-provision. */
	const char *const *reprovision;
	int nreprovision;
	engine_event_fn on_event;
	void *arg;
};

struct engine;

int engine_new(struct engine **out, const struct engine_opts *o);
void engine_free(struct engine *e);

/*
 * Provision one board in each of the first max_boards configured slots
 * (max_boards <= 0: every slot), all slots at once; returns when all are
 * done.  0 when every board passed, KL_ERR_* otherwise (the first failure's
 * code); the per-board outcomes went out as events.
 */
int engine_run(struct engine *e, int max_boards);

/*
 * Ask in-flight boards to stop: a board that has not started writing is
 * rolled back (ABORT, audited as cancelled); one that is writing finishes.
 * Async-signal-safe.
 */
void engine_cancel(struct engine *e);

struct engine_slot_view {
	int number;
	enum slot_state state;
	enum engine_step step;
	char device[128];
	char serial[257];		/* PROTO_MAX_STR + 1 */
	char device_id[72];
	char error[256];
	int64_t started_ms;	/* wall clock; 0 if never */
	int64_t finished_ms;	/* 0 while running */
};

/* Copy up to max slot views into v; returns how many. */
int engine_slots(struct engine *e, struct engine_slot_view *v, int max);

struct engine_counts {
	int passed;
	int failed;
	int in_flight;
};

void engine_counts(struct engine *e, struct engine_counts *c);

#endif
