/*
 * rechain DB ID COLUMN VALUE: what someone with write access to the audit
 * file (and not the station token) can do: drop the append-only triggers,
 * set one text column of row ID to VALUE, and recompute prev_hash and
 * row_hash of every row from 1 on, so that the chain verifies again.
 * Hashes come from the audit module itself (audit_row_hash_of), the
 * encoding of docs/audit.md.  For 15-audit-checkpoint; not a product tool.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db/audit.h"

static const char *const cols[] = {
	"station", "operator", "board_serial", "device_id", "step", "outcome",
	"key_fpr", "cert_serial", "cert_fpr", "ca", "error",
};

static const char *
txt(sqlite3_stmt *st, int c)
{
	return (const char *)sqlite3_column_text(st, c);
}

int
main(int argc, char **argv)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL, *up = NULL;
	char sql[256], prev[AUDIT_HASH_HEX + 1], hash[AUDIT_HASH_HEX + 1];
	struct audit_row row;
	size_t i;
	int ok = 0;

	if (argc != 5) {
		fprintf(stderr, "usage: rechain DB ID COLUMN VALUE\n");
		return 2;
	}
	for (i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
		if (strcmp(argv[3], cols[i]) == 0)
			ok = 1;
	if (!ok || sqlite3_open(argv[1], &db) != SQLITE_OK) {
		fprintf(stderr, "rechain: bad column or database\n");
		return 2;
	}
	if (sqlite3_exec(db, "BEGIN IMMEDIATE; DROP TRIGGER IF EXISTS "
	    "events_no_update; DROP TRIGGER IF EXISTS events_no_delete",
	    NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	snprintf(sql, sizeof(sql), "UPDATE events SET %s = ?1 WHERE id = ?2",
	    argv[3]);
	if (sqlite3_prepare_v2(db, sql, -1, &up, NULL) != SQLITE_OK ||
	    sqlite3_bind_text(up, 1, argv[4], -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int64(up, 2, strtoll(argv[2], NULL, 10)) !=
	    SQLITE_OK || sqlite3_step(up) != SQLITE_DONE ||
	    sqlite3_changes(db) != 1)
		goto fail;
	sqlite3_finalize(up);
	up = NULL;
	if (sqlite3_prepare_v2(db, "SELECT id, time, station, operator, slot,"
	    " board_serial, device_id, step, outcome, key_fpr, cert_serial,"
	    " cert_fpr, ca, error FROM events ORDER BY id", -1, &st, NULL) !=
	    SQLITE_OK || sqlite3_prepare_v2(db, "UPDATE events SET prev_hash ="
	    " ?1, row_hash = ?2 WHERE id = ?3", -1, &up, NULL) != SQLITE_OK)
		goto fail;
	memset(prev, '0', AUDIT_HASH_HEX);
	prev[AUDIT_HASH_HEX] = '\0';
	while (sqlite3_step(st) == SQLITE_ROW) {
		memset(&row, 0, sizeof(row));
		row.id = sqlite3_column_int64(st, 0);
		row.time = txt(st, 1);
		row.station = txt(st, 2);
		row.operator_name = txt(st, 3);
		row.slot = sqlite3_column_int64(st, 4);
		row.board_serial = txt(st, 5);
		row.device_id = txt(st, 6);
		row.step = txt(st, 7);
		row.outcome = txt(st, 8);
		row.key_fpr = txt(st, 9);
		row.cert_serial = txt(st, 10);
		row.cert_fpr = txt(st, 11);
		row.ca = txt(st, 12);
		row.error = txt(st, 13);
		row.prev_hash = prev;
		if (audit_row_hash_of(&row, hash) != 0)
			goto fail;
		sqlite3_reset(up);
		if (sqlite3_bind_text(up, 1, prev, -1, SQLITE_TRANSIENT) !=
		    SQLITE_OK ||
		    sqlite3_bind_text(up, 2, hash, -1, SQLITE_TRANSIENT) !=
		    SQLITE_OK ||
		    sqlite3_bind_int64(up, 3, row.id) != SQLITE_OK ||
		    sqlite3_step(up) != SQLITE_DONE)
			goto fail;
		memcpy(prev, hash, sizeof(prev));
	}
	sqlite3_finalize(st);
	sqlite3_finalize(up);
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_close(db);
	printf("%s\n", prev);
	return 0;
 fail:
	fprintf(stderr, "rechain: %s\n", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	sqlite3_finalize(up);
	sqlite3_close(db);
	return 1;
}
