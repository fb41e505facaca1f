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

#include <jansson.h>
#include <openssl/types.h>

struct audit;
struct audit_val;

/*
 * Errors: every function below that touches the file maps SQLite's result
 * into the project's codes: KL_ERR_IO (an I/O error below SQLite, EIO),
 * KL_ERR_DISK_FULL, KL_ERR_READONLY (read-only file, directory or file
 * system, or no permission), KL_ERR_BUSY (locked past the 10 s wait),
 * KL_ERR_CORRUPT (SQLITE_CORRUPT, SQLITE_NOTADB: the only "malformed"),
 * KL_ERR_NOMEM, and KL_ERR_DB for the rest.  The words, naming the file,
 * the SQLite extended code and the errno, are logged and kept for
 * audit_last_error().
 */

/* 0 and *out (free with audit_close), or an error above.  Creates a
 * missing file, switches it to WAL and migrates it to the current
 * schema. */
int audit_open(struct audit **out, const char *path);

/*
 * Prove the file takes a committed write, as an append would: BEGIN
 * IMMEDIATE, one row in the station_start table (station, time; outside
 * the hash chain, replaced at every start) and a synced COMMIT.  The
 * station calls it once at start-up so that a read-only or full file
 * system stops it before any board is touched.  0 or an error above.
 */
int audit_probe_write(struct audit *a, const char *station);

/*
 * Words for the newest audit failure in the calling thread ("insert: I/O
 * error writing /var/lib/keyline/audit.db (SQLITE_IOERR_WRITE, errno 5:
 * Input/output error)"); never NULL.  Thread-local, so a slot reads its
 * own failure, not another slot's; valid until the thread's next audit
 * call.
 */
const char *audit_last_error(void);

/*
 * For reading only (keyline audit verify/export): the file is not
 * created, changed or migrated, so a read-only copy in an auditor's hands
 * can be checked.  An error above when it cannot be opened, KL_ERR_DB
 * when its schema is not one this program reads.  Appends on this handle
 * fail.
 */
int audit_open_readonly(struct audit **out, const char *path);
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
 * Group commit: rows from every thread that arrive while one thread writes
 * go into the next transaction together, one WAL sync for all, and
 * audit_append() returns once its own row is durable.
 *
 * audit_append_later() queues a row without waiting (its fields copied):
 * it is written, in order, with the next audit_append() of any thread, or
 * by audit_flush() or audit_close().  For progress rows that gate nothing
 * outside the station; a row whose durability must precede an action (a
 * CSR leaving, a COMMIT, an outcome) goes through audit_append().  If the
 * batch carrying such rows fails, the next audit_append() returns its
 * error.  0, KL_ERR_TOO_BIG or KL_ERR_NOMEM.
 */
int audit_append_later(struct audit *a, const struct audit_event *ev);

/* Write every queued row now; 0, or the error of rows lost. */
int audit_flush(struct audit *a);

/*
 * Whether a certificate for device_id has reached a board: a row with step
 * "done" and outcome "passed", with step "write" and outcome "ok" (files
 * committed on the board, even if a later step failed), or "recover"
 * "provisioned" (a board found holding an in-doubt attempt's credentials).  *found = 0/1; when
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

/*
 * The newest row's id and row_hash (0 and 64 '0' for an empty log), read
 * without walking the chain: what the station hands out (batch summary,
 * /api/v1/status) so that a copy of the head lives outside the station,
 * an anchor against truncation.  head needs AUDIT_HASH_HEX + 1 bytes.
 * It is the newest row this handle appended (read from the file once
 * before the first append), kept in memory so that asking never waits
 * for an append in progress; rows another process appends to the same
 * file after that are not reflected.  0 or KL_ERR_DB.
 */
int audit_head(struct audit *a, int64_t *rows, char *head, size_t headsz);

/*
 * The id of the row whose row_hash is hash (64 hex digits), for checking
 * a head recorded earlier outside the log (an anchor): after a clean
 * verify, an anchor that is missing means rows were removed from the end
 * or the log was rewritten.  0 with *id (0 when no row has it),
 * KL_ERR_INVALID (not a hash), KL_ERR_DB.
 */
int audit_find_row_hash(struct audit *a, const char *hash, int64_t *id);

/* ---- readers for the HTTP status API ------------------------------------ */

/*
 * One row as read back.  Every string is borrowed until the callback
 * returns; NULL where the column is SQL NULL.  Text is the stored bytes,
 * which need not be UTF-8 (board serials come off a wire).
 */
struct audit_row {
	int64_t id;
	const char *time;
	const char *station;
	const char *operator_name;
	int64_t slot;
	const char *board_serial;
	const char *device_id;
	const char *step;
	const char *outcome;
	const char *key_fpr;
	const char *cert_serial;
	const char *cert_fpr;
	const char *ca;
	const char *error;
	const char *prev_hash;
	const char *row_hash;
	/* The stored values as SQLite holds them (type and exact bytes),
	 * set by the readers here for audit_row_json. */
	const struct audit_val *vals;
};

/*
 * The one JSON form of an audit row, for `audit export --format json` and
 * the API's /api/v1/events alike: every column by its SQL name, in table
 * order, as stored (a forged row shows as forged): SQL NULL is null, an
 * integer an integer, text a string of all its bytes (embedded NULs
 * included), with U+FFFD for each byte that is not well-formed UTF-8 (the
 * exact bytes stay in the database and the CSV).  row comes from this
 * module's readers (audit_events_since).  A new reference the caller
 * json_decref()s, or NULL when out of memory.
 */
json_t *audit_row_json(const struct audit_row *row);

/* 0 to go on; anything else stops the walk and is returned as is. */
typedef int (*audit_row_fn)(void *arg, const struct audit_row *row);

/* Most rows one audit_events_since() call hands out. */
#define AUDIT_EVENTS_MAX 500

/*
 * Rows with id > since_id, in id order, at most limit (1..AUDIT_EVENTS_MAX;
 * larger is capped, smaller is KL_ERR_INVALID), each passed to fn under the
 * audit mutex (fn must not call back into this struct audit).  On 0, *next
 * is the id of the last row passed (since_id when none), the cursor for the
 * next call, and *more (may be NULL) says whether rows after it existed
 * when this call read.
 *
 * Following a cursor this way sees every row exactly once: ids are given
 * as last + 1 under the write lock, so rows commit in id order and a
 * reader never sees id n + 1 before id n.  0, KL_ERR_INVALID, KL_ERR_DB,
 * or fn's non-zero return (then *next and *more are untouched).
 */
int audit_events_since(struct audit *a, int64_t since_id, int limit,
    audit_row_fn fn, void *arg, int64_t *next, int *more);

/*
 * The plant registry's offline queue ([registry] offline = local,
 * docs/plant.md): "registry queued" rows (a board provisioned while the
 * registry could not be reached) not yet closed by a later "registry
 * reconciled" or "registry conflict" row for the same device and
 * certificate, oldest first, at most AUDIT_EVENTS_MAX (*total, may be
 * NULL: how many there are in all).  fn as for audit_events_since.  0,
 * KL_ERR_INVALID, KL_ERR_DB, or fn's non-zero return.
 */
int audit_registry_queue(struct audit *a, audit_row_fn fn, void *arg,
    int64_t *total);

/*
 * How many "registry conflict" rows the log holds, and the newest one's
 * words (cut to lastsz; "" when none).  0, KL_ERR_INVALID, KL_ERR_DB.
 */
int audit_registry_conflicts(struct audit *a, int64_t *count, char *last,
    size_t lastsz);

/* Bounds of struct audit_device_record's text; longer stored values make
 * audit_device_record() fail with KL_ERR_TOO_BIG (error is cut instead). */
#define AUDIT_REC_ID 80
#define AUDIT_REC_TEXT 272
#define AUDIT_REC_FPR 80
#define AUDIT_REC_TIME 32
#define AUDIT_REC_ERROR 512

/*
 * The newest provisioning attempt of one device, from its rows: the attempt
 * starts at the newest "identify" row for device_id and holds that row and
 * the later rows with the same device_id and slot.  Fields are "" where no
 * row of the attempt set them; serials and fingerprints are the newest
 * non-NULL ones of the attempt.
 */
struct audit_device_record {
	char device_id[AUDIT_REC_ID];
	char station[AUDIT_REC_TEXT];
	char operator_name[AUDIT_REC_TEXT];
	int64_t slot;
	char board_serial[AUDIT_REC_TEXT];
	char key_fpr[AUDIT_REC_FPR];
	char cert_serial[AUDIT_REC_FPR];
	char cert_fpr[AUDIT_REC_FPR];
	char ca[AUDIT_REC_TEXT];
	char first_time[AUDIT_REC_TIME];	/* the identify row */
	char last_time[AUDIT_REC_TIME];		/* the newest row */
	int64_t first_id, last_id;
	/* "passed" (a done/passed row), "already" (a done/already row: the
	 * board already held its recorded credentials), "failed", "refused"
	 * (a row with that outcome), or "in_progress" (none of those yet). */
	char outcome[16];
	char last_step[AUDIT_REC_ID];	/* step of the newest row */
	char error[AUDIT_REC_ERROR];	/* error of the failing row, or "" */
	int64_t rows;			/* rows in the attempt */
	int64_t attempts;		/* identify rows for this device ID */
};

/*
 * Fill *rec with the newest attempt of device_id.  0; KL_ERR_NOT_FOUND
 * when no identify row names it; KL_ERR_INVALID; KL_ERR_TOO_BIG; KL_ERR_DB.
 * *rec is written only on 0.  One read snapshot: rows appended meanwhile
 * are either all in or all out.
 */
int audit_device_record(struct audit *a, const char *device_id,
    struct audit_device_record *rec);

/* ---- device state, for the duplicate check and crash recovery --------- */

/* What one row (or the rows of one attempt) say of a device's credentials;
 * "" where no row set a field. */
struct audit_prov {
	char station[AUDIT_REC_TEXT];
	char time[AUDIT_REC_TIME];
	char board_serial[AUDIT_REC_TEXT];
	char key_fpr[AUDIT_REC_FPR];
	char cert_serial[AUDIT_REC_FPR];
	char cert_fpr[AUDIT_REC_FPR];
	int64_t slot;
	int64_t row_id;
};

struct audit_device_state {
	/*
	 * A certificate for the device reached a board: the newest "done
	 * passed", "write ok" or "recover provisioned" row ("done already"
	 * rows repeat an earlier one and do not count).
	 * prov_passed: that row is a "done" one (the board passed its proof
	 * of possession), not only a commit.
	 */
	int provisioned;
	int prov_passed;
	struct audit_prov prov;
	/*
	 * The newest attempt ended in doubt: "ca" (the CA was asked and the
	 * attempt has no outcome: the station died), "commit" (COMMIT was
	 * sent and nothing says whether the board committed), "verify"
	 * (committed, never verified), "clear" (committed, failed a later
	 * check, and could not be cleared).  "" when it did not.  doubt holds
	 * that attempt's newest station, slot, time, key and certificate.
	 */
	char doubt_step[16];
	struct audit_prov doubt;
};

/*
 * The state of device_id from the rows with id < before_id (the caller's
 * own identify row, so the attempt in progress is not judged; INT64_MAX
 * for all).  0 and *out; KL_ERR_INVALID, KL_ERR_NOMEM, KL_ERR_TOO_BIG (a
 * stored fingerprint longer than a fingerprint), KL_ERR_DB.
 */
int audit_device_state(struct audit *a, const char *device_id,
    int64_t before_id, struct audit_device_state *out);

/* Most devices audit_in_doubt() hands out; the rest are counted. */
#define AUDIT_DOUBT_MAX 1000

/* Called once per device in doubt; state borrowed for the call.  0 to go
 * on; anything else stops the walk and is returned. */
typedef int (*audit_doubt_fn)(void *arg, const char *device_id,
    const struct audit_device_state *state);

/*
 * Every device whose newest attempt is in doubt (see doubt_step), oldest
 * first, at most AUDIT_DOUBT_MAX; *more (may be NULL) counts those left
 * out.  What a station lists at start-up.  0, fn's return, KL_ERR_*.
 */
int audit_in_doubt(struct audit *a, audit_doubt_fn fn, void *arg,
    int64_t *more);

/*
 * Whether key_fpr (hex SHA-256 of an SPKI) was already sent to a CA or
 * certified for a device other than device_id: a key belongs to one
 * device.  0 with *found 0/1; when found, the other device ID (cut to
 * other_idsz) and that row's station, time and serial in *rec.
 * KL_ERR_INVALID, KL_ERR_TOO_BIG, KL_ERR_DB.
 */
int audit_key_owner(struct audit *a, const char *key_fpr,
    const char *device_id, int *found, char *other_id, size_t other_idsz,
    struct audit_prov *rec);

enum audit_format { AUDIT_FMT_CSV, AUDIT_FMT_JSON };

/* Every row, oldest first, hashes included.  0, KL_ERR_DB, KL_ERR_IO. */
int audit_export(struct audit *a, FILE *out, enum audit_format fmt);

/* ---- signed checkpoints of the chain head (docs/audit.md, "Checkpoints") */

/*
 * Signs msg (the bytes audit_checkpoint_message() encodes) with the
 * station's checkpoint key: 0 and *sig (caller frees with free()), or a
 * KL_ERR_*.  Called with the audit handle's lock held: it must not call
 * back into the handle.
 */
typedef int (*audit_sign_fn)(void *arg, const uint8_t *msg, size_t len,
    uint8_t **sig, size_t *sig_len);

/*
 * Turn checkpoints on for this handle: every checkpoint_every rows (0 =
 * only when audit_checkpoint() is called) audit_append() signs the new
 * head through fn after its commit, whoever called it.  station is
 * copied.  Call before the handle is shared between threads.  0 or
 * KL_ERR_INVALID.
 */
int audit_checkpoint_setup(struct audit *a, const char *station,
    int64_t checkpoint_every, audit_sign_fn fn, void *arg);

/*
 * Sign the current head (newest row id and row_hash, 0 and 64 "0" for an
 * empty log) with the station id, the time and reason ("start", "stop",
 * "rows") and store it in the checkpoints table, in one write
 * transaction, so the head cannot move in between.  *id (may be NULL)
 * gets the checkpoint's id.  0, KL_ERR_INVALID (no signer set up), the
 * signer's error, or a file error above.
 */
int audit_checkpoint(struct audit *a, const char *reason, int64_t *id);

/*
 * The bytes a checkpoint signature covers: netstrings of the tag
 * "keyline-checkpoint-v1", station, time, reason, row id (decimal) and
 * row hash.  0 and *msg (caller frees with free()), KL_ERR_NOMEM,
 * KL_ERR_TOO_BIG.
 */
int audit_checkpoint_message(const char *station, const char *time,
    const char *reason, int64_t row_id, const char *row_hash, uint8_t **msg,
    size_t *len);

/* What audit_verify_checkpoints() found. */
struct audit_ckpt_report {
	int table;		/* the file has a checkpoints table */
	int64_t count;		/* checkpoints verified */
	/* The newest verified checkpoint (count > 0): its id, row and time. */
	int64_t newest_id;
	int64_t newest_row;
	char newest_hash[AUDIT_HASH_HEX + 1];
	char newest_time[32];
	char newest_reason[16];
	char newest_station[128];
	/* On KL_ERR_AUDIT_CHAIN: the checkpoint that failed and why. */
	int64_t bad_id;
	char why[256];
};

/*
 * Check every checkpoint, oldest first: its signature verifies under pub
 * (the checkpoint certificate's key) and the row it names still holds the
 * hash it signed.  Run it after audit_verify_head() in the same process:
 * the chain ties every earlier row to a checkpointed one.  0 (also with
 * no checkpoints: rep->count 0, rep->table says whether the table is
 * there), KL_ERR_AUDIT_CHAIN with rep->bad_id and rep->why, KL_ERR_*.
 */
int audit_verify_checkpoints(struct audit *a, EVP_PKEY *pub,
    struct audit_ckpt_report *rep);

/*
 * row_hash of one row as read back (the encoding in docs/audit.md),
 * for tools that check or rebuild a log outside the station.  0 or
 * KL_ERR_*; out needs AUDIT_HASH_HEX + 1 bytes.
 */
int audit_row_hash_of(const struct audit_row *row, char *out);

#endif
