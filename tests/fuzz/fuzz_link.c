/*
 * fuzz_link.c: the station's side of an exchange (station/link/link.c) and the
 * readers the engine applies to each answer, on answers the input makes
 * up: link_call() through an in-memory transport, then the fields the
 * engine reads from that type's answer (docs/protocol.md, "Messages").
 *
 * The engine's own step functions are static in station/engine/steps.c and are
 * not reached here; this target calls what they call, with the same tags,
 * maxima and buffer sizes: proto_get_u32/str/bytes, devid_expand() on the
 * HELLO fields, d2i_PUBKEY on an SPKI, d2i_X509_REQ and its signature on
 * a CSR.
 *
 * Input: byte 0 picks the request type, byte 1 the attempts and resends;
 * then records, each [ctl][len: 2 bytes BE][len bytes].  ctl 0x80: the
 * bytes go on the line as they are.  Otherwise the bytes are the payload
 * of an answer frame: flags = ctl & 7 (RESPONSE, ERROR, NAK), ctl 0x08
 * gives it another seq, 0x10 another type, 0x20 a broken CRC, 0x40 makes
 * the read time out instead.  Each record is one read.  When the records
 * run out the line is closed (KL_ERR_CLOSED), so no run waits for a clock.
 */
#include "tests/fuzz/fuzz.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "station/config/devid.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "station/link/link.h"
#include "common/log.h"
#include "station/link/proto.h"

struct fz_line {
	const uint8_t *data;
	size_t size, off;
	uint16_t seq;		/* of the last request written */
	uint8_t type;
	struct buf chunk;	/* the record being read */
	size_t chunk_off;
};

static struct fz_line line;

static int
fz_open(const char *path, const struct link_params *p, void **ctx)
{
	(void)path;
	(void)p;
	*ctx = &line;
	return 0;
}

static int
fz_write(void *ctx, const void *p, size_t n, int timeout_ms)
{
	struct fz_line *l = ctx;
	const uint8_t *b = p;

	(void)timeout_ms;
	FUZZ_CHECK(n >= FRAME_HDR_LEN + FRAME_TRAILER_LEN &&
	    b[0] == FRAME_MAGIC0 && b[1] == FRAME_MAGIC1,
	    "the station wrote something that is not a frame");
	l->type = b[2];
	l->seq = (uint16_t)(b[4] << 8 | b[5]);
	return 0;
}

/* The next record as line bytes; 0 when there is none. */
static int
fz_next_record(struct fz_line *l)
{
	uint8_t ctl, flags, type;
	uint16_t seq;
	size_t len;
	const uint8_t *p;

	buf_reset(&l->chunk);
	l->chunk_off = 0;
	for (;;) {
		if (l->size - l->off < 3)
			return 0;
		ctl = l->data[l->off];
		len = (size_t)l->data[l->off + 1] << 8 | l->data[l->off + 2];
		l->off += 3;
		if (len > l->size - l->off)
			len = l->size - l->off;
		p = l->data + l->off;
		l->off += len;
		if (ctl & 0x80) {
			if (len == 0)
				continue;
			(void)buf_put(&l->chunk, p, len);
			return 1;
		}
		if (ctl & 0x40)
			return KL_ERR_TIMEOUT;
		flags = ctl & 0x07;
		seq = ctl & 0x08 ? (uint16_t)(l->seq + 1) : l->seq;
		type = ctl & 0x10 ? (uint8_t)(l->type ^ 0x01) : l->type;
		if (frame_encode(&l->chunk, type, flags, seq, p, len) != 0)
			continue;
		if (ctl & 0x20)
			l->chunk.data[l->chunk.len - 1] ^= 0x5a;
		return 1;
	}
}

static int
fz_read(void *ctx, void *p, size_t n, int timeout_ms)
{
	struct fz_line *l = ctx;
	size_t left;
	int r;

	(void)timeout_ms;
	if (l->chunk_off >= l->chunk.len) {
		if ((r = fz_next_record(l)) == 0)
			return KL_ERR_CLOSED;
		if (r < 0)
			return r;
	}
	left = l->chunk.len - l->chunk_off;
	if (left > n)
		left = n;
	memcpy(p, l->chunk.data + l->chunk_off, left);
	l->chunk_off += left;
	return (int)left;
}

static void
fz_close(void *ctx)
{
	(void)ctx;
}

static const struct link_ops fz_ops = {
	.name = "fuzz",
	.open = fz_open,
	.read = fz_read,
	.write = fz_write,
	.close = fz_close,
};

static const uint8_t fz_types[] = {
	PROTO_HELLO, PROTO_KEYGEN, PROTO_UPTANE_KEYGEN, PROTO_CSR,
	PROTO_PUT_FILE, PROTO_PUT_CERT, PROTO_COMMIT, PROTO_ABORT,
	PROTO_FILE_HASH, PROTO_SIGN, PROTO_REMOVE, PROTO_DEL_CERT,
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_logs("fuzz_link");
	buf_init(&line.chunk, FRAME_MAX_LEN);
	return 0;
}

/* A string field as the engine's steps read it; 1 when present and
 * usable. */
static int
read_str(const struct buf *b, uint8_t tag, char *out, size_t outsz)
{
	int r = proto_get_str(b->data, b->len, tag, out, outsz);

	FUZZ_CHECK(r == 0 || r == KL_ERR_NOT_FOUND || r == KL_ERR_TOO_BIG ||
	    r == KL_ERR_INVALID, "proto_get_str %d", r);
	if (r != 0) {
		out[0] = '\0';
		return 0;
	}
	FUZZ_CHECK(strlen(out) < outsz, "string overruns its buffer");
	return 1;
}

/* The HELLO answer: version, identity, and the device ID made of it. */
static void
read_hello(const struct buf *b)
{
	char serial[PROTO_MAX_STR + 1], model[PROTO_MAX_STR + 1];
	char agent[PROTO_MAX_STR + 1], hsm[PROTO_MAX_STR + 1];
	char id[DEVID_MAX + 1], why[256];
	struct devid_vars vars;
	uint32_t version, maxp;
	static const char *const tmpl[] = {
		"{model}-{serial}", "{station}.{hsm_serial}", "{serial}",
	};
	size_t i;

	(void)proto_get_u32(b->data, b->len, PT_VERSION, &version);
	(void)proto_get_u32(b->data, b->len, PT_MAX_PAYLOAD, &maxp);
	(void)read_str(b, PT_SERIAL, serial, sizeof(serial));
	(void)read_str(b, PT_MODEL, model, sizeof(model));
	(void)read_str(b, PT_AGENT_VERSION, agent, sizeof(agent));
	(void)read_str(b, PT_HSM_LABEL, agent, sizeof(agent));
	(void)read_str(b, PT_HSM_MANUFACTURER, agent, sizeof(agent));
	(void)read_str(b, PT_HSM_MODEL, agent, sizeof(agent));
	(void)read_str(b, PT_HSM_SERIAL, hsm, sizeof(hsm));
	vars.serial = serial;
	vars.model = model;
	vars.hsm_serial = hsm;
	vars.station = "station-1";
	for (i = 0; i < sizeof(tmpl) / sizeof(tmpl[0]); i++) {
		if (devid_expand(tmpl[i], &vars, id, sizeof(id), why,
		    sizeof(why)) == 0)
			FUZZ_CHECK(devid_valid(id), "devid_expand made '%s'",
			    id);
	}
}

static void
read_spki(const struct buf *b)
{
	const uint8_t *p;
	const unsigned char *q;
	EVP_PKEY *pk;
	size_t n;

	if (proto_get_bytes(b->data, b->len, PT_SPKI, 4096, &p, &n) != 0)
		return;
	q = p;
	pk = d2i_PUBKEY(NULL, &q, (long)n);
	if (pk != NULL) {
		(void)EVP_PKEY_is_a(pk, "EC");
		(void)EVP_PKEY_get_bits(pk);
	}
	EVP_PKEY_free(pk);
}

static void
read_csr(const struct buf *b)
{
	const uint8_t *p;
	const unsigned char *q;
	X509_REQ *req;
	EVP_PKEY *pk;
	size_t n;

	if (proto_get_bytes(b->data, b->len, PT_CSR, 16384, &p, &n) != 0)
		return;
	q = p;
	if ((req = d2i_X509_REQ(NULL, &q, (long)n)) != NULL && q == p + n &&
	    (pk = X509_REQ_get0_pubkey(req)) != NULL)
		(void)X509_REQ_verify(req, pk);
	X509_REQ_free(req);
}

static void
read_hash(const struct buf *b, int size_too)
{
	const uint8_t *p;
	uint32_t v;
	size_t n;

	if (proto_get_bytes(b->data, b->len, PT_SHA256, 32, &p, &n) == 0)
		FUZZ_CHECK(n <= 32, "sha256 of %zu bytes", n);
	if (size_too)
		(void)proto_get_u32(b->data, b->len, PT_FILE_SIZE, &v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char remote_err[512];
	struct link *l = NULL;
	struct buf req, resp;
	uint8_t type;
	const uint8_t *p;
	size_t n;
	int r;

	if (size < 2)
		return 0;
	type = fz_types[data[0] % sizeof(fz_types)];
	line.data = data;
	line.size = size;
	line.off = 2;
	buf_reset(&line.chunk);
	line.chunk_off = 0;

	FUZZ_CHECK(link_open(&l, &fz_ops, "fuzz", NULL) == 0, "link_open");
	link_set_attempts(l, 1 + (data[1] & 3));
	link_set_resends(l, (data[1] >> 2) & 3);
	buf_init(&req, FRAME_MAX_PAYLOAD);
	buf_init(&resp, FRAME_MAX_PAYLOAD);
	(void)proto_put_u32(&req, PT_VERSION_MIN, PROTO_VERSION_MIN);
	remote_err[0] = '\0';
	r = link_call(l, type, &req, &resp, 1000, remote_err,
	    sizeof(remote_err));
	FUZZ_CHECK(r <= 0, "link_call %d", r);
	if (r == KL_ERR_REMOTE)
		FUZZ_CHECK(strlen(remote_err) < sizeof(remote_err),
		    "remote error");
	if (r == 0) {
		FUZZ_CHECK(proto_validate(resp.data, resp.len) == 0,
		    "link_call handed out malformed fields");
		switch (type) {
		case PROTO_HELLO:
			read_hello(&resp);
			break;
		case PROTO_KEYGEN:
		case PROTO_UPTANE_KEYGEN:
			read_spki(&resp);
			break;
		case PROTO_CSR:
			read_csr(&resp);
			break;
		case PROTO_PUT_FILE:
		case PROTO_PUT_CERT:
			read_hash(&resp, 0);
			break;
		case PROTO_FILE_HASH:
			read_hash(&resp, 1);
			break;
		case PROTO_SIGN:
			(void)proto_get_bytes(resp.data, resp.len,
			    PT_SIGNATURE, 1024, &p, &n);
			break;
		default:
			break;
		}
	}
	ERR_clear_error();
	buf_free(&req);
	buf_free(&resp);
	link_close(l);
	return 0;
}
