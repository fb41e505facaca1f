/*
 * plant.h: the plant registry on PostgreSQL (libpq), shared by every
 * station of a plant (docs/plant.md).
 *
 * Two sides:
 *   - a station (plant_open ... plant_close): claims a device ID before its
 *     board's key is made, and records the outcome.  One struct plant may
 *     be shared by many slot threads: calls are serialised inside (one
 *     connection; a claim is one short statement).
 *   - the plant's administrator (plant_init, db/plant_admin.c): creates or
 *     migrates the schema and the station role, once per plant.
 *
 * A device ID belongs to one board plant-wide.  The devices table holds
 * one row per device ID: 'claimed' by a station (with a lease), 'released'
 * (a claim given back: the board failed before any certificate existed),
 * or 'provisioned' (with its key and certificate).  A claim is one
 * INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING statement, so
 * two stations presenting one device ID at the same moment cannot both
 * win (the row lock orders them; the second sees the first's claim).  A
 * claim may be taken over when its lease has run out, or by the station
 * that holds it (it died and came back; its own in-flight check keeps two
 * of its slots apart).  A provisioned device is refused unless
 * re-provisioning was asked for, which is recorded in device_history.
 *
 * No password ever passes through here from station.conf: libpq reads a
 * passfile, a client certificate, or the station's [registry]
 * password_file (mode 600), and TLS verifies the server (verify-full
 * against a pinned root) unless the server is on a Unix socket.
 */
#ifndef KL_PLANT_H
#define KL_PLANT_H

#include <stddef.h>
#include <stdint.h>

struct plant;

/* Schema version this program speaks (plant_migrations[] entries). */
extern const char *const plant_migrations[];
extern const int plant_schema_version;

/*
 * The two statements a board costs the registry, as sent (parameters $1
 * ...): a claim ($1 device, $2 station, $3 slot, $4 board serial, $5 lease
 * in s, $6 reprovision) and its record ($1 device, $2 station, $3 key fpr,
 * $4 certificate serial, $5 certificate fpr, $6 made at or NULL, $7 more
 * history words or NULL).  Exported for `keyline plant sql`, which the
 * load generator of make bench-plant runs, so it plays exactly these.
 */
extern const char plant_claim_sql[];
extern const char plant_provisioned_sql[];

/* How a station reaches the registry ([registry] in station.conf). */
struct plant_params {
	const char *conninfo;		/* libpq connection string or
					 * "service=NAME"; no password= */
	const char *password_file;	/* NULL/"": none (passfile, client
					 * certificate or trust) */
	const char *root_cert;		/* PEM: the server's CA, pinned; with
					 * a TCP host, required (verify-full) */
	const char *station;		/* station id */
	int lease_s;			/* claim lease, > 0 */
	int timeout_s;			/* connect and statement timeout */
	int lazy;			/* a server that cannot be reached at
					 * start-up is not an error: the
					 * first call connects ([registry]
					 * offline = local) */
};

/*
 * Connect and check the schema version (with p->lazy, a server that cannot
 * be reached is left for the first call: 0, and why says so; every other
 * error stays an error).  0 and *out, or KL_ERR_CONFIG
 * (password= in conninfo, a TCP host without root_cert, a password file
 * that is not mode 600 or not a regular file), KL_ERR_UNAVAILABLE (the
 * server cannot be reached), KL_ERR_DB (refused login, an untrusted
 * server certificate, a schema of another version), with words in why
 * (never the password).
 */
int plant_open(struct plant **out, const struct plant_params *p, char *why,
    size_t whysz);
void plant_close(struct plant *pl);

/* 1 when the registry connection is up now (as of the last call). */
int plant_connected(struct plant *pl);

/* Who holds a device ID, for a refusal's words. */
struct plant_owner {
	char state[16];			/* claimed, released, provisioned */
	char station[128];
	int slot;
	char board_serial[128];
	char time[40];			/* claimed_at or provisioned_at, UTC */
	char cert_serial[80];
	char cert_fpr[80];
};

/*
 * Claim device_id for this station's slot (board_serial as the board said
 * it).  0: claimed (a new row, a released one, an expired lease taken
 * over, this station's own claim renewed, or with reprovision a
 * provisioned device, recorded as such).  KL_ERR_DUPLICATE: held by
 * another station's live claim or provisioned, with the holder in *owner
 * and words in why.  KL_ERR_UNAVAILABLE: the server cannot be reached
 * (reconnects once first).  KL_ERR_DB: any other server error.
 */
int plant_claim(struct plant *pl, const char *device_id, int slot,
    const char *board_serial, int reprovision, struct plant_owner *owner,
    char *why, size_t whysz);

/*
 * The board passed: device_id is provisioned with this key and
 * certificate.  KL_ERR_NOT_FOUND when this station no longer holds the
 * claim (its lease ran out and another station took it over): loud, the
 * device now has two certificates.  Errors as plant_claim.
 */
int plant_provisioned(struct plant *pl, const char *device_id,
    const char *key_fpr, const char *cert_serial, const char *cert_fpr,
    char *why, size_t whysz);

/*
 * The board failed before any certificate existed: give the claim back
 * (state 'released').  A claim whose board may hold a certificate is
 * not released; its lease runs out instead.  Errors as plant_claim.
 */
int plant_release(struct plant *pl, const char *device_id, const char *note,
    char *why, size_t whysz);

/* ---- after an outage: [registry] offline = local ----------------------
 *
 * A board provisioned while the registry could not be reached was checked
 * against this station's own log only.  When the registry is back, each
 * such device is reconciled: recorded provisioned as if claimed then
 * (plant_reconcile), or, when the registry gives the device ID to another
 * board (provisioned elsewhere, or claimed by another station's live
 * lease), reported as a conflict with both sides in device_conflicts.
 */

/* One device this station provisioned offline, as its audit log says. */
struct plant_made {
	const char *device_id;
	int slot;
	const char *board_serial;
	const char *key_fpr;
	const char *cert_serial;
	const char *cert_fpr;		/* required: a conflict's identity */
	const char *made_at;		/* UTC, ISO 8601, as the audit log
					 * holds it; NULL: now */
	int reprovision;		/* re-provisioning was asked for */
};

/*
 * Record m in the registry, in one transaction: claimed and provisioned
 * as plant_claim and plant_provisioned would have (provisioned_at =
 * made_at), or nothing when the registry already holds this very
 * certificate for the device (a reconciliation run again after a crash).
 * 0: the registry holds it.  KL_ERR_DUPLICATE: the device is another
 * board's; the conflict is recorded in device_conflicts (once per device,
 * station and certificate), the holder in *owner, words in why.
 * KL_ERR_BUSY: the device is under a live claim (a board being
 * provisioned now, on this station or another): nothing changed, try
 * again later, when its outcome is known.  A re-provisioning is not taken
 * over a record made after m->made_at: that is a conflict.
 * KL_ERR_UNAVAILABLE (nothing changed), KL_ERR_DB.
 */
int plant_reconcile(struct plant *pl, const struct plant_made *m,
    struct plant_owner *owner, char *why, size_t whysz);

/* A conflict as device_conflicts holds it; "" where NULL. */
struct plant_conflict {
	int64_t id;
	char detected_at[40];		/* UTC */
	char device_id[80];
	char station[128];		/* who provisioned it offline */
	int slot;
	char board_serial[128];
	char key_fpr[80];
	char cert_serial[80];
	char cert_fpr[80];
	char made_at[40];
	char holder_state[16];		/* claimed, provisioned */
	char holder_station[128];	/* whom the registry gives it to */
	int holder_slot;
	char holder_board_serial[128];
	char holder_cert_serial[80];
	char holder_cert_fpr[80];
	char holder_time[40];
};

/* 0 to go on; anything else stops the walk and is returned. */
typedef int (*plant_conflict_fn)(void *arg, const struct plant_conflict *c);

/*
 * The conflicts this station is part of (either side) with id > after_id,
 * oldest first, at most 100 per call; fn is called under the registry's
 * lock (it must not call back into pl).  0, fn's return, or an error as
 * plant_claim.
 */
int plant_conflicts(struct plant *pl, int64_t after_id, plant_conflict_fn fn,
    void *arg, char *why, size_t whysz);

/*
 * Administrator: create or migrate the schema on the server admin_conninfo
 * names (as a role that may create tables and roles), and create or
 * update the station role station_role (LOGIN, the grants in docs/plant.md:
 * it may claim devices and append history, never UPDATE or DELETE
 * history).  password_file (mode 600, may be NULL) sets the role's
 * password.  Idempotent.  0 or an error above, with words in why.
 */
int plant_init(const char *admin_conninfo, const char *station_role,
    const char *password_file, char *why, size_t whysz);

#endif
