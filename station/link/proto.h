/*
 * proto.h: the messages of the board link (docs/protocol.md).
 *
 * A frame's payload is a sequence of TLV fields: tag (1 byte), length
 * (4 bytes, big-endian), value.  Strings are not NUL-terminated on the wire
 * and may not contain NUL.  Unknown tags are ignored (forward
 * compatibility); a field that runs past the payload makes the whole
 * payload invalid.  proto_* readers validate the whole TLV sequence before
 * looking anything up.
 *
 * The station sends requests (flags 0); the board answers each with a frame
 * of the same type and seq and FRAME_F_RESPONSE, or FRAME_F_RESPONSE |
 * FRAME_F_ERROR with PT_ERR_CODE and PT_ERR_MSG.
 */
#ifndef KL_PROTO_H
#define KL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define PROTO_VERSION_MIN 1
#define PROTO_VERSION_MAX 2	/* 2: docs/protocol.md "Version 2" */
#define PROTO_MAX_STR 256	/* longest string field accepted */

enum proto_type {
	PROTO_HELLO = 0x01,	/* req: VERSION_MIN, VERSION_MAX
				 * resp: VERSION, SERIAL, MODEL, AGENT_VERSION,
				 *       HSM_LABEL, HSM_MANUFACTURER, HSM_MODEL,
				 *       HSM_SERIAL, MAX_PAYLOAD */
	PROTO_KEYGEN = 0x02,	/* req: KEY_TYPE, KEY_ID, KEY_LABEL
				 * resp: SPKI (DER SubjectPublicKeyInfo) */
	PROTO_CSR = 0x03,	/* req: KEY_ID, SUBJECT_CN   resp: CSR (DER) */
	PROTO_PUT_FILE = 0x04,	/* req: FILE_NAME, FILE_MODE, FILE_DATA
				 * stages the file (temp file, fsync)
				 * resp: SHA256 of what was staged */
	PROTO_COMMIT = 0x05,	/* req: -  renames every staged file into place,
				 * fsyncs the directory.  resp: - */
	PROTO_ABORT = 0x06,	/* req: -  discards staged files. resp: - */
	PROTO_FILE_HASH = 0x07,	/* req: FILE_NAME  resp: SHA256, FILE_SIZE
				 * of the file in place (read back) */
	PROTO_PUT_CERT = 0x08,	/* req: KEY_ID, KEY_LABEL, CERT (DER)
				 * stores a certificate object in the token
				 * resp: SHA256 of the DER read back from the
				 *       token */
	PROTO_SIGN = 0x09,	/* req: KEY_ID, CHALLENGE (<= 64 bytes)
				 * resp: SIGNATURE: ECDSA (DER) or RSA
				 *       PKCS#1 v1.5, over SHA-256(challenge) */
	PROTO_UPTANE_KEYGEN = 0x0a, /* req: KEY_ID, KEY_LABEL (RSA 2048)
				 * resp: SPKI */
	PROTO_REMOVE = 0x0b,	/* req: FILE_NAME  removes the file (and its
				 * staged copy) from the import directory,
				 * fsyncs it; a missing file is no error.
				 * resp: - */
	PROTO_DEL_CERT = 0x0c,	/* req: KEY_ID  destroys the certificate
				 * objects with that id; none is no error.
				 * resp: - */
	PROTO_INQUIRE = 0x0d,	/* req: KEY_ID, CERT_ID, FILE_NAME
				 * what the board holds now, changing
				 * nothing.  resp: SPKI of the key at KEY_ID,
				 * CERT (DER) at CERT_ID, SHA256 of the file
				 * in place; each absent when the board has
				 * none */
	/* 0x0e is reserved for ATTEST (docs/protocol.md, "Attestation"):
	 * req KEY_ID, resp ATTESTATION, ATTESTATION_CHAIN. */
};

enum proto_tag {
	PT_VERSION_MIN = 1,	/* u32 */
	PT_VERSION_MAX = 2,	/* u32 */
	PT_VERSION = 3,		/* u32 */
	PT_SERIAL = 10,		/* str */
	PT_MODEL = 11,		/* str */
	PT_AGENT_VERSION = 12,	/* str */
	PT_HSM_LABEL = 13,	/* str */
	PT_HSM_MANUFACTURER = 14, /* str */
	PT_HSM_MODEL = 15,	/* str */
	PT_HSM_SERIAL = 16,	/* str */
	PT_MAX_PAYLOAD = 17,	/* u32 */
	PT_KEY_TYPE = 20,	/* str: "ec-p256", "rsa2048", "rsa3072" */
	PT_KEY_ID = 21,		/* bytes, 1..16 (CKA_ID) */
	PT_KEY_LABEL = 22,	/* str */
	PT_SPKI = 23,		/* bytes */
	PT_KEY_CHECK = 24,	/* v2 KEYGEN answer: the first 8 bytes of the
				 * SHA-256 of the new key's SPKI (the SPKI
				 * itself is in the CSR) */
	PT_SUBJECT_CN = 30,	/* str */
	PT_CSR = 31,		/* bytes */
	PT_FILE_NAME = 40,	/* str: a plain name, no '/' */
	PT_FILE_MODE = 41,	/* u32, permission bits only */
	PT_FILE_DATA = 42,	/* bytes */
	PT_SHA256 = 43,		/* 32 bytes */
	PT_FILE_SIZE = 44,	/* u32 */
	PT_FILE_DER = 45,	/* v2 PUT_FILE: bytes, one DER certificate;
				 * the board writes its PEM */
	PT_READBACK_SHA256 = 46, /* v2 COMMIT answer: 32 bytes
				 * (proto_readback_digest) */
	PT_CERT = 50,		/* bytes */
	PT_CERT_ID = 51,	/* bytes, 1..16 (CKA_ID of a certificate) */
	PT_CERT_FILE = 52,	/* v2 PUT_CERT: str, an import file to stage
				 * as well: PEM of CERT, then FILE_DATA */
	PT_CHALLENGE = 60,	/* bytes */
	PT_SIGNATURE = 61,	/* bytes */
	PT_ERR_CODE = 70,	/* u32: a negative KL_ERR_* as two's complement */
	/* 80 ATTESTATION, 81 ATTESTATION_CHAIN: reserved (docs/protocol.md,
	 * "Attestation"). */
	PT_ERR_MSG = 71,	/* str */
};

#define PROTO_MAX_FILE (32u * 1024u)	/* largest file the agent stages */
#define PROTO_MAX_CHALLENGE 64
#define PROTO_MAX_KEY_ID 16
#define PROTO_KEY_CHECK_LEN 8

/* Writers: append one field. 0, KL_ERR_TOO_BIG, KL_ERR_NOMEM. */
int proto_put_bytes(struct buf *b, uint8_t tag, const void *p, size_t n);
int proto_put_str(struct buf *b, uint8_t tag, const char *s);
int proto_put_u32(struct buf *b, uint8_t tag, uint32_t v);

/* 0 if payload is a well-formed TLV sequence, else KL_ERR_TRUNCATED. */
int proto_validate(const uint8_t *payload, size_t len);

/*
 * Walks the fields in order, for messages where order carries meaning (a
 * version 2 PUT_FILE's files): 1 with the field at off (its tag, value,
 * and *next the offset after it), 0 at the end, KL_ERR_TRUNCATED.
 */
int proto_walk(const uint8_t *payload, size_t len, size_t off, uint8_t *tag,
    const uint8_t **val, size_t *vlen, size_t *next);

/*
 * Readers.  Each validates the payload first.  *p is borrowed from payload.
 * KL_ERR_NOT_FOUND when the tag is absent; KL_ERR_INVALID for a value of the
 * wrong shape (u32 not 4 bytes, string with NUL); KL_ERR_TOO_BIG when a
 * value is over max (bytes) or does not fit out (strings, NUL included).
 */
int proto_get_bytes(const uint8_t *payload, size_t len, uint8_t tag,
    size_t max, const uint8_t **p, size_t *n);
int proto_get_str(const uint8_t *payload, size_t len, uint8_t tag,
    char *out, size_t outsz);
int proto_get_u32(const uint8_t *payload, size_t len, uint8_t tag,
    uint32_t *v);

/*
 * v2 COMMIT answer (PT_READBACK_SHA256): one SHA-256 over what the board
 * read back after the commit, one record per staged file and certificate
 * object, sorted by kind, then name (so the order things were staged in
 * does not matter):
 *   kind u8 (PROTO_RB_FILE, PROTO_RB_CERT), name length u8 (1..64),
 *   name (file name, or the certificate's CKA_ID), SHA-256 (32), size u32.
 * The station computes the same over what it wrote.
 */
enum proto_rb_kind { PROTO_RB_FILE = 1, PROTO_RB_CERT = 2 };
#define PROTO_RB_MAX_NAME 64
#define PROTO_RB_MAX 24		/* records in one digest */

struct proto_readback {
	uint8_t kind;
	uint8_t name[PROTO_RB_MAX_NAME];
	size_t name_len;
	uint8_t sha256[32];
	uint32_t size;
};

/* 0 and out, or KL_ERR_INVALID (n, a kind or name length out of range),
 * KL_ERR_CRYPTO. */
int proto_readback_digest(const struct proto_readback *rb, size_t n,
    uint8_t out[32]);

/*
 * Version 2 sends fields with short lengths ("compact" fields): after the
 * tag, a length below 0x80 is one byte; below 0x4000 two bytes, the first
 * 0x80 | high bits; anything else 0xc0 and four bytes.  Always the
 * shortest form.  Both ends keep the 4-byte form above the link and
 * convert at it (link.c, the agent), for every frame after a HELLO that
 * agreed version 2 (HELLO itself is always the 4-byte form).
 *
 * proto_tlv_compact: out = in (well-formed 4-byte fields) in compact
 * form; 0, KL_ERR_TRUNCATED, buf errors.
 * proto_tlv_expand: out = in (compact fields) in the 4-byte form; 0,
 * KL_ERR_TRUNCATED (a field runs past the end), KL_ERR_INVALID (a length
 * not in its shortest form), KL_ERR_TOO_BIG (out's max), KL_ERR_NOMEM.
 * out is reset first; on error it holds nothing usable.
 */
int proto_tlv_compact(const uint8_t *in, size_t n, struct buf *out);
int proto_tlv_expand(const uint8_t *in, size_t n, struct buf *out);

/* Name of a message type for logs ("HELLO"); never NULL. */
const char *proto_type_name(uint8_t type);

#endif
