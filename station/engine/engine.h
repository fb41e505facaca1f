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

#include <stddef.h>
#include <stdint.h>

#include "station/config/config.h"

struct audit;
struct ca;
struct certcheck_trust;
struct ota_files;
struct plant;

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
	SLOT_WAITING_REGISTRY,	/* the plant registry cannot be reached;
				 * the slot waits with back-off */
};
#define SLOT__LAST SLOT_WAITING_REGISTRY

const char *engine_step_name(enum engine_step s);
const char *engine_state_name(enum slot_state s);

enum engine_event_kind {
	EV_STEP = 0,	/* a step started */
	EV_PASSED,	/* the board is provisioned */
	EV_FAILED,	/* the board failed; message says why */
	EV_INFO,	/* something worth telling (re-provisioning, retries) */
	EV_ALREADY,	/* the board already holds the key and certificate
			 * recorded for its device ID: nothing to do, and
			 * no failure */
	EV_IN_DOUBT,	/* at start-up (slot 0): the audit log shows this
			 * device's last attempt in doubt */
	EV_CONFLICT,	/* (slot 0) the plant registry reports a device ID
			 * this station provisioned and another board holds
			 * too: two certificates, found after an outage
			 * (docs/plant.md, "offline = local") */
};
#define EV__LAST EV_CONFLICT

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

/* Called from slot threads, one call at a time and in seq order
 * (serialised by the engine, outside its state lock: a callback that
 * blocks holds up the emitting slots, not snapshots).  Must not call
 * functions that emit events. */
typedef void (*engine_event_fn)(void *arg, const struct engine_event *ev);

/*
 * A jig that knows more than a fixed device path per slot (USB: the tty of
 * whatever is plugged into a hub port; per-port power).  NULL in
 * engine_opts: every slot is its configured device path, no power
 * switching.  Called from slot threads, so thread-safe.
 */
struct engine_jig_ops {
	/* The device path for slot n now: 0 and path, or KL_ERR_NOT_FOUND
	 * when nothing is plugged into that slot. */
	int (*resolve)(void *ctx, int n, char *path, size_t pathsz);
	/* Switch slot n off and on again: 0, KL_ERR_UNSUPPORTED (this slot
	 * has no switchable power), or an error. */
	int (*power_cycle)(void *ctx, int n);
	void *ctx;
};

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
	const struct engine_jig_ops *jig;	/* borrowed; NULL = plain */
	struct plant *plant;			/* borrowed; NULL without a
						 * plant registry */
	struct plant *plant_reconcile;		/* borrowed; a second
						 * connection for the
						 * reconciliation thread (NULL:
						 * plant is shared) */
	/* Asked before each board starts: a KL_ERR_* (with the reason in
	 * why) stops the station from provisioning: the board fails before
	 * anything is sent to it, saying why.  0 to go on.  NULL: never.
	 * The plant's audit store refusing this station's rows is such a
	 * reason (docs/plant.md).  Called from slot threads. */
	int (*halted)(void *arg, char *why, size_t whysz);
	void *halted_arg;
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
	/* Line mode: the slot starts no board until the operator releases
	 * it (engine_ack or engine_retry); hold_reason says why. */
	int held;
	char hold_reason[200];
};

/* Copy up to max slot views into v; returns how many. */
int engine_slots(struct engine *e, struct engine_slot_view *v, int max);

struct engine_counts {
	int passed;
	int failed;
	int already;		/* boards that were already provisioned */
	int in_flight;
};

void engine_counts(struct engine *e, struct engine_counts *c);

/* ---- line mode: boards provisioned as they arrive ------------------------
 *
 * engine_start() starts one thread per slot that loops for the life of the
 * line: while the line runs and a slot is idle, it looks for a board (a
 * HELLO every second); a board it has not just handled is provisioned.
 * A board that passed or failed is not done again until it changes
 * (another serial answers, or none and then one) or the operator retries
 * it; a failure stays on show until a new board starts or it is
 * acknowledged.  engine_run() above is the one-pass batch mode;
 * the two are not mixed on one engine.
 */

enum line_state {
	LINE_PAUSED = 0,	/* slots finish their board, start no new one */
	LINE_RUNNING,
	LINE_STOPPING,		/* engine_stop() called */
};

const char *engine_line_state_name(enum line_state s);

/* Start the slot threads, the line paused.  0 or KL_ERR_*. */
int engine_start(struct engine *e);
/* Run or pause the line. */
void engine_set_running(struct engine *e, int running);
/*
 * Operator actions on slot number n (as in station.conf).  0;
 * KL_ERR_NOT_FOUND (no such slot); KL_ERR_INVALID (not in a state that
 * allows it: retry and ack need a failed or held slot, and release a
 * held one; a passed board is done
 * again only with re-provisioning; a power cycle needs line mode and a
 * slot with no board in flight: it is carried out by the slot's thread,
 * audited and reported as an event, and this call returns at once);
 * KL_ERR_UNSUPPORTED (power: the jig cannot switch this slot).
 */
int engine_retry(struct engine *e, int n);
int engine_ack(struct engine *e, int n);
int engine_power_cycle(struct engine *e, int n);
/* Something changed in slot n (a hotplug event): look now rather than at
 * the next one-second probe.  n = 0: every slot. */
void engine_kick(struct engine *e, int n);
/*
 * Stop the line: boards not yet writing are rolled back (audited as
 * cancelled), boards writing finish; returns when every slot thread has
 * ended.  Safe to call once from any thread but a slot's.
 */
void engine_stop(struct engine *e);

struct engine_status {
	enum line_state line;
	struct engine_counts counts;
	int64_t started_ms;	/* engine_start() or engine_run(), wall clock */
	int64_t running_ms;	/* time the line has spent running */
	double boards_per_hour;	/* finished boards over running time */
	const char *ca_name;	/* static for the engine's life */
	const char *ca_state;	/* "ok" or "waiting"; static string */
	int slots_waiting_ca;
	int slots_waiting_registry;
	int slots_held;
	/* The plant registry (all 0 without one): */
	int registry_offline;	/* the last claim found it unreachable, and
				 * boards go on the local check */
	int64_t registry_queued;	/* devices provisioned offline, not
					 * yet reconciled */
	int64_t registry_conflicts;	/* conflicts this station is part
					 * of, as its audit log holds them */
};

void engine_status(struct engine *e, struct engine_status *s);

/*
 * The newest conflicts the plant registry reported to this station (either
 * side), newest first, at most max; returns how many.  The full list is
 * the audit log's "registry conflict" rows and the registry's
 * device_conflicts table.
 */
#define ENGINE_CONFLICTS 16

struct engine_conflict {
	int64_t id;			/* device_conflicts.id */
	char detected_at[40];		/* UTC */
	char device_id[80];
	char station[128];		/* who provisioned it offline */
	int slot;
	char cert_serial[80];
	char holder_station[128];	/* whom the registry gives it to */
	int holder_slot;
	char holder_state[16];
	char holder_cert_serial[80];
};

int engine_registry_conflicts(struct engine *e, struct engine_conflict *out,
    int max);

/* The steps of the board in a slot, for a detail view. */
struct engine_step_rec {
	enum engine_step step;
	int64_t start_ms;	/* wall clock */
	int64_t end_ms;		/* 0 while running */
	int failed;		/* this step is where the board failed */
};

struct engine_slot_detail {
	struct engine_slot_view view;
	struct engine_step_rec steps[STEP__COUNT];
	int nsteps;
	char cert_serial[80];
	char key_fpr[65];
};

/* 0, or KL_ERR_NOT_FOUND for no slot number n. */
int engine_slot_detail(struct engine *e, int n, struct engine_slot_detail *d);

/*
 * The latest events, kept in a ring inside the engine (ENGINE_RING
 * entries) so a front-end can show them without being called back.
 * Copies out the events with seq > since, oldest first, at most max;
 * returns how many.
 */
#define ENGINE_RING 256
#define ENGINE_EV_TEXT 256

struct engine_event_copy {
	uint64_t seq;
	int64_t time_ms;
	int slot;
	enum engine_event_kind kind;
	enum engine_step step;
	int err;
	char serial[64];
	char device_id[72];
	char message[ENGINE_EV_TEXT];
};

int engine_events(struct engine *e, uint64_t since,
    struct engine_event_copy *out, int max);

/*
 * Step-duration histograms and counters for /metrics.  Bucket upper
 * bounds in ms are engine_metric_buckets_ms[]; counts are cumulative per
 * bucket as Prometheus wants (the last bucket is +Inf == count).
 */
#define ENGINE_BUCKETS 12
extern const double engine_metric_buckets_ms[ENGINE_BUCKETS - 1];

struct engine_histogram {
	uint64_t bucket[ENGINE_BUCKETS];	/* cumulative */
	uint64_t count;
	double sum_ms;
};

struct engine_metrics {
	struct engine_histogram step[STEP__COUNT];
	struct engine_histogram board;		/* whole board, start to end */
	uint64_t passed_total;
	uint64_t failed_total;
	uint64_t already_total;		/* EV_ALREADY boards */
	uint64_t retries_total;			/* link re-sends */
	uint64_t wire_bytes_total;
};

void engine_metrics(struct engine *e, struct engine_metrics *m);

#endif
