/*
 * test_audit.c: the audit log against real SQLite files in a fresh
 * temporary directory per test.  Tampering is done the way an attacker
 * with file access would: through a second, raw SQLite connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
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
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/kl-audit-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char p[160];
	static const char *const suffix[] = { "", "-wal", "-shm", "-journal",
	    ".csv", ".json", ".junk" };
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

/* device_id points to one of a few fixed names: no buffer to share
 * between threads. */
static void
ev_fill(struct audit_event *ev, int i)
{
	static const char *const dev[] = { "dev-0000", "dev-0001", "dev-0002",
	    "dev-0003" };

	memset(ev, 0, sizeof(*ev));
	ev->station = "st-1";
	ev->operator_name = "alice";
	ev->slot = i % 8;
	ev->board_serial = "BS-1";
	ev->device_id = dev[i % 4];
	ev->step = "keygen";
	ev->outcome = "ok";
	ev->key_fpr = "ab01";
	ev->ca = "local:fleet-root";
	/* cert_serial, cert_fpr and error stay NULL */
}

static void
append_n(struct audit *a, int n)
{
	struct audit_event ev;
	int64_t id = -1;
	int i;

	for (i = 0; i < n; i++) {
		ev_fill(&ev, i);
		assert_int_equal(audit_append(a, &ev, &id), 0);
		assert_true(id >= 1);
	}
}

/* The raw connection an attacker (or the test) would use. */
static int
raw_exec(const char *path, const char *sql, char *msg, size_t msgsz)
{
	sqlite3 *db = NULL;
	char *err = NULL;
	int rc;

	rc = sqlite3_open(path, &db);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, 5000);
		rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	}
	if (msg != NULL && msgsz > 0)
		snprintf(msg, msgsz, "%s", err != NULL ? err : "");
	sqlite3_free(err);
	sqlite3_close(db);
	return rc;
}

/* First column of the first row as text ("" for NULL). */
static void
raw_text(const char *path, const char *sql, char *out, size_t outsz)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const unsigned char *t;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	t = sqlite3_column_text(st, 0);
	snprintf(out, outsz, "%s", t != NULL ? (const char *)t : "");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void
expect_broken(struct audit *a, int64_t want_id, const char *want_words)
{
	int64_t rows = -7, bad = -1;
	char why[256] = "";

	assert_int_equal(audit_verify(a, &rows, &bad, why, sizeof(why)),
	    KL_ERR_AUDIT_CHAIN);
	assert_int_equal(bad, want_id);
	assert_int_equal(rows, -7);	/* untouched on failure */
	if (strstr(why, want_words) == NULL)
		fail_msg("why \"%s\" lacks \"%s\"", why, want_words);
}

static void
test_open_schema(void **state)
{
	struct fx *f = *state;
	char v[64];

	audit_close(NULL);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	raw_text(f->path, "PRAGMA user_version", v, sizeof(v));
	assert_string_equal(v, "5");
	raw_text(f->path, "PRAGMA journal_mode", v, sizeof(v));
	assert_string_equal(v, "wal");
	raw_text(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN "
	    "('events_device_id', 'events_no_update', 'events_no_delete', "
	    "'events_key_fpr')", v, sizeof(v));
	assert_string_equal(v, "4");
	/* The key-owner lookup (audit_key_owner's query) uses the index
	 * rather than reading the whole log. */
	{
		sqlite3 *db = NULL;
		sqlite3_stmt *st = NULL;
		const unsigned char *d;
		int used = 0;

		assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN "
		    "SELECT id FROM events WHERE key_fpr = 'ab' AND device_id "
		    "IS NOT NULL AND device_id != 'x'", -1, &st, NULL),
		    SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW)
			if ((d = sqlite3_column_text(st, 3)) != NULL &&
			    strstr((const char *)d, "events_key_fpr") != NULL)
				used = 1;
		sqlite3_finalize(st);
		sqlite3_close(db);
		assert_true(used);
	}
	/* Reopening an existing, current schema migrates nothing. */
	audit_close(f->a);
	f->a = NULL;
	assert_int_equal(audit_open(&f->a, f->path), 0);
}

static void
test_append_verify(void **state)
{
	struct fx *f = *state;
	int64_t rows = -1, bad = -1;
	char head[AUDIT_HASH_HEX + 1], v[128], why[128];

	assert_int_equal(audit_open(&f->a, f->path), 0);
	/* An empty log verifies, and its head is the chain start. */
	assert_int_equal(audit_verify_head(f->a, &rows, &bad, why, sizeof(why),
	    head, sizeof(head)), 0);
	assert_int_equal(rows, 0);
	assert_string_equal(head, ZERO64);
	rows = -1;
	assert_int_equal(audit_head(f->a, &rows, head, sizeof(head)), 0);
	assert_int_equal(rows, 0);
	assert_string_equal(head, ZERO64);

	append_n(f->a, 5);
	/* audit_head (no walk) gives the newest row as the database has it. */
	assert_int_equal(audit_head(f->a, &rows, head, sizeof(head)), 0);
	assert_int_equal(rows, 5);
	raw_text(f->path, "SELECT row_hash FROM events WHERE id = 5", v,
	    sizeof(v));
	assert_string_equal(head, v);
	assert_int_equal(audit_head(f->a, &rows, head, 64), KL_ERR_INVALID);
	assert_int_equal(audit_verify_head(f->a, &rows, &bad, why, sizeof(why),
	    head, sizeof(head)), 0);
	assert_int_equal(rows, 5);
	assert_int_equal(bad, -1);
	raw_text(f->path, "SELECT row_hash FROM events WHERE id = 5", v,
	    sizeof(v));
	assert_string_equal(head, v);
	raw_text(f->path, "SELECT prev_hash FROM events WHERE id = 1", v,
	    sizeof(v));
	assert_string_equal(v, ZERO64);
	raw_text(f->path, "SELECT count(*) || ',' || min(id) || ',' || max(id)"
	    " FROM events", v, sizeof(v));
	assert_string_equal(v, "5,1,5");
	raw_text(f->path, "SELECT time FROM events WHERE id = 2", v, sizeof(v));
	assert_int_equal(strlen(v), 24);
	assert_int_equal(v[10], 'T');
	assert_int_equal(v[19], '.');
	assert_int_equal(v[23], 'Z');
	/* Too small a head buffer is refused, not overrun. */
	assert_int_equal(audit_verify_head(f->a, NULL, NULL, NULL, 0, head, 10),
	    KL_ERR_INVALID);
}

static void
ns(char *enc, size_t encsz, const char *p, size_t n)
{
	size_t len = strlen(enc);

	snprintf(enc + len, encsz - len, "%zu:%.*s,", n, (int)n, p);
}

/* The encoding exactly as docs/audit.md writes it, built independently. */
static void
test_hash_matches_documented_encoding(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char enc[4096] = "", hex[65];
	unsigned char dig[32];
	unsigned int diglen = 0, i;
	int c;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	ev_fill(&ev, 0);
	ev.error = "";		/* empty, next to NULL cert_serial */
	assert_int_equal(audit_append(f->a, &ev, NULL), 0);

	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, time, station, "
	    "operator, slot, board_serial, device_id, step, outcome, key_fpr, "
	    "cert_serial, cert_fpr, ca, error, prev_hash, row_hash FROM events",
	    -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	ns(enc, sizeof(enc), "keyline-audit-v1", 16);
	for (c = 0; c < 15; c++) {
		if (sqlite3_column_type(st, c) == SQLITE_NULL)
			snprintf(enc + strlen(enc), sizeof(enc) - strlen(enc),
			    "-,");
		else
			ns(enc, sizeof(enc),
			    (const char *)sqlite3_column_text(st, c),
			    (size_t)sqlite3_column_bytes(st, c));
	}
	assert_non_null(strstr(enc, "-,-,16:local:fleet-root,0:,64:"));
	assert_int_equal(EVP_Digest(enc, strlen(enc), dig, &diglen,
	    EVP_sha256(), NULL), 1);
	for (i = 0; i < diglen; i++)
		snprintf(hex + 2 * i, 3, "%02x", dig[i]);
	assert_string_equal(hex, (const char *)sqlite3_column_text(st, 15));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void
test_triggers_refuse(void **state)
{
	struct fx *f = *state;
	char msg[256], v[32];
	int rc;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 5);
	rc = raw_exec(f->path, "UPDATE events SET outcome = 'passed' "
	    "WHERE id = 3", msg, sizeof(msg));
	assert_int_equal(rc, SQLITE_CONSTRAINT);
	assert_non_null(strstr(msg, "append-only"));
	rc = raw_exec(f->path, "DELETE FROM events WHERE id = 5", msg,
	    sizeof(msg));
	assert_int_equal(rc, SQLITE_CONSTRAINT);
	assert_non_null(strstr(msg, "append-only"));
	raw_text(f->path, "SELECT count(*) FROM events", v, sizeof(v));
	assert_string_equal(v, "5");
	assert_int_equal(audit_verify(f->a, NULL, NULL, NULL, 0), 0);
}

static void
tamper(struct fx *f, const char *sql)
{
	char msg[256];
	int rc;

	rc = raw_exec(f->path, "DROP TRIGGER events_no_update;"
	    "DROP TRIGGER events_no_delete;", msg, sizeof(msg));
	if (rc != SQLITE_OK)
		fail_msg("drop triggers: %s", msg);
	rc = raw_exec(f->path, sql, msg, sizeof(msg));
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static void
test_tamper_field(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 6);
	tamper(f, "UPDATE events SET device_id = 'dev-9999' WHERE id = 3");
	expect_broken(f->a, 3, "row hash does not match its contents");
}

static void
test_tamper_null_to_empty(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 4);
	tamper(f, "UPDATE events SET error = '' WHERE id = 2");
	expect_broken(f->a, 2, "row hash does not match");
}

static void
test_tamper_type(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 4);
	tamper(f, "UPDATE events SET slot = 'x' WHERE id = 4");
	expect_broken(f->a, 4, "column slot");
}

static void
test_delete_middle(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 6);
	tamper(f, "DELETE FROM events WHERE id = 3");
	expect_broken(f->a, 3, "missing (ids jump from 2 to 4)");
}

static void
test_delete_first(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 3);
	tamper(f, "DELETE FROM events WHERE id = 1");
	expect_broken(f->a, 1, "missing (ids jump from 0 to 2)");
}

static void
test_tamper_prev_hash(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 6);
	tamper(f, "UPDATE events SET prev_hash = "
	    "(SELECT row_hash FROM events WHERE id = 1) WHERE id = 3");
	expect_broken(f->a, 3,
	    "prev_hash does not match the row hash of row 2");
}

static void
test_tamper_first_prev_hash(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 2);
	tamper(f, "UPDATE events SET prev_hash = "
	    "(SELECT row_hash FROM events WHERE id = 2) WHERE id = 1");
	expect_broken(f->a, 1, "chain start");
}

/* A rewritten row_hash breaks that row and, by its successor's prev_hash,
 * the next: the first is what gets reported. */
static void
test_tamper_row_hash(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 6);
	tamper(f, "UPDATE events SET row_hash = "
	    "(SELECT row_hash FROM events WHERE id = 1) WHERE id = 4");
	expect_broken(f->a, 4, "row hash does not match");
}

/* A forged row appended with a wrong prev_hash (the triggers do not stop
 * INSERT) is caught. */
static void
test_forged_append(void **state)
{
	struct fx *f = *state;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 3);
	tamper(f, "INSERT INTO events (id, time, slot, step, outcome, "
	    "prev_hash, row_hash) VALUES (4, '2026-01-01T00:00:00.000Z', 0, "
	    "'done', 'passed', '" ZERO64 "', '" ZERO64 "')");
	expect_broken(f->a, 4, "prev_hash");
}

static void
test_reopen_continues_chain(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;
	int64_t id = 0, rows = 0;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 3);
	audit_close(f->a);
	f->a = NULL;
	assert_int_equal(audit_open(&f->a, f->path), 0);
	ev_fill(&ev, 7);
	assert_int_equal(audit_append(f->a, &ev, &id), 0);
	assert_int_equal(id, 4);
	assert_int_equal(audit_verify(f->a, &rows, NULL, NULL, 0), 0);
	assert_int_equal(rows, 4);
}

static void
test_open_refuses(void **state)
{
	struct fx *f = *state;
	struct audit *sentinel = (struct audit *)&sentinel;
	struct audit *a = sentinel;
	char junk[160];
	FILE *fp;

	/* A schema from a newer program. */
	assert_int_equal(audit_open(&f->a, f->path), 0);
	audit_close(f->a);
	f->a = NULL;
	assert_int_equal(raw_exec(f->path, "PRAGMA user_version = 99", NULL, 0),
	    SQLITE_OK);
	assert_int_equal(audit_open(&a, f->path), KL_ERR_DB);
	assert_ptr_equal(a, sentinel);

	/* Not an SQLite file. */
	snprintf(junk, sizeof(junk), "%s.junk", f->path);
	fp = fopen(junk, "w");
	assert_non_null(fp);
	fputs("this is not a database, it is a rather long line of text "
	    "that goes on past the SQLite header size of one hundred bytes.\n",
	    fp);
	fclose(fp);
	assert_int_equal(audit_open(&a, junk), KL_ERR_CORRUPT);
	assert_ptr_equal(a, sentinel);
	assert_non_null(strstr(audit_last_error(), "not an SQLite database"));
	assert_non_null(strstr(audit_last_error(), junk));

	/* A directory that does not exist: an I/O error naming the path and
	 * the errno, not a database error. */
	assert_int_equal(audit_open(&a, "/nonexistent-kl/dir/a.db"), KL_ERR_IO);
	assert_ptr_equal(a, sentinel);
	assert_non_null(strstr(audit_last_error(), "/nonexistent-kl/dir/a.db"));
	assert_non_null(strstr(audit_last_error(), "does not exist"));
	assert_int_equal(audit_open(&a, NULL), KL_ERR_INVALID);
}

static void
test_field_too_big(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;
	char *big;
	int64_t id = -5, rows = -1;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	big = malloc(70000);
	assert_non_null(big);
	memset(big, 'e', 69999);
	big[69999] = '\0';
	ev_fill(&ev, 1);
	ev.error = big;
	assert_int_equal(audit_append(f->a, &ev, &id), KL_ERR_TOO_BIG);
	assert_int_equal(id, -5);
	free(big);
	assert_int_equal(audit_verify(f->a, &rows, NULL, NULL, 0), 0);
	assert_int_equal(rows, 0);
	assert_int_equal(audit_append(f->a, NULL, NULL), KL_ERR_INVALID);
}

/* ---- export */

#define CSV_MAX_FIELDS 32
#define CSV_MAX_ROWS 8

struct csv {
	char *f[CSV_MAX_ROWS][CSV_MAX_FIELDS];
	int quoted[CSV_MAX_ROWS][CSV_MAX_FIELDS];
	int nf[CSV_MAX_ROWS];
	int rows;
};

/* A strict RFC 4180 reader: CRLF records, "" inside quotes. */
static void
csv_parse(const char *s, size_t n, struct csv *c)
{
	size_t i = 0, o;
	char *cur;

	memset(c, 0, sizeof(*c));
	while (i < n) {
		assert_true(c->rows < CSV_MAX_ROWS);
		for (;;) {
			int row = c->rows, k = c->nf[row];

			assert_true(k < CSV_MAX_FIELDS);
			cur = calloc(1, n + 1);
			assert_non_null(cur);
			o = 0;
			if (i < n && s[i] == '"') {
				c->quoted[row][k] = 1;
				i++;
				for (;;) {
					assert_true(i < n);
					if (s[i] == '"' && i + 1 < n &&
					    s[i + 1] == '"') {
						cur[o++] = '"';
						i += 2;
					} else if (s[i] == '"') {
						i++;
						break;
					} else
						cur[o++] = s[i++];
				}
			} else {
				while (i < n && s[i] != ',' && s[i] != '\r') {
					assert_true(s[i] != '"' && s[i] != '\n');
					cur[o++] = s[i++];
				}
			}
			c->f[row][k] = cur;
			c->nf[row]++;
			assert_true(i < n);
			if (s[i] == ',') {
				i++;
				continue;
			}
			assert_true(i + 1 < n && s[i] == '\r' && s[i + 1] == '\n');
			i += 2;
			break;
		}
		c->rows++;
	}
}

static void
csv_free(struct csv *c)
{
	int r, k;

	for (r = 0; r < c->rows; r++)
		for (k = 0; k < c->nf[r]; k++)
			free(c->f[r][k]);
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n >= 0);
	rewind(fp);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static const char tricky_err[] = "said \"no\", then\nleft\r\nearly";

static void
append_tricky(struct audit *a)
{
	struct audit_event ev;

	ev_fill(&ev, 1);
	assert_int_equal(audit_append(a, &ev, NULL), 0);
	ev_fill(&ev, 2);
	ev.device_id = "dev,2";
	ev.station = "";
	ev.step = "done";
	ev.outcome = "failed";
	ev.error = tricky_err;
	ev.board_serial = "BS\xff\xfe" "x";	/* not UTF-8, off the wire */
	ev.operator_name = "night\nshift";	/* LF alone must be quoted */
	ev.ca = "ca\r1";			/* and CR alone */
	assert_int_equal(audit_append(a, &ev, NULL), 0);
	ev_fill(&ev, 3);
	assert_int_equal(audit_append(a, &ev, NULL), 0);
}

static void
test_export_csv(void **state)
{
	struct fx *f = *state;
	char out[160], *text;
	FILE *fp;
	size_t len;
	struct csv c;
	int k;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_tricky(f->a);
	snprintf(out, sizeof(out), "%s.csv", f->path);
	fp = fopen(out, "wb");
	assert_non_null(fp);
	assert_int_equal(audit_export(f->a, fp, AUDIT_FMT_CSV), 0);
	fclose(fp);

	text = slurp(out, &len);
	csv_parse(text, len, &c);
	assert_int_equal(c.rows, 4);
	for (k = 0; k < c.rows; k++)
		assert_int_equal(c.nf[k], 16);
	assert_string_equal(c.f[0][0], "id");
	assert_string_equal(c.f[0][6], "device_id");
	assert_string_equal(c.f[0][13], "error");
	assert_string_equal(c.f[0][15], "row_hash");
	assert_string_equal(c.f[2][0], "2");
	assert_string_equal(c.f[2][6], "dev,2");
	assert_int_equal(c.quoted[2][6], 1);
	assert_string_equal(c.f[2][13], tricky_err);
	assert_string_equal(c.f[2][5], "BS\xff\xfe" "x");	/* exact bytes */
	assert_string_equal(c.f[2][3], "night\nshift");
	assert_string_equal(c.f[2][12], "ca\r1");
	/* "" is a quoted empty field, NULL an unquoted one. */
	assert_string_equal(c.f[2][2], "");
	assert_int_equal(c.quoted[2][2], 1);
	assert_string_equal(c.f[2][10], "");
	assert_int_equal(c.quoted[2][10], 0);
	assert_string_equal(c.f[1][6], "dev-0001");
	assert_int_equal(c.quoted[1][6], 0);
	assert_string_equal(c.f[1][14], ZERO64);
	assert_string_equal(c.f[2][14], c.f[1][15]);
	/* The escaped form itself, for readers that only grep. */
	assert_non_null(strstr(text,
	    "\"said \"\"no\"\", then\nleft\r\nearly\""));
	csv_free(&c);
	free(text);
}

static int
json_row(void *arg, const struct audit_row *row)
{
	json_t *o = audit_row_json(row);

	return o != NULL && json_array_append_new(arg, o) == 0 ? 0 :
	    KL_ERR_NOMEM;
}

static void
test_export_json(void **state)
{
	struct fx *f = *state;
	char out[160];
	FILE *fp;
	json_t *root, *row;
	json_error_t jerr;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_tricky(f->a);
	snprintf(out, sizeof(out), "%s.json", f->path);
	fp = fopen(out, "wb");
	assert_non_null(fp);
	assert_int_equal(audit_export(f->a, fp, AUDIT_FMT_JSON), 0);
	fclose(fp);

	root = json_load_file(out, 0, &jerr);
	if (root == NULL)
		fail_msg("json: %s at line %d", jerr.text, jerr.line);
	assert_true(json_is_array(root));
	assert_int_equal(json_array_size(root), 3);
	row = json_array_get(root, 1);
	assert_int_equal(json_integer_value(json_object_get(row, "id")), 2);
	assert_true(json_is_integer(json_object_get(row, "slot")));
	assert_string_equal(json_string_value(json_object_get(row,
	    "device_id")), "dev,2");
	assert_string_equal(json_string_value(json_object_get(row, "error")),
	    tricky_err);
	assert_string_equal(json_string_value(json_object_get(row, "station")),
	    "");
	assert_true(json_is_null(json_object_get(row, "cert_serial")));
	assert_string_equal(json_string_value(json_object_get(row,
	    "board_serial")), "BS\xef\xbf\xbd\xef\xbf\xbdx");
	assert_int_equal(json_object_size(row), 16);
	/* /api/v1/events builds its rows with the same audit_row_json: each
	 * row is the same object, key for key and byte for byte. */
	{
		json_t *api = json_array();
		int64_t next = 0;
		size_t i;

		assert_non_null(api);
		assert_int_equal(audit_events_since(f->a, 0, 10, json_row,
		    api, &next, NULL), 0);
		assert_int_equal(json_array_size(api), 3);
		for (i = 0; i < 3; i++)
			assert_true(json_equal(json_array_get(api, i),
			    json_array_get(root, i)));
		json_decref(api);
	}
	json_decref(root);

	/* A forged row shows as forged: text in an integer column, a NUL
	 * inside text. */
	assert_int_equal(raw_exec(f->path, "INSERT INTO events VALUES (4, "
	    "'t', 's', NULL, 'slot-7', NULL, 'd', 42, 'ok', NULL, NULL, NULL, "
	    "NULL, 'a' || char(0) || 'b', 'x', 'y')", NULL, 0), SQLITE_OK);
	fp = fopen(out, "wb");
	assert_non_null(fp);
	assert_int_equal(audit_export(f->a, fp, AUDIT_FMT_JSON), 0);
	fclose(fp);
	root = json_load_file(out, JSON_ALLOW_NUL, &jerr);
	if (root == NULL)
		fail_msg("json: %s at line %d", jerr.text, jerr.line);
	row = json_array_get(root, 3);
	assert_string_equal(json_string_value(json_object_get(row, "slot")),
	    "slot-7");
	/* (TEXT affinity stores 42 as '42': it is text.) */
	assert_string_equal(json_string_value(json_object_get(row, "step")),
	    "42");
	assert_int_equal(json_string_length(json_object_get(row, "error")), 3);
	json_decref(root);

	/* An empty log is an empty array. */
	audit_close(f->a);
	f->a = NULL;
	(void)unlink(f->path);
	(void)unlink(out);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	fp = fopen(out, "wb");
	assert_non_null(fp);
	assert_int_equal(audit_export(f->a, fp, AUDIT_FMT_JSON), 0);
	fclose(fp);
	root = json_load_file(out, 0, &jerr);
	assert_non_null(root);
	assert_int_equal(json_array_size(root), 0);
	json_decref(root);
}

static void
test_export_write_error(void **state)
{
	struct fx *f = *state;
	FILE *fp;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 3);
	fp = fopen("/dev/full", "w");
	if (fp == NULL)
		fail_msg("/dev/full is missing: this test needs it to see a full disk");
	assert_int_equal(audit_export(f->a, fp, AUDIT_FMT_CSV), KL_ERR_IO);
	fclose(fp);
	assert_int_equal(audit_export(f->a, stdout, (enum audit_format)7),
	    KL_ERR_INVALID);
}

/* ---- find */

static void
append_done(struct audit *a, const char *dev, const char *outcome,
    const char *serial)
{
	struct audit_event ev;

	ev_fill(&ev, 0);
	ev.device_id = dev;
	ev.step = "done";
	ev.outcome = outcome;
	ev.cert_serial = serial;
	assert_int_equal(audit_append(a, &ev, NULL), 0);
}

/* ---- the plant registry's offline queue */

static void
append_registry(struct audit *a, const char *dev, const char *outcome,
    const char *cert_fpr, const char *note)
{
	struct audit_event ev;

	ev_fill(&ev, 0);
	ev.device_id = dev;
	ev.step = "registry";
	ev.outcome = outcome;
	ev.cert_fpr = cert_fpr;
	ev.error = note;
	assert_int_equal(audit_append(a, &ev, NULL), 0);
}

struct queue_seen {
	char ids[8][16];
	int n;
};

static int
queue_collect(void *arg, const struct audit_row *row)
{
	struct queue_seen *q = arg;

	assert_true(q->n < 8);
	snprintf(q->ids[q->n++], sizeof(q->ids[0]), "%s", row->device_id);
	return 0;
}

/* A queued device leaves the queue only by a later reconciled or conflict
 * row for the same device and certificate. */
static void
test_registry_queue(void **state)
{
	struct fx *f = *state;
	struct queue_seen q;
	char last[64];
	int64_t count = -1, total = -1;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_registry(f->a, "D1", "queued", "f1", "n");
	append_registry(f->a, "D2", "queued", "f2", "n");
	append_registry(f->a, "D3", "queued", "f3", "n");
	/* Not closing: another certificate, another device, a closing row
	 * before the queued one, another outcome. */
	append_registry(f->a, "D1", "reconciled", "f9", "n");
	append_registry(f->a, "D4", "reconciled", "f2", "n");
	append_registry(f->a, "D3", "info", "f3", "n");
	memset(&q, 0, sizeof(q));
	assert_int_equal(audit_registry_queue(f->a, queue_collect, &q,
	    &total), 0);
	assert_int_equal(q.n, 3);
	assert_int_equal(total, 3);
	assert_string_equal(q.ids[0], "D1");
	assert_string_equal(q.ids[2], "D3");
	/* Closing: reconciled D1, conflict D3. */
	append_registry(f->a, "D1", "reconciled", "f1", "n");
	append_registry(f->a, "D3", "conflict", "f3", "plant conflict #7: x");
	append_registry(f->a, "D5", "conflict", NULL, "plant conflict #9: y");
	memset(&q, 0, sizeof(q));
	assert_int_equal(audit_registry_queue(f->a, queue_collect, &q, NULL),
	    0);
	assert_int_equal(q.n, 1);
	assert_string_equal(q.ids[0], "D2");
	/* D2 queued again after a close stays closed only for the old
	 * row: the new one is queued. */
	append_registry(f->a, "D2", "conflict", "f2", "plant conflict #10: z");
	append_registry(f->a, "D2", "queued", "f2", "n");
	memset(&q, 0, sizeof(q));
	assert_int_equal(audit_registry_queue(f->a, queue_collect, &q, NULL),
	    0);
	assert_int_equal(q.n, 1);
	assert_int_equal(audit_registry_conflicts(f->a, &count, last,
	    sizeof(last)), 0);
	assert_int_equal(count, 3);
	assert_string_equal(last, "plant conflict #10: z");
}

static void
test_find_provisioned(void **state)
{
	struct fx *f = *state;
	char serial[16] = "untouched", tiny[3] = "xy";
	int found = -1;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	assert_int_equal(audit_find_provisioned(f->a, "D1", &found, serial,
	    sizeof(serial)), 0);
	assert_int_equal(found, 0);
	assert_string_equal(serial, "untouched");

	append_done(f->a, "D1", "failed", "0bad");
	append_done(f->a, "D2", "passed", "02aa");
	assert_int_equal(audit_find_provisioned(f->a, "D1", &found, serial,
	    sizeof(serial)), 0);
	assert_int_equal(found, 0);

	append_done(f->a, "D1", "passed", "01aa");
	append_done(f->a, "D1", "passed", "01bb");
	append_n(f->a, 2);
	assert_int_equal(audit_find_provisioned(f->a, "D1", &found, serial,
	    sizeof(serial)), 0);
	assert_int_equal(found, 1);
	assert_string_equal(serial, "01bb");	/* the newest */
	assert_int_equal(audit_find_provisioned(f->a, "D2", &found, NULL, 0),
	    0);
	assert_int_equal(found, 1);

	found = -1;
	assert_int_equal(audit_find_provisioned(f->a, "D1", &found, tiny,
	    sizeof(tiny)), KL_ERR_TOO_BIG);
	assert_int_equal(found, -1);
	assert_string_equal(tiny, "xy");

	/* A passed row without a serial is still provisioned. */
	append_done(f->a, "D3", "passed", NULL);
	assert_int_equal(audit_find_provisioned(f->a, "D3", &found, serial,
	    sizeof(serial)), 0);
	assert_int_equal(found, 1);
	assert_string_equal(serial, "");
	assert_int_equal(audit_find_provisioned(f->a, NULL, &found, NULL, 0),
	    KL_ERR_INVALID);
}

/* ---- readers for the HTTP API */

struct collect {
	int64_t ids[4096];
	int n;
	int stop_at;		/* return 7 at this row id (0: never) */
	char serial3[32];	/* cert_serial of row 3 as seen, or "(null)" */
	int null_cert_seen;
};

static int
collect_row(void *arg, const struct audit_row *row)
{
	struct collect *c = arg;

	if (c->stop_at != 0 && row->id == c->stop_at)
		return 7;
	if (c->n >= (int)(sizeof(c->ids) / sizeof(c->ids[0])))
		return KL_ERR_TOO_BIG;
	c->ids[c->n++] = row->id;
	if (row->id == 3)
		snprintf(c->serial3, sizeof(c->serial3), "%s",
		    row->cert_serial != NULL ? row->cert_serial : "(null)");
	if (row->cert_fpr == NULL)
		c->null_cert_seen++;
	if (row->time == NULL || strlen(row->time) != 24 ||
	    row->row_hash == NULL || strlen(row->row_hash) != 64 ||
	    row->prev_hash == NULL || row->station == NULL ||
	    strcmp(row->station, "st-1") != 0)
		return KL_ERR_INTERNAL;
	return 0;
}

static void
test_events_since(void **state)
{
	struct fx *f = *state;
	struct collect *c = calloc(1, sizeof(*c));
	struct audit_event ev;
	int64_t next = -1, cur;
	int more = -1, i, rc;

	assert_non_null(c);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	/* An empty log: nothing, the cursor stays. */
	assert_int_equal(audit_events_since(f->a, 0, 10, collect_row, c,
	    &next, &more), 0);
	assert_int_equal(c->n, 0);
	assert_int_equal(next, 0);
	assert_int_equal(more, 0);

	append_n(f->a, 2);
	ev_fill(&ev, 2);
	ev.cert_serial = "03ab";
	assert_int_equal(audit_append(f->a, &ev, NULL), 0);
	append_n(f->a, 9);		/* 12 rows */

	/* Pages of 5: 1..5, 6..10, 11..12, then nothing. */
	cur = 0;
	for (i = 0; i < 4; i++) {
		int before = c->n;

		assert_int_equal(audit_events_since(f->a, cur, 5, collect_row,
		    c, &next, &more), 0);
		assert_int_equal(more, i < 2);
		assert_int_equal(c->n - before, i < 2 ? 5 : i == 2 ? 2 : 0);
		assert_int_equal(next, i < 2 ? 5 * (i + 1) : 12);
		cur = next;
	}
	assert_int_equal(c->n, 12);
	for (i = 0; i < 12; i++)
		assert_int_equal(c->ids[i], i + 1);
	assert_string_equal(c->serial3, "03ab");
	assert_int_equal(c->null_cert_seen, 12);	/* NULL kept NULL */

	/* A cursor past the end, and one in the middle. */
	c->n = 0;
	assert_int_equal(audit_events_since(f->a, 99, 5, collect_row, c,
	    &next, &more), 0);
	assert_int_equal(c->n, 0);
	assert_int_equal(next, 99);
	assert_int_equal(audit_events_since(f->a, 10, 500, collect_row, c,
	    &next, &more), 0);
	assert_int_equal(c->n, 2);
	assert_int_equal(c->ids[0], 11);
	assert_int_equal(more, 0);

	/* The callback's error stops the walk and outputs stay put. */
	c->n = 0;
	c->stop_at = 4;
	next = -5;
	more = -5;
	rc = audit_events_since(f->a, 0, 10, collect_row, c, &next, &more);
	assert_int_equal(rc, 7);
	assert_int_equal(c->n, 3);
	assert_int_equal(next, -5);
	assert_int_equal(more, -5);

	/* Bad arguments. */
	assert_int_equal(audit_events_since(f->a, -1, 5, collect_row, c,
	    &next, NULL), KL_ERR_INVALID);
	assert_int_equal(audit_events_since(f->a, 0, 0, collect_row, c,
	    &next, NULL), KL_ERR_INVALID);
	assert_int_equal(audit_events_since(f->a, 0, 5, NULL, c, &next,
	    NULL), KL_ERR_INVALID);
	assert_int_equal(audit_events_since(f->a, 0, 5, collect_row, c, NULL,
	    NULL), KL_ERR_INVALID);
	assert_int_equal(audit_events_since(NULL, 0, 5, collect_row, c, &next,
	    NULL), KL_ERR_INVALID);
	free(c);
}

/* A huge limit is capped at AUDIT_EVENTS_MAX. */
static void
test_events_since_cap(void **state)
{
	struct fx *f = *state;
	struct collect *c = calloc(1, sizeof(*c));
	int64_t next = 0;
	int more = 0;

	assert_non_null(c);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, AUDIT_EVENTS_MAX + 20);
	assert_int_equal(audit_events_since(f->a, 0, 1000000, collect_row, c,
	    &next, &more), 0);
	assert_int_equal(c->n, AUDIT_EVENTS_MAX);
	assert_int_equal(next, AUDIT_EVENTS_MAX);
	assert_int_equal(more, 1);
	assert_int_equal(audit_events_since(f->a, next, 1000000, collect_row,
	    c, &next, &more), 0);
	assert_int_equal(c->n, AUDIT_EVENTS_MAX + 20);
	assert_int_equal(more, 0);
	free(c);
}

struct appender {
	struct audit *a;
	int n;
	int failures;
};

static void *
appender_run(void *arg)
{
	struct appender *w = arg;
	struct audit_event ev;
	int i;

	for (i = 0; i < w->n; i++) {
		ev_fill(&ev, i);
		if (audit_append(w->a, &ev, NULL) != 0)
			w->failures++;
	}
	return NULL;
}

/* A reader following the cursor in small pages while another connection
 * (another process, as far as SQLite knows) appends: every id exactly
 * once, in order, none missing. */
static void
test_events_since_follow(void **state)
{
	struct fx *f = *state;
	struct collect *c = calloc(1, sizeof(*c));
	struct appender w = { NULL, 300, 0 };
	pthread_t t;
	int64_t cur = 0, next;
	int more, i, done = 0, rounds = 0;

	assert_non_null(c);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	assert_int_equal(audit_open(&w.a, f->path), 0);
	assert_int_equal(pthread_create(&t, NULL, appender_run, &w), 0);
	while (!done || more) {
		/* done is read before the page: after the writer ended,
		 * one more full walk must reach the end. */
		if (!done && pthread_tryjoin_np(t, NULL) == 0)
			done = 1;
		assert_int_equal(audit_events_since(f->a, cur, 7, collect_row,
		    c, &next, &more), 0);
		assert_true(next >= cur);
		cur = next;
		rounds++;
		if (!done && !more)
			usleep(1000);
	}
	audit_close(w.a);
	assert_int_equal(w.failures, 0);
	assert_int_equal(c->n, 300);
	for (i = 0; i < c->n; i++)
		assert_int_equal(c->ids[i], i + 1);
	assert_true(rounds > 300 / 7);
	free(c);
}

static void
append_step(struct audit *a, int slot, const char *dev, const char *step,
    const char *outcome, const char *serial, const char *fpr,
    const char *error)
{
	struct audit_event ev;

	ev_fill(&ev, 0);
	ev.slot = slot;
	ev.device_id = dev;
	ev.step = step;
	ev.outcome = outcome;
	ev.cert_serial = serial;
	ev.cert_fpr = fpr;
	ev.error = error;
	assert_int_equal(audit_append(a, &ev, NULL), 0);
}

static void
test_device_record(void **state)
{
	struct fx *f = *state;
	struct audit_device_record rec, before;
	struct audit_event ev;
	char *big;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	memset(&rec, 0x5a, sizeof(rec));
	memcpy(&before, &rec, sizeof(rec));
	assert_int_equal(audit_device_record(f->a, "D1", &rec),
	    KL_ERR_NOT_FOUND);
	assert_memory_equal(&rec, &before, sizeof(rec));

	/* Attempt 1 of D1 on slot 1, passed; D2 interleaved on slot 2. */
	append_step(f->a, 1, "D1", "identify", "ok", NULL, NULL, NULL);
	append_step(f->a, 2, "D2", "identify", "ok", NULL, NULL, NULL);
	append_step(f->a, 1, "D1", "keygen", "ok", NULL, NULL, NULL);
	append_step(f->a, 1, "D1", "issued", "ok", "01aa", "f1", NULL);
	append_step(f->a, 2, "D2", "issued", "ok", "02aa", "f2", NULL);
	append_step(f->a, 1, "D1", "done", "passed", "01aa", "f1", NULL);
	assert_int_equal(audit_device_record(f->a, "D1", &rec), 0);
	assert_string_equal(rec.device_id, "D1");
	assert_int_equal(rec.slot, 1);
	assert_int_equal(rec.first_id, 1);
	assert_int_equal(rec.last_id, 6);
	assert_int_equal(rec.rows, 4);
	assert_int_equal(rec.attempts, 1);
	assert_string_equal(rec.outcome, "passed");
	assert_string_equal(rec.last_step, "done");
	assert_string_equal(rec.cert_serial, "01aa");
	assert_string_equal(rec.cert_fpr, "f1");
	assert_string_equal(rec.key_fpr, "ab01");
	assert_string_equal(rec.station, "st-1");
	assert_string_equal(rec.board_serial, "BS-1");
	assert_string_equal(rec.error, "");
	assert_int_equal(strlen(rec.first_time), 24);
	assert_true(strcmp(rec.first_time, rec.last_time) <= 0);

	/* D2 has not finished. */
	assert_int_equal(audit_device_record(f->a, "D2", &rec), 0);
	assert_string_equal(rec.outcome, "in_progress");
	assert_string_equal(rec.cert_serial, "02aa");
	assert_int_equal(rec.rows, 2);

	/* Attempt 2 of D1 on slot 3 fails before issuance: nothing of
	 * attempt 1 bleeds into it.  A stray D1 row on slot 1 after the
	 * identify is not part of it either. */
	append_step(f->a, 3, "D1", "identify", "ok", NULL, NULL, NULL);
	append_step(f->a, 1, "D1", "stray", "info", "0bad", NULL, NULL);
	append_step(f->a, 3, "D1", "ca", "failed", NULL, NULL, "ca said no");
	append_step(f->a, 3, "D1", "ca", "failed", NULL, NULL,
	    "ca: the CA refused");
	assert_int_equal(audit_device_record(f->a, "D1", &rec), 0);
	assert_int_equal(rec.attempts, 2);
	assert_int_equal(rec.slot, 3);
	assert_int_equal(rec.first_id, 7);
	assert_int_equal(rec.last_id, 10);
	assert_int_equal(rec.rows, 3);
	assert_string_equal(rec.outcome, "failed");
	assert_string_equal(rec.error, "ca: the CA refused");
	assert_string_equal(rec.cert_serial, "");
	assert_string_equal(rec.cert_fpr, "");

	/* An overlong error is cut; an overlong serial is refused. */
	big = malloc(2000);
	assert_non_null(big);
	memset(big, 'e', 1999);
	big[1999] = '\0';
	append_step(f->a, 4, "D3", "identify", "ok", NULL, NULL, NULL);
	append_step(f->a, 4, "D3", "done", "failed", NULL, NULL, big);
	assert_int_equal(audit_device_record(f->a, "D3", &rec), 0);
	assert_int_equal(strlen(rec.error), AUDIT_REC_ERROR - 1);
	ev_fill(&ev, 0);
	ev.device_id = "D4";
	ev.step = "identify";
	big[300] = '\0';
	ev.board_serial = big;
	assert_int_equal(audit_append(f->a, &ev, NULL), 0);
	memcpy(&before, &rec, sizeof(rec));
	assert_int_equal(audit_device_record(f->a, "D4", &rec),
	    KL_ERR_TOO_BIG);
	assert_memory_equal(&rec, &before, sizeof(rec));
	free(big);

	/* Bound, not pasted: a quote in the ID finds nothing. */
	assert_int_equal(audit_device_record(f->a, "D1' OR '1'='1", &rec),
	    KL_ERR_NOT_FOUND);
	assert_int_equal(audit_device_record(f->a, NULL, &rec),
	    KL_ERR_INVALID);
	assert_int_equal(audit_device_record(f->a, "D1", NULL),
	    KL_ERR_INVALID);
}

/* ---- concurrency */

#define PER_WORKER 200

struct worker {
	struct audit *a;	/* shared, or NULL: open our own */
	const char *path;
	int tag;
	int failures;
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	struct audit *own = NULL, *a = w->a;
	struct audit_event ev;
	char dev[32];
	int i;

	if (a == NULL) {
		if (audit_open(&own, w->path) != 0) {
			w->failures = PER_WORKER;
			return NULL;
		}
		a = own;
	}
	for (i = 0; i < PER_WORKER; i++) {
		ev_fill(&ev, i);
		snprintf(dev, sizeof(dev), "w%d-%d", w->tag, i);
		ev.device_id = dev;
		ev.slot = w->tag;
		if (audit_append(a, &ev, NULL) != 0)
			w->failures++;
	}
	audit_close(own);
	return NULL;
}

static void
check_chain(struct fx *f, int64_t want)
{
	int64_t rows = 0, bad = -1;
	char why[256] = "", v[32];

	if (audit_verify(f->a, &rows, &bad, why, sizeof(why)) != 0)
		fail_msg("chain broken at %" PRId64 ": %s", bad, why);
	assert_int_equal(rows, want);
	raw_text(f->path, "SELECT count(DISTINCT device_id) FROM events", v,
	    sizeof(v));
	assert_int_equal(strtol(v, NULL, 10), want);
}

static void
test_threads_shared_handle(void **state)
{
	struct fx *f = *state;
	struct worker w[2];
	pthread_t t[2];
	int i;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	for (i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].a = f->a;
		w[i].tag = i;
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]),
		    0);
	}
	for (i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	check_chain(f, 2 * PER_WORKER);
}

#define GC_THREADS 8
#define GC_ROWS 60

struct gc_worker {
	struct audit *a;
	int tag;
	int failures;
};

/* Every third row waits for durability; the others are queued for later. */
static void *
gc_run(void *arg)
{
	struct gc_worker *w = arg;
	struct audit_event ev;
	char dev[32];
	int i;

	for (i = 0; i < GC_ROWS; i++) {
		ev_fill(&ev, i);
		snprintf(dev, sizeof(dev), "g%d-%03d", w->tag, i);
		ev.device_id = dev;
		ev.slot = w->tag;
		if ((i % 3 == 2 ? audit_append(w->a, &ev, NULL) :
		    audit_append_later(w->a, &ev)) != 0)
			w->failures++;
	}
	return NULL;
}

/* An append in its own thread (test_checks_beside_commit). */
struct bg_append {
	struct audit *a;
	int r;
};

static void *
bg_append_run(void *arg)
{
	struct bg_append *b = arg;
	struct audit_event ev;

	ev_fill(&ev, 1);
	ev.step = "ca";
	ev.outcome = "requested";
	ev.key_fpr = "cd02";
	b->r = audit_append(b->a, &ev, NULL);
	return NULL;
}

/*
 * The per-board checks (audit_device_state, audit_key_owner) do not wait
 * for an append in progress: they read the last commit on a connection
 * of their own.  Another process holds the write lock, so an append
 * waits inside its transaction (busy timeout, 10 s) with the handle's
 * writer lock held; the checks must still answer, from the rows
 * committed before, without the row being written.  Only then is the
 * other process's lock released and the append goes through.  (On the
 * writer's connection the checks would wait for the append, the append
 * for the lock, the lock for the checks: the append would fail busy.)
 */
static void
test_checks_beside_commit(void **state)
{
	struct fx *f = *state;
	struct audit_device_state *st;
	struct audit_prov rec;
	struct bg_append b;
	sqlite3 *x = NULL;
	pthread_t t;
	char other[80];
	int found = -1;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	b.a = f->a;
	b.r = -1;
	append_n(f->a, 4);
	assert_int_equal(sqlite3_open(f->path, &x), SQLITE_OK);
	assert_int_equal(sqlite3_exec(x, "BEGIN IMMEDIATE", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_int_equal(pthread_create(&t, NULL, bg_append_run, &b), 0);
	usleep(200 * 1000);	/* the append is waiting for x's lock */
	st = calloc(1, sizeof(*st));
	assert_non_null(st);
	assert_int_equal(audit_device_state(f->a, "dev-0001", INT64_MAX, st),
	    0);
	free(st);
	assert_int_equal(audit_key_owner(f->a, "cd02", "dev-0003", &found,
	    other, sizeof(other), &rec), 0);
	assert_int_equal(found, 0);	/* not committed yet */
	assert_int_equal(sqlite3_exec(x, "COMMIT", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(x);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.r, 0);
	assert_int_equal(audit_key_owner(f->a, "cd02", "dev-0003", &found,
	    other, sizeof(other), &rec), 0);
	assert_int_equal(found, 1);
	assert_string_equal(other, "dev-0001");
}

/*
 * Group commit: eight threads appending at once, two rows in three queued
 * for later.  Every row lands once, in each thread's order, on one
 * unbroken chain; a row queued for later is not in the file until a
 * durable append or a flush writes it, and close writes what is left.
 */
static void
test_group_commit(void **state)
{
	struct fx *f = *state;
	struct gc_worker w[GC_THREADS];
	pthread_t t[GC_THREADS];
	struct audit_event ev;
	char v[64], sql[400];
	int64_t id = 0;
	int i;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	for (i = 0; i < GC_THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].a = f->a;
		w[i].tag = i;
		assert_int_equal(pthread_create(&t[i], NULL, gc_run, &w[i]), 0);
	}
	for (i = 0; i < GC_THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	/* Each thread's last row waited: everything before it is written. */
	check_chain(f, GC_THREADS * GC_ROWS);
	for (i = 0; i < GC_THREADS; i++) {
		snprintf(sql, sizeof(sql), "SELECT group_concat(device_id, ',')"
		    " = (SELECT group_concat(device_id, ',') FROM (SELECT "
		    "device_id FROM events WHERE slot = %d ORDER BY device_id))"
		    " FROM (SELECT device_id FROM events WHERE slot = %d ORDER "
		    "BY id)", i, i);
		raw_text(f->path, sql, v, sizeof(v));
		assert_string_equal(v, "1");
	}

	/* A row queued for later: not in the file yet. */
	ev_fill(&ev, 1);
	ev.device_id = "later-1";
	assert_int_equal(audit_append_later(f->a, &ev), 0);
	raw_text(f->path, "SELECT count(*) FROM events WHERE device_id = "
	    "'later-1'", v, sizeof(v));
	assert_string_equal(v, "0");
	/* A durable one takes it along, before itself. */
	ev.device_id = "durable-1";
	assert_int_equal(audit_append(f->a, &ev, &id), 0);
	assert_int_equal(id, GC_THREADS * GC_ROWS + 2);
	raw_text(f->path, "SELECT id FROM events WHERE device_id = 'later-1'",
	    v, sizeof(v));
	assert_int_equal(strtol(v, NULL, 10), GC_THREADS * GC_ROWS + 1);
	/* audit_flush, and close, write what is queued. */
	ev.device_id = "later-2";
	assert_int_equal(audit_append_later(f->a, &ev), 0);
	assert_int_equal(audit_flush(f->a), 0);
	raw_text(f->path, "SELECT count(*) FROM events WHERE device_id = "
	    "'later-2'", v, sizeof(v));
	assert_string_equal(v, "1");
	ev.device_id = "later-3";
	assert_int_equal(audit_append_later(f->a, &ev), 0);
	audit_close(f->a);
	f->a = NULL;
	raw_text(f->path, "SELECT count(*) FROM events WHERE device_id = "
	    "'later-3'", v, sizeof(v));
	assert_string_equal(v, "1");
	assert_int_equal(audit_open(&f->a, f->path), 0);
	check_chain(f, GC_THREADS * GC_ROWS + 4);
}

/* Two connections, as two station processes would have: only SQLite's
 * file lock (BEGIN IMMEDIATE) keeps them from forking the chain. */
static void
test_threads_own_handles(void **state)
{
	struct fx *f = *state;
	struct worker w[2];
	pthread_t t[2];
	int i;

	assert_int_equal(audit_open(&f->a, f->path), 0);
	for (i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].path = f->path;
		w[i].tag = i;
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]),
		    0);
	}
	for (i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	check_chain(f, 2 * PER_WORKER);
}

/* Real processes: fork before any connection is open in the parent. */
static void
test_two_processes(void **state)
{
	struct fx *f = *state;
	struct worker w;
	pid_t pid[2];
	int i, st;

	/* Create the schema first so the children race on appends only. */
	assert_int_equal(audit_open(&f->a, f->path), 0);
	audit_close(f->a);
	f->a = NULL;
	for (i = 0; i < 2; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			memset(&w, 0, sizeof(w));
			w.path = f->path;
			w.tag = 10 + i;
			worker_run(&w);
			_exit(w.failures == 0 ? 0 : 1);
		}
	}
	for (i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	assert_int_equal(audit_open(&f->a, f->path), 0);
	check_chain(f, 2 * PER_WORKER);
}

/* ---- faults below SQLite: a VFS over the default one ---------------------
 *
 * Files whose name starts with fault_prefix get their writes or syncs
 * failed, with errno set, the way a disk that returns EIO or a full file
 * system would: SQLite above sees exactly what it would see from the OS.
 * The fault holds until it is lifted.
 */
static sqlite3_vfs *fault_base;
static sqlite3_vfs fault_vfs;
static char fault_prefix[160];
static int fault_write_rc, fault_sync_rc, fault_errno;
static int fault_hits;

struct fault_file {
	sqlite3_file base;
	int faulty;
	sqlite3_file *real;	/* follows this struct in the same block */
};

static int
fault_close(sqlite3_file *f)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xClose(p->real);
}

static int
fault_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xRead(p->real, b, n, o);
}

static int
fault_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
	struct fault_file *p = (struct fault_file *)f;

	if (p->faulty && fault_write_rc != 0) {
		fault_hits++;
		errno = fault_errno;
		return fault_write_rc;
	}
	return p->real->pMethods->xWrite(p->real, b, n, o);
}

static int
fault_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xTruncate(p->real, size);
}

static int
fault_sync(sqlite3_file *f, int flags)
{
	struct fault_file *p = (struct fault_file *)f;

	if (p->faulty && fault_sync_rc != 0) {
		fault_hits++;
		errno = fault_errno;
		return fault_sync_rc;
	}
	return p->real->pMethods->xSync(p->real, flags);
}

static int
fault_size(sqlite3_file *f, sqlite3_int64 *size)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xFileSize(p->real, size);
}

static int
fault_lock(sqlite3_file *f, int l)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xLock(p->real, l);
}

static int
fault_unlock(sqlite3_file *f, int l)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xUnlock(p->real, l);
}

static int
fault_reserved(sqlite3_file *f, int *out)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int
fault_fcntl(sqlite3_file *f, int op, void *arg)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int
fault_sector(sqlite3_file *f)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xSectorSize(p->real);
}

static int
fault_devchar(sqlite3_file *f)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xDeviceCharacteristics(p->real);
}

static int
fault_shmmap(sqlite3_file *f, int pg, int pgsz, int extend,
    void volatile **pp)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xShmMap(p->real, pg, pgsz, extend, pp);
}

static int
fault_shmlock(sqlite3_file *f, int off, int n, int flags)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xShmLock(p->real, off, n, flags);
}

static void
fault_shmbarrier(sqlite3_file *f)
{
	struct fault_file *p = (struct fault_file *)f;

	p->real->pMethods->xShmBarrier(p->real);
}

static int
fault_shmunmap(sqlite3_file *f, int del)
{
	struct fault_file *p = (struct fault_file *)f;

	return p->real->pMethods->xShmUnmap(p->real, del);
}

static const sqlite3_io_methods fault_io = {
	.iVersion = 2,	/* WAL needs the shm methods; no mmap fetch */
	.xClose = fault_close,
	.xRead = fault_read,
	.xWrite = fault_write,
	.xTruncate = fault_truncate,
	.xSync = fault_sync,
	.xFileSize = fault_size,
	.xLock = fault_lock,
	.xUnlock = fault_unlock,
	.xCheckReservedLock = fault_reserved,
	.xFileControl = fault_fcntl,
	.xSectorSize = fault_sector,
	.xDeviceCharacteristics = fault_devchar,
	.xShmMap = fault_shmmap,
	.xShmLock = fault_shmlock,
	.xShmBarrier = fault_shmbarrier,
	.xShmUnmap = fault_shmunmap,
};

static int
fault_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
    int *outflags)
{
	struct fault_file *p = (struct fault_file *)f;
	int rc;

	(void)vfs;
	memset(p, 0, sizeof(*p));
	p->real = (sqlite3_file *)(p + 1);
	rc = fault_base->xOpen(fault_base, name, p->real, flags, outflags);
	if (p->real->pMethods == NULL)
		return rc;
	p->faulty = name != NULL && fault_prefix[0] != '\0' &&
	    strncmp(name, fault_prefix, strlen(fault_prefix)) == 0;
	p->base.pMethods = &fault_io;
	return rc;
}

static int
fault_delete(sqlite3_vfs *v, const char *n, int sync)
{
	(void)v;
	return fault_base->xDelete(fault_base, n, sync);
}

static int
fault_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
	(void)v;
	return fault_base->xAccess(fault_base, n, flags, out);
}

static int
fault_fullpath(sqlite3_vfs *v, const char *n, int len, char *out)
{
	(void)v;
	return fault_base->xFullPathname(fault_base, n, len, out);
}

static int
fault_random(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return fault_base->xRandomness(fault_base, n, out);
}

static int
fault_sleep(sqlite3_vfs *v, int us)
{
	(void)v;
	return fault_base->xSleep(fault_base, us);
}

static int
fault_time(sqlite3_vfs *v, double *out)
{
	(void)v;
	return fault_base->xCurrentTime(fault_base, out);
}

static int
fault_lasterr(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return fault_base->xGetLastError(fault_base, n, out);
}

static int
fault_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
	(void)v;
	return fault_base->xCurrentTimeInt64(fault_base, out);
}

/* Make the fault VFS the default for everything opened from now on. */
static void
fault_install(const char *prefix)
{
	/* Out of SQLite's list before it is rewritten (a failed test may
	 * have left it in). */
	(void)sqlite3_vfs_unregister(&fault_vfs);
	fault_base = sqlite3_vfs_find("unix");
	assert_non_null(fault_base);
	memset(&fault_vfs, 0, sizeof(fault_vfs));
	fault_vfs.iVersion = 2;
	fault_vfs.szOsFile = (int)sizeof(struct fault_file) +
	    fault_base->szOsFile;
	fault_vfs.mxPathname = fault_base->mxPathname;
	fault_vfs.zName = "kl-fault";
	fault_vfs.xOpen = fault_open;
	fault_vfs.xDelete = fault_delete;
	fault_vfs.xAccess = fault_access;
	fault_vfs.xFullPathname = fault_fullpath;
	fault_vfs.xRandomness = fault_random;
	fault_vfs.xSleep = fault_sleep;
	fault_vfs.xCurrentTime = fault_time;
	fault_vfs.xGetLastError = fault_lasterr;
	fault_vfs.xCurrentTimeInt64 = fault_time64;
	snprintf(fault_prefix, sizeof(fault_prefix), "%s", prefix);
	fault_write_rc = fault_sync_rc = fault_errno = 0;
	fault_hits = 0;
	assert_int_equal(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK);
}

static void
fault_remove(void)
{
	fault_write_rc = fault_sync_rc = 0;
	(void)sqlite3_vfs_unregister(&fault_vfs);
	fault_prefix[0] = '\0';
}

static void
assert_words(const char *want)
{
	if (strstr(audit_last_error(), want) == NULL)
		fail_msg("audit error \"%s\" lacks \"%s\"", audit_last_error(),
		    want);
}

static void
assert_not_malformed(void)
{
	if (strstr(audit_last_error(), "malformed") != NULL)
		fail_msg("an I/O fault reads as damage: \"%s\"",
		    audit_last_error());
}

/* After the fault is lifted: the same handle appends again, and a fresh
 * read-only handle verifies the whole chain with every row in it. */
static void
fault_lifted_check(struct fx *f, int64_t want_rows)
{
	struct audit *ro = NULL;
	struct audit_event ev;
	int64_t rows = -1, bad = 0;
	char why[256] = "";

	fault_write_rc = fault_sync_rc = 0;
	ev_fill(&ev, 9);
	assert_int_equal(audit_append(f->a, &ev, NULL), 0);
	assert_int_equal(audit_verify(f->a, &rows, &bad, why, sizeof(why)), 0);
	assert_int_equal(rows, want_rows + 1);
	assert_int_equal(audit_open_readonly(&ro, f->path), 0);
	assert_int_equal(audit_verify(ro, &rows, &bad, why, sizeof(why)), 0);
	assert_int_equal(rows, want_rows + 1);
	audit_close(ro);
}

/* A disk that returns EIO on write: the append says I/O error, with the
 * path, and nothing is lost or called malformed once it works again. */
static void
test_io_error_write(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;

	fault_install(f->path);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 3);
	fault_errno = EIO;
	fault_write_rc = SQLITE_IOERR_WRITE;
	ev_fill(&ev, 3);
	assert_int_equal(audit_append(f->a, &ev, NULL), KL_ERR_IO);
	assert_true(fault_hits > 0);
	assert_words("I/O error writing");
	assert_words(f->path);
	assert_words("SQLITE_IOERR_WRITE");
	assert_not_malformed();
	/* A second try while the disk still fails: the same words. */
	assert_int_equal(audit_append(f->a, &ev, NULL), KL_ERR_IO);
	assert_words("I/O error writing");
	assert_not_malformed();
	fault_lifted_check(f, 3);
	fault_remove();
}

/* fsync fails (the data may not be on the disk): an I/O error, and the
 * row that was not made durable is not in the chain afterwards. */
static void
test_io_error_fsync(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;

	fault_install(f->path);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 2);
	fault_errno = EIO;
	fault_sync_rc = SQLITE_IOERR_FSYNC;
	ev_fill(&ev, 2);
	assert_int_equal(audit_append(f->a, &ev, NULL), KL_ERR_IO);
	assert_words("I/O error writing");
	assert_words(f->path);
	assert_words("SQLITE_IOERR_FSYNC");
	assert_not_malformed();
	fault_lifted_check(f, 2);
	fault_remove();
}

/* A full file system: "disk full" with the path. */
static void
test_disk_full(void **state)
{
	struct fx *f = *state;
	struct audit_event ev;

	fault_install(f->path);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 2);
	fault_errno = ENOSPC;
	fault_write_rc = SQLITE_FULL;
	ev_fill(&ev, 2);
	assert_int_equal(audit_append(f->a, &ev, NULL), KL_ERR_DISK_FULL);
	assert_words("disk full");
	assert_words(f->path);
	assert_not_malformed();
	fault_lifted_check(f, 2);
	fault_remove();
}

/* The start-up probe is a real, synced write: it fails on a disk that
 * fails writes or syncs, passes on a good one, and adds no audit row. */
static void
test_probe_write(void **state)
{
	struct fx *f = *state;
	int64_t rows = -1, bad = 0;
	char why[256] = "", v[64];

	fault_install(f->path);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 1);
	assert_int_equal(audit_probe_write(f->a, "st-1"), 0);
	raw_text(f->path, "SELECT station FROM station_start", v, sizeof(v));
	assert_string_equal(v, "st-1");

	fault_errno = EIO;
	fault_write_rc = SQLITE_IOERR_WRITE;
	fault_hits = 0;
	assert_int_equal(audit_probe_write(f->a, "st-1"), KL_ERR_IO);
	assert_true(fault_hits > 0);
	assert_words("start-up write check");
	assert_words(f->path);
	fault_write_rc = 0;

	fault_sync_rc = SQLITE_IOERR_FSYNC;
	fault_hits = 0;
	assert_int_equal(audit_probe_write(f->a, "st-1"), KL_ERR_IO);
	assert_true(fault_hits > 0);
	fault_sync_rc = 0;

	fault_errno = ENOSPC;
	fault_write_rc = SQLITE_FULL;
	assert_int_equal(audit_probe_write(f->a, "st-1"), KL_ERR_DISK_FULL);
	assert_words("disk full");
	fault_write_rc = 0;

	assert_int_equal(audit_probe_write(f->a, "st-2"), 0);
	raw_text(f->path, "SELECT count(*) FROM station_start", v, sizeof(v));
	assert_string_equal(v, "2");
	assert_int_equal(audit_verify(f->a, &rows, &bad, why, sizeof(why)), 0);
	assert_int_equal(rows, 1);
	fault_remove();
}

/* A log of schema version 1 (before station_start) is read as it is by
 * verify and export, and migrated by a station. */
static void
test_schema_v1_readable(void **state)
{
	struct fx *f = *state;
	struct audit *ro = NULL;
	int64_t rows = -1, bad = 0;
	char why[256] = "", v[64];

	assert_int_equal(audit_open(&f->a, f->path), 0);
	append_n(f->a, 2);
	audit_close(f->a);
	f->a = NULL;
	assert_int_equal(raw_exec(f->path, "DROP TABLE station_start; "
	    "DROP TABLE checkpoints; DROP INDEX events_key_fpr; "
	    "DROP INDEX events_registry; "
	    "PRAGMA user_version = 1", NULL, 0), SQLITE_OK);
	assert_int_equal(audit_open_readonly(&ro, f->path), 0);
	assert_int_equal(audit_verify(ro, &rows, &bad, why, sizeof(why)), 0);
	assert_int_equal(rows, 2);
	audit_close(ro);
	assert_int_equal(audit_open(&f->a, f->path), 0);
	assert_int_equal(audit_probe_write(f->a, "st-1"), 0);
	raw_text(f->path, "PRAGMA user_version", v, sizeof(v));
	assert_string_equal(v, "5");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_schema, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_registry_queue, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_append_verify, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_hash_matches_documented_encoding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_triggers_refuse, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tamper_field, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tamper_null_to_empty,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_tamper_type, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_delete_middle, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_delete_first, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tamper_prev_hash, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tamper_first_prev_hash,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_tamper_row_hash, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_forged_append, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_reopen_continues_chain,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_field_too_big, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_export_csv, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_export_json, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_export_write_error, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_find_provisioned, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_events_since, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_events_since_cap, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_events_since_follow, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_device_record, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_threads_shared_handle,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_checks_beside_commit,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_own_handles,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_io_error_write, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_io_error_fsync, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_probe_write, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_schema_v1_readable, setup,
		    teardown),
	};

	/* Expected failures log errors: quiet unless asked. */
	log_init("test_audit", getenv("KL_TEST_VERBOSE") != NULL ?
	    LOG_LVL_DEBUG : (enum log_level)(LOG_LVL_ERROR + 1));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
