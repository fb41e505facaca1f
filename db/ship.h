/*
 * ship.h: audit shipping, the station's SQLite audit log copied row by row
 * into the plant store on PostgreSQL (audit_rows), and reading it back for
 * verification (docs/plant.md, "Audit shipping").
 *
 * The local log stays the first write and the outbox: a row is committed
 * locally, then a shipper thread sends it.  Each batch is one transaction;
 * where to start is always asked of the server (its last seq for this
 * station), so a shipper that was killed, restarted, or ran twice neither
 * leaves a gap nor sends a duplicate: the server's trigger takes a row
 * only as the next of its station's chain, skips the very same row sent
 * again, and refuses anything else.  Such a refusal is loud and sticky:
 * the station must stop provisioning (ship_refused) until someone looks.
 *
 * Connections follow the plant registry's rules (plant.h): no password in
 * a conninfo; a password file of mode 600, a libpq passfile, a client
 * certificate or peer authentication; TCP only to a verified server.
 */
#ifndef KL_SHIP_H
#define KL_SHIP_H

#include <stddef.h>
#include <stdint.h>

#include "db/audit.h"

struct ship;

/* How a station reaches the plant store: the [registry] keys. */
struct ship_params {
	const char *conninfo;		/* no password=, sslmode, sslrootcert */
	const char *password_file;	/* NULL/"": none */
	const char *root_cert;		/* pinned CA; required over TCP */
	const char *station;		/* station id: whose rows are shipped */
	int timeout_s;			/* connect and statement timeout, > 0 */
	int poll_ms;			/* how often to look for new rows;
					 * 0: 200 */
	int lazy;			/* a server that cannot be reached at
					 * start-up is not an error: the
					 * thread checks the plant store's
					 * head when it first connects */
};

/*
 * Connect, check that the plant store and the local log agree (the
 * server's newest row of this station is in the local log with the same
 * row_hash), then start the shipper thread on a (borrowed until
 * ship_close).  With p->lazy, a server that cannot be reached is left to
 * the thread, which makes the same check when it first connects.  0 and *out; KL_ERR_CONFIG (conninfo, password file, TLS);
 * KL_ERR_UNAVAILABLE (no server); KL_ERR_AUDIT_CHAIN (the plant store
 * holds rows of this station that the local log does not: truncated,
 * replaced or rewritten); KL_ERR_DB; words in why, never a password.
 */
int ship_open(struct ship **out, const struct ship_params *p,
    struct audit *a, char *why, size_t whysz);

/*
 * Stop the thread after one last attempt to ship every row (bounded by
 * the timeout: rows it could not send wait in the local log for the next
 * start), and free.  NULL is fine.
 */
void ship_close(struct ship *s);

/* Look for new rows now rather than at the next poll. */
void ship_wake(struct ship *s);

/*
 * 1 when the plant store refused a row (it does not chain, or the server
 * holds another row under its seq) or the local log cannot be shipped (a
 * row of another station id, text that is not UTF-8): shipping has
 * stopped and the station must not provision, with the reason in why.
 * 0 otherwise (also for NULL: no registry).  Thread-safe.
 */
int ship_refused(struct ship *s, char *why, size_t whysz);

struct ship_status {
	int connected;		/* the shipper's connection is up */
	int refused;		/* as ship_refused */
	int64_t shipped;	/* the plant store's last seq of this station,
				 * -1 before it was read */
	int64_t local;		/* the newest local row seen */
	int64_t failures;	/* failed attempts in a row (0 when well) */
};

void ship_status(struct ship *s, struct ship_status *st);

/* ---- reading the plant store back: keyline audit verify --plant */

struct ship_reader;

/*
 * For tools (keyline audit verify): conninfo as for keyline plant init:
 * no password= (password_file, mode 600, or a libpq passfile), and either
 * every host= a socket directory or sslmode=verify-full.  0 and *out,
 * KL_ERR_CONFIG, KL_ERR_UNAVAILABLE, KL_ERR_DB, words in why.
 */
int ship_reader_open(struct ship_reader **out, const char *conninfo,
    const char *password_file, char *why, size_t whysz);
void ship_reader_close(struct ship_reader *r);

/* Called once per station whose chain verified: its rows and head. */
typedef void (*ship_station_fn)(void *arg, const char *station,
    int64_t rows, const char *head);

struct ship_verify_report {
	int64_t stations;	/* chains verified */
	int64_t rows;		/* rows checked */
	/* On KL_ERR_AUDIT_CHAIN: the first bad row and why. */
	char bad_station[128];
	int64_t bad_seq;
	char why[300];
};

/*
 * Walk every station's chain (or only station's, when not NULL) in one
 * read snapshot, station by station, seq by seq: seq 1, 2, 3... without a
 * gap, prev_hash the previous row's row_hash (64 '0' for seq 1), row_hash
 * the hash of the row's contents (audit_row_hash_of, the local log's
 * encoding).  0; KL_ERR_AUDIT_CHAIN with rep->bad_*; KL_ERR_NOT_FOUND
 * (station given and no row of it); KL_ERR_DB / KL_ERR_UNAVAILABLE with
 * words in rep->why.
 */
int ship_reader_verify(struct ship_reader *r, const char *station,
    ship_station_fn fn, void *arg, struct ship_verify_report *rep);

/*
 * Row seq of station in the plant store: *found 0/1, its row_hash in hash
 * (AUDIT_HASH_HEX + 1 bytes) when found, and *last the station's newest
 * seq (0: none).  0 or KL_ERR_DB / KL_ERR_UNAVAILABLE with words in why.
 */
int ship_reader_row(struct ship_reader *r, const char *station, int64_t seq,
    int *found, char *hash, int64_t *last, char *why, size_t whysz);

#endif
