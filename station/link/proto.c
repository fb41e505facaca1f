/* proto.c: TLV fields of link messages (see proto.h). */
#include "station/link/proto.h"

#include <string.h>

#include "common/err.h"

int
proto_put_bytes(struct buf *b, uint8_t tag, const void *p, size_t n)
{
	size_t start = b->len;
	int r;

	if (n > UINT32_MAX)
		return KL_ERR_TOO_BIG;
	if ((r = buf_put_u8(b, tag)) != 0 ||
	    (r = buf_put_u32(b, (uint32_t)n)) != 0 ||
	    (r = buf_put(b, p, n)) != 0) {
		b->len = start;
		return r;
	}
	return 0;
}

int
proto_put_str(struct buf *b, uint8_t tag, const char *s)
{
	return proto_put_bytes(b, tag, s, strlen(s));
}

int
proto_put_u32(struct buf *b, uint8_t tag, uint32_t v)
{
	uint8_t p[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
		(uint8_t)(v >> 8), (uint8_t)v };

	return proto_put_bytes(b, tag, p, sizeof(p));
}

/* Next field: 1 with tag/value, 0 at the end, KL_ERR_TRUNCATED. */
static int
proto_next(struct buf_reader *r, uint8_t *tag, const uint8_t **val,
    size_t *vlen)
{
	uint32_t len;

	if (buf_reader_remaining(r) == 0)
		return 0;
	if (buf_get_u8(r, tag) != 0 || buf_get_u32(r, &len) != 0 ||
	    buf_get_bytes(r, len, val) != 0)
		return KL_ERR_TRUNCATED;
	*vlen = len;
	return 1;
}

int
proto_validate(const uint8_t *payload, size_t len)
{
	struct buf_reader r;
	const uint8_t *v;
	size_t vlen;
	uint8_t tag;
	int rc;

	buf_reader_init(&r, payload, len);
	while ((rc = proto_next(&r, &tag, &v, &vlen)) == 1)
		;
	return rc;
}

/* First field with tag; unknown tags are skipped. */
static int
proto_find(const uint8_t *payload, size_t len, uint8_t want,
    const uint8_t **val, size_t *vlen)
{
	struct buf_reader r;
	const uint8_t *v;
	size_t n;
	uint8_t tag;
	int rc;

	if ((rc = proto_validate(payload, len)) != 0)
		return rc;
	buf_reader_init(&r, payload, len);
	while ((rc = proto_next(&r, &tag, &v, &n)) == 1) {
		if (tag == want) {
			*val = v;
			*vlen = n;
			return 0;
		}
	}
	return rc != 0 ? rc : KL_ERR_NOT_FOUND;
}

int
proto_get_bytes(const uint8_t *payload, size_t len, uint8_t tag, size_t max,
    const uint8_t **p, size_t *n)
{
	const uint8_t *v;
	size_t vlen;
	int rc;

	if ((rc = proto_find(payload, len, tag, &v, &vlen)) != 0)
		return rc;
	if (vlen > max)
		return KL_ERR_TOO_BIG;
	*p = v;
	*n = vlen;
	return 0;
}

int
proto_get_str(const uint8_t *payload, size_t len, uint8_t tag, char *out,
    size_t outsz)
{
	const uint8_t *v;
	size_t vlen;
	int rc;

	if ((rc = proto_find(payload, len, tag, &v, &vlen)) != 0)
		return rc;
	if (vlen > PROTO_MAX_STR || vlen >= outsz)
		return KL_ERR_TOO_BIG;
	if (memchr(v, '\0', vlen) != NULL)
		return KL_ERR_INVALID;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
	return 0;
}

int
proto_get_u32(const uint8_t *payload, size_t len, uint8_t tag, uint32_t *v)
{
	const uint8_t *p;
	struct buf_reader r;
	size_t n;
	int rc;

	if ((rc = proto_find(payload, len, tag, &p, &n)) != 0)
		return rc;
	if (n != 4)
		return KL_ERR_INVALID;
	buf_reader_init(&r, p, n);
	return buf_get_u32(&r, v);
}

struct proto_name {
	uint8_t type;
	const char *name;
};

static const struct proto_name proto_names[] = {
	{ PROTO_HELLO, "HELLO" },
	{ PROTO_KEYGEN, "KEYGEN" },
	{ PROTO_CSR, "CSR" },
	{ PROTO_PUT_FILE, "PUT_FILE" },
	{ PROTO_COMMIT, "COMMIT" },
	{ PROTO_ABORT, "ABORT" },
	{ PROTO_FILE_HASH, "FILE_HASH" },
	{ PROTO_PUT_CERT, "PUT_CERT" },
	{ PROTO_SIGN, "SIGN" },
	{ PROTO_UPTANE_KEYGEN, "UPTANE_KEYGEN" },
	{ PROTO_REMOVE, "REMOVE" },
	{ PROTO_DEL_CERT, "DEL_CERT" },
	{ PROTO_INQUIRE, "INQUIRE" },
};

const char *
proto_type_name(uint8_t type)
{
	size_t i;

	for (i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
		if (proto_names[i].type == type)
			return proto_names[i].name;
	return "UNKNOWN";
}

int
proto_readback_put(struct buf *b, uint8_t kind, const void *name,
    size_t name_len, const uint8_t sha256[32], uint32_t size)
{
	size_t start = b->len;
	int r;

	if ((kind != PROTO_RB_FILE && kind != PROTO_RB_CERT) ||
	    name_len == 0 || name_len > PROTO_RB_MAX_NAME)
		return KL_ERR_INVALID;
	if ((r = buf_put_u8(b, kind)) != 0 ||
	    (r = buf_put_u8(b, (uint8_t)name_len)) != 0 ||
	    (r = buf_put(b, name, name_len)) != 0 ||
	    (r = buf_put(b, sha256, 32)) != 0 ||
	    (r = buf_put_u32(b, size)) != 0) {
		b->len = start;
		return r;
	}
	return 0;
}

int
proto_readback_next(const uint8_t *p, size_t n, size_t *off,
    struct proto_readback *rb)
{
	struct buf_reader r;
	const uint8_t *name, *sha;
	uint8_t kind, nlen;
	uint32_t size;

	if (*off > n)
		return KL_ERR_INVALID;
	buf_reader_init(&r, p + *off, n - *off);
	if (buf_reader_remaining(&r) == 0)
		return 0;
	if (buf_get_u8(&r, &kind) != 0 || buf_get_u8(&r, &nlen) != 0)
		return KL_ERR_TRUNCATED;
	if ((kind != PROTO_RB_FILE && kind != PROTO_RB_CERT) || nlen == 0 ||
	    nlen > PROTO_RB_MAX_NAME)
		return KL_ERR_INVALID;
	if (buf_get_bytes(&r, nlen, &name) != 0 ||
	    buf_get_bytes(&r, 32, &sha) != 0 || buf_get_u32(&r, &size) != 0)
		return KL_ERR_TRUNCATED;
	rb->kind = kind;
	memcpy(rb->name, name, nlen);
	rb->name_len = nlen;
	memcpy(rb->sha256, sha, 32);
	rb->size = size;
	*off += r.off;
	return 1;
}
