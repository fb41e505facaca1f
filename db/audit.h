/*
 * audit.h: the station's tamper-evident audit log (SQLite).
 *
 * One row per step event and per outcome.  The table is append-only
 * (triggers refuse UPDATE and DELETE) and hash-chained: each row stores the
 * SHA-256 of the row before it and its own hash over a canonical encoding
 * of its fields (docs/audit.md).  No secret ever goes in: callers pass
 * fingerprints and serials, never keys or PINs.
 *
 * One struct audit may be shared by many threads: calls are serialised
 * inside.  Opening creates the schema or migrates an older one; WAL mode.
 */
#ifndef KL_AUDIT_H
#define KL_AUDIT_H

#include <stdint.h>
#include <stdio.h>

struct audit;

/* 0 and *out (free with audit_close), or KL_ERR_DB. */
int audit_open(struct audit **out, const char *path);
void audit_close(struct audit *a);

/* All strings borrowed for the call; NULL is stored as SQL NULL. */
struct audit_event {
	const char *station;
	const char *operator_name;
	int slot;		/* 0 when not tied to a slot */
	const char *board_serial;
	const char *device_id;
	const char *step;	/* "identify", "keygen", "ca", "issued", ... */
	const char *outcome;	/* "ok", "failed", "passed", "refused", "info" */
	const char *key_fpr;	/* hex SHA-256 of the SPKI */
	const char *cert_serial; /* hex */
	const char *cert_fpr;	/* hex SHA-256 of the certificate DER */
	const char *ca;		/* CA name */
	const char *error;	/* words, for failures */
};

/*
 * Append one row (time set here, UTC, millisecond precision), chained to the
 * last.  *id (may be NULL) gets the new row id.  0 or KL_ERR_DB.  When this
 * fails the caller must not go on with what it was recording.
 */
int audit_append(struct audit *a, const struct audit_event *ev, int64_t *id);

/*
 * Whether a certificate for device_id has reached a board: a row with step
 * "done" and outcome "passed", or with step "write" and outcome "ok" (files
 * committed on the board, even if a later step failed).  *found = 0/1; when
 * found and cert_serial is not NULL, the serial of the newest such row is
 * copied there.
 */
int audit_find_provisioned(struct audit *a, const char *device_id, int *found,
    char *cert_serial, size_t serialsz);

/*
 * Walk the whole chain.  0 when every row's stored hash matches its
 * contents and its predecessor; KL_ERR_AUDIT_CHAIN with *bad_id the first
 * bad row and a reason in why; KL_ERR_DB.  *rows (may be NULL) counts rows.
 */
int audit_verify(struct audit *a, int64_t *rows, int64_t *bad_id, char *why,
    size_t whysz);

/* Hex digits of a row hash; a head buffer needs AUDIT_HASH_HEX + 1 bytes. */
#define AUDIT_HASH_HEX 64

/*
 * audit_verify, and on success also the row_hash of the newest row (64 '0'
 * for an empty log) in head (headsz >= AUDIT_HASH_HEX + 1).  Head and count
 * come from the same snapshot as the walk, so an operator can record them
 * as an external anchor against truncation (docs/audit.md).
 */
int audit_verify_head(struct audit *a, int64_t *rows, int64_t *bad_id,
    char *why, size_t whysz, char *head, size_t headsz);

enum audit_format { AUDIT_FMT_CSV, AUDIT_FMT_JSON };

/* Every row, oldest first, hashes included.  0, KL_ERR_DB, KL_ERR_IO. */
int audit_export(struct audit *a, FILE *out, enum audit_format fmt);

#endif
