/* proto.c: TLV fields of link messages (see proto.h). */
#include "station/link/proto.h"

#include <string.h>

#include <openssl/evp.h>

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
proto_walk(const uint8_t *payload, size_t len, size_t off, uint8_t *tag,
    const uint8_t **val, size_t *vlen, size_t *next)
{
	struct buf_reader r;
	int got;

	if (off > len)
		return KL_ERR_TRUNCATED;
	buf_reader_init(&r, payload + off, len - off);
	if ((got = proto_next(&r, tag, val, vlen)) == 1)
		*next = off + r.off;
	return got;
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

static int
proto_rb_cmp(const struct proto_readback *x, const struct proto_readback *y)
{
	size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
	int c;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if ((c = memcmp(x->name, y->name, m)) != 0)
		return c;
	return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

int
proto_readback_digest(const struct proto_readback *rb, size_t n,
    uint8_t out[32])
{
	const struct proto_readback *order[PROTO_RB_MAX], *t;
	EVP_MD_CTX *md = NULL;
	uint8_t head[2], size[4];
	unsigned int len = 0;
	size_t i, j;
	int r = KL_ERR_CRYPTO;

	if (n > PROTO_RB_MAX)
		return KL_ERR_INVALID;
	for (i = 0; i < n; i++) {
		if ((rb[i].kind != PROTO_RB_FILE &&
		    rb[i].kind != PROTO_RB_CERT) || rb[i].name_len == 0 ||
		    rb[i].name_len > PROTO_RB_MAX_NAME)
			return KL_ERR_INVALID;
		/* insertion sort: a handful of records */
		for (j = i; j > 0 && proto_rb_cmp(order[j - 1], &rb[i]) > 0;
		    j--)
			order[j] = order[j - 1];
		order[j] = &rb[i];
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto out;
	for (i = 0; i < n; i++) {
		t = order[i];
		head[0] = t->kind;
		head[1] = (uint8_t)t->name_len;
		size[0] = (uint8_t)(t->size >> 24);
		size[1] = (uint8_t)(t->size >> 16);
		size[2] = (uint8_t)(t->size >> 8);
		size[3] = (uint8_t)t->size;
		if (EVP_DigestUpdate(md, head, 2) != 1 ||
		    EVP_DigestUpdate(md, t->name, t->name_len) != 1 ||
		    EVP_DigestUpdate(md, t->sha256, 32) != 1 ||
		    EVP_DigestUpdate(md, size, 4) != 1)
			goto out;
	}
	if (EVP_DigestFinal_ex(md, out, &len) != 1 || len != 32)
		goto out;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	return r;
}

int
proto_tlv_compact(const uint8_t *in, size_t n, struct buf *out)
{
	struct buf_reader r;
	const uint8_t *v;
	uint8_t tag;
	size_t len;
	int got, e;

	buf_reset(out);
	buf_reader_init(&r, in, n);
	while ((got = proto_next(&r, &tag, &v, &len)) == 1) {
		if ((e = buf_put_u8(out, tag)) != 0)
			return e;
		if (len < 0x80)
			e = buf_put_u8(out, (uint8_t)len);
		else if (len < 0x4000)
			e = buf_put_u16(out, (uint16_t)(0x8000 | len));
		else if ((e = buf_put_u8(out, 0xc0)) == 0)
			e = buf_put_u32(out, (uint32_t)len);
		if (e != 0 || (e = buf_put(out, v, len)) != 0)
			return e;
	}
	return got;
}

int
proto_tlv_expand(const uint8_t *in, size_t n, struct buf *out)
{
	struct buf_reader r;
	const uint8_t *v;
	uint8_t tag, b0, b1;
	uint32_t len;
	int e;

	buf_reset(out);
	buf_reader_init(&r, in, n);
	while (buf_reader_remaining(&r) > 0) {
		if (buf_get_u8(&r, &tag) != 0 || buf_get_u8(&r, &b0) != 0)
			return KL_ERR_TRUNCATED;
		if (b0 < 0x80)
			len = b0;
		else if (b0 < 0xc0) {
			if (buf_get_u8(&r, &b1) != 0)
				return KL_ERR_TRUNCATED;
			len = ((uint32_t)(b0 & 0x3f) << 8) | b1;
			if (len < 0x80)
				return KL_ERR_INVALID;
		} else {
			if (b0 != 0xc0)
				return KL_ERR_INVALID;
			if (buf_get_u32(&r, &len) != 0)
				return KL_ERR_TRUNCATED;
			if (len < 0x4000)
				return KL_ERR_INVALID;
		}
		if (buf_get_bytes(&r, len, &v) != 0)
			return KL_ERR_TRUNCATED;
		if ((e = proto_put_bytes(out, tag, v, len)) != 0)
			return e;
	}
	return 0;
}
