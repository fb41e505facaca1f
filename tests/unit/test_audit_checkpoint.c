/*
 * test_audit_checkpoint.c: signed checkpoints of the audit chain head
 * (docs/audit.md, "Checkpoints") against real SQLite files.  The signer is
 * a real P-256 key in memory behind the same audit_sign_fn the station's
 * token helper implements; tampering is done through a raw SQLite
 * connection, the way someone with the file (and not the key) would.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "db/audit.h"
#include "common/err.h"
#include "common/log.h"

#define ZERO64 \
	"0000000000000000000000000000000000000000000000000000000000000000"

struct fx {
	char dir[64];
	char path[128];
	struct audit *a;
	EVP_PKEY *key;		/* the "token" key */
	EVP_PKEY *other;	/* a key that is not it */
	int sign_calls;
	int sign_fail;
};

static EVP_PKEY *
p256(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kl-ckpt-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	f->key = p256();
	f->other = p256();
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char p[160];
	static const char *const suffix[] = { "", "-wal", "-shm" };
	size_t i;

	audit_close(f->a);
	for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	EVP_PKEY_free(f->key);
	EVP_PKEY_free(f->other);
	free(f);
	return 0;
}

/* audit_sign_fn over an in-memory key. */
static int
sign_mem(void *arg, const uint8_t *msg, size_t len, uint8_t **sig,
    size_t *sig_len)
{
	struct fx *f = arg;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t n = 0;
	uint8_t *s = NULL;

	f->sign_calls++;
	if (f->sign_fail) {
		EVP_MD_CTX_free(md);
		return KL_ERR_HSM;
	}
	assert_non_null(md);
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL,
	    f->key), 1);
	assert_int_equal(EVP_DigestSign(md, NULL, &n, msg, len), 1);
	s = malloc(n);
	assert_non_null(s);
	assert_int_equal(EVP_DigestSign(md, s, &n, msg, len), 1);
	EVP_MD_CTX_free(md);
	*sig = s;
	*sig_len = n;
	return 0;
}

static void
append_n(struct audit *a, int n)
{
	struct audit_event ev = {
		.station = "st-1", .operator_name = "alice", .slot = 1,
		.device_id = "dev-1", .step = "keygen", .outcome = "ok",
	};
	int i;

	for (i = 0; i < n; i++)
		assert_int_equal(audit_append(a, &ev, NULL), 0);
}

static void
raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static const char *
col(sqlite3_stmt *st, int c)
{
	return (const char *)sqlite3_column_text(st, c);
}

/*
 * The attack: drop the triggers, change row id's device_id, and rebuild
 * every prev_hash and row_hash so that the chain verifies again.
 */
static void
rewrite_row(const char *path, int64_t id, const char *device_id)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL, *up = NULL;
	struct audit_row r;
	char prev[AUDIT_HASH_HEX + 1] = ZERO64, hash[AUDIT_HASH_HEX + 1];
	char sql[160];

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	snprintf(sql, sizeof(sql), "DROP TRIGGER events_no_update;"
	    "UPDATE events SET device_id = '%s' WHERE id = %" PRId64,
	    device_id, id);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, time, station,"
	    " operator, slot, board_serial, device_id, step, outcome, key_fpr,"
	    " cert_serial, cert_fpr, ca, error FROM events ORDER BY id", -1,
	    &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "UPDATE events SET prev_hash"
	    " = ?1, row_hash = ?2 WHERE id = ?3", -1, &up, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		memset(&r, 0, sizeof(r));
		r.id = sqlite3_column_int64(st, 0);
		r.time = col(st, 1);
		r.station = col(st, 2);
		r.operator_name = col(st, 3);
		r.slot = sqlite3_column_int64(st, 4);
		r.board_serial = col(st, 5);
		r.device_id = col(st, 6);
		r.step = col(st, 7);
		r.outcome = col(st, 8);
		r.key_fpr = col(st, 9);
		r.cert_serial = col(st, 10);
		r.cert_fpr = col(st, 11);
		r.ca = col(st, 12);
		r.error = col(st, 13);
		r.prev_hash = prev;
		assert_int_equal(audit_row_hash_of(&r, hash), 0);
		sqlite3_reset(up);
		sqlite3_bind_text(up, 1, prev, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(up, 2, hash, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(up, 3, r.id);
		assert_int_equal(sqlite3_step(up), SQLITE_DONE);
		memcpy(prev, hash, sizeof(prev));
	}
	sqlite3_finalize(st);
	sqlite3_finalize(up);
	sqlite3_close(db);
}

/* A log of rows rows with checkpoints at start (row 0), every "every" rows
 * and at stop, closed. */
static void
make_log(struct fx *f, int rows, int every)
{
	assert_int_equal(audit_open(&f->a, f->path), 0);
	assert_int_equal(audit_checkpoint_setup(f->a, "st-1", every, sign_mem,
	    f), 0);
	assert_int_equal(audit_checkpoint(f->a, "start", NULL), 0);
	append_n(f->a, rows);
	assert_int_equal(audit_checkpoint(f->a, "stop", NULL), 0);
	audit_close(f->a);
	f->a = NULL;
}

static int
verify(struct fx *f, EVP_PKEY *pub, struct audit_ckpt_report *rep)
{
	int64_t rows = 0, bad = 0;
	char why[256];
	int r;

	assert_int_equal(audit_open_readonly(&f->a, f->path), 0);
	assert_int_equal(audit_verify(f->a, &rows, &bad, why, sizeof(why)), 0);
	r = audit_verify_checkpoints(f->a, pub, rep);
	audit_close(f->a);
	f->a = NULL;
	return r;
}

static void
test_message_encoding(void **state)
{
	static const char want[] = "21:keyline-checkpoint-v1,4:st-1,"
	    "24:2026-11-22T19:30:01.123Z,5:start,2:17,64:" ZERO64 ",";
	uint8_t *msg = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(audit_checkpoint_message("st-1",
	    "2026-11-22T19:30:01.123Z", "start", 17, ZERO64, &msg, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(msg, want, len);
	free(msg);
	assert_int_equal(audit_checkpoint_message("st-1", "t", "start", -1,
	    ZERO64, &msg, &len), KL_ERR_INVALID);
}

static void
test_signed_and_verified(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 7, 0);
	assert_int_equal(f->sign_calls, 2);
	assert_int_equal(verify(f, f->key, &rep), 0);
	assert_int_equal(rep.table, 1);
	assert_int_equal(rep.count, 2);
	assert_int_equal(rep.newest_row, 7);
	assert_string_equal(rep.newest_reason, "stop");
	assert_string_equal(rep.newest_station, "st-1");
}

static void
test_every_n_rows(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	/* start (0), rows 5, 10, stop (12) */
	make_log(f, 12, 5);
	assert_int_equal(verify(f, f->key, &rep), 0);
	assert_int_equal(rep.count, 4);
	assert_int_equal(rep.newest_row, 12);
}

/* The whole point: a rewrite with every hash recomputed passes the chain
 * and fails the checkpoint that covers the row. */
static void
test_rewrite_detected(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 6, 3);
	rewrite_row(f->path, 2, "forged");
	assert_int_equal(verify(f, f->key, &rep), KL_ERR_AUDIT_CHAIN);
	/* checkpoint 1 is the empty log at start; 2 signed row 3 */
	assert_int_equal(rep.bad_id, 2);
	assert_non_null(strstr(rep.why, "row 3 no longer has the hash"));
}

static void
test_wrong_key(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 2, 0);
	assert_int_equal(verify(f, f->other, &rep), KL_ERR_AUDIT_CHAIN);
	assert_int_equal(rep.bad_id, 1);
	assert_non_null(strstr(rep.why, "signature does not verify"));
}

/* Re-pointing a checkpoint at the rewritten head breaks its signature. */
static void
test_checkpoint_edited(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 4, 0);
	rewrite_row(f->path, 4, "forged");
	raw_exec(f->path, "UPDATE checkpoints SET row_hash = (SELECT row_hash"
	    " FROM events WHERE id = 4) WHERE row_id = 4");
	assert_int_equal(verify(f, f->key, &rep), KL_ERR_AUDIT_CHAIN);
	assert_int_equal(rep.bad_id, 2);
	assert_non_null(strstr(rep.why, "signature does not verify"));
	/* ... and so does a signature copied from another checkpoint. */
	raw_exec(f->path, "UPDATE checkpoints SET signature = (SELECT signature"
	    " FROM checkpoints WHERE id = 1) WHERE id = 2");
	assert_int_equal(verify(f, f->key, &rep), KL_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(rep.why, "signature does not verify"));
}

static void
test_rows_removed(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 5, 0);
	raw_exec(f->path, "DROP TRIGGER events_no_delete;"
	    "DELETE FROM events WHERE id > 3");
	assert_int_equal(verify(f, f->key, &rep), KL_ERR_AUDIT_CHAIN);
	assert_non_null(strstr(rep.why, "row 5 it signed"));
	assert_non_null(strstr(rep.why, "gone"));
}

/* Deleting every checkpoint is visible as "none", never as "ok". */
static void
test_no_checkpoints(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;

	make_log(f, 3, 0);
	raw_exec(f->path, "DELETE FROM checkpoints");
	assert_int_equal(verify(f, f->key, &rep), 0);
	assert_int_equal(rep.table, 1);
	assert_int_equal(rep.count, 0);
	raw_exec(f->path, "DROP TABLE checkpoints");
	assert_int_equal(verify(f, f->key, &rep), 0);
	assert_int_equal(rep.table, 0);
	assert_int_equal(rep.count, 0);
}

/* A signer that fails leaves the row appended and no checkpoint. */
static void
test_signer_fails(void **state)
{
	struct fx *f = *state;
	struct audit_ckpt_report rep;
	int64_t id = 0;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	assert_int_equal(audit_checkpoint(f->a, "start", &id), KL_ERR_INVALID);
	assert_int_equal(audit_checkpoint_setup(f->a, "st-1", 2, sign_mem, f),
	    0);
	f->sign_fail = 1;
	assert_int_equal(audit_checkpoint(f->a, "start", &id), KL_ERR_HSM);
	append_n(f->a, 2);
	audit_close(f->a);
	f->a = NULL;
	assert_int_equal(verify(f, f->key, &rep), 0);
	assert_int_equal(rep.count, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_encoding),
		cmocka_unit_test_setup_teardown(test_signed_and_verified, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_every_n_rows, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_detected, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_wrong_key, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_edited, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rows_removed, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_no_checkpoints, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_signer_fails, setup,
		    teardown),
	};

	log_init("test_audit_checkpoint", getenv("KL_TEST_VERBOSE") != NULL ?
	    LOG_LVL_DEBUG : (enum log_level)(LOG_LVL_ERROR + 1));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
