/*
 * audit.c: the append-only, hash-chained audit log in SQLite (see audit.h,
 * docs/audit.md).
 *
 * One connection per struct audit, every call under one mutex, so slot
 * threads never interleave inside a transaction.  Appends take the write
 * lock first (BEGIN IMMEDIATE) and only then read the chain head, so a
 * second process on the same file waits instead of forking the chain.
 *
 * The column table below is the single source of the column order: the
 * hash, the INSERT, the SELECT used by verify and export and the export
 * header all follow it.
 */
#include "db/audit.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "common/err.h"
#include "common/log.h"

/* Long enough for any lock holder that is making progress; a stuck writer
 * turns into KL_ERR_DB rather than a station that hangs forever. */
#define AUDIT_BUSY_MS 10000
/* No field we record is anywhere near this; the cap keeps a runaway error
 * string from bloating every export and every hash. */
#define AUDIT_FIELD_MAX (64 * 1024)
/* First netstring of every row hash: a future encoding gets a new tag
 * instead of silently reinterpreting old rows. */
#define AUDIT_HASH_TAG "keyline-audit-v1"
#define AUDIT_TIME_LEN 24	/* 2026-11-22T19:30:01.123Z */

/* A statement prepared once and kept (audit_cached). */
struct audit_stc {
	const char *sql;
	sqlite3_stmt *st;
};

struct audit {
	sqlite3 *db;
	pthread_mutex_t lock;
	/* The newest row this handle wrote or read, for audit_head: the
	 * status API asks on every request and must not queue behind an
	 * append's fsync for it.  Under head_mu. */
	pthread_mutex_t head_mu;
	int head_known;
	int64_t head_id;
	char head[AUDIT_HASH_HEX + 1];
	/* Signed checkpoints (audit_checkpoint_setup); set before the handle
	 * is shared, read-only after. */
	audit_sign_fn ckpt_sign;
	void *ckpt_arg;
	int64_t ckpt_every;
	char ckpt_station[128];
	/*
	 * Group commit (audit_append): rows that arrive while one thread
	 * commits wait in gc_queue and go into the next transaction
	 * together, one WAL sync for all of them.  Each caller returns only
	 * once its own row is durable, so "recorded before the CSR leaves"
	 * holds for every row as before; a lone slot commits alone, as
	 * before.  Under gc_mu.
	 */
	pthread_mutex_t gc_mu;
	pthread_cond_t gc_cv;
	struct audit_pending *gc_queue, **gc_tail;
	int gc_busy;			/* a thread is writing a batch */
	int gc_lost;			/* error of a batch that lost rows
					 * appended with audit_append_later;
					 * the next audit_append returns it */
	/* The append path's statements and the per-board queries,
	 * prepared once, found by their SQL text's address (audit_cached;
	 * under lock). */
	struct audit_stc stc[12];
	int nstc;
	/*
	 * A second connection for the per-board checks (audit_device_state,
	 * audit_key_owner) of a handle that writes: in WAL mode it reads the
	 * last commit while the writer syncs the next one, so no slot's
	 * check waits behind other slots' fsyncs (on the writer's connection
	 * it did: the lock is held through COMMIT).  It sees what is
	 * committed, which is what those checks are bounded by.  NULL for a
	 * read-only handle (the checks then use db).  Its statements in rstc;
	 * all under rlock.
	 */
	sqlite3 *rdb;
	pthread_mutex_t rlock;
	int rlock_ok;
	struct audit_stc rstc[4];
	int nrstc;
};

enum audit_coltype { AUDIT_COL_INT, AUDIT_COL_TEXT };

struct audit_col {
	const char *name;
	enum audit_coltype type;
};

/* Reordering breaks every stored hash: add a column at the end of the hash
 * input under a new AUDIT_HASH_TAG instead. */
static const struct audit_col audit_cols[] = {
	{ "id", AUDIT_COL_INT },
	{ "time", AUDIT_COL_TEXT },
	{ "station", AUDIT_COL_TEXT },
	{ "operator", AUDIT_COL_TEXT },
	{ "slot", AUDIT_COL_INT },
	{ "board_serial", AUDIT_COL_TEXT },
	{ "device_id", AUDIT_COL_TEXT },
	{ "step", AUDIT_COL_TEXT },
	{ "outcome", AUDIT_COL_TEXT },
	{ "key_fpr", AUDIT_COL_TEXT },
	{ "cert_serial", AUDIT_COL_TEXT },
	{ "cert_fpr", AUDIT_COL_TEXT },
	{ "ca", AUDIT_COL_TEXT },
	{ "error", AUDIT_COL_TEXT },
	{ "prev_hash", AUDIT_COL_TEXT },
	{ "row_hash", AUDIT_COL_TEXT },
};

enum {
	C_ID, C_TIME, C_STATION, C_OPERATOR, C_SLOT, C_BOARD_SERIAL,
	C_DEVICE_ID, C_STEP, C_OUTCOME, C_KEY_FPR, C_CERT_SERIAL, C_CERT_FPR,
	C_CA, C_ERROR, C_PREV_HASH, C_ROW_HASH, AUDIT_NCOLS
};

_Static_assert(sizeof(audit_cols) / sizeof(audit_cols[0]) == AUDIT_NCOLS,
    "audit_cols and the C_* indexes disagree");

#define AUDIT_COLS_SQL \
	"id, time, station, operator, slot, board_serial, device_id, step, " \
	"outcome, key_fpr, cert_serial, cert_fpr, ca, error, prev_hash, " \
	"row_hash"

/*
 * Schema migrations: entry i takes user_version i to i + 1.  Only ever
 * append; an applied entry is never edited.
 */
static const char *const audit_migrations[] = {
	/* 0 -> 1 */
	"CREATE TABLE events ("
	" id INTEGER PRIMARY KEY,"
	" time TEXT NOT NULL,"
	" station TEXT,"
	" operator TEXT,"
	" slot INTEGER NOT NULL,"
	" board_serial TEXT,"
	" device_id TEXT,"
	" step TEXT,"
	" outcome TEXT,"
	" key_fpr TEXT,"
	" cert_serial TEXT,"
	" cert_fpr TEXT,"
	" ca TEXT,"
	" error TEXT,"
	" prev_hash TEXT NOT NULL,"
	" row_hash TEXT NOT NULL);"
	"CREATE INDEX events_device_id ON events(device_id);"
	"CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
	" BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
	"CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
	" BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;",
	/* 1 -> 2: where start-up proves the file takes a committed write
	 * (audit_probe_write).  Outside the chain, not evidence. */
	"CREATE TABLE station_start ("
	" station TEXT PRIMARY KEY NOT NULL,"
	" time TEXT NOT NULL);",
	/* 2 -> 3: signed checkpoints of the chain head (audit_checkpoint).
	 * Outside the chain: a checkpoint vouches for the rows, not the
	 * other way round. */
	"CREATE TABLE checkpoints ("
	" id INTEGER PRIMARY KEY,"
	" time TEXT NOT NULL,"
	" station TEXT NOT NULL,"
	" reason TEXT NOT NULL,"
	" row_id INTEGER NOT NULL,"
	" row_hash TEXT NOT NULL,"
	" signature BLOB NOT NULL);",
	/* 3 -> 4: "one key, one device" (audit_key_owner) looks a key up at
	 * every board; without this it read the whole log each time.
	 * Partial: most rows carry no key.  Outside the chain. */
	"CREATE INDEX events_key_fpr ON events(key_fpr) WHERE key_fpr IS NOT NULL;",
	/* 4 -> 5: the plant registry's offline queue (audit_registry_queue)
	 * reads only "registry" rows.  Outside the chain. */
	"CREATE INDEX events_registry ON events(id) WHERE step = 'registry';",
};

/* The oldest schema whose events table readers take as it is: every
 * migration since only added tables beside it. */
#define AUDIT_SCHEMA_READABLE 1

#define AUDIT_SCHEMA_VERSION \
	((int)(sizeof(audit_migrations) / sizeof(audit_migrations[0])))

/* One column value as it enters the hash: NULL, integer or text bytes. */
struct audit_val {
	int null;
	int sqlint;		/* stored as an SQLite integer: i is valid */
	int64_t i;
	const char *p;		/* text bytes; borrowed */
	size_t n;
};

static const char audit_zero_hash[AUDIT_HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/*
 * Words for the calling thread's newest audit failure (audit_last_error).
 * Every audit call runs in its caller's thread, so this is the caller's
 * own failure whatever the other slots do meanwhile.
 */
static __thread char audit_errtext[512];

/* Names of the extended codes a file system can cause, for messages. */
static const struct {
	int rc;
	const char *name;
	const char *verb;	/* "reading", "writing", or NULL */
} audit_rc_names[] = {
	{ SQLITE_IOERR_READ, "SQLITE_IOERR_READ", "reading" },
	{ SQLITE_IOERR_SHORT_READ, "SQLITE_IOERR_SHORT_READ", "reading" },
	{ SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE", "writing" },
	{ SQLITE_IOERR_FSYNC, "SQLITE_IOERR_FSYNC", "writing" },
	{ SQLITE_IOERR_DIR_FSYNC, "SQLITE_IOERR_DIR_FSYNC", "writing" },
	{ SQLITE_IOERR_TRUNCATE, "SQLITE_IOERR_TRUNCATE", "writing" },
	{ SQLITE_IOERR_FSTAT, "SQLITE_IOERR_FSTAT", NULL },
	{ SQLITE_IOERR_UNLOCK, "SQLITE_IOERR_UNLOCK", NULL },
	{ SQLITE_IOERR_RDLOCK, "SQLITE_IOERR_RDLOCK", NULL },
	{ SQLITE_IOERR_DELETE, "SQLITE_IOERR_DELETE", "writing" },
	{ SQLITE_IOERR_ACCESS, "SQLITE_IOERR_ACCESS", NULL },
	{ SQLITE_IOERR_LOCK, "SQLITE_IOERR_LOCK", NULL },
	{ SQLITE_IOERR_CLOSE, "SQLITE_IOERR_CLOSE", NULL },
	{ SQLITE_IOERR_SHMOPEN, "SQLITE_IOERR_SHMOPEN", NULL },
	{ SQLITE_IOERR_SHMSIZE, "SQLITE_IOERR_SHMSIZE", "writing" },
	{ SQLITE_IOERR_SHMMAP, "SQLITE_IOERR_SHMMAP", NULL },
	{ SQLITE_IOERR_SEEK, "SQLITE_IOERR_SEEK", NULL },
	{ SQLITE_IOERR_MMAP, "SQLITE_IOERR_MMAP", "reading" },
	{ SQLITE_IOERR, "SQLITE_IOERR", NULL },
	{ SQLITE_FULL, "SQLITE_FULL", "writing" },
	{ SQLITE_READONLY, "SQLITE_READONLY", NULL },
	{ SQLITE_READONLY_RECOVERY, "SQLITE_READONLY_RECOVERY", NULL },
	{ SQLITE_READONLY_CANTLOCK, "SQLITE_READONLY_CANTLOCK", NULL },
	{ SQLITE_READONLY_ROLLBACK, "SQLITE_READONLY_ROLLBACK", NULL },
	{ SQLITE_READONLY_DBMOVED, "SQLITE_READONLY_DBMOVED", NULL },
	{ SQLITE_READONLY_CANTINIT, "SQLITE_READONLY_CANTINIT", NULL },
	{ SQLITE_READONLY_DIRECTORY, "SQLITE_READONLY_DIRECTORY", NULL },
	{ SQLITE_CANTOPEN, "SQLITE_CANTOPEN", NULL },
	{ SQLITE_PERM, "SQLITE_PERM", NULL },
	{ SQLITE_BUSY, "SQLITE_BUSY", NULL },
	{ SQLITE_BUSY_SNAPSHOT, "SQLITE_BUSY_SNAPSHOT", NULL },
	{ SQLITE_LOCKED, "SQLITE_LOCKED", NULL },
	{ SQLITE_CORRUPT, "SQLITE_CORRUPT", NULL },
	{ SQLITE_NOTADB, "SQLITE_NOTADB", NULL },
};

/*
 * Why the file at path cannot be written, in words ("the directory /x is
 * not writable: Permission denied"), or "" when nothing is found: the
 * file itself, or its directory, where SQLite makes the -wal and -shm
 * files (and the file, when it is missing).
 */
static int
audit_access_hint(const char *path, char *hint, size_t hintsz)
{
	char dir[PATH_MAX];
	const char *slash;
	size_t n;
	int e;

	hint[0] = '\0';
	if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(dir))
		return 0;
	if (access(path, F_OK) == 0 && access(path, W_OK) != 0) {
		e = errno;
		snprintf(hint, hintsz, "the file is not writable: %s",
		    strerror(e));
		return e;
	}
	if ((slash = strrchr(path, '/')) == NULL) {
		snprintf(dir, sizeof(dir), ".");
	} else {
		n = (size_t)(slash - path);
		if (n == 0)
			n = 1;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	if (access(dir, W_OK) != 0) {
		e = errno;
		snprintf(hint, hintsz, e == ENOENT ? "the directory %.160s "
		    "does not exist" : "the directory %.160s is not writable: "
		    "%s", dir, strerror(e));
		return e;
	}
	return 0;
}

/*
 * Map an SQLite result code into the project's error space, with words
 * that name the file, the extended code and the errno behind it: a file
 * system that went read-only or full, or a disk that returned EIO, must
 * not read as a damaged log.  Only SQLITE_CORRUPT and SQLITE_NOTADB say
 * "malformed".  path may be NULL (then the handle's file name is used).
 */
static int
audit_dberr_path(sqlite3 *db, const char *path, const char *what, int rc)
{
	const char *name = NULL, *verb = NULL, *file;
	char code[48], sys[256], hint[240];
	int prim = rc & 0xff, err = 0, hint_err = 0, r;
	size_t i;

	file = path != NULL ? path : db != NULL ?
	    sqlite3_db_filename(db, "main") : NULL;
	if (file == NULL || file[0] == '\0')
		file = "the audit log";
	for (i = 0; i < sizeof(audit_rc_names) / sizeof(audit_rc_names[0]);
	    i++)
		if (audit_rc_names[i].rc == rc) {
			name = audit_rc_names[i].name;
			verb = audit_rc_names[i].verb;
			break;
		}
	if (name == NULL)
		snprintf(code, sizeof(code), "SQLite code %d", rc);
	else
		snprintf(code, sizeof(code), "%s", name);
	/* The errno behind it: SQLite records one for I/O errors and
	 * failed opens only; for other codes it would be a stale one. */
	sys[0] = '\0';
	if (db != NULL && (prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN))
		err = sqlite3_system_errno(db);
	if (err != 0)
		snprintf(sys, sizeof(sys), ", errno %d: %s", err,
		    strerror(err));
	/* SQLite's errno after a failed open is often that of its read-only
	 * retry (ENOENT); ask the file system what stops a write. */
	hint[0] = '\0';
	if (prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY ||
	    prim == SQLITE_PERM)
		hint_err = audit_access_hint(file, hint, sizeof(hint));
	if (hint[0] != '\0') {
		snprintf(sys, sizeof(sys), "; %s", hint);
		err = hint_err;	/* decides CANTOPEN's code below */
	}
	/* A write that failed for want of space, whatever SQLite calls it. */
	if (prim == SQLITE_IOERR && err == ENOSPC)
		prim = SQLITE_FULL;
	switch (prim) {
	case SQLITE_IOERR:
		r = rc == SQLITE_IOERR_NOMEM ? KL_ERR_NOMEM : KL_ERR_IO;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: I/O error %s "
		    "%s (%s%s)", what, verb != NULL ? verb : "on", file, code,
		    sys);
		break;
	case SQLITE_FULL:
		r = KL_ERR_DISK_FULL;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: disk full "
		    "writing %s: no space left on its file system (%s%s)", what,
		    file, code, sys);
		break;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		r = KL_ERR_READONLY;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: cannot write "
		    "%s: it, its directory or its file system is read-only or "
		    "not writable by this user (%s%s)", what, file, code, sys);
		break;
	case SQLITE_CANTOPEN:
		r = err == EACCES || err == EPERM || err == EROFS ?
		    KL_ERR_READONLY : KL_ERR_IO;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: cannot open "
		    "%s or its -wal/-shm files beside it (%s%s)", what, file,
		    code, sys);
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		r = KL_ERR_BUSY;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: %s is locked "
		    "by another process or connection (waited %d ms; %s)",
		    what, file, AUDIT_BUSY_MS, code);
		break;
	case SQLITE_CORRUPT:
		r = KL_ERR_CORRUPT;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: %s is "
		    "malformed: %s (%s)", what, file, sqlite3_errstr(rc), code);
		break;
	case SQLITE_NOTADB:
		r = KL_ERR_CORRUPT;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: %s is not an "
		    "SQLite database (%s)", what, file, code);
		break;
	case SQLITE_NOMEM:
		r = KL_ERR_NOMEM;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: out of "
		    "memory on %s", what, file);
		break;
	default:
		r = KL_ERR_DB;
		snprintf(audit_errtext, sizeof(audit_errtext), "%s: SQLite error "
		    "on %s: %s (%s)", what, file, db != NULL ?
		    sqlite3_errmsg(db) : sqlite3_errstr(rc), code);
		break;
	}
	log_error("audit: %s", audit_errtext);
	/* SQLite's own words too: for the codes above they are the generic
	 * text of the primary code, kept for whoever reads the log. */
	if (db != NULL && r != KL_ERR_DB)
		log_debug("audit: %s: sqlite says: %s", what,
		    sqlite3_errmsg(db));
	return r;
}

static int
audit_dberr(sqlite3 *db, const char *what, int rc)
{
	return audit_dberr_path(db, NULL, what, rc);
}

/* An audit failure that is not SQLite's, worded for audit_last_error. */
static void
audit_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
audit_errf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(audit_errtext, sizeof(audit_errtext), fmt, ap);
	va_end(ap);
}

const char *
audit_last_error(void)
{
	return audit_errtext[0] != '\0' ? audit_errtext :
	    "no audit error recorded";
}

static int
audit_exec(sqlite3 *db, const char *sql, const char *what)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return audit_dberr(db, what, rc);
	return 0;
}

/* Best effort: after a failed statement SQLite may already have rolled
 * back, and there is nothing better to do if this fails too. */
static void
audit_rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int
audit_lock(struct audit *a)
{
	if (pthread_mutex_lock(&a->lock) != 0) {
		log_error("audit: mutex lock failed");
		return KL_ERR_INTERNAL;
	}
	return 0;
}

static void
audit_unlock(struct audit *a)
{
	(void)pthread_mutex_unlock(&a->lock);
}

/*
 * A statement asked for on every board, prepared the first time and kept:
 * sql must be a string literal (it is found again by its address).  Under
 * lock; hand it back with audit_release, never sqlite3_finalize.
 */
static int
audit_stc_get(sqlite3 *db, struct audit_stc *stc, int *nstc, int cap,
    const char *sql, const char *what, sqlite3_stmt **st)
{
	int i, rc;

	for (i = 0; i < *nstc; i++)
		if (stc[i].sql == sql) {
			*st = stc[i].st;
			return 0;
		}
	if (*nstc == cap) {
		log_error("audit: statement cache full (%s)", what);
		return KL_ERR_INTERNAL;
	}
	rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
	    NULL);
	if (rc != SQLITE_OK) {
		*st = NULL;
		return audit_dberr(db, what, rc);
	}
	stc[*nstc].sql = sql;
	stc[*nstc].st = *st;
	(*nstc)++;
	return 0;
}

static int
audit_cached(struct audit *a, const char *sql, const char *what,
    sqlite3_stmt **st)
{
	return audit_stc_get(a->db, a->stc, &a->nstc,
	    (int)(sizeof(a->stc) / sizeof(a->stc[0])), sql, what, st);
}

/*
 * The connection for a per-board check: the reader (locked) when the
 * handle has one, else the writer's (locked).  audit_rd_unlock after.
 */
static sqlite3 *
audit_rd_lock(struct audit *a)
{
	if (a->rdb != NULL) {
		pthread_mutex_lock(&a->rlock);
		return a->rdb;
	}
	return audit_lock(a) == 0 ? a->db : NULL;
}

static void
audit_rd_unlock(struct audit *a)
{
	if (a->rdb != NULL)
		pthread_mutex_unlock(&a->rlock);
	else
		audit_unlock(a);
}

/* audit_cached on the connection audit_rd_lock gave. */
static int
audit_rd_cached(struct audit *a, const char *sql, const char *what,
    sqlite3_stmt **st)
{
	if (a->rdb == NULL)
		return audit_cached(a, sql, what, st);
	return audit_stc_get(a->rdb, a->rstc, &a->nrstc,
	    (int)(sizeof(a->rstc) / sizeof(a->rstc[0])), sql, what, st);
}

/* A cached statement done with: its read transaction ended, its
 * parameters cleared. */
static void
audit_release(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* A statement whose ?1 is a device ID; what names the query in the log.
 * *st (audit_release) only on success. */
static int
audit_prepare_device(struct audit *a, const char *sql, const char *what,
    const char *device_id, sqlite3_stmt **st)
{
	sqlite3_stmt *s = NULL;
	int r, rc;

	if ((r = audit_cached(a, sql, what, &s)) != 0)
		return r;
	if ((rc = sqlite3_bind_text(s, 1, device_id, -1, SQLITE_STATIC)) !=
	    SQLITE_OK) {
		audit_release(s);
		return audit_dberr(sqlite3_db_handle(s), "bind", rc);
	}
	*st = s;
	return 0;
}

/* ---- canonical encoding and hash (docs/audit.md, "Row hash") */

static int
audit_hash_ns(EVP_MD_CTX *md, const void *p, size_t n)
{
	char len[32];
	int k = snprintf(len, sizeof(len), "%zu:", n);

	if (k < 0 || (size_t)k >= sizeof(len))
		return 0;
	return EVP_DigestUpdate(md, len, (size_t)k) == 1 &&
	    (n == 0 || EVP_DigestUpdate(md, p, n) == 1) &&
	    EVP_DigestUpdate(md, ",", 1) == 1;
}

static int
audit_hash_val(EVP_MD_CTX *md, const struct audit_val *v,
    enum audit_coltype type)
{
	char num[32];
	int k;

	/* "-," cannot start a netstring (those start with a digit), so NULL
	 * and "" hash differently. */
	if (v->null)
		return EVP_DigestUpdate(md, "-,", 2) == 1;
	if (type == AUDIT_COL_INT) {
		k = snprintf(num, sizeof(num), "%" PRId64, v->i);
		if (k < 0 || (size_t)k >= sizeof(num))
			return 0;
		return audit_hash_ns(md, num, (size_t)k);
	}
	return audit_hash_ns(md, v->p, v->n);
}

/* Hex SHA-256 over every column but row_hash, in table order. */
static int
audit_row_hash(const struct audit_val v[AUDIT_NCOLS],
    char out[AUDIT_HASH_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	int r = KL_ERR_CRYPTO;
	EVP_MD_CTX *md = NULL;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int diglen = 0, i;
	int c;

	if ((md = EVP_MD_CTX_new()) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    !audit_hash_ns(md, AUDIT_HASH_TAG, strlen(AUDIT_HASH_TAG)))
		goto out;
	for (c = 0; c < C_ROW_HASH; c++)
		if (!audit_hash_val(md, &v[c], audit_cols[c].type))
			goto out;
	if (EVP_DigestFinal_ex(md, dig, &diglen) != 1 ||
	    diglen * 2 != AUDIT_HASH_HEX)
		goto out;
	for (i = 0; i < diglen; i++) {
		out[2 * i] = hex[dig[i] >> 4];
		out[2 * i + 1] = hex[dig[i] & 0x0f];
	}
	out[AUDIT_HASH_HEX] = '\0';
	r = 0;
 out:
	if (r == KL_ERR_CRYPTO)
		log_openssl("audit: sha-256");
	EVP_MD_CTX_free(md);
	return r;
}

/*
 * Read the current row of a statement that selected AUDIT_COLS_SQL.
 * Values are borrowed until the next step.  *badcol gets the first column
 * whose storage class is not what append writes (-1 when all fit): append
 * never stores that, so verify treats it as tampering, export shows it.
 */
static int
audit_vals_from_stmt(sqlite3_stmt *st, struct audit_val v[AUDIT_NCOLS],
    int *badcol)
{
	int c, t;

	*badcol = -1;
	for (c = 0; c < AUDIT_NCOLS; c++) {
		memset(&v[c], 0, sizeof(v[c]));
		t = sqlite3_column_type(st, c);
		if (t == SQLITE_NULL) {
			v[c].null = 1;
			if (audit_cols[c].type == AUDIT_COL_INT && *badcol < 0)
				*badcol = c;
			continue;
		}
		if (t == SQLITE_INTEGER) {
			v[c].sqlint = 1;
			v[c].i = sqlite3_column_int64(st, c);
		}
		if ((audit_cols[c].type == AUDIT_COL_INT) !=
		    (t == SQLITE_INTEGER) ||
		    (audit_cols[c].type == AUDIT_COL_TEXT && t != SQLITE_TEXT)) {
			if (*badcol < 0)
				*badcol = c;
		}
		v[c].p = (const char *)sqlite3_column_text(st, c);
		v[c].n = (size_t)sqlite3_column_bytes(st, c);
		if (v[c].p == NULL)
			return KL_ERR_NOMEM;
	}
	return 0;
}

/* ---- open, schema */

static int
audit_user_version(sqlite3 *db, int *version)
{
	int r = KL_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;

	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(db, "read user_version", rc);
		goto out;
	}
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		r = audit_dberr(db, "read user_version", rc);
		goto out;
	}
	*version = sqlite3_column_int(st, 0);
	r = 0;
 out:
	sqlite3_finalize(st);
	return r;
}

static int
audit_migrate(sqlite3 *db)
{
	int r = KL_ERR_INTERNAL, v = 0;
	char sql[64];

	if ((r = audit_user_version(db, &v)) != 0)
		goto out;
	if (v == AUDIT_SCHEMA_VERSION) {
		r = 0;
		goto out;
	}
	/* Another station process may be migrating the same file: take the
	 * write lock, then look again. */
	if ((r = audit_exec(db, "BEGIN IMMEDIATE", "begin migration")) != 0)
		goto out;
	if ((r = audit_user_version(db, &v)) != 0)
		goto out;
	if (v < 0 || v > AUDIT_SCHEMA_VERSION) {
		log_error("audit: database schema version %d is not one this "
		    "program knows (up to %d)", v, AUDIT_SCHEMA_VERSION);
		audit_errf("%s has schema version %d, newer than this program "
		    "knows (%d)", sqlite3_db_filename(db, "main"), v,
		    AUDIT_SCHEMA_VERSION);
		r = KL_ERR_DB;
		goto out;
	}
	for (; v < AUDIT_SCHEMA_VERSION; v++) {
		if ((r = audit_exec(db, audit_migrations[v], "migrate")) != 0)
			goto out;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if ((r = audit_exec(db, sql, "set user_version")) != 0)
			goto out;
		log_info("audit: schema migrated to version %d", v + 1);
	}
	if ((r = audit_exec(db, "COMMIT", "commit migration")) != 0)
		goto out;
	r = 0;
 out:
	if (r != 0)
		audit_rollback(db);
	return r;
}

static int
audit_set_wal(sqlite3 *db)
{
	int r = KL_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;
	const char *mode;

	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(db, "journal_mode", rc);
		goto out;
	}
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		r = audit_dberr(db, "journal_mode", rc);
		goto out;
	}
	/* The pragma answers with the mode in force; ":memory:" and some
	 * file systems cannot do WAL and would silently keep another one. */
	mode = (const char *)sqlite3_column_text(st, 0);
	if (mode == NULL || strcmp(mode, "wal") != 0) {
		log_error("audit: database refused WAL mode (journal mode %s)",
		    mode != NULL ? mode : "unknown");
		audit_errf("%s refused WAL mode (journal mode %s)",
		    sqlite3_db_filename(db, "main"),
		    mode != NULL ? mode : "unknown");
		r = KL_ERR_DB;
		goto out;
	}
	r = 0;
 out:
	sqlite3_finalize(st);
	return r;
}

/*
 * A WAL-mode file read where its -shm cannot be made (an auditor's copy
 * in a read-only directory) fails on the first read.  Whether it does is
 * asked quietly, so the immutable fallback below can be taken instead.
 */
static int
audit_ro_needs_immutable(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return (rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN;
}

/* "file:" URI for path with immutable=1; %, ? and # escaped. */
static int
audit_immutable_uri(const char *path, char *uri, size_t urisz)
{
	size_t o = 0;
	int n;

	if ((n = snprintf(uri, urisz, "file:")) < 0 || (size_t)n >= urisz)
		return KL_ERR_TOO_BIG;
	o = (size_t)n;
	for (; *path != '\0'; path++) {
		if (*path == '%' || *path == '?' || *path == '#')
			n = snprintf(uri + o, urisz - o, "%%%02X",
			    (unsigned char)*path);
		else
			n = snprintf(uri + o, urisz - o, "%c", *path);
		if (n < 0 || (size_t)n >= urisz - o)
			return KL_ERR_TOO_BIG;
		o += (size_t)n;
	}
	n = snprintf(uri + o, urisz - o, "?immutable=1");
	return n < 0 || (size_t)n >= urisz - o ? KL_ERR_TOO_BIG : 0;
}

/* The reader connection of a handle that writes (struct audit, rdb),
 * once the schema is current. */
static int
audit_open_reader(struct audit *a, const char *path)
{
	int rc;

	if (pthread_mutex_init(&a->rlock, NULL) != 0)
		return KL_ERR_INTERNAL;
	a->rlock_ok = 1;
	rc = sqlite3_open_v2(path, &a->rdb, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		if (a->rdb != NULL)
			rc = sqlite3_extended_errcode(a->rdb);
		return audit_dberr_path(a->rdb, path, "open (reader)", rc);
	}
	sqlite3_extended_result_codes(a->rdb, 1);
	if ((rc = sqlite3_busy_timeout(a->rdb, AUDIT_BUSY_MS)) != SQLITE_OK)
		return audit_dberr(a->rdb, "busy_timeout (reader)", rc);
	return 0;
}

static void
audit_close_reader(struct audit *a)
{
	int rc;

	while (a->nrstc > 0)
		sqlite3_finalize(a->rstc[--a->nrstc].st);
	if (a->rdb != NULL && (rc = sqlite3_close(a->rdb)) != SQLITE_OK)
		(void)audit_dberr(a->rdb, "close (reader)", rc);
	a->rdb = NULL;
	if (a->rlock_ok)
		pthread_mutex_destroy(&a->rlock);
	a->rlock_ok = 0;
}

static int
audit_open_mode(struct audit **out, const char *path, int readonly)
{
	int r = KL_ERR_INTERNAL, rc, mutex_ok = 0, v = -1;
	struct audit *a = NULL;

	if (out == NULL || path == NULL)
		return KL_ERR_INVALID;
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if (pthread_mutex_init(&a->lock, NULL) != 0)
		goto out;
	if (pthread_mutex_init(&a->head_mu, NULL) != 0) {
		pthread_mutex_destroy(&a->lock);
		goto out;
	}
	if (pthread_mutex_init(&a->gc_mu, NULL) != 0) {
		pthread_mutex_destroy(&a->lock);
		pthread_mutex_destroy(&a->head_mu);
		goto out;
	}
	if (pthread_cond_init(&a->gc_cv, NULL) != 0) {
		pthread_mutex_destroy(&a->lock);
		pthread_mutex_destroy(&a->head_mu);
		pthread_mutex_destroy(&a->gc_mu);
		goto out;
	}
	a->gc_tail = &a->gc_queue;
	mutex_ok = 1;
	rc = sqlite3_open_v2(path, &a->db, readonly ? SQLITE_OPEN_READONLY :
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		if (a->db != NULL)
			rc = sqlite3_extended_errcode(a->db);
		r = audit_dberr_path(a->db, path, "open", rc);
		goto out;
	}
	sqlite3_extended_result_codes(a->db, 1);
	/* Before anything that locks: switching to WAL and migrating both
	 * need locks another station process may hold for a moment. */
	if ((rc = sqlite3_busy_timeout(a->db, AUDIT_BUSY_MS)) != SQLITE_OK) {
		r = audit_dberr(a->db, "busy_timeout", rc);
		goto out;
	}
	if (readonly && audit_ro_needs_immutable(a->db)) {
		char uri[PATH_MAX * 3 + 32];

		/* We may not create the -shm: read the file as it stands,
		 * without locks.  Meant for a copy; on the live log of a
		 * running station, rows still in its -wal are not seen. */
		sqlite3_close(a->db);
		a->db = NULL;
		if ((r = audit_immutable_uri(path, uri, sizeof(uri))) != 0)
			goto out;
		rc = sqlite3_open_v2(uri, &a->db, SQLITE_OPEN_READONLY |
		    SQLITE_OPEN_URI, NULL);
		if (rc != SQLITE_OK) {
			if (a->db != NULL)
				rc = sqlite3_extended_errcode(a->db);
			r = audit_dberr_path(a->db, path, "open", rc);
			goto out;
		}
		log_warn("audit: %s: its directory is not writable; reading "
		    "the file as an immutable copy (rows still in a -wal "
		    "file are not seen)", path);
	}
	if (readonly) {
		/* Only look: no journal switch, no migration.  A log of
		 * another schema version is not one this program can read. */
		if ((r = audit_user_version(a->db, &v)) != 0)
			goto out;
		if (v < AUDIT_SCHEMA_READABLE || v > AUDIT_SCHEMA_VERSION) {
			log_error("audit: %s has schema version %d, this "
			    "program reads %d to %d", path, v,
			    AUDIT_SCHEMA_READABLE, AUDIT_SCHEMA_VERSION);
			audit_errf("%s has schema version %d, this program "
			    "reads %d to %d", path, v, AUDIT_SCHEMA_READABLE,
			    AUDIT_SCHEMA_VERSION);
			r = KL_ERR_DB;
			goto out;
		}
		goto done;
	}
	if ((r = audit_set_wal(a->db)) != 0)
		goto out;
	/* FULL: in WAL mode NORMAL may lose the last commits on power loss,
	 * and a provisioned board without its audit row is what we must not
	 * have. */
	if ((r = audit_exec(a->db, "PRAGMA synchronous=FULL",
	    "synchronous")) != 0)
		goto out;
	if ((r = audit_migrate(a->db)) != 0)
		goto out;
	if ((r = audit_open_reader(a, path)) != 0)
		goto out;
done:
	*out = a;
	a = NULL;
	r = 0;
 out:
	if (a != NULL) {
		audit_close_reader(a);
		sqlite3_close(a->db);
		if (mutex_ok) {
			pthread_mutex_destroy(&a->lock);
			pthread_mutex_destroy(&a->head_mu);
			pthread_mutex_destroy(&a->gc_mu);
			pthread_cond_destroy(&a->gc_cv);
		}
		free(a);
	}
	return r;
}

int
audit_open(struct audit **out, const char *path)
{
	return audit_open_mode(out, path, 0);
}

int
audit_open_readonly(struct audit **out, const char *path)
{
	return audit_open_mode(out, path, 1);
}

static int audit_now(char out[AUDIT_TIME_LEN + 1]);

int
audit_probe_write(struct audit *a, const char *station)
{
	int r = KL_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;
	char now[AUDIT_TIME_LEN + 1];

	if (a == NULL)
		return KL_ERR_INVALID;
	if ((r = audit_now(now)) != 0)
		return r;
	if ((r = audit_lock(a)) != 0)
		return r;
	/* The same path an append takes: the write lock, a row, a commit
	 * that is synced (synchronous=FULL).  A file system that is
	 * read-only or full, or a journal that cannot be made beside the
	 * file, fails here rather than at the first board. */
	if ((r = audit_exec(a->db, "BEGIN IMMEDIATE", "start-up write check "
	    "(begin)")) != 0)
		goto out;
	rc = sqlite3_prepare_v2(a->db, "INSERT OR REPLACE INTO station_start"
	    " (station, time) VALUES (?1, ?2)", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, station != NULL ? station : "",
		    -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
		rc = SQLITE_OK;
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "start-up write check", rc);
		goto out;
	}
	if ((r = audit_exec(a->db, "COMMIT", "start-up write check (commit)"))
	    != 0)
		goto out;
	r = 0;
 out:
	sqlite3_finalize(st);
	if (r != 0)
		audit_rollback(a->db);
	audit_unlock(a);
	return r;
}

void
audit_close(struct audit *a)
{
	int rc;

	if (a == NULL)
		return;
	if (audit_flush(a) != 0)
		log_error("audit: rows appended for later were lost at close");
	while (a->nstc > 0)
		sqlite3_finalize(a->stc[--a->nstc].st);
	audit_close_reader(a);
	if ((rc = sqlite3_close(a->db)) != SQLITE_OK)
		(void)audit_dberr(a->db, "close", rc);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->head_mu);
	pthread_mutex_destroy(&a->gc_mu);
	pthread_cond_destroy(&a->gc_cv);
	free(a);
}

static void
audit_head_set(struct audit *a, int64_t id, const char *hash)
{
	pthread_mutex_lock(&a->head_mu);
	a->head_known = 1;
	a->head_id = id;
	memcpy(a->head, hash, AUDIT_HASH_HEX + 1);
	pthread_mutex_unlock(&a->head_mu);
}

/* ---- append */

static int
audit_now(char out[AUDIT_TIME_LEN + 1])
{
	struct timespec ts;
	struct tm tm;
	char sec[32];
	int k;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 ||
	    gmtime_r(&ts.tv_sec, &tm) == NULL ||
	    strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return KL_ERR_INTERNAL;
	k = snprintf(out, AUDIT_TIME_LEN + 1, "%s.%03ldZ", sec,
	    ts.tv_nsec / 1000000L);
	if (k != AUDIT_TIME_LEN)
		return KL_ERR_INTERNAL;
	return 0;
}

static int
audit_text_val(struct audit_val *v, const char *s)
{
	memset(v, 0, sizeof(*v));
	if (s == NULL) {
		v->null = 1;
		return 0;
	}
	v->p = s;
	v->n = strlen(s);
	return v->n <= AUDIT_FIELD_MAX ? 0 : KL_ERR_TOO_BIG;
}

/* Inside the write transaction: the id and hash of the newest row. */
static int
audit_read_head(struct audit *a, int64_t *last_id,
    char head[AUDIT_HASH_HEX + 1])
{
	int r = KL_ERR_INTERNAL, rc;
	sqlite3_stmt *st;
	const unsigned char *h;

	if ((r = audit_cached(a,
	    "SELECT id, row_hash FROM events ORDER BY id DESC LIMIT 1",
	    "read head", &st)) != 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*last_id = 0;
		memcpy(head, audit_zero_hash, sizeof(audit_zero_hash));
		r = 0;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = audit_dberr(a->db, "read head", rc);
		goto out;
	}
	h = sqlite3_column_text(st, 1);
	if (sqlite3_column_type(st, 1) != SQLITE_TEXT || h == NULL ||
	    sqlite3_column_bytes(st, 1) != AUDIT_HASH_HEX) {
		/* Chaining onto garbage would bless it: stop, let verify say
		 * what happened. */
		log_error("audit: newest row has a malformed row_hash; "
		    "run keyline audit verify");
		r = KL_ERR_DB;
		goto out;
	}
	*last_id = sqlite3_column_int64(st, 0);
	memcpy(head, h, AUDIT_HASH_HEX);
	head[AUDIT_HASH_HEX] = '\0';
	r = 0;
 out:
	audit_release(st);
	return r;
}

/* A statement without parameters or rows (BEGIN, COMMIT), cached. */
static int
audit_step_cached(struct audit *a, const char *sql, const char *what)
{
	sqlite3_stmt *st;
	int r, rc;

	if ((r = audit_cached(a, sql, what, &st)) != 0)
		return r;
	rc = sqlite3_step(st);
	audit_release(st);
	return rc == SQLITE_DONE ? 0 : audit_dberr(a->db, what, rc);
}

/* One row waiting for the group commit; on its caller's stack. */
struct audit_pending {
	struct audit_val v[AUDIT_NCOLS];
	char now[AUDIT_TIME_LEN + 1];
	char prev[AUDIT_HASH_HEX + 1];
	char hash[AUDIT_HASH_HEX + 1];
	int64_t id;
	int r;
	int done;
	int later;		/* audit_append_later: heap, owns its text
				 * (after the struct); freed once written */
	pthread_cond_t cv;	/* its waiter's (not later rows'): signalled
				 * when done, or when it is to lead */
	struct audit_pending *next;
};

/*
 * Every row of the batch in one transaction, chained in queue order;
 * one COMMIT (one WAL sync) for all.  Sets each row's id and r: all
 * succeed or, the transaction rolled back, all fail with the same error.
 */
static void
audit_write_batch(struct audit *a, struct audit_pending *batch)
{
	struct audit_pending *p;
	sqlite3_stmt *ins = NULL;
	const char *prev;
	int64_t last = 0;
	int r, rc, c;

	if ((r = audit_lock(a)) != 0)
		goto done;
	/* The write lock before reading the head: two writers can then never
	 * both chain onto the same row. */
	if ((r = audit_step_cached(a, "BEGIN IMMEDIATE", "begin append")) != 0)
		goto out;
	if ((r = audit_read_head(a, &last, batch->prev)) != 0 ||
	    (r = audit_cached(a, "INSERT INTO events (" AUDIT_COLS_SQL
	    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
	    " ?14, ?15, ?16)", "prepare insert", &ins)) != 0)
		goto out;
	prev = batch->prev;
	for (p = batch; p != NULL; prev = p->hash, p = p->next) {
		if (last < 0 || last == INT64_MAX) {
			log_error("audit: newest row id %" PRId64 " cannot be "
			    "followed", last);
			r = KL_ERR_DB;
			goto out;
		}
		if (p != batch)
			memcpy(p->prev, prev, AUDIT_HASH_HEX + 1);
		if ((r = audit_now(p->now)) != 0)
			goto out;
		p->id = ++last;
		memset(&p->v[C_ID], 0, sizeof(p->v[C_ID]));
		p->v[C_ID].sqlint = 1;
		p->v[C_ID].i = p->id;
		(void)audit_text_val(&p->v[C_TIME], p->now);
		(void)audit_text_val(&p->v[C_PREV_HASH], p->prev);
		if ((r = audit_row_hash(p->v, p->hash)) != 0)
			goto out;
		(void)audit_text_val(&p->v[C_ROW_HASH], p->hash);
		for (c = 0; c < AUDIT_NCOLS; c++) {
			if (p->v[c].null)
				rc = sqlite3_bind_null(ins, c + 1);
			else if (audit_cols[c].type == AUDIT_COL_INT)
				rc = sqlite3_bind_int64(ins, c + 1, p->v[c].i);
			else
				rc = sqlite3_bind_text(ins, c + 1, p->v[c].p,
				    (int)p->v[c].n, SQLITE_STATIC);
			if (rc != SQLITE_OK) {
				r = audit_dberr(a->db, "bind", rc);
				goto out;
			}
		}
		rc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (rc != SQLITE_DONE) {
			r = audit_dberr(a->db, "insert", rc);
			goto out;
		}
	}
	if ((r = audit_step_cached(a, "COMMIT", "commit append")) != 0)
		goto out;
	for (p = batch; p->next != NULL; p = p->next)
		;
	audit_head_set(a, p->id, p->hash);
	r = 0;
 out:
	audit_release(ins);
	if (r != 0)
		audit_rollback(a->db);
	audit_unlock(a);
 done:
	for (p = batch; p != NULL; p = p->next)
		p->r = r;
}

/* The event's text fields into v[]: 0 or KL_ERR_TOO_BIG. */
static int
audit_event_vals(const struct audit_event *ev, struct audit_val *v)
{
	const char *text[AUDIT_NCOLS] = { NULL };
	int r, c;

	text[C_STATION] = ev->station;
	text[C_OPERATOR] = ev->operator_name;
	text[C_BOARD_SERIAL] = ev->board_serial;
	text[C_DEVICE_ID] = ev->device_id;
	text[C_STEP] = ev->step;
	text[C_OUTCOME] = ev->outcome;
	text[C_KEY_FPR] = ev->key_fpr;
	text[C_CERT_SERIAL] = ev->cert_serial;
	text[C_CERT_FPR] = ev->cert_fpr;
	text[C_CA] = ev->ca;
	text[C_ERROR] = ev->error;
	for (c = C_STATION; c <= C_ERROR; c++) {
		if (c == C_SLOT)
			continue;
		if ((r = audit_text_val(&v[c], text[c])) != 0) {
			log_error("audit: field %s longer than %d bytes",
			    audit_cols[c].name, AUDIT_FIELD_MAX);
			return r;
		}
	}
	memset(&v[C_SLOT], 0, sizeof(v[C_SLOT]));
	v[C_SLOT].sqlint = 1;
	v[C_SLOT].i = ev->slot;
	return 0;
}

/*
 * Under gc_mu, with gc_busy clear: write everything queued, as one batch,
 * then mark it done and wake the waiters.  Rows appended for later are
 * freed here; a batch that lost some leaves its error in gc_lost.
 * Returns with gc_mu held.
 */
static void
audit_lead_batch(struct audit *a)
{
	struct audit_pending *batch, *p, *next;
	int64_t first = 0, last = 0;
	int lost = 0, r = 0, ckpt;

	a->gc_busy = 1;
	batch = a->gc_queue;
	a->gc_queue = NULL;
	a->gc_tail = &a->gc_queue;
	pthread_mutex_unlock(&a->gc_mu);
	audit_write_batch(a, batch);
	pthread_mutex_lock(&a->gc_mu);
	for (p = batch; p != NULL; p = next) {
		next = p->next;	/* p may be gone once done is set */
		r = p->r;
		if (first == 0)
			first = p->id;
		last = p->id;
		if (p->later) {
			lost += p->r != 0;
			free(p);
		} else {
			p->done = 1;
			pthread_cond_signal(&p->cv);
		}
	}
	if (lost > 0) {
		log_error("audit: %d row(s) could not be written: %s", lost,
		    kl_strerror(r));
		a->gc_lost = r;
	}
	a->gc_busy = 0;
	/* The next batch's first waiter leads it (one thread woken, not
	 * every waiter); audit_flush waits on gc_cv. */
	for (p = a->gc_queue; p != NULL && p->later; p = p->next)
		;
	if (p != NULL)
		pthread_cond_signal(&p->cv);
	pthread_cond_broadcast(&a->gc_cv);
	/* Every checkpoint_every rows, a signed checkpoint of the new head,
	 * whoever the caller.  The rows stand either way: a missing
	 * checkpoint weakens the evidence, it does not undo the step. */
	ckpt = r == 0 && a->ckpt_sign != NULL && a->ckpt_every > 0 &&
	    first > 0 && (first - 1) / a->ckpt_every != last / a->ckpt_every;
	if (ckpt) {
		pthread_mutex_unlock(&a->gc_mu);
		if (audit_checkpoint(a, "rows", NULL) != 0)
			log_error("audit: checkpoint after row %" PRId64
			    " failed: %s", last, audit_last_error());
		pthread_mutex_lock(&a->gc_mu);
	}
}

int
audit_append(struct audit *a, const struct audit_event *ev, int64_t *id)
{
	struct audit_pending me;
	int r;

	if (a == NULL || ev == NULL)
		return KL_ERR_INVALID;
	memset(&me, 0, sizeof(me));
	if ((r = audit_event_vals(ev, me.v)) != 0)
		return r;
	if (pthread_cond_init(&me.cv, NULL) != 0)
		return KL_ERR_INTERNAL;

	/* Queue the row; the first thread to find no batch being written
	 * writes every row queued by then, its own among them. */
	pthread_mutex_lock(&a->gc_mu);
	*a->gc_tail = &me;
	a->gc_tail = &me.next;
	while (!me.done) {
		if (a->gc_busy)
			pthread_cond_wait(&me.cv, &a->gc_mu);
		else
			audit_lead_batch(a);
	}
	/* Rows appended for later that a batch lost fail the next caller
	 * that waits: its board stops, the cause in the log above. */
	if (me.r == 0 && a->gc_lost != 0) {
		me.r = a->gc_lost;
		a->gc_lost = 0;
	}
	pthread_mutex_unlock(&a->gc_mu);
	pthread_cond_destroy(&me.cv);
	if ((r = me.r) != 0)
		return r;
	if (id != NULL)
		*id = me.id;
	return 0;
}

int
audit_append_later(struct audit *a, const struct audit_event *ev)
{
	struct audit_val v[AUDIT_NCOLS];
	struct audit_pending *p;
	size_t need = sizeof(*p), off;
	char *text;
	int r, c;

	if (a == NULL || ev == NULL)
		return KL_ERR_INVALID;
	memset(v, 0, sizeof(v));
	if ((r = audit_event_vals(ev, v)) != 0)
		return r;
	for (c = 0; c < AUDIT_NCOLS; c++)
		if (!v[c].null && !v[c].sqlint && v[c].p != NULL)
			need += v[c].n + 1;
	if ((p = calloc(1, need)) == NULL)
		return KL_ERR_NOMEM;
	p->later = 1;
	text = (char *)(p + 1);
	for (off = 0, c = 0; c < AUDIT_NCOLS; c++) {
		p->v[c] = v[c];
		if (v[c].null || v[c].sqlint || v[c].p == NULL)
			continue;
		memcpy(text + off, v[c].p, v[c].n);
		text[off + v[c].n] = '\0';
		p->v[c].p = text + off;
		off += v[c].n + 1;
	}
	pthread_mutex_lock(&a->gc_mu);
	*a->gc_tail = p;
	a->gc_tail = &p->next;
	pthread_mutex_unlock(&a->gc_mu);
	return 0;
}

int
audit_flush(struct audit *a)
{
	int r;

	if (a == NULL)
		return KL_ERR_INVALID;
	pthread_mutex_lock(&a->gc_mu);
	while (a->gc_busy || a->gc_queue != NULL) {
		if (a->gc_busy)
			pthread_cond_wait(&a->gc_cv, &a->gc_mu);
		else
			audit_lead_batch(a);
	}
	r = a->gc_lost;
	a->gc_lost = 0;
	pthread_mutex_unlock(&a->gc_mu);
	return r;
}

/* ---- find */

int
audit_head(struct audit *a, int64_t *rows, char *head, size_t headsz)
{
	int r;

	if (a == NULL || rows == NULL || head == NULL ||
	    headsz < AUDIT_HASH_HEX + 1)
		return KL_ERR_INVALID;
	pthread_mutex_lock(&a->head_mu);
	if (a->head_known) {
		*rows = a->head_id;
		memcpy(head, a->head, AUDIT_HASH_HEX + 1);
	}
	r = a->head_known;
	pthread_mutex_unlock(&a->head_mu);
	if (r)
		return 0;
	/* Nothing appended through this handle yet: read it once. */
	if ((r = audit_lock(a)) != 0)
		return r;
	r = audit_read_head(a, rows, head);
	audit_unlock(a);
	if (r == 0)
		audit_head_set(a, *rows, head);
	return r;
}

int
audit_find_row_hash(struct audit *a, const char *hash, int64_t *id)
{
	sqlite3_stmt *st = NULL;
	size_t i;
	int r, rc;

	if (a == NULL || hash == NULL || id == NULL ||
	    strlen(hash) != AUDIT_HASH_HEX)
		return KL_ERR_INVALID;
	for (i = 0; i < AUDIT_HASH_HEX; i++)
		if (!((hash[i] >= '0' && hash[i] <= '9') ||
		    (hash[i] >= 'a' && hash[i] <= 'f')))
			return KL_ERR_INVALID;
	if ((r = audit_lock(a)) != 0)
		return r;
	rc = sqlite3_prepare_v2(a->db,
	    "SELECT id FROM events WHERE row_hash = ?1 LIMIT 1", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare anchor", rc);
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*id = 0;
	else {
		r = audit_dberr(a->db, "anchor", rc);
		goto out;
	}
	r = 0;
 out:
	sqlite3_finalize(st);
	audit_unlock(a);
	return r;
}

int
audit_find_provisioned(struct audit *a, const char *device_id, int *found,
    char *cert_serial, size_t serialsz)
{
	int r = KL_ERR_INTERNAL, rc, hit = 0;
	sqlite3_stmt *st = NULL;
	const char *s;
	size_t n;

	if (a == NULL || device_id == NULL || found == NULL)
		return KL_ERR_INVALID;
	if ((r = audit_lock(a)) != 0)
		return r;
	if ((r = audit_prepare_device(a,
	    "SELECT cert_serial FROM events WHERE device_id = ?1"
	    " AND ((step = 'done' AND outcome = 'passed')"
	    " OR (step = 'write' AND outcome = 'ok')"
	    " OR (step = 'recover' AND outcome = 'provisioned'))"
	    " ORDER BY id DESC LIMIT 1", "prepare find", device_id, &st)) != 0)
		goto out;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		hit = 1;
		if (cert_serial != NULL) {
			s = (const char *)sqlite3_column_text(st, 0);
			n = (size_t)sqlite3_column_bytes(st, 0);
			if (s == NULL)
				n = 0;
			if (serialsz == 0 || n >= serialsz ||
			    (s != NULL && memchr(s, '\0', n) != NULL)) {
				r = KL_ERR_TOO_BIG;
				goto out;
			}
			if (n > 0)
				memcpy(cert_serial, s, n);
			cert_serial[n] = '\0';
		}
	} else if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "find", rc);
		goto out;
	}
	*found = hit;
	r = 0;
 out:
	audit_release(st);
	audit_unlock(a);
	return r;
}

/* ---- readers for the HTTP status API */

static const char *
audit_val_text(const struct audit_val *v)
{
	return v->null ? NULL : v->p;
}

static void
audit_row_from_vals(struct audit_row *row, const struct audit_val v[AUDIT_NCOLS])
{
	memset(row, 0, sizeof(*row));
	row->id = v[C_ID].i;
	row->time = audit_val_text(&v[C_TIME]);
	row->station = audit_val_text(&v[C_STATION]);
	row->operator_name = audit_val_text(&v[C_OPERATOR]);
	row->slot = v[C_SLOT].i;
	row->board_serial = audit_val_text(&v[C_BOARD_SERIAL]);
	row->device_id = audit_val_text(&v[C_DEVICE_ID]);
	row->step = audit_val_text(&v[C_STEP]);
	row->outcome = audit_val_text(&v[C_OUTCOME]);
	row->key_fpr = audit_val_text(&v[C_KEY_FPR]);
	row->cert_serial = audit_val_text(&v[C_CERT_SERIAL]);
	row->cert_fpr = audit_val_text(&v[C_CERT_FPR]);
	row->ca = audit_val_text(&v[C_CA]);
	row->error = audit_val_text(&v[C_ERROR]);
	row->prev_hash = audit_val_text(&v[C_PREV_HASH]);
	row->row_hash = audit_val_text(&v[C_ROW_HASH]);
	row->vals = v;
}

/*
 * Under the lock: hand st's rows (AUDIT_COLS_SQL) to fn, at most limit;
 * *extra = 1 when a row past the limit exists, *last the last id passed.
 */
static int
audit_rows_walk(struct audit *a, sqlite3_stmt *st, int limit,
    audit_row_fn fn, void *arg, int64_t *last, int *extra)
{
	struct audit_val v[AUDIT_NCOLS];
	struct audit_row row;
	int r, rc, badcol, n = 0;

	*extra = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == limit) {
			*extra = 1;
			return 0;
		}
		if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
			return r;
		audit_row_from_vals(&row, v);
		if ((r = fn(arg, &row)) != 0)
			return r;
		*last = row.id;
		n++;
	}
	if (rc != SQLITE_DONE)
		return audit_dberr(a->db, "reading rows", rc);
	return 0;
}

int
audit_events_since(struct audit *a, int64_t since_id, int limit,
    audit_row_fn fn, void *arg, int64_t *next, int *more)
{
	int r = KL_ERR_INTERNAL, rc, extra = 0;
	sqlite3_stmt *st = NULL;
	int64_t last = since_id;

	if (a == NULL || fn == NULL || next == NULL || since_id < 0 ||
	    limit < 1)
		return KL_ERR_INVALID;
	if (limit > AUDIT_EVENTS_MAX)
		limit = AUDIT_EVENTS_MAX;
	if ((r = audit_lock(a)) != 0)
		return r;
	/* One row past the limit tells whether there is more, without a
	 * second statement (which could see a newer snapshot). */
	rc = sqlite3_prepare_v2(a->db, "SELECT " AUDIT_COLS_SQL
	    " FROM events WHERE id > ?1 ORDER BY id LIMIT ?2", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare events since", rc);
		goto out;
	}
	if ((rc = sqlite3_bind_int64(st, 1, since_id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int(st, 2, limit + 1)) != SQLITE_OK) {
		r = audit_dberr(a->db, "bind", rc);
		goto out;
	}
	if ((r = audit_rows_walk(a, st, limit, fn, arg, &last, &extra)) != 0)
		goto out;
	*next = last;
	if (more != NULL)
		*more = extra;
	r = 0;
 out:
	sqlite3_finalize(st);
	audit_unlock(a);
	return r;
}

/* A queued device is closed by a later "reconciled" or "conflict" row
 * for the same device and certificate. */
#define AUDIT_QUEUE_WHERE \
	" FROM events q WHERE step = 'registry' AND outcome = 'queued'" \
	" AND NOT EXISTS (SELECT 1 FROM events c" \
	"  WHERE c.device_id = q.device_id AND c.id > q.id" \
	"  AND c.step = 'registry'" \
	"  AND c.outcome IN ('reconciled', 'conflict')" \
	"  AND c.cert_fpr IS q.cert_fpr)"

int
audit_registry_queue(struct audit *a, audit_row_fn fn, void *arg,
    int64_t *total)
{
	int r, rc, extra = 0;
	sqlite3_stmt *st = NULL;
	int64_t last = 0;

	if (a == NULL || fn == NULL)
		return KL_ERR_INVALID;
	if ((r = audit_lock(a)) != 0)
		return r;
	/* One read transaction: the count and the rows agree. */
	if ((rc = sqlite3_exec(a->db, "BEGIN", NULL, NULL, NULL)) !=
	    SQLITE_OK) {
		r = audit_dberr(a->db, "begin", rc);
		goto unlock;
	}
	if (total != NULL) {
		rc = sqlite3_prepare_v2(a->db, "SELECT count(*)"
		    AUDIT_QUEUE_WHERE, -1, &st, NULL);
		if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
			r = audit_dberr(a->db, "count registry queue", rc);
			goto out;
		}
		*total = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
		st = NULL;
	}
	rc = sqlite3_prepare_v2(a->db, "SELECT " AUDIT_COLS_SQL
	    AUDIT_QUEUE_WHERE " ORDER BY id LIMIT ?1", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare registry queue", rc);
		goto out;
	}
	if ((rc = sqlite3_bind_int(st, 1, AUDIT_EVENTS_MAX + 1)) !=
	    SQLITE_OK) {
		r = audit_dberr(a->db, "bind", rc);
		goto out;
	}
	r = audit_rows_walk(a, st, AUDIT_EVENTS_MAX, fn, arg, &last, &extra);
out:
	sqlite3_finalize(st);
	(void)sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
unlock:
	audit_unlock(a);
	return r;
}

int
audit_registry_conflicts(struct audit *a, int64_t *count, char *last,
    size_t lastsz)
{
	int r, rc;
	sqlite3_stmt *st = NULL;
	const unsigned char *t;

	if (a == NULL || count == NULL || last == NULL || lastsz == 0)
		return KL_ERR_INVALID;
	*count = 0;
	last[0] = '\0';
	if ((r = audit_lock(a)) != 0)
		return r;
	rc = sqlite3_prepare_v2(a->db, "SELECT count(*), (SELECT error FROM"
	    " events WHERE step = 'registry' AND outcome = 'conflict'"
	    " ORDER BY id DESC LIMIT 1) FROM events"
	    " WHERE step = 'registry' AND outcome = 'conflict'", -1, &st,
	    NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare registry conflicts", rc);
		goto out;
	}
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		r = audit_dberr(a->db, "registry conflicts", rc);
		goto out;
	}
	*count = sqlite3_column_int64(st, 0);
	if ((t = sqlite3_column_text(st, 1)) != NULL)
		snprintf(last, lastsz, "%s", (const char *)t);
	r = 0;
out:
	sqlite3_finalize(st);
	audit_unlock(a);
	return r;
}

/* Copy a stored value into a record field: NULL stays as it was; too long
 * is KL_ERR_TOO_BIG unless cut is set. */
static int
audit_rec_copy(char *dst, size_t dstsz, const struct audit_val *v, int cut)
{
	size_t n;

	if (v->null)
		return 0;
	n = v->n;
	if (n >= dstsz) {
		if (!cut)
			return KL_ERR_TOO_BIG;
		n = dstsz - 1;
	}
	memcpy(dst, v->p, n);
	dst[n] = '\0';
	return 0;
}

int
audit_device_record(struct audit *a, const char *device_id,
    struct audit_device_record *rec)
{
	int r = KL_ERR_INTERNAL, rc, locked = 0, badcol;
	sqlite3_stmt *st = NULL;
	struct audit_val v[AUDIT_NCOLS];
	struct audit_device_record *d = NULL;
	const char *step, *outcome;
	int terminal;

	if (a == NULL || device_id == NULL || rec == NULL)
		return KL_ERR_INVALID;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return KL_ERR_NOMEM;
	if ((r = audit_lock(a)) != 0)
		goto out;
	locked = 1;
	/*
	 * One statement, so one snapshot.  The attempt starts at the newest
	 * identify row naming the device; rows of other slots that carry the
	 * same ID meanwhile (a duplicate being refused) are not its rows.
	 */
	if ((r = audit_prepare_device(a,
	    "WITH start(sid, sslot) AS (SELECT id, slot FROM events"
	    "  WHERE device_id = ?1 AND step = 'identify'"
	    "  ORDER BY id DESC LIMIT 1),"
	    " n(attempts) AS (SELECT count(*) FROM events"
	    "  WHERE device_id = ?1 AND step = 'identify')"
	    " SELECT " AUDIT_COLS_SQL ", attempts FROM events, start, n"
	    " WHERE device_id = ?1 AND id >= sid AND slot = sslot"
	    " ORDER BY id", "prepare device record", device_id, &st)) != 0)
		goto out;
	snprintf(d->outcome, sizeof(d->outcome), "in_progress");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
			goto out;
		if (d->rows == 0) {
			d->first_id = v[C_ID].i;
			d->slot = v[C_SLOT].i;
			d->attempts = sqlite3_column_int64(st, AUDIT_NCOLS);
			if ((r = audit_rec_copy(d->device_id,
			    sizeof(d->device_id), &v[C_DEVICE_ID], 0)) != 0 ||
			    (r = audit_rec_copy(d->first_time,
			    sizeof(d->first_time), &v[C_TIME], 0)) != 0)
				goto out;
		}
		d->rows++;
		d->last_id = v[C_ID].i;
		if ((r = audit_rec_copy(d->last_time, sizeof(d->last_time),
		    &v[C_TIME], 0)) != 0 ||
		    (r = audit_rec_copy(d->last_step, sizeof(d->last_step),
		    &v[C_STEP], 0)) != 0 ||
		    (r = audit_rec_copy(d->station, sizeof(d->station),
		    &v[C_STATION], 0)) != 0 ||
		    (r = audit_rec_copy(d->operator_name,
		    sizeof(d->operator_name), &v[C_OPERATOR], 0)) != 0 ||
		    (r = audit_rec_copy(d->board_serial,
		    sizeof(d->board_serial), &v[C_BOARD_SERIAL], 0)) != 0 ||
		    (r = audit_rec_copy(d->key_fpr, sizeof(d->key_fpr),
		    &v[C_KEY_FPR], 0)) != 0 ||
		    (r = audit_rec_copy(d->cert_serial, sizeof(d->cert_serial),
		    &v[C_CERT_SERIAL], 0)) != 0 ||
		    (r = audit_rec_copy(d->cert_fpr, sizeof(d->cert_fpr),
		    &v[C_CERT_FPR], 0)) != 0 ||
		    (r = audit_rec_copy(d->ca, sizeof(d->ca), &v[C_CA], 0)) != 0)
			goto out;
		/* The newest terminal row decides the outcome. */
		step = audit_val_text(&v[C_STEP]);
		outcome = audit_val_text(&v[C_OUTCOME]);
		if (outcome == NULL)
			continue;
		terminal = (step != NULL && strcmp(step, "done") == 0 &&
		    strcmp(outcome, "passed") == 0) ||
		    (step != NULL && strcmp(step, "done") == 0 &&
		    strcmp(outcome, "already") == 0) ||
		    strcmp(outcome, "failed") == 0 ||
		    strcmp(outcome, "refused") == 0;
		if (!terminal)
			continue;
		snprintf(d->outcome, sizeof(d->outcome), "%s", outcome);
		d->error[0] = '\0';
		(void)audit_rec_copy(d->error, sizeof(d->error), &v[C_ERROR], 1);
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "device record", rc);
		goto out;
	}
	if (d->rows == 0) {
		r = KL_ERR_NOT_FOUND;
		goto out;
	}
	memcpy(rec, d, sizeof(*rec));
	r = 0;
 out:
	audit_release(st);
	if (locked)
		audit_unlock(a);
	free(d);
	return r;
}

/* ---- device state for the duplicate check and crash recovery */

static int
audit_step_is(const struct audit_val *step, const struct audit_val *outcome,
    const char *s, const char *o)
{
	return !step->null && !outcome->null && step->n == strlen(s) &&
	    memcmp(step->p, s, step->n) == 0 && outcome->n == strlen(o) &&
	    memcmp(outcome->p, o, outcome->n) == 0;
}

/* Copy what a row says of a device's credentials into p; a NULL column
 * keeps the value an earlier row of the same attempt gave. */
static int
audit_prov_copy(struct audit_prov *p, const struct audit_val v[AUDIT_NCOLS])
{
	int r;

	p->row_id = v[C_ID].i;
	p->slot = v[C_SLOT].i;
	if ((r = audit_rec_copy(p->station, sizeof(p->station),
	    &v[C_STATION], 1)) != 0 ||
	    (r = audit_rec_copy(p->time, sizeof(p->time), &v[C_TIME], 1)) ||
	    (r = audit_rec_copy(p->board_serial, sizeof(p->board_serial),
	    &v[C_BOARD_SERIAL], 1)) ||
	    (r = audit_rec_copy(p->key_fpr, sizeof(p->key_fpr),
	    &v[C_KEY_FPR], 0)) ||
	    (r = audit_rec_copy(p->cert_serial, sizeof(p->cert_serial),
	    &v[C_CERT_SERIAL], 0)) ||
	    (r = audit_rec_copy(p->cert_fpr, sizeof(p->cert_fpr),
	    &v[C_CERT_FPR], 0)))
		return r;
	return 0;
}

/* One attempt at a device, from its identify row on: the rows of the same
 * station and slot that follow it. */
struct audit_att {
	int used;
	int null_station;
	char station[AUDIT_REC_TEXT];
	int64_t slot;
	int64_t identify_id;
	int ca_req, commit_req, write_ok, clear_ok, passed, failed, final;
	int recov_prov, recov_notprov;
	struct audit_prov rec;
};

/* Attempts of one device that can be open at once (one per station and
 * slot); more evicts the oldest, which is then judged as it stands. */
#define AUDIT_ATT_MAX 16

/* What an attempt that ended (or stopped) as it stands says. */
static const char *
audit_att_doubt(const struct audit_att *t)
{
	/* A board found holding an earlier attempt's credentials took them
	 * as committed. */
	int reached = t->ca_req || t->recov_prov;
	int committed = t->write_ok || t->recov_prov;

	if (reached && !t->final)
		return committed ? "verify" : t->commit_req ? "commit" : "ca";
	if (t->commit_req && t->failed && !committed && !t->clear_ok)
		return "commit";
	if (committed && t->failed && !t->clear_ok)
		return "clear";
	return NULL;
}

struct audit_judge {
	const struct audit_att *doubt;	/* newest attempt in doubt */
	struct audit_att doubt_copy;
	const char *doubt_step;
	int64_t newest_pass;	/* identify id of the newest passed attempt */
	int64_t newest_notprov;	/* ... of the newest "recover not_provisioned" */
};

static void
audit_att_close(struct audit_judge *j, struct audit_att *t)
{
	const char *d;

	if (!t->used)
		return;
	if (t->passed && t->identify_id > j->newest_pass)
		j->newest_pass = t->identify_id;
	if (t->recov_notprov && t->identify_id > j->newest_notprov)
		j->newest_notprov = t->identify_id;
	d = audit_att_doubt(t);
	if (d != NULL && (j->doubt == NULL ||
	    t->identify_id > j->doubt_copy.identify_id)) {
		j->doubt_copy = *t;
		j->doubt = &j->doubt_copy;
		j->doubt_step = d;
	}
	t->used = 0;
}

static int
audit_att_same(const struct audit_att *t, const struct audit_val v[AUDIT_NCOLS])
{
	const struct audit_val *st = &v[C_STATION];

	if (!t->used || t->slot != v[C_SLOT].i || t->null_station != st->null)
		return 0;
	return st->null || (strlen(t->station) == st->n &&
	    memcmp(t->station, st->p, st->n) == 0);
}

int
audit_device_state(struct audit *a, const char *device_id, int64_t before_id,
    struct audit_device_state *out)
{
	struct audit_device_state *s = NULL;
	struct audit_att *att = NULL, *t;
	struct audit_judge *j = NULL;
	struct audit_val v[AUDIT_NCOLS];
	sqlite3_stmt *st = NULL;
	sqlite3 *db;
	int r = KL_ERR_INTERNAL, rc, locked = 0, badcol, i, oldest;
	const struct audit_val *step, *outcome;

	if (a == NULL || device_id == NULL || out == NULL || before_id <= 0)
		return KL_ERR_INVALID;
	if ((s = calloc(1, sizeof(*s))) == NULL ||
	    (att = calloc(AUDIT_ATT_MAX, sizeof(*att))) == NULL ||
	    (j = calloc(1, sizeof(*j))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if ((db = audit_rd_lock(a)) == NULL) {
		r = KL_ERR_INTERNAL;
		goto out;
	}
	locked = 1;
	if ((r = audit_rd_cached(a, "SELECT " AUDIT_COLS_SQL
	    " FROM events WHERE device_id = ?1 AND id < ?2 ORDER BY id",
	    "prepare device state", &st)) != 0)
		goto out;
	if ((rc = sqlite3_bind_text(st, 1, device_id, -1, SQLITE_STATIC)) !=
	    SQLITE_OK || (rc = sqlite3_bind_int64(st, 2, before_id)) !=
	    SQLITE_OK) {
		r = audit_dberr(db, "bind", rc);
		goto out;
	}
	/*
	 * One statement, one snapshot.  Attempts are told apart by station
	 * and slot, so a board refused in another slot (or on another
	 * station sharing the log) while this one was being provisioned
	 * neither ends nor hides it.
	 */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
			goto out;
		step = &v[C_STEP];
		outcome = &v[C_OUTCOME];
		t = NULL;
		for (i = 0; i < AUDIT_ATT_MAX; i++)
			if (audit_att_same(&att[i], v))
				t = &att[i];
		if (audit_step_is(step, outcome, "identify", "ok")) {
			if (t == NULL) {
				oldest = 0;
				for (i = 0; i < AUDIT_ATT_MAX; i++) {
					if (!att[i].used) {
						oldest = i;
						break;
					}
					if (att[i].identify_id <
					    att[oldest].identify_id)
						oldest = i;
				}
				t = &att[oldest];
			}
			audit_att_close(j, t);
			memset(t, 0, sizeof(*t));
			t->used = 1;
			t->slot = v[C_SLOT].i;
			t->identify_id = v[C_ID].i;
			t->null_station = v[C_STATION].null;
			if ((r = audit_rec_copy(t->station, sizeof(t->station),
			    &v[C_STATION], 1)) != 0 ||
			    (r = audit_prov_copy(&t->rec, v)) != 0)
				goto out;
		} else if (t != NULL) {
			if ((r = audit_prov_copy(&t->rec, v)) != 0)
				goto out;
			if (audit_step_is(step, outcome, "ca", "requested"))
				t->ca_req = 1;
			else if (audit_step_is(step, outcome, "commit",
			    "requested"))
				t->commit_req = 1;
			else if (audit_step_is(step, outcome, "write", "ok"))
				t->write_ok = 1;
			else if (audit_step_is(step, outcome, "clear", "ok"))
				t->clear_ok = 1;
			else if (audit_step_is(step, outcome, "recover",
			    "provisioned"))
				t->recov_prov = 1;
			else if (audit_step_is(step, outcome, "recover",
			    "not_provisioned"))
				t->recov_notprov = 1;
			if (audit_step_is(step, outcome, "done", "passed") ||
			    audit_step_is(step, outcome, "done", "already"))
				t->passed = t->final = 1;
			else if (!outcome->null && ((outcome->n == 6 &&
			    memcmp(outcome->p, "failed", 6) == 0) ||
			    (outcome->n == 7 && memcmp(outcome->p, "refused",
			    7) == 0)))
				t->final = t->failed = 1;
		}
		/* Not "done already": it repeats an earlier record, whose
		 * station and time are the ones to show. */
		if (audit_step_is(step, outcome, "done", "passed") ||
		    audit_step_is(step, outcome, "write", "ok") ||
		    audit_step_is(step, outcome, "recover", "provisioned")) {
			memset(&s->prov, 0, sizeof(s->prov));
			if ((r = audit_prov_copy(&s->prov, v)) != 0)
				goto out;
			s->provisioned = 1;
			s->prov_passed = step->n == 4;	/* "done" */
		}
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(db, "device state", rc);
		goto out;
	}
	for (i = 0; i < AUDIT_ATT_MAX; i++)
		audit_att_close(j, &att[i]);
	/*
	 * The newest attempt in doubt stands until a later attempt passed,
	 * or a later one recorded "recover not_provisioned": the station
	 * writes that only when the set is on no board (the doubt was at
	 * "ca", or the same board came back to the same slot without it).
	 * A later attempt that failed (a clone that could not prove the key
	 * it claimed) or went on by re-provisioning ("recover elsewhere")
	 * settles nothing by itself.
	 */
	if (j->doubt != NULL && j->doubt->identify_id > j->newest_pass &&
	    j->newest_notprov < j->doubt->identify_id) {
		snprintf(s->doubt_step, sizeof(s->doubt_step), "%s",
		    j->doubt_step);
		s->doubt = j->doubt->rec;
	}
	memcpy(out, s, sizeof(*out));
	r = 0;
 out:
	audit_release(st);
	if (locked)
		audit_rd_unlock(a);
	free(j);
	free(att);
	free(s);
	return r;
}

int
audit_in_doubt(struct audit *a, audit_doubt_fn fn, void *arg, int64_t *more)
{
	struct audit_device_state *s = NULL;
	char (*ids)[AUDIT_REC_ID] = NULL;
	sqlite3_stmt *st = NULL;
	int64_t extra = 0;
	size_t n = 0, cap = 0, i;
	int r = KL_ERR_INTERNAL, rc, locked = 0, listed = 0;
	const char *id;
	void *grown;

	if (a == NULL || fn == NULL)
		return KL_ERR_INVALID;
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		r = KL_ERR_NOMEM;
		goto out;
	}
	if ((r = audit_lock(a)) != 0)
		goto out;
	locked = 1;
	/*
	 * Candidates, one pass over the log: devices with a CA request (or a
	 * recovered board) newer than their newest pass.  Passed devices,
	 * nearly all of them, drop out here; audit_device_state() decides
	 * for the rest, and the cap applies to what it finds in doubt.
	 */
	rc = sqlite3_prepare_v2(a->db,
	    "SELECT device_id, max(CASE WHEN (step = 'ca' AND"
	    "  outcome = 'requested') OR (step = 'recover' AND"
	    "  outcome = 'provisioned') THEN id END) AS req"
	    " FROM events WHERE device_id IS NOT NULL GROUP BY device_id"
	    " HAVING req > coalesce(max(CASE WHEN step = 'done' AND"
	    "  outcome IN ('passed', 'already') THEN id END), 0)"
	    " ORDER BY req", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare in doubt", rc);
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		id = (const char *)sqlite3_column_text(st, 0);
		if (id == NULL ||
		    (size_t)sqlite3_column_bytes(st, 0) >= AUDIT_REC_ID)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			if ((grown = realloc(ids, cap * sizeof(*ids))) == NULL) {
				r = KL_ERR_NOMEM;
				goto out;
			}
			ids = grown;
		}
		snprintf(ids[n++], AUDIT_REC_ID, "%s", id);
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "in doubt", rc);
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	audit_unlock(a);
	locked = 0;
	for (i = 0; i < n; i++) {
		if ((r = audit_device_state(a, ids[i], INT64_MAX, s)) != 0)
			goto out;
		if (s->doubt_step[0] == '\0')
			continue;
		if (listed == AUDIT_DOUBT_MAX) {
			extra++;
			continue;
		}
		listed++;
		if ((r = fn(arg, ids[i], s)) != 0)
			goto out;
	}
	if (more != NULL)
		*more = extra;
	r = 0;
 out:
	sqlite3_finalize(st);
	if (locked)
		audit_unlock(a);
	free(ids);
	free(s);
	return r;
}

int
audit_key_owner(struct audit *a, const char *key_fpr, const char *device_id,
    int *found, char *other_id, size_t other_idsz, struct audit_prov *rec)
{
	struct audit_val v[AUDIT_NCOLS];
	sqlite3_stmt *st = NULL;
	sqlite3 *db;
	int r = KL_ERR_INTERNAL, rc, badcol, locked = 0;

	if (a == NULL || key_fpr == NULL || device_id == NULL ||
	    found == NULL || other_id == NULL || other_idsz == 0 ||
	    rec == NULL)
		return KL_ERR_INVALID;
	if ((db = audit_rd_lock(a)) == NULL)
		return KL_ERR_INTERNAL;
	locked = 1;
	/* A CA request or an issued certificate for this key, under any
	 * other device ID. */
	if ((r = audit_rd_cached(a, "SELECT " AUDIT_COLS_SQL
	    " FROM events WHERE key_fpr = ?1 AND device_id IS NOT NULL"
	    " AND device_id != ?2 AND ((step = 'ca' AND outcome = 'requested')"
	    " OR step = 'issued') ORDER BY id DESC LIMIT 1",
	    "prepare key owner", &st)) != 0)
		goto out;
	if ((rc = sqlite3_bind_text(st, 1, key_fpr, -1, SQLITE_STATIC)) !=
	    SQLITE_OK ||
	    (rc = sqlite3_bind_text(st, 2, device_id, -1, SQLITE_STATIC)) !=
	    SQLITE_OK) {
		r = audit_dberr(db, "bind", rc);
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*found = 0;
		r = 0;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = audit_dberr(db, "key owner", rc);
		goto out;
	}
	if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
		goto out;
	memset(rec, 0, sizeof(*rec));
	if ((r = audit_prov_copy(rec, v)) != 0 ||
	    (r = audit_rec_copy(other_id, other_idsz, &v[C_DEVICE_ID], 1)) != 0)
		goto out;
	*found = 1;
	r = 0;
 out:
	audit_release(st);
	if (locked)
		audit_rd_unlock(a);
	return r;
}

/* ---- verify */

static void
audit_why(char *why, size_t whysz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
audit_why(char *why, size_t whysz, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whysz == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whysz, fmt, ap);
	va_end(ap);
}

int
audit_verify_head(struct audit *a, int64_t *rows, int64_t *bad_id,
    char *why, size_t whysz, char *head, size_t headsz)
{
	int r = KL_ERR_INTERNAL, rc, badcol;
	sqlite3_stmt *st = NULL;
	struct audit_val v[AUDIT_NCOLS];
	char prev[AUDIT_HASH_HEX + 1], hash[AUDIT_HASH_HEX + 1];
	int64_t expect = 1;

	if (a == NULL || (head != NULL && headsz < AUDIT_HASH_HEX + 1))
		return KL_ERR_INVALID;
	memcpy(prev, audit_zero_hash, sizeof(prev));
	if ((r = audit_lock(a)) != 0)
		return r;
	/* One statement is one read snapshot: appends from other processes
	 * during the walk are simply not seen. */
	rc = sqlite3_prepare_v2(a->db, "SELECT " AUDIT_COLS_SQL
	    " FROM events ORDER BY id", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare verify", rc);
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
			goto out;
		if (badcol == C_ID) {
			audit_why(why, whysz, "the row after %" PRId64 " has a "
			    "non-integer id", expect - 1);
			goto chain;
		}
		if (v[C_ID].i != expect) {
			if (v[C_ID].i > expect)
				audit_why(why, whysz, "row missing (ids jump "
				    "from %" PRId64 " to %" PRId64 ")",
				    expect - 1, v[C_ID].i);
			else
				audit_why(why, whysz, "id out of sequence (found "
				    "%" PRId64 ")", v[C_ID].i);
			goto chain;
		}
		if (badcol >= 0) {
			audit_why(why, whysz, "column %s holds a value of the "
			    "wrong type", audit_cols[badcol].name);
			goto chain;
		}
		if (v[C_PREV_HASH].null || v[C_PREV_HASH].n != AUDIT_HASH_HEX ||
		    memcmp(v[C_PREV_HASH].p, prev, AUDIT_HASH_HEX) != 0) {
			if (expect == 1)
				audit_why(why, whysz, "prev_hash is not the chain "
				    "start (64 zeros)");
			else
				audit_why(why, whysz, "prev_hash does not match "
				    "the row hash of row %" PRId64, expect - 1);
			goto chain;
		}
		if ((r = audit_row_hash(v, hash)) != 0)
			goto out;
		if (v[C_ROW_HASH].null || v[C_ROW_HASH].n != AUDIT_HASH_HEX ||
		    memcmp(v[C_ROW_HASH].p, hash, AUDIT_HASH_HEX) != 0) {
			audit_why(why, whysz, "row hash does not match its "
			    "contents");
			goto chain;
		}
		memcpy(prev, hash, sizeof(prev));
		expect++;
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "verify", rc);
		goto out;
	}
	if (rows != NULL)
		*rows = expect - 1;
	if (head != NULL)
		memcpy(head, prev, sizeof(prev));
	r = 0;
	goto out;
 chain:
	/* Every jump to chain is about the row expected next. */
	if (bad_id != NULL)
		*bad_id = expect;
	r = KL_ERR_AUDIT_CHAIN;
 out:
	sqlite3_finalize(st);
	audit_unlock(a);
	return r;
}

int
audit_verify(struct audit *a, int64_t *rows, int64_t *bad_id, char *why,
    size_t whysz)
{
	return audit_verify_head(a, rows, bad_id, why, whysz, NULL, 0);
}

/* ---- export */

/*
 * RFC 4180: quote when the field holds a comma, quote, CR or LF.  NULL is
 * an empty field and "" a quoted empty one, so a reader that cares can
 * still tell them apart.
 *
 * Text starting with =, +, -, @, TAB or CR is a formula to a spreadsheet
 * (a board chooses its serial): it gets a leading ' (OWASP, CSV
 * injection), which a spreadsheet shows as text.  Text starting with '
 * gets one too, so a reader recovers the stored bytes by dropping one
 * leading ' from any text field that has one.  Integers are never
 * prefixed: a number is not a formula.
 */
static int
audit_csv_field(FILE *out, const struct audit_val *v)
{
	static const char formula[] = "=+-@\t\r'";
	size_t i;
	int quote = v->n == 0, tick;

	if (v->null)
		return 0;
	tick = !v->sqlint && v->n > 0 &&
	    memchr(formula, v->p[0], sizeof(formula) - 1) != NULL;
	for (i = 0; i < v->n && !quote; i++)
		quote = v->p[i] == ',' || v->p[i] == '"' || v->p[i] == '\r' ||
		    v->p[i] == '\n';
	if (!quote) {
		if (tick && fputc('\'', out) == EOF)
			return KL_ERR_IO;
		return fwrite(v->p, 1, v->n, out) == v->n ? 0 : KL_ERR_IO;
	}
	if (fputc('"', out) == EOF || (tick && fputc('\'', out) == EOF))
		return KL_ERR_IO;
	for (i = 0; i < v->n; i++) {
		if (v->p[i] == '"' && fputc('"', out) == EOF)
			return KL_ERR_IO;
		if (fputc((unsigned char)v->p[i], out) == EOF)
			return KL_ERR_IO;
	}
	return fputc('"', out) == EOF ? KL_ERR_IO : 0;
}

/* Length of the well-formed UTF-8 sequence at s, 0 when there is none. */
static size_t
audit_utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (cp >= 0xd800 && cp <= 0xdfff) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/*
 * A JSON string for text that may not be UTF-8 (board serials come off a
 * wire): ill-formed bytes become U+FFFD, so the JSON stays parseable, and
 * the exact bytes remain in the database and the CSV export (less its ').
 */
static json_t *
audit_json_text(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	unsigned char *fix = NULL;
	json_t *j;
	size_t i = 0, o = 0, k;

	if ((j = json_stringn(p, n)) != NULL)
		return j;
	if (n > SIZE_MAX / 3 || (fix = malloc(n * 3 + 1)) == NULL)
		return NULL;
	while (i < n) {
		if ((k = audit_utf8_seq(s + i, n - i)) == 0) {
			memcpy(fix + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		} else {
			memcpy(fix + o, s + i, k);
			o += k;
			i += k;
		}
	}
	j = json_stringn((const char *)fix, o);
	free(fix);
	return j;
}

json_t *
audit_row_json(const struct audit_row *row)
{
	const struct audit_val *v = row->vals;
	json_t *obj, *val;
	int c;

	/* Column by column, as SQLite holds them. */
	if (v == NULL || (obj = json_object()) == NULL)
		return NULL;
	for (c = 0; c < AUDIT_NCOLS; c++) {
		if (v[c].null)
			val = json_null();
		else if (v[c].sqlint)
			val = json_integer(v[c].i);
		else
			val = audit_json_text(v[c].p, v[c].n);
		if (json_object_set_new(obj, audit_cols[c].name, val) != 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

static int
audit_json_row(FILE *out, const struct audit_val v[AUDIT_NCOLS], int first)
{
	struct audit_row row;
	json_t *obj;
	int r;

	audit_row_from_vals(&row, v);
	if ((obj = audit_row_json(&row)) == NULL)
		return KL_ERR_NOMEM;
	r = 0;
	if (fputs(first ? "\n" : ",\n", out) == EOF ||
	    json_dumpf(obj, out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0)
		r = KL_ERR_IO;
	json_decref(obj);
	return r;
}

int
audit_export(struct audit *a, FILE *out, enum audit_format fmt)
{
	int r = KL_ERR_INTERNAL, rc, c, badcol, first = 1;
	sqlite3_stmt *st = NULL;
	struct audit_val v[AUDIT_NCOLS];

	if (a == NULL || out == NULL ||
	    (fmt != AUDIT_FMT_CSV && fmt != AUDIT_FMT_JSON))
		return KL_ERR_INVALID;
	if ((r = audit_lock(a)) != 0)
		return r;
	rc = sqlite3_prepare_v2(a->db, "SELECT " AUDIT_COLS_SQL
	    " FROM events ORDER BY id", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare export", rc);
		goto out;
	}
	if (fmt == AUDIT_FMT_CSV) {
		for (c = 0; c < AUDIT_NCOLS; c++)
			if (fprintf(out, "%s%s", c ? "," : "",
			    audit_cols[c].name) < 0) {
				r = KL_ERR_IO;
				goto out;
			}
		if (fputs("\r\n", out) == EOF) {
			r = KL_ERR_IO;
			goto out;
		}
	} else if (fputc('[', out) == EOF) {
		r = KL_ERR_IO;
		goto out;
	}
	/* Streamed row by row: memory stays flat however long the log. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if ((r = audit_vals_from_stmt(st, v, &badcol)) != 0)
			goto out;
		if (fmt == AUDIT_FMT_JSON) {
			if ((r = audit_json_row(out, v, first)) != 0)
				goto out;
			first = 0;
			continue;
		}
		for (c = 0; c < AUDIT_NCOLS; c++) {
			if (c > 0 && fputc(',', out) == EOF) {
				r = KL_ERR_IO;
				goto out;
			}
			if ((r = audit_csv_field(out, &v[c])) != 0)
				goto out;
		}
		if (fputs("\r\n", out) == EOF) {
			r = KL_ERR_IO;
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "export", rc);
		goto out;
	}
	if (fmt == AUDIT_FMT_JSON && fputs("\n]\n", out) == EOF) {
		r = KL_ERR_IO;
		goto out;
	}
	if (fflush(out) != 0 || ferror(out)) {
		r = KL_ERR_IO;
		goto out;
	}
	r = 0;
 out:
	if (r == KL_ERR_IO)
		log_error("audit: export write failed");
	sqlite3_finalize(st);
	audit_unlock(a);
	return r;
}

/* ---- signed checkpoints (docs/audit.md, "Checkpoints") */

/* First netstring of every checkpoint message: a future encoding gets a
 * new tag, as the row hash does. */
#define AUDIT_CKPT_TAG "keyline-checkpoint-v1"
/* A DER ECDSA P-256 signature is ~72 bytes, RSA-4096 512. */
#define AUDIT_CKPT_SIG_MAX 1024
#define AUDIT_CKPT_REASON_MAX 15

int
audit_checkpoint_setup(struct audit *a, const char *station,
    int64_t checkpoint_every, audit_sign_fn fn, void *arg)
{
	if (a == NULL || station == NULL || fn == NULL ||
	    checkpoint_every < 0 ||
	    strlen(station) >= sizeof(a->ckpt_station))
		return KL_ERR_INVALID;
	snprintf(a->ckpt_station, sizeof(a->ckpt_station), "%s", station);
	a->ckpt_every = checkpoint_every;
	a->ckpt_arg = arg;
	a->ckpt_sign = fn;
	return 0;
}

/* One netstring into buf at *o (size bufsz).  0 or KL_ERR_TOO_BIG. */
static int
audit_ckpt_ns(uint8_t *buf, size_t bufsz, size_t *o, const char *s)
{
	size_t n = strlen(s);
	int k;

	k = snprintf((char *)buf + *o, bufsz - *o, "%zu:", n);
	if (k < 0 || (size_t)k >= bufsz - *o || n + 1 > bufsz - *o - (size_t)k)
		return KL_ERR_TOO_BIG;
	*o += (size_t)k;
	memcpy(buf + *o, s, n);
	*o += n;
	buf[(*o)++] = ',';
	return 0;
}

int
audit_checkpoint_message(const char *station, const char *time,
    const char *reason, int64_t row_id, const char *row_hash, uint8_t **msg,
    size_t *len)
{
	const char *parts[6];
	char num[32];
	uint8_t *buf = NULL;
	size_t bufsz = 64, o = 0, i;
	int r = KL_ERR_INTERNAL;

	if (station == NULL || time == NULL || reason == NULL ||
	    row_hash == NULL || msg == NULL || len == NULL || row_id < 0)
		return KL_ERR_INVALID;
	snprintf(num, sizeof(num), "%" PRId64, row_id);
	parts[0] = AUDIT_CKPT_TAG;
	parts[1] = station;
	parts[2] = time;
	parts[3] = reason;
	parts[4] = num;
	parts[5] = row_hash;
	for (i = 0; i < 6; i++) {
		if (strlen(parts[i]) > AUDIT_FIELD_MAX)
			return KL_ERR_TOO_BIG;
		bufsz += strlen(parts[i]) + 24;
	}
	if ((buf = malloc(bufsz)) == NULL)
		return KL_ERR_NOMEM;
	for (i = 0; i < 6; i++)
		if ((r = audit_ckpt_ns(buf, bufsz, &o, parts[i])) != 0)
			goto out;
	*msg = buf;
	*len = o;
	buf = NULL;
	r = 0;
 out:
	free(buf);
	return r;
}

int
audit_checkpoint(struct audit *a, const char *reason, int64_t *id)
{
	int r = KL_ERR_INTERNAL, rc;
	sqlite3_stmt *st = NULL;
	char now[AUDIT_TIME_LEN + 1], head[AUDIT_HASH_HEX + 1];
	uint8_t *msg = NULL, *sig = NULL;
	size_t msg_len = 0, sig_len = 0;
	int64_t last = 0;

	if (a == NULL || reason == NULL || a->ckpt_sign == NULL ||
	    strlen(reason) > AUDIT_CKPT_REASON_MAX)
		return KL_ERR_INVALID;
	if ((r = audit_lock(a)) != 0)
		return r;
	rc = sqlite3_prepare_v2(a->db, "INSERT INTO checkpoints (time, station,"
	    " reason, row_id, row_hash, signature) VALUES (?1, ?2, ?3, ?4, ?5,"
	    " ?6)", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare checkpoint", rc);
		goto out;
	}
	/* The write lock first, as an append takes it: the head signed is
	 * the head, and no row can slip in between read and insert. */
	if ((r = audit_exec(a->db, "BEGIN IMMEDIATE", "begin checkpoint")) != 0)
		goto out;
	if ((r = audit_read_head(a, &last, head)) != 0)
		goto out;
	if ((r = audit_now(now)) != 0)
		goto out;
	if ((r = audit_checkpoint_message(a->ckpt_station, now, reason, last,
	    head, &msg, &msg_len)) != 0)
		goto out;
	if ((r = a->ckpt_sign(a->ckpt_arg, msg, msg_len, &sig, &sig_len)) != 0) {
		audit_errf("checkpoint of row %" PRId64 ": signing failed: %s",
		    last, kl_strerror(r));
		log_error("audit: %s", audit_errtext);
		goto out;
	}
	if (sig == NULL || sig_len == 0 || sig_len > AUDIT_CKPT_SIG_MAX) {
		r = KL_ERR_CRYPTO;
		goto out;
	}
	if ((rc = sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC)) ==
	    SQLITE_OK &&
	    (rc = sqlite3_bind_text(st, 2, a->ckpt_station, -1,
	    SQLITE_STATIC)) == SQLITE_OK &&
	    (rc = sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC)) ==
	    SQLITE_OK &&
	    (rc = sqlite3_bind_int64(st, 4, last)) == SQLITE_OK &&
	    (rc = sqlite3_bind_text(st, 5, head, -1, SQLITE_STATIC)) ==
	    SQLITE_OK)
		rc = sqlite3_bind_blob(st, 6, sig, (int)sig_len, SQLITE_STATIC);
	if (rc != SQLITE_OK) {
		r = audit_dberr(a->db, "bind", rc);
		goto out;
	}
	if ((rc = sqlite3_step(st)) != SQLITE_DONE) {
		r = audit_dberr(a->db, "insert checkpoint", rc);
		goto out;
	}
	if (id != NULL)
		*id = sqlite3_last_insert_rowid(a->db);
	if ((r = audit_exec(a->db, "COMMIT", "commit checkpoint")) != 0)
		goto out;
	log_info("audit: checkpoint (%s) signed at row %" PRId64, reason, last);
	r = 0;
 out:
	sqlite3_finalize(st);
	if (r != 0)
		audit_rollback(a->db);
	audit_unlock(a);
	free(msg);
	free(sig);
	return r;
}

/* Whether the file has a checkpoints table (schema 3, or a newer one). */
static int
audit_ckpt_table(sqlite3 *db, int *present)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE"
	    " type = 'table' AND name = 'checkpoints'", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		*present = sqlite3_column_int(st, 0) > 0;
		r = 0;
	} else
		r = audit_dberr(db, "look for checkpoints", rc);
	sqlite3_finalize(st);
	return r;
}

/* Text column c of st, or NULL when it is not text of 1..max bytes. */
static const char *
audit_ckpt_text(sqlite3_stmt *st, int c, size_t max)
{
	const char *p;

	if (sqlite3_column_type(st, c) != SQLITE_TEXT)
		return NULL;
	p = (const char *)sqlite3_column_text(st, c);
	if (p == NULL || (size_t)sqlite3_column_bytes(st, c) > max ||
	    strlen(p) != (size_t)sqlite3_column_bytes(st, c))
		return NULL;
	return p;
}

/* The row_hash of events row id into hash; *found 0 when there is none. */
static int
audit_ckpt_row(sqlite3_stmt *ev, int64_t id, int *found,
    char hash[AUDIT_HASH_HEX + 1])
{
	const char *h;
	int rc;

	sqlite3_reset(ev);
	if (sqlite3_bind_int64(ev, 1, id) != SQLITE_OK)
		return KL_ERR_DB;
	rc = sqlite3_step(ev);
	if (rc == SQLITE_DONE) {
		*found = 0;
		return 0;
	}
	if (rc != SQLITE_ROW)
		return rc;
	*found = 1;
	h = audit_ckpt_text(ev, 0, AUDIT_HASH_HEX);
	snprintf(hash, AUDIT_HASH_HEX + 1, "%s", h != NULL ? h : "");
	return 0;
}

int
audit_verify_checkpoints(struct audit *a, EVP_PKEY *pub,
    struct audit_ckpt_report *rep)
{
	struct audit_ckpt_report rp;
	sqlite3_stmt *st = NULL, *ev = NULL;
	EVP_MD_CTX *md = NULL;
	const char *time, *station, *reason, *hash;
	const unsigned char *sig;
	char now_hash[AUDIT_HASH_HEX + 1];
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	int64_t cid, row;
	int r = KL_ERR_INTERNAL, rc, found, sig_len;

	if (a == NULL || pub == NULL || rep == NULL)
		return KL_ERR_INVALID;
	memset(&rp, 0, sizeof(rp));
	if ((r = audit_lock(a)) != 0)
		return r;
	/* One read transaction: the checkpoints and the rows they name come
	 * from the same snapshot. */
	if ((r = audit_exec(a->db, "BEGIN", "begin verify checkpoints")) != 0)
		goto out;
	if ((r = audit_ckpt_table(a->db, &rp.table)) != 0)
		goto out;
	if (!rp.table)
		goto done;
	if ((rc = sqlite3_prepare_v2(a->db, "SELECT id, time, station, reason,"
	    " row_id, row_hash, signature FROM checkpoints ORDER BY id", -1, &st,
	    NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(a->db, "SELECT row_hash FROM events WHERE"
	    " id = ?1", -1, &ev, NULL)) != SQLITE_OK) {
		r = audit_dberr(a->db, "prepare verify checkpoints", rc);
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		cid = sqlite3_column_int64(st, 0);
		rp.bad_id = cid;
		time = audit_ckpt_text(st, 1, 31);
		station = audit_ckpt_text(st, 2, sizeof(rp.newest_station) - 1);
		reason = audit_ckpt_text(st, 3, AUDIT_CKPT_REASON_MAX);
		hash = audit_ckpt_text(st, 5, AUDIT_HASH_HEX);
		row = sqlite3_column_int64(st, 4);
		sig = sqlite3_column_blob(st, 6);
		sig_len = sqlite3_column_bytes(st, 6);
		if (sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
		    sqlite3_column_type(st, 4) != SQLITE_INTEGER || row < 0 ||
		    time == NULL || station == NULL || reason == NULL ||
		    hash == NULL || strlen(hash) != AUDIT_HASH_HEX ||
		    sqlite3_column_type(st, 6) != SQLITE_BLOB || sig == NULL ||
		    sig_len <= 0 || sig_len > AUDIT_CKPT_SIG_MAX) {
			audit_why(rp.why, sizeof(rp.why), "malformed checkpoint "
			    "record");
			goto bad;
		}
		free(msg);
		msg = NULL;
		if ((r = audit_checkpoint_message(station, time, reason, row,
		    hash, &msg, &msg_len)) != 0)
			goto out;
		EVP_MD_CTX_free(md);
		if ((md = EVP_MD_CTX_new()) == NULL) {
			r = KL_ERR_NOMEM;
			goto out;
		}
		if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) != 1) {
			log_openssl("audit: checkpoint verify");
			r = KL_ERR_CRYPTO;
			goto out;
		}
		if (EVP_DigestVerify(md, sig, (size_t)sig_len, msg, msg_len)
		    != 1) {
			ERR_clear_error();
			audit_why(rp.why, sizeof(rp.why), "signature does not "
			    "verify with the checkpoint certificate (row %"
			    PRId64 ", %s, %s)", row, reason, time);
			goto bad;
		}
		/* Signed: now the row it vouches for must be unchanged. */
		if (row == 0) {
			if (memcmp(hash, audit_zero_hash, AUDIT_HASH_HEX) != 0) {
				audit_why(rp.why, sizeof(rp.why), "signed an "
				    "empty log with a non-zero head");
				goto bad;
			}
		} else {
			if ((rc = audit_ckpt_row(ev, row, &found, now_hash)) !=
			    0) {
				r = audit_dberr(a->db, "verify checkpoints",
				    rc);
				goto out;
			}
			if (!found) {
				audit_why(rp.why, sizeof(rp.why), "row %" PRId64
				    " it signed (%s, %s) is gone: rows were "
				    "removed", row, reason, time);
				goto bad;
			}
			if (strcmp(now_hash, hash) != 0) {
				audit_why(rp.why, sizeof(rp.why), "row %" PRId64
				    " no longer has the hash signed at %s (%s): "
				    "the log was rewritten", row, time, reason);
				goto bad;
			}
		}
		rp.count++;
		rp.newest_id = cid;
		rp.newest_row = row;
		snprintf(rp.newest_hash, sizeof(rp.newest_hash), "%s", hash);
		snprintf(rp.newest_time, sizeof(rp.newest_time), "%s", time);
		snprintf(rp.newest_reason, sizeof(rp.newest_reason), "%s",
		    reason);
		snprintf(rp.newest_station, sizeof(rp.newest_station), "%s",
		    station);
	}
	if (rc != SQLITE_DONE) {
		r = audit_dberr(a->db, "verify checkpoints", rc);
		goto out;
	}
 done:
	rp.bad_id = 0;
	memcpy(rep, &rp, sizeof(rp));
	r = 0;
	goto out;
 bad:
	memcpy(rep, &rp, sizeof(rp));
	r = KL_ERR_AUDIT_CHAIN;
 out:
	sqlite3_finalize(st);
	sqlite3_finalize(ev);
	audit_rollback(a->db);
	audit_unlock(a);
	EVP_MD_CTX_free(md);
	free(msg);
	return r;
}

int
audit_row_hash_of(const struct audit_row *row, char *out)
{
	struct audit_val v[AUDIT_NCOLS];
	const char *text[AUDIT_NCOLS] = { NULL };
	int c;

	if (row == NULL || out == NULL)
		return KL_ERR_INVALID;
	text[C_TIME] = row->time;
	text[C_STATION] = row->station;
	text[C_OPERATOR] = row->operator_name;
	text[C_BOARD_SERIAL] = row->board_serial;
	text[C_DEVICE_ID] = row->device_id;
	text[C_STEP] = row->step;
	text[C_OUTCOME] = row->outcome;
	text[C_KEY_FPR] = row->key_fpr;
	text[C_CERT_SERIAL] = row->cert_serial;
	text[C_CERT_FPR] = row->cert_fpr;
	text[C_CA] = row->ca;
	text[C_ERROR] = row->error;
	text[C_PREV_HASH] = row->prev_hash;
	for (c = 0; c < AUDIT_NCOLS; c++) {
		if (c == C_ID || c == C_SLOT || c == C_ROW_HASH) {
			memset(&v[c], 0, sizeof(v[c]));
			v[c].sqlint = 1;
			v[c].i = c == C_ID ? row->id : row->slot;
			continue;
		}
		if (audit_text_val(&v[c], text[c]) != 0)
			return KL_ERR_TOO_BIG;
	}
	return audit_row_hash(v, out);
}
