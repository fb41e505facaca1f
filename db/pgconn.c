/*
 * pgconn.c: how Keyline connects to PostgreSQL (pgconn.h), one way for
 * the station's registry (plant.c), audit shipping and its reader
 * (ship.c) and the administrator (plant_admin.c).
 */
#include "db/pgconn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

/* Server words, printable ASCII on one line, after what. */
void
pgconn_words(const char *what, const char *msg, char *why, size_t whysz)
{
	char line[400];
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

/* A regular file of mode 600 or stricter, ours, one line. */
int
pgconn_read_password(const char *path, char *out, char *why, size_t whysz)
{
	struct stat st;
	ssize_t n;
	int fd, r = KL_ERR_CONFIG;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		snprintf(why, whysz, "password file %s: %s", path,
		    strerror(errno));
		return KL_ERR_CONFIG;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whysz, "password file %s: not a regular file",
		    path);
		goto out;
	}
	if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		snprintf(why, whysz, "password file %s: must be mode 600 and "
		    "ours (it is %03o)", path, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	/* One byte more than fits: a longer file is refused, not cut. */
	if ((n = read(fd, out, PGCONN_MAX_PASSWORD)) < 0) {
		snprintf(why, whysz, "password file %s: %s", path,
		    strerror(errno));
		goto out;
	}
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		n--;
	if (n == 0 || n >= PGCONN_MAX_PASSWORD ||
	    memchr(out, '\n', (size_t)n) != NULL ||
	    memchr(out, '\r', (size_t)n) != NULL ||
	    memchr(out, '\0', (size_t)n) != NULL) {
		snprintf(why, whysz, "password file %s: one line of 1..%d "
		    "bytes expected", path, PGCONN_MAX_PASSWORD - 1);
		goto out;
	}
	out[n] = '\0';
	r = 0;
out:
	close(fd);
	return r;
}

/* Every host= a socket directory (none at all counts as TCP: PGHOST or a
 * service file could name one). */
static int
pgconn_unix_only(PQconninfoOption *opts)
{
	PQconninfoOption *o;
	const char *h = NULL, *a = NULL;

	for (o = opts; o->keyword != NULL; o++) {
		if (strcmp(o->keyword, "host") == 0)
			h = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			a = o->val;
	}
	if ((a != NULL && a[0] != '\0') || h == NULL || h[0] == '\0')
		return 0;
	for (;;) {
		if (h[0] != '/' && h[0] != '@')
			return 0;
		if ((h = strchr(h, ',')) == NULL)
			return 1;
		h++;
	}
}

/*
 * Before any connection (pgconn.h).
 */
int
pgconn_check_conninfo(const char *conninfo, const char *root_cert,
    enum pgconn_mode mode, const char *what, int *unix_only, char *why,
    size_t whysz)
{
	PQconninfoOption *opts, *o;
	const char *sslmode = NULL;
	char *err = NULL;
	int r = 0;

	if ((opts = PQconninfoParse(conninfo, &err)) == NULL) {
		pgconn_words(what, err != NULL ? err : "does not parse", why,
		    whysz);
		PQfreemem(err);
		return KL_ERR_CONFIG;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "password") == 0) {
			snprintf(why, whysz, "%s: no password here: use a "
			    "password file (mode 600), a libpq passfile or a "
			    "client certificate", what);
			r = KL_ERR_CONFIG;
			goto out;
		}
		if (strcmp(o->keyword, "sslmode") == 0)
			sslmode = o->val;
		if (mode == PGCONN_STATION && (strcmp(o->keyword, "sslmode") == 0 ||
		    strcmp(o->keyword, "sslrootcert") == 0)) {
			snprintf(why, whysz, "%s: leave %s out: the station "
			    "sets TLS from root_cert", what, o->keyword);
			r = KL_ERR_CONFIG;
			goto out;
		}
	}
	*unix_only = pgconn_unix_only(opts);
	if (*unix_only)
		goto out;
	if (mode == PGCONN_TOOL && (sslmode == NULL ||
	    strcmp(sslmode, "verify-full") != 0)) {
		snprintf(why, whysz, "%s: name the server's socket directory "
		    "(host=/path) or verify it (sslmode=verify-full "
		    "sslrootcert=FILE): a TCP server is not trusted unverified",
		    what);
		r = KL_ERR_CONFIG;
	} else if (mode == PGCONN_STATION &&
	    (root_cert == NULL || root_cert[0] == '\0')) {
		snprintf(why, whysz, "%s: root_cert is required when the "
		    "server is reached over TCP (sslmode=verify-full)", what);
		r = KL_ERR_CONFIG;
	}
out:
	PQconninfoFree(opts);
	return r;
}

/* What libpq did: a socket, or TLS with verify-full. */
int
pgconn_check_conn(PGconn *conn, const char *what, char *why, size_t whysz)
{
	PQconninfoOption *opts, *o;
	const char *host = PQhost(conn);
	int ok = 0;

	if (host != NULL && (host[0] == '/' || host[0] == '@'))
		return 0;
	if (PQsslInUse(conn) && (opts = PQconninfo(conn)) != NULL) {
		for (o = opts; o->keyword != NULL; o++)
			if (strcmp(o->keyword, "sslmode") == 0 &&
			    o->val != NULL && strcmp(o->val, "verify-full") == 0)
				ok = 1;
		PQconninfoFree(opts);
	}
	if (ok)
		return 0;
	snprintf(why, whysz, "%s: the server %s is reached over TCP without "
	    "sslmode=verify-full: refused", what, host != NULL ? host : "?");
	return KL_ERR_CONFIG;
}

/*
 * Whether a failed connection is a refusal (our login, or TLS: the
 * server's certificate is not the one we trust) rather than no server at
 * all.  The server's answer to a ping decides first: a server that
 * answers and accepts connections refused us (its words may be in any
 * language); one starting up or shutting down is an outage.  With no
 * answer, only our own TLS checks are a refusal: a certificate that does
 * not verify stays a start-up error however the words fall, while a
 * connection cut mid-handshake (a server restarting) is an outage.
 */
static int
pgconn_refused(const char *const *keys, const char *const *vals,
    const char *m)
{
	switch (PQpingParams(keys, vals, 1)) {
	case PQPING_OK:
		return 1;
	case PQPING_REJECT:
		return 0;
	default:
		break;
	}
	if (strstr(m, "SSL SYSCALL") != NULL ||
	    strstr(m, "closed the connection unexpectedly") != NULL)
		return 0;
	return strstr(m, "certificate") != NULL || strstr(m, "SSL") != NULL;
}

int
pgconn_connect(PGconn **out, const char *conninfo, const char *root_cert,
    const char *password, const char *app, int timeout_s, const char *what,
    char *why, size_t whysz)
{
	const char *keys[16], *vals[16], *pv[1];
	char timeout[16], tms[24], idle[16], words[200];
	PGconn *conn;
	PGresult *res;
	int n = 0, r;

	*out = NULL;
	snprintf(timeout, sizeof(timeout), "%d", timeout_s);
	snprintf(tms, sizeof(tms), "%d", timeout_s * 1000);
	snprintf(idle, sizeof(idle), "%d", timeout_s > 2 ? timeout_s / 2 : 1);
	keys[n] = "connect_timeout";
	vals[n++] = timeout;
	keys[n] = "application_name";
	vals[n++] = app;
	/* A server gone from the network must not hold a statement (or a
	 * station's close) for TCP's minutes; no effect on a socket. */
	keys[n] = "keepalives_idle";
	vals[n++] = idle;
	keys[n] = "keepalives_interval";
	vals[n++] = "1";
	keys[n] = "keepalives_count";
	vals[n++] = "3";
	keys[n] = "tcp_user_timeout";
	vals[n++] = tms;
	/* expand_dbname: conninfo's own keys override the ones before it,
	 * the ones after override it. */
	keys[n] = "dbname";
	vals[n++] = conninfo;
	if (root_cert != NULL) {
		keys[n] = "sslmode";
		vals[n++] = "verify-full";
		keys[n] = "sslrootcert";
		vals[n++] = root_cert;
	}
	if (password != NULL) {
		keys[n] = "password";
		vals[n++] = password;
	}
	keys[n] = NULL;
	vals[n] = NULL;
	if ((conn = PQconnectdbParams(keys, vals, 1)) == NULL)
		return KL_ERR_NOMEM;
	if (PQstatus(conn) != CONNECTION_OK) {
		const char *m = PQerrorMessage(conn);

		snprintf(words, sizeof(words), "cannot connect to %s", what);
		pgconn_words(words, m, why, whysz);
		r = pgconn_refused(keys, vals, m) ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
		PQfinish(conn);
		return r;
	}
	if ((r = pgconn_check_conn(conn, what, why, whysz)) != 0) {
		PQfinish(conn);
		return r;
	}
	pv[0] = tms;
	res = PQexecParams(conn, "SELECT set_config('statement_timeout', $1, "
	    "false)", 1, NULL, pv, NULL, NULL, 0);
	PQclear(res);
	*out = conn;
	return 0;
}
