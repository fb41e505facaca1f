/*
 * ship.c: audit shipping to the plant store (ship.h, docs/plant.md
 * "Audit shipping").
 *
 * A station's shipper is one thread with its own libpq connection (not
 * struct plant's: a batch must not hold up a claim).  It follows the
 * local log with audit_events_since() from the plant store's last seq of
 * this station, and sends each batch as one transaction.  Where it starts
 * is always the server's answer, never a local note: a shipper killed
 * between COMMIT and its bookkeeping asks again and goes on from there.
 * The server's trigger (plant_schema.c, migration 1 -> 2) takes a row
 * only as the next of its station's chain, skips the very same row sent
 * twice, and refuses anything else with SQLSTATE KL001/KL002; a refusal
 * stops shipping for good (until a restart) and is reported through
 * ship_refused() so the station stops provisioning.
 *
 * The reader (keyline audit verify --plant) walks the stored chains in
 * one snapshot and recomputes each row hash with the local log's encoding
 * (audit_row_hash_of).
 */
#include "db/ship.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "db/pgconn.h"

#define SHIP_MAX_PASSWORD PGCONN_MAX_PASSWORD
/* Rows per transaction: big enough that a backlog drains quickly, small
 * enough that one batch is well inside the statement timeout. */
#define SHIP_BATCH 200
#define SHIP_POLL_MS 200
#define SHIP_BACKOFF_MIN_MS 500
#define SHIP_BACKOFF_MAX_MS 30000
/* The first plant schema with audit_rows. */
#define SHIP_SCHEMA_MIN 2

static const char ship_zero_hash[AUDIT_HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* Text columns of a row, in the events table's order. */
enum {
	F_TIME, F_STATION, F_OPERATOR, F_BOARD_SERIAL, F_DEVICE_ID, F_STEP,
	F_OUTCOME, F_KEY_FPR, F_CERT_SERIAL, F_CERT_FPR, F_CA, F_ERROR,
	F_PREV_HASH, F_ROW_HASH, F_N
};

static const char *const ship_fnames[F_N] = {
	"time", "station", "operator", "board_serial", "device_id", "step",
	"outcome", "key_fpr", "cert_serial", "cert_fpr", "ca", "error",
	"prev_hash", "row_hash",
};

struct ship_row {
	int64_t id, slot;
	char *f[F_N];		/* NULL where SQL NULL */
};

struct ship {
	pthread_t th;
	int started;
	pthread_mutex_t mu;	/* what other threads read, and the waits */
	pthread_cond_t cv;
	int stop, wake;
	int refused;
	char why[600];
	int connected;
	int64_t shipped, local, failures;

	/* The thread's own from here on. */
	struct audit *a;
	PGconn *conn;
	char *conninfo;
	char *root_cert;	/* NULL on a Unix socket */
	char *password;		/* secret_alloc(SHIP_MAX_PASSWORD) or NULL */
	char station[128];
	int timeout_s, poll_ms;
	int known;		/* shipped is the server's current answer */
	struct ship_row batch[SHIP_BATCH];
	int nbatch;
	int64_t bad_id;		/* a local row that cannot be shipped */
	char bad_why[300];
	char head_hash[AUDIT_HASH_HEX + 1];	/* ship_open's look-up */
	int head_found;
};

/*
 * Connect (pgconn_connect); check the schema has audit_rows.  root_cert
 * NULL: as the conninfo says (checked before).  0 and *out.
 */
static int
ship_connect(PGconn **out, const char *conninfo, const char *root_cert,
    const char *password, const char *app, int timeout_s, char *why,
    size_t whysz)
{
	PGconn *conn;
	PGresult *res = NULL;
	long v;
	int r;

	*out = NULL;
	if ((r = pgconn_connect(&conn, conninfo, root_cert, password, app,
	    timeout_s, "the plant store", why, whysz)) != 0)
		return r;
	res = PQexec(conn, "SELECT version FROM keyline_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pgconn_words("the plant store has no keyline schema (keyline "
		    "plant init)", PQresultErrorMessage(res), why, whysz);
		r = KL_ERR_DB;
		goto fail;
	}
	v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	if (v < SHIP_SCHEMA_MIN) {
		snprintf(why, whysz, "the plant store's schema is version %ld, "
		    "without audit_rows (version %d; keyline plant init "
		    "migrates it)", v, SHIP_SCHEMA_MIN);
		r = KL_ERR_DB;
		goto fail;
	}
	PQclear(res);
	*out = conn;
	return 0;
fail:
	PQclear(res);
	PQfinish(conn);
	return r;
}

/* ---- the shipper */

static void
ship_row_clear(struct ship_row *row)
{
	int i;

	for (i = 0; i < F_N; i++) {
		free(row->f[i]);
		row->f[i] = NULL;
	}
}

static void
ship_batch_clear(struct ship *s)
{
	int i;

	for (i = 0; i < s->nbatch; i++)
		ship_row_clear(&s->batch[i]);
	s->nbatch = 0;
}

/* Well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF),
 * what a PostgreSQL text column takes. */
static int
ship_utf8(const unsigned char *p)
{
	while (*p != '\0') {
		unsigned c = *p;
		int n, i;
		uint32_t cp;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else
			return 0;
		for (i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		p += n + 1;
	}
	return 1;
}

/* audit_events_since callback, under the audit mutex: copy the row. */
static int
ship_copy(void *arg, const struct audit_row *row)
{
	struct ship *s = arg;
	struct ship_row *d;
	const char *src[F_N];
	int i;

	if (s->nbatch >= SHIP_BATCH)
		return KL_ERR_INTERNAL;
	src[F_TIME] = row->time;
	src[F_STATION] = row->station;
	src[F_OPERATOR] = row->operator_name;
	src[F_BOARD_SERIAL] = row->board_serial;
	src[F_DEVICE_ID] = row->device_id;
	src[F_STEP] = row->step;
	src[F_OUTCOME] = row->outcome;
	src[F_KEY_FPR] = row->key_fpr;
	src[F_CERT_SERIAL] = row->cert_serial;
	src[F_CERT_FPR] = row->cert_fpr;
	src[F_CA] = row->ca;
	src[F_ERROR] = row->error;
	src[F_PREV_HASH] = row->prev_hash;
	src[F_ROW_HASH] = row->row_hash;
	/* The plant store keys a chain by station: a log holding rows of
	 * another station id (the id was changed) cannot be one chain
	 * there. */
	if (src[F_STATION] == NULL || strcmp(src[F_STATION], s->station) != 0) {
		s->bad_id = row->id;
		snprintf(s->bad_why, sizeof(s->bad_why), "local row %" PRId64
		    " belongs to station %s, not %s: a log is shipped as one "
		    "station's chain (give the station back its id, or start "
		    "a new log)", row->id, src[F_STATION] != NULL ?
		    src[F_STATION] : "(none)", s->station);
		return 1;
	}
	for (i = 0; i < F_N; i++) {
		/* board_serial goes as bytea, any bytes; the rest as text. */
		if (i != F_BOARD_SERIAL && src[i] != NULL &&
		    !ship_utf8((const unsigned char *)src[i])) {
			s->bad_id = row->id;
			snprintf(s->bad_why, sizeof(s->bad_why), "local row %"
			    PRId64 ": %s holds bytes that are not UTF-8, which "
			    "the plant store's text cannot hold exactly",
			    row->id, ship_fnames[i]);
			return 1;
		}
	}
	d = &s->batch[s->nbatch];
	memset(d, 0, sizeof(*d));
	d->id = row->id;
	d->slot = row->slot;
	for (i = 0; i < F_N; i++) {
		if (src[i] != NULL && (d->f[i] = strdup(src[i])) == NULL) {
			ship_row_clear(d);
			return KL_ERR_NOMEM;
		}
	}
	s->nbatch++;
	return 0;
}

static void
ship_refuse(struct ship *s, const char *why)
{
	pthread_mutex_lock(&s->mu);
	if (!s->refused) {
		s->refused = 1;
		snprintf(s->why, sizeof(s->why), "%s", why);
		log_error("audit shipping STOPPED, the station must not "
		    "provision: %s", why);
	}
	pthread_mutex_unlock(&s->mu);
}

static void
ship_drop(struct ship *s)
{
	if (s->conn != NULL)
		PQfinish(s->conn);
	s->conn = NULL;
	s->known = 0;
	pthread_mutex_lock(&s->mu);
	s->connected = 0;
	pthread_mutex_unlock(&s->mu);
}

/* Local row id's row_hash into s->head_hash (s->head_found 0/1). */
static int
ship_head_copy(void *arg, const struct audit_row *row)
{
	struct ship *s = arg;

	s->head_found = row->row_hash != NULL;
	snprintf(s->head_hash, sizeof(s->head_hash), "%s",
	    row->row_hash != NULL ? row->row_hash : "");
	return 0;
}

/*
 * Ask the server where this station's chain ends and check the local log
 * has that very row.  KL_ERR_AUDIT_CHAIN with why when it does not.
 */
static int
ship_sync(struct ship *s, char *why, size_t whysz)
{
	const char *v[1] = { s->station };
	PGresult *res;
	int64_t last = 0, next;
	char hash[AUDIT_HASH_HEX + 1] = "";
	int r;

	res = PQexecParams(s->conn, "SELECT seq, row_hash FROM audit_rows "
	    "WHERE station = $1 ORDER BY seq DESC LIMIT 1", 1, NULL, v, NULL,
	    NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pgconn_words("reading the plant store's last row",
		    PQresultErrorMessage(res), why, whysz);
		r = PQstatus(s->conn) == CONNECTION_OK ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
		PQclear(res);
		return r;
	}
	if (PQntuples(res) == 1) {
		last = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		snprintf(hash, sizeof(hash), "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	if (last > 0) {
		s->head_found = 0;
		if ((r = audit_events_since(s->a, last - 1, 1, ship_head_copy,
		    s, &next, NULL)) != 0) {
			snprintf(why, whysz, "reading local row %" PRId64 ": %s",
			    last, kl_strerror(r));
			return r;
		}
		if (next != last || !s->head_found) {
			snprintf(why, whysz, "the plant store holds rows 1..%"
			    PRId64 " of station %s, the local log fewer: it was "
			    "truncated or replaced", last, s->station);
			return KL_ERR_AUDIT_CHAIN;
		}
		if (strcmp(s->head_hash, hash) != 0) {
			snprintf(why, whysz, "row %" PRId64 " of station %s "
			    "differs between the local log (row_hash %s) and "
			    "the plant store (%s): one of them was rewritten",
			    last, s->station, s->head_hash, hash);
			return KL_ERR_AUDIT_CHAIN;
		}
	}
	s->known = 1;
	pthread_mutex_lock(&s->mu);
	s->shipped = last;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static const char ship_insert_sql[] =
    "INSERT INTO audit_rows (station, seq, time, operator, slot,"
    " board_serial, device_id, step, outcome, key_fpr, cert_serial,"
    " cert_fpr, ca, error, prev_hash, row_hash)"
    " VALUES ($1, $2::bigint, $3, $4, $5::bigint, $6::bytea, $7, $8, $9,"
    " $10, $11, $12, $13, $14, $15, $16)";

/* Send the batch in one transaction. */
static int
ship_send(struct ship *s, char *why, size_t whysz)
{
	const char *v[16];
	int len[16], fmt[16];
	char seq[24], slot[24];
	PGresult *res;
	const char *state;
	int i, r;

	res = PQexec(s->conn, "BEGIN");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pgconn_words("BEGIN", PQerrorMessage(s->conn), why, whysz);
		PQclear(res);
		return KL_ERR_UNAVAILABLE;
	}
	PQclear(res);
	for (i = 0; i < s->nbatch; i++) {
		struct ship_row *row = &s->batch[i];

		snprintf(seq, sizeof(seq), "%" PRId64, row->id);
		snprintf(slot, sizeof(slot), "%" PRId64, row->slot);
		memset(len, 0, sizeof(len));
		memset(fmt, 0, sizeof(fmt));
		v[0] = row->f[F_STATION];
		v[1] = seq;
		v[2] = row->f[F_TIME];
		v[3] = row->f[F_OPERATOR];
		v[4] = slot;
		/* Binary bytea: the board's bytes exactly. */
		v[5] = row->f[F_BOARD_SERIAL];
		fmt[5] = 1;
		len[5] = v[5] != NULL ? (int)strlen(v[5]) : 0;
		v[6] = row->f[F_DEVICE_ID];
		v[7] = row->f[F_STEP];
		v[8] = row->f[F_OUTCOME];
		v[9] = row->f[F_KEY_FPR];
		v[10] = row->f[F_CERT_SERIAL];
		v[11] = row->f[F_CERT_FPR];
		v[12] = row->f[F_CA];
		v[13] = row->f[F_ERROR];
		v[14] = row->f[F_PREV_HASH];
		v[15] = row->f[F_ROW_HASH];
		res = PQexecParams(s->conn, ship_insert_sql, 16, NULL, v, len,
		    fmt, 0);
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			PQclear(res);
			continue;
		}
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state != NULL && (strcmp(state, "KL001") == 0 ||
		    strcmp(state, "KL002") == 0)) {
			/* The server's own words name the station, the row
			 * and what it holds. */
			pgconn_words("the plant store refused the row",
			    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
			    why, whysz);
			r = KL_ERR_AUDIT_CHAIN;
		} else if (state != NULL && strcmp(state, "23505") == 0) {
			/* Another shipper of this station got there first
			 * (two processes on one log): ask again. */
			pgconn_words("the plant store", PQresultErrorMessage(res),
			    why, whysz);
			r = KL_ERR_BUSY;
		} else {
			pgconn_words("the plant store", res != NULL ?
			    PQresultErrorMessage(res) : PQerrorMessage(s->conn),
			    why, whysz);
			r = PQstatus(s->conn) == CONNECTION_OK ? KL_ERR_DB :
			    KL_ERR_UNAVAILABLE;
		}
		PQclear(res);
		res = PQexec(s->conn, "ROLLBACK");
		PQclear(res);
		s->known = 0;
		return r;
	}
	res = PQexec(s->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		/* Committed or not, the next sync asks the server. */
		pgconn_words("COMMIT", PQerrorMessage(s->conn), why, whysz);
		PQclear(res);
		s->known = 0;
		return PQstatus(s->conn) == CONNECTION_OK ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
	}
	PQclear(res);
	pthread_mutex_lock(&s->mu);
	s->shipped = s->batch[s->nbatch - 1].id;
	if (s->local < s->shipped)
		s->local = s->shipped;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/*
 * One round: connect if needed, learn where the server's chain ends, send
 * the next batch.  0 with *more (rows are left), or an error with why.
 */
static int
ship_round(struct ship *s, int *more, char *why, size_t whysz)
{
	char app[160];
	int64_t next = 0, from;
	int r, rows_left = 0;

	*more = 0;
	if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
		ship_drop(s);
		snprintf(app, sizeof(app), "keyline ship %s", s->station);
		if ((r = ship_connect(&s->conn, s->conninfo, s->root_cert,
		    s->password, app, s->timeout_s, why, whysz)) != 0)
			return r;
		pthread_mutex_lock(&s->mu);
		s->connected = 1;
		pthread_mutex_unlock(&s->mu);
	}
	if (!s->known && (r = ship_sync(s, why, whysz)) != 0) {
		if (r == KL_ERR_UNAVAILABLE)
			ship_drop(s);
		return r;
	}
	pthread_mutex_lock(&s->mu);
	from = s->shipped;
	pthread_mutex_unlock(&s->mu);
	ship_batch_clear(s);
	s->bad_id = 0;
	r = audit_events_since(s->a, from, SHIP_BATCH, ship_copy, s, &next,
	    &rows_left);
	if (r != 0 && s->bad_id == 0) {
		ship_batch_clear(s);
		snprintf(why, whysz, "reading the local log after row %" PRId64
		    ": %s: %s", from, kl_strerror(r), audit_last_error());
		return r;
	}
	if (s->nbatch > 0) {
		pthread_mutex_lock(&s->mu);
		if (s->local < s->batch[s->nbatch - 1].id)
			s->local = s->batch[s->nbatch - 1].id;
		pthread_mutex_unlock(&s->mu);
		r = ship_send(s, why, whysz);
		ship_batch_clear(s);
		if (r != 0) {
			if (r == KL_ERR_UNAVAILABLE)
				ship_drop(s);
			return r;
		}
	}
	if (s->bad_id != 0) {
		/* What came before it went; this row cannot. */
		snprintf(why, whysz, "%s", s->bad_why);
		return KL_ERR_AUDIT_CHAIN;
	}
	*more = rows_left;
	return 0;
}

/* Wait up to ms for stop (or, when wake_too, a wake); 1 when stopping. */
static int
ship_wait(struct ship *s, int ms, int wake_too)
{
	struct timespec ts;
	int stop;

	kl_deadline_ms(&ts, ms);
	pthread_mutex_lock(&s->mu);
	while (!s->stop && !(wake_too && s->wake))
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0)
			break;
	if (wake_too)
		s->wake = 0;
	stop = s->stop;
	pthread_mutex_unlock(&s->mu);
	return stop;
}

static void *
ship_main(void *arg)
{
	struct ship *s = arg;
	char why[600];
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int backoff = 0, more, stop, r;
	int64_t fails;

	for (;;) {
		pthread_mutex_lock(&s->mu);
		stop = s->stop;
		pthread_mutex_unlock(&s->mu);
		why[0] = '\0';
		r = ship_round(s, &more, why, sizeof(why));
		if (r == 0) {
			pthread_mutex_lock(&s->mu);
			fails = s->failures;
			s->failures = 0;
			pthread_mutex_unlock(&s->mu);
			if (fails > 0)
				log_info("audit shipping: resumed after %" PRId64
				    " failed attempts", fails);
			backoff = 0;
			if (more)
				continue;
			/* Stopping: this was the last round. */
			if (stop)
				break;
			(void)ship_wait(s, s->poll_ms, 1);
			continue;
		}
		if (r == KL_ERR_AUDIT_CHAIN) {
			ship_refuse(s, why);
			break;
		}
		pthread_mutex_lock(&s->mu);
		fails = ++s->failures;
		pthread_mutex_unlock(&s->mu);
		/* Once per outage, not once per try. */
		if (fails == 1)
			log_warn("audit shipping: %s; rows wait in the local "
			    "log, retrying with back-off", why);
		if (stop)
			break;
		if (r == KL_ERR_BUSY)
			backoff = SHIP_BACKOFF_MIN_MS / 2;
		else
			backoff = backoff == 0 ? SHIP_BACKOFF_MIN_MS :
			    backoff * 2 > SHIP_BACKOFF_MAX_MS ?
			    SHIP_BACKOFF_MAX_MS : backoff * 2;
		/* Half fixed, half random: stations that lost one server
		 * together do not come back in step. */
		(void)ship_wait(s, backoff / 2 + (int)(rand_r(&seed) %
		    (unsigned)(backoff / 2 + 1)), 0);
	}
	ship_drop(s);
	return NULL;
}

void
ship_close(struct ship *s)
{
	struct ship_status st;

	if (s == NULL)
		return;
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		s->stop = 1;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->th, NULL);
		ship_status(s, &st);
		if (st.refused)
			log_error("audit shipping: stopped: %s", s->why);
		else if (st.shipped >= 0 && st.shipped >= st.local)
			log_info("audit shipping: every row is in the plant "
			    "store (station %s, rows 1..%" PRId64 ")",
			    s->station, st.shipped);
		else
			log_warn("audit shipping: rows %" PRId64 "..%" PRId64
			    " of station %s wait in the local log for the next "
			    "start", st.shipped + 1, st.local, s->station);
	}
	ship_drop(s);
	ship_batch_clear(s);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->conninfo);
	free(s->root_cert);
	if (s->password != NULL)
		secret_free(s->password, SHIP_MAX_PASSWORD + 1);
	free(s);
}

int
ship_open(struct ship **out, const struct ship_params *p, struct audit *a,
    char *why, size_t whysz)
{
	pthread_condattr_t ca;
	sigset_t all, old;
	struct ship *s;
	char app[160];
	int64_t rows = 0;
	char head[AUDIT_HASH_HEX + 1];
	int unix_only = 0, r;

	*out = NULL;
	if (p->conninfo == NULL || p->conninfo[0] == '\0' ||
	    p->station == NULL || p->station[0] == '\0' ||
	    strlen(p->station) >= sizeof(s->station) || p->timeout_s <= 0 ||
	    a == NULL) {
		snprintf(why, whysz, "audit shipping: a conninfo, a station id "
		    "and a timeout are needed");
		return KL_ERR_CONFIG;
	}
	if ((r = pgconn_check_conninfo(p->conninfo, p->root_cert,
	    PGCONN_STATION, "[registry] conninfo", &unix_only, why,
	    whysz)) != 0)
		return r;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KL_ERR_NOMEM;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	s->a = a;
	s->shipped = -1;
	s->timeout_s = p->timeout_s;
	s->poll_ms = p->poll_ms > 0 ? p->poll_ms : SHIP_POLL_MS;
	snprintf(s->station, sizeof(s->station), "%s", p->station);
	if ((s->conninfo = strdup(p->conninfo)) == NULL ||
	    (!unix_only && (s->root_cert = strdup(p->root_cert)) == NULL)) {
		r = KL_ERR_NOMEM;
		goto fail;
	}
	if (p->password_file != NULL && p->password_file[0] != '\0') {
		if ((s->password = secret_alloc(SHIP_MAX_PASSWORD + 1)) ==
		    NULL) {
			r = KL_ERR_NOMEM;
			goto fail;
		}
		if ((r = pgconn_read_password(p->password_file, s->password,
		    why, whysz)) != 0)
			goto fail;
	}
	/* At start-up, in the caller's thread: a plant store that holds
	 * rows this log does not stops the station before any board. */
	snprintf(app, sizeof(app), "keyline ship %s", s->station);
	if ((r = ship_connect(&s->conn, s->conninfo, s->root_cert,
	    s->password, app, s->timeout_s, why, whysz)) != 0 ||
	    (r = ship_sync(s, why, whysz)) != 0) {
		/* Lazy: the thread makes that check when the server is
		 * back, and stops shipping (loudly) if it fails then. */
		if (r != KL_ERR_UNAVAILABLE || !p->lazy)
			goto fail;
		log_warn("audit shipping: %s; rows wait in the local log "
		    "until the plant store can be reached", why);
		ship_drop(s);
		s->failures = 1;
	} else
		s->connected = 1;
	if (audit_head(a, &rows, head, sizeof(head)) == 0)
		s->local = rows;
	/* Signals stay with the threads that wait for them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&s->th, NULL, ship_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		snprintf(why, whysz, "audit shipping: cannot start its thread: "
		    "%s", strerror(r));
		r = KL_ERR_INTERNAL;
		goto fail;
	}
	s->started = 1;
	log_info("audit shipping: station %s, the plant store holds rows "
	    "1..%" PRId64 ", the local log %" PRId64, s->station, s->shipped,
	    rows);
	*out = s;
	return 0;
fail:
	ship_close(s);
	return r;
}

void
ship_wake(struct ship *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->wake = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

int
ship_refused(struct ship *s, char *why, size_t whysz)
{
	int refused;

	if (s == NULL)
		return 0;
	pthread_mutex_lock(&s->mu);
	refused = s->refused;
	if (refused && why != NULL && whysz > 0)
		snprintf(why, whysz, "%s", s->why);
	pthread_mutex_unlock(&s->mu);
	return refused;
}

void
ship_status(struct ship *s, struct ship_status *st)
{
	memset(st, 0, sizeof(*st));
	st->shipped = -1;
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	st->connected = s->connected;
	st->refused = s->refused;
	st->shipped = s->shipped;
	st->local = s->local;
	st->failures = s->failures;
	pthread_mutex_unlock(&s->mu);
}

/* ---- the reader */

struct ship_reader {
	PGconn *conn;
};

int
ship_reader_open(struct ship_reader **out, const char *conninfo,
    const char *password_file, char *why, size_t whysz)
{
	struct ship_reader *r;
	char *pw = NULL;
	int unix_only = 0, rc;

	*out = NULL;
	if (conninfo == NULL || conninfo[0] == '\0') {
		snprintf(why, whysz, "--plant: a conninfo is needed");
		return KL_ERR_CONFIG;
	}
	if ((rc = pgconn_check_conninfo(conninfo, NULL, PGCONN_TOOL, "--plant",
	    &unix_only, why, whysz)) != 0)
		return rc;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return KL_ERR_NOMEM;
	if (password_file != NULL && password_file[0] != '\0') {
		if ((pw = secret_alloc(SHIP_MAX_PASSWORD + 1)) == NULL) {
			rc = KL_ERR_NOMEM;
			goto out;
		}
		if ((rc = pgconn_read_password(password_file, pw, why,
		    whysz)) != 0)
			goto out;
	}
	/* A tool: a longer statement timeout than a station's, a walk of
	 * every chain can take a while. */
	rc = ship_connect(&r->conn, conninfo, NULL, pw, "keyline audit verify",
	    600, why, whysz);
out:
	if (pw != NULL)
		secret_free(pw, SHIP_MAX_PASSWORD + 1);
	if (rc != 0) {
		ship_reader_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

void
ship_reader_close(struct ship_reader *r)
{
	if (r == NULL)
		return;
	if (r->conn != NULL)
		PQfinish(r->conn);
	free(r);
}

static int
ship_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The bytes of encode(bytea, 'hex'), NUL-terminated (a NUL inside makes
 * the hash differ, as no append ever stores one).  Caller free()s. */
static char *
ship_unhex(const char *hex)
{
	size_t n = strlen(hex), i;
	char *out;

	if (n % 2 != 0 || (out = malloc(n / 2 + 1)) == NULL)
		return NULL;
	for (i = 0; i < n / 2; i++) {
		int hi = ship_hexval(hex[2 * i]), lo = ship_hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(out);
			return NULL;
		}
		out[i] = (char)(hi << 4 | lo);
	}
	out[n / 2] = '\0';
	return out;
}

/* Walk state for one station's chain. */
struct ship_walk {
	char station[128];
	int have;
	int64_t expect;			/* next seq */
	char prev[AUDIT_HASH_HEX + 1];	/* row_hash of expect - 1 */
};

static int
ship_bad(struct ship_verify_report *rep, const char *station, int64_t seq)
{
	snprintf(rep->bad_station, sizeof(rep->bad_station), "%s", station);
	rep->bad_seq = seq;
	return KL_ERR_AUDIT_CHAIN;
}

/* One stored row (single-row result res): check it against the walk. */
static int
ship_check_row(PGresult *res, struct ship_walk *w,
    struct ship_verify_report *rep, ship_station_fn fn, void *arg)
{
	struct audit_row row;
	const char *f[16];
	char *serial = NULL, hash[AUDIT_HASH_HEX + 1];
	int64_t seq;
	int i, r;

	for (i = 0; i < 16; i++)
		f[i] = PQgetisnull(res, 0, i) ? NULL : PQgetvalue(res, 0, i);
	seq = strtoll(f[1], NULL, 10);
	if (!w->have || strcmp(w->station, f[0]) != 0) {
		if (w->have && fn != NULL)
			fn(arg, w->station, w->expect - 1, w->prev);
		if (w->have)
			rep->stations++;
		snprintf(w->station, sizeof(w->station), "%s", f[0]);
		w->have = 1;
		w->expect = 1;
		memcpy(w->prev, ship_zero_hash, sizeof(w->prev));
	}
	if (seq != w->expect) {
		snprintf(rep->why, sizeof(rep->why), "row missing (seqs jump "
		    "from %" PRId64 " to %" PRId64 ")", w->expect - 1, seq);
		return ship_bad(rep, f[0], w->expect);
	}
	if (f[14] == NULL || strcmp(f[14], w->prev) != 0) {
		snprintf(rep->why, sizeof(rep->why), "prev_hash does not match "
		    "row %" PRId64 "'s row_hash", seq - 1);
		return ship_bad(rep, f[0], seq);
	}
	memset(&row, 0, sizeof(row));
	row.id = seq;
	row.time = f[2];
	row.station = f[0];
	row.operator_name = f[3];
	row.slot = strtoll(f[4], NULL, 10);
	if (f[5] != NULL && (serial = ship_unhex(f[5])) == NULL)
		return KL_ERR_NOMEM;
	row.board_serial = serial;
	row.device_id = f[6];
	row.step = f[7];
	row.outcome = f[8];
	row.key_fpr = f[9];
	row.cert_serial = f[10];
	row.cert_fpr = f[11];
	row.ca = f[12];
	row.error = f[13];
	row.prev_hash = f[14];
	row.row_hash = f[15];
	r = audit_row_hash_of(&row, hash);
	free(serial);
	if (r == KL_ERR_TOO_BIG) {
		snprintf(rep->why, sizeof(rep->why), "a field is longer than "
		    "any append writes");
		return ship_bad(rep, f[0], seq);
	}
	if (r != 0)
		return r;
	if (f[15] == NULL || strcmp(hash, f[15]) != 0) {
		snprintf(rep->why, sizeof(rep->why), "row hash does not match "
		    "its contents");
		return ship_bad(rep, f[0], seq);
	}
	memcpy(w->prev, f[15], sizeof(w->prev));
	w->expect = seq + 1;
	rep->rows++;
	return 0;
}

int
ship_reader_verify(struct ship_reader *r, const char *station,
    ship_station_fn fn, void *arg, struct ship_verify_report *rep)
{
	static const char sql[] =
	    "SELECT station, seq, time, operator, slot,"
	    " encode(board_serial, 'hex'), device_id, step, outcome, key_fpr,"
	    " cert_serial, cert_fpr, ca, error, prev_hash, row_hash"
	    " FROM audit_rows WHERE $1::text IS NULL OR station = $1"
	    " ORDER BY station, seq";
	struct ship_walk w;
	const char *v[1] = { station };
	PGresult *res;
	ExecStatusType st;
	int rc = 0, done = 0;

	memset(rep, 0, sizeof(rep[0]));
	memset(&w, 0, sizeof(w));
	/* One snapshot: rows shipped meanwhile are all in or all out. */
	res = PQexec(r->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pgconn_words("BEGIN", PQerrorMessage(r->conn), rep->why,
		    sizeof(rep->why));
		PQclear(res);
		return KL_ERR_DB;
	}
	PQclear(res);
	if (!PQsendQueryParams(r->conn, sql, 1, NULL, v, NULL, NULL, 0) ||
	    !PQsetSingleRowMode(r->conn)) {
		pgconn_words("reading audit_rows", PQerrorMessage(r->conn),
		    rep->why, sizeof(rep->why));
		rc = KL_ERR_DB;
		goto out;
	}
	/* Every result is read, also after a bad row: the connection must
	 * be idle again before the ROLLBACK. */
	while ((res = PQgetResult(r->conn)) != NULL) {
		st = PQresultStatus(res);
		if (st == PGRES_SINGLE_TUPLE && rc == 0)
			rc = ship_check_row(res, &w, rep, fn, arg);
		else if (st == PGRES_TUPLES_OK)
			done = 1;
		else if (st != PGRES_SINGLE_TUPLE && rc == 0) {
			pgconn_words("reading audit_rows",
			    PQresultErrorMessage(res), rep->why,
			    sizeof(rep->why));
			rc = PQstatus(r->conn) == CONNECTION_OK ? KL_ERR_DB :
			    KL_ERR_UNAVAILABLE;
		}
		PQclear(res);
	}
	if (rc == 0 && !done) {
		snprintf(rep->why, sizeof(rep->why), "reading audit_rows: "
		    "the result ended early");
		rc = KL_ERR_DB;
	}
	if (rc == 0 && w.have) {
		if (fn != NULL)
			fn(arg, w.station, w.expect - 1, w.prev);
		rep->stations++;
	}
	if (rc == 0 && station != NULL && !w.have) {
		snprintf(rep->why, sizeof(rep->why), "the plant store holds no "
		    "row of station %s", station);
		rc = KL_ERR_NOT_FOUND;
	}
out:
	res = PQexec(r->conn, "ROLLBACK");
	PQclear(res);
	return rc;
}

int
ship_reader_row(struct ship_reader *r, const char *station, int64_t seq,
    int *found, char *hash, int64_t *last, char *why, size_t whysz)
{
	char sbuf[24];
	const char *v[2] = { station, sbuf };
	PGresult *res;

	snprintf(sbuf, sizeof(sbuf), "%" PRId64, seq);
	res = PQexecParams(r->conn, "SELECT (SELECT row_hash FROM audit_rows"
	    " WHERE station = $1 AND seq = $2::bigint),"
	    " (SELECT COALESCE(max(seq), 0) FROM audit_rows"
	    " WHERE station = $1)", 2, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pgconn_words("reading audit_rows", PQresultErrorMessage(res), why,
		    whysz);
		PQclear(res);
		return PQstatus(r->conn) == CONNECTION_OK ? KL_ERR_DB :
		    KL_ERR_UNAVAILABLE;
	}
	*found = !PQgetisnull(res, 0, 0);
	snprintf(hash, AUDIT_HASH_HEX + 1, "%s", *found ?
	    PQgetvalue(res, 0, 0) : "");
	*last = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	return 0;
}
