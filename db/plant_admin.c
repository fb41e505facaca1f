/*
 * plant_admin.c: the administrator's side of the plant registry
 * (plant_init, plant.h, docs/plant.md, "keyline plant init").
 *
 * Everything happens in one transaction on one connection, so a failed
 * init leaves the server as it was: the schema migrated to
 * plant_schema_version, the station role created (LOGIN) or updated, its
 * password set, and exactly the grants docs/plant.md lists.  Two inits at
 * once are serialised by locks taken first in that transaction; the
 * second finds the work done.
 *
 * Role names reach SQL only through PQescapeIdentifier, values through
 * PQexecParams.  The station role's password is hashed here
 * (PQencryptPasswordConn, the server's password_encryption): only its
 * SCRAM verifier crosses the wire, so neither the server's statement log
 * nor an error report ever holds the password itself.
 */
#include "db/plant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/secret.h"
#include "db/pgconn.h"

#define PLANT_ADMIN_MAX_PASSWORD PGCONN_MAX_PASSWORD

/* pg_advisory_xact_lock key ("KEYLINE" in ASCII): CREATE TABLE IF NOT
 * EXISTS is not safe against a concurrent twin (both may try to create
 * the type), so every init queues here before it looks. */
#define PLANT_ADMIN_LOCK "20207915625303109"

/* NOTICEs ("relation ... already exists, skipping" on every re-run) are
 * the expected path of an idempotent init, not news for the operator. */
static void
plant_admin_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}




/* One statement, parameterised; 0 with *res (caller PQclear()s) or
 * KL_ERR_DB with the server's words after what. */
static int
plant_admin_exec(PGconn *conn, const char *what, const char *sql, int n,
    const char *const *v, PGresult **res, char *why, size_t whysz)
{
	ExecStatusType st;

	*res = PQexecParams(conn, sql, n, NULL, v, NULL, NULL, 0);
	st = PQresultStatus(*res);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return 0;
	pgconn_words(what, *res != NULL ? PQresultErrorMessage(*res) :
	    PQerrorMessage(conn), why, whysz);
	PQclear(*res);
	*res = NULL;
	return PQstatus(conn) == CONNECTION_OK ? KL_ERR_DB :
	    KL_ERR_UNAVAILABLE;
}

/* The same, result not wanted. */
static int
plant_admin_do(PGconn *conn, const char *what, const char *sql, int n,
    const char *const *v, char *why, size_t whysz)
{
	PGresult *res;
	int r;

	if ((r = plant_admin_exec(conn, what, sql, n, v, &res, why,
	    whysz)) == 0)
		PQclear(res);
	return r;
}

/*
 * Statement text with the role's quoted name in place of each "%1$s",
 * from a fixed template.  Caller free()s.
 */
static char *
plant_admin_sql(const char *tmpl, const char *role)
{
	size_t n = strlen(tmpl) + 8 * strlen(role) + 1;
	char *s;

	if ((s = malloc(n)) == NULL)
		return NULL;
	if ((size_t)snprintf(s, n, tmpl, role) >= n) {
		free(s);
		return NULL;
	}
	return s;
}

/*
 * Schema: take the locks, read the version (0 on a new server), refuse
 * one newer than this program, apply the missing migrations.
 */
static int
plant_admin_migrate(PGconn *conn, char *why, size_t whysz)
{
	char vbuf[16];
	const char *v[1];
	PGresult *res = NULL;
	char *end;
	long cur;
	int i, r;

	if ((r = plant_admin_do(conn, "locking out other inits",
	    "SELECT pg_advisory_xact_lock(" PLANT_ADMIN_LOCK ")", 0, NULL,
	    why, whysz)) != 0 ||
	    (r = plant_admin_do(conn, "search_path", "SELECT set_config("
	    "'search_path', 'public', true)", 0, NULL, why, whysz)) != 0 ||
	    (r = plant_admin_do(conn, "creating keyline_schema",
	    "CREATE TABLE IF NOT EXISTS keyline_schema "
	    "(version integer NOT NULL)", 0, NULL, why, whysz)) != 0 ||
	    (r = plant_admin_do(conn, "locking keyline_schema",
	    "LOCK TABLE keyline_schema IN EXCLUSIVE MODE", 0, NULL, why,
	    whysz)) != 0 ||
	    (r = plant_admin_exec(conn, "reading the schema version",
	    "SELECT version FROM keyline_schema", 0, NULL, &res, why,
	    whysz)) != 0)
		return r;
	if (PQntuples(res) == 0) {
		PQclear(res);
		res = NULL;
		if ((r = plant_admin_do(conn, "keyline_schema",
		    "INSERT INTO keyline_schema (version) VALUES (0)", 0, NULL,
		    why, whysz)) != 0)
			return r;
		cur = 0;
	} else if (PQntuples(res) == 1) {
		errno = 0;
		cur = strtol(PQgetvalue(res, 0, 0), &end, 10);
		if (errno != 0 || *end != '\0' || cur < 0)
			cur = -1;
		PQclear(res);
		res = NULL;
	} else {
		snprintf(why, whysz, "keyline_schema holds %d rows, one "
		    "expected: not a schema this program made",
		    PQntuples(res));
		PQclear(res);
		return KL_ERR_DB;
	}
	if (cur < 0) {
		snprintf(why, whysz, "keyline_schema holds no version number: "
		    "not a schema this program made; nothing was changed");
		return KL_ERR_DB;
	}
	if (cur > plant_schema_version) {
		snprintf(why, whysz, "the registry's schema is version %ld, "
		    "newer than this keyline knows (%d): use the keyline "
		    "that migrated it; nothing was changed", cur,
		    plant_schema_version);
		return KL_ERR_DB;
	}
	for (i = (int)cur; i < plant_schema_version; i++) {
		/* Several statements, fixed text: the simple protocol. */
		res = PQexec(conn, plant_migrations[i]);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			char what[48];

			snprintf(what, sizeof(what), "migration %d -> %d", i,
			    i + 1);
			pgconn_words(what, PQresultErrorMessage(res), why,
			    whysz);
			PQclear(res);
			return KL_ERR_DB;
		}
		PQclear(res);
	}
	snprintf(vbuf, sizeof(vbuf), "%d", plant_schema_version);
	v[0] = vbuf;
	return plant_admin_do(conn, "setting the schema version",
	    "UPDATE keyline_schema SET version = $1::integer", 1, v, why,
	    whysz);
}

/* The station role: created if missing, refused if it could get round
 * the grants (a superuser, a role maker, the tables' owner or one of its
 * members). */
static int
plant_admin_role(PGconn *conn, const char *role, const char *qrole,
    char *why, size_t whysz)
{
	const char *v[1] = { role };
	PGresult *res = NULL;
	char *sql = NULL;
	int r;

	if ((r = plant_admin_exec(conn, "looking up the station role",
	    "SELECT r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR"
	    " r.rolreplication OR pg_has_role(r.oid, c.relowner, 'MEMBER')"
	    " FROM pg_roles r, pg_class c"
	    " WHERE r.rolname = $1 AND c.oid = 'devices'::regclass", 1, v,
	    &res, why, whysz)) != 0)
		return r;
	if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") != 0) {
		snprintf(why, whysz, "--station-role %s: a superuser, a role "
		    "that makes roles, or the tables' owner (or a member of "
		    "it) would get round the station's limits: name a role "
		    "of its own", role);
		r = KL_ERR_CONFIG;
		goto out;
	}
	sql = plant_admin_sql(PQntuples(res) == 1 ? "ALTER ROLE %1$s LOGIN" :
	    "CREATE ROLE %1$s LOGIN", qrole);
	if (sql == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	r = plant_admin_do(conn, "station role", sql, 0, NULL, why, whysz);
out:
	free(sql);
	PQclear(res);
	return r;
}

/* Its password, as a SCRAM verifier. */
static int
plant_admin_password(PGconn *conn, const char *role, const char *qrole,
    const char *pw, char *why, size_t whysz)
{
	char *verifier = NULL, *lit = NULL, *sql = NULL;
	size_t sqlsz = 0;
	PGresult *res;
	int r = 0;

	if ((verifier = PQencryptPasswordConn(conn, pw, role, NULL)) == NULL) {
		pgconn_words("hashing the station role's password",
		    PQerrorMessage(conn), why, whysz);
		r = KL_ERR_DB;
		goto out;
	}
	if ((lit = PQescapeLiteral(conn, verifier, strlen(verifier))) ==
	    NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	sqlsz = strlen(qrole) + strlen(lit) + 32;
	if ((sql = secret_alloc(sqlsz)) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	snprintf(sql, sqlsz, "ALTER ROLE %s PASSWORD %s", qrole, lit);
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		/* The server's words name neither password nor verifier. */
		pgconn_words("setting the station role's password",
		    PQresultErrorMessage(res), why, whysz);
		r = KL_ERR_DB;
	}
	PQclear(res);
out:
	if (lit != NULL) {
		explicit_bzero(lit, strlen(lit));
		PQfreemem(lit);
	}
	if (verifier != NULL) {
		explicit_bzero(verifier, strlen(verifier));
		PQfreemem(verifier);
	}
	if (sql != NULL)
		secret_free(sql, sqlsz);
	return r;
}

/* Exactly the grants of docs/plant.md, whatever was there before. */
static const char *const plant_admin_grants[] = {
	"REVOKE ALL ON TABLE devices, device_history, keyline_schema "
	    "FROM PUBLIC",
	"REVOKE ALL ON SEQUENCE device_history_id_seq FROM PUBLIC",
	"REVOKE ALL ON TABLE devices, device_history, keyline_schema "
	    "FROM %1$s",
	"REVOKE ALL ON SEQUENCE device_history_id_seq FROM %1$s",
	"GRANT SELECT, INSERT, UPDATE ON TABLE devices TO %1$s",
	"GRANT SELECT, INSERT ON TABLE device_history TO %1$s",
	"GRANT USAGE ON SEQUENCE device_history_id_seq TO %1$s",
	"GRANT SELECT ON TABLE keyline_schema TO %1$s",
	/* Audit shipping: append and read back, nothing else. */
	"REVOKE ALL ON TABLE audit_rows FROM PUBLIC",
	"REVOKE ALL ON TABLE audit_rows FROM %1$s",
	"GRANT SELECT, INSERT ON TABLE audit_rows TO %1$s",
	/* Conflicts after an outage: report and read back. */
	"REVOKE ALL ON TABLE device_conflicts FROM PUBLIC",
	"REVOKE ALL ON TABLE device_conflicts FROM %1$s",
	"REVOKE ALL ON SEQUENCE device_conflicts_id_seq FROM PUBLIC",
	"REVOKE ALL ON SEQUENCE device_conflicts_id_seq FROM %1$s",
	"GRANT SELECT, INSERT ON TABLE device_conflicts TO %1$s",
	"GRANT USAGE ON SEQUENCE device_conflicts_id_seq TO %1$s",
};

static int
plant_admin_grant(PGconn *conn, const char *qrole, char *why, size_t whysz)
{
	size_t i;
	char *sql;
	int r;

	for (i = 0; i < sizeof(plant_admin_grants) /
	    sizeof(plant_admin_grants[0]); i++) {
		if ((sql = plant_admin_sql(plant_admin_grants[i], qrole)) ==
		    NULL)
			return KL_ERR_NOMEM;
		r = plant_admin_do(conn, "grants", sql, 0, NULL, why, whysz);
		free(sql);
		if (r != 0)
			return r;
	}
	return 0;
}

int
plant_init(const char *admin_conninfo, const char *station_role,
    const char *password_file, char *why, size_t whysz)
{
	const char *keys[4], *vals[4];
	PGconn *conn = NULL;
	PGresult *res;
	char *qrole = NULL, *pw = NULL;
	int r, begun = 0, unix_only;

	if (admin_conninfo == NULL || admin_conninfo[0] == '\0' ||
	    station_role == NULL || station_role[0] == '\0') {
		snprintf(why, whysz, "an admin conninfo and a station role "
		    "are needed");
		return KL_ERR_CONFIG;
	}
	if (strlen(station_role) > 63) {
		/* PostgreSQL would cut it (NAMEDATALEN) and grant another. */
		snprintf(why, whysz, "--station-role: longer than 63 bytes");
		return KL_ERR_CONFIG;
	}
	if ((r = pgconn_check_conninfo(admin_conninfo, NULL, PGCONN_TOOL,
	    "--admin", &unix_only, why, whysz)) != 0)
		return r;
	/* The file first: a refused one costs the server nothing. */
	if (password_file != NULL && password_file[0] != '\0') {
		if ((pw = secret_alloc(PLANT_ADMIN_MAX_PASSWORD + 1)) == NULL)
			return KL_ERR_NOMEM;
		if ((r = pgconn_read_password(password_file, pw, why,
		    whysz)) != 0)
			goto out;
	}
	/* Ours first: the admin's conninfo, expanded after, wins. */
	keys[0] = "connect_timeout";
	vals[0] = "10";
	keys[1] = "application_name";
	vals[1] = "keyline plant init";
	keys[2] = "dbname";
	vals[2] = admin_conninfo;
	keys[3] = NULL;
	vals[3] = NULL;
	if ((conn = PQconnectdbParams(keys, vals, 1)) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		const char *m = PQerrorMessage(conn);

		pgconn_words("cannot connect as the admin", m, why,
		    whysz);
		r = strstr(m, "authentication") != NULL ||
		    strstr(m, "certificate") != NULL ||
		    strstr(m, "SSL") != NULL || strstr(m, "role") != NULL ||
		    strstr(m, "password") != NULL ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
		goto out;
	}
	if ((r = pgconn_check_conn(conn, "--admin", why, whysz)) != 0)
		goto out;
	PQsetNoticeProcessor(conn, plant_admin_notice, NULL);
	if ((qrole = PQescapeIdentifier(conn, station_role,
	    strlen(station_role))) == NULL) {
		pgconn_words("--station-role", PQerrorMessage(conn), why,
		    whysz);
		r = KL_ERR_CONFIG;
		goto out;
	}
	if ((r = plant_admin_do(conn, "BEGIN", "BEGIN", 0, NULL, why,
	    whysz)) != 0)
		goto out;
	begun = 1;
	if ((r = plant_admin_migrate(conn, why, whysz)) != 0 ||
	    (r = plant_admin_role(conn, station_role, qrole, why,
	    whysz)) != 0)
		goto out;
	if (pw != NULL && (r = plant_admin_password(conn, station_role,
	    qrole, pw, why, whysz)) != 0)
		goto out;
	if ((r = plant_admin_grant(conn, qrole, why, whysz)) != 0 ||
	    (r = plant_admin_do(conn, "COMMIT", "COMMIT", 0, NULL, why,
	    whysz)) != 0)
		goto out;
	begun = 0;
	r = 0;
out:
	if (begun && conn != NULL) {
		res = PQexec(conn, "ROLLBACK");
		PQclear(res);
	}
	PQfreemem(qrole);
	PQfinish(conn);
	if (pw != NULL)
		secret_free(pw, PLANT_ADMIN_MAX_PASSWORD + 1);
	return r;
}
