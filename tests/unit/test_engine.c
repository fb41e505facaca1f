/*
 * test_engine.c: the real engine against real board agents on a virtual
 * jig (ptys, SoftHSM tokens), with a CA that makes mistakes.
 *
 * The CA here is the real local CA (fleet key in a SoftHSM station token)
 * behind a wrapper that, for chosen boards, asks it for the wrong thing:
 * a certificate for a key the board does not hold, or for another device
 * ID.  Both certificates chain to the fleet root, so only the station's
 * own checks stand between them and the board.  They must be audited as
 * issued, refused, and never written.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "db/audit.h"
#include "station/ca/ca.h"
#include "station/config/config.h"
#include "station/engine/engine.h"
#include "station/engine/internal.h"
#include "common/err.h"
#include "station/station.h"
#include "tests/unit/testutil.h"

static char dir[256];
static char top[4096];

enum { MODE_HONEST, MODE_WRONG_KEY, MODE_WRONG_CN };

struct tamper {
	struct ca *real;
	char wrong_key_id[80];	/* device ID that gets a foreign key */
	char wrong_cn_id[80];	/* device ID that gets another CN */
};

/* A CSR for a fresh key the board never saw, with the right CN. */
static int
foreign_csr(const char *cn, uint8_t **der, size_t *len)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	unsigned char *out = NULL;
	int n;

	assert_non_null(pk);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	    (const unsigned char *)cn, -1, -1, 0), 1);
	assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
	assert_int_equal(X509_REQ_set_pubkey(req, pk), 1);
	assert_true(X509_REQ_sign(req, pk, EVP_sha256()) > 0);
	n = i2d_X509_REQ(req, &out);
	assert_true(n > 0);
	*der = out;
	*len = (size_t)n;
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(pk);
	return 0;
}

static int
tamper_issue(void *ctx, const struct ca_request *req, uint8_t **cert,
    size_t *len, char *err, size_t errsz)
{
	struct tamper *t = ctx;
	struct ca_request r2 = *req;
	uint8_t *csr = NULL;
	size_t csr_len;
	int rc;

	if (strcmp(req->device_id, t->wrong_key_id) == 0) {
		foreign_csr(req->device_id, &csr, &csr_len);
		r2.csr_der = csr;
		r2.csr_len = csr_len;
		r2.key = NULL;	/* the engine's check was of the old bytes */
	} else if (strcmp(req->device_id, t->wrong_cn_id) == 0) {
		r2.device_id = "impostor-0001";
	}
	rc = ca_issue(t->real, &r2, cert, len, err, errsz);
	OPENSSL_free(csr);
	return rc;
}

static const struct ca_ops tamper_ops = {
	.name = "tamper",
	.issue = tamper_issue,
	.free = NULL,
};

struct seen {
	int passed[4], failed[4], err[4];
	char why[4][512];
};

static void
on_event(void *arg, const struct engine_event *ev)
{
	struct seen *s = arg;

	if (ev->slot < 1 || ev->slot > 3)
		return;
	if (ev->kind == EV_PASSED)
		s->passed[ev->slot]++;
	if (ev->kind == EV_FAILED) {
		s->failed[ev->slot]++;
		s->err[ev->slot] = ev->err;
		snprintf(s->why[ev->slot], sizeof(s->why[0]), "%s", ev->message);
	}
}

static int
setup(void **state)
{
	(void)state;
	if (getcwd(top, sizeof(top)) == NULL ||
	    tu_tmpdir(dir, sizeof(dir), "test_engine") != 0)
		return -1;
	return tu_line_start(top, dir, 3);
}

static int
teardown(void **state)
{
	(void)state;
	tu_line_cleanup(top, dir);
	return 0;
}

static int
dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n == 0;
}

static int
halted_cb(void *arg, char *why, size_t whysz)
{
	(*(int *)arg)++;
	snprintf(why, whysz, "the plant store refused row 7");
	return KL_ERR_AUDIT_CHAIN;
}

/*
 * A station told to stop provisioning (engine_opts.halted) fails every
 * board before anything is sent to it, saying why.
 */
static void
test_halted(void **state)
{
	struct station st;
	struct engine_opts eo;
	struct engine *e = NULL;
	struct seen seen;
	char err[1024], path[512];
	int asked = 0, i;

	(void)state;
	snprintf(path, sizeof(path), "%s/station.conf", dir);
	assert_int_equal(station_open(&st, path, err, sizeof(err)), 0);
	assert_int_equal(tu_sh("sqlite3 %s/audit.db \"SELECT count(*) FROM "
	    "events WHERE step='identify'\" >%s/identify.before", dir, dir), 0);
	memset(&seen, 0, sizeof(seen));
	station_engine_opts(&st, &eo);
	eo.on_event = on_event;
	eo.arg = &seen;
	eo.halted = halted_cb;
	eo.halted_arg = &asked;
	assert_int_equal(engine_new(&e, &eo), 0);
	assert_int_equal(engine_run(e, 0), KL_ERR_AUDIT_CHAIN);
	engine_free(e);
	station_close(&st);
	assert_int_equal(asked, 3);
	for (i = 1; i <= 3; i++) {
		assert_int_equal(seen.failed[i], 1);
		assert_int_equal(seen.err[i], KL_ERR_AUDIT_CHAIN);
		assert_non_null(strstr(seen.why[i], "station stopped "
		    "provisioning: the plant store refused row 7"));
	}
	/* Not one board was spoken to. */
	assert_int_equal(tu_sh("sqlite3 %s/audit.db \"SELECT count(*) FROM "
	    "events WHERE step='identify'\" | cmp -s - %s/identify.before",
	    dir, dir), 0);
}

static void
test_wrong_certificates_refused(void **state)
{
	struct station st;
	struct tamper t;
	struct ca tca;
	struct engine_opts eo;
	struct engine *e = NULL;
	struct seen seen;
	char err[1024], path[512], serial[3][32];
	FILE *f;
	int i;

	(void)state;
	snprintf(path, sizeof(path), "%s/station.conf", dir);
	assert_int_equal(station_open(&st, path, err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/boards.list", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	for (i = 0; i < 3; i++)
		assert_int_equal(fscanf(f, "%31s", serial[i]), 1);
	fclose(f);

	memset(&t, 0, sizeof(t));
	t.real = st.ca;
	/* The demo boards' model is "keyline-virtual". */
	snprintf(t.wrong_key_id, sizeof(t.wrong_key_id), "keyline-virtual-%s",
	    serial[0]);
	snprintf(t.wrong_cn_id, sizeof(t.wrong_cn_id), "keyline-virtual-%s",
	    serial[1]);
	memset(&tca, 0, sizeof(tca));
	tca.ops = &tamper_ops;
	tca.ctx = &t;
	snprintf(tca.name, sizeof(tca.name), "tamper");

	memset(&seen, 0, sizeof(seen));
	memset(&eo, 0, sizeof(eo));
	eo.cfg = st.cfg;
	eo.ca = &tca;
	eo.audit = st.audit;
	eo.trust = st.trust;
	eo.ota = &st.ota;
	eo.on_event = on_event;
	eo.arg = &seen;
	assert_int_equal(engine_new(&e, &eo), 0);
	assert_int_equal(engine_run(e, 0), KL_ERR_CERT_INVALID);

	assert_int_equal(seen.failed[1], 1);
	assert_int_equal(seen.err[1], KL_ERR_CERT_INVALID);
	assert_non_null(strstr(seen.why[1], "public key differs"));
	assert_int_equal(seen.failed[2], 1);
	assert_int_equal(seen.err[2], KL_ERR_CERT_INVALID);
	assert_non_null(strstr(seen.why[2], "impostor-0001"));
	assert_int_equal(seen.passed[3], 1);

	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/boards/%s/rootfs/var/sota/import",
		    dir, serial[i]);
		assert_true(dir_empty(path));
	}
	snprintf(path, sizeof(path),
	    "%s/boards/%s/rootfs/var/sota/import/client.pem", dir, serial[2]);
	{
		struct stat sb;

		assert_int_equal(stat(path, &sb), 0);
	}
	engine_free(e);
	station_close(&st);

	/* Both bad certificates were recorded as issued, then refused. */
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='issued'\")\" = 3", dir), 0);
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='validate' AND outcome='refused'\")\" = 2",
	    dir), 0);
}

#define OUTAGE_MAX_TRIES 256

/* A CA that is down for its first `down` calls, or for good (-1).  It
 * notes when each board asked (ms, monotonic), board by board. */
struct outage {
	struct ca *real;
	int down;
	int calls;
	const char *const *ids;		/* the boards' device IDs, 3 */
	int64_t at[3][OUTAGE_MAX_TRIES];
	int tries[3];
	pthread_mutex_t mu;
};

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
outage_issue(void *ctx, const struct ca_request *req, uint8_t **cert,
    size_t *len, char *err, size_t errsz)
{
	struct outage *o = ctx;
	int n, i;

	pthread_mutex_lock(&o->mu);
	n = ++o->calls;
	for (i = 0; o->ids != NULL && i < 3; i++)
		if (strcmp(req->device_id, o->ids[i]) == 0 &&
		    o->tries[i] < OUTAGE_MAX_TRIES)
			o->at[i][o->tries[i]++] = mono_ms();
	pthread_mutex_unlock(&o->mu);
	if (o->down < 0 || n <= o->down) {
		/* With an escape sequence, as a hostile or broken server's
		 * words may carry: it must not reach the audit log. */
		snprintf(err, errsz, "connection refused \033[31m(test "
		    "outage)");
		return KL_ERR_UNAVAILABLE;
	}
	return ca_issue(o->real, req, cert, len, err, errsz);
}

static const struct ca_ops outage_ops = {
	.name = "outage",
	.issue = outage_issue,
	.free = NULL,
};

struct waits {
	int waiting, resumed, passed, failed, unavailable;
};

static void
on_wait_event(void *arg, const struct engine_event *ev)
{
	struct waits *w = arg;

	if (ev->kind == EV_INFO && strstr(ev->message, "waiting for the CA"))
		w->waiting++;
	if (ev->kind == EV_INFO && strstr(ev->message, "CA answered after"))
		w->resumed++;
	if (ev->kind == EV_PASSED)
		w->passed++;
	if (ev->kind == EV_FAILED) {
		w->failed++;
		if (ev->err == KL_ERR_UNAVAILABLE)
			w->unavailable++;
	}
}

/* Run all three boards again (re-provisioning them) through ops, with
 * the CA retry back-off from base_ms doubling up to max_ms. */
static void
run_outage(struct outage *o, int deadline_s, int base_ms, int max_ms,
    struct waits *w)
{
	static char ids[3][80];
	const char *reprov[3];
	struct station st;
	struct ca oca;
	struct engine_opts eo;
	struct engine *e = NULL;
	char err[1024], path[512], serial[32];
	FILE *f;
	int i;

	snprintf(path, sizeof(path), "%s/station.conf", dir);
	assert_int_equal(station_open(&st, path, err, sizeof(err)), 0);
	st.cfg->ca_retry_base_ms = base_ms;
	st.cfg->ca_retry_max_ms = max_ms;
	st.cfg->ca_wait_deadline_s = deadline_s;
	snprintf(path, sizeof(path), "%s/boards.list", dir);
	assert_non_null(f = fopen(path, "r"));
	for (i = 0; i < 3; i++) {
		assert_int_equal(fscanf(f, "%31s", serial), 1);
		snprintf(ids[i], sizeof(ids[i]), "keyline-virtual-%s", serial);
		reprov[i] = ids[i];
	}
	fclose(f);
	o->real = st.ca;
	o->ids = reprov;
	pthread_mutex_init(&o->mu, NULL);
	memset(&oca, 0, sizeof(oca));
	oca.ops = &outage_ops;
	oca.ctx = o;
	snprintf(oca.name, sizeof(oca.name), "outage");
	memset(w, 0, sizeof(*w));
	memset(&eo, 0, sizeof(eo));
	eo.cfg = st.cfg;
	eo.ca = &oca;
	eo.audit = st.audit;
	eo.trust = st.trust;
	eo.ota = &st.ota;
	eo.reprovision = reprov;
	eo.nreprovision = 3;
	eo.on_event = on_wait_event;
	eo.arg = w;
	assert_int_equal(engine_new(&e, &eo), 0);
	(void)engine_run(e, 0);
	engine_free(e);
	station_close(&st);
	pthread_mutex_destroy(&o->mu);
	o->ids = NULL;
}

static void
test_ca_outage_waits_then_completes(void **state)
{
	struct outage o = { .down = 6 };
	struct waits w;

	(void)state;
	run_outage(&o, 30, 20, 80, &w);
	assert_int_equal(w.passed, 3);
	assert_int_equal(w.failed, 0);
	assert_true(w.waiting >= 1);
	assert_int_equal(w.waiting, w.resumed);
	assert_true(o.calls >= 9);
	/* The waits are in the audit log, and one certificate per board. */
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='ca' AND outcome='waiting'\")\" -ge 1",
	    dir), 0);
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='issued' AND error LIKE 'CA answered%%'\")\""
	    " -ge 1", dir), 0);
}

static void
test_ca_outage_deadline_fails_cleanly(void **state)
{
	struct outage o = { .down = -1 };
	struct waits w;
	char path[512];
	int i;

	(void)state;
	/* Boards left as they were by the previous runs: remember them. */
	assert_int_equal(tu_sh("cd %s && sqlite3 audit.db \"SELECT count(*) FROM "
	    "events WHERE step='issued'\" >issued.before", dir), 0);
	run_outage(&o, 1, 20, 80, &w);
	assert_int_equal(w.passed, 0);
	assert_int_equal(w.failed, 3);
	assert_int_equal(w.unavailable, 3);
	/* No certificate was issued, so none is recorded. */
	assert_int_equal(tu_sh("cd %s && test \"$(sqlite3 audit.db \"SELECT "
	    "count(*) FROM events WHERE step='issued'\")\" = \"$(cat "
	    "issued.before)\"", dir), 0);
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='ca' AND outcome='failed' AND error LIKE "
	    "'CA unreachable for 1 s%%'\")\" = 3", dir), 0);
	/* The server's words arrive, made printable. */
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE instr(error, char(27)) > 0\")\" = 0", dir), 0);
	assert_int_equal(tu_sh("test \"$(sqlite3 %s/audit.db \"SELECT count(*) "
	    "FROM events WHERE step='ca' AND outcome='failed' AND error LIKE "
	    "'CA unreachable for 1 s (%%): connection refused ?[31m(test "
	    "outage)%%'\")\" = 3", dir), 0);
	(void)path;
	(void)i;
}

/*
 * While the CA is down the wait doubles: each board's n-th wait is at
 * least half of min(base * 2^n, max) (half fixed, half random), so the
 * first waits grow 25, 50, 100, 200 ms and then stay at 200 to 400 ms.
 * A wait left at the base delay would ask every 25 to 50 ms.  Only lower
 * bounds on the gaps and an upper bound on the tries are asserted: a
 * loaded machine makes waits longer, never shorter.
 */
static void
test_ca_backoff_doubles(void **state)
{
	struct outage o = { .down = -1 };
	struct waits w;
	int64_t delay, gap;
	int b, i;

	(void)state;
	run_outage(&o, 2, 50, 400, &w);
	assert_int_equal(w.failed, 3);
	assert_int_equal(w.unavailable, 3);
	for (b = 0; b < 3; b++) {
		/* Waits of at least 25, 50, 100, 200, 200... ms fit 2 s
		 * twelve times after the first try (at 1975 ms), and the
		 * last wait, cut at the deadline, gives one try more: 14 at
		 * most.  At the base delay it would be some 50. */
		if (o.tries[b] < 5 || o.tries[b] > 14)
			fail_msg("board %d asked the CA %d times in 2 s "
			    "(back-off from 50 ms doubling to 400 ms: 5 to 14)",
			    b + 1, o.tries[b]);
		print_message("board %d asked the CA %d times\n", b + 1,
		    o.tries[b]);
		delay = 50;
		/* The last gap may be cut short by the deadline. */
		for (i = 1; i < o.tries[b] - 1; i++) {
			gap = o.at[b][i] - o.at[b][i - 1];
			/* 2 ms for clocks read in whole milliseconds. */
			if (gap < delay / 2 - 2)
				fail_msg("board %d: wait %d before asking the "
				    "CA again was %lld ms, less than half of "
				    "%lld ms", b + 1, i, (long long)gap,
				    (long long)delay);
			delay = delay * 2 > 400 ? 400 : delay * 2;
		}
	}
}

/* An event consumer that stops reading (stdout of batch piped into a
 * process that hangs): it blocks inside its first event until released. */
struct blocker {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int entered, release, status_done;
	struct engine *e;
};

static void
on_block(void *arg, const struct engine_event *ev)
{
	struct blocker *bl = arg;

	(void)ev;
	pthread_mutex_lock(&bl->mu);
	if (!bl->entered) {
		bl->entered = 1;
		pthread_cond_broadcast(&bl->cv);
		while (!bl->release)
			pthread_cond_wait(&bl->cv, &bl->mu);
	}
	pthread_mutex_unlock(&bl->mu);
}

static void *
block_run(void *arg)
{
	struct blocker *bl = arg;

	(void)engine_run(bl->e, 0);
	return NULL;
}

static void *
block_status(void *arg)
{
	struct blocker *bl = arg;
	struct engine_status st;

	engine_status(bl->e, &st);
	pthread_mutex_lock(&bl->mu);
	bl->status_done = 1;
	pthread_cond_broadcast(&bl->cv);
	pthread_mutex_unlock(&bl->mu);
	return NULL;
}

/* Wait for *flag under bl->mu, at most secs; its value. */
static int
block_wait(struct blocker *bl, const int *flag, int secs)
{
	struct timespec ts;
	int v;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	pthread_mutex_lock(&bl->mu);
	while (!*flag &&
	    pthread_cond_timedwait(&bl->cv, &bl->mu, &ts) == 0)
		;
	v = *flag;
	pthread_mutex_unlock(&bl->mu);
	return v;
}

/* While the event consumer is stuck, status snapshots (the HTTP API, the
 * console) still answer: the callback does not run under the engine's
 * state lock. */
static void
test_stuck_event_consumer(void **state)
{
	struct blocker bl;
	struct station st;
	struct engine_opts eo;
	pthread_t run, stat;
	char err[1024], path[512];
	int answered;

	(void)state;
	memset(&bl, 0, sizeof(bl));
	pthread_mutex_init(&bl.mu, NULL);
	pthread_cond_init(&bl.cv, NULL);
	snprintf(path, sizeof(path), "%s/station.conf", dir);
	assert_int_equal(station_open(&st, path, err, sizeof(err)), 0);
	memset(&eo, 0, sizeof(eo));
	eo.cfg = st.cfg;
	eo.ca = st.ca;
	eo.audit = st.audit;
	eo.trust = st.trust;
	eo.ota = &st.ota;
	eo.on_event = on_block;
	eo.arg = &bl;
	assert_int_equal(engine_new(&bl.e, &eo), 0);
	assert_int_equal(pthread_create(&run, NULL, block_run, &bl), 0);
	assert_true(block_wait(&bl, &bl.entered, 60));
	assert_int_equal(pthread_create(&stat, NULL, block_status, &bl), 0);
	answered = block_wait(&bl, &bl.status_done, 10);
	/* Let everything finish before judging, so nothing is left stuck. */
	pthread_mutex_lock(&bl.mu);
	bl.release = 1;
	pthread_cond_broadcast(&bl.cv);
	pthread_mutex_unlock(&bl.mu);
	pthread_join(stat, NULL);
	pthread_join(run, NULL);
	engine_free(bl.e);
	station_close(&st);
	pthread_cond_destroy(&bl.cv);
	pthread_mutex_destroy(&bl.mu);
	assert_true(answered);
}

/*
 * The claims on keys (step_ca): while one slot's "ca requested" row is
 * being written, a board in another slot with the same key and another
 * device ID is refused; the same key for the same device (the duplicate
 * check's case), another key, or the slot's own claim is not; a released
 * claim refuses nothing.  Deterministic, where 34-key-claim-concurrent
 * sees the window only when the boards meet in it.
 */
static void
test_key_claims(void **state)
{
	static const char fa[] = "aa11", fb[] = "bb22";
	struct engine e;

	(void)state;
	memset(&e, 0, sizeof(e));
	e.nslots = 3;
	e.inflight_key = calloc(3, sizeof(*e.inflight_key));
	assert_non_null(e.inflight_key);
	assert_int_equal(engine_key_claimed(&e, 1, fa, "dev-b"), -1);
	engine_key_claim(&e, 0, fa, "dev-a");
	assert_int_equal(engine_key_claimed(&e, 1, fa, "dev-b"), 0);
	assert_int_equal(engine_key_claimed(&e, 2, fa, "dev-c"), 0);
	assert_int_equal(engine_key_claimed(&e, 0, fa, "dev-b"), -1);
	assert_int_equal(engine_key_claimed(&e, 1, fa, "dev-a"), -1);
	assert_int_equal(engine_key_claimed(&e, 1, fb, "dev-b"), -1);
	engine_key_claim(&e, 2, fb, "dev-c");
	assert_int_equal(engine_key_claimed(&e, 1, fb, "dev-b"), 2);
	assert_int_equal(engine_key_claimed(&e, 1, fa, "dev-b"), 0);
	engine_key_claim(&e, 0, NULL, NULL);
	assert_int_equal(engine_key_claimed(&e, 1, fa, "dev-b"), -1);
	assert_int_equal(engine_key_claimed(&e, 1, fb, "dev-b"), 2);
	engine_key_claim(&e, 2, NULL, NULL);
	assert_int_equal(engine_key_claimed(&e, 1, fb, "dev-b"), -1);
	free(e.inflight_key);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_claims),
		cmocka_unit_test(test_wrong_certificates_refused),
		cmocka_unit_test(test_ca_outage_waits_then_completes),
		cmocka_unit_test(test_ca_outage_deadline_fails_cleanly),
		cmocka_unit_test(test_ca_backoff_doubles),
		cmocka_unit_test(test_stuck_event_consumer),
		cmocka_unit_test(test_halted),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
