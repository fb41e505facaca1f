/*
 * plant.c: a station's connection to the plant registry (plant.h).
 *
 * One libpq connection under a mutex: a claim is one short statement, and
 * a station makes a few per second at most.  Every statement is
 * parameterised (PQexecParams); board text never becomes SQL.  A lost
 * connection is re-established once per call before the call gives up
 * with KL_ERR_UNAVAILABLE.
 */
#include "db/plant.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "db/pgconn.h"

#define PLANT_MAX_PASSWORD (PGCONN_MAX_PASSWORD + 1)

struct plant {
	pthread_mutex_t mu;
	PGconn *conn;
	char *conninfo;			/* as configured, no password */
	char *root_cert;		/* NULL on a Unix socket */
	char *password;			/* secret_alloc(PLANT_MAX_PASSWORD) or
					 * NULL */
	char station[128];
	int lease_s;
	int timeout_s;
};

/* Under pl->mu: connect (again), check the schema version. */
static int
plant_connect(struct plant *pl, char *why, size_t whysz)
{
	PGresult *res = NULL;
	int r, v;

	if (pl->conn != NULL) {
		PQfinish(pl->conn);
		pl->conn = NULL;
	}
	if ((r = pgconn_connect(&pl->conn, pl->conninfo, pl->root_cert,
	    pl->password, pl->station, pl->timeout_s, "the registry", why,
	    whysz)) != 0)
		return r;
	res = PQexec(pl->conn, "SELECT version FROM keyline_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pgconn_words("the registry has no keyline schema (keyline "
		    "plant init)", PQresultErrorMessage(res), why, whysz);
		r = KL_ERR_DB;
		goto fail;
	}
	v = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	if (v != plant_schema_version) {
		snprintf(why, whysz, "the registry's schema is version %d; "
		    "this station speaks %d (keyline plant init migrates it)",
		    v, plant_schema_version);
		r = KL_ERR_DB;
		goto fail;
	}
	PQclear(res);
	return 0;
fail:
	PQclear(res);
	PQfinish(pl->conn);
	pl->conn = NULL;
	return r;
}

int
plant_open(struct plant **out, const struct plant_params *p, char *why,
    size_t whysz)
{
	struct plant *pl;
	int unix_only = 0, r;

	*out = NULL;
	if (p->conninfo == NULL || p->conninfo[0] == '\0' ||
	    p->station == NULL || p->lease_s <= 0 || p->timeout_s <= 0) {
		snprintf(why, whysz, "[registry]: conninfo, a station id, a "
		    "lease and a timeout are needed");
		return KL_ERR_CONFIG;
	}
	if ((r = pgconn_check_conninfo(p->conninfo, p->root_cert,
	    PGCONN_STATION, "[registry] conninfo", &unix_only, why,
	    whysz)) != 0)
		return r;
	if ((pl = calloc(1, sizeof(*pl))) == NULL)
		return KL_ERR_NOMEM;
	pthread_mutex_init(&pl->mu, NULL);
	snprintf(pl->station, sizeof(pl->station), "%s", p->station);
	pl->lease_s = p->lease_s;
	pl->timeout_s = p->timeout_s;
	if ((pl->conninfo = strdup(p->conninfo)) == NULL ||
	    (!unix_only && (pl->root_cert = strdup(p->root_cert)) == NULL)) {
		r = KL_ERR_NOMEM;
		goto fail;
	}
	if (p->password_file != NULL && p->password_file[0] != '\0') {
		if ((pl->password = secret_alloc(PLANT_MAX_PASSWORD)) == NULL) {
			r = KL_ERR_NOMEM;
			goto fail;
		}
		if ((r = pgconn_read_password(p->password_file, pl->password,
		    why, whysz)) != 0)
			goto fail;
	}
	pthread_mutex_lock(&pl->mu);
	r = plant_connect(pl, why, whysz);
	pthread_mutex_unlock(&pl->mu);
	/* Lazy: no server now is the first call's business. */
	if (r == KL_ERR_UNAVAILABLE && p->lazy)
		r = 0;
	if (r != 0)
		goto fail;
	*out = pl;
	return 0;
fail:
	plant_close(pl);
	return r;
}

int
plant_connected(struct plant *pl)
{
	int up;

	pthread_mutex_lock(&pl->mu);
	up = pl->conn != NULL && PQstatus(pl->conn) == CONNECTION_OK;
	pthread_mutex_unlock(&pl->mu);
	return up;
}

void
plant_close(struct plant *pl)
{
	if (pl == NULL)
		return;
	if (pl->conn != NULL)
		PQfinish(pl->conn);
	pthread_mutex_destroy(&pl->mu);
	free(pl->conninfo);
	free(pl->root_cert);
	if (pl->password != NULL)
		secret_free(pl->password, PLANT_MAX_PASSWORD);
	free(pl);
}

/*
 * Under pl->mu: run one parameterised statement, reconnecting once when
 * the connection is gone.  *res is the result (caller PQclear()s) when 0.
 */
static int
plant_exec(struct plant *pl, const char *sql, int n, const char *const *v,
    PGresult **res, char *why, size_t whysz)
{
	ExecStatusType st;
	int tries, r;

	*res = NULL;
	for (tries = 0; tries < 2; tries++) {
		/* A connection that cannot be made now is not tried again
		 * at once: an unreachable server costs one connect timeout
		 * per call, not two. */
		if (pl->conn == NULL || PQstatus(pl->conn) != CONNECTION_OK) {
			if ((r = plant_connect(pl, why, whysz)) != 0)
				return r;
		}
		*res = PQexecParams(pl->conn, sql, n, NULL, v, NULL, NULL, 0);
		st = PQresultStatus(*res);
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
			return 0;
		if (PQstatus(pl->conn) != CONNECTION_OK) {
			/* The server went away under the statement. */
			pgconn_words("registry connection lost",
			    PQerrorMessage(pl->conn), why, whysz);
			PQclear(*res);
			*res = NULL;
			continue;
		}
		pgconn_words("registry", PQresultErrorMessage(*res), why, whysz);
		PQclear(*res);
		*res = NULL;
		return KL_ERR_DB;
	}
	return KL_ERR_UNAVAILABLE;
}

static void
plant_copy(char *dst, size_t dstsz, PGresult *res, int col)
{
	snprintf(dst, dstsz, "%s", PQgetisnull(res, 0, col) ? "" :
	    PQgetvalue(res, 0, col));
}

/*
 * One statement: the row is claimed if it is new, released, an expired
 * claim, this station's own claim, or (reprovision) provisioned; the
 * history row goes with it in the same statement (a data-modifying CTE),
 * so a claim is never without its record.  Nothing comes back when the
 * device is someone else's.
 */
const char plant_claim_sql[] =
    "WITH c AS ("
    " INSERT INTO devices AS d (device_id, state, station, slot,"
    "  board_serial, lease_until)"
    " VALUES ($1, 'claimed', $2, $3::integer, $4,"
    "  now() + make_interval(secs => $5::integer))"
    " ON CONFLICT (device_id) DO UPDATE SET state = 'claimed',"
    "  station = EXCLUDED.station, slot = EXCLUDED.slot,"
    "  board_serial = EXCLUDED.board_serial, claimed_at = now(),"
    "  lease_until = EXCLUDED.lease_until,"
    "  reprovisions = d.reprovisions +"
    "   CASE WHEN d.state = 'provisioned' THEN 1 ELSE 0 END"
    " WHERE d.state = 'released'"
    "  OR (d.state = 'claimed' AND (d.lease_until < now()"
    "   OR d.station = EXCLUDED.station))"
    "  OR (d.state = 'provisioned' AND $6::boolean)"
    " RETURNING d.device_id, d.reprovisions),"
    " h AS (INSERT INTO device_history (device_id, station, slot,"
    "  board_serial, event, detail)"
    "  SELECT device_id, $2, $3::integer, $4,"
    "   CASE WHEN $6::boolean THEN 'reprovision' ELSE 'claim' END,"
    "   'reprovisions ' || reprovisions FROM c)"
    "SELECT device_id FROM c";

static const char plant_owner_sql[] =
    "SELECT state,"
    " CASE WHEN state = 'provisioned' THEN made_station ELSE station END,"
    " CASE WHEN state = 'provisioned' THEN made_slot ELSE slot END,"
    " board_serial,"
    " to_char(COALESCE(provisioned_at, claimed_at) AT TIME ZONE 'UTC',"
    "  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), cert_serial,"
    " cert_fpr FROM devices WHERE device_id = $1";

/* Under pl->mu: the holder of v[0] into *owner and words into why. */
static int
plant_read_owner(struct plant *pl, const char *const *v,
    struct plant_owner *owner, int (*exec)(struct plant *, const char *,
    int, const char *const *, PGresult **, char *, size_t), char *why,
    size_t whysz)
{
	PGresult *res = NULL;
	int r;

	if ((r = exec(pl, plant_owner_sql, 1, v, &res, why, whysz)) != 0)
		return r;
	if (PQntuples(res) != 1) {
		snprintf(why, whysz, "registry: device %s refused but not "
		    "found", v[0]);
		PQclear(res);
		return KL_ERR_DB;
	}
	plant_copy(owner->state, sizeof(owner->state), res, 0);
	plant_copy(owner->station, sizeof(owner->station), res, 1);
	owner->slot = (int)strtol(PQgetvalue(res, 0, 2), NULL, 10);
	plant_copy(owner->board_serial, sizeof(owner->board_serial), res, 3);
	plant_copy(owner->time, sizeof(owner->time), res, 4);
	plant_copy(owner->cert_serial, sizeof(owner->cert_serial), res, 5);
	plant_copy(owner->cert_fpr, sizeof(owner->cert_fpr), res, 6);
	PQclear(res);
	if (strcmp(owner->state, "provisioned") == 0)
		snprintf(why, whysz, "provisioned by station %s, slot %d, at "
		    "%s (certificate serial %s), per the plant registry",
		    owner->station, owner->slot, owner->time,
		    owner->cert_serial[0] ? owner->cert_serial : "unknown");
	else
		snprintf(why, whysz, "being provisioned by station %s, slot "
		    "%d, since %s (board %s), per the plant registry",
		    owner->station, owner->slot, owner->time,
		    owner->board_serial);
	return 0;
}

int
plant_claim(struct plant *pl, const char *device_id, int slot,
    const char *board_serial, int reprovision, struct plant_owner *owner,
    char *why, size_t whysz)
{
	char slotbuf[16], lease[16];
	const char *v[6];
	PGresult *res = NULL;
	int r;

	memset(owner, 0, sizeof(*owner));
	snprintf(slotbuf, sizeof(slotbuf), "%d", slot);
	snprintf(lease, sizeof(lease), "%d", pl->lease_s);
	v[0] = device_id;
	v[1] = pl->station;
	v[2] = slotbuf;
	v[3] = board_serial;
	v[4] = lease;
	v[5] = reprovision ? "true" : "false";
	pthread_mutex_lock(&pl->mu);
	if ((r = plant_exec(pl, plant_claim_sql, 6, v, &res, why,
	    whysz)) != 0)
		goto out;
	if (PQntuples(res) == 1) {
		r = 0;
		goto out;
	}
	/* Someone else's: who, for the refusal's words.  Read after the
	 * failed claim, only for the message: the decision was the
	 * statement's. */
	PQclear(res);
	res = NULL;
	if ((r = plant_read_owner(pl, v, owner, plant_exec, why,
	    whysz)) != 0)
		goto out;
	r = KL_ERR_DUPLICATE;
out:
	PQclear(res);
	pthread_mutex_unlock(&pl->mu);
	return r;
}

/*
 * The claim becomes provisioned, with its history row.  $6: when the
 * board was made (NULL: now); $7: more words for the history, or NULL.
 */
const char plant_provisioned_sql[] =
    "WITH p AS (UPDATE devices SET state = 'provisioned',"
    "  key_fpr = $3, cert_serial = $4, cert_fpr = $5,"
    "  provisioned_at = COALESCE($6::timestamptz, now()),"
    "  lease_until = NULL, made_station = station, made_slot = slot"
    " WHERE device_id = $1 AND station = $2 AND state = 'claimed'"
    " RETURNING device_id, slot, board_serial),"
    " h AS (INSERT INTO device_history (device_id, station, slot,"
    "  board_serial, event, detail)"
    "  SELECT device_id, $2, slot, board_serial, 'provisioned',"
    "   'certificate serial ' || $4 || COALESCE($7, '') FROM p)"
    "SELECT device_id FROM p";

int
plant_provisioned(struct plant *pl, const char *device_id,
    const char *key_fpr, const char *cert_serial, const char *cert_fpr,
    char *why, size_t whysz)
{
	const char *v[7] = { device_id, pl->station, key_fpr, cert_serial,
	    cert_fpr, NULL, NULL };
	PGresult *res = NULL;
	int r;

	pthread_mutex_lock(&pl->mu);
	if ((r = plant_exec(pl, plant_provisioned_sql, 7, v, &res, why,
	    whysz)) == 0 && PQntuples(res) != 1) {
		snprintf(why, whysz, "registry: this station no longer holds "
		    "the claim on %s (its lease ran out and another station "
		    "took it): the device may now have two certificates",
		    device_id);
		r = KL_ERR_NOT_FOUND;
	}
	PQclear(res);
	pthread_mutex_unlock(&pl->mu);
	return r;
}

/*
 * Under pl->mu, inside a transaction: one statement, no reconnecting (a
 * new connection would not be in the transaction).
 */
static int
plant_exec_tx(struct plant *pl, const char *sql, int n,
    const char *const *v, PGresult **res, char *why, size_t whysz)
{
	ExecStatusType st;

	*res = PQexecParams(pl->conn, sql, n, NULL, v, NULL, NULL, 0);
	st = PQresultStatus(*res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return 0;
	pgconn_words(PQstatus(pl->conn) == CONNECTION_OK ? "registry" :
	    "registry connection lost", PQresultErrorMessage(*res), why,
	    whysz);
	PQclear(*res);
	*res = NULL;
	return PQstatus(pl->conn) == CONNECTION_OK ? KL_ERR_DB :
	    KL_ERR_UNAVAILABLE;
}

/* The other side of a conflict, read from devices in the same
 * statement; once per (device, station, certificate). */
static const char plant_conflict_sql[] =
    "WITH c AS (INSERT INTO device_conflicts (device_id, station, slot,"
    "  board_serial, key_fpr, cert_serial, cert_fpr, made_at,"
    "  holder_state, holder_station, holder_slot, holder_board_serial,"
    "  holder_cert_serial, holder_cert_fpr, holder_time)"
    " SELECT $1, $2, $3::integer, $4, $5, $6, $7, $8::timestamptz,"
    "  d.state,"
    "  CASE WHEN d.state = 'provisioned' THEN d.made_station"
    "   ELSE d.station END,"
    "  CASE WHEN d.state = 'provisioned' THEN d.made_slot ELSE d.slot END,"
    "  d.board_serial, d.cert_serial, d.cert_fpr,"
    "  COALESCE(d.provisioned_at, d.claimed_at)"
    " FROM devices d WHERE d.device_id = $1"
    " ON CONFLICT (device_id, station, cert_fpr) DO NOTHING"
    " RETURNING id, device_id, slot, board_serial, holder_station),"
    " h AS (INSERT INTO device_history (device_id, station, slot,"
    "  board_serial, event, detail)"
    "  SELECT device_id, $2, slot, board_serial, 'conflict',"
    "   'conflict #' || id || ': certificate serial ' || $6 ||"
    "   ' made while the registry was unreachable; the registry gives"
    " the device to station ' || holder_station FROM c)"
    "SELECT id FROM c";

int
plant_reconcile(struct plant *pl, const struct plant_made *m,
    struct plant_owner *owner, char *why, size_t whysz)
{
	char slotbuf[16], lease[16], detail[120];
	const char *v[8];
	PGresult *res = NULL;
	int r, began = 0, newer = 0;

	memset(owner, 0, sizeof(*owner));
	if (m->device_id == NULL || m->cert_fpr == NULL ||
	    m->cert_fpr[0] == '\0') {
		snprintf(why, whysz, "registry: a device and its certificate "
		    "are needed to reconcile");
		return KL_ERR_INVALID;
	}
	snprintf(slotbuf, sizeof(slotbuf), "%d", m->slot);
	snprintf(lease, sizeof(lease), "%d", pl->lease_s);
	snprintf(detail, sizeof(detail), "; made while the registry was "
	    "unreachable, at %s", m->made_at != NULL ? m->made_at : "?");
	pthread_mutex_lock(&pl->mu);
	if ((r = plant_exec(pl, "BEGIN", 0, NULL, &res, why, whysz)) != 0)
		goto out;
	began = 1;
	PQclear(res);
	/* What the registry holds, locked until COMMIT: this very
	 * certificate (reconciled before a crash took the local row), a
	 * live claim (a board being provisioned now, here or elsewhere:
	 * its outcome decides, so this waits for it), or a record made
	 * after this board (a re-provisioning queued here does not
	 * overwrite it). */
	v[0] = m->device_id;
	v[1] = m->made_at;
	if ((r = plant_exec_tx(pl, "SELECT cert_fpr, state,"
	    " state = 'claimed' AND lease_until >= now(),"
	    " COALESCE(provisioned_at > $2::timestamptz, false)"
	    " FROM devices WHERE device_id = $1 FOR UPDATE", 2, v, &res, why,
	    whysz)) != 0)
		goto out;
	if (PQntuples(res) == 1) {
		if (!PQgetisnull(res, 0, 0) &&
		    strcmp(PQgetvalue(res, 0, 0), m->cert_fpr) == 0 &&
		    strcmp(PQgetvalue(res, 0, 1), "provisioned") == 0)
			goto commit;
		if (strcmp(PQgetvalue(res, 0, 2), "t") == 0) {
			snprintf(why, whysz, "registry: device %s is being "
			    "provisioned now (a live claim); tried again "
			    "later", m->device_id);
			r = KL_ERR_BUSY;
			goto out;
		}
		newer = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
	}
	PQclear(res);
	/* As a claim would have been at the time: the same statement. */
	v[1] = pl->station;
	v[2] = slotbuf;
	v[3] = m->board_serial;
	v[4] = lease;
	v[5] = m->reprovision && !newer ? "true" : "false";
	if ((r = plant_exec_tx(pl, plant_claim_sql, 6, v, &res, why,
	    whysz)) != 0)
		goto out;
	if (PQntuples(res) == 1) {
		PQclear(res);
		v[2] = m->key_fpr;
		v[3] = m->cert_serial;
		v[4] = m->cert_fpr;
		v[5] = m->made_at;
		v[6] = detail;
		if ((r = plant_exec_tx(pl, plant_provisioned_sql, 7, v, &res,
		    why, whysz)) != 0)
			goto out;
		if (PQntuples(res) != 1) {
			snprintf(why, whysz, "registry: device %s claimed but "
			    "not recorded", m->device_id);
			r = KL_ERR_DB;
			goto out;
		}
		goto commit;
	}
	PQclear(res);
	res = NULL;
	if ((r = plant_read_owner(pl, v, owner, plant_exec_tx, why,
	    whysz)) != 0)
		goto out;
	v[1] = pl->station;
	v[2] = slotbuf;
	v[3] = m->board_serial;
	v[4] = m->key_fpr;
	v[5] = m->cert_serial;
	v[6] = m->cert_fpr;
	v[7] = m->made_at;
	if ((r = plant_exec_tx(pl, plant_conflict_sql, 8, v, &res, why,
	    whysz)) != 0)
		goto out;
	PQclear(res);
	res = NULL;
	if ((r = plant_exec_tx(pl, "COMMIT", 0, NULL, &res, why,
	    whysz)) != 0) {
		began = 0;
		goto out;
	}
	began = 0;
	/* The words plant_read_owner left in why name the holder. */
	r = KL_ERR_DUPLICATE;
	goto out;
commit:
	PQclear(res);
	res = NULL;
	r = plant_exec_tx(pl, "COMMIT", 0, NULL, &res, why, whysz);
	began = 0;
out:
	PQclear(res);
	if (began && pl->conn != NULL &&
	    PQstatus(pl->conn) == CONNECTION_OK)
		PQclear(PQexec(pl->conn, "ROLLBACK"));
	pthread_mutex_unlock(&pl->mu);
	return r;
}

#define PLANT_TIME(col) \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

int
plant_conflicts(struct plant *pl, int64_t after_id, plant_conflict_fn fn,
    void *arg, char *why, size_t whysz)
{
	static const char sql[] =
	    "SELECT id, " PLANT_TIME("detected_at") ", device_id, station,"
	    " slot, board_serial, key_fpr, cert_serial, cert_fpr, "
	    PLANT_TIME("made_at") ", holder_state, holder_station,"
	    " holder_slot, holder_board_serial, holder_cert_serial,"
	    " holder_cert_fpr, " PLANT_TIME("holder_time")
	    " FROM device_conflicts WHERE (station = $1 OR holder_station = $1)"
	    " AND id > $2::bigint ORDER BY id LIMIT 100";
	struct plant_conflict *c = NULL;
	char after[24];
	const char *v[2];
	PGresult *res = NULL;
	int i, r;

	snprintf(after, sizeof(after), "%lld", (long long)after_id);
	v[0] = pl->station;
	v[1] = after;
	if ((c = malloc(sizeof(*c))) == NULL)
		return KL_ERR_NOMEM;
	pthread_mutex_lock(&pl->mu);
	if ((r = plant_exec(pl, sql, 2, v, &res, why, whysz)) != 0)
		goto out;
	for (i = 0; i < PQntuples(res) && r == 0; i++) {
		memset(c, 0, sizeof(*c));
		c->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
#define PC(f, col) snprintf(c->f, sizeof(c->f), "%s", \
    PQgetisnull(res, i, col) ? "" : PQgetvalue(res, i, col))
		PC(detected_at, 1);
		PC(device_id, 2);
		PC(station, 3);
		c->slot = (int)strtol(PQgetvalue(res, i, 4), NULL, 10);
		PC(board_serial, 5);
		PC(key_fpr, 6);
		PC(cert_serial, 7);
		PC(cert_fpr, 8);
		PC(made_at, 9);
		PC(holder_state, 10);
		PC(holder_station, 11);
		c->holder_slot = (int)strtol(PQgetvalue(res, i, 12), NULL, 10);
		PC(holder_board_serial, 13);
		PC(holder_cert_serial, 14);
		PC(holder_cert_fpr, 15);
		PC(holder_time, 16);
#undef PC
		r = fn(arg, c);
	}
out:
	PQclear(res);
	pthread_mutex_unlock(&pl->mu);
	free(c);
	return r;
}

int
plant_release(struct plant *pl, const char *device_id, const char *note,
    char *why, size_t whysz)
{
	static const char sql[] =
	    /* A re-provisioning that failed before any certificate leaves
	     * the device as it was: provisioned, where it was made. */
	    "WITH p AS (UPDATE devices SET lease_until = NULL,"
	    "  state = CASE WHEN made_station IS NOT NULL"
	    "   THEN 'provisioned' ELSE 'released' END"
	    " WHERE device_id = $1 AND station = $2 AND state = 'claimed'"
	    " RETURNING device_id, slot, board_serial),"
	    " h AS (INSERT INTO device_history (device_id, station, slot,"
	    "  board_serial, event, detail)"
	    "  SELECT device_id, $2, slot, board_serial, 'released', $3"
	    "  FROM p)"
	    "SELECT device_id FROM p";
	const char *v[3] = { device_id, pl->station, note };
	PGresult *res = NULL;
	int r;

	pthread_mutex_lock(&pl->mu);
	r = plant_exec(pl, sql, 3, v, &res, why, whysz);
	PQclear(res);
	pthread_mutex_unlock(&pl->mu);
	return r;
}
