/*
 * seedgen.c: writes the binary seeds of the link targets with the
 * project's own encoders (frame_encode, proto_put_*), so they are the
 * frames and fields the station and the agent really exchange.  Run by
 * tests/fuzz/make-seeds, which makes the certificate material first:
 *
 *   seedgen CORPUS-DIR spki.der csr.der cert.der root.pem
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "station/link/frame.h"
#include "station/link/proto.h"

static const char *corpus;
static uint8_t *spki, *csr, *cert, *pem;
static size_t spki_len, csr_len, cert_len, pem_len;

static void
die(const char *what)
{
	fprintf(stderr, "seedgen: %s\n", what);
	exit(1);
}

static uint8_t *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = malloc(65536);
	size_t n;

	if (f == NULL || p == NULL)
		die(path);
	n = fread(p, 1, 65536, f);
	fclose(f);
	*len = n;
	return p;
}

static void
put(const char *target, const char *name, const struct buf *b)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", corpus, target, name);
	if ((f = fopen(path, "wb")) == NULL)
		die(path);
	if (b->len > 0 && fwrite(b->data, 1, b->len, f) != b->len)
		die(path);
	fclose(f);
}

static void
ok(int r)
{
	if (r != 0)
		die(kl_strerror(r));
}

/* Payloads of every message, both ways. */
static void
pl_hello_req(struct buf *b)
{
	ok(proto_put_u32(b, PT_VERSION_MIN, PROTO_VERSION_MIN));
	ok(proto_put_u32(b, PT_VERSION_MAX, PROTO_VERSION_MAX));
}

static void
pl_hello_resp(struct buf *b)
{
	ok(proto_put_u32(b, PT_VERSION, 1));
	ok(proto_put_str(b, PT_SERIAL, "SN000123"));
	ok(proto_put_str(b, PT_MODEL, "board-a"));
	ok(proto_put_str(b, PT_AGENT_VERSION, "keyline-agent 0.1.0"));
	ok(proto_put_str(b, PT_HSM_LABEL, "board-SN000123"));
	ok(proto_put_str(b, PT_HSM_MANUFACTURER, "SoftHSM project"));
	ok(proto_put_str(b, PT_HSM_MODEL, "SoftHSM v2"));
	ok(proto_put_str(b, PT_HSM_SERIAL, "8f2c0a1b3d4e5f60"));
	ok(proto_put_u32(b, PT_MAX_PAYLOAD, FRAME_MAX_PAYLOAD));
}

static void
pl_error(struct buf *b)
{
	ok(proto_put_u32(b, PT_ERR_CODE, (uint32_t)KL_ERR_HSM));
	ok(proto_put_str(b, PT_ERR_MSG, "token full"));
}

static const uint8_t id01[] = { 0x01 }, id02[] = { 0x02 };
static const uint8_t sha[32] = { 0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c,
	0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae,
	0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78,
	0x52, 0xb8, 0x55 };

/* frame/: [split seed] + stream */
static void
seeds_frame(void)
{
	struct buf s, p;

	buf_init(&s, 1 << 20);
	buf_init(&p, 1 << 20);

	ok(buf_put_u8(&s, 7));
	pl_hello_req(&p);
	ok(frame_encode(&s, PROTO_HELLO, 0, 0x1234, p.data, p.len));
	put("frame", "hello-request", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put_u8(&s, 3));
	pl_hello_resp(&p);
	ok(frame_encode(&s, PROTO_HELLO, FRAME_F_RESPONSE, 0x1234, p.data,
	    p.len));
	put("frame", "hello-answer", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put_u8(&s, 0));
	ok(proto_put_bytes(&p, PT_SPKI, spki, spki_len));
	ok(frame_encode(&s, PROTO_KEYGEN, FRAME_F_RESPONSE, 2, p.data,
	    p.len));
	put("frame", "keygen-answer", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put_u8(&s, 9));
	pl_error(&p);
	ok(frame_encode(&s, PROTO_PUT_CERT, FRAME_F_RESPONSE | FRAME_F_ERROR,
	    7, p.data, p.len));
	put("frame", "error-answer", &s);

	/* Garbage, a NAK, a frame with a bad CRC, then a good one. */
	buf_reset(&s);
	ok(buf_put_u8(&s, 1));
	ok(buf_put(&s, "\x00\xffKx\x4b\x4c", 6));
	ok(frame_encode(&s, 0, FRAME_F_RESPONSE | FRAME_F_NAK, 0, NULL, 0));
	{
		size_t at = s.len;

		ok(frame_encode(&s, PROTO_COMMIT, 0, 9, NULL, 0));
		s.data[s.len - 1] ^= 1;
		(void)at;
	}
	ok(frame_encode(&s, PROTO_COMMIT, 0, 9, NULL, 0));
	put("frame", "resync", &s);

	/* A frame inside a frame's payload. */
	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put_u8(&s, 5));
	ok(frame_encode(&p, PROTO_ABORT, 0, 3, NULL, 0));
	ok(frame_encode(&s, PROTO_PUT_FILE, 0, 4, p.data, p.len));
	put("frame", "nested", &s);
	buf_free(&s);
	buf_free(&p);
}

/* proto/: [tag][max] + payload */
static void
seeds_proto(void)
{
	struct buf s;

	buf_init(&s, 1 << 20);
	ok(buf_put_u8(&s, PT_SERIAL));
	ok(buf_put_u8(&s, 64));
	pl_hello_resp(&s);
	put("proto", "hello-serial", &s);

	buf_reset(&s);
	ok(buf_put_u8(&s, PT_VERSION));
	ok(buf_put_u8(&s, 255));
	pl_hello_resp(&s);
	put("proto", "hello-version", &s);

	buf_reset(&s);
	ok(buf_put_u8(&s, PT_FILE_DATA));
	ok(buf_put_u8(&s, 0x7f));
	ok(proto_put_str(&s, PT_FILE_NAME, "root.crt"));
	ok(proto_put_u32(&s, PT_FILE_MODE, 0644));
	ok(proto_put_bytes(&s, PT_FILE_DATA, pem, pem_len));
	put("proto", "put-file", &s);

	buf_reset(&s);
	ok(buf_put_u8(&s, PT_ERR_MSG));
	ok(buf_put_u8(&s, 10));
	ok(proto_put_str(&s, 200, "unknown tag first"));
	pl_error(&s);
	ok(proto_put_str(&s, PT_ERR_MSG, "second one ignored"));
	put("proto", "error-dup", &s);

	buf_reset(&s);
	ok(buf_put_u8(&s, PT_KEY_ID));
	ok(buf_put_u8(&s, 4));
	ok(proto_put_bytes(&s, PT_KEY_ID, id02, 1));
	ok(buf_put(&s, "\x15\x00\x00\x10", 4));	/* truncated field */
	put("proto", "truncated", &s);
	buf_free(&s);
}

/* link/: [type index][attempts/resends] + records [ctl][len16][bytes] */
static void
rec(struct buf *s, uint8_t ctl, const struct buf *p)
{
	ok(buf_put_u8(s, ctl));
	ok(buf_put_u16(s, (uint16_t)(p != NULL ? p->len : 0)));
	if (p != NULL)
		ok(buf_put(s, p->data, p->len));
}

static void
seeds_link(void)
{
	struct buf s, p;

	buf_init(&s, 1 << 20);
	buf_init(&p, 1 << 20);

	ok(buf_put(&s, "\x00\x0f", 2));
	pl_hello_resp(&p);
	rec(&s, FRAME_F_RESPONSE, &p);
	put("link", "hello", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x01\x0f", 2));
	ok(proto_put_bytes(&p, PT_SPKI, spki, spki_len));
	rec(&s, FRAME_F_RESPONSE, &p);
	put("link", "keygen", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x03\x0f", 2));
	ok(proto_put_bytes(&p, PT_CSR, csr, csr_len));
	rec(&s, FRAME_F_RESPONSE, &p);
	put("link", "csr", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x08\x0f", 2));
	ok(proto_put_bytes(&p, PT_SHA256, sha, sizeof(sha)));
	ok(proto_put_u32(&p, PT_FILE_SIZE, 1234));
	rec(&s, FRAME_F_RESPONSE, &p);
	put("link", "file-hash", &s);

	/* NAK, a late answer, a corrupt one, garbage, then the answer. */
	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x04\x0f", 2));
	rec(&s, FRAME_F_RESPONSE | FRAME_F_NAK, NULL);
	ok(proto_put_bytes(&p, PT_SHA256, sha, sizeof(sha)));
	rec(&s, FRAME_F_RESPONSE | 0x08, &p);
	rec(&s, FRAME_F_RESPONSE | 0x20, &p);
	rec(&s, 0x40, NULL);
	{
		struct buf g;

		buf_init(&g, 64);
		ok(buf_put(&g, "KL\x04\x01\x00", 5));
		rec(&s, 0x80, &g);
		buf_free(&g);
	}
	rec(&s, FRAME_F_RESPONSE, &p);
	put("link", "put-file-retries", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x05\x00", 2));
	pl_error(&p);
	rec(&s, FRAME_F_RESPONSE | FRAME_F_ERROR, &p);
	put("link", "error", &s);

	buf_reset(&s);
	buf_reset(&p);
	ok(buf_put(&s, "\x09\x03", 2));
	ok(proto_put_bytes(&p, PT_SIGNATURE, csr, 72));
	rec(&s, FRAME_F_RESPONSE | 0x10, &p);
	put("link", "sign-wrong-type", &s);
	buf_free(&s);
	buf_free(&p);
}

/* agent/: records [type][len16][payload] */
static void
req(struct buf *s, uint8_t sel, const struct buf *p)
{
	rec(s, sel, p);
}

static void
seeds_agent(void)
{
	struct buf s, p;

	buf_init(&s, 1 << 20);
	buf_init(&p, 1 << 20);

	/* A whole provisioning session as the station sends it. */
	pl_hello_req(&p);
	req(&s, PROTO_HELLO, &p);
	buf_reset(&p);
	ok(proto_put_bytes(&p, PT_KEY_ID, id02, 1));
	ok(proto_put_str(&p, PT_SUBJECT_CN, "board-a-SN000123"));
	req(&s, PROTO_CSR, &p);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "root.crt"));
	ok(proto_put_u32(&p, PT_FILE_MODE, 0644));
	ok(proto_put_bytes(&p, PT_FILE_DATA, pem, pem_len));
	req(&s, PROTO_PUT_FILE, &p);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "gateway.url"));
	ok(proto_put_u32(&p, PT_FILE_MODE, 0644));
	ok(proto_put_str(&p, PT_FILE_DATA, "https://gw.example.com:8443\n"));
	req(&s, PROTO_PUT_FILE, &p);
	buf_reset(&p);
	ok(proto_put_bytes(&p, PT_KEY_ID, id01, 1));
	ok(proto_put_str(&p, PT_KEY_LABEL, "tls"));
	ok(proto_put_bytes(&p, PT_CERT, cert, cert_len));
	req(&s, PROTO_PUT_CERT, &p);
	req(&s, PROTO_COMMIT, NULL);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "root.crt"));
	req(&s, PROTO_FILE_HASH, &p);
	buf_reset(&p);
	ok(proto_put_bytes(&p, PT_KEY_ID, id02, 1));
	ok(proto_put_bytes(&p, PT_CHALLENGE, sha, sizeof(sha)));
	req(&s, PROTO_SIGN, &p);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "gateway.url"));
	req(&s, PROTO_REMOVE, &p);
	buf_reset(&p);
	ok(proto_put_bytes(&p, PT_KEY_ID, id01, 1));
	req(&s, PROTO_DEL_CERT, &p);
	put("agent", "session", &s);

	/* The same request again: answered from the cache. */
	buf_reset(&s);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "client.pem"));
	ok(proto_put_u32(&p, PT_FILE_MODE, 0600));
	ok(proto_put_bytes(&p, PT_FILE_DATA, pem, pem_len));
	req(&s, PROTO_PUT_FILE, &p);
	req(&s, 0x80 | PROTO_PUT_FILE, &p);
	req(&s, PROTO_ABORT, NULL);
	req(&s, 0x40 | PROTO_COMMIT, NULL);
	put("agent", "resend-abort", &s);

	/* Names and ids the agent must refuse. */
	buf_reset(&s);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, "../../etc/passwd"));
	ok(proto_put_u32(&p, PT_FILE_MODE, 04777));
	ok(proto_put_str(&p, PT_FILE_DATA, "x"));
	req(&s, PROTO_PUT_FILE, &p);
	buf_reset(&p);
	ok(proto_put_str(&p, PT_FILE_NAME, ".keyline-tmp"));
	req(&s, PROTO_FILE_HASH, &p);
	buf_reset(&p);
	ok(proto_put_bytes(&p, PT_KEY_ID, sha, 17));
	ok(proto_put_bytes(&p, PT_CHALLENGE, sha, 32));
	req(&s, PROTO_SIGN, &p);
	buf_reset(&p);
	ok(proto_put_u32(&p, PT_VERSION_MIN, 2));
	ok(proto_put_u32(&p, PT_VERSION_MAX, 9));
	req(&s, PROTO_HELLO, &p);
	put("agent", "hostile", &s);
	buf_free(&s);
	buf_free(&p);
}

int
main(int argc, char **argv)
{
	if (argc != 6)
		die("usage: seedgen CORPUS spki.der csr.der cert.der root.pem");
	corpus = argv[1];
	spki = slurp(argv[2], &spki_len);
	csr = slurp(argv[3], &csr_len);
	cert = slurp(argv[4], &cert_len);
	pem = slurp(argv[5], &pem_len);
	seeds_frame();
	seeds_proto();
	seeds_link();
	seeds_agent();
	return 0;
}
