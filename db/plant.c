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
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"

#define PLANT_MAX_PASSWORD 256

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

/* Server words, printable ASCII, one line, for why. */
static void
plant_words(const char *what, const char *msg, char *why, size_t whysz)
{
	char line[300];
	size_t i, n = 0;

	for (i = 0; msg != NULL && msg[i] != '\0' && n + 1 < sizeof(line);
	    i++) {
		unsigned char c = (unsigned char)msg[i];

		if (c == '\n' || c == '\r') {
			if (msg[i + 1] == '\0')
				break;
			c = ' ';
		}
		line[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	line[n] = '\0';
	snprintf(why, whysz, "%s: %s", what, line);
}

/* The password file: a regular file of mode 600 (or stricter), owned by
 * us, one line. */
static int
plant_read_password(const char *path, char *out, char *why, size_t whysz)
{
	struct stat st;
	ssize_t n;
	int fd, r = KL_ERR_CONFIG;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		snprintf(why, whysz, "password_file %s: %s", path,
		    strerror(errno));
		return KL_ERR_CONFIG;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whysz, "password_file %s: not a regular file",
		    path);
		goto out;
	}
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		snprintf(why, whysz, "password_file %s: must be mode 600 and "
		    "ours (it is %03o)", path, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	n = read(fd, out, PLANT_MAX_PASSWORD - 1);
	if (n <= 0) {
		snprintf(why, whysz, "password_file %s: empty or unreadable",
		    path);
		goto out;
	}
	out[n] = '\0';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	if (n == 0 || memchr(out, '\n', (size_t)n) != NULL) {
		snprintf(why, whysz, "password_file %s: one line expected",
		    path);
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

/*
 * Whether conninfo names only Unix-socket hosts (host= a path, or none:
 * libpq's default socket).  A TCP host needs TLS with the server verified.
 */
static int
plant_unix_only(PQconninfoOption *opts)
{
	PQconninfoOption *o;
	const char *h = NULL, *a = NULL;

	for (o = opts; o->keyword != NULL; o++) {
		if (strcmp(o->keyword, "host") == 0)
			h = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			a = o->val;
	}
	if (a != NULL && a[0] != '\0')
		return 0;
	/* No host= here: PGHOST, PGSERVICE or a service file may name a
	 * TCP server, so it is not taken for a socket. */
	if (h == NULL || h[0] == '\0')
		return 0;
	/* "host=/run/pg,/tmp" is a list: every one must be a path. */
	for (;;) {
		if (h[0] != '/' && h[0] != '@')
			return 0;
		if ((h = strchr(h, ',')) == NULL)
			return 1;
		h++;
	}
}

/* Check what station.conf gave before any connection is tried. */
static int
plant_check_conninfo(const struct plant_params *p, int *unix_only,
    char *why, size_t whysz)
{
	PQconninfoOption *opts, *o;
	char *err = NULL;
	int r = 0;

	if ((opts = PQconninfoParse(p->conninfo, &err)) == NULL) {
		plant_words("[registry] conninfo", err != NULL ? err :
		    "does not parse", why, whysz);
		PQfreemem(err);
		return KL_ERR_CONFIG;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "password") == 0) {
			snprintf(why, whysz, "[registry] conninfo: no "
			    "password here: use password_file (mode 600), a "
			    "libpq passfile or a client certificate");
			r = KL_ERR_CONFIG;
			goto out;
		}
		if (strcmp(o->keyword, "sslmode") == 0 ||
		    strcmp(o->keyword, "sslrootcert") == 0) {
			snprintf(why, whysz, "[registry] conninfo: leave %s "
			    "out: the station sets TLS from root_cert",
			    o->keyword);
			r = KL_ERR_CONFIG;
			goto out;
		}
	}
	*unix_only = plant_unix_only(opts);
	if (!*unix_only && (p->root_cert == NULL || p->root_cert[0] == '\0')) {
		snprintf(why, whysz, "[registry] root_cert: required when the "
		    "server is reached over TCP: the station verifies it "
		    "(sslmode=verify-full)");
		r = KL_ERR_CONFIG;
	}
out:
	PQconninfoFree(opts);
	return r;
}

/* Under pl->mu: connect (again), check the schema version. */
static int
plant_connect(struct plant *pl, char *why, size_t whysz)
{
	const char *keys[8], *vals[8];
	char timeout[16];
	PGresult *res = NULL;
	int n = 0, r, v;

	if (pl->conn != NULL) {
		PQfinish(pl->conn);
		pl->conn = NULL;
	}
	snprintf(timeout, sizeof(timeout), "%d", pl->timeout_s);
	keys[n] = "dbname";
	vals[n++] = pl->conninfo;
	keys[n] = "connect_timeout";
	vals[n++] = timeout;
	keys[n] = "application_name";
	vals[n++] = pl->station;
	if (pl->root_cert != NULL) {
		keys[n] = "sslmode";
		vals[n++] = "verify-full";
		keys[n] = "sslrootcert";
		vals[n++] = pl->root_cert;
	}
	if (pl->password != NULL) {
		keys[n] = "password";
		vals[n++] = pl->password;
	}
	keys[n] = NULL;
	vals[n] = NULL;
	/* expand_dbname: conninfo's own keys first, ours after win. */
	pl->conn = PQconnectdbParams(keys, vals, 1);
	if (pl->conn == NULL)
		return KL_ERR_NOMEM;
	if (PQstatus(pl->conn) != CONNECTION_OK) {
		const char *m = PQerrorMessage(pl->conn);

		plant_words("cannot connect to the registry", m, why, whysz);
		/* Refused credentials or TLS: a configuration matter; no
		 * route or no server: unavailable. */
		r = strstr(m, "authentication") != NULL ||
		    strstr(m, "certificate") != NULL ||
		    strstr(m, "SSL") != NULL || strstr(m, "role") != NULL ||
		    strstr(m, "password") != NULL ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
		PQfinish(pl->conn);
		pl->conn = NULL;
		return r;
	}
	snprintf(timeout, sizeof(timeout), "%d", pl->timeout_s * 1000);
	{
		const char *pv[1] = { timeout };

		res = PQexecParams(pl->conn, "SELECT set_config("
		    "'statement_timeout', $1, false)", 1, NULL, pv, NULL,
		    NULL, 0);
		PQclear(res);
	}
	res = PQexec(pl->conn, "SELECT version FROM keyline_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		plant_words("the registry has no keyline schema (keyline "
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
	if ((r = plant_check_conninfo(p, &unix_only, why, whysz)) != 0)
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
		if ((r = plant_read_password(p->password_file, pl->password,
		    why, whysz)) != 0)
			goto fail;
	}
	pthread_mutex_lock(&pl->mu);
	r = plant_connect(pl, why, whysz);
	pthread_mutex_unlock(&pl->mu);
	if (r != 0)
		goto fail;
	*out = pl;
	return 0;
fail:
	plant_close(pl);
	return r;
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
		if (pl->conn == NULL || PQstatus(pl->conn) != CONNECTION_OK) {
			if ((r = plant_connect(pl, why, whysz)) != 0) {
				if (tries == 0)
					continue;
				return r;
			}
		}
		*res = PQexecParams(pl->conn, sql, n, NULL, v, NULL, NULL, 0);
		st = PQresultStatus(*res);
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
			return 0;
		if (PQstatus(pl->conn) != CONNECTION_OK) {
			/* The server went away under the statement. */
			plant_words("registry connection lost",
			    PQerrorMessage(pl->conn), why, whysz);
			PQclear(*res);
			*res = NULL;
			continue;
		}
		plant_words("registry", PQresultErrorMessage(*res), why, whysz);
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
static const char plant_claim_sql[] =
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
    " lease_until > now() FROM devices WHERE device_id = $1";

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
	if ((r = plant_exec(pl, plant_owner_sql, 1, v, &res, why,
	    whysz)) != 0)
		goto out;
	if (PQntuples(res) != 1) {
		snprintf(why, whysz, "registry: device %s refused but not "
		    "found", device_id);
		r = KL_ERR_DB;
		goto out;
	}
	plant_copy(owner->state, sizeof(owner->state), res, 0);
	plant_copy(owner->station, sizeof(owner->station), res, 1);
	owner->slot = (int)strtol(PQgetvalue(res, 0, 2), NULL, 10);
	plant_copy(owner->board_serial, sizeof(owner->board_serial), res, 3);
	plant_copy(owner->time, sizeof(owner->time), res, 4);
	plant_copy(owner->cert_serial, sizeof(owner->cert_serial), res, 5);
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
	r = KL_ERR_DUPLICATE;
out:
	PQclear(res);
	pthread_mutex_unlock(&pl->mu);
	return r;
}

int
plant_provisioned(struct plant *pl, const char *device_id,
    const char *key_fpr, const char *cert_serial, const char *cert_fpr,
    char *why, size_t whysz)
{
	static const char sql[] =
	    "WITH p AS (UPDATE devices SET state = 'provisioned',"
	    "  key_fpr = $3, cert_serial = $4, cert_fpr = $5,"
	    "  provisioned_at = now(), lease_until = NULL,"
	    "  made_station = station, made_slot = slot"
	    " WHERE device_id = $1 AND station = $2 AND state = 'claimed'"
	    " RETURNING device_id, slot, board_serial),"
	    " h AS (INSERT INTO device_history (device_id, station, slot,"
	    "  board_serial, event, detail)"
	    "  SELECT device_id, $2, slot, board_serial, 'provisioned',"
	    "   'certificate serial ' || $4 FROM p)"
	    "SELECT device_id FROM p";
	const char *v[5] = { device_id, pl->station, key_fpr, cert_serial,
	    cert_fpr };
	PGresult *res = NULL;
	int r;

	pthread_mutex_lock(&pl->mu);
	if ((r = plant_exec(pl, sql, 5, v, &res, why, whysz)) == 0 &&
	    PQntuples(res) != 1) {
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
