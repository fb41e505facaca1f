/*
 * fuzz_audit.c: the audit export (db/audit.c, audit_export()) of hostile
 * stored text.  Board serials and CA messages come off a wire and end up
 * in the log; a log copied to an auditor may have been edited by hand.
 *
 * Input: byte 0 says how the text is stored: 0 through audit_append()
 * (the station's own path: strings end at the first NUL), 1 by raw SQL
 * as TEXT with any bytes (NUL included), 2 as BLOBs, 3 as TEXT but the
 * slot column too; the rest is split at 0xff bytes into the values of
 * board_serial, device_id, step, outcome, error, ca, cert_serial, station.
 *
 * A fresh log per run, in a temp directory, so every input is judged on
 * its own: a copy of an empty log audit_open() made once at start (making
 * the schema each run would cost most of the time).  Checks: the JSON export parses with jansson as an array of
 * one object per row; the CSV export, read back by RFC 4180 rules, has a
 * header of 16 fields and one record of 16 fields per row, and a value
 * stored through audit_append reads back byte for byte, with the ' the
 * export puts before text a spreadsheet would take for a formula.
 */
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <sqlite3.h>

#include "db/audit.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/log.h"

#define NCOLS 16
#define NVALS 8

static char db_path[PATH_MAX];
static uint8_t *empty_db;
static size_t empty_db_len;

static void rm_db(void);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct audit *a = NULL;
	char err[256];

	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_audit");
	snprintf(db_path, sizeof(db_path), "%s/audit.db", fuzz_tmpdir());
	rm_db();
	FUZZ_CHECK(audit_open(&a, db_path) == 0, "audit_open");
	audit_close(a);
	/* Closing the last connection checkpoints the WAL into the file. */
	FUZZ_CHECK(fsutil_read_capped(db_path, 1 << 20, &empty_db,
	    &empty_db_len, err, sizeof(err)) == 0, "%s", err);
	return 0;
}

static void
rm_db(void)
{
	char p[PATH_MAX + 8];

	unlink(db_path);
	snprintf(p, sizeof(p), "%s-wal", db_path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db_path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-journal", db_path);
	unlink(p);
}

/* RFC 4180 reader: the field count of each record; -1 when malformed. */
static int
csv_records(const char *s, size_t n, int *counts, int maxrec,
    const char *want, size_t want_len, int want_field, int *found)
{
	size_t i = 0, fstart;
	int rec = 0, fields, quoted;
	char *field = malloc(n + 1);
	size_t flen;
	/* The export's leading ' (audit_csv_field, formula injection). */
	int tick = want != NULL && want_len > 0 &&
	    memchr("=+-@\t\r'", want[0], 7) != NULL;

	FUZZ_CHECK(field != NULL, "malloc");
	while (i < n) {
		fields = 0;
		for (;;) {
			flen = 0;
			quoted = 0;
			fstart = i;
			if (i < n && s[i] == '"') {
				quoted = 1;
				i++;
				for (;;) {
					if (i >= n) {
						free(field);
						return -1;	/* open quote */
					}
					if (s[i] == '"') {
						if (i + 1 < n && s[i + 1] == '"') {
							field[flen++] = '"';
							i += 2;
							continue;
						}
						i++;
						break;
					}
					field[flen++] = s[i++];
				}
			} else {
				while (i < n && s[i] != ',' && s[i] != '\r' &&
				    s[i] != '\n') {
					if (s[i] == '"') {
						free(field);
						return -1;	/* bare quote */
					}
					field[flen++] = s[i++];
				}
			}
			(void)fstart;
			(void)quoted;
			if (rec == 1 && fields == want_field && want != NULL &&
			    flen == want_len + (size_t)tick &&
			    (!tick || field[0] == '\'') &&
			    memcmp(field + tick, want, want_len) == 0)
				*found = 1;
			fields++;
			if (i < n && s[i] == ',') {
				i++;
				continue;
			}
			break;
		}
		if (i + 1 < n + 1 && i + 2 <= n && s[i] == '\r' &&
		    s[i + 1] == '\n')
			i += 2;
		else {
			free(field);
			return -1;	/* record not ended by CRLF */
		}
		if (rec < maxrec)
			counts[rec] = fields;
		rec++;
	}
	free(field);
	return rec;
}

static void
export_and_check(struct audit *a, int rows, const char *want,
    size_t want_len)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	json_t *root, *row;
	json_error_t jerr;
	int counts[4], nrec, i, found = 0, r;

	FUZZ_CHECK((f = open_memstream(&text, &len)) != NULL, "memstream");
	r = audit_export(a, f, AUDIT_FMT_JSON);
	fclose(f);
	FUZZ_CHECK(r == 0, "JSON export %s", kl_errname(r));
	/* \u0000 is valid JSON (RFC 8259), and what a NUL in stored text
	 * must become; jansson wants to be told. */
	root = json_loadb(text, len, JSON_ALLOW_NUL, &jerr);
	FUZZ_CHECK(root != NULL, "JSON export does not parse: %s (line %d)",
	    jerr.text, jerr.line);
	FUZZ_CHECK(json_is_array(root) &&
	    json_array_size(root) == (size_t)rows, "JSON export: not %d rows",
	    rows);
	for (i = 0; i < rows; i++) {
		row = json_array_get(root, (size_t)i);
		FUZZ_CHECK(json_is_object(row) &&
		    json_object_size(row) == NCOLS, "JSON row %d", i);
	}
	json_decref(root);
	free(text);

	text = NULL;
	len = 0;
	FUZZ_CHECK((f = open_memstream(&text, &len)) != NULL, "memstream");
	r = audit_export(a, f, AUDIT_FMT_CSV);
	fclose(f);
	FUZZ_CHECK(r == 0, "CSV export %s", kl_errname(r));
	nrec = csv_records(text, len, counts, 4, want, want_len, 5, &found);
	FUZZ_CHECK(nrec == rows + 1, "CSV export: %d records for %d rows",
	    nrec, rows);
	for (i = 0; i < nrec && i < 4; i++)
		FUZZ_CHECK(counts[i] == NCOLS, "CSV record %d has %d fields",
		    i, counts[i]);
	if (want != NULL)
		FUZZ_CHECK(found, "board_serial does not read back from CSV");
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *v[NVALS];
	size_t vn[NVALS], i, k, start;
	char *s[NVALS] = { 0 };
	struct audit *a = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int mode, r, c;

	if (size < 1 || size > 16384)
		return 0;
	mode = data[0] % 4;
	for (k = 0; k < NVALS; k++) {
		v[k] = (const uint8_t *)"";
		vn[k] = 0;
	}
	for (k = 0, i = 1, start = 1; i <= size && k < NVALS; i++) {
		if (i == size || data[i] == 0xff) {
			v[k] = data + start;
			vn[k] = i - start;
			k++;
			start = i + 1;
		}
	}
	rm_db();
	fuzz_write_file(db_path, empty_db, empty_db_len);
	r = audit_open(&a, db_path);
	FUZZ_CHECK(r == 0, "audit_open %s", kl_errname(r));
	if (mode == 0) {
		struct audit_event ev = { 0 };

		for (k = 0; k < NVALS; k++) {
			s[k] = strndup((const char *)v[k], vn[k]);
			FUZZ_CHECK(s[k] != NULL, "strndup");
		}
		ev.board_serial = s[0];
		ev.device_id = s[1];
		ev.step = s[2];
		ev.outcome = s[3];
		ev.error = s[4];
		ev.ca = s[5];
		ev.cert_serial = s[6];
		ev.station = s[7];
		ev.slot = 3;
		r = audit_append(a, &ev, NULL);
		FUZZ_CHECK(r == 0, "audit_append %s", kl_errname(r));
		export_and_check(a, 1, s[0], strlen(s[0]));
		for (k = 0; k < NVALS; k++)
			free(s[k]);
		audit_close(a);
		return 0;
	}
	/* Rows written behind the station's back, as a hand-edited copy. */
	FUZZ_CHECK(sqlite3_open(db_path, &db) == SQLITE_OK, "sqlite3_open");
	FUZZ_CHECK(sqlite3_prepare_v2(db, "INSERT INTO events (time, station,"
	    " operator, slot, board_serial, device_id, step, outcome, key_fpr,"
	    " cert_serial, cert_fpr, ca, error, prev_hash, row_hash) VALUES "
	    "(?1, ?9, ?2, ?3, ?1, ?2, ?3, ?4, ?5, ?7, ?6, ?6, ?5, ?8, ?8)",
	    -1, &st, NULL) == SQLITE_OK, "prepare: %s", sqlite3_errmsg(db));
	for (k = 0; k < NVALS; k++) {
		c = (int)k + 1;
		if (mode == 2)
			r = sqlite3_bind_blob(st, c, v[k], (int)vn[k],
			    SQLITE_TRANSIENT);
		else
			r = sqlite3_bind_text(st, c, (const char *)v[k],
			    (int)vn[k], SQLITE_TRANSIENT);
		FUZZ_CHECK(r == SQLITE_OK, "bind");
	}
	if (mode == 3)
		r = sqlite3_bind_text(st, 9, (const char *)v[2], (int)vn[2],
		    SQLITE_TRANSIENT);
	else
		r = sqlite3_bind_text(st, 9, "station-1", -1, SQLITE_STATIC);
	FUZZ_CHECK(r == SQLITE_OK, "bind");
	r = sqlite3_step(st);
	sqlite3_finalize(st);
	sqlite3_close(db);
	/* NOT NULL or type affinity may refuse some rows: nothing to export
	 * then but the header. */
	export_and_check(a, r == SQLITE_DONE ? 1 : 0, NULL, 0);
	audit_close(a);
	return 0;
}
