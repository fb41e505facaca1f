/*
 * pgconn.h: connecting to the plant's PostgreSQL server (docs/plant.md,
 * "Passwords and TLS"), the same rules for every connection Keyline makes:
 * no password in a conninfo; a password only from a file of mode 600 that
 * is ours (or libpq's passfile, or none: a client certificate, peer
 * authentication); a server on TCP only with TLS verifying it
 * (verify-full).  Words for why are printable ASCII, one line, and never
 * hold a password.
 */
#ifndef KL_PGCONN_H
#define KL_PGCONN_H

#include <stddef.h>

#include <libpq-fe.h>

/* A password file holds at most PGCONN_MAX_PASSWORD - 1 bytes. */
#define PGCONN_MAX_PASSWORD 256

/* why = "what: msg", msg made printable and one line (a server's words). */
void pgconn_words(const char *what, const char *msg, char *why,
    size_t whysz);

/*
 * Read a password file into out (room for PGCONN_MAX_PASSWORD + 1 bytes:
 * caller's secret_alloc): a regular file, not a symlink, mode 600 or
 * stricter, owned by us, one line of 1..PGCONN_MAX_PASSWORD - 1 bytes (a
 * trailing newline dropped).  0 or KL_ERR_CONFIG with the reason.
 */
int pgconn_read_password(const char *path, char *out, char *why,
    size_t whysz);

/*
 * Who gives the conninfo.  A station (its [registry]): no sslmode or
 * sslrootcert (it sets them from root_cert), and root_cert required when
 * the server is not on a socket.  A tool (keyline plant init --admin,
 * keyline audit verify --plant): a socket, or sslmode=verify-full.
 */
enum pgconn_mode {
	PGCONN_STATION,
	PGCONN_TOOL,
};

/*
 * Check conninfo before any connection: it parses, has no password, and
 * reaches the server on a socket (every host= a directory: no host= at
 * all counts as TCP, since PGHOST or a service file could name one) or
 * verified as mode requires.  *unix_only says which.  0 or KL_ERR_CONFIG
 * with "what: ..." in why.
 */
int pgconn_check_conninfo(const char *conninfo, const char *root_cert,
    enum pgconn_mode mode, const char *what, int *unix_only, char *why,
    size_t whysz);

/* After connecting: what libpq did was a socket, or TLS with
 * verify-full.  0 or KL_ERR_CONFIG. */
int pgconn_check_conn(PGconn *conn, const char *what, char *why,
    size_t whysz);

/*
 * Connect with the checked conninfo (its own keys win over the defaults
 * here: timeouts, TCP keepalives, application_name app), root_cert
 * (non-NULL: sslmode=verify-full against it) and password (NULL: none
 * from us), check what libpq did, set statement_timeout to timeout_s.
 * 0 and *out (PQfinish it); KL_ERR_DB when the server refused us (login,
 * TLS), KL_ERR_UNAVAILABLE when there was no server, KL_ERR_CONFIG from
 * pgconn_check_conn; words about what ("the plant store") in why.
 */
int pgconn_connect(PGconn **out, const char *conninfo, const char *root_cert,
    const char *password, const char *app, int timeout_s, const char *what,
    char *why, size_t whysz);

#endif
