/*
 * err.h: the one error space of Keyline.
 *
 * Every function that can fail returns 0 on success or one of these negative
 * codes.  Codes from PKCS#11, SQLite, OpenSSL, termios/errno are mapped where
 * they enter the project and the original value is logged there.  Codes are
 * never renumbered: they reach the audit log and the batch JSON output.
 */
#ifndef KL_ERR_H
#define KL_ERR_H

enum kl_err {
	KL_OK = 0,
	KL_ERR_INTERNAL = -1,	/* a bug or an impossible state */
	KL_ERR_NOMEM = -2,
	KL_ERR_INVALID = -3,	/* bad argument or malformed input */
	KL_ERR_IO = -4,		/* read/write/open failed (errno logged) */
	KL_ERR_TIMEOUT = -5,
	KL_ERR_PROTO = -6,	/* peer broke the link protocol */
	KL_ERR_CRC = -7,	/* frame checksum mismatch */
	KL_ERR_TOO_BIG = -8,	/* length over its maximum */
	KL_ERR_TRUNCATED = -9,	/* input ended early */
	KL_ERR_VERSION = -10,	/* no common protocol version */
	KL_ERR_CONFIG = -11,
	KL_ERR_HSM = -12,	/* PKCS#11 call failed (CK_RV logged) */
	KL_ERR_HSM_LOGIN = -13,
	KL_ERR_NOT_FOUND = -14,
	KL_ERR_CA = -15,	/* the CA refused or failed to issue */
	KL_ERR_CERT_INVALID = -16, /* issued certificate failed validation */
	KL_ERR_DB = -17,	/* SQLite error (code logged) */
	KL_ERR_AUDIT_CHAIN = -18, /* audit hash chain broken */
	KL_ERR_DUPLICATE = -19,	/* device ID already provisioned */
	KL_ERR_PATH = -20,	/* path refused (outside import dir, bad name) */
	KL_ERR_REMOTE = -21,	/* the board reported an error */
	KL_ERR_CLOSED = -22,	/* link closed: board gone */
	KL_ERR_CRYPTO = -23,	/* OpenSSL failure (error queue logged) */
	KL_ERR_POP = -24,	/* proof of possession failed */
	KL_ERR_MISMATCH = -25,	/* read-back hash differs */
	KL_ERR_CANCELLED = -26,
	KL_ERR_EXISTS = -27,
	KL_ERR_UNSUPPORTED = -28,
	KL_ERR_UNAVAILABLE = -29,	/* a remote service (CA) cannot be
					 * reached now; worth retrying */
	KL_ERR_DISK_FULL = -30,	/* no space left (SQLITE_FULL, ENOSPC) */
	KL_ERR_READONLY = -31,	/* file or file system not writable
				 * (read-only, permissions) */
	KL_ERR_BUSY = -32,	/* locked by another process past its wait */
	KL_ERR_CORRUPT = -33,	/* a file's contents are malformed
				 * (SQLITE_CORRUPT, SQLITE_NOTADB) */
};

/* Static text for a code; never NULL. */
const char *kl_strerror(int err);

/* Stable short name for a code ("timeout", "crc", ...) for JSON and the
 * audit log; never NULL. */
const char *kl_errname(int err);

#endif
