/* err.c: text for the project's error codes (see err.h). */
#include "common/err.h"

#include <stddef.h>

struct err_entry {
	int code;
	const char *name;
	const char *text;
};

static const struct err_entry err_table[] = {
	{ KL_OK, "ok", "success" },
	{ KL_ERR_INTERNAL, "internal", "internal error" },
	{ KL_ERR_NOMEM, "nomem", "out of memory" },
	{ KL_ERR_INVALID, "invalid", "invalid input" },
	{ KL_ERR_IO, "io", "input/output error" },
	{ KL_ERR_TIMEOUT, "timeout", "timed out" },
	{ KL_ERR_PROTO, "protocol", "link protocol violation" },
	{ KL_ERR_CRC, "crc", "frame checksum mismatch" },
	{ KL_ERR_TOO_BIG, "too_big", "length over maximum" },
	{ KL_ERR_TRUNCATED, "truncated", "input truncated" },
	{ KL_ERR_VERSION, "version", "no common protocol version" },
	{ KL_ERR_CONFIG, "config", "configuration error" },
	{ KL_ERR_HSM, "hsm", "PKCS#11 operation failed" },
	{ KL_ERR_HSM_LOGIN, "hsm_login", "PKCS#11 login failed" },
	{ KL_ERR_NOT_FOUND, "not_found", "not found" },
	{ KL_ERR_CA, "ca", "certificate authority failed" },
	{ KL_ERR_CERT_INVALID, "cert_invalid", "certificate failed validation" },
	{ KL_ERR_DB, "db", "audit database error" },
	{ KL_ERR_AUDIT_CHAIN, "audit_chain", "audit hash chain broken" },
	{ KL_ERR_DUPLICATE, "duplicate", "device already provisioned" },
	{ KL_ERR_PATH, "path", "path refused" },
	{ KL_ERR_REMOTE, "remote", "board reported an error" },
	{ KL_ERR_CLOSED, "closed", "link closed" },
	{ KL_ERR_CRYPTO, "crypto", "cryptographic operation failed" },
	{ KL_ERR_POP, "pop", "proof of possession failed" },
	{ KL_ERR_MISMATCH, "mismatch", "read-back does not match" },
	{ KL_ERR_CANCELLED, "cancelled", "cancelled" },
	{ KL_ERR_EXISTS, "exists", "already exists" },
	{ KL_ERR_UNSUPPORTED, "unsupported", "not supported" },
	{ KL_ERR_UNAVAILABLE, "unavailable", "service unavailable" },
	{ KL_ERR_DISK_FULL, "disk_full", "no space left on the device" },
	{ KL_ERR_READONLY, "read_only", "not writable" },
	{ KL_ERR_BUSY, "busy", "locked by another process" },
	{ KL_ERR_CORRUPT, "corrupt", "file is malformed" },
};

static const struct err_entry *
err_find(int code)
{
	size_t i;

	for (i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
		if (err_table[i].code == code)
			return &err_table[i];
	return NULL;
}

const char *
kl_strerror(int err)
{
	const struct err_entry *e = err_find(err);

	return e != NULL ? e->text : "unknown error";
}

const char *
kl_errname(int err)
{
	const struct err_entry *e = err_find(err);

	return e != NULL ? e->name : "unknown";
}
