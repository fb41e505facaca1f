/* frame.c: encoder and stream decoder for link frames (see frame.h). */
#include "station/link/frame.h"

#include <string.h>

#include <zlib.h>

#include "common/err.h"

/* Room for one maximal frame plus one read's worth of the next. */
#define FRAME_DECODER_MAX (2 * FRAME_MAX_LEN)

uint32_t
frame_crc32(const void *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);

	/* zlib takes uInt lengths; frames are far below that, but be exact. */
	while (n > 0) {
		uInt chunk = n > 0x40000000u ? 0x40000000u : (uInt)n;

		c = crc32(c, p, chunk);
		p = (const uint8_t *)p + chunk;
		n -= chunk;
	}
	return (uint32_t)c;
}

int
frame_encode(struct buf *out, uint8_t type, uint8_t flags, uint16_t seq,
    const void *payload, size_t len)
{
	uint8_t hdr[FRAME_HDR_LEN];
	size_t start = out->len;
	uint32_t crc;
	uint16_t hcrc;
	int r;

	if (len > FRAME_MAX_PAYLOAD)
		return KL_ERR_TOO_BIG;
	hdr[0] = FRAME_MAGIC0;
	hdr[1] = FRAME_MAGIC1;
	hdr[2] = type;
	hdr[3] = flags;
	hdr[4] = (uint8_t)(seq >> 8);
	hdr[5] = (uint8_t)seq;
	hdr[6] = (uint8_t)(len >> 24);
	hdr[7] = (uint8_t)(len >> 16);
	hdr[8] = (uint8_t)(len >> 8);
	hdr[9] = (uint8_t)len;
	hcrc = (uint16_t)frame_crc32(hdr, 10);
	hdr[10] = (uint8_t)(hcrc >> 8);
	hdr[11] = (uint8_t)hcrc;
	if ((r = buf_put(out, hdr, sizeof(hdr))) != 0 ||
	    (r = buf_put(out, payload, len)) != 0)
		goto fail;
	crc = frame_crc32(out->data + start, FRAME_HDR_LEN + len);
	if ((r = buf_put_u32(out, crc)) != 0)
		goto fail;
	return 0;
fail:
	out->len = start;
	return r;
}

void
frame_decoder_init(struct frame_decoder *d)
{
	buf_init(&d->in, FRAME_DECODER_MAX);
	d->crc_errors = 0;
	d->bytes_dropped = 0;
	d->pending = 0;
}

static void
frame_drop_pending(struct frame_decoder *d)
{
	if (d->pending > 0) {
		buf_consume(&d->in, d->pending);
		d->pending = 0;
	}
}

void
frame_decoder_free(struct frame_decoder *d)
{
	if (d != NULL)
		buf_free(&d->in);
}

void
frame_decoder_reset(struct frame_decoder *d)
{
	buf_reset(&d->in);
	d->pending = 0;
}

int
frame_decoder_push(struct frame_decoder *d, const void *p, size_t n)
{
	frame_drop_pending(d);
	return buf_put(&d->in, p, n);
}

/* Drop bytes up to the next possible magic after position 0. */
static void
frame_resync(struct frame_decoder *d)
{
	size_t i;

	for (i = 1; i < d->in.len; i++)
		if (d->in.data[i] == FRAME_MAGIC0)
			break;
	d->bytes_dropped += (uint32_t)i;
	buf_consume(&d->in, i);
}

int
frame_decoder_next(struct frame_decoder *d, struct frame *f)
{
	struct buf_reader r;
	uint8_t m0, m1, type, flags;
	uint16_t seq, hcrc;
	uint32_t len, crc;
	const uint8_t *payload;
	size_t total;

	frame_drop_pending(d);
	for (;;) {
		if (d->in.len > 0 && d->in.data[0] != FRAME_MAGIC0) {
			frame_resync(d);
			continue;
		}
		if (d->in.len < FRAME_HDR_LEN)
			return 0;
		buf_reader_init(&r, d->in.data, d->in.len);
		if (buf_get_u8(&r, &m0) != 0 || buf_get_u8(&r, &m1) != 0 ||
		    buf_get_u8(&r, &type) != 0 || buf_get_u8(&r, &flags) != 0 ||
		    buf_get_u16(&r, &seq) != 0 || buf_get_u32(&r, &len) != 0 ||
		    buf_get_u16(&r, &hcrc) != 0)
			return 0;
		if (m1 != FRAME_MAGIC1) {
			frame_resync(d);
			continue;
		}
		if (hcrc != (uint16_t)frame_crc32(d->in.data, 10)) {
			d->crc_errors++;
			frame_resync(d);
			return KL_ERR_CRC;
		}
		if (len > FRAME_MAX_PAYLOAD) {
			/* A valid header announcing too much: skip it whole. */
			frame_resync(d);
			return KL_ERR_TOO_BIG;
		}
		total = FRAME_HDR_LEN + (size_t)len + FRAME_TRAILER_LEN;
		if (d->in.len < total)
			return 0;
		if (buf_get_bytes(&r, len, &payload) != 0 ||
		    buf_get_u32(&r, &crc) != 0)
			return 0;
		if (crc != frame_crc32(d->in.data, FRAME_HDR_LEN + len)) {
			/* The header passed its check, so the length is
			 * trusted: drop the frame whole.  Resyncing inside it
			 * would hand out a frame carried in its payload and
			 * report one error per "KL" in it. */
			d->crc_errors++;
			d->bytes_dropped += (uint32_t)total;
			buf_consume(&d->in, total);
			return KL_ERR_CRC;
		}
		/* The frame points into d->in until the next call. */
		d->pending = total;
		f->type = type;
		f->flags = flags;
		f->seq = seq;
		f->len = len;
		f->payload = payload;
		return 1;
	}
}
