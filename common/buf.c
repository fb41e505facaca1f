/* buf.c: bounds-checked reader and capped buffer (see buf.h). */
#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/err.h"

void
buf_reader_init(struct buf_reader *r, const void *data, size_t len)
{
	r->data = data;
	r->len = data != NULL ? len : 0;
	r->off = 0;
}

size_t
buf_reader_remaining(const struct buf_reader *r)
{
	return r->len - r->off;
}

int
buf_get_bytes(struct buf_reader *r, size_t n, const uint8_t **p)
{
	if (n > buf_reader_remaining(r))
		return KL_ERR_TRUNCATED;
	if (p != NULL)
		*p = r->data + r->off;
	r->off += n;
	return 0;
}

int
buf_skip(struct buf_reader *r, size_t n)
{
	return buf_get_bytes(r, n, NULL);
}

int
buf_get_u8(struct buf_reader *r, uint8_t *v)
{
	const uint8_t *p;
	int rc;

	if ((rc = buf_get_bytes(r, 1, &p)) != 0)
		return rc;
	*v = p[0];
	return 0;
}

int
buf_get_u16(struct buf_reader *r, uint16_t *v)
{
	const uint8_t *p;
	int rc;

	if ((rc = buf_get_bytes(r, 2, &p)) != 0)
		return rc;
	*v = (uint16_t)((p[0] << 8) | p[1]);
	return 0;
}

int
buf_get_u32(struct buf_reader *r, uint32_t *v)
{
	const uint8_t *p;
	int rc;

	if ((rc = buf_get_bytes(r, 4, &p)) != 0)
		return rc;
	*v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | (uint32_t)p[3];
	return 0;
}

void
buf_wipe(void *p, size_t n)
{
	if (p != NULL && n > 0)
		OPENSSL_cleanse(p, n);
}

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void
buf_free(struct buf *b)
{
	if (b == NULL)
		return;
	buf_wipe(b->data, b->cap);
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
buf_reset(struct buf *b)
{
	buf_wipe(b->data, b->len);
	b->len = 0;
}

static int
buf_reserve(struct buf *b, size_t n)
{
	size_t want, ncap;
	uint8_t *nd;

	if (n > b->max || b->len > b->max - n)
		return KL_ERR_TOO_BIG;
	want = b->len + n;
	if (want <= b->cap)
		return 0;
	ncap = b->cap < 256 ? 256 : b->cap;
	while (ncap < want)
		ncap = ncap > b->max / 2 ? b->max : ncap * 2;
	/* Not realloc: the old block may hold secrets and must be wiped. */
	if ((nd = malloc(ncap)) == NULL)
		return KL_ERR_NOMEM;
	if (b->len > 0)
		memcpy(nd, b->data, b->len);
	buf_wipe(b->data, b->cap);
	free(b->data);
	b->data = nd;
	b->cap = ncap;
	return 0;
}

int
buf_put(struct buf *b, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	if ((rc = buf_reserve(b, n)) != 0)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int
buf_put_u8(struct buf *b, uint8_t v)
{
	return buf_put(b, &v, 1);
}

int
buf_put_u16(struct buf *b, uint16_t v)
{
	uint8_t p[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	return buf_put(b, p, sizeof(p));
}

int
buf_put_u32(struct buf *b, uint32_t v)
{
	uint8_t p[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
		(uint8_t)(v >> 8), (uint8_t)v };

	return buf_put(b, p, sizeof(p));
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	buf_wipe(b->data + b->len - n, n);
	b->len -= n;
}
