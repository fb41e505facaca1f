/*
 * test_audit_state.c: what the audit log says of a device before a board
 * claiming it is touched (audit_device_state) and what a station lists
 * at start-up as in doubt (audit_in_doubt), on real SQLite files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "db/audit.h"
#include "common/err.h"

struct fx {
	char dir[64];
	char path[128];
	struct audit *a;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kl-astate-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	if (audit_open(&f->a, f->path) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char p[160];
	static const char *const suffix[] = { "", "-wal", "-shm", "-journal" };
	size_t i;

	audit_close(f->a);
	for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
		(void)unlink(p);
	}
	(void)rmdir(f->dir);
	free(f);
	return 0;
}

/* One row as the engine writes it; key and certificate fingerprints are
 * "K<gen>" and "C<gen>" once the attempt has them (gen 0: none yet). */
static int64_t
row(struct audit *a, const char *station, int slot, const char *dev,
    const char *step, const char *outcome, int key_gen, int cert_gen)
{
	char key[8], cert[8], serial[8];
	struct audit_event ev;
	int64_t id = 0;

	snprintf(key, sizeof(key), "K%d", key_gen);
	snprintf(cert, sizeof(cert), "C%d", cert_gen);
	snprintf(serial, sizeof(serial), "S%d", cert_gen);
	memset(&ev, 0, sizeof(ev));
	ev.station = station;
	ev.slot = slot;
	ev.board_serial = "B1";
	ev.device_id = dev;
	ev.step = step;
	ev.outcome = outcome;
	ev.key_fpr = key_gen ? key : NULL;
	ev.cert_fpr = cert_gen ? cert : NULL;
	ev.cert_serial = cert_gen ? serial : NULL;
	assert_int_equal(audit_append(a, &ev, &id), 0);
	return id;
}

/* A whole attempt up to (and including) the step named last. */
static int64_t
attempt(struct audit *a, const char *st, int slot, const char *dev, int gen,
    const char *last)
{
	static const struct { const char *step, *outcome; int k, c; } seq[] = {
		{ "identify", "ok", 0, 0 }, { "dupcheck", "ok", 0, 0 },
		{ "keygen", "ok", 1, 0 }, { "csr", "ok", 1, 0 },
		{ "ca", "requested", 1, 0 }, { "issued", "ok", 1, 1 },
		{ "validate", "ok", 1, 1 }, { "commit", "requested", 1, 1 },
		{ "write", "ok", 1, 1 }, { "verify", "ok", 1, 1 },
		{ "pop", "ok", 1, 1 }, { "done", "passed", 1, 1 },
	};
	size_t i;
	int64_t id = 0;

	for (i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
		id = row(a, st, slot, dev, seq[i].step, seq[i].outcome,
		    seq[i].k ? gen : 0, seq[i].c ? gen : 0);
		if (strcmp(seq[i].step, last) == 0)
			break;
	}
	return id;
}

static void
test_new_device(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	memset(&s, 0x5a, sizeof(s));
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_int_equal(s.provisioned, 0);
	assert_string_equal(s.doubt_step, "");
	assert_int_equal(audit_device_state(f->a, NULL, INT64_MAX, &s),
	    KL_ERR_INVALID);
	assert_int_equal(audit_device_state(f->a, "D1", 0, &s),
	    KL_ERR_INVALID);
}

static void
test_passed(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 3, "D1", 1, "done");
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_int_equal(s.provisioned, 1);
	assert_int_equal(s.prov_passed, 1);
	assert_string_equal(s.prov.key_fpr, "K1");
	assert_string_equal(s.prov.cert_fpr, "C1");
	assert_string_equal(s.prov.cert_serial, "S1");
	assert_string_equal(s.prov.station, "st-1");
	assert_int_equal(s.prov.slot, 3);
	assert_string_equal(s.doubt_step, "");
	/* Another device's rows change nothing. */
	assert_int_equal(audit_device_state(f->a, "D2", INT64_MAX, &s), 0);
	assert_int_equal(s.provisioned, 0);
}

/* The station died after asking the CA: in doubt at "ca". */
static void
test_doubt_ca(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;
	int64_t id;

	attempt(f->a, "st-1", 1, "D1", 1, "done");
	attempt(f->a, "st-1", 1, "D1", 2, "validate");
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "ca");
	assert_string_equal(s.doubt.cert_fpr, "C2");
	assert_string_equal(s.doubt.key_fpr, "K2");
	/* The older passed record still stands. */
	assert_int_equal(s.provisioned, 1);
	assert_string_equal(s.prov.cert_fpr, "C1");
	/* The attempt in progress (from its identify row on) is not judged. */
	id = row(f->a, "st-1", 1, "D1", "identify", "ok", 0, 0);
	attempt(f->a, "st-1", 1, "D1", 3, "ca");
	assert_int_equal(audit_device_state(f->a, "D1", id, &s), 0);
	assert_string_equal(s.doubt_step, "ca");
	assert_string_equal(s.doubt.cert_fpr, "C2");
}

/* Before the CA was asked nothing can be on the board: no doubt. */
static void
test_no_doubt_before_ca(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "csr");
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");
	assert_int_equal(s.provisioned, 0);
}

/* COMMIT went out: in doubt at "commit" until a row says how it ended. */
static void
test_doubt_commit(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "commit");
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "commit");
	assert_int_equal(s.provisioned, 0);
	/* It failed without an answer to COMMIT and was not cleared: still
	 * in doubt. */
	row(f->a, "st-1", 1, "D1", "write", "failed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "commit");

	/* Cleared: not in doubt. */
	attempt(f->a, "st-1", 1, "D2", 1, "commit");
	row(f->a, "st-1", 1, "D2", "clear", "ok", 1, 1);
	row(f->a, "st-1", 1, "D2", "write", "failed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D2", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");

	/* Committed, failed a later check, not cleared: in doubt at
	 * "clear"; cleared, it is not. */
	attempt(f->a, "st-1", 1, "D4", 1, "write");
	row(f->a, "st-1", 1, "D4", "clear", "failed", 1, 1);
	row(f->a, "st-1", 1, "D4", "pop", "failed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D4", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "clear");
	attempt(f->a, "st-1", 1, "D5", 1, "write");
	row(f->a, "st-1", 1, "D5", "clear", "ok", 1, 1);
	row(f->a, "st-1", 1, "D5", "pop", "failed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D5", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");

	/* Committed (write ok), never verified: in doubt at "verify", and
	 * provisioned (not passed). */
	attempt(f->a, "st-1", 1, "D3", 1, "write");
	assert_int_equal(audit_device_state(f->a, "D3", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "verify");
	assert_int_equal(s.provisioned, 1);
	assert_int_equal(s.prov_passed, 0);
}

/* Rows of another slot or station that name the same ID (a duplicate being
 * refused there) are not part of the attempt and do not end it. */
static void
test_other_slot_rows(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "validate");
	row(f->a, "st-1", 2, "D1", "dupcheck", "refused", 0, 0);
	row(f->a, "st-2", 1, "D1", "done", "failed", 0, 0);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "ca");
	assert_string_equal(s.doubt.station, "st-1");
	assert_int_equal(s.doubt.slot, 1);
}

/* A resolved doubt (a later attempt with an outcome) is no doubt. */
static void
test_resolved(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "validate");
	row(f->a, "st-1", 1, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-1", 1, "D1", "recover", "provisioned", 1, 1);
	row(f->a, "st-1", 1, "D1", "done", "passed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");
	assert_int_equal(s.prov_passed, 1);
	/* "done already" repeats the record and does not replace it. */
	row(f->a, "st-9", 4, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-9", 4, "D1", "done", "already", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.prov.station, "st-1");
}

struct listed {
	char ids[8][16];
	char steps[8][16];
	int n;
};

static int
collect(void *arg, const char *device_id, const struct audit_device_state *s)
{
	struct listed *l = arg;

	if (l->n < 8) {
		snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", device_id);
		snprintf(l->steps[l->n], sizeof(l->steps[0]), "%s",
		    s->doubt_step);
		l->n++;
	}
	return 0;
}

static void
test_in_doubt_list(void **state)
{
	struct fx *f = *state;
	struct listed l;
	int64_t more = -1;

	memset(&l, 0, sizeof(l));
	attempt(f->a, "st-1", 1, "D1", 1, "done");	/* passed */
	attempt(f->a, "st-1", 2, "D2", 1, "validate");	/* ca */
	attempt(f->a, "st-1", 3, "D3", 1, "csr");	/* nothing yet */
	attempt(f->a, "st-1", 4, "D4", 1, "commit");	/* commit */
	attempt(f->a, "st-1", 5, "D5", 1, "validate");	/* resolved below */
	row(f->a, "st-1", 5, "D5", "validate", "refused", 1, 1);
	assert_int_equal(audit_in_doubt(f->a, collect, &l, &more), 0);
	assert_int_equal(more, 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.ids[0], "D2");
	assert_string_equal(l.steps[0], "ca");
	assert_string_equal(l.ids[1], "D4");
	assert_string_equal(l.steps[1], "commit");
	assert_int_equal(audit_in_doubt(f->a, NULL, &l, &more),
	    KL_ERR_INVALID);
}

static int
stop_at_first(void *arg, const char *device_id,
    const struct audit_device_state *s)
{
	(void)arg;
	(void)device_id;
	(void)s;
	return 42;
}

static void
test_in_doubt_stop(void **state)
{
	struct fx *f = *state;

	attempt(f->a, "st-1", 2, "D2", 1, "validate");
	assert_int_equal(audit_in_doubt(f->a, stop_at_first, NULL, NULL), 42);
}

/* A board refused in another slot while this attempt ran (a clone with
 * the same serial) neither ends nor hides it. */
static void
test_clone_in_other_slot(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "validate");
	row(f->a, "st-1", 2, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-1", 2, "D1", "dupcheck", "refused", 0, 0);
	row(f->a, "st-1", 2, "D1", "dupcheck", "failed", 0, 0);
	row(f->a, "st-1", 1, "D1", "commit", "requested", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "commit");
	assert_int_equal(s.doubt.slot, 1);
	assert_string_equal(s.doubt.cert_fpr, "C1");
}

/* A later board that claimed the set but failed its proof (and was
 * cleared) settles nothing, nor does one re-provisioned past it
 * ("elsewhere") that then failed; one recorded "not_provisioned" (the
 * set is on no board) or a later pass settles it. */
static void
test_what_settles_a_doubt(void **state)
{
	struct fx *f = *state;
	struct audit_device_state s;

	attempt(f->a, "st-1", 1, "D1", 1, "commit");
	row(f->a, "st-1", 1, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-1", 1, "D1", "recover", "provisioned", 1, 1);
	row(f->a, "st-1", 1, "D1", "clear", "ok", 1, 1);
	row(f->a, "st-1", 1, "D1", "pop", "failed", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "commit");
	row(f->a, "st-1", 2, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-1", 2, "D1", "recover", "elsewhere", 0, 0);
	row(f->a, "st-1", 2, "D1", "keygen", "failed", 0, 0);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "commit");
	/* The same board back in the same slot without the set: settled. */
	row(f->a, "st-1", 1, "D1", "identify", "ok", 0, 0);
	row(f->a, "st-1", 1, "D1", "recover", "not_provisioned", 0, 0);
	row(f->a, "st-1", 1, "D1", "keygen", "failed", 0, 0);
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");
	attempt(f->a, "st-1", 1, "D1", 1, "commit");	/* in doubt again */

	attempt(f->a, "st-1", 1, "D2", 1, "validate");
	row(f->a, "st-1", 1, "D2", "identify", "ok", 0, 0);
	row(f->a, "st-1", 1, "D2", "recover", "not_provisioned", 0, 0);
	row(f->a, "st-1", 1, "D2", "keygen", "failed", 0, 0);
	assert_int_equal(audit_device_state(f->a, "D2", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");

	attempt(f->a, "st-2", 3, "D1", 2, "done");
	assert_int_equal(audit_device_state(f->a, "D1", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "");
	assert_string_equal(s.prov.cert_fpr, "C2");

	/* A recovered board whose station then died is in doubt again. */
	row(f->a, "st-1", 1, "D3", "identify", "ok", 0, 0);
	row(f->a, "st-1", 1, "D3", "recover", "provisioned", 1, 1);
	assert_int_equal(audit_device_state(f->a, "D3", INT64_MAX, &s), 0);
	assert_string_equal(s.doubt_step, "verify");
}

static int
count_listed(void *arg, const char *device_id,
    const struct audit_device_state *s)
{
	(void)device_id;
	(void)s;
	(*(int *)arg)++;
	return 0;
}

/* Thousands of passed devices do not crowd a real doubt out of the list,
 * and "more" counts only doubts. */
static void
test_in_doubt_many_passed(void **state)
{
	struct fx *f = *state;
	sqlite3 *db = NULL;
	char *err = NULL;
	int64_t more = -1;
	int n = 0;

	/* Rows straight into the table: the chain is not what is tested.
	 * The one device in doubt comes last, after 1500 that passed. */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	    "BEGIN;"
	    "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k"
	    "  WHERE i < 1500)"
	    " INSERT INTO events (time, station, slot, device_id, step,"
	    "  outcome, prev_hash, row_hash)"
	    " SELECT 't', 'st-1', 1, 'P' || i, s.step, s.outcome, 'x', 'x'"
	    " FROM k, (SELECT 1 AS o, 'identify' AS step, 'ok' AS outcome"
	    "  UNION ALL SELECT 2, 'ca', 'requested'"
	    "  UNION ALL SELECT 3, 'done', 'passed') s ORDER BY i, s.o;"
	    "INSERT INTO events (time, station, slot, device_id, step, outcome,"
	    " prev_hash, row_hash) VALUES"
	    " ('t', 'st-1', 4, 'D9', 'identify', 'ok', 'x', 'x'),"
	    " ('t', 'st-1', 4, 'D9', 'ca', 'requested', 'x', 'x'),"
	    " ('t', 'st-1', 4, 'D9', 'commit', 'requested', 'x', 'x');"
	    "COMMIT;", NULL, NULL, &err), SQLITE_OK);
	sqlite3_free(err);
	sqlite3_close(db);
	assert_int_equal(audit_in_doubt(f->a, count_listed, &n, &more), 0);
	assert_int_equal(n, 1);
	assert_int_equal(more, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_doubt_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_doubt_before_ca, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_doubt_commit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_other_slot_rows, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_resolved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_doubt_list, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_in_doubt_stop, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_clone_in_other_slot, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_what_settles_a_doubt,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_doubt_many_passed,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
